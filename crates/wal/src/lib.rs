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
//! # Recovery rules
//!
//! [`Wal::open`] reads and verifies every segment.
//! - A leftover `*.wal.tmp` (crash during segment creation) is removed.
//! - The *torn tail* of the last segment is cut (`ftruncate` to the last good record boundary, then fsync),
//!   logged with `tracing::warn!` and reported in [`Recovery::torn_tail`]. A torn tail is, starting at a record
//!   boundary of the last segment: an incomplete record header, a payload running past end-of-file, a final
//!   record whose checksum fails and which ends exactly at end-of-file, or only zero bytes up to end-of-file.
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

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use bulwark_fs::WriteFailure;

/// Magic bytes at the start of every segment file.
pub const SEGMENT_MAGIC: [u8; 4] = *b"BWAL";
/// On-disk format version written into every segment header.
pub const FORMAT_VERSION: u32 = 1;
/// Size of the segment header in bytes.
pub const SEGMENT_HEADER_LEN: u64 = 20;
/// Size of a record header (`len`, `crc`, `index`) in bytes.
pub const RECORD_HEADER_LEN: u64 = 16;
/// Largest payload a record may carry; a longer length field is corruption (or a torn write).
pub const MAX_RECORD_PAYLOAD: usize = 64 << 20;

const SEGMENT_SUFFIX: &str = ".wal";
const TEMP_SUFFIX: &str = ".wal.tmp";

/// Tuning knobs of a [`Wal`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WalOptions {
    /// Target maximum size of a segment file in bytes (default 64 MiB).
    pub segment_bytes: u64,
}

impl Default for WalOptions {
    fn default() -> Self {
        WalOptions {
            segment_bytes: 64 << 20,
        }
    }
}

/// What [`Wal::open`] found. `first_index == last_index + 1` means the log is empty.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recovery {
    pub first_index: u64,
    pub last_index: u64,
    pub torn_tail: Option<TornTail>,
}

/// A torn tail cut from the last segment during recovery.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TornTail {
    /// The segment file that was cut.
    pub file: PathBuf,
    /// The byte offset the file was truncated to (the end of the last good record).
    pub offset: u64,
    /// How many bytes were removed.
    pub bytes_cut: u64,
}

/// Errors of the write-ahead log.
#[derive(thiserror::Error, Debug)]
pub enum WalError {
    #[error("write-ahead log I/O error: {op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("corrupt write-ahead log: {} at offset {offset}: {reason}", file.display())]
    Corrupt {
        file: PathBuf,
        offset: u64,
        reason: String,
    },
    #[error("record payload of {len} bytes exceeds the maximum of {max} bytes")]
    RecordTooLarge { len: usize, max: usize },
    #[error("log index {index} is out of range: the log holds [{first}, {last}]")]
    OutOfRange { index: u64, first: u64, last: u64 },
    #[error("the log must be empty for this operation, but it holds [{first}, {last}]")]
    NotEmpty { first: u64, last: u64 },
    #[error("invalid log index {0}: indexes start at 1")]
    InvalidIndex(u64),
    #[error("write-ahead log is unusable after an earlier I/O failure; reopen it to recover")]
    Poisoned,
}

/// Whether an I/O error says the device (or a quota) has no space left: `ENOSPC` or `EDQUOT`.
pub use bulwark_fs::is_disk_full as is_disk_full_io;

impl WalError {
    /// True for an I/O error caused by a full disk (or quota). After a failed [`Wal::sync`] with such an
    /// error the log is as before the call (see the crate documentation), so the caller may wait for space
    /// and retry instead of stopping.
    pub fn is_disk_full(&self) -> bool {
        matches!(self, WalError::Io { source, .. } if is_disk_full_io(source))
    }
}

/// How a multi-step write operation failed.
enum Failure {
    /// Nothing changed (what was done is undone): the log may go on.
    Undone(WalError),
    /// The state on disk is unknown (a failed fsync, or a failure while undoing): the log is poisoned.
    Fatal(WalError),
}

impl Failure {
    fn into_error(self) -> WalError {
        match self {
            Failure::Undone(e) | Failure::Fatal(e) => e,
        }
    }
}

/// One segment file that exists on disk.
#[derive(Debug)]
struct Segment {
    first_index: u64,
    path: PathBuf,
    /// Durable length in bytes (header plus synced records).
    len: u64,
    /// Number of durable records in it.
    records: u64,
}

impl Segment {
    fn next_index(&self) -> u64 {
        self.first_index + self.records
    }
}

