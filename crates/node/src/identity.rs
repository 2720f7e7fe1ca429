//! Who a data directory belongs to: the node identity file, written once when the directory is
//! created and checked at every start.
//!
//! Without it a directory says nothing about itself: a cluster member's directory started as
//! something else, or a directory of an older layout, would be run as whatever the flags say and
//! fork history silently. The file is small text (so an operator can read it) ending in a CRC32C
//! line; it is written crash-safely (write-temp, fsync, rename, fsync-dir) before anything else
//! in the directory, so a directory without it never held acknowledged data of this layout.
//!
//! ```text
//! bulwark-identity 1
//! cluster_id=1
//! node_id=3
//! layout=2
//! created_at=1764590000
//! crc32c=1a2b3c4d
//! ```

use std::path::{Path, PathBuf};

/// The file's name inside the data directory.
pub const IDENTITY_FILE: &str = "identity";

/// Layout 1: the single-node engine's `wal/` beside `state.redb`, or a cluster member's `raft/`
/// without an identity file. Layout 2: every node is a Raft cluster member (`raft/`,
/// `state.redb`, `members`, `identity`).
pub const LAYOUT_VERSION: u64 = 2;

const HEADER: &str = "bulwark-identity 1";

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub cluster_id: u64,
    pub node_id: u64,
    pub layout: u64,
    /// Seconds since the Unix epoch when the directory was created (for operators).
    pub created_at: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("{}: {reason}", path.display())]
    Corrupt { path: PathBuf, reason: String },
    #[error("{what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
}

impl Identity {
    pub fn encode(&self) -> String {
        let body = format!(
            "{HEADER}\ncluster_id={}\nnode_id={}\nlayout={}\ncreated_at={}\n",
            self.cluster_id, self.node_id, self.layout, self.created_at
        );
        let crc = crc32c::crc32c(body.as_bytes());
        format!("{body}crc32c={crc:08x}\n")
    }

    pub fn decode(text: &str) -> Result<Identity, String> {
        let (body, crc_line) = text
            .trim_end_matches('\n')
            .rsplit_once('\n')
            .ok_or("too short: no checksum line")?;
        let body = format!("{body}\n");
        let stored = crc_line
            .strip_prefix("crc32c=")
            .and_then(|hex| u32::from_str_radix(hex, 16).ok())
            .ok_or("the last line is not `crc32c=<8 hex digits>`")?;
        let actual = crc32c::crc32c(body.as_bytes());
        if stored != actual {
            return Err(format!(
                "checksum mismatch (stored {stored:08x}, computed {actual:08x}): the file is damaged"
            ));
        }
        let mut lines = body.lines();
        if lines.next() != Some(HEADER) {
            return Err(format!("the first line is not `{HEADER}`"));
        }
        let mut field = |name: &str| -> Result<u64, String> {
            let line = lines.next().ok_or(format!("missing `{name}`"))?;
            line.strip_prefix(name)
                .and_then(|rest| rest.strip_prefix('='))
                .and_then(|value| value.parse().ok())
                .ok_or(format!("expected `{name}=<number>`, found `{line}`"))
        };
        Ok(Identity {
            cluster_id: field("cluster_id")?,
            node_id: field("node_id")?,
            layout: field("layout")?,
            created_at: field("created_at")?,
        })
    }

    /// Reads the identity of `data_dir`; `None` if it has none.
    pub fn load(data_dir: &Path) -> Result<Option<Identity>, IdentityError> {
        let path = data_dir.join(IDENTITY_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(IdentityError::Io {
                    what: "read",
                    path,
                    source,
                })
            }
        };
        Identity::decode(&text)
            .map(Some)
            .map_err(|reason| IdentityError::Corrupt { path, reason })
    }

    /// Writes the identity crash-safely: a crash leaves either no file or the whole one.
    pub fn save(&self, data_dir: &Path) -> Result<(), IdentityError> {
        let path = data_dir.join(IDENTITY_FILE);
        bulwark_fs::write_file_atomically(&path, self.encode().as_bytes()).map_err(|e| {
            IdentityError::Io {
                what: e.op,
                path: e.path,
                source: e.source,
            }
        })
    }
}

/// What a start asks for, from its flags.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Requested {
    /// `--node-id`, if given.
    pub node_id: Option<u64>,
    /// `--cluster-id`, if given.
    pub cluster_id: Option<u64>,
}

/// What is in the data directory besides the identity file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DirContents {
    /// `wal/`: the single-node layout of Bulwark before layout 2.
    pub legacy_wal: bool,
    /// `raft/`: a Raft log.
    pub raft_log: bool,
    /// `state.redb`: a state store.
    pub state: bool,
}

impl DirContents {
    pub fn scan(data_dir: &Path) -> DirContents {
        DirContents {
            legacy_wal: data_dir.join("wal").is_dir(),
            raft_log: data_dir.join("raft").join("hardstate").exists(),
            state: data_dir.join("state.redb").exists(),
        }
    }
}

