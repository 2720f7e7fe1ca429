//! A deterministic simulation of a whole cluster in one thread: replicas on in-memory storage,
//! a seeded network that drops, delays, duplicates and reorders messages and can be split, and
//! crashes that lose everything not synced. Each node has its own wall clock (skewed, and
//! jumping now and then) and monotonic clock, and draws its election timeout and ReadIndex boot
//! nonce from the seed at every start. After every step it checks the properties Raft and the
//! ledger promise; the first violation stops the run with the seed that replays it.
//!
//! Nothing here reads a clock or a thread-local random source: one seed, one run.

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, BTreeSet};
use std::hash::{Hash, Hasher};
use std::time::Duration;

use crate::replication::ReplicationTracker;

use bulwark_ledger::{
    AccountFlags, AccountId, Batch, BatchResults, MemoryStateMachine, NewAccount, NewTransfer,
    Operation, PendingStatus, StateMachine, Timestamp, TransferFlags, TransferId,
};
use raft::eraftpb::{ConfState, Message, SnapshotMetadata};
use raft::StateRole;

use crate::replica::{Output, Replica, ReplicaConfig, ReplicaError};
use crate::storage::{CrashPoint, MemRaftStorage, RaftStorage, StorageDefect};
use crate::types::{LogIndex, NodeId};

mod boot;
mod checks;
mod faults;
mod membership;
mod recorder;
mod replication;
mod script;
mod step;
mod workload;

use recorder::Recorder;

/// How a simulation run is shaped; everything else comes from the seed.
#[derive(Clone, Debug)]
pub struct SimConfig {
    pub seed: u64,
    pub nodes: u64,
    /// Steps (ticks) with faults, then the same number healed.
    pub chaos_steps: u64,
    pub heal_steps: u64,
    /// Whether a node whose state is ahead of its durable Raft log (it installed a checkpoint
    /// newer than the snapshot's index, and the log has not caught up yet) may crash. On by
    /// default; the start moves the log to the state (`recovery::align_log_with_state`).
    pub crash_ahead_of_log: bool,
    /// A defect planted on purpose, for the tests that show the checks catch it: a run with one
    /// must end in a violation. `None` in every real run.
    pub defect: Option<Defect>,
}

/// A broken build, simulated: what the simulation's checks must catch (mutation tests).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Defect {
    /// A power loss keeps what was appended and never synced, so a crash would test nothing.
    CrashKeepsUnsynced,
    /// Every node acknowledges entries (to its leader, and a leader to its clients) before
    /// their fsync finished: a power loss takes back the last sync that had entries.
    AckBeforeSync,
    /// Linearizable reads are served at once from the local state, with no read index: below
    /// the commit index on a lagging or cut-off node.
    ReadWithoutReadIndex,
}

impl SimConfig {
    pub fn new(seed: u64, nodes: u64) -> Self {
        SimConfig {
            seed,
            nodes,
            chaos_steps: 600,
            heal_steps: 400,
            crash_ahead_of_log: true,
            defect: None,
        }
    }
}

