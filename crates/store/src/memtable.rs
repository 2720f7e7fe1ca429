//! The recent past in memory: what batches changed since the last freeze (the active memtable),
//! and the frozen memtable a running (or failed) checkpoint writes. Reads look here before redb.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};

use bulwark_ledger::access::{AuditRecord, TokenRecord};
use bulwark_ledger::{
    Account, AccountId, Balances, BatchBuffers, Changes, IdMap, PendingStatus, Timestamp, Transfer,
    TransferId,
};

use bulwark_limits::MAX_LAZY_BUILD_STEP;

use crate::by_account::TransfersByAccount;
use crate::feed::FeedCache;
use crate::field_index::FieldIndex;
use crate::state::StateStore;

/// Changes since the last freeze: new transfers and everything derived from them.
#[derive(Default)]
pub(crate) struct Memtable {
    pub(crate) transfers: MemTransfers,
    pub(crate) pending: IdMap<TransferId, PendingStatus>,
    pub(crate) failed_transfers: IdMap<TransferId, Timestamp>,
    /// Per account, its transfers in timestamp order, built as far as the last history read
    /// needed it (see `by_account.rs`). A mutex because the frozen memtable is shared with
    /// its checkpoint.
    pub(crate) by_account: Mutex<TransfersByAccount>,
    pub(crate) balance_history: BTreeMap<(AccountId, Timestamp), Balances>,
    /// `true`: added since the freeze; `false`: removed.
    pub(crate) expiry_changes: BTreeMap<(Timestamp, TransferId), bool>,
    /// The highest transfer id in `transfers` (0 when empty).
    pub(crate) max_transfer_id: u128,
    /// New audit records, oldest first.
    pub(crate) audit: Vec<AuditRecord>,
    /// Each outbox message changed here, as it was left (`None`: removed).
    pub(crate) outbox: BTreeMap<TransferId, Option<bulwark_ledger::outbox::OutboxMessage>>,
    /// The expiries of pending transfers here, (the expiry's timestamp, the pending transfer),
    /// in order: with `transfers`, what the change feed is replayed from (`feed.rs`).
    pub(crate) expired: Vec<(Timestamp, TransferId)>,
    /// Each account changed here, with its balances before its first change here: where the
    /// replay of the change feed starts.
    pub(crate) start_balances: IdMap<AccountId, Balances>,
    /// The change feed of this memtable, replayed as far as the last read needed it.
    pub(crate) feed: Mutex<FeedCache>,
    /// The field indexes of `transfers`, built as far as the last query needed them (see
    /// `field_index.rs`). A mutex because the frozen memtable is shared with its checkpoint.
    pub(crate) query_index: Mutex<FieldIndex>,
}

impl Memtable {
    /// The field indexes of the transfers here, locked for one query, built at most
    /// `MAX_LAZY_BUILD_STEP` transfers further; `None` if they do not cover every transfer yet
    /// (the query asks again).
    pub(crate) fn query_index(&self) -> Option<MutexGuard<'_, FieldIndex>> {
        self.build_step(&self.query_index, |index, len| {
            index.extend_to(len, MAX_LAZY_BUILD_STEP, |p| self.transfers.at(p))
        })
    }

    /// Each account's transfers here, the same way (the read asks again while `None`).
    pub(crate) fn by_account(&self) -> Option<MutexGuard<'_, TransfersByAccount>> {
        self.build_step(&self.by_account, |index, len| {
            index.extend_to(len, MAX_LAZY_BUILD_STEP, |p| self.transfers.at(p))
        })
    }

    /// `index` locked and extended by `extend` towards the transfers' count; held only if that
    /// covered them all.
    fn build_step<'m, I>(
        &self,
        index: &'m Mutex<I>,
        extend: impl FnOnce(&mut I, usize) -> bool,
    ) -> Option<MutexGuard<'m, I>> {
        let mut index = index
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let built = extend(&mut index, self.transfers.len());
        built.then_some(index)
    }
}

/// A memtable's transfers in the order they were applied, and where each id is among them. The
/// transfers themselves are only appended (a cache-friendly copy); the id index holds small
/// entries, so a lookup of a new id (every transfer's existence check) and the index's growth
/// touch far less memory than a map of whole transfers would.
#[derive(Default)]
pub(crate) struct MemTransfers {
    all: Vec<Transfer>,
    at: IdMap<TransferId, u32>,
}

impl MemTransfers {
    pub(crate) fn len(&self) -> usize {
        self.all.len()
    }

    pub(crate) fn get(&self, id: &TransferId) -> Option<&Transfer> {
        self.at.get(id).map(|&at| &self.all[at as usize])
    }

    /// Appends `t`, which must be newer than every transfer before it. A later position is thus
    /// a later transfer, which an account's list of positions relies on.
    pub(crate) fn insert(&mut self, t: Transfer) {
        let at = u32::try_from(self.all.len()).expect("a memtable holds under 2^32 transfers");
        assert!(
            self.all
                .last()
                .is_none_or(|last| last.timestamp < t.timestamp),
            "transfer {} is newer than the memtable's last",
            t.id
        );
        let previous = self.at.insert(t.id, at);
        assert!(previous.is_none(), "transfer {} is stored once", t.id);
        self.all.push(t);
    }

