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
//! never points past the durable log. `compact` and `install_snapshot` write the new compaction point into
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
    /// Log compaction after the state machine checkpointed at `through` (applied): entries `<= through` are
    /// dropped; `term(through)` stays answerable. Syncs earlier writes first; durable when it returns.
    /// `through` at or below the compaction point is a no-op; past the last index an error.
    fn compact(&mut self, through: u64) -> Result<(), StorageError>;
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
    /// The last index up to which what Raft sees is also durable (synced and not since replaced):
    /// nothing beyond it may be answered as written.
    fn durable_last_index(&self) -> u64 {
        let last = raft::Storage::last_index(self).unwrap_or(0);
        self.dirty_from().map_or(last, |from| last.min(from - 1))
    }
    /// The first index whose entry may differ from the durable log (appended since the last sync).
    fn dirty_from(&self) -> Option<u64>;
}

/// Errors of the Raft storage. (Raft's own read errors are `raft::StorageError`, inside `raft::Error`.)
#[derive(thiserror::Error, Debug)]
pub enum StorageError {
    #[error("installing the snapshot at index {index} failed: {reason}")]
    SnapshotInstall { index: u64, reason: String },
    #[error(transparent)]
    Wal(#[from] WalError),
    #[error("raft storage I/O error: {op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("corrupt hard-state file {}: no valid slot ({reason})", path.display())]
    CorruptHardState { path: PathBuf, reason: String },
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
    /// True when the failure is a full disk (or quota) on a write that was undone: see the module
    /// documentation. The same writes may be retried once space is freed.
    pub fn is_disk_full(&self) -> bool {
        match self {
            StorageError::Wal(e) => e.is_disk_full(),
            StorageError::Io {
                op: "write",
                source,
                ..
            } => bulwark_fs::is_disk_full(source),
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

fn offered_snapshot(offer: &Option<Snapshot>, request_index: u64) -> raft::Result<Snapshot> {
    match offer {
        Some(s) if s.get_metadata().index >= request_index => Ok(s.clone()),
        _ => Err(raft::Error::Store(
            raft::StorageError::SnapshotTemporarilyUnavailable,
        )),
    }
}

/// Implements `raft::Storage` for a type with fields `core: LogCore` and `offer: Option<Snapshot>`.
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
                offered_snapshot(&self.offer, request_index)
            }
        }
    };
}

impl_raft_storage!(MemRaftStorage);
impl_raft_storage!(DiskRaftStorage);

/// Lowers `dirty` to `from`: entries from there on differ from the durable log.
fn mark_dirty(dirty: &mut Option<u64>, from: u64) {
    *dirty = Some(dirty.map_or(from, |d| d.min(from)));
}

// ---------------------------------------------------------------------------------------------------------
// In memory
// ---------------------------------------------------------------------------------------------------------

/// [`RaftStorage`] in memory for the deterministic simulation. It keeps the durable state (as of the last
/// sync) beside the current one, so [`MemRaftStorage::crash`] can model a power loss.
///
/// It also plays the faults of a real disk, for the simulation to drive a replica into them: a full disk
/// ([`MemRaftStorage::set_disk_full`]: a sync that has entries to write fails and is undone exactly as
/// [`DiskRaftStorage`]'s is), and a power loss at a chosen point inside the writes of a `Ready`
/// ([`MemRaftStorage::crash_at`]): from that instant the storage refuses every write, so the replica stops
/// there (it holds the Ready, as after any failed write), and [`MemRaftStorage::crash`] later returns to
/// what was durable at that instant.
#[derive(Clone, Debug, Default)]
pub struct MemRaftStorage {
    /// What raft sees.
    core: LogCore,
    /// What survives a crash.
    durable: LogCore,
    /// Entries of `core` from this index on may differ from `durable`.
    dirty_from: Option<u64>,
    offer: Option<Snapshot>,
    disk_full: bool,
    crash_at: Option<CrashPoint>,
    /// Set when `crash_at` was reached: the point, and what was durable at that instant.
    crashed: Option<(CrashPoint, Box<LogCore>)>,
}

/// Where, inside the writes of a `Ready`, a [`MemRaftStorage`] loses power (see
/// [`MemRaftStorage::crash_at`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CrashPoint {
    /// At the next `append`: the entries were never written.
    Append,
    /// In the next `sync` that has entries to write, part-way: the log keeps the first `keep` of the
    /// unsynced entries (whole records: the WAL cuts a torn record at recovery), after the durable cut of
    /// a conflicting suffix; the hard state is not written. `keep` past the end keeps them all (a crash
    /// between the log's fsync and the hard-state write).
    TornSync { keep: usize },
    /// Right after the next `sync` made everything durable, before anything that depends on it (the
    /// messages it allows, the answers).
    AfterSync,
    /// In the next `install_snapshot`, once earlier writes are synced and before the log is reset.
    BeforeInstall,
    /// Right after the next `install_snapshot` is durable.
    AfterInstall,
}

