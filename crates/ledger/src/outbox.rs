//! The outbox: payments to `external` accounts (a processor, another bank), and the saga that
//! settles each. A transfer whose credit account is external is accepted as a pending transfer
//! and, in the same batch, an [`OutboxMessage`] (`apply/transfer.rs` makes both or neither).
//! The leader's relay delivers the message and proposes a [`OutboxCommand::Settle`] with the
//! processor's answer: a confirmation posts the pending transfer and ends the message; a
//! definite refusal, or retries exhausted, voids it (the compensation) and leaves the message
//! dead — the dead-letter queue, which only an operator empties ([`OutboxCommand::Retry`],
//! [`OutboxCommand::Discard`], each in the audit trail).
//!
//! A message is keyed by its payment: the id of the transfer that created it, which is also the
//! idempotency key the processor sees on every delivery. An operator's retry reserves the money
//! again under a new pending transfer, but keeps the payment and so the key: a processor that
//! did make the payment answers with its stored confirmation, and the payment is made once.

use crate::access::encoding::{put_actor, put_text, DecodeError, Reader};
use crate::access::Actor;
use crate::types::{AccountId, Timestamp, TransferId};

/// Where a message stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OutboxState {
    /// Waiting to be delivered (or being delivered) by the leader's relay.
    Outbound,
    /// In the dead-letter queue since `at`: its pending transfer was voided (unless
    /// `reason.kind` is [`DeadKind::PostFailed`]).
    Dead { at: Timestamp, reason: DeadReason },
}

/// Why a message is dead.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeadKind {
    /// The processor refused the payment (a definite answer).
    Refused,
    /// The relay gave up after its retry limit without a definite answer.
    Exhausted,
    /// The processor confirmed the payment, but posting the pending transfer failed (an account
    /// was closed meanwhile): the money is still reserved; an operator's retry, once the account
    /// reopens, posts it.
    PostFailed,
}

impl DeadKind {
    pub fn name(self) -> &'static str {
        match self {
            DeadKind::Refused => "refused",
            DeadKind::Exhausted => "exhausted",
            DeadKind::PostFailed => "post_failed",
        }
    }

    fn code(self) -> u8 {
        match self {
            DeadKind::Refused => 1,
            DeadKind::Exhausted => 2,
            DeadKind::PostFailed => 3,
        }
    }

    fn from_code(code: u8) -> Result<DeadKind, DecodeError> {
        Ok(match code {
            1 => DeadKind::Refused,
            2 => DeadKind::Exhausted,
            3 => DeadKind::PostFailed,
            _ => return Err(DecodeError("unknown dead-letter kind")),
        })
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeadReason {
    pub kind: DeadKind,
    /// In words: the processor's reason, or the last error.
    pub detail: String,
}

/// One payment waiting for (or given up by) its processor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutboxMessage {
    /// The transfer that created the message: the payment's id and its idempotency key.
    pub payment: TransferId,
    /// The pending transfer a confirmation posts: the payment itself, or the one an operator's
    /// retry reserved.
    pub pending: TransferId,
    /// The external account (the processor) the payment goes to.
    pub processor: AccountId,
    /// When the message was (last) queued: unique, and the relay's delivery order.
    pub queued_at: Timestamp,
    /// How many times an operator sent it back from the dead-letter queue.
    pub retries: u32,
    pub state: OutboxState,
}

impl OutboxMessage {
    pub fn is_outbound(&self) -> bool {
        self.state == OutboxState::Outbound
    }
}

/// A change to the outbox, for a store to persist in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OutboxChange {
    Put(OutboxMessage),
    Remove(TransferId),
}

/// What the processor answered, as the relay proposes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Settlement {
    /// The payment was made; `reference` is the processor's.
    Confirmed { reference: String },
    /// A definite refusal.
    Refused { reason: String },
    /// `attempts` deliveries without a definite answer; the last error.
    Exhausted { attempts: u32, last_error: String },
}

/// One outbox event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OutboxCommand {
    /// The relay of the leader of `term` settles `payment`, whose pending transfer it delivered
    /// as `pending` in the message's round `round` (its `retries` then), with a post or void of
    /// id `transfer` (chosen by the relay).
    Settle {
        payment: TransferId,
        pending: TransferId,
        round: u32,
        transfer: TransferId,
        term: u64,
        outcome: Settlement,
    },
    /// An operator sends a dead payment back to the relay, reserving its amount again under
    /// the new pending transfer `pending`.
    Retry {
        payment: TransferId,
        pending: TransferId,
        actor: Actor,
    },
    /// An operator takes a dead payment out of the queue for good.
    Discard { payment: TransferId, actor: Actor },
}

/// The answer to one [`OutboxCommand`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutboxResult {
    Ok,
    /// No message for this payment (settled and gone, discarded, or never made).
    NotFound,
    /// A settle for a message no longer waiting on that pending transfer in that round: settled
    /// before (a relay's retry, or a deposed leader's relay); nothing changed.
    NotOutbound,
    /// A retry or discard of a message that is not in the dead-letter queue.
    NotDead,
    /// A discard of a message whose pending transfer is still reserved (a `post_failed` one: it
    /// must be retried once its account reopens).
    StillReserved,
    /// The post, void or new reservation was refused, with the ledger's result.
    Transfer(crate::CreateTransferResult),
}

