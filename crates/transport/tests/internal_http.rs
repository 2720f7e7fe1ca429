//! Internal HTTP on the peer port: a connection that negotiates `h2` reaches the internal sink
//! with the node its certificate names, next to the Raft streams of the same port; plain TCP,
//! TLS without a client certificate, a certificate of another CA, and a dialer asking for no
//! protocol reach nothing.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bulwark_tls::PeerTls;
use bulwark_transport::{
    InternalSink, NodeId, PeerHttpClient, TcpTransport, Transport, TransportOptions,
};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_rustls::TlsConnector;

const CLUSTER: u64 = 0x1A7E;
const PATIENCE: Duration = Duration::from_secs(10);

/// Node `id`'s certificate from the CA in `root/ca_name` (made on first use).
fn tls_of(root: &std::path::Path, ca_name: &str, id: u64) -> PeerTls {
    let out = root.join(format!("{ca_name}-{id}"));
    bulwark_tls::provision_node(&root.join(ca_name), CLUSTER, NodeId(id), &out).unwrap();
    PeerTls::load(&out, CLUSTER, NodeId(id)).unwrap()
}

/// A transport whose internal connections are served by a tiny HTTP/2 server answering
/// "node <peer> asked for <path>".
async fn serving(tls: PeerTls) -> (TcpTransport, mpsc::Receiver<(NodeId, Vec<u8>)>) {
    let (sink, mut connections) = mpsc::channel(8);
    let options = TransportOptions {
        internal: Some(InternalSink(sink)),
        ..TransportOptions::default()
    };
    let (tx, rx) = mpsc::channel(64);
    let listen: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let transport = TcpTransport::start(NodeId(1), CLUSTER, listen, tx, tls, options)
        .await
        .unwrap();
    tokio::spawn(async move {
        while let Some(connection) = connections.recv().await {
            let peer = connection.peer();
            let service = hyper::service::service_fn(move |request: http::Request<_>| {
                let text = format!("node {peer} asked for {}", request.uri().path());
                async move {
                    Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(Bytes::from(
                        text,
                    ))))
                }
            });
            tokio::spawn(
                hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(connection), service),
            );
        }
    });
    (transport, rx)
}

async fn get(client: &PeerHttpClient, addr: SocketAddr, path: &str) -> Result<String, String> {
    let request = http::Request::get(path)
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = client
        .send(NodeId(1), addr.into(), request, PATIENCE)
        .await
        .map_err(|e| e.to_string())?;
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?;
    Ok(String::from_utf8_lossy(&body.to_bytes()).into_owned())
}

/// Whatever `stream` answers before it closes (or `PATIENCE` passes).
async fn answer_of(stream: &mut (impl tokio::io::AsyncRead + Unpin)) -> Vec<u8> {
    let mut got = Vec::new();
    let _ = tokio::time::timeout(PATIENCE, stream.read_to_end(&mut got)).await;
    got
}

