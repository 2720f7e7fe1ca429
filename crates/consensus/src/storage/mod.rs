//! Raft's durable state: the log, the hard state (term, vote, commit), the conf state and the compaction
//! point, behind [`raft::Storage`] (what the `raft` crate reads) and [`RaftStorage`] (what the node loop
//! writes when it handles a `Ready`).
//!
//! Two implementations with identical behaviour:
//! - [`DiskRaftStorage`]: the log in a [`bulwark_wal::Wal`] (one record per entry, the protobuf-encoded
//!   [`Entry`], record index == entry index) and everything else in the crash-safe hard-state file
//!   `<dir>/hardstate` (two alternating checksummed slots, see `hard_state.rs`).
//! - [`MemRaftStorage`]: everything in memory, for the deterministic simulation; [`MemRaftStorage::crash`]
//!   models a power loss.
//!
//! # Durability contract
//!
//! - [`RaftStorage::append`], [`RaftStorage::set_hard_state`] and [`RaftStorage::set_conf_state`] change
//!   what raft reads at once, but are durable only after the next successful [`RaftStorage::sync`]. A crash
//!   before that returns the storage to exactly the state of the last sync, including a conflicting
//!   suffix that an unsynced append replaced: it is only cut on disk by the sync.
//! - [`RaftStorage::compact`] and [`RaftStorage::install_snapshot`] first sync every earlier write, and are
//!   durable when they return.
//! - The snapshot offer is volatile: after a crash or reopen there is none until the node sets one.
//! - A [`RaftStorage::sync`] that fails for lack of space ([`StorageError::is_disk_full`]: the WAL write or
//!   the hard-state write answered `ENOSPC`/`EDQUOT`) is atomic: nothing of it is durable or half-written
//!   (the WAL undoes its write, see `bulwark_wal`; the hard-state file keeps its previous record in the
//!   other slot), the entries appended since the last sync are dropped from the in-memory log (last index
//!   back to the durable one) and the hard state's term and vote go back to the durable ones, so that
//!   the caller retries by repeating exactly the same `append` + `set_hard_state` + `sync` later. A conf
//!   state set since the last sync stays pending (it comes from applied entries and is written by the next
//!   sync), and so does a commit index learnt earlier, but never past the durable log's last index. The
//!   storage stays usable.
//! - After any other I/O error (including a failed fsync) a [`DiskRaftStorage`] is poisoned: every further
//!   write fails with [`StorageError::Poisoned`]. The node must stop and recover by reopening.
//!
//! The hard-state file needs no new space: it is created at its full size (two slots, written out) and
//! every later write overwrites one slot in place, which allocates nothing on update-in-place file systems
//! (ext4, xfs, tmpfs). Only a copy-on-write file system (btrfs, zfs) can answer such an overwrite with
//! `ENOSPC`, which is handled like a failed WAL write.
//!
//! Reads follow [`raft::storage::MemStorage`]: `entries` below the first index and `term` below the
//! compaction point answer `raft::Error::Store(raft::StorageError::Compacted)`, `term` past the last index
//! `Unavailable`, and `entries` past `last_index + 1` panics (raft never asks for that).
//!
//! # Crash safety of the disk layout
//!
//! `sync` makes the log durable first and writes the hard-state file second, so a durable commit index
//! never points past the durable log. A sync whose only change is the commit index writes the file only
//! when that index first reaches the newest segment (`PersistentState::must_write_over`): Raft's commit
//! is volatile, and a second fsync per Ready would halve what a node syncs per second. `compact` and `install_snapshot` write the new compaction point into
//! the hard-state file first and trim the log second. The WAL deletes whole segments only, so after a
//! compaction the log may still begin at or before the compaction point; recovery skips those records.
//! Recovery ([`DiskRaftStorage::open`]) then:
//! - refuses a log that begins after `compaction point + 1` (entries are missing), and a log without a
//!   hard-state file;
//! - refuses a log that ends before the durable commit index (after the repairs below, so an interrupted
//!   snapshot installation is not mistaken for it): committed entries are missing, e.g. a deleted newest
//!   segment, or every segment gone. Starting would acknowledge new entries at their indexes. The WAL
//!   itself refuses a gap between segments. Every refusal is decided before anything on disk changes, so
//!   the directory stays as found, for the operator;
//! - resets an empty log to begin at `compaction point + 1` (a crash inside the WAL's truncation);
//! - finishes an interrupted `install_snapshot`: if the log ends before the compaction point, or its entry
//!   at the compaction point has another term than the snapshot's, every record is dropped. (If the terms
//!   match, the later entries continue the snapshot's log by the Log Matching property and are kept.)

