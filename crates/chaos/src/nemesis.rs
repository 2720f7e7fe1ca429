//! The nemesis: one fault at a time, each a window that opens (`start`) and closes (`stop`) in the
//! history, with quiet time between them so that recovery can be measured.

use std::str::FromStr;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::cluster::Cluster;
use crate::history::{Kind, NemesisAction, Op, Phase, Transfer};
use crate::proxy;
use crate::rng::Rng;
use crate::workload::{record_write, Recorder, LEDGER};

mod clock;
mod composed;
mod power;
mod slow_disk;

pub use slow_disk::SlowDiskWindow;

/// The process number of the nemesis in the history.
pub const NEMESIS_PROCESS: u64 = 1_000_000;
/// The process number of the disk-full probe writes.
pub const PROBE_PROCESS: u64 = 1_000_001;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Fault {
    /// kill -9 of a random node, restarted after a while.
    Kill,
    /// kill -9 of the leader.
    KillLeader,
    /// SIGSTOP of the leader (or a random node), SIGCONT after a while.
    Pause,
    /// A majority and a minority that cannot talk (the leader sometimes in the minority).
    Partition,
    /// Two halves that cannot talk to each other, and one node that talks to both.
    Bridge,
    /// One node (often the leader) whose messages to the others are lost; theirs reach it.
    OneWay,
    /// Two new nodes join as learners, are promoted to voters, then removed.
    Membership,
    /// A node's disk fills to the last byte, then space returns.
    Disk,
    /// One node (usually the leader) loses power: kill -9, then what it did not fsync is lost.
    Power,
    /// Every node loses power at once.
    PowerAll,
    /// A power cut of one node that keeps a torn, page-aligned prefix of its last unsynced writes.
    Torn,
    /// Two faults at once: a partition and a kill of the new leader, a pause and a full disk, or
    /// a power cut of a follower while it installs a snapshot.
    Composed,
    /// One node's wall clock jumps ahead or behind, or drifts (a `test-faults` build only).
    Clock,
    /// One node's disk turns slow: every fsync takes 50 to 1,000 ms longer.
    SlowDisk,
}

impl Fault {
    pub const ALL: [Fault; 14] = [
        Fault::Kill,
        Fault::KillLeader,
        Fault::Pause,
        Fault::Partition,
        Fault::Bridge,
        Fault::OneWay,
        Fault::Membership,
        Fault::Disk,
        Fault::Power,
        Fault::PowerAll,
        Fault::Torn,
        Fault::Composed,
        Fault::Clock,
        Fault::SlowDisk,
    ];

    /// Whether this build of bulwark can inject the fault (the clock needs a `test-faults` build).
    pub fn available(self) -> bool {
        self != Fault::Clock || bulwark_fs::test_faults::ENABLED
    }

    /// Whether the fault needs each node's data on a lazy filesystem.
    pub fn needs_lazy_disk(self) -> bool {
        matches!(
            self,
            Fault::Power | Fault::PowerAll | Fault::Torn | Fault::Composed | Fault::SlowDisk
        )
    }

    /// Whether the fault needs each node on a tmpfs of its own (to fill).
    pub fn needs_own_disk(self) -> bool {
        matches!(self, Fault::Disk | Fault::Composed)
    }

    pub fn name(self) -> &'static str {
        match self {
            Fault::Kill => "kill",
            Fault::KillLeader => "kill-leader",
            Fault::Pause => "pause",
            Fault::Partition => "partition",
            Fault::Bridge => "bridge",
            Fault::OneWay => "one-way",
            Fault::Membership => "membership",
            Fault::Disk => "disk",
            Fault::Power => "power",
            Fault::PowerAll => "power-all",
            Fault::Torn => "torn",
            Fault::Composed => "composed",
            Fault::Clock => "clock",
            Fault::SlowDisk => "slow-disk",
        }
    }
}

impl FromStr for Fault {
    type Err = String;
    fn from_str(s: &str) -> Result<Fault, String> {
        Fault::ALL
            .into_iter()
            .find(|f| f.name() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = Fault::ALL.iter().map(|f| f.name()).collect();
                format!(
                    "unknown nemesis {s:?}: expected one of {}",
                    names.join(", ")
                )
            })
    }
}

