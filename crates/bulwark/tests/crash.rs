//! `kill -9` of the real binary under load, over and over, on the same data directory.
//!
//! Several client tasks send batches of transfers (single ones, linked chains, chains and
//! singles that must fail, pending transfers and their posts and voids, retries of earlier
//! transfers) and record every answer: per event `ok`/`exists` or the refusal word, or nothing
//! at all for a batch whose answer was lost (connection error). The node is killed with
//! `SIGKILL` at a random moment (seeded; `BULWARK_TEST_SEED` replays a run), restarted on the
//! same directory, checked, and the load goes on, round after round. Checkpoints and log
//! compaction run during the test (`--checkpoint-transfers 2000 --segment-bytes 65536`).
//!
//! After every restart: each transfer answered `ok` is present with the fields it was sent
//! with; each one refused is absent; a lost answer may be either, but whatever was once seen
//! present stays present; linked chains are whole or absent; every ledger balances (debits ==
//! credits, posted and pending); no `debits_must_not_exceed_credits` account has more debits
//! than credits; every account's balances are exactly the sums of the transfers present.

mod common;

use common::DecField;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use common::{transfer_fields, Http, Node, Rng};
use serde_json::{json, Value};

const ROUNDS: usize = 24;
const CLIENTS: u64 = 4;
/// Batches each client sends back to back in a round before it slows down.
const FULL_SPEED_BATCHES: usize = 100;
const NODE_ARGS: [&str; 4] = ["--checkpoint-transfers", "2000", "--segment-bytes", "65536"];

/// (id, ledger, may not go negative)
const ACCOUNTS: [(u64, u32, bool); 12] = [
    (1, 1, false),
    (2, 1, false),
    (3, 1, true),
    (4, 1, true),
    (5, 1, true),
    (6, 1, true),
    (7, 1, true),
    (8, 1, true),
    (21, 2, false),
    (22, 2, true),
    (23, 2, true),
    (24, 2, true),
];

/// Accounts created with the `history` flag.
const HISTORY_ACCOUNTS: [u64; 3] = [2, 8, 24];

/// More than any account can ever hold here: a transfer of this much from a limited account
/// is always refused with `exceeds_credits`.
const OVERDRAFT: u64 = 1_000_000_000_000;

fn ledger_accounts(ledger: u32) -> Vec<u64> {
    ACCOUNTS
        .iter()
        .filter(|a| a.1 == ledger)
        .map(|a| a.0)
        .collect()
}

fn limited_accounts(ledger: u32) -> Vec<u64> {
    ACCOUNTS
        .iter()
        .filter(|a| a.1 == ledger && a.2)
        .map(|a| a.0)
        .collect()
}

/// What the test knows about an event it sends.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    /// May succeed or be refused by the ledger.
    Normal,
    /// Must be refused; with the exact word, if given.
    MustFail(Option<&'static str>),
    /// A resend of a transfer already answered `ok`: must answer `exists`.
    Duplicate,
}

#[derive(Clone, Debug)]
struct Event {
    body: Value,
    kind: Kind,
    /// The chain (index into `Client::chains`) this event belongs to.
    chain: Option<usize>,
}

#[derive(Clone, Debug, PartialEq)]
enum Outcome {
    Ok,
    Refused(String),
    /// The answer was lost: it may or may not have been applied.
    Unknown,
}

#[derive(Debug)]
struct Record {
    fields: Value,
    outcome: Outcome,
    chain: Option<usize>,
}

#[derive(Debug, Default)]
struct Stats {
    batches_answered: u64,
    batches_lost: u64,
    retries: u64,
    ok: u64,
    refused: u64,
    duplicates: u64,
}

/// One client task's state, kept across rounds.
struct Client {
    task: u64,
    rng: Rng,
    next_id: u64,
    records: BTreeMap<u64, Record>,
    chains: Vec<Vec<u64>>,
    /// Pending transfers answered `ok` and not posted or voided yet.
    open_pendings: Vec<Value>,
    /// Plain transfers answered `ok`, to resend as duplicates.
    ok_singles: Vec<Value>,
    /// A batch whose answer was lost, to resend (or drop) next round.
    retry: Option<Vec<Event>>,
    /// Ids that got a definite answer since the last check.
    decided: Vec<u64>,
    stats: Stats,
}

