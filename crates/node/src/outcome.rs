//! What a request to the node is answered with when it does not succeed: a [`RequestError`].
//! Each variant is an outcome the API maps to its own status and error word (`bulwark-api`'s
//! `error.rs`), and says what became of the request (not done, done, or unknown). The node
//! loop's fatal faults are a type of their own ([`crate::NodeFault`]), returned only by the loop
//! itself: a client never sees their internals, and a request that meets a stopped loop is
//! answered [`RequestError::Stopped`].

use std::path::PathBuf;

use bulwark_consensus::membership::Refusal;
use bulwark_consensus::replica::ConfChangeRefused;
use bulwark_consensus::LogIndex;
use bulwark_consensus::NodeId;
use bulwark_store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// The node loop has stopped (shut down, or stopped on a fault) before it answered: nothing
    /// is known of the request beyond what its answer would have said.
    #[error("the node has stopped")]
    Stopped,
    /// Only the leader takes writes; `leader` is the one this node last heard of.
    // The leader as a plain number (`Some(2)`), as before the id had its own type.
    #[error("this node is not the leader (leader: {:?})", .leader.map(|l| l.0))]
    NotLeader { leader: Option<NodeId> },
    /// The write was replaced in the log by a leader change before it committed: it was not
    /// applied and never will be; the client may retry.
    #[error("the write was dropped by a leader change before it committed; retry it")]
    Dropped,
    /// The leader lost leadership before the write committed: it may still commit under the
    /// next leader, or not. Retrying with the same ids is safe.
    #[error("leadership changed before the write committed; its outcome is unknown")]
    OutcomeUnknown,
    /// An `ack=all` write committed (on a majority) and applied, but this node stopped leading
    /// before every in-sync member confirmed it: it is not lost, only unconfirmed everywhere.
    #[error(
        "the write committed at index {index} on a majority and was applied, but this node \
         stopped leading before every in-sync replica confirmed it"
    )]
    AckAllUnconfirmed { index: LogIndex },
    /// A membership change that would leave the cluster in a configuration it refuses.
    #[error("membership change refused: {0}")]
    Membership(#[from] MembershipRefused),
    /// The disk under the data directory is full: this node cannot persist anything, so it
    /// refuses writes (and reads that need Raft) until space is freed; nothing of the request was
    /// done.
    #[error(
        "no space left on device under {}: this node refuses writes until space is freed",
        dir.display()
    )]
    DiskFull { dir: PathBuf },
    /// Too many requests of this kind are in flight on this node (or its inbox is full): the
    /// request was refused before it reached the node loop, so nothing of it was done.
    #[error(
        "this node is overloaded: too many {what} in flight; nothing of the request was done, \
         retry shortly"
    )]
    Overloaded { what: &'static str },
    /// A read's lookup in the state store failed (a history page read from redb). Only that read
    /// fails: a store fault that stops the node is the loop's ([`crate::NodeFault::Store`]).
    #[error(transparent)]
    Store(StoreError),
}

/// Why a membership change was refused; its `Display` is the sentence the API answers with
/// (409 `membership_refused`).
#[derive(Debug, thiserror::Error)]
pub enum MembershipRefused {
    /// Checked before it was proposed (`consensus::membership::plan_change`).
    #[error(transparent)]
    Planned(#[from] Refusal),
    /// Committed, but Raft would not apply it to the configuration as it was by then.
    #[error(transparent)]
    Raft(#[from] ConfChangeRefused),
}