/// The file whose exclusive lock says a process owns the data directory.
pub const LOCK_FILE: &str = "lock";

/// A started node's claim on its data directory: held (an exclusive `flock`) for as long as the
/// process lives, released by the kernel however it ends.
#[derive(Debug)]
pub struct DirLock {
    _file: std::fs::File,
}

/// Checks a start against its data directory (creating the directory and its identity file if it
/// is new) and returns whom the node is, with the directory locked: a second process on the same
/// directory is refused before it reads or writes anything else there.
pub fn resolve(data_dir: &Path, requested: &Requested) -> Result<(Identity, DirLock), String> {
    std::fs::create_dir_all(data_dir)
        .map_err(|e| format!("create data directory {}: {e}", data_dir.display()))?;
    let lock_path = data_dir.join(LOCK_FILE);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| format!("open {}: {e}", lock_path.display()))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            return Err(format!(
                "{} is in use by another running node (its `{LOCK_FILE}` file is locked)",
                data_dir.display()
            ))
        }
        Err(std::fs::TryLockError::Error(e)) => {
            return Err(format!("lock {}: {e}", lock_path.display()))
        }
    }
    let lock = DirLock { _file: file };
    let found = Identity::load(data_dir).map_err(|e| e.to_string())?;
    let contents = DirContents::scan(data_dir);
    let now_secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    match decide(data_dir, found, &contents, requested, now_secs)? {
        Decision::Create(identity) => {
            identity.save(data_dir).map_err(|e| e.to_string())?;
            tracing::info!(
                node_id = identity.node_id,
                cluster_id = identity.cluster_id,
                dir = %data_dir.display(),
                "created a new data directory"
            );
            Ok((identity, lock))
        }
        Decision::Resume(identity) => Ok((identity, lock)),
    }
}

/// The outcome of checking a start against its directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// A new directory: write this identity, then bootstrap.
    Create(Identity),
    /// The directory is this node's; go on with it.
    Resume(Identity),
}

/// Decides whether a start may use its directory, and as whom. Refusals name what the flags say
/// and what the directory holds, so that the operator can tell which one is wrong.
pub fn decide(
    dir: &Path,
    found: Option<Identity>,
    contents: &DirContents,
    requested: &Requested,
    now_secs: u64,
) -> Result<Decision, String> {
    let dir = dir.display();
    let Some(identity) = found else {
        if contents.legacy_wal {
            return Err(format!(
                "{dir} holds the single-node layout of an older Bulwark (a `wal/` directory, \
                 layout 1); this version runs every node as a Raft cluster (layout \
                 {LAYOUT_VERSION}) and cannot read it. Start on a new directory and load the \
                 accounts and transfers again"
            ));
        }
        if contents.raft_log || contents.state {
            return Err(format!(
                "{dir} holds a Raft log or a state store but no `{IDENTITY_FILE}` file: it was \
                 made by an older Bulwark (layout 1) or the file was deleted; refusing to guess \
                 whose data it is"
            ));
        }
        return Ok(Decision::Create(Identity {
            cluster_id: requested.cluster_id.unwrap_or(1),
            node_id: requested.node_id.unwrap_or(1),
            layout: LAYOUT_VERSION,
            created_at: now_secs,
        }));
    };
    if identity.layout != LAYOUT_VERSION {
        return Err(format!(
            "{dir} has layout {} but this Bulwark reads layout {LAYOUT_VERSION}",
            identity.layout
        ));
    }
    if let Some(id) = requested.node_id.filter(|id| *id != identity.node_id) {
        return Err(format!(
            "--node-id {id} but {dir} belongs to node {} (its `{IDENTITY_FILE}` file): start it \
             as node {}, or give this node a directory of its own",
            identity.node_id, identity.node_id
        ));
    }
    if let Some(id) = requested.cluster_id.filter(|id| *id != identity.cluster_id) {
        return Err(format!(
            "--cluster-id {id} but {dir} belongs to cluster {} (its `{IDENTITY_FILE}` file)",
            identity.cluster_id
        ));
    }
    // Creation writes the identity first, then the Raft log, then the state store: a directory
    // with an identity and neither was interrupted while being created and is created again. One
    // whose state survived without its log lost the log.
    if !contents.raft_log && contents.state {
        return Err(format!(
            "{dir} belongs to node {} of cluster {} but its Raft log (`raft/hardstate`) is \
             missing: the node lost its log and its vote, and must not rejoin as if it had them. \
             Remove it from the cluster and add it back with an empty directory \
             (docs/operations.md, \"Replacing a node\")",
            identity.node_id, identity.cluster_id
        ));
    }
    Ok(Decision::Resume(identity))
}

