//! The external-payments workload of a chaos run (`bulwark chaos --payments`): a stand-in payment
//! processor in the harness's own process, flaky (failures, refusals, slow and lost answers) and
//! down for a fifth of the run, that every node relays to; a client paying a little every
//! moment through whichever node; and, once the cluster is healed and the outbox drained, the
//! check of every payment against what the processor recorded ([`check`], which
//! `crates/bulwark/tests/payments.rs` applies too).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bulwark_processor::{Config, Outage, Outcome, ProcessorHandle, Record};
use serde_json::json;

use crate::checker::Verdict;
use crate::client::Client;
use crate::history::Transfer;

/// The payments' own ledger, apart from the bank's: they leave it, so its total shrinks.
pub const LEDGER: u32 = 7;
pub const PAYER: u64 = 7001;
pub const PROCESSOR_ACCOUNT: u64 = 7009;
/// The relay's retry limit in a chaos run (short, so that some payments exhaust it).
pub const MAX_ATTEMPTS: u32 = 6;
/// Payment ids start here, far from the bank workload's.
const FIRST_ID: u64 = 1 << 40;

/// A flaky processor, down from 40 % to 60 % of the run.
pub async fn start_processor(seed: u64, duration: Duration) -> anyhow::Result<ProcessorHandle> {
    let config = Config {
        failure_rate: 0.2,
        refuse_rate: 0.05,
        slow_rate: 0.05,
        slow_ms: 1500,
        lost_answer_rate: 0.05,
        jitter_ms: 20,
        seed,
        outages: vec![Outage {
            start: duration.mul_f64(0.4),
            duration: duration.mul_f64(0.2),
        }],
        ..Config::default()
    };
    let listen = "127.0.0.1:0".parse().expect("an address");
    Ok(bulwark_processor::start(listen, config).await?)
}

/// Each node's relay settings: short timeouts and backoff, so that a run sees retries, a breaker
/// and exhausted payments.
pub fn relay_args(url: &str) -> Vec<String> {
    [
        ("--processor", url.to_string()),
        ("--relay-timeout-ms", "500".into()),
        ("--relay-max-attempts", MAX_ATTEMPTS.to_string()),
        ("--relay-backoff-base-ms", "50".into()),
        ("--relay-backoff-max-ms", "2000".into()),
        ("--breaker-open-ms", "3000".into()),
    ]
    .into_iter()
    .flat_map(|(k, v)| [k.to_string(), v])
    .collect()
}

