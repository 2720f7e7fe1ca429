//! `bulwark backup create|list|verify` and `bulwark restore`: backups of a running cluster,
//! their checks, and a new cluster's data directory rebuilt from a backup and the archive, to
//! a log index or a time.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use bulwark_backup::catalog::{backups, ArchiveListing, FoundBackup};
use bulwark_backup::restore::{build_state, plan, RestoreTo};
use bulwark_backup::{format_time, open_target, Target};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::Value;

use crate::client::Target as Node;

#[derive(clap::Subcommand)]
pub enum BackupCommand {
    /// Back up a running cluster (an in-sync follower's checkpoint when there is one): the
    /// state as of a log index, with a manifest (admin token).
    Create(CreateArgs),
    /// Show the backups and the archive a target holds, and the range a restore can reach.
    List(ListArgs),
    /// Check every backup and the archive (checksums, sizes, the chain of chunks, what each
    /// manifest claims) and replay them into a scratch store; names each problem's file.
    Verify(ListArgs),
    /// Delete old backups and the archive chunks no kept backup needs.
    Prune(PruneArgs),
}

#[derive(clap::Args)]
pub struct PruneArgs {
    /// The backup target.
    pub target: String,
    /// The archive target: chunks before the oldest kept backup are deleted too.
    #[arg(long)]
    pub archive: Option<String>,
    /// Keep this many of the newest backups.
    #[arg(long)]
    pub keep_full: usize,
    /// Keep every backup younger than this (90s, 15m, 24h, 7d): with the archive, the window
    /// a point-in-time restore can reach.
    #[arg(long, value_parser = bulwark_backup::prune::parse_duration)]
    pub keep_within: std::time::Duration,
    /// Say what would be deleted, delete nothing.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(clap::Args)]
pub struct CreateArgs {
    /// Where to store the backup: a directory (local or mounted), or `s3://bucket/prefix`
    /// (settings from the `AWS_*` environment variables; see docs/operations.md).
    #[arg(long)]
    pub to: String,
    /// Read from the node at `--addr` even when it leads (by default an in-sync follower is
    /// read, so the leader is not slowed).
    #[arg(long)]
    pub from_this_node: bool,
    /// Store only what changed since this backup (a name from `bulwark backup list`, or
    /// `latest`: the newest backup of the cluster in the target).
    #[arg(long)]
    pub incremental_from: Option<String>,
    #[command(flatten)]
    pub node: Node,
}

#[derive(clap::Args)]
pub struct ListArgs {
    /// The backup target: a directory or `s3://bucket/prefix`.
    pub target: String,
    /// The archive target (`bulwark start --archive`), if any.
    #[arg(long)]
    pub archive: Option<String>,
}

#[derive(clap::Args)]
pub struct RestoreArgs {
    /// The backup target: a directory or `s3://bucket/prefix`.
    #[arg(long)]
    pub from: String,
    /// The archive target, to replay past the backup.
    #[arg(long)]
    pub archive: Option<String>,
    /// Restore from this backup (by default the newest one at or before the target).
    #[arg(long)]
    pub backup: Option<String>,
    /// The state as of this time (RFC 3339): every batch the ledger stamped at or before it.
    #[arg(long, conflicts_with_all = ["to_index", "to_timestamp"])]
    pub to_time: Option<String>,
    /// The same, as a ledger timestamp (ns since the Unix epoch, as the API shows them): one
    /// less than a bad transfer's `timestamp` restores the ledger just before it.
    #[arg(long, conflicts_with = "to_index")]
    pub to_timestamp: Option<u64>,
    /// The state as of this log index.
    #[arg(long)]
    pub to_index: Option<u64>,
    /// The new node's data directory (created; must be empty or a restore that did not finish).
    #[arg(long)]
    pub data_dir: PathBuf,
}

pub async fn run(cmd: BackupCommand) -> ExitCode {
    let result = match cmd {
        BackupCommand::Create(args) => create(args).await,
        BackupCommand::List(args) => blocking(move || list(args)).await,
        BackupCommand::Verify(args) => blocking(move || verify(args)).await,
        BackupCommand::Prune(args) => blocking(move || prune(args)).await,
    };
    finish(result)
}

pub async fn restore(args: RestoreArgs) -> ExitCode {
    finish(blocking(move || restore_blocking(args)).await)
}

fn finish(result: Result<ExitCode, String>) -> ExitCode {
    result.unwrap_or_else(|e| {
        eprintln!("error: {e}");
        ExitCode::from(4)
    })
}

async fn blocking(
    f: impl FnOnce() -> Result<ExitCode, String> + Send + 'static,
) -> Result<ExitCode, String> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| format!("the command's thread failed: {e}"))?
}

