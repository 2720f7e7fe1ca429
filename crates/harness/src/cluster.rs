//! Members of a local cluster (`--member` values) and a local cluster of N of them.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::ports::{free_addrs, free_port_range};
use crate::process::{Logs, NodeProcess};
use crate::status::{StatusClient, View};

const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// One member as the others know it: its id, peer address and HTTP address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    pub id: u64,
    pub peer: SocketAddr,
    pub http: SocketAddr,
}

impl Member {
    /// The `--member` value: `ID=PEER_ADDR=HTTP_ADDR`.
    pub fn arg(&self) -> String {
        format!("{}={}={}", self.id, self.peer, self.http)
    }

    pub fn peer_port(&self) -> u16 {
        self.peer.port()
    }

    pub fn http_port(&self) -> u16 {
        self.http.port()
    }
}

/// Members `1..=n` on 127.0.0.1: member i on `peer_ports[i - 1]` and `http_ports[i - 1]`.
pub fn members(peer_ports: &[u16], http_ports: &[u16]) -> Vec<Member> {
    peer_ports
        .iter()
        .zip(http_ports)
        .zip(1..)
        .map(|((&peer, &http), id)| Member {
            id,
            peer: SocketAddr::new(LOCALHOST, peer),
            http: SocketAddr::new(LOCALHOST, http),
        })
        .collect()
}

/// `count` ports from `base` on, or (no `base`) `count` free ones.
pub fn ports_from(base: Option<u16>, count: usize) -> Result<Vec<u16>, String> {
    match base {
        Some(base) => (0..count)
            .map(|i| {
                u16::try_from(i)
                    .ok()
                    .and_then(|i| base.checked_add(i))
                    .ok_or_else(|| format!("port {base} + {i} is out of range"))
            })
            .collect(),
        None => free_addrs(LOCALHOST, count)
            .map(|addrs| addrs.iter().map(SocketAddr::port).collect())
            .map_err(|e| format!("cannot find a free port: {e}")),
    }
}

/// `n` members with ids `1..=n` on one range of free consecutive ports: the peer ports first,
/// then the HTTP ports.
pub fn free_members(n: u64) -> std::io::Result<Vec<Member>> {
    let n16 = u16::try_from(n).expect("a small cluster");
    let base = free_port_range(2 * n16)?;
    let peers: Vec<u16> = (base..base + n16).collect();
    let https: Vec<u16> = (base + n16..base + 2 * n16).collect();
    Ok(members(&peers, &https))
}

/// The `bulwark start` options of member `id` of `members`: `--node-id` and every `--member`.
pub fn member_args(id: u64, members: &[Member]) -> Vec<String> {
    let mut args = vec!["--node-id".to_string(), id.to_string()];
    for m in members {
        args.push("--member".into());
        args.push(m.arg());
    }
    args
}

/// A cluster of `bulwark start` processes on this machine: member i lives in `ROOT/node-i` and
/// logs to `ROOT/node-i/node.log` (appended to by every run).
pub struct LocalCluster {
    pub members: Vec<Member>,
    /// One process per member, in the order of `members`.
    pub nodes: Vec<NodeProcess>,
    pub root: PathBuf,
    /// The cluster's first admin token (`ROOT/admin.token`), given to every member.
    pub token: String,
    /// The temporary directory holding `root`, removed on drop (after the nodes are killed).
    _temp: Option<tempfile::TempDir>,
}

impl LocalCluster {
    /// Prepares (does not start) `members` on `bin`, each with `--node-id`, every `--member` and
    /// `extra`; creates their data directories under `root`, or under a new temporary directory
    /// (removed on drop) if `root` is `None`.
    pub fn new(
        bin: &Path,
        root: Option<PathBuf>,
        members: Vec<Member>,
        extra: &[String],
    ) -> Result<LocalCluster, String> {
        let (root, temp) = match root {
            Some(root) => (root, None),
            None => {
                let temp = tempfile::Builder::new()
                    .prefix("bulwark-cluster-")
                    .tempdir()
                    .map_err(|e| format!("cannot create a temporary directory: {e}"))?;
                (temp.path().to_path_buf(), Some(temp))
            }
        };
        let (token_path, token) = crate::token::admin_token(&root)
            .map_err(|e| format!("cannot make the admin token: {e}"))?;
        let mut nodes = Vec::with_capacity(members.len());
        for m in &members {
            let dir = root.join(format!("node-{}", m.id));
            std::fs::create_dir_all(&dir)
                .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
            let mut args = member_args(m.id, &members);
            args.extend(extra.iter().cloned());
            let logs = Logs::append(dir.join("node.log"));
            let node = NodeProcess::new(bin, dir, args, logs)
                .with_cluster_ca(root.join("ca"))
                .with_admin_token(&token_path);
            nodes.push(node);
        }
        Ok(LocalCluster {
            members,
            nodes,
            root,
            token,
            _temp: temp,
        })
    }

