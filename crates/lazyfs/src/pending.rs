//! The unsynced data of one file: every write and size change since its last fsync, in the order
//! they were made. Reads see them laid over the durable (backing) file; an fsync applies them to
//! the backing file in order; a power cut drops them, or keeps a page-granular prefix of them (a
//! torn write).
//!
//! A list of operations rather than a page map, so that a torn cut can keep exactly the first
//! writes in the order the program issued them. An append that continues the last write is merged
//! into it: the WAL's many small appends stay one extent, and splitting at page boundaries later
//! gives the same pieces as splitting each append would.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

/// The granularity of a torn write: a page of the page cache.
pub const PAGE: u64 = 4096;

/// One unsynced change to a file's data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// `data` written at `offset`.
    Write { offset: u64, data: Vec<u8> },
    /// The file's size set (truncated or extended with zeros).
    SetLen(u64),
}

/// The unsynced changes to one file, oldest first.
#[derive(Debug, Default)]
pub struct Pending {
    ops: Vec<Op>,
    /// Bytes of written data held (what a power cut may lose, and what memory they take).
    bytes: u64,
}

impl Pending {
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Bytes of unsynced written data held.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    pub fn write(&mut self, offset: u64, data: &[u8]) {
        self.bytes += data.len() as u64;
        if let Some(Op::Write {
            offset: last_offset,
            data: last,
        }) = self.ops.last_mut()
        {
            if *last_offset + last.len() as u64 == offset {
                last.extend_from_slice(data);
                return;
            }
        }
        self.ops.push(Op::Write {
            offset,
            data: data.to_vec(),
        });
    }

    pub fn set_len(&mut self, len: u64) {
        self.ops.push(Op::SetLen(len));
    }

    /// The file's size as its readers see it, given the durable size.
    pub fn len(&self, durable_len: u64) -> u64 {
        self.ops.iter().fold(durable_len, |len, op| match op {
            Op::Write { offset, data } => len.max(offset + data.len() as u64),
            Op::SetLen(n) => *n,
        })
    }

    /// Lays the unsynced changes over `buf`, which holds the durable bytes from `offset` on (zeros
    /// past the durable end); returns how many bytes of `buf` the file really has.
    pub fn overlay(&self, durable_len: u64, offset: u64, buf: &mut [u8]) -> usize {
        let end = offset + buf.len() as u64;
        let mut len = durable_len;
        for op in &self.ops {
            match op {
                Op::Write { offset: at, data } => {
                    let write_end = at + data.len() as u64;
                    let (from, to) = ((*at).max(offset), write_end.min(end));
                    if from < to {
                        buf[(from - offset) as usize..(to - offset) as usize]
                            .copy_from_slice(&data[(from - at) as usize..(to - at) as usize]);
                    }
                    len = len.max(write_end);
                }
                Op::SetLen(n) => {
                    // Bytes cut off read as zeros should the file grow again.
                    if *n < end {
                        buf[((*n).max(offset) - offset) as usize..].fill(0);
                    }
                    len = *n;
                }
            }
        }
        len.saturating_sub(offset).min(buf.len() as u64) as usize
    }

    /// The changes cut at every page boundary of the file, in order: the units a torn write keeps
    /// a prefix of.
    pub fn pages(&self) -> Vec<Op> {
        let mut pieces = Vec::new();
        for op in &self.ops {
            let Op::Write { offset, data } = op else {
                pieces.push(op.clone());
                continue;
            };
            let mut at = *offset;
            let mut rest = &data[..];
            while !rest.is_empty() {
                let to_boundary = (PAGE - at % PAGE) as usize;
                let (piece, tail) = rest.split_at(to_boundary.min(rest.len()));
                pieces.push(Op::Write {
                    offset: at,
                    data: piece.to_vec(),
                });
                at += piece.len() as u64;
                rest = tail;
            }
        }
        pieces
    }

    /// Applies every change to `file`, in order (an fsync's first half).
    pub fn apply(&self, file: &File) -> io::Result<()> {
        apply(&self.ops, file)
    }
}

/// Applies `ops` to `file` in order.
pub fn apply(ops: &[Op], file: &File) -> io::Result<()> {
    for op in ops {
        match op {
            Op::Write { offset, data } => file.write_all_at(data, *offset)?,
            Op::SetLen(n) => file.set_len(*n)?,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a plain byte vector holds after the same changes: the model the overlay must match.
    fn model(durable: &[u8], ops: &[Op]) -> Vec<u8> {
        let mut bytes = durable.to_vec();
        for op in ops {
            match op {
                Op::Write { offset, data } => {
                    let end = *offset as usize + data.len();
                    if bytes.len() < end {
                        bytes.resize(end, 0);
                    }
                    bytes[*offset as usize..end].copy_from_slice(data);
                }
                Op::SetLen(n) => bytes.resize(*n as usize, 0),
            }
        }
        bytes
    }

    fn read_all(pending: &Pending, durable: &[u8], offset: u64, size: usize) -> Vec<u8> {
        let mut buf = vec![0u8; size];
        let have = durable.len().saturating_sub(offset as usize).min(size);
        buf[..have].copy_from_slice(&durable[offset as usize..offset as usize + have]);
        let n = pending.overlay(durable.len() as u64, offset, &mut buf);
        buf.truncate(n);
        buf
    }

    #[test]
    fn reads_see_writes_and_truncations_in_order() {
        let durable = vec![7u8; 10_000];
        let ops = vec![
            Op::Write {
                offset: 9_000,
                data: vec![1; 3_000],
            },
            Op::SetLen(5_000),
            Op::Write {
                offset: 6_000,
                data: vec![2; 100],
            },
            Op::Write {
                offset: 6_100,
                data: vec![3; 50],
            },
        ];
        let mut pending = Pending::default();
        for op in &ops {
            match op {
                Op::Write { offset, data } => pending.write(*offset, data),
                Op::SetLen(n) => pending.set_len(*n),
            }
        }
        assert_eq!(pending.bytes(), 3_150);
        assert_eq!(pending.ops.len(), 3, "the append to the last write merged");
        let expected = model(&durable, &ops);
        assert_eq!(pending.len(durable.len() as u64), expected.len() as u64);
        for (offset, size) in [(0, 20_000), (4_990, 20), (5_500, 1_000), (6_149, 10)] {
            let end = (offset + size).min(expected.len());
            assert_eq!(
                read_all(&pending, &durable, offset as u64, size),
                expected[offset.min(end)..end],
                "read of {size} at {offset}"
            );
        }
    }

    #[test]
    fn pages_split_at_page_boundaries_and_keep_the_order() {
        let mut pending = Pending::default();
        pending.write(4_000, &[1; 5_000]); // 4000..9000: pieces end at 4096 and 8192
        pending.set_len(100);
        pending.write(0, &[2; 10]);
        let pieces = pending.pages();
        let bounds: Vec<(u64, usize)> = pieces
            .iter()
            .map(|p| match p {
                Op::Write { offset, data } => (*offset, data.len()),
                Op::SetLen(n) => (*n, usize::MAX),
            })
            .collect();
        assert_eq!(
            bounds,
            vec![
                (4_000, 96),
                (4_096, 4_096),
                (8_192, 808),
                (100, usize::MAX),
                (0, 10)
            ]
        );
        assert_eq!(
            model(&[], &pieces),
            model(&[], &pending.ops),
            "the pieces together are the whole"
        );
    }
}
