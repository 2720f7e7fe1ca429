//! The namespace: which FUSE inode is which backing file, and every directory change not yet made
//! durable by an fsync of its directory, with what undoes it.
//!
//! Directory changes are applied to the backing tree at once (so every other operation simply
//! passes through), and each is recorded with its undo: a create is undone by removing the new
//! entry; an unlink, an rmdir or a rename over an existing entry moves the old entry into a hidden
//! stash directory instead of deleting it, so that the undo can move it back. An fsync of a
//! directory makes every recorded change touching it durable (the stashed entries are then deleted
//! for good); a power cut undoes the rest, newest first.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::fs::{self, Metadata};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use fuser::Errno;

/// The hidden directory in the backing root that holds removed and replaced entries until their
/// removal is durable.
pub const STASH: &str = ".lazyfs-stash";
/// The control file's name in the mount's root (see the crate's docs).
pub const CONTROL: &str = ".lazyfs-control";
/// FUSE's root inode.
pub const ROOT_INO: u64 = 1;
/// The control file's inode.
pub const CONTROL_INO: u64 = 2;

/// One backing file or directory the kernel knows by an inode number.
#[derive(Debug)]
struct Node {
    /// Relative to the backing root; empty for the root itself.
    path: PathBuf,
}

/// A directory change not yet durable. Directories are named by inode, so that an undo finds them
/// where they are when it runs (after the later changes were undone).
#[derive(Debug)]
enum Change {
    Created {
        dir: u64,
        name: OsString,
        backing_ino: u64,
    },
    Removed {
        dir: u64,
        name: OsString,
        stashed: OsString,
    },
    Renamed {
        from_dir: u64,
        from_name: OsString,
        to_dir: u64,
        to_name: OsString,
        backing_ino: u64,
        replaced: Option<OsString>,
    },
}

impl Change {
    /// Whether an fsync of `dir` makes this change durable. A rename between two directories is
    /// one change to both, as a journaling filesystem commits it in one transaction.
    fn touches(&self, dir: u64) -> bool {
        match self {
            Change::Created { dir: d, .. } | Change::Removed { dir: d, .. } => *d == dir,
            Change::Renamed {
                from_dir, to_dir, ..
            } => *from_dir == dir || *to_dir == dir,
        }
    }

    /// The stash entry that this change, once durable, no longer needs.
    fn stashed(&self) -> Option<&OsStr> {
        match self {
            Change::Removed { stashed, .. } => Some(stashed),
            Change::Renamed { replaced, .. } => replaced.as_deref(),
            Change::Created { .. } => None,
        }
    }
}

/// The inode table and the pending directory changes of one mount.
#[derive(Debug)]
pub struct Tree {
    root: PathBuf,
    nodes: HashMap<u64, Node>,
    /// Backing inode number → our inode number, so that a file keeps its number for the session
    /// however it is renamed (and gets it back when an undo moves it back).
    by_backing: HashMap<u64, u64>,
    next_ino: u64,
    changes: Vec<Change>,
    next_stash: u64,
}

impl Tree {
    /// The namespace of the backing directory `root`. A stash left by an earlier session that did
    /// not end cleanly is deleted: its removals count as durable.
    pub fn new(root: &Path) -> io::Result<Tree> {
        let stash = root.join(STASH);
        if stash.exists() {
            fs::remove_dir_all(&stash)?;
        }
        fs::create_dir(&stash)?;
        let root_meta = fs::metadata(root)?;
        let mut tree = Tree {
            root: root.to_path_buf(),
            nodes: HashMap::new(),
            by_backing: HashMap::new(),
            next_ino: CONTROL_INO + 1,
            changes: Vec::new(),
            next_stash: 0,
        };
        tree.nodes.insert(
            ROOT_INO,
            Node {
                path: PathBuf::new(),
            },
        );
        tree.by_backing.insert(root_meta.ino(), ROOT_INO);
        Ok(tree)
    }

    /// The backing path of a path relative to the backing root.
    pub fn full(&self, rel: &Path) -> PathBuf {
        self.root.join(rel)
    }

    /// The backing root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The relative path of inode `ino`.
    pub fn path(&self, ino: u64) -> Result<PathBuf, Errno> {
        self.nodes
            .get(&ino)
            .map(|n| n.path.clone())
            .ok_or(Errno::ENOENT)
    }

