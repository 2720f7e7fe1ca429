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

pub(crate) async fn call(
    target: &Target,
    method: reqwest::Method,
    url: String,
    body: Option<Value>,
) -> Outcome {
    if url.starts_with("https://") {
        return call_https(target, method, url, body).await;
    }
    let client = match target.client() {
        Ok(client) => client,
        Err(e) => return Outcome::Unreachable(e),
    };
    let mut request = client.request(method, &url);
    if let Some(body) = body {
        request = request.json(&body);
    }
    match request.send().await {
        Err(e) => Outcome::Unreachable(format!("cannot reach {url}: {e}")),
        Ok(response) => {
            let status = response.status();
            match response.json::<Value>().await {
                Ok(v) => Outcome::Answered(status, v),
                Err(e) => {
                    Outcome::Unreachable(format!("{url} answered {status} without JSON: {e}"))
                }
            }
        }
    }
}

async fn call_https(
    target: &Target,
    method: reqwest::Method,
    url: String,
    body: Option<Value>,
) -> Outcome {
    let Some(ca) = &target.ca else {
        return Outcome::Unreachable(format!(
            "{url}: an https:// address needs the cluster's CA certificate: --ca PATH (or \
             BULWARK_CA; a single node's is <data-dir>/tls/ca.crt)"
        ));
    };
    let body = body.map(|b| b.to_string().into_bytes());
    let token = match target.token() {
        Ok(token) => token,
        Err(e) => return Outcome::Unreachable(e),
    };
    match crate::https::request(ca, method, &url, body, token.as_deref()).await {
        Err(e) => Outcome::Unreachable(format!("cannot reach {url}: {e}")),
        Ok((status, bytes)) => match serde_json::from_slice::<Value>(&bytes) {
            Ok(v) => Outcome::Answered(status, v),
            Err(e) => Outcome::Unreachable(format!("{url} answered {status} without JSON: {e}")),
        },
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
