//! A fault-injecting TCP proxy in front of every node's peer transport and HTTP API: the chaos
//! harness's network nemesis.
//!
//! The harness starts each node with its real peer and HTTP listeners on private ports and advertises
//! to the other nodes proxy addresses that forward to them, so that all node-to-node traffic crosses
//! the proxy: Raft messages, a follower's forwarded writes and membership changes, snapshot fetches.
//! The proxy knows which node is dialing by the connection's **source IP**: the harness gives every
//! node its own loopback IP, and a node binds every connection it makes to another member (transport
//! dials, its HTTP clients) to that IP. A listener that stands for node `to`, accepting a connection
//! from node `from`'s IP, thus knows which directed link `from → to` the connection carries. That is
//! all a partition needs: the proxy never reads, parses or edits what it forwards (the peer transport
//! may be encrypted), it only cuts links.
//!
//! Bytes are copied **both ways** on every connection: an HTTP connection carries requests and their
//! answers, a peer connection its TLS handshake before the dialer's frames. A connection belongs to
//! the link of the node that dialed it, whichever way its bytes flow: blocking `from → to` cuts what
//! `from` opened into `to` (so `from` can no longer deliver anything to `to`), and leaves alone what
//! `to` opened into `from` (that is `to → from`).
//!
//! Blocking is done by **closing** connections, never by holding or trimming bytes:
//! - when a link `from → to` becomes blocked, every open proxied connection from `from` into `to` is
//!   closed at once: the dialer gets a reset (so it notices immediately and reconnects with backoff),
//!   the target gets an end of stream (so a frame cut in half is discarded by its decoder as truncated,
//!   and frames fully forwarded before the block are still delivered, like packets already on the
//!   wire);
//! - while the link stays blocked, a new connection from `from` into `to` is reset right after the
//!   accept. The target never sees it.
//!
//! Raft tolerates lost messages and the transport reconnects by itself, so this is indistinguishable
//! from a network that drops everything on the link, minus the long TCP timeouts a silent drop would
//! cost (which would slow the test without testing anything more).
//!
//! # Connections from an IP of no node
//!
//! Only nodes dial peer ports, so a connection into a **peer** route from an IP that maps to no node is
//! reset right after the accept, whatever the links, and counted ([`ProxyStats::peer_strangers`]): the
//! target never sees it (a node started without its own source IP would show up there). Into an
//! **HTTP** route it is a client (the workload, the harness, which connect from 127.0.0.1): forwarded,
//! and never blocked.
//!
//! Link control ([`Links`]) is a cheap, cloneable, synchronous handle: the nemesis can flip links from
//! any thread, and when [`Links::block`] returns no byte read afterwards from a cut connection is
//! forwarded.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

/// Limit on connecting to a node's real peer (or HTTP) listener. A node that is down refuses at once;
/// this only bounds a node that is paused (SIGSTOP) with a full accept backlog.
pub const TARGET_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Size of each read when copying (per direction per connection).
const COPY_CHUNK: usize = 64 << 10;

/// One listener of a [`Proxy`]: connections to `listen` are forwarded to node `node`'s real peer (or
/// HTTP) listener at `target`.
pub type Route = (u64, SocketAddr, SocketAddr);

/// The proxy: one listener per node (and one more per node whose HTTP is proxied), all sharing one set
/// of blocked links.
///
/// Dropping it stops everything without waiting; [`Proxy::shutdown`] also waits until every task has
/// ended, so the ports can be bound again when it returns.
pub struct Proxy {
    links: Links,
    addrs: Vec<(u64, SocketAddr)>,
    http_addrs: Vec<(u64, SocketAddr)>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

/// Binds a listener that a restarted harness can bind again while old connections sit in TIME_WAIT.
fn bind(listen: SocketAddr) -> io::Result<TcpListener> {
    let socket = if listen.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(listen)?;
    socket.listen(1024)
}

/// Refuses a node id that appears in two routes of one kind (a node has one proxy address per kind,
/// and the node id is what names the link).
fn check_unique(routes: &[Route], kind: &str) -> io::Result<()> {
    let mut seen = BTreeSet::new();
    for (node, _, _) in routes {
        if !seen.insert(*node) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("node {node} has more than one {kind} proxy route"),
            ));
        }
    }
    Ok(())
}

