//! The slow-disk check's IO (the decisions are `consensus::slow_disk`'s): every round, the log
//! syncs the replica timed feed the verdict and the `wal_fsync_duration_seconds` histogram; the
//! verdict sets this node's election priority and the `slow_disk` gauge (logged when it
//! changes); and a leader on a slow disk hands leadership to the in-sync voter it names, with
//! one log line that carries the numbers, counted in `leader_evictions_total`.

use bulwark_consensus::replication::FollowerReplication;
use bulwark_consensus::NodeId;
use bulwark_limits::SLOW_SYNC_THRESHOLD;

use super::event_loop::monotonic_clock;
use super::ClusterLoop;

impl ClusterLoop {
    /// This round's log syncs, the verdict, and an eviction if it is due. `followers` is the
    /// leader's replication status (empty on a follower).
    pub(super) fn watch_disk(&mut self, followers: &[FollowerReplication]) {
        let now = monotonic_clock();
        for took in self.replica.take_log_syncs() {
            self.metrics.fsync_seconds.observe(took.as_secs_f64());
            self.slow_disk.observe_sync(now, took);
        }
        let slow = self.slow_disk.slow(now);
        let was_slow = self.metrics.slow_disk.get() == 1;
        if slow.is_some() != was_slow {
            self.metrics.slow_disk.set(i64::from(slow.is_some()));
            match slow {
                Some(latency) => tracing::warn!(
                    median_ms = latency.median.as_millis() as u64,
                    max_ms = latency.max.as_millis() as u64,
                    syncs = latency.samples,
                    threshold_ms = SLOW_SYNC_THRESHOLD.as_millis() as u64,
                    "this node's disk is slow: it hands leadership over and is not preferred in elections"
                ),
                None => tracing::info!("this node's disk is no longer slow"),
            }
        }
        // A node about to stop should not be elected: it would only have to hand over again.
        let priority = if self.is_stopping() {
            bulwark_consensus::slow_disk::SLOW_PRIORITY
        } else {
            self.slow_disk.election_priority(now)
        };
        self.replica.set_election_priority(priority);
        let conf = self.replica.raw().raft.prs().conf().to_conf_state();
        let voters: Vec<NodeId> = conf.voters.iter().map(|&id| NodeId(id)).collect();
        let leading = self.replica.is_leader();
        let Some(eviction) = self.slow_disk.decide(now, leading, followers, &voters) else {
            return;
        };
        tracing::warn!(
            to = eviction.to.0,
            term = self.replica.term().0,
            median_ms = eviction.latency.median.as_millis() as u64,
            max_ms = eviction.latency.max.as_millis() as u64,
            syncs = eviction.latency.samples,
            threshold_ms = SLOW_SYNC_THRESHOLD.as_millis() as u64,
            retry = eviction.retry,
            "this leader's disk is slow: transferring leadership to node {}",
            eviction.to.0
        );
        self.metrics.leader_evictions.inc();
        self.replica.transfer_leader(eviction.to);
    }
}
