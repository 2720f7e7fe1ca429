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

use bulwark_ledger::{
    AccountFlags, AccountId, Batch, BatchResults, MemoryStateMachine, NewAccount, NewTransfer,
    Operation, PendingStatus, StateMachine, Timestamp, TransferFlags, TransferId,
};
use raft::eraftpb::{ConfState, Message};
use raft::StateRole;

use crate::replica::{Output, Replica, ReplicaConfig, ReplicaError};
use crate::storage::{MemRaftStorage, RaftStorage};

/// How a simulation run is shaped; everything else comes from the seed.
#[derive(Clone, Debug)]
pub struct SimConfig {
    pub seed: u64,
    pub nodes: u64,
    /// Steps (ticks) with faults, then the same number healed.
    pub chaos_steps: u64,
    pub heal_steps: u64,
}

impl SimConfig {
    pub fn new(seed: u64, nodes: u64) -> Self {
        SimConfig {
            seed,
            nodes,
            chaos_steps: 600,
            heal_steps: 400,
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

/// A state machine that also records, per applied index, a hash chain of what it applied and
/// what came of it, so that replicas can be compared index by index.
#[derive(Clone, Debug, Default)]
struct Recorder {
    inner: MemoryStateMachine,
    chain: u64,
    chains: BTreeMap<u64, u64>,
    /// Index -> the write ids of the batches applied there, in order (several for a group),
    /// each from its batch's first transfer/account id.
    batches: BTreeMap<u64, Vec<u64>>,
}

impl Recorder {
    fn extend(&mut self, index: u64, what: impl Hash) {
        let mut h = DefaultHasher::new();
        (self.chain, index).hash(&mut h);
        what.hash(&mut h);
        self.chain = h.finish();
        self.chains.insert(index, self.chain);
    }
}

impl StateMachine for Recorder {
    fn apply_batch(&mut self, index: u64, batch: &Batch) -> BatchResults {
        let results = self.inner.apply_batch(index, batch);
        let ts = self.inner.last_timestamp();
        self.extend(index, (format!("{batch:?}"), results.names(), ts.0));
        self.batches.insert(index, vec![write_id(batch)]);
        results
    }

    fn apply_group(&mut self, index: u64, batches: &[Batch]) -> Vec<BatchResults> {
        let results = self.inner.apply_group(index, batches);
        let ts = self.inner.last_timestamp();
        let names: Vec<_> = results.iter().map(|r| r.names()).collect();
        self.extend(index, (format!("{batches:?}"), names, ts.0));
        self.batches
            .insert(index, batches.iter().map(write_id).collect());
        results
    }

    fn skip_index(&mut self, index: u64) {
        self.inner.skip_index(index);
        self.extend(index, "skip");
    }

    fn applied_index(&self) -> u64 {
        self.inner.applied_index()
    }

    fn last_timestamp(&self) -> Timestamp {
        self.inner.last_timestamp()
    }

    fn membership(&self) -> Option<Vec<u8>> {
        self.inner.membership()
    }

    fn set_membership(&mut self, encoded: Vec<u8>) {
        self.inner.set_membership(encoded)
    }
}

/// The simulation identifies each client write by the id of its first event.
fn write_id(batch: &Batch) -> u64 {
    match &batch.operation {
        Operation::CreateAccounts(a) => a[0].id.0,
        Operation::CreateTransfers(t) => t[0].id.0,
    }
}

type SimReplica = Replica<MemRaftStorage, Recorder, u64>;

struct Node {
    id: u64,
    replica: Option<SimReplica>,
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
}

struct InFlight {
    deliver_at: u64,
    seq: u64,
    to: u64,
    message: Message,
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
    /// Every checkpoint taken, by index: what a snapshot at that index installs (all replicas
    /// hold the same state at the same index, as the checks verify).
    snapshots: BTreeMap<u64, Recorder>,
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
const EPOCH_NANOS: u64 = 1_000_000_000;
const ACCOUNT_TOKENS: u64 = 1 << 45;
const CONF_TOKENS: u64 = 1 << 48;
const READ_TOKENS: u64 = 1 << 50;

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
                let mut storage = MemRaftStorage::new();
                let conf = ConfState::from((voters.clone(), vec![]));
                storage.set_conf_state(&conf);
                let mut checkpoint = Recorder::default();
                checkpoint.set_membership(
                    protobuf::Message::write_to_bytes(&conf).expect("a ConfState encodes"),
                );
                let mut node = Node {
                    id,
                    replica: None,
                    checkpoint,
                    durable: Some(storage),
                    base_election_tick: ticks[(id - 1) as usize],
                    restart_at: 0,
                    boot_step: 0,
                    // Up to half a second either way.
                    clock_skew: rng.below(1_000_000_000) as i64 - 500_000_000,
                    clock_jump: 0,
                };
                start(&mut node, &mut rng, 0);
                node
            })
            .collect();
        Sim {
            drop_per_mille: rng.below(80),
            dup_per_mille: rng.below(30),
            max_delay: 1 + rng.below(4),
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
            snapshots: BTreeMap::new(),
            report: SimReport::default(),
        }
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

    /// Faults: crashes and restarts, partitions, and changes of the network's quality.
    fn chaos(&mut self) {
        if self.rng.chance(4) {
            self.change_membership();
        }
        let n = self.config.nodes;
        let down = n - self.alive().len() as u64;
        // Crash a node now and then, never more than a minority at once.
        if self.rng.chance(8) && down < (n - 1) / 2 + 1 && down < n / 2 {
            let victim = if self.rng.chance(500) {
                self.current_leader()
            } else {
                None
            }
            .unwrap_or_else(|| 1 + self.rng.below(n));
            let restart_at = self.step + 20 + self.rng.below(120);
            let node = &mut self.nodes[(victim - 1) as usize];
            if let Some(mut replica) = node.replica.take() {
                let mut storage = replica.storage_mut().clone();
                storage.crash();
                node.durable = Some(storage);
                node.restart_at = restart_at;
                self.report.crashes += 1;
            }
        }
        for i in 0..self.nodes.len() {
            if self.nodes[i].replica.is_none() && self.nodes[i].restart_at <= self.step {
                start(&mut self.nodes[i], &mut self.rng, self.step);
            }
        }
        if self.rng.chance(3) {
            self.jump_a_clock();
        }
        // Partitions come and go.
        if self.rng.chance(10) {
            self.cut.clear();
            match self.rng.below(4) {
                0 => {}
                1 => {
                    // Majority | minority, symmetric.
                    let mut ids: Vec<u64> = (1..=n).collect();
                    shuffle(&mut self.rng, &mut ids);
                    let minority = &ids[..(n as usize - 1) / 2];
                    for &a in minority {
                        for b in 1..=n {
                            if !minority.contains(&b) {
                                self.cut.insert((a, b));
                                self.cut.insert((b, a));
                            }
                        }
                    }
                }
                2 => {
                    // One-way: a node hears nobody but can still talk (or the reverse).
                    let a = 1 + self.rng.below(n);
                    let inbound = self.rng.chance(500);
                    for b in 1..=n {
                        if b != a {
                            self.cut.insert(if inbound { (b, a) } else { (a, b) });
                        }
                    }
                }
                _ => {
                    // Isolate the leader.
                    if let Some(l) = self.current_leader() {
                        for b in 1..=n {
                            if b != l {
                                self.cut.insert((l, b));
                                self.cut.insert((b, l));
                            }
                        }
                    }
                }
            }
            self.report.partitions += 1;
        }
        if self.rng.chance(5) {
            self.drop_per_mille = self.rng.below(150);
            self.dup_per_mille = self.rng.below(50);
            self.max_delay = 1 + self.rng.below(6);
        }
    }

    /// Membership under load: the leader demotes two other voters to learners (joint
    /// consensus, voters stay odd), or promotes every learner back.
    fn change_membership(&mut self) {
        use raft::eraftpb::{ConfChangeSingle, ConfChangeTransition, ConfChangeType, ConfChangeV2};
        let Some(leader) = self.current_leader() else {
            return;
        };
        let replica = self.nodes[(leader - 1) as usize]
            .replica
            .as_mut()
            .expect("the leader is alive");
        let conf = replica.raw().raft.prs().conf().to_conf_state();
        if !conf.voters_outgoing.is_empty() {
            return; // a joint configuration is still being left
        }
        let changes: Vec<(ConfChangeType, u64)> = if conf.learners.is_empty() {
            let mut others: Vec<u64> = conf
                .voters
                .iter()
                .copied()
                .filter(|v| *v != leader)
                .collect();
            if others.len() < 2 {
                return;
            }
            shuffle(&mut self.rng, &mut others);
            others[..2]
                .iter()
                .map(|id| (ConfChangeType::AddLearnerNode, *id))
                .collect()
        } else {
            conf.learners
                .iter()
                .map(|id| (ConfChangeType::AddNode, *id))
                .collect()
        };
        let mut cc = ConfChangeV2::default();
        cc.set_transition(ConfChangeTransition::Auto);
        for (kind, id) in changes {
            let mut single = ConfChangeSingle::default();
            single.set_change_type(kind);
            single.node_id = id;
            cc.mut_changes().push(single);
        }
        replica.propose_conf_change(cc, Vec::new(), CONF_TOKENS + self.step);
    }

    /// A node's wall clock jumps (a second to an hour, either way), or a jump is undone.
    fn jump_a_clock(&mut self) {
        let victim = self.rng.below(self.config.nodes) as usize;
        let jump = if self.rng.chance(300) {
            0
        } else {
            let by = 1_000_000_000 * (1 + self.rng.below(3600)) as i64;
            if self.rng.chance(500) {
                by
            } else {
                -by
            }
        };
        self.nodes[victim].clock_jump = jump;
        self.report.clock_jumps += 1;
    }

    fn heal(&mut self) {
        self.cut.clear();
        self.drop_per_mille = 0;
        self.dup_per_mille = 0;
        self.max_delay = 1;
        for node in &mut self.nodes {
            if node.replica.is_none() {
                start(node, &mut self.rng, self.step);
            }
        }
    }

    fn current_leader(&self) -> Option<u64> {
        self.nodes
            .iter()
            .filter_map(|n| n.replica.as_ref())
            .filter(|r| r.role() == StateRole::Leader)
            .max_by_key(|r| r.term())
            .map(|r| r.id())
    }

    /// One tick of simulated time: deliver due messages, tick every replica, feed the client
    /// workload, process every replica's Ready, then check.
    fn step(&mut self, chaos: bool) -> Result<(), Violation> {
        self.step += 1;
        let now = self.step;
        // Deliver due messages in (time, seq) order.
        self.network.sort_by_key(|m| (m.deliver_at, m.seq));
        let due = self
            .network
            .iter()
            .take_while(|m| m.deliver_at <= now)
            .count();
        let delivering: Vec<InFlight> = self.network.drain(..due).collect();
        for m in delivering {
            let node = &mut self.nodes[(m.to - 1) as usize];
            if let Some(replica) = node.replica.as_mut() {
                replica.step(m.message);
                self.report.messages_delivered += 1;
            }
        }
        for node in &mut self.nodes {
            let (wall, monotonic) = node.clocks(now);
            if let Some(replica) = node.replica.as_mut() {
                replica.set_now(wall, monotonic);
                replica.tick();
            }
        }
        self.client_workload(chaos);
        let mut outbox: Vec<Message> = Vec::new();
        let mut outputs: Vec<(u64, Output<u64>)> = Vec::new();
        for node in &mut self.nodes {
            let Some(replica) = node.replica.as_mut() else {
                continue;
            };
            // Process until quiet: a Ready may make another (e.g. a single-node commit).
            for _ in 0..4 {
                let mut installed = None;
                let snapshots = &self.snapshots;
                replica
                    .process_ready(
                        &mut |messages| outbox.extend(messages),
                        &mut |state, snapshot| {
                            let index = u64::from_le_bytes(
                                snapshot.data[..8]
                                    .try_into()
                                    .map_err(|_| "short snapshot data")?,
                            );
                            let copy = snapshots
                                .get(&index)
                                .ok_or_else(|| format!("no checkpoint at {index}"))?;
                            *state = copy.clone();
                            installed = Some(copy.clone());
                            self.report.snapshots_installed += 1;
                            Ok(())
                        },
                    )
                    .expect("in-memory storage does not fail");
                if let Some(state) = installed {
                    node.checkpoint = state;
                }
                outputs.extend(replica.take_outputs().into_iter().map(|o| (node.id, o)));
                for change in replica.take_conf_changes() {
                    if change.conf_state.is_ok() && change.token.is_some() {
                        self.report.membership_changes += 1;
                    }
                }
                if !replica.raw().has_ready() {
                    break;
                }
            }
            // Now and then the node checkpoints its state, offers it as a snapshot and
            // compacts its log behind it, keeping only a few entries.
            if self.rng.chance(25) {
                let state = replica.state().clone();
                let index = state.applied_index();
                if index > 0 {
                    let keep = self.rng.below(8);
                    replica
                        .compact(index, keep, index.to_le_bytes().to_vec())
                        .expect("in-memory storage does not fail");
                    self.snapshots.insert(index, state.clone());
                    node.checkpoint = state;
                    self.report.checkpoints += 1;
                }
            }
        }
        for message in outbox {
            self.send(message);
        }
        for (node, output) in outputs {
            self.handle_output(node, output)?;
        }
        self.check()
    }

    fn send(&mut self, message: Message) {
        let (from, to) = (message.from, message.to);
        if self.cut.contains(&(from, to)) || self.rng.chance(self.drop_per_mille) {
            self.report.messages_dropped += 1;
            return;
        }
        let copies = if self.rng.chance(self.dup_per_mille) {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let delay = 1 + self.rng.below(self.max_delay);
            self.seq += 1;
            self.network.push(InFlight {
                deliver_at: self.step + delay,
                seq: self.seq,
                to,
                message: message.clone(),
            });
        }
    }

    /// Clients: create the accounts once, then random transfers (some linked, some pending) to
    /// random nodes, and linearizable reads.
    fn client_workload(&mut self, chaos: bool) {
        if !self.workload {
            return;
        }
        let per_mille = if chaos { 400 } else { 200 };
        if !self.rng.chance(per_mille) {
            return;
        }
        let alive = self.alive();
        if alive.is_empty() {
            return;
        }
        let target = alive[self.rng.below(alive.len() as u64) as usize];
        // Now and then several clients at once, so that a leader groups their writes.
        let burst = if self.rng.chance(250) {
            2 + self.rng.below(6)
        } else {
            1
        };
        for _ in 0..burst {
            self.client_op(target);
        }
    }

    /// One client request to `target`: a write (the accounts first, then 1-4 transfers) or a
    /// linearizable read.
    fn client_op(&mut self, target: u64) {
        let id = self.next_write;
        let operation = if !self.accounts_created {
            Operation::CreateAccounts(
                (0..ACCOUNTS)
                    .map(|i| NewAccount {
                        id: AccountId(1 + i),
                        ledger: 1,
                        code: 1,
                        flags: if i % 2 == 0 {
                            AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS
                        } else {
                            AccountFlags::empty()
                        },
                        user_data: 0,
                    })
                    .collect(),
            )
        } else {
            let events = 1 + self.rng.below(4);
            self.next_write += events;
            let mut transfers = Vec::new();
            for k in 0..events {
                let debit = 1 + self.rng.below(ACCOUNTS);
                let credit = 1 + (debit + self.rng.below(ACCOUNTS - 1)) % ACCOUNTS;
                let linked = k + 1 < events && self.rng.chance(300);
                let pending = self.rng.chance(150);
                let mut flags = TransferFlags::empty();
                if linked {
                    flags = flags | TransferFlags::LINKED;
                }
                if pending {
                    flags = flags | TransferFlags::PENDING;
                }
                transfers.push(NewTransfer {
                    id: TransferId(1_000 + id + k),
                    debit_account_id: AccountId(debit),
                    credit_account_id: AccountId(credit),
                    amount: 1 + self.rng.below(50),
                    ledger: 1,
                    code: 1,
                    flags,
                    timeout: if pending {
                        1 + self.rng.below(3) as u32
                    } else {
                        0
                    },
                    ..NewTransfer::default()
                });
            }
            Operation::CreateTransfers(transfers)
        };
        let token = match &operation {
            Operation::CreateAccounts(_) => {
                self.next_write += 1;
                ACCOUNT_TOKENS + id
            }
            Operation::CreateTransfers(t) => t[0].id.0,
        };
        let read = self.rng.chance(200);
        let must_see = self.acknowledged.values().copied().max().unwrap_or(0);
        let replica = self.nodes[(target - 1) as usize]
            .replica
            .as_mut()
            .expect("target is alive");
        if read {
            let read_id = READ_TOKENS + self.reads.len() as u64;
            self.reads.insert(read_id, must_see);
            replica.read(read_id);
        } else {
            replica.write(operation, token);
        }
    }

    fn handle_output(&mut self, node: u64, output: Output<u64>) -> Result<(), Violation> {
        match output {
            Output::Written { token, written } => {
                self.report.acknowledged_writes += 1;
                if (ACCOUNT_TOKENS..READ_TOKENS).contains(&token) {
                    self.accounts_created = true;
                }
                if !self.acknowledged_indexes.insert(written.index) {
                    self.report.grouped_writes += 1;
                }
                if let Some(previous) = self.acknowledged.insert(token, written.index) {
                    if previous != written.index {
                        return Err(self.violation(format!(
                            "write {token} acknowledged twice, at {previous} and {}",
                            written.index
                        )));
                    }
                }
            }
            Output::WriteFailed { error, .. } => match error {
                ReplicaError::Dropped => self.report.dropped_writes += 1,
                _ => self.report.refused_writes += 1,
            },
            Output::ReadReady { token } => {
                // Linearizable: the state the read is served from holds every write that was
                // acknowledged before the read was issued.
                self.report.reads_served += 1;
                let must_see = self.reads.get(&token).copied().unwrap_or(0);
                let applied = self.nodes[(node - 1) as usize]
                    .replica
                    .as_ref()
                    .map(|r| r.state().applied_index())
                    .unwrap_or(0);
                if applied < must_see {
                    return Err(self.violation(format!(
                        "read {token} on node {node} served at applied index {applied}, \
                         before write acknowledged at {must_see}"
                    )));
                }
            }
            Output::ReadFailed { .. } => {}
        }
        Ok(())
    }

    /// Log matching: two logs holding an entry with the same index and term hold the same
    /// entry there (checked at every index both hold, which by induction covers every earlier
    /// entry too).
    fn check_log_matching(&self) -> Result<(), Violation> {
        let mut seen: BTreeMap<(u64, u64), (u64, u64)> = BTreeMap::new();
        for node in &self.nodes {
            let Some(replica) = node.replica.as_ref() else {
                continue;
            };
            let log = &replica.raw().raft.raft_log;
            let entries = log
                .entries(
                    log.first_index(),
                    None,
                    raft::GetEntriesContext::empty(false),
                )
                .unwrap_or_default();
            for entry in entries {
                let mut h = DefaultHasher::new();
                (
                    entry.get_entry_type() as i32,
                    &entry.data[..],
                    &entry.context[..],
                )
                    .hash(&mut h);
                let digest = h.finish();
                match seen.get(&(entry.index, entry.term)) {
                    Some(&(other, d)) if d != digest => {
                        return Err(self.violation(format!(
                            "log matching: nodes {other} and {} hold different entries at index {} term {}",
                            node.id, entry.index, entry.term
                        )))
                    }
                    Some(_) => {}
                    None => {
                        seen.insert((entry.index, entry.term), (node.id, digest));
                    }
                }
            }
        }
        Ok(())
    }

    /// Safety after every step.
    fn check(&mut self) -> Result<(), Violation> {
        self.check_log_matching()?;
        for node in &self.nodes {
            let Some(replica) = node.replica.as_ref() else {
                continue;
            };
            if replica.role() == StateRole::Leader {
                let term = replica.term();
                match self.leaders.get(&term) {
                    Some(&other) if other != node.id => {
                        return Err(self.violation(format!(
                            "two leaders in term {term}: {other} and {}",
                            node.id
                        )))
                    }
                    Some(_) => {}
                    None => {
                        self.leaders.insert(term, node.id);
                        self.report.leaders_elected += 1;
                        // Leader completeness: the new leader's log holds every entry any
                        // replica has applied (applied entries are committed).
                        let last = replica.raw().raft.raft_log.last_index();
                        if let Some((&index, _)) = self.applied_batches.iter().next_back() {
                            if last < index {
                                return Err(self.violation(format!(
                                    "leader {} of term {term} has log up to {last}, but index {index} was committed",
                                    node.id
                                )));
                            }
                        }
                    }
                }
            }
        }
        // Every replica applies the same entries in the same order: equal hash chains at equal
        // indexes (they cover the entries, their results and the timestamps).
        for i in 0..self.nodes.len() {
            let Some(replica) = self.nodes[i].replica.as_ref() else {
                continue;
            };
            let recorder = replica.state();
            for (&index, &chain) in recorder.chains.iter().rev() {
                match self.chains.get(&index) {
                    Some(&known) if known != chain => {
                        return Err(self.violation(format!(
                            "node {} applied something else at index {index} than another replica",
                            self.nodes[i].id
                        )))
                    }
                    Some(_) => break,
                    None => {
                        self.chains.insert(index, chain);
                    }
                }
            }
            for (index, writes) in &recorder.batches {
                self.applied_batches
                    .entry(*index)
                    .or_insert_with(|| writes.clone());
            }
        }
        // No acknowledged write is lost: what was acknowledged at an index is what every replica
        // applied there.
        for (&token, &index) in &self.acknowledged {
            // Every attempt to create the accounts carries the same batch (first id 1).
            let write = if token >= ACCOUNT_TOKENS { 1 } else { token };
            if let Some(applied) = self.applied_batches.get(&index) {
                if !applied.contains(&write) {
                    return Err(self.violation(format!(
                        "write {write} was acknowledged at index {index}, but index {index} holds writes {applied:?}"
                    )));
                }
            }
        }
        Ok(())
    }

    /// Liveness and convergence once healed: one leader, every replica at the same applied index
    /// with the same state, every acknowledged write applied, and a new write commits.
    fn check_converged(&mut self) -> Result<(), Violation> {
        // Healed, a leader must emerge within a few election timeouts (one may be under way).
        for _ in 0..200 {
            if self.current_leader().is_some() {
                break;
            }
            self.step(false)?;
        }
        let Some(leader) = self.current_leader() else {
            let detail: Vec<String> = self
                .nodes
                .iter()
                .filter_map(|n| n.replica.as_ref())
                .map(|r| {
                    format!(
                        "node {} {:?} term {} commit {} last {} (term {}) applied {} first {}",
                        r.id(),
                        r.role(),
                        r.term(),
                        r.commit_index(),
                        r.raw().raft.raft_log.last_index(),
                        r.raw().raft.raft_log.last_term(),
                        r.state().applied_index(),
                        r.raw().raft.raft_log.first_index()
                    )
                })
                .collect();
            return Err(self.violation(format!("no leader after healing: {}", detail.join("; "))));
        };
        let probe = 1 << 40;
        let transfer = NewTransfer {
            id: TransferId(probe),
            debit_account_id: AccountId(2),
            credit_account_id: AccountId(1),
            amount: 1,
            ledger: 1,
            code: 1,
            ..NewTransfer::default()
        };
        if !self.accounts_created {
            return Err(self.violation("the accounts were never created".into()));
        }
        self.nodes[(leader - 1) as usize]
            .replica
            .as_mut()
            .expect("leader alive")
            .write(Operation::CreateTransfers(vec![transfer]), probe);
        for _ in 0..100 {
            self.step(false)?;
            if self.acknowledged.contains_key(&probe) {
                break;
            }
        }
        if !self.acknowledged.contains_key(&probe) {
            return Err(self.violation("a write after healing did not commit".into()));
        }
        // Let the cluster go quiet: no new writes, every replica catches up.
        self.workload = false;
        for _ in 0..50 {
            self.step(false)?;
        }
        let mut applied: Vec<(u64, u64, u64)> = Vec::new();
        let mut detail = String::new();
        for node in &self.nodes {
            let replica = node.replica.as_ref().expect("all nodes restarted");
            let index = replica.state().applied_index();
            let chain = replica.state().chains.get(&index).copied().unwrap_or(0);
            applied.push((node.id, index, chain));
            detail.push_str(&format!(
                " node {}: {:?} term {} commit {} last {} applied {};",
                node.id,
                replica.role(),
                replica.term(),
                replica.commit_index(),
                replica.raw().raft.raft_log.last_index(),
                index
            ));
        }
        let (_, index, chain) = applied[0];
        if applied.iter().any(|&(_, i, c)| i != index || c != chain) {
            return Err(self.violation(format!("replicas did not converge:{detail}")));
        }
        let max_acked = self.acknowledged.values().copied().max().unwrap_or(0);
        if index < max_acked {
            return Err(self.violation(format!(
                "applied index {index} is behind acknowledged index {max_acked}"
            )));
        }
        // Money: the converged ledger balances.
        let state = &self.nodes[0].replica.as_ref().expect("alive").state().inner;
        if let Err(e) = bulwark_ledger::check_balanced(state.store.accounts.values()) {
            return Err(self.violation(e));
        }
        self.report.final_applied_index = index;
        Ok(())
    }
}

/// Scripted control: a test drives the cluster by hand (crashes, splits, campaigns, writes)
/// while every step is still checked. A scripted cluster has a perfect network, no random
/// faults and no random workload; only checkpoints and compaction still come from the seed.
impl Sim {
    /// A cluster of `nodes` (seed 0) with chaos off: nothing happens that the script does not do.
    pub fn scripted(nodes: u64) -> Sim {
        let mut sim = Sim::new(SimConfig::new(0, nodes));
        sim.drop_per_mille = 0;
        sim.dup_per_mille = 0;
        sim.max_delay = 1;
        sim.workload = false;
        sim
    }

