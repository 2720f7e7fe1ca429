//! The run's own verdicts, beside the history's checker: `replicas_identical` on diverging final
//! states, `faults_handled` on a broken finding and on a client task that panicked, and the probe
//! write after healing against a node that takes it and one that never does.

use std::time::{Duration, Instant};

use bulwark_chaos::client::Client;
use bulwark_chaos::nemesis::Findings;
use bulwark_chaos::run::{
    join_clients, nemesis_verdict, probe_after_heal, replicas_verdict, HEAL_PROBE_PROCESS,
};
use bulwark_chaos::workload::Recorder;
use bulwark_chaos::{Account, FinalState, Kind, Phase, Transfer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

fn state() -> FinalState {
    FinalState {
        accounts: vec![
            Account {
                id: 1,
                ledger: 1,
                debits_posted: 5,
                ..Account::default()
            },
            Account {
                id: 2,
                ledger: 1,
                credits_posted: 5,
                ..Account::default()
            },
        ],
        transfers: vec![Transfer {
            id: 7,
            debit: 1,
            credit: 2,
            amount: 5,
            ledger: 1,
            timestamp: 1_000,
            ..Transfer::default()
        }],
        changes: None,
    }
}

#[test]
fn identical_replicas_pass_and_any_difference_fails() {
    let same = vec![(1, state()), (2, state()), (3, state())];
    let v = replicas_verdict(&same, Some(42));
    assert_eq!(v.property, "replicas_identical");
    assert!(v.ok, "{v:?}");
    assert_eq!(
        v.notes,
        ["3 nodes compared after healing, at applied index 42"]
    );

    // One balance off on node 3, a transfer's amount on node 2, a transfer's timestamp on node 4,
    // a missing transfer on node 5.
    let mut balance = state();
    balance.accounts[1].credits_posted = 6;
    let mut amount = state();
    amount.transfers[0].amount = 4;
    let mut stamped = state();
    stamped.transfers[0].timestamp = 1_001;
    let mut missing = state();
    missing.transfers.clear();
    let diverged = vec![
        (1, state()),
        (2, amount),
        (3, balance),
        (4, stamped),
        (5, missing),
    ];
    let v = replicas_verdict(&diverged, None);
    assert!(!v.ok);
    let nodes: Vec<&str> = v
        .violations
        .iter()
        .map(|x| x.split(' ').nth(1).unwrap())
        .collect();
    assert_eq!(nodes, ["2", "3", "4", "5"], "{v:?}");
    assert!(v.violations[3].contains("holds 0 transfers"), "{v:?}");

    assert!(!replicas_verdict(&[], None).ok);
}

#[test]
fn a_broken_finding_fails_faults_handled() {
    let mut findings = Findings::default();
    findings.windows.insert("kill", 2);
    findings.notes.push("disk full on node 1: refused".into());
    let v = nemesis_verdict(&findings);
    assert_eq!(v.property, "faults_handled");
    assert!(v.ok && v.violations.is_empty(), "{v:?}");
    assert!(v.notes.contains(&"kill: 2 windows".to_string()), "{v:?}");

    findings
        .violations
        .push("disk full on node 2: it never answered a write with 507 disk_full".into());
    let v = nemesis_verdict(&findings);
    assert!(!v.ok);
    assert_eq!(v.violations, findings.violations);
}

#[tokio::test]
async fn a_client_that_panicked_is_a_finding() {
    let fine = tokio::spawn(async {});
    let broken = tokio::spawn(async {
        panic!("index out of bounds: the len is 0 but the index is 0");
    });
    let failures = join_clients(vec![(1, fine), (2, broken)]).await;
    assert_eq!(
        failures,
        ["client process 2 panicked: index out of bounds: the len is 0 but the index is 0"]
    );
    let findings = Findings {
        violations: failures,
        ..Findings::default()
    };
    assert!(!nemesis_verdict(&findings).ok);
    assert!(join_clients(vec![(1, tokio::spawn(async {}))])
        .await
        .is_empty());
}

/// A node that answers every request with `status` and `body`, as often as it is asked.
async fn node(status: &'static str, body: &'static str) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut seen = Vec::new();
            let mut buf = [0u8; 4096];
            // The head, then the JSON body of a one-transfer batch (ends with `]`).
            while !(seen.windows(4).any(|w| w == b"\r\n\r\n") && seen.ends_with(b"]")) {
                let n = socket.read(&mut buf).await.unwrap();
                if n == 0 {
                    break;
                }
                seen.extend_from_slice(&buf[..n]);
            }
            let reply = format!(
                "HTTP/1.1 {status}\r\ncontent-type: application/json\r\nbulwark-commit-index: 9\r\n\
                 content-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = socket.write_all(reply.as_bytes()).await;
        }
    });
    addr
}

#[tokio::test]
async fn the_probe_after_healing_is_recorded_and_must_be_acknowledged() {
    let client = Client::new(Duration::from_secs(2), "t");
    let recorder = Recorder::new(Instant::now());
    let refusing = node(
        "503 Service Unavailable",
        r#"{"error":"no_leader","message":"no"}"#,
    )
    .await;
    let taking = node("200 OK", r#"{"results":[{"index":0,"result":"ok"}]}"#).await;
    let note = probe_after_heal(
        &recorder,
        &client,
        &[refusing, taking],
        Duration::from_secs(10),
    )
    .await;
    assert!(note.unwrap().contains("acknowledged at attempt"));
    let ops = recorder.take_ops();
    assert!(ops
        .iter()
        .all(|o| o.process == HEAL_PROBE_PROCESS && o.kind == Kind::TransferBatch));
    let last = ops.last().unwrap();
    assert_eq!((last.phase, last.commit_index), (Phase::Ok, Some(9)));
    assert!(ops.iter().any(|o| o.phase == Phase::Fail));

    // A cluster that refuses every write never passes.
    let note = probe_after_heal(&recorder, &client, &[refusing], Duration::from_millis(800)).await;
    assert_eq!(note, None);
    assert!(recorder.take_ops().iter().all(|o| o.phase != Phase::Ok));
}
