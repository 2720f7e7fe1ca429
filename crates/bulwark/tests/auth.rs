//! API tokens and roles, end to end on real processes: every route under every role (none,
//! read, write, admin), refused requests changing nothing, revocation, the per-token rate, the
//! CLI, and tokens replicated to every member of a cluster.

mod common;

use std::time::Duration;

use common::{cli, cli_with_token, test_token, Cluster, Http, Node};
use serde_json::{json, Value};

/// A token of `role` made through the API with the tests' admin token.
async fn token(admin: &Http, name: &str, role: &str) -> (String, String) {
    let r = admin
        .post("/v1/tokens", &json!({"name": name, "role": role}))
        .await;
    assert_eq!(r.status, 200, "create a {role} token: {}", r.text);
    let text = r.json["token"]
        .as_str()
        .expect("the token's text")
        .to_string();
    let id = r.json["id"].as_str().expect("the token's id").to_string();
    (id, text)
}

#[derive(Clone, Copy, PartialEq, PartialOrd, Debug)]
enum Caller {
    Nobody,
    Read,
    Write,
    Admin,
}

/// One request of the matrix: what it needs, and its body (written by `body(n)`, where `n` tells
/// callers apart so that what each one may have created can be looked for afterwards).
struct Route {
    method: &'static str,
    path: String,
    needs: Caller,
    body: fn(u64) -> Option<Value>,
}

fn routes() -> Vec<Route> {
    let route = |method, path: &str, needs, body| Route {
        method,
        path: path.to_string(),
        needs,
        body,
    };
    let none: fn(u64) -> Option<Value> = |_| None;
    vec![
        route("GET", "/health/live", Caller::Nobody, none),
        route("GET", "/health/ready", Caller::Nobody, none),
        route("GET", "/v1/accounts/1", Caller::Read, none),
        route("GET", "/v1/transfers/1", Caller::Read, none),
        route("GET", "/v1/accounts/1/transfers", Caller::Read, none),
        route("GET", "/v1/status", Caller::Read, none),
        route("GET", "/metrics", Caller::Read, none),
        route("GET", "/v1/no-such-route", Caller::Read, none),
        route("POST", "/v1/accounts", Caller::Write, |n| {
            Some(json!([{"id": 100 + n, "ledger": 1, "code": 1}]))
        }),
        route("POST", "/v1/transfers", Caller::Write, |n| {
            Some(
                json!([{"id": 200 + n, "debit_account_id": 1, "credit_account_id": 2,
                         "amount": 1, "ledger": 1, "code": 1}]),
            )
        }),
        // Changes the membership cannot take (node 9 does not exist; node 1 is a member): an
        // admin is answered by the membership rules, everyone else by the token check.
        route("POST", "/v1/cluster/promote", Caller::Admin, |_| {
            Some(json!({"ids": [9]}))
        }),
        route("POST", "/v1/cluster/remove", Caller::Admin, |_| {
            Some(json!({"ids": [9]}))
        }),
        route("POST", "/v1/cluster/learners", Caller::Admin, |_| {
            Some(json!({"id": 1, "peer_addr": "127.0.0.1:1", "http_addr": "127.0.0.1:2"}))
        }),
        route("GET", "/v1/tokens", Caller::Admin, none),
        route("POST", "/v1/tokens", Caller::Admin, |n| {
            Some(json!({"name": format!("made-by-{n}"), "role": "read"}))
        }),
        route(
            "POST",
            "/v1/tokens/00000000000000ab/revoke",
            Caller::Admin,
            none,
        ),
        route("GET", "/v1/audit", Caller::Admin, none),
    ]
}

async fn send(http: &Http, route: &Route, n: u64) -> common::Resp {
    match route.method {
        "GET" => http.get(&route.path).await,
        _ => {
            let body = (route.body)(n).map_or_else(Vec::new, |b| b.to_string().into_bytes());
            http.post_raw(&route.path, body).await
        }
    }
}

