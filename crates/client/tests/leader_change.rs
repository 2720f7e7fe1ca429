//! Leader changes are followed: three nodes, the client writes through the leader, the leader
//! is killed (-9), and the client goes on writing and finds the new leader; every transfer is
//! applied exactly once.

mod common;

use std::time::Duration;

use bulwark_client::{AccountId, ClientBuilder, NewTransfer, QueryFilter, RetryPolicy, TransferId};
use common::{bases, cluster, two_accounts};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_changes_are_followed() {
    let (mut cluster, status) = cluster(3).await;
    let retry = RetryPolicy {
        max_attempts: 100,
        deadline: Duration::from_secs(60),
        ..RetryPolicy::default()
    };
    let client = ClientBuilder::new(bases(&cluster))
        .token(cluster.token.clone())
        .retry(retry)
        .build()
        .expect("a client");
    two_accounts(&client).await;
    let first = cluster
        .view(&status)
        .await
        .agreed_leader()
        .expect("a leader");
    let write = |id: u128| {
        let client = client.clone();
        async move {
            let t = NewTransfer::new(TransferId(id), AccountId(1), AccountId(2), 1, 1, 1);
            let created = client.create_transfers(&[t]).await.expect("a transfer");
            assert!(created.all_ok(), "transfer {id}: {created:?}");
        }
    };
    for id in 1..=10 {
        write(id).await;
    }
    assert_eq!(
        client.leader().and_then(|(_, id)| id),
        Some(first),
        "writes go to the leader"
    );

    let index = cluster.index_of(first).expect("the leader is a member");
    cluster.nodes[index].kill9();
    for id in 11..=30 {
        write(id).await;
    }
    let (_, now) = client.leader().expect("a leader is known");
    let now = now.expect("with its node id");
    assert_ne!(now, first, "the client still sends to the killed leader");
    let answer = client.status().await.expect("the leader's status");
    assert_eq!((answer.node_id, answer.role.as_str()), (now, "leader"));

    let all = QueryFilter {
        ledger: Some(1),
        limit: Some(8190),
        ..Default::default()
    };
    let transfers = client.query_transfers(&all).await.unwrap();
    let mut ids: Vec<u128> = transfers.items.iter().map(|t| t.id.0).collect();
    ids.sort_unstable();
    assert_eq!(ids, (1..=30).collect::<Vec<_>>(), "every transfer once");
    let debit = client
        .account(AccountId(1))
        .await
        .unwrap()
        .expect("account 1");
    assert_eq!(debit.balances.debits_posted, 30);
}