/// What a full disk answers: the WAL's write failed with `ENOSPC`.
fn disk_full_error() -> StorageError {
    StorageError::Wal(WalError::Io {
        op: "write",
        path: PathBuf::from("raft (simulated full disk)"),
        source: std::io::Error::from_raw_os_error(28),
    })
}

impl MemRaftStorage {
    /// An empty storage: no entries, first index 1, default hard and conf state.
    pub fn new() -> MemRaftStorage {
        MemRaftStorage::default()
    }

    /// A power loss: every append and hard/conf-state change since the last sync is lost, and so is the
    /// snapshot offer. After a crash point was reached, the storage returns to what was durable then.
    /// An armed crash point is disarmed; a full disk stays full.
    pub fn crash(&mut self) {
        if let Some((_, image)) = self.crashed.take() {
            self.durable = *image;
        }
        self.core = self.durable.clone();
        self.dirty_from = None;
        self.offer = None;
        self.crash_at = None;
    }

    /// While `full`, a `sync` with entries to write fails with a disk-full error and is undone as
    /// [`DiskRaftStorage`] undoes it (see the module documentation); a sync of the hard state alone
    /// succeeds (the hard-state file is overwritten in place).
    pub fn set_disk_full(&mut self, full: bool) {
        self.disk_full = full;
    }

    pub fn is_disk_full(&self) -> bool {
        self.disk_full
    }

    /// Arms (or with `None` disarms) a power loss at `point`; see [`CrashPoint`].
    pub fn crash_at(&mut self, point: Option<CrashPoint>) {
        self.crash_at = point;
    }

    /// True once an armed crash point was reached: the storage refuses every write until
    /// [`MemRaftStorage::crash`].
    pub fn has_crashed(&self) -> bool {
        self.crashed.is_some()
    }

    /// What a crash now would keep of the log and the commit index: (last index, commit).
    pub fn durable_last_and_commit(&self) -> (u64, u64) {
        let durable = match &self.crashed {
            Some((_, image)) => image,
            None => &self.durable,
        };
        (durable.last_index(), durable.state.hard_state.commit)
    }

    /// The crash point that was reached, if one was.
    pub fn crashed_at(&self) -> Option<CrashPoint> {
        self.crashed.as_ref().map(|(point, _)| *point)
    }

    fn check_alive(&self) -> Result<(), StorageError> {
        if self.crashed.is_some() {
            return Err(StorageError::Crashed);
        }
        Ok(())
    }

    /// Reaches the armed crash point if it is `point`: what is durable now is all that survives.
    fn reach(&mut self, point: CrashPoint) -> Result<(), StorageError> {
        if self.crash_at == Some(point) {
            self.crash_at = None;
            self.crashed = Some((point, Box::new(self.durable.clone())));
            return Err(StorageError::Crashed);
        }
        Ok(())
    }

    /// A torn sync: the durable log keeps a prefix of the unsynced entries, the hard state is old.
    fn tear(&mut self, keep: usize) -> StorageError {
        let mut image = self.durable.clone();
        if let Some(from) = self.dirty_from {
            let changed = &self.core.entries[(from - self.core.first_index()) as usize..];
            let kept = &changed[..keep.min(changed.len())];
            if from <= image.last_index() {
                // The WAL cuts a conflicting suffix durably before it writes the new records.
                image
                    .entries
                    .truncate((from - image.first_index()) as usize);
            }
            image.append(kept);
        }
        self.crashed = self.crash_at.take().map(|point| (point, Box::new(image)));
        StorageError::Crashed
    }

    /// After a sync failed for lack of space: as `DiskRaftStorage::roll_back_unsynced`, the durable cut of
    /// a conflicting suffix stays, the unsynced entries are dropped, term and vote go back to the durable
    /// ones and the commit stays within the durable log; a conf state set since stays pending.
    fn roll_back_unsynced(&mut self) {
        if let Some(from) = self.dirty_from.take() {
            if from <= self.durable.last_index() {
                let keep = (from - self.durable.first_index()) as usize;
                self.durable.entries.truncate(keep);
            }
        }
        let durable_last = self.durable.last_index();
        let keep = (durable_last - self.core.state.compacted_index) as usize;
        self.core.entries.truncate(keep);
        let durable = &self.durable.state.hard_state;
        let commit = self
            .core
            .state
            .hard_state
            .commit
            .min(durable_last)
            .max(durable.commit);
        let mut hs = durable.clone();
        hs.commit = commit;
        self.core.state.hard_state = hs;
    }

