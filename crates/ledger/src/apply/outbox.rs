//! The rules of one outbox event (`crate::outbox`): the saga's settlement of a payment, and an
//! operator's retry or discard of a dead one.

use super::transfer::{create_for_outbox, Origin};
use super::Overlay;
use crate::access::{Actor, AuditEvent, AuditRecord, ControlResult};
use crate::outbox::{
    bounded_text, DeadKind, DeadReason, OutboxCommand, OutboxMessage, OutboxResult, OutboxState,
    Settlement,
};
use crate::store::LedgerStore;
use crate::types::{NewTransfer, PendingStatus, Timestamp, TransferFlags, TransferId, AMOUNT_MAX};
use crate::CreateTransferResult;

pub(super) fn apply_command<S: LedgerStore>(
    overlay: &mut Overlay<'_, S>,
    command: &OutboxCommand,
    timestamp: Timestamp,
    index: u64,
) -> OutboxResult {
    match command {
        OutboxCommand::Settle {
            payment,
            pending,
            round,
            transfer,
            outcome,
            ..
        } => settle(
            overlay,
            (*payment, *pending, *round),
            *transfer,
            outcome,
            timestamp,
        ),
        OutboxCommand::Retry {
            payment,
            pending,
            actor,
        } => {
            let result = retry(overlay, *payment, *pending, timestamp);
            let details = format!(
                "retry of payment {payment} as pending transfer {pending}: {}",
                result.name()
            );
            audit(overlay, *actor, details, result, (timestamp, index));
            result
        }
        OutboxCommand::Discard { payment, actor } => {
            let result = discard(overlay, *payment);
            let details = format!("discard of payment {payment}: {}", result.name());
            audit(overlay, *actor, details, result, (timestamp, index));
            result
        }
    }
}

/// The processor answered for `payment`'s pending transfer `pending`: post it, or void it and
/// move the message to the dead-letter queue. A settlement of a message no longer waiting on
/// `pending` changes nothing (the relay that proposed it was late or deposed).
fn settle<S: LedgerStore>(
    overlay: &mut Overlay<'_, S>,
    (payment, pending, round): (TransferId, TransferId, u32),
    transfer: TransferId,
    outcome: &Settlement,
    timestamp: Timestamp,
) -> OutboxResult {
    let Some(message) = overlay.outbox_message(payment) else {
        return OutboxResult::NotFound;
    };
    // A `post_failed` payment goes back on the same reservation: the round tells its settlement
    // from one of an earlier delivery.
    if !message.is_outbound() || message.pending != pending || message.retries != round {
        return OutboxResult::NotOutbound;
    }
    // The relay picks the settling transfer's id at random; one already taken is refused
    // before anything else, and the relay settles again under another.
    if overlay.transfer(transfer).is_some() {
        return OutboxResult::Transfer(CreateTransferResult::Exists);
    }
    let (flags, amount) = match outcome {
        Settlement::Confirmed { .. } => (TransferFlags::POST_PENDING_TRANSFER, AMOUNT_MAX),
        Settlement::Refused { .. } | Settlement::Exhausted { .. } => {
            (TransferFlags::VOID_PENDING_TRANSFER, 0)
        }
    };
    let resolve = NewTransfer {
        id: transfer,
        pending_id: pending,
        amount,
        flags,
        ..NewTransfer::default()
    };
    let result = create_for_outbox(overlay, &resolve, timestamp, Origin::Saga);
    // Only a closed account makes a confirmed payment's post fail for good; a refusal of the
    // settling id itself (zero, or reserved as failed) changes nothing, like a taken one.
    let closed = matches!(
        result,
        CreateTransferResult::DebitAccountAlreadyClosed
            | CreateTransferResult::CreditAccountAlreadyClosed
    );
    let (kind, detail) = match (outcome, result.is_ok()) {
        (Settlement::Confirmed { .. }, true) => {
            overlay.remove_outbox(payment);
            return OutboxResult::Ok;
        }
        (Settlement::Confirmed { reference }, false) if closed => (
            DeadKind::PostFailed,
            format!("confirmed by the processor ({reference}), but the post was refused: {result}"),
        ),
        (_, false) => return OutboxResult::Transfer(result),
        (Settlement::Refused { reason }, true) => (DeadKind::Refused, reason.clone()),
        (
            Settlement::Exhausted {
                attempts,
                last_error,
            },
            true,
        ) => (
            DeadKind::Exhausted,
            format!("{attempts} deliveries without an answer; the last: {last_error}"),
        ),
    };
    let reason = DeadReason {
        kind,
        detail: bounded_text(&detail),
    };
    overlay.put_outbox(OutboxMessage {
        state: OutboxState::Dead {
            at: timestamp,
            reason,
        },
        ..message
    });
    if result.is_ok() {
        OutboxResult::Ok
    } else {
        OutboxResult::Transfer(result)
    }
}

