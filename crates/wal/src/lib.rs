//! `bulwark-wal` owns Bulwark's segmented write-ahead log: an append-only sequence of checksummed records
//! with consecutive log indexes, stored in a directory of segment files. It gives the node's event loop
//! cheap in-memory appends and one group `sync` (one write, one `fdatasync`) that makes every appended record
//! durable, replay with `read_from`, log compaction (`truncate_prefix`) after a checkpoint, and suffix
//! truncation (`truncate_suffix`) for Raft log conflicts. It knows nothing about what a payload means.
//!
//! It must never acknowledge a record as durable before it has been `fdatasync`ed, never silently drop a
//! record it cannot read (only the torn tail of the very last write may be cut, and that cut is logged and
//! reported), and never guess past corruption: a bad checksum, a bad segment header or an index gap anywhere
//! else stops recovery with [`WalError::Corrupt`], naming the file and the byte offset.
//!
//! # On-disk format (version 1)
//!
//! The log directory holds segment files named `<first index, 20 digits zero-padded>.wal`, e.g.
//! `00000000000000000001.wal`. Indexes are consecutive across all segments, in file-name order. All integers
//! are little-endian; every checksum is CRC32C (Castagnoli).
//!
//! Segment header, 20 bytes:
//!
//! | offset | size | field                                   |
//! |--------|------|-----------------------------------------|
//! | 0      | 4    | magic `BWAL`                            |
//! | 4      | 4    | format version, `u32` (= 1)             |
//! | 8      | 8    | first index of the segment, `u64`       |
//! | 16     | 4    | CRC32C of bytes 0..16, `u32`            |
//!
//! Then records, back to back, 16-byte header plus payload:
//!
//! | offset | size | field                                                   |
//! |--------|------|---------------------------------------------------------|
//! | 0      | 4    | `len`: payload length, `u32` (at most 64 MiB)           |
//! | 4      | 4    | `crc`: CRC32C over (`len` ++ `index` ++ payload), `u32` |
//! | 8      | 8    | `index`: the record's log index, `u64`                  |
//! | 16     | len  | payload                                                 |
//!
//! A new segment is started when appending a record would make the active segment exceed
//! [`WalOptions::segment_bytes`]; a record larger than that still goes in, alone in its segment. A segment is
//! created crash-safely: header plus its first records are written to `<name>.wal.tmp`, fsynced, renamed to
//! `<name>.wal`, and the directory is fsynced. A segment is fully durable before any later segment exists,
//! so only the last segment can ever end in a torn write. A segment may hold zero records (header only).
//!
//! A segment may end in zero bytes after its last record: a small sync that reaches the end of the
//! active segment also writes [`WalOptions::zero_ahead_bytes`] of zeros after its records (up to
//! `segment_bytes`), made durable by the same `fdatasync`, so that the next syncs overwrite zeros
//! inside the file instead of growing it: an `fdatasync` that changes a file's size must also write
//! its inode, a second device write per sync (measured figures at
//! `bulwark_limits::WAL_ZERO_AHEAD_BYTES`). The zeros are not records: a segment's records end at
//! the first record header that is all zeros and followed only by zeros.
//!
//! # Recovery rules
//!
//! [`Wal::open`] reads and verifies every segment.
//! - A leftover `*.wal.tmp` (crash during segment creation) is removed.
//! - Zero bytes from a record boundary to the end of a segment (any segment) are the zero-fill above:
//!   kept, not reported, written over by the next records. Records lost from the end of a segment that
//!   is not the last still show, as an index gap before the next segment.
//! - The *torn tail* of the last segment is cut (`ftruncate` to the last good record boundary, then fsync),
//!   logged with `tracing::warn!` and reported in [`Recovery::torn_tail`]. A torn tail is, starting at a record
//!   boundary of the last segment: an incomplete record header, a payload running past end-of-file, or a
//!   final record whose checksum fails and after which the file holds only zero bytes (none, or the
//!   zero-fill a torn write landed in).
//!   As a guard against a damaged length field masquerading as a torn write, the bytes to be cut are scanned
//!   for any record with a valid checksum and a plausible index; if one is found, that is corruption, not a
//!   torn tail.
//! - Anything else is [`WalError::Corrupt`]: a checksum mismatch followed by more data, any bad record in a
//!   segment that is not the last, a bad or short segment header, a header whose index disagrees with the file
//!   name, and an index gap or out-of-order index between records or segments.
//!
//! # Write failures (a full disk)
//!
//! A [`Wal::sync`] whose *write* fails (no space left on the device, a quota, any error from `write(2)`,
//! from creating or renaming a new segment) undoes itself: segments it created are deleted, a half-written
//! temp file is removed, the active segment is truncated back to its last durable length (and that cut is
//! fsynced), and every in-memory position is left as it was, the records still buffered. The log is then
//! exactly as before the call: [`Wal::sync`] may be retried later (e.g. once space is freed), or the
//! buffered records dropped with [`Wal::discard_unsynced`]. [`WalError::is_disk_full`] tells a full disk
//! apart. A failed `fsync`/`fdatasync`, or a failure while undoing, poisons the log instead (every later
//! call answers [`WalError::Poisoned`]): after a failed fsync the kernel may already have dropped the dirty
//! pages it could not write and marked them clean, so nothing tells what the file really holds and a retry
//! could report durable what is not (PostgreSQL's conclusion after "fsyncgate", 2018: crash and recover from
//! what is known durable instead).
//!
//! # Empty logs and the next index
//!
//! A new log starts at index 1. An empty log that still has a (header-only) segment remembers its next index
//! across reopen. [`Wal::truncate_prefix`] past the last record leaves such an empty segment at `through + 1`,
//! and [`Wal::reset_next_index`] (only allowed while the log is empty) sets the next index explicitly and
//! durably, e.g. after restoring a checkpoint at index N into an empty directory (`reset_next_index(N + 1)`).
//! Callers should still check after [`Wal::open`] that an empty log's next index matches their checkpoint:
//! a crash inside `truncate_prefix`/`reset_next_index` can leave a directory with no segment at all, which
//! opens as an empty log at index 1.
//!
//! # Layout
//!
//! `format` (names, headers, checksums; no I/O), `segment` (one segment file and its crash-safe
//! creation), `recovery` ([`Wal::open`]: the rules above), `writer` (append, group sync, rollover, the
//! undo of a failed write), `flush` (a sync in two halves: the write, then an `fdatasync` that may run on
//! another thread while the caller works), `truncate` (prefix and suffix truncation, [`Wal::reset_next_index`]),
//! `reader` ([`Wal::read_from`]), `error`.

#![warn(clippy::too_many_lines)]

mod error;
mod flush;
mod format;
mod reader;
mod recovery;
mod segment;
mod truncate;
mod writer;

pub use error::{is_disk_full_io, BadRecord, Corruption, WalError};
pub use flush::WalFlush;
pub use format::{
    segment_file_name, HeaderError, FORMAT_VERSION, RECORD_HEADER_LEN, SEGMENT_HEADER_LEN,
    SEGMENT_MAGIC,
};
pub use recovery::{Recovery, TornTail};
pub use writer::{Wal, WalOptions};
