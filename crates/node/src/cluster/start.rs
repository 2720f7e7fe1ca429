//! Starting a node: the Raft log and the state store opened and checked, a new directory
//! bootstrapped, the replica started, the loop thread spawned.

use bulwark_transport::HostPort;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;

use bulwark_consensus::recovery::{align_log_with_state, Alignment};
use bulwark_consensus::replica::{Replica, ReplicaConfig};
use bulwark_consensus::storage::{DiskRaftStorage, RaftStorage};
use bulwark_consensus::LogIndex;
use bulwark_limits::KEEP_ENTRIES;
use bulwark_store::StateStore;
use bulwark_transport::{NodeId, Transport};
use raft::eraftpb::ConfState;

use super::config::{load_members, save_members, snapshot_data, AddressBookError};
use super::event_loop::wall_clock;
use super::{
    ClusterConfig, ClusterLoop, ClusterReplica, ClusterView, Recovering, Stall, BOOTSTRAP_INDEX,
};
use crate::{Metrics, Node, NodeConfig, NodeHandle, RecoveryError, Refusal, StartError};

/// Opens the Raft log and the state store, and starts the cluster event loop.
pub fn start_cluster(
    config: NodeConfig,
    cluster: ClusterConfig,
    transport: Arc<dyn Transport>,
    metrics: Arc<Metrics>,
) -> Result<Node, StartError> {
    let started = Instant::now();
    let mut cluster = cluster;
    let recovery = |source: RecoveryError| StartError::Recovery {
        dir: config.data_dir.clone(),
        source: Box::new(source),
    };
    cluster
        .validate()
        .map_err(|e| recovery(Refusal::Config(e).into()))?;
    bulwark_fs::create_dir_all_durably(&config.data_dir).map_err(|e| StartError::Io {
        what: "create data directory",
        path: config.data_dir.clone(),
        source: e.into(),
    })?;
    let flagged: Vec<u64> = cluster.members.iter().map(|m| m.id).collect();
    merge_address_book(&config, &mut cluster).map_err(|e| recovery(e.into()))?;
    // The Raft log before the state store: a directory whose creation was interrupted then
    // never holds a state store without a log (see `identity`).
    let raft_dir = config.raft_dir();
    let (mut storage, recovered) =
        DiskRaftStorage::open(&raft_dir, config.segment_bytes).map_err(|source| {
            recovery(RecoveryError::OpenLog {
                raft_dir: raft_dir.clone(),
                source,
            })
        })?;
    if let Some(torn) = &recovered.torn_tail {
        tracing::warn!(file = %torn.file.display(), offset = torn.offset, "cut a torn tail from the Raft log");
    }
    let initial = raft::Storage::initial_state(&storage).map_err(|source| {
        recovery(RecoveryError::ReadLog {
            raft_dir: raft_dir.clone(),
            source,
        })
    })?;
    if !initial.conf_state.voters.is_empty() && !cluster.join {
        // Before the state store is opened (opening commits to it): a refusal changes nothing.
        check_flags_against_configuration(&cluster, &flagged, &initial.conf_state)
            .map_err(|e| recovery(e.into()))?;
    }
    let mut store = StateStore::open(&config.state_path())?;
    store.set_checkpoint_transfers(config.checkpoint_transfers);
    crate::install::finish_interrupted(&config.data_dir, &mut storage, &store)
        .map_err(|e| recovery(e.into()))?;
    crate::download::remove_leftovers(&config.state_path());
    if initial.conf_state.voters.is_empty() && !cluster.join {
        bootstrap(&cluster, &raft_dir, &mut storage, &mut store).map_err(recovery)?;
    }
    check_state_against_log(&config, &mut storage, &store).map_err(recovery)?;
    // Only once every check passed: a refused start changes nothing. This node's own entry may
    // be new (a first start) or have moved (another port).
    save_members(&config.data_dir, &cluster.members).map_err(|source| StartError::Io {
        what: "write the address book in",
        path: config.data_dir.clone(),
        source,
    })?;
    // Before the replica campaigns (and appends its new term's entry).
    let log_last_index = raft::Storage::last_index(&storage).unwrap_or(0);
    let replica = start_replica(&cluster, storage, store).map_err(recovery)?;
    let peers: Vec<(NodeId, HostPort)> = cluster
        .members
        .iter()
        .filter(|m| m.id != cluster.node_id)
        .map(|m| (NodeId(m.id), m.peer_addr.clone()))
        .collect();
    transport.set_peers(&peers);
    let recovering = Recovering {
        checkpoint: LogIndex(replica.state().checkpointed_index()),
        log_last_index: LogIndex(log_last_index),
        started,
    };
    spawn_loop(config, cluster, replica, transport, metrics, recovering)
}