/// The payer's and the processor's accounts (retried until some node takes them).
pub async fn setup(client: &Client, nodes: &[SocketAddr], deadline: Instant) -> anyhow::Result<()> {
    let body = json!([
        {"id": PAYER, "ledger": LEDGER, "code": 1},
        {"id": PROCESSOR_ACCOUNT, "ledger": LEDGER, "code": 2, "flags": ["external"]},
    ]);
    for attempt in 0.. {
        let answer = client.accounts(nodes[attempt % nodes.len()], &body).await;
        let created = answer.body["results"].as_array().is_some_and(|r| {
            r.iter()
                .all(|e| matches!(e["result"].as_str(), Some("ok" | "exists")))
        });
        if created {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "could not create the payment accounts: {:?}",
            answer.error
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    unreachable!("the loop returns or fails")
}

/// Pays one small amount every `every` through the nodes in turn until `stop`; returns how
/// many payment ids it used (each may or may not have been applied).
pub async fn pay(
    client: Client,
    nodes: Vec<SocketAddr>,
    stop: Arc<AtomicBool>,
    every: Duration,
    sent: Arc<AtomicU64>,
) {
    let mut turn = 0usize;
    while !stop.load(Ordering::Relaxed) {
        let id = FIRST_ID + sent.fetch_add(1, Ordering::Relaxed);
        let payment = Transfer {
            id,
            debit: PAYER,
            credit: PROCESSOR_ACCOUNT,
            amount: 1 + id % 50,
            ledger: LEDGER,
            flags: Vec::new(),
            pending_id: 0,
            timeout: 0,
            timestamp: 0,
        };
        let _ = client
            .transfers(nodes[turn % nodes.len()], &[payment])
            .await;
        turn += 1;
        tokio::time::sleep(every).await;
    }
}

/// How a payment ended in the ledger: its `pending_status`, and its dead-letter reason if any.
#[derive(Clone, Debug)]
pub struct PaymentEnd {
    pub id: u64,
    pub status: String,
    pub dead: Option<String>,
}

/// Every rule a payment's end must meet against the processor's records: posted only if the
/// processor made it, and then never refused; voided only as a dead letter, `refused` if the
/// processor refused it and `exhausted` after at least `max_attempts` failed deliveries; no key
/// executed twice; no delivery executed for a term below one the processor had accepted.
pub fn check(
    ends: &[PaymentEnd],
    records: &[Record],
    max_attempts: u32,
    executed_per_key_max: u32,
) -> Verdict {
    let mut violations = Vec::new();
    if executed_per_key_max > 1 {
        violations.push(format!("a key was executed {executed_per_key_max} times"));
    }
    violations.extend(fencing_violations(records));
    let mut by_key: BTreeMap<u64, Vec<&Record>> = BTreeMap::new();
    for r in records {
        if let Some(id) = r.payment_id.and_then(|id| u64::try_from(id).ok()) {
            by_key.entry(id).or_default().push(r);
        }
    }
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for end in ends {
        let seen = by_key.get(&end.id).map(Vec::as_slice).unwrap_or(&[]);
        if let Some(v) = end_violation(end, seen, max_attempts) {
            violations.push(v);
        }
        let kind = format!("{} {}", end.status, end.dead.as_deref().unwrap_or(""));
        *counts.entry(kind.trim().to_string()).or_default() += 1;
    }
    Verdict {
        property: "payments",
        ok: violations.is_empty(),
        notes: vec![format!("{} payments: {counts:?}", ends.len())],
        violations: violations.into_iter().take(20).collect(),
    }
}

fn end_violation(end: &PaymentEnd, seen: &[&Record], max_attempts: u32) -> Option<String> {
    let executed = seen.iter().any(|r| {
        matches!(
            r.outcome,
            Outcome::Confirmed | Outcome::LostAnswer | Outcome::Slow
        )
    });
    let refused = seen.iter().any(|r| r.outcome == Outcome::Refused);
    let failed = seen
        .iter()
        .filter(|r| {
            matches!(
                r.outcome,
                Outcome::Failed | Outcome::Down | Outcome::LostAnswer | Outcome::Slow
            )
        })
        .count();
    let id = end.id;
    match (end.status.as_str(), end.dead.as_deref()) {
        ("posted", None) if executed && !refused => None,
        ("posted", None) => Some(format!(
            "payment {id} posted, but the processor {}",
            if refused {
                "refused it"
            } else {
                "never made it"
            }
        )),
        ("voided", Some("refused")) if refused => None,
        ("voided", Some("exhausted")) if failed >= max_attempts as usize && !refused => None,
        (status, dead) => Some(format!(
            "payment {id} ended {status} (dead: {dead:?}) after {} deliveries: {:?}",
            seen.len(),
            seen.iter().map(|r| r.outcome).collect::<Vec<_>>()
        )),
    }
}

/// Deliveries the processor executed or decided on, in arrival order, must never go back to a
/// lower term (a deposed leader's).
fn fencing_violations(records: &[Record]) -> Vec<String> {
    let mut highest = 0;
    let mut violations = Vec::new();
    for r in records {
        let Some(term) = r.term else { continue };
        match r.outcome {
            Outcome::StaleTerm => {
                if term >= highest {
                    violations.push(format!(
                        "delivery {} refused as stale at term {term} (highest {highest})",
                        r.seq
                    ));
                }
            }
            Outcome::Down | Outcome::BadRequest | Outcome::Unauthorized => {}
            _ => {
                if term < highest {
                    violations.push(format!(
                        "delivery {} accepted at term {term} after term {highest}",
                        r.seq
                    ));
                }
                highest = term;
            }
        }
    }
    violations
}

/// Waits until some node leads with an empty outbox, then reads how each payment id used
/// ended (ids never applied are left out). `Err` says what kept it from that.
pub async fn ends(
    client: &Client,
    nodes: &[SocketAddr],
    sent: u64,
    limit: Duration,
) -> Result<Vec<PaymentEnd>, String> {
    let node = drained_leader(client, nodes, limit).await?;
    let dead = dead_letters(client, node).await?;
    let mut ends = Vec::new();
    for id in (FIRST_ID..FIRST_ID + sent).map(|i| i as u128) {
        let answer = client.get(node, &format!("/v1/transfers/{id}")).await;
        match answer.status {
            Some(404) => continue,
            Some(200) => {}
            other => {
                return Err(format!(
                    "reading payment {id}: {other:?} {:?}",
                    answer.error
                ))
            }
        }
        let id = id as u64;
        ends.push(PaymentEnd {
            id,
            status: answer.body["pending_status"]
                .as_str()
                .unwrap_or("?")
                .to_string(),
            dead: dead.get(&id).cloned(),
        });
    }
    Ok(ends)
}

async fn drained_leader(
    client: &Client,
    nodes: &[SocketAddr],
    limit: Duration,
) -> Result<SocketAddr, String> {
    let deadline = Instant::now() + limit;
    let mut last = String::from("no answer");
    while Instant::now() < deadline {
        for &node in nodes {
            let s = client.get(node, "/v1/status").await.body;
            if s["role"] == "leader" {
                if s["outbox"]["outbound"] == 0 {
                    return Ok(node);
                }
                last = format!("the leader's outbox: {}", s["outbox"]);
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Err(format!("payments still outbound after {limit:?} ({last})"))
}

async fn dead_letters(client: &Client, node: SocketAddr) -> Result<BTreeMap<u64, String>, String> {
    let mut dead = BTreeMap::new();
    let mut after = String::new();
    loop {
        let answer = client
            .get(node, &format!("/v1/outbox/dead?limit=1000{after}"))
            .await;
        let payments = answer.body["payments"]
            .as_array()
            .ok_or_else(|| format!("the dead-letter queue: {:?}", answer.error))?;
        for p in payments {
            let id = p["payment_id"]
                .as_str()
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            dead.insert(id, p["reason"].as_str().unwrap_or("?").to_string());
        }
        match answer.body["next_after"].as_str() {
            Some(next) => after = format!("&after={next}"),
            None => return Ok(dead),
        }
    }
}

/// The whole check of a run's payments, as a verdict (a violation if they could not be read).
pub async fn verdict(
    client: &Client,
    nodes: &[SocketAddr],
    processor: &ProcessorHandle,
    sent: u64,
) -> Verdict {
    match ends(client, nodes, sent, Duration::from_secs(120)).await {
        Ok(ends) => {
            let summary = processor.summary();
            check(
                &ends,
                &processor.records(),
                MAX_ATTEMPTS,
                summary.executed_per_key_max,
            )
        }
        Err(why) => Verdict {
            property: "payments",
            ok: false,
            violations: vec![why],
            notes: Vec::new(),
        },
    }
}
