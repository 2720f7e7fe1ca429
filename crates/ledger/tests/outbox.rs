//! Payments to external accounts: the transfer and its outbox message are made together or not
//! at all, only the saga settles them, and the dead-letter queue is left only by an operator.

mod common;

use bulwark_ledger::access::{Actor, AuditEvent, TokenId};
use bulwark_ledger::outbox::{
    DeadKind, OutboxCommand as C, OutboxResult as R, OutboxState, Settlement,
};
use bulwark_ledger::{
    check_balanced, AccountFlags, BatchResults, CreateTransferResult as T, Operation,
    PendingStatus, TransferFlags, TransferId,
};
use common::*;

const PROCESSOR: u128 = 9;
const OPERATOR: Actor = Actor::Token(TokenId(7));

fn ledger() -> Ledger {
    let mut l = Ledger::default();
    l.open(vec![
        acct(1, 1),
        acct(2, 1),
        acct_flags(PROCESSOR, 1, AccountFlags::EXTERNAL),
    ]);
    l
}

fn outbox(l: &mut Ledger, commands: Vec<C>) -> Vec<R> {
    match l.apply(Operation::Outbox(commands)) {
        BatchResults::Outbox(r) => r,
        other => panic!("an outbox batch answered {other:?}"),
    }
}

fn settle(payment: u128, pending: u128, transfer: u128, outcome: Settlement) -> C {
    settle_round(payment, pending, 0, transfer, outcome)
}

fn settle_round(
    payment: u128,
    pending: u128,
    round: u32,
    transfer: u128,
    outcome: Settlement,
) -> C {
    C::Settle {
        payment: TransferId(payment),
        pending: TransferId(pending),
        round,
        transfer: TransferId(transfer),
        term: 3,
        outcome,
    }
}

fn confirmed() -> Settlement {
    Settlement::Confirmed {
        reference: "pay-1".into(),
    }
}

fn refused() -> Settlement {
    Settlement::Refused {
        reason: "account closed at the bank".into(),
    }
}

#[test]
fn a_payment_is_a_pending_transfer_and_a_message_in_one_event() {
    let mut l = ledger();
    assert_eq!(l.transfer1(tr(10, 1, PROCESSOR, 100)), T::Ok);
    let t = l.transfer(10).unwrap();
    assert!(t.flags.contains(TransferFlags::PENDING), "stored pending");
    assert_eq!(l.status(10), Some(PendingStatus::Pending));
    assert_eq!(l.balances(1), (100, 0, 0, 0));
    let m = &l.store.outbox[&TransferId(10)];
    assert_eq!(
        (m.pending, m.state.clone()),
        (TransferId(10), OutboxState::Outbound)
    );
    // A retry of the same event (without the pending flag it was given) is the same payment.
    assert_eq!(l.transfer1(tr(10, 1, PROCESSOR, 100)), T::Exists);
    assert_eq!(l.store.outbox.len(), 1);
    // An ordinary transfer makes no message.
    assert_eq!(l.transfer1(tr(11, 1, 2, 5)), T::Ok);
    assert_eq!(l.store.outbox.len(), 1);
}

#[test]
fn a_failed_chain_takes_its_payment_message_back() {
    let mut l = ledger();
    let results = l.transfers(vec![
        linked(tr(10, 1, PROCESSOR, 100)),
        tr(11, 1, 77, 5), // no such account: the chain fails
    ]);
    assert_eq!(
        results,
        vec![T::LinkedEventFailed, T::CreditAccountNotFound]
    );
    assert!(l.transfer(10).is_none());
    assert!(l.store.outbox.is_empty(), "no message without its transfer");
}

#[test]
fn payments_cannot_time_out_and_clients_cannot_settle_them() {
    let mut l = ledger();
    assert_eq!(
        l.transfer1(pending(10, 1, PROCESSOR, 100, 30)),
        T::ExternalTransferTimeoutMustBeZero
    );
    assert!(l.store.outbox.is_empty());
    assert_eq!(l.transfer1(tr(11, 1, PROCESSOR, 100)), T::Ok);
    assert_eq!(l.transfer1(post_full(12, 11)), T::PendingTransferIsExternal);
    assert_eq!(l.transfer1(void(13, 11, 0)), T::PendingTransferIsExternal);
    assert_eq!(l.status(11), Some(PendingStatus::Pending));
}

#[test]
fn a_payments_timeout_is_refused_again_after_its_account_closed() {
    // The rule depends on the event and a flag an account keeps: a retry meets it again, not
    // the closing that came since (which would also reserve the id as failed).
    let mut l = ledger();
    let payment = pending(10, 1, PROCESSOR, 100, 30);
    assert_eq!(l.transfer1(payment), T::ExternalTransferTimeoutMustBeZero);
    let close = with(pending(11, 1, 2, 0, 0), TransferFlags::CLOSING_DEBIT);
    assert_eq!(l.transfer1(close), T::Ok);
    assert_eq!(l.transfer1(payment), T::ExternalTransferTimeoutMustBeZero);
    assert!(l.store.failed_transfers.is_empty());
}

