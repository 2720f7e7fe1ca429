//! One behaviour suite run against both `MemRaftStorage` and `DiskRaftStorage`, disk-only recovery tests
//! (torn hard-state writes, torn WAL tails, inconsistent directories, interrupted snapshot installs), and a
//! model-based proptest of random operations with crashes.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use bulwark_consensus::storage::{
    DiskRaftStorage, MemRaftStorage, RaftStorage, StorageError, HARD_STATE_FILE,
    HARD_STATE_SLOT_BYTES,
};
use bulwark_consensus::LogIndex;
use protobuf::Message as _;
use raft::eraftpb::{ConfState, Entry, HardState, Snapshot, SnapshotMetadata};
use raft::{GetEntriesContext, Storage};

const SEGMENT_BYTES: u64 = 512;

// ------------------------------------------------------------------------------------------------------
// Harnesses: one storage, and a crash that keeps only what was synced.
// ------------------------------------------------------------------------------------------------------

trait Harness {
    type S: RaftStorage;
    fn new() -> Self;
    fn s(&mut self) -> &mut Self::S;
    /// Power loss and restart.
    fn crash(&mut self);
}

struct Mem(MemRaftStorage);

impl Harness for Mem {
    type S = MemRaftStorage;
    fn new() -> Self {
        Mem(MemRaftStorage::new())
    }
    fn s(&mut self) -> &mut MemRaftStorage {
        &mut self.0
    }
    fn crash(&mut self) {
        self.0.crash();
    }
}

/// The storage on a real file system whose power is cut at a crash: what was written and not
/// synced is lost (`bulwark_tmpfs::LoopDisk`), so a missing fsync is caught, not hidden by the
/// page cache as a drop and reopen would hide it.
struct Disk {
    disk: bulwark_tmpfs::LoopDisk,
    storage: Option<DiskRaftStorage>,
}

impl Disk {
    fn path(&self) -> PathBuf {
        self.disk.path().join("raft")
    }
}

impl Harness for Disk {
    type S = DiskRaftStorage;
    fn new() -> Self {
        let disk = bulwark_tmpfs::LoopDisk::new("bulwark-raft-storage")
            .expect("a loop disk (needs root and loop devices)");
        let (storage, rec) =
            DiskRaftStorage::open(&disk.path().join("raft"), SEGMENT_BYTES).unwrap();
        assert_eq!((rec.first_index, rec.last_index), (1, 0));
        Disk {
            disk,
            storage: Some(storage),
        }
    }
    fn s(&mut self) -> &mut DiskRaftStorage {
        self.storage.as_mut().unwrap()
    }
    fn crash(&mut self) {
        self.storage = None;
        self.disk.power_cut().expect("power cut");
        let (storage, rec) = DiskRaftStorage::open(&self.path(), SEGMENT_BYTES).unwrap();
        assert_eq!(rec.torn_tail, None);
        self.storage = Some(storage);
    }
}

/// The storage in a temporary directory, dropped and reopened at a "crash": a restart, not a power
/// loss (the page cache keeps what was written and not synced). Cheap, for the many cases of the
/// model test; `Disk` runs the same model with real power cuts.
struct Reopen {
    dir: tempfile::TempDir,
    storage: Option<DiskRaftStorage>,
}

impl Harness for Reopen {
    type S = DiskRaftStorage;
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (storage, _) = DiskRaftStorage::open(&dir.path().join("raft"), SEGMENT_BYTES).unwrap();
        Reopen {
            dir,
            storage: Some(storage),
        }
    }
    fn s(&mut self) -> &mut DiskRaftStorage {
        self.storage.as_mut().unwrap()
    }
    fn crash(&mut self) {
        self.storage = None;
        let (storage, rec) =
            DiskRaftStorage::open(&self.dir.path().join("raft"), SEGMENT_BYTES).unwrap();
        assert_eq!(rec.torn_tail, None);
        self.storage = Some(storage);
    }
}

// ------------------------------------------------------------------------------------------------------
// Helpers
// ------------------------------------------------------------------------------------------------------

fn ent(index: u64, term: u64) -> Entry {
    Entry {
        index,
        term,
        data: format!("entry {index} of term {term}").into_bytes().into(),
        ..Default::default()
    }
}

fn ents(indexes: std::ops::RangeInclusive<u64>, term: u64) -> Vec<Entry> {
    indexes.map(|i| ent(i, term)).collect()
}

fn ctx() -> GetEntriesContext {
    GetEntriesContext::empty(false)
}

fn store_err(e: raft::StorageError) -> raft::Error {
    raft::Error::Store(e)
}

/// (index, term) of every entry raft can read, checked against `term()`, plus first and last index.
fn log<S: Storage>(s: &S) -> (u64, u64, Vec<(u64, u64)>) {
    let first = s.first_index().unwrap();
    let last = s.last_index().unwrap();
    let entries = s.entries(first, last + 1, None, ctx()).unwrap();
    assert_eq!(entries.len() as u64, last + 1 - first);
    let pairs: Vec<(u64, u64)> = entries.iter().map(|e| (e.index, e.term)).collect();
    for &(i, t) in &pairs {
        assert_eq!(s.term(i).unwrap(), t);
        let e = &entries[(i - first) as usize];
        assert_eq!(e.data, ent(i, t).data, "payload of entry {i}");
    }
    (first, last, pairs)
}

fn pairs(indexes: std::ops::RangeInclusive<u64>, term: u64) -> Vec<(u64, u64)> {
    indexes.map(|i| (i, term)).collect()
}

fn hs(term: u64, vote: u64, commit: u64) -> HardState {
    HardState {
        term,
        vote,
        commit,
        ..Default::default()
    }
}

fn full_conf_state() -> ConfState {
    ConfState {
        voters: vec![1, 2, 3],
        learners: vec![7],
        voters_outgoing: vec![1, 2, 4],
        learners_next: vec![4],
        auto_leave: true,
        ..Default::default()
    }
}

fn meta(index: u64, term: u64, voters: Vec<u64>) -> SnapshotMetadata {
    SnapshotMetadata {
        index,
        term,
        conf_state: protobuf::SingularPtrField::some(ConfState::from((voters, vec![]))),
        ..Default::default()
    }
}

