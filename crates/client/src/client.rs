//! The client: nodes and their breakers, the leader it prefers, and one call's attempts.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use reqwest::Method;

use crate::error::Error;
use crate::limits;
use crate::pages::Status;
use crate::policy::{Breaker, BreakerPolicy, RetryPolicy};
use crate::transport::{self, Failure, Reply, Transport};

/// Which node a request goes to first.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Routing {
    /// The leader, found through `/v1/status` and followed when it changes; any other node
    /// while none is known (a follower forwards writes). The default.
    #[default]
    Leader,
    /// Each request to the next node in turn (followers forward writes, and every node serves
    /// reads): spreads load, and never asks for the leader.
    RoundRobin,
}

/// How to build a [`Client`].
#[derive(Clone, Debug)]
pub struct ClientBuilder {
    nodes: Vec<String>,
    token: Option<String>,
    ca: Option<CaSource>,
    retry: RetryPolicy,
    breaker: BreakerPolicy,
    request_timeout: Duration,
    connect_timeout: Duration,
    routing: Routing,
    learn_members: bool,
}

#[derive(Clone, Debug)]
enum CaSource {
    File(PathBuf),
    Pem(Vec<u8>),
}

impl ClientBuilder {
    /// A client of the nodes at these base URLs (`http://10.0.0.1:7070`, `https://...`); one
    /// is enough, the others are learned from its status.
    pub fn new<I, S>(nodes: I) -> ClientBuilder
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        ClientBuilder {
            nodes: nodes.into_iter().map(Into::into).collect(),
            token: None,
            ca: None,
            retry: RetryPolicy::default(),
            breaker: BreakerPolicy::default(),
            request_timeout: limits::DEFAULT_REQUEST_TIMEOUT,
            connect_timeout: limits::DEFAULT_CONNECT_TIMEOUT,
            routing: Routing::Leader,
            learn_members: true,
        }
    }

    /// The API token every request carries (`authorization: Bearer`).
    pub fn token(mut self, token: impl Into<String>) -> ClientBuilder {
        self.token = Some(token.into());
        self
    }

    /// The token in `$BULWARK_TOKEN`, if set and not blank (as the command line reads it).
    pub fn token_from_env(mut self) -> ClientBuilder {
        if let Ok(t) = std::env::var("BULWARK_TOKEN") {
            if !t.trim().is_empty() {
                self.token = Some(t.trim().to_string());
            }
        }
        self
    }

    /// The cluster's CA certificate file (`ca.crt`): the only one trusted for `https://`.
    pub fn ca_file(mut self, path: impl Into<PathBuf>) -> ClientBuilder {
        self.ca = Some(CaSource::File(path.into()));
        self
    }

    /// The cluster's CA certificate, PEM.
    pub fn ca_pem(mut self, pem: impl Into<Vec<u8>>) -> ClientBuilder {
        self.ca = Some(CaSource::Pem(pem.into()));
        self
    }

    pub fn retry(mut self, retry: RetryPolicy) -> ClientBuilder {
        self.retry = retry;
        self
    }

    pub fn breaker(mut self, breaker: BreakerPolicy) -> ClientBuilder {
        self.breaker = breaker;
        self
    }

    /// How long one attempt may take, connect to last byte.
    pub fn request_timeout(mut self, timeout: Duration) -> ClientBuilder {
        self.request_timeout = timeout;
        self
    }

    pub fn connect_timeout(mut self, timeout: Duration) -> ClientBuilder {
        self.connect_timeout = timeout;
        self
    }

    pub fn routing(mut self, routing: Routing) -> ClientBuilder {
        self.routing = routing;
        self
    }

    /// Whether members named by a node's status join the nodes tried (default: yes). Off, the
    /// client talks only to the addresses it was given (behind a proxy, say).
    pub fn learn_members(mut self, learn: bool) -> ClientBuilder {
        self.learn_members = learn;
        self
    }

    pub fn build(self) -> Result<Client, Error> {
        let nodes = self.nodes();
        if nodes.is_empty() {
            return Err(Error::Config(
                "a client needs at least one node address".into(),
            ));
        }
        let tls = match &self.ca {
            None => None,
            Some(CaSource::Pem(pem)) => Some(transport::tls_config(pem).map_err(Error::Config)?),
            Some(CaSource::File(path)) => {
                let pem = transport::read_ca(path).map_err(Error::Config)?;
                Some(transport::tls_config(&pem).map_err(Error::Config)?)
            }
        };
        let transport = Transport::new(self.token.as_deref(), tls, self.connect_timeout)
            .map_err(Error::Config)?;
        if let Some(https) = nodes.iter().find(|n| n.starts_with("https://")) {
            if !transport.has_tls() {
                return Err(Error::Config(format!(
                    "{https}: an https:// address needs the cluster's CA certificate \
                     (ClientBuilder::ca_file; the command line's --ca or BULWARK_CA)"
                )));
            }
        }
        let nodes = nodes.into_iter().map(Node::new).collect();
        Ok(Client {
            inner: Arc::new(Inner {
                transport,
                retry: self.retry,
                breaker: self.breaker,
                request_timeout: self.request_timeout,
                routing: self.routing,
                learn_members: self.learn_members,
                state: Mutex::new(State {
                    nodes,
                    leader: None,
                    next: 0,
                }),
            }),
        })
    }

    /// The addresses given, as base URLs without a trailing slash (`http://` if none given).
    fn nodes(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for n in &self.nodes {
            let n = n.trim().trim_end_matches('/');
            let base = if n.contains("://") {
                n.to_string()
            } else {
                format!("http://{n}")
            };
            if !n.is_empty() && !out.contains(&base) && out.len() < limits::MAX_NODES {
                out.push(base);
            }
        }
        out
    }
}

