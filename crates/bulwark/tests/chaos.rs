//! `bulwark chaos` end to end: a short run of a real 3-node cluster, paying through a flaky
//! processor too (`--payments`), with each process, network,
//! membership and disk-full fault at least once (power faults: `chaos_power.rs`) must come out VALID, having done and compared enough (floors on operations,
//! acknowledged writes and reads checked against the replay), with a report and a history that
//! `bulwark chaos check` also passes; the same history with one acknowledged transfer removed from
//! the final state must fail the check, naming the property. A run with a node killed behind the
//! nemesis's back exits 1. Bad command lines get exit 2 and a message.

mod common;

use common::DecField;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use bulwark_chaos::{ChangeKind, Kind, Phase};
use common::{bin, chaos, window_starts};
use serde_json::Value;

/// Floors of what the CI run must have done and compared (see [`assert_the_run_tested_enough`]).
/// Seed 20261125 gave 9471 operations, 19367 transfers acknowledged, 1743 balance reads (1720
/// compared, every one of the 12 accounts) and 828 history reads (all compared: 16462 transfers,
/// 3001 running balances).
const OPERATIONS_FLOOR: usize = 2400;
const ACKNOWLEDGED_FLOOR: usize = 4000;
const READS_FLOOR: usize = 400;
const CHECKED_READS_FLOOR: usize = 400;
const CHECKED_ACCOUNTS_FLOOR: usize = 8;
/// Balancing transfers and closing pending transfers the feed must show (each void or expiry
/// reopens what a closing one closed).
const BALANCING_FLOOR: usize = 100;
const CLOSINGS_FLOOR: usize = 20;

#[test]
fn a_short_run_with_every_fault_is_valid_and_its_history_checks() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = dir.path().join("run");
    let out_arg = out.display().to_string();
    let (code, stdout, stderr) = chaos(&[
        "--nodes",
        "3",
        "--nemesis",
        "kill,kill-leader,pause,partition,bridge,one-way,membership,disk",
        "--duration",
        "100",
        "--rate",
        "150",
        "--hold-ms",
        "2000-4000",
        "--quiet-ms",
        "2000-4000",
        "--seed",
        "20261125",
        "--payments",
        "--out",
        &out_arg,
    ]);
    let logs = node_logs(&out);
    assert_eq!(
        code, 0,
        "chaos run failed\nstdout:\n{stdout}\nstderr:\n{stderr}\nnode logs:\n{logs}"
    );
    assert!(stdout.starts_with("VALID"), "stdout: {stdout}");

    // Every fault kind ran at least once, as the history's nemesis windows show.
    let history = std::fs::read_to_string(out.join("history.jsonl")).expect("history written");
    let windows = window_starts(&history);
    for fault in [
        "kill -9",
        "pause",
        "partition",
        "bridge",
        "one-way",
        "membership",
        "disk full",
    ] {
        assert!(
            windows.iter().any(|w| w.starts_with(fault)),
            "no `{fault}` window in {windows:?}"
        );
    }
    let report = std::fs::read_to_string(out.join("report.html")).expect("report written");
    assert!(report.contains("VALID") && report.contains("<svg"));
    // The external payments were checked too (and passed: the run is VALID).
    assert!(
        report.contains("payments: {"),
        "no payments verdict in the report"
    );
    assert_the_run_tested_enough(&out.join("history.jsonl"));
    check_catches_a_lost_write(dir.path(), &out, &history);
    check_catches_a_gap_in_the_feed(dir.path(), &history);
}

/// `bulwark chaos check` fails the run's history with one acknowledged transfer's event taken
/// out of the change feed it holds, naming the transfer.
fn check_catches_a_gap_in_the_feed(dir: &Path, history: &str) {
    let mut lines: Vec<String> = history.lines().map(str::to_string).collect();
    let mut state: Value = serde_json::from_str(&lines.pop().expect("a state line")).expect("json");
    let changes = state["changes"]
        .as_array_mut()
        .expect("the history holds the feed");
    // A single-phase transfer near the end: its removal breaks no pending transfer's story.
    let at = changes
        .iter()
        .rposition(|c| c["type"] == "single_phase")
        .expect("a single-phase event");
    let victim = changes.remove(at)["transfer"]["id"]
        .as_u64()
        .expect("an id");
    lines.push(serde_json::to_string(&state).expect("json"));
    let tampered = dir.join("feed-gap.jsonl");
    std::fs::write(&tampered, lines.join("\n") + "\n").expect("write");
    let (code, stdout, _) = chaos(&["check", &tampered.display().to_string()]);
    assert_eq!(code, 1, "{stdout}");
    assert!(stdout.contains("feed_matches_history"), "{stdout}");
    assert!(
        stdout.contains(&format!(
            "transfer {victim}, committed by the history, is missing"
        )),
        "{stdout}"
    );
}

