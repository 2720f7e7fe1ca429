//! Errors as the API answers them: a status, a stable snake_case word and a sentence.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bulwark_node::RequestError;
use serde::Serialize;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    message: &'a str,
}

impl ApiError {
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            code,
            message: message.into(),
        }
    }

    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::NOT_FOUND,
            code,
            message: message.into(),
        }
    }

    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::CONFLICT,
            code,
            message: message.into(),
        }
    }

    /// A fault of this node's own (an answer it could not build), never the client's.
    pub fn internal(message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            code: "internal",
            message: message.into(),
        }
    }

    /// Classifies a serde_json error found at `path` (e.g. `[3].amount`) in a body that must be
    /// `shape` (e.g. "a JSON array of transfers").
    pub fn from_json(e: &serde_json::Error, path: String, shape: &str) -> Self {
        use serde_json::error::Category;
        let place = if path.is_empty() || path == "." {
            String::new()
        } else {
            format!("at {path}: ")
        };
        let detail = e.to_string();
        match e.classify() {
            Category::Syntax | Category::Eof | Category::Io => ApiError::bad_request(
                "malformed_json",
                format!("the body is not valid JSON: {detail}"),
            ),
            Category::Data => {
                let code = if detail.starts_with("unknown field") {
                    "unknown_field"
                } else if detail.starts_with("missing field") {
                    "missing_field"
                } else if place.is_empty() {
                    return ApiError::bad_request(
                        "invalid_body",
                        format!("the body must be {shape}: {detail}"),
                    );
                } else {
                    "invalid_field"
                };
                ApiError::bad_request(code, format!("{place}{detail}"))
            }
        }
    }
}

/// Every outcome has its own status and word, matched without a catch-all so that a new
/// outcome must be given one; the node loop's fatal faults are not outcomes and never reach here.
impl From<RequestError> for ApiError {
    fn from(e: RequestError) -> Self {
        match e {
            e @ RequestError::AckAllUnconfirmed { .. } => ApiError {
                status: StatusCode::GATEWAY_TIMEOUT,
                code: "ack_all_timeout",
                message: e.to_string(),
            },
            RequestError::Stopped => ApiError {
                status: StatusCode::SERVICE_UNAVAILABLE,
                code: "unavailable",
                message: "the node is shutting down or has stopped".into(),
            },
            RequestError::NotLeader { .. } => ApiError {
                status: StatusCode::SERVICE_UNAVAILABLE,
                code: "no_leader",
                message: "no leader is known right now; retry shortly".into(),
            },
            RequestError::Dropped => ApiError {
                status: StatusCode::SERVICE_UNAVAILABLE,
                code: "write_dropped",
                message: "a leader change dropped the write before it committed: it was not \
                          applied; retry it (ids make the retry safe)"
                    .into(),
            },
            RequestError::OutcomeUnknown => ApiError {
                status: StatusCode::SERVICE_UNAVAILABLE,
                code: "outcome_unknown",
                message: "the leader lost its majority before the write committed: it may or may \
                          not be applied; retry it with the same ids (a retry never applies it twice)"
                    .into(),
            },
            // Refused before it reached the node loop: nothing of it was done.
            e @ RequestError::Overloaded { .. } => ApiError {
                status: StatusCode::SERVICE_UNAVAILABLE,
                code: "overloaded",
                message: e.to_string(),
            },
            // 507: the node cannot store anything until space is freed; the message names the
            // data directory.
            e @ RequestError::DiskFull { .. } => ApiError {
                status: StatusCode::INSUFFICIENT_STORAGE,
                code: "disk_full",
                message: e.to_string(),
            },
            // The words of the refusal alone, without the variant's "membership change
            // refused: " prefix: the status and word already say so.
            RequestError::Membership(refusal) => ApiError {
                status: StatusCode::CONFLICT,
                code: "membership_refused",
                message: refusal.to_string(),
            },
            e @ RequestError::Store(_) => {
                tracing::error!(error = %e, "request failed in the node");
                ApiError {
                    status: StatusCode::INTERNAL_SERVER_ERROR,
                    code: "storage_error",
                    message: e.to_string(),
                }
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: self.code,
            message: &self.message,
        };
        let mut response = (self.status, Json(body)).into_response();
        if self.status == StatusCode::SERVICE_UNAVAILABLE
            || self.status == StatusCode::INSUFFICIENT_STORAGE
        {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_overloaded_node_answers_503_overloaded_with_retry_after() {
        let response = ApiError::from(RequestError::Overloaded { what: "reads" }).into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[header::RETRY_AFTER], "1");
        let error = ApiError::from(RequestError::Overloaded { what: "reads" });
        assert_eq!(error.code, "overloaded");
        assert!(
            error.message.contains("too many reads"),
            "{}",
            error.message
        );
    }

    #[test]
    fn a_refused_membership_change_answers_409_with_the_refusal_words_alone() {
        use bulwark_node::{MembershipRefusal, NodeId};
        let refused = RequestError::Membership(MembershipRefusal::NotALearner(NodeId(5)).into());
        let error = ApiError::from(refused);
        assert_eq!(error.status, StatusCode::CONFLICT);
        assert_eq!(error.code, "membership_refused");
        assert_eq!(
            error.message,
            "node 5 is not a learner; add it as one first"
        );
    }

    /// A committed `ack=all` write its leader could not confirm (it stopped leading while
    /// waiting) is 504 `ack_all_timeout`, never a refusal: it did commit.
    #[test]
    fn an_unconfirmed_ack_all_write_answers_504_ack_all_timeout() {
        let unconfirmed = RequestError::AckAllUnconfirmed {
            index: bulwark_node::LogIndex(42),
        };
        let error = ApiError::from(unconfirmed);
        assert_eq!(error.status, StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(error.code, "ack_all_timeout");
        assert!(error.message.contains("42"), "{}", error.message);
        let response = error.into_response();
        assert_eq!(response.status(), StatusCode::GATEWAY_TIMEOUT);
        assert!(response.headers().get(header::RETRY_AFTER).is_none());
    }

    /// A full disk is 507 `disk_full` naming the data directory, with `Retry-After`: the node
    /// takes writes again by itself once space is freed.
    #[test]
    fn a_full_disk_answers_507_with_retry_after() {
        let full = RequestError::DiskFull {
            dir: "/data/node-1".into(),
        };
        let error = ApiError::from(full);
        assert_eq!(error.status, StatusCode::INSUFFICIENT_STORAGE);
        assert_eq!(error.code, "disk_full");
        assert!(error.message.contains("/data/node-1"), "{}", error.message);
        let response = error.into_response();
        assert_eq!(response.status(), StatusCode::INSUFFICIENT_STORAGE);
        assert_eq!(response.headers()[header::RETRY_AFTER], "1");
    }

    #[test]
    fn a_stopped_node_answers_503_unavailable() {
        let error = ApiError::from(RequestError::Stopped);
        assert_eq!(error.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(error.code, "unavailable");
        assert_eq!(error.message, "the node is shutting down or has stopped");
    }
}
