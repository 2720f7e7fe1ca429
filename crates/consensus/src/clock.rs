//! The proposer's clock: where the timestamps of new batches come from.
//!
//! Ledger time is the timestamps in the log, and pending transfers expire by it; a proposer
//! whose wall clock jumps would move it for good (forward: pending transfers expire early;
//! backward: nothing, timestamps only ever increase). The rule:
//!
//! - The proposer's time follows a **monotonic clock** anchored to the wall clock: between two
//!   readings it advances by exactly what the monotonic clock advanced.
//! - At each reading it **re-anchors** to the wall clock if the wall clock is within
//!   [`MAX_CLOCK_STEP`] of where the anchor says it should be (ordinary drift and NTP slewing).
//!   A wall clock further off than that has jumped; it is not followed, forward or backward,
//!   until it comes back within the bound. So a forward jump moves ledger time by at most
//!   `MAX_CLOCK_STEP` at once, and a backward jump never moves it back.
//! - The proposer's time never decreases; on top of it a batch is stamped
//!   `max(now, last + events)` as before, so timestamps stay strictly increasing.
//! - The first reading of a process anchors to whatever the wall clock says, and a jump that is
//!   never undone is followed after the next restart. So one node's clock alone must not set
//!   ledger time: every peer message carries its sender's proposer time, and a proposal is
//!   stamped no later than the **median of a majority of the voters' times plus
//!   `MAX_CLOCK_STEP`** (each peer's report advanced by the monotonic time since it arrived,
//!   and counted for [`PEER_CLOCK_FRESHNESS`]). A leader whose clock is far ahead of the
//!   others' therefore stamps at most `MAX_CLOCK_STEP` past what the majority's clocks say;
//!   with no majority of fresh reports (a sole voter, a leader cut off) its own time counts.
//!   With an even number of reports the lower middle one is taken: one slow clock among them
//!   may make a pending transfer expire late, never one fast clock early. A majority of wrong
//!   clocks wins, as a majority decides everything else.

use std::time::Duration;

use std::collections::BTreeMap;

use bulwark_ledger::Timestamp;
use bulwark_limits::{MAX_CLOCK_STEP, PEER_CLOCK_FRESHNESS};

#[derive(Clone, Debug, Default)]
pub struct ProposerClock {
    /// (wall, monotonic) at the last re-anchoring, in nanoseconds.
    anchor: Option<(u64, u64)>,
    now: Timestamp,
    /// The monotonic clock at the last reading, in nanoseconds.
    mono: u64,
    /// Per peer id: its last reported time and our monotonic clock when it arrived.
    peers: BTreeMap<u64, (u64, u64)>,
}

impl ProposerClock {
    /// Takes a reading of both clocks and returns the proposer's time.
    pub fn observe(&mut self, wall: Timestamp, monotonic: Duration) -> Timestamp {
        let mono = u64::try_from(monotonic.as_nanos()).unwrap_or(u64::MAX);
        self.mono = self.mono.max(mono);
        let now = match self.anchor {
            None => {
                self.anchor = Some((wall.0, mono));
                wall.0
            }
            Some((anchor_wall, anchor_mono)) => {
                let projected = anchor_wall.saturating_add(mono.saturating_sub(anchor_mono));
                if wall.0.abs_diff(projected) <= MAX_CLOCK_STEP.as_nanos() as u64 {
                    self.anchor = Some((wall.0, mono));
                    wall.0
                } else {
                    projected
                }
            }
        };
        self.now = self.now.max(Timestamp(now));
        self.now
    }

    /// The proposer's time as of the last reading (0 before any).
    pub fn now(&self) -> Timestamp {
        self.now
    }

    /// A peer's proposer time, as its message carried it (taken when it was sent).
    pub fn note_peer(&mut self, peer: u64, time: Timestamp) {
        self.peers.insert(peer, (time.0, self.mono));
    }

    /// The monotonic clock when the last message of `peer` arrived (None: none yet).
    pub fn heard_at(&self, peer: u64) -> Option<Duration> {
        self.peers
            .get(&peer)
            .map(|(_, at)| Duration::from_nanos(*at))
    }