    fn sync_inner(&mut self) -> Result<(), StorageError> {
        if self.dirty_from.is_some() && self.disk_full {
            self.roll_back_unsynced();
            return Err(disk_full_error());
        }
        if let Some(CrashPoint::TornSync { keep }) = self.crash_at {
            if self.dirty_from.is_some() {
                return Err(self.tear(keep));
            }
        }
        if let Some(from) = self.dirty_from.take() {
            let changed = &self.core.entries[(from - self.core.first_index()) as usize..];
            self.durable
                .check_append(changed)
                .expect("durable log diverged from the current one");
            self.durable.append(changed);
        }
        self.durable.state = self.core.state.clone();
        debug_assert_eq!(self.durable.entries.len(), self.core.entries.len());
        Ok(())
    }
}

impl RaftStorage for MemRaftStorage {
    fn append(&mut self, entries: &[Entry]) -> Result<(), StorageError> {
        self.check_alive()?;
        self.reach(CrashPoint::Append)?;
        self.core.check_append(entries)?;
        if let Some(from) = self.core.append(entries) {
            mark_dirty(&mut self.dirty_from, from);
        }
        Ok(())
    }

    fn set_hard_state(&mut self, hs: &HardState) {
        self.core.state.hard_state = hs.clone();
    }

    fn set_conf_state(&mut self, cs: &ConfState) {
        self.core.state.conf_state = cs.clone();
    }

    fn sync(&mut self) -> Result<(), StorageError> {
        self.check_alive()?;
        self.sync_inner()?;
        self.reach(CrashPoint::AfterSync)
    }

    fn compact(&mut self, through: u64) -> Result<(), StorageError> {
        self.check_alive()?;
        let target = self.core.compaction_target(through)?;
        self.sync_inner()?;
        if let Some(target) = target {
            self.core.compact_to(target);
            self.durable.compact_to(target);
        }
        Ok(())
    }

    fn install_snapshot(&mut self, meta: &SnapshotMetadata) -> Result<(), StorageError> {
        self.check_alive()?;
        self.core.check_install(meta)?;
        self.sync_inner()?;
        self.reach(CrashPoint::BeforeInstall)?;
        self.core.install(meta);
        self.durable.install(meta);
        self.reach(CrashPoint::AfterInstall)
    }

    fn set_snapshot_offer(&mut self, snapshot: Option<Snapshot>) {
        self.offer = snapshot;
    }

    fn dirty_from(&self) -> Option<u64> {
        self.dirty_from
    }
}

// ---------------------------------------------------------------------------------------------------------
// On disk
// ---------------------------------------------------------------------------------------------------------

/// What [`DiskRaftStorage::open`] found and repaired.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recovered {
    /// A torn tail the WAL cut from its last segment (the unsynced end of the last write).
    pub torn_tail: Option<TornTail>,
    /// First and last index of the recovered log (`first_index == last_index + 1` when empty).
    pub first_index: u64,
    pub last_index: u64,
    /// WAL records dropped because an `install_snapshot` was interrupted after its hard-state write.
    pub dropped_after_interrupted_snapshot: u64,
}

/// [`RaftStorage`] on disk: the log in a [`bulwark_wal::Wal`] in `dir`, the rest in `dir/hardstate`. Keeps
/// every entry after the compaction point in memory, so raft's reads never touch the disk.
#[derive(Debug)]
pub struct DiskRaftStorage {
    dir: PathBuf,
    wal: Wal,
    hs_file: HardStateFile,
    /// What raft sees.
    core: LogCore,
    /// What the hard-state file holds.
    durable_state: PersistentState,
    /// Entries of `core` from this index on are not (yet) what the WAL holds.
    dirty_from: Option<u64>,
    offer: Option<Snapshot>,
    poisoned: bool,
}