/// The log is compacted only behind a durable checkpoint (or reset to an installed snapshot,
/// after the state was swapped): a state store behind the compaction point lost its data and is
/// refused. One ahead of the log (a crash right after installing a newer checkpoint) moves the
/// log to it.
fn check_state_against_log(
    config: &NodeConfig,
    storage: &mut DiskRaftStorage,
    store: &StateStore,
) -> Result<(), RecoveryError> {
    let compacted = raft::Storage::first_index(storage).unwrap_or(1) - 1;
    if compacted > BOOTSTRAP_INDEX && store.applied_index() < compacted {
        return Err(Refusal::StateBehindLog {
            state: config.state_path(),
            applied: store.applied_index(),
            compacted,
        }
        .into());
    }
    match align_log_with_state(storage, store)? {
        Alignment::Within => {}
        Alignment::LogMovedTo { index, term } => tracing::warn!(
            index = index.0,
            term = term.0,
            "the state store was ahead of the Raft log (a crash right after installing a newer \
             checkpoint): the log now starts after it"
        ),
    }
    Ok(())
}

/// Raft over the recovered log and state, offering the checkpoint it restarted from; a node that
/// is its configuration's only voter campaigns at once (no one else can lead, so waiting for an
/// election timeout would only delay the first write).
fn start_replica(
    cluster: &ClusterConfig,
    storage: DiskRaftStorage,
    store: StateStore,
) -> Result<ClusterReplica, RecoveryError> {
    // Election and read timeouts: the defaults, from `bulwark-limits`.
    let replica_config = ReplicaConfig::new(NodeId(cluster.node_id), boot_nonce());
    let mut replica =
        Replica::new(replica_config, storage, store).map_err(RecoveryError::Replica)?;
    let checkpoint = replica.state().checkpointed_index();
    if checkpoint > BOOTSTRAP_INDEX {
        // Offer the checkpoint we restarted from, so that a lagging follower need not wait for
        // the next one.
        replica
            .compact(LogIndex(checkpoint), KEEP_ENTRIES, snapshot_data(cluster))
            .map_err(RecoveryError::OfferCheckpoint)?;
    }
    let conf = replica.raw().raft.prs().conf().to_conf_state();
    if conf.voters == [cluster.node_id] && conf.voters_outgoing.is_empty() {
        replica.campaign().map_err(RecoveryError::Campaign)?;
    }
    Ok(replica)
}

/// The members in the address book (every membership change since the cluster began) win over
/// the flags, except this node's own addresses, which are where it listens now.
fn merge_address_book(
    config: &NodeConfig,
    cluster: &mut ClusterConfig,
) -> Result<(), AddressBookError> {
    let known = load_members(&config.data_dir)?;
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
    raft_dir: &Path,
    storage: &mut DiskRaftStorage,
    store: &mut StateStore,
) -> Result<(), RecoveryError> {
    let voters: Vec<u64> = cluster.members.iter().map(|m| m.id).collect();
    let mut meta = raft::eraftpb::SnapshotMetadata {
        index: BOOTSTRAP_INDEX,
        term: 1,
        ..Default::default()
    };
    meta.set_conf_state(ConfState::from((voters, vec![])));
    storage
        .install_snapshot(&meta)
        .map_err(|source| RecoveryError::BootstrapLog {
            raft_dir: raft_dir.to_path_buf(),
            source,
        })?;
    let encoded =
        protobuf::Message::write_to_bytes(meta.get_conf_state()).expect("a ConfState encodes");
    store
        .bootstrap_membership(encoded)
        .map_err(|source| RecoveryError::BootstrapState {
            raft_dir: raft_dir.to_path_buf(),
            source,
        })?;
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
) -> Result<(), Refusal> {
    let alone = conf.voters == [cluster.node_id]
        && conf.learners.is_empty()
        && conf.voters_outgoing.is_empty();
    let others: Vec<u64> = flagged
        .iter()
        .copied()
        .filter(|id| *id != cluster.node_id)
        .collect();
    if alone && !others.is_empty() {
        return Err(Refusal::FlagsNameOthers {
            node_id: cluster.node_id,
            others,
        });
    }
    Ok(())
}

