//! `POST /v1/accounts/query` and `POST /v1/transfers/query`: accounts or transfers by their
//! fields and a timestamp window, paged by timestamp; and `GET /v1/changes`, the change feed,
//! which waits for the next change when it is caught up.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Query, State};
use axum::response::Response;
use bulwark_ledger::{Balances, Change, Timestamp, Transfer, TransferFlags};
use bulwark_limits::{DEFAULT_HISTORY_PAGE, MAX_CHANGES_WAIT, MAX_HISTORY_PAGE};
use bulwark_node::{Answer, Query as NodeQuery, QueryFilter, QueryPage};
use serde::{Deserialize, Serialize};

use crate::decimal::Dec;
use crate::error::ApiError;
use crate::json::{AccountOut, BalancesOut, TransferOut};
use crate::{
    body, parse_json, query, read, read_built, read_response, AppState, Consistency, ReadParams,
};

/// The body of a query: every field optional; a field given (and not 0) must match.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct QueryIn {
    #[serde(default)]
    user_data_128: Dec<u128>,
    #[serde(default)]
    user_data_64: Dec<u64>,
    #[serde(default)]
    user_data_32: u32,
    #[serde(default)]
    ledger: u32,
    #[serde(default)]
    code: u16,
    timestamp_min: Option<Dec<u64>>,
    timestamp_max: Option<Dec<u64>>,
    limit: Option<usize>,
    #[serde(default)]
    reversed: bool,
}

const QUERY_SHAPE: &str = "a JSON object of query fields (user_data_128, user_data_64, \
    user_data_32, ledger, code, timestamp_min, timestamp_max, limit, reversed)";

impl QueryIn {
    fn filter(&self) -> Result<QueryFilter, ApiError> {
        let min = self.timestamp_min.map_or(0, |t| t.0);
        let max = self.timestamp_max.map_or(u64::MAX, |t| t.0);
        if min > max {
            return Err(ApiError::bad_request(
                "invalid_query",
                format!("timestamp_min ({min}) must not be above timestamp_max ({max})"),
            ));
        }
        Ok(QueryFilter {
            user_data_128: self.user_data_128.0,
            user_data_64: self.user_data_64.0,
            user_data_32: self.user_data_32,
            ledger: self.ledger,
            code: self.code,
            timestamp_min: Timestamp(min),
            timestamp_max: Timestamp(max),
            reversed: self.reversed,
            limit: page_limit(self.limit)?,
        })
    }
}

/// The page size a paged read asks for: 1 to `MAX_HISTORY_PAGE`, `DEFAULT_HISTORY_PAGE` if not
/// given.
pub(crate) fn page_limit(limit: Option<usize>) -> Result<usize, ApiError> {
    let limit = limit.unwrap_or(DEFAULT_HISTORY_PAGE);
    if limit == 0 || limit > MAX_HISTORY_PAGE {
        return Err(ApiError::bad_request(
            "invalid_query",
            format!("limit must be between 1 and {MAX_HISTORY_PAGE}, got {limit}"),
        ));
    }
    Ok(limit)
}

/// A page of a query: the items, and the cursor to pass on for the next page (absent when the
/// window holds nothing more).
#[derive(Serialize)]
struct QueryOut<T> {
    #[serde(flatten)]
    found: T,
    #[serde(skip_serializing_if = "Option::is_none")]
    next_timestamp_min: Option<Dec<u64>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    next_timestamp_max: Option<Dec<u64>>,
}

impl<T> QueryOut<T> {
    fn new(found: T, next: Option<Timestamp>, reversed: bool) -> Self {
        let next = next.map(|ts| Dec(ts.0));
        let (next_timestamp_min, next_timestamp_max) =
            if reversed { (None, next) } else { (next, None) };
        QueryOut {
            found,
            next_timestamp_min,
            next_timestamp_max,
        }
    }
}

#[derive(Serialize)]
struct AccountsOut {
    accounts: Vec<AccountOut>,
}

#[derive(Serialize)]
struct TransfersOut {
    transfers: Vec<TransferOut>,
}

/// The filter of a query request, and how to read it.
fn query_request(
    params: Result<Query<ReadParams>, QueryRejection>,
    raw: Result<Bytes, BytesRejection>,
) -> Result<(QueryFilter, Option<Consistency>), ApiError> {
    let consistency = query(params)?.consistency;
    let raw = body(raw)?;
    // serde would read a struct from an array too, by position, and blame its first field.
    if raw.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(ApiError::bad_request(
            "invalid_body",
            format!("the body must be {QUERY_SHAPE}"),
        ));
    }
    let input: QueryIn = parse_json(&raw, QUERY_SHAPE)?;
    Ok((input.filter()?, consistency))
}

