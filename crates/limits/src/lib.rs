//! `bulwark-limits` holds every bound of a Bulwark node in one place: batch and page sizes, entry,
//! frame and record sizes, queue and inbox depths, permits, and timeouts. Each bound says why it
//! has its value. They live in one module per concern, all re-exported here: `batches` (batches
//! and pages), `frames` (entries, messages, frames, records), `queues` (queues, inboxes,
//! permits), `storage` (log, memory, disk), `raft_timing` (ticks), `timeouts` (wall-clock
//! deadlines and retries), `connections` (client connections, file descriptors), `archive`
//! (backups and the archive), and `outbox` (the payment relay and the stand-in processor, with
//! their own assertions). The `const` assertions in this file state how the bounds relate across
//! modules (a change that breaks a relation does not compile).
//!
//! It is its own crate, with no dependencies, because the bounds are used by crates that do not
//! depend on one another: `wal` and `transport` do not depend on `ledger` (the lowest crate of the
//! rest), and must not (a log or a socket knows nothing about accounts). Every crate that has a
//! bound takes it from here: ledger, wal, store, consensus, transport, node, api and the binary.
//!
//! It must never hold a format (field widths, magic numbers, versions: those belong to the crate
//! that owns the format, which asserts its own sizes against these bounds) nor anything that is
//! not a compile-time constant. Timeouts counted in Raft ticks are in ticks; the default tick is
//! [`DEFAULT_TICK`], and relations between ticks and wall time use it.

use std::time::Duration;

mod archive;
mod batches;
mod connections;
mod frames;
mod outbox;
mod queues;
mod raft_timing;
mod storage;
mod timeouts;
pub use archive::*;
pub use batches::*;
pub use connections::*;
pub use frames::*;
pub use outbox::*;
pub use queues::*;
pub use raft_timing::*;
pub use storage::*;
pub use timeouts::*;

// ---------------------------------------------------------------------------------------------
// How the bounds relate
// ---------------------------------------------------------------------------------------------

/// `d` in milliseconds, in a `const` context.
const fn ms(d: Duration) -> u128 {
    d.as_millis()
}

/// `ticks` at the default tick, in milliseconds.
const fn ticks_ms(ticks: u64) -> u128 {
    ticks as u128 * DEFAULT_TICK.as_millis()
}

// A full batch's JSON fits the body limit, and a page is never larger than a batch.
const _: () = assert!(MAX_BATCH_EVENTS * JSON_BYTES_PER_EVENT <= MAX_BODY_BYTES);
const _: () = assert!(0 < DEFAULT_HISTORY_PAGE && DEFAULT_HISTORY_PAGE <= MAX_HISTORY_PAGE);
const _: () = assert!(MAX_HISTORY_PAGE <= MAX_BATCH_EVENTS);
const _: () = assert!(MAX_GROUP_EVENTS >= MAX_BATCH_EVENTS);
const _: () = assert!(MEMTABLE_CAP_FACTOR > CHECKPOINT_CATCH_UP_FACTOR);
const _: () = assert!(CHECKPOINT_LOG_ENTRIES_MIN > KEEP_ENTRIES);
const _: () = assert!(CHECKPOINT_LOG_BYTES_MIN <= CHECKPOINT_LOG_SEGMENTS * DEFAULT_SEGMENT_BYTES);

// An entry (a full group, or the largest batch alone: `ledger::codec` asserts it fits
// MAX_GROUP_BYTES) fits one Raft message; the largest Raft message (max_size_per_msg plus the
// one entry raft-rs always adds) fits a transport frame; an entry fits a WAL record.
const _: () = assert!(MAX_GROUP_BYTES + ENTRY_OVERHEAD_BYTES <= RAFT_MAX_SIZE_PER_MSG as usize);
const _: () = assert!(
    RAFT_MAX_SIZE_PER_MSG as usize + MAX_GROUP_BYTES + 2 * ENTRY_OVERHEAD_BYTES < MAX_FRAME_BYTES
);
const _: () = assert!(MAX_GROUP_BYTES + ENTRY_OVERHEAD_BYTES < MAX_RECORD_PAYLOAD);
const _: () = assert!((MAX_RECORD_PAYLOAD as u64) <= DEFAULT_SEGMENT_BYTES);
// A zero-filled stretch holds many of the writes that get one, and never more than a segment.
const _: () = assert!(WAL_ZERO_AHEAD_MAX_WRITE * 8 <= WAL_ZERO_AHEAD_BYTES);
const _: () = assert!(WAL_ZERO_AHEAD_BYTES <= DEFAULT_SEGMENT_BYTES);
// A peer's queue holds at least one largest frame, and the appends Raft may have in flight.
const _: () = assert!(MAX_FRAME_BYTES <= PEER_QUEUE_BYTES);
const _: () = assert!(RAFT_MAX_INFLIGHT_MSGS < PEER_QUEUE_FRAMES);
const _: () = assert!(KEEP_WRITE_BUFFER < PEER_QUEUE_BYTES);
// Every write this node admits, each in a group of its own, stays within Raft's uncommitted bound.
const _: () =
    assert!(MAX_INFLIGHT_WRITES as u64 * MAX_GROUP_BYTES as u64 <= RAFT_MAX_UNCOMMITTED_BYTES);
