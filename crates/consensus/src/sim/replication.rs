//! The in-sync rule as the node loop applies it (`consensus::replication`), checked against the
//! followers' real logs: a follower a leader reports in sync held the leader's last entry within
//! the slack, and is not one that has been down for longer than the leader can take to notice.

use super::*;
use crate::replication::{AckAll, Replication};

/// Steps of simulated time the in-sync slack (`IN_SYNC_WITHIN`) spans.
const SLACK_STEPS: u64 = bulwark_limits::IN_SYNC_WITHIN.as_nanos() as u64 / STEP_NANOS;
/// How much later than the follower held an entry the leader may learn it: the network's
/// longest delay, with room to spare.
const DELAY_STEPS: u64 = 10;

impl Sim {
    /// Every leader applies the in-sync rule to its followers, as the node loop does each round,
    /// and every follower it reports in sync is checked.
    pub(super) fn check_replication(&mut self) -> Result<(), Violation> {
        for i in 0..self.nodes.len() {
            let node = &mut self.nodes[i];
            let Some(replica) = node.replica.as_ref() else {
                continue;
            };
            if !replica.is_leader() {
                let unconfirmed = node.ack_all.settle(false, LogIndex(0)).len();
                self.report.ack_all_unconfirmed += unconfirmed as u64;
                continue;
            }
            let (_, monotonic) = node.clocks(self.step);
            let raft = &replica.raw().raft;
            let replication = node
                .replication
                .observe(raft, |id| replica.heard_at(id), monotonic);
            let last = raft.raft_log.last_index();
            let last_term = raft.raft_log.last_term();
            let election_timeout = raft.election_timeout() as u64;
            if replica.is_stalled() {
                node.stalled_at = self.step;
            }
            let stalled_at = node.stalled_at;
            let (leader, boots) = (node.id, node.boots);
            for follower in &replication.followers {
                // The simulation's node ids are raft-rs's plain numbers.
                let id = follower.id.0;
                let key = (leader, boots, id);
                if self.holds(id, last, Some(last_term)) {
                    self.caught_up.insert(key, self.step);
                }
                if !follower.in_sync {
                    continue;
                }
                self.report.in_sync_checked += 1;
                let since = self.caught_up.get(&key).copied();
                if since.is_none_or(|s| s + SLACK_STEPS + DELAY_STEPS < self.step) {
                    return Err(self.violation(format!(
                        "leader {leader} reports node {} in sync (match {}, lag {} ms), but its \
                         log last held the leader's last entry at step {since:?}",
                        follower.id, follower.matched, follower.lag_ms
                    )));
                }
                self.check_heard_from(leader, stalled_at, election_timeout, id)?;
            }
            self.check_ack_all(i, &replication)?;
        }
        Ok(())
    }

    /// Leader `i` settles its `ack=all` waiters as the node loop does: every write it confirms
    /// must be in the durable log of every follower it reports in sync.
    fn check_ack_all(&mut self, i: usize, replication: &Replication) -> Result<(), Violation> {
        let node = &mut self.nodes[i];
        let settled = node.ack_all.settle(true, replication.in_sync_floor());
        let leader = node.id;
        for (index, token, how) in settled {
            let storage = self.nodes[i].replica.as_ref().expect("a leader").storage();
            // `None` when the leader's own log no longer holds it (compacted into a checkpoint).
            let term = raft::Storage::term(storage, index.0).ok();
            assert_eq!(how, AckAll::Confirmed, "a leader confirms or waits");
            self.report.ack_all_confirmed += 1;
            for follower in replication.followers.iter().filter(|f| f.in_sync) {
                if !self.holds(follower.id.0, index.0, term) {
                    return Err(self.violation(format!(
                        "leader {leader} confirmed write {token} at {index} to every in-sync \
                         member, but in-sync node {} does not hold it (term {term:?})",
                        follower.id
                    )));
                }
            }
        }
        Ok(())
    }

    /// A follower reported in sync was heard from within an election timeout or two (Raft's
    /// `recent_active`, cleared every election timeout): it has not been down for longer. A
    /// leader holding a Ready does not tick, so it cannot notice until it has ticked for long
    /// enough again.
    fn check_heard_from(
        &self,
        leader: u64,
        stalled_at: u64,
        election_timeout: u64,
        follower: u64,
    ) -> Result<(), Violation> {
        let node = &self.nodes[(follower - 1) as usize];
        let since = node.down_since.max(stalled_at);
        let down_for = self.step - node.down_since;
        if node.replica.is_none() && self.step - since > 2 * election_timeout + DELAY_STEPS {
            return Err(self.violation(format!(
                "leader {leader} reports node {follower} in sync, but it has been down for \
                 {down_for} steps (election timeout {election_timeout} steps)"
            )));
        }
        Ok(())
    }

    /// Whether node `id`'s durable log (up or down) holds the entry at `index` of `term` (of
    /// any term if `None`), or a snapshot past it.
    fn holds(&self, id: u64, index: u64, term: Option<u64>) -> bool {
        let node = &self.nodes[(id - 1) as usize];
        let storage = match (&node.replica, &node.durable) {
            (Some(replica), _) => replica.storage(),
            (None, Some(durable)) => durable,
            (None, None) => return false,
        };
        let first = raft::Storage::first_index(storage).unwrap_or(1);
        if index < first {
            return true;
        }
        LogIndex(index) <= storage.durable_last_index()
            && term.is_none_or(|term| raft::Storage::term(storage, index) == Ok(term))
    }
}