// ------------------------------------------------------------------------------------------------------
// The shared suite
// ------------------------------------------------------------------------------------------------------

fn new_storage_is_empty<H: Harness>() {
    let mut h = H::new();
    let s = h.s();
    assert_eq!(log(s), (1, 0, vec![]));
    assert_eq!(s.term(0), Ok(0));
    assert_eq!(s.term(1), Err(store_err(raft::StorageError::Unavailable)));
    let st = s.initial_state().unwrap();
    assert_eq!(st.hard_state, HardState::default());
    assert!(!st.initialized());
}

fn queries_mirror_mem_storage<H: Harness>() {
    let mut h = H::new();
    let s = h.s();
    s.append(&[ent(1, 1), ent(2, 1), ent(3, 2), ent(4, 3), ent(5, 3)])
        .unwrap();
    s.sync().unwrap();
    s.compact(LogIndex(2)).unwrap();
    assert_eq!(s.first_index(), Ok(3));
    assert_eq!(s.last_index(), Ok(5));
    // term: the compaction point stays answerable, below it is compacted, past the end unavailable.
    assert_eq!(s.term(1), Err(store_err(raft::StorageError::Compacted)));
    assert_eq!(s.term(2), Ok(1));
    assert_eq!(s.term(3), Ok(2));
    assert_eq!(s.term(5), Ok(3));
    assert_eq!(s.term(6), Err(store_err(raft::StorageError::Unavailable)));
    // entries: [low, high)
    assert_eq!(
        s.entries(2, 4, None, ctx()),
        Err(store_err(raft::StorageError::Compacted))
    );
    assert_eq!(s.entries(3, 3, None, ctx()), Ok(vec![]));
    assert_eq!(s.entries(3, 4, None, ctx()), Ok(vec![ent(3, 2)]));
    assert_eq!(s.entries(4, 6, None, ctx()), Ok(vec![ent(4, 3), ent(5, 3)]));
    assert_eq!(s.entries(6, 6, None, ctx()), Ok(vec![]));
}

fn entries_respect_max_size<H: Harness>() {
    let mut h = H::new();
    let s = h.s();
    let all = ents(1..=5, 1);
    s.append(&all).unwrap();
    let size = |n: usize| -> u64 { all[..n].iter().map(|e| u64::from(e.compute_size())).sum() };
    let cases: Vec<(Option<u64>, usize)> = vec![
        (None, 5),
        (Some(raft::NO_LIMIT), 5),
        (Some(0), 1),
        (Some(size(1)), 1),
        (Some(size(2) - 1), 1),
        (Some(size(2)), 2),
        (Some(size(3) + 1), 3),
        (Some(size(5)), 5),
        (Some(size(5) * 2), 5),
    ];
    for (max, n) in cases {
        assert_eq!(
            s.entries(1, 6, max, ctx()).unwrap(),
            all[..n].to_vec(),
            "max_size {max:?}"
        );
    }
}

#[allow(clippy::type_complexity)]
fn append_replaces_conflicting_suffix<H: Harness>() {
    let mut h = H::new();
    let s = h.s();
    s.append(&ents(1..=5, 1)).unwrap();
    // Replace within the unsynced entries.
    s.append(&ents(4..=6, 2)).unwrap();
    let mut want = pairs(1..=3, 1);
    want.extend(pairs(4..=6, 2));
    assert_eq!(log(s), (1, 6, want.clone()));
    // Appending right after the end.
    s.append(&[ent(7, 2)]).unwrap();
    want.push((7, 2));
    assert_eq!(log(s), (1, 7, want.clone()));
    // Replacing the very last entry, and a shorter replacement that shrinks the log.
    s.append(&[ent(7, 3)]).unwrap();
    *want.last_mut().unwrap() = (7, 3);
    assert_eq!(log(s), (1, 7, want.clone()));
    s.append(&[ent(2, 4)]).unwrap();
    assert_eq!(log(s), (1, 2, vec![(1, 1), (2, 4)]));
    // Replacing the whole log.
    s.append(&ents(1..=3, 5)).unwrap();
    assert_eq!(log(s), (1, 3, pairs(1..=3, 5)));
    s.sync().unwrap();
    h.crash();
    assert_eq!(log(h.s()), (1, 3, pairs(1..=3, 5)));
}

fn overwrite_across_the_synced_boundary<H: Harness>() {
    let mut h = H::new();
    h.s().append(&ents(1..=6, 1)).unwrap();
    h.s().sync().unwrap();
    // Unsynced: replace 3..=6 by 3..=4 of term 2, then extend.
    h.s().append(&ents(3..=4, 2)).unwrap();
    h.s().append(&ents(5..=8, 2)).unwrap();
    let mut want = pairs(1..=2, 1);
    want.extend(pairs(3..=8, 2));
    assert_eq!(log(h.s()), (1, 8, want.clone()));
    // A crash before the sync keeps the old log untouched, the conflicting suffix included.
    h.crash();
    assert_eq!(log(h.s()), (1, 6, pairs(1..=6, 1)));
    // Again, and this time sync: now the replacement is durable.
    h.s().append(&ents(3..=4, 2)).unwrap();
    h.s().append(&ents(5..=8, 2)).unwrap();
    h.s().sync().unwrap();
    h.crash();
    assert_eq!(log(h.s()), (1, 8, want.clone()));
    // A replacement that makes the log shorter than the synced one.
    h.s().append(&[ent(2, 3)]).unwrap();
    h.s().sync().unwrap();
    h.crash();
    assert_eq!(log(h.s()), (1, 2, vec![(1, 1), (2, 3)]));
    // Several replacements between two syncs, the deepest one counts.
    h.s().append(&ents(3..=5, 3)).unwrap();
    h.s().sync().unwrap();
    h.s().append(&ents(5..=6, 4)).unwrap();
    h.s().append(&ents(4..=4, 5)).unwrap();
    h.s().append(&ents(5..=5, 5)).unwrap();
    h.s().sync().unwrap();
    h.crash();
    assert_eq!(
        log(h.s()),
        (1, 5, vec![(1, 1), (2, 3), (3, 3), (4, 5), (5, 5)])
    );
}

