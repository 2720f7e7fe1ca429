//! Membership: an operator's change checked against the configuration and proposed; an applied
//! change carried into the address book, the transport's peers and the API's view.

use std::net::SocketAddr;

use bulwark_transport::NodeId;
use raft::eraftpb::ConfState;
use tokio::sync::oneshot;

use super::config::{check_voter_count, save_members, Member, MembershipChange};
use super::{ClusterLoop, Reply};
use crate::NodeError;

impl ClusterLoop {
    /// Checks an operator's membership change against the current configuration and proposes
    /// it; the answer comes when it is applied.
    pub(super) fn propose_membership(
        &mut self,
        change: MembershipChange,
        reply: oneshot::Sender<Result<u64, NodeError>>,
    ) {
        use raft::eraftpb::ConfChangeType;
        let conf = self.replica.raw().raft.prs().conf().to_conf_state();
        let is_voter = |id: &u64| conf.voters.contains(id);
        let is_learner = |id: &u64| conf.learners.contains(id);
        let refuse = |reason: String| Err(NodeError::Membership(reason));
        type Checked = Result<(Vec<(ConfChangeType, u64)>, Vec<u8>), NodeError>;
        let checked: Checked = match &change {
            MembershipChange::AddLearner(m) if is_voter(&m.id) || is_learner(&m.id) => {
                refuse(format!("node {} is already a member", m.id))
            }
            MembershipChange::AddLearner(m) if m.id == 0 => refuse("node id 0 is reserved".into()),
            MembershipChange::AddLearner(m) => Ok((
                vec![(ConfChangeType::AddLearnerNode, m.id)],
                m.to_spec().into_bytes(),
            )),
            MembershipChange::Promote(ids) => {
                if let Some(id) = ids.iter().find(|id| !is_learner(id)) {
                    refuse(format!("node {id} is not a learner; add it as one first"))
                } else if let Err(e) = check_voter_count(conf.voters.len() + ids.len()) {
                    refuse(format!("promoting {ids:?} would leave {e}"))
                } else {
                    Ok((
                        ids.iter()
                            .map(|id| (ConfChangeType::AddNode, *id))
                            .collect(),
                        vec![],
                    ))
                }
            }
            MembershipChange::Remove(ids) => {
                let voters_left = conf.voters.iter().filter(|v| !ids.contains(v)).count();
                if let Some(id) = ids.iter().find(|id| !is_voter(id) && !is_learner(id)) {
                    refuse(format!("node {id} is not a member"))
                } else if let Err(e) = check_voter_count(voters_left) {
                    refuse(format!("removing {ids:?} would leave {e}"))
                } else {
                    Ok((
                        ids.iter()
                            .map(|id| (ConfChangeType::RemoveNode, *id))
                            .collect(),
                        vec![],
                    ))
                }
            }
        };
        let (changes, details) = match checked {
            Ok(c) => c,
            Err(e) => {
                let _ = reply.send(Err(e));
                return;
            }
        };
        let cc = bulwark_consensus::replica::conf_change(&changes);
        tracing::info!(?change, "proposing a membership change");
        self.replica
            .propose_conf_change(cc, details, Reply::Membership(reply));
    }

    /// A membership change is applied: update the address book (persisted), the transport's
    /// peers and the API's view; a node removed from the cluster stops serving.
    pub(super) fn membership_applied(
        &mut self,
        change: bulwark_consensus::replica::AppliedConfChange<Reply>,
    ) {
        let conf = match change.conf_state {
            Ok(conf) => conf,
            Err(reason) => {
                if let Some(Reply::Membership(reply)) = change.token {
                    let _ = reply.send(Err(NodeError::Membership(reason)));
                }
                return;
            }
        };
        if let Ok(text) = std::str::from_utf8(&change.details) {
            if let Ok(m) = Member::parse_spec(text) {
                match self.cluster.members.iter_mut().find(|x| x.id == m.id) {
                    Some(x) => *x = m,
                    None => self.cluster.members.push(m),
                }
            }
        }
        let removed = self.update_members(&conf);
        tracing::info!(
            index = change.index,
            voters = ?conf.voters,
            learners = ?conf.learners,
            removed,
            "membership changed"
        );
        // A change made by joint consensus is done only once the joint configuration is left
        // (the automatic next change): only then does the new majority alone decide.
        if let Some(Reply::Membership(reply)) = change.token {
            self.joint_replies.push(reply);
        }
        if conf.voters_outgoing.is_empty() {
            for reply in self.joint_replies.drain(..) {
                let _ = reply.send(Ok(change.index));
            }
        }
        // A new member starts from a snapshot: make sure a checkpoint is there to offer.
        if self.replica.is_leader() {
            self.replica.state_mut().start_checkpoint();
        }
    }

    /// Keeps the address book, the transport's peers and the API's view to the members of
    /// `conf`; returns whether this node is no longer among them.
    pub(super) fn update_members(&mut self, conf: &ConfState) -> bool {
        let in_config: std::collections::BTreeSet<u64> = conf
            .voters
            .iter()
            .chain(&conf.learners)
            .chain(&conf.voters_outgoing)
            .chain(&conf.learners_next)
            .copied()
            .collect();
        self.cluster.members.retain(|m| in_config.contains(&m.id));
        if let Err(e) = save_members(&self.config.data_dir, &self.cluster.members) {
            tracing::error!(error = %e, "cannot save the member address book");
        }
        let peers: Vec<(NodeId, SocketAddr)> = self
            .cluster
            .members
            .iter()
            .filter(|m| m.id != self.cluster.node_id)
            .map(|m| (NodeId(m.id), m.peer_addr))
            .collect();
        self.transport.set_peers(&peers);
        let removed = !in_config.contains(&self.cluster.node_id);
        {
            let mut view = self.view.write().expect("cluster view lock");
            view.http_addrs = self
                .cluster
                .members
                .iter()
                .map(|m| (m.id, m.http_addr))
                .collect();
            view.removed = removed;
        }
        removed
    }
}
