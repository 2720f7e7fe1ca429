//! A replica: one node's Raft (raft-rs `RawNode`) and its ledger state machine, with no IO.
//!
//! The shell around it (the real node loop, or the simulation) feeds it ticks, peer messages,
//! client writes and reads, then calls [`Replica::process_ready`] and carries out what comes back:
//! messages to send and answers to give. The order inside `process_ready` is Raft's: messages a
//! leader may send before persisting go out first; committed entries are applied; new entries and
//! the hard state are written and synced; only then go the messages that depend on them.
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

use std::collections::{BTreeMap, HashMap, VecDeque};

use bulwark_ledger::{codec, Batch, BatchResults, Operation, StateMachine, Timestamp};
use raft::eraftpb::{ConfChangeV2, ConfState, Entry, EntryType, Message, Snapshot};
use raft::{RawNode, StateRole};

use crate::storage::{RaftStorage, StorageError};

#[derive(Clone, Debug)]
pub struct ReplicaConfig {
    pub id: u64,
    /// Ticks without hearing from a leader before a follower campaigns; randomized per election
    /// in `[min_election_tick, max_election_tick)`. The simulation pins it with `max = min + 1`.
    pub election_tick: usize,
    pub min_election_tick: usize,
    pub max_election_tick: usize,
    pub heartbeat_tick: usize,
    /// Ticks a read may wait for its read index before it is refused.
    pub read_timeout_ticks: u64,
}

impl ReplicaConfig {
    pub fn new(id: u64) -> Self {
        ReplicaConfig {
            id,
            election_tick: 10,
            min_election_tick: 10,
            max_election_tick: 20,
            heartbeat_tick: 2,
            read_timeout_ticks: 20,
        }
    }

    fn raft_config(&self, applied: u64) -> raft::Config {
        raft::Config {
            id: self.id,
            election_tick: self.election_tick,
            min_election_tick: self.min_election_tick,
            max_election_tick: self.max_election_tick,
            heartbeat_tick: self.heartbeat_tick,
            applied,
            check_quorum: true,
            pre_vote: true,
            max_size_per_msg: 4 << 20,
            max_inflight_msgs: 256,
            max_uncommitted_size: 256 << 20,
            ..raft::Config::default()
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReplicaError {
    #[error("this node is not the leader; the leader is {leader:?}")]
    NotLeader { leader: Option<u64> },
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

/// How far the handling of a held Ready got: the stage it resumes at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    /// Its snapshot (if any) is still to be installed into the state machine.
    InstallState,
    /// The state machine has the snapshot; the Raft storage does not yet.
    InstallStorage,
    /// Read states and committed entries are still to be handled.
    Apply,
    /// Entries and hard state are still to be persisted and synced.
    Persist,
}

/// A Ready taken from Raft and not yet advanced, because persisting it failed.
struct HeldReady {
    ready: raft::Ready,
    stage: Stage,
}

/// A committed write's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Written {
    pub results: BatchResults,
    pub index: u64,
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
    ReadReady {
        token: T,
    },
    ReadFailed {
        token: T,
        error: ReplicaError,
    },
}

/// A membership change as applied: the new configuration (or why Raft refused it), the details
/// proposed with it, and the proposer's token on the node that proposed it.
#[derive(Debug)]
pub struct AppliedConfChange<T> {
    pub index: u64,
    pub conf_state: Result<raft::eraftpb::ConfState, String>,
    pub details: Vec<u8>,
    pub token: Option<T>,
}

/// One read-index round: the reads that arrived together share one Raft read index.
struct ReadRound<T> {
    tokens: Vec<T>,
    issued_at: u64,
    index: Option<u64>,
}

pub struct Replica<S: RaftStorage, M: StateMachine, T> {
    config: ReplicaConfig,
    raw: RawNode<S>,
    state: M,
    ticks: u64,
    next_proposal: u64,
    /// Proposals of this node not yet applied, by their id, with the index they were given.
    proposals: HashMap<u64, (u64, T)>,
    /// Index -> proposal id, to find proposals an applied entry of another origin replaced.
    proposal_index: BTreeMap<u64, u64>,
    /// The proposer's next timestamp floor: no batch is proposed at or below it.
    last_proposed: Timestamp,
    /// True once this leader has applied an entry of its own term, so that `state` holds every
    /// committed entry and its timestamps can be trusted for new proposals.
    leader_ready: bool,
    waiting_writes: VecDeque<(Operation, T)>,
    new_reads: Vec<T>,
    read_rounds: BTreeMap<u64, ReadRound<T>>,
    next_read_round: u64,
    outputs: Vec<Output<T>>,
    /// The shell's wall clock, set before writes; used only to pick proposal timestamps.
    now: Timestamp,
    /// Followers sent a snapshot, and the tick it was sent at: if one stays unanswered (the
    /// message was lost), Raft is told it failed so that it tries again.
    snapshots_sent: HashMap<u64, u64>,
    conf_changes: Vec<AppliedConfChange<T>>,
    /// Index of the last membership change applied: a snapshot offered at a checkpoint before
    /// it would carry the wrong configuration.
    last_conf_change: u64,
    /// A Ready whose persistence failed, to be resumed by the next `process_ready`.
    held: Option<HeldReady>,
}

impl<S: RaftStorage, M: StateMachine, T> Replica<S, M, T> {
    /// A replica over recovered storage and a state machine at its checkpoint. The storage must
    /// already hold the initial configuration (voters) for a new cluster.
    pub fn new(config: ReplicaConfig, mut storage: S, state: M) -> Result<Self, ReplicaError> {
        let logger = slog::Logger::root(slog::Discard, slog::o!());
        // The state may have applied entries whose commit index was not yet synced in the hard
        // state: they were committed (only committed entries are applied), so say so durably
        // before Raft checks `applied <= commit`.
        let initial = raft::Storage::initial_state(&storage)
            .map_err(|e| ReplicaError::Raft(e.to_string()))?;
        // Membership changes after the state's checkpoint are replayed from the log: Raft must
        // start from the configuration as of that checkpoint, not the latest one, or it would
        // apply them twice.
        if let Some(encoded) = state.membership() {
            let conf: ConfState = protobuf::Message::parse_from_bytes(&encoded)
                .map_err(|e| ReplicaError::Raft(format!("checkpointed membership: {e}")))?;
            storage.set_conf_state(&conf);
        }
        if initial.hard_state.commit < state.applied_index() {
            let mut hs = initial.hard_state.clone();
            hs.commit = state.applied_index();
            storage.set_hard_state(&hs);
            storage
                .sync()
                .map_err(|e| ReplicaError::Raft(e.to_string()))?;
        }
        let raft_config = config.raft_config(state.applied_index());
        raft_config
            .validate()
            .map_err(|e| ReplicaError::Raft(e.to_string()))?;
        let raw = RawNode::new(&raft_config, storage, &logger)
            .map_err(|e| ReplicaError::Raft(e.to_string()))?;
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
            new_reads: Vec::new(),
            read_rounds: BTreeMap::new(),
            next_read_round: 1,
            outputs: Vec::new(),
            now: Timestamp(0),
            last_conf_change: 0,
            conf_changes: Vec::new(),
            snapshots_sent: HashMap::new(),
            held: None,
        })
    }

