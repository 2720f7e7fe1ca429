//! The binary form of a [`Batch`] as it is written to the log: fixed-width little-endian
//! fields, so that decoding is a bounds check and a few loads, and the format is obvious.
//!
//! ```text
//! batch    = version:u8 (=4) | operation:u8 (1 accounts, 2 transfers) | timestamp:u64 | count:u32 | event*
//! account  = id:u128 | user_data_128:u128 | user_data_64:u64 | user_data_32:u32 | ledger:u32
//!            | code:u16 | flags:u16 | timestamp:u64                                          (60 bytes)
//! transfer = id:u128 | debit:u128 | credit:u128 | amount:u128 | pending_id:u128
//!            | user_data_128:u128 | user_data_64:u64 | user_data_32:u32 | timeout:u32
//!            | ledger:u32 | code:u16 | flags:u16 | timestamp:u64                            (128 bytes)
//! control  = len:u32 | command (access::encoding; operation 3, count 1)
//! expire   = (nothing; operation 4, count 1: expire the pending transfers due by the timestamp)
//! outbox   = (len:u32 | command)*  (operation 5, count commands; outbox::encoding)
//! group    = marker:u8 (=2) | count:u32 | (len:u32 | batch)*                                  (count >= 1)
//! ```
//! A Raft entry holds either one `batch` (its first byte is the batch version, 4) or a `group` of
//! batches that a leader proposed together (first byte 2). [`decode_entry`] reads both. Earlier
//! versions (1: events without their client timestamp; 3: 64-bit ids, amounts and one user data)
//! are refused: a log written by them belongs to a state store of an earlier format, which the
//! store refuses too.
//!
//! Checksums are the log's business; this layer only refuses bytes that do not parse.

use crate::access::{encoding, Control};
use crate::apply::{Batch, Operation};
use crate::le::{LeReader, LeWriter};
use crate::types::{
    AccountFlags, AccountId, FlagSet, NewAccount, NewTransfer, Timestamp, TransferFlags, TransferId,
};

const VERSION: u8 = 4;
/// First byte of an entry holding a group of batches; distinct from every batch version.
const GROUP_MARKER: u8 = 2;
const GROUP_HEADER: usize = 1 + 4;
const OP_ACCOUNTS: u8 = 1;
const OP_TRANSFERS: u8 = 2;
/// A control command (`access::Control`): count is 1 and the event is `len:u32 | command`.
const OP_CONTROL: u8 = 3;
/// `Operation::ExpirePending`: count is 1 and there are no event bytes.
const OP_EXPIRE: u8 = 4;
/// `Operation::Outbox`: count commands, each `len:u32 | command`.
const OP_OUTBOX: u8 = 5;
const HEADER: usize = 1 + 1 + 8 + 4;
const ACCOUNT_BYTES: usize = 60;
const TRANSFER_BYTES: usize = 128;

