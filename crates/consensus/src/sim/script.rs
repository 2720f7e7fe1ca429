use super::*;

/// Scripted control: a test drives the cluster by hand (crashes, splits, campaigns, writes)
/// while every step is still checked. A scripted cluster has a perfect network, no random
/// faults and no random workload; only checkpoints and compaction still come from the seed.
impl Sim {
    /// A cluster of `nodes` (seed 0) with chaos off: nothing happens that the script does not do.
    pub fn scripted(nodes: u64) -> Sim {
        let mut sim = Sim::new(SimConfig::new(0, nodes));
        sim.drop_per_mille = 0;
        sim.dup_per_mille = 0;
        sim.max_delay = 1;
        sim.queue_per_mille = 0;
        sim.workload = false;
        sim
    }

    /// Runs `steps` ticks, checking every property after each.
    pub fn run_steps(&mut self, steps: u64) -> Result<(), Violation> {
        for _ in 0..steps {
            self.step(false)?;
        }
        Ok(())
    }

    /// Runs checked ticks until `done` holds, at most `limit` of them; true if it came to hold.
    pub fn run_until(
        &mut self,
        limit: u64,
        mut done: impl FnMut(&Sim) -> bool,
    ) -> Result<bool, Violation> {
        for _ in 0..limit {
            if done(self) {
                return Ok(true);
            }
            self.step(false)?;
        }
        Ok(done(self))
    }

    /// Crashes node `id`: it loses everything not synced and stays down until restarted.
    pub fn crash(&mut self, id: u64) {
        assert!(self.replica(id).is_some(), "node {id} is already down");
        self.take_down((id - 1) as usize, u64::MAX);
    }

    /// Restarts the crashed node `id` from its synced storage and its last checkpoint.
    pub fn restart(&mut self, id: u64) {
        assert!(self.replica(id).is_none(), "node {id} is already up");
        self.start_node((id - 1) as usize);
    }

    /// Splits the network into `groups`, losing every message between two of them (both ways);
    /// replaces any earlier split, and a node named in no group keeps all its links.
    pub fn partition(&mut self, groups: &[&[u64]]) {
        self.cut.clear();
        for (i, here) in groups.iter().enumerate() {
            for (j, there) in groups.iter().enumerate() {
                if i == j {
                    continue;
                }
                for &a in *here {
                    for &b in *there {
                        self.cut.insert((a, b));
                    }
                }
            }
        }
        self.report.partitions += 1;
    }

    /// Heals the network: every link carries messages again (crashed nodes stay down).
    pub fn heal_network(&mut self) {
        self.cut.clear();
    }

    /// Makes node `id` start an election now (with a pre-vote first, as configured).
    /// The current leader hands leadership to `to`.
    pub fn transfer_leader(&mut self, to: u64) {
        let leader = self.leader().expect("a leader to transfer from");
        self.replica_mut(leader)
            .transfer_leader(crate::types::NodeId(to));
    }

    pub fn campaign(&mut self, id: u64) {
        self.replica_mut(id)
            .campaign()
            .unwrap_or_else(|e| panic!("node {id} could not campaign: {e}"));
    }

    /// The live node that leads in the highest term, if any.
    pub fn leader(&self) -> Option<u64> {
        self.current_leader()
    }

    /// Every live node that thinks it leads, as (node, term), by node id.
    pub fn leaders(&self) -> Vec<(u64, u64)> {
        self.nodes
            .iter()
            .filter_map(|n| n.replica.as_ref())
            .filter(|r| r.role() == StateRole::Leader)
            .map(|r| (r.id().0, r.term().0))
            .collect()
    }

    /// Every leader the checks have seen so far, as (term, node), by term.
    pub fn leader_history(&self) -> Vec<(u64, u64)> {
        self.leaders.iter().map(|(&term, &id)| (term, id)).collect()
    }

    /// Node `id`'s current term, or `None` while it is down.
    pub fn term(&self, id: u64) -> Option<u64> {
        self.replica(id).map(|r| r.term().0)
    }

    /// Node `id`'s Raft role, or `None` while it is down.
    pub fn role(&self, id: u64) -> Option<StateRole> {
        self.replica(id).map(|r| r.role())
    }

    /// The leader node `id` last heard of, or `None` if it knows of none or is down.
    pub fn leader_known_to(&self, id: u64) -> Option<u64> {
        self.replica(id).and_then(|r| r.leader().map(|l| l.0))
    }

