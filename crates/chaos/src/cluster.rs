//! The cluster under test: its processes, the proxy between their peers, and what the harness
//! asks of it (who leads, is it settled, what does it hold at the end).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bulwark_harness::{free_addrs, wait_for, StatusClient, View};
use serde_json::{json, Value};

use crate::client::{balance_from_json, transfer_from_json, Client};
use crate::history::{Account, FinalState, Phase, Transfer};
use crate::process::{node_ip, NodeAddrs, NodeOptions, NodeProcess};
use crate::proxy::Proxy;
use crate::workload::ACCOUNTS;

/// Timeout of the harness's own requests to a node.
const CONTROL_TIMEOUT: Duration = Duration::from_millis(1500);

pub struct Cluster {
    /// Every node started so far (the first `voters` are the original members), by id.
    pub nodes: BTreeMap<u64, NodeProcess>,
    /// The original members: the workload's targets, never removed.
    pub originals: Vec<u64>,
    /// Node ids with a proxy route but no process yet, for the membership fault.
    spares: Vec<NodeAddrs>,
    pub proxy: Proxy,
    bin: PathBuf,
    run_dir: PathBuf,
    options: NodeOptions,
    /// Control requests (membership, final reads) get a short timeout.
    pub control: Client,
    /// Status requests, with the same timeout.
    status: StatusClient,
    /// The cluster's admin token, which every client of the run sends.
    pub token: String,
}

impl Cluster {
    /// Starts `n` nodes (ids 1..=n), with `spares` more ids routed through the proxy for joiners.
    pub async fn start(
        bin: &Path,
        run_dir: &Path,
        n: usize,
        spares: usize,
        options: NodeOptions,
    ) -> anyhow::Result<Cluster> {
        // Every node (spares too) listens on its own loopback IP, and its connections to other
        // nodes leave from it: the proxy knows the dialer of a connection (peer, or HTTP: forwarded
        // writes, snapshot fetches) from that IP alone. The workload and the harness connect from
        // 127.0.0.1, no node's IP, and are never blocked.
        let total = (n + spares) as u64;
        let mut real = Vec::new();
        let mut sources = BTreeMap::new();
        for id in 1..=total {
            let ip = node_ip(id)?;
            let addrs = free_addrs(ip, 2).map_err(|e| anyhow::anyhow!("cannot bind {ip}: {e}"))?;
            let (http, peer) = (addrs[0], addrs[1]);
            real.push((id, http, peer));
            sources.insert(ip, id);
        }
        let any: SocketAddr = "127.0.0.1:0".parse().expect("addr");
        let peer_routes = real.iter().map(|(id, _, peer)| (*id, any, *peer)).collect();
        let http_routes = real.iter().map(|(id, http, _)| (*id, any, *http)).collect();
        let proxy = Proxy::start_with(peer_routes, http_routes, sources).await?;
        let addrs: Vec<NodeAddrs> = real
            .into_iter()
            .map(|(id, http, peer_listen)| NodeAddrs {
                id,
                http,
                http_advertised: proxy.http_listen_addr(id).expect("an HTTP route per node"),
                peer_listen,
                peer_advertised: proxy.listen_addr(id).expect("a route per node"),
            })
            .collect();
        let members: Vec<String> = addrs[..n].iter().map(NodeAddrs::member_spec).collect();
        let (_, token) = bulwark_harness::admin_token(run_dir)?;
        let mut nodes = BTreeMap::new();
        for a in &addrs[..n] {
            let mut node =
                NodeProcess::new(bin, run_dir, a.clone(), &members, false, options.clone())?;
            node.start()?;
            nodes.insert(a.id, node);
        }
        Ok(Cluster {
            nodes,
            originals: (1..=n as u64).collect(),
            spares: addrs[n..].to_vec(),
            proxy,
            bin: bin.to_path_buf(),
            run_dir: run_dir.to_path_buf(),
            options,
            control: Client::new(CONTROL_TIMEOUT, &token),
            status: StatusClient::new(CONTROL_TIMEOUT, &token),
            token,
        })
    }

    pub fn http_addrs(&self) -> Vec<SocketAddr> {
        self.originals
            .iter()
            .map(|id| self.nodes[id].addrs.http)
            .collect()
    }

    pub fn node(&mut self, id: u64) -> &mut NodeProcess {
        self.nodes.get_mut(&id).expect("a known node")
    }

    pub fn spares_left(&self) -> usize {
        self.spares.len()
    }

    /// Starts a spare as a newcomer (`--join`) and returns its addresses.
    pub fn start_joiner(&mut self) -> anyhow::Result<NodeAddrs> {
        anyhow::ensure!(!self.spares.is_empty(), "no spare node ids left");
        let addrs = self.spares.remove(0);
        let mut members = vec![addrs.member_spec()];
        for id in &self.originals {
            members.push(self.nodes[id].addrs.member_spec());
        }
        let mut node = NodeProcess::new(
            &self.bin,
            &self.run_dir,
            addrs.clone(),
            &members,
            true,
            self.options.clone(),
        )?;
        node.start()?;
        self.nodes.insert(addrs.id, node);
        Ok(addrs)
    }

    /// The statuses of the running nodes (a paused one counts as not answering).
    async fn view(&self) -> View {
        let running = self.nodes.iter().filter(|(_, n)| n.is_running());
        let nodes = running.map(|(id, n)| (*id, (!n.is_paused()).then_some(n.addrs.http)));
        self.status.view(nodes).await
    }

