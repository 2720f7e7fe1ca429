//! The OpenAPI 3.1 document (`crates/api/openapi.json`, served at `GET /v1/openapi.json`)
//! against a real node: every operation of the document is driven by a table of example
//! requests (successes and refusals: bad JSON, an unknown field, no token, a token of too low a
//! role, unknown ids, a token past its rate, ...), and every answer must have a status the
//! document gives that operation, the headers it says are required, and a body valid under its
//! schema for that status and content type (`jsonschema`, JSON Schema 2020-12, OpenAPI 3.1's
//! dialect). The document's structure, and that its paths are exactly the router's, are checked
//! by the unit tests of `crates/api/src/openapi.rs`.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use common::{free_port, test_token, Node};
use serde_json::{json, Value};

/// The document as checked in; the node must serve exactly this.
const CHECKED_IN: &str = include_str!("../../api/openapi.json");

/// Operations no example answers with a 2xx, and why (their refusals are still checked).
const NO_SUCCESS_EXAMPLE: [(&str, &str); 1] = [(
    "promoteLearners",
    "a promotion that succeeds needs two more live nodes (the voters must stay odd)",
)];

/// The per-token rate the node runs with: low enough that a token reaches it in a few dozen
/// requests; the other callers wait out a 429 they did not ask for (`Retry-After`) and resend.
const TOKEN_RATE: &str = "50";

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Caller {
    Nobody,
    Read,
    Write,
    Admin,
    /// A read token used only to reach its rate.
    Hammer,
    /// A token's shape with an id and secret the node never made.
    Forged,
}

#[derive(Clone)]
enum Body {
    None,
    Json(Value),
    /// Bytes and the content type sent with them (none: no header).
    Raw(Vec<u8>, Option<&'static str>),
}

#[derive(Clone)]
struct Example {
    op: &'static str,
    what: String,
    caller: Caller,
    path: String,
    body: Body,
    status: u16,
    /// The error word of a refusal.
    error: Option<&'static str>,
}

fn ex(op: &'static str, what: &str, caller: Caller, path: &str, status: u16) -> Example {
    Example {
        op,
        what: what.to_string(),
        caller,
        path: path.to_string(),
        body: Body::None,
        status,
        error: None,
    }
}

impl Example {
    fn json(mut self, body: Value) -> Example {
        self.body = Body::Json(body);
        self
    }

    fn raw(mut self, body: impl Into<Vec<u8>>, content_type: Option<&'static str>) -> Example {
        self.body = Body::Raw(body.into(), content_type);
        self
    }

    fn error(mut self, word: &'static str) -> Example {
        self.error = Some(word);
        self
    }
}

/// An answer as read off the wire.
struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    bytes: Vec<u8>,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.bytes).unwrap_or(Value::Null)
    }
}

/// Sends examples to one node and checks every answer against the document.
struct Checker {
    doc: Value,
    base: String,
    clients: BTreeMap<Caller, reqwest::Client>,
    /// operationId -> (path template, method).
    operations: BTreeMap<String, (String, String)>,
    validators: HashMap<String, jsonschema::Validator>,
    /// (operationId, status) of every answer checked.
    seen: BTreeSet<(String, u16)>,
    answers: usize,
}

fn client(token: Option<&str>) -> reqwest::Client {
    reqwest::Client::builder()
        .default_headers(
            token
                .map(bulwark_harness::bearer_headers)
                .unwrap_or_default(),
        )
        .timeout(Duration::from_secs(60))
        .no_proxy()
        .build()
        .expect("an HTTP client")
}

/// `path` (without its query) fits `template` (`/v1/accounts/{id}`).
fn fits(template: &str, path: &str) -> bool {
    let path = path.split('?').next().unwrap_or("");
    let (t, p): (Vec<&str>, Vec<&str>) = (template.split('/').collect(), path.split('/').collect());
    t.len() == p.len()
        && t.iter().zip(&p).all(|(t, p)| {
            if t.starts_with('{') {
                !p.is_empty()
            } else {
                t == p
            }
        })
}

