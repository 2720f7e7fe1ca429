//! The encodings of the records kept in the state store's tables: little-endian, fixed-width
//! but for transfers, whose fields take the widths their values need.

use bulwark_ledger::le::{LeArray, LeReader, LeWriter};
use bulwark_ledger::{
    Account, AccountFlags, AccountId, Balances, Change, FlagSet, Timestamp, Transfer,
    TransferFlags, TransferId,
};

pub const ACCOUNT_BYTES: usize = 128;
pub const BALANCES_BYTES: usize = 64;

/// `id | debits_pending | debits_posted | credits_pending | credits_posted | user_data_128`
/// (u128 each) `| user_data_64:u64 | user_data_32:u32 | reserved:u32 | ledger:u32 | code:u16 |
/// flags:u16 | timestamp:u64`: TigerBeetle's layout of an account.
pub fn encode_account(a: &Account) -> [u8; ACCOUNT_BYTES] {
    let mut b = LeArray::<ACCOUNT_BYTES>::default();
    b.put_u128(a.id.0);
    b.put_u128(a.debits_pending);
    b.put_u128(a.debits_posted);
    b.put_u128(a.credits_pending);
    b.put_u128(a.credits_posted);
    b.put_u128(a.user_data_128);
    b.put_u64(a.user_data_64);
    b.put_u32(a.user_data_32);
    b.skip(4);
    b.put_u32(a.ledger);
    b.put_u16(a.code);
    b.put_u16(a.flags.bits());
    b.put_u64(a.timestamp.0);
    b.finish()
}

pub fn decode_account(b: &[u8]) -> Option<Account> {
    (b.len() == ACCOUNT_BYTES).then(|| {
        let mut r = LeReader::new(b);
        Account {
            id: AccountId(r.u128()),
            debits_pending: r.u128(),
            debits_posted: r.u128(),
            credits_pending: r.u128(),
            credits_posted: r.u128(),
            user_data_128: r.u128(),
            user_data_64: r.u64(),
            user_data_32: {
                let v = r.u32();
                r.skip(4);
                v
            },
            ledger: r.u32(),
            code: r.u16(),
            flags: AccountFlags::from_bits_retain(r.u16()),
            timestamp: Timestamp(r.u64()),
        }
    })
}

/// The most bytes a transfer record takes: its widths word and every field at its widest (the
/// 16-bit fields take 4 bytes, the narrowest width there is).
pub const TRANSFER_MAX_BYTES: usize = 4 + 6 * 16 + 2 * 8 + 5 * 4;

/// A transfer record in `state.redb`: `widths:u32`, then the fields in the log event's order
/// (`id, debit_account_id, credit_account_id, amount, pending_id, user_data_128, user_data_64,
/// user_data_32, timeout, ledger, code, flags, timestamp`), each little-endian in the width its
/// two bits of `widths` give (field `i` at bits `2i..2i+2`: 0 = the field is 0 and takes no
/// bytes, 1 = 4 bytes, 2 = 8 bytes, 3 = 16 bytes). Transfers are the bulk of the store, and most
/// of a 128-bit field is zero in most ledgers (pending id and user data unset, ids and amounts
/// below 2^64): written whole, each checkpoint would write twice the bytes.
pub fn encode_transfer(t: &Transfer) -> CompactRecord<TRANSFER_MAX_BYTES> {
    let mut r = CompactRecord::default();
    for v in [
        t.id.0,
        t.debit_account_id.0,
        t.credit_account_id.0,
        t.amount,
        t.pending_id.0,
        t.user_data_128,
    ] {
        r.push(v);
    }
    r.push(t.user_data_64.into());
    for v in [t.user_data_32, t.timeout, t.ledger] {
        r.push(v.into());
    }
    r.push(t.code.into());
    r.push(t.flags.bits().into());
    r.push(t.timestamp.0.into());
    r.finish()
}

/// The id of a transfer record, read without decoding the rest.
pub fn transfer_record_id(b: &[u8]) -> Option<u128> {
    CompactReader::new(b)?.next(16)
}

