//! The chaos client's mapping of answers onto `ok` / `fail` / `info`: the checker trusts a `fail`
//! to mean "certainly not applied", so the test is only as honest as this mapping. Every status and
//! error word the API gives is pinned here, and so are the answers that never come: a connection
//! refused before the request was sent, and one lost after it was sent, on real sockets.

use std::net::SocketAddr;
use std::time::Duration;

use bulwark_chaos::client::{phase_of_answer, phase_of_lost_answer, Client, DEFINITE_REFUSALS};
use bulwark_chaos::{Phase, Transfer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Every answer the API gives that is not a success, with what it must mean for a write. A read
/// that did not succeed is always `fail` (it changed nothing).
const WRITE_ANSWERS: [(u16, &str, Phase); 22] = [
    // Judged before the log: the request's own fault, or refused at the door.
    (400, "malformed_json", Phase::Fail),
    (400, "invalid_field", Phase::Fail),
    (400, "invalid_query", Phase::Fail),
    (401, "unauthorized", Phase::Fail),
    (403, "forbidden", Phase::Fail),
    (404, "not_found", Phase::Fail),
    (409, "membership_refused", Phase::Fail),
    (413, "body_too_large", Phase::Fail),
    (415, "unsupported_media_type", Phase::Fail),
    (429, "rate_limited", Phase::Fail),
    // Refusals that prove the write was never applied.
    (503, "no_leader", Phase::Fail),
    (503, "not_leader", Phase::Fail),
    (503, "write_dropped", Phase::Fail),
    (503, "overloaded", Phase::Fail),
    (503, "starting", Phase::Fail),
    (507, "disk_full", Phase::Fail),
    // Everything else may have been applied.
    (503, "outcome_unknown", Phase::Info),
    (503, "unavailable", Phase::Info),
    (504, "ack_all_timeout", Phase::Info),
    (500, "storage_error", Phase::Info),
    (500, "internal", Phase::Info),
    (502, "", Phase::Info),
];

#[test]
fn every_status_and_word_maps_to_its_phase() {
    for (status, word, want) in WRITE_ANSWERS {
        assert_eq!(
            phase_of_answer(status, word, true),
            want,
            "a write answered {status} {word:?}"
        );
        assert_eq!(
            phase_of_answer(status, word, false),
            Phase::Fail,
            "a read answered {status} {word:?}"
        );
    }
    for status in [200, 201, 204, 299] {
        assert_eq!(phase_of_answer(status, "", true), Phase::Ok, "{status}");
        assert_eq!(phase_of_answer(status, "", false), Phase::Ok, "{status}");
    }
    // A definite word under a 5xx it was never given is still definite, and an indefinite word
    // never becomes definite by its status.
    for word in DEFINITE_REFUSALS {
        assert_eq!(phase_of_answer(500, word, true), Phase::Fail, "{word}");
    }
    assert_eq!(phase_of_answer(507, "", true), Phase::Info);
    assert_eq!(phase_of_answer(503, "no_leader_", true), Phase::Info);
}

#[test]
fn an_answer_that_never_came_is_fail_only_if_nothing_was_sent() {
    assert_eq!(phase_of_lost_answer(true, true), Phase::Fail);
    assert_eq!(phase_of_lost_answer(false, true), Phase::Info);
    assert_eq!(phase_of_lost_answer(true, false), Phase::Fail);
    assert_eq!(phase_of_lost_answer(false, false), Phase::Fail);
}

fn client() -> Client {
    Client::new(Duration::from_secs(5), "test-token")
}

fn one_transfer() -> Vec<Transfer> {
    vec![Transfer {
        id: 1,
        debit: 1,
        credit: 2,
        amount: 1,
        ledger: 1,
        ..Transfer::default()
    }]
}

/// An address with nothing listening on it (bound once by the OS, then released).
fn closed_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// A one-connection server: reads the whole request head (so the request was sent), then writes
/// `reply` and closes.
async fn server(reply: &'static str) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = socket.read(&mut buf).await.unwrap();
            assert!(n > 0, "the client closed before sending its request");
            seen.extend_from_slice(&buf[..n]);
        }
        socket.write_all(reply.as_bytes()).await.unwrap();
        socket.shutdown().await.unwrap();
    });
    addr
}

#[tokio::test]
async fn a_refused_connection_is_fail_and_a_lost_one_is_info() {
    let c = client();
    // Nothing listening: the write never left the client.
    let answer = c.transfers(closed_addr(), &one_transfer()).await;
    assert_eq!(answer.phase, Phase::Fail, "{answer:?}");
    assert_eq!(answer.status, None);
    assert_eq!(answer.error.as_deref(), Some("connection refused"));

    // The request was read, then the connection dropped without an answer: it may be applied.
    let addr = server("").await;
    let answer = c.transfers(addr, &one_transfer()).await;
    assert_eq!(answer.phase, Phase::Info, "{answer:?}");
    assert_eq!(answer.status, None);
    let addr = server("").await;
    assert_eq!(c.get(addr, "/v1/accounts/1").await.phase, Phase::Fail);

    // An answer cut off in its body: the status came, the outcome did not.
    let cut =
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{\"res";
    let answer = c.transfers(server(cut).await, &one_transfer()).await;
    assert_eq!(answer.phase, Phase::Info, "{answer:?}");
    assert_eq!(answer.status, Some(200));
    assert!(answer.error.unwrap().starts_with("answer cut off"));
    assert_eq!(
        c.get(server(cut).await, "/v1/accounts/1").await.phase,
        Phase::Fail
    );
}

fn reply(status: &str, body: &str) -> &'static str {
    Box::leak(
        format!(
            "HTTP/1.1 {status}\r\ncontent-type: application/json\r\nbulwark-commit-index: 42\r\n\
             content-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        )
        .into_boxed_str(),
    )
}

#[tokio::test]
async fn real_answers_are_read_with_their_word_and_index() {
    let c = client();
    let cases = [
        ("503 Service Unavailable", "no_leader", Phase::Fail),
        ("503 Service Unavailable", "outcome_unknown", Phase::Info),
        ("507 Insufficient Storage", "disk_full", Phase::Fail),
        ("504 Gateway Timeout", "ack_all_timeout", Phase::Info),
        ("400 Bad Request", "invalid_field", Phase::Fail),
    ];
    for (status, word, want) in cases {
        let body = format!("{{\"error\":\"{word}\",\"message\":\"why\"}}");
        let addr = server(reply(status, &body)).await;
        let answer = c.transfers(addr, &one_transfer()).await;
        assert_eq!(answer.phase, want, "{status} {word}: {answer:?}");
        let error = answer.error.unwrap();
        assert!(error.contains(word) && error.contains("why"), "{error}");
    }
    let ok = r#"{"results":[{"index":0,"result":"ok"}]}"#;
    let answer = c
        .transfers(server(reply("200 OK", ok)).await, &one_transfer())
        .await;
    assert_eq!(answer.phase, Phase::Ok, "{answer:?}");
    assert_eq!(answer.commit_index, Some(42));
    assert_eq!(answer.error, None);
}
