//! HTTP API v1: the JSON edge of a node (axum).
//!
//! It owns the wire format — strict parsing of every request, one JSON shape per answer, the
//! 4xx error words — and the HTTP metrics. It turns requests into ledger operations and queries
//! for the node and answers with what the node says. It must never change state itself, never
//! answer a write before the node has made it durable, and never let a malformed request reach
//! the node: a bad batch is refused whole, with nothing changed.

mod admin;
pub mod auth;
mod console;
mod decimal;
mod error;
mod history;
mod internal;
mod json;
mod membership;
mod openapi;
mod outbox;
mod request_id;
mod search;
mod snapshot;

use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{DefaultBodyLimit, FromRequestParts, MatchedPath, Path, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bulwark_ledger::{AccountId, Operation, TransferId};
use bulwark_limits::{ACK_ALL_TIMEOUT, FORWARD_TIMEOUT, IN_SYNC_WITHIN, MAX_BODY_BYTES};
use bulwark_node::metrics::{RequestLabels, RouteLabels};
use bulwark_node::{Answer, LogIndex, NodeHandle, NodeId, Query as NodeQuery, RequestError};
use serde::Deserialize;
use serde_json::json;
use std::net::SocketAddr;

use bulwark_transport::PeerHttpClient;
use http_body_util::{BodyExt, Full};

pub use error::ApiError;
pub use internal::{internal_router, serve_internal};

pub(crate) struct AppState {
    node: NodeHandle,
    node_id: NodeId,
    /// Internal HTTP to the other members' peer ports, where a follower forwards writes
    /// (`None`: it cannot, and answers `no_leader`).
    peers: Option<PeerHttpClient>,
    limiter: auth::RateLimiter,
    refusals: Option<bulwark_refusals::RefusalLog>,
}

/// How the API treats its callers and reaches the other members.
#[derive(Clone)]
pub struct ApiOptions {
    /// Requests a second each token may send on average (bursts of one second's worth).
    pub token_rate_limit: u32,
    /// Where refused requests are recorded (`None`: nowhere, as in unit tests).
    pub refusals: Option<bulwark_refusals::RefusalLog>,
    /// Internal HTTP to the other members (`None`: a follower cannot forward; tests).
    pub peers: Option<PeerHttpClient>,
}

impl Default for ApiOptions {
    fn default() -> Self {
        ApiOptions {
            token_rate_limit: bulwark_limits::DEFAULT_TOKEN_RATE_LIMIT,
            refusals: None,
            peers: None,
        }
    }
}

/// Where a write comes from: a client's may be forwarded to the leader; one a follower already
/// forwarded is never forwarded again (two nodes that each think the other leads would
/// otherwise pass it back and forth).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Hop {
    Client,
    Forwarded,
}

/// The `authorization` header a client sent, relayed unchanged when its write is forwarded;
/// read in place, where the `HeaderMap` extractor would copy every header of every write.
struct Authorization(Option<HeaderValue>);

impl<S: Send + Sync> FromRequestParts<S> for Authorization {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Authorization(
            parts.headers.get(header::AUTHORIZATION).cloned(),
        ))
    }
}

/// The router of API v1 for a single node that never forwards (tests).
pub fn router(node: NodeHandle) -> Router {
    cluster_router(node, 1, ApiOptions::default())
}

