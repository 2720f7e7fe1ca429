//! Conformance of the state machine to its rules, written from the rules rather than from the
//! code: existing ids answer first, transiently failed ids stay failed, chains and `exists`,
//! int_max ids, voids, user data inheritance, balancing and closing transfers, zero amounts,
//! and the `ExpirePending` batch.

mod common;

use bulwark_ledger::codec::{decode, encode, encoded_len};
use bulwark_ledger::{
    AccountFlags, AccountId, Balances, Batch, BatchResults, CreateAccountResult as A,
    CreateTransferResult as T, NewAccount, NewTransfer, Operation, PendingStatus, Timestamp,
    TransferFlags as F, TransferId, AMOUNT_MAX, NANOS_PER_SECOND,
};
use bulwark_limits::FAILED_TRANSFER_ID_RETENTION;
use common::*;

/// Accounts 1 to 6 on ledger 1 and 7 on ledger 2; 5 may not have debits exceed credits, 6 may
/// not have credits exceed debits.
fn ledger() -> Ledger {
    let mut l = Ledger::default();
    l.open(vec![
        acct(1, 1),
        acct(2, 1),
        acct(3, 1),
        acct(4, 1),
        acct_flags(5, 1, AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS),
        acct_flags(6, 1, AccountFlags::CREDITS_MUST_NOT_EXCEED_DEBITS),
        acct(7, 2),
    ]);
    l
}

/// Everything a batch can change but the clock.
fn state(l: &Ledger) -> impl PartialEq + std::fmt::Debug {
    let s = &l.store;
    let mut failed: Vec<_> = s.failed_transfers.iter().map(|(k, v)| (*k, *v)).collect();
    failed.sort();
    let mut transfers: Vec<_> = s.transfers.values().copied().collect();
    transfers.sort_by_key(|t| t.id);
    let mut pending: Vec<_> = s.pending.iter().map(|(k, v)| (*k, *v)).collect();
    pending.sort_by_key(|(k, _)| *k);
    (
        s.accounts.clone(),
        transfers,
        pending,
        failed,
        s.expiries.clone(),
        s.balance_history.clone(),
    )
}

fn stored_amount(l: &Ledger, id: u128) -> u128 {
    l.transfer(id)
        .unwrap_or_else(|| panic!("transfer {id} stored"))
        .amount
}

// ---------------------------------------------------------------------------------------------
// An existing id answers first

#[test]
fn an_existing_account_id_answers_before_the_field_checks() {
    let mut l = Ledger::default();
    let a = NewAccount {
        user_data_64: 5,
        ..acct(1, 1)
    };
    l.open(vec![a]);
    let before = l.account(1);
    let both_limits =
        AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS | AccountFlags::CREDITS_MUST_NOT_EXCEED_DEBITS;
    assert_eq!(
        l.accounts(vec![
            NewAccount { ledger: 0, ..a },
            NewAccount { code: 0, ..a },
            NewAccount {
                flags: both_limits,
                ..a
            },
            NewAccount { ledger: 2, ..a },
            // `closed` is not compared: it is state, not a creation field.
            acct_flags(1, 1, AccountFlags::CLOSED),
            NewAccount {
                flags: AccountFlags::CLOSED,
                ..a
            },
        ]),
        vec![
            A::ExistsWithDifferentFields,
            A::ExistsWithDifferentFields,
            A::ExistsWithDifferentFields,
            A::ExistsWithDifferentFields,
            A::ExistsWithDifferentFields,
            A::Exists,
        ]
    );
    assert_eq!(l.account(1), before, "no retry changes the account");
}

#[test]
fn an_existing_transfer_id_answers_before_the_field_checks() {
    let mut l = ledger();
    let t = tr(10, 1, 2, 5);
    assert_eq!(l.transfer1(t), T::Ok);
    let before = state(&l);
    // Each of these alone would be refused for its fields; with a taken id it learns that.
    let retries = vec![
        tr(10, 0, 2, 5),
        tr(10, u128::MAX, 2, 5),
        tr(10, 1, 0, 5),
        tr(10, 1, u128::MAX, 5),
        tr(10, 1, 1, 5),
        tr(10, 99, 2, 5),
        tr(10, 1, 7, 5),
        NewTransfer { ledger: 2, ..t },
        NewTransfer { ledger: 0, ..t },
        NewTransfer { code: 0, ..t },
        NewTransfer { timeout: 1, ..t },
        NewTransfer {
            pending_id: TransferId(3),
            ..t
        },
        with(t, F::CLOSING_DEBIT),
        with(t, F::POST_PENDING_TRANSFER | F::VOID_PENDING_TRANSFER),
    ];
    let n = retries.len();
    assert_eq!(l.transfers(retries), vec![T::ExistsWithDifferentFields; n]);
    assert_eq!(
        state(&l),
        before,
        "a taken id reserves nothing and moves nothing"
    );
}

#[test]
fn a_post_retried_with_a_larger_amount_is_a_different_post_not_an_excess() {
    let mut l = ledger();
    assert_eq!(
        l.transfers(vec![pending(10, 1, 2, 100, 0), post(11, 10, 40)]),
        vec![T::Ok, T::Ok]
    );
    assert_eq!(
        l.transfers(vec![
            post(11, 10, 101),
            post_full(11, 10),
            post(11, 10, 40),
            // A new id meets the amount check (before the pending transfer's status).
            post(12, 10, 101),
        ]),
        vec![
            T::ExistsWithDifferentFields,
            T::ExistsWithDifferentFields,
            T::Exists,
            T::ExceedsPendingTransferAmount,
        ]
    );
    assert_eq!(l.balances(1), (0, 40, 0, 0));
}

