//! A real full disk on demand: a tmpfs of a chosen size mounted on a directory (root only, as on
//! CI and the developers' machines), unmounted when dropped, and a filler file that takes every
//! byte left. The full-disk tests of the log, the Raft storage, the store and the binary, and the
//! disk fault of `bulwark chaos`, all use this one copy. And a [`LoopDisk`]: a file system whose
//! power can be cut (what was not synced is lost) and whose `fsync` can be made to fail.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

/// A mounted tmpfs; dropping it unmounts it (also when a test panics).
pub struct Tmpfs {
    dir: PathBuf,
    /// The temporary directory it is mounted on, when this guard made it.
    _temp: Option<tempfile::TempDir>,
}

impl Tmpfs {
    /// Mounts a tmpfs of `bytes` on a fresh temporary directory named `prefix…`.
    pub fn mount_temp(prefix: &str, bytes: u64) -> io::Result<Tmpfs> {
        let temp = tempfile::Builder::new().prefix(prefix).tempdir()?;
        mount(temp.path(), bytes)?;
        Ok(Tmpfs {
            dir: temp.path().to_path_buf(),
            _temp: Some(temp),
        })
    }

    /// Mounts a tmpfs of `bytes` on `dir`, which must exist.
    pub fn mount_at(dir: &Path, bytes: u64) -> io::Result<Tmpfs> {
        mount(dir, bytes)?;
        Ok(Tmpfs {
            dir: dir.to_path_buf(),
            _temp: None,
        })
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let unmounted = Command::new("umount")
            .arg(&self.dir)
            .status()
            .is_ok_and(|s| s.success());
        if !unmounted {
            // Still busy (a process not reaped yet): detach it now, it goes once unused.
            let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        }
    }
}

fn mount(dir: &Path, bytes: u64) -> io::Result<()> {
    let out = Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "tmpfs"])
        .arg(dir)
        .output()?;
    if out.status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "mounting a {bytes}-byte tmpfs on {} failed (it needs root): {}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// Writes `dir/filler` until the disk is full, down to the last byte; returns its path and size.
pub fn fill(dir: &Path) -> io::Result<(PathBuf, u64)> {
    let path = dir.join("filler");
    let mut file = std::fs::File::create(&path)?;
    let mut written = 0u64;
    let chunk = vec![0xA5u8; 1 << 20];
    // Big writes first, then smaller ones for whatever a big one could not take.
    for size in [chunk.len(), 4096, 512, 1] {
        loop {
            match file.write(&chunk[..size]) {
                Ok(0) => break,
                Ok(n) => written += n as u64,
                Err(e) if e.kind() == io::ErrorKind::StorageFull => break,
                Err(e) => return Err(e),
            }
        }
    }
    Ok((path, written))
}

/// Like [`fill`], but leaves about `leave` bytes free.
pub fn fill_leaving(dir: &Path, leave: usize) -> io::Result<(PathBuf, u64)> {
    let spacer = dir.join("spacer");
    std::fs::write(&spacer, vec![1u8; leave])?;
    let filled = fill(dir)?;
    std::fs::remove_file(spacer)?;
    Ok(filled)
}

/// An ext4 file system on a loop device whose image lives in a small tmpfs (root only): a disk
/// whose power can be cut and whose writes can be made to fail, for the tests of what a node
/// keeps after a power loss and of a failed `fsync`.
///
/// - [`LoopDisk::power_cut`]: the image is copied as the device holds it: what was written but
///   never synced is still in the page cache, not in the image, and is lost, as in a power
///   loss. The copy is mounted in place of the old one (ext4 replays its journal).
/// - [`LoopDisk::fail_writes`]: the tmpfs under the image is filled, so the device's next
///   writeback fails: a `write` still succeeds (into the page cache), its `fsync` or
///   `fdatasync` fails, as on a dying disk.
///
/// Mounted with `noauto_da_alloc` (no writeback started by a rename or truncate) and a long
/// journal commit interval, so that nothing reaches the image that the code did not sync.
pub struct LoopDisk {
    backing: Tmpfs,
    mount: tempfile::TempDir,
    image: PathBuf,
    device: String,
    generation: u64,
}

/// Size of the file system; the tmpfs holding its image is twice that, for a power cut's copy.
const LOOP_DISK_BYTES: u64 = 48 << 20;

impl LoopDisk {
    pub fn new(prefix: &str) -> io::Result<LoopDisk> {
        let backing = Tmpfs::mount_temp(prefix, 2 * LOOP_DISK_BYTES + (8 << 20))?;
        let image = backing.path().join("image.0");
        std::fs::File::create(&image)?.set_len(LOOP_DISK_BYTES)?;
        run(Command::new("mkfs.ext4")
            // The journal is left unwritten (holes in the image), so that every journal commit
            // after `fail_writes` needs new space under the device and fails.
            .args(["-q", "-F", "-E", "nodiscard,lazy_journal_init=1"])
            .arg(&image))?;
        let mount = tempfile::Builder::new().prefix(prefix).tempdir()?;
        let device = attach_and_mount(&image, mount.path())?;
        Ok(LoopDisk {
            backing,
            mount,
            image,
            device,
            generation: 0,
        })
    }

    /// Where the file system is mounted.
    pub fn path(&self) -> &Path {
        self.mount.path()
    }

