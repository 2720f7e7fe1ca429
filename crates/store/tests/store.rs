//! The redb-backed store must behave exactly like the in-memory reference store, across
//! checkpoints (running or finished) and reopen.

use bulwark_ledger::{
    apply, AccountFlags, AccountId, Batch, LedgerStore, MemoryStore, NewAccount, NewTransfer,
    Operation, Timestamp, TransferFlags, TransferId,
};
use bulwark_store::snapshot::SnapshotError;
use bulwark_store::{HistoryFilter, QueryFilter, QueryPage, StateStore, StoreError};
use proptest::prelude::*;

fn accounts_batch(ts: u64) -> Batch {
    let accounts = (1..=6)
        .map(|i| NewAccount {
            id: AccountId(i),
            ledger: 1,
            code: 1,
            flags: if i == 1 {
                AccountFlags::HISTORY
            } else {
                AccountFlags::empty()
            },
            user_data_64: i as u64,
            ..NewAccount::default()
        })
        .collect();
    Batch {
        timestamp: Timestamp(ts),
        operation: Operation::CreateAccounts(accounts),
    }
}

#[derive(Clone, Debug)]
struct Step {
    transfers: Vec<(u128, u128, u128, u128, u8, u32)>,
    gap: u64,
    checkpoint: u8,
}

fn step() -> impl Strategy<Value = Step> {
    (
        prop::collection::vec(
            (1u128..60, 1u128..=6, 1u128..=6, 1u128..100, 0u8..4, 0u32..3),
            1..12,
        ),
        1u64..3_000_000_000,
        0u8..4,
    )
        .prop_map(|(transfers, gap, checkpoint)| Step {
            transfers,
            gap,
            checkpoint,
        })
}

fn transfer(raw: &(u128, u128, u128, u128, u8, u32)) -> NewTransfer {
    let (id, dr, cr, amount, kind, timeout) = *raw;
    let (flags, pending_id) = match kind {
        0 => (TransferFlags::empty(), 0),
        1 => (TransferFlags::PENDING, 0),
        2 => (
            TransferFlags::POST_PENDING_TRANSFER,
            id.saturating_sub(3).max(1),
        ),
        _ => (
            TransferFlags::VOID_PENDING_TRANSFER,
            id.saturating_sub(2).max(1),
        ),
    };
    let plain = kind < 2;
    NewTransfer {
        id: TransferId(id),
        debit_account_id: AccountId(if plain { dr } else { 0 }),
        credit_account_id: AccountId(if plain { cr } else { 0 }),
        amount: if plain { amount } else { 0 },
        pending_id: TransferId(pending_id),
        timeout: if kind == 1 { timeout } else { 0 },
        ledger: if plain { 1 } else { 0 },
        // Values the queries filter on, spread over the transfers (posts and voids inherit them).
        code: if plain { 1 + (id % 3) as u16 } else { 0 },
        user_data_32: if plain { (id % 2) as u32 } else { 0 },
        flags,
        ..NewTransfer::default()
    }
}

/// Every page of a query, chained through its cursor.
fn query_pages<T>(
    mut filter: QueryFilter,
    mut page: impl FnMut(&QueryFilter) -> QueryPage<T>,
) -> Vec<T> {
    let mut found = Vec::new();
    loop {
        let next = page(&filter);
        assert!(
            next.found.len() <= filter.limit,
            "a page holds at most its limit"
        );
        found.extend(next.found);
        match (next.next, filter.reversed) {
            (None, _) => return found,
            (Some(ts), false) => filter.timestamp_min = ts,
            (Some(ts), true) => filter.timestamp_max = ts,
        }
    }
}