    pub fn id(&self) -> u64 {
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

    pub fn is_leader(&self) -> bool {
        self.raw.raft.state == StateRole::Leader
    }

    pub fn role(&self) -> StateRole {
        self.raw.raft.state
    }

    pub fn term(&self) -> u64 {
        self.raw.raft.term
    }

    /// The leader this node last heard of, if any.
    pub fn leader(&self) -> Option<u64> {
        match self.raw.raft.leader_id {
            0 => None,
            id => Some(id),
        }
    }

    pub fn commit_index(&self) -> u64 {
        self.raw.raft.raft_log.committed
    }

    /// Sets the wall clock the next proposals take their timestamps from. The replica reads no
    /// clock itself, so that a simulation replays exactly.
    pub fn set_now(&mut self, now: Timestamp) {
        self.now = now;
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
        let patience = 4 * self.config.election_tick as u64;
        let ticks = self.ticks;
        let stale: Vec<u64> = self
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
                .get(id)
                .is_some_and(|p| p.state == raft::ProgressState::Snapshot);
            if waiting {
                self.raw.report_snapshot(id, raft::SnapshotStatus::Failure);
            }
        }
    }

    /// Sends messages through the shell, remembering snapshots sent.
    fn send_noting_snapshots(
        snapshots_sent: &mut HashMap<u64, u64>,
        ticks: u64,
        send: &mut impl FnMut(Vec<Message>),
        messages: Vec<Message>,
    ) {
        for m in &messages {
            if m.get_msg_type() == raft::eraftpb::MessageType::MsgSnapshot {
                snapshots_sent.insert(m.to, ticks);
            }
        }
        send(messages);
    }

