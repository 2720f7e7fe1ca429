//! The secondary indexes of the queries: for each of five fields (`user_data_128`, `user_data_64`,
//! `user_data_32`, `ledger`, `code`) and each value but 0, the accounts or transfers holding it, in
//! timestamp order. 0 is not indexed: in a query filter it means "any".
//!
//! In memory ([`FieldIndex`]) they are lists of positions in a timestamp-ordered sequence: all
//! accounts (kept up to date as accounts are created), or a memtable's transfers (built when a
//! query first needs them, so that applying a batch pays nothing for them). On disk, a checkpoint
//! writes each list of its memtable as packed runs (`transfer_index`, see `tables.rs`).

use bulwark_ledger::{Account, Transfer};

use crate::position_lists::PositionLists;

/// An indexed field, with its tag in the `transfer_index` table's keys; ordered as its tag (the
/// order a checkpoint writes the lists in).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum IndexField {
    UserData128 = 1,
    UserData64 = 2,
    UserData32 = 3,
    Ledger = 4,
    Code = 5,
}

/// The tag of the list of every transfer, by timestamp alone, in `transfer_index`.
pub(crate) const EVERY_TRANSFER: u8 = 0;

impl IndexField {
    /// In the order [`Indexed::fields`] gives their values.
    pub(crate) const ALL: [IndexField; 5] = [
        IndexField::UserData128,
        IndexField::UserData64,
        IndexField::UserData32,
        IndexField::Ledger,
        IndexField::Code,
    ];

    pub(crate) fn tag(self) -> u8 {
        self as u8
    }
}

/// What an index knows of an account or a transfer.
pub(crate) trait Indexed {
    /// The values of [`IndexField::ALL`], widened.
    fn fields(&self) -> [u128; 5];
}

impl Indexed for Transfer {
    fn fields(&self) -> [u128; 5] {
        [
            self.user_data_128,
            self.user_data_64.into(),
            self.user_data_32.into(),
            self.ledger.into(),
            self.code.into(),
        ]
    }
}

impl Indexed for Account {
    fn fields(&self) -> [u128; 5] {
        [
            self.user_data_128,
            self.user_data_64.into(),
            self.user_data_32.into(),
            self.ledger.into(),
            self.code.into(),
        ]
    }
}

/// Positions in a timestamp-ordered sequence, by field and value: each list in timestamp order.
#[derive(Default)]
pub(crate) struct FieldIndex(PositionLists<(IndexField, u128)>);

impl FieldIndex {
    /// Indexes the items of the sequence after those indexed so far, up to `len`, at most `max`
    /// of them; whether every item up to `len` is indexed. `item` gives the one at a position.
    pub(crate) fn extend_to<'a, T: Indexed + 'a>(
        &mut self,
        len: usize,
        max: usize,
        item: impl Fn(u32) -> &'a T,
    ) -> bool {
        self.0.extend_to(len, max, |position| {
            let fields = IndexField::ALL.into_iter().zip(item(position).fields());
            fields.filter(|&(_, value)| value != 0)
        })
    }

    /// The positions of the items whose `field` is `value`, in timestamp order.
    pub(crate) fn positions(&self, field: IndexField, value: u128) -> &[u32] {
        self.0.positions((field, value))
    }

    /// Every list, ordered by (field, value): the order a checkpoint writes them in.
    pub(crate) fn sorted_lists(&self) -> Vec<(IndexField, u128, &[u32])> {
        let lists = self.0.sorted_lists().into_iter();
        lists
            .map(|((field, value), list)| (field, value, list))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bulwark_ledger::{AccountId, Timestamp, TransferId};

    fn transfer(ts: u64, ledger: u32, code: u16, user_data_64: u64) -> Transfer {
        Transfer {
            id: TransferId(u128::from(ts) * 10),
            debit_account_id: AccountId(1),
            credit_account_id: AccountId(2),
            amount: 1,
            ledger,
            code,
            user_data_64,
            timestamp: Timestamp(ts),
            ..Transfer::default()
        }
    }

    #[test]
    fn lists_hold_each_value_but_zero_in_order_and_grow_by_extension() {
        let mut all = vec![transfer(1, 7, 1, 0), transfer(2, 7, 2, 5)];
        let mut index = FieldIndex::default();
        assert!(index.extend_to(all.len(), usize::MAX, |p| &all[p as usize]));
        all.push(transfer(3, 8, 1, 5));
        assert!(
            !index.extend_to(all.len(), 0, |p| &all[p as usize]),
            "a step of none"
        );
        assert!(index.extend_to(all.len(), 1, |p| &all[p as usize]));
        assert_eq!(index.positions(IndexField::Ledger, 7), &[0, 1]);
        assert_eq!(index.positions(IndexField::Ledger, 8), &[2]);
        assert_eq!(index.positions(IndexField::Code, 1), &[0, 2]);
        assert_eq!(index.positions(IndexField::UserData64, 5), &[1, 2]);
        assert!(index.positions(IndexField::UserData64, 0).is_empty());
        assert!(index.positions(IndexField::UserData128, 0).is_empty());
        let tags: Vec<_> = index
            .sorted_lists()
            .iter()
            .map(|(f, v, _)| (f.tag(), *v))
            .collect();
        assert_eq!(tags, [(2, 5), (4, 7), (4, 8), (5, 1), (5, 2)]);
    }
}
