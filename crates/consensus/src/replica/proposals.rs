//! Client writes and membership changes into the Raft log.
//!
//! Writes wait at the leader until the next `process_ready`, which proposes everything waiting
//! as few entries as the group bounds allow: one Raft entry per round instead of one per
//! request is what lets one-transfer requests from many clients share the cost of an entry
//! (its message, its log record, its apply). A group is a list of batches, each with its own
//! timestamp, applied one after another at the entry's index (`ledger::codec::encode_entry`).

use bulwark_ledger::{codec, Batch, Operation, StateMachine};
use bulwark_limits::{MAX_GROUP_BYTES, MAX_GROUP_EVENTS, WRITE_LEADERLESS_TICKS};
use raft::eraftpb::{ConfChangeSingle, ConfChangeTransition, ConfChangeType, ConfChangeV2};

use super::{Output, Replica, ReplicaError};
use crate::storage::RaftStorage;
use crate::types::{LogIndex, NodeId};

/// A proposal of this node waiting for its entry to apply: the index Raft gave it and the
/// tokens it answers, one per batch of the entry in order (one for a membership change).
pub(super) struct Proposal<T> {
    pub(super) index: LogIndex,
    pub(super) tokens: Vec<T>,
}

/// A membership change of these single steps, left automatically once applied (several at once
/// go through joint consensus).
pub fn conf_change(steps: &[(ConfChangeType, NodeId)]) -> ConfChangeV2 {
    let mut cc = ConfChangeV2::default();
    cc.set_transition(ConfChangeTransition::Auto);
    for (kind, id) in steps {
        let mut single = ConfChangeSingle::default();
        single.set_change_type(*kind);
        single.node_id = id.0;
        cc.mut_changes().push(single);
    }
    cc
}

impl<S: RaftStorage, M: StateMachine, T> Replica<S, M, T> {
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

