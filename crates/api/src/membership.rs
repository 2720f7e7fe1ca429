//! The membership routes: `POST /v1/cluster/{learners,promote,remove}` (admin), and their
//! forwarded twins on the internal router. A change goes through the replicated log; a follower
//! forwards it to the leader.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Extension, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bulwark_ledger::access::Actor;
use bulwark_node::cluster::{Member, MembershipChange};
use bulwark_node::RequestError;
use serde::Deserialize;
use serde_json::json;

use crate::{
    auth, body, forward, no_leader, parse_json, ApiError, AppState, Authorization, Hop, Write,
};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LearnerIn {
    id: u64,
    #[serde(deserialize_with = "host_port")]
    peer_addr: bulwark_node::cluster::HostPort,
    #[serde(deserialize_with = "host_port")]
    http_addr: bulwark_node::cluster::HostPort,
}

/// An address as `IP:PORT` or `NAME:PORT` text.
fn host_port<'de, D: serde::Deserializer<'de>>(
    de: D,
) -> Result<bulwark_node::cluster::HostPort, D::Error> {
    let text = String::deserialize(de)?;
    text.parse().map_err(serde::de::Error::custom)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct IdsIn {
    ids: Vec<u64>,
}

pub(crate) async fn add_learner(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<auth::Principal>,
    Authorization(authorization): Authorization,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let request = Write::plain(Hop::Client, authorization, body(raw)?);
    change_learners(&state, principal, request).await
}

pub(crate) async fn promote(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<auth::Principal>,
    Authorization(authorization): Authorization,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let request = Write::plain(Hop::Client, authorization, body(raw)?);
    change_promote(&state, principal, request).await
}

pub(crate) async fn remove(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<auth::Principal>,
    Authorization(authorization): Authorization,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let request = Write::plain(Hop::Client, authorization, body(raw)?);
    change_remove(&state, principal, request).await
}

pub(crate) async fn change_learners(
    state: &AppState,
    principal: auth::Principal,
    request: Write,
) -> Result<Response, ApiError> {
    let raw = &request.raw;
    let learner: LearnerIn = parse_json(raw, "a JSON object {id, peer_addr, http_addr}")?;
    let change = MembershipChange::AddLearner(Member {
        id: learner.id,
        peer_addr: learner.peer_addr,
        http_addr: learner.http_addr,
    });
    membership(state, change, principal, "cluster/learners", request).await
}

/// Promote or remove (`make` says which) the node ids a request's body lists.
async fn change_ids(
    state: &AppState,
    principal: auth::Principal,
    request: Write,
    make: fn(Vec<u64>) -> MembershipChange,
    route: &str,
) -> Result<Response, ApiError> {
    let ids: IdsIn = parse_json(&request.raw, "a JSON object {ids: [node id]}")?;
    membership(state, make(ids.ids), principal, route, request).await
}

pub(crate) async fn change_promote(
    state: &AppState,
    principal: auth::Principal,
    request: Write,
) -> Result<Response, ApiError> {
    let make = MembershipChange::Promote;
    change_ids(state, principal, request, make, "cluster/promote").await
}

pub(crate) async fn change_remove(
    state: &AppState,
    principal: auth::Principal,
    request: Write,
) -> Result<Response, ApiError> {
    let make = MembershipChange::Remove;
    change_ids(state, principal, request, make, "cluster/remove").await
}

async fn membership(
    state: &AppState,
    change: MembershipChange,
    principal: auth::Principal,
    route: &str,
    request: Write,
) -> Result<Response, ApiError> {
    let actor = Actor::Token(principal.token);
    match state.node.change_membership(change, actor).await {
        Ok(index) => {
            let mut response = Json(json!({"result": "ok", "index": index.0})).into_response();
            response
                .headers_mut()
                .insert("bulwark-commit-index", index.0.into());
            Ok(response)
        }
        Err(RequestError::NotLeader {
            leader: Some(leader),
        }) if leader != state.node_id && request.hop == Hop::Client => {
            forward(state, leader, route, request).await
        }
        Err(RequestError::NotLeader { .. }) => Err(no_leader()),
        Err(e) => Err(e.into()),
    }
}
