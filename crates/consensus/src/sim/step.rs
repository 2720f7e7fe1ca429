//! One tick of simulated time.

use super::*;
use crate::install::{InstallIo, InstallPoint, InstallStop, IntentIo};

/// What one round of Ready handling produced across the cluster.
#[derive(Default)]
struct Round {
    /// Messages sent this round, with their sender's proposer time when they left.
    outbox: Vec<(Message, Timestamp)>,
    /// Answers, with the node that gave them.
    outputs: Vec<(u64, Output<u64>)>,
}

impl Sim {
    /// One tick of simulated time: deliver due messages, tick every replica, feed the client
    /// workload, process every replica's Ready, then check.
    pub(super) fn step(&mut self, chaos: bool) -> Result<(), Violation> {
        self.step += 1;
        self.deliver_due();
        self.tick_all();
        self.client_workload(chaos);
        let mut round = Round::default();
        for i in 0..self.nodes.len() {
            self.process_node(i, chaos, &mut round);
            self.maybe_checkpoint(i, chaos);
        }
        for (message, sender_time) in round.outbox {
            self.send(message, sender_time);
        }
        let early = std::mem::take(&mut self.early_answers);
        for (node, output) in early.into_iter().chain(round.outputs) {
            self.handle_output(node, output)?;
        }
        self.check()
    }

    /// Delivers the messages due by now, in (time, seq) order. A message for a node that is down
    /// may wait in its sender's transport queue (as the real TCP transport's do) and reach the
    /// node's next incarnation.
    fn deliver_due(&mut self) {
        let now = self.step;
        self.network.sort_by_key(|m| (m.deliver_at, m.seq));
        let due = self
            .network
            .iter()
            .take_while(|m| m.deliver_at <= now)
            .count();
        let delivering: Vec<InFlight> = self.network.drain(..due).collect();
        for mut m in delivering {
            let node = &mut self.nodes[(m.to - 1) as usize];
            if let Some(replica) = node.replica.as_mut() {
                if node.boots != m.to_boot {
                    self.report.messages_across_restart += 1;
                }
                node.heard_from.insert(m.from);
                replica.step_timed(m.message, m.sender_time);
                self.report.messages_delivered += 1;
            } else if m.sent_at + QUEUE_STEPS > now
                && (m.queued || self.rng.chance(self.queue_per_mille))
            {
                m.queued = true;
                m.deliver_at = now + 1;
                self.network.push(m);
            }
        }
    }

    /// Every live replica reads its clocks and ticks; a removed one no longer ticks, as the node
    /// loop's does not.
    fn tick_all(&mut self) {
        let now = self.step;
        for node in &mut self.nodes {
            let (wall, monotonic) = node.clocks(now);
            if let Some(replica) = node.replica.as_mut() {
                replica.set_now(wall, monotonic);
                if !node.removed {
                    replica.tick();
                }
            }
        }
    }

    /// Handles node `i`'s Readies until it is quiet (a Ready may make another, e.g. a
    /// single-node commit), at most a few. Under chaos the node may lose power at a point inside
    /// them; a node doomed by a crash of many loses it at the end if not before.
    fn process_node(&mut self, i: usize, chaos: bool, round: &mut Round) {
        if self.nodes[i].replica.is_none() {
            return;
        }
        let plan = self.plan_faults(i, chaos);
        for _ in 0..4 {
            if !self.ready_once(i, &plan, round) {
                break;
            }
        }
        let node = &mut self.nodes[i];
        let Some(replica) = node.replica.as_mut() else {
            return;
        };
        replica.storage_mut().crash_at(None);
        let doomed = node.doomed;
        node.doomed = false;
        if doomed && self.may_crash(i) {
            let restart_at = self.step + 5 + self.rng.below(60);
            self.take_down(i, restart_at);
        }
    }

    /// Whether node `i` loses power somewhere in this step's Readies, and how a snapshot it
    /// installs now is served (from a newer checkpoint?) and interrupted.
    fn plan_faults(&mut self, i: usize, chaos: bool) -> InstallPlan {
        let mut plan = InstallPlan::default();
        if !chaos {
            return plan;
        }
        let n = self.nodes.len() as u64;
        let may_crash = self.down() < ((n - 1) / 2).max(1) && self.may_crash(i);
        let snapshot_pending = self.nodes[i]
            .replica
            .as_ref()
            .is_some_and(|r| r.raw().raft.raft_log.unstable.snapshot.is_some());
        let mut point = None;
        if snapshot_pending {
            plan.newer = self.rng.chance(500);
            if may_crash && self.rng.chance(300) {
                match self.rng.below(6) {
                    0 => plan.crash_at = Some(InstallPoint::BeforeIntent),
                    1 => plan.crash_at = Some(InstallPoint::BeforeSwap),
                    2 => plan.crash_at = Some(InstallPoint::AfterSwap),
                    3 => plan.crash_at = Some(InstallPoint::AfterReopen),
                    4 => point = Some(CrashPoint::BeforeInstall),
                    _ => point = Some(CrashPoint::AfterInstall),
                }
            }
        } else if may_crash && self.rng.chance(3) {
            point = Some(self.random_crash_point());
        }
        let Some(replica) = self.nodes[i].replica.as_mut() else {
            return plan;
        };
        if plan.newer && !self.config.crash_ahead_of_log {
            // Past the swap of a newer checkpoint, a crash leaves the state ahead of the log.
            replica.storage_mut().crash_at(None);
        } else if let Some(point) = point {
            replica.storage_mut().crash_at(Some(point));
        }
        plan
    }

