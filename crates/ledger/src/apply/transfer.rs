//! The rules of one `create_transfers` event, in the order their results take precedence
//! (docs/api.md lists the order): the event's own fields, then an existing or failed id, then
//! the accounts and the pending transfer it names, then the amounts.

use super::overlay::reopen_closed_by;
use super::Overlay;
use crate::results::CreateTransferResult;
use crate::store::{failed_transfer_horizon, LedgerStore};
use crate::types::{
    Account, AccountFlags, AccountId, Amount, FlagSet, NewTransfer, PendingStatus, Timestamp,
    Transfer, TransferFlags, TransferId, AMOUNT_MAX, NANOS_PER_SECOND,
};

use CreateTransferResult as R;

/// Who makes a transfer: what it may do to the outbox's payments.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Origin {
    /// A client's event: a payment to an external account queues an outbox message, and the
    /// pending transfer of a payment cannot be posted or voided (only its saga does that).
    Client,
    /// The saga posting or voiding a payment's pending transfer.
    Saga,
    /// An operator's retry of a dead payment, reserving its amount again: the payment's
    /// message exists already and is reused.
    DeadLetterRetry,
}

/// Creates one transfer; a refusal for a reason of the ledger's state reserves its id.
pub(super) fn create_transfer<S: LedgerStore>(
    overlay: &mut Overlay<'_, S>,
    t: &NewTransfer,
    timestamp: Timestamp,
) -> CreateTransferResult {
    let result = check_and_create(overlay, t, timestamp, Origin::Client);
    if result.is_transient() {
        overlay.fail_transfer(t.id, timestamp);
    }
    result
}

/// The saga's post or void of a payment's pending transfer (`t` names it), or a dead payment's
/// new reservation: the rules of any transfer, but on the outbox's side of them.
pub(super) fn create_for_outbox<S: LedgerStore>(
    overlay: &mut Overlay<'_, S>,
    t: &NewTransfer,
    timestamp: Timestamp,
    origin: Origin,
) -> CreateTransferResult {
    assert!(
        origin != Origin::Client,
        "a client's transfer goes through create_transfer"
    );
    check_and_create(overlay, t, timestamp, origin)
}

fn check_and_create<S: LedgerStore>(
    overlay: &mut Overlay<'_, S>,
    t: &NewTransfer,
    timestamp: Timestamp,
    origin: Origin,
) -> CreateTransferResult {
    if t.flags.reserved_bits() != 0 {
        return R::ReservedFlag;
    }
    if t.id.is_zero() {
        return R::IdMustNotBeZero;
    }
    if t.id == TransferId::MAX {
        return R::IdMustNotBeIntMax;
    }
    // An existing id answers before any other check: a retry with changed fields learns that
    // the id is taken (or was refused) rather than what is wrong with the new fields.
    if let Some(e) = overlay.transfer(t.id) {
        return transfer_exists(overlay, t, &e);
    }
    if overlay
        .failed_transfer(t.id)
        .is_some_and(|at| at > failed_transfer_horizon(timestamp))
    {
        return R::IdAlreadyFailed;
    }
    if t.flags.contains(TransferFlags::POST_PENDING_TRANSFER)
        || t.flags.contains(TransferFlags::VOID_PENDING_TRANSFER)
    {
        return post_or_void_pending(overlay, t, timestamp, origin);
    }
    if let Some(refused) = check_fields(t) {
        return refused;
    }
    let Some(dr) = overlay.account(t.debit_account_id) else {
        return R::DebitAccountNotFound;
    };
    let Some(cr) = overlay.account(t.credit_account_id) else {
        return R::CreditAccountNotFound;
    };
    if dr.ledger != cr.ledger || t.ledger != dr.ledger {
        return R::LedgerMustMatch;
    }
    if let Some(refused) = check_imported(overlay, t, timestamp, (&dr, &cr)) {
        return refused;
    }
    // A payment leaves through its processor: the money is reserved until the processor
    // answers, for as long as that takes (a deadline would void a payment the processor made).
    // Checked before the accounts' closing: it depends on the event and a flag an account never
    // loses, so a retry must meet it again, not a (transient) closing that came since.
    let paid_out = is_payment(t, &cr);
    if paid_out && t.timeout != 0 {
        return R::ExternalTransferTimeoutMustBeZero;
    }
    // A closing payment would close the account its own post must move: it could never be
    // posted, whatever the processor answered.
    let closing = t.flags.contains(TransferFlags::CLOSING_DEBIT)
        || t.flags.contains(TransferFlags::CLOSING_CREDIT);
    if paid_out && closing {
        return R::ExternalTransferMustNotClose;
    }
    if dr.flags.contains(AccountFlags::CLOSED) {
        return R::DebitAccountAlreadyClosed;
    }
    if cr.flags.contains(AccountFlags::CLOSED) {
        return R::CreditAccountAlreadyClosed;
    }
    if !paid_out {
        return create_new(overlay, t, timestamp, dr, cr);
    }
    let payment = NewTransfer {
        flags: t.flags | TransferFlags::PENDING,
        ..*t
    };
    let result = create_new(overlay, &payment, timestamp, dr, cr);
    if result.is_ok() && origin == Origin::Client {
        overlay.put_outbox(crate::outbox::OutboxMessage {
            payment: t.id,
            pending: t.id,
            processor: cr.id,
            queued_at: timestamp,
            retries: 0,
            state: crate::outbox::OutboxState::Outbound,
        });
    }
    result
}

