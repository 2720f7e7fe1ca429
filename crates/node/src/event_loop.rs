//! The one thread that owns the log and the state: reads, then a group of writes made durable
//! by one fsync, then checkpoint housekeeping, round after round.

use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bulwark_ledger::{codec, Batch, LedgerStore, Timestamp};
use bulwark_store::StateStore;
use bulwark_wal::Wal;
use tokio::sync::oneshot;

use crate::{
    Answer, Metrics, NodeConfig, NodeError, NodeStatus, Query, ReadOutcome, Request, WriteOutcome,
};

/// Most events one group commit takes before it syncs, so that latency stays bounded under load.
const MAX_GROUP_EVENTS: usize = 65_536;

type WriteReply = oneshot::Sender<Result<WriteOutcome, NodeError>>;

pub(crate) struct EventLoop {
    config: NodeConfig,
    wal: Wal,
    store: StateStore,
    metrics: Arc<Metrics>,
    encoded: Vec<u8>,
}

impl EventLoop {
    pub(crate) fn new(
        config: NodeConfig,
        wal: Wal,
        store: StateStore,
        metrics: Arc<Metrics>,
    ) -> Self {
        let event_loop = EventLoop {
            config,
            wal,
            store,
            metrics,
            encoded: Vec::new(),
        };
        event_loop.update_gauges();
        event_loop
    }

    pub(crate) fn run(mut self, inbox: Receiver<Request>) -> Result<(), NodeError> {
        let outcome = self.serve(&inbox);
        if let Err(e) = &outcome {
            tracing::error!(error = %e, "event loop stopped on a fatal error");
            // Drain so that no caller waits forever; none of these was applied.
            while let Ok(request) = inbox.try_recv() {
                refuse(request);
            }
            return outcome;
        }
        self.store.checkpoint_now()?;
        self.wal.truncate_prefix(self.store.checkpointed_index())?;
        tracing::info!(
            applied_index = self.store.applied_index(),
            "event loop stopped after a final checkpoint"
        );
        Ok(())
    }

