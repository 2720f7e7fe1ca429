//! The snapshot download, on a worker thread: the node loop goes on (status, stale reads,
//! ticks) while a follower streams a checkpoint that may take seconds or minutes, and a source
//! that stops sending (killed, paused, partitioned away) is given up on and another tried, never
//! freezing the loop or ending the process.
//!
//! The loop polls: each try of the held Ready asks [`Downloader::poll`] for the snapshot's
//! index. The first asks start a download; later ones answer `Pending` until it is done, or
//! `Failed` once it failed or made no progress for [`STALL_TIMEOUT`] (the next try starts
//! another). Each attempt imports into a side file of its own, so that an abandoned one that
//! wakes up later cannot touch the next one's.
//!
//! Where the bytes come from is the worker's one IO edge, [`CheckpointSource`]: internal HTTP
//! to a member's peer port in the node ([`PeerHttpCheckpoints`]), sources that never answer or
//! cut their stream in the tests (`download/tests.rs`).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bulwark_store::snapshot::SnapshotInfo;

use crate::cluster::{ClusterConfig, Member};
use crate::install::{fetch_any, InstallFailure, SNAPSHOT_PATH};

use bulwark_limits::SNAPSHOT_STALL_TIMEOUT as STALL_TIMEOUT;

#[cfg(test)]
mod tests;

/// Where a download reads a member's last checkpoint from.
pub(crate) trait CheckpointSource: Send + Sync {
    /// `member`'s checkpoint as a stream. A read may block for as long as the source stays
    /// silent: the [`Downloader`] gives up on an attempt that makes no progress.
    fn open(
        &self,
        cluster: &ClusterConfig,
        member: &Member,
    ) -> Result<Box<dyn Read>, InstallFailure>;
}

/// The node's source: internal HTTP on the member's peer port (only a member's certificate gets
/// a snapshot), the answer's head and then each read of the stream within
/// `SNAPSHOT_READ_TIMEOUT`, so that a paused or partitioned member is passed over for another.
pub(crate) struct PeerHttpCheckpoints;

impl CheckpointSource for PeerHttpCheckpoints {
    fn open(
        &self,
        cluster: &ClusterConfig,
        member: &Member,
    ) -> Result<Box<dyn Read>, InstallFailure> {
        let client = cluster
            .peer_http
            .as_ref()
            .ok_or_else(|| InstallFailure::other("this node has no peer HTTP client"))?;
        let response = client
            .blocking_get(
                bulwark_transport::NodeId(member.id),
                member.peer_addr.clone(),
                SNAPSHOT_PATH,
                bulwark_limits::SNAPSHOT_READ_TIMEOUT,
                bulwark_limits::SNAPSHOT_READ_TIMEOUT,
            )
            .map_err(|e| InstallFailure::other(format!("fetch the snapshot: {e}")))?;
        Ok(Box::new(response))
    }
}

/// Where a download stands.
pub(crate) enum Poll {
    /// Still streaming.
    Pending,
    /// Imported into `incoming`, fsynced, covering the index.
    Done {
        info: SnapshotInfo,
        incoming: PathBuf,
    },
    Failed(InstallFailure),
}

struct Download {
    index: u64,
    incoming: PathBuf,
    /// Bytes received so far, and when that last grew.
    received: Arc<AtomicU64>,
    seen: (u64, Instant),
    outcome: Arc<Mutex<Option<Result<SnapshotInfo, InstallFailure>>>>,
    /// Set when the loop gives up on it: the worker then removes its side file itself.
    abandoned: Arc<AtomicBool>,
}

pub(crate) struct Downloader {
    attempts: u64,
    current: Option<Download>,
    source: Arc<dyn CheckpointSource>,
    /// An attempt that received nothing for this long is given up on.
    stall_timeout: Duration,
}

impl Default for Downloader {
    /// The node's: from the members over internal HTTP, given up on after
    /// `SNAPSHOT_STALL_TIMEOUT` without progress.
    fn default() -> Self {
        Downloader::new(Arc::new(PeerHttpCheckpoints), STALL_TIMEOUT)
    }
}

