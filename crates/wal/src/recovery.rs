//! Opening a log: every segment read and verified, a leftover temp file removed, the torn tail of
//! the last segment cut, and everything else refused with the file and offset (the recovery rules of
//! the crate documentation).

use std::fs::{self, File};
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use bulwark_limits::MAX_RECORD_PAYLOAD;

use crate::error::{corrupt, io_err, BadRecord, Corruption, WalError};
use crate::format::{
    decode_header, parse_record_header, parse_segment_name, record_crc, segment_file_name,
    RECORD_HEADER_LEN, SEGMENT_HEADER_LEN, TEMP_SUFFIX,
};
use crate::segment::{fsync_dir, open_rw, Segment};
use crate::writer::{Wal, WalOptions};

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

impl Wal {
    /// Opens (creating the directory if missing) and recovers the log in `dir`: removes leftover temp files,
    /// verifies every segment, cuts a torn tail of the last one. A new log is empty and starts at index 1.
    pub fn open(dir: &Path, opts: WalOptions) -> Result<(Wal, Recovery), WalError> {
        let names = list_segments(dir)?;
        let mut segments: Vec<Segment> = Vec::with_capacity(names.len());
        let mut torn_tail = None;
        for (i, &index) in names.iter().enumerate() {
            let path = dir.join(segment_file_name(index));
            let expected = segments.last().map(Segment::next_index);
            let last = i + 1 == names.len();
            let s = scan_segment(&path, index, expected, last, opts.keep_through)?;
            if s.torn.is_some() {
                torn_tail = s.torn;
            }
            let segment = Segment::new(s.first_index, path, s.len, s.records);
            segment.zeroed_to.set(s.zeroed_to);
            segments.push(segment);
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
            flushing: false,
        };
        let recovery = Recovery {
            first_index,
            last_index: next_index - 1,
            torn_tail,
        };
        Ok((wal, recovery))
    }
}

/// The first indexes of the segments in `dir`, sorted, after creating `dir` if missing and removing
/// leftover temp files (a crash while a segment was created).
fn list_segments(dir: &Path) -> Result<Vec<u64>, WalError> {
    bulwark_fs::create_dir_all_durably(dir).map_err(crate::error::fs_err)?;
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
    Ok(names)
}

/// Reads and verifies one segment. `expected_first` is the index the previous segment ends before.
fn scan_segment(
    path: &Path,
    name_index: u64,
    expected_first: Option<u64>,
    is_last: bool,
    keep_through: u64,
) -> Result<Scanned, WalError> {
    let file = open_rw(path)?;
    let file_len = file.metadata().map_err(io_err("stat", path))?.len();
    let first = read_segment_header(&file, path, file_len, name_index, expected_first)?;
    let (off, idx, anomaly) = scan_records(&file, path, first, file_len)?;
    // Zeros to the end are the writer's zero-fill ahead (or an append of which only the size
    // got to disk): the segment ends at `off`, nothing is cut or reported, later writes reuse them.
    if anomaly.is_none() || only_zeros(&file, path, off, file_len)? {
        return Ok(Scanned {
            first_index: first,
            records: idx - first,
            len: off,
            zeroed_to: file_len,
            torn: None,
        });
    }
    let anomaly = anomaly.expect("checked above");
    if !is_last {
        return Err(corrupt(path, off, Corruption::NotLastSegment(anomaly)));
    }
    if idx <= keep_through {
        return Err(corrupt(
            path,
            off,
            Corruption::BeforeDurable {
                record: anomaly,
                index: idx,
                durable: keep_through,
            },
        ));
    }
    let torn = cut_torn_tail(&file, path, off, idx, anomaly, file_len)?;
    Ok(Scanned {
        first_index: first,
        records: idx - first,
        len: off,
        zeroed_to: off,
        torn: Some(torn),
    })
}

/// Checks the segment header against the file name and the previous segment; returns its first index.
fn read_segment_header(
    file: &File,
    path: &Path,
    file_len: u64,
    name_index: u64,
    expected_first: Option<u64>,
) -> Result<u64, WalError> {
    if file_len < SEGMENT_HEADER_LEN {
        return Err(corrupt(path, 0, Corruption::HeaderTruncated { file_len }));
    }
    let mut hdr = [0u8; SEGMENT_HEADER_LEN as usize];
    file.read_exact_at(&mut hdr, 0)
        .map_err(io_err("read", path))?;
    let first = decode_header(&hdr).map_err(|e| corrupt(path, 0, e))?;
    if first != name_index {
        return Err(corrupt(
            path,
            0,
            Corruption::NameMismatch {
                header: first,
                name: name_index,
            },
        ));
    }
    if let Some(expected) = expected_first {
        if first != expected {
            return Err(corrupt(
                path,
                0,
                Corruption::SegmentGap {
                    expected,
                    found: first,
                },
            ));
        }
    }
    Ok(first)
}

