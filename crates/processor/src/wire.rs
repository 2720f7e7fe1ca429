//! The wire types of the processor protocol (`docs/processor-protocol.md`), shared by the relay
//! that sends payments and the stand-in that answers them, so the two cannot drift apart.

use serde::{Deserialize, Serialize};

use crate::dec;

/// Header carrying the payment id: the processor executes a key at most once.
pub const IDEMPOTENCY_KEY: &str = "Idempotency-Key";
/// Header carrying the sender's Raft term, for fencing out deposed leaders.
pub const BULWARK_TERM: &str = "Bulwark-Term";
/// The delivery route.
pub const PAYMENTS_PATH: &str = "/v1/payments";

/// The body of `POST /v1/payments`. Integers wider than 32 bits are decimal strings, as in the
/// rest of Bulwark's API; `cluster` is 32 lowercase hex characters.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentRequest {
    #[serde(with = "dec")]
    pub payment_id: u128,
    #[serde(with = "dec")]
    pub term: u64,
    #[serde(with = "dec::hex128")]
    pub cluster: u128,
    #[serde(with = "dec")]
    pub amount: u128,
    pub ledger: u32,
    pub code: u16,
    #[serde(with = "dec")]
    pub debit_account_id: u128,
    #[serde(with = "dec")]
    pub credit_account_id: u128,
    #[serde(with = "dec")]
    pub user_data_128: u128,
    #[serde(with = "dec")]
    pub user_data_64: u64,
    pub user_data_32: u32,
    /// When the cluster accepted the transfer (nanoseconds since the Unix epoch).
    #[serde(with = "dec")]
    pub accepted_at: u64,
}

/// The body's fields, in order: a missing one is named in the 400 answer.
pub(crate) const REQUEST_FIELDS: [&str; 12] = [
    "payment_id",
    "term",
    "cluster",
    "amount",
    "ledger",
    "code",
    "debit_account_id",
    "credit_account_id",
    "user_data_128",
    "user_data_64",
    "user_data_32",
    "accepted_at",
];

/// What the processor answered a delivery. The JSON also carries `payment_id` (see
/// [`PaymentReply`]); a sender may read just this and ignore it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum PaymentAnswer {
    /// 200: the payment was made (now, or earlier when `duplicate`). Definite.
    Confirmed { reference: String, duplicate: bool },
    /// 422: the processor will never make this payment. Definite, stored per key like a
    /// confirmation.
    Refused { reason: String, duplicate: bool },
    /// 409: the sender's term is below one the processor has accepted: it was deposed. Nothing
    /// was executed; the sender must stop sending, not retry.
    StaleTerm {
        #[serde(with = "dec")]
        highest_term: u64,
    },
    /// 503 (or no answer at all): indefinite; retry with the same key.
    Unavailable,
}

impl PaymentAnswer {
    /// The HTTP status the processor answers with.
    pub fn http_status(&self) -> u16 {
        match self {
            PaymentAnswer::Confirmed { .. } => 200,
            PaymentAnswer::Refused { .. } => 422,
            PaymentAnswer::StaleTerm { .. } => 409,
            PaymentAnswer::Unavailable => 503,
        }
    }

    /// Reads an answer from its HTTP status and body. A 503 is [`PaymentAnswer::Unavailable`]
    /// whatever its body (a proxy's error page included); a 200, 409 or 422 whose body does not
    /// match its status, and any other status (400, 401, ...), is an error: not an answer to
    /// act on.
    pub fn from_http(status: u16, body: &[u8]) -> Result<PaymentAnswer, String> {
        if status == 503 {
            return Ok(PaymentAnswer::Unavailable);
        }
        let text = String::from_utf8_lossy(body);
        if !matches!(status, 200 | 409 | 422) {
            return Err(format!("HTTP {status}: {text}"));
        }
        let answer: PaymentAnswer = serde_json::from_slice(body)
            .map_err(|e| format!("HTTP {status} with an unreadable body ({e}): {text}"))?;
        if answer.http_status() != status {
            return Err(format!("HTTP {status} does not go with the body {text}"));
        }
        Ok(answer)
    }
}

/// The JSON body of an answer: the answer and the payment id it is about (absent on a stale
/// term and an unavailable answer, which are about no stored outcome).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentReply {
    #[serde(with = "dec::option", default, skip_serializing_if = "Option::is_none")]
    pub payment_id: Option<u128>,
    #[serde(flatten)]
    pub answer: PaymentAnswer,
}

/// A 400 answer: which field (body field or header) is wrong, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BadRequest {
    pub field: String,
    pub error: String,
}

impl BadRequest {
    pub(crate) fn new(field: &str, error: impl Into<String>) -> BadRequest {
        BadRequest {
            field: field.to_string(),
            error: error.into(),
        }
    }
}

/// Reads a delivery's body, naming the first field that is missing or wrong.
pub(crate) fn parse_body(body: &[u8]) -> Result<PaymentRequest, BadRequest> {
    let value: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| BadRequest::new("body", format!("not JSON: {e}")))?;
    let Some(object) = value.as_object() else {
        return Err(BadRequest::new("body", "not a JSON object"));
    };
    // serde reports a missing field without a path: find it first, so the answer names it.
    if let Some(missing) = REQUEST_FIELDS.iter().find(|f| !object.contains_key(**f)) {
        return Err(BadRequest::new(missing, "missing"));
    }
    serde_path_to_error::deserialize(value).map_err(|e| {
        let field = e.path().to_string();
        BadRequest::new(&field, e.into_inner().to_string())
    })
}
