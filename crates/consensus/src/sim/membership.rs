//! Membership changes under load. An operator's requests go through the node's own checks
//! (`consensus::membership::plan_change`): a new node id joins empty as a learner and catches up
//! by snapshot and log, learners are promoted in pairs, members are removed, the leader among
//! them now and then; a few requests are arbitrary, so that the refusals are exercised too. A
//! demotion of voters to learners, which no operator request makes, goes to Raft directly. Every
//! configuration applied is checked to be one the checks allow.

use super::*;
use crate::membership::{check_voter_count, members_of, plan_change, Answer, MembershipRequest};
use crate::replica::AppliedConfChange;

/// Node ids beyond the initial ones the run may add.
const NEW_NODES: u64 = 4;

impl Sim {
    /// Asks the leader for a membership change, unless a joint configuration is being left
    /// (then the checks refuse it, as tested by the arbitrary requests).
    pub(super) fn change_membership(&mut self) {
        let Some(leader) = self.current_leader() else {
            return;
        };
        let conf = self
            .replica_of(leader)
            .raw()
            .raft
            .prs()
            .conf()
            .to_conf_state();
        if self.rng.chance(200) {
            let request = self.arbitrary_request();
            self.ask(leader, &conf, request);
            return;
        }
        if !conf.voters_outgoing.is_empty() {
            return;
        }
        let fresh = self.nodes.len() as u64 + 1;
        let can_add = fresh <= self.config.nodes + NEW_NODES;
        let request = match conf.learners.len() {
            // Learners are promoted in pairs: a voter count stays odd.
            1 if can_add => MembershipRequest::AddLearner(NodeId(fresh)),
            0 => match self.rng.below(3) {
                0 => return self.demote(leader, &conf),
                1 if can_add => MembershipRequest::AddLearner(NodeId(fresh)),
                _ => match self.removal(leader, &conf) {
                    Some(request) => request,
                    None => return,
                },
            },
            _ => MembershipRequest::Promote(conf.learners.iter().map(|&id| NodeId(id)).collect()),
        };
        self.ask(leader, &conf, request);
    }

    /// The voters other than `leader`, in a random order, if there are at least two.
    fn other_voters_shuffled(&mut self, leader: u64, conf: &ConfState) -> Option<Vec<u64>> {
        let mut others: Vec<u64> = conf
            .voters
            .iter()
            .copied()
            .filter(|v| *v != leader)
            .collect();
        if others.len() < 2 {
            return None;
        }
        shuffle(&mut self.rng, &mut others);
        Some(others)
    }

    /// Two voters to remove (the leader among them now and then), if the cluster has them.
    fn removal(&mut self, leader: u64, conf: &ConfState) -> Option<MembershipRequest> {
        let mut others = self.other_voters_shuffled(leader, conf)?;
        if self.rng.chance(400) {
            others[1] = leader;
        }
        Some(MembershipRequest::Remove(
            others[..2].iter().map(|&id| NodeId(id)).collect(),
        ))
    }

    /// Any request about any id the run knows (and one more), most of them refused.
    fn arbitrary_request(&mut self) -> MembershipRequest {
        let max = self.nodes.len() as u64 + 1;
        let ids: Vec<NodeId> = (0..1 + self.rng.below(3))
            .map(|_| NodeId(self.rng.below(max + 1)))
            .collect();
        match self.rng.below(3) {
            0 => MembershipRequest::AddLearner(ids[0]),
            1 => MembershipRequest::Promote(ids),
            _ => MembershipRequest::Remove(ids),
        }
    }

    /// The operator's request to `leader`, checked as the node checks it. A new node is started
    /// (empty, joining) before it is added, as an operator starts it with `--join` first.
    fn ask(&mut self, leader: u64, conf: &ConfState, request: MembershipRequest) {
        let cc = match plan_change(conf, &request) {
            Ok(cc) => cc,
            Err(_) => {
                self.report.membership_refused += 1;
                return;
            }
        };
        let mut details = Vec::new();
        if let MembershipRequest::AddLearner(NodeId(id)) = request {
            if id as usize > self.nodes.len() {
                if id as usize != self.nodes.len() + 1 {
                    // An id no node runs under: a learner that never answers; not worth a node.
                    self.report.membership_refused += 1;
                    return;
                }
                self.join_new_node(id);
            }
            // The node's details: the new member's address, here its id.
            details = id.to_le_bytes().to_vec();
        }
        let token = CONF_TOKENS + self.step;
        self.replica_mut_of(leader)
            .propose_conf_change(cc, details, token);
        self.requests.insert(token, request);
    }

