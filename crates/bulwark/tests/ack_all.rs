//! `?ack=all` against real processes: when the leader answers, every follower its status still
//! calls in sync holds the write in its own log, read from that follower's write-ahead log
//! files right after the answer (not from the leader's view of it). A frozen follower
//! (SIGSTOP) holds nothing new: it leaves the in-sync set, and the write is answered without it
//! rather than waiting for the 5 s timeout (ARCHITECTURE.md: a dead follower leaves the in-sync
//! set before an `ack=all` write times out).

mod common;

use common::DecField;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{Cluster, Http, Resp};
use serde_json::{json, Value};

const PATIENCE: Duration = Duration::from_secs(60);

/// Transfer ids whose little-endian bytes do not occur by chance in a log record.
const MARK: u64 = 0x0ac4_a11d_0000_0000;

fn transfer(id: u64) -> Value {
    json!({"id": id, "debit_account_id": 1, "credit_account_id": 2, "amount": 1, "ledger": 1,
           "code": 1})
}

/// True if a record of the write-ahead log in `raft_dir` carries transfer `id` (its
/// little-endian bytes, as the batch codec writes it).
fn log_holds(raft_dir: &Path, id: u64) -> bool {
    let needle = id.to_le_bytes();
    common::wal_segments(raft_dir).iter().any(|segment| {
        let bytes = std::fs::read(segment).expect("read a segment");
        common::wal_records(segment).iter().any(|r| {
            let end = (r.end() as usize).min(bytes.len());
            bytes[r.offset as usize + 16..end]
                .windows(8)
                .any(|w| w == needle)
        })
    })
}

/// The followers the leader's status calls in sync.
fn in_sync_followers(status: &Value, leader: u64) -> Vec<u64> {
    status["members"]
        .as_array()
        .expect("members")
        .iter()
        .filter(|m| m["in_sync"] == true && m["id"] != leader)
        .map(|m| m["id"].dec().expect("id"))
        .collect()
}

/// Writes transfer `id` with `?ack=all` through `http`, which must answer 200 `ok`; then reads
/// the leader's in-sync set and asserts that each of those followers' own log holds it. Returns
/// the in-sync followers.
async fn write_and_check(cluster: &Cluster, leader: u64, http: &Http, id: u64) -> Vec<u64> {
    let r: Resp = common::post_until_answered(
        http,
        "/v1/transfers?ack=all",
        &json!([transfer(id)]),
        PATIENCE,
    )
    .await;
    assert_eq!(r.status, 200, "an ack=all write: {}", r.text);
    assert_eq!(r.results(), ["ok"]);
    let status = cluster.node(leader).http.status().await;
    assert_eq!(status["role"], "leader", "{status}");
    let in_sync = in_sync_followers(&status, leader);
    for &f in &in_sync {
        let dir = cluster.node(f).data_dir.join("raft");
        assert!(
            log_holds(&dir, id),
            "transfer {id} was answered with ack=all, but follower {f}, in sync, does not hold \
             it: {status}"
        );
    }
    in_sync
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ack_all_answer_means_every_in_sync_follower_holds_the_write() {
    let mut cluster = Cluster::start(3, &[]).await;
    let leader = cluster.wait_leader(PATIENCE).await;
    let http = cluster.node(leader).http.clone();
    common::write_until_answered(
        &http,
        "/v1/accounts",
        &json!([{"id": 1, "ledger": 1, "code": 1}, {"id": 2, "ledger": 1, "code": 1}]),
        PATIENCE,
    )
    .await;
    let followers: Vec<u64> = [1, 2, 3].into_iter().filter(|&id| id != leader).collect();
    // Every follower in sync first, so that the checks below cover both.
    let deadline = Instant::now() + PATIENCE;
    while in_sync_followers(&http.status().await, leader) != followers {
        assert!(Instant::now() < deadline, "the followers never got in sync");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Healthy: through the leader, and through a follower (forwarded with its ack=all).
    for round in 0..4 {
        let via = if round % 2 == 0 { leader } else { followers[0] };
        let via = cluster.node(via).http.clone();
        write_and_check(&cluster, leader, &via, MARK + round).await;
    }

    // A follower frozen: the write is answered once it left the in-sync set, and then it does
    // not hold the write (the check above would see that).
    let frozen = followers[1];
    cluster.node_mut(frozen).pause();
    let id = MARK + 100;
    let in_sync = write_and_check(&cluster, leader, &http, id).await;
    assert!(
        !in_sync.contains(&frozen),
        "a frozen follower stays in sync: {in_sync:?}"
    );
    let frozen_log = cluster.node(frozen).data_dir.join("raft");
    assert!(!log_holds(&frozen_log, id), "a frozen follower wrote {id}");

    // Back: it catches up and holds it.
    cluster.node_mut(frozen).resume();
    let deadline = Instant::now() + PATIENCE;
    while !log_holds(&frozen_log, id) {
        assert!(
            Instant::now() < deadline,
            "the thawed follower never got {id}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
