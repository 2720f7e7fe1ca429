//! `POST /v1/accounts/query` and `/v1/transfers/query`: the accounts or transfers whose fields
//! equal every value a filter gives, in a timestamp window, either order. Served from the field
//! indexes (`field_index.rs`): each given field names one list in timestamp order, and the lists
//! are intersected by leapfrogging (each list seeks to the timestamp the others reached), so a
//! page costs seeks in proportion to what it finds, not to the lists' lengths. A filter with no
//! field reads the list of every item by timestamp. At most `MAX_QUERY_SEEKS` seeks a page.

use std::sync::MutexGuard;

use bulwark_ledger::{Account, AccountId, Timestamp, Transfer, TransferId};
use bulwark_limits::MAX_QUERY_SEEKS;
use redb::ReadOnlyTable;

use crate::error::{redb_err, StoreError};
use crate::field_index::{FieldIndex, IndexField, EVERY_TRANSFER};
use crate::memtable::Memtable;
use crate::state::StateStore;

/// What a query asks for: the items whose every field given (not 0) equals the filter's, with a
/// timestamp in `timestamp_min..=timestamp_max`, oldest first or newest first.
#[derive(Clone, Copy, Debug)]
pub struct QueryFilter {
    pub user_data_128: u128,
    pub user_data_64: u64,
    pub user_data_32: u32,
    pub ledger: u32,
    pub code: u16,
    pub timestamp_min: Timestamp,
    pub timestamp_max: Timestamp,
    pub reversed: bool,
    pub limit: usize,
}

impl QueryFilter {
    /// The fields the filter gives, each with its value.
    fn fields(&self) -> Vec<(IndexField, u128)> {
        let values = [
            self.user_data_128,
            self.user_data_64.into(),
            self.user_data_32.into(),
            self.ledger.into(),
            self.code.into(),
        ];
        IndexField::ALL
            .into_iter()
            .zip(values)
            .filter(|&(_, value)| value != 0)
            .collect()
    }
}

/// A page of a query, and where to go on.
#[derive(Clone, Debug)]
pub struct QueryPage<T> {
    pub found: Vec<T>,
    /// The next page's `timestamp_min` (oldest first) or `timestamp_max` (reversed); `None`:
    /// nothing more in the window. A page may hold fewer than its limit and still go on, when it
    /// reached `MAX_QUERY_SEEKS`.
    pub next: Option<Timestamp>,
}

/// A list of (timestamp, id) in timestamp order that can be searched.
trait Postings {
    /// The entry at `ts` or else the first after it (`reversed`: the last before it).
    fn seek(&self, ts: Timestamp, reversed: bool) -> Result<Option<(Timestamp, u128)>, StoreError>;
}

/// How many of the first `len` items `below` holds for (it holds for a prefix).
fn partition_point(len: usize, below: impl Fn(usize) -> bool) -> usize {
    let (mut lo, mut hi) = (0, len);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if below(mid) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    lo
}

/// The entry at `ts`, else the nearest past it in the seek's direction, among `len` entries in
/// timestamp order.
fn seek_sorted(
    len: usize,
    key: impl Fn(usize) -> (Timestamp, u128),
    ts: Timestamp,
    reversed: bool,
) -> Option<(Timestamp, u128)> {
    let at = partition_point(len, |i| key(i).0 < ts);
    if !reversed {
        (at < len).then(|| key(at))
    } else if at < len && key(at).0 == ts {
        Some(key(at))
    } else {
        at.checked_sub(1).map(key)
    }
}

/// A list in memory: positions in a timestamp-ordered sequence (all of them, or an index's).
struct InMemory<'a, K> {
    positions: Option<&'a [u32]>,
    len: usize,
    key: K,
}

impl<K: Fn(u32) -> (Timestamp, u128)> Postings for InMemory<'_, K> {
    fn seek(&self, ts: Timestamp, reversed: bool) -> Result<Option<(Timestamp, u128)>, StoreError> {
        let at = |i: usize| (self.key)(self.positions.map_or(i as u32, |p| p[i]));
        let len = self.positions.map_or(self.len, <[u32]>::len);
        Ok(seek_sorted(len, at, ts, reversed))
    }
}