impl Proxy {
    /// Binds one listener per peer route (`(node id, listen address, target address)`; port 0 picks a
    /// free port, see [`Proxy::listen_addr`]) and serves them on the current tokio runtime. The dialing
    /// node is known by its source IP through `sources` (IP → node id); a connection from an IP missing
    /// from it is refused. Returns once every listener is bound, so the addresses can be handed to the
    /// nodes right away. Starts with no link blocked.
    ///
    /// Fails if a listen address cannot be bound, or if a node id appears in two routes (a node has one
    /// proxy address, and the node id is what names the link).
    pub async fn start(routes: Vec<Route>, sources: BTreeMap<IpAddr, u64>) -> io::Result<Proxy> {
        Proxy::start_with(routes, Vec::new(), sources).await
    }

    /// [`Proxy::start`] with HTTP routes as well: each forwards connections to node `node`'s real HTTP
    /// listener. The blocked links apply to both kinds of routes; a connection into an HTTP route from
    /// an IP missing from `sources` is a client, never blocked. See [`Proxy::http_listen_addr`].
    pub async fn start_with(
        peer_routes: Vec<Route>,
        http_routes: Vec<Route>,
        sources: BTreeMap<IpAddr, u64>,
    ) -> io::Result<Proxy> {
        check_unique(&peer_routes, "peer")?;
        check_unique(&http_routes, "HTTP")?;
        let mut listeners = Vec::with_capacity(peer_routes.len() + http_routes.len());
        let mut addrs = Vec::with_capacity(peer_routes.len());
        let mut http_addrs = Vec::with_capacity(http_routes.len());
        for (http, routes) in [(false, peer_routes), (true, http_routes)] {
            for (node, listen, target) in routes {
                let listener = bind(listen)?;
                let bound = (node, listener.local_addr()?);
                if http {
                    http_addrs.push(bound);
                } else {
                    addrs.push(bound);
                }
                listeners.push((node, listener, target, http));
            }
        }
        let links = Links::new(sources);
        let (shutdown, shutdown_rx) = watch::channel(false);
        let tasks = listeners
            .into_iter()
            .map(|(node, listener, target, http)| {
                tokio::spawn(accept_loop(
                    node,
                    listener,
                    target,
                    http,
                    links.shared.clone(),
                    shutdown_rx.clone(),
                ))
            })
            .collect();
        Ok(Proxy {
            links,
            addrs,
            http_addrs,
            shutdown,
            tasks,
        })
    }

    /// The handle that blocks and heals links (and reads the counters). Clones share everything.
    pub fn links(&self) -> Links {
        self.links.clone()
    }

    /// The address actually bound for `node` (with the real port when its route asked for port 0).
    pub fn listen_addr(&self, node: u64) -> Option<SocketAddr> {
        self.addrs
            .iter()
            .find(|(n, _)| *n == node)
            .map(|(_, addr)| *addr)
    }

    /// Every `(node id, bound address)`, in the order of the routes.
    pub fn listen_addrs(&self) -> Vec<(u64, SocketAddr)> {
        self.addrs.clone()
    }

    /// The address bound for `node`'s HTTP route, if it has one.
    pub fn http_listen_addr(&self, node: u64) -> Option<SocketAddr> {
        self.http_addrs
            .iter()
            .find(|(n, _)| *n == node)
            .map(|(_, addr)| *addr)
    }

    /// Shorthand for `self.links().stats()`.
    pub fn stats(&self) -> ProxyStats {
        self.links.stats()
    }

    /// Stops accepting, closes every proxied connection and waits until all tasks have ended.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        for task in std::mem::take(&mut self.tasks) {
            let _ = task.await;
        }
    }
}

