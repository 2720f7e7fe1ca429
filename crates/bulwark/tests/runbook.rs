//! docs/runbook.md, run as written against a real three-node cluster that archives: every
//! `# runbook: <procedure> <step>` block of the runbook is run by `bash` with the variables the
//! runbook names, and blocks that start a node are run as long-lived processes. Between the
//! procedures the test does what the world does (kills the leader, loses a disk, loses every
//! node, makes a bad write) and checks what each procedure promises: the failed node back in
//! sync, the replaced node's cluster serving, every acknowledged transfer in the restored cluster,
//! the bad write gone after a point-in-time restore, the old token refused after a rotation.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{free_port, free_port_range, Cluster, Http};
use serde_json::{json, Value};

/// The runbook's blocks by (procedure, step).
fn runbook() -> BTreeMap<(String, u32), String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/runbook.md");
    let text = std::fs::read_to_string(&path).expect("docs/runbook.md");
    let mut blocks = BTreeMap::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        if line.trim() != "```sh" {
            continue;
        }
        let body: Vec<&str> = lines.by_ref().take_while(|l| l.trim() != "```").collect();
        let Some(tag) = body.first().and_then(|l| l.strip_prefix("# runbook: ")) else {
            continue;
        };
        let (procedure, step) = tag.split_once(' ').expect("# runbook: <procedure> <step>");
        let key = (procedure.to_string(), step.parse().expect("a step number"));
        assert!(
            blocks.insert(key, body[1..].join("\n")).is_none(),
            "{tag} twice"
        );
    }
    blocks
}

/// The runbook, its variables, and the nodes its blocks started.
struct Operator {
    blocks: BTreeMap<(String, u32), String>,
    vars: BTreeMap<String, String>,
    cwd: tempfile::TempDir,
    started: Vec<(String, tokio::process::Child)>,
}

impl Operator {
    fn set(&mut self, name: &str, value: impl ToString) {
        self.vars.insert(name.to_string(), value.to_string());
    }

    fn command(&self, script: &str) -> tokio::process::Command {
        let bin_dir = Path::new(common::bin())
            .parent()
            .expect("the binary's directory");
        let path = format!(
            "{}:{}",
            bin_dir.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let mut command = tokio::process::Command::new("bash");
        command
            .arg("-euo")
            .arg("pipefail")
            .arg("-c")
            .arg(script)
            .current_dir(self.cwd.path())
            .env("PATH", path)
            .env("NO_COLOR", "1")
            .env_remove("BULWARK_TOKEN_FILE")
            .envs(&self.vars)
            .stdin(Stdio::null());
        command
    }

    fn block(&self, procedure: &str, step: u32) -> &str {
        self.blocks
            .get(&(procedure.to_string(), step))
            .unwrap_or_else(|| panic!("docs/runbook.md has no step {procedure} {step}"))
    }

    /// Runs a step to its end; panics with its output unless it succeeds. Answers its stdout.
    async fn run(&self, procedure: &str, step: u32) -> String {
        let script = self.block(procedure, step);
        let out = self.command(script).output().await.expect("run bash");
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        );
        assert!(
            out.status.success(),
            "runbook {procedure} {step} failed ({}):\n{script}\n--- stdout\n{stdout}\n--- stderr\n{stderr}\n{}",
            out.status,
            self.logs()
        );
        stdout
    }

    /// Starts a step that runs a node, and waits until it answers on `http`: `/v1/status` when
    /// it has a state of its own (it recovered and loaded its tokens), `/health/live` for a node
    /// that joins (its state comes once it is added).
    async fn start(&mut self, procedure: &str, step: u32, http: &str) {
        self.start_node(procedure, step, http, true).await
    }

    async fn start_joiner(&mut self, procedure: &str, step: u32, http: &str) {
        self.start_node(procedure, step, http, false).await
    }

