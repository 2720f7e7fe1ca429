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
//! - The first reading of a process anchors to whatever the wall clock says: a node that
//!   starts with a wrong clock proposes with it (bounded only by the others' timestamps being
//!   kept increasing). A jump that is never undone is followed after the next restart.

use std::time::Duration;

use bulwark_ledger::Timestamp;
use bulwark_limits::MAX_CLOCK_STEP;

#[derive(Clone, Debug, Default)]
pub struct ProposerClock {
    /// (wall, monotonic) at the last re-anchoring, in nanoseconds.
    anchor: Option<(u64, u64)>,
    now: Timestamp,
}

impl ProposerClock {
    /// Takes a reading of both clocks and returns the proposer's time.
    pub fn observe(&mut self, wall: Timestamp, monotonic: Duration) -> Timestamp {
        let mono = u64::try_from(monotonic.as_nanos()).unwrap_or(u64::MAX);
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
}

#[cfg(test)]
mod tests {
    use super::*;

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
