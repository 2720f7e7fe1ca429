//! What operators watch a cluster with, checked: the Prometheus alert rules of
//! `deploy/prometheus` pass `promtool check rules` and `promtool test rules` with their
//! fixtures; the Grafana dashboard of `deploy/grafana` is structurally sound (no JSON schema of
//! Grafana dashboards is available offline: the check is ours, of what Grafana needs to load and
//! draw it); every metric the rules and the dashboard name has samples on a running cluster's
//! leader; and the JSON logs of a node carry the request id each answer names.
//!
//! promtool comes from Debian's `prometheus` package (.ci/run installs it). Under `CI=true` a
//! missing promtool fails the test; elsewhere that part is skipped with a message.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{Cluster, Http, Node};
use serde_json::Value;

fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy")
}

fn promtool() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join("promtool"))
        .find(|p| p.is_file())
}

fn run_promtool(promtool: &Path, args: &[&str]) {
    let out = std::process::Command::new(promtool)
        .args(args)
        .current_dir(deploy().join("prometheus"))
        .output()
        .expect("run promtool");
    assert!(
        out.status.success(),
        "promtool {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn alert_rules_pass_promtool_with_their_fixtures() {
    let Some(promtool) = promtool() else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "promtool is missing under CI=true (.ci/run installs Debian's prometheus)"
        );
        eprintln!("SKIPPED: promtool is not installed (apt-get install prometheus)");
        return;
    };
    run_promtool(&promtool, &["check", "rules", "alerts.yml"]);
    run_promtool(&promtool, &["test", "rules", "alerts.test.yml"]);
}

fn dashboard() -> Value {
    let text = std::fs::read_to_string(deploy().join("grafana/bulwark.json")).expect("dashboard");
    serde_json::from_str(&text).expect("the dashboard is JSON")
}

/// What Grafana needs to import and draw the dashboard: a schema version, a uid and title, a
/// datasource variable every query panel uses, unique panel ids, a place on the 24-column grid
/// for each panel, and a PromQL expression in every target.
#[test]
fn the_dashboard_is_sound() {
    let d = dashboard();
    assert!(d["schemaVersion"].as_u64().is_some_and(|v| v >= 30));
    assert!(d["uid"].as_str().is_some_and(|s| !s.is_empty()));
    assert!(d["title"].as_str().is_some_and(|s| !s.is_empty()));
    let vars = d["templating"]["list"].as_array().expect("templating.list");
    assert!(
        vars.iter().any(|v| v["type"] == "datasource"
            && v["name"] == "datasource"
            && v["query"] == "prometheus"),
        "no Prometheus datasource variable"
    );
    let panels = d["panels"].as_array().expect("panels");
    let mut ids = BTreeSet::new();
    let mut queries = 0;
    for p in panels {
        let title = p["title"].as_str().unwrap_or_default();
        assert!(!title.is_empty(), "a panel without a title: {p}");
        let id = p["id"].as_u64().expect("a panel id");
        assert!(ids.insert(id), "panel id {id} twice ({title})");
        let grid = &p["gridPos"];
        let [h, w, x, _y] = ["h", "w", "x", "y"].map(|k| {
            grid[k]
                .as_u64()
                .unwrap_or_else(|| panic!("{title}: gridPos.{k}"))
        });
        assert!(h > 0 && w > 0 && x + w <= 24, "{title}: gridPos {grid}");
        if p["type"] == "row" {
            continue;
        }
        assert!(
            p["type"].as_str().is_some_and(|t| !t.is_empty()),
            "{title}: no type"
        );
        assert_eq!(
            p["datasource"]["uid"], "${datasource}",
            "{title}: datasource"
        );
        let targets = p["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{title}: no query");
        let mut refs = BTreeSet::new();
        for t in targets {
            assert!(
                t["expr"].as_str().is_some_and(|e| !e.trim().is_empty()),
                "{title}: {t}"
            );
            assert!(
                refs.insert(t["refId"].as_str().expect("refId")),
                "{title}: refId twice"
            );
            assert_eq!(
                t["datasource"]["uid"], "${datasource}",
                "{title}: target datasource"
            );
            queries += 1;
        }
    }
    assert!(queries >= 20, "{queries} queries");
}

/// The metric names (`bulwark_...`) in `text`.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("bulwark_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
            .unwrap_or(tail.len());
        names.insert(tail[..end].to_string());
        rest = &tail[end..];
    }
    names
}

