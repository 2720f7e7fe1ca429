//! Linearizable reads by Raft's ReadIndex.
//!
//! Reads that arrive together share a round; a round asks Raft for a read index once, and is
//! answered when this node has applied up to it. Three things raft-rs leaves to us:
//!
//! - **Whose answer.** raft-rs matches answers to requests only by the opaque context: a
//!   leader drops a request whose context equals one it has pending, and a follower takes any
//!   answer it receives as a read state. So a context names its round uniquely in the cluster
//!   and across restarts: node id, the boot nonce, a counter ([`ReadContext`]); a read state
//!   whose context is not ours (another node's, an earlier boot's) is ignored.
//! - **Waiting through elections.** raft-rs drops a ReadIndex at a follower without a leader
//!   and at a leader that has not yet committed an entry of its term, silently. A round is
//!   therefore sent only when it can be taken (a leader known; as leader, its term committed)
//!   and sent again every [`READ_RETRY_TICKS`] until an index comes back, so that a read that
//!   arrives during an election is served by the next leader.
//! - **Deadlines.** Every read is refused with `ReadTimeout` once `read_timeout_ticks` have
//!   passed since it arrived, whether its index is still unknown or known but not yet applied
//!   (a follower cut off from the entries).

use bulwark_ledger::StateMachine;
use bulwark_limits::READ_RETRY_TICKS;

use super::{Output, Replica, ReplicaError};
use crate::storage::RaftStorage;
use crate::types::{LogIndex, NodeId};

/// The context of a ReadIndex request: unique to one round of one boot of one node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct ReadContext {
    pub(super) node: NodeId,
    pub(super) nonce: u64,
    pub(super) round: u64,
}

impl ReadContext {
    const LEN: usize = 24;

    pub(super) fn encode(self) -> Vec<u8> {
        let mut out = Vec::with_capacity(Self::LEN);
        for v in [self.node.0, self.nonce, self.round] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out
    }

    pub(super) fn decode(bytes: &[u8]) -> Option<ReadContext> {
        if bytes.len() != Self::LEN {
            return None;
        }
        let at = |i: usize| u64::from_le_bytes(bytes[i..i + 8].try_into().expect("8 bytes"));
        Some(ReadContext {
            node: NodeId(at(0)),
            nonce: at(8),
            round: at(16),
        })
    }
}

/// One read-index round: the reads that share one Raft read index, each with the tick it
/// arrived at (its deadline runs from there).
pub(super) struct ReadRound<T> {
    tokens: Vec<(T, u64)>,
    /// The tick the round was last sent to Raft; `None` while it waits for a leader.
    sent_at: Option<u64>,
    index: Option<LogIndex>,
}

impl<S: RaftStorage, M: StateMachine, T> Replica<S, M, T> {
    /// Queues a linearizable read; it is answered by [`Output::ReadReady`] once this node has
    /// applied everything committed before it (Raft's ReadIndex), or refused by
    /// [`ReplicaError::ReadTimeout`] after `read_timeout_ticks`.
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

    fn read_context(&self, round: u64) -> ReadContext {
        ReadContext {
            node: self.config.id,
            nonce: self.config.boot_nonce,
            round,
        }
    }

    /// Puts the reads that arrived since the last call into a round. They may join the newest
    /// round if it was never sent: its index will come from a request made after they arrived.
    pub(super) fn start_read_round(&mut self) {
        if self.new_reads.is_empty() {
            return;
        }
        let ticks = self.ticks;
        let arrived = std::mem::take(&mut self.new_reads)
            .into_iter()
            .map(|token| (token, ticks));
        if let Some((_, newest)) = self.read_rounds.iter_mut().next_back() {
            if newest.sent_at.is_none() {
                newest.tokens.extend(arrived);
                return;
            }
        }
        let round = self.next_read_round;
        self.next_read_round += 1;
        self.read_rounds.insert(
            round,
            ReadRound {
                tokens: arrived.collect(),
                sent_at: None,
                index: None,
            },
        );
    }

    /// Whether Raft would take a ReadIndex now rather than drop it.
    fn read_index_possible(&self) -> bool {
        if self.is_leader() {
            self.raw.raft.commit_to_current_term()
        } else {
            self.leader().is_some()
        }
    }

    /// Sends the rounds without an index that were never sent or not answered in time.
    pub(super) fn send_read_rounds(&mut self) {
        if !self.read_index_possible() {
            return;
        }
        let ticks = self.ticks;
        let due: Vec<u64> = self
            .read_rounds
            .iter()
            .filter(|(_, r)| r.index.is_none())
            .filter(|(_, r)| r.sent_at.is_none_or(|at| ticks - at >= READ_RETRY_TICKS))
            .map(|(round, _)| *round)
            .collect();
        for round in due {
            let context = self.read_context(round).encode();
            self.raw.read_index(context);
            self.read_rounds
                .get_mut(&round)
                .expect("listed above")
                .sent_at = Some(ticks);
        }
    }

    /// Takes a read state from Raft: the index of one of our rounds, or nothing of ours.
    pub(super) fn take_read_state(&mut self, state: &raft::ReadState) {
        let Some(context) = ReadContext::decode(&state.request_ctx) else {
            return;
        };
        if context != self.read_context(context.round) {
            return;
        }
        if let Some(r) = self.read_rounds.get_mut(&context.round) {
            // A round sent twice may be answered twice; either index serves it.
            r.index.get_or_insert(LogIndex(state.index));
        }
    }

    pub(super) fn answer_reads(&mut self) {
        let applied = LogIndex(self.state.applied_index());
        let done: Vec<u64> = self
            .read_rounds
            .iter()
            .filter(|(_, r)| r.index.is_some_and(|i| i <= applied))
            .map(|(round, _)| *round)
            .collect();
        for round in done {
            let r = self.read_rounds.remove(&round).expect("listed above");
            for (token, _) in r.tokens {
                self.outputs.push(Output::ReadReady { token, applied });
            }
        }
    }

    /// Refuses every read that arrived more than `read_timeout_ticks` ago, index known or not.
    pub(super) fn expire_reads(&mut self) {
        let deadline = self.config.read_timeout_ticks;
        let ticks = self.ticks;
        let mut expired = Vec::new();
        for r in self.read_rounds.values_mut() {
            let (late, on_time): (Vec<_>, Vec<_>) = std::mem::take(&mut r.tokens)
                .into_iter()
                .partition(|(_, arrived)| ticks - arrived > deadline);
            r.tokens = on_time;
            expired.extend(late.into_iter().map(|(token, _)| token));
        }
        self.read_rounds.retain(|_, r| !r.tokens.is_empty());
        for token in expired {
            self.outputs.push(Output::ReadFailed {
                token,
                error: ReplicaError::ReadTimeout,
            });
        }
    }

    /// Refuses every read waiting on this node with `error`.
    pub(super) fn fail_reads(&mut self, error: ReplicaError) {
        let rounds = std::mem::take(&mut self.read_rounds);
        let reads = rounds
            .into_values()
            .flat_map(|r| r.tokens.into_iter().map(|(token, _)| token))
            .chain(std::mem::take(&mut self.new_reads));
        for token in reads {
            self.outputs.push(Output::ReadFailed {
                token,
                error: error.clone(),
            });
        }
    }
}
