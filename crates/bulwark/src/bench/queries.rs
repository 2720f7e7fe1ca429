//! `bulwark bench --queries N`: after the load, N pages of 100 read one at a time (so that each
//! latency is one request's alone), in the shapes a bank's tools ask for, each starting at a
//! random point of the ledger's time: transfers of a ledger; of a ledger and code, newest first;
//! in a time window; by `user_data_128` (one transfer) and by `user_data_64` (a group) when the
//! load set them (`--user-data`); accounts of a ledger; and the change feed.

use std::time::Instant;

use hdrhistogram::Histogram;
use indicatif::ProgressBar;
use serde_json::{json, Value};

use super::http1::{Connection, Target};
use super::{progress_bar, send, Rng};

/// Rows a page asks for: the figure, one screen.
const PAGE: u64 = 100;
/// Transfers that share one `user_data_64` with `--user-data` (a customer's payments, say).
pub(super) const USER_DATA_64_GROUP: u64 = 1000;

/// What the load left to query.
pub(super) struct Ledger {
    pub(super) ledger: u32,
    /// The first and last transfer ids the load sent, and whether they carry user data.
    pub(super) first_transfer: u64,
    pub(super) last_transfer: u64,
    pub(super) user_data: bool,
}

/// The latencies of each shape, in microseconds.
pub(super) struct QueryReport {
    shapes: Vec<(&'static str, Histogram<u64>)>,
    all: Histogram<u64>,
}

/// One query: its name, and the request for a random starting point.
type Shape = (&'static str, fn(&Ledger, &Span, &mut Rng) -> Request);

enum Request {
    Post(&'static str, Value),
    Get(String),
}

/// The ledger's time, from its first transfer to its last.
struct Span {
    first: u64,
    last: u64,
}

impl Span {
    fn pick(&self, rng: &mut Rng) -> String {
        (self.first + rng.below(self.last - self.first + 1)).to_string()
    }
}

const SHAPES: [Shape; 7] = [
    ("transfers of a ledger", |l, s, r| {
        Request::Post(
            "/v1/transfers/query",
            json!({"ledger": l.ledger, "timestamp_min": s.pick(r), "limit": PAGE}),
        )
    }),
    ("transfers of a ledger and code, newest first", |l, s, r| {
        let filter = json!({"ledger": l.ledger, "code": 1, "timestamp_max": s.pick(r),
                            "reversed": true, "limit": PAGE});
        Request::Post("/v1/transfers/query", filter)
    }),
    ("transfers in a time window", |_, s, r| {
        Request::Post(
            "/v1/transfers/query",
            json!({"timestamp_min": s.pick(r), "limit": PAGE}),
        )
    }),
    ("transfers by user_data_128", |l, _, r| {
        let id = l.first_transfer + r.below(l.last_transfer - l.first_transfer + 1);
        Request::Post(
            "/v1/transfers/query",
            json!({"user_data_128": id.to_string(), "limit": PAGE}),
        )
    }),
    ("transfers by user_data_64", |l, s, r| {
        let groups = (l.last_transfer - l.first_transfer) / USER_DATA_64_GROUP + 1;
        let group = l.first_transfer / USER_DATA_64_GROUP + r.below(groups);
        let filter = json!({"user_data_64": group.to_string(), "timestamp_min": s.pick(r),
                            "limit": PAGE});
        Request::Post("/v1/transfers/query", filter)
    }),
    ("accounts of a ledger", |l, _, r| {
        let reversed = r.below(2) == 1;
        let filter = json!({"ledger": l.ledger, "reversed": reversed, "limit": PAGE});
        Request::Post("/v1/accounts/query", filter)
    }),
    ("change feed", |_, s, r| {
        Request::Get(format!("/v1/changes?after={}&limit={PAGE}", s.pick(r)))
    }),
];

/// Runs `n` queries against `base`, cycling through the shapes.
pub(super) async fn run(
    n: u64,
    ledger: &Ledger,
    base: &str,
    ca: Option<&std::path::Path>,
    token: Option<&str>,
) -> Result<QueryReport, String> {
    let target = |path: &str| -> Result<Target, String> {
        Ok(Target::parse(&format!("{base}{path}"))?
            .with_ca(ca)?
            .with_token(token))
    };
    let (transfers, accounts, root) = (
        target("/v1/transfers/query")?,
        target("/v1/accounts/query")?,
        target("")?,
    );
    let mut connection = None;
    let span = ledger_span(&mut connection, &transfers).await?;
    let shapes: Vec<&Shape> = SHAPES
        .iter()
        .filter(|(name, _)| ledger.user_data || !name.contains("user_data"))
        .collect();
    let mut report = QueryReport {
        shapes: shapes
            .iter()
            .map(|(name, _)| (*name, histogram()))
            .collect(),
        all: histogram(),
    };
    let bar: ProgressBar = progress_bar(Some(n));
    bar.set_message("queries");
    let (mut rng, mut request) = (Rng::new(0x51EE_D0F5), Vec::new());
    for i in 0..n {
        let k = (i % shapes.len() as u64) as usize;
        match (shapes[k].1)(ledger, &span, &mut rng) {
            Request::Post(path, body) => {
                let target = if path.starts_with("/v1/accounts") {
                    &accounts
                } else {
                    &transfers
                };
                target.request(&body.to_string(), &mut request);
            }
            Request::Get(path) => root.get(&path, &mut request),
        }
        let started = Instant::now();
        send(&mut connection, &transfers, &request)
            .await
            .map_err(|e| format!("query `{}`: {e}", shapes[k].0))?;
        let us = started.elapsed().as_micros() as u64;
        report.shapes[k].1.saturating_record(us.max(1));
        report.all.saturating_record(us.max(1));
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok(report)
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
}

/// The timestamps of the ledger's first and last transfers (from the queries themselves).
async fn ledger_span(
    connection: &mut Option<Connection>,
    transfers: &Target,
) -> Result<Span, String> {
    let mut edges = [0u64; 2];
    for (edge, reversed) in edges.iter_mut().zip([false, true]) {
        let mut request = Vec::new();
        let body = json!({"limit": 1, "reversed": reversed}).to_string();
        transfers.request(&body, &mut request);
        let answer = send(connection, transfers, &request).await?;
        let page: Value = serde_json::from_slice(answer).map_err(|e| e.to_string())?;
        *edge = page["transfers"][0]["timestamp"]
            .as_str()
            .and_then(|t| t.parse().ok())
            .ok_or_else(|| format!("no transfer to query: {page}"))?;
    }
    Ok(Span {
        first: edges[0],
        last: edges[1],
    })
}

impl QueryReport {
    fn ms(h: &Histogram<u64>, quantile: f64) -> f64 {
        h.value_at_quantile(quantile) as f64 / 1000.0
    }

    pub(super) fn json(&self) -> Value {
        let one = |h: &Histogram<u64>| {
            json!({"count": h.len(), "p50_ms": Self::ms(h, 0.5), "p99_ms": Self::ms(h, 0.99),
                   "max_ms": h.max() as f64 / 1000.0})
        };
        let shapes: serde_json::Map<String, Value> = self
            .shapes
            .iter()
            .map(|(name, h)| (name.to_string(), one(h)))
            .collect();
        json!({"page": PAGE, "all": one(&self.all), "shapes": shapes})
    }

    pub(super) fn text(&self) -> String {
        let mut out = format!("queries        pages of {PAGE}, one at a time\n");
        for (name, h) in self.shapes.iter().chain([("all", self.all.clone())].iter()) {
            out.push_str(&format!(
                "  {name:<46} {:>6}  p50 {:.3}  p99 {:.3}  max {:.3} ms\n",
                h.len(),
                Self::ms(h, 0.5),
                Self::ms(h, 0.99),
                h.max() as f64 / 1000.0
            ));
        }
        out
    }
}