impl DiskRaftStorage {
    /// Opens (creating if missing) the storage in `dir` and recovers it: the WAL cuts a torn tail, the
    /// newest valid hard-state slot is used, and the log is checked against the compaction point and the
    /// durable commit index (see the module documentation). `segment_bytes` is the WAL's segment size.
    pub fn open(
        dir: &Path,
        segment_bytes: u64,
    ) -> Result<(DiskRaftStorage, Recovered), StorageError> {
        // The hard state first: its commit index says which records were durable and promised,
        // so that the WAL refuses to cut one of them as a torn tail.
        let existing = if HardStateFile::exists(dir) {
            Some(HardStateFile::open(dir)?)
        } else {
            None
        };
        let keep_through = existing.as_ref().map_or(0, |(_, s)| s.hard_state.commit);
        let options = WalOptions {
            segment_bytes,
            keep_through,
        };
        let (mut wal, recovery) = Wal::open(dir, options)?;
        let (hs_file, state) = match existing {
            Some(found) => found,
            None => open_hard_state(dir, &wal)?,
        };
        // Decide first, change the disk second: a refusal must leave the directory as it found it.
        let plan = plan_log(dir, &wal, &state)?;
        check_commit_covered(dir, &state, &plan)?;
        let ci = state.compacted_index;
        let (entries, dropped) = carry_out(&mut wal, plan, ci)?;
        if dropped > 0 {
            tracing::warn!(
                dir = %dir.display(),
                records = dropped,
                snapshot_index = ci,
                "dropped the log of an interrupted snapshot installation"
            );
        }
        let core = LogCore {
            state: state.clone(),
            entries,
        };
        assert!(core.state.hard_state.commit <= core.last_index());
        assert_eq!(wal.last_index(), core.last_index());
        assert!(wal.first_index() <= core.first_index());
        let recovered = Recovered {
            torn_tail: recovery.torn_tail,
            first_index: core.first_index(),
            last_index: core.last_index(),
            dropped_after_interrupted_snapshot: dropped,
        };
        let storage = DiskRaftStorage {
            dir: dir.to_path_buf(),
            wal,
            hs_file,
            core,
            durable_state: state,
            dirty_from: None,
            offer: None,
            poisoned: false,
        };
        Ok((storage, recovered))
    }

    /// The storage directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Bytes of the log's segment files on disk, and how many there are (status and metrics).
    pub fn log_size(&self) -> (u64, usize) {
        (self.wal.size_bytes(), self.wal.segment_count())
    }

    fn check_usable(&self) -> Result<(), StorageError> {
        if self.poisoned {
            Err(StorageError::Poisoned)
        } else {
            Ok(())
        }
    }

    fn poison_on_err<T>(&mut self, r: Result<T, StorageError>) -> Result<T, StorageError> {
        if r.is_err() {
            self.poisoned = true;
        }
        r
    }

    fn sync_inner(&mut self) -> Result<(), StorageError> {
        if let Some(from) = self.dirty_from {
            if from <= self.wal.last_index() {
                self.wal.truncate_suffix(from)?;
            }
            for e in &self.core.entries[(from - self.core.first_index()) as usize..] {
                let bytes = e.write_to_bytes().map_err(|source| StorageError::Encode {
                    index: e.index,
                    source,
                })?;
                let index = self.wal.append(&bytes)?;
                assert_eq!(index, e.index, "WAL index diverged from the raft log");
            }
            self.wal.sync()?;
            self.dirty_from = None;
        }
        assert_eq!(self.wal.last_index(), self.core.last_index());
        if self.core.state != self.durable_state {
            self.hs_file.write(&self.core.state)?;
            self.durable_state = self.core.state.clone();
        }
        Ok(())
    }

    /// After a sync failed for lack of space (and was undone on disk): drops what was not made durable, so
    /// that raft's view is the durable state again and the same appends can be repeated later.
    fn roll_back_unsynced(&mut self) {
        self.wal.discard_unsynced();
        // The WAL now ends at its durable end: before a conflicting suffix was cut (the cut is durable)
        // or at the old last index. Every entry up to there is unchanged in `core` (only entries from
        // `dirty_from` on differ), so cutting `core` there gives exactly the durable log.
        let durable_last = self.wal.last_index();
        assert!(durable_last >= self.core.state.compacted_index);
        let keep = (durable_last - self.core.state.compacted_index) as usize;
        debug_assert!(keep <= self.core.entries.len());
        self.core.entries.truncate(keep);
        self.dirty_from = None;
        // Term and vote back to the durable ones (the failed Ready set them; its retry sets them again).
        // The commit index may stay ahead of the durable one (a commit learnt after an earlier, durable
        // Ready), but never past the durable log: a later write of the hard-state file (e.g. by
        // `compact`) must not make a commit durable whose entries are not.
        let durable = &self.durable_state.hard_state;
        let commit = self
            .core
            .state
            .hard_state
            .commit
            .min(durable_last)
            .max(durable.commit);
        let mut hs = durable.clone();
        hs.commit = commit;
        self.core.state.hard_state = hs;
        tracing::debug!(
            dir = %self.dir.display(),
            last_index = self.core.last_index(),
            "rolled the raft storage back to its durable state after a failed sync"
        );
    }