// ---------------------------------------------------------------------------------------------
// Failed ids stay failed

/// One event per transient result, on `ledger()` plus account 8 created closed.
fn transient_refusals() -> Vec<(NewTransfer, T)> {
    vec![
        (tr(20, 99, 2, 5), T::DebitAccountNotFound),
        (tr(21, 1, 99, 5), T::CreditAccountNotFound),
        (post_full(22, 98), T::PendingTransferNotFound),
        (tr(23, 5, 2, 5), T::ExceedsCredits),
        (tr(24, 1, 6, 5), T::ExceedsDebits),
        (tr(25, 8, 2, 5), T::DebitAccountAlreadyClosed),
        (tr(26, 1, 8, 5), T::CreditAccountAlreadyClosed),
    ]
}

#[test]
fn each_transient_refusal_reserves_its_id() {
    let mut l = ledger();
    l.open(vec![acct_flags(8, 1, AccountFlags::CLOSED)]);
    let cases = transient_refusals();
    let codes: Vec<T> = cases.iter().map(|(_, r)| *r).collect();
    let mut want: Vec<T> = T::ALL
        .iter()
        .copied()
        .filter(|r| r.is_transient())
        .collect();
    let mut covered = codes.clone();
    covered.sort_by_key(|r| r.name());
    want.sort_by_key(|r| r.name());
    assert_eq!(covered, want, "one case per transient result");
    for (event, code) in cases {
        let id = event.id.0;
        let ts = l.next_event();
        assert_eq!(l.transfer1(event), code);
        assert_eq!(l.failed(id), Some(Timestamp(ts)), "{code} reserves {id}");
        // Any fields, even valid ones: the id is what is refused.
        assert_eq!(l.transfer1(tr(id, 1, 2, 5)), T::IdAlreadyFailed);
        assert_eq!(l.transfer1(tr(id + 100, 1, 2, 5)), T::Ok);
        assert!(l.transfer(id).is_none());
    }
    assert_eq!(l.balances(1), (0, 35, 0, 0));
}

#[test]
fn non_transient_refusals_reserve_nothing() {
    let mut l = ledger();
    assert_eq!(
        l.transfers(vec![
            tr(1, 4, 3, u128::MAX),
            pending(2, 1, 2, 10, 0),
            pending(3, 1, 2, 10, 0),
            post_full(4, 3),
            pending(5, 1, 2, 10, 1),
        ]),
        vec![T::Ok; 5]
    );
    l.advance_secs(2);
    let cases = vec![
        (tr(40, 1, 1, 5), T::AccountsMustBeDifferent),
        (
            NewTransfer {
                ledger: 0,
                ..tr(41, 1, 2, 5)
            },
            T::LedgerMustNotBeZero,
        ),
        (tr(42, 1, 7, 5), T::LedgerMustMatch),
        (
            with(tr(43, 1, 2, 5), F::CLOSING_DEBIT),
            T::ClosingTransferMustBePending,
        ),
        (
            with(post_full(44, 2), F::PENDING),
            T::FlagsAreMutuallyExclusive,
        ),
        (tr(45, 4, 2, 1), T::OverflowsDebitsPosted),
        (tr(46, 2, 3, 1), T::OverflowsCreditsPosted),
        (post(47, 2, 11), T::ExceedsPendingTransferAmount),
        (void(48, 2, 9), T::PendingTransferHasDifferentAmount),
        (post_full(49, 3), T::PendingTransferAlreadyPosted),
        (post_full(50, 5), T::PendingTransferExpired),
        (post_full(51, 4), T::PendingTransferNotPending),
        (post(52, 52, 1), T::PendingIdMustBeDifferent),
    ];
    let (events, codes): (Vec<_>, Vec<_>) = cases.into_iter().unzip();
    assert_eq!(l.transfers(events.clone()), codes);
    assert!(l.store.failed_transfers.is_empty());
    // The same ids with valid fields are new transfers.
    let n = events.len();
    let valid = events.iter().map(|e| tr(e.id.0, 1, 2, 1)).collect();
    assert_eq!(l.transfers(valid), vec![T::Ok; n]);
}

#[test]
fn a_reservation_survives_the_rollback_of_its_chain() {
    let mut l = ledger();
    assert_eq!(
        l.transfers(vec![
            linked(tr(10, 1, 2, 5)),
            linked(tr(11, 1, 99, 5)),
            tr(12, 1, 2, 5),
        ]),
        vec![
            T::LinkedEventFailed,
            T::CreditAccountNotFound,
            T::LinkedEventFailed
        ]
    );
    assert!(l.failed(11).is_some());
    assert_eq!((l.failed(10), l.failed(12)), (None, None));
    // An event answered linked_event_failed is never run, so it reserves nothing even when it
    // would have been refused for a transient reason.
    assert_eq!(
        l.transfers(vec![linked(tr(20, 1, 1, 5)), tr(21, 99, 2, 5)]),
        vec![T::AccountsMustBeDifferent, T::LinkedEventFailed]
    );
    assert_eq!(l.failed(21), None);
    assert_eq!(
        l.transfers(vec![
            tr(10, 1, 2, 5),
            tr(11, 1, 2, 5),
            tr(12, 1, 2, 5),
            tr(21, 1, 2, 5),
        ]),
        vec![T::Ok, T::IdAlreadyFailed, T::Ok, T::Ok]
    );
}

