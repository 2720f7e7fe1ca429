//! Real clusters of `bulwark start` processes on 127.0.0.1: the leader killed with `SIGKILL`
//! under load, again and again; a node that missed thousands of writes catching up; a minority
//! that must not acknowledge anything; forwarding from followers and linearizable reads on
//! every node; voter sets that are refused at start; `bulwark cluster local`.
//!
//! Every test has its own ports (a random free range below the ephemeral ports) and data
//! directories, so the tests run in parallel. Waits are generous and nothing asserts a duration:
//! failover times are printed, not checked.

mod common;

use common::DecField;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{
    cluster_members, free_port_range, member_args, stale_get, strip_ansi, transfer_fields,
    wait_exit, Cluster, Http, Rng,
};
use serde_json::{json, Value};

/// How long any one wait for the cluster may take before the test gives up.
const PATIENCE: Duration = Duration::from_secs(60);

/// (id, ledger, may not go negative)
const ACCOUNTS: [(u64, u32, bool); 10] = [
    (1, 1, false),
    (2, 1, false),
    (3, 1, true),
    (4, 1, true),
    (5, 1, true),
    (6, 1, true),
    (21, 2, false),
    (22, 2, false),
    (23, 2, true),
    (24, 2, true),
];

fn accounts_body() -> Value {
    Value::Array(
        ACCOUNTS
            .iter()
            .map(|&(id, ledger, limited)| {
                let flags: Vec<&str> = if limited {
                    vec!["debits_must_not_exceed_credits"]
                } else {
                    vec![]
                };
                json!({"id": id, "ledger": ledger, "code": 10, "flags": flags})
            })
            .collect(),
    )
}

fn ledger_accounts(ledger: u32) -> Vec<u64> {
    ACCOUNTS
        .iter()
        .filter(|a| a.1 == ledger)
        .map(|a| a.0)
        .collect()
}

fn transfer(id: u64, debit: u64, credit: u64, amount: u64, ledger: u32) -> Value {
    json!({
        "id": id,
        "debit_account_id": debit,
        "credit_account_id": credit,
        "amount": amount,
        "ledger": ledger,
        "code": 1,
        "user_data_64": id % 1000,
    })
}

/// Creates the accounts of [`ACCOUNTS`] through `http` (retrying like a client).
async fn create_accounts(http: &Http) {
    let results = common::write_until_answered(http, "/v1/accounts", &accounts_body(), PATIENCE)
        .await
        .results();
    for (i, r) in results.iter().enumerate() {
        assert!(r == "ok" || r == "exists", "account {i}: {r}");
    }
}

/// The ids of [`ACCOUNTS`].
fn account_ids() -> Vec<u64> {
    ACCOUNTS.iter().map(|&(id, _, _)| id).collect()
}

/// Every transfer a node holds that touches [`ACCOUNTS`], by id.
async fn all_transfers(http: &Http) -> BTreeMap<u64, Value> {
    common::all_transfers(http, &account_ids()).await
}

/// Every account of [`ACCOUNTS`] as a node holds it, by id.
async fn all_accounts(http: &Http) -> BTreeMap<u64, Value> {
    common::all_accounts(http, &account_ids()).await
}

/// Checks that the accounts' balances are exactly the sums of `transfers` (all single-phase),
/// that every ledger balances and that no limited account is overdrawn.
fn check_balances(node: u64, accounts: &BTreeMap<u64, Value>, transfers: &BTreeMap<u64, Value>) {
    let mut debits: HashMap<u64, u64> = HashMap::new();
    let mut credits: HashMap<u64, u64> = HashMap::new();
    for t in transfers.values() {
        let amount = t["amount"].dec().expect("amount");
        *debits
            .entry(t["debit_account_id"].dec().unwrap())
            .or_default() += amount;
        *credits
            .entry(t["credit_account_id"].dec().unwrap())
            .or_default() += amount;
    }
    let mut per_ledger: BTreeMap<u64, (u64, u64)> = BTreeMap::new();
    for (&(id, _, limited), a) in ACCOUNTS.iter().zip(accounts.values()) {
        assert_eq!(a["id"].dec(), Some(id));
        let dp = a["debits_posted"].dec().unwrap();
        let cp = a["credits_posted"].dec().unwrap();
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
        assert_eq!(a["debits_pending"].dec(), Some(0), "node {node}: {a}");
        assert_eq!(a["credits_pending"].dec(), Some(0), "node {node}: {a}");
        if limited {
            assert!(dp <= cp, "node {node}: limited account {id} overdrawn: {a}");
        }
        let e = per_ledger.entry(a["ledger"].as_u64().unwrap()).or_default();
        e.0 += dp;
        e.1 += cp;
    }
    for (ledger, (d, c)) in per_ledger {
        assert_eq!(d, c, "node {node}: ledger {ledger} does not balance");
    }
}

/// Transfers or accounts by id, as a node answers them.
type ById = BTreeMap<u64, Value>;

/// The first key at which two maps differ, for a readable failure.
fn first_difference(a: &BTreeMap<u64, Value>, b: &BTreeMap<u64, Value>) -> String {
    let keys: BTreeSet<u64> = a.keys().chain(b.keys()).copied().collect();
    for k in keys {
        if a.get(&k) != b.get(&k) {
            return format!("id {k}: {:?} vs {:?}", a.get(&k), b.get(&k));
        }
    }
    "none".into()
}