/// What a run did, for reports and for tests that the faults really happened.
#[derive(Clone, Debug, Default)]
pub struct SimReport {
    pub acknowledged_writes: u64,
    pub refused_writes: u64,
    pub dropped_writes: u64,
    pub reads_served: u64,
    pub crashes: u64,
    pub partitions: u64,
    pub leaders_elected: u64,
    pub messages_delivered: u64,
    pub messages_dropped: u64,
    pub final_applied_index: u64,
    pub checkpoints: u64,
    pub snapshots_installed: u64,
    pub membership_changes: u64,
    pub clock_jumps: u64,
    /// Writes acknowledged at an index shared with another write (proposed as one group).
    pub grouped_writes: u64,
    /// Power losses inside a Ready's handling (a crash point of the storage was reached).
    pub ready_crashes: u64,
    /// Of those, torn syncs: the log kept only a prefix of the new entries.
    pub torn_writes: u64,
    /// Crashes while installing a snapshot: after the intent and before the state swap (a point
    /// of `consensus::install`'s steps), or before or after the log reset.
    pub install_crashes: u64,
    /// Starts that found an install intent and finished the install (reset the log) themselves.
    pub installs_finished_at_start: u64,
    /// Starts whose state was ahead of the log (a crash right after installing a newer
    /// checkpoint) and that moved the log to the state.
    pub logs_moved_to_state: u64,
    /// Crashes of a majority of the nodes at once, and of every node at once.
    pub majority_crashes: u64,
    pub whole_cluster_crashes: u64,
    /// Messages delivered to a later incarnation of their addressee than the one up when they
    /// were sent (queued by the sender while the addressee restarted).
    pub messages_across_restart: u64,
    /// Snapshots installed from a checkpoint newer than the snapshot's index.
    pub newer_checkpoints_installed: u64,
    /// Times a node's disk filled up, and Readies it could not persist meanwhile.
    pub disk_full_episodes: u64,
    pub stalled_readies: u64,
    /// Times a node's state was backlogged (as a store whose checkpoint fell behind), and of
    /// them, times it was the leader's, which then held new writes.
    pub backlogs: u64,
    pub leader_backlogs: u64,
    /// Demotions proposed by a leader that demote the leader itself.
    pub leader_demotions: u64,
    /// Leaders that stopped leading because a configuration they applied demoted them.
    pub leaders_demoted: u64,
    /// Operator membership changes (`consensus::membership`) applied: new nodes added as
    /// learners, learners promoted, members removed (of them, removals of the leader itself).
    pub learners_added: u64,
    pub promotions: u64,
    pub removals: u64,
    pub leader_removals: u64,
    /// Operator requests the shared checks refused (no change was proposed).
    pub membership_refused: u64,
    /// Nodes added after the start that caught up (applied past their empty start).
    pub new_nodes_caught_up: u64,
    /// Power losses inside a log compaction.
    pub compaction_crashes: u64,
    /// Log entries that were appended and not yet synced when their node lost power (each
    /// crash is checked to keep exactly what was durable).
    pub unsynced_entries_lost: u64,
    /// Followers a leader reported in sync, each checked against the follower's log.
    pub in_sync_checked: u64,
    /// `ack=all` waiters confirmed (each checked against the in-sync followers' logs), and left
    /// unconfirmed by a leader that stopped leading.
    pub ack_all_confirmed: u64,
    pub ack_all_unconfirmed: u64,
}

/// splitmix64: small, fast and good enough to drive fault choices.
#[derive(Clone, Debug)]
pub struct SimRng(u64);