#[test]
fn a_reservation_ends_after_the_retention() {
    let retention = u64::try_from(FAILED_TRANSFER_ID_RETENTION.as_nanos()).unwrap();
    assert_eq!(retention % NANOS_PER_SECOND, 0);
    let mut l = ledger();
    let failed_at = l.next_event();
    assert_eq!(l.transfer1(tr(10, 1, 99, 5)), T::CreditAccountNotFound);
    l.advance_secs(retention / NANOS_PER_SECOND - 1);
    assert_eq!(l.transfer1(tr(10, 1, 2, 5)), T::IdAlreadyFailed);
    // Answering id_already_failed does not renew it: the last nanosecond still refuses...
    l.first_event_at(failed_at + retention - 1);
    assert_eq!(l.transfer1(tr(10, 1, 2, 5)), T::IdAlreadyFailed);
    // ...and the retention after the refusal, the id is free.
    assert_eq!(l.next_event(), failed_at + retention);
    assert_eq!(l.transfer1(tr(10, 1, 2, 5)), T::Ok);
    assert_eq!(l.balances(1), (0, 5, 0, 0));
}

// ---------------------------------------------------------------------------------------------
// Chains and `exists`

#[test]
fn a_retried_chain_answers_exists_throughout_and_changes_nothing() {
    let mut l = ledger();
    l.open(vec![acct_flags(8, 1, AccountFlags::HISTORY)]);
    let chain = vec![
        linked(tr(10, 8, 2, 5)),
        linked(pending(11, 8, 3, 4, 1)),
        linked(post(12, 11, 3)),
        tr(13, 2, 8, 1),
    ];
    assert_eq!(l.transfers(chain.clone()), vec![T::Ok; 4]);
    let before = state(&l);
    assert_eq!(l.transfers(chain), vec![T::Exists; 4]);
    assert_eq!(state(&l), before);
    let accounts = vec![
        acct_flags(20, 1, AccountFlags::LINKED),
        acct_flags(21, 1, AccountFlags::LINKED),
        acct(22, 1),
    ];
    assert_eq!(l.accounts(accounts.clone()), vec![A::Ok; 3]);
    let before = state(&l);
    assert_eq!(l.accounts(accounts), vec![A::Exists; 3]);
    assert_eq!(state(&l), before);
}

#[test]
fn a_chain_mixing_new_and_applied_events_fails_at_its_first_exists() {
    let mut l = ledger();
    // The linked flag is a field: events applied in a chain are `exists` in a chain.
    assert_eq!(
        l.transfers(vec![
            linked(tr(10, 1, 2, 5)),
            linked(tr(11, 1, 2, 6)),
            tr(12, 1, 2, 7),
            tr(13, 1, 2, 8),
        ]),
        vec![T::Ok; 4]
    );
    let before = state(&l);
    let results = l.transfers(vec![
        linked(tr(20, 1, 2, 1)),
        linked(tr(10, 1, 2, 5)),
        tr(21, 1, 2, 1),
        // Applied events first, then a new one.
        linked(tr(10, 1, 2, 5)),
        linked(tr(11, 1, 2, 6)),
        tr(22, 1, 2, 1),
        // An event applied on its own closing a chain of new ones.
        linked(tr(23, 1, 2, 1)),
        tr(13, 1, 2, 8),
    ]);
    assert_eq!(
        results,
        vec![
            T::LinkedEventFailed,
            T::Exists,
            T::LinkedEventFailed,
            T::Exists,
            T::LinkedEventFailed,
            T::LinkedEventFailed,
            T::LinkedEventFailed,
            T::Exists,
        ]
    );
    assert_eq!(state(&l), before, "nothing of a mixed chain is applied");
    assert_eq!(
        l.accounts(vec![acct_flags(30, 1, AccountFlags::LINKED), acct(1, 1)]),
        vec![A::LinkedEventFailed, A::Exists]
    );
    assert!(!l.store.accounts.contains_key(&AccountId(30)));
}

#[test]
fn a_chain_naming_one_id_twice_fails() {
    let mut l = ledger();
    assert_eq!(
        l.transfers(vec![
            linked(tr(10, 1, 2, 5)),
            linked(tr(10, 1, 2, 5)),
            tr(11, 1, 2, 5),
        ]),
        vec![T::LinkedEventFailed, T::Exists, T::LinkedEventFailed]
    );
    assert!(l.store.transfers.is_empty());
    assert_eq!(
        l.failed(10),
        None,
        "neither exists nor linked_event_failed reserves"
    );
    let twice = acct_flags(30, 1, AccountFlags::LINKED);
    assert_eq!(
        l.accounts(vec![twice, twice, acct(31, 1)]),
        vec![A::LinkedEventFailed, A::Exists, A::LinkedEventFailed]
    );
    assert!(!l.store.accounts.contains_key(&AccountId(30)));
    // The chain's events are free to be applied once.
    assert_eq!(l.transfer1(tr(10, 1, 2, 5)), T::Ok);
    assert_eq!(l.account1(acct(30, 1)), A::Ok);
}

