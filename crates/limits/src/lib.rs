//! `bulwark-limits` holds every bound of a Bulwark node in one place: batch and page sizes, entry,
//! frame and record sizes, queue and inbox depths, permits, and timeouts. Each bound says why it
//! has its value, and the `const` assertions at the end of this file state how they relate (a
//! change that breaks a relation does not compile). The payment relay's defaults and the stand-in
//! processor's bounds are in `outbox.rs`, with their own assertions.
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

mod outbox;
pub use outbox::*;

// ---------------------------------------------------------------------------------------------
// Batches and pages (the API and the ledger)
// ---------------------------------------------------------------------------------------------

/// Largest batch of events one request may carry. TigerBeetle's figure (8190 transfers of 128
/// bytes fill a 1 MiB message); here it keeps the largest batch's log entry well under
/// [`MAX_GROUP_BYTES`] and bounds how long applying one entry holds the node loop.
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

// ---------------------------------------------------------------------------------------------
// Entries, messages, frames, records
// ---------------------------------------------------------------------------------------------

/// Most events in one grouped entry: a group never holds more than the largest single batch,
/// so that applying an entry takes no longer than before grouping existed.
pub const MAX_GROUP_EVENTS: usize = MAX_BATCH_EVENTS;

/// Most bytes of one grouped entry's payload (1 MiB): the largest single batch fits on its own
/// (asserted by `ledger::codec`, which owns the widths), and the group stays well under Raft's
/// message bound, so that a group always fits one append message.
pub const MAX_GROUP_BYTES: usize = 1 << 20;

/// Bytes a Raft `Entry` (or a `Message` around entries) adds to the payloads it carries: term,
/// index, type, the 16-byte context plus a membership change's details, protobuf tags and
/// lengths. Generous: the relations below only need an upper bound.
pub const ENTRY_OVERHEAD_BYTES: usize = 4 << 10;

/// Raft's `max_size_per_msg` (4 MiB): the entries one append message carries, beyond the first
/// (raft-rs always sends at least one entry, whatever its size). Four groups per message keeps a
/// lagging follower's catch-up quick without large frames.
pub const RAFT_MAX_SIZE_PER_MSG: u64 = 4 << 20;

/// Raft's `max_inflight_msgs`: append messages sent to one follower and not yet acknowledged.
pub const RAFT_MAX_INFLIGHT_MSGS: usize = 256;

/// Raft's `max_uncommitted_size` (256 MiB): entry bytes a leader holds uncommitted before it
/// refuses proposals. As large as every admitted write in its own full group, so that a write the
/// node took a permit for is never refused for it.
pub const RAFT_MAX_UNCOMMITTED_BYTES: u64 = 256 << 20;

/// Largest payload of one peer frame, sent or accepted (64 MiB); a larger inbound frame closes
/// its connection. Far above the largest Raft message (see the assertions), so only a broken or
/// hostile peer meets it.
pub const MAX_FRAME_BYTES: usize = 64 << 20;

/// Largest payload of one WAL record (64 MiB); a longer length field is corruption (or a torn
/// write). A record holds one Raft entry, far smaller.
pub const MAX_RECORD_PAYLOAD: usize = 64 << 20;

/// Largest frame of a snapshot stream (64 MiB); a longer one refuses the import. A frame holds
/// one row, at most a run of [`ACCOUNT_TRANSFERS_RUN`] index pairs.
pub const MAX_SNAPSHOT_FRAME: usize = 64 << 20;

/// Most `(timestamp, transfer id)` pairs in one run of the `account_transfers` index: one run per
/// account per checkpoint, split beyond this so that a hot account's row stays small (64 KiB).
pub const ACCOUNT_TRANSFERS_RUN: usize = 4096;

/// Chunks in which the snapshot endpoint hands a checkpoint to the HTTP body (256 KiB): large
/// enough to keep the socket busy, small enough that a slow reader holds little memory.
pub const SNAPSHOT_HTTP_CHUNK: usize = 256 << 10;

