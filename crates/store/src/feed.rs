//! The change feed: every balance-changing event (a transfer, or the expiry of a pending one) in
//! timestamp order, with both accounts' balances after it. Nothing is recorded for it as batches
//! apply: a memtable replays its feed from its transfers and expiries, starting from the balances
//! its accounts had before their first change in it (`Memtable::start_balances`), with the
//! ledger's rule (`bulwark_ledger::feed`), as far as a read needs it ([`FeedCache`]); a
//! checkpoint replays its memtable again, off the node loop, into the `changes` table.

use bulwark_ledger::feed::{in_order, FeedEvent, Stored};
use bulwark_ledger::{AccountId, Balances, Change, IdMap, Timestamp, Transfer, TransferId};

use bulwark_limits::MAX_LAZY_BUILD_STEP;

use crate::error::{redb_err, StoreError};
use crate::memtable::Memtable;
use crate::records;
use crate::state::StateStore;

/// A memtable's feed, replayed up to its first `transfers` transfers and `expired` expiries.
#[derive(Default)]
pub(crate) struct FeedCache {
    transfers: usize,
    expired: usize,
    /// Each account's balances after the last event replayed.
    balances: IdMap<AccountId, Balances>,
    pub(crate) changes: Vec<Change>,
}

impl FeedCache {
    /// Replays at most `max` of the memtable's events not replayed yet; whether it replayed them
    /// all. `transfer` finds a pending transfer that a post, a void or an expiry names (in a
    /// memtable or the checkpoint).
    pub(crate) fn extend<E>(
        &mut self,
        m: &Memtable,
        max: usize,
        mut transfer: impl FnMut(TransferId) -> Result<Transfer, E>,
    ) -> Result<bool, E> {
        let transfers = m.transfers.iter().skip(self.transfers);
        let expired = m.expired[self.expired..].iter();
        let mut events = in_order(transfers, expired);
        for stored in events.by_ref().take(max) {
            let pending;
            let event = match stored {
                Stored::Transfer(t) => {
                    let resolves = !t.pending_id.is_zero();
                    let pending_amount = if resolves {
                        transfer(t.pending_id)?.amount
                    } else {
                        0
                    };
                    self.transfers += 1;
                    FeedEvent::Transfer {
                        transfer: t,
                        pending_amount,
                    }
                }
                Stored::Expiry(at, id) => {
                    pending = transfer(id)?;
                    self.expired += 1;
                    FeedEvent::Expiry {
                        at,
                        pending: &pending,
                    }
                }
            };
            let t = event.transfer();
            let mut side = |id: AccountId| -> Balances {
                *self
                    .balances
                    .entry(id)
                    .or_insert_with(|| m.start_balances[&id])
            };
            let (mut dr, mut cr) = (side(t.debit_account_id), side(t.credit_account_id));
            self.changes.push(event.replay(&mut dr, &mut cr));
            self.balances.insert(t.debit_account_id, dr);
            self.balances.insert(t.credit_account_id, cr);
        }
        Ok(self.transfers == m.transfers.len() && self.expired == m.expired.len())
    }
}

impl StateStore {
    /// The events after `after`, oldest first, at most `limit`; `None` when a memtable's feed is
    /// still being replayed (at most `MAX_LAZY_BUILD_STEP` events a call): ask again.
    pub fn changes_after(
        &self,
        after: Timestamp,
        limit: usize,
    ) -> Result<Option<Vec<Change>>, StoreError> {
        let mut page = Vec::new();
        if after.0 < u64::MAX {
            if self.is_unavailable() {
                return Err(StoreError::Unavailable {
                    path: self.path.clone(),
                });
            }
            page = self.checkpointed_changes(after, limit)?;
        }
        // Memtables hold only later events than the checkpoint, frozen before active.
        for memtable in self.memtables_oldest_first() {
            if page.len() == limit {
                break;
            }
            let mut feed = memtable
                .feed
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let replayed = feed.extend(memtable, MAX_LAZY_BUILD_STEP, |id| {
                let found = self.stored_transfer(id)?;
                found.ok_or_else(|| StoreError::Corrupt {
                    path: self.path.clone(),
                    table: "transfers",
                    key: format!("{id}, the pending transfer of an event of the change feed"),
                })
            })?;
            if !replayed {
                return Ok(None);
            }
            let changes = &feed.changes;
            let from = changes.partition_point(|c| c.timestamp <= after);
            let room = limit - page.len();
            page.extend(changes[from..].iter().take(room));
        }
        Ok(Some(page))
    }

    fn checkpointed_changes(
        &self,
        after: Timestamp,
        limit: usize,
    ) -> Result<Vec<Change>, StoreError> {
        self.read_waiting(|reader| {
            let mut page = Vec::new();
            let rows = reader
                .changes
                .range(after.0 + 1..)
                .map_err(redb_err(&self.path, "scan changes"))?;
            // The first run read may begin at or before `after`.
            for row in rows {
                let (key, value) = row.map_err(redb_err(&self.path, "scan changes"))?;
                let run = records::decode_change_run(value.value()).ok_or_else(|| {
                    StoreError::Corrupt {
                        path: self.path.clone(),
                        table: "changes",
                        key: format!("run ending at {}", key.value()),
                    }
                })?;
                let room = limit - page.len();
                page.extend(run.into_iter().filter(|c| c.timestamp > after).take(room));
                if page.len() == limit {
                    break;
                }
            }
            Ok(page)
        })
    }
}
