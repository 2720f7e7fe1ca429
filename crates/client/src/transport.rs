//! One HTTP exchange with one node: `http://` through reqwest (built without TLS), `https://`
//! through hyper's HTTP/1.1 over tokio-rustls with the ring provider, trusting only the
//! cluster's CA (the command line's way since API TLS exists; no second TLS stack).

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION, CONTENT_TYPE, HOST};
use reqwest::Method;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};

use crate::error::TransportKind;
use crate::limits::POOL_IDLE_PER_NODE;

/// A whole answer.
pub(crate) struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    /// A numeric `bulwark-*` header (`bulwark-forwarded-to`, `bulwark-commit-index`, ...).
    pub fn header_u64(&self, name: &str) -> Option<u64> {
        self.headers.get(name)?.to_str().ok()?.parse().ok()
    }
}

/// No whole answer: how, and in words.
pub(crate) struct Failure {
    pub kind: TransportKind,
    pub message: String,
    /// The answer's status, when it came before the answer broke off.
    pub status: Option<u16>,
}

pub(crate) struct Transport {
    plain: reqwest::Client,
    tls: Option<TlsPool>,
    authorization: Option<HeaderValue>,
}

/// The cluster's CA certificate (PEM) as a client configuration: TLS 1.2+ with ring.
pub(crate) fn tls_config(ca_pem: &[u8]) -> Result<Arc<rustls::ClientConfig>, String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem) {
        let cert = cert.map_err(|e| format!("the CA certificate is not PEM: {e}"))?;
        roots
            .add(cert)
            .map_err(|e| format!("the CA certificate: {e}"))?;
    }
    if roots.is_empty() {
        return Err("the CA file holds no certificate".into());
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Reads a CA certificate file.
pub(crate) fn read_ca(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read the CA file {}: {e}", path.display()))
}

impl Transport {
    pub fn new(
        token: Option<&str>,
        tls: Option<Arc<rustls::ClientConfig>>,
        connect_timeout: Duration,
    ) -> Result<Transport, String> {
        let authorization = token
            .map(|t| {
                let mut v = HeaderValue::from_str(&format!("Bearer {t}"))
                    .map_err(|_| "the token is not plain ASCII".to_string())?;
                v.set_sensitive(true);
                Ok::<_, String>(v)
            })
            .transpose()?;
        let mut headers = HeaderMap::new();
        if let Some(a) = &authorization {
            headers.insert(AUTHORIZATION, a.clone());
        }
        let plain = reqwest::Client::builder()
            .default_headers(headers)
            .connect_timeout(connect_timeout)
            .pool_max_idle_per_host(POOL_IDLE_PER_NODE)
            .build()
            .map_err(|e| format!("cannot build an HTTP client: {e}"))?;
        let tls = tls.map(|config| TlsPool {
            config,
            connect_timeout,
            idle: Mutex::new(HashMap::new()),
        });
        Ok(Transport {
            plain,
            tls,
            authorization,
        })
    }

    pub fn has_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// `method base+path` with an optional JSON body; the whole answer within `timeout`.
    pub async fn send(
        &self,
        base: &str,
        method: Method,
        path: &str,
        body: Option<Bytes>,
        timeout: Duration,
    ) -> Result<Reply, Failure> {
        let exchange = async {
            match (&self.tls, base.starts_with("https://")) {
                (Some(tls), true) => {
                    tls.send(base, method, path, body, &self.authorization)
                        .await
                }
                _ => self.send_plain(base, method, path, body).await,
            }
        };
        match tokio::time::timeout(timeout, exchange).await {
            Ok(answer) => answer,
            Err(_) => Err(Failure {
                kind: TransportKind::Timeout,
                message: format!("no whole answer within {timeout:?}"),
                status: None,
            }),
        }
    }

    async fn send_plain(
        &self,
        base: &str,
        method: Method,
        path: &str,
        body: Option<Bytes>,
    ) -> Result<Reply, Failure> {
        let mut request = self.plain.request(method, format!("{base}{path}"));
        if let Some(body) = body {
            request = request.header(CONTENT_TYPE, "application/json").body(body);
        }
        let response = request.send().await.map_err(reqwest_failure)?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.bytes().await.map_err(|e| Failure {
            kind: TransportKind::Lost,
            message: format!("answer cut off: {}", innermost(&e)),
            status: Some(status),
        })?;
        Ok(Reply {
            status,
            headers,
            body,
        })
    }
}

fn reqwest_failure(e: reqwest::Error) -> Failure {
    let kind = if e.is_connect() {
        TransportKind::Connect
    } else if e.is_timeout() {
        TransportKind::Timeout
    } else {
        TransportKind::Lost
    };
    Failure {
        kind,
        message: innermost(&e),
        status: None,
    }
}

/// The innermost cause says the most (refused, reset, broken pipe...).
fn innermost(e: &dyn std::error::Error) -> String {
    let mut cause = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

/// HTTPS connections kept open per node (`https://host:port`).
struct TlsPool {
    config: Arc<rustls::ClientConfig>,
    connect_timeout: Duration,
    idle: Mutex<HashMap<String, Vec<SendRequest<Full<Bytes>>>>>,
}

impl TlsPool {
    async fn send(
        &self,
        base: &str,
        method: Method,
        path: &str,
        body: Option<Bytes>,
        authorization: &Option<HeaderValue>,
    ) -> Result<Reply, Failure> {
        let uri: hyper::Uri = base
            .parse()
            .map_err(|e| connect_failure(format!("{base}: {e}")))?;
        let authority = uri
            .authority()
            .ok_or_else(|| connect_failure(format!("{base}: no host")))?
            .clone();
        let mut sender = match self.take_idle(base) {
            Some(sender) => sender,
            None => self.connect(&authority).await?,
        };
        let mut builder = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header(HOST, authority.as_str());
        if body.is_some() {
            builder = builder.header(CONTENT_TYPE, "application/json");
        }
        if let Some(a) = authorization {
            builder = builder.header(AUTHORIZATION, a.clone());
        }
        let request = builder
            .body(Full::new(body.unwrap_or_default()))
            .map_err(|e| connect_failure(e.to_string()))?;
        let answer = sender.send_request(request).await.map_err(|e| Failure {
            kind: TransportKind::Lost,
            message: innermost(&e),
            status: None,
        })?;
        let status = answer.status().as_u16();
        let headers = answer.headers().clone();
        let body = answer.into_body().collect().await.map_err(|e| Failure {
            kind: TransportKind::Lost,
            message: format!("answer cut off: {}", innermost(&e)),
            status: Some(status),
        })?;
        let body = body.to_bytes();
        self.put_idle(base, sender);
        Ok(Reply {
            status,
            headers,
            body,
        })
    }

    fn take_idle(&self, base: &str) -> Option<SendRequest<Full<Bytes>>> {
        let mut idle = self.idle.lock().expect("the pool's lock is never poisoned");
        let senders = idle.get_mut(base)?;
        // A connection the node closed while idle would fail the request it carries, which
        // would then count as possibly applied: only ready ones are taken.
        while let Some(sender) = senders.pop() {
            if sender.is_ready() {
                return Some(sender);
            }
        }
        None
    }

    fn put_idle(&self, base: &str, sender: SendRequest<Full<Bytes>>) {
        let mut idle = self.idle.lock().expect("the pool's lock is never poisoned");
        let senders = idle.entry(base.to_string()).or_default();
        if senders.len() < POOL_IDLE_PER_NODE {
            senders.push(sender);
        }
    }

    async fn connect(
        &self,
        authority: &hyper::http::uri::Authority,
    ) -> Result<SendRequest<Full<Bytes>>, Failure> {
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']');
        let port = authority.port_u16().unwrap_or(443);
        let name = ServerName::try_from(host.to_string())
            .map_err(|e| connect_failure(format!("{host}: {e}")))?;
        let handshake = async {
            let tcp = tokio::net::TcpStream::connect((host, port))
                .await
                .map_err(|e| connect_failure(e.to_string()))?;
            let _ = tcp.set_nodelay(true);
            tokio_rustls::TlsConnector::from(self.config.clone())
                .connect(name, tcp)
                .await
                .map_err(|e| connect_failure(format!("TLS: {e}")))
        };
        let tls = tokio::time::timeout(self.connect_timeout, handshake)
            .await
            .map_err(|_| {
                connect_failure(format!("no connection within {:?}", self.connect_timeout))
            })??;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| connect_failure(e.to_string()))?;
        tokio::spawn(conn);
        Ok(sender)
    }
}

fn connect_failure(message: String) -> Failure {
    Failure {
        kind: TransportKind::Connect,
        message,
        status: None,
    }
}
