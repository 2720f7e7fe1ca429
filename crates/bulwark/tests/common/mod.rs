//! Shared helpers of the integration tests of the `bulwark` binary: a node and a cluster of
//! nodes on free 127.0.0.1 ports with their own data directories, whose processes (start, kill
//! -9, SIGTERM, restart on the same directory) are `bulwark_harness`'s; a small JSON HTTP
//! client; readers of the write-ahead log format (segment files and record offsets) for the
//! recovery tests.
//!
//! Every test binary includes this module but uses only part of it.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::ops::{Deref, DerefMut};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use bulwark_harness::{Logs, NodeProcess, StartError, StatusClient, View};
use serde_json::Value;
use tempfile::TempDir;

#[allow(unused_imports)]
pub use bulwark_harness::{member_args, strip_ansi, wait_exit, Member as MemberAddr};

/// The binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_bulwark")
}

/// A port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    bulwark_harness::free_port().expect("bind an ephemeral port")
}

/// `count` consecutive free ports on 127.0.0.1 ([`bulwark_harness::free_port_range`]).
pub fn free_port_range(count: u16) -> u16 {
    bulwark_harness::free_port_range(count).expect("a range of free ports")
}

/// `n` members with ids `1..=n` on fresh ports.
pub fn cluster_members(n: u64) -> Vec<MemberAddr> {
    bulwark_harness::free_members(n).expect("free ports for the members")
}

fn localhost(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// The CA of every cluster these tests start (one per test binary: their clusters never meet,
/// each on its own ports).
pub fn cluster_ca() -> PathBuf {
    static CA: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
    CA.get_or_init(|| tempfile::tempdir().expect("a CA directory"))
        .path()
        .join("ca")
}

/// The first admin token of every node and cluster these tests start (one per test binary,
/// given to each with `--admin-token-file`), which [`Http`] sends unless told otherwise.
pub fn test_token() -> &'static (PathBuf, String) {
    static TOKEN: std::sync::OnceLock<(tempfile::TempDir, (PathBuf, String))> =
        std::sync::OnceLock::new();
    let (_, token) = TOKEN.get_or_init(|| {
        let dir = tempfile::tempdir().expect("a token directory");
        let token = bulwark_harness::admin_token(dir.path()).expect("an admin token");
        (dir, token)
    });
    token
}

/// A `bulwark start` process of the tests on `data_dir`: `--listen` on `port`, then `args`; a
/// log file per run; no colours.
fn test_process(data_dir: PathBuf, port: u16, args: &[String]) -> NodeProcess {
    let mut all = vec!["--listen".to_string(), localhost(port).to_string()];
    all.extend(args.iter().cloned());
    let logs = Logs::per_run().expect("a log directory");
    NodeProcess::new(Path::new(bin()), data_dir, all, logs)
        .with_cluster_ca(cluster_ca())
        .with_admin_token(&test_token().0)
        .with_env("NO_COLOR", "1")
        .with_env("RUST_LOG", "info")
}

/// Panics, with the log, if the process has exited on its own.
fn assert_running(process: &mut NodeProcess, label: &str) {
    assert!(process.is_running(), "{label} is not running");
    if let Some(status) = process.exited() {
        panic!(
            "{label} exited on its own with {status}:\n{}",
            process.last_log()
        );
    }
}

/// `SIGTERM` and a wait of up to 60 s for the exit status; panics with the log if it does not
/// stop.
fn sigterm(process: &mut NodeProcess, label: &str) -> ExitStatus {
    assert_running(process, label);
    process
        .terminate(Duration::from_secs(60))
        .unwrap_or_else(|| {
            panic!(
                "{label} did not stop within 60 s of SIGTERM:\n{}",
                process.last_log()
            )
        })
}

/// One `bulwark start` process and the data directory it lives on, across restarts (the
/// process handling is [`NodeProcess`]'s, reached through `Deref`).
pub struct Node {
    process: NodeProcess,
    _data: Option<TempDir>,
    port: u16,
    args: Vec<String>,
    pub http: Http,
}

impl Deref for Node {
    type Target = NodeProcess;
    fn deref(&self) -> &NodeProcess {
        &self.process
    }
}

impl DerefMut for Node {
    fn deref_mut(&mut self) -> &mut NodeProcess {
        &mut self.process
    }
}

