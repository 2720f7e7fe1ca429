//! [`Overlay`]: a batch's view of the ledger, its own changes over the store's state, with an undo
//! journal so that a failed linked chain rolls back exactly what it did.

use std::collections::{BTreeMap, BTreeSet};

use crate::access::{AccessChange, AuditRecord};
use crate::outbox::{OutboxChange, OutboxMessage};
use crate::store::{BatchBuffers, Changes, LedgerStore};
use crate::types::{
    Account, AccountFlags, AccountId, FlagSet, PendingStatus, Timestamp, Transfer, TransferFlags,
    TransferId,
};
use crate::IdMap;

/// One change the overlay can take back.
enum Undo {
    Account(AccountId, Option<Account>),
    Transfer(TransferId),
    Pending(TransferId, Option<PendingStatus>),
    ExpiryAdded((Timestamp, TransferId)),
    /// An expiry was removed; `true` if it had been added in this batch.
    ExpiryRemoved((Timestamp, TransferId), bool),
    History,
    Newest(Timestamp),
    /// An outbox change, with what the overlay showed for the payment before it.
    Outbox(TransferId, Option<Option<OutboxMessage>>),
}

/// The batch's view of the ledger: its own changes over the store's state.
pub(super) struct Overlay<'s, S> {
    pub(super) store: &'s S,
    /// Every account the batch changed, in the order it first changed each, and where each id
    /// is in it: deterministic without a sort, and the batch's changes as it is.
    accounts: Vec<Account>,
    account_at: IdMap<AccountId, usize>,
    /// The batch's new transfers in the order they were made, and where each id is in it: the
    /// vector becomes the batch's changes as it is, without copying a transfer again.
    transfers: Vec<Transfer>,
    transfer_at: IdMap<TransferId, usize>,
    pending: IdMap<TransferId, PendingStatus>,
    expiries_added: BTreeSet<(Timestamp, TransferId)>,
    expiries_removed: BTreeSet<(Timestamp, TransferId)>,
    history: Vec<(AccountId, Timestamp, crate::types::Balances)>,
    expired: Vec<(Timestamp, TransferId)>,
    /// Ids refused for a transient reason in this batch. Not journaled: a chain rolled back
    /// keeps the reservation of the event that broke it.
    failed: IdMap<TransferId, Timestamp>,
    /// The timestamp of the newest account or transfer, in the store or created since: an
    /// imported event must come after it.
    newest: Timestamp,
    pub(super) access: Vec<AccessChange>,
    pub(super) audit: Vec<AuditRecord>,
    /// The outbox as this batch left it (`None`: removed), over the store's.
    outbox: IdMap<TransferId, Option<OutboxMessage>>,
    outbox_changes: Vec<OutboxChange>,
    undo: Vec<Undo>,
    /// Whether changes are journaled in `undo`: only inside a linked chain.
    journaling: bool,
}

impl<'s, S: LedgerStore> Overlay<'s, S> {
    /// An overlay sized for a batch of `events` (each touches at most two accounts), in
    /// `buffers` (emptied here, whatever they held).
    pub(super) fn new(store: &'s S, events: usize, buffers: BatchBuffers) -> Self {
        let BatchBuffers {
            mut accounts,
            mut account_at,
            mut transfers,
            mut transfer_at,
        } = buffers;
        accounts.clear();
        account_at.clear();
        transfers.clear();
        transfer_at.clear();
        accounts.reserve(2 * events);
        account_at.reserve(2 * events);
        transfers.reserve(events);
        transfer_at.reserve(events);
        Overlay {
            store,
            accounts,
            account_at,
            transfers,
            transfer_at,
            pending: IdMap::default(),
            expiries_added: BTreeSet::new(),
            expiries_removed: BTreeSet::new(),
            history: Vec::new(),
            expired: Vec::new(),
            failed: IdMap::default(),
            newest: store.last_timestamp(),
            access: Vec::new(),
            audit: Vec::new(),
            outbox: IdMap::default(),
            outbox_changes: Vec::new(),
            undo: Vec::new(),
            journaling: false,
        }
    }

    pub(super) fn account(&self, id: AccountId) -> Option<Account> {
        match self.account_at.get(&id) {
            Some(&at) => Some(self.accounts[at]),
            None => self.store.account(id),
        }
    }

    pub(super) fn transfer(&self, id: TransferId) -> Option<Transfer> {
        match self.transfer_at.get(&id) {
            Some(&at) => Some(self.transfers[at]),
            None => self.store.transfer(id),
        }
    }

    pub(super) fn pending_status(&self, id: TransferId) -> Option<PendingStatus> {
        self.pending
            .get(&id)
            .copied()
            .or_else(|| self.store.pending_status(id))
    }

