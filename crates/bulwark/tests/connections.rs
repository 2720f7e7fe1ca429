//! Connection hygiene of the client API, on the real binary: a slowloris header and an idle
//! keep-alive connection are closed within their timeouts, a connection past the limit is
//! answered 503 with `Retry-After`, and a node out of file descriptors for clients keeps its log
//! and store working, serves again once sockets close, and keeps every acknowledged write.
//!
//! The timeouts and the connection limit are lowered for the test by the node's
//! `BULWARK_TEST_*` variables (which can only lower them), so that each test takes seconds.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::Node;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Time allowed beyond a timeout for the node to notice and close (scheduling, a busy CI box).
const MARGIN: Duration = Duration::from_secs(3);

async fn node_with_env(env: &[(&str, &str)]) -> (Node, tempfile::TempDir) {
    let data = tempfile::tempdir().unwrap();
    let mut node = Node::unstarted(data.path().join("d"), &[]);
    for (key, value) in env {
        node.env.push((key.to_string(), value.to_string()));
    }
    node.restart().await;
    (node, data)
}

fn addr(node: &Node) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], node.port()))
}

/// Reads until the peer closes (or fails); how long that took.
async fn until_closed(stream: &mut TcpStream, limit: Duration) -> Option<Duration> {
    let start = Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(limit, stream.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(start.elapsed()),
            Ok(Ok(_)) => {}
        }
    }
}

/// One whole HTTP/1.1 answer (head and a `content-length` body) from `stream`.
async fn read_answer(stream: &mut TcpStream) -> String {
    let mut bytes = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&bytes).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            let length = text[..end]
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse::<usize>().unwrap())
                })
                .unwrap_or(0);
            if bytes.len() >= end + 4 + length {
                return text;
            }
        }
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf))
            .await
            .expect("an answer in time")
            .expect("read");
        assert!(
            n > 0,
            "closed before a whole answer: {:?}",
            String::from_utf8_lossy(&bytes)
        );
        bytes.extend_from_slice(&buf[..n]);
    }
}

const GET_LIVE: &[u8] = b"GET /health/live HTTP/1.1\r\nhost: bulwark\r\n\r\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slowloris_header_is_closed_within_the_header_timeout() {
    let header = Duration::from_millis(1500);
    let (mut node, _data) =
        node_with_env(&[("BULWARK_TEST_CLIENT_HEADER_TIMEOUT_MS", "1500")]).await;
    let mut slow = TcpStream::connect(addr(&node)).await.unwrap();
    slow.write_all(b"GET /health/live HTTP/1.1\r\nhost: b\r\n")
        .await
        .unwrap();
    let start = Instant::now();
    // One header byte every 200 ms: always active, never a whole header.
    let closed = loop {
        if slow.write_all(b"x").await.is_err() {
            break start.elapsed();
        }
        if let Ok(Some(took)) = tokio::time::timeout(
            Duration::from_millis(200),
            until_closed(&mut slow, Duration::from_secs(60)),
        )
        .await
        {
            break took.max(start.elapsed());
        }
        assert!(
            start.elapsed() < header + MARGIN,
            "a trickled header was still open after {:?}",
            start.elapsed()
        );
    };
    assert!(closed < header + MARGIN, "closed after {closed:?}");
    assert!(node.http.live().await, "the node serves others meanwhile");
    node.assert_running();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_keep_alive_connection_is_closed_within_the_idle_timeout() {
    // The header timeout stays at its production value (10 s), longer than the idle one.
    let idle = Duration::from_millis(1500);
    let (mut node, _data) = node_with_env(&[("BULWARK_TEST_CLIENT_IDLE_TIMEOUT_MS", "1500")]).await;
    let mut stream = TcpStream::connect(addr(&node)).await.unwrap();
    stream.write_all(GET_LIVE).await.unwrap();
    let answer = read_answer(&mut stream).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let closed = until_closed(&mut stream, idle + MARGIN)
        .await
        .expect("the idle connection was closed");
    assert!(closed < idle + MARGIN, "closed after {closed:?}");
    node.assert_running();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_connection_limit_a_new_connection_is_answered_503() {
    let (mut node, _data) = node_with_env(&[("BULWARK_TEST_MAX_CLIENT_CONNECTIONS", "4")]).await;
    // Four kept-alive connections, each answered once: surely open at the node.
    let mut held = Vec::new();
    for _ in 0..4 {
        let mut stream = TcpStream::connect(addr(&node)).await.unwrap();
        stream.write_all(GET_LIVE).await.unwrap();
        assert!(read_answer(&mut stream).await.starts_with("HTTP/1.1 200"));
        held.push(stream);
    }
    let mut fifth = TcpStream::connect(addr(&node)).await.unwrap();
    fifth.write_all(GET_LIVE).await.unwrap();
    let answer = read_answer(&mut fifth).await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    let lower = answer.to_ascii_lowercase();
    assert!(lower.contains("\r\nretry-after: 1\r\n"), "{answer}");
    let body: serde_json::Value =
        serde_json::from_str(&answer[answer.find("\r\n\r\n").unwrap() + 4..]).unwrap();
    assert_eq!(body["error"], "overloaded", "{answer}");
    assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()));
    assert!(until_closed(&mut fifth, Duration::from_secs(5))
        .await
        .is_some());
    // One closes: a new connection is served again.
    drop(held.pop());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut stream = TcpStream::connect(addr(&node)).await.unwrap();
        stream.write_all(GET_LIVE).await.unwrap();
        if read_answer(&mut stream).await.starts_with("HTTP/1.1 200") {
            break;
        }
        assert!(Instant::now() < deadline, "never served again");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    node.assert_running();
}