    /// A node on an empty directory, started to join: its address book names every node there
    /// is; it has no configuration, so it waits for the leader's snapshot.
    fn join_new_node(&mut self, id: u64) {
        let members: Vec<u64> = (1..=id).collect();
        let base = 10 + 3 * (id - 1);
        let skew = self.rng.below(1_000_000_000) as i64 - 500_000_000;
        let mut node = Node::empty(id, base, skew, &members);
        node.joined = true;
        self.nodes.push(node);
        self.start_node(id as usize - 1);
    }

    /// The leader demotes two voters to learners (joint consensus, voters stay odd), now and then
    /// itself among them: not an operator request, Raft's own change.
    fn demote(&mut self, leader: u64, conf: &ConfState) {
        use raft::eraftpb::ConfChangeType;
        let Some(mut others) = self.other_voters_shuffled(leader, conf) else {
            return;
        };
        if self.rng.chance(300) {
            others[1] = leader;
            self.report.leader_demotions += 1;
        }
        let changes: Vec<(ConfChangeType, NodeId)> = others[..2]
            .iter()
            .map(|&id| (ConfChangeType::AddLearnerNode, NodeId(id)))
            .collect();
        let cc = crate::replica::conf_change(&changes);
        let token = CONF_TOKENS + self.step;
        self.replica_mut_of(leader)
            .propose_conf_change(cc, Vec::new(), token);
    }

    /// Node `i` applied a membership change: its address book follows as the node loop's does
    /// (the new member's details added, then only the configuration's members kept); a node no
    /// longer among them takes no part; a leader offers a checkpoint for a new member to start
    /// from. The configuration must be one the checks allow.
    pub(super) fn membership_applied(&mut self, i: usize, change: AppliedConfChange<u64>) {
        let Ok(conf) = change.conf_state else {
            return;
        };
        for answer in self.nodes[i].joint_replies.applied(&conf, change.token) {
            self.report.membership_changes += 1;
            self.answer_change(i, answer, &conf);
        }
        if let Ok(bytes) = <[u8; 8]>::try_from(&change.details[..]) {
            self.nodes[i].members.insert(u64::from_le_bytes(bytes));
        }
        self.keep_members(i, &conf);
        if conf.voters_outgoing.is_empty() {
            if let Err(e) = check_voter_count(conf.voters.len()) {
                self.failure = Some(format!(
                    "node {} applied configuration {conf:?} at {}: {e}",
                    self.nodes[i].id, change.index
                ));
            }
        }
        let leading = self.nodes[i]
            .replica
            .as_ref()
            .is_some_and(|r| r.is_leader());
        if leading {
            self.checkpoint(i);
        }
    }

    /// The address book keeps the members of `conf` (`members_of`, the node loop's rule).
    pub(super) fn keep_members(&mut self, i: usize, conf: &ConfState) {
        let keep = members_of(conf);
        let node = &mut self.nodes[i];
        node.members.retain(|&m| keep.contains(&NodeId(m)));
        node.removed = !keep.contains(&NodeId(node.id));
    }

    /// An operator's request answered at its proposer `i`, with `conf` applied: the change it
    /// asked for must be done (a joint configuration left), and is counted. A change completed
    /// earlier, inside a snapshot, may have been undone since: then only the joint
    /// configuration's end is checked.
    pub(super) fn answer_change(&mut self, i: usize, answer: Answer<u64>, conf: &ConfState) {
        let token = answer.reply;
        let me = self.nodes[i].id;
        let request = self.requests.remove(&token);
        let done = match &request {
            Some(MembershipRequest::AddLearner(id)) => {
                self.report.learners_added += 1;
                conf.learners.contains(&id.0) || conf.voters.contains(&id.0)
            }
            Some(MembershipRequest::Promote(ids)) => {
                self.report.promotions += 1;
                ids.iter().all(|id| conf.voters.contains(&id.0))
            }
            Some(MembershipRequest::Remove(ids)) => {
                self.report.removals += 1;
                self.report.leader_removals += u64::from(ids.contains(&NodeId(me)));
                !ids.iter().any(|id| members_of(conf).contains(id))
            }
            None => true,
        };
        let joint = !conf.voters_outgoing.is_empty();
        if answer.completed_now && (!done || joint) {
            self.failure = Some(format!(
                "node {me} answered {request:?} with configuration {conf:?}, which has not done it"
            ));
        }
    }

    fn replica_of(&self, id: u64) -> &SimReplica {
        self.nodes[(id - 1) as usize]
            .replica
            .as_ref()
            .expect("the node is up")
    }

    fn replica_mut_of(&mut self, id: u64) -> &mut SimReplica {
        self.nodes[(id - 1) as usize]
            .replica
            .as_mut()
            .expect("the node is up")
    }
}