/// A segmented write-ahead log. See the crate documentation for the format and the recovery rules.
#[derive(Debug)]
pub struct Wal {
    dir: PathBuf,
    opts: WalOptions,
    /// Segments on disk, in index order; consecutive.
    segments: Vec<Segment>,
    /// Writable handle of `segments.last()`.
    active: Option<File>,
    first_index: u64,
    /// Index after the last durable record.
    durable_next: u64,
    /// Index the next appended record gets.
    next_index: u64,
    /// Encoded records appended since the last sync (indexes `durable_next..next_index`).
    buf: Vec<u8>,
    /// Points in `buf` where a not-yet-created segment starts: (offset in `buf`, first index).
    splits: Vec<(usize, u64)>,
    poisoned: bool,
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> WalError + 'a {
    move |source| WalError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

fn corrupt(file: &Path, offset: u64, reason: impl Into<String>) -> WalError {
    WalError::Corrupt {
        file: file.to_path_buf(),
        offset,
        reason: reason.into(),
    }
}

/// File name of the segment whose first index is `first_index`.
pub fn segment_file_name(first_index: u64) -> String {
    format!("{first_index:020}{SEGMENT_SUFFIX}")
}

fn parse_segment_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(SEGMENT_SUFFIX)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

fn encode_header(first_index: u64) -> [u8; SEGMENT_HEADER_LEN as usize] {
    let mut h = [0u8; SEGMENT_HEADER_LEN as usize];
    h[0..4].copy_from_slice(&SEGMENT_MAGIC);
    h[4..8].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    h[8..16].copy_from_slice(&first_index.to_le_bytes());
    let crc = crc32c::crc32c(&h[0..16]);
    h[16..20].copy_from_slice(&crc.to_le_bytes());
    h
}

fn decode_header(h: &[u8; SEGMENT_HEADER_LEN as usize]) -> Result<u64, String> {
    if h[0..4] != SEGMENT_MAGIC {
        return Err(format!("bad segment magic {:02x?}", &h[0..4]));
    }
    let crc = u32::from_le_bytes(h[16..20].try_into().unwrap());
    if crc32c::crc32c(&h[0..16]) != crc {
        return Err("segment header checksum mismatch".into());
    }
    let version = u32::from_le_bytes(h[4..8].try_into().unwrap());
    if version != FORMAT_VERSION {
        return Err(format!("unsupported segment format version {version}"));
    }
    let first = u64::from_le_bytes(h[8..16].try_into().unwrap());
    if first == 0 {
        return Err("segment header first index is 0".into());
    }
    Ok(first)
}

fn record_crc(len: u32, index: u64, payload: &[u8]) -> u32 {
    let c = crc32c::crc32c(&len.to_le_bytes());
    let c = crc32c::crc32c_append(c, &index.to_le_bytes());
    crc32c::crc32c_append(c, payload)
}

struct RecordHeader {
    len: u32,
    crc: u32,
    index: u64,
}

fn parse_record_header(h: &[u8]) -> RecordHeader {
    RecordHeader {
        len: u32::from_le_bytes(h[0..4].try_into().unwrap()),
        crc: u32::from_le_bytes(h[4..8].try_into().unwrap()),
        index: u64::from_le_bytes(h[8..16].try_into().unwrap()),
    }
}

fn fs_err(e: bulwark_fs::FsError) -> WalError {
    WalError::Io {
        op: e.op,
        path: e.path,
        source: e.source,
    }
}

fn fsync_dir(dir: &Path) -> Result<(), WalError> {
    bulwark_fs::fsync_dir(dir).map_err(fs_err)
}

/// Creates segment `first_index` holding `records` (already encoded) crash-safely:
/// temp file, fsync, rename, fsync the directory. Returns the path and a writable handle.
///
/// A failure to create, write or rename the temp file removes it again and is [`Failure::Undone`]
/// (nothing is left behind); a failed fsync is [`Failure::Fatal`].
fn create_segment(
    dir: &Path,
    first_index: u64,
    records: &[u8],
) -> Result<(PathBuf, File), Failure> {
    let path = dir.join(segment_file_name(first_index));
    // bulwark_fs writes `<name>.wal.tmp` first: the TEMP_SUFFIX that `Wal::open` removes after a crash.
    match bulwark_fs::create_file_atomically(&path, &[&encode_header(first_index), records]) {
        Ok(file) => Ok((path, file)),
        Err(WriteFailure::Undone(e)) => Err(Failure::Undone(fs_err(e))),
        Err(WriteFailure::Unsure(e)) => Err(Failure::Fatal(fs_err(e))),
    }
}

fn open_rw(path: &Path) -> Result<File, WalError> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(io_err("open", path))
}

/// Why recovery stopped reading a segment at some record boundary.
enum Anomaly {
    ShortHeader { remaining: u64 },
    PastEof { len: u32, end: u64 },
    AbsurdLength { len: u32 },
    ChecksumAtEof,
    ChecksumMid,
    IndexMismatch { expected: u64, found: u64 },
}

impl Anomaly {
    fn describe(&self, file_len: u64) -> String {
        match self {
            Anomaly::ShortHeader { remaining } => {
                format!("incomplete record header ({remaining} bytes before end of file)")
            }
            Anomaly::PastEof { len, end } => format!(
                "record of {len} payload bytes would end at {end}, past the end of the file ({file_len})"
            ),
            Anomaly::AbsurdLength { len } => format!(
                "record length {len} exceeds the maximum of {MAX_RECORD_PAYLOAD}"
            ),
            Anomaly::ChecksumAtEof | Anomaly::ChecksumMid => "checksum mismatch".into(),
            Anomaly::IndexMismatch { expected, found } => {
                format!("index gap or out-of-order record: expected index {expected}, found {found}")
            }
        }
    }

