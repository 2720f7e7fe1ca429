//! [`DiskRaftStorage`] on a really full disk: a small tmpfs (the tests run as root, as CI
//! does; a failed mount fails the test) filled with a filler file.

use bulwark_tmpfs::{fill, Tmpfs};
use raft::Storage as _;

use super::test_support::{all_entries, hard_state};
use super::*;

fn mount() -> Tmpfs {
    Tmpfs::mount_temp("bulwark-raft-tmpfs", 2 << 20).expect("mount a tmpfs (needs root, as CI has)")
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
        .expect("nothing is left to write: a commit index alone is not");
    {
        // What a restart would find: the commit index alone moved (within the one segment), so
        // the durable one is still the last written (`must_write_over`).
        drop(s);
        let (again, recovered) = DiskRaftStorage::open(&dir, 64 << 20).unwrap();
        assert_eq!(recovered.last_index, 5);
        assert_eq!(again.initial_state().unwrap().hard_state, hard_state(1, 3));
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
    s.compact(LogIndex(2)).unwrap();
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

/// A snapshot install that found no space holds its Ready as a full disk does; one still
/// downloading or failed otherwise does not make the node disk-full.
#[test]
fn only_an_install_without_space_counts_as_a_full_disk() {
    let install = |source| StorageError::SnapshotInstall { index: 7, source };
    let no_space = std::io::Error::from_raw_os_error(28);
    assert!(install(SnapshotInstallError::DiskFull(no_space.into())).is_disk_full());
    assert!(!install(SnapshotInstallError::Pending).is_disk_full());
    assert!(!install(SnapshotInstallError::from("gone".to_string())).is_disk_full());
    assert_eq!(
        install(SnapshotInstallError::Pending).to_string(),
        "installing the snapshot at index 7 failed: the snapshot is still being fetched"
    );
}
