//! What the processor remembers (the highest term, each key's outcome, the deliveries) and how it
//! decides a delivery. Deciding and storing happen under one lock, so two deliveries of one key
//! racing each other still execute it once; only the delays happen outside it.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::dec;
use crate::wire::{PaymentAnswer, PaymentReply, PaymentRequest};

/// Why a refused payment was refused: the only reason this stand-in has.
pub const REFUSE_REASON: &str = "refused by the stand-in processor (refuse_rate)";

/// What became of one delivery.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Confirmed,
    Refused,
    DuplicateConfirmed,
    DuplicateRefused,
    StaleTerm,
    /// `failure_rate` (or the key table full): 503, nothing executed.
    Failed,
    Down,
    /// Executed, then answered 503 as if the answer were lost.
    LostAnswer,
    /// Executed, answered `slow_ms` late.
    Slow,
    BadRequest,
    Unauthorized,
}

impl Outcome {
    pub const ALL: [Outcome; 11] = [
        Outcome::Confirmed,
        Outcome::Refused,
        Outcome::DuplicateConfirmed,
        Outcome::DuplicateRefused,
        Outcome::StaleTerm,
        Outcome::Failed,
        Outcome::Down,
        Outcome::LostAnswer,
        Outcome::Slow,
        Outcome::BadRequest,
        Outcome::Unauthorized,
    ];
}

/// One delivery, in arrival order. `payment_id` and `term` are what the headers said when the
/// delivery was refused before its body was read (absent when they were unreadable too).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub seq: u64,
    #[serde(with = "dec::option")]
    pub payment_id: Option<u128>,
    #[serde(with = "dec::option")]
    pub term: Option<u64>,
    /// Milliseconds since the processor started.
    pub at_ms: u64,
    pub outcome: Outcome,
}

/// Counts since the start (dropped records included) and the invariants a test checks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    /// Deliveries per outcome; every outcome is present, zero or not.
    pub counts: BTreeMap<Outcome, u64>,
    pub deliveries: u64,
    #[serde(with = "dec")]
    pub highest_term: u64,
    /// Payments executed (confirmed, lost_answer and slow deliveries).
    pub executed: u64,
    /// Most executions of any one key: the processor's promise is that this never exceeds 1.
    pub executed_per_key_max: u32,
    /// Keys with a stored outcome (confirmed or refused).
    pub keys: usize,
    pub records_kept: usize,
    /// Records dropped, oldest first, past `max_records`: `GET /v1/records` starts after them.
    pub records_dropped: u64,
}

/// A key's stored outcome, as `GET /v1/payments/{id}` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payment {
    #[serde(with = "dec")]
    pub payment_id: u128,
    /// `Confirmed` or `Refused`, `duplicate` false: the answer its first decision gave.
    #[serde(flatten)]
    pub answer: PaymentAnswer,
    /// The term of the delivery that decided it.
    #[serde(with = "dec")]
    pub term: u64,
    pub at_ms: u64,
    pub executions: u32,
    /// Later deliveries answered from the stored outcome.
    pub duplicates: u64,
}

struct Stored {
    /// `None` for a refusal: a refused payment has no processor reference.
    reference: Option<u64>,
    term: u64,
    at_ms: u64,
    executions: u32,
    duplicates: u64,
}

impl Stored {
    fn answer(&self, duplicate: bool) -> PaymentAnswer {
        match self.reference {
            Some(n) => PaymentAnswer::Confirmed {
                reference: format!("pay-{n:06}"),
                duplicate,
            },
            None => PaymentAnswer::Refused {
                reason: REFUSE_REASON.to_string(),
                duplicate,
            },
        }
    }
}

/// How to answer a delivery: `delay` after the decision.
pub(crate) struct Decision {
    pub reply: PaymentReply,
    pub outcome: Outcome,
    pub delay: Duration,
}