/// Whether `t`, a new single or pending transfer to `cr`, is a payment to an external account.
/// An imported transfer is history, not a payment to make: it is stored as given.
fn is_payment(t: &NewTransfer, cr: &Account) -> bool {
    cr.flags.contains(AccountFlags::EXTERNAL) && !t.flags.contains(TransferFlags::IMPORTED)
}

/// The rules of an imported transfer's own timestamp: after every account and transfer the
/// ledger holds (so after its own accounts: TigerBeetle's `..._must_postdate_..._account` cannot
/// arise), and no timeout (its deadline would be measured from the past).
fn check_imported<S: LedgerStore>(
    overlay: &Overlay<'_, S>,
    t: &NewTransfer,
    timestamp: Timestamp,
    (dr, cr): (&Account, &Account),
) -> Option<CreateTransferResult> {
    if !t.flags.contains(TransferFlags::IMPORTED) {
        return None;
    }
    assert!(overlay.newest() >= dr.timestamp.max(cr.timestamp));
    Some(if timestamp <= overlay.newest() {
        R::ImportedEventTimestampMustNotRegress
    } else if t.timeout != 0 {
        R::ImportedEventTimeoutMustBeZero
    } else {
        return None;
    })
}

/// The checks of a single or pending transfer that need nothing but the event.
fn check_fields(t: &NewTransfer) -> Option<CreateTransferResult> {
    let pending = t.flags.contains(TransferFlags::PENDING);
    let closing = t.flags.contains(TransferFlags::CLOSING_DEBIT)
        || t.flags.contains(TransferFlags::CLOSING_CREDIT);
    Some(if t.debit_account_id.is_zero() {
        R::DebitAccountIdMustNotBeZero
    } else if t.debit_account_id == AccountId::MAX {
        R::DebitAccountIdMustNotBeIntMax
    } else if t.credit_account_id.is_zero() {
        R::CreditAccountIdMustNotBeZero
    } else if t.credit_account_id == AccountId::MAX {
        R::CreditAccountIdMustNotBeIntMax
    } else if t.debit_account_id == t.credit_account_id {
        R::AccountsMustBeDifferent
    } else if !t.pending_id.is_zero() {
        R::PendingIdMustBeZero
    } else if !pending && t.timeout != 0 {
        R::TimeoutReservedForPendingTransfer
    } else if !pending && closing {
        R::ClosingTransferMustBePending
    } else if t.ledger == 0 {
        R::LedgerMustNotBeZero
    } else if t.code == 0 {
        R::CodeMustNotBeZero
    } else {
        return None;
    })
}

