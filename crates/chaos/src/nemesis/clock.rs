//! Clock faults (a `test-faults` build only): one node's wall clock jumps ahead or behind, or
//! drifts, through the offset file the node reads (`bulwark_fs::test_faults`). Ledger time is the
//! log's timestamps and follows the proposer's clock rule (`consensus::clock`): a jump is not
//! followed, and one node's clock alone cannot move ledger time past the majority's.

use std::time::{Duration, Instant};

use super::{role_of, Nemesis};
use crate::cluster::Cluster;
use crate::history::NemesisAction;
use crate::workload::Recorder;

/// How often a drifting clock's offset is moved.
const DRIFT_STEP: Duration = Duration::from_millis(200);

impl Nemesis {
    pub(super) async fn clock(
        &mut self,
        cluster: &mut Cluster,
        recorder: &Recorder,
        (victim, leader): (u64, Option<u64>),
        (hold, deadline): (Duration, Instant),
    ) -> anyhow::Result<()> {
        let sign: i64 = if self.rng.chance(50) { 1 } else { -1 };
        let drift = self.rng.chance(33);
        let (description, per_step) = if drift {
            // 2% to 20% fast or slow: far past what NTP would ever let through.
            let ms_per_s = self.rng.range(20, 200) as i64 * sign;
            let per_step = ms_per_s * DRIFT_STEP.as_millis() as i64 / 1000;
            (format!("drifts {ms_per_s:+} ms per second"), per_step)
        } else {
            let jump_ms = self.rng.range(2_000, 120_000) as i64 * sign;
            cluster.node(victim).set_clock_offset(jump_ms)?;
            (format!("jumps {:+.1} s", jump_ms as f64 / 1000.0), 0)
        };
        self.window(
            recorder,
            NemesisAction::Start,
            format!(
                "clock: node {victim}{}'s wall clock {description}",
                role_of(victim, leader)
            ),
        );
        let until = (Instant::now() + hold).min(deadline);
        let mut offset = 0i64;
        while Instant::now() < until {
            tokio::time::sleep(DRIFT_STEP.min(until - Instant::now())).await;
            if per_step != 0 {
                offset += per_step;
                cluster.node(victim).set_clock_offset(offset)?;
            }
        }
        cluster.node(victim).set_clock_offset(0)?;
        self.window(
            recorder,
            NemesisAction::Stop,
            format!("clock: node {victim}'s wall clock is the machine's again"),
        );
        Ok(())
    }
}
