//! A replica: one node's Raft (raft-rs `RawNode`) and its ledger state machine, with no IO.
//!
//! The shell around it (the real node loop, or the simulation) feeds it ticks, peer messages,
//! client writes and reads, then calls [`Replica::process_ready`] and carries out what comes back:
//! messages to send and answers to give. The order inside `process_ready` is Raft's: messages a
//! leader may send before persisting go out first; committed entries are applied; new entries and
//! the hard state are written and synced; only then go the messages that depend on them.

use std::collections::{BTreeMap, HashMap, VecDeque};

use bulwark_ledger::{codec, Batch, BatchResults, Operation, StateMachine, Timestamp};
use raft::eraftpb::{ConfChangeV2, ConfState, Entry, EntryType, Message, Snapshot};
use raft::{RawNode, StateRole};

use crate::storage::RaftStorage;

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

    pub fn tick(&mut self) {
        self.ticks += 1;
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
        self.raw
            .campaign()
            .map_err(|e| ReplicaError::Raft(e.to_string()))
    }

    pub fn step(&mut self, message: Message) {
        // Messages from unknown or removed peers, or stale terms, are refused by raft; that is
        // the protocol working, not an error of this node.
        let _ = self.raw.step(message);
    }

    /// Queues a client write. A leader proposes it at once if it has caught up with its term;
    /// a follower refuses it with the leader's id, so the shell can forward it.
    pub fn write(&mut self, operation: Operation, token: T) {
        if !self.is_leader() {
            let leader = self.leader();
            self.outputs.push(Output::WriteFailed {
                token,
                error: ReplicaError::NotLeader { leader },
            });
            return;
        }
        self.waiting_writes.push_back((operation, token));
        self.propose_waiting();
    }

    /// Queues a linearizable read; it is answered by [`Output::ReadReady`] once this node has
    /// applied everything committed before it (Raft's ReadIndex).
    pub fn read(&mut self, token: T) {
        self.new_reads.push(token);
    }

    /// Proposes a membership change (several changes at once go through joint consensus).
    /// `details` travel with it in the log (e.g. a new member's addresses) and come back, with
    /// `token`, in [`Replica::take_conf_changes`] once it is applied.
    pub fn propose_conf_change(&mut self, change: ConfChangeV2, details: Vec<u8>, token: T) {
        if !self.is_leader() {
            let leader = self.leader();
            self.outputs.push(Output::WriteFailed {
                token,
                error: ReplicaError::NotLeader { leader },
            });
            return;
        }
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
    pub fn process_ready(
        &mut self,
        send: &mut impl FnMut(Vec<Message>),
        install: &mut impl FnMut(&mut M, &Snapshot) -> Result<(), String>,
    ) -> Result<(), crate::storage::StorageError> {
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
        if !ready.snapshot().is_empty() {
            // The shell replaces the state with the leader's checkpoint (at or after the
            // snapshot's index); entries up to the state's applied index are then skipped.
            let snapshot = ready.snapshot().clone();
            install(&mut self.state, &snapshot).map_err(|reason| {
                crate::storage::StorageError::SnapshotInstall {
                    index: snapshot.get_metadata().index,
                    reason,
                }
            })?;
            assert!(
                self.state.applied_index() >= snapshot.get_metadata().index,
                "an installed snapshot covers its index"
            );
            self.raw
                .mut_store()
                .install_snapshot(snapshot.get_metadata())?;
        }
        for state in ready.take_read_states() {
            let round = u64::from_le_bytes(state.request_ctx[..8].try_into().expect("8 bytes"));
            if let Some(r) = self.read_rounds.get_mut(&round) {
                r.index = Some(state.index);
            }
        }
        let committed = ready.take_committed_entries();
        self.apply_entries(committed);
        let store = self.raw.mut_store();
        if !ready.entries().is_empty() {
            store.append(ready.entries())?;
        }
        if let Some(hs) = ready.hs() {
            store.set_hard_state(hs);
        }
        store.sync()?;
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
