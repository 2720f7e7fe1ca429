//! `bulwark bench-rolling`: what a rolling restart (a StatefulSet update) costs the clients.
//!
//! It starts `--nodes` replicas of this same binary as `bench-failover` does, and the same
//! background writer: one new one-transfer request every 5 ms to the next node in rotation,
//! never retried, so every failure it counts is a failure on the first try. Then, `--rounds`
//! times, it restarts every node in turn, highest id first (a StatefulSet's order): it takes the
//! node out of the writer's rotation (what a load balancer does when the pod is deleted), sends
//! it SIGTERM, waits for it to exit, starts it again on its data directory, waits until the
//! cluster agrees on a leader and the node has caught up, and puts it back into rotation.
//! Requests already sent to the stopping node must still be answered: that is the drain.
//! `--pause` seconds of steady load come before each restart.
//!
//! The report gives one line per restart (the node, whether it led, how long it took to stop
//! and to rejoin, the writes that failed meanwhile) and the writer's totals with the failures
//! by kind. Exit codes: 0 every restart done (failures are reported, not judged); 1 a node did
//! not stop or rejoin in time, or died on its own; 2 bad options; 5 the cluster could not be
//! started; 130 interrupted.

use std::fmt::Write as _;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bulwark_harness::{LocalCluster, StatusClient};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::json;

use crate::bench_failover::{
    leader, round1, start_cluster, summary, Writer, SYNC_LIMIT, SYNC_SLACK, WRITE_INTERVAL,
};

/// Longest wait for a node to exit after SIGTERM (then it is killed and the run fails).
const STOP_LIMIT: Duration = Duration::from_secs(30);
/// Longest wait at the end for the writes still in flight.
const DRAIN_LIMIT: Duration = Duration::from_secs(10);

#[derive(clap::Args)]
pub struct RollingArgs {
    /// Voters to start: 3, 5 or 7.
    #[arg(long, default_value_t = 3)]
    pub nodes: u64,
    /// Rolling restarts of the whole cluster to measure.
    #[arg(long, default_value_t = 3)]
    pub rounds: u32,
    /// Steady load between two restarts (and before the first), in seconds.
    #[arg(long, default_value_t = 2.0)]
    pub pause: f64,
    /// Each node keeps its data and log in `<data-dir>/node-<id>` (default: a temporary
    /// directory, removed at the end).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Print the report as one JSON object.
    #[arg(long)]
    pub json: bool,
}

struct Restart {
    node: u64,
    was_leader: bool,
    stop: Duration,
    rejoin: Duration,
    failed: u64,
}

pub async fn run(args: RollingArgs) -> ExitCode {
    if args.nodes < 3 || args.nodes.is_multiple_of(2) || args.nodes > 7 {
        eprintln!("error: --nodes must be 3, 5 or 7 (a cluster must keep a majority while one node restarts)");
        return ExitCode::from(2);
    }
    if !(0.0..=3600.0).contains(&args.pause) {
        eprintln!("error: --pause must be from 0 to 3600 seconds");
        return ExitCode::from(2);
    }
    if args.rounds == 0 {
        eprintln!("error: --rounds must be at least 1");
        return ExitCode::from(2);
    }
    let mut cluster = match start_cluster(args.nodes, args.data_dir.clone(), None, None) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: cannot start the cluster: {e}");
            return ExitCode::from(5);
        }
    };
    let code = tokio::select! {
        code = measure(&args, &mut cluster) => code,
        () = crate::server::shutdown_signal() => {
            eprintln!("interrupted; stopping the nodes");
            ExitCode::from(130)
        }
    };
    drop(cluster);
    code
}

