//! What can go wrong: [`WalError`] (an I/O error names the file, corruption the file and the byte
//! offset), and how a multi-step write failed ([`Failure`]: undone, or the log must be poisoned).

use std::io;
use std::path::{Path, PathBuf};

use bulwark_limits::MAX_RECORD_PAYLOAD;

use crate::format::{HeaderError, SEGMENT_HEADER_LEN};

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
        reason: Corruption,
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

/// What is wrong at the offset a [`WalError::Corrupt`] names.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Corruption {
    #[error(
        "segment header truncated: file is {file_len} bytes, the header needs {SEGMENT_HEADER_LEN}"
    )]
    HeaderTruncated { file_len: u64 },
    #[error(transparent)]
    Header(#[from] HeaderError),
    #[error("segment header says first index {header}, but the file name says {name}")]
    NameMismatch { header: u64, name: u64 },
    #[error("index gap between segments: expected first index {expected}, found {found}")]
    SegmentGap { expected: u64, found: u64 },
    /// A bad record in a segment that is not the last: never a torn write.
    #[error("{0} (in a segment that is not the last)")]
    NotLastSegment(BadRecord),
    #[error(
        "{record}; record {index} is at or before index {durable}, which was durable, so this \
         is damage, not a torn write"
    )]
    BeforeDurable {
        record: BadRecord,
        index: u64,
        durable: u64,
    },
    /// A bad record in the last segment that does not have the shape of an unfinished write.
    #[error(transparent)]
    Record(BadRecord),
    #[error(
        "{record}; a valid record (index {found}) follows at offset {at}, so this is not a torn \
         write"
    )]
    ValidRecordFollows {
        record: BadRecord,
        found: u64,
        at: u64,
    },
    #[error("record length {len} runs past the end of the segment")]
    PastSegmentEnd { len: u32 },
    #[error("expected index {expected}, found {found}")]
    WrongIndex { expected: u64, found: u64 },
    #[error("checksum mismatch")]
    ChecksumMismatch,
    #[error("record header changed since recovery")]
    HeaderChanged,
}

/// Why the scan of a segment stopped before its end.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BadRecord {
    #[error("incomplete record header ({remaining} bytes before end of file)")]
    ShortHeader { remaining: u64 },
    #[error(
        "record of {len} payload bytes would end at {end}, past the end of the file ({file_len})"
    )]
    PastEof { len: u32, end: u64, file_len: u64 },
    #[error("record length {len} exceeds the maximum of {MAX_RECORD_PAYLOAD}")]
    AbsurdLength { len: u32 },
    #[error("checksum mismatch")]
    Checksum { at_eof: bool },
    #[error("index gap or out-of-order record: expected index {expected}, found {found}")]
    IndexMismatch { expected: u64, found: u64 },
}

impl BadRecord {
    /// Whether this, in the last segment, has the shape of an unfinished last write.
    pub(crate) fn may_be_torn(&self) -> bool {
        matches!(
            self,
            BadRecord::ShortHeader { .. }
                | BadRecord::PastEof { .. }
                | BadRecord::Checksum { at_eof: true }
        )
    }
}

/// Whether an I/O error says the device (or a quota) has no space left: `ENOSPC` or `EDQUOT`.
pub use bulwark_fs::is_disk_full as is_disk_full_io;

impl WalError {
    /// True for an I/O error caused by a full disk (or quota). After a failed
    /// [`Wal::sync`](crate::Wal::sync) with such an error the log is as before the call (see the crate
    /// documentation), so the caller may wait for space and retry instead of stopping.
    ///
    /// Never for a failed `fsync`/`fdatasync`, whatever its error number (a thin-provisioned or
    /// loop device answers `ENOSPC` there): what the kernel could not write back may already be
    /// dropped, the log is poisoned, and waiting for space would not bring it back.
    pub fn is_disk_full(&self) -> bool {
        matches!(self, WalError::Io { op, source, .. }
            if !matches!(*op, "fsync" | "fdatasync") && is_disk_full_io(source))
    }
}

/// How a multi-step write operation failed.
pub(crate) enum Failure {
    /// Nothing changed (what was done is undone): the log may go on.
    Undone(WalError),
    /// The state on disk is unknown (a failed fsync, or a failure while undoing): the log is poisoned.
    Fatal(WalError),
}

impl Failure {
    pub(crate) fn into_error(self) -> WalError {
        match self {
            Failure::Undone(e) | Failure::Fatal(e) => e,
        }
    }
}

pub(crate) fn io_err<'a>(
    op: &'static str,
    path: &'a Path,
) -> impl FnOnce(io::Error) -> WalError + 'a {
    move |source| WalError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

pub(crate) fn corrupt(file: &Path, offset: u64, reason: impl Into<Corruption>) -> WalError {
    WalError::Corrupt {
        file: file.to_path_buf(),
        offset,
        reason: reason.into(),
    }
}

pub(crate) fn fs_err(e: bulwark_fs::FsError) -> WalError {
    WalError::Io {
        op: e.op,
        path: e.path,
        source: e.source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        for op in ["fsync", "fdatasync"] {
            let failed_sync = WalError::Io {
                op,
                path: PathBuf::from("x"),
                source: io::Error::from_raw_os_error(28),
            };
            assert!(!failed_sync.is_disk_full(), "ENOSPC from {op}");
        }
    }
}
