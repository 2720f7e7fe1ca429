//! The network nemesis's proxy on real TCP (127.0.0.1, port 0): bytes pass intact, blocks cut open
//! connections and refuse new ones per direction, heals let connections through again, garbage is
//! closed, and two real transports talk through it. HTTP routes know the dialer by its source IP
//! (any 127.x.y.z can be bound on Linux): a node's connections obey the blocks, others pass.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use bulwark_chaos::proxy::{bridge, one_way, partition, Proxy};
use bulwark_transport::{
    encode_frame, encode_frame_into, FrameDecoder, Hello, NodeId, TcpTransport, Transport,
    TransportOptions, HELLO_PAYLOAD_LEN,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
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

/// A fake node's peer listener.
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

/// A fake dialer: connects to the proxy and sends the hello of `from`.
async fn dial(proxy: SocketAddr, from: u64) -> TcpStream {
    let mut s = TcpStream::connect(proxy).await.unwrap();
    s.write_all(
        &Hello {
            cluster_id: CLUSTER,
            from: NodeId(from),
            addr: "127.0.0.1:7170".parse().unwrap(),
        }
        .encode_frame(),
    )
    .await
    .unwrap();
    s
}

/// Reads frames from a connection the proxy opened to a fake acceptor.
struct Reader {
    stream: TcpStream,
    decoder: FrameDecoder,
}

impl Reader {
    fn new(stream: TcpStream) -> Reader {
        Reader {
            stream,
            decoder: FrameDecoder::new(16 << 20),
        }
    }

    /// The next frame, or `None` once the proxy closed the connection (between frames or not).
    async fn frame(&mut self) -> Option<Vec<u8>> {
        let mut chunk = [0u8; 4096];
        loop {
            if let Some(f) = self.decoder.next_frame().expect("corrupt frame") {
                return Some(f);
            }
            let n = tokio::time::timeout(PATIENCE, self.stream.read(&mut chunk))
                .await
                .expect("timed out waiting for a frame")
                .unwrap_or(0);
            if n == 0 {
                return None;
            }
            self.decoder.extend(&chunk[..n]);
        }
    }

    /// Reads the hello and checks who it names.
    async fn hello(&mut self, from: u64) {
        let f = self.frame().await.expect("hello");
        let hello = Hello::decode(&f).unwrap();
        assert_eq!((hello.cluster_id, hello.from), (CLUSTER, NodeId(from)));
    }
}

/// Waits until the proxy closes a dialer's connection. It must never write to it.
async fn wait_closed(stream: &mut TcpStream) {
    let mut buf = [0u8; 64];
    match tokio::time::timeout(PATIENCE, stream.read(&mut buf)).await {
        Ok(Ok(0)) | Ok(Err(_)) => {}
        Ok(Ok(_)) => panic!("the proxy wrote to a dialer"),
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

fn payload(seq: u32) -> Vec<u8> {
    let mut p = seq.to_le_bytes().to_vec();
    p.extend((0..(seq as usize * 37) % 5000).map(|i| (i as u8) ^ (seq as u8)));
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_pass_intact_and_are_counted() {
    let (target, target_addr) = acceptor().await;
    let proxy = Proxy::start(vec![(2, any_port(), target_addr)])
        .await
        .unwrap();
    let addr = proxy.listen_addr(2).unwrap();
    assert_ne!(addr.port(), 0);
    assert_eq!(proxy.listen_addrs(), vec![(2, addr)]);
    assert_eq!(proxy.listen_addr(1), None);

    let mut dialer = dial(addr, 1).await;
    let mut wire = Vec::new();
    for seq in 0..200 {
        encode_frame_into(&mut wire, &payload(seq));
    }
    // One big frame, larger than the proxy's copy buffer.
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    encode_frame_into(&mut wire, &big);
    let expected_bytes = (wire.len() + encode_frame(&[0; HELLO_PAYLOAD_LEN]).len()) as u64;
    // Written in odd-sized pieces so frames straddle reads.
    let writer = tokio::spawn(async move {
        for piece in wire.chunks(7919) {
            dialer.write_all(piece).await.unwrap();
        }
        dialer
    });

    let mut r = Reader::new(accept(&target).await);
    r.hello(1).await;
    for seq in 0..200 {
        assert_eq!(r.frame().await.unwrap(), payload(seq), "frame {seq}");
    }
    assert_eq!(r.frame().await.unwrap(), big);
    let mut dialer = writer.await.unwrap();

    let link = proxy.stats().link(1, 2);
    assert_eq!(
        (link.accepted, link.refused, link.cut, link.bytes, link.open),
        (1, 0, 0, expected_bytes, 1),
        "{link:?}"
    );

    // The dialer closes: the target sees the end of stream, and the connection is gone.
    dialer.shutdown().await.unwrap();
    assert_eq!(r.frame().await, None);
    drop(r);
    wait_closed(&mut dialer).await;
    eventually("connection deregistered", || {
        proxy.stats().link(1, 2).open == 0
    })
    .await;
    assert_eq!(proxy.stats().bad_hellos, 0);
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_block_cuts_one_direction_and_refuses_new_connections_until_heal() {
    let (target1, target1_addr) = acceptor().await;
    let (target2, target2_addr) = acceptor().await;
    let proxy = Proxy::start(vec![
        (1, any_port(), target1_addr),
        (2, any_port(), target2_addr),
    ])
    .await
    .unwrap();
    let (p1, p2) = (proxy.listen_addr(1).unwrap(), proxy.listen_addr(2).unwrap());
    let links = proxy.links();

    // 1 → 2 and 2 → 1, each on its own connection, plus 3 → 2.
    let mut a = dial(p2, 1).await;
    let mut a_in = Reader::new(accept(&target2).await);
    a_in.hello(1).await;
    let mut b = dial(p1, 2).await;
    let mut b_in = Reader::new(accept(&target1).await);
    b_in.hello(2).await;
    let mut c = dial(p2, 3).await;
    let mut c_in = Reader::new(accept(&target2).await);
    c_in.hello(3).await;
    for (s, r) in [
        (&mut a, &mut a_in),
        (&mut b, &mut b_in),
        (&mut c, &mut c_in),
    ] {
        s.write_all(&encode_frame(b"before")).await.unwrap();
        assert_eq!(r.frame().await.unwrap(), b"before");
    }

    links.block(1, 2);
    assert!(links.is_blocked(1, 2));
    assert!(!links.is_blocked(2, 1));
    // The open 1 → 2 connection is closed on both sides, and nothing written after the block arrives.
    let _ = a.write_all(&encode_frame(b"after the block")).await;
    wait_closed(&mut a).await;
    assert_eq!(a_in.frame().await, None);
    // 2 → 1 and 3 → 2 are untouched.
    for (s, r) in [(&mut b, &mut b_in), (&mut c, &mut c_in)] {
        s.write_all(&encode_frame(b"still open")).await.unwrap();
        assert_eq!(r.frame().await.unwrap(), b"still open");
    }

    // A new 1 → 2 connection is accepted, its hello read, then reset; the target never sees it.
    let mut again = dial(p2, 1).await;
    wait_closed(&mut again).await;
    assert_no_connection(&target2).await;
    // A new 2 → 1 connection goes through.
    let mut b2 = dial(p1, 2).await;
    let mut b2_in = Reader::new(accept(&target1).await);
    b2_in.hello(2).await;
    b2.write_all(&encode_frame(b"new reverse")).await.unwrap();
    assert_eq!(b2_in.frame().await.unwrap(), b"new reverse");

    let stats = proxy.stats();
    let l12 = stats.link(1, 2);
    assert_eq!((l12.accepted, l12.refused, l12.cut, l12.open), (1, 1, 1, 0));
    let l21 = stats.link(2, 1);
    assert_eq!((l21.accepted, l21.refused, l21.cut, l21.open), (2, 0, 0, 2));
    assert_eq!(stats.link(3, 2).open, 1);
    assert_eq!(stats.link(1, 2).bytes_back, 0);

    // Unblocking (or healing) lets new connections through; the cut one stays closed.
    links.heal();
    assert!(links.blocked().is_empty());
    let mut a2 = dial(p2, 1).await;
    let mut a2_in = Reader::new(accept(&target2).await);
    a2_in.hello(1).await;
    a2.write_all(&encode_frame(b"healed")).await.unwrap();
    assert_eq!(a2_in.frame().await.unwrap(), b"healed");

    links.block(1, 2);
    wait_closed(&mut a2).await;
    links.unblock(1, 2);
    let mut a3 = dial(p2, 1).await;
    let mut a3_in = Reader::new(accept(&target2).await);
    a3_in.hello(1).await;
    a3.write_all(&encode_frame(b"unblocked")).await.unwrap();
    assert_eq!(a3_in.frame().await.unwrap(), b"unblocked");
    assert_eq!(proxy.stats().link(1, 2).cut, 2);

    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_blocked_replaces_the_set_and_cuts_only_newly_blocked_links() {
    let (target, target_addr) = acceptor().await;
    let proxy = Proxy::start(vec![(3, any_port(), target_addr)])
        .await
        .unwrap();
    let p3 = proxy.listen_addr(3).unwrap();
    let links = proxy.links();

    let mut from1 = dial(p3, 1).await;
    let mut from1_in = Reader::new(accept(&target).await);
    from1_in.hello(1).await;
    let mut from2 = dial(p3, 2).await;
    let mut from2_in = Reader::new(accept(&target).await);
    from2_in.hello(2).await;

    // Self-links are ignored; (2, 3) is blocked, (1, 3) is not.
    links.set_blocked([(2, 3), (3, 3), (3, 1)]);
    assert_eq!(links.blocked(), BTreeSet::from([(2, 3), (3, 1)]));
    links.block(3, 3);
    assert!(!links.is_blocked(3, 3));
    wait_closed(&mut from2).await;
    assert_eq!(from2_in.frame().await, None);
    from1.write_all(&encode_frame(b"x")).await.unwrap();
    assert_eq!(from1_in.frame().await.unwrap(), b"x");

    // Replacing the set unblocks what is no longer in it.
    links.set_blocked(one_way(&[1], &[3]));
    assert_eq!(links.blocked(), BTreeSet::from([(1, 3)]));
    wait_closed(&mut from1).await;
    let mut from2 = dial(p3, 2).await;
    let mut from2_in = Reader::new(accept(&target).await);
    from2_in.hello(2).await;
    from2.write_all(&encode_frame(b"y")).await.unwrap();
    assert_eq!(from2_in.frame().await.unwrap(), b"y");
    proxy.shutdown().await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_instead_of_a_hello_is_closed_and_never_reaches_the_target() {
    let (target, target_addr) = acceptor().await;
    let proxy = Proxy::start(vec![(2, any_port(), target_addr)])
        .await
        .unwrap();
    let addr = proxy.listen_addr(2).unwrap();

    let hello = Hello {
        cluster_id: CLUSTER,
        from: NodeId(1),
        addr: "127.0.0.1:7170".parse().unwrap(),
    }
    .encode_frame();
    let mut bad_crc = hello.clone();
    bad_crc[10] ^= 0x40;
    let mut bad_magic_payload = hello[8..].to_vec();
    bad_magic_payload[0] = b'X';
    let huge_len = {
        let mut w = u32::MAX.to_le_bytes().to_vec();
        w.resize(64, 0);
        w
    };
    // A valid frame that is not a hello, followed by more bytes.
    let mut short_frame = encode_frame(b"not a hello");
    short_frame.extend_from_slice(&[0xEE; 40]);
    let garbage: Vec<Vec<u8>> = vec![
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        bad_crc,
        encode_frame(&bad_magic_payload),
        huge_len,
        short_frame,
        vec![0; 30],
    ];
    let n = garbage.len() as u64;
    for g in garbage {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(&g).await.unwrap();
        wait_closed(&mut s).await;
    }
    // A dialer that gives up before finishing its hello.
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(&hello[..10]).await.unwrap();
    drop(s);
    assert_no_connection(&target).await;
    eventually("every bad hello counted", || {
        proxy.stats().bad_hellos == n + 1
    })
    .await;
    assert!(proxy.stats().links.is_empty());

    // The proxy still serves a proper dialer.
    let mut good = dial(addr, 1).await;
    let mut r = Reader::new(accept(&target).await);
    r.hello(1).await;
    good.write_all(&encode_frame(b"fine")).await.unwrap();
    assert_eq!(r.frame().await.unwrap(), b"fine");
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_down_target_resets_the_dialer_and_is_counted() {
    let proxy = Proxy::start(vec![(2, any_port(), free_addr())])
        .await
        .unwrap();
    let mut s = dial(proxy.listen_addr(2).unwrap(), 1).await;
    wait_closed(&mut s).await;
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
    assert!(Proxy::start(vec![
        (2, any_port(), target_addr),
        (2, any_port(), target_addr)
    ])
    .await
    .is_err());

    let proxy = Proxy::start(vec![(2, any_port(), target_addr)])
        .await
        .unwrap();
    let addr = proxy.listen_addr(2).unwrap();
    let mut s = dial(addr, 1).await;
    let mut r = Reader::new(accept(&target).await);
    r.hello(1).await;
    proxy.shutdown().await;
    wait_closed(&mut s).await;
    assert_eq!(r.frame().await, None);
    assert!(TcpStream::connect(addr).await.is_err());

    // The port can be bound again at once (a restarted harness).
    let again = Proxy::start(vec![(2, addr, target_addr)]).await.unwrap();
    assert_eq!(again.listen_addr(2), Some(addr));
    drop(again);
}

fn transport_opts() -> TransportOptions {
    TransportOptions {
        backoff_min: Duration::from_millis(10),
        backoff_max: Duration::from_millis(200),
        ..TransportOptions::default()
    }
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

async fn start_transport(id: u64) -> (TcpTransport, Inbox) {
    let (tx, rx) = mpsc::channel(1024);
    let tls = peer_tls(id);
    let t = TcpTransport::start(NodeId(id), CLUSTER, any_port(), tx, tls, transport_opts())
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
    let (t1, mut in1) = start_transport(1).await;
    let (t2, mut in2) = start_transport(2).await;
    let proxy = Proxy::start(vec![
        (1, any_port(), t1.local_addr()),
        (2, any_port(), t2.local_addr()),
    ])
    .await
    .unwrap();
    let links = proxy.links();
    // Each node is told the other's proxy address, as `bulwark chaos` does with `--member`.
    t1.set_peers(&[(NodeId(2), proxy.listen_addr(2).unwrap())]);
    t2.set_peers(&[(NodeId(1), proxy.listen_addr(1).unwrap())]);

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
    // Node 1 redials (it has frames queued) and is refused after each hello.
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
    assert_eq!(stats.link(1, 2).bytes_back + stats.link(2, 1).bytes_back, 0);

    proxy.shutdown().await;
    t1.shutdown().await;
    t2.shutdown().await;
}

/// A connection to `addr` from `ip` (a node's own loopback IP, or 127.0.0.1 for a client).
async fn connect_from(ip: &str, addr: SocketAddr) -> TcpStream {
    let ip: IpAddr = ip.parse().unwrap();
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(ip, 0)).unwrap();
    let s = socket.connect(addr).await.unwrap();
    assert_eq!(s.local_addr().unwrap().ip(), ip);
    s
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

/// One HTTP-like exchange on a proxied connection: `request` reaches the target, `answer` comes
/// back.
async fn exchange(client: &mut TcpStream, server: &mut TcpStream, request: &[u8], answer: &[u8]) {
    async fn read_n(s: &mut TcpStream, n: usize) -> Vec<u8> {
        let mut buf = vec![0u8; n];
        tokio::time::timeout(PATIENCE, s.read_exact(&mut buf))
            .await
            .expect("timed out waiting for bytes")
            .expect("connection closed");
        buf
    }
    client.write_all(request).await.unwrap();
    assert_eq!(read_n(server, request.len()).await, request);
    server.write_all(answer).await.unwrap();
    assert_eq!(read_n(client, answer.len()).await, answer);
}

/// Waits until the proxy closes the target's side of a connection (end of stream or reset).
async fn wait_target_closed(stream: &mut TcpStream) {
    let mut buf = [0u8; 64];
    match tokio::time::timeout(PATIENCE, stream.read(&mut buf)).await {
        Ok(Ok(0)) | Ok(Err(_)) => {}
        Ok(Ok(n)) => panic!("{n} bytes reached the target after a cut"),
        Err(_) => panic!("the proxy did not close the target's side"),
    }
}

const REQUEST: &[u8] = b"POST /v1/transfers HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\n[]";
const ANSWER: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}";

/// Nodes 1, 2 and 3 at 127.0.0.11, .12 and .13, as `bulwark chaos` places them.
fn sources() -> BTreeMap<IpAddr, u64> {
    (1..=3u64)
        .map(|id| (format!("127.0.0.{}", 10 + id).parse().unwrap(), id))
        .collect()
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
    let mut peer1 = dial(p2, 1).await;
    let mut peer1_in = Reader::new(accept(&peer2).await);
    peer1_in.hello(1).await;

    // Blocking 1 → 2 cuts node 1's HTTP connection as well as its peer connection; node 3 and the
    // client keep theirs.
    links.block(1, 2);
    wait_closed(&mut from1).await;
    wait_target_closed(&mut from1_in).await;
    wait_closed(&mut peer1).await;
    assert_eq!(peer1_in.frame().await, None);
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