    /// Queues a client write; the next `process_ready` proposes it with the others waiting (a
    /// leader that has not yet applied an entry of its term keeps it until it has). A follower
    /// refuses it with the leader's id, so the shell can forward it. A node that knows no leader
    /// (an election under way, a leader handing over) keeps it like the writes of a leader that
    /// stepped down, until a leader is known (`propose_waiting`): refused at once, a write that
    /// reached a follower in the moment between a handover and the new leader's first message
    /// failed (1 run in 18 of `a_rolling_restart_fails_no_write_on_its_first_try`).
    pub fn write(&mut self, operation: Operation, token: T) {
        assert!(!operation.is_empty(), "a write holds at least one event");
        if self.held.is_none() && !self.is_leader() && self.leader().is_none() {
            self.waiting_writes.push_back((operation, token));
            return;
        }
        let Some(token) = self.admit_write(token) else {
            return;
        };
        self.waiting_writes.push_back((operation, token));
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
                let index = LogIndex(self.raw.raft.raft_log.last_index());
                self.track(id, index, vec![token]);
            }
            Err(e) => self.outputs.push(Output::WriteFailed {
                token,
                error: ReplicaError::Raft(e.to_string()),
            }),
        }
    }

    fn track(&mut self, id: u64, index: LogIndex, tokens: Vec<T>) {
        self.proposals.insert(id, Proposal { index, tokens });
        self.proposal_index.insert(index, id);
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

    /// Proposes the waiting writes, grouped; refuses them if this node no longer leads. They
    /// wait while this leader hands leadership over (Raft would drop them; the transfer ends
    /// within an election timeout either way) and, once it stepped down (or on a node that knew
    /// no leader when they came), up to [`WRITE_LEADERLESS_TICKS`] until a leader is known: the
    /// shell forwards them there instead of refusing them. They also wait while the state is
    /// backlogged (its memtable at its cap while a checkpoint runs), so that a load faster than
    /// checkpoints is slowed down to their pace instead of growing the node's memory without
    /// bound.
    pub(super) fn propose_waiting(&mut self) {
        if !self.is_leader() {
            let leader = self.leader();
            if leader.is_none() && !self.waiting_writes.is_empty() {
                let since = *self.leaderless_since.get_or_insert(self.ticks);
                if self.ticks - since < WRITE_LEADERLESS_TICKS {
                    return;
                }
            }
            self.leaderless_since = None;
            for (_, token) in self.waiting_writes.drain(..) {
                self.outputs.push(Output::WriteFailed {
                    token,
                    error: ReplicaError::NotLeader { leader },
                });
            }
            self.expiry_proposed = None;
            return;
        }
        self.leaderless_since = None;
        if !self.leader_ready || self.raw.raft.lead_transferee.is_some() {
            return;
        }
        if self.state.is_backlogged() {
            self.propose_due_expiry();
            return;
        }
        while !self.waiting_writes.is_empty() {
            let group = self.take_group();
            self.propose_group(group);
        }
        self.propose_due_expiry();
    }

    /// Proposes an `ExpirePending` batch once the proposer's clock has passed the earliest
    /// deadline of a pending transfer, so that an idle ledger releases the reservation on time
    /// (any batch would expire it, but none may come). Deterministic on every replica: the
    /// expiry happens where the batch lands in the log, at its timestamp.
    fn propose_due_expiry(&mut self) {
        let applied = LogIndex(self.state.applied_index());
        if self.expiry_proposed.is_some_and(|index| index > applied) {
            return;
        }
        self.expiry_proposed = None;
        let now = self.proposal_time();
        if self.state.next_expiry().is_none_or(|at| at > now) {
            return;
        }
        let batch = Batch {
            timestamp: Batch::next_timestamp(self.last_proposed, now, 1),
            operation: Operation::ExpirePending,
        };
        let mut data = Vec::new();
        codec::encode_entry(std::slice::from_ref(&batch), &mut data);
        // An id of its own so that no client proposal is matched to it; untracked, since no
        // client waits for it.
        let context = proposal_context(self.config.id, self.next_proposal_id());
        if self.raw.propose(context, data).is_ok() {
            self.last_proposed = batch.timestamp;
            self.expiry_proposed = Some(LogIndex(self.raw.raft.raft_log.last_index()));
        }
    }

    /// The longest run of waiting writes within the group bounds (at least one write: a batch
    /// beyond them on its own is as large as a batch may be).
    fn take_group(&mut self) -> Vec<(Operation, T)> {
        let (mut events, mut lens) = (0, Vec::new());
        let mut take = 0;
        for (operation, _) in &self.waiting_writes {
            let len = codec::encoded_len(operation);
            let fits = events + operation.len() <= MAX_GROUP_EVENTS
                && codec::group_len(lens.iter().copied().chain([len])) <= MAX_GROUP_BYTES;
            if take > 0 && !fits {
                break;
            }
            events += operation.len();
            lens.push(len);
            take += 1;
        }
        self.waiting_writes.drain(..take).collect()
    }

    /// Proposes one entry holding `group`'s batches, each stamped after the one before it.
    fn propose_group(&mut self, group: Vec<(Operation, T)>) {
        let now = self.proposal_time();
        let mut last = self.last_proposed;
        let mut batches = Vec::with_capacity(group.len());
        let mut tokens = Vec::with_capacity(group.len());
        for (operation, token) in group {
            let timestamp = Batch::next_timestamp(last, now, operation.len());
            last = timestamp;
            batches.push(Batch {
                timestamp,
                operation,
            });
            tokens.push(token);
        }
        let mut data = Vec::new();
        codec::encode_entry(&batches, &mut data);
        let id = self.next_proposal_id();
        let context = proposal_context(self.config.id, id);
        let before = LogIndex(self.raw.raft.raft_log.last_index());
        match self.raw.propose(context, data) {
            Ok(()) => {
                let index = LogIndex(self.raw.raft.raft_log.last_index());
                assert_eq!(index, before.next(), "a proposal appends exactly one entry");
                self.last_proposed = last;
                self.track(id, index, tokens);
            }
            Err(e) => {
                for token in tokens {
                    self.outputs.push(Output::WriteFailed {
                        token,
                        error: ReplicaError::Raft(e.to_string()),
                    });
                }
            }
        }
    }

    /// Answers every proposal of this node `error`: it can no longer tell their fate.
    pub(super) fn fail_proposals(&mut self, error: ReplicaError) {
        for (_, proposal) in self.proposals.drain() {
            for token in proposal.tokens {
                self.outputs.push(Output::WriteFailed {
                    token,
                    error: error.clone(),
                });
            }
        }
        self.proposal_index.clear();
    }
}

pub(super) fn proposal_context(node: NodeId, id: u64) -> Vec<u8> {
    let mut context = Vec::with_capacity(16);
    context.extend_from_slice(&node.0.to_le_bytes());
    context.extend_from_slice(&id.to_le_bytes());
    context
}

/// The proposer and proposal id at the start of an entry's context (a conf change carries
/// details after them).
pub(super) fn parse_context(context: &[u8]) -> Option<(NodeId, u64)> {
    let node = u64::from_le_bytes(context.get(..8)?.try_into().ok()?);
    let id = u64::from_le_bytes(context.get(8..16)?.try_into().ok()?);
    Some((NodeId(node), id))
}
