//! HTTP API v1 and the command-line client, against the real binary: every bad input answers
//! 4xx with its error word and a message naming the place, and changes nothing; the happy paths
//! answer as documented; the CLI's exit codes are the documented ones.

mod common;

use common::DecField;

use common::{cli, Http, Node, Resp};
use serde_json::{json, Value};
use std::time::Duration;

/// A transfer that would succeed in the ledger set up by [`setup`].
fn good_transfer(id: u64) -> Value {
    json!({"id": id, "debit_account_id": 1, "credit_account_id": 2, "amount": 1, "ledger": 1, "code": 1})
}

/// Accounts 1 (plain) and 2 (`debits_must_not_exceed_credits`) in ledger 1, 2 funded with 100.
async fn setup(http: &Http) {
    let results = http
        .write(
            "/v1/accounts",
            &json!([
                {"id": 1, "ledger": 1, "code": 10},
                {"id": 2, "ledger": 1, "code": 20, "flags": ["debits_must_not_exceed_credits"]},
            ]),
        )
        .await;
    assert_eq!(results, ["ok", "ok"]);
    let results = http
        .write(
            "/v1/transfers",
            &json!([{"id": 10, "debit_account_id": 1, "credit_account_id": 2, "amount": 100, "ledger": 1, "code": 1}]),
        )
        .await;
    assert_eq!(results, ["ok"]);
}

/// What must not change when a request is refused.
async fn snapshot(http: &Http) -> (u64, Value, Value) {
    (
        http.applied_index().await,
        http.account(1).await.expect("account 1"),
        http.account(2).await.expect("account 2"),
    )
}

fn json_body(v: Value) -> Vec<u8> {
    serde_json::to_vec(&v).unwrap()
}

/// Asserts an error answer: status, word, and that the message contains `place`.
fn assert_refused(what: &str, r: &Resp, status: u16, word: &str, place: &str) {
    // An empty place is contained in every message: the check would hold whatever it says.
    assert!(!place.is_empty(), "{what}: a case must name a place");
    assert_eq!(r.status, status, "{what}: status of {}", r.text);
    assert_eq!(r.error(), word, "{what}: error word of {}", r.text);
    assert!(
        r.message().contains(place),
        "{what}: the message should contain `{place}`: {}",
        r.text
    );
    assert!(
        r.header("content-type")
            .is_some_and(|c| c.starts_with("application/json")),
        "{what}: an error answer is JSON: {:?}",
        r.headers
    );
}

