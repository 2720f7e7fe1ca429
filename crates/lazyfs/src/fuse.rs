//! The FUSE side: each kernel request mapped onto the backing directory and the shared state.
//!
//! Every file is opened with `FOPEN_DIRECT_IO` and every entry and attribute is answered with a
//! zero time-to-live: the kernel caches no data, names or sizes, so that what a power cut changes
//! underneath is what the next read, lookup or stat sees. (Direct I/O also means no shared
//! writable `mmap`; Bulwark uses none.)

use std::ffi::OsStr;
use std::fs::{self, DirBuilder, Metadata, OpenOptions};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, LockOwner,
    OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty,
    ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request, TimeOrNow, WriteFlags,
};

use crate::control;
use crate::state::{lock, Shared};
use crate::tree::{CONTROL, CONTROL_INO, ROOT_INO, STASH};

/// Nothing is cached by the kernel (see the module's docs).
const TTL: Duration = Duration::ZERO;

pub struct LazyFilesystem {
    pub shared: Arc<Shared>,
}

/// A file's attributes from its backing metadata, with the size its readers see.
fn attr(ino: u64, meta: &Metadata, size: u64) -> FileAttr {
    FileAttr {
        ino: INodeNo(ino),
        size,
        blocks: meta.blocks(),
        atime: time(meta.atime(), meta.atime_nsec()),
        mtime: time(meta.mtime(), meta.mtime_nsec()),
        ctime: time(meta.ctime(), meta.ctime_nsec()),
        crtime: UNIX_EPOCH,
        kind: FileType::from_std(meta.file_type()).unwrap_or(FileType::RegularFile),
        perm: (meta.mode() & 0o7777) as u16,
        nlink: meta.nlink() as u32,
        uid: meta.uid(),
        gid: meta.gid(),
        rdev: meta.rdev() as u32,
        blksize: meta.blksize() as u32,
        flags: 0,
    }
}

fn time(secs: i64, nanos: i64) -> SystemTime {
    let since_epoch = Duration::new(secs.unsigned_abs(), nanos as u32);
    if secs >= 0 {
        UNIX_EPOCH + since_epoch
    } else {
        UNIX_EPOCH - since_epoch
    }
}

/// The control file: owner-only, its size that of the status it reads as.
fn control_attr(shared: &Shared) -> FileAttr {
    let now = SystemTime::now();
    FileAttr {
        ino: INodeNo(CONTROL_INO),
        size: control::status(&shared.stats()).len() as u64,
        blocks: 0,
        atime: now,
        mtime: now,
        ctime: now,
        crtime: now,
        kind: FileType::RegularFile,
        perm: 0o600,
        nlink: 1,
        // SAFETY: geteuid has no preconditions.
        uid: unsafe { libc::geteuid() },
        gid: unsafe { libc::getegid() },
        rdev: 0,
        blksize: 4096,
        flags: 0,
    }
}

impl LazyFilesystem {
    /// The attributes of `ino`; a file with unsynced data has the size they give it.
    fn getattr_of(&self, ino: u64) -> Result<FileAttr, Errno> {
        if ino == CONTROL_INO {
            return Ok(control_attr(&self.shared));
        }
        if let Some(file) = self.shared.file(ino) {
            let file = lock(&file);
            let meta = file.backing.metadata()?;
            return Ok(attr(ino, &meta, file.pending.len(meta.len())));
        }
        let state = self.shared.state();
        let meta = fs::symlink_metadata(state.tree.full(&state.tree.path(ino)?))?;
        Ok(attr(ino, &meta, meta.len()))
    }

    fn lookup_of(&self, parent: u64, name: &OsStr) -> Result<FileAttr, Errno> {
        if parent == ROOT_INO && name == CONTROL {
            return Ok(control_attr(&self.shared));
        }
        let mut state = self.shared.state();
        let rel = state.tree.child(parent, name).map_err(|_| Errno::ENOENT)?;
        let meta = fs::symlink_metadata(state.tree.full(&rel))?;
        let ino = state.tree.inode_for(&rel, &meta);
        let size = match state.files.get(&ino) {
            Some(file) => lock(file).pending.len(meta.len()),
            None => meta.len(),
        };
        Ok(attr(ino, &meta, size))
    }

    /// A create: a new file, or (without O_EXCL) an open of the one another creator just made.
    fn create_of(
        &self,
        parent: u64,
        name: &OsStr,
        mode: u32,
        flags: i32,
    ) -> Result<FileAttr, Errno> {
        let mut state = self.shared.state();
        let rel = state.tree.child(parent, name)?;
        let full = state.tree.full(&rel);
        if let Ok(meta) = fs::symlink_metadata(&full) {
            if flags & libc::O_EXCL != 0 {
                return Err(Errno::EEXIST);
            }
            let ino = state.tree.inode_for(&rel, &meta);
            drop(state);
            let file = self.shared.open_file(ino, 1)?;
            if flags & libc::O_TRUNC != 0 {
                lock(&file).pending.set_len(0);
            }
            return self.getattr_of(ino);
        }
        let backing = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(mode & 0o7777)
            .open(&full)?;
        let meta = backing.metadata()?;
        state.tree.record_created(parent, name, meta.ino());
        let ino = state.tree.inode_for(&rel, &meta);
        Shared::insert_created(&mut state, ino, backing);
        Ok(attr(ino, &meta, 0))
    }

