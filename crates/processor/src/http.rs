//! The processor's HTTP routes: the delivery route of the protocol, and the routes a test or an
//! operator reads the records and turns the knobs through.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, Query, State as AxumState};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use crate::config::ControlUpdate;
use crate::dec;
use crate::state::{Outcome, State};
use crate::wire::{self, BadRequest, PaymentRequest, BULWARK_TERM, IDEMPOTENCY_KEY};

pub(crate) struct Shared {
    state: Mutex<State>,
    started: Instant,
}

impl Shared {
    pub fn new(state: State) -> Shared {
        Shared {
            state: Mutex::new(state),
            started: Instant::now(),
        }
    }

    /// A panic under the lock leaves consistent state (every change is a plain assignment), so a
    /// poisoned lock is still used: the records are what a failing test needs to read.
    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn since_start(&self) -> Duration {
        self.started.elapsed()
    }

    fn record(&self, key: Option<u128>, term: Option<u64>, outcome: Outcome) {
        let mut state = self.lock();
        let at_ms = crate::state::millis(self.since_start());
        state.record(key, term, outcome, at_ms);
    }
}

type Shr = AxumState<Arc<Shared>>;

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route(wire::PAYMENTS_PATH, post(deliver))
        .route("/v1/payments/{id}", get(payment))
        .route("/v1/records", get(records))
        .route("/v1/summary", get(summary))
        .route("/control", get(control).post(set_control))
        .layer(DefaultBodyLimit::max(
            bulwark_limits::MAX_PROCESSOR_BODY_BYTES,
        ))
        .with_state(shared)
}

async fn deliver(
    AxumState(p): Shr,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    // Read before anything is checked, so that even a refused delivery's record says which
    // key and term it claimed.
    let key = header_text(&headers, IDEMPOTENCY_KEY).and_then(|t| dec::parse_strict(t).ok());
    let term = header_text(&headers, BULWARK_TERM).and_then(|t| dec::parse_strict(t).ok());
    if let Some(refusal) = unauthorized(&p, &headers) {
        p.record(key, term, Outcome::Unauthorized);
        return refusal;
    }
    let req = match read_delivery(&headers, body) {
        Ok(req) => req,
        Err((status, bad)) => {
            tracing::debug!(field = %bad.field, error = %bad.error, "bad delivery");
            p.record(key, term, Outcome::BadRequest);
            return bad_request(status, bad);
        }
    };
    let decision = {
        let mut state = p.lock();
        let since_start = p.since_start();
        state.deliver(&req, since_start)
    };
    tracing::debug!(payment_id = %req.payment_id, term = req.term, outcome = ?decision.outcome, "delivery");
    if !decision.delay.is_zero() {
        tokio::time::sleep(decision.delay).await;
    }
    let status = StatusCode::from_u16(decision.reply.answer.http_status())
        .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, Json(decision.reply)).into_response()
}