pub fn decode_transfer(b: &[u8]) -> Option<Transfer> {
    let mut r = CompactReader::new(b)?;
    let transfer = Transfer {
        id: TransferId(r.next(16)?),
        debit_account_id: AccountId(r.next(16)?),
        credit_account_id: AccountId(r.next(16)?),
        amount: r.next(16)?,
        pending_id: TransferId(r.next(16)?),
        user_data_128: r.next(16)?,
        user_data_64: narrow(r.next(8)?)?,
        user_data_32: narrow(r.next(4)?)?,
        timeout: narrow(r.next(4)?)?,
        ledger: narrow(r.next(4)?)?,
        code: narrow(r.next(2)?)?,
        flags: TransferFlags::from_bits_retain(narrow(r.next(2)?)?),
        timestamp: Timestamp(narrow(r.next(8)?)?),
    };
    r.is_done().then_some(transfer)
}

fn narrow<T: TryFrom<u128>>(v: u128) -> Option<T> {
    T::try_from(v).ok()
}

/// The most bytes a change record takes: its widths word, the transfer id, the expiry mark and
/// eight balances at their widest.
pub const CHANGE_MAX_BYTES: usize = 4 + 16 + 4 + 8 * 16;

/// A change of the feed (`changes`, keyed by the event's timestamp), in the compact form of a
/// transfer record: `widths:u32`, then `transfer id, expired (0 or 1), the debit account's
/// debits_pending, debits_posted, credits_pending, credits_posted, the credit account's four`.
pub fn encode_change(c: &Change) -> CompactRecord<CHANGE_MAX_BYTES> {
    let mut r = CompactRecord::default();
    r.push(c.transfer.0);
    r.push(u128::from(c.expired));
    for b in [&c.debit, &c.credit] {
        for v in [
            b.debits_pending,
            b.debits_posted,
            b.credits_pending,
            b.credits_posted,
        ] {
            r.push(v);
        }
    }
    r.finish()
}

/// The change at `timestamp` (its key) from its record.
pub fn decode_change(timestamp: Timestamp, b: &[u8]) -> Option<Change> {
    let mut r = CompactReader::new(b)?;
    let transfer = TransferId(r.next(16)?);
    let expired = match r.next(1)? {
        0 => false,
        1 => true,
        _ => return None,
    };
    let mut balances = || -> Option<Balances> {
        Some(Balances {
            debits_pending: r.next(16)?,
            debits_posted: r.next(16)?,
            credits_pending: r.next(16)?,
            credits_posted: r.next(16)?,
        })
    };
    let (debit, credit) = (balances()?, balances()?);
    r.is_done().then_some(Change {
        timestamp,
        transfer,
        expired,
        debit,
        credit,
    })
}

/// A run of the change feed (a row of `changes`): per change `timestamp u64 | length u8 |` its
/// record ([`encode_change`]), in timestamp order.
pub fn encode_change_run(run: &[Change]) -> Vec<u8> {
    let mut b = Vec::with_capacity(run.len() * 64);
    for c in run {
        let record = encode_change(c);
        let record = record.as_slice();
        b.put_u64(c.timestamp.0);
        b.push(u8::try_from(record.len()).expect("a change record is under 256 bytes"));
        b.extend_from_slice(record);
    }
    b
}

/// The changes of a run; `None` if any is damaged, or the run is empty.
pub fn decode_change_run(mut b: &[u8]) -> Option<Vec<Change>> {
    let mut run = Vec::new();
    while !b.is_empty() {
        let ts = Timestamp(u64::from_le_bytes(b.get(..8)?.try_into().ok()?));
        let len = usize::from(*b.get(8)?);
        run.push(decode_change(ts, b.get(9..9 + len)?)?);
        b = &b[9 + len..];
    }
    (!run.is_empty()).then_some(run)
}

/// A record of fields in the widths their values need, at most `N` bytes; see
/// [`encode_transfer`].
pub struct CompactRecord<const N: usize> {
    bytes: [u8; N],
    len: usize,
    widths: u32,
    fields: u32,
}

