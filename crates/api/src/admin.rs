//! The admin routes: API tokens (created, listed and revoked through the replicated log, so that
//! every node agrees on them) and the replicated audit trail.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{Extension, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use bulwark_ledger::access::{
    valid_token_name, Actor, AuditEvent, AuditRecord, Control, ControlCommand, ControlResult, Role,
    TokenId,
};
use bulwark_ledger::{BatchResults, Operation, Timestamp};
use bulwark_limits::MAX_AUDIT_PAGE;
use bulwark_node::{Answer, Query as NodeQuery, RequestError};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::auth::Principal;
use crate::{
    body, forward, no_leader, parse_json, query, quoted, ApiError, AppState, Authorization, Hop,
    Write,
};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenIn {
    name: String,
    role: String,
}

/// `POST /v1/tokens {"name","role"}`: a new token; its text is in this answer and nowhere else.
pub(crate) async fn create_token(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Principal>,
    Authorization(authorization): Authorization,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let request = Write::plain(Hop::Client, authorization, body(raw)?);
    create_token_with(&state, principal, request).await
}

/// Creates a token for a client's request, or for one a follower forwarded.
pub(crate) async fn create_token_with(
    state: &AppState,
    principal: Principal,
    request: Write,
) -> Result<Response, ApiError> {
    let input: TokenIn = parse_json(&request.raw, "a JSON object {name, role}")?;
    if !valid_token_name(&input.name) {
        return Err(ApiError::bad_request(
            "invalid_field",
            format!(
                "at .name: {} is not a token name (1 to {} characters of A-Z a-z 0-9 . _ -)",
                quoted(&input.name),
                bulwark_limits::MAX_TOKEN_NAME
            ),
        ));
    }
    let role = Role::from_name(&input.role).ok_or_else(|| {
        ApiError::bad_request(
            "invalid_field",
            format!(
                "at .role: {} is not a role (read, write or admin)",
                quoted(&input.role)
            ),
        )
    })?;
    let new = bulwark_token::generate();
    let id = TokenId(new.id);
    let command = ControlCommand::CreateToken {
        id,
        name: input.name.clone(),
        role,
        secret_hash: new.secret_hash,
    };
    let index = match control(state, principal, command, "tokens".into(), request).await? {
        Ok(index) => index,
        Err(response) => return Ok(response),
    };
    let answer = json!({
        "id": id.to_string(), "name": input.name, "role": role.name(), "token": new.text,
    });
    Ok(with_index(Json(answer).into_response(), index))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BackupRecordIn {
    backup: String,
    applied_index: u64,
    target: String,
}

/// `POST /v1/backup/record {"backup","applied_index","target"}`: a stored backup, into the
/// replicated audit trail (`bulwark backup create` sends it once the backup is complete).
pub(crate) async fn record_backup(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Principal>,
    Authorization(authorization): Authorization,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let request = Write::plain(Hop::Client, authorization, body(raw)?);
    record_backup_with(&state, principal, request).await
}

/// Records a backup for a client's request, or for one a follower forwarded.
pub(crate) async fn record_backup_with(
    state: &AppState,
    principal: Principal,
    request: Write,
) -> Result<Response, ApiError> {
    let input: BackupRecordIn = parse_json(
        &request.raw,
        "a JSON object {backup, applied_index, target}",
    )?;
    for (field, text) in [("backup", &input.backup), ("target", &input.target)] {
        if text.is_empty() || text.len() > bulwark_limits::MAX_AUDIT_TEXT {
            return Err(ApiError::bad_request(
                "invalid_field",
                format!(
                    "at .{field}: 1 to {} bytes, found {}",
                    bulwark_limits::MAX_AUDIT_TEXT,
                    text.len()
                ),
            ));
        }
    }
    let details = format!(
        "backup {} of the ledger at index {} stored in {}",
        input.backup, input.applied_index, input.target
    );
    let command = ControlCommand::RecordBackup { details };
    let index = match control(state, principal, command, "backup/record".into(), request).await? {
        Ok(index) => index,
        Err(response) => return Ok(response),
    };
    Ok(with_index(
        Json(json!({"result": "ok"})).into_response(),
        index,
    ))
}

/// `POST /v1/tokens/{id}/revoke`: the token stops working on every node as the change applies.
pub(crate) async fn revoke_token(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Principal>,
    Authorization(authorization): Authorization,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let request = Write::plain(Hop::Client, authorization, Bytes::new());
    revoke_token_with(&state, principal, token_id(id)?, request).await
}

/// Revokes a token for a client's request, or for one a follower forwarded.
pub(crate) async fn revoke_token_with(
    state: &AppState,
    principal: Principal,
    id: TokenId,
    request: Write,
) -> Result<Response, ApiError> {
    let route = format!("tokens/{id}/revoke");
    let command = ControlCommand::RevokeToken { id };
    let index = match control(state, principal, command, route, request).await? {
        Ok(index) => index,
        Err(response) => return Ok(response),
    };
    Ok(with_index(
        Json(json!({"result": "ok", "id": id.to_string()})).into_response(),
        index,
    ))
}

/// Proposes a control command: `Ok(Ok(index))` once applied with `ok`; `Ok(Err(response))` with
/// the leader's answer when this node forwarded it; `Err` when the command was refused.
async fn control(
    state: &AppState,
    principal: Principal,
    command: ControlCommand,
    route: String,
    request: Write,
) -> Result<Result<u64, Response>, ApiError> {
    let subject = match &command {
        ControlCommand::CreateToken { id, .. }
        | ControlCommand::RevokeToken { id }
        | ControlCommand::BootstrapAdmin { id, .. } => format!("token {id}"),
        ControlCommand::RecordBackup { .. } => "the backup record".to_string(),
    };
    let operation = Operation::Control(Box::new(Control {
        actor: Actor::Token(principal.token),
        command,
    }));
    if let Some(full) = state.node.disk_full_error() {
        return Err(full.into());
    }
    let outcome = match state.node.write(operation).await {
        Ok(outcome) => outcome,
        Err(RequestError::NotLeader {
            leader: Some(leader),
        }) if leader != state.node_id && request.hop == Hop::Client => {
            return forward(state, leader, &route, request).await.map(Err);
        }
        Err(RequestError::NotLeader { .. }) => return Err(no_leader()),
        Err(e) => return Err(e.into()),
    };
    let BatchResults::Control(result) = outcome.results else {
        unreachable!("a control command answers a control result");
    };
    match result {
        ControlResult::Ok => Ok(Ok(outcome.commit_index.0)),
        ControlResult::NotFound => Err(ApiError::not_found(
            "token_not_found",
            format!("no {subject}"),
        )),
        other => Err(ApiError {
            status: StatusCode::CONFLICT,
            code: other.name(),
            message: format!("{subject}: {}", other.name().replace('_', " ")),
        }),
    }
}

fn with_index(mut response: Response, index: u64) -> Response {
    response
        .headers_mut()
        .insert("bulwark-commit-index", index.into());
    response
}

pub(crate) fn token_id(raw: Result<Path<String>, PathRejection>) -> Result<TokenId, ApiError> {
    let text = raw.map(|Path(t)| t).unwrap_or_default();
    let plain = text.len() == 16 && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    match u64::from_str_radix(&text, 16) {
        Ok(id) if plain => Ok(TokenId(id)),
        _ => Err(ApiError::bad_request(
            "invalid_id",
            format!("{} is not a token id (16 hex digits)", quoted(&text)),
        )),
    }
}

/// `GET /v1/tokens`: every token's id, name, role and origin (never a secret or its hash).
pub(crate) async fn list_tokens(State(state): State<Arc<AppState>>) -> Result<Response, ApiError> {
    let outcome = state.node.read(NodeQuery::Tokens).await?;
    let Answer::Tokens(tokens) = outcome.answer else {
        unreachable!("a tokens query answers tokens");
    };
    let tokens: Vec<Value> = tokens
        .iter()
        .map(|t| {
            json!({
                "id": t.id.to_string(), "name": t.name, "role": t.role.name(),
                "created_at": t.created_at.0, "created_by": t.created_by.to_string(),
            })
        })
        .collect();
    Ok(Json(json!({ "tokens": tokens })).into_response())
}

/// A page of either audit log: 100 records unless asked, at most `MAX_AUDIT_PAGE`.
fn audit_page_limit(asked: Option<usize>) -> Result<usize, ApiError> {
    let limit = asked.unwrap_or(100);
    if limit == 0 || limit > MAX_AUDIT_PAGE {
        return Err(ApiError::bad_request(
            "invalid_limit",
            format!("limit must be 1 to {MAX_AUDIT_PAGE}"),
        ));
    }
    Ok(limit)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AuditParams {
    /// `<timestamp>:<index>` of the last record of the previous page.
    after: Option<String>,
    limit: Option<usize>,
}

/// `GET /v1/audit?after=&limit=`: the replicated audit trail, oldest first, a page at a time.
pub(crate) async fn audit(
    State(state): State<Arc<AppState>>,
    params: Result<Query<AuditParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let params = query(params)?;
    let limit = audit_page_limit(params.limit)?;
    let after = params.after.as_deref().map(parse_after).transpose()?;
    let outcome = state.node.read(NodeQuery::Audit { after, limit }).await?;
    let Answer::Audit(records) = outcome.answer else {
        unreachable!("an audit query answers audit records");
    };
    let next = (records.len() == limit)
        .then(|| {
            records
                .last()
                .map(|r| format!("{}:{}", r.timestamp.0, r.index))
        })
        .flatten();
    let records: Vec<Value> = records.iter().map(audit_json).collect();
    Ok(Json(json!({ "records": records, "next_after": next })).into_response())
}

fn parse_after(text: &str) -> Result<(Timestamp, u64), ApiError> {
    let bad = || {
        ApiError::bad_request(
            "invalid_after",
            format!(
                "after={} is not <timestamp>:<index> (from next_after)",
                quoted(text)
            ),
        )
    };
    let (ts, index) = text.split_once(':').ok_or_else(bad)?;
    let number = |s: &str| {
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse::<u64>().ok())
            .flatten()
    };
    Ok((
        Timestamp(number(ts).ok_or_else(bad)?),
        number(index).ok_or_else(bad)?,
    ))
}

pub(crate) fn audit_json(r: &AuditRecord) -> Value {
    let (action, detail) = match &r.event {
        AuditEvent::TokenCreated { id, name, role } => (
            "token_created",
            json!({"id": id.to_string(), "name": name, "role": role.name()}),
        ),
        AuditEvent::TokenRevoked { id } => ("token_revoked", json!({"id": id.to_string()})),
        AuditEvent::AdminBootstrapped { id } => {
            ("admin_token_bootstrapped", json!({"id": id.to_string()}))
        }
        AuditEvent::Membership { details } => ("membership_changed", json!({"change": details})),
        AuditEvent::Backup { details } => ("backup_taken", json!({"backup": details})),
        AuditEvent::Restored { details } => ("restored", json!({"restore": details})),
        AuditEvent::DeadLetter { details } => ("dead_letter", json!({"action": details})),
    };
    json!({
        "timestamp": r.timestamp.0, "index": r.index,
        "actor": r.actor.map(|a| a.to_string()), "action": action, "detail": detail,
        "result": r.result.name(),
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct LocalAuditParams {
    /// Records to skip (`next_skip` of the previous page).
    skip: Option<usize>,
    limit: Option<usize>,
}

/// `GET /v1/audit/local?skip=&limit=`: this node's own log of refused requests, oldest first.
pub(crate) async fn local_audit(
    State(state): State<Arc<AppState>>,
    params: Result<Query<LocalAuditParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let params = query(params)?;
    let limit = audit_page_limit(params.limit)?;
    let Some(log) = state.refusals.clone() else {
        return Ok(Json(json!({ "records": [], "next_skip": null })).into_response());
    };
    let skip = params.skip.unwrap_or(0);
    let records = tokio::task::spawn_blocking(move || log.read(skip, limit))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?
        .map_err(|e| ApiError::internal(format!("cannot read the refusals log: {e}")))?;
    let next = (records.len() == limit).then_some(skip + limit);
    Ok(Json(json!({
        "records": records,
        "next_skip": next,
        "dropped": state.refusals.as_ref().map_or(0, |l| l.dropped()),
    }))
    .into_response())
}
