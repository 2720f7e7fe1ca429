//! Who is in the cluster: members as configured, the membership changes an operator asks for,
//! the address book on disk, and what a snapshot offer tells a follower about the members.

use std::net::IpAddr;

pub use bulwark_transport::HostPort;
use std::time::Duration;

/// One member of the cluster as configured at start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    pub id: u64,
    /// Where its peer transport is reached: an IP, or a DNS name resolved at every connect.
    pub peer_addr: HostPort,
    /// Where its HTTP API is reached (what `/v1/status` tells clients).
    pub http_addr: HostPort,
}

#[derive(Clone, Debug)]
pub struct ClusterConfig {
    pub node_id: u64,
    pub cluster_id: u64,
    pub members: Vec<Member>,
    /// One Raft tick. Elections start after 10–20 ticks without a leader; heartbeats every 2.
    pub tick: Duration,
    /// Joining an existing cluster: `members` is only an address book, and this node waits to
    /// be added (as a learner) instead of bootstrapping a configuration of its own.
    pub join: bool,
    /// The local IP this node's connections to other members come from (the IP it listens on;
    /// `None` lets the OS pick): the snapshot fetch here, the API's forwarding client, and the
    /// peer transport (configured by whoever starts it). Whoever sits between the nodes — a
    /// firewall, or `bulwark chaos`'s proxy — can then tell which node a connection comes from.
    pub source_ip: Option<IpAddr>,
    /// Internal HTTP to the other members (mutual TLS on their peer ports), where a snapshot
    /// is downloaded from; `None`: no snapshot can be fetched (a node that never has peers).
    pub peer_http: Option<bulwark_transport::PeerHttpClient>,
}

/// A configuration a cluster cannot run safely on.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error(transparent)]
    VoterCount(#[from] VoterCountError),
    #[error("node id {node_id} is not among the members")]
    NotAMember { node_id: u64 },
    #[error("member ids must be distinct and not 0")]
    DuplicateOrZeroIds,
}

/// A `--member` value or address book line that is not `ID=PEER_ADDR=HTTP_ADDR`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MemberSpecError {
    #[error("`{text}`: expected ID=PEER_ADDR=HTTP_ADDR")]
    Shape { text: String },
    #[error("`{id}` in `{text}` is not a node id")]
    NodeId { id: String, text: String },
    #[error(
        "`{addr}` in `{text}` is not an address like 127.0.0.1:7170 or bulwark-0.bulwark:7170"
    )]
    PeerAddr { addr: String, text: String },
    #[error(
        "`{addr}` in `{text}` is not an address like 127.0.0.1:7070 or bulwark-0.bulwark:7070"
    )]
    HttpAddr { addr: String, text: String },
}

/// The address book could not be read.
#[derive(Debug, thiserror::Error)]
pub enum AddressBookError {
    #[error("read {}: {source}", path.display())]
    Read {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {source}", path.display())]
    BadLine {
        path: std::path::PathBuf,
        source: MemberSpecError,
    },
}

impl ClusterConfig {
    /// Refuses configurations a cluster cannot run safely on.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let voters = self.members.len();
        if !self.join {
            check_voter_count(voters)?;
        }
        if !self.members.iter().any(|m| m.id == self.node_id) {
            return Err(ConfigError::NotAMember {
                node_id: self.node_id,
            });
        }
        let mut ids: Vec<u64> = self.members.iter().map(|m| m.id).collect();
        ids.sort_unstable();
        ids.dedup();
        if ids.len() != voters || ids.contains(&0) {
            return Err(ConfigError::DuplicateOrZeroIds);
        }
        Ok(())
    }

    pub fn member(&self, id: u64) -> Option<&Member> {
        self.members.iter().find(|m| m.id == id)
    }
}

/// A configuration must have an odd number of voters, at most 7 (the rule lives with the
/// membership checks it serves).
pub use bulwark_consensus::membership::{check_voter_count, VoterCountError};

impl Member {
    /// The `ID=PEER_ADDR=HTTP_ADDR` form of the command line and the address book file.
    pub fn to_spec(&self) -> String {
        format!("{}={}={}", self.id, self.peer_addr, self.http_addr)
    }

    pub fn parse_spec(text: &str) -> Result<Member, MemberSpecError> {
        let parts: Vec<&str> = text.trim().split('=').collect();
        let [id, peer, http] = parts.as_slice() else {
            return Err(MemberSpecError::Shape { text: text.into() });
        };
        Ok(Member {
            id: id.parse().map_err(|_| MemberSpecError::NodeId {
                id: (*id).into(),
                text: text.into(),
            })?,
            peer_addr: peer.parse().map_err(|_| MemberSpecError::PeerAddr {
                addr: (*peer).into(),
                text: text.into(),
            })?,
            http_addr: http.parse().map_err(|_| MemberSpecError::HttpAddr {
                addr: (*http).into(),
                text: text.into(),
            })?,
        })
    }
}