/// Queries of transfers and accounts, each field alone and together, either order, a window.
fn assert_queries(store: &StateStore, reference: &MemoryStore) {
    let any = QueryFilter {
        user_data_128: 0,
        user_data_64: 0,
        user_data_32: 0,
        ledger: 0,
        code: 0,
        timestamp_min: Timestamp(0),
        timestamp_max: Timestamp(u64::MAX),
        reversed: false,
        limit: 2,
    };
    let mut by_time: Vec<_> = reference.transfers.values().copied().collect();
    by_time.sort_by_key(|t| t.timestamp);
    let middle = by_time.get(by_time.len() / 2).map_or(0, |t| t.timestamp.0);
    let filters = [
        any,
        QueryFilter { code: 2, ..any },
        QueryFilter {
            ledger: 1,
            code: 3,
            ..any
        },
        QueryFilter {
            user_data_32: 1,
            code: 2,
            ..any
        },
        QueryFilter {
            user_data_32: 1,
            ledger: 1,
            timestamp_min: Timestamp(middle),
            ..any
        },
        QueryFilter {
            timestamp_max: Timestamp(middle),
            ..any
        },
        QueryFilter { ledger: 2, ..any },
    ];
    for filter in filters {
        for reversed in [false, true] {
            let filter = QueryFilter { reversed, ..filter };
            let mut expected: Vec<_> = by_time
                .iter()
                .filter(|t| {
                    matches(
                        &filter,
                        t.timestamp,
                        t.ledger,
                        t.code,
                        t.user_data_32,
                        t.user_data_64,
                    )
                })
                .copied()
                .collect();
            if reversed {
                expected.reverse();
            }
            let found = query_pages(filter, |f| {
                let page = store.query_transfers(f).unwrap();
                page.expect("a small memtable is indexed in one step")
            });
            assert_eq!(found, expected, "transfers of {filter:?}");
        }
    }
    let mut accounts: Vec<_> = reference.accounts.values().copied().collect();
    accounts.sort_by_key(|a| a.timestamp);
    for filter in [
        any,
        QueryFilter {
            user_data_64: 3,
            ..any
        },
        QueryFilter {
            ledger: 1,
            code: 1,
            ..any
        },
    ] {
        for reversed in [false, true] {
            let filter = QueryFilter { reversed, ..filter };
            let mut expected: Vec<_> = accounts
                .iter()
                .filter(|a| {
                    matches(
                        &filter,
                        a.timestamp,
                        a.ledger,
                        a.code,
                        a.user_data_32,
                        a.user_data_64,
                    )
                })
                .copied()
                .collect();
            if reversed {
                expected.reverse();
            }
            let found = query_pages(filter, |f| store.query_accounts(f).unwrap());
            assert_eq!(found, expected, "accounts of {filter:?}");
        }
    }
}

/// The reference's reading of a filter (the store's comes from its indexes).
fn matches(f: &QueryFilter, ts: Timestamp, ledger: u32, code: u16, ud32: u32, ud64: u64) -> bool {
    (f.timestamp_min..=f.timestamp_max).contains(&ts)
        && (f.ledger == 0 || f.ledger == ledger)
        && (f.code == 0 || f.code == code)
        && (f.user_data_32 == 0 || f.user_data_32 == ud32)
        && (f.user_data_64 == 0 || f.user_data_64 == ud64)
}

/// The change feed, read in pages of 3, is the reference's.
fn assert_feed(store: &StateStore, reference: &MemoryStore) {
    let mut seen = Vec::new();
    let mut after = Timestamp(0);
    loop {
        let page = store
            .changes_after(after, 3)
            .unwrap()
            .expect("a small memtable's feed is replayed in one read");
        assert!(page.len() <= 3);
        let Some(last) = page.last() else { break };
        after = last.timestamp;
        seen.extend(page);
    }
    assert_eq!(seen, reference.changes, "the change feed");
}

