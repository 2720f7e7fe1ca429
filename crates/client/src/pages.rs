//! The paged reads: an account's history and balances, the queries, the change feed, status.

use serde::{Deserialize, Deserializer, Serialize};

use crate::types::{Account, AccountId, Balances, Timestamp, Transfer};
use crate::wire::{dec, opt_dec};

/// Which of an account's transfers a history page holds (`GET /v1/accounts/{id}/transfers`).
/// Every field left at its default means "any".
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HistoryFilter {
    /// Items per page, 1 to [`crate::limits::MAX_PAGE`] (`None`: the server's 100).
    pub limit: Option<usize>,
    /// Only transfers after this timestamp (exclusive): the previous page's `next_after`.
    pub after: Option<Timestamp>,
    /// Only transfers before this timestamp (exclusive): with `reversed`, the previous page's
    /// `next_before`.
    pub before: Option<Timestamp>,
    /// Newest first.
    pub reversed: bool,
    /// Only the side given.
    pub side: Option<Side>,
    pub code: Option<u16>,
    pub user_data_128: Option<u128>,
    pub user_data_64: Option<u64>,
    pub user_data_32: Option<u32>,
}

/// The side of an account a transfer touched.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    Debits,
    Credits,
}

impl HistoryFilter {
    pub(crate) fn query_string(&self) -> String {
        let mut q = Vec::new();
        let mut put = |k: &str, v: Option<String>| {
            if let Some(v) = v {
                q.push(format!("{k}={v}"));
            }
        };
        put("limit", self.limit.map(|v| v.to_string()));
        put("after", self.after.map(|v| v.to_string()));
        put("before", self.before.map(|v| v.to_string()));
        put("reversed", self.reversed.then(|| "true".to_string()));
        let side = self.side.map(|s| match s {
            Side::Debits => "debits".to_string(),
            Side::Credits => "credits".to_string(),
        });
        put("side", side);
        put("code", self.code.map(|v| v.to_string()));
        put("user_data_128", self.user_data_128.map(|v| v.to_string()));
        put("user_data_64", self.user_data_64.map(|v| v.to_string()));
        put("user_data_32", self.user_data_32.map(|v| v.to_string()));
        q.join("&")
    }
}

/// A page of an account's transfers.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct HistoryPage {
    pub transfers: Vec<Transfer>,
    /// Oldest first: send as `after` for the next page; absent on the last.
    #[serde(default, with = "opt_dec")]
    pub next_after: Option<u64>,
    /// Newest first: send as `before` for the next page; absent on the last.
    #[serde(default, with = "opt_dec")]
    pub next_before: Option<u64>,
}

/// An account's balances right after one change.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
pub struct BalancesAt {
    pub timestamp: Timestamp,
    #[serde(flatten)]
    pub balances: Balances,
}

/// A page of an account's balances (`GET /v1/accounts/{id}/balances`).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct BalancesPage {
    pub balances: Vec<BalancesAt>,
    #[serde(default, with = "opt_dec")]
    pub next_after: Option<u64>,
}

/// The body of `POST /v1/accounts/query` and `/v1/transfers/query`: every field optional; a
/// field given (and not 0) must match. The window is inclusive at both ends.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct QueryFilter {
    #[serde(skip_serializing_if = "Option::is_none", with = "opt_string")]
    pub user_data_128: Option<u128>,
    #[serde(skip_serializing_if = "Option::is_none", with = "opt_string")]
    pub user_data_64: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_data_32: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ledger: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none", with = "opt_string")]
    pub timestamp_min: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none", with = "opt_string")]
    pub timestamp_max: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub reversed: bool,
}

mod opt_string {
    pub fn serialize<T: std::fmt::Display, S: serde::Serializer>(
        v: &Option<T>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match v {
            Some(v) => s.collect_str(v),
            None => s.serialize_none(),
        }
    }
}

impl QueryFilter {
    /// The filter of the page after `page` (the same filter, the window moved to its cursor);
    /// `None` after the last page.
    pub fn next<T>(&self, page: &Page<T>) -> Option<QueryFilter> {
        match (
            self.reversed,
            page.next_timestamp_min,
            page.next_timestamp_max,
        ) {
            (false, Some(min), _) => Some(QueryFilter {
                timestamp_min: Some(min),
                ..*self
            }),
            (true, _, Some(max)) => Some(QueryFilter {
                timestamp_max: Some(max),
                ..*self
            }),
            _ => None,
        }
    }
}