    pub fn campaign(&mut self) -> Result<(), ReplicaError> {
        if self.held.is_some() {
            return Err(ReplicaError::Stalled);
        }
        self.raw
            .campaign()
            .map_err(|e| ReplicaError::Raft(e.to_string()))
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

    /// Answers a write this node cannot take now (stalled, or not the leader, with the leader's id
    /// so that the shell can forward it); gives the token back when the write may go on.
    fn admit_write(&mut self, token: T) -> Option<T> {
        let error = if self.held.is_some() {
            ReplicaError::Stalled
        } else if !self.is_leader() {
            ReplicaError::NotLeader {
                leader: self.leader(),
            }
        } else {
            return Some(token);
        };
        self.outputs.push(Output::WriteFailed { token, error });
        None
    }

    /// Queues a client write. A leader proposes it at once if it has caught up with its term;
    /// a follower refuses it with the leader's id, so the shell can forward it.
    pub fn write(&mut self, operation: Operation, token: T) {
        let Some(token) = self.admit_write(token) else {
            return;
        };
        self.waiting_writes.push_back((operation, token));
        self.propose_waiting();
    }

    /// Queues a linearizable read; it is answered by [`Output::ReadReady`] once this node has
    /// applied everything committed before it (Raft's ReadIndex).
    pub fn read(&mut self, token: T) {
        if self.held.is_some() {
            self.outputs.push(Output::ReadFailed {
                token,
                error: ReplicaError::Stalled,
            });
            return;
        }
        self.new_reads.push(token);
    }

    /// Proposes a membership change (several changes at once go through joint consensus).
    /// `details` travel with it in the log (e.g. a new member's addresses) and come back, with
    /// `token`, in [`Replica::take_conf_changes`] once it is applied.
    pub fn propose_conf_change(&mut self, change: ConfChangeV2, details: Vec<u8>, token: T) {
        let Some(token) = self.admit_write(token) else {
            return;
        };
        let id = self.next_proposal_id();
        let mut context = proposal_context(self.config.id, id);
        context.extend_from_slice(&details);
        match self.raw.propose_conf_change(context, change) {
            Ok(()) => {
                let index = self.raw.raft.raft_log.last_index();
                self.proposals.insert(id, (index, token));
                self.proposal_index.insert(index, id);
            }
            Err(e) => self.outputs.push(Output::WriteFailed {
                token,
                error: ReplicaError::Raft(e.to_string()),
            }),
        }
    }

    /// A proposal id no entry in the log can carry already: the term in the high bits (a node
    /// proposes in a term only while leading it, and a restarted node must win a new, higher
    /// term before it proposes again), a counter in the low bits. An id reused after a restart
    /// would let an old entry answer a new proposal.
    fn next_proposal_id(&mut self) -> u64 {
        let term = self.raw.raft.term;
        assert!(term < 1 << 24, "term {term} exceeds the proposal id space");
        let counter = self.next_proposal;
        self.next_proposal += 1;
        assert!(counter < 1 << 40, "too many proposals in one term");
        (term << 40) | counter
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
        checkpoint: u64,
        keep: u64,
        data: Vec<u8>,
    ) -> Result<(), crate::storage::StorageError> {
        if checkpoint < self.last_conf_change || checkpoint > self.state.applied_index() {
            return Ok(());
        }
        let Ok(term) = raft::Storage::term(self.raw.store(), checkpoint) else {
            return Ok(());
        };
        let mut snapshot = Snapshot {
            data: data.into(),
            ..Snapshot::default()
        };
        let meta = snapshot.mut_metadata();
        meta.index = checkpoint;
        meta.term = term;
        meta.set_conf_state(self.raw.raft.prs().conf().to_conf_state());
        let store = self.raw.mut_store();
        store.set_snapshot_offer(Some(snapshot));
        let through = checkpoint.saturating_sub(keep);
        if through > raft::Storage::first_index(store).unwrap_or(1) {
            store.compact(through)?;
        }
        Ok(())
    }

    /// Everything the shell must do now. Call after every batch of inputs.
    pub fn take_outputs(&mut self) -> Vec<Output<T>> {
        std::mem::take(&mut self.outputs)
    }

    fn propose_waiting(&mut self) {
        if !self.is_leader() {
            let leader = self.leader();
            for (_, token) in self.waiting_writes.drain(..) {
                self.outputs.push(Output::WriteFailed {
                    token,
                    error: ReplicaError::NotLeader { leader },
                });
            }
            return;
        }
        if !self.leader_ready {
            return;
        }
        while let Some((operation, token)) = self.waiting_writes.pop_front() {
            let events = operation.len();
            let timestamp = Batch::next_timestamp(self.last_proposed, self.now, events);
            let batch = Batch {
                timestamp,
                operation,
            };
            let mut data = Vec::new();
            codec::encode(&batch, &mut data);
            let id = self.next_proposal_id();
            let context = proposal_context(self.config.id, id);
            let before = self.raw.raft.raft_log.last_index();
            match self.raw.propose(context, data) {
                Ok(()) => {
                    let index = self.raw.raft.raft_log.last_index();
                    assert_eq!(index, before + 1, "a proposal appends exactly one entry");
                    self.last_proposed = timestamp;
                    self.proposals.insert(id, (index, token));
                    self.proposal_index.insert(index, id);
                }
                Err(e) => self.outputs.push(Output::WriteFailed {
                    token,
                    error: ReplicaError::Raft(e.to_string()),
                }),
            }
        }
    }

    /// Handles Raft's Ready: sends, applies, persists and syncs in the order Raft requires.
    /// `send` is called with messages as soon as they may leave this node.
    ///
    /// If installing the snapshot or persisting fails, the Ready is kept and the error returned;
    /// the next call resumes that Ready (and takes no new one) until it is persisted: see the
    /// module documentation. Retry at a modest pace while [`Replica::is_stalled`].
    pub fn process_ready(
        &mut self,
        send: &mut impl FnMut(Vec<Message>),
        install: &mut impl FnMut(&mut M, &Snapshot) -> Result<(), String>,
    ) -> Result<(), StorageError> {
        if let Some(held) = self.held.take() {
            return self.handle_ready(held, send, install);
        }
        if !self.new_reads.is_empty() {
            let round = self.next_read_round;
            self.next_read_round += 1;
            let tokens = std::mem::take(&mut self.new_reads);
            self.read_rounds.insert(
                round,
                ReadRound {
                    tokens,
                    issued_at: self.ticks,
                    index: None,
                },
            );
            self.raw.read_index(round.to_le_bytes().to_vec());
        }
        if !self.raw.has_ready() {
            self.answer_reads();
            return Ok(());
        }
        let mut ready = self.raw.ready();
        if let Some(ss) = ready.ss() {
            if ss.raft_state != StateRole::Leader {
                self.leader_ready = false;
                // This node can no longer tell whether its pending proposals will commit (a
                // new leader may still commit them): say so now rather than leave callers
                // waiting. Retrying with the same ids is safe.
                for (_, (_, token)) in self.proposals.drain() {
                    self.outputs.push(Output::WriteFailed {
                        token,
                        error: ReplicaError::Indeterminate,
                    });
                }
                self.proposal_index.clear();
            }
        }
        if !ready.messages().is_empty() {
            Self::send_noting_snapshots(
                &mut self.snapshots_sent,
                self.ticks,
                send,
                ready.take_messages(),
            );
        }
        let held = HeldReady {
            ready,
            stage: Stage::InstallState,
        };
        self.handle_ready(held, send, install)
    }

    /// The rest of a Ready's handling from `held.stage` on; each stage is done once, so that a
    /// Ready held after a failure resumes where it stopped.
    fn handle_ready(
        &mut self,
        mut held: HeldReady,
        send: &mut impl FnMut(Vec<Message>),
        install: &mut impl FnMut(&mut M, &Snapshot) -> Result<(), String>,
    ) -> Result<(), StorageError> {
        if held.stage == Stage::InstallState {
            if !held.ready.snapshot().is_empty() {
                // The shell replaces the state with the leader's checkpoint (at or after the
                // snapshot's index); entries up to the state's applied index are then skipped.
                let snapshot = held.ready.snapshot().clone();
                if let Err(reason) = install(&mut self.state, &snapshot) {
                    let error = StorageError::SnapshotInstall {
                        index: snapshot.get_metadata().index,
                        reason,
                    };
                    return Err(self.hold(held, error));
                }
                assert!(
                    self.state.applied_index() >= snapshot.get_metadata().index,
                    "an installed snapshot covers its index"
                );
            }
            held.stage = Stage::InstallStorage;
        }
        if held.stage == Stage::InstallStorage {
            if !held.ready.snapshot().is_empty() {
                let meta = held.ready.snapshot().get_metadata().clone();
                if let Err(e) = self.raw.mut_store().install_snapshot(&meta) {
                    return Err(self.hold(held, e));
                }
            }
            held.stage = Stage::Apply;
        }
        if held.stage == Stage::Apply {
            for state in held.ready.take_read_states() {
                let round = u64::from_le_bytes(state.request_ctx[..8].try_into().expect("8 bytes"));
                if let Some(r) = self.read_rounds.get_mut(&round) {
                    r.index = Some(state.index);
                }
            }
            let committed = held.ready.take_committed_entries();
            self.apply_entries(committed);
            held.stage = Stage::Persist;
        }
        let store = self.raw.mut_store();
        if !held.ready.entries().is_empty() {
            if let Err(e) = store.append(held.ready.entries()) {
                return Err(self.hold(held, e));
            }
        }
        if let Some(hs) = held.ready.hs() {
            store.set_hard_state(hs);
        }
        if let Err(e) = store.sync() {
            return Err(self.hold(held, e));
        }
        let mut ready = held.ready;
        if !ready.persisted_messages().is_empty() {
            send(ready.take_persisted_messages());
        }
        let mut light = self.raw.advance(ready);
        if let Some(commit) = light.commit_index() {
            let mut hs = self.raw.raft.hard_state();
            hs.commit = commit;
            self.raw.mut_store().set_hard_state(&hs);
        }
        if !light.messages().is_empty() {
            Self::send_noting_snapshots(
                &mut self.snapshots_sent,
                self.ticks,
                send,
                light.take_messages(),
            );
        }
        let committed = light.take_committed_entries();
        self.apply_entries(committed);
        self.raw.advance_apply();
        self.propose_waiting();
        self.answer_reads();
        Ok(())
    }

    /// Keeps a Ready that could not be persisted, and answers what waits on this node: its
    /// proposals may or may not commit under another leader (`Indeterminate`); writes not yet
    /// proposed and reads are refused (`Stalled`: nothing of them was done).
    fn hold(&mut self, held: HeldReady, error: StorageError) -> StorageError {
        self.held = Some(held);
        // Reads whose read index is confirmed and applied are answerable: they do not depend on
        // this node's disk.
        self.answer_reads();
        for (_, (_, token)) in self.proposals.drain() {
            self.outputs.push(Output::WriteFailed {
                token,
                error: ReplicaError::Indeterminate,
            });
        }
        self.proposal_index.clear();
        for (_, token) in self.waiting_writes.drain(..) {
            self.outputs.push(Output::WriteFailed {
                token,
                error: ReplicaError::Stalled,
            });
        }
        let rounds = std::mem::take(&mut self.read_rounds);
        let reads = rounds
            .into_values()
            .flat_map(|r| r.tokens)
            .chain(std::mem::take(&mut self.new_reads));
        for token in reads {
            self.outputs.push(Output::ReadFailed {
                token,
                error: ReplicaError::Stalled,
            });
        }
        error
    }

    fn apply_entries(&mut self, entries: Vec<Entry>) {
        for entry in entries {
            let index = entry.index;
            let is_conf_change = matches!(
                entry.get_entry_type(),
                EntryType::EntryConfChange | EntryType::EntryConfChangeV2
            );
            if index <= self.state.applied_index() && !is_conf_change {
                // Already in the state (it came with an installed snapshot). A membership
                // change still goes on below: Raft's configuration is the snapshot's, older
                // than the state's, and must catch up too.
                continue;
            }
            match entry.get_entry_type() {
                EntryType::EntryNormal if entry.data.is_empty() => {
                    self.state.skip_index(index);
                    if entry.term == self.raw.raft.term && self.is_leader() {
                        // Our own term's first entry is applied: the state holds every committed
                        // entry, so proposals may now take timestamps after it.
                        self.leader_ready = true;
                        self.last_proposed = self.last_proposed.max(self.state.last_timestamp());
                    }
                }
                EntryType::EntryNormal => {
                    let batch = codec::decode(&entry.data).unwrap_or_else(|e| {
                        panic!("committed log entry {index} does not decode: {e}")
                    });
                    let results = self.state.apply_batch(index, &batch);
                    let timestamp = self.state.last_timestamp();
                    self.last_proposed = self.last_proposed.max(timestamp);
                    if let Some((node, id)) = parse_context(&entry.context) {
                        if node == self.config.id {
                            if let Some((_, token)) = self.proposals.remove(&id) {
                                self.proposal_index.remove(&index);
                                self.outputs.push(Output::Written {
                                    token,
                                    written: Written {
                                        results,
                                        index,
                                        timestamp,
                                    },
                                });
                            }
                        }
                    }
                }
                EntryType::EntryConfChange | EntryType::EntryConfChangeV2 => {
                    let change: ConfChangeV2 =
                        if entry.get_entry_type() == EntryType::EntryConfChange {
                            let cc: raft::eraftpb::ConfChange =
                                protobuf::Message::parse_from_bytes(&entry.data)
                                    .expect("committed conf change decodes");
                            raft_proto::ConfChangeI::into_v2(cc)
                        } else {
                            protobuf::Message::parse_from_bytes(&entry.data)
                                .expect("committed conf change decodes")
                        };
                    let applied = self.raw.apply_conf_change(&change);
                    if let Ok(conf_state) = &applied {
                        self.raw.mut_store().set_conf_state(conf_state);
                        if index > self.state.applied_index() {
                            let encoded = protobuf::Message::write_to_bytes(conf_state)
                                .expect("a ConfState encodes");
                            self.state.set_membership(encoded);
                        }
                        let me = self.config.id;
                        let voter = conf_state.voters.contains(&me)
                            || conf_state.voters_outgoing.contains(&me);
                        if self.is_leader() && !voter {
                            // A leader the new configuration demoted or removed must stop
                            // leading at once: it no longer counts toward any quorum, and
                            // serving reads or writes as leader would no longer be safe.
                            let term = self.raw.raft.term;
                            self.raw.raft.become_follower(term, raft::INVALID_ID);
                            self.leader_ready = false;
                        }
                    }
                    self.last_conf_change = index;
                    if index > self.state.applied_index() {
                        self.state.skip_index(index);
                    }
                    let mut token = None;
                    if let Some((node, id)) = parse_context(&entry.context) {
                        if node == self.config.id {
                            if let Some((_, t)) = self.proposals.remove(&id) {
                                self.proposal_index.remove(&index);
                                token = Some(t);
                            }
                        }
                    }
                    self.conf_changes.push(AppliedConfChange {
                        index,
                        conf_state: applied.map_err(|e| e.to_string()),
                        details: entry.context.get(16..).unwrap_or_default().to_vec(),
                        token,
                    });
                }
            }
            // Our proposals at or below this index that were not this entry were replaced.
            let dropped: Vec<u64> = self
                .proposal_index
                .range(..=index)
                .map(|(_, id)| *id)
                .collect();
            for id in dropped {
                if let Some((at, token)) = self.proposals.remove(&id) {
                    self.proposal_index.remove(&at);
                    self.outputs.push(Output::WriteFailed {
                        token,
                        error: ReplicaError::Dropped,
                    });
                }
            }
        }
    }

    fn answer_reads(&mut self) {
        let applied = self.state.applied_index();
        let done: Vec<u64> = self
            .read_rounds
            .iter()
            .filter(|(_, r)| r.index.is_some_and(|i| i <= applied))
            .map(|(round, _)| *round)
            .collect();
        for round in done {
            let r = self.read_rounds.remove(&round).expect("listed above");
            for token in r.tokens {
                self.outputs.push(Output::ReadReady { token });
            }
        }
    }

    fn expire_reads(&mut self) {
        let deadline = self.config.read_timeout_ticks;
        let ticks = self.ticks;
        let expired: Vec<u64> = self
            .read_rounds
            .iter()
            .filter(|(_, r)| r.index.is_none() && ticks - r.issued_at > deadline)
            .map(|(round, _)| *round)
            .collect();
        for round in expired {
            let r = self.read_rounds.remove(&round).expect("listed above");
            for token in r.tokens {
                self.outputs.push(Output::ReadFailed {
                    token,
                    error: ReplicaError::ReadTimeout,
                });
            }
        }
    }
}

fn proposal_context(node: u64, id: u64) -> Vec<u8> {
    let mut context = Vec::with_capacity(16);
    context.extend_from_slice(&node.to_le_bytes());
    context.extend_from_slice(&id.to_le_bytes());
    context
}

/// The proposer and proposal id at the start of an entry's context (a conf change carries
/// details after them).
fn parse_context(context: &[u8]) -> Option<(u64, u64)> {
    let node = u64::from_le_bytes(context.get(..8)?.try_into().ok()?);
    let id = u64::from_le_bytes(context.get(8..16)?.try_into().ok()?);
    Some((node, id))
}

#[cfg(test)]
mod stall_tests {
    //! A replica whose storage cannot sync (a full disk) in a three-node in-memory cluster: it
    //! holds its Ready, takes no part in Raft and refuses requests, the other two go on, and once
    //! the storage syncs again it catches up to the same state.