#[test]
fn the_last_linked_event_answers_chain_open_even_after_its_chain_failed() {
    let mut l = ledger();
    assert_eq!(
        l.transfers(vec![
            tr(9, 1, 2, 1),
            linked(tr(10, 1, 1, 5)),
            linked(tr(11, 1, 2, 5)),
            linked(tr(12, 1, 2, 5)),
        ]),
        vec![
            T::Ok,
            T::AccountsMustBeDifferent,
            T::LinkedEventFailed,
            T::LinkedEventChainOpen,
        ]
    );
    assert_eq!(
        l.transfers(vec![linked(tr(13, 1, 99, 5)), linked(tr(14, 1, 2, 5))]),
        vec![T::CreditAccountNotFound, T::LinkedEventChainOpen]
    );
    assert!(l.failed(13).is_some() && l.failed(14).is_none());
    assert_eq!(
        l.accounts(vec![
            acct_flags(20, 0, AccountFlags::LINKED),
            acct_flags(21, 1, AccountFlags::LINKED),
        ]),
        vec![A::LedgerMustNotBeZero, A::LinkedEventChainOpen]
    );
    assert_eq!(l.balances(1), (0, 1, 0, 0));
}

// ---------------------------------------------------------------------------------------------
// int_max ids, voids and user data

#[test]
fn int_max_ids_are_refused() {
    let mut l = ledger();
    assert_eq!(l.account1(acct(u128::MAX, 1)), A::IdMustNotBeIntMax);
    assert_eq!(
        l.transfers(vec![
            tr(u128::MAX, 1, 2, 5),
            tr(10, u128::MAX, 2, 5),
            tr(11, 1, u128::MAX, 5),
            post(12, u128::MAX, 5),
            void(13, u128::MAX, 0),
        ]),
        vec![
            T::IdMustNotBeIntMax,
            T::DebitAccountIdMustNotBeIntMax,
            T::CreditAccountIdMustNotBeIntMax,
            T::PendingIdMustNotBeIntMax,
            T::PendingIdMustNotBeIntMax,
        ]
    );
    assert!(l.store.transfers.is_empty() && l.store.failed_transfers.is_empty());
}

#[test]
fn a_void_must_name_the_full_amount_or_zero() {
    let mut l = ledger();
    assert_eq!(l.transfer1(pending(10, 1, 2, 100, 0)), T::Ok);
    assert_eq!(
        l.transfers(vec![
            void(11, 10, 101),
            void(12, 10, AMOUNT_MAX),
            void(13, 10, 99),
            void(14, 10, 1),
        ]),
        vec![
            T::ExceedsPendingTransferAmount,
            T::ExceedsPendingTransferAmount,
            T::PendingTransferHasDifferentAmount,
            T::PendingTransferHasDifferentAmount,
        ]
    );
    assert_eq!(l.transfer1(void(15, 10, 100)), T::Ok);
    assert_eq!(stored_amount(&l, 15), 100);
    assert_eq!(l.balances(1), (0, 0, 0, 0));
}

#[test]
fn a_post_or_void_without_user_data_inherits_the_pending_transfers() {
    let mut l = ledger();
    let ud = |user_data_64, t: NewTransfer| NewTransfer { user_data_64, ..t };
    assert_eq!(
        l.transfers(vec![
            ud(7, pending(10, 1, 2, 100, 0)),
            ud(7, pending(11, 1, 2, 50, 0)),
            ud(7, pending(12, 1, 2, 10, 0)),
            post_full(20, 10),
            ud(9, post_full(21, 11)),
            void(22, 12, 0),
        ]),
        vec![T::Ok; 6]
    );
    let stored = |id| l.transfer(id).map(|t| t.user_data_64);
    assert_eq!(
        (stored(20), stored(21), stored(22)),
        (Some(7), Some(9), Some(7))
    );
    // The exists check reads 0 as "as the pending transfer".
    assert_eq!(
        l.transfers(vec![
            post_full(20, 10),
            ud(7, post_full(20, 10)),
            ud(8, post_full(20, 10)),
            ud(9, post_full(21, 11)),
            post_full(21, 11),
            ud(7, void(22, 12, 0)),
        ]),
        vec![
            T::Exists,
            T::Exists,
            T::ExistsWithDifferentFields,
            T::Exists,
            T::ExistsWithDifferentFields,
            T::Exists,
        ]
    );
}

// ---------------------------------------------------------------------------------------------
// Balancing transfers

fn balancing_debit(id: u128, dr: u128, cr: u128, cap: u128) -> NewTransfer {
    with(tr(id, dr, cr, cap), F::BALANCING_DEBIT)
}

fn balancing_credit(id: u128, dr: u128, cr: u128, cap: u128) -> NewTransfer {
    with(tr(id, dr, cr, cap), F::BALANCING_CREDIT)
}

