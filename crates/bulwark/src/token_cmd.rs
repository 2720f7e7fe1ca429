//! `bulwark token create|list|revoke` and `bulwark audit`: the admin side of API tokens and the
//! replicated audit trail (an admin token is needed for all of them).

use std::process::ExitCode;

use serde_json::{json, Value};

use crate::client::{call, refused, Outcome, Target};

#[derive(clap::Subcommand)]
pub enum TokenCommand {
    /// Create a token; its text is printed once and kept nowhere else.
    Create(CreateArgs),
    /// List every token: id, name, role, when and by whom it was made (never a secret).
    List(TargetArgs),
    /// Revoke a token: every node refuses it once the change is applied.
    Revoke(RevokeArgs),
    /// Make a new cluster's first admin token offline, into a file (0600) to give every
    /// member as `--admin-token-file` (a Kubernetes Secret, a compose volume): it works once the
    /// cluster registers it, at its first start. No node is contacted.
    Generate {
        #[arg(long)]
        out: std::path::PathBuf,
    },
}

#[derive(clap::Args)]
pub struct CreateArgs {
    /// A name for whoever holds it (1 to 64 of A-Z a-z 0-9 . _ -).
    #[arg(long)]
    pub name: String,
    /// read (queries), write (accounts and transfers too) or admin (everything).
    #[arg(long)]
    pub role: String,
    /// Write the token's text into this file (created 0600, crash-safely) instead of printing
    /// it: for `--token-file`, and for scripts that must not show it.
    #[arg(long)]
    pub out: Option<std::path::PathBuf>,
    #[command(flatten)]
    pub target: Target,
}

#[derive(clap::Args)]
pub struct RevokeArgs {
    /// The token's id (16 hex digits, from `bulwark token list`).
    pub id: String,
    #[command(flatten)]
    pub target: Target,
}

#[derive(clap::Args)]
pub struct TargetArgs {
    #[command(flatten)]
    pub target: Target,
}

#[derive(clap::Args)]
pub struct AuditArgs {
    /// Records after this position (`next_after` of the previous page).
    #[arg(long)]
    pub after: Option<String>,
    /// Records per page.
    #[arg(long, default_value_t = 100)]
    pub limit: usize,
    /// Only records whose action is this (token_created, token_revoked, membership_changed, ...;
    /// with --local: unauthorized, forbidden, rate_limited, unsupported_media_type, peer_refused).
    #[arg(long)]
    pub action: Option<String>,
    /// This node's own log of refused requests and connections instead of the replicated trail
    /// (`--after` is then the number of records to skip).
    #[arg(long)]
    pub local: bool,
    #[command(flatten)]
    pub target: Target,
}

pub async fn token(command: TokenCommand) -> ExitCode {
    match command {
        TokenCommand::Create(a) => {
            let url = format!("{}/v1/tokens", a.target.addr);
            let body = json!({"name": a.name, "role": a.role});
            let outcome = call(&a.target, reqwest::Method::POST, url, Some(body)).await;
            if let (Some(out), Outcome::Answered(status, body)) = (&a.out, &outcome) {
                if status.is_success() {
                    return write_token(out, body);
                }
            }
            answered(outcome, a.target.json, |v| {
                println!(
                    "token {} ({}, role {}):\n{}",
                    text(&v["id"]),
                    text(&v["name"]),
                    text(&v["role"]),
                    text(&v["token"])
                );
                eprintln!(
                    "(shown once: store it now; `bulwark token revoke {}` ends it)",
                    text(&v["id"])
                );
            })
        }
        TokenCommand::List(a) => {
            let url = format!("{}/v1/tokens", a.target.addr);
            let outcome = call(&a.target, reqwest::Method::GET, url, None).await;
            answered(outcome, a.target.json, |v| {
                println!("{:<16}  {:<6}  {:<24}  created by", "id", "role", "name");
                for t in v["tokens"].as_array().into_iter().flatten() {
                    println!(
                        "{:<16}  {:<6}  {:<24}  {}",
                        text(&t["id"]),
                        text(&t["role"]),
                        text(&t["name"]),
                        text(&t["created_by"])
                    );
                }
            })
        }
        TokenCommand::Generate { out } => generate(&out),
        TokenCommand::Revoke(a) => {
            let url = format!("{}/v1/tokens/{}/revoke", a.target.addr, a.id);
            let outcome = call(&a.target, reqwest::Method::POST, url, None).await;
            answered(outcome, a.target.json, |_| {
                println!("token {} revoked", a.id)
            })
        }
    }
}