#[tokio::test]
async fn every_route_answers_each_role_as_it_should_and_refusals_change_nothing() {
    let node = Node::start(&[]).await;
    let admin = node.http.clone();
    let accounts = json!([{"id": 1, "ledger": 1, "code": 1}, {"id": 2, "ledger": 1, "code": 1}]);
    assert_eq!(admin.write("/v1/accounts", &accounts).await, ["ok", "ok"]);
    let (_, read) = token(&admin, "reader", "read").await;
    let (_, write) = token(&admin, "writer", "write").await;
    let callers = [
        (Caller::Nobody, Http::with_token(node.base_url(), None)),
        (Caller::Read, Http::with_token(node.base_url(), Some(&read))),
        (
            Caller::Write,
            Http::with_token(node.base_url(), Some(&write)),
        ),
        (Caller::Admin, admin.clone()),
    ];
    for route in routes() {
        for (n, (caller, http)) in callers.iter().enumerate() {
            let r = send(http, &route, n as u64).await;
            let what = format!(
                "{} {} as {caller:?}: {} {}",
                route.method, route.path, r.status, r.text
            );
            if *caller >= route.needs {
                assert!(r.status != 401 && r.status != 403, "{what}");
                assert!(r.status < 500, "{what}");
            } else if *caller == Caller::Nobody {
                assert_eq!(r.status, 401, "{what}");
                assert_eq!(r.json["error"], "unauthorized", "{what}");
                assert!(r.header("www-authenticate").is_some(), "{what}");
            } else {
                assert_eq!(r.status, 403, "{what}");
                assert_eq!(r.json["error"], "forbidden", "{what}");
            }
        }
    }
    // What the refused callers sent was not applied; what the allowed ones sent was.
    for (n, caller) in [Caller::Nobody, Caller::Read, Caller::Write, Caller::Admin]
        .into_iter()
        .enumerate()
    {
        let allowed = caller >= Caller::Write;
        let n = n as u64;
        assert_eq!(
            admin.account(100 + n).await.is_some(),
            allowed,
            "account by {caller:?}"
        );
        assert_eq!(
            admin.transfer(200 + n).await.is_some(),
            allowed,
            "transfer by {caller:?}"
        );
    }
    let tokens = admin.get("/v1/tokens").await.json["tokens"].clone();
    let names: Vec<&str> = tokens
        .as_array()
        .expect("a list")
        .iter()
        .filter_map(|t| t["name"].as_str())
        .filter(|n| n.starts_with("made-by-"))
        .collect();
    assert_eq!(names, ["made-by-3"], "only the admin made a token");
}

