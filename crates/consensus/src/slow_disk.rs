//! Slow-disk leader eviction, with no IO (TiKV evicts leaders from slow stores; so do we, from
//! a slow node). Every Raft write waits for the leader's log sync, so a leader whose disk turns
//! slow makes every write as slow, and its loop, which ticks and heartbeats between syncs,
//! drifts toward the election timeout. The node measures each of its own log syncs (append +
//! fdatasync) and feeds the durations here with its monotonic clock; [`SlowDisk`] decides:
//!
//! - **Is my disk slow?** When the lower median of its newest [`SLOW_DISK_RECENT_SYNCS`] log
//!   syncs, those within the last [`SLOW_DISK_WINDOW`], is at least [`SLOW_SYNC_THRESHOLD`],
//!   with at least [`SLOW_DISK_MIN_SAMPLES`] of them: more than half of the recent syncs were
//!   slow (a single stall is a hiccup). A node that stops syncing (no writes) keeps no verdict
//!   once its samples age out.
//! - **While slow, every node** lowers its Raft election priority ([`SlowDisk::election_priority`]):
//!   raft-rs's voters refuse a candidate of lower priority than their own unless its log is
//!   longer, so a slow node is not elected back while a healthy voter can be, yet can still be
//!   elected when it holds the longest log (safety and liveness are Raft's as before).
//! - **A slow leader** hands leadership ([`Eviction`]) to a voter it hears from, in sync (the
//!   rule of `crate::replication`) if one is, with the highest match index ([`successor`]); if it still leads [`SLOW_DISK_TRANSFER_RETRY`] later it asks again; and once
//!   leadership has moved away, it hands it over again at most [`SLOW_DISK_EVICTION_COOLDOWN`]
//!   later (if it leads again while still slow: no ping-pong, no storm).

use std::collections::VecDeque;
use std::time::Duration;

use bulwark_limits::{
    SLOW_DISK_EVICTION_COOLDOWN, SLOW_DISK_MIN_SAMPLES, SLOW_DISK_RECENT_SYNCS,
    SLOW_DISK_TRANSFER_RETRY, SLOW_DISK_WINDOW, SLOW_SYNC_THRESHOLD,
};

use crate::replication::FollowerReplication;
use crate::types::NodeId;

/// raft-rs's election priority of a node whose disk is healthy (raft-rs's default).
pub const HEALTHY_PRIORITY: i64 = 0;
/// The election priority of a node whose disk is slow: below every healthy voter's.
pub const SLOW_PRIORITY: i64 = -1;

/// The recent log syncs, summed up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SyncLatency {
    /// The lower median: more than half of the syncs took at least this long.
    pub median: Duration,
    /// The slowest of them.
    pub max: Duration,
    /// How many syncs of the window it is over.
    pub samples: usize,
}

/// A slow leader's decision to hand leadership to `to`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Eviction {
    pub to: NodeId,
    /// Why: the latency that made the disk slow.
    pub latency: SyncLatency,
    /// True if an earlier transfer of this slow period did not take effect.
    pub retry: bool,
}

/// One node's view of its own disk, and its eviction decisions (see the module documentation).
/// `now` is the shell's monotonic clock (any fixed origin, never going back).
#[derive(Clone, Debug, Default)]
pub struct SlowDisk {
    /// (when it ended, how long it took) of the most recent log syncs, oldest first.
    samples: VecDeque<(Duration, Duration)>,
    /// When this leader last asked Raft to transfer leadership, while the transfer may still be
    /// under way (it leads still).
    transfer_asked_at: Option<Duration>,
    /// When the last transfer was asked that took effect (leadership moved away after it).
    last_eviction: Option<Duration>,
}

impl SlowDisk {
    /// One log sync, which ended at `now` and took `took`.
    pub fn observe_sync(&mut self, now: Duration, took: Duration) {
        self.samples.push_back((now, took));
        if self.samples.len() > SLOW_DISK_RECENT_SYNCS {
            self.samples.pop_front();
        }
        while self
            .samples
            .front()
            .is_some_and(|(at, _)| now.saturating_sub(*at) > SLOW_DISK_WINDOW)
        {
            self.samples.pop_front();
        }
    }

    /// The newest log syncs within the window before `now`, if there are enough of them for a
    /// verdict.
    pub fn latency(&self, now: Duration) -> Option<SyncLatency> {
        let mut took: Vec<Duration> = self
            .samples
            .iter()
            .filter(|(at, _)| now.saturating_sub(*at) <= SLOW_DISK_WINDOW)
            .map(|(_, took)| *took)
            .collect();
        if took.len() < SLOW_DISK_MIN_SAMPLES {
            return None;
        }
        took.sort_unstable();
        Some(SyncLatency {
            median: took[(took.len() - 1) / 2],
            max: took[took.len() - 1],
            samples: took.len(),
        })
    }

