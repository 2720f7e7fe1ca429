//! The rules of one `create_accounts` event, in the order their results take precedence.

use super::Overlay;
use crate::results::CreateAccountResult;
use crate::store::LedgerStore;
use crate::types::{Account, AccountFlags, AccountId, FlagSet, NewAccount, Timestamp};

pub(super) fn create_account<S: LedgerStore>(
    overlay: &mut Overlay<'_, S>,
    a: &NewAccount,
    timestamp: Timestamp,
) -> CreateAccountResult {
    use CreateAccountResult as R;
    if a.flags.reserved_bits() != 0 {
        return R::ReservedFlag;
    }
    if a.id.is_zero() {
        return R::IdMustNotBeZero;
    }
    if a.id == AccountId::MAX {
        return R::IdMustNotBeIntMax;
    }
    // An existing id answers before any other check, so a retry with changed fields learns
    // that the id is taken rather than what is wrong with the new fields.
    if let Some(e) = overlay.account(a.id) {
        return account_exists(a, &e);
    }
    if a.flags.contains(AccountFlags::IMPORTED) && timestamp <= overlay.newest() {
        return R::ImportedEventTimestampMustNotRegress;
    }
    if a.flags
        .contains(AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS)
        && a.flags
            .contains(AccountFlags::CREDITS_MUST_NOT_EXCEED_DEBITS)
    {
        return R::FlagsAreMutuallyExclusive;
    }
    if a.ledger == 0 {
        return R::LedgerMustNotBeZero;
    }
    if a.code == 0 {
        return R::CodeMustNotBeZero;
    }
    overlay.note_created(timestamp);
    overlay.put_account(Account {
        id: a.id,
        ledger: a.ledger,
        code: a.code,
        flags: a.flags,
        user_data_128: a.user_data_128,
        user_data_64: a.user_data_64,
        user_data_32: a.user_data_32,
        timestamp,
        ..Account::default()
    });
    CreateAccountResult::Ok
}

/// `closed` is the account's state, which closing transfers change, not a field it was created
/// with: a retry of the creation of an account closed since answers `exists`.
fn account_exists(a: &NewAccount, e: &Account) -> CreateAccountResult {
    let creation_flags = |f: AccountFlags| f.bits() & !AccountFlags::CLOSED.bits();
    let imported = a.flags.contains(AccountFlags::IMPORTED);
    let same = e.ledger == a.ledger
        && e.code == a.code
        && creation_flags(e.flags) == creation_flags(a.flags)
        && e.user_data_128 == a.user_data_128
        && e.user_data_64 == a.user_data_64
        && e.user_data_32 == a.user_data_32
        && (!imported || e.timestamp == a.timestamp);
    if same {
        CreateAccountResult::Exists
    } else {
        CreateAccountResult::ExistsWithDifferentFields
    }
}
