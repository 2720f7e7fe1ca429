//! The node loop: the thread that owns the replica. Each round takes the requests waiting in the
//! inbox (up to a bound), ticks Raft when a tick is due, handles Raft's Ready (sending, applying,
//! persisting), hands the answers back, and does housekeeping (checkpoints, replication status).

use std::sync::atomic::Ordering;
use std::sync::mpsc::RecvTimeoutError;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bulwark_consensus::replica::{Output, ReplicaError};
use bulwark_consensus::storage::{SnapshotInstallError, StorageError};
use bulwark_consensus::LogIndex;
use bulwark_ledger::{StateMachine, Timestamp};
use bulwark_limits::{
    CHECKPOINT_POLL, DISK_FULL_RETRY, INSTALL_RETRY, KEEP_ENTRIES, MAX_REQUESTS_PER_ROUND,
};
use bulwark_transport::{NodeId, Transport};
use raft::eraftpb::Message;

use super::cadence::{checkpoint_due, Growth};
use super::config::{snapshot_data, snapshot_members, Member};
use super::{ClusterLoop, Recovering, Reply, Stall};
use crate::{answer_query, Inbox, NodeFault, Query, Request, RequestError, WriteOutcome};

impl ClusterLoop {
    pub(super) fn run(mut self, inbox: Inbox) -> Result<(), NodeFault> {
        let outcome = self.serve(&inbox);
        if let Err(e) = &outcome {
            tracing::error!(error = %e, "cluster loop stopped on a fatal error");
            return outcome;
        }
        self.replica.state_mut().checkpoint_now()?;
        let checkpoint = LogIndex(self.replica.state().checkpointed_index());
        self.offer_checkpoint(checkpoint)?;
        tracing::info!(
            applied_index = self.replica.state().applied_index(),
            "cluster loop stopped after a final checkpoint"
        );
        Ok(())
    }

    fn serve(&mut self, inbox: &Inbox) -> Result<(), NodeFault> {
        loop {
            let mut wait = self.next_tick.saturating_duration_since(Instant::now());
            if self.replica.state().is_backlogged() {
                // Writes wait for a checkpoint, whose thread does not wake this one.
                wait = wait.min(CHECKPOINT_POLL);
            }
            let first = match inbox.recv_timeout(wait) {
                Ok(request) => Some(request),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => return Ok(()),
            };
            self.replica.set_now(wall_clock(), monotonic_clock());
            let shutdown = self.take_requests(first, inbox);
            self.tick_if_due();
            self.ready_round()?;
            for output in self.replica.take_outputs() {
                self.deliver(output);
            }
            for change in self.replica.take_conf_changes() {
                self.membership_applied(change);
            }
            self.note_role_and_recovery();
            self.housekeeping()?;
            self.feed_archive();
            if shutdown {
                return Ok(());
            }
        }
    }

    /// Takes `first` and what else waits in the inbox, up to [`MAX_REQUESTS_PER_ROUND`]; true
    /// if a shutdown was asked for.
    fn take_requests(&mut self, first: Option<Request>, inbox: &Inbox) -> bool {
        let mut next = first;
        let mut taken = 0;
        let mut shutdown = false;
        while let Some(request) = next {
            shutdown |= self.take_request(request);
            taken += 1;
            next = if taken < MAX_REQUESTS_PER_ROUND && !shutdown {
                inbox.try_recv()
            } else {
                None
            };
        }
        shutdown
    }

    /// One request; true if it asks for a shutdown.
    fn take_request(&mut self, request: Request) -> bool {
        match request {
            Request::Write { reply, .. } if self.is_disk_full() => {
                let _ = reply.send(Err(self.disk_full_error()));
            }
            Request::Write {
                operation,
                reply,
                permit,
            } => {
                self.metrics.batch_events.observe(operation.len() as f64);
                self.round_writes += 1;
                self.replica.write(operation, Reply::Write(reply, permit));
            }
            Request::Read {
                query,
                stale,
                reply,
                permit,
            } => self.take_read(query, stale, reply, permit),
            // While the node is paused, Raft takes no messages (the replica drops them too while
            // it holds a Ready); peers resend.
            Request::Peer(peer) => {
                if !self.paused() {
                    self.replica.step_timed(peer.message, peer.sender_time)
                }
            }
            Request::Membership { reply, .. } if self.is_disk_full() => {
                let _ = reply.send(Err(self.disk_full_error()));
            }
            Request::Membership {
                change,
                actor,
                reply,
            } => self.propose_membership(change, actor, reply),
            Request::WaitReplicated {
                index,
                reply,
                permit,
            } => self.waiting_all.push(index, (reply, permit)),
            Request::Checkpoint { reply } => self.checkpoint_asked(reply),
            Request::HandOver { reply } => self.hand_over_asked(reply),
            Request::Shutdown => return true,
        }
        false
    }