    fn mkdir_of(&self, parent: u64, name: &OsStr, mode: u32) -> Result<FileAttr, Errno> {
        let mut state = self.shared.state();
        let rel = state.tree.child(parent, name)?;
        let full = state.tree.full(&rel);
        DirBuilder::new().mode(mode & 0o7777).create(&full)?;
        let meta = fs::symlink_metadata(&full)?;
        state.tree.record_created(parent, name, meta.ino());
        let ino = state.tree.inode_for(&rel, &meta);
        Ok(attr(ino, &meta, meta.len()))
    }

    fn symlink_of(
        &self,
        parent: u64,
        name: &OsStr,
        target: &std::path::Path,
    ) -> Result<FileAttr, Errno> {
        let mut state = self.shared.state();
        let rel = state.tree.child(parent, name)?;
        let full = state.tree.full(&rel);
        std::os::unix::fs::symlink(target, &full)?;
        let meta = fs::symlink_metadata(&full)?;
        state.tree.record_created(parent, name, meta.ino());
        let ino = state.tree.inode_for(&rel, &meta);
        Ok(attr(ino, &meta, meta.len()))
    }

    /// An unlink (`dir == false`) or rmdir (`dir == true`).
    fn remove_of(&self, parent: u64, name: &OsStr, dir: bool) -> Result<(), Errno> {
        let mut state = self.shared.state();
        let rel = state.tree.child(parent, name).map_err(|_| Errno::ENOENT)?;
        let full = state.tree.full(&rel);
        let meta = fs::symlink_metadata(&full)?;
        match (dir, meta.is_dir()) {
            (false, true) => return Err(Errno::EISDIR),
            (true, false) => return Err(Errno::ENOTDIR),
            (true, true) if fs::read_dir(&full)?.next().is_some() => return Err(Errno::ENOTEMPTY),
            _ => {}
        }
        state.tree.remove(parent, name)?;
        Ok(())
    }

    fn rename_of(
        &self,
        from: (u64, &OsStr),
        to: (u64, &OsStr),
        flags: RenameFlags,
    ) -> Result<(), Errno> {
        if flags.intersects(RenameFlags::RENAME_EXCHANGE | RenameFlags::RENAME_WHITEOUT) {
            return Err(Errno::EINVAL);
        }
        let mut state = self.shared.state();
        let from_rel = state
            .tree
            .child(from.0, from.1)
            .map_err(|_| Errno::ENOENT)?;
        let to_rel = state.tree.child(to.0, to.1)?;
        let from_meta = fs::symlink_metadata(state.tree.full(&from_rel))?;
        let replaces = match fs::symlink_metadata(state.tree.full(&to_rel)) {
            Err(_) => false,
            Ok(_) if flags.contains(RenameFlags::RENAME_NOREPLACE) => return Err(Errno::EEXIST),
            // Two names of one file: rename does nothing.
            Ok(to_meta) if to_meta.ino() == from_meta.ino() => return Ok(()),
            Ok(to_meta) if to_meta.is_dir() => {
                if !from_meta.is_dir() {
                    return Err(Errno::EISDIR);
                }
                if fs::read_dir(state.tree.full(&to_rel))?.next().is_some() {
                    return Err(Errno::ENOTEMPTY);
                }
                true
            }
            Ok(_) if from_meta.is_dir() => return Err(Errno::ENOTDIR),
            Ok(_) => true,
        };
        state.tree.rename(from, to, from_meta.ino(), replaces)?;
        Ok(())
    }

    fn readdir_of(&self, ino: u64) -> Result<Vec<(u64, FileType, Vec<u8>)>, Errno> {
        let mut state = self.shared.state();
        let rel = state.tree.path(ino)?;
        let mut entries = vec![
            (ino, FileType::Directory, b".".to_vec()),
            (ino, FileType::Directory, b"..".to_vec()),
        ];
        for entry in fs::read_dir(state.tree.full(&rel))? {
            let entry = entry?;
            let name = entry.file_name();
            if ino == ROOT_INO && name == STASH {
                continue;
            }
            let Ok(meta) = entry.metadata() else {
                continue; // removed meanwhile
            };
            let child = state.tree.inode_for(&rel.join(&name), &meta);
            let kind = FileType::from_std(meta.file_type()).unwrap_or(FileType::RegularFile);
            entries.push((child, kind, name.as_bytes().to_vec()));
        }
        Ok(entries)
    }