    /// The index node `id` has applied, or `None` while it is down.
    pub fn applied_index(&self, id: u64) -> Option<u64> {
        self.replica(id).map(|r| r.state().applied_index())
    }

    /// Sends a client write to node `via` and returns its token; the first creates the
    /// accounts, later ones are transfers. A follower refuses it: the simulation does not forward.
    pub fn write(&mut self, via: u64) -> u64 {
        let id = self.next_write;
        self.next_write += 1;
        let (operation, token) = if !self.accounts_created {
            (workload::new_accounts(), ACCOUNT_TOKENS + id)
        } else {
            // From an account that may go negative (even id) to the one before it.
            let debit = 2 + 2 * (id % (ACCOUNTS / 2));
            let transfer = NewTransfer {
                id: TransferId(u128::from(1_000 + id)),
                debit_account_id: AccountId(u128::from(debit)),
                credit_account_id: AccountId(u128::from(debit - 1)),
                amount: u128::from(1 + id % 50),
                ledger: 1,
                code: 1,
                ..NewTransfer::default()
            };
            (Operation::CreateTransfers(vec![transfer]), 1_000 + id)
        };
        self.replica_mut(via).write(operation, token);
        token
    }

    /// Sends node `via` a pending transfer of 1 that expires `timeout` seconds after its
    /// timestamp; returns its token (also its transfer id). The accounts must exist.
    pub fn write_pending(&mut self, via: u64, timeout: u32) -> u64 {
        assert!(self.accounts_created, "create the accounts first");
        let id = 1_000 + self.next_write;
        self.next_write += 1;
        let transfer = NewTransfer {
            id: TransferId(u128::from(id)),
            debit_account_id: AccountId(2),
            credit_account_id: AccountId(1),
            amount: 1,
            ledger: 1,
            code: 1,
            flags: TransferFlags::PENDING,
            timeout,
            ..NewTransfer::default()
        };
        self.replica_mut(via)
            .write(Operation::CreateTransfers(vec![transfer]), id);
        id
    }

    /// The status of the pending transfer `transfer` in node `id`'s state.
    pub fn pending_status(&self, id: u64, transfer: u64) -> Option<PendingStatus> {
        let state = &self.replica(id)?.state().inner.store;
        state
            .pending
            .get(&TransferId(u128::from(transfer)))
            .copied()
    }

    /// Moves node `id`'s wall clock `by` nanoseconds from true time (its skew stays); its
    /// monotonic clock is untouched, as a real clock step leaves it.
    pub fn jump_clock(&mut self, id: u64, by: i64) {
        self.nodes[(id - 1) as usize].clock_jump = by;
        self.report.clock_jumps += 1;
    }

    /// Simulated nanoseconds since the run began.
    pub fn elapsed_nanos(&self) -> u64 {
        self.step * STEP_NANOS
    }

    /// Whether the write with this token was acknowledged: committed and answered.
    pub fn acknowledged(&self, token: u64) -> bool {
        self.acknowledged.contains_key(&token)
    }

    /// Whether node `id` has applied the acknowledged write `token` at the index it was
    /// acknowledged at.
    pub fn has_applied(&self, id: u64, token: u64) -> bool {
        let (Some(replica), Some(index)) = (self.replica(id), self.acknowledged.get(&token)) else {
            return false;
        };
        let write = if token >= ACCOUNT_TOKENS { 1 } else { token };
        replica
            .state()
            .batches
            .get(index)
            .is_some_and(|writes| writes.contains(&write))
    }

    /// The checks a healed run ends with: a leader, a new write commits, and every replica
    /// converges on the same balanced state holding every acknowledged write.
    pub fn converge(&mut self) -> Result<(), Violation> {
        self.check_converged()
    }

    /// What the run has done so far.
    pub fn report(&self) -> &SimReport {
        &self.report
    }

    fn replica(&self, id: u64) -> Option<&SimReplica> {
        self.nodes[(id - 1) as usize].replica.as_ref()
    }

    fn replica_mut(&mut self, id: u64) -> &mut SimReplica {
        self.nodes[(id - 1) as usize]
            .replica
            .as_mut()
            .unwrap_or_else(|| panic!("node {id} is down"))
    }
}
