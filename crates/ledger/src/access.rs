//! Who may use the ledger: API tokens with roles, and the audit trail of every change to them
//! and to the cluster's membership. Both are part of the replicated state, so every node agrees
//! on which tokens exist and a backup holds the trail; a token is stored only as the SHA-256 of
//! its secret (the API hashes what a client presents and compares in constant time).
//!
//! Like the rest of this crate it is pure: [`apply_control`] turns a [`Control`] command into
//! the [`AccessChange`]s and the [`AuditRecord`] of one event, from the state alone.

use crate::store::LedgerStore;
use crate::types::Timestamp;

/// A token's public id (its secret is never stored). Random, chosen by the node that creates it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TokenId(pub u64);

impl std::fmt::Display for TokenId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// What a token may do; each role includes the ones below it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// Reads: accounts, transfers, history, status, metrics.
    Read = 1,
    /// Reads, and creating accounts and transfers.
    Write = 2,
    /// Everything: membership, tokens, the audit trail.
    Admin = 3,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Read, Role::Write, Role::Admin];

    pub fn name(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::Write => "write",
            Role::Admin => "admin",
        }
    }

    pub fn from_name(name: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.name() == name)
    }

    /// Whether a token of this role may do what `required` allows.
    pub fn allows(self, required: Role) -> bool {
        self >= required
    }

    fn from_u8(v: u8) -> Option<Role> {
        Role::ALL.into_iter().find(|r| *r as u8 == v)
    }
}

/// Who asked for a change: an operator's token, or a node acting on its own (the first start's
/// admin token).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Actor {
    Token(TokenId),
    Node(u64),
}

impl std::fmt::Display for Actor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Actor::Token(id) => write!(f, "token {id}"),
            Actor::Node(id) => write!(f, "node {id}"),
        }
    }
}

/// A token as the state holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenRecord {
    pub id: TokenId,
    pub name: String,
    pub role: Role,
    /// SHA-256 of the token's secret.
    pub secret_hash: [u8; 32],
    pub created_at: Timestamp,
    pub created_by: Actor,
}

/// A change to the tokens, one event in the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ControlCommand {
    CreateToken {
        id: TokenId,
        name: String,
        role: Role,
        secret_hash: [u8; 32],
    },
    RevokeToken {
        id: TokenId,
    },
    /// The admin token a new cluster is born with. Takes effect once in a cluster's life: a
    /// restarted node that proposes it again changes nothing, so a revoked first token stays
    /// revoked.
    BootstrapAdmin {
        id: TokenId,
        secret_hash: [u8; 32],
    },
    /// A backup was stored (`details`: which, of what, where), for the audit trail; changes
    /// nothing else.
    RecordBackup {
        details: String,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Control {
    pub actor: Actor,
    pub command: ControlCommand,
}

/// The answer to a [`Control`] command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ControlResult {
    Ok,
    /// A token with this id exists already.
    Exists,
    /// No token with this id.
    NotFound,
    /// `bulwark_limits::MAX_TOKENS` tokens exist.
    TooManyTokens,
    /// The cluster's first admin token was created before.
    AlreadyBootstrapped,
}

impl ControlResult {
    pub fn name(self) -> &'static str {
        match self {
            ControlResult::Ok => "ok",
            ControlResult::Exists => "exists",
            ControlResult::NotFound => "token_not_found",
            ControlResult::TooManyTokens => "too_many_tokens",
            ControlResult::AlreadyBootstrapped => "already_bootstrapped",
        }
    }
}

/// What a store must persist of one control event, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AccessChange {
    Put(TokenRecord),
    Remove(TokenId),
    /// The first admin token was created; never undone.
    Bootstrapped,
}

/// What happened, in the audit trail.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuditEvent {
    TokenCreated {
        id: TokenId,
        name: String,
        role: Role,
    },
    TokenRevoked {
        id: TokenId,
    },
    AdminBootstrapped {
        id: TokenId,
    },
    /// A membership change as applied, in words (`details`).
    Membership {
        details: String,
    },
    /// A backup was taken (`details` in words).
    Backup {
        details: String,
    },
    /// This state was restored from a backup and the archive (written by the restore itself,
    /// the first record of the new cluster).
    Restored {
        details: String,
    },
    /// An operator's action on the dead-letter queue (`details` in words: which payment, what,
    /// and the outcome).
    DeadLetter {
        details: String,
    },
}

