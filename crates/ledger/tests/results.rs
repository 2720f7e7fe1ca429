//! One scenario per result code, and a test that every code of `ALL` is produced by some
//! scenario: adding a result code without a scenario that reaches it fails
//! `every_result_code_is_reached`.

mod common;

use std::collections::HashSet;

use bulwark_ledger::{
    apply, AccountFlags, AccountId, Batch, BatchResults, CreateAccountResult as A,
    CreateTransferResult as T, FlagSet, LedgerStore, MemoryStore, NewAccount, NewTransfer,
    Operation, PendingStatus, Timestamp, TransferFlags, TransferId, NANOS_PER_SECOND,
};
use common::*;

/// The codes the scenarios asserted.
#[derive(Default)]
struct Seen {
    accounts: HashSet<A>,
    transfers: HashSet<T>,
}

impl Seen {
    fn a(&mut self, got: Vec<A>, want: &[A]) {
        assert_eq!(got, want);
        self.accounts.extend(got);
    }

    fn t(&mut self, got: Vec<T>, want: &[T]) {
        assert_eq!(got, want);
        self.transfers.extend(got);
    }

    /// Applies `cases`' transfers as one batch, each to answer its result.
    fn cases(&mut self, l: &mut Ledger, cases: Vec<(NewTransfer, T)>) {
        let (batch, want): (Vec<_>, Vec<_>) = cases.into_iter().unzip();
        self.t(l.transfers(batch), &want);
    }
}

/// A ledger with accounts 1, 2, 4, 5, 6, 7 on ledger 1 and account 3 on ledger 2.
fn base() -> Ledger {
    let mut l = Ledger::default();
    l.open(vec![
        acct(1, 1),
        acct(2, 1),
        acct(3, 2),
        acct(4, 1),
        acct(5, 1),
        acct(6, 1),
        acct(7, 1),
    ]);
    l
}

fn account_ok(s: &mut Seen) {
    let mut l = Ledger::default();
    let a = NewAccount {
        code: 3,
        flags: AccountFlags::HISTORY,
        user_data_64: 99,
        ..acct(42, 7)
    };
    let ts = l.next_event();
    s.a(l.accounts(vec![a]), &[A::Ok]);
    let stored = l.account(42);
    assert_eq!(
        (
            stored.ledger,
            stored.code,
            stored.flags,
            stored.user_data_64
        ),
        (7, 3, AccountFlags::HISTORY, 99)
    );
    assert_eq!(stored.timestamp, Timestamp(ts));
    assert_eq!(l.balances(42), (0, 0, 0, 0));
}

fn account_validation(s: &mut Seen) {
    let mut l = Ledger::default();
    let batch = vec![
        acct(0, 1),
        acct(u128::MAX, 1),
        acct_flags(3, 1, unnamed_flag()),
        acct_flags(
            4,
            1,
            AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS
                | AccountFlags::CREDITS_MUST_NOT_EXCEED_DEBITS,
        ),
        acct(5, 0),
        NewAccount {
            code: 0,
            ..acct(6, 1)
        },
    ];
    s.a(
        l.accounts(batch),
        &[
            A::IdMustNotBeZero,
            A::IdMustNotBeIntMax,
            A::ReservedFlag,
            A::FlagsAreMutuallyExclusive,
            A::LedgerMustNotBeZero,
            A::CodeMustNotBeZero,
        ],
    );
    assert!(l.store.accounts.is_empty(), "no invalid account is stored");
    // Each of them is fine once corrected.
    s.a(
        l.accounts(vec![
            acct(3, 1),
            acct_flags(4, 1, AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS),
            acct(5, 1),
            acct(6, 1),
        ]),
        &[A::Ok; 4],
    );
}

fn account_exists(s: &mut Seen) {
    let mut l = Ledger::default();
    let a = NewAccount {
        user_data_64: 5,
        ..acct_flags(1, 1, AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS)
    };
    s.a(l.accounts(vec![a]), &[A::Ok]);
    let before = l.account(1);
    s.a(l.accounts(vec![a]), &[A::Exists]);
    let variants = [
        NewAccount { ledger: 2, ..a },
        NewAccount { code: 2, ..a },
        NewAccount {
            user_data_64: 6,
            ..a
        },
        NewAccount {
            flags: AccountFlags::empty(),
            ..a
        },
    ];
    s.a(
        l.accounts(variants.to_vec()),
        &[A::ExistsWithDifferentFields; 4],
    );
    // An existing id answers before the field checks (a retry learns the id is taken, not what
    // is wrong with its new fields), though after the reserved flag.
    s.a(
        l.accounts(vec![
            NewAccount { ledger: 0, ..a },
            NewAccount { code: 0, ..a },
            NewAccount {
                flags: a.flags | AccountFlags::CREDITS_MUST_NOT_EXCEED_DEBITS,
                ..a
            },
            NewAccount {
                flags: a.flags | unnamed_flag::<AccountFlags>(),
                ..a
            },
        ]),
        &[
            A::ExistsWithDifferentFields,
            A::ExistsWithDifferentFields,
            A::ExistsWithDifferentFields,
            A::ReservedFlag,
        ],
    );
    // `closed` is the account's state, not a field it was created with.
    s.a(
        l.accounts(vec![NewAccount {
            flags: a.flags | AccountFlags::CLOSED,
            ..a
        }]),
        &[A::Exists],
    );
    assert_eq!(
        l.account(1),
        before,
        "a duplicate never changes the account"
    );
    // Within one batch, the second event sees the first.
    s.a(
        l.accounts(vec![acct(2, 1), acct(2, 1), acct(2, 3)]),
        &[A::Ok, A::Exists, A::ExistsWithDifferentFields],
    );
    assert_eq!(l.account(2).ledger, 1);
}

