//! A write-ahead log on a really full disk: a small tmpfs is mounted (the tests run as root, as
//! CI does; a failed mount fails the test with the reason) and filled with a filler file. A sync
//! that meets the full disk must leave the log exactly as before it (same files and lengths, the
//! records still buffered), say it was a full disk, and succeed once the filler is deleted.

use std::fs;
use std::path::{Path, PathBuf};

use bulwark_tmpfs::{fill, fill_leaving, Tmpfs};
use bulwark_wal::{segment_file_name, Wal, WalOptions};

/// Syncs after the filler was deleted. A tmpfs may refuse a write for a moment after a file was
/// deleted (Linux 6.18, the tests running in parallel: ENOSPC while `df` showed the space free,
/// and the next attempt 20 ms later succeeded); a node retries a disk-full sync the same way
/// (`DISK_FULL_RETRY`). Anything but a full disk, or one that lasts a second, fails.
fn sync_once_space_is_back(wal: &mut Wal) {
    for attempt in 1..=50 {
        match wal.sync() {
            Ok(()) => return,
            Err(e) if e.is_disk_full() && attempt < 50 => {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(e) => panic!("space is back, yet the sync failed: {e}"),
        }
    }
}

/// A tmpfs of `bytes` (the tests run as root, as CI does) and the log directory in it.
fn mount(bytes: u64) -> (Tmpfs, PathBuf) {
    let fs_ = Tmpfs::mount_temp("bulwark-wal-tmpfs", bytes)
        .expect("mount a tmpfs (needs root, as CI has)");
    let dir = fs_.path().join("wal");
    (fs_, dir)
}

fn payload(i: u64, len: usize) -> Vec<u8> {
    (0..len).map(|j| (i as usize * 7 + j) as u8).collect()
}

/// Every file in `dir` with its length, sorted by name.
fn files(dir: &Path) -> Vec<(String, u64)> {
    let mut v: Vec<(String, u64)> = fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().into_string().unwrap(),
                e.metadata().unwrap().len(),
            )
        })
        .collect();
    v.sort();
    v
}

fn read_all(wal: &Wal, from: u64) -> Vec<(u64, Vec<u8>)> {
    wal.read_from(from)
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap()
}

#[test]
fn a_sync_on_a_full_disk_is_undone_and_succeeds_once_space_is_freed() {
    let (fs_, dir) = mount(1 << 20);
    let (mut wal, _) = Wal::open(&dir, WalOptions::default()).unwrap();
    for i in 1..=5 {
        wal.append(&payload(i, 1000)).unwrap();
    }
    wal.sync().unwrap();
    let before = files(&dir);
    let filler = fill(fs_.path()).expect("fill the disk").0;

    for i in 6..=40 {
        wal.append(&payload(i, 4000)).unwrap();
    }
    let err = wal.sync().expect_err("the disk is full");
    assert!(err.is_disk_full(), "{err}");
    assert!(err.to_string().contains("No space left"), "{err}");
    assert_eq!(files(&dir), before, "the failed sync left something behind");
    assert!(!wal.is_poisoned());
    assert_eq!(wal.last_index(), 40, "the records stay buffered");
    assert_eq!(wal.durable_last_index(), 5);
    assert_eq!(read_all(&wal, 1).len(), 40);

    // Still full: the retry fails the same way and still changes nothing.
    let err = wal.sync().expect_err("still full");
    assert!(err.is_disk_full(), "{err}");
    assert_eq!(files(&dir), before);

    // Reopened now, the log holds exactly the durable records.
    {
        let (other, recovery) = Wal::open(&dir, WalOptions::default()).unwrap();
        assert_eq!(recovery.last_index, 5);
        assert!(recovery.torn_tail.is_none());
        drop(other);
    }

    fs::remove_file(filler).unwrap();
    sync_once_space_is_back(&mut wal);
    assert_eq!(wal.durable_last_index(), 40);
    drop(wal);
    let (wal, recovery) = Wal::open(&dir, WalOptions::default()).unwrap();
    assert_eq!(recovery.last_index, 40);
    let records = read_all(&wal, 1);
    for (i, (index, data)) in records.iter().enumerate() {
        let i = i as u64 + 1;
        assert_eq!(*index, i);
        assert_eq!(*data, payload(i, if i <= 5 { 1000 } else { 4000 }));
    }
}

