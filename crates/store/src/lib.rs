//! The state store: the ledger's state on disk (redb), checkpointed, with the recent past in memory.
//!
//! It owns the files under `<data>/state.redb` and the rule that a checkpoint writes the state
//! *and* the log index it reflects in one atomic, fsynced redb commit, so that recovery is
//! "open the last checkpoint, replay the log after its index". Between checkpoints, changes
//! live in an in-memory memtable; a checkpoint freezes it and writes it on a background thread
//! while new batches go on into a fresh memtable. All accounts and the pending-expiry index are
//! held in memory; transfers, their per-account index and balance history live on disk, so
//! memory does not grow with the number of transfers stored.
//!
//! It must never decide what a batch means (that is `bulwark-ledger`), and never acknowledge
//! anything: durability of a batch before its checkpoint is the log's job.

mod records;
pub mod snapshot;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bulwark_ledger::{
    Account, AccountId, Balances, Batch, BatchResults, Changes, LedgerStore, PendingStatus,
    StateMachine, Timestamp, Transfer, TransferId,
};
use redb::{Database, ReadOnlyTable, ReadableDatabase, ReadableTable, TableDefinition};

pub(crate) const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
pub(crate) const ACCOUNTS: TableDefinition<u64, &[u8]> = TableDefinition::new("accounts");
pub(crate) const TRANSFERS: TableDefinition<u64, &[u8]> = TableDefinition::new("transfers");
pub(crate) const PENDING: TableDefinition<u64, u8> = TableDefinition::new("pending_status");
pub(crate) const EXPIRIES: TableDefinition<(u64, u64), ()> =
    TableDefinition::new("pending_expiries");
/// An account's transfers as packed runs: key (account, timestamp of the run's last entry),
/// value `[(timestamp u64, transfer id u64)]` in timestamp order. One checkpoint writes one run
/// per account it touched (split at [`RUN_ENTRIES`]), so indexing costs one B-tree insert per
/// account per checkpoint rather than two per transfer.
pub(crate) const ACCOUNT_TRANSFERS: TableDefinition<(u64, u64), &[u8]> =
    TableDefinition::new("account_transfers");
const RUN_ENTRIES: usize = 4096;
pub(crate) const BALANCE_HISTORY: TableDefinition<(u64, u64), &[u8]> =
    TableDefinition::new("balance_history");

const FORMAT_VERSION: u64 = 1;
/// redb's page cache. Bounded well below redb's default (1 GiB) so that a node's memory stays
/// flat however many transfers it stores.
const CACHE_BYTES: usize = 64 << 20;
const META_FORMAT: &str = "format_version";
/// The cluster configuration as of the checkpoint (opaque bytes of the consensus layer).
pub(crate) const MEMBERSHIP: TableDefinition<&str, &[u8]> = TableDefinition::new("membership");
const MEMBERSHIP_KEY: &str = "conf_state";
pub(crate) const META_APPLIED_INDEX: &str = "applied_index";
const META_LAST_TIMESTAMP: &str = "last_timestamp";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("state store {path}: {what}: {source}")]
    Redb {
        path: PathBuf,
        what: &'static str,
        source: Box<redb::Error>,
    },
    #[error("state store {path}: corrupt record in table {table} at key {key}")]
    Corrupt {
        path: PathBuf,
        table: &'static str,
        key: String,
    },
    #[error("state store {path}: format version {found}, this build reads {FORMAT_VERSION}")]
    Version { path: PathBuf, found: u64 },
    #[error("state store {path}: snapshot: {reason}")]
    Snapshot { path: PathBuf, reason: String },
    #[error("state store {path}: the background checkpoint thread died")]
    CheckpointThread { path: PathBuf },
}

fn redb_err<E: Into<redb::Error>>(path: &Path, what: &'static str) -> impl FnOnce(E) -> StoreError {
    let path = path.to_path_buf();
    move |e| StoreError::Redb {
        path,
        what,
        source: Box::new(e.into()),
    }
}

