//! `bulwark backup verify`: every check a restore makes, without making a node: each backup's
//! manifest, its files' sizes and checksums and the figures the manifest claims, each archive
//! chunk's checksums and the chain from the backups on; then a replay of the newest backup and
//! the whole archive into a scratch store. Each problem names the object it is in.

use std::path::Path;

use crate::catalog::{backups, ArchiveListing, FoundBackup};
use crate::chunk;
use crate::incremental::{Change, DiffReader};
use crate::manifest::{Manifest, DIFF_FILE, STATE_FILE};
use crate::restore::{build_state, plan, RestoreTo};
use crate::target::{Target, TargetError};

/// One problem found: the object and what is wrong with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub object: String,
    pub what: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.object, self.what)
    }
}

/// What a verification found.
#[derive(Debug, Default)]
pub struct Report {
    pub backups_checked: usize,
    pub chunks_checked: usize,
    /// The restorable range: (first index, last index) from the oldest backup to the archive's
    /// end without a gap.
    pub restorable: Option<(u64, u64)>,
    pub problems: Vec<Problem>,
}

/// Checks every backup (and, with `archive`, the archive of their clusters), replaying into a
/// scratch directory under `scratch`.
pub fn verify(
    target: &dyn Target,
    archive: Option<&dyn Target>,
    scratch: &Path,
) -> Result<Report, TargetError> {
    let mut report = Report::default();
    let mut clusters = Vec::new();
    let mut complete = Vec::new();
    for found in backups(target)? {
        let manifest = match found {
            FoundBackup::Complete(m) => m,
            FoundBackup::Unusable { object, why, .. } => {
                report.problems.push(Problem { object, what: why });
                continue;
            }
        };
        report.backups_checked += 1;
        check_backup(target, &manifest, &mut report.problems)?;
        complete.push(manifest.clone());
        if !clusters.contains(&manifest.cluster_id) {
            clusters.push(manifest.cluster_id);
        }
    }
    if report.backups_checked == 0 && report.problems.is_empty() {
        report.problems.push(Problem {
            object: target.describe(),
            what: "holds no backup".into(),
        });
    }
    if let Some(archive) = archive {
        for cluster in &clusters {
            check_archive(archive, *cluster, &mut report)?;
        }
        for backup in &complete {
            check_chain(archive, backup, &mut report.problems)?;
        }
    }
    if report.problems.is_empty() {
        replay(target, archive, scratch, &mut report);
    }
    Ok(report)
}

fn check_backup(
    target: &dyn Target,
    manifest: &Manifest,
    problems: &mut Vec<Problem>,
) -> Result<(), TargetError> {
    for file in &manifest.files {
        let object = Manifest::object(&manifest.name, &file.name);
        let mut reader = match target.open(&object) {
            Ok(r) => r,
            Err(TargetError::NotFound { .. }) => {
                problems.push(Problem {
                    object,
                    what: "missing".into(),
                });
                continue;
            }
            Err(e) => return Err(e),
        };
        let mut lie = |what: String| {
            problems.push(Problem {
                object: object.clone(),
                what,
            })
        };
        let summary = match file.name.as_str() {
            STATE_FILE => bulwark_store::snapshot::inspect(&mut reader)
                .map(|s| (s.bytes, s.crc32c, s.applied_index, s.last_timestamp))
                .map_err(|e| e.to_string()),
            // A ledger time the incremental does not change is its parent's.
            DIFF_FILE => inspect_diff(&mut reader, &object)
                .map(|(b, c, i, t)| (b, c, i, if t == 0 { manifest.last_timestamp } else { t })),
            _ => Err("a file this build does not know".to_string()),
        };
        match summary {
            Err(e) => lie(e),
            Ok((bytes, crc, index, time)) => {
                if (bytes, crc) != (file.bytes, file.crc32c) {
                    lie(format!(
                        "{bytes} bytes with CRC32C {crc:08x}; the manifest says {} bytes, {:08x}",
                        file.bytes, file.crc32c
                    ));
                }
                if (index, time) != (manifest.applied_index, manifest.last_timestamp) {
                    lie(format!(
                        "holds index {index} at time {time}; the manifest says index {} at time {}",
                        manifest.applied_index, manifest.last_timestamp
                    ));
                }
            }
        }
    }
    if manifest.parent.is_some() {
        if let Err(e) = crate::incremental::chain_of(target, manifest) {
            problems.push(Problem {
                object: e.object,
                what: e.why,
            });
        }
    }
    Ok(())
}

