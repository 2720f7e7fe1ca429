//! Why a node did not start, or stopped: a [`Refusal`] (the directory, the flags and the cluster disagree;
//! nothing was changed, and only the operator can settle it) kept apart from the faults (I/O,
//! damaged files) that a [`StartError`] also carries, so that a caller can tell one from the
//! other without reading the message. The refusals' words are quoted by the binary's tests and
//! by docs/operations.md: their `Display` must not change. A running loop's fatal faults are
//! [`NodeFault`]s.

use std::path::PathBuf;

use bulwark_consensus::recovery::{AlignError, UnknownStateTerm};
use bulwark_consensus::replica::ReplicaError;
use bulwark_consensus::storage::StorageError;
use bulwark_store::StoreError;

use crate::cluster::{AddressBookError, ConfigError};
use crate::identity::{IdentityError, IDENTITY_FILE, LAYOUT_VERSION, LOCK_FILE};
use crate::install::InstallError;

/// A start this node must not go on with. Each names what the flags (or the cluster) say and
/// what the directory holds.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error(
        "{} is in use by another running node (its `{LOCK_FILE}` file is locked)",
        dir.display()
    )]
    InUse { dir: PathBuf },
    #[error(
        "{} holds the single-node layout of an older Bulwark (a `wal/` directory, layout 1); \
         this version runs every node as a Raft cluster (layout {LAYOUT_VERSION}) and cannot \
         read it. Start on a new directory and load the accounts and transfers again",
        dir.display()
    )]
    LegacyLayout { dir: PathBuf },
    #[error(
        "{} holds a Raft log or a state store but no `{IDENTITY_FILE}` file: it was made by an \
         older Bulwark (layout 1) or the file was deleted; refusing to guess whose data it is",
        dir.display()
    )]
    NoIdentity { dir: PathBuf },
    #[error(
        "{} has layout {layout} but this Bulwark reads layout {LAYOUT_VERSION}",
        dir.display()
    )]
    UnknownLayout { dir: PathBuf, layout: u64 },
    #[error(
        "--node-id {requested} but {} belongs to node {owner} (its `{IDENTITY_FILE}` file): \
         start it as node {owner}, or give this node a directory of its own",
        dir.display()
    )]
    NodeIdMismatch {
        dir: PathBuf,
        requested: u64,
        owner: u64,
    },
    #[error(
        "--cluster-id {requested} but {} belongs to cluster {owner} (its `{IDENTITY_FILE}` file)",
        dir.display()
    )]
    ClusterIdMismatch {
        dir: PathBuf,
        requested: u64,
        owner: u64,
    },
    #[error(
        "{} belongs to node {node_id} of cluster {cluster_id} but its Raft log \
         (`raft/hardstate`) is missing: the node lost its log and its vote, and must not rejoin \
         as if it had them. Remove it from the cluster and add it back with an empty directory \
         (docs/operations.md, \"Replacing a node\")",
        dir.display()
    )]
    LostLog {
        dir: PathBuf,
        node_id: u64,
        cluster_id: u64,
    },
    #[error(
        "node {node_id} starts on an empty directory, but the cluster's leader (node {leader}) \
         knows node {node_id} to hold its log up to index {index}: this node lost its log and \
         its vote and must not come back as that voter. Remove it from the cluster and add a \
         node with a new id (docs/operations.md, \"Replacing a node\")"
    )]
    LostVoter {
        node_id: u64,
        leader: u64,
        index: u64,
    },
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(
        "this directory holds a cluster whose only voter is node {node_id} but the --member \
         flags name nodes {others:?}: flags only shape a new cluster. Start it without \
         --member, then grow it with `bulwark cluster add` and `bulwark cluster promote`"
    )]
    FlagsNameOthers { node_id: u64, others: Vec<u64> },
    #[error(
        "the Raft log starts after index {compacted} but the state store ({}) holds only up to \
         {applied}: entries {}..={compacted} are missing (was state.redb deleted or replaced?)",
        state.display(),
        .applied + 1
    )]
    StateBehindLog {
        state: PathBuf,
        applied: u64,
        compacted: u64,
    },
    #[error(transparent)]
    StateTermUnknown(#[from] UnknownStateTerm),
}