/// Parses `all` (every fault this build can inject) or a comma-separated list of fault names.
pub fn parse_mix(text: &str) -> Result<Vec<Fault>, String> {
    if text.trim() == "all" {
        return Ok(Fault::ALL.into_iter().filter(|f| f.available()).collect());
    }
    let mut out = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let f: Fault = part.parse()?;
        if !f.available() {
            return Err(format!(
                "the {} nemesis needs a test build of bulwark \
                 (`cargo build --release --features test-faults`)",
                f.name()
            ));
        }
        if !out.contains(&f) {
            out.push(f);
        }
    }
    if out.is_empty() {
        return Err("the nemesis mix is empty: give `all` or names like kill,pause".into());
    }
    Ok(out)
}

/// What the harness itself checks about the faults (beyond the history's checker).
#[derive(Default, Debug)]
pub struct Findings {
    /// Per fault kind, how many windows ran.
    pub windows: std::collections::BTreeMap<&'static str, u32>,
    /// Problems: a disk-full node that did not refuse, a membership change that did not finish.
    pub violations: Vec<String>,
    /// Facts worth a line in the report.
    pub notes: Vec<String>,
    /// Nodes that lost power (a `power-all` counts each node).
    pub power_cuts: u32,
    /// Power cuts that hit a node while it fetched or installed a snapshot.
    pub installs_cut: u32,
    /// What each slow-disk window saw.
    pub slow_disk: Vec<SlowDiskWindow>,
}

/// " (the leader)" when `node` led as the fault began, else nothing.
fn role_of(node: u64, leader: Option<u64>) -> &'static str {
    if Some(node) == leader {
        " (the leader)"
    } else {
        ""
    }
}

/// Transfers in one probe of a full disk: a node's log keeps zeros written ahead of its last
/// write (`bulwark_limits::WAL_ZERO_AHEAD_BYTES`, 1 MiB: about 8,000 transfers of 128 bytes) and
/// goes on writing into them, durably, once the disk is full; probes this large use them up
/// within three, so that the node reaches the point where it must refuse.
const DISK_PROBE_TRANSFERS: u64 = 4_000;

pub struct Nemesis {
    pub rng: Rng,
    pub mix: Vec<Fault>,
    /// Bounds of one fault's hold time.
    pub hold: (u64, u64),
    /// Bounds of the quiet time between faults.
    pub quiet: (u64, u64),
    pub findings: Findings,
    next_probe_id: u64,
}

