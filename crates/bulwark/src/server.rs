//! `bulwark start`: a node and its HTTP API, with graceful shutdown.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use bulwark_node::cluster::{ClusterConfig, HostPort, Member};
use bulwark_node::identity::{Identity, Requested};
use bulwark_node::{Metrics, Node, NodeConfig};
use tracing_subscriber::EnvFilter;

#[derive(clap::Args, Clone)]
pub struct StartArgs {
    /// Where the log and the state live.
    #[arg(long, default_value = "./bulwark-data", env = "BULWARK_DATA_DIR")]
    pub data_dir: PathBuf,
    /// Address of the HTTP API [default: the address book's, or 127.0.0.1:7070].
    #[arg(long, env = "BULWARK_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Archive every committed entry to this target (a directory, or `s3://bucket/prefix` with
    /// its settings in the `AWS_*` environment variables), in sealed chunks at least
    /// once a second, for point-in-time restore (`bulwark restore --archive`). The leader
    /// archives; every node given it keeps its log until the archive holds it.
    #[arg(long, env = "BULWARK_ARCHIVE")]
    pub archive: Option<String>,
    /// Transfers kept in memory before a checkpoint is written. A checkpoint also starts when
    /// the Raft log holds more entries than this / 8 (at least 1,024) or four segments (at least 64 MiB).
    #[arg(long, default_value_t = bulwark_limits::DEFAULT_CHECKPOINT_TRANSFERS)]
    pub checkpoint_transfers: usize,
    /// Size of one write-ahead log segment, in bytes.
    #[arg(long, default_value_t = bulwark_limits::DEFAULT_SEGMENT_BYTES)]
    pub segment_bytes: u64,
    /// Cluster mode: this node's id among the `--member`s.
    #[arg(long, requires = "members")]
    pub node_id: Option<u64>,
    /// Cluster mode: one member as `ID=PEER_ADDR=HTTP_ADDR` (repeat for each, this node too).
    /// An address is IP:PORT or NAME:PORT; a name is resolved at every connect, so a member
    /// that comes back at a new IP (a Kubernetes pod) is found there. This node's HTTP API
    /// listens on its own HTTP_ADDR, its peer transport on PEER_ADDR (0.0.0.0 and the port when
    /// the address is a name), unless `--http-listen`, `--peer-listen`.
    #[arg(long = "member", value_parser = Member::parse_spec, requires = "node_id")]
    pub members: Vec<Member>,
    /// An id every member of a cluster shares; a node of another cluster is refused [default: the
    /// data directory's, or 1 for a new one].
    #[arg(long)]
    pub cluster_id: Option<u64>,
    /// Cluster mode: one Raft tick in milliseconds (elections after 10–20 ticks).
    #[arg(long, default_value_t = bulwark_limits::DEFAULT_TICK.as_millis() as u64)]
    pub tick_ms: u64,
    /// Cluster mode: join an existing cluster. The `--member`s are only addresses (this node
    /// and at least the leader); the node waits until `bulwark cluster add` makes it a learner.
    #[arg(long, requires = "node_id")]
    pub join: bool,
    /// Where the peer transport listens. A member: instead of its own PEER_ADDR (peers still
    /// dial PEER_ADDR: `bulwark chaos` puts its fault-injecting proxy in between). A single node:
    /// its peer address, where nodes added later reach it [default: the address book's, or the
    /// HTTP port + 100].
    #[arg(long)]
    pub peer_listen: Option<SocketAddr>,
    /// Cluster mode: bind the HTTP API here instead of this node's own HTTP_ADDR. Other members
    /// still reach it at HTTP_ADDR (`bulwark chaos` proxies that too).
    #[arg(long, requires = "node_id")]
    pub http_listen: Option<SocketAddr>,
    /// Where this node's certificates are (`ca.crt`, `node.crt`, `node.key`; see `bulwark
    /// cert`) [default: <data-dir>/tls; a new single node creates them there].
    #[arg(long, env = "BULWARK_TLS_DIR")]
    pub tls_dir: Option<PathBuf>,
    /// A file holding the cluster's first admin token (give every member of a new cluster the
    /// same one) [default: a new single node, or the lowest id among the `--member`s, makes one
    /// in <data-dir>/admin.token and prints it].
    #[arg(long, env = "BULWARK_ADMIN_TOKEN_FILE")]
    pub admin_token_file: Option<PathBuf>,
    /// Requests a second each API token may send (bursts of one second's worth); past it, 429.
    #[arg(long, default_value_t = bulwark_limits::DEFAULT_TOKEN_RATE_LIMIT)]
    pub token_rate_limit: u32,
    /// Serve the client API over TLS on a loopback address too (`api.crt`, `api.key` in the TLS
    /// directory; a single node that is its own CA issues them). Beyond loopback TLS is always on.
    #[arg(long)]
    pub api_tls: bool,
    /// Serve the client API in plain HTTP beyond loopback, without certificates. Anyone on the
    /// network reads and changes the ledger's traffic: for a private test network only.
    #[arg(long)]
    pub insecure: bool,
    /// How log lines are written on stderr: `text` for people, `json` (one object a line, with
    /// the request id of a line logged while serving a request) for log collectors.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, env = "BULWARK_LOG_FORMAT")]
    pub log_format: LogFormat,
    #[command(flatten)]
    pub relay: crate::relay_args::RelayArgs,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// Log lines on stderr in text, at the level `RUST_LOG` says (info by default).
pub fn init_logging() {
    init_logging_as(LogFormat::Text);
}

pub fn init_logging_as(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        // The current span's fields (a request's id) on each line, not the whole span list.
        LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
    };
}

