//! The accept side: the listener task and one task per accepted connection.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bulwark_limits::{ACCEPT_RETRY, MAX_PEER_CONNECTIONS, PEER_READ_CHUNK};
use bulwark_tls::{PeerTls, TlsError, ALPN_H2, ALPN_RAFT};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::{AbortHandle, JoinSet};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tracing::{debug, info, warn};

use crate::frame::{FrameDecoder, FrameError, Hello, HelloError, HELLO_PAYLOAD_LEN};
use crate::internal::InternalConnection;
use crate::outbound::lock;
use crate::{NodeId, TransportOptions};

pub(crate) struct InboundCtx {
    pub(crate) me: NodeId,
    pub(crate) cluster_id: u64,
    pub(crate) opts: Arc<TransportOptions>,
    pub(crate) inbox: mpsc::Sender<(NodeId, Vec<u8>)>,
    pub(crate) registry: Arc<Mutex<Registry>>,
    pub(crate) tls: PeerTls,
}

/// Live inbound connections, so that a newer connection from a peer replaces (aborts) the older one:
/// at most one authenticated connection per peer, however many half-open ones the network leaves behind.
#[derive(Default)]
pub(crate) struct Registry {
    handles: HashMap<u64, AbortHandle>,
    by_peer: HashMap<NodeId, u64>,
    /// The peer address each connected peer's hello announced, while its connection lasts.
    announced: HashMap<NodeId, SocketAddr>,
}

impl Registry {
    /// Where `peer`, connected to us now, said its listener is reached.
    pub(crate) fn announced(&self, peer: NodeId) -> Option<SocketAddr> {
        self.announced.get(&peer).copied()
    }
}

/// Removes a connection from the registry however its task ends (including by abort), or,
/// for an internal-HTTP connection, whenever whoever serves it drops it.
pub(crate) struct Registration {
    registry: Arc<Mutex<Registry>>,
    conn: u64,
    peer: Option<NodeId>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut reg = lock(&self.registry);
        reg.handles.remove(&self.conn);
        if let Some(peer) = self.peer {
            if reg.by_peer.get(&peer) == Some(&self.conn) {
                reg.by_peer.remove(&peer);
                reg.announced.remove(&peer);
            }
        }
    }
}

/// Accepts connections until `shutdown` fires, then closes the listener and every inbound connection
/// (and waits for their tasks to end).
pub(crate) async fn accept_loop(
    listener: TcpListener,
    ctx: Arc<InboundCtx>,
    mut shutdown: watch::Receiver<bool>,
) {
    let registry = ctx.registry.clone();
    let mut conns = JoinSet::new();
    let mut next_conn: u64 = 0;
    loop {
        tokio::select! {
            biased;
            _ = shutdown.changed() => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, remote)) => {
                    if lock(&registry).handles.len() >= MAX_PEER_CONNECTIONS {
                        // Strangers cannot hold more: the members' own connections are few.
                        warn!(%remote, limit = MAX_PEER_CONNECTIONS, "refusing inbound connection: too many open");
                        drop(stream);
                        continue;
                    }
                    next_conn += 1;
                    let conn = next_conn;
                    let registration = Registration { registry: registry.clone(), conn, peer: None };
                    // Hold the lock across the spawn so the handle is registered before the task can look.
                    let mut reg = lock(&registry);
                    let handle = conns.spawn(serve(stream, remote, ctx.clone(), registration));
                    reg.handles.insert(conn, handle);
                }
                Err(e) => {
                    // E.g. out of file descriptors: back off instead of spinning.
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(ACCEPT_RETRY).await;
                }
            },
        }
    }
    drop(listener);
    conns.shutdown().await;
}

#[derive(Debug, thiserror::Error)]
enum ConnError {
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("connection closed in the middle of a frame ({0} bytes buffered)")]
    Truncated(usize),
}

/// Reads the next frame: `Ok(None)` on a clean end of stream between frames.
async fn read_frame(
    stream: &mut (impl AsyncRead + Unpin),
    decoder: &mut FrameDecoder,
    chunk: &mut [u8],
) -> Result<Option<Vec<u8>>, ConnError> {
    loop {
        if let Some(frame) = decoder.next_frame()? {
            return Ok(Some(frame));
        }
        let n = stream.read(chunk).await?;
        if n == 0 {
            return match decoder.buffered_len() {
                0 => Ok(None),
                buffered => Err(ConnError::Truncated(buffered)),
            };
        }
        decoder.extend(&chunk[..n]);
    }
}