fn account_chains(s: &mut Seen) {
    let mut l = Ledger::default();
    let linked = |id| acct_flags(id, 1, AccountFlags::LINKED);
    s.a(
        l.accounts(vec![linked(1), linked(2), acct(3, 0), acct(4, 1)]),
        &[
            A::LinkedEventFailed,
            A::LinkedEventFailed,
            A::LedgerMustNotBeZero,
            A::Ok,
        ],
    );
    assert_eq!(
        l.store.accounts.keys().copied().collect::<Vec<_>>(),
        vec![AccountId(4)]
    );
    s.a(l.accounts(vec![linked(7)]), &[A::LinkedEventChainOpen]);
    s.a(
        l.accounts(vec![acct(8, 1), linked(9), linked(10)]),
        &[A::Ok, A::LinkedEventFailed, A::LinkedEventChainOpen],
    );
    assert!(l.store.account(AccountId(8)).is_some());
    assert!(l.store.account(AccountId(9)).is_none());
    assert!(l.store.account(AccountId(10)).is_none());
    // A whole chain succeeds, and its retry answers exists throughout.
    let chain = vec![linked(11), linked(12), acct(13, 1)];
    s.a(l.accounts(chain.clone()), &[A::Ok; 3]);
    s.a(l.accounts(chain), &[A::Exists; 3]);
}

fn transfer_ok(s: &mut Seen) {
    let mut l = base();
    let t = NewTransfer {
        user_data_64: 77,
        code: 9,
        ..tr(10, 1, 2, 250)
    };
    let ts = l.next_event();
    s.t(l.transfers(vec![t]), &[T::Ok]);
    assert_eq!(l.balances(1), (0, 250, 0, 0));
    assert_eq!(l.balances(2), (0, 0, 0, 250));
    let stored = l.transfer(10).expect("stored");
    assert_eq!(
        (
            stored.debit_account_id,
            stored.credit_account_id,
            stored.amount,
            stored.ledger,
            stored.code,
            stored.user_data_64,
            stored.flags,
            stored.timestamp,
        ),
        (
            AccountId(1),
            AccountId(2),
            250,
            1,
            9,
            77,
            TransferFlags::empty(),
            Timestamp(ts)
        )
    );
    assert_eq!(l.status(10), None, "only pending transfers have a status");
}

/// Transfers each refused for one reason of its own fields or accounts, on `base()`.
fn invalid_transfers() -> Vec<(NewTransfer, T)> {
    use TransferFlags as F;
    let exclusive = |id, flags| with(tr(id, 1, 2, 1), flags);
    vec![
        (tr(0, 1, 2, 1), T::IdMustNotBeZero),
        (tr(u128::MAX, 1, 2, 1), T::IdMustNotBeIntMax),
        (with(tr(10, 1, 2, 1), unnamed_flag()), T::ReservedFlag),
        (
            exclusive(11, F::PENDING | F::POST_PENDING_TRANSFER),
            T::FlagsAreMutuallyExclusive,
        ),
        (
            exclusive(12, F::POST_PENDING_TRANSFER | F::VOID_PENDING_TRANSFER),
            T::FlagsAreMutuallyExclusive,
        ),
        (tr(13, 0, 2, 1), T::DebitAccountIdMustNotBeZero),
        (tr(14, 1, 0, 1), T::CreditAccountIdMustNotBeZero),
        (tr(15, 1, 1, 1), T::AccountsMustBeDifferent),
        (
            NewTransfer {
                pending_id: TransferId(5),
                ..tr(16, 1, 2, 1)
            },
            T::PendingIdMustBeZero,
        ),
        (
            NewTransfer {
                timeout: 1,
                ..tr(17, 1, 2, 1)
            },
            T::TimeoutReservedForPendingTransfer,
        ),
        (
            NewTransfer {
                ledger: 0,
                ..tr(18, 1, 2, 1)
            },
            T::LedgerMustNotBeZero,
        ),
        (
            NewTransfer {
                code: 0,
                ..tr(19, 1, 2, 1)
            },
            T::CodeMustNotBeZero,
        ),
        (tr(20, u128::MAX, 2, 1), T::DebitAccountIdMustNotBeIntMax),
        (tr(21, 1, u128::MAX, 1), T::CreditAccountIdMustNotBeIntMax),
        (tr(22, 99, 2, 1), T::DebitAccountNotFound),
        (tr(23, 1, 99, 1), T::CreditAccountNotFound),
        (tr(24, 1, 3, 1), T::LedgerMustMatch),
        (
            NewTransfer {
                ledger: 2,
                ..tr(25, 1, 2, 1)
            },
            T::LedgerMustMatch,
        ),
        (
            NewTransfer {
                pending_id: TransferId(5),
                ..pending(26, 1, 2, 1, 0)
            },
            T::PendingIdMustBeZero,
        ),
    ]
}

/// Transfers refused for a balancing or closing flag where it has no place.
fn misplaced_flags() -> Vec<(NewTransfer, T)> {
    use TransferFlags as F;
    vec![
        (
            with(tr(27, 1, 2, 1), F::CLOSING_DEBIT),
            T::ClosingTransferMustBePending,
        ),
        (
            with(tr(28, 1, 2, 1), F::CLOSING_CREDIT),
            T::ClosingTransferMustBePending,
        ),
        (
            with(post(29, 5, 1), F::BALANCING_DEBIT | F::BALANCING_CREDIT),
            T::FlagsAreMutuallyExclusive,
        ),
        (
            with(void(30, 5, 1), F::CLOSING_CREDIT),
            T::FlagsAreMutuallyExclusive,
        ),
    ]
}

fn transfer_validation(s: &mut Seen) {
    let mut l = base();
    let before = l.store.accounts.clone();
    s.cases(&mut l, invalid_transfers());
    s.cases(&mut l, misplaced_flags());
    assert!(
        l.store.transfers.is_empty(),
        "no invalid transfer is stored"
    );
    assert_eq!(l.store.accounts, before, "no invalid transfer moves money");
}

/// One change to a transfer, and the result the transfer answers after it.
type Fix = (fn(&mut NewTransfer), T);

/// The transfers of a precedence ladder: `start`, changed by each fix in turn (under a new id
/// each, set before the fix: a transient refusal reserves its id), with the fix's result.
fn ladder(mut t: NewTransfer, fixes: Vec<Fix>) -> Vec<(NewTransfer, T)> {
    let mut out = Vec::new();
    for (i, (fix, result)) in fixes.into_iter().enumerate() {
        t.id = TransferId(100 + i as u128);
        fix(&mut t);
        out.push((t, result));
    }
    out
}