impl Client {
    fn new(task: u64, seed: u64) -> Client {
        Client {
            task,
            rng: Rng::new(seed),
            next_id: 0,
            records: BTreeMap::new(),
            chains: Vec::new(),
            open_pendings: Vec::new(),
            ok_singles: Vec::new(),
            retry: None,
            decided: Vec::new(),
            stats: Stats::default(),
        }
    }

    fn new_id(&mut self) -> u64 {
        self.next_id += 1;
        (self.task << 40) | self.next_id
    }

    fn random_transfer(&mut self) -> Value {
        let ledger = if self.rng.chance(80) { 1 } else { 2 };
        let accounts = ledger_accounts(ledger);
        let debit = *self.rng.pick(&accounts);
        let credit = loop {
            let c = *self.rng.pick(&accounts);
            if c != debit {
                break c;
            }
        };
        json!({
            "id": self.new_id(),
            "debit_account_id": debit,
            "credit_account_id": credit,
            "amount": self.rng.range(1, 300),
            "ledger": ledger,
            "code": self.rng.range(1, 5),
            "user_data_64": self.rng.next_u64(),
        })
    }

    fn overdraft(&mut self) -> Value {
        let debit = *self.rng.pick(&limited_accounts(1));
        json!({
            "id": self.new_id(),
            "debit_account_id": debit,
            "credit_account_id": 1,
            "amount": OVERDRAFT,
            "ledger": 1,
            "code": 9,
        })
    }

    /// Adds `linked` to every event of the run but the last, and registers the chain.
    fn chain(&mut self, mut bodies: Vec<Value>, kinds: Vec<Kind>, out: &mut Vec<Event>) {
        let chain = self.chains.len();
        self.chains
            .push(bodies.iter().map(|b| b["id"].dec().unwrap()).collect());
        let last = bodies.len() - 1;
        for (i, (mut body, kind)) in bodies.drain(..).zip(kinds).enumerate() {
            if i < last {
                let flags = body["flags"].as_array().cloned().unwrap_or_default();
                let mut flags: Vec<Value> = flags;
                flags.push(json!("linked"));
                body["flags"] = Value::Array(flags);
            }
            out.push(Event {
                body,
                kind,
                chain: Some(chain),
            });
        }
    }

    fn build_batch(&mut self) -> Vec<Event> {
        let mut events = Vec::new();
        let units = self.rng.range(1, 8);
        for _ in 0..units {
            let roll = self.rng.range(0, 99);
            let single = |body: Value, kind: Kind| Event {
                body,
                kind,
                chain: None,
            };
            match roll {
                0..=54 => {
                    let t = self.random_transfer();
                    events.push(single(t, Kind::Normal));
                }
                55..=69 => {
                    let n = self.rng.range(2, 3) as usize;
                    let bodies: Vec<Value> = (0..n).map(|_| self.random_transfer()).collect();
                    self.chain(bodies, vec![Kind::Normal; n], &mut events);
                }
                70..=74 => {
                    // A chain whose last event cannot succeed: none of it may be applied.
                    let n = self.rng.range(1, 2) as usize;
                    let mut bodies: Vec<Value> = (0..n).map(|_| self.random_transfer()).collect();
                    bodies.push(self.overdraft());
                    self.chain(bodies, vec![Kind::MustFail(None); n + 1], &mut events);
                }
                75..=79 => {
                    let t = self.overdraft();
                    events.push(single(t, Kind::MustFail(Some("exceeds_credits"))));
                }
                80..=87 => {
                    let mut t = self.random_transfer();
                    t["flags"] = json!(["pending"]);
                    events.push(single(t, Kind::Normal));
                }
                88..=94 if !self.open_pendings.is_empty() => {
                    let at = self.rng.range(0, self.open_pendings.len() as u64 - 1) as usize;
                    let p = self.open_pendings.swap_remove(at);
                    let full = p["amount"].dec().unwrap();
                    let post = self.rng.chance(60);
                    let (flag, amount) = if post {
                        ("post_pending_transfer", self.rng.range(1, full))
                    } else {
                        ("void_pending_transfer", full)
                    };
                    let t = json!({
                        "id": self.new_id(),
                        "pending_id": p["id"],
                        "debit_account_id": p["debit_account_id"],
                        "credit_account_id": p["credit_account_id"],
                        "amount": amount,
                        "ledger": p["ledger"],
                        "code": p["code"],
                        "flags": [flag],
                        "user_data_64": self.rng.next_u64(),
                    });
                    events.push(single(t, Kind::Normal));
                }
                95..=97 if !self.ok_singles.is_empty() => {
                    let t = self.rng.pick(&self.ok_singles).clone();
                    events.push(single(t, Kind::Duplicate));
                }
                95..=99 => {
                    let mut t = self.random_transfer();
                    t["ledger"] = json!(1);
                    t["debit_account_id"] = json!(1);
                    t["credit_account_id"] = json!(22);
                    events.push(single(t, Kind::MustFail(Some("ledger_must_match"))));
                }
                _ => {
                    let t = self.random_transfer();
                    events.push(single(t, Kind::Normal));
                }
            }
        }
        for e in &events {
            if e.kind != Kind::Duplicate {
                let id = e.body["id"].dec().unwrap();
                self.records.entry(id).or_insert_with(|| Record {
                    fields: transfer_fields(&e.body),
                    outcome: Outcome::Unknown,
                    chain: e.chain,
                });
            }
        }
        events
    }

