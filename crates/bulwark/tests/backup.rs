//! Backups, the continuous archive and point-in-time restore, end to end with real processes: a
//! node archiving under a concurrent workload (transfers, pending transfers that post, void or
//! expire), backups taken while it writes, the ledger recorded at many moments; then a restore
//! to each moment's index and to its ledger time gives a new cluster with exactly that moment's
//! balances and transfers.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{cli, Node};
use serde_json::{json, Value};

const ACCOUNTS: u64 = 8;

/// The ledger at one moment: its index and time, every balance, every transfer id.
#[derive(Debug)]
struct Moment {
    index: u64,
    time: u64,
    balances: Vec<[String; 4]>,
    transfers: BTreeSet<u64>,
}

fn balances_of(account: &Value) -> [String; 4] {
    [
        "debits_pending",
        "debits_posted",
        "credits_pending",
        "credits_posted",
    ]
    .map(|f| {
        account[f]
            .as_str()
            .unwrap_or_else(|| panic!("{f} in {account}"))
            .to_string()
    })
}

/// Double entry: across the ledger, debits equal credits, pending and posted alike.
fn assert_balanced(balances: &[[String; 4]], what: &str) {
    let sum = |i: usize| -> u128 { balances.iter().map(|b| b[i].parse::<u128>().unwrap()).sum() };
    assert_eq!(sum(0), sum(2), "{what}: pending debits and credits");
    assert_eq!(sum(1), sum(3), "{what}: posted debits and credits");
}

async fn balances(node: &Node) -> Vec<[String; 4]> {
    let mut out = Vec::new();
    for id in 1..=ACCOUNTS {
        let account = node.http.account(id).await.expect("the account exists");
        out.push(balances_of(&account));
    }
    out
}

/// Every transfer id, page by page.
async fn transfer_ids(node: &Node) -> BTreeSet<u64> {
    let mut ids = BTreeSet::new();
    let mut body = json!({"limit": 8190});
    loop {
        let r = node.http.post("/v1/transfers/query", &body).await;
        assert_eq!(r.status, 200, "{}", r.text);
        for t in r.json["transfers"].as_array().expect("transfers") {
            ids.insert(
                t["id"]
                    .as_str()
                    .expect("id")
                    .parse::<u64>()
                    .expect("a u64 id"),
            );
        }
        match r.json.get("next_timestamp_min") {
            Some(Value::String(next)) => body["timestamp_min"] = json!(next),
            _ => return ids,
        }
    }
}

/// Index, time, balances and transfers read while nothing is written (an expiry may still
/// commit: read again until the index did not move across the reads).
async fn record(node: &Node) -> Moment {
    loop {
        let before = node.http.status().await;
        let balances = balances(node).await;
        let transfers = transfer_ids(node).await;
        let after = node.http.status().await;
        if before["applied_index"] == after["applied_index"] {
            return Moment {
                index: after["applied_index"].as_u64().expect("index"),
                time: after["last_timestamp"].as_u64().expect("time"),
                balances,
                transfers,
            };
        }
    }
}

/// One round of writes from four concurrent clients: plain transfers, pending ones with a short
/// timeout (some expire later), posts and voids of the previous round's pending transfers.
async fn write_round(node: &Node, round: u64) {
    let mut clients = Vec::new();
    for client in 0..4u64 {
        let http = node.http.clone();
        clients.push(tokio::spawn(async move {
            for batch in 0..6u64 {
                let base = 1_000_000 * (round + 1) + 10_000 * client + 100 * batch;
                let mut events = Vec::new();
                for i in 0..5u64 {
                    let n = base + i;
                    let (debit, credit) = (1 + n % ACCOUNTS, 1 + (n / 3 + 1) % ACCOUNTS);
                    let credit = if credit == debit {
                        1 + debit % ACCOUNTS
                    } else {
                        credit
                    };
                    let mut t = json!({"id": n, "debit_account_id": debit,
                        "credit_account_id": credit, "amount": 1 + n % 97, "ledger": 1, "code": 1});
                    if i == 4 {
                        // Short timeouts only early in odd rounds, which wait for them to
                        // expire before their moment: a restored node, whose clock is past every
                        // deadline, must find nothing left to expire.
                        let expires = round % 2 == 1 && batch == 0;
                        t["flags"] = json!(["pending"]);
                        t["timeout"] = json!(if expires { 1 } else { 0 });
                    }
                    events.push(t);
                }
                if round > 0 && round < 100 && batch < 2 {
                    // The previous round's pending transfer of the same client: post or void.
                    let pending = 1_000_000 * round + 10_000 * client + 100 * (batch * 2 + 1) + 4;
                    let flag = if batch == 0 {
                        "post_pending_transfer"
                    } else {
                        "void_pending_transfer"
                    };
                    events.push(json!({"id": base + 50, "pending_id": pending, "flags": [flag]}));
                }
                let r = http.post("/v1/transfers", &json!(events)).await;
                assert_eq!(r.status, 200, "{}", r.text);
                assert!(r.results().iter().all(|w| w == "ok"), "{}", r.text);
            }
        }));
    }
    for c in clients {
        c.await.expect("a client");
    }
}

