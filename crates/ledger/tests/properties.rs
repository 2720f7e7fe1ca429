//! Properties of random batch sequences: double entry, account limits, idempotent retry,
//! whole-or-absent chains, balances equal to a replay of the stored transfers, and
//! determinism.

use std::collections::{BTreeMap, HashMap};

use bulwark_ledger::{
    apply, check_balanced, AccountFlags, AccountId, Batch, BatchResults, CreateAccountResult,
    CreateTransferResult, LedgerStore, MemoryStore, NewAccount, NewTransfer, Operation,
    PendingStatus, Timestamp, TransferFlags, TransferId, NANOS_PER_SECOND,
};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, TestRunner};

// ---------------------------------------------------------------------------------------------
// Generators

/// Accounts 1..=6; the odd ones mostly on ledger 2, the even ones mostly on ledger 1.
fn account_with(ids: impl Strategy<Value = u64>, linked: f64) -> impl Strategy<Value = NewAccount> {
    (
        ids,
        prop_oneof![30 => Just(None), 2 => (0u32..=3).prop_map(Some)],
        prop_oneof![30 => Just(1u16), 1 => Just(0u16), 3 => Just(2u16)],
        prop::bool::weighted(linked),
        prop::bool::weighted(0.2),
        prop::bool::weighted(0.15),
        prop::bool::weighted(0.2),
        prop_oneof![6 => Just(0u64), 1 => Just(1u64)],
    )
        .prop_map(
            |(id, ledger, code, linked, dmnec, cmned, history, user_data)| {
                let mut flags = AccountFlags::empty();
                for (on, f) in [
                    (linked, AccountFlags::LINKED),
                    (dmnec, AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS),
                    (cmned, AccountFlags::CREDITS_MUST_NOT_EXCEED_DEBITS),
                    (history, AccountFlags::HISTORY),
                ] {
                    if on {
                        flags = flags | f;
                    }
                }
                NewAccount {
                    id: AccountId(id),
                    ledger: ledger.unwrap_or(1 + (id % 2) as u32),
                    code,
                    flags,
                    user_data,
                }
            },
        )
}

fn account() -> impl Strategy<Value = NewAccount> {
    account_with(1u64..=7, 0.2)
}

/// Accounts 1..=6 once each, unlinked: the ledger most batches start from.
fn opening_accounts() -> impl Strategy<Value = Vec<NewAccount>> {
    (1u64..=6)
        .map(|id| account_with(Just(id), 0.0))
        .collect::<Vec<_>>()
}

fn amount() -> impl Strategy<Value = u64> {
    prop_oneof![
        4 => Just(0u64),
        80 => 1u64..=40,
        2 => Just(u64::MAX / 2),
        1 => Just(u64::MAX),
    ]
}

#[derive(Clone, Copy, Debug)]
enum Kind {
    Posted,
    Pending,
    Post,
    Void,
    Clash,
}