/// The router of API v1 for a member of a cluster. A follower forwards writes to the leader
/// over `peers` (internal HTTP on the leader's peer port, whose address the node's handle
/// knows). It serves no internal route and reads no `bulwark-*` header a client sends.
pub fn cluster_router(node: NodeHandle, node_id: u64, options: ApiOptions) -> Router {
    // Shared, not cloned per request: a handle holds a path and several counted references.
    let state = Arc::new(AppState {
        node,
        node_id: NodeId(node_id),
        peers: options.peers,
        limiter: auth::RateLimiter::new(options.token_rate_limit),
        refusals: options.refusals,
    });
    Router::new()
        .route("/v1/accounts", post(create_accounts))
        .route("/v1/transfers", post(create_transfers))
        .route("/v1/accounts/{id}", get(get_account))
        .route("/v1/transfers/{id}", get(get_transfer))
        .route(
            "/v1/accounts/{id}/transfers",
            get(history::get_account_transfers),
        )
        .route(
            "/v1/accounts/{id}/balances",
            get(history::get_account_balances),
        )
        .route("/v1/accounts/query", post(search::query_accounts))
        .route("/v1/transfers/query", post(search::query_transfers))
        .route("/v1/changes", get(search::changes))
        .route("/v1/status", get(status))
        .route("/metrics", get(metrics_text))
        .route("/v1/cluster/learners", post(membership::add_learner))
        .route("/v1/cluster/promote", post(membership::promote))
        .route("/v1/cluster/remove", post(membership::remove))
        .route(
            "/v1/tokens",
            get(admin::list_tokens).post(admin::create_token),
        )
        .route("/v1/tokens/{id}/revoke", post(admin::revoke_token))
        .route("/v1/backup/snapshot", get(snapshot::backup_snapshot))
        .route("/v1/backup/record", post(admin::record_backup))
        .route("/v1/audit", get(admin::audit))
        .route("/v1/audit/local", get(admin::local_audit))
        .route("/v1/outbox/dead", get(outbox::list_dead))
        .route("/v1/outbox/dead/{id}/retry", post(outbox::retry))
        .route("/v1/outbox/dead/{id}/discard", post(outbox::discard))
        .route("/health/live", get(|| async { "ok" }))
        .route("/health/ready", get(ready))
        .route("/v1/openapi.json", get(openapi::document))
        .route("/v1/whoami", get(auth::whoami))
        .route("/", get(console::index))
        .route("/console/{file}", get(console::asset))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(middleware::from_fn_with_state(state.clone(), serve_request))
        .with_state(state)
}

/// Every request's way in: a node removed from its cluster serves nothing (its state may be
/// stale forever), and every answer is counted by route and status. One middleware, not two:
/// each `from_fn` layer boxes a future and clones the inner service per request, which a
/// one-transfer request pays for in full.
async fn serve_request(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    let route = route_label(&request);
    let started = Instant::now();
    let id = request_id::of(request.headers());
    let mut response = request_id::serve(id.clone(), answer(&state, request, next)).await;
    response.headers_mut().insert(request_id::HEADER, id);
    let metrics = &state.node.metrics;
    metrics
        .http_latency
        .get_or_create(&RouteLabels { route })
        .observe(started.elapsed().as_secs_f64());
    metrics
        .http_requests
        .get_or_create(&RequestLabels {
            route,
            status: response.status().as_u16(),
        })
        .inc();
    response
}

/// The answer to a request: a refusal (removed node, not JSON, not admitted) or the route's.
async fn answer(state: &AppState, mut request: Request, next: Next) -> Response {
    if state.node.is_removed() && request.uri().path() != "/health/live" {
        ApiError {
            status: StatusCode::GONE,
            code: "node_removed",
            message: format!(
                "node {} was removed from the cluster and serves nothing; ask another member",
                state.node_id
            ),
        }
        .into_response()
    } else if let Some(refused) = not_json(&request) {
        record_refusal(state, &request, refused.code, refused.status, None);
        refused.into_response()
    } else {
        match admit(state, &mut request) {
            Ok(()) => next.run(request).await,
            Err(refusal) => {
                let response = refusal.into_response_ref();
                if !matches!(refusal, auth::Refusal::Starting) {
                    let who = refusal.token().map(|t| format!("token {t}"));
                    record_refusal(state, &request, refusal.code(), response.status(), who);
                }
                response
            }
        }
    }
}

/// Puts a refused request in the node's local refusals log: what was asked, by whom (a valid
/// token's id), from where.
fn record_refusal(
    state: &AppState,
    request: &Request,
    code: &str,
    status: StatusCode,
    who: Option<String>,
) {
    // In the request's span: the line names the request id the client got back.
    tracing::debug!(
        code,
        status = status.as_u16(),
        method = %request.method(),
        path = request.uri().path(),
        "request refused"
    );
    let Some(log) = &state.refusals else {
        return;
    };
    let from = request
        .extensions()
        .get::<axum::extract::ConnectInfo<SocketAddr>>()
        .map(|c| c.0.to_string());
    let what = format!("{} {}", request.method(), request.uri().path());
    log.record(bulwark_refusals::Refusal::now(
        code,
        status.as_u16(),
        who,
        what,
        from,
    ));
}