    fn serve(&mut self, inbox: &Receiver<Request>) -> Result<(), NodeError> {
        let mut writes = Vec::new();
        let mut reads = Vec::new();
        loop {
            let wait = if self.store.is_checkpointing() {
                Duration::from_millis(5)
            } else {
                Duration::from_millis(100)
            };
            let mut shutdown = false;
            match inbox.recv_timeout(wait) {
                Ok(first) => {
                    let mut events = 0;
                    let mut next = Some(first);
                    while let Some(request) = next {
                        match request {
                            Request::Write { operation, reply } => {
                                events += operation.len();
                                writes.push((operation, reply));
                            }
                            // A single node is its own leader: every read is current.
                            Request::Read { query, reply, .. } => reads.push((query, reply)),
                            Request::Shutdown => shutdown = true,
                            // A single node has no peers; a stray message is ignored.
                            Request::Peer(_) => {}
                            Request::WaitReplicated { reply, .. } => {
                                let _ = reply.send(Ok(()));
                            }
                            Request::Membership { reply, .. } => {
                                let _ = reply.send(Err(NodeError::Membership(
                                    "a single node (started without --member) has no membership \
                                     to change"
                                        .into(),
                                )));
                            }
                        }
                        next = if events < MAX_GROUP_EVENTS && !shutdown {
                            inbox.try_recv().ok()
                        } else {
                            None
                        };
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => shutdown = true,
            }
            // Reads first: the state now holds exactly the writes already acknowledged.
            for (query, reply) in reads.drain(..) {
                let _ = reply.send(self.answer(query));
            }
            if !writes.is_empty() {
                self.commit_group(&mut writes)?;
            }
            self.housekeeping()?;
            if shutdown {
                return Ok(());
            }
        }
    }

    /// Appends and applies every batch of the group, syncs the log once, then answers them all.
    fn commit_group(
        &mut self,
        writes: &mut Vec<(bulwark_ledger::Operation, WriteReply)>,
    ) -> Result<(), NodeError> {
        let now = wall_clock();
        let mut answers: Vec<(WriteReply, WriteOutcome)> = Vec::with_capacity(writes.len());
        for (operation, reply) in writes.drain(..) {
            let events = operation.len();
            let timestamp = Batch::next_timestamp(self.store.last_timestamp(), now, events);
            let batch = Batch {
                timestamp,
                operation,
            };
            self.encoded.clear();
            codec::encode(&batch, &mut self.encoded);
            let index = match self.wal.append(&self.encoded) {
                Ok(index) => index,
                Err(e) => {
                    let _ = reply.send(Err(NodeError::Stopped));
                    for (reply, _) in answers {
                        let _ = reply.send(Err(NodeError::Stopped));
                    }
                    return Err(e.into());
                }
            };
            let results = self.store.apply_batch(index, &batch);
            self.metrics.batch_events.observe(events as f64);
            self.metrics.events_applied.inc_by(events as u64);
            answers.push((
                reply,
                WriteOutcome {
                    results,
                    commit_index: index,
                    timestamp,
                },
            ));
        }
        let started = Instant::now();
        if let Err(e) = self.wal.sync() {
            // The state in memory now holds batches the disk may not: answer none of them and stop.
            // This holds for a full disk too (the WAL undid the write, but the batches are already
            // applied in memory): unlike a cluster member (`cluster.rs`), the single node does not
            // wait for space; it stops, and restarts from the checkpoint and the durable log.
            for (reply, _) in answers {
                let _ = reply.send(Err(NodeError::Stopped));
            }
            return Err(e.into());
        }
        self.metrics
            .fsync_seconds
            .observe(started.elapsed().as_secs_f64());
        self.metrics
            .group_commit_requests
            .observe(answers.len() as f64);
        for (reply, outcome) in answers {
            let _ = reply.send(Ok(outcome));
        }
        Ok(())
    }

    /// Collects a finished checkpoint (and deletes the log behind it), or starts one when the
    /// memtable or the log has grown enough.
    fn housekeeping(&mut self) -> Result<(), NodeError> {
        // Back-pressure: while a checkpoint is still writing, the next memtable may grow to twice
        // the threshold, no further, so memory stays bounded when the disk is slower than writes.
        let overfull = self.store.memtable_transfers() >= 2 * self.config.checkpoint_transfers;
        let finished = if overfull && self.store.is_checkpointing() {
            self.store.wait_checkpoint()?
        } else {
            self.store.poll_checkpoint()?
        };
        if let Some(done) = finished {
            self.wal.truncate_prefix(done.applied_index)?;
            self.metrics
                .checkpoint_seconds
                .observe(done.duration.as_secs_f64());
            tracing::debug!(
                applied_index = done.applied_index,
                transfers = done.transfers,
                ms = done.duration.as_millis() as u64,
                "checkpoint written"
            );
        }
        let due = self.store.memtable_transfers() >= self.config.checkpoint_transfers
            || self.wal.size_bytes() >= self.config.checkpoint_log_bytes;
        if due {
            self.store.start_checkpoint();
        }
        self.update_gauges();
        Ok(())
    }

    fn update_gauges(&self) {
        let m = &self.metrics;
        m.log_bytes.set(self.wal.size_bytes() as i64);
        m.log_segments.set(self.wal.segment_count() as i64);
        m.applied_index.set(self.store.applied_index() as i64);
        m.accounts.set(self.store.account_count() as i64);
    }

    fn answer(&self, query: Query) -> Result<ReadOutcome, NodeError> {
        let Query::Status = query else {
            return crate::answer_query(&self.store, query);
        };
        Ok(ReadOutcome {
            answer: Answer::Status(NodeStatus {
                applied_index: self.store.applied_index(),
                checkpointed_index: self.store.checkpointed_index(),
                last_timestamp: self.store.last_timestamp(),
                accounts: self.store.account_count(),
                log_first_index: self.wal.first_index(),
                log_last_index: self.wal.last_index(),
                log_bytes: self.wal.size_bytes(),
                log_segments: self.wal.segment_count(),
                cluster: None,
            }),
            applied_index: self.store.applied_index(),
        })
    }
}

fn refuse(request: Request) {
    match request {
        Request::Write { reply, .. } => {
            let _ = reply.send(Err(NodeError::Stopped));
        }
        Request::Read { reply, .. } => {
            let _ = reply.send(Err(NodeError::Stopped));
        }
        Request::Membership { reply, .. } => {
            let _ = reply.send(Err(NodeError::Stopped));
        }
        Request::WaitReplicated { reply, .. } => {
            let _ = reply.send(Err(NodeError::Stopped));
        }
        Request::Peer(_) | Request::Shutdown => {}
    }
}

/// The proposer's clock. Only ever used to pick a batch timestamp before the batch is logged;
/// apply and replay read timestamps from the log, never from here.
fn wall_clock() -> Timestamp {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    Timestamp(nanos)
}