fn transfer() -> impl Strategy<Value = NewTransfer> {
    let kind = prop_oneof![
        35 => Just(Kind::Posted),
        30 => Just(Kind::Pending),
        18 => Just(Kind::Post),
        12 => Just(Kind::Void),
        2 => Just(Kind::Clash),
    ];
    (
        kind,
        prop::bool::weighted(0.15),
        1u64..=12,
        prop_oneof![
            30 => (1u64..=6, 1u64..=2).prop_map(|(dr, k)| {
                // Another account of the same parity, so mostly of the same ledger.
                let parity = if dr % 2 == 1 { 1 } else { 2 };
                (dr, ((dr - 1) / 2 + k) % 3 * 2 + parity)
            }),
            3 => (0u64..=7, 0u64..=7),
        ],
        amount(),
        1u64..=7,
        0u32..=3,
        prop_oneof![20 => Just(None), 1 => (1u32..=2).prop_map(Some)],
        prop::bool::weighted(0.08),
        0u64..=1,
    )
        .prop_map(
            |(kind, linked, id, (dr, cr), amount, pending_id, timeout, ledger, noise, ud)| {
                // Pending transfers take ids 1..=6, others 5..=14: enough overlap for
                // collisions, enough apart for posts and voids to find their pending transfer.
                let id = match kind {
                    Kind::Pending => 1 + (id - 1) % 6,
                    Kind::Post | Kind::Void => 8 + id % 7,
                    Kind::Posted | Kind::Clash => 4 + id % 9,
                };
                let mut t = NewTransfer {
                    id: TransferId(id),
                    debit_account_id: AccountId(dr),
                    credit_account_id: AccountId(cr),
                    amount,
                    pending_id: TransferId(0),
                    timeout: 0,
                    ledger: ledger.unwrap_or(1 + (dr % 2) as u32),
                    code: 1,
                    flags: TransferFlags::empty(),
                    user_data: ud,
                };
                match kind {
                    Kind::Posted => {
                        if noise {
                            t.timeout = timeout;
                            t.pending_id = TransferId(pending_id);
                        }
                    }
                    Kind::Pending => {
                        t.flags = TransferFlags::PENDING;
                        t.timeout = timeout;
                    }
                    Kind::Post | Kind::Void => {
                        t.flags = if matches!(kind, Kind::Post) {
                            TransferFlags::POST_PENDING_TRANSFER
                        } else {
                            TransferFlags::VOID_PENDING_TRANSFER
                        };
                        t.pending_id = TransferId(pending_id);
                        t.amount = if amount % 2 == 0 { 0 } else { amount };
                        if !noise {
                            t.debit_account_id = AccountId(0);
                            t.credit_account_id = AccountId(0);
                            t.ledger = 0;
                            t.code = 0;
                        }
                    }
                    Kind::Clash => {
                        t.flags = TransferFlags::PENDING | TransferFlags::VOID_PENDING_TRANSFER;
                    }
                }
                if linked {
                    t.flags = t.flags | TransferFlags::LINKED;
                }
                t
            },
        )
}

fn gap() -> impl Strategy<Value = u64> {
    prop_oneof![3 => 0u64..1_000, 2 => 0u64..3 * NANOS_PER_SECOND]
}

#[derive(Clone, Debug)]
enum Step {
    Batch {
        gap: u64,
        op: Operation,
    },
    /// Re-applies the operation of an earlier batch, as a client retrying would.
    Retry {
        gap: u64,
        back: usize,
    },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        2 => (gap(), prop::collection::vec(account(), 1..5))
            .prop_map(|(gap, a)| Step::Batch { gap, op: Operation::CreateAccounts(a) }),
        10 => (gap(), prop::collection::vec(transfer(), 1..10))
            .prop_map(|(gap, t)| Step::Batch { gap, op: Operation::CreateTransfers(t) }),
        2 => (gap(), 0usize..8).prop_map(|(gap, back)| Step::Retry { gap, back }),
    ]
}

fn steps() -> impl Strategy<Value = Vec<Step>> {
    (opening_accounts(), prop::collection::vec(step(), 1..12)).prop_map(|(first, rest)| {
        let mut all = vec![Step::Batch {
            gap: 0,
            op: Operation::CreateAccounts(first),
        }];
        all.extend(rest);
        all
    })
}