fn assert_same(store: &StateStore, reference: &MemoryStore) {
    assert_queries(store, reference);
    assert_feed(store, reference);
    for (id, a) in &reference.accounts {
        assert_eq!(store.account(*id), Some(*a));
    }
    assert_eq!(store.account_count(), reference.accounts.len());
    for (id, t) in &reference.transfers {
        assert_eq!(store.transfer(*id), Some(*t));
        assert_eq!(
            store.pending_status(*id),
            reference.pending.get(id).copied()
        );
    }
    for (id, at) in &reference.failed_transfers {
        assert_eq!(store.failed_transfer(*id), Some(*at), "failed id {id}");
    }
    assert_eq!(store.last_timestamp(), reference.last_timestamp);
    assert_eq!(
        store.expired_pending(Timestamp(u64::MAX)),
        reference.expired_pending(Timestamp(u64::MAX))
    );
    // Every account's history, read in pages of 3, is its transfers in timestamp order.
    for id in reference.accounts.keys() {
        let mut expected: Vec<_> = reference
            .transfers
            .values()
            .filter(|t| t.debit_account_id == *id || t.credit_account_id == *id)
            .copied()
            .collect();
        expected.sort_by_key(|t| t.timestamp);
        let mut seen = Vec::new();
        let mut after = Timestamp(0);
        loop {
            let page = store.account_transfers(*id, after, 3).unwrap();
            if page.is_empty() {
                break;
            }
            after = page.last().unwrap().0.timestamp;
            for (t, balances) in page {
                if *id == AccountId(1) {
                    let recorded = reference
                        .balance_history
                        .iter()
                        .find(|(a, ts, _)| a == id && *ts == t.timestamp)
                        .map(|(_, _, b)| *b);
                    assert_eq!(balances, recorded);
                } else {
                    assert_eq!(balances, None);
                }
                seen.push(t);
            }
        }
        assert_eq!(seen, expected, "history of account {id}");
        // Newest first, in pages of 2 chained by `before`: the same, reversed.
        let mut reversed = Vec::new();
        let mut filter = HistoryFilter::after(Timestamp(0), 2);
        filter.reversed = true;
        loop {
            let page = store.account_history(*id, &filter).unwrap();
            assert!(page.transfers.len() <= 2);
            reversed.extend(page.transfers.into_iter().map(|(t, _)| t));
            match page.next {
                Some(next) => filter.before = next,
                None => break,
            }
        }
        reversed.reverse();
        assert_eq!(reversed, expected, "reversed history of account {id}");
        // Only its debits, oldest first in pages of 2.
        let debits: Vec<_> = expected
            .iter()
            .filter(|t| t.debit_account_id == *id)
            .copied()
            .collect();
        let mut seen_debits = Vec::new();
        let mut filter = HistoryFilter::after(Timestamp(0), 2);
        filter.credits = false;
        loop {
            let page = store.account_history(*id, &filter).unwrap();
            seen_debits.extend(page.transfers.into_iter().map(|(t, _)| t));
            match page.next {
                Some(next) => filter.after = next,
                None => break,
            }
        }
        assert_eq!(seen_debits, debits, "debits of account {id}");
    }
    // Account 1 keeps its history: its balances after each change, read in pages of 3 across
    // the checkpoint and the memtables, are the reference's, in order.
    let expected: Vec<_> = reference
        .balance_history
        .iter()
        .filter(|(a, _, _)| *a == AccountId(1))
        .map(|(_, ts, b)| (*ts, *b))
        .collect();
    let mut seen = Vec::new();
    let mut after = Timestamp(0);
    loop {
        let page = store.account_balances(AccountId(1), after, 3).unwrap();
        assert!(page.len() <= 3, "a page holds at most its limit");
        let Some(&(last, _)) = page.last() else {
            break;
        };
        after = last;
        seen.extend(page);
    }
    assert_eq!(seen, expected, "balance history of account 1");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn matches_the_reference_across_checkpoints_and_reopen(steps in prop::collection::vec(step(), 1..25)) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.redb");
        let mut store = StateStore::open(&path).unwrap();
        let mut reference = MemoryStore::default();
        let mut ts = 1_000_000_000u64;
        let mut index = 1;
        let first = accounts_batch(ts);
        prop_assert_eq!(store.apply_batch(index, &first), apply(&mut reference, &first));
        for step in &steps {
            index += 1;
            ts += step.gap + step.transfers.len() as u64;
            let batch = Batch {
                timestamp: Timestamp(ts),
                operation: Operation::CreateTransfers(step.transfers.iter().map(transfer).collect()),
            };
            prop_assert_eq!(store.apply_batch(index, &batch), apply(&mut reference, &batch));
            match step.checkpoint {
                // Start one and leave it running: reads must see frozen + active memtables.
                1 => { store.start_checkpoint(); }
                2 => { store.poll_checkpoint().unwrap(); }
                3 => { store.checkpoint_now().unwrap(); }
                _ => {}
            }
            assert_same(&store, &reference);
        }
        store.checkpoint_now().unwrap();
        prop_assert_eq!(store.checkpointed_index(), index);
        drop(store);
        let reopened = StateStore::open(&path).unwrap();
        prop_assert_eq!(reopened.applied_index(), index);
        assert_same(&reopened, &reference);
    }
}

