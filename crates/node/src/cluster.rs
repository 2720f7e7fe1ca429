//! Cluster mode: the event loop drives a Raft [`Replica`] over the durable Raft log, with the
//! peer transport for messages. Writes are proposed on the leader and answered once committed
//! on a majority and applied; reads wait for a Raft read index (linearizable).
//!
//! # A full disk
//!
//! When the node cannot persist a Raft Ready (its log or hard-state write, or a snapshot import,
//! fails with `ENOSPC`/`EDQUOT`, undone by the storage) or its state store is closed after a
//! checkpoint met a full disk, the loop does not stop: it marks the node disk-full (a shared flag
//! the API reads, `bulwark_disk_full` 1, `/health/ready` 503, a warning in the log), refuses
//! writes, linearizable reads and membership changes with [`NodeError::DiskFull`] (507
//! `disk_full`), keeps answering status and stale reads, and retries the held Ready every
//! [`DISK_FULL_RETRY`] (Raft is paused meanwhile: see `consensus::replica`). Once the retry
//! succeeds, the node catches up by itself and serves again (an info in the log).

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bulwark_consensus::replica::{Output, Replica, ReplicaConfig, ReplicaError};
use bulwark_consensus::storage::{DiskRaftStorage, RaftStorage};
use bulwark_ledger::{StateMachine, Timestamp};
use bulwark_store::StateStore;
use bulwark_transport::{NodeId, Transport};
use protobuf::Message as _;
use raft::eraftpb::{ConfState, Message};
use raft::StateRole;
use tokio::sync::{oneshot, Semaphore};

use crate::faults::crash_point;
use crate::{
    answer_query, Metrics, Node, NodeConfig, NodeError, NodeHandle, Query, ReadOutcome, Request,
    WriteOutcome,
};

/// One member of the cluster as configured at start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    pub id: u64,
    /// Where its peer transport listens.
    pub peer_addr: SocketAddr,
    /// Where its HTTP API listens (followers forward writes there).
    pub http_addr: SocketAddr,
}

#[derive(Clone, Debug)]
pub struct ClusterConfig {
    pub node_id: u64,
    pub cluster_id: u64,
    pub members: Vec<Member>,
    /// One Raft tick. Elections start after 10–20 ticks without a leader; heartbeats every 2.
    pub tick: Duration,
    /// Joining an existing cluster: `members` is only an address book, and this node waits to
    /// be added (as a learner) instead of bootstrapping a configuration of its own.
    pub join: bool,
    /// The local IP this node's connections to other members come from (the IP it listens on;
    /// `None` lets the OS pick): the snapshot fetch here, the API's forwarding client, and the
    /// peer transport (configured by whoever starts it). Whoever sits between the nodes — a
    /// firewall, or `bulwark chaos`'s proxy — can then tell which node a connection comes from.
    pub source_ip: Option<IpAddr>,
}

impl ClusterConfig {
    /// Refuses configurations a cluster cannot run safely on.
    pub fn validate(&self) -> Result<(), String> {
        let voters = self.members.len();
        if !self.join {
            check_voter_count(voters)?;
        }
        if !self.members.iter().any(|m| m.id == self.node_id) {
            return Err(format!("node id {} is not among the members", self.node_id));
        }
        let mut ids: Vec<u64> = self.members.iter().map(|m| m.id).collect();
        ids.sort_unstable();
        ids.dedup();
        if ids.len() != voters || ids.contains(&0) {
            return Err("member ids must be distinct and not 0".into());
        }
        Ok(())
    }

    pub fn member(&self, id: u64) -> Option<&Member> {
        self.members.iter().find(|m| m.id == id)
    }
}

/// A configuration must have an odd number of voters, at most 7.
pub fn check_voter_count(voters: usize) -> Result<(), String> {
    {
        if voters == 0 || voters.is_multiple_of(2) {
            return Err(format!(
                "{voters} voters: a cluster needs an odd number of voters (1, 3, 5 or 7), \
                 or a split can leave no majority"
            ));
        }
        if voters > 7 {
            return Err(format!(
                "{voters} voters: at most 7 are allowed; every write waits for a majority, \
                 so more voters only add latency"
            ));
        }
    }
    Ok(())
}

impl Member {
    /// The `ID=PEER_ADDR=HTTP_ADDR` form of the command line and the address book file.
    pub fn to_spec(&self) -> String {
        format!("{}={}={}", self.id, self.peer_addr, self.http_addr)
    }

    pub fn parse_spec(text: &str) -> Result<Member, String> {
        let parts: Vec<&str> = text.trim().split('=').collect();
        let [id, peer, http] = parts.as_slice() else {
            return Err(format!("`{text}`: expected ID=PEER_ADDR=HTTP_ADDR"));
        };
        Ok(Member {
            id: id
                .parse()
                .map_err(|_| format!("`{id}` in `{text}` is not a node id"))?,
            peer_addr: peer.parse().map_err(|_| {
                format!("`{peer}` in `{text}` is not an address like 127.0.0.1:7170")
            })?,
            http_addr: http.parse().map_err(|_| {
                format!("`{http}` in `{text}` is not an address like 127.0.0.1:7070")
            })?,
        })
    }
}

