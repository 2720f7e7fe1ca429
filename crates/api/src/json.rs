//! The JSON shapes of API v1 and their strict parsing: every bad input becomes an [`ApiError`]
//! that names what is wrong and where (`[3].amount`), before anything reaches the ledger.

use bulwark_ledger::{
    Account, AccountId, Amount, Balances, FlagSet, NewAccount, NewTransfer, PendingStatus,
    Timestamp, Transfer, TransferFlags, TransferId, AMOUNT_MAX,
};
use bulwark_limits::MAX_BATCH_EVENTS;
use serde::{Deserialize, Serialize};

use crate::decimal::Dec;
use crate::error::ApiError;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccountIn {
    id: Dec<u128>,
    ledger: u32,
    code: u16,
    #[serde(default)]
    flags: Vec<String>,
    #[serde(default)]
    user_data_128: Dec<u128>,
    #[serde(default)]
    user_data_64: Dec<u64>,
    #[serde(default)]
    user_data_32: u32,
    /// Only with the `imported` flag: the account's timestamp where it comes from.
    #[serde(default)]
    timestamp: Dec<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransferIn {
    id: Dec<u128>,
    #[serde(default)]
    debit_account_id: Dec<u128>,
    #[serde(default)]
    credit_account_id: Dec<u128>,
    /// Required, except on a post (absent: the full pending amount) or a void.
    #[serde(default)]
    amount: Option<Dec<u128>>,
    #[serde(default)]
    pending_id: Dec<u128>,
    #[serde(default)]
    timeout: u32,
    #[serde(default)]
    ledger: u32,
    #[serde(default)]
    code: u16,
    #[serde(default)]
    flags: Vec<String>,
    #[serde(default)]
    user_data_128: Dec<u128>,
    #[serde(default)]
    user_data_64: Dec<u64>,
    #[serde(default)]
    user_data_32: u32,
    /// Only with the `imported` flag: the transfer's timestamp where it comes from.
    #[serde(default)]
    timestamp: Dec<u64>,
}

/// Parses a JSON array body strictly. The fast path checks the body is UTF-8 once and parses it
/// without tracking positions (serde_json checks each string of a byte slice on its own: a
/// quarter of the time of a batch of 8,189 transfers); only a body that fails is parsed again to
/// say where.
fn parse_batch<'a, T: Deserialize<'a>>(body: &'a [u8], what: &str) -> Result<Vec<T>, ApiError> {
    let parsed = std::str::from_utf8(body)
        .ok()
        .and_then(|text| serde_json::from_str::<Vec<T>>(text).ok());
    let Some(items) = parsed else {
        return Err(batch_error::<T>(body, what));
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

/// Why `body`, which failed to parse as a batch, is not one: where and what (re-parsed, tracking
/// the path, since the fast path does not).
fn batch_error<'a, T: Deserialize<'a>>(body: &'a [u8], what: &str) -> ApiError {
    let shape = format!("a JSON array of {what}");
    let de = &mut serde_json::Deserializer::from_slice(body);
    match serde_path_to_error::deserialize::<_, Vec<T>>(de) {
        Err(e) => ApiError::from_json(e.inner(), e.path().to_string(), &shape),
        // Not expected (the body failed the fast path): the error without a path, or, should
        // the slice parse where the text did not, that the body is not UTF-8.
        Ok(_) => match serde_json::from_slice::<Vec<T>>(body) {
            Err(e) => ApiError::from_json(&e, String::new(), &shape),
            Ok(_) => ApiError::bad_request(
                "malformed_json",
                format!("the body is not valid JSON: it is not UTF-8; it must be {shape}"),
            ),
        },
    }
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

fn nonzero_id(id: Dec<u128>, at: usize) -> Result<u128, ApiError> {
    let Dec(id) = id;
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
                user_data_128: a.user_data_128.0,
                user_data_64: a.user_data_64.0,
                user_data_32: a.user_data_32,
                timestamp: Timestamp(a.timestamp.0),
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
                debit_account_id: AccountId(t.debit_account_id.0),
                credit_account_id: AccountId(t.credit_account_id.0),
                amount: transfer_amount(t.amount.map(|a| a.0), flags, i)?,
                pending_id: TransferId(t.pending_id.0),
                timeout: t.timeout,
                ledger: t.ledger,
                code: t.code,
                flags,
                user_data_128: t.user_data_128.0,
                user_data_64: t.user_data_64.0,
                user_data_32: t.user_data_32,
                timestamp: Timestamp(t.timestamp.0),
            })
        })
        .collect()
}

