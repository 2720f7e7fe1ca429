use super::encoding::*;
use super::*;
use crate::{apply_at, Batch, BatchResults, MemoryStore, Operation};

fn control(actor: Actor, command: ControlCommand) -> Batch {
    Batch {
        timestamp: Timestamp(0),
        operation: Operation::Control(Box::new(Control { actor, command })),
    }
}

fn create(id: u64, name: &str, role: Role) -> Batch {
    control(
        Actor::Token(TokenId(1)),
        ControlCommand::CreateToken {
            id: TokenId(id),
            name: name.to_string(),
            role,
            secret_hash: [id as u8; 32],
        },
    )
}

fn result(store: &mut MemoryStore, batch: &Batch, index: u64) -> ControlResult {
    match apply_at(store, batch, index) {
        BatchResults::Control(r) => r,
        other => panic!("a control batch answered {other:?}"),
    }
}

#[test]
fn roles_include_the_ones_below() {
    assert!(Role::Admin.allows(Role::Write) && Role::Admin.allows(Role::Read));
    assert!(Role::Write.allows(Role::Read) && !Role::Write.allows(Role::Admin));
    assert!(!Role::Read.allows(Role::Write));
    for role in Role::ALL {
        assert_eq!(Role::from_name(role.name()), Some(role));
    }
    assert_eq!(Role::from_name("root"), None);
}

#[test]
fn tokens_are_created_once_revoked_and_audited_with_their_own_timestamps() {
    let mut store = MemoryStore::default();
    assert_eq!(
        result(&mut store, &create(7, "ci", Role::Write), 3),
        ControlResult::Ok
    );
    assert_eq!(store.tokens[&TokenId(7)].role, Role::Write);
    assert_eq!(store.tokens[&TokenId(7)].secret_hash, [7; 32]);
    // The same id again, even with other fields, does not replace the token.
    assert_eq!(
        result(&mut store, &create(7, "other", Role::Admin), 4),
        ControlResult::Exists
    );
    assert_eq!(store.tokens[&TokenId(7)].name, "ci");
    let revoke = control(
        Actor::Node(1),
        ControlCommand::RevokeToken { id: TokenId(7) },
    );
    assert_eq!(result(&mut store, &revoke, 5), ControlResult::Ok);
    assert!(store.tokens.is_empty());
    assert_eq!(result(&mut store, &revoke, 6), ControlResult::NotFound);
    let results: Vec<_> = store.audit.iter().map(|a| (a.index, a.result)).collect();
    assert_eq!(
        results,
        [
            (3, ControlResult::Ok),
            (4, ControlResult::Exists),
            (5, ControlResult::Ok),
            (6, ControlResult::NotFound)
        ]
    );
    let stamps: Vec<_> = store.audit.iter().map(|a| a.timestamp).collect();
    assert!(stamps.windows(2).all(|w| w[0] < w[1]), "{stamps:?}");
}

#[test]
fn the_first_admin_token_is_made_once_in_a_clusters_life() {
    let mut store = MemoryStore::default();
    let bootstrap = |id| {
        control(
            Actor::Node(1),
            ControlCommand::BootstrapAdmin {
                id: TokenId(id),
                secret_hash: [9; 32],
            },
        )
    };
    assert_eq!(result(&mut store, &bootstrap(5), 1), ControlResult::Ok);
    assert_eq!(store.tokens[&TokenId(5)].role, Role::Admin);
    let revoke = control(
        Actor::Node(1),
        ControlCommand::RevokeToken { id: TokenId(5) },
    );
    assert_eq!(result(&mut store, &revoke, 2), ControlResult::Ok);
    // A node restarted with the old token file proposes it again: nothing comes back.
    assert_eq!(
        result(&mut store, &bootstrap(5), 3),
        ControlResult::AlreadyBootstrapped
    );
    assert!(store.tokens.is_empty());
    let events: Vec<_> = store.audit.iter().map(|a| a.index).collect();
    assert_eq!(events, [1, 2], "a repeated bootstrap is not news");
}

#[test]
fn no_more_than_the_bound_of_tokens() {
    let mut store = MemoryStore::default();
    for id in 0..bulwark_limits::MAX_TOKENS as u64 {
        assert_eq!(
            result(&mut store, &create(id, "t", Role::Read), id + 1),
            ControlResult::Ok
        );
    }
    let past = create(u64::MAX, "t", Role::Read);
    assert_eq!(
        result(&mut store, &past, 99_999),
        ControlResult::TooManyTokens
    );
}

#[test]
fn records_round_trip_and_damaged_ones_are_refused() {
    let commands = [
        create(3, "svc.payments-1", Role::Admin),
        control(
            Actor::Node(2),
            ControlCommand::RevokeToken {
                id: TokenId(u64::MAX),
            },
        ),
        control(
            Actor::Token(TokenId(4)),
            ControlCommand::BootstrapAdmin {
                id: TokenId(8),
                secret_hash: [1; 32],
            },
        ),
    ];
    for batch in &commands {
        let mut bytes = Vec::new();
        crate::codec::encode(batch, &mut bytes);
        assert_eq!(bytes.len(), crate::codec::encoded_len(&batch.operation));
        assert_eq!(&crate::codec::decode(&bytes).expect("decodes"), batch);
        for cut in 0..bytes.len() {
            assert!(crate::codec::decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
    }
    let mut store = MemoryStore::default();
    for (i, batch) in commands.iter().enumerate() {
        apply_at(&mut store, batch, i as u64 + 1);
    }
    for token in store.tokens.values() {
        assert_eq!(&decode_token(&encode_token(token)).expect("decodes"), token);
    }
    for a in &store.audit {
        let bytes = encode_audit(a);
        assert_eq!(
            &decode_audit(a.timestamp, a.index, &bytes).expect("decodes"),
            a
        );
        assert!(decode_audit(a.timestamp, a.index, &bytes[..bytes.len() - 1]).is_err());
    }
    let membership = AuditRecord {
        timestamp: Timestamp(5),
        index: 9,
        actor: None,
        event: AuditEvent::Membership {
            details: "added node 4".into(),
        },
        result: ControlResult::Ok,
    };
    let bytes = encode_audit(&membership);
    assert_eq!(
        decode_audit(Timestamp(5), 9, &bytes).expect("decodes"),
        membership
    );
}

#[test]
fn names_are_short_and_plain() {
    assert!(valid_token_name("ci-runner_2.prod"));
    for bad in [
        "",
        "a b",
        "ä",
        "x/y",
        &"n".repeat(bulwark_limits::MAX_TOKEN_NAME + 1),
    ] {
        assert!(!valid_token_name(bad), "{bad:?}");
    }
}