/// A list of the last checkpoint: the `transfer_index` runs of one (tag, value), each keyed by
/// its last entry's timestamp; runs never overlap in time.
struct Checkpointed<'a> {
    store: &'a StateStore,
    table: &'a ReadOnlyTable<(u8, u128, u64), &'static [u8]>,
    tag: u8,
    value: u128,
}

impl Checkpointed<'_> {
    fn scan_err<E: Into<redb::Error>>(&self) -> impl FnOnce(E) -> StoreError {
        redb_err(&self.store.path, "scan transfer index")
    }

    fn run_seek(
        &self,
        run: &[u8],
        ts: Timestamp,
        reversed: bool,
    ) -> Result<Option<(Timestamp, u128)>, StoreError> {
        let entries = crate::index_runs::decode_run(run).ok_or_else(|| StoreError::Corrupt {
            path: self.store.path.clone(),
            table: "transfer_index",
            key: format!("({}, {}, run reaching {ts})", self.tag, self.value),
        })?;
        let key = |i: usize| {
            let (ts, id) = entries[i];
            (ts, id.0)
        };
        Ok(seek_sorted(entries.len(), key, ts, reversed))
    }
}

impl Postings for Checkpointed<'_> {
    fn seek(&self, ts: Timestamp, reversed: bool) -> Result<Option<(Timestamp, u128)>, StoreError> {
        let (tag, value) = (self.tag, self.value);
        let reaching = self
            .table
            .range((tag, value, ts.0)..=(tag, value, u64::MAX))
            .map_err(self.scan_err())?
            .next();
        if let Some(row) = reaching {
            let (_, run) = row.map_err(self.scan_err())?;
            if let Some(found) = self.run_seek(run.value(), ts, reversed)? {
                return Ok(Some(found));
            }
        }
        if !reversed {
            return Ok(None);
        }
        // Nothing at or before `ts` in the run reaching it: the newest of the runs before.
        let earlier = self
            .table
            .range((tag, value, 0)..(tag, value, ts.0))
            .map_err(self.scan_err())?
            .next_back();
        match earlier {
            None => Ok(None),
            Some(row) => {
                let (_, run) = row.map_err(self.scan_err())?;
                self.run_seek(run.value(), Timestamp(u64::MAX), true)
            }
        }
    }
}

/// One list through the checkpoint and the memtables, which hold ever later timestamps.
struct Tiered<'a> {
    oldest_first: Vec<Box<dyn Postings + 'a>>,
}

impl Postings for Tiered<'_> {
    fn seek(&self, ts: Timestamp, reversed: bool) -> Result<Option<(Timestamp, u128)>, StoreError> {
        let mut tiers: Box<dyn Iterator<Item = _>> = if reversed {
            Box::new(self.oldest_first.iter().rev())
        } else {
            Box::new(self.oldest_first.iter())
        };
        tiers.try_fold(None, |found, tier| match found {
            Some(_) => Ok(found),
            None => tier.seek(ts, reversed),
        })
    }
}