    /// Cuts the power: keeps only what reached the device. Every file on the disk must be
    /// closed first (the old file system is unmounted).
    pub fn power_cut(&mut self) -> io::Result<()> {
        self.generation += 1;
        let copy = self
            .backing
            .path()
            .join(format!("image.{}", self.generation));
        run(Command::new("cp")
            .arg("--sparse=always")
            .arg(&self.image)
            .arg(&copy))?;
        self.unmount_and_detach()?;
        std::fs::remove_file(&self.image)?;
        self.image = copy;
        self.device = attach_and_mount(&self.image, self.mount.path())?;
        Ok(())
    }

    /// From now on the device's writes fail (see the type's documentation): its free blocks are
    /// given back (`fstrim`: holes in the image), then the space under the image is filled, so
    /// that a write to a new block, and every journal commit, fails. (A rewrite of a block the
    /// image already holds still succeeds, as a dying disk may still take some writes.)
    pub fn fail_writes(&self) -> io::Result<()> {
        run(Command::new("fstrim").arg(self.path()))?;
        fill(self.backing.path()).map(|_| ())
    }

    /// The device's writes succeed again (what failed stays failed).
    pub fn heal_writes(&self) -> io::Result<()> {
        std::fs::remove_file(self.backing.path().join("filler"))
    }

    fn unmount_and_detach(&self) -> io::Result<()> {
        run(Command::new("umount").arg(self.mount.path()))?;
        run(Command::new("losetup").args(["-d", &self.device])).map(drop)
    }
}

impl Drop for LoopDisk {
    fn drop(&mut self) {
        if self.unmount_and_detach().is_err() {
            let _ = Command::new("umount")
                .arg("-l")
                .arg(self.mount.path())
                .status();
            let _ = Command::new("losetup").args(["-d", &self.device]).status();
        }
    }
}

/// Attaches `image` to a free loop device and mounts it on `at`; returns the device.
fn attach_and_mount(image: &Path, at: &Path) -> io::Result<String> {
    // Another process may take the free device between the look-up and the attach: retry.
    let mut attempts = 0;
    let device = loop {
        match run(Command::new("losetup").args(["-f", "--show"]).arg(image)) {
            Ok(out) => break out.trim().to_string(),
            Err(_) if attempts < 20 => {
                attempts += 1;
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            Err(e) => return Err(e),
        }
    };
    let mounted = run(Command::new("mount")
        .args([
            "-o",
            "noauto_da_alloc,commit=600,errors=continue,noinit_itable",
            &device,
        ])
        .arg(at));
    if let Err(e) = mounted {
        let _ = Command::new("losetup").args(["-d", &device]).status();
        return Err(e);
    }
    Ok(device)
}

/// Runs a command; its standard output, or an error with its standard error.
fn run(command: &mut Command) -> io::Result<String> {
    let out = command.output()?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(io::Error::other(format!(
            "{command:?} failed (it needs root and loop devices): {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fills_to_the_last_byte_and_frees_it_again() {
        let fs = Tmpfs::mount_temp("bulwark-tmpfs-test", 1 << 20).expect("mount (needs root)");
        let (filler, written) = fill(fs.path()).expect("fill");
        assert!(written > 512 << 10 && written <= 1 << 20, "{written}");
        let err = std::fs::write(fs.path().join("more"), b"x").expect_err("the disk is full");
        assert_eq!(err.kind(), io::ErrorKind::StorageFull);
        std::fs::remove_file(filler).expect("free");
        std::fs::write(fs.path().join("more"), b"x").expect("space is back");
    }

    #[test]
    fn a_power_cut_keeps_what_was_synced_and_loses_the_rest() {
        use std::os::unix::fs::FileExt;
        let mut disk = LoopDisk::new("bulwark-loopdisk-test").expect("loop disk (needs root)");
        let synced = disk.path().join("synced");
        let file = std::fs::File::create(&synced).unwrap();
        file.write_all_at(b"durable", 0).unwrap();
        file.sync_all().unwrap();
        bulwark_sync_dir(disk.path());
        file.write_all_at(b" and not", 7).unwrap();
        std::fs::write(disk.path().join("never synced"), b"gone").unwrap();
        drop(file);
        disk.power_cut().expect("power cut");
        assert_eq!(std::fs::read(&synced).unwrap(), b"durable");
        assert!(!disk.path().join("never synced").exists());
    }

    /// Even a small append into the block the file already holds: its size must be committed.
    #[test]
    fn failed_writes_fail_the_fsync_not_the_write() {
        let disk = LoopDisk::new("bulwark-loopdisk-test").expect("loop disk (needs root)");
        let mut file = std::fs::File::create(disk.path().join("f")).unwrap();
        file.write_all(b"first record").unwrap();
        file.sync_data().unwrap();
        disk.fail_writes().unwrap();
        file.write_all(b"second")
            .expect("the write only reaches the page cache");
        file.sync_data()
            .expect_err("the device fails the writeback");
        disk.heal_writes().unwrap();
    }

    fn bulwark_sync_dir(dir: &Path) {
        std::fs::File::open(dir).unwrap().sync_all().unwrap();
    }

    #[test]
    fn leaves_what_it_is_asked_to() {
        let fs = Tmpfs::mount_temp("bulwark-tmpfs-test", 1 << 20).expect("mount (needs root)");
        fill_leaving(fs.path(), 64 << 10).expect("fill");
        std::fs::write(fs.path().join("fits"), vec![0u8; 32 << 10]).expect("32 KiB still fit");
    }
}
