//! Replication status on the leader: per follower its lag in entries and in time, whether it is
//! in sync, and the `ack=all` waiters that this settles; readiness for the API.

use std::time::Instant;

use bulwark_limits::IN_SYNC_WITHIN;

use super::ClusterLoop;

impl ClusterLoop {
    /// Tracks followers' lag in time, answers `ack=all` writes every in-sync member now has,
    /// publishes readiness and replication metrics.
    pub(super) fn track_replication(&mut self) {
        let now = Instant::now();
        let raft = &self.replica.raw().raft;
        let leading = self.replica.is_leader();
        let last = raft.raft_log.last_index();
        let me = self.cluster.node_id;
        let mut in_sync_match: Vec<u64> = Vec::new();
        if leading {
            for (id, progress) in raft.prs().iter() {
                if *id == me {
                    continue;
                }
                if progress.matched >= last {
                    self.caught_up_at.insert(*id, now);
                }
                let lag_ms = self
                    .caught_up_at
                    .get(id)
                    .map(|t| {
                        if progress.matched >= last {
                            0
                        } else {
                            now.duration_since(*t).as_millis() as u64
                        }
                    })
                    .unwrap_or(u64::MAX);
                let in_sync = progress.recent_active && lag_ms <= IN_SYNC_WITHIN.as_millis() as u64;
                if in_sync {
                    in_sync_match.push(progress.matched);
                }
                let labels = crate::metrics::MemberLabels { member: *id };
                self.metrics
                    .member_match_index
                    .get_or_create(&labels)
                    .set(progress.matched as i64);
                self.metrics
                    .member_lag_entries
                    .get_or_create(&labels)
                    .set(last.saturating_sub(progress.matched) as i64);
                self.metrics
                    .member_in_sync
                    .get_or_create(&labels)
                    .set(i64::from(in_sync));
            }
        }
        // ack=all: every in-sync follower (and this leader) holds the write's index.
        let floor = in_sync_match.iter().copied().min().unwrap_or(u64::MAX);
        for ((reply, _permit), result) in self.waiting_all.settle(leading, floor) {
            let _ = reply.send(result);
        }
        let heard_recently = raft.election_elapsed < raft.election_timeout();
        let ready = leading || (self.replica.leader().is_some() && heard_recently);
        let full = self.is_disk_full();
        let mut view = self.view.write().expect("cluster view lock");
        // A node holding a Ready (a full disk, a snapshot still downloading) cannot serve
        // linearizable reads: not ready, whatever it last heard.
        view.ready = ready && !view.removed && !full && !self.replica.is_stalled();
    }
}