    /// The relative path of `name` in directory `dir`. The stash is invisible in the root.
    pub fn child(&self, dir: u64, name: &OsStr) -> Result<PathBuf, Errno> {
        if dir == ROOT_INO && (name == STASH || name == CONTROL) {
            return Err(Errno::EPERM);
        }
        Ok(self.path(dir)?.join(name))
    }

    /// Our inode for the backing file at `rel` with metadata `meta`, made if new.
    pub fn inode_for(&mut self, rel: &Path, meta: &Metadata) -> u64 {
        if let Some(&ino) = self.by_backing.get(&meta.ino()) {
            if let Some(node) = self.nodes.get_mut(&ino) {
                node.path = rel.to_path_buf();
                return ino;
            }
        }
        let ino = self.next_ino;
        self.next_ino += 1;
        self.by_backing.insert(meta.ino(), ino);
        self.nodes.insert(
            ino,
            Node {
                path: rel.to_path_buf(),
            },
        );
        ino
    }

    /// How many directory changes are not yet durable.
    pub fn pending_changes(&self) -> usize {
        self.changes.len()
    }

    pub fn record_created(&mut self, dir: u64, name: &OsStr, backing_ino: u64) {
        self.changes.push(Change::Created {
            dir,
            name: name.to_owned(),
            backing_ino,
        });
    }

    /// Removes `name` from `dir` (an unlink or rmdir the caller has checked) by moving it to the
    /// stash, and records the change.
    pub fn remove(&mut self, dir: u64, name: &OsStr) -> io::Result<()> {
        let rel = self.child(dir, name).map_err(errno_to_io)?;
        let stashed = self.stash(&rel)?;
        self.changes.push(Change::Removed {
            dir,
            name: name.to_owned(),
            stashed,
        });
        Ok(())
    }

    /// Renames `from_name` in `from_dir` to `to_name` in `to_dir`, moving an entry it replaces to
    /// the stash, and records the change. The caller has checked the types and emptiness.
    pub fn rename(
        &mut self,
        (from_dir, from_name): (u64, &OsStr),
        (to_dir, to_name): (u64, &OsStr),
        backing_ino: u64,
        replaces: bool,
    ) -> io::Result<()> {
        let from = self.child(from_dir, from_name).map_err(errno_to_io)?;
        let to = self.child(to_dir, to_name).map_err(errno_to_io)?;
        let replaced = if replaces {
            Some(self.stash(&to)?)
        } else {
            None
        };
        if let Err(e) = fs::rename(self.full(&from), self.full(&to)) {
            if let Some(stashed) = &replaced {
                // Put the target back: a failed rename changes nothing.
                let back = Path::new(STASH).join(stashed);
                if fs::rename(self.full(&back), self.full(&to)).is_ok() {
                    self.move_paths(&back, &to);
                }
            }
            return Err(e);
        }
        self.move_paths(&from, &to);
        self.changes.push(Change::Renamed {
            from_dir,
            from_name: from_name.to_owned(),
            to_dir,
            to_name: to_name.to_owned(),
            backing_ino,
            replaced,
        });
        Ok(())
    }

    /// Makes every pending change touching directory `dir` durable; returns how many.
    pub fn commit_dir(&mut self, dir: u64) -> usize {
        let (durable, pending): (Vec<Change>, Vec<Change>) = std::mem::take(&mut self.changes)
            .into_iter()
            .partition(|c| c.touches(dir));
        self.changes = pending;
        for change in &durable {
            if let Some(stashed) = change.stashed() {
                self.purge(&Path::new(STASH).join(stashed));
            }
        }
        durable.len()
    }

    /// Makes every pending change durable (a clean shutdown).
    pub fn commit_all(&mut self) {
        for change in std::mem::take(&mut self.changes) {
            if let Some(stashed) = change.stashed() {
                self.purge(&Path::new(STASH).join(stashed));
            }
        }
    }

