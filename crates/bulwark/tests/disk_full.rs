//! A cluster member whose disk fills up, for real: every member's data directory is a 64 MiB
//! tmpfs (the test needs root, as CI has, and fails if it cannot mount), and under a steady
//! stream of transfers one member's is filled with a filler file. That member must stay up,
//! refuse writes and linearizable reads with 507 `disk_full` (naming its data directory), keep
//! answering status, stale reads, metrics and liveness, and report itself not ready; the other
//! two must keep committing. Once the filler is deleted it must serve again by itself and end with
//! the same transfers and balances as the others. Once with a follower filled, once the leader
//! (which must be replaced, and rejoin as a follower).

mod common;

use common::DecField;

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

/// One client sending single transfers, round robin to `targets` (healthy members), until
/// stopped; records the acknowledged ids, and every answer that is neither 200 nor one of the
/// `(status, error word)` pairs the test expects (a timeout or a connection error is never
/// expected: the targets stay up).
struct Workload {
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Vec<u64>>>,
    unexpected: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

/// The answers of a healthy member while no leader has a full disk: 200 only.
const ONLY_OK: &[(u16, &str)] = &[];

/// The answers of a healthy follower while the leader's disk is full and until another leads:
/// the full leader's own refusal (forwarded), and the words of a leader change.
const WHILE_A_LEADER_IS_FULL: &[(u16, &str)] = &[
    (507, "disk_full"),
    (503, "no_leader"),
    (503, "write_dropped"),
    (503, "outcome_unknown"),
];

impl Workload {
    fn start(
        targets: Vec<Http>,
        next_id: Arc<AtomicU64>,
        expected: &'static [(u16, &'static str)],
    ) -> Workload {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(Mutex::new(Vec::new()));
        let unexpected = Arc::new(Mutex::new(Vec::new()));
        let task = {
            let (stop, acked, unexpected) = (stop.clone(), acked.clone(), unexpected.clone());
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
                    let odd = match answer {
                        Ok(Ok(r)) if r.status == 200 => {
                            let result = &r.results()[0];
                            assert!(result == "ok" || result == "exists", "{id}: {result}");
                            acked.lock().unwrap().push(id);
                            continue;
                        }
                        Ok(Ok(r)) if expected.contains(&(r.status, r.error())) => None,
                        Ok(Ok(r)) => Some(format!("{}: {} {}", target.base, r.status, r.text)),
                        Ok(Err(e)) => Some(format!("{}: {e}", target.base)),
                        Err(_) => Some(format!("{}: no answer within 5 s", target.base)),
                    };
                    unexpected.lock().unwrap().extend(odd);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            })
        };
        Workload {
            stop,
            acked,
            unexpected,
            task,
        }
    }

    fn acked(&self) -> usize {
        self.acked.lock().unwrap().len()
    }

    /// Stops the client; panics if a healthy member answered anything unexpected.
    async fn finish(self) -> Vec<u64> {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.expect("the workload task");
        let unexpected = self.unexpected.lock().unwrap().clone();
        assert!(
            unexpected.is_empty(),
            "healthy members answered unexpectedly: {unexpected:#?}"
        );
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
        assert_eq!(
            r.header("retry-after"),
            Some("1"),
            "{what}: a 507 says when to retry: {:?}",
            r.headers
        );
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
        .map(|a| a["debits_posted"].dec().unwrap())
        .sum();
    let amounts: u64 = transfers.values().map(|t| t["amount"].dec().unwrap()).sum();
    assert_eq!(posted, amounts, "balances are the sums of the transfers");
}

/// The match index the leader's status gives member `id`.
async fn match_index(leader: &Http, id: u64) -> u64 {
    let status = leader.status().await;
    let members = status["members"].as_array().expect("members");
    let member = members.iter().find(|m| m["id"] == id).expect("the member");
    member["match_index"]
        .as_u64()
        .unwrap_or_else(|| panic!("no match index for {id}: {status}"))
}

