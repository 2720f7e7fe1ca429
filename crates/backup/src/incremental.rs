//! Incremental backups: only the rows that changed since the backup they follow (added,
//! changed or removed), found by walking the previous backup's state and the new one side by
//! side in the stream's order. A restore merges the chain (a full backup, then each incremental
//! in turn) back into a whole state.
//!
//! ```text
//! diff   = header frame, change frame*, trailer frame     (frames as in a snapshot stream)
//! header = "BWDIFF" | version u16
//! change = 1 (put) | row as in a snapshot   or   2 (delete) | tag u8 | key_len u32 | key
//! trailer= 0xFF | changes u64 | applied_index u64
//! ```

use std::cmp::Ordering;
use std::io::{Read, Write};

use bulwark_store::snapshot::{
    read_frame, row_order, write_frame, ChecksumReader, MetaFigures, Row, RowReader,
};

use crate::manifest::{FileEntry, Manifest, DIFF_FILE, MANIFEST_FILE, MANIFEST_FORMAT, STATE_FILE};
use crate::target::Target;

const MAGIC: &[u8; 6] = b"BWDIFF";
const VERSION: u16 = 1;
const PUT: u8 = 1;
const DELETE: u8 = 2;
const TRAILER: u8 = 0xFF;

/// A failure reading or writing a stream, naming the object it is in.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{object}: {why}")]
pub struct StreamError {
    pub object: String,
    pub why: String,
}

pub type RowResult = Result<Row, StreamError>;

/// A change an incremental backup holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    Put(Row),
    Delete { tag: u8, key: Vec<u8> },
}

impl Change {
    fn position(&self) -> (u8, &[u8]) {
        match self {
            Change::Put(row) => (row.tag, &row.key),
            Change::Delete { tag, key } => (*tag, key),
        }
    }
}

/// Writes the changes that turn `base` into `new` (both in stream order) to `out`; answers how
/// many. `new`'s trailer names the applied index, given by the caller once `new` is done.
pub fn write_diff(
    base: impl Iterator<Item = RowResult>,
    new: impl Iterator<Item = RowResult>,
    applied_index: impl FnOnce() -> Result<u64, StreamError>,
    out: &mut dyn Write,
    object: &str,
) -> Result<u64, StreamError> {
    let fail = |e: bulwark_store::snapshot::ExportError| StreamError {
        object: object.to_string(),
        why: e.to_string(),
    };
    let mut header = MAGIC.to_vec();
    header.extend_from_slice(&VERSION.to_le_bytes());
    write_frame(out, &header).map_err(fail)?;
    let mut changes = 0u64;
    let mut body = Vec::new();
    let mut emit = |change: Change, out: &mut dyn Write| -> Result<(), StreamError> {
        encode_change(&mut body, &change);
        changes += 1;
        write_frame(out, &body).map_err(fail)
    };
    let (mut base, mut new) = (base.peekable(), new.peekable());
    loop {
        let order = match (base.peek(), new.peek()) {
            (None, None) => break,
            (Some(Err(_)), _) => return Err(base.next().expect("peeked").unwrap_err()),
            (_, Some(Err(_))) => return Err(new.next().expect("peeked").unwrap_err()),
            (Some(Ok(_)), None) => Ordering::Less,
            (None, Some(Ok(_))) => Ordering::Greater,
            (Some(Ok(b)), Some(Ok(n))) => row_order((b.tag, &b.key), (n.tag, &n.key)),
        };
        match order {
            Ordering::Less => {
                let gone = base.next().expect("peeked").expect("checked");
                emit(
                    Change::Delete {
                        tag: gone.tag,
                        key: gone.key,
                    },
                    out,
                )?;
            }
            Ordering::Greater => emit(
                Change::Put(new.next().expect("peeked").expect("checked")),
                out,
            )?,
            Ordering::Equal => {
                let old = base.next().expect("peeked").expect("checked");
                let row = new.next().expect("peeked").expect("checked");
                if old.value != row.value {
                    emit(Change::Put(row), out)?;
                }
            }
        }
    }
    let mut trailer = vec![TRAILER];
    trailer.extend_from_slice(&changes.to_le_bytes());
    trailer.extend_from_slice(&applied_index()?.to_le_bytes());
    write_frame(out, &trailer).map_err(fail)?;
    out.flush().map_err(|e| StreamError {
        object: object.to_string(),
        why: e.to_string(),
    })?;
    Ok(changes)
}

