//! Three replicas in memory, driven round by round: a replica whose storage cannot sync (a full
//! disk) holds its Ready, takes no part in Raft and refuses requests, the other two go on, and
//! once the storage syncs again it catches up to the same state; reads find their own answers
//! and wait through elections within a deadline; writes waiting together share one entry.

use std::cell::Cell;
use std::rc::Rc;

use bulwark_ledger::{AccountId, MemoryStateMachine, NewAccount};
use raft::eraftpb::{ConfState, HardState, SnapshotMetadata};
use raft::{GetEntriesContext, RaftState};

use super::*;
use crate::storage::{LogFlush, MemRaftStorage, SnapshotInstallError, StorageError};
use bulwark_ledger::Timestamp;
use raft::eraftpb::Entry;

/// In-memory storage whose `sync` fails like a full disk while `full` is set, undoing the
/// unsynced writes as `DiskRaftStorage` does; its writes become durable only once a flush's
/// outcome is in (`end_sync`), and that flush fails while `flush_fails` is set, losing what was
/// not synced as a crash would.
pub(super) struct FullableStorage {
    inner: MemRaftStorage,
    full: Rc<Cell<bool>>,
    flush_fails: Rc<Cell<bool>>,
}

impl raft::Storage for FullableStorage {
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

impl RaftStorage for FullableStorage {
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
        if self.full.get() {
            // Back to the durable state, as a failed sync of the disk storage leaves it.
            self.inner.crash();
            return Err(StorageError::Wal(bulwark_wal::WalError::Io {
                op: "write",
                path: "raft/00000000000000000001.wal".into(),
                source: std::io::Error::from_raw_os_error(28),
            }));
        }
        self.inner.sync()
    }
    fn begin_sync(&mut self) -> Result<LogFlush, StorageError> {
        Ok(LogFlush::done())
    }
    fn end_sync(
        &mut self,
        _flush: LogFlush,
        flushed: Result<(), bulwark_wal::WalError>,
    ) -> Result<(), StorageError> {
        flushed?;
        if self.flush_fails.get() {
            self.inner.crash();
            return Err(StorageError::Wal(bulwark_wal::WalError::Poisoned));
        }
        self.sync()
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

pub(super) type TestReplica = Replica<FullableStorage, MemoryStateMachine, u64>;

/// A replica with `config` over in-memory storage that holds `conf` at `term`, and the flags
/// that make that storage full and its flushes fail.
pub(super) fn memory_replica(
    config: ReplicaConfig,
    conf: &ConfState,
    term: u64,
) -> (TestReplica, Rc<Cell<bool>>, Rc<Cell<bool>>) {
    let mut inner = MemRaftStorage::new();
    inner.set_conf_state(conf);
    inner.set_hard_state(&HardState {
        term,
        ..HardState::default()
    });
    let full = Rc::new(Cell::new(false));
    let flush_fails = Rc::new(Cell::new(false));
    let storage = FullableStorage {
        inner,
        full: full.clone(),
        flush_fails: flush_fails.clone(),
    };
    let mut state = MemoryStateMachine::default();
    state.set_membership(protobuf::Message::write_to_bytes(conf).unwrap());
    let replica = Replica::new(config, storage, state).unwrap();
    (replica, full, flush_fails)
}

struct Cluster {
    nodes: Vec<TestReplica>,
    full: Vec<Rc<Cell<bool>>>,
    in_flight: Vec<Message>,
    outputs: Vec<(u64, Output<u64>)>,
    clock: u64,
    /// Appends to this node are lost (heartbeats and read answers still arrive), so that it
    /// learns of commits it cannot apply.
    starve: Option<u64>,
}

impl Cluster {
    fn new() -> Cluster {
        Cluster::at_term(0)
    }

    /// Three voters that have no leader yet, at `term`.
    fn at_term(term: u64) -> Cluster {
        let voters = vec![1, 2, 3];
        let conf = ConfState::from((voters.clone(), vec![]));
        let mut nodes = Vec::new();
        let mut full = Vec::new();
        for id in voters {
            let mut config = ReplicaConfig::new(NodeId(id), 0x5eed_0000 + id);
            // Node 1 times out first, then 2, then 3.
            config.election_tick = 5 + 5 * id as usize;
            config.min_election_tick = config.election_tick;
            config.max_election_tick = config.election_tick + 1;
            let (replica, flag, _) = memory_replica(config, &conf, term);
            nodes.push(replica);
            full.push(flag);
        }
        Cluster {
            nodes,
            full,
            in_flight: Vec::new(),
            outputs: Vec::new(),
            clock: 0,
            starve: None,
        }
    }

    fn node(&mut self, id: u64) -> &mut TestReplica {
        &mut self.nodes[(id - 1) as usize]
    }

    fn set_full(&mut self, id: u64, full: bool) {
        self.full[(id - 1) as usize].set(full);
    }

    /// One round: deliver every message in flight, tick everyone, process every Ready.
    fn round(&mut self) {
        self.clock += 1;
        for m in std::mem::take(&mut self.in_flight) {
            let to = m.to;
            if self.starve == Some(to) && m.get_msg_type() == raft::eraftpb::MessageType::MsgAppend
            {
                continue;
            }
            self.node(to).step(m);
        }
        for id in 1..=3u64 {
            let since_boot = std::time::Duration::from_millis(self.clock);
            let now = Timestamp(1_000_000_000 + self.clock * 1_000_000);
            let node = self.node(id);
            node.set_now(now, since_boot);
            node.tick();
            let mut out = Vec::new();
            for _ in 0..4 {
                let node = &mut self.nodes[(id - 1) as usize];
                let result =
                    node.process_ready(&mut |messages| out.extend(messages), &mut |_, _| {
                        Err(SnapshotInstallError::Failed(
                            "no snapshots in this test".into(),
                        ))
                    });
                match result {
                    Ok(()) => {}
                    Err(e) => {
                        assert!(e.is_disk_full(), "{e}");
                        assert!(node.is_stalled(), "a failed sync holds the Ready");
                        break;
                    }
                }
                if !node.raw().has_ready() {
                    break;
                }
            }
            self.in_flight.extend(out);
            let outputs = self.nodes[(id - 1) as usize].take_outputs();
            self.outputs.extend(outputs.into_iter().map(|o| (id, o)));
        }
    }

    fn rounds(&mut self, n: usize) {
        for _ in 0..n {
            self.round();
        }
    }

    fn leader(&self) -> Option<u64> {
        let leaders: Vec<u64> = self
            .nodes
            .iter()
            .filter(|n| n.is_leader() && !n.is_stalled())
            .map(|n| n.id().0)
            .collect();
        (leaders.len() == 1).then(|| leaders[0])
    }

    fn write_account(&mut self, via: u64, id: u64) {
        let account = NewAccount {
            id: AccountId(id.into()),
            ledger: 1,
            code: 1,
            ..NewAccount::default()
        };
        self.node(via)
            .write(Operation::CreateAccounts(vec![account]), id);
    }

    /// Takes the outputs for `token` so far.
    fn outcome(&mut self, token: u64) -> Vec<Result<u64, ReplicaError>> {
        let mut found = Vec::new();
        let mut rest = Vec::new();
        for (node, output) in std::mem::take(&mut self.outputs) {
            match output {
                Output::Written { token: t, written } if t == token => {
                    found.push(Ok(written.index.0))
                }
                Output::WriteFailed { token: t, error } if t == token => found.push(Err(error)),
                Output::ReadFailed { token: t, error } if t == token => found.push(Err(error)),
                other => rest.push((node, other)),
            }
        }
        self.outputs = rest;
        found
    }

    /// How the read `token` was answered so far: `Some(Ok(node))` if served on `node`.
    fn read_outcome(&mut self, token: u64) -> Vec<Result<u64, ReplicaError>> {
        let mut found = Vec::new();
        let mut rest = Vec::new();
        for (node, output) in std::mem::take(&mut self.outputs) {
            match output {
                Output::ReadReady { token: t, .. } if t == token => found.push(Ok(node)),
                Output::ReadFailed { token: t, error } if t == token => found.push(Err(error)),
                other => rest.push((node, other)),
            }
        }
        self.outputs = rest;
        found
    }

    fn accounts(&self, id: u64) -> Vec<u128> {
        let state = self.nodes[(id - 1) as usize].state();
        state.store.accounts.keys().map(|a| a.0).collect()
    }

    fn assert_converged(&self) {
        let applied: Vec<u64> = self
            .nodes
            .iter()
            .map(|n| n.state().applied_index())
            .collect();
        assert!(
            applied.iter().all(|a| *a == applied[0]),
            "applied indexes differ: {applied:?}"
        );
        for id in 2..=3 {
            assert_eq!(
                self.accounts(id),
                self.accounts(1),
                "node {id}'s state differs"
            );
        }
    }
}

/// A read state as a leader's answer to a follower's ReadIndex carries it.
fn read_answer(to: &TestReplica, from: u64, context: Vec<u8>, index: u64) -> Message {
    let mut m = Message::default();
    m.set_msg_type(raft::eraftpb::MessageType::MsgReadIndexResp);
    m.to = to.id().0;
    m.from = from;
    m.term = to.term().0;
    m.index = index;
    m.mut_entries().push(Entry {
        data: context.into(),
        ..Entry::default()
    });
    m
}

#[test]
fn reads_from_two_followers_in_the_same_round_are_both_served() {
    let mut c = Cluster::new();
    c.rounds(60);
    assert_eq!(c.leader(), Some(1));
    c.node(2).read(201);
    c.node(3).read(301);
    c.rounds(30);
    assert_eq!(c.read_outcome(201), vec![Ok(2)]);
    assert_eq!(c.read_outcome(301), vec![Ok(3)]);
}

#[test]
fn a_read_answer_meant_for_another_incarnation_answers_nothing() {
    let mut c = Cluster::new();
    c.rounds(60);
    assert_eq!(c.leader(), Some(1));
    // Answers still queued from before node 2 restarted (a context of its old form: a bare
    // counter), or from another boot of node 2 (same id and counter, another nonce), for
    // an index node 2 has long applied: taken as the answer to a new read, they would serve
    // it before the leader confirmed anything.
    let applied = c.node(2).state().applied_index();
    let old_form = 1u64.to_le_bytes().to_vec();
    let other_boot: Vec<u8> = [2u64, 0xdead_beef, 1]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    for context in [old_form, other_boot] {
        let m = read_answer(c.node(2), 1, context, applied);
        c.node(2).read(202);
        c.node(2).step(m);
        c.round();
        assert_eq!(
            c.read_outcome(202),
            vec![],
            "a foreign answer served the read"
        );
        c.rounds(10);
        assert_eq!(
            c.read_outcome(202),
            vec![Ok(2)],
            "the leader's own answer does"
        );
    }
}

#[test]
fn a_read_at_a_new_leader_waits_for_its_first_commit() {
    let mut c = Cluster::new();
    c.rounds(60);
    assert_eq!(c.leader(), Some(1));
    // Node 1 stops (its disk fills): another node takes over.
    c.set_full(1, true);
    c.write_account(1, 1);
    let mut rounds = 0;
    let leader = loop {
        c.round();
        rounds += 1;
        assert!(rounds < 200, "no new leader");
        if let Some(l) = (2..=3).find(|&id| c.node(id).is_leader()) {
            break l;
        }
    };
    let follower = 5 - leader;
    // The new leader has not committed an entry of its term: raft-rs drops a ReadIndex
    // now; the reads must wait for that commit instead of failing.
    assert!(!c.node(leader).raw().raft.commit_to_current_term());
    c.node(leader).read(203);
    c.node(follower).read(303);
    c.rounds(30);
    assert_eq!(c.read_outcome(203), vec![Ok(leader)]);
    assert_eq!(c.read_outcome(303), vec![Ok(follower)]);
}

#[test]
fn a_follower_read_during_an_election_is_served_by_the_next_leader() {
    let mut c = Cluster::new();
    c.rounds(60);
    assert_eq!(c.leader(), Some(1));
    c.set_full(1, true);
    c.write_account(1, 1);
    c.rounds(2);
    assert!(c.node(1).is_stalled());
    // Nodes 2 and 3 still follow node 1, which answers nothing; an election comes first.
    c.node(2).read(204);
    c.node(3).read(304);
    c.rounds(80);
    assert!(matches!(c.leader(), Some(2 | 3)));
    assert_eq!(c.read_outcome(204), vec![Ok(2)]);
    assert_eq!(c.read_outcome(304), vec![Ok(3)]);
}

#[test]
fn a_read_whose_index_is_never_applied_expires() {
    let mut c = Cluster::new();
    c.rounds(60);
    assert_eq!(c.leader(), Some(1));
    c.starve = Some(3);
    c.write_account(1, 7);
    c.rounds(5);
    assert!(matches!(c.outcome(7)[..], [Ok(_)]));
    // Node 3 gets the read index (the write's) but never the entry.
    c.node(3).read(305);
    c.rounds(200);
    assert!(c.node(3).state().applied_index() < c.node(1).state().applied_index());
    assert_eq!(c.read_outcome(305), vec![Err(ReplicaError::ReadTimeout)]);
}

#[test]
fn a_write_to_a_node_that_knows_no_leader_waits_for_one() {
    let mut c = Cluster::new();
    c.write_account(3, 7);
    c.round();
    assert_eq!(c.outcome(7), vec![], "held while no leader is known");
    c.rounds(60);
    assert_eq!(c.leader(), Some(1));
    let forwardable = ReplicaError::NotLeader {
        leader: Some(NodeId(1)),
    };
    assert_eq!(c.outcome(7), vec![Err(forwardable)]);

    // A node that hears no one keeps a write for `WRITE_LEADERLESS_TICKS`, then refuses it.
    let mut c = Cluster::new();
    c.write_account(3, 8);
    let mut rounds = 0;
    let answer = loop {
        let answer = c.outcome(8);
        if !answer.is_empty() {
            break answer;
        }
        c.in_flight.retain(|m| m.to != 3);
        c.round();
        rounds += 1;
        assert!(rounds < 100, "the write is answered in the end");
    };
    assert_eq!(answer, vec![Err(ReplicaError::NotLeader { leader: None })]);
    assert!(
        rounds >= bulwark_limits::WRITE_LEADERLESS_TICKS as usize,
        "{rounds}"
    );
}

#[test]
fn writes_waiting_in_one_round_share_one_entry() {
    let mut c = Cluster::new();
    c.rounds(60);
    assert_eq!(c.leader(), Some(1));
    let before = c.node(1).raw().raft.raft_log.last_index();
    for id in 1..=5 {
        c.write_account(1, id);
    }
    // The same account again: its own results, in its own place in the group.
    let again = NewAccount {
        id: AccountId(3),
        ledger: 1,
        code: 1,
        ..NewAccount::default()
    };
    c.node(1).write(Operation::CreateAccounts(vec![again]), 6);
    c.rounds(10);
    let results = |c: &Cluster, token: u64| {
        c.outputs.iter().find_map(|(_, o)| match o {
            Output::Written { token: t, written } if *t == token => Some(written.results.names()),
            _ => None,
        })
    };
    assert_eq!(results(&c, 3), Some(vec!["ok"]));
    assert_eq!(results(&c, 6), Some(vec!["exists"]));
    let mut indexes = Vec::new();
    for id in 1..=6 {
        let [Ok(index)] = c.outcome(id)[..] else {
            panic!("write {id} not acknowledged");
        };
        indexes.push(index);
    }
    assert!(indexes.iter().all(|i| *i == before + 1), "{indexes:?}");
    assert_eq!(c.node(1).raw().raft.raft_log.last_index(), before + 1);
    c.assert_converged();
}

/// A backlogged state (a durable store whose memtable is at its cap while a checkpoint runs)
/// holds the leader's new writes: none is proposed, answered or refused meanwhile; once the
/// backlog clears they are proposed together, in the order they came.
#[test]
fn writes_wait_while_the_state_is_backlogged_and_go_in_order_after() {
    let mut c = Cluster::new();
    c.rounds(60);
    assert_eq!(c.leader(), Some(1));
    let before = c.node(1).raw().raft.raft_log.last_index();
    c.node(1).state_mut().backlogged = true;
    for id in 1..=3 {
        c.write_account(1, id);
    }
    c.rounds(30);
    assert_eq!(c.leader(), Some(1), "holding writes keeps the leader");
    assert_eq!(c.node(1).raw().raft.raft_log.last_index(), before);
    for id in 1..=3 {
        assert_eq!(c.outcome(id), vec![], "write {id} answered while held");
    }
    c.node(1).state_mut().backlogged = false;
    c.rounds(10);
    for id in 1..=3 {
        assert_eq!(c.outcome(id), vec![Ok(before + 1)], "write {id}");
    }
    assert_eq!(c.accounts(2), vec![1, 2, 3]);
    c.assert_converged();
}

#[test]
fn a_follower_that_cannot_sync_pauses_refuses_and_catches_up_after() {
    let mut c = Cluster::new();
    c.rounds(60);
    assert_eq!(c.leader(), Some(1));
    c.write_account(1, 100);
    c.rounds(10);
    assert!(matches!(c.outcome(100)[..], [Ok(_)]));

    c.set_full(3, true);
    for id in 1..=20 {
        c.write_account(1, id);
        c.rounds(3);
    }
    c.rounds(10);
    for id in 1..=20 {
        assert!(
            matches!(c.outcome(id)[..], [Ok(_)]),
            "write {id} commits on the other two"
        );
    }
    assert!(c.node(3).is_stalled());
    // A stalled node takes neither writes nor reads, and does not campaign.
    c.node(3).write(
        Operation::CreateAccounts(vec![NewAccount {
            id: AccountId(999),
            ledger: 1,
            code: 1,
            ..NewAccount::default()
        }]),
        999,
    );
    c.node(3).read(998);
    c.rounds(100);
    assert_eq!(c.outcome(999), vec![Err(ReplicaError::Stalled)]);
    assert_eq!(c.outcome(998), vec![Err(ReplicaError::Stalled)]);
    assert_eq!(c.leader(), Some(1));
    assert!(c.node(3).is_stalled());
    assert_eq!(c.node(3).term(), c.node(1).term());

    c.set_full(3, false);
    c.rounds(30);
    assert!(!c.node(3).is_stalled());
    c.assert_converged();
    assert_eq!(c.accounts(3).len(), 21);
    c.node(3).read(997);
    c.rounds(10);
    let read = c
        .outputs
        .iter()
        .any(|(node, o)| *node == 3 && matches!(o, Output::ReadReady { token: 997, .. }));
    assert!(read, "node 3 serves linearizable reads again");
}

#[test]
fn a_leader_that_cannot_sync_is_replaced_and_rejoins_after() {
    let mut c = Cluster::new();
    c.rounds(60);
    assert_eq!(c.leader(), Some(1));
    for id in 1..=5 {
        c.write_account(1, id);
        c.rounds(3);
    }
    c.rounds(5);
    c.set_full(1, true);
    c.write_account(1, 50);
    c.rounds(2);
    assert!(c.node(1).is_stalled());
    // The proposal may still commit under another leader: its outcome is unknown.
    assert_eq!(c.outcome(50), vec![Err(ReplicaError::Indeterminate)]);
    c.rounds(100);
    let leader = c.leader().expect("a new leader among the other two");
    assert_ne!(leader, 1);
    for id in 10..=20 {
        c.write_account(leader, id);
        c.rounds(3);
    }
    c.rounds(5);
    for id in 10..=20 {
        assert!(matches!(c.outcome(id)[..], [Ok(_)]), "write {id}");
    }
    assert!(c.node(1).is_stalled());
    assert!(c.node(1).state().applied_index() < c.node(leader).state().applied_index());

    c.set_full(1, false);
    c.rounds(60);
    assert!(!c.node(1).is_stalled());
    assert!(!c.node(1).is_leader());
    assert_eq!(c.leader(), Some(leader));
    c.assert_converged();
    let accounts = c.accounts(1);
    for id in (1..=5).chain(10..=20) {
        assert!(accounts.contains(&id), "account {id} on node 1");
    }
}

#[test]
fn a_node_of_lowered_election_priority_is_not_elected_while_a_healthy_voter_can_be() {
    // Node 1 times out first and wins when all are equal. No leader yet, so no voter ignores
    // it for a lease: only its priority makes them refuse it. (At term 1, as every real node
    // starts, the bootstrap snapshot's: raft-rs panics when it refuses a vote at term 0.)
    let mut c = Cluster::at_term(1);
    c.node(1)
        .set_election_priority(crate::slow_disk::SLOW_PRIORITY);
    c.rounds(60);
    assert_eq!(c.leader(), Some(2), "node 2 times out next, and is elected");
    // Node 1 votes and follows as before: writes commit everywhere.
    c.write_account(2, 7);
    c.rounds(10);
    assert_eq!(c.outcome(7).len(), 1);
    c.assert_converged();
    // Equal priorities again: node 1 is elected when it times out first.
    let mut c = Cluster::at_term(1);
    c.node(1)
        .set_election_priority(crate::slow_disk::HEALTHY_PRIORITY);
    c.rounds(60);
    assert_eq!(c.leader(), Some(1));
}

/// A clock that moves 7 ms every time it is read: each timed sync takes 7 ms.
fn clock_of_7ms_steps() -> Duration {
    static READS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    Duration::from_millis(7 * READS.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
}

#[test]
fn log_syncs_that_write_entries_are_timed_with_the_shells_clock_when_asked() {
    let mut c = Cluster::new();
    c.node(1).time_log_syncs(clock_of_7ms_steps);
    c.node(2).time_log_syncs(clock_of_7ms_steps);
    c.rounds(60);
    assert_eq!(c.leader(), Some(1));
    let _ = (c.node(1).take_log_syncs(), c.node(2).take_log_syncs());
    c.write_account(1, 8);
    c.rounds(10);
    assert_eq!(c.outcome(8).len(), 1);
    for id in [1, 2] {
        let syncs = c.node(id).take_log_syncs();
        assert!(!syncs.is_empty(), "node {id} synced the entry");
        assert!(
            syncs.iter().all(|d| *d == Duration::from_millis(7)),
            "node {id}: {syncs:?}"
        );
        assert!(c.node(id).take_log_syncs().is_empty(), "taken once");
    }
    assert!(c.node(3).take_log_syncs().is_empty(), "node 3 did not ask");
}

#[test]
fn an_idle_leader_expires_a_pending_transfer_on_time_on_every_replica() {
    use bulwark_ledger::{NewTransfer, PendingStatus, TransferFlags, TransferId};
    let mut c = Cluster::new();
    c.rounds(60);
    assert_eq!(c.leader(), Some(1));
    c.write_account(1, 1);
    c.write_account(1, 2);
    c.rounds(10);
    let pending = NewTransfer {
        id: TransferId(10),
        debit_account_id: AccountId(1),
        credit_account_id: AccountId(2),
        amount: 5,
        timeout: 1,
        ledger: 1,
        code: 1,
        flags: TransferFlags::PENDING,
        ..NewTransfer::default()
    };
    c.node(1)
        .write(Operation::CreateTransfers(vec![pending]), 10);
    c.rounds(10);
    assert!(matches!(c.outcome(10)[..], [Ok(_)]));
    let status = |c: &Cluster, node: u64| {
        let store = &c.nodes[(node - 1) as usize].state().store;
        (
            store.pending.get(&TransferId(10)).copied(),
            store.accounts[&AccountId(1)].debits_pending,
        )
    };
    let before = c.node(1).raw().raft.raft_log.last_index();
    // A round is a millisecond: half the timeout, nothing expires.
    c.rounds(500);
    assert_eq!(status(&c, 1), (Some(PendingStatus::Pending), 5));
    // Past the deadline, with no write at all: the leader proposes the expiry.
    c.rounds(600);
    for node in 1..=3 {
        assert_eq!(
            status(&c, node),
            (Some(PendingStatus::Expired), 0),
            "node {node}"
        );
    }
    assert_eq!(
        c.node(1).raw().raft.raft_log.last_index(),
        before + 1,
        "one expiry entry, not one per round"
    );
    c.assert_converged();
}