/// Every name of a metric in an `expr:` of the rules, and in a query of the dashboard.
fn names_used() -> BTreeSet<String> {
    let rules = std::fs::read_to_string(deploy().join("prometheus/alerts.yml")).expect("rules");
    let mut names = BTreeSet::new();
    for line in rules.lines() {
        if let Some(expr) = line.trim().strip_prefix("expr:") {
            names.extend(metric_names(expr));
        }
    }
    let rule_names = names.len();
    let d = dashboard();
    for p in d["panels"].as_array().expect("panels") {
        for t in p["targets"].as_array().into_iter().flatten() {
            names.extend(metric_names(t["expr"].as_str().unwrap_or_default()));
        }
    }
    for v in d["templating"]["list"].as_array().expect("templating") {
        names.extend(metric_names(v["definition"].as_str().unwrap_or_default()));
    }
    assert!(rule_names >= 10 && names.len() > rule_names, "{names:?}");
    names
}

/// The names having a sample in a `/metrics` answer.
fn sampled(metrics: &str) -> BTreeSet<String> {
    metrics
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_string)
        .collect()
}

/// A three-node cluster relaying to a processor (none listens there: its breaker's metrics show
/// all the same), so that the leader has every family: per follower, per processor, per
/// certificate.
#[tokio::test(flavor = "multi_thread")]
async fn every_metric_the_rules_and_dashboard_name_is_on_a_running_nodes_metrics() {
    let used = names_used();
    let cluster = Cluster::start(3, &["--processor", "http://127.0.0.1:9"]).await;
    let leader = cluster.wait_leader(Duration::from_secs(30)).await;
    let http = &cluster.node(leader).http;
    let mut missing = used.clone();
    for _ in 0..200 {
        let text = http.get("/metrics").await.text;
        let present = sampled(&text);
        missing = used.difference(&present).cloned().collect();
        if missing.is_empty() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "named in deploy/ but without samples on the leader's /metrics: {missing:?}\n{}",
        http.get("/metrics").await.text
    );
}

/// The log lines of `node`'s current run that are JSON objects, parsed; panics on a line that
/// starts like one and does not parse.
fn json_lines(node: &Node) -> Vec<Value> {
    let log = node.last_log();
    let lines: Vec<Value> = log
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert!(lines.len() >= 3, "few JSON lines in:\n{log}");
    lines
}

#[tokio::test(flavor = "multi_thread")]
async fn json_logs_carry_the_request_id_the_answer_names() {
    let env = [("RUST_LOG".to_string(), "info,bulwark_api=debug".to_string())];
    let node = Node::start_with_env(&["--log-format", "json"], &env).await;
    // Without a token: refused, and the refusal is logged within the request.
    let anonymous = Http::with_token(node.base_url(), None);
    let body = br#"{"accounts":[]}"#.to_vec();
    let given = "obs-test-42";
    let refused = anonymous
        .try_post_with("/v1/accounts", body.clone(), ("x-request-id", given))
        .await
        .expect("an answer");
    assert_eq!(refused.status, 401, "{}", refused.text);
    assert_eq!(refused.header("x-request-id"), Some(given));
    // No id, or one not taken as it is (a space): a new one, 16 hex digits.
    let fresh = anonymous
        .try_post("/v1/accounts", body.clone())
        .await
        .unwrap();
    let made = fresh.header("x-request-id").expect("an id").to_string();
    assert!(
        made.len() == 16 && made.chars().all(|c| c.is_ascii_hexdigit()),
        "{made}"
    );
    let odd = anonymous
        .try_post_with("/v1/accounts", body, ("x-request-id", "not one"))
        .await
        .unwrap();
    let replaced = odd.header("x-request-id").expect("an id");
    assert!(replaced != "not one" && replaced != made, "{replaced}");
    let ok = node.http.get("/v1/status").await;
    assert_eq!(ok.status, 200);
    assert!(ok.header("x-request-id").is_some());

    let mut found = None;
    for _ in 0..100 {
        let lines = json_lines(&node);
        found = lines.into_iter().find(|l| {
            l["fields"]["message"] == "request refused" && l["span"]["request_id"] == given
        });
        if found.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let line = found.unwrap_or_else(|| panic!("no refusal line of {given}:\n{}", node.last_log()));
    assert_eq!(line["fields"]["status"], 401, "{line}");
    assert_eq!(line["span"]["name"], "request", "{line}");
    // The leader change of a node that elects itself, with its numbers.
    let lines = json_lines(&node);
    let change = lines
        .iter()
        .find(|l| l["fields"]["message"] == "leader changed")
        .unwrap_or_else(|| panic!("no leader change line:\n{}", node.last_log()));
    assert_eq!(change["fields"]["leader"], 1, "{change}");
    assert!(
        change["fields"]["term"].as_u64().is_some_and(|t| t >= 1),
        "{change}"
    );
    assert_eq!(change["level"], "INFO", "{change}");
}
