//! Membership decisions, with no IO: which operator changes are refused and why, the Raft change
//! an accepted one becomes, and which members the address book keeps once a configuration is
//! applied. The node loop (`node/src/cluster/membership.rs`) and the simulation both decide here,
//! so that what the simulation checks is what a node does.

use std::collections::BTreeSet;

use raft::eraftpb::{ConfChangeType, ConfChangeV2, ConfState};

use crate::types::NodeId;
use bulwark_ledger::access::Actor;

/// A change of membership an operator asks for, by node id (the node carries a new member's
/// addresses beside it, as the change's details).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MembershipRequest {
    /// Add a node as a learner: it receives the log but does not vote.
    AddLearner(NodeId),
    /// Make learners voters (several at once go through joint consensus).
    Promote(Vec<NodeId>),
    /// Remove members (voters or learners).
    Remove(Vec<NodeId>),
}

/// A number of voters a configuration must not have.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum VoterCountError {
    #[error(
        "{voters} voters: a cluster needs an odd number of voters (1, 3, 5 or 7), or a split can \
         leave no majority"
    )]
    NotOdd { voters: usize },
    #[error(
        "{voters} voters: at most 7 are allowed; every write waits for a majority, so more \
         voters only add latency"
    )]
    TooMany { voters: usize },
}

/// A configuration must have an odd number of voters, at most 7.
pub fn check_voter_count(voters: usize) -> Result<(), VoterCountError> {
    if voters == 0 || voters.is_multiple_of(2) {
        return Err(VoterCountError::NotOdd { voters });
    }
    if voters > 7 {
        return Err(VoterCountError::TooMany { voters });
    }
    Ok(())
}

/// Why an operator's membership change is refused. Its `Display` is what the API answers with
/// (409 `membership_refused`) and what the tests and docs/operations.md quote: the words must not
/// change.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// raft-rs would silently turn a change proposed before the previous one is left into an
    /// empty entry (answered `write_dropped` once it commits): refused at once instead.
    #[error(
        "a membership change is still being completed (its joint configuration is being left); \
         try again in a moment"
    )]
    JointInProgress,
    #[error("node {0} is already a member")]
    AlreadyMember(NodeId),
    #[error("node id 0 is reserved")]
    ReservedId,
    #[error("node {0} is not a learner; add it as one first")]
    NotALearner(NodeId),
    #[error("node {0} is not a member")]
    NotAMember(NodeId),
    #[error("promoting {} would leave {count}", plain(.ids))]
    PromoteLeaves {
        ids: Vec<NodeId>,
        count: VoterCountError,
    },
    #[error("removing {} would leave {count}", plain(.ids))]
    RemoveLeaves {
        ids: Vec<NodeId>,
        count: VoterCountError,
    },
    /// An empty promotion or removal is Raft's request to leave a joint configuration.
    #[error("no node ids given")]
    NoIds,
    #[error("node {0} is named more than once")]
    NamedTwice(NodeId),
}

/// The Raft change that carries out `request` on the configuration `conf` (the leader's), or why
/// it is refused.
pub fn plan_change(conf: &ConfState, request: &MembershipRequest) -> Result<ConfChangeV2, Refusal> {
    if !conf.voters_outgoing.is_empty() {
        return Err(Refusal::JointInProgress);
    }
    let is_voter = |id: &NodeId| conf.voters.contains(&id.0);
    let is_learner = |id: &NodeId| conf.learners.contains(&id.0);
    check_ids(request)?;
    let steps = match request {
        MembershipRequest::AddLearner(id) if is_voter(id) || is_learner(id) => {
            return Err(Refusal::AlreadyMember(*id))
        }
        MembershipRequest::AddLearner(NodeId(0)) => return Err(Refusal::ReservedId),
        MembershipRequest::AddLearner(id) => vec![(ConfChangeType::AddLearnerNode, *id)],
        MembershipRequest::Promote(ids) => {
            if let Some(id) = ids.iter().find(|id| !is_learner(id)) {
                return Err(Refusal::NotALearner(*id));
            }
            check_voter_count(conf.voters.len() + ids.len()).map_err(|count| {
                Refusal::PromoteLeaves {
                    ids: ids.clone(),
                    count,
                }
            })?;
            ids.iter()
                .map(|id| (ConfChangeType::AddNode, *id))
                .collect()
        }
        MembershipRequest::Remove(ids) => {
            let voters_left = conf
                .voters
                .iter()
                .filter(|v| !ids.contains(&NodeId(**v)))
                .count();
            if let Some(id) = ids.iter().find(|id| !is_voter(id) && !is_learner(id)) {
                return Err(Refusal::NotAMember(*id));
            }
            check_voter_count(voters_left).map_err(|count| Refusal::RemoveLeaves {
                ids: ids.clone(),
                count,
            })?;
            ids.iter()
                .map(|id| (ConfChangeType::RemoveNode, *id))
                .collect()
        }
    };
    Ok(crate::replica::conf_change(&steps))
}