    /// The two accounts of a pending transfer, which exist because it was created.
    pub(super) fn pending_accounts(&self, p: &Transfer) -> (Account, Account) {
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

    /// When `id` was refused for a transient reason, in this batch or before.
    pub(super) fn failed_transfer(&self, id: TransferId) -> Option<Timestamp> {
        self.failed
            .get(&id)
            .copied()
            .or_else(|| self.store.failed_transfer(id))
    }

    /// Reserves the id of a transfer refused for a transient reason at `timestamp`.
    pub(super) fn fail_transfer(&mut self, id: TransferId, timestamp: Timestamp) {
        self.failed.insert(id, timestamp);
    }

    /// Starts journaling, for a linked chain that may have to be rolled back to here. Outside
    /// chains nothing is journaled: an unlinked event is never rolled back, and copying every
    /// account it changed into the journal was a good part of applying it.
    pub(super) fn savepoint(&mut self) -> usize {
        self.journaling = true;
        self.undo.len()
    }

    /// Ends a chain (after any rollback): its journal is no longer needed.
    pub(super) fn end_chain(&mut self) {
        self.journaling = false;
        self.undo.clear();
    }

    fn journal(&mut self, undo: Undo) {
        if self.journaling {
            self.undo.push(undo);
        }
    }

    pub(super) fn rollback(&mut self, savepoint: usize) {
        while self.undo.len() > savepoint {
            match self.undo.pop().expect("length checked") {
                Undo::Account(id, previous) => match previous {
                    Some(a) => {
                        self.accounts[self.account_at[&id]] = a;
                    }
                    None => {
                        self.account_at.remove(&id);
                        let popped = self.accounts.pop().map(|a| a.id);
                        assert_eq!(popped, Some(id), "accounts roll back in reverse order");
                    }
                },
                Undo::Transfer(id) => {
                    self.transfer_at.remove(&id);
                    let popped = self.transfers.pop().map(|t| t.id);
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

                Undo::Newest(previous) => self.newest = previous,
                Undo::Outbox(payment, previous) => {
                    match previous {
                        Some(view) => self.outbox.insert(payment, view),
                        None => self.outbox.remove(&payment),
                    };
                    self.outbox_changes.pop();
                }
            }
        }
    }

    /// The outbox message of `payment`, as this batch has left it.
    pub(super) fn outbox_message(&self, payment: TransferId) -> Option<OutboxMessage> {
        match self.outbox.get(&payment) {
            Some(view) => view.clone(),
            None => self.store.outbox_message(payment),
        }
    }

    pub(super) fn put_outbox(&mut self, message: OutboxMessage) {
        let payment = message.payment;
        let previous = self.outbox.insert(payment, Some(message.clone()));
        self.outbox_changes.push(OutboxChange::Put(message));
        self.journal(Undo::Outbox(payment, previous));
    }

    pub(super) fn remove_outbox(&mut self, payment: TransferId) {
        let previous = self.outbox.insert(payment, None);
        self.outbox_changes.push(OutboxChange::Remove(payment));
        self.journal(Undo::Outbox(payment, previous));
    }

    /// The timestamp of the newest account or transfer (see the field).
    pub(super) fn newest(&self) -> Timestamp {
        self.newest
    }

    /// Notes a new account or transfer stamped `timestamp`.
    pub(super) fn note_created(&mut self, timestamp: Timestamp) {
        if timestamp > self.newest {
            self.journal(Undo::Newest(self.newest));
            self.newest = timestamp;
        }
    }

    pub(super) fn put_account(&mut self, account: Account) {
        let previous = match self.account_at.get(&account.id) {
            Some(&at) => Some(std::mem::replace(&mut self.accounts[at], account)),
            None => {
                self.account_at.insert(account.id, self.accounts.len());
                self.accounts.push(account);
                None
            }
        };
        self.journal(Undo::Account(account.id, previous));
    }

    /// Records a transfer together with the two accounts it changed, so that no code path
    /// can move money on one side only.
    pub(super) fn put_transfer(&mut self, transfer: Transfer, dr: Account, cr: Account) {
        assert_eq!(dr.id, transfer.debit_account_id);
        assert_eq!(cr.id, transfer.credit_account_id);
        assert_eq!(dr.ledger, cr.ledger, "a transfer stays within one ledger");
        self.put_account(dr);
        self.put_account(cr);
        let previous = self.transfer_at.insert(transfer.id, self.transfers.len());
        assert!(previous.is_none(), "transfer ids are unique");
        self.transfers.push(transfer);
        self.journal(Undo::Transfer(transfer.id));
        self.note_created(transfer.timestamp);
        self.record_history(&[dr, cr], transfer.timestamp);
    }

    /// The balances after a change at `timestamp`, for the accounts that keep a history.
    fn record_history(&mut self, accounts: &[Account], timestamp: Timestamp) {
        for account in accounts {
            if account.flags.contains(AccountFlags::HISTORY) {
                self.history
                    .push((account.id, timestamp, account.balances()));
                self.journal(Undo::History);
            }
        }
    }

    pub(super) fn set_pending_status(&mut self, id: TransferId, status: PendingStatus) {
        let previous = self.pending.insert(id, status);
        self.journal(Undo::Pending(id, previous));
    }

    pub(super) fn add_expiry(&mut self, at: Timestamp, id: TransferId) {
        self.expiries_added.insert((at, id));
        self.journal(Undo::ExpiryAdded((at, id)));
    }

    pub(super) fn remove_expiry(&mut self, at: Timestamp, id: TransferId) {
        let was_added = self.expiries_added.remove(&(at, id));
        if !was_added {
            self.expiries_removed.insert((at, id));
        }
        self.journal(Undo::ExpiryRemoved((at, id), was_added));
    }

    /// Expires the pending transfers `due` (deadline, id), the i-th at timestamp `first + i`:
    /// releases its amount, reopens the accounts it was closing and records the balances after
    /// it. Returns how many expired.
    pub(super) fn expire(&mut self, due: &[(Timestamp, TransferId)], first: Timestamp) -> usize {
        for (i, &(at, id)) in due.iter().enumerate() {
            let now = Timestamp(first.0 + i as u64);
            assert!(at <= first, "only what is due expires");
            assert_eq!(self.pending_status(id), Some(PendingStatus::Pending));
            let p = self.transfer(id).expect("an expiring transfer exists");
            let (mut dr, mut cr) = self.pending_accounts(&p);
            dr.debits_pending -= p.amount;
            cr.credits_pending -= p.amount;
            reopen_closed_by(&p, &mut dr, &mut cr);
            self.put_account(dr);
            self.put_account(cr);
            self.record_history(&[dr, cr], now);
            // Expiries come first in a batch, never inside a chain: nothing to journal.
            self.expired.push((now, id));
            self.set_pending_status(id, PendingStatus::Expired);
            self.remove_expiry(at, id);
        }
        due.len()
    }

    /// The batch's changes, and the buffers it was planned in (its maps; the changes hold its
    /// vectors).
    pub(super) fn into_changes(self, last_timestamp: Timestamp) -> (Changes, BatchBuffers) {
        self.assert_conservation();
        let mut pending_status: Vec<_> = self.pending.into_iter().collect();
        pending_status.sort_by_key(|(id, _)| *id);
        let mut failed_transfers: Vec<_> = self.failed.into_iter().collect();
        failed_transfers.sort_by_key(|(id, _)| *id);
        let changes = Changes {
            accounts: self.accounts,
            transfers: self.transfers,
            pending_status,
            failed_transfers,
            expiries_added: self.expiries_added.into_iter().collect(),
            expiries_removed: self.expiries_removed.into_iter().collect(),
            balance_history: self.history,
            expired: self.expired,
            access: self.access,
            audit: self.audit,
            outbox: self.outbox_changes,
            last_timestamp,
        };
        let buffers = BatchBuffers {
            account_at: self.account_at,
            transfer_at: self.transfer_at,
            ..BatchBuffers::default()
        };
        (changes, buffers)
    }

    /// Double entry: within each ledger, what the batch added to debits it added to credits,
    /// pending and posted alike. Sums wrap modulo 2^128 (balances are 128-bit, and a ledger's
    /// sum of them may pass that): equal sums stay equal, and a broken batch would have to be off
    /// by an exact multiple of 2^128 to pass.
    fn assert_conservation(&self) {
        let mut deltas: BTreeMap<u32, [u128; 2]> = BTreeMap::new();
        for account in &self.accounts {
            let before = self.store.account(account.id).unwrap_or(Account {
                ledger: account.ledger,
                ..Account::default()
            });
            assert_eq!(
                before.ledger, account.ledger,
                "an account never changes ledger"
            );
            let change = |after: u128, before: u128| after.wrapping_sub(before);
            let d = deltas.entry(account.ledger).or_default();
            d[0] = d[0]
                .wrapping_add(change(account.debits_posted, before.debits_posted))
                .wrapping_sub(change(account.credits_posted, before.credits_posted));
            d[1] = d[1]
                .wrapping_add(change(account.debits_pending, before.debits_pending))
                .wrapping_sub(change(account.credits_pending, before.credits_pending));
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

/// Voiding or expiring a pending closing transfer reopens the accounts it closed.
pub(super) fn reopen_closed_by(p: &Transfer, dr: &mut Account, cr: &mut Account) {
    let open = |a: &mut Account| {
        a.flags = AccountFlags::from_bits_retain(a.flags.bits() & !AccountFlags::CLOSED.bits());
    };
    if p.flags.contains(TransferFlags::CLOSING_DEBIT) {
        assert!(
            dr.flags.contains(AccountFlags::CLOSED),
            "a closing debit closed its account"
        );
        open(dr);
    }
    if p.flags.contains(TransferFlags::CLOSING_CREDIT) {
        assert!(
            cr.flags.contains(AccountFlags::CLOSED),
            "a closing credit closed its account"
        );
        open(cr);
    }
}