/// The last lines of every node's log of a run, for a failure's message.
fn node_logs(out: &Path) -> String {
    std::fs::read_dir(out.join("nodes"))
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| e.path().extension().is_some_and(|x| x == "log"))
                .map(|e| {
                    let text = std::fs::read_to_string(e.path()).unwrap_or_default();
                    let tail: Vec<&str> = text.lines().rev().take(15).collect();
                    format!(
                        "--- {}\n{}",
                        e.path().display(),
                        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                    )
                })
                .collect::<Vec<_>>()
                .join("\n")
        })
        .unwrap_or_default()
}

/// `bulwark chaos check` agrees with the run's verdict on its history, and fails the same history
/// with one acknowledged transfer removed from the final state, naming it.
fn check_catches_a_lost_write(dir: &Path, out: &Path, history: &str) {
    // The checker on its own agrees...
    let history_path = out.join("history.jsonl").display().to_string();
    let (code, stdout, stderr) = chaos(&["check", &history_path]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(
        stdout.contains("reads compared with the replay: "),
        "{stdout}"
    );

    // ...and catches a lost acknowledged write.
    let mut lines: Vec<String> = history.lines().map(str::to_string).collect();
    let state_line = lines.pop().expect("a state line");
    let mut state: Value = serde_json::from_str(&state_line).expect("state json");
    let acked: Vec<u64> = lines
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["kind"] == "transfer_batch" && v["phase"] == "ok")
        .flat_map(|v| {
            let ids: Vec<u64> = v["transfers"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|t| t["id"].dec())
                .collect();
            let results: Vec<String> = v["results"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|r| r.as_str().unwrap_or("").to_string())
                .collect();
            ids.into_iter()
                .zip(results)
                .filter(|(_, r)| r == "ok")
                .map(|(id, _)| id)
                .collect::<Vec<_>>()
        })
        .collect();
    let victim = *acked.last().expect("some acknowledged transfer");
    let transfers = state["transfers"].as_array_mut().expect("transfers");
    let before = transfers.len();
    transfers.retain(|t| t["id"].dec() != Some(victim));
    assert_eq!(
        transfers.len(),
        before - 1,
        "transfer {victim} was in the state"
    );
    lines.push(serde_json::to_string(&state).expect("json"));
    let tampered = dir.join("tampered.jsonl");
    std::fs::write(&tampered, lines.join("\n") + "\n").expect("write");
    let (code, stdout, _) = chaos(&["check", &tampered.display().to_string()]);
    assert_eq!(code, 1, "{stdout}");
    assert!(stdout.contains("INVALID"), "{stdout}");
    assert!(stdout.contains("acknowledged_present_once"), "{stdout}");
    assert!(stdout.contains(&victim.to_string()), "{stdout}");
}