fn bad_appends_change_nothing<H: Harness>() {
    let mut h = H::new();
    let s = h.s();
    s.append(&ents(1..=5, 1)).unwrap();
    s.sync().unwrap();
    s.compact(LogIndex(3)).unwrap();
    assert!(matches!(
        s.append(&[ent(7, 1)]),
        Err(StorageError::Gap {
            index: 7,
            last_index: 5
        })
    ));
    assert!(matches!(
        s.append(&[ent(3, 2)]),
        Err(StorageError::OverwriteCompacted {
            index: 3,
            first_index: 4
        })
    ));
    assert!(matches!(
        s.append(&[ent(5, 2), ent(7, 2)]),
        Err(StorageError::NotConsecutive { prev: 5, index: 7 })
    ));
    s.append(&[]).unwrap();
    assert_eq!(log(s), (4, 5, pairs(4..=5, 1)));
    s.sync().unwrap();
    h.crash();
    assert_eq!(log(h.s()), (4, 5, pairs(4..=5, 1)));
}

fn compaction<H: Harness>() {
    let mut h = H::new();
    h.s().append(&ents(1..=4, 1)).unwrap();
    h.s().append(&ents(5..=10, 2)).unwrap();
    h.s().sync().unwrap();
    h.s().compact(LogIndex(6)).unwrap();
    let check = |s: &mut H::S| {
        assert_eq!(log(s), (7, 10, pairs(7..=10, 2)));
        assert_eq!(s.term(6), Ok(2));
        assert_eq!(s.term(5), Err(store_err(raft::StorageError::Compacted)));
        assert_eq!(
            s.entries(6, 8, None, ctx()),
            Err(store_err(raft::StorageError::Compacted))
        );
    };
    check(h.s());
    h.crash();
    check(h.s());
    // At or below the compaction point: nothing to do.
    h.s().compact(LogIndex(6)).unwrap();
    h.s().compact(LogIndex(2)).unwrap();
    check(h.s());
    // Past the end: refused.
    assert!(matches!(
        h.s().compact(LogIndex(11)),
        Err(StorageError::CompactBeyondLog {
            through: 11,
            last_index: 10
        })
    ));
    check(h.s());
    // Compacting unsynced entries syncs them first; compacting everything leaves an empty log.
    h.s().append(&ents(11..=12, 3)).unwrap();
    h.s().compact(LogIndex(12)).unwrap();
    h.crash();
    assert_eq!(log(h.s()), (13, 12, vec![]));
    assert_eq!(h.s().term(12), Ok(3));
    h.s().append(&ents(13..=14, 3)).unwrap();
    h.s().sync().unwrap();
    h.crash();
    assert_eq!(log(h.s()), (13, 14, pairs(13..=14, 3)));
}

fn install_snapshot<H: Harness>() {
    // Past the end of the log.
    let mut h = H::new();
    h.s().append(&ents(1..=5, 1)).unwrap();
    h.s().set_hard_state(&hs(1, 1, 3));
    h.s().sync().unwrap();
    h.s().install_snapshot(&meta(20, 4, vec![1, 2, 3])).unwrap();
    let check = |s: &mut H::S| {
        assert_eq!(log(s), (21, 20, vec![]));
        assert_eq!(s.term(20), Ok(4));
        assert_eq!(s.term(5), Err(store_err(raft::StorageError::Compacted)));
        assert_eq!(s.term(21), Err(store_err(raft::StorageError::Unavailable)));
        let st = s.initial_state().unwrap();
        assert_eq!(st.hard_state, hs(4, 1, 20));
        assert_eq!(st.conf_state.voters, vec![1, 2, 3]);
    };
    check(h.s());
    h.crash();
    check(h.s());
    h.s().append(&ents(21..=22, 5)).unwrap();
    h.s().sync().unwrap();
    h.crash();
    assert_eq!(log(h.s()), (21, 22, pairs(21..=22, 5)));
    // Older than the log's first index: refused, nothing changes.
    assert!(matches!(
        h.s().install_snapshot(&meta(20, 4, vec![1])),
        Err(StorageError::SnapshotOutOfDate {
            index: 20,
            first_index: 21
        })
    ));
    assert_eq!(log(h.s()), (21, 22, pairs(21..=22, 5)));

    // Inside the log (with unsynced entries beyond it): every entry is dropped all the same.
    let mut h = H::new();
    h.s().append(&ents(1..=10, 2)).unwrap();
    h.s().sync().unwrap();
    h.s().append(&ents(11..=12, 2)).unwrap();
    h.s().set_hard_state(&hs(9, 2, 4));
    h.s().install_snapshot(&meta(7, 3, vec![1])).unwrap();
    let check = |s: &mut H::S| {
        assert_eq!(log(s), (8, 7, vec![]));
        assert_eq!(s.term(7), Ok(3));
        assert_eq!(s.initial_state().unwrap().hard_state, hs(9, 2, 7));
    };
    check(h.s());
    h.crash();
    check(h.s());
}

fn hard_state_round_trip<H: Harness>() {
    let mut h = H::new();
    h.s().append(&ents(1..=3, 2)).unwrap();
    h.s().set_hard_state(&hs(2, 3, 3));
    h.s().set_conf_state(&full_conf_state());
    h.s().sync().unwrap();
    h.crash();
    let st = h.s().initial_state().unwrap();
    assert_eq!(st.hard_state, hs(2, 3, 3));
    assert_eq!(st.conf_state, full_conf_state());
    // Unsynced changes are visible at once, and lost by a crash.
    h.s().set_hard_state(&hs(5, 0, 3));
    let cs = ConfState::from((vec![9], vec![]));
    h.s().set_conf_state(&cs);
    let st = h.s().initial_state().unwrap();
    assert_eq!((st.hard_state, st.conf_state), (hs(5, 0, 3), cs.clone()));
    h.crash();
    let st = h.s().initial_state().unwrap();
    assert_eq!(
        (st.hard_state, st.conf_state),
        (hs(2, 3, 3), full_conf_state())
    );
    // Many hard-state writes in a row (both slots get reused) survive.
    for t in 3..20 {
        h.s().set_hard_state(&hs(t, t % 3, 3));
        h.s().sync().unwrap();
    }
    h.crash();
    assert_eq!(h.s().initial_state().unwrap().hard_state, hs(19, 1, 3));
}

