//! The faults [`MemRaftStorage`] plays for the simulation: a full disk undone as on disk
//! (the same steps as `disk_full_tests`), and power losses inside a Ready's writes.

use raft::Storage as _;

use super::test_support::{all_entries, hard_state};
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
        .expect("nothing is left to write: a commit index alone is not");
    s.crash();
    assert_eq!(s.initial_state().unwrap().hard_state, hard_state(1, 3));

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
    s.compact(LogIndex(2)).unwrap();
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

#[test]
fn a_crash_inside_a_compaction_keeps_the_log_before_or_after_it() {
    let mut s = synced(1..=9, 9);
    s.append(&entries(10..=11, 1)).unwrap();
    s.crash_at(Some(CrashPoint::BeforeCompaction));
    assert!(s.compact(LogIndex(6)).is_err());
    s.crash();
    // The sync the compaction does first is durable; the compaction is not.
    assert_eq!((s.first_index().unwrap(), s.last_index().unwrap()), (1, 11));
    s.crash_at(Some(CrashPoint::AfterCompaction));
    assert!(s.compact(LogIndex(6)).is_err());
    s.crash();
    assert_eq!((s.first_index().unwrap(), s.last_index().unwrap()), (7, 11));
    assert_eq!(s.term(6).unwrap(), 1);
    // A compaction with nothing to drop reaches no crash point.
    s.crash_at(Some(CrashPoint::BeforeCompaction));
    s.compact(LogIndex(3)).unwrap();
}
