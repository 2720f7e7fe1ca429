//! The typed calls of API v1.

use std::time::Duration;

use bytes::Bytes;
use reqwest::Method;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::client::{Call, Client, Exchange};
use crate::error::Error;
use crate::limits::{MAX_BATCH_EVENTS, MAX_CHANGES_WAIT, MAX_PAGE};
use crate::pages::{
    AccountsOut, BalancesPage, ChangesPage, HistoryFilter, HistoryPage, Page, QueryFilter, Status,
    TransfersOut,
};
use crate::results::{AccountResult, Created, EventResult, TransferResult};
use crate::types::{Account, AccountId, NewAccount, NewTransfer, Timestamp, Transfer, TransferId};

/// Any answer of a node, as it came: for requests this crate has no typed call for (tokens,
/// membership, audit), and for callers that judge answers themselves.
#[derive(Clone, Debug)]
pub struct RawAnswer {
    pub status: u16,
    pub body: Bytes,
    /// The node that answered (its base URL).
    pub node: String,
    pub attempts: u32,
    /// `bulwark-commit-index` (writes), if present.
    pub commit_index: Option<u64>,
    /// `bulwark-applied-index` (reads), if present.
    pub applied_index: Option<u64>,
}

impl RawAnswer {
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The body as JSON (`Null` if it is not JSON).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_default()
    }
}

#[derive(Deserialize)]
struct BatchAnswer {
    results: Vec<WordAt>,
}

#[derive(Deserialize)]
struct WordAt {
    index: usize,
    result: String,
}

impl Client {
    /// Creates accounts: one [`AccountResult`] per account, in order. Retried under the
    /// client's policy with the same ids; see [`crate::Outcome::earlier_attempt`].
    pub async fn create_accounts(
        &self,
        accounts: &[NewAccount],
    ) -> Result<Created<AccountResult>, Error> {
        self.create("/v1/accounts", accounts).await
    }

    /// Creates transfers: one [`TransferResult`] per transfer, in order. A retry resends this
    /// exact batch, so no transfer is ever applied twice; one applied by an attempt whose
    /// answer was lost is reported `Ok` with `earlier_attempt`.
    pub async fn create_transfers(
        &self,
        transfers: &[NewTransfer],
    ) -> Result<Created<TransferResult>, Error> {
        self.create("/v1/transfers", transfers).await
    }

    async fn create<E: Serialize, R: EventResult>(
        &self,
        path: &str,
        events: &[E],
    ) -> Result<Created<R>, Error> {
        if events.is_empty() || events.len() > MAX_BATCH_EVENTS {
            return Err(Error::Config(format!(
                "a batch holds 1 to {MAX_BATCH_EVENTS} events, not {}",
                events.len()
            )));
        }
        // Serialized once: every attempt sends these very bytes.
        let body = serde_json::to_vec(events).map_err(|e| Error::Config(e.to_string()))?;
        let call = Call {
            method: Method::POST,
            path: path.to_string(),
            body: Some(body.into()),
            write: true,
        };
        let ex = self.inner.execute(&call).await?.success()?;
        let answer: BatchAnswer = parse(&ex)?;
        let words = answer
            .results
            .into_iter()
            .map(|w| (w.index, w.result))
            .collect();
        Created::from_words(events.len(), words, ex.attempts, ex.earlier_maybe_applied).map_err(
            |message| Error::Protocol {
                node: ex.node.clone(),
                message,
            },
        )
    }

    /// An account with its balances; `None` if there is none with this id.
    pub async fn account(&self, id: AccountId) -> Result<Option<Account>, Error> {
        self.get_optional(&format!("/v1/accounts/{id}"), "account_not_found")
            .await
    }

    /// A transfer (a pending one with its `pending_status`); `None` if there is none.
    pub async fn transfer(&self, id: TransferId) -> Result<Option<Transfer>, Error> {
        self.get_optional(&format!("/v1/transfers/{id}"), "transfer_not_found")
            .await
    }

