//! The continuous archive's uploader: a thread of its own that takes committed entries from the
//! node loop (never blocking it: the loop offers, and keeps its place in its own log when the
//! queue is full), seals them into chunks at least once a second, and stores each chunk whole.
//! A failed upload is retried with the same entries (backoff up to 5 s); nothing is dropped.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use raft::eraftpb::Entry;

use crate::catalog::ArchiveListing;
use crate::chunk;
use crate::target::Target;

use bulwark_limits::{
    ARCHIVE_MAX_BACKOFF as MAX_BACKOFF, ARCHIVE_QUEUE as QUEUE,
    ARCHIVE_SEAL_INTERVAL as SEAL_INTERVAL, MAX_ARCHIVE_CHUNK_BYTES as MAX_CHUNK_BYTES,
};

/// What the node reports about its archive (`/v1/status`, `/metrics`).
#[derive(Debug, Default)]
pub struct ArchiveProgress {
    /// The highest index the archive is known to hold (listed or uploaded); valid once `known`.
    archived: AtomicU64,
    known: AtomicBool,
    pub chunks_uploaded: AtomicU64,
    pub failures: AtomicU64,
    /// When the last chunk was stored (ms since the Unix epoch; 0: none yet).
    pub last_upload_ms: AtomicU64,
    pub last_error: Mutex<Option<String>>,
}

impl ArchiveProgress {
    /// The highest index the archive holds, once the target was listed.
    pub fn archived(&self) -> Option<u64> {
        self.known
            .load(Ordering::Acquire)
            .then(|| self.archived.load(Ordering::Acquire))
    }

    fn advance(&self, index: u64) {
        self.archived.fetch_max(index, Ordering::AcqRel);
        self.known.store(true, Ordering::Release);
    }
}

enum Message {
    Entries(Vec<Entry>),
    /// List the target again (another node may have archived since).
    Relist,
}

/// The node's end of the archiver. Dropping it seals what is buffered and stops the thread.
pub struct Archiver {
    tx: Option<SyncSender<Message>>,
    progress: Arc<ArchiveProgress>,
    thread: Option<std::thread::JoinHandle<()>>,
    describe: String,
}

impl Archiver {
    pub fn start(target: Box<dyn Target>, cluster_id: u64) -> std::io::Result<Archiver> {
        let (tx, rx) = mpsc::sync_channel(QUEUE);
        let progress = Arc::new(ArchiveProgress::default());
        let describe = target.describe();
        let mut worker = Worker {
            target,
            cluster_id,
            progress: progress.clone(),
            buffer: Vec::new(),
            buffered_bytes: 0,
            first_buffered_at: None,
            retry_at: None,
            backoff: Duration::from_millis(100),
        };
        let thread = std::thread::Builder::new()
            .name("archiver".into())
            .spawn(move || worker.run(rx))?;
        Ok(Archiver {
            tx: Some(tx),
            progress,
            thread: Some(thread),
            describe,
        })
    }

    pub fn progress(&self) -> &Arc<ArchiveProgress> {
        &self.progress
    }

    pub fn describe(&self) -> &str {
        &self.describe
    }

    /// Hands committed entries (consecutive) to the thread; gives them back when its queue is
    /// full (the caller offers them again later from its log).
    pub fn offer(&self, entries: Vec<Entry>) -> Result<(), Vec<Entry>> {
        let tx = self.tx.as_ref().expect("the archiver runs until dropped");
        match tx.try_send(Message::Entries(entries)) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(Message::Entries(e)))
            | Err(TrySendError::Disconnected(Message::Entries(e))) => Err(e),
            Err(_) => unreachable!("only entries were sent"),
        }
    }

    /// Asks the thread to list the target again (best effort: skipped when its queue is full).
    pub fn relist(&self) {
        if let Some(tx) = &self.tx {
            let _ = tx.try_send(Message::Relist);
        }
    }
}