/// What, path, body, expected status, error word, and a place the message must name.
type Case = (
    &'static str,
    &'static str,
    Vec<u8>,
    u16,
    &'static str,
    &'static str,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_write_bodies_are_refused_whole_with_the_right_word_and_change_nothing() {
    let node = Node::start(&[]).await;
    let http = node.http.clone();
    setup(&http).await;
    let before = snapshot(&http).await;

    let good = good_transfer(500);
    let good_account = json!({"id": 600, "ledger": 1, "code": 1});
    let mut cases: Vec<Case> = vec![
        (
            "malformed JSON",
            "/v1/transfers",
            br#"[{"id":500,"amount":1},{"id":"#.to_vec(),
            400,
            "malformed_json",
            "not valid JSON",
        ),
        (
            "malformed JSON, accounts",
            "/v1/accounts",
            b"[{\"id\":600,}]".to_vec(),
            400,
            "malformed_json",
            "not valid JSON",
        ),
        (
            "an empty body",
            "/v1/transfers",
            Vec::new(),
            400,
            "malformed_json",
            // serde_json's place for a body that ends before any value.
            "EOF while parsing a value at line 1 column 0",
        ),
        (
            "an unknown field in the second transfer",
            "/v1/transfers",
            json_body(json!([good, {
                "id": 501, "debit_account_id": 1, "credit_account_id": 2, "amount": 1,
                "ledger": 1, "code": 1, "colour": "red"
            }])),
            400,
            "unknown_field",
            "[1].colour",
        ),
        (
            "an unknown field in the second account",
            "/v1/accounts",
            json_body(json!([good_account, {"id": 601, "ledger": 1, "code": 1, "balance": 5}])),
            400,
            "unknown_field",
            "[1].balance",
        ),
        (
            "a string amount that is not a decimal",
            "/v1/transfers",
            json_body(json!([good, {
                "id": 501, "debit_account_id": 1, "credit_account_id": 2, "amount": "5 USD",
                "ledger": 1, "code": 1
            }])),
            400,
            "invalid_field",
            "[1].amount",
        ),
        (
            "a negative amount",
            "/v1/transfers",
            br#"[{"id":500,"debit_account_id":1,"credit_account_id":2,"amount":1,"ledger":1,"code":1},
                 {"id":501,"debit_account_id":1,"credit_account_id":2,"amount":-5,"ledger":1,"code":1}]"#
                .to_vec(),
            400,
            "invalid_field",
            "[1].amount",
        ),
        (
            "a fractional amount",
            "/v1/transfers",
            br#"[{"id":500,"debit_account_id":1,"credit_account_id":2,"amount":1,"ledger":1,"code":1},
                 {"id":501,"debit_account_id":1,"credit_account_id":2,"amount":2.5,"ledger":1,"code":1}]"#
                .to_vec(),
            400,
            "invalid_field",
            "[1].amount",
        ),
        (
            "an amount above u64::MAX",
            "/v1/transfers",
            br#"[{"id":500,"debit_account_id":1,"credit_account_id":2,"amount":1,"ledger":1,"code":1},
                 {"id":501,"debit_account_id":1,"credit_account_id":2,"amount":18446744073709551616,"ledger":1,"code":1}]"#
                .to_vec(),
            400,
            "invalid_field",
            "[1].amount",
        ),
        (
            "a ledger above u32::MAX",
            "/v1/transfers",
            br#"[{"id":500,"debit_account_id":1,"credit_account_id":2,"amount":1,"ledger":1,"code":1},
                 {"id":501,"debit_account_id":1,"credit_account_id":2,"amount":1,"ledger":4294967296,"code":1}]"#
                .to_vec(),
            400,
            "invalid_field",
            "[1].ledger",
        ),
        (
            "a negative account id",
            "/v1/accounts",
            br#"[{"id":600,"ledger":1,"code":1},{"id":-1,"ledger":1,"code":1}]"#.to_vec(),
            400,
            "invalid_field",
            "[1].id",
        ),
        (
            "transfer id 0",
            "/v1/transfers",
            json_body(json!([good, {
                "id": 0, "debit_account_id": 1, "credit_account_id": 2, "amount": 1,
                "ledger": 1, "code": 1
            }])),
            400,
            "invalid_id",
            "[1].id",
        ),
        (
            "account id 0",
            "/v1/accounts",
            json_body(json!([good_account, {"id": 0, "ledger": 1, "code": 1}])),
            400,
            "invalid_id",
            "[1].id",
        ),
        (
            "an unknown transfer flag",
            "/v1/transfers",
            json_body(json!([good, {
                "id": 501, "debit_account_id": 1, "credit_account_id": 2, "amount": 1,
                "ledger": 1, "code": 1, "flags": ["linked", "urgent"]
            }])),
            400,
            "unknown_flag",
            "[1].flags",
        ),
        (
            "an unknown account flag",
            "/v1/accounts",
            json_body(json!([good_account, {"id": 601, "ledger": 1, "code": 1, "flags": ["frozen"]}])),
            400,
            "unknown_flag",
            "[1].flags",
        ),
        (
            "an account missing its code",
            "/v1/accounts",
            json_body(json!([good_account, {"id": 601, "ledger": 1}])),
            400,
            "missing_field",
            "[1]",
        ),
        (
            "an empty batch of transfers",
            "/v1/transfers",
            b"[]".to_vec(),
            400,
            "empty_batch",
            "holds no transfers",
        ),
        (
            "an empty batch of accounts",
            "/v1/accounts",
            b"[ ]".to_vec(),
            400,
            "empty_batch",
            "holds no accounts",
        ),
        (
            "a JSON object instead of an array",
            "/v1/transfers",
            json_body(good.clone()),
            400,
            "invalid_body",
            "array",
        ),
        (
            "a JSON string instead of an array",
            "/v1/accounts",
            b"\"accounts\"".to_vec(),
            400,
            "invalid_body",
            "array",
        ),
    ];

    // 8191 events: one more than a batch may hold.
    let too_many: Vec<Value> = (0..8191).map(|i| good_transfer(1_000 + i)).collect();
    cases.push((
        "8191 transfers",
        "/v1/transfers",
        json_body(Value::Array(too_many)),
        400,
        "batch_too_large",
        "8191",
    ));
    let too_many: Vec<Value> = (0..8191)
        .map(|i| json!({"id": 100_000 + i, "ledger": 1, "code": 1}))
        .collect();
    cases.push((
        "8191 accounts",
        "/v1/accounts",
        json_body(Value::Array(too_many)),
        400,
        "batch_too_large",
        "8191",
    ));

    // A body over 8 MiB: valid JSON (a good transfer padded with whitespace), refused for size.
    let mut huge = b"[".to_vec();
    huge.extend(serde_json::to_vec(&good).unwrap());
    huge.resize(huge.len() + (8 << 20) + 1024, b' ');
    huge.push(b']');
    cases.push((
        "a body over 8 MiB",
        "/v1/transfers",
        huge,
        413,
        "body_too_large",
        "larger than 8388608 bytes",
    ));

    for (what, path, body, status, word, place) in cases {
        let r = http.post_raw(path, body).await;
        assert_refused(what, &r, status, word, place);
        assert_eq!(
            snapshot(&http).await,
            before,
            "{what}: a refused request changed the state"
        );
    }
    // The good events next to the bad ones were not applied either.
    assert!(http.transfer(500).await.is_none());
    assert!(http.account(600).await.is_none());
    assert!(http.transfer(1_000).await.is_none());
    assert!(http.account(100_000).await.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_paths_and_queries_are_refused_with_the_right_word() {
    let node = Node::start(&[]).await;
    let http = node.http.clone();
    setup(&http).await;
    let before = snapshot(&http).await;

    let cases: &[(&str, u16, &str, &str)] = &[
        ("/v1/accounts/abc", 400, "invalid_id", "abc"),
        ("/v1/accounts/0", 400, "invalid_id", "0"),
        // One spelling per id: no sign, no leading zero, no encoded bytes that are not UTF-8.
        ("/v1/accounts/+1", 400, "invalid_id", "+1"),
        ("/v1/accounts/01", 400, "invalid_id", "01"),
        ("/v1/transfers/010", 400, "invalid_id", "010"),
        ("/v1/accounts/%ff", 400, "invalid_id", "not UTF-8"),
        ("/v1/accounts/%2B1/transfers", 400, "invalid_id", "+1"),
        ("/v1/accounts/-1", 400, "invalid_id", "-1"),
        (
            "/v1/accounts/340282366920938463463374607431768211456",
            400,
            "invalid_id",
            "340282366920938463463374607431768211456",
        ),
        ("/v1/transfers/abc", 400, "invalid_id", "abc"),
        ("/v1/transfers/0", 400, "invalid_id", "0"),
        ("/v1/accounts/abc/transfers", 400, "invalid_id", "abc"),
        ("/v1/accounts/0/transfers", 400, "invalid_id", "0"),
        (
            "/v1/accounts/1/transfers?limit=0",
            400,
            "invalid_query",
            "limit",
        ),
        (
            "/v1/accounts/1/transfers?limit=8191",
            400,
            "invalid_query",
            "limit",
        ),
        (
            "/v1/accounts/1/transfers?limit=ten",
            400,
            "invalid_query",
            "limit",
        ),
        (
            "/v1/accounts/1/transfers?after=-1",
            400,
            "invalid_query",
            "after",
        ),
        (
            "/v1/accounts/1/transfers?page=2",
            400,
            "invalid_query",
            "page",
        ),
        (
            "/v1/accounts/1?verbose=true",
            400,
            "invalid_query",
            "verbose",
        ),
        (
            "/v1/transfers/10?verbose=true",
            400,
            "invalid_query",
            "verbose",
        ),
        (
            "/v1/accounts/1?consistency=sometimes",
            400,
            "invalid_query",
            "consistency",
        ),
        ("/v1/accounts/999", 404, "account_not_found", "999"),
        (
            "/v1/accounts/999/transfers",
            404,
            "account_not_found",
            "999",
        ),
        ("/v1/transfers/999", 404, "transfer_not_found", "999"),
        (
            "/v2/accounts/1",
            404,
            "not_found",
            "no such route in API v1",
        ),
    ];
    for (path, status, word, place) in cases {
        let r = http.get(path).await;
        assert_refused(path, &r, *status, word, place);
    }
    // Oversized input is quoted back only in part.
    let long_id = format!("/v1/accounts/{}", "9".repeat(4000));
    let long_query = format!("/v1/accounts/1?{}=1", "x".repeat(4000));
    for path in [long_id, long_query] {
        let r = http.get(&path).await;
        assert_eq!(r.status, 400, "{}", r.text);
        assert!(
            r.text.len() < 600,
            "the answer echoes the input: {}",
            r.text
        );
    }
    // Both consistencies are accepted on reads.
    for path in [
        "/v1/accounts/1?consistency=stale",
        "/v1/accounts/1?consistency=linearizable",
        "/v1/transfers/10?consistency=stale",
        "/v1/accounts/1/transfers?limit=5&consistency=stale",
    ] {
        let r = http.get(path).await;
        assert_eq!(r.status, 200, "{path}: {}", r.text);
    }
    assert_eq!(snapshot(&http).await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn happy_paths_answer_as_documented() {
    let node = Node::start(&[]).await;
    let http = node.http.clone();

    // Accounts: ok, then exists on an identical retry, exists_with_different_fields otherwise.
    let accounts = json!([
        {"id": 1, "ledger": 1, "code": 10, "user_data_64": 7},
        {"id": 2, "ledger": 1, "code": 20, "flags": ["debits_must_not_exceed_credits", "history"]},
        {"id": 3, "ledger": 2, "code": 10},
    ]);
    let r = http.post("/v1/accounts", &accounts).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.results(), ["ok", "ok", "ok"]);
    let first_commit: u64 = r
        .header("bulwark-commit-index")
        .expect("a write answers with bulwark-commit-index")
        .parse()
        .expect("the commit index is an integer");
    assert!(first_commit >= 1);
    assert_eq!(
        http.write("/v1/accounts", &accounts).await,
        ["exists", "exists", "exists"]
    );
    assert_eq!(
        http.write(
            "/v1/accounts",
            &json!([{"id": 1, "ledger": 1, "code": 11, "user_data_64": 7}])
        )
        .await,
        ["exists_with_different_fields"]
    );

    let account = http.account(2).await.expect("account 2");
    assert_eq!(account["id"], "2");
    assert_eq!(account["ledger"], 1);
    assert_eq!(account["code"], 20);
    let mut flags: Vec<&str> = account["flags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap())
        .collect();
    flags.sort();
    assert_eq!(flags, ["debits_must_not_exceed_credits", "history"]);
    assert_eq!(http.account(1).await.unwrap()["user_data_64"], "7");

    // Transfers: a funding, an overdraft refused, a linked chain, a failing linked chain,
    // a pending transfer posted in part, mismatched ledgers.
    let transfers = json!([
        {"id": 100, "debit_account_id": 1, "credit_account_id": 2, "amount": 5000, "ledger": 1, "code": 1, "user_data_64": 42},
        {"id": 101, "debit_account_id": 2, "credit_account_id": 1, "amount": 9000, "ledger": 1, "code": 1},
        {"id": 102, "debit_account_id": 2, "credit_account_id": 1, "amount": 100, "ledger": 1, "code": 1, "flags": ["linked"]},
        {"id": 103, "debit_account_id": 1, "credit_account_id": 2, "amount": 50, "ledger": 1, "code": 1},
        {"id": 104, "debit_account_id": 2, "credit_account_id": 1, "amount": 100, "ledger": 1, "code": 1, "flags": ["linked"]},
        {"id": 105, "debit_account_id": 2, "credit_account_id": 1, "amount": 1_000_000, "ledger": 1, "code": 1},
        {"id": 106, "debit_account_id": 1, "credit_account_id": 3, "amount": 1, "ledger": 1, "code": 1},
        {"id": 107, "debit_account_id": 2, "credit_account_id": 1, "amount": 3000, "ledger": 1, "code": 1, "flags": ["pending"], "timeout": 3600},
    ]);
    let r = http.post("/v1/transfers", &transfers).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        r.results(),
        [
            "ok",
            "exceeds_credits",
            "ok",
            "ok",
            "linked_event_failed",
            "exceeds_credits",
            "ledger_must_match",
            "ok"
        ]
    );
    let commit: u64 = r.header("bulwark-commit-index").unwrap().parse().unwrap();
    assert!(commit > first_commit, "commit indexes grow");
    let r = http
        .post(
            "/v1/transfers",
            &json!([{"id": 108, "pending_id": 107, "amount": 2500, "flags": ["post_pending_transfer"]}]),
        )
        .await;
    assert_eq!(r.results(), ["ok"]);
    let commit2: u64 = r.header("bulwark-commit-index").unwrap().parse().unwrap();
    assert!(commit2 > commit);

    // A retry moves no money twice; a changed retry is refused.
    assert_eq!(
        http.write("/v1/transfers", &json!([transfers[0].clone()]))
            .await,
        ["exists"]
    );
    let mut changed = transfers[0].clone();
    changed["amount"] = json!(5001);
    assert_eq!(
        http.write("/v1/transfers", &json!([changed])).await,
        ["exists_with_different_fields"]
    );

    // Reads carry bulwark-applied-index, equal to the last commit on a single node.
    let status = http.get("/v1/status").await;
    assert_eq!(status.status, 200);
    let applied = status.json["applied_index"].as_u64().unwrap();
    assert!(applied >= commit2);
    for path in [
        "/v1/accounts/1",
        "/v1/transfers/100",
        "/v1/accounts/2/transfers",
        "/v1/status",
    ] {
        let r = http.get(path).await;
        assert_eq!(r.status, 200, "{path}: {}", r.text);
        let header: u64 = r
            .header("bulwark-applied-index")
            .unwrap_or_else(|| panic!("{path} answers without bulwark-applied-index"))
            .parse()
            .unwrap();
        assert_eq!(header, applied, "{path}");
    }

    // The transfer reads back with the fields it was created with.
    let t = http.transfer(100).await.expect("transfer 100");
    assert_eq!(
        common::transfer_fields(&t),
        common::transfer_fields(&transfers[0])
    );
    assert!(t["timestamp"].dec().unwrap() > 0);
    for refused in [101, 104, 105, 106] {
        assert!(
            http.transfer(refused).await.is_none(),
            "transfer {refused} was refused, yet it exists"
        );
    }
    let pending = http.transfer(107).await.unwrap();
    assert_eq!(pending["pending_status"], "posted");
    let post = http.transfer(108).await.unwrap();
    assert_eq!(post["amount"], "2500");
    assert_eq!(post["pending_id"], "107");
    assert_eq!(post["debit_account_id"], "2");
    assert_eq!(post["credit_account_id"], "1");

    // Balances: 2 got 5000 + 50, paid 100 and 2500 (of a 3000 pending, now released).
    let a2 = http.account(2).await.unwrap();
    assert_eq!(a2["credits_posted"], "5050");
    assert_eq!(a2["debits_posted"], "2600");
    assert_eq!(a2["debits_pending"], "0");
    assert_eq!(a2["credits_pending"], "0");
    let a1 = http.account(1).await.unwrap();
    assert_eq!(a1["debits_posted"], "5050");
    assert_eq!(a1["credits_posted"], "2600");
    assert_eq!(http.account(3).await.unwrap()["credits_posted"], "0");

    // History of account 2: 100, 102, 103, 107, 108 in timestamp order, paged by 2.
    let mut ids = Vec::new();
    let mut timestamps = Vec::new();
    let mut after: Option<u64> = None;
    let mut pages = 0;
    loop {
        let path = match after {
            Some(a) => format!("/v1/accounts/2/transfers?limit=2&after={a}"),
            None => "/v1/accounts/2/transfers?limit=2".to_string(),
        };
        let r = http.get(&path).await;
        assert_eq!(r.status, 200, "{}", r.text);
        pages += 1;
        let page = r.json["transfers"].as_array().unwrap();
        assert!(page.len() <= 2);
        for t in page {
            ids.push(t["id"].dec().unwrap());
            timestamps.push(t["timestamp"].dec().unwrap());
            // Account 2 keeps history: each entry carries its balances after the transfer.
            assert!(t.get("balances").is_some(), "history balances: {t}");
        }
        match r.json.get("next_after") {
            Some(n) => {
                assert_eq!(page.len(), 2, "only a full page has a next page");
                assert_eq!(n.dec(), page.last().unwrap()["timestamp"].dec());
                after = n.dec();
            }
            None => break,
        }
        assert!(pages < 10, "paging does not end");
    }
    assert_eq!(ids, [100, 102, 103, 107, 108]);
    assert!(timestamps.windows(2).all(|w| w[0] < w[1]), "{timestamps:?}");
    assert_eq!(pages, 3);
    let last = http.history(2, 8190).await;
    assert_eq!(last.len(), 5);
    let r = http
        .get(&format!(
            "/v1/accounts/2/transfers?after={}",
            timestamps.last().unwrap()
        ))
        .await;
    assert_eq!(r.json["transfers"].as_array().unwrap().len(), 0);
    assert!(r.json.get("next_after").is_none());

    // A full batch of 8190 events is accepted.
    let full: Vec<Value> = (0..8190)
        .map(|i| json!({"id": 10_000 + i, "ledger": 1, "code": 1}))
        .collect();
    let results = http.write("/v1/accounts", &Value::Array(full)).await;
    assert_eq!(results.len(), 8190);
    assert!(results.iter().all(|r| r == "ok"));
    assert_eq!(http.status().await["accounts"], 3 + 8190);

    // Metrics in Prometheus text.
    let r = http.get("/metrics").await;
    assert_eq!(r.status, 200);
    assert!(
        r.header("content-type")
            .is_some_and(|c| c.starts_with("text/plain")),
        "{:?}",
        r.headers
    );
    for name in [
        "bulwark_wal_fsync_duration_seconds",
        "bulwark_http_requests",
    ] {
        assert!(r.text.contains(name), "/metrics lacks {name}:\n{}", r.text);
    }
    assert!(
        r.text
            .lines()
            .any(|l| l.starts_with("bulwark_http_requests") && l.contains("/v1/transfers")),
        "/metrics counts requests by route:\n{}",
        r.text
    );
    // Every write above went through a Ready round of the leader: the group-commit histogram
    // counted them (at least one request per observation).
    let sample = |name: &str| -> f64 {
        r.text
            .lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("/metrics lacks {name}:\n{}", r.text))
    };
    let rounds = sample("bulwark_group_commit_requests_count");
    let requests = sample("bulwark_group_commit_requests_sum");
    assert!(
        rounds >= 1.0 && requests >= rounds,
        "group commit: {requests} requests in {rounds} rounds"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_exit_codes() {
    let node = Node::start(&[]).await;
    let addr = node.base_url();
    let addr = addr.as_str();

    let create = [
        "account", "create", "--id", "3", "--ledger", "1", "--code", "10", "--addr", addr,
    ];
    let (code, out, err) = cli(&create).await;
    assert_eq!(code, 0, "create: {out} {err}");
    assert!(out.contains("created"), "{out}");
    let (code, out, err) = cli(&create).await;
    assert_eq!(code, 1, "a second create: {out} {err}");
    assert!(out.contains("exists"), "{out}");
    let (code, out, _) = cli(&[
        "account", "create", "--id", "3", "--ledger", "1", "--code", "11", "--addr", addr,
    ])
    .await;
    assert_eq!(code, 1);
    assert!(out.contains("exists_with_different_fields"), "{out}");
    let (code, out, err) = cli(&[
        "account",
        "create",
        "--id",
        "4",
        "--ledger",
        "1",
        "--code",
        "10",
        "--flags",
        "debits_must_not_exceed_credits,history",
        "--addr",
        addr,
    ])
    .await;
    assert_eq!(code, 0, "{out} {err}");

    let (code, out, err) = cli(&[
        "transfer", "--id", "50", "--debit", "3", "--credit", "4", "--amount", "10", "--ledger",
        "1", "--code", "1", "--addr", addr,
    ])
    .await;
    assert_eq!(code, 0, "transfer: {out} {err}");
    let (code, out, _) = cli(&[
        "transfer", "--id", "51", "--debit", "4", "--credit", "3", "--amount", "11", "--ledger",
        "1", "--code", "1", "--addr", addr,
    ])
    .await;
    assert_eq!(code, 1, "an overdraft is refused by the ledger: {out}");
    assert!(out.contains("exceeds_credits"), "{out}");

    let (code, out, err) = cli(&["account", "get", "4", "--addr", addr, "--json"]).await;
    assert_eq!(code, 0, "{out} {err}");
    let account: Value = serde_json::from_str(out.trim()).expect("--json prints JSON");
    assert_eq!(account["credits_posted"], "10");
    let (code, out, _) = cli(&["account", "get", "4", "--addr", addr]).await;
    assert_eq!(code, 0);
    assert!(out.contains("account 4"), "{out}");

    let (code, out, err) = cli(&["history", "4", "--addr", addr, "--json"]).await;
    assert_eq!(code, 0, "{out} {err}");
    let history: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(history["transfers"][0]["id"], "50");

    let (code, out, err) = cli(&["account", "get", "999", "--addr", addr]).await;
    assert_eq!(code, 3, "an unknown account is a 4xx: {out} {err}");
    assert!(err.contains("account_not_found"), "{err}");
    let (code, _, err) = cli(&["account", "get", "999", "--addr", "http://127.0.0.1:1"]).await;
    assert_eq!(code, 4, "an unreachable server: {err}");
    let (code, _, err) = cli(&[
        "account",
        "create",
        "--id",
        "5",
        "--ledger",
        "1",
        "--code",
        "1",
        "--addr",
        "http://127.0.0.1:1",
    ])
    .await;
    assert_eq!(code, 4, "an unreachable server: {err}");
    let (code, _, err) = cli(&["account", "create", "--id", "5", "--addr", addr]).await;
    assert_eq!(code, 2, "a bad command line: {err}");
    assert!(node.http.account(5).await.is_none());
}

/// A server on a free port that answers every request with `status` and a JSON error, until
/// dropped; returns its base URL.
async fn failing_server(
    status: &'static str,
    word: &'static str,
) -> (String, tokio::task::JoinHandle<()>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            // The whole request head (a client command's request is small), then the answer.
            let mut request = Vec::new();
            let mut buf = [0u8; 4096];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                match socket.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => request.extend_from_slice(&buf[..n]),
                }
            }
            let body = format!(r#"{{"error":"{word}","message":"a test server failing"}}"#);
            let answer = format!(
                "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
                 connection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = socket.write_all(answer.as_bytes()).await;
        }
    });
    (base, task)
}