#[tokio::test]
async fn a_revoked_or_forged_token_is_refused_and_the_audit_trail_says_who_did_what() {
    let node = Node::start(&[]).await;
    let admin = node.http.clone();
    let (id, text) = token(&admin, "short-lived", "write").await;
    let holder = Http::with_token(node.base_url(), Some(&text));
    assert_eq!(holder.get("/v1/status").await.status, 200);
    // Same id, another secret; and a token that is not one at all.
    let forged = format!(
        "{}{}",
        &text[..text.len() - 1],
        if text.ends_with('0') { '1' } else { '0' }
    );
    for bad in [forged.as_str(), "bulwark_0123", "admin"] {
        let r = Http::with_token(node.base_url(), Some(bad))
            .get("/v1/status")
            .await;
        assert_eq!(r.status, 401, "{bad}: {}", r.text);
    }
    let r = admin.post_raw(&format!("/v1/tokens/{id}/revoke"), "").await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = holder.get("/v1/status").await;
    assert_eq!(r.status, 401, "a revoked token: {}", r.text);
    let r = admin.post_raw(&format!("/v1/tokens/{id}/revoke"), "").await;
    assert_eq!(
        (r.status, r.json["error"].as_str()),
        (404, Some("token_not_found"))
    );
    let bad_id = admin.post_raw("/v1/tokens/+123/revoke", "").await;
    assert_eq!(
        (bad_id.status, bad_id.json["error"].as_str()),
        (400, Some("invalid_id"))
    );

    let trail = admin.get("/v1/audit").await;
    assert_eq!(trail.status, 200, "{}", trail.text);
    let records = trail.json["records"].as_array().expect("records").clone();
    let admin_id = &test_token().1["bulwark_".len().."bulwark_".len() + 16];
    let actions: Vec<(String, String)> = records
        .iter()
        .map(|r| {
            (
                r["action"].as_str().unwrap().into(),
                r["result"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        actions,
        [
            ("admin_token_bootstrapped".into(), "ok".into()),
            ("token_created".into(), "ok".into()),
            ("token_revoked".into(), "ok".into()),
            ("token_revoked".into(), "token_not_found".into()),
        ],
        "{records:?}"
    );
    assert_eq!(records[1]["actor"], format!("token {admin_id}"));
    assert_eq!(records[1]["detail"]["id"], id.as_str());
}

#[tokio::test]
async fn tokens_survive_restarts_and_a_token_past_its_rate_waits() {
    let mut node = Node::start(&["--token-rate-limit", "5"]).await;
    let (_, text) = token(&node.http, "app", "read").await;
    node.sigterm();
    node.restart().await;
    let app = Http::with_token(node.base_url(), Some(&text));
    let mut limited = None;
    for _ in 0..50 {
        let r = app.get("/v1/status").await;
        if r.status == 429 {
            limited = Some(r);
            break;
        }
        assert_eq!(r.status, 200, "{}", r.text);
    }
    let r = limited.expect("50 requests at once exceed 5 a second");
    assert_eq!(r.json["error"], "rate_limited");
    assert!(r
        .header("retry-after")
        .is_some_and(|s| s.parse::<u64>().is_ok_and(|s| s >= 1)));
    // Another token has its own rate.
    assert_eq!(node.http.get("/v1/status").await.status, 200);
    // A kill -9 loses nothing either: the token comes back from the log.
    node.kill9();
    node.restart().await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(app.get("/v1/status").await.status, 200);
}

#[tokio::test]
async fn the_cli_creates_lists_and_revokes_tokens() {
    let node = Node::start(&[]).await;
    let addr = node.base_url();
    let (code, out, err) = cli(&[
        "token", "create", "--name", "ci", "--role", "write", "--addr", &addr,
    ])
    .await;
    assert_eq!(code, 0, "{out}{err}");
    let text = out
        .lines()
        .last()
        .expect("the token's line")
        .trim()
        .to_string();
    let (id, _) = text
        .strip_prefix("bulwark_")
        .and_then(|t| t.split_once('_'))
        .expect("a token");
    let (code, out, err) = cli(&["token", "list", "--addr", &addr]).await;
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains(id) && out.contains("ci") && out.contains("write"),
        "{out}"
    );
    let (code, out, err) = cli_with_token(
        &[
            "account", "create", "--id", "7", "--ledger", "1", "--code", "1", "--addr", &addr,
        ],
        Some(&text),
    )
    .await;
    assert_eq!(code, 0, "{out}{err}");
    let (code, _, err) = cli_with_token(&["token", "list", "--addr", &addr], Some(&text)).await;
    assert_eq!(code, 3, "a write token may not list tokens: {err}");
    assert!(err.contains("forbidden"), "{err}");
    let (code, _, err) = cli(&["token", "revoke", id, "--addr", &addr]).await;
    assert_eq!(code, 0, "{err}");
    let (code, _, err) =
        cli_with_token(&["account", "get", "7", "--addr", &addr], Some(&text)).await;
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("unauthorized"), "{err}");
    let (code, _, err) = cli_with_token(&["account", "get", "7", "--addr", &addr], None).await;
    assert_eq!(code, 3, "{err}");
    assert!(
        err.contains("authorization: Bearer"),
        "the refusal says how to send a token: {err}"
    );
    let (code, out, err) = cli(&["audit", "--addr", &addr, "--action", "token_revoked"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(id) && !out.contains("token_created"), "{out}");
}

#[tokio::test]
async fn a_token_made_on_a_follower_works_on_every_node_until_it_is_revoked() {
    let cluster = Cluster::start(3, &[]).await;
    let leader = cluster.wait_leader(Duration::from_secs(30)).await;
    let follower = cluster
        .nodes
        .iter()
        .find(|n| n.id != leader)
        .expect("a follower");
    let (id, text) = token(&follower.http, "everywhere", "read").await;
    for node in &cluster.nodes {
        let http = Http::with_token(node.http.base.clone(), Some(&text));
        let ok =
            bulwark_harness::wait_for(Duration::from_secs(10), Duration::from_millis(50), || {
                let http = http.clone();
                async move {
                    let r = http.get("/v1/accounts/1?consistency=stale").await;
                    (r.status == 404).then_some(()).ok_or(r.text)
                }
            })
            .await;
        ok.unwrap_or_else(|last| panic!("node {} never took the token: {last}", node.id));
    }
    let r = follower
        .http
        .post_raw(&format!("/v1/tokens/{id}/revoke"), "")
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    cluster.wait_converged(Duration::from_secs(30)).await;
    for node in &cluster.nodes {
        let http = Http::with_token(node.http.base.clone(), Some(&text));
        let r = http.get("/v1/accounts/1?consistency=stale").await;
        assert_eq!(r.status, 401, "node {}: {}", node.id, r.text);
    }
}
