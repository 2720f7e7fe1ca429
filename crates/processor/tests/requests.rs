//! What the processor refuses before deciding anything (bad requests, a wrong secret), and what
//! a test in another process reads back: the request's JSON, the records, the summary, the knobs.

mod common;

use bulwark_processor::{Config, Outcome, PaymentRequest, Record, Summary};
use common::{deliver, get, outcomes, payment, post_control, processor, send};
use serde_json::{json, Value};

type Headers = Vec<(&'static str, String)>;

fn headers(key: &str, term: &str) -> Headers {
    vec![
        ("Idempotency-Key", key.to_string()),
        ("Bulwark-Term", term.to_string()),
        ("Content-Type", "application/json".to_string()),
    ]
}

fn body_with(field: &str, value: Option<Value>) -> Vec<u8> {
    let mut body = serde_json::to_value(payment(1, 1)).unwrap();
    match value {
        Some(v) => body[field] = v,
        None => {
            body.as_object_mut().unwrap().remove(field);
        }
    }
    serde_json::to_vec(&body).unwrap()
}

#[test]
fn the_request_body_is_the_protocols() {
    let req = PaymentRequest {
        payment_id: 123,
        term: 7,
        ..payment(123, 7)
    };
    let expected = json!({
        "payment_id": "123", "term": "7", "cluster": "0123456789abcdef0123456789abcdef",
        "amount": "500", "ledger": 1, "code": 10, "debit_account_id": "1",
        "credit_account_id": "2", "user_data_128": "0", "user_data_64": "0", "user_data_32": 0,
        "accepted_at": "1700000000000000000"
    });
    assert_eq!(serde_json::to_value(&req).unwrap(), expected);
    assert_eq!(
        serde_json::from_value::<PaymentRequest>(expected).unwrap(),
        req
    );
}

#[tokio::test]
async fn a_bad_request_is_400_naming_the_field_and_executes_nothing() {
    let p = processor(Config::default()).await;
    let url = p.url();
    let no_key: Vec<_> = headers("1", "1").into_iter().skip(1).collect();
    let no_json = vec![headers("1", "1")[0].clone(), headers("1", "1")[1].clone()];
    let good = || body_with("amount", Some(json!("500")));
    let cases: Vec<(&str, Headers, Vec<u8>)> = vec![
        ("Idempotency-Key", no_key, good()),
        ("Idempotency-Key", headers("01", "1"), good()),
        ("Bulwark-Term", headers("1", "x"), good()),
        ("Content-Type", no_json, good()),
        ("body", headers("1", "1"), b"{not json".to_vec()),
        ("amount", headers("1", "1"), body_with("amount", None)),
        (
            "amount",
            headers("1", "1"),
            body_with("amount", Some(json!("-5"))),
        ),
        (
            "cluster",
            headers("1", "1"),
            body_with("cluster", Some(json!("xyz"))),
        ),
        (
            "ledger",
            headers("1", "1"),
            body_with("ledger", Some(json!("one"))),
        ),
        ("payment_id", headers("2", "1"), good()),
        ("term", headers("1", "2"), good()),
    ];
    for (field, headers, body) in cases {
        let (status, answer) = send(&url, &headers, body).await;
        assert_eq!(status, 400, "{field}: {answer}");
        assert_eq!(answer["status"], "bad_request");
        assert_eq!(answer["field"], field, "{answer}");
    }
    let summary = p.summary();
    assert_eq!(
        (summary.counts[&Outcome::BadRequest], summary.executed),
        (11, 0)
    );
    assert_eq!(summary.highest_term, 0);
    let records = p.records();
    assert_eq!(
        records[0].payment_id, None,
        "no key header, no key recorded"
    );
    assert_eq!(records[5].payment_id, Some(1), "the key header is recorded");
}

#[tokio::test]
async fn a_body_too_large_is_refused_before_it_is_read() {
    let p = processor(Config::default()).await;
    let huge = vec![b' '; bulwark_limits::MAX_PROCESSOR_BODY_BYTES + 1];
    let (status, answer) = send(&p.url(), &headers("1", "1"), huge).await;
    assert_eq!((status, answer["field"].clone()), (413, json!("body")));
    assert_eq!(outcomes(&p.records()), [Outcome::BadRequest]);
}

#[tokio::test]
async fn with_a_secret_every_request_needs_it() {
    let p = processor(Config {
        secret: Some("s3cret".into()),
        ..Config::default()
    })
    .await;
    let url = p.url();
    let body = || serde_json::to_vec(&payment(1, 1)).unwrap();
    let mut wrong = headers("1", "1");
    wrong.push(("Authorization", "Bearer s3crex".into()));
    let mut right = headers("1", "1");
    right.push(("Authorization", "Bearer s3cret".into()));

    assert_eq!(send(&url, &headers("1", "1"), body()).await.0, 401);
    assert_eq!(send(&url, &wrong, body()).await.0, 401);
    assert!(p.payment(1).is_none());
    let (status, answer) = send(&url, &right, body()).await;
    assert_eq!(
        (status, answer["status"].clone()),
        (200, json!("confirmed"))
    );
    assert_eq!(get(&url, "/v1/summary").await.0, 401);
    assert_eq!(get(&url, "/control").await.0, 401);
    assert_eq!(
        outcomes(&p.records()),
        [
            Outcome::Unauthorized,
            Outcome::Unauthorized,
            Outcome::Confirmed
        ]
    );
}

#[tokio::test]
async fn records_and_summary_read_back_over_http() {
    let p = processor(Config::default()).await;
    let url = p.url();
    deliver(&url, &payment(1, 2)).await;
    deliver(&url, &payment(1, 2)).await;
    deliver(&url, &payment(2, 1)).await;

    let (status, records) = get(&url, "/v1/records").await;
    assert_eq!(status, 200);
    let records: Vec<Record> = serde_json::from_value(records).unwrap();
    assert_eq!(records, p.records());
    assert_eq!(records[0].payment_id, Some(1));
    assert_eq!(records[2].term, Some(1));
    let (_, tail) = get(&url, "/v1/records?after=1&limit=1").await;
    assert_eq!(tail.as_array().unwrap().len(), 1);
    assert_eq!(tail[0]["seq"], 2);

    let (_, summary) = get(&url, "/v1/summary").await;
    assert_eq!(summary["highest_term"], "2");
    assert_eq!(summary["counts"]["duplicate_confirmed"], 1);
    assert_eq!(
        serde_json::from_value::<Summary>(summary).unwrap(),
        p.summary()
    );

    let (status, stored) = get(&url, "/v1/payments/1").await;
    assert_eq!(status, 200);
    assert_eq!(stored["status"], "confirmed");
    assert_eq!(
        (stored["executions"].clone(), stored["duplicates"].clone()),
        (json!(1), json!(1))
    );
    assert_eq!(get(&url, "/v1/payments/3").await.0, 404);
}

#[tokio::test]
async fn records_past_the_bound_drop_the_oldest_and_keep_counting() {
    let p = processor(Config {
        max_records: 3,
        ..Config::default()
    })
    .await;
    for id in 1..=5 {
        deliver(&p.url(), &payment(id, 1)).await;
    }
    let seqs: Vec<u64> = p.records().iter().map(|r| r.seq).collect();
    assert_eq!(seqs, [3, 4, 5]);
    let summary = p.summary();
    assert_eq!(
        (
            summary.deliveries,
            summary.records_kept,
            summary.records_dropped
        ),
        (5, 3, 2)
    );
    assert_eq!(summary.counts[&Outcome::Confirmed], 5);
    // The dedup table is not bounded by the records: an old key is still a duplicate.
    let (_, again) = deliver(&p.url(), &payment(1, 1)).await;
    assert_eq!(again["duplicate"], true);
}

#[tokio::test]
async fn the_knobs_read_and_change_over_http() {
    let p = processor(Config {
        secret: None,
        seed: 42,
        ..Config::default()
    })
    .await;
    let (status, knobs) = get(&p.url(), "/control").await;
    assert_eq!(status, 200);
    assert_eq!(
        (knobs["seed"].clone(), knobs["failure_rate"].clone()),
        (json!("42"), json!(0.0))
    );

    let (status, knobs) = post_control(
        &p.url(),
        json!({"refuse_rate": 0.25, "latency_ms": 1, "seed": 7}),
    )
    .await;
    assert_eq!(status, 200, "{knobs}");
    assert_eq!(p.config().refuse_rate, 0.25);
    assert_eq!(p.config().seed, 7);

    let (status, bad) = post_control(&p.url(), json!({"failure_rate": 2.0})).await;
    assert_eq!((status, bad["field"].clone()), (400, json!("failure_rate")));
    let (status, bad) = post_control(&p.url(), json!({"failure_rat": 0.5})).await;
    assert_eq!(status, 400, "{bad}");
    assert!(bad["error"].as_str().unwrap().contains("failure_rat"));
    assert_eq!(
        p.config().failure_rate,
        0.0,
        "a refused change changes nothing"
    );
}