#[test]
fn reopen_without_checkpoint_returns_to_the_last_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.redb");
    let mut store = StateStore::open(&path).unwrap();
    store.apply_batch(1, &accounts_batch(10));
    store.checkpoint_now().unwrap();
    let transfers = Batch {
        timestamp: Timestamp(100),
        operation: Operation::CreateTransfers(vec![NewTransfer {
            id: TransferId(1),
            debit_account_id: AccountId(2),
            credit_account_id: AccountId(3),
            amount: 5,
            ledger: 1,
            code: 1,
            ..NewTransfer::default()
        }]),
    };
    store.apply_batch(2, &transfers);
    assert!(store.transfer(TransferId(1)).is_some());
    drop(store);
    // What was applied after the checkpoint is the log's to replay, not the store's to keep.
    let reopened = StateStore::open(&path).unwrap();
    assert_eq!(reopened.applied_index(), 1);
    assert_eq!(reopened.transfer(TransferId(1)), None);
    assert_eq!(reopened.account(AccountId(2)).unwrap().debits_posted, 0);
}

/// `n` transfers of 1 from account 2 to account 3, ids from `first` on.
fn unit_transfers(first: u128, n: u128) -> Vec<NewTransfer> {
    (first..first + n)
        .map(|id| NewTransfer {
            id: TransferId(id),
            debit_account_id: AccountId(2),
            credit_account_id: AccountId(3),
            amount: 1,
            ledger: 1,
            code: 1,
            ..NewTransfer::default()
        })
        .collect()
}

fn transfers_batch(ts: u64, transfers: Vec<NewTransfer>) -> Batch {
    Batch {
        timestamp: Timestamp(ts),
        operation: Operation::CreateTransfers(transfers),
    }
}

#[test]
fn a_failed_id_is_kept_across_reopen_and_forgotten_after_the_retention() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.redb");
    let mut store = StateStore::open(&path).unwrap();
    store.apply_batch(1, &accounts_batch(10));
    let to_nowhere = NewTransfer {
        id: TransferId(50),
        debit_account_id: AccountId(2),
        credit_account_id: AccountId(99),
        amount: 5,
        ledger: 1,
        code: 1,
        ..NewTransfer::default()
    };
    let refused = store.apply_batch(2, &transfers_batch(100, vec![to_nowhere]));
    assert_eq!(refused.names(), ["credit_account_not_found"]);
    store.checkpoint_now().unwrap();
    drop(store);
    let mut store = StateStore::open(&path).unwrap();
    assert_eq!(store.failed_transfer(TransferId(50)), Some(Timestamp(100)));
    let fixed = NewTransfer {
        credit_account_id: AccountId(3),
        ..to_nowhere
    };
    let retried = store.apply_batch(3, &transfers_batch(200, vec![fixed]));
    assert_eq!(retried.names(), ["id_already_failed"]);
    // A checkpoint past the retention forgets the reservation, on disk too.
    let retention = bulwark_limits::FAILED_TRANSFER_ID_RETENTION.as_nanos() as u64;
    let other = NewTransfer {
        id: TransferId(51),
        credit_account_id: AccountId(3),
        ..to_nowhere
    };
    let later = 100 + retention + 1;
    let ok = store.apply_batch(4, &transfers_batch(later, vec![other]));
    assert_eq!(ok.names(), ["ok"]);
    store.checkpoint_now().unwrap();
    drop(store);
    let mut store = StateStore::open(&path).unwrap();
    assert_eq!(store.failed_transfer(TransferId(50)), None);
    let retried = store.apply_batch(5, &transfers_batch(later + 10, vec![fixed]));
    assert_eq!(retried.names(), ["ok"]);
}

