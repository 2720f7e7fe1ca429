//! Two-phase transfers: what a pending transfer reserves, and how posting, voiding and
//! expiry release it.

mod common;

use bulwark_ledger::{
    AccountId, CreateAccountResult as A, CreateTransferResult as T, NewTransfer, PendingStatus,
    Timestamp, TransferFlags, TransferId, NANOS_PER_SECOND,
};
use common::*;

fn two_accounts() -> Ledger {
    let mut l = Ledger::default();
    l.open(vec![acct(1, 1), acct(2, 1), acct(3, 1), acct(4, 1)]);
    l
}

#[test]
fn pending_reserves_debits_and_credits_pending() {
    let mut l = two_accounts();
    let ts = l.next_event();
    assert_eq!(l.transfer1(pending(10, 1, 2, 100, 0)), T::Ok);
    assert_eq!(l.balances(1), (100, 0, 0, 0));
    assert_eq!(l.balances(2), (0, 0, 100, 0));
    assert_eq!(l.status(10), Some(PendingStatus::Pending));
    assert!(l.store.expiries.is_empty(), "timeout 0 never expires");
    assert_eq!(l.transfer(10).unwrap().expires_at(), None);

    assert_eq!(l.transfer1(pending(11, 1, 2, 7, 10)), T::Ok);
    assert_eq!(l.balances(1), (107, 0, 0, 0));
    let at = Timestamp(ts + 1 + 10 * NANOS_PER_SECOND);
    assert_eq!(l.transfer(11).unwrap().expires_at(), Some(at));
    assert_eq!(
        l.store.expiries.iter().copied().collect::<Vec<_>>(),
        vec![(at, TransferId(11))]
    );
}

#[test]
fn full_post_with_amount_max_posts_the_pending_amount() {
    let mut l = two_accounts();
    let p = NewTransfer {
        code: 7,
        user_data_64: 1,
        ..pending(10, 1, 2, 100, 30)
    };
    assert_eq!(l.transfer1(p), T::Ok);
    let ts = l.next_event();
    assert_eq!(l.transfer1(post_full(11, 10)), T::Ok);
    assert_eq!(l.balances(1), (0, 100, 0, 0));
    assert_eq!(l.balances(2), (0, 0, 0, 100));
    assert_eq!(l.status(10), Some(PendingStatus::Posted));
    assert!(
        l.store.expiries.is_empty(),
        "a posted transfer no longer expires"
    );
    let stored = l.transfer(11).unwrap();
    assert_eq!(
        (
            stored.debit_account_id,
            stored.credit_account_id,
            stored.amount,
            stored.pending_id,
            stored.ledger,
            stored.code,
            stored.timeout,
            stored.flags,
            stored.timestamp,
        ),
        (
            AccountId(1),
            AccountId(2),
            100,
            TransferId(10),
            1,
            7,
            0,
            TransferFlags::POST_PENDING_TRANSFER,
            Timestamp(ts)
        )
    );
    // The pending transfer itself is unchanged.
    assert_eq!(l.transfer(10).unwrap().amount, 100);
    assert_eq!(l.status(11), None);
}

#[test]
fn full_post_with_explicit_amount() {
    let mut l = two_accounts();
    assert_eq!(l.transfer1(pending(10, 1, 2, 100, 0)), T::Ok);
    assert_eq!(l.transfer1(post(11, 10, 100)), T::Ok);
    assert_eq!(l.balances(1), (0, 100, 0, 0));
    assert_eq!(l.balances(2), (0, 0, 0, 100));
}

#[test]
fn partial_post_releases_the_remainder() {
    let mut l = two_accounts();
    assert_eq!(
        l.transfers(vec![pending(10, 1, 2, 100, 0), pending(12, 1, 2, 5, 0)]),
        vec![T::Ok, T::Ok]
    );
    assert_eq!(l.transfer1(post(11, 10, 30)), T::Ok);
    assert_eq!(l.balances(1), (5, 30, 0, 0));
    assert_eq!(l.balances(2), (0, 0, 5, 30));
    assert_eq!(l.transfer(11).unwrap().amount, 30);
    assert_eq!(l.status(10), Some(PendingStatus::Posted));
    // The remainder cannot be posted later.
    assert_eq!(
        l.transfer1(post(13, 10, 70)),
        T::PendingTransferAlreadyPosted
    );
    assert_eq!(l.balances(1), (5, 30, 0, 0));
}

#[test]
fn void_releases_everything() {
    let mut l = two_accounts();
    assert_eq!(
        l.transfers(vec![pending(10, 1, 2, 100, 5), pending(11, 1, 2, 40, 0)]),
        vec![T::Ok, T::Ok]
    );
    assert_eq!(
        l.transfers(vec![void(20, 10, 0), void(21, 11, 40)]),
        vec![T::Ok, T::Ok]
    );
    assert_eq!(l.balances(1), (0, 0, 0, 0));
    assert_eq!(l.balances(2), (0, 0, 0, 0));
    assert_eq!(l.status(10), Some(PendingStatus::Voided));
    assert_eq!(l.status(11), Some(PendingStatus::Voided));
    assert_eq!(l.transfer(20).unwrap().amount, 100);
    assert_eq!(l.transfer(20).unwrap().debit_account_id, AccountId(1));
    assert!(l.store.expiries.is_empty());
    assert_eq!(
        l.transfers(vec![post_full(22, 10), void(23, 11, 0)]),
        vec![
            T::PendingTransferAlreadyVoided,
            T::PendingTransferAlreadyVoided
        ]
    );
}

