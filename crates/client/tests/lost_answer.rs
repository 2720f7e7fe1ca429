//! A retry after a lost answer never duplicates a transfer: the node applies the transfer and
//! answers, the proxy in front of it drops the answer, the client retries the same batch, and
//! the transfer exists once with the balances moved once.

mod common;

use bulwark_client::{
    AccountId, ClientBuilder, NewTransfer, Outcome, QueryFilter, TransferId, TransferResult,
};
use common::{cluster, two_accounts, LossyProxy};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_after_a_lost_answer_never_duplicates_a_transfer() {
    let (cluster, _) = cluster(1).await;
    let proxy = LossyProxy::start(cluster.members[0].http, 1).await;
    let client = ClientBuilder::new([format!("http://{}", proxy.addr)])
        .token(cluster.token.clone())
        .learn_members(false)
        .build()
        .expect("a client");
    two_accounts(&client).await;

    let payment = NewTransfer::new(TransferId(100), AccountId(1), AccountId(2), 7, 1, 1);
    let created = client
        .create_transfers(&[payment])
        .await
        .expect("the transfer");
    assert_eq!(
        proxy.lost.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "one answer was lost"
    );
    let stored = client
        .transfer(TransferId(100))
        .await
        .unwrap()
        .expect("the transfer exists");
    assert_eq!((stored.amount, stored.debit_account_id), (7, AccountId(1)));
    let debit = client
        .account(AccountId(1))
        .await
        .unwrap()
        .expect("account 1");
    let credit = client
        .account(AccountId(2))
        .await
        .unwrap()
        .expect("account 2");
    assert_eq!(debit.balances.debits_posted, 7, "moved once");
    assert_eq!(credit.balances.credits_posted, 7, "moved once");
    let all = QueryFilter {
        ledger: Some(1),
        ..Default::default()
    };
    let transfers = client.query_transfers(&all).await.unwrap();
    assert_eq!(transfers.items.len(), 1, "{:?}", transfers.items);

    assert_eq!(created.attempts, 2, "{created:?}");
    assert_eq!(
        created.outcomes,
        [Outcome {
            result: TransferResult::Ok,
            earlier_attempt: true
        }],
        "the retry learns the first attempt applied it"
    );

    // The feed holds it once too: one event, then nothing more.
    let mut feed = client.follow_changes(0);
    let change = feed.next().await.expect("the transfer's event");
    assert_eq!(change.transfer.id, TransferId(100));
    let rest = client
        .changes(feed.position(), None, std::time::Duration::ZERO)
        .await
        .unwrap();
    assert!(rest.changes.is_empty(), "{:?}", rest.changes);
}
