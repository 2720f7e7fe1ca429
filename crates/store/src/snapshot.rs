//! Snapshots of the state store: a consistent, checksummed stream of every table's rows, read
//! from a redb read transaction (so the leader keeps writing while it streams), and its import
//! into a fresh store file that replaces the old one crash-safely.
//!
//! ```text
//! stream = header frame, row frame*, trailer frame
//! frame  = len u32 LE | crc32c u32 LE (over body) | body
//! header = "BWSNAP" | version u16
//! row    = table u8 | key_len u32 | key | value_len u32 | value
//!          (tables: 0 meta, 1 accounts, 2 transfers, 3 pending_status, 4 pending_expiries,
//!           5 account_transfers, 6 balance_history, 7 membership, 8 tokens, 9 audit,
//!           10 failed_transfers, 11 failed_transfers_by_time, 12 transfer_index, 13 changes;
//!           keys and values in redb's own encoding)
//! trailer= 0xFF | rows u64 | applied_index u64
//! ```

use std::io::{Read, Write};
use std::path::Path;
use std::sync::{Arc, RwLock};

use bulwark_limits::{ACCOUNT_TRANSFERS_RUN, MAX_SNAPSHOT_FRAME, TRANSFER_INDEX_RUN, TRANSFER_RUN};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, TableHandle};

use crate::index_runs::MAX_PAIR_BYTES;
use crate::StoreError;

const MAGIC: &[u8; 6] = b"BWSNAP";
const VERSION: u16 = 1;
const TRAILER: u8 = 0xFF;

// The largest row, a full run of the account or transfer index (`(timestamp u64, transfer id
// u128)` pairs) with its table tag and key, fits one frame.
const _: () = assert!(1 + 64 + ACCOUNT_TRANSFERS_RUN * MAX_PAIR_BYTES + 64 <= MAX_SNAPSHOT_FRAME);
const _: () = assert!(1 + 64 + TRANSFER_INDEX_RUN * MAX_PAIR_BYTES + 64 <= MAX_SNAPSHOT_FRAME);
const _: () = assert!(
    1 + 64 + 2 + TRANSFER_RUN * (4 + crate::records::TRANSFER_MAX_BYTES) + 64 <= MAX_SNAPSHOT_FRAME
);

/// Runs `$body` with `$def` bound to the table a snapshot's tag names (the one mapping of tags to
/// tables: export, import and key order all go through it); `$other` for an unknown tag.
macro_rules! with_table {
    ($tag:expr, $def:ident => $body:expr, $other:expr) => {
        match $tag {
            0 => {
                let $def = crate::tables::META;
                $body
            }
            1 => {
                let $def = crate::tables::ACCOUNTS;
                $body
            }
            2 => {
                let $def = crate::tables::TRANSFERS;
                $body
            }
            3 => {
                let $def = crate::tables::PENDING;
                $body
            }
            4 => {
                let $def = crate::tables::EXPIRIES;
                $body
            }
            5 => {
                let $def = crate::tables::ACCOUNT_TRANSFERS;
                $body
            }
            6 => {
                let $def = crate::tables::BALANCE_HISTORY;
                $body
            }
            7 => {
                let $def = crate::tables::MEMBERSHIP;
                $body
            }
            8 => {
                let $def = crate::tables::TOKENS;
                $body
            }
            9 => {
                let $def = crate::tables::AUDIT;
                $body
            }
            10 => {
                let $def = crate::tables::FAILED_TRANSFERS;
                $body
            }
            11 => {
                let $def = crate::tables::FAILED_TRANSFERS_BY_TIME;
                $body
            }
            12 => {
                let $def = crate::tables::TRANSFER_INDEX;
                $body
            }
            13 => {
                let $def = crate::tables::CHANGES;
                $body
            }
            14 => {
                let $def = crate::tables::OUTBOX;
                $body
            }
            15 => {
                let $def = crate::tables::TRANSFER_RUNS;
                $body
            }
            _ => $other,
        }
    };
}

/// The highest table tag.
const LAST_TAG: u8 = 15;

