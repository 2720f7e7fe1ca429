//! The deterministic state machine: a batch and its timestamp in, one result per event out.
//!
//! All reads of a batch go through an [`Overlay`] over the store; the overlay keeps an undo
//! journal so that a failed linked chain rolls back exactly what it did. Only when the whole
//! batch is done are its [`Changes`](crate::Changes) committed to the store, in one call. The
//! rules of one account are in `account`, of one transfer in `transfer`.

mod account;
mod import;
mod outbox;
mod overlay;
mod transfer;

use crate::access::{Control, ControlResult};
use crate::results::{CreateAccountResult, CreateTransferResult};
use crate::store::{BatchBuffers, Changes, LedgerStore};
use crate::types::{NewAccount, NewTransfer, Timestamp, TransferId};
use account::create_account;
use import::{check_import, Event};
use overlay::Overlay;
use transfer::create_transfer;

/// What a batch asks the ledger to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Operation {
    CreateAccounts(Vec<NewAccount>),
    CreateTransfers(Vec<NewTransfer>),
    /// A change to the API tokens: one event, with a timestamp of its own like any other.
    Control(Box<Control>),
    /// Settles outbox payments, or acts on dead ones (`crate::outbox`): one event each.
    Outbox(Vec<crate::outbox::OutboxCommand>),
    /// Expires the pending transfers whose timeout has passed by the batch's timestamp. The
    /// leader proposes it when the earliest timeout passes, so that an idle ledger releases
    /// reservations on time; any other batch also expires what is due before its events.
    ExpirePending,
}

