//! The relay's work for one term of this node's leadership: read the outbox from where it
//! stands, deliver what is due, settle what the processors answered. Everything here is
//! forgotten when the term ends (the next leader reads the outbox again), so nothing in it
//! needs to survive a crash: the outbox in the state store is the only record.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bulwark_ledger::outbox::{OutboxCommand, OutboxMessage, OutboxResult, Settlement};
use bulwark_ledger::{AccountId, BatchResults, Operation, Timestamp, Transfer, TransferId};
use bulwark_node::{Answer, NodeHandle, Query};
use bulwark_processor::PaymentAnswer;
use tokio::task::JoinSet;

use crate::breaker::Breaker;
use crate::config::RelayConfig;
use crate::deliver::{self, Delivered};
use crate::status::RelayStatus;

/// Why a term's work ended.
#[derive(Debug)]
pub(crate) enum TermEnd {
    /// A processor has seen a higher term: this node is deposed, whatever it believes.
    Deposed { highest_term: u64 },
    /// The node stopped serving.
    NodeGone,
}

/// One payment the relay holds.
struct Item {
    message: OutboxMessage,
    pending: Transfer,
    failures: u32,
    next_at: Instant,
    last_error: String,
    /// The processor's definite answer (or retries exhausted), waiting to be settled.
    settlement: Option<Settlement>,
    busy: bool,
}

pub(crate) struct Term {
    handle: NodeHandle,
    config: Arc<RelayConfig>,
    status: Arc<Mutex<RelayStatus>>,
    term: u64,
    cluster: u64,
    client: reqwest::Client,
    items: BTreeMap<TransferId, Item>,
    /// Messages queued at or before this are in `items` or settled.
    cursor: Timestamp,
    /// The outbox was read once with a linearizable read (everything settled before this term
    /// is seen as settled).
    caught_up: bool,
    /// Something was applied since the last read of the outbox (it may hold new payments).
    outbox_changed: bool,
    last_read: Instant,
    breakers: HashMap<String, Breaker>,
    /// Each breaker's openings already added to the metrics' counter.
    opened_counted: HashMap<String, u64>,
    unrouted: std::collections::BTreeSet<AccountId>,
    deliveries: JoinSet<(TransferId, Delivered)>,
    settles: JoinSet<Settled>,
}

/// A settle batch's payments and what the ledger answered (or why the write failed).
type Settled = (Vec<TransferId>, Result<Vec<OutboxResult>, String>);

impl Term {
    pub(crate) fn new(
        handle: NodeHandle,
        config: Arc<RelayConfig>,
        status: Arc<Mutex<RelayStatus>>,
        (term, cluster): (u64, u64),
    ) -> Term {
        let client = reqwest::Client::builder()
            .timeout(config.request_timeout)
            .build()
            .expect("an HTTP client without TLS settings builds");
        // A breaker per configured processor from the start: its metrics show (closed) before
        // the first delivery.
        let breakers = config
            .routes
            .values()
            .chain(&config.default_route)
            .map(|url| (url.clone(), Breaker::new(config.breaker)))
            .collect();
        Term {
            handle,
            config,
            status,
            term,
            cluster,
            client,
            items: BTreeMap::new(),
            cursor: Timestamp(0),
            caught_up: false,
            outbox_changed: true,
            last_read: Instant::now(),
            breakers,
            opened_counted: HashMap::new(),
            unrouted: Default::default(),
            deliveries: JoinSet::new(),
            settles: JoinSet::new(),
        }
    }

    /// Runs until the term's work cannot go on.
    pub(crate) async fn run(mut self) -> TermEnd {
        let mut applied = self.handle.watch_applied();
        loop {
            if let Err(end) = self.refill().await {
                return end;
            }
            self.start_deliveries();
            self.start_settles();
            self.publish();
            let wake = self.next_wake();
            // Applied batches matter only while there is room for what they may have queued:
            // otherwise a busy ledger would wake the relay for every batch, for nothing.
            let room = self.items.len() < bulwark_limits::RELAY_QUEUE;
            tokio::select! {
                Some(done) = self.deliveries.join_next() => {
                    let (payment, delivered) = done.expect("a delivery task does not panic");
                    if let Some(end) = self.delivered(payment, delivered) {
                        return end;
                    }
                }
                Some(done) = self.settles.join_next() => {
                    let (payments, settled) = done.expect("a settle task does not panic");
                    self.settled(payments, settled);
                }
                changed = applied.changed(), if room => {
                    if changed.is_err() {
                        return TermEnd::NodeGone;
                    }
                    self.outbox_changed = true;
                }
                _ = tokio::time::sleep_until(wake.into()) => {}
            }
        }
    }