/// What a snapshot holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SnapshotInfo {
    pub applied_index: u64,
    pub rows: u64,
}

/// Why a snapshot stream is not one this build can import.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("empty stream")]
    EmptyStream,
    #[error("not a Bulwark snapshot")]
    NotASnapshot,
    #[error("snapshot version {found}, this build reads {VERSION}")]
    Version { found: u16 },
    #[error("read {what}: {source}")]
    Read {
        what: &'static str,
        source: std::io::Error,
    },
    #[error("snapshot frame of {len} bytes is larger than {MAX_SNAPSHOT_FRAME}")]
    FrameTooLarge { len: usize },
    #[error("snapshot frame checksum mismatch")]
    FrameChecksum,
    #[error("bad row frame")]
    BadRow,
    #[error("unknown table tag {tag}")]
    UnknownTable { tag: u8 },
    #[error("a row of {table} has the wrong width")]
    WrongWidth { table: String },
    #[error("bad trailer")]
    BadTrailer,
    #[error("trailer says {trailer} rows, {arrived} arrived")]
    RowCount { trailer: u64, arrived: u64 },
    #[error("the stream ended before its trailer")]
    NoTrailer,
}

/// Why exporting a snapshot failed.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("the state store's lock is poisoned")]
    Poisoned,
    #[error("the state store is closed after an I/O failure (a full disk?); retry later")]
    Closed,
    #[error("{0}")]
    BeginRead(redb::TransactionError),
    #[error("{0}")]
    OpenTable(redb::TableError),
    #[error("{0}")]
    ReadTable(redb::StorageError),
    #[error("write snapshot: {0}")]
    Write(std::io::Error),
    #[error("{0}")]
    Flush(std::io::Error),
}

/// A handle on the store's database that can stream snapshots from another thread. It follows
/// the store when it reopens its file (after an I/O failure); while the file is closed, exports
/// fail.
#[derive(Clone)]
pub struct SnapshotSource {
    pub(crate) db: Arc<RwLock<Option<Arc<Database>>>>,
}

impl SnapshotSource {
    /// Writes a consistent snapshot of the last checkpoint to `out`.
    pub fn export(&self, out: &mut impl Write) -> Result<SnapshotInfo, ExportError> {
        let db = self
            .db
            .read()
            .map_err(|_| ExportError::Poisoned)?
            .clone()
            .ok_or(ExportError::Closed)?;
        let read = db.begin_read().map_err(ExportError::BeginRead)?;
        let mut header = Vec::with_capacity(8);
        header.extend_from_slice(MAGIC);
        header.extend_from_slice(&VERSION.to_le_bytes());
        write_frame(out, &header)?;
        let mut rows = 0u64;
        let mut applied_index = 0u64;
        let mut body = Vec::with_capacity(1 << 16);
        let mut sink = |tag: u8, key: &[u8], value: &[u8]| -> Result<(), ExportError> {
            if tag == 0 && key == crate::tables::META_APPLIED_INDEX.as_bytes() {
                applied_index = u64::from_le_bytes(value.try_into().unwrap_or([0; 8]));
            }
            encode_row(&mut body, tag, key, value);
            rows += 1;
            write_frame(out, &body)
        };
        for tag in 0..=LAST_TAG {
            with_table!(tag, def => export_table(&read, def, tag, &mut sink)?, unreachable!("tags up to LAST_TAG"));
        }
        let mut body = Vec::new();
        body.clear();
        body.push(TRAILER);
        body.extend_from_slice(&rows.to_le_bytes());
        body.extend_from_slice(&applied_index.to_le_bytes());
        write_frame(out, &body)?;
        out.flush().map_err(ExportError::Flush)?;
        Ok(SnapshotInfo {
            applied_index,
            rows,
        })
    }
}

