//! One scenario per result code, and a test that every code of `ALL` is produced by some
//! scenario: adding a result code without a scenario that reaches it fails
//! `every_result_code_is_reached`.

mod common;

use std::collections::HashSet;

use bulwark_ledger::{
    AccountFlags, AccountId, CreateAccountResult as A, CreateTransferResult as T, FlagSet,
    LedgerStore, NewAccount, NewTransfer, PendingStatus, Timestamp, TransferFlags, TransferId,
    NANOS_PER_SECOND,
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
        id: AccountId(42),
        ledger: 7,
        code: 3,
        flags: AccountFlags::HISTORY,
        user_data: 99,
    };
    let ts = l.next_event();
    s.a(l.accounts(vec![a]), &[A::Ok]);
    let stored = l.account(42);
    assert_eq!(
        (stored.ledger, stored.code, stored.flags, stored.user_data),
        (7, 3, AccountFlags::HISTORY, 99)
    );
    assert_eq!(stored.timestamp, Timestamp(ts));
    assert_eq!(l.balances(42), (0, 0, 0, 0));
}

fn account_validation(s: &mut Seen) {
    let mut l = Ledger::default();
    let batch = vec![
        acct(0, 1),
        acct(u64::MAX, 1),
        acct_flags(3, 1, AccountFlags::from_bits_retain(0x10)),
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
        user_data: 5,
        ..acct_flags(1, 1, AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS)
    };
    s.a(l.accounts(vec![a]), &[A::Ok]);
    let before = l.account(1);
    s.a(l.accounts(vec![a]), &[A::Exists]);
    let variants = [
        NewAccount { ledger: 2, ..a },
        NewAccount { code: 2, ..a },
        NewAccount { user_data: 6, ..a },
        NewAccount {
            flags: AccountFlags::empty(),
            ..a
        },
    ];
    s.a(
        l.accounts(variants.to_vec()),
        &[A::ExistsWithDifferentFields; 4],
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
        user_data: 77,
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
            stored.user_data,
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

fn transfer_validation(s: &mut Seen) {
    let mut l = base();
    let before = l.store.accounts.clone();
    let batch = vec![
        tr(0, 1, 2, 1),
        tr(u64::MAX, 1, 2, 1),
        NewTransfer {
            flags: TransferFlags::from_bits_retain(0x10),
            ..tr(10, 1, 2, 1)
        },
        NewTransfer {
            flags: TransferFlags::PENDING | TransferFlags::POST_PENDING_TRANSFER,
            ..tr(11, 1, 2, 1)
        },
        NewTransfer {
            flags: TransferFlags::POST_PENDING_TRANSFER | TransferFlags::VOID_PENDING_TRANSFER,
            ..tr(12, 1, 2, 1)
        },
        tr(13, 0, 2, 1),
        tr(14, 1, 0, 1),
        tr(15, 1, 1, 1),
        NewTransfer {
            pending_id: TransferId(5),
            ..tr(16, 1, 2, 1)
        },
        NewTransfer {
            timeout: 1,
            ..tr(17, 1, 2, 1)
        },
        NewTransfer {
            ledger: 0,
            ..tr(18, 1, 2, 1)
        },
        NewTransfer {
            code: 0,
            ..tr(19, 1, 2, 1)
        },
        tr(20, 1, 2, 0),
        pending(21, 1, 2, 0, 0),
        tr(22, 99, 2, 1),
        tr(23, 1, 99, 1),
        tr(24, 1, 3, 1),
        NewTransfer {
            ledger: 2,
            ..tr(25, 1, 2, 1)
        },
        NewTransfer {
            pending_id: TransferId(5),
            ..pending(26, 1, 2, 1, 0)
        },
    ];
    s.t(
        l.transfers(batch),
        &[
            T::IdMustNotBeZero,
            T::IdMustNotBeIntMax,
            T::ReservedFlag,
            T::FlagsAreMutuallyExclusive,
            T::FlagsAreMutuallyExclusive,
            T::DebitAccountIdMustNotBeZero,
            T::CreditAccountIdMustNotBeZero,
            T::AccountsMustBeDifferent,
            T::PendingIdMustBeZero,
            T::TimeoutReservedForPendingTransfer,
            T::LedgerMustNotBeZero,
            T::CodeMustNotBeZero,
            T::AmountMustNotBeZero,
            T::AmountMustNotBeZero,
            T::DebitAccountNotFound,
            T::CreditAccountNotFound,
            T::LedgerMustMatch,
            T::LedgerMustMatch,
            T::PendingIdMustBeZero,
        ],
    );
    assert!(
        l.store.transfers.is_empty(),
        "no invalid transfer is stored"
    );
    assert_eq!(l.store.accounts, before, "no invalid transfer moves money");
}

fn post_void_validation(s: &mut Seen) {
    let mut l = base();
    s.t(
        l.transfers(vec![pending(10, 1, 2, 100, 0), tr(11, 1, 2, 5)]),
        &[T::Ok, T::Ok],
    );
    let before = l.store.accounts.clone();
    let batch = vec![
        post(20, 0, 0),
        post(21, 21, 0),
        NewTransfer {
            timeout: 1,
            ..post(22, 10, 0)
        },
        NewTransfer {
            timeout: 1,
            ..void(23, 10, 0)
        },
        post(24, 99, 0),
        post(25, 11, 0),
        NewTransfer {
            debit_account_id: AccountId(2),
            ..post(26, 10, 0)
        },
        NewTransfer {
            credit_account_id: AccountId(1),
            ..post(27, 10, 0)
        },
        NewTransfer {
            ledger: 2,
            ..post(28, 10, 0)
        },
        NewTransfer {
            code: 2,
            ..void(29, 10, 0)
        },
        post(30, 10, 101),
        void(31, 10, 50),
        void(32, 10, 101),
        NewTransfer {
            flags: TransferFlags::POST_PENDING_TRANSFER | TransferFlags::PENDING,
            ..post(33, 10, 0)
        },
        void(34, 99, 0),
        void(35, 11, 0),
    ];
    s.t(
        l.transfers(batch),
        &[
            T::PendingIdMustNotBeZero,
            T::PendingIdMustBeDifferent,
            T::TimeoutReservedForPendingTransfer,
            T::TimeoutReservedForPendingTransfer,
            T::PendingTransferNotFound,
            T::PendingTransferNotPending,
            T::PendingTransferHasDifferentDebitAccountId,
            T::PendingTransferHasDifferentCreditAccountId,
            T::PendingTransferHasDifferentLedger,
            T::PendingTransferHasDifferentCode,
            T::ExceedsPendingTransferAmount,
            T::PendingTransferHasDifferentAmount,
            T::PendingTransferHasDifferentAmount,
            T::FlagsAreMutuallyExclusive,
            T::PendingTransferNotFound,
            T::PendingTransferNotPending,
        ],
    );
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

fn transfer_exists(s: &mut Seen) {
    let mut l = base();
    let t = NewTransfer {
        user_data: 3,
        ..tr(10, 1, 2, 40)
    };
    s.t(l.transfers(vec![t]), &[T::Ok]);
    let before = l.store.accounts.clone();
    s.t(l.transfers(vec![t, t]), &[T::Exists, T::Exists]);
    let variants = vec![
        NewTransfer { amount: 41, ..t },
        NewTransfer { user_data: 4, ..t },
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
    ];
    let n = variants.len();
    s.t(
        l.transfers(variants),
        &vec![T::ExistsWithDifferentFields; n],
    );
    assert_eq!(l.store.accounts, before, "a duplicate never moves money");
    assert_eq!(l.transfer(10).map(|x| x.amount), Some(40));
    // A post's id is idempotent too.
    s.t(
        l.transfers(vec![pending(11, 1, 2, 10, 0), post(12, 11, 0)]),
        &[T::Ok, T::Ok],
    );
    let before = l.store.accounts.clone();
    s.t(
        l.transfers(vec![
            post(12, 11, 0),
            post(12, 11, 10),
            NewTransfer {
                user_data: 1,
                ..post(12, 11, 0)
            },
            post(12, 11, 9),
            void(12, 11, 0),
        ]),
        &[
            T::Exists,
            T::Exists,
            T::ExistsWithDifferentFields,
            T::ExistsWithDifferentFields,
            T::ExistsWithDifferentFields,
        ],
    );
    assert_eq!(l.store.accounts, before);
    // A post whose id is taken by an ordinary transfer.
    s.t(
        l.transfers(vec![pending(13, 1, 2, 10, 0), post(10, 13, 0)]),
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
        l.transfers(vec![post(20, 10, 0), void(21, 11, 0)]),
        &[T::Ok, T::Ok],
    );
    let before = l.store.accounts.clone();
    s.t(
        l.transfers(vec![
            post(22, 10, 0),
            void(23, 10, 0),
            post(24, 11, 0),
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
    let max = u64::MAX;
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
    // Posting the full pending amount moves u64::MAX without overflow.
    s.t(l.transfers(vec![post(13, 10, 0)]), &[T::Ok]);
    assert_eq!(l.balances(1), (0, max, 0, 0));
    assert_eq!(l.balances(2), (0, 0, 0, max));
}

fn overflows_sum_of_pending_and_posted(s: &mut Seen) {
    let max = u64::MAX;
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

fn transfer_chains(s: &mut Seen) {
    let mut l = base();
    s.t(
        l.transfers(vec![linked(tr(10, 1, 2, 5)), tr(11, 1, 2, 0)]),
        &[T::LinkedEventFailed, T::AmountMustNotBeZero],
    );
    s.t(
        l.transfers(vec![tr(12, 1, 2, 5), linked(tr(13, 1, 2, 5))]),
        &[T::Ok, T::LinkedEventChainOpen],
    );
    assert_eq!(l.balances(1), (0, 5, 0, 0));
    assert!(l.transfer(10).is_none() && l.transfer(13).is_none());
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
    post_void_validation,
    transfer_exists,
    pending_resolved,
    pending_expired,
    overflows_posted_and_pending,
    overflows_sum_of_pending_and_posted,
    overflows_timeout,
    exceeds_credits_and_debits,
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
    let keep: Vec<_> = T::ALL.iter().filter(|r| r.keeps_chain()).collect();
    assert_eq!(keep, vec![&T::Ok, &T::Exists]);
}

#[test]
fn reserved_flag_is_checked_before_anything_else() {
    let mut l = Ledger::default();
    let bad = AccountFlags::from_bits_retain(0x8000);
    assert_eq!(l.account1(acct_flags(0, 0, bad)), A::ReservedFlag);
    let t = NewTransfer {
        flags: TransferFlags::from_bits_retain(0x100) | TransferFlags::PENDING,
        ..tr(0, 0, 0, 0)
    };
    assert_eq!(l.transfer1(t), T::ReservedFlag);
    assert!(l.store.pending_status(TransferId(0)).is_none());
}
