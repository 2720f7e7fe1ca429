//! `bulwark chaos` end to end: a short run of a real 3-node cluster with every fault kind at
//! least once must come out VALID, with a report and a history that `bulwark chaos check` also
//! passes; the same history with one acknowledged transfer removed from the final state must
//! fail the check, naming the property. Bad command lines get exit 2 and a message.

mod common;

use std::process::Command;

use common::bin;
use serde_json::Value;

fn chaos(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(bin())
        .arg("chaos")
        .args(args)
        .output()
        .expect("run bulwark chaos");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_short_run_with_every_fault_is_valid_and_its_history_checks() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = dir.path().join("run");
    let out_arg = out.display().to_string();
    let (code, stdout, stderr) = chaos(&[
        "--nodes",
        "3",
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
        "--out",
        &out_arg,
    ]);
    let logs = std::fs::read_dir(out.join("nodes"))
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
        .unwrap_or_default();
    assert_eq!(
        code, 0,
        "chaos run failed\nstdout:\n{stdout}\nstderr:\n{stderr}\nnode logs:\n{logs}"
    );
    assert!(stdout.starts_with("VALID"), "stdout: {stdout}");

    // Every fault kind ran at least once, as the history's nemesis windows show.
    let history = std::fs::read_to_string(out.join("history.jsonl")).expect("history written");
    let windows: Vec<String> = history
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["kind"] == "nemesis" && v["action"] == "start")
        .map(|v| v["description"].as_str().unwrap_or("").to_string())
        .collect();
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

    // The checker on its own agrees...
    let history_path = out.join("history.jsonl").display().to_string();
    let (code, stdout, stderr) = chaos(&["check", &history_path]);
    assert_eq!(code, 0, "{stdout}{stderr}");

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
                .filter_map(|t| t["id"].as_u64())
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
    transfers.retain(|t| t["id"].as_u64() != Some(victim));
    assert_eq!(
        transfers.len(),
        before - 1,
        "transfer {victim} was in the state"
    );
    lines.push(serde_json::to_string(&state).expect("json"));
    let tampered = dir.path().join("tampered.jsonl");
    std::fs::write(&tampered, lines.join("\n") + "\n").expect("write");
    let (code, stdout, _) = chaos(&["check", &tampered.display().to_string()]);
    assert_eq!(code, 1, "{stdout}");
    assert!(stdout.contains("INVALID"), "{stdout}");
    assert!(stdout.contains("acknowledged_present_once"), "{stdout}");
    assert!(stdout.contains(&victim.to_string()), "{stdout}");
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