/// A change of membership asked for by an operator.
#[derive(Clone, Debug)]
pub enum MembershipChange {
    /// Add a node as a learner: it receives the log but does not vote.
    AddLearner(Member),
    /// Make learners voters (several at once go through joint consensus).
    Promote(Vec<u64>),
    /// Remove members (voters or learners).
    Remove(Vec<u64>),
}

/// The address book file: one `ID=PEER_ADDR=HTTP_ADDR` line per known member, replaced
/// crash-safely whenever membership changes, read at start in place of the `--member` flags.
const MEMBERS_FILE: &str = "members";

/// The address book of `data_dir`; `None` if it has none yet.
pub fn load_members(data_dir: &std::path::Path) -> Result<Option<Vec<Member>>, String> {
    let path = data_dir.join(MEMBERS_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("read {}: {e}", path.display())),
    };
    let mut members = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        members.push(Member::parse_spec(line).map_err(|e| format!("{}: {e}", path.display()))?);
    }
    Ok(Some(members))
}

fn save_members(data_dir: &std::path::Path, members: &[Member]) -> std::io::Result<()> {
    let text: String = members
        .iter()
        .map(|m| format!("{}\n", m.to_spec()))
        .collect();
    bulwark_fs::write_file_atomically(&data_dir.join(MEMBERS_FILE), text.as_bytes())?;
    Ok(())
}

/// What the API needs to know of the cluster, kept current by the event loop.
#[derive(Debug, Default)]
pub struct ClusterView {
    /// HTTP address of every known member, by id.
    pub http_addrs: std::collections::HashMap<u64, SocketAddr>,
    /// This node was removed from the cluster: it serves nothing any more.
    pub removed: bool,
    /// A leader (this node, or one heard from within an election timeout) is there to serve.
    pub ready: bool,
    /// [`ClusterConfig::source_ip`], for the API's client that forwards to the leader.
    pub source_ip: Option<IpAddr>,
}

/// What a proposal or read carries back to its caller.
pub(crate) enum Reply {
    Write(oneshot::Sender<Result<WriteOutcome, NodeError>>),
    Read(Query, oneshot::Sender<Result<ReadOutcome, NodeError>>),
    Membership(oneshot::Sender<Result<u64, NodeError>>),
}

type ClusterReplica = Replica<DiskRaftStorage, StateStore, Reply>;

/// Opens the Raft log and the state store, and starts the cluster event loop.
pub fn start_cluster(
    config: NodeConfig,
    cluster: ClusterConfig,
    transport: Arc<dyn Transport>,
    metrics: Arc<Metrics>,
) -> Result<Node, NodeError> {
    let mut cluster = cluster;
    cluster.validate().map_err(|reason| NodeError::Recovery {
        dir: config.data_dir.clone(),
        reason,
    })?;
    std::fs::create_dir_all(&config.data_dir).map_err(|source| NodeError::Io {
        what: "create data directory",
        path: config.data_dir.clone(),
        source,
    })?;
    let flagged: Vec<u64> = cluster.members.iter().map(|m| m.id).collect();
    merge_address_book(&config, &mut cluster)?;
    // This node's own entry may be new (a first start) or have moved (another port).
    save_members(&config.data_dir, &cluster.members).map_err(|source| NodeError::Io {
        what: "write the address book in",
        path: config.data_dir.clone(),
        source,
    })?;
    let recovery_error = |reason: String| NodeError::Recovery {
        dir: config.data_dir.clone(),
        reason,
    };
    // The Raft log before the state store: a directory whose creation was interrupted then
    // never holds a state store without a log (see `identity`).
    let raft_dir = config.raft_dir();
    let (mut storage, recovered) = DiskRaftStorage::open(&raft_dir, config.segment_bytes)
        .map_err(|e| recovery_error(format!("{}: {e}", raft_dir.display())))?;
    if let Some(torn) = &recovered.torn_tail {
        tracing::warn!(file = %torn.file.display(), offset = torn.offset, "cut a torn tail from the Raft log");
    }
    let mut store = StateStore::open(&config.state_path())?;
    crate::install::finish_interrupted(&config.data_dir, &mut storage, &store)
        .map_err(recovery_error)?;
    let initial = raft::Storage::initial_state(&storage)
        .map_err(|e| recovery_error(format!("{}: {e}", raft_dir.display())))?;
    if initial.conf_state.voters.is_empty() && !cluster.join {
        bootstrap(&cluster, &mut storage, &mut store)
            .map_err(|e| recovery_error(format!("bootstrapping {}: {e}", raft_dir.display())))?;
    } else if !cluster.join {
        check_flags_against_configuration(&cluster, &flagged, &initial.conf_state)
            .map_err(recovery_error)?;
    }
    let commit = initial.hard_state.commit;
    if store.applied_index() > commit.max(recovered.last_index) {
        return Err(recovery_error(format!(
            "the state store is at index {} but the Raft log ends at {}",
            store.applied_index(),
            recovered.last_index
        )));
    }
    let replica = start_replica(&cluster, storage, store).map_err(recovery_error)?;
    let peers: Vec<(NodeId, SocketAddr)> = cluster
        .members
        .iter()
        .filter(|m| m.id != cluster.node_id)
        .map(|m| (NodeId(m.id), m.peer_addr))
        .collect();
    transport.set_peers(&peers);
    spawn_loop(config, cluster, replica, transport, metrics)
}

