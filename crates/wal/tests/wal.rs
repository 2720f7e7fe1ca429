//! Behaviour of the write-ahead log that the node relies on: durability across reopen, segment rollover,
//! compaction, Raft suffix truncation, and the recovery rules (torn tail cut, corruption refused).

use std::fs::{self, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use bulwark_wal::{
    segment_file_name, BadRecord, Corruption, HeaderError, Wal, WalError, WalOptions,
    RECORD_HEADER_LEN, SEGMENT_HEADER_LEN,
};

/// Options as the node uses them (zero-filling ahead on), with `segment_bytes`.
fn opts(segment_bytes: u64) -> WalOptions {
    WalOptions {
        segment_bytes,
        ..WalOptions::default()
    }
}

fn payload(i: u64, len: usize) -> Vec<u8> {
    (0..len).map(|j| (i as usize * 31 + j) as u8).collect()
}

fn read_all(wal: &Wal, from: u64) -> Vec<(u64, Vec<u8>)> {
    wal.read_from(from)
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap()
}

fn seg_path(dir: &Path, first: u64) -> PathBuf {
    dir.join(segment_file_name(first))
}

fn segment_files(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    v.sort();
    v
}

/// Byte offset of the record at position `k` (0-based) in a segment whose records have the given lengths.
fn record_offset(lens: &[usize], k: usize) -> u64 {
    SEGMENT_HEADER_LEN
        + lens[..k]
            .iter()
            .map(|&l| RECORD_HEADER_LEN + l as u64)
            .sum::<u64>()
}

fn flip_byte(path: &Path, offset: u64) {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, offset).unwrap();
    b[0] ^= 0x40;
    f.write_all_at(&b, offset).unwrap();
}

fn file_len(path: &Path) -> u64 {
    fs::metadata(path).unwrap().len()
}

fn expect_corrupt(dir: &Path, file: &Path, offset: u64) -> (String, Corruption) {
    let err = Wal::open(dir, opts(1 << 20)).expect_err("open must refuse a corrupt log");
    let msg = err.to_string();
    let reason = match err {
        WalError::Corrupt {
            file: f,
            offset: o,
            reason,
        } => {
            assert_eq!(f, file, "{msg}");
            assert_eq!(o, offset, "{msg}");
            reason
        }
        other => panic!("expected Corrupt, got {other:?}"),
    };
    assert!(msg.contains(&file.display().to_string()), "{msg}");
    assert!(msg.contains(&format!("at offset {offset}")), "{msg}");
    (msg, reason)
}

/// A log of `n` records of `len` bytes each, synced, in one segment; returns the dir.
/// Records 1..=20 of 100 bytes in 1000-byte segments 1, 9 and 17; synced once at the end, or
/// after each record (`sync_each`: every sync but a segment's first zero-fills it ahead).
fn three_segments(sync_each: bool) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let (mut wal, _) = Wal::open(dir.path(), opts(1000)).unwrap();
    for i in 1..=20u64 {
        wal.append(&payload(i, 100)).unwrap();
        if sync_each {
            wal.sync().unwrap();
        }
    }
    wal.sync().unwrap();
    dir
}

fn write_log(n: u64, len: usize) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let (mut wal, _) = Wal::open(dir.path(), opts(1 << 20)).unwrap();
    for i in 1..=n {
        assert_eq!(wal.append(&payload(i, len)).unwrap(), i);
    }
    wal.sync().unwrap();
    dir
}

#[test]
fn round_trip_with_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wal");
    let (mut wal, rec) = Wal::open(&path, WalOptions::default()).unwrap();
    assert_eq!(
        (rec.first_index, rec.last_index, rec.torn_tail),
        (1, 0, None)
    );
    assert_eq!((wal.first_index(), wal.last_index()), (1, 0));
    let mut expected = Vec::new();
    for i in 1..=200u64 {
        let p = payload(i, (i as usize * 7) % 300);
        assert_eq!(wal.append(&p).unwrap(), i);
        expected.push((i, p));
        if i % 50 == 0 {
            wal.sync().unwrap();
        }
    }
    wal.append(b"").unwrap();
    expected.push((201, Vec::new()));
    wal.sync().unwrap();
    assert_eq!(read_all(&wal, 1), expected);
    assert_eq!(read_all(&wal, 150), expected[149..].to_vec());
    assert_eq!(read_all(&wal, 202), vec![]);
    drop(wal);

    let (mut wal, rec) = Wal::open(&path, WalOptions::default()).unwrap();
    assert_eq!(
        (rec.first_index, rec.last_index, rec.torn_tail),
        (1, 201, None)
    );
    assert_eq!(read_all(&wal, 1), expected);
    assert_eq!(wal.append(b"next").unwrap(), 202);
    assert!(matches!(
        wal.read_from(0).err(),
        Some(WalError::OutOfRange { .. })
    ));
    assert!(matches!(
        wal.read_from(204).err(),
        Some(WalError::OutOfRange { .. })
    ));
}