/// From a single transfer wrong in every way to a fine one, on `base()` with accounts 8 and 9
/// closed: each fix reaches the next check in precedence order.
fn transfer_fixes() -> Vec<Fix> {
    vec![
        (|_| {}, T::DebitAccountIdMustNotBeZero),
        (
            |t| t.debit_account_id = AccountId(u128::MAX),
            T::DebitAccountIdMustNotBeIntMax,
        ),
        (
            |t| t.debit_account_id = AccountId(1),
            T::CreditAccountIdMustNotBeZero,
        ),
        (
            |t| t.credit_account_id = AccountId(u128::MAX),
            T::CreditAccountIdMustNotBeIntMax,
        ),
        (
            |t| t.credit_account_id = AccountId(1),
            T::AccountsMustBeDifferent,
        ),
        (
            |t| (t.debit_account_id, t.credit_account_id) = (AccountId(98), AccountId(99)),
            T::PendingIdMustBeZero,
        ),
        (
            |t| t.pending_id = TransferId(0),
            T::TimeoutReservedForPendingTransfer,
        ),
        (|t| t.timeout = 0, T::ClosingTransferMustBePending),
        (|t| t.flags = TransferFlags::empty(), T::LedgerMustNotBeZero),
        (|t| t.ledger = 1, T::CodeMustNotBeZero),
        (|t| t.code = 1, T::DebitAccountNotFound),
        (
            |t| t.debit_account_id = AccountId(8),
            T::CreditAccountNotFound,
        ),
        (|t| t.credit_account_id = AccountId(3), T::LedgerMustMatch),
        (
            |t| t.credit_account_id = AccountId(9),
            T::DebitAccountAlreadyClosed,
        ),
        (
            |t| t.debit_account_id = AccountId(1),
            T::CreditAccountAlreadyClosed,
        ),
        (|t| t.credit_account_id = AccountId(2), T::Ok),
    ]
}

fn transfer_precedence(s: &mut Seen) {
    let mut l = base();
    l.open(vec![
        acct_flags(8, 1, AccountFlags::CLOSED),
        acct_flags(9, 1, AccountFlags::CLOSED),
    ]);
    let start = NewTransfer {
        amount: 5,
        pending_id: TransferId(5),
        timeout: 1,
        flags: TransferFlags::CLOSING_DEBIT,
        ..NewTransfer::default()
    };
    s.cases(&mut l, ladder(start, transfer_fixes()));
    assert_eq!(l.store.transfers.len(), 1);
    assert_eq!(l.balances(1), (0, 5, 0, 0));
}

/// The amount checks in precedence order, on accounts 1 and 2 holding half of u128::MAX pending
/// and half posted, so that every overflow check of a large amount fails at once.
fn amount_precedence(s: &mut Seen) {
    let half = u128::MAX / 2;
    let mut l = base();
    s.t(
        l.transfers(vec![
            pending(10, 1, 2, half, 0),
            tr(11, 1, 2, half),
            tr(12, 6, 7, u128::MAX - 1),
        ]),
        &[T::Ok; 3],
    );
    let before = l.store.accounts.clone();
    s.t(
        l.transfers(vec![
            pending(20, 1, 2, half + 2, 0),
            pending(21, 4, 2, half + 2, 0),
            tr(22, 1, 2, half + 2),
            tr(23, 4, 2, half + 2),
            // A pending transfer is checked against the posted balances too.
            pending(24, 6, 4, 2, 0),
            pending(25, 4, 7, 2, 0),
            pending(26, 1, 4, half + 1, 0),
            pending(27, 4, 2, half + 1, 0),
        ]),
        &[
            T::OverflowsDebitsPending,
            T::OverflowsCreditsPending,
            T::OverflowsDebitsPosted,
            T::OverflowsCreditsPosted,
            T::OverflowsDebitsPosted,
            T::OverflowsCreditsPosted,
            T::OverflowsDebits,
            T::OverflowsCredits,
        ],
    );
    assert_eq!(l.store.accounts, before);
    assert!(
        l.store.failed_transfers.is_empty(),
        "an overflow is no transient refusal"
    );
}

/// Posts and voids of pending transfer 10 (100 from 1 to 2), each refused for one reason;
/// 11 is an ordinary transfer.
fn invalid_posts_and_voids() -> Vec<(NewTransfer, T)> {
    let given = |t: NewTransfer, debit, credit, ledger, code| NewTransfer {
        debit_account_id: AccountId(debit),
        credit_account_id: AccountId(credit),
        ledger,
        code,
        ..t
    };
    let timeout = |t: NewTransfer| NewTransfer { timeout: 1, ..t };
    vec![
        (post(20, 0, 0), T::PendingIdMustNotBeZero),
        (post(21, 21, 0), T::PendingIdMustBeDifferent),
        (
            timeout(post(22, 10, 0)),
            T::TimeoutReservedForPendingTransfer,
        ),
        (
            timeout(void(23, 10, 0)),
            T::TimeoutReservedForPendingTransfer,
        ),
        (post(24, 99, 0), T::PendingTransferNotFound),
        (post(25, 11, 0), T::PendingTransferNotPending),
        (
            given(post(26, 10, 0), 2, 0, 0, 0),
            T::PendingTransferHasDifferentDebitAccountId,
        ),
        (
            given(post(27, 10, 0), 0, 1, 0, 0),
            T::PendingTransferHasDifferentCreditAccountId,
        ),
        (
            given(post(28, 10, 0), 0, 0, 2, 0),
            T::PendingTransferHasDifferentLedger,
        ),
        (
            given(void(29, 10, 0), 0, 0, 0, 2),
            T::PendingTransferHasDifferentCode,
        ),
        (post(30, 10, 101), T::ExceedsPendingTransferAmount),
        (void(31, 10, 50), T::PendingTransferHasDifferentAmount),
        (void(32, 10, 101), T::ExceedsPendingTransferAmount),
        (
            with(post(33, 10, 0), TransferFlags::PENDING),
            T::FlagsAreMutuallyExclusive,
        ),
        (void(34, 99, 0), T::PendingTransferNotFound),
        (void(35, 11, 0), T::PendingTransferNotPending),
        (post(36, u128::MAX, 1), T::PendingIdMustNotBeIntMax),
    ]
}