/// Raft over the recovered log and state, offering the checkpoint it restarted from; a node that
/// is its configuration's only voter campaigns at once (no one else can lead, so waiting for an
/// election timeout would only delay the first write).
fn start_replica(
    cluster: &ClusterConfig,
    storage: DiskRaftStorage,
    store: StateStore,
) -> Result<ClusterReplica, String> {
    let mut replica_config = ReplicaConfig::new(cluster.node_id, boot_nonce());
    replica_config.election_tick = 10;
    replica_config.min_election_tick = 10;
    replica_config.max_election_tick = 20;
    let mut replica = Replica::new(replica_config, storage, store).map_err(|e| e.to_string())?;
    let checkpoint = replica.state().checkpointed_index();
    if checkpoint > BOOTSTRAP_INDEX {
        // Offer the checkpoint we restarted from, so that a lagging follower need not wait for
        // the next one.
        replica
            .compact(checkpoint, KEEP_ENTRIES, snapshot_data(cluster))
            .map_err(|e| format!("offering the checkpoint as a snapshot: {e}"))?;
    }
    let conf = replica.raw().raft.prs().conf().to_conf_state();
    if conf.voters == [cluster.node_id] && conf.voters_outgoing.is_empty() {
        replica
            .campaign()
            .map_err(|e| format!("a sole voter could not take the lead: {e}"))?;
    }
    Ok(replica)
}

/// The members in the address book (every membership change since the cluster began) win over
/// the flags, except this node's own addresses, which are where it listens now.
fn merge_address_book(config: &NodeConfig, cluster: &mut ClusterConfig) -> Result<(), NodeError> {
    let known = load_members(&config.data_dir).map_err(|reason| NodeError::Recovery {
        dir: config.data_dir.clone(),
        reason,
    })?;
    for m in known.into_iter().flatten() {
        match cluster.members.iter_mut().find(|x| x.id == m.id) {
            Some(_) if m.id == cluster.node_id => {}
            Some(x) => *x = m,
            None => cluster.members.push(m),
        }
    }
    Ok(())
}

/// A new cluster: every configured member is a voter from the start. The configuration is
/// installed as a snapshot at index 1 (as TiKV does), so the log starts at 2 and a node that
/// joins later always starts from a snapshot, which carries the configuration (replaying the log
/// from 1 would never tell it the initial voters).
fn bootstrap(
    cluster: &ClusterConfig,
    storage: &mut DiskRaftStorage,
    store: &mut StateStore,
) -> Result<(), String> {
    let voters: Vec<u64> = cluster.members.iter().map(|m| m.id).collect();
    let mut meta = raft::eraftpb::SnapshotMetadata {
        index: BOOTSTRAP_INDEX,
        term: 1,
        ..Default::default()
    };
    meta.set_conf_state(ConfState::from((voters, vec![])));
    storage.install_snapshot(&meta).map_err(|e| e.to_string())?;
    let encoded =
        protobuf::Message::write_to_bytes(meta.get_conf_state()).expect("a ConfState encodes");
    store
        .bootstrap_membership(encoded)
        .map_err(|e| e.to_string())?;
    tracing::info!(
        members = cluster.members.len(),
        "bootstrapped a new cluster"
    );
    Ok(())
}

/// A directory that holds a cluster of one voter (this node) started with `--member` flags that
/// name others: the flags only shape a new cluster, so the others would bootstrap a
/// configuration of their own and two histories would claim the same indexes.
fn check_flags_against_configuration(
    cluster: &ClusterConfig,
    flagged: &[u64],
    conf: &ConfState,
) -> Result<(), String> {
    let alone = conf.voters == [cluster.node_id]
        && conf.learners.is_empty()
        && conf.voters_outgoing.is_empty();
    let others: Vec<u64> = flagged
        .iter()
        .copied()
        .filter(|id| *id != cluster.node_id)
        .collect();
    if alone && !others.is_empty() {
        return Err(format!(
            "this directory holds a cluster whose only voter is node {} but the --member flags              name nodes {others:?}: flags only shape a new cluster. Start it without --member,              then grow it with `bulwark cluster add` and `bulwark cluster promote`",
            cluster.node_id
        ));
    }
    Ok(())
}

/// Starts the loop thread over a started replica.
fn spawn_loop(
    config: NodeConfig,
    cluster: ClusterConfig,
    replica: ClusterReplica,
    transport: Arc<dyn Transport>,
    metrics: Arc<Metrics>,
) -> Result<Node, NodeError> {
    let (requests, inbox) = mpsc::channel();
    let snapshots = Arc::new(std::sync::Mutex::new(Some(
        replica.state().snapshot_source(),
    )));
    let view = Arc::new(std::sync::RwLock::new(ClusterView {
        http_addrs: cluster
            .members
            .iter()
            .map(|m| (m.id, m.http_addr))
            .collect(),
        removed: false,
        ready: false,
        source_ip: cluster.source_ip,
    }));
    let disk_full = Arc::new(AtomicBool::new(false));
    let handle = NodeHandle {
        requests,
        write_permits: Arc::new(Semaphore::new(config.max_inflight_writes)),
        snapshots: snapshots.clone(),
        cluster: view.clone(),
        disk_full: disk_full.clone(),
        data_dir: config.data_dir.clone(),
        metrics: metrics.clone(),
    };
    metrics.disk_full.set(0);
    let event_loop = ClusterLoop {
        disk_full,
        full_since: None,
        retry_at: Instant::now(),
        config,
        cluster,
        replica,
        transport,
        metrics,
        snapshots,
        view,
        caught_up_at: std::collections::HashMap::new(),
        waiting_all: crate::ack_all::AckAllWaiters::default(),
        joint_replies: Vec::new(),
    };
    let thread = std::thread::Builder::new()
        .name("cluster-loop".into())
        .spawn(move || event_loop.run(inbox))
        .map_err(|source| NodeError::Io {
            what: "spawn event loop",
            path: PathBuf::new(),
            source,
        })?;
    Ok(Node { handle, thread })
}