    fn take_read(
        &mut self,
        query: Query,
        stale: bool,
        reply: tokio::sync::oneshot::Sender<Result<crate::ReadOutcome, RequestError>>,
        permit: super::Permit,
    ) {
        if matches!(query, Query::Status) {
            let _ = reply.send(Ok(self.status()));
        } else if stale && self.replica.state().is_unavailable() {
            // The state store is closed until it can be reopened: what it holds on disk cannot
            // be read meanwhile.
            let _ = reply.send(Err(self.disk_full_error()));
        } else if stale {
            let _ = reply.send(answer_query(self.replica.state(), query));
        } else if self.is_disk_full() {
            let _ = reply.send(Err(self.disk_full_error()));
        } else {
            self.replica.read(Reply::Read(query, reply, permit));
        }
    }

    fn tick_if_due(&mut self) {
        if Instant::now() < self.next_tick {
            return;
        }
        // A removed node keeps its state for inspection but takes no part any more; a paused one
        // (its state store closed) does not tick Raft either.
        let removed = self.view.read().expect("cluster view lock").removed;
        if !removed && !self.replica.state().is_unavailable() {
            self.replica.tick();
        }
        self.next_tick += self.cluster.tick;
        if self.next_tick < Instant::now() {
            self.next_tick = Instant::now() + self.cluster.tick;
        }
    }

    /// Raft's Ready, or the held one again when its retry is due; then what an installed
    /// snapshot leaves to do.
    fn ready_round(&mut self) -> Result<(), NodeFault> {
        // A state store closed after a failed checkpoint must be reopened before anything is
        // applied; a held Ready is retried at a modest pace.
        let run = !self.replica.state().is_unavailable()
            && (!self.replica.is_stalled() || Instant::now() >= self.retry_at);
        if !run {
            return Ok(());
        }
        let transport = self.transport.clone();
        let sent_at = self.replica.proposer_now();
        let (cluster, snapshots) = (&mut self.cluster, &self.snapshots);
        let data_dir = &self.config.data_dir;
        let downloader = &mut self.downloader;
        let mut installed = None;
        let outcome = self.replica.process_ready(
            &mut |messages| send_all(&*transport, messages, sent_at),
            &mut |store, snapshot| {
                super::membership::learn_snapshot_members(cluster, data_dir, &snapshot.data)
                    .map_err(|e| SnapshotInstallError::Failed(e.into()))?;
                crate::install::install_snapshot(cluster, data_dir, store, snapshot, downloader)
                    .map_err(install_error)?;
                *snapshots.lock().expect("snapshot source lock") = Some(store.snapshot_source());
                installed = Some(snapshot_members(&snapshot.data));
                Ok::<(), SnapshotInstallError>(())
            },
        );
        if installed.is_some() {
            self.installed = installed;
        }

        let proposed = std::mem::take(&mut self.round_writes);
        if outcome.is_ok() && proposed > 0 && self.replica.is_leader() {
            self.metrics
                .group_commit_requests
                .observe(f64::from(proposed));
        }
        match outcome {
            Ok(()) => self.stall = Stall::None,
            Err(e) => self.held(e)?,
        }
        self.update_disk_full();
        // Until the log held at start is applied again, the store's tokens are those of its
        // checkpoint: a token created since would be called invalid (401). The API answers 503
        // `starting` until the first publication instead.
        if self.recovering.is_none() {
            crate::access::publish(&self.access, self.replica.state());
        }
        let last = bulwark_ledger::LedgerStore::last_timestamp(self.replica.state());
        self.last_applied.send_if_modified(|published| {
            let moved = *published != last;
            *published = last;
            moved
        });
        if !self.replica.is_stalled() {
            if let Some(members) = self.installed.take() {
                self.snapshot_installed(members)?;
            }
        }
        Ok(())
    }

