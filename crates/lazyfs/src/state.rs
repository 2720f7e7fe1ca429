//! The state one mount shares between the kernel's requests and the controller: the namespace,
//! the open files with their unsynced data, and the counters. Power cuts and syncs live here.
//!
//! Locks: `Shared::state` (the namespace and the table of open files) is taken before a file's own
//! lock, never after it. Reads, writes and fsyncs of a file hold only the file's lock once they
//! have found it, so that a slow fsync of one file does not stop the others.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use fuser::Errno;

use crate::pending::{self, Pending};
use crate::tree::Tree;
use crate::{CutReport, Stats};

/// A regular file that is open, or has unsynced data (then its backing file stays open, so that an
/// fsync through any later descriptor finds the data).
#[derive(Debug)]
pub struct OpenFile {
    pub backing: File,
    /// Open FUSE handles on it.
    pub opens: u32,
    pub pending: Pending,
    /// The end of the space reserved in the backing file beyond its size (see `reserve`).
    reserved_end: u64,
}

#[derive(Debug)]
pub struct State {
    pub tree: Tree,
    pub files: HashMap<u64, Arc<Mutex<OpenFile>>>,
}

/// Everything one mount shares.
#[derive(Debug)]
pub struct Shared {
    state: Mutex<State>,
    /// Unsynced data bytes allowed in memory across the mount; a write past it answers ENOSPC.
    pub max_pending_bytes: u64,
    fsync_delay_nanos: AtomicU64,
    fsyncs: AtomicU64,
    dir_fsyncs: AtomicU64,
    cuts: AtomicU64,
    pending_bytes: AtomicU64,
    writes_refused_for_memory: AtomicU64,
}