#[test]
fn buffered_records_are_readable_but_not_durable_until_sync() {
    let dir = tempfile::tempdir().unwrap();
    let (mut wal, _) = Wal::open(dir.path(), opts(1 << 20)).unwrap();
    wal.append(b"one").unwrap();
    wal.append(b"two").unwrap();
    wal.sync().unwrap();
    wal.append(b"three").unwrap();
    assert_eq!(wal.last_index(), 3);
    assert_eq!(
        read_all(&wal, 2),
        vec![(2, b"two".to_vec()), (3, b"three".to_vec())]
    );
    drop(wal); // a crash before sync: record 3 was never acknowledged
    let (wal, rec) = Wal::open(dir.path(), opts(1 << 20)).unwrap();
    assert_eq!((rec.last_index, rec.torn_tail), (2, None));
    assert_eq!(wal.last_index(), 2);
}

#[test]
fn segment_rollover_and_reading_across_segments() {
    let dir = tempfile::tempdir().unwrap();
    let seg = 1000;
    let (mut wal, _) = Wal::open(dir.path(), opts(seg)).unwrap();
    let mut expected = Vec::new();
    for i in 1..=40u64 {
        let p = payload(i, 100);
        wal.append(&p).unwrap();
        expected.push((i, p));
        if i % 7 == 0 {
            wal.sync().unwrap();
        }
    }
    // A record larger than a segment goes in alone.
    let big = payload(41, 3000);
    assert_eq!(wal.append(&big).unwrap(), 41);
    expected.push((41, big));
    wal.append(b"after big").unwrap();
    expected.push((42, b"after big".to_vec()));
    wal.sync().unwrap();

    // 116-byte records, 20-byte header: 8 records per 1000-byte segment.
    let mut names: Vec<String> = (0..5).map(|k| segment_file_name(1 + 8 * k)).collect();
    names.push(segment_file_name(41));
    names.push(segment_file_name(42));
    assert_eq!(segment_files(dir.path()), names);
    assert_eq!(wal.segment_count(), 7);
    for name in &names[..5] {
        assert!(file_len(&dir.path().join(name)) <= seg);
    }
    // size_bytes counts headers and records; the files are longer by their zero-filled ends.
    let records: u64 = expected
        .iter()
        .map(|(_, p)| RECORD_HEADER_LEN + p.len() as u64)
        .sum();
    assert_eq!(
        wal.size_bytes(),
        names.len() as u64 * SEGMENT_HEADER_LEN + records
    );
    let total: u64 = names.iter().map(|n| file_len(&dir.path().join(n))).sum();
    assert!(
        total > wal.size_bytes(),
        "the segments are zero-filled ahead"
    );
    assert_eq!(read_all(&wal, 1), expected);
    assert_eq!(read_all(&wal, 15), expected[14..].to_vec());
    drop(wal);

    let (wal, rec) = Wal::open(dir.path(), opts(seg)).unwrap();
    assert_eq!((rec.first_index, rec.last_index), (1, 42));
    assert_eq!(wal.segment_count(), 7);
    assert_eq!(read_all(&wal, 1), expected);
    assert_eq!(read_all(&wal, 40), expected[39..].to_vec());
}

