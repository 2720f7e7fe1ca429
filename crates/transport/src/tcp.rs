//! [`TcpTransport`]: the real transport, tying the outbound peer tasks and the accept side together.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bulwark_limits::REPLY_ONLY_PEERS;
use bulwark_tls::PeerTls;
use tokio::net::TcpSocket;
use tokio::runtime::Handle;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::{info, trace};

use crate::inbound::{accept_loop, InboundCtx, Registry};
use crate::outbound::{lock, run_peer, Peer};
use crate::{HostPort, NodeId, PeerStats, Transport, TransportOptions};

/// Raft messages over TCP. See the crate documentation for the protocol and the guarantees.
pub struct TcpTransport {
    me: NodeId,
    cluster_id: u64,
    opts: Arc<TransportOptions>,
    local_addr: SocketAddr,
    /// Where our hellos say our listener is reached.
    advertised: SocketAddr,
    /// The inbound side's connections, with the address each connected peer announced.
    registry: Arc<Mutex<Registry>>,
    /// Our certificate and the cluster CA: every connection, either way, is mutual TLS.
    tls: PeerTls,
    /// Where peer tasks are spawned, so `set_peers` works from threads outside the runtime.
    runtime: Handle,
    peers: Mutex<HashMap<NodeId, PeerEntry>>,
    unknown_peer_drops: AtomicU64,
    shutdown: watch::Sender<bool>,
    accept_task: Option<JoinHandle<()>>,
}

struct PeerEntry {
    peer: Arc<Peer>,
    task: JoinHandle<()>,
    /// Not one of `set_peers`'s: a peer that connected to us, sent to at the address its hello
    /// announced until the next `set_peers` (a node lagging behind the entry that added its
    /// leader must still answer it, or it never catches up).
    reply_only: bool,
}

impl TcpTransport {
    /// Binds `listen` (port 0 picks a free port; see [`local_addr`](Self::local_addr)), accepts inbound
    /// connections and delivers every valid inbound frame as `(from, payload)` on `inbox`. Every
    /// connection, inbound or outbound, is TLS 1.3 with `tls`'s certificate and cluster CA, both
    /// sides authenticated. Must be called inside a tokio runtime. Starts with no peers: call
    /// [`Transport::set_peers`].
    pub async fn start(
        me: NodeId,
        cluster_id: u64,
        listen: SocketAddr,
        inbox: mpsc::Sender<(NodeId, Vec<u8>)>,
        tls: PeerTls,
        opts: TransportOptions,
    ) -> std::io::Result<TcpTransport> {
        opts.validate()?;
        let socket = if listen.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        // A restarted node must be able to bind its port while old connections linger in TIME_WAIT.
        socket.set_reuseaddr(true)?;
        socket.bind(listen)?;
        let listener = socket.listen(1024)?;
        let local_addr = listener.local_addr()?;
        let advertised = opts.advertised_addr.unwrap_or(local_addr);
        let opts = Arc::new(opts);
        let (shutdown, shutdown_rx) = watch::channel(false);
        let registry = Arc::new(Mutex::new(Registry::default()));
        let ctx = Arc::new(InboundCtx {
            me,
            cluster_id,
            opts: opts.clone(),
            inbox,
            registry: registry.clone(),
            tls: tls.clone(),
        });
        let accept_task = tokio::spawn(accept_loop(listener, ctx, shutdown_rx));
        info!(node = me.0, cluster_id, addr = %local_addr, "transport listening");
        Ok(TcpTransport {
            me,
            cluster_id,
            opts,
            local_addr,
            advertised,
            registry,
            tls,
            runtime: Handle::current(),
            peers: Mutex::new(HashMap::new()),
            unknown_peer_drops: AtomicU64::new(0),
            shutdown,
            accept_task: Some(accept_task),
        })
    }

    /// The address actually bound (with the real port when `listen` asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Frames dropped by `send` because the destination was not a current peer.
    pub fn unknown_peer_drops(&self) -> u64 {
        self.unknown_peer_drops.load(Ordering::Relaxed)
    }

