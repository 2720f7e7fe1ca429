//! Who is asking: bearer tokens, the role each route needs, and the per-token request rate.
//!
//! Tokens are `bulwark-token`'s; the cluster stores only the SHA-256 of a secret
//! (`ledger::access`), so a stolen backup or data directory gives no working token.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use bulwark_ledger::access::{Role, TokenId};
use bulwark_node::access::AccessView;

use crate::ApiError;

/// The caller a request was authenticated as; handlers read it to name who asked.
#[derive(Clone, Copy, Debug)]
pub struct Principal {
    pub token: TokenId,
    pub role: Role,
}

/// The role a request needs; `None`: anyone may ask (the liveness and readiness probes, the
/// OpenAPI document: public documentation of the API, the same on every node, telling nothing of
/// the ledger or the cluster; and the web console's files, code that holds no data and asks the
/// API with the token the operator signs in with). Paths no route serves need `read`, so a
/// stranger learns nothing, not even which exist.
pub fn required_role(method: &Method, path: &str) -> Option<Role> {
    if path == "/health/live" || path == "/health/ready" || path == "/v1/openapi.json" {
        return None;
    }
    if is_console_file(path) {
        return None;
    }
    let admin = path.starts_with("/v1/cluster/")
        || path == "/v1/tokens"
        || path.starts_with("/v1/tokens/")
        || path == "/v1/audit"
        || path.starts_with("/v1/audit/")
        || path.starts_with("/v1/backup/")
        || path.starts_with("/v1/outbox/");
    if admin {
        return Some(Role::Admin);
    }
    let ledger_write = path == "/v1/accounts" || path == "/v1/transfers";
    if ledger_write && method == Method::POST {
        return Some(Role::Write);
    }
    Some(Role::Read)
}

/// `/` or `/console/<file>`: one path segment, what `crate::console` serves.
fn is_console_file(path: &str) -> bool {
    path == "/"
        || path
            .strip_prefix("/console/")
            .is_some_and(|file| !file.is_empty() && !file.contains('/'))
}

/// `GET /v1/whoami`: the token a request came with and its role, for the console to show what
/// that role may see.
pub(crate) async fn whoami(
    axum::extract::Extension(principal): axum::extract::Extension<Principal>,
) -> Response {
    axum::Json(serde_json::json!({
        "token": principal.token.to_string(),
        "role": principal.role.name(),
    }))
    .into_response()
}

/// Why a request was refused before it reached a handler.
#[derive(Debug)]
pub enum Refusal {
    /// 401: no token, or one that is not valid.
    Unauthenticated(&'static str),
    /// 403: a valid token without the role.
    Forbidden {
        token: TokenId,
        has: Role,
        needs: Role,
    },
    /// 429: the token sent more requests than its rate allows.
    RateLimited { token: TokenId, retry_after_ms: u64 },
    /// 503: the node has not loaded its tokens yet (it is starting).
    Starting,
}

impl Refusal {
    pub fn token(&self) -> Option<TokenId> {
        match self {
            Refusal::Unauthenticated(_) | Refusal::Starting => None,
            Refusal::Forbidden { token, .. } | Refusal::RateLimited { token, .. } => Some(*token),
        }
    }
}

impl Refusal {
    /// The error word of the answer.
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::Unauthenticated(_) => "unauthorized",
            Refusal::Forbidden { .. } => "forbidden",
            Refusal::RateLimited { .. } => "rate_limited",
            Refusal::Starting => "starting",
        }
    }

    /// The answer, leaving the refusal for the refusals log.
    pub fn into_response_ref(&self) -> Response {
        match *self {
            Refusal::Unauthenticated(why) => {
                let mut response = ApiError {
                    status: StatusCode::UNAUTHORIZED,
                    code: "unauthorized",
                    message: why.to_string(),
                }
                .into_response();
                response.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"bulwark\""),
                );
                response
            }
            Refusal::Forbidden { token, has, needs } => ApiError {
                status: StatusCode::FORBIDDEN,
                code: "forbidden",
                message: format!(
                    "token {token} has role {}; this request needs {}",
                    has.name(),
                    needs.name()
                ),
            }
            .into_response(),
            Refusal::Starting => {
                let mut response = ApiError {
                    status: StatusCode::SERVICE_UNAVAILABLE,
                    code: "starting",
                    message: "this node is starting and has not loaded its tokens yet; retry \
                              shortly"
                        .into(),
                }
                .into_response();
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(1));
                response
            }
            Refusal::RateLimited {
                token,
                retry_after_ms,
            } => {
                let mut response = ApiError {
                    status: StatusCode::TOO_MANY_REQUESTS,
                    code: "rate_limited",
                    message: format!(
                        "token {token} sent more requests than its rate allows; retry later"
                    ),
                }
                .into_response();
                let seconds = retry_after_ms.div_ceil(1000).max(1);
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
                response
            }
        }
    }
}

