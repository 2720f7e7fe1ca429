//! The JSON shapes of API v1 and their strict parsing: every bad input becomes an [`ApiError`]
//! that names what is wrong and where (`[3].amount`), before anything reaches the ledger.

use bulwark_ledger::{
    Account, AccountId, Balances, FlagSet, NewAccount, NewTransfer, PendingStatus, Timestamp,
    Transfer, TransferFlags, TransferId, AMOUNT_MAX,
};
use bulwark_limits::MAX_BATCH_EVENTS;
use serde::{Deserialize, Serialize};

use crate::error::ApiError;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccountIn {
    id: u64,
    ledger: u32,
    code: u16,
    #[serde(default)]
    flags: Vec<String>,
    #[serde(default)]
    user_data: u64,
    /// Only with the `imported` flag: the account's timestamp where it comes from.
    #[serde(default)]
    timestamp: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransferIn {
    id: u64,
    #[serde(default)]
    debit_account_id: u64,
    #[serde(default)]
    credit_account_id: u64,
    /// Required, except on a post (absent: the full pending amount) or a void.
    #[serde(default)]
    amount: Option<u64>,
    #[serde(default)]
    pending_id: u64,
    #[serde(default)]
    timeout: u32,
    #[serde(default)]
    ledger: u32,
    #[serde(default)]
    code: u16,
    #[serde(default)]
    flags: Vec<String>,
    #[serde(default)]
    user_data: u64,
    /// Only with the `imported` flag: the transfer's timestamp where it comes from.
    #[serde(default)]
    timestamp: u64,
}

/// Parses a JSON array body strictly. The fast path parses without tracking positions; only a
/// body that fails is parsed again to say where.
fn parse_batch<'a, T: Deserialize<'a>>(body: &'a [u8], what: &str) -> Result<Vec<T>, ApiError> {
    let items: Vec<T> = match serde_json::from_slice(body) {
        Ok(items) => items,
        Err(first) => {
            let de = &mut serde_json::Deserializer::from_slice(body);
            let err = match serde_path_to_error::deserialize::<_, Vec<T>>(de) {
                Ok(_) => return Err(ApiError::from_json(&first, String::new(), what)),
                Err(e) => e,
            };
            let path = err.path().to_string();
            return Err(ApiError::from_json(err.inner(), path, what));
        }
    };
    if items.is_empty() {
        return Err(ApiError::bad_request(
            "empty_batch",
            format!("the batch holds no {what}: send 1 to {MAX_BATCH_EVENTS}"),
        ));
    }
    if items.len() > MAX_BATCH_EVENTS {
        return Err(ApiError::bad_request(
            "batch_too_large",
            format!(
                "the batch holds {} {what}; at most {MAX_BATCH_EVENTS} are allowed",
                items.len()
            ),
        ));
    }
    Ok(items)
}

fn parse_flags<F: FlagSet>(names: &[String], at: usize) -> Result<F, ApiError> {
    let mut bits = 0;
    for name in names {
        let bit = F::from_name(name).ok_or_else(|| {
            let known: Vec<&str> = F::NAMES.iter().map(|(n, _)| *n).collect();
            ApiError::bad_request(
                "unknown_flag",
                format!(
                    "[{at}].flags: unknown flag `{name}`; expected any of {}",
                    known.join(", ")
                ),
            )
        })?;
        bits |= bit;
    }
    Ok(F::from_bits_retain(bits))
}

fn nonzero_id(id: u64, at: usize) -> Result<u64, ApiError> {
    if id == 0 {
        Err(ApiError::bad_request(
            "invalid_id",
            format!("[{at}].id must not be 0"),
        ))
    } else {
        Ok(id)
    }
}

pub fn parse_accounts(body: &[u8]) -> Result<Vec<NewAccount>, ApiError> {
    parse_batch::<AccountIn>(body, "accounts")?
        .into_iter()
        .enumerate()
        .map(|(i, a)| {
            Ok(NewAccount {
                id: AccountId(nonzero_id(a.id, i)?),
                ledger: a.ledger,
                code: a.code,
                flags: parse_flags(&a.flags, i)?,
                user_data: a.user_data,
                timestamp: Timestamp(a.timestamp),
            })
        })
        .collect()
}

pub fn parse_transfers(body: &[u8]) -> Result<Vec<NewTransfer>, ApiError> {
    parse_batch::<TransferIn>(body, "transfers")?
        .into_iter()
        .enumerate()
        .map(|(i, t)| {
            let flags: TransferFlags = parse_flags(&t.flags, i)?;
            Ok(NewTransfer {
                id: TransferId(nonzero_id(t.id, i)?),
                debit_account_id: AccountId(t.debit_account_id),
                credit_account_id: AccountId(t.credit_account_id),
                amount: transfer_amount(t.amount, flags, i)?,
                pending_id: TransferId(t.pending_id),
                timeout: t.timeout,
                ledger: t.ledger,
                code: t.code,
                flags,
                user_data: t.user_data,
                timestamp: Timestamp(t.timestamp),
            })
        })
        .collect()
}

/// A transfer's amount: required (0 is a valid amount, so a forgotten one must not pass as 0),
/// except on a post, where absent means the full pending amount, and on a void.
fn transfer_amount(amount: Option<u64>, flags: TransferFlags, at: usize) -> Result<u64, ApiError> {
    match amount {
        Some(amount) => Ok(amount),
        None if flags.contains(TransferFlags::POST_PENDING_TRANSFER) => Ok(AMOUNT_MAX),
        None if flags.contains(TransferFlags::VOID_PENDING_TRANSFER) => Ok(0),
        None => Err(ApiError::bad_request(
            "missing_field",
            format!(
                "[{at}].amount is required (0 is allowed; on a balancing transfer it means no cap)"
            ),
        )),
    }
}

#[derive(Serialize)]
pub struct EventResult {
    pub index: usize,
    pub result: &'static str,
}

#[derive(Serialize)]
pub struct BatchAnswer {
    pub results: Vec<EventResult>,
}

#[derive(Serialize)]
pub struct AccountOut {
    id: u64,
    ledger: u32,
    code: u16,
    flags: Vec<&'static str>,
    user_data: u64,
    debits_pending: u64,
    debits_posted: u64,
    credits_pending: u64,
    credits_posted: u64,
    timestamp: u64,
}

impl From<Account> for AccountOut {
    fn from(a: Account) -> Self {
        AccountOut {
            id: a.id.0,
            ledger: a.ledger,
            code: a.code,
            flags: a.flags.names(),
            user_data: a.user_data,
            debits_pending: a.debits_pending,
            debits_posted: a.debits_posted,
            credits_pending: a.credits_pending,
            credits_posted: a.credits_posted,
            timestamp: a.timestamp.0,
        }
    }
}

#[derive(Serialize)]
pub struct TransferOut {
    id: u64,
    debit_account_id: u64,
    credit_account_id: u64,
    amount: u64,
    pending_id: u64,
    timeout: u32,
    ledger: u32,
    code: u16,
    flags: Vec<&'static str>,
    user_data: u64,
    timestamp: u64,
    /// For a transfer created `pending`: pending, posted, voided or expired.
    #[serde(skip_serializing_if = "Option::is_none")]
    pending_status: Option<&'static str>,
    /// For an account with `history`: its balances right after this transfer.
    #[serde(skip_serializing_if = "Option::is_none")]
    balances: Option<BalancesOut>,
}

impl TransferOut {
    pub fn new(t: Transfer, status: Option<PendingStatus>, balances: Option<Balances>) -> Self {
        TransferOut {
            id: t.id.0,
            debit_account_id: t.debit_account_id.0,
            credit_account_id: t.credit_account_id.0,
            amount: t.amount,
            pending_id: t.pending_id.0,
            timeout: t.timeout,
            ledger: t.ledger,
            code: t.code,
            flags: t.flags.names(),
            user_data: t.user_data,
            timestamp: t.timestamp.0,
            pending_status: status.map(PendingStatus::name),
            balances: balances.map(BalancesOut::from),
        }
    }
}

#[derive(Serialize)]
pub struct BalancesOut {
    debits_pending: u64,
    debits_posted: u64,
    credits_pending: u64,
    credits_posted: u64,
}

impl From<Balances> for BalancesOut {
    fn from(b: Balances) -> Self {
        BalancesOut {
            debits_pending: b.debits_pending,
            debits_posted: b.debits_posted,
            credits_pending: b.credits_pending,
            credits_posted: b.credits_posted,
        }
    }
}

#[derive(Serialize)]
pub struct HistoryOut {
    pub transfers: Vec<TransferOut>,
    /// Pass as `after` to get the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_after: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(body: &str) -> Result<NewTransfer, ApiError> {
        parse_transfers(body.as_bytes()).map(|t| t[0])
    }

    #[test]
    fn amount_is_required_except_on_a_post_or_a_void() {
        let missing =
            one(r#"[{"id":1,"debit_account_id":1,"credit_account_id":2,"ledger":1,"code":1}]"#)
                .unwrap_err();
        assert!(
            format!("{missing:?}").contains("[0].amount is required"),
            "{missing:?}"
        );
        let zero = one(
            r#"[{"id":1,"debit_account_id":1,"credit_account_id":2,"amount":0,"ledger":1,"code":1}]"#,
        );
        assert_eq!(zero.unwrap().amount, 0);
        let post = one(r#"[{"id":2,"pending_id":1,"flags":["post_pending_transfer"]}]"#);
        assert_eq!(
            post.unwrap().amount,
            AMOUNT_MAX,
            "a post without amount posts it all"
        );
        let post_zero =
            one(r#"[{"id":2,"pending_id":1,"amount":0,"flags":["post_pending_transfer"]}]"#);
        assert_eq!(post_zero.unwrap().amount, 0);
        let void = one(r#"[{"id":3,"pending_id":1,"flags":["void_pending_transfer"]}]"#);
        assert_eq!(void.unwrap().amount, 0);
    }
}