/// The amount a transfer moves: its `amount`, or for a balancing transfer at most what the
/// account can give (debit) or take (credit) within its posted balance, `amount` being the cap
/// (0 or [`AMOUNT_MAX`]: none).
fn actual_amount(t: &NewTransfer, dr: &Account, cr: &Account) -> Amount {
    let balancing_debit = t.flags.contains(TransferFlags::BALANCING_DEBIT);
    let balancing_credit = t.flags.contains(TransferFlags::BALANCING_CREDIT);
    if !balancing_debit && !balancing_credit {
        return t.amount;
    }
    let mut amount = if t.amount == 0 { AMOUNT_MAX } else { t.amount };
    if balancing_debit {
        let debits = dr.debits_posted.saturating_add(dr.debits_pending);
        amount = amount.min(dr.credits_posted.saturating_sub(debits));
    }
    if balancing_credit {
        let credits = cr.credits_posted.saturating_add(cr.credits_pending);
        amount = amount.min(cr.debits_posted.saturating_sub(credits));
    }
    amount
}

/// The overflow checks of adding `amount` to both accounts, in precedence order.
fn check_overflows(
    t: &NewTransfer,
    dr: &Account,
    cr: &Account,
    amount: Amount,
    timestamp: Timestamp,
) -> Option<CreateTransferResult> {
    let pending = t.flags.contains(TransferFlags::PENDING);
    let overflows = |a: Amount, b: Amount| a.checked_add(b).is_none();
    let dr_debits = dr.debits_pending.checked_add(dr.debits_posted);
    let cr_credits = cr.credits_pending.checked_add(cr.credits_posted);
    // `None` when the sum overflows: refused as such before the limits are looked at.
    let dr_debits_after = dr_debits.and_then(|d| d.checked_add(amount));
    let cr_credits_after = cr_credits.and_then(|c| c.checked_add(amount));
    Some(if pending && overflows(dr.debits_pending, amount) {
        R::OverflowsDebitsPending
    } else if pending && overflows(cr.credits_pending, amount) {
        R::OverflowsCreditsPending
    } else if overflows(dr.debits_posted, amount) {
        R::OverflowsDebitsPosted
    } else if overflows(cr.credits_posted, amount) {
        R::OverflowsCreditsPosted
    } else if dr_debits_after.is_none() {
        R::OverflowsDebits
    } else if cr_credits_after.is_none() {
        R::OverflowsCredits
    } else if pending
        && u64::from(t.timeout)
            .checked_mul(NANOS_PER_SECOND)
            .and_then(|t| t.checked_add(timestamp.0))
            .is_none()
    {
        R::OverflowsTimeout
    } else if dr
        .flags
        .contains(AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS)
        && dr_debits_after > Some(dr.credits_posted)
    {
        R::ExceedsCredits
    } else if cr
        .flags
        .contains(AccountFlags::CREDITS_MUST_NOT_EXCEED_DEBITS)
        && cr_credits_after > Some(cr.debits_posted)
    {
        R::ExceedsDebits
    } else {
        return None;
    })
}

