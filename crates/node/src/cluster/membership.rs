//! Membership: an operator's change checked against the configuration and proposed; an applied
//! change carried into the address book, the transport's peers and the API's view.

use bulwark_transport::HostPort;

use bulwark_consensus::membership::{members_of, plan_change, MembershipRequest};
use bulwark_consensus::{LogIndex, NodeId};
use raft::eraftpb::ConfState;
use tokio::sync::oneshot;

use super::config::{save_members, snapshot_members, ClusterConfig, Member, MembershipChange};
use super::{ClusterLoop, Reply};
use crate::RequestError;

impl ClusterLoop {
    /// Checks an operator's membership change against the current configuration and proposes
    /// it; the answer comes when it is applied. The checks are `consensus::membership`'s, shared
    /// with the simulation.
    pub(super) fn propose_membership(
        &mut self,
        change: MembershipChange,
        actor: bulwark_ledger::access::Actor,
        reply: oneshot::Sender<Result<LogIndex, RequestError>>,
    ) {
        let conf = self.replica.raw().raft.prs().conf().to_conf_state();
        let (request, details) = match &change {
            MembershipChange::AddLearner(m) => (
                MembershipRequest::AddLearner(NodeId(m.id)),
                m.to_spec().into_bytes(),
            ),
            MembershipChange::Promote(ids) => (MembershipRequest::Promote(node_ids(ids)), vec![]),
            MembershipChange::Remove(ids) => (MembershipRequest::Remove(node_ids(ids)), vec![]),
        };
        let cc = match plan_change(&conf, &request) {
            Ok(cc) => cc,
            Err(refusal) => {
                let _ = reply.send(Err(RequestError::Membership(refusal.into())));
                return;
            }
        };
        tracing::info!(?change, %actor, "proposing a membership change");
        let details = bulwark_consensus::membership::details_with_actor(actor, &details);
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
            Err(refusal) => {
                if let Some(Reply::Membership(reply)) = change.token {
                    let _ = reply.send(Err(RequestError::Membership(refusal.into())));
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
            index = change.index.0,
            voters = ?conf.voters,
            learners = ?conf.learners,
            removed,
            "membership changed"
        );
        let reply = match change.token {
            Some(Reply::Membership(reply)) => Some(reply),
            _ => None,
        };
        for answer in self.joint_replies.applied(&conf, reply) {
            let _ = answer.reply.send(Ok(change.index));
        }
        // A new member starts from a snapshot: make sure a checkpoint is there to offer.
        if self.replica.is_leader() {
            self.replica.state_mut().start_checkpoint();
        }
    }

    /// Keeps the address book, the transport's peers and the API's view to the members of
    /// `conf`; returns whether this node is no longer among them.
    pub(super) fn update_members(&mut self, conf: &ConfState) -> bool {
        let in_config = members_of(conf);
        self.cluster
            .members
            .retain(|m| in_config.contains(&NodeId(m.id)));
        if let Err(e) = save_members(&self.config.data_dir, &self.cluster.members) {
            tracing::error!(error = %e, "cannot save the member address book");
        }
        let peers: Vec<(NodeId, HostPort)> = self
            .cluster
            .members
            .iter()
            .filter(|m| m.id != self.cluster.node_id)
            .map(|m| (NodeId(m.id), m.peer_addr.clone()))
            .collect();
        self.transport.set_peers(&peers);
        let removed = !in_config.contains(&NodeId(self.cluster.node_id));
        {
            let mut view = self.view.write().expect("cluster view lock");
            view.http_addrs = self
                .cluster
                .members
                .iter()
                .map(|m| (NodeId(m.id), m.http_addr.clone()))
                .collect();
            view.peer_addrs = self
                .cluster
                .members
                .iter()
                .map(|m| (NodeId(m.id), m.peer_addr.clone()))
                .collect();
            view.removed = removed;
        }
        removed
    }
}

/// The address book could not be saved before a snapshot's install: the install fails (and is
/// tried again), since the swap must not happen before the members are on disk.
#[derive(Debug, thiserror::Error)]
#[error("cannot save the member address book: {0}")]
pub(super) struct SaveMembersFailed(#[source] std::io::Error);

/// Before a snapshot's state replaces ours: the members it tells of go into the address book, on
/// disk. A crash after the swap restarts with the snapshot's configuration, and without their
/// addresses a member added in the entries the snapshot covers would never hear from this node
/// (found by the simulation: a leader whose learner never caught up). Extra entries are harmless:
/// the next configuration applied keeps only its members.
pub(super) fn learn_snapshot_members(
    cluster: &mut ClusterConfig,
    data_dir: &std::path::Path,
    data: &[u8],
) -> Result<(), SaveMembersFailed> {
    let mut changed = false;
    for m in snapshot_members(data) {
        match cluster.members.iter_mut().find(|x| x.id == m.id) {
            Some(x) if *x == m => continue,
            Some(x) => *x = m,
            None => cluster.members.push(m),
        }
        changed = true;
    }
    if changed {
        save_members(data_dir, &cluster.members).map_err(SaveMembersFailed)?;
    }
    Ok(())
}

/// The ids of an operator's request (parsed from the command line and the API as numbers, in
/// `config.rs`) as the node ids `consensus::membership` checks.
fn node_ids(ids: &[u64]) -> Vec<NodeId> {
    ids.iter().map(|&id| NodeId(id)).collect()
}
