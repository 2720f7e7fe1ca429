//! Where a checkpoint puts its transfers, and how one is found again.
//!
//! Transfers whose ids pass every id stored before them (time-based ids, which TigerBeetle advises
//! and most clients send) go into `transfer_runs`, up to `TRANSFER_RUN` to a row keyed by the
//! row's last id: one B-tree insert per run instead of one per transfer, which was a third of a
//! checkpoint's time. Any other transfer (an id below one stored already) gets a row of its own in
//! `transfers`. A run's ids all pass the last id of every run written before it, so runs never
//! overlap and the only run that can hold an id is the first whose key is not below it.
//!
//! A run: `count:u16 | end:u32 × count | records`, where record `i` (a transfer record,
//! `records::encode_transfer`) ends `end[i]` bytes into `records`, in increasing id order.

use bulwark_ledger::Transfer;
use bulwark_limits::TRANSFER_RUN;
use redb::ReadableTable;

use crate::records;

/// Why a transfer could not be read.
#[derive(Debug)]
pub(crate) enum FindError {
    Storage(redb::StorageError),
    /// The row at `key` of `table` is damaged.
    Corrupt {
        table: &'static str,
        key: u128,
    },
}

impl From<redb::StorageError> for FindError {
    fn from(e: redb::StorageError) -> Self {
        FindError::Storage(e)
    }
}

impl From<FindError> for redb::Error {
    fn from(e: FindError) -> Self {
        match e {
            FindError::Storage(e) => e.into(),
            FindError::Corrupt { table, key } => {
                redb::StorageError::Corrupted(format!("{table} at key {key}")).into()
            }
        }
    }
}

/// The stored transfer with `id`: from its run, or from its own row.
pub(crate) fn find<R, S>(runs: &R, singles: &S, id: u128) -> Result<Option<Transfer>, FindError>
where
    R: ReadableTable<u128, &'static [u8]>,
    S: ReadableTable<u128, &'static [u8]>,
{
    if let Some(row) = runs.range(id..)?.next() {
        let (key, value) = row?;
        let key = key.value();
        let corrupt = FindError::Corrupt {
            table: "transfer_runs",
            key,
        };
        let run = Run::parse(value.value()).ok_or(corrupt)?;
        if let Some(found) = run.find(id) {
            return found.map(Some).ok_or(FindError::Corrupt {
                table: "transfer_runs",
                key,
            });
        }
    }
    let Some(value) = singles.get(id)? else {
        return Ok(None);
    };
    records::decode_transfer(value.value())
        .filter(|t| t.id.0 == id)
        .map(Some)
        .ok_or(FindError::Corrupt {
            table: "transfers",
            key: id,
        })
}

/// A run's row, checked as far as its layout.
pub(crate) struct Run<'a> {
    ends: &'a [u8],
    records: &'a [u8],
}

impl<'a> Run<'a> {
    pub(crate) fn parse(row: &'a [u8]) -> Option<Run<'a>> {
        let count = usize::from(u16::from_le_bytes(row.get(..2)?.try_into().ok()?));
        if count == 0 || count > TRANSFER_RUN {
            return None;
        }
        let ends = row.get(2..2 + 4 * count)?;
        let records = &row[2 + 4 * count..];
        let run = Run { ends, records };
        (run.end(count - 1) == records.len()).then_some(run)
    }

    pub(crate) fn count(&self) -> usize {
        self.ends.len() / 4
    }

    fn end(&self, i: usize) -> usize {
        let end = &self.ends[4 * i..4 * i + 4];
        u32::from_le_bytes(end.try_into().expect("4 bytes")) as usize
    }

    pub(crate) fn record(&self, i: usize) -> Option<&'a [u8]> {
        let start = if i == 0 { 0 } else { self.end(i - 1) };
        self.records.get(start..self.end(i))
    }

    /// `None` if `id` is not in this run; `Some(None)` if the run is damaged on the way.
    fn find(&self, id: u128) -> Option<Option<Transfer>> {
        let (mut low, mut high) = (0, self.count());
        while low < high {
            let middle = (low + high) / 2;
            let Some(found) = self.record(middle).and_then(records::transfer_record_id) else {
                return Some(None);
            };
            match found.cmp(&id) {
                std::cmp::Ordering::Less => low = middle + 1,
                std::cmp::Ordering::Greater => high = middle,
                std::cmp::Ordering::Equal => {
                    let transfer = self.record(middle).and_then(records::decode_transfer);
                    return Some(transfer.filter(|t| t.id.0 == id));
                }
            }
        }
        None
    }
}

