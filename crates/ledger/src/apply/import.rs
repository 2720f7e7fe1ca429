//! Imported events: accounts and transfers migrated from another system with their own
//! timestamps. A batch imports or does not (its first event decides); an imported event's
//! timestamp must lie in the past of the batch and after everything the ledger holds, so that
//! timestamps keep increasing in the order events are applied.

use super::ChainResult;
use crate::types::{AccountFlags, NewAccount, NewTransfer, Timestamp, TransferFlags};

/// What the batch-level rules need of an event.
pub(crate) trait Event {
    fn is_linked(&self) -> bool;
    fn is_imported(&self) -> bool;
    fn timestamp(&self) -> Timestamp;
}

impl Event for NewAccount {
    fn is_linked(&self) -> bool {
        self.flags.contains(AccountFlags::LINKED)
    }
    fn is_imported(&self) -> bool {
        self.flags.contains(AccountFlags::IMPORTED)
    }
    fn timestamp(&self) -> Timestamp {
        self.timestamp
    }
}

impl Event for NewTransfer {
    fn is_linked(&self) -> bool {
        self.flags.contains(TransferFlags::LINKED)
    }
    fn is_imported(&self) -> bool {
        self.flags.contains(TransferFlags::IMPORTED)
    }
    fn timestamp(&self) -> Timestamp {
        self.timestamp
    }
}

/// The largest timestamp an event may carry (TigerBeetle keeps the top bit for itself; so do
/// we, so that ledgers can be moved between the two).
const TIMESTAMP_MAX: u64 = i64::MAX as u64;

/// The batch-level import rules, checked before the event's own: `batch_imported` is whether
/// the batch's first event is imported, `batch_last` the timestamp of its last event.
pub(super) fn check_import<E: Event, R: ChainResult>(
    event: &E,
    batch_imported: bool,
    batch_last: Timestamp,
) -> Option<R> {
    let ts = event.timestamp();
    Some(match (batch_imported, event.is_imported()) {
        (false, true) => R::IMPORTED_EVENT_NOT_EXPECTED,
        (true, false) => R::IMPORTED_EVENT_EXPECTED,
        (false, false) if ts.0 != 0 => R::TIMESTAMP_MUST_BE_ZERO,
        (false, false) => return None,
        (true, true) if ts.0 == 0 || ts.0 > TIMESTAMP_MAX => {
            R::IMPORTED_EVENT_TIMESTAMP_OUT_OF_RANGE
        }
        (true, true) if ts >= batch_last => R::IMPORTED_EVENT_TIMESTAMP_MUST_NOT_ADVANCE,
        (true, true) => return None,
    })
}
