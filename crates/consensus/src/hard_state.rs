//! The hard-state file `<dir>/hardstate`: Raft's term, vote and commit index, the conf state, and the
//! compaction point, written crash-safely into two alternating slots.
//!
//! # Format (version 1; integers little-endian, checksums CRC32C)
//!
//! The file is exactly two slots of [`SLOT_BYTES`] bytes. A write goes to the slot that does *not* hold the
//! newest valid record (slot `seq % 2`), is zero-padded to the full slot and `fdatasync`ed; the file's size
//! never changes after creation. A torn write can therefore only damage the slot being written, never the
//! previous durable record. Reading picks the valid slot with the highest sequence number.
//!
//! | offset   | size | field                                             |
//! |----------|------|---------------------------------------------------|
//! | 0        | 4    | magic `BWHS`                                      |
//! | 4        | 4    | format version `u32` (= 1)                        |
//! | 8        | 8    | sequence number `u64`                             |
//! | 16       | 4    | body length `u32`                                 |
//! | 20       | len  | body                                              |
//! | 20 + len | 4    | CRC32C of bytes `0 .. 20 + len`                   |
//!
//! Body: `term, vote, commit, compacted_index, compacted_term` (`u64` each), `auto_leave` (`u8`), then the
//! lists `voters, learners, voters_outgoing, learners_next`, each a `u32` count followed by `u64` ids.
//!
//! The file is created (with a default record at sequence 0) as `hardstate.tmp`, fsynced, renamed and the
//! directory fsynced, so an existing `hardstate` always holds at least one valid slot.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use raft::eraftpb::{ConfState, HardState};

use crate::storage::StorageError;

/// Name of the hard-state file inside the storage directory.
pub(crate) const FILE_NAME: &str = "hardstate";
/// What `bulwark_fs::write_file_atomically` names its temp file; a crash can leave it behind.
const TEMP_NAME: &str = "hardstate.tmp";
/// Size of one slot; the file holds two.
pub(crate) const SLOT_BYTES: usize = 4096;
const MAGIC: [u8; 4] = *b"BWHS";
const VERSION: u32 = 1;
const HEADER: usize = 20;
const MAX_BODY: usize = SLOT_BYTES - HEADER - 4;

/// Everything the hard-state file holds.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct PersistentState {
    pub(crate) hard_state: HardState,
    pub(crate) conf_state: ConfState,
    /// Index of the last compacted (or snapshot) entry; 0 for a log that never was compacted.
    pub(crate) compacted_index: u64,
    /// Term of that entry.
    pub(crate) compacted_term: u64,
}

impl PersistentState {
    /// Whether a sync must write `self` over `durable`, the record on disk. Term, vote, the
    /// configuration and the compaction point must be durable before Raft acts on them. A commit
    /// index alone need not be: Raft's commit is volatile (a leader tells it again, and a replica
    /// whose state applied past it says so durably at start), and writing it at every Ready
    /// would cost a second fsync per round on every node. It is written when it first reaches the
    /// log's newest segment (`newest_segment_first`), so that a start which finds that segment
    /// gone, committed entries and all, still refuses a log ending before the durable commit.
    pub(crate) fn must_write_over(
        &self,
        durable: &PersistentState,
        newest_segment_first: u64,
    ) -> bool {
        let (mut mine, commit) = (self.hard_state.clone(), self.hard_state.commit);
        mine.commit = durable.hard_state.commit;
        let only_commit_moved = mine == durable.hard_state
            && self.conf_state == durable.conf_state
            && (self.compacted_index, self.compacted_term)
                == (durable.compacted_index, durable.compacted_term);
        if !only_commit_moved {
            return true;
        }
        durable.hard_state.commit < newest_segment_first && commit >= newest_segment_first
    }
}

/// The open hard-state file.
#[derive(Debug)]
pub(crate) struct HardStateFile {
    path: PathBuf,
    file: File,
    /// Sequence number of the newest valid record.
    seq: u64,
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> StorageError + 'a {
    move |source| StorageError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

impl HardStateFile {
    /// Whether `dir` holds a hard-state file.
    pub(crate) fn exists(dir: &Path) -> bool {
        dir.join(FILE_NAME).exists()
    }

