//! Cutting the log: compaction after a checkpoint ([`Wal::truncate_prefix`]), Raft conflicts
//! ([`Wal::truncate_suffix`]), and restarting an empty log at a chosen index ([`Wal::reset_next_index`]).
//! Segments are deleted one at a time with a directory fsync after each, in the order that leaves a
//! consecutive log whatever the crash.

use std::fs;

use crate::error::{io_err, Failure, WalError};
use crate::format::{parse_record_header, RECORD_HEADER_LEN, SEGMENT_HEADER_LEN};
use crate::segment::{create_segment, fsync_dir, locate_record, open_rw, Segment};
use crate::writer::Wal;

impl Wal {
    /// Sets the index of the next record; only allowed while the log holds no record. Durable when it
    /// returns: the log's (empty) segment files are replaced by one empty segment starting at `next`.
    pub fn reset_next_index(&mut self, next: u64) -> Result<(), WalError> {
        self.check_writable()?;
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
        self.segments
            .push(Segment::new(next, path, SEGMENT_HEADER_LEN, 0));
        self.active = Some(file);
        self.first_index = next;
        self.durable_next = next;
        self.next_index = next;
        Ok(())
    }

    /// Log compaction after a checkpoint at `through`: deletes, oldest first, every segment all of whose
    /// records are `<= through`; records `> through` are never deleted. Buffered records are synced first.
    /// If every record is `<= through`, the log becomes empty with next index `max(last_index, through) + 1`
    /// (kept in an empty segment, so it survives reopen). The directory is fsynced.
    pub fn truncate_prefix(&mut self, through: u64) -> Result<(), WalError> {
        self.check_writable()?;
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
        self.check_writable()?;
        self.check_in_range(from)?;
        if from >= self.durable_next {
            self.truncate_buffer(from);
            return Ok(());
        }
        let r = self.truncate_suffix_on_disk(from);
        self.poison_on_err(r)
    }

    /// Drops buffered records `>= from` (all of which are not yet on disk).
    pub(crate) fn truncate_buffer(&mut self, from: u64) {
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
        seg.zeroed_to.set(offset);
        seg.records = from - seg.first_index;
        self.active = Some(file);
        self.durable_next = from;
        self.next_index = from;
        Ok(())
    }
}
