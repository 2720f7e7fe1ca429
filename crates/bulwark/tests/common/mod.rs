//! Shared helpers of the integration tests of the `bulwark` binary: a node process on a free
//! 127.0.0.1 port with its own data directory, started, killed (`SIGKILL`), stopped (`SIGTERM`)
//! and restarted on the same directory; a small JSON HTTP client; readers of the write-ahead log
//! format (segment files and record offsets) for the recovery tests.
//!
//! Every test binary includes this module but uses only part of it.
#![allow(dead_code)]

use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;

/// The binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_bulwark")
}

/// A port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("local addr").port()
}

/// Removes ANSI colour escapes from log text.
pub fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' && chars.peek() == Some(&'[') {
            chars.next();
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// A `bulwark start` command on `data_dir` and `port`, stderr going to `stderr_path`.
fn start_command(data_dir: &Path, port: u16, args: &[String], stderr_path: &Path) -> Command {
    let stderr = File::create(stderr_path).expect("create the node's stderr file");
    let mut cmd = Command::new(bin());
    cmd.arg("start")
        .arg("--data-dir")
        .arg(data_dir)
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .args(args)
        .env_remove("BULWARK_DATA_DIR")
        .env_remove("BULWARK_LISTEN")
        .env_remove("BULWARK_ADDR")
        .env("NO_COLOR", "1")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(stderr));
    cmd
}

