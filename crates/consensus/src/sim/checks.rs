//! The properties checked after every step, and convergence once healed.

use super::*;

impl Sim {
    /// Log matching: two logs holding an entry with the same index and term hold the same
    /// entry there (checked at every index both hold, which by induction covers every earlier
    /// entry too).
    pub(super) fn check_log_matching(&self) -> Result<(), Violation> {
        let mut seen: BTreeMap<(u64, u64), (u64, u64)> = BTreeMap::new();
        for node in &self.nodes {
            let Some(replica) = node.replica.as_ref() else {
                continue;
            };
            let log = &replica.raw().raft.raft_log;
            let entries = log
                .entries(
                    log.first_index(),
                    None,
                    raft::GetEntriesContext::empty(false),
                )
                .unwrap_or_default();
            for entry in entries {
                let mut h = DefaultHasher::new();
                (
                    entry.get_entry_type() as i32,
                    &entry.data[..],
                    &entry.context[..],
                )
                    .hash(&mut h);
                let digest = h.finish();
                match seen.get(&(entry.index, entry.term)) {
                    Some(&(other, d)) if d != digest => {
                        return Err(self.violation(format!(
                            "log matching: nodes {other} and {} hold different entries at index {} term {}",
                            node.id, entry.index, entry.term
                        )))
                    }
                    Some(_) => {}
                    None => {
                        seen.insert((entry.index, entry.term), (node.id, digest));
                    }
                }
            }
        }
        Ok(())
    }

    /// Safety after every step.
    pub(super) fn check(&mut self) -> Result<(), Violation> {
        if let Some(failure) = self.failure.take() {
            return Err(self.violation(failure));
        }
        self.check_log_matching()?;
        self.check_leaders()?;
        self.check_applied()?;
        self.check_acknowledged()?;
        self.check_replication()
    }

