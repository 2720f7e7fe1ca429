//! A restored state made the first node of a new cluster: a configuration of one voter, node
//! one, written into the state; a Raft log that starts at the state's index; and, last, the
//! identity with a new cluster id, so the directory can never join the cluster it came from.
//! The identity is the restore's commit point: a directory without one is a restore that did
//! not finish, which `prepare_directory` clears for a rerun.

use std::path::{Path, PathBuf};

use bulwark_consensus::storage::{DiskRaftStorage, RaftStorage};
use bulwark_ledger::StateMachine;
use bulwark_store::StateStore;
use raft::eraftpb::{ConfState, SnapshotMetadata};

use crate::identity::{Identity, IDENTITY_FILE, LAYOUT_VERSION};

/// The node id of a restored cluster's first node.
pub const RESTORED_NODE_ID: u64 = 1;

#[derive(Debug, thiserror::Error)]
pub enum RestoreDirError {
    #[error("{} already holds a node (it has an identity file): restore into a new directory", dir.display())]
    HoldsNode { dir: PathBuf },
    #[error("{} holds {name}, which a restore does not make: restore into an empty directory", dir.display())]
    Foreign { dir: PathBuf, name: String },
    #[error("{what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the Raft log in {}: {source}", dir.display())]
    Log {
        dir: PathBuf,
        source: bulwark_consensus::storage::StorageError,
    },
    #[error(transparent)]
    Store(#[from] bulwark_store::StoreError),
    #[error(transparent)]
    Identity(#[from] crate::identity::IdentityError),
}

/// Makes `dir` ready for a restore: created if missing; what an interrupted restore left removed;
/// refused if it holds a node or anything a restore does not make.
pub fn prepare_directory(dir: &Path) -> Result<(), RestoreDirError> {
    let io = |what, path: &Path| {
        let path = path.to_path_buf();
        move |source| RestoreDirError::Io { what, path, source }
    };
    bulwark_fs::create_dir_all_durably(dir).map_err(|e| io("create", dir)(e.into()))?;
    if dir.join(IDENTITY_FILE).exists() {
        return Err(RestoreDirError::HoldsNode { dir: dir.into() });
    }
    let ours = |name: &str| name == "raft" || name.starts_with("state.redb");
    for entry in std::fs::read_dir(dir).map_err(io("read", dir))? {
        let entry = entry.map_err(io("read", dir))?;
        let name = entry.file_name().to_string_lossy().to_string();
        if !ours(&name) {
            return Err(RestoreDirError::Foreign {
                dir: dir.into(),
                name,
            });
        }
    }
    for entry in std::fs::read_dir(dir).map_err(io("read", dir))? {
        let path = entry.map_err(io("read", dir))?.path();
        let removed = if path.is_dir() {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        removed.map_err(io("remove", &path))?;
    }
    bulwark_fs::fsync_dir(dir).map_err(|e| io("fsync", dir)(e.into()))
}

/// Turns a restored, checkpointed state in `dir` into node 1 of a new cluster `cluster_id`.
pub fn make_node(
    dir: &Path,
    store: &mut StateStore,
    cluster_id: u64,
    created_at: u64,
) -> Result<Identity, RestoreDirError> {
    let conf = ConfState::from((vec![RESTORED_NODE_ID], vec![]));
    let encoded = protobuf::Message::write_to_bytes(&conf).expect("a ConfState encodes");
    store.replace_membership(encoded)?;
    let raft_dir = dir.join("raft");
    let log = |source| RestoreDirError::Log {
        dir: raft_dir.clone(),
        source,
    };
    let (mut storage, _) =
        DiskRaftStorage::open(&raft_dir, bulwark_limits::DEFAULT_SEGMENT_BYTES).map_err(log)?;
    let mut meta = SnapshotMetadata {
        index: store.applied_index(),
        term: store.applied_term().max(1),
        ..Default::default()
    };
    meta.set_conf_state(conf);
    storage.install_snapshot(&meta).map_err(log)?;
    drop(storage);
    let identity = Identity {
        cluster_id,
        node_id: RESTORED_NODE_ID,
        layout: LAYOUT_VERSION,
        created_at,
    };
    identity.save(dir)?;
    Ok(identity)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_interrupted_restore_is_cleared_and_a_node_or_a_stranger_is_refused() {
        let root = tempfile::tempdir().unwrap();
        // What an interrupted restore leaves: a state file, its import's side file, a log.
        let dir = root.path().join("restored");
        std::fs::create_dir_all(dir.join("raft")).unwrap();
        std::fs::write(dir.join("state.redb"), b"half").unwrap();
        std::fs::write(dir.join("state.redb.incoming"), b"half").unwrap();
        std::fs::write(dir.join("raft/00000000000000000002.wal"), b"x").unwrap();
        prepare_directory(&dir).unwrap();
        assert_eq!(
            std::fs::read_dir(&dir).unwrap().count(),
            0,
            "cleared for the rerun"
        );
        // A finished restore (or any node) has an identity: never cleared.
        std::fs::write(dir.join(IDENTITY_FILE), b"node").unwrap();
        assert!(matches!(
            prepare_directory(&dir),
            Err(RestoreDirError::HoldsNode { .. })
        ));
        assert!(dir.join(IDENTITY_FILE).exists());
        // Anything a restore does not make: refused, and left as it was.
        let other = root.path().join("other");
        std::fs::create_dir_all(&other).unwrap();
        std::fs::write(other.join("state.redb"), b"x").unwrap();
        std::fs::write(other.join("notes.txt"), b"mine").unwrap();
        let refused = prepare_directory(&other).unwrap_err();
        assert!(
            matches!(&refused, RestoreDirError::Foreign { name, .. } if name == "notes.txt"),
            "{refused}"
        );
        assert!(other.join("state.redb").exists() && other.join("notes.txt").exists());
        // A directory that does not exist yet is made.
        prepare_directory(&root.path().join("new")).unwrap();
        assert!(root.path().join("new").is_dir());
    }
}