/// Checks the `authorization` header against the tokens the node knows.
pub fn authenticate(
    header_value: Option<&HeaderValue>,
    access: &AccessView,
    needs: Role,
) -> Result<Principal, Refusal> {
    if !access.is_loaded() {
        return Err(Refusal::Starting);
    }
    let value = header_value.ok_or(Refusal::Unauthenticated(
        "this request needs a token: send the header 'authorization: Bearer <token>'",
    ))?;
    let text = value
        .to_str()
        .ok()
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .ok_or(Refusal::Unauthenticated(
            "the authorization header must be 'Bearer <token>'",
        ))?;
    let invalid = Refusal::Unauthenticated("the token is not valid (unknown, revoked or mistyped)");
    let Some((id, presented)) = bulwark_token::parse(text.trim()) else {
        return Err(invalid);
    };
    let id = TokenId(id);
    let Some((role, stored)) = access.tokens.get(&id) else {
        return Err(invalid);
    };
    if !bulwark_token::hashes_match(stored, &presented) {
        return Err(invalid);
    }
    if !role.allows(needs) {
        return Err(Refusal::Forbidden {
            token: id,
            has: *role,
            needs,
        });
    }
    Ok(Principal {
        token: id,
        role: *role,
    })
}

/// A token bucket per token: `rate` requests a second on average, bursts of up to one second's
/// worth. Buckets of tokens that no longer exist are dropped when the map grows past the bound.
pub struct RateLimiter {
    rate: f64,
    buckets: Mutex<HashMap<TokenId, (f64, Instant)>>,
}

