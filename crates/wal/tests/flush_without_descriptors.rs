//! A flush when the process has no file descriptor left: `Wal::write_unflushed` cannot open the
//! second handle its flush runs through, and syncs through the one it has instead of failing the
//! log. Its own test binary: it takes the process to its descriptor limit.

use std::fs::File;

use bulwark_wal::{Wal, WalOptions};

/// Lowers the soft descriptor limit to `limit` and opens files until no descriptor is left; the
/// files are returned so that the caller can give the descriptors back.
fn use_up_descriptors(limit: libc::rlim_t) -> Vec<File> {
    let mut rlimit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit read or write the struct we own.
    assert_eq!(
        unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rlimit) },
        0
    );
    rlimit.rlim_cur = limit;
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &rlimit) }, 0);
    let mut held = Vec::new();
    while let Ok(file) = File::open("/dev/null") {
        held.push(file);
        assert!(held.len() <= limit as usize, "the descriptor limit holds");
    }
    held
}

#[test]
fn a_flush_without_a_descriptor_to_spare_syncs_through_the_log_s_own_handle() {
    let dir = tempfile::tempdir().unwrap();
    let options = WalOptions {
        segment_bytes: 1 << 20,
        ..WalOptions::default()
    };
    let (mut wal, _) = Wal::open(dir.path(), options.clone()).unwrap();
    wal.append(b"one").unwrap();
    wal.sync().unwrap();
    wal.append(b"two").unwrap();

    let held = use_up_descriptors(64);
    let flush = wal
        .write_unflushed()
        .expect("a flush needs no descriptor of its own");
    assert!(!flush.is_pending(), "synced through the log's own handle");
    assert_eq!(wal.durable_last_index(), 2, "durable at once");
    wal.finish_flush(flush, Ok(())).unwrap();
    drop(held);

    wal.append(b"three").unwrap();
    let flush = wal.write_unflushed().unwrap();
    assert!(
        flush.is_pending(),
        "with descriptors back, the flush is separate again"
    );
    let flushed = flush.run();
    wal.finish_flush(flush, flushed).unwrap();
    drop(wal);
    let (wal, _) = Wal::open(dir.path(), options).unwrap();
    let records: Vec<_> = wal
        .read_from(wal.first_index())
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let payloads: Vec<&[u8]> = records.iter().map(|(_, p)| p.as_slice()).collect();
    assert_eq!(payloads, [&b"one"[..], b"two", b"three"]);
}
