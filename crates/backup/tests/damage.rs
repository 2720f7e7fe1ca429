//! Every kind of damage to a backup or the archive is found by `verify`, naming the object, and
//! refused by a restore: a missing file, a flipped byte, a truncated chunk, a gap, a chunk of
//! another cluster, a manifest that lies; and a half-written upload (a temp file a crash left)
//! never counts.

use std::path::Path;

use bulwark_backup::catalog::ArchiveListing;
use bulwark_backup::chunk;
use bulwark_backup::manifest::{Manifest, MANIFEST_FILE, STATE_FILE};
use bulwark_backup::restore::{build_state, plan, RestoreError, RestoreTo};
use bulwark_backup::target::DirTarget;
use bulwark_backup::verify::{verify, Problem};
use bulwark_backup::Target;
use bulwark_ledger::{AccountId, Amount};

mod common;

use common::{entries, CLUSTER};

/// A backup of the state at index 6 in `backups`, and entries 2..=30 archived in chunks of ten
/// (the first overlapping the backup) in `archive`. Answers the backup's name.
fn make(backups: &dyn Target, archive: &dyn Target, scratch: &Path) -> String {
    let store = common::store_at(scratch, 6);
    let name = common::backup(backups, &store);
    common::archive(archive, 30);
    name
}

struct Fixture {
    dir: tempfile::TempDir,
    backups: DirTarget,
    archive: DirTarget,
    name: String,
    scratch: std::path::PathBuf,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let backups = DirTarget::new(&dir.path().join("backups")).unwrap();
    let archive = DirTarget::new(&dir.path().join("archive")).unwrap();
    let scratch = dir.path().join("scratch");
    std::fs::create_dir_all(&scratch).unwrap();
    let name = make(&backups, &archive, &scratch);
    Fixture {
        dir,
        backups,
        archive,
        name,
        scratch,
    }
}

impl Fixture {
    fn state_object(&self) -> String {
        Manifest::object(&self.name, STATE_FILE)
    }

    fn chunk(&self, first: u64) -> String {
        ArchiveListing::read(&self.archive, CLUSTER)
            .unwrap()
            .chunks
            .into_iter()
            .find(|c| c.first == first)
            .expect("the chunk")
            .name
    }

    /// The problems `verify` finds.
    fn problems(&self) -> Vec<Problem> {
        verify(&self.backups, Some(&self.archive), &self.scratch)
            .unwrap()
            .problems
    }

    fn restore(&self, to: RestoreTo) -> Result<bulwark_backup::restore::Restored, RestoreError> {
        let dir = tempfile::tempdir().unwrap();
        let p = plan(&self.backups, Some(&self.archive), None, to)?;
        build_state(
            &self.backups,
            Some(&self.archive),
            &p,
            &dir.path().join("state.redb"),
            &mut |_, _| {},
        )
        .map(|(_, restored)| restored)
    }

    /// A restore to the end: its error, as text.
    fn restore_error(&self) -> String {
        match self.restore(RestoreTo::End) {
            Ok(r) => panic!("the restore went through: {r:?}"),
            Err(e) => e.to_string(),
        }
    }

    fn rewrite(&self, target: &dyn Target, object: &str, change: impl FnOnce(&mut Vec<u8>)) {
        let mut bytes = target.get(object).unwrap();
        change(&mut bytes);
        target.put(object, &bytes).unwrap();
    }
}

/// A problem found in `object` itself (not only by the replay that follows the checks).
fn assert_names(found: &[Problem], object: &str, what: &str) {
    assert!(
        found
            .iter()
            .any(|p| p.object == object && p.what.contains(what)),
        "no problem naming {object} with {what:?} in {found:?}"
    );
}