/// One line of the replicated audit trail. Keyed by `(timestamp, index)`: a control event has a
/// timestamp of its own; a membership change takes the last event's, at an index of its own.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditRecord {
    pub timestamp: Timestamp,
    pub index: u64,
    pub actor: Option<Actor>,
    pub event: AuditEvent,
    pub result: ControlResult,
}

/// Applies one control command at `timestamp` and log `index`; the changes are empty unless
/// the result is `Ok`. The audit record is there either way (a refused attempt is news), except
/// for a first admin token proposed again: every restart of a bootstrapping node does that.
pub fn apply_control<S: LedgerStore + ?Sized>(
    store: &S,
    control: &Control,
    timestamp: Timestamp,
    index: u64,
) -> (ControlResult, Vec<AccessChange>, Option<AuditRecord>) {
    let (result, changes, event) = match &control.command {
        ControlCommand::CreateToken {
            id,
            name,
            role,
            secret_hash,
        } => {
            let event = AuditEvent::TokenCreated {
                id: *id,
                name: name.clone(),
                role: *role,
            };
            let record = TokenRecord {
                id: *id,
                name: name.clone(),
                role: *role,
                secret_hash: *secret_hash,
                created_at: timestamp,
                created_by: control.actor,
            };
            let (result, changes) = create(store, record);
            (result, changes, event)
        }
        ControlCommand::RevokeToken { id } => {
            let event = AuditEvent::TokenRevoked { id: *id };
            if store.token(*id).is_some() {
                (ControlResult::Ok, vec![AccessChange::Remove(*id)], event)
            } else {
                (ControlResult::NotFound, vec![], event)
            }
        }
        ControlCommand::BootstrapAdmin { id, secret_hash } => {
            let event = AuditEvent::AdminBootstrapped { id: *id };
            if store.admin_bootstrapped() {
                (ControlResult::AlreadyBootstrapped, vec![], event)
            } else {
                let record = TokenRecord {
                    id: *id,
                    name: "admin".to_string(),
                    role: Role::Admin,
                    secret_hash: *secret_hash,
                    created_at: timestamp,
                    created_by: control.actor,
                };
                let (result, mut changes) = create(store, record);
                if result == ControlResult::Ok {
                    changes.push(AccessChange::Bootstrapped);
                }
                (result, changes, event)
            }
        }
        ControlCommand::RecordBackup { details } => (
            ControlResult::Ok,
            vec![],
            AuditEvent::Backup {
                details: details.clone(),
            },
        ),
    };
    let audit = (result != ControlResult::AlreadyBootstrapped).then_some(AuditRecord {
        timestamp,
        index,
        actor: Some(control.actor),
        event,
        result,
    });
    (result, changes, audit)
}

fn create<S: LedgerStore + ?Sized>(
    store: &S,
    record: TokenRecord,
) -> (ControlResult, Vec<AccessChange>) {
    if store.token(record.id).is_some() {
        (ControlResult::Exists, vec![])
    } else if store.token_count() >= bulwark_limits::MAX_TOKENS {
        (ControlResult::TooManyTokens, vec![])
    } else {
        (ControlResult::Ok, vec![AccessChange::Put(record)])
    }
}

/// Whether a token name is acceptable: 1 to `MAX_TOKEN_NAME` characters of `[A-Za-z0-9._-]`.
pub fn valid_token_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= bulwark_limits::MAX_TOKEN_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Binary forms of the records, for the log and the state store. Fixed-width little-endian
/// fields and a length-prefixed name; decoding refuses anything that does not parse.
pub mod encoding {
    use super::*;

    #[derive(Debug, thiserror::Error, PartialEq, Eq)]
    #[error("access record encoding: {0}")]
    pub struct DecodeError(pub &'static str);

    /// Reads a record's fields in order, refusing one that ends early (shared with the outbox's
    /// records, `crate::outbox`).
    pub(crate) struct Reader<'a>(pub(crate) &'a [u8]);