/// `content-type` without its parameters, lowercase.
fn essence(value: &str) -> String {
    value
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

impl Checker {
    fn new(doc: Value, base: String) -> Checker {
        let mut operations = BTreeMap::new();
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for (method, operation) in item.as_object().expect("a path item") {
                if let Some(id) = operation["operationId"].as_str() {
                    operations.insert(id.to_string(), (path.clone(), method.clone()));
                }
            }
        }
        let mut clients = BTreeMap::new();
        clients.insert(Caller::Nobody, client(None));
        clients.insert(Caller::Admin, client(Some(&test_token().1)));
        clients.insert(
            Caller::Forged,
            client(Some(&format!("bulwark_{:016x}_{}", 1, "0".repeat(64)))),
        );
        Checker {
            doc,
            base,
            clients,
            operations,
            validators: HashMap::new(),
            seen: BTreeSet::new(),
            answers: 0,
        }
    }

    fn operation(&self, id: &str) -> (String, String, Value) {
        let (path, method) = self
            .operations
            .get(id)
            .unwrap_or_else(|| panic!("no operation {id} in the document"));
        let operation = self.doc["paths"][path][method].clone();
        (path.clone(), method.clone(), operation)
    }

    /// `value`, or what its `$ref` names.
    fn deref<'a>(&'a self, value: &'a Value) -> &'a Value {
        match value.get("$ref").and_then(Value::as_str) {
            Some(r) => self
                .doc
                .pointer(r.strip_prefix('#').expect("a local $ref"))
                .unwrap_or_else(|| panic!("{r} does not resolve")),
            None => value,
        }
    }

    /// Validates `instance` against `schema` (a schema of the document, whose `$ref`s point into
    /// it): the schema is compiled as the document's root, so every `#/components/...` resolves.
    fn validate(&mut self, schema: &Value, instance: &Value) -> Result<(), String> {
        let key = schema.to_string();
        if !self.validators.contains_key(&key) {
            let mut root = self.doc.clone();
            match schema.get("$ref") {
                Some(r) if schema.as_object().is_some_and(|o| o.len() == 1) => {
                    root["$ref"] = r.clone();
                }
                _ => {
                    root["x-inline-schema"] = schema.clone();
                    root["$ref"] = json!("#/x-inline-schema");
                }
            }
            let validator = jsonschema::options()
                .with_draft(jsonschema::Draft::Draft202012)
                .build(&root)
                .unwrap_or_else(|e| panic!("the schema {schema} does not compile: {e}"));
            self.validators.insert(key.clone(), validator);
        }
        let errors: Vec<String> = self.validators[&key]
            .iter_errors(instance)
            .map(|e| format!("at `{}`: {e}", e.instance_path()))
            .collect();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors.join("\n  "))
        }
    }

    async fn send(&self, example: &Example, method: &str) -> Answer {
        let client = &self.clients[&example.caller];
        let url = format!("{}{}", self.base, example.path);
        let method = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).expect("method");
        let mut request = client.request(method, url);
        match &example.body {
            Body::None => {}
            Body::Json(v) => {
                request = request
                    .header("content-type", "application/json")
                    .body(v.to_string());
            }
            Body::Raw(bytes, content_type) => {
                if let Some(ct) = content_type {
                    request = request.header("content-type", *ct);
                }
                request = request.body(bytes.clone());
            }
        }
        let response = request
            .send()
            .await
            .unwrap_or_else(|e| panic!("{} {}: {e}", example.op, example.what));
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.expect("the body").to_vec();
        Answer {
            status,
            headers,
            bytes,
        }
    }

    /// Sends `example`, checks its status and error word, and the answer against the document.
    async fn check(&mut self, example: Example) -> Answer {
        let (template, method, _) = self.operation(example.op);
        let what = format!(
            "{} ({} {} as {:?}: {})",
            example.op,
            method.to_uppercase(),
            example.path,
            example.caller,
            example.what
        );
        assert!(
            fits(&template, &example.path),
            "{what}: the path does not fit {template}"
        );
        let answer = loop {
            let answer = self.send(&example, &method).await;
            self.conforms(example.op, &answer, &what);
            // A 429 the example did not ask for: the caller's rate; wait as told and resend.
            if answer.status == 429 && example.status != 429 {
                let seconds = answer.headers["retry-after"]
                    .to_str()
                    .ok()
                    .and_then(|s| s.parse::<u64>().ok())
                    .expect("Retry-After in seconds");
                tokio::time::sleep(Duration::from_secs(seconds)).await;
                continue;
            }
            break answer;
        };
        let body = String::from_utf8_lossy(&answer.bytes);
        assert_eq!(answer.status, example.status, "{what}: {body}");
        if let Some(word) = example.error {
            assert_eq!(answer.json()["error"], word, "{what}: {body}");
        }
        answer
    }

    /// The answer's status is one the document gives the operation, with its required headers,
    /// and a body of a documented content type valid under that type's schema.
    fn conforms(&mut self, op: &str, answer: &Answer, what: &str) {
        let (_, _, operation) = self.operation(op);
        let status = answer.status.to_string();
        let body = String::from_utf8_lossy(&answer.bytes).into_owned();
        let response = operation["responses"]
            .get(&status)
            .or_else(|| operation["responses"].get("default"))
            .unwrap_or_else(|| panic!("{what}: status {status} is not in the document: {body}"));
        let response = self.deref(response).clone();
        self.answers += 1;
        self.seen.insert((op.to_string(), answer.status));

        let empty = serde_json::Map::new();
        for (name, header) in response["headers"].as_object().unwrap_or(&empty) {
            let header = self.deref(header).clone();
            match answer.headers.get(name.as_str()) {
                None => assert!(
                    header["required"] != true,
                    "{what}: {status} must carry the header {name}"
                ),
                Some(value) => {
                    let value = Value::String(value.to_str().expect("ASCII").to_string());
                    if let Err(e) = self.validate(&header["schema"], &value) {
                        panic!("{what}: header {name}: {value} is not as documented:\n  {e}");
                    }
                }
            }
        }

        let content = response["content"].as_object().unwrap_or(&empty);
        let declared = answer
            .headers
            .get("content-type")
            .map(|v| essence(v.to_str().expect("ASCII")));
        // Without a content type, a recipient may take the body as application/octet-stream
        // (RFC 9110, 8.3).
        let media = declared
            .clone()
            .unwrap_or_else(|| "application/octet-stream".to_string());
        let Some(entry) = content.get(&media) else {
            panic!(
                "{what}: {status} answered as {declared:?}, the document gives {:?}: {body}",
                content.keys().collect::<Vec<_>>()
            )
        };
        let instance = match media.as_str() {
            "application/json" => serde_json::from_slice(&answer.bytes)
                .unwrap_or_else(|e| panic!("{what}: {status} is not JSON ({e}): {body}")),
            "text/plain" => Value::String(body.clone()),
            _ => {
                assert!(!answer.bytes.is_empty(), "{what}: an empty {media} body");
                return;
            }
        };
        if let Err(e) = self.validate(&entry["schema"], &instance) {
            panic!(
                "{what}: the {status} answer does not fit the document's schema:\n  {e}\n{body}"
            );
        }
    }

    /// Sends `example` (of a token within its rate) until the node answers 429, checking every
    /// answer on the way; at most `tries` sends.
    async fn until_rate_limited(&mut self, example: Example, tries: usize) {
        let (_, method, _) = self.operation(example.op);
        for _ in 0..tries {
            let answer = self.send(&example, &method).await;
            self.conforms(example.op, &answer, &example.what);
            if answer.status == 429 {
                assert_eq!(answer.json()["error"], "rate_limited");
                return;
            }
            assert_eq!(
                answer.status,
                200,
                "{}",
                String::from_utf8_lossy(&answer.bytes)
            );
        }
        panic!(
            "{} requests never reached a rate of {TOKEN_RATE} a second",
            tries
        );
    }
}

