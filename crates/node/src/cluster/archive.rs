//! The continuous archive's side in the loop (`--archive`): the leader offers every committed
//! entry to the archiver thread in order, from where the archive ends; every archiving node
//! keeps its Raft log from being compacted past what the archive holds, so that whichever node
//! leads next can go on without a gap. The loop never waits on the archiver: an offer it does
//! not take is made again from the log.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

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
    /// When the leader saw the commit index reach each index not yet archived, for the lag in
    /// seconds.
    committed_at: CommitTimes,
}

/// The times the commit index reached its values: one record `(index, at)` per
/// [`COMMIT_TIME_STEP`] at most, each saying the entries after the previous record's index up to
/// `index` were committed at `at` or later. The oldest entry not archived is at least as old as
/// the first record past the archive's end: the lag it gives is never less than the true one,
/// and more by at most one step.
#[derive(Default)]
struct CommitTimes(VecDeque<(u64, Instant)>);

const COMMIT_TIME_STEP: Duration = Duration::from_millis(100);
/// Records kept at most (an unreachable target for hours): past it the last record absorbs the
/// newer indexes, which only makes the lag read older.
const COMMIT_TIMES_KEPT: usize = 100_000;

impl CommitTimes {
    fn committed(&mut self, index: u64, now: Instant) {
        let full = self.0.len() >= COMMIT_TIMES_KEPT;
        match self.0.back_mut() {
            Some((last, _)) if index <= *last => {}
            Some((last, at)) if now.duration_since(*at) < COMMIT_TIME_STEP || full => *last = index,
            _ => self.0.push_back((index, now)),
        }
    }

    /// How long ago the oldest entry after `archived` was committed (zero if none is).
    fn lag(&mut self, archived: u64, now: Instant) -> Duration {
        while self.0.front().is_some_and(|(index, _)| *index <= archived) {
            self.0.pop_front();
        }
        self.0
            .front()
            .map_or(Duration::ZERO, |(_, at)| now.duration_since(*at))
    }
}

impl ArchiveFeed {
    pub(crate) fn new(archiver: Archiver) -> ArchiveFeed {
        ArchiveFeed {
            archiver,
            sent: None,
            relist_at: Instant::now() + RELIST_EVERY,
            offer_after: Instant::now(),
            warned_gap: false,
            committed_at: CommitTimes::default(),
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

    pub(super) fn archive_metrics(&mut self) {
        let leading = self.replica.is_leader();
        let commit = self.replica.commit_index().0;
        let Some(feed) = &mut self.archive else {
            return;
        };
        let progress = feed.archiver.progress();
        let archived = progress.archived().unwrap_or(0);
        self.metrics.archive_index.set(archived as i64);
        // The archiver counts its failures; the counter takes what it has not seen yet.
        let failures = progress.failures.load(Ordering::Relaxed);
        let counted = self.metrics.archive_failures.get();
        self.metrics
            .archive_failures
            .inc_by(failures.saturating_sub(counted));
        let (lag, lag_time) = if leading {
            let now = Instant::now();
            feed.committed_at.committed(commit, now);
            let lag_time = feed.committed_at.lag(archived, now);
            (commit.saturating_sub(archived), lag_time)
        } else {
            feed.committed_at = CommitTimes::default();
            (0, Duration::ZERO)
        };
        self.metrics.archive_lag_entries.set(lag as i64);
        self.metrics.archive_lag_seconds.set(lag_time.as_secs_f64());
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lag_in_time_is_the_age_of_the_oldest_entry_not_archived() {
        let start = Instant::now();
        let at = |ms| start + Duration::from_millis(ms);
        let mut times = CommitTimes::default();
        times.committed(10, at(0));
        // Within one step: merged into the first record (the entries read older, never younger).
        times.committed(15, at(50));
        times.committed(20, at(1_000));
        times.committed(30, at(2_000));
        assert_eq!(times.lag(5, at(3_000)), Duration::from_millis(3_000));
        assert_eq!(times.lag(15, at(3_000)), Duration::from_millis(2_000));
        assert_eq!(times.lag(25, at(3_000)), Duration::from_millis(1_000));
        assert_eq!(times.lag(30, at(3_000)), Duration::ZERO);
        times.committed(31, at(4_000));
        assert_eq!(times.lag(30, at(4_500)), Duration::from_millis(500));
    }
}