impl Nemesis {
    /// Writes probes (recorded as [`PROBE_PROCESS`]) to the node at `node_addr`, whose disk is
    /// full, until one is refused with 507 `disk_full`: its message, or `None` after eight.
    async fn probe_full_disk(
        &mut self,
        cluster: &Cluster,
        recorder: &Recorder,
        node_addr: std::net::SocketAddr,
    ) -> Option<String> {
        for _ in 0..8 {
            let first = self.next_probe_id;
            self.next_probe_id += DISK_PROBE_TRANSFERS;
            let probe: Vec<Transfer> = (first..self.next_probe_id)
                .map(|n| Transfer {
                    id: (PROBE_PROCESS << 36) | n,
                    debit: 1,
                    credit: 2,
                    amount: 1,
                    ledger: LEDGER,
                    ..Transfer::default()
                })
                .collect();
            let answer =
                record_write(recorder, &cluster.control, PROBE_PROCESS, node_addr, &probe).await;
            if answer.status == Some(507) && answer.body["error"] == "disk_full" {
                return Some(answer.body["message"].as_str().unwrap_or("").to_string());
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        None
    }

    pub fn new(seed: u64, mix: Vec<Fault>, hold: (u64, u64), quiet: (u64, u64)) -> Nemesis {
        Nemesis {
            rng: Rng::new(seed ^ 0x006e_656d_6573_6973),
            mix,
            hold,
            quiet,
            findings: Findings::default(),
            next_probe_id: 1,
        }
    }

    fn window(&self, recorder: &Recorder, action: NemesisAction, description: String) {
        tracing::info!(?action, "{description}");
        recorder.record(Op {
            action: Some(action),
            description: Some(description),
            ..Op::new(NEMESIS_PROCESS, Kind::Nemesis, Phase::Info, 0)
        });
    }

    /// Runs faults, each kind once per round in a shuffled order, until `deadline`.
    pub async fn run(
        &mut self,
        cluster: &mut Cluster,
        recorder: &Recorder,
        deadline: Instant,
        current: &std::sync::Mutex<String>,
    ) -> anyhow::Result<()> {
        let mut round: Vec<Fault> = Vec::new();
        loop {
            let quiet = self.rng.millis(self.quiet.0, self.quiet.1);
            *current.lock().expect("lock") = "quiet".into();
            if !sleep_until_or(quiet, deadline).await {
                return Ok(());
            }
            if round.is_empty() {
                round = self.mix.clone();
                // Fisher-Yates, seeded.
                for i in (1..round.len()).rev() {
                    let j = self.rng.below(i as u64 + 1) as usize;
                    round.swap(i, j);
                }
            }
            for (id, node) in cluster.nodes.iter_mut() {
                if let Some(status) = node.exited() {
                    self.findings.violations.push(format!(
                        "node {id} exited on its own ({status}); see {}",
                        node.log_path().display()
                    ));
                    node.start()?;
                }
            }
            let fault = round.remove(0);
            if fault == Fault::Membership && cluster.spares_left() < 2 {
                continue;
            }
            *current.lock().expect("lock") = fault.name().into();
            *self.findings.windows.entry(fault.name()).or_default() += 1;
            self.inject(fault, cluster, recorder, deadline).await?;
        }
    }

    async fn inject(
        &mut self,
        fault: Fault,
        cluster: &mut Cluster,
        recorder: &Recorder,
        deadline: Instant,
    ) -> anyhow::Result<()> {
        let hold = self.rng.millis(self.hold.0, self.hold.1);
        let originals = cluster.originals.clone();
        let random = originals[self.rng.below(originals.len() as u64) as usize];
        let leader = cluster.leader().await;
        let leader_or_random = |rng: &mut Rng| match leader {
            Some(l) if rng.chance(70) => l,
            _ => random,
        };
        match fault {
            Fault::Kill | Fault::KillLeader => {
                let victim = if fault == Fault::KillLeader {
                    leader.unwrap_or(random)
                } else {
                    random
                };
                let what = if Some(victim) == leader {
                    "the leader"
                } else {
                    "a follower"
                };
                cluster.node(victim).kill9();
                self.window(
                    recorder,
                    NemesisAction::Start,
                    format!("kill -9 node {victim} ({what})"),
                );
                sleep_until_or(hold, deadline).await;
                cluster.node(victim).start()?;
                self.window(
                    recorder,
                    NemesisAction::Stop,
                    format!("kill: node {victim} restarted"),
                );
            }
            Fault::Pause => {
                let victim = leader_or_random(&mut self.rng);
                cluster.node(victim).pause();
                self.window(
                    recorder,
                    NemesisAction::Start,
                    format!(
                        "pause (SIGSTOP) node {victim}{}",
                        if Some(victim) == leader {
                            " (the leader)"
                        } else {
                            ""
                        }
                    ),
                );
                sleep_until_or(hold, deadline).await;
                cluster.node(victim).resume();
                self.window(
                    recorder,
                    NemesisAction::Stop,
                    format!("pause: node {victim} resumed (SIGCONT)"),
                );
            }
            Fault::Partition | Fault::Bridge | Fault::OneWay => {
                let mut ids = originals.clone();
                for i in (1..ids.len()).rev() {
                    let j = self.rng.below(i as u64 + 1) as usize;
                    ids.swap(i, j);
                }
                let (blocked, description) = match fault {
                    Fault::Partition => {
                        // Put the leader in the minority half of the time.
                        if let Some(l) = leader.filter(|_| self.rng.chance(50)) {
                            let at = ids.iter().position(|x| *x == l).expect("a member");
                            ids.swap(0, at);
                        }
                        let minority = ids.len() / 2;
                        let (small, big) = ids.split_at(minority);
                        (
                            proxy::partition(&[small.to_vec(), big.to_vec()]),
                            format!("partition {small:?} | {big:?}"),
                        )
                    }
                    Fault::Bridge => {
                        let half = ids.len() / 2;
                        let (a, rest) = ids.split_at(half);
                        let (bridge, b) = rest.split_first().expect("at least 3 nodes");
                        (
                            proxy::bridge(a, *bridge, b),
                            format!("bridge {a:?} | {bridge} | {b:?}"),
                        )
                    }
                    _ => {
                        let from = leader_or_random(&mut self.rng);
                        let to: Vec<u64> = ids.iter().copied().filter(|x| *x != from).collect();
                        (
                            proxy::one_way(&[from], &to),
                            format!("one-way: messages from node {from} to {to:?} are lost"),
                        )
                    }
                };
                cluster.proxy.links().set_blocked(blocked);
                self.window(recorder, NemesisAction::Start, description);
                sleep_until_or(hold, deadline).await;
                cluster.proxy.links().heal();
                self.window(
                    recorder,
                    NemesisAction::Stop,
                    format!("{}: healed", fault.name()),
                );
            }
            Fault::Membership => self.membership(cluster, recorder, hold).await?,
            Fault::Power | Fault::Torn => {
                let victim = leader_or_random(&mut self.rng);
                let torn = fault == Fault::Torn;
                self.power_one(cluster, recorder, (victim, leader), torn, (hold, deadline))
                    .await?
            }
            Fault::PowerAll => self.power_all(cluster, recorder, (hold, deadline)).await?,
            Fault::Composed => {
                self.composed(cluster, recorder, leader, (hold, deadline))
                    .await?
            }
            Fault::Clock => {
                let victim = leader_or_random(&mut self.rng);
                self.clock(cluster, recorder, (victim, leader), (hold, deadline))
                    .await?
            }
            Fault::SlowDisk => {
                let victim = leader_or_random(&mut self.rng);
                self.slow_disk(cluster, recorder, (victim, leader), (hold, deadline))
                    .await?
            }
            Fault::Disk => {
                let victim = leader_or_random(&mut self.rng);
                let filled = {
                    let node = cluster.node(victim);
                    node.fill_disk()?
                };
                self.window(
                    recorder,
                    NemesisAction::Start,
                    format!(
                        "disk full on node {victim}{} ({} MiB of filler)",
                        if Some(victim) == leader {
                            " (the leader)"
                        } else {
                            ""
                        },
                        filled >> 20
                    ),
                );
                // Give the node a moment to hit the wall (its next append), then probe it.
                tokio::time::sleep(Duration::from_millis(1000)).await;
                let node_addr = cluster.nodes[&victim].addrs.http;
                match self.probe_full_disk(cluster, recorder, node_addr).await {
                    Some(message) => self.findings.notes.push(format!(
                        "disk full on node {victim}: it refused a write with 507 disk_full: {message}"
                    )),
                    None => self.findings.violations.push(format!(
                        "disk full on node {victim}: it never answered a write with 507 disk_full"
                    )),
                }
                sleep_until_or(hold, deadline).await;
                cluster.node(victim).free_disk()?;
                self.window(
                    recorder,
                    NemesisAction::Stop,
                    format!("disk: space returned on node {victim}"),
                );
            }
        }
        Ok(())
    }

    /// Two newcomers join as learners, are promoted together (joint consensus), then removed.
    async fn membership(
        &mut self,
        cluster: &mut Cluster,
        recorder: &Recorder,
        hold: Duration,
    ) -> anyhow::Result<()> {
        let a = cluster.start_joiner()?;
        let b = cluster.start_joiner()?;
        self.window(
            recorder,
            NemesisAction::Start,
            format!(
                "membership: nodes {} and {} join as learners, then are promoted",
                a.id, b.id
            ),
        );
        let limit = Duration::from_secs(20);
        let mut failed = Vec::new();
        for n in [&a, &b] {
            if let Err(e) = cluster
                .membership("learners", &Cluster::learner_body(n), limit)
                .await
            {
                failed.push(format!("adding node {} as a learner: {e}", n.id));
            }
        }
        if failed.is_empty() {
            // As an operator would: promote only learners that have caught up.
            if let Err(last) = cluster.wait_caught_up(&[a.id, b.id], limit).await {
                failed.push(format!(
                    "learners {} and {} did not catch up within {limit:?}: {last}",
                    a.id, b.id
                ));
            }
        }
        if failed.is_empty() {
            if let Err(e) = cluster
                .membership("promote", &json!({"ids": [a.id, b.id]}), limit)
                .await
            {
                failed.push(format!("promoting nodes {} and {}: {e}", a.id, b.id));
            }
        }
        tokio::time::sleep(hold).await;
        if let Err(e) = cluster
            .membership("remove", &json!({"ids": [a.id, b.id]}), limit)
            .await
        {
            failed.push(format!("removing nodes {} and {}: {e}", a.id, b.id));
        }
        for n in [&a, &b] {
            if let Some(mut node) = cluster.nodes.remove(&n.id) {
                node.kill9();
            }
        }
        if failed.is_empty() {
            self.findings.notes.push(format!(
                "membership: nodes {} and {} added, promoted and removed under load",
                a.id, b.id
            ));
        }
        for f in &failed {
            self.findings.violations.push(format!("membership: {f}"));
        }
        self.window(
            recorder,
            NemesisAction::Stop,
            format!("membership: nodes {} and {} removed", a.id, b.id),
        );
        Ok(())
    }
}

/// Sleeps `d` or until `deadline`, whichever is first; false if the deadline has passed.
async fn sleep_until_or(d: Duration, deadline: Instant) -> bool {
    let now = Instant::now();
    if now >= deadline {
        return false;
    }
    tokio::time::sleep(d.min(deadline - now)).await;
    Instant::now() < deadline
}
