//! The log, memory and disk: segment sizes, the memtable, checkpoints and free-space margins.

use std::time::Duration;

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

/// How far ahead of its write position the active log segment is kept zero-filled (and synced):
/// a sync that overwrites zeros inside the file leaves its size alone, so `fdatasync` writes only
/// the data; one that appends must also write the inode (ext4: `ext4_write_inode`), a second
/// device write on every sync. Measured here (virtio disk, ext4 without a journal), 3,000 x
/// (2,500-byte pwrite + fdatasync): appending 0.24 ms per sync; zero-filled ahead in 256 KiB
/// chunks 0.155 ms (p99 0.48 ms: a chunk costs about 1 ms, every 100 syncs), 1 MiB 0.16 ms
/// (p99 0.28 ms; a chunk about 3.5 ms, every 420 syncs), 4 MiB 0.17 ms (a chunk 12 ms).
pub const WAL_ZERO_AHEAD_BYTES: u64 = 1 << 20;

/// Syncs that write more than this append without zero-filling ahead: every byte of a
/// zero-filled file is written twice (zeros, then data), which costs more than the inode write
/// once a sync is bandwidth-bound (a batch of 8,189 transfers is about 1 MB).
pub const WAL_ZERO_AHEAD_MAX_WRITE: u64 = 64 << 10;

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
/// are answered `503 overloaded` past [`PERMIT_WAIT`](crate::PERMIT_WAIT)). Without it a load
/// faster than
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

/// A Ready whose entries to apply (committed ones, and on a sole voter its new ones) hold at
/// least this many bytes has its log flush run on a second thread while they are applied.
/// Below it, the hand-over (a thread start and a wake-up, some 30 µs) would cost more than the
/// overlap gains: applying 64 KiB of transfers (about 500) takes about 0.5 ms here.
pub const APPLY_DURING_FLUSH_MIN_BYTES: usize = 64 << 10;

/// How long the allocator keeps memory the process freed before giving it back to the kernel.
/// mimalloc's own default is 1 s: under load a node frees a checkpoint's buffers and a batch's
/// requests, the allocator gave the pages back, and the next checkpoint or batch faulted them in
/// again, zeroed, up to 2 MiB at a time. Measured with 1 s against 10 s, alternated
/// (`MIMALLOC_PURGE_DELAY`): `bulwark bench --transfers 3000000 --batch 8189 --concurrency 1`, 4
/// pairs: 33,000-47,000 page faults against 1,200, the node's kernel CPU 2.96 s against 2.27 s
/// on the means, 502,000 against 524,000 transfers/s; `bench --duration 30`, 3 pairs: 160,000-
/// 195,000 faults against 27,000-35,000, 488,000 against 518,000/s, a peak of 1.15 GB against
/// 1.24-1.32 GB. The node's memory is bounded by the memtable and the caches, so holding freed
/// memory longer costs little beyond the peak it reaches anyway.
pub const ALLOCATOR_PURGE_DELAY: Duration = Duration::from_secs(10);