    /// Whether this anomaly, in the last segment, has the shape of an unfinished last write.
    fn may_be_torn(&self) -> bool {
        matches!(
            self,
            Anomaly::ShortHeader { .. } | Anomaly::PastEof { .. } | Anomaly::ChecksumAtEof
        )
    }
}

/// Looks for a record with a valid checksum and a plausible index (>= `min_index`) anywhere in `tail`
/// after its first byte. Returns its position within `tail` and its index.
fn find_valid_record(tail: &[u8], min_index: u64) -> Option<(usize, u64)> {
    let hl = RECORD_HEADER_LEN as usize;
    if tail.len() < hl + 1 {
        return None;
    }
    let max_index = min_index.saturating_add(tail.len() as u64 / RECORD_HEADER_LEN + 1);
    for p in 1..=tail.len() - hl {
        let h = parse_record_header(&tail[p..p + hl]);
        if h.index < min_index || h.index > max_index {
            continue;
        }
        let len = h.len as usize;
        if len > MAX_RECORD_PAYLOAD || p + hl + len > tail.len() {
            continue;
        }
        if record_crc(h.len, h.index, &tail[p + hl..p + hl + len]) == h.crc {
            return Some((p, h.index));
        }
    }
    None
}

struct Scanned {
    first_index: u64,
    records: u64,
    len: u64,
    torn: Option<TornTail>,
}

/// Reads and verifies one segment. `expected_first` is the index the previous segment ends before.
fn scan_segment(
    path: &Path,
    name_index: u64,
    expected_first: Option<u64>,
    is_last: bool,
) -> Result<Scanned, WalError> {
    let file = open_rw(path)?;
    let file_len = file.metadata().map_err(io_err("stat", path))?.len();
    if file_len < SEGMENT_HEADER_LEN {
        return Err(corrupt(
            path,
            0,
            format!("segment header truncated: file is {file_len} bytes, the header needs {SEGMENT_HEADER_LEN}"),
        ));
    }
    let mut hdr = [0u8; SEGMENT_HEADER_LEN as usize];
    file.read_exact_at(&mut hdr, 0)
        .map_err(io_err("read", path))?;
    let first = decode_header(&hdr).map_err(|reason| corrupt(path, 0, reason))?;
    if first != name_index {
        return Err(corrupt(
            path,
            0,
            format!("segment header says first index {first}, but the file name says {name_index}"),
        ));
    }
    if let Some(expected) = expected_first {
        if first != expected {
            return Err(corrupt(
                path,
                0,
                format!(
                    "index gap between segments: expected first index {expected}, found {first}"
                ),
            ));
        }
    }

    let mut reader = BufReader::with_capacity(1 << 20, &file);
    reader
        .seek(SeekFrom::Start(SEGMENT_HEADER_LEN))
        .map_err(io_err("seek", path))?;
    let mut off = SEGMENT_HEADER_LEN;
    let mut idx = first;
    let mut payload = Vec::new();
    let anomaly = loop {
        if off == file_len {
            return Ok(Scanned {
                first_index: first,
                records: idx - first,
                len: off,
                torn: None,
            });
        }
        let remaining = file_len - off;
        if remaining < RECORD_HEADER_LEN {
            break Anomaly::ShortHeader { remaining };
        }
        let mut h = [0u8; RECORD_HEADER_LEN as usize];
        reader.read_exact(&mut h).map_err(io_err("read", path))?;
        let h = parse_record_header(&h);
        let end = off + RECORD_HEADER_LEN + u64::from(h.len);
        if end > file_len {
            break Anomaly::PastEof { len: h.len, end };
        }
        if h.len as usize > MAX_RECORD_PAYLOAD {
            break Anomaly::AbsurdLength { len: h.len };
        }
        payload.resize(h.len as usize, 0);
        reader
            .read_exact(&mut payload)
            .map_err(io_err("read", path))?;
        if record_crc(h.len, h.index, &payload) != h.crc {
            break if end == file_len {
                Anomaly::ChecksumAtEof
            } else {
                Anomaly::ChecksumMid
            };
        }
        if h.index != idx {
            break Anomaly::IndexMismatch {
                expected: idx,
                found: h.index,
            };
        }
        off = end;
        idx += 1;
    };

    let reason = anomaly.describe(file_len);
    if !is_last {
        return Err(corrupt(
            path,
            off,
            format!("{reason} (in a segment that is not the last)"),
        ));
    }
    let mut tail = vec![0u8; (file_len - off) as usize];
    file.read_exact_at(&mut tail, off)
        .map_err(io_err("read", path))?;
    let all_zero = tail.iter().all(|&b| b == 0);
    if !all_zero {
        if !anomaly.may_be_torn() {
            return Err(corrupt(path, off, reason));
        }
        if let Some((p, found)) = find_valid_record(&tail, idx) {
            return Err(corrupt(
                path,
                off,
                format!(
                    "{reason}; a valid record (index {found}) follows at offset {}, so this is not a torn write",
                    off + p as u64
                ),
            ));
        }
    }
    // A torn tail: cut it.
    let bytes_cut = file_len - off;
    tracing::warn!(
        file = %path.display(),
        offset = off,
        bytes_cut,
        cause = %if all_zero { "zero bytes to end of file".to_string() } else { reason },
        "cutting torn tail of write-ahead log"
    );
    file.set_len(off).map_err(io_err("truncate", path))?;
    file.sync_all().map_err(io_err("fsync", path))?;
    Ok(Scanned {
        first_index: first,
        records: idx - first,
        len: off,
        torn: Some(TornTail {
            file: path.to_path_buf(),
            offset: off,
            bytes_cut,
        }),
    })
}

