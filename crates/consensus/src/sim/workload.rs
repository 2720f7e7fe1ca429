//! The clients: writes and linearizable reads, and what their answers must satisfy.

use super::*;

impl Sim {
    /// Clients: create the accounts once, then random transfers (some linked, some pending) to
    /// random nodes, and linearizable reads.
    pub(super) fn client_workload(&mut self, chaos: bool) {
        if !self.workload {
            return;
        }
        let per_mille = if chaos { 400 } else { 200 };
        if !self.rng.chance(per_mille) {
            return;
        }
        let alive = self.alive();
        if alive.is_empty() {
            return;
        }
        let target = alive[self.rng.below(alive.len() as u64) as usize];
        // Now and then several clients at once, so that a leader groups their writes.
        let burst = if self.rng.chance(250) {
            2 + self.rng.below(6)
        } else {
            1
        };
        for _ in 0..burst {
            self.client_op(target);
        }
    }

    /// One client request to `target`: a write (the accounts first, then 1-4 transfers) or a
    /// linearizable read.
    pub(super) fn client_op(&mut self, target: u64) {
        let id = self.next_write;
        let operation = if !self.accounts_created {
            new_accounts()
        } else {
            self.random_transfers(id)
        };
        let token = match &operation {
            Operation::CreateAccounts(_) => {
                self.next_write += 1;
                ACCOUNT_TOKENS + id
            }
            Operation::CreateTransfers(t) => {
                u64::try_from(t[0].id.0).expect("the simulation's ids fit u64")
            }
            Operation::Control(_) | Operation::Outbox(_) | Operation::ExpirePending => {
                unreachable!("the workload writes no control, outbox or expiry batches")
            }
        };
        let read = self.rng.chance(200);
        let must_see = self.acknowledged.values().copied().max().unwrap_or(0);
        let replica = self.nodes[(target - 1) as usize]
            .replica
            .as_mut()
            .expect("target is alive");
        if read {
            let read_id = READ_TOKENS + self.reads.len() as u64;
            self.reads.insert(read_id, must_see);
            if self.config.defect == Some(Defect::ReadWithoutReadIndex) {
                let applied = LogIndex(replica.state().applied_index());
                self.early_answers.push((
                    target,
                    Output::ReadReady {
                        token: read_id,
                        applied,
                    },
                ));
            } else {
                replica.read(read_id);
            }
        } else {
            replica.write(operation, token);
        }
    }

    /// 1-4 transfers between random accounts, some linked, some pending, with ids from `id`.
    fn random_transfers(&mut self, id: u64) -> Operation {
        let events = 1 + self.rng.below(4);
        self.next_write += events;
        let mut transfers = Vec::new();
        for k in 0..events {
            let debit = 1 + self.rng.below(ACCOUNTS);
            let credit = 1 + (debit + self.rng.below(ACCOUNTS - 1)) % ACCOUNTS;
            let linked = k + 1 < events && self.rng.chance(300);
            let pending = self.rng.chance(150);
            let mut flags = TransferFlags::empty();
            if linked {
                flags = flags | TransferFlags::LINKED;
            }
            if pending {
                flags = flags | TransferFlags::PENDING;
            }
            transfers.push(NewTransfer {
                id: TransferId(u128::from(1_000 + id + k)),
                debit_account_id: AccountId(u128::from(debit)),
                credit_account_id: AccountId(u128::from(credit)),
                amount: u128::from(1 + self.rng.below(50)),
                ledger: 1,
                code: 1,
                flags,
                timeout: if pending {
                    1 + self.rng.below(3) as u32
                } else {
                    0
                },
                ..NewTransfer::default()
            });
        }
        Operation::CreateTransfers(transfers)
    }

    /// Checks an answer node `node` gave.
    pub(super) fn handle_output(
        &mut self,
        node: u64,
        output: Output<u64>,
    ) -> Result<(), Violation> {
        match output {
            Output::Written { token, written } => {
                self.report.acknowledged_writes += 1;
                if (ACCOUNT_TOKENS..READ_TOKENS).contains(&token) {
                    self.accounts_created = true;
                }
                if !self.acknowledged_indexes.insert(written.index.0) {
                    self.report.grouped_writes += 1;
                }
                if self.rng.chance(300) {
                    // The client asked for `?ack=all`: the write waits on its node.
                    self.nodes[(node - 1) as usize]
                        .ack_all
                        .push(written.index, token);
                }
                if let Some(previous) = self.acknowledged.insert(token, written.index.0) {
                    if previous != written.index.0 {
                        return Err(self.violation(format!(
                            "write {token} acknowledged twice, at {previous} and {}",
                            written.index.0
                        )));
                    }
                }
            }
            Output::WriteFailed { error, .. } => match error {
                ReplicaError::Dropped => self.report.dropped_writes += 1,
                _ => self.report.refused_writes += 1,
            },
            Output::ReadReady { token, applied } => {
                // Linearizable: the state the read is served from (its applied index when it
                // was served, not when its answer is handled) holds every write that was
                // acknowledged before the read was issued.
                self.report.reads_served += 1;
                let must_see = self.reads.get(&token).copied().unwrap_or(0);
                let applied = applied.0;
                if applied < must_see {
                    return Err(self.violation(format!(
                        "read {token} on node {node} served at applied index {applied}, \
                         before write acknowledged at {must_see}"
                    )));
                }
            }
            Output::ReadFailed { .. } => {}
        }
        Ok(())
    }
}

/// The client's first write: the accounts, even ids may not go negative.
pub(super) fn new_accounts() -> Operation {
    Operation::CreateAccounts(
        (0..ACCOUNTS)
            .map(|i| NewAccount {
                id: AccountId(u128::from(1 + i)),
                ledger: 1,
                code: 1,
                flags: if i % 2 == 0 {
                    AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS
                } else {
                    AccountFlags::empty()
                },
                ..NewAccount::default()
            })
            .collect(),
    )
}