fn crash_keeps_exactly_the_synced_state<H: Harness>() {
    let mut h = H::new();
    h.s().append(&ents(1..=3, 1)).unwrap();
    h.s().set_hard_state(&hs(1, 1, 2));
    h.s().sync().unwrap();
    h.s().append(&ents(4..=9, 1)).unwrap();
    h.s().set_hard_state(&hs(1, 1, 8));
    assert_eq!(log(h.s()).1, 9);
    h.crash();
    assert_eq!(log(h.s()), (1, 3, pairs(1..=3, 1)));
    assert_eq!(h.s().initial_state().unwrap().hard_state, hs(1, 1, 2));
    // A sync with nothing new is harmless.
    h.s().sync().unwrap();
    h.crash();
    assert_eq!(log(h.s()), (1, 3, pairs(1..=3, 1)));
}

fn snapshot_offer<H: Harness>() {
    let mut h = H::new();
    let unavailable = Err(store_err(
        raft::StorageError::SnapshotTemporarilyUnavailable,
    ));
    assert!(!h.s().take_snapshot_wanted(), "nothing asked yet");
    assert_eq!(h.s().snapshot(0, 2), unavailable);
    // Raft asked and got nothing: the node is told once, so that it checkpoints.
    assert!(h.s().take_snapshot_wanted());
    assert!(!h.s().take_snapshot_wanted());
    let mut snap = Snapshot::default();
    snap.set_metadata(meta(10, 2, vec![1, 2, 3]));
    snap.data = b"checkpoint 10".to_vec().into();
    h.s().set_snapshot_offer(Some(snap.clone()));
    assert_eq!(h.s().snapshot(0, 2), Ok(snap.clone()));
    assert_eq!(h.s().snapshot(10, 2), Ok(snap.clone()));
    assert!(!h.s().take_snapshot_wanted(), "every ask was served");
    assert_eq!(h.s().snapshot(11, 2), unavailable);
    assert!(
        h.s().take_snapshot_wanted(),
        "an offer too old serves nothing"
    );
    // The offer is volatile.
    h.crash();
    assert_eq!(h.s().snapshot(0, 2), unavailable);
    h.s().set_snapshot_offer(Some(snap));
    h.s().set_snapshot_offer(None);
    assert_eq!(h.s().snapshot(0, 2), unavailable);
}

/// An offer older than the log's compaction point (a checkpoint offered before this node
/// installed a newer snapshot) is never given to Raft: a follower that installed it would need
/// entries this log no longer holds, and be sent the same snapshot again and again.
fn snapshot_offer_below_the_compaction_point_is_withheld<H: Harness>() {
    let mut h = H::new();
    h.s()
        .append(&(1..=12).map(|i| ent(i, 1)).collect::<Vec<_>>())
        .unwrap();
    h.s().sync().unwrap();
    let mut old = Snapshot::default();
    old.set_metadata(meta(10, 1, vec![1, 2, 3]));
    h.s().set_snapshot_offer(Some(old));
    h.s().install_snapshot(&meta(20, 2, vec![1, 2, 3])).unwrap();
    assert_eq!(
        h.s().snapshot(0, 2),
        Err(store_err(
            raft::StorageError::SnapshotTemporarilyUnavailable
        ))
    );
    let mut fresh = Snapshot::default();
    fresh.set_metadata(meta(20, 2, vec![1, 2, 3]));
    h.s().set_snapshot_offer(Some(fresh.clone()));
    assert_eq!(h.s().snapshot(0, 2), Ok(fresh));
}

macro_rules! suite {
    ($($name:ident),* $(,)?) => {
        mod mem {
            $(#[test] fn $name() { super::$name::<super::Mem>(); })*
        }
        mod disk {
            $(#[test] fn $name() { super::$name::<super::Disk>(); })*
        }
    };
}

suite!(
    new_storage_is_empty,
    queries_mirror_mem_storage,
    entries_respect_max_size,
    append_replaces_conflicting_suffix,
    overwrite_across_the_synced_boundary,
    bad_appends_change_nothing,
    compaction,
    install_snapshot,
    hard_state_round_trip,
    crash_keeps_exactly_the_synced_state,
    snapshot_offer,
    snapshot_offer_below_the_compaction_point_is_withheld,
);

// ------------------------------------------------------------------------------------------------------
// Disk only: what a crash can do to the files, and what recovery must refuse
// ------------------------------------------------------------------------------------------------------

fn open(dir: &Path) -> DiskRaftStorage {
    DiskRaftStorage::open(dir, SEGMENT_BYTES).unwrap().0
}

/// The slot (0 or 1) holding the newest record, read from the documented format.
fn newest_slot(dir: &Path) -> usize {
    let bytes = fs::read(dir.join(HARD_STATE_FILE)).unwrap();
    assert_eq!(bytes.len(), 2 * HARD_STATE_SLOT_BYTES);
    let seq = |slot: usize| {
        let at = slot * HARD_STATE_SLOT_BYTES + 8;
        u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap())
    };
    usize::from(seq(1) > seq(0))
}

/// Syncs hard states of terms 1..=n, then one more (term 100) whose write the test damages.
fn disk_with_hard_states(n: u64) -> (tempfile::TempDir, PathBuf, usize) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("raft");
    let mut s = open(&dir);
    for t in 1..=n {
        s.set_hard_state(&hs(t, 1, 0));
        s.sync().unwrap();
    }
    s.set_hard_state(&hs(100, 2, 0));
    s.sync().unwrap();
    drop(s);
    let slot = newest_slot(&dir);
    (tmp, dir, slot)
}

