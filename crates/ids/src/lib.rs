//! `bulwark-ids` holds the three numbers of Raft that Bulwark must never mix up: a log index
//! ([`LogIndex`]), a term ([`Term`]) and a node id ([`NodeId`]). raft-rs 0.7 uses a plain `u64`
//! for all three, so a term passed where an index was meant compiles and runs; as distinct
//! types it does not compile. Code converts to and from `u64` only where it meets raft-rs or a
//! serialized form (the wire, the disk, the JSON answers), with `LogIndex(n)` and `.0`.
//!
//! They are one definition for the whole system, in their own crate with no dependencies,
//! because the crates that name them do not depend on one another: `transport` addresses peers
//! by [`NodeId`] and must not depend on `consensus` (which is sans-IO and must not pull in the
//! transport's tokio either). `consensus` re-exports all three (`bulwark_consensus::types`), and
//! `transport` re-exports [`NodeId`]. Like `bulwark-limits`, it must never hold anything else:
//! no format, no behaviour beyond the arithmetic the types need.
#![forbid(unsafe_code)]

use std::fmt;

/// The index of an entry in the Raft log (1 is the first entry; 0 means "none yet", as in
/// raft-rs). Ordered, so that "applied up to" and "committed through" compare directly.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LogIndex(pub u64);

impl LogIndex {
    /// The index right after this one.
    pub fn next(self) -> LogIndex {
        LogIndex(self.0 + 1)
    }

    /// The index `entries` entries before this one, or 0: an index minus a count of entries is
    /// still an index (e.g. the last entry a compaction keeping `entries` entries may drop).
    pub fn saturating_sub(self, entries: u64) -> LogIndex {
        LogIndex(self.0.saturating_sub(entries))
    }

    /// How many entries lie after `earlier` up to and including this index (0 if `earlier` is
    /// not before it): the distance between two indexes is a count, not an index.
    pub fn entries_since(self, earlier: LogIndex) -> u64 {
        self.0.saturating_sub(earlier.0)
    }
}

/// A Raft term (0 before the first election, as in raft-rs).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Term(pub u64);

/// A node of the cluster: its Raft id, also the transport's peer address key. Never 0 (raft-rs
/// reserves 0 for "no node"; `Option<NodeId>` says that instead).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeId(pub u64);

// Plain numbers: messages and logs that printed the `u64` print the same text.
macro_rules! display_plain {
    ($($t:ty),*) => {$(
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }
    )*};
}
display_plain!(LogIndex, Term, NodeId);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_arithmetic_stays_at_zero_and_displays_plain() {
        assert_eq!(LogIndex(5).next(), LogIndex(6));
        assert_eq!(LogIndex(5).saturating_sub(2), LogIndex(3));
        assert_eq!(LogIndex(1).saturating_sub(2), LogIndex(0));
        assert_eq!(LogIndex(7).entries_since(LogIndex(4)), 3);
        assert_eq!(LogIndex(4).entries_since(LogIndex(7)), 0);
        assert_eq!(
            format!("{} {} {}", LogIndex(3), Term(2), NodeId(1)),
            "3 2 1"
        );
    }
}
