//! Backups and the archive: chunk sealing, uploads and their retries.

use std::time::Duration;

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