    /// One `process_ready` of node `i`; false if the node is down after it or has no more.
    fn ready_once(&mut self, i: usize, plan: &InstallPlan, round: &mut Round) -> bool {
        let node = &mut self.nodes[i];
        let replica = node.replica.as_mut().expect("the node is up");
        let was_leader = replica.role() == StateRole::Leader;
        let disk_full = replica.storage().is_disk_full();
        let mut call = InstallCall::default();
        let snapshots = &self.snapshots;
        let sent_at = replica.proposer_now();
        let (intent, checkpoint) = (&mut node.install_intent, &mut node.checkpoint);
        let result = replica.process_ready(
            &mut |messages| {
                round
                    .outbox
                    .extend(messages.into_iter().map(|m| (m, sent_at)))
            },
            &mut |state, snapshot| {
                let mut io = SimInstall {
                    snapshots,
                    plan,
                    disk_full,
                    intent: &mut *intent,
                    checkpoint: &mut *checkpoint,
                    call: &mut call,
                    snapshot_index: 0,
                };
                install_checkpoint(&mut io, state, snapshot)
            },
        );
        // Saved before the state swap: kept whatever happens next.
        node.members.extend(call.members.iter().copied());
        let installed = call.installed.is_some();
        if let Some(newer) = call.installed {
            self.report.snapshots_installed += 1;
            self.report.newer_checkpoints_installed += u64::from(newer);
        }
        if call.crashed || replica.storage().has_crashed() {
            self.count_crash_point(i, call.crashed);
            let restart_at = self.step + 5 + self.rng.below(100);
            self.take_down(i, restart_at);
            return false;
        }
        finish_install_once_log_reset(node);
        let replica = node.replica.as_mut().expect("the node is up");
        let id = node.id;
        round
            .outputs
            .extend(replica.take_outputs().into_iter().map(|o| (id, o)));
        let changes = replica.take_conf_changes();
        let conf = replica.raw().raft.prs().conf().to_conf_state();
        if was_leader && replica.role() != StateRole::Leader {
            self.report.leaders_demoted += u64::from(!voter_in(replica, id));
        }
        let more = result.is_ok() && replica.raw().has_ready();
        if installed {
            self.snapshot_installed(i, &conf);
        }
        for change in changes {
            self.membership_applied(i, change);
        }
        if let Err(e) = result {
            match e {
                e if e.is_disk_full() || disk_full => self.report.stalled_readies += 1,
                e => self.failure = Some(format!("node {id}: process_ready failed: {e}")),
            }
            return false;
        }
        more
    }

    /// As the node loop's `snapshot_installed`: the snapshot told of the members it covers (the
    /// address book keeps the configuration's), and a change of the node's own that it shows
    /// done is answered.
    fn snapshot_installed(&mut self, i: usize, conf: &ConfState) {
        self.nodes[i]
            .members
            .extend(crate::membership::members_of(conf).iter().map(|id| id.0));
        self.keep_members(i, conf);
        for answer in self.nodes[i].joint_replies.installed(conf) {
            self.report.membership_changes += 1;
            self.answer_change(i, answer, conf);
        }
    }

    /// Counts the power loss node `i` just had inside its Ready (nothing it did in that
    /// `process_ready` reached anyone but the messages sent before the crash point).
    fn count_crash_point(&mut self, i: usize, in_install_steps: bool) {
        let point = self.nodes[i]
            .replica
            .as_ref()
            .and_then(|r| r.storage().crashed_at());
        self.report.ready_crashes += 1;
        match point {
            Some(CrashPoint::TornSync { keep }) if keep != usize::MAX => {
                self.report.torn_writes += 1
            }
            Some(CrashPoint::BeforeInstall | CrashPoint::AfterInstall) => {
                self.report.install_crashes += 1
            }
            _ if in_install_steps => self.report.install_crashes += 1,
            _ => {}
        }
    }

