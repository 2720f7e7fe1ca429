//! The state store: the ledger's state on disk (redb), checkpointed, with the recent past in memory.
//!
//! It owns the files under `<data>/state.redb` and the rule that a checkpoint writes the state
//! *and* the log index it reflects in one atomic, fsynced redb commit, so that recovery is
//! "open the last checkpoint, replay the log after its index". Between checkpoints, changes
//! live in an in-memory memtable; a checkpoint freezes it and writes it on a background thread
//! while new batches go on into a fresh memtable. All accounts and the pending-expiry index are
//! held in memory; transfers, their per-account index and balance history live on disk, so
//! memory does not grow with the number of transfers stored.
//!
//! It must never decide what a batch means (that is `bulwark-ledger`), and never acknowledge
//! anything: durability of a batch before its checkpoint is the log's job.
//!
//! # A full disk
//!
//! A checkpoint is not started while the data directory's free space (statvfs) is below a margin
//! (twice the estimated size of what it would write, plus `bulwark_limits::SPACE_RESERVE`): the memtable stays in
//! memory and the log is kept, with a warning. If a checkpoint still fails for lack of space (the
//! disk filled while it ran), that is not fatal: the frozen memtable is kept (reads still see it),
//! the checkpointed index does not move (so the log behind it is not deleted), and the same frozen
//! memtable is written again later. redb answers every call after one real I/O error with
//! `PreviousIo`, reads included, until the `Database` is dropped and the file opened again: the
//! store then closes it and reopens it (a reopen may itself need space, to repair the file: it is
//! retried until it works, see [`StateStore::poll_checkpoint`]). A read that meets the failed handle
//! before that (a checkpoint fails while the loop reads) waits for the reopen: an answer without the
//! checkpointed data would be wrong. Any other checkpoint error stays fatal.
//!
//! # Layout
//!
//! `state` (the [`StateStore`], opening a file, the state machine), `memtable` (changes since the
//! last freeze), `by_account` (a memtable's transfers by account, built for reads and
//! checkpoints, not while applying; on `position_lists`, as the field indexes), `checkpoint` (freezing, writing in the background, the free-space check), `disk` (the
//! redb handle, closed and reopened after an I/O failure), `query` (history and the ledger's
//! lookups), `transfer_runs` (where a checkpoint puts each transfer: in runs, or a row of its own, and
//! finding it again), `tables` (the schema), `records` (fixed-width row encodings), `snapshot` (streaming a
//! checkpoint to another node and importing one), `error`.

#![warn(clippy::too_many_lines)]

mod access;
mod by_account;
mod checkpoint;
mod disk;
mod error;
mod feed;
mod field_index;
mod history;
mod index_runs;
mod memtable;
mod outbox;
mod position_lists;
mod priority;
mod query;
mod records;
mod search;
pub mod snapshot;
mod state;
mod tables;
mod transfer_runs;
mod upgrade;

pub use checkpoint::{file_system_space, free_space, Checkpointed};
pub use error::{is_disk_full_io, StoreError};
pub use history::{HistoryFilter, HistoryPage};
pub use priority::{lower_this_threads_priority, this_threads_nice};
pub use search::{QueryFilter, QueryPage};
pub use state::StateStore;
