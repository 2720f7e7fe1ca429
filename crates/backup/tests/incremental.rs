//! Incremental backups: a chain (full, then incrementals each after the last) restores each
//! link to exactly the state it was taken of, stores far less than full backups, is verified
//! link by link (damage names the link), and prune keeps every link a kept backup needs.

mod common;

use std::time::Duration;

use bulwark_backup::create::Source;
use bulwark_backup::incremental::create_incremental;
use bulwark_backup::manifest::{Manifest, DIFF_FILE};
use bulwark_backup::prune::{plan_prune, Retention};
use bulwark_backup::restore::{build_state, plan, RestoreTo};
use bulwark_backup::target::DirTarget;
use bulwark_backup::verify::verify;
use bulwark_backup::Target;
use bulwark_ledger::{AccountId, Amount, LedgerStore, StateMachine};

fn manifest(target: &dyn Target, name: &str) -> Manifest {
    Manifest::decode(
        &target
            .get(&Manifest::object(name, "manifest.json"))
            .unwrap(),
    )
    .unwrap()
}

fn incremental(target: &dyn Target, store: &bulwark_store::StateStore, parent: &str) -> Manifest {
    let mut stream = Vec::new();
    store.snapshot_source().export(&mut stream).unwrap();
    let source = Source {
        cluster_id: common::CLUSTER,
        node_id: 1,
    };
    let parent = manifest(target, parent);
    create_incremental(target, source, &mut &stream[..], &parent, &mut |_| {}).unwrap()
}

/// Restores backup `name` alone (no archive); answers account 2's posted credits and the index.
fn restore(target: &dyn Target, name: &str) -> Result<(Amount, u64), String> {
    let dir = tempfile::tempdir().unwrap();
    let p = plan(target, None, Some(name), RestoreTo::End).map_err(|e| e.to_string())?;
    let (store, restored) =
        build_state(target, None, &p, &dir.path().join("s.redb"), &mut |_, _| {})
            .map_err(|e| e.to_string())?;
    let credits = store.account(AccountId(2)).unwrap().credits_posted;
    Ok((credits, restored.applied_index))
}

#[test]
fn a_chain_of_incrementals_restores_each_link_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let target = DirTarget::new(&dir.path().join("backups")).unwrap();
    let scratch = dir.path().join("scratch");
    std::fs::create_dir_all(&scratch).unwrap();
    let full = common::backup(&target, &common::store_at(&scratch, 6));
    let one = incremental(&target, &common::store_at(&scratch, 15), &full);
    let full20 = common::backup(&target, &common::store_at(&scratch, 20));
    let store = common::store_at(&scratch, 25);
    let two = incremental(&target, &store, &one.name);
    assert_eq!(two.parent.as_deref(), Some(one.name.as_str()));
    assert_eq!(two.applied_index, 25);
    assert_eq!(two.last_timestamp, StateMachine::last_timestamp(&store).0);

    let report = verify(&target, None, &scratch).unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    for (name, to) in [
        (&full, 6u64),
        (&one.name, 15),
        (&full20, 20),
        (&two.name, 25),
    ] {
        let expected: u128 = (3..=to as u128).sum();
        assert_eq!(
            restore(&target, name),
            Ok((expected as Amount, to)),
            "{name}"
        );
    }
    // Prune: keeping the last incremental keeps its whole chain, and nothing else.
    let retention = Retention {
        keep_full: 0,
        keep_within: Duration::ZERO,
    };
    let p = plan_prune(&target, None, retention, two.created_at_ms).unwrap();
    assert_eq!(p.drop_backups, std::slice::from_ref(&full20));
    let mut kept = p.kept.clone();
    kept.sort();
    let mut chain = vec![full.clone(), one.name.clone(), two.name.clone()];
    chain.sort();
    assert_eq!(kept, chain);

    // A damaged link is named, and a restore through it refused.
    let object = Manifest::object(&one.name, DIFF_FILE);
    let mut bytes = target.get(&object).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 1;
    target.put(&object, &bytes).unwrap();
    let report = verify(&target, None, &scratch).unwrap();
    assert!(
        report.problems.iter().any(|p| p.object == object),
        "{:?}",
        report.problems
    );
    let error = restore(&target, &two.name).unwrap_err();
    assert!(error.contains(&object), "{error}");
    // A missing link too.
    target
        .delete(&Manifest::object(&one.name, "manifest.json"))
        .unwrap();
    let error = restore(&target, &two.name).unwrap_err();
    assert!(error.contains(&one.name), "{error}");
}

#[test]
fn an_incremental_holds_only_what_changed() {
    let dir = tempfile::tempdir().unwrap();
    let target = DirTarget::new(&dir.path().join("backups")).unwrap();
    let scratch = dir.path().join("scratch");
    std::fs::create_dir_all(&scratch).unwrap();
    let full = common::backup(&target, &common::store_at(&scratch, 400));
    let next = incremental(&target, &common::store_at(&scratch, 410), &full);
    let (full_bytes, diff_bytes) = (manifest(&target, &full).files[0].bytes, next.files[0].bytes);
    // Ten transfers on top of four hundred: a few percent of the state.
    assert!(diff_bytes * 10 < full_bytes, "{diff_bytes} vs {full_bytes}");
    let expected: u128 = (3..=410).sum();
    assert_eq!(restore(&target, &next.name), Ok((expected as Amount, 410)));
}