/// A transfer's amount: required (0 is a valid amount, so a forgotten one must not pass as 0),
/// except on a post, where absent means the full pending amount, and on a void.
fn transfer_amount(
    amount: Option<u128>,
    flags: TransferFlags,
    at: usize,
) -> Result<Amount, ApiError> {
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

/// The answer to a batch, `{"results":[{"index":0,"result":"ok"},...]}`, one entry per event,
/// written by hand: serde took 0.7 ms for a batch of 8,189 (a twentieth of its round trip at
/// one batch in flight), this 0.1 ms. `names` are the results' snake_case names (any other is
/// escaped by serde).
pub fn batch_answer(names: &[&'static str]) -> Vec<u8> {
    const ENTRY: usize = r#"{"index":8189,"result":"ok"},"#.len();
    let mut body = Vec::with_capacity(names.len() * ENTRY + 16);
    body.extend_from_slice(br#"{"results":["#);
    let mut digits = itoa::Buffer::new();
    for (index, name) in names.iter().enumerate() {
        if index > 0 {
            body.push(b',');
        }
        body.extend_from_slice(br#"{"index":"#);
        body.extend_from_slice(digits.format(index).as_bytes());
        body.extend_from_slice(br#","result":"#);
        if name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            body.push(b'"');
            body.extend_from_slice(name.as_bytes());
            body.push(b'"');
        } else {
            serde_json::to_writer(&mut body, name).expect("a string serializes into a vector");
        }
        body.push(b'}');
    }
    body.extend_from_slice(b"]}");
    body
}

/// An account as answered: every field wider than 32 bits as a decimal string (`decimal.rs`).
#[derive(Serialize)]
pub struct AccountOut {
    id: Dec<u128>,
    ledger: u32,
    code: u16,
    flags: Vec<&'static str>,
    user_data_128: Dec<u128>,
    user_data_64: Dec<u64>,
    user_data_32: u32,
    debits_pending: Dec<u128>,
    debits_posted: Dec<u128>,
    credits_pending: Dec<u128>,
    credits_posted: Dec<u128>,
    timestamp: Dec<u64>,
}

impl From<Account> for AccountOut {
    fn from(a: Account) -> Self {
        AccountOut {
            id: Dec(a.id.0),
            ledger: a.ledger,
            code: a.code,
            flags: a.flags.names(),
            user_data_128: Dec(a.user_data_128),
            user_data_64: Dec(a.user_data_64),
            user_data_32: a.user_data_32,
            debits_pending: Dec(a.debits_pending),
            debits_posted: Dec(a.debits_posted),
            credits_pending: Dec(a.credits_pending),
            credits_posted: Dec(a.credits_posted),
            timestamp: Dec(a.timestamp.0),
        }
    }
}

/// A transfer as answered: every field wider than 32 bits as a decimal string.
#[derive(Serialize)]
pub struct TransferOut {
    id: Dec<u128>,
    debit_account_id: Dec<u128>,
    credit_account_id: Dec<u128>,
    amount: Dec<u128>,
    pending_id: Dec<u128>,
    timeout: u32,
    ledger: u32,
    code: u16,
    flags: Vec<&'static str>,
    user_data_128: Dec<u128>,
    user_data_64: Dec<u64>,
    user_data_32: u32,
    timestamp: Dec<u64>,
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
            id: Dec(t.id.0),
            debit_account_id: Dec(t.debit_account_id.0),
            credit_account_id: Dec(t.credit_account_id.0),
            amount: Dec(t.amount),
            pending_id: Dec(t.pending_id.0),
            timeout: t.timeout,
            ledger: t.ledger,
            code: t.code,
            flags: t.flags.names(),
            user_data_128: Dec(t.user_data_128),
            user_data_64: Dec(t.user_data_64),
            user_data_32: t.user_data_32,
            timestamp: Dec(t.timestamp.0),
            pending_status: status.map(PendingStatus::name),
            balances: balances.map(BalancesOut::from),
        }
    }
}

#[derive(Serialize)]
pub struct BalancesOut {
    debits_pending: Dec<u128>,
    debits_posted: Dec<u128>,
    credits_pending: Dec<u128>,
    credits_posted: Dec<u128>,
}

impl From<Balances> for BalancesOut {
    fn from(b: Balances) -> Self {
        BalancesOut {
            debits_pending: Dec(b.debits_pending),
            debits_posted: Dec(b.debits_posted),
            credits_pending: Dec(b.credits_pending),
            credits_posted: Dec(b.credits_posted),
        }
    }
}

/// An account's balances right after one change.
#[derive(Serialize)]
pub struct BalancesAt {
    timestamp: Dec<u64>,
    #[serde(flatten)]
    balances: BalancesOut,
}

impl BalancesAt {
    pub fn new(timestamp: Timestamp, balances: Balances) -> Self {
        BalancesAt {
            timestamp: Dec(timestamp.0),
            balances: balances.into(),
        }
    }
}

#[derive(Serialize)]
pub struct BalancesPage {
    pub balances: Vec<BalancesAt>,
    /// Pass as `after` to get the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_after: Option<Dec<u64>>,
}

#[derive(Serialize)]
pub struct HistoryOut {
    pub transfers: Vec<TransferOut>,
    /// Pass as `after` to get the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_after: Option<Dec<u64>>,
    /// With `reversed`: pass as `before` to get the next (older) page; absent on the last.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_before: Option<Dec<u64>>,
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

    #[test]
    fn a_body_that_is_not_utf8_is_refused_where_it_breaks() {
        let mut body =
            br#"[{"id":1,"debit_account_id":1,"credit_account_id":2,"amount":5,"#.to_vec();
        body.extend_from_slice(b"\"ledger\":1,\"code\":1,\"flags\":[\"x\xff\"]}]");
        let err = parse_transfers(&body).unwrap_err();
        assert_eq!(err.status, axum::http::StatusCode::BAD_REQUEST);
        assert_eq!(err.code, "malformed_json", "{err:?}");
        let column = body.iter().position(|&b| b == 0xff).unwrap() + 1;
        let names_it = format!("invalid unicode code point at line 1 column {column}");
        assert!(err.message.contains(&names_it), "{err:?}");
    }

    #[test]
    fn the_fast_path_and_the_error_path_agree_on_what_they_read() {
        let good = r#"[{"id":"7","debit_account_id":1,"credit_account_id":2,"amount":"5","ledger":1,"code":1,"user_data_128":"\u0039"}]"#;
        let parsed = one(good).unwrap();
        assert_eq!(
            (parsed.id.0, parsed.amount, parsed.user_data_128),
            (7, 5, 9)
        );
        let unknown = r#"[{"id":1,"debit_account_id":1,"credit_account_id":2,"amount":5,"ledger":1,"code":1,"colour":1}]"#;
        let err = one(unknown).unwrap_err();
        assert_eq!(err.code, "unknown_field", "{err:?}");
        assert!(format!("{err:?}").contains("[0]"), "{err:?}");
    }

    #[test]
    fn a_batch_answer_is_the_json_it_describes() {
        let odd = [
            "ok",
            "exceeds_credits",
            "linked_event_failed",
            "a \"quoted\" name",
        ];
        for names in [vec![], vec!["ok"], odd.to_vec()] {
            let body = batch_answer(&names);
            let expected = serde_json::json!({
                "results": names
                    .iter()
                    .enumerate()
                    .map(|(index, result)| serde_json::json!({"index": index, "result": result}))
                    .collect::<Vec<_>>()
            });
            let parsed: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(parsed, expected);
            assert_eq!(
                body,
                serde_json::to_vec(&expected).unwrap(),
                "byte for byte"
            );
        }
    }
}