    fn setattr_of(
        &self,
        ino: u64,
        mode: Option<u32>,
        owner: (Option<u32>, Option<u32>),
        size: Option<u64>,
        times: (Option<TimeOrNow>, Option<TimeOrNow>),
    ) -> Result<FileAttr, Errno> {
        if ino == CONTROL_INO {
            // `echo cut > .lazyfs-control` truncates it first.
            return Ok(control_attr(&self.shared));
        }
        if let Some(size) = size {
            let file = self.shared.open_file(ino, 0)?;
            lock(&file).pending.set_len(size);
            self.shared.release(ino, 0);
        }
        let full = {
            let state = self.shared.state();
            state.tree.full(&state.tree.path(ino)?)
        };
        if let Some(mode) = mode {
            fs::set_permissions(&full, fs::Permissions::from_mode(mode & 0o7777))?;
        }
        if owner.0.is_some() || owner.1.is_some() {
            std::os::unix::fs::lchown(&full, owner.0, owner.1)?;
        }
        if times.0.is_some() || times.1.is_some() {
            set_times(&full, times)?;
        }
        self.getattr_of(ino)
    }

    fn read_of(&self, ino: u64, offset: u64, size: u32) -> Result<Vec<u8>, Errno> {
        if ino == CONTROL_INO {
            let status = control::status(&self.shared.stats()).into_bytes();
            let from = (offset as usize).min(status.len());
            let to = (from + size as usize).min(status.len());
            return Ok(status[from..to].to_vec());
        }
        let file = self.shared.file(ino).ok_or(Errno::EBADF)?;
        let file = lock(&file);
        let durable_len = file.backing.metadata()?.len();
        let mut buf = vec![0u8; size as usize];
        let mut filled = 0;
        while filled < buf.len() {
            let n = std::os::unix::fs::FileExt::read_at(
                &file.backing,
                &mut buf[filled..],
                offset + filled as u64,
            )?;
            if n == 0 {
                break;
            }
            filled += n;
        }
        let len = file.pending.overlay(durable_len, offset, &mut buf);
        buf.truncate(len);
        Ok(buf)
    }

    fn write_of(&self, ino: u64, offset: u64, data: &[u8], flags: i32) -> Result<(), Errno> {
        if ino == CONTROL_INO {
            let text = std::str::from_utf8(data).map_err(|_| Errno::EINVAL)?;
            let commands = control::parse(text).map_err(|_| Errno::EINVAL)?;
            for command in commands {
                control::run(&self.shared, command)?;
            }
            return Ok(());
        }
        let file = self.shared.file(ino).ok_or(Errno::EBADF)?;
        let mut file = lock(&file);
        self.shared.write(&mut file, offset, data)?;
        // A file opened O_SYNC or O_DSYNC: every write is durable when it returns.
        if flags & (libc::O_SYNC | libc::O_DSYNC) != 0 {
            self.shared.sync_file(&mut file)?;
        }
        Ok(())
    }

    fn fallocate_of(&self, ino: u64, offset: u64, length: u64, mode: i32) -> Result<(), Errno> {
        // Plain allocation only; punching holes or zeroing ranges is not modelled.
        if mode & !libc::FALLOC_FL_KEEP_SIZE != 0 {
            return Err(Errno::EOPNOTSUPP);
        }
        let file = self.shared.file(ino).ok_or(Errno::EBADF)?;
        let mut file = lock(&file);
        file.reserve(offset, length)?;
        let durable_len = file.backing.metadata()?.len();
        let end = offset + length;
        if mode & libc::FALLOC_FL_KEEP_SIZE == 0 && end > file.pending.len(durable_len) {
            file.pending.set_len(end);
        }
        Ok(())
    }

    fn statfs_of(&self) -> Result<libc::statvfs, Errno> {
        let root = self.shared.state().tree.root().to_path_buf();
        let path =
            std::ffi::CString::new(root.as_os_str().as_bytes()).map_err(|_| Errno::EINVAL)?;
        // SAFETY: statvfs fills the zeroed struct it is given; the path is a valid C string.
        let mut out: libc::statvfs = unsafe { std::mem::zeroed() };
        if unsafe { libc::statvfs(path.as_ptr(), &mut out) } != 0 {
            return Err(std::io::Error::last_os_error().into());
        }
        Ok(out)
    }
}