// ---------------------------------------------------------------------------------------------
// 1. kill -9 of the leader under load, repeatedly.

const KILL_ROUNDS: usize = 10;
const CLIENTS: u64 = 4;
/// Attempts of one batch (the first and the retries) before the client gives up on it.
const ATTEMPTS: usize = 6;
/// Far more than any limited account ever holds: such a transfer is always refused.
const OVERDRAFT: u64 = 1_000_000_000_000;

/// One batch a client sent and what it finally heard.
struct Sent {
    transfers: Vec<Value>,
    /// The result words of the 200 answer, and on which attempt (0 = the first) it came; `None`
    /// if every attempt ended in 503 or a lost connection (the batch may or may not be applied).
    answer: Option<(Vec<String>, usize)>,
}

async fn client(
    client_id: u64,
    ports: Vec<u16>,
    stop: Arc<AtomicBool>,
    seed: u64,
) -> (Vec<Sent>, usize) {
    let https: Vec<Http> = ports.iter().map(|&p| Http::new(p)).collect();
    let mut rng = Rng::new(seed ^ client_id.wrapping_mul(0x9e37_79b9));
    let mut next_id = (client_id + 1) * 1_000_000_000;
    let mut sent = Vec::new();
    let mut last_commit = 0u64;
    let mut retries = 0usize;
    while !stop.load(Ordering::Relaxed) {
        let n = rng.range(1, 12) as usize;
        let mut transfers = Vec::with_capacity(n);
        for _ in 0..n {
            let ledger = if rng.chance(60) { 1 } else { 2 };
            let accounts = ledger_accounts(ledger);
            let debit = *rng.pick(&accounts);
            let mut credit = *rng.pick(&accounts);
            while credit == debit {
                credit = *rng.pick(&accounts);
            }
            let amount = if rng.chance(3) && ACCOUNTS.iter().any(|a| a.0 == debit && a.2) {
                OVERDRAFT
            } else {
                rng.range(1, 100)
            };
            transfers.push(transfer(next_id, debit, credit, amount, ledger));
            next_id += 1;
        }
        let body = serde_json::to_vec(&Value::Array(transfers.clone())).expect("encode");
        let mut answer = None;
        for attempt in 0..ATTEMPTS {
            if stop.load(Ordering::Relaxed) && attempt > 0 {
                break;
            }
            let http = rng.pick(&https);
            match http.try_post("/v1/transfers", body.clone()).await {
                Ok(r) if r.status == 200 => {
                    let commit: u64 = r
                        .header("bulwark-commit-index")
                        .expect("a write answers bulwark-commit-index")
                        .parse()
                        .expect("an integer commit index");
                    assert!(
                        commit > last_commit,
                        "client {client_id}: commit index {commit} after {last_commit}: a later \
                         write was given an earlier place in the log"
                    );
                    last_commit = commit;
                    answer = Some((r.results(), attempt));
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
                    assert!(r.header("retry-after").is_some(), "503 without Retry-After");
                }
                Ok(r) => panic!("client {client_id}: {} {}", r.status, r.text),
                Err(_) => {}
            }
            retries += 1;
            tokio::time::sleep(Duration::from_millis(rng.range(50, 300))).await;
        }
        sent.push(Sent { transfers, answer });
    }
    (sent, retries)
}