/// Starts the loop thread over a started replica.
fn spawn_loop(
    config: NodeConfig,
    cluster: ClusterConfig,
    mut replica: ClusterReplica,
    transport: Arc<dyn Transport>,
    metrics: Arc<Metrics>,
    recovering: Recovering,
) -> Result<Node, StartError> {
    // Each log sync is timed for the slow-disk verdict (`consensus::slow_disk`).
    replica.time_log_syncs(super::event_loop::monotonic_clock);
    let snapshots = Arc::new(std::sync::Mutex::new(Some(
        replica.state().snapshot_source(),
    )));
    let view = Arc::new(std::sync::RwLock::new(initial_view(&cluster)));
    let archive = match &config.archive {
        None => None,
        Some(spec) => Some(start_archiver(spec, cluster.cluster_id)?),
    };
    let disk_full = Arc::new(AtomicBool::new(false));
    let (handle, inbox) = NodeHandle::new(
        config.max_inflight_writes,
        snapshots.clone(),
        view.clone(),
        disk_full.clone(),
        config.data_dir.clone(),
        metrics.clone(),
    );
    metrics.disk_full.set(0);
    let tick = cluster.tick;
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
        access: handle.access.clone(),
        last_applied: handle.last_applied.clone(),
        leadership: handle.leadership.clone(),
        replication: bulwark_consensus::replication::ReplicationTracker::with_tick(tick),
        waiting_all: Default::default(),
        joint_replies: Default::default(),
        stall: Stall::None,
        installed: None,
        round_writes: 0,
        held_since: None,
        log_bytes_after_compaction: 0,
        next_tick: Instant::now() + tick,
        was_leader: false,
        known_leader: None,
        recovering: Some(recovering),
        downloader: crate::download::Downloader::default(),
        slow_disk: Default::default(),
        stopping: None,
        archive,
        checkpoint_waiters: Vec::new(),
    };
    let thread = std::thread::Builder::new()
        .name("cluster-loop".into())
        .spawn(move || event_loop.run(inbox))
        .map_err(|source| StartError::Io {
            what: "spawn event loop",
            path: PathBuf::new(),
            source,
        })?;
    Ok(Node { handle, thread })
}

/// The cluster as its configuration names it, before the loop has seen anything.
fn initial_view(cluster: &ClusterConfig) -> ClusterView {
    ClusterView {
        http_addrs: cluster
            .members
            .iter()
            .map(|m| (NodeId(m.id), m.http_addr.clone()))
            .collect(),
        peer_addrs: cluster
            .members
            .iter()
            .map(|m| (NodeId(m.id), m.peer_addr.clone()))
            .collect(),
        removed: false,
        ready: false,
        source_ip: cluster.source_ip,
    }
}

/// The archiver of `--archive`, on the target it names.
fn start_archiver(spec: &str, cluster_id: u64) -> Result<super::archive::ArchiveFeed, StartError> {
    let io = |what, source| StartError::Io {
        what,
        path: PathBuf::from(spec),
        source,
    };
    let target = bulwark_backup::open_target(spec)
        .map_err(|e| io("open the archive", std::io::Error::other(e.to_string())))?;
    let archiver = bulwark_backup::archiver::Archiver::start(target, cluster_id)
        .map_err(|e| io("start the archiver for", e))?;
    tracing::info!(target = spec, cluster_id, "archiving committed entries");
    Ok(super::archive::ArchiveFeed::new(archiver))
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
