//! `bulwark-fs` holds the file-system steps every durable file of Bulwark goes through, in one
//! copy: a file replaced crash-safely ([`write_file_atomically`], [`create_file_atomically`]: write a
//! temp file, fsync it, rename it over the target, fsync the directory), a directory entry made
//! durable ([`fsync_dir`], [`rename_durably`], [`create_dir_all_durably`]), and a full disk told
//! apart from other I/O errors ([`is_disk_full`]). Used by the WAL (new segments and its
//! directory), the Raft hard-state file, the state store (snapshot import), the node (the data
//! directory, the member address book), the TLS files and the refusals log.
//!
//! Why each step: without the fsync before the rename, a power cut can leave the new name pointing
//! at a file whose data never reached the disk (ext4 with `data=writeback`, xfs); without the fsync
//! of the directory, the rename itself may be lost and the old file come back. A temp file that
//! could not be finished is removed, so that a failed write (a full disk) leaves the directory as it
//! was; a temp file left by a crash has the target's name plus [`TEMP_SUFFIX`], for the owner to
//! remove at its next start.
//!
//! Errors carry the step (`op`) and the path, which the callers put into their own error types
//! unchanged.

use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

pub mod test_faults;

/// What a temp file's name adds to its target's name.
pub const TEMP_SUFFIX: &str = ".tmp";

/// A failed file-system step: which one (`op`: `create`, `write`, `fsync`, `rename`,
/// `fsync directory`, ...), on which path, and the OS error.
#[derive(Debug)]
pub struct FsError {
    pub op: &'static str,
    pub path: PathBuf,
    pub source: io::Error,
}

impl std::fmt::Display for FsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.op, self.path.display(), self.source)
    }
}

impl std::error::Error for FsError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

impl FsError {
    /// True when the step failed for lack of space (see [`is_disk_full`]).
    pub fn is_disk_full(&self) -> bool {
        is_disk_full(&self.source)
    }
}

/// Keeps the OS error's kind (so a full disk is still recognisable) and adds the step and path.
impl From<FsError> for io::Error {
    fn from(e: FsError) -> io::Error {
        io::Error::new(e.source.kind(), e)
    }
}

fn step<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> FsError + 'a {
    move |source| FsError {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// Whether an I/O error says the device (or a quota) has no space left: `ENOSPC` or `EDQUOT`.
pub fn is_disk_full(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
    )
}

/// Makes the entries of directory `dir` durable (created, renamed and removed files in it).
pub fn fsync_dir(dir: &Path) -> Result<(), FsError> {
    if test_faults::skipping(test_faults::Skip::DirFsync) {
        return Ok(());
    }
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(step("fsync directory", dir))
}

/// Creates `dir` and each missing ancestor (mode 0700), fsyncing the parent of every directory it
/// created: without that, a power cut soon after can take the new directory, and every file the
/// caller made durable in it, with it. An existing `dir` is left as it is.
pub fn create_dir_all_durably(dir: &Path) -> Result<(), FsError> {
    use std::os::unix::fs::DirBuilderExt;
    let mut missing = Vec::new();
    let mut at = Some(dir);
    while let Some(path) = at.filter(|p| !p.as_os_str().is_empty() && !p.exists()) {
        missing.push(path);
        at = path.parent();
    }
    for path in missing.into_iter().rev() {
        match fs::DirBuilder::new().mode(0o700).create(path) {
            Ok(()) => {}
            // Another process (or thread) made it meanwhile: its parent still gets our fsync.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && path.is_dir() => {}
            Err(e) => return Err(step("create directory", path)(e)),
        }
        if let Some(parent) = parent_dir(path) {
            fsync_dir(parent)?;
        }
    }
    Ok(())
}

/// The directory holding `path` (`.` for a bare file name), if it has one.
fn parent_dir(path: &Path) -> Option<&Path> {
    let dir = path.parent()?;
    Some(if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    })
}

/// Renames `from` to `to` (replacing `to`) and fsyncs the directory of `to`, so that the rename
/// survives a power cut. `from` must already be durable (fsynced) itself.
pub fn rename_durably(from: &Path, to: &Path) -> Result<(), FsError> {
    fs::rename(from, to).map_err(step("rename", from))?;
    match parent_dir(to) {
        Some(dir) => fsync_dir(dir),
        None => Ok(()),
    }
}