fn encode_change(body: &mut Vec<u8>, change: &Change) {
    body.clear();
    let (op, tag, key, value) = match change {
        Change::Put(row) => (PUT, row.tag, &row.key, Some(&row.value)),
        Change::Delete { tag, key } => (DELETE, *tag, key, None),
    };
    body.push(op);
    body.push(tag);
    body.extend_from_slice(&(key.len() as u32).to_le_bytes());
    body.extend_from_slice(key);
    if let Some(value) = value {
        body.extend_from_slice(&(value.len() as u32).to_le_bytes());
        body.extend_from_slice(value);
    }
}

fn decode_change(body: &[u8]) -> Option<Change> {
    let (&op, rest) = body.split_first()?;
    let (&tag, rest) = rest.split_first()?;
    let key_len = u32::from_le_bytes(rest.get(..4)?.try_into().ok()?) as usize;
    let key = rest.get(4..4 + key_len)?.to_vec();
    let rest = &rest[4 + key_len..];
    match op {
        DELETE if rest.is_empty() => Some(Change::Delete { tag, key }),
        PUT => {
            let len = u32::from_le_bytes(rest.get(..4)?.try_into().ok()?) as usize;
            let value = rest.get(4..)?;
            (value.len() == len).then(|| {
                Change::Put(Row {
                    tag,
                    key,
                    value: value.to_vec(),
                })
            })
        }
        _ => None,
    }
}

/// An incremental's changes read one at a time, every frame checked, in stream order.
pub struct DiffReader<R> {
    input: R,
    object: String,
    changes: u64,
    applied_index: Option<u64>,
    /// The applied index its manifest claims: a trailer that says otherwise is refused.
    expect_applied: Option<u64>,
    last: Option<(u8, Vec<u8>)>,
    failed: bool,
}

impl<R: Read> DiffReader<R> {
    pub fn new(mut input: R, object: &str) -> Result<DiffReader<R>, StreamError> {
        let bad = |why: String| StreamError {
            object: object.to_string(),
            why,
        };
        let header = read_frame(&mut input)
            .map_err(|e| bad(e.to_string()))?
            .ok_or_else(|| bad("empty".into()))?;
        if header.len() != 8 || &header[..6] != MAGIC {
            return Err(bad("not an incremental backup's state".into()));
        }
        let version = u16::from_le_bytes([header[6], header[7]]);
        if version != VERSION {
            return Err(bad(format!(
                "version {version}, this build reads {VERSION}"
            )));
        }
        Ok(DiffReader {
            input,
            object: object.to_string(),
            changes: 0,
            applied_index: None,
            expect_applied: None,
            last: None,
            failed: false,
        })
    }

    /// Refuses a trailer whose applied index is not `index` (its manifest's).
    pub fn expecting(mut self, index: u64) -> Self {
        self.expect_applied = Some(index);
        self
    }

    /// The state's applied index, once every change was read.
    pub fn applied_index(&self) -> Option<u64> {
        self.applied_index
    }

    fn read_one(&mut self) -> Result<Option<Change>, String> {
        let body = read_frame(&mut self.input)
            .map_err(|e| e.to_string())?
            .ok_or("the stream ended before its trailer")?;
        if body.first() == Some(&TRAILER) {
            let field = |at: usize| {
                body.get(at..at + 8)
                    .map(|b| u64::from_le_bytes(b.try_into().expect("8")))
            };
            let (Some(count), Some(applied), 17) = (field(1), field(9), body.len()) else {
                return Err("bad trailer".into());
            };
            if count != self.changes {
                return Err(format!(
                    "the trailer says {count} changes, {} arrived",
                    self.changes
                ));
            }
            if self
                .expect_applied
                .is_some_and(|expected| expected != applied)
            {
                return Err(format!(
                    "holds the state at index {applied}; the manifest says index {}",
                    self.expect_applied.unwrap_or_default()
                ));
            }
            self.applied_index = Some(applied);
            return Ok(None);
        }
        let change = decode_change(&body).ok_or("a bad change frame")?;
        let (tag, key) = change.position();
        if let Some((last_tag, last_key)) = &self.last {
            if row_order((*last_tag, last_key), (tag, key)) != Ordering::Less {
                return Err("changes out of order".into());
            }
        }
        self.last = Some((tag, key.to_vec()));
        self.changes += 1;
        Ok(Some(change))
    }
}

impl<R: Read> Iterator for DiffReader<R> {
    type Item = Result<Change, StreamError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.applied_index.is_some() || self.failed {
            return None;
        }
        match self.read_one() {
            Ok(change) => change.map(Ok),
            Err(why) => {
                self.failed = true;
                Some(Err(StreamError {
                    object: self.object.clone(),
                    why,
                }))
            }
        }
    }
}

