//! A follower that catches up by snapshot survives a crash at every step of the install: at
//! each named crash point (`BULWARK_CRASH_AT`, `node::faults`) and at random moments (kill -9),
//! it always starts again and converges with the others, holding every transfer.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{Cluster, Http, Rng};
use serde_json::{json, Value};

const PATIENCE: Duration = Duration::from_secs(60);
/// Small checkpoints, so that the leader compacts its log past a stopped follower quickly.
const NODE_ARGS: [&str; 2] = ["--checkpoint-transfers", "100"];
const ACCOUNTS: [u64; 4] = [1, 2, 3, 4];

/// Writes `batches` batches of 3 transfers through the running nodes; returns them by id.
async fn write_transfers(
    https: &[Http],
    rng: &mut Rng,
    next_id: &mut u64,
    batches: usize,
    sent: &mut BTreeMap<u64, Value>,
) {
    for b in 0..batches {
        let mut batch = Vec::new();
        for _ in 0..3 {
            let (debit, credit) = if rng.chance(50) { (1, 2) } else { (3, 4) };
            let t = json!({"id": *next_id, "debit_account_id": debit, "credit_account_id": credit,
                "amount": rng.range(1, 100), "ledger": 1, "code": 1});
            sent.insert(*next_id, t.clone());
            batch.push(t);
            *next_id += 1;
        }
        let results = common::write_until_answered(
            &https[b % https.len()],
            "/v1/transfers",
            &json!(batch),
            PATIENCE,
        )
        .await
        .results();
        assert!(
            results.iter().all(|r| r == "ok" || r == "exists"),
            "{results:?}"
        );
    }
}

/// Stops `behind`, writes until the leader's log is compacted well past it.
async fn leave_behind(
    cluster: &mut Cluster,
    behind: u64,
    rng: &mut Rng,
    next_id: &mut u64,
    sent: &mut BTreeMap<u64, Value>,
) {
    cluster.node_mut(behind).kill9();
    let https: Vec<Http> = cluster
        .nodes
        .iter()
        .filter(|n| n.id != behind)
        .map(|n| n.http.clone())
        .collect();
    let applied = |s: &Value| s["applied_index"].as_u64().unwrap_or(0);
    let start_index = applied(&https[0].status().await);
    // The leader keeps 256 entries behind a checkpoint, and the appends it sent to the stopped
    // node before its pipeline paused (up to 256 messages) wait in the transport's queue and are
    // delivered when the node returns: go well past both, so that catching up needs a snapshot.
    write_transfers(&https, rng, next_id, 1200, sent).await;
    let leader = cluster.wait_leader(PATIENCE).await;
    let status = cluster.node(leader).http.status().await;
    let first = status["log"]["first_index"].as_u64().unwrap_or(0);
    assert!(
        first > start_index + 1,
        "the leader's log was not compacted past the stopped node ({start_index}): {status}"
    );
}

/// Every node holds exactly `sent` and the same balances.
async fn assert_all_hold(cluster: &Cluster, sent: &BTreeMap<u64, Value>) {
    let index = cluster.wait_converged(Duration::from_secs(90)).await;
    let mut seen: Option<BTreeMap<u64, Value>> = None;
    for node in &cluster.nodes {
        let status = node.http.status().await;
        assert_eq!(status["applied_index"].as_u64(), Some(index), "{status}");
        let transfers = common::all_transfers(&node.http, &ACCOUNTS).await;
        assert_eq!(
            transfers.len(),
            sent.len(),
            "node {}: transfer count",
            node.id
        );
        let accounts = common::all_accounts(&node.http, &ACCOUNTS).await;
        if let Some(other) = &seen {
            assert!(other == &accounts, "node {} differs in balances", node.id);
        }
        seen = Some(accounts);
    }
}

async fn three_nodes() -> Cluster {
    let cluster = Cluster::start(3, &NODE_ARGS).await;
    let leader = cluster.wait_leader(PATIENCE).await;
    let accounts: Vec<Value> = ACCOUNTS
        .iter()
        .map(|id| json!({"id": id, "ledger": 1, "code": 1}))
        .collect();
    common::write_until_answered(
        &cluster.node(leader).http,
        "/v1/accounts",
        &json!(accounts),
        PATIENCE,
    )
    .await;
    cluster
}

/// A follower other than the current leader.
async fn a_follower(cluster: &Cluster) -> u64 {
    let leader = cluster.wait_leader(PATIENCE).await;
    cluster
        .nodes
        .iter()
        .map(|n| n.id)
        .find(|id| *id != leader)
        .expect("3 nodes")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_at_every_step_of_a_snapshot_install_restarts_and_converges() {
    let mut cluster = three_nodes().await;
    let mut rng = Rng::new(common::seed(0x1A57_0001));
    let mut sent = BTreeMap::new();
    let mut next_id = 1;
    for point in [
        "install-before-intent",
        "install-before-swap",
        "install-after-swap",
        "install-after-reopen",
        "install-after-intent-removed",
    ] {
        let behind = a_follower(&cluster).await;
        leave_behind(&mut cluster, behind, &mut rng, &mut next_id, &mut sent).await;
        let node = cluster.node_mut(behind);
        node.env = vec![
            ("BULWARK_CRASH_AT".into(), point.into()),
            (
                "RUST_LOG".into(),
                "debug,h2=info,hyper=info,reqwest=info".into(),
            ),
        ];
        node.restart().await;
        let status = node.wait_exit(Duration::from_secs(60));
        let log = node.last_log();
        if status.is_none() || !log.contains(&format!("crash point {point} reached")) {
            panic!(
                "node {behind} did not die at {point} ({status:?}):\n{log}\nstatuses: {:?}\n\
                 all nodes:\n{}",
                cluster.statuses().await,
                cluster.logs()
            );
        }
        let node = cluster.node_mut(behind);
        node.env.clear();
        node.restart().await;
        assert_all_hold(&cluster, &sent).await;
        println!("crash at {point}: node {behind} restarted and converged");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_at_random_moments_of_snapshot_installs_always_restarts_and_converges() {
    let mut cluster = three_nodes().await;
    let mut rng = Rng::new(common::seed(0x1A57_0002));
    let mut sent = BTreeMap::new();
    let mut next_id = 1_000_000;
    for round in 0..6 {
        let behind = a_follower(&cluster).await;
        leave_behind(&mut cluster, behind, &mut rng, &mut next_id, &mut sent).await;
        let node = cluster.node_mut(behind);
        node.restart().await;
        let wait = Duration::from_millis(rng.range(0, 400));
        tokio::time::sleep(wait).await;
        if node.wait_exit(Duration::ZERO).is_none() {
            node.kill9();
        }
        node.restart().await;
        assert_all_hold(&cluster, &sent).await;
        println!("round {round}: kill -9 {wait:?} after start; node {behind} converged");
    }
}