#[test]
fn an_intact_backup_and_archive_verify_and_restore_to_every_index() {
    let f = fixture();
    let report = verify(&f.backups, Some(&f.archive), &f.scratch).unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    assert_eq!(report.restorable, Some((6, 30)));
    // A chunk a crash left half-written (a temp file) does not count.
    let tmp = f
        .dir
        .path()
        .join("archive/archive/1/00000000000000000031-00000000000000000040.chunk.tmp");
    std::fs::write(&tmp, b"half a chunk").unwrap();
    assert!(f.problems().is_empty(), "{:?}", f.problems());
    for to in [6, 7, 19, 20, 21, 30] {
        let dir = tempfile::tempdir().unwrap();
        let p = plan(&f.backups, Some(&f.archive), None, RestoreTo::Index(to)).unwrap();
        let (store, restored) = build_state(
            &f.backups,
            Some(&f.archive),
            &p,
            &dir.path().join("s.redb"),
            &mut |_, _| {},
        )
        .unwrap();
        assert_eq!(restored.applied_index, to);
        // Account 2 holds every amount moved: 3 + 4 + ... + to.
        let expected: u128 = (3..=to as u128).sum();
        let account = bulwark_ledger::LedgerStore::account(&store, AccountId(2)).unwrap();
        assert_eq!(
            account.credits_posted, expected as Amount,
            "restored to {to}"
        );
    }
    // By time: entry i is stamped at i seconds.
    let restored = f.restore(RestoreTo::Time(12_500_000_000)).unwrap();
    assert_eq!(restored.applied_index, 12);
    // Before the backup, or past the archive: refused.
    let early = f.restore(RestoreTo::Index(5)).unwrap_err();
    assert!(
        matches!(early, RestoreError::BeforeBackups { .. }),
        "{early}"
    );
    let late = f.restore(RestoreTo::Index(31)).unwrap_err();
    assert!(matches!(late, RestoreError::PastArchive { .. }), "{late}");
    let late = f.restore(RestoreTo::Time(31_000_000_000)).unwrap_err();
    assert!(matches!(late, RestoreError::PastArchive { .. }), "{late}");
}

#[test]
fn a_missing_state_file_is_named() {
    let f = fixture();
    f.backups.delete(&f.state_object()).unwrap();
    assert_names(&f.problems(), &f.state_object(), "missing");
    let error = f.restore_error();
    assert!(error.contains(&f.state_object()), "{error}");
}

#[test]
fn a_flipped_byte_in_the_state_is_named() {
    let f = fixture();
    f.rewrite(&f.backups, &f.state_object(), |b| {
        let at = b.len() / 2;
        b[at] ^= 0x10;
    });
    assert_names(&f.problems(), &f.state_object(), "checksum");
    let error = f.restore_error();
    assert!(error.contains(&f.state_object()), "{error}");
}

#[test]
fn a_truncated_chunk_is_named() {
    let f = fixture();
    let name = f.chunk(12);
    f.rewrite(&f.archive, &name, |b| b.truncate(b.len() - 9));
    assert_names(&f.problems(), &name, "checksum");
    let error = f.restore_error();
    assert!(error.contains(&name), "{error}");
}

#[test]
fn a_gap_in_the_archive_is_named() {
    let f = fixture();
    let name = f.chunk(12);
    f.archive.delete(&name).unwrap();
    assert_names(&f.problems(), &f.chunk(22), "12..=21 are missing");
    let error = f.restore_error();
    assert!(error.contains("12..=21 are missing"), "{error}");
    // Up to the gap is still restorable when asked for by index.
    assert_eq!(f.restore(RestoreTo::Index(11)).unwrap().applied_index, 11);
    let past = f.restore(RestoreTo::Index(25)).unwrap_err();
    assert!(
        matches!(
            past,
            RestoreError::Gap {
                from: 12,
                to: 21,
                ..
            }
        ),
        "{past}"
    );
}

#[test]
fn a_chunk_of_another_cluster_is_named() {
    let f = fixture();
    let name = f.chunk(12);
    let foreign = chunk::encode(7, &entries(21)[10..], 5);
    f.archive.put(&name, &foreign).unwrap();
    assert_names(&f.problems(), &name, "cluster 7");
    let error = f.restore_error();
    assert!(error.contains(&name), "{error}");
}

#[test]
fn a_manifest_that_lies_is_named() {
    let f = fixture();
    let object = Manifest::object(&f.name, MANIFEST_FILE);
    // Re-sealed with a valid checksum: only comparing it with the state shows the lie.
    let mut manifest = Manifest::decode(&f.backups.get(&object).unwrap()).unwrap();
    manifest.applied_index += 1;
    f.backups.put(&object, &manifest.encode()).unwrap();
    assert_names(
        &f.problems(),
        &f.state_object(),
        "the manifest says index 7",
    );
    let error = f.restore_error();
    assert!(error.contains("the manifest says 7"), "{error}");
    // Edited by hand: its own checksum no longer matches.
    f.rewrite(&f.backups, &object, |b| {
        let text = String::from_utf8(b.clone())
            .unwrap()
            .replace("\"source_node\": 1", "\"source_node\": 2");
        *b = text.into_bytes();
    });
    assert_names(&f.problems(), &object, "checksum");
    let error = f.restore_error();
    assert!(error.contains("no complete backup"), "{error}");
}