    /// The verdict at `now`: slow, with the latency that says so, or `None`.
    pub fn slow(&self, now: Duration) -> Option<SyncLatency> {
        self.latency(now)
            .filter(|latency| latency.median >= SLOW_SYNC_THRESHOLD)
    }

    /// The Raft election priority this node should have at `now`.
    pub fn election_priority(&self, now: Duration) -> i64 {
        if self.slow(now).is_some() {
            SLOW_PRIORITY
        } else {
            HEALTHY_PRIORITY
        }
    }

    /// Called every round of the node loop: whether this node, `leading` with these
    /// `followers` (the leader's replication status) in a configuration of `voters`, should hand
    /// leadership over now, and to whom.
    pub fn decide(
        &mut self,
        now: Duration,
        leading: bool,
        followers: &[FollowerReplication],
        voters: &[NodeId],
    ) -> Option<Eviction> {
        if !leading {
            // Leadership moved away after a transfer was asked: the eviction took effect (or an
            // election beat it, which moved leadership just the same).
            if let Some(asked) = self.transfer_asked_at.take() {
                self.last_eviction = Some(asked);
            }
            return None;
        }
        let latency = self.slow(now)?;
        let since = |t: Option<Duration>| t.map(|t| now.saturating_sub(t));
        if since(self.last_eviction).is_some_and(|d| d < SLOW_DISK_EVICTION_COOLDOWN) {
            return None;
        }
        let retry = self.transfer_asked_at.is_some();
        if since(self.transfer_asked_at).is_some_and(|d| d < SLOW_DISK_TRANSFER_RETRY) {
            return None;
        }
        let to = successor(followers, voters)?;
        self.transfer_asked_at = Some(now);
        Some(Eviction { to, latency, retry })
    }
}

