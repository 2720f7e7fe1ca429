//! A replica: one node's Raft (raft-rs `RawNode`) and its ledger state machine, with no IO.
//!
//! The shell around it (the real node loop, or the simulation) feeds it ticks, peer messages,
//! client writes and reads, then calls [`Replica::process_ready`] and carries out what comes back:
//! messages to send and answers to give. The order inside `process_ready` is Raft's: messages a
//! leader may send before persisting go out first; new entries and the hard state are written, and
//! synced while committed entries are applied (`persist`); only then go the messages that depend
//! on them.
//!
//! # When a Ready cannot be persisted (a full disk)
//!
//! If installing a Ready's snapshot or syncing its entries and hard state fails, the Ready is not
//! dropped: the replica keeps it, with how far its handling got, [`Replica::process_ready`] returns
//! the error (a full disk is [`StorageError::is_disk_full`]; the storage then undid the failed
//! writes, so repeating them is correct), and the next call resumes it where it stopped instead of
//! taking a new one ([`Replica::is_stalled`] tells; the shell retries every few hundred ms). raft-rs
//! 0.7 forbids changing Raft's state between `RawNode::ready()` and `advance()`: its docs say not
//! to `step`, `propose` or `campaign` before the Ready is advanced, and `advance` asserts that the
//! hard state did not change since `ready()` and that a follower has no new messages (a stepped
//! message or a tick would break both). So while a Ready is held the replica takes no part in Raft:
//! peer messages are dropped (Raft tolerates lost messages: the leader resends), ticks do not reach
//! Raft (a stalled follower does not campaign; a stalled leader stops heartbeating, so the others
//! elect a new leader), and writes, reads and membership changes are refused with
//! [`ReplicaError::Stalled`]. On entering that state the replica also answers what waits: its
//! proposals `Indeterminate` (they may still commit under another leader) and pending reads
//! `Stalled`. Once the retry succeeds, the Ready is advanced as usual and Raft resumes.

//!
//! # Modules
//!
//! `proposals` (client writes grouped into entries, membership changes, proposal ids), `reads`
//! (ReadIndex rounds: contexts, waiting through elections, deadlines), `apply` (committed
//! entries into the state machine, answers to our proposals), `ready` (Raft's Ready in order,
//! and holding one that cannot be persisted), `persist` (a Ready's writes, flushed while entries
//! are applied; a sole voter's new entries applied during their own flush, their answers held).

mod apply;
mod proposals;
pub use proposals::conf_change;
mod persist;
#[cfg(test)]
mod persist_tests;
mod reads;
mod ready;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::Duration;

use bulwark_ledger::{BatchResults, Operation, StateMachine, Timestamp};
use bulwark_limits as limits;
use raft::eraftpb::{ConfState, Message, Snapshot};
use raft::{RawNode, StateRole};

use crate::clock::ProposerClock;
use crate::storage::RaftStorage;
use crate::types::{LogIndex, NodeId, Term};

use proposals::Proposal;
use reads::ReadRound;
use ready::HeldReady;

#[derive(Clone, Debug)]
pub struct ReplicaConfig {
    pub id: NodeId,
    /// A random number drawn at each start of the process (the simulation draws it from its
    /// seed): ReadIndex contexts carry it, so that an answer meant for an earlier incarnation of
    /// this node, still queued somewhere, is never taken for the answer to a new read.
    pub boot_nonce: u64,
    /// Ticks without hearing from a leader before a follower campaigns; randomized per election
    /// in `[min_election_tick, max_election_tick)`. The simulation pins it with `max = min + 1`.
    pub election_tick: usize,
    pub min_election_tick: usize,
    pub max_election_tick: usize,
    pub heartbeat_tick: usize,
    /// Ticks a read may wait, from its arrival to its answer, before it is refused. Longer than
    /// an election, so that a read arriving while the leader changes is served by the next one.
    pub read_timeout_ticks: u64,
}