    /// Creates a new file holding the default state, crash-safely (temp file, fsync, rename, fsync dir).
    pub(crate) fn create(dir: &Path) -> Result<(HardStateFile, PersistentState), StorageError> {
        let path = dir.join(FILE_NAME);
        let state = PersistentState::default();
        let mut bytes = encode_slot(0, &state)?;
        bytes.resize(2 * SLOT_BYTES, 0);
        bulwark_fs::write_file_atomically(&path, &bytes).map_err(fs_err)?;
        let file = open_rw(&path)?;
        Ok((HardStateFile { path, file, seq: 0 }, state))
    }

    /// Opens an existing file and returns the newest valid record. Removes a leftover temp file. Neither
    /// slot valid is an error naming the file.
    pub(crate) fn open(dir: &Path) -> Result<(HardStateFile, PersistentState), StorageError> {
        let tmp = dir.join(TEMP_NAME);
        if tmp.exists() {
            tracing::warn!(file = %tmp.display(), "removing leftover hard-state temp file");
            fs::remove_file(&tmp).map_err(io_err("remove", &tmp))?;
            fsync_dir(dir)?;
        }
        let path = dir.join(FILE_NAME);
        let mut file = open_rw(&path)?;
        let mut bytes = Vec::with_capacity(2 * SLOT_BYTES);
        file.read_to_end(&mut bytes)
            .map_err(io_err("read", &path))?;
        let mut best: Option<(u64, PersistentState)> = None;
        let mut problems = SlotProblems::default();
        for slot in 0..2 {
            let start = (slot * SLOT_BYTES).min(bytes.len());
            let end = ((slot + 1) * SLOT_BYTES).min(bytes.len());
            match decode_slot(&bytes[start..end]) {
                Ok((seq, state)) => {
                    if seq % 2 != slot as u64 {
                        problems.0.push((slot, SlotError::WrongSlot { seq }));
                    } else if best.as_ref().is_none_or(|(s, _)| seq > *s) {
                        best = Some((seq, state));
                    }
                }
                Err(error) => problems.0.push((slot, error)),
            }
        }
        match best {
            Some((seq, state)) => {
                if !problems.0.is_empty() {
                    tracing::warn!(
                        file = %path.display(),
                        seq,
                        %problems,
                        "hard-state file has an invalid slot (a torn write); using the newest valid one"
                    );
                }
                Ok((HardStateFile { path, file, seq }, state))
            }
            None => Err(StorageError::CorruptHardState { path, problems }),
        }
    }

    /// Writes `state` durably into the other slot (one write plus `fdatasync`). After an error the file
    /// still holds the previous record; the caller must stop using it.
    pub(crate) fn write(&mut self, state: &PersistentState) -> Result<(), StorageError> {
        let seq = self.seq + 1;
        let mut bytes = encode_slot(seq, state)?;
        bytes.resize(SLOT_BYTES, 0);
        let offset = (seq % 2) * SLOT_BYTES as u64;
        self.file
            .write_all_at(&bytes, offset)
            .map_err(io_err("write", &self.path))?;
        if !bulwark_fs::test_faults::skipping(bulwark_fs::test_faults::Skip::LogFdatasync) {
            self.file
                .sync_data()
                .map_err(io_err("fdatasync", &self.path))?;
        }
        self.seq = seq;
        Ok(())
    }
}

fn open_rw(path: &Path) -> Result<File, StorageError> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(io_err("open", path))
}

fn fs_err(e: bulwark_fs::FsError) -> StorageError {
    StorageError::Io {
        op: e.op,
        path: e.path,
        source: e.source,
    }
}

fn fsync_dir(dir: &Path) -> Result<(), StorageError> {
    bulwark_fs::fsync_dir(dir).map_err(fs_err)
}

fn put_list(body: &mut Vec<u8>, ids: &[u64]) {
    body.extend_from_slice(&(ids.len() as u32).to_le_bytes());
    for id in ids {
        body.extend_from_slice(&id.to_le_bytes());
    }
}