pub(crate) async fn query_accounts(
    State(state): State<Arc<AppState>>,
    params: Result<Query<ReadParams>, QueryRejection>,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let (filter, consistency) = query_request(params, raw)?;
    let read = read(&state, NodeQuery::Accounts(filter), consistency).await?;
    let Answer::Accounts(QueryPage { found, next }) = read.answer else {
        unreachable!("the node answers an account query with accounts")
    };
    let accounts = found.into_iter().map(AccountOut::from).collect();
    let page = QueryOut::new(AccountsOut { accounts }, next, filter.reversed);
    Ok(read_response(page, read.applied_index))
}

pub(crate) async fn query_transfers(
    State(state): State<Arc<AppState>>,
    params: Result<Query<ReadParams>, QueryRejection>,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let (filter, consistency) = query_request(params, raw)?;
    let query = NodeQuery::Transfers(filter);
    let (applied_index, QueryPage { found, next }) =
        read_built(&state, query, consistency, |answer| {
            let Answer::Transfers(page) = answer else {
                unreachable!("the node answers a transfer query with transfers")
            };
            page
        })
        .await?;
    let transfers = found
        .into_iter()
        .map(|t| TransferOut::new(t, None, None))
        .collect();
    let page = QueryOut::new(TransfersOut { transfers }, next, filter.reversed);
    Ok(read_response(page, applied_index))
}

/// The change feed's query string.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ChangesParams {
    after: Option<Dec<u64>>,
    limit: Option<usize>,
    /// How long to wait for a change when there is none after `after` (0: answer at once).
    wait_ms: Option<u64>,
    consistency: Option<Consistency>,
}

/// One event of the feed.
#[derive(Serialize)]
struct ChangeOut {
    #[serde(rename = "type")]
    kind: &'static str,
    timestamp: Dec<u64>,
    transfer: TransferOut,
    debit_account: AccountBalancesOut,
    credit_account: AccountBalancesOut,
}

#[derive(Serialize)]
struct AccountBalancesOut {
    id: Dec<u128>,
    #[serde(flatten)]
    balances: BalancesOut,
}

impl ChangeOut {
    fn new(change: Change, transfer: Transfer) -> Self {
        let flags = transfer.flags;
        let kind = if change.expired {
            "two_phase_expired"
        } else if flags.contains(TransferFlags::PENDING) {
            "two_phase_pending"
        } else if flags.contains(TransferFlags::POST_PENDING_TRANSFER) {
            "two_phase_posted"
        } else if flags.contains(TransferFlags::VOID_PENDING_TRANSFER) {
            "two_phase_voided"
        } else {
            "single_phase"
        };
        let account = |id: u128, balances: Balances| AccountBalancesOut {
            id: Dec(id),
            balances: balances.into(),
        };
        ChangeOut {
            kind,
            timestamp: Dec(change.timestamp.0),
            debit_account: account(transfer.debit_account_id.0, change.debit),
            credit_account: account(transfer.credit_account_id.0, change.credit),
            transfer: TransferOut::new(transfer, None, None),
        }
    }
}

#[derive(Serialize)]
struct ChangesOut {
    changes: Vec<ChangeOut>,
    /// The last change's timestamp (or the `after` given, when there is none): the next `after`.
    next_after: Dec<u64>,
}

/// `GET /v1/changes?after=&limit=&wait_ms=`: the events after `after`, oldest first; when there
/// are none, waits up to `wait_ms` for this node to apply more, then reads again.
pub(crate) async fn changes(
    State(state): State<Arc<AppState>>,
    params: Result<Query<ChangesParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let params = query(params)?;
    let after = Timestamp(params.after.map_or(0, |a| a.0));
    let limit = page_limit(params.limit)?;
    let wait = std::time::Duration::from_millis(params.wait_ms.unwrap_or(0));
    if wait > MAX_CHANGES_WAIT {
        return Err(ApiError::bad_request(
            "invalid_query",
            format!(
                "wait_ms must be at most {}, got {}",
                MAX_CHANGES_WAIT.as_millis(),
                wait.as_millis()
            ),
        ));
    }
    let deadline = tokio::time::Instant::now() + wait;
    let mut applied = state.node.watch_applied();
    loop {
        // Seen before the read: a batch applied after it wakes the wait below.
        applied.borrow_and_update();
        let query = NodeQuery::Changes { after, limit };
        let (applied_index, found) = read_built(&state, query, params.consistency, |answer| {
            let Answer::Changes(found) = answer else {
                unreachable!("the node answers a feed request with changes")
            };
            found
        })
        .await?;
        let wait_more = found.is_empty() && tokio::time::Instant::now() < deadline;
        if wait_more {
            let woken = tokio::time::timeout_at(deadline, applied.changed()).await;
            if matches!(woken, Ok(Ok(()))) {
                continue;
            }
        }
        let next_after = Dec(found.last().map_or(after, |(c, _)| c.timestamp).0);
        let changes = found
            .into_iter()
            .map(|(c, t)| ChangeOut::new(c, t))
            .collect();
        let page = ChangesOut {
            changes,
            next_after,
        };
        return Ok(read_response(page, applied_index));
    }
}
