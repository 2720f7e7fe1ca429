//! The outbox in the state store: every live message (outbound or dead) in memory, with the
//! outbound ones in the order they were queued (the relay's order); a checkpoint writes the
//! messages that changed since the last one (puts and removals), never the whole set, so that
//! an outbox a million deep during a processor's outage costs a checkpoint only what changed.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use bulwark_ledger::outbox::{encoding, OutboxChange, OutboxMessage};
use bulwark_ledger::{Timestamp, Transfer, TransferId};
use redb::{ReadTransaction, ReadableTable};

use crate::error::{redb_err, StoreError};
use crate::memtable::Frozen;
use crate::state::StateStore;
use crate::tables::OUTBOX;

/// The live messages; the outbound ones by (queued at, payment), the dead ones by payment.
#[derive(Default)]
pub(crate) struct Outbox {
    pub(crate) messages: BTreeMap<TransferId, OutboxMessage>,
    outbound: BTreeSet<(Timestamp, TransferId)>,
    dead: BTreeSet<TransferId>,
}

impl Outbox {
    fn put(&mut self, message: OutboxMessage) {
        self.remove(message.payment);
        if message.is_outbound() {
            self.outbound.insert((message.queued_at, message.payment));
        } else {
            self.dead.insert(message.payment);
        }
        self.messages.insert(message.payment, message);
    }

    fn remove(&mut self, payment: TransferId) {
        if let Some(old) = self.messages.remove(&payment) {
            self.outbound.remove(&(old.queued_at, old.payment));
            self.dead.remove(&payment);
        }
    }

    /// Applies a batch's changes; returns each payment's final state for the memtable.
    pub(crate) fn apply(
        &mut self,
        changes: Vec<OutboxChange>,
        memtable: &mut BTreeMap<TransferId, Option<OutboxMessage>>,
    ) {
        for change in changes {
            match change {
                OutboxChange::Put(m) => {
                    memtable.insert(m.payment, Some(m.clone()));
                    self.put(m);
                }
                OutboxChange::Remove(payment) => {
                    memtable.insert(payment, None);
                    self.remove(payment);
                }
            }
        }
    }

    pub(crate) fn outbound_len(&self) -> usize {
        self.outbound.len()
    }

    pub(crate) fn dead_len(&self) -> usize {
        self.dead.len()
    }
}

/// The outbox as of a checkpoint.
pub(crate) fn load_outbox(path: &Path, read: &ReadTransaction) -> Result<Outbox, StoreError> {
    let mut outbox = Outbox::default();
    let table = read
        .open_table(OUTBOX)
        .map_err(redb_err(path, "open outbox"))?;
    for row in table.iter().map_err(redb_err(path, "scan outbox"))? {
        let (key, value) = row.map_err(redb_err(path, "scan outbox"))?;
        let message = encoding::decode_message(value.value())
            .ok()
            .filter(|m| m.payment.0 == key.value())
            .ok_or_else(|| StoreError::Corrupt {
                path: path.into(),
                table: "outbox",
                key: key.value().to_string(),
            })?;
        outbox.put(message);
    }
    Ok(outbox)
}

/// A checkpoint's part: the messages that changed since the last one.
pub(crate) fn write_outbox(
    txn: &redb::WriteTransaction,
    frozen: &Frozen,
) -> Result<(), redb::Error> {
    let mut table = txn.open_table(OUTBOX)?;
    for (payment, message) in &frozen.memtable.outbox {
        match message {
            Some(m) => {
                table.insert(payment.0, encoding::encode_message(m).as_slice())?;
            }
            None => {
                table.remove(payment.0)?;
            }
        }
    }
    Ok(())
}

impl StateStore {
    /// Outbound messages queued after `after`, oldest first, at most `limit`, each with the
    /// pending transfer it would post (what the relay delivers).
    pub fn outbound_after(&self, after: Timestamp, limit: usize) -> Vec<(OutboxMessage, Transfer)> {
        use bulwark_ledger::LedgerStore;
        let from = (Timestamp(after.0.saturating_add(1)), TransferId::ZERO);
        self.outbox
            .outbound
            .range(from..)
            .take(limit)
            .map(|(_, payment)| {
                let message = self.outbox.messages[payment].clone();
                let pending = self
                    .transfer(message.pending)
                    .expect("an outbound message's pending transfer exists");
                (message, pending)
            })
            .collect()
    }

    /// Dead messages after payment `after` in id order, at most `limit`.
    pub fn dead_letters(&self, after: TransferId, limit: usize) -> Vec<OutboxMessage> {
        self.outbox
            .dead
            .range(TransferId(after.0.saturating_add(1))..)
            .take(limit)
            .map(|payment| self.outbox.messages[payment].clone())
            .collect()
    }

    /// How many messages are outbound, and how many dead.
    pub fn outbox_depth(&self) -> (usize, usize) {
        (self.outbox.outbound_len(), self.outbox.dead_len())
    }
}