#[test]
fn truncate_prefix_removes_old_segments_and_reopen_keeps_first_index() {
    let dir = tempfile::tempdir().unwrap();
    let (mut wal, _) = Wal::open(dir.path(), opts(1000)).unwrap();
    for i in 1..=40u64 {
        wal.append(&payload(i, 100)).unwrap(); // 8 records per segment: 1, 9, 17, 25, 33
    }
    wal.sync().unwrap();
    assert_eq!(wal.segment_count(), 5);

    wal.truncate_prefix(12).unwrap(); // only segment 1..=8 is entirely <= 12
    assert_eq!(wal.first_index(), 9);
    assert_eq!(wal.segment_count(), 4);
    assert!(!seg_path(dir.path(), 1).exists());
    wal.truncate_prefix(24).unwrap(); // 9..=16 and 17..=24
    assert_eq!(wal.first_index(), 25);
    assert_eq!(wal.segment_count(), 2);
    assert!(matches!(
        wal.read_from(24).err(),
        Some(WalError::OutOfRange { .. })
    ));
    assert_eq!(read_all(&wal, 25).len(), 16);
    drop(wal);

    let (mut wal, rec) = Wal::open(dir.path(), opts(1000)).unwrap();
    assert_eq!((rec.first_index, rec.last_index), (25, 40));
    assert_eq!(read_all(&wal, 25)[0], (25, payload(25, 100)));
    assert_eq!(wal.append(b"x").unwrap(), 41);
    wal.sync().unwrap();

    // Compacting past the end leaves an empty log that remembers the next index.
    wal.truncate_prefix(100).unwrap();
    assert_eq!((wal.first_index(), wal.last_index()), (101, 100));
    assert_eq!(segment_files(dir.path()), vec![segment_file_name(101)]);
    drop(wal);
    let (mut wal, rec) = Wal::open(dir.path(), opts(1000)).unwrap();
    assert_eq!((rec.first_index, rec.last_index), (101, 100));
    assert_eq!(wal.append(b"y").unwrap(), 101);
    wal.sync().unwrap();
    assert_eq!(read_all(&wal, 101), vec![(101, b"y".to_vec())]);
}

#[test]
fn truncate_prefix_syncs_buffered_records_first() {
    let dir = tempfile::tempdir().unwrap();
    let (mut wal, _) = Wal::open(dir.path(), opts(1000)).unwrap();
    for i in 1..=20u64 {
        wal.append(&payload(i, 100)).unwrap();
    }
    wal.truncate_prefix(8).unwrap();
    assert_eq!(wal.first_index(), 9);
    drop(wal);
    let (_, rec) = Wal::open(dir.path(), opts(1000)).unwrap();
    assert_eq!((rec.first_index, rec.last_index), (9, 20));
}

#[test]
fn reset_next_index_only_when_empty_and_durable() {
    let dir = tempfile::tempdir().unwrap();
    let (mut wal, _) = Wal::open(dir.path(), opts(1000)).unwrap();
    assert!(matches!(
        wal.reset_next_index(0),
        Err(WalError::InvalidIndex(0))
    ));
    wal.reset_next_index(500).unwrap();
    assert_eq!((wal.first_index(), wal.last_index()), (500, 499));
    drop(wal);
    let (mut wal, rec) = Wal::open(dir.path(), opts(1000)).unwrap();
    assert_eq!((rec.first_index, rec.last_index), (500, 499));
    assert_eq!(wal.append(b"a").unwrap(), 500);
    assert!(matches!(
        wal.reset_next_index(7),
        Err(WalError::NotEmpty {
            first: 500,
            last: 500
        })
    ));
    wal.sync().unwrap();
    assert!(matches!(
        wal.reset_next_index(7),
        Err(WalError::NotEmpty { .. })
    ));
    assert_eq!(read_all(&wal, 500), vec![(500, b"a".to_vec())]);
}