impl Downloader {
    pub(crate) fn new(source: Arc<dyn CheckpointSource>, stall_timeout: Duration) -> Self {
        Downloader {
            attempts: 0,
            current: None,
            source,
            stall_timeout,
        }
    }

    /// The download of the checkpoint covering `index` from the node `from` names (or any other
    /// member): started if none runs for that index.
    pub(crate) fn poll(
        &mut self,
        cluster: &ClusterConfig,
        state_path: &Path,
        from: u64,
        index: u64,
    ) -> Poll {
        if self.current.as_ref().is_some_and(|d| d.index != index) {
            self.abandon();
        }
        let Some(download) = self.current.as_mut() else {
            self.start(cluster, state_path, from, index);
            return Poll::Pending;
        };
        let finished = download.outcome.lock().expect("download outcome").take();
        if let Some(outcome) = finished {
            let download = self.current.take().expect("a download runs");
            return match outcome {
                Ok(info) => Poll::Done {
                    info,
                    incoming: download.incoming,
                },
                Err(failure) => Poll::Failed(failure),
            };
        }
        let received = download.received.load(Ordering::Relaxed);
        if received != download.seen.0 {
            download.seen = (received, Instant::now());
        } else if download.seen.1.elapsed() > self.stall_timeout {
            self.abandon();
            return Poll::Failed(InstallFailure::other(format!(
                "the snapshot download made no progress for {} s",
                self.stall_timeout.as_secs_f64()
            )));
        }
        Poll::Pending
    }

    fn start(&mut self, cluster: &ClusterConfig, state_path: &Path, from: u64, index: u64) {
        self.attempts += 1;
        let incoming = state_path.with_extension(format!("redb.incoming.{}", self.attempts));
        let download = Download {
            index,
            incoming: incoming.clone(),
            received: Arc::new(AtomicU64::new(0)),
            seen: (0, Instant::now()),
            outcome: Arc::new(Mutex::new(None)),
            abandoned: Arc::new(AtomicBool::new(false)),
        };
        let (cluster, path) = (cluster.clone(), state_path.to_path_buf());
        let source = self.source.clone();
        let (received, outcome) = (download.received.clone(), download.outcome.clone());
        let abandoned = download.abandoned.clone();
        let spawned = std::thread::Builder::new()
            .name("snapshot-download".into())
            .spawn(move || {
                let counted = |r: Box<dyn Read>| -> Box<dyn Read> {
                    Box::new(Counting {
                        inner: r,
                        received: received.clone(),
                    })
                };
                let result = fetch_any(&cluster, &*source, from, &path, &incoming, index, counted);
                if abandoned.load(Ordering::Acquire) {
                    let _ = std::fs::remove_file(&incoming);
                }
                *outcome.lock().expect("download outcome") = Some(result);
            });
        if let Err(e) = spawned {
            *download.outcome.lock().expect("download outcome") = Some(Err(InstallFailure::other(
                format!("cannot start the download thread: {e}"),
            )));
        }
        self.current = Some(download);
    }

    fn abandon(&mut self) {
        if let Some(d) = self.current.take() {
            d.abandoned.store(true, Ordering::Release);
            let _ = std::fs::remove_file(&d.incoming);
        }
    }
}

/// Counts what passes through, so that the loop can tell a slow download from a stuck one.
struct Counting {
    inner: Box<dyn Read>,
    received: Arc<AtomicU64>,
}

impl Read for Counting {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.received.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// Side files of downloads a crash or an abandoned attempt left behind.
pub(crate) fn remove_leftovers(state_path: &Path) {
    let (Some(dir), Some(name)) = (state_path.parent(), state_path.file_name()) else {
        return;
    };
    let prefix = format!("{}.incoming", name.to_string_lossy());
    let Ok(entries) = std::fs::read_dir(if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    }) else {
        return;
    };
    for entry in entries.flatten() {
        if entry.file_name().to_string_lossy().starts_with(&prefix) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}
