//! Recovery of the real binary from its data directory (a single node: a cluster of one voter,
//! whose log is the Raft log in `raft/`): a graceful restart keeps everything; a restart after
//! `kill -9` replays the log after the checkpoint; a torn tail of the last log segment is cut
//! with a warning and nothing before it is lost; corruption anywhere else stops `bulwark start`
//! with the file and the byte offset, without touching the file.
//!
//! Every start of a node makes it the leader of a new term, which appends one empty entry: the
//! indexes below count from what the node reports, not from fixed numbers.

mod common;

use common::DecField;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{start_expecting_exit, transfer_fields, wal_records, wal_segments, Http, Node};
use serde_json::{json, Value};

/// Accounts 1..=4 in ledger 1; 3 and 4 may not go negative.
const ACCOUNTS: [u64; 4] = [1, 2, 3, 4];

async fn create_accounts(http: &Http) {
    let results = http
        .write(
            "/v1/accounts",
            &json!([
                {"id": 1, "ledger": 1, "code": 1},
                {"id": 2, "ledger": 1, "code": 1},
                {"id": 3, "ledger": 1, "code": 2, "flags": ["debits_must_not_exceed_credits"]},
                {"id": 4, "ledger": 1, "code": 2, "flags": ["debits_must_not_exceed_credits", "history"]},
            ]),
        )
        .await;
    assert_eq!(results, ["ok"; 4]);
}

/// The `n`th transfer of a deterministic stream: every one succeeds in the ledger of
/// [`create_accounts`] (debits come only from accounts 1 and 2, which have no limit).
fn transfer(id: u64) -> Value {
    let debit = 1 + id % 2;
    let credit = 2 + id % 3;
    let credit = if credit == debit { 4 } else { credit };
    json!({
        "id": id, "debit_account_id": debit, "credit_account_id": credit,
        "amount": 1 + id % 97, "ledger": 1, "code": 7, "user_data_64": id * 3,
    })
}

/// Sends transfers `ids` in batches of `batch` (one log record each); all must be `ok`.
async fn write_transfers(http: &Http, ids: std::ops::Range<u64>, batch: usize) -> Vec<Value> {
    let all: Vec<Value> = ids.map(transfer).collect();
    for chunk in all.chunks(batch) {
        let results = http
            .write("/v1/transfers", &Value::Array(chunk.to_vec()))
            .await;
        assert!(results.iter().all(|r| r == "ok"), "{results:?}");
    }
    all
}

/// Every sent transfer reads back with its fields; returns them as read (with timestamps).
async fn assert_present(http: &Http, sent: &[Value]) -> Vec<Value> {
    let mut read = Vec::new();
    for t in sent {
        let id = t["id"].dec().unwrap();
        let got = http
            .transfer(id)
            .await
            .unwrap_or_else(|| panic!("acknowledged transfer {id} is missing"));
        assert_eq!(transfer_fields(&got), transfer_fields(t), "transfer {id}");
        read.push(got);
    }
    read
}

/// The accounts' balances are exactly the sums of `present` (posted, single-phase transfers).
async fn assert_balances(http: &Http, present: &[Value]) {
    let mut debits: BTreeMap<u64, u64> = BTreeMap::new();
    let mut credits: BTreeMap<u64, u64> = BTreeMap::new();
    for t in present {
        let amount = t["amount"].dec().unwrap();
        *debits
            .entry(t["debit_account_id"].dec().unwrap())
            .or_default() += amount;
        *credits
            .entry(t["credit_account_id"].dec().unwrap())
            .or_default() += amount;
    }
    for id in ACCOUNTS {
        let a = http.account(id).await.expect("account");
        assert_eq!(
            a["debits_posted"].dec(),
            Some(debits.get(&id).copied().unwrap_or(0)),
            "debits of {id}"
        );
        assert_eq!(
            a["credits_posted"].dec(),
            Some(credits.get(&id).copied().unwrap_or(0)),
            "credits of {id}"
        );
        assert_eq!(a["debits_pending"], "0");
        assert_eq!(a["credits_pending"], "0");
    }
}