/// Turns steps into concrete batches with increasing timestamps.
fn batches(steps: &[Step]) -> Vec<Batch> {
    let mut now = 1_000u64;
    let mut out: Vec<Batch> = Vec::new();
    for s in steps {
        let (gap, op) = match s {
            Step::Batch { gap, op } => (*gap, op.clone()),
            Step::Retry { gap, back } => {
                let earlier = &out[out.len() - 1 - back % out.len()];
                (*gap, earlier.operation.clone())
            }
        };
        now += gap + op.len() as u64;
        out.push(Batch {
            timestamp: Timestamp(now),
            operation: op,
        });
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Checks

fn first_event(batch: &Batch) -> u64 {
    batch.timestamp.0 - (batch.operation.len() as u64 - 1)
}

/// Per event: its linked flag and whether its result keeps a chain alive.
fn shape(batch: &Batch, results: &BatchResults) -> Vec<(bool, bool, bool, bool)> {
    // (linked, ok, keeps_chain, is linked_event_failed / chain_open)
    match (&batch.operation, results) {
        (Operation::CreateAccounts(a), BatchResults::Accounts(r)) => a
            .iter()
            .zip(r)
            .map(|(a, r)| {
                (
                    a.flags.contains(AccountFlags::LINKED),
                    r.is_ok(),
                    r.keeps_chain(),
                    *r == CreateAccountResult::LinkedEventFailed,
                )
            })
            .collect(),
        (Operation::CreateTransfers(t), BatchResults::Transfers(r)) => t
            .iter()
            .zip(r)
            .map(|(t, r)| {
                (
                    t.flags.contains(TransferFlags::LINKED),
                    r.is_ok(),
                    r.keeps_chain(),
                    *r == CreateTransferResult::LinkedEventFailed,
                )
            })
            .collect(),
        _ => panic!("results of the wrong kind"),
    }
}

fn chain_open(results: &BatchResults, i: usize) -> bool {
    match results {
        BatchResults::Accounts(r) => r[i] == CreateAccountResult::LinkedEventChainOpen,
        BatchResults::Transfers(r) => r[i] == CreateTransferResult::LinkedEventChainOpen,
        BatchResults::Control(_) => unreachable!("the properties generate no control commands"),
    }
}

/// The chains of a batch as index ranges: runs of linked events with the event closing them.
fn chains(linked: &[bool]) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    let mut start = None;
    for (i, &l) in linked.iter().enumerate() {
        if l && start.is_none() {
            start = Some(i);
        }
        if !l || i + 1 == linked.len() {
            if let Some(s) = start.take() {
                out.push(s..i + 1);
            }
        }
    }
    out
}

/// The event timestamps of objects the batch stored.
fn created_at(before: &MemoryStore, after: &MemoryStore, batch: &Batch) -> BTreeMap<u64, u64> {
    match batch.operation {
        Operation::CreateAccounts(_) => after
            .accounts
            .values()
            .filter(|a| !before.accounts.contains_key(&a.id))
            .map(|a| (a.timestamp.0, a.id.0))
            .collect(),
        Operation::CreateTransfers(_) => after
            .transfers
            .values()
            .filter(|t| !before.transfers.contains_key(&t.id))
            .map(|t| (t.timestamp.0, t.id.0))
            .collect(),
        Operation::Control(_) => unreachable!("the properties generate no control commands"),
    }
}

fn event_id(batch: &Batch, i: usize) -> u64 {
    match &batch.operation {
        Operation::CreateAccounts(a) => a[i].id.0,
        Operation::CreateTransfers(t) => t[i].id.0,
        Operation::Control(_) => unreachable!("the properties generate no control commands"),
    }
}

/// Everything that must hold after one batch, given the state before it.
fn check_batch(before: &MemoryStore, after: &MemoryStore, batch: &Batch, results: &BatchResults) {
    let n = batch.operation.len();
    let first = first_event(batch);
    assert_eq!(results.names().len(), n, "one result per event");
    assert_eq!(after.last_timestamp, batch.timestamp);

    // Double entry, and account limits.
    check_balanced(after.accounts.values()).unwrap();
    for a in after.accounts.values() {
        let debits = u128::from(a.debits_pending) + u128::from(a.debits_posted);
        let credits = u128::from(a.credits_pending) + u128::from(a.credits_posted);
        if a.flags
            .contains(AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS)
        {
            assert!(
                debits <= u128::from(a.credits_posted),
                "{a:?} exceeds its credits"
            );
        }
        if a.flags
            .contains(AccountFlags::CREDITS_MUST_NOT_EXCEED_DEBITS)
        {
            assert!(
                credits <= u128::from(a.debits_posted),
                "{a:?} exceeds its debits"
            );
        }
        assert!(debits <= u128::from(u64::MAX) && credits <= u128::from(u64::MAX));
    }
    // Accounts never disappear or change anything but balances.
    for (id, a) in &before.accounts {
        let b = after.accounts[id];
        assert_eq!(
            (a.ledger, a.code, a.flags, a.user_data, a.timestamp),
            (b.ledger, b.code, b.flags, b.user_data, b.timestamp)
        );
        assert!(b.debits_posted >= a.debits_posted && b.credits_posted >= a.credits_posted);
    }
    for (id, t) in &before.transfers {
        assert_eq!(after.transfers.get(id), Some(t), "transfers are immutable");
    }

    // An event answered ok if and only if the object it created is stored under its timestamp.
    let created = created_at(before, after, batch);
    let shape = shape(batch, results);
    for (i, (_, ok, _, _)) in shape.iter().enumerate() {
        let ts = first + i as u64;
        if *ok {
            assert_eq!(
                created.get(&ts),
                Some(&event_id(batch, i)),
                "event {i} ok but not stored"
            );
        } else {
            assert_eq!(created.get(&ts), None, "event {i} failed but stored");
        }
    }
    assert_eq!(
        created.len(),
        shape.iter().filter(|s| s.1).count(),
        "nothing is stored without an ok"
    );

    // Linked chains: whole, or absent with one event keeping its own code.
    let linked: Vec<bool> = shape.iter().map(|s| s.0).collect();
    let chain_ranges = chains(&linked);
    let mut in_chain = vec![false; n];
    for range in &chain_ranges {
        in_chain[range.clone()].iter_mut().for_each(|c| *c = true);
        let open = linked[range.end - 1];
        let whole = range.clone().all(|i| shape[i].2);
        if whole {
            assert!(!open, "an open chain cannot succeed");
            continue;
        }
        let own: Vec<usize> = range.clone().filter(|&i| !shape[i].3).collect();
        assert_eq!(
            own.len(),
            1,
            "exactly one event of a failed chain keeps its code"
        );
        assert!(!shape[own[0]].2);
        if open {
            assert!(
                chain_open(results, range.end - 1) || shape[range.end - 1].3,
                "an open chain's last event answers chain_open or linked_event_failed"
            );
        }
        for i in range.clone() {
            assert_eq!(
                created.get(&(first + i as u64)),
                None,
                "failed chain stored event {i}"
            );
        }
    }
    for i in 0..n {
        if !in_chain[i] {
            assert!(
                !shape[i].3 && !chain_open(results, i),
                "event {i} outside chains"
            );
        }
    }

    check_state(after, first);
}

/// Balances equal a replay of the stored transfers, and pending bookkeeping is consistent.
fn check_state(store: &MemoryStore, first_event: u64) {
    let mut sums: HashMap<AccountId, [u128; 4]> = HashMap::new();
    let mut resolutions: HashMap<TransferId, Vec<TransferFlags>> = HashMap::new();
    for t in store.transfers.values() {
        assert!(t.amount > 0);
        let dr = store.accounts[&t.debit_account_id];
        let cr = store.accounts[&t.credit_account_id];
        assert!(dr.ledger == t.ledger && cr.ledger == t.ledger && dr.id != cr.id);
        if t.flags.contains(TransferFlags::PENDING) {
            let status = store.pending[&t.id];
            if status == PendingStatus::Pending {
                sums.entry(dr.id).or_default()[0] += u128::from(t.amount);
                sums.entry(cr.id).or_default()[2] += u128::from(t.amount);
            }
            continue;
        }
        let resolves = t.flags.contains(TransferFlags::POST_PENDING_TRANSFER)
            || t.flags.contains(TransferFlags::VOID_PENDING_TRANSFER);
        if resolves {
            let p = store.transfers[&t.pending_id];
            assert!(t.amount <= p.amount);
            assert_eq!(
                (t.debit_account_id, t.credit_account_id, t.ledger, t.code),
                (p.debit_account_id, p.credit_account_id, p.ledger, p.code)
            );
            resolutions.entry(p.id).or_default().push(t.flags);
        } else {
            assert_eq!(store.pending.get(&t.id), None);
        }
        if t.flags.contains(TransferFlags::VOID_PENDING_TRANSFER) {
            assert_eq!(t.amount, store.transfers[&t.pending_id].amount);
        } else {
            sums.entry(dr.id).or_default()[1] += u128::from(t.amount);
            sums.entry(cr.id).or_default()[3] += u128::from(t.amount);
        }
    }
    for a in store.accounts.values() {
        let s = sums.get(&a.id).copied().unwrap_or_default();
        let balances = [
            a.debits_pending,
            a.debits_posted,
            a.credits_pending,
            a.credits_posted,
        ]
        .map(u128::from);
        assert_eq!(
            balances, s,
            "account {} balances differ from the replay",
            a.id
        );
    }
    for (id, status) in &store.pending {
        let p = store.transfers[id];
        assert!(p.flags.contains(TransferFlags::PENDING));
        let res = resolutions.get(id).cloned().unwrap_or_default();
        let expiry = p.expires_at().map(|at| (at, *id));
        let indexed = expiry.is_some_and(|e| store.expiries.contains(&e));
        match status {
            PendingStatus::Pending => {
                assert!(res.is_empty());
                assert_eq!(indexed, expiry.is_some(), "pending {id} expiry index");
                if let Some((at, _)) = expiry {
                    assert!(at.0 > first_event, "pending {id} should have expired");
                }
            }
            PendingStatus::Posted | PendingStatus::Voided => {
                let flag = if *status == PendingStatus::Posted {
                    TransferFlags::POST_PENDING_TRANSFER
                } else {
                    TransferFlags::VOID_PENDING_TRANSFER
                };
                assert_eq!(res.len(), 1);
                assert!(res[0].contains(flag));
                assert!(!indexed);
            }
            PendingStatus::Expired => {
                assert!(res.is_empty());
                assert!(!indexed);
                assert!(expiry.is_some_and(|(at, _)| at.0 <= first_event));
            }
        }
    }
    assert!(store
        .expiries
        .iter()
        .all(|(_, id)| store.pending.get(id) == Some(&PendingStatus::Pending)));
}

/// `store` with what the start of a batch at `first` expires done by hand.
fn expired_by_hand(store: &MemoryStore, first: u64) -> MemoryStore {
    let mut s = store.clone();
    for (at, id) in store.expired_pending(Timestamp(first)) {
        let p = s.transfers[&id];
        s.accounts
            .get_mut(&p.debit_account_id)
            .unwrap()
            .debits_pending -= p.amount;
        s.accounts
            .get_mut(&p.credit_account_id)
            .unwrap()
            .credits_pending -= p.amount;
        s.pending.insert(id, PendingStatus::Expired);
        s.expiries.remove(&(at, id));
    }
    s
}

/// Applies `batch` again, later, to a copy of `store` (which it was just applied to).
fn check_retry(store: &MemoryStore, batch: &Batch, first: &BatchResults, later: u64) {
    let mut copy = store.clone();
    let retry = Batch {
        timestamp: Timestamp(batch.timestamp.0 + later + batch.operation.len() as u64),
        operation: batch.operation.clone(),
    };
    let expected = expired_by_hand(store, first_event(&retry));
    let again = apply(&mut copy, &retry);
    let before = shape(batch, first);
    let after = shape(&retry, &again);
    for (i, (b, a)) in before.iter().zip(&after).enumerate() {
        if b.2 {
            assert!(
                a.2 && !a.1,
                "event {i} answered {} then {} on retry",
                first.names()[i],
                again.names()[i]
            );
        }
    }
    if before.iter().all(|b| b.2) {
        assert_eq!(copy.accounts, expected.accounts, "a retry moved money");
        assert_eq!(copy.transfers, expected.transfers);
        assert_eq!(copy.pending, expected.pending);
        assert_eq!(copy.expiries, expected.expiries);
    }
    check_batch(store, &copy, &retry, &again);
}

fn run(batches: &[Batch], retry_later: u64) -> (Vec<BatchResults>, MemoryStore) {
    let mut store = MemoryStore::default();
    let mut all = Vec::new();
    for batch in batches {
        let before = store.clone();
        let results = apply(&mut store, batch);
        check_batch(&before, &store, batch, &results);
        check_retry(&store, batch, &results, retry_later);
        all.push(results);
    }
    (all, store)
}

fn same_state(a: &MemoryStore, b: &MemoryStore) {
    assert_eq!(a.accounts, b.accounts);
    assert_eq!(a.transfers, b.transfers);
    assert_eq!(a.pending, b.pending);
    assert_eq!(a.expiries, b.expiries);
    assert_eq!(a.balance_history, b.balance_history);
    assert_eq!(a.last_timestamp, b.last_timestamp);
}

proptest! {
    #![proptest_config(Config { cases: 2000, ..Config::default() })]

    /// Conservation, limits, replay, chains and retries, checked after every batch.
    #[test]
    fn invariants_hold_after_every_batch(
        steps in steps(),
        later in prop_oneof![Just(0u64), 0u64..4 * NANOS_PER_SECOND],
    ) {
        run(&batches(&steps), later);
    }

    #[test]
    fn apply_is_deterministic(steps in steps()) {
        let batches = batches(&steps);
        let mut a = MemoryStore::default();
        let mut b = MemoryStore::default();
        for batch in &batches {
            let ra = apply(&mut a, batch);
            let rb = apply(&mut b, batch);
            prop_assert_eq!(ra, rb);
        }
        same_state(&a, &b);
    }

    /// The linked flag on accounts: a failed account chain stores none of its accounts.
    #[test]
    fn account_batches_alone(accounts in prop::collection::vec(account(), 1..12)) {
        let batch = Batch {
            timestamp: Timestamp(100),
            operation: Operation::CreateAccounts(accounts),
        };
        run(&[batch], 0);
    }
}

/// The generators must actually reach the interesting outcomes, or the properties above
/// would hold vacuously.
#[test]
fn generated_batches_reach_the_interesting_cases() {
    let mut runner = TestRunner::deterministic();
    let strategy = steps();
    let mut transfer_codes: HashMap<CreateTransferResult, usize> = HashMap::new();
    let mut account_codes: HashMap<CreateAccountResult, usize> = HashMap::new();
    let mut statuses: HashMap<PendingStatus, usize> = HashMap::new();
    for _ in 0..500 {
        let steps = strategy.new_tree(&mut runner).unwrap().current();
        let (results, store) = run(&batches(&steps), 0);
        for r in results {
            match r {
                BatchResults::Accounts(r) => r
                    .into_iter()
                    .for_each(|r| *account_codes.entry(r).or_default() += 1),
                BatchResults::Transfers(r) => r
                    .into_iter()
                    .for_each(|r| *transfer_codes.entry(r).or_default() += 1),
                BatchResults::Control(_) => unreachable!("no control commands here"),
            }
        }
        for s in store.pending.values() {
            *statuses.entry(*s).or_default() += 1;
        }
    }
    use CreateTransferResult as T;
    for code in [
        T::Ok,
        T::Exists,
        T::ExistsWithDifferentFields,
        T::LinkedEventFailed,
        T::LinkedEventChainOpen,
        T::PendingTransferExpired,
        T::PendingTransferAlreadyPosted,
        T::PendingTransferAlreadyVoided,
        T::ExceedsCredits,
        T::ExceedsDebits,
        T::ExceedsPendingTransferAmount,
        T::LedgerMustMatch,
        T::OverflowsDebitsPosted,
        T::OverflowsDebitsPending,
        T::PendingTransferHasDifferentAmount,
    ] {
        assert!(
            transfer_codes.get(&code).copied().unwrap_or(0) > 0,
            "no generated transfer answered {code}; seen {transfer_codes:?}"
        );
    }
    for code in [
        CreateAccountResult::Ok,
        CreateAccountResult::Exists,
        CreateAccountResult::ExistsWithDifferentFields,
        CreateAccountResult::LinkedEventFailed,
    ] {
        assert!(
            account_codes.get(&code).copied().unwrap_or(0) > 0,
            "no {code}"
        );
    }
    for s in [
        PendingStatus::Pending,
        PendingStatus::Posted,
        PendingStatus::Voided,
        PendingStatus::Expired,
    ] {
        assert!(
            statuses.get(&s).copied().unwrap_or(0) > 0,
            "no {}",
            s.name()
        );
    }
}
