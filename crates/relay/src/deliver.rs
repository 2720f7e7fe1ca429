//! One delivery of one payment to its processor over HTTP (docs/processor-protocol.md).

use bulwark_ledger::outbox::OutboxMessage;
use bulwark_ledger::Transfer;
use bulwark_processor::{
    PaymentAnswer, PaymentRequest, BULWARK_TERM, IDEMPOTENCY_KEY, PAYMENTS_PATH,
};

/// What a delivery came to: an answer to act on, or an error (no answer, or one that is not
/// the protocol's), which counts as a failed delivery.
pub(crate) type Delivered = Result<PaymentAnswer, String>;

/// The body of a payment's delivery: the pending transfer's money movement, under the
/// payment's id (the idempotency key, the same for every reservation of the payment).
pub(crate) fn request(
    message: &OutboxMessage,
    pending: &Transfer,
    term: u64,
    cluster: u64,
) -> PaymentRequest {
    PaymentRequest {
        payment_id: message.payment.0,
        term,
        cluster: u128::from(cluster),
        amount: pending.amount,
        ledger: pending.ledger,
        code: pending.code,
        debit_account_id: pending.debit_account_id.0,
        credit_account_id: pending.credit_account_id.0,
        user_data_128: pending.user_data_128,
        user_data_64: pending.user_data_64,
        user_data_32: pending.user_data_32,
        accepted_at: message.queued_at.0,
    }
}

pub(crate) async fn deliver(
    client: &reqwest::Client,
    base_url: &str,
    secret: Option<&str>,
    request: &PaymentRequest,
) -> Delivered {
    let mut post = client
        .post(format!("{base_url}{PAYMENTS_PATH}"))
        .header(IDEMPOTENCY_KEY, request.payment_id.to_string())
        .header(BULWARK_TERM, request.term.to_string())
        .json(request);
    if let Some(secret) = secret {
        post = post.bearer_auth(secret);
    }
    let response = post.send().await.map_err(|e| error_text(&e))?;
    let status = response.status().as_u16();
    let body = response.bytes().await.map_err(|e| error_text(&e))?;
    PaymentAnswer::from_http(status, &body)
}

fn error_text(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timed out".to_string()
    } else {
        let mut text = e.to_string();
        let mut source = std::error::Error::source(e);
        while let Some(s) = source {
            text.push_str(": ");
            text.push_str(&s.to_string());
            source = s.source();
        }
        text
    }
}
