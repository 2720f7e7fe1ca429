//! Installing a snapshot on a follower: the filesystem, redb and download worker under the
//! shared, sans-IO steps of `bulwark_consensus::install` (their order, the crash points, and what
//! a start decides about an interrupted install are decided there, for the node and the
//! simulation alike). Here: the intent is the file `installing-snapshot` (the snapshot's metadata,
//! checksummed, written write-temp, fsync, rename, fsync-dir); the checkpoint is downloaded into a
//! side file `state.redb.incoming.N` (fsynced) by the download worker; the swap renames it over
//! `state.redb` and fsyncs the directory; the reopen opens it as the new `StateStore`; a crash
//! point is `BULWARK_CRASH_AT`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use bulwark_consensus::install::{
    FinishError, InstallIo, InstallPoint, InstallStop, IntentIo, Interrupted, StartDecision,
};
use bulwark_consensus::storage::DiskRaftStorage;
use bulwark_store::snapshot::SnapshotInfo;
use bulwark_store::StateStore;
use protobuf::Message as _;
use raft::eraftpb::SnapshotMetadata;

use crate::cluster::ClusterConfig;
use crate::download::{CheckpointSource, Downloader, Poll};
use crate::faults::crash_point;

/// The internal route a member's checkpoint is streamed from (on its peer port).
pub const SNAPSHOT_PATH: &str = "/internal/v1/snapshot";

/// The intent file's name in the data directory.
pub const INTENT_FILE: &str = "installing-snapshot";

const INTENT_MAGIC: &[u8; 8] = b"BWINST1\n";

/// Why installing a snapshot failed, and whether for lack of space.
pub(crate) struct InstallFailure {
    pub(crate) disk_full: bool,
    /// Not a failure yet: the download is still running (the Ready is tried again shortly).
    pub(crate) pending: bool,
    pub(crate) message: String,
}

impl InstallFailure {
    pub(crate) fn other(message: impl Into<String>) -> Self {
        InstallFailure {
            disk_full: false,
            pending: false,
            message: message.into(),
        }
    }

    fn pending(index: u64) -> Self {
        InstallFailure {
            disk_full: false,
            pending: true,
            message: format!("the snapshot at {index} is still downloading"),
        }
    }

    fn intent(e: InstallError) -> Self {
        let disk_full = match &e {
            InstallError::WriteIntent(e) => e.is_disk_full(),
            InstallError::RemoveIntent { source, .. } => bulwark_fs::is_disk_full(source),
            _ => false,
        };
        InstallFailure {
            disk_full,
            pending: false,
            message: e.to_string(),
        }
    }

    fn store(e: bulwark_store::StoreError) -> Self {
        InstallFailure {
            disk_full: e.is_disk_full(),
            pending: false,
            message: e.to_string(),
        }
    }
}

fn encode_intent(meta: &SnapshotMetadata) -> Vec<u8> {
    let body = meta.write_to_bytes().expect("snapshot metadata encodes");
    let mut out = INTENT_MAGIC.to_vec();
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32c::crc32c(&body).to_le_bytes());
    out.extend_from_slice(&body);
    out
}

/// Why an intent file does not hold a valid intent.
#[derive(Debug, thiserror::Error)]
pub enum IntentError {
    #[error("it does not start with BWINST1")]
    BadMagic,
    #[error("truncated")]
    Truncated,
    #[error("checksum mismatch")]
    ChecksumMismatch,
    #[error("{0}")]
    Metadata(protobuf::ProtobufError),
}

/// Why an install a crash interrupted could not be finished or dropped at start.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error("read {}: {source}", path.display())]
    ReadIntent {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The intent is written crash-safely: a damaged one is damage, not a torn write.
    #[error("{}: {source}", path.display())]
    CorruptIntent { path: PathBuf, source: IntentError },
    #[error("finishing the snapshot install at {index}: {source}")]
    ResetLog {
        index: u64,
        source: bulwark_consensus::storage::StorageError,
    },
    #[error("{0}")]
    WriteIntent(bulwark_fs::FsError),
    #[error("remove {}: {source}", path.display())]
    RemoveIntent {
        path: PathBuf,
        source: std::io::Error,
    },
}

fn decode_intent(bytes: &[u8]) -> Result<SnapshotMetadata, IntentError> {
    let rest = bytes
        .strip_prefix(INTENT_MAGIC.as_slice())
        .ok_or(IntentError::BadMagic)?;
    let word = |range: std::ops::Range<usize>| {
        rest.get(range)
            .map(|b| u32::from_le_bytes(b.try_into().expect("4")))
            .ok_or(IntentError::Truncated)
    };
    let len = word(0..4)? as usize;
    let crc = word(4..8)?;
    let body = rest
        .get(8..)
        .filter(|b| b.len() == len)
        .ok_or(IntentError::Truncated)?;
    if crc32c::crc32c(body) != crc {
        return Err(IntentError::ChecksumMismatch);
    }
    SnapshotMetadata::parse_from_bytes(body).map_err(IntentError::Metadata)
}

