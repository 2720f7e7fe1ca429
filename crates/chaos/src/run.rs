//! One chaos run end to end: start the cluster, set up the accounts, run the workload and the
//! nemesis for the given time, heal everything, let the cluster settle, read the final state from
//! every node, check the history and write the report.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::checker::{check, Report, Verdict};
use crate::client::Client;
use crate::cluster::Cluster;
use crate::history::{write_history, History};
use crate::nemesis::{Fault, Findings, Nemesis};
use crate::process::NodeOptions;
use crate::report::{render_html, RunMeta};
use crate::workload::{setup, Recorder, Worker};

/// Everything a run is told.
#[derive(Clone, Debug)]
pub struct ChaosConfig {
    /// The `bulwark` binary to start nodes with.
    pub bin: PathBuf,
    pub nodes: usize,
    pub duration: Duration,
    /// Client operations per second, all clients together.
    pub rate: f64,
    pub clients: usize,
    pub mix: Vec<Fault>,
    pub seed: u64,
    pub out: PathBuf,
    /// Bounds of one fault's hold and of the quiet time between faults, in ms.
    pub hold_ms: (u64, u64),
    pub quiet_ms: (u64, u64),
    /// Each node's `--checkpoint-transfers`.
    pub checkpoint_transfers: usize,
    /// The command line that replays this run, for the report.
    pub replay: String,
    /// A durability step every node skips (a `test-faults` build only): the run should fail.
    pub unsafe_skip_fsync: Option<bulwark_fs::test_faults::Skip>,
    /// Run the external-payments workload too (`crate::payments`).
    pub payments: bool,
}

/// What a run came to.
pub struct Outcome {
    pub report: Report,
    pub history_path: PathBuf,
    pub report_path: PathBuf,
    /// One line for stdout.
    pub summary: String,
}

/// Membership faults need fresh node ids; this many are routed through the proxy up front.
const SPARE_NODES: usize = 24;

pub async fn run(config: ChaosConfig) -> anyhow::Result<Outcome> {
    anyhow::ensure!(
        config.nodes == 3 || config.nodes == 5,
        "--nodes must be 3 or 5 (got {})",
        config.nodes
    );
    std::fs::create_dir_all(&config.out)?;
    let run_dir = config.out.join("nodes");
    if run_dir.exists() {
        anyhow::bail!(
            "{} already holds a run's nodes: choose another --out folder",
            run_dir.display()
        );
    }
    std::fs::create_dir_all(&run_dir)?;
    let options = NodeOptions {
        cluster_id: config.seed | 1,
        own_disk: config.mix.iter().any(|f| f.needs_own_disk()),
        lazy_disk: config.mix.iter().any(|f| f.needs_lazy_disk()),
        settable_clock: config.mix.contains(&Fault::Clock),
        unsafe_skip_fsync: config.unsafe_skip_fsync,
        checkpoint_transfers: config.checkpoint_transfers,
        extra_args: Vec::new(),
    };
    let processor = if config.payments {
        Some(crate::payments::start_processor(config.seed, config.duration).await?)
    } else {
        None
    };
    let options = NodeOptions {
        extra_args: processor
            .as_ref()
            .map(|p| crate::payments::relay_args(&p.url()))
            .unwrap_or_default(),
        ..options
    };
    let started_at = chrono_like_now();
    let mut cluster =
        Cluster::start(&config.bin, &run_dir, config.nodes, SPARE_NODES, options).await?;
    let outcome = drive(&config, &mut cluster, &started_at, processor.as_ref()).await;
    // Whatever happened, no process outlives the run.
    for node in cluster.nodes.values_mut() {
        node.stop();
    }
    drop(cluster);
    outcome
}

