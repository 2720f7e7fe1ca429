//! The command-line client: accounts, transfers and history over HTTP API v1.

use std::process::ExitCode;

use serde_json::{json, Value};

/// Where the server is, shared by every client command.
#[derive(clap::Args, Clone)]
pub struct Target {
    /// Base URL of a Bulwark node.
    #[arg(
        long,
        default_value = "http://127.0.0.1:7070",
        env = "BULWARK_ADDR",
        global = true
    )]
    pub addr: String,
    /// Print the server's JSON answer instead of readable text.
    #[arg(long, global = true)]
    pub json: bool,
    /// The cluster's CA certificate (`ca.crt`), the only one trusted for an `https://` address.
    #[arg(long, env = "BULWARK_CA", global = true)]
    pub ca: Option<std::path::PathBuf>,
    /// A file holding the API token to send [default: the token in $BULWARK_TOKEN].
    #[arg(long, env = "BULWARK_TOKEN_FILE", global = true)]
    pub token_file: Option<std::path::PathBuf>,
}

impl Target {
    /// The token to send: `--token-file`'s, else `$BULWARK_TOKEN`, else none (the node answers
    /// 401, which says how to send one).
    pub fn token(&self) -> Result<Option<String>, String> {
        if let Some(path) = &self.token_file {
            return bulwark_token::read_file(path)
                .map(Some)
                .map_err(|e| format!("--token-file: {e}"));
        }
        match std::env::var("BULWARK_TOKEN") {
            Ok(t) if !t.trim().is_empty() => Ok(Some(t.trim().to_string())),
            _ => Ok(None),
        }
    }

    /// A `bulwark-client` of the node at `--addr` alone (it learns no other member, so that a
    /// node's own answers come from it), with `--ca` and the token.
    pub fn api_client(
        &self,
        retry: bulwark_client::RetryPolicy,
    ) -> Result<bulwark_client::Client, String> {
        let mut builder = bulwark_client::ClientBuilder::new([self.addr.as_str()])
            .routing(bulwark_client::Routing::RoundRobin)
            .learn_members(false)
            .retry(retry)
            .request_timeout(REQUEST_TIMEOUT);
        if self.addr.starts_with("https://") {
            let Some(ca) = &self.ca else {
                return Err(format!(
                    "{}: an https:// address needs the cluster's CA certificate: --ca PATH (or \
                     BULWARK_CA; a single node's is <data-dir>/tls/ca.crt)",
                    self.addr
                ));
            };
            builder = builder.ca_file(ca);
        }
        if let Some(token) = self.token()? {
            builder = builder.token(token);
        }
        builder.build().map_err(|e| e.to_string())
    }

    /// An HTTP client that sends the token, if there is one.
    pub fn client(&self) -> Result<reqwest::Client, String> {
        let headers = match self.token()? {
            Some(token) => bulwark_harness::bearer_headers(&token),
            None => Default::default(),
        };
        reqwest::Client::builder()
            .default_headers(headers)
            .build()
            .map_err(|e| format!("cannot build an HTTP client: {e}"))
    }
}

#[derive(clap::Subcommand)]
pub enum AccountCommand {
    /// Create one account.
    Create(AccountCreateArgs),
    /// Show an account and its balances.
    Get(AccountGetArgs),
}

#[derive(clap::Args)]
pub struct AccountCreateArgs {
    /// 1 to 2^128 - 2 (a ULID or UUID as its 128-bit integer).
    #[arg(long)]
    pub id: u128,
    #[arg(long)]
    pub ledger: u32,
    #[arg(long)]
    pub code: u16,
    /// Comma-separated: linked, debits_must_not_exceed_credits, credits_must_not_exceed_debits, history.
    #[arg(long, value_delimiter = ',')]
    pub flags: Vec<String>,
    #[arg(long, default_value_t = 0)]
    pub user_data_128: u128,
    #[arg(long, default_value_t = 0)]
    pub user_data_64: u64,
    #[arg(long, default_value_t = 0)]
    pub user_data_32: u32,
    #[command(flatten)]
    pub target: Target,
}

#[derive(clap::Args)]
pub struct AccountGetArgs {
    pub id: u128,
    #[command(flatten)]
    pub target: Target,
}

