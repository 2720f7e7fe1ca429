//! What the state machine needs from the state it runs on, and an in-memory store for tests.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::access::{AccessChange, AuditRecord, TokenId, TokenRecord};
use crate::outbox::{OutboxChange, OutboxMessage};
use crate::types::{Account, AccountId, Balances, PendingStatus, Timestamp, Transfer, TransferId};
use crate::IdMap;

/// Read access to the ledger's state, plus the one way to change it: committing the
/// [`Changes`] of a batch. Implementations must make `commit` all-or-nothing in memory;
/// durability is the caller's business (the log makes a batch durable before it is applied).
pub trait LedgerStore {
    fn account(&self, id: AccountId) -> Option<Account>;
    fn transfer(&self, id: TransferId) -> Option<Transfer>;
    /// The status of a transfer created with the `pending` flag; `None` for any other id.
    fn pending_status(&self, id: TransferId) -> Option<PendingStatus>;
    /// When a transfer with this id was refused for a reason of the ledger's state at the time
    /// (`CreateTransferResult::is_transient`); `None` if it never was.
    fn failed_transfer(&self, id: TransferId) -> Option<Timestamp>;
    /// Pending transfers still pending whose expiry is at or before `now`, earliest first.
    fn expired_pending(&self, now: Timestamp) -> Vec<(Timestamp, TransferId)>;
    /// The timestamp of the last event applied; 0 for an empty ledger.
    fn last_timestamp(&self) -> Timestamp;
    fn token(&self, id: TokenId) -> Option<TokenRecord>;
    fn token_count(&self) -> usize;
    /// Whether the cluster's first admin token was created (ever: revoking it does not undo this).
    fn admin_bootstrapped(&self) -> bool;
    /// The outbox message of a payment (`crate::outbox`), outbound or dead.
    fn outbox_message(&self, payment: TransferId) -> Option<OutboxMessage>;
    /// Commits a batch's changes. `buffers` held the batch while it was planned; a store that
    /// keeps them for the next batch ([`LedgerStore::take_batch_buffers`]) gives them the
    /// changes' vectors back once it has read them ([`BatchBuffers::recycle`]).
    fn commit(&mut self, changes: Changes, buffers: BatchBuffers);
    /// The buffers the last batch left, for the next one to be planned in; by default none.
    fn take_batch_buffers(&mut self) -> BatchBuffers {
        BatchBuffers::default()
    }
}

/// The vectors and maps a batch is planned in (`Overlay`), which a store may keep from one
/// batch to the next. A batch of 8,189 transfers needs about 4 MB of them: allocated afresh for
/// each batch, they were often memory the process had not touched yet, and the page faults that
/// zeroed it took a tenth of the node loop's time (`bulwark bench --batch 8189 --concurrency 1`:
/// the loop's page faults fell from 19 % to 9 % of its samples, its CPU by 3-22 % in 3 pairs).
#[derive(Default)]
pub struct BatchBuffers {
    pub(crate) accounts: Vec<Account>,
    pub(crate) account_at: IdMap<AccountId, usize>,
    pub(crate) transfers: Vec<Transfer>,
    pub(crate) transfer_at: IdMap<TransferId, usize>,
}

impl BatchBuffers {
    /// Takes back the accounts and transfers vectors of a batch's [`Changes`] (the next
    /// overlay empties them, as it does everything it is given).
    pub fn recycle(&mut self, accounts: Vec<Account>, transfers: Vec<Transfer>) {
        self.accounts = accounts;
        self.transfers = transfers;
    }
}

/// Refusals at or before this timestamp no longer reserve their id for an event at `now`
/// (`FAILED_TRANSFER_ID_RETENTION` of ledger time has passed): the ledger answers by it, and a
/// store may forget them.
pub fn failed_transfer_horizon(now: Timestamp) -> Timestamp {
    let retention = u64::try_from(bulwark_limits::FAILED_TRANSFER_ID_RETENTION.as_nanos())
        .expect("the retention fits u64 nanoseconds");
    Timestamp(now.0.saturating_sub(retention))
}