/// A VALID that checked little says little: the run must have done and compared enough. The
/// floors are well under what this seed gives (about 4 times), so that a slower machine still
/// meets them, and far above what a run with a dead client or a checker that skips its reads
/// would show.
fn assert_the_run_tested_enough(history_path: &Path) {
    let history = bulwark_chaos::read_history(history_path).expect("the history reads");
    let completed = |kind: Kind, phase: Phase| {
        history
            .ops
            .iter()
            .filter(|o| o.kind == kind && o.phase == phase)
            .count()
    };
    let operations = history
        .ops
        .iter()
        .filter(|o| o.kind != Kind::Nemesis && o.phase != Phase::Invoke)
        .count();
    let acknowledged: usize = history
        .ops
        .iter()
        .filter(|o| o.kind == Kind::TransferBatch && o.phase == Phase::Ok)
        .map(|o| o.results.iter().filter(|r| *r == "ok").count())
        .sum();
    let balance_reads = completed(Kind::ReadBalances, Phase::Ok);
    let feed = history.state.changes.as_deref().unwrap_or_default();
    let balancing = feed.iter().filter(|c| c.transfer.is_balancing()).count();
    let closings = feed
        .iter()
        .filter(|c| c.kind == ChangeKind::TwoPhasePending)
        .filter(|c| c.transfer.has_flag("closing_debit") || c.transfer.has_flag("closing_credit"))
        .count();
    let reopenings = feed
        .iter()
        .filter(|c| {
            matches!(
                c.kind,
                ChangeKind::TwoPhaseVoided | ChangeKind::TwoPhaseExpired
            )
        })
        .count();
    let history_reads = completed(Kind::ReadHistory, Phase::Ok);
    let reads = bulwark_chaos::check(&history).reads;
    let figures = format!(
        "{operations} operations, {acknowledged} transfers acknowledged, {balance_reads} balance reads and {history_reads} history reads ok; {}; feed: {} events, {balancing} balancing transfers, {closings} closing pending transfers, {reopenings} voids and expiries",
        reads.summary(),
        feed.len()
    );
    eprintln!("{figures}");
    assert!(operations >= OPERATIONS_FLOOR, "{figures}");
    assert!(acknowledged >= ACKNOWLEDGED_FLOOR, "{figures}");
    assert!(feed.len() >= acknowledged, "{figures}");
    assert!(
        balancing >= BALANCING_FLOOR && closings >= CLOSINGS_FLOOR && reopenings >= CLOSINGS_FLOOR,
        "{figures}"
    );
    assert!(
        balance_reads >= READS_FLOOR && history_reads >= READS_FLOOR / 2,
        "{figures}"
    );
    assert!(
        reads.balance_reads_checked >= CHECKED_READS_FLOOR,
        "{figures}"
    );
    assert!(
        reads.accounts_checked.len() >= CHECKED_ACCOUNTS_FLOOR,
        "{figures}"
    );
    assert!(
        reads.history_reads_checked >= CHECKED_READS_FLOOR / 2
            && reads.history_transfers_checked >= CHECKED_READS_FLOOR
            && reads.history_balances_checked >= CHECKED_READS_FLOOR / 4,
        "{figures}"
    );
}

#[test]
fn a_run_whose_check_fails_exits_1() {
    // A node killed behind the nemesis's back: the harness finds that it exited on its own, so
    // `faults_handled` fails, and so does the run.
    let dir = tempfile::tempdir().expect("temp dir");
    let out = dir.path().join("run");
    let child = Command::new(bin())
        .args([
            "chaos",
            "--nodes",
            "3",
            "--duration",
            "12",
            "--rate",
            "40",
            "--nemesis",
            "pause",
            "--hold-ms",
            "1000-2000",
            "--quiet-ms",
            "1000-2000",
            "--seed",
            "7",
            "--out",
        ])
        .arg(&out)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start bulwark chaos");
    let node = wait_for_node(child.id(), &out);
    std::thread::sleep(Duration::from_secs(3));
    // SAFETY: kill(2) on a process this test started (a child of its child).
    assert_eq!(unsafe { libc::kill(node, libc::SIGKILL) }, 0);
    let result = child.wait_with_output().expect("bulwark chaos finishes");
    let stdout = String::from_utf8_lossy(&result.stdout);
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert_eq!(result.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(stdout.starts_with("INVALID"), "{stdout}");
    assert!(stdout.contains("violated: faults_handled"), "{stdout}");
    assert!(stderr.contains("exited on its own"), "{stderr}");
}

/// The pid of a node that the chaos run `parent` started in `out`.
fn wait_for_node(parent: u32, out: &Path) -> i32 {
    let wanted = out.join("nodes").display().to_string();
    for _ in 0..300 {
        for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
            // The parent pid is the 2nd field after the parenthesised command name.
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .and_then(|p| p.parse::<u32>().ok());
            let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            if ppid == Some(parent) && String::from_utf8_lossy(&cmdline).contains(&wanted) {
                return pid;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("bulwark chaos started no node in {wanted} within 30 s");
}

#[test]
fn bad_command_lines_are_refused_with_a_message() {
    let (code, _, stderr) = chaos(&["--nodes", "4", "--duration", "1"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("--nodes must be 3 or 5"), "{stderr}");

    let (code, _, stderr) = chaos(&["--nemesis", "kill,flood"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("unknown nemesis \"flood\""), "{stderr}");

    let (code, _, stderr) = chaos(&["--hold-ms", "5000-100"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("MIN 5000 is above MAX 100"), "{stderr}");

    let (code, _, stderr) = chaos(&["check", "/nonexistent/history.jsonl"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("/nonexistent/history.jsonl"), "{stderr}");

    let dir = tempfile::tempdir().expect("temp dir");
    let bad = dir.path().join("bad.jsonl");
    std::fs::write(&bad, "{\"type\":\"op\",\"process\":1}\n").expect("write");
    let (code, _, stderr) = chaos(&["check", &bad.display().to_string()]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("line 1"), "{stderr}");
}
