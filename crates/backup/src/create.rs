//! A full backup: a node's snapshot stream stored in the target, checked end to end, then its
//! manifest. The manifest is the backup's commit point: written only once the state is stored
//! whole and read back correct.

use std::io::Read;

use crate::manifest::{FileEntry, Manifest, MANIFEST_FILE, MANIFEST_FORMAT, STATE_FILE};
use crate::target::{Target, TargetError};

#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    #[error(transparent)]
    Target(#[from] TargetError),
    #[error("the stored state {object} does not check out: {why}")]
    Damaged { object: String, why: String },
    #[error("the state's cluster is {found}, the node said {expected}")]
    Cluster { expected: u64, found: u64 },
}

/// Where the backup comes from.
#[derive(Clone, Copy, Debug)]
pub struct Source {
    pub cluster_id: u64,
    pub node_id: u64,
}

/// Stores `stream` (a snapshot) as a new backup and answers its manifest. `progress` is told
/// the bytes stored so far.
pub fn create_backup(
    target: &dyn Target,
    source: Source,
    stream: &mut dyn Read,
    progress: &mut (dyn FnMut(u64) + Send),
) -> Result<Manifest, CreateError> {
    let (name, created_at_ms) = new_name(target, source)?;
    let object = Manifest::object(&name, STATE_FILE);
    let mut counting = Progress::new(stream, progress);
    target.put_reader(&object, &mut counting)?;
    // Read back what the target holds: the manifest describes what is there, not what was sent.
    let mut stored = target.open(&object)?;
    let summary =
        bulwark_store::snapshot::inspect(&mut stored).map_err(|e| CreateError::Damaged {
            object: object.clone(),
            why: e.to_string(),
        })?;
    let manifest = Manifest {
        format: MANIFEST_FORMAT,
        name: name.clone(),
        cluster_id: source.cluster_id,
        source_node: source.node_id,
        applied_index: summary.applied_index,
        applied_term: summary.applied_term,
        last_timestamp: summary.last_timestamp,
        created_at_ms,
        files: vec![FileEntry {
            name: STATE_FILE.into(),
            bytes: summary.bytes,
            crc32c: summary.crc32c,
        }],
        parent: None,
    };
    target.put(&Manifest::object(&name, MANIFEST_FILE), &manifest.encode())?;
    Ok(manifest)
}

/// A new backup's name and creation time: names sort by creation time, and never repeat one
/// that exists (two backups in one millisecond).
pub(crate) fn new_name(target: &dyn Target, source: Source) -> Result<(String, u64), TargetError> {
    let mut created_at_ms = crate::now_ms();
    loop {
        let name = format!("{created_at_ms:015}-n{}", source.node_id);
        let prefix = format!("{}{name}/", crate::manifest::BACKUPS_PREFIX);
        if target.list(&prefix)?.is_empty() {
            return Ok((name, created_at_ms));
        }
        created_at_ms += 1;
    }
}

/// Reports the bytes read so far.
pub(crate) struct Progress<'a, R: ?Sized> {
    inner: &'a mut R,
    done: u64,
    report: &'a mut (dyn FnMut(u64) + Send),
}

impl<'a, R: ?Sized> Progress<'a, R> {
    pub(crate) fn new(inner: &'a mut R, report: &'a mut (dyn FnMut(u64) + Send)) -> Self {
        Progress {
            inner,
            done: 0,
            report,
        }
    }
}

impl<R: Read + ?Sized> Read for Progress<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.done += n as u64;
        (self.report)(self.done);
        Ok(n)
    }
}