/// Waits until `leader`'s log begins after index `held` + 1, that is until it checkpointed and
/// dropped the entries a member holding up to `held` needs next.
async fn wait_compacted_past(cluster: &Cluster, leader: u64, held: u64) {
    let http = &cluster.node(leader).http;
    wait_for(
        cluster,
        Duration::from_secs(120),
        &format!("node {leader} did not compact its log past index {held}"),
        || async {
            let status = http.status().await;
            assert_eq!(status["role"], "leader", "node {leader}: {status}");
            status["log"]["first_index"].as_u64().expect("first_index") > held + 1
        },
    )
    .await;
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
        ONLY_OK,
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

    // The other two go on committing until the leader has checkpointed and compacted its log
    // past what the full follower holds, which then can catch up only by snapshot.
    let acked = workload.acked();
    let held = match_index(&cluster.node(leader).http, victim).await;
    wait_compacted_past(cluster, leader, held).await;
    assert!(workload.acked() > acked, "the healthy majority committed");
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
        WHILE_A_LEADER_IS_FULL,
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
    // The new leader commits until it has checkpointed and compacted its log past all the old
    // leader holds, which then can rejoin only by snapshot.
    let acked = workload.acked();
    let held = node.http.status().await["log"]["last_index"]
        .as_u64()
        .expect("log last_index");
    wait_compacted_past(cluster, new_leader, held).await;
    assert!(workload.acked() > acked, "the new leader committed");
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

/// A single node is a cluster of one voter and runs the same engine: on a full disk it does not
/// stop (no exit 5), it refuses writes with 507 and takes them again by itself once space is
/// freed, with every write acknowledged before still there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_node_with_a_full_disk_stays_up_and_recovers_by_itself() {
    let data = tempfile::tempdir().expect("a data directory");
    let _mount = Tmpfs::mount_at(data.path(), 64 << 20).expect("mount a tmpfs (needs root)");
    let mut node = common::Node::unstarted(data.path().to_path_buf(), &[]);
    node.restart().await;
    let http = node.http.clone();
    create_accounts(&http).await;
    let mut acked = Vec::new();
    for id in 1_000..1_050 {
        let r = http.post("/v1/transfers", &json!([transfer(id)])).await;
        assert_eq!(r.status, 200, "{}", r.text);
        acked.push(id);
    }

    let filler = fill_disk(&node.data_dir);
    // The next write meets the full disk; until then writes may still fit in what was left.
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut id = 2_000;
    loop {
        id += 1;
        let r = http.post("/v1/transfers", &json!([transfer(id)])).await;
        match r.status {
            200 => acked.push(id),
            507 => break,
            // The write that met the full disk: it may or may not be in the log.
            503 if r.error() == "outcome_unknown" => {}
            other => panic!("a write on a filling disk: {other} {}", r.text),
        }
        assert!(
            Instant::now() < deadline,
            "a single node on a full disk still takes writes"
        );
    }
    assert_refuses_while_full(&http, &node.data_dir).await;
    // Still refusing a moment later, and still running: a full disk never stops the node.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_refuses_while_full(&http, &node.data_dir).await;
    node.assert_running();

    std::fs::remove_file(filler).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        id += 1;
        let r = http.post("/v1/transfers", &json!([transfer(id)])).await;
        match r.status {
            200 => {
                acked.push(id);
                break;
            }
            507 => assert!(
                Instant::now() < deadline,
                "no write taken within 20 s of freeing space"
            ),
            other => panic!("a write after space was freed: {other} {}", r.text),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(disk_full_in_status(&http).await, Some(false));
    assert_eq!(http.get("/health/ready").await.status, 200);
    for id in &acked {
        assert!(
            http.transfer(*id).await.is_some(),
            "acknowledged transfer {id} lost"
        );
    }
    // A graceful stop still checkpoints and exits 0.
    let status = node.sigterm();
    assert!(status.success(), "{status}\n{}", node.last_log());
}
