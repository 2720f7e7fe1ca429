//! The lazy filesystem through a real FUSE mount (root and /dev/fuse, as on CI): what a power cut
//! keeps and loses, torn writes, concurrent and large files, a full backing disk, the control file,
//! and Bulwark's own crash-safe file replacement.

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use bulwark_lazyfs::{LazyFs, PAGE};

/// A lazy filesystem on fresh temporary directories; unmounted before they are removed.
struct Mounted {
    fs: LazyFs,
    backing: tempfile::TempDir,
    _mountpoint: tempfile::TempDir,
}

impl Mounted {
    fn new() -> Mounted {
        Mounted::over(tempfile::tempdir().expect("backing dir"))
    }

    fn over(backing: tempfile::TempDir) -> Mounted {
        let mountpoint = tempfile::tempdir().expect("mount point");
        let fs = LazyFs::mount(backing.path(), mountpoint.path())
            .expect("mount (needs root and /dev/fuse)");
        Mounted {
            fs,
            backing,
            _mountpoint: mountpoint,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.fs.mountpoint().join(name)
    }

    fn root(&self) -> &Path {
        self.fs.mountpoint()
    }
}

fn fsync_dir(dir: &Path) {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .expect("fsync dir");
}

/// A file written and made durable, data and entry.
fn durable_file(path: &Path, bytes: &[u8]) {
    let file = File::create(path).expect("create");
    file.write_all_at(bytes, 0).expect("write");
    file.sync_all().expect("fsync");
    fsync_dir(path.parent().expect("parent"));
}

#[test]
fn unsynced_writes_and_truncations_are_lost_on_a_cut() {
    let m = Mounted::new();
    let (a, b, c) = (m.path("a"), m.path("b"), m.path("c"));
    for path in [&a, &b, &c] {
        durable_file(path, b"durable bytes");
    }
    let mut appender = OpenOptions::new().append(true).open(&a).expect("open a");
    appender.write_all(b" and more").expect("append");
    File::options()
        .write(true)
        .open(&a)
        .unwrap()
        .write_all_at(b"DUR", 0)
        .expect("overwrite");
    File::options()
        .write(true)
        .open(&b)
        .unwrap()
        .set_len(3)
        .expect("truncate");
    File::create(&c).expect("open with O_TRUNC");
    // Readers see what was written, the backing disk does not have it yet.
    assert_eq!(fs::read(&a).unwrap(), b"DURable bytes and more");
    assert_eq!(fs::read(&b).unwrap(), b"dur");
    assert_eq!(fs::metadata(&c).unwrap().len(), 0);
    assert_eq!(
        fs::read(m.backing.path().join("a")).unwrap(),
        b"durable bytes"
    );
    assert_eq!(m.fs.stats().pending_bytes, 12);
    assert_eq!(m.fs.stats().pending_files, 3);

    let report = m.fs.power_cut();
    assert_eq!(report.files_with_lost_writes, 3);
    assert_eq!(report.bytes_dropped, 12);
    for path in [&a, &b, &c] {
        assert_eq!(fs::read(path).unwrap(), b"durable bytes", "{path:?}");
    }
    assert_eq!(m.fs.stats().pending_bytes, 0);
    // The descriptor opened before the cut still works, as a process's would after a reboot.
    appender.write_all(b"!").expect("append after the cut");
    assert_eq!(fs::read(&a).unwrap(), b"durable bytes!");
}

#[test]
fn fsynced_and_fdatasynced_data_survive_a_cut() {
    let m = Mounted::new();
    let (a, b) = (m.path("a"), m.path("b"));
    durable_file(&a, b"");
    durable_file(&b, b"");
    let fsyncs_before = m.fs.stats().fsyncs;
    let mut file_a = OpenOptions::new().append(true).open(&a).unwrap();
    file_a.write_all(b"one ").unwrap();
    file_a.sync_all().unwrap();
    let file_b = OpenOptions::new().write(true).open(&b).unwrap();
    file_b.write_all_at(b"fdatasynced", 0).unwrap();
    file_b.set_len(5).unwrap();
    file_b.sync_data().unwrap();
    // Synced through another descriptor than the one that wrote it.
    file_a.write_all(b"two").unwrap();
    File::open(&a).unwrap().sync_all().unwrap();
    file_a.write_all(b" three").unwrap();
    assert_eq!(m.fs.stats().fsyncs, fsyncs_before + 3);

    // Opened O_DSYNC: every write is durable when it returns.
    let dsync = m.path("dsync");
    durable_file(&dsync, b"");
    let file = OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_DSYNC)
        .open(&dsync)
        .unwrap();
    file.write_all_at(b"at once", 0).unwrap();

