//! Retention drops old backups and the chunks before the oldest kept one, and nothing a kept
//! restore point needs: after a prune every kept backup still restores to the archive's end.

mod common;

use std::time::Duration;

use bulwark_backup::catalog::{backups, ArchiveListing, FoundBackup};
use bulwark_backup::prune::{apply_prune, plan_prune, Retention};
use bulwark_backup::restore::{build_state, plan, RestoreError, RestoreTo};
use bulwark_backup::target::DirTarget;
use bulwark_backup::verify::verify;
use bulwark_backup::Target;

#[test]
fn prune_keeps_every_restore_point_it_keeps() {
    let dir = tempfile::tempdir().unwrap();
    let target = DirTarget::new(&dir.path().join("backups")).unwrap();
    let archive = DirTarget::new(&dir.path().join("archive")).unwrap();
    let scratch = dir.path().join("scratch");
    std::fs::create_dir_all(&scratch).unwrap();
    let mut names = Vec::new();
    for at in [6, 15, 25] {
        let store = common::store_at(&scratch, at);
        names.push(common::backup(&target, &store));
    }
    common::archive(&archive, 30);
    // Keep the two newest; none is younger than the window.
    let retention = Retention {
        keep_full: 2,
        keep_within: Duration::ZERO,
    };
    let later = bulwark_backup::now_ms() + 1;
    let p = plan_prune(&target, Some(&archive), retention, later).unwrap();
    assert_eq!(p.drop_backups, [names[0].clone()]);
    // Entries 2..=11 come before the oldest kept backup (index 15); 12..=21 are needed by it.
    assert_eq!(p.drop_chunks.len(), 1, "{:?}", p.drop_chunks);
    assert!(p.drop_chunks[0].ends_with("00000000000000000002-00000000000000000011.chunk"));
    apply_prune(&target, Some(&archive), &p).unwrap();
    let left: Vec<String> = backups(&target)
        .unwrap()
        .into_iter()
        .map(|b| match b {
            FoundBackup::Complete(m) => m.name,
            FoundBackup::Unusable { name, why, .. } => panic!("{name}: {why}"),
        })
        .collect();
    assert_eq!(left, names[1..]);
    assert_eq!(
        ArchiveListing::read(&archive, common::CLUSTER)
            .unwrap()
            .first_index(),
        Some(12)
    );
    let report = verify(&target, Some(&archive), &scratch).unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    for name in &names[1..] {
        let p = plan(&target, Some(&archive), Some(name), RestoreTo::End).unwrap();
        let out = tempfile::tempdir().unwrap();
        let (_, restored) = build_state(
            &target,
            Some(&archive),
            &p,
            &out.path().join("s.redb"),
            &mut |_, _| {},
        )
        .unwrap();
        assert_eq!(restored.applied_index, 30, "from {name}");
    }
    let early = plan(&target, Some(&archive), None, RestoreTo::Index(10)).unwrap_err();
    assert!(
        matches!(early, RestoreError::BeforeBackups { .. }),
        "{early}"
    );
    // A window that covers every backup keeps them all, whatever keep_full says.
    let all = Retention {
        keep_full: 0,
        keep_within: Duration::from_secs(3600),
    };
    let p = plan_prune(&target, Some(&archive), all, later).unwrap();
    assert!(
        p.drop_backups.is_empty() && p.drop_chunks.is_empty(),
        "{p:?}"
    );
    // A backup that never finished is dropped only once it is old.
    target
        .put("backups/000000000000001-n1/state.snap", b"half")
        .unwrap();
    let p = plan_prune(&target, Some(&archive), all, later).unwrap();
    assert_eq!(p.drop_backups, ["000000000000001-n1"]);
}