/// Changes since the last freeze: new transfers and everything derived from them.
#[derive(Default)]
struct Memtable {
    transfers: HashMap<TransferId, Transfer>,
    pending: HashMap<TransferId, PendingStatus>,
    /// Per account, its transfers in timestamp order (appends only: timestamps increase).
    account_transfers: HashMap<AccountId, Vec<(Timestamp, TransferId)>>,
    balance_history: BTreeMap<(AccountId, Timestamp), Balances>,
    /// `true`: added since the freeze; `false`: removed.
    expiry_changes: BTreeMap<(Timestamp, TransferId), bool>,
}

/// A memtable being written as a checkpoint, with everything else that checkpoint records.
struct Frozen {
    memtable: Memtable,
    accounts: Vec<Account>,
    applied_index: u64,
    last_timestamp: Timestamp,
    membership: Option<Vec<u8>>,
}

/// Read handles on the last committed checkpoint.
struct Reader {
    transfers: ReadOnlyTable<u64, &'static [u8]>,
    pending: ReadOnlyTable<u64, u8>,
    account_transfers: ReadOnlyTable<(u64, u64), &'static [u8]>,
    balance_history: ReadOnlyTable<(u64, u64), &'static [u8]>,
}

/// A checkpoint finished on the background thread.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Checkpointed {
    pub applied_index: u64,
    pub transfers: usize,
    pub duration: Duration,
}

type FlushOutcome = Result<Checkpointed, StoreError>;

pub struct StateStore {
    path: PathBuf,
    db: Arc<Database>,
    reader: Reader,
    accounts: HashMap<AccountId, Account>,
    dirty_accounts: HashSet<AccountId>,
    expiries: BTreeSet<(Timestamp, TransferId)>,
    active: Memtable,
    frozen: Option<Arc<Frozen>>,
    flushing: Option<mpsc::Receiver<FlushOutcome>>,
    last_timestamp: Timestamp,
    applied_index: u64,
    checkpointed_index: u64,
    membership: Option<Vec<u8>>,
}

impl StateStore {
    /// Opens (or creates) the state store at `path` and loads accounts and pending expiries.
    pub fn open(path: &Path) -> Result<StateStore, StoreError> {
        // Verify every page checksum at open: a file damaged outside redb must stop the node with
        // an error, not be trusted (a plain open may even panic on it).
        let db = Database::builder()
            .set_cache_size(CACHE_BYTES)
            .set_check_integrity_on_open(true)
            .create(path)
            .map_err(redb_err(path, "open"))?;
        let txn = db.begin_write().map_err(redb_err(path, "begin write"))?;
        {
            let mut meta = txn.open_table(META).map_err(redb_err(path, "open meta"))?;
            let version = meta
                .get(META_FORMAT)
                .map_err(redb_err(path, "read meta"))?
                .map(|v| v.value());
            match version {
                None => {
                    meta.insert(META_FORMAT, FORMAT_VERSION)
                        .map_err(redb_err(path, "write meta"))?;
                }
                Some(FORMAT_VERSION) => {}
                Some(found) => {
                    return Err(StoreError::Version {
                        path: path.into(),
                        found,
                    })
                }
            }
            txn.open_table(ACCOUNTS)
                .map_err(redb_err(path, "create tables"))?;
            txn.open_table(TRANSFERS)
                .map_err(redb_err(path, "create tables"))?;
            txn.open_table(PENDING)
                .map_err(redb_err(path, "create tables"))?;
            txn.open_table(EXPIRIES)
                .map_err(redb_err(path, "create tables"))?;
            txn.open_table(ACCOUNT_TRANSFERS)
                .map_err(redb_err(path, "create tables"))?;
            txn.open_table(BALANCE_HISTORY)
                .map_err(redb_err(path, "create tables"))?;
            txn.open_table(MEMBERSHIP)
                .map_err(redb_err(path, "create tables"))?;
        }
        txn.commit().map_err(redb_err(path, "commit"))?;

        let read = db.begin_read().map_err(redb_err(path, "begin read"))?;
        let meta = read.open_table(META).map_err(redb_err(path, "open meta"))?;
        let meta_u64 = |key: &str| -> Result<u64, StoreError> {
            Ok(meta
                .get(key)
                .map_err(redb_err(path, "read meta"))?
                .map(|v| v.value())
                .unwrap_or(0))
        };
        let applied_index = meta_u64(META_APPLIED_INDEX)?;
        let last_timestamp = Timestamp(meta_u64(META_LAST_TIMESTAMP)?);
        let membership = read
            .open_table(MEMBERSHIP)
            .map_err(redb_err(path, "open membership"))?
            .get(MEMBERSHIP_KEY)
            .map_err(redb_err(path, "read membership"))?
            .map(|v| v.value().to_vec());

        let mut accounts = HashMap::new();
        let table = read
            .open_table(ACCOUNTS)
            .map_err(redb_err(path, "open accounts"))?;
        for row in table.iter().map_err(redb_err(path, "scan accounts"))? {
            let (key, value) = row.map_err(redb_err(path, "scan accounts"))?;
            let account = records::decode_account(value.value())
                .filter(|a| a.id.0 == key.value())
                .ok_or_else(|| StoreError::Corrupt {
                    path: path.into(),
                    table: "accounts",
                    key: key.value().to_string(),
                })?;
            accounts.insert(account.id, account);
        }
        let mut expiries = BTreeSet::new();
        let table = read
            .open_table(EXPIRIES)
            .map_err(redb_err(path, "open expiries"))?;
        for row in table.iter().map_err(redb_err(path, "scan expiries"))? {
            let (key, _) = row.map_err(redb_err(path, "scan expiries"))?;
            let (at, id) = key.value();
            expiries.insert((Timestamp(at), TransferId(id)));
        }
        drop(read);
        let reader = open_reader(path, &db)?;
        tracing::info!(
            path = %path.display(),
            applied_index,
            accounts = accounts.len(),
            "state store opened at checkpoint"
        );
        Ok(StateStore {
            path: path.into(),
            db: Arc::new(db),
            reader,
            accounts,
            dirty_accounts: HashSet::new(),
            expiries,
            active: Memtable::default(),
            frozen: None,
            flushing: None,
            last_timestamp,
            applied_index,
            checkpointed_index: applied_index,
            membership,
        })
    }