/// Waits up to `limit` for `child` to exit.
pub fn wait_exit(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// One `bulwark start` process and the data directory it lives on, across restarts.
pub struct Node {
    pub data_dir: PathBuf,
    _data: Option<TempDir>,
    logs: TempDir,
    port: u16,
    args: Vec<String>,
    child: Option<Child>,
    /// How many times a process was started; run `n` logs to `run-n.log`.
    runs: usize,
    pub http: Http,
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

    /// A node on `data_dir` (which the caller owns) that is not started yet.
    pub fn unstarted(data_dir: PathBuf, args: &[&str]) -> Node {
        let port = free_port();
        Node {
            data_dir,
            _data: None,
            logs: tempfile::Builder::new()
                .prefix("bulwark-test-logs")
                .tempdir()
                .expect("tempdir"),
            port,
            args: args.iter().map(|s| s.to_string()).collect(),
            child: None,
            runs: 0,
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

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("the node is running").id()
    }

    /// Replaces the extra `start` options used by the next restart.
    pub fn set_args(&mut self, args: &[&str]) {
        self.args = args.iter().map(|s| s.to_string()).collect();
    }

    fn log_path(&self, run: usize) -> PathBuf {
        self.logs.path().join(format!("run-{run}.log"))
    }

    /// The stderr of the latest run, without colour codes.
    pub fn last_log(&self) -> String {
        self.log_of(self.runs)
    }

    pub fn log_of(&self, run: usize) -> String {
        strip_ansi(&std::fs::read_to_string(self.log_path(run)).unwrap_or_default())
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
        assert!(self.child.is_none(), "the node is already running");
        for _attempt in 0..5 {
            // A fresh client: no pooled connection to the previous process survives.
            self.http = Http::new(self.port);
            self.runs += 1;
            let mut child = start_command(
                &self.data_dir,
                self.port,
                &self.args,
                &self.log_path(self.runs),
            )
            .spawn()
            .expect("spawn bulwark start");
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                if let Some(status) = child.try_wait().expect("try_wait") {
                    let log = self.last_log();
                    if log.contains("cannot listen") {
                        // Someone took the port in the meantime: use another one.
                        self.port = free_port();
                        break;
                    }
                    return Err((status, log));
                }
                if self.http.live().await {
                    self.child = Some(child);
                    return Ok(());
                }
                if Instant::now() >= deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "the node did not answer /health/live within 60 s:\n{}",
                        self.last_log()
                    );
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        panic!("could not find a free port for the node");
    }

    /// Panics, with the log, if the process has exited on its own.
    pub fn assert_running(&mut self) {
        let child = self.child.as_mut().expect("the node was started");
        if let Some(status) = child.try_wait().expect("try_wait") {
            panic!(
                "the node exited on its own with {status}:\n{}",
                self.last_log()
            );
        }
    }

    /// `kill -9`: the process dies at once, with no chance to write anything more.
    pub fn kill9(&mut self) {
        self.assert_running();
        kill9_child(self.child.take().expect("the node is running"));
    }

    /// `SIGTERM`: a graceful shutdown; returns the exit status.
    pub fn sigterm(&mut self) -> ExitStatus {
        self.assert_running();
        let child = self.child.take().expect("the node is running");
        sigterm_child(child, "the node", || self.last_log())
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Runs `bulwark start` on `data_dir` expecting it to fail: returns the exit status (or `None`
/// if it was still running after `limit`, in which case it is killed) and its stderr.
pub fn start_expecting_exit(
    data_dir: &Path,
    args: &[&str],
    limit: Duration,
) -> (Option<ExitStatus>, String) {
    let logs = tempfile::tempdir().expect("tempdir");
    let log = logs.path().join("start.log");
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let mut child = start_command(data_dir, free_port(), &args, &log)
        .spawn()
        .expect("spawn bulwark start");
    let status = wait_exit(&mut child, limit);
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    let text = strip_ansi(&std::fs::read_to_string(&log).unwrap_or_default());
    (status, text)
}

/// Runs a `bulwark` client command; returns its exit code, stdout and stderr.
pub async fn cli(args: &[&str]) -> (i32, String, String) {
    let out = tokio::process::Command::new(bin())
        .args(args)
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
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .connect_timeout(Duration::from_secs(5))
            .no_proxy()
            .build()
            .expect("http client");
        Http { client, base }
    }

    async fn answer(response: reqwest::Response) -> Result<Resp, reqwest::Error> {
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
                Some(next) => after = Some(next.as_u64().expect("next_after is an integer")),
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
    let field = |name: &str| t.get(name).and_then(Value::as_u64).unwrap_or(0);
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
        "user_data": field("user_data"),
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
pub use bulwark_chaos::rng::Rng;

/// The seed of a randomized test: `BULWARK_TEST_SEED` if set, else `default`.
pub fn seed(default: u64) -> u64 {
    std::env::var("BULWARK_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// `count` consecutive ports on 127.0.0.1, below the kernel's ephemeral range (so that no
/// outgoing connection borrows one between a node's kill and its restart), each free a moment
/// ago. The start is drawn at random, so tests running in parallel (threads or processes) do
/// not collide.
pub fn free_port_range(count: u16) -> u16 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static CALLS: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let mut rng = Rng::new(
        nanos ^ (u64::from(std::process::id()) << 32) ^ CALLS.fetch_add(1, Ordering::Relaxed),
    );
    for _attempt in 0..1000 {
        let base = rng.range(12_000, 32_000 - u64::from(count)) as u16;
        let all_free = (base..base + count).all(|p| TcpListener::bind(("127.0.0.1", p)).is_ok());
        if all_free {
            return base;
        }
    }
    panic!("no {count} consecutive free ports found");
}

/// One member of a test cluster: its id and ports.
#[derive(Clone, Debug)]
pub struct MemberAddr {
    pub id: u64,
    pub peer_port: u16,
    pub http_port: u16,
}

impl MemberAddr {
    /// The `--member` value: `ID=PEER_ADDR=HTTP_ADDR`.
    pub fn arg(&self) -> String {
        format!(
            "{}=127.0.0.1:{}=127.0.0.1:{}",
            self.id, self.peer_port, self.http_port
        )
    }
}

/// `n` members with ids `1..=n` on fresh ports.
pub fn cluster_members(n: u64) -> Vec<MemberAddr> {
    let base = free_port_range(2 * n as u16);
    (1..=n)
        .map(|id| MemberAddr {
            id,
            peer_port: base + (id - 1) as u16,
            http_port: base + (n + id - 1) as u16,
        })
        .collect()
}

/// The `bulwark start` options of member `id` of `members`: `--node-id` and every `--member`.
pub fn member_args(id: u64, members: &[MemberAddr]) -> Vec<String> {
    let mut args = vec!["--node-id".to_string(), id.to_string()];
    for m in members {
        args.push("--member".into());
        args.push(m.arg());
    }
    args
}

/// One `bulwark start` cluster member process on its own data directory, across kills and
/// restarts. Its ports are fixed (every member's `--member` list names them).
pub struct ClusterNode {
    pub id: u64,
    pub data_dir: PathBuf,
    pub http_port: u16,
    pub peer_port: u16,
    logs: TempDir,
    args: Vec<String>,
    /// Extra environment of the next runs (e.g. `BULWARK_CRASH_AT`).
    pub env: Vec<(String, String)>,
    child: Option<Child>,
    runs: usize,
    pub http: Http,
}

impl ClusterNode {
    /// Waits up to `limit` for the process to exit on its own; `None` if it still runs.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let child = self.child.as_mut().expect("the node was started");
        let status = wait_exit(child, limit)?;
        self.child = None;
        Some(status)
    }

    /// A member that is not started yet, on `data_dir` and the given ports; `args` are all its
    /// `start` options but `--data-dir` and `--listen` (`--node-id`, `--member`s, `--join`, ...).
    pub fn unstarted(
        id: u64,
        data_dir: PathBuf,
        peer_port: u16,
        http_port: u16,
        args: Vec<String>,
    ) -> ClusterNode {
        ClusterNode {
            id,
            data_dir,
            http_port,
            peer_port,
            logs: tempfile::Builder::new()
                .prefix("bulwark-test-logs")
                .tempdir()
                .expect("tempdir"),
            args,
            env: Vec::new(),
            child: None,
            runs: 0,
            http: Http::new(http_port),
        }
    }

    /// The `start` options every run of this node uses (its original flags).
    pub fn args(&self) -> &[String] {
        &self.args
    }

    /// This member's `--member` value.
    pub fn member_addr(&self) -> MemberAddr {
        MemberAddr {
            id: self.id,
            peer_port: self.peer_port,
            http_port: self.http_port,
        }
    }

    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("the node is running").id()
    }

    fn log_path(&self, run: usize) -> PathBuf {
        self.logs.path().join(format!("run-{run}.log"))
    }

    /// The stderr of the latest run, without colour codes.
    pub fn last_log(&self) -> String {
        self.log_of(self.runs)
    }

    pub fn log_of(&self, run: usize) -> String {
        strip_ansi(&std::fs::read_to_string(self.log_path(run)).unwrap_or_default())
    }

    /// Starts the process (again) on its data directory and waits until `/health/live` answers
    /// (that is, the node recovered and serves HTTP; it need not have a leader). Retries a few
    /// times if a port is still taken; panics, with the log, if the node exits otherwise.
    pub async fn restart(&mut self) {
        assert!(self.child.is_none(), "node {} is already running", self.id);
        for attempt in 0..10 {
            self.http = Http::new(self.http_port);
            self.runs += 1;
            // `--listen` is ignored in cluster mode (the HTTP address is this member's).
            let mut child = start_command(
                &self.data_dir,
                self.http_port,
                &self.args,
                &self.log_path(self.runs),
            )
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .spawn()
            .expect("spawn bulwark start");
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                if let Some(status) = child.try_wait().expect("try_wait") {
                    let log = self.last_log();
                    if log.contains("cannot listen") && attempt < 9 {
                        tokio::time::sleep(Duration::from_millis(500)).await;
                        break;
                    }
                    panic!("node {} exited with {status} at start:\n{log}", self.id);
                }
                if self.http.live().await {
                    self.child = Some(child);
                    return;
                }
                if Instant::now() >= deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "node {} did not answer /health/live within 60 s:\n{}",
                        self.id,
                        self.last_log()
                    );
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        panic!("node {}: its ports stayed taken", self.id);
    }

    /// Panics, with the log, if the process has exited on its own.
    pub fn assert_running(&mut self) {
        let id = self.id;
        let child = self.child.as_mut().expect("the node was started");
        if let Some(status) = child.try_wait().expect("try_wait") {
            panic!(
                "node {id} exited on its own with {status}:\n{}",
                self.last_log()
            );
        }
    }

    /// `kill -9`.
    pub fn kill9(&mut self) {
        self.assert_running();
        kill9_child(self.child.take().expect("the node is running"));
    }

    /// `SIGTERM`: a graceful shutdown; returns the exit status.
    pub fn sigterm(&mut self) -> ExitStatus {
        self.assert_running();
        let child = self.child.take().expect("the node is running");
        let label = format!("node {}", self.id);
        sigterm_child(child, &label, || self.last_log())
    }

    /// `GET /v1/status`, or `None` if the node does not answer it with 200.
    pub async fn try_status(&self) -> Option<Value> {
        self.child.as_ref()?;
        match self.http.try_get("/v1/status").await {
            Ok(r) if r.status == 200 => Some(r.json),
            _ => None,
        }
    }
}

impl Drop for ClusterNode {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A cluster of `bulwark start` processes on 127.0.0.1, each on its own temporary data
/// directory, ids `1..=n`.
pub struct Cluster {
    pub nodes: Vec<ClusterNode>,
    pub members: Vec<MemberAddr>,
    _data: TempDir,
}

impl Cluster {
    /// Starts `n` members with `extra` options each (`--tick-ms`, `--checkpoint-transfers`, ...)
    /// and waits until every one serves HTTP.
    pub async fn start(n: u64, extra: &[&str]) -> Cluster {
        let data = tempfile::Builder::new()
            .prefix("bulwark-test-cluster")
            .tempdir()
            .expect("tempdir");
        let members = cluster_members(n);
        let mut nodes = Vec::new();
        for m in &members {
            let mut args = member_args(m.id, &members);
            args.extend(extra.iter().map(|s| s.to_string()));
            nodes.push(ClusterNode {
                id: m.id,
                data_dir: data.path().join(format!("node-{}", m.id)),
                http_port: m.http_port,
                peer_port: m.peer_port,
                logs: tempfile::Builder::new()
                    .prefix("bulwark-test-logs")
                    .tempdir()
                    .expect("tempdir"),
                args,
                env: Vec::new(),
                child: None,
                runs: 0,
                http: Http::new(m.http_port),
            });
        }
        // Spawn all before waiting for any, so that they find each other quickly.
        let starts = nodes.iter_mut().map(|n| n.restart());
        futures_join_all(starts).await;
        Cluster {
            nodes,
            members,
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
            peer_port: base,
            http_port: base + 1,
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
        self.nodes.push(ClusterNode::unstarted(
            id,
            data_dir,
            me.peer_port,
            me.http_port,
            args,
        ));
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

    /// Every running node's status (in id order); nodes that do not answer are left out.
    pub async fn statuses(&self) -> Vec<(u64, Value)> {
        let mut out = Vec::new();
        for n in &self.nodes {
            if let Some(s) = n.try_status().await {
                out.push((n.id, s));
            }
        }
        out
    }

    /// A node that reports itself leader, of the highest term among such reports, if any.
    pub async fn current_leader(&self) -> Option<u64> {
        self.statuses()
            .await
            .into_iter()
            .filter(|(_, s)| s["role"] == "leader")
            .max_by_key(|(_, s)| s["term"].as_u64().unwrap_or(0))
            .map(|(id, _)| id)
    }

    /// Waits up to `limit` for a leader that every running node agrees on (each running node
    /// reports `leader_id` = it, and it reports itself leader). Panics with the logs if none.
    pub async fn wait_leader(&self, limit: Duration) -> u64 {
        let deadline = Instant::now() + limit;
        loop {
            let statuses = self.statuses().await;
            let running = self.nodes.iter().filter(|n| n.is_running()).count();
            if statuses.len() == running {
                if let Some((leader, _)) = statuses.iter().find(|(_, s)| s["role"] == "leader") {
                    let agreed = statuses
                        .iter()
                        .all(|(_, s)| s["leader_id"].as_u64() == Some(*leader));
                    if agreed {
                        return *leader;
                    }
                }
            }
            if Instant::now() >= deadline {
                panic!(
                    "no agreed leader within {limit:?}; statuses: {statuses:?}\n{}",
                    self.logs()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits up to `limit` until every running node has applied the same index as the leader's
    /// commit index (the cluster is quiet and converged); returns that index.
    pub async fn wait_converged(&self, limit: Duration) -> u64 {
        let deadline = Instant::now() + limit;
        loop {
            let statuses = self.statuses().await;
            let running = self.nodes.iter().filter(|n| n.is_running()).count();
            let leader_commit = statuses
                .iter()
                .find(|(_, s)| s["role"] == "leader")
                .and_then(|(_, s)| s["commit_index"].as_u64());
            if let Some(commit) = leader_commit {
                let all_applied = statuses
                    .iter()
                    .all(|(_, s)| s["applied_index"].as_u64() == Some(commit));
                if statuses.len() == running && all_applied {
                    return commit;
                }
            }
            if Instant::now() >= deadline {
                panic!(
                    "the nodes did not converge within {limit:?}; statuses: {statuses:?}\n{}",
                    self.logs()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The tail of every node's latest log, for failure messages.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for n in &self.nodes {
            let log = n.last_log();
            let lines: Vec<&str> = log.lines().collect();
            let tail = lines[lines.len().saturating_sub(40)..].join("\n");
            out.push_str(&format!(
                "--- node {} (run {}), last 40 lines ---\n{tail}\n",
                n.id, n.runs
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
/// 404; `None` on 404.
pub async fn stale_get(http: &Http, path: &str) -> Option<Value> {
    let sep = if path.contains('?') { '&' } else { '?' };
    let full = format!("{path}{sep}consistency=stale");
    let r = http.get(&full).await;
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
                out.insert(t["id"].as_u64().expect("id"), t.clone());
            }
            match page.get("next_after") {
                Some(next) => after = Some(next.as_u64().expect("next_after")),
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

/// `kill -9` a node process and reap it.
fn kill9_child(mut child: Child) {
    child.kill().expect("SIGKILL the node");
    child.wait().expect("reap the node");
}

/// `SIGTERM` a node process and wait up to 60 s for it to exit; panics with `log()` if it
/// does not.
fn sigterm_child(mut child: Child, label: &str, log: impl Fn() -> String) -> ExitStatus {
    // SAFETY: kill(2) on the pid of our own child, which has not been reaped yet.
    let rc = unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    assert_eq!(rc, 0, "kill(SIGTERM) failed");
    match wait_exit(&mut child, Duration::from_secs(60)) {
        Some(status) => status,
        None => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{label} did not stop within 60 s of SIGTERM:\n{}", log());
        }
    }
}

#[allow(unused_imports)]
pub use bulwark_tmpfs::Tmpfs;

/// Writes a file `filler` into `dir` until its file system is full (`ENOSPC`); returns its path.
pub fn fill_disk(dir: &Path) -> PathBuf {
    bulwark_tmpfs::fill(dir).expect("fill the disk").0
}

impl Cluster {
    /// Like [`Cluster::start`], but first calls `prepare(id, data_dir)` for every member, with its
    /// (created, empty) data directory, before any member starts: e.g. to mount a [`Tmpfs`] there.
    pub async fn start_prepared(
        n: u64,
        extra: &[&str],
        mut prepare: impl FnMut(u64, &Path),
    ) -> Cluster {
        let data = tempfile::Builder::new()
            .prefix("bulwark-test-cluster")
            .tempdir()
            .expect("tempdir");
        let members = cluster_members(n);
        let mut nodes = Vec::new();
        for m in &members {
            let mut args = member_args(m.id, &members);
            args.extend(extra.iter().map(|s| s.to_string()));
            let data_dir = data.path().join(format!("node-{}", m.id));
            std::fs::create_dir_all(&data_dir).expect("create a data directory");
            prepare(m.id, &data_dir);
            nodes.push(ClusterNode::unstarted(
                m.id,
                data_dir,
                m.peer_port,
                m.http_port,
                args,
            ));
        }
        let starts = nodes.iter_mut().map(|n| n.restart());
        futures_join_all(starts).await;
        Cluster {
            nodes,
            members,
            _data: data,
        }
    }
}
