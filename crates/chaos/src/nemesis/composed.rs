//! Composed faults: two at once, each a window of its own in the history (so the report shows
//! both), under one `composed` round:
//! - a partition that leaves the leader in the minority, then a kill -9 of the leader the
//!   majority elects;
//! - a pause of one node and a full disk on another;
//! - a power cut of a follower while it installs a snapshot (it is cut off until the leader has
//!   compacted past it, then cut as soon as its log says it fetches a snapshot).

use std::time::{Duration, Instant};

use super::power::lost;
use super::{role_of, sleep_until_or, Nemesis};
use crate::cluster::Cluster;
use crate::history::NemesisAction;
use crate::proxy;
use crate::workload::Recorder;

/// What a node logs when it starts to fetch a snapshot (`node::install`).
const SNAPSHOT_FETCH_LOG: &str = "fetching a snapshot to catch up";

impl Nemesis {
    pub(super) async fn composed(
        &mut self,
        cluster: &mut Cluster,
        recorder: &Recorder,
        leader: Option<u64>,
        (hold, deadline): (Duration, Instant),
    ) -> anyhow::Result<()> {
        match self.rng.below(3) {
            0 => {
                self.partition_then_kill(cluster, recorder, leader, hold, deadline)
                    .await
            }
            1 => {
                self.pause_and_disk(cluster, recorder, leader, hold, deadline)
                    .await
            }
            _ => {
                self.power_during_install(cluster, recorder, leader, hold, deadline)
                    .await
            }
        }
    }

    async fn partition_then_kill(
        &mut self,
        cluster: &mut Cluster,
        recorder: &Recorder,
        leader: Option<u64>,
        hold: Duration,
        deadline: Instant,
    ) -> anyhow::Result<()> {
        let mut ids = cluster.originals.clone();
        if let Some(at) = leader.and_then(|l| ids.iter().position(|x| *x == l)) {
            ids.swap(0, at);
        }
        let (small, big) = ids.split_at(ids.len() / 2);
        cluster
            .proxy
            .links()
            .set_blocked(proxy::partition(&[small.to_vec(), big.to_vec()]));
        self.window(
            recorder,
            NemesisAction::Start,
            format!("partition {small:?} | {big:?} (composed: the new leader is killed next)"),
        );
        let until = (Instant::now() + hold).min(deadline);
        let mut killed = None;
        while killed.is_none() && Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let now = cluster.leader().await;
            if let Some(new) = now.filter(|n| big.contains(n)) {
                cluster.node(new).kill9();
                self.window(
                    recorder,
                    NemesisAction::Start,
                    format!("kill -9 node {new} (the majority's new leader)"),
                );
                killed = Some(new);
            }
        }
        sleep_until_or(until.saturating_duration_since(Instant::now()), deadline).await;
        if let Some(new) = killed {
            cluster.node(new).start()?;
            self.window(
                recorder,
                NemesisAction::Stop,
                format!("kill: node {new} restarted"),
            );
        }
        cluster.proxy.links().heal();
        self.window(recorder, NemesisAction::Stop, "partition: healed".into());
        Ok(())
    }

    async fn pause_and_disk(
        &mut self,
        cluster: &mut Cluster,
        recorder: &Recorder,
        leader: Option<u64>,
        hold: Duration,
        deadline: Instant,
    ) -> anyhow::Result<()> {
        let ids = cluster.originals.clone();
        let paused = leader.unwrap_or(ids[0]);
        let others: Vec<u64> = ids.iter().copied().filter(|x| *x != paused).collect();
        let full = *self.rng.pick(&others);
        cluster.node(paused).pause();
        self.window(
            recorder,
            NemesisAction::Start,
            format!("pause (SIGSTOP) node {paused}{}", role_of(paused, leader)),
        );
        let filled = cluster.node(full).fill_disk()?;
        self.window(
            recorder,
            NemesisAction::Start,
            format!(
                "disk full on node {full} ({} MiB of filler; composed with the pause)",
                filled >> 20
            ),
        );
        sleep_until_or(hold, deadline).await;
        cluster.node(full).free_disk()?;
        self.window(
            recorder,
            NemesisAction::Stop,
            format!("disk: space returned on node {full}"),
        );
        cluster.node(paused).resume();
        self.window(
            recorder,
            NemesisAction::Stop,
            format!("pause: node {paused} resumed (SIGCONT)"),
        );
        Ok(())
    }

    async fn power_during_install(
        &mut self,
        cluster: &mut Cluster,
        recorder: &Recorder,
        leader: Option<u64>,
        hold: Duration,
        deadline: Instant,
    ) -> anyhow::Result<()> {
        let followers: Vec<u64> = cluster
            .originals
            .iter()
            .copied()
            .filter(|x| Some(*x) != leader)
            .collect();
        let victim = *self.rng.pick(&followers);
        let others: Vec<u64> = cluster
            .originals
            .iter()
            .copied()
            .filter(|x| *x != victim)
            .collect();
        cluster
            .proxy
            .links()
            .set_blocked(proxy::partition(&[vec![victim], others]));
        self.window(
            recorder,
            NemesisAction::Start,
            format!("partition [{victim}] | rest (composed: cut off until it needs a snapshot, then a power cut)"),
        );
        sleep_until_or(hold, deadline).await;
        let compacted = self.wait_compacted_past(cluster, victim, deadline).await;
        let log = cluster.node(victim).log_path();
        let log_before = std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0);
        cluster.proxy.links().heal();
        self.window(recorder, NemesisAction::Stop, "partition: healed".into());
        let until = Instant::now() + Duration::from_secs(5);
        let mut fetching = false;
        while !fetching && Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(20)).await;
            fetching = logged_since(&log, log_before, SNAPSHOT_FETCH_LOG);
        }
        // Somewhere in the download, the swap or the reopen.
        tokio::time::sleep(self.rng.millis(0, 400)).await;
        let report = cluster.node(victim).power_cut(None)?;
        let during = match (fetching, compacted) {
            (true, _) => "while it installs a snapshot",
            (false, true) => "(it fetched no snapshot within 5 s)",
            (false, false) => "(the leader did not compact past it in time)",
        };
        self.window(
            recorder,
            NemesisAction::Start,
            format!("power cut of node {victim} {during}: {}", lost(&report)),
        );
        self.findings.power_cuts += 1;
        if fetching {
            self.findings.installs_cut += 1;
        }
        sleep_until_or(Duration::from_secs(2), deadline).await;
        cluster.node(victim).start()?;
        self.window(
            recorder,
            NemesisAction::Stop,
            format!("power: node {victim} restarted"),
        );
        Ok(())
    }
}

