//! Reads: an account's history (its transfers in timestamp order, with balances for accounts that
//! keep `history`), and the lookups the ledger's `apply` makes, memtables first, then the checkpoint.

use bulwark_ledger::access::{TokenId, TokenRecord};
use bulwark_ledger::{
    Account, AccountId, Balances, BatchBuffers, Changes, LedgerStore, PendingStatus, Timestamp,
    Transfer, TransferId,
};

use crate::error::{redb_err, StoreError};
use crate::records;
use crate::state::StateStore;
use crate::transfer_runs::FindError;

impl StateStore {
    /// The transfers of an account in timestamp order, after `after`, at most `limit`, each with
    /// the account's balances after it when the account keeps `history`.
    pub fn account_transfers(
        &self,
        account: AccountId,
        after: Timestamp,
        limit: usize,
    ) -> Result<Vec<(Transfer, Option<Balances>)>, StoreError> {
        let filter = crate::HistoryFilter::after(after, limit);
        Ok(self.account_history(account, &filter)?.transfers)
    }

    /// An account's balances after each change after `after`, oldest first, at most `limit`:
    /// the `balance_history` index, kept for accounts with `history` (for others it is empty).
    pub fn account_balances(
        &self,
        account: AccountId,
        after: Timestamp,
        limit: usize,
    ) -> Result<Vec<(Timestamp, Balances)>, StoreError> {
        let mut page = Vec::new();
        if after.0 < u64::MAX {
            if self.is_unavailable() {
                return Err(StoreError::Unavailable {
                    path: self.path.clone(),
                });
            }
            page = self.checkpointed_balances(account, after, limit)?;
        }
        // Memtables hold only later timestamps than the checkpoint, frozen before active.
        for memtable in self.memtables_oldest_first() {
            let room = limit.saturating_sub(page.len());
            let from = (account, Timestamp(after.0.saturating_add(1)));
            let to = (account, Timestamp(u64::MAX));
            page.extend(
                memtable
                    .balance_history
                    .range(from..=to)
                    .take(room)
                    .map(|((_, ts), b)| (*ts, *b)),
            );
        }
        Ok(page)
    }

    fn checkpointed_balances(
        &self,
        account: AccountId,
        after: Timestamp,
        limit: usize,
    ) -> Result<Vec<(Timestamp, Balances)>, StoreError> {
        let start = (account.0, after.0 + 1);
        let end = (account.0, u64::MAX);
        self.read_waiting(|reader| {
            let mut page = Vec::new();
            for row in reader
                .balance_history
                .range(start..=end)
                .map_err(redb_err(&self.path, "scan balance history"))?
                .take(limit)
            {
                let (key, value) = row.map_err(redb_err(&self.path, "scan balance history"))?;
                let (_, ts) = key.value();
                let balances =
                    records::decode_balances(value.value()).ok_or_else(|| StoreError::Corrupt {
                        path: self.path.clone(),
                        table: "balance_history",
                        key: format!("({account}, {ts})"),
                    })?;
                page.push((Timestamp(ts), balances));
            }
            Ok(page)
        })
    }

    pub(crate) fn balances_at(
        &self,
        account: AccountId,
        ts: Timestamp,
    ) -> Result<Option<Balances>, StoreError> {
        for memtable in self.memtables() {
            if let Some(b) = memtable.balance_history.get(&(account, ts)) {
                return Ok(Some(*b));
            }
        }
        if self.is_unavailable() {
            return Err(StoreError::Unavailable {
                path: self.path.clone(),
            });
        }
        self.read_waiting(|reader| {
            let Some(value) = reader
                .balance_history
                .get((account.0, ts.0))
                .map_err(redb_err(&self.path, "read balance history"))?
            else {
                return Ok(None);
            };
            records::decode_balances(value.value())
                .map(Some)
                .ok_or_else(|| StoreError::Corrupt {
                    path: self.path.clone(),
                    table: "balance_history",
                    key: format!("({account}, {ts})"),
                })
        })
    }
}