/// Authenticates a request for the role its route needs and takes it from its token's rate;
/// the handler finds who asked in the request's [`auth::Principal`] extension.
fn admit(state: &AppState, request: &mut Request) -> Result<(), auth::Refusal> {
    let Some(needs) = auth::required_role(request.method(), request.uri().path()) else {
        return Ok(());
    };
    let access = state.node.access();
    let principal =
        auth::authenticate(request.headers().get(header::AUTHORIZATION), &access, needs)?;
    state.limiter.take(principal.token, &access)?;
    request.extensions_mut().insert(principal);
    Ok(())
}

/// A POST whose body is not declared `application/json` is refused before anything reads it: a
/// browser sends `text/plain` and form bodies cross-site without asking first, so any page an
/// operator opens could otherwise move money. A declared type is quoted back only in part.
fn not_json(request: &Request) -> Option<ApiError> {
    let takes_a_body = matches!(
        request.uri().path(),
        "/v1/accounts"
            | "/v1/transfers"
            | "/v1/cluster/learners"
            | "/v1/cluster/promote"
            | "/v1/cluster/remove"
            | "/v1/tokens"
    );
    if request.method() != axum::http::Method::POST || !takes_a_body {
        return None;
    }
    let declared = request.headers().get(header::CONTENT_TYPE);
    let essence = declared
        .and_then(|v| v.to_str().ok())
        .and_then(|d| d.split(';').next());
    if essence.is_some_and(|e| e.trim().eq_ignore_ascii_case("application/json")) {
        return None;
    }
    let shown = match declared {
        Some(d) => {
            let text = String::from_utf8_lossy(d.as_bytes());
            format!("`{}`", text.chars().take(64).collect::<String>())
        }
        None => "none".to_string(),
    };
    Some(ApiError {
        status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
        code: "unsupported_media_type",
        message: format!("a request body must be application/json; Content-Type was {shown}"),
    })
}

/// The route a request matched, as the metrics label it.
fn route_label(request: &Request) -> &'static str {
    match request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str())
    {
        Some("/v1/accounts") => "/v1/accounts",
        Some("/v1/transfers") => "/v1/transfers",
        Some("/v1/accounts/{id}") => "/v1/accounts/{id}",
        Some("/v1/transfers/{id}") => "/v1/transfers/{id}",
        Some("/v1/accounts/{id}/transfers") => "/v1/accounts/{id}/transfers",
        Some("/v1/accounts/{id}/balances") => "/v1/accounts/{id}/balances",
        Some("/v1/accounts/query") => "/v1/accounts/query",
        Some("/v1/transfers/query") => "/v1/transfers/query",
        Some("/v1/changes") => "/v1/changes",
        Some("/v1/status") => "/v1/status",
        Some("/metrics") => "/metrics",
        Some(_) => "other",
        None => "unmatched",
    }
}

async fn method_not_allowed(method: axum::http::Method) -> ApiError {
    ApiError {
        status: StatusCode::METHOD_NOT_ALLOWED,
        code: "method_not_allowed",
        message: format!("this route does not take {method}"),
    }
}

/// Ready while this node leads or has heard from a leader within an election timeout, and its
/// disk is not full.
async fn ready(State(state): State<Arc<AppState>>) -> Result<&'static str, ApiError> {
    if let Some(full) = state.node.disk_full_error() {
        return Err(ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            code: "not_ready",
            message: full.to_string(),
        });
    }
    if state.node.is_ready() {
        Ok("ready")
    } else {
        Err(ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            code: "not_ready",
            message: "no leader heard from within an election timeout".into(),
        })
    }
}

async fn not_found() -> ApiError {
    ApiError::not_found("not_found", "no such route in API v1")
}

fn body(body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError {
                status: StatusCode::PAYLOAD_TOO_LARGE,
                code: "body_too_large",
                message: format!("the body is larger than {MAX_BODY_BYTES} bytes"),
            }
        } else {
            ApiError::bad_request("unreadable_body", e.body_text())
        }
    })
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct WriteParams {
    ack: Option<Ack>,
}

/// `majority` (the default): answer once a majority has the write durable. `all`: also wait
/// until every in-sync replica has it (Kafka's acks=all).
#[derive(Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
enum Ack {
    Majority,
    All,
}

async fn create_accounts(
    State(state): State<Arc<AppState>>,
    Authorization(authorization): Authorization,
    params: Result<Query<WriteParams>, axum::extract::rejection::QueryRejection>,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let write = Write::new(Hop::Client, authorization, params, raw)?;
    write_accounts(&state, write).await
}

