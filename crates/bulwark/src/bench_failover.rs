//! `bulwark bench-failover`: how long a cluster cannot take writes when its leader dies.
//!
//! It starts `--nodes` replicas of this same binary (`bulwark start --node-id ... --member ...`,
//! each on its own data directory, free loopback ports and a log file), creates two accounts,
//! and starts a background writer: every 5 ms it sends one new transfer (a fresh id each time) to
//! the next live node, round robin, without waiting for the previous answer (at most 64 in
//! flight, 5 s timeout each), and records when each request was sent and when it succeeded.
//!
//! Then, `--kills` times: find the leader, note t0, SIGKILL it, and wait for the first write
//! *sent after t0* to succeed; its completion time minus t0 is the failover time (detection by
//! election timeout, election, and the first commit in the new term, as a client sees it,
//! including forwarding by followers). Then restart the killed node on its data directory and
//! wait until every node names the same leader and their applied indexes are within
//! [`SYNC_SLACK`] entries (the resync time), before the next kill.
//!
//! The report gives min/median/p99/max of the failover times (percentiles by linear
//! interpolation between the closest ranks), the same for the resync times, one line per kill,
//! and what the writer saw (writes acknowledged, failures by kind). Every child is killed when
//! the command ends, on an error and on Ctrl-C/SIGTERM too (and, on Linux, if this process
//! dies: the children get SIGKILL from the kernel through `PR_SET_PDEATHSIG`).
//!
//! Exit codes: 0 measured every kill; 1 a failover or resync did not finish in time, or a node
//! died on its own; 2 bad options; 5 the cluster could not be started; 130 interrupted.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bulwark_harness::{members, ports_from, LocalCluster, StatusClient};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::json;

/// Time between two writes of the background writer.
pub(crate) const WRITE_INTERVAL: Duration = Duration::from_millis(5);
/// Requests the writer keeps in flight at most.
const MAX_IN_FLIGHT: usize = 64;
/// Timeout of one write.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// How far apart the nodes' applied indexes may be for the cluster to count as in sync.
pub(crate) const SYNC_SLACK: u64 = 20;
/// Longest wait for the first write after a kill.
const FAILOVER_LIMIT: Duration = Duration::from_secs(60);
/// Longest wait for the cluster to start, or to agree again after a restart.
pub(crate) const SYNC_LIMIT: Duration = Duration::from_secs(120);

#[derive(clap::Args)]
pub struct FailoverArgs {
    /// Voters to start: 3, 5 or 7.
    #[arg(long, default_value_t = 3)]
    pub nodes: u64,
    /// Leader kills to measure.
    #[arg(long, default_value_t = 20)]
    pub kills: u32,
    /// Each node keeps its data and log in `<data-dir>/node-<id>` (default: a temporary
    /// directory, removed at the end).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Node i's HTTP API listens on this port + i - 1 (default: free ports).
    #[arg(long)]
    pub http_port: Option<u16>,
    /// Node i's peer transport listens on this port + i - 1 (default: free ports).
    #[arg(long)]
    pub peer_port: Option<u16>,
    /// Print the report as one JSON object.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(args: FailoverArgs) -> ExitCode {
    if args.nodes < 3 || args.nodes.is_multiple_of(2) || args.nodes > 7 {
        eprintln!("error: --nodes must be 3, 5 or 7 (a leader must be able to die)");
        return ExitCode::from(2);
    }
    if args.kills == 0 {
        eprintln!("error: --kills must be at least 1");
        return ExitCode::from(2);
    }
    let mut cluster = match start_cluster(
        args.nodes,
        args.data_dir.clone(),
        args.http_port,
        args.peer_port,
    ) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: cannot start the cluster: {e}");
            return ExitCode::from(5);
        }
    };
    let interrupted = crate::server::shutdown_signal();
    let code = tokio::select! {
        code = measure(&args, &mut cluster) => code,
        _ = interrupted => {
            eprintln!("interrupted; stopping the nodes");
            ExitCode::from(130)
        }
    };
    // Dropping the cluster kills every node (and removes a temporary data directory).
    drop(cluster);
    code
}

