//! Request ids: every request gets one — the client's `x-request-id` when it is a reasonable one
//! (1 to [`MAX_LEN`] visible ASCII characters), else a new random one — answered in the
//! `x-request-id` header, carried by a `request` span around the serving (so every log line of
//! the request names it), and sent on with a write a follower forwards to the leader.

use std::future::Future;

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use tracing::Instrument;

pub const HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// The longest client id taken as it is: enough for a UUID or a trace id, small in every log line.
pub const MAX_LEN: usize = 128;

tokio::task_local! {
    /// The id of the request this task serves, for a forwarded write to carry on.
    static CURRENT: HeaderValue;
}

/// The client's id when it is a reasonable one, else a new one.
pub fn of(headers: &HeaderMap) -> HeaderValue {
    headers
        .get(&HEADER)
        .filter(|v| acceptable(v.as_bytes()))
        .cloned()
        .unwrap_or_else(generate)
}

fn acceptable(id: &[u8]) -> bool {
    !id.is_empty() && id.len() <= MAX_LEN && id.iter().all(|b| b.is_ascii_graphic())
}

/// 64 random bits in hex: unique enough among a cluster's requests of a day's logs.
fn generate() -> HeaderValue {
    HeaderValue::from_str(&format!("{:016x}", fastrand::u64(..)))
        .expect("hex digits are a valid header value")
}

/// Runs `serving` as the request `id`'s: in its span, with `id` known to [`current`].
pub async fn serve<F: Future>(id: HeaderValue, serving: F) -> F::Output {
    let span = tracing::info_span!("request", request_id = id.to_str().unwrap_or_default());
    CURRENT.scope(id, serving.instrument(span)).await
}

/// The id of the request this task serves, if it serves one.
pub fn current() -> Option<HeaderValue> {
    CURRENT.try_with(Clone::clone).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn takes_a_reasonable_client_id_and_makes_one_otherwise() {
        let mut headers = HeaderMap::new();
        let fresh = of(&headers);
        assert_eq!(fresh.len(), 16);
        assert_ne!(fresh, of(&headers));
        headers.insert(HEADER, HeaderValue::from_static("abc-123_X.y"));
        assert_eq!(of(&headers), "abc-123_X.y");
        for bad in ["", "has space", &"x".repeat(MAX_LEN + 1)] {
            headers.insert(HEADER, HeaderValue::from_str(bad).unwrap());
            let id = of(&headers);
            assert_ne!(id, bad);
            assert_eq!(id.len(), 16);
        }
        headers.insert(HEADER, HeaderValue::from_str(&"x".repeat(MAX_LEN)).unwrap());
        assert_eq!(of(&headers).len(), MAX_LEN);
    }
}