/// Byte offset of record `index` inside `seg` (or `seg.len` if `index == seg.next_index()`).
fn locate_record(seg: &Segment, index: u64) -> Result<u64, WalError> {
    assert!(index >= seg.first_index && index <= seg.next_index());
    if index == seg.next_index() {
        return Ok(seg.len);
    }
    let file = File::open(&seg.path).map_err(io_err("open", &seg.path))?;
    let mut reader = BufReader::with_capacity(64 << 10, file);
    reader
        .seek(SeekFrom::Start(SEGMENT_HEADER_LEN))
        .map_err(io_err("seek", &seg.path))?;
    let mut off = SEGMENT_HEADER_LEN;
    let mut idx = seg.first_index;
    while idx < index {
        let mut h = [0u8; RECORD_HEADER_LEN as usize];
        reader
            .read_exact(&mut h)
            .map_err(io_err("read", &seg.path))?;
        let h = parse_record_header(&h);
        if h.index != idx || off + RECORD_HEADER_LEN + u64::from(h.len) > seg.len {
            return Err(corrupt(
                &seg.path,
                off,
                "record header changed since recovery",
            ));
        }
        reader
            .seek_relative(i64::from(h.len))
            .map_err(io_err("seek", &seg.path))?;
        off += RECORD_HEADER_LEN + u64::from(h.len);
        idx += 1;
    }
    Ok(off)
}

impl Wal {
    /// Opens (creating the directory if missing) and recovers the log in `dir`: removes leftover temp files,
    /// verifies every segment, cuts a torn tail of the last one. A new log is empty and starts at index 1.
    pub fn open(dir: &Path, opts: WalOptions) -> Result<(Wal, Recovery), WalError> {
        if !dir.exists() {
            fs::create_dir_all(dir).map_err(io_err("create directory", dir))?;
            // Make the new directory's own entry durable.
            if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                fsync_dir(parent)?;
            }
        }
        let mut names = Vec::new();
        let mut removed_temp = false;
        for entry in fs::read_dir(dir).map_err(io_err("list directory", dir))? {
            let entry = entry.map_err(io_err("list directory", dir))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.ends_with(TEMP_SUFFIX) {
                let path = entry.path();
                tracing::warn!(file = %path.display(), "removing leftover write-ahead log temp file");
                fs::remove_file(&path).map_err(io_err("remove", &path))?;
                removed_temp = true;
            } else if let Some(index) = parse_segment_name(name) {
                names.push(index);
            }
        }
        if removed_temp {
            fsync_dir(dir)?;
        }
        names.sort_unstable();

        let mut segments: Vec<Segment> = Vec::with_capacity(names.len());
        let mut torn_tail = None;
        for (i, &index) in names.iter().enumerate() {
            let path = dir.join(segment_file_name(index));
            let expected = segments.last().map(Segment::next_index);
            let s = scan_segment(&path, index, expected, i + 1 == names.len())?;
            if s.torn.is_some() {
                torn_tail = s.torn;
            }
            segments.push(Segment {
                first_index: s.first_index,
                path,
                len: s.len,
                records: s.records,
            });
        }