async fn measure(args: &FailoverArgs, cluster: &mut LocalCluster) -> ExitCode {
    let status_client = StatusClient::new(Duration::from_secs(1), &cluster.token);
    let started = Instant::now();
    if let Err(e) = cluster
        .wait_in_sync(&status_client, SYNC_SLACK, SYNC_LIMIT)
        .await
    {
        eprintln!("error: the cluster did not come up: {e}");
        return ExitCode::from(5);
    }
    let startup = started.elapsed();

    let id_base = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(1)
        .saturating_mul(1_000_000);
    let writer = match Writer::start(cluster, id_base).await {
        Ok(w) => w,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(5);
        }
    };

    let progress = ProgressBar::new(args.kills as u64);
    if std::io::stderr().is_terminal() {
        if let Ok(style) =
            ProgressStyle::with_template("{elapsed_precise} [{wide_bar}] {pos}/{len} kills {msg}")
        {
            progress.set_style(style);
        }
        progress.enable_steady_tick(Duration::from_millis(200));
    } else {
        progress.set_draw_target(ProgressDrawTarget::hidden());
    }

    let mut kills = Vec::with_capacity(args.kills as usize);
    let mut error = None;
    for k in 1..=args.kills {
        match kill_once(cluster, &status_client, &writer, k).await {
            Ok(kill) => {
                progress.set_message(format!(
                    "last: node {} down, {:.0} ms to the next write",
                    kill.node,
                    kill.failover.as_secs_f64() * 1000.0
                ));
                progress.inc(1);
                kills.push(kill);
            }
            Err(e) => {
                error = Some(format!("kill {k}: {e}"));
                break;
            }
        }
    }
    progress.finish_and_clear();
    writer.stop.store(true, Ordering::Relaxed);

    let report = Report {
        nodes: args.nodes,
        kills,
        startup,
        ok_writes: writer.ok.load(Ordering::Relaxed),
        failures: std::mem::take(&mut *writer.failures.lock().expect("failures lock")),
        data_dir: cluster.root.clone(),
    };
    if args.json {
        println!("{}", report.json(error.as_deref()));
    } else {
        print!("{}", report.text());
    }
    match error {
        None => ExitCode::SUCCESS,
        Some(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}

struct Kill {
    number: u32,
    node: u64,
    term_before: u64,
    new_leader: Option<u64>,
    failover: Duration,
    resync: Duration,
}

async fn kill_once(
    cluster: &mut LocalCluster,
    status_client: &StatusClient,
    writer: &Writer,
    number: u32,
) -> Result<Kill, String> {
    let (leader, term_before) = leader(cluster, status_client).await?;
    let index = cluster
        .index_of(leader)
        .expect("a leader id is a member id");
    let cursor = writer.successes.lock().expect("successes lock").len();
    writer.live[index].store(false, Ordering::Relaxed);
    let t0 = Instant::now();
    cluster.nodes[index].kill9();

    // The first write sent after t0 that succeeds. Successes are pushed in completion order,
    // so the first one found is the earliest.
    let failover = loop {
        let found = writer.successes.lock().expect("successes lock")[cursor..]
            .iter()
            .find(|(sent, _)| *sent >= t0)
            .map(|&(_, done)| done - t0);
        if let Some(d) = found {
            break d;
        }
        if t0.elapsed() > FAILOVER_LIMIT {
            return Err(format!(
                "no write succeeded in {} s after node {leader} was killed",
                FAILOVER_LIMIT.as_secs()
            ));
        }
        cluster.check_alive()?;
        tokio::time::sleep(Duration::from_millis(2)).await;
    };

    let restarted = Instant::now();
    cluster.spawn(index)?;
    writer.live[index].store(true, Ordering::Relaxed);
    let new_leader = cluster
        .wait_in_sync(status_client, SYNC_SLACK, SYNC_LIMIT)
        .await?;
    Ok(Kill {
        number,
        node: leader,
        term_before,
        new_leader: Some(new_leader),
        failover,
        resync: restarted.elapsed(),
    })
}

fn http_client(timeout: Duration, token: &str) -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .default_headers(bulwark_harness::bearer_headers(token))
        .no_proxy()
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(1))
        .timeout(timeout)
        .build()
        .map_err(|e| format!("cannot build the HTTP client: {e}"))
}

