//! Installing a snapshot on a follower, crash-safely at every step.
//!
//! A snapshot replaces the state store with another node's checkpoint (at or after the
//! snapshot's index) and resets the Raft log to the snapshot's index. Those are two files that
//! cannot change in one step, so an intent file, `installing-snapshot` (the snapshot's metadata,
//! checksummed), is made durable before the state is swapped and removed once the log is reset:
//!
//! 1. the checkpoint is downloaded and imported into a side file, fsynced;
//! 2. the intent is written (write-temp, fsync, rename, fsync-dir);
//! 3. the side file is renamed over `state.redb`, the directory fsynced;
//! 4. the Raft log is reset to the snapshot (its own crash-safe step);
//! 5. the intent is removed.
//!
//! A start that finds the intent ([`finish_interrupted`]) looks at the state store: if it holds
//! the snapshot's index or more, step 3 happened and the start does step 4 itself; otherwise the
//! old state is still in place and the intent is dropped (Raft sends the snapshot again). Without
//! the intent, a crash between 3 and 4 left a state ahead of its log, and every start refused.

use std::path::{Path, PathBuf};
use std::time::Instant;

use bulwark_consensus::storage::{DiskRaftStorage, RaftStorage};
use bulwark_store::StateStore;
use protobuf::Message as _;
use raft::eraftpb::SnapshotMetadata;

use crate::cluster::ClusterConfig;
use crate::download::{Downloader, Poll};
use crate::faults::crash_point;

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

/// At start: completes or drops an install that a crash interrupted (see the module docs).
pub(crate) fn finish_interrupted(
    data_dir: &Path,
    storage: &mut DiskRaftStorage,
    store: &StateStore,
) -> Result<(), InstallError> {
    let path = intent_path(data_dir);
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(source) => return Err(InstallError::ReadIntent { path, source }),
    };
    let meta = match decode_intent(&bytes) {
        Ok(meta) => meta,
        Err(source) => return Err(InstallError::CorruptIntent { path, source }),
    };
    let log_snapshot = raft::Storage::first_index(storage).unwrap_or(1) - 1;
    if store.applied_index() >= meta.index && log_snapshot < meta.index {
        storage
            .install_snapshot(&meta)
            .map_err(|source| InstallError::ResetLog {
                index: meta.index,
                source,
            })?;
        tracing::warn!(
            index = meta.index,
            state = store.applied_index(),
            "finished a snapshot install a crash interrupted: the Raft log now starts after it"
        );
    } else if store.applied_index() < meta.index {
        tracing::warn!(
            index = meta.index,
            state = store.applied_index(),
            "dropped a snapshot install a crash interrupted before the state was replaced"
        );
    }
    remove_intent(data_dir).map_err(|source| InstallError::RemoveIntent { path, source })
}

/// After the Raft log was reset to an installed snapshot: the install is complete.
pub(crate) fn finished(data_dir: &Path) -> std::io::Result<()> {
    remove_intent(data_dir)
}

/// Replaces this follower's state with the leader's checkpoint, streamed over HTTP from the
/// node named in the snapshot's data, through steps 1–3 of the module docs; the replica then
/// resets the Raft log (step 4) and the loop calls [`finished`] (step 5).
pub(crate) fn install_snapshot(
    cluster: &ClusterConfig,
    data_dir: &Path,
    store: &mut StateStore,
    snapshot: &raft::eraftpb::Snapshot,
    downloader: &mut Downloader,
) -> Result<(), InstallFailure> {
    let meta = snapshot.get_metadata();
    let index = meta.index;
    let from = snapshot
        .data
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_le_bytes)
        .ok_or_else(|| InstallFailure::other("the snapshot does not name its node"))?;
    store.wait_checkpoint().map_err(InstallFailure::store)?;
    let path = store.path().to_path_buf();
    let started = Instant::now();
    let (info, incoming) = match downloader.poll(cluster, &path, from, index) {
        Poll::Pending => return Err(InstallFailure::pending(index)),
        Poll::Failed(failure) => return Err(failure),
        Poll::Done { info, incoming } => (info, incoming),
    };
    crash_point("install-before-intent");
    bulwark_fs::write_file_atomically(&intent_path(data_dir), &encode_intent(meta)).map_err(
        |e| InstallFailure {
            disk_full: bulwark_fs::is_disk_full(&e.source),
            pending: false,
            message: e.to_string(),
        },
    )?;
    crash_point("install-before-swap");
    bulwark_store::snapshot::swap_in(&incoming, &path).map_err(InstallFailure::store)?;
    crash_point("install-after-swap");
    let fresh = StateStore::open(&path).map_err(InstallFailure::store)?;
    *store = fresh;
    crash_point("install-after-reopen");
    tracing::info!(
        index,
        checkpoint = info.applied_index,
        rows = info.rows,
        ms = started.elapsed().as_millis() as u64,
        "snapshot installed"
    );
    Ok(())
}

/// Fetches from the node the snapshot names first; if it cannot serve (dead, paused, partitioned
/// away, not in our address book yet), from any other member whose checkpoint covers the index.
pub(crate) fn fetch_any(
    cluster: &ClusterConfig,
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
        match fetch_from(cluster, member, path, incoming, index, &wrap) {
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
/// read of the stream that takes longer than its bound fails the fetch: a paused or partitioned
/// source must not hold the follower forever.
fn fetch_from(
    cluster: &ClusterConfig,
    member: &crate::cluster::Member,
    path: &Path,
    incoming: &Path,
    index: u64,
    wrap: &impl Fn(Box<dyn std::io::Read>) -> Box<dyn std::io::Read>,
) -> Result<bulwark_store::snapshot::SnapshotInfo, InstallFailure> {
    let url = format!("http://{}/internal/v1/snapshot", member.http_addr);
    tracing::info!(index, %url, "fetching a snapshot to catch up");
    // The client must outlive the body: its runtime thread is what reads the stream.
    let client = reqwest::blocking::Client::builder()
        .connect_timeout(bulwark_limits::SNAPSHOT_CONNECT_TIMEOUT)
        .timeout(bulwark_limits::SNAPSHOT_READ_TIMEOUT)
        .local_address(cluster.source_ip)
        .build()
        .map_err(|e| InstallFailure::other(e.to_string()))?;
    let response = client
        .get(&url)
        .send()
        .and_then(|r| r.error_for_status())
        .map_err(|e| InstallFailure::other(format!("fetch {url}: {e}")))?;
    let mut body = wrap(Box::new(response));
    let info = bulwark_store::snapshot::import_beside(path, incoming, &mut body)
        .map_err(InstallFailure::store)?;
    drop(body);
    drop(client);
    if info.applied_index < index {
        let _ = std::fs::remove_file(incoming);
        return Err(InstallFailure::other(format!(
            "node {} sent a checkpoint at {} for a snapshot at {index}",
            member.id, info.applied_index
        )));
    }
    Ok(info)
}
