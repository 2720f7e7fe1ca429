//! Retention: which backups and archive chunks a target may drop. Kept: the `keep_full` newest
//! full backups, every backup younger than `keep_within`, and every backup a kept incremental
//! follows; the archive from the oldest
//! kept backup on (per cluster), so that every kept restore point can still be rolled forward to
//! the archive's end. Dropped: older backups, chunks wholly before the oldest kept backup, and
//! backups that never finished (no manifest) once older than `keep_within`. A backup is
//! dropped manifest first, so a crash halfway leaves an unfinished backup, dropped next time.

use std::time::Duration;

use crate::catalog::{backups, ArchiveListing, FoundBackup};
use crate::manifest::{Manifest, BACKUPS_PREFIX};
use crate::target::{Target, TargetError};

/// What to keep.
#[derive(Clone, Copy, Debug)]
pub struct Retention {
    pub keep_full: usize,
    pub keep_within: Duration,
}

/// What a prune removes (or, dry, would remove).
#[derive(Debug, Default)]
pub struct PrunePlan {
    pub kept: Vec<String>,
    pub drop_backups: Vec<String>,
    /// Every object of the dropped backups, the manifest first.
    pub drop_objects: Vec<String>,
    pub drop_chunks: Vec<String>,
    /// Clusters whose archive is left alone: no backup of theirs is kept.
    pub untouched_clusters: Vec<u64>,
}

/// Parses `30s`, `15m`, `24h`, `7d`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = || format!("{text:?} is not a duration like 90s, 15m, 24h or 7d");
    let (number, unit) = text.split_at(text.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?);
    let n: u64 = number.parse().map_err(|_| bad())?;
    let seconds = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(bad()),
    };
    Ok(Duration::from_secs(n.checked_mul(seconds).ok_or_else(bad)?))
}

/// Decides what to drop, reading the targets but changing nothing.
pub fn plan_prune(
    target: &dyn Target,
    archive: Option<&dyn Target>,
    retention: Retention,
    now_ms: u64,
) -> Result<PrunePlan, TargetError> {
    let cutoff = now_ms.saturating_sub(retention.keep_within.as_millis() as u64);
    let mut complete = Vec::new();
    let mut plan = PrunePlan::default();
    for found in backups(target)? {
        match found {
            FoundBackup::Complete(m) => complete.push(m),
            FoundBackup::Unusable { name, .. } => {
                // Still being written, perhaps: only an old one is dropped.
                if created_ms(&name).is_some_and(|at| at < cutoff) {
                    plan.drop_backups.push(name);
                }
            }
        }
    }
    complete.sort_by_key(|m| std::cmp::Reverse((m.created_at_ms, m.applied_index)));
    // The N newest full backups, everything in the window, and every backup a kept
    // incremental follows.
    let mut keep: std::collections::BTreeSet<String> = complete
        .iter()
        .filter(|m| m.parent.is_none())
        .take(retention.keep_full)
        .chain(complete.iter().filter(|m| m.created_at_ms >= cutoff))
        .map(|m| m.name.clone())
        .collect();
    loop {
        let parents: Vec<String> = complete
            .iter()
            .filter(|m| keep.contains(&m.name))
            .filter_map(|m| m.parent.clone())
            .filter(|p| !keep.contains(p))
            .collect();
        if parents.is_empty() {
            break;
        }
        keep.extend(parents);
    }
    let (kept, dropped): (Vec<Manifest>, Vec<Manifest>) =
        complete.into_iter().partition(|m| keep.contains(&m.name));
    plan.kept = kept.iter().map(|m| m.name.clone()).collect();
    plan.drop_backups
        .extend(dropped.iter().map(|m| m.name.clone()));
    for name in &plan.drop_backups {
        let prefix = format!("{BACKUPS_PREFIX}{name}/");
        let mut objects: Vec<String> = target.list(&prefix)?.into_iter().map(|l| l.name).collect();
        // The manifest first: a backup without one is never restored from.
        objects.sort_by_key(|o| !o.ends_with(crate::manifest::MANIFEST_FILE));
        plan.drop_objects.extend(objects);
    }
    if let Some(archive) = archive {
        plan_chunks(archive, &kept, &dropped, &mut plan)?;
    }
    Ok(plan)
}

/// Chunks wholly before the oldest kept backup of their cluster.
fn plan_chunks(
    archive: &dyn Target,
    kept: &[Manifest],
    dropped: &[Manifest],
    plan: &mut PrunePlan,
) -> Result<(), TargetError> {
    let mut clusters: Vec<u64> = kept.iter().chain(dropped).map(|m| m.cluster_id).collect();
    clusters.sort_unstable();
    clusters.dedup();
    for cluster in clusters {
        let Some(oldest) = kept
            .iter()
            .filter(|m| m.cluster_id == cluster)
            .map(crate::restore::chain_start)
            .min()
        else {
            plan.untouched_clusters.push(cluster);
            continue;
        };
        let listing = ArchiveListing::read(archive, cluster)?;
        plan.drop_chunks.extend(
            listing
                .chunks
                .into_iter()
                .filter(|c| c.last <= oldest)
                .map(|c| c.name),
        );
    }
    Ok(())
}

/// Deletes what the plan drops: each backup's manifest before its other objects, then the
/// chunks.
pub fn apply_prune(
    target: &dyn Target,
    archive: Option<&dyn Target>,
    plan: &PrunePlan,
) -> Result<(), TargetError> {
    for object in &plan.drop_objects {
        target.delete(object)?;
    }
    if let Some(archive) = archive {
        for chunk in &plan.drop_chunks {
            archive.delete(chunk)?;
        }
    }
    Ok(())
}

/// When a backup was created, from its name (`<ms, 15 digits>-n<node>`).
fn created_ms(name: &str) -> Option<u64> {
    name.split('-').next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_with_their_unit() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert!(parse_duration("7").is_err());
        assert!(parse_duration("d").is_err());
        assert!(parse_duration("1w").is_err());
    }
}