/// Streams one table's rows as raw bytes, in the table's own key order.
fn export_table<K: redb::Key + 'static, V: redb::Value + 'static>(
    read: &redb::ReadTransaction,
    definition: TableDefinition<K, V>,
    tag: u8,
    sink: &mut impl FnMut(u8, &[u8], &[u8]) -> Result<(), ExportError>,
) -> Result<(), ExportError> {
    let table = match read.open_table(definition) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(()),
        Err(e) => return Err(ExportError::OpenTable(e)),
    };
    for row in table.iter().map_err(ExportError::ReadTable)? {
        let (key, value) = row.map_err(ExportError::ReadTable)?;
        let key = key.value();
        let value = value.value();
        sink(
            tag,
            K::as_bytes(&key).as_ref(),
            V::as_bytes(&value).as_ref(),
        )?;
    }
    Ok(())
}

enum RowError {
    /// The row does not fit its table.
    Invalid(SnapshotError),
    Redb(redb::Error),
}

/// Inserts one row given as raw bytes into its typed table.
fn import_row<K: redb::Key + 'static, V: redb::Value + 'static>(
    txn: &redb::WriteTransaction,
    definition: TableDefinition<K, V>,
    key: &[u8],
    value: &[u8],
) -> Result<(), RowError> {
    if K::fixed_width().is_some_and(|w| w != key.len())
        || V::fixed_width().is_some_and(|w| w != value.len())
    {
        return Err(RowError::Invalid(SnapshotError::WrongWidth {
            table: definition.name().to_string(),
        }));
    }
    let mut table = txn
        .open_table(definition)
        .map_err(|e| RowError::Redb(e.into()))?;
    table
        .insert(K::from_bytes(key), V::from_bytes(value))
        .map_err(|e| RowError::Redb(e.into()))?;
    Ok(())
}

/// Imports a snapshot stream into a new store file at `path` (replacing what is there only
/// once the whole stream has arrived and checked out): written to `<path>.incoming`, committed
/// (fsynced), renamed over `path`, and the directory fsynced. On failure the incoming file is
/// removed (it may be large, and the failure may be a full disk); a full disk is recognisable
/// with [`StoreError::is_disk_full`].
pub fn import(path: &Path, input: &mut impl Read) -> Result<SnapshotInfo, StoreError> {
    let incoming = incoming_path(path);
    let info = import_beside(path, &incoming, input)?;
    swap_in(&incoming, path)?;
    Ok(info)
}

/// Where [`import`] builds the new database before it replaces `path`.
pub fn incoming_path(path: &Path) -> std::path::PathBuf {
    path.with_extension("redb.incoming")
}

/// The first half of [`import`]: the stream into `incoming`, committed durably; `path` is not
/// touched (the caller records its intent before [`swap_in`]).
pub fn import_beside(
    path: &Path,
    incoming: &Path,
    input: &mut impl Read,
) -> Result<SnapshotInfo, StoreError> {
    let _ = std::fs::remove_file(incoming);
    let result = import_into(path, incoming, input);
    if result.is_err() {
        let _ = std::fs::remove_file(incoming);
    }
    result
}

fn import_into(
    path: &Path,
    incoming: &Path,
    input: &mut impl Read,
) -> Result<SnapshotInfo, StoreError> {
    let fail = |reason: SnapshotError| StoreError::Snapshot {
        path: path.to_path_buf(),
        reason,
    };
    let redb_fail = |what: &'static str| {
        move |e: redb::Error| StoreError::Redb {
            path: incoming.to_path_buf(),
            what,
            source: Box::new(e),
        }
    };
    let db = Database::create(incoming)
        .map_err(redb::Error::from)
        .map_err(redb_fail("create"))?;
    read_header(input).map_err(fail)?;
    let mut rows = 0u64;
    let mut info = None;
    let mut txn = db
        .begin_write()
        .map_err(redb::Error::from)
        .map_err(redb_fail("begin write"))?;
    let mut in_txn = 0usize;
    loop {
        let Some(body) = read_frame(input).map_err(fail)? else {
            break;
        };
        if body.first() == Some(&TRAILER) {
            info = Some(parse_trailer(&body, rows).map_err(fail)?);
            break;
        }
        import_frame(&txn, &body).map_err(|e| match e {
            RowError::Invalid(reason) => fail(reason),
            RowError::Redb(e) => redb_fail("import row")(e),
        })?;
        rows += 1;
        in_txn += 1;
        // Bounded transactions keep the importer's memory flat for any size of state.
        if in_txn >= 100_000 {
            // Commit before beginning the next: redb has one write transaction at a time, and
            // a second `begin_write` waits for the first forever.
            txn.commit()
                .map_err(redb::Error::from)
                .map_err(redb_fail("commit"))?;
            txn = db
                .begin_write()
                .map_err(redb::Error::from)
                .map_err(redb_fail("begin write"))?;
            in_txn = 0;
        }
    }
    let info = info.ok_or_else(|| fail(SnapshotError::NoTrailer))?;
    txn.commit()
        .map_err(redb::Error::from)
        .map_err(redb_fail("commit"))?;
    drop(db);
    Ok(info)
}