#[test]
fn a_confirmation_posts_once_and_ends_the_message() {
    let mut l = ledger();
    l.transfer1(tr(10, 1, PROCESSOR, 100));
    assert_eq!(
        outbox(&mut l, vec![settle(10, 10, 50, confirmed())]),
        vec![R::Ok]
    );
    assert_eq!(l.status(10), Some(PendingStatus::Posted));
    assert_eq!(l.balances(1), (0, 100, 0, 0));
    assert_eq!(l.balances(PROCESSOR), (0, 0, 0, 100));
    assert!(l.store.outbox.is_empty());
    // A second relay's (or a deposed leader's) settlement changes nothing.
    let again = outbox(
        &mut l,
        vec![
            settle(10, 10, 51, confirmed()),
            settle(10, 10, 52, refused()),
        ],
    );
    assert_eq!(again, vec![R::NotFound, R::NotFound]);
    assert!(l.transfer(51).is_none() && l.transfer(52).is_none());
    check_balanced(l.store.accounts.values()).unwrap();
}

#[test]
fn a_settling_id_already_taken_changes_nothing() {
    let mut l = ledger();
    l.transfer1(tr(10, 1, PROCESSOR, 100));
    l.transfer1(tr(11, 1, 2, 1));
    let r = outbox(&mut l, vec![settle(10, 10, 11, confirmed())]);
    assert_eq!(r, vec![R::Transfer(T::Exists)]);
    assert_eq!(l.status(10), Some(PendingStatus::Pending));
    assert!(l.store.outbox[&TransferId(10)].is_outbound());
}

#[test]
fn a_settling_id_reserved_as_failed_changes_nothing() {
    let mut l = ledger();
    l.transfer1(tr(10, 1, PROCESSOR, 100));
    assert_eq!(l.transfer1(tr(11, 1, 77, 1)), T::CreditAccountNotFound);
    for id in [11, 0] {
        let r = outbox(&mut l, vec![settle(10, 10, id, confirmed())]);
        assert!(matches!(r[..], [R::Transfer(_)]), "{r:?}");
        assert_eq!(l.status(10), Some(PendingStatus::Pending));
        assert!(
            l.store.outbox[&TransferId(10)].is_outbound(),
            "dead-lettered"
        );
    }
}

#[test]
fn a_refusal_voids_and_dead_letters_then_only_an_operator_acts() {
    let mut l = ledger();
    l.transfer1(tr(10, 1, PROCESSOR, 100));
    assert_eq!(
        outbox(&mut l, vec![settle(10, 10, 50, refused())]),
        vec![R::Ok]
    );
    assert_eq!(l.status(10), Some(PendingStatus::Voided));
    assert_eq!(l.balances(1), (0, 0, 0, 0));
    let m = &l.store.outbox[&TransferId(10)];
    let OutboxState::Dead { reason, .. } = &m.state else {
        panic!("not dead: {m:?}")
    };
    assert_eq!(reason.kind, DeadKind::Refused);
    // A late confirmation of the voided reservation is not applied.
    assert_eq!(
        outbox(&mut l, vec![settle(10, 10, 51, confirmed())]),
        vec![R::NotOutbound]
    );

    // The operator sends it back: the amount is reserved again under a new pending transfer,
    // with the same payment (and so the same idempotency key).
    let retry = C::Retry {
        payment: TransferId(10),
        pending: TransferId(60),
        actor: OPERATOR,
    };
    assert_eq!(outbox(&mut l, vec![retry.clone()]), vec![R::Ok]);
    assert_eq!(l.status(60), Some(PendingStatus::Pending));
    assert_eq!(l.balances(1), (100, 0, 0, 0));
    let m = &l.store.outbox[&TransferId(10)];
    assert_eq!(
        (m.pending, m.retries, m.is_outbound()),
        (TransferId(60), 1, true)
    );
    assert_eq!(outbox(&mut l, vec![retry]), vec![R::NotDead]);
    // A settlement naming the old reservation is stale.
    assert_eq!(
        outbox(&mut l, vec![settle(10, 10, 52, confirmed())]),
        vec![R::NotOutbound]
    );
    assert_eq!(
        outbox(&mut l, vec![settle_round(10, 60, 1, 53, confirmed())]),
        vec![R::Ok]
    );
    assert_eq!(l.balances(PROCESSOR), (0, 0, 0, 100));
    let audited: Vec<_> = l
        .store
        .audit
        .iter()
        .filter(|a| matches!(a.event, AuditEvent::DeadLetter { .. }))
        .map(|a| a.actor)
        .collect();
    assert_eq!(audited, vec![Some(OPERATOR), Some(OPERATOR)]);
    check_balanced(l.store.accounts.values()).unwrap();
}