/// A server that answers 5xx is failing: exit 4, as for one that cannot be reached (a 4xx is
/// exit 3).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_exits_4_when_the_server_answers_5xx() {
    for (status, word) in [
        ("500 Internal Server Error", "storage_error"),
        ("503 Service Unavailable", "no_leader"),
        ("507 Insufficient Storage", "disk_full"),
    ] {
        let (addr, server) = failing_server(status, word).await;
        let addr = addr.as_str();
        for args in [
            vec!["account", "get", "1", "--addr", addr],
            vec![
                "transfer", "--id", "1", "--debit", "1", "--credit", "2", "--amount", "1",
                "--ledger", "1", "--code", "1", "--addr", addr,
            ],
        ] {
            let (code, out, err) = cli(&args).await;
            assert_eq!(code, 4, "{status} to {args:?}: {out} {err}");
            assert!(err.contains(word), "the error names the answer: {err}");
        }
        server.abort();
    }
    // The same server answering 4xx is a refusal, not a failure: the exit code follows the
    // status.
    let (addr, server) = failing_server("409 Conflict", "membership_refused").await;
    let (code, _, err) = cli(&["account", "get", "1", "--addr", &addr]).await;
    assert_eq!(code, 3, "a 4xx: {err}");
    server.abort();
}

/// The API's promise is one JSON shape per answer: a 4xx carries `{"error", "message"}`. A
/// request with a method a route does not take is a bad request like any other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_method_answers_405_with_a_json_error() {
    let node = Node::start(&[]).await;
    let http = node.http.clone();
    setup(&http).await;
    let before = snapshot(&http).await;
    let client = reqwest::Client::builder()
        .default_headers(bulwark_harness::bearer_headers(&common::test_token().1))
        .build()
        .expect("a client");
    let cases = [
        (reqwest::Method::GET, "/v1/transfers"),
        (reqwest::Method::PUT, "/v1/accounts"),
        (reqwest::Method::DELETE, "/v1/accounts/1"),
        (reqwest::Method::POST, "/v1/transfers/10"),
    ];
    for (method, path) in cases {
        let r = client
            .request(method.clone(), format!("{}{path}", node.base_url()))
            .body("[]")
            .send()
            .await
            .expect("send");
        let status = r.status().as_u16();
        let allow = r.headers().get("allow").cloned();
        let text = r.text().await.unwrap();
        assert_eq!(status, 405, "{method} {path}: {text}");
        assert!(
            allow.is_some(),
            "{method} {path}: a 405 names the allowed methods"
        );
        let body: Value = serde_json::from_str(&text)
            .unwrap_or_else(|_| panic!("{method} {path}: the 405 answer is not JSON: {text:?}"));
        let word = body["error"].as_str().unwrap_or("");
        assert!(
            !word.is_empty() && word.chars().all(|c| c.is_ascii_lowercase() || c == '_'),
            "{method} {path}: error word: {text}"
        );
        assert!(
            body["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{method} {path}: {text}"
        );
    }
    assert_eq!(snapshot(&http).await, before);
}

