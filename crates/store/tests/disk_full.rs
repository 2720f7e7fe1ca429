//! Checkpoints on a really full disk: a tmpfs (the tests run as root, as CI does; a failed mount
//! fails the test) filled with a filler file. A checkpoint that would not fit is not started; one
//! that meets the full disk anyway fails without losing anything (reads still see its memtable,
//! the checkpointed index does not move), the store reopens its file, and the same checkpoint is
//! written once space is freed.

use bulwark_ledger::{
    AccountId, Batch, BatchResults, LedgerStore, NewAccount, NewTransfer, Operation, Timestamp,
    TransferFlags, TransferId,
};
use bulwark_store::StateStore;
use bulwark_tmpfs::{fill_leaving, Tmpfs};

fn accounts() -> Batch {
    Batch {
        timestamp: Timestamp(1_000),
        operation: Operation::CreateAccounts(
            (1..=4)
                .map(|i| NewAccount {
                    id: AccountId(i),
                    ledger: 1,
                    code: 1,
                    ..NewAccount::default()
                })
                .collect(),
        ),
    }
}

/// Transfers `first..first + n` between accounts 1..=4, in batches of 1000 at log indexes from
/// `index`; returns the next index.
fn transfers(store: &mut StateStore, mut index: u64, first: u64, n: u64) -> u64 {
    let mut id = first;
    while id < first + n {
        let count = 1000.min(first + n - id);
        let batch = Batch {
            timestamp: Timestamp(1_000_000 * index),
            operation: Operation::CreateTransfers(
                (id..id + count)
                    .map(|t| NewTransfer {
                        id: TransferId(t.into()),
                        debit_account_id: AccountId((1 + t % 4).into()),
                        credit_account_id: AccountId((1 + (t + 1) % 4).into()),
                        amount: 1,
                        pending_id: TransferId(0),
                        timeout: 0,
                        ledger: 1,
                        code: 1,
                        flags: TransferFlags::empty(),
                        user_data_64: t,
                        ..NewTransfer::default()
                    })
                    .collect(),
            ),
        };
        match store.apply_batch(index, &batch) {
            BatchResults::Transfers(r) => assert!(r.iter().all(|r| r.name() == "ok"), "{r:?}"),
            other => panic!("{other:?}"),
        }
        index += 1;
        id += count;
    }
    index
}

fn assert_has(store: &StateStore, ids: impl Iterator<Item = u64>) {
    for id in ids {
        let t = store
            .transfer(TransferId(id.into()))
            .unwrap_or_else(|| panic!("transfer {id} is missing"));
        assert_eq!(t.user_data_64, id);
    }
}

#[test]
fn no_checkpoint_starts_without_room_for_it_and_one_does_once_space_is_freed() {
    let fs_ = Tmpfs::mount_temp("bulwark-store-tmpfs", 64 << 20)
        .expect("mount a tmpfs (needs root, as CI has)");
    let path = fs_.path().join("state.redb");
    let mut store = StateStore::open(&path).unwrap();
    store.apply_batch(1, &accounts());
    let next = transfers(&mut store, 2, 1, 5_000);
    store.checkpoint_now().unwrap().expect("a checkpoint");
    let next = transfers(&mut store, next, 5_001, 5_000);

    let filler = fill_leaving(fs_.path(), 8 << 20).expect("fill the disk").0;
    assert!(!store.start_checkpoint(), "8 MiB free is below the reserve");
    assert!(!store.is_checkpointing());
    assert_eq!(store.checkpointed_index(), next - 6);
    assert_has(&store, 1..=10_000);

    std::fs::remove_file(filler).unwrap();
    let done = store.checkpoint_now().unwrap().expect("space is back");
    assert_eq!(done.applied_index, next - 1);
    drop(store);
    let store = StateStore::open(&path).unwrap();
    assert_eq!(store.checkpointed_index(), next - 1);
    assert_has(&store, 1..=10_000);
}

#[test]
fn a_checkpoint_that_meets_a_full_disk_loses_nothing_and_is_written_again_later() {
    let fs_ = Tmpfs::mount_temp("bulwark-store-tmpfs", 64 << 20)
        .expect("mount a tmpfs (needs root, as CI has)");
    let path = fs_.path().join("state.redb");
    let mut store = StateStore::open(&path).unwrap();
    // Without the free-space check, so that the checkpoint really meets the full disk.
    store.set_space_reserve(None);
    store.apply_batch(1, &accounts());
    let next = transfers(&mut store, 2, 1, 5_000);
    store.checkpoint_now().unwrap().expect("a checkpoint");
    let checkpointed = store.checkpointed_index();
    let next = transfers(&mut store, next, 5_001, 30_000);

    let filler = fill_leaving(fs_.path(), 256 << 10)
        .expect("fill the disk")
        .0;
    assert!(store.start_checkpoint());
    assert_eq!(
        store.wait_checkpoint().unwrap(),
        None,
        "a full disk is not an error"
    );
    // The file was closed and reopened at once (it needed no repair that takes space).
    assert!(!store.is_unavailable());
    assert_eq!(store.checkpointed_index(), checkpointed);
    // Everything is still readable: the checkpointed transfers from the (reopened) file, the
    // rest from the memtable kept in memory.
    assert_has(&store, (1..=35_000).step_by(97));
    assert_eq!(
        store
            .account_transfers(AccountId(2), Timestamp(0), 10)
            .unwrap()
            .len(),
        10
    );
    // More batches meanwhile, then a retry that still fails.
    let next = transfers(&mut store, next, 35_001, 1_000);
    assert!(!store.start_checkpoint(), "not before the retry delay");
    std::thread::sleep(std::time::Duration::from_millis(1100));
    store.poll_checkpoint().unwrap();
    if store.start_checkpoint() {
        assert_eq!(store.wait_checkpoint().unwrap(), None, "still full");
    }
    assert_eq!(store.checkpointed_index(), checkpointed);
    assert_has(&store, (1..=36_000).step_by(89));

    std::fs::remove_file(filler).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1100));
    store.poll_checkpoint().unwrap();
    assert!(!store.is_unavailable());
    let done = store.checkpoint_now().unwrap().expect("space is back");
    assert_eq!(done.applied_index, next - 1);
    assert_eq!(store.checkpointed_index(), next - 1);
    assert_has(&store, (1..=36_000).step_by(89));
    drop(store);
    let store = StateStore::open(&path).unwrap();
    assert_eq!(store.checkpointed_index(), next - 1);
    assert_has(&store, 1..=36_000);
}