#[test]
fn a_damaged_state_file_is_refused_with_its_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.redb");
    let mut store = StateStore::open(&path).unwrap();
    store.apply_batch(1, &accounts_batch(10));
    store.checkpoint_now().unwrap();
    drop(store);
    let mut bytes = std::fs::read(&path).unwrap();
    // Find an encoded account record (id 3, zero balances and user_data_128, user_data_64 3)
    // and damage its balance field.
    let mut needle = vec![0u8; 16 + 4 * 16 + 16 + 8];
    needle[0] = 3;
    needle[16 + 4 * 16 + 16] = 3;
    let at = bytes
        .windows(needle.len())
        .position(|w| w == needle)
        .expect("account record on disk");
    bytes[at + 20] ^= 0x40;
    std::fs::write(&path, &bytes).unwrap();
    let err = StateStore::open(&path)
        .err()
        .expect("a damaged file must not open");
    let text = err.to_string();
    assert!(text.contains(&path.display().to_string()), "{text}");
    assert!(text.to_lowercase().contains("corrupt"), "{text}");
}

#[test]
fn a_snapshot_streams_the_checkpoint_into_an_equal_store() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.redb");
    let mut store = StateStore::open(&path).unwrap();
    let mut reference = MemoryStore::default();
    let first = accounts_batch(1_000);
    store.apply_batch(1, &first);
    apply(&mut reference, &first);
    let mut ts = 2_000_000_000u64;
    for (index, step) in (2u64..).zip([
        vec![(1, 2, 3, 10, 0, 0), (2, 3, 4, 5, 1, 2), (3, 1, 5, 7, 0, 0)],
        vec![(4, 1, 2, 1, 1, 1), (5, 0, 0, 0, 2, 0), (6, 4, 6, 9, 0, 0)],
    ]) {
        ts += 10;
        let batch = Batch {
            timestamp: Timestamp(ts),
            operation: Operation::CreateTransfers(step.iter().map(transfer).collect()),
        };
        store.apply_batch(index, &batch);
        apply(&mut reference, &batch);
    }
    store.checkpoint_now().unwrap();
    let mut stream = Vec::new();
    let info = store.snapshot_source().export(&mut stream).unwrap();
    assert_eq!(info.applied_index, 3);

    // A damaged stream is refused and leaves the target untouched.
    let other = dir.path().join("other.redb");
    let mut damaged = stream.clone();
    let at = damaged.len() / 2;
    damaged[at] ^= 1;
    let err = bulwark_store::snapshot::import(&other, &mut damaged.as_slice()).unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::Snapshot {
                reason: SnapshotError::FrameChecksum
                    | SnapshotError::FrameTooLarge { .. }
                    | SnapshotError::Read { .. },
                ..
            }
        ),
        "{err}"
    );
    assert!(!other.exists());
    // A cut-off stream too.
    let cut = &stream[..stream.len() - 5];
    let err = bulwark_store::snapshot::import(&other, &mut &cut[..]).unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::Snapshot {
                reason: SnapshotError::Read { .. },
                ..
            }
        ),
        "{err}"
    );
    assert!(!other.exists());

    let imported = bulwark_store::snapshot::import(&other, &mut stream.as_slice()).unwrap();
    assert_eq!(imported, info);
    let copy = StateStore::open(&other).unwrap();
    assert_eq!(copy.applied_index(), 3);
    assert_same(&copy, &reference);
}

