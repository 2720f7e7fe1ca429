//! Membership changes under load.

use super::*;

impl Sim {
    /// Membership under load: the leader demotes two voters to learners (joint consensus, voters
    /// stay odd), now and then itself among them, or promotes every learner back.
    pub(super) fn change_membership(&mut self) {
        use raft::eraftpb::ConfChangeType;
        let Some(leader) = self.current_leader() else {
            return;
        };
        let replica = self.nodes[(leader - 1) as usize]
            .replica
            .as_mut()
            .expect("the leader is alive");
        let conf = replica.raw().raft.prs().conf().to_conf_state();
        if !conf.voters_outgoing.is_empty() {
            return; // a joint configuration is still being left
        }
        let demote_leader = self.rng.chance(300);
        let changes: Vec<(ConfChangeType, u64)> = if conf.learners.is_empty() {
            let mut others: Vec<u64> = conf
                .voters
                .iter()
                .copied()
                .filter(|v| *v != leader)
                .collect();
            if others.len() < 2 {
                return;
            }
            shuffle(&mut self.rng, &mut others);
            if demote_leader {
                // The leader demotes itself (and one other): once applied it stops leading.
                others[1] = leader;
                self.report.leader_demotions += 1;
            }
            others[..2]
                .iter()
                .map(|id| (ConfChangeType::AddLearnerNode, *id))
                .collect()
        } else {
            conf.learners
                .iter()
                .map(|id| (ConfChangeType::AddNode, *id))
                .collect()
        };
        let cc = crate::replica::conf_change(&changes);
        replica.propose_conf_change(cc, Vec::new(), CONF_TOKENS + self.step);
    }
}