/// A promotion or removal names each node once, and at least one: the voter count is checked
/// per id named, so a node named twice would let `[4, 4]` make an even number of voters (found by
/// the simulation), and an empty change is Raft's request to leave a joint configuration.
fn check_ids(request: &MembershipRequest) -> Result<(), Refusal> {
    let ids = match request {
        MembershipRequest::AddLearner(_) => return Ok(()),
        MembershipRequest::Promote(ids) | MembershipRequest::Remove(ids) => ids,
    };
    if ids.is_empty() {
        return Err(Refusal::NoIds);
    }
    if let Some((_, id)) = ids
        .iter()
        .enumerate()
        .find(|(i, id)| ids[..*i].contains(id))
    {
        return Err(Refusal::NamedTwice(*id));
    }
    Ok(())
}

/// Operator changes waiting for their answer. A change made by joint consensus (several voters
/// promoted or removed at once) is answered only once the joint configuration is left (the
/// automatic next change): only then does the new majority alone decide, so only then is the
/// change done.
///
/// A node may not apply that next change itself: a snapshot can cover it. Raft refuses every
/// change while a configuration is joint, so any configuration applied after the joint one, or
/// a snapshot's configuration that is not joint, shows the change done.
#[derive(Debug)]
pub struct JointReplies<R> {
    /// Waiting for the joint configuration they entered to be left.
    waiting: Vec<R>,
    /// Their joint configuration may have been left inside an installed snapshot (whose own
    /// configuration was joint, perhaps a later one): the next configuration applied answers.
    covered: Vec<R>,
}

/// A reply to send now: the change it waited for is done.
#[derive(Debug, PartialEq, Eq)]
pub struct Answer<R> {
    pub reply: R,
    /// The configuration applied now is the one that completed the change. Otherwise an
    /// earlier one did, inside a snapshot, and members may have changed again since.
    pub completed_now: bool,
}

impl<R> Default for JointReplies<R> {
    fn default() -> Self {
        JointReplies {
            waiting: Vec::new(),
            covered: Vec::new(),
        }
    }
}

impl<R> JointReplies<R> {
    /// A configuration `conf` was applied, with the reply of the operator change it came from,
    /// if this node proposed it: the replies that may be answered now.
    pub fn applied(&mut self, conf: &ConfState, reply: Option<R>) -> Vec<Answer<R>> {
        let joint = !conf.voters_outgoing.is_empty();
        let mut answers: Vec<Answer<R>> = std::mem::take(&mut self.covered)
            .into_iter()
            .map(|reply| Answer {
                reply,
                completed_now: false,
            })
            .collect();
        if joint {
            // Whatever still waits entered an earlier joint configuration, left unseen.
            answers.extend(self.waiting.drain(..).map(|reply| Answer {
                reply,
                completed_now: false,
            }));
            self.waiting.extend(reply);
        } else {
            answers.extend(self.waiting.drain(..).chain(reply).map(|reply| Answer {
                reply,
                completed_now: true,
            }));
        }
        answers
    }

    /// A snapshot with configuration `conf` was installed: the replies it shows done.
    pub fn installed(&mut self, conf: &ConfState) -> Vec<Answer<R>> {
        if conf.voters_outgoing.is_empty() {
            let done = self.covered.drain(..).chain(self.waiting.drain(..));
            return done
                .map(|reply| Answer {
                    reply,
                    completed_now: false,
                })
                .collect();
        }
        // The same joint configuration, or a later one: the next change applied tells.
        self.covered.append(&mut self.waiting);
        Vec::new()
    }
}

/// Every node `conf` names (voters and learners, incoming and outgoing): the members an address
/// book keeps once `conf` is applied. A node that is not among them was removed.
pub fn members_of(conf: &ConfState) -> BTreeSet<NodeId> {
    conf.voters
        .iter()
        .chain(&conf.learners)
        .chain(&conf.voters_outgoing)
        .chain(&conf.learners_next)
        .map(|&id| NodeId(id))
        .collect()
}

/// `ids` as the refusals have always printed them (`[4, 5]`, the operator's own numbers), not
/// as the type's `Debug` would (`[NodeId(4), NodeId(5)]`): the API answers with these words.
fn plain(ids: &[NodeId]) -> String {
    format!("{:?}", ids.iter().map(|id| id.0).collect::<Vec<_>>())
}

/// The first byte of a membership change's details that name who asked for it (changes logged
/// before the audit trail existed carry only the new member's address, which never starts so).
const ACTOR_MARKER: u8 = 0x01;

