//! The node's Prometheus metrics. One registry per process, shared by the event loop and the API.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub route: &'static str,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MemberLabels {
    pub member: u64,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub route: &'static str,
}

pub struct Metrics {
    pub registry: Registry,
    pub http_requests: Family<RequestLabels, Counter>,
    pub http_latency: Family<RouteLabels, Histogram>,
    pub fsync_seconds: Histogram,
    pub group_commit_requests: Histogram,
    pub batch_events: Histogram,
    pub events_applied: Counter,
    pub log_bytes: Gauge,
    pub log_segments: Gauge,
    pub applied_index: Gauge,
    pub checkpoint_seconds: Histogram,
    pub accounts: Gauge,
    pub member_match_index: Family<MemberLabels, Gauge>,
    pub member_lag_entries: Family<MemberLabels, Gauge>,
    pub member_in_sync: Family<MemberLabels, Gauge>,
    pub disk_full: Gauge,
    /// Peer messages dropped because the node's inbox held its bound of them (Raft resends).
    pub peer_messages_dropped: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("bulwark");
        let http_requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests answered, by route and status",
            http_requests.clone(),
        );
        let http_latency = Family::<RouteLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.000_05, 2.0, 18))
        });
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency, by route",
            http_latency.clone(),
        );
        let fsync_seconds = Histogram::new(exponential_buckets(0.000_05, 2.0, 16));
        registry.register(
            "wal_fsync_duration_seconds",
            "Latency of one write-ahead log sync (write + fdatasync)",
            fsync_seconds.clone(),
        );
        let group_commit_requests = Histogram::new(exponential_buckets(1.0, 2.0, 12));
        registry.register(
            "group_commit_requests",
            "Write requests made durable by one fsync",
            group_commit_requests.clone(),
        );
        let batch_events = Histogram::new(exponential_buckets(1.0, 2.0, 14));
        registry.register(
            "batch_events",
            "Events per write request",
            batch_events.clone(),
        );
        let events_applied = Counter::default();
        registry.register(
            "events_applied",
            "Account and transfer events applied",
            events_applied.clone(),
        );
        let log_bytes = Gauge::default();
        registry.register(
            "wal_bytes",
            "Size of the write-ahead log on disk",
            log_bytes.clone(),
        );
        let log_segments = Gauge::default();
        registry.register(
            "wal_segments",
            "Write-ahead log segment files",
            log_segments.clone(),
        );
        let applied_index = Gauge::default();
        registry.register(
            "applied_index",
            "Last log index applied",
            applied_index.clone(),
        );
        let checkpoint_seconds = Histogram::new(exponential_buckets(0.001, 2.0, 14));
        registry.register(
            "checkpoint_duration_seconds",
            "Time to write one state store checkpoint",
            checkpoint_seconds.clone(),
        );
        let accounts = Gauge::default();
        registry.register("accounts", "Accounts in the ledger", accounts.clone());
        let member_match_index = Family::<MemberLabels, Gauge>::default();
        registry.register(
            "member_match_index",
            "Leader only: the highest log index known replicated on each follower",
            member_match_index.clone(),
        );
        let member_lag_entries = Family::<MemberLabels, Gauge>::default();
        registry.register(
            "member_lag_entries",
            "Leader only: entries each follower is behind the leader's log",
            member_lag_entries.clone(),
        );
        let member_in_sync = Family::<MemberLabels, Gauge>::default();
        registry.register(
            "member_in_sync",
            "Leader only: 1 if the follower was heard from within an election timeout and caught up within a second",
            member_in_sync.clone(),
        );
        let disk_full = Gauge::default();
        registry.register(
            "disk_full",
            "1 while this node's disk is full: it refuses writes until space is freed",
            disk_full.clone(),
        );
        let peer_messages_dropped = Counter::default();
        registry.register(
            "peer_messages_dropped",
            "Raft messages from peers dropped because the node's inbox was full (peers resend)",
            peer_messages_dropped.clone(),
        );
        Metrics {
            registry,
            disk_full,
            peer_messages_dropped,
            member_match_index,
            member_lag_entries,
            member_in_sync,
            http_requests,
            http_latency,
            fsync_seconds,
            group_commit_requests,
            batch_events,
            events_applied,
            log_bytes,
            log_segments,
            applied_index,
            checkpoint_seconds,
            accounts,
        }
    }
}

impl Metrics {
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}
