//! The accept side's internal HTTP: a connection that negotiated `h2` on the peer port is not
//! a Raft stream but a peer's HTTP/2 (snapshots, forwarded writes). The transport authenticates
//! it (mutual TLS, the certificate names a node of this cluster) and hands it, with that node's
//! id, to whoever serves internal HTTP; it knows nothing of the routes.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;

use crate::inbound::Registration;
use crate::NodeId;

/// An authenticated internal-HTTP connection from node [`peer`](Self::peer): read and write it
/// as the TLS stream it is. It counts against `MAX_PEER_CONNECTIONS` until it is dropped.
pub struct InternalConnection {
    peer: NodeId,
    remote: SocketAddr,
    stream: TlsStream<TcpStream>,
    /// Held for the connection's life: its place among the inbound connections.
    _slot: Registration,
}

impl InternalConnection {
    pub(crate) fn new(
        peer: NodeId,
        remote: SocketAddr,
        stream: TlsStream<TcpStream>,
        slot: Registration,
    ) -> Self {
        InternalConnection {
            peer,
            remote,
            stream,
            _slot: slot,
        }
    }

    /// The node the dialer's certificate names.
    pub fn peer(&self) -> NodeId {
        self.peer
    }

    /// Where the connection comes from.
    pub fn remote(&self) -> SocketAddr {
        self.remote
    }
}

impl std::fmt::Debug for InternalConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InternalConnection")
            .field("peer", &self.peer)
            .field("remote", &self.remote)
            .finish_non_exhaustive()
    }
}

impl AsyncRead for InternalConnection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for InternalConnection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// Where the transport hands internal-HTTP connections (`TransportOptions::internal`). Two
/// sinks are equal when they feed the same channel.
#[derive(Clone, Debug)]
pub struct InternalSink(pub mpsc::Sender<InternalConnection>);

impl PartialEq for InternalSink {
    fn eq(&self, other: &Self) -> bool {
        self.0.same_channel(&other.0)
    }
}

impl Eq for InternalSink {}