fn post_void_validation(s: &mut Seen) {
    let mut l = base();
    s.t(
        l.transfers(vec![pending(10, 1, 2, 100, 0), tr(11, 1, 2, 5)]),
        &[T::Ok, T::Ok],
    );
    let before = l.store.accounts.clone();
    s.cases(&mut l, invalid_posts_and_voids());
    assert_eq!(l.store.accounts, before);
    assert_eq!(l.status(10), Some(PendingStatus::Pending));
    assert_eq!(l.store.transfers.len(), 2);
    // Giving the pending transfer's own fields explicitly is accepted.
    let explicit = NewTransfer {
        debit_account_id: AccountId(1),
        credit_account_id: AccountId(2),
        ledger: 1,
        code: 1,
        ..post(40, 10, 100)
    };
    s.t(l.transfers(vec![explicit]), &[T::Ok]);
    assert_eq!(l.status(10), Some(PendingStatus::Posted));
}

/// Pending transfers 10 (100), 12 (50, expiring after a second) and 13 (30, posted by 14), and
/// an ordinary transfer 11, all from 1 to 2.
fn post_void_ledger(s: &mut Seen) -> Ledger {
    let mut l = base();
    s.t(
        l.transfers(vec![
            pending(10, 1, 2, 100, 0),
            tr(11, 1, 2, 5),
            pending(12, 1, 2, 50, 1),
            pending(13, 1, 2, 30, 0),
            post(14, 13, 30),
        ]),
        &[T::Ok; 5],
    );
    // Past 12's timeout: the next batch expires it before its events.
    l.advance_secs(2);
    l
}

/// From a post wrong in every way to a fine one, on `post_void_ledger()`.
fn post_fixes() -> Vec<Fix> {
    use TransferFlags as F;
    vec![
        (|_| {}, T::FlagsAreMutuallyExclusive),
        (
            |t| t.flags = F::POST_PENDING_TRANSFER | F::BALANCING_DEBIT,
            T::FlagsAreMutuallyExclusive,
        ),
        (
            |t| t.flags = F::POST_PENDING_TRANSFER | F::BALANCING_CREDIT,
            T::FlagsAreMutuallyExclusive,
        ),
        (
            |t| t.flags = F::VOID_PENDING_TRANSFER | F::CLOSING_DEBIT,
            T::FlagsAreMutuallyExclusive,
        ),
        (
            |t| t.flags = F::VOID_PENDING_TRANSFER | F::CLOSING_CREDIT,
            T::FlagsAreMutuallyExclusive,
        ),
        (
            |t| t.flags = F::VOID_PENDING_TRANSFER | F::PENDING,
            T::FlagsAreMutuallyExclusive,
        ),
        (
            |t| t.flags = F::POST_PENDING_TRANSFER,
            T::PendingIdMustNotBeZero,
        ),
        (
            |t| t.pending_id = TransferId(u128::MAX),
            T::PendingIdMustNotBeIntMax,
        ),
        (|t| t.pending_id = t.id, T::PendingIdMustBeDifferent),
        (
            |t| t.pending_id = TransferId(99),
            T::TimeoutReservedForPendingTransfer,
        ),
        (|t| t.timeout = 0, T::PendingTransferNotFound),
        (
            |t| t.pending_id = TransferId(11),
            T::PendingTransferNotPending,
        ),
        // 13 is posted already: every check against its fields comes before its status.
        (
            |t| t.pending_id = TransferId(13),
            T::PendingTransferHasDifferentDebitAccountId,
        ),
        (
            |t| (t.debit_account_id, t.credit_account_id) = (AccountId(0), AccountId(1)),
            T::PendingTransferHasDifferentCreditAccountId,
        ),
        (
            |t| (t.credit_account_id, t.ledger) = (AccountId(0), 2),
            T::PendingTransferHasDifferentLedger,
        ),
        (
            |t| (t.ledger, t.code) = (0, 2),
            T::PendingTransferHasDifferentCode,
        ),
        (|t| t.code = 0, T::ExceedsPendingTransferAmount),
        (|t| t.amount = 30, T::PendingTransferAlreadyPosted),
        (|t| t.pending_id = TransferId(12), T::PendingTransferExpired),
        (|t| t.pending_id = TransferId(10), T::Ok),
    ]
}

fn post_void_precedence(s: &mut Seen) {
    let mut l = post_void_ledger(s);
    let start = NewTransfer {
        debit_account_id: AccountId(2),
        amount: 31,
        timeout: 1,
        flags: TransferFlags::POST_PENDING_TRANSFER | TransferFlags::VOID_PENDING_TRANSFER,
        ..NewTransfer::default()
    };
    s.cases(&mut l, ladder(start, post_fixes()));
    assert_eq!(l.balances(1), (0, 65, 0, 0));
    assert_eq!(l.status(10), Some(PendingStatus::Posted));
}

/// A void's amount comes before the pending transfer's status, and an existing id before both.
fn void_precedence(s: &mut Seen) {
    let mut l = post_void_ledger(s);
    s.cases(
        &mut l,
        vec![
            (void(30, 13, 29), T::PendingTransferHasDifferentAmount),
            (void(31, 13, 31), T::ExceedsPendingTransferAmount),
            (void(32, 13, 0), T::PendingTransferAlreadyPosted),
            (void(33, 12, 0), T::PendingTransferExpired),
            (post(14, 13, 30), T::Exists),
            (post(14, 13, 31), T::ExistsWithDifferentFields),
        ],
    );
    assert_eq!(
        l.balances(1),
        (100, 35, 0, 0),
        "12 expired, nothing else moved"
    );
}