fn open(spec: &str) -> Result<Box<dyn Target>, String> {
    open_target(spec).map_err(|e| e.to_string())
}

fn bar(len: u64, template: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    if std::io::stderr().is_terminal() {
        if let Ok(style) = ProgressStyle::with_template(template) {
            bar.set_style(style);
        }
    } else {
        bar.set_draw_target(ProgressDrawTarget::hidden());
    }
    bar
}

/// The node to read the backup from: an in-sync follower of the one asked, unless told not to.
async fn choose_source(
    args: &CreateArgs,
    client: &reqwest::Client,
) -> Result<(String, u64, u64), String> {
    let status: Value = get_json(client, &format!("{}/v1/status", args.node.addr)).await?;
    let cluster_id = status["cluster_id"]
        .as_u64()
        .ok_or("the node's status names no cluster id")?;
    let node_id = status["node_id"].as_u64().unwrap_or(0);
    if args.from_this_node || status["role"] != "leader" {
        return Ok((args.node.addr.clone(), cluster_id, node_id));
    }
    let scheme = args.node.addr.split("://").next().unwrap_or("http");
    let follower = status["members"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|m| {
            m["role"] == "follower" && m["in_sync"] == true && m["id"].as_u64() != Some(node_id)
        });
    Ok(match follower {
        Some(m) => (
            format!("{scheme}://{}", m["http_addr"].as_str().unwrap_or_default()),
            cluster_id,
            m["id"].as_u64().unwrap_or(0),
        ),
        None => (args.node.addr.clone(), cluster_id, node_id),
    })
}

async fn get_json(client: &reqwest::Client, url: &str) -> Result<Value, String> {
    let response = client
        .get(url)
        .send()
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    let status = response.status();
    let body = response.text().await.map_err(|e| format!("{url}: {e}"))?;
    if !status.is_success() {
        return Err(format!("{url} answered {status}: {body}"));
    }
    serde_json::from_str(&body).map_err(|e| format!("{url}: not JSON: {e}"))
}

async fn create(args: CreateArgs) -> Result<ExitCode, String> {
    let client = args.node.client()?;
    let (source, cluster_id, node_id) = choose_source(&args, &client).await?;
    let url = format!("{source}/v1/backup/snapshot");
    let response = client
        .get(&url)
        .send()
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    if !response.status().is_success() {
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        eprintln!("error: {url} answered {status}: {body}");
        return Ok(ExitCode::from(3));
    }
    let target = open(&args.to)?;
    let parent = match &args.incremental_from {
        None => None,
        Some(name) => Some(find_backup(&*target, name, cluster_id)?),
    };
    let source = bulwark_backup::create::Source {
        cluster_id,
        node_id,
    };
    let manifest = store_stream(response, &url, target, source, parent).await?;
    record_backup(&client, &args, &manifest).await;
    println!(
        "{} backup {} of cluster {} from node {}: index {}, ledger time {}, {} bytes, in {}",
        match &manifest.parent {
            Some(parent) => format!("incremental (after {parent})"),
            None => "full".to_string(),
        },
        manifest.name,
        manifest.cluster_id,
        manifest.source_node,
        manifest.applied_index,
        format_time(manifest.last_timestamp),
        manifest.files.iter().map(|f| f.bytes).sum::<u64>(),
        args.to
    );
    Ok(ExitCode::SUCCESS)
}

/// Stores the node's snapshot stream as a backup (full, or incremental after `parent`) on a
/// blocking thread as it arrives, with a progress bar.
async fn store_stream(
    mut response: reqwest::Response,
    url: &str,
    target: Box<dyn Target>,
    source: bulwark_backup::create::Source,
    parent: Option<bulwark_backup::manifest::Manifest>,
) -> Result<bulwark_backup::manifest::Manifest, String> {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<bytes::Bytes, String>>(16);
    let writer = tokio::task::spawn_blocking(move || {
        let progress = bar(
            0,
            "{elapsed_precise} {bytes} stored ({bytes_per_sec}) {msg}",
        );
        let mut reader = ChannelReader {
            rx,
            current: bytes::Bytes::new(),
        };
        let mut report = |done| progress.set_position(done);
        let manifest = match &parent {
            None => {
                bulwark_backup::create::create_backup(&*target, source, &mut reader, &mut report)
            }
            Some(parent) => bulwark_backup::incremental::create_incremental(
                &*target,
                source,
                &mut reader,
                parent,
                &mut report,
            ),
        };
        progress.finish_and_clear();
        manifest.map_err(|e| e.to_string())
    });
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                if tx.send(Ok(chunk)).await.is_err() {
                    break;
                }
            }
            Ok(None) => break,
            Err(e) => {
                let _ = tx.send(Err(format!("{url}: the stream broke: {e}"))).await;
                break;
            }
        }
    }
    drop(tx);
    writer.await.map_err(|e| e.to_string())?
}