    /// The time a batch proposed now is stamped no earlier than: this node's time, capped at
    /// the median of a majority of `voters`' times plus [`MAX_CLOCK_STEP`] (see the module
    /// documentation). `me` counts with its own time.
    pub fn proposal_time(&self, voters: &[u64], me: u64) -> Timestamp {
        let fresh = PEER_CLOCK_FRESHNESS.as_nanos() as u64;
        let mut times: Vec<u64> = voters
            .iter()
            .filter_map(|id| {
                if *id == me {
                    return Some(self.now.0);
                }
                let (time, at) = self.peers.get(id)?;
                let age = self.mono.saturating_sub(*at);
                (age <= fresh).then(|| time.saturating_add(age))
            })
            .collect();
        if times.len() <= voters.len() / 2 {
            return self.now;
        }
        times.sort_unstable();
        let median = times[(times.len() - 1) / 2];
        let cap = median.saturating_add(MAX_CLOCK_STEP.as_nanos() as u64);
        Timestamp(self.now.0.min(cap))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A clock read once at `wall`, monotonic `mono_ms`.
    fn read_at(wall: u64, mono_ms: u64) -> ProposerClock {
        let mut c = ProposerClock::default();
        c.observe(Timestamp(wall), Duration::from_millis(mono_ms));
        c
    }

    #[test]
    fn a_leader_far_ahead_stamps_at_most_the_step_past_the_majority() {
        let step = MAX_CLOCK_STEP.as_nanos() as u64;
        let hour = 3600 * SECOND;
        // Started an hour ahead: its own rule cannot tell.
        let mut c = read_at(1000 * SECOND + hour, 0);
        assert_eq!(c.proposal_time(&[1, 2, 3], 1).0, 1000 * SECOND + hour);
        c.note_peer(2, Timestamp(1000 * SECOND));
        c.note_peer(3, Timestamp(1000 * SECOND + SECOND / 10));
        // Median of {1000 s, 1000.1 s, 1000 s + 1 h} is 1000.1 s.
        assert_eq!(
            c.proposal_time(&[1, 2, 3], 1).0,
            1000 * SECOND + SECOND / 10 + step
        );
        // Reports age with the monotonic clock.
        c.observe(Timestamp(1001 * SECOND + hour), Duration::from_millis(1000));
        assert_eq!(
            c.proposal_time(&[1, 2, 3], 1).0,
            1001 * SECOND + SECOND / 10 + step
        );
        // Stale reports (past the freshness) leave no majority: its own time again.
        let later = PEER_CLOCK_FRESHNESS.as_millis() as u64 + 1001;
        let own = c.observe(
            Timestamp(1000 * SECOND + hour + later * 1_000_000),
            Duration::from_millis(later),
        );
        assert_eq!(c.proposal_time(&[1, 2, 3], 1), own);
    }

    #[test]
    fn one_clock_behind_or_ahead_does_not_move_an_honest_leader() {
        let mut c = read_at(1000 * SECOND, 0);
        c.note_peer(2, Timestamp(10 * SECOND)); // far behind
        c.note_peer(3, Timestamp(9000 * SECOND)); // far ahead
        assert_eq!(c.proposal_time(&[1, 2, 3], 1).0, 1000 * SECOND);
        // Two of three: the lower of the two, plus the step.
        let mut d = read_at(1000 * SECOND, 0);
        d.note_peer(2, Timestamp(9000 * SECOND));
        assert_eq!(d.proposal_time(&[1, 2, 3], 1).0, 1000 * SECOND);
        // A sole voter, and reports of non-voters, change nothing.
        let mut e = read_at(1000 * SECOND, 0);
        e.note_peer(4, Timestamp(10 * SECOND));
        assert_eq!(e.proposal_time(&[1], 1).0, 1000 * SECOND);
    }

    const SECOND: u64 = 1_000_000_000;

    fn at(clock: &mut ProposerClock, wall: u64, mono_ms: u64) -> u64 {
        clock
            .observe(Timestamp(wall), Duration::from_millis(mono_ms))
            .0
    }

    #[test]
    fn follows_a_wall_clock_that_runs_with_the_monotonic_one() {
        let mut c = ProposerClock::default();
        assert_eq!(at(&mut c, 1000 * SECOND, 0), 1000 * SECOND);
        // 100 ms drift over a second: followed.
        assert_eq!(
            at(&mut c, 1001 * SECOND + SECOND / 10, 1000),
            1001 * SECOND + SECOND / 10
        );
    }

    #[test]
    fn a_jump_ahead_is_not_followed_until_it_is_undone() {
        let mut c = ProposerClock::default();
        at(&mut c, 1000 * SECOND, 0);
        let hour = 3600 * SECOND;
        // One hour ahead: time goes on by the monotonic clock only.
        assert_eq!(
            at(&mut c, 1000 * SECOND + hour, 50),
            1000 * SECOND + SECOND / 20
        );
        assert_eq!(at(&mut c, 1003 * SECOND + hour, 3000), 1003 * SECOND);
        // Corrected back: followed again.
        assert_eq!(at(&mut c, 1004 * SECOND, 4000), 1004 * SECOND);
    }

    #[test]
    fn a_jump_back_never_moves_time_back() {
        let mut c = ProposerClock::default();
        at(&mut c, 1000 * SECOND, 0);
        assert_eq!(at(&mut c, 10 * SECOND, 1000), 1001 * SECOND);
        // A small step back (within the bound) is followed by the anchor, not by the time.
        let mut d = ProposerClock::default();
        at(&mut d, 1000 * SECOND, 0);
        assert_eq!(at(&mut d, 1000 * SECOND - SECOND / 10, 0), 1000 * SECOND);
        assert_eq!(at(&mut d, 1001 * SECOND, 1100), 1001 * SECOND);
    }

    #[test]
    fn a_step_within_the_bound_moves_time_by_at_most_the_bound() {
        let mut c = ProposerClock::default();
        at(&mut c, 1000 * SECOND, 0);
        let step = MAX_CLOCK_STEP.as_nanos() as u64;
        assert_eq!(at(&mut c, 1000 * SECOND + step, 0), 1000 * SECOND + step);
        assert_eq!(
            at(&mut c, 1000 * SECOND + 3 * step, 0),
            1000 * SECOND + step
        );
    }
}