/// A transient refusal reserves its id: any later event with it answers `id_already_failed`,
/// before every check of its fields (though after the reserved flag and the id's own checks).
fn id_already_failed(s: &mut Seen) {
    let mut l = base();
    let ts = l.next_event();
    s.t(
        l.transfers(vec![tr(10, 1, 99, 5), tr(10, 1, 2, 5)]),
        &[T::CreditAccountNotFound, T::IdAlreadyFailed],
    );
    assert_eq!(l.failed(10), Some(Timestamp(ts)));
    s.t(
        l.transfers(vec![
            tr(10, 1, 2, 5),
            NewTransfer {
                ledger: 0,
                code: 0,
                ..tr(10, 0, 0, 0)
            },
            with(post(10, 0, 0), TransferFlags::VOID_PENDING_TRANSFER),
            pending(10, 1, 1, 5, 0),
            with(tr(10, 1, 2, 5), unnamed_flag()),
        ]),
        &[
            T::IdAlreadyFailed,
            T::IdAlreadyFailed,
            T::IdAlreadyFailed,
            T::IdAlreadyFailed,
            T::ReservedFlag,
        ],
    );
    assert_eq!(
        l.failed(10),
        Some(Timestamp(ts)),
        "answering id_already_failed does not renew the reservation"
    );
    assert!(l.store.transfers.is_empty());
    assert_eq!(l.balances(1), (0, 0, 0, 0));
}

/// A closed account refuses every transfer but a void; where other checks could apply too,
/// the ledger and the pending transfer's checks come first, the amount checks after.
fn closed_accounts(s: &mut Seen) {
    use TransferFlags as F;
    let mut l = base();
    l.open(vec![
        acct_flags(8, 1, AccountFlags::CLOSED),
        acct_flags(9, 1, AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS),
    ]);
    s.t(
        l.transfers(vec![
            pending(10, 4, 5, 7, 0),
            pending(11, 4, 5, 3, 1),
            with(pending(12, 4, 6, 3, 0), F::CLOSING_DEBIT),
            with(pending(13, 5, 9, 0, 0), F::CLOSING_CREDIT),
        ]),
        &[T::Ok; 4],
    );
    assert!(l.is_closed(4) && l.is_closed(9));
    assert!(!l.is_closed(5) && !l.is_closed(6));
    // Past 11's timeout: the next batch expires it before its events.
    l.advance_secs(2);
    s.t(
        l.transfers(vec![
            tr(20, 4, 2, 1),
            tr(21, 2, 4, 1),
            tr(22, 2, 8, 0),
            with(tr(23, 8, 2, 0), F::BALANCING_DEBIT),
            tr(24, 4, 3, 1),
            tr(25, 4, 99, 1),
            // Without the closing, account 9 would exceed its credits.
            tr(26, 9, 2, 1),
            post_full(27, 10),
            post_full(28, 12),
            post_full(29, 11),
            post(30, 10, 8),
            with(pending(31, 5, 4, 1, 0), F::CLOSING_DEBIT),
        ]),
        &[
            T::DebitAccountAlreadyClosed,
            T::CreditAccountAlreadyClosed,
            T::CreditAccountAlreadyClosed,
            T::DebitAccountAlreadyClosed,
            T::LedgerMustMatch,
            T::CreditAccountNotFound,
            T::DebitAccountAlreadyClosed,
            T::DebitAccountAlreadyClosed,
            T::DebitAccountAlreadyClosed,
            T::PendingTransferExpired,
            T::ExceedsPendingTransferAmount,
            T::CreditAccountAlreadyClosed,
        ],
    );
    assert_eq!(l.balances(4), (10, 0, 0, 0));
    // A void is allowed on a closed account; only voiding the closing transfer reopens it.
    s.t(l.transfers(vec![void(32, 10, 0)]), &[T::Ok]);
    assert!(l.is_closed(4));
    assert_eq!(l.balances(4), (3, 0, 0, 0));
    s.t(
        l.transfers(vec![void(33, 12, 0), tr(34, 4, 2, 1)]),
        &[T::Ok, T::Ok],
    );
    assert!(!l.is_closed(4));
    assert_eq!(l.balances(4), (0, 1, 0, 0));
}

/// `t` with one field changed each; the last ones would be refused on their own fields.
fn differing(t: NewTransfer) -> Vec<NewTransfer> {
    vec![
        NewTransfer { amount: 41, ..t },
        NewTransfer {
            user_data_64: 4,
            ..t
        },
        NewTransfer { code: 2, ..t },
        NewTransfer {
            debit_account_id: AccountId(4),
            ..t
        },
        NewTransfer {
            credit_account_id: AccountId(4),
            ..t
        },
        NewTransfer {
            debit_account_id: AccountId(2),
            credit_account_id: AccountId(1),
            ..t
        },
        NewTransfer {
            flags: TransferFlags::PENDING,
            ..t
        },
        NewTransfer {
            flags: TransferFlags::PENDING,
            timeout: 5,
            ..t
        },
        // An existing id answers before any field check: a retry with fields that would be
        // refused on their own learns that the id is taken.
        NewTransfer {
            debit_account_id: AccountId(0),
            ..t
        },
        NewTransfer {
            credit_account_id: AccountId(u128::MAX),
            ..t
        },
        NewTransfer {
            credit_account_id: AccountId(1),
            ..t
        },
        NewTransfer { ledger: 0, ..t },
        NewTransfer { ledger: 2, ..t },
        NewTransfer {
            debit_account_id: AccountId(99),
            ..t
        },
        NewTransfer {
            pending_id: TransferId(5),
            ..t
        },
        with(t, TransferFlags::CLOSING_DEBIT),
        with(t, TransferFlags::BALANCING_DEBIT),
    ]
}

fn transfer_exists(s: &mut Seen) {
    let mut l = base();
    let t = NewTransfer {
        user_data_64: 3,
        ..tr(10, 1, 2, 40)
    };
    s.t(l.transfers(vec![t]), &[T::Ok]);
    let before = l.store.accounts.clone();
    s.t(l.transfers(vec![t, t]), &[T::Exists, T::Exists]);
    let variants = differing(t);
    let n = variants.len();
    s.t(
        l.transfers(variants),
        &vec![T::ExistsWithDifferentFields; n],
    );
    assert_eq!(
        l.failed(10),
        None,
        "a taken id is no transient refusal and reserves nothing"
    );
    // ... but the reserved flag and the id itself are checked first.
    s.t(
        l.transfers(vec![with(t, unnamed_flag())]),
        &[T::ReservedFlag],
    );
    assert_eq!(l.store.accounts, before, "a duplicate never moves money");
    assert_eq!(l.transfer(10).map(|x| x.amount), Some(40));
}