#[test]
fn garbage_in_the_newest_hard_state_slot_keeps_the_previous_one() {
    for n in [1, 2] {
        for (at, len) in [(0, 4), (12, 1), (30, 3), (60, 3000)] {
            let (_tmp, dir, slot) = disk_with_hard_states(n);
            let f = OpenOptions::new()
                .write(true)
                .open(dir.join(HARD_STATE_FILE))
                .unwrap();
            f.write_all_at(&vec![0xA5; len], (slot * HARD_STATE_SLOT_BYTES + at) as u64)
                .unwrap();
            drop(f);
            let mut s = open(&dir);
            assert_eq!(s.initial_state().unwrap().hard_state, hs(n, 1, 0));
            // And the storage goes on writing correctly after that.
            s.set_hard_state(&hs(101, 3, 0));
            s.sync().unwrap();
            drop(s);
            assert_eq!(
                open(&dir).initial_state().unwrap().hard_state,
                hs(101, 3, 0)
            );
        }
    }
}

#[test]
fn a_zeroed_or_truncated_newest_hard_state_slot_keeps_the_previous_one() {
    for n in [1, 2] {
        let (_tmp, dir, slot) = disk_with_hard_states(n);
        let path = dir.join(HARD_STATE_FILE);
        let f = OpenOptions::new().write(true).open(&path).unwrap();
        if slot == 1 {
            // The torn write of the second slot: the file ends inside it.
            f.set_len((HARD_STATE_SLOT_BYTES + 10) as u64).unwrap();
        } else {
            f.write_all_at(&vec![0; HARD_STATE_SLOT_BYTES], 0).unwrap();
        }
        drop(f);
        assert_eq!(open(&dir).initial_state().unwrap().hard_state, hs(n, 1, 0));
    }
}

#[test]
fn both_hard_state_slots_damaged_is_an_error_naming_the_file() {
    let (_tmp, dir, _) = disk_with_hard_states(1);
    let path = dir.join(HARD_STATE_FILE);
    let f = OpenOptions::new().write(true).open(&path).unwrap();
    f.write_all_at(&[0xFF], 20).unwrap();
    f.write_all_at(&[0xFF], HARD_STATE_SLOT_BYTES as u64 + 20)
        .unwrap();
    drop(f);
    let err = DiskRaftStorage::open(&dir, SEGMENT_BYTES).unwrap_err();
    assert!(
        matches!(err, StorageError::CorruptHardState { .. }),
        "{err}"
    );
    assert!(
        err.to_string().contains(&path.display().to_string()),
        "{err}"
    );
}

#[test]
fn a_leftover_hard_state_temp_file_is_ignored_and_removed() {
    let (_tmp, dir, _) = disk_with_hard_states(1);
    fs::write(dir.join("hardstate.tmp"), b"half a file").unwrap();
    assert_eq!(
        open(&dir).initial_state().unwrap().hard_state,
        hs(100, 2, 0)
    );
    assert!(!dir.join("hardstate.tmp").exists());
}

#[test]
fn a_torn_wal_tail_is_cut_and_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("raft");
    let mut s = open(&dir);
    s.append(&ents(1..=3, 1)).unwrap();
    s.set_hard_state(&hs(1, 1, 3));
    s.sync().unwrap();
    drop(s);
    let mut segs: Vec<_> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "wal"))
        .collect();
    segs.sort();
    let last = segs.last().unwrap();
    // Half a record header: a write that was torn by the power loss.
    OpenOptions::new()
        .append(true)
        .open(last)
        .unwrap()
        .write_all(&[7, 0, 0, 0, 1, 2])
        .unwrap();
    let (s, rec) = DiskRaftStorage::open(&dir, SEGMENT_BYTES).unwrap();
    let torn = rec.torn_tail.expect("torn tail reported");
    assert_eq!(&torn.file, last);
    assert_eq!(torn.bytes_cut, 6);
    assert_eq!((rec.first_index, rec.last_index), (1, 3));
    assert_eq!(log(&s), (1, 3, pairs(1..=3, 1)));
}

#[test]
fn a_log_that_begins_after_the_compaction_point_is_refused_naming_the_dir() {
    // A nonempty WAL starting at 5 while nothing was compacted.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("raft");
    drop(open(&dir));
    {
        let (mut wal, _) = bulwark_wal::Wal::open(&dir, Default::default()).unwrap();
        wal.reset_next_index(5).unwrap();
        wal.append(&ent(5, 1).write_to_bytes().unwrap()).unwrap();
        wal.sync().unwrap();
    }
    let err = DiskRaftStorage::open(&dir, SEGMENT_BYTES).unwrap_err();
    assert!(matches!(err, StorageError::Inconsistent { .. }), "{err}");
    assert!(
        err.to_string().contains(&dir.display().to_string()),
        "{err}"
    );

    // An empty WAL that continues after the compaction point + 1.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("raft");
    let mut s = open(&dir);
    s.append(&ents(1..=4, 1)).unwrap();
    s.sync().unwrap();
    s.compact(LogIndex(4)).unwrap();
    drop(s);
    {
        let (mut wal, _) = bulwark_wal::Wal::open(&dir, Default::default()).unwrap();
        wal.reset_next_index(9).unwrap();
    }
    let err = DiskRaftStorage::open(&dir, SEGMENT_BYTES).unwrap_err();
    assert!(
        err.to_string().contains(&dir.display().to_string()),
        "{err}"
    );
}

#[test]
fn a_log_without_its_hard_state_file_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("raft");
    let mut s = open(&dir);
    s.append(&ents(1..=2, 1)).unwrap();
    s.sync().unwrap();
    drop(s);
    fs::remove_file(dir.join(HARD_STATE_FILE)).unwrap();
    let err = DiskRaftStorage::open(&dir, SEGMENT_BYTES).unwrap_err();
    assert!(matches!(err, StorageError::Inconsistent { .. }), "{err}");
    assert!(
        err.to_string().contains(&dir.display().to_string()),
        "{err}"
    );
}

#[test]
fn a_commit_index_past_the_log_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("raft");
    let mut s = open(&dir);
    s.set_hard_state(&hs(1, 1, 5));
    s.sync().unwrap();
    drop(s);
    let err = DiskRaftStorage::open(&dir, SEGMENT_BYTES).unwrap_err();
    assert!(err.to_string().contains("commit index 5"), "{err}");
}

/// The log's segment files in `dir`, oldest first.
fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut segs: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "wal"))
        .collect();
    segs.sort();
    segs
}