    use std::cell::Cell;
    use std::rc::Rc;

    use bulwark_ledger::{AccountId, MemoryStateMachine, NewAccount};
    use raft::eraftpb::{ConfState, HardState, SnapshotMetadata};
    use raft::{GetEntriesContext, RaftState};

    use super::*;
    use crate::storage::{MemRaftStorage, StorageError};

    /// In-memory storage whose `sync` fails like a full disk while `full` is set, undoing the
    /// unsynced writes as `DiskRaftStorage` does.
    struct FullableStorage {
        inner: MemRaftStorage,
        full: Rc<Cell<bool>>,
    }

    impl raft::Storage for FullableStorage {
        fn initial_state(&self) -> raft::Result<RaftState> {
            self.inner.initial_state()
        }
        fn entries(
            &self,
            low: u64,
            high: u64,
            max_size: impl Into<Option<u64>>,
            context: GetEntriesContext,
        ) -> raft::Result<Vec<Entry>> {
            self.inner.entries(low, high, max_size, context)
        }
        fn term(&self, idx: u64) -> raft::Result<u64> {
            self.inner.term(idx)
        }
        fn first_index(&self) -> raft::Result<u64> {
            self.inner.first_index()
        }
        fn last_index(&self) -> raft::Result<u64> {
            self.inner.last_index()
        }
        fn snapshot(&self, request_index: u64, to: u64) -> raft::Result<Snapshot> {
            self.inner.snapshot(request_index, to)
        }
    }

