//! Start-time checks of a replica's durable state that the node and the simulation share, so
//! that the simulation starts a node exactly as production does.

use bulwark_ledger::StateMachine;
use raft::eraftpb::{ConfState, SnapshotMetadata};

use crate::storage::RaftStorage;
use crate::types::{LogIndex, Term};

/// What [`align_log_with_state`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Alignment {
    /// The state is within the log: nothing to do.
    Within,
    /// The state was ahead of the log; the log now starts right after it.
    LogMovedTo { index: LogIndex, term: Term },
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
) -> Result<Alignment, String> {
    let initial = raft::Storage::initial_state(storage).map_err(|e| e.to_string())?;
    let last = raft::Storage::last_index(storage).map_err(|e| e.to_string())?;
    let commit = initial.hard_state.commit;
    let (index, term) = (state.applied_index(), state.applied_term());
    if index <= commit.max(last) {
        return Ok(Alignment::Within);
    }
    if term == 0 {
        return Err(format!(
            "the state store is at index {index} but the Raft log ends at {last} (commit \
             {commit}), and the store does not record the term of its last entry"
        ));
    }
    let conf = match state.membership() {
        Some(encoded) => protobuf::Message::parse_from_bytes(&encoded)
            .map_err(|e| format!("the state's membership does not decode: {e}"))?,
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
        .map_err(|e| format!("moving the Raft log to the state at {index}: {e}"))?;
    Ok(Alignment::LogMovedTo {
        index: LogIndex(index),
        term: Term(term),
    })
}
