//! Replication status on the leader: per follower its lag in entries and in time, whether it is
//! in sync (the rule is `consensus::replication`'s, shared with the simulation), the `ack=all`
//! waiters that this settles, readiness for the API, and the slow-disk check, which needs the
//! followers' in-sync status.

use bulwark_consensus::replication::AckAll;

use super::event_loop::monotonic_clock;
use super::ClusterLoop;
use crate::RequestError;

impl ClusterLoop {
    /// Tracks followers' lag in time, answers `ack=all` writes every in-sync member now has,
    /// publishes readiness and replication metrics.
    pub(super) fn track_replication(&mut self) {
        let raft = &self.replica.raw().raft;
        let leading = self.replica.is_leader();
        let heard_at = |id| self.replica.heard_at(id);
        let replication = self.replication.observe(raft, heard_at, monotonic_clock());
        for follower in &replication.followers {
            let labels = crate::metrics::MemberLabels {
                member: follower.id.0,
            };
            self.metrics
                .member_match_index
                .get_or_create(&labels)
                .set(follower.matched.0 as i64);
            self.metrics
                .member_lag_entries
                .get_or_create(&labels)
                .set(follower.lag_entries as i64);
            self.metrics
                .member_in_sync
                .get_or_create(&labels)
                .set(i64::from(follower.in_sync));
        }
        // ack=all: every in-sync follower (and this leader) holds the write's index.
        let floor = replication.in_sync_floor();
        for (_, (reply, _permit), settled) in self.waiting_all.settle(leading, floor) {
            let _ = reply.send(match settled {
                AckAll::Confirmed => Ok(()),
                AckAll::Unconfirmed { index } => Err(RequestError::AckAllUnconfirmed { index }),
            });
        }
        let heard_recently = raft.election_elapsed < raft.election_timeout();
        let ready = leading || (self.replica.leader().is_some() && heard_recently);
        let full = self.is_disk_full();
        let mut view = self.view.write().expect("cluster view lock");
        // A node holding a Ready (a full disk, a snapshot still downloading) cannot serve
        // linearizable reads: not ready, whatever it last heard.
        view.ready =
            ready && !view.removed && !full && !self.replica.is_stalled() && !self.is_stopping();
        drop(view);
        self.watch_disk(&replication.followers);
        self.hand_over(&replication.followers);
    }
}