/// Waits until a running node other than `killed` reports itself leader; returns its id.
async fn wait_new_leader(cluster: &Cluster, killed: u64) -> u64 {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(leader) = cluster.current_leader().await {
            if leader != killed {
                return leader;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no new leader within {PATIENCE:?} after killing node {killed}\n{}",
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill9_the_leader_under_load_repeatedly() {
    let seed = common::seed(0xC1A5_7E12);
    println!("seed {seed} (BULWARK_TEST_SEED replays the client load)");
    let mut cluster = Cluster::start(3, &[]).await;
    let leader = cluster.wait_leader(PATIENCE).await;
    create_accounts(&cluster.node(leader).http).await;
    // Fund the limited accounts so that most of their transfers succeed.
    let mut funding = Vec::new();
    for &(id, ledger, limited) in &ACCOUNTS {
        if limited {
            let source = if ledger == 1 { 1 } else { 21 };
            funding.push(transfer(id, source, id, 10_000, ledger));
        }
    }
    let funding = Value::Array(funding);
    let results = common::write_until_answered(
        &cluster.node(leader).http,
        "/v1/transfers",
        &funding,
        PATIENCE,
    )
    .await
    .results();
    assert!(results.iter().all(|r| r == "ok"), "funding: {results:?}");

    let ports: Vec<u16> = cluster.nodes.iter().map(|n| n.http_port).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| tokio::spawn(client(c, ports.clone(), stop.clone(), seed)))
        .collect();

    let mut rng = Rng::new(seed);
    let mut probes: Vec<Value> = Vec::new();
    let mut failovers = Vec::new();
    for round in 0..KILL_ROUNDS {
        tokio::time::sleep(Duration::from_millis(rng.range(300, 1500))).await;
        let leader = cluster.wait_leader(PATIENCE).await;
        let killed_at = Instant::now();
        cluster.node_mut(leader).kill9();
        let new_leader = wait_new_leader(&cluster, leader).await;
        let elected = killed_at.elapsed();
        // A write through the new leader must succeed (retried while the election settles).
        let probe = transfer(9_000_000_000 + round as u64, 1, 2, 1, 1);
        let mut http_of = cluster.node(new_leader).http.clone();
        let deadline = Instant::now() + PATIENCE;
        loop {
            let body = serde_json::to_vec(&json!([probe])).expect("encode");
            match http_of.try_post("/v1/transfers", body).await {
                Ok(r) if r.status == 200 => {
                    let results = r.results();
                    assert!(
                        results[0] == "ok" || results[0] == "exists",
                        "probe: {results:?}"
                    );
                    break;
                }
                _ => {
                    assert!(
                        Instant::now() < deadline,
                        "no write succeeded within {PATIENCE:?} after killing node {leader}\n{}",
                        cluster.logs()
                    );
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    // The leader may have changed again: ask whoever leads now.
                    if let Some(l) = cluster.current_leader().await {
                        http_of = cluster.node(l).http.clone();
                    }
                }
            }
        }
        let written = killed_at.elapsed();
        probes.push(probe);
        println!(
            "round {round}: killed leader {leader}; node {new_leader} leader after {:.0} ms, \
             first write ok after {:.0} ms",
            elected.as_secs_f64() * 1000.0,
            written.as_secs_f64() * 1000.0
        );
        failovers.push((elected, written));
        cluster.node_mut(leader).restart().await;
    }
    stop.store(true, Ordering::Relaxed);
    let mut sent = Vec::new();
    let mut retries = 0;
    for c in clients {
        let (s, r) = c.await.expect("a client task panicked");
        sent.extend(s);
        retries += r;
    }
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let mut elected: Vec<f64> = failovers.iter().map(|f| ms(f.0)).collect();
    let mut written: Vec<f64> = failovers.iter().map(|f| ms(f.1)).collect();
    elected.sort_by(f64::total_cmp);
    written.sort_by(f64::total_cmp);
    println!(
        "failover over {KILL_ROUNDS} kills: new leader seen after min {:.0} / median {:.0} / max \
         {:.0} ms; first write ok after min {:.0} / median {:.0} / max {:.0} ms",
        elected[0],
        elected[elected.len() / 2],
        elected[elected.len() - 1],
        written[0],
        written[written.len() / 2],
        written[written.len() - 1],
    );

    // Classify what the clients heard.
    let mut acknowledged: BTreeMap<u64, Value> = BTreeMap::new();
    let mut refused: BTreeMap<u64, String> = BTreeMap::new();
    let mut sent_ids: BTreeSet<u64> = BTreeSet::new();
    let mut unknown_batches = 0;
    for s in &sent {
        for t in &s.transfers {
            sent_ids.insert(t["id"].dec().unwrap());
        }
        let Some((results, attempt)) = &s.answer else {
            unknown_batches += 1;
            continue;
        };
        assert_eq!(results.len(), s.transfers.len());
        for (t, r) in s.transfers.iter().zip(results) {
            let id = t["id"].dec().unwrap();
            match r.as_str() {
                "ok" => {
                    acknowledged.insert(id, t.clone());
                }
                "exists" => {
                    assert!(
                        *attempt > 0,
                        "transfer {id} answered `exists` on its first sending"
                    );
                    acknowledged.insert(id, t.clone());
                }
                word => {
                    assert_ne!(
                        word, "exists_with_different_fields",
                        "transfer {id}: a retry with the same fields"
                    );
                    if t["amount"].dec() == Some(OVERDRAFT) {
                        // A retry after a lost answer finds the refused id reserved.
                        let reserved = word == "id_already_failed" && *attempt > 0;
                        assert!(
                            word == "exceeds_credits" || reserved,
                            "transfer {id}: {word}"
                        );
                    }
                    refused.insert(id, word.to_string());
                }
            }
        }
    }
    for p in &probes {
        let id = p["id"].dec().unwrap();
        sent_ids.insert(id);
        acknowledged.insert(id, p.clone());
    }
    for t in funding.as_array().expect("a batch") {
        let id = t["id"].dec().unwrap();
        sent_ids.insert(id);
        acknowledged.insert(id, t.clone());
    }
    println!(
        "{} batches: {} transfers acknowledged, {} refused, {} batches without an answer, {} \
         retries",
        sent.len(),
        acknowledged.len(),
        refused.len(),
        unknown_batches,
        retries
    );
    assert!(
        acknowledged.len() > 100,
        "too little load got through to mean anything"
    );

    // All up and quiet: every node must hold the same ledger.
    for n in &mut cluster.nodes {
        n.assert_running();
    }
    cluster.wait_leader(PATIENCE).await;
    let index = cluster.wait_converged(PATIENCE).await;
    println!("converged at applied index {index}");
    let mut reference: Option<(u64, ById, ById)> = None;
    for n in &cluster.nodes {
        let transfers = all_transfers(&n.http).await;
        let accounts = all_accounts(&n.http).await;
        for (id, t) in &acknowledged {
            let got = transfers
                .get(id)
                .unwrap_or_else(|| panic!("node {}: acknowledged transfer {id} is missing", n.id));
            assert_eq!(
                transfer_fields(got),
                transfer_fields(t),
                "node {}: transfer {id} has other fields than were sent",
                n.id
            );
        }
        for (id, word) in &refused {
            assert!(
                !transfers.contains_key(id),
                "node {}: transfer {id} was refused ({word}) but is present",
                n.id
            );
        }
        for id in transfers.keys() {
            assert!(
                sent_ids.contains(id),
                "node {}: transfer {id} was never sent",
                n.id
            );
        }
        check_balances(n.id, &accounts, &transfers);
        // Single transfers by id, stale, on this node: a sample of the acknowledged ones and
        // of the refused ones.
        for (id, t) in acknowledged.iter().step_by(acknowledged.len() / 100 + 1) {
            let got = stale_get(&n.http, &format!("/v1/transfers/{id}"))
                .await
                .unwrap_or_else(|| panic!("node {}: GET transfer {id}: 404", n.id));
            assert_eq!(transfer_fields(&got), transfer_fields(t), "node {}", n.id);
            assert_eq!(
                &got, &transfers[id],
                "node {}: GET and history differ",
                n.id
            );
        }
        for id in refused.keys().step_by(refused.len() / 50 + 1) {
            assert!(
                stale_get(&n.http, &format!("/v1/transfers/{id}"))
                    .await
                    .is_none(),
                "node {}: refused transfer {id} present",
                n.id
            );
        }
        match &reference {
            None => reference = Some((n.id, transfers, accounts)),
            Some((first, ref_transfers, ref_accounts)) => {
                assert!(
                    &transfers == ref_transfers,
                    "nodes {first} and {} hold different transfers; first difference: {}",
                    n.id,
                    first_difference(ref_transfers, &transfers)
                );
                assert!(
                    &accounts == ref_accounts,
                    "nodes {first} and {} hold different accounts; first difference: {}",
                    n.id,
                    first_difference(ref_accounts, &accounts)
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 2. A node restarted after missing many writes catches up.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_restarted_after_missing_many_writes_catches_up() {
    let mut cluster = Cluster::start(3, &["--checkpoint-transfers", "500"]).await;
    let leader = cluster.wait_leader(PATIENCE).await;
    create_accounts(&cluster.node(leader).http).await;
    let behind = cluster
        .nodes
        .iter()
        .map(|n| n.id)
        .find(|&id| id != leader)
        .expect("a follower");
    let status = cluster.node_mut(behind).sigterm();
    assert!(status.success(), "node {behind} stopped with {status}");
    let up: Vec<Http> = cluster
        .nodes
        .iter()
        .filter(|n| n.id != behind)
        .map(|n| n.http.clone())
        .collect();

    let mut rng = Rng::new(common::seed(0x5EED_0002));
    let mut sent = BTreeMap::new();
    // Enough Raft entries that the leader compacts its log past the stopped node (it keeps 256
    // entries behind a checkpoint and checkpoints once the log passes 1024): catch-up by snapshot.
    let batches = 1_300;
    let per_batch = 3;
    for b in 0..batches {
        let mut batch = Vec::new();
        for i in 0..per_batch {
            let id = 1_000_000 + (b * per_batch + i) as u64;
            let ledger = if rng.chance(50) { 1 } else { 2 };
            // Only the unlimited accounts, so that every transfer is accepted.
            let (a, c) = if ledger == 1 { (1, 2) } else { (21, 22) };
            let (debit, credit) = if rng.chance(50) { (a, c) } else { (c, a) };
            let t = transfer(id, debit, credit, rng.range(1, 1000), ledger);
            sent.insert(id, t.clone());
            batch.push(t);
        }
        let http = &up[b % up.len()];
        let results =
            common::write_until_answered(http, "/v1/transfers", &Value::Array(batch), PATIENCE)
                .await
                .results();
        assert!(
            results.iter().all(|r| r == "ok" || r == "exists"),
            "batch {b}: {results:?}"
        );
    }
    let index_before = cluster.wait_converged(PATIENCE).await;
    let leader_status = cluster.node(leader).http.status().await;
    println!(
        "node {behind} missed {} transfers; the leader's log now holds indexes {}..={} (a first \
         index above the stopped node's applied index means catch-up by snapshot)",
        sent.len(),
        leader_status["log"]["first_index"],
        leader_status["log"]["last_index"]
    );

    let first_index = leader_status["log"]["first_index"].as_u64().unwrap_or(0);
    assert!(
        first_index > 10,
        "the leader's log was not compacted past the stopped node: {leader_status}"
    );

    cluster.node_mut(behind).restart().await;
    let index = cluster.wait_converged(Duration::from_secs(90)).await;
    assert!(index >= index_before);
    let node = cluster.node(behind);
    let status = node.http.status().await;
    assert_eq!(status["applied_index"].as_u64(), Some(index), "{status}");
    assert_ne!(status["role"], "leader");

    let caught_up = all_transfers(&node.http).await;
    assert_eq!(caught_up.len(), sent.len(), "node {behind}: transfer count");
    for (id, t) in &sent {
        let got = caught_up
            .get(id)
            .unwrap_or_else(|| panic!("node {behind}: transfer {id} missing"));
        assert_eq!(transfer_fields(got), transfer_fields(t), "transfer {id}");
    }
    let accounts = all_accounts(&node.http).await;
    check_balances(behind, &accounts, &caught_up);
    let others = all_accounts(&cluster.node(leader).http).await;
    assert!(
        accounts == others,
        "node {behind} and leader {leader} disagree: {}",
        first_difference(&others, &accounts)
    );
    let leader_transfers = all_transfers(&cluster.node(leader).http).await;
    assert!(
        caught_up == leader_transfers,
        "node {behind} and leader {leader} hold different transfers: {}",
        first_difference(&leader_transfers, &caught_up)
    );
    // The change feed of the node that caught up by snapshot is the leader's, event for event
    // and balance for balance: one event per transfer sent.
    let behind_feed = all_changes(&node.http).await;
    assert_eq!(behind_feed.len(), sent.len(), "node {behind}: change feed");
    assert!(
        behind_feed == all_changes(&cluster.node(leader).http).await,
        "node {behind} and leader {leader} give different change feeds"
    );
}

/// Every event of a node's change feed, in order.
async fn all_changes(http: &Http) -> Vec<Value> {
    let mut changes = Vec::new();
    let mut after = "0".to_string();
    loop {
        let r = http
            .get(&format!(
                "/v1/changes?after={after}&limit=8190&consistency=stale"
            ))
            .await;
        assert_eq!(r.status, 200, "{}", r.text);
        let page = r.json["changes"].as_array().expect("changes").clone();
        if page.is_empty() {
            return changes;
        }
        after = r.json["next_after"]
            .as_str()
            .expect("next_after")
            .to_string();
        changes.extend(page);
    }
}

// ---------------------------------------------------------------------------------------------
// 3. A minority cannot acknowledge a write.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn minority_partition_cannot_acknowledge() {
    let mut cluster = Cluster::start(3, &[]).await;
    let leader = cluster.wait_leader(PATIENCE).await;
    let http = cluster.node(leader).http.clone();
    create_accounts(&http).await;
    let first = transfer(100, 1, 2, 10, 1);
    let r = common::write_until_answered(&http, "/v1/transfers", &json!([first]), PATIENCE).await;
    assert_eq!(r.results(), ["ok"]);

    // The leader survives alone: the hardest case, as it may still take the write into its log.
    let survivor = leader;
    let others: Vec<u64> = cluster
        .nodes
        .iter()
        .map(|n| n.id)
        .filter(|&id| id != survivor)
        .collect();
    for &id in &others {
        cluster.node_mut(id).kill9();
    }
    let outage = transfer(200, 1, 2, 25, 1);
    let body = serde_json::to_vec(&json!([outage])).expect("encode");
    let started = Instant::now();
    let mut answers = Vec::new();
    while started.elapsed() < Duration::from_secs(5) {
        let left = Duration::from_secs(5).saturating_sub(started.elapsed());
        let attempt = tokio::time::timeout(
            left.max(Duration::from_millis(100)),
            http.try_post("/v1/transfers", body.clone()),
        )
        .await;
        match attempt {
            Err(_) => answers.push("no answer (timed out)".to_string()),
            Ok(Err(e)) => answers.push(format!("connection error: {e}")),
            Ok(Ok(r)) => {
                assert_ne!(
                    r.status, 200,
                    "a lone node out of three acknowledged a write: {}",
                    r.text
                );
                assert_eq!(r.status, 503, "{}", r.text);
                assert!(
                    matches!(
                        r.error(),
                        "no_leader"
                            | "not_leader"
                            | "write_dropped"
                            | "outcome_unknown"
                            | "starting"
                    ),
                    "{}",
                    r.text
                );
                answers.push(format!("503 {}", r.error()));
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    println!("the lone node answered the write: {answers:?}");
    // It must step down (check quorum).
    let deadline = Instant::now() + PATIENCE;
    loop {
        let status = cluster.node(survivor).http.status().await;
        if status["role"] != "leader" {
            println!(
                "the lone node now says: role {} leader {}",
                status["role"], status["leader_id"]
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "a lone node still calls itself leader after {PATIENCE:?}: {status}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Knowing no leader, it keeps a new write for `WRITE_LEADERLESS_TICKS`, then refuses it:
    // 503 no_leader with Retry-After.
    let refused = tokio::time::timeout(
        Duration::from_secs(20),
        http.try_post(
            "/v1/transfers",
            serde_json::to_vec(&json!([transfer(250, 1, 2, 1, 1)])).expect("encode"),
        ),
    )
    .await
    .expect("a node without a leader answers a write within 20 s")
    .expect("an answer");
    assert_eq!(refused.status, 503, "{}", refused.text);
    assert_eq!(refused.error(), "no_leader", "{}", refused.text);
    assert!(
        refused.header("retry-after").is_some(),
        "{:?}",
        refused.headers
    );

    for &id in &others {
        cluster.node_mut(id).restart().await;
    }
    cluster.wait_leader(PATIENCE).await;
    let after = transfer(300, 2, 1, 3, 1);
    let r = common::write_until_answered(&http, "/v1/transfers", &json!([after]), PATIENCE).await;
    assert_eq!(r.results(), ["ok"]);
    let retried =
        common::write_until_answered(&http, "/v1/transfers", &json!([outage]), PATIENCE).await;
    let word = &retried.results()[0];
    assert!(
        word == "ok" || word == "exists",
        "the retried outage write: {word}"
    );
    println!("the outage write, retried after the heal: {word}");

    cluster.wait_converged(PATIENCE).await;
    for n in &cluster.nodes {
        let transfers = all_transfers(&n.http).await;
        let ids: Vec<u64> = transfers.keys().copied().collect();
        assert_eq!(ids, [100, 200, 300], "node {}", n.id);
        assert_eq!(transfer_fields(&transfers[&200]), transfer_fields(&outage));
        let history = stale_get(&n.http, "/v1/accounts/1/transfers?limit=100")
            .await
            .expect("account 1");
        let count = history["transfers"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|t| t["id"] == "200")
            .count();
        assert_eq!(count, 1, "node {}: transfer 200 in the history", n.id);
        let accounts = all_accounts(&n.http).await;
        check_balances(n.id, &accounts, &transfers);
        assert_eq!(accounts[&1]["debits_posted"].dec(), Some(35));
        assert_eq!(accounts[&2]["credits_posted"].dec(), Some(35));
    }
}

/// A stale read is served from the node's own state, so it works without a leader.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_reads_are_served_without_a_leader() {
    let mut cluster = Cluster::start(3, &[]).await;
    let leader = cluster.wait_leader(PATIENCE).await;
    create_accounts(&cluster.node(leader).http).await;
    let r = common::write_until_answered(
        &cluster.node(leader).http,
        "/v1/transfers",
        &json!([transfer(100, 1, 2, 10, 1)]),
        PATIENCE,
    )
    .await;
    assert_eq!(r.results(), ["ok"]);
    cluster.wait_converged(PATIENCE).await;
    let survivor = cluster
        .nodes
        .iter()
        .map(|n| n.id)
        .find(|&id| id != leader)
        .unwrap();
    for id in [1, 2, 3] {
        if id != survivor {
            cluster.node_mut(id).kill9();
        }
    }
    let http = cluster.node(survivor).http.clone();
    // Until an election timeout passes, the survivor still names the old leader: wait until it
    // knows none, so that the reads below really are served without a leader.
    let deadline = Instant::now() + PATIENCE;
    loop {
        let status = http.status().await;
        if status["leader_id"].is_null() {
            assert_ne!(status["role"], "leader", "{status}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the survivor still names a leader after {PATIENCE:?}: {status}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A linearizable read needs a leader: refused, which shows there is none.
    let refused = http.get("/v1/accounts/1").await;
    assert_eq!(
        (refused.status, refused.error()),
        (503, "no_leader"),
        "a linearizable read without a leader: {}",
        refused.text
    );
    let r = tokio::time::timeout(
        Duration::from_secs(20),
        http.try_get("/v1/accounts/1?consistency=stale"),
    )
    .await
    .expect("a stale read answers within 20 s without a leader")
    .expect("a stale read gets an answer");
    assert_eq!(
        r.status, 200,
        "a stale read on a follower cut off from the others: {} {}",
        r.status, r.text
    );
    assert_eq!(r.json["debits_posted"].dec(), Some(10), "{}", r.text);
    assert!(r.header("bulwark-applied-index").is_some());
    let r = tokio::time::timeout(
        Duration::from_secs(20),
        http.try_get("/v1/transfers/100?consistency=stale"),
    )
    .await
    .expect("a stale read answers within 20 s without a leader")
    .expect("a stale read gets an answer");
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["amount"].dec(), Some(10), "{}", r.text);
    // Still no leader: both reads were served without one.
    let status = http.status().await;
    assert!(status["leader_id"].is_null(), "{status}");
}

// ---------------------------------------------------------------------------------------------
// 4. Followers forward writes; reads on every node see acknowledged writes.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn followers_forward_and_reads_are_linearizable() {
    let cluster = Cluster::start(3, &[]).await;
    let leader = cluster.wait_leader(PATIENCE).await;
    create_accounts(&cluster.node(leader).http).await;
    let mut id = 1_000;
    for round in 0..3 {
        for follower in cluster.nodes.iter().filter(|n| n.id != leader) {
            id += 1;
            let t = transfer(id, 1, 2, 7, 1);
            let r = common::write_until_answered(
                &follower.http,
                "/v1/transfers",
                &json!([t]),
                PATIENCE,
            )
            .await;
            assert_eq!(r.results(), ["ok"], "round {round}: {}", r.text);
            let forwarded_to = r
                .header("bulwark-forwarded-to")
                .expect("a write sent to a follower answers bulwark-forwarded-to");
            let now_leader = cluster.current_leader().await;
            assert!(
                forwarded_to == leader.to_string() || now_leader != Some(leader),
                "node {} forwarded to {forwarded_to}, but node {leader} leads",
                follower.id
            );
            let commit: u64 = r
                .header("bulwark-commit-index")
                .expect("a forwarded write answers bulwark-commit-index")
                .parse()
                .expect("integer");
            assert!(commit > 0);
            for n in &cluster.nodes {
                let r = n.http.get(&format!("/v1/transfers/{id}")).await;
                assert_eq!(
                    r.status, 200,
                    "node {}: a linearizable read right after the write: {}",
                    n.id, r.text
                );
                assert_eq!(transfer_fields(&r.json), transfer_fields(&t));
                let applied: u64 = r
                    .header("bulwark-applied-index")
                    .expect("a read answers bulwark-applied-index")
                    .parse()
                    .expect("integer");
                assert!(
                    applied >= commit,
                    "node {}: read at applied index {applied} < commit index {commit}",
                    n.id
                );
                let a = n.http.get("/v1/accounts/2").await;
                assert_eq!(a.status, 200, "{}", a.text);
                assert_eq!(
                    a.json["credits_posted"].dec(),
                    Some(7 * (id - 1_000)),
                    "node {}: account 2 after transfer {id}",
                    n.id
                );
            }
        }
    }
    // The leader itself answers without forwarding.
    let r = common::write_until_answered(
        &cluster.node(leader).http,
        "/v1/transfers",
        &json!([transfer(2_000, 2, 1, 1, 1)]),
        PATIENCE,
    )
    .await;
    assert_eq!(r.results(), ["ok"]);
    assert!(
        r.header("bulwark-forwarded-to").is_none(),
        "{:?}",
        r.headers
    );
}

/// Internal HTTP is on the peer port only, for certificates of the cluster's CA: a client gets
/// 404 for it on the client port, a `bulwark-forwarded` header a client sends changes nothing
/// (the follower still forwards), and a stranger on the peer port gets nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn internal_http_is_for_members_on_the_peer_port_only() {
    let cluster = Cluster::start(3, &[]).await;
    let leader = cluster.wait_leader(PATIENCE).await;
    create_accounts(&cluster.node(leader).http).await;
    for n in &cluster.nodes {
        let r = n.http.get("/internal/v1/snapshot").await;
        assert_eq!(
            (r.status, r.error()),
            (404, "not_found"),
            "node {}: {}",
            n.id,
            r.text
        );
    }
    let follower = cluster.nodes.iter().find(|n| n.id != leader).unwrap();
    let body = serde_json::to_vec(&json!([transfer(3_000, 1, 2, 5, 1)])).unwrap();
    let deadline = Instant::now() + PATIENCE;
    let r = loop {
        let sent =
            follower
                .http
                .try_post_with("/v1/transfers", body.clone(), ("bulwark-forwarded", "1"));
        match sent.await {
            Ok(r) if r.status == 200 => break r,
            other if Instant::now() > deadline => panic!("a forged header: {other:?}"),
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    };
    assert_eq!(r.results(), ["ok"], "{}", r.text);
    assert!(
        r.header("bulwark-forwarded-to").is_some(),
        "{:?}",
        r.headers
    );
    let applied = cluster.node(leader).http.get("/v1/transfers/3000").await;
    assert_eq!(applied.status, 200, "{}", applied.text);

    // The peer port: a member's certificate gets a snapshot; a certificate of the same CA for a
    // node that is not a member gets a 403; another CA's, nothing.
    let peer_addr: std::net::SocketAddr =
        format!("127.0.0.1:{}", follower.peer_port).parse().unwrap();
    let certs = tempfile::tempdir().unwrap();
    let id = bulwark_transport::NodeId(follower.id);
    let fetch = |tls: bulwark_tls::PeerTls| {
        let client = bulwark_transport::PeerHttpClient::new(tls, None, PATIENCE);
        async move {
            let request = http::Request::get("/internal/v1/snapshot")
                .body(http_body_util::Full::new(bytes::Bytes::new()))
                .unwrap();
            client
                .send(id, peer_addr.into(), request, PATIENCE)
                .await
                .map(|r| r.status().as_u16())
        }
    };
    let certificate = |node: u64| {
        let dir = certs.path().join(format!("node-{node}"));
        let node = bulwark_transport::NodeId(node);
        bulwark_tls::issue_node(&common::cluster_ca(), 1, node, &dir).unwrap();
        bulwark_tls::PeerTls::load(&dir, 1, node).unwrap()
    };
    assert_eq!(fetch(certificate(leader)).await.unwrap(), 200);
    assert_eq!(
        fetch(certificate(9)).await.unwrap(),
        403,
        "node 9 is no member"
    );
    let (foreign_ca, foreign) = (
        certs.path().join("foreign-ca"),
        certs.path().join("foreign"),
    );
    bulwark_tls::create_ca(&foreign_ca, 1).unwrap();
    bulwark_tls::issue_node(&foreign_ca, 1, bulwark_transport::NodeId(9), &foreign).unwrap();
    let foreign = bulwark_tls::PeerTls::load(&foreign, 1, bulwark_transport::NodeId(9)).unwrap();
    let refused = fetch(foreign).await;
    assert!(refused.is_err(), "another CA's certificate: {refused:?}");
    let plain = Http::with_base(format!("http://{peer_addr}"));
    let r = plain.try_get("/internal/v1/snapshot").await;
    assert!(r.is_err(), "plain HTTP on the peer port: {r:?}");
    // Both refusals are in the follower's own refusals log, with where they came from.
    let logged = bulwark_harness::wait_for(PATIENCE, Duration::from_millis(50), || async {
        let r = follower.http.get("/v1/audit/local?limit=1000").await;
        let records = r.json["records"].as_array().cloned().unwrap_or_default();
        let peers: Vec<_> = records
            .iter()
            .filter(|r| r["code"] == "peer_refused" && r["from"].is_string())
            .collect();
        (peers.len() >= 2).then_some(()).ok_or(r.text)
    })
    .await;
    logged.unwrap_or_else(|last| panic!("refused peers not in the refusals log: {last}"));
}

// ---------------------------------------------------------------------------------------------
// 5. Voter sets a cluster cannot run on are refused at start.

#[test]
fn even_or_oversized_voter_sets_are_refused() {
    for (voters, reason) in [
        (2u64, "odd number of voters"),
        (4, "odd number of voters"),
        (9, "at most 7"),
    ] {
        let members = cluster_members(voters);
        let args = member_args(1, &members);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let data = tempfile::tempdir().expect("tempdir");
        let (status, log) =
            common::start_expecting_exit(data.path(), &args, Duration::from_secs(30));
        let status = status.unwrap_or_else(|| {
            panic!("`bulwark start` with {voters} members kept running:\n{log}")
        });
        assert_eq!(
            status.code(),
            Some(5),
            "{voters} members: exit status {status}:\n{log}"
        );
        assert!(
            log.contains(reason) && log.contains(&format!("{voters} voters")),
            "{voters} members: the message does not name the reason ({reason}):\n{log}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 6. `bulwark cluster local`.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_local_starts_and_stops() {
    let data = tempfile::tempdir().expect("tempdir");
    let base = free_port_range(6);
    let (http_port, peer_port) = (base, base + 3);
    let out_path = data.path().join("local.out");
    let mut local = common::cluster_local(
        &data.path().join("cluster"),
        http_port,
        peer_port,
        &[],
        &out_path,
    );

    // `cluster local` makes the cluster's admin token beside the nodes' directories.
    let token_path = data.path().join("cluster").join("admin.token");
    let deadline = Instant::now() + PATIENCE;
    while !token_path.exists() {
        assert!(Instant::now() < deadline, "no {}", token_path.display());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let token = bulwark_token::read_file(&token_path).expect("the admin token");
    let https: Vec<Http> = (0..3)
        .map(|i| Http::with_token(format!("http://127.0.0.1:{}", http_port + i), Some(&token)))
        .collect();
    let leader = loop {
        let mut found = None;
        for h in &https {
            if let Ok(r) = h.try_get("/v1/status").await {
                if r.status == 200 && r.json["role"] == "leader" {
                    found = r.json["node_id"].as_u64();
                }
            }
        }
        if let Some(l) = found {
            break l;
        }
        if let Some(status) = local.0.as_mut().unwrap().try_wait().expect("try_wait") {
            panic!(
                "cluster local exited with {status}:\n{}",
                std::fs::read_to_string(&out_path).unwrap_or_default()
            );
        }
        assert!(
            Instant::now() < deadline,
            "no leader within {PATIENCE:?}:\n{}",
            std::fs::read_to_string(&out_path).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    println!("cluster local: node {leader} leads");
    // It serves: a write through any node.
    let results =
        common::write_until_answered(&https[2], "/v1/accounts", &accounts_body(), PATIENCE)
            .await
            .results();
    assert!(results.iter().all(|r| r == "ok"), "{results:?}");
    let (code, stdout, stderr) = common::cli_with_token(
        &[
            "cluster",
            "status",
            "--addr",
            &format!("http://127.0.0.1:{http_port}"),
        ],
        Some(&token),
    )
    .await;
    assert_eq!(code, 0, "cluster status: {stdout}{stderr}");
    assert!(stdout.contains(&format!("leader {leader}")), "{stdout}");

    let mut child = local.0.take().expect("running");
    // SAFETY: kill(2) on our own unreaped child.
    let rc = unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
    assert_eq!(rc, 0);
    let status = wait_exit(&mut child, PATIENCE).unwrap_or_else(|| {
        let _ = child.kill();
        let _ = child.wait();
        panic!("cluster local did not stop within {PATIENCE:?} of SIGINT");
    });
    let output = strip_ansi(&std::fs::read_to_string(&out_path).unwrap_or_default());
    assert!(status.success(), "cluster local exited {status}:\n{output}");
    assert!(output.contains("stopped"), "{output}");
    for id in 1..=3 {
        let log = strip_ansi(
            &std::fs::read_to_string(data.path().join(format!("cluster/node-{id}/node.log")))
                .unwrap_or_default(),
        );
        assert!(
            log.contains("stopped cleanly"),
            "node {id} did not stop gracefully:\n{log}"
        );
    }
    // Every child is gone: nothing answers, and every port can be bound again.
    for h in &https {
        assert!(!h.live().await, "{} still answers", h.base);
    }
    for port in (http_port..http_port + 3).chain(peer_port..peer_port + 3) {
        assert!(
            std::net::TcpListener::bind(("127.0.0.1", port)).is_ok(),
            "port {port} is still taken after cluster local stopped"
        );
    }
}