        let (first_index, next_index) = match (segments.first(), segments.last()) {
            (Some(f), Some(l)) => (f.first_index, l.next_index()),
            _ => (1, 1),
        };
        let active = match segments.last() {
            Some(s) => Some(open_rw(&s.path)?),
            None => None,
        };
        let wal = Wal {
            dir: dir.to_path_buf(),
            opts,
            segments,
            active,
            first_index,
            durable_next: next_index,
            next_index,
            buf: Vec::new(),
            splits: Vec::new(),
            poisoned: false,
        };
        let recovery = Recovery {
            first_index,
            last_index: next_index - 1,
            torn_tail,
        };
        Ok((wal, recovery))
    }

    /// Sets the index of the next record; only allowed while the log holds no record. Durable when it
    /// returns: the log's (empty) segment files are replaced by one empty segment starting at `next`.
    pub fn reset_next_index(&mut self, next: u64) -> Result<(), WalError> {
        self.check_usable()?;
        if next == 0 {
            return Err(WalError::InvalidIndex(next));
        }
        if self.next_index != self.first_index {
            return Err(WalError::NotEmpty {
                first: self.first_index,
                last: self.last_index(),
            });
        }
        let r = self.replace_with_empty_segment(next);
        self.poison_on_err(r)
    }

    /// Deletes every (record-less) segment, then creates an empty segment starting at `next`.
    fn replace_with_empty_segment(&mut self, next: u64) -> Result<(), WalError> {
        assert!(self.buf.is_empty() && self.splits.is_empty());
        self.active = None;
        self.delete_segments_front(self.segments.len())?;
        let (path, file) = create_segment(&self.dir, next, &[]).map_err(Failure::into_error)?;
        self.segments.push(Segment {
            first_index: next,
            path,
            len: SEGMENT_HEADER_LEN,
            records: 0,
        });
        self.active = Some(file);
        self.first_index = next;
        self.durable_next = next;
        self.next_index = next;
        Ok(())
    }

    /// Appends a record and returns its log index. The record is only buffered in memory; it is durable
    /// after the next successful [`Wal::sync`].
    pub fn append(&mut self, payload: &[u8]) -> Result<u64, WalError> {
        self.check_usable()?;
        if payload.len() > MAX_RECORD_PAYLOAD {
            return Err(WalError::RecordTooLarge {
                len: payload.len(),
                max: MAX_RECORD_PAYLOAD,
            });
        }
        let record_len = RECORD_HEADER_LEN + payload.len() as u64;
        // Size and record count of the segment the record would go into.
        let target = if let Some(&(off, first)) = self.splits.last() {
            Some((
                SEGMENT_HEADER_LEN + (self.buf.len() - off) as u64,
                self.next_index - first,
            ))
        } else {
            self.segments.last().map(|s| {
                (
                    s.len + self.buf.len() as u64,
                    s.records + (self.next_index - self.durable_next),
                )
            })
        };
        let roll = match target {
            None => true,
            Some((len, records)) => records > 0 && len + record_len > self.opts.segment_bytes,
        };
        if roll {
            self.splits.push((self.buf.len(), self.next_index));
        }
        let index = self.next_index;
        let len = payload.len() as u32;
        self.buf.reserve(record_len as usize);
        self.buf.extend_from_slice(&len.to_le_bytes());
        self.buf
            .extend_from_slice(&record_crc(len, index, payload).to_le_bytes());
        self.buf.extend_from_slice(&index.to_le_bytes());
        self.buf.extend_from_slice(payload);
        self.next_index += 1;
        Ok(index)
    }

    /// Writes all buffered records and `fdatasync`s them: one write and one fdatasync in the common case
    /// (plus a segment creation with its fsyncs when a segment rolls over). After it returns `Ok`, every
    /// appended record is durable.
    ///
    /// If a write fails (a full disk: [`WalError::is_disk_full`]; or any other error from `write`, or from
    /// creating or renaming a new segment), the call undoes itself and the log is exactly as before it: the
    /// same records durable, the same ones still buffered; it may be retried. If an fsync fails, or the undo
    /// itself fails, the log is poisoned and must be reopened (see the crate documentation for why).
    pub fn sync(&mut self) -> Result<(), WalError> {
        self.check_usable()?;
        if self.buf.is_empty() {
            return Ok(());
        }
        match self.sync_inner() {
            Ok(()) => Ok(()),
            Err(Failure::Undone(e)) => {
                // The caller decides how loud this is (it may retry every few hundred ms).
                tracing::debug!(
                    dir = %self.dir.display(),
                    error = %e,
                    records = self.next_index - self.durable_next,
                    "a write-ahead log write failed and was undone; the records stay buffered"
                );
                Err(e)
            }
            Err(Failure::Fatal(e)) => {
                self.poisoned = true;
                Err(e)
            }
        }
    }

    /// Writes the buffer: the part for the active segment first (write + fdatasync), then each new segment.
    /// In-memory positions change only once everything is durable; a write failure is undone on disk.
    fn sync_inner(&mut self) -> Result<(), Failure> {
        let first_split = self.splits.first().map_or(self.buf.len(), |s| s.0);
        // The active segment's durable length before this sync, if we are about to write into it.
        let mut active_written: Option<u64> = None;
        if first_split > 0 {
            let seg = self
                .segments
                .last()
                .expect("records buffered for a missing segment");
            let file = self
                .active
                .as_ref()
                .expect("active segment without a handle");
            active_written = Some(seg.len);
            if let Err(e) = file.write_all_at(&self.buf[..first_split], seg.len) {
                let e = io_err("write", &seg.path)(e);
                return Err(self.undo_sync(&[], active_written, e));
            }
            file.sync_data()
                .map_err(io_err("fdatasync", &seg.path))
                .map_err(Failure::Fatal)?;
        }
        let mut created: Vec<(Segment, File)> = Vec::with_capacity(self.splits.len());
        for (i, &(start, first)) in self.splits.iter().enumerate() {
            let (end, next) = self
                .splits
                .get(i + 1)
                .map_or((self.buf.len(), self.next_index), |s| (s.0, s.1));
            match create_segment(&self.dir, first, &self.buf[start..end]) {
                Ok((path, file)) => created.push((
                    Segment {
                        first_index: first,
                        path,
                        len: SEGMENT_HEADER_LEN + (end - start) as u64,
                        records: next - first,
                    },
                    file,
                )),
                Err(Failure::Undone(e)) => {
                    let paths: Vec<PathBuf> = created.iter().map(|(s, _)| s.path.clone()).collect();
                    return Err(self.undo_sync(&paths, active_written, e));
                }
                Err(fatal) => return Err(fatal),
            }
        }
        // Everything is durable: commit the in-memory positions.
        if first_split > 0 {
            let records = self.splits.first().map_or(self.next_index, |s| s.1) - self.durable_next;
            let seg = self.segments.last_mut().expect("checked above");
            seg.len += first_split as u64;
            seg.records += records;
            self.durable_next += records;
        }
        for (seg, file) in created {
            assert_eq!(
                seg.first_index, self.durable_next,
                "segment split out of order"
            );
            self.durable_next = seg.next_index();
            self.segments.push(seg);
            self.active = Some(file);
        }
        assert_eq!(self.durable_next, self.next_index);
        self.buf.clear();
        self.splits.clear();
        Ok(())
    }

    /// Undoes a sync that failed with `error`: deletes the segments it created (newest first, fsyncing the
    /// directory after each, so a crash leaves a consecutive log), then cuts the active segment back to
    /// `active_len` (its durable length before the sync) and fsyncs that. The cut must be durable: records
    /// left behind it could otherwise reappear after a crash behind other records written later at the
    /// same place. Returns [`Failure::Undone`], or [`Failure::Fatal`] if undoing failed.
    fn undo_sync(&self, created: &[PathBuf], active_len: Option<u64>, error: WalError) -> Failure {
        let undo = || -> Result<(), WalError> {
            for path in created.iter().rev() {
                fs::remove_file(path).map_err(io_err("remove", path))?;
                fsync_dir(&self.dir)?;
            }
            if let (Some(len), Some(seg), Some(file)) =
                (active_len, self.segments.last(), self.active.as_ref())
            {
                file.set_len(len).map_err(io_err("truncate", &seg.path))?;
                file.sync_all().map_err(io_err("fsync", &seg.path))?;
            }
            Ok(())
        };
        match undo() {
            Ok(()) => Failure::Undone(error),
            Err(undo_error) => {
                tracing::error!(
                    dir = %self.dir.display(),
                    error = %error,
                    undo_error = %undo_error,
                    "a write-ahead log write failed and could not be undone"
                );
                Failure::Fatal(error)
            }
        }
    }

    /// Drops every record appended since the last successful [`Wal::sync`] (e.g. after a sync failed for
    /// lack of space and the caller gives those records up). Nothing on disk changes.
    pub fn discard_unsynced(&mut self) {
        let durable = self.durable_next;
        self.truncate_buffer(durable);
    }

    /// Index of the last durable record (`first_index() - 1` when none is durable).
    pub fn durable_last_index(&self) -> u64 {
        self.durable_next - 1
    }

    /// True once an I/O failure made the log unusable (see [`WalError::Poisoned`]).
    pub fn is_poisoned(&self) -> bool {
        self.poisoned
    }

    /// Index of the first record in the log.
    pub fn first_index(&self) -> u64 {
        self.first_index
    }

    /// Index of the last record, durable or buffered (`first_index() - 1` when the log is empty).
    pub fn last_index(&self) -> u64 {
        self.next_index - 1
    }

    /// The log directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Replays records `from..=last_index()`, durable and buffered, verifying checksums of what it reads
    /// from disk. `from` may be `last_index() + 1` (nothing to read).
    pub fn read_from(
        &self,
        from: u64,
    ) -> Result<impl Iterator<Item = Result<(u64, Vec<u8>), WalError>> + '_, WalError> {
        self.check_usable()?;
        if from < self.first_index || from > self.next_index {
            return Err(WalError::OutOfRange {
                index: from,
                first: self.first_index,
                last: self.last_index(),
            });
        }
        // The segment holding `from`, if it is on disk.
        let seg = if from < self.durable_next {
            self.segments.partition_point(|s| s.first_index <= from) - 1
        } else {
            self.segments.len()
        };
        Ok(ReadIter {
            wal: self,
            next: from,
            seg,
            reader: None,
            buf_pos: None,
            done: false,
        })
    }

    /// Log compaction after a checkpoint at `through`: deletes, oldest first, every segment all of whose
    /// records are `<= through`; records `> through` are never deleted. Buffered records are synced first.
    /// If every record is `<= through`, the log becomes empty with next index `max(last_index, through) + 1`
    /// (kept in an empty segment, so it survives reopen). The directory is fsynced.
    pub fn truncate_prefix(&mut self, through: u64) -> Result<(), WalError> {
        self.check_usable()?;
        if through < self.first_index {
            return Ok(());
        }
        self.sync()?;
        let r = self.truncate_prefix_inner(through);
        self.poison_on_err(r)
    }

    fn truncate_prefix_inner(&mut self, through: u64) -> Result<(), WalError> {
        let n = self.segments.len();
        let deletable = (0..n)
            .take_while(|&i| {
                let next = self
                    .segments
                    .get(i + 1)
                    .map_or(self.durable_next, |s| s.first_index);
                next - 1 <= through
            })
            .count();
        if deletable == n {
            let next = self.next_index.max(through + 1);
            return self.replace_with_empty_segment(next);
        }
        self.delete_segments_front(deletable)?;
        self.first_index = self.segments[0].first_index;
        Ok(())
    }

    /// Deletes the first `count` segments, oldest first, fsyncing the directory after each so that the
    /// segments left after a crash are always a consecutive suffix.
    fn delete_segments_front(&mut self, count: usize) -> Result<(), WalError> {
        if count == self.segments.len() {
            self.active = None;
        }
        for seg in self.segments.drain(..count) {
            fs::remove_file(&seg.path).map_err(io_err("remove", &seg.path))?;
            fsync_dir(&self.dir)?;
        }
        Ok(())
    }

    /// Raft conflict resolution: drops every record with index `>= from` (possibly across segments). Durable
    /// when it returns. `from` must be in `first_index()..=last_index() + 1`.
    pub fn truncate_suffix(&mut self, from: u64) -> Result<(), WalError> {
        self.check_usable()?;
        if from < self.first_index || from > self.next_index {
            return Err(WalError::OutOfRange {
                index: from,
                first: self.first_index,
                last: self.last_index(),
            });
        }
        if from >= self.durable_next {
            self.truncate_buffer(from);
            return Ok(());
        }
        let r = self.truncate_suffix_on_disk(from);
        self.poison_on_err(r)
    }

    /// Drops buffered records `>= from` (all of which are not yet on disk).
    fn truncate_buffer(&mut self, from: u64) {
        let mut pos = 0usize;
        let mut idx = self.durable_next;
        while idx < from {
            let h = parse_record_header(&self.buf[pos..pos + RECORD_HEADER_LEN as usize]);
            assert_eq!(h.index, idx);
            pos += RECORD_HEADER_LEN as usize + h.len as usize;
            idx += 1;
        }
        self.buf.truncate(pos);
        self.splits.retain(|&(_, first)| first < from);
        self.next_index = from;
    }

    fn truncate_suffix_on_disk(&mut self, from: u64) -> Result<(), WalError> {
        self.buf.clear();
        self.splits.clear();
        self.next_index = self.durable_next;
        let k = self.segments.partition_point(|s| s.first_index <= from) - 1;
        // Delete later segments newest first, so a crash leaves a consecutive prefix.
        if k + 1 < self.segments.len() {
            self.active = None;
            while self.segments.len() > k + 1 {
                let seg = self.segments.pop().unwrap();
                fs::remove_file(&seg.path).map_err(io_err("remove", &seg.path))?;
                fsync_dir(&self.dir)?;
            }
            self.durable_next = self.segments[k].next_index();
            self.next_index = self.durable_next;
        }
        let seg = &self.segments[k];
        let offset = locate_record(seg, from)?;
        let file = open_rw(&seg.path)?;
        file.set_len(offset)
            .map_err(io_err("truncate", &seg.path))?;
        file.sync_all().map_err(io_err("fsync", &seg.path))?;
        let seg = &mut self.segments[k];
        seg.len = offset;
        seg.records = from - seg.first_index;
        self.active = Some(file);
        self.durable_next = from;
        self.next_index = from;
        Ok(())
    }

    /// Bytes the log's segment files take, counting buffered records as if synced.
    pub fn size_bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.len).sum::<u64>()
            + self.buf.len() as u64
            + self.splits.len() as u64 * SEGMENT_HEADER_LEN
    }

    /// Number of segment files, counting segments that the next sync will create.
    pub fn segment_count(&self) -> usize {
        self.segments.len() + self.splits.len()
    }

    fn check_usable(&self) -> Result<(), WalError> {
        if self.poisoned {
            Err(WalError::Poisoned)
        } else {
            Ok(())
        }
    }

    fn poison_on_err<T>(&mut self, r: Result<T, WalError>) -> Result<T, WalError> {
        if r.is_err() {
            self.poisoned = true;
        }
        r
    }
}

