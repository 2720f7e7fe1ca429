//! The accept side: the listener task and one task per accepted connection.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bulwark_limits::{ACCEPT_RETRY, MAX_PEER_CONNECTIONS, PEER_READ_CHUNK};
use bulwark_tls::{PeerTls, TlsError};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::{AbortHandle, JoinSet};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tracing::{debug, info, warn};

use crate::frame::{FrameDecoder, FrameError, Hello, HelloError, HELLO_PAYLOAD_LEN};
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

/// Removes a connection from the registry however its task ends (including by abort).
struct Registration {
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
}

/// The TLS handshake (the dialer's certificate must chain to the cluster CA), then the hello,
/// whose claimed node id its certificate must name: nothing is read in the clear, and nothing
/// from a dialer that is not who it says.
async fn authenticate(
    stream: TcpStream,
    decoder: &mut FrameDecoder,
    chunk: &mut [u8],
    ctx: &InboundCtx,
) -> Result<(TlsStream<TcpStream>, Hello), Refusal> {
    let acceptor = TlsAcceptor::from(ctx.tls.server.clone());
    let mut stream = acceptor.accept(stream).await.map_err(Refusal::Tls)?;
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
    Ok((stream, hello))
}

async fn serve(
    stream: TcpStream,
    remote: SocketAddr,
    ctx: Arc<InboundCtx>,
    mut registration: Registration,
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
    let (mut stream, hello) = match authenticated.await {
        Ok(Ok(authenticated)) => authenticated,
        Ok(Err(e)) => {
            warn!(%remote, "refusing inbound connection: {e}");
            return;
        }
        Err(_) => {
            warn!(%remote, "refusing inbound connection: {}", Refusal::Timeout(timeout));
            return;
        }
    };
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
