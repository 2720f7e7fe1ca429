//! The harness's HTTP client for one request, and how each answer maps onto Jepsen's phases.
//!
//! The mapping is the heart of the test's honesty: a `fail` tells the checker the write was
//! certainly not applied, so only answers that guarantee it are `fail`; everything else that is
//! not a success is `info` (indefinite).

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;

use crate::history::{Balance, Phase, Transfer};

/// The answer to one request, as the history records it.
#[derive(Debug, Clone)]
pub struct Answer {
    pub phase: Phase,
    /// HTTP status, if an answer came.
    pub status: Option<u16>,
    pub body: Value,
    pub commit_index: Option<u64>,
    pub applied_index: Option<u64>,
    /// What went wrong, for `fail` and `info`.
    pub error: Option<String>,
}

/// Error words that guarantee a write was not applied (`overloaded`: refused before it reached
/// the node loop; `starting`: refused before its token could be checked).
pub const DEFINITE_REFUSALS: [&str; 5] = [
    "no_leader",
    "write_dropped",
    "disk_full",
    "overloaded",
    "starting",
];

#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
}

impl Client {
    /// A client whose requests carry `token` and give up after `timeout`.
    pub fn new(timeout: Duration, token: &str) -> Client {
        Client {
            http: reqwest::Client::builder()
                .default_headers(bulwark_harness::bearer_headers(token))
                .timeout(timeout)
                .connect_timeout(Duration::from_millis(500))
                .pool_max_idle_per_host(4)
                .build()
                .expect("an HTTP client builds"),
        }
    }

    async fn send(&self, request: reqwest::RequestBuilder, write: bool) -> Answer {
        let response = match request.send().await {
            Ok(r) => r,
            Err(e) => {
                let phase = phase_of_lost_answer(e.is_connect(), write);
                return Answer {
                    phase,
                    status: None,
                    body: Value::Null,
                    commit_index: None,
                    applied_index: None,
                    error: Some(describe(&e)),
                };
            }
        };
        let status = response.status().as_u16();
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok())
        };
        let commit_index = header("bulwark-commit-index");
        let applied_index = header("bulwark-applied-index");
        let body = match response.bytes().await {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or(Value::Null),
            Err(e) => {
                return Answer {
                    phase: phase_of_lost_answer(false, write),
                    status: Some(status),
                    body: Value::Null,
                    commit_index,
                    applied_index,
                    error: Some(format!("answer cut off: {}", describe(&e))),
                };
            }
        };
        let word = body["error"].as_str().unwrap_or("").to_string();
        let phase = phase_of_answer(status, &word, write);
        let error = (phase != Phase::Ok).then(|| {
            format!(
                "{status} {word}: {}",
                body["message"].as_str().unwrap_or("(no message)")
            )
        });
        Answer {
            phase,
            status: Some(status),
            body,
            commit_index,
            applied_index,
            error,
        }
    }

    /// POST /v1/transfers.
    pub async fn transfers(&self, node: SocketAddr, batch: &[Transfer]) -> Answer {
        let body: Vec<Value> = batch.iter().map(transfer_json).collect();
        let request = self
            .http
            .post(format!("http://{node}/v1/transfers"))
            .json(&body);
        self.send(request, true).await
    }

    /// POST /v1/accounts.
    pub async fn accounts(&self, node: SocketAddr, body: &Value) -> Answer {
        let request = self
            .http
            .post(format!("http://{node}/v1/accounts"))
            .json(body);
        self.send(request, true).await
    }

    /// GET a path (linearizable unless the path asks for `consistency=stale`).
    pub async fn get(&self, node: SocketAddr, path: &str) -> Answer {
        let request = self.http.get(format!("http://{node}{path}"));
        self.send(request, false).await
    }

    /// POST a membership change (`learners`, `promote`, `remove`).
    pub async fn membership(&self, node: SocketAddr, what: &str, body: &Value) -> Answer {
        let request = self
            .http
            .post(format!("http://{node}/v1/cluster/{what}"))
            .json(body);
        self.send(request, true).await
    }
}

/// The phase of a request that got an answer with `status` and error word `word`: a 2xx is `ok`;
/// a read that did not succeed changed nothing, so it is `fail`; a write is `fail` only when the
/// answer proves it was not applied (a 4xx: judged before it reached the log; or a word of
/// [`DEFINITE_REFUSALS`]), else `info`.
pub fn phase_of_answer(status: u16, word: &str, write: bool) -> Phase {
    if (200..300).contains(&status) {
        Phase::Ok
    } else if !write || (400..500).contains(&status) || DEFINITE_REFUSALS.contains(&word) {
        Phase::Fail
    } else {
        Phase::Info
    }
}

/// The phase of a request whose answer never came (or was cut off): a write that never connected
/// was certainly not sent (`fail`); one that was sent may have been applied (`info`); a read
/// changed nothing either way (`fail`).
pub fn phase_of_lost_answer(never_connected: bool, write: bool) -> Phase {
    if write && !never_connected {
        Phase::Info
    } else {
        Phase::Fail
    }
}

fn describe(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timed out".into()
    } else if e.is_connect() {
        "connection refused".into()
    } else {
        // The innermost cause says the most (reset, broken pipe...).
        let mut cause: &dyn std::error::Error = e;
        while let Some(next) = cause.source() {
            cause = next;
        }
        format!("connection lost: {cause}")
    }
}

/// The JSON the API takes for one transfer. A post of amount 0 in the history means the full
/// pending amount, which the API takes as a post without an amount.
pub fn transfer_json(t: &Transfer) -> Value {
    let mut json = serde_json::json!({
        "id": t.id,
        "debit_account_id": t.debit,
        "credit_account_id": t.credit,
        "amount": t.amount,
        "ledger": t.ledger,
        "code": 1,
        "flags": t.flags,
        "pending_id": t.pending_id,
        "timeout": t.timeout,
    });
    if t.is_post() && t.amount == 0 {
        json.as_object_mut()
            .expect("a transfer is an object")
            .remove("amount");
    }
    json
}

/// A transfer as the API shows it, in the history's terms.
pub fn transfer_from_json(v: &Value) -> Option<Transfer> {
    Some(Transfer {
        id: dec(&v["id"])?,
        debit: dec(&v["debit_account_id"])?,
        credit: dec(&v["credit_account_id"])?,
        amount: dec(&v["amount"])?,
        ledger: v["ledger"].as_u64()? as u32,
        flags: v["flags"]
            .as_array()?
            .iter()
            .filter_map(|f| f.as_str().map(str::to_string))
            .collect(),
        pending_id: dec(&v["pending_id"]).unwrap_or(0),
        timeout: v["timeout"].as_u64().unwrap_or(0) as u32,
        timestamp: dec(&v["timestamp"]).unwrap_or(0),
    })
}

/// The balances of an account as the API shows it.
pub fn balance_from_json(v: &Value) -> Option<Balance> {
    Some(Balance {
        id: dec(&v["id"])?,
        debits_pending: dec(&v["debits_pending"])?,
        debits_posted: dec(&v["debits_posted"])?,
        credits_pending: dec(&v["credits_pending"])?,
        credits_posted: dec(&v["credits_posted"])?,
    })
}

/// A ledger field wider than 32 bits, which the API answers as a decimal string (the
/// workload's values all fit u64).
pub fn dec(v: &Value) -> Option<u64> {
    v.as_str()?.parse().ok()
}
