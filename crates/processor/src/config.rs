//! The processor's knobs: set at start (`Config`), changed while it runs (`ControlUpdate`, the
//! body of `POST /control`, or `ProcessorHandle::update`).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::dec;
use crate::wire::BadRequest;

/// Every knob. `Default` is a healthy processor: no secret, no failures, no delay.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// When set, every request must carry `Authorization: Bearer <secret>`. Never shown by
    /// `GET /control`, never changed by `POST /control`.
    #[serde(skip)]
    pub secret: Option<String>,
    /// Probability (0..=1) of answering 503 without executing.
    pub failure_rate: f64,
    /// Probability (0..=1) that a payment id is refused; decided from the id and `seed`, so every
    /// delivery of a key gets the same decision.
    pub refuse_rate: f64,
    /// Fixed delay before every answer to a delivery.
    pub latency_ms: u64,
    /// Uniform extra delay, `0..=jitter_ms`, on top of `latency_ms`.
    pub jitter_ms: u64,
    /// Probability (0..=1) of executing a payment and answering only `slow_ms` later.
    pub slow_rate: f64,
    pub slow_ms: u64,
    /// Probability (0..=1) of executing a payment and answering 503, as if the answer were lost.
    pub lost_answer_rate: f64,
    /// While true, every delivery gets 503 and nothing is executed.
    pub down: bool,
    /// Windows, relative to the start, during which the processor is down.
    #[serde(rename = "outage")]
    pub outages: Vec<Outage>,
    /// Seed of the random draws and of the refusal decisions.
    #[serde(with = "dec")]
    pub seed: u64,
    /// Deliveries kept for `GET /v1/records`; older ones are dropped (and counted).
    pub max_records: usize,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            secret: None,
            failure_rate: 0.0,
            refuse_rate: 0.0,
            latency_ms: 0,
            jitter_ms: 0,
            slow_rate: 0.0,
            slow_ms: 0,
            lost_answer_rate: 0.0,
            down: false,
            outages: Vec::new(),
            seed: 0,
            max_records: bulwark_limits::MAX_PROCESSOR_RECORDS,
        }
    }
}

impl Config {
    /// Rates must be probabilities; a NaN would silently mean "never".
    pub fn validate(&self) -> Result<(), BadRequest> {
        for (name, rate) in [
            ("failure_rate", self.failure_rate),
            ("refuse_rate", self.refuse_rate),
            ("slow_rate", self.slow_rate),
            ("lost_answer_rate", self.lost_answer_rate),
        ] {
            if !(0.0..=1.0).contains(&rate) {
                return Err(BadRequest::new(name, format!("{rate} is not within 0..=1")));
            }
        }
        if self.max_records == 0 {
            return Err(BadRequest::new("max_records", "must be at least 1"));
        }
        Ok(())
    }

    /// Whether the processor is down `since_start` after it started.
    pub fn is_down(&self, since_start: Duration) -> bool {
        self.down || self.outages.iter().any(|o| o.contains(since_start))
    }
}

/// The body of `POST /control`: any subset of the knobs, by their `GET /control` names.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControlUpdate {
    pub failure_rate: Option<f64>,
    pub refuse_rate: Option<f64>,
    pub latency_ms: Option<u64>,
    pub jitter_ms: Option<u64>,
    pub slow_rate: Option<f64>,
    pub slow_ms: Option<u64>,
    pub lost_answer_rate: Option<f64>,
    pub down: Option<bool>,
    pub outage: Option<Vec<Outage>>,
    #[serde(default, with = "dec::option")]
    pub seed: Option<u64>,
    pub max_records: Option<usize>,
}

impl ControlUpdate {
    pub fn apply(self, c: &mut Config) {
        fn set<T>(field: &mut T, value: Option<T>) {
            if let Some(v) = value {
                *field = v;
            }
        }
        set(&mut c.failure_rate, self.failure_rate);
        set(&mut c.refuse_rate, self.refuse_rate);
        set(&mut c.latency_ms, self.latency_ms);
        set(&mut c.jitter_ms, self.jitter_ms);
        set(&mut c.slow_rate, self.slow_rate);
        set(&mut c.slow_ms, self.slow_ms);
        set(&mut c.lost_answer_rate, self.lost_answer_rate);
        set(&mut c.down, self.down);
        set(&mut c.outages, self.outage);
        set(&mut c.seed, self.seed);
        set(&mut c.max_records, self.max_records);
    }
}

/// A window the processor is down in: `START+DURATION` relative to its start, e.g. `30s+120s`
/// (units `ms`, `s`, `m`, `h`; a bare number is seconds).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outage {
    pub start: Duration,
    pub duration: Duration,
}

impl Outage {
    pub fn contains(&self, since_start: Duration) -> bool {
        since_start >= self.start && since_start < self.start.saturating_add(self.duration)
    }
}

impl FromStr for Outage {
    type Err = String;

    fn from_str(s: &str) -> Result<Outage, String> {
        let (start, duration) = s
            .split_once('+')
            .ok_or_else(|| format!("`{s}` is not START+DURATION (e.g. 30s+120s)"))?;
        Ok(Outage {
            start: parse_duration(start)?,
            duration: parse_duration(duration)?,
        })
    }
}

impl fmt::Display for Outage {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "{}ms+{}ms",
            self.start.as_millis(),
            self.duration.as_millis()
        )
    }
}

impl Serialize for Outage {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Outage {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Outage, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// `1500ms`, `30s`, `2m`, `1h`, or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("`{s}` is not a duration (e.g. 500ms, 30s, 2m)"))?;
    let millis = match unit {
        "ms" => Some(n),
        "" | "s" => n.checked_mul(1_000),
        "m" => n.checked_mul(60_000),
        "h" => n.checked_mul(3_600_000),
        _ => return Err(format!("`{s}`: the unit must be ms, s, m or h")),
    };
    millis
        .map(Duration::from_millis)
        .ok_or_else(|| format!("`{s}` is too long"))
}
