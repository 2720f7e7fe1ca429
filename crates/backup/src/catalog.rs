//! What a target holds: its backups (by manifest) and, per cluster, the archive's chunks and
//! whether they chain without a gap.

use crate::chunk;
use crate::manifest::{Manifest, BACKUPS_PREFIX, MANIFEST_FILE};
use crate::target::{Target, TargetError};

/// A backup directory found in a target.
#[derive(Debug)]
pub enum FoundBackup {
    Complete(Manifest),
    /// A directory without a manifest (a backup interrupted before it finished), or whose
    /// manifest does not read: never restored from. `object`: what is wrong (the manifest, or
    /// the directory that lacks one).
    Unusable {
        name: String,
        object: String,
        why: String,
    },
}

/// Every backup in the target, oldest first (names sort by creation time).
pub fn backups(target: &dyn Target) -> Result<Vec<FoundBackup>, TargetError> {
    let listed = target.list(BACKUPS_PREFIX)?;
    let mut names: Vec<String> = listed
        .iter()
        .filter_map(|l| l.name.strip_prefix(BACKUPS_PREFIX))
        .filter_map(|rest| rest.split_once('/').map(|(dir, _)| dir.to_string()))
        .collect();
    names.dedup();
    let mut found = Vec::new();
    for name in names {
        let object = Manifest::object(&name, MANIFEST_FILE);
        if !listed.iter().any(|l| l.name == object) {
            found.push(FoundBackup::Unusable {
                object: format!("{BACKUPS_PREFIX}{name}/"),
                name,
                why: "no manifest: the backup did not finish".into(),
            });
            continue;
        }
        let bytes = target.get(&object)?;
        found.push(match Manifest::decode(&bytes) {
            Ok(m) if m.name == name => FoundBackup::Complete(m),
            Ok(m) => FoundBackup::Unusable {
                name,
                object,
                why: format!("it names backup {}", m.name),
            },
            Err(e) => FoundBackup::Unusable {
                name,
                object,
                why: e.to_string(),
            },
        });
    }
    Ok(found)
}

/// One chunk the archive listing shows (not yet read or checked).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChunkRef {
    pub name: String,
    pub first: u64,
    pub last: u64,
    pub bytes: u64,
}

/// The archive of one cluster as listed: its chunks by first index, what they cover without a
/// gap from the earliest, and the first gap if there is one.
#[derive(Clone, Debug, Default)]
pub struct ArchiveListing {
    pub chunks: Vec<ChunkRef>,
    /// Names under the cluster's prefix that are not a chunk's.
    pub strays: Vec<String>,
}

impl ArchiveListing {
    pub fn read(target: &dyn Target, cluster_id: u64) -> Result<ArchiveListing, TargetError> {
        let mut listing = ArchiveListing::default();
        for l in target.list(&chunk::cluster_prefix(cluster_id))? {
            match chunk::parse_name(&l.name) {
                Some((c, first, last)) if c == cluster_id && first <= last => {
                    listing.chunks.push(ChunkRef {
                        name: l.name,
                        first,
                        last,
                        bytes: l.bytes,
                    })
                }
                _ => listing.strays.push(l.name),
            }
        }
        listing.chunks.sort_by_key(|c| (c.first, c.last));
        Ok(listing)
    }

    /// The last index the archive holds without a gap from `after + 1` (`after` itself when the
    /// archive holds nothing right after it), and the first gap past it if chunks resume later.
    pub fn covered_from(&self, after: u64) -> (u64, Option<(u64, u64)>) {
        let mut end = after;
        for c in &self.chunks {
            if c.last <= end {
                continue;
            }
            if c.first > end + 1 {
                return (end, Some((end + 1, c.first - 1)));
            }
            end = c.last;
        }
        (end, None)
    }

    /// Every gap between the chunks: the missing entries and the chunk that follows them.
    pub fn gaps(&self) -> Vec<(u64, u64, &ChunkRef)> {
        let mut gaps = Vec::new();
        let mut end: Option<u64> = None;
        for c in &self.chunks {
            if let Some(end) = end.filter(|end| c.first > end + 1) {
                gaps.push((end + 1, c.first - 1, c));
            }
            end = Some(end.map_or(c.last, |e| e.max(c.last)));
        }
        gaps
    }

    /// The chunks needed to go from `after` to `to` (inclusive), in order.
    pub fn needed(&self, after: u64, to: u64) -> Vec<ChunkRef> {
        let mut out = Vec::new();
        let mut end = after;
        for c in &self.chunks {
            if end >= to {
                break;
            }
            if c.last <= end || c.first > end + 1 {
                continue;
            }
            end = c.last;
            out.push(c.clone());
        }
        out
    }

    pub fn first_index(&self) -> Option<u64> {
        self.chunks.first().map(|c| c.first)
    }

    pub fn last_index(&self) -> Option<u64> {
        self.chunks.iter().map(|c| c.last).max()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listing(ranges: &[(u64, u64)]) -> ArchiveListing {
        ArchiveListing {
            chunks: ranges
                .iter()
                .map(|&(first, last)| ChunkRef {
                    name: chunk::chunk_name(1, first, last),
                    first,
                    last,
                    bytes: 0,
                })
                .collect(),
            strays: vec![],
        }
    }

    #[test]
    fn coverage_follows_chunks_and_stops_at_a_gap() {
        // Overlapping chunks (two archivers after a failover) chain; a hole does not.
        let l = listing(&[(2, 10), (8, 20), (21, 30), (35, 40)]);
        assert_eq!(l.covered_from(1), (30, Some((31, 34))));
        assert_eq!(l.covered_from(36), (40, None));
        assert_eq!(l.covered_from(0), (0, Some((1, 1))));
        let gaps: Vec<_> = l.gaps().iter().map(|(a, b, c)| (*a, *b, c.first)).collect();
        assert_eq!(gaps, [(31, 34, 35)]);
        let names: Vec<_> = l.needed(9, 25).iter().map(|c| c.first).collect();
        assert_eq!(names, vec![2, 8, 21]);
    }
}
