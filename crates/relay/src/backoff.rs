//! Exponential backoff with full jitter: the delay before retry `n` is drawn uniformly from
//! `[0, min(max, base * 2^(n-1)))`, so that deliveries failed together (an outage) do not
//! come back together.

use std::time::Duration;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    pub base: Duration,
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            base: bulwark_limits::RELAY_BACKOFF_BASE,
            max: bulwark_limits::RELAY_BACKOFF_MAX,
        }
    }
}

impl Backoff {
    /// The cap of the delay after `failures` failed deliveries (at least 1).
    pub fn cap(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(30);
        self.base.saturating_mul(1 << doublings).min(self.max)
    }

    /// The delay after `failures` failures, `unit` a uniform draw from [0, 1).
    pub fn delay(&self, failures: u32, unit: f64) -> Duration {
        assert!((0.0..1.0).contains(&unit), "a draw from [0, 1)");
        self.cap(failures).mul_f64(unit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_doubles_up_to_the_max_and_the_delay_stays_below_it() {
        let b = Backoff {
            base: Duration::from_millis(100),
            max: Duration::from_secs(1),
        };
        let caps: Vec<u64> = (1..=6).map(|n| b.cap(n).as_millis() as u64).collect();
        assert_eq!(caps, vec![100, 200, 400, 800, 1000, 1000]);
        assert_eq!(b.cap(u32::MAX), Duration::from_secs(1));
        assert_eq!(b.delay(3, 0.0), Duration::ZERO);
        assert_eq!(b.delay(3, 0.5), Duration::from_millis(200));
        assert!(b.delay(3, 0.999_999) < Duration::from_millis(400));
    }
}