    async fn start_node(&mut self, procedure: &str, step: u32, http: &str, has_state: bool) {
        let script = format!("exec {}", self.block(procedure, step));
        let log = std::fs::File::create(self.cwd.path().join(format!("{procedure}-{step}.log")))
            .expect("a log file");
        let child = self
            .command(&script)
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("start the node");
        self.started.push((format!("{procedure} {step}"), child));
        let live = Http::with_token(
            format!("http://{http}"),
            self.vars.get("BULWARK_TOKEN").map(String::as_str),
        );
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let up = if has_state {
                matches!(live.try_get("/v1/status").await, Ok(r) if r.status == 200)
            } else {
                live.live().await
            };
            if up {
                return;
            }
            let (label, child) = self.started.last_mut().expect("just started");
            if let Ok(Some(status)) = child.try_wait() {
                let log = std::fs::read_to_string(
                    self.cwd.path().join(format!("{procedure}-{step}.log")),
                );
                panic!(
                    "runbook {label}: the node exited with {status}:\n{}",
                    log.unwrap_or_default()
                );
            }
            assert!(
                Instant::now() < deadline,
                "runbook {procedure} {step}: no answer on {http}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The last lines of every log of a node a step started.
    fn logs(&self) -> String {
        let mut out = String::new();
        for (label, _) in &self.started {
            let file = self
                .cwd
                .path()
                .join(format!("{}.log", label.replace(' ', "-")));
            let text = std::fs::read_to_string(file).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(30).collect();
            out.push_str(&format!("--- log of runbook {label}\n"));
            for line in tail.into_iter().rev() {
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    }

    /// Stops every node a step started.
    async fn stop_started(&mut self) {
        for (_, mut child) in self.started.drain(..) {
            let _ = child.kill().await;
        }
    }
}

/// Writes one transfer after another (ids from `first`) through `http`; answers the
/// acknowledged ids.
async fn transfers(http: &Http, first: u64, count: u64) -> Vec<u64> {
    let mut acked = Vec::new();
    for id in first..first + count {
        let t = json!([{"id": id, "debit_account_id": 1, "credit_account_id": 2, "amount": 1,
            "ledger": 1, "code": 1}]);
        let r = http.post("/v1/transfers", &t).await;
        assert_eq!(r.status, 200, "{}", r.text);
        assert_eq!(r.results(), ["ok"]);
        acked.push(id);
    }
    acked
}

/// Every transfer id the node holds.
async fn transfer_ids(http: &Http) -> BTreeSet<u64> {
    let mut ids = BTreeSet::new();
    let mut body = json!({"limit": 8190});
    loop {
        let r = http.post("/v1/transfers/query", &body).await;
        assert_eq!(r.status, 200, "{}", r.text);
        for t in r.json["transfers"].as_array().expect("transfers") {
            ids.insert(t["id"].as_str().expect("id").parse().expect("an id"));
        }
        match r.json.get("next_timestamp_min") {
            Some(Value::String(next)) => body["timestamp_min"] = json!(next),
            _ => return ids,
        }
    }
}

/// Waits until `http`'s node leads or follows a leader that reports every voter in sync, and
/// answers the leader's status.
async fn in_sync(http: &Http, voters: usize) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(r) = http.try_get("/v1/status").await {
            let members = r.json["members"].as_array().cloned().unwrap_or_default();
            let synced = members
                .iter()
                .filter(|m| m["in_sync"] == true && m["role"] != "learner");
            if r.json["role"] == "leader" && synced.count() == voters && members.len() == voters {
                return r.json;
            }
        }
        assert!(
            Instant::now() < deadline,
            "{} did not get {voters} voters in sync",
            http.base
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The leader's HTTP client, asking any node.
async fn leader_http(cluster: &Cluster) -> Http {
    let leader = cluster.wait_leader(Duration::from_secs(30)).await;
    Http::with_base(cluster.node(leader).base_url())
}

/// Waits until the leader's archive holds everything committed.
async fn archived(http: &Http) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let s = http.status().await;
        if s["archive"]["archived_index"].as_u64() >= s["commit_index"].as_u64() {
            return;
        }
        assert!(Instant::now() < deadline, "the archive lags: {s}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn addr(port: u16) -> String {
    format!("127.0.0.1:{port}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_runbook_works_as_written() {
    let store = tempfile::tempdir().expect("tempdir");
    let (backups, archive) = (store.path().join("backups"), store.path().join("archive"));
    let mut cluster = Cluster::start(3, &["--archive", archive.to_str().unwrap()]).await;
    let mut op = Operator {
        blocks: runbook(),
        vars: BTreeMap::new(),
        cwd: tempfile::tempdir().expect("tempdir"),
        started: Vec::new(),
    };
    op.set("BULWARK_TOKEN", &common::test_token().1);
    op.set("CA", common::cluster_ca().display());
    op.set("BACKUPS", backups.display());
    op.set("ARCHIVE", archive.display());
    let leader = cluster.wait_leader(Duration::from_secs(30)).await;
    op.set("BULWARK_ADDR", cluster.node(leader).base_url());
    let http = leader_http(&cluster).await;
    let accounts = json!([{"id": 1, "ledger": 1, "code": 1}, {"id": 2, "ledger": 1, "code": 1}]);
    assert_eq!(http.write("/v1/accounts", &accounts).await, ["ok", "ok"]);
    let mut acked = transfers(&http, 1, 20).await;
    op.run("backup", 1).await;

    failover(&mut cluster, &mut op).await;
    replace(&mut cluster, &mut op, store.path()).await;
    let http = leader_http(&cluster).await;
    acked.extend(transfers(&http, 100, 20).await);
    pitr(&mut cluster, &mut op, &mut acked, store.path()).await;

    // Every node is lost.
    archived(&leader_http(&cluster).await).await;
    op.stop_started().await;
    for node in cluster.nodes.iter_mut().filter(|n| n.is_running()) {
        node.kill9();
    }
    let restored = restore(&mut op, store.path()).await;
    let ids = transfer_ids(&restored).await;
    let missing: Vec<_> = acked.iter().filter(|id| !ids.contains(id)).collect();
    assert!(
        missing.is_empty(),
        "acknowledged transfers not restored: {missing:?}"
    );

    rotate(&mut op, &restored).await;
    op.stop_started().await;
}

/// 1. The leader fails; the failed node comes back with the runbook's start and is in sync.
async fn failover(cluster: &mut Cluster, op: &mut Operator) {
    let leader = cluster.wait_leader(Duration::from_secs(30)).await;
    cluster.node_mut(leader).kill9();
    let other = cluster
        .nodes
        .iter()
        .find(|n| n.id != leader)
        .expect("another node");
    op.set("BULWARK_ADDR", other.base_url());
    cluster.wait_leader(Duration::from_secs(30)).await;
    let shown = op.run("failover", 1).await;
    assert!(shown.contains("leader"), "{shown}");
    op.set("FAILED_DIR", cluster.node(leader).data_dir.display());
    let http = addr(cluster.node(leader).http_port);
    op.start("failover", 2, &http).await;
    in_sync(&leader_http(cluster).await, 3).await;
    op.run("failover", 3).await;
}

/// 2. A follower loses its disk; two new nodes join, the lost one and a spare leave.
async fn replace(cluster: &mut Cluster, op: &mut Operator, root: &Path) {
    let leader = cluster.wait_leader(Duration::from_secs(30)).await;
    let lost = cluster
        .nodes
        .iter()
        .find(|n| n.id != leader && n.is_running())
        .expect("a follower")
        .id;
    cluster.node_mut(lost).kill9();
    std::fs::remove_dir_all(&cluster.node(lost).data_dir).expect("the disk is lost");
    let seed = cluster.node(leader);
    op.set(
        "SEED",
        format!(
            "{}={}={}",
            seed.id,
            addr(seed.peer_port),
            addr(seed.http_port)
        ),
    );
    op.set("BULWARK_ADDR", seed.base_url());
    op.set("LOST", lost);
    let mut https = Vec::new();
    for (name, id) in [("NEW1", 4), ("NEW2", 5)] {
        let (peer, http) = (addr(free_port()), addr(free_port()));
        op.set(name, id);
        op.set(
            &format!("{name}_DIR"),
            root.join(format!("node-{id}")).display(),
        );
        op.set(&format!("{name}_PEER"), &peer);
        op.set(&format!("{name}_HTTP"), &http);
        https.push(http);
    }
    op.run("replace", 1).await;
    op.start_joiner("replace", 2, &https[0]).await;
    op.start_joiner("replace", 3, &https[1]).await;
    op.run("replace", 4).await;
    let status = in_sync(&leader_http(cluster).await, 3).await;
    let ids: BTreeSet<u64> = status["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_u64().unwrap())
        .collect();
    let kept: BTreeSet<u64> = cluster
        .nodes
        .iter()
        .map(|n| n.id)
        .filter(|id| *id != lost)
        .chain([4])
        .collect();
    assert_eq!(ids, kept, "the lost node and the spare left: {status}");
}

/// 4. A bad write, then a point-in-time restore to just before it.
async fn pitr(cluster: &mut Cluster, op: &mut Operator, acked: &mut Vec<u64>, root: &Path) {
    let http = leader_http(cluster).await;
    acked.extend(transfers(&http, 200, 5).await);
    let bad = json!([{"id": 666, "debit_account_id": 2, "credit_account_id": 1, "amount": 1000,
        "ledger": 1, "code": 1}]);
    assert_eq!(http.write("/v1/transfers", &bad).await, ["ok"]);
    acked.push(666);
    acked.extend(transfers(&http, 300, 5).await);
    archived(&http).await;
    let bad_timestamp = http.transfer(666).await.expect("the bad transfer")["timestamp"]
        .as_str()
        .expect("a timestamp")
        .to_string();
    op.set("ACCOUNT", 2);
    let history = op.run("pitr", 1).await;
    assert!(
        history.contains(&bad_timestamp),
        "the history shows it: {history}"
    );
    op.set("BAD_TIMESTAMP", &bad_timestamp);
    op.set("PITR_DIR", root.join("pitr").display());
    let pitr_http = addr(free_port());
    op.set("PITR_HTTP", &pitr_http);
    op.run("pitr", 2).await;
    op.start("pitr", 3, &pitr_http).await;
    let restored = Http::with_base(format!("http://{pitr_http}"));
    let ids = transfer_ids(&restored).await;
    assert!(!ids.contains(&666), "the bad write is gone");
    assert!(
        ids.contains(&204) && !ids.contains(&300),
        "everything before it, nothing after"
    );
    let (_, mut child) = op.started.pop().expect("the PITR node");
    let _ = child.kill().await;
}

/// 3. Every node lost: the cluster restored from the backup and the archive, grown to three.
async fn restore(op: &mut Operator, root: &Path) -> Http {
    let base = free_port_range(101);
    let (http, peer) = (addr(base), addr(base + 100));
    op.set("RESTORED_DIR", root.join("restored").display());
    op.set("RESTORED_HTTP", &http);
    op.set("RESTORED_PEER", &peer);
    op.set("BULWARK_ADDR", format!("http://{http}"));
    let mut joiners = Vec::new();
    for n in [2, 3] {
        let (p, h) = (addr(free_port()), addr(free_port()));
        op.set(
            &format!("N{n}_DIR"),
            root.join(format!("restored-{n}")).display(),
        );
        op.set(&format!("N{n}_PEER"), &p);
        op.set(&format!("N{n}_HTTP"), &h);
        joiners.push(h);
    }
    op.run("restore", 1).await;
    op.run("restore", 2).await;
    op.start("restore", 3, &http).await;
    op.run("restore", 4).await;
    op.start_joiner("restore", 5, &joiners[0]).await;
    op.start_joiner("restore", 6, &joiners[1]).await;
    op.run("restore", 7).await;
    let restored = Http::with_base(format!("http://{http}"));
    in_sync(&restored, 3).await;
    restored
}

/// 5. A new admin token, the old one revoked: refused on every node.
async fn rotate(op: &mut Operator, restored: &Http) {
    let (id, _) = bulwark_token::parse(&common::test_token().1).expect("the test token");
    let old = format!("{id:016x}");
    let tokens = restored.get("/v1/tokens").await;
    assert!(
        tokens.json["tokens"]
            .as_array()
            .expect("tokens")
            .iter()
            .any(|t| t["id"] == old),
        "the restored cluster has the old cluster's tokens: {}",
        tokens.text
    );
    op.set("OLD_TOKEN_ID", &old);
    op.run("rotate", 1).await;
    let refused = restored.try_get("/v1/tokens").await.expect("an answer");
    assert_eq!(
        refused.status, 401,
        "the old token is refused: {}",
        refused.text
    );
    let new =
        std::fs::read_to_string(op.cwd.path().join("admin-rotated.token")).expect("the new token");
    let fresh = Http::with_token(restored.base.clone(), Some(new.trim()));
    assert_eq!(fresh.get("/v1/tokens").await.status, 200);
}
