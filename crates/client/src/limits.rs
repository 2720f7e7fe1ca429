//! Every bound of the client, in one place. The server has its own (`bulwark-limits`); the
//! client cannot import them (it stands alone on crates.io), so the ones it must agree with are
//! repeated here with the server's value, and the server refuses anything beyond them anyway.

use std::time::Duration;

/// Most events in one batch (`POST /v1/accounts`, `/v1/transfers`): the server's
/// `MAX_BATCH_EVENTS`. A larger batch is refused by the client before anything is sent.
pub const MAX_BATCH_EVENTS: usize = 8190;

/// Most items in one page of history, queries or the change feed: the server's
/// `MAX_HISTORY_PAGE`.
pub const MAX_PAGE: usize = 8190;

/// Longest wait of one change-feed request (`wait_ms`): the server's `MAX_CHANGES_WAIT`.
pub const MAX_CHANGES_WAIT: Duration = Duration::from_secs(30);

/// How long one attempt may take, connect to last byte, unless configured otherwise. A
/// follower forwards a write within the server's `FORWARD_TIMEOUT` (10 s); a little more lets
/// the follower's own answer (`outcome_unknown`) arrive rather than a local timeout.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(12);

/// How long a TCP connect (and a TLS handshake) may take: a live node on a LAN answers in
/// milliseconds; a dead one should cost little before the next node is tried.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Attempts of one call under the default retry policy, the first included.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 10;

/// The first back-off's ceiling; each retry doubles it (full jitter: the wait is uniform in
/// zero to the ceiling), so that clients that failed together do not retry together.
pub const DEFAULT_BASE_DELAY: Duration = Duration::from_millis(50);

/// The largest back-off ceiling: about an election timeout and a half, long enough for a new
/// leader to be elected between two tries.
pub const DEFAULT_MAX_DELAY: Duration = Duration::from_secs(2);

/// How long one call may take in all, its retries and back-offs included.
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(30);

/// Consecutive failures after which a node's breaker opens.
pub const DEFAULT_BREAKER_FAILURES: u32 = 5;

/// How long an open breaker keeps its node out before one probe is let through.
pub const DEFAULT_BREAKER_COOL_DOWN: Duration = Duration::from_secs(5);

/// How long a status request of leader discovery may take: discovery asks the nodes one after
/// another, so a dead node must not hold it for a whole request timeout.
pub const DISCOVERY_TIMEOUT: Duration = Duration::from_secs(2);

/// Most nodes a client keeps: the seeds plus members learned from `/v1/status` (a cluster has
/// 3 or 5 voters and a few learners); beyond it, a status naming more is not followed.
pub const MAX_NODES: usize = 16;

/// Idle connections kept per node: a client sends its requests one after another or a few at
/// a time; a large pool would only hold sockets on the node.
pub const POOL_IDLE_PER_NODE: usize = 8;