impl OutboxResult {
    pub fn name(self) -> &'static str {
        match self {
            OutboxResult::Ok => "ok",
            OutboxResult::NotFound => "payment_not_found",
            OutboxResult::NotOutbound => "payment_not_outbound",
            OutboxResult::NotDead => "payment_not_dead",
            OutboxResult::StillReserved => "payment_still_reserved",
            OutboxResult::Transfer(r) => r.name(),
        }
    }

    pub fn is_ok(self) -> bool {
        self == OutboxResult::Ok
    }
}

/// The binary forms of commands (in the log) and messages (in the state store).
pub mod encoding {
    use super::*;

    const SETTLE: u8 = 1;
    const RETRY: u8 = 2;
    const DISCARD: u8 = 3;
    const CONFIRMED: u8 = 1;
    const REFUSED: u8 = 2;
    const EXHAUSTED: u8 = 3;

    pub fn encode_command(command: &OutboxCommand, out: &mut Vec<u8>) {
        match command {
            OutboxCommand::Settle {
                payment,
                pending,
                round,
                transfer,
                term,
                outcome,
            } => {
                out.push(SETTLE);
                for id in [payment, pending, transfer] {
                    out.extend_from_slice(&id.0.to_le_bytes());
                }
                out.extend_from_slice(&round.to_le_bytes());
                out.extend_from_slice(&term.to_le_bytes());
                encode_settlement(outcome, out);
            }
            OutboxCommand::Retry {
                payment,
                pending,
                actor,
            } => {
                out.push(RETRY);
                out.extend_from_slice(&payment.0.to_le_bytes());
                out.extend_from_slice(&pending.0.to_le_bytes());
                put_actor(out, *actor);
            }
            OutboxCommand::Discard { payment, actor } => {
                out.push(DISCARD);
                out.extend_from_slice(&payment.0.to_le_bytes());
                put_actor(out, *actor);
            }
        }
    }

    fn encode_settlement(outcome: &Settlement, out: &mut Vec<u8>) {
        match outcome {
            Settlement::Confirmed { reference } => {
                out.push(CONFIRMED);
                put_text(out, reference);
            }
            Settlement::Refused { reason } => {
                out.push(REFUSED);
                put_text(out, reason);
            }
            Settlement::Exhausted {
                attempts,
                last_error,
            } => {
                out.push(EXHAUSTED);
                out.extend_from_slice(&attempts.to_le_bytes());
                put_text(out, last_error);
            }
        }
    }

    pub fn decode_command(bytes: &[u8]) -> Result<OutboxCommand, DecodeError> {
        let mut r = Reader(bytes);
        let id = |r: &mut Reader| r.u128().map(TransferId);
        let command = match r.u8()? {
            SETTLE => OutboxCommand::Settle {
                payment: id(&mut r)?,
                pending: id(&mut r)?,
                transfer: id(&mut r)?,
                round: r.u32()?,
                term: r.u64()?,
                outcome: match r.u8()? {
                    CONFIRMED => Settlement::Confirmed {
                        reference: r.text()?,
                    },
                    REFUSED => Settlement::Refused { reason: r.text()? },
                    EXHAUSTED => Settlement::Exhausted {
                        attempts: r.u32()?,
                        last_error: r.text()?,
                    },
                    _ => return Err(DecodeError("unknown settlement")),
                },
            },
            RETRY => OutboxCommand::Retry {
                payment: id(&mut r)?,
                pending: id(&mut r)?,
                actor: r.actor()?,
            },
            DISCARD => OutboxCommand::Discard {
                payment: id(&mut r)?,
                actor: r.actor()?,
            },
            _ => return Err(DecodeError("unknown outbox command")),
        };
        r.done()?;
        Ok(command)
    }

    /// `payment | pending | processor | queued_at | retries | state (0 outbound; 1 dead:
    /// at, kind, detail)`.
    pub fn encode_message(m: &OutboxMessage) -> Vec<u8> {
        let mut out = Vec::with_capacity(80);
        out.extend_from_slice(&m.payment.0.to_le_bytes());
        out.extend_from_slice(&m.pending.0.to_le_bytes());
        out.extend_from_slice(&m.processor.0.to_le_bytes());
        out.extend_from_slice(&m.queued_at.0.to_le_bytes());
        out.extend_from_slice(&m.retries.to_le_bytes());
        match &m.state {
            OutboxState::Outbound => out.push(0),
            OutboxState::Dead { at, reason } => {
                out.push(1);
                out.extend_from_slice(&at.0.to_le_bytes());
                out.push(reason.kind.code());
                put_text(&mut out, &reason.detail);
            }
        }
        out
    }

    pub fn decode_message(bytes: &[u8]) -> Result<OutboxMessage, DecodeError> {
        let mut r = Reader(bytes);
        let payment = TransferId(r.u128()?);
        let pending = TransferId(r.u128()?);
        let processor = AccountId(r.u128()?);
        let queued_at = Timestamp(r.u64()?);
        let retries = r.u32()?;
        let state = match r.u8()? {
            0 => OutboxState::Outbound,
            1 => OutboxState::Dead {
                at: Timestamp(r.u64()?),
                reason: DeadReason {
                    kind: DeadKind::from_code(r.u8()?)?,
                    detail: r.text()?,
                },
            },
            _ => return Err(DecodeError("unknown message state")),
        };
        r.done()?;
        Ok(OutboxMessage {
            payment,
            pending,
            processor,
            queued_at,
            retries,
            state,
        })
    }
}

/// A settlement's or an operator's text, cut to what the log and the audit trail keep.
pub fn bounded_text(text: &str) -> String {
    let max = bulwark_limits::MAX_AUDIT_TEXT;
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_string()
}