async fn drive(
    config: &ChaosConfig,
    cluster: &mut Cluster,
    started_at: &str,
    processor: Option<&bulwark_processor::ProcessorHandle>,
) -> anyhow::Result<Outcome> {
    let start = Instant::now();
    let recorder = Arc::new(Recorder::new(start));
    let nodes = cluster.http_addrs();
    let client = Client::new(Duration::from_secs(3), &cluster.token);
    tracing::info!(
        nodes = config.nodes,
        seed = config.seed,
        "waiting for a leader"
    );
    setup(
        &recorder,
        &client,
        &nodes,
        Instant::now() + Duration::from_secs(60),
    )
    .await?;

    let stop = Arc::new(AtomicBool::new(false));
    let payments_sent = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let payer = match processor {
        Some(_) => {
            let deadline = Instant::now() + Duration::from_secs(60);
            crate::payments::setup(&client, &nodes, deadline).await?;
            let every = Duration::from_millis(200);
            let pay = crate::payments::pay(
                client.clone(),
                nodes.clone(),
                stop.clone(),
                every,
                payments_sent.clone(),
            );
            Some(tokio::spawn(pay))
        }
        None => None,
    };
    let interval = Duration::from_secs_f64(config.clients as f64 / config.rate.max(0.1));
    let mut workers = Vec::new();
    for process in 1..=config.clients as u64 {
        let worker = Worker::new(process, config.seed, nodes.clone(), interval);
        let task = tokio::spawn(worker.run(recorder.clone(), client.clone(), stop.clone()));
        workers.push((process, task));
    }
    let current = Arc::new(Mutex::new(String::from("quiet")));
    let progress = spawn_progress(config.duration, recorder.clone(), current.clone());
    let deadline = Instant::now() + config.duration;
    let mut nemesis = Nemesis::new(
        config.seed,
        config.mix.clone(),
        config.hold_ms,
        config.quiet_ms,
    );
    let nemesis_result = nemesis.run(cluster, &recorder, deadline, &current).await;
    tokio::time::sleep(deadline.saturating_duration_since(Instant::now())).await;
    stop.store(true, Ordering::Relaxed);
    let client_failures = join_clients(workers).await;
    if let Some(payer) = payer {
        let _ = payer.await;
    }
    progress.abort();
    nemesis_result?;

    // Heal and settle.
    let mut findings = std::mem::take(&mut nemesis.findings);
    findings.violations.extend(client_failures);
    cluster.heal_all()?;
    for (id, node) in cluster.nodes.iter_mut() {
        if let Some(status) = node.exited() {
            findings.violations.push(format!(
                "node {id} exited on its own ({status}); see {}",
                node.log_path().display()
            ));
        }
        if !node.is_running() {
            node.start()?;
        }
    }
    // One write must get through after healing (before settling: the final states are read from
    // a cluster that no longer writes).
    let nodes_now = cluster.http_addrs();
    let settle_limit =
        match probe_after_heal(&recorder, &cluster.control, &nodes_now, HEAL_PROBE_LIMIT).await {
            Some(note) => {
                findings.notes.push(note);
                Duration::from_secs(90)
            }
            None => {
                findings.violations.push(format!(
                    "no write succeeded within {HEAL_PROBE_LIMIT:?} after healing"
                ));
                // A cluster that takes no write will hardly settle: do not wait long for it.
                Duration::from_secs(10)
            }
        };
    // The leader expires pending transfers on time, writing entries of its own: the final
    // states are read once the last of them has expired (with a second for clocks and commit).
    let expiries_done = Duration::from_secs(u64::from(crate::workload::MAX_PENDING_TIMEOUT_S) + 2);
    tokio::time::sleep(expiries_done).await;
    eprintln!("healed; waiting for the cluster to settle");
    let settled = cluster.settle(settle_limit).await;
    let final_index = match &settled {
        Ok(index) => Some(*index),
        Err(last) => {
            findings.violations.push(format!(
                "the healed cluster did not settle within 90 s: {last}"
            ));
            None
        }
    };
    let (replicas, mut state) = final_states(cluster, final_index).await;
    let (feeds, changes) = final_feeds(cluster).await;
    state.changes = changes;

    let history = History {
        started_unix_ns: Some(recorder.started_unix_ns),
        ops: recorder.take_ops(),
        state,
    };
    let history_path = config.out.join("history.jsonl");
    write_history(&history_path, &history)?;
    let mut report = check(&history);
    report.verdicts.push(replicas);
    report.verdicts.push(feeds);
    report.verdicts.push(nemesis_verdict(&findings));
    if let Some(processor) = processor {
        let sent = payments_sent.load(Ordering::Relaxed);
        let nodes = cluster.http_addrs();
        let verdict = crate::payments::verdict(&client, &nodes, processor, sent).await;
        report.verdicts.push(verdict);
    }
    report.ok = report.verdicts.iter().all(|v| v.ok);

    let acknowledged = recorder.counts.transfers_ok.load(Ordering::Relaxed);
    let ops = history
        .ops
        .iter()
        .filter(|o| o.phase != crate::history::Phase::Invoke)
        .count();
    let windows: u32 = findings.windows.values().sum();
    let meta = RunMeta {
        seed: config.seed,
        nodes: config.nodes,
        duration_s: config.duration.as_secs_f64(),
        replay_command: config.replay.clone(),
        version: Some(env!("CARGO_PKG_VERSION").to_string()),
        started_at: started_at.to_string(),
        nemeses: config.mix.iter().map(|f| f.name().to_string()).collect(),
        extra: vec![
            ("operations completed".into(), ops.to_string()),
            ("transfers acknowledged ok".into(), acknowledged.to_string()),
            (
                "transfers in the final state".into(),
                history.state.transfers.len().to_string(),
            ),
            (
                "final applied index".into(),
                final_index.map_or("unknown".into(), |i| i.to_string()),
            ),
            (
                "fault windows".into(),
                findings
                    .windows
                    .iter()
                    .map(|(k, n)| format!("{k} ×{n}"))
                    .collect::<Vec<_>>()
                    .join(", "),
            ),
        ],
    };
    let report_path = config.out.join("report.html");
    std::fs::write(&report_path, render_html(&history, &report, &meta))?;
    let summary = format!(
        "{} — {} nodes, {:.0} s, seed {}, {} ops, {} transfers acknowledged, {windows} faults; {}; report: {}",
        if report.ok { "VALID" } else { "INVALID" },
        config.nodes,
        config.duration.as_secs_f64(),
        config.seed,
        ops,
        acknowledged,
        if report.ok {
            "every property holds".to_string()
        } else {
            format!("violated: {}", report.failed().join(", "))
        },
        report_path.display()
    );
    Ok(Outcome {
        report,
        history_path,
        report_path,
        summary,
    })
}