pub async fn start(args: StartArgs) -> ExitCode {
    init_logging_as(args.log_format);
    // Every file and directory the node creates (the data directory, the Raft log, the state
    // store, its keys) is its owner's alone: balances are nobody else's to read.
    // SAFETY: umask only sets this process's file mode creation mask.
    unsafe {
        libc::umask(0o077);
    }
    match serve(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("error: {e:#}");
            ExitCode::from(5)
        }
    }
}

/// A data directory made by someone else (an operator's `mkdir`, a temporary directory) may be
/// open to other users: it becomes 0700, as one the node makes itself is.
fn make_private(data_dir: &std::path::Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let Ok(meta) = std::fs::metadata(data_dir) else {
        return Ok(());
    };
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        std::fs::set_permissions(data_dir, std::fs::Permissions::from_mode(0o700)).map_err(
            |e| anyhow::anyhow!("cannot make {} private (0700): {e}", data_dir.display()),
        )?;
        tracing::warn!(data_dir = %data_dir.display(), was = format!("{mode:o}"), "the data directory was open to other users; it is 0700 now");
    }
    Ok(())
}

async fn serve(args: StartArgs) -> anyhow::Result<()> {
    let mut config = NodeConfig::new(&args.data_dir);
    config.checkpoint_transfers = args.checkpoint_transfers;
    config.segment_bytes = args.segment_bytes;
    config.archive = args.archive.clone();
    let metrics = Arc::new(Metrics::default());
    let requested = Requested {
        node_id: args.node_id,
        cluster_id: args
            .cluster_id
            .or_else(|| crate::certs::issued_cluster(&args)),
    };
    make_private(&args.data_dir)?;
    // Held until the process exits: no second node touches this directory meanwhile.
    let (identity, _dir_lock) = bulwark_node::identity::resolve(&args.data_dir, &requested)
        .map_err(|e| anyhow::anyhow!("cannot start: {e}"))?;
    // Before the log and the store open files: their descriptors are reserved from this limit.
    let fd_limit = crate::fds::raise_limit()?;
    let max_connections = crate::fds::client_connections(fd_limit)?;
    let relay_config = args.relay.config()?;
    let observed = metrics.clone();
    let (node, app, listen) = start_node(&args, &identity, config, metrics).await?;
    let relay = match relay_config {
        Some(config) => {
            tracing::info!(processors = ?args.relay.processors, "relaying payments to external accounts while this node leads");
            Some(bulwark_relay::Relay::start(node.handle(), config)?)
        }
        None => None,
    };
    let tls = crate::certs::api_tls(&args, &identity, listen)?;
    // After the certificates a new node makes for itself exist.
    crate::observe::spawn(
        observed,
        args.data_dir.clone(),
        crate::certs::tls_dir(&args),
    );
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {listen}: {e}"))?;
    let options = crate::serve::ServeOptions::new(max_connections, tls);
    tracing::info!(
        listen = %listen,
        tls = options.tls.is_some(),
        data_dir = %args.data_dir.display(),
        max_connections = options.max_connections,
        fd_limit,
        "bulwark is serving HTTP API v1"
    );
    let handle = node.handle();
    let node = Arc::new(std::sync::Mutex::new(Some(node)));
    let watched = node.clone();
    let stopped_on_error = async move {
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let finished = watched
                .lock()
                .expect("node lock")
                .as_ref()
                .is_none_or(|n| n.is_finished());
            if finished {
                return;
            }
        }
    };
    let shutdown = async {
        tokio::select! {
            _ = shutdown_signal() => hand_over(&handle).await,
            _ = stopped_on_error => tracing::error!("the node stopped; shutting the API down"),
        }
    };
    crate::serve::serve(listener, app, options, shutdown).await;
    if let Some(relay) = relay {
        tokio::task::spawn_blocking(move || relay.stop()).await?;
    }
    let node = node.lock().expect("node lock").take();
    if let Some(node) = node {
        tokio::task::spawn_blocking(move || node.shutdown())
            .await?
            .map_err(|e| anyhow::anyhow!("stopped on an error: {e}"))?;
    }
    tracing::info!("stopped cleanly");
    Ok(())
}

