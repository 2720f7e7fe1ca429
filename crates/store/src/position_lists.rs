//! Lists of positions in a timestamp-ordered sequence (a memtable's transfers, all accounts), by
//! key, built by extension: the common core of the field indexes (`field_index.rs`) and of a
//! memtable's transfers by account (`by_account.rs`).

use std::hash::Hash;

use bulwark_ledger::IdMap;

/// Per key, the positions of the items holding it, each list in sequence order.
pub(crate) struct PositionLists<K> {
    /// Items indexed so far: the sequence's first `built`.
    built: usize,
    lists: IdMap<K, Vec<u32>>,
}

impl<K> Default for PositionLists<K> {
    fn default() -> Self {
        PositionLists {
            built: 0,
            lists: IdMap::default(),
        }
    }
}

impl<K: Copy + Eq + Hash + Ord> PositionLists<K> {
    /// Indexes the items of the sequence after those indexed so far, up to `len`, at most `max`
    /// of them, each under the `keys` of its position (no key twice for one item); whether every
    /// item up to `len` is indexed.
    pub(crate) fn extend_to<I: IntoIterator<Item = K>>(
        &mut self,
        len: usize,
        max: usize,
        keys: impl Fn(u32) -> I,
    ) -> bool {
        assert!(self.built <= len, "an indexed sequence only grows");
        let end = len.min(self.built.saturating_add(max));
        for position in self.built..end {
            let position = u32::try_from(position).expect("an indexed sequence holds under 2^32");
            for key in keys(position) {
                let list = self.lists.entry(key).or_default();
                // Positions come in order: comparing them spares reading the previous item, a
                // cache miss per item.
                assert!(list.last().is_none_or(|&p| p < position));
                list.push(position);
            }
        }
        self.built = end;
        end == len
    }

    /// The positions of the items holding `key`, in sequence order.
    pub(crate) fn positions(&self, key: K) -> &[u32] {
        self.lists.get(&key).map_or(&[], Vec::as_slice)
    }

    /// Every list, ordered by key: the order a checkpoint writes them in.
    pub(crate) fn sorted_lists(&self) -> Vec<(K, &[u32])> {
        let mut lists: Vec<_> = self
            .lists
            .iter()
            .map(|(&key, positions)| (key, positions.as_slice()))
            .collect();
        lists.sort_unstable_by_key(|&(key, _)| key);
        lists
    }
}
