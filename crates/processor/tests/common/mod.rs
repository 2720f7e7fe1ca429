//! What every processor test does: start one, deliver payments over real HTTP the way the relay
//! does, read the answers.

#![allow(dead_code)]

use bulwark_processor::{start, Config, Outcome, PaymentRequest, ProcessorHandle, Record};
use serde_json::Value;

pub async fn processor(config: Config) -> ProcessorHandle {
    start("127.0.0.1:0".parse().unwrap(), config)
        .await
        .expect("start the processor")
}

pub fn payment(payment_id: u128, term: u64) -> PaymentRequest {
    PaymentRequest {
        payment_id,
        term,
        cluster: 0x0123_4567_89ab_cdef_0123_4567_89ab_cdef,
        amount: 500,
        ledger: 1,
        code: 10,
        debit_account_id: 1,
        credit_account_id: 2,
        user_data_128: 0,
        user_data_64: 0,
        user_data_32: 0,
        accepted_at: 1_700_000_000_000_000_000,
    }
}

/// A delivery as the protocol has it: the body, its key and term in the headers.
pub async fn deliver(url: &str, req: &PaymentRequest) -> (u16, Value) {
    let headers = [
        ("Idempotency-Key", req.payment_id.to_string()),
        ("Bulwark-Term", req.term.to_string()),
        ("Content-Type", "application/json".to_string()),
    ];
    let body = serde_json::to_vec(req).unwrap();
    send(url, &headers, body).await
}

/// A delivery of anything at all, for the malformed ones.
pub async fn send(url: &str, headers: &[(&str, String)], body: Vec<u8>) -> (u16, Value) {
    let mut request = reqwest::Client::new()
        .post(format!("{url}/v1/payments"))
        .body(body);
    for (name, value) in headers {
        request = request.header(*name, value);
    }
    let response = request.send().await.expect("the processor answers");
    let status = response.status().as_u16();
    let body = response.json::<Value>().await.expect("a JSON answer");
    (status, body)
}

pub async fn get(url: &str, path: &str) -> (u16, Value) {
    let response = reqwest::get(format!("{url}{path}"))
        .await
        .expect("the processor answers");
    let status = response.status().as_u16();
    (status, response.json().await.expect("a JSON answer"))
}

pub async fn post_control(url: &str, body: Value) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(format!("{url}/control"))
        .json(&body)
        .send()
        .await
        .expect("the processor answers");
    let status = response.status().as_u16();
    (status, response.json().await.expect("a JSON answer"))
}

pub fn outcomes(records: &[Record]) -> Vec<Outcome> {
    records.iter().map(|r| r.outcome).collect()
}
