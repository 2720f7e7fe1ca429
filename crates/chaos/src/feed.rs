//! The change feed (`GET /v1/changes`): parsing its events into the history's terms and reading
//! a node's whole feed at the end of a run. The checks on it are in `checker/feed.rs`.

use std::net::SocketAddr;

use serde_json::Value;

use crate::client::{balance_from_json, dec, transfer_from_json, Client};
use crate::history::{Change, ChangeKind, Phase};

/// Events per page: well under the API's 8189, so that a page (a few hundred bytes an event)
/// comes back within the harness's short control timeout.
pub const FEED_PAGE: u64 = 2_000;

/// One event as the API shows it; `None` if anything is missing or of the wrong type.
pub fn change_from_json(v: &Value) -> Option<Change> {
    let kind = match v["type"].as_str()? {
        "single_phase" => ChangeKind::SinglePhase,
        "two_phase_pending" => ChangeKind::TwoPhasePending,
        "two_phase_posted" => ChangeKind::TwoPhasePosted,
        "two_phase_voided" => ChangeKind::TwoPhaseVoided,
        "two_phase_expired" => ChangeKind::TwoPhaseExpired,
        _ => return None,
    };
    Some(Change {
        kind,
        timestamp: dec(&v["timestamp"])?,
        transfer: transfer_from_json(&v["transfer"])?,
        debit_account: balance_from_json(&v["debit_account"])?,
        credit_account: balance_from_json(&v["credit_account"])?,
    })
}

/// The events of one page and its `next_after`; `None` if the body is not a page.
///
/// The payments' events (their own ledger, `crate::payments`) are left out: they are checked
/// apart, and their posts and voids have 128-bit ids the bank's history does not use.
pub fn page_from_json(body: &Value) -> Option<(Vec<Change>, u64)> {
    let changes = body["changes"]
        .as_array()?
        .iter()
        .filter(|c| c["transfer"]["ledger"] != crate::payments::LEDGER)
        .map(change_from_json)
        .collect::<Option<Vec<_>>>()?;
    Some((changes, dec(&body["next_after"])?))
}

/// The timestamp of a page's last event, payments included (`None`: the page is empty).
fn raw_last(body: &Value) -> Option<u64> {
    body["changes"]
        .as_array()?
        .last()
        .and_then(|c| dec(&c["timestamp"]))
}

/// A node's whole feed, from the start, paged until a page comes back empty. A page whose
/// `next_after` is not its last event's timestamp would make the paging skip or repeat events:
/// it is an error, as is any answer that is not a page.
pub async fn read_feed(client: &Client, node: SocketAddr) -> anyhow::Result<Vec<Change>> {
    let mut all: Vec<Change> = Vec::new();
    let mut after = 0u64;
    loop {
        let path = format!("/v1/changes?after={after}&limit={FEED_PAGE}");
        let answer = client.get(node, &path).await;
        anyhow::ensure!(
            answer.phase == Phase::Ok,
            "reading the change feed after {after}: {:?}",
            answer.error
        );
        let (page, next) = page_from_json(&answer.body).ok_or_else(|| {
            anyhow::anyhow!(
                "the change feed after {after} is not a page: {}",
                answer.body
            )
        })?;
        let last = raw_last(&answer.body);
        let expected = last.unwrap_or(after);
        anyhow::ensure!(
            next == expected,
            "the change feed after {after}: next_after {next}, but the page ends at {expected}"
        );
        if last.is_none() {
            return Ok(all);
        }
        all.extend(page);
        after = next;
    }
}
