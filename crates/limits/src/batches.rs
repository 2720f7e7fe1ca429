//! Batches and pages: how many events one request carries and one page answers (the API and the
//! ledger).

use std::time::Duration;

/// Largest batch of events one request may carry. TigerBeetle's figure (8190 transfers of 128
/// bytes fill a 1 MiB message); here it keeps the largest batch's log entry well under
/// [`MAX_GROUP_BYTES`](crate::MAX_GROUP_BYTES) and bounds how long applying one entry holds the
/// node loop.
pub const MAX_BATCH_EVENTS: usize = 8190;

/// JSON bytes the API allows per event of a full batch: a transfer with every field spelled out
/// fits well within it.
pub const JSON_BYTES_PER_EVENT: usize = 1024;

/// Largest request body the API accepts (8 MiB): a batch of [`MAX_BATCH_EVENTS`] events of
/// [`JSON_BYTES_PER_EVENT`] each fits; anything larger is refused (413) before it is parsed.
pub const MAX_BODY_BYTES: usize = 8 << 20;

/// Page size of an account's transfer history when the request gives no `limit`: one screen.
pub const DEFAULT_HISTORY_PAGE: usize = 100;

/// Largest page of an account's transfer history: as many transfers as one batch may create, so
/// that a page costs no more to build and send than the largest write.
pub const MAX_HISTORY_PAGE: usize = MAX_BATCH_EVENTS;

/// Most index entries one page of a filtered account history passes over: a page whose filters
/// (side, code, user data) matched fewer than its limit among them answers what it found and a
/// cursor to go on from, so that no query holds the node loop for a whole account's history.
pub const MAX_HISTORY_SCAN: usize = 65_536;

/// Most index seeks one page of `POST /v1/accounts/query` or `/v1/transfers/query` makes: where
/// the lists of several filter fields interleave without meeting, a page answers what it found
/// and a cursor to go on from rather than hold the node loop (a seek costs about a microsecond).
pub const MAX_QUERY_SEEKS: usize = 65_536;

/// Most memtable entries one read adds to what a memtable builds lazily for reads: its change
/// feed (`store/src/feed.rs`) and its field indexes (`store/src/field_index.rs`). The first read
/// of a large memtable builds them in steps, each a separate turn of the node loop, rather than
/// hold the loop (and every write) for a whole memtable: a 10 M-transfer load held it 5.6 s.
pub const MAX_LAZY_BUILD_STEP: usize = 65_536;

/// Longest a change feed request waits for a change when it is caught up (`wait_ms`): long
/// enough that a consumer idles on few requests, short enough for proxies' idle timeouts.
pub const MAX_CHANGES_WAIT: Duration = Duration::from_secs(30);

/// Most entries in one row of the `transfer_index` table (at most 3.7 KiB of delta-coded pairs,
/// about 0.7 KiB for time-based ids): a row fits one 4 KiB B-tree page. With larger rows, a
/// checkpoint that adds rows in key order just before a large row (one value's new transfers
/// before the next value's list) split off a page per row: 31,000 rows of a unique
/// `user_data_64` took 31,095 pages, 140 MB for 3 MB of entries.
pub const TRANSFER_INDEX_RUN: usize = 128;

/// Most transfers in one row of the `transfer_runs` table: about 1.6 KiB for typical compact
/// records (about 50 bytes), at most 4.5 KiB, near one 4 KiB page. A checkpoint inserts a row per
/// run instead of one per transfer (35 % of its time at one per transfer; see the store's
/// `transfer_runs`).
pub const TRANSFER_RUN: usize = 32;

/// Most changes in one row of the `changes` table: about 3 KiB of compact records (at most 161
/// bytes each, about 50 for a typical one), under a 4 KiB page for the reason given at
/// [`TRANSFER_INDEX_RUN`].
pub const CHANGES_RUN: usize = 64;

/// How long the id of a transfer refused for a transient reason (an account missing, a balance
/// limit, a closed account) stays reserved, in ledger time: a retry with that id within it answers
/// `id_already_failed`, later it is a new transfer. A week outlasts any client's retries while
/// bounding the reservations kept to the refusals of the last week (each a 16-byte record).
pub const FAILED_TRANSFER_ID_RETENTION: Duration = Duration::from_secs(7 * 24 * 60 * 60);

/// Most expired failed-id reservations one checkpoint forgets: the purge never makes a
/// checkpoint much longer, and a backlog (after a burst of refusals) drains over the next ones.
pub const FAILED_TRANSFERS_PURGE: usize = 100_000;

/// Most API tokens that may exist at once. Every node holds them all in memory and the state
/// store rewrites the set at a checkpoint where it changed: a thousand is far more than a
/// deployment's services and operators, and small enough for both.
pub const MAX_TOKENS: usize = 1000;

/// Longest token name, in bytes (`[A-Za-z0-9._-]`): a service or a person, not a description.
pub const MAX_TOKEN_NAME: usize = 64;

/// Requests a second one token may send by default (`--token-rate-limit`), in bursts of up to a
/// second's worth: far above what one client of a 2-core node can drive (about 30,000 one-event
/// requests a second), so only a runaway or hostile client meets it.
pub const DEFAULT_TOKEN_RATE_LIMIT: u32 = 100_000;

/// Most bytes a node's local log of refused requests keeps (two files of half each): about
/// 100,000 refusals, days of a steady attacker, and nothing a disk notices.
pub const MAX_REFUSALS_LOG_BYTES: u64 = 32 << 20;

/// Refusals waiting for the refusals log's writer; past it they are counted and dropped, so a
/// flood of refused requests never waits on a disk.
pub const REFUSALS_QUEUE: usize = 4096;

/// Largest page of the audit trail (`GET /v1/audit`): one screenful of lines many times over,
/// and a small answer.
pub const MAX_AUDIT_PAGE: usize = 1000;