    /// Sends a batch: its result words, or `None` if the answer was lost.
    async fn send(&mut self, http: &Http, events: &[Event]) -> Option<Vec<String>> {
        let body = Value::Array(events.iter().map(|e| e.body.clone()).collect());
        match http
            .try_post("/v1/transfers", serde_json::to_vec(&body).unwrap())
            .await
        {
            Ok(r) if r.status == 200 => {
                let results = r.results();
                assert_eq!(results.len(), events.len(), "one result per event");
                self.stats.batches_answered += 1;
                Some(results)
            }
            Ok(r) => panic!(
                "a batch of transfers was answered {}: {}\nbatch: {body}",
                r.status, r.text
            ),
            Err(_) => {
                self.stats.batches_lost += 1;
                None
            }
        }
    }

    /// Records a definite answer to `events`.
    fn settle(&mut self, events: &[Event], results: &[String]) {
        let mut chain_ok: HashMap<usize, Vec<bool>> = HashMap::new();
        for (e, word) in events.iter().zip(results) {
            let id = e.body["id"].dec().unwrap();
            let ok = word == "ok" || word == "exists";
            match e.kind {
                Kind::Duplicate => {
                    assert_eq!(word, "exists", "a resent transfer: {}", e.body);
                    self.stats.duplicates += 1;
                    continue;
                }
                Kind::MustFail(expected) => {
                    assert!(!ok, "event {} must be refused, got {word}", e.body);
                    if let Some(expected) = expected {
                        // A batch resent after a lost answer finds the id of a refusal that
                        // depended on the ledger's state reserved (and only such a one).
                        let reserved = word == "id_already_failed" && expected == "exceeds_credits";
                        assert!(word == expected || reserved, "{}: {word}", e.body);
                    }
                }
                Kind::Normal => {}
            }
            if let Some(chain) = e.chain {
                chain_ok.entry(chain).or_default().push(ok);
            }
            let record = self.records.get_mut(&id).expect("recorded at build");
            record.outcome = if ok {
                self.stats.ok += 1;
                Outcome::Ok
            } else {
                self.stats.refused += 1;
                Outcome::Refused(word.clone())
            };
            self.decided.push(id);
            if ok {
                let flags = e.body["flags"].as_array().cloned().unwrap_or_default();
                if flags.contains(&json!("pending")) {
                    self.open_pendings.push(e.body.clone());
                } else if flags.is_empty() && self.ok_singles.len() < 1000 {
                    self.ok_singles.push(e.body.clone());
                }
            }
        }
        for (chain, oks) in chain_ok {
            assert!(
                oks.iter().all(|&o| o) || oks.iter().all(|&o| !o),
                "linked chain {:?} was answered in part: {oks:?}",
                self.chains[chain]
            );
        }
    }

