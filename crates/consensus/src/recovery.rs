//! Start-time checks of a replica's durable state that the node and the simulation share, so
//! that the simulation starts a node exactly as production does.

use bulwark_ledger::StateMachine;
use raft::eraftpb::{ConfState, SnapshotMetadata};

use crate::storage::{RaftStorage, StorageError};
use crate::types::{LogIndex, Term};

/// What [`align_log_with_state`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Alignment {
    /// The state is within the log: nothing to do.
    Within,
    /// The state was ahead of the log; the log now starts right after it.
    LogMovedTo { index: LogIndex, term: Term },
}

/// A state store ahead of its Raft log whose last entry's term is unknown: it cannot be placed in
/// the log. Its own type so that a start can refuse with it while other failures stay faults.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "the state store is at index {index} but the Raft log ends at {last} (commit {commit}), and \
     the store does not record the term of its last entry"
)]
pub struct UnknownStateTerm {
    pub index: u64,
    pub last: u64,
    pub commit: u64,
}

/// Why [`align_log_with_state`] could not align the log with the state.
#[derive(Debug, thiserror::Error)]
pub enum AlignError {
    #[error("{0}")]
    ReadLog(raft::Error),
    #[error(transparent)]
    UnknownTerm(#[from] UnknownStateTerm),
    #[error("the state's membership does not decode: {0}")]
    Membership(protobuf::ProtobufError),
    #[error("moving the Raft log to the state at {index}: {source}")]
    MoveLog { index: u64, source: StorageError },
}

/// A state store ahead of its Raft log happens when a follower installed a checkpoint newer than
/// the snapshot's index (the log was reset to the snapshot's index) and lost power before its log
/// reached the checkpoint. Everything up to the state's index is committed (a checkpoint holds
/// only committed entries), so the log is moved to start right after the state, at the term of
/// the state's last entry, exactly as if that checkpoint had been the snapshot. A state whose
/// term is unknown (a store from before terms were recorded) cannot be placed in the log: refused.
pub fn align_log_with_state<S: RaftStorage, M: StateMachine>(
    storage: &mut S,
    state: &M,
) -> Result<Alignment, AlignError> {
    let initial = raft::Storage::initial_state(storage).map_err(AlignError::ReadLog)?;
    let last = raft::Storage::last_index(storage).map_err(AlignError::ReadLog)?;
    let commit = initial.hard_state.commit;
    let (index, term) = (state.applied_index(), state.applied_term());
    if index <= commit.max(last) {
        return Ok(Alignment::Within);
    }
    if term == 0 {
        return Err(UnknownStateTerm {
            index,
            last,
            commit,
        }
        .into());
    }
    let conf = match state.membership() {
        Some(encoded) => {
            protobuf::Message::parse_from_bytes(&encoded).map_err(AlignError::Membership)?
        }
        None => initial.conf_state.clone(),
    };
    let conf: ConfState = conf;
    // Raft's term must never be below its log's: the state came from a leader at least that new.
    let mut hard_state = initial.hard_state.clone();
    if hard_state.term < term {
        hard_state.term = term;
        hard_state.vote = 0;
        storage.set_hard_state(&hard_state);
    }
    let mut meta = SnapshotMetadata {
        index,
        term,
        ..Default::default()
    };
    meta.set_conf_state(conf);
    storage
        .install_snapshot(&meta)
        .map_err(|source| AlignError::MoveLog { index, source })?;
    Ok(Alignment::LogMovedTo {
        index: LogIndex(index),
        term: Term(term),
    })
}
