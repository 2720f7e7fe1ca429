//! When the loop starts a checkpoint: a pure rule over what the memtable and the Raft log hold,
//! tested on its own.

use bulwark_limits::{
    CHECKPOINT_LOG_BYTES_MIN, CHECKPOINT_LOG_ENTRIES_MIN, CHECKPOINT_LOG_SEGMENTS,
    CHECKPOINT_TRANSFERS_PER_LOG_ENTRY,
};

/// What the checkpoint rule looks at.
#[derive(Clone, Copy, Debug)]
pub(super) struct Growth {
    /// Transfers in the active memtable.
    pub memtable_transfers: usize,
    /// `--checkpoint-transfers`.
    pub checkpoint_transfers: usize,
    /// Entries of the Raft log (which a checkpoint lets compaction drop).
    pub log_entries: u64,
    /// Bytes the Raft log's segments grew by since its last compaction (what a compaction keeps,
    /// for followers or the archive, is not counted: a checkpoint would not drop it).
    pub log_bytes: u64,
    /// The log's segment size.
    pub segment_bytes: u64,
    /// Whether anything was applied since the last checkpoint.
    pub applied_past_checkpoint: bool,
}

/// A checkpoint is due when the memtable is full, or when the Raft log grew well past what a
/// checkpoint keeps behind it: batches of accounts and control commands add nothing to the
/// memtable, and small batches (one transfer per request) add little per entry. The entry bound
/// grows with `--checkpoint-transfers`, so that small entries do not start a checkpoint long
/// before the memtable is full (1,024 entries started one every 0.6 s at one transfer per
/// request); the byte bound (four segments, at least 64 MiB) keeps the log, which the node also
/// holds in memory, small when entries are large.
pub(super) fn checkpoint_due(g: Growth) -> bool {
    if g.memtable_transfers >= g.checkpoint_transfers {
        return true;
    }
    let entries_bound = CHECKPOINT_LOG_ENTRIES_MIN
        .max(g.checkpoint_transfers as u64 / CHECKPOINT_TRANSFERS_PER_LOG_ENTRY);
    let bytes_bound = (CHECKPOINT_LOG_SEGMENTS * g.segment_bytes).max(CHECKPOINT_LOG_BYTES_MIN);
    g.applied_past_checkpoint && (g.log_entries > entries_bound || g.log_bytes > bytes_bound)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn growth(checkpoint_transfers: usize, log_entries: u64, log_bytes: u64) -> Growth {
        Growth {
            memtable_transfers: 0,
            checkpoint_transfers,
            log_entries,
            log_bytes,
            segment_bytes: 64 << 20,
            applied_past_checkpoint: true,
        }
    }

    #[test]
    fn a_full_memtable_is_checkpointed() {
        let full = Growth {
            memtable_transfers: 150_000,
            applied_past_checkpoint: false,
            ..growth(150_000, 0, 0)
        };
        assert!(checkpoint_due(full));
        let short = Growth {
            memtable_transfers: 149_999,
            ..full
        };
        assert!(!checkpoint_due(short));
    }

    #[test]
    fn the_entry_bound_grows_with_the_memtable_bound() {
        // The default memtable: 18,750 entries (one per 8 of its transfers).
        assert!(!checkpoint_due(growth(150_000, 18_750, 1 << 20)));
        assert!(checkpoint_due(growth(150_000, 18_751, 1 << 20)));
        // A small memtable (as tests use): never fewer than 1,024.
        assert!(!checkpoint_due(growth(100, 1_024, 1 << 20)));
        assert!(checkpoint_due(growth(100, 1_025, 1 << 20)));
    }

    #[test]
    fn large_entries_are_bounded_by_bytes() {
        // 300 entries of 1 MB of accounts each: past four 64 MiB segments.
        assert!(!checkpoint_due(growth(150_000, 300, 256 << 20)));
        assert!(checkpoint_due(growth(150_000, 300, (256 << 20) + 1)));
    }

    #[test]
    fn small_segments_do_not_shrink_the_byte_bound_below_its_floor() {
        let small = |log_bytes| Growth {
            segment_bytes: 4096,
            ..growth(150_000, 30, log_bytes)
        };
        assert!(!checkpoint_due(small(64 << 20)));
        assert!(checkpoint_due(small((64 << 20) + 1)));
    }

    #[test]
    fn a_log_with_nothing_applied_since_the_checkpoint_is_left_alone() {
        let idle = Growth {
            applied_past_checkpoint: false,
            ..growth(150_000, 1_000_000, 1 << 40)
        };
        assert!(!checkpoint_due(idle));
    }
}