    async fn get_optional<T: DeserializeOwned>(
        &self,
        path: &str,
        absent: &str,
    ) -> Result<Option<T>, Error> {
        match self.get(path).await {
            Ok(found) => Ok(Some(found)),
            Err(e) if e.status() == Some(404) && e.code() == Some(absent) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// A page of an account's transfers.
    pub async fn account_transfers(
        &self,
        id: AccountId,
        filter: &HistoryFilter,
    ) -> Result<HistoryPage, Error> {
        check_limit(filter.limit)?;
        self.get(&with_query(
            format!("/v1/accounts/{id}/transfers"),
            &filter.query_string(),
        ))
        .await
    }

    /// A page of an account's balances after each change (accounts with `history`).
    pub async fn account_balances(
        &self,
        id: AccountId,
        after: Option<Timestamp>,
        limit: Option<usize>,
    ) -> Result<BalancesPage, Error> {
        check_limit(limit)?;
        let mut q = Vec::new();
        if let Some(limit) = limit {
            q.push(format!("limit={limit}"));
        }
        if let Some(after) = after {
            q.push(format!("after={after}"));
        }
        self.get(&with_query(
            format!("/v1/accounts/{id}/balances"),
            &q.join("&"),
        ))
        .await
    }

    /// A page of the accounts matching `filter` (`POST /v1/accounts/query`); page on with
    /// [`QueryFilter::next`].
    pub async fn query_accounts(&self, filter: &QueryFilter) -> Result<Page<Account>, Error> {
        let page: AccountsOut = self.query("/v1/accounts/query", filter).await?;
        Ok(page.into())
    }

    /// A page of the transfers matching `filter` (`POST /v1/transfers/query`).
    pub async fn query_transfers(&self, filter: &QueryFilter) -> Result<Page<Transfer>, Error> {
        let page: TransfersOut = self.query("/v1/transfers/query", filter).await?;
        Ok(page.into())
    }

    async fn query<T: DeserializeOwned>(
        &self,
        path: &str,
        filter: &QueryFilter,
    ) -> Result<T, Error> {
        check_limit(filter.limit)?;
        let body = serde_json::to_vec(filter).map_err(|e| Error::Config(e.to_string()))?;
        // A query changes nothing: retrying it is always safe.
        let call = Call {
            method: Method::POST,
            path: path.to_string(),
            body: Some(body.into()),
            write: false,
        };
        let ex = self.inner.execute(&call).await?.success()?;
        parse(&ex)
    }

    /// A page of the change feed after `after` (0: from the start); when there is nothing
    /// after it, the node waits up to `wait` for more. See [`Client::follow_changes`].
    pub async fn changes(
        &self,
        after: u64,
        limit: Option<usize>,
        wait: Duration,
    ) -> Result<ChangesPage, Error> {
        check_limit(limit)?;
        if wait > MAX_CHANGES_WAIT {
            return Err(Error::Config(format!(
                "a feed request waits at most {MAX_CHANGES_WAIT:?}"
            )));
        }
        let mut path = format!("/v1/changes?after={after}&wait_ms={}", wait.as_millis());
        if let Some(limit) = limit {
            path.push_str(&format!("&limit={limit}"));
        }
        self.get(&path).await
    }

    /// The status of the node the client prefers (the leader, if known).
    pub async fn status(&self) -> Result<Status, Error> {
        self.get("/v1/status").await
    }

    /// Sends any request of API v1 (`path` with its query string) under the client's retry
    /// policy: `Ok` with whatever the node answered last, error statuses included; `Err` when
    /// no answer came. A request that is not idempotent (a token's creation) must not be
    /// retried: send it with a client built with [`crate::RetryPolicy::none`]. `write` says
    /// whether a lost answer may mean it was applied ([`Error::Indefinite`]).
    pub async fn raw(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
        write: bool,
    ) -> Result<RawAnswer, Error> {
        let call = Call {
            method,
            path: path.to_string(),
            body: body.map(Bytes::from),
            write,
        };
        let ex = self.inner.execute(&call).await?;
        Ok(RawAnswer {
            status: ex.reply.status,
            commit_index: ex.reply.header_u64("bulwark-commit-index"),
            applied_index: ex.reply.header_u64("bulwark-applied-index"),
            body: ex.reply.body,
            node: ex.node,
            attempts: ex.attempts,
        })
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, Error> {
        let call = Call {
            method: Method::GET,
            path: path.to_string(),
            body: None,
            write: false,
        };
        let ex = self.inner.execute(&call).await?.success()?;
        parse(&ex)
    }
}

fn parse<T: DeserializeOwned>(ex: &Exchange) -> Result<T, Error> {
    serde_json::from_slice(&ex.reply.body).map_err(|e| Error::Protocol {
        node: ex.node.clone(),
        message: e.to_string(),
    })
}

fn check_limit(limit: Option<usize>) -> Result<(), Error> {
    match limit {
        Some(l) if l == 0 || l > MAX_PAGE => Err(Error::Config(format!(
            "a page holds 1 to {MAX_PAGE} items, not {l}"
        ))),
        _ => Ok(()),
    }
}

fn with_query(path: String, query: &str) -> String {
    if query.is_empty() {
        path
    } else {
        format!("{path}?{query}")
    }
}
