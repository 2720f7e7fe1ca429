//! Faults: crashes and restarts, partitions, the network's quality, clock jumps; and healing.

use super::*;

impl Sim {
    /// Faults: crashes and restarts, partitions, and changes of the network's quality.
    pub(super) fn chaos(&mut self) {
        if self.rng.chance(4) {
            self.change_membership();
        }
        self.crash_a_minority();
        for i in 0..self.nodes.len() {
            if self.nodes[i].replica.is_none() && self.nodes[i].restart_at <= self.step {
                start(&mut self.nodes[i], &mut self.rng, self.step);
            }
        }
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

    /// Crashes a node now and then, never more than a minority at once.
    fn crash_a_minority(&mut self) {
        let n = self.config.nodes;
        let down = n - self.alive().len() as u64;
        if self.rng.chance(8) && down < (n - 1) / 2 + 1 && down < n / 2 {
            let victim = if self.rng.chance(500) {
                self.current_leader()
            } else {
                None
            }
            .unwrap_or_else(|| 1 + self.rng.below(n));
            let restart_at = self.step + 20 + self.rng.below(120);
            let node = &mut self.nodes[(victim - 1) as usize];
            if let Some(mut replica) = node.replica.take() {
                let mut storage = replica.storage_mut().clone();
                storage.crash();
                node.durable = Some(storage);
                node.restart_at = restart_at;
                self.report.crashes += 1;
            }
        }
    }

    /// Partitions come and go: majority | minority, one-way, or the leader isolated.
    fn partition_randomly(&mut self) {
        let n = self.config.nodes;
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
        let victim = self.rng.below(self.config.nodes) as usize;
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
            if node.replica.is_none() {
                start(node, &mut self.rng, self.step);
            }
        }
    }
}