/// The table of examples, in order (each may rely on the ones before: accounts, transfers,
/// the learner added then removed). `doomed` is a token for the revocation to revoke. One
/// example a line, as a table.
#[rustfmt::skip]
fn table(doomed: &str) -> Vec<Example> {
    use Caller::{Admin, Read, Write};
    let account = |id: Value, extra: Value| {
        let mut a = json!({"id": id, "ledger": 1, "code": 1});
        a.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        a
    };
    let mut huge = b"[".to_vec();
    huge.resize((8 << 20) + 1024, b' ');
    huge.push(b']');
    let revoke = format!("/v1/tokens/{doomed}/revoke");
    vec![
        // Accounts and transfers.
        ex("createAccounts", "three accounts, ids as numbers and strings", Write, "/v1/accounts", 200).json(json!([
            account(json!(1), json!({"flags": ["history"]})),
            account(json!("2"), json!({"user_data_128": "7", "user_data_64": 8, "user_data_32": 9})),
            account(json!(3), json!({})),
        ])),
        ex("createAccounts", "a processor's account", Write, "/v1/accounts", 200).json(json!([account(json!(9), json!({"flags": ["external"]}))])),
        ex("createTransfers", "two payments (refused by the processor: dead letters)", Write, "/v1/transfers", 200).json(json!([
            {"id": 20, "debit_account_id": 1, "credit_account_id": 9, "amount": 4, "ledger": 1, "code": 1},
            {"id": 21, "debit_account_id": 1, "credit_account_id": 9, "amount": 5, "ledger": 1, "code": 1},
        ])),
        ex("createAccounts", "a retry: exists", Write, "/v1/accounts", 200).json(json!([account(json!(3), json!({}))])),
        ex("createAccounts", "ack=all", Write, "/v1/accounts?ack=all", 200).json(json!([account(json!(4), json!({}))])),
        ex("createAccounts", "an unknown ack", Write, "/v1/accounts?ack=some", 400).json(json!([account(json!(5), json!({}))])).error("invalid_query"),
        ex("createAccounts", "an empty batch", Write, "/v1/accounts", 400).json(json!([])).error("empty_batch"),
        ex("createAccounts", "id 0", Write, "/v1/accounts", 400).json(json!([account(json!(0), json!({}))])).error("invalid_id"),
        ex("createAccounts", "an unknown flag", Write, "/v1/accounts", 400).json(json!([account(json!(5), json!({"flags": ["sideways"]}))])).error("unknown_flag"),
        ex("createAccounts", "a body over 8 MiB", Write, "/v1/accounts", 413).raw(huge, Some("application/json")).error("body_too_large"),
        ex("createAccounts", "no content type", Write, "/v1/accounts", 415).raw("[]", None).error("unsupported_media_type"),
        ex("createTransfers", "two transfers", Write, "/v1/transfers", 200).json(json!([
            {"id": 10, "debit_account_id": 1, "credit_account_id": 2, "amount": "5", "ledger": 1, "code": 1},
            {"id": "11", "debit_account_id": "2", "credit_account_id": "1", "amount": 3, "ledger": 1, "code": 2},
        ])),
        ex("createTransfers", "a pending transfer", Write, "/v1/transfers", 200).json(json!([
            {"id": 12, "debit_account_id": 1, "credit_account_id": 3, "amount": 2, "ledger": 1, "code": 1,
             "flags": ["pending"], "timeout": 3600},
        ])),
        ex("createTransfers", "a refused transfer: no such account", Write, "/v1/transfers", 200).json(json!([
            {"id": 13, "debit_account_id": 1, "credit_account_id": 99, "amount": 1, "ledger": 1, "code": 1},
        ])),
        ex("createTransfers", "no amount", Write, "/v1/transfers", 400).json(json!([
            {"id": 14, "debit_account_id": 1, "credit_account_id": 2, "ledger": 1, "code": 1},
        ])).error("missing_field"),
        ex("createTransfers", "an id above 2^128-1", Write, "/v1/transfers", 400).json(json!([
            {"id": "340282366920938463463374607431768211456", "debit_account_id": 1, "credit_account_id": 2, "amount": 1, "ledger": 1, "code": 1},
        ])).error("invalid_field"),
        ex("createTransfers", "an id with a leading zero", Write, "/v1/transfers", 400).json(json!([
            {"id": "015", "debit_account_id": 1, "credit_account_id": 2, "amount": 1, "ledger": 1, "code": 1},
        ])).error("invalid_field"),
        ex("createTransfers", "an object, not an array", Write, "/v1/transfers", 400).json(json!({"id": 15})).error("invalid_body"),
        // Lookups.
        ex("getAccount", "an account with history", Read, "/v1/accounts/1", 200),
        ex("getAccount", "stale", Read, "/v1/accounts/2?consistency=stale", 200),
        ex("getAccount", "an unknown id", Read, "/v1/accounts/999", 404).error("account_not_found"),
        ex("getAccount", "a leading zero", Read, "/v1/accounts/01", 400).error("invalid_id"),
        ex("getAccount", "an unknown consistency", Read, "/v1/accounts/1?consistency=eventual", 400).error("invalid_query"),
        ex("getTransfer", "a transfer", Read, "/v1/transfers/10", 200),
        ex("getTransfer", "a pending transfer", Read, "/v1/transfers/12", 200),
        ex("getTransfer", "an unknown id", Read, "/v1/transfers/999", 404).error("transfer_not_found"),
        ex("getTransfer", "not a number", Read, "/v1/transfers/abc", 400).error("invalid_id"),
        // History.
        ex("getAccountTransfers", "an account's transfers (with balances)", Read, "/v1/accounts/1/transfers", 200),
        ex("getAccountTransfers", "a page of one", Read, "/v1/accounts/1/transfers?limit=1", 200),
        ex("getAccountTransfers", "newest first", Read, "/v1/accounts/1/transfers?limit=1&reversed=true", 200),
        ex("getAccountTransfers", "filtered", Read, "/v1/accounts/2/transfers?side=credits&code=1&user_data_128=0&user_data_64=0&user_data_32=0&after=0&before=18446744073709551615&consistency=stale", 200),
        ex("getAccountTransfers", "an unknown account", Read, "/v1/accounts/999/transfers", 404).error("account_not_found"),
        ex("getAccountTransfers", "an empty window", Read, "/v1/accounts/1/transfers?after=5&before=5", 400).error("invalid_query"),
        ex("getAccountTransfers", "limit 0", Read, "/v1/accounts/1/transfers?limit=0", 400).error("invalid_query"),
        ex("getAccountBalances", "balances after each change", Read, "/v1/accounts/1/balances", 200),
        ex("getAccountBalances", "a page of one", Read, "/v1/accounts/1/balances?limit=1&after=0", 200),
        ex("getAccountBalances", "an account without history", Read, "/v1/accounts/2/balances", 409).error("history_not_kept"),
        ex("getAccountBalances", "an unknown account", Read, "/v1/accounts/999/balances", 404).error("account_not_found"),
        // Queries.
        ex("queryAccounts", "every account", Read, "/v1/accounts/query", 200).json(json!({})),
        ex("queryAccounts", "a page of one", Read, "/v1/accounts/query", 200).json(json!({"ledger": 1, "limit": 1})),
        ex("queryAccounts", "newest first", Read, "/v1/accounts/query?consistency=stale", 200).json(json!({"ledger": 1, "limit": 1, "reversed": true})),
        ex("queryAccounts", "by user data", Read, "/v1/accounts/query", 200).json(json!({"user_data_128": "7", "user_data_64": "8", "user_data_32": 9, "code": 1, "timestamp_min": 0, "timestamp_max": "18446744073709551615"})),
        ex("queryAccounts", "an array", Read, "/v1/accounts/query", 400).json(json!([])).error("invalid_body"),
        ex("queryAccounts", "an inverted window", Read, "/v1/accounts/query", 400).json(json!({"timestamp_min": "5", "timestamp_max": "4"})).error("invalid_query"),
        ex("queryAccounts", "a negative ledger", Read, "/v1/accounts/query", 400).json(json!({"ledger": -1})).error("invalid_field"),
        ex("queryTransfers", "every transfer", Read, "/v1/transfers/query", 200).json(json!({})),
        ex("queryTransfers", "a page of one", Read, "/v1/transfers/query", 200).json(json!({"code": 1, "limit": 1})),
        ex("queryTransfers", "limit 0", Read, "/v1/transfers/query", 400).json(json!({"limit": 0})).error("invalid_query"),
        // The change feed.
        ex("getChanges", "from the start", Read, "/v1/changes", 200),
        ex("getChanges", "a page of one", Read, "/v1/changes?after=0&limit=1&consistency=stale", 200),
        ex("getChanges", "caught up: an empty page after a short wait", Read, "/v1/changes?after=18446744073709551615&wait_ms=10", 200),
        ex("getChanges", "a wait too long", Read, "/v1/changes?wait_ms=30001", 400).error("invalid_query"),
        ex("getChanges", "a negative after", Read, "/v1/changes?after=-1", 400).error("invalid_query"),
        // Operations.
        ex("getStatus", "a single node", Read, "/v1/status", 200),
        ex("getMetrics", "the metrics", Read, "/metrics", 200),
        ex("getLiveness", "live", Caller::Nobody, "/health/live", 200),
        ex("getReadiness", "ready", Caller::Nobody, "/health/ready", 200),
        ex("getOpenApi", "this document", Caller::Nobody, "/v1/openapi.json", 200),
        ex("getWhoami", "a read token", Read, "/v1/whoami", 200),
        ex("getWhoami", "an admin token", Admin, "/v1/whoami", 200),
        // The web console's files: public, and nothing but its own.
        ex("getConsole", "the page", Caller::Nobody, "/", 200),
        ex("getConsoleFile", "its script", Caller::Nobody, "/console/app.js", 200),
        ex("getConsoleFile", "its stylesheet", Caller::Nobody, "/console/console.css", 200),
        ex("getConsoleFile", "no such file", Caller::Nobody, "/console/nope.js", 404).error("not_found"),
        // Cluster membership: a learner that never answers is added, refused a promotion (two
        // voters), shown in the status, and removed.
        ex("addLearner", "a learner", Admin, "/v1/cluster/learners", 200).json(json!({"id": 9, "peer_addr": "127.0.0.1:1", "http_addr": "127.0.0.1:2"})),
        ex("addLearner", "a member again", Admin, "/v1/cluster/learners", 409).json(json!({"id": 9, "peer_addr": "127.0.0.1:1", "http_addr": "127.0.0.1:2"})).error("membership_refused"),
        ex("addLearner", "not an address", Admin, "/v1/cluster/learners", 400).json(json!({"id": 10, "peer_addr": "nowhere", "http_addr": "127.0.0.1:2"})).error("invalid_field"),
        ex("addLearner", "no http_addr", Admin, "/v1/cluster/learners", 400).json(json!({"id": 10, "peer_addr": "127.0.0.1:1"})).error("missing_field"),
        ex("getStatus", "with a learner", Read, "/v1/status", 200),
        ex("promoteLearners", "two voters", Admin, "/v1/cluster/promote", 409).json(json!({"ids": [9]})).error("membership_refused"),
        ex("promoteLearners", "not a learner", Admin, "/v1/cluster/promote", 409).json(json!({"ids": [42]})).error("membership_refused"),
        ex("removeMembers", "the learner", Admin, "/v1/cluster/remove", 200).json(json!({"ids": [9]})),
        ex("removeMembers", "not a member", Admin, "/v1/cluster/remove", 409).json(json!({"ids": [42]})).error("membership_refused"),
        ex("removeMembers", "ids not a list", Admin, "/v1/cluster/remove", 400).json(json!({"ids": 9})).error("invalid_field"),
        // Tokens.
        ex("listTokens", "every token", Admin, "/v1/tokens", 200),
        ex("createToken", "a read token", Admin, "/v1/tokens", 200).json(json!({"name": "openapi-reader", "role": "read"})),
        ex("createToken", "a name with a space", Admin, "/v1/tokens", 400).json(json!({"name": "bad name", "role": "read"})).error("invalid_field"),
        ex("createToken", "an unknown role", Admin, "/v1/tokens", 400).json(json!({"name": "x", "role": "root"})).error("invalid_field"),
        ex("revokeToken", "a token", Admin, &revoke, 200),
        ex("revokeToken", "a token revoked before", Admin, &revoke, 404).error("token_not_found"),
        ex("revokeToken", "not a token id", Admin, "/v1/tokens/+123/revoke", 400).error("invalid_id"),
        // Backups and the audit trails.
        ex("getBackupSnapshot", "a snapshot", Admin, "/v1/backup/snapshot", 200),
        ex("recordBackup", "a backup", Admin, "/v1/backup/record", 200).json(json!({"backup": "b-1", "applied_index": 5, "target": "/backups"})),
        ex("recordBackup", "an empty name", Admin, "/v1/backup/record", 400).json(json!({"backup": "", "applied_index": 5, "target": "/backups"})).error("invalid_field"),
        ex("getAudit", "the trail", Admin, "/v1/audit", 200),
        ex("getAudit", "a page of one", Admin, "/v1/audit?limit=1", 200),
        ex("getAudit", "a cursor that is not one", Admin, "/v1/audit?after=yesterday", 400).error("invalid_after"),
        ex("getAudit", "limit 0", Admin, "/v1/audit?limit=0", 400).error("invalid_limit"),
        ex("getLocalAudit", "the refusals", Admin, "/v1/audit/local", 200),
        ex("getLocalAudit", "a page of one", Admin, "/v1/audit/local?skip=1&limit=1", 200),
        ex("getLocalAudit", "limit 0", Admin, "/v1/audit/local?limit=0", 400).error("invalid_limit"),
    ]
}

