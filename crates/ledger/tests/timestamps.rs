//! Timestamps stay strictly increasing whatever the proposer's clock says.

use bulwark_ledger::{
    apply, effective_timestamp, AccountId, Batch, LedgerStore, MemoryStore, NewAccount, Operation,
    Timestamp,
};

fn accounts(ids: std::ops::RangeInclusive<u128>, ts: u64) -> Batch {
    Batch {
        timestamp: Timestamp(ts),
        operation: Operation::CreateAccounts(
            ids.map(|id| NewAccount {
                id: AccountId(id),
                ledger: 1,
                code: 1,
                ..NewAccount::default()
            })
            .collect(),
        ),
    }
}

#[test]
fn a_batch_from_a_clock_behind_is_moved_after_the_last_timestamp() {
    let mut store = MemoryStore::default();
    apply(&mut store, &accounts(1..=3, 1_000));
    assert_eq!(store.last_timestamp(), Timestamp(1_000));
    // A new leader whose clock reads 10: its batch lands right after 1_000, not before it.
    let behind = accounts(4..=5, 10);
    assert_eq!(
        effective_timestamp(store.last_timestamp(), &behind),
        Timestamp(1_002)
    );
    apply(&mut store, &behind);
    assert_eq!(
        store.account(AccountId(4)).unwrap().timestamp,
        Timestamp(1_001)
    );
    assert_eq!(
        store.account(AccountId(5)).unwrap().timestamp,
        Timestamp(1_002)
    );
    assert_eq!(store.last_timestamp(), Timestamp(1_002));
    // A clock ahead is kept as it is.
    let ahead = accounts(6..=6, 5_000);
    assert_eq!(
        effective_timestamp(store.last_timestamp(), &ahead),
        Timestamp(5_000)
    );
    apply(&mut store, &ahead);
    assert_eq!(
        store.account(AccountId(6)).unwrap().timestamp,
        Timestamp(5_000)
    );
}
