//! `bulwark top`: the console's cluster view in the terminal, refreshed every `--interval`:
//! the node asked, its term, leader, commit and applied index and the rate it applies entries
//! at, then every member with its role, match index, lag (entries and milliseconds), in-sync
//! state and the rate its match index moves (the leader knows these; a follower shows `-`),
//! and the outbox. On a terminal the screen is redrawn in place; otherwise each frame is
//! printed after the last (`--count` frames, then it exits: for scripts and tests).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::client::{call, refused, Outcome, Target};

#[derive(clap::Args)]
pub struct TopArgs {
    #[command(flatten)]
    pub target: Target,
    /// Seconds between two refreshes.
    #[arg(long, default_value_t = 1.0)]
    pub interval: f64,
    /// Frames to show before exiting (0: until Ctrl-C).
    #[arg(long, default_value_t = 0)]
    pub count: u64,
}

/// What the last frame saw, to turn counters into rates.
#[derive(Default)]
struct Previous {
    at: Option<Instant>,
    applied: u64,
    matched: HashMap<u64, u64>,
}

pub async fn top(args: TopArgs) -> ExitCode {
    if !(0.1..=3600.0).contains(&args.interval) {
        eprintln!("error: --interval must be from 0.1 to 3600 seconds");
        return ExitCode::from(2);
    }
    let terminal = std::io::stdout().is_terminal();
    let mut previous = Previous::default();
    let mut shown = 0u64;
    loop {
        let url = format!("{}/v1/status", args.target.addr.trim_end_matches('/'));
        let outcome = call(&args.target, reqwest::Method::GET, url, None).await;
        if let Some(code) = refused(&outcome, false) {
            return code;
        }
        let Outcome::Answered(_, status) = outcome else {
            unreachable!("refused() answers every other outcome")
        };
        let frame = render(&args.target.addr, &status, &mut previous);
        if terminal {
            // Home and clear: the frame replaces the last one.
            print!("\x1b[H\x1b[2J{frame}");
        } else {
            println!("{frame}");
        }
        shown += 1;
        if args.count != 0 && shown >= args.count {
            return ExitCode::SUCCESS;
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs_f64(args.interval)) => {}
            () = crate::server::shutdown_signal() => return ExitCode::SUCCESS,
        }
    }
}

fn number(v: &Value) -> String {
    v.as_u64()
        .map_or_else(|| "-".to_string(), |n| n.to_string())
}

/// `now - before` per second since the last frame, if there was one.
fn rate(now: u64, before: Option<u64>, seconds: Option<f64>) -> String {
    match (before, seconds) {
        (Some(before), Some(s)) if s > 0.0 => {
            format!("{:.0}/s", now.saturating_sub(before) as f64 / s)
        }
        _ => "-".into(),
    }
}

/// One frame of the view from a `/v1/status` answer.
fn render(addr: &str, s: &Value, previous: &mut Previous) -> String {
    let now = Instant::now();
    let seconds = previous.at.map(|at| now.duration_since(at).as_secs_f64());
    let applied = s["applied_index"].as_u64().unwrap_or(0);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "bulwark top  {addr}  node {}  {}  term {}  leader {}",
        number(&s["node_id"]),
        s["role"].as_str().unwrap_or("?"),
        number(&s["term"]),
        number(&s["leader_id"]),
    );
    let _ = writeln!(
        out,
        "commit {}  applied {}  applying {}  accounts {}  outbox {} waiting, {} dead{}",
        number(&s["commit_index"]),
        applied,
        rate(applied, previous.at.map(|_| previous.applied), seconds),
        number(&s["accounts"]),
        number(&s["outbox"]["outbound"]),
        number(&s["outbox"]["dead"]),
        if s["disk_full"] == true {
            "  DISK FULL"
        } else {
            ""
        },
    );
    let _ = writeln!(
        out,
        "\n{:>6}  {:>9}  {:>12}  {:>8}  {:>8}  {:>7}  {:>10}  http",
        "member", "role", "match", "lag", "lag ms", "in sync", "replicating"
    );
    let mut matched = HashMap::new();
    for m in s["members"].as_array().into_iter().flatten() {
        let id = m["id"].as_u64().unwrap_or(0);
        let at = m["match_index"].as_u64();
        if let Some(at) = at {
            matched.insert(id, at);
        }
        let moving = at.map_or("-".into(), |at| {
            rate(at, previous.matched.get(&id).copied(), seconds)
        });
        let in_sync = match m["in_sync"].as_bool() {
            Some(true) => "yes",
            Some(false) => "NO",
            None => "-",
        };
        let _ = writeln!(
            out,
            "{:>6}  {:>9}  {:>12}  {:>8}  {:>8}  {:>7}  {:>10}  {}",
            id,
            m["role"].as_str().unwrap_or("?"),
            number(&m["match_index"]),
            number(&m["lag"]),
            number(&m["lag_ms"]),
            in_sync,
            moving,
            m["http_addr"].as_str().unwrap_or(""),
        );
    }
    *previous = Previous {
        at: Some(now),
        applied,
        matched,
    };
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_frame_shows_members_and_turns_counters_into_rates() {
        let status = |applied: u64, matched: u64| {
            json!({"node_id": 1, "role": "leader", "term": 3, "leader_id": 1,
            "commit_index": applied, "applied_index": applied, "accounts": 2,
            "outbox": {"outbound": 0, "dead": 0}, "disk_full": false,
            "members": [
                {"id": 1, "role": "leader", "match_index": applied, "lag": 0, "lag_ms": 0, "in_sync": true, "http_addr": "127.0.0.1:7070"},
                {"id": 2, "role": "follower", "match_index": matched, "lag": applied - matched, "lag_ms": 900, "in_sync": false, "http_addr": "127.0.0.1:7071"},
            ]})
        };
        let mut previous = Previous::default();
        let first = render("http://x", &status(100, 90), &mut previous);
        assert!(first.contains("term 3  leader 1"), "{first}");
        assert!(
            first.contains("applying -"),
            "no rate without a previous frame: {first}"
        );
        assert!(
            first.contains("NO"),
            "a follower out of sync stands out: {first}"
        );
        // As if a second passed.
        previous.at = Some(Instant::now() - Duration::from_secs(1));
        let second = render("http://x", &status(1100, 590), &mut previous);
        let applying = second.lines().nth(1).expect("second line");
        let per_second: f64 = applying
            .split("applying ")
            .nth(1)
            .and_then(|r| r.split("/s").next())
            .and_then(|n| n.parse().ok())
            .expect("a rate");
        assert!((900.0..=1000.0).contains(&per_second), "{second}");
        assert_eq!(
            second
                .lines()
                .filter(|l| l.contains("127.0.0.1:707"))
                .count(),
            2,
            "{second}"
        );
    }
}
