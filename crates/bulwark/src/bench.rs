//! `bulwark bench`: a load generator for HTTP API v1.
//!
//! It creates `--accounts` accounts (no flags, so no transfer can fail for balance reasons),
//! then `--concurrency` clients each send batches of `--batch` random transfers, one request at
//! a time on their own keep-alive connection, for `--transfers` transfers in all or for
//! `--duration` seconds. Every request's latency goes into a histogram (microseconds); the
//! report gives transfers/s, requests/s, latency per request and every result that was not `ok`.
//!
//! Without `--addr` it starts a node itself (this same binary, `start` on a temporary data
//! directory and a free loopback port) and stops it with SIGTERM at the end.
//!
//! Exit codes: 0 every request answered and every event `ok`; 1 otherwise; 2 bad options;
//! 4 the node could not be reached; 5 the node could not be started.

mod http1;
mod queries;

use http1::{Connection, Target};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::IsTerminal;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bulwark_client::{AccountId, AccountResult, Created, NewAccount};
use bulwark_harness::{Logs, NodeProcess, StartError};
use bulwark_limits::MAX_BATCH_EVENTS;
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Deserialize;
use serde_json::json;

/// Failed requests after which the clients give up (the node is probably gone).
const MAX_FAILED_REQUESTS: u64 = 100;

#[derive(clap::Args)]
pub struct BenchArgs {
    /// Base URL of a running node; without it, a node is started on a temporary directory.
    #[arg(long)]
    pub addr: Option<String>,
    /// With an `https://` `--addr`: the cluster's CA certificate.
    #[arg(long, env = "BULWARK_CA", requires = "addr")]
    pub ca: Option<std::path::PathBuf>,
    /// With `--addr`: a file holding a token with the write role [default: $BULWARK_TOKEN].
    #[arg(long, env = "BULWARK_TOKEN_FILE", requires = "addr")]
    pub token_file: Option<std::path::PathBuf>,
    /// Accounts to create before the load phase.
    #[arg(long, default_value_t = 10_000)]
    pub accounts: u64,
    /// Transfers to send in all (ignored with --duration).
    #[arg(long, default_value_t = 1_000_000)]
    pub transfers: u64,
    /// Run the load phase for this many seconds instead of a fixed number of transfers.
    #[arg(long)]
    pub duration: Option<f64>,
    /// Transfers per request (1..=8190).
    #[arg(long, default_value_t = 1000)]
    pub batch: usize,
    /// Concurrent clients, each with one request in flight.
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// Fraction of the accounts that are "hot" (e.g. 0.01); 0 = no skew.
    #[arg(long, default_value_t = 0.0)]
    pub hot_accounts: f64,
    /// Fraction of the account picks that go to the hot accounts (e.g. 0.5).
    #[arg(long, default_value_t = 0.0)]
    pub hot_share: f64,
    /// Ledger of every account and transfer.
    #[arg(long, default_value_t = 1)]
    pub ledger: u32,
    /// Target requests per second per client (0 = as fast as possible).
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    /// First id minus one of the accounts and transfers (default: from the current time, so
    /// repeated runs against one node never collide).
    #[arg(long)]
    pub id_base: Option<u64>,
    /// Each transfer carries user data: `user_data_128` its own id (an invoice number, unique),
    /// `user_data_64` its id / 1000 (a group of a thousand, a customer's payments, say).
    #[arg(long)]
    pub user_data: bool,
    /// After the load, read this many query pages of 100 one at a time (transfers by ledger, by
    /// ledger and code, in a window, by user data with --user-data; accounts by ledger; the
    /// change feed) and report their latency.
    #[arg(long, default_value_t = 0)]
    pub queries: u64,
    /// Print the report as one JSON object.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(args: BenchArgs) -> ExitCode {
    if let Err(message) = validate(&args) {
        eprintln!("error: {message}");
        return ExitCode::from(2);
    }
    let (base_url, node) = match &args.addr {
        Some(addr) => (addr.trim_end_matches('/').to_string(), None),
        None => match SpawnedNode::start().await {
            Ok(node) => (node.url.clone(), Some(node)),
            Err(e) => {
                eprintln!("error: cannot start a node: {e}");
                return ExitCode::from(5);
            }
        },
    };
    let token = match &node {
        Some(node) => Some(node.token.clone()),
        None => match bench_token(&args) {
            Ok(token) => token,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
        },
    };
    let code = bench(
        &args,
        token.as_deref(),
        &base_url,
        node.as_ref().map(|n| n.pid),
    )
    .await;
    if let Some(node) = node {
        node.stop();
    }
    code
}

