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
//! The loop's inbox is bounded (`Inbox`): writes, reads and `ack=all` waiters hold a permit
//! (bounds in `bulwark-limits`) until they are answered, and one that gets none within
//! `PERMIT_WAIT` is refused as [`RequestError::Overloaded`]; peer messages beyond their share of the
//! inbox are dropped and counted, never waited for.
//!
//! A full disk: the node stays up, refuses writes and linearizable reads with
//! [`RequestError::DiskFull`], and goes on by itself once space is freed (see `cluster.rs`).

#![warn(clippy::too_many_lines)]

pub mod access;
pub mod cluster;
mod download;
mod error;
pub mod faults;
pub mod identity;
mod install;
pub mod metrics;
mod outcome;
pub mod peer_frame;
pub mod restore;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use bulwark_ledger::outbox::OutboxMessage;
use bulwark_ledger::{
    Account, AccountId, Balances, BatchResults, Change, Operation, PendingStatus, Timestamp,
    Transfer, TransferId,
};
use bulwark_limits::{
    INBOX_PEER_MESSAGES, MAX_ACK_ALL_WAITERS, MAX_INFLIGHT_READS, MAX_INFLIGHT_WRITES, NODE_INBOX,
    PERMIT_WAIT,
};
// Re-exported: the API names the indexes and ids of the answers without depending on consensus.
pub use bulwark_consensus::{LogIndex, NodeId, Term};
/// What an account history query asks for, and the page it answers (`bulwark_store::history`).
pub use bulwark_store::{
    lower_this_threads_priority, HistoryFilter, HistoryPage, QueryFilter, QueryPage,
};
// Re-exported: the API can name why a membership change was refused without depending on
// consensus.
pub use bulwark_consensus::membership::Refusal as MembershipRefusal;
use bulwark_store::StateStore;
use tokio::sync::{oneshot, OwnedSemaphorePermit, Semaphore};

pub use error::{NodeFault, RecoveryError, Refusal, StartError};
pub use install::{InstallError, IntentError};
pub use metrics::Metrics;
pub use outcome::{MembershipRefused, RequestError};

/// Where the node keeps its data and when it checkpoints.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    pub data_dir: PathBuf,
    pub segment_bytes: u64,
    /// Start a checkpoint once this many transfers are in the memtable (or the Raft log has
    /// grown well past what is kept behind a checkpoint).
    pub checkpoint_transfers: usize,
    /// Write requests in flight at once, from the API to their answer; more wait for a permit
    /// for at most `bulwark_limits::PERMIT_WAIT`, then are refused as [`RequestError::Overloaded`].
    pub max_inflight_writes: usize,
    /// `--archive`: where committed entries are archived (`None`: nowhere).
    pub archive: Option<String>,
}