/// The stream's first frame: magic and a version this build reads.
fn read_header(input: &mut impl Read) -> Result<(), SnapshotError> {
    let header = read_frame(input)?.ok_or(SnapshotError::EmptyStream)?;
    if header.len() != 8 || &header[..6] != MAGIC {
        return Err(SnapshotError::NotASnapshot);
    }
    let found = u16::from_le_bytes([header[6], header[7]]);
    if found != VERSION {
        return Err(SnapshotError::Version { found });
    }
    Ok(())
}

/// The trailer frame: the row count (which must be the `rows` that arrived) and applied index.
fn parse_trailer(body: &[u8], rows: u64) -> Result<SnapshotInfo, SnapshotError> {
    if body.len() != 17 {
        return Err(SnapshotError::BadTrailer);
    }
    let count = u64::from_le_bytes(body[1..9].try_into().expect("8 bytes"));
    let applied_index = u64::from_le_bytes(body[9..17].try_into().expect("8 bytes"));
    if count != rows {
        return Err(SnapshotError::RowCount {
            trailer: count,
            arrived: rows,
        });
    }
    Ok(SnapshotInfo {
        applied_index,
        rows,
    })
}

/// One row frame into the table its tag names.
fn import_frame(txn: &redb::WriteTransaction, body: &[u8]) -> Result<(), RowError> {
    let (tag, key, value) = parse_row(body).ok_or(RowError::Invalid(SnapshotError::BadRow))?;
    with_table!(
        tag,
        def => import_row(txn, def, key, value),
        Err(RowError::Invalid(SnapshotError::UnknownTable { tag }))
    )
}

/// What a whole snapshot stream holds, checked frame by frame without importing it: what a
/// backup's manifest records and its verification compares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SnapshotSummary {
    pub applied_index: u64,
    pub applied_term: u64,
    /// The ledger's time at the snapshot's index (0: an empty ledger).
    pub last_timestamp: u64,
    pub rows: u64,
    pub bytes: u64,
    /// CRC32C of the whole stream.
    pub crc32c: u32,
}

/// Reads a snapshot stream to its end, checking every frame's checksum, that each row names a
/// table, and the trailer's count, without writing anything.
pub fn inspect(input: &mut impl Read) -> Result<SnapshotSummary, SnapshotError> {
    let mut counted = ChecksumReader::new(input);
    let mut figures = MetaFigures::default();
    let mut reader = RowReader::new(&mut counted)?;
    for row in &mut reader {
        figures.note(&row?);
    }
    let info = reader.finished().expect("the rows end at the trailer");
    let mut rest = [0u8; 1];
    let more = counted
        .read(&mut rest)
        .map_err(|source| SnapshotError::Read {
            what: "snapshot",
            source,
        })?;
    if more != 0 {
        return Err(SnapshotError::BadTrailer);
    }
    Ok(SnapshotSummary {
        applied_index: info.applied_index,
        applied_term: figures.applied_term,
        last_timestamp: figures.last_timestamp,
        rows: info.rows,
        bytes: counted.bytes,
        crc32c: counted.crc,
    })
}