/// A write whose body is not declared JSON is refused with 415 and changes nothing: the shape a
/// web page on another site can send without a preflight (`text/plain`, a form, no type) never
/// reaches the ledger; `application/json` with parameters does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_not_declared_json_is_refused_and_changes_nothing() {
    let node = Node::start(&[]).await;
    let http = node.http.clone();
    setup(&http).await;
    let before = snapshot(&http).await;
    let client = reqwest::Client::builder()
        .default_headers(bulwark_harness::bearer_headers(&common::test_token().1))
        .build()
        .expect("a client");
    let body = json_body(json!([good_transfer(500)]));
    let long = format!("text/{}", "x".repeat(5000));
    let declared = [
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        Some("multipart/form-data; boundary=x"),
        Some("application/jsonp"),
        Some(long.as_str()),
        None,
    ];
    for path in ["/v1/transfers", "/v1/accounts", "/v1/cluster/remove"] {
        for content_type in declared {
            let mut request = client
                .post(format!("{}{path}", node.base_url()))
                .header("origin", "http://evil.example")
                .body(body.clone());
            if let Some(t) = content_type {
                request = request.header("content-type", t);
            }
            let r = Http::answer(request.send().await.expect("send"))
                .await
                .unwrap();
            let what = format!("POST {path} as {content_type:?}");
            assert_refused(&what, &r, 415, "unsupported_media_type", "application/json");
            assert!(
                r.text.len() < 400,
                "{what}: the answer echoes the input: {}",
                r.text
            );
        }
    }
    assert_eq!(snapshot(&http).await, before);
    let r = client
        .post(format!("{}/v1/transfers", node.base_url()))
        .header("content-type", "Application/JSON; charset=utf-8")
        .body(body)
        .send()
        .await
        .expect("send");
    let r = Http::answer(r).await.unwrap();
    assert_eq!(r.results(), ["ok"], "{}", r.text);
}