/// The dead-letter queue's examples, once payments 20 and 21 are dead.
#[rustfmt::skip]
fn dead_letter_table() -> Vec<Example> {
    use Caller::{Admin, Write};
    vec![
        ex("listDeadPayments", "both", Admin, "/v1/outbox/dead", 200),
        ex("listDeadPayments", "a page of one", Admin, "/v1/outbox/dead?limit=1&after=20", 200),
        ex("listDeadPayments", "limit 0", Admin, "/v1/outbox/dead?limit=0", 400).error("invalid_limit"),
        ex("retryDeadPayment", "a write token", Write, "/v1/outbox/dead/20/retry", 403).error("forbidden"),
        ex("retryDeadPayment", "payment 20", Admin, "/v1/outbox/dead/20/retry", 200),
        ex("retryDeadPayment", "no such payment", Admin, "/v1/outbox/dead/77/retry", 404).error("payment_not_found"),
        ex("retryDeadPayment", "not an id", Admin, "/v1/outbox/dead/x/retry", 400).error("invalid_id"),
        ex("discardDeadPayment", "payment 21", Admin, "/v1/outbox/dead/21/discard", 200),
        ex("discardDeadPayment", "payment 21 again", Admin, "/v1/outbox/dead/21/discard", 404).error("payment_not_found"),
    ]
}