    m.fs.power_cut();
    assert_eq!(fs::read(&a).unwrap(), b"one two");
    assert_eq!(fs::read(&b).unwrap(), b"fdata");
    assert_eq!(fs::read(&dsync).unwrap(), b"at once");
}

#[test]
fn fallocate_grows_a_file_until_a_cut_unless_fsynced() {
    let m = Mounted::new();
    let path = m.path("preallocated");
    durable_file(&path, b"head");
    let file = OpenOptions::new().write(true).open(&path).unwrap();
    let allocate = |len: i64| {
        // SAFETY: fallocate on an open descriptor; no memory is passed.
        let r = unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, len) };
        assert_eq!(r, 0, "{}", std::io::Error::last_os_error());
    };
    allocate(1 << 20);
    assert_eq!(fs::metadata(&path).unwrap().len(), 1 << 20);
    m.fs.power_cut();
    assert_eq!(fs::read(&path).unwrap(), b"head");
    allocate(1 << 16);
    file.sync_all().unwrap();
    m.fs.power_cut();
    let kept = fs::read(&path).unwrap();
    assert_eq!(kept.len(), 1 << 16);
    assert!(kept.starts_with(b"head") && kept[4..].iter().all(|b| *b == 0));
}

#[test]
fn creates_and_mkdirs_without_a_directory_fsync_are_lost() {
    let m = Mounted::new();
    let (kept_dir, other_dir) = (m.path("kept"), m.path("other"));
    fs::create_dir(&kept_dir).unwrap();
    fs::create_dir(&other_dir).unwrap();
    fsync_dir(m.root());
    // A file fsynced itself, but not its directory: its entry is not durable.
    let file = File::create(kept_dir.join("unsynced-entry")).unwrap();
    file.write_all_at(b"data", 0).unwrap();
    file.sync_all().unwrap();
    drop(file);
    durable_file(&other_dir.join("synced-entry"), b"data");
    fs::create_dir(m.path("lost-dir")).unwrap();
    fs::write(m.path("lost-dir/inner"), b"x").unwrap();
    assert_eq!(m.fs.stats().pending_dir_changes, 3);

    let report = m.fs.power_cut();
    assert_eq!(report.changes_undone, 3);
    assert!(!kept_dir.join("unsynced-entry").exists());
    assert_eq!(fs::read(other_dir.join("synced-entry")).unwrap(), b"data");
    assert!(!m.path("lost-dir").exists());
    assert!(kept_dir.is_dir());
    // The backing directory holds nothing of what was undone, stash included.
    let stash = m.backing.path().join(bulwark_lazyfs::STASH);
    assert_eq!(fs::read_dir(stash).unwrap().count(), 0);
}