/// Accounts 1..=ACCOUNTS in ledger 1.
async fn create_accounts(http: &common::Http) {
    let accounts: Vec<Value> = (1..=ACCOUNTS)
        .map(|id| json!({"id": id, "ledger": 1, "code": 1}))
        .collect();
    let results = http.write("/v1/accounts", &json!(accounts)).await;
    assert!(results.iter().all(|w| w == "ok"), "{results:?}");
}

/// The audit trail's actions, oldest first.
async fn actions(node: &Node) -> Vec<String> {
    let r = node.http.get("/v1/audit?limit=1000").await;
    assert_eq!(r.status, 200, "{}", r.text);
    r.json["records"]
        .as_array()
        .expect("records")
        .iter()
        .map(|a| a["action"].as_str().expect("action").to_string())
        .collect()
}

/// Waits until the one-second pending transfers of `round` (odd rounds, each client's first
/// batch) have expired: a restored node, whose clock is past their deadline, would expire them
/// at once and differ from the moment recorded.
async fn expired(node: &Node, round: u64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    for client in 0..4u64 {
        let id = 1_000_000 * (round + 1) + 10_000 * client + 4;
        loop {
            let t = node.http.transfer(id).await.expect("the pending transfer");
            if t["pending_status"] == "expired" {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "transfer {id} did not expire: {t}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

async fn backup(node: &Node, to: &Path) {
    let (code, out, err) = cli(&[
        "backup",
        "create",
        "--to",
        to.to_str().unwrap(),
        "--addr",
        &node.base_url(),
    ])
    .await;
    assert_eq!(code, 0, "backup create: {out}{err}");
}

/// Waits until the archive holds every committed entry.
async fn archive_caught_up(node: &Node) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let s = node.http.status().await;
        let archived = s["archive"]["archived_index"].as_u64().unwrap_or(0);
        if archived >= s["commit_index"].as_u64().expect("commit") {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the archive did not catch up: {s}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `bulwark restore --to-index` that must be refused: answers its error output.
async fn refused_restore(backups: &Path, archive: &Path, to_index: &str, dir: &Path) -> String {
    let (code, _, err) = cli(&[
        "restore",
        "--from",
        backups.to_str().unwrap(),
        "--archive",
        archive.to_str().unwrap(),
        "--to-index",
        to_index,
        "--data-dir",
        dir.to_str().unwrap(),
    ])
    .await;
    assert_ne!(code, 0, "restore to index {to_index} went through");
    err
}

/// `bulwark restore` into a new directory, then the restored node's ledger.
async fn restore_and_read(
    backups: &Path,
    archive: &Path,
    to: &[&str],
    dir: &Path,
) -> (Moment, Value) {
    let mut args = vec![
        "restore",
        "--from",
        backups.to_str().unwrap(),
        "--archive",
        archive.to_str().unwrap(),
        "--data-dir",
        dir.to_str().unwrap(),
    ];
    args.extend_from_slice(to);
    let (code, out, err) = cli(&args).await;
    assert_eq!(code, 0, "restore {to:?}: {out}{err}");
    let mut node = Node::unstarted(dir.to_path_buf(), &[]);
    node.restart().await;
    let moment = record(&node).await;
    let status = node.http.status().await;
    let audit = actions(&node).await;
    assert!(
        audit.contains(&"restored".to_string()),
        "the restore is in the audit trail: {audit:?}"
    );
    node.sigterm();
    (moment, status)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restore_to_any_recorded_moment_gives_exactly_that_ledger() {
    let store = tempfile::tempdir().expect("tempdir");
    let (backups, archive) = (store.path().join("backups"), store.path().join("archive"));
    let node = Node::start(&["--archive", archive.to_str().unwrap()]).await;
    create_accounts(&node.http).await;
    backup(&node, &backups).await;
    let mut moments = vec![record(&node).await];
    for round in 0..5 {
        write_round(&node, round).await;
        if round == 2 {
            // A backup taken while the clients write.
            let writing = write_round(&node, 100);
            let (_, ()) = tokio::join!(writing, backup(&node, &backups));
        }
        // Let the round's 1-second pending transfers expire before its moment.
        if round % 2 == 1 {
            expired(&node, round).await;
        }
        moments.push(record(&node).await);
    }
    archive_caught_up(&node).await;
    let taken = actions(&node)
        .await
        .iter()
        .filter(|a| *a == "backup_taken")
        .count();
    assert_eq!(taken, 2, "each backup is in the audit trail");
    let cluster_id = node.http.status().await["cluster_id"]
        .as_u64()
        .expect("cluster id");
    let dirs = tempfile::tempdir().expect("tempdir");
    for (k, expected) in moments.iter().enumerate() {
        let index = expected.index.to_string();
        let time = bulwark_backup::format_time(expected.time);
        for (label, to) in [
            ("index", vec!["--to-index", index.as_str()]),
            ("time", vec!["--to-time", time.as_str()]),
        ] {
            let dir = dirs.path().join(format!("m{k}-{label}"));
            let (got, status) = restore_and_read(&backups, &archive, &to, &dir).await;
            assert_eq!(
                got.balances, expected.balances,
                "moment {k} by {label}: balances"
            );
            assert_balanced(&got.balances, &format!("moment {k} by {label}"));
            assert_eq!(
                got.transfers, expected.transfers,
                "moment {k} by {label}: transfers"
            );
            assert_eq!(
                got.time, expected.time,
                "moment {k} by {label}: ledger time"
            );
            assert_ne!(
                status["cluster_id"].as_u64(),
                Some(cluster_id),
                "a new cluster"
            );
            assert_eq!(status["role"], "leader", "one voter leads: {status}");
        }
    }
    // Refused, naming why: before the first backup, past the archive's end.
    let early = refused_restore(&backups, &archive, "1", &dirs.path().join("early")).await;
    assert!(early.contains("before the earliest backup"), "{early}");
    let past = (moments.last().unwrap().index + 1000).to_string();
    let late = refused_restore(&backups, &archive, &past, &dirs.path().join("late")).await;
    assert!(late.contains("past the end of the archive"), "{late}");
    assert!(
        !dirs.path().join("late").exists(),
        "a refused restore touches nothing"
    );
}

/// Writes one transfer at a time to whichever node answers, until `stop`; answers the ids
/// acknowledged `ok` (a write refused or cut off by a kill may or may not be in the ledger).
async fn write_until(
    urls: Vec<String>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> Vec<u64> {
    let http: Vec<common::Http> = urls.into_iter().map(common::Http::with_base).collect();
    let mut acked = Vec::new();
    let mut id = 5_000_000u64;
    let mut node = 0;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        id += 1;
        let t = json!([{"id": id, "debit_account_id": 1 + id % ACCOUNTS,
            "credit_account_id": 1 + (id + 1) % ACCOUNTS, "amount": 1, "ledger": 1, "code": 1}]);
        match http[node]
            .try_post("/v1/transfers", serde_json::to_vec(&t).unwrap())
            .await
        {
            Ok(r) if r.status == 200 && r.results() == ["ok"] => acked.push(id),
            _ => {
                node = (node + 1) % http.len();
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    acked
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_archiver_moves_with_the_leader_and_the_archive_has_no_gap() {
    let store = tempfile::tempdir().expect("tempdir");
    let (backups, archive) = (store.path().join("backups"), store.path().join("archive"));
    let mut cluster = common::Cluster::start(3, &["--archive", archive.to_str().unwrap()]).await;
    let leader = cluster.wait_leader(Duration::from_secs(30)).await;
    create_accounts(&cluster.node(leader).http).await;
    // Followers caught up and heard from: the leader reports them in sync.
    cluster.wait_converged(Duration::from_secs(30)).await;
    let url = cluster.node(leader).base_url();
    let (code, out, err) = cli(&[
        "backup",
        "create",
        "--to",
        backups.to_str().unwrap(),
        "--addr",
        &url,
    ])
    .await;
    assert_eq!(code, 0, "backup create: {out}{err}");
    assert!(
        out.contains("from node") && !out.contains(&format!("from node {leader}:")),
        "a follower's checkpoint is read: {out}"
    );

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let urls = cluster.nodes.iter().map(|n| n.base_url()).collect();
    let writer = tokio::spawn(write_until(urls, stop.clone()));
    // Kill the leader (the archiver) twice mid-stream, each time bringing it back.
    for _ in 0..2 {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let leader = cluster.wait_leader(Duration::from_secs(30)).await;
        cluster.node_mut(leader).kill9();
        tokio::time::sleep(Duration::from_millis(1500)).await;
        cluster.node_mut(leader).restart().await;
    }
    tokio::time::sleep(Duration::from_millis(1000)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let acked = writer.await.expect("the writer");
    assert!(
        acked.len() > 20,
        "the workload went on: {} writes",
        acked.len()
    );
    let leader = cluster.wait_leader(Duration::from_secs(30)).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let s = cluster.node(leader).http.status().await;
        let archived = s["archive"]["archived_index"].as_u64().unwrap_or(0);
        if s["archive"]["archiving"] == true && archived >= s["commit_index"].as_u64().unwrap() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the new leader did not archive: {s}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (code, out, err) = cli(&[
        "backup",
        "verify",
        backups.to_str().unwrap(),
        "--archive",
        archive.to_str().unwrap(),
    ])
    .await;
    assert_eq!(code, 0, "verify: {out}{err}");
    let dirs = tempfile::tempdir().expect("tempdir");
    let (restored, _) = restore_and_read(&backups, &archive, &[], &dirs.path().join("r")).await;
    let missing: Vec<_> = acked
        .iter()
        .filter(|id| !restored.transfers.contains(id))
        .collect();
    assert!(
        missing.is_empty(),
        "acknowledged transfers missing after the restore: {missing:?}"
    );
}

/// The same with S3 (a real S3-protocol server, s3s-fs): the archive and a backup in a bucket,
/// their settings from the environment only; a restore from there holds every acknowledged
/// transfer. Skipped outside CI without `BULWARK_TEST_S3_BIN`; failed under CI without it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn backups_and_the_archive_go_to_s3() {
    let Some(bin) = bulwark_harness::s3::s3_server_bin() else {
        return;
    };
    let server = bulwark_harness::s3::S3Server::start(&bin, &["ledger"]);
    let env = server.env();
    let (backups, archive) = ("s3://ledger/backups", "s3://ledger/archive");
    let node = Node::start_with_env(&["--archive", archive], &env).await;
    create_accounts(&node.http).await;
    write_round(&node, 0).await;
    let url = node.base_url();
    let (code, out, err) =
        common::cli_with_env(&["backup", "create", "--to", backups, "--addr", &url], &env).await;
    assert_eq!(code, 0, "backup create: {out}{err}");
    write_round(&node, 1).await;
    // Round 1's one-second pending transfers expire before the moment (as in the first test).
    expired(&node, 1).await;
    let expected = record(&node).await;
    archive_caught_up(&node).await;
    let (code, out, err) =
        common::cli_with_env(&["backup", "verify", backups, "--archive", archive], &env).await;
    assert_eq!(code, 0, "verify: {out}{err}");
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("restored");
    let (code, out, err) = common::cli_with_env(
        &[
            "restore",
            "--from",
            backups,
            "--archive",
            archive,
            "--data-dir",
            data.to_str().unwrap(),
        ],
        &env,
    )
    .await;
    assert_eq!(code, 0, "restore: {out}{err}");
    let mut restored = Node::unstarted(data, &[]);
    restored.restart().await;
    let got = record(&restored).await;
    assert_eq!(got.balances, expected.balances);
    assert_eq!(got.transfers, expected.transfers);
    // Nothing of the credentials is on a command line: the node and the client had them from
    // the environment (a refused spec says which variable is missing).
    let (code, _, err) = cli(&["backup", "list", backups]).await;
    assert_ne!(code, 0);
    assert!(err.contains("AWS_ACCESS_KEY_ID"), "{err}");
    restored.sigterm();
}
