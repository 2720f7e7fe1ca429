//! The node loop, for every node (a single node is a cluster of one voter): it drives a Raft
//! [`Replica`] over the durable Raft log, with the peer transport for messages. Writes are
//! proposed on the leader and answered once committed on a majority and applied; reads wait for
//! a Raft read index (linearizable). `start` opens and checks the directory, `event_loop` runs
//! the rounds, `membership`, `replication`, `slow_disk` and `status` own their concerns, `config` the
//! members and the address book.
//!
//! # A snapshot install
//!
//! A follower holds the Ready that carries a snapshot while the checkpoint downloads on a worker
//! (`crate::download`), answering status and stale reads and forwarding writes meanwhile; it is
//! not ready until the install is whole (`crate::install` makes every step crash-safe).
//!
//! # A full disk
//!
//! When the node cannot persist a Raft Ready (its log or hard-state write, or a snapshot import,
//! fails with `ENOSPC`/`EDQUOT`, undone by the storage) or its state store is closed after a
//! checkpoint met a full disk, the loop does not stop: it marks the node disk-full (a shared flag
//! the API reads, `bulwark_disk_full` 1, `/health/ready` 503, a warning in the log), refuses
//! writes, linearizable reads and membership changes with [`RequestError::DiskFull`] (507
//! `disk_full`), keeps answering status and stale reads, and retries the held Ready every
//! [`bulwark_limits::DISK_FULL_RETRY`] (Raft is paused meanwhile: see `consensus::replica`). Once the retry
//! succeeds, the node catches up by itself and serves again (an info in the log).

mod archive;
mod cadence;
mod checkpoints;
mod config;
mod event_loop;
mod handover;
mod membership;
mod replication;
mod slow_disk;
mod start;
mod status;

use std::net::IpAddr;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;

use bulwark_consensus::membership::JointReplies;
use bulwark_consensus::replica::Replica;
use bulwark_consensus::storage::DiskRaftStorage;
use bulwark_consensus::{LogIndex, NodeId};
use bulwark_store::StateStore;
use bulwark_transport::Transport;
use tokio::sync::oneshot;

use crate::{Metrics, NodeConfig, Query, ReadOutcome, RequestError, WriteOutcome};

pub use crate::peer_frame::decode as decode_peer_message;
pub use config::{
    check_voter_count, load_members, AddressBookError, ClusterConfig, ConfigError, HostPort,
    Member, MemberSpecError, MembershipChange, VoterCountError,
};
pub use start::start_cluster;

/// What the API needs to know of the cluster, kept current by the event loop.
#[derive(Debug, Default)]
pub struct ClusterView {
    /// HTTP address of every known member, by id.
    pub http_addrs: std::collections::HashMap<NodeId, HostPort>,
    /// Peer address of every known member, by id: where internal HTTP (forwarded writes) goes.
    pub peer_addrs: std::collections::HashMap<NodeId, HostPort>,
    /// This node was removed from the cluster: it serves nothing any more.
    pub removed: bool,
    /// A leader (this node, or one heard from within an election timeout) is there to serve.
    pub ready: bool,
    /// [`ClusterConfig::source_ip`], for the API's client that forwards to the leader.
    pub source_ip: Option<IpAddr>,
}

/// What a proposal or read carries back to its caller.
/// A write's and a read's permit travel with their reply and are released when it is answered.
pub(crate) enum Reply {
    Write(oneshot::Sender<Result<WriteOutcome, RequestError>>, Permit),
    Read(
        Query,
        oneshot::Sender<Result<ReadOutcome, RequestError>>,
        Permit,
    ),
    Membership(oneshot::Sender<Result<LogIndex, RequestError>>),
}

type Permit = tokio::sync::OwnedSemaphorePermit;

type ClusterReplica = Replica<DiskRaftStorage, StateStore, Reply>;