/// A snapshot larger than one import transaction (100,000 rows) imports whole. The importer
/// once began the next transaction before committing the last, and redb's second writer waited
/// for the first forever: a follower hung in its first catch-up by a large snapshot.
#[test]
fn a_snapshot_of_more_rows_than_one_import_transaction_imports_whole() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.redb");
    let mut store = StateStore::open(&path).unwrap();
    let many = Batch {
        timestamp: Timestamp(1_000),
        operation: Operation::CreateAccounts(
            (1..=150_000)
                .map(|i| NewAccount {
                    id: AccountId(i),
                    ledger: 1,
                    code: 1,
                    flags: AccountFlags::empty(),
                    user_data_64: i as u64,
                    ..NewAccount::default()
                })
                .collect(),
        ),
    };
    store.apply_batch(1, &many);
    store.checkpoint_now().unwrap();
    let mut stream = Vec::new();
    let info = store.snapshot_source().export(&mut stream).unwrap();
    assert!(info.rows > 150_000, "{info:?}");

    let other = dir.path().join("other.redb");
    let imported = bulwark_store::snapshot::import(&other, &mut stream.as_slice()).unwrap();
    assert_eq!(imported, info);
    let copy = StateStore::open(&other).unwrap();
    assert_eq!(copy.applied_index(), 1);
    assert_eq!(copy.account_count(), 150_000);
    for id in [1u128, 100_000, 150_000] {
        assert_eq!(
            copy.account(AccountId(id)),
            store.account(AccountId(id)),
            "account {id}"
        );
    }
}

fn control(command: bulwark_ledger::access::ControlCommand) -> Batch {
    Batch {
        timestamp: Timestamp(0),
        operation: Operation::Control(Box::new(bulwark_ledger::access::Control {
            actor: bulwark_ledger::access::Actor::Node(1),
            command,
        })),
    }
}

