//! A Bulwark node: one engine for every node, a single one included (a cluster of one voter).
//!
//! `cluster.rs` opens the Raft log and the state store and runs the node loop: client writes are
//! proposed to Raft and answered once committed and applied, reads wait for a Raft read index,
//! peer messages and membership changes go to the replica, checkpoints run in the background and
//! compact the log behind them. `identity.rs` decides whether a start may use its data directory.
//!
//! It must never answer a write before the entry holding it is durable on a majority (on a single
//! node: fsynced), never apply a log entry out of order, and never keep running after a failed
//! fsync (the kernel may have dropped what it could not write).
//!
//! A full disk: the node stays up, refuses writes and linearizable reads with
//! [`NodeError::DiskFull`], and goes on by itself once space is freed (see `cluster.rs`).

mod ack_all;
pub mod cluster;
pub mod faults;
pub mod identity;
mod install;
pub mod metrics;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;

use bulwark_ledger::{
    Account, AccountId, Balances, BatchResults, Operation, PendingStatus, Timestamp, Transfer,
    TransferId,
};
use bulwark_store::{StateStore, StoreError};
use bulwark_wal::WalError;
use tokio::sync::{oneshot, Semaphore};

pub use metrics::Metrics;

/// Where the node keeps its data and when it checkpoints.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    pub data_dir: PathBuf,
    pub segment_bytes: u64,
    /// Start a checkpoint once this many transfers are in the memtable (or the Raft log has
    /// grown well past what is kept behind a checkpoint).
    pub checkpoint_transfers: usize,
    /// Write requests that may wait for the loop at once; more wait in the API.
    pub max_inflight_writes: usize,
}

impl NodeConfig {
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        NodeConfig {
            data_dir: data_dir.into(),
            segment_bytes: bulwark_limits::DEFAULT_SEGMENT_BYTES,
            checkpoint_transfers: bulwark_limits::DEFAULT_CHECKPOINT_TRANSFERS,
            max_inflight_writes: bulwark_limits::MAX_INFLIGHT_WRITES,
        }
    }

    /// The Raft log: WAL segments and the hard-state file.
    pub fn raft_dir(&self) -> PathBuf {
        self.data_dir.join("raft")
    }

    pub fn state_path(&self) -> PathBuf {
        self.data_dir.join("state.redb")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Wal(#[from] WalError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("recovery of {dir}: {reason}")]
    Recovery { dir: PathBuf, reason: String },
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the node has stopped")]
    Stopped,
    /// Only the leader takes writes; `leader` is the one this node last heard of.
    #[error("this node is not the leader (leader: {leader:?})")]
    NotLeader { leader: Option<u64> },
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
    AckAllUnconfirmed { index: u64 },
    /// A membership change that would leave the cluster in a configuration it refuses.
    #[error("membership change refused: {0}")]
    Membership(String),
    /// The disk under the data directory is full: this node cannot persist anything, so it
    /// refuses writes (and reads that need Raft) until space is freed; nothing of the request was
    /// done.
    #[error(
        "no space left on device under {}: this node refuses writes until space is freed",
        dir.display()
    )]
    DiskFull { dir: PathBuf },
}

/// The outcome of a write: one result per event, and the log index that made it durable.
#[derive(Clone, Debug)]
pub struct WriteOutcome {
    pub results: BatchResults,
    pub commit_index: u64,
    pub timestamp: Timestamp,
}

#[derive(Clone, Debug)]
pub enum Query {
    Account(AccountId),
    Transfer(TransferId),
    AccountTransfers {
        account: AccountId,
        after: Timestamp,
        limit: usize,
    },
    Status,
}

#[derive(Clone, Debug)]
pub enum Answer {
    Account(Option<Account>),
    /// The transfer, and its status if it was created `pending`.
    Transfer(Option<(Transfer, Option<PendingStatus>)>),
    /// `None` if the account does not exist.
    AccountTransfers(Option<Vec<(Transfer, Option<Balances>)>>),
    Status(NodeStatus),
}

#[derive(Clone, Debug)]
pub struct ReadOutcome {
    pub answer: Answer,
    pub applied_index: u64,
}

