//! The peer HTTP client: internal HTTP (a follower's forwarded writes, a snapshot download) as
//! HTTP/2 over the same mutual TLS as the Raft stream, to a peer's *peer* address. The server's
//! certificate must name the node dialed (`PeerTls::server_name`), and ours names us, which the
//! peer reads as the request's sender. One connection per peer, multiplexed, dialed again when
//! it fails; connections leave from the node's source IP like the Raft dialer's, so that
//! whatever tells nodes apart by source IP (`bulwark chaos`'s proxy) cuts forwarding with Raft.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bulwark_tls::PeerTls;
use bytes::Bytes;
use http::{Request, Response, Uri};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::runtime::Handle;
use tokio_rustls::TlsConnector;
use tracing::{debug, info};

use crate::outbound::{dial, lock};
use crate::{HostPort, NodeId};

/// Why a request to a peer failed, and whether it may have reached the peer.
#[derive(Debug, thiserror::Error)]
pub enum PeerHttpError {
    /// Nothing was sent: the peer was not reached.
    #[error("connect to node {peer} at {addr}: {source}")]
    Connect {
        peer: NodeId,
        addr: HostPort,
        source: std::io::Error,
    },
    /// Nothing was sent: TLS was set up but HTTP/2 was not.
    #[error("HTTP/2 handshake with node {peer} at {addr}: {source}")]
    Handshake {
        peer: NodeId,
        addr: HostPort,
        source: hyper::Error,
    },
    /// The request was (maybe partly) sent: the peer may have acted on it.
    #[error("request to node {peer} at {addr}: {source}")]
    Request {
        peer: NodeId,
        addr: HostPort,
        source: hyper::Error,
    },
    /// No answer within the request's bound; `sent` tells whether the request had left.
    #[error("no answer from node {peer} at {addr} within {after:?}")]
    Timeout {
        peer: NodeId,
        addr: HostPort,
        after: Duration,
        sent: bool,
    },
    /// The answer's body was cut or did not come in time.
    #[error("the answer of node {peer} was cut: {reason}")]
    Body { peer: NodeId, reason: String },
    /// The peer answered with a status that is not a success (where one was required).
    #[error("node {peer} answered {status}")]
    Status {
        peer: NodeId,
        status: http::StatusCode,
    },
}

impl PeerHttpError {
    /// True when the request certainly never reached the peer (it cannot have acted on it).
    pub fn never_sent(&self) -> bool {
        match self {
            PeerHttpError::Connect { .. } | PeerHttpError::Handshake { .. } => true,
            PeerHttpError::Timeout { sent, .. } => !sent,
            _ => false,
        }
    }
}

/// An HTTP/2 client to the cluster's peers. Cheap to clone (one shared pool).
#[derive(Clone)]
pub struct PeerHttpClient {
    inner: Arc<Inner>,
}

struct Inner {
    tls: PeerTls,
    source_ip: Option<IpAddr>,
    connect_timeout: Duration,
    /// Where the connections run, and where blocking callers' requests are driven.
    runtime: Handle,
    /// One slot per peer; a slot's lock is held while dialing it, so concurrent requests to
    /// one peer share one new connection and a slow dial holds up no other peer.
    slots: Mutex<HashMap<NodeId, Arc<tokio::sync::Mutex<Option<Cached>>>>>,
}

struct Cached {
    addr: HostPort,
    sender: SendRequest<Full<Bytes>>,
}

impl std::fmt::Debug for PeerHttpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerHttpClient")
            .field("source_ip", &self.inner.source_ip)
            .finish_non_exhaustive()
    }
}