/// Headers, then body: the first problem found, named.
fn read_delivery(
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<PaymentRequest, (StatusCode, BadRequest)> {
    let bad = |field: &str, error: String| (StatusCode::BAD_REQUEST, BadRequest::new(field, error));
    let json = header_text(headers, header::CONTENT_TYPE.as_str())
        .is_some_and(|t| t.trim_start().starts_with("application/json"));
    if !json {
        return Err(bad("Content-Type", "must be application/json".into()));
    }
    let key: u128 =
        required_header(headers, IDEMPOTENCY_KEY).map_err(|e| bad(IDEMPOTENCY_KEY, e))?;
    let term: u64 = required_header(headers, BULWARK_TERM).map_err(|e| bad(BULWARK_TERM, e))?;
    let body = body.map_err(|e| (e.status(), BadRequest::new("body", e.body_text())))?;
    let req = wire::parse_body(&body).map_err(|b| (StatusCode::BAD_REQUEST, b))?;
    if req.payment_id != key {
        let error = format!(
            "{} differs from the {IDEMPOTENCY_KEY} header, {key}",
            req.payment_id
        );
        return Err(bad("payment_id", error));
    }
    if req.term != term {
        return Err(bad(
            "term",
            format!(
                "{} differs from the {BULWARK_TERM} header, {term}",
                req.term
            ),
        ));
    }
    Ok(req)
}

fn header_text<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn required_header<T: dec::Wide>(headers: &HeaderMap, name: &str) -> Result<T, String> {
    let text = header_text(headers, name).ok_or_else(|| "missing".to_string())?;
    dec::parse_strict(text)
}

/// The 401 answer, unless the request carries the configured secret (any request passes
/// when none is set).
fn unauthorized(p: &Shared, headers: &HeaderMap) -> Option<Response> {
    let secret = p.lock().config.secret.clone()?;
    let given = header_text(headers, header::AUTHORIZATION.as_str())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if same_secret(given.as_bytes(), secret.as_bytes()) {
        return None;
    }
    let body =
        serde_json::json!({"status": "unauthorized", "error": "a wrong or missing bearer secret"});
    Some((StatusCode::UNAUTHORIZED, Json(body)).into_response())
}

/// Compares every byte whatever the first difference, so the time taken does not tell a
/// guesser how much of the secret it has right.
fn same_secret(given: &[u8], secret: &[u8]) -> bool {
    let diff = given
        .iter()
        .zip(secret)
        .fold(0u8, |acc, (a, b)| acc | (a ^ b));
    diff == 0 && given.len() == secret.len()
}

fn bad_request(status: StatusCode, bad: BadRequest) -> Response {
    #[derive(Serialize)]
    struct Body {
        status: &'static str,
        #[serde(flatten)]
        bad: BadRequest,
    }
    let body = Body {
        status: "bad_request",
        bad,
    };
    (status, Json(body)).into_response()
}

async fn payment(AxumState(p): Shr, headers: HeaderMap, Path(id): Path<String>) -> Response {
    if let Some(refusal) = unauthorized(&p, &headers) {
        return refusal;
    }
    let id: u128 = match dec::parse_strict(&id) {
        Ok(id) => id,
        Err(e) => return bad_request(StatusCode::BAD_REQUEST, BadRequest::new("payment_id", e)),
    };
    match p.lock().payment(id) {
        Some(payment) => Json(payment).into_response(),
        None => {
            let body = serde_json::json!({"status": "not_found", "payment_id": id.to_string()});
            (StatusCode::NOT_FOUND, Json(body)).into_response()
        }
    }
}

#[derive(Deserialize)]
struct RecordsQuery {
    /// Records with a larger seq than this; 0 (all) when absent.
    #[serde(default)]
    after: u64,
    limit: Option<usize>,
}

async fn records(AxumState(p): Shr, headers: HeaderMap, Query(q): Query<RecordsQuery>) -> Response {
    if let Some(refusal) = unauthorized(&p, &headers) {
        return refusal;
    }
    let records = p.lock().records(q.after, q.limit.unwrap_or(usize::MAX));
    Json(records).into_response()
}

async fn summary(AxumState(p): Shr, headers: HeaderMap) -> Response {
    if let Some(refusal) = unauthorized(&p, &headers) {
        return refusal;
    }
    let summary = p.lock().summary();
    Json(summary).into_response()
}

async fn control(AxumState(p): Shr, headers: HeaderMap) -> Response {
    if let Some(refusal) = unauthorized(&p, &headers) {
        return refusal;
    }
    let config = p.lock().config.clone();
    Json(config).into_response()
}

async fn set_control(AxumState(p): Shr, headers: HeaderMap, body: Bytes) -> Response {
    if let Some(refusal) = unauthorized(&p, &headers) {
        return refusal;
    }
    let update: ControlUpdate =
        match serde_path_to_error::deserialize(&mut serde_json::Deserializer::from_slice(&body)) {
            Ok(u) => u,
            Err(e) => {
                let bad = BadRequest::new(&e.path().to_string(), e.into_inner().to_string());
                return bad_request(StatusCode::BAD_REQUEST, bad);
            }
        };
    let mut state = p.lock();
    let mut config = state.config.clone();
    update.apply(&mut config);
    if let Err(bad) = config.validate() {
        return bad_request(StatusCode::BAD_REQUEST, bad);
    }
    // The JSON, not Debug: it leaves the secret out.
    let shown = serde_json::to_string(&config).unwrap_or_default();
    tracing::info!(config = %shown, "knobs changed");
    state.set_config(config.clone());
    Json(config).into_response()
}
