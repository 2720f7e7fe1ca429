//! One HTTPS request of the command-line client to a node whose client API is served over TLS,
//! trusting only the cluster's CA certificate (`--ca`): hyper's HTTP/1.1 over tokio-rustls,
//! both already in the tree (the HTTP client used for plain `http://` is built without TLS).

use std::path::Path;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;

/// How long the client waits for a node, as for `http://` (where reqwest has no timeout, a
/// stuck node would otherwise hang a script): connect, handshake, the whole answer.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Sends `method url` with an optional JSON `body`; the answer's status and body bytes, or why
/// not (in the words the client prints).
pub async fn request(
    ca: &Path,
    method: hyper::Method,
    url: &str,
    body: Option<Vec<u8>>,
    token: Option<&str>,
) -> Result<(hyper::StatusCode, Bytes), String> {
    tokio::time::timeout(REQUEST_TIMEOUT, exchange(ca, method, url, body, token))
        .await
        .map_err(|_| format!("no answer within {REQUEST_TIMEOUT:?}"))?
}

async fn exchange(
    ca: &Path,
    method: hyper::Method,
    url: &str,
    body: Option<Vec<u8>>,
    token: Option<&str>,
) -> Result<(hyper::StatusCode, Bytes), String> {
    let uri: hyper::Uri = url.parse().map_err(|e| format!("{url}: {e}"))?;
    let authority = uri.authority().ok_or(format!("{url}: no host"))?.clone();
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    let port = authority.port_u16().unwrap_or(443);
    let config = bulwark_tls::api_client_config(ca).map_err(|e| format!("--ca: {e}"))?;
    let name = ServerName::try_from(host.to_string()).map_err(|e| format!("{host}: {e}"))?;
    let tcp = tokio::net::TcpStream::connect((host, port))
        .await
        .map_err(|e| e.to_string())?;
    let tls = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS: {e}"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let mut builder = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header(hyper::header::HOST, authority.as_str());
    if body.is_some() {
        builder = builder.header(hyper::header::CONTENT_TYPE, "application/json");
    }
    if let Some(token) = token {
        builder = builder.header(hyper::header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let request = builder
        .body(Full::new(Bytes::from(body.unwrap_or_default())))
        .map_err(|e| e.to_string())?;
    let answer = sender
        .send_request(request)
        .await
        .map_err(|e| e.to_string())?;
    let status = answer.status();
    let bytes = answer
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((status, bytes))
}
