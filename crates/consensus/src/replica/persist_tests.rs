//! A sole voter applies its new entries during their own flush: their answers wait for the
//! flush, and a failed flush answers none of them as written.

use std::cell::Cell;
use std::rc::Rc;

use bulwark_ledger::{AccountId, MemoryStateMachine, NewAccount, Timestamp};
use raft::eraftpb::{ConfState, Entry, HardState, SnapshotMetadata};
use raft::{GetEntriesContext, RaftState};

use super::*;
use crate::storage::{LogFlush, MemRaftStorage, SnapshotInstallError, StorageError};
use bulwark_wal::WalError;

/// In-memory storage whose writes become durable only when the flush's outcome is in, and
/// whose flush fails while `fail` is set (losing what was not synced, as a crash would).
struct FlushFailing {
    inner: MemRaftStorage,
    fail: Rc<Cell<bool>>,
}

impl raft::Storage for FlushFailing {
    fn initial_state(&self) -> raft::Result<RaftState> {
        self.inner.initial_state()
    }
    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        self.inner.entries(low, high, max_size, context)
    }
    fn term(&self, idx: u64) -> raft::Result<u64> {
        self.inner.term(idx)
    }
    fn first_index(&self) -> raft::Result<u64> {
        self.inner.first_index()
    }
    fn last_index(&self) -> raft::Result<u64> {
        self.inner.last_index()
    }
    fn snapshot(&self, request_index: u64, to: u64) -> raft::Result<Snapshot> {
        self.inner.snapshot(request_index, to)
    }
}

impl RaftStorage for FlushFailing {
    fn dirty_from(&self) -> Option<LogIndex> {
        self.inner.dirty_from()
    }
    fn append(&mut self, entries: &[Entry]) -> Result<(), StorageError> {
        self.inner.append(entries)
    }
    fn set_hard_state(&mut self, hs: &HardState) {
        self.inner.set_hard_state(hs)
    }
    fn set_conf_state(&mut self, cs: &ConfState) {
        self.inner.set_conf_state(cs)
    }
    fn sync(&mut self) -> Result<(), StorageError> {
        self.inner.sync()
    }
    fn begin_sync(&mut self) -> Result<LogFlush, StorageError> {
        // The writes stay unsynced until the flush's outcome is in.
        Ok(LogFlush::done())
    }
    fn end_sync(
        &mut self,
        _flush: LogFlush,
        flushed: Result<(), WalError>,
    ) -> Result<(), StorageError> {
        flushed?;
        if self.fail.get() {
            self.inner.crash();
            return Err(StorageError::Wal(WalError::Poisoned));
        }
        self.inner.sync()
    }
    fn compact(&mut self, through: LogIndex) -> Result<(), StorageError> {
        self.inner.compact(through)
    }
    fn install_snapshot(&mut self, meta: &SnapshotMetadata) -> Result<(), StorageError> {
        self.inner.install_snapshot(meta)
    }
    fn set_snapshot_offer(&mut self, snapshot: Option<Snapshot>) {
        self.inner.set_snapshot_offer(snapshot)
    }
    fn take_snapshot_wanted(&mut self) -> bool {
        self.inner.take_snapshot_wanted()
    }
}

struct Solo {
    replica: Replica<FlushFailing, MemoryStateMachine, u64>,
    fail: Rc<Cell<bool>>,
    clock: u64,
}

impl Solo {
    fn new() -> Solo {
        let conf = ConfState::from((vec![1], vec![]));
        let mut inner = MemRaftStorage::new();
        inner.set_conf_state(&conf);
        let fail = Rc::new(Cell::new(false));
        let storage = FlushFailing {
            inner,
            fail: fail.clone(),
        };
        let mut state = MemoryStateMachine::default();
        state.set_membership(protobuf::Message::write_to_bytes(&conf).unwrap());
        let config = ReplicaConfig::new(NodeId(1), 0x5eed_0001);
        let replica = Replica::new(config, storage, state).unwrap();
        let mut solo = Solo {
            replica,
            fail,
            clock: 0,
        };
        for _ in 0..40 {
            solo.round().0.unwrap();
        }
        assert!(solo.replica.is_leader(), "a sole voter elects itself");
        solo
    }

    /// A tick and one Ready; the answers that came out of it.
    fn round(&mut self) -> (Result<(), StorageError>, Vec<Output<u64>>) {
        self.clock += 1;
        let since_boot = std::time::Duration::from_millis(self.clock);
        let now = Timestamp(1_000_000_000 + self.clock * 1_000_000);
        self.replica.set_now(now, since_boot);
        self.replica.tick();
        let r = self.replica.process_ready(&mut |_| {}, &mut |_, _| {
            Err(SnapshotInstallError::Failed("no snapshots here".into()))
        });
        (r, self.replica.take_outputs())
    }

    fn write_account(&mut self, id: u64) {
        let account = NewAccount {
            id: AccountId(id.into()),
            ledger: 1,
            code: 1,
            ..NewAccount::default()
        };
        self.replica
            .write(Operation::CreateAccounts(vec![account]), id);
    }
}

fn written(outputs: &[Output<u64>], token: u64) -> bool {
    outputs
        .iter()
        .any(|o| matches!(o, Output::Written { token: t, .. } if *t == token))
}

#[test]
fn a_sole_voter_answers_an_early_applied_write_once_its_flush_succeeded() {
    let mut solo = Solo::new();
    solo.write_account(7);
    let (r, outputs) = solo.round();
    r.unwrap();
    assert!(
        written(&outputs, 7),
        "answered in the round that flushed it"
    );
    assert_eq!(
        solo.replica.state().applied_index(),
        solo.replica.raw().raft.raft_log.committed
    );
}

#[test]
fn a_failed_flush_answers_no_early_applied_write_as_written() {
    let mut solo = Solo::new();
    solo.write_account(7);
    solo.fail.set(true);
    let (r, outputs) = solo.round();
    assert!(r.is_err(), "the failed flush is reported");
    let log = &solo.replica.raw().raft.raft_log;
    assert!(
        solo.replica.state().applied_index() > log.committed,
        "the entry was applied during its flush (applied {}, committed {})",
        solo.replica.state().applied_index(),
        log.committed
    );
    assert!(!written(&outputs, 7), "never answered as written");
    assert!(
        outputs.iter().any(|o| matches!(
            o,
            Output::WriteFailed {
                token: 7,
                error: ReplicaError::Indeterminate
            }
        )),
        "its outcome is unknown to the client"
    );
}
