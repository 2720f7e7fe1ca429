//! An account's history over HTTP: its transfers (filtered, either order, in a time window)
//! and its balances after each change, paged by timestamp cursors.

use std::sync::Arc;

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::response::Response;
use bulwark_ledger::{AccountId, Timestamp};
use bulwark_node::{Answer, HistoryFilter, Query as NodeQuery};
use serde::Deserialize;

use crate::error::ApiError;
use crate::search::page_limit;
use crate::{
    decimal, json, path_id, query, read, read_built, read_response, AppState, Consistency,
};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct HistoryParams {
    limit: Option<usize>,
    after: Option<decimal::Dec<u64>>,
    consistency: Option<Consistency>,
}

/// An account history's query string: the page, its time window and order, and filters on the
/// transfers' own fields (0 or absent: any).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TransfersParams {
    limit: Option<usize>,
    after: Option<decimal::Dec<u64>>,
    before: Option<decimal::Dec<u64>>,
    side: Option<Side>,
    #[serde(default)]
    reversed: bool,
    code: Option<u16>,
    user_data_128: Option<decimal::Dec<u128>>,
    user_data_64: Option<decimal::Dec<u64>>,
    user_data_32: Option<u32>,
    consistency: Option<Consistency>,
}

#[derive(Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
enum Side {
    Debits,
    Credits,
}

impl TransfersParams {
    fn filter(&self) -> Result<HistoryFilter, ApiError> {
        let after = self.after.map_or(0, |a| a.0);
        let before = self.before.map_or(u64::MAX, |b| b.0);
        if after >= before {
            return Err(ApiError::bad_request(
                "invalid_query",
                format!("after ({after}) must be below before ({before})"),
            ));
        }
        Ok(HistoryFilter {
            after: Timestamp(after),
            before: Timestamp(before),
            debits: self.side != Some(Side::Credits),
            credits: self.side != Some(Side::Debits),
            reversed: self.reversed,
            code: self.code.unwrap_or(0),
            user_data_128: self.user_data_128.map_or(0, |u| u.0),
            user_data_64: self.user_data_64.map_or(0, |u| u.0),
            user_data_32: self.user_data_32.unwrap_or(0),
            limit: page_limit(self.limit)?,
        })
    }
}

pub(crate) async fn get_account_transfers(
    State(state): State<Arc<AppState>>,
    raw: Result<Path<String>, PathRejection>,
    params: Result<Query<TransfersParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let params = query(params)?;
    let id = AccountId(path_id(raw, "account")?);
    let filter = params.filter()?;
    let query = NodeQuery::AccountTransfers {
        account: id,
        filter,
    };
    let (applied_index, found) = read_built(&state, query, params.consistency, |answer| {
        let Answer::AccountTransfers(found) = answer else {
            unreachable!("the node answers a history query with a page")
        };
        // The node's `Some(None)`: not built yet; `None`: no such account.
        found.map_or(Some(None), |page| page.map(Some))
    })
    .await?;
    let Some(page) = found else {
        return Err(ApiError::not_found(
            "account_not_found",
            format!("no account with id {id}"),
        ));
    };
    let next = page.next.map(|ts| decimal::Dec(ts.0));
    let (next_after, next_before) = if filter.reversed {
        (None, next)
    } else {
        (next, None)
    };
    let transfers = page
        .transfers
        .into_iter()
        .map(|(t, balances)| json::TransferOut::new(t, None, balances))
        .collect();
    Ok(read_response(
        json::HistoryOut {
            transfers,
            next_after,
            next_before,
        },
        applied_index,
    ))
}

/// An account's balances after each change, oldest first and paged like its transfers: kept
/// for accounts created with `history` (409 `history_not_kept` for the others, whose balances
/// only the account itself shows).
pub(crate) async fn get_account_balances(
    State(state): State<Arc<AppState>>,
    raw: Result<Path<String>, PathRejection>,
    params: Result<Query<HistoryParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let params = query(params)?;
    let id = AccountId(path_id(raw, "account")?);
    let limit = page_limit(params.limit)?;
    let after = Timestamp(params.after.map_or(0, |a| a.0));
    let query = NodeQuery::AccountBalances {
        account: id,
        after,
        limit,
    };
    let read = read(&state, query, params.consistency).await?;
    let Answer::AccountBalances(found) = read.answer else {
        unreachable!("the node answers a balances query with balances")
    };
    let Some((account, page)) = found else {
        return Err(ApiError::not_found(
            "account_not_found",
            format!("no account with id {id}"),
        ));
    };
    if !account
        .flags
        .contains(bulwark_ledger::AccountFlags::HISTORY)
    {
        return Err(ApiError::conflict(
            "history_not_kept",
            format!(
                "account {id} was created without the `history` flag: only its current \
                 balances are kept (GET /v1/accounts/{id})"
            ),
        ));
    }
    let next_after = (page.len() == limit).then(|| decimal::Dec(page[page.len() - 1].0 .0));
    let balances = page
        .into_iter()
        .map(|(ts, b)| json::BalancesAt::new(ts, b))
        .collect();
    Ok(read_response(
        json::BalancesPage {
            balances,
            next_after,
        },
        read.applied_index,
    ))
}
