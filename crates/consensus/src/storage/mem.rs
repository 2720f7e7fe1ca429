//! [`MemRaftStorage`]: the Raft storage in memory, for the deterministic simulation.

use super::*;

impl_raft_storage!(MemRaftStorage);

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
    offer: SnapshotOffer,
    disk_full: bool,
    crash_at: Option<CrashPoint>,
    /// Set when `crash_at` was reached: the point, and what was durable at that instant.
    crashed: Option<(CrashPoint, Box<LogCore>)>,
    /// A defect planted by a mutation test of the simulation's checks; never set otherwise.
    defect: Option<StorageDefect>,
    /// With [`StorageDefect::SyncReturnsEarly`]: what was durable before the last sync that had
    /// entries to write, which a crash returns to.
    before_last_sync: Option<Box<LogCore>>,
}

/// A deliberately wrong storage, for tests that show the simulation's checks catch it
/// ([`MemRaftStorage::plant_defect`]).
#[doc(hidden)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StorageDefect {
    /// A crash keeps everything appended and set, synced or not.
    CrashKeepsUnsynced,
    /// A sync returns before its entries are durable: a crash loses the last sync that had
    /// entries, after Raft was told they were persisted (and the node acknowledged them).
    SyncReturnsEarly,
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
    /// In the next `compact` that drops entries, once earlier writes are synced and before the
    /// new compaction point is written.
    BeforeCompaction,
    /// Right after the next `compact` that drops entries is durable (on disk: the compaction
    /// point is written and the WAL not yet trimmed, which recovery treats alike).
    AfterCompaction,
}

/// What a full disk answers: the WAL's write failed with `ENOSPC`.
fn disk_full_error() -> StorageError {
    StorageError::Wal(WalError::Io {
        op: "write",
        path: PathBuf::from("raft (simulated full disk)"),
        source: std::io::Error::from_raw_os_error(28),
    })
}

/// Entries per notional log segment: where a memory storage makes a moved commit index durable.
const NOTIONAL_SEGMENT_ENTRIES: u64 = 8;

impl MemRaftStorage {
    /// An empty storage: no entries, first index 1, default hard and conf state.
    pub fn new() -> MemRaftStorage {
        MemRaftStorage::default()
    }

    /// A power loss: every append and hard/conf-state change since the last sync is lost, and so is the
    /// snapshot offer. After a crash point was reached, the storage returns to what was durable then.
    /// An armed crash point is disarmed; a full disk stays full.
    pub fn crash(&mut self) {
        match self.defect {
            Some(StorageDefect::CrashKeepsUnsynced) => {
                self.crashed = None;
                self.durable = self.core.clone();
            }
            Some(StorageDefect::SyncReturnsEarly) => {
                if let Some(before) = self.before_last_sync.take() {
                    self.crashed = None;
                    self.durable = *before;
                }
            }
            None => {}
        }
        if let Some((_, image)) = self.crashed.take() {
            self.durable = *image;
        }
        self.core = self.durable.clone();
        self.dirty_from = None;
        self.offer = SnapshotOffer::default();
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

    /// Makes this storage wrong on purpose (see [`StorageDefect`]); kept across crashes.
    #[doc(hidden)]
    pub fn plant_defect(&mut self, defect: Option<StorageDefect>) {
        self.defect = defect;
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
            if self.defect == Some(StorageDefect::SyncReturnsEarly) {
                self.before_last_sync = Some(Box::new(self.durable.clone()));
            }
            let changed = &self.core.entries[(from - self.core.first_index()) as usize..];
            self.durable
                .check_append(changed)
                .expect("durable log diverged from the current one");
            self.durable.append(changed);
        }
        // The commit index alone is written as the disk storage writes it: when it reaches the
        // newest (here: notional, every `NOTIONAL_SEGMENT_ENTRIES`) segment.
        let last = self.core.last_index().max(1);
        let newest_segment = (last - 1) / NOTIONAL_SEGMENT_ENTRIES * NOTIONAL_SEGMENT_ENTRIES + 1;
        if self
            .core
            .state
            .must_write_over(&self.durable.state, newest_segment)
        {
            self.durable.state = self.core.state.clone();
        }
        debug_assert_eq!(self.durable.entries.len(), self.core.entries.len());
        Ok(())
    }
}

impl RaftStorage for MemRaftStorage {
    fn append(&mut self, entries: &[Entry]) -> Result<(), StorageError> {
        self.check_alive()?;
        self.reach(CrashPoint::Append)?;
        self.core.append_marking(entries, &mut self.dirty_from)
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

    fn compact(&mut self, through: LogIndex) -> Result<(), StorageError> {
        self.check_alive()?;
        let target = self.core.compaction_target(through.0)?;
        self.sync_inner()?;
        let Some(target) = target else {
            return Ok(());
        };
        self.reach(CrashPoint::BeforeCompaction)?;
        self.core.compact_to(target);
        self.durable.compact_to(target);
        self.reach(CrashPoint::AfterCompaction)
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
        self.offer.set(snapshot);
    }

    fn take_snapshot_wanted(&mut self) -> bool {
        self.offer.take_wanted()
    }

    fn dirty_from(&self) -> Option<LogIndex> {
        self.dirty_from.map(LogIndex)
    }
}