    impl RaftStorage for FullableStorage {
        fn append(&mut self, entries: &[Entry]) -> Result<(), StorageError> {
            self.inner.append(entries)
        }
        fn set_hard_state(&mut self, hs: &HardState) {
            self.inner.set_hard_state(hs)
        }
        fn set_conf_state(&mut self, cs: &ConfState) {
            self.inner.set_conf_state(cs)
        }
        fn sync(&mut self) -> Result<(), StorageError> {
            if self.full.get() {
                // Back to the durable state, as a failed sync of the disk storage leaves it.
                self.inner.crash();
                return Err(StorageError::Wal(bulwark_wal::WalError::Io {
                    op: "write",
                    path: "raft/00000000000000000001.wal".into(),
                    source: std::io::Error::from_raw_os_error(28),
                }));
            }
            self.inner.sync()
        }
        fn compact(&mut self, through: u64) -> Result<(), StorageError> {
            self.inner.compact(through)
        }
        fn install_snapshot(&mut self, meta: &SnapshotMetadata) -> Result<(), StorageError> {
            self.inner.install_snapshot(meta)
        }
        fn set_snapshot_offer(&mut self, snapshot: Option<Snapshot>) {
            self.inner.set_snapshot_offer(snapshot)
        }
    }

    type TestReplica = Replica<FullableStorage, MemoryStateMachine, u64>;