    /// The transfer at a position (its index in the order of insertion).
    pub(crate) fn at(&self, position: u32) -> &Transfer {
        &self.all[position as usize]
    }

    /// The (timestamp, id) of the transfer at `position`.
    pub(crate) fn key_at(&self, position: u32) -> (Timestamp, TransferId) {
        let t = self.at(position);
        (t.timestamp, t.id)
    }

    /// In the order they were applied.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &Transfer> {
        self.all.iter()
    }

    /// Empties it, keeping its memory for the next memtable.
    pub(crate) fn clear(&mut self) {
        self.all.clear();
        self.at.clear();
    }

    /// How many transfers it holds room for without growing.
    #[cfg(test)]
    pub(crate) fn capacity(&self) -> usize {
        self.all.capacity().min(self.at.capacity())
    }
}

/// A memtable being written as a checkpoint, with everything else that checkpoint records.
pub(crate) struct Frozen {
    pub(crate) memtable: Memtable,
    pub(crate) accounts: Vec<Account>,
    pub(crate) applied_index: u64,
    pub(crate) applied_term: u64,
    pub(crate) last_timestamp: Timestamp,
    pub(crate) membership: Option<Vec<u8>>,
    /// Every token, if they changed since the last freeze (the table is rewritten whole).
    pub(crate) tokens: Option<Vec<TokenRecord>>,
    pub(crate) admin_bootstrapped: bool,
}

impl StateStore {
    /// Transfers not yet in a durable checkpoint (active memtable only).
    pub fn memtable_transfers(&self) -> usize {
        self.active.transfers.len()
    }

    /// The memtables, newest first.
    pub(crate) fn memtables(&self) -> impl Iterator<Item = &Memtable> {
        std::iter::once(&self.active).chain(self.frozen.as_ref().map(|f| &f.memtable))
    }

    /// The memtables, oldest first: the frozen one (if a checkpoint is writing it), the active.
    /// Each holds only later timestamps than the checkpoint and the memtables before it.
    pub(crate) fn memtables_oldest_first(&self) -> impl Iterator<Item = &Memtable> {
        let frozen = self.frozen.as_ref().map(|f| &f.memtable);
        frozen.into_iter().chain(std::iter::once(&self.active))
    }

    /// Records what a batch changed: accounts in memory (marked for the next checkpoint), the rest
    /// in the active memtable. Keeps the batch's `buffers` for the next, with the changes'
    /// vectors.
    pub(crate) fn record_changes(&mut self, changes: Changes, mut buffers: BatchBuffers) {
        let known_accounts = self.accounts_by_time.len();
        for &account in &changes.accounts {
            let first_change = self.dirty_accounts.insert(account.id);
            let before = self.accounts.insert(account.id, account);
            if first_change {
                let balances = before.as_ref().map(Account::balances).unwrap_or_default();
                self.active.start_balances.insert(account.id, balances);
            }
            if before.is_none() {
                self.add_to_account_index(&account);
            }
        }
        if self.accounts_by_time.len() > known_accounts {
            let (by_time, accounts) = (&self.accounts_by_time, &self.accounts);
            self.account_index
                .extend_to(by_time.len(), usize::MAX, |p| {
                    &accounts[&by_time[p as usize].1]
                });
        }
        let m = &mut self.active;
        for &t in &changes.transfers {
            m.max_transfer_id = m.max_transfer_id.max(t.id.0);
            m.transfers.insert(t);
        }
        m.pending.extend(changes.pending_status);
        m.failed_transfers.extend(changes.failed_transfers);
        for key in changes.expiries_removed {
            self.expiries.remove(&key);
            m.expiry_changes.insert(key, false);
        }
        for key in changes.expiries_added {
            self.expiries.insert(key);
            m.expiry_changes.insert(key, true);
        }
        for (account, ts, balances) in changes.balance_history {
            m.balance_history.insert((account, ts), balances);
        }
        m.audit.extend(changes.audit);
        m.expired.extend(changes.expired);
        self.outbox.apply(changes.outbox, &mut m.outbox);
        if !changes.access.is_empty() {
            bulwark_ledger::apply_access_changes(
                &mut self.tokens,
                &mut self.admin_bootstrapped,
                &changes.access,
            );
            self.tokens_dirty = true;
            self.tokens_generation += 1;
        }
        self.last_timestamp = changes.last_timestamp;
        buffers.recycle(changes.accounts, changes.transfers);
        self.batch_buffers = buffers;
    }
}

impl StateStore {
    /// Places a new account last in timestamp order (accounts are created in it).
    fn add_to_account_index(&mut self, account: &Account) {
        if let Some(&(last, _)) = self.accounts_by_time.last() {
            assert!(
                last < account.timestamp,
                "accounts are created in timestamp order"
            );
        }
        self.accounts_by_time.push((account.timestamp, account.id));
    }
}
