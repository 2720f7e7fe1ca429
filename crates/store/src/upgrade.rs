//! Opening a store of format 4 makes it format 5, in the one write transaction that opening
//! commits: `transfer_runs` is created (empty: the transfers stay in their rows of `transfers`,
//! where a lookup finds them), and every index run of `account_transfers` and `transfer_index` is
//! re-encoded delta-coded (`index_runs.rs`). A crash before that commit leaves format 4, which
//! the next start upgrades again.

use std::ops::Bound;
use std::path::Path;

use redb::{ReadableTable, TableDefinition, WriteTransaction};

use crate::error::{redb_err, StoreError};
use crate::index_runs::{decode_fixed_run, encode_run};
use crate::tables::{ACCOUNT_TRANSFERS, TRANSFER_INDEX};

/// Rows re-encoded per pass over a table (their old values are held meanwhile).
const ROWS_PER_PASS: usize = 10_000;

/// Re-encodes the index runs of a format 4 store; answers how many rows it re-encoded.
pub(crate) fn upgrade_from_format_4(
    path: &Path,
    txn: &WriteTransaction,
) -> Result<u64, StoreError> {
    let rows = reencode(path, txn, ACCOUNT_TRANSFERS, "account_transfers")?
        + reencode(path, txn, TRANSFER_INDEX, "transfer_index")?;
    tracing::info!(
        path = %path.display(),
        index_rows = rows,
        "state store upgraded from format 4 to 5 (index runs re-encoded)"
    );
    Ok(rows)
}

fn reencode<K>(
    path: &Path,
    txn: &WriteTransaction,
    definition: TableDefinition<K, &'static [u8]>,
    name: &'static str,
) -> Result<u64, StoreError>
where
    K: redb::Key + Copy + std::fmt::Debug + 'static + for<'a> redb::Value<SelfType<'a> = K>,
{
    let mut table = txn
        .open_table(definition)
        .map_err(redb_err(path, "open index"))?;
    let (mut after, mut rows) = (None, 0);
    loop {
        let start = after.map_or(Bound::Unbounded, Bound::Excluded);
        let pass: Vec<(K, Vec<u8>)> = table
            .range::<K>((start, Bound::Unbounded))
            .map_err(redb_err(path, "scan index"))?
            .take(ROWS_PER_PASS)
            .map(|row| row.map(|(key, value)| (key.value(), value.value().to_vec())))
            .collect::<Result<_, _>>()
            .map_err(redb_err(path, "scan index"))?;
        let Some(&(last, _)) = pass.last() else {
            return Ok(rows);
        };
        for (key, old) in pass {
            let run = decode_fixed_run(&old)
                .filter(|run| run.windows(2).all(|w| w[0].0 < w[1].0))
                .ok_or_else(|| StoreError::Corrupt {
                    path: path.into(),
                    table: name,
                    key: format!("{key:?}"),
                })?;
            table
                .insert(key, encode_run(&run).as_slice())
                .map_err(redb_err(path, "write index"))?;
            rows += 1;
        }
        after = Some(last);
    }
}

#[cfg(test)]
mod tests {
    use bulwark_ledger::{AccountId, Timestamp, TransferId};
    use redb::{ReadableDatabase, ReadableTable};

    use super::*;
    use crate::search::QueryFilter;
    use crate::state::StateStore;
    use crate::tables::{FORMAT_VERSION, META, META_FORMAT, TRANSFERS, TRANSFER_RUNS};
    use crate::transfer_runs::tests::{rows, store_with_transfers};
    use crate::transfer_runs::Run;

    /// What the store answers of account 1's transfers and of the transfers of ledger 1.
    fn answers(store: &StateStore) -> (Vec<TransferId>, Vec<TransferId>) {
        let history = store
            .account_transfers(AccountId(1), Timestamp(0), 1_000)
            .unwrap();
        let filter = QueryFilter {
            user_data_128: 0,
            user_data_64: 0,
            user_data_32: 0,
            ledger: 1,
            code: 0,
            timestamp_min: Timestamp(0),
            timestamp_max: Timestamp(u64::MAX),
            reversed: false,
            limit: 1_000,
        };
        let page = store
            .query_transfers(&filter)
            .unwrap()
            .expect("indexes built");
        (
            history.iter().map(|(t, _)| t.id).collect(),
            page.found.iter().map(|t| t.id).collect(),
        )
    }

    /// Rewrites a format 5 store as format 4 wrote it: every transfer in a row of its own, index
    /// runs of fixed 24-byte pairs, no `transfer_runs`.
    fn make_format_4(path: &Path) {
        let db = redb::Database::open(path).unwrap();
        let write = db.begin_write().unwrap();
        {
            let runs = write.open_table(TRANSFER_RUNS).unwrap();
            let mut singles = write.open_table(TRANSFERS).unwrap();
            for row in runs.iter().unwrap() {
                let (_, value) = row.unwrap();
                let run = Run::parse(value.value()).unwrap();
                for i in 0..run.count() {
                    let record = run.record(i).unwrap();
                    let id = crate::records::transfer_record_id(record).unwrap();
                    singles.insert(id, record).unwrap();
                }
            }
            to_fixed_pairs(&write, TRANSFER_INDEX);
            to_fixed_pairs(&write, ACCOUNT_TRANSFERS);
            write
                .open_table(META)
                .unwrap()
                .insert(META_FORMAT, 4)
                .unwrap();
        }
        assert!(write.delete_table(TRANSFER_RUNS).unwrap());
        write.commit().unwrap();
    }

    /// Rewrites every run of an index table in format 4's fixed 24-byte pairs.
    fn to_fixed_pairs<K>(write: &WriteTransaction, definition: TableDefinition<K, &'static [u8]>)
    where
        K: redb::Key + Copy + 'static + for<'a> redb::Value<SelfType<'a> = K>,
    {
        let mut index = write.open_table(definition).unwrap();
        let rows: Vec<_> = index
            .iter()
            .unwrap()
            .map(|row| {
                let (k, v) = row.unwrap();
                (k.value(), crate::index_runs::decode_run(v.value()).unwrap())
            })
            .collect();
        assert!(!rows.is_empty());
        for (key, run) in rows {
            let fixed: Vec<u8> = run
                .iter()
                .flat_map(|(ts, id)| [ts.0.to_le_bytes().as_slice(), &id.0.to_le_bytes()].concat())
                .collect();
            index.insert(key, fixed.as_slice()).unwrap();
        }
    }

    #[test]
    fn a_format_4_store_is_upgraded_and_an_older_one_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.redb");
        let store = store_with_transfers(&path, 40);
        let before = answers(&store);
        assert_eq!(before.0.len(), 40);
        drop(store);
        make_format_4(&path);

        let store = StateStore::open(&path).expect("a format 4 store opens");
        assert_eq!(answers(&store), before);
        for id in 100..140 {
            assert!(store.stored_transfer(TransferId(id)).unwrap().is_some());
        }
        drop(store);
        assert_eq!(rows(&path), (40, 0));
        let db = redb::Database::open(&path).unwrap();
        let version = db
            .begin_read()
            .unwrap()
            .open_table(META)
            .unwrap()
            .get(META_FORMAT)
            .unwrap()
            .unwrap()
            .value();
        assert_eq!(version, FORMAT_VERSION);
        let write = db.begin_write().unwrap();
        write
            .open_table(META)
            .unwrap()
            .insert(META_FORMAT, 3)
            .unwrap();
        write.commit().unwrap();
        drop(db);
        let refused = StateStore::open(&path).err().expect("format 3 is refused");
        assert!(
            refused.to_string().contains("format version 3"),
            "{refused}"
        );
    }
}