fn intent_path(data_dir: &Path) -> PathBuf {
    data_dir.join(INTENT_FILE)
}

fn remove_intent(data_dir: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(intent_path(data_dir)) {
        Ok(()) => bulwark_fs::fsync_dir(data_dir).map_err(|e| e.source),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// The intent file in the data directory.
struct IntentFile<'a> {
    data_dir: &'a Path,
}

impl IntentIo for IntentFile<'_> {
    type Error = InstallError;

    fn write_intent(&mut self, meta: &SnapshotMetadata) -> Result<(), InstallError> {
        bulwark_fs::write_file_atomically(&intent_path(self.data_dir), &encode_intent(meta))
            .map_err(InstallError::WriteIntent)
    }

    fn read_intent(&mut self) -> Result<Option<SnapshotMetadata>, InstallError> {
        let path = intent_path(self.data_dir);
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(InstallError::ReadIntent { path, source }),
        };
        match decode_intent(&bytes) {
            Ok(meta) => Ok(Some(meta)),
            Err(source) => Err(InstallError::CorruptIntent { path, source }),
        }
    }

    fn remove_intent(&mut self) -> Result<(), InstallError> {
        remove_intent(self.data_dir).map_err(|source| InstallError::RemoveIntent {
            path: intent_path(self.data_dir),
            source,
        })
    }

    fn crash_point(&mut self, point: InstallPoint) -> Result<(), InstallError> {
        crash_point(point.name());
        Ok(())
    }
}

/// At start: completes or drops an install that a crash interrupted
/// (`bulwark_consensus::install::finish_interrupted` decides which).
pub(crate) fn finish_interrupted(
    data_dir: &Path,
    storage: &mut DiskRaftStorage,
    store: &StateStore,
) -> Result<(), InstallError> {
    let found = bulwark_consensus::install::finish_interrupted(
        &mut IntentFile { data_dir },
        storage,
        store,
    )
    .map_err(|e| match e {
        FinishError::Io(e) => e,
        FinishError::ResetLog { index, source } => InstallError::ResetLog { index, source },
    })?;
    let Interrupted::Decided { index, decision } = found else {
        return Ok(());
    };
    let state = store.applied_index();
    match decision {
        StartDecision::ResetLog => tracing::warn!(
            index,
            state,
            "finished a snapshot install a crash interrupted: the Raft log now starts after it"
        ),
        StartDecision::Drop => tracing::warn!(
            index,
            state,
            "dropped a snapshot install a crash interrupted before the state was replaced"
        ),
        StartDecision::AlreadyDone => {}
    }
    Ok(())
}

/// After the Raft log was reset to an installed snapshot: the install is complete (step 5).
pub(crate) fn finished(data_dir: &Path) -> std::io::Result<()> {
    bulwark_consensus::install::finished(&mut IntentFile { data_dir }).map_err(|e| match e {
        InstallError::RemoveIntent { source, .. } => source,
        e => std::io::Error::other(e),
    })
}

/// A snapshot install on this node: the download worker fetches, the intent is a file, the
/// state is `state.redb`.
struct NodeInstall<'a> {
    cluster: &'a ClusterConfig,
    intent: IntentFile<'a>,
    /// `state.redb`.
    path: PathBuf,
    downloader: &'a mut Downloader,
    /// What the swapped-in checkpoint held, for the log line.
    info: Option<SnapshotInfo>,
}

impl IntentIo for NodeInstall<'_> {
    type Error = InstallFailure;

    fn write_intent(&mut self, meta: &SnapshotMetadata) -> Result<(), InstallFailure> {
        self.intent
            .write_intent(meta)
            .map_err(InstallFailure::intent)
    }

    fn read_intent(&mut self) -> Result<Option<SnapshotMetadata>, InstallFailure> {
        self.intent.read_intent().map_err(InstallFailure::intent)
    }

    fn remove_intent(&mut self) -> Result<(), InstallFailure> {
        self.intent.remove_intent().map_err(InstallFailure::intent)
    }

    fn crash_point(&mut self, point: InstallPoint) -> Result<(), InstallFailure> {
        crash_point(point.name());
        Ok(())
    }
}

impl InstallIo<StateStore> for NodeInstall<'_> {
    type Fetched = (SnapshotInfo, PathBuf);

    fn fetch_checkpoint(
        &mut self,
        snapshot: &raft::eraftpb::Snapshot,
    ) -> Result<Option<Self::Fetched>, InstallFailure> {
        let index = snapshot.get_metadata().index;
        let from = snapshot
            .data
            .get(..8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_le_bytes)
            .ok_or_else(|| InstallFailure::other("the snapshot does not name its node"))?;
        match self.downloader.poll(self.cluster, &self.path, from, index) {
            Poll::Pending => Ok(None),
            Poll::Failed(failure) => Err(failure),
            Poll::Done { info, incoming } => Ok(Some((info, incoming))),
        }
    }

    fn checkpoint_index((info, _): &Self::Fetched) -> u64 {
        info.applied_index
    }

    fn swap_state(&mut self, (info, incoming): Self::Fetched) -> Result<(), InstallFailure> {
        bulwark_store::snapshot::swap_in(&incoming, &self.path).map_err(InstallFailure::store)?;
        self.info = Some(info);
        Ok(())
    }

    fn reopen_state(&mut self, store: &mut StateStore) -> Result<(), InstallFailure> {
        let checkpoint_transfers = store.checkpoint_transfers();
        *store = StateStore::open(&self.path).map_err(InstallFailure::store)?;
        store.set_checkpoint_transfers(checkpoint_transfers);
        Ok(())
    }
}