    /// Reads outbound messages queued after the cursor while there is room. The first read of
    /// a term is linearizable: it waits until this leader has applied everything committed
    /// before it, so nothing an earlier leader settled is delivered again needlessly.
    async fn refill(&mut self) -> Result<(), TermEnd> {
        let room = bulwark_limits::RELAY_QUEUE.saturating_sub(self.items.len());
        // At most one read per `RELAY_READ_EVERY`, and none while nothing was applied: each is a
        // request in the node's loop.
        let due = self.last_read.elapsed() >= bulwark_limits::RELAY_READ_EVERY;
        if room == 0 || (self.caught_up && !(self.outbox_changed && due)) {
            return Ok(());
        }
        self.last_read = Instant::now();
        self.outbox_changed = false;
        let query = Query::Outbound {
            after: self.cursor,
            limit: room,
        };
        let read = if self.caught_up {
            self.handle.read_stale(query).await
        } else {
            self.handle.read(query).await
        };
        let page = match read {
            Ok(outcome) => match outcome.answer {
                Answer::Outbound(page) => page,
                other => unreachable!("an outbound query answered {other:?}"),
            },
            Err(bulwark_node::RequestError::Stopped) => return Err(TermEnd::NodeGone),
            Err(e) => {
                tracing::debug!(error = %e, "reading the outbox failed; trying again");
                tokio::time::sleep(Duration::from_millis(50)).await;
                return Ok(());
            }
        };
        self.caught_up = true;
        let now = Instant::now();
        for (message, pending) in page {
            self.cursor = self.cursor.max(message.queued_at);
            self.items.insert(
                message.payment,
                Item {
                    message,
                    pending,
                    failures: 0,
                    next_at: now,
                    last_error: String::new(),
                    settlement: None,
                    busy: false,
                },
            );
        }
        Ok(())
    }

    /// Starts the deliveries that are due, as far as the bulkhead and the breakers allow.
    fn start_deliveries(&mut self) {
        let now = Instant::now();
        let mut room = self
            .config
            .max_in_flight
            .saturating_sub(self.deliveries.len());
        for (payment, item) in &mut self.items {
            if room == 0 {
                break;
            }
            if item.busy || item.settlement.is_some() || item.next_at > now {
                continue;
            }
            let Some(url) = self.config.route(item.message.processor) else {
                if self.unrouted.insert(item.message.processor) {
                    tracing::warn!(
                        account = %item.message.processor,
                        "payments to this external account wait: no processor is configured \
                         for it (bulwark start --processor)"
                    );
                }
                continue;
            };
            let breaker = self
                .breakers
                .entry(url.to_string())
                .or_insert_with(|| Breaker::new(self.config.breaker));
            if !breaker.allow(now) {
                continue;
            }
            let request = deliver::request(&item.message, &item.pending, self.term, self.cluster);
            let (client, url) = (self.client.clone(), url.to_string());
            let secret = self.config.secret.clone();
            let payment = *payment;
            self.deliveries.spawn(async move {
                let answer = deliver::deliver(&client, &url, secret.as_deref(), &request).await;
                (payment, answer)
            });
            item.busy = true;
            room -= 1;
        }
    }

    /// Acts on a delivery's outcome; `Some` ends the term's work.
    fn delivered(&mut self, payment: TransferId, delivered: Delivered) -> Option<TermEnd> {
        let item = self.items.get_mut(&payment)?;
        item.busy = false;
        let url = self
            .config
            .route(item.message.processor)
            .expect("a delivered payment has a route")
            .to_string();
        let breaker = self
            .breakers
            .get_mut(&url)
            .expect("a breaker per route used");
        let now = Instant::now();
        let outcome = match &delivered {
            Ok(PaymentAnswer::Confirmed { .. }) => "confirmed",
            Ok(PaymentAnswer::Refused { .. }) => "refused",
            Ok(PaymentAnswer::StaleTerm { .. }) => "stale_term",
            Ok(PaymentAnswer::Unavailable) | Err(_) => "failed",
        };
        self.handle
            .metrics
            .relay_deliveries
            .get_or_create(&bulwark_node::metrics::OutcomeLabels { outcome })
            .inc();
        let mut status = self.status.lock().expect("relay status lock");
        status.deliveries += 1;
        match delivered {
            Ok(PaymentAnswer::Confirmed { reference, .. }) => {
                breaker.success();
                status.confirmed += 1;
                item.settlement = Some(Settlement::Confirmed { reference });
            }
            Ok(PaymentAnswer::Refused { reason, .. }) => {
                breaker.success();
                status.refused += 1;
                item.settlement = Some(Settlement::Refused { reason });
            }
            Ok(PaymentAnswer::StaleTerm { highest_term }) => {
                return Some(TermEnd::Deposed { highest_term });
            }
            Ok(PaymentAnswer::Unavailable) => {
                drop(status);
                self.failed(payment, &url, "the processor answered 503".into(), now);
            }
            Err(error) => {
                drop(status);
                self.failed(payment, &url, error, now);
            }
        }
        None
    }

    /// A delivery without a definite answer: counts against the breaker and the payment's
    /// attempts; the payment is retried after its backoff, or given up.
    fn failed(&mut self, payment: TransferId, url: &str, error: String, now: Instant) {
        let item = self.items.get_mut(&payment).expect("a failed item is held");
        self.breakers
            .get_mut(url)
            .expect("a breaker per route used")
            .failure(now);
        item.failures += 1;
        let mut status = self.status.lock().expect("relay status lock");
        status.failures += 1;
        tracing::debug!(%payment, failures = item.failures, %error, "delivery failed");
        if item.failures >= self.config.max_attempts {
            status.exhausted += 1;
            item.settlement = Some(Settlement::Exhausted {
                attempts: item.failures,
                last_error: bulwark_ledger::outbox::bounded_text(&error),
            });
        } else {
            item.next_at = now + self.config.backoff.delay(item.failures, fastrand::f64());
        }
        item.last_error = error;
    }

