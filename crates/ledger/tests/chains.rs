//! Linked chains: a run of linked events closed by one without the flag succeeds or fails
//! as one.

mod common;

use bulwark_ledger::{
    AccountFlags, CreateTransferResult as T, LedgerStore, NewTransfer, PendingStatus, TransferId,
};
use common::*;

fn ledger() -> Ledger {
    let mut l = Ledger::default();
    l.open(vec![
        acct_flags(1, 1, AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS),
        acct(2, 1),
        acct(3, 1),
        acct(4, 1),
    ]);
    l
}

#[test]
fn failure_in_the_middle_rolls_back_the_whole_chain() {
    let mut l = ledger();
    let before = l.store.accounts.clone();
    assert_eq!(
        l.transfers(vec![
            linked(tr(10, 2, 3, 10)),
            linked(tr(11, 3, 4, 5)),
            linked(tr(12, 4, 4, 5)),
            tr(13, 4, 2, 1),
        ]),
        vec![
            T::LinkedEventFailed,
            T::LinkedEventFailed,
            T::AccountsMustBeDifferent,
            T::LinkedEventFailed
        ]
    );
    assert_eq!(l.store.accounts, before, "no balance moved");
    assert!(
        l.store.transfers.is_empty(),
        "no transfer of the chain stored"
    );
}

#[test]
fn later_events_see_the_rolled_back_state() {
    let mut l = ledger();
    // The chain funds account 1, spends it, then fails: the funding is undone, so the
    // same spend right after the chain exceeds account 1's credits.
    assert_eq!(
        l.transfers(vec![
            linked(tr(10, 2, 1, 10)),
            linked(tr(11, 1, 3, 10)),
            linked(tr(12, 1, 3, 1)),
            tr(13, 2, 3, 1),
            tr(14, 1, 3, 10),
            tr(10, 2, 1, 10),
            tr(11, 1, 3, 10),
        ]),
        vec![
            T::LinkedEventFailed,
            T::LinkedEventFailed,
            T::ExceedsCredits,
            T::LinkedEventFailed,
            T::ExceedsCredits,
            T::Ok,
            T::Ok,
        ]
    );
    assert_eq!(l.balances(1), (0, 10, 0, 10));
    assert_eq!(l.balances(2), (0, 10, 0, 0));
    assert_eq!(l.balances(3), (0, 0, 0, 10));
    assert!(l.transfer(12).is_none() && l.transfer(13).is_none() && l.transfer(14).is_none());
}

#[test]
fn first_event_failing_skips_the_rest() {
    let mut l = ledger();
    assert_eq!(
        l.transfers(vec![
            linked(tr(10, 2, 9, 1)),
            linked(tr(11, 2, 3, 1)),
            tr(12, 2, 3, 1),
            tr(13, 2, 3, 1),
        ]),
        vec![
            T::CreditAccountNotFound,
            T::LinkedEventFailed,
            T::LinkedEventFailed,
            T::Ok
        ]
    );
    assert_eq!(l.balances(2), (0, 1, 0, 0));
}

#[test]
fn chain_open_at_batch_end() {
    let mut l = ledger();
    assert_eq!(
        l.transfers(vec![
            tr(9, 2, 3, 1),
            linked(tr(10, 2, 3, 5)),
            linked(tr(11, 3, 4, 5)),
        ]),
        vec![T::Ok, T::LinkedEventFailed, T::LinkedEventChainOpen]
    );
    assert_eq!(l.balances(2), (0, 1, 0, 0));
    assert_eq!(l.balances(4), (0, 0, 0, 0));
    assert!(l.transfer(10).is_none() && l.transfer(11).is_none());
    // A chain of one linked event alone in its batch.
    assert_eq!(
        l.transfers(vec![linked(tr(12, 2, 3, 1))]),
        vec![T::LinkedEventChainOpen]
    );
    assert!(l.transfer(12).is_none());
}

#[test]
fn several_chains_in_one_batch() {
    let mut l = ledger();
    let results = l.transfers(vec![
        // chain A: ok
        linked(tr(10, 2, 3, 100)),
        tr(11, 3, 4, 40),
        // chain B: fails on its last event
        linked(tr(12, 2, 4, 7)),
        linked(tr(13, 4, 3, 7)),
        tr(14, 3, 3, 1),
        // a single event
        tr(15, 4, 2, 2),
        // chain C: ok, three events
        linked(tr(16, 2, 1, 20)),
        linked(tr(17, 1, 3, 20)),
        pending(18, 3, 2, 5, 0),
        // chain D: open at the end
        linked(tr(19, 2, 3, 1000)),
        linked(tr(20, 2, 3, 1000)),
    ]);
    assert_eq!(
        results,
        vec![
            T::Ok,
            T::Ok,
            T::LinkedEventFailed,
            T::LinkedEventFailed,
            T::AccountsMustBeDifferent,
            T::Ok,
            T::Ok,
            T::Ok,
            T::Ok,
            T::LinkedEventFailed,
            T::LinkedEventChainOpen,
        ]
    );
    assert_eq!(l.balances(1), (0, 20, 0, 20));
    assert_eq!(l.balances(2), (0, 120, 5, 2));
    assert_eq!(l.balances(3), (5, 40, 0, 120));
    assert_eq!(l.balances(4), (0, 2, 0, 40));
    let mut stored: Vec<u128> = l.store.transfers.keys().map(|id| id.0).collect();
    stored.sort();
    assert_eq!(stored, vec![10, 11, 15, 16, 17, 18]);
}

