//! A single node is a cluster of one voter: it grows into three with `bulwark cluster add` and
//! `promote` while it keeps its data and serves, and the three hold the same ledger after.

mod common;

use common::DecField;

use std::time::{Duration, Instant};

use common::{cli, free_port, ClusterNode, Node};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_node_grows_into_three_with_add_and_promote() {
    let peer_port = free_port();
    let peer_listen = format!("127.0.0.1:{peer_port}");
    let mut single = Node::start(&["--peer-listen", &peer_listen]).await;
    let accounts = json!([{"id": 1, "ledger": 1, "code": 1}, {"id": 2, "ledger": 1, "code": 1}]);
    assert_eq!(
        single.http.write("/v1/accounts", &accounts).await,
        ["ok", "ok"]
    );
    let before = json!([{"id": 10, "debit_account_id": 1, "credit_account_id": 2, "amount": 5,
                         "ledger": 1, "code": 1}]);
    assert_eq!(single.http.write("/v1/transfers", &before).await, ["ok"]);
    let status = single.http.status().await;
    assert_eq!(
        status["role"], "leader",
        "a single node leads itself: {status}"
    );
    let first = format!("1=127.0.0.1:{peer_port}=127.0.0.1:{}", single.port());
    let addr = single.base_url();

    let dirs = tempfile::tempdir().expect("tempdir");
    let mut joiners = Vec::new();
    for id in [2u64, 3] {
        let (peer, http) = (free_port(), free_port());
        let own = format!("{id}=127.0.0.1:{peer}=127.0.0.1:{http}");
        let args = [
            "--node-id",
            &id.to_string(),
            "--join",
            "--member",
            &first,
            "--member",
            &own,
        ]
        .map(String::from)
        .to_vec();
        let data = dirs.path().join(format!("node-{id}"));
        // Its certificate comes from the single node's CA, as the runbook says.
        let (ca, out) = (single.data_dir.join("tls"), data.join("tls"));
        let (ca, out) = (ca.to_str().unwrap(), out.to_str().unwrap());
        let issue = [
            "cert",
            "issue",
            "--ca",
            ca,
            "--node-id",
            &id.to_string(),
            "--out",
            out,
        ];
        let (code, stdout, err) = cli(&issue).await;
        assert_eq!(code, 0, "cert issue {id}: {stdout}{err}");
        let mut node = ClusterNode::unstarted(id, data, peer, http, args);
        node.restart().await;
        let (code, out, err) = cli(&[
            "cluster",
            "add",
            "--addr",
            &addr,
            "--id",
            &id.to_string(),
            "--peer-addr",
            &format!("127.0.0.1:{peer}"),
            "--http-addr",
            &format!("127.0.0.1:{http}"),
        ])
        .await;
        assert_eq!(code, 0, "cluster add {id}: {out}{err}");
        joiners.push(node);
    }
    let (code, out, err) = cli(&["cluster", "promote", "--addr", &addr, "--ids", "2,3"]).await;
    assert_eq!(code, 0, "cluster promote: {out}{err}");

    // A node added a moment ago learns the tokens as it catches up (its state comes from the
    // leader); until then it refuses them as unknown.
    for joiner in &joiners {
        let http = joiner.http.clone();
        bulwark_harness::wait_for(Duration::from_secs(30), Duration::from_millis(50), || {
            let http = http.clone();
            async move {
                let r = http.get("/v1/status").await;
                (r.status == 200).then_some(()).ok_or(r.text)
            }
        })
        .await
        .unwrap_or_else(|last| panic!("node {} never took the token: {last}", joiner.id));
    }

    // The three take writes through any of them and agree.
    let after = json!([{"id": 11, "debit_account_id": 1, "credit_account_id": 2, "amount": 7,
                        "ledger": 1, "code": 1}]);
    assert_eq!(joiners[1].http.write("/v1/transfers", &after).await, ["ok"]);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut credits = Vec::new();
        for http in [&single.http]
            .into_iter()
            .chain(joiners.iter().map(|n| &n.http))
        {
            let r = http.get("/v1/accounts/2?consistency=stale").await;
            credits.push(r.json["credits_posted"].dec());
        }
        if credits.iter().all(|c| *c == Some(12)) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the three do not agree: {credits:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let status = single.http.status().await;
    let voters = status["members"]
        .as_array()
        .expect("members")
        .iter()
        .filter(|m| m["role"] == "leader" || m["role"] == "follower")
        .count();
    assert_eq!(voters, 3, "three voters: {status}");

    // The first node restarts on its directory alone (no flags) as a member of the three.
    assert!(single.sigterm().success());
    single.restart().await;
    let status = single.http.status().await;
    assert_eq!(status["node_id"], 1, "{status}");
    assert_eq!(
        status["members"].as_array().map(Vec::len),
        Some(3),
        "{status}"
    );
}
