//! What the backup crate's tests share: a ledger's log entries, and a state built from them.

#![allow(dead_code)]

use std::path::Path;

use bulwark_backup::create::{create_backup, Source};
use bulwark_backup::Target;
use bulwark_consensus::replay::replay_entry;
use bulwark_ledger::{codec, Batch, Operation, StateMachine, Timestamp};
use bulwark_ledger::{AccountId, Amount, NewAccount, NewTransfer, TransferId};
use bulwark_store::StateStore;
use raft::eraftpb::Entry;

pub const CLUSTER: u64 = 1;

pub fn entry(index: u64, batches: &[Batch]) -> Entry {
    let mut data = Vec::new();
    codec::encode_entry(batches, &mut data);
    Entry {
        index,
        term: 2,
        data: data.into(),
        ..Default::default()
    }
}

/// Entry 2 creates two accounts; each later entry moves `index` units between them.
pub fn entries(to: u64) -> Vec<Entry> {
    let mut out = Vec::new();
    for index in 2..=to {
        let operation = if index == 2 {
            Operation::CreateAccounts(
                [1u128, 2]
                    .map(|id| NewAccount {
                        id: AccountId(id),
                        ledger: 1,
                        code: 1,
                        ..Default::default()
                    })
                    .to_vec(),
            )
        } else {
            Operation::CreateTransfers(vec![NewTransfer {
                id: TransferId(index as u128),
                debit_account_id: AccountId(1),
                credit_account_id: AccountId(2),
                amount: index as Amount,
                ledger: 1,
                code: 1,
                ..Default::default()
            }])
        };
        let batch = Batch {
            timestamp: Timestamp(1_000_000_000 * index),
            operation,
        };
        out.push(entry(index, &[batch]));
    }
    out
}

/// A store at `scratch/source.redb` that has applied entries 2..=`to` (entry 1 is a cluster's
/// bootstrap configuration, no entry).
pub fn store_at(scratch: &Path, to: u64) -> StateStore {
    let mut store = StateStore::open(&scratch.join("source.redb")).unwrap();
    if StateMachine::applied_index(&store) == 0 {
        store.skip_index(1);
    }
    for e in entries(to) {
        replay_entry(&mut store, &e, None).unwrap();
    }
    store.checkpoint_now().unwrap();
    assert_eq!(StateMachine::applied_index(&store), to);
    store
}

/// A backup of `store`'s checkpoint in `backups`; answers its name.
pub fn backup(backups: &dyn Target, store: &StateStore) -> String {
    let mut stream = Vec::new();
    store.snapshot_source().export(&mut stream).unwrap();
    let source = Source {
        cluster_id: CLUSTER,
        node_id: 1,
    };
    create_backup(backups, source, &mut &stream[..], &mut |_| {})
        .unwrap()
        .name
}

/// Entries 2..=`to` archived in chunks of ten.
pub fn archive(archive: &dyn Target, to: u64) {
    for part in entries(to).chunks(10) {
        let (first, last) = (part[0].index, part[part.len() - 1].index);
        let bytes = bulwark_backup::chunk::encode(CLUSTER, part, 1_000 * last);
        archive
            .put(
                &bulwark_backup::chunk::chunk_name(CLUSTER, first, last),
                &bytes,
            )
            .unwrap();
    }
}