/// A graceful stop's first step, before the listeners close: the node answers not ready, hands
/// leadership over if it leads (the writes that arrive meanwhile go to the new leader), and
/// goes on serving for `STOP_DRAIN` while the other members learn of the new leader.
async fn hand_over(node: &bulwark_node::NodeHandle) {
    tracing::info!(
        "shutdown requested: handing leadership over, then finishing requests in flight"
    );
    match node.hand_over().await {
        Ok(outcome) => tracing::debug!(?outcome, "handover ended"),
        Err(e) => tracing::warn!("cannot hand leadership over: {e}"),
    }
    tokio::time::sleep(bulwark_limits::STOP_DRAIN).await;
}

/// Where a node listens and whom it knows: from the `--member` flags, or, for a node started
/// without them (a single node, or a member restarted on its directory alone), from its address
/// book and `--listen`/`--peer-listen`.
struct Plan {
    cluster: ClusterConfig,
    peer_listen: SocketAddr,
    /// Where the other members reach our peer listener (our own `--member` address, which a
    /// proxy may stand behind); `None`: where it listens.
    peer_advertised: Option<SocketAddr>,
    http_listen: SocketAddr,
    /// The peer port was not chosen by anyone: if it is taken, any free port will do.
    peer_port_derived: bool,
    /// A node started without `--member`: its own entry in the address book, if any.
    book_own: Option<Member>,
}

/// A node started without `--member`: the address book's own entry, else `--listen` (default
/// 127.0.0.1:7070) and a peer port 100 above the HTTP port.
fn plan_alone(args: &StartArgs, identity: &Identity) -> anyhow::Result<Plan> {
    let book = bulwark_node::cluster::load_members(&args.data_dir)
        .map_err(|e| anyhow::anyhow!("cannot start: {e}"))?
        .unwrap_or_default();
    let own = book.iter().find(|m| m.id == identity.node_id);
    let http_listen = args
        .listen
        .or(own.map(|m| bind_addr(&m.http_addr)))
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 7070)));
    let derived = SocketAddr::new(http_listen.ip(), http_listen.port().wrapping_add(100));
    let peer_listen = args.peer_listen.or(own.map(|m| bind_addr(&m.peer_addr)));
    Ok(Plan {
        cluster: cluster_config(args, identity, vec![]),
        peer_listen: peer_listen.unwrap_or(derived),
        peer_advertised: own.and_then(|m| m.peer_addr.socket_addr()),
        http_listen,
        peer_port_derived: peer_listen.is_none(),
        book_own: own.cloned(),
    })
}

/// Where to listen for an address others reach us at: the IP itself, or, for a DNS name
/// (`bulwark-0.bulwark:7170`), every interface on its port — the name's IP is not ours to know
/// (a pod's changes at each restart).
fn bind_addr(addr: &HostPort) -> SocketAddr {
    addr.socket_addr()
        .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], addr.port())))
}

/// A node restarted on its directory alone keeps the DNS names of its own address book entry
/// (a pod's stable name) while it listens on their ports: the address book it saves, and the
/// snapshot offers that carry it, keep naming it so. Otherwise the entry is where it listens.
fn keep_names(book: Option<Member>, listening: Member) -> Member {
    let Some(book) = book else {
        return listening;
    };
    let keep = |named: HostPort, now: HostPort| match named.ip() {
        None if named.port() == now.port() => named,
        _ => now,
    };
    Member {
        id: listening.id,
        peer_addr: keep(book.peer_addr, listening.peer_addr),
        http_addr: keep(book.http_addr, listening.http_addr),
    }
}