/// A single or pending transfer between two open accounts of its ledger.
fn create_new<S: LedgerStore>(
    overlay: &mut Overlay<'_, S>,
    t: &NewTransfer,
    timestamp: Timestamp,
    mut dr: Account,
    mut cr: Account,
) -> CreateTransferResult {
    let amount = actual_amount(t, &dr, &cr);
    if let Some(refused) = check_overflows(t, &dr, &cr, amount, timestamp) {
        return refused;
    }
    let pending = t.flags.contains(TransferFlags::PENDING);
    if pending {
        dr.debits_pending += amount;
        cr.credits_pending += amount;
    } else {
        dr.debits_posted += amount;
        cr.credits_posted += amount;
    }
    if t.flags.contains(TransferFlags::CLOSING_DEBIT) {
        dr.flags = dr.flags | AccountFlags::CLOSED;
    }
    if t.flags.contains(TransferFlags::CLOSING_CREDIT) {
        cr.flags = cr.flags | AccountFlags::CLOSED;
    }
    let transfer = Transfer {
        id: t.id,
        debit_account_id: t.debit_account_id,
        credit_account_id: t.credit_account_id,
        amount,
        pending_id: TransferId::ZERO,
        timeout: t.timeout,
        ledger: t.ledger,
        code: t.code,
        flags: t.flags,
        user_data_128: t.user_data_128,
        user_data_64: t.user_data_64,
        user_data_32: t.user_data_32,
        timestamp,
    };
    overlay.put_transfer(transfer, dr, cr);
    if pending {
        overlay.set_pending_status(t.id, PendingStatus::Pending);
        if let Some(at) = transfer.expires_at() {
            overlay.add_expiry(at, t.id);
        }
    }
    R::Ok
}

/// A retry of `e`: `exists` if every field the client gave matches what was stored.
fn transfer_exists<S: LedgerStore>(
    overlay: &Overlay<'_, S>,
    t: &NewTransfer,
    e: &Transfer,
) -> CreateTransferResult {
    let post = t.flags.contains(TransferFlags::POST_PENDING_TRANSFER);
    let void = t.flags.contains(TransferFlags::VOID_PENDING_TRANSFER);
    let imported = t.flags.contains(TransferFlags::IMPORTED);
    // A payment was stored pending whether or not its event said so: its retry is the same one.
    let paid_out = !post
        && !void
        && overlay
            .account(e.credit_account_id)
            .is_some_and(|cr| is_payment(t, &cr));
    let flags = if paid_out {
        t.flags | TransferFlags::PENDING
    } else {
        t.flags
    };
    if flags != e.flags
        || t.pending_id != e.pending_id
        || t.timeout != e.timeout
        || (imported && t.timestamp != e.timestamp)
    {
        return R::ExistsWithDifferentFields;
    }
    let same = if post || void {
        let p = overlay
            .transfer(e.pending_id)
            .expect("a post or void names an existing pending transfer");
        post_or_void_matches(t, e, &p)
    } else {
        let balancing = t.flags.contains(TransferFlags::BALANCING_DEBIT)
            || t.flags.contains(TransferFlags::BALANCING_CREDIT);
        // A balancing transfer's amount is a cap: a retry moving at most it is the same one.
        let amount_same = if balancing {
            t.amount == 0 || t.amount >= e.amount
        } else {
            t.amount == e.amount
        };
        t.debit_account_id == e.debit_account_id
            && t.credit_account_id == e.credit_account_id
            && amount_same
            && t.ledger == e.ledger
            && t.code == e.code
            && t.user_data_128 == e.user_data_128
            && t.user_data_64 == e.user_data_64
            && t.user_data_32 == e.user_data_32
    };
    if same {
        R::Exists
    } else {
        R::ExistsWithDifferentFields
    }
}

/// A post or void may leave accounts, ledger, code and user data at zero to mean "as the
/// pending transfer", and its amount at the "full amount" value; a retry that does so still
/// matches what was stored.
fn post_or_void_matches(t: &NewTransfer, e: &Transfer, p: &Transfer) -> bool {
    let matches = |given: u128, stored: u128| given == 0 || given == stored;
    let user_data_64 = inherited_user_data_64(t, p);
    matches(t.debit_account_id.0, e.debit_account_id.0)
        && matches(t.credit_account_id.0, e.credit_account_id.0)
        && resolved_amount(t, p) == e.amount
        && matches(u128::from(t.ledger), u128::from(e.ledger))
        && matches(u128::from(t.code), u128::from(e.code))
        && user_data_64 == (e.user_data_128, e.user_data_64, e.user_data_32)
}

