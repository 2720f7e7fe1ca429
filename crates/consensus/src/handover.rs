//! A graceful stop's leadership handover, as decisions (the node loop does the IO): a leader
//! that is asked to stop first hands leadership to a voter ([`crate::slow_disk::successor`]: the
//! one furthest along, in sync if any is) through Raft's leader transfer, asks again if Raft
//! gave the transfer up, and is done once another node leads. Writes that arrive meanwhile wait
//! in the replica (`Replica::write`) and go to the new leader, so a rolling restart fails none.

use std::time::Duration;

use bulwark_limits::{HANDOVER_LIMIT, HANDOVER_RETRY};

use crate::replication::FollowerReplication;
use crate::slow_disk::successor;
use crate::types::NodeId;

/// How a handover ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HandedOver {
    /// This node did not lead when asked (or another node led before it asked anyone).
    NotLeading { leader: Option<NodeId> },
    /// Leadership moved to `to`.
    To(NodeId),
    /// No other voter to hand over to (a cluster of one, or every other voter silent).
    NoSuccessor,
    /// Still leading after [`HANDOVER_LIMIT`]: the node stops anyway, and an election follows.
    GaveUp,
}

/// What the node loop does this round.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Ask Raft to transfer leadership to this voter.
    Transfer(NodeId),
    /// Nothing yet: the transfer is under way.
    Wait,
    Done(HandedOver),
}

/// A handover in progress, started at `started` (the loop's monotonic clock).
#[derive(Debug)]
pub struct Handover {
    started: Duration,
    asked_at: Option<Duration>,
}

impl Handover {
    pub fn new(now: Duration) -> Handover {
        Handover {
            started: now,
            asked_at: None,
        }
    }

    /// Called every round: `leading` with these `followers` (the leader's replication status)
    /// in a configuration of `voters`; `leader` is the leader this node knows.
    pub fn step(
        &mut self,
        now: Duration,
        leading: bool,
        leader: Option<NodeId>,
        followers: &[FollowerReplication],
        voters: &[NodeId],
    ) -> Step {
        if !leading {
            return match (self.asked_at, leader) {
                (None, leader) => Step::Done(HandedOver::NotLeading { leader }),
                // The new leader is known once its first message arrives: until then the writes
                // this node keeps have nowhere to go.
                (Some(_), Some(to)) => Step::Done(HandedOver::To(to)),
                (Some(_), None) if now.saturating_sub(self.started) < HANDOVER_LIMIT => Step::Wait,
                (Some(_), None) => Step::Done(HandedOver::GaveUp),
            };
        }
        if now.saturating_sub(self.started) >= HANDOVER_LIMIT {
            return Step::Done(HandedOver::GaveUp);
        }
        if self
            .asked_at
            .is_some_and(|at| now.saturating_sub(at) < HANDOVER_RETRY)
        {
            return Step::Wait;
        }
        match successor(followers, voters) {
            Some(to) => {
                self.asked_at = Some(now);
                Step::Transfer(to)
            }
            None if self.asked_at.is_none() => Step::Done(HandedOver::NoSuccessor),
            // Every voter fell silent after the first ask: keep trying until the limit.
            None => Step::Wait,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::LogIndex;

    fn follower(id: u64, in_sync: bool, matched: u64) -> FollowerReplication {
        FollowerReplication {
            id: NodeId(id),
            matched: LogIndex(matched),
            lag_entries: 0,
            lag_ms: 0,
            recent_active: true,
            in_sync,
        }
    }

    const MS: fn(u64) -> Duration = Duration::from_millis;

    #[test]
    fn a_leader_asks_the_best_voter_then_waits_then_asks_again() {
        let voters = [NodeId(1), NodeId(2), NodeId(3)];
        let followers = [follower(2, false, 90), follower(3, true, 100)];
        let mut h = Handover::new(MS(0));
        let step =
            |h: &mut Handover, now| h.step(MS(now), true, Some(NodeId(1)), &followers, &voters);
        assert_eq!(step(&mut h, 0), Step::Transfer(NodeId(3)));
        assert_eq!(step(&mut h, 10), Step::Wait);
        let retry = HANDOVER_RETRY.as_millis() as u64;
        assert_eq!(step(&mut h, retry), Step::Transfer(NodeId(3)));
        let limit = HANDOVER_LIMIT.as_millis() as u64;
        assert_eq!(step(&mut h, limit), Step::Done(HandedOver::GaveUp));
    }

    #[test]
    fn done_once_another_node_is_known_to_lead() {
        let voters = [NodeId(1), NodeId(2)];
        let followers = [follower(2, true, 5)];
        let mut h = Handover::new(MS(0));
        assert_eq!(
            h.step(MS(0), true, Some(NodeId(1)), &followers, &voters),
            Step::Transfer(NodeId(2))
        );
        // Deposed, the new leader not heard from yet.
        assert_eq!(h.step(MS(20), false, None, &[], &voters), Step::Wait);
        assert_eq!(
            h.step(MS(30), false, Some(NodeId(2)), &[], &voters),
            Step::Done(HandedOver::To(NodeId(2)))
        );
    }

    #[test]
    fn a_follower_or_a_lone_voter_has_nothing_to_hand_over() {
        let mut h = Handover::new(MS(0));
        assert_eq!(
            h.step(MS(0), false, Some(NodeId(2)), &[], &[NodeId(1), NodeId(2)]),
            Step::Done(HandedOver::NotLeading {
                leader: Some(NodeId(2))
            })
        );
        let mut h = Handover::new(MS(0));
        assert_eq!(
            h.step(MS(0), true, Some(NodeId(1)), &[], &[NodeId(1)]),
            Step::Done(HandedOver::NoSuccessor)
        );
        // A learner is not a voter: no successor either.
        let mut h = Handover::new(MS(0));
        assert_eq!(
            h.step(
                MS(0),
                true,
                Some(NodeId(1)),
                &[follower(4, true, 9)],
                &[NodeId(1)]
            ),
            Step::Done(HandedOver::NoSuccessor)
        );
    }
}