impl RateLimiter {
    pub fn new(per_second: u32) -> RateLimiter {
        RateLimiter {
            rate: f64::from(per_second.max(1)),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one request from `token`'s bucket, or says how long until there is one.
    pub fn take(&self, token: TokenId, access: &AccessView) -> Result<(), Refusal> {
        let now = Instant::now();
        let mut buckets = self.buckets.lock().expect("rate limiter lock");
        if buckets.len() > bulwark_limits::MAX_TOKENS && !buckets.contains_key(&token) {
            buckets.retain(|id, _| access.tokens.contains_key(id));
        }
        let (level, last) = buckets.entry(token).or_insert((self.rate, now));
        let refill = now.duration_since(*last).as_secs_f64() * self.rate;
        *level = (*level + refill).min(self.rate);
        *last = now;
        if *level >= 1.0 {
            *level -= 1.0;
            Ok(())
        } else {
            let retry_after_ms = ((1.0 - *level) / self.rate * 1000.0).ceil() as u64;
            Err(Refusal::RateLimited {
                token,
                retry_after_ms,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use bulwark_token::{generate, NewToken};

    fn view(tokens: &[(&NewToken, Role)]) -> AccessView {
        AccessView {
            generation: 1,
            tokens: tokens
                .iter()
                .map(|(t, r)| (TokenId(t.id), (*r, t.secret_hash)))
                .collect(),
            admin_bootstrapped: true,
        }
    }

    fn bearer(text: &str) -> HeaderValue {
        HeaderValue::from_str(&format!("Bearer {text}")).expect("header")
    }

    #[test]
    fn tokens_are_checked_for_existence_secret_and_role() {
        let (admin, reader) = (generate(), generate());
        let access = view(&[(&admin, Role::Admin), (&reader, Role::Read)]);
        let ok = authenticate(Some(&bearer(&admin.text)), &access, Role::Admin).expect("admin");
        assert_eq!(ok.token, TokenId(admin.id));
        assert!(matches!(
            authenticate(None, &access, Role::Read),
            Err(Refusal::Unauthenticated(_))
        ));
        // The right id with another secret.
        let forged = format!("bulwark_{:016x}_{}", admin.id, "0".repeat(64));
        assert!(matches!(
            authenticate(Some(&bearer(&forged)), &access, Role::Read),
            Err(Refusal::Unauthenticated(_))
        ));
        assert!(matches!(
            authenticate(Some(&bearer(&generate().text)), &access, Role::Read),
            Err(Refusal::Unauthenticated(_))
        ));
        assert!(matches!(
            authenticate(Some(&bearer(&reader.text)), &access, Role::Write),
            Err(Refusal::Forbidden { .. })
        ));
        let basic = HeaderValue::from_static("Basic YWRtaW46YWRtaW4=");
        assert!(authenticate(Some(&basic), &access, Role::Read).is_err());
    }

    #[test]
    fn routes_need_the_role_their_effect_needs() {
        assert_eq!(required_role(&Method::GET, "/health/live"), None);
        assert_eq!(required_role(&Method::GET, "/v1/openapi.json"), None);
        assert_eq!(
            required_role(&Method::GET, "/v1/accounts/1"),
            Some(Role::Read)
        );
        assert_eq!(
            required_role(&Method::POST, "/v1/transfers"),
            Some(Role::Write)
        );
        assert_eq!(
            required_role(&Method::GET, "/v1/transfers"),
            Some(Role::Read)
        );
        assert_eq!(
            required_role(&Method::POST, "/v1/cluster/remove"),
            Some(Role::Admin)
        );
        assert_eq!(required_role(&Method::GET, "/v1/tokens"), Some(Role::Admin));
        assert_eq!(required_role(&Method::GET, "/v1/audit"), Some(Role::Admin));
        assert_eq!(
            required_role(&Method::GET, "/v1/backup/snapshot"),
            Some(Role::Admin)
        );
        assert_eq!(required_role(&Method::GET, "/nowhere"), Some(Role::Read));
        assert_eq!(required_role(&Method::GET, "/v1/whoami"), Some(Role::Read));
    }

    /// The console's pages are public; nothing else is by being near them.
    #[test]
    fn the_console_files_need_no_token_and_nothing_else_comes_with_them() {
        for public in [
            "/",
            "/console/app.js",
            "/console/console.css",
            "/console/nope",
        ] {
            assert_eq!(required_role(&Method::GET, public), None, "{public}");
        }
        for guarded in [
            "/console/",
            "/console",
            "/console/../v1/status",
            "/console/a/b",
            "//",
            "/v1/status",
            "/v1/accounts/1",
        ] {
            assert_eq!(
                required_role(&Method::GET, guarded),
                Some(Role::Read),
                "{guarded}"
            );
        }
        assert_eq!(
            required_role(&Method::POST, "/console/x/../../v1/transfers"),
            Some(Role::Read)
        );
    }

    #[test]
    fn a_token_past_its_rate_waits_and_others_do_not() {
        let (a, b) = (generate(), generate());
        let access = view(&[(&a, Role::Read), (&b, Role::Read)]);
        let limiter = RateLimiter::new(3);
        for _ in 0..3 {
            limiter
                .take(TokenId(a.id), &access)
                .expect("within the burst");
        }
        assert!(matches!(
            limiter.take(TokenId(a.id), &access),
            Err(Refusal::RateLimited { .. })
        ));
        limiter
            .take(TokenId(b.id), &access)
            .expect("another token has its own bucket");
    }
}