// ---------------------------------------------------------------------------------------------
// The nodes

/// Starts the cluster: member i on `<data-dir>/node-i` (or a temporary directory), its ports from
/// the options or free ones; every node is killed with this process (`PR_SET_PDEATHSIG`: they
/// are started from the runtime's main thread, which lives as long as the process).
pub(crate) fn start_cluster(
    nodes: u64,
    data_dir: Option<PathBuf>,
    http_port: Option<u16>,
    peer_port: Option<u16>,
) -> Result<LocalCluster, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this program: {e}"))?;
    let n = nodes as usize;
    let http_ports = ports_from(http_port, n)?;
    let peer_ports = ports_from(peer_port, n)?;
    let members = members(&peer_ports, &http_ports);
    let mut cluster = LocalCluster::new(&exe, data_dir, members, &[])?;
    cluster = cluster.killed_with_parent();
    cluster.spawn_all()?;
    Ok(cluster)
}

/// The leader and its term, from the node that says it leads (the highest term if two do).
pub(crate) async fn leader(
    cluster: &mut LocalCluster,
    client: &StatusClient,
) -> Result<(u64, u64), String> {
    let deadline = Instant::now() + SYNC_LIMIT;
    loop {
        if let Some(leader) = cluster.view(client).await.leader() {
            return Ok(leader);
        }
        if Instant::now() > deadline {
            return Err("no node says it is the leader".into());
        }
        cluster.check_alive()?;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// The background writer

pub(crate) struct Writer {
    /// Per node (by index): whether the writer may send to it.
    pub(crate) live: Arc<Vec<AtomicBool>>,
    /// (sent, succeeded) of every successful write, in completion order.
    pub(crate) successes: Arc<Mutex<Vec<(Instant, Instant)>>>,
    pub(crate) ok: Arc<AtomicU64>,
    /// Failed writes by kind of failure (the writer never retries: each is a first-try failure).
    pub(crate) failures: Arc<Mutex<BTreeMap<String, u64>>>,
    /// Writes sent and not yet answered.
    pub(crate) in_flight: Arc<AtomicUsize>,
    pub(crate) stop: Arc<AtomicBool>,
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

impl Writer {
    /// Creates the two accounts, then starts writing.
    pub(crate) async fn start(cluster: &LocalCluster, id_base: u64) -> Result<Writer, String> {
        let client = http_client(WRITE_TIMEOUT, &cluster.token)?;
        let urls: Vec<String> = cluster
            .members
            .iter()
            .map(|m| format!("http://{}", m.http))
            .collect();
        let accounts = format!(
            r#"[{{"id":{},"ledger":1,"code":1}},{{"id":{},"ledger":1,"code":1}}]"#,
            id_base + 1,
            id_base + 2
        );
        let deadline = Instant::now() + SYNC_LIMIT;
        let mut attempt = 0usize;
        loop {
            let url = format!("{}/v1/accounts", urls[attempt % urls.len()]);
            attempt += 1;
            match post(&client, &url, accounts.clone()).await {
                Ok(results) if results.iter().all(|r| r == "ok" || r == "exists") => break,
                Ok(results) => return Err(format!("creating the accounts: {results:?}")),
                Err(e) if Instant::now() > deadline => {
                    return Err(format!("cannot create the accounts: {e}"));
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }

        let writer = Writer {
            live: Arc::new(urls.iter().map(|_| AtomicBool::new(true)).collect()),
            successes: Arc::new(Mutex::new(Vec::new())),
            ok: Arc::new(AtomicU64::new(0)),
            failures: Arc::new(Mutex::new(BTreeMap::new())),
            in_flight: Arc::new(AtomicUsize::new(0)),
            stop: Arc::new(AtomicBool::new(false)),
        };
        let live = writer.live.clone();
        let successes = writer.successes.clone();
        let ok = writer.ok.clone();
        let failures = writer.failures.clone();
        let stop = writer.stop.clone();
        let in_flight = writer.in_flight.clone();
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(WRITE_INTERVAL);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut next_node = 0usize;
            let mut next_id = id_base + 1000;
            while !stop.load(Ordering::Relaxed) {
                ticker.tick().await;
                if in_flight.load(Ordering::Relaxed) >= MAX_IN_FLIGHT {
                    continue;
                }
                // The next live node, round robin.
                let Some(node) = (0..urls.len())
                    .map(|k| (next_node + k) % urls.len())
                    .find(|&i| live[i].load(Ordering::Relaxed))
                else {
                    continue;
                };
                next_node = node + 1;
                next_id += 1;
                let body = format!(
                    r#"[{{"id":{next_id},"debit_account_id":{},"credit_account_id":{},"amount":1,"ledger":1,"code":1}}]"#,
                    id_base + 1 + (next_id & 1),
                    id_base + 2 - (next_id & 1),
                );
                let url = format!("{}/v1/transfers", urls[node]);
                let (client, successes, ok, failures, in_flight) = (
                    client.clone(),
                    successes.clone(),
                    ok.clone(),
                    failures.clone(),
                    in_flight.clone(),
                );
                in_flight.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(async move {
                    let sent = Instant::now();
                    let outcome = post(&client, &url, body).await;
                    let done = Instant::now();
                    match outcome {
                        Ok(results) if results.len() == 1 && results[0] == "ok" => {
                            successes.lock().expect("successes lock").push((sent, done));
                            ok.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(results) => {
                            let what = format!("result {}", results.join(","));
                            *failures
                                .lock()
                                .expect("failures lock")
                                .entry(what)
                                .or_default() += 1;
                        }
                        Err(what) => {
                            *failures
                                .lock()
                                .expect("failures lock")
                                .entry(what)
                                .or_default() += 1;
                        }
                    }
                    in_flight.fetch_sub(1, Ordering::Relaxed);
                });
            }
        });
        Ok(writer)
    }
}

/// POSTs a batch; the result names, or the kind of failure (short, to be counted).
async fn post(client: &reqwest::Client, url: &str, body: String) -> Result<Vec<String>, String> {
    let response = client
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body)
        .send()
        .await
        .map_err(|e| {
            if e.is_timeout() {
                "timeout".to_string()
            } else if e.is_connect() {
                "connection refused".to_string()
            } else {
                "connection lost".to_string()
            }
        })?;
    let status = response.status();
    let v: serde_json::Value = response
        .json()
        .await
        .map_err(|_| format!("HTTP {} without JSON", status.as_u16()))?;
    if !status.is_success() {
        return Err(format!(
            "HTTP {} {}",
            status.as_u16(),
            v["error"].as_str().unwrap_or("?")
        ));
    }
    v["results"]
        .as_array()
        .map(|rs| {
            rs.iter()
                .map(|r| r["result"].as_str().unwrap_or("?").to_string())
                .collect()
        })
        .ok_or_else(|| "answer without results".to_string())
}

// ---------------------------------------------------------------------------------------------
// Report

struct Report {
    nodes: u64,
    kills: Vec<Kill>,
    startup: Duration,
    ok_writes: u64,
    failures: BTreeMap<String, u64>,
    data_dir: PathBuf,
}

/// min, median, p99, max, mean in milliseconds (percentiles interpolated between closest
/// ranks); zeros for no samples.
pub(crate) fn summary(samples: impl Iterator<Item = Duration>) -> [f64; 5] {
    let mut ms: Vec<f64> = samples.map(|d| d.as_secs_f64() * 1000.0).collect();
    if ms.is_empty() {
        return [0.0; 5];
    }
    ms.sort_by(f64::total_cmp);
    let at = |q: f64| {
        let pos = q * (ms.len() - 1) as f64;
        let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
        ms[lo] + (ms[hi] - ms[lo]) * (pos - lo as f64)
    };
    let mean = ms.iter().sum::<f64>() / ms.len() as f64;
    [ms[0], at(0.5), at(0.99), ms[ms.len() - 1], mean]
}

pub(crate) fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

impl Report {
    fn summary_json(s: [f64; 5]) -> serde_json::Value {
        json!({
            "min": round1(s[0]),
            "median": round1(s[1]),
            "p99": round1(s[2]),
            "max": round1(s[3]),
            "mean": round1(s[4]),
        })
    }

    fn json(&self, error: Option<&str>) -> serde_json::Value {
        json!({
            "nodes": self.nodes,
            "kills": self.kills.len(),
            "failover_ms": Self::summary_json(summary(self.kills.iter().map(|k| k.failover))),
            "resync_ms": Self::summary_json(summary(self.kills.iter().map(|k| k.resync))),
            "startup_ms": round1(self.startup.as_secs_f64() * 1000.0),
            "per_kill": self.kills.iter().map(|k| json!({
                "kill": k.number,
                "node": k.node,
                "term_before": k.term_before,
                "new_leader": k.new_leader,
                "failover_ms": round1(k.failover.as_secs_f64() * 1000.0),
                "resync_ms": round1(k.resync.as_secs_f64() * 1000.0),
            })).collect::<Vec<_>>(),
            "writes_ok": self.ok_writes,
            "write_failures": self.failures,
            "data_dir": self.data_dir,
            "error": error,
        })
    }

    fn text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "bench-failover: {} nodes, {} leader kills (SIGKILL), a write every {} ms round robin",
            self.nodes,
            self.kills.len(),
            WRITE_INTERVAL.as_millis()
        );
        let _ = writeln!(
            out,
            "{:>5}  {:>6}  {:>6}  {:>10}  {:>12}  {:>10}",
            "kill", "killed", "term", "new leader", "failover ms", "resync ms"
        );
        for k in &self.kills {
            let _ = writeln!(
                out,
                "{:>5}  {:>6}  {:>6}  {:>10}  {:>12.1}  {:>10.1}",
                k.number,
                k.node,
                k.term_before,
                k.new_leader.map(|l| l.to_string()).unwrap_or("-".into()),
                k.failover.as_secs_f64() * 1000.0,
                k.resync.as_secs_f64() * 1000.0
            );
        }
        let _ = writeln!(
            out,
            "{:>12}  {:>8}  {:>8}  {:>8}  {:>8}  {:>8}",
            "ms", "min", "median", "p99", "max", "mean"
        );
        for (name, s) in [
            ("failover", summary(self.kills.iter().map(|k| k.failover))),
            ("resync", summary(self.kills.iter().map(|k| k.resync))),
        ] {
            let _ = writeln!(
                out,
                "{name:>12}  {:>8.1}  {:>8.1}  {:>8.1}  {:>8.1}  {:>8.1}",
                s[0], s[1], s[2], s[3], s[4]
            );
        }
        let _ = writeln!(
            out,
            "writes         {} ok, {} failed (cluster up in {:.0} ms)",
            self.ok_writes,
            self.failures.values().sum::<u64>(),
            self.startup.as_secs_f64() * 1000.0
        );
        for (what, n) in &self.failures {
            let _ = writeln!(out, "  {n:>10}  {what}");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_interpolates_between_ranks() {
        let s = summary((1..=20).map(|i| Duration::from_millis(i * 10)));
        assert_eq!(s[0], 10.0);
        assert_eq!(s[1], 105.0);
        assert!((s[2] - 198.1).abs() < 1e-9);
        assert_eq!(s[3], 200.0);
    }
}
