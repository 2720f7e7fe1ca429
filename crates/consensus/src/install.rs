//! Installing a snapshot on a follower, crash-safely at every step: the order of the durable
//! steps and what a start decides about an install a crash interrupted. Sans-IO, so that the node
//! (`node/src/install.rs`: files, redb, the download worker) and the simulation (`sim/`: its
//! in-memory recorder and `MemRaftStorage`) run this one copy of the steps, not each its own.
//!
//! A snapshot replaces the state with another node's checkpoint (at or after the snapshot's
//! index) and resets the Raft log to the snapshot's index. Those are two durable things that
//! cannot change in one step, so an intent (the snapshot's metadata) is made durable before the
//! state is swapped and removed once the log is reset:
//!
//! 1. the checkpoint is fetched beside the state, durable ([`InstallIo::fetch_checkpoint`]);
//! 2. the intent is written ([`IntentIo::write_intent`]);
//! 3. the fetched checkpoint replaces the state, durably, and the state is reopened;
//! 4. the Raft log is reset to the snapshot (the replica does it, through its `RaftStorage`,
//!    right after [`install_state`] returns);
//! 5. the intent is removed ([`finished`]).
//!
//! A start that finds the intent ([`finish_interrupted`]) looks at the state: if it holds the
//! snapshot's index or more, step 3 happened and the start does step 4 itself; otherwise the old
//! state is still in place and the intent is dropped (Raft sends the snapshot again). Without the
//! intent, a crash between 3 and 4 would leave a state ahead of its log that no start can explain.

use bulwark_ledger::StateMachine;
use raft::eraftpb::{Snapshot, SnapshotMetadata};

use crate::storage::{RaftStorage, StorageError};

/// The points between the durable steps where a test may cut the power. The node names them
/// for `BULWARK_CRASH_AT`; the simulation loses power at those it draws.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InstallPoint {
    /// The checkpoint is fetched; nothing else changed.
    BeforeIntent,
    /// The intent is durable; the old state is still in place.
    BeforeSwap,
    /// The new state is durable in place of the old; not reopened yet.
    AfterSwap,
    /// The new state is open; the Raft log is not reset yet.
    AfterReopen,
    /// The install is complete: the log was reset and the intent removed.
    AfterIntentRemoved,
}

impl InstallPoint {
    /// The name `BULWARK_CRASH_AT` gives this point (the real-process tests use these words).
    pub fn name(self) -> &'static str {
        match self {
            InstallPoint::BeforeIntent => "install-before-intent",
            InstallPoint::BeforeSwap => "install-before-swap",
            InstallPoint::AfterSwap => "install-after-swap",
            InstallPoint::AfterReopen => "install-after-reopen",
            InstallPoint::AfterIntentRemoved => "install-after-intent-removed",
        }
    }
}

/// The durable install intent, wherever it is kept.
pub trait IntentIo {
    type Error;
    /// Makes the intent durable (replacing any older one whole).
    fn write_intent(&mut self, meta: &SnapshotMetadata) -> Result<(), Self::Error>;
    /// The durable intent, if there is one.
    fn read_intent(&mut self) -> Result<Option<SnapshotMetadata>, Self::Error>;
    /// Removes the intent durably; no intent is not an error.
    fn remove_intent(&mut self) -> Result<(), Self::Error>;
    /// A test's power cut at `point`: the node dies there, the simulation returns an error
    /// (nothing after it happens). Production returns `Ok`.
    fn crash_point(&mut self, point: InstallPoint) -> Result<(), Self::Error>;
}

/// The IO of an install beyond its intent: fetching the checkpoint and swapping it in.
pub trait InstallIo<M>: IntentIo {
    /// A checkpoint fetched beside the state, durable, not yet in its place.
    type Fetched;
    /// Step 1: fetches a checkpoint covering the snapshot (a source serves its newest one, which
    /// may be past the snapshot's index). `Ok(None)`: still fetching, ask again later.
    fn fetch_checkpoint(
        &mut self,
        snapshot: &Snapshot,
    ) -> Result<Option<Self::Fetched>, Self::Error>;
    /// The index the fetched checkpoint's state is at.
    fn checkpoint_index(fetched: &Self::Fetched) -> u64;
    /// Step 3: the fetched checkpoint replaces the state, durably.
    fn swap_state(&mut self, fetched: Self::Fetched) -> Result<(), Self::Error>;
    /// Step 3: `state` becomes the swapped-in state.
    fn reopen_state(&mut self, state: &mut M) -> Result<(), Self::Error>;
}