/// A node's final state, asked again for a while: a node that just restarted or caught up may
/// be slow to answer its first reads.
/// Every original member's final state, and the `replicas_identical` verdict on them. A node that
/// cannot give its final state fails the verdict; with none, the acknowledged writes are checked
/// against an empty ledger: a client can read back none of them.
async fn final_states(
    cluster: &mut Cluster,
    final_index: Option<u64>,
) -> (Verdict, crate::history::FinalState) {
    let mut states = Vec::new();
    let mut unread = Vec::new();
    for id in cluster.originals.clone() {
        if cluster.node(id).exited().is_some() {
            unread.push(format!(
                "node {id} cannot give its final state: it does not stay up (see {})",
                cluster.nodes[&id].log_path().display()
            ));
            continue;
        }
        match read_final_state(cluster, id).await {
            Ok(state) => states.push((id, state)),
            Err(e) => unread.push(format!("{e:#}")),
        }
    }
    let mut replicas = replicas_verdict(&states, final_index);
    if !unread.is_empty() {
        replicas.ok = false;
        replicas.violations.extend(unread);
    }
    let state = match states.first() {
        Some((_, state)) => state.clone(),
        None => {
            replicas.violations.push(
                "no node gave its final state: the acknowledged writes are checked against an \
                 empty ledger"
                    .into(),
            );
            crate::history::FinalState::default()
        }
    };
    (replicas, state)
}

/// Every original member's whole change feed, the `feed_identical` verdict on them, and the
/// first one read (which the history keeps and the checker checks against it).
async fn final_feeds(cluster: &mut Cluster) -> (Verdict, Option<Vec<crate::history::Change>>) {
    let mut feeds = Vec::new();
    for id in cluster.originals.clone() {
        let feed = if cluster.node(id).exited().is_some() {
            Err("it does not stay up".to_string())
        } else {
            read_whole_feed(cluster, id).await
        };
        feeds.push((id, feed));
    }
    let verdict = crate::checker::feed::feed_identical(&feeds);
    let first = feeds.into_iter().find_map(|(_, f)| f.ok());
    (verdict, first)
}

