//! The refusals log on a filesystem that drops what was not made durable at a power cut
//! (`bulwark-lazyfs`; needs root and /dev/fuse): the directory and the file it creates survive.

use bulwark_refusals::RefusalLog;

#[test]
fn the_log_and_its_directory_survive_a_power_cut() {
    let backing = tempfile::tempdir().expect("backing dir");
    let mountpoint = tempfile::tempdir().expect("mount point");
    let fs = bulwark_lazyfs::LazyFs::mount(backing.path(), mountpoint.path())
        .expect("mount (needs root and /dev/fuse)");
    let dir = mountpoint.path().join("data").join("audit");
    let log = RefusalLog::open(&dir).expect("open the refusals log");
    drop(log);
    fs.power_cut();
    let files: Vec<_> = std::fs::read_dir(&dir)
        .expect("the audit directory outlived the cut")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(files, ["refusals.log"], "{files:?}");
}
