//! The network nemesis's proxy on real TCP (port 0, any 127.x.y.z can be bound on Linux): every
//! route knows the dialing node by its source IP alone and never reads what it forwards; bytes pass
//! intact both ways; blocks cut open connections and refuse new ones per direction, heals let
//! connections through again; a peer connection from an IP of no node is refused, an HTTP one is a
//! client and never blocked; and two real transports talk through it.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use bulwark_chaos::proxy::{bridge, one_way, partition, LinkStats, Proxy};
use bulwark_transport::{Hello, NodeId, TcpTransport, Transport, TransportOptions};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::mpsc;

const CLUSTER: u64 = 0xC4A0_5EED;
/// Generous bound for anything to happen; never a performance assertion.
const PATIENCE: Duration = Duration::from_secs(10);
/// How long we watch for something that must not happen.
const QUIET: Duration = Duration::from_millis(300);

fn any_port() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

/// An address with nothing listening on it (bound once by the OS, then released).
fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// Node `id`'s own loopback IP, as `bulwark chaos` places nodes: 127.0.0.(10+id).
fn node_ip(id: u64) -> String {
    format!("127.0.0.{}", 10 + id)
}

/// Nodes 1, 2 and 3 at 127.0.0.11, .12 and .13.
fn sources() -> BTreeMap<IpAddr, u64> {
    (1..=3u64)
        .map(|id| (node_ip(id).parse().unwrap(), id))
        .collect()
}

/// A fake node's real (peer or HTTP) listener.
async fn acceptor() -> (TcpListener, SocketAddr) {
    let l = TcpListener::bind(any_port()).await.unwrap();
    let addr = l.local_addr().unwrap();
    (l, addr)
}

async fn accept(l: &TcpListener) -> TcpStream {
    tokio::time::timeout(PATIENCE, l.accept())
        .await
        .expect("timed out waiting for the proxy to connect")
        .unwrap()
        .0
}

/// Asserts that nothing connects to `l` for a while.
async fn assert_no_connection(l: &TcpListener) {
    if let Ok(r) = tokio::time::timeout(QUIET, l.accept()).await {
        panic!("unexpected connection to the target: {r:?}");
    }
}

/// A connection to `addr` from `ip` (a node's own loopback IP, or another for a client or stranger).
async fn connect_from(ip: &str, addr: SocketAddr) -> TcpStream {
    let ip: IpAddr = ip.parse().unwrap();
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(ip, 0)).unwrap();
    let s = socket.connect(addr).await.unwrap();
    assert_eq!(s.local_addr().unwrap().ip(), ip);
    s
}

/// Node `from`'s connection to the proxy listener at `addr`, the proxy's connection to the target
/// (accepted from `target`), and one exchange both ways to prove the pair is connected.
async fn dial(from: u64, addr: SocketAddr, target: &TcpListener) -> (TcpStream, TcpStream) {
    let mut dialer = connect_from(&node_ip(from), addr).await;
    let mut accepted = accept(target).await;
    exchange(&mut dialer, &mut accepted, REQUEST, ANSWER).await;
    (dialer, accepted)
}

/// A connection from `ip` that the proxy must reset right after the accept: the reset may even come
/// before the connect returns. Nothing may be written back.
async fn assert_reset_from(ip: &str, addr: SocketAddr) {
    let socket = TcpSocket::new_v4().unwrap();
    socket
        .bind(SocketAddr::new(ip.parse().unwrap(), 0))
        .unwrap();
    match socket.connect(addr).await {
        Ok(mut s) => {
            let _ = s.write_all(REQUEST).await;
            wait_closed(&mut s).await;
        }
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}"),
    }
}

async fn read_n(s: &mut (impl AsyncRead + Unpin), n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    tokio::time::timeout(PATIENCE, s.read_exact(&mut buf))
        .await
        .expect("timed out waiting for bytes")
        .expect("connection closed");
    buf
}

/// One exchange on a proxied connection: `request` reaches the target, `answer` comes back.
async fn exchange(client: &mut TcpStream, server: &mut TcpStream, request: &[u8], answer: &[u8]) {
    client.write_all(request).await.unwrap();
    assert_eq!(read_n(server, request.len()).await, request);
    server.write_all(answer).await.unwrap();
    assert_eq!(read_n(client, answer.len()).await, answer);
}

