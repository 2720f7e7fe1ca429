//! A node's local log of refused requests: every 401, 403, 415 and 429 of the API and every peer
//! connection the transport refused — who (token id or peer identity), what, when, from where.
//! Local, not replicated: a refusal changes nothing, and a flood of them must cost the cluster
//! nothing.
//!
//! ```text
//! audit/refusals.log, audit/refusals.log.1  (the older half)
//! record = len:u32 LE | crc32c:u32 LE (over payload) | payload (one JSON object)
//! ```
//!
//! Bounded: when the current file passes half of `MAX_REFUSALS_LOG_BYTES` it becomes `.1`
//! (replacing the older one) and a new file starts, so the log never holds more than the bound
//! and always the latest refusals. Recording never blocks a request: records go through a
//! bounded queue to a writer thread, and when the queue is full they are counted and dropped.
//! The writer flushes each record and fsyncs at most once a second: a refusal is evidence, not
//! money, and losing the last second of it to a power cut is the price of never slowing a node.
//! Reading stops at a torn or damaged record at the end of a file (the last write of a crash).

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bulwark_limits::{MAX_REFUSALS_LOG_BYTES, REFUSALS_QUEUE};
use serde::{Deserialize, Serialize};

/// One refused request or connection.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refusal {
    /// Wall-clock nanoseconds since the Unix epoch, when it was refused.
    pub at: u64,
    /// `unauthorized`, `forbidden`, `unsupported_media_type`, `rate_limited`, `peer_refused`, ...
    pub code: String,
    /// The HTTP status, or 0 for a peer connection.
    pub status: u16,
    /// The token id it presented (when the token was valid), or the node id a peer claimed.
    pub who: Option<String>,
    /// The method and path (at most 160 characters), or what the peer connection was.
    pub what: String,
    /// The address it came from, when known.
    pub from: Option<String>,
}

impl Refusal {
    pub fn now(
        code: &str,
        status: u16,
        who: Option<String>,
        what: String,
        from: Option<String>,
    ) -> Refusal {
        let at = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let what: String = what.chars().take(160).collect();
        Refusal {
            at,
            code: code.to_string(),
            status,
            who,
            what,
            from,
        }
    }
}

/// Where refusals are recorded; cheap to clone.
#[derive(Clone)]
pub struct RefusalLog {
    queue: SyncSender<Refusal>,
    dir: Arc<PathBuf>,
    dropped: Arc<AtomicU64>,
}

impl RefusalLog {
    /// Opens (creating) `dir` and starts the writer thread.
    pub fn open(dir: &Path) -> std::io::Result<RefusalLog> {
        RefusalLog::open_bounded(dir, MAX_REFUSALS_LOG_BYTES)
    }

    fn open_bounded(dir: &Path, max_bytes: u64) -> std::io::Result<RefusalLog> {
        bulwark_fs::create_dir_all_durably(dir)?;
        let file = open_current(dir)?;
        // The file's entry, if it was just created, must survive a power cut like its records.
        bulwark_fs::fsync_dir(dir)?;
        let (queue, records) = sync_channel(REFUSALS_QUEUE);
        let writer_dir = dir.to_path_buf();
        std::thread::Builder::new()
            .name("refusals-log".into())
            .spawn(move || write_loop(&writer_dir, file, records, max_bytes))?;
        Ok(RefusalLog {
            queue,
            dir: Arc::new(dir.to_path_buf()),
            dropped: Arc::new(AtomicU64::new(0)),
        })
    }

    /// Records a refusal without waiting; dropped (and counted) when the writer is behind.
    pub fn record(&self, refusal: Refusal) {
        match self.queue.try_send(refusal) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Refusals not recorded because the writer was behind.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// The records after the first `skip`, oldest first, at most `limit` (the older file first).
    pub fn read(&self, skip: usize, limit: usize) -> std::io::Result<Vec<Refusal>> {
        read_dir(&self.dir, skip, limit)
    }
}

impl std::fmt::Debug for RefusalLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RefusalLog({})", self.dir.display())
    }
}

/// Two handles are equal when they write the same log.
impl PartialEq for RefusalLog {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.dir, &other.dir)
    }
}

impl Eq for RefusalLog {}

fn current_path(dir: &Path) -> PathBuf {
    dir.join("refusals.log")
}

fn older_path(dir: &Path) -> PathBuf {
    dir.join("refusals.log.1")
}

fn open_current(dir: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(current_path(dir))
}

