//! `bulwark-transport` owns how Raft messages travel between Bulwark nodes: opaque byte payloads sent as
//! checksummed frames over TCP on each node's peer port. It owns the wire format ([`encode_frame`],
//! [`FrameDecoder`], the [`Hello`] handshake), one outbound connection per peer with a bounded queue,
//! lazy (re)connection with exponential backoff and full jitter, and the accept side that hands every
//! valid inbound frame to the node as `(from, payload)`. It knows nothing about what a payload means;
//! Raft tolerates lost, duplicated and reordered messages, and this crate relies on that.
//!
//! It must never block the caller: [`Transport::send`] only takes a short lock and pushes onto a queue;
//! a full queue or an unknown peer drops the frame and counts it. It must never deliver a frame whose
//! checksum fails, nor anything from a connection that did not open with a valid hello of our cluster:
//! such a connection is closed with a warning naming the peer. And it must never grow memory without
//! bound: each peer's queue is bounded in frames and in bytes (frames being written count against the
//! bound until the write finishes), inbound frames are refused from their header if over
//! `max_frame_bytes`, an inbound connection that does not finish its hello within `connect_timeout` is
//! closed, and a newer connection from the same peer replaces the older one.
//!
//! # Wire protocol (version 3; integers little-endian, checksums CRC32C)
//!
//! Every frame is `len u32 | crc32c u32 (over the payload) | payload[len]`. On each connection the
//! dialer speaks first with a hello frame whose 41-byte payload is
//! `magic "BWTP" | version u16 | cluster_id u64 | from u64 | family u8 | ip [u8; 16] | port u16`
//! (the last three: where the dialer's peer listener is reached), then sends frames; the acceptor
//! never writes. Connections are one-way: node A's messages to B travel on the connection A dialed,
//! B's replies on the connection B dialed. B replies to a node missing from its peers (one added
//! while B lagged) at the address that node's hello announced, while its connection lasts. Messages from one node to another are delivered in the order they were
//! sent as long as one connection lasts; on a reconnect, frames that were being written may be lost.

mod frame;
mod host_port;
mod inbound;
mod internal;
mod outbound;
pub mod peer_http;
mod tcp;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bulwark_limits as limits;

pub use frame::{
    encode_frame, encode_frame_into, FrameDecoder, FrameError, Hello, HelloError, FRAME_HEADER_LEN,
    HELLO_MAGIC, HELLO_PAYLOAD_LEN, PROTOCOL_VERSION,
};
pub use host_port::{HostPort, HostPortError};
pub use internal::{InternalConnection, InternalSink};
pub use peer_http::{PeerHttpClient, PeerHttpError};
pub use tcp::TcpTransport;

/// A node of the cluster (the Raft node id): the one definition in `bulwark-ids`, shared with
/// `consensus` without the transport depending on it.
pub use bulwark_ids::NodeId;

/// The outbound half the node loop uses.
///
/// `send` never blocks and never fails loudly: if the peer's queue is full or the peer is unknown, the
/// frame is dropped and counted (Raft tolerates loss). All methods may be called from any thread, inside
/// or outside a tokio runtime.
pub trait Transport: Send + Sync + 'static {
    /// Queues `payload` for `to`, or drops and counts it.
    fn send(&self, to: NodeId, payload: Vec<u8>);
    /// Replaces the set of peers (membership changes): new peers get a connection task, removed peers
    /// lose theirs (and their queued frames), a peer whose address changed is reconnected at the new one.
    fn set_peers(&self, peers: &[(NodeId, HostPort)]);
    /// One entry per current peer, ordered by node id.
    fn stats(&self) -> Vec<PeerStats>;
}

impl<T: Transport + ?Sized> Transport for Arc<T> {
    fn send(&self, to: NodeId, payload: Vec<u8>) {
        (**self).send(to, payload)
    }
    fn set_peers(&self, peers: &[(NodeId, HostPort)]) {
        (**self).set_peers(peers)
    }
    fn stats(&self) -> Vec<PeerStats> {
        (**self).stats()
    }
}