/// Waits until the proxy closes its side of a connection, the dialer's or the target's (end of
/// stream or reset). Not one more byte may arrive first.
async fn wait_closed(stream: &mut TcpStream) {
    let mut buf = [0u8; 64];
    match tokio::time::timeout(PATIENCE, stream.read(&mut buf)).await {
        Ok(Ok(0)) | Ok(Err(_)) => {}
        Ok(Ok(n)) => panic!("{n} bytes arrived on a connection the proxy should close"),
        Err(_) => panic!("the proxy did not close the connection"),
    }
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

const REQUEST: &[u8] = b"POST /v1/transfers HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\n[]";
const ANSWER: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}";

/// `n` bytes of a pattern seeded by `seed` (no framing: the proxy must not care).
fn pattern(n: usize, seed: u8) -> Vec<u8> {
    (0..n).map(|i| ((i % 251) as u8) ^ seed).collect()
}

/// Writes `bytes` in odd-sized pieces, so that they straddle the proxy's reads.
async fn write_pieces(w: &mut (impl AsyncWrite + Unpin), bytes: &[u8]) {
    for piece in bytes.chunks(7919) {
        w.write_all(piece).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_pass_both_ways_intact_and_are_counted() {
    let (target, target_addr) = acceptor().await;
    let proxy = Proxy::start(vec![(2, any_port(), target_addr)], sources())
        .await
        .unwrap();
    let addr = proxy.listen_addr(2).unwrap();
    assert_ne!(addr.port(), 0);
    assert_eq!(proxy.listen_addrs(), vec![(2, addr)]);
    assert_eq!(proxy.listen_addr(1), None);

    let mut dialer = connect_from(&node_ip(1), addr).await;
    let mut accepted = accept(&target).await;
    // Larger than the proxy's copy buffer, written both ways at once in odd-sized pieces.
    let (up, down) = (pattern(3_000_000, 0x5A), pattern(2_000_000, 0xA5));
    let (mut dialer_r, mut dialer_w) = dialer.split();
    let (mut target_r, mut target_w) = accepted.split();
    let (_, _, got_up, got_down) = tokio::join!(
        write_pieces(&mut dialer_w, &up),
        write_pieces(&mut target_w, &down),
        read_n(&mut target_r, up.len()),
        read_n(&mut dialer_r, down.len()),
    );
    assert!(got_up == up, "dialer → target bytes changed");
    assert!(got_down == down, "target → dialer bytes changed");

    let link = proxy.stats().link(1, 2);
    assert_eq!(
        (link.accepted, link.refused, link.cut, link.open),
        (1, 0, 0, 1),
        "{link:?}"
    );
    assert_eq!(
        (link.bytes, link.bytes_back),
        (up.len() as u64, down.len() as u64),
        "{link:?}"
    );

    // The dialer closes its side: the target sees the end of stream and can still answer; then the
    // target closes, the dialer sees it, and the connection is gone.
    dialer.shutdown().await.unwrap();
    wait_closed(&mut accepted).await;
    accepted.write_all(ANSWER).await.unwrap();
    assert_eq!(read_n(&mut dialer, ANSWER.len()).await, ANSWER);
    drop(accepted);
    wait_closed(&mut dialer).await;
    eventually("connection deregistered", || {
        proxy.stats().link(1, 2).open == 0
    })
    .await;
    let stats = proxy.stats();
    assert_eq!(stats.peer_strangers, 0, "{stats:?}");
    assert_eq!(
        stats.link(1, 2).bytes_back,
        (down.len() + ANSWER.len()) as u64
    );
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_block_cuts_one_direction_and_refuses_new_connections_until_heal() {
    let (target1, target1_addr) = acceptor().await;
    let (target2, target2_addr) = acceptor().await;
    let proxy = Proxy::start(
        vec![(1, any_port(), target1_addr), (2, any_port(), target2_addr)],
        sources(),
    )
    .await
    .unwrap();
    let (p1, p2) = (proxy.listen_addr(1).unwrap(), proxy.listen_addr(2).unwrap());
    let links = proxy.links();

    // 1 → 2 and 2 → 1, each on its own connection, plus 3 → 2: only the source IP tells 1 → 2 and
    // 3 → 2 apart.
    let (mut a, mut a_in) = dial(1, p2, &target2).await;
    let (mut b, mut b_in) = dial(2, p1, &target1).await;
    let (mut c, mut c_in) = dial(3, p2, &target2).await;

    links.block(1, 2);
    assert!(links.is_blocked(1, 2));
    assert!(!links.is_blocked(2, 1));
    // The open 1 → 2 connection is closed on both sides, and nothing written after the block gets
    // across, either way.
    let _ = a.write_all(b"after the block").await;
    let _ = a_in.write_all(b"after the block").await;
    wait_closed(&mut a).await;
    wait_closed(&mut a_in).await;
    // 2 → 1 and 3 → 2 are untouched.
    exchange(&mut b, &mut b_in, REQUEST, ANSWER).await;
    exchange(&mut c, &mut c_in, REQUEST, ANSWER).await;

    // A new 1 → 2 connection is reset right after the accept; the target never sees it.
    assert_reset_from(&node_ip(1), p2).await;
    assert_no_connection(&target2).await;
    // New 2 → 1 and 3 → 2 connections go through.
    let (_b2, _b2_in) = dial(2, p1, &target1).await;
    let (_c2, _c2_in) = dial(3, p2, &target2).await;

    // A cut connection deregisters just after the proxy closed it.
    eventually("the cut connection deregistered", || {
        proxy.stats().link(1, 2).open == 0
    })
    .await;
    let stats = proxy.stats();
    let l12 = stats.link(1, 2);
    assert_eq!(
        (l12.accepted, l12.refused, l12.cut, l12.open),
        (1, 1, 1, 0),
        "{stats:?}"
    );
    let l21 = stats.link(2, 1);
    assert_eq!(
        (l21.accepted, l21.refused, l21.cut, l21.open),
        (2, 0, 0, 2),
        "{stats:?}"
    );
    let l32 = stats.link(3, 2);
    assert_eq!((l32.accepted, l32.cut, l32.open), (2, 0, 2), "{stats:?}");

    // Healing (or unblocking) lets new connections through; the cut one stays closed.
    links.heal();
    assert!(links.blocked().is_empty());
    let (mut a2, _a2_in) = dial(1, p2, &target2).await;
    links.block(1, 2);
    wait_closed(&mut a2).await;
    links.unblock(1, 2);
    let (_a3, _a3_in) = dial(1, p2, &target2).await;
    eventually("the cut connection deregistered", || {
        proxy.stats().link(1, 2).open == 1
    })
    .await;
    let l12 = proxy.stats().link(1, 2);
    assert_eq!(
        (l12.accepted, l12.refused, l12.cut, l12.open),
        (3, 1, 2, 1),
        "{l12:?}"
    );
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_blocked_replaces_the_set_and_cuts_only_newly_blocked_links() {
    let (target, target_addr) = acceptor().await;
    let proxy = Proxy::start(vec![(3, any_port(), target_addr)], sources())
        .await
        .unwrap();
    let p3 = proxy.listen_addr(3).unwrap();
    let links = proxy.links();

    let (mut from1, mut from1_in) = dial(1, p3, &target).await;
    let (mut from2, mut from2_in) = dial(2, p3, &target).await;

    // Self-links are ignored; (2, 3) is blocked, (1, 3) is not.
    links.set_blocked([(2, 3), (3, 3), (3, 1)]);
    assert_eq!(links.blocked(), BTreeSet::from([(2, 3), (3, 1)]));
    links.block(3, 3);
    assert!(!links.is_blocked(3, 3));
    wait_closed(&mut from2).await;
    wait_closed(&mut from2_in).await;
    exchange(&mut from1, &mut from1_in, REQUEST, ANSWER).await;

    // Replacing the set unblocks what is no longer in it.
    links.set_blocked(one_way(&[1], &[3]));
    assert_eq!(links.blocked(), BTreeSet::from([(1, 3)]));
    wait_closed(&mut from1).await;
    wait_closed(&mut from1_in).await;
    let (_from2, _from2_in) = dial(2, p3, &target).await;
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_routes_refuse_strangers_and_never_read_what_they_forward() {
    let (target, target_addr) = acceptor().await;
    let proxy = Proxy::start(vec![(2, any_port(), target_addr)], sources())
        .await
        .unwrap();
    let addr = proxy.listen_addr(2).unwrap();
    let links = proxy.links();

    // Only nodes dial peer ports: 127.0.0.1 (no node's IP) and a neighbour of the nodes' IPs are
    // reset right after the accept, blocked links or not, and the target never sees them.
    assert_reset_from("127.0.0.1", addr).await;
    assert_reset_from("127.0.0.14", addr).await;
    assert_no_connection(&target).await;
    // So is a real transport that dials without its source IP (from 127.0.0.1).
    let (stray, _inbox) = start_transport(1, None).await;
    stray.set_peers(&[(NodeId(2), addr.into())]);
    let mut i = 0u64;
    eventually("the stray transport is refused again and again", || {
        stray.send(NodeId(2), i.to_le_bytes().to_vec());
        i += 1;
        proxy.stats().peer_strangers >= 4
    })
    .await;
    assert_no_connection(&target).await;
    stray.shutdown().await;
    assert!(proxy.stats().links.is_empty(), "{:?}", proxy.stats());

    // The proxy reads nothing: node 3's connection opening with a hello that names node 1 is node
    // 3's, and anything at all passes intact.
    let mut from3 = connect_from(&node_ip(3), addr).await;
    let mut from3_in = accept(&target).await;
    let lie = Hello {
        cluster_id: CLUSTER,
        from: NodeId(1),
        addr: "127.0.0.1:7170".parse().unwrap(),
    }
    .encode_frame();
    exchange(
        &mut from3,
        &mut from3_in,
        &lie,
        b"\x16\x03\x03 server hello",
    )
    .await;
    exchange(
        &mut from3,
        &mut from3_in,
        b"GET / HTTP/1.1\r\n\r\n",
        &[0; 30],
    )
    .await;
    links.block(1, 2);
    exchange(&mut from3, &mut from3_in, REQUEST, ANSWER).await;
    links.block(3, 2);
    wait_closed(&mut from3).await;
    wait_closed(&mut from3_in).await;
    let stats = proxy.stats();
    // Node 1 never dialed: its link saw nothing.
    let nothing = LinkStats {
        from: 1,
        to: 2,
        ..LinkStats::default()
    };
    assert_eq!(stats.link(1, 2), nothing, "{stats:?}");
    assert_eq!(stats.link(3, 2).cut, 1, "{stats:?}");
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_down_target_resets_the_dialer_and_is_counted() {
    let proxy = Proxy::start(vec![(2, any_port(), free_addr())], sources())
        .await
        .unwrap();
    assert_reset_from(&node_ip(1), proxy.listen_addr(2).unwrap()).await;
    eventually("target failure counted", || {
        proxy.stats().link(1, 2).target_failures == 1
    })
    .await;
    assert_eq!(proxy.stats().link(1, 2).open, 0);
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_connections_and_listeners() {
    let (target, target_addr) = acceptor().await;
    // The same node twice is refused.
    assert!(Proxy::start(
        vec![(2, any_port(), target_addr), (2, any_port(), target_addr)],
        sources()
    )
    .await
    .is_err());

    let proxy = Proxy::start(vec![(2, any_port(), target_addr)], sources())
        .await
        .unwrap();
    let addr = proxy.listen_addr(2).unwrap();
    let (mut s, mut s_in) = dial(1, addr, &target).await;
    proxy.shutdown().await;
    wait_closed(&mut s).await;
    wait_closed(&mut s_in).await;
    assert!(TcpStream::connect(addr).await.is_err());

    // The port can be bound again at once (a restarted harness).
    let again = Proxy::start(vec![(2, addr, target_addr)], sources())
        .await
        .unwrap();
    assert_eq!(again.listen_addr(2), Some(addr));
    drop(again);
}

#[test]
fn partition_bridge_and_one_way_block_the_right_links() {
    let both = |pairs: &[(u64, u64)]| -> BTreeSet<(u64, u64)> {
        pairs.iter().flat_map(|&(a, b)| [(a, b), (b, a)]).collect()
    };

    assert_eq!(
        partition(&[vec![1, 2], vec![3, 4, 5]]),
        both(&[(1, 3), (1, 4), (1, 5), (2, 3), (2, 4), (2, 5)])
    );
    // Isolating one node.
    assert_eq!(
        partition(&[vec![3], vec![1, 2, 4, 5]]),
        both(&[(3, 1), (3, 2), (3, 4), (3, 5)])
    );
    // Three groups: every cross pair.
    assert_eq!(
        partition(&[vec![1], vec![2], vec![3]]),
        both(&[(1, 2), (1, 3), (2, 3)])
    );
    // One group (or none) blocks nothing.
    assert!(partition(&[vec![1, 2, 3]]).is_empty());
    assert!(partition(&[]).is_empty());

    // 1, 2 | bridge 3 | 4, 5: the sides are cut from each other, the bridge talks to everyone.
    let b = bridge(&[1, 2], 3, &[4, 5]);
    assert_eq!(b, both(&[(1, 4), (1, 5), (2, 4), (2, 5)]));
    assert!(!b.iter().any(|&(f, t)| f == 3 || t == 3));
    // Listing the bridge on a side changes nothing.
    assert_eq!(bridge(&[1, 2, 3], 3, &[4, 5]), b);

    // Only from → to.
    assert_eq!(one_way(&[1], &[2, 3]), BTreeSet::from([(1, 2), (1, 3)]));
    assert_eq!(
        one_way(&[1, 2], &[2, 3]),
        BTreeSet::from([(1, 2), (1, 3), (2, 3)])
    );
    assert!(one_way(&[1], &[]).is_empty());
}

type Inbox = mpsc::Receiver<(NodeId, Vec<u8>)>;

/// Node `id`'s peer TLS, from one CA for every transport of these tests.
fn peer_tls(id: u64) -> bulwark_tls::PeerTls {
    static ROOT: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
    let root = ROOT.get_or_init(|| tempfile::tempdir().unwrap()).path();
    let dir = root.join(format!("node-{id}"));
    bulwark_tls::provision_node(&root.join("ca"), CLUSTER, NodeId(id), &dir).unwrap();
    bulwark_tls::PeerTls::load(&dir, CLUSTER, NodeId(id)).unwrap()
}

/// A real transport for node `id`, dialing from `source_ip` (`None`: the OS picks, 127.0.0.1).
async fn start_transport(id: u64, source_ip: Option<&str>) -> (TcpTransport, Inbox) {
    let (tx, rx) = mpsc::channel(1024);
    let opts = TransportOptions {
        backoff_min: Duration::from_millis(10),
        backoff_max: Duration::from_millis(200),
        source_ip: source_ip.map(|ip| ip.parse().unwrap()),
        ..TransportOptions::default()
    };
    let t = TcpTransport::start(NodeId(id), CLUSTER, any_port(), tx, peer_tls(id), opts)
        .await
        .unwrap();
    (t, rx)
}

/// Sends numbered messages from `t` to `to`, starting at `first`, until one of them arrives at `inbox`
/// (older ones still queued may arrive first; frames written into a dying connection may be lost).
async fn send_until_delivered(t: &TcpTransport, to: u64, inbox: &mut Inbox, first: u64) {
    let mut seq = first;
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no message got through to node {to}"
        );
        t.send(NodeId(to), seq.to_le_bytes().to_vec());
        seq += 1;
        while let Ok(Some((_, m))) =
            tokio::time::timeout(Duration::from_millis(50), inbox.recv()).await
        {
            if u64::from_le_bytes(m[..8].try_into().unwrap()) >= first {
                return;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_real_transports_through_the_proxy() {
    // Each node dials from its own IP, as `bulwark chaos` starts them.
    let (t1, mut in1) = start_transport(1, Some(&node_ip(1))).await;
    let (t2, mut in2) = start_transport(2, Some(&node_ip(2))).await;
    let proxy = Proxy::start(
        vec![
            (1, any_port(), t1.local_addr()),
            (2, any_port(), t2.local_addr()),
        ],
        sources(),
    )
    .await
    .unwrap();
    let links = proxy.links();
    // Each node is told the other's proxy address, as `bulwark chaos` does with `--member`.
    t1.set_peers(&[(NodeId(2), proxy.listen_addr(2).unwrap().into())]);
    t2.set_peers(&[(NodeId(1), proxy.listen_addr(1).unwrap().into())]);

    // Both ways, in order.
    for i in 0..100u64 {
        t1.send(NodeId(2), i.to_le_bytes().to_vec());
        t2.send(NodeId(1), (1000 + i).to_le_bytes().to_vec());
    }
    for i in 0..100u64 {
        let (from, m) = tokio::time::timeout(PATIENCE, in2.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!((from, m), (NodeId(1), i.to_le_bytes().to_vec()));
        let (from, m) = tokio::time::timeout(PATIENCE, in1.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!((from, m), (NodeId(2), (1000 + i).to_le_bytes().to_vec()));
    }

    // Block 1 → 2: nothing sent afterwards arrives, 2 → 1 keeps flowing.
    links.block(1, 2);
    let cut_at = 1_000_000u64;
    for i in 0..50u64 {
        t1.send(NodeId(2), (cut_at + i).to_le_bytes().to_vec());
        t2.send(NodeId(1), (2000 + i).to_le_bytes().to_vec());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for i in 0..50u64 {
        let (_, m) = tokio::time::timeout(PATIENCE, in1.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(m, (2000 + i).to_le_bytes().to_vec());
    }
    // Node 1 redials (it has frames queued) and is refused right after each accept.
    let mut i = 50;
    eventually("node 1 is refused again and again", || {
        t1.send(NodeId(2), (cut_at + i).to_le_bytes().to_vec());
        i += 1;
        proxy.stats().link(1, 2).refused >= 3
    })
    .await;
    while let Ok(Some((_, m))) = tokio::time::timeout(QUIET, in2.recv()).await {
        let n = u64::from_le_bytes(m[..8].try_into().unwrap());
        assert!(n < cut_at, "message {n} crossed a blocked link");
    }
    let stats = proxy.stats();
    assert!(stats.link(1, 2).cut >= 1, "{stats:?}");
    assert_eq!(stats.link(2, 1).cut, 0, "{stats:?}");
    assert_eq!(stats.link(2, 1).refused, 0, "{stats:?}");

    // Heal: node 1's transport reconnects by itself and messages flow again.
    links.heal();
    send_until_delivered(&t1, 2, &mut in2, cut_at * 2).await;
    let stats = proxy.stats();
    assert!(
        stats.link(1, 2).open >= 1 && stats.link(2, 1).open >= 1,
        "{stats:?}"
    );
    assert_eq!(stats.peer_strangers, 0, "{stats:?}");

    proxy.shutdown().await;
    t1.shutdown().await;
    t2.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_routes_block_a_node_by_its_source_ip_and_never_block_others() {
    let (http2, http2_addr) = acceptor().await;
    let (peer2, peer2_addr) = acceptor().await;
    let proxy = Proxy::start_with(
        vec![(2, any_port(), peer2_addr)],
        vec![(2, any_port(), http2_addr)],
        sources(),
    )
    .await
    .unwrap();
    let h2 = proxy.http_listen_addr(2).unwrap();
    let p2 = proxy.listen_addr(2).unwrap();
    assert_ne!(h2, p2);
    assert_eq!(proxy.http_listen_addr(1), None);
    assert_eq!(proxy.listen_addrs(), vec![(2, p2)]);
    let links = proxy.links();

    // Node 1 (its IP), node 3, and a client (127.0.0.1, no node's IP) into node 2's HTTP listener,
    // plus node 1's peer connection into node 2: bytes pass both ways, several exchanges per
    // connection (keep-alive).
    let mut from1 = connect_from("127.0.0.11", h2).await;
    let mut from1_in = accept(&http2).await;
    let mut from3 = connect_from("127.0.0.13", h2).await;
    let mut from3_in = accept(&http2).await;
    let mut client = connect_from("127.0.0.1", h2).await;
    let mut client_in = accept(&http2).await;
    for (c, s) in [
        (&mut from1, &mut from1_in),
        (&mut from3, &mut from3_in),
        (&mut client, &mut client_in),
    ] {
        exchange(c, s, REQUEST, ANSWER).await;
        exchange(c, s, REQUEST, ANSWER).await;
    }
    let (mut peer1, mut peer1_in) = dial(1, p2, &peer2).await;

    // Blocking 1 → 2 cuts node 1's HTTP connection as well as its peer connection; node 3 and the
    // client keep theirs.
    links.block(1, 2);
    wait_closed(&mut from1).await;
    wait_closed(&mut from1_in).await;
    wait_closed(&mut peer1).await;
    wait_closed(&mut peer1_in).await;
    exchange(&mut from3, &mut from3_in, REQUEST, ANSWER).await;
    exchange(&mut client, &mut client_in, REQUEST, ANSWER).await;

    // A new connection from node 1 is reset right after the accept: the target never sees it.
    assert_reset_from("127.0.0.11", h2).await;
    assert_no_connection(&http2).await;
    // Others get through; even a partition of every node leaves clients alone.
    let mut from3b = connect_from("127.0.0.13", h2).await;
    let mut from3b_in = accept(&http2).await;
    exchange(&mut from3b, &mut from3b_in, REQUEST, ANSWER).await;
    links.set_blocked(partition(&[vec![1], vec![2], vec![3]]));
    wait_closed(&mut from3).await;
    wait_closed(&mut from3b).await;
    exchange(&mut client, &mut client_in, REQUEST, ANSWER).await;
    let mut client2 = connect_from("127.0.0.1", h2).await;
    let mut client2_in = accept(&http2).await;
    exchange(&mut client2, &mut client2_in, REQUEST, ANSWER).await;
    // Any IP of no node is a client, 127.0.0.11's neighbours included.
    let mut stranger = connect_from("127.0.0.99", h2).await;
    let mut stranger_in = accept(&http2).await;
    exchange(&mut stranger, &mut stranger_in, REQUEST, ANSWER).await;

    // Blocking the other direction (2 → 1) alone does not keep node 1 from node 2's HTTP.
    links.set_blocked([(2, 1)]);
    let mut from1 = connect_from("127.0.0.11", h2).await;
    let mut from1_in = accept(&http2).await;
    exchange(&mut from1, &mut from1_in, REQUEST, ANSWER).await;

    eventually("the cut connections deregistered", || {
        let stats = proxy.stats();
        stats.http_link(1, 2).open == 1 && stats.http_link(3, 2).open == 0
    })
    .await;
    let stats = proxy.stats();
    let l12 = stats.http_link(1, 2);
    assert_eq!(
        (l12.accepted, l12.refused, l12.cut, l12.open),
        (2, 1, 1, 1),
        "{stats:?}"
    );
    assert!(l12.bytes > 0 && l12.bytes_back > 0, "{l12:?}");
    let l32 = stats.http_link(3, 2);
    assert_eq!(
        (l32.accepted, l32.refused, l32.cut, l32.open),
        (2, 0, 2, 0),
        "{stats:?}"
    );
    assert_eq!(stats.http_unmapped, 3, "{stats:?}");
    // The peer link's counters are apart.
    let peer = stats.link(1, 2);
    assert_eq!((peer.accepted, peer.cut), (1, 1), "{stats:?}");
    assert_eq!(stats.http_links.len(), 2, "{stats:?}");
    assert_eq!(stats.links.len(), 1, "{stats:?}");

    // Healed: node 3 gets through again.
    links.heal();
    let mut from3 = connect_from("127.0.0.13", h2).await;
    let mut from3_in = accept(&http2).await;
    exchange(&mut from3, &mut from3_in, REQUEST, ANSWER).await;
    proxy.shutdown().await;
    wait_closed(&mut client).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_routes_are_checked_and_a_down_target_is_counted() {
    let (_, target_addr) = acceptor().await;
    // The same node twice among the HTTP routes is refused; once per kind is fine.
    assert!(Proxy::start_with(
        vec![],
        vec![(2, any_port(), target_addr), (2, any_port(), target_addr)],
        sources(),
    )
    .await
    .is_err());
    let proxy = Proxy::start_with(
        vec![(2, any_port(), target_addr)],
        vec![(2, any_port(), free_addr())],
        sources(),
    )
    .await
    .unwrap();
    assert_reset_from("127.0.0.11", proxy.http_listen_addr(2).unwrap()).await;
    eventually("target failure counted", || {
        proxy.stats().http_link(1, 2).target_failures == 1
    })
    .await;
    // Counted on the HTTP link only.
    assert!(proxy.stats().links.is_empty());
    assert_eq!(proxy.stats().http_link(1, 2).open, 0);
    proxy.shutdown().await;
}
