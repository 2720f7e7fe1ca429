//! A sync in two halves (`Wal::write_unflushed`, `WalFlush::run`, `Wal::finish_flush`): the node
//! applies committed entries while the device flushes, and counts nothing durable before the
//! flush's outcome is in.

use bulwark_wal::{Wal, WalError, WalOptions};

fn opts(segment_bytes: u64) -> WalOptions {
    WalOptions {
        segment_bytes,
        ..WalOptions::default()
    }
}

fn records(wal: &Wal) -> Vec<(u64, Vec<u8>)> {
    wal.read_from(wal.first_index())
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap()
}

/// A log whose first record, "one", is durable: its segment exists, so later records can flush.
fn log_with_one_record() -> (tempfile::TempDir, Wal) {
    let dir = tempfile::tempdir().unwrap();
    let (mut wal, _) = Wal::open(dir.path(), opts(1 << 20)).unwrap();
    wal.append(b"one").unwrap();
    wal.sync().unwrap();
    (dir, wal)
}

#[test]
fn records_flushed_on_another_thread_are_durable_only_once_the_outcome_is_in() {
    let (dir, mut wal) = log_with_one_record();
    wal.append(b"two").unwrap();
    wal.append(b"three").unwrap();
    let flush = wal.write_unflushed().unwrap();
    assert!(flush.is_pending());
    assert_eq!(wal.durable_last_index(), 1, "not durable before the flush");
    let flushed = std::thread::scope(|s| s.spawn(|| flush.run()).join().unwrap());
    assert_eq!(wal.durable_last_index(), 1, "nor before its outcome is in");
    wal.finish_flush(flush, flushed).unwrap();
    assert_eq!(wal.durable_last_index(), 3);
    // The log goes on as after any sync.
    wal.append(b"four").unwrap();
    wal.sync().unwrap();
    drop(wal);
    let (wal, recovery) = Wal::open(dir.path(), opts(1 << 20)).unwrap();
    assert_eq!((recovery.last_index, recovery.torn_tail), (4, None));
    let payloads: Vec<Vec<u8>> = records(&wal).into_iter().map(|(_, p)| p).collect();
    assert_eq!(payloads, [&b"one"[..], b"two", b"three", b"four"]);
}

#[test]
fn a_failed_flush_poisons_the_log() {
    let (_dir, mut wal) = log_with_one_record();
    wal.append(b"two").unwrap();
    let flush = wal.write_unflushed().unwrap();
    assert!(flush.is_pending());
    let err = wal
        .finish_flush(flush, Err(WalError::Poisoned))
        .unwrap_err();
    assert!(matches!(err, WalError::Poisoned));
    assert_eq!(wal.durable_last_index(), 1, "nothing more counted durable");
    assert!(wal.is_poisoned());
    assert!(matches!(wal.append(b"three"), Err(WalError::Poisoned)));
}

#[test]
fn a_write_that_starts_a_segment_is_synced_at_once() {
    // (The first record of a log starts its first segment.)
    let dir = tempfile::tempdir().unwrap();
    let (mut wal, _) = Wal::open(dir.path(), opts(300)).unwrap();
    for _ in 0..5 {
        wal.append(&[7u8; 100]).unwrap();
    }
    assert!(wal.segment_count() > 1, "the records roll over");
    let flush = wal.write_unflushed().unwrap();
    assert!(!flush.is_pending(), "nothing left to flush");
    assert_eq!(wal.durable_last_index(), 5);
    wal.finish_flush(flush, Ok(())).unwrap();
    assert_eq!(wal.durable_last_index(), 5);
}

#[test]
#[should_panic(expected = "the log changed while a flush is outstanding")]
fn nothing_is_appended_while_a_flush_is_outstanding() {
    let (_dir, mut wal) = log_with_one_record();
    wal.append(b"two").unwrap();
    let _flush = wal.write_unflushed().unwrap();
    let _ = wal.append(b"three");
}
