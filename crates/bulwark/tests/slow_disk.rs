//! A leader whose disk turns slow hands leadership over, and the cluster does not fall into an
//! election storm. Every member's data directory is its own lazy filesystem (`bulwark-lazyfs`,
//! a FUSE mount: the test needs root and /dev/fuse, as CI has, and fails if it cannot mount).
//! Under a steady stream of transfers the leader's mount starts sleeping
//! `BULWARK_SLOW_DISK_MS` (300 by default) in every fsync. The leader must notice its own slow
//! log syncs and transfer leadership to a healthy voter, at most one leader change must happen
//! in the slow window (no storm, no ping-pong back to the slow node), and every acknowledged
//! transfer must be on every node afterwards. The figures (time to hand off, leader changes,
//! write latencies before and during the window) are printed for the operations docs.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bulwark_lazyfs::{Controller, LazyFs};
use common::{Cluster, Http};
use serde_json::{json, Value};

const ACCOUNTS: [u64; 4] = [1, 2, 3, 4];

/// Status polls (one every 100 ms, plus the time each takes) within which a slow leader must
/// have handed over: generous, the hand-off itself takes a few seconds at most.
const HAND_OFF_POLLS: usize = 150;

/// How long the disk stays slow after the hand-off, watched for further leader changes.
const WATCH_AFTER_HAND_OFF: Duration = Duration::from_secs(8);

/// A three-member cluster, each member on its own lazy filesystem. Fields drop in order: the
/// processes are killed before the file systems are unmounted.
struct Setup {
    cluster: Cluster,
    mounts: BTreeMap<u64, LazyFs>,
    _backing: tempfile::TempDir,
}

impl Setup {
    async fn start() -> Setup {
        let backing = tempfile::Builder::new()
            .prefix("bulwark-slow-disk")
            .tempdir()
            .expect("a backing directory");
        let mut mounts = BTreeMap::new();
        let cluster = Cluster::start_prepared(3, &[], |id, dir| {
            let under = backing.path().join(format!("node-{id}"));
            std::fs::create_dir_all(&under).expect("create a backing directory");
            let fs = LazyFs::mount(&under, dir)
                .expect("mount a lazy filesystem (needs root and /dev/fuse, as CI has)");
            mounts.insert(id, fs);
        })
        .await;
        Setup {
            cluster,
            mounts,
            _backing: backing,
        }
    }

    fn disk(&self, id: u64) -> Controller {
        self.mounts[&id].controller()
    }
}

fn transfer(id: u64) -> Value {
    json!({
        "id": id,
        "debit_account_id": ACCOUNTS[(id % 4) as usize],
        "credit_account_id": ACCOUNTS[((id + 1) % 4) as usize],
        "amount": 1 + id % 7,
        "ledger": 1,
        "code": 1,
    })
}

/// One acknowledged write: its id, when its answer came (since the test's start) and how long
/// it took.
#[derive(Clone, Copy, Debug)]
struct Acked {
    id: u64,
    at: Duration,
    took: Duration,
}

/// A few clients sending single transfers round robin to every member (followers forward to
/// the leader), retrying nothing: an answer other than 200 (a leader change's 503, a timeout)
/// only leaves that id unacknowledged.
struct Workload {
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Vec<Acked>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Workload {
    const CLIENTS: u64 = 4;

    fn start(targets: Vec<Http>, epoch: Instant) -> Workload {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(Mutex::new(Vec::new()));
        let next_id = Arc::new(AtomicU64::new(1_000));
        let tasks = (0..Self::CLIENTS)
            .map(|client| {
                let (stop, acked, next_id) = (stop.clone(), acked.clone(), next_id.clone());
                let targets = targets.clone();
                tokio::spawn(async move {
                    let mut i = client as usize;
                    while !stop.load(Ordering::Relaxed) {
                        let target = &targets[i % targets.len()];
                        i += 1;
                        let id = next_id.fetch_add(1, Ordering::Relaxed);
                        let body = serde_json::to_vec(&json!([transfer(id)])).unwrap();
                        let sent = Instant::now();
                        let answer = tokio::time::timeout(
                            Duration::from_secs(15),
                            target.try_post("/v1/transfers", body),
                        )
                        .await;
                        match answer {
                            Ok(Ok(r)) if r.status == 200 => {
                                let result = &r.results()[0];
                                assert!(result == "ok", "{id}: {result}");
                                acked.lock().unwrap().push(Acked {
                                    id,
                                    at: epoch.elapsed(),
                                    took: sent.elapsed(),
                                });
                            }
                            _ => tokio::time::sleep(Duration::from_millis(50)).await,
                        }
                    }
                })
            })
            .collect();
        Workload { stop, acked, tasks }
    }

    fn acked(&self) -> Vec<Acked> {
        self.acked.lock().unwrap().clone()
    }

    async fn finish(self) -> Vec<Acked> {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            task.await.expect("a workload task");
        }
        Arc::try_unwrap(self.acked)
            .expect("the tasks are done")
            .into_inner()
            .unwrap()
    }
}