fn validate(args: &BenchArgs) -> Result<(), String> {
    if args.accounts < 2 {
        return Err("--accounts must be at least 2".into());
    }
    if args.batch == 0 || args.batch > MAX_BATCH_EVENTS {
        return Err(format!("--batch must be between 1 and {MAX_BATCH_EVENTS}"));
    }
    if args.concurrency == 0 {
        return Err("--concurrency must be at least 1".into());
    }
    if args.duration.is_none() && args.transfers == 0 {
        return Err("--transfers must be at least 1".into());
    }
    if let Some(d) = args.duration {
        if !(d > 0.0 && d.is_finite()) {
            return Err("--duration must be a positive number of seconds".into());
        }
    }
    if !(0.0..=1.0).contains(&args.hot_accounts) || !(0.0..=1.0).contains(&args.hot_share) {
        return Err("--hot-accounts and --hot-share are fractions between 0 and 1".into());
    }
    if !(args.rate >= 0.0 && args.rate.is_finite()) {
        return Err("--rate must be 0 (unlimited) or a positive number".into());
    }
    if args.ledger == 0 {
        return Err("--ledger must not be 0".into());
    }
    Ok(())
}

/// The token to send to a running node: `--token-file`'s, else `$BULWARK_TOKEN`.
fn bench_token(args: &BenchArgs) -> Result<Option<String>, String> {
    if let Some(path) = &args.token_file {
        return bulwark_token::read_file(path)
            .map(Some)
            .map_err(|e| format!("--token-file: {e}"));
    }
    Ok(std::env::var("BULWARK_TOKEN")
        .ok()
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty()))
}