struct ClusterLoop {
    config: NodeConfig,
    cluster: ClusterConfig,
    replica: ClusterReplica,
    transport: Arc<dyn Transport>,
    metrics: Arc<Metrics>,
    snapshots: Arc<std::sync::Mutex<Option<bulwark_store::snapshot::SnapshotSource>>>,
    view: Arc<std::sync::RwLock<ClusterView>>,
    /// Per follower, when its match index last reached the leader's last index: its lag in time.
    caught_up_at: std::collections::HashMap<u64, Instant>,
    /// Membership changes applied in a joint configuration, answered once it is left.
    joint_replies: Vec<oneshot::Sender<Result<u64, NodeError>>>,
    /// Writes with `ack=all` waiting until every in-sync member has their index.
    waiting_all: crate::ack_all::AckAllWaiters<oneshot::Sender<Result<(), NodeError>>>,
    /// Shared with the API: this node cannot persist right now (see the module documentation).
    disk_full: Arc<AtomicBool>,
    /// Since when the disk is full (for the recovery log line).
    full_since: Option<Instant>,
    /// When a held Ready is next tried to be persisted again.
    retry_at: Instant,
}

/// How often a node whose disk is full tries again to persist what it holds.
pub const DISK_FULL_RETRY: Duration = Duration::from_millis(200);

/// A follower is in sync when the leader heard from it within an election timeout and it was
/// fully caught up within this long (the Kafka ISR idea).
pub const IN_SYNC_WITHIN: Duration = Duration::from_secs(1);

/// A new cluster's configuration is a snapshot at this index; its log starts after it.
const BOOTSTRAP_INDEX: u64 = 1;

/// Raft log entries kept behind a checkpoint, so that a follower a little behind catches up
/// from the log rather than by snapshot.
const KEEP_ENTRIES: u64 = 256;

impl ClusterLoop {
    fn run(mut self, inbox: Receiver<Request>) -> Result<(), NodeError> {
        let outcome = self.serve(&inbox);
        if let Err(e) = &outcome {
            tracing::error!(error = %e, "cluster loop stopped on a fatal error");
            return outcome;
        }
        self.replica.state_mut().checkpoint_now()?;
        tracing::info!(
            applied_index = self.replica.state().applied_index(),
            "cluster loop stopped after a final checkpoint"
        );
        Ok(())
    }