    /// At most one leader per term, and leader completeness: a new leader's log holds every
    /// entry any replica has applied (applied entries are committed).
    fn check_leaders(&mut self) -> Result<(), Violation> {
        for node in &self.nodes {
            let Some(replica) = node.replica.as_ref() else {
                continue;
            };
            if replica.role() != StateRole::Leader {
                continue;
            }
            let term = replica.term().0;
            match self.leaders.get(&term) {
                Some(&other) if other != node.id => {
                    return Err(self.violation(format!(
                        "two leaders in term {term}: {other} and {}",
                        node.id
                    )))
                }
                Some(_) => {}
                None => {
                    self.leaders.insert(term, node.id);
                    self.report.leaders_elected += 1;
                    let last = replica.raw().raft.raft_log.last_index();
                    if let Some((&index, _)) = self.applied_batches.iter().next_back() {
                        if last < index {
                            return Err(self.violation(format!(
                                "leader {} of term {term} has log up to {last}, but index {index} was committed",
                                node.id
                            )));
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Every replica applies the same entries in the same order: equal hash chains at equal
    /// indexes (they cover the entries, their results and the timestamps).
    fn check_applied(&mut self) -> Result<(), Violation> {
        for i in 0..self.nodes.len() {
            let Some(replica) = self.nodes[i].replica.as_ref() else {
                continue;
            };
            let recorder = replica.state();
            for (&index, &chain) in recorder.chains.iter().rev() {
                match self.chains.get(&index) {
                    Some(&known) if known != chain => {
                        return Err(self.violation(format!(
                            "node {} applied something else at index {index} than another replica",
                            self.nodes[i].id
                        )))
                    }
                    Some(_) => break,
                    None => {
                        self.chains.insert(index, chain);
                    }
                }
            }
            for (index, writes) in &recorder.batches {
                self.applied_batches
                    .entry(*index)
                    .or_insert_with(|| writes.clone());
            }
        }
        Ok(())
    }

    /// No acknowledged write is lost: what was acknowledged at an index is what every replica
    /// applied there.
    fn check_acknowledged(&self) -> Result<(), Violation> {
        for (&token, &index) in &self.acknowledged {
            // Every attempt to create the accounts carries the same batch (first id 1).
            let write = if token >= ACCOUNT_TOKENS { 1 } else { token };
            if let Some(applied) = self.applied_batches.get(&index) {
                if !applied.contains(&write) {
                    return Err(self.violation(format!(
                        "write {write} was acknowledged at index {index}, but index {index} holds writes {applied:?}"
                    )));
                }
            }
        }
        Ok(())
    }

    /// Liveness and convergence once healed: one leader, every replica at the same applied index
    /// with the same state, every acknowledged write applied, and a new write commits.
    pub(super) fn check_converged(&mut self) -> Result<(), Violation> {
        let leader = self.await_leader()?;
        self.probe_write(leader)?;
        // Let the cluster go quiet: no new writes, every replica catches up.
        self.workload = false;
        for _ in 0..50 {
            self.step(false)?;
        }
        // A leader still proposes expiries of pending transfers as their deadlines pass: wait
        // for a moment when every replica has applied the leader's whole log.
        for _ in 0..200 {
            if self.all_caught_up() {
                break;
            }
            self.step(false)?;
        }
        self.compare_replicas()
    }

    /// Every member has applied the current leader's last log entry.
    fn all_caught_up(&self) -> bool {
        let Some(leader) = self.current_leader() else {
            return false;
        };
        let Some(raft) = self.nodes[(leader - 1) as usize]
            .replica
            .as_ref()
            .map(|r| &r.raw().raft)
        else {
            return false;
        };
        let last = raft.raft_log.last_index();
        let members = crate::membership::members_of(&raft.prs().conf().to_conf_state());
        self.nodes
            .iter()
            .filter(|n| members.contains(&NodeId(n.id)))
            .all(|n| {
                n.replica
                    .as_ref()
                    .is_some_and(|r| r.state().applied_index() == last)
            })
    }

    /// Healed, a leader must emerge within a few election timeouts (one may be under way).
    fn await_leader(&mut self) -> Result<u64, Violation> {
        for _ in 0..200 {
            if let Some(leader) = self.current_leader() {
                return Ok(leader);
            }
            self.step(false)?;
        }
        if let Some(leader) = self.current_leader() {
            return Ok(leader);
        }
        let detail: Vec<String> = self
            .nodes
            .iter()
            .filter_map(|n| n.replica.as_ref())
            .map(|r| {
                format!(
                    "node {} {:?} term {} commit {} last {} (term {}) applied {} first {}",
                    r.id(),
                    r.role(),
                    r.term(),
                    r.commit_index(),
                    r.raw().raft.raft_log.last_index(),
                    r.raw().raft.raft_log.last_term(),
                    r.state().applied_index(),
                    r.raw().raft.raft_log.first_index()
                )
            })
            .collect();
        Err(self.violation(format!("no leader after healing: {}", detail.join("; "))))
    }

    /// A new write through the leader commits.
    fn probe_write(&mut self, leader: u64) -> Result<(), Violation> {
        let probe = 1 << 40;
        let transfer = NewTransfer {
            id: TransferId(u128::from(probe)),
            debit_account_id: AccountId(2),
            credit_account_id: AccountId(1),
            amount: 1,
            ledger: 1,
            code: 1,
            ..NewTransfer::default()
        };
        if !self.accounts_created {
            return Err(self.violation("the accounts were never created".into()));
        }
        self.nodes[(leader - 1) as usize]
            .replica
            .as_mut()
            .expect("leader alive")
            .write(Operation::CreateTransfers(vec![transfer]), probe);
        for _ in 0..100 {
            self.step(false)?;
            if self.acknowledged.contains_key(&probe) {
                return Ok(());
            }
        }
        Err(self.violation("a write after healing did not commit".into()))
    }

    /// Every member of the final configuration (removed nodes and nodes never added take no
    /// part) at the same applied index with the same hash chain, covering every acknowledged
    /// write, and the ledger balances.
    fn compare_replicas(&mut self) -> Result<(), Violation> {
        let mut applied: Vec<(u64, u64, u64)> = Vec::new();
        let mut detail = String::new();
        let leader = self.await_leader()?;
        let conf = self.nodes[(leader - 1) as usize]
            .replica
            .as_ref()
            .expect("the leader is up")
            .raw()
            .raft
            .prs()
            .conf()
            .to_conf_state();
        let members = crate::membership::members_of(&conf);
        for node in self
            .nodes
            .iter()
            .filter(|n| members.contains(&NodeId(n.id)))
        {
            let replica = node.replica.as_ref().expect("all nodes restarted");
            let index = replica.state().applied_index();
            let chain = replica.state().chains.get(&index).copied().unwrap_or(0);
            applied.push((node.id, index, chain));
            detail.push_str(&format!(
                " node {} (address book {:?}): {:?} term {} commit {} last {} applied {};",
                node.id,
                node.members,
                replica.role(),
                replica.term(),
                replica.commit_index(),
                replica.raw().raft.raft_log.last_index(),
                index
            ));
        }
        let (_, index, chain) = applied[0];
        if applied.iter().any(|&(_, i, c)| i != index || c != chain) {
            return Err(self.violation(format!("replicas did not converge:{detail}")));
        }
        let max_acked = self.acknowledged.values().copied().max().unwrap_or(0);
        if index < max_acked {
            return Err(self.violation(format!(
                "applied index {index} is behind acknowledged index {max_acked}"
            )));
        }
        self.report.new_nodes_caught_up = self
            .nodes
            .iter()
            .filter(|n| n.joined && members.contains(&NodeId(n.id)))
            .count() as u64;
        // Money: the converged ledger balances.
        let state = &self.nodes[(leader - 1) as usize]
            .replica
            .as_ref()
            .expect("alive")
            .state()
            .inner;
        if let Err(e) = bulwark_ledger::check_balanced(state.store.accounts.values()) {
            return Err(self.violation(e.to_string()));
        }
        self.report.final_applied_index = index;
        Ok(())
    }
}