/// Everything a client can read about the accounts, for before/after comparisons.
async fn accounts_snapshot(http: &Http) -> Vec<Value> {
    let mut out = Vec::new();
    for id in ACCOUNTS {
        out.push(http.account(id).await.expect("account"));
    }
    out
}

/// Restarts `node` and waits until it has recovered (the "recovered" line: everything its log
/// held is applied again) and leads with its new term's entry applied, so that what the test
/// reads next is settled.
async fn restart(node: &mut Node) {
    node.restart().await;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let status = node.http.status().await;
        let settled = status["role"] == "leader"
            && status["applied_index"] == status["log"]["last_index"]
            && node.last_log().contains("recovered");
        if settled {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the node did not settle after a restart: {status}\n{}",
            node.last_log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The `key=value` number of the last log line containing `message`.
fn log_field(log: &str, message: &str, key: &str) -> u64 {
    let line = log
        .lines()
        .rev()
        .find(|l| l.contains(message))
        .unwrap_or_else(|| panic!("no log line `{message}` in:\n{log}"));
    let start = line
        .find(&format!("{key}="))
        .unwrap_or_else(|| panic!("no `{key}=` in {line}"))
        + key.len()
        + 1;
    let digits: String = line[start..]
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect();
    digits
        .parse()
        .unwrap_or_else(|_| panic!("`{key}` is not a number in {line}"))
}

fn last_segment(node: &Node) -> PathBuf {
    wal_segments(&node.wal_dir()).pop().expect("a log segment")
}

fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).expect("stat").len()
}