async fn create_transfers(
    State(state): State<Arc<AppState>>,
    Authorization(authorization): Authorization,
    params: Result<Query<WriteParams>, axum::extract::rejection::QueryRejection>,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let write = Write::new(Hop::Client, authorization, params, raw)?;
    write_transfers(&state, write).await
}

/// A write request as read from the wire, before its body is parsed.
struct Write {
    hop: Hop,
    authorization: Option<HeaderValue>,
    ack: Ack,
    raw: Bytes,
}

impl Write {
    fn new(
        hop: Hop,
        authorization: Option<HeaderValue>,
        params: Result<Query<WriteParams>, axum::extract::rejection::QueryRejection>,
        raw: Result<Bytes, BytesRejection>,
    ) -> Result<Write, ApiError> {
        let ack = query(params)?.ack.unwrap_or(Ack::Majority);
        Ok(Write {
            hop,
            authorization,
            ack,
            raw: body(raw)?,
        })
    }
}

async fn write_accounts(state: &AppState, request: Write) -> Result<Response, ApiError> {
    let accounts = json::parse_accounts(&request.raw)?;
    write(
        state,
        Operation::CreateAccounts(accounts),
        "accounts",
        request,
    )
    .await
}

async fn write_transfers(state: &AppState, request: Write) -> Result<Response, ApiError> {
    let transfers = json::parse_transfers(&request.raw)?;
    write(
        state,
        Operation::CreateTransfers(transfers),
        "transfers",
        request,
    )
    .await
}

fn no_leader() -> ApiError {
    ApiError {
        status: StatusCode::SERVICE_UNAVAILABLE,
        code: "no_leader",
        message: "no leader is known right now (an election is under way or this node is cut \
                  off); retry shortly"
            .into(),
    }
}

/// A forwarded write whose answer was lost: the leader may or may not have applied it.
fn forwarded_outcome_unknown(leader: NodeId, e: &dyn std::fmt::Display) -> ApiError {
    ApiError {
        status: StatusCode::SERVICE_UNAVAILABLE,
        code: "outcome_unknown",
        message: format!(
            "the write was sent to the leader (node {leader}) but its answer was lost ({e}): it may \
             or may not be applied; retry it with the same ids (a retry never applies it twice)"
        ),
    }
}

/// The answer of a node that was asked, by a follower, to take a write while another node leads
/// (it handed leadership over): the write was not applied, and `bulwark-leader` names the node
/// the follower should forward it to instead.
fn moved_to(leader: NodeId) -> Response {
    let mut response = ApiError {
        status: StatusCode::SERVICE_UNAVAILABLE,
        code: "not_leader",
        message: format!(
            "this node no longer leads (node {leader} does); the write was not applied"
        ),
    }
    .into_response();
    response
        .headers_mut()
        .insert(LEADER_HEADER, HeaderValue::from(leader.0));
    response
}

/// Names the leader in a `not_leader` answer to a forwarded write.
const LEADER_HEADER: &str = "bulwark-leader";

/// Forwards a write this follower cannot take to the leader (see `forward_once`); if the node
/// it reached no longer leads and names the one that does (a handover), forwards it there, at
/// most [`FORWARD_HOPS`] times.
async fn forward(
    state: &AppState,
    leader: NodeId,
    route: &str,
    request: Write,
) -> Result<Response, ApiError> {
    let mut leader = leader;
    for _ in 1..FORWARD_HOPS {
        let response = forward_once(state, leader, route, &request).await?;
        let moved = (response.status() == StatusCode::SERVICE_UNAVAILABLE)
            .then(|| response.headers().get(LEADER_HEADER))
            .flatten()
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
            .map(NodeId)
            // This very node may be the one named: it won the election while the write was on
            // its way to the old leader. It takes the write then through its own internal route,
            // as any forwarded write (this race is rare; the write is not applied yet).
            .filter(|&l| l != leader);
        match moved {
            Some(next) => leader = next,
            None => return Ok(response),
        }
    }
    forward_once(state, leader, route, &request).await
}

/// Nodes a follower tries in turn for one forwarded write.
const FORWARD_HOPS: usize = 3;