/// What a state's `meta` rows say, noted as its rows go by.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MetaFigures {
    pub applied_term: u64,
    /// The ledger's time (0: an empty ledger).
    pub last_timestamp: u64,
}

impl MetaFigures {
    pub fn note(&mut self, row: &Row) {
        if row.tag != 0 {
            return;
        }
        let Ok(value) = <[u8; 8]>::try_from(row.value.as_slice()) else {
            return;
        };
        let value = u64::from_le_bytes(value);
        if row.key == crate::tables::META_LAST_TIMESTAMP.as_bytes() {
            self.last_timestamp = value;
        } else if row.key == crate::tables::META_APPLIED_TERM.as_bytes() {
            self.applied_term = value;
        }
    }
}

/// A reader that counts and checksums (CRC32C) what passes through it.
pub struct ChecksumReader<R> {
    inner: R,
    pub bytes: u64,
    pub crc: u32,
}

impl<R> ChecksumReader<R> {
    pub fn new(inner: R) -> ChecksumReader<R> {
        ChecksumReader {
            inner,
            bytes: 0,
            crc: 0,
        }
    }
}

impl<R: Read> Read for ChecksumReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.bytes += n as u64;
        self.crc = crc32c::crc32c_append(self.crc, &buf[..n]);
        Ok(n)
    }
}

/// One row of a snapshot stream: its table's tag, and key and value in redb's encoding.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Row {
    pub tag: u8,
    pub key: Vec<u8>,
    pub value: Vec<u8>,
}

/// How two rows are ordered in a snapshot stream: by table tag, then by the table's own key
/// order (redb's, which is not the bytes' order for integers).
pub fn row_order(a: (u8, &[u8]), b: (u8, &[u8])) -> std::cmp::Ordering {
    a.0.cmp(&b.0)
        .then_with(|| with_table!(a.0, def => key_order(def, a.1, b.1), a.1.cmp(b.1)))
}

fn key_order<K: redb::Key + 'static, V: redb::Value + 'static>(
    _: TableDefinition<K, V>,
    a: &[u8],
    b: &[u8],
) -> std::cmp::Ordering {
    K::compare(a, b)
}

/// A snapshot stream read a row at a time, every frame checked; the trailer's figures once the
/// rows are done ([`RowReader::finished`]).
pub struct RowReader<R> {
    input: R,
    rows: u64,
    finished: Option<SnapshotInfo>,
    failed: bool,
}

impl<R: Read> RowReader<R> {
    /// Reads the header: a stream this build reads.
    pub fn new(mut input: R) -> Result<RowReader<R>, SnapshotError> {
        read_header(&mut input)?;
        Ok(RowReader {
            input,
            rows: 0,
            finished: None,
            failed: false,
        })
    }

    /// The trailer, once every row was read.
    pub fn finished(&self) -> Option<SnapshotInfo> {
        self.finished
    }
}

impl<R: Read> Iterator for RowReader<R> {
    type Item = Result<Row, SnapshotError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.finished.is_some() || self.failed {
            return None;
        }
        let result = (|| {
            let body = read_frame(&mut self.input)?.ok_or(SnapshotError::NoTrailer)?;
            if body.first() == Some(&TRAILER) {
                self.finished = Some(parse_trailer(&body, self.rows)?);
                return Ok(None);
            }
            let (tag, key, value) = parse_row(&body).ok_or(SnapshotError::BadRow)?;
            if tag > LAST_TAG {
                return Err(SnapshotError::UnknownTable { tag });
            }
            self.rows += 1;
            Ok(Some(Row {
                tag,
                key: key.to_vec(),
                value: value.to_vec(),
            }))
        })();
        match result {
            Ok(row) => row.map(Ok),
            Err(e) => {
                self.failed = true;
                Some(Err(e))
            }
        }
    }
}

/// Writes a snapshot stream from rows given in stream order: what a restore from an
/// incremental backup imports (its rows merged from a chain of backups).
pub struct RowWriter<W> {
    out: W,
    rows: u64,
    body: Vec<u8>,
}