/// The write set of one batch: everything a store must persist for it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Changes {
    /// The final version of every account the batch created or changed, in the order the batch
    /// first changed each (deterministic: the order of its events).
    pub accounts: Vec<Account>,
    /// New transfers in timestamp order.
    pub transfers: Vec<Transfer>,
    /// New status of pending transfers, ordered by id.
    pub pending_status: Vec<(TransferId, PendingStatus)>,
    /// Ids of transfers refused for a transient reason, with the refused event's timestamp,
    /// ordered by id.
    pub failed_transfers: Vec<(TransferId, Timestamp)>,
    pub expiries_added: Vec<(Timestamp, TransferId)>,
    pub expiries_removed: Vec<(Timestamp, TransferId)>,
    /// Balances after each transfer, for accounts with the `history` flag, in timestamp order.
    pub balance_history: Vec<(AccountId, Timestamp, Balances)>,
    /// The expiries of pending transfers: (the expiry's timestamp, the pending transfer), in
    /// order. With the transfers, what a store replays the change feed from (`feed.rs`).
    pub expired: Vec<(Timestamp, TransferId)>,
    /// Changes to the tokens, in order.
    pub access: Vec<AccessChange>,
    /// The audit trail's new records, in order.
    pub audit: Vec<AuditRecord>,
    /// Changes to the outbox, in order.
    pub outbox: Vec<OutboxChange>,
    pub last_timestamp: Timestamp,
}

/// A ledger state that applies the batches of a replicated log, in log order. Implemented by the
/// durable state store and by [`MemoryStateMachine`] for the simulation.
pub trait StateMachine {
    /// Applies the batch at log `index` (which must be above `applied_index`).
    fn apply_batch(&mut self, index: u64, batch: &crate::Batch) -> crate::BatchResults;
    /// Applies the batches of one log entry (a group a leader proposed together) at log `index`,
    /// one after another exactly as if each had its own entry; per batch, its results and the
    /// timestamp its last event got.
    fn apply_group(
        &mut self,
        index: u64,
        batches: &[crate::Batch],
    ) -> Vec<(crate::BatchResults, Timestamp)>;
    /// Records that log `index` held no batch (a leader's empty entry, a membership change).
    fn skip_index(&mut self, index: u64);
    fn applied_index(&self) -> u64;
    /// The Raft term of the entry at `applied_index` (0: not known, a store from before terms
    /// were recorded). With it, a state ahead of its Raft log (a crash right after installing
    /// a checkpoint newer than the snapshot's index) can be made the log's starting point.
    fn applied_term(&self) -> u64;
    /// Records the term of the entry just applied (or skipped) at `applied_index`.
    fn set_applied_term(&mut self, term: u64);
    fn last_timestamp(&self) -> Timestamp;
    /// The earliest deadline of a pending transfer still pending (`None`: none will expire): a
    /// leader proposes an `ExpirePending` batch once its clock passes it.
    fn next_expiry(&self) -> Option<Timestamp>;
    /// The cluster configuration as of `applied_index`, in the consensus layer's encoding
    /// (opaque here); it is checkpointed with the state so that a restart replays membership
    /// changes on the configuration they were made against.
    fn membership(&self) -> Option<Vec<u8>>;
    fn set_membership(&mut self, encoded: Vec<u8>);
    /// Adds a record to the audit trail that no batch made (a membership change, at its index).
    fn record_audit(&mut self, record: AuditRecord);
    /// Whether the state holds more than it may until what it applied is written out (the
    /// durable store: its memtable at its cap while a checkpoint runs). A leader proposes no
    /// client write meanwhile; the writes wait, in order, and go as soon as it is not.
    fn is_backlogged(&self) -> bool {
        false
    }
}

