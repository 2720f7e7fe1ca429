//! Smoke runs of the benchmarks README.md offers, kept short: `bulwark bench` against a node of
//! the test (every transfer it reports sent is then in the node), and `bulwark bench-failover`
//! with one leader kill on its own cluster. They check that the commands work and report what
//! happened, not how fast: no number of theirs is asserted but counts.

mod common;

use common::Node;
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_sends_every_transfer_and_the_node_holds_them() {
    let node = Node::start(&[]).await;
    let id_base = 7_000_000u64;
    let token_file = common::test_token().0.display().to_string();
    let (code, out, err) = common::cli(&[
        "bench",
        "--addr",
        &node.base_url(),
        "--token-file",
        &token_file,
        "--accounts",
        "50",
        "--transfers",
        "2000",
        "--batch",
        "100",
        "--concurrency",
        "2",
        "--id-base",
        &id_base.to_string(),
        "--user-data",
        "--queries",
        "14",
        "--json",
    ])
    .await;
    assert_eq!(code, 0, "bench: {out}\n{err}");
    let report: Value = serde_json::from_str(out.trim()).expect("--json prints one JSON object");
    assert_eq!(report["transfers"], 2000, "{report}");
    assert_eq!(report["requests"], 20, "{report}");
    assert_eq!(report["failed_requests"], 0, "{report}");
    assert_eq!(report["not_ok_results"], 0, "{report}");
    // Then 14 query pages, two of each of the seven shapes (a refused query fails the bench).
    let queries = &report["queries"];
    assert_eq!(queries["all"]["count"], 14, "{report}");
    let shapes = queries["shapes"].as_object().expect("shapes");
    assert_eq!(shapes.len(), 7, "{report}");
    assert!(shapes.values().all(|s| s["count"] == 2), "{report}");
    // The load set the user data: transfer id_base + 1000 is the only one with it as its
    // user_data_128, and one of the 1000 of its user_data_64 group.
    let one = node
        .http
        .post(
            "/v1/transfers/query",
            &serde_json::json!({"user_data_128": (id_base + 1000).to_string()}),
        )
        .await;
    assert_eq!(
        one.json["transfers"][0]["id"],
        (id_base + 1000).to_string(),
        "{}",
        one.text
    );
    assert_eq!(
        one.json["transfers"].as_array().map(Vec::len),
        Some(1),
        "{}",
        one.text
    );
    let group = (id_base + 1000) / 1000;
    let members = node
        .http
        .post(
            "/v1/transfers/query",
            &serde_json::json!({"user_data_64": group.to_string(), "limit": 8190}),
        )
        .await;
    assert_eq!(
        members.json["transfers"].as_array().map(Vec::len),
        Some(1000),
        "{}",
        members.text
    );
    // The node holds what the report says was sent: 50 accounts, and as much debited as
    // credited over them, 2000 transfers' worth.
    let status = node.http.status().await;
    assert_eq!(status["accounts"], 50, "{status}");
    let accounts: Vec<u64> = (id_base + 1..=id_base + 50).collect();
    let held = common::all_transfers(&node.http, &accounts).await;
    assert_eq!(held.len(), 2000, "transfers held by the node");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_failover_measures_one_leader_kill() {
    let (code, out, err) = common::cli(&["bench-failover", "--kills", "1", "--json"]).await;
    assert_eq!(code, 0, "bench-failover: {out}\n{err}");
    let report: Value = serde_json::from_str(out.trim()).expect("--json prints one JSON object");
    assert_eq!(report["kills"], 1, "{report}");
    assert!(report["error"].is_null(), "{report}");
    let kill = &report["per_kill"][0];
    assert!(
        kill["new_leader"].as_u64().is_some() && kill["new_leader"] != kill["node"],
        "a new leader, not the killed node: {report}"
    );
    assert!(
        report["writes_ok"].as_u64().is_some_and(|n| n > 0),
        "{report}"
    );
}

/// A rolling restart under a writer that never retries: a stopping leader hands leadership over
/// and the writes that reach it or its followers meanwhile go to the new leader, so none fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_fails_no_write_on_its_first_try() {
    let args = ["bench-rolling", "--rounds", "1", "--pause", "1", "--json"];
    let (code, out, err) = common::cli(&args).await;
    assert_eq!(code, 0, "bench-rolling: {out}\n{err}");
    let report: Value = serde_json::from_str(out.trim()).expect("--json prints one JSON object");
    assert_eq!(report["restarts"], 3, "{report}");
    assert!(report["error"].is_null(), "{report}");
    let restarts = report["per_restart"].as_array().expect("per_restart");
    assert!(
        restarts.iter().any(|r| r["was_leader"] == true),
        "every node restarted, the leader among them: {report}"
    );
    assert!(
        report["writes_ok"].as_u64().is_some_and(|n| n > 0),
        "{report}"
    );
    assert_eq!(
        report["first_try_failures"], 0,
        "no write fails while nodes restart one by one: {report}"
    );
}
