//! A real full disk on demand: a tmpfs of a chosen size mounted on a directory (root only, as on
//! CI and the developers' machines), unmounted when dropped, and a filler file that takes every
//! byte left. The full-disk tests of the log, the Raft storage, the store and the binary, and the
//! disk fault of `bulwark chaos`, all use this one copy.

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
    fn leaves_what_it_is_asked_to() {
        let fs = Tmpfs::mount_temp("bulwark-tmpfs-test", 1 << 20).expect("mount (needs root)");
        fill_leaving(fs.path(), 64 << 10).expect("fill");
        std::fs::write(fs.path().join("fits"), vec![0u8; 32 << 10]).expect("32 KiB still fit");
    }
}