use std::cmp;
use std::path::{Path, PathBuf};

use bulwark_wal::{Wal, WalError, WalOptions};
use protobuf::Message as _;
use raft::eraftpb::{ConfState, Entry, HardState, Snapshot, SnapshotMetadata};
use raft::{GetEntriesContext, RaftState};

use crate::hard_state::{HardStateFile, PersistentState};
use crate::types::LogIndex;

pub use crate::hard_state::{SlotError, SlotProblems};
pub use bulwark_wal::TornTail;

/// Name of the hard-state file inside a [`DiskRaftStorage`] directory.
pub const HARD_STATE_FILE: &str = crate::hard_state::FILE_NAME;
/// Size of one of the two slots of the hard-state file (the file is twice this size).
pub const HARD_STATE_SLOT_BYTES: usize = crate::hard_state::SLOT_BYTES;

/// What the node loop needs beyond [`raft::Storage`]: the writes of a `Ready`, made durable by `sync()`.
pub trait RaftStorage: raft::Storage {
    /// Appends entries; if `entries[0].index <= last_index`, the conflicting suffix from there is replaced.
    /// Buffered until sync. `entries[0].index` must lie in `first_index..=last_index + 1` and the indexes
    /// must be consecutive; otherwise nothing changes and an error is returned.
    fn append(&mut self, entries: &[Entry]) -> Result<(), StorageError>;
    /// Sets the hard state; buffered until sync.
    fn set_hard_state(&mut self, hs: &HardState);
    /// Sets the conf state, remembered for `initial_state` and snapshots; persisted with the hard state
    /// file, so buffered until sync as well.
    fn set_conf_state(&mut self, cs: &ConfState);
    /// Makes every append and hard-state change so far durable (fdatasync). Must be called before sending
    /// the messages of a Ready that depend on them.
    fn sync(&mut self) -> Result<(), StorageError>;
    /// The first half of a [`RaftStorage::sync`], for a caller that works while the device
    /// flushes: writes what `sync` would and returns the flush, to be run (on any thread) and its
    /// outcome handed to [`RaftStorage::end_sync`] before anything else touches the storage.
    /// Nothing of it counts as durable before `end_sync` returns `Ok`. Its errors are `sync`'s.
    /// By default the whole sync happens here, and the flush is done already.
    fn begin_sync(&mut self) -> Result<LogFlush, StorageError> {
        self.sync()?;
        Ok(LogFlush::done())
    }
    /// The second half of a sync begun with [`RaftStorage::begin_sync`]: `flushed` is what
    /// [`LogFlush::run`] returned. A failed flush poisons the storage, as a failed `sync` does.
    fn end_sync(
        &mut self,
        flush: LogFlush,
        flushed: Result<(), WalError>,
    ) -> Result<(), StorageError> {
        debug_assert!(
            !flush.is_pending(),
            "a pending flush needs its storage's end_sync"
        );
        Ok(flushed?)
    }
    /// Log compaction after the state machine checkpointed at `through` (applied): entries `<= through` are
    /// dropped; `term(through)` stays answerable. Syncs earlier writes first; durable when it returns.
    /// `through` at or below the compaction point is a no-op; past the last index an error.
    fn compact(&mut self, through: LogIndex) -> Result<(), StorageError>;
    /// A snapshot was installed: drop every entry; the log continues at `meta.index + 1`;
    /// `first_index = meta.index + 1`; `term(meta.index) = meta.term`. As `MemStorage::apply_snapshot`: the
    /// hard state's term becomes `max(term, meta.term)`, its commit `meta.index`, and the conf state
    /// `meta.conf_state`. `meta.index < first_index` is [`StorageError::SnapshotOutOfDate`]. Syncs earlier
    /// writes first; durable when it returns.
    fn install_snapshot(&mut self, meta: &SnapshotMetadata) -> Result<(), StorageError>;
    /// The snapshot raft should send to a lagging follower: set by the node when a checkpoint exists (index,
    /// term, conf state) with opaque `data` it chooses; `None` => [`raft::Storage::snapshot`] returns
    /// `Err(raft::Error::Store(raft::StorageError::SnapshotTemporarilyUnavailable))`, as it does when the
    /// offer is older than the requested index.
    fn set_snapshot_offer(&mut self, snapshot: Option<Snapshot>);
    /// Whether Raft asked for a snapshot that the offer could not serve since the last call.
    fn take_snapshot_wanted(&mut self) -> bool;
    /// The last index up to which what Raft sees is also durable (synced and not since replaced):
    /// nothing beyond it may be answered as written.
    fn durable_last_index(&self) -> LogIndex {
        let last = LogIndex(raft::Storage::last_index(self).unwrap_or(0));
        self.dirty_from()
            .map_or(last, |from| last.min(from.saturating_sub(1)))
    }
    /// The first index whose entry may differ from the durable log (appended since the last sync).
    fn dirty_from(&self) -> Option<LogIndex>;
}