    /// Every node is killed by the kernel if the thread that started it ends (Linux).
    pub fn killed_with_parent(mut self) -> LocalCluster {
        self.nodes = self
            .nodes
            .into_iter()
            .map(NodeProcess::killed_with_parent)
            .collect();
        self
    }

    /// Starts every node that is not running, without waiting for any.
    pub fn spawn_all(&mut self) -> Result<(), String> {
        for i in 0..self.nodes.len() {
            if !self.nodes[i].is_running() {
                self.spawn(i)?;
            }
        }
        Ok(())
    }

    /// Starts node `index` (again) on its data directory.
    pub fn spawn(&mut self, index: usize) -> Result<(), String> {
        self.nodes[index]
            .spawn()
            .map_err(|e| format!("cannot start node {}: {e}", self.members[index].id))
    }

    /// The position of member `id`.
    pub fn index_of(&self, id: u64) -> Option<usize> {
        self.members.iter().position(|m| m.id == id)
    }

    /// An error, with the end of its log, if a node that should run has exited.
    pub fn check_alive(&mut self) -> Result<(), String> {
        for (node, m) in self.nodes.iter_mut().zip(&self.members) {
            if let Some(status) = node.exited() {
                return Err(format!(
                    "node {} exited on its own ({status}); its log ends with:\n{}",
                    m.id,
                    node.log_tail(10)
                ));
            }
        }
        Ok(())
    }

    /// Every member's status (`None` for one that is not running or did not answer).
    pub async fn view(&self, client: &StatusClient) -> View {
        let nodes = self.members.iter().zip(&self.nodes).map(|(m, n)| {
            let ask = n.is_running() && !n.is_paused();
            (m.id, ask.then_some(m.http))
        });
        client.view(nodes).await
    }

    /// Waits up to `limit` until every member answers, all agree on a leader and their applied
    /// indexes are at most `slack` apart; returns the leader. A node that dies meanwhile ends the
    /// wait.
    pub async fn wait_in_sync(
        &mut self,
        client: &StatusClient,
        slack: u64,
        limit: Duration,
    ) -> Result<u64, String> {
        let deadline = Instant::now() + limit;
        loop {
            self.check_alive()?;
            let last = match self.view(client).await.in_sync(slack) {
                Ok((leader, _)) => return Ok(leader),
                Err(why) => why,
            };
            if Instant::now() >= deadline {
                return Err(format!(
                    "the nodes did not agree in {} s: {last}",
                    limit.as_secs()
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGTERM to every node (each stops gracefully), then waits for all; returns the exit
    /// statuses of those that stopped, by member id.
    pub fn stop_all(&mut self) -> Vec<(u64, std::process::ExitStatus)> {
        for node in &mut self.nodes {
            node.send_sigterm();
        }
        let mut out = Vec::new();
        for (node, m) in self.nodes.iter_mut().zip(&self.members) {
            if let Some(status) = node.wait() {
                out.push((m.id, status));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_and_their_args() {
        let ms = members(
            &ports_from(Some(7170), 3).unwrap(),
            &ports_from(Some(7070), 3).unwrap(),
        );
        assert_eq!(ms[2].arg(), "3=127.0.0.1:7172=127.0.0.1:7072");
        let args = member_args(2, &ms);
        assert_eq!(args[..2], ["--node-id", "2"]);
        assert_eq!(args.iter().filter(|a| *a == "--member").count(), 3);
        assert!(ports_from(Some(65535), 2).is_err());
        let free = free_members(3).unwrap();
        assert_eq!(free[0].http_port(), free[0].peer_port() + 3);
    }
}
