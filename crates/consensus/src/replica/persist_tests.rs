//! A sole voter applies its new entries during their own flush: their answers wait for the
//! flush, and a failed flush answers none of them as written.

use std::cell::Cell;
use std::rc::Rc;

use bulwark_ledger::{AccountId, NewAccount, Timestamp};
use raft::eraftpb::ConfState;

use super::tests::{memory_replica, TestReplica};
use super::*;
use crate::storage::{SnapshotInstallError, StorageError};

struct Solo {
    replica: TestReplica,
    fail: Rc<Cell<bool>>,
    clock: u64,
}

impl Solo {
    fn new() -> Solo {
        let conf = ConfState::from((vec![1], vec![]));
        let config = ReplicaConfig::new(NodeId(1), 0x5eed_0001);
        let (replica, _, fail) = memory_replica(config, &conf, 0);
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