/// A [`MemoryStore`] that knows which log index it has applied.
#[derive(Clone, Debug, Default)]
pub struct MemoryStateMachine {
    pub store: MemoryStore,
    pub applied_index: u64,
    pub applied_term: u64,
    pub membership: Option<Vec<u8>>,
    /// What [`StateMachine::is_backlogged`] answers: set by tests, as a durable store's
    /// checkpoint would.
    pub backlogged: bool,
}

impl StateMachine for MemoryStateMachine {
    fn apply_batch(&mut self, index: u64, batch: &crate::Batch) -> crate::BatchResults {
        assert!(
            index > self.applied_index,
            "log index {index} applied after {}",
            self.applied_index
        );
        self.applied_index = index;
        crate::apply_at(&mut self.store, batch, index)
    }

    fn apply_group(
        &mut self,
        index: u64,
        batches: &[crate::Batch],
    ) -> Vec<(crate::BatchResults, Timestamp)> {
        assert!(
            index > self.applied_index,
            "log index {index} applied after {}",
            self.applied_index
        );
        self.applied_index = index;
        batches
            .iter()
            .map(|batch| {
                let results = crate::apply_at(&mut self.store, batch, index);
                (results, self.store.last_timestamp)
            })
            .collect()
    }

    fn skip_index(&mut self, index: u64) {
        assert!(
            index > self.applied_index,
            "log index {index} applied after {}",
            self.applied_index
        );
        self.applied_index = index;
    }

    fn applied_term(&self) -> u64 {
        self.applied_term
    }

    fn set_applied_term(&mut self, term: u64) {
        self.applied_term = term;
    }

    fn applied_index(&self) -> u64 {
        self.applied_index
    }

    fn last_timestamp(&self) -> Timestamp {
        self.store.last_timestamp
    }

    fn next_expiry(&self) -> Option<Timestamp> {
        self.store.expiries.first().map(|(at, _)| *at)
    }

    fn membership(&self) -> Option<Vec<u8>> {
        self.membership.clone()
    }

    fn set_membership(&mut self, encoded: Vec<u8>) {
        self.membership = Some(encoded);
    }

    fn record_audit(&mut self, record: AuditRecord) {
        self.store.audit.push(record);
    }

    fn is_backlogged(&self) -> bool {
        self.backlogged
    }
}

/// A whole ledger in memory: the reference store of the tests and the simulation.
#[derive(Clone, Debug, Default)]
pub struct MemoryStore {
    pub accounts: BTreeMap<AccountId, Account>,
    pub transfers: HashMap<TransferId, Transfer>,
    pub pending: HashMap<TransferId, PendingStatus>,
    pub failed_transfers: HashMap<TransferId, Timestamp>,
    pub expiries: BTreeSet<(Timestamp, TransferId)>,
    pub balance_history: Vec<(AccountId, Timestamp, Balances)>,
    /// The change feed, oldest first (replayed from each batch's transfers and expiries).
    pub changes: Vec<crate::types::Change>,
    pub tokens: BTreeMap<TokenId, TokenRecord>,
    pub admin_bootstrapped: bool,
    pub audit: Vec<AuditRecord>,
    pub outbox: BTreeMap<TransferId, OutboxMessage>,
    pub last_timestamp: Timestamp,
}

impl MemoryStore {
    /// Appends a batch's events to the change feed, replayed from the balances before it.
    fn replay_feed(&mut self, transfers: &[Transfer], expired: &[(Timestamp, TransferId)]) {
        let new: HashMap<TransferId, &Transfer> = transfers.iter().map(|t| (t.id, t)).collect();
        let find = |id: &TransferId| new.get(id).copied().or_else(|| self.transfers.get(id));
        let mut balances: HashMap<AccountId, Balances> = HashMap::new();
        for event in crate::feed::in_order(transfers.iter(), expired.iter()) {
            let event = match event {
                crate::feed::Stored::Transfer(t) => crate::feed::FeedEvent::Transfer {
                    transfer: t,
                    pending_amount: find(&t.pending_id).map_or(0, |p| p.amount),
                },
                crate::feed::Stored::Expiry(at, id) => crate::feed::FeedEvent::Expiry {
                    at,
                    pending: find(&id).expect("an expired transfer exists"),
                },
            };
            let t = event.transfer();
            let mut side = |id: AccountId| {
                *balances.entry(id).or_insert_with(|| {
                    self.accounts
                        .get(&id)
                        .map(Account::balances)
                        .unwrap_or_default()
                })
            };
            let (mut dr, mut cr) = (side(t.debit_account_id), side(t.credit_account_id));
            self.changes.push(event.replay(&mut dr, &mut cr));
            balances.insert(t.debit_account_id, dr);
            balances.insert(t.credit_account_id, cr);
        }
    }
}

