//! The change feed's rule: how each balance-changing event moves the balances of its two
//! accounts. The feed is not recorded as batches apply (that cost every transfer 160 bytes written
//! twice on the node loop); stores replay it from the transfers and expiry events they keep,
//! starting from each account's balances before its first change, with this one rule.

use crate::types::{Amount, Balances, Change, Timestamp, Transfer, TransferFlags};

/// One balance-changing event, as a store replays it.
#[derive(Clone, Copy, Debug)]
pub enum FeedEvent<'a> {
    /// A transfer; for a post or a void, with the amount its pending transfer reserved.
    Transfer {
        transfer: &'a Transfer,
        pending_amount: Amount,
    },
    /// The expiry of a pending transfer, at its own timestamp.
    Expiry {
        at: Timestamp,
        pending: &'a Transfer,
    },
}

impl FeedEvent<'_> {
    /// The transfer whose accounts the event moves.
    pub fn transfer(&self) -> &Transfer {
        match self {
            FeedEvent::Transfer { transfer, .. } => transfer,
            FeedEvent::Expiry { pending, .. } => pending,
        }
    }

    /// Moves the balances of the event's debit account (`dr`) and credit account (`cr`) as the
    /// ledger did when it applied the event; the change the feed gives for it.
    pub fn replay(&self, dr: &mut Balances, cr: &mut Balances) -> Change {
        let (released, posted, reserved) = match *self {
            FeedEvent::Transfer {
                transfer: t,
                pending_amount,
            } => {
                let f = t.flags;
                if f.contains(TransferFlags::PENDING) {
                    (0, 0, t.amount)
                } else if f.contains(TransferFlags::POST_PENDING_TRANSFER) {
                    (pending_amount, t.amount, 0)
                } else if f.contains(TransferFlags::VOID_PENDING_TRANSFER) {
                    (pending_amount, 0, 0)
                } else {
                    (0, t.amount, 0)
                }
            }
            FeedEvent::Expiry { pending, .. } => (pending.amount, 0, 0),
        };
        let replayed = "the feed replays balances the ledger held";
        for (pending, posted_side) in [
            (&mut dr.debits_pending, &mut dr.debits_posted),
            (&mut cr.credits_pending, &mut cr.credits_posted),
        ] {
            *pending = pending.checked_sub(released).expect(replayed);
            *pending = pending.checked_add(reserved).expect(replayed);
            *posted_side = posted_side.checked_add(posted).expect(replayed);
        }
        let (timestamp, expired) = match *self {
            FeedEvent::Transfer { transfer, .. } => (transfer.timestamp, false),
            FeedEvent::Expiry { at, .. } => (at, true),
        };
        Change {
            timestamp,
            transfer: self.transfer().id,
            expired,
            debit: *dr,
            credit: *cr,
        }
    }
}

/// A stored event before it is replayed: a transfer, or an expiry (its timestamp, the pending
/// transfer).
#[derive(Clone, Copy, Debug)]
pub enum Stored<'a> {
    Transfer(&'a Transfer),
    Expiry(Timestamp, crate::types::TransferId),
}

/// Transfers and expiries, each in timestamp order, merged into the order they happened in.
pub fn in_order<'a>(
    transfers: impl Iterator<Item = &'a Transfer>,
    expired: impl Iterator<Item = &'a (Timestamp, crate::types::TransferId)>,
) -> impl Iterator<Item = Stored<'a>> {
    let (mut transfers, mut expired) = (transfers.peekable(), expired.peekable());
    std::iter::from_fn(move || match (transfers.peek(), expired.peek()) {
        (Some(t), Some(&&(at, _))) if at < t.timestamp => {
            expired.next().map(|&(at, id)| Stored::Expiry(at, id))
        }
        (Some(_), _) => transfers.next().map(Stored::Transfer),
        (None, _) => expired.next().map(|&(at, id)| Stored::Expiry(at, id)),
    })
}
