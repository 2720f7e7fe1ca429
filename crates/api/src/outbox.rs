//! The dead-letter queue over HTTP (admin only): list the payments the relay gave up on, send
//! one back to its processor under a new reservation, or discard it. Each action is one outbox
//! event in the log and a record in the replicated audit trail; a follower forwards it.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Extension, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use bulwark_ledger::access::Actor;
use bulwark_ledger::outbox::{OutboxCommand, OutboxMessage, OutboxResult, OutboxState};
use bulwark_ledger::{BatchResults, Operation, Transfer, TransferId};
use bulwark_limits::MAX_AUDIT_PAGE;
use bulwark_node::{Answer, Query as NodeQuery, RequestError};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::auth::Principal;
use crate::decimal::Dec;
use crate::{forward, no_leader, path_id, query, ApiError, AppState, Authorization, Hop, Write};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DeadParams {
    /// The last payment id of the previous page.
    after: Option<Dec<u128>>,
    limit: Option<usize>,
}

/// `GET /v1/outbox/dead?after=&limit=`: dead payments by id, a page at a time.
pub(crate) async fn list_dead(
    State(state): State<Arc<AppState>>,
    params: Result<Query<DeadParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let params = query(params)?;
    let limit = params.limit.unwrap_or(100);
    if limit == 0 || limit > MAX_AUDIT_PAGE {
        return Err(ApiError::bad_request(
            "invalid_limit",
            format!("limit must be 1 to {MAX_AUDIT_PAGE}"),
        ));
    }
    let after = TransferId(params.after.map_or(0, |d| d.0));
    let outcome = state
        .node
        .read(NodeQuery::DeadLetters { after, limit })
        .await?;
    let Answer::DeadLetters(dead) = outcome.answer else {
        unreachable!("a dead-letter query answers dead letters");
    };
    let next = (dead.len() == limit)
        .then(|| dead.last().map(|(m, _)| m.payment.0.to_string()))
        .flatten();
    let payments: Vec<Value> = dead.iter().map(|(m, t)| dead_json(m, t)).collect();
    Ok(Json(json!({ "payments": payments, "next_after": next })).into_response())
}

fn dead_json(m: &OutboxMessage, payment: &Transfer) -> Value {
    let OutboxState::Dead { at, reason } = &m.state else {
        unreachable!("only dead messages are listed")
    };
    json!({
        "payment_id": m.payment.0.to_string(),
        "pending_id": m.pending.0.to_string(),
        "processor_account_id": m.processor.0.to_string(),
        "debit_account_id": payment.debit_account_id.0.to_string(),
        "amount": payment.amount.to_string(),
        "ledger": payment.ledger,
        "code": payment.code,
        "queued_at": m.queued_at.0.to_string(),
        "dead_at": at.0.to_string(),
        "reason": reason.kind.name(),
        "detail": reason.detail,
        "retries": m.retries,
    })
}

/// What an operator does to a dead payment.
#[derive(Clone, Copy)]
pub(crate) enum Action {
    Retry,
    Discard,
}

impl Action {
    fn name(self) -> &'static str {
        match self {
            Action::Retry => "retry",
            Action::Discard => "discard",
        }
    }
}

pub(crate) async fn retry(
    state: State<Arc<AppState>>,
    principal: Extension<Principal>,
    Authorization(authorization): Authorization,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let request = Write::plain(Hop::Client, authorization, Bytes::new());
    act(&state, principal.0, Action::Retry, payment_id(id)?, request).await
}

pub(crate) async fn discard(
    state: State<Arc<AppState>>,
    principal: Extension<Principal>,
    Authorization(authorization): Authorization,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let request = Write::plain(Hop::Client, authorization, Bytes::new());
    act(
        &state,
        principal.0,
        Action::Discard,
        payment_id(id)?,
        request,
    )
    .await
}

pub(crate) fn payment_id(raw: Result<Path<String>, PathRejection>) -> Result<TransferId, ApiError> {
    path_id(raw, "payment").map(TransferId)
}

/// Proposes the action on `payment` (forwarded to the leader from a follower).
pub(crate) async fn act(
    state: &AppState,
    principal: Principal,
    action: Action,
    payment: TransferId,
    request: Write,
) -> Result<Response, ApiError> {
    let actor = Actor::Token(principal.token);
    // A retry reserves the money again under a new pending transfer; its id is drawn here
    // (an id already taken makes the retry fail with `exists`, and the operator asks again).
    let new_pending = TransferId(fastrand::u128(1..u128::MAX));
    let command = match action {
        Action::Retry => OutboxCommand::Retry {
            payment,
            pending: new_pending,
            actor,
        },
        Action::Discard => OutboxCommand::Discard { payment, actor },
    };
    if let Some(full) = state.node.disk_full_error() {
        return Err(full.into());
    }
    let outcome = match state.node.write(Operation::Outbox(vec![command])).await {
        Ok(outcome) => outcome,
        Err(RequestError::NotLeader {
            leader: Some(leader),
        }) if leader != state.node_id && request.hop == Hop::Client => {
            let route = format!("outbox/dead/{payment}/{}", action.name());
            return forward(state, leader, &route, request).await;
        }
        Err(RequestError::NotLeader { .. }) => return Err(no_leader()),
        Err(e) => return Err(e.into()),
    };
    let BatchResults::Outbox(results) = outcome.results else {
        unreachable!("an outbox command answers an outbox result");
    };
    answer(
        action,
        payment,
        new_pending,
        results[0],
        outcome.commit_index.0,
    )
}

fn answer(
    action: Action,
    payment: TransferId,
    new_pending: TransferId,
    result: OutboxResult,
    index: u64,
) -> Result<Response, ApiError> {
    let status = match result {
        OutboxResult::Ok => {
            let mut body = json!({"result": "ok", "payment_id": payment.0.to_string()});
            if let Action::Retry = action {
                body["pending_id"] = json!(new_pending.0.to_string());
            }
            let mut response = Json(body).into_response();
            response
                .headers_mut()
                .insert("bulwark-commit-index", index.into());
            return Ok(response);
        }
        OutboxResult::NotFound => StatusCode::NOT_FOUND,
        _ => StatusCode::CONFLICT,
    };
    Err(ApiError {
        status,
        code: result.name(),
        message: format!(
            "{} of payment {payment}: {}",
            action.name(),
            result.name().replace('_', " ")
        ),
    })
}
