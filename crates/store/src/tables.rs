//! The schema of `state.redb` (format version 5): its tables and meta keys, and redb's cache size.
//! The table of the on-disk formats in ARCHITECTURE.md describes each.

use redb::TableDefinition;

pub(crate) const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
pub(crate) const ACCOUNTS: TableDefinition<u128, &[u8]> = TableDefinition::new("accounts");
pub(crate) const TRANSFERS: TableDefinition<u128, &[u8]> = TableDefinition::new("transfers");
/// Transfers in runs of at most `bulwark_limits::TRANSFER_RUN`, keyed by the run's last id
/// (`transfer_runs.rs`); `transfers` holds those whose ids came below one stored already.
pub(crate) const TRANSFER_RUNS: TableDefinition<u128, &[u8]> =
    TableDefinition::new("transfer_runs");
pub(crate) const PENDING: TableDefinition<u128, u8> = TableDefinition::new("pending_status");
/// Ids of transfers refused for a transient reason (`id_already_failed`): id -> timestamp of the
/// refusal.
pub(crate) const FAILED_TRANSFERS: TableDefinition<u128, u64> =
    TableDefinition::new("failed_transfers");
/// The same refusals by (timestamp, id), to forget those past the retention at a checkpoint.
pub(crate) const FAILED_TRANSFERS_BY_TIME: TableDefinition<(u64, u128), ()> =
    TableDefinition::new("failed_transfers_by_time");
pub(crate) const EXPIRIES: TableDefinition<(u64, u128), ()> =
    TableDefinition::new("pending_expiries");
/// An account's transfers as packed runs: key (account, timestamp of the run's last entry),
/// value `[(timestamp, transfer id)]` in timestamp order, delta-coded (`index_runs.rs`). One
/// checkpoint writes one run per account it touched (split at
/// `bulwark_limits::ACCOUNT_TRANSFERS_RUN`), so indexing costs one B-tree insert per account per
/// checkpoint rather than two per transfer.
pub(crate) const ACCOUNT_TRANSFERS: TableDefinition<(u128, u64), &[u8]> =
    TableDefinition::new("account_transfers");
/// The field indexes of transfers (`field_index.rs`) as packed runs: key (field tag, value,
/// timestamp of the run's last entry), value `[(timestamp, transfer id)]` in timestamp
/// order, as `account_transfers`. Tag 0 with value 0 lists every transfer. One checkpoint writes
/// each of its lists split at `bulwark_limits::TRANSFER_INDEX_RUN`.
pub(crate) const TRANSFER_INDEX: TableDefinition<(u8, u128, u64), &[u8]> =
    TableDefinition::new("transfer_index");
/// The change feed in runs: the timestamp of the run's last change -> at most
/// `bulwark_limits::CHANGES_RUN` changes (`records::encode_change_run`), so that a checkpoint
/// inserts a row per run, not one per transfer (which doubled its time).
pub(crate) const CHANGES: TableDefinition<u64, &[u8]> = TableDefinition::new("changes");
pub(crate) const BALANCE_HISTORY: TableDefinition<(u128, u64), &[u8]> =
    TableDefinition::new("balance_history");

/// API tokens by id (`ledger::access::encoding::encode_token`); the whole set as of the checkpoint.
pub(crate) const TOKENS: TableDefinition<u64, &[u8]> = TableDefinition::new("tokens");
/// The audit trail, keyed by (timestamp, log index) (`encoding::encode_audit`); appended only.
pub(crate) const AUDIT: TableDefinition<(u64, u64), &[u8]> = TableDefinition::new("audit");

/// The outbox's live messages by payment id (`ledger::outbox::encoding::encode_message`):
/// outbound and dead ones; a settled or discarded message is removed.
pub(crate) const OUTBOX: TableDefinition<u128, &[u8]> = TableDefinition::new("outbox");

pub(crate) const FORMAT_VERSION: u64 = 5;
/// Version 4 lacks `transfer_runs` and writes index runs in fixed 24-byte pairs: opening one
/// upgrades it (`upgrade.rs`).
pub(crate) const UPGRADED_FORMAT_VERSION: u64 = 4;
pub(crate) const META_FORMAT: &str = "format_version";
/// The cluster configuration as of the checkpoint (opaque bytes of the consensus layer).
pub(crate) const MEMBERSHIP: TableDefinition<&str, &[u8]> = TableDefinition::new("membership");
pub(crate) const MEMBERSHIP_KEY: &str = "conf_state";
pub(crate) const META_APPLIED_INDEX: &str = "applied_index";
pub(crate) const META_LAST_TIMESTAMP: &str = "last_timestamp";
/// The Raft term of the entry at `applied_index` (absent in stores written before it existed).
pub(crate) const META_APPLIED_TERM: &str = "applied_term";
/// 1 once the cluster's first admin token was created (absent before).
pub(crate) const META_ADMIN_BOOTSTRAPPED: &str = "admin_bootstrapped";
