//! [`DiskRaftStorage`]: the Raft log in our WAL plus the two-slot hard-state file, and the
//! recovery rules applied when it is opened.

use super::*;

impl_raft_storage!(DiskRaftStorage);

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
    offer: SnapshotOffer,
    poisoned: bool,
    /// Where each entry is encoded before the WAL copies it: kept, so that an entry of a few MB
    /// is not encoded into freshly faulted pages at every sync.
    scratch: Vec<u8>,
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
            ..WalOptions::default()
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
            offer: SnapshotOffer::default(),
            poisoned: false,
            scratch: Vec::new(),
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
            self.write_dirty(from)?;
            self.wal.sync()?;
            self.dirty_from = None;
        }
        self.write_hard_state()
    }

    /// Hands the entries from `from` on to the WAL (cutting a conflicting suffix first).
    fn write_dirty(&mut self, from: u64) -> Result<(), StorageError> {
        if from <= self.wal.last_index() {
            self.wal.truncate_suffix(from)?;
        }
        for e in &self.core.entries[(from - self.core.first_index()) as usize..] {
            self.scratch.clear();
            e.write_to_vec(&mut self.scratch)
                .map_err(|source| StorageError::Encode {
                    index: e.index,
                    source,
                })?;
            let index = self.wal.append(&self.scratch)?;
            assert_eq!(index, e.index, "WAL index diverged from the raft log");
        }
        Ok(())
    }

    /// Once the log is durable: the hard state, if it changed in a way that must be written.
    fn write_hard_state(&mut self) -> Result<(), StorageError> {
        assert_eq!(self.wal.last_index(), self.core.last_index());
        let newest_segment = self.wal.newest_segment_first_index();
        if self
            .core
            .state
            .must_write_over(&self.durable_state, newest_segment)
        {
            self.hs_file.write(&self.core.state)?;
            self.durable_state = self.core.state.clone();
        }
        Ok(())
    }

    /// The outcome of a sync (or half of one): a failure for lack of space, with the WAL still
    /// usable, rolls back to the durable state; any other failure poisons the storage.
    fn settle<T>(&mut self, r: Result<T, StorageError>) -> Result<T, StorageError> {
        match r {
            Ok(v) => Ok(v),
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
        self.core.append_marking(entries, &mut self.dirty_from)
    }

    fn set_hard_state(&mut self, hs: &HardState) {
        self.core.state.hard_state = hs.clone();
    }

    fn set_conf_state(&mut self, cs: &ConfState) {
        self.core.state.conf_state = cs.clone();
    }

    fn sync(&mut self) -> Result<(), StorageError> {
        self.check_usable()?;
        let r = self.sync_inner();
        self.settle(r)
    }

    fn begin_sync(&mut self) -> Result<LogFlush, StorageError> {
        self.check_usable()?;
        let Some(from) = self.dirty_from else {
            self.sync()?;
            return Ok(LogFlush::done());
        };
        let r = self
            .write_dirty(from)
            .and_then(|()| Ok(self.wal.write_unflushed()?));
        let flush = self.settle(r)?;
        Ok(LogFlush(Some(flush)))
    }

    fn end_sync(
        &mut self,
        flush: LogFlush,
        flushed: Result<(), WalError>,
    ) -> Result<(), StorageError> {
        let Some(flush) = flush.0 else {
            return Ok(flushed?);
        };
        let r = self
            .wal
            .finish_flush(flush, flushed)
            .map_err(StorageError::from)
            .and_then(|()| {
                self.dirty_from = None;
                self.write_hard_state()
            });
        self.settle(r)
    }

    fn compact(&mut self, through: LogIndex) -> Result<(), StorageError> {
        self.check_usable()?;
        let target = self.core.compaction_target(through.0)?;
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
        self.offer.set(snapshot);
    }

    fn take_snapshot_wanted(&mut self) -> bool {
        self.offer.take_wanted()
    }

    fn dirty_from(&self) -> Option<LogIndex> {
        self.dirty_from.map(LogIndex)
    }
}
