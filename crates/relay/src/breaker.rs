//! A circuit breaker per processor, as a pure state machine over the times it is told: the
//! relay asks it before each delivery and tells it each outcome.
//!
//! Closed, it counts failed deliveries; [`BreakerConfig::failures`] of them within
//! [`BreakerConfig::window`] open it. Open, it lets nothing through, so that messages wait
//! (their retry count untouched) instead of failing against a processor that is down. After
//! [`BreakerConfig::open_for`] it half-opens: exactly one probe goes; the probe's success closes
//! it, its failure opens it again for another `open_for`.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BreakerConfig {
    pub failures: u32,
    pub window: Duration,
    pub open_for: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            failures: bulwark_limits::BREAKER_FAILURES,
            window: bulwark_limits::BREAKER_WINDOW,
            open_for: bulwark_limits::BREAKER_OPEN_FOR,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    Open {
        until: Instant,
    },
    /// One probe may go (`probing`: it has gone and not come back).
    HalfOpen {
        probing: bool,
    },
}

#[derive(Debug)]
pub struct Breaker {
    config: BreakerConfig,
    state: BreakerState,
    /// Failures while closed, within the window.
    failures: VecDeque<Instant>,
    /// How many times it opened and closed: what a test and the metrics read.
    pub opened: u64,
    pub closed: u64,
}

impl Breaker {
    pub fn new(config: BreakerConfig) -> Breaker {
        assert!(
            config.failures > 0,
            "a breaker opens after at least one failure"
        );
        Breaker {
            config,
            state: BreakerState::Closed,
            failures: VecDeque::new(),
            opened: 0,
            closed: 0,
        }
    }

    pub fn state(&self) -> BreakerState {
        self.state
    }

    pub fn name(&self) -> &'static str {
        match self.state {
            BreakerState::Closed => "closed",
            BreakerState::Open { .. } => "open",
            BreakerState::HalfOpen { .. } => "half_open",
        }
    }

    /// Whether a delivery may go now; a `true` while half-open is the probe.
    pub fn allow(&mut self, now: Instant) -> bool {
        match self.state {
            BreakerState::Closed => true,
            BreakerState::Open { until } if now < until => false,
            BreakerState::Open { .. } | BreakerState::HalfOpen { probing: false } => {
                self.state = BreakerState::HalfOpen { probing: true };
                true
            }
            BreakerState::HalfOpen { probing: true } => false,
        }
    }

    /// When a held-back delivery should ask again (`None`: it need not wait).
    pub fn reopens_at(&self) -> Option<Instant> {
        match self.state {
            BreakerState::Open { until } => Some(until),
            _ => None,
        }
    }

    /// A definite answer from the processor (a confirmation or a refusal): it works.
    pub fn success(&mut self) {
        if self.state != BreakerState::Closed {
            self.closed += 1;
            tracing::info!("circuit breaker closed: the processor answered");
        }
        self.state = BreakerState::Closed;
        self.failures.clear();
    }

    /// A delivery without a definite answer (an error, a timeout, a 503).
    pub fn failure(&mut self, now: Instant) {
        match self.state {
            BreakerState::Open { .. } => {}
            BreakerState::HalfOpen { .. } => self.open(now),
            BreakerState::Closed => {
                self.failures.push_back(now);
                while self
                    .failures
                    .front()
                    .is_some_and(|&at| now.saturating_duration_since(at) > self.config.window)
                {
                    self.failures.pop_front();
                }
                if self.failures.len() >= self.config.failures as usize {
                    self.open(now);
                }
            }
        }
    }

    fn open(&mut self, now: Instant) {
        self.state = BreakerState::Open {
            until: now + self.config.open_for,
        };
        self.failures.clear();
        self.opened += 1;
        tracing::warn!(
            open_for_ms = self.config.open_for.as_millis() as u64,
            "circuit breaker opened: deliveries wait"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> BreakerConfig {
        BreakerConfig {
            failures: 3,
            window: Duration::from_secs(30),
            open_for: Duration::from_secs(60),
        }
    }

    #[test]
    fn opens_after_the_failures_within_the_window_only() {
        let t0 = Instant::now();
        let mut b = Breaker::new(config());
        b.failure(t0);
        b.failure(t0 + Duration::from_secs(10));
        // The first failure leaves the window before the third arrives.
        b.failure(t0 + Duration::from_secs(31));
        assert_eq!(b.state(), BreakerState::Closed);
        b.failure(t0 + Duration::from_secs(32));
        assert!(matches!(b.state(), BreakerState::Open { .. }));
        assert_eq!(b.opened, 1);
    }

    #[test]
    fn holds_everything_while_open_then_lets_one_probe_through() {
        let t0 = Instant::now();
        let mut b = Breaker::new(config());
        for _ in 0..3 {
            b.failure(t0);
        }
        assert!(!b.allow(t0 + Duration::from_secs(59)));
        let later = t0 + Duration::from_secs(60);
        assert!(b.allow(later), "the probe");
        assert!(!b.allow(later), "only one probe at a time");
        b.failure(later);
        assert!(!b.allow(later + Duration::from_secs(59)), "open again");
        let again = later + Duration::from_secs(60);
        assert!(b.allow(again));
        b.success();
        assert_eq!(b.state(), BreakerState::Closed);
        assert!(b.allow(again) && b.allow(again));
        assert_eq!((b.opened, b.closed), (2, 1));
    }

    #[test]
    fn a_success_while_closed_forgets_earlier_failures() {
        let t0 = Instant::now();
        let mut b = Breaker::new(config());
        b.failure(t0);
        b.failure(t0);
        b.success();
        b.failure(t0);
        assert_eq!(b.state(), BreakerState::Closed);
    }
}
