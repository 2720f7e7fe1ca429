//! Queues, inboxes and permits: how much a node admits before it refuses with `overloaded`.

use std::time::Duration;

/// Inbound peer connections open at once (authenticated or still in their handshake): a
/// member holds one to each other member; strangers get no more than the rest.
pub const MAX_PEER_CONNECTIONS: usize = 64;

/// Peers a node sends to that are not in its address book but connected to it (replies to a
/// leader added while this node lagged): a few at once, however many ids connect.
pub const REPLY_ONLY_PEERS: usize = 8;

/// Frames queued (or being written) per peer in the transport; `send` drops beyond it. Raft
/// sends at most [`RAFT_MAX_INFLIGHT_MSGS`](crate::RAFT_MAX_INFLIGHT_MSGS) appends per follower,
/// plus heartbeats and votes.
pub const PEER_QUEUE_FRAMES: usize = 1024;

/// Payload bytes queued (or being written) per peer (64 MiB); `send` drops beyond it.
pub const PEER_QUEUE_BYTES: usize = 64 << 20;

/// An outbound write buffer larger than this (4 MiB) is released after its batch instead of
/// being kept for the next one.
pub const KEEP_WRITE_BUFFER: usize = 4 << 20;

/// Size of each read from an inbound peer socket (64 KiB; the decoder buffers between reads and
/// frames).
pub const PEER_READ_CHUNK: usize = 64 << 10;

/// Frames the transport's accept side may hold for the node (the channel between the transport
/// and the task that decodes them into the node's inbox). A full channel makes that peer's
/// connection wait: backpressure on one stream, not memory.
pub const TRANSPORT_INBOX_FRAMES: usize = 4096;

/// Write requests in flight at once (the default of `NodeConfig::max_inflight_writes`): from the
/// API to their answer. More wait for a permit for at most [`PERMIT_WAIT`].
pub const MAX_INFLIGHT_WRITES: usize = 256;

/// Reads (linearizable, stale and status) in flight at once: from the API to their answer.
/// Linearizable reads arriving together share one ReadIndex round, so this is many rounds' worth.
pub const MAX_INFLIGHT_READS: usize = 1024;

/// `?ack=all` writes waiting at once for every in-sync member: taken before the write itself, so
/// a write is refused as `overloaded` before it enters the log, never after it committed.
pub const MAX_ACK_ALL_WAITERS: usize = MAX_INFLIGHT_WRITES;

/// Peer messages that may wait in the node's inbox; beyond it they are dropped and counted
/// (`bulwark_peer_messages_dropped_total`): Raft tolerates lost messages and peers resend.
pub const INBOX_PEER_MESSAGES: usize = 4096;

/// Inbox slots for requests that take no permit: membership changes and the shutdown.
pub const INBOX_CONTROL: usize = 64;

/// The node inbox's capacity (with the default write permits): every request that holds a permit,
/// every peer message admitted, and the control requests fit at once, so a request that got its
/// permit never finds the inbox full.
pub const NODE_INBOX: usize = MAX_INFLIGHT_WRITES
    + MAX_INFLIGHT_READS
    + MAX_ACK_ALL_WAITERS
    + INBOX_PEER_MESSAGES
    + INBOX_CONTROL;

/// Requests one round of the node loop takes from its inbox before it handles Raft's Ready, so
/// that a flood of requests cannot starve ticks and persistence.
pub const MAX_REQUESTS_PER_ROUND: usize = 4096;

/// How long a request waits for a permit before it is answered 503 `overloaded` (nothing of it
/// was done): long enough to ride out a burst (a round takes milliseconds), short enough that a
/// client never hangs.
pub const PERMIT_WAIT: Duration = Duration::from_secs(1);