#[test]
fn truncate_suffix_then_append_continues_at_the_right_index() {
    let dir = tempfile::tempdir().unwrap();
    let (mut wal, _) = Wal::open(dir.path(), opts(1000)).unwrap();
    for i in 1..=5u64 {
        wal.append(&payload(i, 100)).unwrap();
    }
    wal.sync().unwrap();
    wal.truncate_suffix(4).unwrap();
    assert_eq!(wal.last_index(), 3);
    assert_eq!(wal.append(b"new4").unwrap(), 4);
    wal.sync().unwrap();
    drop(wal);

    let (mut wal, rec) = Wal::open(dir.path(), opts(1000)).unwrap();
    assert_eq!((rec.last_index, rec.torn_tail), (4, None));
    let got = read_all(&wal, 1);
    assert_eq!(got[2], (3, payload(3, 100)));
    assert_eq!(got[3], (4, b"new4".to_vec()));

    // Buffered-only truncation.
    wal.append(b"5").unwrap();
    wal.append(b"6").unwrap();
    wal.truncate_suffix(6).unwrap();
    assert_eq!(wal.append(b"6'").unwrap(), 6);
    wal.sync().unwrap();
    assert_eq!(
        read_all(&wal, 5),
        vec![(5, b"5".to_vec()), (6, b"6'".to_vec())]
    );
    assert!(matches!(
        wal.truncate_suffix(8),
        Err(WalError::OutOfRange { .. })
    ));
    wal.truncate_suffix(7).unwrap(); // no-op
    assert_eq!(wal.last_index(), 6);
}

#[test]
fn truncate_suffix_across_segment_boundary() {
    let dir = tempfile::tempdir().unwrap();
    let (mut wal, _) = Wal::open(dir.path(), opts(1000)).unwrap();
    for i in 1..=30u64 {
        wal.append(&payload(i, 100)).unwrap(); // segments 1, 9, 17, 25
    }
    wal.sync().unwrap();
    wal.append(b"buffered").unwrap();
    wal.truncate_suffix(12).unwrap(); // crosses into the second segment
    assert_eq!(wal.last_index(), 11);
    assert_eq!(
        segment_files(dir.path()),
        vec![segment_file_name(1), segment_file_name(9)]
    );
    let mut expected: Vec<(u64, Vec<u8>)> = (1..=11).map(|i| (i, payload(i, 100))).collect();
    for i in 12..=20u64 {
        let p = payload(i + 1000, 100);
        assert_eq!(wal.append(&p).unwrap(), i);
        expected.push((i, p));
    }
    wal.sync().unwrap();
    assert_eq!(read_all(&wal, 1), expected);
    drop(wal);

    let (mut wal, rec) = Wal::open(dir.path(), opts(1000)).unwrap();
    assert_eq!(
        (rec.first_index, rec.last_index, rec.torn_tail),
        (1, 20, None)
    );
    assert_eq!(read_all(&wal, 1), expected);

    // Truncating exactly at a segment's first index, then everything.
    wal.truncate_suffix(17).unwrap();
    assert_eq!(wal.last_index(), 16);
    assert_eq!(wal.append(b"17").unwrap(), 17);
    wal.sync().unwrap();
    wal.truncate_suffix(1).unwrap();
    assert_eq!((wal.first_index(), wal.last_index()), (1, 0));
    drop(wal);
    let (mut wal, rec) = Wal::open(dir.path(), opts(1000)).unwrap();
    assert_eq!((rec.first_index, rec.last_index), (1, 0));
    assert_eq!(wal.append(b"again").unwrap(), 1);
}

fn torn_tail_case(cut_into_last: impl Fn(u64, u64) -> u64) {
    // Records 1..=4, 50 bytes each; the last one starts at `last_off`.
    let dir = write_log(4, 50);
    let path = seg_path(dir.path(), 1);
    let lens = [50usize; 4];
    let last_off = record_offset(&lens, 3);
    let end = file_len(&path);
    let cut = cut_into_last(last_off, end);
    OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(cut)
        .unwrap();

    let (mut wal, rec) = Wal::open(dir.path(), opts(1 << 20)).unwrap();
    let torn = rec.torn_tail.expect("torn tail must be reported");
    assert_eq!(torn.file, path);
    assert_eq!(torn.offset, last_off);
    assert_eq!(torn.bytes_cut, cut - last_off);
    assert_eq!(file_len(&path), last_off);
    assert_eq!((rec.first_index, rec.last_index), (1, 3));
    let expected: Vec<_> = (1..=3).map(|i| (i, payload(i, 50))).collect();
    assert_eq!(read_all(&wal, 1), expected);
    assert_eq!(wal.append(b"4 again").unwrap(), 4);
    wal.sync().unwrap();
    drop(wal);
    let (_, rec) = Wal::open(dir.path(), opts(1 << 20)).unwrap();
    assert_eq!((rec.last_index, rec.torn_tail), (4, None));
}