/// A member started with its `--member` flags.
fn plan_member(args: &StartArgs, identity: &Identity) -> anyhow::Result<Plan> {
    let cluster = cluster_config(args, identity, args.members.clone());
    cluster
        .validate()
        .map_err(|e| anyhow::anyhow!("refusing this cluster configuration: {e}"))?;
    let me = cluster.member(identity.node_id).expect("validated").clone();
    Ok(Plan {
        cluster,
        peer_listen: args.peer_listen.unwrap_or_else(|| bind_addr(&me.peer_addr)),
        // A name is not announced: a peer that does not know us yet replies to the IP our
        // connection comes from.
        peer_advertised: me.peer_addr.socket_addr(),
        http_listen: args
            .http_listen
            .or(args.listen)
            .unwrap_or_else(|| bind_addr(&me.http_addr)),
        peer_port_derived: false,
        book_own: None,
    })
}

fn cluster_config(args: &StartArgs, identity: &Identity, members: Vec<Member>) -> ClusterConfig {
    ClusterConfig {
        node_id: identity.node_id,
        cluster_id: identity.cluster_id,
        members,
        tick: Duration::from_millis(args.tick_ms.max(1)),
        join: args.join,
        source_ip: None,
        peer_http: None,
    }
}

/// The peer transport, the node loop, and the router (a follower forwards writes to the leader).
async fn start_node(
    args: &StartArgs,
    identity: &Identity,
    config: NodeConfig,
    metrics: Arc<Metrics>,
) -> anyhow::Result<(Node, axum::Router, SocketAddr)> {
    let alone = args.members.is_empty();
    let mut plan = if alone {
        plan_alone(args, identity)?
    } else {
        plan_member(args, identity)?
    };
    // Every connection to another member (peer transport, forwarded writes, snapshot fetches)
    // leaves from the IP this node's HTTP API listens on, when that is a specific one: whatever
    // stands between the nodes (`bulwark chaos`'s proxy, which tells nodes apart by source IP)
    // then sees which node connects, so a partition cuts all node-to-node traffic.
    plan.cluster.source_ip = Some(plan.http_listen.ip()).filter(|ip| !ip.is_unspecified());
    let tls = crate::certs::peer_tls(args, identity)?;
    let refusals_dir = args.data_dir.join("audit");
    let refusals = bulwark_refusals::RefusalLog::open(&refusals_dir).map_err(|e| {
        anyhow::anyhow!(
            "cannot open the refusals log in {}: {e}",
            refusals_dir.display()
        )
    })?;
    // Internal HTTP (snapshots, forwarded writes) goes to the other members' peer ports, inside
    // the same mutual TLS as Raft, from the same source IP.
    plan.cluster.peer_http = Some(bulwark_transport::PeerHttpClient::new(
        tls.clone(),
        plan.cluster.source_ip,
        bulwark_limits::PEER_HTTP_CONNECT_TIMEOUT,
    ));
    let (inbox_tx, mut inbox) = tokio::sync::mpsc::channel(bulwark_limits::TRANSPORT_INBOX_FRAMES);
    // Internal connections wait here until the node is up to serve them.
    let (internal_tx, mut internal) =
        tokio::sync::mpsc::channel(bulwark_limits::MAX_PEER_CONNECTIONS);
    let sink = bulwark_transport::InternalSink(internal_tx);
    let transport = start_transport(&plan, inbox_tx, tls, sink, refusals.clone()).await?;
    if alone {
        // Its own entry: where it listens now (recorded in the address book by the node loop).
        let listening = Member {
            id: identity.node_id,
            peer_addr: transport.local_addr().into(),
            http_addr: plan.http_listen.into(),
        };
        plan.cluster
            .members
            .push(keep_names(plan.book_own.take(), listening));
    }
    if !alone && !args.join && !args.data_dir.join("raft").join("hardstate").exists() {
        check_not_a_lost_voter(&plan).await?;
    }
    let peer_addr = transport.local_addr();
    let transport: Arc<dyn bulwark_transport::Transport> = Arc::new(transport);
    let cluster = plan.cluster.clone();
    let node = tokio::task::spawn_blocking(move || {
        bulwark_node::cluster::start_cluster(config, cluster, transport, metrics)
    })
    .await?
    .map_err(|e| anyhow::anyhow!("cannot start: {e}"))?;
    let handle = node.handle();
    tokio::spawn(async move {
        while let Some((from, payload)) = inbox.recv().await {
            if let Some(message) = bulwark_node::cluster::decode_peer_message(from.0, &payload) {
                handle.deliver_peer_message(message);
            }
        }
    });
    tracing::info!(
        node_id = identity.node_id,
        cluster_id = identity.cluster_id,
        %peer_addr,
        http_listen = %plan.http_listen,
        source_ip = ?plan.cluster.source_ip,
        "node started"
    );
    let internal_app = bulwark_api::internal_router(node.handle(), identity.node_id);
    tokio::spawn(async move {
        while let Some(connection) = internal.recv().await {
            tokio::spawn(bulwark_api::serve_internal(
                internal_app.clone(),
                connection,
            ));
        }
    });
    let bootstraps =
        !args.join && plan.cluster.members.iter().map(|m| m.id).min() == Some(identity.node_id);
    let candidate = crate::admin_token::candidate(
        args.admin_token_file.as_deref(),
        &args.data_dir,
        bootstraps,
    )?;
    if let Some(candidate) = candidate {
        let http = plan.http_listen.to_string();
        tokio::spawn(crate::admin_token::register(
            node.handle(),
            candidate,
            identity.node_id,
            http,
        ));
    }
    let options = bulwark_api::ApiOptions {
        token_rate_limit: args.token_rate_limit,
        refusals: Some(refusals),
        peers: plan.cluster.peer_http.clone(),
    };
    let app = bulwark_api::cluster_router(node.handle(), identity.node_id, options);
    Ok((node, app, plan.http_listen))
}