    /// Writes the new compaction point, then trims the WAL (whole segments only).
    fn compact_inner(&mut self, target: (u64, u64)) -> Result<(), StorageError> {
        let mut state = self.core.state.clone();
        (state.compacted_index, state.compacted_term) = target;
        self.hs_file.write(&state)?;
        self.core.compact_to(target);
        self.durable_state = state;
        self.wal.truncate_prefix(target.0)?;
        Ok(())
    }

    /// Writes the snapshot's state, then empties the WAL so that it continues at `meta.index + 1`.
    fn install_inner(&mut self, meta: &SnapshotMetadata) -> Result<(), StorageError> {
        let mut core = LogCore {
            state: self.core.state.clone(),
            entries: Vec::new(),
        };
        core.install(meta);
        self.hs_file.write(&core.state)?;
        self.durable_state = core.state.clone();
        self.core = core;
        if self.wal.first_index() <= self.wal.last_index() {
            let through = cmp::max(self.wal.last_index(), meta.index);
            self.wal.truncate_prefix(through)?;
        }
        if self.wal.first_index() != meta.index + 1 {
            self.wal.reset_next_index(meta.index + 1)?;
        }
        Ok(())
    }
}

fn inconsistent(dir: &Path, reason: String) -> StorageError {
    StorageError::Inconsistent {
        dir: dir.to_path_buf(),
        reason,
    }
}

/// Opens the hard-state file, or creates it for a new (empty) log; a log without one is refused.
fn open_hard_state(
    dir: &Path,
    wal: &Wal,
) -> Result<(HardStateFile, PersistentState), StorageError> {
    if HardStateFile::exists(dir) {
        HardStateFile::open(dir)
    } else if wal.first_index() > wal.last_index() {
        HardStateFile::create(dir)
    } else {
        Err(inconsistent(
            dir,
            format!(
                "the log holds [{}, {}] but the hard-state file is missing",
                wal.first_index(),
                wal.last_index()
            ),
        ))
    }
}

/// What recovery makes of the log, decided before anything on disk changes.
enum LogPlan {
    /// The log is empty and continues at the compaction point + 1 (after a reset if it does not yet:
    /// a crash inside the WAL's truncation left no segment behind).
    Empty,
    /// An `install_snapshot` wrote the hard state but did not get to empty the log: every record goes.
    DropAll,
    /// The log continues the compaction point: these are its entries after it.
    Keep(Vec<Entry>),
}

impl LogPlan {
    /// The index the recovered log ends at.
    fn last_index(&self, compacted_index: u64) -> u64 {
        match self {
            LogPlan::Empty | LogPlan::DropAll => compacted_index,
            LogPlan::Keep(entries) => compacted_index + entries.len() as u64,
        }
    }
}

/// Reads the log against the compaction point (see the module documentation). Changes nothing.
fn plan_log(dir: &Path, wal: &Wal, state: &PersistentState) -> Result<LogPlan, StorageError> {
    let ci = state.compacted_index;
    if wal.first_index() > wal.last_index() {
        if wal.first_index() > ci + 1 {
            return Err(inconsistent(
                dir,
                format!(
                    "the empty log continues at {} but the compaction point is {ci}: entries are missing",
                    wal.first_index()
                ),
            ));
        }
        return Ok(LogPlan::Empty);
    }
    if wal.first_index() > ci + 1 {
        return Err(inconsistent(
            dir,
            format!(
                "the log begins at {} but the compaction point is {ci}: entries {}..{} are missing",
                wal.first_index(),
                ci + 1,
                wal.first_index()
            ),
        ));
    }
    if wal.last_index() < ci {
        return Ok(LogPlan::DropAll);
    }
    read_entries_after(dir, wal, ci, state.compacted_term)
}

/// The log's entries after the compaction point `ci`, or [`LogPlan::DropAll`] if its entry at `ci` has
/// another term than `ct`: then the log is not a prefix-match of the installed snapshot and none of it
/// may be used. (If the terms match, the later entries continue the snapshot's log by Log Matching.)
fn read_entries_after(dir: &Path, wal: &Wal, ci: u64, ct: u64) -> Result<LogPlan, StorageError> {
    let mut entries = Vec::new();
    for record in wal.read_from(cmp::max(wal.first_index(), ci))? {
        let (index, payload) = record?;
        let entry = Entry::parse_from_bytes(&payload).map_err(|e| StorageError::CorruptEntry {
            dir: dir.to_path_buf(),
            index,
            reason: format!("cannot decode entry: {e}"),
        })?;
        if entry.index != index {
            return Err(StorageError::CorruptEntry {
                dir: dir.to_path_buf(),
                index,
                reason: format!("record holds entry {}", entry.index),
            });
        }
        if index == ci && ci > 0 {
            if entry.term != ct {
                return Ok(LogPlan::DropAll);
            }
            continue;
        }
        entries.push(entry);
    }
    Ok(LogPlan::Keep(entries))
}