impl ReplicaConfig {
    pub fn new(id: NodeId, boot_nonce: u64) -> Self {
        ReplicaConfig {
            id,
            boot_nonce,
            election_tick: limits::ELECTION_TICKS,
            min_election_tick: limits::ELECTION_TICKS,
            max_election_tick: limits::MAX_ELECTION_TICKS,
            heartbeat_tick: limits::HEARTBEAT_TICKS,
            read_timeout_ticks: limits::READ_TIMEOUT_TICKS,
        }
    }

    fn raft_config(&self, applied: LogIndex) -> raft::Config {
        raft::Config {
            id: self.id.0,
            election_tick: self.election_tick,
            min_election_tick: self.min_election_tick,
            max_election_tick: self.max_election_tick,
            heartbeat_tick: self.heartbeat_tick,
            applied: applied.0,
            check_quorum: true,
            pre_vote: true,
            max_size_per_msg: limits::RAFT_MAX_SIZE_PER_MSG,
            max_inflight_msgs: limits::RAFT_MAX_INFLIGHT_MSGS,
            max_uncommitted_size: limits::RAFT_MAX_UNCOMMITTED_BYTES,
            ..raft::Config::default()
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReplicaError {
    // The leader as a plain number (`Some(2)`), as before the id had its own type.
    #[error("this node is not the leader; the leader is {:?}", .leader.map(|l| l.0))]
    NotLeader { leader: Option<NodeId> },
    /// The proposal was replaced in the log by another entry: it will never be applied.
    #[error("the write was dropped by a leader change before it committed")]
    Dropped,
    #[error("no leader answered the read in time")]
    ReadTimeout,
    /// This node stopped leading before the write committed: it may or may not be applied.
    #[error("leadership was lost before the write committed; its outcome is unknown")]
    Indeterminate,
    #[error("raft refused: {0}")]
    Raft(String),
    /// This node cannot persist its Raft log (e.g. the disk is full): it takes no writes, reads
    /// or membership changes until it can. Nothing of the request was done.
    #[error("this node cannot persist its Raft log right now (is the disk full?)")]
    Stalled,
}

/// A committed write's answer. Writes proposed together in one entry share its `index`; each
/// has its own results and the timestamp of its own last event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Written {
    pub results: BatchResults,
    pub index: LogIndex,
    pub timestamp: Timestamp,
}

/// What the shell must do after a call into the replica.
#[derive(Debug)]
pub enum Output<T> {
    Written {
        token: T,
        written: Written,
    },
    WriteFailed {
        token: T,
        error: ReplicaError,
    },
    /// Every write committed before the read arrived is now applied: answer it from the state.
    /// `applied` is the state's applied index when the read was served (at least its read
    /// index), so that a checker can hold the answer to the index it was really served at.
    ReadReady {
        token: T,
        applied: LogIndex,
    },
    ReadFailed {
        token: T,
        error: ReplicaError,
    },
}

/// A committed membership change that Raft would not apply to its configuration (it was checked
/// when proposed, but the configuration may have moved since). Its `Display` is raft-rs's, the
/// words the API answers with.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct ConfChangeRefused(pub raft::Error);

/// A membership change as applied: the new configuration (or why Raft refused it), the details
/// proposed with it, and the proposer's token on the node that proposed it.
#[derive(Debug)]
pub struct AppliedConfChange<T> {
    pub index: LogIndex,
    pub conf_state: Result<raft::eraftpb::ConfState, ConfChangeRefused>,
    pub details: Vec<u8>,
    pub token: Option<T>,
}

pub struct Replica<S: RaftStorage, M: StateMachine, T> {
    config: ReplicaConfig,
    raw: RawNode<S>,
    state: M,
    ticks: u64,
    next_proposal: u64,
    /// Proposals of this node not yet applied, by their id.
    proposals: HashMap<u64, Proposal<T>>,
    /// Index -> proposal id, to find proposals an applied entry of another origin replaced.
    proposal_index: BTreeMap<LogIndex, u64>,
    /// The proposer's next timestamp floor: no batch is proposed at or below it.
    last_proposed: Timestamp,
    /// True once this leader has applied an entry of its own term, so that `state` holds every
    /// committed entry and its timestamps can be trusted for new proposals.
    leader_ready: bool,
    waiting_writes: VecDeque<(Operation, T)>,
    /// The tick since which writes wait on this node without a known leader.
    leaderless_since: Option<u64>,
    /// The index of this leader's `ExpirePending` proposal not yet applied: one at a time.
    expiry_proposed: Option<LogIndex>,
    new_reads: Vec<T>,
    read_rounds: BTreeMap<u64, ReadRound<T>>,
    next_read_round: u64,
    outputs: Vec<Output<T>>,
    /// The proposer's time, from the shell's wall and monotonic clocks (see `crate::clock`).
    clock: ProposerClock,
    /// Followers sent a snapshot, and the tick it was sent at: if one stays unanswered (the
    /// message was lost), Raft is told it failed so that it tries again.
    snapshots_sent: HashMap<NodeId, u64>,
    conf_changes: Vec<AppliedConfChange<T>>,
    /// Index of the last membership change applied: a snapshot offered at a checkpoint before
    /// it would carry the wrong configuration.
    last_conf_change: LogIndex,
    /// A Ready whose persistence failed, to be resumed by the next `process_ready`.
    held: Option<HeldReady>,
    /// The shell's monotonic clock, read around each log sync that writes entries when the
    /// shell asked for their durations ([`Replica::time_log_syncs`]).
    sync_clock: Option<fn() -> Duration>,
    /// Those durations, until the shell takes them.
    log_syncs: Vec<Duration>,
    /// Entries are being applied before their flush ended: their answers wait for it.
    answers_held: bool,
}

impl<S: RaftStorage, M: StateMachine, T> Replica<S, M, T> {
    /// A replica over recovered storage and a state machine at its checkpoint. The storage must
    /// already hold the initial configuration (voters) for a new cluster.
    pub fn new(config: ReplicaConfig, mut storage: S, state: M) -> Result<Self, ReplicaError> {
        let logger = slog::Logger::root(slog::Discard, slog::o!());
        let raft_error = |e: &dyn std::fmt::Display| ReplicaError::Raft(e.to_string());
        let initial = raft::Storage::initial_state(&storage).map_err(|e| raft_error(&e))?;
        // Membership changes after the state's checkpoint are replayed from the log: Raft must
        // start from the configuration as of that checkpoint, not the latest one, or it would
        // apply them twice.
        if let Some(encoded) = state.membership() {
            let conf: ConfState = protobuf::Message::parse_from_bytes(&encoded)
                .map_err(|e| ReplicaError::Raft(format!("checkpointed membership: {e}")))?;
            storage.set_conf_state(&conf);
        }
        // The state may have applied entries whose commit index was not yet synced in the hard
        // state: they were committed (only committed entries are applied), so say so durably
        // before Raft checks `applied <= commit`.
        if initial.hard_state.commit < state.applied_index() {
            let mut hs = initial.hard_state.clone();
            hs.commit = state.applied_index();
            storage.set_hard_state(&hs);
            storage.sync().map_err(|e| raft_error(&e))?;
        }
        let raft_config = config.raft_config(LogIndex(state.applied_index()));
        raft_config.validate().map_err(|e| raft_error(&e))?;
        let raw = RawNode::new(&raft_config, storage, &logger).map_err(|e| raft_error(&e))?;
        let last = state.last_timestamp();
        Ok(Replica {
            config,
            raw,
            state,
            ticks: 0,
            next_proposal: 1,
            proposals: HashMap::new(),
            proposal_index: BTreeMap::new(),
            last_proposed: last,
            leader_ready: false,
            waiting_writes: VecDeque::new(),
            leaderless_since: None,
            expiry_proposed: None,
            new_reads: Vec::new(),
            read_rounds: BTreeMap::new(),
            next_read_round: 1,
            outputs: Vec::new(),
            clock: ProposerClock::default(),
            last_conf_change: LogIndex(0),
            conf_changes: Vec::new(),
            snapshots_sent: HashMap::new(),
            held: None,
            sync_clock: None,
            log_syncs: Vec::new(),
            answers_held: false,
        })
    }

    pub fn id(&self) -> NodeId {
        self.config.id
    }

    pub fn state(&self) -> &M {
        &self.state
    }

    pub fn state_mut(&mut self) -> &mut M {
        &mut self.state
    }

    pub fn raw(&self) -> &RawNode<S> {
        &self.raw
    }

    pub fn storage(&self) -> &S {
        self.raw.store()
    }

    pub fn storage_mut(&mut self) -> &mut S {
        self.raw.mut_store()
    }

    /// Whether Raft wanted a snapshot to send since the last call and the offer could not serve
    /// it: the shell should checkpoint and offer the result (see `Replica::compact`).
    pub fn take_snapshot_wanted(&mut self) -> bool {
        self.raw.mut_store().take_snapshot_wanted()
    }

    pub fn is_leader(&self) -> bool {
        self.raw.raft.state == StateRole::Leader
    }

    pub fn role(&self) -> StateRole {
        self.raw.raft.state
    }

    pub fn term(&self) -> Term {
        Term(self.raw.raft.term)
    }

    /// The leader this node last heard of, if any.
    pub fn leader(&self) -> Option<NodeId> {
        match self.raw.raft.leader_id {
            0 => None,
            id => Some(NodeId(id)),
        }
    }

    pub fn commit_index(&self) -> LogIndex {
        LogIndex(self.raw.raft.raft_log.committed)
    }

    /// Tells the replica what the shell's clocks read: the wall clock (`wall`, nanoseconds since
    /// the Unix epoch) and a monotonic clock (`monotonic`, time since any fixed point of this
    /// process). Proposals take their timestamps from the two by the rule of `crate::clock`.
    /// The replica reads no clock itself, so that a simulation replays exactly.
    pub fn set_now(&mut self, wall: Timestamp, monotonic: Duration) {
        self.clock.observe(wall, monotonic);
    }

    /// This node's proposer time: what its peer messages carry (see `crate::clock`).
    pub fn proposer_now(&self) -> Timestamp {
        self.clock.now()
    }

    /// The time the next proposal is stamped no earlier than: this node's time, capped by the
    /// voters' (the clock rule of `crate::clock`).
    pub fn proposal_time(&self) -> Timestamp {
        let voters = self.raw.raft.prs().conf().to_conf_state().voters;
        self.clock.proposal_time(&voters, self.config.id.0)
    }

    /// True while a Ready could not be persisted: Raft is paused (see the module documentation)
    /// until a `process_ready` call persists it.
    pub fn is_stalled(&self) -> bool {
        self.held.is_some()
    }

    pub fn tick(&mut self) {
        self.ticks += 1;
        if self.held.is_some() {
            // Raft must not change between ready() and advance(): no tick reaches it.
            self.expire_reads();
            return;
        }
        self.raw.tick();
        self.expire_reads();
        self.retry_lost_snapshots();
    }

    fn retry_lost_snapshots(&mut self) {
        let patience = limits::SNAPSHOT_REPORT_ELECTIONS * self.config.election_tick as u64;
        let ticks = self.ticks;
        let stale: Vec<NodeId> = self
            .snapshots_sent
            .iter()
            .filter(|(_, sent)| ticks - **sent > patience)
            .map(|(id, _)| *id)
            .collect();
        for id in stale {
            self.snapshots_sent.remove(&id);
            let waiting = self
                .raw
                .raft
                .prs()
                .get(id.0)
                .is_some_and(|p| p.state == raft::ProgressState::Snapshot);
            if waiting {
                self.raw
                    .report_snapshot(id.0, raft::SnapshotStatus::Failure);
            }
        }
    }

    pub fn campaign(&mut self) -> Result<(), ReplicaError> {
        if self.held.is_some() {
            return Err(ReplicaError::Stalled);
        }
        self.raw
            .campaign()
            .map_err(|e| ReplicaError::Raft(e.to_string()))
    }

    /// Hands leadership to `to` (Raft's leader transfer: `to` campaigns at once once it holds
    /// the leader's log). Ignored by a node that does not lead.
    pub fn transfer_leader(&mut self, to: NodeId) {
        if self.held.is_none() && self.is_leader() {
            self.raw.transfer_leader(to.0);
        }
    }

    /// The shell's monotonic clock when the last message of `peer` arrived.
    pub fn heard_at(&self, peer: NodeId) -> Option<Duration> {
        self.clock.heard_at(peer.0)
    }

    /// Times every log sync that writes entries with the shell's monotonic `clock` (the replica
    /// reads no clock of its own); [`Replica::take_log_syncs`] hands the durations over.
    pub fn time_log_syncs(&mut self, clock: fn() -> Duration) {
        self.sync_clock = Some(clock);
    }

    /// The durations of the log syncs timed since the last call (see `crate::slow_disk`).
    pub fn take_log_syncs(&mut self) -> Vec<Duration> {
        std::mem::take(&mut self.log_syncs)
    }

    /// Raft's election priority of this node: voters refuse a candidate of lower priority than
    /// their own unless its log is longer (see `crate::slow_disk`).
    pub fn set_election_priority(&mut self, priority: i64) {
        if self.raw.raft.priority != priority {
            self.raw.set_priority(priority);
        }
    }

    /// A peer's message with the proposer time its sender stamped it with when it left.
    pub fn step_timed(&mut self, message: Message, sender_time: Timestamp) {
        self.clock.note_peer(message.from, sender_time);
        self.step(message);
    }

    pub fn step(&mut self, message: Message) {
        if self.held.is_some() {
            // Raft must not change between ready() and advance(): the message is lost, as the
            // network may lose any; the sender retries.
            return;
        }
        // Messages from unknown or removed peers, or stale terms, are refused by raft; that is
        // the protocol working, not an error of this node.
        let _ = self.raw.step(message);
    }

    /// Membership changes applied since the last call, in log order.
    pub fn take_conf_changes(&mut self) -> Vec<AppliedConfChange<T>> {
        std::mem::take(&mut self.conf_changes)
    }

    /// After the state checkpointed at `checkpoint`: offer that checkpoint as the snapshot for
    /// lagging followers (with `data` telling them where to fetch it), and drop the Raft log up
    /// to `keep` entries before it.
    pub fn compact(
        &mut self,
        checkpoint: LogIndex,
        keep: u64,
        data: Vec<u8>,
    ) -> Result<(), crate::storage::StorageError> {
        if checkpoint < self.last_conf_change || checkpoint > LogIndex(self.state.applied_index()) {
            return Ok(());
        }
        let Ok(term) = raft::Storage::term(self.raw.store(), checkpoint.0) else {
            return Ok(());
        };
        let mut snapshot = Snapshot {
            data: data.into(),
            ..Snapshot::default()
        };
        let meta = snapshot.mut_metadata();
        meta.index = checkpoint.0;
        meta.term = term;
        meta.set_conf_state(self.raw.raft.prs().conf().to_conf_state());
        let applied = LogIndex(self.raw.raft.raft_log.applied);
        let store = self.raw.mut_store();
        store.set_snapshot_offer(Some(snapshot));
        // Never past what Raft has applied: a state ahead of it (a checkpoint newer than the
        // snapshot's index was installed) leaves entries Raft must still fetch to apply (or skip)
        // them, and raft-rs panics on a compacted one (found by the simulation).
        let through = checkpoint.saturating_sub(keep).min(applied);
        if through > LogIndex(raft::Storage::first_index(store).unwrap_or(1)) {
            store.compact(through)?;
        }
        Ok(())
    }

    /// Everything the shell must do now. Call after every batch of inputs.
    pub fn take_outputs(&mut self) -> Vec<Output<T>> {
        std::mem::take(&mut self.outputs)
    }
}
