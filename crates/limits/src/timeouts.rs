//! Wall-clock timeouts and retries: deadlines of requests, permits, downloads, and retry paces.

use std::time::Duration;

/// A follower is in sync when the leader heard from it within an election timeout and it was
/// fully caught up within this long (the Kafka ISR idea).
pub const IN_SYNC_WITHIN: Duration = Duration::from_secs(1);

/// How long `?ack=all` waits for the in-sync members before answering 504.
pub const ACK_ALL_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a follower waits for the leader's answer to a write it forwarded (10 s): longer than
/// the leader itself may take to answer (a permit, then `?ack=all`), so that a slow answer is
/// relayed rather than turned into `outcome_unknown`.
pub const FORWARD_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a node waits before it fetches a snapshot again after a failed attempt.
pub const INSTALL_RETRY: Duration = Duration::from_millis(1000);

/// How often a node whose disk is full tries again to persist what it holds.
pub const DISK_FULL_RETRY: Duration = Duration::from_millis(200);

/// Limit on connecting to a member for internal HTTP (dial and mutual TLS handshake on its peer
/// port): a dead snapshot source is given up quickly and another one tried, and a forwarded
/// write to a dead leader answers `no_leader` (never sent) well within the forward's bound.
pub const PEER_HTTP_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Limit on each read of a snapshot download: a paused member is given up and another one tried
/// (the source writes continuously; a checkpoint's integrity check at open can take seconds).
pub const SNAPSHOT_READ_TIMEOUT: Duration = Duration::from_secs(20);
/// A snapshot download that received nothing for this long is given up on, and another started
/// from any member: a paused or cut-off source must not hold a follower's catch-up forever. Longer
/// than two read timeouts and a connect: when the first source goes silent, the attempt passes
/// over it to the next member, which gets a whole read timeout before the attempt is abandoned
/// (with the two equal, every new attempt began with the same silent source again).
pub const SNAPSHOT_STALL_TIMEOUT: Duration = Duration::from_secs(50);

/// A node's disk is slow when the median of its recent Raft log syncs (append + fdatasync) is at
/// least this long: a healthy disk syncs in well under 10 ms (SSDs, cloud volumes), a spinning
/// one in about 10 to 20 ms, while every write a leader commits waits for two to three of its
/// syncs (so 50 ms added to each, the mildest slow disk the chaos nemesis injects, turns a 2 ms
/// write into 150 ms that a healthy voter would serve in 2).
pub const SLOW_SYNC_THRESHOLD: Duration = Duration::from_millis(40);

/// The slow-disk verdict looks at this many of the newest log syncs: more than half of them
/// (three) must reach [`SLOW_SYNC_THRESHOLD`], so a single stall is a hiccup, while a disk that
/// turned slow is judged after three slow syncs, about a second at 300 ms each (a count, not a
/// span of time: a busy node's many fast syncs from before the slowness do not delay it).
pub const SLOW_DISK_RECENT_SYNCS: usize = 5;

/// Fewer recent log syncs than this is no verdict (a node that barely writes says little
/// about its disk): a majority of [`SLOW_DISK_RECENT_SYNCS`].
pub const SLOW_DISK_MIN_SAMPLES: usize = SLOW_DISK_RECENT_SYNCS / 2 + 1;

/// Only log syncs of this recent window count: a node that stopped writing keeps no verdict
/// beyond it, and it holds [`SLOW_DISK_MIN_SAMPLES`] syncs of a second each.
pub const SLOW_DISK_WINDOW: Duration = Duration::from_secs(5);

/// A leader on a slow disk hands leadership over at most once per this long: if it leads again
/// while still slow (every other voter is slow too, or the new leader died), the cluster is not
/// thrown into a leader change every few seconds.
pub const SLOW_DISK_EVICTION_COOLDOWN: Duration = Duration::from_secs(30);

/// A leader on a slow disk that still leads this long after it asked Raft to transfer
/// leadership tries again (raft-rs gives a transfer one election timeout, counted in the slow
/// leader's own, stretched, ticks).
pub const SLOW_DISK_TRANSFER_RETRY: Duration = Duration::from_secs(3);

/// A leader stopping gracefully asks Raft again to transfer leadership if it still leads this
/// long after it asked (raft-rs gives a transfer one election timeout, 400 ms by default).
pub const HANDOVER_RETRY: Duration = Duration::from_millis(500);

/// Longest a stopping leader tries to hand leadership over; past it the node stops anyway and
/// the others elect a leader after an election timeout.
pub const HANDOVER_LIMIT: Duration = Duration::from_secs(3);

/// How long a stopping node goes on serving after it handed leadership over (and answered
/// not ready): the other members learn of the new leader, and the writes they forwarded to this
/// node meanwhile are answered, before the node closes its listeners.
pub const STOP_DRAIN: Duration = Duration::from_millis(250);

/// How often a closed state store is tried to be reopened.
pub const STORE_REOPEN_RETRY: Duration = Duration::from_millis(250);

/// After a checkpoint failed for lack of space, or was skipped for it, wait this long before the
/// next attempt (or check of the free space).
pub const SPACE_RETRY: Duration = Duration::from_secs(1);

/// The furthest the wall clock may be from the proposer's time and still be followed: larger
/// gaps are jumps. Well above the drift between the wall and monotonic clocks of one host (NTP
/// slews both alike) and above NTP's 128 ms step threshold, well below pending timeouts
/// (seconds).
pub const MAX_CLOCK_STEP: Duration = Duration::from_millis(250);

/// How long a peer's reported time counts toward the cap on a proposer's time (the clock rule
/// in `consensus::clock`): a few heartbeats; a peer silent for longer may be down or cut off,
/// and its last report says nothing about its clock now.
pub const PEER_CLOCK_FRESHNESS: Duration = Duration::from_secs(2);

/// Smallest reconnect backoff cap of the transport; the cap doubles per consecutive failure.
pub const PEER_BACKOFF_MIN: Duration = Duration::from_millis(50);

/// Largest reconnect backoff cap (the wait is uniform in `[0, cap]`, full jitter): a peer that
/// comes back is found again within two seconds.
pub const PEER_BACKOFF_MAX: Duration = Duration::from_secs(2);

/// Limit on a peer dial, and on an inbound connection's hello.
pub const PEER_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Pause after a failed `accept` on the peer port or the client API (e.g. out of file
/// descriptors), instead of spinning.
pub const ACCEPT_RETRY: Duration = Duration::from_millis(100);