/// A node's feed, asked again for a while as its final state is (a node that just caught up
/// may be slow to answer).
async fn read_whole_feed(
    cluster: &Cluster,
    id: u64,
) -> Result<Vec<crate::history::Change>, String> {
    let mut last = String::new();
    for _ in 0..5 {
        match crate::feed::read_feed(&cluster.control, cluster.nodes[&id].addrs.http).await {
            Ok(feed) => return Ok(feed),
            Err(e) => last = format!("{e:#}"),
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    Err(last)
}

async fn read_final_state(
    cluster: &Cluster,
    id: u64,
) -> anyhow::Result<crate::history::FinalState> {
    let mut last = None;
    for _ in 0..10 {
        match cluster.final_state(id).await {
            Ok(state) => return Ok(state),
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    Err(last.expect("at least one attempt").context(format!(
        "node {id} did not give its final state in 10 attempts"
    )))
}

/// How long the healed cluster has to take a write before the run counts it as never recovered.
const HEAL_PROBE_LIMIT: Duration = Duration::from_secs(30);

/// The process number of the probe writes after healing (its transfer ids are its own).
pub const HEAL_PROBE_PROCESS: u64 = 1_000_002;

/// Waits for every client task. A client that panicked stopped issuing operations, and a run with
/// fewer operations could still come out valid: each panic is a finding.
pub async fn join_clients(clients: Vec<(u64, tokio::task::JoinHandle<()>)>) -> Vec<String> {
    let mut failures = Vec::new();
    for (process, task) in clients {
        if let Err(e) = task.await {
            let why = if e.is_panic() {
                let payload = e.into_panic();
                let text = payload
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| payload.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "(no message)".into());
                format!("panicked: {text}")
            } else {
                format!("did not finish: {e}")
            };
            failures.push(format!("client process {process} {why}"));
        }
    }
    failures
}

/// After healing, one write (1 -> 2, recorded in the history as [`HEAL_PROBE_PROCESS`]) must be
/// acknowledged within `limit`, through any node: the history then shows that the cluster
/// recovered after the last fault. A note on success, `None` if no write got through.
pub async fn probe_after_heal(
    recorder: &Recorder,
    client: &Client,
    nodes: &[std::net::SocketAddr],
    limit: Duration,
) -> Option<String> {
    let started = Instant::now();
    let mut attempt = 0u64;
    while started.elapsed() < limit {
        attempt += 1;
        let probe = [crate::history::Transfer {
            id: (HEAL_PROBE_PROCESS << 36) | attempt,
            debit: 1,
            credit: 2,
            amount: 1,
            ledger: crate::workload::LEDGER,
            ..Default::default()
        }];
        let node = nodes[(attempt as usize - 1) % nodes.len()];
        let answer =
            crate::workload::record_write(recorder, client, HEAL_PROBE_PROCESS, node, &probe).await;
        if answer.phase == crate::history::Phase::Ok && answer.body["results"][0]["result"] == "ok"
        {
            return Some(format!(
                "after healing, a probe write was acknowledged at attempt {attempt}, {:.1} s after the first",
                started.elapsed().as_secs_f64()
            ));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    None
}

/// The final states read from every original node after healing must be identical.
pub fn replicas_verdict(
    states: &[(u64, crate::history::FinalState)],
    final_index: Option<u64>,
) -> Verdict {
    let mut replicas = Verdict {
        property: "replicas_identical",
        ok: true,
        violations: Vec::new(),
        notes: vec![format!(
            "{} nodes compared after healing, at applied index {}",
            states.len(),
            final_index.map_or("unknown".into(), |i| i.to_string())
        )],
    };
    let Some(((first_id, first), rest)) = states.split_first() else {
        replicas.ok = false;
        replicas
            .violations
            .push("no node gave its final state".into());
        return replicas;
    };
    for (id, s) in rest {
        if s != first {
            replicas.ok = false;
            replicas.violations.push(format!(
                "node {id} holds {} transfers and {} accounts, node {first_id} {} and {}, and they differ",
                s.transfers.len(),
                s.accounts.len(),
                first.transfers.len(),
                first.accounts.len()
            ));
        }
    }
    replicas
}

/// The harness's own findings as a verdict: every fault kind asked for ran, disk-full nodes
/// refused writes, membership changes finished, no node died by itself, no client panicked.
pub fn nemesis_verdict(findings: &Findings) -> Verdict {
    let mut notes: Vec<String> = findings
        .windows
        .iter()
        .map(|(k, n)| format!("{k}: {n} windows"))
        .collect();
    notes.extend(findings.notes.iter().cloned());
    Verdict {
        property: "faults_handled",
        ok: findings.violations.is_empty(),
        violations: findings.violations.clone(),
        notes,
    }
}

/// A progress bar over the run's duration (hidden when stderr is not a terminal), and a log line
/// every 10 s either way.
fn spawn_progress(
    duration: Duration,
    recorder: Arc<Recorder>,
    current: Arc<Mutex<String>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let bar = indicatif::ProgressBar::new(duration.as_secs());
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{elapsed_precise} [{bar:30}] {pos}/{len} s  {msg}",
            )
            .expect("a valid template")
            .progress_chars("=> "),
        );
        let started = Instant::now();
        let mut tick = 0u64;
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            tick += 1;
            let c = &recorder.counts;
            let msg = format!(
                "ok {} fail {} info {} transfers {} | nemesis: {}",
                c.ok.load(Ordering::Relaxed),
                c.fail.load(Ordering::Relaxed),
                c.info.load(Ordering::Relaxed),
                c.transfers_ok.load(Ordering::Relaxed),
                current.lock().expect("lock")
            );
            bar.set_position(started.elapsed().as_secs().min(duration.as_secs()));
            bar.set_message(msg.clone());
            if tick.is_multiple_of(10) && bar.is_hidden() {
                eprintln!("[{:>4} s] {msg}", started.elapsed().as_secs());
            }
        }
    })
}

/// Seconds since the epoch, as the report's start time (no calendar crate for one line).
fn chrono_like_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    format!("unix time {secs}")
}

/// Reads a history file and checks it (`bulwark chaos check`).
pub fn check_file(path: &Path) -> anyhow::Result<Report> {
    let history = crate::history::read_history(path)
        .map_err(|e| anyhow::anyhow!("cannot read the history {}: {e}", path.display()))?;
    Ok(check(&history))
}