    /// Proposes the settlements waiting, a batch at a time.
    fn start_settles(&mut self) {
        while self.settles.len() < bulwark_limits::RELAY_SETTLES_IN_FLIGHT {
            let now = Instant::now();
            let mut commands = Vec::new();
            let mut payments = Vec::new();
            for (payment, item) in &mut self.items {
                if commands.len() == bulwark_limits::RELAY_SETTLE_BATCH {
                    break;
                }
                let Some(outcome) = item.settlement.clone() else {
                    continue;
                };
                if item.busy || item.next_at > now {
                    continue;
                }
                item.busy = true;
                payments.push(*payment);
                commands.push(OutboxCommand::Settle {
                    payment: *payment,
                    pending: item.message.pending,
                    round: item.message.retries,
                    transfer: TransferId(fastrand::u128(1..u128::MAX)),
                    term: self.term,
                    outcome,
                });
            }
            if commands.is_empty() {
                return;
            }
            let handle = self.handle.clone();
            self.settles.spawn(async move {
                let outcome = handle.write(Operation::Outbox(commands)).await;
                let results = outcome.map_err(|e| e.to_string()).map(|o| match o.results {
                    BatchResults::Outbox(r) => r,
                    other => unreachable!("an outbox batch answered {other:?}"),
                });
                (payments, results)
            });
        }
    }

    /// Acts on a settle batch's results.
    fn settled(&mut self, payments: Vec<TransferId>, settled: Result<Vec<OutboxResult>, String>) {
        let results = match settled {
            Ok(results) => results,
            Err(error) => {
                tracing::debug!(%error, "settling failed; trying again");
                let retry_at = Instant::now() + Duration::from_millis(100);
                for payment in payments {
                    if let Some(item) = self.items.get_mut(&payment) {
                        item.busy = false;
                        item.next_at = retry_at;
                    }
                }
                return;
            }
        };
        for (payment, result) in payments.into_iter().zip(results) {
            self.settled_one(payment, result);
        }
    }

    fn settled_one(&mut self, payment: TransferId, result: OutboxResult) {
        let Some(item) = self.items.get_mut(&payment) else {
            return;
        };
        item.busy = false;
        match result {
            // The settling transfer's random id was taken: the same settlement, another id.
            OutboxResult::Transfer(bulwark_ledger::CreateTransferResult::Exists) => {}
            OutboxResult::Ok | OutboxResult::NotFound | OutboxResult::NotOutbound => {
                let settled = self.items.remove(&payment).expect("held");
                let mut status = self.status.lock().expect("relay status lock");
                status.settled += 1;
                if result.is_ok() && settled.failures > 0 {
                    tracing::debug!(%payment, failures = settled.failures, "settled after retries");
                }
            }
            other => {
                // The outbox refused the settlement for a reason of the ledger's; the message
                // stays outbound in the state store and the next leader tries again.
                tracing::error!(%payment, result = other.name(), "a settlement was refused");
                self.items.remove(&payment);
            }
        }
    }

    /// When something held becomes due, at the latest in a second.
    /// A payment already due but held back (by a breaker, or a full bulkhead) is started when
    /// that changes: a delivery ends, or a breaker's time comes.
    fn next_wake(&self) -> Instant {
        let now = Instant::now();
        let mut wake = now + Duration::from_secs(1);
        if self.outbox_changed {
            wake = wake.min(self.last_read + bulwark_limits::RELAY_READ_EVERY);
        }
        for item in self.items.values().filter(|i| !i.busy && i.next_at > now) {
            wake = wake.min(item.next_at);
        }
        for breaker in self.breakers.values() {
            if let Some(at) = breaker.reopens_at() {
                wake = wake.min(at);
            }
        }
        wake
    }

    fn publish(&mut self) {
        for (url, breaker) in &self.breakers {
            let labels = bulwark_node::metrics::ProcessorLabels {
                processor: url.clone(),
            };
            let metrics = &self.handle.metrics;
            let open = breaker.state() != crate::breaker::BreakerState::Closed;
            metrics
                .relay_breaker_open
                .get_or_create(&labels)
                .set(i64::from(open));
            let counted = self.opened_counted.entry(url.clone()).or_default();
            metrics
                .relay_breaker_opened
                .get_or_create(&labels)
                .inc_by(breaker.opened - *counted);
            *counted = breaker.opened;
        }
        let mut status = self.status.lock().expect("relay status lock");
        status.term = self.term;
        status.held = self.items.len();
        status.in_flight = self.deliveries.len();
        status.breakers = self
            .breakers
            .iter()
            .map(|(url, b)| crate::status::BreakerStatus {
                processor: url.clone(),
                state: b.name(),
                opened: b.opened,
                closed: b.closed,
            })
            .collect();
    }
}
