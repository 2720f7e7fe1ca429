//! Payments to external accounts through a flaky processor, end to end: a 3-node cluster of real
//! processes relays to the stand-in processor (`bulwark-processor`, in this test's process)
//! while it fails 30 % of deliveries, answers slowly, loses answers (so keys are delivered
//! again), refuses some payments, goes down for two minutes, and the leader is frozen and
//! deposed. Then every payment must have ended posted or voided exactly once, in agreement with
//! what the processor did; the processor must have executed each key at most once and never
//! for a deposed leader's term; the breaker must have held deliveries back during the outage;
//! the dead-letter queue must hold exactly the refused and the exhausted payments; the ledger
//! must balance. A second test takes dead payments out of the queue by hand.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use bulwark_chaos::payments::PaymentEnd;
use bulwark_processor::{Config, Outcome, ProcessorHandle, Record};
use common::{cli, Cluster, Http};
use serde_json::{json, Value};

const PATIENCE: Duration = Duration::from_secs(60);
const PROCESSOR_ACCOUNT: u64 = 9;
const CUSTOMERS: [u64; 4] = [1, 2, 3, 4];
const MAX_ATTEMPTS: u32 = 4;
const BREAKER_FAILURES: u32 = 5;
const BREAKER_OPEN: Duration = Duration::from_secs(5);
const IN_FLIGHT: usize = 8;
const OUTAGE: Duration = Duration::from_secs(120);

fn relay_flags(url: &str) -> Vec<String> {
    let flags = [
        ("--processor", url.to_string()),
        ("--relay-timeout-ms", "500".into()),
        ("--relay-max-attempts", MAX_ATTEMPTS.to_string()),
        ("--relay-backoff-base-ms", "50".into()),
        ("--relay-backoff-max-ms", "1000".into()),
        ("--relay-max-in-flight", IN_FLIGHT.to_string()),
        ("--breaker-failures", BREAKER_FAILURES.to_string()),
        ("--breaker-window-ms", "30000".into()),
        ("--breaker-open-ms", BREAKER_OPEN.as_millis().to_string()),
    ];
    flags
        .into_iter()
        .flat_map(|(k, v)| [k.to_string(), v])
        .collect()
}

async fn start_cluster(n: u64, processor: &ProcessorHandle) -> Cluster {
    let flags = relay_flags(&processor.url());
    let extra: Vec<&str> = flags.iter().map(String::as_str).collect();
    let cluster = Cluster::start(n, &extra).await;
    let leader = cluster.wait_leader(PATIENCE).await;
    let mut accounts: Vec<Value> = CUSTOMERS
        .iter()
        .map(|&id| json!({"id": id, "ledger": 1, "code": 10}))
        .collect();
    accounts.push(json!({"id": PROCESSOR_ACCOUNT, "ledger": 1, "code": 20, "flags": ["external"]}));
    let results = common::write_until_answered(
        &cluster.node(leader).http,
        "/v1/accounts",
        &json!(accounts),
        PATIENCE,
    )
    .await
    .results();
    assert!(results.iter().all(|r| r == "ok"), "accounts: {results:?}");
    cluster
}

fn payment(id: u64) -> Value {
    json!({
        "id": id,
        "debit_account_id": CUSTOMERS[(id % 4) as usize],
        "credit_account_id": PROCESSOR_ACCOUNT,
        "amount": 1 + id % 97,
        "ledger": 1,
        "code": 7,
    })
}

/// Sends payments `ids` in batches of ten through `http`, each batch until answered; every
/// result must be `ok` (or `exists` for a batch resent after an indefinite answer).
async fn pay(http: &Http, ids: std::ops::Range<u64>, pause: Duration) {
    let ids: Vec<u64> = ids.collect();
    for batch in ids.chunks(10) {
        let body = Value::Array(batch.iter().map(|&id| payment(id)).collect());
        let r = common::write_until_answered(http, "/v1/transfers", &body, PATIENCE).await;
        let results = r.results();
        assert!(
            results.iter().all(|r| r == "ok" || r == "exists"),
            "payments {batch:?}: {results:?}"
        );
        tokio::time::sleep(pause).await;
    }
}

