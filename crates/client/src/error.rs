//! What a call answers when it does not succeed, and whether a write may have been applied.

/// Error words of a `5xx` answer that guarantee a write was not applied: `no_leader`,
/// `not_leader` (a node that handed leadership over) and `write_dropped` (never entered the log), `disk_full` and `overloaded` (refused before the
/// node loop took it), `starting` (refused before its token could be checked). Every other
/// `5xx` (`outcome_unknown`, `ack_all_timeout`, `unavailable`, ...) may have been applied.
/// The same list as `bulwark chaos`'s checker, which verifies this claim under faults.
pub const DEFINITE_REFUSALS: [&str; 6] = [
    "no_leader",
    "not_leader",
    "write_dropped",
    "disk_full",
    "overloaded",
    "starting",
];

/// How a request failed without an answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TransportKind {
    /// The connection (or TLS handshake) was never made: nothing was sent.
    Connect,
    /// No whole answer within the request timeout: the request may have been applied.
    Timeout,
    /// The connection broke after the request went out: it may have been applied.
    Lost,
}

impl std::fmt::Display for TransportKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TransportKind::Connect => "cannot connect",
            TransportKind::Timeout => "timed out",
            TransportKind::Lost => "connection lost",
        })
    }
}

/// Why a call did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The node answered with an error: `{"error": code, "message": ...}`.
    #[error("{node} answered {status} {code}: {message}")]
    Api {
        node: String,
        status: u16,
        code: String,
        message: String,
    },
    /// No (whole) answer came.
    #[error("{node}: {kind}: {message}")]
    Transport {
        node: String,
        kind: TransportKind,
        message: String,
        /// The answer's status, if it came before the answer broke off.
        status: Option<u16>,
    },
    /// Every node's circuit breaker is open, and none will let a probe through before the
    /// call's deadline.
    #[error("every node's circuit breaker is open")]
    AllNodesOpen,
    /// A write was retried and gave up, and at least one attempt may have been applied: look
    /// the ids up (or retry the same batch later: it never applies twice) before anything
    /// else. `last` is the last attempt's error.
    #[error("outcome unknown after {attempts} attempts (one may have been applied): {last}")]
    Indefinite { attempts: u32, last: Box<Error> },
    /// The answer is not what the API sends.
    #[error("unexpected answer from {node}: {message}")]
    Protocol { node: String, message: String },
    /// The call or the client was set up wrongly (bad address, CA file, batch size).
    #[error("{0}")]
    Config(String),
}

impl Error {
    /// Whether a write that failed with this error may nevertheless have been applied.
    pub fn may_have_applied(&self) -> bool {
        match self {
            Error::Api { status, code, .. } => !definite_refusal(*status, code),
            Error::Transport { kind, .. } => *kind != TransportKind::Connect,
            Error::Indefinite { .. } => true,
            Error::Protocol { .. } => true,
            Error::AllNodesOpen | Error::Config(_) => false,
        }
    }

    /// The API's error word, for an answered error (the last attempt's, after retries).
    pub fn code(&self) -> Option<&str> {
        match self {
            Error::Api { code, .. } => Some(code),
            Error::Indefinite { last, .. } => last.code(),
            _ => None,
        }
    }

    /// The HTTP status, for an answered error (the last attempt's, after retries).
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Api { status, .. } => Some(*status),
            Error::Indefinite { last, .. } => last.status(),
            _ => None,
        }
    }

    /// Whether another attempt may succeed: no answer, a `5xx`, or `429` (rate limited). A
    /// `4xx` says what is wrong with the request, which a retry would only repeat.
    pub(crate) fn retryable(&self) -> bool {
        match self {
            Error::Api { status, .. } => *status >= 500 || *status == 429,
            Error::Transport { .. } | Error::AllNodesOpen => true,
            Error::Indefinite { .. } | Error::Protocol { .. } | Error::Config(_) => false,
        }
    }

    /// Whether the node that gave it is failing (counts against its breaker): no answer, or a
    /// `5xx`. A `4xx` came from a working node.
    pub(crate) fn node_failed(&self) -> bool {
        match self {
            Error::Api { status, .. } => *status >= 500,
            Error::Transport { .. } => true,
            _ => false,
        }
    }
}

/// Whether an error answer proves a write was not applied: every `4xx` (judged before the log),
/// and a `5xx` whose word is one of [`DEFINITE_REFUSALS`].
pub fn definite_refusal(status: u16, code: &str) -> bool {
    (400..500).contains(&status) || DEFINITE_REFUSALS.contains(&code)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(status: u16, code: &str) -> Error {
        Error::Api {
            node: "n".into(),
            status,
            code: code.into(),
            message: String::new(),
        }
    }

    #[test]
    fn which_failures_may_have_applied_a_write() {
        assert!(!api(400, "invalid_field").may_have_applied());
        assert!(!api(503, "no_leader").may_have_applied());
        assert!(!api(507, "disk_full").may_have_applied());
        assert!(api(503, "outcome_unknown").may_have_applied());
        assert!(api(504, "ack_all_timeout").may_have_applied());
        let lost = |kind| Error::Transport {
            node: "n".into(),
            kind,
            message: String::new(),
            status: None,
        };
        assert!(!lost(TransportKind::Connect).may_have_applied());
        assert!(lost(TransportKind::Lost).may_have_applied());
        assert!(lost(TransportKind::Timeout).may_have_applied());
        assert!(api(429, "rate_limited").retryable() && !api(409, "x").retryable());
    }
}
