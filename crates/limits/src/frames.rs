//! Entries, messages, frames and records: the size of what goes into the Raft log, over the peer
//! transport and onto disk.

use crate::MAX_BATCH_EVENTS;

/// Most events in one grouped entry: a group never holds more than the largest single batch,
/// so that applying an entry takes no longer than before grouping existed.
pub const MAX_GROUP_EVENTS: usize = MAX_BATCH_EVENTS;

/// Most bytes of one grouped entry's payload (1 MiB): the largest single batch fits on its own
/// (asserted by `ledger::codec`, which owns the widths), and the group stays well under Raft's
/// message bound, so that a group always fits one append message.
pub const MAX_GROUP_BYTES: usize = 1 << 20;

/// Bytes a Raft `Entry` (or a `Message` around entries) adds to the payloads it carries: term,
/// index, type, the 16-byte context plus a membership change's details, protobuf tags and
/// lengths. Generous: the relations below only need an upper bound.
pub const ENTRY_OVERHEAD_BYTES: usize = 4 << 10;

/// Raft's `max_size_per_msg` (4 MiB): the entries one append message carries, beyond the first
/// (raft-rs always sends at least one entry, whatever its size). Four groups per message keeps a
/// lagging follower's catch-up quick without large frames.
pub const RAFT_MAX_SIZE_PER_MSG: u64 = 4 << 20;

/// Raft's `max_inflight_msgs`: append messages sent to one follower and not yet acknowledged.
pub const RAFT_MAX_INFLIGHT_MSGS: usize = 256;

/// Raft's `max_uncommitted_size` (256 MiB): entry bytes a leader holds uncommitted before it
/// refuses proposals. As large as every admitted write in its own full group, so that a write the
/// node took a permit for is never refused for it.
pub const RAFT_MAX_UNCOMMITTED_BYTES: u64 = 256 << 20;

/// Largest payload of one peer frame, sent or accepted (64 MiB); a larger inbound frame closes
/// its connection. Far above the largest Raft message (see the assertions), so only a broken or
/// hostile peer meets it.
pub const MAX_FRAME_BYTES: usize = 64 << 20;

/// Largest payload of one WAL record (64 MiB); a longer length field is corruption (or a torn
/// write). A record holds one Raft entry, far smaller.
pub const MAX_RECORD_PAYLOAD: usize = 64 << 20;

/// Largest frame of a snapshot stream (64 MiB); a longer one refuses the import. A frame holds
/// one row, at most a run of [`ACCOUNT_TRANSFERS_RUN`] index pairs.
pub const MAX_SNAPSHOT_FRAME: usize = 64 << 20;

/// Most `(timestamp, transfer id)` pairs in one run of the `account_transfers` index: one run per
/// account per checkpoint, split beyond this so that a hot account's row stays small (64 KiB).
pub const ACCOUNT_TRANSFERS_RUN: usize = 4096;

/// Chunks in which the snapshot endpoint hands a checkpoint to the HTTP body (256 KiB): large
/// enough to keep the socket busy, small enough that a slow reader holds little memory.
pub const SNAPSHOT_HTTP_CHUNK: usize = 256 << 10;

/// The nice value of the thread streaming a snapshot (a backup or a follower's download): the
/// node loop and client requests come first on a busy machine.
pub const SNAPSHOT_EXPORT_NICE: i32 = 15;