    /// Now and then node `i` checkpoints its state, offers it as a snapshot and compacts its
    /// log behind it, keeping only a few entries; under chaos the power fails inside the
    /// compaction now and then.
    fn maybe_checkpoint(&mut self, i: usize, chaos: bool) {
        // As the node loop: a snapshot Raft wanted and could not have starts one at once.
        let wanted = self.nodes[i]
            .replica
            .as_mut()
            .is_some_and(|r| r.take_snapshot_wanted());
        if !wanted && !self.rng.chance(25) {
            return;
        }
        if chaos && self.may_crash(i) && self.rng.chance(40) {
            let point = if self.rng.chance(500) {
                CrashPoint::BeforeCompaction
            } else {
                CrashPoint::AfterCompaction
            };
            if let Some(replica) = self.nodes[i].replica.as_mut() {
                replica.storage_mut().crash_at(Some(point));
            }
        }
        self.checkpoint(i);
        let crashed = self.nodes[i]
            .replica
            .as_mut()
            .map(|r| {
                r.storage_mut().crash_at(None);
                r.storage().has_crashed()
            })
            .unwrap_or(false);
        if crashed {
            self.report.compaction_crashes += 1;
            let restart_at = self.step + 5 + self.rng.below(60);
            self.take_down(i, restart_at);
        }
    }

    /// Node `i` checkpoints its state (durable first), then offers it and compacts its log, as
    /// the node's `offer_checkpoint` does once a checkpoint is written. Not while the disk is
    /// (nearly) full.
    pub(super) fn checkpoint(&mut self, i: usize) {
        let keep = self.rng.below(8);
        let node = &mut self.nodes[i];
        let Some(replica) = node.replica.as_mut() else {
            return;
        };
        if replica.storage().is_disk_full() || replica.storage().has_crashed() {
            return;
        }
        let mut state = replica.state().clone();
        let index = state.applied_index();
        if index == 0 {
            return;
        }
        // A backlog is the running node's condition, not part of what a checkpoint holds.
        state.inner.backlogged = false;
        self.snapshots.insert(index, state.clone());
        node.checkpoint = state;
        self.report.checkpoints += 1;
        match replica.compact(LogIndex(index), keep, index.to_le_bytes().to_vec()) {
            Ok(()) => {}
            Err(crate::storage::StorageError::Crashed) => {}
            Err(e) => self.failure = Some(format!("node {}: compaction failed: {e}", node.id)),
        }
    }

    pub(super) fn send(&mut self, message: Message, sender_time: Timestamp) {
        let (from, to) = (message.from, message.to);
        let sender = &self.nodes[(from - 1) as usize];
        if !sender.members.contains(&to) && !sender.heard_from.contains(&to) {
            // Neither in the sender's address book nor heard from: its transport has no such peer.
            return;
        }
        if self.cut.contains(&(from, to)) || self.rng.chance(self.drop_per_mille) {
            self.report.messages_dropped += 1;
            return;
        }
        let copies = if self.rng.chance(self.dup_per_mille) {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let delay = 1 + self.rng.below(self.max_delay);
            self.seq += 1;
            self.network.push(InFlight {
                deliver_at: self.step + delay,
                seq: self.seq,
                from,
                to,
                to_boot: self.nodes[(to - 1) as usize].boots,
                sent_at: self.step,
                queued: false,
                message: message.clone(),
                sender_time,
            });
        }
    }
}

/// Step 5 of a snapshot install, once the log is reset to the snapshot (the Ready that
/// carried it is persisted): the install is complete and its intent goes.
fn finish_install_once_log_reset(node: &mut Node) {
    let replica = node.replica.as_ref().expect("the node is up");
    let reset_to = raft::Storage::first_index(replica.storage()).unwrap_or(1) - 1;
    if node
        .install_intent
        .as_ref()
        .is_some_and(|m| m.index <= reset_to)
    {
        crate::install::finished(&mut SimIntent(&mut node.install_intent))
            .expect("the simulation's intent is in memory");
    }
}

/// Whether node `id` is a voter (incoming or outgoing) in its replica's configuration.
fn voter_in(replica: &SimReplica, id: u64) -> bool {
    let conf = replica.raw().raft.prs().conf().to_conf_state();
    conf.voters.contains(&id) || conf.voters_outgoing.contains(&id)
}

/// How a snapshot installed this step is served and interrupted.
#[derive(Default)]
struct InstallPlan {
    /// Serve the newest checkpoint there is, not the one at the snapshot's index (a source
    /// serves its latest checkpoint).
    newer: bool,
    /// Lose power at this point of the install's steps.
    crash_at: Option<InstallPoint>,
}

/// What the shell's install callback did, beyond its durable steps.
#[derive(Default)]
struct InstallCall {
    /// The members the snapshot told of, saved into the address book first (durable).
    members: BTreeSet<u64>,
    /// It swapped a checkpoint in (durable), and whether that was newer than the snapshot.
    installed: Option<bool>,
    /// It lost power.
    crashed: bool,
}