/// `base` with `diff`'s changes applied, in stream order.
pub fn apply<B, D>(base: B, diff: D) -> impl Iterator<Item = RowResult>
where
    B: Iterator<Item = RowResult>,
    D: Iterator<Item = Result<Change, StreamError>>,
{
    let (mut base, mut diff) = (base.peekable(), diff.peekable());
    std::iter::from_fn(move || loop {
        let order = match (base.peek(), diff.peek()) {
            (None, None) => return None,
            (Some(Err(_)), _) => return base.next(),
            (_, Some(Err(_))) => return Some(Err(diff.next().expect("peeked").unwrap_err())),
            (Some(Ok(_)), None) => Ordering::Less,
            (None, Some(Ok(_))) => Ordering::Greater,
            (Some(Ok(b)), Some(Ok(c))) => row_order((b.tag, &b.key), c.position()),
        };
        if order == Ordering::Less {
            return base.next();
        }
        if order == Ordering::Equal {
            base.next();
        }
        match diff.next().expect("peeked").expect("checked") {
            Change::Put(row) => return Some(Ok(row)),
            Change::Delete { .. } => continue,
        }
    })
}

/// The backups a restore from `last` reads, oldest first: the full backup the chain starts at,
/// then each incremental up to `last`.
pub fn chain_of(target: &dyn Target, last: &Manifest) -> Result<Vec<Manifest>, StreamError> {
    let mut chain = vec![last.clone()];
    while let Some(parent) = chain.last().and_then(|m| m.parent.clone()) {
        let object = Manifest::object(&parent, MANIFEST_FILE);
        let child = chain.last().expect("not empty").name.clone();
        let broken = |why: String| StreamError {
            object: object.clone(),
            why: format!("backup {child} follows it, but {why}"),
        };
        let bytes = target.get(&object).map_err(|e| broken(e.to_string()))?;
        let manifest = Manifest::decode(&bytes).map_err(|e| broken(e.to_string()))?;
        if manifest.cluster_id != last.cluster_id || chain.len() > MAX_CHAIN {
            return Err(broken(
                "it is of another cluster, or the chain loops".into(),
            ));
        }
        chain.push(manifest);
    }
    chain.reverse();
    Ok(chain)
}

/// The longest chain of incrementals a restore follows (a guard against a loop of parents).
const MAX_CHAIN: usize = 10_000;

/// The whole state of the chain's last backup, row by row in stream order.
pub fn chain_rows<'a>(
    target: &'a dyn Target,
    chain: &[Manifest],
) -> Result<Box<dyn Iterator<Item = RowResult> + Send + 'a>, StreamError> {
    let (base, rest) = chain
        .split_first()
        .expect("a chain starts at a full backup");
    let object = Manifest::object(&base.name, STATE_FILE);
    let fail = |object: &str| {
        let object = object.to_string();
        move |e: &dyn std::fmt::Display| StreamError {
            object: object.clone(),
            why: e.to_string(),
        }
    };
    let input = target.open(&object).map_err(|e| fail(&object)(&e))?;
    let reader = RowReader::new(input).map_err(|e| fail(&object)(&e))?;
    let base_object = object.clone();
    let mut rows: Box<dyn Iterator<Item = RowResult> + Send + 'a> =
        Box::new(reader.map(move |r| r.map_err(|e| fail(&base_object)(&e))));
    for incremental in rest {
        let object = Manifest::object(&incremental.name, DIFF_FILE);
        let input = target.open(&object).map_err(|e| fail(&object)(&e))?;
        let diff = DiffReader::new(input, &object)?.expecting(incremental.applied_index);
        rows = Box::new(apply(rows, diff));
    }
    Ok(rows)
}