struct SegReader {
    reader: BufReader<File>,
    offset: u64,
    index: u64,
}

struct ReadIter<'a> {
    wal: &'a Wal,
    next: u64,
    seg: usize,
    reader: Option<SegReader>,
    buf_pos: Option<usize>,
    done: bool,
}

impl ReadIter<'_> {
    fn next_from_disk(&mut self) -> Result<(u64, Vec<u8>), WalError> {
        let wal = self.wal;
        loop {
            let seg = &wal.segments[self.seg];
            let r = match &mut self.reader {
                Some(r) => r,
                None => {
                    let file = File::open(&seg.path).map_err(io_err("open", &seg.path))?;
                    let mut reader = BufReader::with_capacity(256 << 10, file);
                    reader
                        .seek(SeekFrom::Start(SEGMENT_HEADER_LEN))
                        .map_err(io_err("seek", &seg.path))?;
                    self.reader.insert(SegReader {
                        reader,
                        offset: SEGMENT_HEADER_LEN,
                        index: seg.first_index,
                    })
                }
            };
            if r.offset == seg.len {
                self.seg += 1;
                self.reader = None;
                continue;
            }
            let mut h = [0u8; RECORD_HEADER_LEN as usize];
            r.reader
                .read_exact(&mut h)
                .map_err(io_err("read", &seg.path))?;
            let h = parse_record_header(&h);
            let end = r.offset + RECORD_HEADER_LEN + u64::from(h.len);
            if h.len as usize > MAX_RECORD_PAYLOAD || end > seg.len {
                return Err(corrupt(
                    &seg.path,
                    r.offset,
                    format!("record length {} runs past the end of the segment", h.len),
                ));
            }
            if h.index != r.index {
                return Err(corrupt(
                    &seg.path,
                    r.offset,
                    format!("expected index {}, found {}", r.index, h.index),
                ));
            }
            if h.index < self.next {
                r.reader
                    .seek_relative(i64::from(h.len))
                    .map_err(io_err("seek", &seg.path))?;
            } else {
                let mut payload = vec![0u8; h.len as usize];
                r.reader
                    .read_exact(&mut payload)
                    .map_err(io_err("read", &seg.path))?;
                if record_crc(h.len, h.index, &payload) != h.crc {
                    return Err(corrupt(&seg.path, r.offset, "checksum mismatch"));
                }
                r.offset = end;
                r.index += 1;
                return Ok((h.index, payload));
            }
            r.offset = end;
            r.index += 1;
        }
    }

    fn next_from_buffer(&mut self) -> (u64, Vec<u8>) {
        let buf = &self.wal.buf;
        let hl = RECORD_HEADER_LEN as usize;
        let mut pos = match self.buf_pos {
            Some(p) => p,
            None => {
                let mut p = 0;
                let mut idx = self.wal.durable_next;
                while idx < self.next {
                    let h = parse_record_header(&buf[p..p + hl]);
                    p += hl + h.len as usize;
                    idx += 1;
                }
                p
            }
        };
        let h = parse_record_header(&buf[pos..pos + hl]);
        assert_eq!(h.index, self.next, "buffered records out of order");
        let payload = buf[pos + hl..pos + hl + h.len as usize].to_vec();
        pos += hl + h.len as usize;
        self.buf_pos = Some(pos);
        (h.index, payload)
    }
}

