//! A backup's manifest: what it holds and how to check it. Written last, after the state it
//! describes is stored whole, so a backup without one is incomplete and never restored from.
//! It carries its own checksum: a manifest edited by hand (or damaged) is refused.

use serde::{Deserialize, Serialize};

pub const MANIFEST_FORMAT: u32 = 1;
pub const MANIFEST_FILE: &str = "manifest.json";
pub const STATE_FILE: &str = "state.snap";
/// An incremental backup's state: the changes since its parent (`incremental.rs`).
pub const DIFF_FILE: &str = "state.diff";
pub const BACKUPS_PREFIX: &str = "backups/";

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    pub name: String,
    pub bytes: u64,
    pub crc32c: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    /// The backup's name: its directory under `backups/`.
    pub name: String,
    pub cluster_id: u64,
    /// The node the state was read from.
    pub source_node: u64,
    /// The state is the ledger as of this log index (a checkpoint of the source node).
    pub applied_index: u64,
    pub applied_term: u64,
    /// The ledger's time at `applied_index` (ns since the Unix epoch; 0: an empty ledger).
    pub last_timestamp: u64,
    pub created_at_ms: u64,
    pub files: Vec<FileEntry>,
    /// An incremental backup: the backup whose state it changes (absent: a full backup).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("not a manifest: {0}")]
    Parse(String),
    #[error("the manifest's checksum does not match its content: it was changed or damaged")]
    Checksum,
    #[error("manifest format {found}, this build reads {MANIFEST_FORMAT}")]
    Format { found: u32 },
}

#[derive(Serialize, Deserialize)]
struct Sealed {
    manifest: Manifest,
    crc32c: u32,
}

impl Manifest {
    /// Where a backup's objects live.
    pub fn object(backup: &str, file: &str) -> String {
        format!("{BACKUPS_PREFIX}{backup}/{file}")
    }

    pub fn encode(&self) -> Vec<u8> {
        let body = serde_json::to_vec(self).expect("a manifest serializes");
        let sealed = Sealed {
            manifest: self.clone(),
            crc32c: crc32c::crc32c(&body),
        };
        serde_json::to_vec_pretty(&sealed).expect("a manifest serializes")
    }

    pub fn decode(bytes: &[u8]) -> Result<Manifest, ManifestError> {
        let sealed: Sealed =
            serde_json::from_slice(bytes).map_err(|e| ManifestError::Parse(e.to_string()))?;
        let body = serde_json::to_vec(&sealed.manifest).expect("a manifest serializes");
        if crc32c::crc32c(&body) != sealed.crc32c {
            return Err(ManifestError::Checksum);
        }
        if sealed.manifest.format != MANIFEST_FORMAT {
            return Err(ManifestError::Format {
                found: sealed.manifest.format,
            });
        }
        Ok(sealed.manifest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_changed_manifest_is_refused() {
        let m = Manifest {
            format: MANIFEST_FORMAT,
            name: "b".into(),
            cluster_id: 1,
            source_node: 2,
            applied_index: 10,
            applied_term: 3,
            last_timestamp: 99,
            created_at_ms: 5,
            files: vec![],
            parent: None,
        };
        let bytes = m.encode();
        assert_eq!(Manifest::decode(&bytes).unwrap(), m);
        let text = String::from_utf8(bytes).unwrap();
        let lie = text.replace("\"applied_index\": 10", "\"applied_index\": 11");
        assert_ne!(lie, text);
        assert!(matches!(
            Manifest::decode(lie.as_bytes()),
            Err(ManifestError::Checksum)
        ));
    }
}
