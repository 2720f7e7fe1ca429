//! Rotating a member's peer certificate as docs/operations.md says (`bulwark cert issue` again
//! for the node, from the same CA, then a restart) while a client keeps writing: the cluster
//! acknowledges every write throughout, and the node comes back with its new certificate and
//! catches up.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{cli, cluster_ca, Cluster, Http};
use serde_json::json;

/// What the writer saw: the transfer ids acknowledged, every refused or failed write, and the
/// longest time between two acknowledgements.
struct Writes {
    acknowledged: Vec<u64>,
    failed: Vec<String>,
    longest_gap: Duration,
}

/// Writes one transfer at a time to `leader` until `stop`.
async fn write_until(leader: Http, stop: Arc<AtomicBool>) -> Writes {
    let mut w = Writes {
        acknowledged: Vec::new(),
        failed: Vec::new(),
        longest_gap: Duration::ZERO,
    };
    let mut last = Instant::now();
    let mut id = 1000;
    while !stop.load(Ordering::Relaxed) {
        id += 1;
        let t = json!([{"id": id, "debit_account_id": 1, "credit_account_id": 2,
                        "amount": 1, "ledger": 1, "code": 1}]);
        match leader
            .try_post("/v1/transfers", t.to_string().into_bytes())
            .await
        {
            Ok(r) if r.status == 200 && r.results() == ["ok"] => {
                w.longest_gap = w.longest_gap.max(last.elapsed());
                last = Instant::now();
                w.acknowledged.push(id);
            }
            Ok(r) => w
                .failed
                .push(format!("transfer {id}: {} {}", r.status, r.text)),
            Err(e) => w.failed.push(format!("transfer {id}: {e}")),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    w
}

#[tokio::test]
async fn a_rotated_certificate_rejoins_without_refusing_a_write() {
    let mut cluster = Cluster::start(3, &[]).await;
    let leader = cluster.wait_leader(Duration::from_secs(30)).await;
    let http = cluster.node(leader).http.clone();
    let accounts = json!([{"id": 1, "ledger": 1, "code": 1}, {"id": 2, "ledger": 1, "code": 1}]);
    assert_eq!(http.write("/v1/accounts", &accounts).await, ["ok", "ok"]);
    // A follower: the leader stays, so not even an election may interrupt the writes.
    let rotated = (1..=3).find(|&id| id != leader).expect("a follower");
    let stop = Arc::new(AtomicBool::new(false));
    let writer = tokio::spawn(write_until(http.clone(), stop.clone()));
    tokio::time::sleep(Duration::from_secs(1)).await;

    let tls = cluster.node(rotated).data_dir.join("tls");
    let read = |name: &str| std::fs::read(tls.join(name)).expect("a certificate file");
    let (old_crt, old_key) = (read("node.crt"), read("node.key"));
    cluster.node_mut(rotated).sigterm();
    let (code, out, err) = cli(&[
        "cert",
        "issue",
        "--ca",
        cluster_ca().to_str().expect("a path"),
        "--node-id",
        &rotated.to_string(),
        "--out",
        tls.to_str().expect("a path"),
    ])
    .await;
    assert_eq!(code, 0, "cert issue: {out}{err}");
    let (new_crt, new_key) = (read("node.crt"), read("node.key"));
    assert_ne!(old_crt, new_crt, "the certificate was not replaced");
    assert_ne!(old_key, new_key, "the key was not replaced");
    tokio::time::sleep(Duration::from_secs(1)).await;
    cluster.node_mut(rotated).restart().await;

    // Converged: the rotated node applied what the leader committed, so its peers took its new
    // certificate.
    cluster.wait_converged(Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    let writes = writer.await.expect("the writer");
    assert!(
        writes.failed.is_empty(),
        "refused writes: {:?}",
        writes.failed
    );
    assert!(
        writes.acknowledged.len() > 20,
        "few writes: {}",
        writes.acknowledged.len()
    );
    // A bound, not a speed: a write waiting on an election or a stuck majority would take
    // seconds; two live voters answer in milliseconds.
    assert!(
        writes.longest_gap < Duration::from_secs(3),
        "a gap of {:?}",
        writes.longest_gap
    );
    cluster.wait_converged(Duration::from_secs(30)).await;
    // The rotated node caught up with every acknowledged write, over its new certificate.
    let back = &cluster.node(rotated).http;
    let held = common::all_transfers(back, &[1]).await;
    for id in &writes.acknowledged {
        assert!(held.contains_key(id), "node {rotated} lacks transfer {id}");
    }
}
