//! `bulwark-lazyfs`: a FUSE pass-through filesystem over a backing directory that loses, on a
//! simulated power cut, everything a program did not make durable. Bulwark's power-loss faults run
//! its nodes on it (in the spirit of LazyFS, which Jepsen uses for the same purpose).
//!
//! Its model of durability (`docs/lazyfs.md` says more):
//! - data written to a file is held in memory until the file is fsynced or fdatasynced (through
//!   any descriptor); reads see it; a truncate or an extension is data too. `O_SYNC`/`O_DSYNC`
//!   writes are durable at once. `close` is not a sync. `O_DIRECT` is accepted as a plain write (it
//!   never promised durability without an fsync);
//! - creating, renaming (also over an existing file) and removing entries, and mkdir and rmdir,
//!   are pending until their directory is fsynced (a rename between two directories: either one);
//!   an fsync of a file does not make its directory entry durable;
//! - a power cut ([`Controller::power_cut`]) drops all of that; a torn cut
//!   ([`Controller::power_cut_torn`]) keeps a random prefix, in 4 KiB pieces in write order, of
//!   each file's unsynced writes. The mount stays up, as a machine rebooted on the same disk: the
//!   processes using it should be killed before the cut and started again after it;
//! - modes, owners and times pass straight through (they are durable at once), as does statfs.
//!
//! Unsynced data lives in memory, bounded by [`Options::max_pending_bytes`] for the whole mount: a
//! write past it fails with ENOSPC (counted in [`Stats::writes_refused_for_memory`]). A full
//! backing disk answers ENOSPC at the write (the space is reserved then).
//!
//! Mounting needs root (or a `fusermount3`), and the FUSE device.

mod control;
mod fuse;
mod pending;
mod state;
mod tree;

use std::io;
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub use control::Command;
pub use pending::PAGE;
pub use tree::{CONTROL, STASH};

/// How a mount is set up.
#[derive(Debug, Clone)]
pub struct Options {
    /// Unsynced data, in bytes, the whole mount may hold in memory (default 1 GiB).
    pub max_pending_bytes: u64,
    /// Threads serving the kernel's requests (default 4): one blocked in a slow fsync leaves the
    /// others to serve.
    pub threads: usize,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            max_pending_bytes: 1 << 30,
            threads: 4,
        }
    }
}

/// The counters of a mount.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// fsyncs and fdatasyncs of files.
    pub fsyncs: u64,
    /// fsyncs of directories.
    pub dir_fsyncs: u64,
    /// Power cuts, torn or not.
    pub cuts: u64,
    /// Bytes written and not yet synced.
    pub pending_bytes: u64,
    /// Files with unsynced writes or size changes.
    pub pending_files: u64,
    /// Entry changes (creates, renames, removals) whose directory was not yet fsynced.
    pub pending_dir_changes: u64,
    /// Writes refused with ENOSPC because the unsynced data reached its memory bound.
    pub writes_refused_for_memory: u64,
    /// What every fsync currently sleeps first.
    pub fsync_delay: Duration,
}

/// What one power cut dropped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CutReport {
    /// Files that had unsynced writes or size changes.
    pub files_with_lost_writes: u64,
    /// Bytes of unsynced writes dropped (those a torn cut kept not counted).
    pub bytes_dropped: u64,
    /// Pieces (at most a page each) a torn cut kept.
    pub pages_kept: u64,
    /// Entry changes undone.
    pub changes_undone: u64,
}

/// Drives a mount from any thread: power cuts, the slow disk, the counters. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Controller {
    shared: Arc<state::Shared>,
}

impl Controller {
    /// A power cut: every write not fsynced and every entry change whose directory was not
    /// fsynced is lost. The mount stays usable, as the same disk after a reboot.
    pub fn power_cut(&self) -> CutReport {
        self.shared.power_cut(None)
    }

    /// A power cut in which each file with unsynced writes keeps a prefix of them, cut at a page
    /// boundary (in 4 KiB pieces, in the order they were written), its length drawn from `seed`.
    pub fn power_cut_torn(&self, seed: u64) -> CutReport {
        self.shared.power_cut(Some(seed))
    }