/// A post's or void's `user_data_128`, `_64` and `_32`: each its own, or the pending transfer's
/// when it gives 0.
fn inherited_user_data_64(t: &NewTransfer, p: &Transfer) -> (u128, u64, u32) {
    fn either<T: PartialEq + Default>(given: T, pending: T) -> T {
        if given == T::default() {
            pending
        } else {
            given
        }
    }
    (
        either(t.user_data_128, p.user_data_128),
        either(t.user_data_64, p.user_data_64),
        either(t.user_data_32, p.user_data_32),
    )
}

/// The checks of a post or void that need only the event and the pending transfer.
fn check_against_pending(t: &NewTransfer, p: &Transfer) -> Option<CreateTransferResult> {
    let post = t.flags.contains(TransferFlags::POST_PENDING_TRANSFER);
    let amount = resolved_amount(t, p);
    Some(if !p.flags.contains(TransferFlags::PENDING) {
        R::PendingTransferNotPending
    } else if !t.debit_account_id.is_zero() && t.debit_account_id != p.debit_account_id {
        R::PendingTransferHasDifferentDebitAccountId
    } else if !t.credit_account_id.is_zero() && t.credit_account_id != p.credit_account_id {
        R::PendingTransferHasDifferentCreditAccountId
    } else if t.ledger != 0 && t.ledger != p.ledger {
        R::PendingTransferHasDifferentLedger
    } else if t.code != 0 && t.code != p.code {
        R::PendingTransferHasDifferentCode
    } else if amount > p.amount {
        R::ExceedsPendingTransferAmount
    } else if !post && amount < p.amount {
        R::PendingTransferHasDifferentAmount
    } else {
        return None;
    })
}

/// A post's amount ([`AMOUNT_MAX`]: the full pending amount) or a void's (0: the full amount).
fn resolved_amount(t: &NewTransfer, p: &Transfer) -> Amount {
    let post = t.flags.contains(TransferFlags::POST_PENDING_TRANSFER);
    let full = if post { AMOUNT_MAX } else { 0 };
    if t.amount == full {
        p.amount
    } else {
        t.amount
    }
}

/// The event-only checks of a post or void, in precedence order.
fn check_post_or_void_fields(t: &NewTransfer) -> Option<CreateTransferResult> {
    let f = t.flags;
    let exclusive = [
        TransferFlags::PENDING,
        TransferFlags::BALANCING_DEBIT,
        TransferFlags::BALANCING_CREDIT,
        TransferFlags::CLOSING_DEBIT,
        TransferFlags::CLOSING_CREDIT,
    ];
    let both = f.contains(TransferFlags::POST_PENDING_TRANSFER)
        && f.contains(TransferFlags::VOID_PENDING_TRANSFER);
    Some(if both || exclusive.iter().any(|&x| f.contains(x)) {
        R::FlagsAreMutuallyExclusive
    } else if t.pending_id.is_zero() {
        R::PendingIdMustNotBeZero
    } else if t.pending_id == TransferId::MAX {
        R::PendingIdMustNotBeIntMax
    } else if t.pending_id == t.id {
        R::PendingIdMustBeDifferent
    } else if t.timeout != 0 {
        R::TimeoutReservedForPendingTransfer
    } else {
        return None;
    })
}