/// The contents of every file in the log directory, by name.
fn wal_files(node: &Node) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(node.wal_dir())
        .unwrap()
        .map(|e| {
            let path = e.unwrap().path();
            (
                path.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read(&path).unwrap(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_after_sigterm_keeps_everything() {
    let mut node = Node::start(&["--checkpoint-transfers", "100"]).await;
    create_accounts(&node.http).await;
    let sent = write_transfers(&node.http, 1..251, 10).await;
    // A pending transfer that stays pending across the restart.
    let pending = json!({"id": 9000, "debit_account_id": 1, "credit_account_id": 3, "amount": 77,
                         "ledger": 1, "code": 7, "flags": ["pending"]});
    assert_eq!(
        node.http
            .write("/v1/transfers", &json!([pending.clone()]))
            .await,
        ["ok"]
    );
    let read_before = assert_present(&node.http, &sent).await;
    let accounts_before = accounts_snapshot(&node.http).await;
    let applied = node.http.applied_index().await;

    let status = node.sigterm();
    assert!(status.success(), "SIGTERM must exit 0, got {status}");
    let log = node.last_log();
    assert!(log.contains("stopped cleanly"), "{log}");

    restart(&mut node).await;
    let status = node.http.status().await;
    assert_eq!(
        status["applied_index"],
        applied + 1,
        "and this term's empty entry"
    );
    assert_eq!(
        status["checkpoint_index"], applied,
        "a graceful shutdown checkpoints everything"
    );
    assert_eq!(
        status["log"]["first_index"].as_u64(),
        Some(applied + 1),
        "the log behind the final checkpoint was compacted: {status}"
    );
    assert_eq!(
        log_field(&node.last_log(), "recovered", "replayed"),
        0,
        "nothing to replay after a final checkpoint"
    );
    let read_after = assert_present(&node.http, &sent).await;
    assert_eq!(read_after, read_before, "timestamps and fields survive");
    assert_eq!(accounts_snapshot(&node.http).await, accounts_before);
    let p = node
        .http
        .transfer(9000)
        .await
        .expect("the pending transfer");
    assert_eq!(p["pending_status"], "pending");
    assert_eq!(node.http.account(3).await.unwrap()["credits_pending"], "77");
    assert_eq!(node.http.account(1).await.unwrap()["debits_pending"], "77");

    // It keeps working: void the pending transfer, write more, and stop again.
    assert_eq!(
        node.http
            .write(
                "/v1/transfers",
                &json!([{"id": 9001, "pending_id": 9000, "flags": ["void_pending_transfer"]}])
            )
            .await,
        ["ok"]
    );
    let more = write_transfers(&node.http, 251..300, 7).await;
    assert!(node.sigterm().success());
    restart(&mut node).await;
    assert_present(&node.http, &sent).await;
    assert_present(&node.http, &more).await;
    assert_eq!(
        node.http.transfer(9000).await.unwrap()["pending_status"],
        "voided"
    );
    let all: Vec<Value> = sent.iter().chain(&more).cloned().collect();
    assert_balances(&node.http, &all).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_after_kill9_replays_the_log_after_the_checkpoint() {
    // Phase 1: checkpoints while running, then a final one at a graceful stop.
    let mut node = Node::start(&["--checkpoint-transfers", "100"]).await;
    create_accounts(&node.http).await;
    let first = write_transfers(&node.http, 1..151, 10).await;
    let stopped_at = node.http.applied_index().await;
    assert!(node.sigterm().success());
    node.set_args(&[]);
    restart(&mut node).await;
    let checkpoint = node.http.status().await["checkpoint_index"]
        .as_u64()
        .unwrap();
    assert_eq!(
        checkpoint, stopped_at,
        "a graceful stop checkpoints everything"
    );
    // The new term's empty entry.
    let base = node.http.applied_index().await;
    assert_eq!(base, checkpoint + 1);

    // Phase 2: three acknowledged batches after the checkpoint, then kill -9.
    let second = write_transfers(&node.http, 151..181, 10).await;
    let applied = node.http.applied_index().await;
    assert_eq!(applied, base + 3);
    let accounts_before = accounts_snapshot(&node.http).await;
    let read_before = assert_present(&node.http, &second).await;
    node.kill9();
    let records: Vec<u64> = wal_records(&last_segment(&node))
        .iter()
        .map(|r| r.index)
        .collect();
    assert_eq!(
        records.last().copied(),
        Some(applied),
        "the acknowledged batches are in the log"
    );

    restart(&mut node).await;
    let log = node.last_log();
    assert_eq!(
        log_field(&log, "recovered", "checkpoint"),
        checkpoint,
        "{log}"
    );
    // The empty entry of the previous term and the three batches.
    assert_eq!(log_field(&log, "recovered", "replayed"), 4, "{log}");
    assert_eq!(log_field(&log, "recovered", "applied_index"), applied);
    let status = node.http.status().await;
    assert_eq!(
        status["applied_index"],
        applied + 1,
        "and this term's empty entry"
    );
    assert_eq!(status["checkpoint_index"], checkpoint);
    assert_eq!(assert_present(&node.http, &second).await, read_before);
    assert_present(&node.http, &first).await;
    assert_eq!(accounts_snapshot(&node.http).await, accounts_before);
    let all: Vec<Value> = first.iter().chain(&second).cloned().collect();
    assert_balances(&node.http, &all).await;

    // Replay is idempotent: another kill -9 right away replays the same records again (and the
    // empty entry of the term before).
    node.kill9();
    restart(&mut node).await;
    assert_eq!(log_field(&node.last_log(), "recovered", "replayed"), 5);
    assert_eq!(node.http.applied_index().await, applied + 2);
    assert_balances(&node.http, &all).await;
}

/// Starts a node, writes the accounts and `batches` batches of 10 transfers (one log record
/// each), and kills it with -9. Returns the node and the transfers, batch by batch.
async fn killed_node_with_batches(args: &[&str], batches: u64) -> (Node, Vec<Vec<Value>>, u64) {
    let mut node = Node::start(args).await;
    create_accounts(&node.http).await;
    let base = node.http.applied_index().await;
    let mut sent = Vec::new();
    for b in 0..batches {
        sent.push(write_transfers(&node.http, 1 + b * 10..11 + b * 10, 10).await);
    }
    let applied = node.http.applied_index().await;
    assert_eq!(applied, base + batches);
    node.kill9();
    (node, sent, applied)
}

/// A well-formed log record for `index` carrying `payload`, as the WAL writes one.
fn record_bytes(index: u64, payload: &[u8]) -> Vec<u8> {
    let len = (payload.len() as u32).to_le_bytes();
    let mut covered = len.to_vec();
    covered.extend(index.to_le_bytes());
    covered.extend(payload);
    let mut bytes = len.to_vec();
    bytes.extend(crc32c::crc32c(&covered).to_le_bytes());
    bytes.extend(index.to_le_bytes());
    bytes.extend(payload);
    bytes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn torn_unacknowledged_write_at_the_end_is_cut_and_nothing_is_lost() {
    let variants: [(&str, Vec<u8>); 2] = [
        (
            "a partial record header",
            vec![0x40, 0, 0, 0, 0x12, 0x34, 0x56],
        ),
        ("a record header and part of its payload", {
            let mut bytes = Vec::new();
            bytes.extend(200u32.to_le_bytes());
            bytes.extend(0xdead_beefu32.to_le_bytes());
            bytes.extend(u64::MAX.to_le_bytes()); // an index no record has yet
            bytes.extend([0xab; 50]);
            bytes
        }),
    ];
    for (what, garbage) in variants {
        let (mut node, sent, applied) = killed_node_with_batches(&[], 5).await;
        let all: Vec<Value> = sent.concat();
        let segment = last_segment(&node);
        let good_len = wal_records(&segment).last().unwrap().end();
        // The write lands where the last one ended, in the zeros the log keeps ahead of it.
        let mut bytes = std::fs::read(&segment).unwrap();
        let at = good_len as usize;
        bytes.resize(bytes.len().max(at + garbage.len()), 0);
        bytes[at..at + garbage.len()].copy_from_slice(&garbage);
        std::fs::write(&segment, &bytes).unwrap();

        restart(&mut node).await;
        let log = node.last_log();
        assert!(
            log.contains("WARN") && log.contains("torn tail"),
            "{what}: the cut is logged as a warning:\n{log}"
        );
        assert!(
            log.contains(&segment.display().to_string()),
            "{what}: {log}"
        );
        // (The file grew again since: the new term's entry.)
        assert_eq!(
            log_field(&log, "cut a torn tail", "offset"),
            good_len,
            "{what}: cut back to the last good record"
        );
        assert_eq!(node.http.applied_index().await, applied + 1, "{what}");
        assert_present(&node.http, &all).await;
        assert_balances(&node.http, &all).await;

        // The log goes on after the cut, and survives another crash.
        let more = write_transfers(&node.http, 1000..1020, 10).await;
        node.kill9();
        restart(&mut node).await;
        assert!(
            !node.last_log().contains("torn tail"),
            "{what}: {}",
            node.last_log()
        );
        // This term's entry, the two batches, the next term's entry.
        assert_eq!(node.http.applied_index().await, applied + 4, "{what}");
        let all: Vec<Value> = all.iter().chain(&more).cloned().collect();
        assert_present(&node.http, &all).await;
        assert_balances(&node.http, &all).await;
    }
}

/// Zeros after the last record (the log's zero-fill ahead, or an append of which only the new
/// size reached the disk) are no torn tail: the node starts without cutting or reporting them,
/// with every write, and goes on writing over them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zeros_after_the_last_record_are_kept_and_nothing_is_lost() {
    let (mut node, sent, applied) = killed_node_with_batches(&[], 5).await;
    let segment = last_segment(&node);
    let records_end = wal_records(&segment).last().unwrap().end();
    let zero_filled = file_len(&segment);
    assert!(zero_filled > records_end, "the log zero-fills ahead");
    let mut bytes = std::fs::read(&segment).unwrap();
    bytes.extend([0u8; 4096]);
    std::fs::write(&segment, &bytes).unwrap();

    restart(&mut node).await;
    let log = node.last_log();
    assert!(!log.contains("torn tail"), "{log}");
    assert_eq!(node.http.applied_index().await, applied + 1);
    let more = write_transfers(&node.http, 1000..1020, 10).await;
    assert_eq!(
        file_len(&segment),
        zero_filled + 4096,
        "written over, not cut"
    );
    node.kill9();
    restart(&mut node).await;
    let all: Vec<Value> = sent.concat().into_iter().chain(more).collect();
    assert_present(&node.http, &all).await;
    assert_balances(&node.http, &all).await;
}

/// Where to cut a segment, given its last record.
type Cut = fn(&common::WalRecord) -> u64;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn torn_last_record_is_cut_and_every_earlier_record_is_kept() {
    // A last record that was being written when the node died (so never acknowledged: an
    // acknowledged entry is fsynced, and an fsynced record cannot tear), cut 7 bytes short of
    // its end or inside its header.
    let cuts: [(&str, Cut); 2] = [
        ("the last 7 bytes dropped", |r| r.end() - 7),
        ("cut inside the record header", |r| r.offset + 10),
    ];
    for (what, cut) in cuts {
        let (mut node, sent, applied) = killed_node_with_batches(&[], 5).await;
        let segment = last_segment(&node);
        let records = wal_records(&segment);
        let last = records.last().unwrap().clone();
        assert_eq!(last.index, applied);
        let mut bytes = std::fs::read(&segment).unwrap();
        // An appending write: the zeros ahead of the last record go, the torn record ends the file.
        bytes.truncate(last.end() as usize);
        let payload = bytes[last.offset as usize + 16..last.end() as usize].to_vec();
        bytes.extend(record_bytes(applied + 1, &payload));
        std::fs::write(&segment, &bytes).unwrap();
        let torn = wal_records(&segment).last().unwrap().clone();
        assert_eq!(torn.index, applied + 1);
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(&segment)
            .unwrap();
        file.set_len(cut(&torn)).unwrap();
        drop(file);

        restart(&mut node).await;
        let log = node.last_log();
        assert!(
            log.contains("WARN") && log.contains("torn tail"),
            "{what}:\n{log}"
        );
        assert_eq!(
            log_field(&log, "cut a torn tail", "offset"),
            torn.offset,
            "{what}: {log}"
        );
        let all = sent.concat();
        assert_present(&node.http, &all).await;
        assert_balances(&node.http, &all).await;
        // The cut record left no trace: the next index went to this term's empty entry, and the
        // next write takes the one after it.
        assert_eq!(node.http.applied_index().await, applied + 1, "{what}");
        let more: Vec<Value> = (5000..5010).map(transfer).collect();
        let r = node
            .http
            .post("/v1/transfers", &Value::Array(more.clone()))
            .await;
        assert_eq!(r.results(), ["ok"; 10], "{what}");
        let next = (applied + 2).to_string();
        assert_eq!(
            r.header("bulwark-commit-index"),
            Some(next.as_str()),
            "{what}"
        );
        node.kill9();
        restart(&mut node).await;
        let all: Vec<Value> = all.iter().chain(&more).cloned().collect();
        assert_present(&node.http, &all).await;
        assert_balances(&node.http, &all).await;
    }
}

/// Runs `bulwark start` on a damaged directory: it must fail with exit code 5, name `file` and
/// `offset` on stderr, leave the log directory byte for byte as it was, and never serve.
fn assert_start_refused(node: &Node, what: &str, file: &Path, offset: u64) {
    let before = wal_files(node);
    let (status, log) = start_expecting_exit(&node.data_dir, &[], Duration::from_secs(60));
    let status = status.unwrap_or_else(|| panic!("{what}: the node started on corruption:\n{log}"));
    assert_eq!(
        status.code(),
        Some(5),
        "{what}: exit status {status}:\n{log}"
    );
    assert!(
        log.contains(&file.display().to_string()),
        "{what}: stderr must name {}:\n{log}",
        file.display()
    );
    assert!(
        log.contains(&format!("offset {offset}")),
        "{what}: stderr must name offset {offset}:\n{log}"
    );
    assert!(!log.contains("serving"), "{what}: {log}");
    assert!(
        wal_files(node) == before,
        "{what}: a refused start changed the log directory"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corruption_before_the_last_record_stops_start_and_changes_nothing() {
    // A flipped byte in the payload of a record in the middle.
    let (mut node, sent, _) = killed_node_with_batches(&[], 5).await;
    let segment = last_segment(&node);
    let records = wal_records(&segment);
    assert!(records.len() >= 6, "{records:?}");
    let victim = records[2].clone();
    let original = std::fs::read(&segment).unwrap();
    let mut bytes = original.clone();
    let at = (victim.offset + 16 + victim.len / 2) as usize;
    bytes[at] ^= 0x5a;
    std::fs::write(&segment, &bytes).unwrap();
    assert_start_refused(&node, "a flipped payload byte", &segment, victim.offset);
    // Twice: the refusal is stable.
    assert_start_refused(
        &node,
        "a flipped payload byte, again",
        &segment,
        victim.offset,
    );

    // Repaired by hand, the node starts with everything.
    std::fs::write(&segment, &original).unwrap();
    restart(&mut node).await;
    assert!(!node.last_log().contains("torn tail"));
    let all = sent.concat();
    assert_present(&node.http, &all).await;
    assert_balances(&node.http, &all).await;
    node.kill9();

    // A damaged length field of the record before the last, which makes it run past the end
    // of the file like a torn write would, while a valid record follows it.
    let victim = records[records.len() - 2].clone();
    let mut bytes = original.clone();
    let len = (victim.len as u32 + 1000).to_le_bytes();
    bytes[victim.offset as usize..victim.offset as usize + 4].copy_from_slice(&len);
    std::fs::write(&segment, &bytes).unwrap();
    assert_start_refused(&node, "a damaged length field", &segment, victim.offset);

    // A flipped bit in the checksum of the first record.
    let victim = records[0].clone();
    let mut bytes = original.clone();
    bytes[victim.offset as usize + 5] ^= 0x01;
    std::fs::write(&segment, &bytes).unwrap();
    assert_start_refused(&node, "a damaged checksum", &segment, victim.offset);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corruption_in_a_segment_that_is_not_the_last_stops_start() {
    let (node, _sent, _) = killed_node_with_batches(&["--segment-bytes", "4096"], 30).await;
    let segments = wal_segments(&node.wal_dir());
    assert!(segments.len() >= 3, "{segments:?}");
    let segment = segments[1].clone();
    let original = std::fs::read(&segment).unwrap();
    let records = wal_records(&segment);
    assert!(!records.is_empty());

    // Its very last record is damaged: in a segment that is not the last, that is no torn tail.
    let victim = records.last().unwrap().clone();
    assert!(original[victim.end() as usize..].iter().all(|&b| b == 0));
    let mut bytes = original.clone();
    bytes[(victim.offset + 16 + victim.len / 2) as usize] ^= 0xff;
    std::fs::write(&segment, &bytes).unwrap();
    assert_start_refused(
        &node,
        "a damaged last record of an earlier segment",
        &segment,
        victim.offset,
    );

    // Its end cut off, as if it were torn.
    std::fs::write(&segment, &original[..victim.end() as usize - 7]).unwrap();
    assert_start_refused(
        &node,
        "an earlier segment cut short",
        &segment,
        victim.offset,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_exits_0_and_keeps_every_acknowledged_write() {
    let mut node = Node::start(&["--checkpoint-transfers", "500"]).await;
    create_accounts(&node.http).await;
    let mut clients = Vec::new();
    for c in 0..3u64 {
        let http = node.http.clone();
        clients.push(tokio::spawn(async move {
            let mut acknowledged = Vec::new();
            let mut unknown = Vec::new();
            for b in 0u64.. {
                let batch: Vec<Value> = (0..5)
                    .map(|i| transfer(1 + (c << 32) + b * 5 + i))
                    .collect();
                let body = serde_json::to_vec(&batch).unwrap();
                match http.try_post("/v1/transfers", body).await {
                    Ok(r) if r.status == 200 => {
                        assert_eq!(r.results(), ["ok"; 5]);
                        acknowledged.extend(batch);
                    }
                    // Refused while stopping (503), or the connection closed: either way, this
                    // client stops here.
                    Ok(r) if r.status == 503 => {
                        unknown.extend(batch);
                        break;
                    }
                    Ok(r) => panic!("{} {}", r.status, r.text),
                    Err(_) => {
                        unknown.extend(batch);
                        break;
                    }
                }
            }
            (acknowledged, unknown)
        }));
    }
    // Let the load run until some of it is acknowledged, then ask the node to stop.
    for waited in 0.. {
        if node.http.applied_index().await >= 50 {
            break;
        }
        assert!(waited < 6000, "the load made no progress");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let status = node.sigterm();
    let log = node.last_log();
    assert!(status.success(), "SIGTERM under load: {status}\n{log}");
    assert!(log.contains("stopped cleanly"), "{log}");
    let mut acknowledged = Vec::new();
    let mut unknown = Vec::new();
    for c in clients {
        let (a, u) = c.await.expect("client");
        acknowledged.extend(a);
        unknown.extend(u);
    }
    assert!(!acknowledged.is_empty());

    restart(&mut node).await;
    let status = node.http.status().await;
    assert_eq!(
        status["checkpoint_index"].as_u64().map(|c| c + 1),
        status["applied_index"].as_u64(),
        "a graceful stop checkpoints everything (then this term's empty entry): {status}"
    );
    assert_eq!(log_field(&node.last_log(), "recovered", "replayed"), 0);
    assert_present(&node.http, &acknowledged).await;
    let mut present = acknowledged.clone();
    for t in unknown {
        if node.http.transfer(t["id"].dec().unwrap()).await.is_some() {
            present.push(t);
        }
    }
    assert_balances(&node.http, &present).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_segment_or_checkpoint_stops_start() {
    // A segment missing in the middle of the log: an index gap, named by the next file.
    let (node, _sent, _) = killed_node_with_batches(&["--segment-bytes", "2048"], 20).await;
    let segments = wal_segments(&node.wal_dir());
    assert!(segments.len() >= 4, "{segments:?}");
    std::fs::remove_file(&segments[1]).unwrap();
    assert_start_refused(&node, "a missing segment", &segments[2], 0);

    // A leftover temporary segment (a crash while creating one) is removed at start.
    let (mut node, sent, _) = killed_node_with_batches(&[], 3).await;
    let tmp = node.wal_dir().join("00000000000000000009.wal.tmp");
    std::fs::write(&tmp, b"BWAL half a segment").unwrap();
    restart(&mut node).await;
    assert!(!tmp.exists(), "the temporary segment is removed");
    assert_present(&node.http, &sent.concat()).await;

    // After a graceful stop the log behind the checkpoint is gone; without the checkpoint the
    // node must refuse to start rather than come up with an empty ledger.
    assert!(node.sigterm().success());
    std::fs::remove_file(node.data_dir.join("state.redb")).unwrap();
    let (status, log) = start_expecting_exit(&node.data_dir, &[], Duration::from_secs(60));
    let status =
        status.unwrap_or_else(|| panic!("the node started without its checkpoint:\n{log}"));
    assert_eq!(status.code(), Some(5), "{log}");
    assert!(log.contains("missing"), "{log}");
    assert!(!log.contains("serving"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_node_on_the_same_data_dir_refuses_to_start() {
    let mut node = Node::start(&[]).await;
    create_accounts(&node.http).await;
    let sent = write_transfers(&node.http, 1..21, 10).await;
    let before = wal_files(&node);
    let (status, log) = start_expecting_exit(&node.data_dir, &[], Duration::from_secs(60));
    let status =
        status.unwrap_or_else(|| panic!("a second node started on a directory in use:\n{log}"));
    assert_eq!(status.code(), Some(5), "{log}");
    assert!(!log.contains("serving"), "{log}");
    assert!(
        wal_files(&node) == before,
        "the second node touched the log"
    );
    // The first one goes on undisturbed.
    let more = write_transfers(&node.http, 21..31, 10).await;
    node.kill9();
    restart(&mut node).await;
    let all: Vec<Value> = sent.iter().chain(&more).cloned().collect();
    assert_present(&node.http, &all).await;
    assert_balances(&node.http, &all).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_pending_transfer_stays_expired_across_replay() {
    let mut node = Node::start(&[]).await;
    create_accounts(&node.http).await;
    let funding = write_transfers(&node.http, 1..2, 1).await;
    let pendings = json!([
        {"id": 500, "debit_account_id": 1, "credit_account_id": 3, "amount": 40, "ledger": 1,
         "code": 7, "flags": ["pending"], "timeout": 1},
        {"id": 501, "debit_account_id": 2, "credit_account_id": 4, "amount": 60, "ledger": 1,
         "code": 7, "flags": ["pending"], "timeout": 3600},
    ]);
    assert_eq!(
        node.http.write("/v1/transfers", &pendings).await,
        ["ok", "ok"]
    );
    // The node is down while the first one's timeout passes.
    node.kill9();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    restart(&mut node).await;
    // Expiry happens as the ledger applies the next batch, by that batch's timestamp.
    let next = write_transfers(&node.http, 2..3, 1).await;
    let post_expired = json!([{"id": 502, "pending_id": 500, "flags": ["post_pending_transfer"]}]);
    assert_eq!(
        node.http.write("/v1/transfers", &post_expired).await,
        ["pending_transfer_expired"]
    );
    let expected = |http: Http| async move {
        assert_eq!(
            http.transfer(500).await.unwrap()["pending_status"],
            "expired"
        );
        assert_eq!(
            http.transfer(501).await.unwrap()["pending_status"],
            "pending"
        );
        assert!(http.transfer(502).await.is_none());
        let a3 = http.account(3).await.unwrap();
        assert_eq!(a3["credits_pending"], "0", "the expired amount is released");
        let a1 = http.account(1).await.unwrap();
        assert_eq!(a1["debits_pending"], "0");
        assert_eq!(http.account(4).await.unwrap()["credits_pending"], "60");
        assert_eq!(http.account(2).await.unwrap()["debits_pending"], "60");
    };
    expected(node.http.clone()).await;
    let accounts = accounts_snapshot(&node.http).await;

    // Replayed from the log, the expiry happens again, exactly the same.
    node.kill9();
    restart(&mut node).await;
    assert!(log_field(&node.last_log(), "recovered", "replayed") >= 4);
    expected(node.http.clone()).await;
    assert_eq!(accounts_snapshot(&node.http).await, accounts);
    // And from a checkpoint.
    assert!(node.sigterm().success());
    restart(&mut node).await;
    expected(node.http.clone()).await;
    assert_eq!(accounts_snapshot(&node.http).await, accounts);
    assert_present(&node.http, &funding).await;
    assert_present(&node.http, &next).await;
}
