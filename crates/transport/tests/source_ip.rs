//! Outbound connections come from `TransportOptions::source_ip`: what lets `bulwark chaos`'s proxy
//! tell which node connected. Linux routes all of 127.0.0.0/8 to the loopback interface, so any
//! 127.x.y.z can be bound without setup.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use bulwark_transport::{NodeId, TcpTransport, Transport, TransportOptions};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

const CLUSTER: u64 = 0x50_1C_E1;
/// Generous bound for anything to happen; never a performance assertion.
const PATIENCE: Duration = Duration::from_secs(10);

async fn transport(id: u64, source_ip: Option<IpAddr>) -> TcpTransport {
    let (tx, _rx) = mpsc::channel(16);
    let certs = tempfile::tempdir().unwrap();
    let dir = certs.path().join("tls");
    bulwark_tls::provision_node(&certs.path().join("ca"), CLUSTER, NodeId(id), &dir).unwrap();
    let tls = bulwark_tls::PeerTls::load(&dir, CLUSTER, NodeId(id)).unwrap();
    TcpTransport::start(
        NodeId(id),
        CLUSTER,
        "127.0.0.1:0".parse().unwrap(),
        tx,
        tls,
        TransportOptions {
            backoff_min: Duration::from_millis(10),
            backoff_max: Duration::from_millis(200),
            source_ip,
            ..TransportOptions::default()
        },
    )
    .await
    .expect("start transport")
}

/// Accepts the transport's connection: where it came from. (What it says is encrypted; the
/// other tests read it through a transport.)
async fn accept_dial(listener: &TcpListener) -> SocketAddr {
    let (_stream, peer): (TcpStream, SocketAddr) =
        tokio::time::timeout(PATIENCE, listener.accept())
            .await
            .expect("timed out waiting for the dial")
            .unwrap();
    peer
}

#[tokio::test]
async fn dials_come_from_the_source_ip() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let source = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
    let t = transport(1, Some(source)).await;
    t.set_peers(&[(NodeId(2), listener.local_addr().unwrap().into())]);
    t.send(NodeId(2), b"hi".to_vec());
    let peer = accept_dial(&listener).await;
    assert_eq!(peer.ip(), source);
    t.shutdown().await;
}

#[tokio::test]
async fn without_a_source_ip_the_os_picks_and_another_family_is_ignored() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let t = transport(1, None).await;
    t.set_peers(&[(NodeId(2), listener.local_addr().unwrap().into())]);
    t.send(NodeId(2), b"hi".to_vec());
    let peer = accept_dial(&listener).await;
    assert_eq!(peer.ip(), IpAddr::V4(Ipv4Addr::LOCALHOST));
    t.shutdown().await;

    // An IPv6 source for an IPv4 peer: not bound (it could not be), the dial still works.
    let t = transport(3, Some("::1".parse().unwrap())).await;
    t.set_peers(&[(NodeId(2), listener.local_addr().unwrap().into())]);
    t.send(NodeId(2), b"hi".to_vec());
    let peer = accept_dial(&listener).await;
    assert_eq!(peer.ip(), IpAddr::V4(Ipv4Addr::LOCALHOST));
    t.shutdown().await;
}