async fn measure(args: &RollingArgs, cluster: &mut LocalCluster) -> ExitCode {
    let status_client = StatusClient::new(Duration::from_secs(1), &cluster.token);
    if let Err(e) = cluster
        .wait_in_sync(&status_client, SYNC_SLACK, SYNC_LIMIT)
        .await
    {
        eprintln!("error: the cluster did not come up: {e}");
        return ExitCode::from(5);
    }
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
    let progress = progress_bar(u64::from(args.rounds) * args.nodes);
    let mut restarts = Vec::new();
    let mut error = None;
    'rounds: for _ in 0..args.rounds {
        for index in (0..cluster.nodes.len()).rev() {
            tokio::time::sleep(Duration::from_secs_f64(args.pause)).await;
            match restart(cluster, &status_client, &writer, index).await {
                Ok(r) => {
                    progress.set_message(format!("node {} back, {} failed", r.node, r.failed));
                    progress.inc(1);
                    restarts.push(r);
                }
                Err(e) => {
                    error = Some(e);
                    break 'rounds;
                }
            }
        }
    }
    progress.finish_and_clear();
    writer.stop.store(true, Ordering::Relaxed);
    let drained = Instant::now();
    while writer.in_flight.load(Ordering::Relaxed) > 0 && drained.elapsed() < DRAIN_LIMIT {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let report = report(args, &restarts, &writer, error.as_deref());
    if args.json {
        println!("{}", report.0);
    } else {
        print!("{}", report.1);
    }
    match error {
        None => ExitCode::SUCCESS,
        Some(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}

fn progress_bar(len: u64) -> ProgressBar {
    let progress = ProgressBar::new(len);
    if std::io::stderr().is_terminal() {
        if let Ok(style) = ProgressStyle::with_template(
            "{elapsed_precise} [{wide_bar}] {pos}/{len} restarts {msg}",
        ) {
            progress.set_style(style);
        }
        progress.enable_steady_tick(Duration::from_millis(200));
    } else {
        progress.set_draw_target(ProgressDrawTarget::hidden());
    }
    progress
}

fn failures(writer: &Writer) -> u64 {
    writer
        .failures
        .lock()
        .expect("failures lock")
        .values()
        .sum()
}

/// One node out of rotation, SIGTERM, its exit, its restart, the cluster in sync again, and
/// the node back in rotation.
async fn restart(
    cluster: &mut LocalCluster,
    status_client: &StatusClient,
    writer: &Writer,
    index: usize,
) -> Result<Restart, String> {
    let (leading, _) = leader(cluster, status_client).await?;
    let node = cluster.members[index].id;
    let failed_before = failures(writer);
    writer.live[index].store(false, Ordering::Relaxed);
    let t0 = Instant::now();
    cluster.nodes[index].send_sigterm();
    let status = loop {
        if let Some(status) = cluster.nodes[index].exited() {
            break status;
        }
        if t0.elapsed() > STOP_LIMIT {
            cluster.nodes[index].kill9();
            return Err(format!(
                "node {node} did not stop within {} s of SIGTERM",
                STOP_LIMIT.as_secs()
            ));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let stop = t0.elapsed();
    if !status.success() {
        return Err(format!("node {node} stopped with {status} after SIGTERM"));
    }
    let restarted = Instant::now();
    cluster.spawn(index)?;
    cluster
        .wait_in_sync(status_client, SYNC_SLACK, SYNC_LIMIT)
        .await?;
    writer.live[index].store(true, Ordering::Relaxed);
    Ok(Restart {
        node,
        was_leader: leading == node,
        stop,
        rejoin: restarted.elapsed(),
        failed: failures(writer) - failed_before,
    })
}

/// The report as JSON and as text.
fn report(
    args: &RollingArgs,
    restarts: &[Restart],
    writer: &Writer,
    error: Option<&str>,
) -> (serde_json::Value, String) {
    let ok = writer.ok.load(Ordering::Relaxed);
    let failures = writer.failures.lock().expect("failures lock").clone();
    let failed: u64 = failures.values().sum();
    let stops = summary(restarts.iter().map(|r| r.stop));
    let rejoins = summary(restarts.iter().map(|r| r.rejoin));
    let json = json!({
        "nodes": args.nodes,
        "restarts": restarts.len(),
        "writes_ok": ok,
        "first_try_failures": failed,
        "failures": failures,
        "stop_ms": {"median": round1(stops[1]), "max": round1(stops[3])},
        "rejoin_ms": {"median": round1(rejoins[1]), "max": round1(rejoins[3])},
        "per_restart": restarts.iter().map(|r| json!({
            "node": r.node,
            "was_leader": r.was_leader,
            "stop_ms": round1(r.stop.as_secs_f64() * 1000.0),
            "rejoin_ms": round1(r.rejoin.as_secs_f64() * 1000.0),
            "failed": r.failed,
        })).collect::<Vec<_>>(),
        "error": error,
    });
    let mut text = String::new();
    let _ = writeln!(
        text,
        "bench-rolling: {} nodes, {} restarts (SIGTERM, highest id first), a write every {} ms, never retried",
        args.nodes,
        restarts.len(),
        WRITE_INTERVAL.as_millis()
    );
    let _ = writeln!(
        text,
        "{:>6}  {:>6}  {:>9}  {:>10}  {:>7}",
        "node", "leader", "stop ms", "rejoin ms", "failed"
    );
    for r in restarts {
        let _ = writeln!(
            text,
            "{:>6}  {:>6}  {:>9.1}  {:>10.1}  {:>7}",
            r.node,
            if r.was_leader { "yes" } else { "" },
            r.stop.as_secs_f64() * 1000.0,
            r.rejoin.as_secs_f64() * 1000.0,
            r.failed
        );
    }
    let share = 100.0 * failed as f64 / (ok + failed).max(1) as f64;
    let _ = writeln!(
        text,
        "writes  {ok} ok, {failed} failed on the first try ({share:.3} %)"
    );
    for (what, n) in &failures {
        let _ = writeln!(text, "  {n:>10}  {what}");
    }
    (json, text)
}
