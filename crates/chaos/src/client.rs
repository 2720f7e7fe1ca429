//! The harness's HTTP client for one request (`bulwark-client` without retries), and how each answer maps onto Jepsen's phases.
//!
//! The mapping is the heart of the test's honesty: a `fail` tells the checker the write was
//! certainly not applied, so only answers that guarantee it are `fail`; everything else that is
//! not a success is `info` (indefinite).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bulwark_client::Method;

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
/// the node loop; `starting`: refused before its token could be checked): `bulwark-client`'s
/// list, which this checker is what verifies.
pub const DEFINITE_REFUSALS: [&str; 6] = bulwark_client::DEFINITE_REFUSALS;

/// The run's client: one `bulwark-client` per node, each sending to that node only, once. A
/// recorded operation is one request: the client never retries inside it (a retry would hide
/// an indefinite answer behind a later one), never routes it to another node, and keeps no
/// breaker that would refuse a node the nemesis has just healed.
#[derive(Clone)]
pub struct Client {
    timeout: Duration,
    token: String,
    nodes: Arc<Mutex<HashMap<SocketAddr, bulwark_client::Client>>>,
}

impl Client {
    /// A client whose requests carry `token` and give up after `timeout`.
    pub fn new(timeout: Duration, token: &str) -> Client {
        Client {
            timeout,
            token: token.to_string(),
            nodes: Arc::default(),
        }
    }

    fn node(&self, node: SocketAddr) -> bulwark_client::Client {
        let mut nodes = self
            .nodes
            .lock()
            .expect("the clients' lock is never poisoned");
        nodes
            .entry(node)
            .or_insert_with(|| {
                bulwark_client::ClientBuilder::new([format!("http://{node}")])
                    .token(self.token.clone())
                    .retry(bulwark_client::RetryPolicy::none())
                    .breaker(bulwark_client::BreakerPolicy {
                        failures_to_open: u32::MAX,
                        cool_down: Duration::ZERO,
                    })
                    .routing(bulwark_client::Routing::RoundRobin)
                    .learn_members(false)
                    .request_timeout(self.timeout)
                    .connect_timeout(Duration::from_millis(500))
                    .build()
                    .expect("a client of one node builds")
            })
            .clone()
    }

    async fn send(
        &self,
        node: SocketAddr,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
        write: bool,
    ) -> Answer {
        let answer = match self.node(node).raw(method, path, body, write).await {
            Ok(answer) => answer,
            Err(e) => return lost_answer(&e, write),
        };
        let body: Value = serde_json::from_slice(&answer.body).unwrap_or(Value::Null);
        let word = body["error"].as_str().unwrap_or("").to_string();
        let phase = phase_of_answer(answer.status, &word, write);
        let error = (phase != Phase::Ok).then(|| {
            format!(
                "{} {word}: {}",
                answer.status,
                body["message"].as_str().unwrap_or("(no message)")
            )
        });
        Answer {
            phase,
            status: Some(answer.status),
            body,
            commit_index: answer.commit_index,
            applied_index: answer.applied_index,
            error,
        }
    }

    /// POST /v1/transfers.
    pub async fn transfers(&self, node: SocketAddr, batch: &[Transfer]) -> Answer {
        let body: Vec<Value> = batch.iter().map(transfer_json).collect();
        let body = serde_json::to_vec(&body).expect("JSON values serialize");
        self.send(node, Method::POST, "/v1/transfers", Some(body), true)
            .await
    }

    /// POST /v1/accounts.
    pub async fn accounts(&self, node: SocketAddr, body: &Value) -> Answer {
        let body = serde_json::to_vec(body).expect("JSON values serialize");
        self.send(node, Method::POST, "/v1/accounts", Some(body), true)
            .await
    }

    /// GET a path (linearizable unless the path asks for `consistency=stale`).
    pub async fn get(&self, node: SocketAddr, path: &str) -> Answer {
        self.send(node, Method::GET, path, None, false).await
    }

    /// POST a membership change (`learners`, `promote`, `remove`).
    pub async fn membership(&self, node: SocketAddr, what: &str, body: &Value) -> Answer {
        let body = serde_json::to_vec(body).expect("JSON values serialize");
        let path = format!("/v1/cluster/{what}");
        self.send(node, Method::POST, &path, Some(body), true).await
    }
}

/// A request whose (whole) answer never came: its phase, and why in the history's words.
fn lost_answer(e: &bulwark_client::Error, write: bool) -> Answer {
    use bulwark_client::{Error, TransportKind};
    let (never_sent, status, error) = match e {
        Error::Transport {
            kind: TransportKind::Connect,
            ..
        } => (true, None, "connection refused".to_string()),
        Error::Transport {
            kind: TransportKind::Timeout,
            ..
        } => (false, None, "timed out".to_string()),
        Error::Transport {
            status: Some(status),
            message,
            ..
        } => (false, Some(*status), message.clone()),
        Error::Transport { message, .. } => (false, None, format!("connection lost: {message}")),
        // No attempt, no retry: whatever else it is, nothing was sent.
        other => (true, None, other.to_string()),
    };
    Answer {
        phase: phase_of_lost_answer(never_sent, write),
        status,
        body: Value::Null,
        commit_index: None,
        applied_index: None,
        error: Some(error),
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
