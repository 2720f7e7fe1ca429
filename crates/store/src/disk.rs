//! The open redb database and read handles on its last checkpoint, and how the store closes and
//! reopens it after an I/O failure (see "A full disk" in the crate documentation).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bulwark_limits::{STORE_CACHE_BYTES, STORE_REOPEN_RETRY};
use redb::{Database, ReadOnlyTable, ReadableDatabase};

use crate::error::{redb_err, StoreError};
use crate::state::StateStore;
use crate::tables::{
    ACCOUNT_TRANSFERS, BALANCE_HISTORY, CHANGES, FAILED_TRANSFERS, PENDING, TRANSFERS,
    TRANSFER_INDEX, TRANSFER_RUNS,
};

/// Read handles on the last committed checkpoint.
pub(crate) struct Reader {
    pub(crate) transfers: ReadOnlyTable<u128, &'static [u8]>,
    pub(crate) transfer_runs: ReadOnlyTable<u128, &'static [u8]>,
    pub(crate) pending: ReadOnlyTable<u128, u8>,
    pub(crate) failed_transfers: ReadOnlyTable<u128, u64>,
    pub(crate) account_transfers: ReadOnlyTable<(u128, u64), &'static [u8]>,
    pub(crate) balance_history: ReadOnlyTable<(u128, u64), &'static [u8]>,
    pub(crate) transfer_index: ReadOnlyTable<(u8, u128, u64), &'static [u8]>,
    pub(crate) changes: ReadOnlyTable<u64, &'static [u8]>,
}

/// The open database and read handles on its last committed checkpoint.
pub(crate) struct Disk {
    pub(crate) db: Arc<Database>,
    pub(crate) reader: Reader,
    /// Which opening of the file this is (bumped at every reopen).
    pub(crate) generation: u64,
}

impl StateStore {
    /// The open database, or [`StoreError::Unavailable`] while it is closed.
    pub(crate) fn db(&self) -> Result<Arc<Database>, StoreError> {
        self.disk
            .borrow()
            .as_ref()
            .map(|d| d.db.clone())
            .ok_or_else(|| StoreError::Unavailable {
                path: self.path.clone(),
            })
    }

    /// True while the database is closed after an I/O failure (a full disk) and not yet reopened:
    /// reads of checkpointed data would have to wait for the reopen, and no checkpoint starts.
    pub fn is_unavailable(&self) -> bool {
        self.disk.borrow().is_none()
    }

    /// Closes the database (drops every handle of ours; snapshot sources see none).
    pub(crate) fn close_db(&self) {
        *self.shared_db.write().expect("shared db lock") = None;
        self.disk.borrow_mut().take();
    }

    /// Opens the closed database again. It fails while another handle is still alive (a running
    /// checkpoint, a snapshot being sent) or while the file cannot be repaired (no space).
    pub(crate) fn reopen(&self) -> Result<(), StoreError> {
        debug_assert!(self.disk.borrow().is_none());
        // No full integrity check here: this process wrote the file; redb still repairs it if the
        // failed commit left it needing that.
        let db = Database::builder()
            .set_cache_size(STORE_CACHE_BYTES)
            .open(&self.path)
            .map_err(redb_err(&self.path, "reopen"))?;
        let reader = open_reader(&self.path, &db)?;
        let db = Arc::new(db);
        let generation = self.generations.get() + 1;
        self.generations.set(generation);
        *self.shared_db.write().expect("shared db lock") = Some(db.clone());
        *self.disk.borrow_mut() = Some(Disk {
            db,
            reader,
            generation,
        });
        self.reopen_after.set(None);
        tracing::info!(path = %self.path.display(), "state store reopened after an I/O failure");
        Ok(())
    }

    /// Tries to reopen a closed database, at most every [`STORE_REOPEN_RETRY`]. True if it is open.
    pub(crate) fn try_reopen(&self) -> bool {
        if self.disk.borrow().is_some() {
            return true;
        }
        let now = Instant::now();
        if self.reopen_after.get().is_some_and(|t| now < t) {
            return false;
        }
        match self.reopen() {
            Ok(()) => true,
            Err(e) => {
                if self.reopen_after.get().is_none() {
                    tracing::warn!(
                        path = %self.path.display(),
                        error = %e,
                        "cannot reopen the state store yet; retrying"
                    );
                }
                self.reopen_after.set(Some(now + STORE_REOPEN_RETRY));
                false
            }
        }
    }

    /// Runs `read` on the read handles of the last checkpoint. If the database is closed or its
    /// handle failed (after an I/O error redb fails every later call), waits until it is reopened
    /// and reads again: the caller (applying a batch) cannot go on without the answer. Other
    /// errors go back to the caller.
    pub(crate) fn read_waiting<R>(
        &self,
        read: impl Fn(&Reader) -> Result<R, StoreError>,
    ) -> Result<R, StoreError> {
        let mut waited = false;
        loop {
            let result = self.disk.borrow().as_ref().map(|d| read(&d.reader));
            match result {
                Some(Ok(value)) => {
                    if waited {
                        tracing::info!(path = %self.path.display(), "state store readable again");
                    }
                    return Ok(value);
                }
                Some(Err(e)) if !e.is_io_failure() => return Err(e),
                Some(Err(e)) => {
                    tracing::warn!(
                        path = %self.path.display(),
                        error = %e,
                        "a read met a failed state store handle; closing it to reopen"
                    );
                    self.close_db();
                }
                None => {}
            }
            if !waited {
                tracing::warn!(
                    path = %self.path.display(),
                    "a read waits for the state store to be reopened"
                );
                waited = true;
            }
            if !self.try_reopen() {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

pub(crate) fn open_reader(path: &Path, db: &Database) -> Result<Reader, StoreError> {
    let read = db.begin_read().map_err(redb_err(path, "begin read"))?;
    Ok(Reader {
        transfers: read
            .open_table(TRANSFERS)
            .map_err(redb_err(path, "open transfers"))?,
        transfer_runs: read
            .open_table(TRANSFER_RUNS)
            .map_err(redb_err(path, "open transfer runs"))?,
        pending: read
            .open_table(PENDING)
            .map_err(redb_err(path, "open pending"))?,
        failed_transfers: read
            .open_table(FAILED_TRANSFERS)
            .map_err(redb_err(path, "open failed transfers"))?,
        account_transfers: read
            .open_table(ACCOUNT_TRANSFERS)
            .map_err(redb_err(path, "open account transfers"))?,
        balance_history: read
            .open_table(BALANCE_HISTORY)
            .map_err(redb_err(path, "open balance history"))?,
        transfer_index: read
            .open_table(TRANSFER_INDEX)
            .map_err(redb_err(path, "open transfer index"))?,
        changes: read
            .open_table(CHANGES)
            .map_err(redb_err(path, "open changes"))?,
    })
}