/// Stores an incremental backup of `stream` (a node's snapshot) following `parent`: only the
/// rows that changed since, then its manifest.
pub fn create_incremental(
    target: &dyn Target,
    source: crate::create::Source,
    stream: &mut (dyn Read + Send),
    parent: &Manifest,
    progress: &mut (dyn FnMut(u64) + Send),
) -> Result<Manifest, crate::create::CreateError> {
    let damaged = |e: StreamError| crate::create::CreateError::Damaged {
        object: e.object,
        why: e.why,
    };
    if parent.cluster_id != source.cluster_id {
        return Err(crate::create::CreateError::Cluster {
            expected: source.cluster_id,
            found: parent.cluster_id,
        });
    }
    let chain = chain_of(target, parent).map_err(damaged)?;
    let (name, created_at_ms) = crate::create::new_name(target, source)?;
    let object = Manifest::object(&name, DIFF_FILE);
    let (reader, mut writer) = std::io::pipe().map_err(|e| {
        damaged(StreamError {
            object: object.clone(),
            why: e.to_string(),
        })
    })?;
    let mut figures = MetaFigures::default();
    let noted = &mut figures;
    let diff_object = object.clone();
    let written = std::thread::scope(|scope| {
        // The writer moves into the thread: its end closes the pipe, which ends the upload.
        let diffing = scope.spawn(move || -> Result<(), StreamError> {
            let base = chain_rows(target, &chain)?;
            let mut counted = crate::create::Progress::new(stream, progress);
            let new = RowReader::new(&mut counted).map_err(|e| StreamError {
                object: "the node's snapshot".into(),
                why: e.to_string(),
            })?;
            let new = std::cell::RefCell::new(new);
            let rows = std::iter::from_fn(|| {
                let row = new.borrow_mut().next()?;
                Some(row.map_err(|e| StreamError {
                    object: "the node's snapshot".into(),
                    why: e.to_string(),
                }))
            })
            .inspect(|row| {
                if let Ok(row) = row {
                    noted.note(row);
                }
            });
            let applied = || {
                new.borrow()
                    .finished()
                    .map(|i| i.applied_index)
                    .ok_or(StreamError {
                        object: "the node's snapshot".into(),
                        why: "ended before its trailer".into(),
                    })
            };
            write_diff(base, rows, applied, &mut writer, &diff_object).map(drop)
        });
        let stored = target.put_reader(&object, &mut { reader });
        let diffed = diffing.join().expect("the diff thread does not panic");
        (stored, diffed)
    });
    match written {
        (_, Err(e)) => return Err(damaged(e)),
        (Err(e), Ok(())) => return Err(e.into()),
        (Ok(_), Ok(())) => {}
    }
    // Read back what the target holds.
    let mut counted = ChecksumReader::new(target.open(&object)?);
    let mut diff = DiffReader::new(&mut counted, &object).map_err(damaged)?;
    for change in &mut diff {
        change.map_err(damaged)?;
    }
    let applied_index = diff.applied_index().expect("read to its trailer");
    let manifest = Manifest {
        format: MANIFEST_FORMAT,
        name: name.to_string(),
        cluster_id: source.cluster_id,
        source_node: source.node_id,
        applied_index,
        applied_term: figures.applied_term,
        last_timestamp: figures.last_timestamp,
        created_at_ms,
        files: vec![FileEntry {
            name: DIFF_FILE.into(),
            bytes: counted.bytes,
            crc32c: counted.crc,
        }],
        parent: Some(parent.name.clone()),
    };
    target.put(&Manifest::object(&name, MANIFEST_FILE), &manifest.encode())?;
    Ok(manifest)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(tag: u8, key: &[u8], value: &[u8]) -> Row {
        Row {
            tag,
            key: key.to_vec(),
            value: value.to_vec(),
        }
    }

    fn id(n: u128) -> Vec<u8> {
        n.to_le_bytes().to_vec()
    }

    /// Two states in stream order: `meta` (string keys), then `accounts` (u128 keys, whose
    /// order is not their bytes' order).
    fn states() -> (Vec<Row>, Vec<Row>) {
        let base = vec![
            row(0, b"applied_index", &5u64.to_le_bytes()),
            row(1, &id(1), b"a"),
            row(1, &id(2), b"b"),
            row(1, &id(256), b"c"),
            row(3, &id(9), &[1]),
        ];
        let new = vec![
            row(0, b"applied_index", &9u64.to_le_bytes()),
            row(0, b"last_timestamp", &7u64.to_le_bytes()),
            row(1, &id(2), b"b"),
            row(1, &id(3), b"d"),
            row(1, &id(256), b"C"),
            row(2, &id(300), b"t"),
        ];
        (base, new)
    }

    #[test]
    fn a_diff_holds_only_changes_and_rebuilds_the_new_state() {
        let (base, new) = states();
        let mut bytes = Vec::new();
        let changes = write_diff(
            base.clone().into_iter().map(Ok),
            new.clone().into_iter().map(Ok),
            || Ok(9),
            &mut bytes,
            "d",
        )
        .unwrap();
        // applied_index and last_timestamp, account 1 gone, 3 new, 256 changed, transfer 300
        // new, pending 9 gone; account 2 unchanged is not there.
        assert_eq!(changes, 7);
        let diff = DiffReader::new(&bytes[..], "d").unwrap().expecting(9);
        let rebuilt: Vec<Row> = apply(base.clone().into_iter().map(Ok), diff)
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(rebuilt, new);
        // A manifest naming another index, and a cut stream, are refused.
        let lying = DiffReader::new(&bytes[..], "d").unwrap().expecting(8);
        assert!(apply(base.clone().into_iter().map(Ok), lying).any(|r| r.is_err()));
        let cut = DiffReader::new(&bytes[..bytes.len() - 3], "d").unwrap();
        assert!(apply(base.into_iter().map(Ok), cut).any(|r| r.is_err()));
    }
}