/// p50 and p99 (milliseconds) of the writes acknowledged in `[from, to)`, and their count.
fn latencies(acked: &[Acked], from: Duration, to: Duration) -> (u128, u128, usize) {
    let mut took: Vec<u128> = acked
        .iter()
        .filter(|a| a.at >= from && a.at < to)
        .map(|a| a.took.as_millis())
        .collect();
    took.sort_unstable();
    let at = |q: f64| {
        took.get(((took.len() as f64 * q) as usize).min(took.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0)
    };
    (at(0.5), at(0.99), took.len())
}

/// The leader changes seen by polling every member's status: each poll's leader (the member
/// that says it leads in the highest term) and that term.
#[derive(Debug, Default)]
struct LeaderTrail {
    /// (time since the test's start, leader, term) each time the leader or the term changed.
    changes: Vec<(Duration, u64, u64)>,
}

impl LeaderTrail {
    fn note(&mut self, at: Duration, leader: u64, term: u64) {
        let last = self.changes.last().map(|(_, l, t)| (*l, *t));
        if last != Some((leader, term)) && last.is_none_or(|(_, t)| term > t) {
            self.changes.push((at, leader, term));
        }
    }

    fn current(&self) -> Option<(u64, u64)> {
        self.changes.last().map(|(_, l, t)| (*l, *t))
    }
}

async fn poll_leader(cluster: &Cluster, trail: &mut LeaderTrail, epoch: Instant) {
    if let Some((leader, term)) = cluster.view().await.leader() {
        trail.note(epoch.elapsed(), leader, term);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
}

fn slow_delay() -> Duration {
    let ms = std::env::var("BULWARK_SLOW_DISK_MS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(300);
    Duration::from_millis(ms)
}

async fn create_accounts(http: &Http) {
    let body = json!(ACCOUNTS
        .iter()
        .map(|id| json!({"id": id, "ledger": 1, "code": 1}))
        .collect::<Vec<_>>());
    let r =
        common::write_until_answered(http, "/v1/accounts", &body, Duration::from_secs(20)).await;
    assert!(r.results().iter().all(|r| r == "ok"), "{}", r.text);
}

/// Every node holds every acknowledged transfer, and the same transfers as the others.
async fn assert_acknowledged_everywhere(cluster: &Cluster, acked: &[Acked]) {
    cluster.wait_converged(Duration::from_secs(60)).await;
    let mut first: Option<(u64, BTreeMap<u64, Value>)> = None;
    for n in &cluster.nodes {
        let transfers = common::all_transfers(&n.http, &ACCOUNTS).await;
        let lost: Vec<u64> = acked
            .iter()
            .map(|a| a.id)
            .filter(|id| !transfers.contains_key(id))
            .collect();
        assert!(
            lost.is_empty(),
            "node {} lost acknowledged transfers {lost:?}",
            n.id
        );
        match &first {
            None => first = Some((n.id, transfers)),
            Some((id, t)) => assert!(*t == transfers, "nodes {id} and {} differ", n.id),
        }
    }
}

fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_on_a_slow_disk_hands_over_without_an_election_storm() {
    let epoch = Instant::now();
    let setup = Setup::start().await;
    let cluster = &setup.cluster;
    let slow = cluster.wait_leader(Duration::from_secs(20)).await;
    create_accounts(&cluster.node(slow).http).await;
    let targets = cluster.nodes.iter().map(|n| n.http.clone()).collect();
    let workload = Workload::start(targets, epoch);
    let mut trail = LeaderTrail::default();
    while workload.acked().len() < 100 {
        assert!(epoch.elapsed() < Duration::from_secs(40), "no writes acked");
        poll_leader(cluster, &mut trail, epoch).await;
    }
    assert_eq!(trail.current().map(|(l, _)| l), Some(slow), "{trail:?}");

    let delay = slow_delay();
    let slow_from = epoch.elapsed();
    let slow_term = trail.current().expect("a leader").1;
    setup.disk(slow).set_fsync_delay(delay);
    let mut polls = 0;
    while trail.current().is_some_and(|(l, _)| l == slow) && polls < HAND_OFF_POLLS {
        poll_leader(cluster, &mut trail, epoch).await;
        polls += 1;
    }
    let handed_at = epoch.elapsed();
    let watch_until = handed_at + WATCH_AFTER_HAND_OFF;
    while epoch.elapsed() < watch_until {
        poll_leader(cluster, &mut trail, epoch).await;
    }
    let slow_to = epoch.elapsed();
    let metrics = cluster.node(slow).http.get("/metrics").await.text;
    setup.disk(slow).set_fsync_delay(Duration::ZERO);
    let acked = workload.finish().await;

    let (base_p50, base_p99, base_n) = latencies(&acked, Duration::ZERO, slow_from);
    let (slow_p50, slow_p99, slow_n) = latencies(&acked, slow_from, slow_to);
    let (before_p50, before_p99, before_n) = latencies(&acked, slow_from, handed_at);
    let (after_p50, after_p99, after_n) = latencies(&acked, handed_at, slow_to);
    let in_window: Vec<_> = trail
        .changes
        .iter()
        .filter(|(at, _, _)| *at >= slow_from)
        .collect();
    println!(
        "slow disk {delay:?} on leader {slow} (term {slow_term}): \
         hand-off after {:.1} s ({polls} polls); leader changes in the {:.1} s window: {} {in_window:?}\n\
         writes before: {base_n} acked, p50 {base_p50} ms, p99 {base_p99} ms\n\
         writes in the whole window: {slow_n} acked, p50 {slow_p50} ms, p99 {slow_p99} ms\n\
         until the hand-off: {before_n} acked, p50 {before_p50} ms, p99 {before_p99} ms\n\
         after the hand-off: {after_n} acked, p50 {after_p50} ms, p99 {after_p99} ms\n\
         slow node's evictions metric: {:?}",
        (handed_at - slow_from).as_secs_f64(),
        (slow_to - slow_from).as_secs_f64(),
        in_window.len(),
        metric(&metrics, "bulwark_leader_evictions_total"),
    );

    let log = cluster.node(slow).last_log();
    for line in log
        .lines()
        .filter(|l| l.contains("slow") || l.contains("role changed"))
    {
        println!("node {slow}: {line}");
    }
    assert!(
        in_window.len() <= 1,
        "more than one leader change while node {slow}'s disk was slow: {in_window:?}\n{}",
        cluster.logs()
    );
    let (leader, _) = trail.current().expect("a leader");
    assert_ne!(
        leader,
        slow,
        "the slow leader did not hand over within {HAND_OFF_POLLS} polls\n{}",
        cluster.logs()
    );
    assert_eq!(
        metric(&metrics, "bulwark_leader_evictions_total"),
        Some(1.0),
        "the slow node counts its one eviction"
    );
    assert!(
        log.contains("this leader's disk is slow: transferring leadership"),
        "the slow node logs why it hands over:\n{log}"
    );
    assert_acknowledged_everywhere(cluster, &acked).await;
}
