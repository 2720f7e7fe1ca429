//! The internal router: what members ask of each other, served only on the peer port inside
//! mutual TLS (the transport hands each `h2` connection over with the node its certificate
//! names, which every request carries as a [`Peer`] extension). A client's port serves none
//! of it.
//!
//! - `GET /internal/v1/snapshot`: this node's last checkpoint, streamed (a follower catching up);
//! - `GET /internal/v1/status`: `/v1/status`, for a member about to bootstrap that asks whether
//!   the others know it to have lost its log;
//! - `POST /internal/v1/forward/{accounts,transfers}` (`?ack=all` as the client asked),
//!   `POST /internal/v1/forward/cluster/{learners,promote,remove}`, `.../tokens`,
//!   `.../tokens/{id}/revoke` and `.../backup/record`: a write a follower took
//!   from a client, executed as the client route would, but never forwarded again (a node
//!   that does not lead answers 503 `no_leader`).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::{header, HeaderMap};
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Extension, Router};
use bulwark_limits::MAX_BODY_BYTES;
use bulwark_node::{NodeHandle, NodeId};
use bulwark_transport::InternalConnection;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;

use crate::auth::Principal;
use crate::{body, ApiError, AppState, Hop, Write, WriteParams};
use axum::middleware;
use bulwark_ledger::access::Role;

/// The node at the other end of an internal connection, as its certificate names it.
#[derive(Clone, Copy, Debug)]
pub struct Peer(pub NodeId);

/// The internal router of node `node_id` (see the module's documentation).
pub fn internal_router(node: NodeHandle, node_id: u64) -> Router {
    let state = Arc::new(AppState {
        node,
        node_id: NodeId(node_id),
        // Never used: nothing here forwards, and the client's node took the rate already.
        peers: None,
        limiter: crate::auth::RateLimiter::new(u32::MAX),
        refusals: None,
    });
    Router::new()
        .route("/internal/v1/snapshot", get(snapshot))
        .route("/internal/v1/status", get(crate::status))
        .route("/internal/v1/forward/accounts", post(accounts))
        .route("/internal/v1/forward/transfers", post(transfers))
        .route("/internal/v1/forward/cluster/learners", post(learners))
        .route("/internal/v1/forward/cluster/promote", post(promote))
        .route("/internal/v1/forward/cluster/remove", post(remove))
        .route("/internal/v1/forward/tokens", post(create_token))
        .route("/internal/v1/forward/backup/record", post(record_backup))
        .route(
            "/internal/v1/forward/tokens/{id}/revoke",
            post(revoke_token),
        )
        .route(
            "/internal/v1/forward/outbox/dead/{id}/retry",
            post(dead_letter_retry),
        )
        .route(
            "/internal/v1/forward/outbox/dead/{id}/discard",
            post(dead_letter_discard),
        )
        .fallback(crate::not_found)
        .method_not_allowed_fallback(crate::method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            admit_forwarded,
        ))
        .with_state(state)
}

/// A forwarded request carries its client's token, which the leader checks itself (its view of
/// the tokens is at least as new as the follower's): a peer's certificate lets it forward, not
/// act. The snapshot and the status need no token: a member's certificate is the whole of the
/// permission (a starting member asks the others' status to learn whether it lost its log).
async fn admit_forwarded(
    State(state): State<Arc<AppState>>,
    mut request: axum::extract::Request,
    next: middleware::Next,
) -> Response {
    let path = request.uri().path();
    let needs = if path == "/internal/v1/snapshot" || path == "/internal/v1/status" {
        None
    } else if path.starts_with("/internal/v1/forward/accounts")
        || path.starts_with("/internal/v1/forward/transfers")
    {
        Some(Role::Write)
    } else {
        Some(Role::Admin)
    };
    if let Some(needs) = needs {
        let access = state.node.access();
        let header = request.headers().get(header::AUTHORIZATION);
        match crate::auth::authenticate(header, &access, needs) {
            Ok(principal) => {
                request.extensions_mut().insert(principal);
            }
            Err(refusal) => return refusal.into_response_ref(),
        }
    }
    // A forwarded write is served under the id its client got from the follower.
    let id = crate::request_id::of(request.headers());
    crate::request_id::serve(id, next.run(request)).await
}