impl<const N: usize> Default for CompactRecord<N> {
    fn default() -> Self {
        CompactRecord {
            bytes: [0; N],
            len: 4,
            widths: 0,
            fields: 0,
        }
    }
}

impl<const N: usize> CompactRecord<N> {
    fn push(&mut self, v: u128) {
        let (code, width) = if v == 0 {
            (0, 0)
        } else if v <= u128::from(u32::MAX) {
            (1, 4)
        } else if v <= u128::from(u64::MAX) {
            (2, 8)
        } else {
            (3, 16)
        };
        assert!(self.fields < 16, "a record has at most 16 fields");
        self.widths |= code << (2 * self.fields);
        self.fields += 1;
        self.bytes[self.len..self.len + width].copy_from_slice(&v.to_le_bytes()[..width]);
        self.len += width;
    }

    fn finish(mut self) -> Self {
        self.bytes[..4].copy_from_slice(&self.widths.to_le_bytes());
        self
    }

    pub fn as_slice(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

struct CompactReader<'a> {
    bytes: &'a [u8],
    at: usize,
    widths: u32,
}

impl<'a> CompactReader<'a> {
    fn new(bytes: &'a [u8]) -> Option<Self> {
        let widths = u32::from_le_bytes(bytes.get(..4)?.try_into().ok()?);
        Some(CompactReader {
            bytes,
            at: 4,
            widths,
        })
    }

    /// The next field, refused (`None`) if its width passes `max` bytes or the record's end.
    fn next(&mut self, max: usize) -> Option<u128> {
        let width = [0, 4, 8, 16][(self.widths & 3) as usize];
        self.widths >>= 2;
        if width > max.max(4) {
            return None;
        }
        let field = self.bytes.get(self.at..self.at + width)?;
        self.at += width;
        let mut le = [0u8; 16];
        le[..width].copy_from_slice(field);
        Some(u128::from_le_bytes(le))
    }