impl Drop for Proxy {
    /// Aborting an accept loop drops its set of connection tasks, which aborts them and closes their
    /// sockets: nothing outlives the proxy.
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// The shared link control of a [`Proxy`]: which directed links `(from, to)` are blocked, the open
/// connections (so a block can cut them), and the counters. Cheap to clone; every method is synchronous
/// and takes one short lock, so it can be called from any thread, inside or outside the runtime.
#[derive(Clone)]
pub struct Links {
    shared: Arc<Shared>,
}

struct Shared {
    state: Mutex<State>,
    /// Which node each source IP stands for (canonical IPs).
    sources: BTreeMap<IpAddr, u64>,
    /// Peer connections from an IP of no node (reset right after the accept).
    peer_strangers: AtomicU64,
    /// HTTP connections from an IP of no node (never blocked).
    unmapped: Arc<LinkCounters>,
}

#[derive(Default)]
struct State {
    blocked: BTreeSet<(u64, u64)>,
    /// Open proxied connections by connection number.
    conns: HashMap<u64, Conn>,
    next_conn: u64,
    /// Peer and HTTP links, counted apart.
    counters: BTreeMap<(u64, u64), Arc<LinkCounters>>,
    http_counters: BTreeMap<(u64, u64), Arc<LinkCounters>>,
}

impl State {
    fn counters(&mut self, http: bool) -> &mut BTreeMap<(u64, u64), Arc<LinkCounters>> {
        if http {
            &mut self.http_counters
        } else {
            &mut self.counters
        }
    }
}

/// An open proxied connection, as the link control sees it.
struct Conn {
    from: u64,
    to: u64,
    /// Into an HTTP listener (else a peer listener).
    http: bool,
    /// Set to `true` to cut the connection; its task checks it before every write.
    cut: watch::Sender<bool>,
}

#[derive(Default)]
struct LinkCounters {
    accepted: AtomicU64,
    refused: AtomicU64,
    cut: AtomicU64,
    target_failures: AtomicU64,
    bytes: AtomicU64,
    bytes_back: AtomicU64,
}

/// The counters of one directed link `from → to` since the proxy started (for the chaos report).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LinkStats {
    pub from: u64,
    pub to: u64,
    /// Connections from `from`'s IP accepted while the link was open (forwarded to the target, or
    /// tried to be).
    pub accepted: u64,
    /// Connections from `from`'s IP reset right after the accept because the link was blocked.
    pub refused: u64,
    /// Open connections closed by a block.
    pub cut: u64,
    /// Accepted connections closed because the target node could not be reached (down or paused).
    pub target_failures: u64,
    /// Bytes forwarded from the dialer (`from`) to the target (`to`) only; the other direction is
    /// `bytes_back`.
    pub bytes: u64,
    /// Bytes forwarded from the target back to the dialer: on an HTTP link the answers, on a peer link
    /// whatever the transport's acceptor sends (e.g. its half of a TLS handshake).
    pub bytes_back: u64,
    /// Proxied connections open right now.
    pub open: usize,
}

/// Every counter of a [`Proxy`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProxyStats {
    /// One entry per peer link that has seen a connection, ordered by `(from, to)`.
    pub links: Vec<LinkStats>,
    /// The same for HTTP links (connections from a node's IP into another node's HTTP route).
    pub http_links: Vec<LinkStats>,
    /// HTTP connections from an IP of no node (clients, the harness: never blocked).
    pub http_unmapped: u64,
    /// Peer connections from an IP of no node, reset right after the accept (only nodes dial peer
    /// ports). Not part of any link.
    pub peer_strangers: u64,
}

impl ProxyStats {
    /// The counters of `from → to` (all zero if it never saw a connection).
    pub fn link(&self, from: u64, to: u64) -> LinkStats {
        find_link(&self.links, from, to)
    }

    /// The HTTP counters of `from → to` (all zero if it never saw a connection).
    pub fn http_link(&self, from: u64, to: u64) -> LinkStats {
        find_link(&self.http_links, from, to)
    }
}

fn find_link(links: &[LinkStats], from: u64, to: u64) -> LinkStats {
    links
        .iter()
        .find(|l| l.from == from && l.to == to)
        .cloned()
        .unwrap_or(LinkStats {
            from,
            to,
            ..LinkStats::default()
        })
}

