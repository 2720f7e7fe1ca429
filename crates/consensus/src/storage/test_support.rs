//! Helpers the storage fault tests (disk and memory) share.

use raft::eraftpb::{Entry, HardState};
use raft::GetEntriesContext;

/// A hard state at `term` with `commit`, voted for node 1.
pub(super) fn hard_state(term: u64, commit: u64) -> HardState {
    HardState {
        term,
        vote: 1,
        commit,
        ..HardState::default()
    }
}

/// Every entry the storage holds, first to last.
pub(super) fn all_entries(s: &impl raft::Storage) -> Vec<Entry> {
    let (first, last) = (s.first_index().unwrap(), s.last_index().unwrap());
    s.entries(first, last + 1, None, GetEntriesContext::empty(false))
        .unwrap()
}
