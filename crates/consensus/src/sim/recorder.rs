//! The simulation's state machine: the ledger plus a hash chain of what was applied.

use super::*;

/// A state machine that also records, per applied index, a hash chain of what it applied and
/// what came of it, so that replicas can be compared index by index.
#[derive(Clone, Debug, Default)]
pub(super) struct Recorder {
    pub(super) inner: MemoryStateMachine,
    pub(super) chain: u64,
    pub(super) chains: BTreeMap<u64, u64>,
    /// Index -> the write ids of the batches applied there, in order (several for a group),
    /// each from its batch's first transfer/account id.
    pub(super) batches: BTreeMap<u64, Vec<u64>>,
}

impl Recorder {
    fn extend(&mut self, index: u64, what: impl Hash) {
        let mut h = DefaultHasher::new();
        (self.chain, index).hash(&mut h);
        what.hash(&mut h);
        self.chain = h.finish();
        self.chains.insert(index, self.chain);
    }
}

impl StateMachine for Recorder {
    fn apply_batch(&mut self, index: u64, batch: &Batch) -> BatchResults {
        let results = self.inner.apply_batch(index, batch);
        let ts = self.inner.last_timestamp();
        self.extend(index, (format!("{batch:?}"), results.names(), ts.0));
        self.batches.insert(index, vec![write_id(batch)]);
        results
    }

    fn apply_group(&mut self, index: u64, batches: &[Batch]) -> Vec<(BatchResults, Timestamp)> {
        let results = self.inner.apply_group(index, batches);
        let ts = self.inner.last_timestamp();
        let names: Vec<_> = results.iter().map(|(r, _)| r.names()).collect();
        self.extend(index, (format!("{batches:?}"), names, ts.0));
        self.batches
            .insert(index, batches.iter().map(write_id).collect());
        results
    }

    fn skip_index(&mut self, index: u64) {
        self.inner.skip_index(index);
        self.extend(index, "skip");
    }

    fn applied_index(&self) -> u64 {
        self.inner.applied_index()
    }

    fn applied_term(&self) -> u64 {
        self.inner.applied_term()
    }

    fn set_applied_term(&mut self, term: u64) {
        self.inner.set_applied_term(term);
    }

    fn last_timestamp(&self) -> Timestamp {
        self.inner.last_timestamp()
    }

    fn next_expiry(&self) -> Option<Timestamp> {
        self.inner.next_expiry()
    }

    fn membership(&self) -> Option<Vec<u8>> {
        self.inner.membership()
    }

    fn set_membership(&mut self, encoded: Vec<u8>) {
        self.inner.set_membership(encoded)
    }

    fn record_audit(&mut self, record: bulwark_ledger::access::AuditRecord) {
        let index = record.index;
        self.extend(index, format!("{record:?}"));
        self.inner.record_audit(record);
    }

    fn is_backlogged(&self) -> bool {
        self.inner.is_backlogged()
    }
}

/// The simulation identifies each client write by the id of its first event; a leader's own
/// expiry batch, no client's write, is 0.
pub(super) fn write_id(batch: &Batch) -> u64 {
    fn sim_id(id: u128) -> u64 {
        u64::try_from(id).expect("the simulation's ids fit u64")
    }
    match &batch.operation {
        Operation::CreateAccounts(a) => sim_id(a[0].id.0),
        Operation::CreateTransfers(t) => sim_id(t[0].id.0),
        Operation::Control(c) => match c.command {
            bulwark_ledger::access::ControlCommand::CreateToken { id, .. }
            | bulwark_ledger::access::ControlCommand::RevokeToken { id }
            | bulwark_ledger::access::ControlCommand::BootstrapAdmin { id, .. } => id.0,
            bulwark_ledger::access::ControlCommand::RecordBackup { .. } => 0,
        },
        // The simulation's workload makes no payments to settle.
        Operation::Outbox(_) | Operation::ExpirePending => 0,
    }
}