/// Why [`install_state`] did not install.
#[derive(Debug)]
pub enum InstallStop<E> {
    /// The checkpoint is still being fetched: nothing changed, try the Ready again shortly.
    Pending { index: u64 },
    /// The fetched checkpoint is older than the snapshot: it cannot stand for it.
    Stale { index: u64, checkpoint: u64 },
    /// A step's IO failed (or the power was cut at a crash point).
    Io(E),
}

impl<E> From<E> for InstallStop<E> {
    fn from(e: E) -> Self {
        InstallStop::Io(e)
    }
}

/// Steps 1–3: fetch, intent, swap, reopen, in that order. On `Ok` the state covers the snapshot;
/// the caller (the replica) then resets the Raft log (step 4) and, once that is durable, calls
/// [`finished`]. Returns the index of the installed state.
pub fn install_state<M, Io: InstallIo<M>>(
    io: &mut Io,
    state: &mut M,
    snapshot: &Snapshot,
) -> Result<u64, InstallStop<Io::Error>> {
    let meta = snapshot.get_metadata();
    let Some(fetched) = io.fetch_checkpoint(snapshot)? else {
        return Err(InstallStop::Pending { index: meta.index });
    };
    let checkpoint = Io::checkpoint_index(&fetched);
    if checkpoint < meta.index {
        return Err(InstallStop::Stale {
            index: meta.index,
            checkpoint,
        });
    }
    io.crash_point(InstallPoint::BeforeIntent)?;
    io.write_intent(meta)?;
    io.crash_point(InstallPoint::BeforeSwap)?;
    io.swap_state(fetched)?;
    io.crash_point(InstallPoint::AfterSwap)?;
    io.reopen_state(state)?;
    io.crash_point(InstallPoint::AfterReopen)?;
    Ok(checkpoint)
}

/// Step 5, once the Raft log is durably reset to the installed snapshot: the install is whole.
pub fn finished<Io: IntentIo>(io: &mut Io) -> Result<(), Io::Error> {
    io.remove_intent()?;
    io.crash_point(InstallPoint::AfterIntentRemoved)
}

/// What a start does with an install intent it finds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartDecision {
    /// The state was swapped (it holds the snapshot's index), the log not yet reset: reset it.
    ResetLog,
    /// The state was never swapped: the old state stands, Raft sends the snapshot again.
    Drop,
    /// Both were done; only the intent's removal was lost.
    AlreadyDone,
}

/// The rule of [`finish_interrupted`]: `state` is the state's applied index, `log_snapshot` the
/// index the Raft log was last reset or compacted to.
pub fn decide(intent_index: u64, state: u64, log_snapshot: u64) -> StartDecision {
    if state < intent_index {
        StartDecision::Drop
    } else if log_snapshot < intent_index {
        StartDecision::ResetLog
    } else {
        StartDecision::AlreadyDone
    }
}

/// What [`finish_interrupted`] found and did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Interrupted {
    /// No intent: no install was interrupted.
    None,
    /// An intent at `index`, decided and then removed.
    Decided { index: u64, decision: StartDecision },
}

/// Why [`finish_interrupted`] could not finish or drop an interrupted install.
#[derive(Debug, thiserror::Error)]
pub enum FinishError<E> {
    #[error(transparent)]
    Io(E),
    #[error("finishing the snapshot install at {index}: {source}")]
    ResetLog { index: u64, source: StorageError },
}

/// At start, before anything else reads the log against the state: completes (step 4, then 5)
/// or drops an install a crash interrupted.
pub fn finish_interrupted<Io: IntentIo, S: RaftStorage, M: StateMachine>(
    io: &mut Io,
    storage: &mut S,
    state: &M,
) -> Result<Interrupted, FinishError<Io::Error>> {
    let Some(meta) = io.read_intent().map_err(FinishError::Io)? else {
        return Ok(Interrupted::None);
    };
    let log_snapshot = raft::Storage::first_index(storage).unwrap_or(1) - 1;
    let decision = decide(meta.index, state.applied_index(), log_snapshot);
    if decision == StartDecision::ResetLog {
        storage
            .install_snapshot(&meta)
            .map_err(|source| FinishError::ResetLog {
                index: meta.index,
                source,
            })?;
    }
    io.remove_intent().map_err(FinishError::Io)?;
    Ok(Interrupted::Decided {
        index: meta.index,
        decision,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_start_resets_the_log_only_after_the_swap() {
        assert_eq!(decide(30, 20, 10), StartDecision::Drop);
        assert_eq!(decide(30, 30, 10), StartDecision::ResetLog);
        assert_eq!(decide(30, 33, 10), StartDecision::ResetLog);
        assert_eq!(decide(30, 33, 30), StartDecision::AlreadyDone);
    }
}
