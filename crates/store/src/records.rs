//! Fixed-width little-endian encodings of the records kept in the state store's tables.

use bulwark_ledger::{
    Account, AccountFlags, AccountId, Balances, FlagSet, Timestamp, Transfer, TransferFlags,
    TransferId,
};

pub const ACCOUNT_BYTES: usize = 64;
pub const TRANSFER_BYTES: usize = 68;
pub const BALANCES_BYTES: usize = 32;

pub fn encode_account(a: &Account) -> [u8; ACCOUNT_BYTES] {
    let mut b = [0u8; ACCOUNT_BYTES];
    put(&mut b, 0, &a.id.0.to_le_bytes());
    put(&mut b, 8, &a.user_data.to_le_bytes());
    put(&mut b, 16, &a.debits_pending.to_le_bytes());
    put(&mut b, 24, &a.debits_posted.to_le_bytes());
    put(&mut b, 32, &a.credits_pending.to_le_bytes());
    put(&mut b, 40, &a.credits_posted.to_le_bytes());
    put(&mut b, 48, &a.timestamp.0.to_le_bytes());
    put(&mut b, 56, &a.ledger.to_le_bytes());
    put(&mut b, 60, &a.code.to_le_bytes());
    put(&mut b, 62, &a.flags.bits().to_le_bytes());
    b
}

pub fn decode_account(b: &[u8]) -> Option<Account> {
    (b.len() == ACCOUNT_BYTES).then(|| Account {
        id: AccountId(u64_at(b, 0)),
        user_data: u64_at(b, 8),
        debits_pending: u64_at(b, 16),
        debits_posted: u64_at(b, 24),
        credits_pending: u64_at(b, 32),
        credits_posted: u64_at(b, 40),
        timestamp: Timestamp(u64_at(b, 48)),
        ledger: u32::from_le_bytes(b[56..60].try_into().expect("4 bytes")),
        code: u16_at(b, 60),
        flags: AccountFlags::from_bits_retain(u16_at(b, 62)),
    })
}

pub fn encode_transfer(t: &Transfer) -> [u8; TRANSFER_BYTES] {
    let mut b = [0u8; TRANSFER_BYTES];
    put(&mut b, 0, &t.id.0.to_le_bytes());
    put(&mut b, 8, &t.debit_account_id.0.to_le_bytes());
    put(&mut b, 16, &t.credit_account_id.0.to_le_bytes());
    put(&mut b, 24, &t.amount.to_le_bytes());
    put(&mut b, 32, &t.pending_id.0.to_le_bytes());
    put(&mut b, 40, &t.user_data.to_le_bytes());
    put(&mut b, 48, &t.timestamp.0.to_le_bytes());
    put(&mut b, 56, &t.timeout.to_le_bytes());
    put(&mut b, 60, &t.ledger.to_le_bytes());
    put(&mut b, 64, &t.code.to_le_bytes());
    put(&mut b, 66, &t.flags.bits().to_le_bytes());
    b
}

pub fn decode_transfer(b: &[u8]) -> Option<Transfer> {
    (b.len() == TRANSFER_BYTES).then(|| Transfer {
        id: TransferId(u64_at(b, 0)),
        debit_account_id: AccountId(u64_at(b, 8)),
        credit_account_id: AccountId(u64_at(b, 16)),
        amount: u64_at(b, 24),
        pending_id: TransferId(u64_at(b, 32)),
        user_data: u64_at(b, 40),
        timestamp: Timestamp(u64_at(b, 48)),
        timeout: u32::from_le_bytes(b[56..60].try_into().expect("4 bytes")),
        ledger: u32::from_le_bytes(b[60..64].try_into().expect("4 bytes")),
        code: u16_at(b, 64),
        flags: TransferFlags::from_bits_retain(u16_at(b, 66)),
    })
}

pub fn encode_balances(x: &Balances) -> [u8; BALANCES_BYTES] {
    let mut b = [0u8; BALANCES_BYTES];
    put(&mut b, 0, &x.debits_pending.to_le_bytes());
    put(&mut b, 8, &x.debits_posted.to_le_bytes());
    put(&mut b, 16, &x.credits_pending.to_le_bytes());
    put(&mut b, 24, &x.credits_posted.to_le_bytes());
    b
}

pub fn decode_balances(b: &[u8]) -> Option<Balances> {
    (b.len() == BALANCES_BYTES).then(|| Balances {
        debits_pending: u64_at(b, 0),
        debits_posted: u64_at(b, 8),
        credits_pending: u64_at(b, 16),
        credits_posted: u64_at(b, 24),
    })
}