impl StateStore {
    /// The transfer with `id`, from the memtables or the last checkpoint.
    pub(crate) fn stored_transfer(&self, id: TransferId) -> Result<Option<Transfer>, StoreError> {
        // Every new transfer's id is looked up first; ids that grow (time-based ones) are past
        // every id stored, and are answered without probing the memtables' large id maps.
        let newest = self
            .memtables()
            .map(|m| m.max_transfer_id)
            .fold(self.stored_max_transfer_id, u128::max);
        if id.0 > newest {
            return Ok(None);
        }
        for memtable in self.memtables() {
            if let Some(t) = memtable.transfers.get(&id) {
                return Ok(Some(*t));
            }
        }
        if id.0 > self.stored_max_transfer_id {
            return Ok(None);
        }
        self.read_waiting(|reader| {
            crate::transfer_runs::find(&reader.transfer_runs, &reader.transfers, id.0).map_err(
                |e| match e {
                    FindError::Storage(e) => redb_err(&self.path, "read transfer")(e),
                    FindError::Corrupt { table, key } => StoreError::Corrupt {
                        path: self.path.clone(),
                        table,
                        key: key.to_string(),
                    },
                },
            )
        })
    }
}

impl LedgerStore for StateStore {
    fn account(&self, id: AccountId) -> Option<Account> {
        self.accounts.get(&id).copied()
    }

    fn transfer(&self, id: TransferId) -> Option<Transfer> {
        self.stored_transfer(id)
            .unwrap_or_else(|e| panic!("read transfer {id}: {e}"))
    }

    fn pending_status(&self, id: TransferId) -> Option<PendingStatus> {
        for memtable in self.memtables() {
            if let Some(s) = memtable.pending.get(&id) {
                return Some(*s);
            }
        }
        let read = self.read_waiting(|reader| {
            let Some(value) = reader
                .pending
                .get(id.0)
                .map_err(redb_err(&self.path, "read pending"))?
            else {
                return Ok(None);
            };
            PendingStatus::from_byte(value.value())
                .map(Some)
                .ok_or_else(|| StoreError::Corrupt {
                    path: self.path.clone(),
                    table: "pending_status",
                    key: id.to_string(),
                })
        });
        read.unwrap_or_else(|e| panic!("read pending {id}: {e}"))
    }

    fn failed_transfer(&self, id: TransferId) -> Option<Timestamp> {
        for memtable in self.memtables() {
            if let Some(at) = memtable.failed_transfers.get(&id) {
                return Some(*at);
            }
        }
        if id.0 > self.stored_max_failed_id {
            return None;
        }
        let read = self.read_waiting(|reader| {
            Ok(reader
                .failed_transfers
                .get(id.0)
                .map_err(redb_err(&self.path, "read failed transfer"))?
                .map(|v| Timestamp(v.value())))
        });
        read.unwrap_or_else(|e| panic!("read failed transfer {id}: {e}"))
    }

    fn expired_pending(&self, now: Timestamp) -> Vec<(Timestamp, TransferId)> {
        self.expiries
            .iter()
            .take_while(|(at, _)| *at <= now)
            .copied()
            .collect()
    }

    fn last_timestamp(&self) -> Timestamp {
        self.last_timestamp
    }

    fn token(&self, id: TokenId) -> Option<TokenRecord> {
        self.tokens.get(&id).cloned()
    }

    fn token_count(&self) -> usize {
        self.tokens.len()
    }

    fn admin_bootstrapped(&self) -> bool {
        self.admin_bootstrapped
    }

    fn outbox_message(&self, payment: TransferId) -> Option<bulwark_ledger::outbox::OutboxMessage> {
        self.outbox.messages.get(&payment).cloned()
    }

    fn commit(&mut self, changes: Changes, buffers: BatchBuffers) {
        self.record_changes(changes, buffers);
    }

    fn take_batch_buffers(&mut self) -> BatchBuffers {
        std::mem::take(&mut self.batch_buffers)
    }
}