impl NodeConfig {
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        NodeConfig {
            data_dir: data_dir.into(),
            segment_bytes: bulwark_limits::DEFAULT_SEGMENT_BYTES,
            checkpoint_transfers: bulwark_limits::DEFAULT_CHECKPOINT_TRANSFERS,
            max_inflight_writes: bulwark_limits::MAX_INFLIGHT_WRITES,
            archive: None,
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

/// The outcome of a write: one result per event, and the log index that made it durable.
#[derive(Clone, Debug)]
pub struct WriteOutcome {
    pub results: BatchResults,
    pub commit_index: LogIndex,
    pub timestamp: Timestamp,
}

#[derive(Clone, Debug)]
pub enum Query {
    Account(AccountId),
    Transfer(TransferId),
    /// A page of an account's history, as the filter asks.
    AccountTransfers {
        account: AccountId,
        filter: HistoryFilter,
    },
    /// An account's balances after each change after `after`, at most `limit`.
    AccountBalances {
        account: AccountId,
        after: Timestamp,
        limit: usize,
    },
    /// The accounts a filter asks for (`POST /v1/accounts/query`).
    Accounts(QueryFilter),
    /// The transfers a filter asks for (`POST /v1/transfers/query`).
    Transfers(QueryFilter),
    /// The change feed's events after `after`, at most `limit`.
    Changes {
        after: Timestamp,
        limit: usize,
    },
    Status,
    /// Every API token (admin only: the API checks).
    Tokens,
    /// The replicated audit trail after `(timestamp, index)`, at most `limit` records.
    Audit {
        after: Option<(Timestamp, u64)>,
        limit: usize,
    },
    /// Outbound payments queued after `after`, oldest first (the relay's feed).
    Outbound {
        after: Timestamp,
        limit: usize,
    },
    /// Dead payments after payment `after`, by id (the dead-letter queue).
    DeadLetters {
        after: TransferId,
        limit: usize,
    },
}

#[derive(Clone, Debug)]
pub enum Answer {
    Account(Option<Account>),
    /// The transfer, and its status if it was created `pending`.
    Transfer(Option<(Transfer, Option<PendingStatus>)>),
    /// `None` if the account does not exist; `Some(None)` while the node is still indexing its
    /// memtables' transfers by account: ask again.
    AccountTransfers(Option<Option<HistoryPage>>),
    /// `None` if the account does not exist; the account and a page of its balances otherwise.
    AccountBalances(Option<(Account, Vec<(Timestamp, Balances)>)>),
    Accounts(QueryPage<Account>),
    /// `None` while the node is still indexing its memtable for the query: ask again.
    Transfers(Option<QueryPage<Transfer>>),
    /// Each event with its transfer (for an expiry, the pending transfer); `None` while the
    /// feed is still being replayed: ask again.
    Changes(Option<Vec<(Change, Transfer)>>),
    Status(NodeStatus),
    Tokens(Vec<bulwark_ledger::access::TokenRecord>),
    Audit(Vec<bulwark_ledger::access::AuditRecord>),
    /// Each message with its pending transfer (the one a confirmation posts).
    Outbound(Vec<(OutboxMessage, Transfer)>),
    /// Each dead message with its payment's transfer (what the client asked for).
    DeadLetters(Vec<(OutboxMessage, Transfer)>),
}

/// Whether this node leads, and in which term: the outbox relay delivers only while it does,
/// and every delivery carries the term so that a processor can refuse a deposed leader's.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Leadership {
    pub term: u64,
    pub leading: bool,
}

#[derive(Clone, Debug)]
pub struct ReadOutcome {
    pub answer: Answer,
    pub applied_index: LogIndex,
}

#[derive(Clone, Debug)]
pub struct NodeStatus {
    pub applied_index: LogIndex,
    pub checkpointed_index: LogIndex,
    pub last_timestamp: Timestamp,
    pub accounts: usize,
    /// Outbox payments waiting for their processor, and dead ones.
    pub outbox_outbound: usize,
    pub outbox_dead: usize,
    pub log_first_index: LogIndex,
    pub log_last_index: LogIndex,
    pub log_bytes: u64,
    pub log_segments: usize,
    /// Raft's view, in cluster mode.
    pub cluster: Option<ClusterStatus>,
    /// With `--archive`.
    pub archive: Option<ArchiveStatus>,
}

/// The continuous archive as this node sees it.
#[derive(Clone, Debug)]
pub struct ArchiveStatus {
    pub target: String,
    /// True on the node that ships entries (the leader).
    pub archiving: bool,
    /// The highest index the archive holds (`None`: not listed yet).
    pub archived_index: Option<u64>,
    /// Committed entries not yet in the archive.
    pub lag_entries: Option<u64>,
    pub chunks_uploaded: u64,
    pub failures: u64,
    pub last_upload_ms: Option<u64>,
    pub last_error: Option<String>,
}

#[derive(Clone, Debug)]
pub struct ClusterStatus {
    pub cluster_id: u64,
    pub node_id: NodeId,
    pub role: &'static str,
    pub term: Term,
    pub leader: Option<NodeId>,
    pub commit_index: LogIndex,
    pub members: Vec<MemberStatus>,
}

/// A member as this node sees it; replication figures only when this node leads.
#[derive(Clone, Debug)]
pub struct MemberStatus {
    pub id: NodeId,
    pub learner: bool,
    /// How long since this member last had every entry (leader only).
    pub lag_ms: Option<u64>,
    pub http_addr: cluster::HostPort,
    pub match_index: Option<LogIndex>,
    /// Entries behind the leader's last index (a count, not an index).
    pub lag: Option<u64>,
    pub recent_active: Option<bool>,
}

pub(crate) enum Request {
    Write {
        operation: Operation,
        reply: oneshot::Sender<Result<WriteOutcome, RequestError>>,
        /// Held until the write is answered: bounds the writes in the inbox and the replica.
        permit: OwnedSemaphorePermit,
    },
    Read {
        query: Query,
        /// Answer from this node's state at once, without confirming it is current.
        stale: bool,
        reply: oneshot::Sender<Result<ReadOutcome, RequestError>>,
        /// Held until the read is answered: bounds the reads in the inbox and the replica.
        permit: OwnedSemaphorePermit,
    },
    /// A Raft message from a peer, with its sender's time.
    Peer(peer_frame::PeerMessage),
    /// Resolves once every in-sync member holds log `index` (a write with `ack=all`).
    WaitReplicated {
        index: LogIndex,
        reply: oneshot::Sender<Result<(), RequestError>>,
        /// Held until the waiter is settled: bounds the loop's list of waiters, even when the
        /// client has stopped waiting.
        permit: OwnedSemaphorePermit,
    },
    /// An operator's membership change (cluster mode); answered with its log index.
    Membership {
        change: cluster::MembershipChange,
        actor: bulwark_ledger::access::Actor,
        reply: oneshot::Sender<Result<LogIndex, RequestError>>,
    },
    /// A checkpoint of everything applied so far (a backup reads it); answered with the
    /// checkpoint's index once it is durable.
    Checkpoint {
        reply: oneshot::Sender<Result<LogIndex, RequestError>>,
    },
    /// A graceful stop's first step: answer not ready and, if leading, hand leadership to a
    /// voter; answered with how that ended.
    HandOver {
        reply: oneshot::Sender<bulwark_consensus::handover::HandedOver>,
    },
    Shutdown,
}

/// The node loop's end of its inbox.
///
/// Bounded ([`inbox_capacity`]): every request that holds a permit (writes, reads, `ack=all`
/// waiters), the peer messages admitted ([`INBOX_PEER_MESSAGES`], counted in `peers_queued`)
/// and a few control requests fit at once, so a request that got its permit never finds it
/// full, and a flood of peer messages or requests cannot grow memory.
pub(crate) struct Inbox {
    requests: mpsc::Receiver<Request>,
    peers_queued: Arc<AtomicUsize>,
}

impl Inbox {
    pub(crate) fn recv_timeout(&self, wait: Duration) -> Result<Request, mpsc::RecvTimeoutError> {
        self.requests.recv_timeout(wait).inspect(|r| self.took(r))
    }