/// A storage in `dir` whose log holds 1..=40 (several segments), all of it committed and synced,
/// compacted through `compact_through` (0: never compacted).
fn committed_log(compact_through: u64) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("raft");
    let mut s = open(&dir);
    for chunk in 0..4 {
        let first = chunk * 10 + 1;
        s.append(&ents(first..=first + 9, 1)).unwrap();
        s.set_hard_state(&hs(1, 1, first + 9));
        s.sync().unwrap();
    }
    if compact_through > 0 {
        s.compact(LogIndex(compact_through)).unwrap();
    }
    drop(s);
    assert!(segments(&dir).len() >= 3, "the test needs several segments");
    (tmp, dir)
}

/// Every file in `dir` with its length, by name.
fn files(dir: &Path) -> Vec<(String, u64)> {
    let mut v: Vec<(String, u64)> = fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let name = e.file_name().into_string().unwrap();
            (name, e.metadata().unwrap().len())
        })
        .collect();
    v.sort();
    v
}

/// The refusal of a log that lost committed entries: it names the directory, the index the log
/// ends at and the durable commit index, and leaves every file as it was (what is left is the
/// evidence, and perhaps what a restored segment must continue).
fn assert_lost_tail_refused(dir: &Path, last_index: u64, commit: u64) {
    let before = files(dir);
    let err = DiskRaftStorage::open(dir, SEGMENT_BYTES)
        .map(|_| ())
        .expect_err("a log that lost committed entries must not open");
    let text = err.to_string();
    assert_eq!(
        files(dir),
        before,
        "a refused open changed the directory: {text}"
    );
    assert!(matches!(err, StorageError::Inconsistent { .. }), "{text}");
    assert!(text.contains(&dir.display().to_string()), "{text}");
    assert!(text.contains(&format!("commit index {commit}")), "{text}");
    assert!(
        text.contains(&format!("ends at index {last_index}")),
        "{text}"
    );
}

#[test]
fn a_missing_newest_segment_is_refused() {
    for compact_through in [0, 12] {
        let (_tmp, dir) = committed_log(compact_through);
        let segs = segments(&dir);
        let newest = segs.last().unwrap();
        fs::remove_file(newest).unwrap();
        // What the remaining segments end at: the newest one began right after.
        let name = newest.file_stem().unwrap().to_str().unwrap();
        let last_left: u64 = name.parse::<u64>().unwrap() - 1;
        assert!(last_left < 40 && last_left > compact_through, "{last_left}");
        assert_lost_tail_refused(&dir, last_left, 40);
    }
}

#[test]
fn a_log_with_every_segment_missing_is_refused() {
    for compact_through in [0, 12] {
        let (_tmp, dir) = committed_log(compact_through);
        for seg in segments(&dir) {
            fs::remove_file(seg).unwrap();
        }
        assert_lost_tail_refused(&dir, compact_through, 40);
    }
}

#[test]
fn a_log_that_lost_its_tail_after_a_compaction_crash_is_refused_untouched() {
    // A crash inside `compact(30)`: the hard state records the compaction point, the old segments
    // are still there. Then the newest segments are lost: what is left ends before the compaction
    // point, which must not pass for an interrupted snapshot installation and be dropped.
    let (tmp, dir) = committed_log(0);
    let other = tmp.path().join("other");
    fs::create_dir(&other).unwrap();
    for (name, _) in files(&dir) {
        fs::copy(dir.join(&name), other.join(&name)).unwrap();
    }
    let mut o = open(&other);
    o.compact(LogIndex(30)).unwrap();
    drop(o);
    fs::copy(other.join(HARD_STATE_FILE), dir.join(HARD_STATE_FILE)).unwrap();
    let segs = segments(&dir);
    for seg in &segs[2..] {
        fs::remove_file(seg).unwrap();
    }
    assert_lost_tail_refused(&dir, 30, 40);
}

#[test]
fn a_missing_segment_in_the_middle_is_refused() {
    let (_tmp, dir) = committed_log(0);
    let segs = segments(&dir);
    fs::remove_file(&segs[1]).unwrap();
    let err = DiskRaftStorage::open(&dir, SEGMENT_BYTES)
        .map(|_| ())
        .expect_err("a log with a gap must not open");
    assert!(err.to_string().contains("gap"), "{err}");
    assert!(
        err.to_string().contains(&segs[2].display().to_string()),
        "{err}"
    );
}

/// A storage in `dir` whose log holds 1..=10 of term 1, and the hard-state file of a storage that
/// installed the snapshot `(index, term)`: the state a crash inside `install_snapshot` leaves (the hard
/// state written, the log not yet emptied).
fn interrupted_install(index: u64, term: u64) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("raft");
    let mut s = open(&dir);
    s.append(&ents(1..=10, 1)).unwrap();
    s.sync().unwrap();
    drop(s);
    let other = tmp.path().join("other");
    let mut o = open(&other);
    o.install_snapshot(&meta(index, term, vec![1])).unwrap();
    drop(o);
    fs::copy(other.join(HARD_STATE_FILE), dir.join(HARD_STATE_FILE)).unwrap();
    (tmp, dir)
}

#[test]
fn an_interrupted_snapshot_install_is_finished_at_recovery() {
    // The snapshot's entry has another term: the whole old log goes.
    let (_tmp, dir) = interrupted_install(5, 2);
    let (mut s, rec) = DiskRaftStorage::open(&dir, SEGMENT_BYTES).unwrap();
    assert_eq!(rec.dropped_after_interrupted_snapshot, 10);
    assert_eq!(log(&s), (6, 5, vec![]));
    assert_eq!(s.term(5), Ok(2));
    s.append(&ents(6..=7, 2)).unwrap();
    s.sync().unwrap();
    drop(s);
    let (s, rec) = DiskRaftStorage::open(&dir, SEGMENT_BYTES).unwrap();
    assert_eq!(rec.dropped_after_interrupted_snapshot, 0);
    assert_eq!(log(&s), (6, 7, pairs(6..=7, 2)));

    // The snapshot lies past the end of the log.
    let (_tmp, dir) = interrupted_install(30, 2);
    let (s, rec) = DiskRaftStorage::open(&dir, SEGMENT_BYTES).unwrap();
    assert_eq!(rec.dropped_after_interrupted_snapshot, 10);
    assert_eq!(log(&s), (31, 30, vec![]));

    // The snapshot's entry matches: the log after it continues the snapshot and is kept.
    let (_tmp, dir) = interrupted_install(5, 1);
    let (s, rec) = DiskRaftStorage::open(&dir, SEGMENT_BYTES).unwrap();
    assert_eq!(rec.dropped_after_interrupted_snapshot, 0);
    assert_eq!(log(&s), (6, 10, pairs(6..=10, 1)));
}

