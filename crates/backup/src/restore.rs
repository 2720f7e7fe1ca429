//! Rebuilding a ledger's state from a backup and the archive: the backup's snapshot imported,
//! then the archived entries after it replayed through the same code that applies committed
//! entries on a replica (`consensus::replay`), up to a log index or a ledger time. What a data
//! directory needs beyond the state (a new cluster's identity and Raft log) is the node's.

use std::path::Path;

use bulwark_consensus::replay::{replay_entry, Replayed};
use bulwark_ledger::access::{AuditEvent, AuditRecord, ControlResult};
use bulwark_ledger::{StateMachine, Timestamp};
use bulwark_store::StateStore;

use crate::catalog::{ArchiveListing, FoundBackup};
use crate::chunk;
use crate::manifest::{Manifest, STATE_FILE};
use crate::target::{Target, TargetError};

/// How far to restore.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RestoreTo {
    /// Everything the archive holds (or the backup alone, without an archive).
    End,
    /// The state as of this log index.
    Index(u64),
    /// Every batch the ledger stamped at or before this time (ns since the Unix epoch).
    Time(u64),
}

/// Why a restore cannot be done, or failed.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error(transparent)]
    Target(#[from] TargetError),
    #[error("no complete backup in {target}")]
    NoBackup { target: String },
    #[error("backup {name} is not usable: {why}")]
    Unusable { name: String, why: String },
    #[error("no backup named {name} in {target}")]
    UnknownBackup { name: String, target: String },
    #[error("the target {target} is before the earliest backup ({earliest})")]
    BeforeBackups { target: String, earliest: String },
    #[error("the target {target} is past the end of the archive, which ends at {end}")]
    PastArchive { target: String, end: String },
    #[error("the archive of cluster {cluster} has a gap: entries {from}..={to} are missing (needed after backup {backup} at index {after}); restore to an index before it with --to-index")]
    Gap {
        cluster: u64,
        backup: String,
        after: u64,
        from: u64,
        to: u64,
    },
    #[error("{object}: {why}")]
    Damaged { object: String, why: String },
    #[error("state store: {0}")]
    Store(#[from] bulwark_store::StoreError),
}

/// The backup and chunks a restore will read, chosen and checked before anything is written.
#[derive(Debug)]
pub struct RestorePlan {
    pub backup: Manifest,
    pub chunks: Vec<crate::catalog::ChunkRef>,
    /// The last index the restore may reach (the target index, or the archive's end).
    pub to_index: u64,
    pub until: Option<Timestamp>,
}

fn describe(to: RestoreTo) -> String {
    match to {
        RestoreTo::End => "the end".into(),
        RestoreTo::Index(i) => format!("index {i}"),
        RestoreTo::Time(t) => format!("time {}", crate::format_time(t)),
    }
}

/// Chooses the newest backup at or before the target (or the one named), and the archive's
/// chunks from it to the target; refuses a target before every backup or past the archive.
pub fn plan(
    backups: &dyn Target,
    archive: Option<&dyn Target>,
    name: Option<&str>,
    to: RestoreTo,
) -> Result<RestorePlan, RestoreError> {
    let found = crate::catalog::backups(backups)?;
    if let Some(name) = name {
        if let Some(FoundBackup::Unusable { object, why, .. }) = found
            .iter()
            .find(|b| matches!(b, FoundBackup::Unusable { name: n, .. } if n == name))
        {
            return Err(RestoreError::Unusable {
                name: name.into(),
                why: format!("{object}: {why}"),
            });
        }
    }
    let mut complete: Vec<Manifest> = found
        .into_iter()
        .filter_map(|b| match b {
            FoundBackup::Complete(m) => Some(m),
            FoundBackup::Unusable { .. } => None,
        })
        .filter(|m| name.is_none_or(|n| m.name == n))
        .collect();
    complete.sort_by_key(|m| m.applied_index);
    let Some(earliest) = complete.first().cloned() else {
        return Err(match name {
            Some(name) => RestoreError::UnknownBackup {
                name: name.into(),
                target: backups.describe(),
            },
            None => RestoreError::NoBackup {
                target: backups.describe(),
            },
        });
    };
    let fits = |m: &Manifest| match to {
        RestoreTo::End => true,
        RestoreTo::Index(i) => m.applied_index <= i,
        RestoreTo::Time(t) => m.last_timestamp <= t,
    };
    let backup = complete
        .iter()
        .rev()
        .find(|m| fits(m))
        .cloned()
        .ok_or_else(|| RestoreError::BeforeBackups {
            target: describe(to),
            earliest: format!(
                "{} at index {}, time {}",
                earliest.name,
                earliest.applied_index,
                crate::format_time(earliest.last_timestamp)
            ),
        })?;
    plan_archive(backup, archive, to)
}

/// A cluster's log begins after its bootstrap configuration, installed as a snapshot at index
/// 1: no entry 1 exists, and a state at index 0 (a backup taken before any checkpoint) follows
/// on to entry 2.
pub const BOOTSTRAP_INDEX: u64 = 1;

/// The index after which a backup's state needs the archive's entries.
pub fn chain_start(backup: &Manifest) -> u64 {
    backup.applied_index.max(BOOTSTRAP_INDEX)
}

fn plan_archive(
    backup: Manifest,
    archive: Option<&dyn Target>,
    to: RestoreTo,
) -> Result<RestorePlan, RestoreError> {
    let after = chain_start(&backup);
    let (listing, end, gap) = match archive {
        Some(archive) => {
            let listing = ArchiveListing::read(archive, backup.cluster_id)?;
            let (end, gap) = listing.covered_from(after);
            (listing, end, gap)
        }
        None => (ArchiveListing::default(), backup.applied_index, None),
    };
    let past = |end_text: String| RestoreError::PastArchive {
        target: describe(to),
        end: end_text,
    };
    let gap_error = |(from, to): (u64, u64)| RestoreError::Gap {
        cluster: backup.cluster_id,
        backup: backup.name.clone(),
        after: backup.applied_index,
        from,
        to,
    };
    let to_index = match to {
        // Chunks past a gap would be lost without a word: the operator names an index before it.
        RestoreTo::End => match gap {
            Some(gap) => return Err(gap_error(gap)),
            None => end,
        },
        RestoreTo::Index(i) if i > end => {
            return Err(gap
                .map(gap_error)
                .unwrap_or_else(|| past(format!("index {end}"))))
        }
        RestoreTo::Index(i) => i,
        RestoreTo::Time(t) => {
            // The archive holds every entry committed before its newest chunk was sealed.
            let sealed_ns = newest_seal_ns(archive, &listing, end)?;
            if t > sealed_ns {
                return Err(gap.map(gap_error).unwrap_or_else(|| {
                    past(format!(
                        "index {end}, sealed at {}",
                        crate::format_time(sealed_ns)
                    ))
                }));
            }
            end
        }
    };
    let chunks = listing.needed(after, to_index);
    let until = match to {
        RestoreTo::Time(t) => Some(Timestamp(t)),
        _ => None,
    };
    Ok(RestorePlan {
        backup,
        chunks,
        to_index,
        until,
    })
}

/// When the chunk ending at `end` was sealed, in ns (the backup's own time without one).
fn newest_seal_ns(
    archive: Option<&dyn Target>,
    listing: &ArchiveListing,
    end: u64,
) -> Result<u64, RestoreError> {
    let (Some(archive), Some(chunk)) = (archive, listing.chunks.iter().find(|c| c.last == end))
    else {
        return Ok(0);
    };
    let bytes = archive.get(&chunk.name)?;
    let header = chunk::header(&bytes).map_err(|e| RestoreError::Damaged {
        object: chunk.name.clone(),
        why: e.to_string(),
    })?;
    Ok(header.sealed_at_ms.saturating_mul(1_000_000))
}

/// The backup's state into a new store file at `state_path`: a full backup's snapshot as it is,
/// an incremental's chain merged into one (written into the import through a pipe); its
/// applied index checked against the manifest.
fn import_backup(
    backups: &dyn Target,
    backup: &Manifest,
    state_path: &Path,
) -> Result<(), RestoreError> {
    let damaged = |object: &str, why: String| RestoreError::Damaged {
        object: object.to_string(),
        why,
    };
    let (object, info) = if backup.parent.is_none() {
        let object = Manifest::object(&backup.name, STATE_FILE);
        let mut reader = backups.open(&object)?;
        let info = bulwark_store::snapshot::import(state_path, &mut reader)
            .map_err(|e| damaged(&object, e.to_string()))?;
        (object, info)
    } else {
        let object = Manifest::object(&backup.name, crate::manifest::DIFF_FILE);
        let chain =
            crate::incremental::chain_of(backups, backup).map_err(|e| damaged(&e.object, e.why))?;
        let (mut reader, writer) = std::io::pipe().map_err(|e| damaged(&object, e.to_string()))?;
        let (imported, merged) = std::thread::scope(|scope| {
            let merging = scope.spawn(|| write_chain(backups, &chain, writer));
            let imported = bulwark_store::snapshot::import(state_path, &mut reader);
            drop(reader);
            (
                imported,
                merging.join().expect("the merge thread does not panic"),
            )
        });
        // A failed merge cut the stream short: its own error says where.
        merged.map_err(|e| damaged(&e.object, e.why))?;
        (
            object.clone(),
            imported.map_err(|e| damaged(&object, e.to_string()))?,
        )
    };
    if info.applied_index != backup.applied_index {
        return Err(damaged(
            &object,
            format!(
                "the state is at index {}, the manifest says {}",
                info.applied_index, backup.applied_index
            ),
        ));
    }
    Ok(())
}

/// The chain's whole state as a snapshot stream into `out`.
fn write_chain(
    backups: &dyn Target,
    chain: &[Manifest],
    out: std::io::PipeWriter,
) -> Result<(), crate::incremental::StreamError> {
    let last = chain.last().expect("a chain");
    let object = Manifest::object(&last.name, crate::manifest::DIFF_FILE);
    let broken = |e: bulwark_store::snapshot::ExportError| crate::incremental::StreamError {
        object: object.clone(),
        why: e.to_string(),
    };
    let mut writer =
        bulwark_store::snapshot::RowWriter::new(std::io::BufWriter::new(out)).map_err(&broken)?;
    for row in crate::incremental::chain_rows(backups, chain)? {
        let row = row?;
        writer.row(row.tag, &row.key, &row.value).map_err(&broken)?;
    }
    writer.finish(last.applied_index).map_err(&broken)?;
    Ok(())
}

/// What a restore replayed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Restored {
    pub applied_index: u64,
    pub last_timestamp: u64,
    pub entries_replayed: u64,
}