/// The outbound state of one peer, as of the call to [`Transport::stats`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerStats {
    pub peer: NodeId,
    pub addr: HostPort,
    /// An outbound connection is established (its hello was handed to the socket).
    pub connected: bool,
    /// Frames fully written to the socket.
    pub frames_sent: u64,
    /// Payload bytes of those frames.
    pub bytes_sent: u64,
    /// Frames refused by `send` because the queue was full (or the payload exceeded `max_frame_bytes`).
    pub dropped: u64,
    /// Frames taken from the queue whose write failed because the connection broke.
    pub lost: u64,
    /// Connections established after the first one.
    pub reconnects: u64,
    /// Dial attempts that failed (refused, timed out, unreachable).
    pub connect_failures: u64,
    /// Frames waiting in the queue or being written.
    pub queue_len: usize,
    /// Payload bytes waiting in the queue or being written.
    pub queue_bytes: usize,
    /// The last connection or write error, if any.
    pub last_error: Option<String>,
}

/// Limits and timings of a [`TcpTransport`]; the defaults are the bounds of `bulwark-limits`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransportOptions {
    /// Most frames queued (or being written) per peer; `send` drops beyond it.
    pub queue_frames: usize,
    /// Most payload bytes queued (or being written) per peer; `send` drops beyond it.
    pub queue_bytes: usize,
    /// Largest payload sent or accepted; a larger inbound frame closes its connection.
    pub max_frame_bytes: usize,
    /// Smallest reconnect backoff cap; the cap doubles per consecutive failure.
    pub backoff_min: Duration,
    /// Largest reconnect backoff cap. The actual wait is uniform in `[0, cap]` (full jitter).
    pub backoff_max: Duration,
    /// Limit on a dial, and on an inbound connection's hello.
    pub connect_timeout: Duration,
    /// The local address outbound connections are bound to before they dial (port chosen by the OS),
    /// or `None` to let the OS pick. A node gives the IP it listens on, so that its peers — and
    /// anything in between, like `bulwark chaos`'s fault-injecting proxy — see its connections come
    /// from its own address. Ignored for a peer of the other address family.
    pub source_ip: Option<IpAddr>,
    /// Where other nodes reach this node's peer listener, told to every peer in the hello (a
    /// peer that does not know our address yet replies there); `None`: the address bound.
    pub advertised_addr: Option<SocketAddr>,
    /// Where inbound connections that negotiated `h2` (internal HTTP) are handed, with the node
    /// their certificate names; `None`: such connections are refused. They count against
    /// `MAX_PEER_CONNECTIONS` like Raft streams, until whoever serves them drops them (the
    /// transport's shutdown does not close them).
    pub internal: Option<InternalSink>,
    /// Where refused inbound connections are recorded (who they claimed, why, from where), as
    /// well as logged; `None`: logged only.
    pub refusals: Option<bulwark_refusals::RefusalLog>,
}

impl Default for TransportOptions {
    fn default() -> Self {
        TransportOptions {
            queue_frames: limits::PEER_QUEUE_FRAMES,
            queue_bytes: limits::PEER_QUEUE_BYTES,
            max_frame_bytes: limits::MAX_FRAME_BYTES,
            backoff_min: limits::PEER_BACKOFF_MIN,
            backoff_max: limits::PEER_BACKOFF_MAX,
            connect_timeout: limits::PEER_CONNECT_TIMEOUT,
            source_ip: None,
            advertised_addr: None,
            internal: None,
            refusals: None,
        }
    }
}

impl TransportOptions {
    fn validate(&self) -> std::io::Result<()> {
        let invalid = |what: &str| {
            Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                what.to_string(),
            ))
        };
        if self.queue_frames == 0 {
            return invalid("queue_frames must be at least 1");
        }
        if self.queue_bytes == 0 {
            return invalid("queue_bytes must be at least 1");
        }
        if self.max_frame_bytes > u32::MAX as usize {
            return invalid("max_frame_bytes must fit in u32");
        }
        if self.backoff_min > self.backoff_max {
            return invalid("backoff_min must not exceed backoff_max");
        }
        if self.connect_timeout.is_zero() {
            return invalid("connect_timeout must not be zero");
        }
        Ok(())
    }
}