#[test]
fn compaction_keeps_working_with_many_segments() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("raft");
    let mut s = open(&dir);
    for i in 1..=200 {
        s.append(&[ent(i, 1 + i / 50)]).unwrap();
        if i % 7 == 0 {
            s.sync().unwrap();
        }
    }
    s.sync().unwrap();
    let want = |from: u64| (from..=200).map(|i| (i, 1 + i / 50)).collect::<Vec<_>>();
    for through in [13, 14, 77, 150] {
        s.compact(LogIndex(through)).unwrap();
        drop(s);
        s = open(&dir);
        assert_eq!(log(&s), (through + 1, 200, want(through + 1)));
        assert_eq!(s.term(through), Ok(1 + through / 50));
    }
}

/// An I/O error that is not a full disk poisons the storage: every later write fails until it is
/// reopened, which finds only what was synced. The error is real and needs no privileges to
/// cause (so it happens as root too, as on CI): a directory stands where the next segment goes,
/// and renaming the new segment over it fails (`EISDIR`); the log undoes its write, the storage
/// still stops.
#[test]
fn writes_fail_after_an_io_error() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("raft");
    let mut s = open(&dir);
    s.append(&ents(1..=2, 1)).unwrap();
    s.sync().unwrap();
    let in_the_way = dir.join(bulwark_wal::segment_file_name(3));
    fs::create_dir(&in_the_way).unwrap();
    fs::write(in_the_way.join("keep"), b"not a segment").unwrap();
    // Big enough to need a new segment.
    let mut big = ent(3, 1);
    big.data = vec![1; SEGMENT_BYTES as usize].into();
    s.append(&[big]).unwrap();
    let err = s
        .sync()
        .expect_err("the new segment cannot be renamed into place");
    assert!(!err.is_disk_full(), "{err}");
    assert!(err.to_string().contains("rename"), "{err}");
    // The obstacle goes; the storage still refuses, as the node must stop and reopen.
    fs::remove_dir_all(&in_the_way).unwrap();
    assert!(matches!(s.sync(), Err(StorageError::Poisoned)));
    assert!(matches!(
        s.append(&[ent(4, 1)]),
        Err(StorageError::Poisoned)
    ));
    assert!(matches!(
        s.compact(LogIndex(1)),
        Err(StorageError::Poisoned)
    ));
    drop(s);
    assert_eq!(log(&open(&dir)), (1, 2, pairs(1..=2, 1)));
}

/// A failed fdatasync (the device could not write back what the log had written) poisons the
/// storage: the write looked done, the fsync says it may not be, and no retry can tell what the
/// file holds, so the node must stop. A power cut then finds what was synced before.
#[test]
fn a_failed_fsync_poisons_the_storage() {
    let mut h = Disk::new();
    h.s().append(&ents(1..=2, 1)).unwrap();
    h.s().set_hard_state(&hs(1, 1, 2));
    h.s().sync().unwrap();
    h.disk.fail_writes().unwrap();
    h.s().append(&ents(3..=4, 1)).unwrap();
    let err = h.s().sync().expect_err("the device fails the fdatasync");
    assert!(err.to_string().contains("fdatasync"), "{err}");
    assert!(
        !err.is_disk_full(),
        "a failed fsync is not a full disk to wait out: {err}"
    );
    h.disk.heal_writes().unwrap();
    assert!(matches!(h.s().sync(), Err(StorageError::Poisoned)));
    assert!(matches!(
        h.s().append(&ents(5..=5, 1)),
        Err(StorageError::Poisoned)
    ));
    h.crash();
    assert_eq!(log(h.s()), (1, 2, pairs(1..=2, 1)));
    assert_eq!(h.s().initial_state().unwrap().hard_state, hs(1, 1, 2));
}

// ------------------------------------------------------------------------------------------------------
// Model-based proptest: random operations and crashes on both storages against a plain model.
// ------------------------------------------------------------------------------------------------------

mod model {
    use super::*;
    use proptest::prelude::*;

    #[derive(Clone, Debug, Default, PartialEq)]
    struct State {
        compacted: (u64, u64),
        /// (index, term) after the compaction point.
        log: Vec<(u64, u64)>,
        hs: (u64, u64, u64),
        voters: Vec<u64>,
    }

    impl State {
        fn first(&self) -> u64 {
            self.compacted.0 + 1
        }
        fn last(&self) -> u64 {
            self.compacted.0 + self.log.len() as u64
        }
        fn term(&self, i: u64) -> u64 {
            if i == self.compacted.0 {
                self.compacted.1
            } else {
                self.log[(i - self.first()) as usize].1
            }
        }
    }

    #[derive(Clone, Debug, Default)]
    struct Model {
        cur: State,
        durable: State,
        /// The commit index last written with the rest of the hard state. A sync that moves
        /// the commit index alone may leave it on disk (it is written when it reaches the
        /// newest segment), so after a crash the commit lies between this and `durable`'s.
        commit_floor: u64,
        /// Set after a crash, until a hard state is set again: the commit is only bounded.
        commit_unsure: bool,
    }