/// A record the caller says was durable and promised (`keep_through`, the Raft log's durable
/// commit) is never cut as a torn tail: a damaged one refuses the open and leaves the file alone.
#[test]
fn a_damaged_last_record_that_was_promised_is_refused_not_cut() {
    let dir = write_log(4, 50);
    let path = seg_path(dir.path(), 1);
    let last_off = record_offset(&[50usize; 4], 3);
    let cut = file_len(&path) - 7;
    OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(cut)
        .unwrap();
    let promised = WalOptions {
        keep_through: 4,
        ..opts(1 << 20)
    };
    match Wal::open(dir.path(), promised) {
        Err(e) => {
            let text = e.to_string();
            assert!(
                text.contains(&format!("offset {last_off}")) && text.contains("not a torn write"),
                "{text}"
            );
        }
        Ok(_) => panic!("a promised record was cut as a torn tail"),
    }
    assert_eq!(
        file_len(&path),
        cut,
        "the refused open left the file as it was"
    );
    // Promised only up to 3: record 4 may be torn, and is cut.
    let (_, rec) = Wal::open(
        dir.path(),
        WalOptions {
            keep_through: 3,
            ..opts(1 << 20)
        },
    )
    .unwrap();
    assert_eq!(rec.last_index, 3);
}

#[test]
fn torn_tail_inside_record_header_is_cut() {
    torn_tail_case(|last_off, _| last_off + 9);
}

#[test]
fn torn_tail_inside_payload_is_cut() {
    torn_tail_case(|last_off, _| last_off + RECORD_HEADER_LEN + 20);
}

#[test]
fn torn_tail_of_one_byte_is_cut() {
    torn_tail_case(|_, end| end - 1);
}

#[test]
fn torn_tail_of_last_of_several_segments_is_cut() {
    let dir = three_segments(false);
    let path = seg_path(dir.path(), 17);
    let off = record_offset(&[100; 4], 3); // record 20
    OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(off + 50)
        .unwrap();
    let (wal, rec) = Wal::open(dir.path(), opts(1000)).unwrap();
    let torn = rec.torn_tail.unwrap();
    assert_eq!((torn.file, torn.offset, torn.bytes_cut), (path, off, 50));
    assert_eq!((rec.first_index, rec.last_index), (1, 19));
    let expected: Vec<_> = (1..=19).map(|i| (i, payload(i, 100))).collect();
    assert_eq!(read_all(&wal, 1), expected);
}

#[test]
fn final_record_with_bad_checksum_at_eof_is_cut() {
    let dir = write_log(4, 50);
    let path = seg_path(dir.path(), 1);
    let last_off = record_offset(&[50; 4], 3);
    flip_byte(&path, last_off + RECORD_HEADER_LEN + 10);
    let (wal, rec) = Wal::open(dir.path(), opts(1 << 20)).unwrap();
    let torn = rec.torn_tail.unwrap();
    assert_eq!(
        (torn.offset, torn.bytes_cut),
        (last_off, RECORD_HEADER_LEN + 50)
    );
    assert_eq!(wal.last_index(), 3);
}

/// Writes `n` records of `len` bytes in `n` syncs: the first creates the segment, every later one
/// writes into it and zero-fills ahead. Returns the directory and the end of the records.
fn write_zero_filled_log(n: u64, len: usize) -> (tempfile::TempDir, u64) {
    let dir = tempfile::tempdir().unwrap();
    let (mut wal, _) = Wal::open(dir.path(), opts(1 << 20)).unwrap();
    for i in 1..=n {
        wal.append(&payload(i, len)).unwrap();
        wal.sync().unwrap();
    }
    let end = record_offset(&vec![len; n as usize], n as usize);
    let path = seg_path(dir.path(), 1);
    assert_eq!(wal.size_bytes(), end);
    assert_eq!(file_len(&path), 1 << 20, "zero-filled to the segment size");
    (dir, end)
}

