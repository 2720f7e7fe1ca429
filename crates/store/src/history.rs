//! An account's history: its transfers in timestamp order (either way), filtered, each with the
//! account's balances after it when the account keeps `history`. Served from the account index
//! (`account_transfers`: the checkpoint's runs, then the memtables' account indexes, built as
//! far as the read needs them, a step per read); filters on the
//! transfer's own fields are checked on the transfers the index yields, at most
//! `MAX_HISTORY_SCAN` of them per page.

use bulwark_ledger::{
    AccountFlags, AccountId, Balances, LedgerStore, Timestamp, Transfer, TransferId,
};
use bulwark_limits::MAX_HISTORY_SCAN;

use std::sync::MutexGuard;

use crate::by_account::TransfersByAccount;
use crate::error::{redb_err, StoreError};
use crate::memtable::Memtable;
use crate::state::StateStore;

/// Which of an account's transfers a history query asks for, and in which order.
#[derive(Clone, Copy, Debug)]
pub struct HistoryFilter {
    /// Only transfers after this timestamp (exclusive; 0: from the start).
    pub after: Timestamp,
    /// Only transfers before this timestamp (exclusive; `u64::MAX`: to the end).
    pub before: Timestamp,
    /// Transfers that debit the account.
    pub debits: bool,
    /// Transfers that credit the account.
    pub credits: bool,
    /// Newest first.
    pub reversed: bool,
    /// Each, when not 0, must equal the transfer's.
    pub code: u16,
    pub user_data_128: u128,
    pub user_data_64: u64,
    pub user_data_32: u32,
    /// At most this many transfers.
    pub limit: usize,
}

impl HistoryFilter {
    /// Every transfer after `after`, oldest first, at most `limit`.
    pub fn after(after: Timestamp, limit: usize) -> Self {
        HistoryFilter {
            after,
            before: Timestamp(u64::MAX),
            debits: true,
            credits: true,
            reversed: false,
            code: 0,
            user_data_128: 0,
            user_data_64: 0,
            user_data_32: 0,
            limit,
        }
    }

    fn matches(&self, account: AccountId, t: &Transfer) -> bool {
        let side = (self.debits && t.debit_account_id == account)
            || (self.credits && t.credit_account_id == account);
        let equal = |want: u128, have: u128| want == 0 || want == have;
        side && equal(self.code.into(), t.code.into())
            && equal(self.user_data_128, t.user_data_128)
            && equal(self.user_data_64.into(), t.user_data_64.into())
            && equal(self.user_data_32.into(), t.user_data_32.into())
    }
}

/// A page of history, and where to continue.
#[derive(Clone, Debug, Default)]
pub struct HistoryPage {
    pub transfers: Vec<(Transfer, Option<Balances>)>,
    /// The timestamp the scan stopped at: the next page's `after` (oldest first) or `before`
    /// (reversed). `None`: nothing more in the window. A page may hold fewer than `limit`
    /// transfers and still continue, when its filters passed over `MAX_HISTORY_SCAN` others.
    pub next: Option<Timestamp>,
}

/// Index entries read at a time while a page is filled.
const CHUNK: usize = 1024;

impl StateStore {
    /// A page of `account`'s history as `filter` asks, building the memtables' account indexes
    /// in one go: for callers off the node loop (tests, tools).
    pub fn account_history(
        &self,
        account: AccountId,
        filter: &HistoryFilter,
    ) -> Result<HistoryPage, StoreError> {
        loop {
            if let Some(page) = self.account_history_step(account, filter)? {
                return Ok(page);
            }
        }
    }

    /// A page of `account`'s history as `filter` asks; `None` while a memtable's account index
    /// is still being built (a step per call, see `Memtable::by_account`): ask again.
    pub fn account_history_step(
        &self,
        account: AccountId,
        filter: &HistoryFilter,
    ) -> Result<Option<HistoryPage>, StoreError> {
        let indexes: Option<Vec<_>> = self
            .memtables_oldest_first()
            .map(|m| m.by_account())
            .collect();
        let Some(indexes) = indexes else {
            return Ok(None);
        };
        let memtables: Vec<_> = self.memtables_oldest_first().zip(indexes).collect();
        self.history_page(account, filter, &memtables).map(Some)
    }