fn post_or_void_pending<S: LedgerStore>(
    overlay: &mut Overlay<'_, S>,
    t: &NewTransfer,
    timestamp: Timestamp,
    origin: Origin,
) -> CreateTransferResult {
    if let Some(refused) = check_post_or_void_fields(t) {
        return refused;
    }
    let Some(p) = overlay.transfer(t.pending_id) else {
        return R::PendingTransferNotFound;
    };
    if let Some(refused) = check_against_pending(t, &p) {
        return refused;
    }
    // Only the saga settles a payment: a client's post would pay without the processor, a
    // client's void would leave a payment the processor may be making.
    if origin == Origin::Client && is_payment_pending(overlay, &p) {
        return R::PendingTransferIsExternal;
    }
    match overlay
        .pending_status(p.id)
        .expect("every pending transfer has a status")
    {
        PendingStatus::Pending => {}
        PendingStatus::Posted => return R::PendingTransferAlreadyPosted,
        PendingStatus::Voided => return R::PendingTransferAlreadyVoided,
        PendingStatus::Expired => return R::PendingTransferExpired,
    }
    let expires_at = p.expires_at();
    if expires_at.is_some_and(|at| at <= timestamp) {
        return R::PendingTransferExpired;
    }
    let post = t.flags.contains(TransferFlags::POST_PENDING_TRANSFER);
    let (dr, cr) = overlay.pending_accounts(&p);
    if t.flags.contains(TransferFlags::IMPORTED) && timestamp <= overlay.newest() {
        return R::ImportedEventTimestampMustNotRegress;
    }
    // The only movement a closed account allows is voiding a pending transfer. (A payment the
    // processor confirmed meanwhile waits, dead-lettered as `post_failed`, until the account
    // reopens and an operator sends it back.)
    if post && dr.flags.contains(AccountFlags::CLOSED) {
        return R::DebitAccountAlreadyClosed;
    }
    if post && cr.flags.contains(AccountFlags::CLOSED) {
        return R::CreditAccountAlreadyClosed;
    }
    resolve_pending(overlay, t, &p, timestamp, (dr, cr));
    if let Some(at) = expires_at {
        overlay.remove_expiry(at, p.id);
    }
    R::Ok
}

/// Whether `p`, a pending transfer, reserves a payment to an external account.
fn is_payment_pending<S: LedgerStore>(overlay: &Overlay<'_, S>, p: &Transfer) -> bool {
    !p.flags.contains(TransferFlags::IMPORTED)
        && overlay
            .account(p.credit_account_id)
            .is_some_and(|cr| cr.flags.contains(AccountFlags::EXTERNAL))
}

/// Posts or voids `p` (every check passed): releases its reservation, posts the amount or
/// reopens the accounts it was closing, and stores the new transfer.
fn resolve_pending<S: LedgerStore>(
    overlay: &mut Overlay<'_, S>,
    t: &NewTransfer,
    p: &Transfer,
    timestamp: Timestamp,
    (mut dr, mut cr): (Account, Account),
) {
    let post = t.flags.contains(TransferFlags::POST_PENDING_TRANSFER);
    let amount = resolved_amount(t, p);
    let (user_data_128, user_data_64, user_data_32) = inherited_user_data_64(t, p);
    assert!(
        amount <= p.amount,
        "a post moves at most the pending amount"
    );
    dr.debits_pending -= p.amount;
    cr.credits_pending -= p.amount;
    if post {
        // Cannot overflow: the pending amount was counted in debits_pending + debits_posted
        // when the pending transfer was created, and amount <= p.amount.
        dr.debits_posted = dr.debits_posted.checked_add(amount).expect("posted fits");
        cr.credits_posted = cr.credits_posted.checked_add(amount).expect("posted fits");
    } else {
        reopen_closed_by(p, &mut dr, &mut cr);
    }
    let transfer = Transfer {
        id: t.id,
        debit_account_id: p.debit_account_id,
        credit_account_id: p.credit_account_id,
        amount,
        pending_id: p.id,
        timeout: 0,
        ledger: p.ledger,
        code: p.code,
        flags: t.flags,
        user_data_128,
        user_data_64,
        user_data_32,
        timestamp,
    };
    overlay.put_transfer(transfer, dr, cr);
    let outcome = if post {
        PendingStatus::Posted
    } else {
        PendingStatus::Voided
    };
    overlay.set_pending_status(p.id, outcome);
}