/// A membership change's details as proposed: who asked, then `rest` (a new member's addresses).
pub fn details_with_actor(actor: Actor, rest: &[u8]) -> Vec<u8> {
    let (kind, id) = match actor {
        Actor::Token(t) => (1u8, t.0),
        Actor::Node(n) => (2u8, n),
    };
    let mut out = Vec::with_capacity(10 + rest.len());
    out.push(ACTOR_MARKER);
    out.push(kind);
    out.extend_from_slice(&id.to_le_bytes());
    out.extend_from_slice(rest);
    out
}

/// Splits a membership change's details into who asked (if they say) and the rest.
pub fn split_actor(details: &[u8]) -> (Option<Actor>, &[u8]) {
    if details.len() >= 10 && details[0] == ACTOR_MARKER {
        let id = u64::from_le_bytes(details[2..10].try_into().expect("8 bytes"));
        let actor = match details[1] {
            1 => Some(Actor::Token(bulwark_ledger::access::TokenId(id))),
            2 => Some(Actor::Node(id)),
            _ => None,
        };
        if actor.is_some() {
            return (actor, &details[10..]);
        }
    }
    (None, details)
}

/// A membership change in words, for the audit trail: each step and the new member's addresses.
pub fn describe_change(change: &ConfChangeV2, rest: &[u8]) -> String {
    let steps: Vec<String> = change
        .changes
        .iter()
        .map(|c| {
            let what = match c.get_change_type() {
                raft::eraftpb::ConfChangeType::AddNode => "add voter",
                raft::eraftpb::ConfChangeType::AddLearnerNode => "add learner",
                raft::eraftpb::ConfChangeType::RemoveNode => "remove",
            };
            format!("{what} {}", c.node_id)
        })
        .collect();
    let mut text = if steps.is_empty() {
        "leave joint configuration".to_string()
    } else {
        steps.join(", ")
    };
    if let Ok(addresses) = std::str::from_utf8(rest) {
        if !addresses.is_empty() {
            text.push_str(&format!(" ({addresses})"));
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conf(voters: &[u64], learners: &[u64]) -> ConfState {
        ConfState::from((voters.to_vec(), learners.to_vec()))
    }

    fn ids(ids: &[u64]) -> Vec<NodeId> {
        ids.iter().map(|&id| NodeId(id)).collect()
    }

    /// The refusal's words: what the API answers with.
    fn refused(conf: &ConfState, request: MembershipRequest) -> String {
        plan_change(conf, &request)
            .expect_err("refused")
            .to_string()
    }

    fn joint(incoming: &[u64], outgoing: &[u64]) -> ConfState {
        let mut c = conf(incoming, &[]);
        c.voters_outgoing = outgoing.to_vec();
        c
    }

    fn replies(answers: Vec<Answer<u32>>) -> Vec<(u32, bool)> {
        answers
            .into_iter()
            .map(|a| (a.reply, a.completed_now))
            .collect()
    }

    #[test]
    fn a_joint_change_is_answered_when_its_joint_configuration_is_left() {
        let mut r = JointReplies::default();
        assert_eq!(
            replies(r.applied(&conf(&[1, 2, 3], &[4]), Some(1))),
            [(1, true)]
        );
        assert!(r
            .applied(&joint(&[1, 2, 3, 4, 5], &[1, 2, 3]), Some(2))
            .is_empty());
        assert_eq!(
            replies(r.applied(&conf(&[1, 2, 3, 4, 5], &[]), None)),
            [(2, true)]
        );
    }

    #[test]
    fn a_snapshot_that_covers_the_end_of_a_joint_configuration_answers() {
        let mut r = JointReplies::default();
        assert!(r
            .applied(&joint(&[1, 2, 3, 4, 5], &[1, 2, 3]), Some(7))
            .is_empty());
        assert_eq!(
            replies(r.installed(&conf(&[1, 2, 3, 4, 5], &[]))),
            [(7, false)]
        );
        // A snapshot whose configuration is joint (perhaps a later joint change): the next
        // configuration applied answers, whatever it is.
        assert!(r
            .applied(&joint(&[1, 2, 3, 4, 5], &[1, 2, 3]), Some(8))
            .is_empty());
        assert!(r.installed(&joint(&[2, 3, 4], &[1, 2, 3, 4, 5])).is_empty());
        assert_eq!(
            replies(r.applied(&conf(&[2, 3, 4], &[]), None)),
            [(8, false)]
        );
        // A joint configuration applied after one left unseen: the earlier change is done.
        assert!(r
            .applied(&joint(&[1, 2, 3, 4, 5], &[1, 2, 3]), Some(9))
            .is_empty());
        assert!(r.installed(&joint(&[1, 2, 3, 4, 5], &[1, 2, 3])).is_empty());
        assert_eq!(
            replies(r.applied(&joint(&[2, 3, 4], &[1, 2, 3, 4, 5]), Some(10))),
            [(9, false)]
        );
        assert_eq!(
            replies(r.applied(&conf(&[2, 3, 4], &[]), None)),
            [(10, true)]
        );
    }

    #[test]
    fn refusals_keep_their_words() {
        let three = conf(&[1, 2, 3], &[4]);
        use MembershipRequest::*;
        assert_eq!(
            refused(&three, AddLearner(NodeId(2))),
            "node 2 is already a member"
        );
        assert_eq!(
            refused(&three, AddLearner(NodeId(4))),
            "node 4 is already a member"
        );
        assert_eq!(
            refused(&three, AddLearner(NodeId(0))),
            "node id 0 is reserved"
        );
        assert_eq!(
            refused(&three, Promote(ids(&[5]))),
            "node 5 is not a learner; add it as one first"
        );
        assert!(
            refused(&three, Promote(ids(&[4]))).starts_with("promoting [4] would leave 4 voters")
        );
        assert_eq!(refused(&three, Remove(ids(&[9]))), "node 9 is not a member");
        assert!(refused(&three, Remove(ids(&[1]))).starts_with("removing [1] would leave 2 voters"));
        let one = conf(&[1], &[]);
        assert!(refused(&one, Remove(ids(&[1]))).starts_with("removing [1] would leave 0 voters"));
        let seven = conf(&[1, 2, 3, 4, 5, 6, 7], &[8, 9]);
        assert!(refused(&seven, Promote(ids(&[8, 9]))).contains("at most 7 are allowed"));
    }

    #[test]
    fn refusals_name_the_nodes_they_are_about() {
        let three = conf(&[1, 2, 3], &[4]);
        use MembershipRequest::*;
        assert_eq!(
            plan_change(&three, &Promote(ids(&[5]))),
            Err(Refusal::NotALearner(NodeId(5)))
        );
        assert_eq!(
            plan_change(&three, &Remove(ids(&[1]))),
            Err(Refusal::RemoveLeaves {
                ids: ids(&[1]),
                count: VoterCountError::NotOdd { voters: 2 }
            })
        );
    }

    #[test]
    fn a_node_named_twice_or_none_is_refused() {
        let three = conf(&[1, 2, 3], &[4, 5]);
        use MembershipRequest::*;
        assert_eq!(
            refused(&three, Promote(ids(&[4, 4]))),
            "node 4 is named more than once"
        );
        assert_eq!(
            refused(&three, Remove(ids(&[5, 1, 5]))),
            "node 5 is named more than once"
        );
        assert_eq!(refused(&three, Promote(ids(&[]))), "no node ids given");
        assert_eq!(refused(&three, Remove(ids(&[]))), "no node ids given");
    }

    #[test]
    fn a_joint_configuration_refuses_every_change() {
        let mut joint = conf(&[1, 2, 3, 4, 5], &[]);
        joint.voters_outgoing = vec![1, 2, 3];
        let refusal = refused(&joint, MembershipRequest::AddLearner(NodeId(6)));
        assert!(refusal.contains("still being completed"), "{refusal}");
    }

    #[test]
    fn accepted_changes_become_their_steps() {
        let three = conf(&[1, 2, 3], &[4, 5]);
        let steps = |r: MembershipRequest| -> Vec<(ConfChangeType, u64)> {
            let cc = plan_change(&three, &r).expect("accepted");
            cc.changes
                .iter()
                .map(|c| (c.get_change_type(), c.node_id))
                .collect()
        };
        use ConfChangeType::*;
        assert_eq!(
            steps(MembershipRequest::AddLearner(NodeId(6))),
            [(AddLearnerNode, 6)]
        );
        assert_eq!(
            steps(MembershipRequest::Promote(ids(&[4, 5]))),
            [(AddNode, 4), (AddNode, 5)]
        );
        assert_eq!(
            steps(MembershipRequest::Remove(ids(&[1, 2, 4]))),
            [(RemoveNode, 1), (RemoveNode, 2), (RemoveNode, 4)]
        );
    }

    #[test]
    fn the_address_book_keeps_every_member_of_a_joint_configuration() {
        let mut joint = conf(&[1, 4, 5], &[2]);
        joint.voters_outgoing = vec![1, 2, 3];
        joint.learners_next = vec![2];
        assert_eq!(
            members_of(&joint),
            BTreeSet::from([1, 2, 3, 4, 5].map(NodeId))
        );
        assert!(!members_of(&conf(&[1, 2, 3], &[])).contains(&NodeId(4)));
    }
}
