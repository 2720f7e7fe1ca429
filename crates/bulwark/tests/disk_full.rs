//! A cluster member whose disk fills up, for real: every member's data directory is a 64 MiB
//! tmpfs (the test needs root, as CI has, and fails if it cannot mount), and under a steady
//! stream of transfers one member's is filled with a filler file. That member must stay up,
//! refuse writes and linearizable reads with 507 `disk_full` (naming its data directory), keep
//! answering status, stale reads, metrics and liveness, and report itself not ready; the other
//! two must keep committing. Once the filler is deleted it must serve again by itself and end with
//! the same transfers and balances as the others. Once with a follower filled, once the leader
//! (which must be replaced, and rejoin as a follower).

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{fill_disk, Cluster, Http, Tmpfs};
use serde_json::{json, Value};

const ACCOUNTS: [u64; 4] = [1, 2, 3, 4];

/// A three-member cluster on tmpfs data directories; the cluster is dropped (its processes
/// killed) before the file systems are unmounted.
struct Setup {
    cluster: Cluster,
    _mounts: Vec<Tmpfs>,
}

async fn start() -> Setup {
    let mut mounts = Vec::new();
    let cluster = Cluster::start_prepared(3, &[], |_, dir| {
        mounts.push(Tmpfs::mount_at(dir, 64 << 20).expect("mount a tmpfs (needs root, as CI has)"));
    })
    .await;
    Setup {
        cluster,
        _mounts: mounts,
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

async fn create_accounts(http: &Http) {
    let body = json!(ACCOUNTS
        .iter()
        .map(|id| json!({"id": id, "ledger": 1, "code": 1}))
        .collect::<Vec<_>>());
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(r) = http
            .try_post("/v1/accounts", serde_json::to_vec(&body).unwrap())
            .await
        {
            if r.status == 200 {
                assert!(r.results().iter().all(|r| r == "ok" || r == "exists"));
                return;
            }
        }
        assert!(Instant::now() < deadline, "accounts not created");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One client sending single transfers, round robin to `targets`, until stopped; records the
/// acknowledged ids.
struct Workload {
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Vec<u64>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Workload {
    fn start(targets: Vec<Http>, next_id: Arc<AtomicU64>) -> Workload {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(Mutex::new(Vec::new()));
        let task = {
            let (stop, acked) = (stop.clone(), acked.clone());
            tokio::spawn(async move {
                let mut i = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    let target = &targets[i % targets.len()];
                    i += 1;
                    let id = next_id.fetch_add(1, Ordering::Relaxed);
                    let body = serde_json::to_vec(&json!([transfer(id)])).unwrap();
                    let answer = tokio::time::timeout(
                        Duration::from_secs(5),
                        target.try_post("/v1/transfers", body),
                    )
                    .await;
                    match answer {
                        Ok(Ok(r)) if r.status == 200 => {
                            let result = &r.results()[0];
                            assert!(result == "ok" || result == "exists", "{id}: {result}");
                            acked.lock().unwrap().push(id);
                        }
                        _ => tokio::time::sleep(Duration::from_millis(20)).await,
                    }
                }
            })
        };
        Workload { stop, acked, task }
    }

    fn acked(&self) -> usize {
        self.acked.lock().unwrap().len()
    }

    async fn finish(self) -> Vec<u64> {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.expect("the workload task");
        Arc::try_unwrap(self.acked)
            .expect("the task is done")
            .into_inner()
            .unwrap()
    }
}

/// Waits up to `limit` until `check` holds, polling every 100 ms; panics with `what` and the logs.
async fn wait_for<F, Fut>(cluster: &Cluster, limit: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while !check().await {
        assert!(
            Instant::now() < deadline,
            "{what} within {limit:?}\n{}",
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn disk_full_in_status(http: &Http) -> Option<bool> {
    let r = http.try_get("/v1/status").await.ok()?;
    (r.status == 200).then(|| r.json["disk_full"].as_bool())?
}

/// Asserts everything a member with a full disk must answer.
async fn assert_refuses_while_full(http: &Http, data_dir: &Path) {
    let dir = data_dir.display().to_string();
    let check_507 = |what: &str, r: &common::Resp| {
        assert_eq!(r.status, 507, "{what}: {}", r.text);
        assert_eq!(r.error(), "disk_full", "{what}: {}", r.text);
        assert!(
            r.message().contains("no space left on device") && r.message().contains(&dir),
            "{what}: the message names the data directory {dir}: {}",
            r.text
        );
    };
    let write = http.post("/v1/transfers", &json!([transfer(1)])).await;
    check_507("a write", &write);
    let accounts = http
        .post("/v1/accounts", &json!([{"id": 99, "ledger": 1, "code": 1}]))
        .await;
    check_507("an account write", &accounts);
    let read = http.get("/v1/accounts/1").await;
    check_507("a linearizable read", &read);
    let stale = http.get("/v1/accounts/1?consistency=stale").await;
    assert_eq!(stale.status, 200, "a stale read: {}", stale.text);
    let history = http
        .get("/v1/accounts/1/transfers?consistency=stale&limit=5")
        .await;
    assert_eq!(
        history.status, 200,
        "a stale history read: {}",
        history.text
    );
    let status = http.get("/v1/status").await;
    assert_eq!(status.status, 200, "{}", status.text);
    assert_eq!(status.json["disk_full"], true, "{}", status.text);
    let ready = http.get("/health/ready").await;
    assert_eq!(ready.status, 503, "not ready while full: {}", ready.text);
    assert!(ready.message().contains(&dir), "{}", ready.text);
    assert!(http.live().await, "alive while full");
    let metrics = http.get("/metrics").await;
    assert!(
        metrics.text.contains("bulwark_disk_full 1"),
        "the gauge: {}",
        metrics.text
    );
}

/// Waits until `http` takes writes again (a write answers 200).
async fn wait_serving(cluster: &Cluster, http: &Http, next_id: &AtomicU64) {
    wait_for(
        cluster,
        Duration::from_secs(20),
        "the node did not take writes again after space was freed",
        || async {
            let id = next_id.fetch_add(1, Ordering::Relaxed);
            let body = serde_json::to_vec(&json!([transfer(id)])).unwrap();
            let wrote =
                matches!(http.try_post("/v1/transfers", body).await, Ok(r) if r.status == 200);
            // A follower may still be fetching the snapshot it missed (on a worker thread, its
            // writes forwarded meanwhile): serving again means ready too.
            wrote && http.get("/health/ready").await.status == 200
        },
    )
    .await;
    assert_eq!(disk_full_in_status(http).await, Some(false));
    let ready = http.get("/health/ready").await;
    assert_eq!(ready.status, 200, "ready again: {}", ready.text);
    let read = http.get("/v1/accounts/1").await;
    assert_eq!(read.status, 200, "linearizable reads again: {}", read.text);
    let metrics = http.get("/metrics").await;
    assert!(metrics.text.contains("bulwark_disk_full 0"));
}

/// Transfers or accounts of one node, by id.
type ById = BTreeMap<u64, Value>;

/// Every node ends with the same accounts and transfers, holding every acknowledged one.
async fn assert_same_everywhere(cluster: &Cluster, acked: &[u64]) {
    cluster.wait_converged(Duration::from_secs(30)).await;
    let mut states: Vec<(u64, ById, ById)> = Vec::new();
    for n in &cluster.nodes {
        let transfers = common::all_transfers(&n.http, &ACCOUNTS).await;
        let accounts = common::all_accounts(&n.http, &ACCOUNTS).await;
        states.push((n.id, transfers, accounts));
    }
    let (first, transfers, accounts) = &states[0];
    for id in acked {
        assert!(
            transfers.contains_key(id),
            "acknowledged transfer {id} missing"
        );
    }
    for (id, t, a) in &states[1..] {
        assert_eq!(
            t.len(),
            transfers.len(),
            "node {id} and node {first} hold different transfers"
        );
        assert!(
            t == transfers,
            "node {id} and node {first}: transfers differ"
        );
        assert!(a == accounts, "node {id} and node {first}: balances differ");
    }
    let posted: u64 = accounts
        .values()
        .map(|a| a["debits_posted"].as_u64().unwrap())
        .sum();
    let amounts: u64 = transfers
        .values()
        .map(|t| t["amount"].as_u64().unwrap())
        .sum();
    assert_eq!(posted, amounts, "balances are the sums of the transfers");
}

async fn leader_among(cluster: &Cluster, ids: &[u64]) -> Option<u64> {
    let mut leaders = Vec::new();
    for id in ids {
        let s = cluster.node(*id).try_status().await?;
        leaders.push(s["leader_id"].as_u64());
        if s["role"] == "leader" && s["leader_id"].as_u64() != Some(*id) {
            return None;
        }
    }
    let leader = leaders[0]?;
    (ids.contains(&leader) && leaders.iter().all(|l| *l == Some(leader))).then_some(leader)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_with_a_full_disk_refuses_writes_and_recovers_by_itself() {
    let setup = start().await;
    let cluster = &setup.cluster;
    let leader = cluster.wait_leader(Duration::from_secs(20)).await;
    create_accounts(&cluster.node(leader).http).await;
    let victim = (1..=3).find(|id| *id != leader).unwrap();
    let other = (1..=3).find(|id| *id != leader && *id != victim).unwrap();
    let next_id = Arc::new(AtomicU64::new(1_000));
    let workload = Workload::start(
        vec![
            cluster.node(leader).http.clone(),
            cluster.node(other).http.clone(),
        ],
        next_id.clone(),
    );
    wait_for(
        cluster,
        Duration::from_secs(10),
        "no transfer acknowledged",
        || async { workload.acked() >= 50 },
    )
    .await;

    let node = cluster.node(victim);
    let filler = fill_disk(&node.data_dir);
    wait_for(
        cluster,
        Duration::from_secs(15),
        "the filled follower did not report disk_full",
        || async { disk_full_in_status(&node.http).await == Some(true) },
    )
    .await;
    assert_refuses_while_full(&node.http, &node.data_dir).await;

    // The other two go on committing.
    let acked = workload.acked();
    let commit = cluster.node(leader).http.status().await["commit_index"]
        .as_u64()
        .unwrap();
    // Long enough for the leader to checkpoint and compact its log past the full follower, which
    // then catches up by snapshot.
    wait_for(
        cluster,
        Duration::from_secs(30),
        "the healthy majority stopped committing",
        || async { workload.acked() >= acked + 1500 },
    )
    .await;
    let later = cluster.node(leader).http.status().await["commit_index"]
        .as_u64()
        .unwrap();
    assert!(later > commit);
    // Still refusing (it retries and fails again).
    assert_refuses_while_full(&node.http, &node.data_dir).await;
    assert!(node.last_log().contains("no space left on device"));

    std::fs::remove_file(filler).unwrap();
    wait_serving(cluster, &node.http, &next_id).await;
    assert!(
        node.last_log().contains("space is available again"),
        "{}",
        node.last_log()
    );
    let acked = workload.finish().await;
    assert_same_everywhere(cluster, &acked).await;
    for n in &setup.cluster.nodes {
        assert_eq!(disk_full_in_status(&n.http).await, Some(false));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_with_a_full_disk_is_replaced_and_rejoins_after() {
    let setup = start().await;
    let cluster = &setup.cluster;
    let leader = cluster.wait_leader(Duration::from_secs(20)).await;
    create_accounts(&cluster.node(leader).http).await;
    let others: Vec<u64> = (1..=3).filter(|id| *id != leader).collect();
    let next_id = Arc::new(AtomicU64::new(1_000));
    // The clients write through the followers, which forward to whoever leads.
    let workload = Workload::start(
        others
            .iter()
            .map(|id| cluster.node(*id).http.clone())
            .collect(),
        next_id.clone(),
    );
    wait_for(
        cluster,
        Duration::from_secs(10),
        "no transfer acknowledged",
        || async { workload.acked() >= 50 },
    )
    .await;

    let node = cluster.node(leader);
    let filler = fill_disk(&node.data_dir);
    wait_for(
        cluster,
        Duration::from_secs(15),
        "the filled leader did not report disk_full",
        || async { disk_full_in_status(&node.http).await == Some(true) },
    )
    .await;
    assert_refuses_while_full(&node.http, &node.data_dir).await;

    // A new leader among the other two, and writes commit again.
    let deadline = Instant::now() + Duration::from_secs(15);
    let new_leader = loop {
        if let Some(l) = leader_among(cluster, &others).await {
            break l;
        }
        assert!(
            Instant::now() < deadline,
            "no new leader among the others\n{}",
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_ne!(new_leader, leader);
    let acked = workload.acked();
    wait_for(
        cluster,
        Duration::from_secs(30),
        "the new leader does not commit",
        || async { workload.acked() >= acked + 1500 },
    )
    .await;
    assert_refuses_while_full(&node.http, &node.data_dir).await;

    std::fs::remove_file(filler).unwrap();
    wait_serving(cluster, &node.http, &next_id).await;
    wait_for(
        cluster,
        Duration::from_secs(10),
        "the old leader did not rejoin as a follower",
        || async {
            matches!(node.try_status().await, Some(s) if s["role"] == "follower"
            && s["leader_id"].as_u64() == Some(new_leader))
        },
    )
    .await;
    let acked = workload.finish().await;
    assert_same_everywhere(cluster, &acked).await;
}