/// Sends a write this follower cannot take to the leader's internal route
/// `/internal/v1/forward/{route}` (over internal HTTP on its peer port), and relays the
/// leader's answer; the whole exchange within `FORWARD_TIMEOUT`.
async fn forward_once(
    state: &AppState,
    leader: NodeId,
    route: &str,
    request: &Write,
) -> Result<Response, ApiError> {
    let (Some(peers), Some(addr)) = (&state.peers, state.node.member_peer_addr(leader)) else {
        return Err(no_leader());
    };
    let query = if request.ack == Ack::All {
        "?ack=all"
    } else {
        ""
    };
    let mut outgoing = axum::http::Request::post(format!("/internal/v1/forward/{route}{query}"))
        .header(header::CONTENT_TYPE, "application/json");
    if let Some(authorization) = &request.authorization {
        outgoing = outgoing.header(header::AUTHORIZATION, authorization);
    }
    // The leader's log lines of this write name the id the client got.
    if let Some(id) = request_id::current() {
        outgoing = outgoing.header(request_id::HEADER, id);
    }
    let outgoing = outgoing
        .body(Full::new(request.raw.clone()))
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let started = Instant::now();
    let answer = peers
        .send(leader, addr.clone(), outgoing, FORWARD_TIMEOUT)
        .await
        .map_err(|e| {
            if e.never_sent() {
                // Never reached the leader: the write was certainly not applied.
                ApiError {
                    status: StatusCode::SERVICE_UNAVAILABLE,
                    code: "no_leader",
                    message: format!(
                        "the leader (node {leader} at {addr}) could not be reached: {e}"
                    ),
                }
            } else {
                // The leader may have taken the write before the connection failed.
                forwarded_outcome_unknown(leader, &e)
            }
        })?;
    let (head, body) = answer.into_parts();
    let rest = FORWARD_TIMEOUT.saturating_sub(started.elapsed());
    let bytes = match tokio::time::timeout(rest, body.collect()).await {
        Ok(Ok(collected)) => collected.to_bytes(),
        Ok(Err(e)) => return Err(forwarded_outcome_unknown(leader, &e)),
        Err(_) => return Err(forwarded_outcome_unknown(leader, &"the answer timed out")),
    };
    let mut response = Response::builder().status(head.status);
    for name in [header::CONTENT_TYPE, header::RETRY_AFTER] {
        if let Some(v) = head.headers.get(&name) {
            response = response.header(name, v);
        }
    }
    for name in ["bulwark-commit-index", LEADER_HEADER] {
        if let Some(v) = head.headers.get(name) {
            response = response.header(name, v);
        }
    }
    response
        .header("bulwark-forwarded-to", leader.to_string())
        .body(axum::body::Body::from(bytes))
        .map_err(|e| ApiError::internal(e.to_string()))
}

async fn write(
    state: &AppState,
    operation: Operation,
    route: &str,
    request: Write,
) -> Result<Response, ApiError> {
    // A node whose disk is full refuses writes itself, and never forwards them either.
    if let Some(full) = state.node.disk_full_error() {
        return Err(full.into());
    }
    // An ack=all write takes its place among the waiters first: a node too busy to wait refuses
    // the write before it enters the log (503 `overloaded`), never after it committed.
    let ack_all = match request.ack {
        Ack::All => Some(state.node.ack_all_permit().await?),
        Ack::Majority => None,
    };
    let outcome = match state.node.write(operation).await {
        Ok(outcome) => outcome,
        Err(RequestError::NotLeader {
            leader: Some(leader),
        }) if leader != state.node_id && request.hop == Hop::Client => {
            return forward(state, leader, route, request).await;
        }
        Err(RequestError::NotLeader {
            leader: Some(leader),
        }) if leader != state.node_id => return Ok(moved_to(leader)),
        Err(RequestError::NotLeader { .. }) => return Err(no_leader()),
        Err(e) => return Err(e.into()),
    };
    if let Some(permit) = ack_all {
        let waited = tokio::time::timeout(
            ACK_ALL_TIMEOUT,
            state.node.wait_replicated(outcome.commit_index, permit),
        )
        .await;
        match waited {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e.into()),
            Err(_) => {
                return Err(ApiError {
                    status: StatusCode::GATEWAY_TIMEOUT,
                    code: "ack_all_timeout",
                    message: format!(
                        "the write committed at index {} on a majority, but not every in-sync \
                         replica had it within {} s",
                        outcome.commit_index,
                        ACK_ALL_TIMEOUT.as_secs()
                    ),
                })
            }
        }
    }
    let body = json::batch_answer(&outcome.results.names());
    let content_type = HeaderValue::from_static("application/json");
    let mut response = ([(header::CONTENT_TYPE, content_type)], body).into_response();
    response
        .headers_mut()
        .insert("bulwark-commit-index", outcome.commit_index.0.into());
    Ok(response)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ReadParams {
    pub(crate) consistency: Option<Consistency>,
}