/// The device flush of a sync begun with [`RaftStorage::begin_sync`].
#[derive(Debug)]
pub struct LogFlush(Option<bulwark_wal::WalFlush>);

impl LogFlush {
    /// A flush with nothing left to do (the sync was completed when it began).
    pub fn done() -> Self {
        LogFlush(None)
    }

    /// Whether the flush waits on a device, so that running it beside other work gains time.
    pub fn is_pending(&self) -> bool {
        self.0
            .as_ref()
            .is_some_and(bulwark_wal::WalFlush::is_pending)
    }

    /// The `fdatasync`; on any thread.
    pub fn run(&self) -> Result<(), WalError> {
        self.0.as_ref().map_or(Ok(()), bulwark_wal::WalFlush::run)
    }
}

/// An error of the shell's, carried as it is (its `Display` and sources are the shell's).
pub type ShellError = Box<dyn std::error::Error + Send + Sync>;

/// Why the shell could not install a snapshot into its state machine (`Replica::process_ready`'s
/// `install`). The Ready is held either way; the variant says when to try again.
#[derive(thiserror::Error, Debug)]
pub enum SnapshotInstallError {
    /// Not a failure yet: the snapshot is still being fetched (try again shortly).
    #[error("the snapshot is still being fetched")]
    Pending,
    /// No space for it: retried, as a held Ready's persistence is, once space is freed.
    #[error(transparent)]
    DiskFull(ShellError),
    /// Anything else (a dead source, a damaged download): fetched again a little later.
    #[error(transparent)]
    Failed(ShellError),
}

/// A failure known only by its words (the simulation's, the tests'): [`SnapshotInstallError::Failed`].
impl From<String> for SnapshotInstallError {
    fn from(reason: String) -> Self {
        SnapshotInstallError::Failed(reason.into())
    }
}

/// Errors of the Raft storage. (Raft's own read errors are `raft::StorageError`, inside `raft::Error`.)
#[derive(thiserror::Error, Debug)]
pub enum StorageError {
    #[error("installing the snapshot at index {index} failed: {source}")]
    SnapshotInstall {
        index: u64,
        #[source]
        source: SnapshotInstallError,
    },
    #[error(transparent)]
    Wal(#[from] WalError),
    #[error("raft storage I/O error: {op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("corrupt hard-state file {}: no valid slot ({problems})", path.display())]
    CorruptHardState {
        path: PathBuf,
        problems: SlotProblems,
    },
    #[error("hard state of {len} bytes exceeds a slot's {max} bytes (conf state too large)")]
    HardStateTooLarge { len: usize, max: usize },
    #[error("raft storage in {} is inconsistent: {reason}", dir.display())]
    Inconsistent { dir: PathBuf, reason: String },
    #[error("corrupt raft log in {}: record {index}: {reason}", dir.display())]
    CorruptEntry {
        dir: PathBuf,
        index: u64,
        reason: String,
    },
    #[error("cannot encode entry {index}: {source}")]
    Encode {
        index: u64,
        #[source]
        source: protobuf::ProtobufError,
    },
    #[error(
        "append of entries starting at {index} leaves a gap after the last index {last_index}"
    )]
    Gap { index: u64, last_index: u64 },
    #[error("append of entries starting at {index} would overwrite compacted entries (first index {first_index})")]
    OverwriteCompacted { index: u64, first_index: u64 },
    #[error("appended entries are not consecutive: {index} follows {prev}")]
    NotConsecutive { prev: u64, index: u64 },
    #[error("cannot compact through {through}: the log ends at {last_index}")]
    CompactBeyondLog { through: u64, last_index: u64 },
    #[error("snapshot at {index} is out of date: the log's first index is {first_index}")]
    SnapshotOutOfDate { index: u64, first_index: u64 },
    #[error("raft storage is unusable after an earlier I/O failure; reopen it to recover")]
    Poisoned,
    /// Only [`MemRaftStorage`]: the simulated power failed at an armed [`CrashPoint`].
    #[error("the simulated power failed (a crash point was reached)")]
    Crashed,
}