#[derive(clap::Args)]
pub struct TransferArgs {
    #[arg(long)]
    pub id: u128,
    #[arg(long, default_value_t = 0)]
    pub debit: u128,
    #[arg(long, default_value_t = 0)]
    pub credit: u128,
    /// Required except on a post (absent: the full pending amount) or a void. On a balancing
    /// transfer it is the most to move (0: no cap).
    #[arg(long)]
    pub amount: Option<u128>,
    #[arg(long, default_value_t = 0)]
    pub ledger: u32,
    #[arg(long, default_value_t = 0)]
    pub code: u16,
    /// Comma-separated: linked, pending, post_pending_transfer, void_pending_transfer,
    /// balancing_debit, balancing_credit, closing_debit, closing_credit.
    #[arg(long, value_delimiter = ',')]
    pub flags: Vec<String>,
    #[arg(long, default_value_t = 0)]
    pub pending_id: u128,
    /// Seconds before a pending transfer expires (0: never).
    #[arg(long, default_value_t = 0)]
    pub timeout: u32,
    #[arg(long, default_value_t = 0)]
    pub user_data_128: u128,
    #[arg(long, default_value_t = 0)]
    pub user_data_64: u64,
    #[arg(long, default_value_t = 0)]
    pub user_data_32: u32,
    #[command(flatten)]
    pub target: Target,
}

#[derive(clap::Args)]
pub struct HistoryArgs {
    pub account: u128,
    #[arg(long, default_value_t = 100)]
    pub limit: usize,
    /// Show transfers after this timestamp (from a previous page's `next_after`).
    #[arg(long, default_value_t = 0)]
    pub after: u64,
    #[command(flatten)]
    pub target: Target,
}

pub(crate) enum Outcome {
    Answered(reqwest::StatusCode, Value),
    Unreachable(String),
}

/// How long the command line waits for one answer (a `changes --follow` request waits 25 s on
/// the node): a stuck node must not hang a script.
const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Sends one request of API v1 to the node at `--addr` through `bulwark-client`, and only to
/// it (some routes answer for that node: status, the local audit). Creating accounts and
/// transfers is retried with the same ids (a retry never applies an event twice); every other
/// request is sent once, as a token or membership change must not be repeated blindly.
pub(crate) async fn call(
    target: &Target,
    method: reqwest::Method,
    url: String,
    body: Option<Value>,
) -> Outcome {
    let base = target.addr.trim_end_matches('/');
    let Some(path) = url.strip_prefix(base) else {
        return Outcome::Unreachable(format!("{url} is not on {base}"));
    };
    let idempotent_write =
        method == reqwest::Method::POST && (path == "/v1/accounts" || path == "/v1/transfers");
    let retry = if idempotent_write {
        bulwark_client::RetryPolicy {
            max_attempts: 3,
            ..Default::default()
        }
    } else {
        bulwark_client::RetryPolicy::none()
    };
    let client = match target.api_client(retry) {
        Ok(client) => client,
        Err(e) => return Outcome::Unreachable(e),
    };
    let write = method != reqwest::Method::GET;
    let body = body.map(|b| b.to_string().into_bytes());
    match client.raw(method, path, body, write).await {
        Err(e) => Outcome::Unreachable(format!("cannot reach {url}: {e}")),
        Ok(answer) => {
            let status = reqwest::StatusCode::from_u16(answer.status)
                .unwrap_or(reqwest::StatusCode::INTERNAL_SERVER_ERROR);
            match serde_json::from_slice::<Value>(&answer.body) {
                Ok(v) => Outcome::Answered(status, v),
                Err(e) => {
                    Outcome::Unreachable(format!("{url} answered {status} without JSON: {e}"))
                }
            }
        }
    }
}

/// Prints an error answer and returns the exit code it maps to, or `None` for a 2xx answer.
pub(crate) fn refused(outcome: &Outcome, as_json: bool) -> Option<ExitCode> {
    match outcome {
        Outcome::Unreachable(message) => {
            eprintln!("error: {message}");
            Some(ExitCode::from(4))
        }
        Outcome::Answered(status, body) if !status.is_success() => {
            if as_json {
                println!("{body}");
            } else {
                eprintln!(
                    "error: {} {}: {}",
                    status.as_u16(),
                    body["error"].as_str().unwrap_or("?"),
                    body["message"].as_str().unwrap_or("")
                );
            }
            Some(ExitCode::from(if status.is_client_error() { 3 } else { 4 }))
        }
        Outcome::Answered(..) => None,
    }
}