    /// A Ready could not be persisted and is held: for lack of space (retried until there is
    /// space), or because a snapshot could not be installed (fetched again, from any member, a
    /// little later). Anything else is fatal: the log or the state may not be what they say.
    fn held(&mut self, e: StorageError) -> Result<(), NodeFault> {
        let install_failed = matches!(e, StorageError::SnapshotInstall { .. });
        let install_pending = matches!(
            e,
            StorageError::SnapshotInstall {
                source: SnapshotInstallError::Pending,
                ..
            }
        );
        if !self.replica.is_stalled() || !(e.is_disk_full() || install_failed) {
            return Err(NodeFault::RaftLog {
                dir: self.config.data_dir.clone(),
                source: e,
            });
        }
        if e.is_disk_full() {
            self.retry_at = Instant::now() + DISK_FULL_RETRY;
            tracing::debug!(error = %e, "persisting a Raft Ready failed for lack of space; retrying");
            if !self.is_disk_full() {
                tracing::warn!(
                    error = %e,
                    dir = %self.config.data_dir.display(),
                    "no space left on device: refusing writes until space is freed \
                     (retrying every {} ms)",
                    DISK_FULL_RETRY.as_millis()
                );
            }
            self.stall = Stall::DiskFull;
        } else if install_pending {
            // The download runs on its own thread; look again soon. A node that met a full disk
            // stays disk-full until the held Ready is persisted, whatever it downloads meanwhile.
            self.retry_at = Instant::now() + self.cluster.tick;
            if self.stall != Stall::DiskFull {
                self.stall = Stall::Installing;
            }
        } else {
            self.retry_at = Instant::now() + INSTALL_RETRY;
            tracing::warn!(error = %e, "installing a snapshot failed; trying again in {} ms", INSTALL_RETRY.as_millis());
            self.stall = Stall::Installing;
        }
        Ok(())
    }

    /// The Raft log was reset to the installed snapshot: the install is whole. Learn the members
    /// the snapshot covers, and offer the new checkpoint in turn (a node that leads before its
    /// next checkpoint must not offer one below its own log).
    fn snapshot_installed(&mut self, members: Vec<Member>) -> Result<(), NodeFault> {
        crate::install::finished(&self.config.data_dir).map_err(|source| NodeFault::Io {
            what: "remove the snapshot install intent in",
            path: self.config.data_dir.clone(),
            source,
        })?;
        tracing::info!(
            applied_index = self.replica.state().applied_index(),
            "caught up by installing a snapshot"
        );
        // The snapshot's sender told us every member's address as of the snapshot: the
        // membership changes it covers will not be replayed here.
        for m in members {
            match self.cluster.members.iter_mut().find(|x| x.id == m.id) {
                Some(x) => *x = m,
                None => self.cluster.members.push(m),
            }
        }
        let conf = self.replica.raw().raft.prs().conf().to_conf_state();
        self.update_members(&conf);
        let snapshot_index = LogIndex(self.replica.raw().raft.raft_log.first_index() - 1);
        // A change of ours the snapshot shows done is answered (done by that index).
        for answer in self.joint_replies.installed(&conf) {
            let _ = answer.reply.send(Ok(snapshot_index));
        }
        self.offer_checkpoint(snapshot_index)
    }

    /// Offers the checkpoint at `index` (or, for an installed snapshot, the snapshot's index, which
    /// the checkpoint covers) as the snapshot for lagging followers, and drops the Raft log behind
    /// it but for [`KEEP_ENTRIES`] (none on a node alone in its configuration: a node added later
    /// starts from a snapshot anyway).
    pub(super) fn offer_checkpoint(&mut self, index: LogIndex) -> Result<(), NodeFault> {
        let conf = self.replica.raw().raft.prs().conf().to_conf_state();
        let alone = conf.voters.len() + conf.learners.len() <= 1;
        let keep = if alone { 0 } else { KEEP_ENTRIES };
        let keep = keep.max(self.archive_keep(index.0));
        let data = snapshot_data(&self.cluster);
        self.replica
            .compact(index, keep, data)
            .map_err(|source| NodeFault::Compact {
                dir: self.config.data_dir.clone(),
                source,
            })?;
        self.log_bytes_after_compaction = self.replica.storage().log_size().0;
        Ok(())
    }

    /// Logs role changes, and the end of recovery: once everything the log held at start is
    /// applied again.
    fn note_role_and_recovery(&mut self) {
        let leader = self.replica.is_leader();
        let now = crate::Leadership {
            term: self.replica.term().0,
            leading: leader,
        };
        self.leadership.send_if_modified(|published| {
            let changed = *published != now;
            *published = now;
            changed
        });
        if leader != self.was_leader {
            tracing::info!(
                term = self.replica.term().0,
                role = ?self.replica.role(),
                "role changed"
            );
            self.was_leader = leader;
        }
        self.note_leader(leader);
        let applied = LogIndex(self.replica.state().applied_index());
        // A follower may never apply its whole log (a new leader can replace its tail): once it
        // has applied what the leader says is committed, it has recovered too.
        let caught_up =
            !leader && self.replica.leader().is_some() && applied >= self.replica.commit_index();
        let done = |r: &Recovering| applied >= r.log_last_index || caught_up;
        if let Some(r) = self.recovering.filter(done) {
            tracing::info!(
                checkpoint = r.checkpoint.0,
                replayed = applied.min(r.log_last_index).entries_since(r.checkpoint),
                applied_index = applied.min(r.log_last_index).max(r.checkpoint).0,
                elapsed_ms = r.started.elapsed().as_millis() as u64,
                "recovered"
            );
            self.recovering = None;
        }
    }