    /// Every byte read and no width left over: anything else is a damaged record.
    fn is_done(&self) -> bool {
        self.at == self.bytes.len() && self.widths == 0
    }
}

/// `debits_pending | debits_posted | credits_pending | credits_posted`, u128 each.
pub fn encode_balances(x: &Balances) -> [u8; BALANCES_BYTES] {
    let mut b = LeArray::<BALANCES_BYTES>::default();
    b.put_u128(x.debits_pending);
    b.put_u128(x.debits_posted);
    b.put_u128(x.credits_pending);
    b.put_u128(x.credits_posted);
    b.finish()
}

pub fn decode_balances(b: &[u8]) -> Option<Balances> {
    (b.len() == BALANCES_BYTES).then(|| {
        let mut r = LeReader::new(b);
        Balances {
            debits_pending: r.u128(),
            debits_posted: r.u128(),
            credits_pending: r.u128(),
            credits_posted: r.u128(),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hex of `bytes`, two digits a byte; `golden` with its whitespace (which only lays the
    /// fields out for the reader) removed.
    fn hex_pair(bytes: &[u8], golden: &str) -> (String, String) {
        let bytes = bytes.iter().map(|b| format!("{b:02x}")).collect();
        (bytes, golden.split_whitespace().collect())
    }

    fn unhex(golden: &str) -> Vec<u8> {
        let golden: String = golden.split_whitespace().collect();
        (0..golden.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&golden[i..i + 2], 16).expect("hex"))
            .collect()
    }

    /// Every record kept in `state.redb` encodes to these exact bytes, and they decode back: a
    /// failure is a change of the store's format (every store written before holds these
    /// bytes), which must be deliberate (a new `FORMAT_VERSION` and a reader of the old one).
    #[test]
    fn records_have_their_golden_bytes() {
        let account = Account {
            id: AccountId(0x1112_1314_1516_1718_191a_1b1c_1d1e_1f10),
            debits_pending: 0x2122_2324_2526_2728_292a_2b2c_2d2e_2f20,
            debits_posted: 0x3132_3334_3536_3738_393a_3b3c_3d3e_3f30,
            credits_pending: 0x4142_4344_4546_4748_494a_4b4c_4d4e_4f40,
            credits_posted: 0x5152_5354_5556_5758_595a_5b5c_5d5e_5f50,
            user_data_128: 0x6162_6364_6566_6768_696a_6b6c_6d6e_6f60,
            user_data_64: 0x7172_7374_7576_7778,
            user_data_32: 0x8182_8384,
            ledger: 0x9192_9394,
            code: 0xa1a2,
            flags: AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS | AccountFlags::HISTORY,
            timestamp: Timestamp(0xb1b2_b3b4_b5b6_b7b8),
        };
        let golden = "101f1e1d1c1b1a191817161514131211 202f2e2d2c2b2a292827262524232221
                      303f3e3d3c3b3a393837363534333231 404f4e4d4c4b4a494847464544434241
                      505f5e5d5c5b5a595857565554535251 606f6e6d6c6b6a696867666564636261
                      7877767574737271 84838281 00000000 94939291 a2a1 0a00 b8b7b6b5b4b3b2b1";
        let (bytes, expected) = hex_pair(&encode_account(&account), golden);
        assert_eq!(bytes, expected, "the account record changed");
        assert_eq!(decode_account(&unhex(golden)), Some(account));

        let balances = account.balances();
        let golden = "202f2e2d2c2b2a292827262524232221 303f3e3d3c3b3a393837363534333231
                      404f4e4d4c4b4a494847464544434241 505f5e5d5c5b5a595857565554535251";
        let (bytes, expected) = hex_pair(&encode_balances(&balances), golden);
        assert_eq!(bytes, expected, "the balances record changed");
        assert_eq!(decode_balances(&unhex(golden)), Some(balances));
    }

    /// A transfer record at its widest and as a typical transfer writes it: see
    /// `records_have_their_golden_bytes` for what a failure means.
    #[test]
    fn transfer_records_have_their_golden_bytes() {
        let transfer = Transfer {
            id: TransferId(0x1112_1314_1516_1718_191a_1b1c_1d1e_1f10),
            debit_account_id: AccountId(0x2122_2324_2526_2728_292a_2b2c_2d2e_2f20),
            credit_account_id: AccountId(0x3132_3334_3536_3738_393a_3b3c_3d3e_3f30),
            amount: 0x4142_4344_4546_4748_494a_4b4c_4d4e_4f40,
            pending_id: TransferId(0x5152_5354_5556_5758_595a_5b5c_5d5e_5f50),
            user_data_128: 0x6162_6364_6566_6768_696a_6b6c_6d6e_6f60,
            user_data_64: 0x7172_7374_7576_7778,
            user_data_32: 0x8182_8384,
            timeout: 0x9192_9394,
            ledger: 0xa1a2_a3a4,
            code: 0xb1b2,
            flags: TransferFlags::PENDING | TransferFlags::VOID_PENDING_TRANSFER,
            timestamp: Timestamp(0xc1c2_c3c4_c5c6_c7c8),
        };
        // Every field nonzero: the widest record. Widths: six 16-byte fields (3), user_data_64
        // 8 bytes (2), five 4-byte fields (1), the timestamp 8 bytes (2).
        let golden = "ff6f5502
                      101f1e1d1c1b1a191817161514131211 202f2e2d2c2b2a292827262524232221
                      303f3e3d3c3b3a393837363534333231 404f4e4d4c4b4a494847464544434241
                      505f5e5d5c5b5a595857565554535251 606f6e6d6c6b6a696867666564636261
                      7877767574737271 84838281 94939291 a4a3a2a1 b2b10000 0a000000
                      c8c7c6c5c4c3c2c1";
        let (bytes, expected) = hex_pair(encode_transfer(&transfer).as_slice(), golden);
        assert_eq!(bytes, expected, "the transfer record changed");
        assert_eq!(decode_transfer(&unhex(golden)), Some(transfer));
        assert_eq!(unhex(golden).len(), TRANSFER_MAX_BYTES);

        // A typical transfer: zero fields take no bytes, small ones 4.
        let typical = Transfer {
            id: TransferId(0x0102_0304_0506_0708),
            debit_account_id: AccountId(3),
            credit_account_id: AccountId(4),
            amount: 500,
            ledger: 1,
            code: 1,
            timestamp: Timestamp(0x1122_3344_5566_7788),
            ..Transfer::default()
        };
        let golden = "56001402 0807060504030201 03000000 04000000 f4010000 01000000 01000000
                      8877665544332211";
        let (bytes, expected) = hex_pair(encode_transfer(&typical).as_slice(), golden);
        assert_eq!(bytes, expected, "the transfer record changed");
        assert_eq!(decode_transfer(&unhex(golden)), Some(typical));
    }

    #[test]
    fn records_round_trip() {
        let a = Account {
            id: AccountId(1),
            ledger: 2,
            code: 3,
            flags: AccountFlags::HISTORY,
            user_data_128: u128::MAX - 1,
            user_data_64: 4,
            user_data_32: 11,
            debits_pending: 5,
            debits_posted: 6,
            credits_pending: 7,
            credits_posted: 8,
            timestamp: Timestamp(9),
        };
        assert_eq!(decode_account(&encode_account(&a)), Some(a));
        let t = Transfer {
            id: TransferId(1),
            debit_account_id: AccountId(2),
            credit_account_id: AccountId(3),
            amount: 4,
            pending_id: TransferId(5),
            timeout: 6,
            ledger: 7,
            code: 8,
            flags: TransferFlags::PENDING,
            user_data_128: 1 << 90,
            user_data_64: 9,
            user_data_32: 12,
            timestamp: Timestamp(10),
        };
        assert_eq!(decode_transfer(encode_transfer(&t).as_slice()), Some(t));
        let x = a.balances();
        assert_eq!(decode_balances(&encode_balances(&x)), Some(x));
        assert_eq!(decode_account(&[0; 3]), None);
    }

    /// A transfer record whose widths and bytes disagree, or whose field is wider than its type,
    /// does not decode (the store then reports corruption), never as another transfer.
    #[test]
    fn a_damaged_transfer_record_does_not_decode() {
        let t = Transfer {
            id: TransferId(7),
            amount: 5,
            ledger: 1,
            code: 1,
            ..Transfer::default()
        };
        let good = encode_transfer(&t).as_slice().to_vec();
        assert_eq!(decode_transfer(&good), Some(t));
        assert_eq!(decode_transfer(&good[..good.len() - 1]), None, "short");
        let mut longer = good.clone();
        longer.push(0);
        assert_eq!(decode_transfer(&longer), None, "bytes past the last field");
        let mut wide_code = good.clone();
        // `code` (field 10) claims 16 bytes.
        wide_code[2] |= 0b11 << 4;
        assert_eq!(
            decode_transfer(&wide_code),
            None,
            "a 16-bit field 16 bytes wide"
        );
        let mut past = good.clone();
        // A 14th field's width is set: there are only 13.
        past[3] |= 0b01 << 2;
        assert_eq!(decode_transfer(&past), None, "a width past the last field");
        assert_eq!(decode_transfer(&[1, 2]), None, "no widths word");
    }

    #[test]
    fn a_change_run_reads_back_and_a_damaged_one_is_refused() {
        let change = |ts: u64, big: u128| Change {
            timestamp: Timestamp(ts),
            transfer: TransferId(u128::from(ts) * 3),
            expired: ts.is_multiple_of(2),
            debit: Balances {
                debits_pending: big,
                debits_posted: 5,
                credits_pending: 0,
                credits_posted: 1,
            },
            credit: Balances {
                credits_posted: u128::MAX,
                ..Balances::default()
            },
        };
        let run = vec![change(7, 0), change(8, 1 << 100), change(11, 300)];
        let bytes = encode_change_run(&run);
        assert_eq!(decode_change_run(&bytes), Some(run));
        for cut in [1, 8, 9, bytes.len() - 1] {
            assert_eq!(decode_change_run(&bytes[..cut]), None, "cut at {cut}");
        }
        let mut flipped = bytes.clone();
        flipped[8] += 1; // the first record's length
        assert_eq!(decode_change_run(&flipped), None);
        assert_eq!(decode_change_run(&[]), None, "a run is never empty");
    }
}
