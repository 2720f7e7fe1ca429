//! The API tokens and the audit trail in the state store: tokens all in memory (at most
//! `MAX_TOKENS`) and rewritten whole at a checkpoint where they changed; audit records in the
//! memtables until a checkpoint appends them to their table, read back a page at a time.

use std::collections::BTreeMap;
use std::path::Path;

use bulwark_ledger::access::{encoding, AuditRecord, TokenId, TokenRecord};
use bulwark_ledger::Timestamp;
use redb::{ReadTransaction, ReadableDatabase, ReadableTable};

use crate::error::{redb_err, StoreError};
use crate::memtable::Frozen;
use crate::state::StateStore;
use crate::tables::{AUDIT, META, META_ADMIN_BOOTSTRAPPED, TOKENS};

/// The tokens and the bootstrap mark as of a checkpoint.
pub(crate) fn load_tokens(
    path: &Path,
    read: &ReadTransaction,
) -> Result<(BTreeMap<TokenId, TokenRecord>, bool), StoreError> {
    let mut tokens = BTreeMap::new();
    let table = read
        .open_table(TOKENS)
        .map_err(redb_err(path, "open tokens"))?;
    for row in table.iter().map_err(redb_err(path, "scan tokens"))? {
        let (key, value) = row.map_err(redb_err(path, "scan tokens"))?;
        let token = encoding::decode_token(value.value())
            .ok()
            .filter(|t| t.id.0 == key.value())
            .ok_or_else(|| StoreError::Corrupt {
                path: path.into(),
                table: "tokens",
                key: key.value().to_string(),
            })?;
        tokens.insert(token.id, token);
    }
    let bootstrapped = read
        .open_table(META)
        .map_err(redb_err(path, "open meta"))?
        .get(META_ADMIN_BOOTSTRAPPED)
        .map_err(redb_err(path, "read meta"))?
        .is_some_and(|v| v.value() == 1);
    Ok((tokens, bootstrapped))
}

/// A checkpoint's part: the token set if it changed since the last one, and the new audit
/// records.
pub(crate) fn write_access(
    txn: &redb::WriteTransaction,
    frozen: &Frozen,
) -> Result<(), redb::Error> {
    if let Some(tokens) = &frozen.tokens {
        let mut table = txn.open_table(TOKENS)?;
        table.retain(|_, _| false)?;
        for t in tokens {
            table.insert(t.id.0, encoding::encode_token(t).as_slice())?;
        }
        if frozen.admin_bootstrapped {
            txn.open_table(META)?.insert(META_ADMIN_BOOTSTRAPPED, 1)?;
        }
    }
    let mut audit = txn.open_table(AUDIT)?;
    for a in &frozen.memtable.audit {
        audit.insert(
            (a.timestamp.0, a.index),
            encoding::encode_audit(a).as_slice(),
        )?;
    }
    Ok(())
}

impl StateStore {
    /// Every token, by id.
    pub fn tokens(&self) -> impl Iterator<Item = &TokenRecord> {
        self.tokens.values()
    }

    /// Bumped whenever the set of tokens changes (including a reopen on an installed snapshot,
    /// which starts a new store): whoever caches tokens reloads them when it moves.
    pub fn tokens_generation(&self) -> u64 {
        self.tokens_generation
    }

    /// The audit trail after `after` (`(timestamp, index)`, exclusive), oldest first, at most
    /// `limit` records: the checkpoint's table, then the frozen and the active memtables.
    pub fn audit_page(
        &self,
        after: Option<(Timestamp, u64)>,
        limit: usize,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        let after_key = after.map(|(ts, index)| (ts.0, index));
        let mut page = self.checkpointed_audit(after_key, limit)?;
        for memtable in self.memtables_oldest_first() {
            let newer = memtable
                .audit
                .iter()
                .filter(|a| after_key.is_none_or(|k| (a.timestamp.0, a.index) > k));
            let room = limit.saturating_sub(page.len());
            page.extend(newer.take(room).cloned());
        }
        Ok(page)
    }

    fn checkpointed_audit(
        &self,
        after: Option<(u64, u64)>,
        limit: usize,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        let db = self.db()?;
        let read = db
            .begin_read()
            .map_err(redb_err(&self.path, "begin read"))?;
        let table = read
            .open_table(AUDIT)
            .map_err(redb_err(&self.path, "open audit"))?;
        let rows = match after {
            Some((ts, index)) => table.range((ts, index)..),
            None => table.range::<(u64, u64)>(..),
        }
        .map_err(redb_err(&self.path, "scan audit"))?;
        let mut page = Vec::new();
        for row in rows {
            let (key, value) = row.map_err(redb_err(&self.path, "scan audit"))?;
            let (ts, index) = key.value();
            if Some((ts, index)) == after {
                continue;
            }
            if page.len() >= limit {
                break;
            }
            let record =
                encoding::decode_audit(Timestamp(ts), index, value.value()).map_err(|_| {
                    StoreError::Corrupt {
                        path: self.path.clone(),
                        table: "audit",
                        key: format!("({ts}, {index})"),
                    }
                })?;
            page.push(record);
        }
        Ok(page)
    }
}