/// Refuses a log that ends before the durable commit index: committed (acknowledged) entries are
/// gone, e.g. a deleted or lost segment, and starting would let new entries reuse their indexes.
/// Only an operator can bring them back, so this runs before recovery changes anything on disk.
fn check_commit_covered(
    dir: &Path,
    state: &PersistentState,
    plan: &LogPlan,
) -> Result<(), StorageError> {
    let ci = state.compacted_index;
    let end = plan.last_index(ci);
    let commit = state.hard_state.commit;
    if commit <= end {
        return Ok(());
    }
    Err(inconsistent(
        dir,
        format!(
            "the log ends at index {end} (compaction point {ci}), before the durable commit index \
             {commit}: committed entries {}..={commit} are missing (a deleted or lost log segment?); \
             refusing to start without them",
            end + 1
        ),
    ))
}

/// Carries out `plan` on the WAL. Returns the entries after the compaction point and how many
/// records were dropped.
fn carry_out(wal: &mut Wal, plan: LogPlan, ci: u64) -> Result<(Vec<Entry>, u64), StorageError> {
    match plan {
        LogPlan::Keep(entries) => Ok((entries, 0)),
        LogPlan::Empty => {
            if wal.first_index() < ci + 1 {
                wal.reset_next_index(ci + 1)?;
            }
            Ok((Vec::new(), 0))
        }
        LogPlan::DropAll => {
            let dropped = wal.last_index() - wal.first_index() + 1;
            wal.truncate_prefix(cmp::max(wal.last_index(), ci))?;
            if wal.first_index() != ci + 1 {
                wal.reset_next_index(ci + 1)?;
            }
            Ok((Vec::new(), dropped))
        }
    }
}

impl RaftStorage for DiskRaftStorage {
    fn append(&mut self, entries: &[Entry]) -> Result<(), StorageError> {
        self.check_usable()?;
        self.core.check_append(entries)?;
        if let Some(from) = self.core.append(entries) {
            mark_dirty(&mut self.dirty_from, from);
        }
        Ok(())
    }

    fn set_hard_state(&mut self, hs: &HardState) {
        self.core.state.hard_state = hs.clone();
    }

    fn set_conf_state(&mut self, cs: &ConfState) {
        self.core.state.conf_state = cs.clone();
    }

    fn sync(&mut self) -> Result<(), StorageError> {
        self.check_usable()?;
        match self.sync_inner() {
            Ok(()) => Ok(()),
            Err(e) if e.is_disk_full() && !self.wal.is_poisoned() => {
                self.roll_back_unsynced();
                Err(e)
            }
            Err(e) => {
                self.poisoned = true;
                Err(e)
            }
        }
    }

    fn compact(&mut self, through: u64) -> Result<(), StorageError> {
        self.check_usable()?;
        let target = self.core.compaction_target(through)?;
        self.sync()?;
        let Some(target) = target else {
            return Ok(());
        };
        let r = self.compact_inner(target);
        self.poison_on_err(r)
    }

    fn install_snapshot(&mut self, meta: &SnapshotMetadata) -> Result<(), StorageError> {
        self.check_usable()?;
        self.core.check_install(meta)?;
        self.sync()?;
        let r = self.install_inner(meta);
        self.poison_on_err(r)
    }

    fn set_snapshot_offer(&mut self, snapshot: Option<Snapshot>) {
        self.offer = snapshot;
    }

    fn dirty_from(&self) -> Option<u64> {
        self.dirty_from
    }
}

#[cfg(test)]
mod disk_full_tests {
    //! [`DiskRaftStorage`] on a really full disk: a small tmpfs (the tests run as root, as CI
    //! does; a failed mount fails the test) filled with a filler file.

    use bulwark_tmpfs::{fill, Tmpfs};
    use raft::Storage as _;

    use super::*;

    fn mount() -> Tmpfs {
        Tmpfs::mount_temp("bulwark-raft-tmpfs", 2 << 20)
            .expect("mount a tmpfs (needs root, as CI has)")
    }

    fn entries(range: std::ops::RangeInclusive<u64>, term: u64, len: usize) -> Vec<Entry> {
        range
            .map(|index| Entry {
                index,
                term,
                data: vec![index as u8; len].into(),
                ..Entry::default()
            })
            .collect()
    }

    fn hard_state(term: u64, commit: u64) -> HardState {
        HardState {
            term,
            vote: 1,
            commit,
            ..HardState::default()
        }
    }