/// A client of a Bulwark cluster. Cheap to clone (the clones share connections, breakers and
/// the leader they know); safe to use from many tasks at once.
#[derive(Clone)]
pub struct Client {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    transport: Transport,
    retry: RetryPolicy,
    breaker: BreakerPolicy,
    request_timeout: Duration,
    routing: Routing,
    learn_members: bool,
    state: Mutex<State>,
}

struct State {
    nodes: Vec<Node>,
    /// The node believed to lead (an index into `nodes`).
    leader: Option<usize>,
    /// Where the next round-robin pick starts.
    next: usize,
}

struct Node {
    base: String,
    /// Its node id, once a status named it.
    id: Option<u64>,
    breaker: Breaker,
}

impl Node {
    fn new(base: String) -> Node {
        Node {
            base,
            id: None,
            breaker: Breaker::default(),
        }
    }
}

/// One request as the client sends it, as often as its policy allows.
pub(crate) struct Call {
    pub method: Method,
    pub path: String,
    pub body: Option<Bytes>,
    /// A write: a lost answer may mean it was applied.
    pub write: bool,
}

/// The final answer of a call, whatever its status.
pub(crate) struct Exchange {
    pub reply: Reply,
    pub node: String,
    pub attempts: u32,
    /// An earlier attempt of this write may have been applied (its answer never came, or said
    /// so).
    pub earlier_maybe_applied: bool,
}

impl Exchange {
    /// The answer as success, or as the error it is.
    pub(crate) fn success(self) -> Result<Exchange, Error> {
        if (200..300).contains(&self.reply.status) {
            return Ok(self);
        }
        let error = api_error(&self.node, &self.reply);
        if self.earlier_maybe_applied {
            return Err(Error::Indefinite {
                attempts: self.attempts,
                last: Box::new(error),
            });
        }
        Err(error)
    }
}

/// An error answer as an [`Error::Api`] (a body that is not `{"error","message"}` keeps its
/// status, with its text as the message).
pub(crate) fn api_error(node: &str, reply: &Reply) -> Error {
    let body: serde_json::Value = serde_json::from_slice(&reply.body).unwrap_or_default();
    let code = body["error"].as_str().unwrap_or("").to_string();
    let message = match body["message"].as_str() {
        Some(m) => m.to_string(),
        None => String::from_utf8_lossy(&reply.body)
            .chars()
            .take(200)
            .collect(),
    };
    Error::Api {
        node: node.to_string(),
        status: reply.status,
        code,
        message,
    }
}

fn should_retry_answer(status: u16) -> bool {
    status >= 500 || status == 429
}