#[test]
fn balancing_debit_moves_at_most_its_cap_and_what_the_debit_account_holds() {
    let mut l = ledger();
    assert_eq!(l.transfer1(tr(1, 2, 1, 100)), T::Ok);
    assert_eq!(l.transfer1(balancing_debit(10, 1, 3, 30)), T::Ok);
    assert_eq!(stored_amount(&l, 10), 30, "the cap");
    assert_eq!(l.transfer1(balancing_debit(11, 1, 3, 0)), T::Ok);
    assert_eq!(stored_amount(&l, 11), 70, "0: no cap, what is left");
    assert_eq!(l.transfer1(balancing_debit(12, 1, 3, AMOUNT_MAX)), T::Ok);
    assert_eq!(stored_amount(&l, 12), 0, "nothing left, nothing moved");
    assert_eq!(l.balances(1), (0, 100, 0, 100));
    assert_eq!(l.transfer1(tr(2, 2, 1, 50)), T::Ok);
    assert_eq!(l.transfer1(balancing_debit(13, 1, 3, AMOUNT_MAX)), T::Ok);
    assert_eq!(stored_amount(&l, 13), 50, "AMOUNT_MAX: no cap");
    assert_eq!(l.balances(3), (0, 0, 0, 150));
    // An account in debit already has nothing to give.
    assert_eq!(l.transfer1(tr(3, 4, 2, 9)), T::Ok);
    assert_eq!(l.transfer1(balancing_debit(14, 4, 3, 0)), T::Ok);
    assert_eq!(stored_amount(&l, 14), 0);
    assert_eq!(l.balances(4), (0, 9, 0, 0));
}

#[test]
fn balancing_credit_moves_at_most_what_the_credit_account_owes() {
    let mut l = ledger();
    assert_eq!(l.transfer1(tr(1, 6, 2, 60)), T::Ok);
    assert_eq!(l.transfer1(balancing_credit(10, 1, 6, 0)), T::Ok);
    assert_eq!(stored_amount(&l, 10), 60);
    assert_eq!(l.balances(6), (0, 60, 0, 60));
    assert_eq!(l.transfer1(tr(11, 1, 6, 1)), T::ExceedsDebits);
    // Without limit flags too: account 1 has debits posted 60 and no credits.
    assert_eq!(l.transfer1(balancing_credit(12, 3, 1, 15)), T::Ok);
    assert_eq!(stored_amount(&l, 12), 15);
    assert_eq!(l.transfer1(balancing_credit(13, 3, 1, AMOUNT_MAX)), T::Ok);
    assert_eq!(stored_amount(&l, 13), 45);
    assert_eq!(l.balances(1), (0, 60, 0, 60));
}

#[test]
fn balancing_with_both_flags_moves_the_smaller_of_both() {
    let mut l = ledger();
    // Account 3 holds 10 in credit, account 4 owes 7.
    assert_eq!(
        l.transfers(vec![tr(1, 1, 3, 10), tr(2, 4, 2, 7)]),
        vec![T::Ok, T::Ok]
    );
    let both = F::BALANCING_DEBIT | F::BALANCING_CREDIT;
    assert_eq!(l.transfer1(with(tr(10, 3, 4, 3), both)), T::Ok);
    assert_eq!(stored_amount(&l, 10), 3, "the cap is smallest");
    assert_eq!(l.transfer1(with(tr(11, 3, 4, 0), both)), T::Ok);
    assert_eq!(
        stored_amount(&l, 11),
        4,
        "account 4 owed 4 more, account 3 held 7"
    );
    assert_eq!(l.balances(3), (0, 7, 0, 10));
    assert_eq!(l.balances(4), (0, 7, 0, 7));
}

#[test]
fn balancing_pending_transfers_reserve_and_count_what_is_reserved() {
    let mut l = ledger();
    assert_eq!(l.transfer1(tr(1, 2, 5, 40)), T::Ok);
    let pending_balancing = with(pending(10, 5, 3, 0, 0), F::BALANCING_DEBIT);
    assert_eq!(l.transfer1(pending_balancing), T::Ok);
    assert_eq!(stored_amount(&l, 10), 40);
    assert_eq!(l.balances(5), (40, 0, 0, 40));
    // Pending debits count against what is left.
    assert_eq!(l.transfer1(balancing_debit(11, 5, 3, 0)), T::Ok);
    assert_eq!(stored_amount(&l, 11), 0);
    assert_eq!(l.transfer1(void(12, 10, 0)), T::Ok);
    let capped = with(pending(13, 5, 3, 25, 0), F::BALANCING_DEBIT);
    assert_eq!(l.transfer1(capped), T::Ok);
    assert_eq!(l.transfer1(post_full(14, 13)), T::Ok);
    assert_eq!(stored_amount(&l, 14), 25);
    assert_eq!(l.balances(5), (0, 25, 0, 40));
}

#[test]
fn balancing_never_overdraws_a_limited_account() {
    let mut l = ledger();
    assert_eq!(l.transfer1(tr(1, 2, 5, 50)), T::Ok);
    let mut id = 10;
    for cap in [7, 0, 3, AMOUNT_MAX, 60] {
        for t in [
            balancing_debit(id, 5, 3, cap),
            with(pending(id + 1, 5, 3, cap, 0), F::BALANCING_DEBIT),
        ] {
            assert_eq!(l.transfer1(t), T::Ok);
            let a = l.account(5);
            assert!(
                a.debits_pending + a.debits_posted <= a.credits_posted,
                "{a:?}"
            );
        }
        id += 2;
    }
    assert_eq!(l.balances(5), (7, 43, 0, 50));
    assert_eq!(l.transfer1(tr(2, 5, 3, 1)), T::ExceedsCredits);
}

