//! The node's Prometheus metrics. One registry per process, shared by the event loop and the API.

use std::sync::atomic::AtomicU64;

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
pub struct ProcessorLabels {
    pub processor: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: &'static str,
}

/// Which certificate of the node: `ca`, `node` (the peer transport's), `api` (the client API's).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CertificateLabels {
    pub certificate: &'static str,
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
    /// Time a leader held new writes for a checkpoint (its memtable at its cap meanwhile).
    pub writes_held_seconds: Counter<f64, AtomicU64>,
    pub accounts: Gauge,
    pub member_match_index: Family<MemberLabels, Gauge>,
    pub member_lag_entries: Family<MemberLabels, Gauge>,
    pub member_in_sync: Family<MemberLabels, Gauge>,
    pub disk_full: Gauge,
    /// Peer messages dropped because the node's inbox held its bound of them (Raft resends).
    pub peer_messages_dropped: Counter,
    /// 1 while this node judges its own disk slow (`consensus::slow_disk`).
    pub slow_disk: Gauge,
    /// Leadership transfers this node asked for because its disk was slow.
    pub leader_evictions: Counter,
    /// With `--archive`: the highest log index the archive holds, entries behind the commit
    /// index, failed archive operations.
    pub archive_index: Gauge,
    pub archive_lag_entries: Gauge,
    pub archive_failures: Counter,
    /// With `--archive`, on the node that archives: the age of the oldest committed entry the
    /// archive lacks (what losing every node would lose, in time: compare with the RPO).
    pub archive_lag_seconds: Gauge<f64, AtomicU64>,
    /// Raft: this node's term, whether it leads, whether it knows a leader, and how many times
    /// the leader it knows changed (elections, handovers).
    pub raft_term: Gauge,
    pub is_leader: Gauge,
    pub has_leader: Gauge,
    pub leader_changes: Counter,
    /// The file system of the data directory (refreshed periodically by the server).
    pub disk_free_bytes: Gauge,
    pub disk_size_bytes: Gauge,
    /// Each certificate's not-after time, in seconds since the Unix epoch.
    pub certificate_expiry: Family<CertificateLabels, Gauge>,
    /// The outbox: payments waiting for their processor, and dead ones (the dead-letter queue).
    pub outbox_outbound: Gauge,
    pub outbox_dead: Gauge,
    /// The relay (leader only): deliveries by outcome, and each processor's breaker.
    pub relay_deliveries: Family<OutcomeLabels, Counter>,
    pub relay_breaker_open: Family<ProcessorLabels, Gauge>,
    pub relay_breaker_opened: Family<ProcessorLabels, Counter>,
}