impl Node {
    /// Starts a node on a new temporary data directory.
    pub async fn start(args: &[&str]) -> Node {
        let data = tempfile::Builder::new()
            .prefix("bulwark-test-data")
            .tempdir()
            .expect("tempdir");
        let mut node = Node::unstarted(data.path().to_path_buf(), args);
        node._data = Some(data);
        node.restart().await;
        node
    }

    /// Starts a node on a new temporary data directory with `env` added to its environment
    /// (an S3 target's settings, say).
    pub async fn start_with_env(args: &[&str], env: &[(String, String)]) -> Node {
        let data = tempfile::Builder::new()
            .prefix("bulwark-test-data")
            .tempdir()
            .expect("tempdir");
        let mut node = Node::unstarted(data.path().to_path_buf(), args);
        for (key, value) in env {
            node.process.set_env(key, value);
        }
        node._data = Some(data);
        node.restart().await;
        node
    }

    /// A node on `data_dir` (which the caller owns) that is not started yet.
    pub fn unstarted(data_dir: PathBuf, args: &[&str]) -> Node {
        let port = free_port();
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        Node {
            process: test_process(data_dir, port, &args),
            _data: None,
            port,
            args,
            http: Http::new(port),
        }
    }

    /// The Raft log's directory (WAL segments and the hard-state file).
    pub fn wal_dir(&self) -> PathBuf {
        self.data_dir.join("raft")
    }

    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The HTTP port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Replaces the extra `start` options used by the next restart.
    pub fn set_args(&mut self, args: &[&str]) {
        self.args = args.iter().map(|s| s.to_string()).collect();
    }

    /// Starts the process (again) on the same data directory and waits until `/health/live`
    /// answers. Tries another port if this one cannot be bound. Panics, with the node's log, if
    /// the node exits instead.
    pub async fn restart(&mut self) {
        self.try_restart().await.unwrap_or_else(|(status, log)| {
            panic!("the node exited with {status} at start:\n{log}")
        });
    }

    /// Like [`Node::restart`], but returns the exit status and log of a node that fails to start.
    pub async fn try_restart(&mut self) -> Result<(), (ExitStatus, String)> {
        assert!(!self.is_running(), "the node is already running");
        for _attempt in 0..5 {
            // A fresh client: no pooled connection to the previous process survives.
            self.http = Http::new(self.port);
            let mut args = vec!["--listen".to_string(), localhost(self.port).to_string()];
            args.extend(self.args.iter().cloned());
            self.process.set_args(args);
            match self
                .process
                .start_live(localhost(self.port), Duration::from_secs(60))
                .await
            {
                Ok(()) => {
                    // A new node's admin token works once its log applied it.
                    let status = StatusClient::new(Duration::from_secs(5), &test_token().1);
                    status
                        .wait_authorized(localhost(self.port), Duration::from_secs(30))
                        .await;
                    return Ok(());
                }
                // Someone took the port in the meantime: use another one.
                Err(StartError::PortTaken(_)) => self.port = free_port(),
                Err(StartError::Exited(status, log)) => return Err((status, log)),
                Err(e) => panic!("the node did not start: {e}"),
            }
        }
        panic!("could not find a free port for the node");
    }

    /// Panics, with the log, if the process has exited on its own.
    pub fn assert_running(&mut self) {
        assert_running(&mut self.process, "the node");
    }

    /// `kill -9`: the process dies at once, with no chance to write anything more.
    pub fn kill9(&mut self) {
        self.assert_running();
        self.process.kill9();
    }

    /// `SIGTERM`: a graceful shutdown; returns the exit status.
    pub fn sigterm(&mut self) -> ExitStatus {
        sigterm(&mut self.process, "the node")
    }
}

/// Runs `bulwark start` on `data_dir` expecting it to fail: returns the exit status (or `None`
/// if it was still running after `limit`, in which case it is killed) and its stderr.
pub fn start_expecting_exit(
    data_dir: &Path,
    args: &[&str],
    limit: Duration,
) -> (Option<ExitStatus>, String) {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let mut process = test_process(data_dir.to_path_buf(), free_port(), &args);
    let status = process.run_to_exit(limit).expect("spawn bulwark start");
    (status, process.last_log())
}

/// Runs a `bulwark` client command with the tests' admin token in `BULWARK_TOKEN`; returns
/// its exit code, stdout and stderr.
pub async fn cli(args: &[&str]) -> (i32, String, String) {
    cli_with_token(args, Some(&test_token().1)).await
}