// The largest batch (transfers are the wider events) fits a group entry on its own: a group
// header, its length prefix, the batch header and every event.
const _: () = assert!(ACCOUNT_BYTES <= TRANSFER_BYTES);
const _: () = assert!(
    GROUP_HEADER + 4 + HEADER + bulwark_limits::MAX_BATCH_EVENTS * TRANSFER_BYTES
        <= bulwark_limits::MAX_GROUP_BYTES
);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CodecError {
    #[error("batch encoding: unknown version {0}")]
    Version(u8),
    #[error("batch encoding: unknown operation {0}")]
    Operation(u8),
    #[error("batch encoding: expected {expected} bytes, found {found}")]
    Length { expected: usize, found: usize },
    #[error("batch group: {0}")]
    Group(&'static str),
    #[error("control command: {0}")]
    Control(&'static str),
    #[error("outbox command: {0}")]
    Outbox(&'static str),
}

/// The encoded size of `operation` as one batch, without encoding it.
pub fn encoded_len(operation: &Operation) -> usize {
    HEADER
        + match operation {
            Operation::CreateAccounts(a) => a.len() * ACCOUNT_BYTES,
            Operation::CreateTransfers(t) => t.len() * TRANSFER_BYTES,
            Operation::Control(c) => 4 + control_bytes(c).len(),
            Operation::Outbox(commands) => commands.iter().map(|c| 4 + outbox_bytes(c).len()).sum(),
            Operation::ExpirePending => 0,
        }
}

fn outbox_bytes(command: &crate::outbox::OutboxCommand) -> Vec<u8> {
    let mut out = Vec::new();
    crate::outbox::encoding::encode_command(command, &mut out);
    out
}

fn control_bytes(control: &Control) -> Vec<u8> {
    let mut out = Vec::new();
    encoding::encode_control(control, &mut out);
    out
}

/// The encoded size of a group entry holding batches of these encoded sizes.
pub fn group_len(batch_lens: impl IntoIterator<Item = usize>) -> usize {
    GROUP_HEADER + batch_lens.into_iter().map(|l| 4 + l).sum::<usize>()
}

/// One entry's payload for `batches`: a lone batch in the single-batch form (as before groups
/// existed), several as a group.
pub fn encode_entry(batches: &[Batch], out: &mut Vec<u8>) {
    match batches {
        [] => panic!("an entry holds at least one batch"),
        [one] => encode(one, out),
        many => {
            // One allocation of the exact size: grown by doubling, an entry of a few MB was copied
            // a dozen times into fresh pages (15 % of the loop's page faults under `bench`).
            out.reserve(group_len(many.iter().map(|b| encoded_len(&b.operation))));
            out.push(GROUP_MARKER);
            out.extend_from_slice(
                &u32::try_from(many.len())
                    .expect("group size fits u32")
                    .to_le_bytes(),
            );
            for batch in many {
                let len = encoded_len(&batch.operation);
                out.extend_from_slice(
                    &u32::try_from(len)
                        .expect("batch size fits u32")
                        .to_le_bytes(),
                );
                let start = out.len();
                encode(batch, out);
                debug_assert_eq!(out.len() - start, len);
            }
        }
    }
}

/// The batches of one entry's payload, in the order they are applied: one for a single-batch
/// entry, all of a group's.
pub fn decode_entry(bytes: &[u8]) -> Result<Vec<Batch>, CodecError> {
    if bytes.first() != Some(&GROUP_MARKER) {
        return decode(bytes).map(|b| vec![b]);
    }
    if bytes.len() < GROUP_HEADER {
        return Err(CodecError::Length {
            expected: GROUP_HEADER,
            found: bytes.len(),
        });
    }
    let count = u32_at(bytes, 1) as usize;
    if count == 0 {
        return Err(CodecError::Group("a group holds no batch"));
    }
    let mut batches = Vec::with_capacity(count.min(bytes.len() / (4 + HEADER)));
    let mut at = GROUP_HEADER;
    for _ in 0..count {
        let len = bytes
            .get(at..at + 4)
            .map(|b| u32_at(b, 0) as usize)
            .ok_or(CodecError::Group("a batch length runs past the end"))?;
        at += 4;
        let body = bytes
            .get(at..at + len)
            .ok_or(CodecError::Group("a batch runs past the end"))?;
        batches.push(decode(body)?);
        at += len;
    }
    if at != bytes.len() {
        return Err(CodecError::Group("bytes after the last batch"));
    }
    Ok(batches)
}

pub fn encode(batch: &Batch, out: &mut Vec<u8>) {
    let (op, count) = match &batch.operation {
        Operation::CreateAccounts(a) => (OP_ACCOUNTS, a.len()),
        Operation::CreateTransfers(t) => (OP_TRANSFERS, t.len()),
        Operation::Control(_) => (OP_CONTROL, 1),
        Operation::Outbox(c) => (OP_OUTBOX, c.len()),
        Operation::ExpirePending => (OP_EXPIRE, 1),
    };
    out.push(VERSION);
    out.push(op);
    out.extend_from_slice(&batch.timestamp.0.to_le_bytes());
    out.extend_from_slice(
        &u32::try_from(count)
            .expect("batch size fits u32")
            .to_le_bytes(),
    );
    match &batch.operation {
        Operation::CreateAccounts(accounts) => {
            out.reserve(accounts.len() * ACCOUNT_BYTES);
            for a in accounts {
                out.put_u128(a.id.0);
                out.put_u128(a.user_data_128);
                out.put_u64(a.user_data_64);
                out.put_u32(a.user_data_32);
                out.put_u32(a.ledger);
                out.put_u16(a.code);
                out.put_u16(a.flags.bits());
                out.put_u64(a.timestamp.0);
            }
        }
        Operation::CreateTransfers(transfers) => {
            out.reserve(transfers.len() * TRANSFER_BYTES);
            for t in transfers {
                out.put_u128(t.id.0);
                out.put_u128(t.debit_account_id.0);
                out.put_u128(t.credit_account_id.0);
                out.put_u128(t.amount);
                out.put_u128(t.pending_id.0);
                out.put_u128(t.user_data_128);
                out.put_u64(t.user_data_64);
                out.put_u32(t.user_data_32);
                out.put_u32(t.timeout);
                out.put_u32(t.ledger);
                out.put_u16(t.code);
                out.put_u16(t.flags.bits());
                out.put_u64(t.timestamp.0);
            }
        }
        Operation::Control(control) => {
            let bytes = control_bytes(control);
            let len = u32::try_from(bytes.len()).expect("a control command fits u32");
            out.extend_from_slice(&len.to_le_bytes());
            out.extend_from_slice(&bytes);
        }
        Operation::Outbox(commands) => {
            for command in commands {
                let bytes = outbox_bytes(command);
                let len = u32::try_from(bytes.len()).expect("an outbox command fits u32");
                out.extend_from_slice(&len.to_le_bytes());
                out.extend_from_slice(&bytes);
            }
        }
        Operation::ExpirePending => {}
    }
}

pub fn decode(bytes: &[u8]) -> Result<Batch, CodecError> {
    if bytes.len() < HEADER {
        return Err(CodecError::Length {
            expected: HEADER,
            found: bytes.len(),
        });
    }
    if bytes[0] != VERSION {
        return Err(CodecError::Version(bytes[0]));
    }
    let op = bytes[1];
    let timestamp = Timestamp(u64_at(bytes, 2));
    let count = u32_at(bytes, 10) as usize;
    if op == OP_CONTROL {
        return decode_control(bytes, timestamp, count);
    }
    if op == OP_OUTBOX {
        return decode_outbox(&bytes[HEADER..], timestamp, count);
    }
    if op == OP_EXPIRE {
        if count != 1 || bytes.len() != HEADER {
            return Err(CodecError::Length {
                expected: HEADER,
                found: bytes.len(),
            });
        }
        return Ok(Batch {
            timestamp,
            operation: Operation::ExpirePending,
        });
    }
    let width = match op {
        OP_ACCOUNTS => ACCOUNT_BYTES,
        OP_TRANSFERS => TRANSFER_BYTES,
        other => return Err(CodecError::Operation(other)),
    };
    let expected = HEADER + count * width;
    if bytes.len() != expected {
        return Err(CodecError::Length {
            expected,
            found: bytes.len(),
        });
    }
    let events = bytes[HEADER..].chunks_exact(width);
    let operation = if op == OP_ACCOUNTS {
        Operation::CreateAccounts(events.map(decode_account).collect())
    } else {
        Operation::CreateTransfers(events.map(decode_transfer).collect())
    };
    Ok(Batch {
        timestamp,
        operation,
    })
}

fn decode_account(e: &[u8]) -> NewAccount {
    let mut r = LeReader::new(e);
    let account = NewAccount {
        id: AccountId(r.u128()),
        user_data_128: r.u128(),
        user_data_64: r.u64(),
        user_data_32: r.u32(),
        ledger: r.u32(),
        code: r.u16(),
        flags: AccountFlags::from_bits_retain(r.u16()),
        timestamp: Timestamp(r.u64()),
    };
    debug_assert_eq!(r.position(), ACCOUNT_BYTES);
    account
}

fn decode_transfer(e: &[u8]) -> NewTransfer {
    let mut r = LeReader::new(e);
    let transfer = NewTransfer {
        id: TransferId(r.u128()),
        debit_account_id: AccountId(r.u128()),
        credit_account_id: AccountId(r.u128()),
        amount: r.u128(),
        pending_id: TransferId(r.u128()),
        user_data_128: r.u128(),
        user_data_64: r.u64(),
        user_data_32: r.u32(),
        timeout: r.u32(),
        ledger: r.u32(),
        code: r.u16(),
        flags: TransferFlags::from_bits_retain(r.u16()),
        timestamp: Timestamp(r.u64()),
    };
    debug_assert_eq!(r.position(), TRANSFER_BYTES);
    transfer
}

fn decode_control(bytes: &[u8], timestamp: Timestamp, count: usize) -> Result<Batch, CodecError> {
    if count != 1 {
        return Err(CodecError::Control("a control batch holds one command"));
    }
    let body = &bytes[HEADER..];
    let len = body
        .get(..4)
        .map(|b| u32_at(b, 0) as usize)
        .ok_or(CodecError::Control("no command length"))?;
    if body.len() != 4 + len {
        return Err(CodecError::Length {
            expected: HEADER + 4 + len,
            found: bytes.len(),
        });
    }
    let control = encoding::decode_control(&body[4..])
        .map_err(|_| CodecError::Control("the command does not decode"))?;
    Ok(Batch {
        timestamp,
        operation: Operation::Control(Box::new(control)),
    })
}

fn decode_outbox(mut body: &[u8], timestamp: Timestamp, count: usize) -> Result<Batch, CodecError> {
    if count == 0 {
        return Err(CodecError::Outbox("an outbox batch holds no command"));
    }
    // Each command takes at least its length prefix and a byte: a count the bytes cannot hold
    // is refused before anything is allocated for it.
    if count > body.len() / 5 {
        return Err(CodecError::Outbox("more commands than bytes"));
    }
    let mut commands = Vec::with_capacity(count);
    for _ in 0..count {
        let len = body
            .get(..4)
            .map(|b| u32_at(b, 0) as usize)
            .ok_or(CodecError::Outbox("no command length"))?;
        let command = body
            .get(4..4 + len)
            .ok_or(CodecError::Outbox("a command runs past the end"))?;
        commands.push(
            crate::outbox::encoding::decode_command(command)
                .map_err(|_| CodecError::Outbox("a command does not decode"))?,
        );
        body = &body[4 + len..];
    }
    if !body.is_empty() {
        return Err(CodecError::Outbox("bytes after the last command"));
    }
    Ok(Batch {
        timestamp,
        operation: Operation::Outbox(commands),
    })
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_both_operations() {
        let batches = [
            Batch {
                timestamp: Timestamp(77),
                operation: Operation::CreateAccounts(vec![NewAccount {
                    id: AccountId(1),
                    ledger: 2,
                    code: 3,
                    flags: AccountFlags::HISTORY | AccountFlags::LINKED,
                    user_data_128: u128::MAX,
                    user_data_64: u64::MAX,
                    user_data_32: u32::MAX,
                    timestamp: Timestamp(12),
                }]),
            },
            Batch {
                timestamp: Timestamp(u64::MAX),
                operation: Operation::CreateTransfers(vec![
                    NewTransfer {
                        id: TransferId(9),
                        debit_account_id: AccountId(1),
                        credit_account_id: AccountId(2),
                        amount: 5,
                        pending_id: TransferId(4),
                        timeout: 7,
                        ledger: 8,
                        code: 6,
                        flags: TransferFlags::PENDING,
                        user_data_128: 1 << 100,
                        user_data_64: 3,
                        user_data_32: 4,
                        timestamp: Timestamp(13),
                    };
                    3
                ]),
            },
        ];
        for batch in batches {
            let mut bytes = Vec::new();
            encode(&batch, &mut bytes);
            assert_eq!(decode(&bytes), Ok(batch));
        }
    }

    #[test]
    fn refuses_truncated_or_unknown_bytes() {
        let batch = Batch {
            timestamp: Timestamp(1),
            operation: Operation::CreateTransfers(vec![NewTransfer::default()]),
        };
        let mut bytes = Vec::new();
        encode(&batch, &mut bytes);
        assert!(matches!(
            decode(&bytes[..bytes.len() - 1]),
            Err(CodecError::Length { .. })
        ));
        let mut wrong = bytes.clone();
        wrong[1] = 9;
        assert_eq!(decode(&wrong), Err(CodecError::Operation(9)));
        for old in [1, 3] {
            wrong[0] = old;
            assert_eq!(
                decode(&wrong),
                Err(CodecError::Version(old)),
                "a batch of an earlier format (1: no client timestamps, 3: 64-bit fields) is refused"
            );
        }
    }

    /// Hex of `bytes`, two digits a byte, no separators.
    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Asserts that `batches` encode as one entry to exactly `golden` (hex, whitespace ignored:
    /// it only lays the fields out for the reader) and that those bytes decode back to them. A
    /// failure here is a change to the log's format: every node and every log written before
    /// reads these bytes, so a change must be deliberate (a new version byte, and a reader of the
    /// old one).
    fn assert_golden(batches: &[Batch], golden: &str) {
        let golden: String = golden.split_whitespace().collect();
        let mut entry = Vec::new();
        encode_entry(batches, &mut entry);
        assert_eq!(hex(&entry), golden, "the encoding of {batches:?} changed");
        let bytes: Vec<u8> = (0..golden.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&golden[i..i + 2], 16).expect("hex"))
            .collect();
        assert_eq!(decode_entry(&bytes).as_deref(), Ok(batches));
    }

    #[test]
    fn an_accounts_batch_has_its_golden_bytes() {
        let batch = Batch {
            timestamp: Timestamp(0x0102_0304_0506_0708),
            operation: Operation::CreateAccounts(vec![NewAccount {
                id: AccountId(0x1112_1314_1516_1718_191a_1b1c_1d1e_1f10),
                user_data_128: 0x2122_2324_2526_2728_292a_2b2c_2d2e_2f20,
                user_data_64: 0x3132_3334_3536_3738,
                user_data_32: 0x4142_4344,
                ledger: 0x5152_5354,
                code: 0x6162,
                flags: AccountFlags::HISTORY | AccountFlags::LINKED,
                timestamp: Timestamp(0x7172_7374_7576_7778),
            }]),
        };
        assert_golden(
            &[batch],
            "04 01 0807060504030201 01000000
             101f1e1d1c1b1a191817161514131211 202f2e2d2c2b2a292827262524232221 3837363534333231
             44434241 54535251 6261 0900 7877767574737271",
        );
    }

    #[test]
    fn a_transfers_batch_has_its_golden_bytes() {
        let transfer = NewTransfer {
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
        let batch = Batch {
            timestamp: Timestamp(0x0102_0304_0506_0708),
            operation: Operation::CreateTransfers(vec![transfer, NewTransfer::default()]),
        };
        assert_golden(
            &[batch],
            "04 02 0807060504030201 02000000
             101f1e1d1c1b1a191817161514131211 202f2e2d2c2b2a292827262524232221
             303f3e3d3c3b3a393837363534333231 404f4e4d4c4b4a494847464544434241
             505f5e5d5c5b5a595857565554535251 606f6e6d6c6b6a696867666564636261
             7877767574737271 84838281 94939291 a4a3a2a1 b2b1 0a00 c8c7c6c5c4c3c2c1
             00000000000000000000000000000000 00000000000000000000000000000000
             00000000000000000000000000000000 00000000000000000000000000000000
             00000000000000000000000000000000 00000000000000000000000000000000
             0000000000000000 00000000 00000000 00000000 0000 0000 0000000000000000",
        );
    }

    #[test]
    fn a_control_batch_has_its_golden_bytes() {
        use crate::access::{Actor, ControlCommand, Role, TokenId};
        let create = Control {
            actor: Actor::Token(TokenId(0x1112_1314_1516_1718)),
            command: ControlCommand::CreateToken {
                id: TokenId(0x2122_2324_2526_2728),
                name: "ops".into(),
                role: Role::Write,
                secret_hash: [0xab; 32],
            },
        };
        let revoke = Control {
            actor: Actor::Node(7),
            command: ControlCommand::RevokeToken {
                id: TokenId(0x3132_3334_3536_3738),
            },
        };
        let control = |timestamp: u64, control: Control| Batch {
            timestamp: Timestamp(timestamp),
            operation: Operation::Control(Box::new(control)),
        };
        assert_golden(
            &[control(0x0102_0304_0506_0708, create)],
            "04 03 0807060504030201 01000000 38000000
             01 1817161514131211 01 2827262524232221 02
             abababababababababababababababababababababababababababababababab 0300 6f7073",
        );
        assert_golden(
            &[control(5, revoke)],
            "04 03 0500000000000000 01000000 12000000
             02 0700000000000000 02 3837363534333231",
        );
    }

    #[test]
    fn a_group_entry_has_its_golden_bytes() {
        let accounts = Batch {
            timestamp: Timestamp(3),
            operation: Operation::CreateAccounts(vec![NewAccount {
                id: AccountId(1),
                ..NewAccount::default()
            }]),
        };
        let empty_transfer = transfers(4, &[]);
        assert_golden(
            &[accounts, empty_transfer],
            "02 02000000
             4a000000 04 01 0300000000000000 01000000
                      01000000000000000000000000000000 00000000000000000000000000000000
                      0000000000000000 00000000 00000000 0000 0000 0000000000000000
             0e000000 04 02 0400000000000000 00000000",
        );
    }

    fn transfers(timestamp: u64, ids: &[u128]) -> Batch {
        Batch {
            timestamp: Timestamp(timestamp),
            operation: Operation::CreateTransfers(
                ids.iter()
                    .map(|&id| NewTransfer {
                        id: TransferId(id),
                        amount: id,
                        ..NewTransfer::default()
                    })
                    .collect(),
            ),
        }
    }

    #[test]
    fn a_single_batch_entry_is_the_batch_itself_and_still_decodes() {
        let batch = transfers(5, &[1, 2]);
        let mut single = Vec::new();
        encode(&batch, &mut single);
        let mut entry = Vec::new();
        encode_entry(std::slice::from_ref(&batch), &mut entry);
        assert_eq!(
            entry, single,
            "entries written before groups keep their form"
        );
        assert_eq!(decode_entry(&single), Ok(vec![batch]));
    }

    #[test]
    fn a_group_round_trips_in_order() {
        let batches = vec![
            transfers(10, &[1]),
            Batch {
                timestamp: Timestamp(11),
                operation: Operation::CreateAccounts(vec![NewAccount::default(); 2]),
            },
            transfers(14, &[2, 3, 4]),
        ];
        let mut entry = Vec::new();
        encode_entry(&batches, &mut entry);
        assert_eq!(entry[0], GROUP_MARKER);
        assert_eq!(
            entry.len(),
            group_len(batches.iter().map(|b| encoded_len(&b.operation)))
        );
        assert_eq!(decode_entry(&entry), Ok(batches));
        assert!(decode_entry(&entry[..entry.len() - 1]).is_err());
        let mut longer = entry.clone();
        longer.push(0);
        assert!(decode_entry(&longer).is_err());
        assert!(decode_entry(&[GROUP_MARKER, 0, 0, 0, 0]).is_err());
    }
}