/// Sends a dead payment back to the relay: reserves its amount again under `pending` (the rules
/// of any pending transfer apply, so the money must still be there) and queues it anew.
fn retry<S: LedgerStore>(
    overlay: &mut Overlay<'_, S>,
    payment: TransferId,
    pending: TransferId,
    timestamp: Timestamp,
) -> OutboxResult {
    let Some(message) = overlay.outbox_message(payment) else {
        return OutboxResult::NotFound;
    };
    if message.is_outbound() {
        return OutboxResult::NotDead;
    }
    if overlay.pending_status(message.pending) == Some(PendingStatus::Pending) {
        // A confirmed payment whose post a closed account refused: its money is still
        // reserved, so it goes back on the same reservation (the processor answers the same key
        // with its stored confirmation, and the post is tried again).
        if !is_post_failed(&message) {
            return OutboxResult::StillReserved;
        }
        overlay.put_outbox(OutboxMessage {
            queued_at: timestamp,
            retries: message.retries + 1,
            state: OutboxState::Outbound,
            ..message
        });
        return OutboxResult::Ok;
    }
    let original = overlay
        .transfer(payment)
        .expect("a payment's transfer exists while its message does");
    let reserve = NewTransfer {
        id: pending,
        debit_account_id: original.debit_account_id,
        credit_account_id: original.credit_account_id,
        amount: original.amount,
        ledger: original.ledger,
        code: original.code,
        flags: TransferFlags::PENDING,
        user_data_128: original.user_data_128,
        user_data_64: original.user_data_64,
        user_data_32: original.user_data_32,
        ..NewTransfer::default()
    };
    let result = create_for_outbox(overlay, &reserve, timestamp, Origin::DeadLetterRetry);
    if !result.is_ok() {
        return OutboxResult::Transfer(result);
    }
    overlay.put_outbox(OutboxMessage {
        pending,
        queued_at: timestamp,
        retries: message.retries + 1,
        state: OutboxState::Outbound,
        ..message
    });
    OutboxResult::Ok
}

/// Takes a dead payment out of the queue: only once its reservation is released (a
/// `post_failed` payment's is not: it must be retried, or no one could ever release it).
fn discard<S: LedgerStore>(overlay: &mut Overlay<'_, S>, payment: TransferId) -> OutboxResult {
    match overlay.outbox_message(payment) {
        None => OutboxResult::NotFound,
        Some(m) if m.is_outbound() => OutboxResult::NotDead,
        Some(m) if overlay.pending_status(m.pending) == Some(PendingStatus::Pending) => {
            OutboxResult::StillReserved
        }
        Some(_) => {
            overlay.remove_outbox(payment);
            OutboxResult::Ok
        }
    }
}

fn is_post_failed(message: &OutboxMessage) -> bool {
    matches!(&message.state, OutboxState::Dead { reason, .. } if reason.kind == DeadKind::PostFailed)
}

fn audit<S: LedgerStore>(
    overlay: &mut Overlay<'_, S>,
    actor: Actor,
    details: String,
    result: OutboxResult,
    (timestamp, index): (Timestamp, u64),
) {
    overlay.audit.push(AuditRecord {
        timestamp,
        index,
        actor: Some(actor),
        event: AuditEvent::DeadLetter { details },
        result: if result.is_ok() {
            ControlResult::Ok
        } else {
            ControlResult::NotFound
        },
    });
}
