//! `bulwark`: the server and its command-line client.
//!
//! Exit codes scripts can trust: 0 done; 1 the ledger refused an event (a result other than
//! `ok`); 2 bad command line; 3 the server refused the request (4xx); 4 the server could not be
//! reached or failed (5xx, connection error); 5 the server itself failed to start or stopped on
//! an error.

mod admin_token;
mod allocator;
mod backup_cmd;
mod bench;
mod bench_failover;
mod bench_rolling;
mod certs;
mod chaos_cmd;
mod client;
mod cluster_cmd;
mod dlq_cmd;
mod fds;
mod observe;
mod processor_cmd;
mod query_cmd;
mod relay_args;
mod serve;
mod server;
mod token_cmd;
mod top_cmd;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "bulwark",
    version,
    about = "A fault-tolerant ledger database for money movement"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start a node: recover from the data directory and serve the HTTP API.
    Start(server::StartArgs),
    /// Create or look up accounts.
    #[command(subcommand)]
    Account(client::AccountCommand),
    /// Create one transfer.
    Transfer(client::TransferArgs),
    /// List an account's transfers in timestamp order.
    History(client::HistoryArgs),
    /// Find transfers or accounts by ledger, code, user data and a timestamp window, a page at
    /// a time.
    #[command(subcommand)]
    Query(query_cmd::QueryCommand),
    /// List the change feed: every balance change with both accounts' balances right after it
    /// (`--follow` to keep waiting for more).
    Changes(query_cmd::ChangesArgs),
    /// Load-test a running node (or one started on a temporary directory).
    Bench(bench::BenchArgs),
    /// Measure leader failover: start a local cluster, kill its leader again and again, time
    /// how long writes stop.
    #[command(name = "bench-failover")]
    BenchFailover(bench_failover::FailoverArgs),
    /// Measure a rolling restart: start a local cluster, restart every node in turn (SIGTERM)
    /// under load, count the writes that failed on their first try.
    #[command(name = "bench-rolling")]
    BenchRolling(bench_rolling::RollingArgs),
    /// The cluster as the console shows it, in the terminal: members, roles, lag, rates,
    /// refreshed live.
    Top(top_cmd::TopArgs),
    /// Run a local cluster, or show a cluster's replication status.
    #[command(subcommand)]
    Cluster(cluster_cmd::ClusterCommand),
    /// Jepsen-style bank test: run a local cluster of real processes under a workload and faults,
    /// check the history, write an HTML report (or `chaos check HISTORY`).
    Chaos(chaos_cmd::ChaosArgs),
    /// Make the certificates nodes authenticate each other with: a cluster CA, node certificates.
    #[command(subcommand)]
    Cert(certs::CertCommand),
    /// Create, list and revoke API tokens (an admin token is needed).
    #[command(subcommand)]
    Token(token_cmd::TokenCommand),
    /// List the replicated audit trail: token changes and membership changes, who and when.
    Audit(token_cmd::AuditArgs),
    /// Back up a running cluster, list and verify backups and the archive.
    #[command(subcommand)]
    Backup(backup_cmd::BackupCommand),
    /// Build a new cluster's data directory from a backup and the archive, to a time or index.
    Restore(backup_cmd::RestoreArgs),
    /// The dead-letter queue of payments to external accounts: list, retry, discard.
    #[command(subcommand)]
    Dlq(dlq_cmd::DlqCommand),
    /// Run a stand-in payment processor for the outbox's tests and demos: idempotency keys, term
    /// fencing, and knobs to make it fail (docs/processor-protocol.md).
    Processor(processor_cmd::ProcessorArgs),
}

fn main() -> ExitCode {
    allocator::configure();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(5);
        }
    };
    runtime.block_on(async move {
        match cli.command {
            Command::Start(args) => server::start(args).await,
            Command::Account(cmd) => client::account(cmd).await,
            Command::Transfer(args) => client::transfer(args).await,
            Command::History(args) => client::history(args).await,
            Command::Query(cmd) => query_cmd::query(cmd).await,
            Command::Changes(args) => query_cmd::changes(args).await,
            Command::Bench(args) => bench::run(args).await,
            Command::BenchFailover(args) => bench_failover::run(args).await,
            Command::BenchRolling(args) => bench_rolling::run(args).await,
            Command::Top(args) => top_cmd::top(args).await,
            Command::Cluster(cmd) => cluster_cmd::run(cmd).await,
            Command::Chaos(args) => chaos_cmd::run_command(args).await,
            Command::Cert(cmd) => certs::run(cmd),
            Command::Token(cmd) => token_cmd::token(cmd).await,
            Command::Audit(args) => token_cmd::audit(args).await,
            Command::Backup(cmd) => backup_cmd::run(cmd).await,
            Command::Restore(args) => backup_cmd::restore(args).await,
            Command::Dlq(cmd) => dlq_cmd::run(cmd).await,
            Command::Processor(args) => processor_cmd::run(args).await,
        }
    })
}