/// The nice value of the thread streaming a snapshot (a backup or a follower's download): the
/// node loop and client requests come first on a busy machine.
pub const SNAPSHOT_EXPORT_NICE: i32 = 15;

// ---------------------------------------------------------------------------------------------
// Queues, inboxes and permits
// ---------------------------------------------------------------------------------------------

/// Inbound peer connections open at once (authenticated or still in their handshake): a
/// member holds one to each other member; strangers get no more than the rest.
pub const MAX_PEER_CONNECTIONS: usize = 64;

/// Peers a node sends to that are not in its address book but connected to it (replies to a
/// leader added while this node lagged): a few at once, however many ids connect.
pub const REPLY_ONLY_PEERS: usize = 8;

/// Frames queued (or being written) per peer in the transport; `send` drops beyond it. Raft
/// sends at most [`RAFT_MAX_INFLIGHT_MSGS`] appends per follower, plus heartbeats and votes.
pub const PEER_QUEUE_FRAMES: usize = 1024;

/// Payload bytes queued (or being written) per peer (64 MiB); `send` drops beyond it.
pub const PEER_QUEUE_BYTES: usize = 64 << 20;

/// An outbound write buffer larger than this (4 MiB) is released after its batch instead of
/// being kept for the next one.
pub const KEEP_WRITE_BUFFER: usize = 4 << 20;

/// Size of each read from an inbound peer socket (64 KiB; the decoder buffers between reads and
/// frames).
pub const PEER_READ_CHUNK: usize = 64 << 10;

/// Frames the transport's accept side may hold for the node (the channel between the transport
/// and the task that decodes them into the node's inbox). A full channel makes that peer's
/// connection wait: backpressure on one stream, not memory.
pub const TRANSPORT_INBOX_FRAMES: usize = 4096;

/// Write requests in flight at once (the default of `NodeConfig::max_inflight_writes`): from the
/// API to their answer. More wait for a permit for at most [`PERMIT_WAIT`].
pub const MAX_INFLIGHT_WRITES: usize = 256;

/// Reads (linearizable, stale and status) in flight at once: from the API to their answer.
/// Linearizable reads arriving together share one ReadIndex round, so this is many rounds' worth.
pub const MAX_INFLIGHT_READS: usize = 1024;

/// `?ack=all` writes waiting at once for every in-sync member: taken before the write itself, so
/// a write is refused as `overloaded` before it enters the log, never after it committed.
pub const MAX_ACK_ALL_WAITERS: usize = MAX_INFLIGHT_WRITES;

/// Peer messages that may wait in the node's inbox; beyond it they are dropped and counted
/// (`bulwark_peer_messages_dropped_total`): Raft tolerates lost messages and peers resend.
pub const INBOX_PEER_MESSAGES: usize = 4096;

/// Inbox slots for requests that take no permit: membership changes and the shutdown.
pub const INBOX_CONTROL: usize = 64;

/// The node inbox's capacity (with the default write permits): every request that holds a permit,
/// every peer message admitted, and the control requests fit at once, so a request that got its
/// permit never finds the inbox full.
pub const NODE_INBOX: usize = MAX_INFLIGHT_WRITES
    + MAX_INFLIGHT_READS
    + MAX_ACK_ALL_WAITERS
    + INBOX_PEER_MESSAGES
    + INBOX_CONTROL;

/// Requests one round of the node loop takes from its inbox before it handles Raft's Ready, so
/// that a flood of requests cannot starve ticks and persistence.
pub const MAX_REQUESTS_PER_ROUND: usize = 4096;

/// How long a request waits for a permit before it is answered 503 `overloaded` (nothing of it
/// was done): long enough to ride out a burst (a round takes milliseconds), short enough that a
/// client never hangs.
pub const PERMIT_WAIT: Duration = Duration::from_secs(1);