/// 128-bit ids and amounts over HTTP: a UUID-sized id and an amount past `u64::MAX` go in as
/// decimal strings and come back as decimal strings (never as JSON numbers, which a JavaScript
/// client would round); the three `user_data` fields are stored and inherited by a post; a
/// number or string outside the rules is refused with the field's place.
#[tokio::test]
async fn ids_amounts_and_user_data_are_128_bit_and_answered_as_decimal_strings() {
    let node = Node::start(&[]).await;
    let http = node.http.clone();
    // A UUID (as its 128-bit integer) and one past u64::MAX.
    let uuid = "281949768489412648962353822266799178366";
    let big = "18446744073709551616";
    let amount = "100000000000000000000000"; // 10^23, above u64::MAX
    let accounts = json!([
        {"id": uuid, "ledger": 1, "code": 1, "user_data_128": big, "user_data_64": "42", "user_data_32": 7},
        {"id": big, "ledger": 1, "code": 1},
    ]);
    assert_eq!(http.write("/v1/accounts", &accounts).await, ["ok", "ok"]);
    let a = http.get(&format!("/v1/accounts/{uuid}")).await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(a.json["id"], json!(uuid), "{}", a.text);
    assert_eq!(a.json["user_data_128"], json!(big));
    assert_eq!(a.json["user_data_64"], json!("42"));
    assert_eq!(a.json["user_data_32"], json!(7));
    assert_eq!(
        a.json["debits_posted"],
        json!("0"),
        "balances are strings too"
    );
    assert!(a.json["timestamp"].is_string(), "{}", a.text);

    let transfers = json!([
        {"id": big, "debit_account_id": uuid, "credit_account_id": big, "amount": amount,
         "ledger": 1, "code": 1, "flags": ["pending"], "user_data_128": uuid, "user_data_32": 9},
        {"id": uuid, "pending_id": big, "flags": ["post_pending_transfer"]},
    ]);
    assert_eq!(http.write("/v1/transfers", &transfers).await, ["ok", "ok"]);
    let post = http.get(&format!("/v1/transfers/{uuid}")).await;
    assert_eq!(post.json["amount"], json!(amount), "{}", post.text);
    assert_eq!(post.json["pending_id"], json!(big));
    assert_eq!(post.json["debit_account_id"], json!(uuid));
    assert_eq!(
        post.json["user_data_128"],
        json!(uuid),
        "inherited from the pending transfer"
    );
    assert_eq!(post.json["user_data_32"], json!(9));
    let a = http.get(&format!("/v1/accounts/{uuid}")).await;
    assert_eq!(a.json["debits_posted"], json!(amount), "{}", a.text);
    let history = http.get(&format!("/v1/accounts/{big}/transfers")).await;
    assert_eq!(
        history.json["transfers"][1]["amount"],
        json!(amount),
        "{}",
        history.text
    );

    // The same id written as a JSON integer and as a string is one id: the retry exists.
    let again = json!([{"id": 18446744073709551615u64, "ledger": 1, "code": 1}]);
    assert_eq!(http.write("/v1/accounts", &again).await, ["ok"]);
    let again = json!([{"id": "18446744073709551615", "ledger": 1, "code": 1}]);
    assert_eq!(http.write("/v1/accounts", &again).await, ["exists"]);

    let before = http.applied_index().await;
    for (body, word, place) in [
        (
            r#"[{"id":"01","ledger":1,"code":1}]"#,
            "invalid_field",
            "leading zero",
        ),
        (
            r#"[{"id":"+1","ledger":1,"code":1}]"#,
            "invalid_field",
            "digits only",
        ),
        (
            r#"[{"id":-1,"ledger":1,"code":1}]"#,
            "invalid_field",
            "negative",
        ),
        (
            r#"[{"id":18446744073709551616,"ledger":1,"code":1}]"#,
            "invalid_field",
            "decimal string",
        ),
        (
            r#"[{"id":"340282366920938463463374607431768211456","ledger":1,"code":1}]"#,
            "invalid_field",
            "above the largest value",
        ),
        (
            r#"[{"id":1,"ledger":1,"code":1,"user_data_64":"18446744073709551616"}]"#,
            "invalid_field",
            "[0].user_data_64",
        ),
    ] {
        let r = http
            .post_raw("/v1/accounts", body.as_bytes().to_vec())
            .await;
        assert_refused(body, &r, 400, word, place);
    }
    let r = http.get("/v1/accounts/0340").await;
    assert_refused(
        "a path id with a leading zero",
        &r,
        400,
        "invalid_id",
        "leading zero",
    );
    assert_eq!(
        http.applied_index().await,
        before,
        "a refused body changed nothing"
    );
}

/// `GET /v1/accounts/{id}/balances`: an account with `history` answers its balances after every
/// change, oldest first, in pages chained by `next_after`, including a pending transfer's post
/// and void; an account without `history` answers 409, a missing one 404.
#[tokio::test]
async fn balance_history_pages_every_change_of_a_history_account() {
    let node = Node::start(&[]).await;
    let http = node.http.clone();
    let accounts = json!([
        {"id": 1, "ledger": 1, "code": 1, "flags": ["history"]},
        {"id": 2, "ledger": 1, "code": 1},
    ]);
    assert_eq!(http.write("/v1/accounts", &accounts).await, ["ok", "ok"]);
    let transfers = json!([
        {"id": 10, "debit_account_id": 1, "credit_account_id": 2, "amount": 5, "ledger": 1, "code": 1},
        {"id": 11, "debit_account_id": 2, "credit_account_id": 1, "amount": 7, "ledger": 1, "code": 1},
        {"id": 12, "debit_account_id": 1, "credit_account_id": 2, "amount": 3, "ledger": 1, "code": 1, "flags": ["pending"]},
        {"id": 13, "pending_id": 12, "flags": ["void_pending_transfer"]},
    ]);
    assert_eq!(http.write("/v1/transfers", &transfers).await, ["ok"; 4]);
    // (debits_pending, debits_posted, credits_pending, credits_posted) of account 1 after each.
    let expected = [
        ("0", "5", "0", "0"),
        ("0", "5", "0", "7"),
        ("3", "5", "0", "7"),
        ("0", "5", "0", "7"),
    ];
    let mut seen = Vec::new();
    let mut after = String::from("0");
    loop {
        let r = http
            .get(&format!("/v1/accounts/1/balances?limit=3&after={after}"))
            .await;
        assert_eq!(r.status, 200, "{}", r.text);
        for b in r.json["balances"].as_array().expect("a balances array") {
            let field = |name: &str| b[name].as_str().expect("a decimal string").to_string();
            seen.push((
                field("timestamp"),
                field("debits_pending"),
                field("debits_posted"),
                field("credits_pending"),
                field("credits_posted"),
            ));
        }
        match r.json["next_after"].as_str() {
            Some(next) => after = next.to_string(),
            None => break,
        }
    }
    let got: Vec<_> = seen
        .iter()
        .map(|(_, a, b, c, d)| (a.as_str(), b.as_str(), c.as_str(), d.as_str()))
        .collect();
    assert_eq!(got, expected);
    let stamps: Vec<u64> = seen.iter().map(|s| s.0.parse().unwrap()).collect();
    assert!(
        stamps.windows(2).all(|w| w[0] < w[1]),
        "oldest first: {stamps:?}"
    );
    let last = http.transfer(13).await.expect("transfer 13");
    assert_eq!(
        last["timestamp"],
        seen[3].0.as_str(),
        "the void's own timestamp"
    );

    let r = http.get("/v1/accounts/2/balances").await;
    assert_refused(
        "an account without history",
        &r,
        409,
        "history_not_kept",
        "history",
    );
    let r = http.get("/v1/accounts/3/balances").await;
    assert_refused("a missing account", &r, 404, "account_not_found", "3");
    let r = http.get("/v1/accounts/1/balances?limit=0").await;
    assert_refused("a zero limit", &r, 400, "invalid_query", "limit");
    // The cursor is a timestamp written as every other: no sign, no leading zero.
    for after in ["%2B1", "01"] {
        let r = http
            .get(&format!("/v1/accounts/1/balances?after={after}"))
            .await;
        assert_refused(after, &r, 400, "invalid_query", "after");
    }
}

