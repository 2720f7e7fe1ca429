//! Imported events: accounts and transfers migrated with their own timestamps, by TigerBeetle's
//! rules (a batch imports or not, timestamps in the past of the batch, after everything the
//! ledger holds, strictly increasing, no timeout).

use bulwark_ledger::{
    apply, AccountFlags, AccountId, Batch, BatchResults, LedgerStore, MemoryStore, NewAccount,
    NewTransfer, Operation, Timestamp, TransferFlags, TransferId,
};

const NOW: u64 = 1_000_000;

fn run(store: &mut MemoryStore, at: u64, operation: Operation) -> Vec<&'static str> {
    let results = apply(
        store,
        &Batch {
            timestamp: Timestamp(at),
            operation,
        },
    );
    results.names()
}

fn imported_account(id: u128, ts: u64) -> NewAccount {
    NewAccount {
        id: AccountId(id),
        ledger: 1,
        code: 1,
        flags: AccountFlags::IMPORTED,
        timestamp: Timestamp(ts),
        ..NewAccount::default()
    }
}

fn imported_transfer(id: u128, dr: u128, cr: u128, ts: u64) -> NewTransfer {
    NewTransfer {
        id: TransferId(id),
        debit_account_id: AccountId(dr),
        credit_account_id: AccountId(cr),
        amount: 10,
        ledger: 1,
        code: 1,
        flags: TransferFlags::IMPORTED,
        timestamp: Timestamp(ts),
        ..NewTransfer::default()
    }
}

#[test]
fn imported_events_keep_their_timestamps_across_batches() {
    let mut store = MemoryStore::default();
    let accounts = vec![imported_account(1, 100), imported_account(2, 200)];
    assert_eq!(
        run(&mut store, NOW, Operation::CreateAccounts(accounts)),
        ["ok", "ok"]
    );
    assert_eq!(
        store.account(AccountId(2)).unwrap().timestamp,
        Timestamp(200)
    );
    // The ledger's time is the newest imported event, so a later batch continues the history.
    assert_eq!(store.last_timestamp(), Timestamp(200));
    let transfers = vec![
        imported_transfer(10, 1, 2, 300),
        imported_transfer(11, 2, 1, 301),
    ];
    let names = run(&mut store, NOW + 10, Operation::CreateTransfers(transfers));
    assert_eq!(names, ["ok", "ok"]);
    assert_eq!(
        store.transfer(TransferId(11)).unwrap().timestamp,
        Timestamp(301)
    );
    assert_eq!(store.last_timestamp(), Timestamp(301));
    // A retry answers exists; the same id at another time is another event.
    let retry = run(
        &mut store,
        NOW + 20,
        Operation::CreateTransfers(vec![imported_transfer(10, 1, 2, 300)]),
    );
    assert_eq!(retry, ["exists"]);
    let moved = run(
        &mut store,
        NOW + 30,
        Operation::CreateTransfers(vec![imported_transfer(10, 1, 2, 299)]),
    );
    assert_eq!(moved, ["exists_with_different_fields"]);
}

#[test]
fn a_batch_imports_all_or_none_of_its_events() {
    let mut store = MemoryStore::default();
    let plain = NewAccount {
        id: AccountId(3),
        ledger: 1,
        code: 1,
        ..NewAccount::default()
    };
    let names = run(
        &mut store,
        NOW,
        Operation::CreateAccounts(vec![imported_account(1, 100), plain]),
    );
    assert_eq!(names, ["ok", "imported_event_expected"]);
    let names = run(
        &mut store,
        NOW + 10,
        Operation::CreateAccounts(vec![plain, imported_account(2, 200)]),
    );
    assert_eq!(names, ["ok", "imported_event_not_expected"]);
    let stamped = NewAccount {
        id: AccountId(4),
        timestamp: Timestamp(5),
        ..plain
    };
    let names = run(
        &mut store,
        NOW + 20,
        Operation::CreateAccounts(vec![stamped]),
    );
    assert_eq!(names, ["timestamp_must_be_zero"]);
}

#[test]
fn imported_timestamps_lie_in_the_past_after_everything_held() {
    let mut store = MemoryStore::default();
    let names = run(
        &mut store,
        NOW,
        Operation::CreateAccounts(vec![
            imported_account(1, 0),
            imported_account(2, u64::MAX),
            imported_account(3, NOW),
            imported_account(4, 500),
            imported_account(5, 500),
            imported_account(6, 400),
            imported_account(7, 600),
        ]),
    );
    assert_eq!(
        names,
        [
            "imported_event_timestamp_out_of_range",
            "imported_event_timestamp_out_of_range",
            "imported_event_timestamp_must_not_advance",
            "ok",
            "imported_event_timestamp_must_not_regress",
            "imported_event_timestamp_must_not_regress",
            "ok",
        ]
    );
    let names = run(
        &mut store,
        NOW + 10,
        Operation::CreateTransfers(vec![
            imported_transfer(10, 4, 7, 550),
            NewTransfer {
                timeout: 5,
                flags: TransferFlags::IMPORTED | TransferFlags::PENDING,
                ..imported_transfer(11, 4, 7, 700)
            },
            imported_transfer(12, 4, 7, 701),
        ]),
    );
    assert_eq!(
        names,
        [
            "imported_event_timestamp_must_not_regress",
            "imported_event_timeout_must_be_zero",
            "ok",
        ]
    );
}

#[test]
fn an_imported_transfer_postdates_its_accounts() {
    let mut store = MemoryStore::default();
    let accounts = vec![imported_account(1, 100), imported_account(2, 200)];
    run(&mut store, NOW, Operation::CreateAccounts(accounts));
    // The ledger's newest event is account 2 (200): a transfer before it regresses first.
    let early = run(
        &mut store,
        NOW + 10,
        Operation::CreateTransfers(vec![imported_transfer(10, 1, 2, 150)]),
    );
    assert_eq!(early, ["imported_event_timestamp_must_not_regress"]);
    let BatchResults::Transfers(_) = apply(
        &mut store,
        &Batch {
            timestamp: Timestamp(NOW + 20),
            operation: Operation::CreateTransfers(vec![imported_transfer(11, 1, 2, 250)]),
        },
    ) else {
        panic!("a transfers batch answers transfer results");
    };
    assert_eq!(store.account(AccountId(2)).unwrap().credits_posted, 10);
}