/// Locks `mutex`, also after a thread panicked holding it: the data is plain bookkeeping, and a
/// filesystem that stops answering would hang every process that uses it.
pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Shared {
    pub fn new(tree: Tree, max_pending_bytes: u64) -> Shared {
        Shared {
            state: Mutex::new(State {
                tree,
                files: HashMap::new(),
            }),
            max_pending_bytes,
            fsync_delay_nanos: AtomicU64::new(0),
            fsyncs: AtomicU64::new(0),
            dir_fsyncs: AtomicU64::new(0),
            cuts: AtomicU64::new(0),
            pending_bytes: AtomicU64::new(0),
            writes_refused_for_memory: AtomicU64::new(0),
        }
    }

    pub fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// The open state of regular file `ino`, made if needed (its backing file opened), with
    /// `opens` added to its handle count.
    pub fn open_file(&self, ino: u64, opens: u32) -> Result<Arc<Mutex<OpenFile>>, Errno> {
        let mut state = self.state();
        let file = match state.files.get(&ino) {
            Some(file) => file.clone(),
            None => {
                let path = state.tree.full(&state.tree.path(ino)?);
                let backing = OpenOptions::new().read(true).write(true).open(path)?;
                let file = Arc::new(Mutex::new(OpenFile::new(backing)));
                state.files.insert(ino, file.clone());
                file
            }
        };
        lock(&file).opens += opens;
        Ok(file)
    }

    /// Adds a just created backing file to the open files, with one handle.
    pub fn insert_created(state: &mut State, ino: u64, backing: File) {
        let mut file = OpenFile::new(backing);
        file.opens = 1;
        state.files.insert(ino, Arc::new(Mutex::new(file)));
    }

    /// The open state of `ino`, if it is open or has unsynced data.
    pub fn file(&self, ino: u64) -> Option<Arc<Mutex<OpenFile>>> {
        self.state().files.get(&ino).cloned()
    }

    /// Drops `opens` handles of `ino`, and its open state once it has none and nothing unsynced.
    pub fn release(&self, ino: u64, opens: u32) {
        let mut state = self.state();
        let Some(file) = state.files.get(&ino).cloned() else {
            return;
        };
        let mut file = lock(&file);
        file.opens = file.opens.saturating_sub(opens);
        if file.opens == 0 && file.pending.is_empty() {
            state.files.remove(&ino);
        }
    }

    /// Adds `data` at `offset` to the unsynced data of `file`. A full backing disk, or a full
    /// memory budget, answers ENOSPC here rather than at the fsync.
    pub fn write(&self, file: &mut OpenFile, offset: u64, data: &[u8]) -> Result<(), Errno> {
        let len = data.len() as u64;
        if self.pending_bytes.load(Ordering::Relaxed) + len > self.max_pending_bytes {
            self.writes_refused_for_memory
                .fetch_add(1, Ordering::Relaxed);
            return Err(Errno::ENOSPC);
        }
        file.reserve(offset, len)?;
        file.pending.write(offset, data);
        self.pending_bytes.fetch_add(len, Ordering::Relaxed);
        Ok(())
    }

    /// What a slow disk adds before every fsync.
    pub fn fsync_delay(&self) -> Duration {
        Duration::from_nanos(self.fsync_delay_nanos.load(Ordering::Relaxed))
    }

    pub fn set_fsync_delay(&self, delay: Duration) {
        let nanos = u64::try_from(delay.as_nanos()).unwrap_or(u64::MAX);
        self.fsync_delay_nanos.store(nanos, Ordering::Relaxed);
    }

    /// Makes the unsynced data of `file` durable: applies it to the backing file in order and
    /// fsyncs that. On an error the data stays pending (applying it again is harmless).
    pub fn sync_file(&self, file: &mut OpenFile) -> io::Result<()> {
        file.pending.apply(&file.backing)?;
        file.backing.sync_all()?;
        self.pending_bytes
            .fetch_sub(file.pending.bytes(), Ordering::Relaxed);
        file.pending = Pending::default();
        file.reserved_end = 0;
        self.fsyncs.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// An fsync or fdatasync of `ino`, after the slow disk's delay.
    pub fn fsync(&self, ino: u64) -> Result<(), Errno> {
        self.sleep_fsync_delay()?;
        let Some(file) = self.file(ino) else {
            // Nothing unsynced (a file opened read-only and never written): still counts.
            self.fsyncs.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        };
        self.sync_file(&mut lock(&file))?;
        Ok(())
    }

    /// An fsync of directory `ino`: its pending entry changes become durable.
    pub fn fsync_dir(&self, ino: u64) -> Result<(), Errno> {
        self.sleep_fsync_delay()?;
        let mut state = self.state();
        let path = state.tree.full(&state.tree.path(ino)?);
        state.tree.commit_dir(ino);
        File::open(path)?.sync_all()?;
        self.dir_fsyncs.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// The slow disk's delay before an fsync. A cut that comes during it fails the fsync (EIO)
    /// instead of letting it finish after the cut: the power went before the disk was done, and
    /// the process that asked (killed first, as the harness does) would otherwise have its last
    /// writes made durable behind the cut's back.
    fn sleep_fsync_delay(&self) -> Result<(), Errno> {
        let delay = self.fsync_delay();
        if delay.is_zero() {
            return Ok(());
        }
        let cuts_before = self.cuts.load(Ordering::SeqCst);
        std::thread::sleep(delay);
        if self.cuts.load(Ordering::SeqCst) != cuts_before {
            return Err(Errno::EIO);
        }
        Ok(())
    }

    /// A power cut: drops every unsynced write (keeping, when `torn_seed` is given, a random
    /// page-granular prefix of each file's unsynced writes) and undoes every pending entry change.
    pub fn power_cut(&self, torn_seed: Option<u64>) -> CutReport {
        let mut state = self.state();
        let mut rng = torn_seed.map(SplitMix64);
        let mut report = CutReport::default();
        // In inode order, so that a seed always tears the same way.
        let mut inos: Vec<u64> = state.files.keys().copied().collect();
        inos.sort_unstable();
        for ino in inos {
            let file = state.files[&ino].clone();
            let mut file = lock(&file);
            if file.pending.is_empty() {
                continue;
            }
            report.files_with_lost_writes += 1;
            let pages = file.pending.pages();
            let keep = rng.as_mut().map_or(0, |r| r.below(pages.len() + 1));
            // The backing file is the disk: what a torn write kept is on it, synced or not.
            let _ = pending::apply(&pages[..keep], &file.backing);
            report.pages_kept += keep as u64;
            report.bytes_dropped += pages[keep..].iter().map(data_len).sum::<u64>();
            self.pending_bytes
                .fetch_sub(file.pending.bytes(), Ordering::Relaxed);
            file.pending = Pending::default();
            file.release_reservation();
            if file.opens == 0 {
                state.files.remove(&ino);
            }
        }
        report.changes_undone = state.tree.undo_all() as u64;
        self.cuts.fetch_add(1, Ordering::SeqCst);
        report
    }

    /// Makes everything durable: every file's data and every entry change (a clean shutdown).
    pub fn sync_all(&self) -> io::Result<()> {
        let mut state = self.state();
        let mut result = Ok(());
        let inos: Vec<u64> = state.files.keys().copied().collect();
        for ino in inos {
            let file = state.files[&ino].clone();
            let mut file = lock(&file);
            if let Err(e) = self.sync_file(&mut file) {
                result = Err(e);
            } else if file.opens == 0 {
                state.files.remove(&ino);
            }
        }
        state.tree.commit_all();
        result
    }

    pub fn stats(&self) -> Stats {
        let state = self.state();
        Stats {
            fsyncs: self.fsyncs.load(Ordering::Relaxed),
            dir_fsyncs: self.dir_fsyncs.load(Ordering::Relaxed),
            cuts: self.cuts.load(Ordering::Relaxed),
            pending_bytes: self.pending_bytes.load(Ordering::Relaxed),
            pending_files: state
                .files
                .values()
                .filter(|f| !lock(f).pending.is_empty())
                .count() as u64,
            pending_dir_changes: state.tree.pending_changes() as u64,
            writes_refused_for_memory: self.writes_refused_for_memory.load(Ordering::Relaxed),
            fsync_delay: self.fsync_delay(),
        }
    }
}

fn data_len(op: &pending::Op) -> u64 {
    match op {
        pending::Op::Write { data, .. } => data.len() as u64,
        pending::Op::SetLen(_) => 0,
    }
}

impl OpenFile {
    fn new(backing: File) -> OpenFile {
        OpenFile {
            backing,
            opens: 0,
            pending: Pending::default(),
            reserved_end: 0,
        }
    }

    /// Reserves the backing blocks a write will need when it is synced (fallocate that keeps the
    /// size, so the durable file is unchanged): a full disk answers ENOSPC at the write, as it
    /// would on a real filesystem. A backing filesystem without fallocate is not asked.
    pub fn reserve(&mut self, offset: u64, len: u64) -> Result<(), Errno> {
        if len == 0 {
            return Ok(());
        }
        let (Ok(at), Ok(size)) = (i64::try_from(offset), i64::try_from(len)) else {
            return Err(Errno::EFBIG);
        };
        // SAFETY: fallocate on a descriptor this struct owns; no memory is passed.
        let r = unsafe {
            libc::fallocate(
                self.backing.as_raw_fd(),
                libc::FALLOC_FL_KEEP_SIZE,
                at,
                size,
            )
        };
        if r != 0 {
            let e = io::Error::last_os_error();
            if matches!(e.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT)) {
                return Err(Errno::ENOSPC);
            }
        }
        self.reserved_end = self.reserved_end.max(offset + len);
        Ok(())
    }

    /// Frees the blocks reserved past the durable end of the file for writes a cut dropped.
    fn release_reservation(&mut self) {
        let Ok(len) = self.backing.metadata().map(|m| m.len()) else {
            return;
        };
        if self.reserved_end > len {
            // Truncating to the same size frees blocks past the end on ext4; punching frees them
            // on tmpfs. Best effort: a failure only keeps some space taken.
            let _ = self.backing.set_len(len);
            // SAFETY: fallocate on a descriptor this struct owns; no memory is passed.
            unsafe {
                libc::fallocate(
                    self.backing.as_raw_fd(),
                    libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                    len as i64,
                    (self.reserved_end - len) as i64,
                );
            }
        }
        self.reserved_end = 0;
    }
}

/// A small seeded generator (SplitMix64): a torn cut is reproducible from its seed.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform enough in `0..n` for picking a tear.
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}