/// Zeros after the last record are the writer's zero-fill ahead: reopening keeps them and reports
/// nothing, the next records overwrite them, and all of it survives another reopen.
#[test]
fn trailing_zeros_are_padding_kept_and_written_over() {
    let (dir, end) = write_zero_filled_log(3, 40);
    let path = seg_path(dir.path(), 1);
    let (mut wal, rec) = Wal::open(dir.path(), opts(1 << 20)).unwrap();
    assert_eq!((rec.last_index, rec.torn_tail), (3, None));
    assert_eq!(file_len(&path), 1 << 20, "the zeros were left in place");
    assert_eq!(wal.size_bytes(), end);
    assert_eq!(wal.append(&payload(4, 40)).unwrap(), 4);
    wal.sync().unwrap();
    assert_eq!(file_len(&path), 1 << 20, "the sync wrote over the zeros");
    drop(wal);
    let (wal, rec) = Wal::open(dir.path(), opts(1 << 20)).unwrap();
    assert_eq!((rec.last_index, rec.torn_tail), (4, None));
    let expected: Vec<_> = (1..=4).map(|i| (i, payload(i, 40))).collect();
    assert_eq!(read_all(&wal, 1), expected);
}

/// A write torn inside the zero-filled stretch leaves part of a record followed by zeros (the file
/// keeps its length): that is a torn tail, cut like one at the end of the file.
#[test]
fn a_record_torn_inside_the_zero_filled_stretch_is_cut() {
    for keep in [9, RECORD_HEADER_LEN + 20, RECORD_HEADER_LEN + 49] {
        let (dir, end) = write_zero_filled_log(4, 50);
        let path = seg_path(dir.path(), 1);
        let last_off = record_offset(&[50; 4], 3);
        let f = OpenOptions::new().write(true).open(&path).unwrap();
        let lost = (end - last_off - keep) as usize;
        f.write_all_at(&vec![0u8; lost], last_off + keep).unwrap();
        let (wal, rec) = Wal::open(dir.path(), opts(1 << 20)).unwrap();
        let torn = rec.torn_tail.expect("torn tail must be reported");
        assert_eq!((torn.file, torn.offset), (path.clone(), last_off));
        assert_eq!(rec.last_index, 3, "kept {keep} bytes of record 4");
        let expected: Vec<_> = (1..=3).map(|i| (i, payload(i, 50))).collect();
        assert_eq!(read_all(&wal, 1), expected);
    }
}

/// Zeros are padding only up to the end of the file: a non-zero byte after them means the bytes
/// were lost from the middle, which is corruption, not a torn write.
#[test]
fn zeros_followed_by_data_are_corruption() {
    let (dir, end) = write_zero_filled_log(4, 50);
    let path = seg_path(dir.path(), 1);
    let last_off = record_offset(&[50; 4], 3);
    let f = OpenOptions::new().write(true).open(&path).unwrap();
    f.write_all_at(&[0u8; 30], last_off + 10).unwrap();
    f.write_all_at(&[7u8], end + 5000).unwrap();
    let (_, reason) = expect_corrupt(dir.path(), &path, last_off);
    assert!(
        matches!(
            reason,
            Corruption::Record(BadRecord::Checksum { at_eof: false })
        ),
        "{reason:?}"
    );
}

/// A segment that is not the last may end in zeros (it was zero-filled ahead while it was the
/// active one); records lost from its end are still found, as a gap before the next segment.
#[test]
fn a_zero_filled_segment_before_the_last_is_read_and_its_lost_records_are_a_gap() {
    let dir = three_segments(true);
    let path = seg_path(dir.path(), 9);
    assert_eq!(file_len(&path), 1000, "zero-filled to the segment size");
    let (wal, rec) = Wal::open(dir.path(), opts(1000)).unwrap();
    assert_eq!((rec.last_index, rec.torn_tail), (20, None));
    assert_eq!(read_all(&wal, 1).len(), 20);
    drop(wal);
    // Record 16, the last of segment 9, zeroed: segment 17 no longer follows on.
    let off = record_offset(&[100; 8], 7);
    let f = OpenOptions::new().write(true).open(&path).unwrap();
    f.write_all_at(&[0u8; 116], off).unwrap();
    let err = Wal::open(dir.path(), opts(1000)).expect_err("a lost record is not padding");
    let text = err.to_string();
    assert!(text.contains(&segment_file_name(17)), "{text}");
}