    /// Sends batches until the node goes away (its answer lost); returns the state.
    async fn run_round(mut self, http: Http) -> Client {
        if let Some(batch) = self.retry.take() {
            if self.rng.chance(60) {
                self.stats.retries += 1;
                match self.send(&http, &batch).await {
                    Some(results) => self.settle(&batch, &results),
                    None => {
                        self.retry = Some(batch);
                        return self;
                    }
                }
            }
        }
        // Full speed for a while, then a trickle, so that the amount of data to check after
        // each round stays bounded however fast the machine is.
        let mut sent = 0;
        loop {
            if sent >= FULL_SPEED_BATCHES {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            sent += 1;
            let batch = self.build_batch();
            match self.send(&http, &batch).await {
                Some(results) => self.settle(&batch, &results),
                None => {
                    self.retry = Some(batch);
                    return self;
                }
            }
        }
    }
}

fn flag(t: &Value, name: &str) -> bool {
    t["flags"]
        .as_array()
        .is_some_and(|f| f.iter().any(|x| x == name))
}

fn u(v: &Value, field: &str) -> u64 {
    v[field].dec().unwrap_or_else(|| panic!("{field} of {v}"))
}

/// GETs every id (a few at a time); `None` for a 404.
async fn get_transfers(http: &Http, ids: Vec<u64>) -> HashMap<u64, Option<Value>> {
    let mut tasks = tokio::task::JoinSet::new();
    let lanes = 4;
    for lane in 0..lanes {
        let http = http.clone();
        let mine: Vec<u64> = ids.iter().skip(lane).step_by(lanes).copied().collect();
        tasks.spawn(async move {
            let mut out = Vec::new();
            for id in mine {
                out.push((id, http.transfer(id).await));
            }
            out
        });
    }
    let mut all = HashMap::new();
    while let Some(part) = tasks.join_next().await {
        all.extend(part.expect("a GET task"));
    }
    all
}

/// Checks everything the test knows against what the node answers; returns the number of
/// transfers present.
async fn verify(
    http: &Http,
    clients: &mut [Client],
    funding: &[Value],
    seen_present: &mut HashSet<u64>,
    every_id: bool,
) -> usize {
    // Accounts: every ledger balances; no limited account is overdrawn.
    let mut accounts: BTreeMap<u64, Value> = BTreeMap::new();
    for (id, _, _) in ACCOUNTS {
        accounts.insert(id, http.account(id).await.expect("account"));
    }
    for ledger in [1, 2] {
        let mut sums = [0u128; 4];
        for id in ledger_accounts(ledger) {
            let a = &accounts[&id];
            for (i, field) in [
                "debits_posted",
                "credits_posted",
                "debits_pending",
                "credits_pending",
            ]
            .iter()
            .enumerate()
            {
                sums[i] += u128::from(u(a, field));
            }
        }
        assert_eq!(
            sums[0], sums[1],
            "ledger {ledger}: posted debits != credits"
        );
        assert_eq!(
            sums[2], sums[3],
            "ledger {ledger}: pending debits != credits"
        );
    }
    for (id, _, limited) in ACCOUNTS {
        let a = &accounts[&id];
        if limited {
            assert!(
                u(a, "debits_posted") + u(a, "debits_pending") <= u(a, "credits_posted"),
                "account {id} may not go negative: {a}"
            );
        }
    }

    // The transfers present: the union of every account's history, each history in strictly
    // increasing timestamp order.
    let mut present: HashMap<u64, Value> = HashMap::new();
    let mut histories: Vec<(u64, Vec<Value>)> = Vec::new();
    for (account, _, _) in ACCOUNTS {
        let history = http.history(account, 8190).await;
        let timestamps: Vec<u64> = history.iter().map(|t| u(t, "timestamp")).collect();
        assert!(
            timestamps.windows(2).all(|w| w[0] < w[1]),
            "the history of {account} is not in timestamp order"
        );
        for t in &history {
            let mut t = t.clone();
            if let Some(obj) = t.as_object_mut() {
                obj.remove("balances");
            }
            assert!(
                u(&t, "debit_account_id") == account || u(&t, "credit_account_id") == account,
                "the history of {account} holds {t}"
            );
            let id = u(&t, "id");
            match present.get(&id) {
                Some(other) => assert_eq!(other, &t, "transfer {id} differs between histories"),
                None => {
                    present.insert(id, t);
                }
            }
        }
        histories.push((account, history));
    }
    let mut timestamps: Vec<u64> = present.values().map(|t| u(t, "timestamp")).collect();
    timestamps.sort_unstable();
    let before = timestamps.len();
    timestamps.dedup();
    assert_eq!(before, timestamps.len(), "two transfers share a timestamp");

    // An account with `history` carries, on each entry, its balances right after it.
    for (account, history) in &histories {
        let keeps_history = HISTORY_ACCOUNTS.contains(account);
        let mut running = [0i128; 4]; // dp, dP, cp, cP
        for t in history {
            let Some(balances) = t.get("balances") else {
                assert!(!keeps_history, "account {account} keeps history: {t}");
                continue;
            };
            assert!(keeps_history, "account {account} has no history flag: {t}");
            for (side, apply) in [
                (0, u(t, "debit_account_id")),
                (2, u(t, "credit_account_id")),
            ] {
                if apply != *account {
                    continue;
                }
                let amount = i128::from(u(t, "amount"));
                if flag(t, "pending") {
                    running[side] += amount;
                } else if flag(t, "post_pending_transfer") || flag(t, "void_pending_transfer") {
                    let p = &present[&u(t, "pending_id")];
                    running[side] -= i128::from(u(p, "amount"));
                    if flag(t, "post_pending_transfer") {
                        running[side + 1] += amount;
                    }
                } else {
                    running[side + 1] += amount;
                }
            }
            let got = [
                u(balances, "debits_pending"),
                u(balances, "debits_posted"),
                u(balances, "credits_pending"),
                u(balances, "credits_posted"),
            ]
            .map(i128::from);
            assert_eq!(
                got, running,
                "account {account}: the balances recorded with transfer {} are wrong",
                t["id"]
            );
        }
    }

    // Nothing present that was never sent, and all of it as sent.
    let mut known: HashMap<u64, &Value> = HashMap::new();
    for t in funding {
        known.insert(u(t, "id"), t);
    }
    for c in clients.iter() {
        for (id, r) in &c.records {
            known.insert(*id, &r.fields);
        }
    }
    for (id, t) in &present {
        let sent = known
            .get(id)
            .unwrap_or_else(|| panic!("transfer {id} is present but was never sent: {t}"));
        assert_eq!(&transfer_fields(t), &transfer_fields(sent), "transfer {id}");
    }

    // Every answer holds; lost answers are either, but what was seen present stays present.
    for c in clients.iter() {
        for (id, r) in &c.records {
            match &r.outcome {
                Outcome::Ok => assert!(
                    present.contains_key(id),
                    "transfer {id} was answered ok but is missing: {}",
                    r.fields
                ),
                Outcome::Refused(word) => assert!(
                    !present.contains_key(id),
                    "transfer {id} was refused ({word}) but is present: {}",
                    r.fields
                ),
                Outcome::Unknown => {}
            }
            if let Some(chain) = r.chain {
                let members = &c.chains[chain];
                let whole = members.iter().all(|m| present.contains_key(m));
                let none = members.iter().all(|m| !present.contains_key(m));
                assert!(whole || none, "linked chain {members:?} is present in part");
            }
        }
    }
    for id in seen_present.iter() {
        assert!(
            present.contains_key(id),
            "transfer {id} was present after an earlier restart and is gone now"
        );
    }
    seen_present.extend(present.keys().copied());

    // Balances are the sums of the transfers present.
    let mut expected: HashMap<u64, [i128; 4]> = HashMap::new(); // dp, dP, cp, cP
    let mut resolved: HashMap<u64, &str> = HashMap::new();
    for t in present.values() {
        let amount = i128::from(u(t, "amount"));
        let (dr, cr) = (u(t, "debit_account_id"), u(t, "credit_account_id"));
        if flag(t, "pending") {
            expected.entry(dr).or_default()[0] += amount;
            expected.entry(cr).or_default()[2] += amount;
        } else if flag(t, "post_pending_transfer") || flag(t, "void_pending_transfer") {
            let pid = u(t, "pending_id");
            let p = present
                .get(&pid)
                .unwrap_or_else(|| panic!("{t} resolves a pending transfer that is missing"));
            let post = flag(t, "post_pending_transfer");
            let previous = resolved.insert(pid, if post { "posted" } else { "voided" });
            assert!(previous.is_none(), "pending {pid} resolved twice");
            let pending_amount = i128::from(u(p, "amount"));
            expected.entry(dr).or_default()[0] -= pending_amount;
            expected.entry(cr).or_default()[2] -= pending_amount;
            if post {
                assert!(amount <= pending_amount);
                expected.entry(dr).or_default()[1] += amount;
                expected.entry(cr).or_default()[3] += amount;
            }
        } else {
            expected.entry(dr).or_default()[1] += amount;
            expected.entry(cr).or_default()[3] += amount;
        }
    }
    for (id, a) in &accounts {
        let e = expected.get(id).copied().unwrap_or_default();
        let got = [
            u(a, "debits_pending"),
            u(a, "debits_posted"),
            u(a, "credits_pending"),
            u(a, "credits_posted"),
        ]
        .map(i128::from);
        assert_eq!(
            got, e,
            "account {id}: balances are not the sums of its transfers: {a}"
        );
    }

    // GET each transfer decided since the last check (or every one): present ones answer
    // 200 with what the history says, refused ones 404, pending ones with their status.
    let mut ids: Vec<u64> = Vec::new();
    for c in clients.iter_mut() {
        if every_id {
            ids.extend(c.records.keys().copied());
            c.decided.clear();
        } else {
            ids.append(&mut c.decided);
        }
    }
    if every_id {
        ids.extend(funding.iter().map(|t| u(t, "id")));
    }
    for (id, got) in get_transfers(http, ids).await {
        match (got, present.get(&id)) {
            (Some(mut got), Some(t)) => {
                let status = got.as_object_mut().and_then(|o| o.remove("pending_status"));
                assert_eq!(&got, t, "GET transfer {id} and the history disagree");
                if flag(t, "pending") {
                    let want = resolved.get(&id).copied().unwrap_or("pending");
                    assert_eq!(status, Some(json!(want)), "status of pending {id}");
                } else {
                    assert_eq!(status, None, "{id} is not pending");
                }
            }
            (None, None) => {}
            (got, t) => panic!("transfer {id}: GET says {got:?}, the history says {t:?}"),
        }
    }
    present.len()
}

/// What a restart's `recovered` log line says: the checkpoint it started from and how many log
/// records it replayed after it.
struct Recovery {
    checkpoint: u64,
    replayed: u64,
}

/// The number after `field=` in a log line.
fn log_field(line: &str, field: &str) -> Option<u64> {
    let at = line.find(&format!(" {field}="))? + field.len() + 2;
    let digits: String = line[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// The `recovered` line of the node's latest run, waited for (it is logged once the log is
/// replayed, which may be just after the node starts answering).
async fn recovery_of(node: &Node) -> Recovery {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let log = node.last_log();
        if let Some(line) = log.lines().find(|l| l.contains("recovered")) {
            let field =
                |name| log_field(line, name).unwrap_or_else(|| panic!("no {name}= in `{line}`"));
            return Recovery {
                checkpoint: field("checkpoint"),
                replayed: field("replayed"),
            };
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no `recovered` line in the restart's log:\n{log}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_under_load_loses_no_acknowledged_transfer() {
    let seed = common::seed(0x5eed_b01a);
    eprintln!("seed {seed} (set BULWARK_TEST_SEED to replay)");
    let mut rng = Rng::new(seed);
    let mut node = Node::start(&NODE_ARGS).await;
    let http = node.http.clone();

    let accounts: Vec<Value> = ACCOUNTS
        .iter()
        .map(|(id, ledger, limited)| {
            let mut flags: Vec<&str> = Vec::new();
            if *limited {
                flags.push("debits_must_not_exceed_credits");
            }
            if HISTORY_ACCOUNTS.contains(id) {
                flags.push("history");
            }
            json!({"id": id, "ledger": ledger, "code": 1, "flags": flags})
        })
        .collect();
    let results = http.write("/v1/accounts", &Value::Array(accounts)).await;
    assert!(results.iter().all(|r| r == "ok"), "{results:?}");
    // Fund every limited account from its ledger's first plain account.
    let funding: Vec<Value> = ACCOUNTS
        .iter()
        .filter(|a| a.2)
        .enumerate()
        .map(|(i, (id, ledger, _))| {
            json!({"id": i as u64 + 1, "debit_account_id": if *ledger == 1 { 1 } else { 21 },
                   "credit_account_id": id, "amount": 20_000, "ledger": ledger, "code": 1})
        })
        .collect();
    let results = http
        .write("/v1/transfers", &Value::Array(funding.clone()))
        .await;
    assert!(results.iter().all(|r| r == "ok"), "{results:?}");

    let mut clients: Vec<Client> = (1..=CLIENTS)
        .map(|task| Client::new(task, rng.next_u64()))
        .collect();
    let mut seen_present: HashSet<u64> = HashSet::new();
    let mut recovered_from_checkpoint = 0;
    let mut replayed_total = 0u64;
    for round in 0..ROUNDS {
        let http = node.http.clone();
        let tasks: Vec<_> = clients
            .drain(..)
            .map(|c| tokio::spawn(c.run_round(http.clone())))
            .collect();
        tokio::time::sleep(Duration::from_millis(rng.range(50, 400))).await;
        node.kill9();
        for task in tasks {
            clients.push(task.await.expect("a client task panicked"));
        }

        node.restart().await;
        let status = node.http.status().await;
        let recovery = recovery_of(&node).await;
        if recovery.checkpoint > 0 {
            recovered_from_checkpoint += 1;
        }
        replayed_total += recovery.replayed;
        let checking = std::time::Instant::now();
        let present = verify(&node.http, &mut clients, &funding, &mut seen_present, false).await;
        eprintln!(
            "round {round}: {present} transfers present; applied {} checkpoint {} log {}; \
             checked in {} ms",
            status["applied_index"],
            status["checkpoint_index"],
            status["log"],
            checking.elapsed().as_millis()
        );
    }

    // A graceful stop at the end: exit 0, a final checkpoint, and everything still there.
    let status = node.sigterm();
    assert!(status.success(), "SIGTERM: {status}\n{}", node.last_log());
    node.restart().await;
    let status = node.http.status().await;
    // Everything was checkpointed; past it at most this term's empty entry (the restart waits
    // until the node serves its token, by when it may have won its election).
    let (checkpoint, applied) = (
        status["checkpoint_index"].as_u64().unwrap(),
        status["applied_index"].as_u64().unwrap(),
    );
    assert!(
        applied == checkpoint || applied == checkpoint + 1,
        "checkpoint {checkpoint}, applied {applied}"
    );
    let checking = std::time::Instant::now();
    let present = verify(&node.http, &mut clients, &funding, &mut seen_present, true).await;
    eprintln!("final check in {} ms", checking.elapsed().as_millis());

    let mut total = Stats::default();
    for c in &clients {
        total.batches_answered += c.stats.batches_answered;
        total.batches_lost += c.stats.batches_lost;
        total.retries += c.stats.retries;
        total.ok += c.stats.ok;
        total.refused += c.stats.refused;
        total.duplicates += c.stats.duplicates;
    }
    eprintln!(
        "{ROUNDS} kills: {total:?}; {present} transfers present; {recovered_from_checkpoint} \
         restarts recovered from a checkpoint; {replayed_total} log records replayed"
    );
    assert!(total.ok > 0 && total.refused > 0, "{total:?}");
    // Both halves of recovery were exercised: starting from a checkpoint, and replaying the log
    // written after one.
    assert!(
        recovered_from_checkpoint > 0,
        "no restart recovered from a checkpoint"
    );
    assert!(replayed_total > 0, "no restart replayed a log record");
    assert_eq!(
        total.batches_lost,
        ROUNDS as u64 * CLIENTS,
        "every round ends with exactly one lost answer per client"
    );
}