/// Why `identity::resolve` or `cluster::start_cluster` did not start a node.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Refused before the directory's log or state was opened.
    #[error(transparent)]
    Refused(#[from] Refusal),
    #[error(transparent)]
    Identity(#[from] IdentityError),
    #[error("{what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Opening and checking the Raft log and the state store failed, or refused.
    #[error("recovery of {}: {source}", dir.display())]
    Recovery {
        dir: PathBuf,
        source: Box<RecoveryError>,
    },
}

impl StartError {
    /// The refusal, if this start was refused rather than failed.
    pub fn refusal(&self) -> Option<&Refusal> {
        match self {
            StartError::Refused(refusal) => Some(refusal),
            StartError::Recovery { source, .. } => match source.as_ref() {
                RecoveryError::Refused(refusal) => Some(refusal),
                _ => None,
            },
            _ => None,
        }
    }
}

/// Why a running node loop stopped: a fault after which the node must not go on (the log or the
/// state may not be what they say, and a failed fsync may have lost pages). Only the loop's
/// `run` returns one, through [`crate::Node::shutdown`]; requests never carry it (they are
/// answered [`crate::RequestError::Stopped`] once the loop is gone).
#[derive(Debug, thiserror::Error)]
pub enum NodeFault {
    /// A checkpoint failed (other than for lack of space, which the store survives).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A Raft Ready could not be persisted for another reason than a full disk or a snapshot
    /// still to install.
    #[error("{}: the Raft log failed: {source}", dir.display())]
    RaftLog { dir: PathBuf, source: StorageError },
    /// Compacting the Raft log behind a checkpoint (or an installed snapshot) failed.
    #[error("{}: compacting the Raft log failed: {source}", dir.display())]
    Compact { dir: PathBuf, source: StorageError },
    #[error("{what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    /// The loop's thread panicked (an invariant check failed); its message is in the log.
    #[error("the node loop panicked")]
    Panicked,
}

/// What went wrong while opening and checking a directory's Raft log and state store.
#[derive(Debug, thiserror::Error)]
pub enum RecoveryError {
    #[error(transparent)]
    Refused(#[from] Refusal),
    #[error(transparent)]
    AddressBook(#[from] AddressBookError),
    #[error("{}: {source}", raft_dir.display())]
    OpenLog {
        raft_dir: PathBuf,
        source: StorageError,
    },
    #[error("{}: {source}", raft_dir.display())]
    ReadLog {
        raft_dir: PathBuf,
        source: raft::Error,
    },
    #[error(transparent)]
    Install(#[from] InstallError),
    #[error("bootstrapping {}: {source}", raft_dir.display())]
    BootstrapLog {
        raft_dir: PathBuf,
        source: StorageError,
    },
    #[error("bootstrapping {}: {source}", raft_dir.display())]
    BootstrapState {
        raft_dir: PathBuf,
        source: StoreError,
    },
    #[error(transparent)]
    Align(AlignError),
    #[error(transparent)]
    Replica(ReplicaError),
    #[error("offering the checkpoint as a snapshot: {0}")]
    OfferCheckpoint(StorageError),
    #[error("a sole voter could not take the lead: {0}")]
    Campaign(ReplicaError),
}

impl From<AlignError> for RecoveryError {
    /// A state whose place in the log is unknown is refused; the rest are faults.
    fn from(e: AlignError) -> Self {
        match e {
            AlignError::UnknownTerm(term) => RecoveryError::Refused(term.into()),
            other => RecoveryError::Align(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_is_told_from_a_fault_wherever_it_was_found() {
        let refused = StartError::Refused(Refusal::InUse { dir: "d".into() });
        assert!(refused.refusal().is_some());
        let term = UnknownStateTerm {
            index: 9,
            last: 4,
            commit: 4,
        };
        let in_recovery = StartError::Recovery {
            dir: "d".into(),
            source: Box::new(AlignError::UnknownTerm(term).into()),
        };
        assert_eq!(
            in_recovery.refusal(),
            Some(&Refusal::StateTermUnknown(term))
        );
        assert!(in_recovery
            .to_string()
            .starts_with("recovery of d: the state store is at"));
        let fault = StartError::Io {
            what: "open",
            path: "d/lock".into(),
            source: std::io::Error::from_raw_os_error(5),
        };
        assert!(fault.refusal().is_none());
    }

    #[test]
    fn a_state_behind_the_log_names_the_missing_entries() {
        let refusal = Refusal::StateBehindLog {
            state: "d/state.redb".into(),
            applied: 10,
            compacted: 40,
        };
        assert_eq!(
            refusal.to_string(),
            "the Raft log starts after index 40 but the state store (d/state.redb) holds only up \
             to 10: entries 11..=40 are missing (was state.redb deleted or replaced?)"
        );
    }
}
