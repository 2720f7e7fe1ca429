//! Power loss: one node (`power`, `torn`) or every node (`power-all`) is killed with SIGKILL and
//! its lazy filesystem then drops whatever it did not fsync, as a power cut would. Raft must lose
//! no acknowledged write: each was fsynced on a majority before its answer.

use std::time::{Duration, Instant};

use bulwark_lazyfs::CutReport;

use super::{role_of, sleep_until_or, Nemesis};
use crate::cluster::Cluster;
use crate::history::NemesisAction;
use crate::workload::Recorder;

impl Nemesis {
    /// `power` (or `torn`, keeping a torn prefix of the last unsynced writes) of `victim`.
    pub(super) async fn power_one(
        &mut self,
        cluster: &mut Cluster,
        recorder: &Recorder,
        (victim, leader): (u64, Option<u64>),
        torn: bool,
        (hold, deadline): (Duration, Instant),
    ) -> anyhow::Result<()> {
        let torn_seed = torn.then(|| self.rng.next_u64());
        self.catch_in_flight(cluster, &[victim]).await?;
        let report = cluster.node(victim).power_cut(torn_seed)?;
        cluster.node(victim).set_fsync_delay(Duration::ZERO)?;
        let kind = if torn { "torn" } else { "power" };
        let cut = if torn { "torn power cut" } else { "power cut" };
        self.window(
            recorder,
            NemesisAction::Start,
            format!(
                "{cut} of node {victim}{}: {}",
                role_of(victim, leader),
                lost(&report)
            ),
        );
        self.findings.power_cuts += 1;
        sleep_until_or(hold, deadline).await;
        cluster.node(victim).start()?;
        self.window(
            recorder,
            NemesisAction::Stop,
            format!("{kind}: node {victim} restarted"),
        );
        Ok(())
    }

    /// `power-all`: every node loses power at once (all killed first, then every disk cut).
    pub(super) async fn power_all(
        &mut self,
        cluster: &mut Cluster,
        recorder: &Recorder,
        (hold, deadline): (Duration, Instant),
    ) -> anyhow::Result<()> {
        let ids: Vec<u64> = cluster.nodes.keys().copied().collect();
        self.catch_in_flight(cluster, &ids).await?;
        for id in &ids {
            cluster.node(*id).kill9();
        }
        let mut lost_parts = Vec::new();
        for id in &ids {
            let report = cluster.node(*id).power_cut(None)?;
            cluster.node(*id).set_fsync_delay(Duration::ZERO)?;
            lost_parts.push(format!("node {id} {}", lost(&report)));
        }
        self.window(
            recorder,
            NemesisAction::Start,
            format!(
                "power-all: every node lost power ({})",
                lost_parts.join("; ")
            ),
        );
        self.findings.power_cuts += ids.len() as u32;
        sleep_until_or(hold, deadline).await;
        for id in &ids {
            cluster.node(*id).start()?;
        }
        self.window(
            recorder,
            NemesisAction::Stop,
            "power-all: every node restarted".to_string(),
        );
        Ok(())
    }
}

impl Nemesis {
    /// Slows the fsyncs of `ids` for a moment before their power goes, as a cut often finds a
    /// disk: busy, with the last writes not yet synced. Without it a cut almost always lands
    /// between two of a node's fsyncs and drops nothing (a run of 73 cuts dropped data once).
    async fn catch_in_flight(&mut self, cluster: &mut Cluster, ids: &[u64]) -> anyhow::Result<()> {
        let delay = self.rng.millis(20, 200);
        for id in ids {
            cluster.node(*id).set_fsync_delay(delay)?;
        }
        tokio::time::sleep(delay + self.rng.millis(0, 50)).await;
        Ok(())
    }
}

/// What a cut dropped, in a few words for the window's description.
pub(super) fn lost(report: &CutReport) -> String {
    let mut text = format!(
        "{} unsynced bytes in {} files lost, {} entry changes undone",
        report.bytes_dropped, report.files_with_lost_writes, report.changes_undone
    );
    if report.pages_kept > 0 {
        text.push_str(&format!(", {} torn pages kept", report.pages_kept));
    }
    text
}