/// Tokens and the audit trail go wherever the ledger goes: through a checkpoint and a reopen, a
/// reopen that replays nothing (changes after the checkpoint are the log's to replay), and a
/// snapshot into another store.
#[test]
fn tokens_and_the_audit_trail_survive_checkpoints_reopen_and_snapshots() {
    use bulwark_ledger::access::{
        AuditEvent, AuditRecord, ControlCommand, ControlResult, Role, TokenId,
    };
    use bulwark_ledger::StateMachine;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.redb");
    let mut store = StateStore::open(&path).unwrap();
    let create = |id: u64, role| {
        control(ControlCommand::CreateToken {
            id: TokenId(id),
            name: format!("t{id}"),
            role,
            secret_hash: [id as u8; 32],
        })
    };
    store.apply_batch(
        1,
        &control(ControlCommand::BootstrapAdmin {
            id: TokenId(1),
            secret_hash: [1; 32],
        }),
    );
    store.apply_batch(2, &create(2, Role::Read));
    store.apply_batch(3, &create(3, Role::Write));
    store.skip_index(4);
    store.record_audit(AuditRecord {
        timestamp: StateMachine::last_timestamp(&store),
        index: 4,
        actor: None,
        event: AuditEvent::Membership {
            details: "add learner 4".into(),
        },
        result: ControlResult::Ok,
    });
    store.checkpoint_now().unwrap();
    // After the checkpoint: a revocation the checkpoint does not hold.
    store.apply_batch(5, &control(ControlCommand::RevokeToken { id: TokenId(2) }));
    let live: Vec<u64> = store.tokens().map(|t| t.id.0).collect();
    assert_eq!(live, [1, 3]);
    let trail = store.audit_page(None, 100).unwrap();
    assert_eq!(
        trail.iter().map(|a| a.index).collect::<Vec<_>>(),
        [1, 2, 3, 4, 5]
    );
    // Paged: after the second record, two at a time, across the checkpoint's table and memory.
    let after = Some((trail[1].timestamp, trail[1].index));
    let page = store.audit_page(after, 2).unwrap();
    assert_eq!(page.iter().map(|a| a.index).collect::<Vec<_>>(), [3, 4]);
    let after = Some((page[1].timestamp, page[1].index));
    assert_eq!(
        store
            .audit_page(after, 2)
            .unwrap()
            .iter()
            .map(|a| a.index)
            .collect::<Vec<_>>(),
        [5]
    );

    let mut stream = Vec::new();
    store.snapshot_source().export(&mut stream).unwrap();
    drop(store);
    let reopened = StateStore::open(&path).unwrap();
    let live: Vec<u64> = reopened.tokens().map(|t| t.id.0).collect();
    assert_eq!(
        live,
        [1, 2, 3],
        "the checkpoint's tokens; the revocation is the log's to replay"
    );
    assert!(reopened.admin_bootstrapped());
    assert_eq!(reopened.token(TokenId(3)).unwrap().role, Role::Write);
    assert_eq!(reopened.audit_page(None, 100).unwrap(), trail[..4]);

    let other = dir.path().join("other.redb");
    bulwark_store::snapshot::import(&other, &mut stream.as_slice()).unwrap();
    let copy = StateStore::open(&other).unwrap();
    assert_eq!(copy.tokens().map(|t| t.id.0).collect::<Vec<_>>(), [1, 2, 3]);
    assert!(copy.admin_bootstrapped());
    assert_eq!(copy.audit_page(None, 100).unwrap(), trail[..4]);
}

#[test]
fn a_large_memtables_feed_field_and_account_indexes_are_built_a_step_per_read() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = StateStore::open(&dir.path().join("state.redb")).unwrap();
    store.apply_batch(1, &accounts_batch(1_000_000_000));
    let steps = bulwark_limits::MAX_LAZY_BUILD_STEP / 1000 + 1;
    for b in 0..steps as u64 {
        let first = u128::from(b * 1000 + 1);
        let batch = transfers_batch(2_000_000_000 + b * 10_000, unit_transfers(first, 1000));
        store.apply_batch(b + 2, &batch);
    }
    assert_eq!(
        store.changes_after(Timestamp(0), 10).unwrap(),
        None,
        "one step"
    );
    // The same for the memtable's field indexes: a query by a field is answered once they are
    // built; one without fields needs none.
    let by_code = |limit| QueryFilter {
        user_data_128: 0,
        user_data_64: 0,
        user_data_32: 0,
        ledger: 0,
        code: 1,
        timestamp_min: Timestamp(0),
        timestamp_max: Timestamp(u64::MAX),
        reversed: true,
        limit,
    };
    assert!(
        store.query_transfers(&by_code(5)).unwrap().is_none(),
        "one step"
    );
    let any = QueryFilter {
        code: 0,
        ..by_code(5)
    };
    assert_eq!(
        store.query_transfers(&any).unwrap().map(|p| p.found.len()),
        Some(5)
    );
    let page = store
        .query_transfers(&by_code(5))
        .unwrap()
        .expect("indexed");
    let newest = (steps * 1000) as u128;
    assert_eq!(page.found[0].id, TransferId(newest));
    let page = store
        .changes_after(Timestamp(0), 10)
        .unwrap()
        .expect("replayed");
    assert_eq!(page.len(), 10);
    assert_eq!(page[9].credit.credits_posted, 10);
    let last = store.changes_after(Timestamp(u64::MAX - 1), 10).unwrap();
    assert_eq!(last, Some(Vec::new()));
    // And for its account index: an account's history is answered once it is built.
    let newest_first = HistoryFilter {
        reversed: true,
        ..HistoryFilter::after(Timestamp(0), 3)
    };
    assert!(
        store
            .account_history_step(AccountId(3), &newest_first)
            .unwrap()
            .is_none(),
        "one step"
    );
    let page = store
        .account_history_step(AccountId(3), &newest_first)
        .unwrap()
        .expect("indexed");
    let ids: Vec<u128> = page.transfers.iter().map(|(t, _)| t.id.0).collect();
    assert_eq!(ids, [newest, newest - 1, newest - 2]);
    let page = store
        .account_history_step(AccountId(2), &HistoryFilter::after(Timestamp(0), 2))
        .unwrap()
        .expect("indexed");
    let ids: Vec<u128> = page.transfers.iter().map(|(t, _)| t.id.0).collect();
    assert_eq!(ids, [1, 2]);
}