#[test]
fn a_balancing_retry_is_exists_while_its_cap_covers_the_stored_amount() {
    let mut l = ledger();
    assert_eq!(l.transfer1(tr(1, 2, 1, 70)), T::Ok);
    assert_eq!(
        l.transfers(vec![
            balancing_debit(10, 1, 3, 30),
            balancing_debit(11, 1, 3, 0)
        ]),
        vec![T::Ok, T::Ok]
    );
    assert_eq!((stored_amount(&l, 10), stored_amount(&l, 11)), (30, 40));
    let before = state(&l);
    assert_eq!(
        l.transfers(vec![
            balancing_debit(10, 1, 3, 30),
            balancing_debit(10, 1, 3, 0),
            balancing_debit(10, 1, 3, AMOUNT_MAX),
            balancing_debit(10, 1, 3, 29),
            balancing_debit(11, 1, 3, 0),
            balancing_debit(11, 1, 3, 40),
            balancing_debit(11, 1, 3, 41),
            balancing_debit(11, 1, 3, 39),
            tr(11, 1, 3, 40),
        ]),
        vec![
            T::Exists,
            T::Exists,
            T::Exists,
            T::ExistsWithDifferentFields,
            T::Exists,
            T::Exists,
            T::Exists,
            T::ExistsWithDifferentFields,
            T::ExistsWithDifferentFields,
        ]
    );
    assert_eq!(state(&l), before);
}

// ---------------------------------------------------------------------------------------------
// Closing transfers

fn closing_debit(id: u128, dr: u128, cr: u128, timeout: u32) -> NewTransfer {
    with(pending(id, dr, cr, 0, timeout), F::CLOSING_DEBIT)
}

fn closing_credit(id: u128, dr: u128, cr: u128, timeout: u32) -> NewTransfer {
    with(pending(id, dr, cr, 0, timeout), F::CLOSING_CREDIT)
}

#[test]
fn a_closing_transfer_must_be_pending() {
    let mut l = ledger();
    assert_eq!(
        l.transfers(vec![
            with(tr(10, 1, 2, 0), F::CLOSING_DEBIT),
            with(tr(11, 1, 2, 0), F::CLOSING_CREDIT),
        ]),
        vec![T::ClosingTransferMustBePending; 2]
    );
    assert!(!l.is_closed(1) && !l.is_closed(2));
}

#[test]
fn a_closed_account_refuses_transfers_on_both_sides() {
    let mut l = ledger();
    assert_eq!(l.transfer1(closing_debit(10, 1, 2, 0)), T::Ok);
    assert!(
        l.is_closed(1) && !l.is_closed(2),
        "closing_debit closes the debit account"
    );
    let before = l.store.accounts.clone();
    assert_eq!(
        l.transfers(vec![
            tr(20, 1, 3, 1),
            tr(21, 3, 1, 1),
            pending(22, 1, 3, 1, 0),
            pending(23, 3, 1, 1, 0),
            tr(24, 3, 1, 0),
            balancing_credit(25, 3, 1, 0),
            closing_debit(26, 1, 3, 0),
        ]),
        vec![
            T::DebitAccountAlreadyClosed,
            T::CreditAccountAlreadyClosed,
            T::DebitAccountAlreadyClosed,
            T::CreditAccountAlreadyClosed,
            T::CreditAccountAlreadyClosed,
            T::CreditAccountAlreadyClosed,
            T::DebitAccountAlreadyClosed,
        ]
    );
    assert_eq!(l.store.accounts, before);
    assert_eq!(l.transfer1(closing_credit(30, 3, 4, 0)), T::Ok);
    assert!(
        l.is_closed(4) && !l.is_closed(3),
        "closing_credit closes the credit account"
    );
    let both = with(closing_debit(31, 5, 6, 0), F::CLOSING_CREDIT);
    assert_eq!(l.transfer1(both), T::Ok);
    assert!(l.is_closed(5) && l.is_closed(6));
}

#[test]
fn posting_on_a_closed_account_is_refused_voiding_is_allowed() {
    let mut l = ledger();
    assert_eq!(
        l.transfers(vec![
            pending(10, 1, 2, 20, 0),
            pending(11, 3, 1, 30, 0),
            closing_debit(12, 1, 4, 0),
        ]),
        vec![T::Ok; 3]
    );
    assert_eq!(
        l.transfers(vec![post_full(20, 10), post(21, 11, 5), post_full(22, 12)]),
        vec![
            T::DebitAccountAlreadyClosed,
            T::CreditAccountAlreadyClosed,
            T::DebitAccountAlreadyClosed,
        ]
    );
    assert_eq!(
        l.transfers(vec![void(23, 10, 0), void(24, 11, 0)]),
        vec![T::Ok, T::Ok]
    );
    assert!(l.is_closed(1), "only voiding the closing transfer reopens");
    assert_eq!(l.balances(1), (0, 0, 0, 0));
    assert_eq!(l.balances(3), (0, 0, 0, 0));
}