impl SimRng {
    pub fn new(seed: u64) -> Self {
        SimRng(seed ^ 0x9e37_79b9_7f4a_7c15)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// True with probability `per_mille / 1000`.
    pub fn chance(&mut self, per_mille: u64) -> bool {
        self.below(1000) < per_mille
    }
}

type SimReplica = Replica<MemRaftStorage, Recorder, u64>;

struct Node {
    id: u64,
    replica: Option<SimReplica>,
    /// Operator changes this node proposed, waiting to be answered (as the node loop's).
    joint_replies: crate::membership::JointReplies<u64>,
    /// The node's last durable checkpoint of its state: what it restarts from.
    checkpoint: Recorder,
    /// What survives a crash: the synced storage. Set while the node is down.
    durable: Option<MemRaftStorage>,
    /// Each boot draws its election timeout from `[base, base + 3)`; bases differ per node, so
    /// that replicas rarely campaign in lockstep (raft-rs's own randomization reads a
    /// thread-local random source, so the simulation pins the timeout per boot instead).
    base_election_tick: u64,
    restart_at: u64,
    /// The step the node last started at: its monotonic clock counts from there.
    boot_step: u64,
    /// How far this node's wall clock is from true time, in nanoseconds: a fixed skew plus a
    /// jump that comes and goes.
    clock_skew: i64,
    clock_jump: i64,
    /// How many times the node has started: its incarnation.
    boots: u64,
    /// The durable snapshot-install intent (`consensus::install`): written before the state is
    /// swapped, removed once the Raft log is reset to the snapshot.
    install_intent: Option<SnapshotMetadata>,
    /// While the step is below this, the node's disk is full.
    disk_full_until: u64,
    /// While the step is below this, the node's state is backlogged.
    backlog_until: u64,
    /// Marked to lose power at the end of this step's Ready handling (a crash of many nodes).
    doomed: bool,
    /// The address book: the members this node's transport sends to, kept as the node loop keeps
    /// it (`consensus::membership::members_of` on every configuration applied).
    members: BTreeSet<u64>,
    /// The nodes this incarnation heard from: its transport replies to each at the address its
    /// hello announced, even one its address book lacks (a follower lagging behind the entry
    /// that added its leader).
    heard_from: BTreeSet<u64>,
    /// This incarnation applied a configuration without itself: it takes no part any more (no
    /// ticks), as a removed node.
    removed: bool,
    /// The in-sync rule as the node loop applies it, for this incarnation.
    replication: crate::replication::ReplicationTracker,
    /// The `ack=all` waiters of this incarnation, by write token, as the node loop keeps them.
    ack_all: crate::replication::AckAllWaiters<u64>,
    /// The step it last lost power at.
    down_since: u64,
    /// The last step it led while holding a Ready (Raft does not tick meanwhile).
    stalled_at: u64,
    /// It started with an empty directory after the cluster did (joining as a new member).
    joined: bool,
}

struct InFlight {
    deliver_at: u64,
    seq: u64,
    from: u64,
    to: u64,
    /// The addressee's incarnation when the message was sent, and the step it was sent at.
    to_boot: u64,
    sent_at: u64,
    /// Held in the sender's queue because the addressee was down: lost if the sender crashes.
    queued: bool,
    message: Message,
    /// The sender's proposer time when it sent the message, as the node's peer frames carry it.
    sender_time: Timestamp,
}

/// One simulated cluster.
pub struct Sim {
    config: SimConfig,
    rng: SimRng,
    nodes: Vec<Node>,
    network: Vec<InFlight>,
    seq: u64,
    step: u64,
    /// (from, to) pairs whose messages are lost.
    cut: BTreeSet<(u64, u64)>,
    drop_per_mille: u64,
    dup_per_mille: u64,
    max_delay: u64,
    /// How likely the sender's transport keeps a message for a peer that is down (delivering it
    /// to the peer's next incarnation), for up to `QUEUE_STEPS`; this run's transport.
    queue_per_mille: u64,
    /// A failure outside the checks (a node that cannot start, a storage error the simulation
    /// does not inject), reported as a violation by the next check.
    failure: Option<String>,
    // What the checks remember.
    leaders: BTreeMap<u64, u64>,
    chains: BTreeMap<u64, u64>,
    applied_batches: BTreeMap<u64, Vec<u64>>,
    /// Acknowledged writes: write id -> index it committed at.
    acknowledged: BTreeMap<u64, u64>,
    /// Every index some write was acknowledged at.
    acknowledged_indexes: BTreeSet<u64>,
    next_write: u64,
    accounts_created: bool,
    workload: bool,
    /// Read token -> the highest index acknowledged when the read was issued.
    reads: BTreeMap<u64, u64>,
    /// Answers given outside a Ready (only with [`Defect::ReadWithoutReadIndex`]), checked with
    /// the next step's.
    early_answers: Vec<(u64, Output<u64>)>,
    /// Every checkpoint taken, by index: what a snapshot at that index installs (all replicas
    /// hold the same state at the same index, as the checks verify).
    snapshots: BTreeMap<u64, Recorder>,
    /// (leader, its incarnation, follower) -> the last step at which the follower's log held the
    /// leader's last entry: what an in-sync report is checked against.
    caught_up: BTreeMap<(u64, u64, u64), u64>,
    /// Operator membership requests proposed, by their token, until applied.
    requests: BTreeMap<u64, crate::membership::MembershipRequest>,
    report: SimReport,
}

/// The first property a run broke, with what is needed to replay it.
#[derive(Debug)]
pub struct Violation {
    pub seed: u64,
    pub nodes: u64,
    pub step: u64,
    pub what: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "simulation seed {} ({} nodes) broke a property at step {}: {}\n\
             replay: BULWARK_SIM_SEED={} BULWARK_SIM_NODES={} cargo test --release -p bulwark-consensus --test simulation -- replay --nocapture",
            self.seed, self.nodes, self.step, self.what, self.seed, self.nodes
        )
    }
}