/// A checkpoint of a normal size runs at background priority (the node loop comes first on a
/// busy machine); one that grew past the bound is behind and runs at the node's own priority,
/// so that it catches up and memory stays bounded.
#[test]
fn a_normal_checkpoint_yields_the_cpu_and_one_that_is_behind_does_not() {
    let own = bulwark_store::this_threads_nice().expect("getpriority answers");
    let dir = tempfile::tempdir().unwrap();
    let mut store = StateStore::open(&dir.path().join("state.redb")).unwrap();
    // Checkpoints of up to 4 transfers (2 x 2) are of a normal size.
    store.set_checkpoint_transfers(2);
    store.apply_batch(1, &accounts_batch(10));
    store.apply_batch(2, &transfers_batch(100, unit_transfers(1, 3)));
    let normal = store.checkpoint_now().unwrap().expect("a checkpoint ran");
    assert_eq!(normal.transfers, 3);
    // Raising one's own nice value needs no privilege. A test run at nice 10 or more sees no
    // difference, and a checkpoint never runs at a higher priority than the node (as root,
    // setpriority could raise it: `nice -n 15 cargo test` checks that).
    assert_eq!(
        normal.nice,
        Some(own.max(bulwark_limits::CHECKPOINT_NICE)),
        "a normal checkpoint (own nice {own})"
    );
    store.apply_batch(3, &transfers_batch(200, unit_transfers(10, 5)));
    let behind = store.checkpoint_now().unwrap().expect("a checkpoint ran");
    assert_eq!(behind.transfers, 5);
    assert_eq!(behind.nice, Some(own), "a checkpoint that is behind");
}

/// The memtable's cap: while a checkpoint runs, an active memtable of `MEMTABLE_CAP_FACTOR` times
/// `--checkpoint-transfers` is backlogged (the leader then holds new writes); it is not once the
/// checkpoint is written, nor without a running checkpoint, nor below the cap.
#[test]
fn a_memtable_at_its_cap_is_backlogged_until_the_running_checkpoint_is_written() {
    use bulwark_ledger::StateMachine;
    let cap = bulwark_limits::MEMTABLE_CAP_FACTOR as u128;
    let dir = tempfile::tempdir().unwrap();
    let mut store = StateStore::open(&dir.path().join("state.redb")).unwrap();
    store.set_checkpoint_transfers(1);
    store.apply_batch(1, &accounts_batch(10));
    store.apply_batch(2, &transfers_batch(100, unit_transfers(1, cap + 1)));
    assert!(!store.is_backlogged(), "no checkpoint runs");
    assert!(store.start_checkpoint());
    store.apply_batch(3, &transfers_batch(200, unit_transfers(100, cap - 1)));
    assert!(!store.is_backlogged(), "below the cap");
    store.apply_batch(4, &transfers_batch(300, unit_transfers(200, 1)));
    assert!(store.is_backlogged(), "at the cap while a checkpoint runs");
    store
        .wait_checkpoint()
        .unwrap()
        .expect("the checkpoint ran");
    assert!(!store.is_backlogged(), "the checkpoint is written");
}