#[test]
fn retry_of_a_successful_chain_answers_exists_for_all() {
    let mut l = ledger();
    let chain = vec![
        linked(tr(10, 2, 1, 50)),
        linked(pending(11, 1, 3, 30, 1)),
        linked(post(12, 11, 20)),
        tr(13, 1, 4, 10),
    ];
    assert_eq!(l.transfers(chain.clone()), vec![T::Ok; 4]);
    let accounts = l.store.accounts.clone();
    let transfers = l.store.transfers.clone();
    assert_eq!(l.transfers(chain.clone()), vec![T::Exists; 4]);
    l.advance_secs(5);
    assert_eq!(l.transfers(chain), vec![T::Exists; 4]);
    assert_eq!(l.store.accounts, accounts);
    assert_eq!(l.store.transfers, transfers);
}

/// A chain mixing an event applied before (`exists`) with new ones is no retry: it fails at the
/// `exists` event and applies none of the new ones.
#[test]
fn a_retried_prefix_with_new_events_fails_the_chain() {
    let mut l = ledger();
    assert_eq!(
        l.transfers(vec![linked(tr(10, 2, 3, 5)), tr(11, 3, 4, 1)]),
        vec![T::Ok, T::Ok]
    );
    assert_eq!(
        l.transfers(vec![linked(tr(10, 2, 3, 5)), tr(20, 3, 4, 5)]),
        vec![T::Exists, T::LinkedEventFailed]
    );
    assert_eq!(l.balances(3), (0, 1, 0, 5));
    assert!(l.transfer(20).is_none());
    // The linked flag is one of the fields: the same transfer without it is different,
    // and an exists_with_different_fields breaks the chain.
    assert_eq!(
        l.transfers(vec![linked(tr(12, 3, 4, 1)), tr(10, 2, 3, 5)]),
        vec![T::LinkedEventFailed, T::ExistsWithDifferentFields]
    );
    assert_eq!(l.balances(3), (0, 1, 0, 5));
    assert!(l.transfer(12).is_none());
}

#[test]
fn rolled_back_post_leaves_the_pending_transfer_pending() {
    let mut l = ledger();
    assert_eq!(l.transfer1(pending(10, 2, 3, 50, 60)), T::Ok);
    let expiries = l.store.expiries.clone();
    assert_eq!(
        l.transfers(vec![linked(post_full(11, 10)), tr(12, 3, 3, 1)]),
        vec![T::LinkedEventFailed, T::AccountsMustBeDifferent]
    );
    assert_eq!(l.status(10), Some(PendingStatus::Pending));
    assert_eq!(l.balances(2), (50, 0, 0, 0));
    assert_eq!(l.store.expiries, expiries, "the expiry is still registered");
    assert!(l.transfer(11).is_none());
    // Within one batch, a post after the rolled-back chain still finds it pending.
    assert_eq!(
        l.transfers(vec![
            linked(void(11, 10, 0)),
            tr(12, 2, 9, 1),
            post(13, 10, 10),
        ]),
        vec![T::LinkedEventFailed, T::CreditAccountNotFound, T::Ok]
    );
    assert_eq!(l.balances(2), (0, 10, 0, 0));
    assert_eq!(l.status(10), Some(PendingStatus::Posted));
    assert!(l.store.expiries.is_empty());
}

#[test]
fn rolled_back_pending_registers_no_status_and_no_expiry() {
    let mut l = ledger();
    assert_eq!(
        l.transfers(vec![
            linked(pending(10, 2, 3, 50, 1)),
            linked(post_full(11, 10)),
            tr(12, 2, 9, 1),
        ]),
        vec![
            T::LinkedEventFailed,
            T::LinkedEventFailed,
            T::CreditAccountNotFound
        ]
    );
    assert_eq!(l.store.pending_status(TransferId(10)), None);
    assert!(l.store.expiries.is_empty());
    assert!(l.store.transfers.is_empty());
    // The id is free again.
    l.advance_secs(2);
    assert_eq!(l.transfer1(tr(10, 2, 3, 1)), T::Ok);
    assert_eq!(l.balances(2), (0, 1, 0, 0));
}

#[test]
fn pending_and_post_in_one_chain_with_history() {
    let mut l = Ledger::default();
    l.open(vec![acct_flags(1, 1, AccountFlags::HISTORY), acct(2, 1)]);
    assert_eq!(
        l.transfers(vec![
            linked(pending(10, 1, 2, 8, 0)),
            linked(post_full(11, 10)),
            NewTransfer {
                code: 0,
                ..tr(12, 1, 2, 2)
            },
        ]),
        vec![
            T::LinkedEventFailed,
            T::LinkedEventFailed,
            T::CodeMustNotBeZero
        ]
    );
    assert!(l.store.balance_history.is_empty(), "history rolls back too");
    assert_eq!(
        l.transfers(vec![
            linked(pending(10, 1, 2, 8, 0)),
            linked(post_full(11, 10)),
            NewTransfer {
                user_data_64: 1,
                ..tr(12, 1, 2, 2)
            },
        ]),
        vec![T::Ok; 3]
    );
    let history: Vec<_> = l
        .store
        .balance_history
        .iter()
        .map(|(id, _, b)| (id.0, b.debits_pending, b.debits_posted))
        .collect();
    assert_eq!(history, vec![(1, 8, 0), (1, 0, 8), (1, 0, 10)]);
}