impl Nemesis {
    /// Waits (at most [`COMPACTION_WAIT`], and not past `deadline`) until the leader's log starts
    /// after `victim`'s applied index, so that it can only catch up by snapshot.
    async fn wait_compacted_past(&self, cluster: &Cluster, victim: u64, deadline: Instant) -> bool {
        let until = (Instant::now() + COMPACTION_WAIT).min(deadline);
        while Instant::now() < until {
            let statuses = cluster.statuses().await;
            let applied = statuses
                .get(&victim)
                .and_then(|s| s["applied_index"].as_u64());
            let first = statuses
                .values()
                .find(|s| s["role"] == "leader")
                .and_then(|s| s["log"]["first_index"].as_u64());
            if let (Some(applied), Some(first)) = (applied, first) {
                if first > applied + 1 {
                    return true;
                }
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        false
    }
}

/// How long a follower cut off for a snapshot install waits at most for the leader to compact
/// past it (a checkpoint every `--checkpoint-transfers` transfers).
const COMPACTION_WAIT: Duration = Duration::from_secs(90);

/// Whether the log at `path` holds `needle` past its first `from` bytes (false if unreadable).
fn logged_since(path: &std::path::Path, from: u64, needle: &str) -> bool {
    use std::io::{Read, Seek, SeekFrom};
    let mut tail = String::new();
    std::fs::File::open(path)
        .and_then(|mut f| {
            f.seek(SeekFrom::Start(from))?;
            f.read_to_string(&mut tail)
        })
        .is_ok_and(|_| tail.contains(needle))
}