/// [`cli`] with `env` added to the client's environment.
pub async fn cli_with_env(args: &[&str], env: &[(String, String)]) -> (i32, String, String) {
    run_cli(args, Some(&test_token().1), env).await
}

/// Runs a `bulwark` client command with `token` (or none) in `BULWARK_TOKEN`.
pub async fn cli_with_token(args: &[&str], token: Option<&str>) -> (i32, String, String) {
    run_cli(args, token, &[]).await
}

async fn run_cli(
    args: &[&str],
    token: Option<&str>,
    env: &[(String, String)],
) -> (i32, String, String) {
    let mut command = tokio::process::Command::new(bin());
    command.envs(env.iter().map(|(k, v)| (k, v)));
    match token {
        Some(token) => command.env("BULWARK_TOKEN", token),
        None => command.env_remove("BULWARK_TOKEN"),
    };
    let out = command
        .args(args)
        .env_remove("BULWARK_TOKEN_FILE")
        .env_remove("BULWARK_ADDR")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .output()
        .await
        .expect("run the bulwark client");
    (
        out.status.code().expect("the client exited with a code"),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// An HTTP answer: status, headers and the body (parsed as JSON when it is JSON).
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub text: String,
    pub json: Value,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The `error` word of an error answer.
    pub fn error(&self) -> &str {
        self.json["error"].as_str().unwrap_or("")
    }

    pub fn message(&self) -> &str {
        self.json["message"].as_str().unwrap_or("")
    }

    /// The `result` words of a batch answer, in order.
    pub fn results(&self) -> Vec<String> {
        let results = self.json["results"]
            .as_array()
            .unwrap_or_else(|| panic!("not a batch answer: {} {}", self.status, self.text));
        results
            .iter()
            .enumerate()
            .map(|(i, r)| {
                assert_eq!(r["index"].as_u64(), Some(i as u64), "result index");
                r["result"].as_str().expect("result word").to_string()
            })
            .collect()
    }
}

/// A tiny JSON client of one node.
#[derive(Clone)]
pub struct Http {
    client: reqwest::Client,
    pub base: String,
}

impl Http {
    pub fn new(port: u16) -> Http {
        Http::with_base(format!("http://127.0.0.1:{port}"))
    }

    pub fn with_base(base: String) -> Http {
        Http::with_token(base, Some(&test_token().1))
    }

    /// A client of `base` that sends `token`, or no token at all.
    pub fn with_token(base: String, token: Option<&str>) -> Http {
        let headers = token
            .map(bulwark_harness::bearer_headers)
            .unwrap_or_default();
        let client = reqwest::Client::builder()
            .default_headers(headers)
            .timeout(Duration::from_secs(30))
            .connect_timeout(Duration::from_secs(5))
            .no_proxy()
            .build()
            .expect("http client");
        Http { client, base }
    }

    pub async fn answer(response: reqwest::Response) -> Result<Resp, reqwest::Error> {
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text().await?;
        let json = serde_json::from_str(&text).unwrap_or(Value::Null);
        Ok(Resp {
            status,
            headers,
            text,
            json,
        })
    }

    pub async fn try_get(&self, path: &str) -> Result<Resp, reqwest::Error> {
        let response = self
            .client
            .get(format!("{}{path}", self.base))
            .send()
            .await?;
        Http::answer(response).await
    }

    /// A JSON POST with one more header of the client's choosing.
    pub async fn try_post_with(
        &self,
        path: &str,
        body: Vec<u8>,
        (name, value): (&str, &str),
    ) -> Result<Resp, reqwest::Error> {
        let response = self
            .client
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .header(name, value)
            .body(body)
            .send()
            .await?;
        Http::answer(response).await
    }

    pub async fn try_post(&self, path: &str, body: Vec<u8>) -> Result<Resp, reqwest::Error> {
        let response = self
            .client
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await?;
        Http::answer(response).await
    }

    pub async fn get(&self, path: &str) -> Resp {
        self.try_get(path)
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }

    pub async fn post_raw(&self, path: &str, body: impl Into<Vec<u8>>) -> Resp {
        self.try_post(path, body.into())
            .await
            .unwrap_or_else(|e| panic!("POST {path}: {e}"))
    }

    pub async fn post(&self, path: &str, body: &Value) -> Resp {
        self.post_raw(path, serde_json::to_vec(body).expect("encode"))
            .await
    }

    /// POSTs a batch that must be accepted (200); returns its result words.
    pub async fn write(&self, path: &str, body: &Value) -> Vec<String> {
        let r = self.post(path, body).await;
        assert_eq!(r.status, 200, "POST {path} {body}: {}", r.text);
        r.results()
    }

    /// True if `/health/live` answers 200.
    pub async fn live(&self) -> bool {
        let request = self
            .client
            .get(format!("{}/health/live", self.base))
            .timeout(Duration::from_secs(1))
            .send()
            .await;
        matches!(request, Ok(r) if r.status().is_success())
    }

    /// `GET /v1/status`.
    pub async fn status(&self) -> Value {
        let r = self.get("/v1/status").await;
        assert_eq!(r.status, 200, "status: {}", r.text);
        r.json
    }

    pub async fn applied_index(&self) -> u64 {
        self.status().await["applied_index"]
            .as_u64()
            .expect("applied_index")
    }

    /// The account, or `None` on 404.
    pub async fn account(&self, id: u64) -> Option<Value> {
        let r = self.get(&format!("/v1/accounts/{id}")).await;
        match r.status {
            200 => Some(r.json),
            404 => {
                assert_eq!(r.error(), "account_not_found", "{}", r.text);
                None
            }
            s => panic!("GET account {id}: {s} {}", r.text),
        }
    }

    /// The transfer, or `None` on 404.
    pub async fn transfer(&self, id: u64) -> Option<Value> {
        let r = self.get(&format!("/v1/transfers/{id}")).await;
        match r.status {
            200 => Some(r.json),
            404 => {
                assert_eq!(r.error(), "transfer_not_found", "{}", r.text);
                None
            }
            s => panic!("GET transfer {id}: {s} {}", r.text),
        }
    }

    /// Every transfer of the account, following `next_after` page by page.
    pub async fn history(&self, account: u64, limit: usize) -> Vec<Value> {
        let mut all = Vec::new();
        let mut after: Option<u64> = None;
        loop {
            let path = match after {
                Some(a) => format!("/v1/accounts/{account}/transfers?limit={limit}&after={a}"),
                None => format!("/v1/accounts/{account}/transfers?limit={limit}"),
            };
            let r = self.get(&path).await;
            assert_eq!(r.status, 200, "GET {path}: {}", r.text);
            let page = r.json["transfers"].as_array().expect("transfers").clone();
            assert!(page.len() <= limit, "a page longer than its limit");
            all.extend(page);
            match r.json.get("next_after") {
                Some(next) => after = Some(next.dec().expect("next_after is an integer")),
                None => return all,
            }
        }
    }
}

/// The fields a client sets on a transfer, as the API answers them (flags sorted), so that what
/// was sent can be compared with what `GET /v1/transfers/{id}` answers.
pub fn transfer_fields(t: &Value) -> Value {
    let mut flags: Vec<String> = t["flags"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|f| f.as_str().expect("flag").to_string())
                .collect()
        })
        .unwrap_or_default();
    flags.sort();
    let field = |name: &str| t.get(name).and_then(|v| v.dec()).unwrap_or(0);
    serde_json::json!({
        "id": field("id"),
        "debit_account_id": field("debit_account_id"),
        "credit_account_id": field("credit_account_id"),
        "amount": field("amount"),
        "pending_id": field("pending_id"),
        "timeout": field("timeout"),
        "ledger": field("ledger"),
        "code": field("code"),
        "flags": flags,
        "user_data_64": field("user_data_64"),
    })
}

