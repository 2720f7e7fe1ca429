//! `bulwark-backup`: backups, the continuous archive and point-in-time restore.
//!
//! - `target`: where they go (a directory, or `s3` object storage; every object written whole or
//!   not at all);
//! - `manifest`: a backup's description, checksummed, written last;
//! - `chunk`: the archive's sealed chunks of committed Raft entries;
//! - `catalog`: what a target holds, and whether the archive chains without a gap;
//! - `archiver`: the thread that seals and uploads chunks for a node (`--archive`);
//! - `create`: a backup from a node's snapshot stream;
//! - `incremental`: the rows changed since a previous backup, and a chain merged back whole;
//! - `restore`: a state rebuilt from a backup and the archive, to an index or a time;
//! - `verify`: every check a restore makes, and a replay into a scratch store;
//! - `prune`: retention, dropping only what no kept restore point needs.
//!
//! It never decides what an entry means: replay goes through `consensus::replay`, the code a
//! replica applies committed entries with.

pub mod archiver;
pub mod catalog;
pub mod chunk;
pub mod create;
pub mod incremental;
pub mod manifest;
pub mod prune;
pub mod restore;
pub mod s3;
pub mod target;
pub mod verify;

pub use target::{open_target, Target, TargetError};

/// A ledger time (ns since the Unix epoch) as RFC 3339, for messages.
pub fn format_time(ns: u64) -> String {
    if ns == 0 {
        return "none (an empty ledger)".into();
    }
    let secs = (ns / 1_000_000_000) as i64;
    let nanos = (ns % 1_000_000_000) as u32;
    match chrono::DateTime::from_timestamp(secs, nanos) {
        Some(t) => t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
        None => format!("{ns} ns"),
    }
}

/// An RFC 3339 time as a ledger time (ns since the Unix epoch).
pub fn parse_time(text: &str) -> Result<u64, String> {
    let t = chrono::DateTime::parse_from_rfc3339(text).map_err(|e| {
        format!("{text:?} is not an RFC 3339 time ({e}); for example 2026-12-02T14:03:27Z")
    })?;
    t.timestamp_nanos_opt()
        .and_then(|ns| u64::try_from(ns).ok())
        .ok_or_else(|| format!("{text:?} is outside the ledger's time range"))
}

/// The wall clock in ms since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