    impl<'a> Reader<'a> {
        pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
            if self.0.len() < n {
                return Err(DecodeError("ends early"));
            }
            let (head, rest) = self.0.split_at(n);
            self.0 = rest;
            Ok(head)
        }
        pub(crate) fn u8(&mut self) -> Result<u8, DecodeError> {
            Ok(self.take(1)?[0])
        }
        pub(crate) fn u64(&mut self) -> Result<u64, DecodeError> {
            Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("8")))
        }
        pub(crate) fn u32(&mut self) -> Result<u32, DecodeError> {
            Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4")))
        }
        pub(crate) fn u128(&mut self) -> Result<u128, DecodeError> {
            Ok(u128::from_le_bytes(self.take(16)?.try_into().expect("16")))
        }
        fn hash(&mut self) -> Result<[u8; 32], DecodeError> {
            Ok(self.take(32)?.try_into().expect("32"))
        }
        pub(crate) fn text(&mut self) -> Result<String, DecodeError> {
            let len = u16::from_le_bytes(self.take(2)?.try_into().expect("2")) as usize;
            String::from_utf8(self.take(len)?.to_vec()).map_err(|_| DecodeError("text not UTF-8"))
        }
        fn role(&mut self) -> Result<Role, DecodeError> {
            Role::from_u8(self.u8()?).ok_or(DecodeError("unknown role"))
        }
        pub(crate) fn actor(&mut self) -> Result<Actor, DecodeError> {
            match self.u8()? {
                1 => Ok(Actor::Token(TokenId(self.u64()?))),
                2 => Ok(Actor::Node(self.u64()?)),
                _ => Err(DecodeError("unknown actor")),
            }
        }
        pub(crate) fn done(&self) -> Result<(), DecodeError> {
            if self.0.is_empty() {
                Ok(())
            } else {
                Err(DecodeError("bytes after the record"))
            }
        }
    }

    pub(crate) fn put_text(out: &mut Vec<u8>, text: &str) {
        let len = u16::try_from(text.len()).expect("a record's text fits u16");
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(text.as_bytes());
    }

    pub(crate) fn put_actor(out: &mut Vec<u8>, actor: Actor) {
        let (kind, id) = match actor {
            Actor::Token(t) => (1, t.0),
            Actor::Node(n) => (2, n),
        };
        out.push(kind);
        out.extend_from_slice(&id.to_le_bytes());
    }

    pub fn encode_control(control: &Control, out: &mut Vec<u8>) {
        put_actor(out, control.actor);
        match &control.command {
            ControlCommand::CreateToken {
                id,
                name,
                role,
                secret_hash,
            } => {
                out.push(1);
                out.extend_from_slice(&id.0.to_le_bytes());
                out.push(*role as u8);
                out.extend_from_slice(secret_hash);
                put_text(out, name);
            }
            ControlCommand::RevokeToken { id } => {
                out.push(2);
                out.extend_from_slice(&id.0.to_le_bytes());
            }
            ControlCommand::BootstrapAdmin { id, secret_hash } => {
                out.push(3);
                out.extend_from_slice(&id.0.to_le_bytes());
                out.extend_from_slice(secret_hash);
            }
            ControlCommand::RecordBackup { details } => {
                out.push(4);
                put_text(out, details);
            }
        }
    }

    pub fn decode_control(bytes: &[u8]) -> Result<Control, DecodeError> {
        let mut r = Reader(bytes);
        let actor = r.actor()?;
        let command = match r.u8()? {
            1 => {
                let id = TokenId(r.u64()?);
                let role = r.role()?;
                let secret_hash = r.hash()?;
                let name = r.text()?;
                if !valid_token_name(&name) {
                    return Err(DecodeError("invalid token name"));
                }
                ControlCommand::CreateToken {
                    id,
                    name,
                    role,
                    secret_hash,
                }
            }
            2 => ControlCommand::RevokeToken {
                id: TokenId(r.u64()?),
            },
            3 => ControlCommand::BootstrapAdmin {
                id: TokenId(r.u64()?),
                secret_hash: r.hash()?,
            },
            4 => ControlCommand::RecordBackup { details: r.text()? },
            _ => return Err(DecodeError("unknown command")),
        };
        r.done()?;
        Ok(Control { actor, command })
    }

    pub fn encode_token(t: &TokenRecord) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 + t.name.len());
        out.extend_from_slice(&t.id.0.to_le_bytes());
        out.push(t.role as u8);
        out.extend_from_slice(&t.secret_hash);
        out.extend_from_slice(&t.created_at.0.to_le_bytes());
        put_actor(&mut out, t.created_by);
        put_text(&mut out, &t.name);
        out
    }

    pub fn decode_token(bytes: &[u8]) -> Result<TokenRecord, DecodeError> {
        let mut r = Reader(bytes);
        let record = TokenRecord {
            id: TokenId(r.u64()?),
            role: r.role()?,
            secret_hash: r.hash()?,
            created_at: Timestamp(r.u64()?),
            created_by: r.actor()?,
            name: r.text()?,
        };
        r.done()?;
        Ok(record)
    }

    fn result_code(result: ControlResult) -> u8 {
        match result {
            ControlResult::Ok => 0,
            ControlResult::Exists => 1,
            ControlResult::NotFound => 2,
            ControlResult::TooManyTokens => 3,
            ControlResult::AlreadyBootstrapped => 4,
        }
    }

    fn result_of(code: u8) -> Result<ControlResult, DecodeError> {
        Ok(match code {
            0 => ControlResult::Ok,
            1 => ControlResult::Exists,
            2 => ControlResult::NotFound,
            3 => ControlResult::TooManyTokens,
            4 => ControlResult::AlreadyBootstrapped,
            _ => return Err(DecodeError("unknown result")),
        })
    }

    /// An audit record without its key (`timestamp`, `index`), which the store keeps apart.
    pub fn encode_audit(a: &AuditRecord) -> Vec<u8> {
        let mut out = Vec::with_capacity(48);
        match a.actor {
            Some(actor) => put_actor(&mut out, actor),
            None => out.push(0),
        }
        out.push(result_code(a.result));
        match &a.event {
            AuditEvent::TokenCreated { id, name, role } => {
                out.push(1);
                out.extend_from_slice(&id.0.to_le_bytes());
                out.push(*role as u8);
                put_text(&mut out, name);
            }
            AuditEvent::TokenRevoked { id } => {
                out.push(2);
                out.extend_from_slice(&id.0.to_le_bytes());
            }
            AuditEvent::AdminBootstrapped { id } => {
                out.push(3);
                out.extend_from_slice(&id.0.to_le_bytes());
            }
            AuditEvent::Membership { details } => {
                out.push(4);
                put_text(&mut out, details);
            }
            AuditEvent::Backup { details } => {
                out.push(5);
                put_text(&mut out, details);
            }
            AuditEvent::DeadLetter { details } => {
                out.push(7);
                put_text(&mut out, details);
            }
            AuditEvent::Restored { details } => {
                out.push(6);
                put_text(&mut out, details);
            }
        }
        out
    }

    pub fn decode_audit(
        timestamp: Timestamp,
        index: u64,
        bytes: &[u8],
    ) -> Result<AuditRecord, DecodeError> {
        let mut r = Reader(bytes);
        let actor = if r.0.first() == Some(&0) {
            r.u8()?;
            None
        } else {
            Some(r.actor()?)
        };
        let result = result_of(r.u8()?)?;
        let event = match r.u8()? {
            1 => AuditEvent::TokenCreated {
                id: TokenId(r.u64()?),
                role: r.role()?,
                name: r.text()?,
            },
            2 => AuditEvent::TokenRevoked {
                id: TokenId(r.u64()?),
            },
            3 => AuditEvent::AdminBootstrapped {
                id: TokenId(r.u64()?),
            },
            4 => AuditEvent::Membership { details: r.text()? },
            5 => AuditEvent::Backup { details: r.text()? },
            6 => AuditEvent::Restored { details: r.text()? },
            7 => AuditEvent::DeadLetter { details: r.text()? },
            _ => return Err(DecodeError("unknown audit event")),
        };
        r.done()?;
        Ok(AuditRecord {
            timestamp,
            index,
            actor,
            event,
            result,
        })
    }
}

#[cfg(test)]
mod tests;
