//! The crash-safe writes on a real directory, and on a really full disk (a small tmpfs: the tests
//! run as root, as CI does; a failed mount fails the test with the reason).

use std::fs;
use std::os::unix::fs::FileExt;
use std::path::Path;

use bulwark_fs::{
    create_file_atomically, fsync_dir, rename_durably, temp_path, write_file_atomically,
    WriteFailure,
};
use bulwark_tmpfs::{fill, Tmpfs};

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    v.sort();
    v
}

#[test]
fn a_file_is_created_and_replaced_and_no_temp_file_survives() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("members");
    write_file_atomically(&path, b"first").unwrap();
    assert_eq!(fs::read(&path).unwrap(), b"first");
    write_file_atomically(&path, b"second, longer").unwrap();
    assert_eq!(fs::read(&path).unwrap(), b"second, longer");
    write_file_atomically(&path, b"").unwrap();
    assert_eq!(fs::read(&path).unwrap(), b"");
    assert_eq!(names(dir.path()), ["members"]);
}

#[test]
fn a_created_file_holds_its_parts_and_stays_writable() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("seg");
    let file = create_file_atomically(&path, &[b"head", b"", b"er+body"]).unwrap();
    assert_eq!(fs::read(&path).unwrap(), b"header+body");
    file.write_all_at(b"!", 11).unwrap();
    let mut back = [0u8; 12];
    file.read_exact_at(&mut back, 0).unwrap();
    assert_eq!(&back, b"header+body!");
    assert_eq!(names(dir.path()), ["seg"]);
}

#[test]
fn a_failed_rename_removes_the_temp_file_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    // A non-empty directory where the file should go: the rename fails.
    let path = dir.path().join("target");
    fs::create_dir(&path).unwrap();
    fs::write(path.join("inside"), b"kept").unwrap();
    match create_file_atomically(&path, &[b"new"]) {
        Err(WriteFailure::Undone(e)) => {
            assert_eq!(e.op, "rename");
            assert_eq!(e.path, temp_path(&path));
        }
        other => panic!("expected an undone rename, got {other:?}"),
    }
    assert_eq!(names(dir.path()), ["target"]);
    assert_eq!(fs::read(path.join("inside")).unwrap(), b"kept");
}

#[test]
fn errors_name_the_step_and_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no such dir");
    let e = write_file_atomically(&missing.join("f"), b"x").unwrap_err();
    assert_eq!(
        (e.op, e.path.clone()),
        ("create", temp_path(&missing.join("f")))
    );
    assert!(e.to_string().contains("no such dir/f.tmp"), "{e}");
    let e = fsync_dir(&missing).unwrap_err();
    assert_eq!(
        (e.op, e.path.as_path()),
        ("fsync directory", missing.as_path())
    );
    let e = rename_durably(&missing.join("a"), &dir.path().join("b")).unwrap_err();
    assert_eq!(e.op, "rename");
}

#[test]
fn rename_durably_replaces_the_target() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a.incoming"), dir.path().join("a"));
    fs::write(&a, b"new").unwrap();
    fs::write(&b, b"old").unwrap();
    rename_durably(&a, &b).unwrap();
    assert_eq!(fs::read(&b).unwrap(), b"new");
    assert_eq!(names(dir.path()), ["a"]);
}

#[test]
fn a_write_that_meets_a_full_disk_leaves_the_old_file_intact() {
    let tmpfs = Tmpfs::mount_temp("bulwark-fs-tmpfs", 1 << 20)
        .expect("mount a tmpfs (needs root, as CI has)");
    let path = tmpfs.path().join("members");
    write_file_atomically(&path, b"the old content").unwrap();
    let filler = fill(tmpfs.path()).expect("fill the disk").0;

    let big = vec![7u8; 256 << 10];
    let e = write_file_atomically(&path, &big).expect_err("the disk is full");
    assert!(e.is_disk_full(), "{e}");
    assert_eq!(e.op, "write");
    assert_eq!(fs::read(&path).unwrap(), b"the old content");
    assert_eq!(
        names(tmpfs.path()),
        ["filler", "members"],
        "no temp file survives"
    );
    match create_file_atomically(&path, &[&big]) {
        Err(WriteFailure::Undone(e)) => assert!(e.is_disk_full(), "{e}"),
        other => panic!("expected an undone write, got {other:?}"),
    }

    fs::remove_file(filler).unwrap();
    write_file_atomically(&path, &big).expect("space is back");
    assert_eq!(fs::read(&path).unwrap(), big);
    assert_eq!(names(tmpfs.path()), ["members"]);
}