// ---------------------------------------------------------------------------------------------
// Log, memory and disk
// ---------------------------------------------------------------------------------------------

/// Raft log entries kept behind a checkpoint, so that a follower a little behind catches up from
/// the log rather than by snapshot.
pub const KEEP_ENTRIES: u64 = 256;

/// A checkpoint is due when the Raft log holds more entries than this (and anything was applied
/// since the last), however few transfers the memtable holds: batches of accounts and control
/// commands add none to it, and the log must not grow without end.
pub const CHECKPOINT_LOG_ENTRIES_MIN: u64 = 4 * KEEP_ENTRIES;

/// ... or more entries than `--checkpoint-transfers` divided by this: at one transfer per request
/// a node groups about 15 requests per entry, and the bound of 1,024 entries alone started a
/// checkpoint every 0.6 s (each writing every account changed, about 10,000 in `bench`), long
/// before the memtable was full.
pub const CHECKPOINT_TRANSFERS_PER_LOG_ENTRY: u64 = 8;

/// ... or more bytes than this many log segments: entries of 1 MB (a batch of 8,189 accounts)
/// would otherwise let the log, which the node also holds in memory, reach gigabytes before the
/// entry bound. Counted from the log's size after its last compaction: the entries it keeps (256
/// for followers, more for the archive; 256 entries of 1.3 MB in `bench` on 3 nodes) are not a
/// checkpoint's to drop, and counting them would start a checkpoint as soon as the last was
/// written.
pub const CHECKPOINT_LOG_SEGMENTS: u64 = 4;

/// ... and never fewer bytes than this, however small the segments: with the 4 KiB segments
/// tests use to get many of them, four segments are a few entries, and a checkpoint started
/// after every few writes compacted away the segments those tests look at.
pub const CHECKPOINT_LOG_BYTES_MIN: u64 = 64 << 20;

/// Default WAL segment size (64 MiB): rollover and compaction work in whole segments.
pub const DEFAULT_SEGMENT_BYTES: u64 = 64 << 20;

/// Default memtable bound in transfers before a checkpoint starts (memory does not grow with
/// transfers: one active memtable, at most one frozen).
pub const DEFAULT_CHECKPOINT_TRANSFERS: usize = 150_000;

/// The nice value of a checkpoint's thread (Linux): on a busy machine (three nodes on two cores,
/// say) the node loops and client requests come first, and the checkpoint is written in their
/// idle moments, such as while a log fsync runs. Measured: a 3-node cluster on 2 cores went from
/// about 111,000 to about 129,000 transfers/s (`bulwark bench --batch 8189 --concurrency 1`).
pub const CHECKPOINT_NICE: i32 = 10;

/// A checkpoint holding more than this many times `--checkpoint-transfers` is behind (the one
/// before it took long): it runs at the node's own priority, as every checkpoint did before, so
/// that the memtable grows no faster than it would without background checkpoints.
pub const CHECKPOINT_CATCH_UP_FACTOR: usize = 2;

/// The memtable's hard cap, in times `--checkpoint-transfers`: while a checkpoint runs and the
/// active memtable holds this many, the leader proposes no new writes until the checkpoint is
/// written: they wait, holding their permits, and requests beyond the permits wait for one (and
/// are answered `503 overloaded` past [`PERMIT_WAIT`]). Without it a load faster than
/// checkpoints grew a single node to 3.6 GB in a minute (`bulwark bench --duration 60`), and on
/// without end. Measured on 2 cores (same bench): a cap of 4 kept the node under 0.7 GB at about
/// 200,000-260,000 transfers/s with writes held about 1.4 s per checkpoint; 8 under 1.2 GB at
/// 252,000/s, held up to 3.9 s; 16 at 290,000/s, held up to 4.5 s; a burst of 3 million
/// transfers ran as fast as without a cap at 8 and 16. Above the catch-up factor, so that a
/// checkpoint that falls behind first competes for the CPU, and only then holds writes.
pub const MEMTABLE_CAP_FACTOR: usize = 8;