const ACCOUNTS: u64 = 8;
/// Simulated time per step.
const STEP_NANOS: u64 = 10_000_000;
/// One step as a duration: a tick of every replica.
const STEP: Duration = Duration::from_nanos(STEP_NANOS);
const EPOCH_NANOS: u64 = 1_000_000_000;
const ACCOUNT_TOKENS: u64 = 1 << 45;
const CONF_TOKENS: u64 = 1 << 48;
/// How long a sender's transport keeps messages for a peer that is down.
const QUEUE_STEPS: u64 = 200;
const READ_TOKENS: u64 = 1 << 50;
/// The node's `BOOTSTRAP_INDEX`: a new cluster's configuration is a snapshot at this index.
const BOOTSTRAP_INDEX: u64 = 1;

impl Sim {
    pub fn new(config: SimConfig) -> Sim {
        let mut rng = SimRng::new(config.seed);
        let voters: Vec<u64> = (1..=config.nodes).collect();
        // Fixed election timeouts drawn from the seed, all different: with equal ones, replicas
        // could campaign in lockstep and split the vote forever, which real randomized timeouts
        // make vanishingly unlikely.
        let mut ticks: Vec<u64> = (0..config.nodes).map(|i| 10 + 3 * i).collect();
        shuffle(&mut rng, &mut ticks);
        let nodes = voters
            .iter()
            .map(|&id| {
                let skew = rng.below(1_000_000_000) as i64 - 500_000_000;
                let mut node = Node::empty(id, ticks[(id - 1) as usize], skew, &voters);
                bootstrap(&mut node, &voters);
                node
            })
            .collect();
        let mut sim = Sim {
            drop_per_mille: rng.below(80),
            dup_per_mille: rng.below(30),
            max_delay: 1 + rng.below(4),
            queue_per_mille: rng.below(1000),
            failure: None,
            config,
            rng,
            nodes,
            network: Vec::new(),
            seq: 0,
            step: 0,
            cut: BTreeSet::new(),
            leaders: BTreeMap::new(),
            chains: BTreeMap::new(),
            applied_batches: BTreeMap::new(),
            acknowledged: BTreeMap::new(),
            acknowledged_indexes: BTreeSet::new(),
            next_write: 1,
            accounts_created: false,
            workload: true,
            reads: BTreeMap::new(),
            early_answers: Vec::new(),
            snapshots: BTreeMap::new(),
            caught_up: BTreeMap::new(),
            requests: BTreeMap::new(),
            report: SimReport::default(),
        };
        for i in 0..sim.nodes.len() {
            sim.start_node(i);
        }
        sim
    }

    /// Runs the whole scenario: chaos, then healing; checks after every step and at the end.
    pub fn run(mut self) -> Result<SimReport, Violation> {
        for _ in 0..self.config.chaos_steps {
            self.chaos();
            self.step(true)?;
        }
        self.heal();
        for _ in 0..self.config.heal_steps {
            self.step(false)?;
        }
        self.check_converged()?;
        Ok(self.report)
    }

