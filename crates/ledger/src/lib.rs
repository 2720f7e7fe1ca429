//! The ledger state machine: accounts, double-entry transfers and their rules.
//!
//! This crate owns the meaning of money in Bulwark: what a valid account or transfer is, which
//! result each event gets, how balances move, and the invariant that within every ledger the
//! debits equal the credits. It is pure: [`apply`] takes a batch that already carries its
//! timestamp and returns results, so every replica that applies the same log reaches the same
//! state. It must never do IO, read a clock, draw a random number or iterate a hash map in an
//! order that reaches its output.

pub mod access;
mod apply;
pub mod codec;
pub mod feed;
pub mod le;
pub mod outbox;
mod results;
mod store;
mod types;

pub use apply::{
    apply, apply_at, effective_timestamp, plan_at, stamp_after, Batch, BatchResults, Operation,
};
pub use results::{CreateAccountResult, CreateTransferResult};
pub use store::{
    apply_access_changes, apply_outbox_changes, failed_transfer_horizon, BatchBuffers, Changes,
    LedgerStore, MemoryStateMachine, MemoryStore, StateMachine,
};
/// A hash map keyed by ids. foldhash, not std's SipHash: hashing ids was an eighth of the node
/// loop's time. Its seed is random per map, so clients cannot choose ids that collide.
pub type IdMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
/// A hash set of ids (see [`IdMap`]).
pub type IdSet<K> = std::collections::HashSet<K, foldhash::fast::RandomState>;

pub use types::{
    Account, AccountFlags, AccountId, Amount, Balances, Change, FlagSet, NewAccount, NewTransfer,
    PendingStatus, Timestamp, Transfer, TransferFlags, TransferId, AMOUNT_MAX, NANOS_PER_SECOND,
};

/// A ledger whose debits and credits differ: double entry was broken.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "ledger {ledger} does not balance: debits posted {debits_posted} vs credits posted \
     {credits_posted}, debits pending {debits_pending} vs credits pending {credits_pending}"
)]
pub struct Unbalanced {
    pub ledger: u32,
    pub debits_posted: u128,
    pub credits_posted: u128,
    pub debits_pending: u128,
    pub credits_pending: u128,
}

/// Checks double entry over a whole ledger state: for every ledger, posted debits equal posted
/// credits and pending debits equal pending credits. Returns the first ledger that does not.
pub fn check_balanced<'a>(
    accounts: impl IntoIterator<Item = &'a Account>,
) -> Result<(), Unbalanced> {
    let mut sums: std::collections::BTreeMap<u32, [u128; 4]> = Default::default();
    for a in accounts {
        let s = sums.entry(a.ledger).or_default();
        // Modulo 2^128: a ledger's sum of 128-bit balances may pass it, and equal sums stay equal.
        s[0] = s[0].wrapping_add(a.debits_posted);
        s[1] = s[1].wrapping_add(a.credits_posted);
        s[2] = s[2].wrapping_add(a.debits_pending);
        s[3] = s[3].wrapping_add(a.credits_pending);
    }
    for (ledger, [dp, cp, dpe, cpe]) in sums {
        if dp != cp || dpe != cpe {
            return Err(Unbalanced {
                ledger,
                debits_posted: dp,
                credits_posted: cp,
                debits_pending: dpe,
                credits_pending: cpe,
            });
        }
    }
    Ok(())
}