/// Replaces this follower's state with the checkpoint of the node named in the snapshot's data
/// (or another member's), streamed over HTTP: steps 1–3 of `bulwark_consensus::install`; the
/// replica then resets the Raft log (step 4) and the loop calls [`finished`] (step 5).
pub(crate) fn install_snapshot(
    cluster: &ClusterConfig,
    data_dir: &Path,
    store: &mut StateStore,
    snapshot: &raft::eraftpb::Snapshot,
    downloader: &mut Downloader,
) -> Result<(), InstallFailure> {
    // The checkpoint being written must not race the swap of the file under it.
    store.wait_checkpoint().map_err(InstallFailure::store)?;
    let started = Instant::now();
    let mut io = NodeInstall {
        cluster,
        intent: IntentFile { data_dir },
        path: store.path().to_path_buf(),
        downloader,
        info: None,
    };
    let index = snapshot.get_metadata().index;
    match bulwark_consensus::install::install_state(&mut io, store, snapshot) {
        Ok(_) => {}
        Err(InstallStop::Io(failure)) => return Err(failure),
        Err(InstallStop::Pending { index }) => return Err(InstallFailure::pending(index)),
        Err(InstallStop::Stale { index, checkpoint }) => {
            return Err(InstallFailure::other(format!(
                "the checkpoint at {checkpoint} is older than the snapshot at {index}"
            )))
        }
    }
    if let Some(info) = io.info {
        tracing::info!(
            index,
            checkpoint = info.applied_index,
            rows = info.rows,
            ms = started.elapsed().as_millis() as u64,
            "snapshot installed"
        );
    }
    Ok(())
}

/// Fetches from the node the snapshot names first; if it cannot serve (dead, paused, partitioned
/// away, not in our address book yet), from any other member whose checkpoint covers the index.
pub(crate) fn fetch_any(
    cluster: &ClusterConfig,
    source: &dyn CheckpointSource,
    from: u64,
    path: &Path,
    incoming: &Path,
    index: u64,
    wrap: impl Fn(Box<dyn std::io::Read>) -> Box<dyn std::io::Read>,
) -> Result<bulwark_store::snapshot::SnapshotInfo, InstallFailure> {
    let mut failures = Vec::new();
    let mut sources: Vec<&crate::cluster::Member> = cluster.member(from).into_iter().collect();
    sources.extend(
        cluster
            .members
            .iter()
            .filter(|m| m.id != from && m.id != cluster.node_id),
    );
    for member in sources {
        match fetch_from(cluster, source, member, path, incoming, index, &wrap) {
            Ok(info) => return Ok(info),
            Err(f) if f.disk_full => return Err(f),
            Err(f) => {
                tracing::warn!(source = member.id, index, error = %f.message, "a snapshot fetch failed");
                failures.push(format!("node {}: {}", member.id, f.message));
            }
        }
    }
    if failures.is_empty() {
        failures.push(format!("node {from} is not in the address book"));
    }
    Err(InstallFailure::other(format!(
        "no member could send a checkpoint at or after {index}: {}",
        failures.join("; ")
    )))
}

/// Streams `member`'s checkpoint into `incoming` (step 1); it must cover `index`. A connect or a
/// read of the stream that takes longer than its bound fails the fetch (the node's
/// `CheckpointSource`): a paused or partitioned source must not hold the follower forever.
fn fetch_from(
    cluster: &ClusterConfig,
    source: &dyn CheckpointSource,
    member: &crate::cluster::Member,
    path: &Path,
    incoming: &Path,
    index: u64,
    wrap: &impl Fn(Box<dyn std::io::Read>) -> Box<dyn std::io::Read>,
) -> Result<bulwark_store::snapshot::SnapshotInfo, InstallFailure> {
    let addr = &member.peer_addr;
    tracing::info!(index, source = member.id, %addr, "fetching a snapshot to catch up");
    let mut body = wrap(source.open(cluster, member)?);
    let info = bulwark_store::snapshot::import_beside(path, incoming, &mut body)
        .map_err(InstallFailure::store)?;
    drop(body);
    if info.applied_index < index {
        let _ = std::fs::remove_file(incoming);
        return Err(InstallFailure::other(format!(
            "node {} sent a checkpoint at {} for a snapshot at {index}",
            member.id, info.applied_index
        )));
    }
    Ok(info)
}