    fn violation(&self, what: String) -> Violation {
        Violation {
            seed: self.config.seed,
            nodes: self.config.nodes,
            step: self.step,
            what,
        }
    }

    fn alive(&self) -> Vec<u64> {
        self.nodes
            .iter()
            .filter(|n| n.replica.is_some())
            .map(|n| n.id)
            .collect()
    }

    fn current_leader(&self) -> Option<u64> {
        self.nodes
            .iter()
            .filter_map(|n| n.replica.as_ref())
            .filter(|r| r.role() == StateRole::Leader)
            .max_by_key(|r| r.term())
            .map(|r| r.id().0)
    }
}

impl Node {
    /// A node on an empty directory, with `members` in its address book (its `--member` flags).
    fn empty(id: u64, base_election_tick: u64, clock_skew: i64, members: &[u64]) -> Node {
        Node {
            id,
            replica: None,
            checkpoint: Recorder::default(),
            durable: Some(MemRaftStorage::new()),
            base_election_tick,
            restart_at: 0,
            boot_step: 0,
            // Up to half a second either way.
            clock_skew,
            clock_jump: 0,
            boots: 0,
            install_intent: None,
            disk_full_until: 0,
            backlog_until: 0,
            doomed: false,
            members: members.iter().copied().chain([id]).collect(),
            heard_from: BTreeSet::new(),
            removed: false,
            replication: ReplicationTracker::with_tick(STEP),
            ack_all: Default::default(),
            down_since: 0,
            stalled_at: 0,
            joined: false,
            joint_replies: Default::default(),
        }
    }

    /// What this node's wall clock and monotonic clock read at `step`.
    fn clocks(&self, step: u64) -> (Timestamp, Duration) {
        let truth = i128::from(EPOCH_NANOS + step * STEP_NANOS);
        let wall = truth + i128::from(self.clock_skew) + i128::from(self.clock_jump);
        let wall = Timestamp(u64::try_from(wall.max(0)).unwrap_or(u64::MAX));
        let monotonic = Duration::from_nanos((step - self.boot_step) * STEP_NANOS);
        (wall, monotonic)
    }
}

/// A new cluster, as `node/src/cluster/start.rs` bootstraps one: its configuration is a
/// snapshot at index 1 (so a node added later can only start from a snapshot), the state store
/// holds it as its membership.
fn bootstrap(node: &mut Node, voters: &[u64]) {
    let mut meta = SnapshotMetadata {
        index: BOOTSTRAP_INDEX,
        term: 1,
        ..Default::default()
    };
    meta.set_conf_state(ConfState::from((voters.to_vec(), vec![])));
    let storage = node.durable.as_mut().expect("a new node is down");
    storage
        .install_snapshot(&meta)
        .expect("an empty storage takes a snapshot");
    node.checkpoint.set_membership(
        protobuf::Message::write_to_bytes(meta.get_conf_state()).expect("a ConfState encodes"),
    );
}

fn shuffle(rng: &mut SimRng, items: &mut [u64]) {
    for i in (1..items.len()).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        items.swap(i, j);
    }
}

/// Runs one seed; convenience for tests and the replay command.
pub fn run_seed(seed: u64, nodes: u64) -> Result<SimReport, Violation> {
    run_config(SimConfig::new(seed, nodes))
}

/// Runs one configuration. A panic inside the run (an assertion of the replica or of raft-rs)
/// is a violation too, with the seed that replays it.
pub fn run_config(config: SimConfig) -> Result<SimReport, Violation> {
    let (seed, nodes) = (config.seed, config.nodes);
    let run = std::panic::catch_unwind(|| Sim::new(config).run());
    run.unwrap_or_else(|panic| {
        let what = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "a panic".into());
        Err(Violation {
            seed,
            nodes,
            step: 0,
            what: format!("panicked: {what}"),
        })
    })
}