    #[derive(Clone, Debug)]
    enum Op {
        /// Append `len` entries of `term` starting `back` entries before the end (clamped so that
        /// committed and compacted entries are never replaced, as raft guarantees).
        Append {
            back: u64,
            len: u64,
            term: u64,
        },
        /// Hard state with commit at `commit_pct` percent of the log.
        HardState {
            term: u64,
            vote: u64,
            commit_pct: u64,
        },
        ConfState {
            voters: Vec<u64>,
        },
        Sync,
        /// Compact through `pct` percent of the way from the compaction point to the commit index.
        Compact {
            pct: u64,
        },
        /// Install a snapshot `ahead` entries past the first index.
        Install {
            ahead: u64,
            term: u64,
        },
        Crash,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => (0u64..6, 1u64..6, 1u64..6).prop_map(|(back, len, term)| Op::Append { back, len, term }),
            3 => (1u64..6, 0u64..4, 0u64..=100).prop_map(|(term, vote, commit_pct)| Op::HardState { term, vote, commit_pct }),
            1 => proptest::collection::vec(1u64..6, 0..4).prop_map(|voters| Op::ConfState { voters }),
            4 => Just(Op::Sync),
            2 => (0u64..=100).prop_map(|pct| Op::Compact { pct }),
            1 => (0u64..15, 1u64..8).prop_map(|(ahead, term)| Op::Install { ahead, term }),
            2 => Just(Op::Crash),
        ]
    }

    fn check<S: RaftStorage>(s: &S, model: &Model, what: &str) {
        let m = &model.cur;
        let (first, last, got) = log(s);
        assert_eq!((first, last), (m.first(), m.last()), "{what}: bounds");
        assert_eq!(got, m.log, "{what}: log");
        assert_eq!(
            s.term(m.compacted.0),
            Ok(m.compacted.1),
            "{what}: term at compaction point"
        );
        if m.compacted.0 > 0 {
            assert_eq!(
                s.term(m.compacted.0 - 1),
                Err(store_err(raft::StorageError::Compacted))
            );
        }
        let st = s.initial_state().unwrap();
        let mut expected = hs(m.hs.0, m.hs.1, m.hs.2);
        if model.commit_unsure {
            let commit = st.hard_state.commit;
            assert!(
                (model.commit_floor..=m.hs.2).contains(&commit),
                "{what}: commit {commit} outside {}..={}",
                model.commit_floor,
                m.hs.2
            );
            expected.commit = commit;
        }
        assert_eq!(st.hard_state, expected, "{what}: hard state");
        assert_eq!(st.conf_state.voters, m.voters, "{what}: voters");
    }

    fn run<D: Harness<S = DiskRaftStorage>>(ops: Vec<Op>) {
        let mut model = Model::default();
        let mut mem = Mem::new();
        let mut disk = D::new();
        for (n, op) in ops.into_iter().enumerate() {
            let m = &mut model.cur;
            match op {
                Op::Append { back, len, term } => {
                    let lowest = m.first().max(m.hs.2 + 1);
                    let from = m.last().saturating_sub(back).max(lowest).min(m.last() + 1);
                    let new: Vec<Entry> = (from..from + len).map(|i| ent(i, term)).collect();
                    m.log.truncate((from - m.first()) as usize);
                    m.log.extend(new.iter().map(|e| (e.index, e.term)));
                    mem.s().append(&new).unwrap();
                    disk.s().append(&new).unwrap();
                }
                Op::HardState {
                    term,
                    vote,
                    commit_pct,
                } => {
                    // Commit never goes backwards or past the log (raft's rules).
                    let commit = m.hs.2.max(m.last() * commit_pct / 100);
                    m.hs = (term, vote, commit);
                    mem.s().set_hard_state(&hs(term, vote, commit));
                    disk.s().set_hard_state(&hs(term, vote, commit));
                    model.commit_unsure = false;
                }
                Op::ConfState { voters } => {
                    m.voters = voters.clone();
                    let cs = ConfState::from((voters, vec![]));
                    mem.s().set_conf_state(&cs);
                    disk.s().set_conf_state(&cs);
                }
                Op::Sync => {
                    let (d, c) = (&model.durable, &model.cur);
                    // A full write records the storage's own commit, which after a crash
                    // (until a hard state is set) is known only within the bounds.
                    let forced = (d.hs.0, d.hs.1, &d.voters) != (c.hs.0, c.hs.1, &c.voters);
                    if forced && !model.commit_unsure {
                        model.commit_floor = c.hs.2;
                    }
                    model.durable = model.cur.clone();
                    mem.s().sync().unwrap();
                    disk.s().sync().unwrap();
                }
                Op::Compact { pct } => {
                    let lo = m.compacted.0;
                    let through = lo + (m.hs.2.saturating_sub(lo)) * pct / 100;
                    if through > lo {
                        let term = m.term(through);
                        m.log.drain(..(through - lo) as usize);
                        m.compacted = (through, term);
                    }
                    model.durable = model.cur.clone();
                    mem.s().compact(LogIndex(through)).unwrap();
                    disk.s().compact(LogIndex(through)).unwrap();
                }
                Op::Install { ahead, term } => {
                    let index = m.first() + ahead;
                    let term = term.max(m.compacted.1);
                    m.log.clear();
                    m.compacted = (index, term);
                    m.hs = (m.hs.0.max(term), m.hs.1, index);
                    m.voters = vec![1, 2, 3];
                    model.commit_floor = index;
                    model.durable = model.cur.clone();
                    let md = meta(index, term, vec![1, 2, 3]);
                    mem.s().install_snapshot(&md).unwrap();
                    disk.s().install_snapshot(&md).unwrap();
                }
                Op::Crash => {
                    model.cur = model.durable.clone();
                    model.commit_unsure = true;
                    mem.crash();
                    disk.crash();
                }
            }
            let what = format!("after op {n}");
            check(mem.s(), &model, &format!("mem {what}"));
            check(disk.s(), &model, &format!("disk {what}"));
        }
        // Whatever happened, a final crash keeps the durable state.
        model.cur = model.durable.clone();
        model.commit_unsure = true;
        mem.crash();
        disk.crash();
        check(mem.s(), &model, "mem at the end");
        check(disk.s(), &model, "disk at the end");
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]
        #[test]
        fn random_operations_and_restarts_match_the_model(ops in proptest::collection::vec(op(), 1..60)) {
            run::<Reopen>(ops);
        }
    }

    proptest! {
        // Each power cut copies and remounts a file system: fewer cases.
        #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]
        #[test]
        fn random_operations_and_power_cuts_match_the_model(ops in proptest::collection::vec(op(), 1..60)) {
            run::<Disk>(ops);
        }
    }
}
