//! Where backups and the archive go: a directory (local or mounted), or S3 and the servers that
//! speak its protocol (`s3://bucket/prefix`, in [`crate::s3`]). Every object is written whole or
//! not at all (a directory: write-temp, fsync, rename, fsync-dir; S3: one PUT, or a multipart
//! upload completed or aborted), so a reader never sees half of one; names are `/`-separated
//! paths inside the target.

use std::io::Read;
use std::path::{Path, PathBuf};

/// Why a target operation failed, naming the object.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("{target}: {name} does not exist")]
    NotFound { target: String, name: String },
    #[error("{target}: {what} {name}: {source}")]
    Io {
        target: String,
        what: &'static str,
        name: String,
        source: std::io::Error,
    },
    #[error("bad object name {name:?}: {why}")]
    BadName { name: String, why: &'static str },
    /// The target cannot be opened as named (a bad `s3://` spec, missing credentials).
    #[error("{target}: {why}")]
    Setup { target: String, why: String },
}

/// An object a listing found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listed {
    pub name: String,
    pub bytes: u64,
}

/// A place that keeps named objects. `Send + Sync`: the archiver uses it from its own thread.
pub trait Target: Send + Sync {
    /// How an operator names it (in messages and `backup list`).
    fn describe(&self) -> String;
    /// Stores `bytes` under `name`, replacing what was there; visible whole or not at all.
    fn put(&self, name: &str, bytes: &[u8]) -> Result<(), TargetError>;
    /// [`Target::put`] of everything `reader` yields; answers the bytes stored.
    fn put_reader(&self, name: &str, reader: &mut dyn Read) -> Result<u64, TargetError>;
    fn get(&self, name: &str) -> Result<Vec<u8>, TargetError>;
    fn open(&self, name: &str) -> Result<Box<dyn Read + Send>, TargetError>;
    /// Every object whose name starts with `prefix`, in name order.
    fn list(&self, prefix: &str) -> Result<Vec<Listed>, TargetError>;
    fn delete(&self, name: &str) -> Result<(), TargetError>;
}

/// Opens the target an operator named: `s3://bucket/optional/prefix` (its settings from the
/// environment, see [`crate::s3`]), or else a directory path (created if missing).
pub fn open_target(spec: &str) -> Result<Box<dyn Target>, TargetError> {
    if spec.starts_with(crate::s3::SCHEME) {
        return Ok(Box::new(crate::s3::S3Target::open(spec)?));
    }
    Ok(Box::new(DirTarget::new(Path::new(spec))?))
}

/// Whether `name` may name an object (in every kind of target alike): not empty nor absolute, no
/// empty, `.` or `..` part, not ending like a directory target's temp file.
pub(crate) fn check_name(name: &str) -> Result<(), TargetError> {
    let bad = |why| TargetError::BadName {
        name: name.into(),
        why,
    };
    if name.is_empty() || name.starts_with('/') {
        return Err(bad("empty or absolute"));
    }
    if name
        .split('/')
        .any(|part| part.is_empty() || part == "." || part == "..")
    {
        return Err(bad("an empty, `.` or `..` part"));
    }
    if name.ends_with(bulwark_fs::TEMP_SUFFIX) {
        return Err(bad("ends like a temp file"));
    }
    Ok(())
}

/// A directory; an object's name is its path below it.
pub struct DirTarget {
    root: PathBuf,
}

impl DirTarget {
    pub fn new(root: &Path) -> Result<DirTarget, TargetError> {
        bulwark_fs::create_dir_all_durably(root).map_err(|e| TargetError::Io {
            target: root.display().to_string(),
            what: "create",
            name: String::new(),
            source: e.into(),
        })?;
        Ok(DirTarget { root: root.into() })
    }

    fn path(&self, name: &str) -> Result<PathBuf, TargetError> {
        check_name(name)?;
        Ok(self.root.join(name))
    }

    fn io(&self, what: &'static str, name: &str) -> impl FnOnce(std::io::Error) -> TargetError {
        let target = self.describe();
        let name = name.to_string();
        move |source| {
            if source.kind() == std::io::ErrorKind::NotFound {
                TargetError::NotFound { target, name }
            } else {
                TargetError::Io {
                    target,
                    what,
                    name,
                    source,
                }
            }
        }
    }

    fn parent_dir(&self, name: &str, path: &Path) -> Result<(), TargetError> {
        let parent = path.parent().unwrap_or(&self.root);
        bulwark_fs::create_dir_all_durably(parent).map_err(|e| self.io("create", name)(e.into()))
    }

    fn walk(&self, dir: &Path, out: &mut Vec<Listed>) -> std::io::Result<()> {
        let entries = match std::fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        for entry in entries {
            let entry = entry?;
            let meta = entry.metadata()?;
            if meta.is_dir() {
                self.walk(&entry.path(), out)?;
                continue;
            }
            let path = entry.path();
            let Ok(relative) = path.strip_prefix(&self.root) else {
                continue;
            };
            let name = relative.to_string_lossy().to_string();
            // A temp file is a write a crash interrupted: it never counts.
            if !name.ends_with(bulwark_fs::TEMP_SUFFIX) {
                out.push(Listed {
                    name,
                    bytes: meta.len(),
                });
            }
        }
        Ok(())
    }
}

impl Target for DirTarget {
    fn describe(&self) -> String {
        self.root.display().to_string()
    }

    fn put(&self, name: &str, bytes: &[u8]) -> Result<(), TargetError> {
        self.put_reader(name, &mut &bytes[..]).map(drop)
    }

    fn put_reader(&self, name: &str, reader: &mut dyn Read) -> Result<u64, TargetError> {
        let path = self.path(name)?;
        self.parent_dir(name, &path)?;
        bulwark_fs::copy_file_atomically(&path, reader)
            .map_err(|e| self.io("write", name)(e.into()))
    }

    fn get(&self, name: &str) -> Result<Vec<u8>, TargetError> {
        std::fs::read(self.path(name)?).map_err(self.io("read", name))
    }

    fn open(&self, name: &str) -> Result<Box<dyn Read + Send>, TargetError> {
        let file = std::fs::File::open(self.path(name)?).map_err(self.io("open", name))?;
        Ok(Box::new(std::io::BufReader::with_capacity(1 << 20, file)))
    }

    fn list(&self, prefix: &str) -> Result<Vec<Listed>, TargetError> {
        let mut out = Vec::new();
        // Walk only the directory the prefix lies in.
        let dir = match prefix.rfind('/') {
            Some(at) => self.root.join(&prefix[..at]),
            None => self.root.clone(),
        };
        self.walk(&dir, &mut out).map_err(self.io("list", prefix))?;
        out.retain(|l| l.name.starts_with(prefix));
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    fn delete(&self, name: &str) -> Result<(), TargetError> {
        let path = self.path(name)?;
        std::fs::remove_file(&path).map_err(self.io("delete", name))?;
        if let Some(dir) = path.parent() {
            bulwark_fs::fsync_dir(dir).map_err(|e| self.io("delete", name)(e.into()))?;
        }
        Ok(())
    }
}
