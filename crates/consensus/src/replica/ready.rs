//! Raft's Ready, handled in the order Raft requires, and held when it cannot be persisted (see
//! the documentation of the `replica` module).

use std::collections::HashMap;

use bulwark_ledger::StateMachine;
use raft::eraftpb::{Message, Snapshot};
use raft::StateRole;

use super::{Output, Replica, ReplicaError};
use crate::storage::{RaftStorage, SnapshotInstallError, StorageError};
use crate::types::NodeId;

/// How far the handling of a held Ready got: the stage it resumes at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Stage {
    /// Its snapshot (if any) is still to be installed into the state machine.
    InstallState,
    /// The state machine has the snapshot; the Raft storage does not yet.
    InstallStorage,
    /// Read states and committed entries are still to be handled.
    Apply,
    /// Entries and hard state are still to be persisted and synced.
    Persist,
}

/// A Ready taken from Raft and not yet advanced, because persisting it failed.
pub(super) struct HeldReady {
    pub(super) ready: raft::Ready,
    pub(super) stage: Stage,
}

impl<S: RaftStorage, M: StateMachine, T> Replica<S, M, T> {
    /// Handles Raft's Ready: sends, applies, persists and syncs in the order Raft requires.
    /// `send` is called with messages as soon as they may leave this node.
    ///
    /// `install` replaces the state machine with the snapshot's; its error (anything that becomes
    /// a [`SnapshotInstallError`]) says when to try again: shortly (`Pending`), once space is
    /// freed (`DiskFull`, and [`StorageError::is_disk_full`]), or a little later (`Failed`).
    ///
    /// If installing the snapshot or persisting fails, the Ready is kept and the error returned;
    /// the next call resumes that Ready (and takes no new one) until it is persisted: see the
    /// module documentation. Retry at a modest pace while [`Replica::is_stalled`].
    pub fn process_ready<E: Into<SnapshotInstallError>>(
        &mut self,
        send: &mut impl FnMut(Vec<Message>),
        install: &mut impl FnMut(&mut M, &Snapshot) -> Result<(), E>,
    ) -> Result<(), StorageError> {
        if let Some(held) = self.held.take() {
            return self.handle_ready(held, send, install);
        }
        self.propose_waiting();
        self.start_read_round();
        self.send_read_rounds();
        if !self.raw.has_ready() {
            self.answer_reads();
            return Ok(());
        }
        let mut ready = self.raw.ready();
        if ready
            .ss()
            .is_some_and(|ss| ss.raft_state != StateRole::Leader)
        {
            self.leader_ready = false;
            // This node can no longer tell whether its pending proposals will commit (a new
            // leader may still commit them): say so now rather than leave callers waiting.
            // Retrying with the same ids is safe.
            self.fail_proposals(ReplicaError::Indeterminate);
        }
        if !ready.messages().is_empty() {
            Self::send_noting_snapshots(
                &mut self.snapshots_sent,
                self.ticks,
                send,
                ready.take_messages(),
            );
        }
        let held = HeldReady {
            ready,
            stage: Stage::InstallState,
        };
        self.handle_ready(held, send, install)
    }

    /// Sends messages through the shell, remembering snapshots sent.
    fn send_noting_snapshots(
        snapshots_sent: &mut HashMap<NodeId, u64>,
        ticks: u64,
        send: &mut impl FnMut(Vec<Message>),
        messages: Vec<Message>,
    ) {
        for m in &messages {
            if m.get_msg_type() == raft::eraftpb::MessageType::MsgSnapshot {
                snapshots_sent.insert(NodeId(m.to), ticks);
            }
        }
        send(messages);
    }