#[test]
fn voiding_the_closing_transfer_reopens_its_accounts() {
    let mut l = ledger();
    let both = with(closing_debit(10, 1, 2, 0), F::CLOSING_CREDIT);
    assert_eq!(l.transfer1(both), T::Ok);
    assert!(l.is_closed(1) && l.is_closed(2));
    assert_eq!(l.transfer1(void(11, 10, 0)), T::Ok);
    assert!(!l.is_closed(1) && !l.is_closed(2));
    assert_eq!(l.status(10), Some(PendingStatus::Voided));
    assert_eq!(l.transfer1(tr(12, 1, 2, 5)), T::Ok);
    assert_eq!(l.balances(1), (0, 5, 0, 0));
}

#[test]
fn the_expiry_of_the_closing_transfer_reopens_its_account() {
    let mut l = ledger();
    assert_eq!(l.transfer1(closing_credit(10, 1, 2, 1)), T::Ok);
    assert!(l.is_closed(2));
    l.advance_secs(1);
    assert_eq!(l.expire(), 1);
    assert_eq!(l.status(10), Some(PendingStatus::Expired));
    assert!(!l.is_closed(2));
    assert_eq!(l.transfer1(tr(11, 1, 2, 5)), T::Ok);
    assert_eq!(l.balances(2), (0, 0, 0, 5));
}

#[test]
fn an_account_created_closed_refuses_transfers_and_answers_exists_either_way() {
    let mut l = ledger();
    assert_eq!(l.account1(acct_flags(8, 1, AccountFlags::CLOSED)), A::Ok);
    assert!(l.is_closed(8));
    assert_eq!(
        l.transfers(vec![tr(10, 8, 1, 1), tr(11, 1, 8, 0)]),
        vec![T::DebitAccountAlreadyClosed, T::CreditAccountAlreadyClosed]
    );
    assert_eq!(
        l.accounts(vec![acct(8, 1), acct_flags(8, 1, AccountFlags::CLOSED)]),
        vec![A::Exists, A::Exists]
    );
    // An account closed since its creation answers exists to its creation's retry.
    assert_eq!(l.transfer1(closing_debit(12, 1, 2, 0)), T::Ok);
    assert_eq!(l.account1(acct(1, 1)), A::Exists);
    assert!(l.is_closed(8) && l.is_closed(1));
}

// ---------------------------------------------------------------------------------------------
// Zero amounts

#[test]
fn a_transfer_of_zero_is_stored_and_moves_nothing() {
    let mut l = ledger();
    l.open(vec![acct_flags(8, 1, AccountFlags::HISTORY)]);
    assert_eq!(
        l.transfers(vec![
            tr(10, 8, 2, 0),
            tr(11, 5, 2, 0),
            pending(12, 8, 2, 0, 0)
        ]),
        vec![T::Ok; 3]
    );
    assert_eq!(stored_amount(&l, 10), 0);
    assert_eq!(
        stored_amount(&l, 11),
        0,
        "0 never exceeds a limited account"
    );
    assert_eq!(l.balances(8), (0, 0, 0, 0));
    assert_eq!(l.balances(5), (0, 0, 0, 0));
    assert_eq!(l.status(12), Some(PendingStatus::Pending));
    assert_eq!(
        l.store.balance_history.len(),
        2,
        "each is a change of record"
    );
    assert_eq!(l.transfer1(post_full(13, 12)), T::Ok);
    assert_eq!(stored_amount(&l, 13), 0);
}

#[test]
fn a_post_of_zero_posts_nothing_and_releases_the_whole_reservation() {
    let mut l = ledger();
    assert_eq!(l.transfer1(pending(10, 1, 2, 100, 0)), T::Ok);
    assert_eq!(l.transfer1(post(11, 10, 0)), T::Ok);
    assert_eq!(l.status(10), Some(PendingStatus::Posted));
    assert_eq!(stored_amount(&l, 11), 0);
    assert_eq!(l.balances(1), (0, 0, 0, 0));
    assert_eq!(l.balances(2), (0, 0, 0, 0));
    assert_eq!(l.transfer1(post(11, 10, 0)), T::Exists);
}

#[test]
fn a_void_of_zero_voids_the_full_amount() {
    let mut l = ledger();
    assert_eq!(l.transfer1(pending(10, 1, 2, 100, 0)), T::Ok);
    assert_eq!(l.transfer1(void(11, 10, 0)), T::Ok);
    assert_eq!(stored_amount(&l, 11), 100);
    assert_eq!(l.balances(1), (0, 0, 0, 0));
    assert_eq!(
        l.transfers(vec![void(11, 10, 0), void(11, 10, 100)]),
        vec![T::Exists; 2]
    );
}

// ---------------------------------------------------------------------------------------------
// ExpirePending

