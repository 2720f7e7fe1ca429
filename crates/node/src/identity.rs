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

use crate::error::{Refusal, StartError};

/// The file's name inside the data directory.
pub const IDENTITY_FILE: &str = "identity";

/// Layout 1: the single-node engine's `wal/` beside `state.redb`, or a cluster member's `raft/`
/// without an identity file. Layout 2: every node is a Raft cluster member (`raft/`,
/// `state.redb`, `members`, `identity`).
pub const LAYOUT_VERSION: u64 = 2;

pub(crate) const HEADER: &str = "bulwark-identity 1";

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub cluster_id: u64,
    pub node_id: u64,
    pub layout: u64,
    /// Seconds since the Unix epoch when the directory was created (for operators).
    pub created_at: u64,
}

/// Why the text of an identity file is not a valid identity.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("too short: no checksum line")]
    NoChecksumLine,
    #[error("the last line is not `crc32c=<8 hex digits>`")]
    BadChecksumLine,
    #[error(
        "checksum mismatch (stored {stored:08x}, computed {computed:08x}): the file is damaged"
    )]
    ChecksumMismatch { stored: u32, computed: u32 },
    #[error("the first line is not `{HEADER}`")]
    BadHeader,
    #[error("missing `{name}`")]
    MissingField { name: &'static str },
    #[error("expected `{name}=<number>`, found `{line}`")]
    BadField { name: &'static str, line: String },
}

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("{}: {reason}", path.display())]
    Corrupt { path: PathBuf, reason: DecodeError },
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

    pub fn decode(text: &str) -> Result<Identity, DecodeError> {
        let (body, crc_line) = text
            .trim_end_matches('\n')
            .rsplit_once('\n')
            .ok_or(DecodeError::NoChecksumLine)?;
        let body = format!("{body}\n");
        let stored = crc_line
            .strip_prefix("crc32c=")
            .and_then(|hex| u32::from_str_radix(hex, 16).ok())
            .ok_or(DecodeError::BadChecksumLine)?;
        let computed = crc32c::crc32c(body.as_bytes());
        if stored != computed {
            return Err(DecodeError::ChecksumMismatch { stored, computed });
        }
        let mut lines = body.lines();
        if lines.next() != Some(HEADER) {
            return Err(DecodeError::BadHeader);
        }
        let mut field = |name: &'static str| -> Result<u64, DecodeError> {
            let line = lines.next().ok_or(DecodeError::MissingField { name })?;
            line.strip_prefix(name)
                .and_then(|rest| rest.strip_prefix('='))
                .and_then(|value| value.parse().ok())
                .ok_or_else(|| DecodeError::BadField {
                    name,
                    line: line.into(),
                })
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
pub fn resolve(data_dir: &Path, requested: &Requested) -> Result<(Identity, DirLock), StartError> {
    let io = |what: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |source| StartError::Io { what, path, source }
    };
    bulwark_fs::create_dir_all_durably(data_dir)
        .map_err(|e| io("create data directory", data_dir)(e.into()))?;
    let lock_path = data_dir.join(LOCK_FILE);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(io("open", &lock_path))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            return Err(Refusal::InUse {
                dir: data_dir.to_path_buf(),
            }
            .into())
        }
        Err(std::fs::TryLockError::Error(e)) => return Err(io("lock", &lock_path)(e)),
    }
    let lock = DirLock { _file: file };
    let found = Identity::load(data_dir)?;
    let contents = DirContents::scan(data_dir);
    let now_secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    match decide(data_dir, found, &contents, requested, now_secs)? {
        Decision::Create(identity) => {
            identity.save(data_dir)?;
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
) -> Result<Decision, Refusal> {
    let dir = dir.to_path_buf();
    let Some(identity) = found else {
        if contents.legacy_wal {
            return Err(Refusal::LegacyLayout { dir });
        }
        if contents.raft_log || contents.state {
            return Err(Refusal::NoIdentity { dir });
        }
        return Ok(Decision::Create(Identity {
            cluster_id: requested.cluster_id.unwrap_or(1),
            node_id: requested.node_id.unwrap_or(1),
            layout: LAYOUT_VERSION,
            created_at: now_secs,
        }));
    };
    if identity.layout != LAYOUT_VERSION {
        return Err(Refusal::UnknownLayout {
            dir,
            layout: identity.layout,
        });
    }
    if let Some(requested) = requested.node_id.filter(|id| *id != identity.node_id) {
        return Err(Refusal::NodeIdMismatch {
            dir,
            requested,
            owner: identity.node_id,
        });
    }
    if let Some(requested) = requested.cluster_id.filter(|id| *id != identity.cluster_id) {
        return Err(Refusal::ClusterIdMismatch {
            dir,
            requested,
            owner: identity.cluster_id,
        });
    }
    // Creation writes the identity first, then the Raft log, then the state store: a directory
    // with an identity and neither was interrupted while being created and is created again. One
    // whose state survived without its log lost the log.
    if !contents.raft_log && contents.state {
        return Err(Refusal::LostLog {
            dir,
            node_id: identity.node_id,
            cluster_id: identity.cluster_id,
        });
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
pub fn check_not_a_lost_voter(node_id: u64, views: &[PeerView]) -> Result<(), Refusal> {
    let bootstrap_index = 1;
    for view in views {
        if let Some(index) = view.match_index_of_us.filter(|i| *i > bootstrap_index) {
            return Err(Refusal::LostVoter {
                node_id,
                leader: view.member,
                index,
            });
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
        assert!(
            matches!(err, DecodeError::ChecksumMismatch { .. }),
            "{err:?}"
        );
        assert!(err.to_string().starts_with("checksum mismatch"), "{err}");
        assert_eq!(
            Identity::decode("bulwark-identity 1\n"),
            Err(DecodeError::NoChecksumLine)
        );
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
        assert_eq!(
            err,
            Refusal::NodeIdMismatch {
                dir: "d".into(),
                requested: 1,
                owner: 3
            }
        );
        assert_eq!(
            err.to_string(),
            "--node-id 1 but d belongs to node 3 (its `identity` file): start it as node 3, or \
             give this node a directory of its own"
        );
        let requested = Requested {
            node_id: None,
            cluster_id: Some(8),
        };
        let err = decide(Path::new("d"), Some(identity()), &existing(), &requested, 0).unwrap_err();
        assert_eq!(
            err.to_string(),
            "--cluster-id 8 but d belongs to cluster 7 (its `identity` file)"
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
        assert!(matches!(err, Refusal::LegacyLayout { .. }), "{err:?}");
        let err = err.to_string();
        assert!(err.contains("wal/") && err.contains("layout 1"), "{err}");
        let err = decide(Path::new("d"), None, &existing(), &none, 0).unwrap_err();
        assert!(err.to_string().contains("no `identity` file"), "{err}");
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
        assert!(
            matches!(err, Refusal::LostLog { node_id: 3, .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains("lost its log"), "{err}");
        let old = Identity {
            layout: 1,
            ..identity()
        };
        let err = decide(Path::new("d"), Some(old), &existing(), &none, 0).unwrap_err();
        assert_eq!(
            err.to_string(),
            "d has layout 1 but this Bulwark reads layout 2"
        );
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
        assert_eq!(
            err,
            Refusal::LostVoter {
                node_id: 3,
                leader: 1,
                index: 40
            }
        );
        let err = err.to_string();
        assert!(
            err.contains("node 3") && err.contains("up to index 40"),
            "{err}"
        );
    }
}