impl Inner {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .expect("the client's state lock is never poisoned")
    }

    /// Sends `call` until an answer that is final (a success, a `4xx`, or any answer once the
    /// attempts or the deadline are used up); `Err` only when the last attempt got no answer.
    pub(crate) async fn execute(&self, call: &Call) -> Result<Exchange, Error> {
        let deadline = Instant::now() + self.retry.deadline;
        let mut attempts = 0u32;
        let mut maybe_applied = false;
        loop {
            let outcome = match self.pick(deadline).await {
                Ok(node) => {
                    attempts += 1;
                    self.attempt(node, call).await
                }
                Err(e) => Err(e),
            };
            let last = attempts >= self.retry.max_attempts || Instant::now() >= deadline;
            let failed = match outcome {
                Ok((reply, node)) if last || !should_retry_answer(reply.status) => {
                    return Ok(Exchange {
                        reply,
                        node,
                        attempts,
                        earlier_maybe_applied: maybe_applied,
                    });
                }
                Ok((reply, node)) => api_error(&node, &reply),
                Err(e) if last || !e.retryable() => {
                    return Err(give_up(e, call, attempts, maybe_applied))
                }
                Err(e) => e,
            };
            maybe_applied |= call.write && failed.may_have_applied();
            let wait = self.retry.backoff(attempts.max(1));
            let left = deadline.saturating_duration_since(Instant::now());
            tokio::time::sleep(wait.min(left)).await;
        }
    }

    /// One attempt at node `i`: its breaker and the leader are updated from what happened.
    async fn attempt(&self, i: usize, call: &Call) -> Result<(Reply, String), Error> {
        let base = self.state().nodes[i].base.clone();
        let mut guard = Verdict {
            inner: self,
            node: i,
            judged: false,
        };
        let sent = self
            .transport
            .send(
                &base,
                call.method.clone(),
                &call.path,
                call.body.clone(),
                self.request_timeout,
            )
            .await;
        let error = match &sent {
            Ok(reply) if (200..300).contains(&reply.status) => None,
            Ok(reply) => Some(api_error(&base, reply)),
            Err(f) => Some(Error::Transport {
                node: base.clone(),
                kind: f.kind,
                message: f.message.clone(),
                status: f.status,
            }),
        };
        guard.judged = true;
        self.judge(i, &sent, error.as_ref(), call.write);
        match (sent, error) {
            (Ok(reply), _) => Ok((reply, base)),
            (Err(_), Some(e)) => Err(e),
            (Err(_), None) => unreachable!("a lost answer is an error"),
        }
    }

    /// What an attempt at node `i` says about it (its breaker) and about the leader: a node
    /// that failed is not followed as leader, and `no_leader` means an election is under way.
    fn judge(&self, i: usize, sent: &Result<Reply, Failure>, error: Option<&Error>, write: bool) {
        let mut state = self.state();
        let node = &mut state.nodes[i];
        match error {
            Some(e) if e.node_failed() => node.breaker.failed(&self.breaker, Instant::now()),
            _ => node.breaker.succeeded(),
        }
        match (sent, error) {
            (Ok(reply), None) => follow_answer(&mut state, i, reply, write),
            (_, Some(e)) if e.code() == Some("no_leader") => state.leader = None,
            (_, Some(e)) if e.node_failed() && state.leader == Some(i) => state.leader = None,
            _ => {}
        }
    }

    /// The node for the next attempt: the leader if it is known and its breaker admits it,
    /// else (after asking the nodes who leads, under [`Routing::Leader`]) the next admitted
    /// node in turn. While every breaker is open it waits for the first cool-down to end, if
    /// that comes before the deadline.
    async fn pick(&self, deadline: Instant) -> Result<usize, Error> {
        let mut discovered = false;
        loop {
            let wake = {
                let mut state = self.state();
                let now = Instant::now();
                if self.routing == Routing::Leader {
                    if let Some(l) = state.leader {
                        if state.nodes[l].breaker.admit(now) {
                            return Ok(l);
                        }
                    }
                }
                let need_discovery =
                    self.routing == Routing::Leader && state.leader.is_none() && !discovered;
                if !need_discovery {
                    if let Some(i) = next_admitted(&mut state, now) {
                        return Ok(i);
                    }
                }
                (!need_discovery).then(|| earliest_try(&state))
            };
            match wake {
                None => {
                    discovered = true;
                    self.discover().await;
                }
                Some(Some(at)) if at < deadline => tokio::time::sleep_until(at.into()).await,
                Some(_) => return Err(Error::AllNodesOpen),
            }
        }
    }

    /// Asks the nodes, one after another, who leads, until one names a leader it knows.
    pub(crate) async fn discover(&self) {
        let candidates: Vec<(usize, String)> = {
            let mut state = self.state();
            let now = Instant::now();
            state
                .nodes
                .iter_mut()
                .enumerate()
                .filter_map(|(i, n)| n.breaker.admit(now).then(|| (i, n.base.clone())))
                .collect()
        };
        for (i, base) in candidates {
            let sent = self
                .transport
                .send(
                    &base,
                    Method::GET,
                    "/v1/status",
                    None,
                    limits::DISCOVERY_TIMEOUT,
                )
                .await;
            let status = match &sent {
                Ok(reply) if reply.status == 200 => {
                    serde_json::from_slice::<Status>(&reply.body).ok()
                }
                _ => None,
            };
            let mut state = self.state();
            let failed = match &sent {
                Ok(reply) => reply.status >= 500,
                Err(_) => true,
            };
            if failed {
                state.nodes[i].breaker.failed(&self.breaker, Instant::now());
            } else {
                state.nodes[i].breaker.succeeded();
            }
            if let Some(status) = status {
                self.learn(&mut state, i, &status);
                if state.leader.is_some() {
                    return;
                }
            }
        }
    }

    /// What a status says: the node's id, the members' ids and addresses, who leads.
    fn learn(&self, state: &mut State, i: usize, status: &Status) {
        state.nodes[i].id = Some(status.node_id);
        let scheme = state.nodes[i]
            .base
            .split("://")
            .next()
            .unwrap_or("http")
            .to_string();
        for m in &status.members {
            let Some(addr) = m.http_addr.as_deref().filter(|a| !unspecified(a)) else {
                continue;
            };
            let base = format!("{scheme}://{addr}");
            let room = state.nodes.len() < limits::MAX_NODES;
            match state.nodes.iter_mut().find(|n| n.base == base) {
                Some(n) => n.id = Some(m.id),
                None if self.learn_members && room => {
                    state.nodes.push(Node {
                        id: Some(m.id),
                        ..Node::new(base)
                    });
                }
                None => {}
            }
        }
        state.leader = status
            .leader_id
            .and_then(|l| state.nodes.iter().position(|n| n.id == Some(l)));
    }

    pub(crate) fn request_timeout(&self) -> Duration {
        self.request_timeout
    }

    pub(crate) fn leader_base(&self) -> Option<(String, Option<u64>)> {
        let state = self.state();
        state
            .leader
            .map(|l| (state.nodes[l].base.clone(), state.nodes[l].id))
    }
}