#[test]
fn flipped_byte_in_middle_record_is_corruption_naming_file_and_offset() {
    let dir = write_log(5, 60);
    let path = seg_path(dir.path(), 1);
    let before = fs::read(&path).unwrap();
    let off = record_offset(&[60; 5], 2); // record 3 of 5
    flip_byte(&path, off + RECORD_HEADER_LEN + 30);
    let (msg, reason) = expect_corrupt(dir.path(), &path, off);
    assert!(msg.starts_with("corrupt write-ahead log: "), "{msg}");
    assert!(msg.contains("checksum mismatch"), "{msg}");
    assert!(
        matches!(
            reason,
            Corruption::Record(BadRecord::Checksum { at_eof: false })
        ),
        "{reason:?}"
    );
    flip_byte(&path, off + RECORD_HEADER_LEN + 30);
    // Nothing was cut or changed by the refused open.
    assert_eq!(fs::read(&path).unwrap(), before);
}

#[test]
fn flipped_index_field_is_corruption() {
    let dir = write_log(5, 60);
    let path = seg_path(dir.path(), 1);
    let off = record_offset(&[60; 5], 1);
    flip_byte(&path, off + 8);
    expect_corrupt(dir.path(), &path, off);
}

#[test]
fn damaged_length_field_is_not_mistaken_for_a_torn_tail() {
    // A flipped high bit of record 2's length makes it "run past EOF"; the valid records after it
    // prove this is not a torn write.
    let dir = write_log(5, 60);
    let path = seg_path(dir.path(), 1);
    let off = record_offset(&[60; 5], 1);
    flip_byte(&path, off + 2);
    let (msg, reason) = expect_corrupt(dir.path(), &path, off);
    assert!(msg.contains("not a torn write"), "{msg}");
    assert!(
        matches!(
            reason,
            Corruption::ValidRecordFollows {
                record: BadRecord::PastEof { .. },
                ..
            }
        ),
        "{reason:?}"
    );
    assert_eq!(file_len(&path), record_offset(&[60; 5], 5));
}

#[test]
fn flipped_byte_in_non_last_segment_is_corruption() {
    let dir = three_segments(false);
    // The last record of the middle segment: a bad checksum at that segment's EOF is still corruption.
    let path = seg_path(dir.path(), 9);
    let off = record_offset(&[100; 8], 7);
    flip_byte(&path, off + RECORD_HEADER_LEN + 5);
    let (msg, _) = expect_corrupt(dir.path(), &path, off);
    assert!(msg.contains("checksum mismatch"), "{msg}");
}

#[test]
fn truncated_non_last_segment_is_corruption() {
    let dir = three_segments(false);
    let path = seg_path(dir.path(), 1);
    let off = record_offset(&[100; 8], 7);
    OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(off + 30)
        .unwrap();
    expect_corrupt(dir.path(), &path, off);
}

#[test]
fn missing_middle_segment_is_an_index_gap() {
    let dir = three_segments(false);
    fs::remove_file(seg_path(dir.path(), 9)).unwrap();
    let (msg, reason) = expect_corrupt(dir.path(), &seg_path(dir.path(), 17), 0);
    assert!(msg.contains("index gap"), "{msg}");
    assert_eq!(
        reason,
        Corruption::SegmentGap {
            expected: 9,
            found: 17
        }
    );
}

#[test]
fn bad_segment_header_is_corruption() {
    let dir = write_log(3, 10);
    let path = seg_path(dir.path(), 1);
    flip_byte(&path, 1); // magic
    let (_, reason) = expect_corrupt(dir.path(), &path, 0);
    assert!(
        matches!(reason, Corruption::Header(HeaderError::BadMagic { .. })),
        "{reason:?}"
    );
    flip_byte(&path, 1);
    flip_byte(&path, 12); // first index, caught by the header checksum
    expect_corrupt(dir.path(), &path, 0);
    flip_byte(&path, 12);
    // A segment whose header is shorter than a header (never produced by a crash: creation is atomic).
    let short = seg_path(dir.path(), 4);
    fs::write(&short, b"BWAL").unwrap();
    let (_, reason) = expect_corrupt(dir.path(), &short, 0);
    assert_eq!(reason, Corruption::HeaderTruncated { file_len: 4 });
}

