//! Real nodes in one process: each a `bulwark_node` loop on its own data directory (Raft log and
//! state store on disk), joined by an in-memory network that hands every Raft message to its
//! receiver's handle, through a filter the test sets (a partition, messages of one kind
//! dropped). Each member's peer port is a TCP listener that counts the connections it gets
//! and closes them: nothing but forwarding or a snapshot fetch dials a peer port here, so a
//! count above zero means a node reached out to a member over internal HTTP.

#![allow(dead_code)]

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use bulwark_ledger::access::{Actor, Control, ControlCommand, TokenId};
use bulwark_ledger::Operation;
use bulwark_node::cluster::{ClusterConfig, Member};
use bulwark_node::{Answer, ClusterStatus, Metrics, NodeConfig, NodeHandle, Query};
use bulwark_transport::{NodeId, PeerStats, Transport};
use http_body_util::BodyExt;
use raft::eraftpb::Message;
use tower::ServiceExt;

/// One Raft tick: short, so that elections and quorum checks take tens of milliseconds.
pub const TICK: Duration = Duration::from_millis(10);

pub const PATIENCE: Duration = Duration::from_secs(30);

/// Whether a message from one node to another is delivered.
pub type Filter = dyn Fn(u64, u64, &Message) -> bool + Send + Sync;

/// The in-memory network.
pub struct Net {
    handles: RwLock<HashMap<u64, NodeHandle>>,
    filter: RwLock<Arc<Filter>>,
}

impl Net {
    /// From now on, only messages `filter(from, to, message)` lets through are delivered.
    pub fn set_filter(&self, filter: impl Fn(u64, u64, &Message) -> bool + Send + Sync + 'static) {
        *self.filter.write().unwrap() = Arc::new(filter);
    }

    pub fn heal(&self) {
        self.set_filter(|_, _, _| true);
    }
}

/// One node's outbound side of the [`Net`].
struct NetTransport {
    from: u64,
    net: Arc<Net>,
}

impl Transport for NetTransport {
    fn send(&self, to: NodeId, payload: Vec<u8>) {
        let Some(message) = bulwark_node::cluster::decode_peer_message(self.from, &payload) else {
            return;
        };
        let filter = self.net.filter.read().unwrap().clone();
        if !filter(self.from, to.0, &message.message) {
            return;
        }
        if let Some(handle) = self.net.handles.read().unwrap().get(&to.0) {
            handle.deliver_peer_message(message);
        }
    }

    fn set_peers(&self, _: &[(NodeId, bulwark_transport::HostPort)]) {}

    fn stats(&self) -> Vec<PeerStats> {
        Vec::new()
    }
}

/// A member's peer port: counts the connections made to it and closes each at once.
pub struct PeerPort {
    pub addr: SocketAddr,
    connections: Arc<AtomicUsize>,
}

impl PeerPort {
    fn bind() -> PeerPort {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let counted = connections.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                counted.fetch_add(1, Ordering::SeqCst);
                drop(stream);
            }
        });
        PeerPort { addr, connections }
    }

    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

pub struct InProcess {
    pub net: Arc<Net>,
    nodes: HashMap<u64, bulwark_node::Node>,
    pub peer_ports: HashMap<u64, PeerPort>,
    /// The cluster's first admin token (registered by [`InProcess::start`]).
    pub token: String,
    _dir: tempfile::TempDir,
}

