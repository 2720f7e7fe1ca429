//! `bulwark start`: a node and its HTTP API, with graceful shutdown.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use bulwark_node::cluster::{ClusterConfig, Member};
use bulwark_node::{Metrics, Node, NodeConfig};
use tracing_subscriber::EnvFilter;

#[derive(clap::Args, Clone)]
pub struct StartArgs {
    /// Where the log and the state live.
    #[arg(long, default_value = "./bulwark-data", env = "BULWARK_DATA_DIR")]
    pub data_dir: PathBuf,
    /// Address of the HTTP API.
    #[arg(long, default_value = "127.0.0.1:7070", env = "BULWARK_LISTEN")]
    pub listen: SocketAddr,
    /// Transfers kept in memory before a checkpoint is written.
    #[arg(long, default_value_t = 150_000)]
    pub checkpoint_transfers: usize,
    /// Size of one write-ahead log segment, in bytes.
    #[arg(long, default_value_t = 64 << 20)]
    pub segment_bytes: u64,
    /// Cluster mode: this node's id among the `--member`s.
    #[arg(long, requires = "members")]
    pub node_id: Option<u64>,
    /// Cluster mode: one member as `ID=PEER_ADDR=HTTP_ADDR` (repeat for each, this node too).
    /// This node's HTTP API listens on its own HTTP_ADDR, its peer transport on PEER_ADDR (unless
    /// `--http-listen`, `--peer-listen`).
    #[arg(long = "member", value_parser = parse_member, requires = "node_id")]
    pub members: Vec<Member>,
    /// Cluster mode: an id every member shares; a node of another cluster is refused.
    #[arg(long, default_value_t = 1)]
    pub cluster_id: u64,
    /// Cluster mode: one Raft tick in milliseconds (elections after 10–20 ticks).
    #[arg(long, default_value_t = 50)]
    pub tick_ms: u64,
    /// Cluster mode: join an existing cluster. The `--member`s are only addresses (this node
    /// and at least the leader); the node waits until `bulwark cluster add` makes it a learner.
    #[arg(long, requires = "node_id")]
    pub join: bool,
    /// Cluster mode: bind the peer transport here instead of this node's own PEER_ADDR. Peers
    /// still dial PEER_ADDR: `bulwark chaos` puts its fault-injecting proxy in between.
    #[arg(long, requires = "node_id")]
    pub peer_listen: Option<SocketAddr>,
    /// Cluster mode: bind the HTTP API here instead of this node's own HTTP_ADDR. Other members
    /// still reach it at HTTP_ADDR (`bulwark chaos` proxies that too).
    #[arg(long, requires = "node_id")]
    pub http_listen: Option<SocketAddr>,
}

fn parse_member(text: &str) -> Result<Member, String> {
    Member::parse_spec(text)
}

pub fn init_logging() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

pub async fn start(args: StartArgs) -> ExitCode {
    init_logging();
    match serve(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("error: {e:#}");
            ExitCode::from(5)
        }
    }
}

async fn serve(args: StartArgs) -> anyhow::Result<()> {
    let mut config = NodeConfig::new(&args.data_dir);
    config.checkpoint_transfers = args.checkpoint_transfers;
    config.segment_bytes = args.segment_bytes;
    let metrics = Arc::new(Metrics::default());
    let (node, app, listen) = match args.node_id {
        None => {
            let node = tokio::task::spawn_blocking(move || Node::start(config, metrics))
                .await?
                .map_err(|e| anyhow::anyhow!("cannot start: {e}"))?;
            let app = bulwark_api::router(node.handle());
            (node, app, args.listen)
        }
        Some(node_id) => start_member(&args, node_id, config, metrics).await?,
    };
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {listen}: {e}"))?;
    tracing::info!(
        listen = %listen,
        data_dir = %args.data_dir.display(),
        "bulwark is serving HTTP API v1"
    );
    let node = Arc::new(std::sync::Mutex::new(Some(node)));
    let watched = node.clone();
    let stopped_on_error = async move {
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let finished = watched
                .lock()
                .expect("node lock")
                .as_ref()
                .is_none_or(|n| n.is_finished());
            if finished {
                return;
            }
        }
    };
    let shutdown = async {
        tokio::select! {
            _ = shutdown_signal() => tracing::info!("shutdown requested: finishing requests in flight"),
            _ = stopped_on_error => tracing::error!("the node stopped; shutting the API down"),
        }
    };
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await?;
    let node = node.lock().expect("node lock").take();
    if let Some(node) = node {
        tokio::task::spawn_blocking(move || node.shutdown())
            .await?
            .map_err(|e| anyhow::anyhow!("stopped on an error: {e}"))?;
    }
    tracing::info!("stopped cleanly");
    Ok(())
}

/// Cluster mode: the peer transport, the Raft event loop, and a router that forwards writes to
/// the leader.
async fn start_member(
    args: &StartArgs,
    node_id: u64,
    config: NodeConfig,
    metrics: Arc<Metrics>,
) -> anyhow::Result<(Node, axum::Router, SocketAddr)> {
    let mut cluster = ClusterConfig {
        node_id,
        cluster_id: args.cluster_id,
        members: args.members.clone(),
        tick: Duration::from_millis(args.tick_ms.max(1)),
        join: args.join,
        source_ip: None,
    };
    cluster
        .validate()
        .map_err(|e| anyhow::anyhow!("refusing this cluster configuration: {e}"))?;
    let me = cluster.member(node_id).expect("validated").clone();
    let peer_listen = args.peer_listen.unwrap_or(me.peer_addr);
    let http_listen = args.http_listen.unwrap_or(me.http_addr);
    // Every connection to another member (peer transport, forwarded writes, snapshot fetches)
    // leaves from the IP this node's HTTP API listens on, when that is a specific one: whatever
    // stands between the nodes (`bulwark chaos`'s proxy, which tells nodes apart by source IP)
    // then sees which node connects, so a partition cuts all node-to-node traffic.
    cluster.source_ip = Some(http_listen.ip()).filter(|ip| !ip.is_unspecified());
    let transport_options = bulwark_transport::TransportOptions {
        source_ip: cluster.source_ip,
        ..Default::default()
    };
    let (inbox_tx, mut inbox) = tokio::sync::mpsc::channel(4096);
    let transport = bulwark_transport::TcpTransport::start(
        bulwark_transport::NodeId(node_id),
        args.cluster_id,
        peer_listen,
        inbox_tx,
        transport_options,
    )
    .await
    .map_err(|e| anyhow::anyhow!("cannot listen for peers on {peer_listen}: {e}"))?;
    let transport: Arc<dyn bulwark_transport::Transport> = Arc::new(transport);
    let cluster_source_ip = cluster.source_ip;
    let node = tokio::task::spawn_blocking(move || {
        bulwark_node::cluster::start_cluster(config, cluster, transport, metrics)
    })
    .await?
    .map_err(|e| anyhow::anyhow!("cannot start: {e}"))?;
    let handle = node.handle();
    tokio::spawn(async move {
        while let Some((from, payload)) = inbox.recv().await {
            if let Some(message) = bulwark_node::cluster::decode_peer_message(from.0, &payload) {
                handle.deliver_peer_message(message);
            }
        }
    });
    tracing::info!(
        node_id,
        peer_addr = %me.peer_addr,
        %peer_listen,
        http_addr = %me.http_addr,
        %http_listen,
        source_ip = ?cluster_source_ip,
        "cluster member started"
    );
    let app = bulwark_api::cluster_router(node.handle(), node_id);
    Ok((node, app, http_listen))
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("install SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
