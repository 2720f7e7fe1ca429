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
//!
//! # A full disk
//!
//! A checkpoint is not started while the data directory's free space (statvfs) is below a margin
//! (twice the estimated size of what it would write, plus [`SPACE_RESERVE`]): the memtable stays in
//! memory and the log is kept, with a warning. If a checkpoint still fails for lack of space (the
//! disk filled while it ran), that is not fatal: the frozen memtable is kept (reads still see it),
//! the checkpointed index does not move (so the log behind it is not deleted), and the same frozen
//! memtable is written again later. redb answers every call after one real I/O error with
//! `PreviousIo`, reads included, until the `Database` is dropped and the file opened again: the
//! store then closes it and reopens it (a reopen may itself need space, to repair the file: it is
//! retried until it works, see [`StateStore::poll_checkpoint`]). A read that meets the failed handle
//! before that (a checkpoint fails while the loop reads) waits for the reopen: an answer without the
//! checkpointed data would be wrong. Any other checkpoint error stays fatal.

mod records;
pub mod snapshot;

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, RwLock};
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
    #[error("state store {path}: {what}: {source}")]
    Io {
        path: PathBuf,
        what: &'static str,
        source: std::io::Error,
    },
    /// The database is closed after an I/O failure (a full disk) until a reopen succeeds.
    #[error(
        "state store {path}: closed after an I/O failure (a full disk?) until it can be reopened"
    )]
    Unavailable { path: PathBuf },
}

/// Whether an I/O error says the device (or a quota) has no space left: `ENOSPC` or `EDQUOT`.
pub use bulwark_fs::is_disk_full as is_disk_full_io;

impl StoreError {
    /// True when the error is a full disk (or quota): a write of redb or of a file failed with
    /// `ENOSPC`/`EDQUOT`.
    pub fn is_disk_full(&self) -> bool {
        match self {
            StoreError::Redb { source, .. } => {
                matches!(source.as_ref(), redb::Error::Io(e) if is_disk_full_io(e))
            }
            StoreError::Io { source, .. } => is_disk_full_io(source),
            StoreError::Unavailable { .. } => true,
            _ => false,
        }
    }

    /// True when the error comes from a database handle that an I/O failure made unusable (every
    /// later call fails until it is reopened), or from the I/O itself.
    fn is_io_failure(&self) -> bool {
        match self {
            StoreError::Redb { source, .. } => matches!(
                source.as_ref(),
                redb::Error::Io(_) | redb::Error::PreviousIo | redb::Error::DatabaseClosed
            ),
            StoreError::Unavailable { .. } => true,
            _ => false,
        }
    }
}

/// Free space kept on the data directory's file system beyond twice a checkpoint's estimated size:
/// below it, checkpoints wait (the log keeps everything), so that a checkpoint rarely meets a full
/// disk halfway.
pub const SPACE_RESERVE: u64 = 16 << 20;
/// After a checkpoint failed for lack of space, or was skipped for it, wait this long before the
/// next attempt (or check of the free space).
const SPACE_RETRY: Duration = Duration::from_secs(1);
/// How often a closed database is tried to be reopened.
const REOPEN_RETRY: Duration = Duration::from_millis(250);

