//! How a call retries (back-off with full jitter, attempts, a deadline) and when a node's
//! circuit breaker keeps it out.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::limits;

/// How one call retries. Every retry resends the exact same request (a batch with the same
/// ids), so a retry can never apply a transfer twice.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (1: never retry).
    pub max_attempts: u32,
    /// The first back-off's ceiling; doubled for each retry up to `max_delay`.
    pub base_delay: Duration,
    pub max_delay: Duration,
    /// How long the call may take in all; no attempt starts after it.
    pub deadline: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: limits::DEFAULT_MAX_ATTEMPTS,
            base_delay: limits::DEFAULT_BASE_DELAY,
            max_delay: limits::DEFAULT_MAX_DELAY,
            deadline: limits::DEFAULT_DEADLINE,
        }
    }
}

impl RetryPolicy {
    /// One attempt and no retry: for a caller that records each attempt as its own operation
    /// (`bulwark chaos`), or retries by itself.
    pub fn none() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 1,
            ..RetryPolicy::default()
        }
    }

    /// The wait before retry `retry` (1 for the first retry): uniform in zero to
    /// `base_delay * 2^(retry-1)`, capped at `max_delay` ("full jitter": clients that failed
    /// together spread out instead of retrying in step).
    pub(crate) fn backoff(&self, retry: u32) -> Duration {
        let ceiling = self
            .base_delay
            .saturating_mul(1u32 << retry.saturating_sub(1).min(20))
            .min(self.max_delay);
        let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(random() % nanos.saturating_add(1))
    }
}

/// When a node's breaker opens and for how long.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BreakerPolicy {
    /// Consecutive failures (no answer, or a `5xx`) that open the breaker.
    pub failures_to_open: u32,
    /// How long an open breaker skips its node before it lets one probe through.
    pub cool_down: Duration,
}

impl Default for BreakerPolicy {
    fn default() -> Self {
        BreakerPolicy {
            failures_to_open: limits::DEFAULT_BREAKER_FAILURES,
            cool_down: limits::DEFAULT_BREAKER_COOL_DOWN,
        }
    }
}

/// One node's breaker: closed (count failures), open until a time, or half open (one probe
/// out; its result closes or reopens it).
#[derive(Debug, Default)]
pub(crate) struct Breaker {
    failures: u32,
    open_until: Option<Instant>,
    probing: bool,
}

impl Breaker {
    /// Whether a request may go to the node now; an open breaker past its cool-down lets this
    /// one request through as its probe.
    pub(crate) fn admit(&mut self, now: Instant) -> bool {
        match self.open_until {
            None => true,
            Some(_) if self.probing => false,
            Some(until) if now >= until => {
                self.probing = true;
                true
            }
            Some(_) => false,
        }
    }

    /// When the node may next be tried (`None`: now).
    pub(crate) fn next_try(&self) -> Option<Instant> {
        self.open_until.filter(|_| !self.probing)
    }

    pub(crate) fn succeeded(&mut self) {
        *self = Breaker::default();
    }

    pub(crate) fn failed(&mut self, policy: &BreakerPolicy, now: Instant) {
        self.failures = self.failures.saturating_add(1);
        if self.probing || self.failures >= policy.failures_to_open {
            self.open_until = Some(now + policy.cool_down);
            self.probing = false;
        }
    }

    /// A request that was admitted but never judged (cancelled): a probe goes back.
    pub(crate) fn released(&mut self) {
        self.probing = false;
    }
}

/// A number for jitter: not for secrets, only to spread clients apart (splitmix64 of the
/// clock and a counter, so that two clients in one process differ too).
fn random() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let mut z = nanos ^ COUNTER.fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_stays_under_its_doubling_ceiling() {
        let p = RetryPolicy::default();
        for retry in 1..30 {
            let ceiling = (p.base_delay * 2u32.pow((retry - 1).min(20))).min(p.max_delay);
            assert!(p.backoff(retry) <= ceiling);
        }
    }

    #[test]
    fn a_breaker_opens_after_its_failures_and_lets_one_probe_through() {
        let policy = BreakerPolicy {
            failures_to_open: 2,
            cool_down: Duration::from_secs(5),
        };
        let mut b = Breaker::default();
        let t0 = Instant::now();
        b.failed(&policy, t0);
        assert!(b.admit(t0));
        b.failed(&policy, t0);
        assert!(!b.admit(t0 + Duration::from_secs(1)));
        let later = t0 + Duration::from_secs(6);
        assert!(b.admit(later), "one probe after the cool-down");
        assert!(!b.admit(later), "and only one");
        b.failed(&policy, later);
        assert!(
            !b.admit(later + Duration::from_secs(1)),
            "a failed probe reopens it"
        );
        assert!(b.admit(later + Duration::from_secs(6)));
        b.succeeded();
        assert!(b.admit(later + Duration::from_secs(6)) && b.admit(later));
    }
}
