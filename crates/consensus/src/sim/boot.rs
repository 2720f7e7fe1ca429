//! Starting a node and losing one: what the node loop's start does (`node/src/cluster.rs`:
//! finish an interrupted snapshot install, refuse a state ahead of the log, offer the checkpoint,
//! a sole voter campaigns at once), and a power loss that keeps only what was durable.

use super::*;

/// How many entries a node keeps behind the checkpoint it offers at start.
const KEEP_AT_START: u64 = 4;

impl Sim {
    /// Starts (or restarts) node `i` from its durable storage and last checkpoint (Raft replays
    /// the log after it), with a new boot nonce and election timeout from the seed. A start the
    /// real node would refuse is a failure of the run.
    pub(super) fn start_node(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        let mut storage = node.durable.take().expect("a stopped node has its storage");
        storage.plant_defect(match self.config.defect {
            Some(Defect::CrashKeepsUnsynced) => Some(StorageDefect::CrashKeepsUnsynced),
            Some(Defect::AckBeforeSync) => Some(StorageDefect::SyncReturnsEarly),
            _ => None,
        });
        let intent = node.install_intent.as_ref().map(|m| m.index);
        let finished = crate::install::finish_interrupted(
            &mut super::step::SimIntent(&mut node.install_intent),
            &mut storage,
            &node.checkpoint,
        )
        .expect("the intent is in memory; a snapshot at or past the log's start installs");
        if let crate::install::Interrupted::Decided {
            decision: crate::install::StartDecision::ResetLog,
            ..
        } = finished
        {
            self.report.installs_finished_at_start += 1;
        }
        match crate::recovery::align_log_with_state(&mut storage, &node.checkpoint) {
            Ok(crate::recovery::Alignment::Within) => {}
            Ok(crate::recovery::Alignment::LogMovedTo { .. }) => {
                self.report.logs_moved_to_state += 1
            }
            Err(reason) => {
                self.failure = Some(format!(
                    "node {} cannot start: {reason} (install intent at {intent:?})",
                    node.id
                ));
                node.durable = Some(storage);
                node.restart_at = u64::MAX;
                return;
            }
        }
        let election_tick = (node.base_election_tick + self.rng.below(3)) as usize;
        let mut config = ReplicaConfig::new(NodeId(node.id), self.rng.next_u64());
        config.election_tick = election_tick;
        config.min_election_tick = election_tick;
        config.max_election_tick = election_tick + 1;
        let mut replica =
            Replica::new(config, storage, node.checkpoint.clone()).expect("valid config");
        replica.state_mut().inner.backlogged = node.backlog_until > self.step;
        let checkpoint = node.checkpoint.applied_index();
        if checkpoint > 0 {
            // Offer the checkpoint it restarted from, as the node does.
            replica
                .compact(
                    LogIndex(checkpoint),
                    KEEP_AT_START,
                    checkpoint.to_le_bytes().to_vec(),
                )
                .expect("the disk is not full at start");
        }
        let conf = replica.raw().raft.prs().conf().to_conf_state();
        if conf.voters == [node.id] && conf.voters_outgoing.is_empty() {
            replica.campaign().expect("a sole voter may campaign");
        }
        node.replica = Some(replica);
        node.boot_step = self.step;
        node.boots += 1;
        node.heard_from.clear();
        node.doomed = false;
        // A new process: not yet told it was removed, and no follower known caught up.
        node.removed = false;
        node.replication = super::ReplicationTracker::with_tick(super::STEP);
        node.ack_all = Default::default();
    }

    /// Node `i` loses power: it keeps only what its storage had made durable (at the crash point
    /// it reached, if it reached one) and its last checkpoint, and restarts at `restart_at`. The
    /// messages its transport held for peers that were down die with it.
    pub(super) fn take_down(&mut self, i: usize, restart_at: u64) {
        let node = &mut self.nodes[i];
        let Some(mut replica) = node.replica.take() else {
            return;
        };
        let mut storage = replica.storage_mut().clone();
        // A power loss keeps nothing that was not durable: the entries appended since are gone,
        // or the crashes test nothing. (Losing what was durable is left to the checks of what
        // was acknowledged, which see it as a client would.)
        let durable_last = storage.durable_last_and_commit().0;
        let last = raft::Storage::last_index(&storage).unwrap_or(0);
        storage.crash();
        let kept = raft::Storage::last_index(&storage).unwrap_or(0);
        let kept_unsynced = (kept > durable_last).then(|| {
            format!(
                "node {} lost power with its log durable up to {durable_last}, but kept entries up to {kept}",
                node.id
            )
        });
        // Space is freed while the node is down.
        storage.set_disk_full(false);
        node.disk_full_until = 0;
        node.durable = Some(storage);
        node.restart_at = restart_at;
        node.doomed = false;
        node.down_since = self.step;
        let id = node.id;
        self.network.retain(|m| !(m.queued && m.from == id));
        self.report.crashes += 1;
        self.report.unsynced_entries_lost += last.saturating_sub(durable_last);
        if kept_unsynced.is_some() {
            self.failure = kept_unsynced;
        }
    }

    /// Whether node `i` may lose power now: not while its state is ahead of its durable log
    /// (unless the run allows it), a window in which it could not start again.
    pub(super) fn may_crash(&self, i: usize) -> bool {
        let node = &self.nodes[i];
        let Some(replica) = node.replica.as_ref() else {
            return false;
        };
        let (last, commit) = replica.storage().durable_last_and_commit();
        self.config.crash_ahead_of_log || node.checkpoint.applied_index() <= last.max(commit)
    }

    /// Restarts every node that is down and due.
    pub(super) fn restart_due(&mut self) {
        for i in 0..self.nodes.len() {
            if self.nodes[i].replica.is_none() && self.nodes[i].restart_at <= self.step {
                self.start_node(i);
            }
        }
    }
}