    /// Stops accepting, closes every connection (queued frames are discarded) and waits until all tasks
    /// have ended, so the port can be bound again when this returns.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        if let Some(task) = self.accept_task.take() {
            let _ = task.await;
        }
        let entries: Vec<PeerEntry> = lock(&self.peers).drain().map(|(_, e)| e).collect();
        for entry in entries {
            entry.task.abort();
            let _ = entry.task.await;
        }
        info!(node = self.me.0, addr = %self.local_addr, "transport shut down");
    }
}

impl TcpTransport {
    fn spawn_peer(&self, id: NodeId, addr: HostPort, reply_only: bool) -> PeerEntry {
        let peer = Arc::new(Peer::new(id, addr));
        let task = self.runtime.spawn(run_peer(
            peer.clone(),
            self.me,
            self.cluster_id,
            self.advertised,
            self.tls.clone(),
            self.opts.clone(),
        ));
        PeerEntry {
            peer,
            task,
            reply_only,
        }
    }

    /// A peer for `to`, which is not one of ours but is connected to us now: at the address its
    /// hello announced. At most [`REPLY_ONLY_PEERS`] such peers at once.
    fn reply_peer(&self, to: NodeId) -> Option<Arc<Peer>> {
        let addr = lock(&self.registry).announced(to)?;
        let mut current = lock(&self.peers);
        if let Some(entry) = current.get(&to) {
            return Some(entry.peer.clone());
        }
        if current.values().filter(|e| e.reply_only).count() >= REPLY_ONLY_PEERS {
            return None;
        }
        let entry = self.spawn_peer(to, HostPort::Ip(addr), true);
        let peer = entry.peer.clone();
        current.insert(to, entry);
        info!(peer = to.0, %addr, "replying to a peer not in the address book, at the address it announced");
        Some(peer)
    }
}

impl Drop for TcpTransport {
    /// Dropping without [`shutdown`](TcpTransport::shutdown) still stops every task, without waiting.
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
        if let Some(task) = self.accept_task.take() {
            task.abort();
        }
        for (_, entry) in lock(&self.peers).drain() {
            entry.task.abort();
        }
    }
}

impl Transport for TcpTransport {
    fn send(&self, to: NodeId, payload: Vec<u8>) {
        let peer = lock(&self.peers).get(&to).map(|e| e.peer.clone());
        match peer.or_else(|| self.reply_peer(to)) {
            Some(peer) => peer.enqueue(payload, &self.opts),
            None => {
                self.unknown_peer_drops.fetch_add(1, Ordering::Relaxed);
                trace!(to = to.0, "dropping frame for unknown peer");
            }
        }
    }

    /// Our own id is ignored if listed: Raft never sends to itself over the network.
    fn set_peers(&self, peers: &[(NodeId, HostPort)]) {
        let wanted: HashMap<NodeId, HostPort> = peers
            .iter()
            .filter(|(id, _)| *id != self.me)
            .cloned()
            .collect();
        let mut current = lock(&self.peers);
        current.retain(|id, entry| {
            let keep = wanted.get(id) == Some(&entry.peer.addr);
            if keep {
                entry.reply_only = false;
            } else {
                entry.task.abort();
                info!(peer = id.0, addr = %entry.peer.addr, "peer removed");
            }
            keep
        });
        for (id, addr) in wanted {
            if let std::collections::hash_map::Entry::Vacant(slot) = current.entry(id) {
                info!(peer = id.0, %addr, "peer added");
                slot.insert(self.spawn_peer(id, addr, false));
            }
        }
    }

    fn stats(&self) -> Vec<PeerStats> {
        let peers: Vec<Arc<Peer>> = lock(&self.peers).values().map(|e| e.peer.clone()).collect();
        let mut stats: Vec<PeerStats> = peers.iter().map(|p| p.stats()).collect();
        stats.sort_by_key(|s| s.peer);
        stats
    }
}