/// How often a loop holding writes for a checkpoint looks whether it is written (its thread
/// does not wake the loop).
pub const CHECKPOINT_POLL: Duration = Duration::from_millis(2);

/// redb's page cache (512 MiB), bounded so that a node's memory stays flat however many transfers
/// it stores. redb keeps a transaction's dirty pages in at most half of it: at 64 MiB a
/// checkpoint of 600,000 transfers (then about 180 MB of pages) had its pages written out early
/// and read back at commit to checksum them (1.5 s, against 1.2 s at 512 MiB). With the compact
/// format 5 (about 85 MB a checkpoint of 600,000) it takes 0.74 s at 512 MiB and 0.81 s at
/// 256 MiB (`cargo run --release -p bulwark-store --example checkpoint_cost`); a node under
/// `bulwark bench --duration 60` stays at about 0.9 GB. TigerBeetle's grid cache is 512 MiB on
/// the same benchmark.
pub const STORE_CACHE_BYTES: usize = 512 << 20;

/// Free space kept on the data directory's file system beyond twice a checkpoint's estimated
/// size: below it, checkpoints wait (the log keeps everything), so that a checkpoint rarely meets
/// a full disk halfway.
pub const SPACE_RESERVE: u64 = 16 << 20;

// ---------------------------------------------------------------------------------------------
// Raft timing (in ticks)
// ---------------------------------------------------------------------------------------------

/// One Raft tick by default (`--tick-ms`).
pub const DEFAULT_TICK: Duration = Duration::from_millis(50);

/// Ticks between a leader's heartbeats.
pub const HEARTBEAT_TICKS: usize = 2;

/// Ticks without a leader before a follower campaigns, at least (randomized per election up to
/// [`MAX_ELECTION_TICKS`]): 400 ms at the default tick, four heartbeats lost in a row. The
/// first follower to time out is about 0.53 s after the last heartbeat (3 nodes), which keeps
/// the median failover under 0.6 s; a node loop stalled that long (a fsync of seconds) is
/// rightly replaced.
pub const ELECTION_TICKS: usize = 8;

/// Upper end (exclusive) of the randomized election timeout: spreads candidates so that one
/// usually wins the first round.
pub const MAX_ELECTION_TICKS: usize = 16;

/// Ticks a write may wait for a leader to be known, on a leader that took it and then stepped
/// down (a handover) or on a node that knew no leader when it came (an election), before it is
/// refused with `no_leader` (1.6 s at the default tick: two election rounds); once one is known
/// the API forwards the write there.
pub const WRITE_LEADERLESS_TICKS: u64 = 2 * MAX_ELECTION_TICKS as u64;

/// Ticks a read may wait, from its arrival to its answer, before it is refused (3 s at the
/// default tick). Longer than an election, so that a read arriving while the leader changes is
/// served by the next one.
pub const READ_TIMEOUT_TICKS: u64 = 60;

/// Ticks between two sends of a read round still without its index: long enough for a healthy
/// leader to answer (one round trip), short enough that a read waits little after an election.
pub const READ_RETRY_TICKS: u64 = 3;

/// Election timeouts a leader waits for a snapshot's reply before it reports the snapshot failed
/// so that Raft sends it again (a follower downloads the checkpoint meanwhile).
pub const SNAPSHOT_REPORT_ELECTIONS: u64 = 4;

// ---------------------------------------------------------------------------------------------
// Wall-clock timeouts and retries
// ---------------------------------------------------------------------------------------------

/// A follower is in sync when the leader heard from it within an election timeout and it was
/// fully caught up within this long (the Kafka ISR idea).
pub const IN_SYNC_WITHIN: Duration = Duration::from_secs(1);

