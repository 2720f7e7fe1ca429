//! Snapshot imports that must be refused: each refusal is matched by its kind (a damaged frame,
//! a row count that is not what arrived, a cut stream, a stream that is not a snapshot, ...),
//! and an import refused over an existing store leaves that store as it was, with no side file
//! behind. The snapshot stream's framing is pinned to golden bytes.

use bulwark_ledger::{
    AccountId, Batch, LedgerStore, NewAccount, NewTransfer, Operation, Timestamp, TransferId,
};
use bulwark_store::snapshot::{import, incoming_path, SnapshotError};
use bulwark_store::{StateStore, StoreError};

fn accounts(ids: std::ops::RangeInclusive<u128>, ts: u64) -> Batch {
    Batch {
        timestamp: Timestamp(ts),
        operation: Operation::CreateAccounts(
            ids.map(|i| NewAccount {
                id: AccountId(i),
                ledger: 1,
                code: 1,
                user_data_64: i as u64,
                ..NewAccount::default()
            })
            .collect(),
        ),
    }
}

fn transfer(id: u128, amount: u128, ts: u64) -> Batch {
    Batch {
        timestamp: Timestamp(ts),
        operation: Operation::CreateTransfers(vec![NewTransfer {
            id: TransferId(id),
            debit_account_id: AccountId(1),
            credit_account_id: AccountId(2),
            amount,
            ledger: 1,
            code: 1,
            ..NewTransfer::default()
        }]),
    }
}

/// A checkpointed store at `path` holding accounts 1..=3 and transfer 7 (amount 70), applied
/// index 2; closed.
fn existing_store(path: &std::path::Path) {
    let mut store = StateStore::open(path).unwrap();
    store.apply_batch(1, &accounts(1..=3, 1_000));
    store.apply_batch(2, &transfer(7, 70, 2_000));
    store.checkpoint_now().unwrap();
}

/// Asserts that the store at `path` is still the one [`existing_store`] made.
fn assert_existing_store_intact(path: &std::path::Path) {
    let store = StateStore::open(path).unwrap();
    assert_eq!(store.applied_index(), 2);
    assert_eq!(store.account_count(), 3);
    assert_eq!(store.transfer(TransferId(7)).map(|t| t.amount), Some(70));
    assert_eq!(store.account(AccountId(2)).unwrap().credits_posted, 70);
    assert!(store.account(AccountId(9)).is_none());
    assert!(store.transfer(TransferId(8)).is_none());
    assert!(
        !incoming_path(path).exists(),
        "a refused import left its side file"
    );
}

/// The snapshot stream of another store: accounts 1..=9, transfer 8, applied index 5.
fn other_stream(dir: &std::path::Path) -> Vec<u8> {
    let mut store = StateStore::open(&dir.join("source.redb")).unwrap();
    store.apply_batch(4, &accounts(1..=9, 3_000));
    store.apply_batch(5, &transfer(8, 80, 4_000));
    store.checkpoint_now().unwrap();
    let mut stream = Vec::new();
    let info = store.snapshot_source().export(&mut stream).unwrap();
    assert_eq!(info.applied_index, 5);
    stream
}

/// The stream's frames' bodies (a frame is `len u32 | crc32c u32 | body`).
fn frames(stream: &[u8]) -> Vec<Vec<u8>> {
    let mut bodies = Vec::new();
    let mut at = 0;
    while at < stream.len() {
        let len = u32::from_le_bytes(stream[at..at + 4].try_into().unwrap()) as usize;
        bodies.push(stream[at + 8..at + 8 + len].to_vec());
        at += 8 + len;
    }
    bodies
}

/// Frames `bodies` again, each with its correct checksum.
fn framed(bodies: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    for body in bodies {
        out.extend_from_slice(&(body.len() as u32).to_le_bytes());
        out.extend_from_slice(&crc32c::crc32c(body).to_le_bytes());
        out.extend_from_slice(body);
    }
    out
}

/// Imports `stream` over the existing store at `path`: it must be refused for `reason` (as
/// `matches` says), and the existing store stay as it was.
fn assert_refused_over_existing(
    path: &std::path::Path,
    stream: &[u8],
    what: &str,
    matches: impl Fn(&SnapshotError) -> bool,
) {
    let err = import(path, &mut &stream[..]).expect_err(what);
    match &err {
        StoreError::Snapshot { reason, .. } if matches(reason) => {}
        other => panic!("{what}: refused for another reason: {other:?}"),
    }
    assert_existing_store_intact(path);
}