pub(crate) struct State {
    pub config: Config,
    rng: fastrand::Rng,
    highest_term: u64,
    payments: HashMap<u128, Stored>,
    records: VecDeque<Record>,
    next_seq: u64,
    dropped: u64,
    counts: BTreeMap<Outcome, u64>,
    executed: u64,
    executed_per_key_max: u32,
    last_reference: u64,
}

impl State {
    pub fn new(config: Config) -> State {
        State {
            rng: fastrand::Rng::with_seed(config.seed),
            config,
            highest_term: 0,
            payments: HashMap::new(),
            records: VecDeque::new(),
            next_seq: 0,
            dropped: 0,
            counts: Outcome::ALL.iter().map(|o| (*o, 0)).collect(),
            executed: 0,
            executed_per_key_max: 0,
            last_reference: 0,
        }
    }

    /// Replaces the knobs; a new seed restarts the random draws from it.
    pub fn set_config(&mut self, config: Config) {
        if config.seed != self.config.seed {
            self.rng = fastrand::Rng::with_seed(config.seed);
        }
        self.config = config;
        self.trim_records();
    }

    /// Decides, records and (maybe) executes one well-formed, authorized delivery.
    pub fn deliver(&mut self, req: &PaymentRequest, since_start: Duration) -> Decision {
        let at_ms = millis(since_start);
        let latency = self.latency();
        let (outcome, answer, extra) = self.decide(req, since_start, at_ms);
        self.record(Some(req.payment_id), Some(req.term), outcome, at_ms);
        let about_a_key = matches!(
            answer,
            PaymentAnswer::Confirmed { .. } | PaymentAnswer::Refused { .. }
        );
        Decision {
            reply: PaymentReply {
                payment_id: about_a_key.then_some(req.payment_id),
                answer,
            },
            outcome,
            delay: latency + extra,
        }
    }

    /// The checks in the protocol's order (auth and validation came before): down, term
    /// fencing, failure_rate, dedup, refuse_rate, execute.
    fn decide(
        &mut self,
        req: &PaymentRequest,
        since_start: Duration,
        at_ms: u64,
    ) -> (Outcome, PaymentAnswer, Duration) {
        let unavailable = |outcome| (outcome, PaymentAnswer::Unavailable, Duration::ZERO);
        if self.config.is_down(since_start) {
            return unavailable(Outcome::Down);
        }
        if req.term < self.highest_term {
            let highest_term = self.highest_term;
            let answer = PaymentAnswer::StaleTerm { highest_term };
            return (Outcome::StaleTerm, answer, Duration::ZERO);
        }
        self.highest_term = req.term;
        if self.draw(self.config.failure_rate) {
            return unavailable(Outcome::Failed);
        }
        if let Some(stored) = self.payments.get_mut(&req.payment_id) {
            stored.duplicates += 1;
            let outcome = match stored.reference {
                Some(_) => Outcome::DuplicateConfirmed,
                None => Outcome::DuplicateRefused,
            };
            return (outcome, stored.answer(true), Duration::ZERO);
        }
        if self.payments.len() >= bulwark_limits::MAX_PROCESSOR_PAYMENTS {
            tracing::warn!(payment_id = %req.payment_id, "the key table is full; answering 503");
            return unavailable(Outcome::Failed);
        }
        if refused(self.config.seed, req.payment_id, self.config.refuse_rate) {
            let stored = self.store(req, None, at_ms);
            return (Outcome::Refused, stored.answer(false), Duration::ZERO);
        }
        self.execute(req, at_ms)
    }