struct ClusterLoop {
    config: NodeConfig,
    cluster: ClusterConfig,
    replica: ClusterReplica,
    transport: Arc<dyn Transport>,
    metrics: Arc<Metrics>,
    snapshots: Arc<std::sync::Mutex<Option<bulwark_store::snapshot::SnapshotSource>>>,
    view: Arc<std::sync::RwLock<ClusterView>>,
    /// The API's copy of the tokens, republished whenever the state's change.
    access: crate::access::SharedAccess,
    /// Where the last applied batch's timestamp is published (see `NodeHandle::watch_applied`).
    last_applied: Arc<tokio::sync::watch::Sender<bulwark_ledger::Timestamp>>,
    /// Where this node's leadership is published (see `NodeHandle::watch_leadership`).
    leadership: Arc<tokio::sync::watch::Sender<crate::Leadership>>,
    /// Per follower, when its match index last reached the leader's last index: its lag in time
    /// and whether it is in sync.
    replication: bulwark_consensus::replication::ReplicationTracker,
    /// Membership changes applied in a joint configuration, answered once it is left.
    joint_replies: JointReplies<oneshot::Sender<Result<LogIndex, RequestError>>>,
    /// Writes with `ack=all` waiting until every in-sync member has their index.
    /// `ack=all` waiters, each holding its permit until it is settled.
    waiting_all: bulwark_consensus::replication::AckAllWaiters<(
        oneshot::Sender<Result<(), RequestError>>,
        Permit,
    )>,
    /// Shared with the API: this node cannot persist right now (see the module documentation).
    disk_full: Arc<AtomicBool>,
    /// Since when the disk is full (for the recovery log line).
    full_since: Option<Instant>,
    /// When a held Ready is next tried to be persisted again.
    retry_at: Instant,
    /// Why a Ready is held, if one is.
    stall: Stall,
    /// The members an installed snapshot told of, until its Ready is persisted whole.
    installed: Option<Vec<Member>>,
    /// Client writes taken since the last Ready round: proposed together, made durable by one
    /// log sync (the `group_commit_requests` metric).
    round_writes: u32,
    /// Since when this leader holds new writes for a checkpoint (`StateMachine::is_backlogged`).
    held_since: Option<Instant>,
    /// The Raft log's bytes after its last compaction: what a checkpoint cannot drop (entries
    /// kept for followers and the archive), which the checkpoint rule does not count.
    log_bytes_after_compaction: u64,
    /// When Raft is next ticked.
    next_tick: Instant,
    was_leader: bool,
    /// The leader this node last knew, for the log line and the counter of leader changes.
    known_leader: Option<NodeId>,
    /// Until everything the log held at start is applied again (then logged as "recovered").
    recovering: Option<Recovering>,
    /// The snapshot download running on its worker thread, if any.
    downloader: crate::download::Downloader,
    /// This node's own log syncs and what they decide: whether its disk is slow, and whether, as
    /// leader, it hands leadership over (`slow_disk`).
    slow_disk: bulwark_consensus::slow_disk::SlowDisk,
    /// Checkpoints asked for (a backup), each answered once one covers the index it waits for.
    checkpoint_waiters: Vec<(LogIndex, oneshot::Sender<Result<LogIndex, RequestError>>)>,
    /// With `--archive`: the archiver and how far this node offered it entries.
    archive: Option<archive::ArchiveFeed>,
    /// Once asked to stop gracefully: the leadership handover (see `handover`).
    stopping: Option<handover::Stopping>,
}

/// Why the replica holds a Ready (see `consensus::replica`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stall {
    None,
    /// The disk is full: the node refuses writes until the Ready is persisted.
    DiskFull,
    /// A snapshot could not be fetched or installed: it is tried again, from any member.
    Installing,
}

#[derive(Clone, Copy, Debug)]
struct Recovering {
    checkpoint: LogIndex,
    log_last_index: LogIndex,
    started: Instant,
}

/// A new cluster's configuration is a snapshot at this index; its log starts after it.
const BOOTSTRAP_INDEX: u64 = 1;