/// The temp file [`write_file_atomically`] writes before renaming it to `path`: `path` plus
/// [`TEMP_SUFFIX`] (`members` → `members.tmp`, `…01.wal` → `…01.wal.tmp`).
pub fn temp_path(path: &Path) -> PathBuf {
    let mut name = OsString::from(path.as_os_str());
    name.push(TEMP_SUFFIX);
    PathBuf::from(name)
}

/// How [`create_file_atomically`] failed.
#[derive(Debug)]
pub enum WriteFailure {
    /// Creating, writing or renaming the temp file failed, and the temp file was removed: the
    /// directory is as before the call (the old file, if any, intact). A full disk ends here.
    Undone(FsError),
    /// An fsync failed, or the temp file could not be removed: what the disk holds is not known.
    /// (After a failed fsync the kernel may have dropped the pages it could not write.)
    Unsure(FsError),
}

impl WriteFailure {
    /// The failed step, whichever kind of failure it was.
    pub fn into_error(self) -> FsError {
        match self {
            WriteFailure::Undone(e) | WriteFailure::Unsure(e) => e,
        }
    }
}

/// Replaces (or creates) the file at `path` with `bytes`, crash-safely: after a crash `path` holds
/// either its old content or all of `bytes`, never a mix. Durable when it returns. On failure the
/// temp file is removed where it can be (see [`WriteFailure`]).
pub fn write_file_atomically(path: &Path, bytes: &[u8]) -> Result<(), FsError> {
    create_file_atomically(path, &[bytes])
        .map(drop)
        .map_err(WriteFailure::into_error)
}

/// [`write_file_atomically`] of the concatenation of `parts`, returning the new file open for
/// reading and writing (so its owner can go on appending without opening it again).
pub fn create_file_atomically(path: &Path, parts: &[&[u8]]) -> Result<File, WriteFailure> {
    let tmp = temp_path(path);
    let undo = |e: FsError| match fs::remove_file(&tmp) {
        Ok(()) => WriteFailure::Undone(e),
        Err(r) if r.kind() == io::ErrorKind::NotFound => WriteFailure::Undone(e),
        Err(r) => {
            tracing::error!(file = %tmp.display(), error = %r, "cannot remove a half-written temp file");
            WriteFailure::Unsure(e)
        }
    };
    // Private to the owner: a ledger's files (and keys) are nobody else's to read.
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(step("create", &tmp))
        .map_err(undo)?;
    let mut offset = 0u64;
    for part in parts {
        file.write_all_at(part, offset)
            .map_err(step("write", &tmp))
            .map_err(undo)?;
        offset += part.len() as u64;
    }
    file.sync_all()
        .map_err(step("fsync", &tmp))
        .map_err(WriteFailure::Unsure)?;
    fs::rename(&tmp, path)
        .map_err(step("rename", &tmp))
        .map_err(undo)?;
    let dir = parent_dir(path).unwrap_or(Path::new("."));
    fsync_dir(dir).map_err(WriteFailure::Unsure)?;
    Ok(file)
}

/// [`write_file_atomically`] of everything `reader` yields (a file too large to hold in memory:
/// a backup's state). Answers the bytes written. The temp file is removed on failure.
pub fn copy_file_atomically(path: &Path, reader: &mut dyn io::Read) -> Result<u64, FsError> {
    let tmp = temp_path(path);
    let written = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(step("create", &tmp))?;
        let written = io::copy(reader, &mut file).map_err(step("write", &tmp))?;
        file.sync_all().map_err(step("fsync", &tmp))?;
        Ok(written)
    })();
    let written = written.inspect_err(|_| {
        let _ = fs::remove_file(&tmp);
    })?;
    rename_durably(&tmp, path)?;
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disk_full_is_recognised_by_its_os_error() {
        assert!(is_disk_full(&io::Error::from_raw_os_error(28)), "ENOSPC");
        assert!(is_disk_full(&io::Error::from_raw_os_error(122)), "EDQUOT");
        assert!(!is_disk_full(&io::Error::from_raw_os_error(5)), "EIO");
        let e = FsError {
            op: "write",
            path: PathBuf::from("x"),
            source: io::Error::from_raw_os_error(28),
        };
        assert!(e.is_disk_full());
        assert!(is_disk_full(&io::Error::from(e)), "the kind survives");
    }

    #[test]
    fn temp_names_add_a_suffix() {
        assert_eq!(
            temp_path(Path::new("d/members")),
            Path::new("d/members.tmp")
        );
        assert_eq!(
            temp_path(Path::new("00000000000000000001.wal")),
            Path::new("00000000000000000001.wal.tmp")
        );
        assert_eq!(parent_dir(Path::new("members")), Some(Path::new(".")));
    }
}
