//! What the client's tests share: real `bulwark start` processes (through `bulwark-harness`),
//! accounts to move money between, and an HTTP/1.1 proxy that can lose an answer.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bulwark_client::{AccountId, Client, NewAccount};
use bulwark_harness::{free_members, LocalCluster, StatusClient};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The `bulwark` binary: `$BULWARK_BIN`, else the one built into this target directory
/// (`cargo build -p bulwark`; a test binary of this crate cannot ask cargo for another
/// package's binary).
pub fn bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("BULWARK_BIN") {
        return PathBuf::from(bin);
    }
    let exe = std::env::current_exe().expect("the test binary's path");
    let bin = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>/deps")
        .join("bulwark");
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build -p bulwark` first (or set BULWARK_BIN)",
        bin.display()
    );
    bin
}

/// A running cluster of `n` members, each answering with the cluster's token and one leader
/// agreed on.
pub async fn cluster(n: u64) -> (LocalCluster, StatusClient) {
    let members = free_members(n).expect("free ports");
    let mut cluster = LocalCluster::new(&bin(), None, members, &[])
        .expect("a local cluster")
        .killed_with_parent();
    cluster.spawn_all().expect("the nodes start");
    let status = StatusClient::new(Duration::from_secs(2), &cluster.token);
    cluster
        .wait_in_sync(&status, 0, Duration::from_secs(60))
        .await
        .expect("the cluster elects a leader");
    (cluster, status)
}

/// Every member's base URL.
pub fn bases(cluster: &LocalCluster) -> Vec<String> {
    cluster
        .members
        .iter()
        .map(|m| format!("http://{}", m.http))
        .collect()
}

/// Accounts 1 and 2 on ledger 1.
pub async fn two_accounts(client: &Client) {
    let accounts = [
        NewAccount::new(AccountId(1), 1, 1),
        NewAccount::new(AccountId(2), 1, 1),
    ];
    let created = client.create_accounts(&accounts).await.expect("accounts");
    assert!(created.all_ok(), "{created:?}");
}

/// A proxy in front of one node that relays whole HTTP/1.1 exchanges, except the first
/// `lose` answers to a `POST /v1/transfers`: those it reads from the node in full (the node
/// applied the write and answered) and then closes the client's connection without a byte.
pub struct LossyProxy {
    pub addr: std::net::SocketAddr,
    /// Answers lost so far.
    pub lost: Arc<AtomicUsize>,
}

impl LossyProxy {
    pub async fn start(upstream: std::net::SocketAddr, lose: usize) -> LossyProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("an address");
        let to_lose = Arc::new(AtomicUsize::new(lose));
        let lost = Arc::new(AtomicUsize::new(0));
        let counted = lost.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let (to_lose, lost) = (to_lose.clone(), counted.clone());
                tokio::spawn(relay(client, upstream, to_lose, lost));
            }
        });
        LossyProxy { addr, lost }
    }
}

async fn relay(
    mut client: TcpStream,
    upstream: std::net::SocketAddr,
    to_lose: Arc<AtomicUsize>,
    lost: Arc<AtomicUsize>,
) {
    let Ok(mut node) = TcpStream::connect(upstream).await else {
        return;
    };
    loop {
        let Some(request) = read_message(&mut client).await else {
            return;
        };
        let transfer = request.starts_with(b"POST /v1/transfers ");
        if node.write_all(&request).await.is_err() {
            return;
        }
        let Some(answer) = read_message(&mut node).await else {
            return;
        };
        let lose = transfer
            && to_lose
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok();
        if lose {
            lost.fetch_add(1, Ordering::SeqCst);
            return; // both connections dropped: the answer never reaches the client
        }
        if client.write_all(&answer).await.is_err() {
            return;
        }
    }
}

/// One HTTP/1.1 message with a `content-length` body (every request and answer of the API),
/// head and body; `None` at the end of the stream.
async fn read_message(stream: &mut (impl AsyncRead + Unpin)) -> Option<Vec<u8>> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    assert!(
        !head.contains("transfer-encoding: chunked"),
        "the proxy relays content-length bodies only"
    );
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map_or(0, |v| v.trim().parse().expect("a content-length"));
    while buf.len() < head_end + length {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Some(buf)
}

/// A "node" that takes connections and closes them at once, counting them: a node whose
/// process is wedged or dying.
pub async fn dead_node() -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("an address");
    let connections = Arc::new(AtomicUsize::new(0));
    let counted = connections.clone();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
            drop(socket);
        }
    });
    (addr, connections)
}
