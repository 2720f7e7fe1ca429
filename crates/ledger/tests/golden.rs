//! The records of tokens and of the audit trail, as the state store keeps them (tables `tokens`
//! and `audit` of `state.redb`, and of every snapshot), pinned to exact bytes: a failure here
//! is a change of the on-disk format, which must be deliberate (stores written before hold these
//! bytes). The batch codec's golden bytes are `codec.rs`'s own tests.

use bulwark_ledger::access::encoding::{decode_audit, decode_token, encode_audit, encode_token};
use bulwark_ledger::access::{
    Actor, AuditEvent, AuditRecord, ControlResult, Role, TokenId, TokenRecord,
};
use bulwark_ledger::Timestamp;

/// Hex of `bytes`, two digits a byte, and `golden` without its whitespace (which only lays the
/// fields out for the reader).
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

#[test]
fn a_token_record_has_its_golden_bytes() {
    let token = TokenRecord {
        id: TokenId(0x1112_1314_1516_1718),
        name: "pay".into(),
        role: Role::Admin,
        secret_hash: [0xcd; 32],
        created_at: Timestamp(0x2122_2324_2526_2728),
        created_by: Actor::Node(0x3132_3334_3536_3738),
    };
    let golden = "1817161514131211 03
                  cdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcd
                  2827262524232221 02 3837363534333231 0300 706179";
    let (bytes, expected) = hex_pair(&encode_token(&token), golden);
    assert_eq!(bytes, expected, "the token record changed");
    assert_eq!(decode_token(&unhex(golden)), Ok(token));
}

#[test]
fn audit_records_have_their_golden_bytes() {
    let record = |actor, event, result| AuditRecord {
        timestamp: Timestamp(5),
        index: 6,
        actor,
        event,
        result,
    };
    let cases = [
        (
            record(
                Some(Actor::Token(TokenId(0x1112_1314_1516_1718))),
                AuditEvent::TokenCreated {
                    id: TokenId(0x2122_2324_2526_2728),
                    name: "ci".into(),
                    role: Role::Read,
                },
                ControlResult::Ok,
            ),
            "01 1817161514131211 00 01 2827262524232221 01 0200 6369",
        ),
        (
            record(
                Some(Actor::Node(3)),
                AuditEvent::TokenRevoked {
                    id: TokenId(0x3132_3334_3536_3738),
                },
                ControlResult::NotFound,
            ),
            "02 0300000000000000 02 02 3837363534333231",
        ),
        (
            record(
                None,
                AuditEvent::AdminBootstrapped { id: TokenId(9) },
                ControlResult::AlreadyBootstrapped,
            ),
            "00 04 03 0900000000000000",
        ),
        (
            record(
                None,
                AuditEvent::Membership {
                    details: "add 4".into(),
                },
                ControlResult::TooManyTokens,
            ),
            "00 03 04 0500 6164642034",
        ),
    ];
    for (record, golden) in cases {
        let (bytes, expected) = hex_pair(&encode_audit(&record), golden);
        assert_eq!(bytes, expected, "the audit record {record:?} changed");
        assert_eq!(decode_audit(Timestamp(5), 6, &unhex(golden)), Ok(record));
    }
}