    fn serve(&mut self, inbox: &Receiver<Request>) -> Result<(), NodeError> {
        let mut next_tick = Instant::now() + self.cluster.tick;
        let mut was_leader = false;
        loop {
            let wait = next_tick.saturating_duration_since(Instant::now());
            let mut shutdown = false;
            let mut next = match inbox.recv_timeout(wait) {
                Ok(request) => Some(request),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => return Ok(()),
            };
            let mut taken = 0;
            self.replica.set_now(wall_clock(), monotonic_clock());
            while let Some(request) = next {
                match request {
                    Request::Write { reply, .. } if self.is_disk_full() => {
                        let _ = reply.send(Err(self.disk_full_error()));
                    }
                    Request::Write { operation, reply } => {
                        self.metrics.batch_events.observe(operation.len() as f64);
                        self.replica.write(operation, Reply::Write(reply));
                    }
                    Request::Read {
                        query,
                        stale,
                        reply,
                    } => {
                        if matches!(query, Query::Status) {
                            let _ = reply.send(Ok(self.status()));
                        } else if stale && self.replica.state().is_unavailable() {
                            // The state store is closed until it can be reopened: what it
                            // holds on disk cannot be read meanwhile.
                            let _ = reply.send(Err(self.disk_full_error()));
                        } else if stale {
                            let _ = reply.send(answer_query(self.replica.state(), query));
                        } else if self.is_disk_full() {
                            let _ = reply.send(Err(self.disk_full_error()));
                        } else {
                            self.replica.read(Reply::Read(query, reply));
                        }
                    }
                    // While the node is paused, Raft takes no messages (the replica drops them
                    // too while it holds a Ready); peers resend.
                    Request::Peer(message) => {
                        if !self.paused() {
                            self.replica.step(message)
                        }
                    }
                    Request::Membership { reply, .. } if self.is_disk_full() => {
                        let _ = reply.send(Err(self.disk_full_error()));
                    }
                    Request::Membership { change, reply } => self.propose_membership(change, reply),
                    Request::WaitReplicated { index, reply } => self.waiting_all.push(index, reply),
                    Request::Shutdown => shutdown = true,
                }
                taken += 1;
                next = if taken < 4096 && !shutdown {
                    inbox.try_recv().ok()
                } else {
                    None
                };
            }
            if Instant::now() >= next_tick {
                // A removed node keeps its state for inspection but takes no part any more; a
                // paused one (its state store closed) does not tick Raft either.
                let removed = self.view.read().expect("cluster view lock").removed;
                if !removed && !self.replica.state().is_unavailable() {
                    self.replica.tick();
                }
                next_tick += self.cluster.tick;
                if next_tick < Instant::now() {
                    next_tick = Instant::now() + self.cluster.tick;
                }
            }
            let started = Instant::now();
            let transport = self.transport.clone();
            let cluster = &self.cluster;
            let snapshots = &self.snapshots;
            let data_dir = &self.config.data_dir;
            let mut installed: Option<Vec<Member>> = None;
            let mut install_disk_full = false;
            // A state store closed after a failed checkpoint must be reopened before anything is
            // applied; a held Ready is retried at a modest pace.
            let run_ready = !self.replica.state().is_unavailable()
                && (!self.replica.is_stalled() || Instant::now() >= self.retry_at);
            let outcome = if run_ready {
                self.replica.process_ready(
                    &mut |messages| send_all(&*transport, messages),
                    &mut |store, snapshot| {
                        crate::install::install_snapshot(cluster, data_dir, store, snapshot)
                            .map_err(|f| {
                                install_disk_full = f.disk_full;
                                f.message
                            })?;
                        *snapshots.lock().expect("snapshot source lock") =
                            Some(store.snapshot_source());
                        installed = Some(snapshot_members(&snapshot.data));
                        Ok(())
                    },
                )
            } else {
                Ok(())
            };
            match outcome {
                Ok(()) => {}
                Err(e) if self.replica.is_stalled() && (e.is_disk_full() || install_disk_full) => {
                    self.retry_at = Instant::now() + DISK_FULL_RETRY;
                    tracing::debug!(error = %e, "persisting a Raft Ready failed for lack of space; retrying");
                    if !self.is_disk_full() {
                        tracing::warn!(
                            error = %e,
                            dir = %self.config.data_dir.display(),
                            "no space left on device: refusing writes until space is freed \
                             (retrying every {} ms)",
                            DISK_FULL_RETRY.as_millis()
                        );
                    }
                }
                Err(e) => {
                    return Err(NodeError::Recovery {
                        dir: self.config.data_dir.clone(),
                        reason: format!("the Raft log failed: {e}"),
                    })
                }
            }
            self.update_disk_full();
            if let Some(members) = installed {
                // The Raft log was reset to the snapshot in the same Ready: the install is whole.
                crate::install::finished(&self.config.data_dir).map_err(|source| {
                    NodeError::Io {
                        what: "remove the snapshot install intent in",
                        path: self.config.data_dir.clone(),
                        source,
                    }
                })?;
                crash_point("install-after-intent-removed");
                tracing::info!(
                    applied_index = self.replica.state().applied_index(),
                    "caught up by installing a snapshot"
                );
                // The snapshot's sender told us every member's address as of the snapshot:
                // the membership changes it covers will not be replayed here.
                for m in members {
                    match self.cluster.members.iter_mut().find(|x| x.id == m.id) {
                        Some(x) => *x = m,
                        None => self.cluster.members.push(m),
                    }
                }
                let conf = self.replica.raw().raft.prs().conf().to_conf_state();
                self.update_members(&conf);
            }
            if run_ready {
                self.metrics
                    .fsync_seconds
                    .observe(started.elapsed().as_secs_f64());
            }
            for output in self.replica.take_outputs() {
                self.deliver(output);
            }
            for change in self.replica.take_conf_changes() {
                self.membership_applied(change);
            }
            let leader = self.replica.is_leader();
            if leader != was_leader {
                tracing::info!(
                    term = self.replica.term(),
                    role = ?self.replica.role(),
                    "role changed"
                );
                was_leader = leader;
            }
            self.housekeeping()?;
            if shutdown {
                return Ok(());
            }
        }
    }

    fn is_disk_full(&self) -> bool {
        self.disk_full.load(Ordering::Acquire)
    }

    fn disk_full_error(&self) -> NodeError {
        NodeError::DiskFull {
            dir: self.config.data_dir.clone(),
        }
    }

    /// Raft takes no input: a Ready is held (it could not be persisted) or the state store is
    /// closed until it can be reopened.
    fn paused(&self) -> bool {
        self.replica.is_stalled() || self.replica.state().is_unavailable()
    }

    /// Publishes whether the disk is full (flag, gauge, readiness, log lines on each change).
    fn update_disk_full(&mut self) {
        let full = self.paused();
        if full == self.is_disk_full() {
            return;
        }
        self.disk_full.store(full, Ordering::Release);
        self.metrics.disk_full.set(i64::from(full));
        if full {
            self.full_since = Some(Instant::now());
            if self.replica.state().is_unavailable() && !self.replica.is_stalled() {
                tracing::warn!(
                    dir = %self.config.data_dir.display(),
                    "no space left on device: the state store is closed until it can be reopened; \
                     refusing writes until space is freed"
                );
            }
        } else {
            let secs = self
                .full_since
                .take()
                .map_or(0.0, |t| t.elapsed().as_secs_f64());
            tracing::info!(
                dir = %self.config.data_dir.display(),
                full_for_secs = secs,
                "space is available again: the node persists and takes writes again"
            );
        }
        if full {
            self.view.write().expect("cluster view lock").ready = false;
        }
    }

