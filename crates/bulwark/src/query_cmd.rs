//! `bulwark query transfers|accounts` and `bulwark changes`: the query routes
//! (`POST /v1/{transfers,accounts}/query`) and the change feed (`GET /v1/changes`) from the
//! command line.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use bulwark_limits::DEFAULT_HISTORY_PAGE;
use serde_json::{json, Map, Value};

use crate::client::{call, flags_text, refused, text, Outcome, Target};

#[derive(clap::Subcommand)]
pub enum QueryCommand {
    /// Transfers whose fields match, in timestamp order.
    Transfers(QueryArgs),
    /// Accounts whose fields match, in timestamp order.
    Accounts(QueryArgs),
}

#[derive(clap::Args)]
pub struct QueryArgs {
    /// Only those of this ledger.
    #[arg(long)]
    pub ledger: Option<u32>,
    /// Only those with this code.
    #[arg(long)]
    pub code: Option<u16>,
    /// Only those with this user_data_128 (a decimal integer up to 2^128 - 1).
    #[arg(long)]
    pub user_data_128: Option<u128>,
    /// Only those with this user_data_64.
    #[arg(long)]
    pub user_data_64: Option<u64>,
    /// Only those with this user_data_32.
    #[arg(long)]
    pub user_data_32: Option<u32>,
    /// Only those created at or after this timestamp (a previous page's cursor, going forward).
    #[arg(long)]
    pub timestamp_min: Option<u64>,
    /// Only those created at or before this timestamp (a previous page's cursor, with
    /// `--reversed`).
    #[arg(long)]
    pub timestamp_max: Option<u64>,
    /// At most this many per page (1 to 8190) [default: 100].
    #[arg(long)]
    pub limit: Option<usize>,
    /// Newest first.
    #[arg(long)]
    pub reversed: bool,
    #[command(flatten)]
    pub target: Target,
}

impl QueryArgs {
    /// The request body: only the fields given, wide integers as decimal strings.
    fn body(&self) -> Value {
        let mut body = Map::new();
        let mut put = |key: &str, value: Option<Value>| {
            if let Some(v) = value {
                body.insert(key.to_string(), v);
            }
        };
        put("ledger", self.ledger.map(|v| json!(v)));
        put("code", self.code.map(|v| json!(v)));
        put(
            "user_data_128",
            self.user_data_128.map(|v| json!(v.to_string())),
        );
        put(
            "user_data_64",
            self.user_data_64.map(|v| json!(v.to_string())),
        );
        put("user_data_32", self.user_data_32.map(|v| json!(v)));
        put(
            "timestamp_min",
            self.timestamp_min.map(|v| json!(v.to_string())),
        );
        put(
            "timestamp_max",
            self.timestamp_max.map(|v| json!(v.to_string())),
        );
        put("limit", self.limit.map(|v| json!(v)));
        put("reversed", self.reversed.then_some(json!(true)));
        Value::Object(body)
    }

    /// The command line of the next page: the same filter with `cursor` as the window's open
    /// end (`--timestamp-min` going forward, `--timestamp-max` reversed).
    fn next_page(&self, what: &str, cursor: &str) -> String {
        let show = |v: Option<u128>| v.map(|v| v.to_string());
        let (min, max) = if self.reversed {
            (
                show(self.timestamp_min.map(u128::from)),
                Some(cursor.to_string()),
            )
        } else {
            (
                Some(cursor.to_string()),
                show(self.timestamp_max.map(u128::from)),
            )
        };
        let flags = [
            ("ledger", show(self.ledger.map(u128::from))),
            ("code", show(self.code.map(u128::from))),
            ("user-data-128", show(self.user_data_128)),
            ("user-data-64", show(self.user_data_64.map(u128::from))),
            ("user-data-32", show(self.user_data_32.map(u128::from))),
            ("timestamp-min", min),
            ("timestamp-max", max),
            ("limit", show(self.limit.map(|l| l as u128))),
        ];
        let mut line = format!("bulwark query {what}");
        for (name, value) in flags {
            if let Some(v) = value {
                line.push_str(&format!(" --{name} {v}"));
            }
        }
        if self.reversed {
            line.push_str(" --reversed");
        }
        line
    }
}

pub async fn query(cmd: QueryCommand) -> ExitCode {
    let (what, args) = match &cmd {
        QueryCommand::Transfers(args) => ("transfers", args),
        QueryCommand::Accounts(args) => ("accounts", args),
    };
    let url = format!("{}/v1/{what}/query", args.target.addr);
    let outcome = call(&args.target, reqwest::Method::POST, url, Some(args.body())).await;
    if let Some(code) = refused(&outcome, args.target.json) {
        return code;
    }
    let Outcome::Answered(_, v) = outcome else {
        unreachable!()
    };
    if args.target.json {
        println!("{v}");
        return ExitCode::SUCCESS;
    }
    let empty = Vec::new();
    let found = v[what].as_array().unwrap_or(&empty);
    match what {
        "transfers" => print_transfers(found),
        _ => print_accounts(found),
    }
    let cursor = if args.reversed {
        v.get("next_timestamp_max")
    } else {
        v.get("next_timestamp_min")
    };
    match cursor {
        Some(cursor) => println!("more: {}", args.next_page(what, &text(cursor))),
        None => println!("({} {what})", found.len()),
    }
    ExitCode::SUCCESS
}

