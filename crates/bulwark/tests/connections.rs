//! Connection hygiene of the client API, on the real binary: a slowloris header and an idle
//! keep-alive connection are closed within their timeouts, a connection past the limit is
//! answered 503 with `Retry-After`, and a node out of file descriptors for clients keeps its log
//! and store working, serves again once sockets close, and keeps every acknowledged write.
//!
//! The timeouts and the connection limit are lowered for the test by the node's
//! `BULWARK_TEST_*` variables (which can only lower them), so that each test takes seconds.

mod common;

use common::DecField;

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

/// The node's file-descriptor limit in the exhaustion test: client connections get what the
/// reserve leaves (`FD_LIMIT - FD_RESERVE - MAX_CLIENT_REJECTIONS`).
const FD_LIMIT: usize = 700;
/// Sockets the test opens at once: more than the node has descriptors.
const FLOOD: usize = 900;

/// Raises this test process's own soft descriptor limit to its hard one (it opens `FLOOD`).
fn raise_own_fd_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct we own.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0);
        limit.rlim_cur = limit.rlim_max;
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &limit), 0);
    }
    assert!(
        limit.rlim_cur as usize > FLOOD + 200,
        "this test needs a descriptor limit above {}",
        FLOOD + 200
    );
}

/// `bulwark` behind `ulimit -n FD_LIMIT` (soft and hard: the node cannot raise it).
fn low_fd_wrapper(dir: &std::path::Path) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let script = dir.join("bulwark-low-fds");
    let text = format!(
        "#!/bin/sh\nulimit -n {FD_LIMIT} || exit 97\nexec '{}' \"$@\"\n",
        common::bin()
    );
    std::fs::write(&script, text).unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    script
}

/// Writes transfers of 1 from account 1 to 2 one after another on one kept-alive connection
/// until `stop`; returns the ids acknowledged.
fn spawn_writer(
    base: String,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    acked: std::sync::Arc<std::sync::Mutex<Vec<u64>>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let client = reqwest::Client::builder()
            .default_headers(bulwark_harness::bearer_headers(&common::test_token().1))
            .no_proxy()
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap();
        let mut id = 1000u64;
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            id += 1;
            let body = serde_json::json!([{"id": id, "debit_account_id": 1,
                "credit_account_id": 2, "amount": 1, "ledger": 1, "code": 1}]);
            let answer = client
                .post(format!("{base}/v1/transfers"))
                .json(&body)
                .send()
                .await;
            let Ok(answer) = answer else {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            let ok = answer.status().is_success();
            let json: serde_json::Value = answer.json().await.unwrap_or_default();
            if ok && json["results"][0]["result"] == "ok" {
                acked.lock().unwrap().push(id);
            }
        }
    })
}

/// Opens up to `FLOOD` connections to `addr` and holds them (each connect given a second).
async fn flood(addr: SocketAddr) -> Vec<TcpStream> {
    let mut held = Vec::new();
    for _ in 0..FLOOD {
        let connect = TcpStream::connect(addr);
        if let Ok(Ok(stream)) = tokio::time::timeout(Duration::from_secs(1), connect).await {
            held.push(stream);
        }
    }
    held
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_descriptors_for_clients_the_node_keeps_its_log_and_serves_again() {
    raise_own_fd_limit();
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let listen = SocketAddr::from(([127, 0, 0, 1], port));
    let base = format!("http://{listen}");
    // Small segments and checkpoints: the log rolls over and the store checkpoints (new files)
    // while the sockets are held.
    let args = [
        "--listen",
        &listen.to_string(),
        "--segment-bytes",
        "65536",
        "--checkpoint-transfers",
        "300",
    ];
    let mut node = bulwark_harness::NodeProcess::new(
        &low_fd_wrapper(dir.path()),
        dir.path().join("d"),
        args.iter().map(|a| a.to_string()).collect(),
        bulwark_harness::Logs::per_run().unwrap(),
    )
    .with_admin_token(&common::test_token().0)
    .with_env("NO_COLOR", "1")
    .with_env("RUST_LOG", "info");
    node.start_live(listen, Duration::from_secs(60))
        .await
        .unwrap();
    let expected = FD_LIMIT - bulwark_limits::FD_RESERVE - bulwark_limits::MAX_CLIENT_REJECTIONS;
    let log = node.last_log();
    assert!(
        log.contains(&format!("max_connections={expected}")),
        "{log}"
    );
    let status =
        bulwark_harness::StatusClient::new(Duration::from_secs(5), &common::test_token().1);
    assert!(
        status
            .wait_authorized(listen, Duration::from_secs(30))
            .await
    );
    let client = reqwest::Client::builder()
        .default_headers(bulwark_harness::bearer_headers(&common::test_token().1))
        .no_proxy()
        .build()
        .unwrap();
    let accounts = serde_json::json!([{"id": 1, "ledger": 1, "code": 1},
        {"id": 2, "ledger": 1, "code": 1}]);
    let created = client
        .post(format!("{base}/v1/accounts"))
        .json(&accounts)
        .send()
        .await;
    assert!(created.unwrap().status().is_success());

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let acked = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let writer = spawn_writer(base.clone(), stop.clone(), acked.clone());
    while acked.lock().unwrap().len() < 50 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(node.exited().is_none(), "{}", node.last_log());
    }
    let segments_before = common::wal_segments(&dir.path().join("d").join("raft")).len();
    let held = flood(listen).await;
    let acked_before = acked.lock().unwrap().len();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let acked_during = acked.lock().unwrap().len() - acked_before;
    assert!(
        node.exited().is_none(),
        "the node stopped:\n{}",
        node.last_log()
    );
    assert!(held.len() > expected, "only {} sockets opened", held.len());
    // The writer's connection was open before the flood: its writes went on, and the log
    // created new segments meanwhile (descriptors from the reserve).
    assert!(
        acked_during > 0,
        "no write acknowledged while the sockets were held"
    );
    drop(held);

    // Served again once the sockets are gone: a fresh client gets through.
    let deadline = Instant::now() + Duration::from_secs(20);
    let fresh = reqwest::Client::builder()
        .default_headers(bulwark_harness::bearer_headers(&common::test_token().1))
        .no_proxy()
        .build()
        .unwrap();
    while !matches!(fresh.get(format!("{base}/health/live")).send().await, Ok(r) if r.status().is_success())
    {
        assert!(
            Instant::now() < deadline,
            "not served again:\n{}",
            node.last_log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.await.unwrap();
    let segments_after = common::wal_segments(&dir.path().join("d").join("raft")).len();
    let acked = acked.lock().unwrap().clone();
    for id in &acked {
        let answer = fresh
            .get(format!("{base}/v1/transfers/{id}"))
            .send()
            .await
            .unwrap();
        assert_eq!(
            answer.status(),
            200,
            "acknowledged transfer {id} is missing"
        );
    }
    let account: serde_json::Value = fresh
        .get(format!("{base}/v1/accounts/2"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(account["credits_posted"].dec(), Some(acked.len() as u64));
    assert!(
        node.exited().is_none(),
        "the node stopped:\n{}",
        node.last_log()
    );
    eprintln!(
        "{} writes acknowledged ({acked_during} while {FLOOD} sockets were opened), WAL \
         segments {segments_before} -> {segments_after}",
        acked.len()
    );
    node.terminate(Duration::from_secs(30));
}
