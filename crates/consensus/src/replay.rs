//! Committed entries into the state machine: the part of applying an entry that touches only the
//! state, shared by the replica (which also answers its proposals and adopts configurations) and
//! by a point-in-time restore, which replays archived entries into a fresh store with no Raft
//! node around it.

use bulwark_ledger::access::{AuditEvent, AuditRecord, ControlResult};
use bulwark_ledger::{apply_at, codec, effective_timestamp, stamp_after, Batch, BatchResults};
use bulwark_ledger::{LedgerStore, StateMachine, Timestamp};
use raft::eraftpb::{ConfChangeV2, Entry, EntryType};

use crate::membership;

/// Applies a group of batches at the entry's `index`, one after another, and answers each
/// batch's results with the ledger time it left. Asserts that each batch's stamp comes after
/// everything before it: the invariant that keeps timestamps strictly increasing on every
/// replica.
pub fn apply_batches<M: StateMachine>(
    state: &mut M,
    index: u64,
    batches: &[Batch],
) -> Vec<(BatchResults, Timestamp)> {
    let before = state.last_timestamp();
    let applied = match batches {
        [one] => {
            let results = state.apply_batch(index, one);
            vec![(results, state.last_timestamp())]
        }
        many => state.apply_group(index, many),
    };
    assert_eq!(applied.len(), batches.len(), "one result list per batch");
    // Each batch's last event comes after everything before it (the proposer's stamp, moved
    // up past the state's last one and past the expiries due at its start); an imported
    // batch moves the ledger's time only to its newest event, if it moves it at all.
    let mut previous = before;
    for (batch, (_, stamp)) in batches.iter().zip(&applied) {
        let floor = if batch.is_imported() {
            previous
        } else {
            effective_timestamp(previous, batch)
        };
        assert!(
            *stamp >= floor,
            "entry {index}: a batch stamped {stamp:?} before its place in the log"
        );
        previous = *stamp;
    }
    assert_eq!(
        state.last_timestamp(),
        previous,
        "the state ends at the entry's last stamp"
    );
    applied
}

/// The audit record of a membership change committed at `index`: who asked (when the proposer
/// said), what changed, and, when Raft did not take it, why.
pub fn conf_change_audit(
    index: u64,
    timestamp: Timestamp,
    entry: &Entry,
    change: &ConfChangeV2,
    refused: Option<&raft::Error>,
) -> AuditRecord {
    let (actor, details) = membership::split_actor(entry.context.get(16..).unwrap_or_default());
    let mut text = membership::describe_change(change, details);
    if let Some(e) = refused {
        text.push_str(&format!("; refused: {e}"));
    }
    AuditRecord {
        timestamp,
        index,
        actor,
        event: AuditEvent::Membership { details: text },
        result: ControlResult::Ok,
    }
}

/// A committed membership change entry, decoded (either wire form).
pub fn decode_conf_change(entry: &Entry) -> Result<ConfChangeV2, protobuf::ProtobufError> {
    if entry.get_entry_type() == EntryType::EntryConfChange {
        let cc: raft::eraftpb::ConfChange = protobuf::Message::parse_from_bytes(&entry.data)?;
        Ok(raft_proto::ConfChangeI::into_v2(cc))
    } else {
        protobuf::Message::parse_from_bytes(&entry.data)
    }
}

/// How far [`replay_entry`] went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Replayed {
    /// The whole entry is in the state.
    Whole,
    /// The entry's first `batches` batches are in the state (perhaps none); the next would have
    /// moved the ledger past the target time.
    StoppedBefore { batches: usize },
}

/// Why an archived entry cannot be replayed.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("entry {index} does not decode: {reason}")]
    Decode { index: u64, reason: String },
    #[error("entry {index} comes after the state's applied index {applied}: a gap")]
    Gap { index: u64, applied: u64 },
}

/// Replays one committed entry into `state` as a replica applies it, but for the configuration
/// (a restored store gets a configuration of its own): batches, empty entries and membership
/// changes (their audit records). With `until`, stops before the first batch that would move
/// the ledger's time past it. Entries the state holds already are skipped.
pub fn replay_entry<M: StateMachine + LedgerStore>(
    state: &mut M,
    entry: &Entry,
    until: Option<Timestamp>,
) -> Result<Replayed, ReplayError> {
    let index = entry.index;
    if index <= state.applied_index() {
        return Ok(Replayed::Whole);
    }
    if index != state.applied_index() + 1 {
        return Err(ReplayError::Gap {
            index,
            applied: state.applied_index(),
        });
    }
    let decode = |reason: String| ReplayError::Decode { index, reason };
    match entry.get_entry_type() {
        EntryType::EntryNormal if entry.data.is_empty() => state.skip_index(index),
        EntryType::EntryNormal => {
            let batches = codec::decode_entry(&entry.data).map_err(|e| decode(e.to_string()))?;
            match until {
                None => {
                    apply_batches(state, index, &batches);
                }
                Some(until) => {
                    let taken = apply_batches_until(state, index, &batches, until);
                    if taken < batches.len() {
                        if taken > 0 {
                            state.set_applied_term(entry.term);
                        }
                        return Ok(Replayed::StoppedBefore { batches: taken });
                    }
                }
            }
        }
        EntryType::EntryConfChange | EntryType::EntryConfChangeV2 => {
            let change = decode_conf_change(entry).map_err(|e| decode(e.to_string()))?;
            state.skip_index(index);
            let audit = conf_change_audit(
                index,
                StateMachine::last_timestamp(state),
                entry,
                &change,
                None,
            );
            state.record_audit(audit);
        }
    }
    state.set_applied_term(entry.term);
    Ok(Replayed::Whole)
}

/// Applies the entry's batches in order while each leaves the ledger at or before `until`
/// (each checked on the state the ones before it left), and answers how many it applied. The
/// state counts the entry applied (its index) once any batch of it is.
fn apply_batches_until<M: StateMachine + LedgerStore>(
    state: &mut M,
    index: u64,
    batches: &[Batch],
    until: Timestamp,
) -> usize {
    let mut taken = 0;
    for batch in batches {
        if stamp_after(&*state, batch) > until {
            break;
        }
        let floor = effective_timestamp(StateMachine::last_timestamp(state), batch);
        apply_at(state, batch, index);
        assert!(
            batch.is_imported() || StateMachine::last_timestamp(state) >= floor,
            "entry {index}: a batch stamped before its place in the log"
        );
        taken += 1;
    }
    if taken > 0 {
        state.skip_index(index);
    }
    taken
}
