//! Real clusters of `bulwark start` processes changing their membership: learners added to a
//! cluster under load (one through a follower), promoted together (joint consensus), surviving
//! the loss of two original nodes, then removed again; membership that survives a restart of
//! every node on its original flags; replication status and `?ack=all`; `/health/ready`
//! following the leader.
//!
//! Every test has its own ports and data directories, so the tests run in parallel. Waits are
//! generous and nothing asserts a duration.

mod common;

use common::DecField;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Cluster, Http, Resp, Rng};
use serde_json::{json, Value};

/// How long any one wait for the cluster may take before the test gives up.
const PATIENCE: Duration = Duration::from_secs(60);

/// The accounts of every test: ledger 1, no balance limits, so every transfer between two of
/// them is accepted.
const ACCOUNTS: [u64; 4] = [1, 2, 3, 4];

fn transfer(id: u64, debit: u64, credit: u64, amount: u64) -> Value {
    json!({
        "id": id,
        "debit_account_id": debit,
        "credit_account_id": credit,
        "amount": amount,
        "ledger": 1,
        "code": 1,
        "user_data_64": id % 1000,
    })
}

/// Polls `check` every 100 ms until it gives `Some`, for up to `limit`; `None` if it never did.
async fn within<T>(limit: Duration, mut check: impl AsyncFnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = check().await {
            return Some(value);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Like [`within`], but panics with `what` and the cluster's logs if `check` never succeeds.
async fn eventually<T>(
    cluster: &Cluster,
    what: &str,
    limit: Duration,
    check: impl AsyncFnMut() -> Option<T>,
) -> T {
    match within(limit, check).await {
        Some(value) => value,
        None => panic!("{what}: not within {limit:?}\n{}", cluster.logs()),
    }
}

/// Writes one transfer through `http`; it must be accepted.
async fn write_transfer(http: &Http, t: &Value) {
    let r = common::write_until_answered(http, "/v1/transfers", &json!([t]), PATIENCE).await;
    let word = &r.results()[0];
    assert!(word == "ok" || word == "exists", "transfer {t}: {word}");
}

/// Writes one transfer through node `id` of `cluster`, retrying 503 and lost connections
/// for up to `PATIENCE`; panics with every running node's status and log if it is not
/// accepted by then.
async fn write_transfer_via(cluster: &Cluster, id: u64, t: &Value) {
    let http = cluster.node(id).http.clone();
    let body = serde_json::to_vec(&json!([t])).expect("encode");
    let mut last = String::from("no answer");
    let answered = within(PATIENCE, async || {
        match http.try_post("/v1/transfers", body.clone()).await {
            Ok(r) if r.status == 503 => {
                last = format!("503 {}", r.text);
                None
            }
            Ok(r) => Some(r),
            Err(e) => {
                last = format!("connection error: {e}");
                None
            }
        }
    })
    .await;
    let Some(r) = answered else {
        panic!(
            "transfer {t} through node {id}: no answer but 503 within {PATIENCE:?} (last: \
             {last}); statuses: {:?}\n{}",
            cluster.statuses().await,
            cluster.logs()
        );
    };
    assert_eq!(r.status, 200, "transfer {t} through node {id}: {}", r.text);
    let word = &r.results()[0];
    assert!(word == "ok" || word == "exists", "transfer {t}: {word}");
}

async fn create_accounts(http: &Http) {
    let body = Value::Array(
        ACCOUNTS
            .iter()
            .map(|&id| json!({"id": id, "ledger": 1, "code": 10}))
            .collect(),
    );
    let results = common::write_until_answered(http, "/v1/accounts", &body, PATIENCE)
        .await
        .results();
    assert!(
        results.iter().all(|r| r == "ok" || r == "exists"),
        "{results:?}"
    );
}

/// A membership change through `http` that must succeed: 200 `{"result":"ok","index":N}`.
async fn change_ok(http: &Http, path: &str, body: &Value) -> u64 {
    let r = common::post_until_answered(http, path, body, PATIENCE).await;
    assert_eq!(r.status, 200, "POST {path} {body}: {}", r.text);
    assert_eq!(r.json["result"], "ok", "POST {path} {body}: {}", r.text);
    r.json["index"]
        .as_u64()
        .unwrap_or_else(|| panic!("POST {path} {body}: no index in {}", r.text))
}

/// A membership change through `http` that must be refused: 409 `membership_refused`.
async fn change_refused(http: &Http, path: &str, body: &Value) -> String {
    let r = common::post_until_answered(http, path, body, PATIENCE).await;
    assert_eq!(r.status, 409, "POST {path} {body}: {}", r.text);
    assert_eq!(
        r.error(),
        "membership_refused",
        "POST {path} {body}: {}",
        r.text
    );
    assert!(
        !r.message().is_empty(),
        "a refusal without a reason: {}",
        r.text
    );
    r.message().to_string()
}

fn learner_body(cluster: &Cluster, id: u64) -> Value {
    let n = cluster.node(id);
    json!({
        "id": id,
        "peer_addr": format!("127.0.0.1:{}", n.peer_port),
        "http_addr": format!("127.0.0.1:{}", n.http_port),
    })
}

/// The members a status lists: id → role.
fn member_roles(status: &Value) -> BTreeMap<u64, String> {
    status["members"]
        .as_array()
        .unwrap_or_else(|| panic!("a status without members: {status}"))
        .iter()
        .map(|m| {
            (
                m["id"].dec().expect("member id"),
                m["role"].as_str().expect("member role").to_string(),
            )
        })
        .collect()
}

/// The member `id` of a status.
fn member(status: &Value, id: u64) -> Value {
    status["members"]
        .as_array()
        .and_then(|ms| ms.iter().find(|m| m["id"] == id))
        .unwrap_or_else(|| panic!("member {id} is not in the status {status}"))
        .clone()
}

/// Waits until a node among `ids` (all running) leads and every one of `ids` names it; returns
/// its id.
async fn wait_leader_among(cluster: &Cluster, ids: &[u64]) -> u64 {
    let what = format!("an agreed leader among nodes {ids:?}");
    eventually(cluster, &what, PATIENCE, async || {
        let mut statuses = Vec::new();
        for &id in ids {
            statuses.push((id, cluster.node(id).try_status().await?));
        }
        let (leader, _) = statuses.iter().find(|(_, s)| s["role"] == "leader")?;
        statuses
            .iter()
            .all(|(_, s)| s["leader_id"].as_u64() == Some(*leader))
            .then_some(*leader)
    })
    .await
}

/// Waits until every node of `ids` has applied the leader's commit index (the leader among
/// them); returns that index.
async fn wait_converged_among(cluster: &Cluster, ids: &[u64]) -> u64 {
    let what = format!("nodes {ids:?} applying the leader's commit index");
    eventually(cluster, &what, PATIENCE, async || {
        let mut statuses = Vec::new();
        for &id in ids {
            statuses.push(cluster.node(id).try_status().await?);
        }
        let commit = statuses
            .iter()
            .find(|s| s["role"] == "leader")?
            .get("commit_index")?
            .as_u64()?;
        statuses
            .iter()
            .all(|s| s["applied_index"].as_u64() == Some(commit))
            .then_some(commit)
    })
    .await
}

/// Waits until node `id` has applied at least `index` (its own, stale status).
async fn wait_applied(cluster: &Cluster, id: u64, index: u64) {
    let what = format!("node {id} applying index {index}");
    eventually(cluster, &what, PATIENCE, async || {
        let applied = cluster.node(id).try_status().await?["applied_index"].as_u64()?;
        (applied >= index).then_some(())
    })
    .await
}

/// Every transfer a node holds that touches [`ACCOUNTS`], by id.
async fn all_transfers(http: &Http) -> BTreeMap<u64, Value> {
    common::all_transfers(http, &ACCOUNTS).await
}

/// Every account of [`ACCOUNTS`] as a node holds it, by id.
async fn all_accounts(http: &Http) -> BTreeMap<u64, Value> {
    common::all_accounts(http, &ACCOUNTS).await
}

/// The balances are exactly the sums of the transfers, and the ledger balances.
fn check_balances(node: u64, accounts: &BTreeMap<u64, Value>, transfers: &BTreeMap<u64, Value>) {
    let mut debits: BTreeMap<u64, u64> = BTreeMap::new();
    let mut credits: BTreeMap<u64, u64> = BTreeMap::new();
    for t in transfers.values() {
        let amount = t["amount"].dec().expect("amount");
        *debits
            .entry(t["debit_account_id"].dec().expect("debit"))
            .or_default() += amount;
        *credits
            .entry(t["credit_account_id"].dec().expect("credit"))
            .or_default() += amount;
    }
    let (mut all_debits, mut all_credits) = (0u64, 0u64);
    for (&id, a) in accounts {
        let dp = a["debits_posted"].dec().expect("debits_posted");
        let cp = a["credits_posted"].dec().expect("credits_posted");
        assert_eq!(
            dp,
            debits.get(&id).copied().unwrap_or(0),
            "node {node}: account {id}'s debits_posted is not the sum of its transfers"
        );
        assert_eq!(
            cp,
            credits.get(&id).copied().unwrap_or(0),
            "node {node}: account {id}'s credits_posted is not the sum of its transfers"
        );
        all_debits += dp;
        all_credits += cp;
    }
    assert_eq!(
        all_debits, all_credits,
        "node {node}: the ledger does not balance"
    );
}

/// Transfers or accounts by id, as a node answers them.
type ById = BTreeMap<u64, Value>;

/// The first id at which two maps differ, for a readable failure.
fn first_difference(a: &BTreeMap<u64, Value>, b: &BTreeMap<u64, Value>) -> String {
    let keys: BTreeSet<u64> = a.keys().chain(b.keys()).copied().collect();
    for k in keys {
        if a.get(&k) != b.get(&k) {
            return format!("id {k}: {:?} vs {:?}", a.get(&k), b.get(&k));
        }
    }
    "none".into()
}

/// Checks that nodes `ids` hold every acknowledged transfer with the fields sent, nothing that
/// was never sent, balances that are the sums of their transfers, and all the same ledger.
async fn check_ledgers(
    cluster: &Cluster,
    ids: &[u64],
    acknowledged: &BTreeMap<u64, Value>,
    sent_below: u64,
) {
    let mut reference: Option<(u64, ById, ById)> = None;
    for &id in ids {
        let http = &cluster.node(id).http;
        let transfers = all_transfers(http).await;
        let accounts = all_accounts(http).await;
        for (tid, t) in acknowledged {
            let got = transfers
                .get(tid)
                .unwrap_or_else(|| panic!("node {id}: acknowledged transfer {tid} is missing"));
            assert_eq!(
                common::transfer_fields(got),
                common::transfer_fields(t),
                "node {id}: transfer {tid} has other fields than were sent"
            );
        }
        for tid in transfers.keys() {
            assert!(
                *tid < sent_below,
                "node {id}: transfer {tid} was never sent"
            );
        }
        check_balances(id, &accounts, &transfers);
        match &reference {
            None => reference = Some((id, transfers, accounts)),
            Some((first, ref_transfers, ref_accounts)) => {
                assert!(
                    &transfers == ref_transfers,
                    "nodes {first} and {id} hold different transfers; first difference: {}",
                    first_difference(ref_transfers, &transfers)
                );
                assert!(
                    &accounts == ref_accounts,
                    "nodes {first} and {id} hold different accounts; first difference: {}",
                    first_difference(ref_accounts, &accounts)
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Background load: a client writing transfers continuously, as an application would.

/// Ids of the load's transfers start here; ids of probes written by the tests are below.
const LOAD_IDS: u64 = 1_000_000;

struct Load {
    stop: Arc<AtomicBool>,
    /// Transfers acknowledged so far.
    acked: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<(BTreeMap<u64, Value>, u64)>,
}

impl Load {
    /// Writes batches of 1 to 5 transfers through the nodes on `ports` (any of them, at
    /// random), retrying a batch with the same ids after a 503 or a lost connection.
    fn start(ports: Vec<u16>, seed: u64) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(AtomicU64::new(0));
        let task = tokio::spawn(load(ports, seed, stop.clone(), acked.clone()));
        Load { stop, acked, task }
    }

    fn acked(&self) -> u64 {
        self.acked.load(Ordering::Relaxed)
    }

    /// Stops the client; returns the acknowledged transfers by id and the first id never sent.
    async fn finish(self) -> (BTreeMap<u64, Value>, u64) {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.expect("the load client panicked")
    }
}

async fn load(
    ports: Vec<u16>,
    seed: u64,
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicU64>,
) -> (BTreeMap<u64, Value>, u64) {
    let https: Vec<Http> = ports.iter().map(|&p| Http::new(p)).collect();
    let mut rng = Rng::new(seed);
    let mut next_id = LOAD_IDS;
    let mut acknowledged = BTreeMap::new();
    while !stop.load(Ordering::Relaxed) {
        let n = rng.range(1, 5);
        let mut batch = Vec::new();
        for _ in 0..n {
            let debit = *rng.pick(&ACCOUNTS);
            let mut credit = *rng.pick(&ACCOUNTS);
            while credit == debit {
                credit = *rng.pick(&ACCOUNTS);
            }
            batch.push(transfer(next_id, debit, credit, rng.range(1, 100)));
            next_id += 1;
        }
        let body = serde_json::to_vec(&Value::Array(batch.clone())).expect("encode");
        let mut attempt = 0;
        while !(stop.load(Ordering::Relaxed) && attempt > 0) {
            let http = rng.pick(&https);
            match http.try_post("/v1/transfers", body.clone()).await {
                Ok(r) if r.status == 200 => {
                    for (t, word) in batch.iter().zip(r.results()) {
                        assert!(
                            word == "ok" || (word == "exists" && attempt > 0),
                            "transfer {t} (attempt {attempt}): {word}"
                        );
                        acknowledged.insert(t["id"].dec().expect("id"), t.clone());
                    }
                    acked.fetch_add(batch.len() as u64, Ordering::Relaxed);
                    break;
                }
                Ok(r) if r.status == 503 => {
                    assert!(
                        matches!(
                            r.error(),
                            "no_leader"
                                | "not_leader"
                                | "write_dropped"
                                | "outcome_unknown"
                                | "starting"
                        ),
                        "503 with {}",
                        r.text
                    );
                }
                Ok(r) => panic!("the load got {} {} from {}", r.status, r.text, http.base),
                Err(_) => {}
            }
            attempt += 1;
            tokio::time::sleep(Duration::from_millis(rng.range(50, 200))).await;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    (acknowledged, next_id)
}

/// Waits until the load has `more` transfers acknowledged beyond what it had when called.
async fn wait_load_progress(cluster: &Cluster, load: &Load, more: u64, when: &str) {
    let from = load.acked();
    let what = format!("{more} more transfers of the load acknowledged {when}");
    eventually(cluster, &what, PATIENCE, async || {
        (load.acked() >= from + more).then_some(())
    })
    .await
}

// ---------------------------------------------------------------------------------------------
// 1. Add two learners under load, promote them together, lose two original nodes, remove the
//    learners again.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_promote_and_remove_under_load() {
    let seed = common::seed(0x3E3B_E125);
    println!("seed {seed} (BULWARK_TEST_SEED replays the client load)");
    let mut cluster = Cluster::start(3, &[]).await;
    let original = [1u64, 2, 3];
    let leader = cluster.wait_leader(PATIENCE).await;
    create_accounts(&cluster.node(leader).http).await;
    let ports: Vec<u16> = original
        .iter()
        .map(|&id| cluster.node(id).http_port)
        .collect();
    let load = Load::start(ports, seed);
    wait_load_progress(&cluster, &load, 50, "before any change").await;

    // Nodes 4 and 5 start and wait to be added.
    cluster.start_joining(4, &[]).await;
    cluster.start_joining(5, &[]).await;

    // 4 through the leader (HTTP), 5 through a follower (the CLI; it forwards to the leader).
    let leader = wait_leader_among(&cluster, &original).await;
    let follower = *original
        .iter()
        .find(|&&id| id != leader)
        .expect("a follower");
    let body = learner_body(&cluster, 4);
    let index = change_ok(&cluster.node(leader).http, "/v1/cluster/learners", &body).await;
    println!("node 4 added as a learner at index {index}");
    let n5 = cluster.node(5);
    let (code, stdout, stderr) = common::cli(&[
        "cluster",
        "add",
        "--id",
        "5",
        "--peer-addr",
        &format!("127.0.0.1:{}", n5.peer_port),
        "--http-addr",
        &format!("127.0.0.1:{}", n5.http_port),
        "--addr",
        &cluster.node(follower).base_url(),
    ])
    .await;
    assert_eq!(
        code, 0,
        "cluster add 5 via follower {follower}: {stdout}{stderr}"
    );
    println!(
        "node 5 added through follower {follower}: {}",
        stdout.trim()
    );
    // Adding a member again is refused.
    let reason = change_refused(&cluster.node(follower).http, "/v1/cluster/learners", &body).await;
    println!("adding node 4 twice: {reason}");

    // Both catch up (by snapshot: a new node's log starts empty) while the load goes on.
    let leader = wait_leader_among(&cluster, &original).await;
    let target = cluster.node(leader).http.applied_index().await;
    for id in [4, 5] {
        wait_applied(&cluster, id, target).await;
    }
    let status = cluster.node(leader).http.status().await;
    let roles = member_roles(&status);
    assert_eq!(
        roles.get(&4).map(String::as_str),
        Some("learner"),
        "{status}"
    );
    assert_eq!(
        roles.get(&5).map(String::as_str),
        Some("learner"),
        "{status}"
    );
    assert_eq!(roles.len(), 5, "{status}");
    println!("nodes 4 and 5 caught up to index {target}");

    // One learner into three voters would make four: refused, by HTTP and by the CLI.
    let reason = change_refused(
        &cluster.node(leader).http,
        "/v1/cluster/promote",
        &json!({"ids": [4]}),
    )
    .await;
    println!("promoting node 4 alone: {reason}");
    let (code, stdout, stderr) = common::cli(&[
        "cluster",
        "promote",
        "--ids",
        "4",
        "--addr",
        &cluster.node(follower).base_url(),
    ])
    .await;
    assert_eq!(code, 3, "cluster promote --ids 4: {stdout}{stderr}");
    // A member that is not a learner cannot be promoted.
    change_refused(
        &cluster.node(leader).http,
        "/v1/cluster/promote",
        &json!({"ids": [1, 4]}),
    )
    .await;

    let index = change_ok(
        &cluster.node(leader).http,
        "/v1/cluster/promote",
        &json!({"ids": [4, 5]}),
    )
    .await;
    println!("nodes 4 and 5 promoted at index {index}");
    let all = [1u64, 2, 3, 4, 5];
    let leader = wait_leader_among(&cluster, &all).await;
    // Every node lists five voters: one leader, four followers, no learner.
    for id in all {
        let mut last = Value::Null;
        let listed = within(PATIENCE, async || {
            let status = cluster.node(id).try_status().await?;
            let roles = member_roles(&status);
            let ids: Vec<u64> = roles.keys().copied().collect();
            let leaders = roles.values().filter(|r| *r == "leader").count();
            let followers = roles.values().filter(|r| *r == "follower").count();
            last = status;
            (ids == all && leaders == 1 && followers == 4).then_some(())
        })
        .await;
        assert!(
            listed.is_some(),
            "node {id} does not list the five voters within {PATIENCE:?}; its status: \
             {last}\n{}",
            cluster.logs()
        );
    }
    println!("five voters; node {leader} leads");

    // The promotion answered ok and every node lists five voters: the cluster must now survive
    // the loss of any two of them. Two of the original nodes die (not the leader, if it is one
    // of them): three of five voters are left, a majority, so the cluster still commits.
    let mut victims: Vec<u64> = original
        .iter()
        .copied()
        .filter(|&id| id != leader)
        .collect();
    victims.truncate(2);
    for &id in &victims {
        cluster.node_mut(id).kill9();
    }
    let survivor = *original
        .iter()
        .find(|id| !victims.contains(id))
        .expect("a surviving original node");
    println!("killed nodes {victims:?}; node {survivor} of the originals is left");
    write_transfer_via(&cluster, survivor, &transfer(10, 1, 2, 5)).await;
    wait_load_progress(&cluster, &load, 20, "with two original nodes dead").await;

    for &id in &victims {
        cluster.node_mut(id).restart().await;
    }
    wait_leader_among(&cluster, &all).await;
    wait_load_progress(&cluster, &load, 20, "after the restarts").await;

    // Remove the two again (the CLI, through an original node).
    let (code, stdout, stderr) = common::cli(&[
        "cluster",
        "remove",
        "--ids",
        "4,5",
        "--addr",
        &cluster.node(survivor).base_url(),
    ])
    .await;
    assert_eq!(code, 0, "cluster remove --ids 4,5: {stdout}{stderr}");
    println!("nodes 4 and 5 removed: {}", stdout.trim());

    // A removed node serves nothing but liveness.
    for id in [4u64, 5] {
        let http = cluster.node(id).http.clone();
        let what = format!("node {id} answering 410 node_removed");
        let r = eventually(&cluster, &what, PATIENCE, async || {
            let r = http.try_get("/v1/status").await.ok()?;
            (r.status == 410).then_some(r)
        })
        .await;
        assert_eq!(r.error(), "node_removed", "{}", r.text);
        let r = http.get("/v1/accounts/1").await;
        assert_eq!((r.status, r.error()), (410, "node_removed"), "{}", r.text);
        let r = http
            .post("/v1/transfers", &json!([transfer(20 + id, 1, 2, 1)]))
            .await;
        assert_eq!((r.status, r.error()), (410, "node_removed"), "{}", r.text);
        let r = http.get("/health/ready").await;
        assert_eq!((r.status, r.error()), (410, "node_removed"), "{}", r.text);
        assert!(http.live().await, "node {id}: /health/live after removal");
        cluster.node_mut(id).assert_running();
    }

    // The three originals list only themselves and keep serving writes, through each of them.
    for id in original {
        let what = format!("node {id} listing the three original members");
        eventually(&cluster, &what, PATIENCE, async || {
            let status = cluster.node(id).try_status().await?;
            let ids: Vec<u64> = member_roles(&status).keys().copied().collect();
            (ids == original).then_some(())
        })
        .await;
    }
    for id in original {
        write_transfer_via(&cluster, id, &transfer(30 + id, 2, 3, 7)).await;
    }
    wait_load_progress(&cluster, &load, 20, "after the removal").await;

    let (mut acknowledged, sent_below) = load.finish().await;
    for (tid, t) in [
        (10, transfer(10, 1, 2, 5)),
        (31, transfer(31, 2, 3, 7)),
        (32, transfer(32, 2, 3, 7)),
        (33, transfer(33, 2, 3, 7)),
    ] {
        acknowledged.insert(tid, t);
    }
    println!("{} transfers acknowledged", acknowledged.len());
    for id in [4, 5] {
        cluster.node_mut(id).kill9();
    }
    wait_leader_among(&cluster, &original).await;
    let index = wait_converged_among(&cluster, &original).await;
    println!("the three originals converged at index {index}");
    check_ledgers(&cluster, &original, &acknowledged, sent_below).await;
}

// ---------------------------------------------------------------------------------------------
// 2. Membership survives a restart of every node on its original flags.

/// Three nodes with the test's accounts and transfer 1; the leader's id.
async fn three_nodes_with_a_transfer() -> (Cluster, u64) {
    let cluster = Cluster::start(3, &[]).await;
    let leader = cluster.wait_leader(PATIENCE).await;
    let http = cluster.node(leader).http.clone();
    create_accounts(&http).await;
    write_transfer(&http, &transfer(1, 1, 2, 10)).await;
    (cluster, leader)
}

/// Nodes 4 and 5 start, join through `http` as learners, catch up, and become voters together.
async fn add_and_promote_four_and_five(cluster: &mut Cluster, http: &Http) {
    for id in [4, 5] {
        cluster.start_joining(id, &[]).await;
        change_ok(http, "/v1/cluster/learners", &learner_body(cluster, id)).await;
        let target = http.applied_index().await;
        wait_applied(cluster, id, target).await;
    }
    change_ok(http, "/v1/cluster/promote", &json!({"ids": [4, 5]})).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn membership_survives_restart() {
    let (mut cluster, leader) = three_nodes_with_a_transfer().await;
    let http = cluster.node(leader).http.clone();

    // 4 and 5 join and become voters; 6 joins and stays a learner.
    add_and_promote_four_and_five(&mut cluster, &http).await;
    cluster.start_joining(6, &[]).await;
    change_ok(&http, "/v1/cluster/learners", &learner_body(&cluster, 6)).await;
    cluster.wait_leader(PATIENCE).await;
    cluster.wait_converged(PATIENCE).await;
    write_transfer(&http, &transfer(2, 2, 3, 20)).await;

    // The original nodes' flags name only the original three.
    for id in [1, 2, 3] {
        let args = cluster.node(id).args().join(" ");
        assert!(
            !args.contains("--join")
                && args.matches("--member").count() == 3
                && !args.contains(&cluster.node(4).member_addr().arg()),
            "node {id}'s flags: {args}"
        );
        let book = std::fs::read_to_string(cluster.node(id).data_dir.join("members"))
            .unwrap_or_else(|e| panic!("node {id}'s members file: {e}"));
        for m in 4..=6 {
            assert!(
                book.contains(&cluster.node(m).member_addr().arg()),
                "node {id}'s members file does not name node {m}:\n{book}"
            );
        }
    }

    for n in &mut cluster.nodes {
        let status = n.sigterm();
        assert!(status.success(), "node {} stopped with {status}", n.id);
    }
    // First only 1, 2 and 4: three of five voters, a majority only with node 4, whose address
    // the original nodes know from their address book alone.
    for id in [1, 2, 4] {
        cluster.node_mut(id).restart().await;
    }
    let leader = wait_leader_among(&cluster, &[1, 2, 4]).await;
    println!("nodes 1, 2 and 4 elected node {leader}");
    write_transfer(&cluster.node(1).http, &transfer(3, 3, 4, 30)).await;
    for id in [3, 5, 6] {
        cluster.node_mut(id).restart().await;
    }
    let leader = cluster.wait_leader(PATIENCE).await;

    // Every node lists the changed membership: five voters and the learner 6.
    for n in &cluster.nodes {
        let what = format!("node {} listing five voters and learner 6", n.id);
        let roles = eventually(&cluster, &what, PATIENCE, async || {
            let status = n.try_status().await?;
            let roles = member_roles(&status);
            let ids: Vec<u64> = roles.keys().copied().collect();
            (ids == [1, 2, 3, 4, 5, 6] && roles[&leader] == "leader").then_some(roles)
        })
        .await;
        for (id, role) in &roles {
            let expected = match *id {
                6 => "learner",
                id if id == leader => "leader",
                _ => "follower",
            };
            assert_eq!(role, expected, "node {}: member {id}: {roles:?}", n.id);
        }
    }

    // Writes work through every node, the learner too.
    for (i, n) in cluster.nodes.iter().enumerate() {
        write_transfer(&n.http, &transfer(10 + i as u64, 1, 4, 1)).await;
    }
    cluster.wait_converged(PATIENCE).await;
    for n in &cluster.nodes {
        let ids: Vec<u64> = all_transfers(&n.http).await.keys().copied().collect();
        assert_eq!(
            ids,
            [1, 2, 3, 10, 11, 12, 13, 14, 15],
            "node {}: transfers",
            n.id
        );
    }
}

/// A follower down while the node that now leads was added knows no address for it: its log
/// ends before that node's `AddLearner`, and its address book is older still. It must answer
/// the leader anyway (at the address the leader's handshake names) and catch up; before the
/// handshake named one, it never could, and stayed behind for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_that_missed_its_leaders_addition_catches_up() {
    let (mut cluster, leader) = three_nodes_with_a_transfer().await;
    cluster.wait_converged(PATIENCE).await;
    let status = cluster.node_mut(3).sigterm();
    assert!(status.success(), "node 3 stopped with {status}");

    // Without node 3: 4 and 5 join and become voters, then 1 and 2 leave. Voters 3, 4, 5.
    let http = cluster
        .node(if leader == 3 { 1 } else { leader })
        .http
        .clone();
    add_and_promote_four_and_five(&mut cluster, &http).await;
    change_ok(&http, "/v1/cluster/remove", &json!({"ids": [1, 2]})).await;
    let leader = wait_leader_among(&cluster, &[4, 5]).await;
    let leader_http = cluster.node(leader).http.clone();
    write_transfer(&leader_http, &transfer(2, 2, 3, 20)).await;
    for id in [1, 2] {
        let status = cluster.node_mut(id).sigterm();
        assert!(status.success(), "node {id} stopped with {status}");
    }

    // Node 3 comes back knowing only 1, 2 and itself.
    let book = std::fs::read_to_string(cluster.node(3).data_dir.join("members")).unwrap();
    assert!(
        !book.contains(&cluster.node(leader).member_addr().arg()),
        "node 3 already knows the leader's address:\n{book}"
    );
    cluster.node_mut(3).restart().await;
    let target = leader_http.applied_index().await;
    wait_applied(&cluster, 3, target).await;
    let ids: Vec<u64> = all_transfers(&cluster.node(3).http)
        .await
        .keys()
        .copied()
        .collect();
    assert_eq!(ids, [1, 2], "node 3's transfers");
}

/// Two learners added one right after the other, on an idle cluster: the checkpoint the first
/// addition starts ends below the second, so the leader cannot offer it (a snapshot's
/// membership must be the log's at its index), and a new node's empty log needs a snapshot.
/// The leader must checkpoint again when Raft asks for a snapshot it cannot offer; before it
/// did, both learners waited for the next checkpoint the log's growth would start, forever on
/// an idle cluster (found by the chaos run: lag 1,566 entries for 20 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn learners_added_back_to_back_catch_up() {
    let (mut cluster, leader) = three_nodes_with_a_transfer().await;
    let http = cluster.node(leader).http.clone();
    for id in [4, 5] {
        cluster.start_joining(id, &[]).await;
    }
    for id in [4, 5] {
        change_ok(&http, "/v1/cluster/learners", &learner_body(&cluster, id)).await;
    }
    let target = http.applied_index().await;
    for id in [4, 5] {
        wait_applied(&cluster, id, target).await;
    }
    for id in [4, 5] {
        let ids: Vec<u64> = all_transfers(&cluster.node(id).http)
            .await
            .keys()
            .copied()
            .collect();
        assert_eq!(ids, [1], "node {id}'s transfers");
    }
}

// ---------------------------------------------------------------------------------------------
// 3. Replication status, member metrics and `?ack=all`.

/// The value of a metric line `name{member="id"} value` on the leader, if there is one.
fn member_metric(text: &str, name: &str, id: u64) -> Option<f64> {
    let prefix = format!("{name}{{member=\"{id}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ack_all_and_replication_status() {
    let mut cluster = Cluster::start(3, &[]).await;
    let leader = cluster.wait_leader(PATIENCE).await;
    let http = cluster.node(leader).http.clone();
    create_accounts(&http).await;

    let r = common::write_until_answered(
        &http,
        "/v1/transfers?ack=all",
        &json!([transfer(1, 1, 2, 10)]),
        PATIENCE,
    )
    .await;
    assert_eq!(r.results(), ["ok"], "{}", r.text);
    let r = common::write_until_answered(
        &http,
        "/v1/accounts?ack=majority",
        &json!([{"id": 9, "ledger": 1, "code": 10}]),
        PATIENCE,
    )
    .await;
    assert_eq!(r.results(), ["ok"], "{}", r.text);
    // A follower forwards an ack=all write.
    let follower = cluster
        .nodes
        .iter()
        .map(|n| n.id)
        .find(|&id| id != leader)
        .expect("a follower");
    let r = common::write_until_answered(
        &cluster.node(follower).http,
        "/v1/transfers?ack=all",
        &json!([transfer(2, 2, 1, 3)]),
        PATIENCE,
    )
    .await;
    assert_eq!(r.results(), ["ok"], "{}", r.text);

    // After a quiet moment every member is caught up and in sync.
    let status = eventually(
        &cluster,
        "the leader showing three members in sync with lag 0",
        PATIENCE,
        async || {
            let status = cluster.node(leader).try_status().await?;
            let members = status["members"].as_array()?;
            let all_in_sync = members.len() == 3
                && members
                    .iter()
                    .all(|m| m["in_sync"] == true && m["lag"] == 0 && m["lag_ms"] == 0);
            all_in_sync.then_some(status)
        },
    )
    .await;
    let last = status["log"]["last_index"]
        .as_u64()
        .expect("log last_index");
    for id in [1, 2, 3] {
        let m = member(&status, id);
        assert_eq!(m["match_index"].as_u64(), Some(last), "member {id}: {m}");
    }
    // A follower knows no replication status: null.
    let fstatus = cluster.node(follower).http.status().await;
    for m in fstatus["members"].as_array().expect("members") {
        for field in ["match_index", "lag", "lag_ms", "in_sync"] {
            assert!(m[field].is_null(), "follower {follower}: {field} in {m}");
        }
    }

    // The leader's metrics have a gauge per follower.
    let followers: Vec<u64> = [1, 2, 3].into_iter().filter(|&id| id != leader).collect();
    let metrics = eventually(
        &cluster,
        "member gauges on the leader",
        PATIENCE,
        async || {
            let r = cluster.node(leader).http.try_get("/metrics").await.ok()?;
            let ok = followers.iter().all(|&id| {
                member_metric(&r.text, "bulwark_member_in_sync", id) == Some(1.0)
                    && member_metric(&r.text, "bulwark_member_lag_entries", id) == Some(0.0)
                    && member_metric(&r.text, "bulwark_member_match_index", id)
                        .is_some_and(|v| v >= 1.0)
            });
            ok.then_some(r.text)
        },
    )
    .await;
    for name in [
        "bulwark_member_match_index",
        "bulwark_member_lag_entries",
        "bulwark_member_in_sync",
    ] {
        assert!(
            metrics.contains(&format!("# TYPE {name} gauge")),
            "no gauge {name}:\n{metrics}"
        );
    }

    // A follower dies: it leaves the in-sync set, and ack=all writes go on without it.
    let dead = followers[0];
    cluster.node_mut(dead).kill9();
    eventually(
        &cluster,
        "the leader showing the dead follower out of sync",
        PATIENCE,
        async || {
            let status = cluster.node(leader).try_status().await?;
            (member(&status, dead)["in_sync"] == false).then_some(())
        },
    )
    .await;
    for i in 0..3 {
        let r = common::write_until_answered(
            &http,
            "/v1/transfers?ack=all",
            &json!([transfer(100 + i, 1, 3, 1)]),
            PATIENCE,
        )
        .await;
        assert_eq!(r.results(), ["ok"], "{}", r.text);
    }
    let status = http.status().await;
    let m = member(&status, dead);
    assert!(m["lag"].as_u64().is_some_and(|lag| lag > 0), "{m}");
    assert_eq!(m["in_sync"], false, "{m}");
    let metrics = http.get("/metrics").await.text;
    assert_eq!(
        member_metric(&metrics, "bulwark_member_in_sync", dead),
        Some(0.0),
        "{metrics}"
    );

    // Only majority and all are acks.
    let r = http
        .post(
            "/v1/transfers?ack=sometimes",
            &json!([transfer(200, 1, 2, 1)]),
        )
        .await;
    assert_eq!((r.status, r.error()), (400, "invalid_query"), "{}", r.text);
    let r = http
        .post(
            "/v1/accounts?ack=sometimes",
            &json!([{"id": 10, "ledger": 1, "code": 10}]),
        )
        .await;
    assert_eq!((r.status, r.error()), (400, "invalid_query"), "{}", r.text);
    assert!(
        http.transfer(200).await.is_none(),
        "a refused write was applied"
    );
    assert!(
        http.account(10).await.is_none(),
        "a refused write was applied"
    );

    // Back: it catches up and is in sync again.
    cluster.node_mut(dead).restart().await;
    eventually(
        &cluster,
        "the restarted follower back in sync",
        PATIENCE,
        async || {
            let status = cluster.node(leader).try_status().await?;
            let m = member(&status, dead);
            (m["in_sync"] == true && m["lag"] == 0).then_some(())
        },
    )
    .await;
}

// ---------------------------------------------------------------------------------------------
// 4. /health/ready follows the leader.

async fn ready_status(cluster: &Cluster, id: u64) -> Option<Resp> {
    cluster.node(id).http.try_get("/health/ready").await.ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_follows_the_leader() {
    let mut cluster = Cluster::start(3, &[]).await;
    cluster.wait_leader(PATIENCE).await;
    for id in [1, 2, 3] {
        let what = format!("node {id} ready");
        eventually(&cluster, &what, PATIENCE, async || {
            (ready_status(&cluster, id).await?.status == 200).then_some(())
        })
        .await;
    }

    let survivor = 2;
    for id in [1, 3] {
        cluster.node_mut(id).kill9();
    }
    let r = eventually(
        &cluster,
        "the lone node answering 503 not_ready",
        PATIENCE,
        async || {
            let r = ready_status(&cluster, survivor).await?;
            (r.status == 503).then_some(r)
        },
    )
    .await;
    assert_eq!(r.error(), "not_ready", "{}", r.text);
    assert!(
        cluster.node(survivor).http.live().await,
        "a lone node is still live"
    );

    for id in [1, 3] {
        cluster.node_mut(id).restart().await;
    }
    cluster.wait_leader(PATIENCE).await;
    for id in [1, 2, 3] {
        let what = format!("node {id} ready again");
        eventually(&cluster, &what, PATIENCE, async || {
            (ready_status(&cluster, id).await?.status == 200).then_some(())
        })
        .await;
    }
}

/// A running cluster never grows past 7 voters: a promotion that would make more is refused with
/// 409, naming the limit, and changes nothing. A single node (one voter) with eight learners
/// (never started: a learner need not be up to be added) asked to promote them all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_to_more_than_seven_voters_is_refused() {
    let node = common::Node::start(&[]).await;
    let http = node.http.clone();
    let learners: Vec<u64> = (2..=9).collect();
    for &id in &learners {
        let base = common::free_port_range(2);
        let body = json!({
            "id": id,
            "peer_addr": format!("127.0.0.1:{base}"),
            "http_addr": format!("127.0.0.1:{}", base + 1),
        });
        change_ok(&http, "/v1/cluster/learners", &body).await;
    }
    let before = http.status().await;
    let message = change_refused(&http, "/v1/cluster/promote", &json!({"ids": learners})).await;
    assert!(message.contains("at most 7"), "{message}");
    let after = http.status().await;
    assert_eq!(member_roles(&after), member_roles(&before));
    assert_eq!(
        member_roles(&after)
            .values()
            .filter(|r| *r != "learner")
            .count(),
        1,
        "{after}"
    );
    assert_eq!(after["applied_index"], before["applied_index"], "{after}");
    // Through the CLI too: refused, exit 3 (a 4xx).
    let (code, out, err) = common::cli(&[
        "cluster",
        "promote",
        "--ids",
        "2,3,4,5,6,7,8,9",
        "--addr",
        &node.base_url(),
    ])
    .await;
    assert_eq!(code, 3, "{out} {err}");
    assert!(err.contains("at most 7"), "{err}");
}