    fn all_entries(s: &DiskRaftStorage) -> Vec<Entry> {
        let (first, last) = (s.first_index().unwrap(), s.last_index().unwrap());
        s.entries(first, last + 1, None, GetEntriesContext::empty(false))
            .unwrap()
    }

    #[test]
    fn a_sync_on_a_full_disk_rolls_back_and_the_same_writes_succeed_later() {
        let fs_ = mount();
        let dir = fs_.path().join("raft");
        let (mut s, _) = DiskRaftStorage::open(&dir, 64 << 20).unwrap();
        s.append(&entries(1..=5, 1, 100)).unwrap();
        s.set_hard_state(&hard_state(1, 3));
        s.sync().unwrap();
        let filler = fill(fs_.path()).expect("fill the disk").0;

        let new = entries(6..=60, 2, 20_000);
        s.append(&new).unwrap();
        s.set_hard_state(&hard_state(2, 40));
        let err = s.sync().expect_err("the disk is full");
        assert!(err.is_disk_full(), "{err}");
        // Raft sees the durable log again, and the storage stays usable. Term and vote are the
        // durable ones; the commit may stay ahead of the durable one, but within the durable log.
        assert_eq!(s.last_index().unwrap(), 5);
        assert_eq!(all_entries(&s), entries(1..=5, 1, 100));
        assert_eq!(s.initial_state().unwrap().hard_state, hard_state(1, 5));
        s.sync()
            .expect("only the hard state is left to write, in place");
        {
            // What a restart would find.
            drop(s);
            let (again, recovered) = DiskRaftStorage::open(&dir, 64 << 20).unwrap();
            assert_eq!(recovered.last_index, 5);
            assert_eq!(again.initial_state().unwrap().hard_state, hard_state(1, 5));
            s = again;
        }

        // Still full: the retry fails the same way.
        s.append(&new).unwrap();
        s.set_hard_state(&hard_state(2, 40));
        assert!(s.sync().expect_err("still full").is_disk_full());
        assert_eq!(s.last_index().unwrap(), 5);

        std::fs::remove_file(filler).unwrap();
        s.append(&new).unwrap();
        s.set_hard_state(&hard_state(2, 40));
        s.sync().expect("space is back");
        drop(s);
        let (s, recovered) = DiskRaftStorage::open(&dir, 64 << 20).unwrap();
        assert_eq!(recovered.last_index, 60);
        assert_eq!(s.initial_state().unwrap().hard_state, hard_state(2, 40));
        let mut expected = entries(1..=5, 1, 100);
        expected.extend(new);
        assert_eq!(all_entries(&s), expected);
    }

    #[test]
    fn a_failed_sync_after_a_conflict_keeps_the_durable_cut_and_never_a_commit_past_the_log() {
        let fs_ = mount();
        let dir = fs_.path().join("raft");
        let (mut s, _) = DiskRaftStorage::open(&dir, 64 << 20).unwrap();
        s.append(&entries(1..=10, 1, 100)).unwrap();
        s.set_hard_state(&hard_state(1, 4));
        s.sync().unwrap();
        let filler = fill(fs_.path()).expect("fill the disk").0;

        // A new leader's entries replace 6.. (the conflicting suffix is cut on disk first).
        let new = entries(6..=50, 2, 25_000);
        s.append(&new).unwrap();
        s.set_hard_state(&hard_state(2, 30));
        assert!(s.sync().expect_err("the disk is full").is_disk_full());
        assert_eq!(s.last_index().unwrap(), 5);
        assert_eq!(all_entries(&s), entries(1..=5, 1, 100));
        assert_eq!(
            s.term(6),
            Err(raft::Error::Store(raft::StorageError::Unavailable))
        );
        // A hard-state write now (compaction does one) must not record commit 30 over a log
        // that ends at 5.
        s.compact(2).unwrap();
        drop(s);
        let (mut s, recovered) = DiskRaftStorage::open(&dir, 64 << 20)
            .expect("the durable state is consistent: commit within the log");
        assert_eq!(recovered.last_index, 5);
        assert!(s.initial_state().unwrap().hard_state.commit <= 5);

        std::fs::remove_file(filler).unwrap();
        s.append(&new).unwrap();
        s.set_hard_state(&hard_state(2, 30));
        s.sync().unwrap();
        assert_eq!(s.last_index().unwrap(), 50);
        assert_eq!(s.term(6), Ok(2));
    }
}

#[cfg(test)]
mod mem_fault_tests {
    //! The faults [`MemRaftStorage`] plays for the simulation: a full disk undone as on disk
    //! (the same steps as `disk_full_tests`), and power losses inside a Ready's writes.

    use raft::Storage as _;

    use super::*;

