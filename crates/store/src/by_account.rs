//! Each account's transfers in a memtable, as positions in the memtable's timestamp-ordered
//! transfers (4 bytes an entry). Built when a history read first needs it, and by the checkpoint
//! for itself, never while a batch is applied: kept up to date there, its two list appends per
//! transfer (each a likely cache miss, and the lists' growth) took a quarter of the node loop's
//! time at 8,189 transfers a batch.

use bulwark_ledger::{AccountId, Transfer};

use crate::position_lists::PositionLists;

/// Positions of a memtable's transfers, by debit and credit account, each list in timestamp
/// order.
#[derive(Default)]
pub(crate) struct TransfersByAccount(PositionLists<AccountId>);

impl TransfersByAccount {
    /// Indexes the transfers after those indexed so far, up to `len`, at most `max` of them;
    /// whether every transfer up to `len` is indexed. `transfer` gives the one at a position.
    pub(crate) fn extend_to<'a>(
        &mut self,
        len: usize,
        max: usize,
        transfer: impl Fn(u32) -> &'a Transfer,
    ) -> bool {
        self.0.extend_to(len, max, |position| {
            let t = transfer(position);
            [t.debit_account_id, t.credit_account_id]
        })
    }

    /// Positions of `account`'s transfers, oldest first.
    pub(crate) fn positions(&self, account: AccountId) -> &[u32] {
        self.0.positions(account)
    }

    /// Every account's list, by account id: the order a checkpoint writes them in.
    pub(crate) fn sorted_lists(&self) -> Vec<(AccountId, &[u32])> {
        self.0.sorted_lists()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bulwark_ledger::{Timestamp, TransferId};

    fn transfer(ts: u64, debit: u128, credit: u128) -> Transfer {
        Transfer {
            id: TransferId(u128::from(ts) * 10),
            debit_account_id: AccountId(debit),
            credit_account_id: AccountId(credit),
            amount: 1,
            timestamp: Timestamp(ts),
            ..Transfer::default()
        }
    }

    #[test]
    fn lists_hold_both_sides_in_order_and_grow_by_extension() {
        let mut all = vec![transfer(1, 1, 2), transfer(2, 3, 1)];
        let mut index = TransfersByAccount::default();
        assert!(index.extend_to(all.len(), usize::MAX, |p| &all[p as usize]));
        all.push(transfer(3, 2, 3));
        assert!(
            !index.extend_to(all.len(), 0, |p| &all[p as usize]),
            "a step of none"
        );
        assert!(index.positions(AccountId(3)) == [1], "not yet indexed");
        assert!(index.extend_to(all.len(), 1, |p| &all[p as usize]));
        assert_eq!(index.positions(AccountId(1)), &[0, 1]);
        assert_eq!(index.positions(AccountId(2)), &[0, 2]);
        assert_eq!(index.positions(AccountId(3)), &[1, 2]);
        assert!(index.positions(AccountId(4)).is_empty());
        let accounts: Vec<_> = index.sorted_lists().iter().map(|(a, _)| a.0).collect();
        assert_eq!(accounts, [1, 2, 3]);
    }
}