#[test]
fn void_amount_must_be_zero_or_the_full_amount() {
    let mut l = two_accounts();
    assert_eq!(l.transfer1(pending(10, 1, 2, 100, 0)), T::Ok);
    assert_eq!(
        l.transfer1(void(20, 10, 99)),
        T::PendingTransferHasDifferentAmount
    );
    assert_eq!(l.balances(1), (100, 0, 0, 0));
    assert_eq!(l.status(10), Some(PendingStatus::Pending));
}

#[test]
fn expiry_at_the_start_of_the_first_batch_at_or_after_the_instant() {
    let mut l = two_accounts();
    let ts = l.next_event();
    assert_eq!(
        l.transfers(vec![pending(10, 1, 2, 100, 10), pending(11, 1, 2, 1, 0)]),
        vec![T::Ok, T::Ok]
    );
    let at = ts + 10 * NANOS_PER_SECOND;

    // A batch whose first event is one nanosecond early leaves it pending.
    l.first_event_at(at - 1);
    assert_eq!(l.transfer1(tr(20, 3, 4, 1)), T::Ok);
    assert_eq!(l.status(10), Some(PendingStatus::Pending));
    assert_eq!(l.balances(1), (101, 0, 0, 0));

    // The batch whose first event is exactly at the instant expires it, before its events.
    l.first_event_at(at);
    assert_eq!(l.transfer1(tr(21, 3, 4, 1)), T::Ok);
    assert_eq!(l.status(10), Some(PendingStatus::Expired));
    assert_eq!(l.balances(1), (1, 0, 0, 0));
    assert_eq!(l.balances(2), (0, 0, 1, 0));
    assert!(l.store.expiries.is_empty());
    assert_eq!(l.status(11), Some(PendingStatus::Pending));

    assert_eq!(
        l.transfers(vec![post_full(22, 10), void(23, 10, 0), post(24, 10, 5)]),
        vec![
            T::PendingTransferExpired,
            T::PendingTransferExpired,
            T::PendingTransferExpired
        ]
    );
    assert_eq!(l.balances(1), (1, 0, 0, 0));
    // Retrying the creation of the expired pending transfer reserves nothing again.
    assert_eq!(l.transfer1(pending(10, 1, 2, 100, 10)), T::Exists);
    assert_eq!(l.balances(1), (1, 0, 0, 0));
    assert_eq!(l.status(10), Some(PendingStatus::Expired));
}

#[test]
fn expiry_happens_on_an_accounts_batch_too() {
    let mut l = two_accounts();
    assert_eq!(l.transfer1(pending(10, 1, 2, 100, 1)), T::Ok);
    l.advance_secs(1);
    assert_eq!(l.account1(acct(9, 1)), A::Ok);
    assert_eq!(l.status(10), Some(PendingStatus::Expired));
    assert_eq!(l.balances(1), (0, 0, 0, 0));
}

#[test]
fn post_whose_own_timestamp_reaches_the_expiry_answers_expired() {
    let mut base = two_accounts();
    let ts = base.next_event();
    assert_eq!(base.transfer1(pending(10, 1, 2, 100, 1)), T::Ok);
    let at = ts + NANOS_PER_SECOND;

    // First event at at-2: the post (second event) lands at at-1 and is in time.
    let mut early = base.clone();
    early.first_event_at(at - 2);
    assert_eq!(
        early.transfers(vec![tr(20, 3, 4, 1), post_full(21, 10)]),
        vec![T::Ok, T::Ok]
    );
    assert_eq!(early.balances(1), (0, 100, 0, 0));
    assert_eq!(early.status(10), Some(PendingStatus::Posted));

    // First event at at-1: the batch starts before the expiry, but the post lands at `at`.
    let mut late = base.clone();
    late.first_event_at(at - 1);
    assert_eq!(
        late.transfers(vec![tr(20, 3, 4, 1), post_full(21, 10), void(22, 10, 0)]),
        vec![T::Ok, T::PendingTransferExpired, T::PendingTransferExpired]
    );
    assert!(late.transfer(21).is_none());
    // The next batch does the expiry proper.
    assert_eq!(late.transfer1(tr(23, 3, 4, 1)), T::Ok);
    assert_eq!(late.status(10), Some(PendingStatus::Expired));
    assert_eq!(late.balances(1), (0, 0, 0, 0));
    assert_eq!(late.balances(2), (0, 0, 0, 0));
}