fn set_times(
    path: &std::path::Path,
    (atime, mtime): (Option<TimeOrNow>, Option<TimeOrNow>),
) -> Result<(), Errno> {
    let spec = |t: Option<TimeOrNow>| match t {
        None => libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_OMIT,
        },
        Some(TimeOrNow::Now) => libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_NOW,
        },
        Some(TimeOrNow::SpecificTime(t)) => {
            let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
            libc::timespec {
                tv_sec: d.as_secs() as libc::time_t,
                tv_nsec: d.subsec_nanos().into(),
            }
        }
    };
    let times = [spec(atime), spec(mtime)];
    let path = std::ffi::CString::new(path.as_os_str().as_bytes()).map_err(|_| Errno::EINVAL)?;
    // SAFETY: a valid C string and an array of two timespecs, as utimensat wants.
    let r = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            path.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error().into())
    }
}

fn reply_entry(reply: ReplyEntry, result: Result<FileAttr, Errno>) {
    match result {
        Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
        Err(e) => reply.error(e),
    }
}

fn reply_empty(reply: ReplyEmpty, result: Result<(), Errno>) {
    match result {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(e),
    }
}

#[allow(clippy::too_many_arguments)] // the trait's signatures
impl Filesystem for LazyFilesystem {
    fn destroy(&mut self) {
        // Unmounted: a clean shutdown, everything reaches the disk.
        let _ = self.shared.sync_all();
        // Empty now; the backing directory is left as plain as it was found.
        let _ = fs::remove_dir(self.shared.state().tree.full(std::path::Path::new(STASH)));
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        reply_entry(reply, self.lookup_of(parent.0, name));
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.getattr_of(ino.0) {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(e) => reply.error(e),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        match self.setattr_of(ino.0, mode, (uid, gid), size, (atime, mtime)) {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(e) => reply.error(e),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        let full = {
            let state = self.shared.state();
            state.tree.path(ino.0).map(|rel| state.tree.full(&rel))
        };
        let target = full.and_then(|full| Ok(fs::read_link(full)?));
        match target {
            Ok(target) => reply.data(target.as_os_str().as_bytes()),
            Err(e) => reply.error(e),
        }
    }

    fn mkdir(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        reply_entry(reply, self.mkdir_of(parent.0, name, mode & !umask));
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        reply_empty(reply, self.remove_of(parent.0, name, false));
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        reply_empty(reply, self.remove_of(parent.0, name, true));
    }

    fn symlink(
        &self,
        _req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &std::path::Path,
        reply: ReplyEntry,
    ) {
        reply_entry(reply, self.symlink_of(parent.0, link_name, target));
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let result = self.rename_of((parent.0, name), (newparent.0, newname), flags);
        reply_empty(reply, result);
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        if ino.0 == CONTROL_INO {
            return reply.opened(FileHandle(0), FopenFlags::FOPEN_DIRECT_IO);
        }
        match self.shared.open_file(ino.0, 1) {
            Ok(file) => {
                if flags.0 & libc::O_TRUNC != 0 {
                    lock(&file).pending.set_len(0);
                }
                reply.opened(FileHandle(0), FopenFlags::FOPEN_DIRECT_IO);
            }
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        match self.read_of(ino.0, offset, size) {
            Ok(data) => reply.data(&data),
            Err(e) => reply.error(e),
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        match self.write_of(ino.0, offset, data, flags.0) {
            Ok(()) => reply.written(data.len() as u32),
            Err(e) => reply.error(e),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        // A close is not a sync.
        reply.ok();
    }

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        if ino.0 != CONTROL_INO {
            self.shared.release(ino.0, 1);
        }
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        // fdatasync and fsync alike make the data durable; the size is part of the data here.
        reply_empty(reply, self.shared.fsync(ino.0));
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        match self.readdir_of(ino.0) {
            Ok(entries) => {
                for (i, (child, kind, name)) in entries.iter().enumerate().skip(offset as usize) {
                    if reply.add(
                        INodeNo(*child),
                        i as u64 + 1,
                        *kind,
                        OsStr::from_bytes(name),
                    ) {
                        break;
                    }
                }
                reply.ok();
            }
            Err(e) => reply.error(e),
        }
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        reply_empty(reply, self.shared.fsync_dir(ino.0));
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        match self.statfs_of() {
            Ok(s) => reply.statfs(
                s.f_blocks,
                s.f_bfree,
                s.f_bavail,
                s.f_files,
                s.f_ffree,
                s.f_bsize as u32,
                s.f_namemax as u32,
                s.f_frsize as u32,
            ),
            Err(e) => reply.error(e),
        }
    }

    fn access(&self, _req: &Request, _ino: INodeNo, _mask: fuser::AccessFlags, reply: ReplyEmpty) {
        reply.ok();
    }

    fn create(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        match self.create_of(parent.0, name, mode & !umask, flags) {
            Ok(attr) => reply.created(
                &TTL,
                &attr,
                Generation(0),
                FileHandle(0),
                FopenFlags::FOPEN_DIRECT_IO,
            ),
            Err(e) => reply.error(e),
        }
    }

    fn fallocate(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        reply_empty(reply, self.fallocate_of(ino.0, offset, length, mode));
    }
}