/// Waits until the dead-letter queue holds `n` payments.
async fn wait_dead_letters(base: &str, n: usize) {
    let token = &test_token().1;
    let url = format!("{base}/v1/outbox/dead");
    bulwark_harness::wait_for(Duration::from_secs(60), Duration::from_millis(100), || {
        let url = url.clone();
        async move {
            let r = client(Some(token))
                .get(url)
                .send()
                .await
                .map_err(|e| e.to_string())?;
            let v: Value = r.json().await.map_err(|e| e.to_string())?;
            let dead = v["payments"].as_array().map_or(0, Vec::len);
            (dead == n).then_some(()).ok_or(format!("{dead} dead"))
        }
    })
    .await
    .expect("the refused payments dead-lettered");
}

/// The refusals every operation can be asked for the same way, made from its first example:
/// no token (401), a token below its role (403), a body that is not JSON or holds an unknown
/// field (400), a body not declared JSON (415), an unknown query parameter (400).
fn refusals(checker: &Checker, examples: &[Example]) -> Vec<Example> {
    let mut made = Vec::new();
    let mut done = BTreeSet::new();
    for first in examples {
        if !done.insert(first.op) {
            continue;
        }
        let (_, _, operation) = checker.operation(first.op);
        let responses = &operation["responses"];
        let like = |what: &str, caller: Caller, status: u16, word: &'static str| {
            let mut e = first.clone();
            e.what = what.to_string();
            e.caller = caller;
            e.status = status;
            e.error = Some(word);
            e
        };
        let role = operation["x-bulwark-role"]
            .as_str()
            .expect("x-bulwark-role");
        if role != "none" {
            made.push(like("no token", Caller::Nobody, 401, "unauthorized"));
        }
        if role == "write" || role == "admin" {
            made.push(like("a read token", Caller::Read, 403, "forbidden"));
        }
        if role == "admin" {
            made.push(like("a write token", Caller::Write, 403, "forbidden"));
        }
        if operation.get("requestBody").is_some() {
            let Body::Json(body) = &first.body else {
                panic!("{}: its first example has no JSON body", first.op)
            };
            // The good body cut short of its last bracket.
            let text = body.to_string();
            let cut = text[..text.len() - 1].to_string();
            made.push(
                like("bad JSON", first.caller, 400, "malformed_json")
                    .raw(cut, Some("application/json")),
            );
            let mut body = body.clone();
            let object = match &mut body {
                Value::Array(items) => items[0].as_object_mut(),
                other => other.as_object_mut(),
            };
            object
                .expect("an object")
                .insert("colour".into(), json!("red"));
            made.push(like("an unknown field", first.caller, 400, "unknown_field").json(body));
        }
        if responses.get("415").is_some() {
            let Body::Json(body) = &first.body else {
                panic!("{}: its first example has no JSON body", first.op)
            };
            made.push(
                like(
                    "a text/plain body",
                    first.caller,
                    415,
                    "unsupported_media_type",
                )
                .raw(body.to_string(), Some("text/plain")),
            );
        }
        let takes_query = operation["parameters"]
            .as_array()
            .is_some_and(|ps| ps.iter().any(|p| checker.deref(p)["in"] == "query"));
        if takes_query {
            let mut e = like(
                "an unknown query parameter",
                first.caller,
                400,
                "invalid_query",
            );
            let join = if e.path.contains('?') { '&' } else { '?' };
            e.path = format!("{}{join}colour=red", e.path);
            made.push(e);
        }
    }
    made
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operation_of_the_openapi_document_answers_as_it_says() {
    let peer = format!("127.0.0.1:{}", free_port());
    // A processor that refuses every payment: the dead-letter queue gets what its routes need.
    let processor = bulwark_processor::start(
        "127.0.0.1:0".parse().expect("an address"),
        bulwark_processor::Config {
            refuse_rate: 1.0,
            ..Default::default()
        },
    )
    .await
    .expect("a stand-in processor");
    let url = processor.url();
    let node = Node::start(&[
        "--peer-listen",
        &peer,
        "--token-rate-limit",
        TOKEN_RATE,
        "--processor",
        &url,
    ])
    .await;
    let base = node.base_url();

    // The document is served without a token, as checked in.
    let served = client(None)
        .get(format!("{base}/v1/openapi.json"))
        .send()
        .await
        .expect("GET /v1/openapi.json");
    assert_eq!(served.status(), 200);
    assert_eq!(served.headers()["content-type"], "application/json");
    let served = served.text().await.expect("the document");
    assert!(
        served == CHECKED_IN,
        "the served document is not crates/api/openapi.json"
    );
    let doc: Value = serde_json::from_str(&served).expect("JSON");
    let mut checker = Checker::new(doc, base.clone());

    // Every component schema compiles as JSON Schema 2020-12.
    let schemas: Vec<String> = checker.doc["components"]["schemas"]
        .as_object()
        .expect("schemas")
        .keys()
        .cloned()
        .collect();
    for name in &schemas {
        let schema = json!({ "$ref": format!("#/components/schemas/{name}") });
        let _ = checker.validate(&schema, &Value::Null);
    }

    bulwark_harness::wait_for(Duration::from_secs(30), Duration::from_millis(50), || {
        let url = format!("{base}/health/ready");
        async move {
            let r = client(None)
                .get(url)
                .send()
                .await
                .map_err(|e| e.to_string())?;
            (r.status() == 200)
                .then_some(())
                .ok_or(r.status().to_string())
        }
    })
    .await
    .expect("the node is ready");

    // The callers: a token of each role, made through the API (so checked too), and one for
    // the revocation to revoke.
    let mut make_token = async |name: &str, role: &str| {
        let answer = checker
            .check(
                ex(
                    "createToken",
                    "a caller's token",
                    Caller::Admin,
                    "/v1/tokens",
                    200,
                )
                .json(json!({"name": name, "role": role})),
            )
            .await
            .json();
        let text = |field: &str| answer[field].as_str().expect(field).to_string();
        (text("id"), text("token"))
    };
    let read = make_token("openapi-read", "read").await.1;
    let write = make_token("openapi-write", "write").await.1;
    let hammer = make_token("openapi-hammer", "read").await.1;
    let doomed = make_token("openapi-doomed", "write").await.0;
    for (caller, token) in [
        (Caller::Read, read),
        (Caller::Write, write),
        (Caller::Hammer, hammer),
    ] {
        checker.clients.insert(caller, client(Some(&token)));
    }

    let examples = table(&doomed);
    let generated = refusals(&checker, &examples);
    for example in examples.into_iter().chain(generated) {
        checker.check(example).await;
    }
    wait_dead_letters(&base, 2).await;
    let examples = dead_letter_table();
    let generated = refusals(&checker, &examples);
    for example in examples.into_iter().chain(generated) {
        checker.check(example).await;
    }
    // A token past its rate: every answer on the way checked too.
    checker
        .until_rate_limited(
            ex(
                "getAccount",
                "until the rate is reached",
                Caller::Hammer,
                "/v1/accounts/1?consistency=stale",
                429,
            ),
            10_000,
        )
        .await;
    checker
        .check(
            ex(
                "getStatus",
                "a forged token",
                Caller::Forged,
                "/v1/status",
                401,
            )
            .error("unauthorized"),
        )
        .await;

    // Coverage: every operation answered a 2xx (or is listed, with why, as unable to); every
    // operation behind a token refused a caller without one; every body was refused malformed.
    let operations: Vec<(String, Value)> = checker
        .operations
        .keys()
        .map(|id| (id.clone(), checker.operation(id).2))
        .collect();
    let statuses = |id: &str| -> BTreeSet<u16> {
        checker
            .seen
            .iter()
            .filter(|(op, _)| op == id)
            .map(|(_, s)| *s)
            .collect()
    };
    for (id, operation) in &operations {
        let seen = statuses(id);
        let exempt = NO_SUCCESS_EXAMPLE.iter().any(|(op, _)| op == id);
        assert_eq!(
            seen.iter().any(|s| (200..300).contains(s)),
            !exempt,
            "{id}: a 2xx answer checked ({seen:?})"
        );
        if operation["x-bulwark-role"] != "none" {
            assert!(seen.contains(&401), "{id}: {seen:?}");
        }
        if operation.get("requestBody").is_some() {
            assert!(seen.contains(&400), "{id}: {seen:?}");
        }
        println!("{id}: {seen:?}");
    }
    assert!(checker.seen.iter().any(|(_, s)| *s == 429));
    println!(
        "{} answers of {} operations checked against the document",
        checker.answers,
        operations.len()
    );
}
