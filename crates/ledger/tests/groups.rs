//! A group of batches in one log entry means exactly what the same batches mean one entry each.

use bulwark_ledger::{
    AccountFlags, AccountId, Batch, BatchResults, MemoryStateMachine, NewAccount, NewTransfer,
    Operation, StateMachine, Timestamp, TransferFlags, TransferId, NANOS_PER_SECOND,
};

fn transfer(id: u128, debit: u128, credit: u128, amount: u128) -> NewTransfer {
    NewTransfer {
        id: TransferId(id),
        debit_account_id: AccountId(debit),
        credit_account_id: AccountId(credit),
        amount,
        ledger: 1,
        code: 1,
        ..NewTransfer::default()
    }
}

fn batches() -> Vec<Batch> {
    let accounts = (1..=4)
        .map(|id| NewAccount {
            id: AccountId(id),
            ledger: 1,
            code: 1,
            flags: if id == 1 {
                AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS
            } else {
                AccountFlags::empty()
            },
            ..NewAccount::default()
        })
        .collect();
    let pending = NewTransfer {
        flags: TransferFlags::PENDING,
        timeout: 1,
        ..transfer(10, 2, 3, 5)
    };
    let second = NANOS_PER_SECOND;
    vec![
        Batch {
            timestamp: Timestamp(second),
            operation: Operation::CreateAccounts(accounts),
        },
        Batch {
            timestamp: Timestamp(second + 10),
            operation: Operation::CreateTransfers(vec![pending, transfer(11, 1, 2, 1)]),
        },
        // A linked chain left open at the end of its batch fails, whatever follows it.
        Batch {
            timestamp: Timestamp(second + 20),
            operation: Operation::CreateTransfers(vec![NewTransfer {
                flags: TransferFlags::LINKED,
                ..transfer(12, 3, 4, 7)
            }]),
        },
        // A clock behind the last timestamp: moved after it.
        Batch {
            timestamp: Timestamp(5),
            operation: Operation::CreateTransfers(vec![
                transfer(13, 3, 4, 2),
                transfer(11, 1, 2, 1),
            ]),
        },
        // Past the pending transfer's timeout: it expires at the start of this batch.
        Batch {
            timestamp: Timestamp(3 * second),
            operation: Operation::CreateTransfers(vec![
                NewTransfer {
                    pending_id: TransferId(10),
                    flags: TransferFlags::POST_PENDING_TRANSFER,
                    ..transfer(14, 2, 3, 0)
                },
                NewTransfer {
                    id: TransferId(15),
                    ..pending
                },
            ]),
        },
        // An idle ledger's expiry: only what is due by its timestamp.
        Batch {
            timestamp: Timestamp(5 * second),
            operation: Operation::ExpirePending,
        },
    ]
}

#[test]
fn a_group_applies_like_its_batches_one_entry_each() {
    let batches = batches();
    let mut separate = MemoryStateMachine::default();
    let one_each: Vec<_> = batches
        .iter()
        .enumerate()
        .map(|(i, b)| {
            let results = separate.apply_batch(i as u64 + 1, b);
            (results, separate.last_timestamp())
        })
        .collect();
    let mut grouped = MemoryStateMachine::default();
    let together = grouped.apply_group(1, &batches);
    assert_eq!(together, one_each);
    assert_eq!(grouped.applied_index(), 1);
    let (a, b) = (&grouped.store, &separate.store);
    assert_eq!(a.accounts, b.accounts);
    assert_eq!(a.transfers, b.transfers);
    assert_eq!(a.pending, b.pending);
    assert_eq!(a.expiries, b.expiries);
    assert_eq!(a.failed_transfers, b.failed_transfers);
    assert_eq!(a.balance_history, b.balance_history);
    assert_eq!(a.last_timestamp, b.last_timestamp);
    bulwark_ledger::check_balanced(a.accounts.values()).unwrap();
    // The batches really exercised expiry, an open chain and a rejected duplicate.
    let names: Vec<Vec<&str>> = together.iter().map(|(r, _)| r.names()).collect();
    assert!(
        names.concat().contains(&"pending_transfer_expired"),
        "{names:?}"
    );
    assert!(
        names.concat().contains(&"linked_event_chain_open"),
        "{names:?}"
    );
    // Transfer 11 exceeded account 1's credits: its retry in a later batch finds it reserved.
    assert!(names.concat().contains(&"id_already_failed"), "{names:?}");
    assert!(!a.failed_transfers.is_empty());
    assert_eq!(
        together.last().map(|(r, _)| r),
        Some(&BatchResults::Expired(1))
    );
}

#[test]
#[should_panic(expected = "applied after")]
fn a_group_never_goes_below_the_applied_index() {
    let mut state = MemoryStateMachine::default();
    state.apply_group(3, &batches()[..1]);
    state.apply_group(3, &batches()[1..2]);
}
