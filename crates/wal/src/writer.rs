//! The write path: [`Wal::append`] buffers encoded records in memory (deciding where a new segment
//! starts), and [`Wal::sync`] writes the buffer with one write and one `fdatasync` (group commit),
//! creating rolled-over segments crash-safely, and undoes itself when a write fails.

use std::fs::{self, File};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::error::{io_err, Failure, WalError};
use bulwark_limits::{MAX_RECORD_PAYLOAD, WAL_ZERO_AHEAD_MAX_WRITE};

use crate::format::{encode_record, RECORD_HEADER_LEN, SEGMENT_HEADER_LEN};
use crate::segment::{create_segment, fsync_dir, Segment};

/// Tuning knobs of a [`Wal`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WalOptions {
    /// Target maximum size of a segment file in bytes (default 64 MiB).
    pub segment_bytes: u64,
    /// Records up to this index were durable and promised to someone (the Raft log's durable
    /// commit index): recovery never cuts one of them as a torn tail, it refuses to open instead.
    /// 0: no such promise (every tail may be torn).
    pub keep_through: u64,
    /// How far ahead of its write position the active segment is kept zero-filled (0: never), so
    /// that a small sync overwrites zeros instead of growing the file (see
    /// [`bulwark_limits::WAL_ZERO_AHEAD_BYTES`]). The zero-filled stretch also holds back that
    /// much disk space for the log.
    pub zero_ahead_bytes: u64,
}

impl Default for WalOptions {
    fn default() -> Self {
        WalOptions {
            segment_bytes: bulwark_limits::DEFAULT_SEGMENT_BYTES,
            keep_through: 0,
            zero_ahead_bytes: bulwark_limits::WAL_ZERO_AHEAD_BYTES,
        }
    }
}

/// A segmented write-ahead log. See the crate documentation for the format and the recovery rules.
#[derive(Debug)]
pub struct Wal {
    pub(crate) dir: PathBuf,
    pub(crate) opts: WalOptions,
    /// Segments on disk, in index order; consecutive.
    pub(crate) segments: Vec<Segment>,
    /// Writable handle of `segments.last()`.
    pub(crate) active: Option<File>,
    pub(crate) first_index: u64,
    /// Index after the last durable record.
    pub(crate) durable_next: u64,
    /// Index the next appended record gets.
    pub(crate) next_index: u64,
    /// Encoded records appended since the last sync (indexes `durable_next..next_index`).
    pub(crate) buf: Vec<u8>,
    /// Points in `buf` where a not-yet-created segment starts: (offset in `buf`, first index).
    pub(crate) splits: Vec<(usize, u64)>,
    pub(crate) poisoned: bool,
    /// Records were written by [`Wal::write_unflushed`] and await [`Wal::finish_flush`].
    pub(crate) flushing: bool,
}

impl Wal {
    /// Appends a record and returns its log index. The record is only buffered in memory; it is durable
    /// after the next successful [`Wal::sync`].
    pub fn append(&mut self, payload: &[u8]) -> Result<u64, WalError> {
        self.check_writable()?;
        if payload.len() > MAX_RECORD_PAYLOAD {
            return Err(WalError::RecordTooLarge {
                len: payload.len(),
                max: MAX_RECORD_PAYLOAD,
            });
        }
        let record_len = RECORD_HEADER_LEN + payload.len() as u64;
        if self.rolls_over(record_len) {
            self.splits.push((self.buf.len(), self.next_index));
        }
        let index = self.next_index;
        encode_record(&mut self.buf, index, payload);
        self.next_index += 1;
        Ok(index)
    }

    /// Whether a record of `record_len` bytes must start a new segment: there is none yet, or it
    /// would make a segment that already holds a record exceed [`WalOptions::segment_bytes`].
    fn rolls_over(&self, record_len: u64) -> bool {
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
        match target {
            None => true,
            Some((len, records)) => records > 0 && len + record_len > self.opts.segment_bytes,
        }
    }

