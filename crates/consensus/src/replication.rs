//! Replication status on the leader, with no IO: per follower its lag in entries and in time, and
//! the in-sync rule (the Kafka ISR idea): a follower is in sync when the leader heard from it
//! within an election timeout (its last message, not raft-rs's `recent_active`, which every
//! quorum check clears until the follower's next answer) and its match index reached
//! the leader's last index within [`IN_SYNC_WITHIN`]. The node loop answers `?ack=all` writes ([`AckAllWaiters`])
//! and reports status from it; the simulation does the same and checks the rule, and every
//! `ack=all` confirmation, against the followers' real logs.

use std::collections::HashMap;
use std::time::Duration;

use bulwark_limits::IN_SYNC_WITHIN;

use crate::types::{LogIndex, NodeId};

/// One follower as the leader sees it now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FollowerReplication {
    pub id: NodeId,
    pub matched: LogIndex,
    /// Entries behind the leader's last index.
    pub lag_entries: u64,
    /// Milliseconds since its match index last reached the leader's last index (0 while it is
    /// there); `u64::MAX` if it never did while this tracker watched.
    pub lag_ms: u64,
    pub recent_active: bool,
    pub in_sync: bool,
}

/// What the leader knows of its followers this round.
#[derive(Clone, Debug, Default)]
pub struct Replication {
    /// Empty unless this node leads.
    pub followers: Vec<FollowerReplication>,
}

impl Replication {
    /// The least match index among the in-sync followers (`LogIndex(u64::MAX)` if there are
    /// none, so that every index is at or below it): what every in-sync member holds, for
    /// `?ack=all`.
    pub fn in_sync_floor(&self) -> LogIndex {
        self.followers
            .iter()
            .filter(|f| f.in_sync)
            .map(|f| f.matched)
            .min()
            .unwrap_or(LogIndex(u64::MAX))
    }
}

/// Remembers, per follower, when its match index last reached the leader's last index and when
/// the leader last saw it active. `now` is the shell's monotonic clock (any fixed origin, never
/// going back).
#[derive(Clone, Debug)]
pub struct ReplicationTracker {
    caught_up_at: HashMap<NodeId, Duration>,
    /// One Raft tick of the shell, to tell an election timeout in time.
    tick: Duration,
}

impl Default for ReplicationTracker {
    fn default() -> Self {
        ReplicationTracker::with_tick(bulwark_limits::DEFAULT_TICK)
    }
}

impl ReplicationTracker {
    /// A tracker for a shell whose Raft tick is `tick`.
    pub fn with_tick(tick: Duration) -> Self {
        ReplicationTracker {
            caught_up_at: HashMap::new(),
            tick,
        }
    }

    /// Looks at the leader's progress of every follower at `now` and applies the in-sync rule;
    /// on a node that does not lead, nothing.
    /// `heard_at` tells when a follower's last message arrived (`Replica::heard_at`).
    pub fn observe<S: raft::Storage>(
        &mut self,
        raft: &raft::Raft<S>,
        heard_at: impl Fn(NodeId) -> Option<Duration>,
        now: Duration,
    ) -> Replication {
        let mut replication = Replication::default();
        if raft.state != raft::StateRole::Leader {
            return replication;
        }
        let last = raft.raft_log.last_index();
        for (&id, progress) in raft.prs().iter() {
            if id == raft.id {
                continue;
            }
            let id = NodeId(id);
            let caught_up = progress.matched >= last;
            if caught_up {
                self.caught_up_at.insert(id, now);
            }
            let lag_ms = self.lag_ms(id, caught_up, now).unwrap_or(u64::MAX);
            // Heard within an election timeout: what raft-rs's `recent_active` means, but that
            // flag is cleared at every quorum check until the follower's next answer, which
            // would empty the in-sync set for a moment each time and confirm every `ack=all`
            // waiter with it. So the time of the follower's last message is used instead.
            let heard_within = self.tick * raft.election_timeout() as u32;
            let heard = heard_at(id).is_some_and(|t| now.saturating_sub(t) <= heard_within);
            replication.followers.push(FollowerReplication {
                id,
                matched: LogIndex(progress.matched),
                lag_entries: last.saturating_sub(progress.matched),
                lag_ms,
                recent_active: progress.recent_active,
                in_sync: heard && lag_ms <= IN_SYNC_WITHIN.as_millis() as u64,
            });
        }
        replication
    }