    /// Makes the payment, then chooses how (whether) the sender hears of it.
    fn execute(&mut self, req: &PaymentRequest, at_ms: u64) -> (Outcome, PaymentAnswer, Duration) {
        self.last_reference += 1;
        let stored = self.store(req, Some(self.last_reference), at_ms);
        // Counted on the entry, not assumed: a dedup bug shows up as a second execution.
        stored.executions += 1;
        let executions = stored.executions;
        let answer = stored.answer(false);
        self.executed += 1;
        self.executed_per_key_max = self.executed_per_key_max.max(executions);
        if self.draw(self.config.lost_answer_rate) {
            return (
                Outcome::LostAnswer,
                PaymentAnswer::Unavailable,
                Duration::ZERO,
            );
        }
        if self.draw(self.config.slow_rate) {
            let slow = Duration::from_millis(self.config.slow_ms);
            return (Outcome::Slow, answer, slow);
        }
        (Outcome::Confirmed, answer, Duration::ZERO)
    }

    fn store(&mut self, req: &PaymentRequest, reference: Option<u64>, at_ms: u64) -> &mut Stored {
        let stored = self.payments.entry(req.payment_id).or_insert(Stored {
            reference,
            term: req.term,
            at_ms,
            executions: 0,
            duplicates: 0,
        });
        stored.reference = reference;
        stored
    }

    /// Records a delivery of any outcome, dropping the oldest record past `max_records`.
    pub fn record(
        &mut self,
        payment_id: Option<u128>,
        term: Option<u64>,
        outcome: Outcome,
        at_ms: u64,
    ) {
        self.next_seq += 1;
        *self.counts.entry(outcome).or_insert(0) += 1;
        self.records.push_back(Record {
            seq: self.next_seq,
            payment_id,
            term,
            at_ms,
            outcome,
        });
        self.trim_records();
    }

    fn trim_records(&mut self) {
        while self.records.len() > self.config.max_records {
            self.records.pop_front();
            self.dropped += 1;
        }
    }

    fn draw(&mut self, rate: f64) -> bool {
        // No draw for a zero rate: turning a knob on does not reshuffle the others' draws
        // before it.
        rate > 0.0 && self.rng.f64() < rate
    }

    fn latency(&mut self) -> Duration {
        let jitter = match self.config.jitter_ms {
            0 => 0,
            j => self.rng.u64(0..=j),
        };
        Duration::from_millis(self.config.latency_ms.saturating_add(jitter))
    }

    /// Records after `after` (a seq), at most `limit` of them.
    pub fn records(&self, after: u64, limit: usize) -> Vec<Record> {
        let first = self.records.front().map_or(0, |r| r.seq);
        let skip = after.saturating_add(1).saturating_sub(first);
        let skip = usize::try_from(skip).unwrap_or(usize::MAX);
        self.records
            .iter()
            .skip(skip)
            .take(limit)
            .cloned()
            .collect()
    }

    pub fn summary(&self) -> Summary {
        Summary {
            counts: self.counts.clone(),
            deliveries: self.next_seq,
            highest_term: self.highest_term,
            executed: self.executed,
            executed_per_key_max: self.executed_per_key_max,
            keys: self.payments.len(),
            records_kept: self.records.len(),
            records_dropped: self.dropped,
        }
    }

    pub fn payment(&self, payment_id: u128) -> Option<Payment> {
        self.payments.get(&payment_id).map(|s| Payment {
            payment_id,
            answer: s.answer(false),
            term: s.term,
            at_ms: s.at_ms,
            executions: s.executions,
            duplicates: s.duplicates,
        })
    }
}

pub(crate) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Whether `refuse_rate` refuses this key: a hash of the key and the seed, not a draw, so every
/// delivery of a key (and every run with the seed) decides the same.
fn refused(seed: u64, payment_id: u128, rate: f64) -> bool {
    let lo = payment_id as u64;
    let hi = (payment_id >> 64) as u64;
    let h = mix(mix(seed ^ lo) ^ hi);
    // The top 53 bits as a uniform fraction in [0, 1).
    let unit = (h >> 11) as f64 / (1u64 << 53) as f64;
    unit < rate
}

/// splitmix64's finalizer: every input bit moves every output bit.
fn mix(z: u64) -> u64 {
    let z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    let z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}