#[test]
fn a_failed_segment_creation_removes_its_temp_file_and_the_records_can_be_discarded() {
    let (fs_, dir) = mount(1 << 20);
    // Small segments: the next sync rolls over into several new segments.
    let opts = WalOptions {
        segment_bytes: 16 << 10,
        ..WalOptions::default()
    };
    let (mut wal, _) = Wal::open(&dir, opts.clone()).unwrap();
    for i in 1..=3 {
        wal.append(&payload(i, 1000)).unwrap();
    }
    wal.sync().unwrap();
    let before = files(&dir);
    let filler = fill(fs_.path()).expect("fill the disk").0;
    for i in 4..=60 {
        wal.append(&payload(i, 3000)).unwrap();
    }
    assert!(wal.segment_count() > 2);
    let err = wal.sync().expect_err("the disk is full");
    assert!(err.is_disk_full(), "{err}");
    assert_eq!(
        files(&dir),
        before,
        "no new segment and no temp file may remain"
    );

    // The caller gives the records up: the log continues after the durable ones.
    wal.discard_unsynced();
    assert_eq!(wal.last_index(), 3);
    assert_eq!(wal.segment_count(), 1);
    fs::remove_file(filler).unwrap();
    for i in 4..=10 {
        assert_eq!(wal.append(&payload(i + 100, 3000)).unwrap(), i);
    }
    sync_once_space_is_back(&mut wal);
    drop(wal);
    let (wal, recovery) = Wal::open(&dir, opts).unwrap();
    assert_eq!(recovery.last_index, 10);
    let records = read_all(&wal, 1);
    assert_eq!(records[3], (4, payload(104, 3000)));
    assert_eq!(records[9], (10, payload(110, 3000)));
}

#[test]
fn a_sync_that_fills_the_active_segment_but_cannot_create_the_next_is_undone_whole() {
    let (fs_, dir) = mount(1 << 20);
    let opts = WalOptions {
        segment_bytes: 64 << 10,
        ..WalOptions::default()
    };
    let (mut wal, _) = Wal::open(&dir, opts.clone()).unwrap();
    wal.append(&payload(1, 100)).unwrap();
    wal.sync().unwrap();
    let segment = dir.join(segment_file_name(1));
    let durable_len = fs::metadata(&segment).unwrap().len();
    // Leave exactly 16 KiB free: room for the small part that goes into the active segment, not
    // for the 48 KiB record that starts the next one.
    let filler = fill_leaving(fs_.path(), 16 << 10).expect("fill the disk").0;

    wal.append(&payload(2, 2000)).unwrap();
    wal.append(&payload(3, 62 << 10)).unwrap();
    assert_eq!(wal.segment_count(), 2, "record 3 starts a new segment");
    let err = wal.sync().expect_err("no room for the new segment");
    assert!(err.is_disk_full(), "{err}");
    assert_eq!(
        fs::metadata(&segment).unwrap().len(),
        durable_len,
        "record 2 was written and synced into the active segment, then cut again"
    );
    assert_eq!(files(&dir), vec![(segment_file_name(1), durable_len)]);
    assert_eq!(wal.durable_last_index(), 1);
    assert_eq!(wal.last_index(), 3);

    fs::remove_file(filler).unwrap();
    sync_once_space_is_back(&mut wal);
    drop(wal);
    let (wal, recovery) = Wal::open(&dir, opts).unwrap();
    assert_eq!(recovery.last_index, 3);
    assert_eq!(read_all(&wal, 2)[1], (3, payload(3, 62 << 10)));
}

/// Zero-filling ahead is an optimization: a full disk that stops it does not fail the sync
/// whose records fit, and whatever part of the zeros got written is padding to recovery.
#[test]
fn a_zero_fill_that_meets_a_full_disk_does_not_fail_the_sync() {
    let (fs_, dir) = mount(1 << 20);
    let (mut wal, _) = Wal::open(&dir, WalOptions::default()).unwrap();
    wal.append(&payload(1, 100)).unwrap();
    wal.sync().unwrap();
    // Room for the records of the next sync, not for the 1 MiB of zeros after them.
    let filler = fill_leaving(fs_.path(), 64 << 10).expect("fill the disk").0;
    for i in 2..=5 {
        wal.append(&payload(i, 2000)).unwrap();
    }
    wal.sync()
        .expect("the records fit; the zeros after them do not");
    assert_eq!(wal.durable_last_index(), 5);
    drop(wal);
    let (wal, recovery) = Wal::open(&dir, WalOptions::default()).unwrap();
    assert_eq!((recovery.last_index, recovery.torn_tail), (5, None));
    assert_eq!(read_all(&wal, 5), vec![(5, payload(5, 2000))]);
    fs::remove_file(filler).unwrap();
}

/// The zero-filled stretch is disk space the log already holds: once the disk is full, syncs
/// that fit in it still succeed.
#[test]
fn a_zero_filled_log_keeps_taking_records_on_a_full_disk() {
    let (fs_, dir) = mount(4 << 20);
    let (mut wal, _) = Wal::open(&dir, WalOptions::default()).unwrap();
    for i in 1..=2 {
        wal.append(&payload(i, 100)).unwrap();
        wal.sync().unwrap(); // the first creates the segment, the second zero-fills ahead
    }
    let segment = dir.join(segment_file_name(1));
    assert!(fs::metadata(&segment).unwrap().len() > 1 << 20);
    let _filler = fill(fs_.path()).expect("fill the disk").0;
    for i in 3..=100 {
        wal.append(&payload(i, 8000)).unwrap();
        wal.sync()
            .expect("the records go into the zero-filled stretch");
    }
    drop(wal);
    let (wal, recovery) = Wal::open(&dir, WalOptions::default()).unwrap();
    assert_eq!((recovery.last_index, recovery.torn_tail), (100, None));
    assert_eq!(read_all(&wal, 100), vec![(100, payload(100, 8000))]);
}