/// A member about to bootstrap on a directory without a Raft log asks the others whether their
/// leader knows it to hold log entries (then it lost its log: refused, see
/// `identity::check_not_a_lost_voter`). Members that do not answer within a second are skipped:
/// a new cluster's members start in any order.
async fn check_not_a_lost_voter(plan: &Plan) -> anyhow::Result<()> {
    let me = plan.cluster.node_id;
    let peers = plan
        .cluster
        .peer_http
        .as_ref()
        .expect("the peer HTTP client is made before this check");
    let mut views = Vec::new();
    for member in plan.cluster.members.iter().filter(|m| m.id != me) {
        let request = axum::http::Request::get("/internal/v1/status")
            .body(http_body_util::Full::new(axum::body::Bytes::new()))
            .expect("a GET without a body builds");
        let peer = bulwark_transport::NodeId(member.id);
        let timeout = Duration::from_secs(1);
        let Ok(response) = peers
            .send(peer, member.peer_addr.clone(), request, timeout)
            .await
        else {
            continue;
        };
        let body = http_body_util::BodyExt::collect(response.into_body());
        let Ok(Ok(body)) = tokio::time::timeout(timeout, body).await else {
            continue;
        };
        let Ok(status) = serde_json::from_slice::<serde_json::Value>(&body.to_bytes()) else {
            continue;
        };
        let match_index_of_us = status["members"].as_array().and_then(|members| {
            members
                .iter()
                .find(|m| m["id"].as_u64() == Some(me))
                .and_then(|m| m["match_index"].as_u64())
        });
        views.push(bulwark_node::identity::PeerView {
            member: member.id,
            match_index_of_us,
        });
    }
    bulwark_node::identity::check_not_a_lost_voter(me, &views)
        .map_err(|e| anyhow::anyhow!("cannot start: {e}"))
}

/// Binds the peer transport; a derived port that is taken gives way to any free one (a single
/// node needs no peers until it grows, and then its address book says where it listens).
async fn start_transport(
    plan: &Plan,
    inbox: tokio::sync::mpsc::Sender<(bulwark_transport::NodeId, Vec<u8>)>,
    tls: bulwark_tls::PeerTls,
    internal: bulwark_transport::InternalSink,
    refusals: bulwark_refusals::RefusalLog,
) -> anyhow::Result<bulwark_transport::TcpTransport> {
    let options = |advertised_addr| bulwark_transport::TransportOptions {
        source_ip: plan.cluster.source_ip,
        advertised_addr,
        internal: Some(internal.clone()),
        refusals: Some(refusals.clone()),
        ..Default::default()
    };
    let me = bulwark_transport::NodeId(plan.cluster.node_id);
    let id = plan.cluster.cluster_id;
    let planned = options(plan.peer_advertised);
    let listen = plan.peer_listen;
    match bulwark_transport::TcpTransport::start(
        me,
        id,
        listen,
        inbox.clone(),
        tls.clone(),
        planned,
    )
    .await
    {
        Ok(transport) => Ok(transport),
        Err(e) if plan.peer_port_derived => {
            let any = SocketAddr::new(plan.peer_listen.ip(), 0);
            tracing::warn!(port = plan.peer_listen.port(), error = %e, "the peer port is taken; listening for peers on a free one (pass --peer-listen to choose)");
            bulwark_transport::TcpTransport::start(me, id, any, inbox, tls, options(None))
                .await
                .map_err(|e| anyhow::anyhow!("cannot listen for peers on {any}: {e}"))
        }
        Err(e) => Err(anyhow::anyhow!(
            "cannot listen for peers on {}: {e}",
            plan.peer_listen
        )),
    }
}

pub(crate) async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("install SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