    struct Cluster {
        nodes: Vec<TestReplica>,
        full: Vec<Rc<Cell<bool>>>,
        in_flight: Vec<Message>,
        outputs: Vec<(u64, Output<u64>)>,
        clock: u64,
    }

    impl Cluster {
        fn new() -> Cluster {
            let voters = vec![1, 2, 3];
            let conf = ConfState::from((voters.clone(), vec![]));
            let mut nodes = Vec::new();
            let mut full = Vec::new();
            for id in voters {
                let flag = Rc::new(Cell::new(false));
                let mut inner = MemRaftStorage::new();
                inner.set_conf_state(&conf);
                let storage = FullableStorage {
                    inner,
                    full: flag.clone(),
                };
                let mut state = MemoryStateMachine::default();
                state.set_membership(protobuf::Message::write_to_bytes(&conf).unwrap());
                let mut config = ReplicaConfig::new(id);
                // Node 1 times out first, then 2, then 3.
                config.election_tick = 5 + 5 * id as usize;
                config.min_election_tick = config.election_tick;
                config.max_election_tick = config.election_tick + 1;
                nodes.push(Replica::new(config, storage, state).unwrap());
                full.push(flag);
            }
            Cluster {
                nodes,
                full,
                in_flight: Vec::new(),
                outputs: Vec::new(),
                clock: 0,
            }
        }