pub async fn audit(a: AuditArgs) -> ExitCode {
    if a.local {
        return local_audit(a).await;
    }
    let mut url = format!("{}/v1/audit?limit={}", a.target.addr, a.limit);
    if let Some(after) = &a.after {
        url.push_str(&format!("&after={after}"));
    }
    let outcome = call(&a.target, reqwest::Method::GET, url, None).await;
    let wanted = a.action.clone();
    answered(outcome, a.target.json, |v| {
        for r in v["records"].as_array().into_iter().flatten() {
            if wanted.as_deref().is_some_and(|w| r["action"] != w) {
                continue;
            }
            println!(
                "{}  index {:<8} {:<26} {:<24} {:<10} {}",
                r["timestamp"],
                r["index"].to_string(),
                text(&r["action"]),
                r["actor"].as_str().unwrap_or("-"),
                text(&r["result"]),
                r["detail"]
            );
        }
        if let Some(next) = v["next_after"].as_str() {
            println!("more: --after {next}");
        }
    })
}

async fn local_audit(a: AuditArgs) -> ExitCode {
    let mut url = format!("{}/v1/audit/local?limit={}", a.target.addr, a.limit);
    if let Some(skip) = &a.after {
        url.push_str(&format!("&skip={skip}"));
    }
    let outcome = call(&a.target, reqwest::Method::GET, url, None).await;
    let wanted = a.action.clone();
    answered(outcome, a.target.json, |v| {
        for r in v["records"].as_array().into_iter().flatten() {
            if wanted.as_deref().is_some_and(|w| r["code"] != w) {
                continue;
            }
            println!(
                "{}  {:<3} {:<22} {:<24} {:<22} {}",
                r["at"],
                r["status"],
                text(&r["code"]),
                r["who"].as_str().unwrap_or("-"),
                r["from"].as_str().unwrap_or("-"),
                text(&r["what"])
            );
        }
        if let Some(next) = v["next_skip"].as_u64() {
            println!("more: --local --after {next}");
        }
    })
}

/// Prints a 2xx answer with `show` (or as JSON) and exits 0; anything else as `refused` says.
/// `token create --out`: the new token's text into `path` (0600), its id on stdout.
fn generate(path: &std::path::Path) -> ExitCode {
    let token = bulwark_token::generate();
    let line = format!("{}\n", token.text);
    if let Err(e) = bulwark_fs::write_file_atomically(path, line.as_bytes()) {
        eprintln!("error: cannot write {}: {e}", path.display());
        return ExitCode::from(4);
    }
    println!(
        "admin token {:016x} written to {} (give it to every member of the new cluster as --admin-token-file)",
        token.id,
        path.display()
    );
    ExitCode::SUCCESS
}

fn write_token(path: &std::path::Path, body: &Value) -> ExitCode {
    let line = format!("{}\n", text(&body["token"]));
    if let Err(e) = bulwark_fs::write_file_atomically(path, line.as_bytes()) {
        eprintln!(
            "error: the token was created (id {}) but {e}; revoke it",
            text(&body["id"])
        );
        return ExitCode::from(4);
    }
    println!(
        "token {} ({}, role {}) written to {}",
        text(&body["id"]),
        text(&body["name"]),
        text(&body["role"]),
        path.display()
    );
    ExitCode::SUCCESS
}

pub(crate) fn answered(outcome: Outcome, as_json: bool, show: impl FnOnce(&Value)) -> ExitCode {
    if let Some(code) = refused(&outcome, as_json) {
        return code;
    }
    let Outcome::Answered(_, v) = outcome else {
        unreachable!("refused() handles every other outcome")
    };
    if as_json {
        println!("{v}");
    } else {
        show(&v);
    }
    ExitCode::SUCCESS
}

fn text(v: &Value) -> &str {
    v.as_str().unwrap_or("?")
}