/// Bytes the file system holding `dir` has free for an unprivileged writer, if statvfs answers.
pub fn free_space(dir: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    // SAFETY: statvfs(3) writes into the zeroed struct we pass and reads the NUL-terminated path.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
    if rc != 0 {
        return None;
    }
    Some((st.f_bavail as u64).saturating_mul(st.f_frsize as u64))
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

/// The open database and read handles on its last committed checkpoint.
struct Disk {
    db: Arc<Database>,
    reader: Reader,
    /// Which opening of the file this is (bumped at every reopen).
    generation: u64,
}

/// A checkpoint running on the background thread.
struct Flushing {
    rx: mpsc::Receiver<FlushOutcome>,
    /// The generation of the database handle it writes through.
    generation: u64,
}

pub struct StateStore {
    path: PathBuf,
    /// `None` while the database is closed after an I/O failure, until a reopen succeeds. A
    /// `RefCell` because a read (`&self`) that meets a failed handle must close and reopen it.
    disk: RefCell<Option<Disk>>,
    generations: Cell<u64>,
    /// The database as snapshot sources find it (`None` while closed).
    shared_db: Arc<RwLock<Option<Arc<Database>>>>,
    /// Not before this instant is a closed database tried to be reopened again.
    reopen_after: Cell<Option<Instant>>,
    /// A failed (for lack of space) or skipped checkpoint is not retried before this instant.
    retry_after: Option<Instant>,
    /// A checkpoint was skipped for lack of free space (and the warning given).
    short_of_space: bool,
    /// Free space a checkpoint leaves beyond twice its estimated size; `None`: no check.
    space_reserve: Option<u64>,
    accounts: HashMap<AccountId, Account>,
    dirty_accounts: HashSet<AccountId>,
    expiries: BTreeSet<(Timestamp, TransferId)>,
    active: Memtable,
    frozen: Option<Arc<Frozen>>,
    flushing: Option<Flushing>,
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
        let db = Arc::new(db);
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

    /// The open database, or [`StoreError::Unavailable`] while it is closed.
    fn db(&self) -> Result<Arc<Database>, StoreError> {
        self.disk
            .borrow()
            .as_ref()
            .map(|d| d.db.clone())
            .ok_or_else(|| StoreError::Unavailable {
                path: self.path.clone(),
            })
    }

    /// Sets the free space a checkpoint must leave beyond twice its estimated size (default
    /// [`SPACE_RESERVE`]); `None` turns the check off (tests that need a checkpoint to meet a full
    /// disk).
    pub fn set_space_reserve(&mut self, reserve: Option<u64>) {
        self.space_reserve = reserve;
    }

    /// True while the database is closed after an I/O failure (a full disk) and not yet reopened:
    /// reads of checkpointed data would have to wait for the reopen, and no checkpoint starts.
    pub fn is_unavailable(&self) -> bool {
        self.disk.borrow().is_none()
    }

    /// Closes the database (drops every handle of ours; snapshot sources see none).
    fn close_db(&self) {
        *self.shared_db.write().expect("shared db lock") = None;
        self.disk.borrow_mut().take();
    }

    /// Opens the closed database again. It fails while another handle is still alive (a running
    /// checkpoint, a snapshot being sent) or while the file cannot be repaired (no space).
    fn reopen(&self) -> Result<(), StoreError> {
        debug_assert!(self.disk.borrow().is_none());
        // No full integrity check here: this process wrote the file; redb still repairs it if the
        // failed commit left it needing that.
        let db = Database::builder()
            .set_cache_size(CACHE_BYTES)
            .open(&self.path)
            .map_err(redb_err(&self.path, "reopen"))?;
        let reader = open_reader(&self.path, &db)?;
        let db = Arc::new(db);
        let generation = self.generations.get() + 1;
        self.generations.set(generation);
        *self.shared_db.write().expect("shared db lock") = Some(db.clone());
        *self.disk.borrow_mut() = Some(Disk {
            db,
            reader,
            generation,
        });
        self.reopen_after.set(None);
        tracing::info!(path = %self.path.display(), "state store reopened after an I/O failure");
        Ok(())
    }

    /// Tries to reopen a closed database, at most every [`REOPEN_RETRY`]. True if it is open.
    fn try_reopen(&self) -> bool {
        if self.disk.borrow().is_some() {
            return true;
        }
        let now = Instant::now();
        if self.reopen_after.get().is_some_and(|t| now < t) {
            return false;
        }
        match self.reopen() {
            Ok(()) => true,
            Err(e) => {
                if self.reopen_after.get().is_none() {
                    tracing::warn!(
                        path = %self.path.display(),
                        error = %e,
                        "cannot reopen the state store yet; retrying"
                    );
                }
                self.reopen_after.set(Some(now + REOPEN_RETRY));
                false
            }
        }
    }

    /// Runs `read` on the read handles of the last checkpoint. If the database is closed or its
    /// handle failed (after an I/O error redb fails every later call), waits until it is reopened
    /// and reads again: the caller (applying a batch) cannot go on without the answer. Other
    /// errors go back to the caller.
    fn read_waiting<R>(
        &self,
        read: impl Fn(&Reader) -> Result<R, StoreError>,
    ) -> Result<R, StoreError> {
        let mut waited = false;
        loop {
            let result = self.disk.borrow().as_ref().map(|d| read(&d.reader));
            match result {
                Some(Ok(value)) => {
                    if waited {
                        tracing::info!(path = %self.path.display(), "state store readable again");
                    }
                    return Ok(value);
                }
                Some(Err(e)) if !e.is_io_failure() => return Err(e),
                Some(Err(e)) => {
                    tracing::warn!(
                        path = %self.path.display(),
                        error = %e,
                        "a read met a failed state store handle; closing it to reopen"
                    );
                    self.close_db();
                }
                None => {}
            }
            if !waited {
                tracing::warn!(
                    path = %self.path.display(),
                    "a read waits for the state store to be reopened"
                );
                waited = true;
            }
            if !self.try_reopen() {
                std::thread::sleep(Duration::from_millis(50));
            }
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
    /// if a checkpoint is already running or there is nothing new to write, or while the disk is
    /// short of space (see the crate documentation). A frozen memtable whose checkpoint failed for
    /// lack of space is written again first, before a new one is frozen.
    pub fn start_checkpoint(&mut self) -> bool {
        if self.flushing.is_some() || !self.try_reopen() {
            return false;
        }
        if self.frozen.is_none() && self.applied_index == self.checkpointed_index {
            return false;
        }
        let now = Instant::now();
        if self.retry_after.is_some_and(|t| now < t) {
            return false;
        }
        let estimate = match &self.frozen {
            Some(frozen) => estimate_bytes(&frozen.memtable, frozen.accounts.len()),
            None => estimate_bytes(&self.active, self.dirty_accounts.len()),
        };
        let dir = self.path.parent().unwrap_or(Path::new("."));
        let needed = self.space_reserve.map(|reserve| 2 * estimate + reserve);
        match needed.and_then(|needed| Some((needed, free_space(dir)?))) {
            Some((needed, free)) if free < needed => {
                if !self.short_of_space {
                    tracing::warn!(
                        dir = %dir.display(),
                        free_bytes = free,
                        needed_bytes = needed,
                        "too little free space for a checkpoint: not starting one; the memtable \
                         stays in memory and the log is kept until space is freed"
                    );
                    self.short_of_space = true;
                }
                self.retry_after = Some(now + SPACE_RETRY);
                return false;
            }
            _ => {
                if self.short_of_space {
                    tracing::info!(dir = %dir.display(), "enough free space for checkpoints again");
                    self.short_of_space = false;
                }
            }
        }
        let frozen = match &self.frozen {
            Some(frozen) => frozen.clone(),
            None => {
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
                frozen
            }
        };
        let (db, generation) = {
            let disk = self.disk.borrow();
            let disk = disk.as_ref().expect("reopened above");
            (disk.db.clone(), disk.generation)
        };
        let (tx, rx) = mpsc::channel();
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
        self.flushing = Some(Flushing { rx, generation });
        true
    }

    /// Collects a finished background checkpoint, if any. A checkpoint that failed for lack of
    /// space is not an error (see the crate documentation): it answers `Ok(None)`, keeps the
    /// frozen memtable for a later attempt, and closes the database to reopen it (retried here,
    /// at every call, until it works). Any other error is fatal for the node: the state on disk is
    /// then not what the log says, and it must stop rather than go on.
    pub fn poll_checkpoint(&mut self) -> Result<Option<Checkpointed>, StoreError> {
        let Some(flushing) = &self.flushing else {
            self.try_reopen();
            return Ok(None);
        };
        match flushing.rx.try_recv() {
            Ok(outcome) => self.finish_checkpoint(outcome),
            Err(mpsc::TryRecvError::Empty) => Ok(None),
            Err(mpsc::TryRecvError::Disconnected) => Err(StoreError::CheckpointThread {
                path: self.path.clone(),
            }),
        }
    }

    /// Waits for a running checkpoint to finish.
    pub fn wait_checkpoint(&mut self) -> Result<Option<Checkpointed>, StoreError> {
        let Some(flushing) = &self.flushing else {
            return Ok(None);
        };
        match flushing.rx.recv() {
            Ok(outcome) => self.finish_checkpoint(outcome),
            Err(_) => Err(StoreError::CheckpointThread {
                path: self.path.clone(),
            }),
        }
    }

    /// Writes everything applied so far as a checkpoint and waits for it (shutdown, tests).
    /// Answers `Ok(None)` if there was nothing to write or no checkpoint could be written for lack
    /// of space (the log still holds everything).
    pub fn checkpoint_now(&mut self) -> Result<Option<Checkpointed>, StoreError> {
        let mut last = self.wait_checkpoint()?;
        // A frozen memtable left by a failed checkpoint goes first, then the active one.
        for _ in 0..2 {
            self.retry_after = None;
            if !self.start_checkpoint() {
                break;
            }
            match self.wait_checkpoint()? {
                Some(done) => last = Some(done),
                None => return Ok(None),
            }
        }
        Ok(last)
    }

    fn finish_checkpoint(
        &mut self,
        outcome: FlushOutcome,
    ) -> Result<Option<Checkpointed>, StoreError> {
        let flushing = self.flushing.take().expect("a checkpoint was running");
        let done = match outcome {
            Ok(done) => done,
            Err(e) if e.is_disk_full() => {
                let frozen = self
                    .frozen
                    .as_ref()
                    .expect("a checkpoint writes a frozen memtable");
                tracing::warn!(
                    path = %self.path.display(),
                    error = %e,
                    applied_index = frozen.applied_index,
                    transfers = frozen.memtable.transfers.len(),
                    "a checkpoint failed for lack of space: its memtable stays in memory and the \
                     log is kept; it will be written again once space is freed"
                );
                self.retry_after = Some(Instant::now() + SPACE_RETRY);
                // redb fails every later call on the handle that met the error: reopen it (unless
                // a read already did).
                let current = self.disk.borrow().as_ref().map(|d| d.generation);
                if current == Some(flushing.generation) {
                    self.close_db();
                }
                self.try_reopen();
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        // New readers first, then drop the frozen memtable: no read may fall in between. The
        // database is open: only a failed checkpoint (handled above) or a read that then waits for
        // the reopen closes it.
        {
            let mut disk = self.disk.borrow_mut();
            let disk = disk
                .as_mut()
                .expect("the database is open after a checkpoint");
            disk.reader = open_reader(&self.path, &disk.db)?;
        }
        self.frozen = None;
        self.retry_after = None;
        self.checkpointed_index = done.applied_index;
        Ok(Some(done))
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
            if self.is_unavailable() {
                return Err(StoreError::Unavailable {
                    path: self.path.clone(),
                });
            }
            ids = self.read_waiting(|reader| {
                let mut ids = Vec::new();
                for row in reader
                    .account_transfers
                    .range(start..=end)
                    .map_err(redb_err(&self.path, "scan account transfers"))?
                {
                    if ids.len() >= limit {
                        break;
                    }
                    let (key, value) =
                        row.map_err(redb_err(&self.path, "scan account transfers"))?;
                    let run =
                        records::decode_run(value.value()).ok_or_else(|| StoreError::Corrupt {
                            path: self.path.clone(),
                            table: "account_transfers",
                            key: format!("{:?}", key.value()),
                        })?;
                    let room = limit - ids.len();
                    ids.extend(run.filter(|(ts, _)| *ts > after).take(room));
                }
                Ok(ids)
            })?;
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

/// A rough upper bound of the bytes a checkpoint of `memtable` (and `accounts` changed accounts)
/// adds to the file: records, keys, index runs and B-tree overhead.
fn estimate_bytes(memtable: &Memtable, accounts: usize) -> u64 {
    let transfers = memtable.transfers.len() as u64 * 256;
    let index = memtable
        .account_transfers
        .values()
        .map(|v| 64 + v.len() as u64 * 24)
        .sum::<u64>();
    let history = memtable.balance_history.len() as u64 * 80;
    let pending = memtable.pending.len() as u64 * 32;
    let expiries = memtable.expiry_changes.len() as u64 * 32;
    let accounts = accounts as u64 * 128;
    (1 << 20) + transfers + index + history + pending + expiries + accounts
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
        let read = self.read_waiting(|reader| {
            let Some(value) = reader
                .transfers
                .get(id.0)
                .map_err(redb_err(&self.path, "read transfer"))?
            else {
                return Ok(None);
            };
            records::decode_transfer(value.value())
                .map(Some)
                .ok_or_else(|| StoreError::Corrupt {
                    path: self.path.clone(),
                    table: "transfers",
                    key: id.to_string(),
                })
        });
        read.unwrap_or_else(|e| panic!("read transfer {id}: {e}"))
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