/// A page of a query: the items and the cursor of the next page, if the window may hold more.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_timestamp_min: Option<u64>,
    pub next_timestamp_max: Option<u64>,
}

#[derive(Deserialize)]
pub(crate) struct AccountsOut {
    accounts: Vec<Account>,
    #[serde(default, with = "opt_dec")]
    next_timestamp_min: Option<u64>,
    #[serde(default, with = "opt_dec")]
    next_timestamp_max: Option<u64>,
}

#[derive(Deserialize)]
pub(crate) struct TransfersOut {
    transfers: Vec<Transfer>,
    #[serde(default, with = "opt_dec")]
    next_timestamp_min: Option<u64>,
    #[serde(default, with = "opt_dec")]
    next_timestamp_max: Option<u64>,
}

impl From<AccountsOut> for Page<Account> {
    fn from(p: AccountsOut) -> Self {
        Page {
            items: p.accounts,
            next_timestamp_min: p.next_timestamp_min,
            next_timestamp_max: p.next_timestamp_max,
        }
    }
}

impl From<TransfersOut> for Page<Transfer> {
    fn from(p: TransfersOut) -> Self {
        Page {
            items: p.transfers,
            next_timestamp_min: p.next_timestamp_min,
            next_timestamp_max: p.next_timestamp_max,
        }
    }
}

/// What a change-feed event did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChangeKind {
    SinglePhase,
    TwoPhasePending,
    TwoPhasePosted,
    TwoPhaseVoided,
    /// The pending transfer expired (`Change::transfer` is the pending transfer).
    TwoPhaseExpired,
    /// A kind this version does not know (from a newer server).
    Other(String),
}

impl<'de> Deserialize<'de> for ChangeKind {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(match String::deserialize(d)?.as_str() {
            "single_phase" => ChangeKind::SinglePhase,
            "two_phase_pending" => ChangeKind::TwoPhasePending,
            "two_phase_posted" => ChangeKind::TwoPhasePosted,
            "two_phase_voided" => ChangeKind::TwoPhaseVoided,
            "two_phase_expired" => ChangeKind::TwoPhaseExpired,
            other => ChangeKind::Other(other.to_string()),
        })
    }
}

/// An account's id and its balances right after a change.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
pub struct AccountBalances {
    pub id: AccountId,
    #[serde(flatten)]
    pub balances: Balances,
}

/// One event of the change feed.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct Change {
    #[serde(rename = "type")]
    pub kind: ChangeKind,
    /// The event's own timestamp (an expiry's is later than its transfer's).
    pub timestamp: Timestamp,
    pub transfer: Transfer,
    pub debit_account: AccountBalances,
    pub credit_account: AccountBalances,
}

/// A page of the change feed.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct ChangesPage {
    pub changes: Vec<Change>,
    /// The last event's timestamp (or the `after` sent, on an empty page): the next `after`.
    #[serde(with = "dec")]
    pub next_after: u64,
}

/// A member of the cluster as a node's status lists it.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct MemberStatus {
    pub id: u64,
    /// The member's client address (absent for a single node).
    #[serde(default)]
    pub http_addr: Option<String>,
    /// `leader`, `follower` or `learner`.
    pub role: String,
}

/// A node's status (`GET /v1/status`): its view of the cluster. Fields this version does not
/// read are ignored.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct Status {
    pub node_id: u64,
    /// `leader`, `follower`, `candidate`, ...
    pub role: String,
    pub term: u64,
    /// The leader this node knows of (`None` during an election).
    pub leader_id: Option<u64>,
    pub commit_index: u64,
    pub applied_index: u64,
    #[serde(default)]
    pub members: Vec<MemberStatus>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_filters_send_strings_and_page_on() {
        let f = QueryFilter {
            ledger: Some(1),
            user_data_64: Some(7),
            ..Default::default()
        };
        assert_eq!(
            serde_json::to_string(&f).unwrap(),
            r#"{"user_data_64":"7","ledger":1}"#
        );
        let page: Page<Account> = Page {
            items: vec![],
            next_timestamp_min: Some(9),
            next_timestamp_max: None,
        };
        assert_eq!(f.next(&page).unwrap().timestamp_min, Some(9));
        let reversed = QueryFilter {
            reversed: true,
            ..f
        };
        assert_eq!(reversed.next(&page), None);
        let h = HistoryFilter {
            after: Some(Timestamp(3)),
            side: Some(Side::Credits),
            ..Default::default()
        };
        assert_eq!(h.query_string(), "after=3&side=credits");
    }
}