impl PeerHttpClient {
    /// A client with `tls`'s certificate, dialing from `source_ip` (see
    /// `TransportOptions::source_ip`), giving up on a dial and TLS handshake after
    /// `connect_timeout`. Must be called inside a tokio runtime: its connections run there.
    pub fn new(tls: PeerTls, source_ip: Option<IpAddr>, connect_timeout: Duration) -> Self {
        PeerHttpClient {
            inner: Arc::new(Inner {
                tls,
                source_ip,
                connect_timeout,
                runtime: Handle::current(),
                slots: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Sends `request` (its URI's path and query are used) to node `peer` at its peer address
    /// `addr`, and waits at most `timeout` for the answer's head (dial included). A cached
    /// connection that turns out closed before the request left is replaced once.
    pub async fn send(
        &self,
        peer: NodeId,
        addr: HostPort,
        request: Request<Full<Bytes>>,
        timeout: Duration,
    ) -> Result<Response<Incoming>, PeerHttpError> {
        let request = self.absolute(peer, request);
        let mut sent = false;
        let attempt = self.send_once(peer, &addr, request, &mut sent);
        match tokio::time::timeout(timeout, attempt).await {
            Ok(answer) => answer,
            Err(_) => Err(PeerHttpError::Timeout {
                peer,
                addr,
                after: timeout,
                sent,
            }),
        }
    }

    async fn send_once(
        &self,
        peer: NodeId,
        addr: &HostPort,
        request: Request<Full<Bytes>>,
        sent: &mut bool,
    ) -> Result<Response<Incoming>, PeerHttpError> {
        let mut request = request;
        for fresh in [false, true] {
            let mut sender = self.sender(peer, addr, fresh).await?;
            *sent = true;
            match sender.try_send_request(request).await {
                Ok(response) => return Ok(response),
                Err(mut e) => {
                    self.forget(peer, &sender).await;
                    match e.take_message() {
                        // Never serialized: the connection was already closed; dial again.
                        Some(unsent) if !fresh => {
                            *sent = false;
                            debug!(peer = peer.0, %addr, "cached connection closed; dialing again");
                            request = unsent;
                        }
                        Some(_) => {
                            return Err(PeerHttpError::Handshake {
                                peer,
                                addr: addr.clone(),
                                source: e.into_error(),
                            })
                        }
                        None => {
                            return Err(PeerHttpError::Request {
                                peer,
                                addr: addr.clone(),
                                source: e.into_error(),
                            })
                        }
                    }
                }
            }
        }
        unreachable!("the second attempt returns")
    }

    /// The request with an absolute URI naming the peer (HTTP/2's `:scheme` and `:authority`).
    fn absolute(&self, peer: NodeId, request: Request<Full<Bytes>>) -> Request<Full<Bytes>> {
        let (mut parts, body) = request.into_parts();
        let path = parts
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_string();
        let name = self.inner.tls.server_name(peer).to_str().into_owned();
        if let Ok(uri) = Uri::try_from(format!("https://{name}{path}")) {
            parts.uri = uri;
        }
        Request::from_parts(parts, body)
    }

    fn slot(&self, peer: NodeId) -> Arc<tokio::sync::Mutex<Option<Cached>>> {
        lock(&self.inner.slots).entry(peer).or_default().clone()
    }

    /// The cached connection to `peer` at `addr`, or a new one (always new when `fresh`).
    async fn sender(
        &self,
        peer: NodeId,
        addr: &HostPort,
        fresh: bool,
    ) -> Result<SendRequest<Full<Bytes>>, PeerHttpError> {
        let slot = self.slot(peer);
        let mut cached = slot.lock().await;
        if let Some(c) = cached.as_ref() {
            if !fresh && c.addr == *addr && !c.sender.is_closed() {
                return Ok(c.sender.clone());
            }
        }
        *cached = None;
        let sender = self.connect(peer, addr).await?;
        *cached = Some(Cached {
            addr: addr.clone(),
            sender: sender.clone(),
        });
        Ok(sender)
    }

    /// Drops the cached connection to `peer` if it is still `failed`'s.
    async fn forget(&self, peer: NodeId, failed: &SendRequest<Full<Bytes>>) {
        let slot = self.slot(peer);
        let mut cached = slot.lock().await;
        if cached
            .as_ref()
            .is_some_and(|c| c.sender.is_closed() || failed.is_closed())
        {
            *cached = None;
        }
    }

    /// Dials `peer`, proves both sides in mutual TLS (its certificate must name `peer`), and
    /// starts HTTP/2 on it; the connection runs in a task of its own until either side ends it.
    async fn connect(
        &self,
        peer: NodeId,
        addr: &HostPort,
    ) -> Result<SendRequest<Full<Bytes>>, PeerHttpError> {
        let inner = &self.inner;
        let connect_error = |source| PeerHttpError::Connect {
            peer,
            addr: addr.clone(),
            source,
        };
        let tcp = dial(addr, inner.source_ip, inner.connect_timeout)
            .await
            .map_err(connect_error)?;
        let connector = TlsConnector::from(inner.tls.http_client.clone());
        let handshake = connector.connect(inner.tls.server_name(peer), tcp);
        let tls = match tokio::time::timeout(inner.connect_timeout, handshake).await {
            Ok(Ok(tls)) => tls,
            Ok(Err(e)) => return Err(connect_error(e)),
            Err(_) => {
                return Err(connect_error(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("TLS handshake timed out after {:?}", inner.connect_timeout),
                )))
            }
        };
        let (sender, connection) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
                .await
                .map_err(|source| PeerHttpError::Handshake {
                    peer,
                    addr: addr.clone(),
                    source,
                })?;
        let shown = addr.to_string();
        inner.runtime.spawn(async move {
            if let Err(e) = connection.await {
                debug!(peer = peer.0, addr = %shown, error = %e, "internal HTTP connection ended");
            }
        });
        info!(peer = peer.0, %addr, "internal HTTP connection to peer");
        Ok(sender)
    }

    /// For a thread outside the runtime (the snapshot download worker): a GET of `path` from
    /// `peer` whose answer must be a success, its head within `head_timeout`, and its body as a
    /// blocking reader whose every read must make progress within `read_timeout`.
    pub fn blocking_get(
        &self,
        peer: NodeId,
        addr: HostPort,
        path: &str,
        head_timeout: Duration,
        read_timeout: Duration,
    ) -> Result<BlockingBody, PeerHttpError> {
        let request = Request::get(path)
            .body(Full::new(Bytes::new()))
            .map_err(|e| PeerHttpError::Body {
                peer,
                reason: e.to_string(),
            })?;
        let response = self
            .inner
            .runtime
            .block_on(self.send(peer, addr, request, head_timeout))?;
        if !response.status().is_success() {
            return Err(PeerHttpError::Status {
                peer,
                status: response.status(),
            });
        }
        Ok(BlockingBody {
            peer,
            body: response.into_body(),
            runtime: self.inner.runtime.clone(),
            read_timeout,
            pending: Bytes::new(),
        })
    }
}

/// An answer's body read from a thread outside the runtime.
pub struct BlockingBody {
    peer: NodeId,
    body: Incoming,
    runtime: Handle,
    read_timeout: Duration,
    /// What the last frame held beyond the last read's buffer.
    pending: Bytes,
}

impl std::io::Read for BlockingBody {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.pending.is_empty() {
            // The timer is made inside the runtime: this thread is not one of its own.
            let (read_timeout, body) = (self.read_timeout, &mut self.body);
            let next = self
                .runtime
                .block_on(async move { tokio::time::timeout(read_timeout, body.frame()).await });
            let frame = match next {
                Err(_) => {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!(
                            "node {} sent nothing for {:?}",
                            self.peer, self.read_timeout
                        ),
                    ))
                }
                Ok(None) => return Ok(0),
                Ok(Some(Err(e))) => return Err(std::io::Error::other(e)),
                Ok(Some(Ok(frame))) => frame,
            };
            if let Ok(data) = frame.into_data() {
                self.pending = data;
            }
        }
        let n = buf.len().min(self.pending.len());
        buf[..n].copy_from_slice(&self.pending.split_to(n));
        Ok(n)
    }
}