impl Links {
    fn new(sources: BTreeMap<IpAddr, u64>) -> Links {
        Links {
            shared: Arc::new(Shared {
                state: Mutex::new(State::default()),
                sources: sources
                    .into_iter()
                    .map(|(ip, node)| (ip.to_canonical(), node))
                    .collect(),
                peer_strangers: AtomicU64::new(0),
                unmapped: Arc::default(),
            }),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.shared.lock()
    }

    /// Blocks `from → to` and cuts its open connections. The other direction is untouched. `(n, n)` is
    /// ignored (a node never dials itself).
    pub fn block(&self, from: u64, to: u64) {
        if from == to {
            return;
        }
        let mut st = self.state();
        st.blocked.insert((from, to));
        st.cut_blocked();
    }

    /// Lets new connections from `from` into `to` through again (cut ones stay closed: the dialer
    /// reconnects by itself).
    pub fn unblock(&self, from: u64, to: u64) {
        self.state().blocked.remove(&(from, to));
    }

    /// Unblocks every link.
    pub fn heal(&self) {
        self.state().blocked.clear();
    }

    /// Makes exactly `blocked` the set of blocked links: links not in it are unblocked, newly blocked
    /// ones have their connections cut. Pairs `(n, n)` are ignored (a node never dials itself). Use with
    /// [`partition`], [`bridge`] and [`one_way`].
    pub fn set_blocked(&self, blocked: impl IntoIterator<Item = (u64, u64)>) {
        let blocked: BTreeSet<(u64, u64)> = blocked.into_iter().filter(|(f, t)| f != t).collect();
        let mut st = self.state();
        st.blocked = blocked;
        st.cut_blocked();
    }

    /// Whether `from → to` is blocked.
    pub fn is_blocked(&self, from: u64, to: u64) -> bool {
        self.state().blocked.contains(&(from, to))
    }

    /// The blocked links, ordered.
    pub fn blocked(&self) -> BTreeSet<(u64, u64)> {
        self.state().blocked.clone()
    }

    /// Every counter, as of this call.
    pub fn stats(&self) -> ProxyStats {
        let st = self.state();
        let mut open: BTreeMap<(bool, u64, u64), usize> = BTreeMap::new();
        for conn in st.conns.values() {
            *open.entry((conn.http, conn.from, conn.to)).or_default() += 1;
        }
        let links =
            |http: bool, counters: &BTreeMap<(u64, u64), Arc<LinkCounters>>| -> Vec<LinkStats> {
                counters
                    .iter()
                    .map(|(&(from, to), c)| LinkStats {
                        from,
                        to,
                        accepted: c.accepted.load(Ordering::Relaxed),
                        refused: c.refused.load(Ordering::Relaxed),
                        cut: c.cut.load(Ordering::Relaxed),
                        target_failures: c.target_failures.load(Ordering::Relaxed),
                        bytes: c.bytes.load(Ordering::Relaxed),
                        bytes_back: c.bytes_back.load(Ordering::Relaxed),
                        open: open.get(&(http, from, to)).copied().unwrap_or(0),
                    })
                    .collect()
            };
        ProxyStats {
            links: links(false, &st.counters),
            http_links: links(true, &st.http_counters),
            http_unmapped: self.shared.unmapped.accepted.load(Ordering::Relaxed),
            peer_strangers: self.shared.peer_strangers.load(Ordering::Relaxed),
        }
    }
}

impl Shared {
    /// The state stays consistent even if a holder panicked (every update is a single insert/remove),
    /// so a poisoned lock is used as is rather than taking the whole harness down.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Admits a connection from `source` into node `to`'s HTTP (`http`) or peer listener, or refuses it
    /// (`None`: to be reset at once). A node's IP obeys the blocked links; any other IP is a client on
    /// an HTTP route (never blocked) and a stranger on a peer route (always refused).
    fn identify(self: &Arc<Self>, source: IpAddr, to: u64, http: bool) -> Option<Admitted> {
        match self.sources.get(&source.to_canonical()) {
            Some(&from) => self.admit(from, to, http),
            None if http => Some(self.admit_unmapped()),
            None => {
                self.peer_strangers.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }

    /// Admits a connection that comes from node `from` (its source IP says so), or refuses it if
    /// `from → to` is blocked. Checking and registering under one lock is what makes a concurrent block
    /// either refuse the connection here or find it registered and cut it.
    fn admit(self: &Arc<Self>, from: u64, to: u64, http: bool) -> Option<Admitted> {
        let mut st = self.lock();
        let counters = st.counters(http).entry((from, to)).or_default().clone();
        if st.blocked.contains(&(from, to)) {
            counters.refused.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        counters.accepted.fetch_add(1, Ordering::Relaxed);
        st.next_conn += 1;
        let id = st.next_conn;
        let (cut, cut_rx) = watch::channel(false);
        st.conns.insert(
            id,
            Conn {
                from,
                to,
                http,
                cut,
            },
        );
        Some(Admitted {
            _registration: Some(Registration {
                shared: self.clone(),
                id,
            }),
            cut: cut_rx,
            _uncuttable: None,
            counters,
        })
    }

    /// An HTTP connection from an IP of no node: never registered, so no block can cut it.
    fn admit_unmapped(&self) -> Admitted {
        self.unmapped.accepted.fetch_add(1, Ordering::Relaxed);
        let (never, cut) = watch::channel(false);
        Admitted {
            _registration: None,
            cut,
            _uncuttable: Some(never),
            counters: self.unmapped.clone(),
        }
    }
}

impl State {
    /// Cuts every open connection on a blocked link.
    fn cut_blocked(&mut self) {
        for conn in self.conns.values() {
            if self.blocked.contains(&(conn.from, conn.to)) && !conn.cut.send_replace(true) {
                let counters = if conn.http {
                    &self.http_counters
                } else {
                    &self.counters
                };
                if let Some(c) = counters.get(&(conn.from, conn.to)) {
                    c.cut.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
}

/// Partition into `groups`: every link between two nodes that share no group is blocked, both ways.
/// Links within a group, and of nodes listed in no group, are left open. With disjoint groups this is
/// the classic partition; a node listed in several groups talks to all of them (see [`bridge`]).
pub fn partition(groups: &[Vec<u64>]) -> BTreeSet<(u64, u64)> {
    let nodes: BTreeSet<u64> = groups.iter().flatten().copied().collect();
    let mut blocked = BTreeSet::new();
    for &a in &nodes {
        for &b in &nodes {
            let together = groups.iter().any(|g| g.contains(&a) && g.contains(&b));
            if a != b && !together {
                blocked.insert((a, b));
            }
        }
    }
    blocked
}

/// Jepsen's bridge: the nodes of `a` and of `b` cannot reach each other (both ways), but every one of
/// them still talks to `bridge`, which thus talks to all. With five nodes split 2 | 1 | 2, the bridge
/// completes a majority for either side, so both sides may try to lead through it: what must hold is
/// that they never both commit.
pub fn bridge(a: &[u64], bridge: u64, b: &[u64]) -> BTreeSet<(u64, u64)> {
    let mut side_a = a.to_vec();
    side_a.push(bridge);
    let mut side_b = b.to_vec();
    side_b.push(bridge);
    partition(&[side_a, side_b])
}

/// Only `from → to` is blocked for every pair: the nodes of `from` can hear the nodes of `to` but not
/// reach them (asymmetric partitions, e.g. a leader that can no longer send its heartbeats).
pub fn one_way(from: &[u64], to: &[u64]) -> BTreeSet<(u64, u64)> {
    from.iter()
        .flat_map(|&f| to.iter().map(move |&t| (f, t)))
        .filter(|(f, t)| f != t)
        .collect()
}

/// A connection the link control knows about; deregisters itself however its task ends (including by
/// abort at shutdown).
struct Registration {
    shared: Arc<Shared>,
    id: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.shared.lock().conns.remove(&self.id);
    }
}

/// A connection let through: dropping it deregisters it.
struct Admitted {
    /// Held until the connection is closed. `None` for an unmapped HTTP source: not known to the link
    /// control.
    _registration: Option<Registration>,
    cut: watch::Receiver<bool>,
    /// Keeps `cut` open (a dropped sender reads as a cut) for a connection no block can reach.
    _uncuttable: Option<watch::Sender<bool>>,
    counters: Arc<LinkCounters>,
}

/// Accepts connections for node `to` (into its HTTP listener if `http`, else its peer listener) until
/// `shutdown` fires, then closes the listener and every connection it spawned (and waits for their
/// tasks).
async fn accept_loop(
    to: u64,
    listener: TcpListener,
    target: SocketAddr,
    http: bool,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            biased;
            _ = shutdown.changed() => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, dialer)) => {
                    conns.spawn(serve(stream, dialer, to, target, http, shared.clone()));
                }
                // E.g. out of file descriptors: back off instead of spinning.
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            },
        }
    }
    drop(listener);
    conns.shutdown().await;
}

/// Resets a connection: the peer's next read or write fails at once, which the transport's dialer
/// answers by reconnecting with backoff.
fn reset(stream: TcpStream) {
    let _ = stream.set_zero_linger();
    drop(stream);
}

/// One proxied connection into node `to`, from `dialer_addr`: identified by its source IP alone (no
/// byte is read before the decision), then forwarded both ways until either side closes or a block
/// cuts it. The same for peer and HTTP routes.
async fn serve(
    mut dialer: TcpStream,
    dialer_addr: SocketAddr,
    to: u64,
    target: SocketAddr,
    http: bool,
    shared: Arc<Shared>,
) {
    let Some(admitted) = shared.identify(dialer_addr.ip(), to, http) else {
        reset(dialer);
        return;
    };
    let target =
        match tokio::time::timeout(TARGET_CONNECT_TIMEOUT, TcpStream::connect(target)).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(_)) | Err(_) => {
                admitted
                    .counters
                    .target_failures
                    .fetch_add(1, Ordering::Relaxed);
                reset(dialer);
                return;
            }
        };
    match relay(&mut dialer, target, &admitted).await {
        // The dialer must notice at once.
        Outcome::Cut | Outcome::Failed => reset(dialer),
        Outcome::Ended => drop(dialer),
    }
    // Deregisters the connection, now closed.
    drop(admitted);
}