    /// Runs `steps` ticks, checking every property after each.
    pub fn run_steps(&mut self, steps: u64) -> Result<(), Violation> {
        for _ in 0..steps {
            self.step(false)?;
        }
        Ok(())
    }

    /// Runs checked ticks until `done` holds, at most `limit` of them; true if it came to hold.
    pub fn run_until(
        &mut self,
        limit: u64,
        mut done: impl FnMut(&Sim) -> bool,
    ) -> Result<bool, Violation> {
        for _ in 0..limit {
            if done(self) {
                return Ok(true);
            }
            self.step(false)?;
        }
        Ok(done(self))
    }

    /// Crashes node `id`: it loses everything not synced and stays down until restarted.
    pub fn crash(&mut self, id: u64) {
        let node = &mut self.nodes[(id - 1) as usize];
        let mut replica = node
            .replica
            .take()
            .unwrap_or_else(|| panic!("node {id} is already down"));
        let mut storage = replica.storage_mut().clone();
        storage.crash();
        node.durable = Some(storage);
        node.restart_at = u64::MAX;
        self.report.crashes += 1;
    }

    /// Restarts the crashed node `id` from its synced storage and its last checkpoint.
    pub fn restart(&mut self, id: u64) {
        let node = &mut self.nodes[(id - 1) as usize];
        assert!(node.replica.is_none(), "node {id} is already up");
        start(node, &mut self.rng, self.step);
    }

