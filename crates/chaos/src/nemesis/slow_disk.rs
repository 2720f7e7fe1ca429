//! A slow disk: every fsync of one node (usually the leader) first sleeps 50 to 1,000 ms, on its
//! lazy filesystem. What the run measures of it: the leader changes while the disk is slow (more
//! than one is an election storm, a violation) and, when the slow node led, how long until another
//! node leads (a leader whose disk turns slow should hand leadership to a healthy voter).

use std::time::{Duration, Instant};

use super::{role_of, Nemesis};
use crate::cluster::Cluster;
use crate::history::NemesisAction;
use crate::workload::Recorder;

/// How often the window asks who leads.
const LEADER_POLL: Duration = Duration::from_millis(250);

/// What one slow-disk window saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlowDiskWindow {
    pub node: u64,
    pub delay_ms: u64,
    pub was_leader: bool,
    /// Leader changes seen while the disk was slow.
    pub leader_changes: u32,
    /// When the slow node led at the start: how long until another node led (None: never).
    pub handoff: Option<Duration>,
}

impl Nemesis {
    pub(super) async fn slow_disk(
        &mut self,
        cluster: &mut Cluster,
        recorder: &Recorder,
        (victim, leader): (u64, Option<u64>),
        (hold, deadline): (Duration, Instant),
    ) -> anyhow::Result<()> {
        let delay_ms = self.rng.range(50, 1000);
        cluster
            .node(victim)
            .set_fsync_delay(Duration::from_millis(delay_ms))?;
        let start = Instant::now();
        self.window(
            recorder,
            NemesisAction::Start,
            format!(
                "slow-disk: every fsync of node {victim}{} takes {delay_ms} ms longer",
                role_of(victim, leader)
            ),
        );
        let mut seen = SlowDiskWindow {
            node: victim,
            delay_ms,
            was_leader: leader == Some(victim),
            leader_changes: 0,
            handoff: None,
        };
        let mut last = leader;
        let until = (start + hold).min(deadline);
        while Instant::now() < until {
            tokio::time::sleep(LEADER_POLL.min(until - Instant::now())).await;
            let now = cluster.leader().await;
            if now.is_some() && now != last {
                if last.is_some() {
                    seen.leader_changes += 1;
                }
                if seen.was_leader && seen.handoff.is_none() && now != Some(victim) {
                    seen.handoff = Some(start.elapsed());
                }
                last = now;
            }
        }
        cluster.node(victim).set_fsync_delay(Duration::ZERO)?;
        self.window(
            recorder,
            NemesisAction::Stop,
            format!("slow-disk: node {victim}'s disk is fast again"),
        );
        self.judge_slow_disk(seen);
        Ok(())
    }

    fn judge_slow_disk(&mut self, seen: SlowDiskWindow) {
        let node = seen.node;
        if seen.leader_changes > 1 {
            self.findings.violations.push(format!(
                "slow-disk on node {node} ({} ms per fsync): {} leader changes in one slow \
                 window (an election storm; at most one is expected)",
                seen.delay_ms, seen.leader_changes
            ));
        }
        let handoff = match (seen.was_leader, seen.handoff) {
            (false, _) => "it did not lead".to_string(),
            (true, Some(after)) => {
                format!("leadership moved away after {:.1} s", after.as_secs_f64())
            }
            (true, None) => "leadership never moved away while the disk was slow".to_string(),
        };
        self.findings.notes.push(format!(
            "slow-disk on node {node} ({} ms per fsync): {handoff}; {} leader changes",
            seen.delay_ms, seen.leader_changes
        ));
        self.findings.slow_disk.push(seen);
    }
}
