//! Raft timing, in ticks of [`DEFAULT_TICK`](crate::DEFAULT_TICK) or of `--tick-ms`.

use std::time::Duration;

/// One Raft tick by default (`--tick-ms`).
pub const DEFAULT_TICK: Duration = Duration::from_millis(50);

/// Ticks between a leader's heartbeats.
pub const HEARTBEAT_TICKS: usize = 2;

/// Ticks without a leader before a follower campaigns, at least (randomized per election up to
/// [`MAX_ELECTION_TICKS`]): 400 ms at the default tick, four heartbeats lost in a row. The
/// first follower to time out is about 0.53 s after the last heartbeat (3 nodes), which keeps
/// the median failover under 0.6 s; a node loop stalled that long (a fsync of seconds) is
/// rightly replaced.
pub const ELECTION_TICKS: usize = 8;

/// Upper end (exclusive) of the randomized election timeout: spreads candidates so that one
/// usually wins the first round.
pub const MAX_ELECTION_TICKS: usize = 16;

/// Ticks a write may wait for a leader to be known, on a leader that took it and then stepped
/// down (a handover) or on a node that knew no leader when it came (an election), before it is
/// refused with `no_leader` (1.6 s at the default tick: two election rounds); once one is known
/// the API forwards the write there.
pub const WRITE_LEADERLESS_TICKS: u64 = 2 * MAX_ELECTION_TICKS as u64;

/// Ticks a read may wait, from its arrival to its answer, before it is refused (3 s at the
/// default tick). Longer than an election, so that a read arriving while the leader changes is
/// served by the next one.
pub const READ_TIMEOUT_TICKS: u64 = 60;

/// Ticks between two sends of a read round still without its index: long enough for a healthy
/// leader to answer (one round trip), short enough that a read waits little after an election.
pub const READ_RETRY_TICKS: u64 = 3;

/// Election timeouts a leader waits for a snapshot's reply before it reports the snapshot failed
/// so that Raft sends it again (a follower downloads the checkpoint meanwhile).
pub const SNAPSHOT_REPORT_ELECTIONS: u64 = 4;