impl Default for Metrics {
    // A table: one registration per metric, nothing else.
    #[allow(clippy::too_many_lines)]
    fn default() -> Self {
        let mut registry = Registry::with_prefix("bulwark");
        let http_requests = register(
            &mut registry,
            "http_requests",
            "HTTP requests answered, by route and status",
            Family::<RequestLabels, Counter>::default(),
        );
        let http_latency = register(
            &mut registry,
            "http_request_duration_seconds",
            "HTTP request latency, by route",
            Family::<RouteLabels, Histogram>::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.000_05, 2.0, 18))
            }),
        );
        let fsync_seconds = register(
            &mut registry,
            "wal_fsync_duration_seconds",
            "Latency of one Raft log sync that writes entries (write + fdatasync)",
            Histogram::new(exponential_buckets(0.000_05, 2.0, 16)),
        );
        let group_commit_requests = register(
            &mut registry,
            "group_commit_requests",
            "Client write requests a leader proposed in one round of its loop (made durable by one log sync)",
            Histogram::new(exponential_buckets(1.0, 2.0, 12)),
        );
        let batch_events = register(
            &mut registry,
            "batch_events",
            "Events per write request",
            Histogram::new(exponential_buckets(1.0, 2.0, 14)),
        );
        let events_applied = register(
            &mut registry,
            "events_applied",
            "Account and transfer events applied",
            Counter::default(),
        );
        let log_bytes = register(
            &mut registry,
            "wal_bytes",
            "Size of the write-ahead log on disk",
            Gauge::default(),
        );
        let log_segments = register(
            &mut registry,
            "wal_segments",
            "Write-ahead log segment files",
            Gauge::default(),
        );
        let applied_index = register(
            &mut registry,
            "applied_index",
            "Last log index applied",
            Gauge::default(),
        );
        let checkpoint_seconds = register(
            &mut registry,
            "checkpoint_duration_seconds",
            "Time to write one state store checkpoint",
            Histogram::new(exponential_buckets(0.001, 2.0, 14)),
        );
        let writes_held_seconds = register(
            &mut registry,
            "writes_held_for_checkpoint_seconds",
            "Time this node, leading, held new writes until a checkpoint was written (its memtable at its cap: the load outran checkpoints)",
            Counter::<f64, AtomicU64>::default(),
        );
        let accounts = register(
            &mut registry,
            "accounts",
            "Accounts in the ledger",
            Gauge::default(),
        );
        let member_match_index = register(
            &mut registry,
            "member_match_index",
            "Leader only: the highest log index known replicated on each follower",
            Family::<MemberLabels, Gauge>::default(),
        );
        let member_lag_entries = register(
            &mut registry,
            "member_lag_entries",
            "Leader only: entries each follower is behind the leader's log",
            Family::<MemberLabels, Gauge>::default(),
        );
        let member_in_sync = register(&mut registry, "member_in_sync", "Leader only: 1 if the follower was heard from within an election timeout and caught up within a second", Family::<MemberLabels, Gauge>::default());
        let disk_full = register(
            &mut registry,
            "disk_full",
            "1 while this node's disk is full: it refuses writes until space is freed",
            Gauge::default(),
        );
        let peer_messages_dropped = register(
            &mut registry,
            "peer_messages_dropped",
            "Raft messages from peers dropped because the node's inbox was full (peers resend)",
            Counter::default(),
        );
        let slow_disk = register(
            &mut registry,
            "slow_disk",
            "1 while the median of this node's recent log syncs is over the slow-disk threshold: it hands leadership over and is not preferred in elections",
            Gauge::default(),
        );
        let leader_evictions = register(
            &mut registry,
            "leader_evictions",
            "Leadership transfers this node asked for because its disk was slow",
            Counter::default(),
        );
        let archive_index = register(
            &mut registry,
            "archive_index",
            "With --archive: the highest log index the archive holds",
            Gauge::default(),
        );
        let archive_lag_entries = register(
            &mut registry,
            "archive_lag_entries",
            "With --archive, on the node that archives: committed entries not yet in the archive",
            Gauge::default(),
        );
        let archive_failures = register(
            &mut registry,
            "archive_failures",
            "With --archive: archive uploads and listings that failed since the node started (each is retried)",
            Counter::default(),
        );
        let archive_lag_seconds = register(
            &mut registry,
            "archive_lag_seconds",
            "With --archive, on the node that archives: age of the oldest committed entry not yet in the archive (0 when it holds them all)",
            Gauge::<f64, AtomicU64>::default(),
        );
        let raft_term = register(
            &mut registry,
            "raft_term",
            "This node's current Raft term",
            Gauge::default(),
        );
        let is_leader = register(
            &mut registry,
            "is_leader",
            "1 while this node is the Raft leader",
            Gauge::default(),
        );
        let has_leader = register(
            &mut registry,
            "has_leader",
            "1 while this node knows a leader (itself or another member)",
            Gauge::default(),
        );
        let leader_changes = register(
            &mut registry,
            "leader_changes",
            "Times the leader this node knows changed to another member (elections, handovers)",
            Counter::default(),
        );
        let disk_free_bytes = register(
            &mut registry,
            "disk_free_bytes",
            "Bytes free for the node on the file system of its data directory",
            Gauge::default(),
        );
        let disk_size_bytes = register(
            &mut registry,
            "disk_size_bytes",
            "Size in bytes of the file system of the node's data directory",
            Gauge::default(),
        );
        let certificate_expiry = register(
            &mut registry,
            "certificate_expiry_timestamp_seconds",
            "Not-after time of each of the node's certificates (ca, node, api), in seconds since the Unix epoch",
            Family::<CertificateLabels, Gauge>::default(),
        );
        let outbox_outbound = register(
            &mut registry,
            "outbox_outbound",
            "Payments to external accounts waiting for their processor's answer",
            Gauge::default(),
        );
        let outbox_dead = register(
            &mut registry,
            "outbox_dead",
            "Payments in the dead-letter queue (refused, or retries exhausted), waiting for an operator",
            Gauge::default(),
        );
        let relay_deliveries = register(
            &mut registry,
            "relay_deliveries",
            "Deliveries of payments to processors by this node's relay, by outcome (confirmed, refused, stale_term, failed)",
            Family::<OutcomeLabels, Counter>::default(),
        );
        // Every outcome from the start, at 0: a rate over them needs the series before the
        // first delivery.
        for outcome in ["confirmed", "refused", "stale_term", "failed"] {
            relay_deliveries
                .get_or_create(&OutcomeLabels { outcome })
                .inc_by(0);
        }
        let relay_breaker_open = register(
            &mut registry,
            "relay_breaker_open",
            "1 while a processor's circuit breaker is open or half-open on this node (the leader)",
            Family::<ProcessorLabels, Gauge>::default(),
        );
        let relay_breaker_opened = register(
            &mut registry,
            "relay_breaker_opened",
            "Times a processor's circuit breaker opened on this node",
            Family::<ProcessorLabels, Counter>::default(),
        );
        Metrics {
            registry,
            outbox_outbound,
            outbox_dead,
            relay_deliveries,
            relay_breaker_open,
            relay_breaker_opened,
            archive_index,
            archive_lag_entries,
            archive_failures,
            archive_lag_seconds,
            raft_term,
            is_leader,
            has_leader,
            leader_changes,
            disk_free_bytes,
            disk_size_bytes,
            certificate_expiry,
            slow_disk,
            leader_evictions,
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
            writes_held_seconds,
            accounts,
        }
    }
}