impl Drop for Archiver {
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

struct Worker {
    target: Box<dyn Target>,
    cluster_id: u64,
    progress: Arc<ArchiveProgress>,
    buffer: Vec<Entry>,
    buffered_bytes: usize,
    first_buffered_at: Option<Instant>,
    retry_at: Option<Instant>,
    backoff: Duration,
}

impl Worker {
    fn run(&mut self, rx: mpsc::Receiver<Message>) {
        self.relist();
        loop {
            let wait = self.next_deadline().map_or(SEAL_INTERVAL, |at| {
                at.saturating_duration_since(Instant::now())
            });
            match rx.recv_timeout(wait) {
                Ok(Message::Entries(entries)) => self.take(entries),
                Ok(Message::Relist) => self.relist(),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    // The node stops: what is buffered is committed, so store it (one try each
                    // for a few seconds at most).
                    let give_up = Instant::now() + Duration::from_secs(5);
                    while !self.buffer.is_empty() && Instant::now() < give_up {
                        if !self.seal() {
                            std::thread::sleep(Duration::from_millis(200));
                        }
                    }
                    return;
                }
            }
            let due = self.next_deadline().is_some_and(|at| at <= Instant::now());
            if due || self.buffered_bytes >= MAX_CHUNK_BYTES {
                self.seal();
            }
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        let seal = self.first_buffered_at.map(|at| at + SEAL_INTERVAL)?;
        Some(self.retry_at.map_or(seal, |retry| retry.max(seal)))
    }

    fn relist(&mut self) {
        match ArchiveListing::read(&*self.target, self.cluster_id) {
            Ok(listing) => self.progress.advance(listing.last_index().unwrap_or(0)),
            Err(e) => self.failed(format!("list the archive: {e}")),
        }
    }

    /// Buffers the entries past what the archive and the buffer hold.
    fn take(&mut self, entries: Vec<Entry>) {
        let held = self
            .buffer
            .last()
            .map(|e| e.index)
            .unwrap_or(0)
            .max(self.progress.archived.load(Ordering::Acquire));
        for entry in entries.into_iter().filter(|e| e.index > held) {
            if let Some(last) = self.buffer.last() {
                if entry.index != last.index + 1 {
                    // Never happens when the loop feeds in order; a chunk holds only
                    // consecutive entries, so what is buffered goes first.
                    tracing::error!(
                        after = last.index,
                        next = entry.index,
                        "archive: entries out of order"
                    );
                    self.seal();
                    if !self.buffer.is_empty() {
                        return;
                    }
                }
            }
            self.buffered_bytes += entry.data.len() + 32;
            self.buffer.push(entry);
            self.first_buffered_at.get_or_insert_with(Instant::now);
        }
    }

    /// Seals the buffer into a chunk and stores it; false if that failed (kept to retry).
    fn seal(&mut self) -> bool {
        let (Some(first), Some(last)) = (self.buffer.first(), self.buffer.last()) else {
            return true;
        };
        let (first, last) = (first.index, last.index);
        let bytes = chunk::encode(self.cluster_id, &self.buffer, crate::now_ms());
        let name = chunk::chunk_name(self.cluster_id, first, last);
        match self.target.put(&name, &bytes) {
            Ok(()) => {
                self.progress.advance(last);
                self.progress
                    .chunks_uploaded
                    .fetch_add(1, Ordering::Relaxed);
                self.progress
                    .last_upload_ms
                    .store(crate::now_ms(), Ordering::Relaxed);
                *self.progress.last_error.lock().expect("not poisoned") = None;
                self.buffer.clear();
                self.buffered_bytes = 0;
                self.first_buffered_at = None;
                self.retry_at = None;
                self.backoff = Duration::from_millis(100);
                tracing::debug!(first, last, bytes = bytes.len(), "archived a chunk");
                true
            }
            Err(e) => {
                self.failed(format!("store {name}: {e}"));
                self.retry_at = Some(Instant::now() + self.backoff);
                self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
                false
            }
        }
    }

    fn failed(&self, why: String) {
        self.progress.failures.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(target = %self.target.describe(), error = %why, "archiving failed; retrying");
        *self.progress.last_error.lock().expect("not poisoned") = Some(why);
    }
}
