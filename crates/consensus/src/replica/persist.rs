//! A Ready's new entries and hard state made durable, with its committed entries applied while
//! the device flushes (Raft allows it: committed entries are durable here already). On a leader
//! that is the sole voter, the new entries are applied during their own flush too: its own
//! persistence commits them, and no other node can. Their answers are held until the flush
//! succeeded, so that no write is answered before it is durable.

use std::time::Duration;

use bulwark_ledger::StateMachine;
use bulwark_limits::APPLY_DURING_FLUSH_MIN_BYTES;
use bulwark_wal::WalError;
use raft::eraftpb::EntryType;

use super::ready::{HeldReady, Stage};
use super::{Output, Replica, ReplicaError};
use crate::storage::{LogFlush, RaftStorage, StorageError};
use crate::types::LogIndex;

/// Answers of entries applied before they were durable, and the last such entry.
struct EarlyAnswers<T> {
    outputs: Vec<Output<T>>,
    last: LogIndex,
}

impl<S: RaftStorage, M: StateMachine, T> Replica<S, M, T> {
    /// A Ready's entries and hard state, made durable. At stage `Apply` its read states and
    /// committed entries (and, on a sole voter, its new entries) are applied while they flush
    /// when that is worth a second thread (else after the flush); at stage `Persist` (a held
    /// Ready resuming) there is nothing left to apply. Whatever fails, the committed entries are
    /// applied and the stage is `Persist`, so that a held Ready resumes with the sync alone.
    /// Returns the last entry applied before its flush ended, if any: Raft must commit it.
    pub(super) fn apply_and_persist(
        &mut self,
        held: &mut HeldReady,
    ) -> Result<Option<LogIndex>, StorageError> {
        let apply = held.stage == Stage::Apply;
        let started = self.sync_started(&held.ready);
        let flush = match self.begin_persist(&held.ready) {
            Ok(flush) => flush,
            Err(e) => {
                if apply {
                    self.apply_committed(held);
                    held.stage = Stage::Persist;
                }
                return Err(e);
            }
        };
        // Timed from the write to the flush's end (on whichever thread it ran).
        let clock = self.sync_clock;
        let run_flush = |flush: &LogFlush| (flush.run(), clock.map(|now| now()));
        let parallel =
            apply && flush.is_pending() && self.apply_work(held) >= APPLY_DURING_FLUSH_MIN_BYTES;
        let ((flushed, ended), early) = if parallel {
            std::thread::scope(|scope| {
                let flusher = std::thread::Builder::new()
                    .name("log-flush".into())
                    .spawn_scoped(scope, || run_flush(&flush));
                let early = self.apply_round(held);
                let flushed = match flusher {
                    Ok(flusher) => flusher.join().expect("the log flush thread panicked"),
                    // No thread to be had (a process at its limit): flush here, after all.
                    Err(_) => run_flush(&flush),
                };
                (flushed, early)
            })
        } else {
            let flushed = run_flush(&flush);
            let early = if apply { self.apply_round(held) } else { None };
            (flushed, early)
        };
        held.stage = Stage::Persist;
        let took = started.zip(ended).map(|(s, e)| e.saturating_sub(s));
        let last_early = early.as_ref().map(|e| e.last);
        self.end_persist(flush, flushed, took, early)?;
        Ok(last_early)
    }

    fn begin_persist(&mut self, ready: &raft::Ready) -> Result<LogFlush, StorageError> {
        let store = self.raw.mut_store();
        if !ready.entries().is_empty() {
            store.append(ready.entries())?;
        }
        if let Some(hs) = ready.hs() {
            store.set_hard_state(hs);
        }
        store.begin_sync()
    }

    /// Takes the flush's outcome; then the held answers of entries applied early go out, or,
    /// if the flush failed, are refused as `Indeterminate`. `took`: the sync's duration, when
    /// timed.
    fn end_persist(
        &mut self,
        flush: LogFlush,
        flushed: Result<(), WalError>,
        took: Option<Duration>,
        early: Option<EarlyAnswers<T>>,
    ) -> Result<(), StorageError> {
        let r = self.raw.mut_store().end_sync(flush, flushed);
        if let (Ok(()), Some(took)) = (&r, took) {
            self.log_syncs.push(took);
        }
        if let Some(early) = early {
            if r.is_ok() {
                // The durability boundary of entries applied early.
                let durable = self.raw.store().durable_last_index();
                assert!(
                    early.last <= durable,
                    "entry {} was applied early and answered, but the durable log ends at {durable}",
                    early.last
                );
                self.outputs.extend(early.outputs);
            } else {
                self.refuse_early(early.outputs);
            }
        }
        r
    }

    fn refuse_early(&mut self, outputs: Vec<Output<T>>) {
        for output in outputs {
            let token = match output {
                Output::Written { token, .. } | Output::WriteFailed { token, .. } => token,
                _ => unreachable!("an entry's answers are writes'"),
            };
            self.outputs.push(Output::WriteFailed {
                token,
                error: ReplicaError::Indeterminate,
            });
        }
    }

    /// Read states and committed entries; then, if they may go before their flush ends, the new
    /// entries, whose answers are returned to be held until it has.
    fn apply_round(&mut self, held: &mut HeldReady) -> Option<EarlyAnswers<T>> {
        self.apply_committed(held);
        // Asked again now, not taken from `apply_work`'s estimate: a committed membership change
        // just applied may have ended this node's being the sole voter.
        if !self.may_apply_early(&held.ready, self.state.applied_index()) {
            return None;
        }
        let before = self.outputs.len();
        self.answers_held = true;
        self.apply_entries(held.ready.entries());
        self.answers_held = false;
        let last = held.ready.entries().last().expect("checked").index;
        Some(EarlyAnswers {
            outputs: self.outputs.split_off(before),
            last: LogIndex(last),
        })
    }

    fn apply_committed(&mut self, held: &mut HeldReady) {
        for state in held.ready.take_read_states() {
            self.take_read_state(&state);
        }
        let committed = held.ready.take_committed_entries();
        self.apply_entries(&committed);
    }

    /// Whether the Ready's new entries commit as soon as this node holds them, and may be
    /// applied now: a leader that is the only voter (no joint configuration), ordinary entries
    /// only (a membership change is applied through Raft once committed), right after what is
    /// applied (`applied`: the state's applied index once the committed entries are).
    fn may_apply_early(&self, ready: &raft::Ready, applied: u64) -> bool {
        let entries = ready.entries();
        let Some(first) = entries.first() else {
            return false;
        };
        self.is_leader()
            && self.raw.raft.prs().is_singleton()
            && first.index == applied + 1
            && entries
                .iter()
                .all(|e| e.get_entry_type() == EntryType::EntryNormal)
    }

    /// Bytes of entries the round will apply: what a flush on its own thread can overlap.
    fn apply_work(&self, held: &HeldReady) -> usize {
        let bytes = |entries: &[raft::eraftpb::Entry]| -> usize {
            entries.iter().map(|e| e.data.len()).sum()
        };
        let committed = held.ready.committed_entries();
        let applied = committed
            .last()
            .map_or(0, |e| e.index)
            .max(self.state.applied_index());
        let early = if self.may_apply_early(&held.ready, applied) {
            bytes(held.ready.entries())
        } else {
            0
        };
        bytes(committed) + early
    }

    /// Where a timed sync starts, if syncs are timed and this one writes entries.
    fn sync_started(&self, ready: &raft::Ready) -> Option<Duration> {
        self.sync_clock
            .filter(|_| !ready.entries().is_empty())
            .map(|now| now())
    }
}