/// One record of a write-ahead log segment, as it lies in the file.
#[derive(Clone, Debug)]
pub struct WalRecord {
    /// Byte offset of the record header in the file.
    pub offset: u64,
    pub index: u64,
    /// Payload length.
    pub len: u64,
}

impl WalRecord {
    /// Offset one past the record's last byte.
    pub fn end(&self) -> u64 {
        self.offset + 16 + self.len
    }
}

/// The segment files of a log directory, in index (file-name) order.
pub fn wal_segments(wal_dir: &Path) -> Vec<PathBuf> {
    let mut segments: Vec<PathBuf> = std::fs::read_dir(wal_dir)
        .expect("read the wal directory")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            name.ends_with(".wal") && name.len() == 24
        })
        .collect();
    segments.sort();
    segments
}

/// Reads the records of one segment file (format version 1: a 20-byte header, then records of
/// a 16-byte header `len`, `crc`, `index` and the payload). Stops at the first record that does
/// not fit in the file.
pub fn wal_records(segment: &Path) -> Vec<WalRecord> {
    let bytes = std::fs::read(segment).expect("read a segment");
    assert!(bytes.len() >= 20, "segment shorter than its header");
    assert_eq!(&bytes[0..4], b"BWAL", "segment magic");
    let mut records = Vec::new();
    let mut off = 20usize;
    while off + 16 <= bytes.len() {
        // The zero-fill ahead of the last write (a record's index is never 0).
        if bytes[off..off + 16].iter().all(|&b| b == 0) {
            break;
        }
        let len = u32::from_le_bytes(bytes[off..off + 4].try_into().unwrap()) as usize;
        let index = u64::from_le_bytes(bytes[off + 8..off + 16].try_into().unwrap());
        if off + 16 + len > bytes.len() {
            break;
        }
        records.push(WalRecord {
            offset: off as u64,
            index,
            len: len as u64,
        });
        off += 16 + len;
    }
    records
}