#[test]
fn expire_pending_expires_what_is_due_on_an_idle_ledger_and_records_history() {
    let mut l = Ledger::default();
    l.open(vec![acct_flags(1, 1, AccountFlags::HISTORY), acct(2, 1)]);
    assert_eq!(
        l.transfers(vec![
            pending(10, 1, 2, 100, 1),
            pending(11, 1, 2, 5, 3),
            pending(12, 1, 2, 7, 0),
            pending(13, 1, 2, 20, 3),
        ]),
        vec![T::Ok; 4]
    );
    let history = l.store.balance_history.len();
    l.advance_secs(2);
    let start = l.next_start();
    assert_eq!(l.expire(), 1);
    assert_eq!(l.status(10), Some(PendingStatus::Expired));
    assert_eq!(l.status(11), Some(PendingStatus::Pending));
    assert_eq!(l.balances(1), (32, 0, 0, 0));
    let after = |debits_pending| Balances {
        debits_pending,
        ..Balances::default()
    };
    assert_eq!(
        l.store.balance_history[history..],
        [(AccountId(1), Timestamp(start), after(32))],
        "one record, for the account with history, at the expiry"
    );
    let before = state(&l);
    assert_eq!(l.expire(), 0, "nothing more is due yet");
    assert_eq!(state(&l), before);
    l.advance_secs(2);
    let start = l.next_start();
    assert_eq!(l.expire(), 2);
    // Each expiry has a timestamp of its own, in deadline then id order.
    assert_eq!(
        l.store.balance_history[history + 1..],
        [
            (AccountId(1), Timestamp(start), after(27)),
            (AccountId(1), Timestamp(start + 1), after(7)),
        ]
    );
    assert_eq!(l.balances(2), (0, 0, 7, 0));
}

#[test]
fn an_expire_pending_batch_is_one_event_answering_ok() {
    let results = BatchResults::Expired(3);
    assert_eq!((results.names(), results.len()), (vec!["ok"], 1));
    assert_eq!(Operation::ExpirePending.len(), 1);
    let mut l = Ledger::default();
    let ts = l.next_event();
    assert_eq!(l.expire(), 0);
    assert_eq!(l.store.last_timestamp, Timestamp(ts));
}

#[test]
fn expire_pending_encodes_as_operation_4_without_event_bytes() {
    let batch = Batch {
        timestamp: Timestamp(0x0102_0304_0506_0708),
        operation: Operation::ExpirePending,
    };
    let mut bytes = Vec::new();
    encode(&batch, &mut bytes);
    // Version 4, operation 4, the timestamp, count 1.
    let golden = [4, 4, 8, 7, 6, 5, 4, 3, 2, 1, 1, 0, 0, 0];
    assert_eq!(bytes, golden);
    assert_eq!(encoded_len(&batch.operation), golden.len());
    assert_eq!(decode(&bytes), Ok(batch));
    let mut two = bytes.clone();
    two[10] = 2;
    assert!(decode(&two).is_err(), "an expiry batch is one event");
    let mut longer = bytes.clone();
    longer.push(0);
    assert!(
        decode(&longer).is_err(),
        "an expiry batch has no event bytes"
    );
}

// ---------------------------------------------------------------------------------------------
// 128-bit ids, amounts and user data

/// Ids past `u64::MAX` are ordinary ids (only 0 and `u128::MAX` are reserved); amounts past
/// `u64::MAX` add up exactly; the three user data fields are stored and compared on a retry.
#[test]
fn ids_amounts_and_user_data_are_128_bit() {
    let uuid: u128 = 0x0193_6f3a_2b1c_7d4e_8f90_a1b2_c3d4_e5f6;
    let big = u128::from(u64::MAX) + 1;
    let mut l = Ledger::default();
    let with_data = NewAccount {
        user_data_128: uuid,
        user_data_64: 64,
        user_data_32: 32,
        ..acct(uuid, 1)
    };
    l.open(vec![with_data, acct(big, 1)]);
    assert_eq!(l.account1(with_data), A::Exists);
    let changed = NewAccount {
        user_data_32: 33,
        ..with_data
    };
    assert_eq!(l.account1(changed), A::ExistsWithDifferentFields);

    let amount = u128::from(u64::MAX) * 3;
    let first = NewTransfer {
        user_data_128: 7,
        ..tr(big, uuid, big, amount)
    };
    assert_eq!(
        l.transfers(vec![first, tr(big + 1, uuid, big, amount)]),
        [T::Ok, T::Ok]
    );
    assert_eq!(l.balances(uuid), (0, 2 * amount, 0, 0), "no 64-bit wrap");
    assert_eq!(l.balances(big), (0, 0, 0, 2 * amount));
    assert_eq!(l.transfer(big).unwrap().user_data_128, 7);
    let other_data = NewTransfer {
        user_data_128: 8,
        ..first
    };
    assert_eq!(l.transfer1(other_data), T::ExistsWithDifferentFields);
    assert_eq!(
        l.transfer1(tr(u128::MAX, uuid, big, 1)),
        T::IdMustNotBeIntMax,
        "u128::MAX is reserved, u64::MAX is not"
    );
    assert_eq!(l.transfer1(tr(u128::from(u64::MAX), uuid, big, 1)), T::Ok);
}

/// A post or void inherits each user data field it gives as 0, one by one.
#[test]
fn a_post_inherits_each_zero_user_data_field_on_its_own() {
    let mut l = ledger();
    let p = NewTransfer {
        user_data_128: 1 << 100,
        user_data_64: 64,
        user_data_32: 32,
        ..pending(10, 1, 2, 5, 0)
    };
    assert_eq!(l.transfer1(p), T::Ok);
    let own_64 = NewTransfer {
        user_data_64: 99,
        ..post_full(11, 10)
    };
    assert_eq!(l.transfer1(own_64), T::Ok);
    let posted = l.transfer(11).unwrap();
    assert_eq!(
        (
            posted.user_data_128,
            posted.user_data_64,
            posted.user_data_32
        ),
        (1 << 100, 99, 32)
    );
    assert_eq!(
        l.transfer1(own_64),
        T::Exists,
        "the retry matches what was stored"
    );
}