#[test]
fn leftover_temp_file_is_removed() {
    let dir = write_log(3, 10);
    let tmp = dir.path().join(format!("{:020}.wal.tmp", 4));
    fs::write(&tmp, b"BWAL partial").unwrap();
    let (wal, rec) = Wal::open(dir.path(), opts(1 << 20)).unwrap();
    assert!(!tmp.exists());
    assert_eq!((rec.last_index, rec.torn_tail), (3, None));
    assert_eq!(wal.segment_count(), 1);
}

#[test]
fn oversized_record_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (mut wal, _) = Wal::open(dir.path(), opts(1 << 20)).unwrap();
    let big = vec![0u8; bulwark_limits::MAX_RECORD_PAYLOAD + 1];
    assert!(matches!(
        wal.append(&big),
        Err(WalError::RecordTooLarge { .. })
    ));
    assert_eq!(wal.last_index(), 0);
}

mod prop {
    use super::*;
    use proptest::prelude::*;

    #[derive(Clone, Debug)]
    enum Op {
        Append(usize),
        Sync,
        TruncateSuffix(u64), // back-off from next index
        TruncatePrefix(u64), // offset from first index
        Reopen,              // a crash: buffered records are lost
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => (0usize..300).prop_map(Op::Append),
            2 => Just(Op::Sync),
            1 => (0u64..12).prop_map(Op::TruncateSuffix),
            1 => (0u64..25).prop_map(Op::TruncatePrefix),
            1 => Just(Op::Reopen),
        ]
    }

    fn check(wal: &Wal, model: &[(u64, Vec<u8>)], next: u64) {
        assert_eq!(wal.last_index(), next - 1);
        if let Some((first, _)) = model.first() {
            assert_eq!(wal.first_index(), *first);
        } else {
            assert_eq!(wal.first_index(), next);
        }
        assert_eq!(read_all(wal, wal.first_index()), model.to_vec());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn random_operations_then_reopen_match_the_model(ops in proptest::collection::vec(op(), 1..80)) {
            let dir = tempfile::tempdir().unwrap();
            let o = opts(700);
            let (mut wal, _) = Wal::open(dir.path(), o.clone()).unwrap();
            // The model: every record in the log, the next index, and the index after the last durable one.
            let mut model: Vec<(u64, Vec<u8>)> = Vec::new();
            let mut next = 1u64;
            let mut durable_next = 1u64;
            let mut counter = 0u64;
            for op in ops {
                match op {
                    Op::Append(len) => {
                        counter += 1;
                        let p = payload(counter, len);
                        prop_assert_eq!(wal.append(&p).unwrap(), next);
                        model.push((next, p));
                        next += 1;
                    }
                    Op::Sync => {
                        wal.sync().unwrap();
                        durable_next = next;
                    }
                    Op::TruncateSuffix(back) => {
                        let first = wal.first_index();
                        let from = next.saturating_sub(back).max(first);
                        wal.truncate_suffix(from).unwrap();
                        model.retain(|(i, _)| *i < from);
                        next = from;
                        durable_next = durable_next.min(from);
                    }
                    Op::TruncatePrefix(k) => {
                        let through = wal.first_index() + k;
                        wal.truncate_prefix(through).unwrap();
                        durable_next = next;
                        if through >= next {
                            next = through + 1;
                            durable_next = next;
                        }
                        let first = wal.first_index();
                        prop_assert!(first <= through + 1);
                        model.retain(|(i, _)| *i >= first);
                    }
                    Op::Reopen => {
                        drop(wal);
                        let (w, rec) = Wal::open(dir.path(), o.clone()).unwrap();
                        wal = w;
                        prop_assert_eq!(rec.torn_tail, None);
                        model.retain(|(i, _)| *i < durable_next);
                        next = durable_next;
                        prop_assert_eq!(rec.last_index, next - 1);
                    }
                }
                check(&wal, &model, next);
            }
            wal.sync().unwrap();
            drop(wal);
            let (wal, rec) = Wal::open(dir.path(), o).unwrap();
            prop_assert_eq!(rec.torn_tail, None);
            prop_assert_eq!(rec.last_index, next - 1);
            check(&wal, &model, next);
        }
    }
}
