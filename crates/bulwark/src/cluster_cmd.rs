//! `bulwark cluster`: run a local cluster, and look at a cluster's replication status.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use bulwark_harness::{members, ports_from, LocalCluster};

use crate::client::{call, refused, Outcome, Target};

#[derive(clap::Subcommand)]
pub enum ClusterCommand {
    /// Start a cluster of nodes on this machine (own data dirs, ports and logs); Ctrl-C stops all.
    Local(LocalArgs),
    /// Show a node's view of the cluster: role, term, leader, and per member the match index,
    /// lag and whether it is in sync.
    Status(StatusArgs),
    /// Add a node as a learner (it receives the log, does not vote). Start it first with
    /// `bulwark start --join --node-id ID --member ...`.
    Add(AddArgs),
    /// Make learners voters (several at once: joint consensus). Voters must stay odd, at most 7.
    Promote(IdsArgs),
    /// Remove members; a removed node stops serving.
    Remove(IdsArgs),
}

#[derive(clap::Args)]
pub struct AddArgs {
    #[arg(long)]
    pub id: u64,
    /// Where the new node's peer transport is reached: IP:PORT, or NAME:PORT (resolved at every
    /// connect, as a Kubernetes pod's stable DNS name is).
    #[arg(long)]
    pub peer_addr: bulwark_transport::HostPort,
    /// Where the new node's HTTP API is reached: IP:PORT or NAME:PORT.
    #[arg(long)]
    pub http_addr: bulwark_transport::HostPort,
    #[command(flatten)]
    pub target: Target,
}

#[derive(clap::Args)]
pub struct IdsArgs {
    /// Node ids, comma-separated.
    #[arg(long, value_delimiter = ',', required = true)]
    pub ids: Vec<u64>,
    #[command(flatten)]
    pub target: Target,
}

#[derive(clap::Args)]
pub struct LocalArgs {
    /// Voters to start: 1, 3, 5 or 7.
    #[arg(long, default_value_t = 3)]
    pub nodes: u64,
    /// Each node keeps its data and log in `<data-dir>/node-<id>`.
    #[arg(long, default_value = "./bulwark-data")]
    pub data_dir: PathBuf,
    /// Node i's HTTP API listens on this port + i - 1.
    #[arg(long, default_value_t = 7070)]
    pub http_port: u16,
    /// Node i's peer transport listens on this port + i - 1.
    #[arg(long, default_value_t = 7170)]
    pub peer_port: u16,
    /// Serve the client API over TLS too (certificates from the cluster CA in
    /// `<data-dir>/ca`); on loopback it is plain HTTP otherwise.
    #[arg(long)]
    pub api_tls: bool,
    /// Every node archives committed entries to this target (a directory or `s3://...`), for
    /// `bulwark restore --archive` (docs/operations.md, "Backups, the archive and restore").
    #[arg(long)]
    pub archive: Option<String>,
    #[command(flatten)]
    pub relay: crate::relay_args::RelayArgs,
}

#[derive(clap::Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub target: Target,
}

pub async fn run(command: ClusterCommand) -> ExitCode {
    match command {
        ClusterCommand::Local(args) => local(args).await,
        ClusterCommand::Status(args) => status(args).await,
        ClusterCommand::Add(a) => {
            let body = serde_json::json!({
                "id": a.id, "peer_addr": a.peer_addr.to_string(), "http_addr": a.http_addr.to_string(),
            });
            change(&a.target, "/v1/cluster/learners", body).await
        }
        ClusterCommand::Promote(a) => {
            change(
                &a.target,
                "/v1/cluster/promote",
                serde_json::json!({"ids": a.ids}),
            )
            .await
        }
        ClusterCommand::Remove(a) => {
            change(
                &a.target,
                "/v1/cluster/remove",
                serde_json::json!({"ids": a.ids}),
            )
            .await
        }
    }
}

/// Sends a membership change to a node (it forwards to the leader) and waits until applied.
async fn change(target: &Target, path: &str, body: serde_json::Value) -> ExitCode {
    let url = format!("{}{path}", target.addr);
    let outcome = call(target, reqwest::Method::POST, url, Some(body)).await;
    if let Some(code) = refused(&outcome, target.json) {
        return code;
    }
    let Outcome::Answered(_, v) = outcome else {
        unreachable!("refused() answers every other outcome")
    };
    if target.json {
        println!("{v}");
    } else {
        println!("done: applied at log index {}", v["index"]);
    }
    ExitCode::SUCCESS
}