#[derive(Clone, Debug)]
pub struct NodeStatus {
    pub applied_index: u64,
    pub checkpointed_index: u64,
    pub last_timestamp: Timestamp,
    pub accounts: usize,
    pub log_first_index: u64,
    pub log_last_index: u64,
    pub log_bytes: u64,
    pub log_segments: usize,
    /// Raft's view, in cluster mode.
    pub cluster: Option<ClusterStatus>,
}

#[derive(Clone, Debug)]
pub struct ClusterStatus {
    pub node_id: u64,
    pub role: &'static str,
    pub term: u64,
    pub leader: Option<u64>,
    pub commit_index: u64,
    pub members: Vec<MemberStatus>,
}

/// A member as this node sees it; replication figures only when this node leads.
#[derive(Clone, Debug)]
pub struct MemberStatus {
    pub id: u64,
    pub learner: bool,
    /// How long since this member last had every entry (leader only).
    pub lag_ms: Option<u64>,
    pub http_addr: std::net::SocketAddr,
    pub match_index: Option<u64>,
    pub lag: Option<u64>,
    pub recent_active: Option<bool>,
}

pub(crate) enum Request {
    Write {
        operation: Operation,
        reply: oneshot::Sender<Result<WriteOutcome, NodeError>>,
    },
    Read {
        query: Query,
        /// Answer from this node's state at once, without confirming it is current.
        stale: bool,
        reply: oneshot::Sender<Result<ReadOutcome, NodeError>>,
    },
    /// A Raft message from a peer (cluster mode).
    Peer(raft::eraftpb::Message),
    /// Resolves once every in-sync member holds log `index` (a write with `ack=all`).
    WaitReplicated {
        index: u64,
        reply: oneshot::Sender<Result<(), NodeError>>,
    },
    /// An operator's membership change (cluster mode); answered with its log index.
    Membership {
        change: cluster::MembershipChange,
        reply: oneshot::Sender<Result<u64, NodeError>>,
    },
    Shutdown,
}

/// A cheap, cloneable way to talk to the node's event loop from async code.
#[derive(Clone)]
pub struct NodeHandle {
    pub(crate) requests: mpsc::Sender<Request>,
    pub(crate) write_permits: Arc<Semaphore>,
    /// Where snapshots of this node's last checkpoint are read from (replaced when the node
    /// installs a snapshot itself).
    pub(crate) snapshots: Arc<std::sync::Mutex<Option<bulwark_store::snapshot::SnapshotSource>>>,
    /// The cluster as the node loop last saw it.
    pub(crate) cluster: Arc<std::sync::RwLock<cluster::ClusterView>>,
    /// Set by the node loop while its disk is full (it cannot persist its Raft log or its state
    /// store).
    pub(crate) disk_full: Arc<AtomicBool>,
    pub(crate) data_dir: PathBuf,
    pub metrics: Arc<Metrics>,
}

impl NodeHandle {
    /// True while this node's disk is full: it refuses writes and linearizable reads (and must
    /// not forward writes either: the API checks this first).
    pub fn is_disk_full(&self) -> bool {
        self.disk_full.load(Ordering::Acquire)
    }

    /// [`NodeError::DiskFull`] while the disk is full.
    pub fn disk_full_error(&self) -> Option<NodeError> {
        self.is_disk_full().then(|| NodeError::DiskFull {
            dir: self.data_dir.clone(),
        })
    }

    /// Submits a batch; resolves once it is durable and applied.
    pub async fn write(&self, operation: Operation) -> Result<WriteOutcome, NodeError> {
        let _permit = self
            .write_permits
            .acquire()
            .await
            .map_err(|_| NodeError::Stopped)?;
        let (reply, answer) = oneshot::channel();
        self.requests
            .send(Request::Write { operation, reply })
            .map_err(|_| NodeError::Stopped)?;
        answer.await.map_err(|_| NodeError::Stopped)?
    }

    /// The source of this node's checkpoint snapshots, for a follower that must catch up.
    pub fn snapshot_source(&self) -> Option<bulwark_store::snapshot::SnapshotSource> {
        self.snapshots.lock().expect("snapshot source lock").clone()
    }

    /// The HTTP address of member `id`, as this node knows it.
    pub fn member_http_addr(&self, id: u64) -> Option<std::net::SocketAddr> {
        self.cluster
            .read()
            .expect("cluster view lock")
            .http_addrs
            .get(&id)
            .copied()
    }

