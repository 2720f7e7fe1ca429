//! Committed entries into the state machine, in log order, and the answers they give to this
//! node's proposals.

use bulwark_ledger::access::{Actor, AuditEvent, AuditRecord, ControlResult};
use bulwark_ledger::{codec, effective_timestamp, StateMachine, Timestamp};
use raft::eraftpb::{ConfChangeV2, ConfState, Entry, EntryType};

use super::proposals::parse_context;
use super::{AppliedConfChange, ConfChangeRefused, Output, Replica, ReplicaError, Written};
use crate::membership;
use crate::storage::RaftStorage;
use crate::types::LogIndex;

impl<S: RaftStorage, M: StateMachine, T> Replica<S, M, T> {
    pub(super) fn apply_entries(&mut self, entries: Vec<Entry>) {
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
                EntryType::EntryNormal if entry.data.is_empty() => self.apply_empty(&entry),
                EntryType::EntryNormal => self.apply_batches(&entry),
                EntryType::EntryConfChange | EntryType::EntryConfChangeV2 => {
                    self.apply_conf_change(&entry)
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
        let before = self.state.last_timestamp();
        let applied = match &batches[..] {
            [one] => {
                let results = self.state.apply_batch(index, one);
                vec![(results, self.state.last_timestamp())]
            }
            many => self.state.apply_group(index, many),
        };
        assert_eq!(applied.len(), batches.len(), "one result list per batch");
        let (results, stamps): (Vec<_>, Vec<Timestamp>) = applied.into_iter().unzip();
        // Each batch's last event comes after everything before it (the proposer's stamp, moved
        // up past the state's last one and past the expiries due at its start); an imported
        // batch moves the ledger's time only to its newest event, if it moves it at all.
        let mut previous = before;
        for (batch, stamp) in batches.iter().zip(&stamps) {
            let floor = if batch.is_imported() {
                previous
            } else {
                effective_timestamp(previous, batch)
            };
            assert!(
                *stamp >= floor,
                "entry {index}: a batch stamped {stamp:?} before its place in the log"
            );
            previous = *stamp;
        }
        let last = self.state.last_timestamp();
        assert_eq!(last, previous, "the state ends at the entry's last stamp");
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
        let durable = self.raw.store().durable_last_index();
        assert!(
            LogIndex(index) <= durable,
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
        let change: ConfChangeV2 = if entry.get_entry_type() == EntryType::EntryConfChange {
            let cc: raft::eraftpb::ConfChange = protobuf::Message::parse_from_bytes(&entry.data)
                .expect("committed conf change decodes");
            raft_proto::ConfChangeI::into_v2(cc)
        } else {
            protobuf::Message::parse_from_bytes(&entry.data).expect("committed conf change decodes")
        };
        let applied = self.raw.apply_conf_change(&change);
        if let Ok(conf_state) = &applied {
            self.adopt_conf_state(index, conf_state);
        }
        self.last_conf_change = LogIndex(index);
        let (actor, details) = membership::split_actor(entry.context.get(16..).unwrap_or_default());
        if index > self.state.applied_index() {
            self.state.skip_index(index);
            self.audit_conf_change(index, &change, actor, details, applied.as_ref().err());
        }
        let token = self.own_proposal(entry).and_then(|t| t.into_iter().next());
        self.conf_changes.push(AppliedConfChange {
            index: LogIndex(index),
            conf_state: applied.map_err(ConfChangeRefused),
            details: details.to_vec(),
            token,
        });
    }

    /// Every membership change goes into the replicated audit trail, at its own index: who
    /// asked (when the proposer said), what changed, and whether Raft took it.
    fn audit_conf_change(
        &mut self,
        index: u64,
        change: &ConfChangeV2,
        actor: Option<Actor>,
        details: &[u8],
        refused: Option<&raft::Error>,
    ) {
        let mut text = membership::describe_change(change, details);
        if let Some(e) = refused {
            text.push_str(&format!("; refused: {e}"));
        }
        self.state.record_audit(AuditRecord {
            timestamp: self.state.last_timestamp(),
            index,
            actor,
            event: AuditEvent::Membership { details: text },
            result: ControlResult::Ok,
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
