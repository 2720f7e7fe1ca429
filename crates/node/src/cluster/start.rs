//! Starting a node: the Raft log and the state store opened and checked, a new directory
//! bootstrapped, the replica started, the loop thread spawned.

use std::net::SocketAddr;
use std::path::PathBuf;
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

use super::config::{load_members, save_members, snapshot_data};
use super::event_loop::wall_clock;
use super::{
    ClusterConfig, ClusterLoop, ClusterReplica, ClusterView, Recovering, Stall, BOOTSTRAP_INDEX,
};
use crate::{Metrics, Node, NodeConfig, NodeError, NodeHandle};

/// Opens the Raft log and the state store, and starts the cluster event loop.
pub fn start_cluster(
    config: NodeConfig,
    cluster: ClusterConfig,
    transport: Arc<dyn Transport>,
    metrics: Arc<Metrics>,
) -> Result<Node, NodeError> {
    let started = Instant::now();
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
    let initial = raft::Storage::initial_state(&storage)
        .map_err(|e| recovery_error(format!("{}: {e}", raft_dir.display())))?;
    if !initial.conf_state.voters.is_empty() && !cluster.join {
        // Before the state store is opened (opening commits to it): a refusal changes nothing.
        check_flags_against_configuration(&cluster, &flagged, &initial.conf_state)
            .map_err(recovery_error)?;
    }
    let mut store = StateStore::open(&config.state_path())?;
    crate::install::finish_interrupted(&config.data_dir, &mut storage, &store)
        .map_err(recovery_error)?;
    crate::download::remove_leftovers(&config.state_path());
    if initial.conf_state.voters.is_empty() && !cluster.join {
        bootstrap(&cluster, &mut storage, &mut store)
            .map_err(|e| recovery_error(format!("bootstrapping {}: {e}", raft_dir.display())))?;
    }
    check_state_against_log(&config, &mut storage, &store).map_err(recovery_error)?;
    // Only once every check passed: a refused start changes nothing. This node's own entry may
    // be new (a first start) or have moved (another port).
    save_members(&config.data_dir, &cluster.members).map_err(|source| NodeError::Io {
        what: "write the address book in",
        path: config.data_dir.clone(),
        source,
    })?;
    // Before the replica campaigns (and appends its new term's entry).
    let log_last_index = raft::Storage::last_index(&storage).unwrap_or(0);
    let replica = start_replica(&cluster, storage, store).map_err(recovery_error)?;
    let peers: Vec<(NodeId, SocketAddr)> = cluster
        .members
        .iter()
        .filter(|m| m.id != cluster.node_id)
        .map(|m| (NodeId(m.id), m.peer_addr))
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
) -> Result<(), String> {
    let compacted = raft::Storage::first_index(storage).unwrap_or(1) - 1;
    if compacted > BOOTSTRAP_INDEX && store.applied_index() < compacted {
        return Err(format!(
            "the Raft log starts after index {compacted} but the state store ({}) holds only up \
             to {}: entries {}..={compacted} are missing (was state.redb deleted or replaced?)",
            config.state_path().display(),
            store.applied_index(),
            store.applied_index() + 1
        ));
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
) -> Result<ClusterReplica, String> {
    // Election and read timeouts: the defaults, from `bulwark-limits`.
    let replica_config = ReplicaConfig::new(NodeId(cluster.node_id), boot_nonce());
    let mut replica = Replica::new(replica_config, storage, store).map_err(|e| e.to_string())?;
    let checkpoint = replica.state().checkpointed_index();
    if checkpoint > BOOTSTRAP_INDEX {
        // Offer the checkpoint we restarted from, so that a lagging follower need not wait for
        // the next one.
        replica
            .compact(LogIndex(checkpoint), KEEP_ENTRIES, snapshot_data(cluster))
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
            "this directory holds a cluster whose only voter is node {} but the --member flags \
             name nodes {others:?}: flags only shape a new cluster. Start it without --member, \
             then grow it with `bulwark cluster add` and `bulwark cluster promote`",
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
    recovering: Recovering,
) -> Result<Node, NodeError> {
    let snapshots = Arc::new(std::sync::Mutex::new(Some(
        replica.state().snapshot_source(),
    )));
    let view = Arc::new(std::sync::RwLock::new(ClusterView {
        http_addrs: cluster
            .members
            .iter()
            .map(|m| (NodeId(m.id), m.http_addr))
            .collect(),
        removed: false,
        ready: false,
        source_ip: cluster.source_ip,
    }));
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
        replication: Default::default(),
        waiting_all: crate::ack_all::AckAllWaiters::default(),
        joint_replies: Vec::new(),
        stall: Stall::None,
        installed: None,
        next_tick: Instant::now() + tick,
        was_leader: false,
        recovering: Some(recovering),
        downloader: crate::download::Downloader::default(),
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

/// A number no other start of this node is likely to draw: it tells this boot's ReadIndex
/// answers from an earlier one's. The standard library's hasher keys are random per process.
fn boot_nonce() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(wall_clock().0.into());
    hasher.write_u32(std::process::id());
    hasher.finish()
}