fn print_transfers(transfers: &[Value]) {
    println!(
        "{:>20}  {:>20}  {:>12}  {:>12}  {:>14}  {:>10}  {:>5}  flags",
        "timestamp", "transfer", "debit", "credit", "amount", "ledger", "code"
    );
    for t in transfers {
        println!(
            "{:>20}  {:>20}  {:>12}  {:>12}  {:>14}  {:>10}  {:>5}  [{}]",
            text(&t["timestamp"]),
            text(&t["id"]),
            text(&t["debit_account_id"]),
            text(&t["credit_account_id"]),
            text(&t["amount"]),
            text(&t["ledger"]),
            text(&t["code"]),
            flags_text(&t["flags"])
        );
    }
}

fn print_accounts(accounts: &[Value]) {
    println!(
        "{:>20}  {:>20}  {:>10}  {:>5}  {:>14}  {:>14}  {:>14}  {:>14}  flags",
        "timestamp",
        "account",
        "ledger",
        "code",
        "debits_pending",
        "debits_posted",
        "credits_pending",
        "credits_posted"
    );
    for a in accounts {
        println!(
            "{:>20}  {:>20}  {:>10}  {:>5}  {:>14}  {:>14}  {:>14}  {:>14}  [{}]",
            text(&a["timestamp"]),
            text(&a["id"]),
            text(&a["ledger"]),
            text(&a["code"]),
            text(&a["debits_pending"]),
            text(&a["debits_posted"]),
            text(&a["credits_pending"]),
            text(&a["credits_posted"]),
            flags_text(&a["flags"])
        );
    }
}

#[derive(clap::Args)]
pub struct ChangesArgs {
    /// Show the events after this timestamp (a previous page's `more:` cursor; 0: from the
    /// start).
    #[arg(long, default_value_t = 0)]
    pub after: u64,
    /// At most this many events per request (1 to 8190).
    #[arg(long, default_value_t = DEFAULT_HISTORY_PAGE)]
    pub limit: usize,
    /// Keep going: page until caught up, then wait for new events and print them as they
    /// arrive, until stopped (Ctrl-C).
    #[arg(long)]
    pub follow: bool,
    #[command(flatten)]
    pub target: Target,
}

/// How long a `--follow` request asks the node to wait when there is nothing new: the most it
/// allows (30 s) less a margin, so that the answer comes before the HTTPS client's own 30 s
/// timeout gives up on it.
const FOLLOW_WAIT: Duration = Duration::from_secs(25);

pub async fn changes(args: ChangesArgs) -> ExitCode {
    let mut after = args.after.to_string();
    if !args.target.json {
        emit(&format!(
            "{:>20}  {:<17}  {:>20}  {:>24}  {:>24}  {:>14}",
            "timestamp",
            "type",
            "transfer",
            "debit (debits/credits)",
            "credit (debits/credits)",
            "amount"
        ));
    }
    loop {
        let wait_ms = if args.follow {
            FOLLOW_WAIT.as_millis()
        } else {
            0
        };
        let url = format!(
            "{}/v1/changes?after={after}&limit={}&wait_ms={wait_ms}",
            args.target.addr, args.limit
        );
        let outcome = call(&args.target, reqwest::Method::GET, url, None).await;
        if let Some(code) = refused(&outcome, args.target.json) {
            return code;
        }
        let Outcome::Answered(_, v) = outcome else {
            unreachable!()
        };
        let empty = Vec::new();
        let events = v["changes"].as_array().unwrap_or(&empty);
        for event in events {
            let line = match args.target.json {
                true => event.to_string(),
                false => change_line(event),
            };
            if !emit(&line) {
                // The reader is gone (`| head`): nothing more to say to anyone.
                return ExitCode::SUCCESS;
            }
        }
        after = text(&v["next_after"]);
        if !args.follow {
            if events.len() >= args.limit {
                more_changes(&args, &after);
            }
            return ExitCode::SUCCESS;
        }
    }
}

/// The command line of the next page of a full one: on stdout, or on stderr with `--json`,
/// whose stdout holds events only.
fn more_changes(args: &ChangesArgs, after: &str) {
    let mut line = format!("more: bulwark changes --after {after}");
    if args.limit != DEFAULT_HISTORY_PAGE {
        line.push_str(&format!(" --limit {}", args.limit));
    }
    if args.target.json {
        eprintln!("{line}");
    } else {
        emit(&line);
    }
}

/// One event as a line: when, what, the transfer, each account with its posted balances right
/// after it, the amount.
fn change_line(c: &Value) -> String {
    let account = |a: &Value| {
        format!(
            "{} ({}/{})",
            text(&a["id"]),
            text(&a["debits_posted"]),
            text(&a["credits_posted"])
        )
    };
    format!(
        "{:>20}  {:<17}  {:>20}  {:>24}  {:>24}  {:>14}",
        text(&c["timestamp"]),
        text(&c["type"]),
        text(&c["transfer"]["id"]),
        account(&c["debit_account"]),
        account(&c["credit_account"]),
        text(&c["transfer"]["amount"])
    )
}

/// Writes a line to stdout and flushes it (a follower's reader sees each event as it comes);
/// false if stdout is closed.
fn emit(line: &str) -> bool {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}").and_then(|_| out.flush()).is_ok()
}