impl InProcess {
    /// `n` members, started, with a leader elected and the admin token known to every node.
    pub async fn start(n: u64) -> InProcess {
        let dir = tempfile::tempdir().unwrap();
        let net = Arc::new(Net {
            handles: RwLock::new(HashMap::new()),
            filter: RwLock::new(Arc::new(|_, _, _| true)),
        });
        let peer_ports: HashMap<u64, PeerPort> = (1..=n).map(|id| (id, PeerPort::bind())).collect();
        let members: Vec<Member> = (1..=n)
            .map(|id| Member {
                id,
                peer_addr: peer_ports[&id].addr.into(),
                http_addr: "127.0.0.1:9".parse().unwrap(),
            })
            .collect();
        let mut nodes = HashMap::new();
        for id in 1..=n {
            let cluster = ClusterConfig {
                node_id: id,
                cluster_id: 0xC1,
                members: members.clone(),
                tick: TICK,
                join: false,
                source_ip: None,
                peer_http: None,
            };
            let config = NodeConfig::new(dir.path().join(format!("node-{id}")));
            let transport = Arc::new(NetTransport {
                from: id,
                net: net.clone(),
            });
            let node = bulwark_node::cluster::start_cluster(
                config,
                cluster,
                transport,
                Arc::new(Metrics::default()),
            )
            .unwrap();
            net.handles.write().unwrap().insert(id, node.handle());
            nodes.insert(id, node);
        }
        let mut cluster = InProcess {
            net,
            nodes,
            peer_ports,
            token: String::new(),
            _dir: dir,
        };
        cluster.token = cluster.register_admin_token().await;
        cluster
    }

    pub fn handle(&self, id: u64) -> NodeHandle {
        self.nodes[&id].handle()
    }

    pub fn ids(&self) -> Vec<u64> {
        let mut ids: Vec<u64> = self.nodes.keys().copied().collect();
        ids.sort_unstable();
        ids
    }

    /// Node `id`'s view of the cluster, from its own state (no leader needed).
    pub async fn status(&self, id: u64) -> ClusterStatus {
        let outcome = self.handle(id).read_stale(Query::Status).await.unwrap();
        let Answer::Status(status) = outcome.answer else {
            panic!("a status query answered {:?}", outcome.answer)
        };
        status.cluster.expect("a member reports its cluster")
    }

    /// The leader every node names, once they all name the same one.
    pub async fn wait_leader(&self) -> u64 {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let mut named = Vec::new();
            for id in self.ids() {
                named.push(self.status(id).await.leader.map(|l| l.0));
            }
            if let Some(Some(leader)) = named.first().copied() {
                if named.iter().all(|n| *n == Some(leader)) {
                    return leader;
                }
            }
            assert!(Instant::now() < deadline, "no agreed leader: {named:?}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Proposes a first admin token at the leader and waits until every node knows it.
    async fn register_admin_token(&self) -> String {
        let token = bulwark_token::generate();
        let deadline = Instant::now() + PATIENCE;
        loop {
            let leader = self.wait_leader().await;
            let operation = Operation::Control(Box::new(Control {
                actor: Actor::Node(leader),
                command: ControlCommand::BootstrapAdmin {
                    id: TokenId(token.id),
                    secret_hash: token.secret_hash,
                },
            }));
            if self.handle(leader).write(operation).await.is_ok() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the admin token was never written"
            );
        }
        for id in self.ids() {
            while !self
                .handle(id)
                .access()
                .tokens
                .contains_key(&TokenId(token.id))
            {
                assert!(
                    Instant::now() < deadline,
                    "node {id} never learned the token"
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        token.text
    }

    /// A JSON POST with the admin token.
    pub fn post(&self, path: &str, body: &serde_json::Value) -> Request<Body> {
        Request::post(path)
            .header("content-type", "application/json")
            .header("authorization", format!("Bearer {}", self.token))
            .body(Body::from(body.to_string()))
            .unwrap()
    }
}

impl Drop for InProcess {
    fn drop(&mut self) {
        self.net.handles.write().unwrap().clear();
        for (_, node) in self.nodes.drain() {
            let _ = node.shutdown();
        }
    }
}

/// An answer's status and JSON body.
pub async fn call(
    router: &axum::Router,
    request: Request<Body>,
) -> (StatusCode, serde_json::Value) {
    let response = router.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let body = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(&bytes).into()));
    (status, body)
}