#[test]
fn refused_imports_name_their_reason_and_leave_the_existing_store_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.redb");
    existing_store(&path);
    let stream = other_stream(dir.path());
    let bodies = frames(&stream);
    let rows = bodies.len() as u64 - 2;
    assert!(rows > 10, "{rows} rows");
    assert_eq!(framed(&bodies), stream, "the test's framing is the store's");

    // One bit flipped in the middle of a row frame's body.
    let mut damaged = stream.clone();
    let last_frame = stream.len() - (8 + 17);
    damaged[last_frame - 3] ^= 0x10;
    assert_refused_over_existing(&path, &damaged, "a damaged frame", |r| {
        matches!(r, SnapshotError::FrameChecksum)
    });

    // A trailer that counts one row more than arrived (a row lost on the way).
    let mut lost_row = bodies.clone();
    lost_row.remove(3);
    assert_refused_over_existing(&path, &framed(&lost_row), "a lost row", |r| {
        matches!(r, SnapshotError::RowCount { trailer, arrived }
            if *trailer == rows && *arrived == rows - 1)
    });
    // And one that counts fewer.
    let mut miscounted = bodies.clone();
    let trailer = miscounted.last_mut().unwrap();
    trailer[1..9].copy_from_slice(&(rows + 5).to_le_bytes());
    assert_refused_over_existing(&path, &framed(&miscounted), "a miscounted trailer", |r| {
        matches!(r, SnapshotError::RowCount { trailer, arrived }
            if *trailer == rows + 5 && *arrived == rows)
    });

    // Cut off inside the last frame, and cut off cleanly before the trailer.
    let cut = &stream[..stream.len() - 5];
    assert_refused_over_existing(&path, cut, "a cut stream", |r| {
        matches!(r, SnapshotError::Read { .. })
    });
    let without_trailer = framed(&bodies[..bodies.len() - 1]);
    assert_refused_over_existing(&path, &without_trailer, "no trailer", |r| {
        matches!(r, SnapshotError::NoTrailer)
    });

    // Not a snapshot at all, a version this build does not read, and a table it does not know.
    let mut other_magic = bodies.clone();
    other_magic[0][..6].copy_from_slice(b"BWSNAQ");
    assert_refused_over_existing(&path, &framed(&other_magic), "another magic", |r| {
        matches!(r, SnapshotError::NotASnapshot)
    });
    let mut newer = bodies.clone();
    newer[0][6..8].copy_from_slice(&2u16.to_le_bytes());
    assert_refused_over_existing(&path, &framed(&newer), "a newer version", |r| {
        matches!(r, SnapshotError::Version { found: 2 })
    });
    let mut unknown_table = bodies.clone();
    unknown_table[2][0] = 42;
    assert_refused_over_existing(&path, &framed(&unknown_table), "an unknown table", |r| {
        matches!(r, SnapshotError::UnknownTable { tag: 42 })
    });
    assert_refused_over_existing(&path, &[], "an empty stream", |r| {
        matches!(r, SnapshotError::EmptyStream)
    });

    // The whole stream imports over it.
    let info = import(&path, &mut stream.as_slice()).unwrap();
    assert_eq!((info.applied_index, info.rows), (5, rows));
    let store = StateStore::open(&path).unwrap();
    assert_eq!(store.applied_index(), 5);
    assert_eq!(store.account_count(), 9);
    assert_eq!(store.transfer(TransferId(8)).map(|t| t.amount), Some(80));
    assert!(store.transfer(TransferId(7)).is_none());
}

/// The framing of a snapshot stream: its header frame and its trailer frame, byte for byte. A
/// failure is a change of what nodes send each other, which must be deliberate (a new
/// version, and nodes of the old one refusing it by that version).
#[test]
fn a_snapshot_stream_is_framed_as_its_golden_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let stream = other_stream(dir.path());
    let hex = |bytes: &[u8]| -> String { bytes.iter().map(|b| format!("{b:02x}")).collect() };
    // len 8 | crc32c of the body | "BWSNAP" | version 1.
    assert_eq!(
        hex(&stream[..16]),
        "08000000 00fe3ab5 4257534e4150 0100".replace(' ', "")
    );
    let bodies = frames(&stream);
    let rows = bodies.len() as u64 - 2;
    let trailer = &stream[stream.len() - (8 + 17)..];
    // len 17 | crc32c | 0xFF | rows u64 | applied index u64.
    let mut golden = vec![17, 0, 0, 0];
    let mut body = vec![0xff];
    body.extend_from_slice(&rows.to_le_bytes());
    body.extend_from_slice(&5u64.to_le_bytes());
    golden.extend_from_slice(&crc32c::crc32c(&body).to_le_bytes());
    golden.extend_from_slice(&body);
    assert_eq!(hex(trailer), hex(&golden));
}