    pub(crate) fn try_recv(&self) -> Option<Request> {
        self.requests.try_recv().ok().inspect(|r| self.took(r))
    }

    /// A peer message leaving the inbox makes room for another.
    fn took(&self, request: &Request) {
        if matches!(request, Request::Peer(_)) {
            self.peers_queued.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// The inbox's capacity for a node taking `max_inflight_writes` writes at once.
pub(crate) fn inbox_capacity(max_inflight_writes: usize) -> usize {
    NODE_INBOX - MAX_INFLIGHT_WRITES + max_inflight_writes
}

/// A place among the `?ack=all` waiters, taken before the write itself so that a node too busy
/// to wait refuses the write before it enters the log, never after it committed.
pub struct AckAllPermit(OwnedSemaphorePermit);

/// A cheap, cloneable way to talk to the node's event loop from async code.
#[derive(Clone)]
pub struct NodeHandle {
    pub(crate) requests: mpsc::SyncSender<Request>,
    pub(crate) write_permits: Arc<Semaphore>,
    pub(crate) read_permits: Arc<Semaphore>,
    pub(crate) ack_all_permits: Arc<Semaphore>,
    /// Peer messages in the inbox; beyond [`INBOX_PEER_MESSAGES`] they are dropped.
    pub(crate) peers_queued: Arc<AtomicUsize>,
    /// Where snapshots of this node's last checkpoint are read from (replaced when the node
    /// installs a snapshot itself).
    pub(crate) snapshots: Arc<std::sync::Mutex<Option<bulwark_store::snapshot::SnapshotSource>>>,
    /// The cluster as the node loop last saw it.
    pub(crate) cluster: Arc<std::sync::RwLock<cluster::ClusterView>>,
    /// Set by the node loop while its disk is full (it cannot persist its Raft log or its state
    /// store).
    pub(crate) disk_full: Arc<AtomicBool>,
    /// The tokens, as the node loop last published them.
    pub(crate) access: access::SharedAccess,
    pub(crate) data_dir: PathBuf,
    /// The timestamp of the last batch applied, as the node loop last published it: what a
    /// caught-up change feed request waits on.
    pub(crate) last_applied: Arc<tokio::sync::watch::Sender<Timestamp>>,
    /// This node's leadership, as the node loop last published it.
    pub(crate) leadership: Arc<tokio::sync::watch::Sender<Leadership>>,
    pub metrics: Arc<Metrics>,
}

impl NodeHandle {
    /// A handle and the inbox it sends to, for a node loop to serve.
    pub(crate) fn new(
        max_inflight_writes: usize,
        snapshots: Arc<std::sync::Mutex<Option<bulwark_store::snapshot::SnapshotSource>>>,
        cluster: Arc<std::sync::RwLock<cluster::ClusterView>>,
        disk_full: Arc<AtomicBool>,
        data_dir: PathBuf,
        metrics: Arc<Metrics>,
    ) -> (NodeHandle, Inbox) {
        let (requests, receiver) = mpsc::sync_channel(inbox_capacity(max_inflight_writes));
        let peers_queued = Arc::new(AtomicUsize::new(0));
        let handle = NodeHandle {
            requests,
            write_permits: Arc::new(Semaphore::new(max_inflight_writes)),
            read_permits: Arc::new(Semaphore::new(MAX_INFLIGHT_READS)),
            ack_all_permits: Arc::new(Semaphore::new(MAX_ACK_ALL_WAITERS)),
            peers_queued: peers_queued.clone(),
            snapshots,
            cluster,
            disk_full,
            access: Default::default(),
            data_dir,
            last_applied: Arc::new(tokio::sync::watch::Sender::new(Timestamp(0))),
            leadership: Arc::new(tokio::sync::watch::Sender::new(Leadership::default())),
            metrics,
        };
        (
            handle,
            Inbox {
                requests: receiver,
                peers_queued,
            },
        )
    }

    /// True while this node's disk is full: it refuses writes and linearizable reads (and must
    /// not forward writes either: the API checks this first).
    pub fn is_disk_full(&self) -> bool {
        self.disk_full.load(Ordering::Acquire)
    }

    /// [`RequestError::DiskFull`] while the disk is full.
    pub fn disk_full_error(&self) -> Option<RequestError> {
        self.is_disk_full().then(|| RequestError::DiskFull {
            dir: self.data_dir.clone(),
        })
    }

    /// Submits a batch; resolves once it is durable and applied.
    pub async fn write(&self, operation: Operation) -> Result<WriteOutcome, RequestError> {
        let permit = permit(&self.write_permits, "writes").await?;
        let (reply, answer) = oneshot::channel();
        self.submit(Request::Write {
            operation,
            reply,
            permit,
        })?;
        answer.await.map_err(|_| RequestError::Stopped)?
    }

    /// Queues `request` for the loop without waiting: a full inbox (which a request holding a
    /// permit never meets, by the inbox's capacity) refuses it as overloaded.
    fn submit(&self, request: Request) -> Result<(), RequestError> {
        self.requests.try_send(request).map_err(|e| match e {
            mpsc::TrySendError::Full(_) => RequestError::Overloaded { what: "requests" },
            mpsc::TrySendError::Disconnected(_) => RequestError::Stopped,
        })
    }

    /// The source of this node's checkpoint snapshots, for a follower that must catch up.
    pub fn snapshot_source(&self) -> Option<bulwark_store::snapshot::SnapshotSource> {
        self.snapshots.lock().expect("snapshot source lock").clone()
    }

    /// The HTTP address of member `id`, as this node knows it.
    pub fn member_http_addr(&self, id: NodeId) -> Option<cluster::HostPort> {
        self.cluster
            .read()
            .expect("cluster view lock")
            .http_addrs
            .get(&id)
            .cloned()
    }

    /// The peer address of member `id`, as this node knows it: where internal HTTP reaches it.
    pub fn member_peer_addr(&self, id: NodeId) -> Option<cluster::HostPort> {
        self.cluster
            .read()
            .expect("cluster view lock")
            .peer_addrs
            .get(&id)
            .cloned()
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

    /// A place among the `?ack=all` waiters; take it before the write.
    pub async fn ack_all_permit(&self) -> Result<AckAllPermit, RequestError> {
        Ok(AckAllPermit(
            permit(&self.ack_all_permits, "ack=all waiters").await?,
        ))
    }

    /// Waits until every in-sync replica holds log `index` (Kafka's acks=all).
    pub async fn wait_replicated(
        &self,
        index: LogIndex,
        permit: AckAllPermit,
    ) -> Result<(), RequestError> {
        let (reply, answer) = oneshot::channel();
        self.submit(Request::WaitReplicated {
            index,
            reply,
            permit: permit.0,
        })
        .map_err(|e| match e {
            // The write is committed: never answer it with a refusal.
            RequestError::Overloaded { .. } => RequestError::AckAllUnconfirmed { index },
            e => e,
        })?;
        answer.await.map_err(|_| RequestError::Stopped)?
    }

    /// Writes a checkpoint of everything this node applied so far and answers its index once
    /// durable: what [`NodeHandle::snapshot_source`] streams from then on.
    pub async fn checkpoint(&self) -> Result<LogIndex, RequestError> {
        let (reply, answer) = oneshot::channel();
        self.submit(Request::Checkpoint { reply })?;
        answer.await.map_err(|_| RequestError::Stopped)?
    }

    /// The first step of a graceful stop: from now on this node answers not ready and is not
    /// preferred in elections; if it leads, it hands leadership to a voter and keeps the writes
    /// that arrive meanwhile for the new leader. Resolves with how that ended (within
    /// `HANDOVER_LIMIT`).
    pub async fn hand_over(&self) -> Result<bulwark_consensus::handover::HandedOver, RequestError> {
        let (reply, answer) = oneshot::channel();
        self.submit(Request::HandOver { reply })?;
        answer.await.map_err(|_| RequestError::Stopped)
    }

    /// True once this node has been removed from its cluster: it must serve nothing.
    /// The API tokens as of the last change this node applied.
    pub fn access(&self) -> Arc<access::AccessView> {
        self.access.read().expect("access view lock").clone()
    }

    pub fn is_removed(&self) -> bool {
        self.cluster.read().expect("cluster view lock").removed
    }

    /// Asks the cluster to change its membership; resolves once the change is applied.
    pub async fn change_membership(
        &self,
        change: cluster::MembershipChange,
        actor: bulwark_ledger::access::Actor,
    ) -> Result<LogIndex, RequestError> {
        let (reply, answer) = oneshot::channel();
        self.submit(Request::Membership {
            change,
            actor,
            reply,
        })?;
        answer.await.map_err(|_| RequestError::Stopped)?
    }

    /// Hands a peer's Raft message to the event loop, never waiting: while the inbox holds
    /// [`INBOX_PEER_MESSAGES`] of them (or is full) the message is dropped and counted in
    /// `bulwark_peer_messages_dropped_total`. Raft tolerates lost messages; peers resend.
    pub fn deliver_peer_message(&self, message: peer_frame::PeerMessage) {
        if self.peers_queued.fetch_add(1, Ordering::AcqRel) >= INBOX_PEER_MESSAGES {
            self.peers_queued.fetch_sub(1, Ordering::AcqRel);
            self.metrics.peer_messages_dropped.inc();
            return;
        }
        if let Err(e) = self.requests.try_send(Request::Peer(message)) {
            self.peers_queued.fetch_sub(1, Ordering::AcqRel);
            if matches!(e, mpsc::TrySendError::Full(_)) {
                self.metrics.peer_messages_dropped.inc();
            }
        }
    }

    /// Follows the timestamp of the last batch this node applied: changes once a batch moves it.
    pub fn watch_leadership(&self) -> tokio::sync::watch::Receiver<Leadership> {
        self.leadership.subscribe()
    }

    pub fn watch_applied(&self) -> tokio::sync::watch::Receiver<Timestamp> {
        self.last_applied.subscribe()
    }

    /// Answers a query from the state every acknowledged write is in (linearizable).
    pub async fn read(&self, query: Query) -> Result<ReadOutcome, RequestError> {
        self.read_with(query, false).await
    }

    /// Answers a query from this node's state as it is, which may lag the leader.
    pub async fn read_stale(&self, query: Query) -> Result<ReadOutcome, RequestError> {
        self.read_with(query, true).await
    }

    async fn read_with(&self, query: Query, stale: bool) -> Result<ReadOutcome, RequestError> {
        let permit = permit(&self.read_permits, "reads").await?;
        let (reply, answer) = oneshot::channel();
        self.submit(Request::Read {
            query,
            stale,
            reply,
            permit,
        })?;
        answer.await.map_err(|_| RequestError::Stopped)?
    }
}

/// One of `permits`, waiting at most [`PERMIT_WAIT`]; then the request is refused as
/// overloaded (it never hangs).
async fn permit(
    permits: &Arc<Semaphore>,
    what: &'static str,
) -> Result<OwnedSemaphorePermit, RequestError> {
    // Most requests find a permit free: take it without arming a timer.
    if let Ok(permit) = permits.clone().try_acquire_owned() {
        return Ok(permit);
    }
    match tokio::time::timeout(PERMIT_WAIT, permits.clone().acquire_owned()).await {
        Ok(Ok(permit)) => Ok(permit),
        Ok(Err(_closed)) => Err(RequestError::Stopped),
        Err(_elapsed) => Err(RequestError::Overloaded { what }),
    }
}

/// A running node: its handle and its event-loop thread.
pub struct Node {
    pub(crate) handle: NodeHandle,
    pub(crate) thread: JoinHandle<Result<(), NodeFault>>,
}

impl Node {
    pub fn handle(&self) -> NodeHandle {
        self.handle.clone()
    }

    /// True once the event loop has ended (after a shutdown or a [`NodeFault`]).
    pub fn is_finished(&self) -> bool {
        self.thread.is_finished()
    }

    /// Finishes every request already queued, writes a checkpoint and stops; the fault that
    /// stopped the loop, if one did.
    pub fn shutdown(self) -> Result<(), NodeFault> {
        // A blocking send: the loop makes room as it takes requests.
        let _ = self.handle.requests.send(Request::Shutdown);
        self.handle.write_permits.close();
        self.handle.read_permits.close();
        self.handle.ack_all_permits.close();
        self.thread.join().unwrap_or(Err(NodeFault::Panicked))
    }
}

/// Answers an account, transfer or history query from the state store.
pub(crate) fn answer_query(store: &StateStore, query: Query) -> Result<ReadOutcome, RequestError> {
    use bulwark_ledger::LedgerStore;
    let answer = match query {
        Query::Account(id) => Answer::Account(store.account(id)),
        Query::Transfer(id) => {
            Answer::Transfer(store.transfer(id).map(|t| (t, store.pending_status(id))))
        }
        Query::AccountTransfers { account, filter } => {
            Answer::AccountTransfers(match store.account(account) {
                None => None,
                Some(_) => Some(
                    store
                        .account_history_step(account, &filter)
                        .map_err(RequestError::Store)?,
                ),
            })
        }
        Query::AccountBalances {
            account,
            after,
            limit,
        } => Answer::AccountBalances(match store.account(account) {
            None => None,
            Some(a) => Some((
                a,
                store
                    .account_balances(account, after, limit)
                    .map_err(RequestError::Store)?,
            )),
        }),
        Query::Accounts(filter) => {
            Answer::Accounts(store.query_accounts(&filter).map_err(RequestError::Store)?)
        }
        Query::Transfers(filter) => Answer::Transfers(
            store
                .query_transfers(&filter)
                .map_err(RequestError::Store)?,
        ),
        Query::Changes { after, limit } => {
            Answer::Changes(changes_with_transfers(store, after, limit)?)
        }
        Query::Tokens => Answer::Tokens(store.tokens().cloned().collect()),
        Query::Audit { after, limit } => Answer::Audit(
            store
                .audit_page(after, limit)
                .map_err(RequestError::Store)?,
        ),
        Query::Outbound { after, limit } => Answer::Outbound(store.outbound_after(after, limit)),
        Query::DeadLetters { after, limit } => Answer::DeadLetters(
            store
                .dead_letters(after, limit)
                .into_iter()
                .map(|m| {
                    let payment = store
                        .transfer(m.payment)
                        .expect("a dead payment's transfer exists");
                    (m, payment)
                })
                .collect(),
        ),
        Query::Status => unreachable!("each event loop answers status itself"),
    };
    Ok(ReadOutcome {
        answer,
        applied_index: LogIndex(store.applied_index()),
    })
}

/// The feed's events after `after`, each with its transfer (`None`: not replayed yet).
fn changes_with_transfers(
    store: &StateStore,
    after: Timestamp,
    limit: usize,
) -> Result<Option<Vec<(Change, Transfer)>>, RequestError> {
    use bulwark_ledger::LedgerStore;
    let Some(changes) = store
        .changes_after(after, limit)
        .map_err(RequestError::Store)?
    else {
        return Ok(None);
    };
    let with_transfer = |c: Change| {
        let transfer = store.transfer(c.transfer);
        (c, transfer.expect("every change names a stored transfer"))
    };
    Ok(Some(changes.into_iter().map(with_transfer).collect()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bulwark_limits::INBOX_PEER_MESSAGES;

    /// A handle whose inbox no loop serves: what it queues stays there.
    fn empty_peer_message() -> peer_frame::PeerMessage {
        peer_frame::PeerMessage {
            message: raft::eraftpb::Message::default(),
            sender_time: bulwark_ledger::Timestamp(0),
        }
    }

    fn detached() -> (NodeHandle, Inbox) {
        let view = cluster::ClusterView {
            http_addrs: Default::default(),
            peer_addrs: Default::default(),
            removed: false,
            ready: true,
            source_ip: None,
        };
        NodeHandle::new(
            bulwark_limits::MAX_INFLIGHT_WRITES,
            Arc::new(std::sync::Mutex::new(None)),
            Arc::new(std::sync::RwLock::new(view)),
            Arc::new(AtomicBool::new(false)),
            PathBuf::from("/nonexistent"),
            Arc::new(Metrics::default()),
        )
    }

    #[test]
    fn a_full_inbox_drops_peer_messages_and_counts_them() {
        let (handle, inbox) = detached();
        let extra = 10;
        for _ in 0..INBOX_PEER_MESSAGES + extra {
            handle.deliver_peer_message(empty_peer_message());
        }
        assert_eq!(handle.metrics.peer_messages_dropped.get(), extra as u64);
        assert!(handle
            .metrics
            .encode()
            .contains(&format!("bulwark_peer_messages_dropped_total {extra}")));
        let mut queued = 0;
        while let Some(request) = inbox.try_recv() {
            assert!(matches!(request, Request::Peer(_)));
            queued += 1;
        }
        assert_eq!(queued, INBOX_PEER_MESSAGES);
        // Once the loop has taken them, peer messages are admitted again.
        handle.deliver_peer_message(empty_peer_message());
        assert!(matches!(inbox.try_recv(), Some(Request::Peer(_))));
        assert_eq!(handle.metrics.peer_messages_dropped.get(), extra as u64);
    }

    fn is_overloaded<T>(
        outcome: Result<Result<T, RequestError>, tokio::time::error::Elapsed>,
    ) -> bool {
        matches!(outcome, Ok(Err(RequestError::Overloaded { .. })))
    }

    #[tokio::test]
    async fn a_request_without_a_permit_is_refused_as_overloaded_and_never_hangs() {
        let (handle, _inbox) = detached();
        let _writes = handle
            .write_permits
            .clone()
            .acquire_many_owned(MAX_INFLIGHT_WRITES as u32)
            .await
            .unwrap();
        let _reads = handle
            .read_permits
            .clone()
            .acquire_many_owned(MAX_INFLIGHT_READS as u32)
            .await
            .unwrap();
        let _waiters = handle
            .ack_all_permits
            .clone()
            .acquire_many_owned(MAX_ACK_ALL_WAITERS as u32)
            .await
            .unwrap();
        let patience = PERMIT_WAIT * 3;
        let operation = Operation::CreateAccounts(Vec::new());
        let (write, read, stale, ack_all) = tokio::join!(
            tokio::time::timeout(patience, handle.write(operation)),
            tokio::time::timeout(patience, handle.read(Query::Status)),
            tokio::time::timeout(patience, handle.read_stale(Query::Status)),
            tokio::time::timeout(patience, handle.ack_all_permit()),
        );
        assert!(is_overloaded(write), "a write waited without bound");
        assert!(is_overloaded(read), "a read waited without bound");
        assert!(is_overloaded(stale), "a stale read waited without bound");
        assert!(
            is_overloaded(ack_all),
            "an ack=all waiter waited without bound"
        );
        let word = RequestError::Overloaded { what: "reads" }.to_string();
        assert!(word.contains("overloaded"), "{word}");
    }

    /// A request that meets a stopped loop, whether before it was queued or while it waited in
    /// the inbox, is answered `Stopped`: never left hanging, never told a fault's internals.
    #[tokio::test]
    async fn a_request_to_a_stopped_loop_is_answered_stopped() {
        let (handle, inbox) = detached();
        let queued = {
            let h = handle.clone();
            tokio::spawn(async move { h.read_stale(Query::Status).await.map(drop) })
        };
        while inbox.requests.try_recv().is_err() {
            tokio::task::yield_now().await;
        }
        // The loop took the read and stopped without answering it.
        drop(inbox);
        let outcome = queued.await.unwrap();
        assert!(matches!(outcome, Err(RequestError::Stopped)), "{outcome:?}");
        let after = handle.write(Operation::CreateAccounts(Vec::new())).await;
        assert!(matches!(after, Err(RequestError::Stopped)), "{after:?}");
    }

    /// The inbox's capacity: with every peer message it admits queued, every write, read and
    /// ack=all waiter that holds a permit still gets in.
    #[tokio::test]
    async fn requests_holding_permits_find_room_in_an_inbox_flooded_by_peers() {
        let (handle, inbox) = detached();
        for _ in 0..INBOX_PEER_MESSAGES * 2 {
            handle.deliver_peer_message(empty_peer_message());
        }
        let mut tasks = Vec::new();
        for i in 0..MAX_INFLIGHT_WRITES.max(MAX_INFLIGHT_READS) {
            let h = handle.clone();
            if i < MAX_INFLIGHT_WRITES {
                let op = Operation::CreateAccounts(Vec::new());
                tasks.push(tokio::spawn(async move { h.write(op).await.map(drop) }));
            }
            let h = handle.clone();
            tasks.push(tokio::spawn(async move {
                h.read(Query::Status).await.map(drop)
            }));
            if i < MAX_ACK_ALL_WAITERS {
                let h = handle.clone();
                tasks.push(tokio::spawn(async move {
                    let permit = h.ack_all_permit().await?;
                    h.wait_replicated(LogIndex(1), permit).await
                }));
            }
        }
        let expected =
            INBOX_PEER_MESSAGES + MAX_INFLIGHT_WRITES + MAX_INFLIGHT_READS + MAX_ACK_ALL_WAITERS;
        let mut queued = 0;
        let deadline = tokio::time::Instant::now() + PERMIT_WAIT;
        let mut taken = Vec::new();
        while queued < expected && tokio::time::Instant::now() < deadline {
            tokio::task::yield_now().await;
            while let Some(request) = inbox.try_recv() {
                queued += 1;
                // Keep them, so that their permits stay taken and their callers wait.
                taken.push(request);
            }
        }
        assert_eq!(queued, expected);
        for task in &tasks {
            assert!(
                !task.is_finished(),
                "a request holding a permit was refused"
            );
        }
        assert_eq!(
            handle.metrics.peer_messages_dropped.get(),
            INBOX_PEER_MESSAGES as u64
        );
    }
}
