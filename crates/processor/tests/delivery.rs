//! The processor's promises to a relay: a key executes at most once, a stale term executes
//! nothing, refusals are a function of the key, and each failure knob fails the way it says.

mod common;

use bulwark_processor::{Config, Outage, Outcome, PaymentAnswer, REFUSE_REASON};
use common::{deliver, outcomes, payment, post_control, processor};
use serde_json::json;

#[tokio::test]
async fn a_key_is_executed_once_and_its_repeats_are_duplicates() {
    let p = processor(Config::default()).await;
    let (status, first) = deliver(&p.url(), &payment(123, 7)).await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["status"], "confirmed");
    assert_eq!(first["payment_id"], "123");
    assert_eq!(first["duplicate"], false);
    let (status, again) = deliver(&p.url(), &payment(123, 7)).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["duplicate"], true);
    assert_eq!(again["reference"], first["reference"]);

    assert_eq!(
        outcomes(&p.records()),
        [Outcome::Confirmed, Outcome::DuplicateConfirmed]
    );
    let summary = p.summary();
    assert_eq!((summary.executed, summary.executed_per_key_max), (1, 1));
    let stored = p.payment(123).expect("a stored outcome");
    assert_eq!((stored.executions, stored.duplicates), (1, 1));
    p.shutdown().await;
}

#[tokio::test]
async fn concurrent_deliveries_of_one_key_execute_it_once() {
    let p = processor(Config::default()).await;
    let url = p.url();
    let sends = (0..16).map(|_| {
        let url = url.clone();
        tokio::spawn(async move { deliver(&url, &payment(9, 1)).await })
    });
    let mut fresh = 0;
    for send in sends {
        let (status, body) = send.await.unwrap();
        assert_eq!(status, 200, "{body}");
        fresh += usize::from(body["duplicate"] == false);
    }
    assert_eq!(fresh, 1, "exactly one delivery made the payment");
    let summary = p.summary();
    assert_eq!((summary.executed, summary.executed_per_key_max), (1, 1));
    assert_eq!(summary.counts[&Outcome::DuplicateConfirmed], 15);
}

#[tokio::test]
async fn a_lower_term_is_fenced_off_and_never_executed_nor_deduplicated() {
    let p = processor(Config::default()).await;
    let url = p.url();
    assert_eq!(deliver(&url, &payment(1, 5)).await.0, 200);

    let (status, stale) = deliver(&url, &payment(2, 4)).await;
    assert_eq!(status, 409, "{stale}");
    assert_eq!(stale, json!({"status": "stale_term", "highest_term": "5"}));
    assert!(p.payment(2).is_none(), "a stale delivery executes nothing");
    // An executed key from a deposed leader is not answered as a duplicate either: the old
    // leader learns only that it is stale.
    assert_eq!(deliver(&url, &payment(1, 4)).await.0, 409);

    let (status, body) = deliver(&url, &payment(2, 5)).await;
    assert_eq!((status, body["duplicate"].clone()), (200, json!(false)));
    assert_eq!(deliver(&url, &payment(3, 9)).await.0, 200);
    assert_eq!(
        deliver(&url, &payment(4, 5)).await.0,
        409,
        "term 9 raised the fence"
    );

    assert_eq!(
        outcomes(&p.records()),
        [
            Outcome::Confirmed,
            Outcome::StaleTerm,
            Outcome::StaleTerm,
            Outcome::Confirmed,
            Outcome::Confirmed,
            Outcome::StaleTerm,
        ]
    );
    let summary = p.summary();
    assert_eq!((summary.highest_term, summary.executed), (9, 3));
}

/// The answers of every key of `ids`, sent in the given order.
async fn refusals(seed: u64, ids: impl Iterator<Item = u128>) -> Vec<(u128, u16)> {
    let p = processor(Config {
        refuse_rate: 0.5,
        seed,
        ..Config::default()
    })
    .await;
    let mut answers = Vec::new();
    for id in ids {
        let (status, body) = deliver(&p.url(), &payment(id, 1)).await;
        if status == 422 {
            assert_eq!(body["reason"], REFUSE_REASON);
        }
        let (again, repeat) = deliver(&p.url(), &payment(id, 1)).await;
        assert_eq!((again, repeat["duplicate"].clone()), (status, json!(true)));
        answers.push((id, status));
    }
    let summary = p.summary();
    let confirmed = answers.iter().filter(|(_, s)| *s == 200).count() as u64;
    assert_eq!(summary.executed, confirmed, "a refusal executes nothing");
    answers.sort();
    answers
}

#[tokio::test]
async fn refusals_are_decided_by_key_and_seed_not_by_order() {
    let forward = refusals(7, 1..=40).await;
    let backward = refusals(7, (1..=40).rev()).await;
    assert_eq!(forward, backward);
    let refused = forward.iter().filter(|(_, s)| *s == 422).count();
    assert!(
        (5..=35).contains(&refused),
        "{refused} of 40 refused at 0.5"
    );
    assert_ne!(forward, refusals(8, 1..=40).await, "the seed decides too");
}

#[tokio::test]
async fn failure_rate_one_answers_503_and_executes_nothing() {
    let p = processor(Config {
        failure_rate: 1.0,
        ..Config::default()
    })
    .await;
    for _ in 0..3 {
        let (status, body) = deliver(&p.url(), &payment(5, 1)).await;
        assert_eq!((status, body), (503, json!({"status": "unavailable"})));
    }
    assert!(p.payment(5).is_none());
    assert_eq!(p.summary().executed, 0);
    p.update(|c| c.failure_rate = 0.0);
    let (status, body) = deliver(&p.url(), &payment(5, 1)).await;
    assert_eq!((status, body["duplicate"].clone()), (200, json!(false)));
    assert_eq!(
        outcomes(&p.records()),
        [
            Outcome::Failed,
            Outcome::Failed,
            Outcome::Failed,
            Outcome::Confirmed
        ]
    );
}