/// The entries every list holds, in the filter's window and order, at most its limit.
fn intersect(
    lists: &[Box<dyn Postings + '_>],
    filter: &QueryFilter,
) -> Result<QueryPage<(Timestamp, u128)>, StoreError> {
    let reversed = filter.reversed;
    let (start, end) = if reversed {
        (filter.timestamp_max, filter.timestamp_min)
    } else {
        (filter.timestamp_min, filter.timestamp_max)
    };
    let past_end = |ts: Timestamp| if reversed { ts < end } else { ts > end };
    let step = |ts: Timestamp| {
        if reversed {
            ts.0.checked_sub(1)
        } else {
            ts.0.checked_add(1)
        }
        .map(Timestamp)
    };
    let mut page = QueryPage {
        found: Vec::new(),
        next: None,
    };
    let (mut at, mut seeks) = (start, 0);
    loop {
        // Seek the lists in turn to `at` until all of them hold it.
        let (mut agreeing, mut list) = (0, 0);
        let id = loop {
            if past_end(at) {
                return Ok(page);
            }
            if seeks == MAX_QUERY_SEEKS {
                page.next = Some(at);
                return Ok(page);
            }
            seeks += 1;
            let Some((ts, id)) = lists[list].seek(at, reversed)? else {
                return Ok(page);
            };
            if ts == at {
                agreeing += 1;
            } else {
                (at, agreeing) = (ts, 1);
            }
            if agreeing == lists.len() {
                break id;
            }
            list = (list + 1) % lists.len();
        };
        if past_end(at) {
            return Ok(page);
        }
        page.found.push((at, id));
        let Some(next) = step(at) else {
            return Ok(page);
        };
        if page.found.len() == filter.limit {
            page.next = (!past_end(next)).then_some(next);
            return Ok(page);
        }
        at = next;
    }
}

impl StateStore {
    /// A page of the transfers `filter` asks for; `None` while a memtable's field indexes are
    /// still being built (a step per call, see `Memtable::query_index`): ask again.
    pub fn query_transfers(
        &self,
        filter: &QueryFilter,
    ) -> Result<Option<QueryPage<Transfer>>, StoreError> {
        if self.is_unavailable() {
            return Err(StoreError::Unavailable {
                path: self.path.clone(),
            });
        }
        let keys = self.read_waiting(|reader| {
            let memtables: Vec<&Memtable> = self.memtables_oldest_first().collect();
            let fields = filter.fields();
            // Only a query by fields needs the memtables' field indexes.
            let indexes: Option<Vec<MutexGuard<'_, FieldIndex>>> = if fields.is_empty() {
                Some(Vec::new())
            } else {
                memtables.iter().map(|m| m.query_index()).collect()
            };
            let Some(indexes) = indexes else {
                return Ok(None);
            };
            let lists: Vec<(u8, u128, Option<IndexField>)> = if fields.is_empty() {
                vec![(EVERY_TRANSFER, 0, None)]
            } else {
                let tagged = fields.iter().map(|&(f, v)| (f.tag(), v, Some(f)));
                tagged.collect()
            };
            let lists: Vec<Box<dyn Postings + '_>> = lists
                .into_iter()
                .map(|(tag, value, field)| {
                    let mut tiers: Vec<Box<dyn Postings + '_>> = vec![Box::new(Checkpointed {
                        store: self,
                        table: &reader.transfer_index,
                        tag,
                        value,
                    })];
                    for (i, m) in memtables.iter().enumerate() {
                        let index = field.map(|f| (f, &indexes[i]));
                        tiers.push(Box::new(InMemory {
                            positions: index.map(|(f, index)| index.positions(f, value)),
                            len: m.transfers.len(),
                            key: |p| {
                                let (ts, id) = m.transfers.key_at(p);
                                (ts, id.0)
                            },
                        }));
                    }
                    Box::new(Tiered {
                        oldest_first: tiers,
                    }) as Box<dyn Postings>
                })
                .collect();
            intersect(&lists, filter).map(Some)
        })?;
        let Some(keys) = keys else {
            return Ok(None);
        };
        let mut found = Vec::with_capacity(keys.found.len());
        for (ts, id) in keys.found {
            let transfer = self.stored_transfer(TransferId(id))?;
            found.push(transfer.ok_or_else(|| StoreError::Corrupt {
                path: self.path.clone(),
                table: "transfer_index",
                key: format!("entry ({ts}, {id}) names a missing transfer"),
            })?);
        }
        Ok(Some(QueryPage {
            found,
            next: keys.next,
        }))
    }

    /// A page of the accounts `filter` asks for (all in memory, with their index).
    pub fn query_accounts(&self, filter: &QueryFilter) -> Result<QueryPage<Account>, StoreError> {
        let by_time = &self.accounts_by_time;
        let key = |p: u32| {
            let (ts, id) = by_time[p as usize];
            (ts, id.0)
        };
        let fields = filter.fields();
        let lists: Vec<Box<dyn Postings + '_>> = if fields.is_empty() {
            vec![Box::new(InMemory {
                positions: None,
                len: by_time.len(),
                key,
            })]
        } else {
            fields
                .into_iter()
                .map(|(field, value)| {
                    Box::new(InMemory {
                        positions: Some(self.account_index.positions(field, value)),
                        len: 0,
                        key,
                    }) as Box<dyn Postings>
                })
                .collect()
        };
        let keys = intersect(&lists, filter)?;
        let found = keys
            .found
            .iter()
            .map(|&(_, id)| self.accounts[&AccountId(id)])
            .collect();
        Ok(QueryPage {
            found,
            next: keys.next,
        })
    }
}