#[test]
fn renames_and_unlinks_without_a_directory_fsync_are_undone() {
    let m = Mounted::new();
    fs::create_dir(m.path("d")).unwrap();
    fsync_dir(m.root());
    durable_file(&m.path("d/moved"), b"moved");
    durable_file(&m.path("d/removed"), b"removed");
    durable_file(&m.path("d/empty-dir-file"), b"");
    fs::create_dir(m.path("d/empty")).unwrap();
    fsync_dir(&m.path("d"));
    let ino = fs::metadata(m.path("d/moved")).unwrap().ino();

    fs::rename(m.path("d/moved"), m.path("d/new-name")).unwrap();
    assert_eq!(fs::metadata(m.path("d/new-name")).unwrap().ino(), ino);
    fs::remove_file(m.path("d/removed")).unwrap();
    fs::remove_dir(m.path("d/empty")).unwrap();
    // A directory renamed with its files in it.
    fs::rename(m.path("d"), m.path("e")).unwrap();
    assert_eq!(fs::read(m.path("e/new-name")).unwrap(), b"moved");

    m.fs.power_cut();
    let mut names: Vec<String> = fs::read_dir(m.path("d"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["empty", "empty-dir-file", "moved", "removed"]);
    assert!(!m.path("e").exists());
    assert_eq!(fs::read(m.path("d/moved")).unwrap(), b"moved");
    assert_eq!(fs::read(m.path("d/removed")).unwrap(), b"removed");
    assert_eq!(
        fs::metadata(m.path("d/moved")).unwrap().ino(),
        ino,
        "the same inode number for the session"
    );
}

#[test]
fn a_rename_over_an_existing_file_without_a_directory_fsync_restores_the_old_file() {
    let m = Mounted::new();
    let (target, tmp) = (m.path("target"), m.path("target.tmp"));
    durable_file(&target, b"old");
    let file = File::create(&tmp).unwrap();
    file.write_all_at(b"new", 0).unwrap();
    file.sync_all().unwrap();
    fs::rename(&tmp, &target).unwrap();
    assert_eq!(fs::read(&target).unwrap(), b"new");

    m.fs.power_cut();
    assert_eq!(fs::read(&target).unwrap(), b"old");
    assert!(!tmp.exists(), "its create was not durable either");

    // With the directory fsynced, the new file is what survives.
    let file = File::create(&tmp).unwrap();
    file.write_all_at(b"new", 0).unwrap();
    file.sync_all().unwrap();
    fs::rename(&tmp, &target).unwrap();
    fsync_dir(m.root());
    m.fs.power_cut();
    assert_eq!(fs::read(&target).unwrap(), b"new");
    assert_eq!(fs::read_dir(m.root()).unwrap().count(), 1, "nothing else");
}

#[test]
fn bulwark_fs_replacement_survives_a_cut_and_without_the_directory_fsync_does_not() {
    let m = Mounted::new();
    let path = m.path("members");
    bulwark_fs::write_file_atomically(&path, b"version 1").unwrap();
    bulwark_fs::write_file_atomically(&path, b"version 2").unwrap();
    m.fs.power_cut();
    assert_eq!(fs::read(&path).unwrap(), b"version 2");

    // The same steps without the last one: write the temp file, fsync it, rename it.
    let tmp = bulwark_fs::temp_path(&path);
    let file = File::create(&tmp).unwrap();
    file.write_all_at(b"version 3", 0).unwrap();
    file.sync_all().unwrap();
    fs::rename(&tmp, &path).unwrap();
    m.fs.power_cut();
    assert_eq!(fs::read(&path).unwrap(), b"version 2");
}

/// A directory tree made with `create_dir_all_durably` (a node's data directory, its WAL
/// directory) keeps a file made durable in it across a cut; made with `create_dir_all`, the
/// whole tree and the file are gone, however well the file itself was written.
#[test]
fn a_new_directory_survives_a_cut_only_when_created_durably() {
    let m = Mounted::new();
    let durable = m.path("data-a").join("wal");
    bulwark_fs::create_dir_all_durably(&durable).unwrap();
    bulwark_fs::write_file_atomically(&durable.join("identity"), b"node 1").unwrap();
    let plain = m.path("data-b").join("wal");
    fs::create_dir_all(&plain).unwrap();
    bulwark_fs::write_file_atomically(&plain.join("identity"), b"node 1").unwrap();
    m.fs.power_cut();
    assert_eq!(fs::read(durable.join("identity")).unwrap(), b"node 1");
    assert!(
        !m.path("data-b").exists(),
        "a directory whose parent was never fsynced outlived the cut"
    );
    // An existing directory is left as it is, and is no error.
    bulwark_fs::create_dir_all_durably(&durable).unwrap();
    assert_eq!(fs::read(durable.join("identity")).unwrap(), b"node 1");
}

/// The bytes `writes` leave in a file that was empty.
fn model(writes: &[(u64, Vec<u8>)]) -> Vec<u8> {
    let mut bytes = Vec::new();
    for (offset, data) in writes {
        let end = *offset as usize + data.len();
        if bytes.len() < end {
            bytes.resize(end, 0);
        }
        bytes[*offset as usize..end].copy_from_slice(data);
    }
    bytes
}

#[test]
fn a_torn_cut_keeps_a_page_aligned_prefix_in_write_order() {
    let m = Mounted::new();
    let path = m.path("torn");
    // Ten writes of 5,000 bytes, unaligned, then one back at the start (the order matters).
    let mut writes: Vec<(u64, Vec<u8>)> = (0..10u8)
        .map(|i| (u64::from(i) * 5_000, vec![i + 1; 5_000]))
        .collect();
    writes.push((100, vec![0xEE; 50]));
    let all = model(&writes);
    let mut lengths = Vec::new();
    for seed in 0..24 {
        durable_file(&path, b"");
        let file = OpenOptions::new().write(true).open(&path).unwrap();
        for (offset, data) in &writes {
            file.write_all_at(data, *offset).unwrap();
        }
        drop(file);
        m.fs.power_cut_torn(seed);
        let kept = fs::read(&path).unwrap();
        let len = kept.len() as u64;
        assert!(
            len.is_multiple_of(PAGE) || len == 50_000,
            "seed {seed}: {len} bytes kept, not a page boundary"
        );
        // The prefix of the writes in their order: the last write only once all others are in.
        let expected = if kept.len() == all.len() && kept[100] == 0xEE {
            all.clone()
        } else {
            model(&writes[..10])[..kept.len()].to_vec()
        };
        assert_eq!(kept, expected, "seed {seed}");
        lengths.push(len);
    }
    lengths.sort_unstable();
    lengths.dedup();
    assert!(
        lengths.len() >= 4 && lengths.iter().any(|l| *l > 0 && *l < 50_000),
        "the tears vary: {lengths:?}"
    );

    // The same seed tears the same way.
    let mut again = Vec::new();
    for _ in 0..2 {
        durable_file(&path, b"");
        fs::write(&path, model(&writes[..10])).unwrap();
        m.fs.power_cut_torn(7);
        again.push(fs::read(&path).unwrap());
    }
    assert_eq!(again[0], again[1]);
}

#[test]
fn concurrent_writers_each_keep_exactly_what_they_fsynced() {
    let m = Mounted::new();
    let threads: Vec<_> = (0..4u8)
        .map(|t| {
            let path = m.path(&format!("file-{t}"));
            std::thread::spawn(move || {
                let mut file = File::create(&path).unwrap();
                let dir = path.parent().unwrap().to_path_buf();
                fsync_dir(&dir);
                let mut synced = Vec::new();
                let mut written = Vec::new();
                for i in 0..200u32 {
                    let record = vec![t.wrapping_mul(31).wrapping_add(i as u8); 1_000];
                    file.write_all(&record).unwrap();
                    written.extend_from_slice(&record);
                    if i % 50 == 37 {
                        file.sync_data().unwrap();
                        synced = written.clone();
                    }
                }
                assert_eq!(
                    fs::read(&path).unwrap(),
                    written,
                    "read back before the cut"
                );
                (path, synced)
            })
        })
        .collect();
    let files: Vec<(PathBuf, Vec<u8>)> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    m.fs.power_cut();
    for (path, synced) in files {
        assert_eq!(synced.len(), 188_000);
        assert_eq!(fs::read(&path).unwrap(), synced, "{path:?}");
    }
}

/// A small seeded generator for the test's random offsets.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// Random writes of up to 256 KiB anywhere in the first `size` bytes, applied to the file and to
/// the model alike.
fn random_writes(file: &File, model: &mut Vec<u8>, rng: &mut Rng, count: usize, size: u64) {
    for _ in 0..count {
        let len = 1 + rng.below(256 << 10);
        let offset = rng.below(size - len);
        let data: Vec<u8> = (0..len).map(|i| (i as u8) ^ (offset as u8)).collect();
        file.write_all_at(&data, offset).unwrap();
        let end = (offset + len) as usize;
        if model.len() < end {
            model.resize(end, 0);
        }
        model[offset as usize..end].copy_from_slice(&data);
    }
}

#[test]
fn large_files_written_at_random_offsets_match_a_model() {
    const SIZE: u64 = 40 << 20;
    let m = Mounted::new();
    let path = m.path("large");
    durable_file(&path, b"");
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    let mut rng = Rng(0x2545_F491_4F6C_DD1D);
    let mut model = Vec::new();
    random_writes(&file, &mut model, &mut rng, 150, SIZE);
    file.sync_data().unwrap();
    let durable = model.clone();
    random_writes(&file, &mut model, &mut rng, 150, SIZE);
    file.set_len(SIZE / 2).unwrap();
    model.resize((SIZE / 2) as usize, 0);
    random_writes(&file, &mut model, &mut rng, 50, SIZE);
    assert_eq!(fs::read(&path).unwrap(), model, "reads see the model");

    m.fs.power_cut();
    assert_eq!(
        fs::read(&path).unwrap(),
        durable,
        "the cut leaves the synced model"
    );
}

#[test]
fn a_full_backing_disk_answers_enospc_at_the_write() {
    let backing = bulwark_tmpfs::Tmpfs::mount_temp("bulwark-lazyfs-full", 1 << 20)
        .expect("tmpfs (needs root)");
    let mountpoint = tempfile::tempdir().unwrap();
    let fs = LazyFs::mount(backing.path(), mountpoint.path()).expect("mount");
    let root = fs.mountpoint().to_path_buf();
    durable_file(&root.join("log"), b"");
    bulwark_tmpfs::fill_leaving(backing.path(), 64 << 10).unwrap();
    let file = OpenOptions::new()
        .write(true)
        .open(root.join("log"))
        .unwrap();
    // Unsynced writes take their disk space when made, so the disk is full at the write.
    file.write_all_at(&[1; 32 << 10], 0).expect("32 KiB fit");
    let err = file
        .write_all_at(&[2; 64 << 10], 32 << 10)
        .expect_err("full");
    assert_eq!(err.kind(), ErrorKind::StorageFull, "{err}");
    file.sync_data().expect("what fitted syncs");

    // A removal frees its space only once durable (until then the file can come back).
    fs::remove_file(root.join("filler")).unwrap();
    let err = file
        .write_all_at(&[2; 64 << 10], 32 << 10)
        .expect_err("still full");
    assert_eq!(err.kind(), ErrorKind::StorageFull, "{err}");
    fsync_dir(&root);
    file.write_all_at(&[2; 64 << 10], 32 << 10)
        .expect("space again");
    file.sync_data().unwrap();
    fs.power_cut();
    let kept = fs::read(root.join("log")).unwrap();
    assert_eq!(kept.len(), 96 << 10);
    assert!(kept[..32 << 10].iter().all(|b| *b == 1) && kept[32 << 10..].iter().all(|b| *b == 2));
    // Closed and unmounted before the tmpfs goes.
    drop(file);
    drop(fs);
}

#[test]
fn the_control_file_drives_the_filesystem_from_another_process() {
    let m = Mounted::new();
    let control = m.fs.control_file();
    durable_file(&m.path("f"), b"durable");
    fs::write(m.path("f"), b"lost").unwrap();
    let sh = |command: &str| {
        Command::new("sh")
            .arg("-c")
            .arg(format!("echo '{command}' > {}", control.display()))
            .status()
            .unwrap()
    };
    assert!(sh("fsync-delay-ms 3").success());
    assert!(sh("cut").success());
    assert_eq!(fs::read(m.path("f")).unwrap(), b"durable");
    assert!(!sh("reboot").success(), "an unknown command is refused");
    fs::write(m.path("f"), b"torn away").unwrap();
    assert!(sh("torn 5").success());
    let status = fs::read_to_string(&control).unwrap();
    assert!(status.contains("\ncuts 2\n"), "{status}");
    assert!(status.contains("fsync_delay_ms 3\n"), "{status}");
    assert_eq!(
        m.fs.stats().fsync_delay,
        std::time::Duration::from_millis(3)
    );
    // Hidden from listings: the control file and the stash.
    let names: Vec<_> = fs::read_dir(m.root())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["f"]);
}

#[test]
fn an_fsync_still_in_the_slow_disks_delay_when_the_power_goes_keeps_nothing() {
    let m = Mounted::new();
    durable_file(&m.path("f"), b"durable");
    let file = OpenOptions::new().write(true).open(m.path("f")).unwrap();
    file.write_all_at(b"in flight", 0).unwrap();
    let control = m.fs.controller();
    control.set_fsync_delay(std::time::Duration::from_millis(300));
    let syncing = std::thread::spawn(move || file.sync_all());
    std::thread::sleep(std::time::Duration::from_millis(100));
    let report = control.power_cut();
    assert_eq!(report.files_with_lost_writes, 1, "{report:?}");
    let synced = syncing.join().unwrap();
    assert!(synced.is_err(), "the fsync the cut interrupted succeeded");
    control.set_fsync_delay(std::time::Duration::ZERO);
    assert_eq!(fs::read(m.path("f")).unwrap(), b"durable");
}