        fn node(&mut self, id: u64) -> &mut TestReplica {
            &mut self.nodes[(id - 1) as usize]
        }

        fn set_full(&mut self, id: u64, full: bool) {
            self.full[(id - 1) as usize].set(full);
        }

        /// One round: deliver every message in flight, tick everyone, process every Ready.
        fn round(&mut self) {
            self.clock += 1;
            for m in std::mem::take(&mut self.in_flight) {
                let to = m.to;
                self.node(to).step(m);
            }
            for id in 1..=3u64 {
                let now = Timestamp(1_000_000_000 + self.clock * 1_000_000);
                let node = self.node(id);
                node.set_now(now);
                node.tick();
                let mut out = Vec::new();
                for _ in 0..4 {
                    let node = &mut self.nodes[(id - 1) as usize];
                    let result = node
                        .process_ready(&mut |messages| out.extend(messages), &mut |_, _| {
                            Err("no snapshots in this test".into())
                        });
                    match result {
                        Ok(()) => {}
                        Err(e) => {
                            assert!(e.is_disk_full(), "{e}");
                            assert!(node.is_stalled(), "a failed sync holds the Ready");
                            break;
                        }
                    }
                    if !node.raw().has_ready() {
                        break;
                    }
                }
                self.in_flight.extend(out);
                let outputs = self.nodes[(id - 1) as usize].take_outputs();
                self.outputs.extend(outputs.into_iter().map(|o| (id, o)));
            }
        }

        fn rounds(&mut self, n: usize) {
            for _ in 0..n {
                self.round();
            }
        }

        fn leader(&self) -> Option<u64> {
            let leaders: Vec<u64> = self
                .nodes
                .iter()
                .filter(|n| n.is_leader() && !n.is_stalled())
                .map(|n| n.id())
                .collect();
            (leaders.len() == 1).then(|| leaders[0])
        }

        fn write_account(&mut self, via: u64, id: u64) {
            let account = NewAccount {
                id: AccountId(id),
                ledger: 1,
                code: 1,
                ..NewAccount::default()
            };
            self.node(via)
                .write(Operation::CreateAccounts(vec![account]), id);
        }