    fn history_page(
        &self,
        account: AccountId,
        filter: &HistoryFilter,
        memtables: &[(&Memtable, MutexGuard<'_, TransfersByAccount>)],
    ) -> Result<HistoryPage, StoreError> {
        let keeps_history = self
            .accounts
            .get(&account)
            .is_some_and(|a| a.flags.contains(AccountFlags::HISTORY));
        let (mut after, mut before) = (filter.after, filter.before);
        let mut page = HistoryPage::default();
        let mut scanned = 0;
        loop {
            let window = (after, before, filter.reversed);
            let chunk = self.history_keys(account, window, memtables, CHUNK)?;
            if chunk.is_empty() {
                return Ok(page);
            }
            for (ts, id) in chunk {
                scanned += 1;
                if filter.reversed {
                    before = ts;
                } else {
                    after = ts;
                }
                let transfer = self.transfer(id).ok_or_else(|| StoreError::Corrupt {
                    path: self.path.clone(),
                    table: "account_transfers",
                    key: format!("({account}, {ts}) names missing transfer {id}"),
                })?;
                if filter.matches(account, &transfer) {
                    let balances = if keeps_history {
                        self.balances_at(account, ts)?
                    } else {
                        None
                    };
                    page.transfers.push((transfer, balances));
                }
                if page.transfers.len() == filter.limit || scanned == MAX_HISTORY_SCAN {
                    page.next = Some(ts);
                    return Ok(page);
                }
            }
        }
    }

    /// The account index's (timestamp, transfer) entries strictly between `after` and `before`,
    /// the oldest `max` (or newest, `reversed`). The checkpoint holds only older timestamps than
    /// the frozen memtable, which holds older than the active one.
    fn history_keys(
        &self,
        account: AccountId,
        (after, before, reversed): (Timestamp, Timestamp, bool),
        memtables: &[(&Memtable, MutexGuard<'_, TransfersByAccount>)],
        max: usize,
    ) -> Result<Vec<(Timestamp, TransferId)>, StoreError> {
        let in_window = |ts: Timestamp| after < ts && ts < before;
        let mut keys = Vec::new();
        let from_memtables = |keys: &mut Vec<(Timestamp, TransferId)>, reversed: bool| {
            let ordered: Box<dyn Iterator<Item = _>> = if reversed {
                Box::new(memtables.iter().rev())
            } else {
                Box::new(memtables.iter())
            };
            for (m, index) in ordered {
                let keyed = index.positions(account).iter();
                let keyed = keyed.map(|&p| m.transfers.key_at(p));
                let room = max - keys.len();
                if reversed {
                    keys.extend(keyed.rev().filter(|(ts, _)| in_window(*ts)).take(room));
                } else {
                    keys.extend(keyed.filter(|(ts, _)| in_window(*ts)).take(room));
                }
            }
        };
        if reversed {
            from_memtables(&mut keys, true);
        }
        if keys.len() < max && after.0 < u64::MAX && before.0 > 0 {
            if self.is_unavailable() {
                return Err(StoreError::Unavailable {
                    path: self.path.clone(),
                });
            }
            let room = max - keys.len();
            keys.extend(self.checkpointed_keys(account, after, before, reversed, room)?);
        }
        if !reversed && keys.len() < max {
            from_memtables(&mut keys, false);
        }
        Ok(keys)
    }

    /// The same, from the last checkpoint's runs, each keyed by its last entry's timestamp.
    fn checkpointed_keys(
        &self,
        account: AccountId,
        after: Timestamp,
        before: Timestamp,
        reversed: bool,
        max: usize,
    ) -> Result<Vec<(Timestamp, TransferId)>, StoreError> {
        let in_window = |ts: &Timestamp| after < *ts && *ts < before;
        self.read_waiting(|reader| {
            let mut keys = Vec::new();
            let take = |row: RunRow<'_>, keys: &mut Vec<_>| -> Result<bool, StoreError> {
                let mut run = self.run_entries(row)?;
                run.retain(|(ts, _)| in_window(ts));
                if reversed {
                    run.reverse();
                }
                let room = max - keys.len();
                keys.extend(run.into_iter().take(room));
                Ok(keys.len() < max)
            };
            let table = &reader.account_transfers;
            if reversed {
                // The first run that reaches `before` may hold entries below it; every run before
                // it lies below `before` entirely. Newest first from there, down to `after`.
                let reaching = (account.0, before.0)..=(account.0, u64::MAX);
                if let Some(row) = table
                    .range(reaching)
                    .map_err(redb_err(&self.path, "scan account transfers"))?
                    .next()
                {
                    take(row, &mut keys)?;
                }
                let below = (account.0, after.0.saturating_add(1))..(account.0, before.0);
                for row in table
                    .range(below)
                    .map_err(redb_err(&self.path, "scan account transfers"))?
                    .rev()
                {
                    if !take(row, &mut keys)? {
                        break;
                    }
                }
            } else {
                let from = (account.0, after.0 + 1)..=(account.0, u64::MAX);
                for row in table
                    .range(from)
                    .map_err(redb_err(&self.path, "scan account transfers"))?
                {
                    if !take(row, &mut keys)? {
                        break;
                    }
                }
            }
            Ok(keys)
        })
    }

    fn run_entries(&self, row: RunRow<'_>) -> Result<Vec<(Timestamp, TransferId)>, StoreError> {
        let (key, value) = row.map_err(redb_err(&self.path, "scan account transfers"))?;
        crate::index_runs::decode_run(value.value()).ok_or_else(|| StoreError::Corrupt {
            path: self.path.clone(),
            table: "account_transfers",
            key: format!("{:?}", key.value()),
        })
    }
}

/// One row of the account index as redb's range yields it.
type RunRow<'a> = Result<
    (
        redb::AccessGuard<'a, (u128, u64)>,
        redb::AccessGuard<'a, &'static [u8]>,
    ),
    redb::StorageError,
>;