    fn deliver(&mut self, output: Output<Reply>) {
        match output {
            Output::Written { token, written } => {
                self.metrics.events_applied.inc_by(match &written.results {
                    bulwark_ledger::BatchResults::Accounts(r) => r.len() as u64,
                    bulwark_ledger::BatchResults::Transfers(r) => r.len() as u64,
                });
                if let Reply::Write(reply) = token {
                    let _ = reply.send(Ok(WriteOutcome {
                        results: written.results,
                        commit_index: written.index,
                        timestamp: written.timestamp,
                    }));
                }
            }
            Output::WriteFailed { token, error } | Output::ReadFailed { token, error } => {
                let error = match error {
                    ReplicaError::NotLeader { leader } => NodeError::NotLeader { leader },
                    ReplicaError::Dropped => NodeError::Dropped,
                    ReplicaError::Indeterminate => NodeError::OutcomeUnknown,
                    ReplicaError::ReadTimeout => NodeError::NotLeader { leader: None },
                    ReplicaError::Stalled => self.disk_full_error(),
                    ReplicaError::Raft(reason) => NodeError::NotLeader {
                        leader: {
                            tracing::debug!(%reason, "raft refused a request");
                            self.replica.leader()
                        },
                    },
                };
                match token {
                    Reply::Write(reply) => {
                        let _ = reply.send(Err(error));
                    }
                    Reply::Read(_, reply) => {
                        let _ = reply.send(Err(error));
                    }
                    Reply::Membership(reply) => {
                        let _ = reply.send(Err(error));
                    }
                }
            }
            Output::ReadReady { token } => {
                if let Reply::Read(query, reply) = token {
                    let _ = reply.send(answer_query(self.replica.state(), query));
                }
            }
        }
    }

    /// Checks an operator's membership change against the current configuration and proposes
    /// it; the answer comes when it is applied.
    fn propose_membership(
        &mut self,
        change: MembershipChange,
        reply: oneshot::Sender<Result<u64, NodeError>>,
    ) {
        use raft::eraftpb::{ConfChangeSingle, ConfChangeTransition, ConfChangeType};
        let conf = self.replica.raw().raft.prs().conf().to_conf_state();
        let is_voter = |id: &u64| conf.voters.contains(id);
        let is_learner = |id: &u64| conf.learners.contains(id);
        let refuse = |reason: String| Err(NodeError::Membership(reason));
        type Checked = Result<(Vec<(ConfChangeType, u64)>, Vec<u8>), NodeError>;
        let checked: Checked = match &change {
            MembershipChange::AddLearner(m) if is_voter(&m.id) || is_learner(&m.id) => {
                refuse(format!("node {} is already a member", m.id))
            }
            MembershipChange::AddLearner(m) if m.id == 0 => refuse("node id 0 is reserved".into()),
            MembershipChange::AddLearner(m) => Ok((
                vec![(ConfChangeType::AddLearnerNode, m.id)],
                m.to_spec().into_bytes(),
            )),
            MembershipChange::Promote(ids) => {
                if let Some(id) = ids.iter().find(|id| !is_learner(id)) {
                    refuse(format!("node {id} is not a learner; add it as one first"))
                } else if let Err(e) = check_voter_count(conf.voters.len() + ids.len()) {
                    refuse(format!("promoting {ids:?} would leave {e}"))
                } else {
                    Ok((
                        ids.iter()
                            .map(|id| (ConfChangeType::AddNode, *id))
                            .collect(),
                        vec![],
                    ))
                }
            }
            MembershipChange::Remove(ids) => {
                let voters_left = conf.voters.iter().filter(|v| !ids.contains(v)).count();
                if let Some(id) = ids.iter().find(|id| !is_voter(id) && !is_learner(id)) {
                    refuse(format!("node {id} is not a member"))
                } else if let Err(e) = check_voter_count(voters_left) {
                    refuse(format!("removing {ids:?} would leave {e}"))
                } else {
                    Ok((
                        ids.iter()
                            .map(|id| (ConfChangeType::RemoveNode, *id))
                            .collect(),
                        vec![],
                    ))
                }
            }
        };
        let (changes, details) = match checked {
            Ok(c) => c,
            Err(e) => {
                let _ = reply.send(Err(e));
                return;
            }
        };
        let mut cc = raft::eraftpb::ConfChangeV2::default();
        cc.set_transition(ConfChangeTransition::Auto);
        for (kind, id) in changes {
            let mut single = ConfChangeSingle::default();
            single.set_change_type(kind);
            single.node_id = id;
            cc.mut_changes().push(single);
        }
        tracing::info!(?change, "proposing a membership change");
        self.replica
            .propose_conf_change(cc, details, Reply::Membership(reply));
    }

