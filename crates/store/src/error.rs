//! [`StoreError`]: every error names the store's path; a full disk is told apart.

use std::path::{Path, PathBuf};

use crate::tables::FORMAT_VERSION;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("state store {path}: {what}: {source}")]
    Redb {
        path: PathBuf,
        what: &'static str,
        source: Box<redb::Error>,
    },
    #[error("state store {path}: corrupt record in table {table} at key {key}")]
    Corrupt {
        path: PathBuf,
        table: &'static str,
        key: String,
    },
    #[error("state store {path}: format version {found}, this build reads {FORMAT_VERSION}")]
    Version { path: PathBuf, found: u64 },
    #[error("state store {path}: snapshot: {reason}")]
    Snapshot {
        path: PathBuf,
        reason: crate::snapshot::SnapshotError,
    },
    #[error("state store {path}: the background checkpoint thread died")]
    CheckpointThread { path: PathBuf },
    #[error("state store {path}: {what}: {source}")]
    Io {
        path: PathBuf,
        what: &'static str,
        source: std::io::Error,
    },
    /// The database is closed after an I/O failure (a full disk) until a reopen succeeds.
    #[error(
        "state store {path}: closed after an I/O failure (a full disk?) until it can be reopened"
    )]
    Unavailable { path: PathBuf },
}

/// Whether an I/O error says the device (or a quota) has no space left: `ENOSPC` or `EDQUOT`.
pub use bulwark_fs::is_disk_full as is_disk_full_io;

impl StoreError {
    /// True when the error is a full disk (or quota): a write of redb or of a file failed with
    /// `ENOSPC`/`EDQUOT`.
    pub fn is_disk_full(&self) -> bool {
        match self {
            StoreError::Redb { source, .. } => {
                matches!(source.as_ref(), redb::Error::Io(e) if is_disk_full_io(e))
            }
            StoreError::Io { source, .. } => is_disk_full_io(source),
            StoreError::Unavailable { .. } => true,
            _ => false,
        }
    }

    /// True when the error comes from a database handle that an I/O failure made unusable (every
    /// later call fails until it is reopened), or from the I/O itself.
    pub(crate) fn is_io_failure(&self) -> bool {
        match self {
            StoreError::Redb { source, .. } => matches!(
                source.as_ref(),
                redb::Error::Io(_) | redb::Error::PreviousIo | redb::Error::DatabaseClosed
            ),
            StoreError::Unavailable { .. } => true,
            _ => false,
        }
    }
}

pub(crate) fn redb_err<E: Into<redb::Error>>(
    path: &Path,
    what: &'static str,
) -> impl FnOnce(E) -> StoreError {
    let path = path.to_path_buf();
    move |e| StoreError::Redb {
        path,
        what,
        source: Box::new(e.into()),
    }
}