/// Prints the one result of a single-event write; exit 1 unless it is `ok`.
fn single_result(outcome: Outcome, as_json: bool, what: &str, id: u128) -> ExitCode {
    if let Some(code) = refused(&outcome, as_json) {
        return code;
    }
    let Outcome::Answered(_, body) = outcome else {
        unreachable!()
    };
    let result = body["results"][0]["result"]
        .as_str()
        .unwrap_or("?")
        .to_string();
    if as_json {
        println!("{body}");
    } else if result == "ok" {
        println!("{what} {id} created");
    } else {
        println!("{what} {id}: {result}");
    }
    if result == "ok" {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

pub async fn account(cmd: AccountCommand) -> ExitCode {
    match cmd {
        AccountCommand::Create(a) => {
            // Wide integers as decimal strings: the API takes JSON integers only up to u64::MAX.
            let body = json!([{
                "id": a.id.to_string(), "ledger": a.ledger, "code": a.code, "flags": a.flags,
                "user_data_128": a.user_data_128.to_string(),
                "user_data_64": a.user_data_64.to_string(), "user_data_32": a.user_data_32,
            }]);
            let url = format!("{}/v1/accounts", a.target.addr);
            let outcome = call(&a.target, reqwest::Method::POST, url, Some(body)).await;
            single_result(outcome, a.target.json, "account", a.id)
        }
        AccountCommand::Get(a) => {
            let url = format!("{}/v1/accounts/{}", a.target.addr, a.id);
            let outcome = call(&a.target, reqwest::Method::GET, url, None).await;
            if let Some(code) = refused(&outcome, a.target.json) {
                return code;
            }
            let Outcome::Answered(_, v) = outcome else {
                unreachable!()
            };
            if a.target.json {
                println!("{v}");
            } else {
                println!(
                    "account {}  ledger {}  code {}  flags [{}]  user_data_128 {}  user_data_64 {}  user_data_32 {}",
                    text(&v["id"]),
                    v["ledger"],
                    v["code"],
                    flags_text(&v["flags"]),
                    text(&v["user_data_128"]),
                    text(&v["user_data_64"]),
                    v["user_data_32"],
                );
                println!(
                    "  debits   pending {:>20}  posted {:>20}",
                    text(&v["debits_pending"]),
                    text(&v["debits_posted"])
                );
                println!(
                    "  credits  pending {:>20}  posted {:>20}",
                    text(&v["credits_pending"]),
                    text(&v["credits_posted"])
                );
            }
            ExitCode::SUCCESS
        }
    }
}

pub async fn transfer(t: TransferArgs) -> ExitCode {
    let mut transfer = json!({
        "id": t.id.to_string(), "debit_account_id": t.debit.to_string(),
        "credit_account_id": t.credit.to_string(), "ledger": t.ledger, "code": t.code,
        "flags": t.flags, "pending_id": t.pending_id.to_string(), "timeout": t.timeout,
        "user_data_128": t.user_data_128.to_string(), "user_data_64": t.user_data_64.to_string(),
        "user_data_32": t.user_data_32,
    });
    if let Some(amount) = t.amount {
        transfer["amount"] = json!(amount.to_string());
    }
    let body = json!([transfer]);
    let url = format!("{}/v1/transfers", t.target.addr);
    let outcome = call(&t.target, reqwest::Method::POST, url, Some(body)).await;
    single_result(outcome, t.target.json, "transfer", t.id)
}

pub async fn history(h: HistoryArgs) -> ExitCode {
    let url = format!(
        "{}/v1/accounts/{}/transfers?limit={}&after={}",
        h.target.addr, h.account, h.limit, h.after
    );
    let outcome = call(&h.target, reqwest::Method::GET, url, None).await;
    if let Some(code) = refused(&outcome, h.target.json) {
        return code;
    }
    let Outcome::Answered(_, v) = outcome else {
        unreachable!()
    };
    if h.target.json {
        println!("{v}");
        return ExitCode::SUCCESS;
    }
    let empty = Vec::new();
    let transfers = v["transfers"].as_array().unwrap_or(&empty);
    println!(
        "{:>20}  {:>20}  {:>12}  {:>12}  {:>14}  flags",
        "timestamp", "transfer", "debit", "credit", "amount"
    );
    for t in transfers {
        println!(
            "{:>20}  {:>20}  {:>12}  {:>12}  {:>14}  [{}]",
            text(&t["timestamp"]),
            text(&t["id"]),
            text(&t["debit_account_id"]),
            text(&t["credit_account_id"]),
            text(&t["amount"]),
            flags_text(&t["flags"])
        );
    }
    match v.get("next_after") {
        Some(next) => println!("more: bulwark history {} --after {}", h.account, text(next)),
        None => println!("({} transfers)", transfers.len()),
    }
    ExitCode::SUCCESS
}

/// A field as a person reads it: a decimal string without its quotes, anything else as JSON.
pub(crate) fn text(v: &Value) -> String {
    match v.as_str() {
        Some(s) => s.to_string(),
        None => v.to_string(),
    }
}

pub(crate) fn flags_text(v: &Value) -> String {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|f| f.as_str())
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default()
}
