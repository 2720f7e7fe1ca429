//! The continuous archive's side in the loop (`--archive`): the leader offers every committed
//! entry to the archiver thread in order, from where the archive ends; every archiving node
//! keeps its Raft log from being compacted past what the archive holds, so that whichever node
//! leads next can go on without a gap. The loop never waits on the archiver: an offer it does
//! not take is made again from the log.

use std::sync::atomic::Ordering;
use std::time::Instant;

use bulwark_backup::archiver::Archiver;
use raft::GetEntriesContext;

use super::ClusterLoop;

use bulwark_limits::{
    ARCHIVE_OFFER_ENTRIES as OFFER_ENTRIES, ARCHIVE_OFFER_RETRY,
    ARCHIVE_RELIST_EVERY as RELIST_EVERY,
};

pub(crate) struct ArchiveFeed {
    pub(super) archiver: Archiver,
    /// The last index offered while this node leads (`None`: not leading, or not yet known
    /// where the archive ends).
    sent: Option<u64>,
    relist_at: Instant,
    /// After an offer the archiver's full queue refused, the next waits this long: reading the
    /// same entries from the log every round would cost the loop for nothing.
    offer_after: Instant,
    warned_gap: bool,
}

impl ArchiveFeed {
    pub(crate) fn new(archiver: Archiver) -> ArchiveFeed {
        ArchiveFeed {
            archiver,
            sent: None,
            relist_at: Instant::now() + RELIST_EVERY,
            offer_after: Instant::now(),
            warned_gap: false,
        }
    }

    /// What the archive holds, as far as this node knows (`None`: not listed yet).
    pub(crate) fn archived(&self) -> Option<u64> {
        self.archiver.progress().archived()
    }
}

impl ClusterLoop {
    /// Offers the entries committed since the last offer (leader only), or lists the archive now
    /// and then (the others).
    pub(super) fn feed_archive(&mut self) {
        let leading = self.replica.is_leader();
        let applied = bulwark_ledger::StateMachine::applied_index(self.replica.state());
        let first_in_log = raft::Storage::first_index(self.replica.storage()).unwrap_or(1);
        let Some(feed) = self.archive.as_mut() else {
            return;
        };
        if !leading || feed.archived().is_none() {
            feed.sent = None;
            if Instant::now() >= feed.relist_at {
                feed.archiver.relist();
                feed.relist_at = Instant::now() + RELIST_EVERY;
            }
            return;
        }
        if Instant::now() < feed.offer_after {
            return;
        }
        let sent = *feed
            .sent
            .get_or_insert_with(|| feed.archiver.progress().archived().unwrap_or(0));
        let mut from = sent + 1;
        if from > applied {
            return;
        }
        // A new cluster's log starts after its bootstrap configuration (index 1, no entry).
        let only_bootstrap = from == super::BOOTSTRAP_INDEX && first_in_log == from + 1;
        if from < first_in_log {
            if !feed.warned_gap && !only_bootstrap {
                tracing::error!(
                    missing_from = from,
                    missing_to = first_in_log - 1,
                    "the archive misses entries this node's log no longer holds: it has a gap"
                );
                feed.warned_gap = true;
            }
            from = first_in_log;
        }
        let to = applied.min(from + OFFER_ENTRIES - 1);
        let entries = match raft::Storage::entries(
            self.replica.storage(),
            from,
            to + 1,
            Some(bulwark_limits::MAX_ARCHIVE_CHUNK_BYTES as u64),
            GetEntriesContext::empty(false),
        ) {
            Ok(entries) => entries,
            Err(e) => {
                tracing::warn!(from, to, error = %e, "cannot read entries to archive");
                return;
            }
        };
        let Some(last) = entries.last().map(|e| e.index) else {
            return;
        };
        let feed = self.archive.as_mut().expect("checked above");
        match feed.archiver.offer(entries) {
            Ok(()) => feed.sent = Some(last),
            Err(_) => feed.offer_after = Instant::now() + ARCHIVE_OFFER_RETRY,
        }
    }

    /// How many entries behind the checkpoint the log must keep so the archive loses none: all
    /// after what the archive holds (everything while that is not known yet).
    pub(super) fn archive_keep(&self, checkpoint: u64) -> u64 {
        match &self.archive {
            None => 0,
            Some(feed) => checkpoint.saturating_sub(feed.archived().unwrap_or(0)),
        }
    }

    pub(super) fn archive_metrics(&self) {
        let Some(feed) = &self.archive else {
            return;
        };
        let progress = feed.archiver.progress();
        let archived = progress.archived().unwrap_or(0);
        self.metrics.archive_index.set(archived as i64);
        self.metrics
            .archive_failures
            .set(progress.failures.load(Ordering::Relaxed) as i64);
        let lag = if self.replica.is_leader() {
            self.replica.commit_index().0.saturating_sub(archived)
        } else {
            0
        };
        self.metrics.archive_lag_entries.set(lag as i64);
    }

    pub(super) fn archive_status(&self) -> Option<crate::ArchiveStatus> {
        let feed = self.archive.as_ref()?;
        let progress = feed.archiver.progress();
        let archived = progress.archived();
        Some(crate::ArchiveStatus {
            target: feed.archiver.describe().to_string(),
            archiving: self.replica.is_leader(),
            archived_index: archived,
            lag_entries: archived.map(|a| self.replica.commit_index().0.saturating_sub(a)),
            chunks_uploaded: progress.chunks_uploaded.load(Ordering::Relaxed),
            failures: progress.failures.load(Ordering::Relaxed),
            last_upload_ms: Some(progress.last_upload_ms.load(Ordering::Relaxed))
                .filter(|ms| *ms > 0),
            last_error: progress.last_error.lock().expect("not poisoned").clone(),
        })
    }
}