    /// The log index of the last batch applied (in memory, maybe not yet checkpointed).
    pub fn applied_index(&self) -> u64 {
        self.applied_index
    }

    /// The log index the last durable checkpoint reflects; the log after it is needed on recovery.
    pub fn checkpointed_index(&self) -> u64 {
        self.checkpointed_index
    }

    /// Applies the batch at log `index` through the ledger state machine.
    pub fn apply_batch(&mut self, index: u64, batch: &Batch) -> BatchResults {
        StateMachine::apply_batch(self, index, batch)
    }

    /// Transfers not yet in a durable checkpoint (active memtable only).
    pub fn memtable_transfers(&self) -> usize {
        self.active.transfers.len()
    }

    pub fn account_count(&self) -> usize {
        self.accounts.len()
    }

    pub fn accounts(&self) -> impl Iterator<Item = &Account> {
        self.accounts.values()
    }

    /// Records the cluster configuration of a brand-new store (nothing applied yet) durably, so
    /// that a restart before the first checkpoint starts Raft from it.
    pub fn bootstrap_membership(&mut self, encoded: Vec<u8>) -> Result<(), StoreError> {
        assert_eq!(self.applied_index, 0, "only a new store is bootstrapped");
        let txn = self
            .db
            .begin_write()
            .map_err(redb_err(&self.path, "begin write"))?;
        {
            let mut table = txn
                .open_table(MEMBERSHIP)
                .map_err(redb_err(&self.path, "open membership"))?;
            table
                .insert(MEMBERSHIP_KEY, encoded.as_slice())
                .map_err(redb_err(&self.path, "write membership"))?;
        }
        txn.commit().map_err(redb_err(&self.path, "commit"))?;
        self.membership = Some(encoded);
        Ok(())
    }