#[derive(Debug, thiserror::Error)]
enum Refusal {
    #[error("no TLS handshake and hello within {0:?}")]
    Timeout(Duration),
    #[error("TLS handshake failed: {0}")]
    Tls(io::Error),
    #[error("hello from node {from}: {source}")]
    Certificate { from: u64, source: TlsError },
    #[error("connection closed before the hello")]
    Closed,
    #[error("bad hello frame: {0}")]
    Conn(#[from] ConnError),
    #[error("bad hello: {0}")]
    Hello(#[from] HelloError),
    #[error("hello from node {from} of cluster {theirs}, this node is in cluster {ours}")]
    WrongCluster { from: u64, ours: u64, theirs: u64 },
    #[error("hello claims this node's own id {0}")]
    OwnId(u64),
    #[error("no ALPN protocol negotiated (a dialer must ask for bulwark-raft/3 or h2)")]
    NoProtocol,
    #[error("internal HTTP: {0}")]
    HttpCertificate(TlsError),
    #[error("internal HTTP from node {0}: this node serves none")]
    NoInternalHttp(u64),
}

impl Refusal {
    /// The node the refused connection claimed to be, when it got as far as saying.
    fn claimed(&self) -> Option<u64> {
        match self {
            Refusal::Certificate { from, .. }
            | Refusal::WrongCluster { from, .. }
            | Refusal::NoInternalHttp(from) => Some(*from),
            Refusal::OwnId(id) => Some(*id),
            _ => None,
        }
    }
}

/// What an authenticated connection carries, by its negotiated ALPN protocol.
enum Accepted {
    Raft(TlsStream<TcpStream>, Hello),
    Http(TlsStream<TcpStream>, NodeId),
}

/// The TLS handshake (the dialer's certificate must chain to the cluster CA), then by the
/// negotiated protocol: for Raft the hello, whose claimed node id its certificate must name;
/// for internal HTTP the node its certificate names. Nothing is read in the clear, and nothing
/// from a dialer that is not who it says.
async fn authenticate(
    stream: TcpStream,
    decoder: &mut FrameDecoder,
    chunk: &mut [u8],
    ctx: &InboundCtx,
) -> Result<Accepted, Refusal> {
    let acceptor = TlsAcceptor::from(ctx.tls.server.clone());
    let stream = acceptor.accept(stream).await.map_err(Refusal::Tls)?;
    // rustls refuses a dialer that offers only protocols we do not speak in the handshake.
    match stream.get_ref().1.alpn_protocol() {
        Some(ALPN_RAFT) => read_hello(stream, decoder, chunk, ctx).await,
        Some(ALPN_H2) => {
            let certificates = stream.get_ref().1.peer_certificates();
            let peer = ctx
                .tls
                .peer_node(certificates)
                .map_err(Refusal::HttpCertificate)?;
            if ctx.opts.internal.is_none() {
                return Err(Refusal::NoInternalHttp(peer.0));
            }
            Ok(Accepted::Http(stream, peer))
        }
        _ => Err(Refusal::NoProtocol),
    }
}

/// A Raft stream's hello: our cluster, not our own id, and named by the dialer's certificate.
async fn read_hello(
    mut stream: TlsStream<TcpStream>,
    decoder: &mut FrameDecoder,
    chunk: &mut [u8],
    ctx: &InboundCtx,
) -> Result<Accepted, Refusal> {
    let frame = read_frame(&mut stream, decoder, chunk)
        .await?
        .ok_or(Refusal::Closed)?;
    let hello = Hello::decode(&frame)?;
    if hello.cluster_id != ctx.cluster_id {
        return Err(Refusal::WrongCluster {
            from: hello.from.0,
            ours: ctx.cluster_id,
            theirs: hello.cluster_id,
        });
    }
    if hello.from == ctx.me {
        return Err(Refusal::OwnId(hello.from.0));
    }
    let certificates = stream.get_ref().1.peer_certificates();
    ctx.tls
        .check_peer(certificates, hello.from)
        .map_err(|source| Refusal::Certificate {
            from: hello.from.0,
            source,
        })?;
    Ok(Accepted::Raft(stream, hello))
}

async fn serve(
    stream: TcpStream,
    remote: SocketAddr,
    ctx: Arc<InboundCtx>,
    registration: Registration,
) {
    if let Err(e) = stream.set_nodelay(true) {
        debug!(%remote, error = %e, "set_nodelay failed");
    }
    let mut chunk = vec![0u8; PEER_READ_CHUNK];
    // The hello is read with a limit of its own size: a stranger cannot make us buffer more.
    let mut decoder = FrameDecoder::new(HELLO_PAYLOAD_LEN);
    let timeout = ctx.opts.connect_timeout;
    let authenticated = tokio::time::timeout(
        timeout,
        authenticate(stream, &mut decoder, &mut chunk, &ctx),
    );
    match authenticated.await {
        Ok(Ok(Accepted::Raft(stream, hello))) => {
            serve_raft(stream, hello, remote, &ctx, registration, decoder, chunk).await
        }
        Ok(Ok(Accepted::Http(stream, peer))) => {
            let Some(sink) = ctx.opts.internal.as_ref() else {
                return;
            };
            info!(peer = peer.0, %remote, "accepted internal HTTP connection from peer");
            let connection = InternalConnection::new(peer, remote, stream, registration);
            if sink.0.send(connection).await.is_err() {
                debug!(
                    peer = peer.0,
                    "internal HTTP is no longer served; dropping connection"
                );
            }
        }
        Ok(Err(e)) => refused(&ctx, remote, &e),
        Err(_) => refused(&ctx, remote, &Refusal::Timeout(timeout)),
    }
}

/// A refused inbound connection: logged, and kept in the node's refusals log.
fn refused(ctx: &InboundCtx, remote: SocketAddr, why: &Refusal) {
    warn!(%remote, "refusing inbound connection: {why}");
    if let Some(log) = &ctx.opts.refusals {
        log.record(bulwark_refusals::Refusal::now(
            "peer_refused",
            0,
            why.claimed().map(|id| format!("node {id}")),
            format!("peer connection: {why}"),
            Some(remote.to_string()),
        ));
    }
}

/// A peer's Raft stream after its hello: every valid frame goes to the inbox, as from `hello.from`.
async fn serve_raft(
    mut stream: TlsStream<TcpStream>,
    hello: Hello,
    remote: SocketAddr,
    ctx: &InboundCtx,
    mut registration: Registration,
    mut decoder: FrameDecoder,
    mut chunk: Vec<u8>,
) {
    let from = hello.from;
    // A listener on every interface announces an unspecified IP: the connection's is the one.
    let announced = match hello.addr.ip().is_unspecified() {
        true => SocketAddr::new(remote.ip(), hello.addr.port()),
        false => hello.addr,
    };
    let replaced = {
        let mut reg = lock(&registration.registry);
        registration.peer = Some(from);
        reg.announced.insert(from, announced);
        let old = reg.by_peer.insert(from, registration.conn);
        old.and_then(|old| reg.handles.get(&old).cloned())
    };
    if let Some(old) = replaced {
        debug!(peer = from.0, %remote, "new connection from peer replaces its older one");
        old.abort();
    }
    info!(peer = from.0, %remote, %announced, "accepted connection from peer");
    decoder.set_max_frame_bytes(ctx.opts.max_frame_bytes);
    loop {
        match read_frame(&mut stream, &mut decoder, &mut chunk).await {
            Ok(Some(payload)) => {
                // A full inbox makes us wait: backpressure on this one peer's stream.
                if ctx.inbox.send((from, payload)).await.is_err() {
                    debug!(peer = from.0, "inbox closed; dropping connection");
                    return;
                }
            }
            Ok(None) => {
                debug!(peer = from.0, %remote, "peer closed its connection");
                return;
            }
            Err(ConnError::Frame(e)) => {
                warn!(peer = from.0, %remote, "closing connection from peer: {e}");
                return;
            }
            Err(e) => {
                debug!(peer = from.0, %remote, "connection from peer ended: {e}");
                return;
            }
        }
    }
}