#[tokio::test]
async fn a_lost_answer_was_executed_and_its_retry_is_a_duplicate() {
    let p = processor(Config {
        lost_answer_rate: 1.0,
        ..Config::default()
    })
    .await;
    let (status, body) = deliver(&p.url(), &payment(6, 1)).await;
    assert_eq!((status, body), (503, json!({"status": "unavailable"})));
    assert_eq!(p.payment(6).map(|s| s.executions), Some(1));

    let (status, off) = post_control(&p.url(), json!({"lost_answer_rate": 0.0})).await;
    assert_eq!(status, 200, "{off}");
    let (status, retry) = deliver(&p.url(), &payment(6, 1)).await;
    assert_eq!((status, retry["duplicate"].clone()), (200, json!(true)));
    assert_eq!(
        outcomes(&p.records()),
        [Outcome::LostAnswer, Outcome::DuplicateConfirmed]
    );
    assert_eq!(p.summary().executed_per_key_max, 1);
}

#[tokio::test]
async fn a_slow_answer_was_executed_before_the_sender_gave_up() {
    let p = processor(Config {
        slow_rate: 1.0,
        slow_ms: 60_000,
        ..Config::default()
    })
    .await;
    let req = payment(11, 1);
    let gave_up = reqwest::Client::new()
        .post(format!("{}/v1/payments", p.url()))
        .header("Idempotency-Key", "11")
        .header("Bulwark-Term", "1")
        .json(&req)
        .timeout(std::time::Duration::from_millis(200))
        .send()
        .await;
    assert!(gave_up.is_err(), "the answer is held back for slow_ms");
    assert_eq!(outcomes(&p.records()), [Outcome::Slow]);
    assert_eq!(p.payment(11).map(|s| s.executions), Some(1));
    // A repeat is answered from the stored outcome at once: slowness is of executions only.
    let (status, retry) = deliver(&p.url(), &req).await;
    assert_eq!((status, retry["duplicate"].clone()), (200, json!(true)));
    // Dropped, not shut down: a graceful stop would wait out the held answer's grace.
    drop(p);
}

#[tokio::test]
async fn while_down_nothing_is_executed() {
    let p = processor(Config::default()).await;
    p.set_down(true);
    let (status, body) = deliver(&p.url(), &payment(1, 3)).await;
    assert_eq!((status, body), (503, json!({"status": "unavailable"})));
    assert!(p.payment(1).is_none());
    assert_eq!(
        p.summary().highest_term,
        0,
        "a down processor accepts no term"
    );

    let (status, control) = post_control(&p.url(), json!({"down": false})).await;
    assert_eq!((status, control["down"].clone()), (200, json!(false)));
    assert_eq!(deliver(&p.url(), &payment(1, 3)).await.0, 200);

    // An outage window from the start, set at runtime the way --outage sets it at start.
    let (status, _) = post_control(&p.url(), json!({"outage": ["0s+1h"]})).await;
    assert_eq!(status, 200);
    assert_eq!(deliver(&p.url(), &payment(2, 3)).await.0, 503);
    assert_eq!(
        outcomes(&p.records()),
        [Outcome::Down, Outcome::Confirmed, Outcome::Down]
    );
    assert_eq!(p.summary().executed, 1);
}

#[tokio::test]
async fn an_outage_window_is_relative_to_the_start() {
    let window: Outage = "30s+120s".parse().unwrap();
    let seconds = std::time::Duration::from_secs;
    assert!(!window.contains(seconds(29)));
    assert!(window.contains(seconds(30)) && window.contains(seconds(149)));
    assert!(!window.contains(seconds(150)));
    assert!("1500ms+2m".parse::<Outage>().is_ok());
    assert!("30s".parse::<Outage>().is_err());
    assert!("30x+1s".parse::<Outage>().is_err());

    let p = processor(Config {
        outages: vec!["0ms+1h".parse().unwrap()],
        ..Config::default()
    })
    .await;
    assert_eq!(deliver(&p.url(), &payment(1, 1)).await.0, 503);
    p.update(|c| c.outages.clear());
    assert_eq!(deliver(&p.url(), &payment(1, 1)).await.0, 200);
}

#[tokio::test]
async fn answers_read_back_into_the_shared_wire_type() {
    let p = processor(Config::default()).await;
    let req = payment(77, 2);
    let response = reqwest::Client::new()
        .post(format!("{}/v1/payments", p.url()))
        .header("Idempotency-Key", "77")
        .header("Bulwark-Term", "2")
        .json(&req)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let body = response.bytes().await.unwrap();
    let answer = PaymentAnswer::from_http(status, &body).unwrap();
    assert_eq!(
        answer,
        PaymentAnswer::Confirmed {
            reference: "pay-000001".into(),
            duplicate: false
        }
    );
    assert!(PaymentAnswer::from_http(400, b"{}").is_err());
    assert!(
        PaymentAnswer::from_http(200, br#"{"status":"stale_term","highest_term":"3"}"#).is_err()
    );
    assert_eq!(
        PaymentAnswer::from_http(503, b"<html>"),
        Ok(PaymentAnswer::Unavailable)
    );
}
