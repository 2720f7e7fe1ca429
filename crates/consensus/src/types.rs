//! The Raft identifiers this crate's API speaks in: [`LogIndex`], [`Term`] and [`NodeId`], so
//! that an index cannot be passed where a term or a node id is expected.
//!
//! They are defined once, in `bulwark-ids` (no dependencies), because the transport addresses
//! peers by the same [`NodeId`] and must not depend on this crate; here they are re-exported so
//! that users of consensus need not name that crate. raft-rs 0.7 speaks plain `u64`: this crate
//! converts (`LogIndex(n)`, `.0`) exactly where it calls raft-rs or implements
//! [`raft::Storage`], and where the simulation mirrors raft-rs's own numbers.

pub use bulwark_ids::{LogIndex, NodeId, Term};