/// A run of an account's transfer index: `(timestamp, transfer id)` pairs, 16 bytes each.
pub fn encode_run(run: &[(Timestamp, TransferId)]) -> Vec<u8> {
    let mut b = Vec::with_capacity(run.len() * 16);
    for (ts, id) in run {
        b.extend_from_slice(&ts.0.to_le_bytes());
        b.extend_from_slice(&id.0.to_le_bytes());
    }
    b
}

pub fn decode_run(b: &[u8]) -> Option<impl Iterator<Item = (Timestamp, TransferId)> + '_> {
    (b.len().is_multiple_of(16) && !b.is_empty()).then(|| {
        b.chunks_exact(16)
            .map(|e| (Timestamp(u64_at(e, 0)), TransferId(u64_at(e, 8))))
    })
}

fn put(b: &mut [u8], at: usize, bytes: &[u8]) {
    b[at..at + bytes.len()].copy_from_slice(bytes);
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes(b[at..at + 2].try_into().expect("2 bytes"))
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
            id: AccountId(0x1112_1314_1516_1718),
            user_data: 0x2122_2324_2526_2728,
            debits_pending: 0x3132_3334_3536_3738,
            debits_posted: 0x4142_4344_4546_4748,
            credits_pending: 0x5152_5354_5556_5758,
            credits_posted: 0x6162_6364_6566_6768,
            timestamp: Timestamp(0x7172_7374_7576_7778),
            ledger: 0x8182_8384,
            code: 0x9192,
            flags: AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS | AccountFlags::HISTORY,
        };
        let golden = "1817161514131211 2827262524232221 3837363534333231 4847464544434241
                      5857565554535251 6867666564636261 7877767574737271 84838281 9291 0a00";
        let (bytes, expected) = hex_pair(&encode_account(&account), golden);
        assert_eq!(bytes, expected, "the account record changed");
        assert_eq!(decode_account(&unhex(golden)), Some(account));

        let transfer = Transfer {
            id: TransferId(0x1112_1314_1516_1718),
            debit_account_id: AccountId(0x2122_2324_2526_2728),
            credit_account_id: AccountId(0x3132_3334_3536_3738),
            amount: 0x4142_4344_4546_4748,
            pending_id: TransferId(0x5152_5354_5556_5758),
            user_data: 0x6162_6364_6566_6768,
            timestamp: Timestamp(0x7172_7374_7576_7778),
            timeout: 0x8182_8384,
            ledger: 0x9192_9394,
            code: 0xa1a2,
            flags: TransferFlags::LINKED | TransferFlags::POST_PENDING_TRANSFER,
        };
        let golden = "1817161514131211 2827262524232221 3837363534333231 4847464544434241
                      5857565554535251 6867666564636261 7877767574737271 84838281 94939291
                      a2a1 0500";
        let (bytes, expected) = hex_pair(&encode_transfer(&transfer), golden);
        assert_eq!(bytes, expected, "the transfer record changed");
        assert_eq!(decode_transfer(&unhex(golden)), Some(transfer));

        let balances = account.balances();
        let golden = "3837363534333231 4847464544434241 5857565554535251 6867666564636261";
        let (bytes, expected) = hex_pair(&encode_balances(&balances), golden);
        assert_eq!(bytes, expected, "the balances record changed");
        assert_eq!(decode_balances(&unhex(golden)), Some(balances));

        let run = [
            (
                Timestamp(0x0102_0304_0506_0708),
                TransferId(0x1112_1314_1516_1718),
            ),
            (Timestamp(9), TransferId(10)),
        ];
        let golden = "0807060504030201 1817161514131211 0900000000000000 0a00000000000000";
        let (bytes, expected) = hex_pair(&encode_run(&run), golden);
        assert_eq!(bytes, expected, "the account index run changed");
        let decoded: Vec<_> = decode_run(&unhex(golden)).expect("a run").collect();
        assert_eq!(decoded, run);
    }

    #[test]
    fn records_round_trip() {
        let a = Account {
            id: AccountId(1),
            ledger: 2,
            code: 3,
            flags: AccountFlags::HISTORY,
            user_data: 4,
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
            user_data: 9,
            timestamp: Timestamp(10),
        };
        assert_eq!(decode_transfer(&encode_transfer(&t)), Some(t));
        let x = a.balances();
        assert_eq!(decode_balances(&encode_balances(&x)), Some(x));
        assert_eq!(decode_account(&[0; 3]), None);
    }
}
