//! `bulwark dlq list|retry|discard`: the dead-letter queue of payments to external accounts
//! (an admin token is needed; every retry and discard is in the audit trail).

use std::process::ExitCode;

use serde_json::Value;

use crate::client::{call, Target};
use crate::token_cmd::answered;

#[derive(clap::Subcommand)]
pub enum DlqCommand {
    /// List dead payments: refused by their processor, or given up after the retry limit.
    List(ListArgs),
    /// Send a dead payment back to its processor: its amount is reserved again (the money must
    /// still be there) under a new pending transfer, with the same idempotency key.
    Retry(PaymentArgs),
    /// Take a dead payment out of the queue for good.
    Discard(PaymentArgs),
}

#[derive(clap::Args)]
pub struct ListArgs {
    /// Payments after this id (`next_after` of the previous page).
    #[arg(long)]
    pub after: Option<u128>,
    #[arg(long, default_value_t = 100)]
    pub limit: usize,
    #[command(flatten)]
    pub target: Target,
}

#[derive(clap::Args)]
pub struct PaymentArgs {
    /// The payment's id: the id of the transfer that made it.
    pub payment_id: u128,
    #[command(flatten)]
    pub target: Target,
}

pub async fn run(command: DlqCommand) -> ExitCode {
    match command {
        DlqCommand::List(a) => {
            let mut url = format!("{}/v1/outbox/dead?limit={}", a.target.addr, a.limit);
            if let Some(after) = a.after {
                url.push_str(&format!("&after={after}"));
            }
            let outcome = call(&a.target, reqwest::Method::GET, url, None).await;
            answered(outcome, a.target.json, show_list)
        }
        DlqCommand::Retry(a) => act(a, "retry").await,
        DlqCommand::Discard(a) => act(a, "discard").await,
    }
}

async fn act(a: PaymentArgs, action: &str) -> ExitCode {
    let url = format!("{}/v1/outbox/dead/{}/{action}", a.target.addr, a.payment_id);
    let outcome = call(&a.target, reqwest::Method::POST, url, None).await;
    answered(outcome, a.target.json, |v| match v["pending_id"].as_str() {
        Some(pending) => println!(
            "payment {} sent back to its processor (reserved again as pending transfer {pending})",
            a.payment_id
        ),
        None => println!("payment {} discarded", a.payment_id),
    })
}

fn show_list(v: &Value) {
    let payments = v["payments"].as_array().cloned().unwrap_or_default();
    if payments.is_empty() {
        println!("the dead-letter queue is empty");
    }
    for p in &payments {
        println!(
            "payment {}  amount {}  to account {}  {}: {}  (retried {} times)",
            text(&p["payment_id"]),
            text(&p["amount"]),
            text(&p["processor_account_id"]),
            text(&p["reason"]),
            text(&p["detail"]),
            p["retries"],
        );
    }
    if let Some(next) = v["next_after"].as_str() {
        println!("more: --after {next}");
    }
}

fn text(v: &Value) -> &str {
    v.as_str().unwrap_or("?")
}