impl StorageError {
    /// True when the failure is a full disk (or quota) on a write that was undone, or a snapshot
    /// install that found no space: see the module documentation. The same writes may be retried
    /// once space is freed.
    pub fn is_disk_full(&self) -> bool {
        match self {
            StorageError::Wal(e) => e.is_disk_full(),
            StorageError::Io {
                op: "write",
                source,
                ..
            } => bulwark_fs::is_disk_full(source),
            StorageError::SnapshotInstall {
                source: SnapshotInstallError::DiskFull(_),
                ..
            } => true,
            _ => false,
        }
    }
}

impl From<StorageError> for raft::Error {
    fn from(e: StorageError) -> Self {
        raft::Error::Store(raft::StorageError::Other(Box::new(e)))
    }
}

/// The state both implementations share: the persistent state plus the entries after the compaction
/// point. All semantics (validation, replacement, compaction, snapshot installation, reads) live here.
#[derive(Clone, Debug, Default, PartialEq)]
struct LogCore {
    state: PersistentState,
    /// Entries `compacted_index + 1 ..= last_index`, consecutive.
    entries: Vec<Entry>,
}

impl LogCore {
    fn first_index(&self) -> u64 {
        self.state.compacted_index + 1
    }

    fn last_index(&self) -> u64 {
        self.state.compacted_index + self.entries.len() as u64
    }

    fn check_append(&self, entries: &[Entry]) -> Result<(), StorageError> {
        let Some(first) = entries.first() else {
            return Ok(());
        };
        if first.index < self.first_index() {
            return Err(StorageError::OverwriteCompacted {
                index: first.index,
                first_index: self.first_index(),
            });
        }
        if first.index > self.last_index() + 1 {
            return Err(StorageError::Gap {
                index: first.index,
                last_index: self.last_index(),
            });
        }
        for w in entries.windows(2) {
            if w[1].index != w[0].index + 1 {
                return Err(StorageError::NotConsecutive {
                    prev: w[0].index,
                    index: w[1].index,
                });
            }
        }
        Ok(())
    }

    /// Replaces everything from `entries[0].index` on; `check_append` must have passed. Returns the index
    /// of the first changed entry.
    fn append(&mut self, entries: &[Entry]) -> Option<u64> {
        let from = entries.first()?.index;
        self.entries.truncate((from - self.first_index()) as usize);
        self.entries.extend_from_slice(entries);
        debug_assert_eq!(self.last_index(), entries.last().unwrap().index);
        Some(from)
    }

    /// Compaction point after `compact(through)`, or `None` for a no-op.
    fn compaction_target(&self, through: u64) -> Result<Option<(u64, u64)>, StorageError> {
        if through <= self.state.compacted_index {
            return Ok(None);
        }
        if through > self.last_index() {
            return Err(StorageError::CompactBeyondLog {
                through,
                last_index: self.last_index(),
            });
        }
        let term = self.entries[(through - self.first_index()) as usize].term;
        Ok(Some((through, term)))
    }

    fn compact_to(&mut self, (index, term): (u64, u64)) {
        assert!(index > self.state.compacted_index && index <= self.last_index());
        self.entries
            .drain(..(index - self.state.compacted_index) as usize);
        self.state.compacted_index = index;
        self.state.compacted_term = term;
    }

    fn check_install(&self, meta: &SnapshotMetadata) -> Result<(), StorageError> {
        if meta.index < self.first_index() {
            return Err(StorageError::SnapshotOutOfDate {
                index: meta.index,
                first_index: self.first_index(),
            });
        }
        Ok(())
    }

    fn install(&mut self, meta: &SnapshotMetadata) {
        self.entries.clear();
        self.state.compacted_index = meta.index;
        self.state.compacted_term = meta.term;
        self.state.hard_state.term = cmp::max(self.state.hard_state.term, meta.term);
        self.state.hard_state.commit = meta.index;
        self.state.conf_state = meta.get_conf_state().clone();
    }

    fn initial_state(&self) -> RaftState {
        RaftState::new(self.state.hard_state.clone(), self.state.conf_state.clone())
    }

