//! The web console's pages (`bulwark-console`'s embedded files) at `/` and `/console/{file}`.
//! They are served without a token (`auth::required_role`): they hold no data, only the code
//! that asks the JSON API for it with the token the operator signs in with.

use axum::extract::Path;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use bulwark_console::{Asset, CONTENT_SECURITY_POLICY};

use crate::ApiError;

pub(crate) async fn index() -> Response {
    serve(bulwark_console::INDEX)
}

pub(crate) async fn asset(Path(file): Path<String>) -> Result<Response, ApiError> {
    bulwark_console::asset(&file).map(serve).ok_or_else(|| {
        ApiError::not_found(
            "not_found",
            format!("the console has no file {}", crate::quoted(&file)),
        )
    })
}

/// An embedded file with the headers that keep the console's page its own: the content
/// security policy, no content-type sniffing, no framing, no referrer, and revalidation (a new
/// binary may serve new files under the same names).
fn serve(asset: Asset) -> Response {
    let mut response = asset.body.into_response();
    let headers = response.headers_mut();
    for (name, value) in [
        (header::CONTENT_TYPE, asset.content_type),
        (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::CACHE_CONTROL, "no-cache"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}
