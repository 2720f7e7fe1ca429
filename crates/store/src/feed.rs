//! The change feed: every balance-changing event (a transfer, or the expiry of a pending one) in
//! timestamp order, with both accounts' balances after it. The memtables hold the recent events
//! (`Memtable::changes`); a checkpoint writes them to the `changes` table, keyed by timestamp.

use bulwark_ledger::{Change, Timestamp};

use crate::error::{redb_err, StoreError};
use crate::records;
use crate::state::StateStore;

impl StateStore {
    /// The events after `after`, oldest first, at most `limit`.
    pub fn changes_after(&self, after: Timestamp, limit: usize) -> Result<Vec<Change>, StoreError> {
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
            let changes = &memtable.changes;
            let from = changes.partition_point(|c| c.timestamp <= after);
            let room = limit.saturating_sub(page.len());
            page.extend(changes[from..].iter().take(room));
        }
        Ok(page)
    }

    fn checkpointed_changes(
        &self,
        after: Timestamp,
        limit: usize,
    ) -> Result<Vec<Change>, StoreError> {
        self.read_waiting(|reader| {
            let mut page = Vec::new();
            for row in reader
                .changes
                .range(after.0 + 1..)
                .map_err(redb_err(&self.path, "scan changes"))?
                .take(limit)
            {
                let (key, value) = row.map_err(redb_err(&self.path, "scan changes"))?;
                let ts = Timestamp(key.value());
                let change = records::decode_change(ts, value.value()).ok_or_else(|| {
                    StoreError::Corrupt {
                        path: self.path.clone(),
                        table: "changes",
                        key: ts.to_string(),
                    }
                })?;
                page.push(change);
            }
            Ok(page)
        })
    }
}