/// Encodes one slot record (without the zero padding).
fn encode_slot(seq: u64, st: &PersistentState) -> Result<Vec<u8>, StorageError> {
    let hs = &st.hard_state;
    let cs = &st.conf_state;
    let mut body = Vec::with_capacity(64);
    for v in [
        hs.term,
        hs.vote,
        hs.commit,
        st.compacted_index,
        st.compacted_term,
    ] {
        body.extend_from_slice(&v.to_le_bytes());
    }
    body.push(u8::from(cs.auto_leave));
    put_list(&mut body, &cs.voters);
    put_list(&mut body, &cs.learners);
    put_list(&mut body, &cs.voters_outgoing);
    put_list(&mut body, &cs.learners_next);
    if body.len() > MAX_BODY {
        return Err(StorageError::HardStateTooLarge {
            len: body.len(),
            max: MAX_BODY,
        });
    }
    let mut out = Vec::with_capacity(HEADER + body.len() + 4);
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&body);
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    Ok(out)
}

/// Why one slot does not hold a valid record.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SlotError {
    #[error("only {len} bytes")]
    TooShort { len: usize },
    #[error("bad magic")]
    BadMagic,
    #[error("body length {len} runs past the slot")]
    BodyPastSlot { len: usize },
    #[error("checksum mismatch")]
    ChecksumMismatch,
    #[error("unsupported format version {version}")]
    UnsupportedVersion { version: u32 },
    #[error("body ends early")]
    BodyEndsEarly,
    #[error("list of {count} ids runs past the body")]
    ListPastBody { count: usize },
    #[error("bad auto_leave byte {byte}")]
    BadAutoLeave { byte: u8 },
    #[error("{count} trailing bytes in the body")]
    TrailingBytes { count: usize },
    /// A valid record in the slot a record of its sequence number is never written to.
    #[error("sequence {seq} in the wrong slot")]
    WrongSlot { seq: u64 },
}

/// What was wrong with each slot that did not count, in slot order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SlotProblems(pub Vec<(usize, SlotError)>);

impl std::fmt::Display for SlotProblems {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, (slot, error)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "slot {slot}: {error}")?;
        }
        Ok(())
    }
}

/// A little-endian reader over a byte slice that fails instead of panicking.
struct Cursor<'a>(&'a [u8]);

impl Cursor<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], SlotError> {
        if self.0.len() < N {
            return Err(SlotError::BodyEndsEarly);
        }
        let (head, rest) = self.0.split_at(N);
        self.0 = rest;
        Ok(head.try_into().expect("split_at returned N bytes"))
    }

    fn u64(&mut self) -> Result<u64, SlotError> {
        self.take::<8>().map(u64::from_le_bytes)
    }

    fn list(&mut self) -> Result<Vec<u64>, SlotError> {
        let count = u32::from_le_bytes(self.take::<4>()?) as usize;
        if count > self.0.len() / 8 {
            return Err(SlotError::ListPastBody { count });
        }
        (0..count).map(|_| self.u64()).collect()
    }
}