/// How long `?ack=all` waits for the in-sync members before answering 504.
pub const ACK_ALL_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a follower waits for the leader's answer to a write it forwarded (10 s): longer than
/// the leader itself may take to answer (a permit, then `?ack=all`), so that a slow answer is
/// relayed rather than turned into `outcome_unknown`.
pub const FORWARD_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a node waits before it fetches a snapshot again after a failed attempt.
pub const INSTALL_RETRY: Duration = Duration::from_millis(1000);

/// How often a node whose disk is full tries again to persist what it holds.
pub const DISK_FULL_RETRY: Duration = Duration::from_millis(200);

/// Limit on connecting to a member for internal HTTP (dial and mutual TLS handshake on its peer
/// port): a dead snapshot source is given up quickly and another one tried, and a forwarded
/// write to a dead leader answers `no_leader` (never sent) well within the forward's bound.
pub const PEER_HTTP_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Limit on each read of a snapshot download: a paused member is given up and another one tried
/// (the source writes continuously; a checkpoint's integrity check at open can take seconds).
pub const SNAPSHOT_READ_TIMEOUT: Duration = Duration::from_secs(20);
/// A snapshot download that received nothing for this long is given up on, and another started
/// from any member: a paused or cut-off source must not hold a follower's catch-up forever. Longer
/// than two read timeouts and a connect: when the first source goes silent, the attempt passes
/// over it to the next member, which gets a whole read timeout before the attempt is abandoned
/// (with the two equal, every new attempt began with the same silent source again).
pub const SNAPSHOT_STALL_TIMEOUT: Duration = Duration::from_secs(50);

/// A node's disk is slow when the median of its recent Raft log syncs (append + fdatasync) is at
/// least this long: a healthy disk syncs in well under 10 ms (SSDs, cloud volumes), a spinning
/// one in about 10 to 20 ms, while every write a leader commits waits for two to three of its
/// syncs (so 50 ms added to each, the mildest slow disk the chaos nemesis injects, turns a 2 ms
/// write into 150 ms that a healthy voter would serve in 2).
pub const SLOW_SYNC_THRESHOLD: Duration = Duration::from_millis(40);

/// The slow-disk verdict looks at this many of the newest log syncs: more than half of them
/// (three) must reach [`SLOW_SYNC_THRESHOLD`], so a single stall is a hiccup, while a disk that
/// turned slow is judged after three slow syncs, about a second at 300 ms each (a count, not a
/// span of time: a busy node's many fast syncs from before the slowness do not delay it).
pub const SLOW_DISK_RECENT_SYNCS: usize = 5;

/// Fewer recent log syncs than this is no verdict (a node that barely writes says little
/// about its disk): a majority of [`SLOW_DISK_RECENT_SYNCS`].
pub const SLOW_DISK_MIN_SAMPLES: usize = SLOW_DISK_RECENT_SYNCS / 2 + 1;

/// Only log syncs of this recent window count: a node that stopped writing keeps no verdict
/// beyond it, and it holds [`SLOW_DISK_MIN_SAMPLES`] syncs of a second each.
pub const SLOW_DISK_WINDOW: Duration = Duration::from_secs(5);

/// A leader on a slow disk hands leadership over at most once per this long: if it leads again
/// while still slow (every other voter is slow too, or the new leader died), the cluster is not
/// thrown into a leader change every few seconds.
pub const SLOW_DISK_EVICTION_COOLDOWN: Duration = Duration::from_secs(30);

/// A leader on a slow disk that still leads this long after it asked Raft to transfer
/// leadership tries again (raft-rs gives a transfer one election timeout, counted in the slow
/// leader's own, stretched, ticks).
pub const SLOW_DISK_TRANSFER_RETRY: Duration = Duration::from_secs(3);

/// A leader stopping gracefully asks Raft again to transfer leadership if it still leads this
/// long after it asked (raft-rs gives a transfer one election timeout, 400 ms by default).
pub const HANDOVER_RETRY: Duration = Duration::from_millis(500);