fn post_exists(s: &mut Seen) {
    let mut l = base();
    // A post's id is idempotent too.
    s.t(
        l.transfers(vec![
            tr(10, 1, 2, 40),
            pending(11, 1, 2, 10, 0),
            post_full(12, 11),
        ]),
        &[T::Ok; 3],
    );
    let before = l.store.accounts.clone();
    s.t(
        l.transfers(vec![
            post_full(12, 11),
            post(12, 11, 10),
            NewTransfer {
                user_data_64: 1,
                ..post_full(12, 11)
            },
            post(12, 11, 9),
            void(12, 11, 0),
            // A post's amount 0 is literal: not the 10 posted.
            post(12, 11, 0),
            // More than the pending amount: the id is taken, which answers before the amount.
            post(12, 11, 11),
        ]),
        &[
            T::Exists,
            T::Exists,
            T::ExistsWithDifferentFields,
            T::ExistsWithDifferentFields,
            T::ExistsWithDifferentFields,
            T::ExistsWithDifferentFields,
            T::ExistsWithDifferentFields,
        ],
    );
    assert_eq!(l.store.accounts, before);
    // A post whose id is taken by an ordinary transfer.
    s.t(
        l.transfers(vec![pending(13, 1, 2, 10, 0), post_full(10, 13)]),
        &[T::Ok, T::ExistsWithDifferentFields],
    );
    assert_eq!(l.status(13), Some(PendingStatus::Pending));
}

fn pending_resolved(s: &mut Seen) {
    let mut l = base();
    s.t(
        l.transfers(vec![pending(10, 1, 2, 100, 0), pending(11, 1, 2, 100, 0)]),
        &[T::Ok, T::Ok],
    );
    s.t(
        l.transfers(vec![post_full(20, 10), void(21, 11, 0)]),
        &[T::Ok, T::Ok],
    );
    let before = l.store.accounts.clone();
    s.t(
        l.transfers(vec![
            post_full(22, 10),
            void(23, 10, 0),
            post_full(24, 11),
            void(25, 11, 0),
        ]),
        &[
            T::PendingTransferAlreadyPosted,
            T::PendingTransferAlreadyPosted,
            T::PendingTransferAlreadyVoided,
            T::PendingTransferAlreadyVoided,
        ],
    );
    assert_eq!(l.store.accounts, before);
    assert!(l.transfer(22).is_none() && l.transfer(25).is_none());
}

fn pending_expired(s: &mut Seen) {
    let mut l = base();
    s.t(l.transfers(vec![pending(10, 1, 2, 100, 1)]), &[T::Ok]);
    l.advance_secs(2);
    s.t(
        l.transfers(vec![post(20, 10, 0), void(21, 10, 0)]),
        &[T::PendingTransferExpired, T::PendingTransferExpired],
    );
    assert_eq!(l.status(10), Some(PendingStatus::Expired));
    assert_eq!(l.balances(1), (0, 0, 0, 0));
}

fn overflows_posted_and_pending(s: &mut Seen) {
    let max = u128::MAX;
    let mut l = base();
    s.t(l.transfers(vec![tr(10, 1, 2, max)]), &[T::Ok]);
    let before = l.store.accounts.clone();
    s.t(
        l.transfers(vec![tr(11, 1, 4, 1), tr(12, 4, 2, 1)]),
        &[T::OverflowsDebitsPosted, T::OverflowsCreditsPosted],
    );
    assert_eq!(l.store.accounts, before);

    let mut l = base();
    s.t(l.transfers(vec![pending(10, 1, 2, max, 0)]), &[T::Ok]);
    let before = l.store.accounts.clone();
    s.t(
        l.transfers(vec![pending(11, 1, 4, 1, 0), pending(12, 4, 2, 1, 0)]),
        &[T::OverflowsDebitsPending, T::OverflowsCreditsPending],
    );
    assert_eq!(l.store.accounts, before);
    // Posting the full pending amount moves u128::MAX without overflow.
    s.t(l.transfers(vec![post_full(13, 10)]), &[T::Ok]);
    assert_eq!(l.balances(1), (0, max, 0, 0));
    assert_eq!(l.balances(2), (0, 0, 0, max));
}

fn overflows_sum_of_pending_and_posted(s: &mut Seen) {
    let max = u128::MAX;
    let mut l = base();
    s.t(
        l.transfers(vec![
            tr(10, 1, 2, max - 5),
            pending(11, 1, 4, 5, 0),
            tr(12, 5, 6, max - 5),
            pending(13, 7, 6, 5, 0),
        ]),
        &[T::Ok; 4],
    );
    let before = l.store.accounts.clone();
    s.t(
        l.transfers(vec![
            tr(20, 1, 4, 1),
            pending(21, 1, 4, 1, 0),
            tr(22, 4, 6, 1),
            pending(23, 4, 6, 1, 0),
        ]),
        &[
            T::OverflowsDebits,
            T::OverflowsDebits,
            T::OverflowsCredits,
            T::OverflowsCredits,
        ],
    );
    assert_eq!(l.store.accounts, before);
}

fn overflows_timeout(s: &mut Seen) {
    // The pending transfer's event lands 5 seconds before u64::MAX: a timeout of 5 seconds
    // still fits, 6 seconds does not.
    let at = u64::MAX - 5 * NANOS_PER_SECOND;
    let mut l = Ledger::starting_at(at - 100);
    l.open(vec![acct(1, 1), acct(2, 1)]);
    l.first_event_at(at);
    s.t(
        l.transfers(vec![pending(10, 1, 2, 1, 6)]),
        &[T::OverflowsTimeout],
    );
    let mut l2 = Ledger::starting_at(at - 100);
    l2.open(vec![acct(1, 1), acct(2, 1)]);
    l2.first_event_at(at);
    s.t(l2.transfers(vec![pending(10, 1, 2, 1, 5)]), &[T::Ok]);
    assert_eq!(
        l2.transfer(10).and_then(|t| t.expires_at()),
        Some(Timestamp(u64::MAX))
    );
    l.first_event_at(at + 1);
    s.t(
        l.transfers(vec![
            pending(11, 1, 2, 1, u32::MAX),
            pending(12, 1, 2, 1, 0),
        ]),
        &[T::OverflowsTimeout, T::Ok],
    );
    assert_eq!(l.balances(1), (1, 0, 0, 0));
}

