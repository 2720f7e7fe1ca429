//! `/v1/status` as the loop sees it: the state, the log, and Raft's view of the members.

use bulwark_consensus::{LogIndex, NodeId};
use bulwark_ledger::StateMachine;
use raft::StateRole;

use super::ClusterLoop;
use crate::ReadOutcome;

impl ClusterLoop {
    pub(super) fn status(&self) -> ReadOutcome {
        let (log_bytes, log_segments) = self.replica.storage().log_size();
        let raft = &self.replica.raw().raft;
        let store = self.replica.state();
        let leader = self.replica.leader();
        let conf = raft.prs().conf().to_conf_state();
        let now = super::event_loop::monotonic_clock();
        let members = self
            .cluster
            .members
            .iter()
            .filter(|m| conf.voters.contains(&m.id) || conf.learners.contains(&m.id))
            .map(|m| {
                let progress = raft.prs().get(m.id);
                let match_index = if m.id == self.cluster.node_id {
                    raft.raft_log.last_index()
                } else {
                    progress.map(|p| p.matched).unwrap_or(0)
                };
                let lag = raft.raft_log.last_index().saturating_sub(match_index);
                let caught_up = m.id == self.cluster.node_id || lag == 0;
                let lag_ms = self.replication.lag_ms(NodeId(m.id), caught_up, now);
                crate::MemberStatus {
                    lag_ms: self.replica.is_leader().then_some(lag_ms).flatten(),
                    id: NodeId(m.id),
                    learner: conf.learners.contains(&m.id),
                    http_addr: m.http_addr.clone(),
                    match_index: self.replica.is_leader().then_some(LogIndex(match_index)),
                    lag: self.replica.is_leader().then_some(lag),
                    recent_active: self.replica.is_leader().then(|| {
                        m.id == self.cluster.node_id
                            || progress.map(|p| p.recent_active).unwrap_or(false)
                    }),
                }
            })
            .collect();
        ReadOutcome {
            answer: crate::Answer::Status(crate::NodeStatus {
                applied_index: LogIndex(store.applied_index()),
                checkpointed_index: LogIndex(store.checkpointed_index()),
                last_timestamp: store.last_timestamp(),
                accounts: store.account_count(),
                outbox_outbound: store.outbox_depth().0,
                outbox_dead: store.outbox_depth().1,
                log_first_index: LogIndex(raft.raft_log.first_index()),
                log_last_index: LogIndex(raft.raft_log.last_index()),
                log_bytes,
                log_segments,
                cluster: Some(crate::ClusterStatus {
                    cluster_id: self.cluster.cluster_id,
                    node_id: NodeId(self.cluster.node_id),
                    role: role_name(self.replica.role()),
                    term: self.replica.term(),
                    leader,
                    commit_index: self.replica.commit_index(),
                    members,
                }),
                archive: self.archive_status(),
            }),
            applied_index: LogIndex(store.applied_index()),
        }
    }
}

fn role_name(role: StateRole) -> &'static str {
    match role {
        StateRole::Leader => "leader",
        StateRole::Follower => "follower",
        StateRole::Candidate => "candidate",
        StateRole::PreCandidate => "pre_candidate",
    }
}
