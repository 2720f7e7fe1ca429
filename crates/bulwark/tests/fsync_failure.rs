//! A failed fsync stops the node, for real: the data directory is on a file system whose device
//! fails its writes on demand (`bulwark_tmpfs::LoopDisk`: a `write` still lands in the page
//! cache, the `fdatasync` that should make it durable fails, as on a dying disk). The node must
//! not answer the write as done, must stop on its own with exit code 5 naming the failed sync,
//! and, after a power cut, start again with every write it did acknowledge (root only, as CI).

mod common;

use std::time::Duration;

use common::Node;
use serde_json::json;

#[tokio::test]
async fn a_failed_fsync_stops_the_node_and_loses_nothing_acknowledged() {
    let mut disk = bulwark_tmpfs::LoopDisk::new("bulwark-fsync-failure")
        .expect("a loop disk (needs root and loop devices, as CI has)");
    let data = disk.path().join("node");
    let mut node = Node::unstarted(data, &[]);
    node.restart().await;
    let accounts = json!([{"id": 1, "ledger": 1, "code": 1}, {"id": 2, "ledger": 1, "code": 1}]);
    assert_eq!(
        node.http.write("/v1/accounts", &accounts).await,
        ["ok", "ok"]
    );

    disk.fail_writes().expect("fill the disk under the device");
    // Batches until one needs new blocks on the device: the log's zero-filled stretch (1 MiB)
    // is already on the device, and a rewrite of blocks it holds still succeeds there, durably.
    // Whatever is acknowledged must survive; the first write whose fsync fails must not be.
    let mut acknowledged = Vec::new();
    let mut failed = None;
    for batch in 0..40u64 {
        let ids: Vec<u64> = (batch * 2000 + 1..=batch * 2000 + 2000).collect();
        let transfers: Vec<_> = ids
            .iter()
            .map(|&id| {
                json!({"id": id, "debit_account_id": 1, "credit_account_id": 2,
                "amount": 5, "ledger": 1, "code": 1, "user_data_64": u64::MAX - id})
            })
            .collect();
        let answer = node
            .http
            .try_post("/v1/transfers", serde_json::to_vec(&transfers).unwrap())
            .await;
        match answer {
            Ok(r) if r.status == 200 => {
                assert_eq!(r.results(), vec!["ok"; ids.len()]);
                acknowledged.push((ids[0], ids[ids.len() - 1]));
            }
            other => {
                failed = Some(other);
                break;
            }
        }
    }
    // No answer (the node stopped first), or a 503 saying the loop stopped or the outcome is
    // unknown: never done, and never refused as an invalid request.
    let answer = failed.expect("40 batches of 2,000 transfers, and no fsync failed");
    if let Ok(r) = &answer {
        assert!(
            r.status == 503 && ["unavailable", "outcome_unknown"].contains(&r.error()),
            "a write whose fsync failed: {} {}\n{}",
            r.status,
            r.text,
            node.last_log()
        );
    }
    let status = node.wait_exit(Duration::from_secs(30)).unwrap_or_else(|| {
        panic!(
            "the node kept running after its fsync failed:\n{}",
            node.last_log()
        )
    });
    let log = node.last_log();
    assert_eq!(status.code(), Some(5), "{log}");
    assert!(
        log.contains("fdatasync"),
        "the log names the failed sync:\n{log}"
    );

    disk.heal_writes().expect("free the disk under the device");
    disk.power_cut().expect("power cut");
    node.restart().await;
    for id in [1, 2] {
        assert!(
            node.http.account(id).await.is_some(),
            "account {id} was acknowledged"
        );
    }
    for (first, last) in acknowledged {
        for id in [first, last] {
            assert!(
                node.http.transfer(id).await.is_some(),
                "transfer {id} was acknowledged"
            );
        }
    }
    node.sigterm();
}