/// The voter to hand leadership to: one the leader heard from within an election timeout
/// (`recent_active`), in sync if any is, then the furthest along (the transfer completes at
/// once when it holds the leader's whole log); the lowest id among equals. A voter that is only
/// active, not in sync, still qualifies: under steady writes a slow leader appends new entries
/// every round before its followers' acknowledgements arrive, so at its round's end they are
/// rarely seen caught up, and Raft's transfer sends the target what it lacks before it lets it
/// campaign.
pub fn successor(followers: &[FollowerReplication], voters: &[NodeId]) -> Option<NodeId> {
    followers
        .iter()
        .filter(|f| f.recent_active && voters.contains(&f.id))
        .max_by_key(|f| (f.in_sync, f.matched, std::cmp::Reverse(f.id)))
        .map(|f| f.id)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::types::LogIndex;

    const MS: Duration = Duration::from_millis(1);

    fn follower(id: u64, matched: u64, in_sync: bool) -> FollowerReplication {
        FollowerReplication {
            id: NodeId(id),
            matched: LogIndex(matched),
            lag_entries: 0,
            lag_ms: 0,
            recent_active: in_sync,
            in_sync,
        }
    }

    /// A follower the leader hears from that is not in sync (it lags in time).
    fn lagging(id: u64, matched: u64) -> FollowerReplication {
        FollowerReplication {
            recent_active: true,
            lag_ms: 5_000,
            ..follower(id, matched, false)
        }
    }

    fn voters(ids: &[u64]) -> Vec<NodeId> {
        ids.iter().map(|&id| NodeId(id)).collect()
    }

    /// A disk that took `took` for each of `count` syncs, one every `every`, the last at `end`.
    fn disk_with(count: u64, took: Duration, every: Duration, end: Duration) -> SlowDisk {
        let mut disk = SlowDisk::default();
        for i in (0..count).rev() {
            disk.observe_sync(end - every * i as u32, took);
        }
        disk
    }

    #[test]
    fn the_verdict_needs_enough_recent_syncs_more_than_half_of_them_slow() {
        let now = Duration::from_secs(100);
        // (sync latencies, one every 100 ms ending at `now`, slow?)
        const AT: u64 = SLOW_SYNC_THRESHOLD.as_millis() as u64;
        const UNDER: u64 = AT - 1;
        let cases: &[(&[u64], bool)] = &[
            (&[], false),
            (&[900, 900], false),           // too few to judge
            (&[AT, AT, AT], true),          // at the threshold
            (&[UNDER, 2, UNDER], false),    // just under it
            (&[5, 300, 300], true),         // two of three slow
            (&[5, 5, 900], false),          // one stall is a hiccup
            (&[5, 5, 300, 300], false),     // half is not more than half
            (&[5, 300, 300, 300], true),    // three of four
            (&[2, 3, 2, 4, 3, 500], false), // a busy healthy disk with one stall
            // A busy disk that turned slow: judged on its newest syncs alone.
            (&[2, 2, 2, 2, 2, 2, 2, 2, 300, 300, 300], true),
            (&[2, 2, 2, 2, 2, 2, 2, 2, 300, 300], false),
        ];
        for (latencies, slow) in cases {
            let mut disk = SlowDisk::default();
            for (i, ms) in latencies.iter().enumerate() {
                let at = now - 100 * MS * (latencies.len() - 1 - i) as u32;
                disk.observe_sync(at, MS * *ms as u32);
            }
            assert_eq!(disk.slow(now).is_some(), *slow, "{latencies:?}");
            let priority = if *slow {
                SLOW_PRIORITY
            } else {
                HEALTHY_PRIORITY
            };
            assert_eq!(disk.election_priority(now), priority, "{latencies:?}");
        }
    }

    #[test]
    fn old_syncs_age_out_of_the_verdict() {
        let end = Duration::from_secs(100);
        let disk = disk_with(5, 400 * MS, Duration::from_secs(1), end);
        let latency = disk.slow(end).expect("slow");
        assert_eq!((latency.median, latency.samples), (400 * MS, 5));
        // Once the window has passed without syncs, there is no verdict any more.
        assert_eq!(disk.slow(end + SLOW_DISK_WINDOW + MS), None);
        // A disk that recovered: fast syncs outvote the slow ones still in the window.
        let mut recovered = disk.clone();
        for i in 1..=6 {
            recovered.observe_sync(end + i * 10 * MS, 2 * MS);
        }
        assert_eq!(recovered.slow(end + 60 * MS), None);
    }

    #[test]
    fn only_a_slow_leader_evicts_itself_to_an_active_voter_in_sync_first() {
        let now = Duration::from_secs(100);
        let slow = || disk_with(5, 300 * MS, 300 * MS, now);
        let healthy = || disk_with(50, 3 * MS, 10 * MS, now);
        let followers = [
            follower(2, 40, true),
            follower(3, 41, true),
            follower(4, 50, false),
        ];
        let all = voters(&[1, 2, 3, 4]);
        // (disk, leading, followers, voters, eviction target)
        type Case = (
            SlowDisk,
            bool,
            Vec<FollowerReplication>,
            Vec<NodeId>,
            Option<u64>,
        );
        let cases: Vec<Case> = vec![
            (slow(), true, followers.to_vec(), all.clone(), Some(3)),
            (healthy(), true, followers.to_vec(), all.clone(), None),
            (slow(), false, followers.to_vec(), all.clone(), None),
            // Node 3 is a learner: the furthest voter in sync is node 2.
            (
                slow(),
                true,
                followers.to_vec(),
                voters(&[1, 2, 4]),
                Some(2),
            ),
            // Nobody heard from: nobody to hand over to (a lone leader stays).
            (
                slow(),
                true,
                vec![follower(2, 40, false)],
                all.clone(),
                None,
            ),
            // An in-sync voter before one further along that is not; one heard from will do.
            (
                slow(),
                true,
                vec![lagging(3, 45), follower(2, 40, true)],
                all.clone(),
                Some(2),
            ),
            (
                slow(),
                true,
                vec![lagging(3, 45), lagging(2, 44)],
                all.clone(),
                Some(3),
            ),
            (slow(), true, vec![], voters(&[1]), None),
            // Equals: the lowest id.
            (
                slow(),
                true,
                vec![follower(3, 41, true), follower(2, 41, true)],
                all.clone(),
                Some(2),
            ),
        ];
        for (i, (mut disk, leading, followers, voters, to)) in cases.into_iter().enumerate() {
            let eviction = disk.decide(now, leading, &followers, &voters);
            assert_eq!(eviction.map(|e| e.to.0), to, "case {i}");
            if let Some(e) = eviction {
                assert_eq!(e.latency.median, 300 * MS, "case {i}");
                assert!(!e.retry, "case {i}");
            }
        }
    }

    #[test]
    fn a_transfer_that_did_not_take_effect_is_asked_again_after_the_retry_interval() {
        let followers = [follower(2, 10, true)];
        let voters = voters(&[1, 2, 3]);
        let start = Duration::from_secs(100);
        let mut disk = disk_with(5, 300 * MS, 300 * MS, start);
        assert!(disk.decide(start, true, &followers, &voters).is_some());
        // Still leading, still slow: not again before the retry interval.
        let mut now = start;
        while now < start + SLOW_DISK_TRANSFER_RETRY {
            disk.observe_sync(now, 300 * MS);
            assert_eq!(disk.decide(now, true, &followers, &voters), None, "{now:?}");
            now += 100 * MS;
        }
        disk.observe_sync(now, 300 * MS);
        let again = disk
            .decide(now, true, &followers, &voters)
            .expect("asked again");
        assert!(again.retry);
    }

    #[test]
    fn after_an_eviction_a_slow_node_that_leads_again_waits_out_the_cool_down() {
        let followers = [follower(2, 10, true)];
        let voters = voters(&[1, 2, 3]);
        let start = Duration::from_secs(100);
        let mut disk = disk_with(5, 300 * MS, 300 * MS, start);
        assert!(disk.decide(start, true, &followers, &voters).is_some());
        // Leadership moves away (the eviction took effect), then comes back while still slow.
        let mut now = start + 500 * MS;
        assert_eq!(disk.decide(now, false, &followers, &voters), None);
        while now < start + SLOW_DISK_EVICTION_COOLDOWN {
            disk.observe_sync(now, 300 * MS);
            assert_eq!(disk.decide(now, true, &followers, &voters), None, "{now:?}");
            now += 250 * MS;
        }
        disk.observe_sync(now, 300 * MS);
        let again = disk
            .decide(now, true, &followers, &voters)
            .expect("evicts again");
        assert!(!again.retry, "a new slow period's first transfer");
    }

    /// One step of a node's life: time passes, maybe a sync, and it leads or not.
    #[derive(Clone, Debug)]
    struct Step {
        advance_ms: u64,
        sync_ms: Option<u64>,
        leading: bool,
        in_sync: bool,
    }

    fn step() -> impl Strategy<Value = Step> {
        let sync = prop_oneof![
            Just(None),
            (0u64..20).prop_map(Some),
            (50u64..1500).prop_map(Some)
        ];
        (
            1u64..1500,
            sync,
            proptest::bool::weighted(0.8),
            any::<bool>(),
        )
            .prop_map(|(advance_ms, sync_ms, leading, in_sync)| Step {
                advance_ms,
                sync_ms,
                leading,
                in_sync,
            })
    }

    proptest! {
        /// Whatever happens, a node hands leadership over only while it leads on a slow disk, to
        /// a voter it hears from, never twice within the retry interval, and never again within the
        /// cool-down once leadership moved away after a transfer.
        #[test]
        fn evictions_respect_the_verdict_the_retry_and_the_cool_down(
            steps in proptest::collection::vec(step(), 1..400),
        ) {
            let voters = voters(&[1, 2, 3]);
            let mut disk = SlowDisk::default();
            let mut now = Duration::from_secs(1);
            let mut asks: Vec<Duration> = Vec::new();
            let mut moved_after_ask: Option<Duration> = None;
            for s in &steps {
                now += MS * s.advance_ms as u32;
                if let Some(ms) = s.sync_ms {
                    disk.observe_sync(now, MS * ms as u32);
                }
                let followers = [follower(2, 7, s.in_sync), follower(5, 9, true)];
                // Node 5 is no voter; node 2 is heard from only while in sync here.
                let slow = disk.slow(now);
                let eviction = disk.decide(now, s.leading, &followers, &voters);
                if !s.leading && asks.last().is_some_and(|a| moved_after_ask.is_none_or(|m| m < *a)) {
                    moved_after_ask = asks.last().copied();
                }
                let Some(e) = eviction else { continue };
                prop_assert!(s.leading);
                prop_assert_eq!(Some(e.latency), slow);
                prop_assert!(e.latency.median >= SLOW_SYNC_THRESHOLD);
                prop_assert_eq!(e.to, NodeId(2), "node 5 is no voter");
                prop_assert!(s.in_sync);
                if let Some(last) = asks.last() {
                    prop_assert!(now - *last >= SLOW_DISK_TRANSFER_RETRY);
                }
                if let Some(moved) = moved_after_ask {
                    prop_assert!(now - moved >= SLOW_DISK_EVICTION_COOLDOWN);
                }
                asks.push(now);
            }
        }
    }
}