/// Puts a stored backup into the replicated audit trail (through the node asked, which
/// forwards to the leader); a failure there is a warning: the backup itself is complete.
async fn record_backup(
    client: &reqwest::Client,
    args: &CreateArgs,
    manifest: &bulwark_backup::manifest::Manifest,
) {
    let record = serde_json::json!({
        "backup": manifest.name, "applied_index": manifest.applied_index, "target": args.to,
    });
    let url = format!("{}/v1/backup/record", args.node.addr);
    match client.post(&url).json(&record).send().await {
        Ok(r) if r.status().is_success() => {}
        Ok(r) => eprintln!(
            "warning: the backup is complete, but the audit trail did not take it: {} {}",
            r.status(),
            r.text().await.unwrap_or_default()
        ),
        Err(e) => eprintln!("warning: the backup is complete, but {url}: {e}"),
    }
}

/// The backup `name` (or the newest of the cluster, for `latest`) in `target`.
fn find_backup(
    target: &dyn Target,
    name: &str,
    cluster_id: u64,
) -> Result<bulwark_backup::manifest::Manifest, String> {
    let complete = backups(target).map_err(|e| e.to_string())?;
    let mut found: Vec<_> = complete
        .into_iter()
        .filter_map(|b| match b {
            FoundBackup::Complete(m) if m.cluster_id == cluster_id => Some(m),
            _ => None,
        })
        .collect();
    found.sort_by_key(|m| m.applied_index);
    let hit = if name == "latest" {
        found.pop()
    } else {
        found.into_iter().find(|m| m.name == name)
    };
    hit.ok_or_else(|| {
        format!(
            "--incremental-from {name}: no complete backup of cluster {cluster_id} by that name in {}",
            target.describe()
        )
    })
}

/// The HTTP body, read on a blocking thread as it arrives.
struct ChannelReader {
    rx: tokio::sync::mpsc::Receiver<Result<bytes::Bytes, String>>,
    current: bytes::Bytes,
}

impl std::io::Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(chunk)) => self.current = chunk,
                Some(Err(e)) => return Err(std::io::Error::other(e)),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        let _ = self.current.split_to(n);
        Ok(n)
    }
}