/// A successful answer about the leader: a follower that forwarded the write names the leader
/// (`bulwark-forwarded-to`); a write answered without it was applied by the node itself, the
/// leader.
fn follow_answer(state: &mut State, i: usize, reply: &Reply, write: bool) {
    match reply.header_u64("bulwark-forwarded-to") {
        Some(leader) => {
            // A leader not among the nodes known: ask again who leads, and learn its address.
            state.leader = state.nodes.iter().position(|n| n.id == Some(leader));
        }
        None if write => state.leader = Some(i),
        None => {}
    }
}

fn next_admitted(state: &mut State, now: Instant) -> Option<usize> {
    let n = state.nodes.len();
    for k in 0..n {
        let i = (state.next + k) % n;
        if state.nodes[i].breaker.admit(now) {
            state.next = (i + 1) % n;
            return Some(i);
        }
    }
    None
}

fn earliest_try(state: &State) -> Option<Instant> {
    state
        .nodes
        .iter()
        .filter_map(|n| n.breaker.next_try())
        .min()
}

fn unspecified(addr: &str) -> bool {
    addr.starts_with("0.0.0.0:") || addr.starts_with("[::]:")
}

/// The error a call ends with: a write that may have been applied by an earlier attempt says
/// so, even when its last attempt was refused for certain.
fn give_up(e: Error, call: &Call, attempts: u32, maybe_applied: bool) -> Error {
    let earlier = call.write && maybe_applied && attempts > 1;
    if earlier || (call.write && attempts > 1 && e.may_have_applied()) {
        Error::Indefinite {
            attempts,
            last: Box::new(e),
        }
    } else {
        e
    }
}

/// Puts back a breaker's probe if its attempt is dropped before it is judged (a caller's own
/// timeout cancelled the call), so the node is not shut out for good.
struct Verdict<'a> {
    inner: &'a Inner,
    node: usize,
    judged: bool,
}

impl Drop for Verdict<'_> {
    fn drop(&mut self) {
        if !self.judged {
            self.inner.state().nodes[self.node].breaker.released();
        }
    }
}

impl Client {
    /// Who the client believes leads: its base URL and node id (if a status named it).
    pub fn leader(&self) -> Option<(String, Option<u64>)> {
        self.inner.leader_base()
    }

    /// Asks the nodes who leads now (otherwise done when needed).
    pub async fn discover_leader(&self) -> Option<(String, Option<u64>)> {
        self.inner.discover().await;
        self.inner.leader_base()
    }

    /// The base URLs the client knows, given and learned.
    pub fn nodes(&self) -> Vec<String> {
        self.inner
            .state()
            .nodes
            .iter()
            .map(|n| n.base.clone())
            .collect()
    }
}
