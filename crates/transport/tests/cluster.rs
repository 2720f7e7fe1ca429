//! Real transports on 127.0.0.1: delivery, reconnects, bounded queues, refused strangers (plain
//! TCP, another CA, a certificate of another node) and corrupt frames.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use bulwark_tls::PeerTls;
use bulwark_transport::{
    encode_frame, Hello, HostPort, NodeId, TcpTransport, Transport, TransportOptions,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

const CLUSTER: u64 = 0xB0_1A_4C;
/// Generous bound for anything to happen; never a performance assertion.
const PATIENCE: Duration = Duration::from_secs(10);

type Inbox = mpsc::Receiver<(NodeId, Vec<u8>)>;

fn opts() -> TransportOptions {
    TransportOptions {
        backoff_min: Duration::from_millis(10),
        backoff_max: Duration::from_millis(200),
        ..TransportOptions::default()
    }
}

fn any_port() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

/// Node `id`'s certificate, freshly issued by `ca`'s CA for `cluster` (one CA per name, made on
/// first use): the CA named after the cluster is the cluster's own, any other is a stranger's.
fn tls_of(ca: &str, cluster: u64, id: u64) -> PeerTls {
    static ROOT: OnceLock<tempfile::TempDir> = OnceLock::new();
    static ISSUED: AtomicU64 = AtomicU64::new(0);
    let root = ROOT.get_or_init(|| tempfile::tempdir().unwrap()).path();
    let out = root.join(format!("{}", ISSUED.fetch_add(1, Ordering::Relaxed)));
    bulwark_tls::provision_node(&root.join(ca), cluster, NodeId(id), &out).unwrap();
    PeerTls::load(&out, cluster, NodeId(id)).unwrap()
}

fn tls(cluster: u64, id: u64) -> PeerTls {
    tls_of(&format!("ca-{cluster:x}"), cluster, id)
}

async fn start(
    id: u64,
    cluster: u64,
    listen: SocketAddr,
    options: TransportOptions,
) -> (TcpTransport, Inbox) {
    let (tx, rx) = mpsc::channel(1024);
    let t = TcpTransport::start(NodeId(id), cluster, listen, tx, tls(cluster, id), options)
        .await
        .expect("start transport");
    (t, rx)
}

/// A hand-driven TLS connection to node `to` at `addr`, with `tls`'s certificate.
async fn dial_tls(
    addr: SocketAddr,
    tls: &PeerTls,
    to: u64,
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    TlsConnector::from(tls.client.clone())
        .connect(tls.server_name(NodeId(to)), tcp)
        .await
}

/// An address with nothing listening on it (bound once by the OS, then released).
fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

async fn recv(inbox: &mut Inbox) -> (NodeId, Vec<u8>) {
    tokio::time::timeout(PATIENCE, inbox.recv())
        .await
        .expect("timed out waiting for a frame")
        .expect("inbox closed")
}

/// Polls `cond` until it holds, failing after `PATIENCE`.
async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits until the acceptor closes a connection (EOF, reset or a TLS alert); it must never send
/// data on it.
async fn wait_closed(stream: &mut (impl AsyncRead + Unpin)) {
    let mut buf = [0u8; 64];
    match tokio::time::timeout(PATIENCE, stream.read(&mut buf)).await {
        Ok(Ok(0)) | Ok(Err(_)) => {}
        Ok(Ok(_)) => panic!("the acceptor must never write"),
        Err(_) => panic!("the acceptor did not close the connection"),
    }
}

fn msg(from: u64, seq: u32) -> Vec<u8> {
    let mut m = from.to_le_bytes().to_vec();
    m.extend_from_slice(&seq.to_le_bytes());
    m.resize(12 + (seq as usize % 300), 0xA5);
    m
}

fn seq_of(payload: &[u8]) -> u32 {
    u32::from_le_bytes(payload[8..12].try_into().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_deliver_all_to_all_in_order() {
    const N: u32 = 500;
    let mut nodes = Vec::new();
    for id in 1..=3 {
        nodes.push(start(id, CLUSTER, any_port(), opts()).await);
    }
    let members: Vec<(NodeId, HostPort)> = nodes
        .iter()
        .enumerate()
        .map(|(i, (t, _))| (NodeId(i as u64 + 1), t.local_addr().into()))
        .collect();
    for (t, _) in &nodes {
        // Listing ourselves is allowed and ignored.
        t.set_peers(&members);
        assert_eq!(t.stats().len(), 2);
    }
    for seq in 0..N {
        for (i, (t, _)) in nodes.iter().enumerate() {
            let me = i as u64 + 1;
            for to in (1..=3).filter(|&to| to != me) {
                t.send(NodeId(to), msg(me, seq));
            }
        }
        if seq % 100 == 0 {
            tokio::task::yield_now().await;
        }
    }
    for (i, (_, inbox)) in nodes.iter_mut().enumerate() {
        let me = i as u64 + 1;
        let mut next: HashMap<NodeId, u32> = HashMap::new();
        for _ in 0..2 * N {
            let (from, payload) = recv(inbox).await;
            assert_ne!(from, NodeId(me));
            assert_eq!(
                u64::from_le_bytes(payload[..8].try_into().unwrap()),
                from.0,
                "sender id in payload"
            );
            let expected = next.entry(from).or_insert(0);
            assert_eq!(
                seq_of(&payload),
                *expected,
                "node {me}: frames from {from} out of order"
            );
            assert_eq!(payload, msg(from.0, *expected));
            *expected += 1;
        }
        assert_eq!(next.values().copied().collect::<Vec<_>>(), vec![N, N]);
    }
    for (t, _) in &nodes {
        for s in t.stats() {
            assert_eq!(
                (s.frames_sent, s.dropped, s.lost),
                (u64::from(N), 0, 0),
                "{s:?}"
            );
            assert!(s.connected);
        }
    }
    for (t, _) in nodes {
        t.shutdown().await;
    }
}

/// A peer given by DNS name (as a StatefulSet pod's stable name is) is resolved at each dial: a
/// down peer's name is looked up again until it answers, and a name that does not resolve is a
/// connect failure that says so, retried like any other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_addressed_by_name_is_resolved_at_each_dial() {
    let (a, _a_inbox) = start(1, CLUSTER, any_port(), opts()).await;
    let b_addr = free_addr();
    let by_name: HostPort = format!("localhost:{}", b_addr.port()).parse().unwrap();
    let nowhere: HostPort = "no-such-member.invalid:7170".parse().unwrap();
    a.set_peers(&[(NodeId(2), by_name.clone()), (NodeId(3), nowhere)]);
    for seq in 0..20 {
        a.send(NodeId(2), msg(1, seq));
        a.send(NodeId(3), msg(1, seq));
    }
    eventually(
        "a fails to reach the down peer and the unknown name",
        || a.stats().iter().all(|s| s.connect_failures >= 2),
    )
    .await;
    let unknown = a.stats()[1].clone();
    assert!(
        unknown
            .last_error
            .as_deref()
            .unwrap()
            .contains("resolve no-such-member.invalid:7170"),
        "{unknown:?}"
    );
    assert_eq!(a.stats()[0].addr, by_name);

    let (b, mut b_inbox) = start(2, CLUSTER, b_addr, opts()).await;
    for seq in 0..20 {
        let (from, payload) = recv(&mut b_inbox).await;
        assert_eq!(from, NodeId(1));
        assert_eq!(seq_of(&payload), seq);
    }
    assert!(a.stats()[0].connected);
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_queued_for_a_down_peer_arrive_once_it_is_up() {
    let (a, _a_inbox) = start(1, CLUSTER, any_port(), opts()).await;
    let b_addr = free_addr();
    a.set_peers(&[(NodeId(2), b_addr.into())]);
    for seq in 0..50 {
        a.send(NodeId(2), msg(1, seq));
    }
    eventually("a fails to reach the down peer", || {
        a.stats()[0].connect_failures >= 2
    })
    .await;
    let s = a.stats()[0].clone();
    assert!(!s.connected);
    assert_eq!((s.queue_len, s.frames_sent, s.dropped), (50, 0, 0));
    assert!(s.last_error.is_some());

    let (b, mut b_inbox) = start(2, CLUSTER, b_addr, opts()).await;
    for seq in 0..50 {
        let (from, payload) = recv(&mut b_inbox).await;
        assert_eq!(from, NodeId(1));
        assert_eq!(seq_of(&payload), seq);
    }
    eventually("queue drained", || a.stats()[0].queue_len == 0).await;
    assert_eq!(a.stats()[0].frames_sent, 50);
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_peer_on_the_same_port_is_reconnected() {
    let (a, mut a_inbox) = start(1, CLUSTER, any_port(), opts()).await;
    let (b, mut b_inbox) = start(2, CLUSTER, any_port(), opts()).await;
    let b_addr = b.local_addr();
    a.set_peers(&[(NodeId(2), b_addr.into())]);
    b.set_peers(&[(NodeId(1), a.local_addr().into())]);
    a.send(NodeId(2), b"before".to_vec());
    assert_eq!(recv(&mut b_inbox).await, (NodeId(1), b"before".to_vec()));
    b.send(NodeId(1), b"hi from b".to_vec());
    assert_eq!(recv(&mut a_inbox).await, (NodeId(2), b"hi from b".to_vec()));

    b.shutdown().await;
    drop(b_inbox);
    eventually("a notices b is gone", || !a.stats()[0].connected).await;

    // Restart b on the very same port (retrying while the OS still holds it).
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let (b, mut b_inbox) = loop {
        let (tx, rx) = mpsc::channel(1024);
        match TcpTransport::start(NodeId(2), CLUSTER, b_addr, tx, tls(CLUSTER, 2), opts()).await {
            Ok(t) => break (t, rx),
            Err(e) => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "could not rebind {b_addr}: {e}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    assert_eq!(b.local_addr(), b_addr);

    // Frames written into the dying connection may be lost (Raft retransmits); keep sending until one
    // arrives on the new connection.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let mut n = 0u32;
    let got = loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "restarted peer never received a frame"
        );
        a.send(NodeId(2), format!("after {n}").into_bytes());
        n += 1;
        if let Ok(Some(got)) =
            tokio::time::timeout(Duration::from_millis(100), b_inbox.recv()).await
        {
            break got;
        }
    };
    assert_eq!(got.0, NodeId(1));
    assert!(String::from_utf8(got.1).unwrap().starts_with("after "));
    let s = a.stats()[0].clone();
    assert!(s.connected && s.reconnects >= 1, "{s:?}");

    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_drops_and_counts_instead_of_blocking_or_growing() {
    let options = TransportOptions {
        queue_frames: 100,
        ..opts()
    };
    let (a, _inbox) = start(1, CLUSTER, any_port(), options).await;
    a.set_peers(&[(NodeId(2), free_addr().into())]);
    for seq in 0..10_000 {
        a.send(NodeId(2), msg(1, seq));
    }
    let s = a.stats()[0].clone();
    assert_eq!(s.queue_len, 100, "{s:?}");
    assert_eq!(s.dropped, 9_900, "{s:?}");
    assert_eq!(s.frames_sent, 0);
    let queued_payload: usize = (0..100).map(|seq| msg(1, seq).len()).sum();
    assert_eq!(s.queue_bytes, queued_payload);

    // The byte bound holds too.
    let options = TransportOptions {
        queue_bytes: 1000,
        ..opts()
    };
    let (c, _c_inbox) = start(3, CLUSTER, any_port(), options).await;
    c.set_peers(&[(NodeId(2), free_addr().into())]);
    for _ in 0..1000 {
        c.send(NodeId(2), vec![0; 100]);
    }
    let s = c.stats()[0].clone();
    assert_eq!(
        (s.queue_len, s.queue_bytes, s.dropped),
        (10, 1000, 990),
        "{s:?}"
    );

    // Unknown peers are dropped and counted, too.
    a.send(NodeId(9), b"nobody".to_vec());
    assert_eq!(a.unknown_peer_drops(), 1);
    a.shutdown().await;
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_of_another_cluster_is_refused() {
    let (a, mut a_inbox) = start(1, CLUSTER, any_port(), opts()).await;

    // A real transport configured for another cluster: every connection it makes is closed at once.
    let (stranger, _s_inbox) = start(7, CLUSTER + 1, any_port(), opts()).await;
    stranger.set_peers(&[(NodeId(1), a.local_addr().into())]);
    // Connections are dialed lazily, so keep frames coming: each refused connection loses what it carried.
    let mut seq = 0;
    eventually("the stranger is refused repeatedly", || {
        stranger.send(NodeId(1), msg(7, seq));
        seq += 1;
        let s = &stranger.stats()[0];
        s.reconnects + s.connect_failures >= 2
    })
    .await;

    let hello = |cluster_id, from| {
        let mut wire = Hello {
            cluster_id,
            from: NodeId(from),
            addr: "127.0.0.1:7170".parse().unwrap(),
        }
        .encode_frame();
        wire.extend(encode_frame(b"injected"));
        wire
    };
    // Plain TCP: a valid hello and frame, never read.
    let mut raw = TcpStream::connect(a.local_addr()).await.unwrap();
    raw.write_all(&hello(CLUSTER, 8)).await.unwrap();
    // The TLS side answers with an alert at most, then closes.
    let mut answer = Vec::new();
    let read = tokio::time::timeout(PATIENCE, raw.read_to_end(&mut answer)).await;
    assert!(read.is_ok(), "plain TCP was not closed");
    assert!(answer.len() < 64, "more than an alert: {answer:?}");

    // TLS with a certificate for node 8 of our cluster id, from another CA.
    let forged = tls_of("another-ca", CLUSTER, 8);
    if let Ok(mut conn) = dial_tls(a.local_addr(), &forged, 1).await {
        let _ = conn.write_all(&hello(CLUSTER, 8)).await;
        wait_closed(&mut conn).await;
    }

    // Our CA's certificate for node 8, claiming to be node 2, or naming another cluster.
    let eight = tls(CLUSTER, 8);
    for wire in [hello(CLUSTER, 2), hello(CLUSTER + 1, 8)] {
        let mut conn = dial_tls(a.local_addr(), &eight, 1).await.unwrap();
        conn.write_all(&wire).await.unwrap();
        wait_closed(&mut conn).await;
    }

    // Bad magic and bad version are refused as well.
    for corrupt in [0usize, 4] {
        let mut payload = Hello {
            cluster_id: CLUSTER,
            from: NodeId(8),
            addr: "127.0.0.1:7170".parse().unwrap(),
        }
        .encode_payload();
        payload[corrupt] ^= 0xFF;
        let mut wire = encode_frame(&payload);
        wire.extend(encode_frame(b"injected"));
        let mut conn = dial_tls(a.local_addr(), &eight, 1).await.unwrap();
        conn.write_all(&wire).await.unwrap();
        wait_closed(&mut conn).await;
    }

    // A legitimate peer still gets through, and its frame is the first (and only) one delivered.
    let (b, _b_inbox) = start(2, CLUSTER, any_port(), opts()).await;
    b.set_peers(&[(NodeId(1), a.local_addr().into())]);
    b.send(NodeId(1), b"legit".to_vec());
    assert_eq!(recv(&mut a_inbox).await, (NodeId(2), b"legit".to_vec()));
    assert!(a_inbox.try_recv().is_err());
    for t in [a, stranger, b] {
        t.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupted_frame_closes_the_connection_and_delivers_nothing() {
    let options = TransportOptions {
        max_frame_bytes: 1024,
        ..opts()
    };
    let (a, mut a_inbox) = start(1, CLUSTER, any_port(), options).await;
    let five = tls(CLUSTER, 5);
    let hello = Hello {
        cluster_id: CLUSTER,
        from: NodeId(5),
        addr: "127.0.0.1:7170".parse().unwrap(),
    }
    .encode_frame();

    // A frame whose checksum does not match, followed by a valid one that must not be read either.
    let mut bad = encode_frame(b"tampered payload");
    let last = bad.len() - 1;
    bad[last] ^= 0x40;
    let mut wire = hello.clone();
    wire.extend(bad);
    wire.extend(encode_frame(b"after the bad frame"));
    let mut raw = dial_tls(a.local_addr(), &five, 1).await.unwrap();
    raw.write_all(&wire).await.unwrap();
    wait_closed(&mut raw).await;

    // A header announcing more than max_frame_bytes: closed without waiting for the payload.
    let mut wire = hello.clone();
    wire.extend_from_slice(&(1u32 << 30).to_le_bytes());
    wire.extend_from_slice(&0u32.to_le_bytes());
    let mut raw = dial_tls(a.local_addr(), &five, 1).await.unwrap();
    raw.write_all(&wire).await.unwrap();
    wait_closed(&mut raw).await;

    // Control: a clean connection from the same peer is delivered, and it is the first thing delivered.
    let mut wire = hello.clone();
    wire.extend(encode_frame(b"clean"));
    let mut raw = dial_tls(a.local_addr(), &five, 1).await.unwrap();
    raw.write_all(&wire).await.unwrap();
    assert_eq!(recv(&mut a_inbox).await, (NodeId(5), b"clean".to_vec()));
    assert!(a_inbox.try_recv().is_err());
    drop(raw);
    a.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_a_peer_stops_sending_to_it() {
    let (a, _a_inbox) = start(1, CLUSTER, any_port(), opts()).await;
    let (b, mut b_inbox) = start(2, CLUSTER, any_port(), opts()).await;
    a.set_peers(&[(NodeId(2), b.local_addr().into())]);
    a.send(NodeId(2), b"one".to_vec());
    assert_eq!(recv(&mut b_inbox).await, (NodeId(1), b"one".to_vec()));
    a.set_peers(&[]);
    assert!(a.stats().is_empty());
    a.send(NodeId(2), b"two".to_vec());
    assert_eq!(a.unknown_peer_drops(), 1);
    // Re-adding works from a thread outside the runtime, as the node loop would do it.
    let a = std::sync::Arc::new(a);
    let b_addr = b.local_addr();
    let a2 = a.clone();
    std::thread::spawn(move || {
        a2.set_peers(&[(NodeId(2), b_addr.into())]);
        a2.send(NodeId(2), b"three".to_vec());
    })
    .join()
    .unwrap();
    assert_eq!(recv(&mut b_inbox).await, (NodeId(1), b"three".to_vec()));
    let a = std::sync::Arc::into_inner(a).unwrap();
    a.shutdown().await;
    b.shutdown().await;
}

/// A node that does not know a peer yet (it lags behind the entry that added it) still answers
/// it while the peer is connected, at the address the peer's hello announced: its advertised
/// address, not the one it listens on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_connected_is_answered_at_the_address_it_announced() {
    let (a, mut a_inbox) = start(1, CLUSTER, any_port(), opts()).await;
    // B listens on one port and advertises another, as behind a proxy: the advertised one must
    // be where A answers. Here a second transport stands in for the proxy's target.
    let (b_advertised, mut b_inbox) = start(2, CLUSTER, any_port(), opts()).await;
    let b_options = TransportOptions {
        advertised_addr: Some(b_advertised.local_addr()),
        ..opts()
    };
    let (b, _b_listen_inbox) = start(2, CLUSTER, any_port(), b_options).await;
    // A knows nobody: before B connects, a frame for B goes nowhere.
    a.send(NodeId(2), b"too early".to_vec());
    assert_eq!(a.unknown_peer_drops(), 1);
    b.set_peers(&[(NodeId(1), a.local_addr().into())]);
    b.send(NodeId(1), b"append".to_vec());
    assert_eq!(recv(&mut a_inbox).await, (NodeId(2), b"append".to_vec()));
    a.send(NodeId(2), b"reply".to_vec());
    assert_eq!(recv(&mut b_inbox).await, (NodeId(1), b"reply".to_vec()));
    assert_eq!(a.unknown_peer_drops(), 1);
    // Its own address book wins from the next `set_peers` on.
    a.set_peers(&[(NodeId(3), free_addr().into())]);
    assert_eq!(
        a.stats().iter().map(|s| s.peer).collect::<Vec<_>>(),
        [NodeId(3)]
    );
}
