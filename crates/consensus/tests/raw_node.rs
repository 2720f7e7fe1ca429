//! A real `raft::RawNode` on `DiskRaftStorage`: campaign, propose, handle every Ready in the documented
//! order, then reopen the storage and check that the log and the hard state survived.

use bulwark_consensus::storage::{DiskRaftStorage, RaftStorage};
use raft::eraftpb::{ConfState, Entry, EntryType};
use raft::{Config, RawNode, StateRole, Storage};

const SEGMENT_BYTES: u64 = 4096;

fn config(applied: u64) -> Config {
    Config {
        id: 1,
        election_tick: 10,
        heartbeat_tick: 3,
        applied,
        ..Default::default()
    }
}

fn logger() -> slog::Logger {
    slog::Logger::root(slog::Discard, slog::o!())
}

/// Handles every pending Ready: persist (snapshot, entries, hard state), sync, send (nowhere: single
/// node), advance, persist the light ready's commit index, apply committed entries. Returns the data of
/// the applied normal entries.
fn drain_ready(node: &mut RawNode<DiskRaftStorage>, applied: &mut Vec<(u64, Vec<u8>)>) {
    let apply = |entries: Vec<Entry>, applied: &mut Vec<(u64, Vec<u8>)>| {
        for e in entries {
            if e.get_entry_type() == EntryType::EntryNormal && !e.data.is_empty() {
                applied.push((e.index, e.data.to_vec()));
            }
        }
    };
    while node.has_ready() {
        let mut rd = node.ready();
        // Single node: there is nobody to send `messages` to.
        let _ = rd.take_messages();
        assert!(rd.snapshot().is_empty());
        apply(rd.take_committed_entries(), applied);
        let store = node.raft.raft_log.mut_store();
        store.append(rd.entries()).unwrap();
        if let Some(hs) = rd.hs() {
            store.set_hard_state(hs);
        }
        store.sync().unwrap();
        let _ = rd.take_persisted_messages();
        let mut light = node.advance(rd);
        if let Some(commit) = light.commit_index() {
            let store = node.raft.raft_log.mut_store();
            let mut hs = store.initial_state().unwrap().hard_state;
            hs.commit = commit;
            store.set_hard_state(&hs);
            store.sync().unwrap();
        }
        let _ = light.take_messages();
        apply(light.take_committed_entries(), applied);
        node.advance_apply();
    }
}

#[test]
fn a_single_voter_raw_node_persists_its_log_and_hard_state() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("raft");
    let (mut storage, _) = DiskRaftStorage::open(&dir, SEGMENT_BYTES).unwrap();
    storage.set_conf_state(&ConfState::from((vec![1], vec![])));
    storage.sync().unwrap();

    let mut node = RawNode::new(&config(0), storage, &logger()).unwrap();
    node.campaign().unwrap();
    let mut applied = Vec::new();
    drain_ready(&mut node, &mut applied);
    assert_eq!(node.raft.state, StateRole::Leader);
    let term = node.raft.term;

    let proposals: Vec<Vec<u8>> = (0..5)
        .map(|i| format!("transfer {i}").into_bytes())
        .collect();
    for p in &proposals {
        node.propose(vec![], p.clone()).unwrap();
        drain_ready(&mut node, &mut applied);
    }
    assert_eq!(
        applied.iter().map(|(_, d)| d.clone()).collect::<Vec<_>>(),
        proposals
    );
    let last = node.raft.raft_log.last_index();
    let commit = node.raft.raft_log.committed;
    assert_eq!(commit, last);
    let before = node
        .raft
        .raft_log
        .store
        .entries(1, last + 1, None, raft::GetEntriesContext::empty(false))
        .unwrap();
    drop(node);

    // Reopen: the entries, the hard state and the conf state are all there.
    let (storage, rec) = DiskRaftStorage::open(&dir, SEGMENT_BYTES).unwrap();
    assert_eq!(rec.torn_tail, None);
    assert_eq!((rec.first_index, rec.last_index), (1, last));
    let after = storage
        .entries(1, last + 1, None, raft::GetEntriesContext::empty(false))
        .unwrap();
    assert_eq!(after, before);
    let state = storage.initial_state().unwrap();
    assert_eq!(state.hard_state.term, term);
    assert_eq!(state.hard_state.vote, 1);
    // A commit index alone is written only when it first reaches the newest segment (here the
    // only one, from index 1): durable, it may lag what was applied.
    assert!(
        (1..=commit).contains(&state.hard_state.commit),
        "durable commit {} outside 1..={commit}",
        state.hard_state.commit
    );
    assert_eq!(state.conf_state.voters, vec![1]);
    let logged: Vec<Vec<u8>> = after
        .iter()
        .filter(|e| !e.data.is_empty())
        .map(|e| e.data.to_vec())
        .collect();
    assert_eq!(logged, proposals);

    // A restarted node picks up where it left off and keeps going. Its state applied through
    // `commit`, so it says so durably first (as `Replica::new` does): Raft checks applied <= commit.
    let mut storage = storage;
    let mut hs = state.hard_state.clone();
    hs.commit = commit;
    storage.set_hard_state(&hs);
    storage.sync().unwrap();
    let mut node = RawNode::new(&config(commit), storage, &logger()).unwrap();
    assert_eq!(node.raft.raft_log.last_index(), last);
    assert_eq!(node.raft.term, term);
    node.campaign().unwrap();
    let mut applied = Vec::new();
    drain_ready(&mut node, &mut applied);
    assert_eq!(node.raft.state, StateRole::Leader);
    node.propose(vec![], b"after restart".to_vec()).unwrap();
    drain_ready(&mut node, &mut applied);
    assert_eq!(
        applied,
        vec![(node.raft.raft_log.last_index(), b"after restart".to_vec())]
    );
    assert_eq!(
        node.raft
            .raft_log
            .store
            .initial_state()
            .unwrap()
            .hard_state
            .term,
        term + 1
    );
}
