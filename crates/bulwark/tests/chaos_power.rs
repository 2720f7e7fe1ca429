//! `bulwark chaos` with power faults, each node's data on a lazy filesystem (root and /dev/fuse):
//! a short run with `power`, `power-all`, `torn`, `composed`, `clock` and `slow-disk` must come out
//! VALID; and
//! the harness must be able to fail: a test build told to skip the Raft log's fdatasync, or every
//! directory fsync, must turn a short `power,power-all` run INVALID, with acknowledged transfers
//! missing from what the cluster holds afterwards.

mod common;

use common::{chaos, window_starts};
use serde_json::Value;

#[test]
fn a_short_run_with_power_cuts_torn_writes_composed_clock_and_slow_disk_faults_is_valid() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = dir.path().join("run");
    let out_arg = out.display().to_string();
    let (code, stdout, stderr) = chaos(&[
        "--nodes",
        "3",
        "--nemesis",
        "power,power-all,torn,composed,clock,slow-disk",
        "--duration",
        "90",
        "--rate",
        "150",
        "--hold-ms",
        "2000-4000",
        "--quiet-ms",
        "2000-3000",
        "--seed",
        "20261202",
        "--checkpoint-transfers",
        "2000",
        "--out",
        &out_arg,
    ]);
    assert_eq!(code, 0, "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stdout.starts_with("VALID"), "stdout: {stdout}");
    let history = std::fs::read_to_string(out.join("history.jsonl")).expect("history written");
    let windows = window_starts(&history);
    for fault in [
        "power cut of node",
        "power-all: every node lost power",
        "torn power cut of node",
        "clock: node",
        "slow-disk: every fsync of node",
    ] {
        assert!(
            windows.iter().any(|w| w.starts_with(fault)),
            "no `{fault}` window in {windows:?}"
        );
    }
    assert!(
        windows.iter().any(|w| w.contains("composed")),
        "no composed window in {windows:?}"
    );
    let acknowledged = history
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["kind"] == "transfer_batch" && v["phase"] == "ok")
        .count();
    assert!(acknowledged >= 500, "{acknowledged} acknowledged batches");
}

/// A run of a test build whose nodes skip `step` must fail, having lost acknowledged transfers.
fn a_run_skipping(step: &str) {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = dir.path().join("run");
    let out_arg = out.display().to_string();
    let (code, stdout, stderr) = chaos(&[
        "--nodes",
        "3",
        "--nemesis",
        "power,power-all",
        "--duration",
        "20",
        "--rate",
        "100",
        "--hold-ms",
        "1000-2000",
        "--quiet-ms",
        "2000-3000",
        "--seed",
        "7",
        "--unsafe-skip-fsync",
        step,
        "--out",
        &out_arg,
    ]);
    assert_eq!(code, 1, "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stdout.starts_with("INVALID"), "stdout: {stdout}");
    assert!(
        stdout.contains("acknowledged_present_once"),
        "no acknowledged transfer was lost: {stdout}"
    );
    assert!(
        stderr.contains("is missing from the final state"),
        "stderr: {stderr}"
    );
}

#[test]
fn a_build_that_skips_the_log_fdatasync_fails_a_power_run() {
    a_run_skipping("log-fdatasync");
}

#[test]
fn a_build_that_skips_directory_fsyncs_fails_a_power_run() {
    a_run_skipping("dir-fsync");
}

#[test]
fn the_unsafe_switch_takes_only_known_steps() {
    let (code, _, stderr) = chaos(&["--unsafe-skip-fsync", "fsync", "--duration", "1"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("unknown step \"fsync\""), "{stderr}");
}
