//! The single-node engine: recovery at start, then one event loop that owns the log and the state.
//!
//! It owns the order of durability: a write request's batch gets its timestamp, is appended to
//! the write-ahead log and applied in memory; one fsync then covers every batch of the group
//! (group commit), and only after it do the requests get their answers. Reads are served between
//! groups, so they see exactly the acknowledged, durable state. Checkpoints run in the
//! background, and the log behind a finished checkpoint is deleted.
//!
//! It must never answer a write before its fsync, never apply a log record out of order, and never
//! keep running after a failed fsync (the state in memory is then ahead of the disk).
//!
//! A full disk: a cluster member (`cluster.rs`) stays up while its disk is full, refuses writes and
//! linearizable reads with [`NodeError::DiskFull`], and goes on by itself once space is freed. The
//! single-node loop (`event_loop.rs`) does not: a failed write of its log is fatal there, as before
//! (its checkpoints, like every state store's, wait for space instead of failing).

pub mod cluster;
mod event_loop;
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
use bulwark_wal::{Wal, WalError, WalOptions};
use tokio::sync::{oneshot, Semaphore};

pub use metrics::Metrics;

/// Where the node keeps its data and when it checkpoints.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    pub data_dir: PathBuf,
    pub segment_bytes: u64,
    /// Start a checkpoint once this many transfers are in the memtable...
    pub checkpoint_transfers: usize,
    /// ...or the log has grown past this many bytes.
    pub checkpoint_log_bytes: u64,
    /// Write requests that may wait for the loop at once; more wait in the API.
    pub max_inflight_writes: usize,
}

impl NodeConfig {
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        NodeConfig {
            data_dir: data_dir.into(),
            segment_bytes: 64 << 20,
            checkpoint_transfers: 150_000,
            checkpoint_log_bytes: 256 << 20,
            max_inflight_writes: 256,
        }
    }

    pub fn wal_dir(&self) -> PathBuf {
        self.data_dir.join("wal")
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
    /// The cluster as the event loop last saw it; `None` for a single node.
    pub(crate) cluster: Option<Arc<std::sync::RwLock<cluster::ClusterView>>>,
    /// Set by a cluster member's loop while its disk is full (it cannot persist its Raft log or
    /// its state store); never set on a single node.
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
        let view = self.cluster.as_ref()?;
        view.read()
            .expect("cluster view lock")
            .http_addrs
            .get(&id)
            .copied()
    }

    /// The local IP this member's connections to other members come from
    /// ([`cluster::ClusterConfig::source_ip`]); `None` on a single node or when the OS picks.
    pub fn source_ip(&self) -> Option<std::net::IpAddr> {
        let view = self.cluster.as_ref()?;
        view.read().expect("cluster view lock").source_ip
    }

    /// True while this node can serve: a single node always; a member while it leads or has
    /// heard from a leader within an election timeout, and its disk is not full.
    pub fn is_ready(&self) -> bool {
        !self.is_disk_full()
            && self
                .cluster
                .as_ref()
                .is_none_or(|v| v.read().expect("cluster view lock").ready)
    }

    /// Waits until every in-sync replica holds log `index` (Kafka's acks=all). A single node
    /// is its only replica.
    pub async fn wait_replicated(&self, index: u64) -> Result<(), NodeError> {
        if self.cluster.is_none() {
            return Ok(());
        }
        let (reply, answer) = oneshot::channel();
        self.requests
            .send(Request::WaitReplicated { index, reply })
            .map_err(|_| NodeError::Stopped)?;
        answer.await.map_err(|_| NodeError::Stopped)?
    }

    /// True once this node has been removed from its cluster: it must serve nothing.
    pub fn is_removed(&self) -> bool {
        self.cluster
            .as_ref()
            .is_some_and(|v| v.read().expect("cluster view lock").removed)
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
    /// Recovers the state from the data directory (last checkpoint + log replay) and starts the
    /// event loop. Refuses to start, with the file and offset, on corruption anywhere but a torn
    /// tail of the log.
    pub fn start(config: NodeConfig, metrics: Arc<Metrics>) -> Result<Node, NodeError> {
        std::fs::create_dir_all(&config.data_dir).map_err(|source| NodeError::Io {
            what: "create data directory",
            path: config.data_dir.clone(),
            source,
        })?;
        let (wal, store) = recover(&config)?;
        let (requests, inbox) = mpsc::channel();
        let handle = NodeHandle {
            requests,
            write_permits: Arc::new(Semaphore::new(config.max_inflight_writes)),
            snapshots: Arc::new(std::sync::Mutex::new(Some(store.snapshot_source()))),
            cluster: None,
            disk_full: Arc::new(AtomicBool::new(false)),
            data_dir: config.data_dir.clone(),
            metrics: metrics.clone(),
        };
        let event_loop = event_loop::EventLoop::new(config, wal, store, metrics);
        let thread = std::thread::Builder::new()
            .name("event-loop".into())
            .spawn(move || event_loop.run(inbox))
            .map_err(|source| NodeError::Io {
                what: "spawn event loop",
                path: PathBuf::new(),
                source,
            })?;
        Ok(Node { handle, thread })
    }

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

/// Opens the state store at its last checkpoint and replays the log after it.
fn recover(config: &NodeConfig) -> Result<(Wal, StateStore), NodeError> {
    let started = std::time::Instant::now();
    let mut store = StateStore::open(&config.state_path())?;
    let (mut wal, recovery) = Wal::open(
        &config.wal_dir(),
        WalOptions {
            segment_bytes: config.segment_bytes,
        },
    )?;
    if let Some(torn) = &recovery.torn_tail {
        tracing::warn!(
            file = %torn.file.display(),
            offset = torn.offset,
            bytes_cut = torn.bytes_cut,
            "cut a torn tail from the write-ahead log (a write that never completed)"
        );
    }
    let checkpoint = store.checkpointed_index();
    let fail = |reason: String| NodeError::Recovery {
        dir: config.data_dir.clone(),
        reason,
    };
    let empty = wal.last_index() < wal.first_index();
    if wal.first_index() > checkpoint + 1 {
        return Err(fail(format!(
            "the log starts at index {} but the checkpoint holds only up to {checkpoint}: \
             records {}..{} are missing",
            wal.first_index(),
            checkpoint + 1,
            wal.first_index() - 1
        )));
    }
    if empty {
        if wal.first_index() != checkpoint + 1 {
            wal.reset_next_index(checkpoint + 1)?;
        }
    } else if wal.last_index() < checkpoint {
        return Err(fail(format!(
            "the log ends at index {} but the checkpoint is at {checkpoint}: the log lost records \
             it had made durable",
            wal.last_index()
        )));
    }
    let mut replayed = 0u64;
    for record in wal.read_from(checkpoint + 1)? {
        let (index, payload) = record?;
        let batch = bulwark_ledger::codec::decode(&payload)
            .map_err(|e| fail(format!("log record {index} does not decode: {e}")))?;
        store.apply_batch(index, &batch);
        replayed += 1;
    }
    tracing::info!(
        checkpoint,
        replayed,
        applied_index = store.applied_index(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "recovered"
    );
    Ok((wal, store))
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