    /// Splits the network into `groups`, losing every message between two of them (both ways);
    /// replaces any earlier split, and a node named in no group keeps all its links.
    pub fn partition(&mut self, groups: &[&[u64]]) {
        self.cut.clear();
        for (i, here) in groups.iter().enumerate() {
            for (j, there) in groups.iter().enumerate() {
                if i == j {
                    continue;
                }
                for &a in *here {
                    for &b in *there {
                        self.cut.insert((a, b));
                    }
                }
            }
        }
        self.report.partitions += 1;
    }

    /// Heals the network: every link carries messages again (crashed nodes stay down).
    pub fn heal_network(&mut self) {
        self.cut.clear();
    }

    /// Makes node `id` start an election now (with a pre-vote first, as configured).
    pub fn campaign(&mut self, id: u64) {
        self.replica_mut(id)
            .campaign()
            .unwrap_or_else(|e| panic!("node {id} could not campaign: {e}"));
    }

    /// The live node that leads in the highest term, if any.
    pub fn leader(&self) -> Option<u64> {
        self.current_leader()
    }

    /// Every live node that thinks it leads, as (node, term), by node id.
    pub fn leaders(&self) -> Vec<(u64, u64)> {
        self.nodes
            .iter()
            .filter_map(|n| n.replica.as_ref())
            .filter(|r| r.role() == StateRole::Leader)
            .map(|r| (r.id(), r.term()))
            .collect()
    }