fn write_loop(dir: &Path, file: File, records: Receiver<Refusal>, max_bytes: u64) {
    let mut size = file.metadata().map_or(0, |m| m.len());
    let mut out = BufWriter::new(file);
    let mut synced = Instant::now();
    loop {
        let record = match records.recv_timeout(Duration::from_secs(1)) {
            Ok(record) => Some(record),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => None,
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return,
        };
        if let Some(record) = record {
            let payload = serde_json::to_vec(&record).expect("a refusal encodes");
            let mut frame = Vec::with_capacity(8 + payload.len());
            frame.extend_from_slice(&(payload.len() as u32).to_le_bytes());
            frame.extend_from_slice(&crc32c::crc32c(&payload).to_le_bytes());
            frame.extend_from_slice(&payload);
            if let Err(e) = out.write_all(&frame).and_then(|()| out.flush()) {
                tracing::warn!(error = %e, "cannot write the refusals log");
                continue;
            }
            size += frame.len() as u64;
        }
        if synced.elapsed() >= Duration::from_secs(1) {
            let _ = out.get_ref().sync_data();
            synced = Instant::now();
        }
        if size >= max_bytes / 2 {
            match rotate(dir, &mut out) {
                Ok(()) => size = 0,
                Err(e) => tracing::warn!(error = %e, "cannot rotate the refusals log"),
            }
        }
    }
}

/// The current file becomes the older one; a new current file starts.
fn rotate(dir: &Path, out: &mut BufWriter<File>) -> std::io::Result<()> {
    out.flush()?;
    out.get_ref().sync_data()?;
    std::fs::rename(current_path(dir), older_path(dir))?;
    *out = BufWriter::new(open_current(dir)?);
    Ok(bulwark_fs::fsync_dir(dir)?)
}

fn read_dir(dir: &Path, skip: usize, limit: usize) -> std::io::Result<Vec<Refusal>> {
    let mut all = Vec::new();
    for path in [older_path(dir), current_path(dir)] {
        match File::open(&path) {
            Ok(mut file) => {
                let mut bytes = Vec::new();
                file.read_to_end(&mut bytes)?;
                all.extend(parse(&bytes, &path));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(all.into_iter().skip(skip).take(limit).collect())
}

/// The records of one file, up to the first that is torn or damaged.
fn parse(bytes: &[u8], path: &Path) -> Vec<Refusal> {
    let mut records = Vec::new();
    let mut at = 0;
    while at + 8 <= bytes.len() {
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4")) as usize;
        let crc = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().expect("4"));
        let Some(payload) = bytes.get(at + 8..at + 8 + len) else {
            break;
        };
        let record = (crc32c::crc32c(payload) == crc)
            .then(|| serde_json::from_slice(payload).ok())
            .flatten();
        let Some(record) = record else {
            tracing::warn!(file = %path.display(), offset = at, "a damaged record ends the refusals log here");
            break;
        };
        records.push(record);
        at += 8 + len;
    }
    records
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(n: u64) -> Refusal {
        Refusal {
            at: n,
            code: "unauthorized".into(),
            status: 401,
            who: None,
            what: format!("GET /v1/accounts/{n}"),
            from: Some("127.0.0.1:5000".into()),
        }
    }

    fn wait_for(log: &RefusalLog, n: usize) -> Vec<Refusal> {
        for _ in 0..200 {
            let records = log.read(0, usize::MAX).unwrap();
            if records.len() >= n {
                return records;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("the writer did not write {n} records");
    }

    #[test]
    fn records_come_back_in_order_across_a_reopen_and_a_torn_tail_is_cut() {
        let dir = tempfile::tempdir().unwrap();
        let log = RefusalLog::open(dir.path()).unwrap();
        for n in 0..5 {
            log.record(refusal(n));
        }
        assert_eq!(wait_for(&log, 5), (0..5).map(refusal).collect::<Vec<_>>());
        assert_eq!(log.read(3, 10).unwrap(), [refusal(3), refusal(4)]);
        // A torn last record (a crash mid-write) and a damaged one end the file there.
        let path = current_path(dir.path());
        let mut bytes = std::fs::read(&path).unwrap();
        bytes.extend_from_slice(&[50, 0, 0, 0, 1, 2]);
        std::fs::write(&path, &bytes).unwrap();
        assert_eq!(log.read(0, 10).unwrap().len(), 5);
        let last = bytes.len() - 10;
        bytes[last] ^= 0xff;
        std::fs::write(&path, &bytes).unwrap();
        assert_eq!(log.read(0, 10).unwrap().len(), 4);
    }

    #[test]
    fn the_log_stays_within_its_bound_and_keeps_the_latest() {
        let dir = tempfile::tempdir().unwrap();
        let bound = 64 << 10;
        let log = RefusalLog::open_bounded(dir.path(), bound).unwrap();
        let each = serde_json::to_vec(&refusal(1_000_000)).unwrap().len() as u64 + 8;
        let n = 3 * bound / each;
        for i in 0..n {
            // Waiting for room: this test is about the bound, not the queue.
            log.queue.send(refusal(1_000_000 + i)).unwrap();
        }
        let last = refusal(1_000_000 + n - 1);
        for _ in 0..500 {
            if log.read(0, usize::MAX).unwrap().last() == Some(&last) {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(log.read(0, usize::MAX).unwrap().last(), Some(&last));
        let bytes: u64 = [current_path(dir.path()), older_path(dir.path())]
            .iter()
            .map(|p| std::fs::metadata(p).map_or(0, |m| m.len()))
            .sum();
        assert!(bytes <= bound + each, "{bytes} bytes");
        assert!(bytes >= bound / 2, "{bytes} bytes: the older half is kept");
    }
}