    /// A slow disk: every fsync of a file or directory first sleeps `delay` (zero: off).
    pub fn set_fsync_delay(&self, delay: Duration) {
        self.shared.set_fsync_delay(delay);
    }

    /// Makes everything durable now, as a `sync` would.
    pub fn sync(&self) -> io::Result<()> {
        self.shared.sync_all()
    }

    pub fn stats(&self) -> Stats {
        self.shared.stats()
    }

    /// Runs one control-file command (see [`Command`]).
    pub fn run(&self, command: Command) -> io::Result<()> {
        control::run(&self.shared, command).map_err(|e| io::Error::from_raw_os_error(e.code()))
    }
}

/// A mounted lazy filesystem; dropping it unmounts it, which makes everything durable (a clean
/// shutdown). Call [`Controller::power_cut`] first to lose it instead.
pub struct LazyFs {
    controller: Controller,
    mountpoint: PathBuf,
    session: Option<fuser::BackgroundSession>,
}

impl LazyFs {
    /// Mounts the lazy filesystem over directory `backing` on directory `mountpoint`.
    pub fn mount(backing: impl AsRef<Path>, mountpoint: impl AsRef<Path>) -> io::Result<LazyFs> {
        LazyFs::mount_with(backing, mountpoint, Options::default())
    }

    pub fn mount_with(
        backing: impl AsRef<Path>,
        mountpoint: impl AsRef<Path>,
        options: Options,
    ) -> io::Result<LazyFs> {
        let backing = backing.as_ref().canonicalize()?;
        let mountpoint = mountpoint.as_ref().canonicalize()?;
        if mountpoint.starts_with(&backing) || backing.starts_with(&mountpoint) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "the backing directory and the mount point must not contain each other",
            ));
        }
        let tree = tree::Tree::new(&backing)?;
        let shared = Arc::new(state::Shared::new(tree, options.max_pending_bytes));
        let mut config = fuser::Config::default();
        config.mount_options = vec![
            fuser::MountOption::FSName("bulwark-lazyfs".to_owned()),
            fuser::MountOption::Subtype("lazyfs".to_owned()),
            fuser::MountOption::DefaultPermissions,
        ];
        config.n_threads = Some(options.threads.max(1));
        let filesystem = fuse::LazyFilesystem {
            shared: shared.clone(),
        };
        let session = fuser::spawn_mount(filesystem, &mountpoint, &config)?;
        Ok(LazyFs {
            controller: Controller { shared },
            mountpoint,
            session: Some(session),
        })
    }

    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    /// The control file's path in this mount.
    pub fn control_file(&self) -> PathBuf {
        self.mountpoint.join(CONTROL)
    }

    /// A controller to hand to other threads.
    pub fn controller(&self) -> Controller {
        self.controller.clone()
    }

    /// Unmounts (everything becomes durable). Fails while a process still uses the mount; it is
    /// then detached, and goes once unused.
    pub fn unmount(mut self) -> io::Result<()> {
        self.unmount_now()
    }

    fn unmount_now(&mut self) -> io::Result<()> {
        let Some(session) = self.session.take() else {
            return Ok(());
        };
        let result = session.umount_and_join();
        if result.is_err() {
            detach(&self.mountpoint);
        }
        result
    }
}

impl Deref for LazyFs {
    type Target = Controller;

    fn deref(&self) -> &Controller {
        &self.controller
    }
}

impl Drop for LazyFs {
    fn drop(&mut self) {
        let _ = self.unmount_now();
    }
}

/// A lazy unmount of a busy mount.
fn detach(mountpoint: &Path) {
    use std::os::unix::ffi::OsStrExt;
    if let Ok(path) = std::ffi::CString::new(mountpoint.as_os_str().as_bytes()) {
        // SAFETY: a valid C string; umount2 has no other preconditions.
        unsafe { libc::umount2(path.as_ptr(), libc::MNT_DETACH) };
    }
}