#[test]
fn several_expiries_on_one_account_in_one_batch() {
    let mut l = two_accounts();
    assert_eq!(
        l.transfers(vec![
            pending(10, 1, 2, 10, 1),
            pending(11, 1, 3, 20, 2),
            pending(12, 1, 2, 40, 0),
            pending(13, 3, 2, 80, 9),
        ]),
        vec![T::Ok; 4]
    );
    l.advance_secs(3);
    assert_eq!(l.transfer1(tr(20, 4, 3, 1)), T::Ok);
    assert_eq!(l.status(10), Some(PendingStatus::Expired));
    assert_eq!(l.status(11), Some(PendingStatus::Expired));
    assert_eq!(l.status(12), Some(PendingStatus::Pending));
    assert_eq!(l.status(13), Some(PendingStatus::Pending));
    assert_eq!(l.balances(1), (40, 0, 0, 0));
    assert_eq!(l.balances(2), (0, 0, 120, 0));
    assert_eq!(l.balances(3), (80, 0, 0, 1));
    assert_eq!(l.store.expiries.len(), 1);
}

#[test]
fn posted_or_voided_transfers_never_expire() {
    let mut l = two_accounts();
    assert_eq!(
        l.transfers(vec![pending(10, 1, 2, 10, 1), pending(11, 1, 2, 20, 1)]),
        vec![T::Ok, T::Ok]
    );
    assert_eq!(
        l.transfers(vec![post(20, 10, 4), void(21, 11, 0)]),
        vec![T::Ok, T::Ok]
    );
    l.advance_secs(5);
    assert_eq!(l.transfer1(tr(22, 3, 4, 1)), T::Ok);
    assert_eq!(l.status(10), Some(PendingStatus::Posted));
    assert_eq!(l.status(11), Some(PendingStatus::Voided));
    assert_eq!(l.balances(1), (0, 4, 0, 0));
}

#[test]
fn pending_and_its_post_in_one_batch_then_void_answers_already_posted() {
    let mut l = two_accounts();
    assert_eq!(
        l.transfers(vec![
            pending(10, 1, 2, 50, 1),
            post(11, 10, 20),
            void(12, 10, 0),
            post_full(13, 10),
        ]),
        vec![
            T::Ok,
            T::Ok,
            T::PendingTransferAlreadyPosted,
            T::PendingTransferAlreadyPosted
        ]
    );
    assert_eq!(l.balances(1), (0, 20, 0, 0));
    assert!(l.store.expiries.is_empty());
}

#[test]
fn retry_of_a_post_answers_exists_and_moves_nothing() {
    let mut l = two_accounts();
    assert_eq!(l.transfer1(pending(10, 1, 2, 100, 2)), T::Ok);
    assert_eq!(l.transfer1(post(11, 10, 30)), T::Ok);
    let before = l.store.accounts.clone();
    assert_eq!(l.transfer1(post(11, 10, 30)), T::Exists);
    // Also with the inherited fields given explicitly.
    let explicit = NewTransfer {
        debit_account_id: AccountId(1),
        credit_account_id: AccountId(2),
        ledger: 1,
        code: 1,
        ..post(11, 10, 30)
    };
    assert_eq!(l.transfer1(explicit), T::Exists);
    // And after the pending transfer's timeout has passed.
    l.advance_secs(3);
    assert_eq!(l.transfer1(post(11, 10, 30)), T::Exists);
    assert_eq!(l.store.accounts, before);
    assert_eq!(l.status(10), Some(PendingStatus::Posted));
    // A retry of a void, too.
    assert_eq!(l.transfer1(pending(12, 1, 2, 9, 0)), T::Ok);
    assert_eq!(l.transfer1(void(13, 12, 0)), T::Ok);
    let before = l.store.accounts.clone();
    assert_eq!(
        l.transfers(vec![void(13, 12, 0), void(13, 12, 9)]),
        vec![T::Exists, T::Exists]
    );
    assert_eq!(l.store.accounts, before);
}

/// Amount AMOUNT_MAX on a post means "the full pending amount". A retry that asks for the full
/// amount under the id of a stored partial post asks for something else than what was done,
/// and must not be told `exists` (the client would believe 100 was posted when 30 was).
#[test]
fn retry_asking_for_the_full_amount_of_a_partial_post_is_different() {
    let mut l = two_accounts();
    assert_eq!(l.transfer1(pending(10, 1, 2, 100, 0)), T::Ok);
    assert_eq!(l.transfer1(post(11, 10, 30)), T::Ok);
    assert_eq!(l.transfer1(post_full(11, 10)), T::ExistsWithDifferentFields);
}

#[test]
fn retry_of_the_full_post_with_amount_max_is_exists() {
    let mut l = two_accounts();
    assert_eq!(l.transfer1(pending(10, 1, 2, 100, 0)), T::Ok);
    assert_eq!(l.transfer1(post_full(11, 10)), T::Ok);
    assert_eq!(
        l.transfers(vec![post_full(11, 10), post(11, 10, 100)]),
        vec![T::Exists, T::Exists]
    );
    assert_eq!(l.balances(1), (0, 100, 0, 0));
}