    /// Every leader the checks have seen so far, as (term, node), by term.
    pub fn leader_history(&self) -> Vec<(u64, u64)> {
        self.leaders.iter().map(|(&term, &id)| (term, id)).collect()
    }

    /// Node `id`'s current term, or `None` while it is down.
    pub fn term(&self, id: u64) -> Option<u64> {
        self.replica(id).map(|r| r.term())
    }

    /// Node `id`'s Raft role, or `None` while it is down.
    pub fn role(&self, id: u64) -> Option<StateRole> {
        self.replica(id).map(|r| r.role())
    }

    /// The leader node `id` last heard of, or `None` if it knows of none or is down.
    pub fn leader_known_to(&self, id: u64) -> Option<u64> {
        self.replica(id).and_then(|r| r.leader())
    }

    /// The index node `id` has applied, or `None` while it is down.
    pub fn applied_index(&self, id: u64) -> Option<u64> {
        self.replica(id).map(|r| r.state().applied_index())
    }

    /// Sends a client write to node `via` and returns its token; the first creates the
    /// accounts, later ones are transfers. A follower refuses it: the simulation does not forward.
    pub fn write(&mut self, via: u64) -> u64 {
        let id = self.next_write;
        self.next_write += 1;
        let (operation, token) = if !self.accounts_created {
            let accounts = (0..ACCOUNTS)
                .map(|i| NewAccount {
                    id: AccountId(1 + i),
                    ledger: 1,
                    code: 1,
                    flags: if i % 2 == 0 {
                        AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS
                    } else {
                        AccountFlags::empty()
                    },
                    user_data: 0,
                })
                .collect();
            (Operation::CreateAccounts(accounts), ACCOUNT_TOKENS + id)
        } else {
            // From an account that may go negative (even id) to the one before it.
            let debit = 2 + 2 * (id % (ACCOUNTS / 2));
            let transfer = NewTransfer {
                id: TransferId(1_000 + id),
                debit_account_id: AccountId(debit),
                credit_account_id: AccountId(debit - 1),
                amount: 1 + id % 50,
                ledger: 1,
                code: 1,
                ..NewTransfer::default()
            };
            (Operation::CreateTransfers(vec![transfer]), 1_000 + id)
        };
        self.replica_mut(via).write(operation, token);
        token
    }