    /// Publishes the term and who leads; logs and counts each change of the leader known (a
    /// member's, not a moment without one: flapping shows as many changes in little time).
    fn note_leader(&mut self, leading: bool) {
        let term = self.replica.term().0;
        let known = self.replica.leader();
        self.metrics.raft_term.set(term as i64);
        self.metrics.is_leader.set(i64::from(leading));
        self.metrics.has_leader.set(i64::from(known.is_some()));
        let Some(new) = known else {
            return;
        };
        if self.known_leader == Some(new) {
            return;
        }
        let previous = self.known_leader.replace(new);
        if previous.is_some() {
            self.metrics.leader_changes.inc();
        }
        tracing::info!(
            term,
            leader = new.0,
            previous = previous.map(|p| p.0),
            this_node_leads = leading,
            "leader changed"
        );
    }

    pub(super) fn is_disk_full(&self) -> bool {
        self.disk_full.load(Ordering::Acquire)
    }

    fn disk_full_error(&self) -> RequestError {
        RequestError::DiskFull {
            dir: self.config.data_dir.clone(),
        }
    }

    /// Raft takes no input: a Ready is held (it could not be persisted) or the state store is
    /// closed until it can be reopened.
    fn paused(&self) -> bool {
        self.replica.is_stalled() || self.replica.state().is_unavailable()
    }

    /// Publishes whether the disk is full (flag, gauge, readiness, log lines on each change).
    fn update_disk_full(&mut self) {
        let full = (self.replica.is_stalled() && self.stall == Stall::DiskFull)
            || self.replica.state().is_unavailable();
        if full == self.is_disk_full() {
            return;
        }
        self.disk_full.store(full, Ordering::Release);
        self.metrics.disk_full.set(i64::from(full));
        if full {
            self.full_since = Some(Instant::now());
            if self.replica.state().is_unavailable() && !self.replica.is_stalled() {
                tracing::warn!(
                    dir = %self.config.data_dir.display(),
                    "no space left on device: the state store is closed until it can be reopened; \
                     refusing writes until space is freed"
                );
            }
        } else {
            let secs = self
                .full_since
                .take()
                .map_or(0.0, |t| t.elapsed().as_secs_f64());
            tracing::info!(
                dir = %self.config.data_dir.display(),
                full_for_secs = secs,
                "space is available again: the node persists and takes writes again"
            );
        }
        if full {
            self.view.write().expect("cluster view lock").ready = false;
        }
    }

    fn deliver(&mut self, output: Output<Reply>) {
        match output {
            Output::Written { token, written } => {
                self.metrics
                    .events_applied
                    .inc_by(written.results.len() as u64);
                if let Reply::Write(reply, _permit) = token {
                    let _ = reply.send(Ok(WriteOutcome {
                        results: written.results,
                        commit_index: written.index,
                        timestamp: written.timestamp,
                    }));
                }
            }
            Output::WriteFailed { token, error } | Output::ReadFailed { token, error } => {
                let error = match error {
                    ReplicaError::NotLeader { leader } => RequestError::NotLeader { leader },
                    ReplicaError::Dropped => RequestError::Dropped,
                    ReplicaError::Indeterminate => RequestError::OutcomeUnknown,
                    ReplicaError::ReadTimeout => RequestError::NotLeader { leader: None },
                    // A follower fetching a snapshot holds its Ready too: its writes go to
                    // the leader, as any follower's.
                    ReplicaError::Stalled if self.stall == Stall::Installing => {
                        RequestError::NotLeader {
                            leader: self.replica.leader(),
                        }
                    }
                    ReplicaError::Stalled => self.disk_full_error(),
                    ReplicaError::Raft(reason) => RequestError::NotLeader {
                        leader: {
                            tracing::debug!(%reason, "raft refused a request");
                            self.replica.leader()
                        },
                    },
                };
                match token {
                    Reply::Write(reply, _permit) => {
                        let _ = reply.send(Err(error));
                    }
                    Reply::Read(_, reply, _permit) => {
                        let _ = reply.send(Err(error));
                    }
                    Reply::Membership(reply) => {
                        let _ = reply.send(Err(error));
                    }
                }
            }
            Output::ReadReady { token, .. } => {
                if let Reply::Read(query, reply, _permit) = token {
                    let _ = reply.send(answer_query(self.replica.state(), query));
                }
            }
        }
    }

