//! One tick of simulated time.

use super::*;

/// What one round of Ready handling produced across the cluster.
#[derive(Default)]
struct Round {
    outbox: Vec<Message>,
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
            self.process_node(i, &mut round);
            self.maybe_checkpoint(i);
        }
        for message in round.outbox {
            self.send(message);
        }
        for (node, output) in round.outputs {
            self.handle_output(node, output)?;
        }
        self.check()
    }

    /// Delivers the messages due by now, in (time, seq) order.
    fn deliver_due(&mut self) {
        let now = self.step;
        self.network.sort_by_key(|m| (m.deliver_at, m.seq));
        let due = self
            .network
            .iter()
            .take_while(|m| m.deliver_at <= now)
            .count();
        let delivering: Vec<InFlight> = self.network.drain(..due).collect();
        for m in delivering {
            let node = &mut self.nodes[(m.to - 1) as usize];
            if let Some(replica) = node.replica.as_mut() {
                replica.step(m.message);
                self.report.messages_delivered += 1;
            }
        }
    }

    /// Every live replica reads its clocks and ticks.
    fn tick_all(&mut self) {
        let now = self.step;
        for node in &mut self.nodes {
            let (wall, monotonic) = node.clocks(now);
            if let Some(replica) = node.replica.as_mut() {
                replica.set_now(wall, monotonic);
                replica.tick();
            }
        }
    }

    /// Handles node `i`'s Readies until it is quiet (a Ready may make another, e.g. a
    /// single-node commit), at most a few.
    fn process_node(&mut self, i: usize, round: &mut Round) {
        let node = &mut self.nodes[i];
        let Some(replica) = node.replica.as_mut() else {
            return;
        };
        for _ in 0..4 {
            let mut installed = None;
            let snapshots = &self.snapshots;
            replica
                .process_ready(
                    &mut |messages| round.outbox.extend(messages),
                    &mut |state, snapshot| {
                        let copy = checkpoint_for(snapshots, snapshot)?;
                        *state = copy.clone();
                        installed = Some(copy.clone());
                        Ok(())
                    },
                )
                .expect("in-memory storage does not fail");
            if let Some(state) = installed {
                node.checkpoint = state;
                self.report.snapshots_installed += 1;
            }
            let id = node.id;
            round
                .outputs
                .extend(replica.take_outputs().into_iter().map(|o| (id, o)));
            for change in replica.take_conf_changes() {
                if change.conf_state.is_ok() && change.token.is_some() {
                    self.report.membership_changes += 1;
                }
            }
            if !replica.raw().has_ready() {
                break;
            }
        }
    }

    /// Now and then node `i` checkpoints its state, offers it as a snapshot and compacts its
    /// log behind it, keeping only a few entries.
    fn maybe_checkpoint(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        let Some(replica) = node.replica.as_mut() else {
            return;
        };
        if !self.rng.chance(25) {
            return;
        }
        let state = replica.state().clone();
        let index = state.applied_index();
        if index > 0 {
            let keep = self.rng.below(8);
            replica
                .compact(index, keep, index.to_le_bytes().to_vec())
                .expect("in-memory storage does not fail");
            self.snapshots.insert(index, state.clone());
            node.checkpoint = state;
            self.report.checkpoints += 1;
        }
    }

    pub(super) fn send(&mut self, message: Message) {
        let (from, to) = (message.from, message.to);
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
                to,
                message: message.clone(),
            });
        }
    }
}

/// The checkpoint a snapshot names (its data is the index, little-endian).
fn checkpoint_for<'a>(
    snapshots: &'a BTreeMap<u64, Recorder>,
    snapshot: &raft::eraftpb::Snapshot,
) -> Result<&'a Recorder, String> {
    let index = u64::from_le_bytes(
        snapshot.data[..8]
            .try_into()
            .map_err(|_| "short snapshot data")?,
    );
    snapshots
        .get(&index)
        .ok_or_else(|| format!("no checkpoint at {index}"))
}