async fn local(args: LocalArgs) -> ExitCode {
    if args.nodes == 0 || args.nodes.is_multiple_of(2) || args.nodes > 7 {
        eprintln!("error: --nodes must be 1, 3, 5 or 7 (an odd number of voters, at most 7)");
        return ExitCode::from(2);
    }
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => {
            eprintln!("error: cannot find this program's path: {e}");
            return ExitCode::from(5);
        }
    };
    let n = args.nodes as usize;
    let members = match (
        ports_from(Some(args.peer_port), n),
        ports_from(Some(args.http_port), n),
    ) {
        (Ok(peer), Ok(http)) => members(&peer, &http),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let mut extra = if args.api_tls {
        vec!["--api-tls".to_string()]
    } else {
        Vec::new()
    };
    if let Some(archive) = &args.archive {
        extra.extend(["--archive".to_string(), archive.clone()]);
    }
    if !args.relay.processors.is_empty() {
        extra.extend(args.relay.to_flags());
    }
    let scheme = if args.api_tls { "https" } else { "http" };
    let mut cluster = match LocalCluster::new(&exe, Some(args.data_dir.clone()), members, &extra) {
        Ok(cluster) => cluster,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(5);
        }
    };
    println!("starting a local cluster of {} nodes:", args.nodes);
    for i in 0..n {
        if let Err(e) = cluster.spawn(i) {
            eprintln!("error: {e}");
            cluster.stop_all();
            return ExitCode::from(5);
        }
        let (m, node) = (&cluster.members[i], &cluster.nodes[i]);
        println!(
            "  node {}: {scheme}://{}  peers {}  data {}  log {}",
            m.id,
            m.http,
            m.peer,
            node.data_dir.display(),
            node.log_path().display()
        );
    }
    let token_path = cluster.root.join("admin.token");
    println!("admin token (every node knows it): {}", cluster.token);
    println!(
        "try:\n  export BULWARK_TOKEN=$(cat {})",
        token_path.display()
    );
    let ca = if args.api_tls {
        let ca = cluster.root.join("ca").join(bulwark_tls::CA_CERT);
        format!(" --cacert {}", ca.display())
    } else {
        String::new()
    };
    println!(
        "  curl -s{ca} -H \"authorization: Bearer $BULWARK_TOKEN\" {scheme}://localhost:{}/v1/status",
        args.http_port
    );
    println!("Ctrl-C (or SIGTERM) stops every node.");
    let mut stopped_early = false;
    // SIGTERM too: a supervisor's stop must not leave the nodes running as orphans.
    let stop = crate::server::shutdown_signal();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => break,
            _ = tokio::time::sleep(Duration::from_millis(500)) => {
                for (node, m) in cluster.nodes.iter_mut().zip(&cluster.members) {
                    if let Some(status) = node.exited() {
                        if !stopped_early {
                            eprintln!("node {} exited ({status}); see its log; the others keep running", m.id);
                        }
                        stopped_early = true;
                    }
                }
            }
        }
    }
    println!("stopping...");
    // SIGTERM to every node (each stops gracefully), then wait for all.
    cluster.stop_all();
    println!("stopped");
    ExitCode::SUCCESS
}

async fn status(args: StatusArgs) -> ExitCode {
    let url = format!("{}/v1/status", args.target.addr);
    let outcome = call(&args.target, reqwest::Method::GET, url, None).await;
    if let Some(code) = refused(&outcome, args.target.json) {
        return code;
    }
    let Outcome::Answered(_, v) = outcome else {
        unreachable!("refused() answers every other outcome")
    };
    if args.target.json {
        println!("{v}");
        return ExitCode::SUCCESS;
    }
    println!(
        "node {}  role {}  term {}  leader {}  commit {}  applied {}",
        v["node_id"], v["role"], v["term"], v["leader_id"], v["commit_index"], v["applied_index"]
    );
    println!(
        "{:>6}  {:>10}  {:>12}  {:>8}  {:>8}  http",
        "member", "role", "match_index", "lag", "in_sync"
    );
    for m in v["members"].as_array().cloned().unwrap_or_default() {
        println!(
            "{:>6}  {:>10}  {:>12}  {:>8}  {:>8}  {}",
            m["id"].to_string(),
            m["role"].as_str().unwrap_or("?"),
            m["match_index"].to_string(),
            m["lag"].to_string(),
            m["in_sync"].to_string(),
            m["http_addr"].as_str().unwrap_or("")
        );
    }
    ExitCode::SUCCESS
}
