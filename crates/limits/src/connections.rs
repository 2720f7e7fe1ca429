//! Client connections and file descriptors: the client API's own accept loop.

use std::time::Duration;

use crate::{MAX_INFLIGHT_WRITES, MAX_PEER_CONNECTIONS};

/// Client API connections open at once, at most. Clients keep connections alive and share
/// them, so a deployment's application servers need far fewer; every connection may hold a body
/// of up to [`MAX_BODY_BYTES`](crate::MAX_BODY_BYTES) while it is read, so this also bounds the
/// memory clients can tie
/// up. A node whose file-descriptor limit is lower serves fewer (see [`FD_RESERVE`]). Past the
/// limit a new connection is answered 503 `overloaded` with `Retry-After: 1` and closed.
pub const MAX_CLIENT_CONNECTIONS: usize = 1024;

/// Fewest client connections a node starts with: a file-descriptor limit that leaves fewer
/// after [`FD_RESERVE`] and [`MAX_CLIENT_REJECTIONS`] refuses the start (raise `ulimit -n`)
/// rather than run a node that can serve almost nobody.
pub const MIN_CLIENT_CONNECTIONS: usize = 16;

/// Connections past the limit being answered their 503 at once (each holds a descriptor for at
/// most [`CLIENT_REJECT_LINGER`]); beyond these a new connection is closed unanswered, so that a
/// flood of connections costs a bounded number of descriptors.
pub const MAX_CLIENT_REJECTIONS: usize = 64;

/// File descriptors kept for everything but client connections, so that connections can never
/// take the descriptors the log and the store need (a WAL segment that cannot be created stops
/// the node): the process itself (stdio, the runtime's epoll and wakers, the listeners, the log:
/// 64), the WAL, the hard state, the state store, checkpoints, snapshot files and directory
/// fsyncs (64), inbound peer connections ([`MAX_PEER_CONNECTIONS`]), outbound peer connections
/// and snapshot downloads (64), and a follower's forwarded writes, one connection each at worst
/// ([`MAX_INFLIGHT_WRITES`]).
pub const FD_RESERVE: usize = 64 + 64 + MAX_PEER_CONNECTIONS + 64 + MAX_INFLIGHT_WRITES;

/// How long a client has to send a request's whole header, counted from the moment the server
/// waits for it: a new connection (and its TLS handshake), or the end of the previous answer on
/// a kept-alive one. A slowloris connection that trickles its header is closed then. Ten
/// seconds is far beyond any honest client on a slow link (a header is a few hundred bytes).
pub const CLIENT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// A client connection on which no byte moved either way for this long is closed: one idle
/// between requests (hyper already closes those after [`CLIENT_HEADER_TIMEOUT`], as it counts
/// that from the end of the previous answer), a body that stopped arriving, or an answer the
/// client stopped reading. Longer than any answer may take to be ready (see the assertions), so
/// that a client waiting for its answer is never cut off.
pub const CLIENT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a connection past the limit is kept for its 503 to be written and the client's
/// request bytes to be drained (closing with unread bytes would reset the connection and lose
/// the answer).
pub const CLIENT_REJECT_LINGER: Duration = Duration::from_secs(1);

/// Request bytes of a connection past the limit read and dropped at most, to close it cleanly.
pub const CLIENT_REJECT_DRAIN_BYTES: usize = 16 << 10;

/// A failed `accept` (out of file descriptors, most often) is logged at most this often; the
/// loop pauses [`ACCEPT_RETRY`](crate::ACCEPT_RETRY) after each and goes on.
pub const ACCEPT_ERROR_LOG_EVERY: Duration = Duration::from_secs(1);

/// How long a stopping node waits for client connections to finish the requests in flight
/// (idle ones are closed at once): longer than any request may take, so that no answer that is
/// on its way is cut off; bounded, so that a client cannot keep a node from stopping.
pub const CLIENT_SHUTDOWN_GRACE: Duration = Duration::from_secs(20);