/// What one other member said of this node when asked at a first start: the log index it, as
/// leader, knows this node to hold (only a leader reports one).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerView {
    pub member: u64,
    pub match_index_of_us: Option<u64>,
}

/// A node starting on a directory without a Raft log, whose id a running cluster's leader knows
/// to have held log entries, lost its log and its vote (a wiped or replaced disk): coming back
/// as that voter could let two leaders win one term. Refused; the runbook says how to replace it.
/// A node that never held anything (a new cluster whose others started first) has no match index
/// beyond the bootstrap configuration, and goes on.
pub fn check_not_a_lost_voter(node_id: u64, views: &[PeerView]) -> Result<(), String> {
    let bootstrap_index = 1;
    for view in views {
        if let Some(index) = view.match_index_of_us.filter(|i| *i > bootstrap_index) {
            return Err(format!(
                "node {node_id} starts on an empty directory, but the cluster's leader (node {}) \
                 knows node {node_id} to hold its log up to index {index}: this node lost its log \
                 and its vote and must not come back as that voter. Remove it from the cluster \
                 and add a node with a new id (docs/operations.md, \"Replacing a node\")",
                view.member
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity() -> Identity {
        Identity {
            cluster_id: 7,
            node_id: 3,
            layout: LAYOUT_VERSION,
            created_at: 1_764_590_000,
        }
    }

    fn existing() -> DirContents {
        DirContents {
            legacy_wal: false,
            raft_log: true,
            state: true,
        }
    }

    #[test]
    fn an_identity_round_trips_and_a_flipped_byte_is_caught() {
        let text = identity().encode();
        assert_eq!(Identity::decode(&text), Ok(identity()));
        let damaged = text.replacen("node_id=3", "node_id=4", 1);
        let err = Identity::decode(&damaged).unwrap_err();
        assert!(err.contains("checksum mismatch"), "{err}");
        assert!(Identity::decode("bulwark-identity 1\n").is_err());
    }

    #[test]
    fn a_new_directory_takes_the_flags_or_node_1_of_cluster_1() {
        let requested = Requested {
            node_id: None,
            cluster_id: None,
        };
        let decided = decide(Path::new("d"), None, &DirContents::default(), &requested, 5);
        let Ok(Decision::Create(made)) = decided else {
            panic!("{decided:?}")
        };
        assert_eq!((made.node_id, made.cluster_id, made.created_at), (1, 1, 5));
    }

    #[test]
    fn contradicting_flags_are_refused_naming_both() {
        let requested = Requested {
            node_id: Some(1),
            cluster_id: None,
        };
        let err = decide(Path::new("d"), Some(identity()), &existing(), &requested, 0).unwrap_err();
        assert!(
            err.contains("--node-id 1") && err.contains("node 3"),
            "{err}"
        );
        let requested = Requested {
            node_id: None,
            cluster_id: Some(8),
        };
        let err = decide(Path::new("d"), Some(identity()), &existing(), &requested, 0).unwrap_err();
        assert!(
            err.contains("--cluster-id 8") && err.contains("cluster 7"),
            "{err}"
        );
    }

    #[test]
    fn older_layouts_and_lost_logs_are_refused() {
        let none = Requested {
            node_id: None,
            cluster_id: None,
        };
        let legacy = DirContents {
            legacy_wal: true,
            ..DirContents::default()
        };
        let err = decide(Path::new("d"), None, &legacy, &none, 0).unwrap_err();
        assert!(err.contains("wal/") && err.contains("layout 1"), "{err}");
        let err = decide(Path::new("d"), None, &existing(), &none, 0).unwrap_err();
        assert!(err.contains("no `identity` file"), "{err}");
        let lost = DirContents {
            raft_log: false,
            ..existing()
        };
        let interrupted = DirContents::default();
        assert_eq!(
            decide(Path::new("d"), Some(identity()), &interrupted, &none, 0),
            Ok(Decision::Resume(identity()))
        );
        let err = decide(Path::new("d"), Some(identity()), &lost, &none, 0).unwrap_err();
        assert!(err.contains("lost its log"), "{err}");
        let old = Identity {
            layout: 1,
            ..identity()
        };
        let err = decide(Path::new("d"), Some(old), &existing(), &none, 0).unwrap_err();
        assert!(err.contains("layout 1"), "{err}");
    }

    #[test]
    fn a_voter_the_leader_knows_to_hold_entries_is_refused_on_an_empty_directory() {
        let fresh = [PeerView {
            member: 1,
            match_index_of_us: Some(1),
        }];
        assert!(check_not_a_lost_voter(3, &fresh).is_ok());
        assert!(check_not_a_lost_voter(3, &[]).is_ok());
        let lost = [PeerView {
            member: 1,
            match_index_of_us: Some(40),
        }];
        let err = check_not_a_lost_voter(3, &lost).unwrap_err();
        assert!(
            err.contains("node 3") && err.contains("up to index 40"),
            "{err}"
        );
    }
}
