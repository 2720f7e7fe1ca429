//! `bulwark-consensus` owns Bulwark's Raft integration on top of TiKV's `raft` crate: the durable
//! Raft state (`storage`: the log in our own write-ahead log, term, vote, commit, conf state and the
//! compaction point in a crash-safe hard-state file, plus an in-memory twin for the simulation), the
//! sans-IO `replica` (proposals grouped into entries, ReadIndex reads, applying, Ready handling), the
//! proposer's clock rule (`clock`), the crash-safe order of a snapshot install's durable steps and
//! what a start decides about an interrupted one (`install`, sans-IO), the start-time alignment of the log with a state ahead of it
//! (`recovery`, shared by the node and the simulation), the membership checks and the
//! address book's members (`membership`) and the in-sync rule (`replication`), both decided here
//! for the node loop and the simulation alike, and a seeded whole-cluster simulation (`sim`). It
//! must
//! never report a write durable before its fsync, never let a torn write lose the previous durable hard
//! state, and never start from a log that does not fit its hard state: recovery repairs only what a crash
//! can leave behind and refuses everything else with an error naming the directory or file.
#![warn(clippy::too_many_lines)]

pub mod clock;
pub mod handover;
mod hard_state;
pub mod install;
pub mod membership;
pub mod recovery;
pub mod replay;
pub mod replica;
pub mod replication;
pub mod sim;
pub mod slow_disk;
pub mod storage;
pub mod types;

pub use types::{LogIndex, NodeId, Term};