    /// Sends node `via` a pending transfer of 1 that expires `timeout` seconds after its
    /// timestamp; returns its token (also its transfer id). The accounts must exist.
    pub fn write_pending(&mut self, via: u64, timeout: u32) -> u64 {
        assert!(self.accounts_created, "create the accounts first");
        let id = 1_000 + self.next_write;
        self.next_write += 1;
        let transfer = NewTransfer {
            id: TransferId(id),
            debit_account_id: AccountId(2),
            credit_account_id: AccountId(1),
            amount: 1,
            ledger: 1,
            code: 1,
            flags: TransferFlags::PENDING,
            timeout,
            ..NewTransfer::default()
        };
        self.replica_mut(via)
            .write(Operation::CreateTransfers(vec![transfer]), id);
        id
    }

    /// The status of the pending transfer `transfer` in node `id`'s state.
    pub fn pending_status(&self, id: u64, transfer: u64) -> Option<PendingStatus> {
        let state = &self.replica(id)?.state().inner.store;
        state.pending.get(&TransferId(transfer)).copied()
    }

    /// Moves node `id`'s wall clock `by` nanoseconds from true time (its skew stays); its
    /// monotonic clock is untouched, as a real clock step leaves it.
    pub fn jump_clock(&mut self, id: u64, by: i64) {
        self.nodes[(id - 1) as usize].clock_jump = by;
        self.report.clock_jumps += 1;
    }