/// Longest a stopping leader tries to hand leadership over; past it the node stops anyway and
/// the others elect a leader after an election timeout.
pub const HANDOVER_LIMIT: Duration = Duration::from_secs(3);

/// How long a stopping node goes on serving after it handed leadership over (and answered
/// not ready): the other members learn of the new leader, and the writes they forwarded to this
/// node meanwhile are answered, before the node closes its listeners.
pub const STOP_DRAIN: Duration = Duration::from_millis(250);

/// How often a closed state store is tried to be reopened.
pub const STORE_REOPEN_RETRY: Duration = Duration::from_millis(250);

/// After a checkpoint failed for lack of space, or was skipped for it, wait this long before the
/// next attempt (or check of the free space).
pub const SPACE_RETRY: Duration = Duration::from_secs(1);

/// The furthest the wall clock may be from the proposer's time and still be followed: larger
/// gaps are jumps. Well above the drift between the wall and monotonic clocks of one host (NTP
/// slews both alike) and above NTP's 128 ms step threshold, well below pending timeouts
/// (seconds).
pub const MAX_CLOCK_STEP: Duration = Duration::from_millis(250);

/// How long a peer's reported time counts toward the cap on a proposer's time (the clock rule
/// in `consensus::clock`): a few heartbeats; a peer silent for longer may be down or cut off,
/// and its last report says nothing about its clock now.
pub const PEER_CLOCK_FRESHNESS: Duration = Duration::from_secs(2);

/// Smallest reconnect backoff cap of the transport; the cap doubles per consecutive failure.
pub const PEER_BACKOFF_MIN: Duration = Duration::from_millis(50);

/// Largest reconnect backoff cap (the wait is uniform in `[0, cap]`, full jitter): a peer that
/// comes back is found again within two seconds.
pub const PEER_BACKOFF_MAX: Duration = Duration::from_secs(2);