/// A change of membership asked for by an operator.
#[derive(Clone, Debug)]
pub enum MembershipChange {
    /// Add a node as a learner: it receives the log but does not vote.
    AddLearner(Member),
    /// Make learners voters (several at once go through joint consensus).
    Promote(Vec<u64>),
    /// Remove members (voters or learners).
    Remove(Vec<u64>),
}

/// The address book file: one `ID=PEER_ADDR=HTTP_ADDR` line per known member, replaced
/// crash-safely whenever membership changes, read at start in place of the `--member` flags.
const MEMBERS_FILE: &str = "members";

/// The address book of `data_dir`; `None` if it has none yet.
pub fn load_members(data_dir: &std::path::Path) -> Result<Option<Vec<Member>>, AddressBookError> {
    let path = data_dir.join(MEMBERS_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(AddressBookError::Read { path, source }),
    };
    let mut members = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        match Member::parse_spec(line) {
            Ok(member) => members.push(member),
            Err(source) => return Err(AddressBookError::BadLine { path, source }),
        }
    }
    Ok(Some(members))
}

pub(super) fn save_members(data_dir: &std::path::Path, members: &[Member]) -> std::io::Result<()> {
    let text: String = members
        .iter()
        .map(|m| format!("{}\n", m.to_spec()))
        .collect();
    bulwark_fs::write_file_atomically(&data_dir.join(MEMBERS_FILE), text.as_bytes())?;
    Ok(())
}

/// What a snapshot offer carries besides Raft's metadata: the id of the node to fetch the state
/// from, then the address book (`ID=PEER_ADDR=HTTP_ADDR` lines), so that a node catching up by
/// snapshot learns the members whose addition the snapshot covers.
pub(super) fn snapshot_data(cluster: &ClusterConfig) -> Vec<u8> {
    let mut data = cluster.node_id.to_le_bytes().to_vec();
    for m in &cluster.members {
        data.extend_from_slice(m.to_spec().as_bytes());
        data.push(b'\n');
    }
    data
}

pub(super) fn snapshot_members(data: &[u8]) -> Vec<Member> {
    let text = std::str::from_utf8(data.get(8..).unwrap_or_default()).unwrap_or_default();
    text.lines()
        .filter_map(|line| Member::parse_spec(line).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An address book written before names were allowed (IPs only) reads as it did, and one
    /// with names reads back what was saved: the format is the same text, line by line.
    #[test]
    fn address_books_with_ips_and_names_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let old = "1=127.0.0.1:7170=127.0.0.1:7070\n2=[::1]:7171=[::1]:7071\n";
        std::fs::write(dir.path().join(MEMBERS_FILE), old).unwrap();
        let members = load_members(dir.path()).unwrap().unwrap();
        assert_eq!(
            members[0].peer_addr,
            HostPort::Ip("127.0.0.1:7170".parse().unwrap())
        );
        let saved: String = members.iter().map(|m| m.to_spec() + "\n").collect();
        assert_eq!(saved, old);

        let named = [
            Member::parse_spec("1=bulwark-0.bulwark.prod.svc.cluster.local:7170=bulwark-0.bulwark.prod.svc.cluster.local:7070").unwrap(),
            Member::parse_spec("2=node2:7170=10.0.0.2:7070").unwrap(),
        ];
        save_members(dir.path(), &named).unwrap();
        assert_eq!(load_members(dir.path()).unwrap().unwrap(), named);
        assert_eq!(
            named[1].peer_addr,
            HostPort::Name {
                host: "node2".into(),
                port: 7170
            }
        );
        let data = snapshot_data(&ClusterConfig {
            node_id: 1,
            cluster_id: 1,
            members: named.to_vec(),
            tick: Duration::from_millis(100),
            join: false,
            source_ip: None,
            peer_http: None,
        });
        assert_eq!(snapshot_members(&data), named);
    }

    #[test]
    fn refuses_member_addresses_that_are_neither_ip_nor_name() {
        assert!(matches!(
            Member::parse_spec("1=node_1:7170=10.0.0.1:7070"),
            Err(MemberSpecError::PeerAddr { .. })
        ));
        assert!(matches!(
            Member::parse_spec("1=node1:7170=node1"),
            Err(MemberSpecError::HttpAddr { .. })
        ));
    }
}