/// Copies bytes both ways between `dialer` and `target` until both sides have closed, one fails, or
/// the connection is cut. Drops `target` with a normal close, so the target sees an end of stream (and
/// discards any partial frame as truncated); what happens to `dialer` is the caller's, by the outcome.
async fn relay(dialer: &mut TcpStream, mut target: TcpStream, admitted: &Admitted) -> Outcome {
    let _ = dialer.set_nodelay(true);
    let _ = target.set_nodelay(true);
    let (mut dialer_r, mut dialer_w) = dialer.split();
    let (mut target_r, mut target_w) = target.split();
    let counters = &admitted.counters;
    let forward = async {
        copy(&mut dialer_r, &mut target_w, &admitted.cut, &counters.bytes).await?;
        // The dialer closed its side: pass the end of stream on, keep relaying the other way.
        target_w.shutdown().await
    };
    let back = async {
        copy(
            &mut target_r,
            &mut dialer_w,
            &admitted.cut,
            &counters.bytes_back,
        )
        .await?;
        dialer_w.shutdown().await
    };
    let mut cut = admitted.cut.clone();
    tokio::select! {
        biased;
        // A dropped sender means the proxy is going away: close all the same.
        _ = cut.wait_for(|c| *c) => Outcome::Cut,
        r = async { tokio::try_join!(forward, back) } => match r {
            Ok(_) => Outcome::Ended,
            Err(_) => Outcome::Failed,
        },
    }
}