/// Builds the state file at `state_path` from the plan: the backup's snapshot imported (its
/// checksums and the manifest's figures checked), then the chunks replayed. Reports progress
/// as (entries done, entries planned). The state is checkpointed before it returns.
pub fn build_state(
    backups: &dyn Target,
    archive: Option<&dyn Target>,
    plan: &RestorePlan,
    state_path: &Path,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<(StateStore, Restored), RestoreError> {
    import_backup(backups, &plan.backup, state_path)?;
    let mut store = StateStore::open(state_path)?;
    if StateMachine::applied_index(&store) < BOOTSTRAP_INDEX && !plan.chunks.is_empty() {
        store.skip_index(BOOTSTRAP_INDEX);
    }
    let planned = plan.to_index - plan.backup.applied_index;
    let mut replayed = 0u64;
    progress(0, planned);
    'chunks: for c in &plan.chunks {
        let archive = archive.expect("a plan with chunks has an archive");
        let bytes = archive.get(&c.name)?;
        let damaged = |why: String| RestoreError::Damaged {
            object: c.name.clone(),
            why,
        };
        let (header, entries) =
            chunk::decode(&c.name, &bytes).map_err(|e| damaged(e.to_string()))?;
        if header.cluster_id != plan.backup.cluster_id {
            return Err(damaged(format!(
                "a chunk of cluster {}, the backup is of cluster {}",
                header.cluster_id, plan.backup.cluster_id
            )));
        }
        for entry in &entries {
            if entry.index > plan.to_index {
                break 'chunks;
            }
            if entry.index <= StateMachine::applied_index(&store) {
                continue;
            }
            match replay_entry(&mut store, entry, plan.until).map_err(|e| damaged(e.to_string()))? {
                Replayed::Whole => {}
                Replayed::StoppedBefore { .. } => break 'chunks,
            }
            replayed += 1;
            // Bounded memory for any length of archive: the store checkpoints in the background
            // as a node does.
            if store.memtable_transfers() >= bulwark_limits::DEFAULT_CHECKPOINT_TRANSFERS {
                store.start_checkpoint();
            }
        }
        store.poll_checkpoint()?;
        progress(replayed, planned);
    }
    let applied = StateMachine::applied_index(&store);
    let time = StateMachine::last_timestamp(&store);
    store.record_audit(AuditRecord {
        // After the last event's time: an audit record is keyed by (time, index), and the
        // entry at `applied` may have one of its own at that time.
        timestamp: Timestamp(time.0 + 1),
        index: applied,
        actor: None,
        event: AuditEvent::Restored {
            details: format!(
                "restored from backup {} of cluster {} (index {}) and {} archived entries: the ledger as of index {applied}, time {}",
                plan.backup.name,
                plan.backup.cluster_id,
                plan.backup.applied_index,
                replayed,
                crate::format_time(time.0)
            ),
        },
        result: ControlResult::Ok,
    });
    store.checkpoint_now()?;
    assert_eq!(
        store.checkpointed_index(),
        StateMachine::applied_index(&store),
        "a restored state is durable before the node is made"
    );
    let restored = Restored {
        applied_index: StateMachine::applied_index(&store),
        last_timestamp: StateMachine::last_timestamp(&store).0,
        entries_replayed: replayed,
    };
    Ok((store, restored))
}