    /// Simulated nanoseconds since the run began.
    pub fn elapsed_nanos(&self) -> u64 {
        self.step * STEP_NANOS
    }

    /// Whether the write with this token was acknowledged: committed and answered.
    pub fn acknowledged(&self, token: u64) -> bool {
        self.acknowledged.contains_key(&token)
    }

    /// Whether node `id` has applied the acknowledged write `token` at the index it was
    /// acknowledged at.
    pub fn has_applied(&self, id: u64, token: u64) -> bool {
        let (Some(replica), Some(index)) = (self.replica(id), self.acknowledged.get(&token)) else {
            return false;
        };
        let write = if token >= ACCOUNT_TOKENS { 1 } else { token };
        replica
            .state()
            .batches
            .get(index)
            .is_some_and(|writes| writes.contains(&write))
    }

    /// The checks a healed run ends with: a leader, a new write commits, and every replica
    /// converges on the same balanced state holding every acknowledged write.
    pub fn converge(&mut self) -> Result<(), Violation> {
        self.check_converged()
    }

    /// What the run has done so far.
    pub fn report(&self) -> &SimReport {
        &self.report
    }

    fn replica(&self, id: u64) -> Option<&SimReplica> {
        self.nodes[(id - 1) as usize].replica.as_ref()
    }