    /// The local IP this member's connections to other members come from
    /// ([`cluster::ClusterConfig::source_ip`]); `None` when the OS picks.
    pub fn source_ip(&self) -> Option<std::net::IpAddr> {
        self.cluster.read().expect("cluster view lock").source_ip
    }

    /// True while this node can serve: it leads or has heard from a leader within an election
    /// timeout, and its disk is not full.
    pub fn is_ready(&self) -> bool {
        !self.is_disk_full() && self.cluster.read().expect("cluster view lock").ready
    }

    /// Waits until every in-sync replica holds log `index` (Kafka's acks=all).
    pub async fn wait_replicated(&self, index: u64) -> Result<(), NodeError> {
        let (reply, answer) = oneshot::channel();
        self.requests
            .send(Request::WaitReplicated { index, reply })
            .map_err(|_| NodeError::Stopped)?;
        answer.await.map_err(|_| NodeError::Stopped)?
    }

    /// True once this node has been removed from its cluster: it must serve nothing.
    pub fn is_removed(&self) -> bool {
        self.cluster.read().expect("cluster view lock").removed
    }

    /// Asks the cluster to change its membership; resolves once the change is applied.
    pub async fn change_membership(
        &self,
        change: cluster::MembershipChange,
    ) -> Result<u64, NodeError> {
        let (reply, answer) = oneshot::channel();
        self.requests
            .send(Request::Membership { change, reply })
            .map_err(|_| NodeError::Stopped)?;
        answer.await.map_err(|_| NodeError::Stopped)?
    }

    /// Hands a peer's Raft message to the event loop (cluster mode).
    pub fn deliver_peer_message(&self, message: raft::eraftpb::Message) {
        let _ = self.requests.send(Request::Peer(message));
    }

    /// Answers a query from the state every acknowledged write is in (linearizable).
    pub async fn read(&self, query: Query) -> Result<ReadOutcome, NodeError> {
        self.read_with(query, false).await
    }

    /// Answers a query from this node's state as it is, which may lag the leader.
    pub async fn read_stale(&self, query: Query) -> Result<ReadOutcome, NodeError> {
        self.read_with(query, true).await
    }

    async fn read_with(&self, query: Query, stale: bool) -> Result<ReadOutcome, NodeError> {
        let (reply, answer) = oneshot::channel();
        self.requests
            .send(Request::Read {
                query,
                stale,
                reply,
            })
            .map_err(|_| NodeError::Stopped)?;
        answer.await.map_err(|_| NodeError::Stopped)?
    }
}

/// A running node: its handle and its event-loop thread.
pub struct Node {
    pub(crate) handle: NodeHandle,
    pub(crate) thread: JoinHandle<Result<(), NodeError>>,
}

impl Node {
    pub fn handle(&self) -> NodeHandle {
        self.handle.clone()
    }

    /// True once the event loop has ended (after a shutdown or a fatal error).
    pub fn is_finished(&self) -> bool {
        self.thread.is_finished()
    }

    /// Finishes every request already queued, writes a checkpoint and stops.
    pub fn shutdown(self) -> Result<(), NodeError> {
        let _ = self.handle.requests.send(Request::Shutdown);
        self.handle.write_permits.close();
        self.thread.join().unwrap_or(Err(NodeError::Stopped))
    }
}

/// Answers an account, transfer or history query from the state store.
pub(crate) fn answer_query(store: &StateStore, query: Query) -> Result<ReadOutcome, NodeError> {
    use bulwark_ledger::LedgerStore;
    let answer = match query {
        Query::Account(id) => Answer::Account(store.account(id)),
        Query::Transfer(id) => {
            Answer::Transfer(store.transfer(id).map(|t| (t, store.pending_status(id))))
        }
        Query::AccountTransfers {
            account,
            after,
            limit,
        } => Answer::AccountTransfers(match store.account(account) {
            None => None,
            Some(_) => Some(store.account_transfers(account, after, limit)?),
        }),
        Query::Status => unreachable!("each event loop answers status itself"),
    };
    Ok(ReadOutcome {
        answer,
        applied_index: store.applied_index(),
    })
}