#[tokio::test]
async fn a_member_gets_internal_http_with_its_certificate_named_as_the_sender() {
    let root = tempfile::tempdir().unwrap();
    let (transport, mut inbox) = serving(tls_of(root.path(), "ca", 1)).await;
    let addr = transport.local_addr();
    let client = PeerHttpClient::new(tls_of(root.path(), "ca", 2), None, PATIENCE);
    assert_eq!(
        get(&client, addr, "/internal/v1/x").await.unwrap(),
        "node 2 asked for /internal/v1/x"
    );
    // The cached connection serves the next requests, many at once.
    let many = (0..20).map(|i| {
        let client = client.clone();
        async move { get(&client, addr, &format!("/{i}")).await }
    });
    for (i, answer) in futures_join_all(many).await.into_iter().enumerate() {
        assert_eq!(answer.unwrap(), format!("node 2 asked for /{i}"));
    }
    // A thread outside the runtime (the snapshot download worker) reads a body too.
    let blocking = client.clone();
    let read = tokio::task::spawn_blocking(move || {
        std::thread::spawn(move || {
            let mut body = blocking
                .blocking_get(NodeId(1), addr.into(), "/snapshot", PATIENCE, PATIENCE)
                .unwrap();
            let mut text = String::new();
            std::io::Read::read_to_string(&mut body, &mut text).unwrap();
            text
        })
        .join()
        .unwrap()
    });
    assert_eq!(read.await.unwrap(), "node 2 asked for /snapshot");
    // Raft streams share the port.
    let (raft, _raft_inbox) = {
        let (tx, rx) = mpsc::channel(64);
        let listen: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let t = TcpTransport::start(
            NodeId(3),
            CLUSTER,
            listen,
            tx,
            tls_of(root.path(), "ca", 3),
            TransportOptions::default(),
        )
        .await
        .unwrap();
        (t, rx)
    };
    raft.set_peers(&[(NodeId(1), addr.into())]);
    raft.send(NodeId(1), b"raft".to_vec());
    let (from, payload) = tokio::time::timeout(PATIENCE, inbox.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!((from, payload.as_slice()), (NodeId(3), b"raft".as_slice()));
}

#[tokio::test]
async fn strangers_get_nothing_from_the_internal_routes() {
    let root = tempfile::tempdir().unwrap();
    let ours = tls_of(root.path(), "ca", 1);
    let (transport, _inbox) = serving(ours.clone()).await;
    let addr = transport.local_addr();

    // Plain HTTP: the port speaks TLS only, and answers nothing in the clear.
    let mut plain = TcpStream::connect(addr).await.unwrap();
    plain
        .write_all(b"GET /internal/v1/snapshot HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let answer = answer_of(&mut plain).await;
    assert!(
        !answer.windows(4).any(|w| w == b"HTTP"),
        "plain HTTP got {answer:?}"
    );

    // TLS with the cluster's CA as root but no client certificate.
    let mut roots = rustls::RootCertStore::empty();
    let ca_pem = std::fs::read(root.path().join("ca").join(bulwark_tls::CA_CERT)).unwrap();
    use rustls::pki_types::pem::PemObject;
    roots
        .add(rustls::pki_types::CertificateDer::from_pem_slice(&ca_pem).unwrap())
        .unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut anonymous = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    anonymous.alpn_protocols = vec![bulwark_tls::ALPN_H2.to_vec()];
    let tcp = TcpStream::connect(addr).await.unwrap();
    let connected = TlsConnector::from(Arc::new(anonymous))
        .connect(ours.server_name(NodeId(1)), tcp)
        .await;
    if let Ok(mut stream) = connected {
        // TLS 1.3: the server refuses the missing certificate after the client's Finished.
        let _ = stream.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await;
        let answer = answer_of(&mut stream).await;
        assert!(answer.is_empty(), "no client certificate got {answer:?}");
    }

    // A certificate of another CA naming node 2 of this very cluster.
    let foreign = PeerHttpClient::new(tls_of(root.path(), "other-ca", 2), None, PATIENCE);
    let refused = get(&foreign, addr, "/internal/v1/snapshot").await;
    assert!(refused.is_err(), "another CA's certificate got {refused:?}");

    // A member's certificate but a dialer that asks for no protocol.
    let mut bare = (*ours.http_client).clone();
    bare.alpn_protocols.clear();
    let tcp = TcpStream::connect(addr).await.unwrap();
    let connected = TlsConnector::from(Arc::new(bare))
        .connect(ours.server_name(NodeId(1)), tcp)
        .await;
    if let Ok(mut stream) = connected {
        let _ = stream.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await;
        let answer = answer_of(&mut stream).await;
        assert!(answer.is_empty(), "no ALPN got {answer:?}");
    }

    // And a member still gets in.
    let member = PeerHttpClient::new(tls_of(root.path(), "ca", 2), None, PATIENCE);
    assert_eq!(
        get(&member, addr, "/a").await.unwrap(),
        "node 2 asked for /a"
    );
}

/// Waits for every future (a tiny join_all, not worth a dependency).
async fn futures_join_all<F>(futures: impl Iterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}
