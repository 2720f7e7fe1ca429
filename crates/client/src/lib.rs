//! The Rust client of [Bulwark](https://github.com/), a fault-tolerant ledger database:
//! accounts and double-entry transfers, replicated by Raft across 3 or 5 nodes.
//!
//! - **Any node, the leader preferred.** Give it one or more node addresses; it asks
//!   `/v1/status` who leads, learns the other members, sends to the leader, and follows a
//!   new one (after `no_leader`, a failed connection, or an answer forwarded to another
//!   node). Followers forward writes, so a stale view costs a hop, never a wrong answer.
//! - **Retries that never move money twice.** A retry resends the very same batch, with the
//!   same ids, with exponential back-off and full jitter, within a number of attempts and an
//!   overall deadline ([`RetryPolicy`]). The ledger applies an id once and answers `exists`
//!   to a repeat with the same fields; an event applied by an attempt whose answer was lost
//!   comes back as `Ok` with [`Outcome::earlier_attempt`] set. A write that gave up after an
//!   attempt that may have been applied is [`Error::Indefinite`], never a plain refusal.
//! - **A circuit breaker per node** ([`BreakerPolicy`]): after consecutive failures the node
//!   is skipped for a cool-down, then one probe decides.
//! - **TLS and tokens**: `https://` trusting only the cluster's CA ([`ClientBuilder::ca_file`],
//!   rustls with ring), a bearer token ([`ClientBuilder::token`], or `$BULWARK_TOKEN`).
//! - **Typed requests and results** ([`NewAccount`], [`NewTransfer`], [`TransferResult`], ...;
//!   a result word this version does not know is kept as `Other`), history, the queries with
//!   their paging, the change feed ([`Client::follow_changes`]) and status.
//!
//! Every bound the client keeps is in [`limits`].
//!
//! ```no_run
//! use bulwark_client::{AccountId, ClientBuilder, NewAccount, NewTransfer, TransferId, TransferResult};
//!
//! # async fn run() -> Result<(), bulwark_client::Error> {
//! let client = ClientBuilder::new(["https://10.0.0.1:7070", "https://10.0.0.2:7070"])
//!     .ca_file("/etc/bulwark/ca.crt")
//!     .token_from_env()
//!     .build()?;
//!
//! let accounts = [NewAccount::new(AccountId(1), 1, 10), NewAccount::new(AccountId(2), 1, 10)];
//! client.create_accounts(&accounts).await?;
//!
//! // The id is what makes the retry safe: keep it with the payment it stands for.
//! let payment = NewTransfer::new(TransferId(1001), AccountId(1), AccountId(2), 500, 1, 1);
//! let created = client.create_transfers(&[payment]).await?;
//! match &created.outcomes[0].result {
//!     TransferResult::Ok => println!("paid (attempts: {})", created.attempts),
//!     TransferResult::Exists => println!("paid before this call"),
//!     refused => println!("refused: {refused}"),
//! }
//!
//! let mut feed = client.follow_changes(0);
//! let change = feed.next().await?;
//! println!("{:?} at {}", change.kind, change.timestamp);
//! # Ok(())
//! # }
//! ```

mod api;
mod client;
mod error;
mod feed;
pub mod limits;
mod pages;
mod policy;
mod results;
mod transport;
mod types;
mod wire;

pub use api::RawAnswer;
pub use client::{Client, ClientBuilder, Routing};
pub use error::{definite_refusal, Error, TransportKind, DEFINITE_REFUSALS};
pub use feed::ChangeFeed;
pub use pages::{
    AccountBalances, BalancesAt, BalancesPage, Change, ChangeKind, ChangesPage, HistoryFilter,
    HistoryPage, MemberStatus, Page, QueryFilter, Side, Status,
};
pub use policy::{BreakerPolicy, RetryPolicy};
pub use reqwest::Method;
pub use results::{AccountResult, Created, EventResult, Outcome, TransferResult};
pub use types::{
    Account, AccountFlags, AccountId, Balances, NewAccount, NewTransfer, PendingStatus, Timestamp,
    Transfer, TransferFlags, TransferId,
};
