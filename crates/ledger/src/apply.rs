//! The deterministic state machine: a batch and its timestamp in, one result per event out.
//!
//! All reads of a batch go through an [`Overlay`] over the store; the overlay keeps an undo
//! journal so that a failed linked chain rolls back exactly what it did. Only when the whole
//! batch is done are its [`Changes`] committed to the store, in one call.

use std::collections::{BTreeMap, BTreeSet};

use crate::access::{AccessChange, AuditRecord, Control, ControlResult};
use crate::IdMap;

use crate::results::{CreateAccountResult, CreateTransferResult};
use crate::store::{Changes, LedgerStore};
use crate::types::{
    Account, AccountFlags, AccountId, FlagSet, NewAccount, NewTransfer, PendingStatus, Timestamp,
    Transfer, TransferFlags, TransferId, NANOS_PER_SECOND,
};

/// What a batch asks the ledger to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Operation {
    CreateAccounts(Vec<NewAccount>),
    CreateTransfers(Vec<NewTransfer>),
    /// A change to the API tokens: one event, with a timestamp of its own like any other.
    Control(Box<Control>),
}

impl Operation {
    pub fn len(&self) -> usize {
        match self {
            Operation::CreateAccounts(a) => a.len(),
            Operation::CreateTransfers(t) => t.len(),
            Operation::Control(_) => 1,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One log entry's worth of work. `timestamp` is that of the batch's last event; event `i` of
/// `n` gets `timestamp - (n - 1 - i)`, so every event has its own strictly increasing timestamp.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Batch {
    pub timestamp: Timestamp,
    pub operation: Operation,
}

impl Batch {
    /// The timestamp a proposer must give a batch of `events` events so that it lands after
    /// everything applied up to `last` and no earlier than the wall clock `now`.
    pub fn next_timestamp(last: Timestamp, now: Timestamp, events: usize) -> Timestamp {
        Timestamp(now.0.max(last.0 + events as u64))
    }
}

/// The timestamp the batch's last event gets when applied after `last`: the proposer's, or
/// `last + n` if that is not later.
pub fn effective_timestamp(last: Timestamp, batch: &Batch) -> Timestamp {
    let n = batch.operation.len() as u64;
    let proposed = batch.timestamp.0.max(n);
    Timestamp(proposed.max(last.0 + n))
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BatchResults {
    Accounts(Vec<CreateAccountResult>),
    Transfers(Vec<CreateTransferResult>),
    Control(ControlResult),
}

impl BatchResults {
    pub fn names(&self) -> Vec<&'static str> {
        match self {
            BatchResults::Accounts(r) => r.iter().map(|r| r.name()).collect(),
            BatchResults::Transfers(r) => r.iter().map(|r| r.name()).collect(),
            BatchResults::Control(r) => vec![r.name()],
        }
    }

    /// How many events the batch held.
    pub fn len(&self) -> usize {
        match self {
            BatchResults::Accounts(r) => r.len(),
            BatchResults::Transfers(r) => r.len(),
            BatchResults::Control(_) => 1,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Applies one batch to the store. Deterministic: no clock, no randomness, no IO.
///
/// The batch's timestamps are the proposer's; if they do not come after the store's last
/// timestamp (a new leader whose clock is behind, say), they are moved up to just after it.
/// The move depends only on the log, so every replica makes the same one, and timestamps stay
/// strictly increasing whatever the clocks did.
pub fn apply<S: LedgerStore>(store: &mut S, batch: &Batch) -> BatchResults {
    apply_at(store, batch, 0)
}

/// [`apply`] for a batch at log `index`, which the audit trail records (`apply` is for callers
/// without a log: they get index 0).
pub fn apply_at<S: LedgerStore>(store: &mut S, batch: &Batch, index: u64) -> BatchResults {
    let n = batch.operation.len() as u64;
    assert!(n > 0, "a batch must hold at least one event");
    let last_event = effective_timestamp(store.last_timestamp(), batch);
    let first = Timestamp(last_event.0 - (n - 1));
    assert!(first > store.last_timestamp(), "timestamps must increase");
    let (results, changes) = {
        let mut overlay = Overlay::new(&*store, batch.operation.len());
        overlay.expire_pending(first);
        let results = match &batch.operation {
            Operation::CreateAccounts(accounts) => BatchResults::Accounts(run_chains(
                &mut overlay,
                accounts,
                first,
                |a| a.flags.contains(AccountFlags::LINKED),
                create_account,
                CreateAccountResult::LinkedEventFailed,
                CreateAccountResult::LinkedEventChainOpen,
            )),
            Operation::CreateTransfers(transfers) => BatchResults::Transfers(run_chains(
                &mut overlay,
                transfers,
                first,
                |t| t.flags.contains(TransferFlags::LINKED),
                create_transfer,
                CreateTransferResult::LinkedEventFailed,
                CreateTransferResult::LinkedEventChainOpen,
            )),
            Operation::Control(control) => {
                let (result, access, audit) =
                    crate::access::apply_control(overlay.store, control, first, index);
                overlay.access.extend(access);
                overlay.audit.extend(audit);
                BatchResults::Control(result)
            }
        };
        (results, overlay.into_changes(last_event))
    };
    store.commit(changes);
    results
}

/// Runs events in order, honouring linked chains: a chain's events succeed together or
/// all are rolled back, the failing event keeping its own result and the others answering
/// `linked_event_failed`.
fn run_chains<S: LedgerStore, E, R: Copy + ChainResult>(
    overlay: &mut Overlay<'_, S>,
    events: &[E],
    first: Timestamp,
    is_linked: impl Fn(&E) -> bool,
    execute: impl Fn(&mut Overlay<'_, S>, &E, Timestamp) -> R,
    linked_event_failed: R,
    linked_event_chain_open: R,
) -> Vec<R> {
    let mut results = Vec::with_capacity(events.len());
    // (index of the chain's first event, savepoint before it, index of the event that broke it)
    let mut chain: Option<(usize, usize, Option<usize>)> = None;
    for (i, event) in events.iter().enumerate() {
        let linked = is_linked(event);
        if linked && chain.is_none() {
            chain = Some((i, overlay.savepoint(), None));
        }
        let broken = chain.and_then(|(_, _, b)| b);
        let result = if broken.is_some() {
            linked_event_failed
        } else if linked && i + 1 == events.len() {
            linked_event_chain_open
        } else {
            execute(overlay, event, Timestamp(first.0 + i as u64))
        };
        results.push(result);
        if let Some((_, _, b)) = chain.as_mut() {
            if b.is_none() && !result.keeps_chain_alive() {
                *b = Some(i);
            }
        }
        let chain_ends = !linked || i + 1 == events.len();
        if chain_ends {
            if let Some((start, savepoint, Some(failed))) = chain.take() {
                overlay.rollback(savepoint);
                for (j, r) in results.iter_mut().enumerate().take(i + 1).skip(start) {
                    if j != failed {
                        *r = linked_event_failed;
                    }
                }
            }
            chain = None;
        }
    }
    results
}

trait ChainResult {
    fn keeps_chain_alive(self) -> bool;
}

impl ChainResult for CreateAccountResult {
    fn keeps_chain_alive(self) -> bool {
        self.keeps_chain()
    }
}

impl ChainResult for CreateTransferResult {
    fn keeps_chain_alive(self) -> bool {
        self.keeps_chain()
    }
}

fn create_account<S: LedgerStore>(
    overlay: &mut Overlay<'_, S>,
    a: &NewAccount,
    timestamp: Timestamp,
) -> CreateAccountResult {
    use CreateAccountResult as R;
    if a.flags.reserved_bits() != 0 {
        return R::ReservedFlag;
    }
    if a.id.is_zero() {
        return R::IdMustNotBeZero;
    }
    if a.id.0 == u64::MAX {
        return R::IdMustNotBeIntMax;
    }
    if a.flags
        .contains(AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS)
        && a.flags
            .contains(AccountFlags::CREDITS_MUST_NOT_EXCEED_DEBITS)
    {
        return R::FlagsAreMutuallyExclusive;
    }
    if a.ledger == 0 {
        return R::LedgerMustNotBeZero;
    }
    if a.code == 0 {
        return R::CodeMustNotBeZero;
    }
    if let Some(e) = overlay.account(a.id) {
        let same = e.ledger == a.ledger
            && e.code == a.code
            && e.flags == a.flags
            && e.user_data == a.user_data;
        return if same {
            R::Exists
        } else {
            R::ExistsWithDifferentFields
        };
    }
    overlay.put_account(Account {
        id: a.id,
        ledger: a.ledger,
        code: a.code,
        flags: a.flags,
        user_data: a.user_data,
        timestamp,
        ..Account::default()
    });
    R::Ok
}

fn create_transfer<S: LedgerStore>(
    overlay: &mut Overlay<'_, S>,
    t: &NewTransfer,
    timestamp: Timestamp,
) -> CreateTransferResult {
    use CreateTransferResult as R;
    if t.flags.reserved_bits() != 0 {
        return R::ReservedFlag;
    }
    if t.id.is_zero() {
        return R::IdMustNotBeZero;
    }
    if t.id.0 == u64::MAX {
        return R::IdMustNotBeIntMax;
    }
    let pending = t.flags.contains(TransferFlags::PENDING);
    let post = t.flags.contains(TransferFlags::POST_PENDING_TRANSFER);
    let void = t.flags.contains(TransferFlags::VOID_PENDING_TRANSFER);
    if u8::from(pending) + u8::from(post) + u8::from(void) > 1 {
        return R::FlagsAreMutuallyExclusive;
    }
    if post || void {
        return post_or_void_pending(overlay, t, timestamp, post);
    }
    if t.debit_account_id.is_zero() {
        return R::DebitAccountIdMustNotBeZero;
    }
    if t.credit_account_id.is_zero() {
        return R::CreditAccountIdMustNotBeZero;
    }
    if t.debit_account_id == t.credit_account_id {
        return R::AccountsMustBeDifferent;
    }
    if !t.pending_id.is_zero() {
        return R::PendingIdMustBeZero;
    }
    if !pending && t.timeout != 0 {
        return R::TimeoutReservedForPendingTransfer;
    }
    if t.ledger == 0 {
        return R::LedgerMustNotBeZero;
    }
    if t.code == 0 {
        return R::CodeMustNotBeZero;
    }
    if t.amount == 0 {
        return R::AmountMustNotBeZero;
    }
    let Some(mut dr) = overlay.account(t.debit_account_id) else {
        return R::DebitAccountNotFound;
    };
    let Some(mut cr) = overlay.account(t.credit_account_id) else {
        return R::CreditAccountNotFound;
    };
    if dr.ledger != cr.ledger || t.ledger != dr.ledger {
        return R::LedgerMustMatch;
    }
    if let Some(e) = overlay.transfer(t.id) {
        return transfer_exists(t, &e);
    }
    let amount = t.amount;
    if pending {
        if dr.debits_pending.checked_add(amount).is_none() {
            return R::OverflowsDebitsPending;
        }
        if cr.credits_pending.checked_add(amount).is_none() {
            return R::OverflowsCreditsPending;
        }
    } else {
        if dr.debits_posted.checked_add(amount).is_none() {
            return R::OverflowsDebitsPosted;
        }
        if cr.credits_posted.checked_add(amount).is_none() {
            return R::OverflowsCreditsPosted;
        }
    }
    let dr_debits = dr.debits_pending.checked_add(dr.debits_posted);
    let Some(dr_debits_after) = dr_debits.and_then(|d| d.checked_add(amount)) else {
        return R::OverflowsDebits;
    };
    let cr_credits = cr.credits_pending.checked_add(cr.credits_posted);
    let Some(cr_credits_after) = cr_credits.and_then(|c| c.checked_add(amount)) else {
        return R::OverflowsCredits;
    };
    if pending
        && u64::from(t.timeout)
            .checked_mul(NANOS_PER_SECOND)
            .and_then(|t| t.checked_add(timestamp.0))
            .is_none()
    {
        return R::OverflowsTimeout;
    }
    if dr
        .flags
        .contains(AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS)
        && dr_debits_after > dr.credits_posted
    {
        return R::ExceedsCredits;
    }
    if cr
        .flags
        .contains(AccountFlags::CREDITS_MUST_NOT_EXCEED_DEBITS)
        && cr_credits_after > cr.debits_posted
    {
        return R::ExceedsDebits;
    }

    if pending {
        dr.debits_pending += amount;
        cr.credits_pending += amount;
    } else {
        dr.debits_posted += amount;
        cr.credits_posted += amount;
    }
    let transfer = Transfer {
        id: t.id,
        debit_account_id: t.debit_account_id,
        credit_account_id: t.credit_account_id,
        amount,
        pending_id: TransferId::ZERO,
        timeout: t.timeout,
        ledger: t.ledger,
        code: t.code,
        flags: t.flags,
        user_data: t.user_data,
        timestamp,
    };
    overlay.put_transfer(transfer, dr, cr);
    if pending {
        overlay.set_pending_status(t.id, PendingStatus::Pending);
        if let Some(at) = transfer.expires_at() {
            overlay.add_expiry(at, t.id);
        }
    }
    R::Ok
}

fn transfer_exists(t: &NewTransfer, e: &Transfer) -> CreateTransferResult {
    let same = t.debit_account_id == e.debit_account_id
        && t.credit_account_id == e.credit_account_id
        && t.amount == e.amount
        && t.pending_id == e.pending_id
        && t.timeout == e.timeout
        && t.ledger == e.ledger
        && t.code == e.code
        && t.flags == e.flags
        && t.user_data == e.user_data;
    if same {
        CreateTransferResult::Exists
    } else {
        CreateTransferResult::ExistsWithDifferentFields
    }
}

/// A post or void may leave accounts, ledger and code at zero to mean "as the pending transfer";
/// a retry that does so still matches what was stored. The amount is compared as resolved (0 is
/// the full pending amount), so a retry asking for more than was posted is not `exists`.
fn post_or_void_exists(t: &NewTransfer, amount: u64, e: &Transfer) -> CreateTransferResult {
    let matches = |given: u64, stored: u64| given == 0 || given == stored;
    let same = matches(t.debit_account_id.0, e.debit_account_id.0)
        && matches(t.credit_account_id.0, e.credit_account_id.0)
        && amount == e.amount
        && matches(u64::from(t.ledger), u64::from(e.ledger))
        && matches(u64::from(t.code), u64::from(e.code))
        && t.pending_id == e.pending_id
        && t.timeout == e.timeout
        && t.flags == e.flags
        && t.user_data == e.user_data;
    if same {
        CreateTransferResult::Exists
    } else {
        CreateTransferResult::ExistsWithDifferentFields
    }
}

fn post_or_void_pending<S: LedgerStore>(
    overlay: &mut Overlay<'_, S>,
    t: &NewTransfer,
    timestamp: Timestamp,
    post: bool,
) -> CreateTransferResult {
    use CreateTransferResult as R;
    if t.pending_id.is_zero() {
        return R::PendingIdMustNotBeZero;
    }
    if t.pending_id == t.id {
        return R::PendingIdMustBeDifferent;
    }
    if t.timeout != 0 {
        return R::TimeoutReservedForPendingTransfer;
    }
    let Some(p) = overlay.transfer(t.pending_id) else {
        return R::PendingTransferNotFound;
    };
    if !p.flags.contains(TransferFlags::PENDING) {
        return R::PendingTransferNotPending;
    }
    if !t.debit_account_id.is_zero() && t.debit_account_id != p.debit_account_id {
        return R::PendingTransferHasDifferentDebitAccountId;
    }
    if !t.credit_account_id.is_zero() && t.credit_account_id != p.credit_account_id {
        return R::PendingTransferHasDifferentCreditAccountId;
    }
    if t.ledger != 0 && t.ledger != p.ledger {
        return R::PendingTransferHasDifferentLedger;
    }
    if t.code != 0 && t.code != p.code {
        return R::PendingTransferHasDifferentCode;
    }
    let amount = if t.amount == 0 { p.amount } else { t.amount };
    if post && amount > p.amount {
        return R::ExceedsPendingTransferAmount;
    }
    if !post && amount != p.amount {
        return R::PendingTransferHasDifferentAmount;
    }
    if let Some(e) = overlay.transfer(t.id) {
        return post_or_void_exists(t, amount, &e);
    }
    let status = overlay
        .pending_status(p.id)
        .expect("every pending transfer has a status");
    match status {
        PendingStatus::Pending => {}
        PendingStatus::Posted => return R::PendingTransferAlreadyPosted,
        PendingStatus::Voided => return R::PendingTransferAlreadyVoided,
        PendingStatus::Expired => return R::PendingTransferExpired,
    }
    let expires_at = p.expires_at();
    if expires_at.is_some_and(|at| at <= timestamp) {
        return R::PendingTransferExpired;
    }

    let (mut dr, mut cr) = overlay.pending_accounts(&p);
    dr.debits_pending -= p.amount;
    cr.credits_pending -= p.amount;
    if post {
        // Cannot overflow: the pending amount was counted in debits_pending + debits_posted
        // when the pending transfer was created, and amount <= p.amount.
        dr.debits_posted = dr.debits_posted.checked_add(amount).expect("posted fits");
        cr.credits_posted = cr.credits_posted.checked_add(amount).expect("posted fits");
    }
    let transfer = Transfer {
        id: t.id,
        debit_account_id: p.debit_account_id,
        credit_account_id: p.credit_account_id,
        amount,
        pending_id: p.id,
        timeout: 0,
        ledger: p.ledger,
        code: p.code,
        flags: t.flags,
        user_data: t.user_data,
        timestamp,
    };
    overlay.put_transfer(transfer, dr, cr);
    let outcome = if post {
        PendingStatus::Posted
    } else {
        PendingStatus::Voided
    };
    overlay.set_pending_status(p.id, outcome);
    if let Some(at) = expires_at {
        overlay.remove_expiry(at, p.id);
    }
    R::Ok
}

/// One change the overlay can take back.
enum Undo {
    Account(AccountId, Option<Account>),
    Transfer(TransferId),
    Pending(TransferId, Option<PendingStatus>),
    ExpiryAdded((Timestamp, TransferId)),
    /// An expiry was removed; `true` if it had been added in this batch.
    ExpiryRemoved((Timestamp, TransferId), bool),
    History,
}

/// The batch's view of the ledger: its own changes over the store's state.
struct Overlay<'s, S> {
    store: &'s S,
    accounts: IdMap<AccountId, Account>,
    transfers: IdMap<TransferId, Transfer>,
    transfer_order: Vec<TransferId>,
    pending: IdMap<TransferId, PendingStatus>,
    expiries_added: BTreeSet<(Timestamp, TransferId)>,
    expiries_removed: BTreeSet<(Timestamp, TransferId)>,
    history: Vec<(AccountId, Timestamp, crate::types::Balances)>,
    access: Vec<AccessChange>,
    audit: Vec<AuditRecord>,
    undo: Vec<Undo>,
}

impl<'s, S: LedgerStore> Overlay<'s, S> {
    /// An overlay sized for a batch of `events` (each touches at most two accounts).
    fn new(store: &'s S, events: usize) -> Self {
        Overlay {
            store,
            accounts: IdMap::with_capacity_and_hasher(2 * events, Default::default()),
            transfers: IdMap::with_capacity_and_hasher(events, Default::default()),
            transfer_order: Vec::with_capacity(events),
            pending: IdMap::default(),
            expiries_added: BTreeSet::new(),
            expiries_removed: BTreeSet::new(),
            history: Vec::new(),
            access: Vec::new(),
            audit: Vec::new(),
            undo: Vec::new(),
        }
    }

    fn account(&self, id: AccountId) -> Option<Account> {
        self.accounts
            .get(&id)
            .copied()
            .or_else(|| self.store.account(id))
    }

    fn transfer(&self, id: TransferId) -> Option<Transfer> {
        self.transfers
            .get(&id)
            .copied()
            .or_else(|| self.store.transfer(id))
    }

    fn pending_status(&self, id: TransferId) -> Option<PendingStatus> {
        self.pending
            .get(&id)
            .copied()
            .or_else(|| self.store.pending_status(id))
    }

    /// The two accounts of a pending transfer, which exist because it was created.
    fn pending_accounts(&self, p: &Transfer) -> (Account, Account) {
        let dr = self
            .account(p.debit_account_id)
            .expect("a pending transfer's debit account exists");
        let cr = self
            .account(p.credit_account_id)
            .expect("a pending transfer's credit account exists");
        assert!(
            dr.debits_pending >= p.amount,
            "debits_pending covers a pending transfer"
        );
        assert!(
            cr.credits_pending >= p.amount,
            "credits_pending covers a pending transfer"
        );
        (dr, cr)
    }

    fn savepoint(&self) -> usize {
        self.undo.len()
    }

    fn rollback(&mut self, savepoint: usize) {
        while self.undo.len() > savepoint {
            match self.undo.pop().expect("length checked") {
                Undo::Account(id, previous) => match previous {
                    Some(a) => {
                        self.accounts.insert(id, a);
                    }
                    None => {
                        self.accounts.remove(&id);
                    }
                },
                Undo::Transfer(id) => {
                    self.transfers.remove(&id);
                    let popped = self.transfer_order.pop();
                    assert_eq!(popped, Some(id), "transfers roll back in reverse order");
                }
                Undo::Pending(id, previous) => match previous {
                    Some(s) => {
                        self.pending.insert(id, s);
                    }
                    None => {
                        self.pending.remove(&id);
                    }
                },
                Undo::ExpiryAdded(key) => {
                    self.expiries_added.remove(&key);
                }
                Undo::ExpiryRemoved(key, was_added) => {
                    if was_added {
                        self.expiries_added.insert(key);
                    } else {
                        self.expiries_removed.remove(&key);
                    }
                }
                Undo::History => {
                    self.history.pop();
                }
            }
        }
    }

    fn put_account(&mut self, account: Account) {
        let previous = self.accounts.insert(account.id, account);
        self.undo.push(Undo::Account(account.id, previous));
    }

    /// Records a transfer together with the two accounts it changed, so that no code path
    /// can move money on one side only.
    fn put_transfer(&mut self, transfer: Transfer, dr: Account, cr: Account) {
        assert_eq!(dr.id, transfer.debit_account_id);
        assert_eq!(cr.id, transfer.credit_account_id);
        assert_eq!(dr.ledger, cr.ledger, "a transfer stays within one ledger");
        self.put_account(dr);
        self.put_account(cr);
        let previous = self.transfers.insert(transfer.id, transfer);
        assert!(previous.is_none(), "transfer ids are unique");
        self.transfer_order.push(transfer.id);
        self.undo.push(Undo::Transfer(transfer.id));
        for account in [dr, cr] {
            if account.flags.contains(AccountFlags::HISTORY) {
                self.history
                    .push((account.id, transfer.timestamp, account.balances()));
                self.undo.push(Undo::History);
            }
        }
    }

    fn set_pending_status(&mut self, id: TransferId, status: PendingStatus) {
        let previous = self.pending.insert(id, status);
        self.undo.push(Undo::Pending(id, previous));
    }

    fn add_expiry(&mut self, at: Timestamp, id: TransferId) {
        self.expiries_added.insert((at, id));
        self.undo.push(Undo::ExpiryAdded((at, id)));
    }

    fn remove_expiry(&mut self, at: Timestamp, id: TransferId) {
        let was_added = self.expiries_added.remove(&(at, id));
        if !was_added {
            self.expiries_removed.insert((at, id));
        }
        self.undo.push(Undo::ExpiryRemoved((at, id), was_added));
    }

    /// Voids every pending transfer whose timeout has passed by `now`, releasing its amount.
    fn expire_pending(&mut self, now: Timestamp) {
        for (at, id) in self.store.expired_pending(now) {
            assert!(at <= now);
            assert_eq!(self.pending_status(id), Some(PendingStatus::Pending));
            let p = self.transfer(id).expect("an expiring transfer exists");
            let (mut dr, mut cr) = self.pending_accounts(&p);
            dr.debits_pending -= p.amount;
            cr.credits_pending -= p.amount;
            self.put_account(dr);
            self.put_account(cr);
            self.set_pending_status(id, PendingStatus::Expired);
            self.remove_expiry(at, id);
        }
    }

    fn into_changes(self, last_timestamp: Timestamp) -> Changes {
        self.assert_conservation();
        let mut accounts: Vec<Account> = self.accounts.into_values().collect();
        accounts.sort_by_key(|a| a.id);
        let transfers = self
            .transfer_order
            .iter()
            .map(|id| self.transfers[id])
            .collect();
        let mut pending_status: Vec<_> = self.pending.into_iter().collect();
        pending_status.sort_by_key(|(id, _)| *id);
        Changes {
            accounts,
            transfers,
            pending_status,
            expiries_added: self.expiries_added.into_iter().collect(),
            expiries_removed: self.expiries_removed.into_iter().collect(),
            balance_history: self.history,
            access: self.access,
            audit: self.audit,
            last_timestamp,
        }
    }

    /// Double entry: within each ledger, what the batch added to debits it added to credits,
    /// pending and posted alike.
    fn assert_conservation(&self) {
        let mut deltas: BTreeMap<u32, [i128; 2]> = BTreeMap::new();
        for account in self.accounts.values() {
            let before = self.store.account(account.id).unwrap_or(Account {
                ledger: account.ledger,
                ..Account::default()
            });
            assert_eq!(
                before.ledger, account.ledger,
                "an account never changes ledger"
            );
            let d = deltas.entry(account.ledger).or_default();
            d[0] += i128::from(account.debits_posted)
                - i128::from(before.debits_posted)
                - (i128::from(account.credits_posted) - i128::from(before.credits_posted));
            d[1] += i128::from(account.debits_pending)
                - i128::from(before.debits_pending)
                - (i128::from(account.credits_pending) - i128::from(before.credits_pending));
        }
        for (ledger, [posted, pending]) in deltas {
            assert_eq!(
                posted, 0,
                "ledger {ledger}: posted debits and credits diverged"
            );
            assert_eq!(
                pending, 0,
                "ledger {ledger}: pending debits and credits diverged"
            );
        }
    }
}