/// An incremental's changes read to the end: (bytes, CRC32C, applied index, ledger time).
fn inspect_diff(
    reader: &mut dyn std::io::Read,
    object: &str,
) -> Result<(u64, u32, u64, u64), String> {
    let mut counted = bulwark_store::snapshot::ChecksumReader::new(reader);
    let mut figures = bulwark_store::snapshot::MetaFigures::default();
    let mut diff = DiffReader::new(&mut counted, object).map_err(|e| e.why)?;
    for change in &mut diff {
        if let Change::Put(row) = change.map_err(|e| e.why)? {
            figures.note(&row);
        }
    }
    let index = diff.applied_index().expect("read to its trailer");
    drop(diff);
    Ok((counted.bytes, counted.crc, index, figures.last_timestamp))
}

fn check_archive(
    archive: &dyn Target,
    cluster: u64,
    report: &mut Report,
) -> Result<(), TargetError> {
    let listing = ArchiveListing::read(archive, cluster)?;
    for stray in &listing.strays {
        report.problems.push(Problem {
            object: stray.clone(),
            what: "not an archive chunk's name".into(),
        });
    }
    for (from, to, next) in listing.gaps() {
        report.problems.push(Problem {
            object: next.name.clone(),
            what: format!("a gap before it: entries {from}..={to} are missing"),
        });
    }
    for c in &listing.chunks {
        let bytes = archive.get(&c.name)?;
        report.chunks_checked += 1;
        match chunk::decode(&c.name, &bytes) {
            Ok((header, _)) if header.cluster_id != cluster => report.problems.push(Problem {
                object: c.name.clone(),
                what: format!("a chunk of cluster {}", header.cluster_id),
            }),
            Ok(_) => {}
            Err(e) => report.problems.push(Problem {
                object: c.name.clone(),
                what: e.to_string(),
            }),
        }
    }
    Ok(())
}

/// The archive must go on from a backup without a gap (or a restore from it reaches no later
/// than the backup itself).
fn check_chain(
    archive: &dyn Target,
    backup: &Manifest,
    problems: &mut Vec<Problem>,
) -> Result<(), TargetError> {
    let listing = ArchiveListing::read(archive, backup.cluster_id)?;
    let after = crate::restore::chain_start(backup);
    if let (_, Some((from, to))) = listing.covered_from(after) {
        problems.push(Problem {
            object: chunk::cluster_prefix(backup.cluster_id),
            what: format!(
                "entries {from}..={to} are missing: a restore from backup {} stops at index {}",
                backup.name,
                from - 1
            ),
        });
    }
    Ok(())
}

/// Replays the newest backup and the archive after it into a scratch store, as a restore would.
fn replay(target: &dyn Target, archive: Option<&dyn Target>, scratch: &Path, report: &mut Report) {
    let dir = scratch.join(format!("bulwark-verify-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let outcome = std::fs::create_dir_all(&dir)
        .map_err(|e| e.to_string())
        .and_then(|()| plan(target, archive, None, RestoreTo::End).map_err(|e| e.to_string()))
        .and_then(|p| {
            let first = p.backup.applied_index;
            build_state(target, archive, &p, &dir.join("state.redb"), &mut |_, _| {})
                .map(|(_, r)| (first, r.applied_index))
                .map_err(|e| e.to_string())
        });
    let _ = std::fs::remove_dir_all(&dir);
    match outcome {
        Ok(range) => report.restorable = Some(range),
        Err(what) => report.problems.push(Problem {
            object: "replay".into(),
            what,
        }),
    }
}
