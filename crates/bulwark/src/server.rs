//! `bulwark start`: a node and its HTTP API, with graceful shutdown.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

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
    let node = tokio::task::spawn_blocking(move || Node::start(config, metrics))
        .await?
        .map_err(|e| anyhow::anyhow!("cannot start: {e}"))?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", args.listen))?;
    tracing::info!(
        listen = %args.listen,
        data_dir = %args.data_dir.display(),
        "bulwark is serving HTTP API v1"
    );
    let app = bulwark_api::router(node.handle());
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