    fn entries(range: std::ops::RangeInclusive<u64>, term: u64) -> Vec<Entry> {
        range
            .map(|index| Entry {
                index,
                term,
                ..Entry::default()
            })
            .collect()
    }

    fn hard_state(term: u64, commit: u64) -> HardState {
        HardState {
            term,
            vote: 1,
            commit,
            ..HardState::default()
        }
    }

    fn all_entries(s: &MemRaftStorage) -> Vec<Entry> {
        let (first, last) = (s.first_index().unwrap(), s.last_index().unwrap());
        s.entries(first, last + 1, None, GetEntriesContext::empty(false))
            .unwrap()
    }

    fn synced(range: std::ops::RangeInclusive<u64>, commit: u64) -> MemRaftStorage {
        let mut s = MemRaftStorage::new();
        s.append(&entries(range, 1)).unwrap();
        s.set_hard_state(&hard_state(1, commit));
        s.sync().unwrap();
        s
    }

    #[test]
    fn a_full_disk_rolls_back_as_on_disk_and_the_same_writes_succeed_later() {
        let mut s = synced(1..=5, 3);
        s.set_disk_full(true);
        s.append(&entries(6..=60, 2)).unwrap();
        s.set_hard_state(&hard_state(2, 40));
        assert!(s.sync().expect_err("the disk is full").is_disk_full());
        assert_eq!(all_entries(&s), entries(1..=5, 1));
        assert_eq!(s.initial_state().unwrap().hard_state, hard_state(1, 5));
        s.sync()
            .expect("only the hard state is left to write, in place");
        s.crash();
        assert_eq!(s.initial_state().unwrap().hard_state, hard_state(1, 5));

        s.set_disk_full(false);
        s.append(&entries(6..=60, 2)).unwrap();
        s.set_hard_state(&hard_state(2, 40));
        s.sync().expect("space is back");
        s.crash();
        assert_eq!(s.last_index().unwrap(), 60);
        assert_eq!(s.initial_state().unwrap().hard_state, hard_state(2, 40));
    }

    #[test]
    fn a_full_disk_after_a_conflict_keeps_the_durable_cut_and_no_commit_past_the_log() {
        let mut s = synced(1..=10, 4);
        s.set_disk_full(true);
        s.append(&entries(6..=50, 2)).unwrap();
        s.set_hard_state(&hard_state(2, 30));
        assert!(s.sync().expect_err("the disk is full").is_disk_full());
        assert_eq!(all_entries(&s), entries(1..=5, 1));
        s.compact(2).unwrap();
        s.crash();
        assert_eq!(s.last_index().unwrap(), 5);
        assert!(s.initial_state().unwrap().hard_state.commit <= 5);
    }

    #[test]
    fn a_torn_sync_keeps_a_prefix_of_the_new_entries_and_the_old_hard_state() {
        let mut s = synced(1..=10, 4);
        s.append(&entries(6..=20, 2)).unwrap();
        s.set_hard_state(&hard_state(2, 12));
        s.crash_at(Some(CrashPoint::TornSync { keep: 3 }));
        assert!(matches!(s.sync(), Err(StorageError::Crashed)));
        assert!(s.has_crashed());
        assert!(matches!(
            s.append(&entries(21..=21, 2)),
            Err(StorageError::Crashed)
        ));
        s.crash();
        let mut expected = entries(1..=5, 1);
        expected.extend(entries(6..=8, 2));
        assert_eq!(all_entries(&s), expected);
        assert_eq!(s.initial_state().unwrap().hard_state, hard_state(1, 4));
    }

    #[test]
    fn crash_points_keep_what_was_durable_at_that_instant() {
        let mut s = synced(1..=5, 3);
        s.crash_at(Some(CrashPoint::Append));
        assert!(s.append(&entries(6..=7, 1)).is_err());
        s.crash();
        assert_eq!(s.last_index().unwrap(), 5);

        s.append(&entries(6..=7, 1)).unwrap();
        s.crash_at(Some(CrashPoint::AfterSync));
        assert!(s.sync().is_err());
        s.crash();
        assert_eq!(s.last_index().unwrap(), 7);

        let meta = SnapshotMetadata {
            index: 20,
            term: 2,
            ..SnapshotMetadata::default()
        };
        s.crash_at(Some(CrashPoint::BeforeInstall));
        assert!(s.install_snapshot(&meta).is_err());
        s.crash();
        assert_eq!(s.first_index().unwrap(), 1);
        s.crash_at(Some(CrashPoint::AfterInstall));
        assert!(s.install_snapshot(&meta).is_err());
        s.crash();
        assert_eq!(
            (s.first_index().unwrap(), s.last_index().unwrap()),
            (21, 20)
        );
    }
}