fn exceeds_credits_and_debits(s: &mut Seen) {
    let mut l = Ledger::default();
    l.open(vec![
        acct_flags(1, 1, AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS),
        acct(2, 1),
        acct_flags(3, 1, AccountFlags::CREDITS_MUST_NOT_EXCEED_DEBITS),
    ]);
    s.t(
        l.transfers(vec![tr(10, 1, 2, 1), pending(11, 1, 2, 1, 0)]),
        &[T::ExceedsCredits, T::ExceedsCredits],
    );
    // Pending credits do not count as credits.
    s.t(
        l.transfers(vec![pending(12, 2, 1, 50, 0), tr(13, 1, 2, 1)]),
        &[T::Ok, T::ExceedsCredits],
    );
    // Posted credits do, up to exactly the balance; pending debits count against them.
    s.t(
        l.transfers(vec![
            tr(14, 2, 1, 20),
            pending(15, 1, 2, 15, 0),
            tr(16, 1, 2, 6),
            tr(17, 1, 2, 5),
        ]),
        &[T::Ok, T::Ok, T::ExceedsCredits, T::Ok],
    );
    assert_eq!(l.balances(1), (15, 5, 50, 20));
    // Mirror: credits must not exceed debits.
    s.t(
        l.transfers(vec![tr(20, 2, 3, 1), pending(21, 2, 3, 1, 0)]),
        &[T::ExceedsDebits, T::ExceedsDebits],
    );
    s.t(
        l.transfers(vec![
            tr(22, 3, 2, 10),
            pending(23, 2, 3, 4, 0),
            tr(24, 2, 3, 7),
            tr(25, 2, 3, 6),
        ]),
        &[T::Ok, T::Ok, T::ExceedsDebits, T::Ok],
    );
    assert_eq!(l.balances(3), (0, 10, 4, 6));
}

fn external_payments(s: &mut Seen) {
    let mut l = base();
    l.open(vec![acct_flags(9, 1, AccountFlags::EXTERNAL)]);
    s.t(
        l.transfers(vec![pending(10, 1, 9, 5, 30), tr(11, 1, 9, 5)]),
        &[T::ExternalTransferTimeoutMustBeZero, T::Ok],
    );
    s.t(
        l.transfers(vec![post_full(12, 11), void(13, 11, 0)]),
        &[T::PendingTransferIsExternal, T::PendingTransferIsExternal],
    );
    let closing = with(pending(14, 1, 9, 5, 0), TransferFlags::CLOSING_DEBIT);
    s.t(
        l.transfers(vec![closing]),
        &[T::ExternalTransferMustNotClose],
    );
}

fn transfer_chains(s: &mut Seen) {
    let mut l = base();
    s.t(
        l.transfers(vec![linked(tr(10, 1, 2, 5)), tr(11, 1, 1, 5)]),
        &[T::LinkedEventFailed, T::AccountsMustBeDifferent],
    );
    s.t(
        l.transfers(vec![tr(12, 1, 2, 5), linked(tr(13, 1, 2, 5))]),
        &[T::Ok, T::LinkedEventChainOpen],
    );
    assert_eq!(l.balances(1), (0, 5, 0, 0));
    assert!(l.transfer(10).is_none() && l.transfer(13).is_none());
}

/// An import batch moves the ledger's time to its newest event, which `Ledger` (one timestamp
/// per event, from its clock) does not model: these scenarios apply to a store directly.
const IMPORT_NOW: u64 = 1_000_000;

fn apply_at(store: &mut MemoryStore, at: u64, operation: Operation) -> BatchResults {
    let batch = Batch {
        timestamp: Timestamp(at),
        operation,
    };
    apply(store, &batch)
}

fn import_accounts(store: &mut MemoryStore, at: u64, accounts: Vec<NewAccount>) -> Vec<A> {
    match apply_at(store, at, Operation::CreateAccounts(accounts)) {
        BatchResults::Accounts(r) => r,
        other => panic!("accounts batch answered {other:?}"),
    }
}

fn import_transfers(store: &mut MemoryStore, at: u64, transfers: Vec<NewTransfer>) -> Vec<T> {
    match apply_at(store, at, Operation::CreateTransfers(transfers)) {
        BatchResults::Transfers(r) => r,
        other => panic!("transfers batch answered {other:?}"),
    }
}

fn imported_account(id: u128, ts: u64) -> NewAccount {
    NewAccount {
        flags: AccountFlags::IMPORTED,
        timestamp: Timestamp(ts),
        ..acct(id, 1)
    }
}

fn imported_transfer(id: u128, ts: u64) -> NewTransfer {
    NewTransfer {
        flags: TransferFlags::IMPORTED,
        timestamp: Timestamp(ts),
        ..tr(id, 1, 2, 10)
    }
}

fn imported_accounts(s: &mut Seen) {
    let mut store = MemoryStore::default();
    let now = IMPORT_NOW;
    let batch = [
        (1, 0),
        (2, u64::MAX),
        (3, now),
        (4, 500),
        (5, 500),
        (6, 600),
    ];
    s.a(
        import_accounts(
            &mut store,
            now,
            batch.map(|(id, ts)| imported_account(id, ts)).to_vec(),
        ),
        &[
            A::ImportedEventTimestampOutOfRange,
            A::ImportedEventTimestampOutOfRange,
            A::ImportedEventTimestampMustNotAdvance,
            A::Ok,
            A::ImportedEventTimestampMustNotRegress,
            A::Ok,
        ],
    );
    let plain = acct(8, 1);
    s.a(
        import_accounts(&mut store, now + 10, vec![imported_account(7, 700), plain]),
        &[A::Ok, A::ImportedEventExpected],
    );
    s.a(
        import_accounts(&mut store, now + 20, vec![plain, imported_account(9, 800)]),
        &[A::Ok, A::ImportedEventNotExpected],
    );
    let stamped = NewAccount {
        timestamp: Timestamp(5),
        ..acct(10, 1)
    };
    s.a(
        import_accounts(&mut store, now + 30, vec![stamped]),
        &[A::TimestampMustBeZero],
    );
    // An existing id answers before the regress rule.
    s.a(
        import_accounts(
            &mut store,
            now + 40,
            vec![imported_account(4, 500), imported_account(4, 450)],
        ),
        &[A::Exists, A::ExistsWithDifferentFields],
    );
}