    /// Follower `id`'s lag in time at `now`: 0 if it is `caught_up`, else the time since it last
    /// was (`None` if it never was while this tracker watched).
    pub fn lag_ms(&self, id: NodeId, caught_up: bool, now: Duration) -> Option<u64> {
        if caught_up {
            return Some(0);
        }
        self.caught_up_at
            .get(&id)
            .map(|t| now.saturating_sub(*t).as_millis() as u64)
    }
}

/// How an `?ack=all` waiter is settled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AckAll {
    /// Every in-sync member (and the leader) holds the write.
    Confirmed,
    /// This node stopped leading: the write, which did commit at `index`, cannot be confirmed
    /// here any more. Never a refusal: that would tell a client a durable write failed.
    Unconfirmed { index: LogIndex },
}

/// `?ack=all` waiters: writes already committed and applied whose clients also want every
/// in-sync member to hold them (Kafka's acks=all), by the log index they wait for, each with a
/// reply token `R`. The shell tells them what the leader knows each round; they say which are
/// settled and how.
#[derive(Debug)]
pub struct AckAllWaiters<R> {
    waiting: Vec<(LogIndex, R)>,
}

impl<R> Default for AckAllWaiters<R> {
    fn default() -> Self {
        AckAllWaiters {
            waiting: Vec::new(),
        }
    }
}

impl<R> AckAllWaiters<R> {
    pub fn push(&mut self, index: LogIndex, reply: R) {
        self.waiting.push((index, reply));
    }

    pub fn len(&self) -> usize {
        self.waiting.len()
    }

    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }

    /// Settles what can be: with `leading`, every waiter whose index every in-sync member holds
    /// (`in_sync_floor`, [`Replication::in_sync_floor`]) is confirmed; without it, nothing more
    /// can be, and every waiter is left unconfirmed.
    pub fn settle(&mut self, leading: bool, in_sync_floor: LogIndex) -> Vec<(LogIndex, R, AckAll)> {
        let mut settled = Vec::new();
        let mut still = Vec::new();
        for (index, reply) in self.waiting.drain(..) {
            if !leading {
                settled.push((index, reply, AckAll::Unconfirmed { index }));
            } else if in_sync_floor >= index {
                settled.push((index, reply, AckAll::Confirmed));
            } else {
                still.push((index, reply));
            }
        }
        self.waiting = still;
        settled
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waiters_settle_when_the_in_sync_floor_reaches_them() {
        let mut w = AckAllWaiters::default();
        w.push(LogIndex(5), "a");
        w.push(LogIndex(9), "b");
        assert_eq!(
            w.settle(true, LogIndex(7)),
            [(LogIndex(5), "a", AckAll::Confirmed)]
        );
        assert_eq!(w.len(), 1);
        assert!(
            w.settle(true, LogIndex(8)).is_empty(),
            "index 9 is not held by all yet"
        );
        // Held by every in-sync member exactly at its index: settled.
        assert_eq!(
            w.settle(true, LogIndex(9)),
            [(LogIndex(9), "b", AckAll::Confirmed)]
        );
        assert!(w.is_empty());
    }

    #[test]
    fn a_step_down_leaves_committed_writes_unconfirmed_not_refused() {
        let mut w = AckAllWaiters::default();
        w.push(LogIndex(5), "a");
        let unconfirmed = AckAll::Unconfirmed { index: LogIndex(5) };
        assert_eq!(
            w.settle(false, LogIndex(0)),
            [(LogIndex(5), "a", unconfirmed)]
        );
        assert!(w.is_empty());
    }
}
