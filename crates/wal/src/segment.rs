//! One segment file: what the log knows of it, its crash-safe creation, and finding a record in it.

use std::cell::Cell;
use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use bulwark_fs::WriteFailure;

use crate::error::{corrupt, fs_err, io_err, Corruption, Failure, WalError};
use crate::format::{
    encode_header, parse_record_header, segment_file_name, RECORD_HEADER_LEN, SEGMENT_HEADER_LEN,
};

/// One segment file that exists on disk.
#[derive(Debug)]
pub(crate) struct Segment {
    pub(crate) first_index: u64,
    pub(crate) path: PathBuf,
    /// Durable length in bytes (header plus synced records).
    pub(crate) len: u64,
    /// Number of durable records in it.
    pub(crate) records: u64,
    /// Where the zeros the writer wrote ahead of `len` end, as far as the writer knows (`len`
    /// when none are). Kept in memory rather than asked of the file: an `fstat` before every
    /// write makes Linux (6.13 on) give the next write a fine-grained, new modification time,
    /// and ext4 then writes the inode in the `fdatasync` the zeros were meant to spare it.
    /// Only speed depends on it: zeros the writer does not know of are padding all the same.
    pub(crate) zeroed_to: Cell<u64>,
    /// A zero-fill ahead of the write position failed here (a full disk): not tried again in
    /// this segment.
    pub(crate) zero_fill_failed: Cell<bool>,
}

impl Segment {
    pub(crate) fn new(first_index: u64, path: PathBuf, len: u64, records: u64) -> Segment {
        Segment {
            first_index,
            path,
            len,
            records,
            zeroed_to: Cell::new(len),
            zero_fill_failed: Cell::new(false),
        }
    }

    pub(crate) fn next_index(&self) -> u64 {
        self.first_index + self.records
    }
}

pub(crate) fn fsync_dir(dir: &Path) -> Result<(), WalError> {
    bulwark_fs::fsync_dir(dir).map_err(fs_err)
}

/// Creates segment `first_index` holding `records` (already encoded) crash-safely:
/// temp file, fsync, rename, fsync the directory. Returns the path and a writable handle.
///
/// A failure to create, write or rename the temp file removes it again and is [`Failure::Undone`]
/// (nothing is left behind); a failed fsync is [`Failure::Fatal`].
pub(crate) fn create_segment(
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

pub(crate) fn open_rw(path: &Path) -> Result<File, WalError> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(io_err("open", path))
}

/// Byte offset of record `index` inside `seg` (or `seg.len` if `index == seg.next_index()`).
pub(crate) fn locate_record(seg: &Segment, index: u64) -> Result<u64, WalError> {
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
            return Err(corrupt(&seg.path, off, Corruption::HeaderChanged));
        }
        reader
            .seek_relative(i64::from(h.len))
            .map_err(io_err("seek", &seg.path))?;
        off += RECORD_HEADER_LEN + u64::from(h.len);
        idx += 1;
    }
    Ok(off)
}
