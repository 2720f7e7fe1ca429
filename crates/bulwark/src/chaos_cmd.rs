//! `bulwark chaos`: the Jepsen-style bank test of a local cluster of real processes, and
//! `bulwark chaos check HISTORY` to check a history on its own.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use bulwark_chaos::nemesis::{parse_mix, Fault};
use bulwark_chaos::run::{check_file, run, ChaosConfig};
use bulwark_fs::test_faults::{self, Skip};

#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct ChaosArgs {
    #[command(subcommand)]
    check: Option<ChaosCommand>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(clap::Subcommand)]
enum ChaosCommand {
    /// Check a history file written by a run; exit 0 if every property holds, 1 if not.
    Check {
        /// The `history.jsonl` of a run.
        history: PathBuf,
    },
}

#[derive(clap::Args)]
struct RunArgs {
    /// Cluster size: 3 or 5.
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// How long the workload and the nemesis run, in seconds (healing and checking come after).
    #[arg(long, default_value_t = 120)]
    duration: u64,
    /// Client operations per second, all clients together.
    #[arg(long, default_value_t = 200.0)]
    rate: f64,
    /// Concurrent clients.
    #[arg(long, default_value_t = 8)]
    clients: usize,
    /// Faults to inject: `all`, or a comma-separated list of kill, kill-leader, pause, partition,
    /// bridge, one-way, membership, disk, power, power-all, torn, composed, clock, slow-disk.
    /// disk needs root (a small tmpfs per node); power, power-all, torn, composed and slow-disk
    /// need root and /dev/fuse (a lazy filesystem per node); clock needs a test build
    /// (`--features test-faults`) and is in `all` only there.
    #[arg(long, default_value = "all", value_parser = parse_mix)]
    nemesis: std::vec::Vec<Fault>,
    /// How long each fault lasts, in ms: MIN-MAX.
    #[arg(long, default_value = "2000-6000", value_parser = parse_range)]
    hold_ms: (u64, u64),
    /// Quiet time between faults, in ms: MIN-MAX.
    #[arg(long, default_value = "3000-6000", value_parser = parse_range)]
    quiet_ms: (u64, u64),
    /// Each node's `--checkpoint-transfers`: small by default, so that a run checkpoints,
    /// compacts the Raft log and catches restarted followers up by snapshot again and again.
    #[arg(long, default_value_t = 20_000)]
    checkpoint_transfers: usize,
    /// Seed of every random choice (faults, victims, operations); printed so a run can be replayed.
    #[arg(long)]
    seed: Option<u64>,
    /// Folder for the history, the report and the nodes' data and logs.
    #[arg(long)]
    out: Option<PathBuf>,
    /// UNSAFE, a test build only: every node skips a durability step (`log-fdatasync`: the Raft log's
    /// fdatasyncs (WAL appends, hard state); `dir-fsync`: every directory fsync), so that a run with power
    /// faults must come out INVALID. Shows that the harness can fail.
    #[arg(long, hide = true, value_parser = parse_skip)]
    unsafe_skip_fsync: Option<Skip>,
    /// Also pay through a flaky stand-in processor (failures, refusals, slow and lost answers,
    /// down for a fifth of the run) that every node relays to, and check every payment ended
    /// posted or voided exactly once, as the processor's records say it must.
    #[arg(long)]
    payments: bool,
}

fn parse_skip(text: &str) -> Result<Skip, String> {
    if !test_faults::ENABLED {
        return Err("needs a test build of bulwark (`--features test-faults`)".into());
    }
    let expected = || format!("expected one of {}", Skip::ALL.map(Skip::name).join(", "));
    match test_faults::parse(text).as_deref() {
        Ok([one]) => Ok(*one),
        Ok(_) => Err(expected()),
        Err(word) => Err(format!("unknown step {word:?}: {}", expected())),
    }
}

fn parse_range(text: &str) -> Result<(u64, u64), String> {
    let (lo, hi) = text
        .split_once('-')
        .ok_or_else(|| format!("expected MIN-MAX in ms, like 2000-6000, got {text:?}"))?;
    let lo: u64 = lo.trim().parse().map_err(|e| format!("MIN {lo:?}: {e}"))?;
    let hi: u64 = hi.trim().parse().map_err(|e| format!("MAX {hi:?}: {e}"))?;
    if lo > hi {
        return Err(format!("MIN {lo} is above MAX {hi}"));
    }
    Ok((lo, hi))
}

pub async fn run_command(args: ChaosArgs) -> ExitCode {
    if let Some(ChaosCommand::Check { history }) = args.check {
        return match check_file(&history) {
            Ok(report) => {
                println!("{}", report.details(10));
                // How much the verdict rests on: a VALID that compared no read says little.
                println!("{}", report.reads.summary());
                ExitCode::from(if report.ok { 0 } else { 1 })
            }
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::from(2)
            }
        };
    }
    crate::server::init_logging();
    let a = args.run;
    if a.nodes != 3 && a.nodes != 5 {
        eprintln!("error: --nodes must be 3 or 5 (got {})", a.nodes);
        return ExitCode::from(2);
    }
    if a.clients == 0 || a.rate <= 0.0 || a.duration == 0 || a.checkpoint_transfers == 0 {
        eprintln!(
            "error: --clients, --rate, --duration and --checkpoint-transfers must be above 0"
        );
        return ExitCode::from(2);
    }
    let seed = a.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
            % 1_000_000_007
    });
    let out = a
        .out
        .unwrap_or_else(|| PathBuf::from(format!("chaos-{seed}")));
    let mix: Vec<&str> = a.nemesis.iter().map(|f| f.name()).collect();
    let replay = format!(
        "bulwark chaos --nodes {} --duration {} --rate {} --clients {} --nemesis {} --hold-ms {}-{} --quiet-ms {}-{} --checkpoint-transfers {} --seed {seed} --out {}-replay",
        a.nodes,
        a.duration,
        a.rate,
        a.clients,
        mix.join(","),
        a.hold_ms.0,
        a.hold_ms.1,
        a.quiet_ms.0,
        a.quiet_ms.1,
        a.checkpoint_transfers,
        out.display()
    ) + &a
        .unsafe_skip_fsync
        .map(|s| format!(" --unsafe-skip-fsync {}", s.name()))
        .unwrap_or_default()
        + if a.payments { " --payments" } else { "" };
    let bin = match std::env::current_exe() {
        Ok(bin) => bin,
        Err(e) => {
            eprintln!("error: cannot find the bulwark binary to start nodes with: {e}");
            return ExitCode::from(5);
        }
    };
    eprintln!(
        "chaos: {} nodes, {} s, nemesis {}, seed {seed}, output in {}",
        a.nodes,
        a.duration,
        mix.join(","),
        out.display()
    );
    let config = ChaosConfig {
        bin,
        nodes: a.nodes,
        duration: Duration::from_secs(a.duration),
        rate: a.rate,
        clients: a.clients,
        mix: a.nemesis,
        seed,
        out,
        hold_ms: a.hold_ms,
        quiet_ms: a.quiet_ms,
        checkpoint_transfers: a.checkpoint_transfers,
        replay,
        unsafe_skip_fsync: a.unsafe_skip_fsync,
        payments: a.payments,
    };
    match run(config).await {
        Ok(outcome) => {
            println!("{}", outcome.summary);
            if !outcome.report.ok {
                eprintln!("{}", outcome.report.details(10));
            }
            ExitCode::from(if outcome.report.ok { 0 } else { 1 })
        }
        Err(e) => {
            eprintln!("error: the chaos run could not finish: {e:#}");
            ExitCode::from(5)
        }
    }
}