    /// A handle that streams snapshots of the last checkpoint from any thread.
    pub fn snapshot_source(&self) -> snapshot::SnapshotSource {
        snapshot::SnapshotSource {
            db: self.db.clone(),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn is_checkpointing(&self) -> bool {
        self.flushing.is_some()
    }

    /// Freezes the memtable and starts writing it, with every account changed since the last
    /// freeze and the applied index, as one redb commit on a background thread. Returns false
    /// if a checkpoint is already running or there is nothing new to write.
    pub fn start_checkpoint(&mut self) -> bool {
        if self.flushing.is_some() || self.applied_index == self.checkpointed_index {
            return false;
        }
        let mut accounts: Vec<Account> = self
            .dirty_accounts
            .drain()
            .map(|id| self.accounts[&id])
            .collect();
        accounts.sort_by_key(|a| a.id);
        let frozen = Arc::new(Frozen {
            memtable: std::mem::take(&mut self.active),
            accounts,
            applied_index: self.applied_index,
            last_timestamp: self.last_timestamp,
            membership: self.membership.clone(),
        });
        self.frozen = Some(frozen.clone());
        let (tx, rx) = mpsc::channel();
        let db = self.db.clone();
        let path = self.path.clone();
        std::thread::Builder::new()
            .name("checkpoint".into())
            .spawn(move || {
                let outcome = write_checkpoint(&path, &db, &frozen);
                // Let go of the database before reporting: whoever collects the result may
                // close the store and reopen the file at once.
                drop(db);
                let _ = tx.send(outcome);
            })
            .expect("spawn checkpoint thread");
        self.flushing = Some(rx);
        true
    }

    /// Collects a finished background checkpoint, if any. An error is fatal for the node: the
    /// state on disk is then not what the log says, and it must stop rather than go on.
    pub fn poll_checkpoint(&mut self) -> Result<Option<Checkpointed>, StoreError> {
        let Some(rx) = &self.flushing else {
            return Ok(None);
        };
        match rx.try_recv() {
            Ok(outcome) => self.finish_checkpoint(outcome).map(Some),
            Err(mpsc::TryRecvError::Empty) => Ok(None),
            Err(mpsc::TryRecvError::Disconnected) => Err(StoreError::CheckpointThread {
                path: self.path.clone(),
            }),
        }
    }

    /// Waits for a running checkpoint to finish.
    pub fn wait_checkpoint(&mut self) -> Result<Option<Checkpointed>, StoreError> {
        let Some(rx) = &self.flushing else {
            return Ok(None);
        };
        match rx.recv() {
            Ok(outcome) => self.finish_checkpoint(outcome).map(Some),
            Err(_) => Err(StoreError::CheckpointThread {
                path: self.path.clone(),
            }),
        }
    }

    /// Writes everything applied so far as a checkpoint and waits for it (shutdown, tests).
    pub fn checkpoint_now(&mut self) -> Result<Option<Checkpointed>, StoreError> {
        self.wait_checkpoint()?;
        if self.start_checkpoint() {
            self.wait_checkpoint()
        } else {
            Ok(None)
        }
    }

    fn finish_checkpoint(&mut self, outcome: FlushOutcome) -> Result<Checkpointed, StoreError> {
        self.flushing = None;
        let done = outcome?;
        // New readers first, then drop the frozen memtable: no read may fall in between.
        self.reader = open_reader(&self.path, &self.db)?;
        self.frozen = None;
        self.checkpointed_index = done.applied_index;
        Ok(done)
    }

    /// The transfers of an account in timestamp order, after `after`, at most `limit`, each with
    /// the account's balances after it when the account keeps `history`.
    pub fn account_transfers(
        &self,
        account: AccountId,
        after: Timestamp,
        limit: usize,
    ) -> Result<Vec<(Transfer, Option<Balances>)>, StoreError> {
        let mut ids: Vec<(Timestamp, TransferId)> = Vec::new();
        // Runs whose last entry is after `after`, in order; skip their entries up to `after`.
        let start = (account.0, after.0.saturating_add(1));
        let end = (account.0, u64::MAX);
        if after.0 < u64::MAX {
            for row in self
                .reader
                .account_transfers
                .range(start..=end)
                .map_err(redb_err(&self.path, "scan account transfers"))?
            {
                if ids.len() >= limit {
                    break;
                }
                let (key, value) = row.map_err(redb_err(&self.path, "scan account transfers"))?;
                let run =
                    records::decode_run(value.value()).ok_or_else(|| StoreError::Corrupt {
                        path: self.path.clone(),
                        table: "account_transfers",
                        key: format!("{:?}", key.value()),
                    })?;
                let room = limit - ids.len();
                ids.extend(run.filter(|(ts, _)| *ts > after).take(room));
            }
        }
        // Memtables hold only later timestamps than the checkpoint, frozen before active.
        let frozen = self.frozen.as_ref().map(|f| &f.memtable);
        for memtable in frozen.into_iter().chain(std::iter::once(&self.active)) {
            let Some(entries) = memtable.account_transfers.get(&account) else {
                continue;
            };
            let start = entries.partition_point(|(ts, _)| *ts <= after);
            let room = limit.saturating_sub(ids.len());
            ids.extend(entries[start..].iter().take(room).copied());
        }
        let keeps_history = self
            .accounts
            .get(&account)
            .is_some_and(|a| a.flags.contains(bulwark_ledger::AccountFlags::HISTORY));
        let mut out = Vec::with_capacity(ids.len());
        for (ts, id) in ids {
            let transfer = self.transfer(id).ok_or_else(|| StoreError::Corrupt {
                path: self.path.clone(),
                table: "account_transfers",
                key: format!("({account}, {ts}) names missing transfer {id}"),
            })?;
            let balances = if keeps_history {
                self.balances_at(account, ts)?
            } else {
                None
            };
            out.push((transfer, balances));
        }
        Ok(out)
    }

    fn balances_at(
        &self,
        account: AccountId,
        ts: Timestamp,
    ) -> Result<Option<Balances>, StoreError> {
        let frozen = self.frozen.as_ref().map(|f| &f.memtable);
        for memtable in std::iter::once(&self.active).chain(frozen) {
            if let Some(b) = memtable.balance_history.get(&(account, ts)) {
                return Ok(Some(*b));
            }
        }
        let Some(value) = self
            .reader
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
    }

    fn memtables(&self) -> impl Iterator<Item = &Memtable> {
        std::iter::once(&self.active).chain(self.frozen.as_ref().map(|f| &f.memtable))
    }
}

fn open_reader(path: &Path, db: &Database) -> Result<Reader, StoreError> {
    let read = db.begin_read().map_err(redb_err(path, "begin read"))?;
    Ok(Reader {
        transfers: read
            .open_table(TRANSFERS)
            .map_err(redb_err(path, "open transfers"))?,
        pending: read
            .open_table(PENDING)
            .map_err(redb_err(path, "open pending"))?,
        account_transfers: read
            .open_table(ACCOUNT_TRANSFERS)
            .map_err(redb_err(path, "open account transfers"))?,
        balance_history: read
            .open_table(BALANCE_HISTORY)
            .map_err(redb_err(path, "open balance history"))?,
    })
}

fn write_checkpoint(path: &Path, db: &Database, frozen: &Frozen) -> FlushOutcome {
    let started = Instant::now();
    let txn = db
        .begin_write()
        .map_err(redb_err(path, "begin checkpoint"))?;
    write_tables(&txn, frozen).map_err(redb_err(path, "write checkpoint"))?;
    // Default durability is Immediate: commit returns only once the checkpoint is fsynced.
    txn.commit().map_err(redb_err(path, "commit checkpoint"))?;
    Ok(Checkpointed {
        applied_index: frozen.applied_index,
        transfers: frozen.memtable.transfers.len(),
        duration: started.elapsed(),
    })
}

fn write_tables(txn: &redb::WriteTransaction, frozen: &Frozen) -> Result<(), redb::Error> {
    let m = &frozen.memtable;
    let mut accounts = txn.open_table(ACCOUNTS)?;
    for a in &frozen.accounts {
        accounts.insert(a.id.0, records::encode_account(a).as_slice())?;
    }
    let mut transfers = txn.open_table(TRANSFERS)?;
    let mut ids: Vec<&TransferId> = m.transfers.keys().collect();
    ids.sort_unstable();
    for id in ids {
        transfers.insert(id.0, records::encode_transfer(&m.transfers[id]).as_slice())?;
    }
    let mut pending = txn.open_table(PENDING)?;
    for (id, status) in &m.pending {
        pending.insert(id.0, status.to_byte())?;
    }
    let mut index = txn.open_table(ACCOUNT_TRANSFERS)?;
    let mut accounts: Vec<&AccountId> = m.account_transfers.keys().collect();
    accounts.sort_unstable();
    for account in accounts {
        for run in m.account_transfers[account].chunks(RUN_ENTRIES) {
            let last = run.last().expect("chunks are not empty").0;
            index.insert((account.0, last.0), records::encode_run(run).as_slice())?;
        }
    }
    let mut history = txn.open_table(BALANCE_HISTORY)?;
    for ((account, ts), b) in &m.balance_history {
        history.insert((account.0, ts.0), records::encode_balances(b).as_slice())?;
    }
    let mut expiries = txn.open_table(EXPIRIES)?;
    for ((at, id), added) in &m.expiry_changes {
        if *added {
            expiries.insert((at.0, id.0), ())?;
        } else {
            expiries.remove((at.0, id.0))?;
        }
    }
    let mut meta = txn.open_table(META)?;
    meta.insert(META_APPLIED_INDEX, frozen.applied_index)?;
    meta.insert(META_LAST_TIMESTAMP, frozen.last_timestamp.0)?;
    if let Some(membership) = &frozen.membership {
        let mut table = txn.open_table(MEMBERSHIP)?;
        table.insert(MEMBERSHIP_KEY, membership.as_slice())?;
    }
    Ok(())
}

impl StateMachine for StateStore {
    fn apply_batch(&mut self, index: u64, batch: &Batch) -> BatchResults {
        assert!(
            index > self.applied_index,
            "log index {index} applied after {}",
            self.applied_index
        );
        let results = bulwark_ledger::apply(self, batch);
        self.applied_index = index;
        results
    }

    fn skip_index(&mut self, index: u64) {
        assert!(index > self.applied_index);
        self.applied_index = index;
    }

    fn applied_index(&self) -> u64 {
        self.applied_index
    }

    fn last_timestamp(&self) -> Timestamp {
        self.last_timestamp
    }

    fn membership(&self) -> Option<Vec<u8>> {
        self.membership.clone()
    }

    fn set_membership(&mut self, encoded: Vec<u8>) {
        self.membership = Some(encoded);
    }
}

impl LedgerStore for StateStore {
    fn account(&self, id: AccountId) -> Option<Account> {
        self.accounts.get(&id).copied()
    }

    fn transfer(&self, id: TransferId) -> Option<Transfer> {
        for memtable in self.memtables() {
            if let Some(t) = memtable.transfers.get(&id) {
                return Some(*t);
            }
        }
        let value = self.reader.transfers.get(id.0).unwrap_or_else(|e| {
            panic!(
                "state store {}: read transfer {id}: {e}",
                self.path.display()
            )
        })?;
        Some(records::decode_transfer(value.value()).unwrap_or_else(|| {
            panic!(
                "state store {}: corrupt record in table transfers at key {id}",
                self.path.display()
            )
        }))
    }

    fn pending_status(&self, id: TransferId) -> Option<PendingStatus> {
        for memtable in self.memtables() {
            if let Some(s) = memtable.pending.get(&id) {
                return Some(*s);
            }
        }
        let value = self.reader.pending.get(id.0).unwrap_or_else(|e| {
            panic!(
                "state store {}: read pending {id}: {e}",
                self.path.display()
            )
        })?;
        Some(PendingStatus::from_byte(value.value()).unwrap_or_else(|| {
            panic!(
                "state store {}: corrupt record in table pending_status at key {id}",
                self.path.display()
            )
        }))
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

    fn commit(&mut self, changes: Changes) {
        for account in changes.accounts {
            self.dirty_accounts.insert(account.id);
            self.accounts.insert(account.id, account);
        }
        let m = &mut self.active;
        for t in changes.transfers {
            for account in [t.debit_account_id, t.credit_account_id] {
                let entries = m.account_transfers.entry(account).or_default();
                assert!(entries.last().is_none_or(|(ts, _)| *ts < t.timestamp));
                entries.push((t.timestamp, t.id));
            }
            m.transfers.insert(t.id, t);
        }
        m.pending.extend(changes.pending_status);
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
        self.last_timestamp = changes.last_timestamp;
    }
}