// A snapshot row fits a snapshot frame (`store::snapshot` asserts it for the largest row, a full
// run of the account index, whose pair width it owns); the HTTP chunks are smaller than a frame.
const _: () = assert!(SNAPSHOT_HTTP_CHUNK <= MAX_SNAPSHOT_FRAME);

// The inbox holds every permit holder, every admitted peer message and the control requests;
// ack=all waiters are at most as many as writes (each follows a write); one round may take all the
// peer messages the inbox admits.
const _: () = assert!(
    NODE_INBOX
        >= MAX_INFLIGHT_WRITES
            + MAX_INFLIGHT_READS
            + MAX_ACK_ALL_WAITERS
            + INBOX_PEER_MESSAGES
            + INBOX_CONTROL
);
const _: () = assert!(MAX_ACK_ALL_WAITERS <= MAX_INFLIGHT_WRITES);
const _: () = assert!(INBOX_PEER_MESSAGES <= MAX_REQUESTS_PER_ROUND);
const _: () = assert!(TRANSPORT_INBOX_FRAMES <= INBOX_PEER_MESSAGES);
const _: () = assert!(PEER_QUEUE_FRAMES <= INBOX_PEER_MESSAGES);
const _: () = assert!(MAX_INFLIGHT_WRITES > 0 && MAX_INFLIGHT_READS > 0 && INBOX_CONTROL > 0);

// Raft timing: heartbeats well inside an election timeout; a read retries several times within an
// election and outlives the longest one (so a read during an election is served by the next
// leader); a snapshot is reported failed only after several elections.
const _: () = assert!(2 * HEARTBEAT_TICKS <= ELECTION_TICKS);
const _: () = assert!(ELECTION_TICKS < MAX_ELECTION_TICKS);
const _: () = assert!(READ_RETRY_TICKS < ELECTION_TICKS as u64);
const _: () = assert!(READ_TIMEOUT_TICKS > 2 * MAX_ELECTION_TICKS as u64);
const _: () = assert!(SNAPSHOT_REPORT_ELECTIONS >= 2);

