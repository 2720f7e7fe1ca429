//! A sync in two halves, so that the caller can work while the device flushes:
//! [`Wal::write_unflushed`] writes the buffered records as [`Wal::sync`] does but leaves the
//! active segment's `fdatasync` to a [`WalFlush`], which may run on another thread, and
//! [`Wal::finish_flush`] then counts the records durable. Nothing may be appended in between.
//! The node applies committed entries while the new ones flush (`consensus::replica`).

use std::fs::File;
use std::path::PathBuf;

use crate::error::{io_err, WalError};
use crate::writer::Wal;

/// The `fdatasync` that makes a [`Wal::write_unflushed`] durable.
#[derive(Debug)]
pub struct WalFlush {
    /// A second handle of the active segment, and its path; `None` when the records are durable
    /// already.
    pending: Option<(File, PathBuf)>,
}

impl WalFlush {
    /// Whether there is a device flush to wait for (else [`WalFlush::run`] does nothing).
    pub fn is_pending(&self) -> bool {
        self.pending.is_some()
    }

    /// The `fdatasync`, on any thread. Hand its outcome to [`Wal::finish_flush`].
    pub fn run(&self) -> Result<(), WalError> {
        let Some((file, path)) = &self.pending else {
            return Ok(());
        };
        if bulwark_fs::test_faults::skipping(bulwark_fs::test_faults::Skip::LogFdatasync) {
            return Ok(());
        }
        file.sync_data().map_err(io_err("fdatasync", path))
    }
}

impl Wal {
    /// Writes the buffered records like [`Wal::sync`], but only into the page cache: they are
    /// durable once the returned flush ran and [`Wal::finish_flush`] took its outcome. A write
    /// that must create segments, and an empty buffer, are synced here instead (the flush is then
    /// done already), and so is one when the process has no descriptor left for the flush's
    /// handle. A failed write is undone exactly as in [`Wal::sync`].
    pub fn write_unflushed(&mut self) -> Result<WalFlush, WalError> {
        self.check_writable()?;
        // A write that creates segments, or nothing to write, is synced here and now.
        let separate = !self.buf.is_empty() && self.splits.is_empty();
        let pending = if separate { self.flush_handle() } else { None };
        let Some(pending) = pending else {
            self.sync()?;
            return Ok(WalFlush { pending: None });
        };
        let r = self.write_active(self.buf.len(), false).map(|_| ());
        self.settle(r)?;
        self.flushing = true;
        Ok(WalFlush {
            pending: Some(pending),
        })
    }

    /// A second handle of the active segment, for a flush on another thread; `None` when the
    /// process has no descriptor to spare (a flush is not worth failing the log for: it then
    /// runs through the one handle).
    fn flush_handle(&self) -> Option<(File, PathBuf)> {
        let path = &self
            .segments
            .last()
            .expect("records buffered for a missing segment")
            .path;
        let active = self
            .active
            .as_ref()
            .expect("active segment without a handle");
        match active.try_clone() {
            Ok(file) => Some((file, path.clone())),
            Err(e) => {
                tracing::warn!(error = %e, path = %path.display(), "cannot duplicate the log's handle; flushing inline");
                None
            }
        }
    }

    /// Takes the outcome of `flush`: on success its records are durable; a failed `fdatasync`
    /// poisons the log, as in [`Wal::sync`] (nothing says what the file holds).
    pub fn finish_flush(
        &mut self,
        flush: WalFlush,
        flushed: Result<(), WalError>,
    ) -> Result<(), WalError> {
        if !flush.is_pending() {
            return flushed;
        }
        assert!(self.flushing, "a flush finished twice");
        self.flushing = false;
        if let Err(e) = flushed {
            self.poisoned = true;
            return Err(e);
        }
        self.commit_active(self.buf.len());
        assert_eq!(self.durable_next, self.next_index);
        self.buf.clear();
        Ok(())
    }
}