/// Linearizable (the default) reads wait for a Raft read index; `stale` reads answer from this
/// node's state at once, even without a leader. A single node is its own leader: both are current.
#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Consistency {
    Linearizable,
    Stale,
}

pub(crate) async fn read(
    state: &AppState,
    query: NodeQuery,
    consistency: Option<Consistency>,
) -> Result<bulwark_node::ReadOutcome, ApiError> {
    match consistency {
        Some(Consistency::Stale) => Ok(state.node.read_stale(query).await?),
        Some(Consistency::Linearizable) | None => {
            // A linearizable read needs this node's Raft, which is paused while the disk is full.
            if let Some(full) = state.node.disk_full_error() {
                return Err(full.into());
            }
            Ok(state.node.read(query).await?)
        }
    }
}

/// Reads until the node has built what `query` needs: it builds a large memtable's indexes and
/// change feed a step per read, answering without a page (`built` gives `None`) until done.
pub(crate) async fn read_built<T>(
    state: &AppState,
    query: NodeQuery,
    consistency: Option<Consistency>,
    built: impl Fn(Answer) -> Option<T>,
) -> Result<(LogIndex, T), ApiError> {
    loop {
        let read = read(state, query.clone(), consistency).await?;
        if let Some(found) = built(read.answer) {
            return Ok((read.applied_index, found));
        }
    }
}

pub(crate) fn query<T: serde::de::DeserializeOwned>(
    q: Result<Query<T>, axum::extract::rejection::QueryRejection>,
) -> Result<T, ApiError> {
    q.map(|Query(t)| t)
        .map_err(|e| ApiError::bad_request("invalid_query", quoted(&e.body_text())))
}

/// At most this many characters of a client's own input are quoted back in an error: enough
/// to recognise it, never a whole oversized query or path.
const QUOTED_CHARS: usize = 160;

fn quoted(text: &str) -> String {
    match text.char_indices().nth(QUOTED_CHARS) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_string(),
    }
}

/// A path id as written by a client: decimal digits only, no sign, no leading zero, 1 to
/// `u128::MAX` (so that `+1`, `01` and `1` are never three spellings of one account).
pub(crate) fn path_id(
    raw: Result<Path<String>, PathRejection>,
    what: &str,
) -> Result<u128, ApiError> {
    let Ok(Path(raw)) = raw else {
        return Err(ApiError::bad_request(
            "invalid_id",
            format!("{what} id is not UTF-8"),
        ));
    };
    match decimal::parse_strict::<u128>(&raw) {
        Ok(0) => Err(ApiError::bad_request(
            "invalid_id",
            format!("{what} id must not be 0"),
        )),
        Ok(id) => Ok(id),
        Err(why) => Err(ApiError::bad_request(
            "invalid_id",
            format!("{what} id {why}"),
        )),
    }
}

pub(crate) fn read_response(body: impl serde::Serialize, applied_index: LogIndex) -> Response {
    let mut response = Json(body).into_response();
    response
        .headers_mut()
        .insert("bulwark-applied-index", applied_index.0.into());
    response
}

async fn get_account(
    State(state): State<Arc<AppState>>,
    raw: Result<Path<String>, PathRejection>,
    params: Result<Query<ReadParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let consistency = query(params)?.consistency;
    let id = AccountId(path_id(raw, "account")?);
    let read = read(&state, NodeQuery::Account(id), consistency).await?;
    match read.answer {
        Answer::Account(Some(a)) => {
            Ok(read_response(json::AccountOut::from(a), read.applied_index))
        }
        Answer::Account(None) => Err(ApiError::not_found(
            "account_not_found",
            format!("no account with id {id}"),
        )),
        _ => unreachable!("the node answers an account query with an account"),
    }
}

