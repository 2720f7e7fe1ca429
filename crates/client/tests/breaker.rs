//! The breaker stops hammering a dead node: the client is given a node that takes connections
//! and drops them beside a live one, sends one transfer after another spread over both, and
//! reaches the dead one no more than its breaker allows while every transfer succeeds.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use bulwark_client::{AccountId, BreakerPolicy, ClientBuilder, NewTransfer, Routing, TransferId};
use common::{cluster, dead_node, two_accounts};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_breaker_stops_hammering_a_dead_node() {
    let (cluster, _) = cluster(1).await;
    let (dead, connections) = dead_node().await;
    let breaker = BreakerPolicy {
        failures_to_open: 3,
        // Longer than the test: once open, the dead node gets no probe at all.
        cool_down: Duration::from_secs(3600),
    };
    let client = ClientBuilder::new([
        format!("http://{dead}"),
        format!("http://{}", cluster.members[0].http),
    ])
    .token(cluster.token.clone())
    .routing(Routing::RoundRobin)
    .breaker(breaker)
    .learn_members(false)
    .build()
    .expect("a client");
    two_accounts(&client).await;

    let transfers = 40u128;
    for id in 1..=transfers {
        let t = NewTransfer::new(TransferId(id), AccountId(1), AccountId(2), 1, 1, 1);
        let created = client.create_transfers(&[t]).await.expect("a transfer");
        assert!(created.all_ok(), "transfer {id}: {created:?}");
    }
    let tried = connections.load(Ordering::SeqCst);
    assert!(
        tried >= 1,
        "the dead node was never tried: the test proves nothing"
    );
    assert!(
        tried <= breaker.failures_to_open as usize,
        "the dead node was tried {tried} times; its breaker opens after {}",
        breaker.failures_to_open
    );
    let debit = client
        .account(AccountId(1))
        .await
        .unwrap()
        .expect("account 1");
    assert_eq!(
        debit.balances.debits_posted, transfers,
        "every transfer applied once"
    );
}