    /// A membership change is applied: update the address book (persisted), the transport's
    /// peers and the API's view; a node removed from the cluster stops serving.
    fn membership_applied(&mut self, change: bulwark_consensus::replica::AppliedConfChange<Reply>) {
        let conf = match change.conf_state {
            Ok(conf) => conf,
            Err(reason) => {
                if let Some(Reply::Membership(reply)) = change.token {
                    let _ = reply.send(Err(NodeError::Membership(reason)));
                }
                return;
            }
        };
        if let Ok(text) = std::str::from_utf8(&change.details) {
            if let Ok(m) = Member::parse_spec(text) {
                match self.cluster.members.iter_mut().find(|x| x.id == m.id) {
                    Some(x) => *x = m,
                    None => self.cluster.members.push(m),
                }
            }
        }
        let removed = self.update_members(&conf);
        tracing::info!(
            index = change.index,
            voters = ?conf.voters,
            learners = ?conf.learners,
            removed,
            "membership changed"
        );
        // A change made by joint consensus is done only once the joint configuration is left
        // (the automatic next change): only then does the new majority alone decide.
        if let Some(Reply::Membership(reply)) = change.token {
            self.joint_replies.push(reply);
        }
        if conf.voters_outgoing.is_empty() {
            for reply in self.joint_replies.drain(..) {
                let _ = reply.send(Ok(change.index));
            }
        }
        // A new member starts from a snapshot: make sure a checkpoint is there to offer.
        if self.replica.is_leader() {
            self.replica.state_mut().start_checkpoint();
        }
    }

    /// Tracks followers' lag in time, answers `ack=all` writes every in-sync member now has,
    /// publishes readiness and replication metrics.
    fn track_replication(&mut self) {
        let now = Instant::now();
        let raft = &self.replica.raw().raft;
        let leading = self.replica.is_leader();
        let last = raft.raft_log.last_index();
        let me = self.cluster.node_id;
        let mut in_sync_match: Vec<u64> = Vec::new();
        if leading {
            for (id, progress) in raft.prs().iter() {
                if *id == me {
                    continue;
                }
                if progress.matched >= last {
                    self.caught_up_at.insert(*id, now);
                }
                let lag_ms = self
                    .caught_up_at
                    .get(id)
                    .map(|t| {
                        if progress.matched >= last {
                            0
                        } else {
                            now.duration_since(*t).as_millis() as u64
                        }
                    })
                    .unwrap_or(u64::MAX);
                let in_sync = progress.recent_active && lag_ms <= IN_SYNC_WITHIN.as_millis() as u64;
                if in_sync {
                    in_sync_match.push(progress.matched);
                }
                let labels = crate::metrics::MemberLabels { member: *id };
                self.metrics
                    .member_match_index
                    .get_or_create(&labels)
                    .set(progress.matched as i64);
                self.metrics
                    .member_lag_entries
                    .get_or_create(&labels)
                    .set(last.saturating_sub(progress.matched) as i64);
                self.metrics
                    .member_in_sync
                    .get_or_create(&labels)
                    .set(i64::from(in_sync));
            }
        }
        // ack=all: every in-sync follower (and this leader) holds the write's index.
        let floor = in_sync_match.iter().copied().min().unwrap_or(u64::MAX);
        for (reply, result) in self.waiting_all.settle(leading, floor) {
            let _ = reply.send(result);
        }
        let heard_recently = raft.election_elapsed < raft.election_timeout();
        let ready = leading || (self.replica.leader().is_some() && heard_recently);
        let full = self.is_disk_full();
        let mut view = self.view.write().expect("cluster view lock");
        view.ready = ready && !view.removed && !full;
    }

    /// Keeps the address book, the transport's peers and the API's view to the members of
    /// `conf`; returns whether this node is no longer among them.
    fn update_members(&mut self, conf: &ConfState) -> bool {
        let in_config: std::collections::BTreeSet<u64> = conf
            .voters
            .iter()
            .chain(&conf.learners)
            .chain(&conf.voters_outgoing)
            .chain(&conf.learners_next)
            .copied()
            .collect();
        self.cluster.members.retain(|m| in_config.contains(&m.id));
        if let Err(e) = save_members(&self.config.data_dir, &self.cluster.members) {
            tracing::error!(error = %e, "cannot save the member address book");
        }
        let peers: Vec<(NodeId, SocketAddr)> = self
            .cluster
            .members
            .iter()
            .filter(|m| m.id != self.cluster.node_id)
            .map(|m| (NodeId(m.id), m.peer_addr))
            .collect();
        self.transport.set_peers(&peers);
        let removed = !in_config.contains(&self.cluster.node_id);
        {
            let mut view = self.view.write().expect("cluster view lock");
            view.http_addrs = self
                .cluster
                .members
                .iter()
                .map(|m| (m.id, m.http_addr))
                .collect();
            view.removed = removed;
        }
        removed
    }

    fn housekeeping(&mut self) -> Result<(), NodeError> {
        self.track_replication();
        let store = self.replica.state_mut();
        if let Some(done) = store.poll_checkpoint()? {
            // The checkpoint is durable: offer it to lagging followers and drop the log behind.
            let data = snapshot_data(&self.cluster);
            self.replica
                .compact(done.applied_index, KEEP_ENTRIES, data)
                .map_err(|e| NodeError::Recovery {
                    dir: self.config.data_dir.clone(),
                    reason: format!("compacting the Raft log failed: {e}"),
                })?;
            self.metrics
                .checkpoint_seconds
                .observe(done.duration.as_secs_f64());
        }
        // Checkpoint when the memtable is full, or when the Raft log has grown well past what is
        // kept behind a checkpoint (account batches, small batches).
        let log = &self.replica.raw().raft.raft_log;
        let log_entries = log.last_index().saturating_sub(log.first_index());
        let stalled = self.replica.is_stalled();
        let store = self.replica.state_mut();
        // Not while a Ready is held: it may be a snapshot about to replace this store.
        if !stalled
            && (store.memtable_transfers() >= self.config.checkpoint_transfers
                || (log_entries > 4 * KEEP_ENTRIES
                    && store.applied_index() > store.checkpointed_index()))
        {
            store.start_checkpoint();
        }
        self.metrics
            .applied_index
            .set(self.replica.state().applied_index() as i64);
        self.metrics
            .accounts
            .set(self.replica.state().account_count() as i64);
        Ok(())
    }