enum Outcome {
    /// Closed by a block.
    Cut,
    /// Both sides closed cleanly.
    Ended,
    /// One side failed (reset, broken pipe).
    Failed,
}

fn cut_error() -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionAborted, "link blocked")
}

/// Writes all of `buf`, checking the cut flag before every write: once a block has set it, not one more
/// byte reaches the target, whatever this task was doing when the block came.
async fn write_unless_cut<W: AsyncWrite + Unpin>(
    w: &mut W,
    mut buf: &[u8],
    cut: &watch::Receiver<bool>,
    count: &AtomicU64,
) -> io::Result<()> {
    while !buf.is_empty() {
        if *cut.borrow() {
            return Err(cut_error());
        }
        let n = w.write(buf).await?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        count.fetch_add(n as u64, Ordering::Relaxed);
        buf = &buf[n..];
    }
    Ok(())
}

/// Copies until `r` ends (returns) or fails or the connection is cut (an error).
async fn copy<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(
    r: &mut R,
    w: &mut W,
    cut: &watch::Receiver<bool>,
    count: &AtomicU64,
) -> io::Result<()> {
    let mut buf = vec![0u8; COPY_CHUNK];
    loop {
        let n = r.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        write_unless_cut(w, &buf[..n], cut, count).await?;
    }
}