/// Applies outbox changes in order to a map of messages (every store keeps them the same way).
pub fn apply_outbox_changes(
    outbox: &mut BTreeMap<TransferId, OutboxMessage>,
    changes: impl IntoIterator<Item = OutboxChange>,
) {
    for change in changes {
        match change {
            OutboxChange::Put(m) => {
                outbox.insert(m.payment, m);
            }
            OutboxChange::Remove(payment) => {
                outbox.remove(&payment);
            }
        }
    }
}

/// Applies token changes in order to a map of tokens (every store keeps them the same way).
pub fn apply_access_changes(
    tokens: &mut BTreeMap<TokenId, TokenRecord>,
    bootstrapped: &mut bool,
    changes: &[AccessChange],
) {
    for change in changes {
        match change {
            AccessChange::Put(t) => {
                tokens.insert(t.id, t.clone());
            }
            AccessChange::Remove(id) => {
                tokens.remove(id);
            }
            AccessChange::Bootstrapped => *bootstrapped = true,
        }
    }
}

impl LedgerStore for MemoryStore {
    fn account(&self, id: AccountId) -> Option<Account> {
        self.accounts.get(&id).copied()
    }

    fn transfer(&self, id: TransferId) -> Option<Transfer> {
        self.transfers.get(&id).copied()
    }

    fn pending_status(&self, id: TransferId) -> Option<PendingStatus> {
        self.pending.get(&id).copied()
    }

    fn failed_transfer(&self, id: TransferId) -> Option<Timestamp> {
        self.failed_transfers.get(&id).copied()
    }

    fn expired_pending(&self, now: Timestamp) -> Vec<(Timestamp, TransferId)> {
        self.expiries
            .iter()
            .take_while(|(at, _)| *at <= now)
            .copied()
            .collect()
    }

    fn last_timestamp(&self) -> Timestamp {
        self.last_timestamp
    }

    fn token(&self, id: TokenId) -> Option<TokenRecord> {
        self.tokens.get(&id).cloned()
    }

    fn token_count(&self) -> usize {
        self.tokens.len()
    }

    fn admin_bootstrapped(&self) -> bool {
        self.admin_bootstrapped
    }

    fn outbox_message(&self, payment: TransferId) -> Option<OutboxMessage> {
        self.outbox.get(&payment).cloned()
    }

    fn commit(&mut self, changes: Changes, _buffers: BatchBuffers) {
        apply_outbox_changes(&mut self.outbox, changes.outbox);
        apply_access_changes(
            &mut self.tokens,
            &mut self.admin_bootstrapped,
            &changes.access,
        );
        self.audit.extend(changes.audit);
        // Before the accounts and transfers change: the replay starts from the balances before.
        self.replay_feed(&changes.transfers, &changes.expired);
        for account in changes.accounts {
            self.accounts.insert(account.id, account);
        }
        for transfer in changes.transfers {
            self.transfers.insert(transfer.id, transfer);
        }
        self.pending.extend(changes.pending_status);
        self.failed_transfers.extend(changes.failed_transfers);
        for key in changes.expiries_removed {
            self.expiries.remove(&key);
        }
        self.expiries.extend(changes.expiries_added);
        self.balance_history.extend(changes.balance_history);
        self.last_timestamp = changes.last_timestamp;
    }
}
