//! [`StateStore`]: what it holds, opening a store file (format check, tables, accounts and
//! expiries loaded into memory), and the state machine the replica drives.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Instant;

use bulwark_ledger::access::{AuditRecord, TokenId, TokenRecord};
use bulwark_ledger::{
    Account, AccountId, Batch, BatchResults, IdMap, IdSet, StateMachine, Timestamp, TransferId,
};
use bulwark_limits::{
    CHECKPOINT_CATCH_UP_FACTOR, MEMTABLE_CAP_FACTOR, SPACE_RESERVE, STORE_CACHE_BYTES,
};
use redb::{Database, ReadTransaction, ReadableDatabase, ReadableTable};

use crate::checkpoint::Flushing;
use crate::disk::{open_reader, Disk};
use crate::error::{redb_err, StoreError};
use crate::field_index::FieldIndex;
use crate::memtable::{Frozen, MemTransfers, Memtable};
use crate::records;
use crate::snapshot;
use crate::tables::{
    ACCOUNTS, ACCOUNT_TRANSFERS, AUDIT, BALANCE_HISTORY, CHANGES, EXPIRIES, FAILED_TRANSFERS,
    FAILED_TRANSFERS_BY_TIME, FORMAT_VERSION, MEMBERSHIP, MEMBERSHIP_KEY, META, META_APPLIED_INDEX,
    META_APPLIED_TERM, META_FORMAT, META_LAST_TIMESTAMP, OUTBOX, PENDING, TOKENS, TRANSFERS,
    TRANSFER_INDEX, TRANSFER_RUNS, UPGRADED_FORMAT_VERSION,
};

pub struct StateStore {
    pub(crate) path: PathBuf,
    /// `None` while the database is closed after an I/O failure, until a reopen succeeds. A
    /// `RefCell` because a read (`&self`) that meets a failed handle must close and reopen it.
    pub(crate) disk: RefCell<Option<Disk>>,
    pub(crate) generations: Cell<u64>,
    /// The database as snapshot sources find it (`None` while closed).
    pub(crate) shared_db: Arc<RwLock<Option<Arc<Database>>>>,
    /// Not before this instant is a closed database tried to be reopened again.
    pub(crate) reopen_after: Cell<Option<Instant>>,
    /// A failed (for lack of space) or skipped checkpoint is not retried before this instant.
    pub(crate) retry_after: Option<Instant>,
    /// A checkpoint was skipped for lack of free space (and the warning given).
    pub(crate) short_of_space: bool,
    /// Free space a checkpoint leaves beyond twice its estimated size; `None`: no check.
    pub(crate) space_reserve: Option<u64>,
    pub(crate) accounts: IdMap<AccountId, Account>,
    /// Every account, in timestamp (creation) order: the sequence `account_index` indexes.
    pub(crate) accounts_by_time: Vec<(Timestamp, AccountId)>,
    pub(crate) account_index: FieldIndex,
    pub(crate) dirty_accounts: IdSet<AccountId>,
    pub(crate) expiries: BTreeSet<(Timestamp, TransferId)>,
    pub(crate) active: Memtable,
    pub(crate) frozen: Option<Arc<Frozen>>,
    /// The transfers' storage of the last memtable checkpointed, emptied, for the next one to
    /// take at the next freeze (see `StateStore::recycle_frozen`).
    pub(crate) spare_transfers: MemTransfers,
    pub(crate) flushing: Option<Flushing>,
    pub(crate) last_timestamp: Timestamp,
    pub(crate) applied_index: u64,
    pub(crate) applied_term: u64,
    pub(crate) checkpointed_index: u64,
    pub(crate) membership: Option<Vec<u8>>,
    /// The highest transfer id in the database (0 when it holds none). A new transfer's id is
    /// looked up before it is created; ids above this one are in no checkpoint, so that lookup
    /// skips redb for ids that grow, as time-based ids do.
    pub(crate) stored_max_transfer_id: u128,
    /// The highest failed transfer id in the database (0: none): the same shortcut for the
    /// `id_already_failed` lookup every new transfer makes.
    pub(crate) stored_max_failed_id: u128,
    pub(crate) tokens: BTreeMap<TokenId, TokenRecord>,
    pub(crate) admin_bootstrapped: bool,
    /// The tokens changed since the last freeze.
    pub(crate) tokens_dirty: bool,
    pub(crate) tokens_generation: u64,
    pub(crate) outbox: crate::outbox::Outbox,
    /// What the last batch was planned in, kept for the next ([`bulwark_ledger::BatchBuffers`]).
    pub(crate) batch_buffers: bulwark_ledger::BatchBuffers,
    /// The node's `--checkpoint-transfers`, from which two bounds follow (0, the default: neither
    /// applies). Checkpoints of at most [`CHECKPOINT_CATCH_UP_FACTOR`] times it run at background
    /// priority ([`CHECKPOINT_NICE`](bulwark_limits::CHECKPOINT_NICE)); a larger one is catching
    /// up and runs at the node's own. While a checkpoint runs, an active memtable of
    /// [`MEMTABLE_CAP_FACTOR`] times it is full ([`StateMachine::is_backlogged`]).
    pub(crate) checkpoint_transfers: usize,
}