/// Registers `metric` under `name` and hands it back, for the node to update.
fn register<M>(registry: &mut Registry, name: &str, help: &str, metric: M) -> M
where
    M: prometheus_client::metrics::TypedMetric
        + prometheus_client::encoding::EncodeMetric
        + Clone
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    registry.register(name, help, metric.clone());
    metric
}

impl Metrics {
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Units Prometheus names in base units, as the name's last word before `_total`.
    const UNITS: [&str; 2] = ["seconds", "bytes"];
    /// Units that are not base units, which no name may use.
    const NOT_BASE_UNITS: [&str; 6] = ["millis", "ms", "micros", "kb", "mb", "minutes"];

    /// Every family on `/metrics` (with a sample in each labelled family, so that all show up):
    /// its name, type and help.
    fn families() -> Vec<(String, String, String)> {
        let metrics = Metrics::default();
        // A family without samples is not encoded at all: give each one.
        let route = RouteLabels { route: "r" };
        metrics.http_latency.get_or_create(&route).observe(0.1);
        let request = RequestLabels {
            route: "r",
            status: 200,
        };
        metrics.http_requests.get_or_create(&request).inc();
        let member = MemberLabels { member: 2 };
        metrics.member_match_index.get_or_create(&member).set(1);
        metrics.member_lag_entries.get_or_create(&member).set(1);
        metrics.member_in_sync.get_or_create(&member).set(1);
        let certificate = CertificateLabels { certificate: "ca" };
        metrics
            .certificate_expiry
            .get_or_create(&certificate)
            .set(1);
        let outcome = OutcomeLabels { outcome: "failed" };
        metrics.relay_deliveries.get_or_create(&outcome).inc();
        let processor = ProcessorLabels {
            processor: "p".into(),
        };
        metrics.relay_breaker_open.get_or_create(&processor).set(0);
        metrics.relay_breaker_opened.get_or_create(&processor).inc();
        let text = metrics.encode();
        let mut helps = std::collections::BTreeMap::new();
        let mut families = Vec::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
                helps.insert(name.to_string(), help.trim().to_string());
            } else if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').expect("# TYPE name kind");
                let help = helps.get(name).cloned().unwrap_or_default();
                families.push((name.to_string(), kind.to_string(), help));
            }
        }
        families
    }

    #[test]
    fn every_metric_has_help_and_a_conventional_name() {
        let families = families();
        assert_eq!(families.len(), 35, "{families:?}");
        for (name, kind, help) in &families {
            assert!(help.len() > 10, "{name}: no help text");
            assert!(name.starts_with("bulwark_"), "{name}: not under bulwark_");
            assert!(
                name.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
                "{name}: not snake_case"
            );
            let words: Vec<&str> = name.split('_').collect();
            for unit in UNITS {
                let last = words.iter().rposition(|w| *w == unit);
                let at_end = last.is_none_or(|i| i == words.len() - 1);
                assert!(at_end, "{name}: the unit {unit} is not the name's suffix");
            }
            for unit in NOT_BASE_UNITS {
                assert!(!words.contains(&unit), "{name}: {unit} is not a base unit");
            }
            // The text format names a counter's family without `_total` and its sample with it.
            assert!(
                !name.ends_with("_total"),
                "{name}: `_total` is the sample's"
            );
            match kind.as_str() {
                "counter" | "gauge" | "histogram" => {}
                other => panic!("{name}: unexpected type {other}"),
            }
            if kind == "histogram" && words.contains(&"duration") {
                assert!(name.ends_with("_seconds"), "{name}: a duration in seconds");
            }
        }
        let names: Vec<&str> = families.iter().map(|(n, _, _)| n.as_str()).collect();
        // Names other tools read (the console, dashboards): kept as they are.
        for kept in [
            "bulwark_events_applied",
            "bulwark_http_request_duration_seconds",
        ] {
            assert!(names.contains(&kept), "{kept} is gone");
        }
    }
}