/// The simulation's side of `consensus::install`: the intent and the checkpoint are the node's
/// durable fields, a fetch serves a checkpoint taken by another node, and the power fails at the
/// point the plan drew.
struct SimInstall<'a> {
    snapshots: &'a BTreeMap<u64, Recorder>,
    plan: &'a InstallPlan,
    disk_full: bool,
    intent: &'a mut Option<SnapshotMetadata>,
    /// The node's durable checkpoint: the state a restart finds.
    checkpoint: &'a mut Recorder,
    call: &'a mut InstallCall,
    /// The index of the snapshot being installed, once its checkpoint is fetched.
    snapshot_index: u64,
}

impl IntentIo for SimInstall<'_> {
    type Error = String;

    fn write_intent(&mut self, meta: &SnapshotMetadata) -> Result<(), String> {
        SimIntent(self.intent).write_intent(meta)
    }

    fn read_intent(&mut self) -> Result<Option<SnapshotMetadata>, String> {
        SimIntent(self.intent).read_intent()
    }

    fn remove_intent(&mut self) -> Result<(), String> {
        SimIntent(self.intent).remove_intent()
    }

    fn crash_point(&mut self, point: InstallPoint) -> Result<(), String> {
        if self.plan.crash_at == Some(point) {
            self.call.crashed = true;
            return Err(format!("the power failed at {}", point.name()));
        }
        Ok(())
    }
}

impl InstallIo<Recorder> for SimInstall<'_> {
    type Fetched = Recorder;

    /// A full disk fails the import; otherwise the checkpoint the snapshot names, or with
    /// `newer` the newest there is (every checkpoint holds only committed entries).
    fn fetch_checkpoint(
        &mut self,
        snapshot: &raft::eraftpb::Snapshot,
    ) -> Result<Option<Recorder>, String> {
        if self.disk_full {
            return Err("no space left on device (simulated)".into());
        }
        let index = u64::from_le_bytes(
            snapshot.data[..8]
                .try_into()
                .map_err(|_| "short snapshot data")?,
        );
        let found = if self.plan.newer {
            self.snapshots.range(index..).next_back().map(|(_, r)| r)
        } else {
            self.snapshots.get(&index)
        };
        let copy = found.ok_or_else(|| format!("no checkpoint at {index}"))?;
        self.snapshot_index = snapshot.get_metadata().index;
        Ok(Some(copy.clone()))
    }

    fn checkpoint_index(fetched: &Recorder) -> u64 {
        fetched.applied_index()
    }

    fn swap_state(&mut self, fetched: Recorder) -> Result<(), String> {
        let newer = fetched.applied_index() > self.snapshot_index;
        *self.checkpoint = fetched;
        self.call.installed = Some(newer);
        Ok(())
    }

    fn reopen_state(&mut self, state: &mut Recorder) -> Result<(), String> {
        *state = self.checkpoint.clone();
        Ok(())
    }
}

/// A node's durable install intent, outside an install: its removal once the log is reset, and
/// what a start finds.
pub(super) struct SimIntent<'a>(pub(super) &'a mut Option<SnapshotMetadata>);

impl IntentIo for SimIntent<'_> {
    type Error = String;

    fn write_intent(&mut self, meta: &SnapshotMetadata) -> Result<(), String> {
        *self.0 = Some(meta.clone());
        Ok(())
    }

    fn read_intent(&mut self) -> Result<Option<SnapshotMetadata>, String> {
        Ok(self.0.clone())
    }

    fn remove_intent(&mut self) -> Result<(), String> {
        *self.0 = None;
        Ok(())
    }

    fn crash_point(&mut self, _: InstallPoint) -> Result<(), String> {
        Ok(())
    }
}

/// The shell's side of installing a snapshot, as the node loop does it: the snapshot's members
/// are saved into the address book (the node's `learn_snapshot_members`), then the shared
/// install steps run.
fn install_checkpoint(
    io: &mut SimInstall<'_>,
    state: &mut Recorder,
    snapshot: &raft::eraftpb::Snapshot,
) -> Result<(), String> {
    if io.disk_full {
        return Err("no space left on device (simulated)".into());
    }
    io.call.members = crate::membership::members_of(snapshot.get_metadata().get_conf_state())
        .iter()
        .map(|id| id.0)
        .collect();
    match crate::install::install_state(io, state, snapshot) {
        Ok(_) => Ok(()),
        Err(InstallStop::Io(e)) => Err(e),
        Err(InstallStop::Pending { index }) => Err(format!("the snapshot at {index} is pending")),
        Err(InstallStop::Stale { index, checkpoint }) => Err(format!(
            "the checkpoint at {checkpoint} is older than the snapshot at {index}"
        )),
    }
}