impl StateStore {
    /// Opens (or creates) the state store at `path` and loads accounts and pending expiries.
    pub fn open(path: &Path) -> Result<StateStore, StoreError> {
        // Verify every page checksum at open: a file damaged outside redb must stop the node with
        // an error, not be trusted (a plain open may even panic on it).
        let db = Database::builder()
            .set_cache_size(STORE_CACHE_BYTES)
            .set_check_integrity_on_open(true)
            .create(path)
            .map_err(redb_err(path, "open"))?;
        create_tables(path, &db)?;
        let loaded = load(path, &db)?;
        let reader = open_reader(path, &db)?;
        tracing::info!(
            path = %path.display(),
            applied_index = loaded.applied_index,
            accounts = loaded.accounts.len(),
            "state store opened at checkpoint"
        );
        let db = Arc::new(db);
        let (accounts_by_time, account_index) = index_accounts(&loaded.accounts);
        Ok(StateStore {
            path: path.into(),
            shared_db: Arc::new(RwLock::new(Some(db.clone()))),
            disk: RefCell::new(Some(Disk {
                db,
                reader,
                generation: 1,
            })),
            generations: Cell::new(1),
            reopen_after: Cell::new(None),
            retry_after: None,
            short_of_space: false,
            space_reserve: Some(SPACE_RESERVE),
            accounts: loaded.accounts,
            accounts_by_time,
            account_index,
            dirty_accounts: IdSet::default(),
            expiries: loaded.expiries,
            active: Memtable::default(),
            frozen: None,
            spare_transfers: MemTransfers::default(),
            flushing: None,
            last_timestamp: loaded.last_timestamp,
            applied_index: loaded.applied_index,
            applied_term: loaded.applied_term,
            checkpointed_index: loaded.applied_index,
            membership: loaded.membership,
            stored_max_transfer_id: loaded.max_transfer_id,
            stored_max_failed_id: loaded.max_failed_id,
            tokens: loaded.tokens,
            admin_bootstrapped: loaded.admin_bootstrapped,
            tokens_dirty: false,
            tokens_generation: next_tokens_generation(),
            outbox: loaded.outbox,
            batch_buffers: bulwark_ledger::BatchBuffers::default(),
            checkpoint_transfers: 0,
        })
    }

    /// The memtable size checkpoints are made at, from which the checkpoints' priority and the
    /// memtable's cap follow (see `checkpoint_transfers`).
    pub fn set_checkpoint_transfers(&mut self, transfers: usize) {
        self.checkpoint_transfers = transfers;
    }

    pub fn checkpoint_transfers(&self) -> usize {
        self.checkpoint_transfers
    }

    /// Checkpoints of at most this many transfers yield the CPU to the node loop.
    pub(crate) fn background_checkpoints_up_to(&self) -> usize {
        self.checkpoint_transfers * CHECKPOINT_CATCH_UP_FACTOR
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
        self.write_membership(encoded)
    }

    /// Gives a restored state the configuration of the new cluster made on it, durably. Only
    /// on a store whose every applied entry is checkpointed (a restore's last step).
    pub fn replace_membership(&mut self, encoded: Vec<u8>) -> Result<(), StoreError> {
        assert!(
            !self.is_checkpointing() && self.applied_index == self.checkpointed_index,
            "a restored state is checkpointed before it gets its configuration"
        );
        self.write_membership(encoded)
    }

