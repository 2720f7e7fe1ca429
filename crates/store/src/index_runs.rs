//! The encoding of an index run: the `(timestamp, transfer id)` pairs of one row of
//! `account_transfers` or `transfer_index`, in timestamp order.
//!
//! Delta-coded LEB128: the first pair as `timestamp varint | id varint`, each next one as
//! `timestamp - previous (> 0) varint | zigzag(id - previous id, wrapping) varint`. Timestamps
//! are close and ids of the same client close too: a pair takes 3 to 6 bytes where it took a
//! fixed 24 (format 4), which was a third of what a checkpoint wrote. A run of ids with no order
//! takes at most 29 bytes a pair.

use bulwark_ledger::{Timestamp, TransferId};

/// The most bytes one pair takes: a u64 and a u128 varint.
pub const MAX_PAIR_BYTES: usize = 10 + 19;

/// A format 4 pair: `timestamp u64 | id u128`, little-endian.
const FIXED_PAIR_BYTES: usize = 8 + 16;

/// The row of `run` (not empty, timestamps increasing).
pub fn encode_run(run: &[(Timestamp, TransferId)]) -> Vec<u8> {
    assert!(!run.is_empty(), "an index run holds at least one pair");
    let mut b = Vec::with_capacity(run.len() * 6);
    let (mut ts, mut id) = (0u64, 0u128);
    for (i, &(next_ts, next_id)) in run.iter().enumerate() {
        assert!(
            i == 0 || next_ts.0 > ts,
            "an index run is in timestamp order"
        );
        put_varint(&mut b, u128::from(next_ts.0 - ts));
        put_varint(&mut b, zigzag(next_id.0.wrapping_sub(id) as i128));
        (ts, id) = (next_ts.0, next_id.0);
    }
    b
}

/// The pairs of a run; `None` if it is empty or damaged (a varint cut short or too long, a
/// timestamp that does not grow).
pub fn decode_run(mut b: &[u8]) -> Option<Vec<(Timestamp, TransferId)>> {
    let mut run = Vec::with_capacity(b.len() / 4);
    let (mut ts, mut id) = (0u64, 0u128);
    while !b.is_empty() {
        let delta = u64::try_from(take_varint(&mut b)?).ok()?;
        if delta == 0 && !run.is_empty() {
            return None;
        }
        ts = ts.checked_add(delta)?;
        id = id.wrapping_add(unzigzag(take_varint(&mut b)?) as u128);
        run.push((Timestamp(ts), TransferId(id)));
    }
    (!run.is_empty()).then_some(run)
}

/// The pairs of a format 4 run (24 bytes each), for the upgrade to format 5 only.
pub(crate) fn decode_fixed_run(b: &[u8]) -> Option<Vec<(Timestamp, TransferId)>> {
    (b.len().is_multiple_of(FIXED_PAIR_BYTES) && !b.is_empty()).then(|| {
        b.chunks_exact(FIXED_PAIR_BYTES)
            .map(|e| {
                let ts = u64::from_le_bytes(e[..8].try_into().expect("8 bytes"));
                let id = u128::from_le_bytes(e[8..].try_into().expect("16 bytes"));
                (Timestamp(ts), TransferId(id))
            })
            .collect()
    })
}

fn zigzag(n: i128) -> u128 {
    ((n << 1) ^ (n >> 127)) as u128
}

fn unzigzag(z: u128) -> i128 {
    ((z >> 1) as i128) ^ -((z & 1) as i128)
}

fn put_varint(b: &mut Vec<u8>, mut v: u128) {
    while v >= 0x80 {
        b.push((v as u8) | 0x80);
        v >>= 7;
    }
    b.push(v as u8);
}

/// The varint at the start of `b`, which moves past it; `None` if it is cut short or does not
/// fit 128 bits.
fn take_varint(b: &mut &[u8]) -> Option<u128> {
    let mut v = 0u128;
    for (i, &byte) in b.iter().enumerate() {
        let bits = u128::from(byte & 0x7f);
        let shift = 7 * i as u32;
        if shift >= 128 || (shift > 121 && bits >> (128 - shift) != 0) {
            return None;
        }
        v |= bits << shift;
        if byte & 0x80 == 0 {
            *b = &b[i + 1..];
            return Some(v);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn pairs(raw: &[(u64, u128)]) -> Vec<(Timestamp, TransferId)> {
        raw.iter()
            .map(|&(ts, id)| (Timestamp(ts), TransferId(id)))
            .collect()
    }

    proptest! {
        #[test]
        fn any_run_decodes_to_itself(
            start in any::<u64>(),
            steps in prop::collection::vec((1u64..1 << 40, any::<u128>()), 1..200),
        ) {
            let mut ts = start;
            let mut run = Vec::new();
            for (step, id) in steps {
                let Some(next) = ts.checked_add(step) else { break };
                ts = next;
                run.push((Timestamp(ts), TransferId(id)));
            }
            prop_assume!(!run.is_empty());
            let row = encode_run(&run);
            prop_assert!(row.len() <= run.len() * MAX_PAIR_BYTES);
            prop_assert_eq!(decode_run(&row), Some(run));
        }
    }

    /// See `records::records_have_their_golden_bytes` for what a failure means.
    #[test]
    fn a_run_has_its_golden_bytes() {
        let run = pairs(&[(1_000, 500), (1_001, 502), (1_300, 499), (1_301, u128::MAX)]);
        let golden = [
            0xe8, 0x07, 0xe8, 0x07, // 1000, 500 (zigzag 1000)
            0x01, 0x04, // +1, +2
            0xab, 0x02, 0x05, // +299, -3
            0x01, 0xe7, 0x07, // +1, -500 (u128::MAX is 499 - 500)
        ];
        assert_eq!(encode_run(&run), golden, "the index run encoding changed");
        assert_eq!(decode_run(&golden), Some(run));
    }

    #[test]
    fn a_damaged_run_is_refused() {
        let row = encode_run(&pairs(&[(10, 1), (20, 2)]));
        assert!(decode_run(&row).is_some());
        assert_eq!(decode_run(&[]), None, "empty");
        assert_eq!(decode_run(&row[..row.len() - 1]), None, "cut short");
        assert_eq!(decode_run(&[0x80, 0x80]), None, "a varint cut short");
        assert_eq!(
            decode_run(&[0x0a, 0x02, 0x00, 0x02]),
            None,
            "a timestamp that stays"
        );
        let too_long = [[0xff; 9].as_slice(), &[0x7f, 0x00]].concat();
        assert_eq!(
            decode_run(&too_long),
            None,
            "a varint past 64 bits for a timestamp"
        );
        let mut id_too_long = vec![0x01];
        id_too_long.extend([0xff; 18]);
        id_too_long.push(0x7f);
        assert_eq!(decode_run(&id_too_long), None, "a varint past 128 bits");
    }

    #[test]
    fn a_format_4_run_is_read_for_the_upgrade() {
        let mut row = Vec::new();
        for (ts, id) in [(7u64, 9u128), (8, 3)] {
            row.extend(ts.to_le_bytes());
            row.extend(id.to_le_bytes());
        }
        assert_eq!(decode_fixed_run(&row), Some(pairs(&[(7, 9), (8, 3)])));
        assert_eq!(decode_fixed_run(&row[1..]), None);
    }
}
