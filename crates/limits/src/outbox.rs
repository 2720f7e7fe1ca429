//! The bounds of the payment relay that drives the outbox to external processors, and of the
//! stand-in processor (`bulwark processor`) its tests and demos run against: defaults that
//! `bulwark start --relay-*` can change, unlike the node's own bounds in the crate root.

use std::time::Duration;

use super::{ms, MAX_BATCH_EVENTS, MAX_BODY_BYTES, MAX_INFLIGHT_WRITES};

// The outbox relay (defaults; `bulwark start --relay-*` sets each)

/// How long the relay waits for a processor's answer to one delivery before it counts the
/// delivery as failed (indefinite) and retries it later with the same key.
pub const RELAY_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// The first retry's backoff cap; each further failure doubles it (full jitter: the delay is
/// drawn uniformly below the cap, so that retries after an outage do not arrive together).
pub const RELAY_BACKOFF_BASE: Duration = Duration::from_millis(200);
/// The largest backoff cap.
pub const RELAY_BACKOFF_MAX: Duration = Duration::from_secs(30);
/// Deliveries without a definite answer after which a payment is voided and dead-lettered.
/// Deliveries the breaker holds back do not count.
pub const RELAY_MAX_ATTEMPTS: u32 = 10;
/// A processor's circuit breaker opens after this many failed deliveries within
/// [`BREAKER_WINDOW`] ...
pub const BREAKER_FAILURES: u32 = 5;
pub const BREAKER_WINDOW: Duration = Duration::from_secs(30);
/// ... and lets one probe through after it was open this long; the probe's success closes it.
pub const BREAKER_OPEN_FOR: Duration = Duration::from_secs(60);
/// Deliveries in flight at once, over all processors: the relay's bulkhead towards the outside.
pub const RELAY_MAX_IN_FLIGHT: usize = 64;
/// Outbound payments the relay holds in memory at once; the rest wait in the outbox (the state
/// store) until these are settled, so an outbox of millions costs the relay a bounded amount.
pub const RELAY_QUEUE: usize = 4096;
/// Settlements proposed together in one outbox batch.
pub const RELAY_SETTLE_BATCH: usize = 256;
/// The relay reads the outbox at most this often (and only after something was applied): a
/// payment waits at most this long to be seen, and a busy ledger costs the relay's reads a
/// bounded share of the node loop.
pub const RELAY_READ_EVERY: Duration = Duration::from_millis(10);
/// Settlement batches in flight at once: with [`RELAY_SETTLE_BATCH`], what the relay may put in
/// the node's write path at a time (its bulkhead towards the ledger's clients).
pub const RELAY_SETTLES_IN_FLIGHT: usize = 4;

const _: () = assert!(RELAY_MAX_IN_FLIGHT <= RELAY_QUEUE);
const _: () = assert!(ms(RELAY_BACKOFF_BASE) <= ms(RELAY_BACKOFF_MAX));
const _: () = assert!(RELAY_SETTLE_BATCH <= MAX_BATCH_EVENTS);
const _: () = assert!(RELAY_SETTLES_IN_FLIGHT < MAX_INFLIGHT_WRITES);

// The stand-in payment processor

/// Deliveries the stand-in processor (`bulwark processor`) keeps in memory for `GET
/// /v1/records`: about 64 bytes each, so 2 M is ~128 MiB, enough for hours of a demo or a long
/// chaos run. Past it the oldest are dropped (the counts go on; the summary says how many).
pub const MAX_PROCESSOR_RECORDS: usize = 2_000_000;

/// Payment ids the stand-in processor remembers the outcome of. It may never forget one (a
/// forgotten key would be executed again on a retry), so past this it answers new keys 503,
/// indefinite, which a sender retries rather than takes as a refusal. ~80 bytes a key: ~320 MiB.
pub const MAX_PROCESSOR_PAYMENTS: usize = 4_000_000;

/// Largest delivery body the stand-in processor reads: a payment is a few hundred bytes of
/// JSON; anything near this is not a payment.
pub const MAX_PROCESSOR_BODY_BYTES: usize = 16 << 10;

/// How long a stopping processor waits for answers in flight (a `slow_ms` one included) before
/// it drops them: a stop must not hang a test on a knob set to minutes.
pub const PROCESSOR_SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

const _: () = assert!(MAX_PROCESSOR_BODY_BYTES <= MAX_BODY_BYTES);