fn list(args: ListArgs) -> Result<ExitCode, String> {
    let target = open(&args.target)?;
    let archive = args.archive.as_deref().map(open).transpose()?;
    let mut clusters = Vec::new();
    for found in backups(&*target).map_err(|e| e.to_string())? {
        match found {
            FoundBackup::Complete(m) => {
                let kind = match &m.parent {
                    Some(parent) => format!("incremental after {parent}"),
                    None => "full".to_string(),
                };
                println!(
                    "backup {}  {kind}  cluster {}  index {}  ledger time {}  {} bytes  from node {}",
                    m.name,
                    m.cluster_id,
                    m.applied_index,
                    format_time(m.last_timestamp),
                    m.files.iter().map(|f| f.bytes).sum::<u64>(),
                    m.source_node
                );
                if !clusters.contains(&(m.cluster_id, m.applied_index)) {
                    clusters.push((m.cluster_id, m.applied_index));
                }
            }
            FoundBackup::Unusable { name, object, why } => {
                println!("backup {name}  UNUSABLE: {object}: {why}")
            }
        }
    }
    let Some(archive) = archive else {
        return Ok(ExitCode::SUCCESS);
    };
    clusters.sort();
    clusters.dedup_by_key(|(c, _)| *c);
    for (cluster, earliest_backup) in clusters {
        let listing = ArchiveListing::read(&*archive, cluster).map_err(|e| e.to_string())?;
        let (end, gap) = listing.covered_from(earliest_backup);
        println!(
            "archive of cluster {cluster}: {} chunks, entries {}..={}; restorable from index {earliest_backup} to {end}{}",
            listing.chunks.len(),
            listing.first_index().unwrap_or(0),
            listing.last_index().unwrap_or(0),
            gap.map(|(a, b)| format!(" (then a gap: {a}..={b} missing)")).unwrap_or_default()
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn verify(args: ListArgs) -> Result<ExitCode, String> {
    let target = open(&args.target)?;
    let archive = args.archive.as_deref().map(open).transpose()?;
    let scratch = std::env::temp_dir();
    let report = bulwark_backup::verify::verify(&*target, archive.as_deref(), &scratch)
        .map_err(|e| e.to_string())?;
    for problem in &report.problems {
        println!("PROBLEM {problem}");
    }
    println!(
        "checked {} backups and {} archive chunks: {}",
        report.backups_checked,
        report.chunks_checked,
        match (&report.problems[..], report.restorable) {
            ([], Some((a, b))) => format!("all good; restorable from index {a} to {b}"),
            ([], None) => "all good".to_string(),
            (p, _) => format!("{} problems", p.len()),
        }
    );
    Ok(if report.problems.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn prune(args: PruneArgs) -> Result<ExitCode, String> {
    use bulwark_backup::prune::{apply_prune, plan_prune, Retention};
    let target = open(&args.target)?;
    let archive = args.archive.as_deref().map(open).transpose()?;
    let retention = Retention {
        keep_full: args.keep_full,
        keep_within: args.keep_within,
    };
    let plan = plan_prune(
        &*target,
        archive.as_deref(),
        retention,
        bulwark_backup::now_ms(),
    )
    .map_err(|e| e.to_string())?;
    let verb = if args.dry_run {
        "would delete"
    } else {
        "deleted"
    };
    if !args.dry_run {
        apply_prune(&*target, archive.as_deref(), &plan).map_err(|e| e.to_string())?;
    }
    for name in &plan.drop_backups {
        println!("{verb} backup {name}");
    }
    for cluster in &plan.untouched_clusters {
        println!("left the archive of cluster {cluster} alone: no backup of it is kept");
    }
    println!(
        "kept {} backups; {verb} {} backups and {} archive chunks",
        plan.kept.len(),
        plan.drop_backups.len(),
        plan.drop_chunks.len()
    );
    Ok(ExitCode::SUCCESS)
}

fn restore_blocking(args: RestoreArgs) -> Result<ExitCode, String> {
    let to = match (&args.to_time, args.to_timestamp, args.to_index) {
        (Some(t), _, _) => RestoreTo::Time(bulwark_backup::parse_time(t)?),
        (None, Some(ns), _) => RestoreTo::Time(ns),
        (None, None, Some(i)) => RestoreTo::Index(i),
        (None, None, None) => RestoreTo::End,
    };
    let backups_target = open(&args.from)?;
    let archive = args.archive.as_deref().map(open).transpose()?;
    // Everything is checked before the directory is touched.
    let plan = plan(
        &*backups_target,
        archive.as_deref(),
        args.backup.as_deref(),
        to,
    )
    .map_err(|e| format!("cannot restore: {e}"))?;
    bulwark_node::restore::prepare_directory(&args.data_dir).map_err(|e| e.to_string())?;
    let progress = bar(
        0,
        "{elapsed_precise} [{wide_bar}] {pos}/{len} entries replayed",
    );
    let (mut store, restored) = build_state(
        &*backups_target,
        archive.as_deref(),
        &plan,
        &args.data_dir.join("state.redb"),
        &mut |done, planned| {
            progress.set_length(planned);
            progress.set_position(done);
        },
    )
    .map_err(|e| format!("restore failed (rerun it to start over): {e}"))?;
    progress.finish_and_clear();
    let cluster_id = new_cluster_id(plan.backup.cluster_id)?;
    let identity = bulwark_node::restore::make_node(
        &args.data_dir,
        &mut store,
        cluster_id,
        bulwark_backup::now_ms() / 1000,
    )
    .map_err(|e| e.to_string())?;
    drop(store);
    println!(
        "restored backup {} of cluster {} and {} archived entries: the ledger as of index {}, time {}",
        plan.backup.name,
        plan.backup.cluster_id,
        restored.entries_replayed,
        restored.applied_index,
        format_time(restored.last_timestamp)
    );
    println!(
        "{} now holds node {} of a new cluster {} (it can never join cluster {}); start it with:\n  bulwark start --data-dir {}",
        args.data_dir.display(),
        identity.node_id,
        identity.cluster_id,
        plan.backup.cluster_id,
        args.data_dir.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// A random cluster id other than the old one's.
fn new_cluster_id(old: u64) -> Result<u64, String> {
    let rng = ring::rand::SystemRandom::new();
    loop {
        let bytes: [u8; 8] = ring::rand::generate(&rng)
            .map_err(|_| "no randomness for a cluster id".to_string())?
            .expose();
        // Positive in a signed 64-bit reading too (some tools print ids as i64).
        let id = u64::from_le_bytes(bytes) >> 1;
        if id != 0 && id != old {
            return Ok(id);
        }
    }
}