    fn replica_mut(&mut self, id: u64) -> &mut SimReplica {
        self.nodes[(id - 1) as usize]
            .replica
            .as_mut()
            .unwrap_or_else(|| panic!("node {id} is down"))
    }
}

impl Node {
    /// What this node's wall clock and monotonic clock read at `step`.
    fn clocks(&self, step: u64) -> (Timestamp, Duration) {
        let truth = i128::from(EPOCH_NANOS + step * STEP_NANOS);
        let wall = truth + i128::from(self.clock_skew) + i128::from(self.clock_jump);
        let wall = Timestamp(u64::try_from(wall.max(0)).unwrap_or(u64::MAX));
        let monotonic = Duration::from_nanos((step - self.boot_step) * STEP_NANOS);
        (wall, monotonic)
    }
}

/// Starts (or restarts) a node from its synced storage and its last checkpoint (Raft replays
/// the log after it), with a new boot nonce and election timeout from the seed.
fn start(node: &mut Node, rng: &mut SimRng, step: u64) {
    let storage = node.durable.take().expect("a stopped node has its storage");
    let election_tick = (node.base_election_tick + rng.below(3)) as usize;
    let mut config = ReplicaConfig::new(node.id, rng.next_u64());
    config.election_tick = election_tick;
    config.min_election_tick = election_tick;
    config.max_election_tick = election_tick + 1;
    let replica = Replica::new(config, storage, node.checkpoint.clone()).expect("valid config");
    node.replica = Some(replica);
    node.boot_step = step;
}

fn shuffle(rng: &mut SimRng, items: &mut [u64]) {
    for i in (1..items.len()).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        items.swap(i, j);
    }
}

/// Runs one seed; convenience for tests and the replay command.
pub fn run_seed(seed: u64, nodes: u64) -> Result<SimReport, Violation> {
    Sim::new(SimConfig::new(seed, nodes)).run()
}