    /// Undoes every pending change, newest first (a power cut); returns how many. Whatever the
    /// stash still holds afterwards belonged to changes that were durable after all.
    pub fn undo_all(&mut self) -> usize {
        let changes = std::mem::take(&mut self.changes);
        let undone = changes.len();
        for change in changes.into_iter().rev() {
            self.undo(change);
        }
        if let Ok(entries) = fs::read_dir(self.full(Path::new(STASH))) {
            for entry in entries.flatten() {
                self.purge(&Path::new(STASH).join(entry.file_name()));
            }
        }
        undone
    }

    /// Undoes one change. An undo that no longer fits what is there (a later change to the same
    /// entry was made durable by an fsync of another directory) leaves what is there.
    fn undo(&mut self, change: Change) {
        match change {
            Change::Created {
                dir,
                name,
                backing_ino,
            } => {
                if let Ok(rel) = self.path(dir).map(|d| d.join(&name)) {
                    if self.backing_ino(&rel) == Some(backing_ino) {
                        self.purge(&rel);
                    }
                }
            }
            Change::Removed { dir, name, stashed } => {
                self.unstash(&stashed, dir, &name);
            }
            Change::Renamed {
                from_dir,
                from_name,
                to_dir,
                to_name,
                backing_ino,
                replaced,
            } => {
                let (Ok(from), Ok(to)) = (self.path(from_dir), self.path(to_dir)) else {
                    return;
                };
                let (from, to) = (from.join(&from_name), to.join(&to_name));
                if self.backing_ino(&to) == Some(backing_ino)
                    && self.backing_ino(&from).is_none()
                    && fs::rename(self.full(&to), self.full(&from)).is_ok()
                {
                    self.move_paths(&to, &from);
                }
                if let Some(stashed) = replaced {
                    self.unstash(&stashed, to_dir, &to_name);
                }
            }
        }
    }

    fn backing_ino(&self, rel: &Path) -> Option<u64> {
        fs::symlink_metadata(self.full(rel)).ok().map(|m| m.ino())
    }

    /// Moves `rel` into the stash; returns its name there.
    fn stash(&mut self, rel: &Path) -> io::Result<OsString> {
        let name = OsString::from(format!("{}", self.next_stash));
        self.next_stash += 1;
        let stashed = Path::new(STASH).join(&name);
        fs::rename(self.full(rel), self.full(&stashed))?;
        self.move_paths(rel, &stashed);
        Ok(name)
    }

    /// Moves stash entry `stashed` back to `name` in `dir`, if that name is free.
    fn unstash(&mut self, stashed: &OsStr, dir: u64, name: &OsStr) {
        let from = Path::new(STASH).join(stashed);
        let Ok(to) = self.path(dir).map(|d| d.join(name)) else {
            return;
        };
        if self.backing_ino(&to).is_none() && fs::rename(self.full(&from), self.full(&to)).is_ok() {
            self.move_paths(&from, &to);
        }
    }

    /// Deletes `rel` (a file or a whole directory) for good and forgets its inodes, so that a new
    /// file that gets the same backing inode number is not mistaken for it.
    fn purge(&mut self, rel: &Path) {
        let full = self.full(rel);
        let removed = match fs::symlink_metadata(&full) {
            Ok(meta) if meta.is_dir() => fs::remove_dir_all(&full),
            Ok(_) => fs::remove_file(&full),
            Err(e) => Err(e),
        };
        if removed.is_err() {
            return;
        }
        let gone: Vec<u64> = self
            .nodes
            .iter()
            .filter(|(ino, n)| **ino != ROOT_INO && n.path.starts_with(rel))
            .map(|(ino, _)| *ino)
            .collect();
        for ino in gone {
            self.nodes.remove(&ino);
        }
        self.by_backing
            .retain(|_, ino| *ino == ROOT_INO || self.nodes.contains_key(ino));
    }

    /// Records that what was at `from` (and everything under it) is now at `to`.
    fn move_paths(&mut self, from: &Path, to: &Path) {
        for node in self.nodes.values_mut() {
            if let Ok(rest) = node.path.strip_prefix(from) {
                node.path = if rest.as_os_str().is_empty() {
                    to.to_path_buf()
                } else {
                    to.join(rest)
                };
            }
        }
    }
}

fn errno_to_io(e: Errno) -> io::Error {
    io::Error::from_raw_os_error(e.code())
}
