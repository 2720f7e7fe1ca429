//! `bulwark processor`: the stand-in payment processor (crate `bulwark-processor`) as a process
//! of its own, for demos and for tests that run the cluster as real processes. The protocol and
//! the knobs: `docs/processor-protocol.md`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use bulwark_processor::{Config, Outage};
use clap::Args;

use crate::server;

#[derive(Args)]
pub struct ProcessorArgs {
    /// Where to listen for deliveries (and `/control`, `/v1/records`, `/v1/summary`).
    #[arg(long, default_value = "127.0.0.1:7090")]
    pub listen: SocketAddr,
    /// A file holding the secret every request must carry as `Authorization: Bearer SECRET`
    /// (its first line) [default: none, no authentication].
    #[arg(long)]
    pub secret_file: Option<PathBuf>,
    /// Probability (0 to 1) of answering 503 without executing.
    #[arg(long, default_value_t = 0.0, value_parser = parse_rate)]
    pub failure_rate: f64,
    /// Probability (0 to 1) of refusing a payment (422); decided from the payment id and
    /// `--seed`, so every retry of a key gets the same answer.
    #[arg(long, default_value_t = 0.0, value_parser = parse_rate)]
    pub refuse_rate: f64,
    /// Fixed delay before every answer to a delivery, in milliseconds.
    #[arg(long, default_value_t = 0)]
    pub latency_ms: u64,
    /// Uniform extra delay (0 to this) on top of `--latency-ms`.
    #[arg(long, default_value_t = 0)]
    pub jitter_ms: u64,
    /// Probability (0 to 1) of executing a payment and answering only `--slow-ms` later.
    #[arg(long, default_value_t = 0.0, value_parser = parse_rate)]
    pub slow_rate: f64,
    /// How late a `--slow-rate` answer is, in milliseconds (a sender's timeout is usually less).
    #[arg(long, default_value_t = 0)]
    pub slow_ms: u64,
    /// Probability (0 to 1) of executing a payment and answering 503, as if the answer were lost.
    #[arg(long, default_value_t = 0.0, value_parser = parse_rate)]
    pub lost_answer_rate: f64,
    /// Be down (503 to everything, nothing executed) from START for DURATION after the start,
    /// e.g. `30s+120s` (units ms, s, m, h). Repeat for several outages.
    #[arg(long, value_name = "START+DURATION")]
    pub outage: Vec<Outage>,
    /// Start down, until `POST /control {"down": false}`.
    #[arg(long)]
    pub down: bool,
    /// Seed of the random draws and of the refusal decisions.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

fn parse_rate(text: &str) -> Result<f64, String> {
    let rate: f64 = text
        .parse()
        .map_err(|_| format!("`{text}` is not a number"))?;
    if !(0.0..=1.0).contains(&rate) {
        return Err(format!("{rate} is not within 0 to 1"));
    }
    Ok(rate)
}

fn config(args: ProcessorArgs) -> Result<Config, String> {
    let secret = match &args.secret_file {
        None => None,
        Some(path) => Some(read_secret(path)?),
    };
    Ok(Config {
        secret,
        failure_rate: args.failure_rate,
        refuse_rate: args.refuse_rate,
        latency_ms: args.latency_ms,
        jitter_ms: args.jitter_ms,
        slow_rate: args.slow_rate,
        slow_ms: args.slow_ms,
        lost_answer_rate: args.lost_answer_rate,
        down: args.down,
        outages: args.outage,
        seed: args.seed,
        ..Config::default()
    })
}

fn read_secret(path: &std::path::Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the secret file {}: {e}", path.display()))?;
    let secret = text.lines().next().unwrap_or("").trim();
    // An empty secret would be "authentication on" that any request without one passes.
    if secret.is_empty() {
        return Err(format!("the secret file {} is empty", path.display()));
    }
    Ok(secret.to_string())
}

pub async fn run(args: ProcessorArgs) -> ExitCode {
    server::init_logging();
    let listen = args.listen;
    let config = match config(args) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let handle = match bulwark_processor::start(listen, config).await {
        Ok(handle) => handle,
        Err(e) => {
            tracing::error!("cannot start the processor on {listen}: {e}");
            return ExitCode::from(5);
        }
    };
    // On stdout, alone on its line: what a script starting the processor reads to find it.
    println!("{}", handle.url());
    server::shutdown_signal().await;
    tracing::info!("shutdown requested: finishing answers in flight");
    let summary = handle.summary();
    handle.shutdown().await;
    tracing::info!(
        deliveries = summary.deliveries,
        executed = summary.executed,
        executed_per_key_max = summary.executed_per_key_max,
        highest_term = summary.highest_term,
        "stopped cleanly"
    );
    ExitCode::SUCCESS
}
