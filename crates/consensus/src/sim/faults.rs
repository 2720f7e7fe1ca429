//! Faults: crashes and restarts, partitions, the network's quality, clock jumps; and healing.

use super::*;

impl Sim {
    /// Faults: crashes and restarts, full disks, partitions, and changes of the network's
    /// quality.
    pub(super) fn chaos(&mut self) {
        if self.rng.chance(4) {
            self.change_membership();
        }
        self.crash_a_minority();
        self.crash_many();
        self.restart_due();
        self.fill_or_free_disks();
        self.backlog_a_state();
        if self.rng.chance(3) {
            self.jump_a_clock();
        }
        self.partition_randomly();
        if self.rng.chance(5) {
            self.drop_per_mille = self.rng.below(150);
            self.dup_per_mille = self.rng.below(50);
            self.max_delay = 1 + self.rng.below(6);
        }
    }

    /// How many nodes are down now.
    pub(super) fn down(&self) -> u64 {
        self.nodes.len() as u64 - self.alive().len() as u64
    }

    /// Crashes a node now and then (between steps), never more than a minority at once.
    fn crash_a_minority(&mut self) {
        let n = self.nodes.len() as u64;
        let down = self.down();
        if self.rng.chance(8) && down < (n - 1) / 2 + 1 && down < n / 2 {
            let victim = if self.rng.chance(500) {
                self.current_leader()
            } else {
                None
            }
            .unwrap_or_else(|| 1 + self.rng.below(n));
            let restart_at = self.step + 20 + self.rng.below(120);
            if self.may_crash((victim - 1) as usize) {
                self.take_down((victim - 1) as usize, restart_at);
            }
        }
    }

    /// Rarely, a majority of the nodes, or all of them, lose power at once, in the middle of
    /// this step's Ready handling: each at a crash point of its own, or after it.
    fn crash_many(&mut self) {
        if !self.rng.chance(2) {
            return;
        }
        let mut alive = self.alive();
        if alive.is_empty() {
            return;
        }
        let everyone = self.rng.chance(400);
        let count = if everyone {
            alive.len()
        } else {
            (self.nodes.len() / 2 + 1).min(alive.len())
        };
        shuffle(&mut self.rng, &mut alive);
        for &id in &alive[..count] {
            let point = self.random_crash_point();
            if !self.may_crash((id - 1) as usize) {
                continue;
            }
            let node = &mut self.nodes[(id - 1) as usize];
            node.doomed = true;
            if let Some(replica) = node.replica.as_mut() {
                replica.storage_mut().crash_at(Some(point));
            }
        }
        if count == self.nodes.len() {
            self.report.whole_cluster_crashes += 1;
        } else {
            self.report.majority_crashes += 1;
        }
    }

    /// A point inside a Ready's writes to lose power at.
    pub(super) fn random_crash_point(&mut self) -> CrashPoint {
        match self.rng.below(4) {
            0 => CrashPoint::Append,
            1 => CrashPoint::TornSync {
                keep: self.rng.below(4) as usize,
            },
            2 => CrashPoint::AfterSync,
            _ => CrashPoint::TornSync { keep: usize::MAX },
        }
    }

    /// Now and then a node's disk fills up for a while (its syncs fail and are undone, its
    /// Ready is held); when the time is up, space is freed.
    fn fill_or_free_disks(&mut self) {
        let step = self.step;
        for node in &mut self.nodes {
            if node.disk_full_until != 0 && node.disk_full_until <= step {
                node.disk_full_until = 0;
                if let Some(replica) = node.replica.as_mut() {
                    replica.storage_mut().set_disk_full(false);
                }
            }
        }
        if !self.rng.chance(3) {
            return;
        }
        let victim = self.rng.below(self.nodes.len() as u64) as usize;
        let until = step + 10 + self.rng.below(150);
        let node = &mut self.nodes[victim];
        if let (Some(replica), 0) = (node.replica.as_mut(), node.disk_full_until) {
            replica.storage_mut().set_disk_full(true);
            node.disk_full_until = until;
            self.report.disk_full_episodes += 1;
        }
    }

    /// Now and then a node's state is backlogged for a while, as a store whose checkpoint fell
    /// behind is: a leader then holds new writes (`Replica::propose_waiting`). Set on every step
    /// from `backlog_until`, so that a restarted node's fresh state follows it too.
    fn backlog_a_state(&mut self) {
        if self.rng.chance(3) {
            let victim = self.rng.below(self.nodes.len() as u64) as usize;
            if self.nodes[victim].backlog_until <= self.step {
                self.nodes[victim].backlog_until = self.step + 5 + self.rng.below(60);
                self.report.backlogs += 1;
                if self.current_leader() == Some(self.nodes[victim].id) {
                    self.report.leader_backlogs += 1;
                }
            }
        }
        let step = self.step;
        for node in &mut self.nodes {
            if let Some(replica) = node.replica.as_mut() {
                replica.state_mut().inner.backlogged = node.backlog_until > step;
            }
        }
    }

    /// Partitions come and go: majority | minority, one-way, or the leader isolated.
    fn partition_randomly(&mut self) {
        let n = self.nodes.len() as u64;
        if self.rng.chance(10) {
            self.cut.clear();
            match self.rng.below(4) {
                0 => {}
                1 => {
                    // Majority | minority, symmetric.
                    let mut ids: Vec<u64> = (1..=n).collect();
                    shuffle(&mut self.rng, &mut ids);
                    let minority = &ids[..(n as usize - 1) / 2];
                    for &a in minority {
                        for b in 1..=n {
                            if !minority.contains(&b) {
                                self.cut.insert((a, b));
                                self.cut.insert((b, a));
                            }
                        }
                    }
                }
                2 => {
                    // One-way: a node hears nobody but can still talk (or the reverse).
                    let a = 1 + self.rng.below(n);
                    let inbound = self.rng.chance(500);
                    for b in 1..=n {
                        if b != a {
                            self.cut.insert(if inbound { (b, a) } else { (a, b) });
                        }
                    }
                }
                _ => {
                    // Isolate the leader.
                    if let Some(l) = self.current_leader() {
                        for b in 1..=n {
                            if b != l {
                                self.cut.insert((l, b));
                                self.cut.insert((b, l));
                            }
                        }
                    }
                }
            }
            self.report.partitions += 1;
        }
    }

    /// A node's wall clock jumps (a second to an hour, either way), or a jump is undone.
    pub(super) fn jump_a_clock(&mut self) {
        let victim = self.rng.below(self.nodes.len() as u64) as usize;
        let jump = if self.rng.chance(300) {
            0
        } else {
            let by = 1_000_000_000 * (1 + self.rng.below(3600)) as i64;
            if self.rng.chance(500) {
                by
            } else {
                -by
            }
        };
        self.nodes[victim].clock_jump = jump;
        self.report.clock_jumps += 1;
    }

    pub(super) fn heal(&mut self) {
        self.cut.clear();
        self.drop_per_mille = 0;
        self.dup_per_mille = 0;
        self.max_delay = 1;
        for node in &mut self.nodes {
            node.disk_full_until = 0;
            node.backlog_until = 0;
            if let Some(replica) = node.replica.as_mut() {
                replica.storage_mut().set_disk_full(false);
                replica.state_mut().inner.backlogged = false;
            }
        }
        for i in 0..self.nodes.len() {
            if self.nodes[i].replica.is_none() {
                self.start_node(i);
            }
        }
    }
}