    /// The rest of a Ready's handling from `held.stage` on; each stage is done once, so that a
    /// Ready held after a failure resumes where it stopped.
    fn handle_ready<E: Into<SnapshotInstallError>>(
        &mut self,
        mut held: HeldReady,
        send: &mut impl FnMut(Vec<Message>),
        install: &mut impl FnMut(&mut M, &Snapshot) -> Result<(), E>,
    ) -> Result<(), StorageError> {
        if let Err(e) = self.install_snapshot(&mut held, install) {
            return Err(self.hold(held, e));
        }
        let applied_early = match self.apply_and_persist(&mut held) {
            Ok(last) => last,
            Err(e) => return Err(self.hold(held, e)),
        };
        let mut ready = held.ready;
        if !ready.persisted_messages().is_empty() {
            send(ready.take_persisted_messages());
        }
        let mut light = self.raw.advance(ready);
        if let Some(commit) = light.commit_index() {
            let mut hs = self.raw.raft.hard_state();
            hs.commit = commit;
            self.raw.mut_store().set_hard_state(&hs);
        }
        if !light.messages().is_empty() {
            Self::send_noting_snapshots(
                &mut self.snapshots_sent,
                self.ticks,
                send,
                light.take_messages(),
            );
        }
        let committed = light.take_committed_entries();
        self.apply_entries(&committed);
        self.raw.advance_apply();
        let log = &self.raw.raft.raft_log;
        assert!(
            log.applied <= log.committed && log.committed <= log.last_index(),
            "applied {} <= committed {} <= last {} must hold",
            log.applied,
            log.committed,
            log.last_index()
        );
        // Entries applied before their flush ended (a sole voter's) are committed by now.
        if let Some(last) = applied_early {
            assert!(
                last.0 <= log.committed,
                "entry {last} was applied early but only {} is committed",
                log.committed
            );
        }
        // Entries just applied may have made this leader ready (its term's first entry): what
        // waited for that goes now, in the next Ready.
        self.propose_waiting();
        self.send_read_rounds();
        self.answer_reads();
        Ok(())
    }

    /// The Ready's snapshot, into the state machine then the Raft storage (stages
    /// `InstallState` and `InstallStorage`).
    fn install_snapshot<E: Into<SnapshotInstallError>>(
        &mut self,
        held: &mut HeldReady,
        install: &mut impl FnMut(&mut M, &Snapshot) -> Result<(), E>,
    ) -> Result<(), StorageError> {
        let has_snapshot = !held.ready.snapshot().is_empty();
        if held.stage == Stage::InstallState {
            if has_snapshot {
                // The shell replaces the state with the leader's checkpoint (at or after the
                // snapshot's index); entries up to the state's applied index are then skipped.
                let snapshot = held.ready.snapshot().clone();
                install(&mut self.state, &snapshot).map_err(|e| StorageError::SnapshotInstall {
                    index: snapshot.get_metadata().index,
                    source: e.into(),
                })?;
                assert!(
                    self.state.applied_index() >= snapshot.get_metadata().index,
                    "an installed snapshot covers its index"
                );
            }
            held.stage = Stage::InstallStorage;
        }
        if held.stage == Stage::InstallStorage {
            if has_snapshot {
                let meta = held.ready.snapshot().get_metadata().clone();
                self.raw.mut_store().install_snapshot(&meta)?;
            }
            held.stage = Stage::Apply;
        }
        Ok(())
    }

    /// Keeps a Ready that could not be persisted, and answers what waits on this node: its
    /// proposals may or may not commit under another leader (`Indeterminate`); writes not yet
    /// proposed and reads are refused (`Stalled`: nothing of them was done).
    fn hold(&mut self, held: HeldReady, error: StorageError) -> StorageError {
        self.held = Some(held);
        // Reads whose read index is confirmed and applied are answerable: they do not depend on
        // this node's disk.
        self.answer_reads();
        self.fail_proposals(ReplicaError::Indeterminate);
        for (_, token) in self.waiting_writes.drain(..) {
            self.outputs.push(Output::WriteFailed {
                token,
                error: ReplicaError::Stalled,
            });
        }
        self.fail_reads(ReplicaError::Stalled);
        error
    }
}