impl<W: Write> RowWriter<W> {
    pub fn new(mut out: W) -> Result<RowWriter<W>, ExportError> {
        let mut header = Vec::with_capacity(8);
        header.extend_from_slice(MAGIC);
        header.extend_from_slice(&VERSION.to_le_bytes());
        write_frame(&mut out, &header)?;
        Ok(RowWriter {
            out,
            rows: 0,
            body: Vec::new(),
        })
    }

    pub fn row(&mut self, tag: u8, key: &[u8], value: &[u8]) -> Result<(), ExportError> {
        encode_row(&mut self.body, tag, key, value);
        self.rows += 1;
        write_frame(&mut self.out, &self.body)
    }

    /// The trailer, naming the state's applied index; answers the writer.
    pub fn finish(mut self, applied_index: u64) -> Result<W, ExportError> {
        self.body.clear();
        self.body.push(TRAILER);
        self.body.extend_from_slice(&self.rows.to_le_bytes());
        self.body.extend_from_slice(&applied_index.to_le_bytes());
        write_frame(&mut self.out, &self.body)?;
        self.out.flush().map_err(ExportError::Flush)?;
        Ok(self.out)
    }
}

fn encode_row(body: &mut Vec<u8>, tag: u8, key: &[u8], value: &[u8]) {
    body.clear();
    body.push(tag);
    body.extend_from_slice(&(key.len() as u32).to_le_bytes());
    body.extend_from_slice(key);
    body.extend_from_slice(&(value.len() as u32).to_le_bytes());
    body.extend_from_slice(value);
}

/// The second half of [`import`]: `incoming` replaces `path`, durably (rename, fsync-dir).
pub fn swap_in(incoming: &Path, path: &Path) -> Result<(), StoreError> {
    bulwark_fs::rename_durably(incoming, path).map_err(|e| StoreError::Io {
        path: e.path,
        what: e.op,
        source: e.source,
    })
}

fn parse_row(body: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let tag = *body.first()?;
    let key_len = u32::from_le_bytes(body.get(1..5)?.try_into().ok()?) as usize;
    let key = body.get(5..5 + key_len)?;
    let at = 5 + key_len;
    let value_len = u32::from_le_bytes(body.get(at..at + 4)?.try_into().ok()?) as usize;
    let value = body.get(at + 4..at + 4 + value_len)?;
    (at + 4 + value_len == body.len()).then_some((tag, key, value))
}

/// One checksummed frame (`len u32 | crc32c u32 | body`): the framing of snapshot streams, and
/// of the backup crate's incremental streams.
pub fn write_frame(out: &mut (impl Write + ?Sized), body: &[u8]) -> Result<(), ExportError> {
    out.write_all(&(body.len() as u32).to_le_bytes())
        .and_then(|_| out.write_all(&crc32c::crc32c(body).to_le_bytes()))
        .and_then(|_| out.write_all(body))
        .map_err(ExportError::Write)
}

/// Reads one frame written by [`write_frame`], checking it; `None` at a clean end of stream.
pub fn read_frame(input: &mut impl Read) -> Result<Option<Vec<u8>>, SnapshotError> {
    let read = |what: &'static str| move |source| SnapshotError::Read { what, source };
    let mut head = [0u8; 8];
    match input.read_exact(&mut head[..1]) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(read("snapshot")(e)),
    }
    input
        .read_exact(&mut head[1..])
        .map_err(read("snapshot frame header"))?;
    let len = u32::from_le_bytes(head[..4].try_into().expect("4 bytes")) as usize;
    let crc = u32::from_le_bytes(head[4..].try_into().expect("4 bytes"));
    if len > MAX_SNAPSHOT_FRAME {
        return Err(SnapshotError::FrameTooLarge { len });
    }
    let mut body = vec![0u8; len];
    input
        .read_exact(&mut body)
        .map_err(read("snapshot frame"))?;
    if crc32c::crc32c(&body) != crc {
        return Err(SnapshotError::FrameChecksum);
    }
    Ok(Some(body))
}