async fn bench(args: &BenchArgs, token: Option<&str>, base: &str, node: Option<u32>) -> ExitCode {
    let id_base = args.id_base.unwrap_or_else(default_id_base);
    let needed = args.accounts.max(args.transfers);
    if id_base.checked_add(needed).is_none() || id_base.checked_add(1 << 40).is_none() {
        eprintln!("error: --id-base {id_base} leaves no room for the ids");
        return ExitCode::from(2);
    }

    // Setup: the accounts.
    let ca = args.ca.as_deref();
    if let Err(e) = create_accounts(args, token, ca, base, id_base).await {
        eprintln!("error: {e}");
        return ExitCode::from(4);
    }

    // Load.
    let total = match args.duration {
        Some(_) => None,
        None => Some(args.transfers),
    };
    let progress = progress_bar(total);
    let shared = Arc::new(Shared {
        next_batch: AtomicU64::new(0),
        failed_requests: AtomicU64::new(0),
        progress: progress.clone(),
        failures: Mutex::new(BTreeMap::new()),
    });
    let hot = hot_count(args);
    let cpu_before = (
        process_cpu_seconds("self"),
        node.and_then(|p| process_cpu_seconds(&p.to_string())),
    );
    let target = Target::parse(&format!("{base}/v1/transfers"))
        .and_then(|t| t.with_ca(args.ca.as_deref()))
        .map(|t| t.with_token(token));
    let target = match target {
        Ok(target) => target,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let started = Instant::now();
    let plan = Arc::new(Plan {
        target,
        accounts: args.accounts,
        account_base: id_base,
        transfer_base: id_base,
        batch: args.batch as u64,
        total,
        deadline: args.duration.map(|d| started + Duration::from_secs_f64(d)),
        ledger: args.ledger,
        user_data: args.user_data,
        hot,
        hot_share: if hot > 0 { args.hot_share } else { 0.0 },
        rate: args.rate,
    });
    let mut tasks = Vec::with_capacity(args.concurrency);
    for c in 0..args.concurrency {
        let plan = plan.clone();
        let shared = shared.clone();
        let seed = id_base ^ ((c as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        tasks.push(tokio::spawn(client_loop(plan, shared, seed)));
    }
    let mut stats = ClientStats::new();
    for task in tasks {
        match task.await {
            Ok(s) => stats.merge(s),
            Err(e) => {
                eprintln!("error: a client task failed: {e}");
                stats.failed_requests += 1;
            }
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    progress.finish_and_clear();
    let cpu_after = (
        process_cpu_seconds("self"),
        node.and_then(|p| process_cpu_seconds(&p.to_string())),
    );
    let cpu_share = |before: Option<f64>, after: Option<f64>| match (before, after) {
        (Some(b), Some(a)) => Some((a - b) / seconds),
        _ => None,
    };
    let client_cpu = cpu_share(cpu_before.0, cpu_after.0);
    let server_cpu = cpu_share(cpu_before.1, cpu_after.1);

    let failures = std::mem::take(&mut *shared.failures.lock().expect("failures lock"));
    let queries = if args.queries > 0 && stats.transfers > 0 {
        let ledger = queries::Ledger {
            ledger: args.ledger,
            first_transfer: id_base + 1,
            last_transfer: id_base + stats.transfers,
            user_data: args.user_data,
        };
        match queries::run(args.queries, &ledger, base, args.ca.as_deref(), token).await {
            Ok(report) => Some(report),
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(4);
            }
        }
    } else {
        None
    };
    let report = Report {
        args,
        id_base,
        seconds,
        stats,
        failures,
        client_cpu,
        server_cpu,
        queries,
    };
    if args.json {
        println!("{}", report.json());
    } else {
        print!("{}", report.text());
    }
    if report.stats.failed_requests == 0 && report.stats.not_ok == 0 && report.stats.transfers > 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// Ids from the current time in milliseconds, times a million: a run would have to create more
/// than a million transfers per millisecond to reach the ids of a later run.
fn default_id_base() -> u64 {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(1);
    ms.saturating_mul(1_000_000)
}

fn hot_count(args: &BenchArgs) -> u64 {
    if args.hot_accounts <= 0.0 || args.hot_share <= 0.0 {
        return 0;
    }
    ((args.accounts as f64 * args.hot_accounts).round() as u64).clamp(1, args.accounts - 1)
}

fn progress_bar(total: Option<u64>) -> ProgressBar {
    let bar = match total {
        Some(n) => ProgressBar::new(n),
        None => ProgressBar::new_spinner(),
    };
    if !std::io::stderr().is_terminal() {
        bar.set_draw_target(ProgressDrawTarget::hidden());
        return bar;
    }
    let template = match total {
        Some(_) => {
            "{elapsed_precise} [{wide_bar}] {human_pos}/{human_len} transfers, {per_sec}, eta {eta}"
        }
        None => "{spinner} {elapsed_precise} {human_pos} transfers, {per_sec}",
    };
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style);
    }
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

// ---------------------------------------------------------------------------------------------
// Setup

#[derive(Deserialize)]
struct Answer<'a> {
    #[serde(borrow)]
    results: Vec<EventResult<'a>>,
}

#[derive(Deserialize)]
struct EventResult<'a> {
    #[serde(borrow)]
    result: std::borrow::Cow<'a, str>,
}

/// The accounts, through `bulwark-client`: a batch whose answer is lost is sent again with the
/// same ids (and its accounts answer `ok` as created by the earlier attempt), so a setup that
/// meets a leader change neither fails nor creates anything twice.
async fn create_accounts(
    args: &BenchArgs,
    token: Option<&str>,
    ca: Option<&std::path::Path>,
    base: &str,
    id_base: u64,
) -> Result<(), String> {
    let mut builder = bulwark_client::ClientBuilder::new([base]);
    if let Some(ca) = ca {
        builder = builder.ca_file(ca);
    }
    if let Some(token) = token {
        builder = builder.token(token);
    }
    let client = builder.build().map_err(|e| e.to_string())?;
    let bar = progress_bar(Some(args.accounts));
    bar.set_message("accounts");
    let mut first = 0u64;
    while first < args.accounts {
        let n = (args.accounts - first).min(MAX_BATCH_EVENTS as u64);
        let batch: Vec<NewAccount> = (0..n)
            .map(|i| {
                let id = AccountId(u128::from(id_base + first + i + 1));
                NewAccount::new(id, args.ledger, 1)
            })
            .collect();
        let created = client
            .create_accounts(&batch)
            .await
            .map_err(|e| format!("creating accounts at {base}: {e}"))?;
        check_accounts(&created, id_base + first)?;
        first += n;
        bar.set_position(first);
    }
    bar.finish_and_clear();
    Ok(())
}

/// Every account of a batch created (or there already, from an earlier run).
fn check_accounts(created: &Created<AccountResult>, first_id: u64) -> Result<(), String> {
    let refused = created
        .failures()
        .find(|(_, r)| **r != AccountResult::Exists);
    match refused {
        Some((i, r)) => Err(format!(
            "creating account {}: {r} (use another --id-base?)",
            first_id + i as u64 + 1
        )),
        None => Ok(()),
    }
}

// ---------------------------------------------------------------------------------------------
// Load

struct Plan {
    target: Target,
    accounts: u64,
    account_base: u64,
    transfer_base: u64,
    batch: u64,
    /// Transfers in all, or `None` to run until `deadline`.
    total: Option<u64>,
    deadline: Option<Instant>,
    ledger: u32,
    user_data: bool,
    /// The accounts `1..=hot` (after the base) take `hot_share` of the picks.
    hot: u64,
    hot_share: f64,
    rate: f64,
}

struct Shared {
    next_batch: AtomicU64,
    failed_requests: AtomicU64,
    progress: ProgressBar,
    /// Results other than `ok` and request failures, by name, with a count.
    failures: Mutex<BTreeMap<String, u64>>,
}

impl Shared {
    fn record(&self, what: String, n: u64) {
        *self
            .failures
            .lock()
            .expect("failures lock")
            .entry(what)
            .or_default() += n;
    }
}

struct ClientStats {
    latency_us: Histogram<u64>,
    requests: u64,
    transfers: u64,
    not_ok: u64,
    failed_requests: u64,
}

impl ClientStats {
    fn new() -> Self {
        ClientStats {
            latency_us: Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("histogram bounds"),
            requests: 0,
            transfers: 0,
            not_ok: 0,
            failed_requests: 0,
        }
    }

    fn merge(&mut self, other: ClientStats) {
        let _ = self.latency_us.add(&other.latency_us);
        self.requests += other.requests;
        self.transfers += other.transfers;
        self.not_ok += other.not_ok;
        self.failed_requests += other.failed_requests;
    }
}

/// xorshift64*: plenty for picking accounts, and no dependency.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        let mut r = Rng(seed | 1);
        for _ in 0..4 {
            r.next();
        }
        r
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n` (n > 0), by multiply-shift.
    fn below(&mut self, n: u64) -> u64 {
        ((self.next() as u128 * n as u128) >> 64) as u64
    }

    fn chance(&mut self, p: f64) -> bool {
        (self.next() >> 11) as f64 * (1.0 / (1u64 << 53) as f64) < p
    }
}

impl Plan {
    /// An account index in `0..accounts`, skewed towards the hot ones if asked.
    fn pick(&self, rng: &mut Rng) -> u64 {
        if self.hot == 0 {
            rng.below(self.accounts)
        } else if rng.chance(self.hot_share) {
            rng.below(self.hot)
        } else {
            self.hot + rng.below(self.accounts - self.hot)
        }
    }

    /// The JSON body of batch `k`: transfers `k * batch + 1 ..` (after the base), `n` of them.
    fn write_batch(&self, body: &mut String, rng: &mut Rng, k: u64, n: u64) {
        body.clear();
        body.push('[');
        let first = self.transfer_base + k * self.batch;
        for i in 0..n {
            let debit = self.pick(rng);
            let mut credit = self.pick(rng);
            while credit == debit {
                credit = self.pick(rng);
            }
            if i > 0 {
                body.push(',');
            }
            let id = first + i + 1;
            let _ = write!(
                body,
                r#"{{"id":{id},"debit_account_id":{},"credit_account_id":{},"amount":{},"ledger":{},"code":1"#,
                self.account_base + debit + 1,
                self.account_base + credit + 1,
                1 + rng.below(1000),
                self.ledger,
            );
            if self.user_data {
                let group = id / queries::USER_DATA_64_GROUP;
                let _ = write!(body, r#","user_data_128":"{id}","user_data_64":"{group}""#);
            }
            body.push('}');
        }
        body.push(']');
    }

    /// Takes the next batch and writes its request into `request` (through `body`); its
    /// transfer count, or `None` when there is no batch left.
    fn next_request(
        &self,
        shared: &Shared,
        rng: &mut Rng,
        body: &mut String,
        request: &mut Vec<u8>,
    ) -> Option<u64> {
        let k = shared.next_batch.fetch_add(1, Ordering::Relaxed);
        let n = self.batch_len(k)?;
        self.write_batch(body, rng, k, n);
        self.target.request(body, request);
        Some(n)
    }

    /// How many transfers batch `k` holds, or `None` when there is no such batch.
    fn batch_len(&self, k: u64) -> Option<u64> {
        match self.total {
            Some(total) => {
                let first = k.checked_mul(self.batch)?;
                (first < total).then(|| (total - first).min(self.batch))
            }
            None => Some(self.batch),
        }
    }
}

/// One load client on the hand-written HTTP/1.1 path (`http1.rs`), not `bulwark-client` (which
/// sets the accounts up): measured back to back, 8 s runs of `--batch 1000 --concurrency 8` on
/// a node the bench started, release build, 2 shared cores, three pairs: this path 209.5k,
/// 258.5k and 202.6k transfers/s at 0.07 client cores; `create_transfers` 196.6k, 175.7k and
/// 166.6k at 0.18 (typed events serialized one by one, the answer parsed into owned results,
/// the breaker's and the leader's bookkeeping per request): about 20% fewer, so the bench keeps
/// this path.
///
/// While a request is in flight the client checks the last answer and writes the next request,
/// as a client that keeps its connection busy would: at `--batch 8189 --concurrency 1` these
/// took about 2 ms of every round trip of about 22 ms when done in turn. The latency measured is
/// the request's alone: from its first byte written to its answer's last byte read.
async fn client_loop(plan: Arc<Plan>, shared: Arc<Shared>, seed: u64) -> ClientStats {
    let mut client = Client::new(&plan, seed);
    let mut ticker = (plan.rate > 0.0).then(|| {
        let mut t = tokio::time::interval(Duration::from_secs_f64(1.0 / plan.rate));
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        t
    });
    let mut next = client.prepare(&plan, &shared);
    loop {
        if let Some(ticker) = &mut ticker {
            ticker.tick().await;
        }
        if plan.deadline.is_some_and(|d| Instant::now() >= d)
            || shared.failed_requests.load(Ordering::Relaxed) >= MAX_FAILED_REQUESTS
        {
            break;
        }
        let Some(n) = next else { break };
        next = client.round_trip(&plan, &shared, n).await;
    }
    client.check_last(&shared);
    client.stats
}

/// A load client's state: the request in flight, the next one, the answers.
struct Client {
    stats: ClientStats,
    rng: Rng,
    body: String,
    /// The next request, written while the one in flight is answered.
    next_request: Vec<u8>,
    in_flight: Vec<u8>,
    answer: Vec<u8>,
    /// The last answer, checked while the next request is in flight, and its transfer count.
    last_answer: Vec<u8>,
    unchecked: Option<u64>,
    connection: Option<Connection>,
}

impl Client {
    fn new(plan: &Plan, seed: u64) -> Self {
        let body = String::with_capacity(plan.batch as usize * 128);
        let request = || Vec::with_capacity(body.capacity() + 256);
        Client {
            stats: ClientStats::new(),
            rng: Rng::new(seed),
            next_request: request(),
            in_flight: request(),
            answer: Vec::new(),
            last_answer: Vec::new(),
            unchecked: None,
            connection: None,
            body,
        }
    }

    /// Writes the next batch's request; its transfer count, or `None` when there is none.
    fn prepare(&mut self, plan: &Plan, shared: &Shared) -> Option<u64> {
        plan.next_request(
            shared,
            &mut self.rng,
            &mut self.body,
            &mut self.next_request,
        )
    }

    fn check_last(&mut self, shared: &Shared) {
        check_unchecked(
            &mut self.unchecked,
            &self.last_answer,
            &mut self.stats,
            shared,
        );
    }

    /// Sends the prepared request of `n` transfers and reads its answer, meanwhile checking the
    /// last answer and preparing the next request (whose count it returns).
    async fn round_trip(&mut self, plan: &Plan, shared: &Shared, n: u64) -> Option<u64> {
        std::mem::swap(&mut self.in_flight, &mut self.next_request);
        let sent = Instant::now();
        let written = write_request(&mut self.connection, &plan.target, &self.in_flight).await;
        let (connection, answer) = (&mut self.connection, &mut self.answer);
        let answered = async {
            written?;
            let body = read_answer(connection).await?;
            answer.clear();
            answer.extend_from_slice(body);
            Ok::<_, String>(sent.elapsed())
        };
        let (stats, unchecked, last_answer) =
            (&mut self.stats, &mut self.unchecked, &self.last_answer);
        let (rng, body, next_request) = (&mut self.rng, &mut self.body, &mut self.next_request);
        let meanwhile = async {
            check_unchecked(unchecked, last_answer, stats, shared);
            plan.next_request(shared, rng, body, next_request)
        };
        let (outcome, next) = tokio::join!(answered, meanwhile);
        self.settle(outcome, n, shared).await;
        next
    }

    /// Counts a round trip's outcome; the answer is checked during the next one.
    async fn settle(&mut self, outcome: Result<Duration, String>, n: u64, shared: &Shared) {
        self.stats.requests += 1;
        match outcome {
            Ok(latency) => {
                let _ = self
                    .stats
                    .latency_us
                    .record((latency.as_micros() as u64).max(1));
                std::mem::swap(&mut self.answer, &mut self.last_answer);
                self.unchecked = Some(n);
            }
            Err(e) => {
                // The connection may be broken: the next request opens a new one.
                self.connection = None;
                self.stats.failed_requests += 1;
                shared.failed_requests.fetch_add(1, Ordering::Relaxed);
                shared.record(format!("failed request: {e}"), 1);
                // Do not spin on a node that is down.
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Checks the last answer, of `unchecked` transfers, if it was not checked yet.
fn check_unchecked(
    unchecked: &mut Option<u64>,
    answer: &[u8],
    stats: &mut ClientStats,
    shared: &Shared,
) {
    if let Some(n) = unchecked.take() {
        check_answer(answer, n, stats, shared);
    }
}

/// Writes `request` on `connection`, opening it first if there is none (or the node closed
/// the last one).
async fn write_request(
    connection: &mut Option<Connection>,
    target: &Target,
    request: &[u8],
) -> Result<(), String> {
    if connection.as_ref().is_none_or(|c| c.closing) {
        *connection = Some(Connection::open(target).await?);
    }
    let Some(open) = connection.as_mut() else {
        unreachable!("opened above");
    };
    open.write_request(request).await
}

/// Reads the answer to the request just written on `connection`: its body if it is a success.
async fn read_answer(connection: &mut Option<Connection>) -> Result<&[u8], String> {
    let Some(open) = connection.as_mut() else {
        return Err("no connection".into());
    };
    let (status, body) = open.read_answer().await?;
    if !(200..300).contains(&status) {
        return Err(format!(
            "HTTP {status}: {}",
            String::from_utf8_lossy(&body[..body.len().min(200)])
        ));
    }
    Ok(body)
}

/// Sends `request` on `connection`, opening it first if there is none (or the node closed
/// the last one); the answer's body if it is a success.
async fn send<'c>(
    connection: &'c mut Option<Connection>,
    target: &Target,
    request: &[u8],
) -> Result<&'c [u8], String> {
    write_request(connection, target, request).await?;
    read_answer(connection).await
}

/// Counts the results of a batch answer of `n` transfers that are not `ok`.
fn check_answer(bytes: &[u8], n: u64, stats: &mut ClientStats, shared: &Shared) {
    match serde_json::from_slice::<Answer>(bytes) {
        Ok(answer) => {
            let mut not_ok = 0;
            for r in &answer.results {
                if r.result != "ok" {
                    not_ok += 1;
                    shared.record(r.result.to_string(), 1);
                }
            }
            let missing = n.saturating_sub(answer.results.len() as u64);
            if missing > 0 {
                shared.record("missing result".into(), missing);
            }
            stats.transfers += n;
            stats.not_ok += not_ok + missing;
            shared.progress.inc(n);
        }
        Err(e) => {
            stats.failed_requests += 1;
            shared.failed_requests.fetch_add(1, Ordering::Relaxed);
            shared.record(
                format!("failed request: answer is not a batch answer: {e}"),
                1,
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Report

struct Report<'a> {
    args: &'a BenchArgs,
    id_base: u64,
    seconds: f64,
    stats: ClientStats,
    failures: BTreeMap<String, u64>,
    /// CPU time of the bench process and of the node it started, in cores (1.0 = one core busy).
    client_cpu: Option<f64>,
    server_cpu: Option<f64>,
    /// The query pages read after the load (`--queries`).
    queries: Option<queries::QueryReport>,
}

impl Report<'_> {
    fn ms(&self, quantile: f64) -> f64 {
        let h = &self.stats.latency_us;
        if h.is_empty() {
            return 0.0;
        }
        h.value_at_quantile(quantile) as f64 / 1000.0
    }

    fn max_ms(&self) -> f64 {
        self.stats.latency_us.max() as f64 / 1000.0
    }

    fn mean_ms(&self) -> f64 {
        self.stats.latency_us.mean() / 1000.0
    }

    fn per_sec(&self, n: u64) -> f64 {
        if self.seconds > 0.0 {
            n as f64 / self.seconds
        } else {
            0.0
        }
    }

    fn errors(&self) -> u64 {
        self.stats.not_ok + self.stats.failed_requests
    }

    fn json(&self) -> serde_json::Value {
        let a = self.args;
        json!({
            "transfers": self.stats.transfers,
            "requests": self.stats.requests,
            "seconds": round3(self.seconds),
            "transfers_per_sec": round3(self.per_sec(self.stats.transfers)),
            "requests_per_sec": round3(self.per_sec(self.stats.requests)),
            "latency_ms": {
                "p50": self.ms(0.5),
                "p99": self.ms(0.99),
                "p999": self.ms(0.999),
                "max": self.max_ms(),
                "mean": round3(self.mean_ms()),
            },
            "errors": self.errors(),
            "not_ok_results": self.stats.not_ok,
            "failed_requests": self.stats.failed_requests,
            "failures": self.failures,
            "queries": self.queries.as_ref().map(queries::QueryReport::json),
            "client_cpu_cores": self.client_cpu.map(round3),
            "server_cpu_cores": self.server_cpu.map(round3),
            "config": {
                "addr": a.addr,
                "accounts": a.accounts,
                "transfers": a.duration.is_none().then_some(a.transfers),
                "duration": a.duration,
                "batch": a.batch,
                "concurrency": a.concurrency,
                "hot_accounts": a.hot_accounts,
                "hot_share": a.hot_share,
                "ledger": a.ledger,
                "rate": a.rate,
                "user_data": a.user_data,
                "id_base": self.id_base,
            },
        })
    }

    fn text(&self) -> String {
        let a = self.args;
        let mut out = String::new();
        let skew = if hot_count(a) > 0 {
            format!(
                ", {} hot accounts take {:.0}% of picks",
                hot_count(a),
                a.hot_share * 100.0
            )
        } else {
            String::new()
        };
        let rate = if a.rate > 0.0 {
            format!(", {} req/s per client", a.rate)
        } else {
            String::new()
        };
        let _ = writeln!(
            out,
            "bench: {} accounts, batch {}, concurrency {}{skew}{rate}, node {}",
            a.accounts,
            a.batch,
            a.concurrency,
            a.addr.as_deref().unwrap_or("self-started")
        );
        let _ = writeln!(out, "transfers      {}", self.stats.transfers);
        let _ = writeln!(out, "seconds        {:.2}", self.seconds);
        let _ = writeln!(
            out,
            "transfers/s    {:.0}",
            self.per_sec(self.stats.transfers)
        );
        let _ = writeln!(
            out,
            "requests       {} ({:.1}/s)",
            self.stats.requests,
            self.per_sec(self.stats.requests)
        );
        let _ = writeln!(
            out,
            "latency ms     p50 {:.3}  p99 {:.3}  p999 {:.3}  max {:.3}  (mean {:.3}, per request)",
            self.ms(0.5),
            self.ms(0.99),
            self.ms(0.999),
            self.max_ms(),
            self.mean_ms()
        );
        let _ = writeln!(
            out,
            "errors         {} ({} results not ok, {} failed requests)",
            self.errors(),
            self.stats.not_ok,
            self.stats.failed_requests
        );
        for (what, n) in &self.failures {
            let _ = writeln!(out, "  {n:>10}  {what}");
        }
        match (self.client_cpu, self.server_cpu) {
            (Some(c), Some(s)) => {
                let _ = writeln!(
                    out,
                    "cpu            bench client {c:.2} cores, node {s:.2} cores"
                );
            }
            (Some(c), None) => {
                let _ = writeln!(out, "cpu            bench client {c:.2} cores");
            }
            _ => {}
        }
        if let Some(queries) = &self.queries {
            out.push_str(&queries.text());
        }
        out
    }
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// User + system CPU seconds of a process so far (Linux `/proc`; `None` elsewhere).
fn process_cpu_seconds(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces; the fields after it are space-separated.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after the name.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    // USER_HZ, which /proc always uses, is 100 on Linux.
    Some((utime + stime) as f64 / 100.0)
}

// ---------------------------------------------------------------------------------------------
// A node of our own

struct SpawnedNode {
    process: NodeProcess,
    pid: u32,
    url: String,
    token: String,
    _dir: tempfile::TempDir,
}

impl SpawnedNode {
    async fn start() -> Result<SpawnedNode, String> {
        let exe = std::env::current_exe().map_err(|e| format!("cannot find this program: {e}"))?;
        let dir = tempfile::Builder::new()
            .prefix("bulwark-bench-")
            .tempdir()
            .map_err(|e| format!("cannot create a temporary directory: {e}"))?;
        let port =
            bulwark_harness::free_port().map_err(|e| format!("cannot find a free port: {e}"))?;
        let http = SocketAddr::from(([127, 0, 0, 1], port));
        let (token_path, token) = bulwark_harness::admin_token(dir.path())
            .map_err(|e| format!("cannot make an admin token: {e}"))?;
        let mut process = NodeProcess::new(
            &exe,
            dir.path().join("data"),
            vec!["--listen".into(), http.to_string()],
            Logs::append(dir.path().join("node.log")),
        )
        .with_admin_token(&token_path);
        let limit = Duration::from_secs(30);
        if let Err(e) = process.start_live(http, limit).await {
            return Err(match e {
                StartError::Spawn(e) => format!("cannot run {}: {e}", exe.display()),
                StartError::Exited(status, _) => {
                    format!("the node exited ({status}): {}", process.log_tail(10))
                }
                StartError::PortTaken(_) => format!("the node exited: {}", process.log_tail(10)),
                StartError::NotLive(..) => {
                    format!("the node did not come up in 30 s: {}", process.log_tail(10))
                }
            });
        }
        let status = bulwark_harness::StatusClient::new(Duration::from_secs(5), &token);
        if !status.wait_authorized(http, limit).await {
            return Err(format!(
                "the node never took its admin token: {}",
                process.log_tail(10)
            ));
        }
        Ok(SpawnedNode {
            pid: process.pid().unwrap_or(0),
            process,
            url: format!("http://{http}"),
            token,
            _dir: dir,
        })
    }

    /// SIGTERM, then wait for a graceful exit (SIGKILL after 30 s).
    fn stop(mut self) {
        match self.process.terminate(Duration::from_secs(30)) {
            Some(status) if !status.success() => {
                eprintln!("warning: the bench node exited with {status}");
            }
            Some(_) => {}
            None => eprintln!("warning: the bench node did not stop in 30 s; killed it"),
        }
    }
}