    fn status(&self) -> ReadOutcome {
        let raft = &self.replica.raw().raft;
        let store = self.replica.state();
        let leader = self.replica.leader();
        let conf = raft.prs().conf().to_conf_state();
        let members = self
            .cluster
            .members
            .iter()
            .filter(|m| conf.voters.contains(&m.id) || conf.learners.contains(&m.id))
            .map(|m| {
                let progress = raft.prs().get(m.id);
                let match_index = if m.id == self.cluster.node_id {
                    raft.raft_log.last_index()
                } else {
                    progress.map(|p| p.matched).unwrap_or(0)
                };
                let lag = raft.raft_log.last_index().saturating_sub(match_index);
                let lag_ms = if m.id == self.cluster.node_id || lag == 0 {
                    Some(0)
                } else {
                    self.caught_up_at
                        .get(&m.id)
                        .map(|t| t.elapsed().as_millis() as u64)
                };
                crate::MemberStatus {
                    lag_ms: self.replica.is_leader().then_some(lag_ms).flatten(),
                    id: m.id,
                    learner: conf.learners.contains(&m.id),
                    http_addr: m.http_addr,
                    match_index: self.replica.is_leader().then_some(match_index),
                    lag: self.replica.is_leader().then_some(lag),
                    recent_active: self.replica.is_leader().then(|| {
                        m.id == self.cluster.node_id
                            || progress.map(|p| p.recent_active).unwrap_or(false)
                    }),
                }
            })
            .collect();
        ReadOutcome {
            answer: crate::Answer::Status(crate::NodeStatus {
                applied_index: store.applied_index(),
                checkpointed_index: store.checkpointed_index(),
                last_timestamp: store.last_timestamp(),
                accounts: store.account_count(),
                log_first_index: raft.raft_log.first_index(),
                log_last_index: raft.raft_log.last_index(),
                log_bytes: 0,
                log_segments: 0,
                cluster: Some(crate::ClusterStatus {
                    node_id: self.cluster.node_id,
                    role: role_name(self.replica.role()),
                    term: self.replica.term(),
                    leader,
                    commit_index: self.replica.commit_index(),
                    members,
                }),
            }),
            applied_index: store.applied_index(),
        }
    }
}

/// What a snapshot offer carries besides Raft's metadata: the id of the node to fetch the state
/// from, then the address book (`ID=PEER_ADDR=HTTP_ADDR` lines), so that a node catching up by
/// snapshot learns the members whose addition the snapshot covers.
fn snapshot_data(cluster: &ClusterConfig) -> Vec<u8> {
    let mut data = cluster.node_id.to_le_bytes().to_vec();
    for m in &cluster.members {
        data.extend_from_slice(m.to_spec().as_bytes());
        data.push(b'\n');
    }
    data
}

fn snapshot_members(data: &[u8]) -> Vec<Member> {
    let text = std::str::from_utf8(data.get(8..).unwrap_or_default()).unwrap_or_default();
    text.lines()
        .filter_map(|line| Member::parse_spec(line).ok())
        .collect()
}

fn send_all(transport: &dyn Transport, messages: Vec<Message>) {
    for message in messages {
        match message.write_to_bytes() {
            Ok(bytes) => transport.send(NodeId(message.to), bytes),
            Err(e) => tracing::error!(error = %e, "cannot encode a Raft message"),
        }
    }
}

/// Decodes a peer's frame into a Raft message; frames that do not decode are dropped (the
/// transport already checked their checksum, so this is a peer of another version).
pub fn decode_peer_message(from: u64, payload: &[u8]) -> Option<Message> {
    match Message::parse_from_bytes(payload) {
        Ok(message) if message.from == from => Some(message),
        Ok(message) => {
            tracing::warn!(
                from,
                claimed = message.from,
                "dropped a Raft message whose sender does not match its connection"
            );
            None
        }
        Err(e) => {
            tracing::warn!(from, error = %e, "dropped a peer frame that is not a Raft message");
            None
        }
    }
}

fn role_name(role: StateRole) -> &'static str {
    match role {
        StateRole::Leader => "leader",
        StateRole::Follower => "follower",
        StateRole::Candidate => "candidate",
        StateRole::PreCandidate => "pre_candidate",
    }
}

/// Time since this process first asked: the replica's monotonic clock (see
/// `bulwark_consensus::clock`).
fn monotonic_clock() -> Duration {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    START.get_or_init(Instant::now).elapsed()
}

/// A number no other start of this node is likely to draw: it tells this boot's ReadIndex
/// answers from an earlier one's. The standard library's hasher keys are random per process.
fn boot_nonce() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(wall_clock().0.into());
    hasher.write_u32(std::process::id());
    hasher.finish()
}

fn wall_clock() -> Timestamp {
    Timestamp(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0),
    )
}
