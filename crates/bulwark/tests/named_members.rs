//! Members named by DNS name, as a Kubernetes StatefulSet's pods are (`bulwark-0.bulwark-peers.
//! <namespace>.svc.cluster.local`) and compose services are: here `localhost:PORT`, which every
//! node resolves again at each connect. The cluster forms, a follower forwards writes to the
//! leader by name, the status and the address book keep the names, a member killed and
//! restarted comes back through them, and a learner added by name catches up.

mod common;

use std::time::Duration;

use common::{write_until_answered, Cluster, ClusterNode};
use serde_json::{json, Value};

const PATIENCE: Duration = Duration::from_secs(60);

fn transfer(id: u64) -> Value {
    json!({"id": id, "debit_account_id": 1, "credit_account_id": 2, "amount": 5, "ledger": 1, "code": 1})
}

/// Waits until node `node` has transfer `id` in its own copy (a stale read: no leader asked).
async fn wait_replicated(node: &ClusterNode, id: u64) {
    let deadline = std::time::Instant::now() + PATIENCE;
    let path = format!("/v1/transfers/{id}?consistency=stale");
    // 404 until it has it; 503 while a restarted node is still starting.
    while !matches!(node.http.try_get(&path).await, Ok(r) if r.status == 200) {
        assert!(
            std::time::Instant::now() < deadline,
            "node {} never got transfer {id}:\n{}",
            node.id,
            node.log_tail(40)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_of_named_members_forms_forwards_and_comes_back() {
    let mut cluster = Cluster::start_named(3).await;
    let leader = cluster.wait_leader(PATIENCE).await;
    let accounts = json!([{"id": 1, "ledger": 1, "code": 10}, {"id": 2, "ledger": 1, "code": 10}]);
    let r = write_until_answered(
        &cluster.node(leader).http,
        "/v1/accounts",
        &accounts,
        PATIENCE,
    )
    .await;
    assert_eq!(r.results(), ["ok", "ok"], "{}", r.text);

    // A follower forwards to the leader over internal HTTP, dialing the leader's name.
    let follower = cluster.nodes.iter().find(|n| n.id != leader).unwrap().id;
    let r = write_until_answered(
        &cluster.node(follower).http,
        "/v1/transfers",
        &json!([transfer(10)]),
        PATIENCE,
    )
    .await;
    assert_eq!(r.results(), ["ok"], "{}", r.text);
    assert!(
        r.header("bulwark-forwarded-to").is_some(),
        "{:?}",
        r.headers
    );

    // The status and the address book on disk keep the names.
    let status = cluster.node(leader).http.status().await;
    for n in &cluster.nodes {
        let listed = status["members"]
            .as_array()
            .and_then(|ms| ms.iter().find(|m| m["id"] == n.id))
            .unwrap_or_else(|| panic!("node {} not in {status}", n.id));
        assert_eq!(listed["http_addr"], format!("localhost:{}", n.http_port));
        let book = std::fs::read_to_string(n.data_dir.join("members")).unwrap();
        assert!(
            book.contains(&format!(
                "{}=localhost:{}=localhost:{}",
                n.id, n.peer_port, n.http_port
            )),
            "node {}'s address book: {book}",
            n.id
        );
    }

    // A member killed and restarted is reached through its name again, and catches up.
    let index = cluster.nodes.iter().position(|n| n.id == follower).unwrap();
    cluster.nodes[index].kill9();
    let r = write_until_answered(
        &cluster.node(leader).http,
        "/v1/transfers",
        &json!([transfer(11)]),
        PATIENCE,
    )
    .await;
    assert_eq!(r.results(), ["ok"], "{}", r.text);
    cluster.nodes[index].restart().await;
    wait_replicated(&cluster.nodes[index], 11).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_learner_added_by_name_catches_up() {
    let mut cluster = Cluster::start_named(3).await;
    let leader = cluster.wait_leader(PATIENCE).await;
    let accounts = json!([{"id": 1, "ledger": 1, "code": 10}, {"id": 2, "ledger": 1, "code": 10}]);
    let r = write_until_answered(
        &cluster.node(leader).http,
        "/v1/accounts",
        &accounts,
        PATIENCE,
    )
    .await;
    assert_eq!(r.results(), ["ok", "ok"], "{}", r.text);
    let r = write_until_answered(
        &cluster.node(leader).http,
        "/v1/transfers",
        &json!([transfer(20)]),
        PATIENCE,
    )
    .await;
    assert_eq!(r.results(), ["ok"], "{}", r.text);

    // Node 4 joins, knowing every member (itself too) by name only.
    let base = common::free_port_range(2);
    let (peer, http) = (base, base + 1);
    let named = |id: u64, peer: u16, http: u16| format!("{id}=localhost:{peer}=localhost:{http}");
    let mut args = vec![
        "--join".to_string(),
        "--node-id".into(),
        "4".into(),
        "--peer-listen".into(),
        format!("127.0.0.1:{peer}"),
    ];
    for n in &cluster.nodes {
        args.extend(["--member".into(), named(n.id, n.peer_port, n.http_port)]);
    }
    args.extend(["--member".into(), named(4, peer, http)]);
    let data_dir = cluster.nodes[0].data_dir.parent().unwrap().join("node-4");
    let mut joining = ClusterNode::unstarted(4, data_dir, peer, http, args);
    joining.restart().await;

    // Added by name through the API: the membership entry carries the names to every member.
    let body = json!({"id": 4, "peer_addr": format!("localhost:{peer}"), "http_addr": format!("localhost:{http}")});
    let r = write_until_answered(
        &cluster.node(leader).http,
        "/v1/cluster/learners",
        &body,
        PATIENCE,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    wait_replicated(&joining, 20).await;
    for n in &cluster.nodes {
        let book = std::fs::read_to_string(n.data_dir.join("members")).unwrap();
        assert!(
            book.contains(&named(4, peer, http)),
            "node {}'s address book: {book}",
            n.id
        );
    }
    cluster.nodes.push(joining);
}