/// Appends the row of a run of `records` (each a transfer record, in increasing id order) to
/// `row`.
pub(crate) fn encode_run<'r>(
    records: impl ExactSizeIterator<Item = &'r [u8]> + Clone,
    row: &mut Vec<u8>,
) {
    let count = records.len();
    assert!(
        (1..=TRANSFER_RUN).contains(&count),
        "a run holds 1 to {TRANSFER_RUN} transfers, not {count}"
    );
    row.extend_from_slice(&(count as u16).to_le_bytes());
    let mut end = 0u32;
    for record in records.clone() {
        end += u32::try_from(record.len()).expect("a transfer record is small");
        row.extend_from_slice(&end.to_le_bytes());
    }
    for record in records {
        row.extend_from_slice(record);
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use bulwark_ledger::{
        AccountId, Batch, NewAccount, NewTransfer, Operation, Timestamp, Transfer, TransferId,
    };
    use redb::{ReadableDatabase, ReadableTableMetadata};

    use super::*;
    use crate::state::StateStore;
    use crate::tables::{TRANSFERS, TRANSFER_RUNS};

    fn transfer(id: u128) -> Transfer {
        Transfer {
            id: TransferId(id),
            debit_account_id: AccountId(1),
            credit_account_id: AccountId(2),
            amount: id * 7,
            ledger: 1,
            code: 1,
            timestamp: Timestamp(id as u64),
            ..Transfer::default()
        }
    }

    fn row(ids: &[u128]) -> Vec<u8> {
        let encoded: Vec<_> = ids
            .iter()
            .map(|&id| records::encode_transfer(&transfer(id)))
            .collect();
        let mut row = Vec::new();
        encode_run(encoded.iter().map(|r| r.as_slice()), &mut row);
        row
    }

    #[test]
    fn every_transfer_of_a_run_is_found_and_no_other() {
        let ids: Vec<u128> = (0..TRANSFER_RUN as u128)
            .map(|i| 10 + 3 * i + i * i)
            .collect();
        let row = row(&ids);
        let run = Run::parse(&row).expect("a run");
        for &id in &ids {
            assert_eq!(run.find(id), Some(Some(transfer(id))), "id {id}");
            assert_eq!(run.find(id + 1), None, "id {}", id + 1);
        }
        assert_eq!(run.find(0), None);
        assert_eq!(run.find(u128::MAX), None);
    }

    #[test]
    fn a_damaged_run_is_refused() {
        let good = row(&[5, 6, 9]);
        assert!(Run::parse(&good).is_some());
        assert!(Run::parse(&good[..good.len() - 1]).is_none(), "cut short");
        let mut zero = good.clone();
        zero[..2].copy_from_slice(&0u16.to_le_bytes());
        assert!(Run::parse(&zero).is_none(), "no transfer");
        let mut long = good.clone();
        long.push(0);
        assert!(Run::parse(&long).is_none(), "a byte past its last record");
        // The middle record's end moved a byte into the last one: the middle one is then damaged.
        let mut moved = good.clone();
        moved[6] += 1;
        let run = Run::parse(&moved).expect("the layout still adds up");
        assert_eq!(run.find(6), Some(None));
    }

    pub(crate) fn apply(store: &mut StateStore, index: u64, operation: Operation) {
        let batch = Batch {
            timestamp: Timestamp(index * 1_000),
            operation,
        };
        store.apply_batch(index, &batch);
    }

    pub(crate) fn transfers(ids: impl Iterator<Item = u128>) -> Operation {
        let one = |id| NewTransfer {
            id: TransferId(id),
            debit_account_id: AccountId(1),
            credit_account_id: AccountId(2),
            amount: 1,
            ledger: 1,
            code: 1,
            ..NewTransfer::default()
        };
        Operation::CreateTransfers(ids.map(one).collect())
    }

    /// Rows in `transfers` and in `transfer_runs`.
    pub(crate) fn rows(path: &std::path::Path) -> (u64, u64) {
        let db = redb::Database::open(path).unwrap();
        let read = db.begin_read().unwrap();
        let singles = read.open_table(TRANSFERS).unwrap().len().unwrap();
        (
            singles,
            read.open_table(TRANSFER_RUNS).unwrap().len().unwrap(),
        )
    }

    /// A store of accounts 1 and 2 and the transfers `100..100 + n` checkpointed.
    pub(crate) fn store_with_transfers(path: &std::path::Path, n: u128) -> StateStore {
        let mut store = StateStore::open(path).unwrap();
        let account = |id| NewAccount {
            id: AccountId(id),
            ledger: 1,
            code: 1,
            ..NewAccount::default()
        };
        apply(
            &mut store,
            1,
            Operation::CreateAccounts(vec![account(1), account(2)]),
        );
        apply(&mut store, 2, transfers(100..100 + n));
        store.checkpoint_now().unwrap().expect("checkpoint");
        store
    }

    #[test]
    fn ids_past_every_stored_one_go_in_runs_and_others_in_rows_of_their_own() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.redb");
        let mut store = store_with_transfers(&path, 70);
        // Below the stored ids, between them (103 and 104 exist), and past them.
        apply(&mut store, 3, transfers((10..15).chain([1_000, 1_001])));
        store.checkpoint_now().unwrap().expect("checkpoint");
        drop(store);
        // 70 past nothing: runs of 32, 32 and 6; then 5 below 100 in rows, 2 past 169 in a run.
        assert_eq!(rows(&path), (5, 4));
        let store = StateStore::open(&path).unwrap();
        for id in (10..15).chain(100..170).chain([1_000, 1_001]) {
            let found = store.stored_transfer(TransferId(id)).unwrap();
            assert_eq!(found.map(|t| t.id), Some(TransferId(id)), "transfer {id}");
        }
        for id in [9, 15, 99, 170, 999, 1_002] {
            assert_eq!(store.stored_transfer(TransferId(id)).unwrap(), None, "{id}");
        }
    }
}