/// An account's history filtered and ordered: only its debits or credits, by code or user data,
/// inside a time window, newest first with `reversed` and `next_before`; every filter also in
/// pages of one.
#[tokio::test]
async fn account_history_filters_sides_fields_windows_and_order() {
    let node = Node::start(&[]).await;
    let http = node.http.clone();
    let accounts = json!([
        {"id": 1, "ledger": 1, "code": 1},
        {"id": 2, "ledger": 1, "code": 1},
    ]);
    assert_eq!(http.write("/v1/accounts", &accounts).await, ["ok", "ok"]);
    let t = |id: u64, dr: u64, cr: u64, code: u64, ud: &str| {
        json!({"id": id, "debit_account_id": dr, "credit_account_id": cr, "amount": id,
               "ledger": 1, "code": code, "user_data_128": ud})
    };
    let transfers = json!([
        t(10, 1, 2, 7, "0"),
        t(11, 2, 1, 7, "99"),
        t(12, 1, 2, 8, "99"),
        t(13, 2, 1, 8, "0"),
        t(14, 1, 2, 7, "0"),
    ]);
    assert_eq!(http.write("/v1/transfers", &transfers).await, ["ok"; 5]);
    let ids = |path: String| {
        let http = http.clone();
        async move {
            // Every page of the query, chained by its cursor; the ids in answer order.
            let mut out = Vec::new();
            let mut cursor = String::new();
            loop {
                let r = http.get(&format!("{path}{cursor}")).await;
                assert_eq!(r.status, 200, "{path}: {}", r.text);
                for t in r.json["transfers"].as_array().expect("transfers") {
                    out.push(t["id"].as_str().expect("an id").parse::<u64>().unwrap());
                }
                if let Some(next) = r.json["next_after"].as_str() {
                    cursor = format!("&after={next}");
                } else if let Some(next) = r.json["next_before"].as_str() {
                    cursor = format!("&before={next}");
                } else {
                    return out;
                }
            }
        }
    };
    let base = "/v1/accounts/1/transfers?limit=1";
    assert_eq!(ids(base.to_string()).await, [10, 11, 12, 13, 14]);
    assert_eq!(
        ids(format!("{base}&reversed=true")).await,
        [14, 13, 12, 11, 10]
    );
    assert_eq!(ids(format!("{base}&side=debits")).await, [10, 12, 14]);
    assert_eq!(
        ids(format!("{base}&side=credits&reversed=true")).await,
        [13, 11]
    );
    assert_eq!(ids(format!("{base}&code=8")).await, [12, 13]);
    assert_eq!(ids(format!("{base}&user_data_128=99")).await, [11, 12]);
    assert_eq!(
        ids(format!("{base}&code=7&side=debits&reversed=true")).await,
        [14, 10]
    );
    // A time window: strictly after transfer 10's timestamp and before 14's.
    let stamp = |id: u64| {
        let http = http.clone();
        async move {
            let t = http.transfer(id).await.expect("the transfer");
            t["timestamp"].as_str().expect("a timestamp").to_string()
        }
    };
    let (from, to) = (stamp(10).await, stamp(14).await);
    let window = format!("/v1/accounts/1/transfers?after={from}&before={to}");
    assert_eq!(ids(window.clone()).await, [11, 12, 13]);
    assert_eq!(
        ids(format!("{window}&reversed=true&limit=10")).await,
        [13, 12, 11]
    );

    let r = http.get("/v1/accounts/1/transfers?side=both").await;
    assert_refused("an unknown side", &r, 400, "invalid_query", "side");
    let r = http
        .get(&format!(
            "/v1/accounts/1/transfers?after={to}&before={from}"
        ))
        .await;
    assert_refused("an empty window", &r, 400, "invalid_query", "must be below");
    let r = http.get("/v1/accounts/1/transfers?user_data_128=01").await;
    assert_refused(
        "a user data with a leading zero",
        &r,
        400,
        "invalid_query",
        "leading zero",
    );
}

/// Every page of a query, chained by its cursor: the ids of what it found, in answer order.
async fn query_ids(http: &Http, path: &str, what: &str, filter: Value) -> Vec<u64> {
    let mut out = Vec::new();
    let mut filter = filter;
    loop {
        let r = http.post(path, &filter).await;
        assert_eq!(r.status, 200, "{path} {filter}: {}", r.text);
        for item in r.json[what].as_array().expect("a page") {
            out.push(item["id"].as_str().expect("an id").parse().unwrap());
        }
        if let Some(next) = r.json["next_timestamp_min"].as_str() {
            filter["timestamp_min"] = json!(next);
        } else if let Some(next) = r.json["next_timestamp_max"].as_str() {
            filter["timestamp_max"] = json!(next);
        } else {
            return out;
        }
    }
}