    fn housekeeping(&mut self) -> Result<(), NodeFault> {
        self.track_replication();
        let store = self.replica.state_mut();
        if let Some(done) = store.poll_checkpoint()? {
            // The checkpoint is durable: offer it to lagging followers and drop the log behind.
            self.offer_checkpoint(LogIndex(done.applied_index))?;
            self.metrics
                .checkpoint_seconds
                .observe(done.duration.as_secs_f64());
            tracing::info!(
                index = done.applied_index,
                transfers = done.transfers,
                duration_ms = done.duration.as_millis() as u64,
                nice = done.nice,
                "checkpoint written"
            );
            self.checkpoint_done(LogIndex(done.applied_index));
        }
        self.note_held_writes();
        let log = &self.replica.raw().raft.raft_log;
        let log_entries = log.last_index().saturating_sub(log.first_index());
        let (log_bytes, _) = self.replica.storage().log_size();
        let stalled = self.replica.is_stalled();
        // Raft asked for a snapshot to send and the offer could not serve it (none yet, or the
        // last checkpoint ended below a membership change): make one.
        let snapshot_wanted = self.replica.take_snapshot_wanted();
        let store = self.replica.state_mut();
        let growth = Growth {
            memtable_transfers: store.memtable_transfers(),
            checkpoint_transfers: self.config.checkpoint_transfers,
            log_entries,
            log_bytes: log_bytes.saturating_sub(self.log_bytes_after_compaction),
            segment_bytes: self.config.segment_bytes,
            applied_past_checkpoint: store.applied_index() > store.checkpointed_index(),
        };
        // Not while a Ready is held: it may be a snapshot about to replace this store.
        if !stalled && (snapshot_wanted || checkpoint_due(growth)) {
            store.start_checkpoint();
        }
        self.metrics
            .applied_index
            .set(self.replica.state().applied_index() as i64);
        let (log_bytes, log_segments) = self.replica.storage().log_size();
        self.metrics.log_bytes.set(log_bytes as i64);
        self.metrics.log_segments.set(log_segments as i64);
        self.metrics
            .accounts
            .set(self.replica.state().account_count() as i64);
        let (outbound, dead) = self.replica.state().outbox_depth();
        self.metrics.outbox_outbound.set(outbound as i64);
        self.metrics.outbox_dead.set(dead as i64);
        self.archive_metrics();
        Ok(())
    }

    /// Counts and logs the time a leader held new writes until a checkpoint was written.
    fn note_held_writes(&mut self) {
        let holding = self.replica.is_leader() && self.replica.state().is_backlogged();
        match (holding, self.held_since) {
            (true, None) => self.held_since = Some(Instant::now()),
            (false, Some(since)) => {
                self.held_since = None;
                let held = since.elapsed();
                self.metrics.writes_held_seconds.inc_by(held.as_secs_f64());
                tracing::info!(
                    held_ms = held.as_millis() as u64,
                    "writes held until a checkpoint was written (the load outran checkpoints)"
                );
            }
            _ => {}
        }
    }
}

/// What a failed install means for the held Ready: look again shortly (the download runs),
/// retry once space is freed, or fetch again a little later.
fn install_error(failure: crate::install::InstallFailure) -> SnapshotInstallError {
    if failure.pending {
        SnapshotInstallError::Pending
    } else if failure.disk_full {
        SnapshotInstallError::DiskFull(failure.message.into())
    } else {
        SnapshotInstallError::Failed(failure.message.into())
    }
}

fn send_all(transport: &dyn Transport, messages: Vec<Message>, sent_at: Timestamp) {
    for message in messages {
        match crate::peer_frame::encode(&message, sent_at) {
            Ok(bytes) => transport.send(NodeId(message.to), bytes),
            Err(e) => tracing::error!(error = %e, "cannot encode a Raft message"),
        }
    }
}

/// Time since this process first asked: the replica's monotonic clock (see
/// `bulwark_consensus::clock`).
pub(super) fn monotonic_clock() -> Duration {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    START.get_or_init(Instant::now).elapsed()
}

/// The wall clock (plus the offset a test build may be given: `bulwark_fs::test_faults`).
pub(super) fn wall_clock() -> Timestamp {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let offset_ns = bulwark_fs::test_faults::wall_clock_offset_ms().saturating_mul(1_000_000);
    Timestamp(nanos.saturating_add_signed(offset_ns))
}
