//! "Never forwarded twice": a write a follower forwarded is executed by the internal route as the
//! client route would, but a node that does not lead answers it 503 `no_leader` and never
//! forwards it again (two nodes that each think the other leads would pass it back and forth).
//! Real nodes in one process (`common`): the follower knows the leader, so the same write from a
//! client is forwarded (its dial reaches the leader's peer port, which counts it); sent to the
//! follower's internal routes, every kind of forwarded write is answered `no_leader`, applied
//! nowhere, and no peer port is dialed.

mod common;

use std::time::Duration;

use bulwark_api::{cluster_router, internal_router, ApiOptions};
use bulwark_ledger::AccountId;
use bulwark_node::{Answer, NodeId, Query};
use bulwark_transport::PeerHttpClient;
use common::{call, InProcess};
use serde_json::json;

/// A peer HTTP client with node `id`'s certificate from a CA of its own (the counting peer
/// ports close every connection before TLS, so any certificate does).
fn peer_client(dir: &std::path::Path, id: u64) -> PeerHttpClient {
    let out = dir.join(format!("node-{id}"));
    bulwark_tls::provision_node(&dir.join("ca"), 0xC1, NodeId(id), &out).unwrap();
    let tls = bulwark_tls::PeerTls::load(&out, 0xC1, NodeId(id)).unwrap();
    PeerHttpClient::new(tls, None, Duration::from_secs(2))
}

/// The forward routes of the internal router, each with a body it accepts. (A promotion is
/// checked against the configuration the node holds before the question of who leads, and this
/// cluster has no learner to promote.)
fn forwarded_writes(others: [u64; 2]) -> Vec<(&'static str, serde_json::Value)> {
    vec![
        (
            "/internal/v1/forward/accounts",
            json!([{"id": 41, "ledger": 1, "code": 1}]),
        ),
        (
            "/internal/v1/forward/accounts?ack=all",
            json!([{"id": 42, "ledger": 1, "code": 1}]),
        ),
        (
            "/internal/v1/forward/transfers",
            json!([{"id": 43, "debit_account_id": 41, "credit_account_id": 42, "amount": 1,
                    "ledger": 1, "code": 1}]),
        ),
        (
            "/internal/v1/forward/cluster/learners",
            json!({"id": 9, "peer_addr": "127.0.0.1:9", "http_addr": "127.0.0.1:9"}),
        ),
        // Two of three voters: one is left, an odd number.
        (
            "/internal/v1/forward/cluster/remove",
            json!({"ids": others}),
        ),
        (
            "/internal/v1/forward/tokens",
            json!({"name": "forwarded", "role": "read"}),
        ),
        (
            "/internal/v1/forward/tokens/00000000000000ff/revoke",
            json!(null),
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_answers_a_forwarded_write_no_leader_and_never_forwards_it() {
    let cluster = InProcess::start(3).await;
    let leader = cluster.wait_leader().await;
    let follower = cluster.ids().into_iter().find(|&id| id != leader).unwrap();
    assert_eq!(
        cluster.status(follower).await.leader,
        Some(NodeId(leader)),
        "the follower must know the leader, or nothing would be forwarded anyway"
    );
    let dialed = || {
        cluster
            .peer_ports
            .values()
            .map(|p| p.connections())
            .sum::<usize>()
    };

    let internal = internal_router(cluster.handle(follower), follower);
    let others: Vec<u64> = cluster
        .ids()
        .into_iter()
        .filter(|&id| id != follower)
        .collect();
    for (path, body) in forwarded_writes([others[0], others[1]]) {
        let (status, answer) = call(&internal, cluster.post(path, &body)).await;
        assert_eq!(status, 503, "{path}: {answer}");
        // A ledger write names the leader (`not_leader`: the forwarding follower sends it on
        // there, a handover's race); the other routes answer `no_leader`. Neither is applied.
        let route = path.split('?').next().unwrap_or(path);
        let ledger_write = route.ends_with("/accounts") || route.ends_with("/transfers");
        let word = if ledger_write {
            "not_leader"
        } else {
            "no_leader"
        };
        assert_eq!(answer["error"], word, "{path}: {answer}");
    }
    assert_eq!(dialed(), 0, "the internal routes dialed a peer port");
    for account in [41, 42] {
        let leader_node = cluster.handle(leader);
        let read = leader_node.read(Query::Account(AccountId(account))).await;
        let Answer::Account(found) = read.unwrap().answer else {
            panic!("an account query answered something else")
        };
        assert!(found.is_none(), "account {account} was applied");
    }

    // The control: the same write from a client of the follower is forwarded, and the leader's
    // peer port sees the dial (its answer: the leader could not be reached, never sent).
    let dir = tempfile::tempdir().unwrap();
    let options = ApiOptions {
        peers: Some(peer_client(dir.path(), follower)),
        ..ApiOptions::default()
    };
    let client = cluster_router(cluster.handle(follower), follower, options);
    let body = json!([{"id": 44, "ledger": 1, "code": 1}]);
    let (status, answer) = call(&client, cluster.post("/v1/accounts", &body)).await;
    assert_eq!(status, 503, "{answer}");
    assert_eq!(answer["error"], "no_leader", "{answer}");
    assert!(
        cluster.peer_ports[&leader].connections() > 0,
        "a client's write on the follower did not reach the leader's peer port: {answer}"
    );
}