#[tokio::test]
async fn queries_find_accounts_and_transfers_by_fields_and_time_either_way() {
    // Checkpoints every 2 transfers: the queries read the checkpoint's index and the memtables'.
    let node = Node::start(&["--checkpoint-transfers", "2"]).await;
    let http = node.http.clone();
    let accounts = json!([
        {"id": 1, "ledger": 1, "code": 1, "user_data_64": 5},
        {"id": 2, "ledger": 1, "code": 2, "user_data_64": 5},
        {"id": 3, "ledger": 2, "code": 1},
        {"id": 4, "ledger": 2, "code": 1, "user_data_128": "340282366920938463463374607431768211455"},
    ]);
    assert_eq!(http.write("/v1/accounts", &accounts).await, ["ok"; 4]);
    let t = |id: u64, dr: u64, cr: u64, ledger: u64, code: u64, ud: &str| {
        json!({"id": id, "debit_account_id": dr, "credit_account_id": cr, "amount": 1,
               "ledger": ledger, "code": code, "user_data_128": ud})
    };
    for batch in [
        json!([t(10, 1, 2, 1, 7, "0"), t(11, 3, 4, 2, 7, "99")]),
        json!([t(12, 2, 1, 1, 8, "99"), t(13, 4, 3, 2, 8, "0")]),
        json!([t(14, 1, 2, 1, 7, "99")]),
    ] {
        let n = batch.as_array().unwrap().len();
        assert_eq!(http.write("/v1/transfers", &batch).await, vec!["ok"; n]);
    }
    let transfers = |filter: Value| query_ids(&http, "/v1/transfers/query", "transfers", filter);
    assert_eq!(transfers(json!({"limit": 2})).await, [10, 11, 12, 13, 14]);
    assert_eq!(transfers(json!({"ledger": 2})).await, [11, 13]);
    assert_eq!(
        transfers(json!({"ledger": 1, "code": 7, "limit": 1})).await,
        [10, 14]
    );
    assert_eq!(
        transfers(json!({"user_data_128": "99", "reversed": true, "limit": 1})).await,
        [14, 12, 11]
    );
    assert_eq!(transfers(json!({"code": 8, "ledger": 1})).await, [12]);
    assert!(transfers(json!({"code": 9})).await.is_empty());
    // An inclusive window: from transfer 11's timestamp to 13's.
    let stamp = |id: u64| {
        let http = http.clone();
        async move { http.transfer(id).await.expect("the transfer")["timestamp"].clone() }
    };
    let (from, to) = (stamp(11).await, stamp(13).await);
    let window = json!({"timestamp_min": from, "timestamp_max": to});
    assert_eq!(transfers(window.clone()).await, [11, 12, 13]);
    let mut reversed = window.clone();
    reversed["reversed"] = json!(true);
    reversed["limit"] = json!(1);
    assert_eq!(transfers(reversed).await, [13, 12, 11]);

    let accounts = |filter: Value| query_ids(&http, "/v1/accounts/query", "accounts", filter);
    assert_eq!(accounts(json!({})).await, [1, 2, 3, 4]);
    assert_eq!(accounts(json!({"user_data_64": 5})).await, [1, 2]);
    assert_eq!(
        accounts(json!({"ledger": 2, "code": 1, "reversed": true, "limit": 1})).await,
        [4, 3]
    );
    let max = "340282366920938463463374607431768211455";
    assert_eq!(accounts(json!({"user_data_128": max})).await, [4]);

    let refused = |body: &'static str| {
        let http = http.clone();
        async move { http.post_raw("/v1/transfers/query", body).await }
    };
    let r = refused(r#"{"ledgr": 1}"#).await;
    assert_refused("an unknown field", &r, 400, "unknown_field", "ledgr");
    let r = refused(r#"{"timestamp_min": 5, "timestamp_max": 4}"#).await;
    assert_refused(
        "an empty window",
        &r,
        400,
        "invalid_query",
        "timestamp_min (5)",
    );
    let r = refused(r#"{"limit": 0}"#).await;
    assert_refused("a zero limit", &r, 400, "invalid_query", "limit");
    let r = refused(r#"[{"ledger": 1}]"#).await;
    assert_refused(
        "an array",
        &r,
        400,
        "invalid_body",
        "JSON object of query fields",
    );
    let r = refused(r#"{"user_data_128": "01"}"#).await;
    assert_refused("a leading zero", &r, 400, "invalid_field", "user_data_128");
    let r = http.get("/v1/transfers/query").await;
    assert_refused("a GET", &r, 405, "method_not_allowed", "GET");
}

#[tokio::test]
async fn the_change_feed_gives_every_balance_change_in_order_and_waits_when_caught_up() {
    let node = Node::start(&["--checkpoint-transfers", "3"]).await;
    let http = node.http.clone();
    let accounts = json!([{"id": 1, "ledger": 1, "code": 1}, {"id": 2, "ledger": 1, "code": 1}]);
    assert_eq!(http.write("/v1/accounts", &accounts).await, ["ok", "ok"]);
    let t = |id: u64, amount: u64, flags: &[&str], pending: u64, timeout: u64| {
        json!({"id": id, "debit_account_id": if pending == 0 { 1 } else { 0 },
               "credit_account_id": if pending == 0 { 2 } else { 0 }, "amount": amount,
               "ledger": if pending == 0 { 1 } else { 0 }, "code": if pending == 0 { 1 } else { 0 },
               "flags": flags, "pending_id": pending, "timeout": timeout})
    };
    let batch = json!([
        t(10, 5, &[], 0, 0),
        t(11, 7, &["pending"], 0, 1),
        t(12, 3, &["pending"], 0, 0),
        t(13, 3, &["post_pending_transfer"], 12, 0),
        t(14, 2, &["pending"], 0, 0),
        t(15, 0, &["void_pending_transfer"], 14, 0),
    ]);
    assert_eq!(http.write("/v1/transfers", &batch).await, ["ok"; 6]);
    // Transfer 11 expires a second after it was made, with no write to trigger it.
    tokio::time::sleep(Duration::from_millis(2500)).await;

    let mut feed = Vec::new();
    let mut after = "0".to_string();
    loop {
        let r = http
            .get(&format!("/v1/changes?after={after}&limit=2"))
            .await;
        assert_eq!(r.status, 200, "{}", r.text);
        let page = r.json["changes"].as_array().expect("changes").clone();
        assert!(page.len() <= 2);
        if page.is_empty() {
            assert_eq!(r.json["next_after"].as_str(), Some(after.as_str()));
            break;
        }
        after = r.json["next_after"]
            .as_str()
            .expect("next_after")
            .to_string();
        assert_eq!(
            page.last().unwrap()["timestamp"].as_str(),
            Some(after.as_str())
        );
        feed.extend(page);
    }
    let seen: Vec<(String, u64)> = feed
        .iter()
        .map(|c| {
            let id = c["transfer"]["id"].as_str().unwrap().parse().unwrap();
            (c["type"].as_str().unwrap().to_string(), id)
        })
        .collect();
    let expected = [
        ("single_phase", 10),
        ("two_phase_pending", 11),
        ("two_phase_pending", 12),
        ("two_phase_posted", 13),
        ("two_phase_pending", 14),
        ("two_phase_voided", 15),
        ("two_phase_expired", 11),
    ];
    let expected: Vec<(String, u64)> = expected
        .iter()
        .map(|(k, id)| (k.to_string(), *id))
        .collect();
    assert_eq!(seen, expected);
    // Both accounts' balances right after each event: the single transfer, then the expiry.
    let balances = |c: &Value, side: &str| {
        let a = &c[side];
        [
            "debits_pending",
            "debits_posted",
            "credits_pending",
            "credits_posted",
        ]
        .map(|f| a[f].as_str().unwrap().parse::<u64>().unwrap())
    };
    assert_eq!(feed[0]["debit_account"]["id"], "1");
    assert_eq!(balances(&feed[0], "debit_account"), [0, 5, 0, 0]);
    assert_eq!(balances(&feed[0], "credit_account"), [0, 0, 0, 5]);
    assert_eq!(balances(&feed[1], "debit_account"), [7, 5, 0, 0]);
    assert_eq!(balances(&feed[3], "credit_account"), [0, 0, 7, 8]);
    assert_eq!(balances(&feed[6], "debit_account"), [0, 8, 0, 0]);
    assert_eq!(balances(&feed[6], "credit_account"), [0, 0, 0, 8]);
    let stamp = |c: &Value| c["timestamp"].as_str().unwrap().parse::<u64>().unwrap();
    assert!(feed.windows(2).all(|w| stamp(&w[0]) < stamp(&w[1])));
    assert!(
        stamp(&feed[6])
            > feed[6]["transfer"]["timestamp"]
                .as_str()
                .unwrap()
                .parse()
                .unwrap()
    );

    // Caught up: a request that waits is answered by the next write, made after it began.
    let waiting = {
        let (http, after) = (http.clone(), after.clone());
        tokio::spawn(async move {
            http.get(&format!("/v1/changes?after={after}&wait_ms=20000"))
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        http.write("/v1/transfers", &json!([t(16, 1, &[], 0, 0)]))
            .await,
        ["ok"]
    );
    let r = waiting.await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["changes"][0]["transfer"]["id"], "16", "{}", r.text);

    let r = http.get("/v1/changes?wait_ms=30001").await;
    assert_refused("a long wait", &r, 400, "invalid_query", "wait_ms");
    let r = http.get("/v1/changes?after=-1").await;
    assert_refused("a negative after", &r, 400, "invalid_query", "after");
}

/// Runs a client command against `addr` that must exit 0; its stdout and stderr.
async fn cli_ok(addr: &str, args: &[&str]) -> (String, String) {
    let mut all = args.to_vec();
    all.extend(["--addr", addr]);
    let (code, out, err) = cli(&all).await;
    assert_eq!(code, 0, "bulwark {all:?}: {out} {err}");
    (out, err)
}

/// The words of a `more: bulwark ...` line after `bulwark` (the last line of `out`), checked to
/// be one.
fn more_line(out: &str) -> Vec<String> {
    let last = out.lines().last().unwrap_or_default();
    let rest = last
        .strip_prefix("more: bulwark ")
        .unwrap_or_else(|| panic!("a `more:` line last: {out}"));
    rest.split_whitespace().map(str::to_string).collect()
}

/// `bulwark query` pages with the answer's cursor and prints the command of the next page;
/// `bulwark changes` prints the feed, one line per event, and `--follow` prints events as they
/// come.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_and_changes_commands_page_and_print() {
    let node = Node::start(&[]).await;
    let http = node.http.clone();
    let addr = node.base_url();
    let addr = addr.as_str();
    let accounts = json!([
        {"id": 1, "ledger": 1, "code": 10}, {"id": 2, "ledger": 1, "code": 10},
        {"id": 3, "ledger": 2, "code": 20}, {"id": 4, "ledger": 2, "code": 20},
        {"id": 5, "ledger": 2, "code": 30},
    ]);
    assert_eq!(http.write("/v1/accounts", &accounts).await, ["ok"; 5]);
    let t = |id: u64, debit: u64, credit: u64, ledger: u64, code: u64, flags: &[&str]| {
        json!({"id": id, "debit_account_id": debit, "credit_account_id": credit, "amount": id - 99,
               "ledger": ledger, "code": code, "flags": flags})
    };
    let post = json!({"id": 105, "pending_id": 104, "flags": ["post_pending_transfer"]});
    let batch = json!([
        t(100, 1, 2, 1, 1, &[]),
        t(101, 3, 4, 2, 2, &[]),
        t(102, 4, 3, 2, 3, &[]),
        t(103, 3, 5, 2, 2, &[]),
        t(104, 1, 2, 1, 1, &["pending"]),
        post,
    ]);
    assert_eq!(http.write("/v1/transfers", &batch).await, ["ok"; 6]);

    // --json, a page of one at a time, each next page asked for with the answer's cursor.
    let mut args: Vec<String> = [
        "query",
        "transfers",
        "--ledger",
        "2",
        "--limit",
        "1",
        "--json",
    ]
    .map(str::to_string)
    .to_vec();
    let mut ids = Vec::new();
    for _ in 0..10 {
        let (out, _) = cli_ok(addr, &args.iter().map(String::as_str).collect::<Vec<_>>()).await;
        let page: Value = serde_json::from_str(out.trim()).expect("--json prints the answer");
        for t in page["transfers"].as_array().expect("transfers") {
            ids.push(t["id"].as_str().unwrap().to_string());
        }
        let Some(next) = page["next_timestamp_min"].as_str() else {
            break;
        };
        args.truncate(7);
        args.extend(["--timestamp-min".to_string(), next.to_string()]);
    }
    assert_eq!(ids, ["101", "102", "103"]);

    // The table: its rows, and the next page's command, which runs and gives the rest.
    let (out, _) = cli_ok(
        addr,
        &["query", "transfers", "--ledger", "2", "--limit", "2"],
    )
    .await;
    let (json_out, _) = cli_ok(
        addr,
        &[
            "query",
            "transfers",
            "--ledger",
            "2",
            "--limit",
            "2",
            "--json",
        ],
    )
    .await;
    let page: Value = serde_json::from_str(json_out.trim()).unwrap();
    let cursor = page["next_timestamp_min"].as_str().expect("a cursor");
    assert_eq!(out.lines().count(), 4, "a header, two rows, `more:`: {out}");
    assert!(out.lines().nth(1).unwrap().contains(" 101 "), "{out}");
    assert!(out.lines().nth(2).unwrap().contains(" 102 "), "{out}");
    let more = more_line(&out);
    let expected = format!("query transfers --ledger 2 --timestamp-min {cursor} --limit 2");
    assert_eq!(more.join(" "), expected, "{out}");
    let (out, _) = cli_ok(addr, &more.iter().map(String::as_str).collect::<Vec<_>>()).await;
    assert!(out.lines().nth(1).unwrap().contains(" 103 "), "{out}");
    assert_eq!(out.lines().last(), Some("(1 transfers)"), "{out}");
    // Reversed: newest first, and the cursor is the window's upper end.
    let (out, _) = cli_ok(
        addr,
        &[
            "query",
            "transfers",
            "--ledger",
            "2",
            "--limit",
            "2",
            "--reversed",
        ],
    )
    .await;
    assert!(out.lines().nth(1).unwrap().contains(" 103 "), "{out}");
    let more = more_line(&out).join(" ");
    assert!(
        more.contains("--timestamp-max ") && more.ends_with(" --reversed"),
        "{out}"
    );
    assert!(!more.contains("--timestamp-min"), "{out}");

    let (out, _) = cli_ok(addr, &["query", "accounts", "--code", "20", "--json"]).await;
    let page: Value = serde_json::from_str(out.trim()).unwrap();
    let ids: Vec<&str> = page["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["3", "4"]);
    let (out, _) = cli_ok(addr, &["query", "accounts", "--code", "20"]).await;
    assert!(out.lines().nth(2).unwrap().contains(" 4 "), "{out}");
    assert_eq!(out.lines().last(), Some("(2 accounts)"), "{out}");

    changes_command_prints_and_follows(&http, addr).await;
}

/// The second half of [`query_and_changes_commands_page_and_print`]: `bulwark changes`.
async fn changes_command_prints_and_follows(http: &Http, addr: &str) {
    use tokio::io::AsyncBufReadExt;
    let events = |out: &str| -> Vec<(String, String)> {
        out.lines()
            .map(|line| {
                let e: Value = serde_json::from_str(line).expect("one JSON event a line");
                (text_of(&e["transfer"]["id"]), text_of(&e["type"]))
            })
            .collect()
    };
    let (out, err) = cli_ok(addr, &["changes", "--json"]).await;
    let single = |id: &str| (id.to_string(), "single_phase".to_string());
    let expected = [
        single("100"),
        single("101"),
        single("102"),
        single("103"),
        ("104".to_string(), "two_phase_pending".to_string()),
        ("105".to_string(), "two_phase_posted".to_string()),
    ];
    assert_eq!(events(&out), expected, "{out}");
    assert!(!err.contains("more:"), "a page that is not full: {err}");
    let first: Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    assert_eq!(first["credit_account"]["credits_posted"], "1", "{out}");

    // A full page: its lines, then the command of the next page (on stderr with --json).
    let (out, _) = cli_ok(addr, &["changes", "--limit", "2"]).await;
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 4, "a header, two events, `more:`: {out}");
    assert!(
        lines[1].contains("single_phase") && lines[1].contains(" 100 "),
        "{out}"
    );
    assert!(
        lines[1].contains("1 (1/0)") && lines[1].contains("2 (0/1)"),
        "{out}"
    );
    let second_ts = lines[2].split_whitespace().next().unwrap();
    let more = more_line(&out).join(" ");
    assert_eq!(
        more,
        format!("changes --after {second_ts} --limit 2"),
        "{out}"
    );
    let (out, err) = cli_ok(
        addr,
        &["changes", "--limit", "2", "--after", second_ts, "--json"],
    )
    .await;
    assert_eq!(events(&out), expected[2..4], "{out}");
    assert!(err.contains("more: bulwark changes --after "), "{err}");

    // --follow: the feed so far, then a transfer made while it waits.
    let mut follower = tokio::process::Command::new(common::bin())
        .args([
            "changes", "--follow", "--json", "--limit", "4", "--addr", addr,
        ])
        .env("BULWARK_TOKEN", &common::test_token().1)
        .env_remove("BULWARK_TOKEN_FILE")
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start bulwark changes --follow");
    let mut lines = tokio::io::BufReader::new(follower.stdout.take().unwrap()).lines();
    let mut seen = String::new();
    let caught_up = read_until(&mut lines, &mut seen, "105").await;
    assert_eq!(events(&caught_up), expected, "{caught_up}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let late = json!([{"id": 106, "debit_account_id": 5, "credit_account_id": 4, "amount": 1,
                       "ledger": 2, "code": 2}]);
    assert_eq!(http.write("/v1/transfers", &late).await, ["ok"]);
    let all = read_until(&mut lines, &mut seen, "106").await;
    let mut with_late = expected.to_vec();
    with_late.push(single("106"));
    assert_eq!(events(&all), with_late, "{all}");
    follower.kill().await.expect("stop the follower");
}

/// Reads a follower's lines into `seen` until the event of transfer `id` is among them (30 s
/// at most); all the lines read so far.
async fn read_until(
    lines: &mut tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
    seen: &mut String,
    id: &str,
) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !seen.contains(&format!("\"id\":\"{id}\"")) {
        let line = tokio::time::timeout_at(deadline, lines.next_line())
            .await
            .unwrap_or_else(|_| panic!("no event of transfer {id} in 30 s: {seen}"))
            .expect("read the follower's output")
            .unwrap_or_else(|| panic!("the follower stopped: {seen}"));
        seen.push_str(&line);
        seen.push('\n');
    }
    seen.clone()
}

/// A JSON string's text, or the JSON of anything else.
fn text_of(v: &Value) -> String {
    v.as_str().map_or_else(|| v.to_string(), str::to_string)
}

/// A memtable past what one read builds of its read indexes (`MAX_LAZY_BUILD_STEP` transfers)
/// is indexed a step per read: an account's history, a query by a field and the change feed each
/// still answer in one request, the API reading again until the node has built what it needs.
#[tokio::test]
async fn reads_of_a_memtable_past_one_build_step_answer_in_one_request() {
    let node = Node::start(&[]).await;
    let http = node.http.clone();
    let accounts = json!([{"id": 1, "ledger": 1, "code": 1}, {"id": 2, "ledger": 1, "code": 1}]);
    assert_eq!(http.write("/v1/accounts", &accounts).await, ["ok", "ok"]);
    let step = bulwark_limits::MAX_LAZY_BUILD_STEP as u64;
    let batch = bulwark_limits::MAX_BATCH_EVENTS as u64;
    let mut next = 1;
    while next <= step + 1 {
        let transfers: Vec<Value> = (next..next + batch)
            .map(|id| json!({"id": id, "debit_account_id": 1, "credit_account_id": 2, "amount": 1, "ledger": 1, "code": 1}))
            .collect();
        let results = http.write("/v1/transfers", &Value::from(transfers)).await;
        assert!(results.iter().all(|r| r == "ok"));
        next += batch;
    }
    let newest = next - 1;
    let ids = |r: &Resp, list: &str| -> Vec<u64> {
        assert_eq!(r.status, 200, "{}", r.text);
        let items = r.json[list].as_array().expect("a list");
        items
            .iter()
            .map(|t| t["id"].as_str().expect("an id").parse().unwrap())
            .collect()
    };
    let r = http
        .get("/v1/accounts/2/transfers?reversed=true&limit=2")
        .await;
    assert_eq!(ids(&r, "transfers"), [newest, newest - 1]);
    let filter = json!({"code": 1, "reversed": true, "limit": 2});
    let r = http.post("/v1/transfers/query", &filter).await;
    assert_eq!(ids(&r, "transfers"), [newest, newest - 1]);
    let r = http.get("/v1/changes?after=0&limit=2").await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["changes"].as_array().expect("changes").len(), 2);
}