    /// Each running, unpaused node's `/v1/status`, by id.
    pub async fn statuses(&self) -> BTreeMap<u64, Value> {
        let view = self.view().await;
        view.answered().map(|(id, s)| (id, s.clone())).collect()
    }

    /// The node that says it leads in the highest term, if any.
    pub async fn leader(&self) -> Option<u64> {
        self.view().await.leader().map(|(id, _)| id)
    }

    /// Waits until every running node of the configuration agrees on one leader (which says it
    /// leads) and has applied the same index; returns that index, or why not if `limit` passes
    /// first.
    pub async fn settle(&self, limit: Duration) -> Result<u64, String> {
        wait_for(limit, Duration::from_millis(250), || async {
            let view = self.view().await;
            view.in_sync(0).map(|(_, applied)| applied)
        })
        .await
    }

    /// One node's whole ledger, read with stale reads (after settling, every node's own view).
    pub async fn final_state(&self, id: u64) -> anyhow::Result<FinalState> {
        let node = self.nodes[&id].addrs.http;
        let mut accounts = Vec::new();
        let mut transfers: BTreeMap<u64, Transfer> = BTreeMap::new();
        for account in 1..=ACCOUNTS {
            let answer = self
                .control
                .get(node, &format!("/v1/accounts/{account}?consistency=stale"))
                .await;
            if answer.status == Some(404) && answer.body["error"] == "account_not_found" {
                // A definite answer: the node lost the account (the checker counts what it held).
                continue;
            }
            anyhow::ensure!(
                answer.phase == Phase::Ok,
                "node {id}: reading account {account}: {:?}",
                answer.error
            );
            let b = balance_from_json(&answer.body)
                .ok_or_else(|| anyhow::anyhow!("node {id}: account {account} is not an account"))?;
            accounts.push(Account {
                id: b.id,
                ledger: answer.body["ledger"].as_u64().unwrap_or(0) as u32,
                flags: answer.body["flags"]
                    .as_array()
                    .map(|f| {
                        f.iter()
                            .filter_map(|x| x.as_str().map(str::to_string))
                            .collect()
                    })
                    .unwrap_or_default(),
                debits_pending: b.debits_pending,
                debits_posted: b.debits_posted,
                credits_pending: b.credits_pending,
                credits_posted: b.credits_posted,
            });
            let mut after: Option<u64> = None;
            loop {
                let mut path =
                    format!("/v1/accounts/{account}/transfers?limit=8190&consistency=stale");
                if let Some(a) = after {
                    path.push_str(&format!("&after={a}"));
                }
                let page = self.control.get(node, &path).await;
                anyhow::ensure!(
                    page.phase == Phase::Ok,
                    "node {id}: reading the transfers of account {account}: {:?}",
                    page.error
                );
                for t in page.body["transfers"].as_array().into_iter().flatten() {
                    let t = transfer_from_json(t).ok_or_else(|| {
                        anyhow::anyhow!("node {id}: a transfer that does not parse: {t}")
                    })?;
                    transfers.insert(t.id, t);
                }
                match crate::client::dec(&page.body["next_after"]) {
                    Some(next) => after = Some(next),
                    None => break,
                }
            }
        }
        Ok(FinalState {
            accounts,
            transfers: transfers.into_values().collect(),
            changes: None,
        })
    }

    /// Asks any answering original member to make a membership change, until one accepts or
    /// `limit` passes.
    pub async fn membership(
        &self,
        what: &str,
        body: &Value,
        limit: Duration,
    ) -> Result<(), String> {
        let deadline = Instant::now() + limit;
        let mut last = String::from("no attempt");
        let mut attempt = 0usize;
        while Instant::now() < deadline {
            let id = self.originals[attempt % self.originals.len()];
            attempt += 1;
            let node = &self.nodes[&id];
            if node.is_running() && !node.is_paused() {
                let answer = self.control.membership(node.addrs.http, what, body).await;
                if answer.phase == Phase::Ok {
                    return Ok(());
                }
                last = answer.error.unwrap_or_default();
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        Err(last)
    }

    /// Waits until the leader reports each of `ids` as a member at most a few entries behind.
    pub async fn wait_caught_up(&self, ids: &[u64], limit: Duration) -> Result<(), String> {
        let deadline = Instant::now() + limit;
        let mut last = String::from("no leader answered");
        while Instant::now() < deadline {
            let statuses = self.statuses().await;
            if let Some(leader) = statuses.values().find(|s| s["role"] == "leader") {
                let members = leader["members"].as_array().cloned().unwrap_or_default();
                let lag = |id: u64| {
                    members
                        .iter()
                        .find(|m| m["id"].as_u64() == Some(id))
                        .and_then(|m| m["lag"].as_u64())
                };
                let lags: Vec<Option<u64>> = ids.iter().map(|id| lag(*id)).collect();
                if lags.iter().all(|l| l.is_some_and(|l| l <= 8)) {
                    return Ok(());
                }
                last = format!("lag in entries of {ids:?}: {lags:?}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Err(last)
    }

    /// A learner's request body: the addresses the other nodes use, the proxy's.
    pub fn learner_body(addrs: &NodeAddrs) -> Value {
        json!({
            "id": addrs.id,
            "peer_addr": addrs.peer_advertised,
            "http_addr": addrs.http_advertised,
        })
    }

    /// Lets every fault go: links healed, paused nodes resumed, dead nodes restarted, disks freed.
    pub fn heal_all(&mut self) -> anyhow::Result<()> {
        self.proxy.links().heal();
        for node in self.nodes.values_mut() {
            node.resume();
            if self.options.own_disk {
                node.free_disk()?;
            }
        }
        Ok(())
    }
}