// Wall time: a permit is waited for less than any deadline of the request it serves; ack=all
// waits longer than a follower takes to fall out of sync (so a dead follower stops being waited
// for before the timeout) and longer than an election; the in-sync window is longer than an
// election timeout's worth of heartbeats.
const _: () = assert!(ms(PERMIT_WAIT) < ticks_ms(READ_TIMEOUT_TICKS));
const _: () = assert!(ms(PERMIT_WAIT) < ms(ACK_ALL_TIMEOUT));
const _: () = assert!(2 * ms(PERMIT_WAIT) + ms(ACK_ALL_TIMEOUT) < ms(FORWARD_TIMEOUT));
const _: () = assert!(ms(IN_SYNC_WITHIN) < ms(ACK_ALL_TIMEOUT));
const _: () = assert!(ticks_ms(MAX_ELECTION_TICKS as u64) < ms(ACK_ALL_TIMEOUT));
const _: () = assert!(ticks_ms(MAX_ELECTION_TICKS as u64) <= ms(IN_SYNC_WITHIN));
// The clock step is below the read deadline, and above a tick (ordinary scheduling delay).
const _: () = assert!(ms(DEFAULT_TICK) < ms(MAX_CLOCK_STEP));
const _: () = assert!(ms(MAX_CLOCK_STEP) < ticks_ms(READ_TIMEOUT_TICKS));
// A peer's report stays fresh across several heartbeats, and across an election.
const _: () = assert!(ticks_ms(4 * HEARTBEAT_TICKS as u64) < ms(PEER_CLOCK_FRESHNESS));
const _: () = assert!(ticks_ms(MAX_ELECTION_TICKS as u64) < ms(PEER_CLOCK_FRESHNESS));
// A dead snapshot source is given up (connect) before a paused one is (read).
const _: () = assert!(ms(PEER_HTTP_CONNECT_TIMEOUT) < ms(SNAPSHOT_READ_TIMEOUT));
const _: () = assert!(ms(PEER_HTTP_CONNECT_TIMEOUT) < ms(FORWARD_TIMEOUT));
const _: () = assert!(
    2 * ms(SNAPSHOT_READ_TIMEOUT) + ms(PEER_HTTP_CONNECT_TIMEOUT) < ms(SNAPSHOT_STALL_TIMEOUT)
);
// The loop retries persisting on a full disk at least as often as the store looks for space again
// or reopens its file, so it notices freed space no later than they do.
const _: () = assert!(ms(DISK_FULL_RETRY) <= ms(SPACE_RETRY));
const _: () = assert!(ms(STORE_REOPEN_RETRY) <= ms(SPACE_RETRY));
// A slow disk is judged before its slowness alone would stall a leader into an election; the
// window holds enough syncs of a second each for a verdict; a transfer gets longer than Raft's
// own timeout for it before it is tried again, and is tried again well within the cool-down.
const _: () = assert!(ms(SLOW_SYNC_THRESHOLD) < ticks_ms(ELECTION_TICKS as u64));
const _: () = assert!(1000 * (SLOW_DISK_MIN_SAMPLES as u128) < ms(SLOW_DISK_WINDOW));
const _: () = assert!(2 * SLOW_DISK_MIN_SAMPLES > SLOW_DISK_RECENT_SYNCS);
const _: () = assert!(ticks_ms(MAX_ELECTION_TICKS as u64) < ms(SLOW_DISK_TRANSFER_RETRY));
const _: () = assert!(ms(SLOW_DISK_TRANSFER_RETRY) < ms(SLOW_DISK_EVICTION_COOLDOWN));
const _: () = assert!(ticks_ms(ELECTION_TICKS as u64) < ms(HANDOVER_RETRY));
const _: () = assert!(ms(HANDOVER_RETRY) < ms(HANDOVER_LIMIT));
// The transport's backoff grows from its floor to its cap.
const _: () = assert!(ms(PEER_BACKOFF_MIN) < ms(PEER_BACKOFF_MAX));
// Client connections: a request waiting for its answer (a permit, then a forwarded write at
// most) is never closed as idle, nor cut off by a stopping node; a header is due before a
// connection counts as idle; a rejected connection is gone well before its client retries; the
// smallest fd limit a node starts with leaves room for its minimum of connections.
const _: () = assert!(2 * ms(PERMIT_WAIT) + ms(FORWARD_TIMEOUT) < ms(CLIENT_IDLE_TIMEOUT));
const _: () = assert!(2 * ms(PERMIT_WAIT) + ms(FORWARD_TIMEOUT) < ms(CLIENT_SHUTDOWN_GRACE));
const _: () = assert!(ms(CLIENT_HEADER_TIMEOUT) <= 10_000);
const _: () = assert!(ms(CLIENT_IDLE_TIMEOUT) <= 60_000);
const _: () = assert!(ms(CLIENT_HEADER_TIMEOUT) < ms(CLIENT_IDLE_TIMEOUT));
const _: () = assert!(ms(CLIENT_REJECT_LINGER) <= 1_000);
const _: () = assert!(ms(ACCEPT_RETRY) < ms(ACCEPT_ERROR_LOG_EVERY));
const _: () = assert!(MIN_CLIENT_CONNECTIONS <= MAX_CLIENT_CONNECTIONS);
const _: () = assert!(MAX_CLIENT_REJECTIONS < FD_RESERVE);
// A chunk is sealed by time well before a relisting node would notice it; retries back off to
// at most a few seal intervals.
const _: () = assert!(ms(ARCHIVE_SEAL_INTERVAL) < ms(ARCHIVE_RELIST_EVERY));
const _: () = assert!(ms(ARCHIVE_MAX_BACKOFF) <= 5 * ms(ARCHIVE_SEAL_INTERVAL));
// A refused offer is retried well within a seal interval: a queue that drains loses no time.
const _: () = assert!(10 * ms(ARCHIVE_OFFER_RETRY) <= ms(ARCHIVE_SEAL_INTERVAL));
