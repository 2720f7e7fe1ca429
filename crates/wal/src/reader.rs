//! Replay: [`Wal::read_from`] iterates records from disk (checksums verified as they are read) and
//! then from the buffer of records not yet synced.

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};

use bulwark_limits::MAX_RECORD_PAYLOAD;

use crate::error::{corrupt, io_err, Corruption, WalError};
use crate::format::{parse_record_header, record_crc, RECORD_HEADER_LEN, SEGMENT_HEADER_LEN};
use crate::writer::Wal;

impl Wal {
    /// Replays records `from..=last_index()`, durable and buffered, verifying checksums of what it reads
    /// from disk. `from` may be `last_index() + 1` (nothing to read).
    pub fn read_from(
        &self,
        from: u64,
    ) -> Result<impl Iterator<Item = Result<(u64, Vec<u8>), WalError>> + '_, WalError> {
        self.check_usable()?;
        self.check_in_range(from)?;
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
                    Corruption::PastSegmentEnd { len: h.len },
                ));
            }
            if h.index != r.index {
                return Err(corrupt(
                    &seg.path,
                    r.offset,
                    Corruption::WrongIndex {
                        expected: r.index,
                        found: h.index,
                    },
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
                    return Err(corrupt(&seg.path, r.offset, Corruption::ChecksumMismatch));
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

impl Wal {
    /// `from` must lie in `first_index()..=last_index() + 1`.
    pub(crate) fn check_in_range(&self, from: u64) -> Result<(), WalError> {
        if from < self.first_index || from > self.next_index {
            return Err(WalError::OutOfRange {
                index: from,
                first: self.first_index,
                last: self.last_index(),
            });
        }
        Ok(())
    }
}