        /// Takes the outputs for `token` so far.
        fn outcome(&mut self, token: u64) -> Vec<Result<u64, ReplicaError>> {
            let mut found = Vec::new();
            let mut rest = Vec::new();
            for (node, output) in std::mem::take(&mut self.outputs) {
                match output {
                    Output::Written { token: t, written } if t == token => {
                        found.push(Ok(written.index))
                    }
                    Output::WriteFailed { token: t, error } if t == token => found.push(Err(error)),
                    Output::ReadFailed { token: t, error } if t == token => found.push(Err(error)),
                    other => rest.push((node, other)),
                }
            }
            self.outputs = rest;
            found
        }

        fn accounts(&self, id: u64) -> Vec<u64> {
            let state = self.nodes[(id - 1) as usize].state();
            state.store.accounts.keys().map(|a| a.0).collect()
        }

        fn assert_converged(&self) {
            let applied: Vec<u64> = self
                .nodes
                .iter()
                .map(|n| n.state().applied_index())
                .collect();
            assert!(
                applied.iter().all(|a| *a == applied[0]),
                "applied indexes differ: {applied:?}"
            );
            for id in 2..=3 {
                assert_eq!(
                    self.accounts(id),
                    self.accounts(1),
                    "node {id}'s state differs"
                );
            }
        }
    }

    #[test]
    fn a_follower_that_cannot_sync_pauses_refuses_and_catches_up_after() {
        let mut c = Cluster::new();
        c.rounds(60);
        assert_eq!(c.leader(), Some(1));
        c.write_account(1, 100);
        c.rounds(10);
        assert!(matches!(c.outcome(100)[..], [Ok(_)]));

        c.set_full(3, true);
        for id in 1..=20 {
            c.write_account(1, id);
            c.rounds(3);
        }
        c.rounds(10);
        for id in 1..=20 {
            assert!(
                matches!(c.outcome(id)[..], [Ok(_)]),
                "write {id} commits on the other two"
            );
        }
        assert!(c.node(3).is_stalled());
        // A stalled node takes neither writes nor reads, and does not campaign.
        c.node(3).write(
            Operation::CreateAccounts(vec![NewAccount {
                id: AccountId(999),
                ledger: 1,
                code: 1,
                ..NewAccount::default()
            }]),
            999,
        );
        c.node(3).read(998);
        c.rounds(100);
        assert_eq!(c.outcome(999), vec![Err(ReplicaError::Stalled)]);
        assert_eq!(c.outcome(998), vec![Err(ReplicaError::Stalled)]);
        assert_eq!(c.leader(), Some(1));
        assert!(c.node(3).is_stalled());
        assert_eq!(c.node(3).term(), c.node(1).term());

        c.set_full(3, false);
        c.rounds(30);
        assert!(!c.node(3).is_stalled());
        c.assert_converged();
        assert_eq!(c.accounts(3).len(), 21);
        c.node(3).read(997);
        c.rounds(10);
        let read = c
            .outputs
            .iter()
            .any(|(node, o)| *node == 3 && matches!(o, Output::ReadReady { token: 997 }));
        assert!(read, "node 3 serves linearizable reads again");
    }

    #[test]
    fn a_leader_that_cannot_sync_is_replaced_and_rejoins_after() {
        let mut c = Cluster::new();
        c.rounds(60);
        assert_eq!(c.leader(), Some(1));
        for id in 1..=5 {
            c.write_account(1, id);
            c.rounds(3);
        }
        c.rounds(5);
        c.set_full(1, true);
        c.write_account(1, 50);
        c.rounds(2);
        assert!(c.node(1).is_stalled());
        // The proposal may still commit under another leader: its outcome is unknown.
        assert_eq!(c.outcome(50), vec![Err(ReplicaError::Indeterminate)]);
        c.rounds(100);
        let leader = c.leader().expect("a new leader among the other two");
        assert_ne!(leader, 1);
        for id in 10..=20 {
            c.write_account(leader, id);
            c.rounds(3);
        }
        c.rounds(5);
        for id in 10..=20 {
            assert!(matches!(c.outcome(id)[..], [Ok(_)]), "write {id}");
        }
        assert!(c.node(1).is_stalled());
        assert!(c.node(1).state().applied_index() < c.node(leader).state().applied_index());

        c.set_full(1, false);
        c.rounds(60);
        assert!(!c.node(1).is_stalled());
        assert!(!c.node(1).is_leader());
        assert_eq!(c.leader(), Some(leader));
        c.assert_converged();
        let accounts = c.accounts(1);
        for id in (1..=5).chain(10..=20) {
            assert!(accounts.contains(&id), "account {id} on node 1");
        }
    }
}