/// The seeded RNG of the chaos harness (splitmix64), so that a failing seed replays.
#[allow(unused_imports)]
pub use bulwark_chaos::rng::Rng;

/// The seed of a randomized test: `BULWARK_TEST_SEED` if set, else `default`.
pub fn seed(default: u64) -> u64 {
    std::env::var("BULWARK_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// One `bulwark start` cluster member process on its own data directory, across kills and
/// restarts. Its ports are fixed (every member's `--member` list names them). The process
/// handling (`data_dir`, `env`, `wait_exit`, logs, ...) is [`NodeProcess`]'s, through `Deref`.
pub struct ClusterNode {
    pub id: u64,
    pub http_port: u16,
    pub peer_port: u16,
    process: NodeProcess,
    pub http: Http,
}

impl Deref for ClusterNode {
    type Target = NodeProcess;
    fn deref(&self) -> &NodeProcess {
        &self.process
    }
}

impl DerefMut for ClusterNode {
    fn deref_mut(&mut self) -> &mut NodeProcess {
        &mut self.process
    }
}

impl ClusterNode {
    /// A member that is not started yet, on `data_dir` and the given ports; `args` are all its
    /// `start` options but `--data-dir` and `--listen` (`--node-id`, `--member`s, `--join`, ...).
    pub fn unstarted(
        id: u64,
        data_dir: PathBuf,
        peer_port: u16,
        http_port: u16,
        args: Vec<String>,
    ) -> ClusterNode {
        // `--listen` is ignored in cluster mode (the HTTP address is this member's).
        ClusterNode {
            id,
            http_port,
            peer_port,
            process: test_process(data_dir, http_port, &args),
            http: Http::new(http_port),
        }
    }

    /// The `start` options every run of this node uses (its original flags, without
    /// `--listen`).
    pub fn args(&self) -> &[String] {
        &self.process.args()[2..]
    }

    /// This member's `--member` value.
    pub fn member_addr(&self) -> MemberAddr {
        MemberAddr {
            id: self.id,
            peer: localhost(self.peer_port),
            http: localhost(self.http_port),
        }
    }

    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    /// Starts the process (again) on its data directory and waits until `/health/live` answers
    /// (that is, the node recovered and serves HTTP; it need not have a leader). Retries a few
    /// times if a port is still taken; panics, with the log, if the node exits otherwise.
    pub async fn restart(&mut self) {
        assert!(!self.is_running(), "node {} is already running", self.id);
        self.http = Http::new(self.http_port);
        let http = localhost(self.http_port);
        if let Err(e) = self
            .process
            .start_live_retrying(http, Duration::from_secs(60), 10)
            .await
        {
            panic!("node {} did not start: {e}", self.id);
        }
    }

    /// Panics, with the log, if the process has exited on its own.
    pub fn assert_running(&mut self) {
        assert_running(&mut self.process, &format!("node {}", self.id));
    }

    /// `kill -9`.
    pub fn kill9(&mut self) {
        self.assert_running();
        self.process.kill9();
    }

    /// `SIGTERM`: a graceful shutdown; returns the exit status.
    pub fn sigterm(&mut self) -> ExitStatus {
        sigterm(&mut self.process, &format!("node {}", self.id))
    }

    /// `GET /v1/status`, or `None` if the node does not answer it with 200.
    pub async fn try_status(&self) -> Option<Value> {
        if !self.is_running() {
            return None;
        }
        match self.http.try_get("/v1/status").await {
            Ok(r) if r.status == 200 => Some(r.json),
            _ => None,
        }
    }
}

/// A cluster of `bulwark start` processes on 127.0.0.1, each on its own temporary data
/// directory, ids `1..=n`.
pub struct Cluster {
    pub nodes: Vec<ClusterNode>,
    pub members: Vec<MemberAddr>,
    status: StatusClient,
    _data: TempDir,
}

impl Cluster {
    /// Starts `n` members with `extra` options each (`--tick-ms`, `--checkpoint-transfers`, ...)
    /// and waits until every one serves HTTP.
    pub async fn start(n: u64, extra: &[&str]) -> Cluster {
        Cluster::start_prepared(n, extra, |_, _| {}).await
    }

    /// Like [`Cluster::start`], but first calls `prepare(id, data_dir)` for every member, with its
    /// (created, empty) data directory, before any member starts: e.g. to mount a [`Tmpfs`] there.
    pub async fn start_prepared(
        n: u64,
        extra: &[&str],
        mut prepare: impl FnMut(u64, &Path),
    ) -> Cluster {
        Cluster::start_with(n, &mut prepare, |m, members| {
            let mut args = member_args(m.id, members);
            args.extend(extra.iter().map(|s| s.to_string()));
            args
        })
        .await
    }

    /// Like [`Cluster::start`], but every member is named `localhost:PORT` in the `--member`
    /// flags — a DNS name each node resolves at every connect, as a StatefulSet pod's stable
    /// name is — and listens for peers on 127.0.0.1.
    pub async fn start_named(n: u64) -> Cluster {
        Cluster::start_with(n, &mut |_, _| {}, |m, members| {
            let mut args = vec!["--node-id".to_string(), m.id.to_string()];
            args.push("--peer-listen".into());
            args.push(localhost(m.peer_port()).to_string());
            for o in members {
                args.push("--member".into());
                args.push(format!(
                    "{}=localhost:{}=localhost:{}",
                    o.id,
                    o.peer_port(),
                    o.http_port()
                ));
            }
            args
        })
        .await
    }

    /// `n` members on fresh ports, each started with `args_of(itself, all members)`.
    async fn start_with(
        n: u64,
        prepare: &mut impl FnMut(u64, &Path),
        args_of: impl Fn(&MemberAddr, &[MemberAddr]) -> Vec<String>,
    ) -> Cluster {
        let data = tempfile::Builder::new()
            .prefix("bulwark-test-cluster")
            .tempdir()
            .expect("tempdir");
        let members = cluster_members(n);
        let mut nodes = Vec::new();
        for m in &members {
            let args = args_of(m, &members);
            let data_dir = data.path().join(format!("node-{}", m.id));
            std::fs::create_dir_all(&data_dir).expect("create a data directory");
            prepare(m.id, &data_dir);
            let (peer, http) = (m.peer_port(), m.http_port());
            nodes.push(ClusterNode::unstarted(m.id, data_dir, peer, http, args));
        }
        // Spawn all before waiting for any, so that they find each other quickly.
        let starts = nodes.iter_mut().map(|n| n.restart());
        futures_join_all(starts).await;
        Cluster {
            nodes,
            members,
            status: StatusClient::new(Duration::from_secs(30), &test_token().1),
            _data: data,
        }
    }

    /// Starts a node that asks to join this cluster: `bulwark start --join --node-id id` with a
    /// `--member` for every node of the cluster so far (original or joined) and one for itself,
    /// plus `extra`, on fresh ports and a data directory next to the others. It is appended to
    /// `nodes` (not to `members`, the original voters); the cluster still has to add it.
    pub async fn start_joining(&mut self, id: u64, extra: &[&str]) -> MemberAddr {
        assert!(
            self.nodes.iter().all(|n| n.id != id),
            "node {id} already exists"
        );
        let base = free_port_range(2);
        let me = MemberAddr {
            id,
            peer: localhost(base),
            http: localhost(base + 1),
        };
        let mut args = vec!["--join".to_string(), "--node-id".into(), id.to_string()];
        for m in self
            .nodes
            .iter()
            .map(ClusterNode::member_addr)
            .chain([me.clone()])
        {
            args.push("--member".into());
            args.push(m.arg());
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        let data_dir = self._data.path().join(format!("node-{id}"));
        self.nodes
            .push(ClusterNode::unstarted(id, data_dir, base, base + 1, args));
        self.node_mut(id).restart().await;
        me
    }

    /// The member with this id.
    pub fn node(&self, id: u64) -> &ClusterNode {
        self.nodes.iter().find(|n| n.id == id).expect("a member id")
    }

    pub fn node_mut(&mut self, id: u64) -> &mut ClusterNode {
        self.nodes
            .iter_mut()
            .find(|n| n.id == id)
            .expect("a member id")
    }

    /// The running nodes' statuses (a node that does not answer is `None`).
    pub async fn view(&self) -> View {
        let running = self.nodes.iter().filter(|n| n.is_running());
        let nodes = running.map(|n| (n.id, Some(localhost(n.http_port))));
        self.status.view(nodes).await
    }

    /// Every running node's status (in id order); nodes that do not answer are left out.
    pub async fn statuses(&self) -> Vec<(u64, Value)> {
        let view = self.view().await;
        view.answered().map(|(id, s)| (id, s.clone())).collect()
    }

    /// A node that reports itself leader, of the highest term among such reports, if any.
    pub async fn current_leader(&self) -> Option<u64> {
        self.view().await.leader().map(|(id, _)| id)
    }

    /// Waits up to `limit` for a leader that every running node agrees on (each running node
    /// reports `leader_id` = it, and it reports itself leader). Panics with the logs if none.
    pub async fn wait_leader(&self, limit: Duration) -> u64 {
        let every = Duration::from_millis(50);
        bulwark_harness::wait_for(limit, every, || async { self.view().await.agreed_leader() })
            .await
            .unwrap_or_else(|last| self.fail(&format!("no agreed leader within {limit:?}: {last}")))
    }

    /// Waits up to `limit` until every running node has applied the same index as the leader's
    /// commit index (the cluster is quiet and converged); returns that index.
    pub async fn wait_converged(&self, limit: Duration) -> u64 {
        let every = Duration::from_millis(100);
        bulwark_harness::wait_for(limit, every, || async { self.view().await.converged() })
            .await
            .unwrap_or_else(|last| {
                self.fail(&format!(
                    "the nodes did not converge within {limit:?}: {last}"
                ))
            })
    }

    fn fail(&self, what: &str) -> ! {
        panic!("{what}\n{}", self.logs())
    }

    /// The tail of every node's latest log, for failure messages.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for n in &self.nodes {
            out.push_str(&format!(
                "--- node {} (run {}), last 40 lines ---\n{}\n",
                n.id,
                n.runs(),
                n.log_tail(40)
            ));
        }
        out
    }
}

/// Awaits every future concurrently (a tiny `join_all` without the `futures` crate).
pub async fn futures_join_all<F: std::future::Future>(
    futures: impl IntoIterator<Item = F>,
) -> Vec<F::Output> {
    let mut pinned: Vec<std::pin::Pin<Box<F>>> = futures.into_iter().map(Box::pin).collect();
    let mut outputs: Vec<Option<F::Output>> = (0..pinned.len()).map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (i, f) in pinned.iter_mut().enumerate() {
            if outputs[i].is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => outputs[i] = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    outputs
        .into_iter()
        .map(|o| o.expect("every future finished"))
        .collect()
}

/// A read with `?consistency=stale` (from this node's own state), which must answer 200 or
/// 404; `None` on 404. A 429 (the token past a rate limit a test set low) is waited out, for
/// at most 10 s: it says nothing about the state read.
pub async fn stale_get(http: &Http, path: &str) -> Option<Value> {
    let sep = if path.contains('?') { '&' } else { '?' };
    let full = format!("{path}{sep}consistency=stale");
    let mut r = http.get(&full).await;
    for _ in 0..200 {
        if r.status != 429 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        r = http.get(&full).await;
    }
    match r.status {
        200 => Some(r.json),
        404 => None,
        s => panic!("GET {full} on {}: {s} {}", http.base, r.text),
    }
}

/// Every transfer a node holds that touches `accounts` (stale reads of each account's whole
/// history), by id.
pub async fn all_transfers(
    http: &Http,
    accounts: &[u64],
) -> std::collections::BTreeMap<u64, Value> {
    let mut out = std::collections::BTreeMap::new();
    for &account in accounts {
        let mut after: Option<u64> = None;
        loop {
            let path = match after {
                Some(a) => format!("/v1/accounts/{account}/transfers?limit=8190&after={a}"),
                None => format!("/v1/accounts/{account}/transfers?limit=8190"),
            };
            let page = stale_get(http, &path)
                .await
                .unwrap_or_else(|| panic!("account {account} missing on {}", http.base));
            for t in page["transfers"].as_array().expect("transfers") {
                out.insert(t["id"].dec().expect("id"), t.clone());
            }
            match page.get("next_after") {
                Some(next) => after = Some(next.dec().expect("next_after")),
                None => break,
            }
        }
    }
    out
}

/// Every one of `accounts` as a node holds it (stale reads), by id.
pub async fn all_accounts(http: &Http, accounts: &[u64]) -> std::collections::BTreeMap<u64, Value> {
    let mut out = std::collections::BTreeMap::new();
    for &id in accounts {
        let a = stale_get(http, &format!("/v1/accounts/{id}"))
            .await
            .unwrap_or_else(|| panic!("account {id} missing on {}", http.base));
        out.insert(id, a);
    }
    out
}

#[allow(unused_imports)]
pub use bulwark_tmpfs::Tmpfs;

/// Writes a file `filler` into `dir` until its file system is full (`ENOSPC`); returns its path.
pub fn fill_disk(dir: &Path) -> PathBuf {
    bulwark_tmpfs::fill(dir).expect("fill the disk").0
}

/// POSTs `body` to `path` until an answer other than 503 comes (503 and connection errors are
/// retried with the same body, as a client would, for up to `patience`), and returns it.
pub async fn post_until_answered(
    http: &Http,
    path: &str,
    body: &Value,
    patience: Duration,
) -> Resp {
    let deadline = std::time::Instant::now() + patience;
    loop {
        match http
            .try_post(path, serde_json::to_vec(body).expect("encode"))
            .await
        {
            Ok(r) if r.status != 503 => return r,
            _ => {}
        }
        assert!(
            std::time::Instant::now() < deadline,
            "POST {path} {body} to {} got no answer but 503 within {patience:?}",
            http.base
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Like [`post_until_answered`], but the answer must be 200.
pub async fn write_until_answered(
    http: &Http,
    path: &str,
    body: &Value,
    patience: Duration,
) -> Resp {
    let r = post_until_answered(http, path, body, patience).await;
    assert_eq!(
        r.status, 200,
        "POST {path} {body} to {}: {}",
        http.base, r.text
    );
    r
}

/// A running `bulwark cluster local`; interrupted (SIGINT) and reaped on drop if a test fails.
pub struct Local(pub Option<std::process::Child>);

impl Drop for Local {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            // SAFETY: kill(2) on our own unreaped child.
            unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
            if wait_exit(&mut child, Duration::from_secs(30)).is_none() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// Starts `bulwark cluster local --nodes 3` with its data under `root`, HTTP ports from
/// `http_port`, peer ports from `peer_port`, and `extra` options; its output goes to `out`.
pub fn cluster_local(
    root: &Path,
    http_port: u16,
    peer_port: u16,
    extra: &[&str],
    out: &Path,
) -> Local {
    let out = std::fs::File::create(out).expect("create the output file");
    let child = std::process::Command::new(bin())
        .args(["cluster", "local", "--nodes", "3", "--data-dir"])
        .arg(root)
        .args(["--http-port", &http_port.to_string()])
        .args(["--peer-port", &peer_port.to_string()])
        .args(extra)
        .env("NO_COLOR", "1")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(out.try_clone().expect("clone"))
        .stderr(out)
        .spawn()
        .expect("spawn bulwark cluster local");
    Local(Some(child))
}

/// `bulwark chaos ARGS`: its exit code, stdout and stderr.
pub fn chaos(args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(bin())
        .arg("chaos")
        .args(args)
        .output()
        .expect("run bulwark chaos");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The descriptions of a history's nemesis windows (their starts).
pub fn window_starts(history: &str) -> Vec<String> {
    history
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["kind"] == "nemesis" && v["action"] == "start")
        .map(|v| v["description"].as_str().unwrap_or("").to_string())
        .collect()
}

/// A ledger field of an answer as a number: the API writes every integer wider than 32 bits
/// (ids, amounts, balances, timestamps) as a decimal string; what a test sent may be a number.
#[allow(dead_code)]
pub trait DecField {
    fn dec(&self) -> Option<u64>;
}

impl DecField for Value {
    fn dec(&self) -> Option<u64> {
        self.as_u64().or_else(|| self.as_str()?.parse().ok())
    }
}
