//! Committed entries into the state machine, in log order, and the answers they give to this
//! node's proposals.

use bulwark_ledger::{codec, StateMachine, Timestamp};
use raft::eraftpb::{ConfState, Entry, EntryType};

use super::proposals::parse_context;
use super::{AppliedConfChange, ConfChangeRefused, Output, Replica, ReplicaError, Written};
use crate::membership;
use crate::storage::RaftStorage;
use crate::types::LogIndex;

impl<S: RaftStorage, M: StateMachine, T> Replica<S, M, T> {
    pub(super) fn apply_entries(&mut self, entries: &[Entry]) {
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
            let advances = index > self.state.applied_index();
            match entry.get_entry_type() {
                EntryType::EntryNormal if entry.data.is_empty() => self.apply_empty(entry),
                EntryType::EntryNormal => self.apply_batches(entry),
                EntryType::EntryConfChange | EntryType::EntryConfChangeV2 => {
                    self.apply_conf_change(entry)
                }
            }
            if advances {
                self.state.set_applied_term(entry.term);
            }
            self.drop_replaced(LogIndex(index));
        }
    }

    fn apply_empty(&mut self, entry: &Entry) {
        self.state.skip_index(entry.index);
        if entry.term == self.raw.raft.term && self.is_leader() {
            // Our own term's first entry is applied: the state holds every committed entry, so
            // proposals may now take timestamps after it.
            self.leader_ready = true;
            self.last_proposed = self.last_proposed.max(self.state.last_timestamp());
        }
    }

    /// A batch or a group of batches, applied one after another at the entry's index.
    fn apply_batches(&mut self, entry: &Entry) {
        let index = entry.index;
        let batches = codec::decode_entry(&entry.data)
            .unwrap_or_else(|e| panic!("committed log entry {index} does not decode: {e}"));
        let applied = crate::replay::apply_batches(&mut self.state, index, &batches);
        let (results, stamps): (Vec<_>, Vec<Timestamp>) = applied.into_iter().unzip();
        let last = self.state.last_timestamp();
        self.last_proposed = self.last_proposed.max(last);
        let Some(proposal) = self.own_proposal(entry) else {
            return;
        };
        // The entry is the one we proposed (same node, same id): its batches are our writes
        // in order, and each write gets its own batch's results and nothing else's.
        assert_eq!(
            proposal.len(),
            batches.len(),
            "entry {index} holds our proposal"
        );
        // The durability boundary: a write is answered only from an entry this node holds
        // durably (the leader's own persistence counts toward every commit).
        // (Entries applied during their own flush are checked when their answers are released.)
        let durable = self.raw.store().durable_last_index();
        assert!(
            self.answers_held || LogIndex(index) <= durable,
            "entry {index} answers writes but the durable log ends at {durable}"
        );
        for ((token, results), timestamp) in proposal.into_iter().zip(results).zip(stamps) {
            self.outputs.push(Output::Written {
                token,
                written: Written {
                    results,
                    index: LogIndex(index),
                    timestamp,
                },
            });
        }
    }

    /// The tokens of our proposal this entry carries, if it carries one.
    fn own_proposal(&mut self, entry: &Entry) -> Option<Vec<T>> {
        let (node, id) = parse_context(&entry.context)?;
        if node != self.config.id {
            return None;
        }
        let proposal = self.proposals.remove(&id)?;
        self.proposal_index.remove(&proposal.index);
        Some(proposal.tokens)
    }

    fn apply_conf_change(&mut self, entry: &Entry) {
        let index = entry.index;
        let change =
            crate::replay::decode_conf_change(entry).expect("committed conf change decodes");
        let applied = self.raw.apply_conf_change(&change);
        if let Ok(conf_state) = &applied {
            self.adopt_conf_state(index, conf_state);
        }
        self.last_conf_change = LogIndex(index);
        let (_, details) = membership::split_actor(entry.context.get(16..).unwrap_or_default());
        if index > self.state.applied_index() {
            self.state.skip_index(index);
            let record = crate::replay::conf_change_audit(
                index,
                self.state.last_timestamp(),
                entry,
                &change,
                applied.as_ref().err(),
            );
            self.state.record_audit(record);
        }
        let token = self.own_proposal(entry).and_then(|t| t.into_iter().next());
        self.conf_changes.push(AppliedConfChange {
            index: LogIndex(index),
            conf_state: applied.map_err(ConfChangeRefused),
            details: details.to_vec(),
            token,
        });
    }

    fn adopt_conf_state(&mut self, index: u64, conf_state: &ConfState) {
        self.raw.mut_store().set_conf_state(conf_state);
        if index > self.state.applied_index() {
            let encoded =
                protobuf::Message::write_to_bytes(conf_state).expect("a ConfState encodes");
            self.state.set_membership(encoded);
        }
        let me = self.config.id.0;
        let voter = conf_state.voters.contains(&me) || conf_state.voters_outgoing.contains(&me);
        if self.is_leader() && !voter {
            // A leader the new configuration demoted or removed must stop leading at once: it
            // no longer counts toward any quorum, and serving reads or writes as leader would no
            // longer be safe.
            let term = self.raw.raft.term;
            self.raw.raft.become_follower(term, raft::INVALID_ID);
            self.leader_ready = false;
        }
    }

    /// Our proposals at or below `index` that were not applied by now were replaced.
    fn drop_replaced(&mut self, index: LogIndex) {
        let dropped: Vec<u64> = self
            .proposal_index
            .range(..=index)
            .map(|(_, id)| *id)
            .collect();
        for id in dropped {
            if let Some(proposal) = self.proposals.remove(&id) {
                self.proposal_index.remove(&proposal.index);
                for token in proposal.tokens {
                    self.outputs.push(Output::WriteFailed {
                        token,
                        error: ReplicaError::Dropped,
                    });
                }
            }
        }
    }
}