impl Operation {
    pub fn len(&self) -> usize {
        match self {
            Operation::CreateAccounts(a) => a.len(),
            Operation::CreateTransfers(t) => t.len(),
            Operation::Outbox(c) => c.len(),
            Operation::Control(_) | Operation::ExpirePending => 1,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One log entry's worth of work. `timestamp` is that of the batch's last event; event `i` of
/// `n` gets `timestamp - (n - 1 - i)`, so every event has its own strictly increasing timestamp.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Batch {
    pub timestamp: Timestamp,
    pub operation: Operation,
}

impl Batch {
    /// Whether the batch imports events with their own timestamps: its first event decides
    /// (every other event must agree).
    pub fn is_imported(&self) -> bool {
        match &self.operation {
            Operation::CreateAccounts(a) => a.first().is_some_and(Event::is_imported),
            Operation::CreateTransfers(t) => t.first().is_some_and(Event::is_imported),
            Operation::Control(_) | Operation::Outbox(_) | Operation::ExpirePending => false,
        }
    }

    /// The timestamp a proposer must give a batch of `events` events so that it lands after
    /// everything applied up to `last` and no earlier than the wall clock `now`.
    pub fn next_timestamp(last: Timestamp, now: Timestamp, events: usize) -> Timestamp {
        Timestamp(now.0.max(last.0 + events as u64))
    }
}

/// The timestamp the batch's last event gets when applied after `last` with no pending transfer
/// due to expire: the proposer's, or `last + n` if that is not later. Expiries due at the
/// batch's start each take a timestamp of their own before its events, moving them up by one
/// each (see [`apply_at`]), so only the store that applies the batch knows its final stamps.
pub fn effective_timestamp(last: Timestamp, batch: &Batch) -> Timestamp {
    let n = batch.operation.len() as u64;
    let proposed = batch.timestamp.0.max(n);
    Timestamp(proposed.max(last.0 + n))
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BatchResults {
    Accounts(Vec<CreateAccountResult>),
    Transfers(Vec<CreateTransferResult>),
    Control(ControlResult),
    Outbox(Vec<crate::outbox::OutboxResult>),
    /// How many pending transfers an `ExpirePending` batch expired.
    Expired(usize),
}

impl BatchResults {
    pub fn names(&self) -> Vec<&'static str> {
        match self {
            BatchResults::Accounts(r) => r.iter().map(|r| r.name()).collect(),
            BatchResults::Transfers(r) => r.iter().map(|r| r.name()).collect(),
            BatchResults::Control(r) => vec![r.name()],
            BatchResults::Outbox(r) => r.iter().map(|r| r.name()).collect(),
            BatchResults::Expired(_) => vec!["ok"],
        }
    }

    /// How many events the batch held.
    pub fn len(&self) -> usize {
        match self {
            BatchResults::Accounts(r) => r.len(),
            BatchResults::Transfers(r) => r.len(),
            BatchResults::Outbox(r) => r.len(),
            BatchResults::Control(_) | BatchResults::Expired(_) => 1,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Applies one batch to the store. Deterministic: no clock, no randomness, no IO.
///
/// The batch's timestamps are the proposer's; if they do not come after the store's last
/// timestamp (a new leader whose clock is behind, say), they are moved up to just after it.
/// The move depends only on the log, so every replica makes the same one, and timestamps stay
/// strictly increasing whatever the clocks did.
pub fn apply<S: LedgerStore>(store: &mut S, batch: &Batch) -> BatchResults {
    apply_at(store, batch, 0)
}

/// [`apply`] for a batch at log `index`, which the audit trail records (`apply` is for callers
/// without a log: they get index 0).
pub fn apply_at<S: LedgerStore>(store: &mut S, batch: &Batch, index: u64) -> BatchResults {
    let buffers = store.take_batch_buffers();
    let (results, changes, buffers) = plan_in(&*store, batch, index, buffers);
    store.commit(changes, buffers);
    results
}

/// The ledger time a batch would leave the store at, were it applied now: its last event's
/// timestamp, or for an imported batch the newest of its events that would be applied. Nothing
/// changes. A point-in-time restore stops before the first batch this puts past its target.
pub fn stamp_after<S: LedgerStore>(store: &S, batch: &Batch) -> Timestamp {
    if batch.is_imported() {
        return plan_at(store, batch, 0).1.last_timestamp;
    }
    batch_times(store, batch).2
}

/// A batch's start (what its expiries are due by), the expiries due then (none for an imported
/// batch), and its last event's timestamp, past those expiries'.
fn batch_times<S: LedgerStore>(
    store: &S,
    batch: &Batch,
) -> (Timestamp, Vec<(Timestamp, TransferId)>, Timestamp) {
    let n = batch.operation.len() as u64;
    assert!(n > 0, "a batch must hold at least one event");
    // The pending transfers whose deadline the batch's start reaches expire first, each at a
    // timestamp of its own (so that balance history has one entry per change), and the batch's
    // events follow them.
    let unshifted_last = effective_timestamp(store.last_timestamp(), batch);
    let start = Timestamp(unshifted_last.0 - (n - 1));
    assert!(start > store.last_timestamp(), "timestamps must increase");
    // An imported batch expires nothing: its events take their own (past) timestamps, and the
    // ledger's time moves only to the newest of them.
    let due = if batch.is_imported() {
        Vec::new()
    } else {
        store.expired_pending(start)
    };
    let last_event = Timestamp(unshifted_last.0 + due.len() as u64);
    (start, due, last_event)
}

/// What applying one batch would do: its results and the changes to commit. Reads the store
/// only; [`apply_at`] commits the changes.
pub fn plan_at<S: LedgerStore>(store: &S, batch: &Batch, index: u64) -> (BatchResults, Changes) {
    let (results, changes, _) = plan_in(store, batch, index, BatchBuffers::default());
    (results, changes)
}

/// [`plan_at`] in `buffers`, which it gives back (the changes hold their vectors).
fn plan_in<S: LedgerStore>(
    store: &S,
    batch: &Batch,
    index: u64,
    buffers: BatchBuffers,
) -> (BatchResults, Changes, BatchBuffers) {
    let n = batch.operation.len() as u64;
    let imported = batch.is_imported();
    let (start, due, last_event) = batch_times(store, batch);
    let first = Timestamp(last_event.0 - (n - 1));
    let mut overlay = Overlay::new(store, batch.operation.len(), buffers);
    let expired = overlay.expire(&due, start);
    let stamps = Stamps {
        first,
        last: last_event,
        imported,
    };
    let results = match &batch.operation {
        Operation::CreateAccounts(accounts) => {
            BatchResults::Accounts(run_chains(&mut overlay, accounts, stamps, create_account))
        }
        Operation::CreateTransfers(transfers) => {
            BatchResults::Transfers(run_chains(&mut overlay, transfers, stamps, create_transfer))
        }
        Operation::Control(control) => {
            let (result, access, audit) =
                crate::access::apply_control(overlay.store, control, first, index);
            overlay.access.extend(access);
            overlay.audit.extend(audit);
            BatchResults::Control(result)
        }
        Operation::Outbox(commands) => BatchResults::Outbox(
            commands
                .iter()
                .enumerate()
                .map(|(i, command)| {
                    let at = Timestamp(first.0 + i as u64);
                    outbox::apply_command(&mut overlay, command, at, index)
                })
                .collect(),
        ),
        Operation::ExpirePending => BatchResults::Expired(expired),
    };
    let ledger_time = if imported {
        overlay.newest()
    } else {
        last_event
    };
    let (changes, buffers) = overlay.into_changes(ledger_time);
    (results, changes, buffers)
}

/// Runs events in order, honouring linked chains: a chain's events succeed together or all are
/// rolled back, the failing event keeping its own result and the others answering
/// `linked_event_failed`.
///
/// `exists` in a chain: a chain whose every event answers `exists` is a retry of a chain that
/// was applied, and answers `exists` throughout (nothing changes). A chain that mixes `ok` and
/// `exists` (an event applied earlier on its own, or the chain naming one event twice) is
/// malformed: it fails at its first `exists` event, which keeps that result.
fn run_chains<S: LedgerStore, E: Event, R: Copy + ChainResult>(
    overlay: &mut Overlay<'_, S>,
    events: &[E],
    stamps: Stamps,
    mut execute: impl FnMut(&mut Overlay<'_, S>, &E, Timestamp) -> R,
) -> Vec<R> {
    let mut results = Vec::with_capacity(events.len());
    let mut chain: Option<Chain> = None;
    for (i, event) in events.iter().enumerate() {
        let linked = event.is_linked();
        if linked && chain.is_none() {
            chain = Some(Chain::new(i, overlay.savepoint()));
        }
        let result = if linked && i + 1 == events.len() {
            R::LINKED_EVENT_CHAIN_OPEN
        } else if chain.as_ref().is_some_and(|c| c.broken_at.is_some()) {
            R::LINKED_EVENT_FAILED
        } else if let Some(refused) = check_import(event, stamps.imported, stamps.last) {
            refused
        } else if event.is_imported() {
            execute(overlay, event, event.timestamp())
        } else {
            execute(overlay, event, Timestamp(stamps.first.0 + i as u64))
        };
        results.push(result);
        if let Some(c) = chain.as_mut() {
            c.record(i, result);
        }
        let chain_ends = !linked || i + 1 == events.len();
        if chain_ends {
            if let Some(c) = chain.take() {
                c.finish(overlay, &mut results, i);
                overlay.end_chain();
            }
        }
    }
    results
}

/// The timestamps of a batch's events: `first + i` for event `i`, or an imported event's own.
#[derive(Clone, Copy)]
struct Stamps {
    first: Timestamp,
    last: Timestamp,
    imported: bool,
}

/// The linked chain being run: where it starts, and where it broke.
struct Chain {
    start: usize,
    savepoint: usize,
    first_ok: Option<usize>,
    first_exists: Option<usize>,
    broken_at: Option<usize>,
}

impl Chain {
    fn new(start: usize, savepoint: usize) -> Self {
        Chain {
            start,
            savepoint,
            first_ok: None,
            first_exists: None,
            broken_at: None,
        }
    }

    fn record<R: ChainResult>(&mut self, i: usize, result: R) {
        if self.broken_at.is_some() {
            return;
        }
        if result.is_ok() {
            self.first_ok.get_or_insert(i);
        } else if result.is_exists() {
            self.first_exists.get_or_insert(i);
        } else {
            self.broken_at = Some(i);
            return;
        }
        if let (Some(_), Some(exists)) = (self.first_ok, self.first_exists) {
            self.broken_at = Some(exists);
        }
    }

    /// Ends the chain at event `last`: rolls it back if it broke, every event but the one that
    /// broke it answering `linked_event_failed` (and a last event that left the chain open
    /// keeping `linked_event_chain_open`, which says what is wrong with the batch).
    fn finish<S: LedgerStore, R: ChainResult>(
        self,
        overlay: &mut Overlay<'_, S>,
        results: &mut [R],
        last: usize,
    ) {
        let Some(failed) = self.broken_at else {
            return;
        };
        overlay.rollback(self.savepoint);
        for (j, r) in results
            .iter_mut()
            .enumerate()
            .take(last + 1)
            .skip(self.start)
        {
            let left_open = j == last && *r == R::LINKED_EVENT_CHAIN_OPEN;
            if j != failed && !left_open {
                *r = R::LINKED_EVENT_FAILED;
            }
        }
    }
}

trait ChainResult: Copy + PartialEq {
    const LINKED_EVENT_FAILED: Self;
    const LINKED_EVENT_CHAIN_OPEN: Self;
    const IMPORTED_EVENT_EXPECTED: Self;
    const IMPORTED_EVENT_NOT_EXPECTED: Self;
    const TIMESTAMP_MUST_BE_ZERO: Self;
    const IMPORTED_EVENT_TIMESTAMP_OUT_OF_RANGE: Self;
    const IMPORTED_EVENT_TIMESTAMP_MUST_NOT_ADVANCE: Self;
    fn is_ok(self) -> bool;
    fn is_exists(self) -> bool;
}

macro_rules! chain_result {
    ($t:ty) => {
        impl ChainResult for $t {
            const LINKED_EVENT_FAILED: Self = <$t>::LinkedEventFailed;
            const LINKED_EVENT_CHAIN_OPEN: Self = <$t>::LinkedEventChainOpen;
            const IMPORTED_EVENT_EXPECTED: Self = <$t>::ImportedEventExpected;
            const IMPORTED_EVENT_NOT_EXPECTED: Self = <$t>::ImportedEventNotExpected;
            const TIMESTAMP_MUST_BE_ZERO: Self = <$t>::TimestampMustBeZero;
            const IMPORTED_EVENT_TIMESTAMP_OUT_OF_RANGE: Self =
                <$t>::ImportedEventTimestampOutOfRange;
            const IMPORTED_EVENT_TIMESTAMP_MUST_NOT_ADVANCE: Self =
                <$t>::ImportedEventTimestampMustNotAdvance;
            fn is_ok(self) -> bool {
                <$t>::is_ok(self)
            }
            fn is_exists(self) -> bool {
                <$t>::is_exists(self)
            }
        }
    };
}
chain_result!(CreateAccountResult);
chain_result!(CreateTransferResult);
