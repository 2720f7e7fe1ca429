//! `?ack=all` answered 504 `ack_all_timeout` on the real path, and the write applied all the
//! same: the answer says the write committed but could not be confirmed on every in-sync
//! member, never that it failed.
//!
//! How the path is reached: a follower that leaves the in-sync set is no longer waited for
//! (its lag rule, `IN_SYNC_WITHIN`, is shorter than `ACK_ALL_TIMEOUT`: `bulwark-limits` asserts
//! it), so freezing a follower only gets the write confirmed without it. What leaves a waiter
//! unconfirmed is its leader stepping down while an in-sync follower still lacks the write. Five
//! real nodes in one process (`common`): follower D answers the leader's heartbeats (so it stays
//! recently active) but gets none of its appends, so it stays in sync for its lag window
//! without the write; the write commits on the other three; then the leader is cut off from
//! them, and at its next quorum checks it steps down (D alone is no quorum) while D is still in
//! sync. Its waiter is settled unconfirmed, and the client gets 504 `ack_all_timeout`.
//!
//! Needs the in-sync rule to count a follower as recently heard from for a window, not by
//! raft-rs's `recent_active` flag alone: every quorum check clears that flag on every follower
//! until its next answer, so at each check no follower is in sync, the in-sync floor is
//! `u64::MAX`, and every waiter is confirmed, D's lack of the write notwithstanding (without
//! the fix this test gets 200 within one quorum-check interval).

mod common;

use bulwark_api::cluster_router;
use bulwark_ledger::AccountId;
use bulwark_node::{Answer, ClusterStatus, NodeId, Query};
use common::{call, InProcess, PATIENCE};
use raft::eraftpb::MessageType;
use serde_json::json;
use std::time::{Duration, Instant};

const ACCOUNT: u128 = 77;

/// Waits until the leader reports every follower caught up (no lag) and recently active.
async fn wait_all_in_sync(cluster: &InProcess, leader: u64) -> ClusterStatus {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let status = cluster.status(leader).await;
        let followers = status.members.iter().filter(|m| m.id.0 != leader);
        if followers
            .clone()
            .all(|m| m.lag == Some(0) && m.recent_active == Some(true))
        {
            return status;
        }
        assert!(Instant::now() < deadline, "never all in sync: {status:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Account `ACCOUNT` as node `id` holds it (its own state, no leader needed).
async fn holds_account(cluster: &InProcess, id: u64) -> bool {
    let read = cluster
        .handle(id)
        .read_stale(Query::Account(AccountId(ACCOUNT)))
        .await;
    matches!(read.unwrap().answer, Answer::Account(Some(_)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_that_steps_down_before_an_in_sync_follower_holds_the_write_answers_504() {
    let cluster = InProcess::start(5).await;
    let leader = cluster.wait_leader().await;
    let before = wait_all_in_sync(&cluster, leader).await;
    let followers: Vec<u64> = cluster
        .ids()
        .into_iter()
        .filter(|&id| id != leader)
        .collect();
    let lagging = followers[0];

    // D hears the leader's heartbeats and answers them, but none of its appends arrive.
    cluster.net.set_filter(move |from, to, message| {
        !(from == leader && to == lagging && message.get_msg_type() == MessageType::MsgAppend)
    });
    let router = cluster_router(cluster.handle(leader), leader, Default::default());
    let request = cluster.post(
        "/v1/accounts?ack=all",
        &json!([{"id": ACCOUNT, "ledger": 1, "code": 1}]),
    );
    let answer = tokio::spawn(async move { call(&router, request).await });

    // Committed on the leader and the three others; D, still in sync, does not have it.
    let deadline = Instant::now() + PATIENCE;
    let status = loop {
        let status = cluster.status(leader).await;
        if status.commit_index > before.commit_index {
            break status;
        }
        assert!(Instant::now() < deadline, "the write never committed");
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    let d = status.members.iter().find(|m| m.id == NodeId(lagging));
    let d = d.expect("D is a member");
    assert!(
        d.recent_active == Some(true)
            && d.lag_ms.is_some_and(|ms| ms <= 1000)
            && d.match_index < Some(status.commit_index),
        "D must be in sync without the write, or nothing waits for it: {status:?}"
    );
    assert!(!answer.is_finished(), "answered before D held the write");

    // The leader cut off from the three that hold the write: it steps down.
    cluster.net.set_filter(move |from, to, message| {
        let cut = |a, b| a == leader && followers[1..].contains(&b);
        let append_to_d =
            from == leader && to == lagging && message.get_msg_type() == MessageType::MsgAppend;
        !(cut(from, to) || cut(to, from) || append_to_d)
    });
    let (status, body) = answer.await.unwrap();
    assert_eq!(status, 504, "{body}");
    assert_eq!(body["error"], "ack_all_timeout", "{body}");
    assert!(
        holds_account(&cluster, leader).await,
        "the old leader lost it"
    );

    // Not a refusal: the write is the cluster's, on every node once healed.
    cluster.net.heal();
    let deadline = Instant::now() + PATIENCE;
    for id in cluster.ids() {
        while !holds_account(&cluster, id).await {
            assert!(Instant::now() < deadline, "node {id} never got the write");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}