/// Serves one internal connection (HTTP/2) with `router` until either side closes it; every
/// request carries the connection's [`Peer`].
pub async fn serve_internal(router: Router, connection: InternalConnection) {
    let peer = connection.peer();
    let remote = connection.remote();
    let service = TowerToHyperService::new(router.layer(Extension(Peer(peer))));
    let served = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
        .serve_connection(TokioIo::new(connection), service)
        .await;
    if let Err(e) = served {
        tracing::debug!(peer = peer.0, %remote, error = %e, "internal HTTP connection ended");
    }
}

async fn snapshot(
    State(state): State<Arc<AppState>>,
    Extension(Peer(peer)): Extension<Peer>,
) -> Result<Response, ApiError> {
    crate::snapshot::snapshot(&state, peer).await
}

/// A forwarded write as the leader reads it: the client's `authorization` header, relayed.
fn forwarded(
    headers: &HeaderMap,
    params: Result<Query<WriteParams>, QueryRejection>,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Write, ApiError> {
    let authorization = headers.get(header::AUTHORIZATION).cloned();
    Write::new(Hop::Forwarded, authorization, params, raw)
}

async fn accounts(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    params: Result<Query<WriteParams>, QueryRejection>,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    crate::write_accounts(&state, forwarded(&headers, params, raw)?).await
}

async fn transfers(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    params: Result<Query<WriteParams>, QueryRejection>,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    crate::write_transfers(&state, forwarded(&headers, params, raw)?).await
}

async fn learners(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Principal>,
    headers: HeaderMap,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    crate::membership::change_learners(&state, principal, forwarded_plain(&headers, raw)?).await
}

async fn promote(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Principal>,
    headers: HeaderMap,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    crate::membership::change_promote(&state, principal, forwarded_plain(&headers, raw)?).await
}

async fn remove(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Principal>,
    headers: HeaderMap,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    crate::membership::change_remove(&state, principal, forwarded_plain(&headers, raw)?).await
}

/// A forwarded request without `ack` (membership, tokens), with its client's token.
fn forwarded_plain(
    headers: &HeaderMap,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Write, ApiError> {
    let authorization = headers.get(header::AUTHORIZATION).cloned();
    Ok(Write::plain(Hop::Forwarded, authorization, body(raw)?))
}

async fn create_token(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Principal>,
    headers: HeaderMap,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    crate::admin::create_token_with(&state, principal, forwarded_plain(&headers, raw)?).await
}

async fn record_backup(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Principal>,
    headers: HeaderMap,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    crate::admin::record_backup_with(&state, principal, forwarded_plain(&headers, raw)?).await
}

async fn revoke_token(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Principal>,
    headers: HeaderMap,
    id: Result<axum::extract::Path<String>, axum::extract::rejection::PathRejection>,
) -> Result<Response, ApiError> {
    let id = crate::admin::token_id(id)?;
    let request = forwarded_plain(&headers, Ok(Bytes::new()))?;
    crate::admin::revoke_token_with(&state, principal, id, request).await
}

async fn dead_letter_retry(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Principal>,
    headers: HeaderMap,
    id: Result<axum::extract::Path<String>, axum::extract::rejection::PathRejection>,
) -> Result<Response, ApiError> {
    let payment = crate::outbox::payment_id(id)?;
    let request = forwarded_plain(&headers, Ok(Bytes::new()))?;
    crate::outbox::act(
        &state,
        principal,
        crate::outbox::Action::Retry,
        payment,
        request,
    )
    .await
}

async fn dead_letter_discard(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Principal>,
    headers: HeaderMap,
    id: Result<axum::extract::Path<String>, axum::extract::rejection::PathRejection>,
) -> Result<Response, ApiError> {
    let payment = crate::outbox::payment_id(id)?;
    let request = forwarded_plain(&headers, Ok(Bytes::new()))?;
    crate::outbox::act(
        &state,
        principal,
        crate::outbox::Action::Discard,
        payment,
        request,
    )
    .await
}