    /// Writes the buffer: the part for the active segment first (write + fdatasync), then each new segment.
    /// In-memory positions change only once everything is durable; a write failure is undone on disk.
    fn sync_inner(&mut self) -> Result<(), Failure> {
        let first_split = self.splits.first().map_or(self.buf.len(), |s| s.0);
        // The active segment's durable length before this sync, if we are about to write into it.
        let active_written = if first_split > 0 {
            Some(self.write_active(first_split, true)?)
        } else {
            None
        };
        let created = self.create_new_segments(active_written)?;
        // Everything is durable: commit the in-memory positions.
        if first_split > 0 {
            self.commit_active(first_split);
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

    /// The records of `buf[..end]`, written into the active segment and now durable, counted there.
    pub(crate) fn commit_active(&mut self, end: usize) {
        let records = self.splits.first().map_or(self.next_index, |s| s.1) - self.durable_next;
        let seg = self
            .segments
            .last_mut()
            .expect("records written into a missing segment");
        seg.len += end as u64;
        seg.records += records;
        self.durable_next += records;
    }

    /// Writes `buf[..end]` at the end of the active segment, and fdatasyncs it if `flush` (else
    /// the caller must). Returns the segment's durable length before the write (what an undo cuts
    /// it back to).
    pub(crate) fn write_active(&self, end: usize, flush: bool) -> Result<u64, Failure> {
        let seg = self
            .segments
            .last()
            .expect("records buffered for a missing segment");
        let file = self
            .active
            .as_ref()
            .expect("active segment without a handle");
        if let Err(e) = file.write_all_at(&self.buf[..end], seg.len) {
            let e = io_err("write", &seg.path)(e);
            return Err(self.undo_sync(&[], Some(seg.len), e));
        }
        self.zero_fill_ahead(seg, file, seg.len + end as u64);
        if flush && !bulwark_fs::test_faults::skipping(bulwark_fs::test_faults::Skip::LogFdatasync)
        {
            file.sync_data()
                .map_err(io_err("fdatasync", &seg.path))
                .map_err(Failure::Fatal)?;
        }
        Ok(seg.len)
    }

    /// Zero-fills the active segment from `written` (the end of this sync's records) to
    /// [`WalOptions::zero_ahead_bytes`] past it, if this sync grew the file and is small enough
    /// to gain by it. The sync's `fdatasync` makes the zeros durable with the records. It is an
    /// optimization only: the zeros are padding to recovery, and a failed fill (a full disk) is
    /// left as it is, zeros or not, and not tried again in this segment.
    fn zero_fill_ahead(&self, seg: &Segment, file: &File, written: u64) {
        let ahead = self.opts.zero_ahead_bytes;
        if ahead == 0 || seg.zero_fill_failed.get() || written - seg.len > WAL_ZERO_AHEAD_MAX_WRITE
        {
            return;
        }
        let fill_to = (written + ahead).min(self.opts.segment_bytes);
        // Still zeros past this write: nothing to do until a write reaches their end.
        if seg.zeroed_to.get() > written || fill_to <= written {
            return;
        }
        if let Err(e) = write_zeros(file, written, fill_to - written) {
            tracing::debug!(
                file = %seg.path.display(),
                error = %e,
                "could not zero-fill the log ahead; the segment grows by appending"
            );
            seg.zero_fill_failed.set(true);
            return;
        }
        seg.zeroed_to.set(fill_to);
    }

    /// Creates a segment for each split of the buffer, oldest first. On a failure, undoes them and the
    /// write into the active segment (`active_written`: its length before).
    fn create_new_segments(
        &self,
        active_written: Option<u64>,
    ) -> Result<Vec<(Segment, File)>, Failure> {
        let mut created: Vec<(Segment, File)> = Vec::with_capacity(self.splits.len());
        for (i, &(start, first)) in self.splits.iter().enumerate() {
            let (end, next) = self
                .splits
                .get(i + 1)
                .map_or((self.buf.len(), self.next_index), |s| (s.0, s.1));
            match create_segment(&self.dir, first, &self.buf[start..end]) {
                Ok((path, file)) => created.push((
                    Segment::new(
                        first,
                        path,
                        SEGMENT_HEADER_LEN + (end - start) as u64,
                        next - first,
                    ),
                    file,
                )),
                Err(Failure::Undone(e)) => {
                    let paths: Vec<PathBuf> = created.iter().map(|(s, _)| s.path.clone()).collect();
                    return Err(self.undo_sync(&paths, active_written, e));
                }
                Err(fatal) => return Err(fatal),
            }
        }
        Ok(created)
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
        self.check_writable()?;
        if self.buf.is_empty() {
            return Ok(());
        }
        let r = self.sync_inner();
        self.settle(r)
    }

    /// Turns the outcome of a write into the caller's: an undone failure leaves the records
    /// buffered, a fatal one poisons the log.
    pub(crate) fn settle(&mut self, r: Result<(), Failure>) -> Result<(), WalError> {
        match r {
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
                seg.zeroed_to.set(len);
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

    /// Bytes of the log's segment headers and records, counting buffered records as if synced (the
    /// files are longer by their zero-filled ends: up to [`WalOptions::zero_ahead_bytes`] each).
    pub fn size_bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.len).sum::<u64>()
            + self.buf.len() as u64
            + self.splits.len() as u64 * SEGMENT_HEADER_LEN
    }

    /// First index of the newest segment file, counting one that the next sync will create.
    pub fn newest_segment_first_index(&self) -> u64 {
        self.splits
            .last()
            .map(|(_, first)| *first)
            .or_else(|| self.segments.last().map(|s| s.first_index))
            .unwrap_or(self.first_index)
    }

    /// Number of segment files, counting segments that the next sync will create.
    pub fn segment_count(&self) -> usize {
        self.segments.len() + self.splits.len()
    }

    pub(crate) fn check_usable(&self) -> Result<(), WalError> {
        if self.poisoned {
            Err(WalError::Poisoned)
        } else {
            Ok(())
        }
    }

    /// [`Wal::check_usable`], for a change to the log: none may come while a flush is
    /// outstanding ([`Wal::write_unflushed`] until [`Wal::finish_flush`]).
    pub(crate) fn check_writable(&self) -> Result<(), WalError> {
        assert!(
            !self.flushing,
            "the log changed while a flush is outstanding"
        );
        self.check_usable()
    }

    pub(crate) fn poison_on_err<T>(&mut self, r: Result<T, WalError>) -> Result<T, WalError> {
        if r.is_err() {
            self.poisoned = true;
        }
        r
    }
}

/// Writes `len` zero bytes at `offset`.
fn write_zeros(file: &File, offset: u64, len: u64) -> std::io::Result<()> {
    const CHUNK: usize = 256 << 10;
    static ZEROS: [u8; CHUNK] = [0; CHUNK];
    let mut done = 0;
    while done < len {
        let n = (len - done).min(CHUNK as u64) as usize;
        file.write_all_at(&ZEROS[..n], offset + done)?;
        done += n as u64;
    }
    Ok(())
}