/// A node other than `paused` that answers as leader.
async fn leader_besides(cluster: &Cluster, paused: u64) -> u64 {
    let deadline = Instant::now() + PATIENCE;
    loop {
        for n in cluster.nodes.iter().filter(|n| n.id != paused) {
            if let Some(s) = n.try_status().await {
                if s["role"] == "leader" {
                    return n.id;
                }
            }
        }
        assert!(
            Instant::now() < deadline,
            "no new leader\n{}",
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until the leader's outbox holds no outbound payment; returns the leader.
async fn wait_settled(cluster: &Cluster, limit: Duration) -> u64 {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(leader) = cluster.current_leader().await {
            if let Some(s) = cluster.node(leader).try_status().await {
                if s["outbox"]["outbound"] == 0 {
                    return leader;
                }
            }
        }
        assert!(
            Instant::now() < deadline,
            "payments still outbound after {limit:?}\n{}",
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Every dead payment: id -> reason.
async fn dead_letters(http: &Http) -> BTreeMap<u64, String> {
    let mut dead = BTreeMap::new();
    let mut after = String::new();
    loop {
        let r = http.get(&format!("/v1/outbox/dead?limit=100{after}")).await;
        assert_eq!(r.status, 200, "{}", r.text);
        for p in r.json["payments"].as_array().expect("payments") {
            let id: u64 = p["payment_id"].as_str().unwrap().parse().unwrap();
            dead.insert(id, p["reason"].as_str().unwrap().to_string());
        }
        match r.json["next_after"].as_str() {
            Some(next) => after = format!("&after={next}"),
            None => return dead,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn payments_survive_a_flaky_processor_an_outage_and_a_deposed_leader() {
    let processor = bulwark_processor::start(
        "127.0.0.1:0".parse().unwrap(),
        Config {
            failure_rate: 0.3,
            refuse_rate: 0.05,
            slow_rate: 0.05,
            slow_ms: 1500,
            lost_answer_rate: 0.05,
            jitter_ms: 20,
            seed: 7,
            ..Config::default()
        },
    )
    .await
    .expect("start the processor");
    let mut cluster = start_cluster(3, &processor).await;
    let first = cluster.wait_leader(PATIENCE).await;
    let any = |c: &Cluster, not: u64| c.nodes.iter().find(|n| n.id != not).unwrap().http.clone();

    // Phase 1: payments while the leader is frozen (SIGSTOP) and replaced, then thawed: its
    // relay wakes in a term the processor has left behind.
    pay(&any(&cluster, first), 1..51, Duration::from_millis(50)).await;
    cluster.node_mut(first).pause();
    let second = leader_besides(&cluster, first).await;
    pay(
        &cluster.node(second).http,
        51..101,
        Duration::from_millis(50),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    cluster.node_mut(first).resume();

    // Phase 2: the processor is down for two minutes; payments keep coming and wait.
    processor.set_down(true);
    let down_since = processor.summary().deliveries;
    let outage = Instant::now();
    pay(&any(&cluster, 0), 101..201, Duration::from_millis(500)).await;
    tokio::time::sleep(OUTAGE.saturating_sub(outage.elapsed())).await;
    let down_records: Vec<Record> = processor
        .records()
        .into_iter()
        .filter(|r| r.seq >= down_since)
        .collect();
    processor.set_down(false);

    // Phase 3: it is back; more payments; everything settles.
    pay(&any(&cluster, 0), 201..301, Duration::from_millis(20)).await;
    let leader = wait_settled(&cluster, Duration::from_secs(180)).await;
    cluster.wait_converged(PATIENCE).await;
    let http = cluster.node(leader).http.clone();

    check_outage(&down_records, &cluster).await;
    check_outcomes(&http, &processor, 1..301).await;
    check_balanced(&http).await;
    let metrics = http.get("/metrics").await.text;
    assert!(
        metrics.contains("bulwark_relay_breaker_opened_total")
            && metrics.contains("bulwark_outbox_dead "),
        "relay metrics missing:\n{metrics}"
    );
    processor.shutdown().await;
}

/// While the processor was down, the breaker let through only what opens it (per leader, with
/// the deliveries already in flight) and a probe per `BREAKER_OPEN`.
async fn check_outage(down: &[Record], cluster: &Cluster) {
    let terms: BTreeSet<u64> = down.iter().filter_map(|r| r.term).collect();
    let refused_for_down = down.iter().filter(|r| r.outcome == Outcome::Down).count();
    let per_term = BREAKER_FAILURES as usize + IN_FLIGHT;
    let probes = (OUTAGE.as_secs() / BREAKER_OPEN.as_secs()) as usize + 1;
    let bound = per_term * terms.len().max(1) + probes * terms.len().max(1);
    println!("{refused_for_down} deliveries during the outage (terms {terms:?}, bound {bound})");
    assert!(
        refused_for_down > 0,
        "nothing was delivered during the outage"
    );
    assert!(
        refused_for_down <= bound,
        "{refused_for_down} deliveries reached a processor that was down (bound {bound}): the \
         breaker did not hold them\n{}",
        cluster.logs()
    );
}

/// Every payment ended as the processor's records say it must (the rules of `bulwark chaos
/// --payments`, `bulwark_chaos::payments::check`).
async fn check_outcomes(http: &Http, processor: &ProcessorHandle, ids: std::ops::Range<u64>) {
    let dead = dead_letters(http).await;
    let mut ends = Vec::new();
    for id in ids {
        let t = http
            .transfer(id)
            .await
            .unwrap_or_else(|| panic!("payment {id} is gone"));
        ends.push(PaymentEnd {
            id,
            status: t["pending_status"].as_str().unwrap_or("?").to_string(),
            dead: dead.get(&id).cloned(),
        });
    }
    let summary = processor.summary();
    let verdict = bulwark_chaos::payments::check(
        &ends,
        &processor.records(),
        MAX_ATTEMPTS,
        summary.executed_per_key_max,
    );
    println!("{:?}; {summary:?}", verdict.notes);
    assert!(verdict.ok, "{:#?}", verdict.violations);
    let count = |status: &str, dead: Option<&str>| {
        ends.iter()
            .filter(|e| e.status == status && e.dead.as_deref() == dead)
            .count()
    };
    assert!(
        count("posted", None) > 0 && count("voided", Some("refused")) > 0,
        "the run exercised too little: {:?}",
        verdict.notes
    );
}

async fn check_balanced(http: &Http) {
    let (mut debits, mut credits) = (0u128, 0u128);
    for id in CUSTOMERS.iter().chain([&PROCESSOR_ACCOUNT]) {
        let a = http.account(*id).await.expect("an account");
        let field = |name: &str| a[name].as_str().unwrap().parse::<u128>().unwrap();
        debits += field("debits_posted") + field("debits_pending");
        credits += field("credits_posted") + field("credits_pending");
        assert_eq!(
            field("debits_pending") + field("credits_pending"),
            0,
            "account {id} still reserves"
        );
    }
    assert_eq!(debits, credits, "the ledger does not balance");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_retries_or_discards_a_dead_payment() {
    let processor = bulwark_processor::start(
        "127.0.0.1:0".parse().unwrap(),
        Config {
            down: true,
            ..Config::default()
        },
    )
    .await
    .expect("start the processor");
    let cluster = start_cluster(1, &processor).await;
    let http = cluster.node(1).http.clone();
    pay(&http, 1..3, Duration::ZERO).await;
    // Down, and the breaker needs more failures than the retry limit: both are given up.
    let deadline = Instant::now() + PATIENCE;
    while dead_letters(&http).await.len() < 2 {
        assert!(
            Instant::now() < deadline,
            "nothing dead-lettered\n{}",
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    processor.set_down(false);
    let addr = cluster.node(1).base_url();
    let (code, out, err) = cli(&["dlq", "list", "--addr", &addr]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("payment 1 ") && out.contains("exhausted"),
        "{out}"
    );

    let writer = Http::with_token(addr.clone(), Some(&write_token(&addr).await));
    let r = writer.post("/v1/outbox/dead/1/retry", &json!(null)).await;
    assert_eq!(
        r.status, 403,
        "a write token retried a dead payment: {}",
        r.text
    );

    let (code, out, err) = cli(&["dlq", "retry", "1", "--addr", &addr]).await;
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = cli(&["dlq", "discard", "2", "--addr", &addr]).await;
    assert_eq!(code, 0, "{out}{err}");
    let (code, _, err) = cli(&["dlq", "discard", "2", "--addr", &addr]).await;
    assert_eq!(code, 3, "a second discard: {err}");
    wait_settled(&cluster, PATIENCE).await;
    assert!(dead_letters(&http).await.is_empty());
    // Payment 1 was reserved again and posted; payment 2's reservation stays voided.
    assert_eq!(processor.summary().executed_per_key_max, 1);
    assert!(processor.payment(1).is_some() && processor.payment(2).is_none());
    assert_eq!(
        http.account(PROCESSOR_ACCOUNT).await.unwrap()["credits_posted"],
        "2"
    );
    let audit = http.get("/v1/audit?limit=1000").await.json;
    let actions: Vec<&str> = audit["records"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["action"] == "dead_letter")
        .map(|r| r["detail"]["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions.len(), 3, "{actions:?}");
    assert!(
        actions[0].starts_with("retry of payment 1")
            && actions[1].starts_with("discard of payment 2"),
        "{actions:?}"
    );
    processor.shutdown().await;
}

async fn write_token(addr: &str) -> String {
    let (code, out, err) = cli(&[
        "token", "create", "--name", "writer", "--role", "write", "--json", "--addr", addr,
    ])
    .await;
    assert_eq!(code, 0, "{out}{err}");
    let v: Value = serde_json::from_str(out.trim()).expect("token JSON");
    v["token"].as_str().expect("the token's text").to_string()
}