/// Limit on a peer dial, and on an inbound connection's hello.
pub const PEER_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Pause after a failed `accept` on the peer port or the client API (e.g. out of file
/// descriptors), instead of spinning.
pub const ACCEPT_RETRY: Duration = Duration::from_millis(100);

// ---------------------------------------------------------------------------------------------
// Client connections and file descriptors (the client API's own accept loop)
// ---------------------------------------------------------------------------------------------

/// Client API connections open at once, at most. Clients keep connections alive and share
/// them, so a deployment's application servers need far fewer; every connection may hold a body
/// of up to [`MAX_BODY_BYTES`] while it is read, so this also bounds the memory clients can tie
/// up. A node whose file-descriptor limit is lower serves fewer (see [`FD_RESERVE`]). Past the
/// limit a new connection is answered 503 `overloaded` with `Retry-After: 1` and closed.
pub const MAX_CLIENT_CONNECTIONS: usize = 1024;

/// Fewest client connections a node starts with: a file-descriptor limit that leaves fewer
/// after [`FD_RESERVE`] and [`MAX_CLIENT_REJECTIONS`] refuses the start (raise `ulimit -n`)
/// rather than run a node that can serve almost nobody.
pub const MIN_CLIENT_CONNECTIONS: usize = 16;

/// Connections past the limit being answered their 503 at once (each holds a descriptor for at
/// most [`CLIENT_REJECT_LINGER`]); beyond these a new connection is closed unanswered, so that a
/// flood of connections costs a bounded number of descriptors.
pub const MAX_CLIENT_REJECTIONS: usize = 64;

/// File descriptors kept for everything but client connections, so that connections can never
/// take the descriptors the log and the store need (a WAL segment that cannot be created stops
/// the node): the process itself (stdio, the runtime's epoll and wakers, the listeners, the log:
/// 64), the WAL, the hard state, the state store, checkpoints, snapshot files and directory
/// fsyncs (64), inbound peer connections ([`MAX_PEER_CONNECTIONS`]), outbound peer connections
/// and snapshot downloads (64), and a follower's forwarded writes, one connection each at worst
/// ([`MAX_INFLIGHT_WRITES`]).
pub const FD_RESERVE: usize = 64 + 64 + MAX_PEER_CONNECTIONS + 64 + MAX_INFLIGHT_WRITES;

/// How long a client has to send a request's whole header, counted from the moment the server
/// waits for it: a new connection (and its TLS handshake), or the end of the previous answer on
/// a kept-alive one. A slowloris connection that trickles its header is closed then. Ten
/// seconds is far beyond any honest client on a slow link (a header is a few hundred bytes).
pub const CLIENT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// A client connection on which no byte moved either way for this long is closed: one idle
/// between requests (hyper already closes those after [`CLIENT_HEADER_TIMEOUT`], as it counts
/// that from the end of the previous answer), a body that stopped arriving, or an answer the
/// client stopped reading. Longer than any answer may take to be ready (see the assertions), so
/// that a client waiting for its answer is never cut off.
pub const CLIENT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a connection past the limit is kept for its 503 to be written and the client's
/// request bytes to be drained (closing with unread bytes would reset the connection and lose
/// the answer).
pub const CLIENT_REJECT_LINGER: Duration = Duration::from_secs(1);

/// Request bytes of a connection past the limit read and dropped at most, to close it cleanly.
pub const CLIENT_REJECT_DRAIN_BYTES: usize = 16 << 10;

/// A failed `accept` (out of file descriptors, most often) is logged at most this often; the
/// loop pauses [`ACCEPT_RETRY`] after each and goes on.
pub const ACCEPT_ERROR_LOG_EVERY: Duration = Duration::from_secs(1);

/// How long a stopping node waits for client connections to finish the requests in flight
/// (idle ones are closed at once): longer than any request may take, so that no answer that is
/// on its way is cut off; bounded, so that a client cannot keep a node from stopping.
pub const CLIENT_SHUTDOWN_GRACE: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------------------------
// Backups and the archive
// ---------------------------------------------------------------------------------------------

/// The archiver seals what it holds at least this often: the archive's recovery point (losing
/// every node loses at most about this much of what was committed).
pub const ARCHIVE_SEAL_INTERVAL: Duration = Duration::from_secs(1);

/// A chunk is sealed early once its entries reach this size, so one chunk stays small enough to
/// hold in memory on its way to the target and back.
pub const MAX_ARCHIVE_CHUNK_BYTES: usize = 8 << 20;

/// Offers of entries the archiver's queue holds; past it the loop keeps its place in its own log
/// and offers again later (never waiting on the archiver).
pub const ARCHIVE_QUEUE: usize = 64;

/// Entries the loop reads from its log for one offer.
pub const ARCHIVE_OFFER_ENTRIES: u64 = 4096;

/// After the archiver's queue was full, the node loop offers again no sooner than this (the
/// entries stay in its log meanwhile).
pub const ARCHIVE_OFFER_RETRY: Duration = Duration::from_millis(100);

/// The longest wait between retries of a failed archive upload.
pub const ARCHIVE_MAX_BACKOFF: Duration = Duration::from_secs(5);

/// How often a node that does not archive lists the archive, to learn how much of its log the
/// archive holds (and so may be compacted).
pub const ARCHIVE_RELIST_EVERY: Duration = Duration::from_secs(5);

/// Checkpoint requests (backups) waiting at once in the node loop; more are refused as
/// overloaded.
pub const MAX_CHECKPOINT_WAITERS: usize = 16;

/// The longest name or target of a backup in its audit record (bytes): records stay small.
pub const MAX_AUDIT_TEXT: usize = 512;

/// How long a backup waits for the checkpoint it reads before it answers 503.
pub const BACKUP_CHECKPOINT_WAIT: Duration = Duration::from_secs(120);

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