#[test]
fn exhausted_retries_dead_letter_and_a_discard_removes_for_good() {
    let mut l = ledger();
    l.transfer1(tr(10, 1, PROCESSOR, 100));
    let exhausted = Settlement::Exhausted {
        attempts: 8,
        last_error: "timed out".into(),
    };
    assert_eq!(
        outbox(&mut l, vec![settle(10, 10, 50, exhausted)]),
        vec![R::Ok]
    );
    assert_eq!(l.status(10), Some(PendingStatus::Voided));
    let discard = C::Discard {
        payment: TransferId(10),
        actor: OPERATOR,
    };
    assert_eq!(outbox(&mut l, vec![discard.clone()]), vec![R::Ok]);
    assert!(l.store.outbox.is_empty());
    assert_eq!(outbox(&mut l, vec![discard]), vec![R::NotFound]);
}

#[test]
fn a_retry_needs_the_money_again() {
    let mut l = Ledger::default();
    l.open(vec![
        acct_flags(1, 1, AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS),
        acct(2, 1),
        acct_flags(PROCESSOR, 1, AccountFlags::EXTERNAL),
    ]);
    l.transfer1(tr(5, 2, 1, 100));
    l.transfer1(tr(10, 1, PROCESSOR, 100));
    outbox(&mut l, vec![settle(10, 10, 50, refused())]);
    l.transfer1(tr(11, 1, 2, 100)); // the money is spent meanwhile
    let retry = C::Retry {
        payment: TransferId(10),
        pending: TransferId(60),
        actor: OPERATOR,
    };
    assert_eq!(
        outbox(&mut l, vec![retry]),
        vec![R::Transfer(T::ExceedsCredits)]
    );
    assert!(!l.store.outbox[&TransferId(10)].is_outbound());
    assert!(l.transfer(60).is_none());
}

#[test]
fn commands_round_trip_through_the_log_encoding() {
    use bulwark_ledger::codec::{decode, encode};
    use bulwark_ledger::{Batch, Timestamp};
    let batch = Batch {
        timestamp: Timestamp(77),
        operation: Operation::Outbox(vec![
            settle(1, 2, 3, confirmed()),
            settle(4, 4, 5, refused()),
            settle(
                6,
                6,
                7,
                Settlement::Exhausted {
                    attempts: 9,
                    last_error: "503".into(),
                },
            ),
            C::Retry {
                payment: TransferId(8),
                pending: TransferId(9),
                actor: OPERATOR,
            },
            C::Discard {
                payment: TransferId(10),
                actor: Actor::Node(2),
            },
        ]),
    };
    let mut bytes = Vec::new();
    encode(&batch, &mut bytes);
    assert_eq!(decode(&bytes).unwrap(), batch);
    for cut in [bytes.len() - 1, 30] {
        assert!(decode(&bytes[..cut]).is_err(), "a cut at {cut} decodes");
    }
}

#[test]
fn a_confirmed_payment_whose_account_closed_waits_for_an_operator() {
    let mut l = ledger();
    l.transfer1(tr(10, 1, PROCESSOR, 100));
    let close = with(pending(11, 1, 2, 0, 0), TransferFlags::CLOSING_DEBIT);
    assert_eq!(l.transfer1(close), T::Ok);
    let r = outbox(&mut l, vec![settle(10, 10, 50, confirmed())]);
    assert_eq!(r, vec![R::Transfer(T::DebitAccountAlreadyClosed)]);
    let OutboxState::Dead { reason, .. } = &l.store.outbox[&TransferId(10)].state else {
        panic!("not dead")
    };
    assert_eq!(reason.kind, DeadKind::PostFailed);
    assert_eq!(l.status(10), Some(PendingStatus::Pending), "still reserved");
    let discard = C::Discard {
        payment: TransferId(10),
        actor: OPERATOR,
    };
    assert_eq!(outbox(&mut l, vec![discard]), vec![R::StillReserved]);
    // The account reopens; the operator sends the payment back on the same reservation.
    assert_eq!(l.transfer1(void(12, 11, 0)), T::Ok);
    let retry = C::Retry {
        payment: TransferId(10),
        pending: TransferId(60),
        actor: OPERATOR,
    };
    assert_eq!(outbox(&mut l, vec![retry]), vec![R::Ok]);
    assert!(l.transfer(60).is_none(), "no second reservation");
    let m = &l.store.outbox[&TransferId(10)];
    assert_eq!((m.pending, m.is_outbound()), (TransferId(10), true));
    // The first delivery's settlement, late, is stale: only the new round's counts.
    assert_eq!(
        outbox(&mut l, vec![settle(10, 10, 51, confirmed())]),
        vec![R::NotOutbound]
    );
    assert_eq!(
        outbox(&mut l, vec![settle_round(10, 10, 1, 52, confirmed())]),
        vec![R::Ok]
    );
    assert_eq!(l.status(10), Some(PendingStatus::Posted));
    check_balanced(l.store.accounts.values()).unwrap();
}

#[test]
fn a_payment_cannot_close_its_account() {
    let mut l = ledger();
    let closing = with(
        pending(10, 1, PROCESSOR, 5, 0),
        TransferFlags::CLOSING_DEBIT,
    );
    assert_eq!(l.transfer1(closing), T::ExternalTransferMustNotClose);
    assert!(l.store.outbox.is_empty() && !l.is_closed(1));
}