async fn get_transfer(
    State(state): State<Arc<AppState>>,
    raw: Result<Path<String>, PathRejection>,
    params: Result<Query<ReadParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let consistency = query(params)?.consistency;
    let id = TransferId(path_id(raw, "transfer")?);
    let read = read(&state, NodeQuery::Transfer(id), consistency).await?;
    match read.answer {
        Answer::Transfer(Some((t, status))) => Ok(read_response(
            json::TransferOut::new(t, status, None),
            read.applied_index,
        )),
        Answer::Transfer(None) => Err(ApiError::not_found(
            "transfer_not_found",
            format!("no transfer with id {id}"),
        )),
        _ => unreachable!("the node answers a transfer query with a transfer"),
    }
}

pub(crate) async fn status(State(state): State<Arc<AppState>>) -> Result<Response, ApiError> {
    let read = state.node.read(NodeQuery::Status).await?;
    let Answer::Status(s) = read.answer else {
        unreachable!("the node answers a status query with its status")
    };
    let log = json!({
        "first_index": s.log_first_index.0,
        "last_index": s.log_last_index.0,
        "bytes": s.log_bytes,
        "segments": s.log_segments,
    });
    let body = match &s.cluster {
        None => json!({
            "node_id": state.node_id.0,
            "role": "leader",
            "term": 0,
            "leader_id": state.node_id.0,
            "commit_index": s.applied_index.0,
            "applied_index": s.applied_index.0,
            "checkpoint_index": s.checkpointed_index.0,
            "last_timestamp": s.last_timestamp.0,
            "accounts": s.accounts,
            "outbox": {"outbound": s.outbox_outbound, "dead": s.outbox_dead},
            "log": log,
            "disk_full": state.node.is_disk_full(),
            "members": [{
                "id": state.node_id.0,
                "role": "leader",
                "match_index": s.applied_index.0,
                "lag": 0,
                "in_sync": true,
            }],
        }),
        Some(c) => json!({
            "cluster_id": c.cluster_id,
            "node_id": c.node_id.0,
            "role": c.role,
            "term": c.term.0,
            "leader_id": c.leader.map(|l| l.0),
            "commit_index": c.commit_index.0,
            "applied_index": s.applied_index.0,
            "checkpoint_index": s.checkpointed_index.0,
            "last_timestamp": s.last_timestamp.0,
            "accounts": s.accounts,
            "outbox": {"outbound": s.outbox_outbound, "dead": s.outbox_dead},
            "log": log,
            "disk_full": state.node.is_disk_full(),
            "members": c.members.iter().map(|m| json!({
                "id": m.id.0,
                "http_addr": m.http_addr.to_string(),
                "role": if Some(m.id) == c.leader { "leader" } else if m.learner { "learner" } else { "follower" },
                "match_index": m.match_index.map(|i| i.0),
                "lag": m.lag,
                "lag_ms": m.lag_ms,
                "in_sync": m.recent_active.map(|active| active && m.lag_ms.is_some_and(|ms| u128::from(ms) <= IN_SYNC_WITHIN.as_millis())),
            })).collect::<Vec<_>>(),
            "archive": s.archive.as_ref().map(|a| json!({
                "target": a.target,
                "archiving": a.archiving,
                "archived_index": a.archived_index,
                "lag_entries": a.lag_entries,
                "chunks_uploaded": a.chunks_uploaded,
                "failures": a.failures,
                "last_upload_ms": a.last_upload_ms,
                "last_error": a.last_error,
            })),
        }),
    };
    Ok(read_response(body, read.applied_index))
}

/// Parses a JSON body that must be `shape` (e.g. "a JSON object {ids: [node id]}"), saying where
/// it is not.
pub(crate) fn parse_json<T: serde::de::DeserializeOwned>(
    raw: &[u8],
    shape: &str,
) -> Result<T, ApiError> {
    let de = &mut serde_json::Deserializer::from_slice(raw);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        ApiError::from_json(e.inner(), path, shape)
    })
}

impl Write {
    /// A request without `ack` (membership, tokens: answered once applied).
    fn plain(hop: Hop, authorization: Option<HeaderValue>, raw: Bytes) -> Write {
        Write {
            hop,
            authorization,
            ack: Ack::Majority,
            raw,
        }
    }
}

async fn metrics_text(State(state): State<Arc<AppState>>, _headers: HeaderMap) -> Response {
    let mut response = state.node.metrics.encode().into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}