impl Iterator for ReadIter<'_> {
    type Item = Result<(u64, Vec<u8>), WalError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done || self.next >= self.wal.next_index {
            return None;
        }
        let item = if self.next < self.wal.durable_next {
            self.next_from_disk()
        } else {
            Ok(self.next_from_buffer())
        };
        match &item {
            Ok(_) => self.next += 1,
            Err(_) => self.done = true,
        }
        Some(item)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip() {
        let h = encode_header(42);
        assert_eq!(decode_header(&h), Ok(42));
        let mut bad = h;
        bad[9] ^= 1;
        assert!(decode_header(&bad).is_err());
    }

    #[test]
    fn segment_names() {
        assert_eq!(segment_file_name(1), "00000000000000000001.wal");
        assert_eq!(parse_segment_name("00000000000000000001.wal"), Some(1));
        assert_eq!(parse_segment_name("00000000000000000001.wal.tmp"), None);
        assert_eq!(parse_segment_name("1.wal"), None);
        let temp = bulwark_fs::temp_path(Path::new(&segment_file_name(1)));
        assert!(temp.to_str().unwrap().ends_with(TEMP_SUFFIX), "{temp:?}");
    }

    #[test]
    fn disk_full_is_recognised_by_its_os_error() {
        let err = |code: i32| WalError::Io {
            op: "write",
            path: PathBuf::from("x"),
            source: io::Error::from_raw_os_error(code),
        };
        assert!(err(28).is_disk_full(), "ENOSPC");
        assert!(err(122).is_disk_full(), "EDQUOT");
        assert!(!err(5).is_disk_full(), "EIO");
        assert!(!WalError::Poisoned.is_disk_full());
    }

    #[test]
    fn crc_covers_len_and_index() {
        let base = record_crc(3, 7, b"abc");
        assert_ne!(base, record_crc(4, 7, b"abc"));
        assert_ne!(base, record_crc(3, 8, b"abc"));
        assert_ne!(base, record_crc(3, 7, b"abd"));
    }
}