    fn read_entries(&self, low: u64, high: u64, max_size: Option<u64>) -> raft::Result<Vec<Entry>> {
        if low < self.first_index() {
            return Err(raft::Error::Store(raft::StorageError::Compacted));
        }
        assert!(
            high <= self.last_index() + 1,
            "index out of bound (last: {}, high: {high})",
            self.last_index() + 1
        );
        assert!(low <= high, "entries: low {low} > high {high}");
        let offset = self.first_index();
        let mut ents = self.entries[(low - offset) as usize..(high - offset) as usize].to_vec();
        raft::util::limit_size(&mut ents, max_size);
        Ok(ents)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        if idx == self.state.compacted_index {
            return Ok(self.state.compacted_term);
        }
        if idx < self.first_index() {
            return Err(raft::Error::Store(raft::StorageError::Compacted));
        }
        if idx > self.last_index() {
            return Err(raft::Error::Store(raft::StorageError::Unavailable));
        }
        Ok(self.entries[(idx - self.first_index()) as usize].term)
    }
}

/// The snapshot a leader offers lagging followers, and whether Raft asked for one this offer
/// could not serve since the node last looked: the node then starts a checkpoint, so that a
/// follower never waits for the next one the log's growth would start (an idle cluster's never
/// comes).
#[derive(Clone, Debug, Default)]
struct SnapshotOffer {
    snapshot: Option<Snapshot>,
    wanted: std::cell::Cell<bool>,
}

impl SnapshotOffer {
    /// The offer, if it covers `request_index` and the log's compaction point (`compacted`): one
    /// older than that (offered before a newer snapshot was installed here) would leave its
    /// follower needing entries this log no longer holds, and be sent again and again.
    fn get(&self, request_index: u64, compacted: u64) -> raft::Result<Snapshot> {
        match &self.snapshot {
            Some(s) if s.get_metadata().index >= request_index.max(compacted) => Ok(s.clone()),
            _ => {
                self.wanted.set(true);
                Err(raft::Error::Store(
                    raft::StorageError::SnapshotTemporarilyUnavailable,
                ))
            }
        }
    }

    fn set(&mut self, snapshot: Option<Snapshot>) {
        self.snapshot = snapshot;
    }

    fn take_wanted(&mut self) -> bool {
        self.wanted.replace(false)
    }
}

/// Implements `raft::Storage` for a type with fields `core: LogCore` and `offer: SnapshotOffer`.
macro_rules! impl_raft_storage {
    ($t:ty) => {
        impl raft::Storage for $t {
            fn initial_state(&self) -> raft::Result<RaftState> {
                Ok(self.core.initial_state())
            }

            fn entries(
                &self,
                low: u64,
                high: u64,
                max_size: impl Into<Option<u64>>,
                _context: GetEntriesContext,
            ) -> raft::Result<Vec<Entry>> {
                self.core.read_entries(low, high, max_size.into())
            }

            fn term(&self, idx: u64) -> raft::Result<u64> {
                self.core.term(idx)
            }

            fn first_index(&self) -> raft::Result<u64> {
                Ok(self.core.first_index())
            }

            fn last_index(&self) -> raft::Result<u64> {
                Ok(self.core.last_index())
            }

            fn snapshot(&self, request_index: u64, _to: u64) -> raft::Result<Snapshot> {
                self.offer
                    .get(request_index, self.core.state.compacted_index)
            }
        }
    };
}

impl LogCore {
    /// [`RaftStorage::append`] for both storages: checks, appends, and lowers `dirty` to the first
    /// changed index.
    fn append_marking(
        &mut self,
        entries: &[Entry],
        dirty: &mut Option<u64>,
    ) -> Result<(), StorageError> {
        self.check_append(entries)?;
        if let Some(from) = self.append(entries) {
            mark_dirty(dirty, from);
        }
        Ok(())
    }
}

/// Lowers `dirty` to `from`: entries from there on differ from the durable log.
fn mark_dirty(dirty: &mut Option<u64>, from: u64) {
    *dirty = Some(dirty.map_or(from, |d| d.min(from)));
}

mod disk;
#[cfg(test)]
mod disk_full_tests;
mod mem;
#[cfg(test)]
mod mem_fault_tests;
#[cfg(test)]
mod test_support;

pub use disk::{DiskRaftStorage, Recovered};
pub use mem::{CrashPoint, MemRaftStorage, StorageDefect};