    fn write_membership(&mut self, encoded: Vec<u8>) -> Result<(), StoreError> {
        let db = self.db()?;
        let txn = db
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

    /// A handle that streams snapshots of the last checkpoint from any thread (it follows the
    /// store across reopens).
    pub fn snapshot_source(&self) -> snapshot::SnapshotSource {
        snapshot::SnapshotSource {
            db: self.shared_db.clone(),
        }
    }

    /// Sets the free space a checkpoint must leave beyond twice its estimated size (default
    /// [`SPACE_RESERVE`]); `None` turns the check off (tests that need a checkpoint to meet a full
    /// disk).
    pub fn set_space_reserve(&mut self, reserve: Option<u64>) {
        self.space_reserve = reserve;
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// The accounts in timestamp order and their field indexes.
fn index_accounts(
    accounts: &IdMap<AccountId, Account>,
) -> (Vec<(Timestamp, AccountId)>, FieldIndex) {
    let mut by_time: Vec<_> = accounts.values().map(|a| (a.timestamp, a.id)).collect();
    by_time.sort_unstable();
    let mut index = FieldIndex::default();
    index.extend_to(by_time.len(), usize::MAX, |p| {
        &accounts[&by_time[p as usize].1]
    });
    (by_time, index)
}

/// A process-wide counter, so that a store opened anew (an installed snapshot) never repeats a
/// generation an earlier store of this process gave out.
fn next_tokens_generation() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    NEXT.fetch_add(1 << 32, std::sync::atomic::Ordering::Relaxed)
}

/// Checks the format version (writing it into a new file, or over the one version it upgrades)
/// and creates every table a new or upgraded file lacks.
fn create_tables(path: &Path, db: &Database) -> Result<(), StoreError> {
    let txn = db.begin_write().map_err(redb_err(path, "begin write"))?;
    let version;
    {
        let mut meta = txn.open_table(META).map_err(redb_err(path, "open meta"))?;
        version = meta
            .get(META_FORMAT)
            .map_err(redb_err(path, "read meta"))?
            .map(|v| v.value());
        match version {
            None | Some(UPGRADED_FORMAT_VERSION) => {
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
        txn.open_table(TRANSFER_RUNS)
            .map_err(redb_err(path, "create tables"))?;
        txn.open_table(PENDING)
            .map_err(redb_err(path, "create tables"))?;
        txn.open_table(EXPIRIES)
            .map_err(redb_err(path, "create tables"))?;
        txn.open_table(FAILED_TRANSFERS)
            .map_err(redb_err(path, "create tables"))?;
        txn.open_table(FAILED_TRANSFERS_BY_TIME)
            .map_err(redb_err(path, "create tables"))?;
        txn.open_table(ACCOUNT_TRANSFERS)
            .map_err(redb_err(path, "create tables"))?;
        txn.open_table(BALANCE_HISTORY)
            .map_err(redb_err(path, "create tables"))?;
        txn.open_table(TRANSFER_INDEX)
            .map_err(redb_err(path, "create tables"))?;
        txn.open_table(CHANGES)
            .map_err(redb_err(path, "create tables"))?;
        txn.open_table(MEMBERSHIP)
            .map_err(redb_err(path, "create tables"))?;
        txn.open_table(TOKENS)
            .map_err(redb_err(path, "create tables"))?;
        txn.open_table(AUDIT)
            .map_err(redb_err(path, "create tables"))?;
        txn.open_table(OUTBOX)
            .map_err(redb_err(path, "create tables"))?;
    }
    if version == Some(UPGRADED_FORMAT_VERSION) {
        crate::upgrade::upgrade_from_format_4(path, &txn)?;
    }
    txn.commit().map_err(redb_err(path, "commit"))?;
    Ok(())
}

/// What a store holds in memory, as of its last checkpoint.
struct Loaded {
    applied_index: u64,
    applied_term: u64,
    last_timestamp: Timestamp,
    membership: Option<Vec<u8>>,
    accounts: IdMap<AccountId, Account>,
    expiries: BTreeSet<(Timestamp, TransferId)>,
    max_transfer_id: u128,
    max_failed_id: u128,
    tokens: BTreeMap<TokenId, TokenRecord>,
    admin_bootstrapped: bool,
    outbox: crate::outbox::Outbox,
}

fn load(path: &Path, db: &Database) -> Result<Loaded, StoreError> {
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
    let applied_term = meta_u64(META_APPLIED_TERM)?;
    let last_timestamp = Timestamp(meta_u64(META_LAST_TIMESTAMP)?);
    let membership = read
        .open_table(MEMBERSHIP)
        .map_err(redb_err(path, "open membership"))?
        .get(MEMBERSHIP_KEY)
        .map_err(redb_err(path, "read membership"))?
        .map(|v| v.value().to_vec());
    let (tokens, admin_bootstrapped) = crate::access::load_tokens(path, &read)?;
    let outbox = crate::outbox::load_outbox(path, &read)?;
    Ok(Loaded {
        outbox,
        tokens,
        admin_bootstrapped,
        applied_index,
        applied_term,
        last_timestamp,
        membership,
        accounts: load_accounts(path, &read)?,
        expiries: load_expiries(path, &read)?,
        max_transfer_id: load_max_key(path, &read, TRANSFERS)?.max(load_max_key(
            path,
            &read,
            TRANSFER_RUNS,
        )?),
        max_failed_id: load_max_key(path, &read, FAILED_TRANSFERS)?,
    })
}

/// The highest key of a table keyed by transfer id (0 when it is empty).
fn load_max_key<V: redb::Value + 'static>(
    path: &Path,
    read: &ReadTransaction,
    table: redb::TableDefinition<u128, V>,
) -> Result<u128, StoreError> {
    let table = read
        .open_table(table)
        .map_err(redb_err(path, "open table"))?;
    let last = table.last().map_err(redb_err(path, "read table"))?;
    Ok(last.map_or(0, |(key, _)| key.value()))
}

fn load_accounts(
    path: &Path,
    read: &ReadTransaction,
) -> Result<IdMap<AccountId, Account>, StoreError> {
    let mut accounts = IdMap::default();
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
    Ok(accounts)
}

fn load_expiries(
    path: &Path,
    read: &ReadTransaction,
) -> Result<BTreeSet<(Timestamp, TransferId)>, StoreError> {
    let mut expiries = BTreeSet::new();
    let table = read
        .open_table(EXPIRIES)
        .map_err(redb_err(path, "open expiries"))?;
    for row in table.iter().map_err(redb_err(path, "scan expiries"))? {
        let (key, _) = row.map_err(redb_err(path, "scan expiries"))?;
        let (at, id) = key.value();
        expiries.insert((Timestamp(at), TransferId(id)));
    }
    Ok(expiries)
}

impl StateMachine for StateStore {
    fn apply_batch(&mut self, index: u64, batch: &Batch) -> BatchResults {
        assert!(
            index > self.applied_index,
            "log index {index} applied after {}",
            self.applied_index
        );
        let results = bulwark_ledger::apply_at(self, batch, index);
        self.applied_index = index;
        results
    }

    fn apply_group(&mut self, index: u64, batches: &[Batch]) -> Vec<(BatchResults, Timestamp)> {
        assert!(
            index > self.applied_index,
            "log index {index} applied after {}",
            self.applied_index
        );
        let results = batches
            .iter()
            .map(|batch| {
                let results = bulwark_ledger::apply_at(self, batch, index);
                (results, self.last_timestamp)
            })
            .collect();
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

    fn applied_term(&self) -> u64 {
        self.applied_term
    }

    fn set_applied_term(&mut self, term: u64) {
        self.applied_term = term;
    }

    fn last_timestamp(&self) -> Timestamp {
        self.last_timestamp
    }

    fn next_expiry(&self) -> Option<Timestamp> {
        self.expiries.first().map(|(at, _)| *at)
    }

    fn membership(&self) -> Option<Vec<u8>> {
        self.membership.clone()
    }

    fn set_membership(&mut self, encoded: Vec<u8>) {
        self.membership = Some(encoded);
    }

    fn record_audit(&mut self, record: AuditRecord) {
        self.active.audit.push(record);
    }

    fn is_backlogged(&self) -> bool {
        let cap = self.checkpoint_transfers * MEMTABLE_CAP_FACTOR;
        cap > 0 && self.flushing.is_some() && self.active.transfers.len() >= cap
    }
}
