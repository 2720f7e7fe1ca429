//! The internal router: what members ask of each other, served only on the peer port inside
//! mutual TLS (the transport hands each `h2` connection over with the node its certificate
//! names, which every request carries as a [`Peer`] extension). A client's port serves none
//! of it.
//!
//! - `GET /internal/v1/snapshot`: this node's last checkpoint, streamed (a follower catching up);
//! - `POST /internal/v1/forward/{accounts,transfers}` (`?ack=all` as the client asked) and
//!   `POST /internal/v1/forward/cluster/{learners,promote,remove}`: a write a follower took
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

use crate::{body, ApiError, AppState, Hop, Write, WriteParams};

/// The node at the other end of an internal connection, as its certificate names it.
#[derive(Clone, Copy, Debug)]
pub struct Peer(pub NodeId);

/// The internal router of node `node_id` (see the module's documentation).
pub fn internal_router(node: NodeHandle, node_id: u64) -> Router {
    let state = Arc::new(AppState {
        node,
        node_id: NodeId(node_id),
        // Never used: nothing here forwards.
        peers: None,
    });
    Router::new()
        .route("/internal/v1/snapshot", get(snapshot))
        .route("/internal/v1/forward/accounts", post(accounts))
        .route("/internal/v1/forward/transfers", post(transfers))
        .route("/internal/v1/forward/cluster/learners", post(learners))
        .route("/internal/v1/forward/cluster/promote", post(promote))
        .route("/internal/v1/forward/cluster/remove", post(remove))
        .fallback(crate::not_found)
        .method_not_allowed_fallback(crate::method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
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
    crate::snapshot(&state, peer).await
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
    headers: HeaderMap,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let authorization = headers.get(header::AUTHORIZATION).cloned();
    crate::change_learners(&state, Hop::Forwarded, authorization, body(raw)?).await
}

async fn promote(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let authorization = headers.get(header::AUTHORIZATION).cloned();
    crate::change_promote(&state, Hop::Forwarded, authorization, body(raw)?).await
}

async fn remove(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let authorization = headers.get(header::AUTHORIZATION).cloned();
    crate::change_remove(&state, Hop::Forwarded, authorization, body(raw)?).await
}