/// Decodes one slot; `Err` says why it is not a valid record.
fn decode_slot(slot: &[u8]) -> Result<(u64, PersistentState), SlotError> {
    if slot.len() < HEADER + 4 {
        return Err(SlotError::TooShort { len: slot.len() });
    }
    if slot[0..4] != MAGIC {
        return Err(SlotError::BadMagic);
    }
    let len = u32::from_le_bytes(slot[16..20].try_into().unwrap()) as usize;
    if len > MAX_BODY || HEADER + len + 4 > slot.len() {
        return Err(SlotError::BodyPastSlot { len });
    }
    let end = HEADER + len;
    let crc = u32::from_le_bytes(slot[end..end + 4].try_into().unwrap());
    if crc32c::crc32c(&slot[..end]) != crc {
        return Err(SlotError::ChecksumMismatch);
    }
    let version = u32::from_le_bytes(slot[4..8].try_into().unwrap());
    if version != VERSION {
        return Err(SlotError::UnsupportedVersion { version });
    }
    let seq = u64::from_le_bytes(slot[8..16].try_into().unwrap());
    let mut c = Cursor(&slot[HEADER..end]);
    let mut st = PersistentState::default();
    st.hard_state.term = c.u64()?;
    st.hard_state.vote = c.u64()?;
    st.hard_state.commit = c.u64()?;
    st.compacted_index = c.u64()?;
    st.compacted_term = c.u64()?;
    st.conf_state.auto_leave = match c.take::<1>()?[0] {
        0 => false,
        1 => true,
        byte => return Err(SlotError::BadAutoLeave { byte }),
    };
    st.conf_state.voters = c.list()?;
    st.conf_state.learners = c.list()?;
    st.conf_state.voters_outgoing = c.list()?;
    st.conf_state.learners_next = c.list()?;
    if !c.0.is_empty() {
        return Err(SlotError::TrailingBytes { count: c.0.len() });
    }
    Ok((seq, st))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> PersistentState {
        let mut st = PersistentState::default();
        st.hard_state.term = 7;
        st.hard_state.vote = 2;
        st.hard_state.commit = 41;
        st.compacted_index = 30;
        st.compacted_term = 6;
        st.conf_state.voters = vec![1, 2, 3];
        st.conf_state.learners = vec![4];
        st.conf_state.voters_outgoing = vec![1, 2, 5];
        st.conf_state.learners_next = vec![5];
        st.conf_state.auto_leave = true;
        st
    }

    #[test]
    fn the_temp_name_is_the_one_bulwark_fs_writes() {
        assert_eq!(
            bulwark_fs::temp_path(Path::new(FILE_NAME)),
            Path::new(TEMP_NAME)
        );
    }

    #[test]
    fn slot_round_trip() {
        let st = sample();
        let bytes = encode_slot(9, &st).unwrap();
        assert_eq!(decode_slot(&bytes), Ok((9, st)));
    }

    fn unhex(hex: &str) -> Vec<u8> {
        let digits: Vec<u8> = hex.bytes().filter(u8::is_ascii_hexdigit).collect();
        digits
            .chunks(2)
            .map(|pair| u8::from_str_radix(std::str::from_utf8(pair).unwrap(), 16).unwrap())
            .collect()
    }

    /// The format, pinned: these bytes were written out by hand from the table in the module
    /// documentation (their CRC32C computed apart from this crate), so a change to the encoding
    /// fails here and has to be made on purpose, with a new version.
    #[test]
    fn a_slot_is_encoded_exactly_as_documented() {
        let golden = unhex(
            "42574853 01000000 0900000000000000 79000000
             0700000000000000 0200000000000000 2900000000000000 1e00000000000000 0600000000000000
             01
             03000000 0100000000000000 0200000000000000 0300000000000000
             01000000 0400000000000000
             03000000 0100000000000000 0200000000000000 0500000000000000
             01000000 0500000000000000
             40c881d8",
        );
        assert_eq!(encode_slot(9, &sample()).unwrap(), golden);
        assert_eq!(decode_slot(&golden), Ok((9, sample())));
    }

    /// A new file: the default record at sequence 0 in slot 0, zero-padded, and an empty slot 1.
    #[test]
    fn a_new_file_is_laid_out_exactly_as_documented() {
        let dir = tempfile::tempdir().unwrap();
        HardStateFile::create(dir.path()).unwrap();
        let bytes = fs::read(dir.path().join(FILE_NAME)).unwrap();
        let mut golden = unhex(
            "42574853 01000000 0000000000000000 39000000
             0000000000000000 0000000000000000 0000000000000000 0000000000000000 0000000000000000
             00 00000000 00000000 00000000 00000000
             44f62cbf",
        );
        golden.resize(2 * 4096, 0);
        assert_eq!(bytes, golden);
    }

    #[test]
    fn every_flipped_bit_is_detected() {
        let bytes = encode_slot(3, &sample()).unwrap();
        for i in 0..bytes.len() * 8 {
            let mut bad = bytes.clone();
            bad[i / 8] ^= 1 << (i % 8);
            assert!(decode_slot(&bad).is_err(), "flip of bit {i} went unnoticed");
        }
    }

    #[test]
    fn every_truncation_is_detected() {
        let bytes = encode_slot(3, &sample()).unwrap();
        for n in 0..bytes.len() {
            assert!(decode_slot(&bytes[..n]).is_err());
        }
    }

    #[test]
    fn oversized_conf_state_is_refused() {
        let mut st = sample();
        st.conf_state.voters = (1..=600).collect();
        assert!(matches!(
            encode_slot(1, &st),
            Err(StorageError::HardStateTooLarge { .. })
        ));
    }
}