fn imported_transfers(s: &mut Seen) {
    let mut store = MemoryStore::default();
    let now = IMPORT_NOW;
    let accounts = vec![imported_account(1, 100), imported_account(2, 200)];
    s.a(import_accounts(&mut store, now, accounts), &[A::Ok, A::Ok]);
    let with_timeout = NewTransfer {
        timeout: 5,
        flags: TransferFlags::IMPORTED | TransferFlags::PENDING,
        ..imported_transfer(15, 400)
    };
    let batch = vec![
        imported_transfer(10, 0),
        imported_transfer(11, u64::MAX),
        imported_transfer(12, now + 10),
        imported_transfer(13, 300),
        imported_transfer(14, 300),
        with_timeout,
        imported_transfer(16, 401),
    ];
    s.t(
        import_transfers(&mut store, now + 10, batch),
        &[
            T::ImportedEventTimestampOutOfRange,
            T::ImportedEventTimestampOutOfRange,
            T::ImportedEventTimestampMustNotAdvance,
            T::Ok,
            T::ImportedEventTimestampMustNotRegress,
            T::ImportedEventTimeoutMustBeZero,
            T::Ok,
        ],
    );
    s.t(
        import_transfers(
            &mut store,
            now + 20,
            vec![imported_transfer(20, 500), tr(21, 1, 2, 1)],
        ),
        &[T::Ok, T::ImportedEventExpected],
    );
    s.t(
        import_transfers(
            &mut store,
            now + 30,
            vec![tr(22, 1, 2, 1), imported_transfer(23, 600)],
        ),
        &[T::Ok, T::ImportedEventNotExpected],
    );
    let stamped = NewTransfer {
        timestamp: Timestamp(5),
        ..tr(24, 1, 2, 1)
    };
    s.t(
        import_transfers(&mut store, now + 40, vec![stamped]),
        &[T::TimestampMustBeZero],
    );
    // 13, 16 and 20 imported 10 each, 22 moved 1.
    assert_eq!(
        store.account(AccountId(2)).map(|a| a.credits_posted),
        Some(31)
    );
}

macro_rules! scenarios {
    ($($name:ident),* $(,)?) => {
        mod each {
            $(
                #[test]
                fn $name() {
                    super::$name(&mut super::Seen::default());
                }
            )*
        }

        const SCENARIOS: &[fn(&mut Seen)] = &[$($name),*];
    };
}

scenarios!(
    account_ok,
    account_validation,
    account_exists,
    account_chains,
    transfer_ok,
    transfer_validation,
    transfer_precedence,
    amount_precedence,
    post_void_validation,
    post_void_precedence,
    void_precedence,
    id_already_failed,
    closed_accounts,
    imported_accounts,
    imported_transfers,
    transfer_exists,
    post_exists,
    pending_resolved,
    pending_expired,
    overflows_posted_and_pending,
    overflows_sum_of_pending_and_posted,
    overflows_timeout,
    exceeds_credits_and_debits,
    external_payments,
    transfer_chains,
);

#[test]
fn every_result_code_is_reached() {
    let mut seen = Seen::default();
    for scenario in SCENARIOS {
        scenario(&mut seen);
    }
    let missing_accounts: Vec<_> = A::ALL
        .iter()
        .filter(|r| !seen.accounts.contains(r))
        .map(|r| r.name())
        .collect();
    let missing_transfers: Vec<_> = T::ALL
        .iter()
        .filter(|r| !seen.transfers.contains(r))
        .map(|r| r.name())
        .collect();
    assert!(
        missing_accounts.is_empty() && missing_transfers.is_empty(),
        "no scenario reaches account results {missing_accounts:?} or transfer results {missing_transfers:?}"
    );
}

#[test]
fn result_names_round_trip_and_are_distinct() {
    let mut names = HashSet::new();
    for r in A::ALL {
        assert_eq!(A::from_name(r.name()), Some(*r));
        assert_eq!(r.to_string(), r.name());
        assert!(names.insert(("a", r.name())));
    }
    for r in T::ALL {
        assert_eq!(T::from_name(r.name()), Some(*r));
        assert!(names.insert(("t", r.name())));
    }
    assert_eq!(A::from_name("nope"), None);
    assert!(A::Ok.is_ok() && !A::Exists.is_ok());
    let ok: Vec<_> = T::ALL.iter().filter(|r| r.is_ok()).collect();
    assert_eq!(ok, vec![&T::Ok]);
    let exists: Vec<_> = T::ALL.iter().filter(|r| r.is_exists()).collect();
    assert_eq!(exists, vec![&T::Exists]);
    assert!(A::Exists.is_exists() && !A::ExistsWithDifferentFields.is_exists());
    let transient: Vec<_> = T::ALL.iter().filter(|r| r.is_transient()).collect();
    assert_eq!(
        transient,
        vec![
            &T::DebitAccountNotFound,
            &T::CreditAccountNotFound,
            &T::DebitAccountAlreadyClosed,
            &T::CreditAccountAlreadyClosed,
            &T::PendingTransferNotFound,
            &T::ExceedsCredits,
            &T::ExceedsDebits,
        ]
    );
}

#[test]
fn reserved_flag_is_checked_before_anything_else() {
    let mut l = Ledger::default();
    let bad = AccountFlags::from_bits_retain(0x8000);
    assert_eq!(l.account1(acct_flags(0, 0, bad)), A::ReservedFlag);
    let t = NewTransfer {
        flags: unnamed_flag::<TransferFlags>() | TransferFlags::PENDING,
        ..tr(0, 0, 0, 0)
    };
    assert_eq!(l.transfer1(t), T::ReservedFlag);
    assert!(l.store.pending_status(TransferId(0)).is_none());
}