/// Reads records from the header on while they are whole, checksummed and consecutive. Returns the
/// offset and index after the last good record, and what stopped the scan before end-of-file, if
/// anything did.
fn scan_records(
    file: &File,
    path: &Path,
    first: u64,
    file_len: u64,
) -> Result<(u64, u64, Option<BadRecord>), WalError> {
    let mut reader = BufReader::with_capacity(1 << 20, file);
    reader
        .seek(SeekFrom::Start(SEGMENT_HEADER_LEN))
        .map_err(io_err("seek", path))?;
    let mut off = SEGMENT_HEADER_LEN;
    let mut idx = first;
    let mut payload = Vec::new();
    let anomaly = loop {
        if off == file_len {
            return Ok((off, idx, None));
        }
        let remaining = file_len - off;
        if remaining < RECORD_HEADER_LEN {
            break BadRecord::ShortHeader { remaining };
        }
        let mut h = [0u8; RECORD_HEADER_LEN as usize];
        reader.read_exact(&mut h).map_err(io_err("read", path))?;
        let h = parse_record_header(&h);
        let end = off + RECORD_HEADER_LEN + u64::from(h.len);
        if end > file_len {
            break BadRecord::PastEof {
                len: h.len,
                end,
                file_len,
            };
        }
        if h.len as usize > MAX_RECORD_PAYLOAD {
            break BadRecord::AbsurdLength { len: h.len };
        }
        payload.resize(h.len as usize, 0);
        reader
            .read_exact(&mut payload)
            .map_err(io_err("read", path))?;
        if record_crc(h.len, h.index, &payload) != h.crc {
            break BadRecord::Checksum {
                at_eof: only_zeros(file, path, end, file_len)?,
            };
        }
        if h.index != idx {
            break BadRecord::IndexMismatch {
                expected: idx,
                found: h.index,
            };
        }
        off = end;
        idx += 1;
    };
    Ok((off, idx, Some(anomaly)))
}

/// The last segment stopped at `off` because of `anomaly`: cuts the rest if it is a torn tail (see
/// the crate documentation), or refuses it as corruption.
fn cut_torn_tail(
    file: &File,
    path: &Path,
    off: u64,
    idx: u64,
    anomaly: BadRecord,
    file_len: u64,
) -> Result<TornTail, WalError> {
    if !anomaly.may_be_torn() {
        return Err(corrupt(path, off, Corruption::Record(anomaly)));
    }
    let mut tail = vec![0u8; (file_len - off) as usize];
    file.read_exact_at(&mut tail, off)
        .map_err(io_err("read", path))?;
    if let Some((p, found)) = find_valid_record(&tail, idx) {
        return Err(corrupt(
            path,
            off,
            Corruption::ValidRecordFollows {
                record: anomaly,
                found,
                at: off + p as u64,
            },
        ));
    }
    let bytes_cut = file_len - off;
    tracing::warn!(
        file = %path.display(),
        offset = off,
        bytes_cut,
        cause = %anomaly,
        "cutting torn tail of write-ahead log"
    );
    file.set_len(off).map_err(io_err("truncate", path))?;
    file.sync_all().map_err(io_err("fsync", path))?;
    Ok(TornTail {
        file: path.to_path_buf(),
        offset: off,
        bytes_cut,
    })
}

/// Whether `path` holds only zero bytes from `from` to `file_len` (true when `from == file_len`).
fn only_zeros(file: &File, path: &Path, from: u64, file_len: u64) -> Result<bool, WalError> {
    let mut chunk = vec![0u8; (file_len - from).min(1 << 20) as usize];
    let mut at = from;
    while at < file_len {
        let n = (file_len - at).min(chunk.len() as u64) as usize;
        file.read_exact_at(&mut chunk[..n], at)
            .map_err(io_err("read", path))?;
        if chunk[..n].iter().any(|&b| b != 0) {
            return Ok(false);
        }
        at += n as u64;
    }
    Ok(true)
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
    /// The file's length: where the zeros after `len`, if any, end.
    zeroed_to: u64,
    torn: Option<TornTail>,
}
