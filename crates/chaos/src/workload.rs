//! The bank workload: concurrent clients moving money between a small set of accounts, with
//! linked chains, pending transfers (posted, voided or left to expire), retries of indefinite
//! batches with the same ids (as a real client does), and linearizable balance and history reads.
//! Every request is recorded as an invoke and a completion.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The longest timeout the workload gives a pending transfer, in seconds: once it has passed
/// after the last write, the leader has nothing left to expire and the cluster stays still.
pub const MAX_PENDING_TIMEOUT_S: u32 = 3;

use serde_json::{json, Value};

use crate::client::{balance_from_json, transfer_from_json, Answer, Client};
use crate::history::{Balance, Kind, Op, Phase, Transfer};
use crate::rng::Rng;

/// The ledger every account of the test lives in.
pub const LEDGER: u32 = 1;
/// Accounts 1..=ACCOUNTS.
pub const ACCOUNTS: u64 = 16;
/// Accounts 1..=REGULAR take the bulk of the workload; the rest are [`CLOSABLE`].
pub const REGULAR: u64 = 12;
/// Accounts that closing pending transfers close (and their void or expiry reopens). Only they
/// are closed, so that closings never starve the rest of the workload; probe transfers between
/// them and the regular accounts find them open or closed.
pub const CLOSABLE: std::ops::RangeInclusive<u64> = 13..=16;
/// Accounts that may never be overdrawn.
pub const LIMITED: std::ops::RangeInclusive<u64> = 3..=8;
/// Accounts that keep a balance history.
pub const WITH_HISTORY: std::ops::RangeInclusive<u64> = 9..=10;
/// Money each limited account starts with.
pub const OPENING_BALANCE: u64 = 2_000;
/// Attempts of one batch, the first included, before the client gives up on it.
const ATTEMPTS: u32 = 6;
/// Transfers per history read: small, so that pages fill and the reads follow each account's
/// recent transfers.
const HISTORY_PAGE: u64 = 20;
/// The process number of the setup client.
pub const SETUP_PROCESS: u64 = 0;

/// The history as it is being written, shared by every client and the nemesis.
pub struct Recorder {
    start: Instant,
    /// The wall clock at `start`, in ns since the Unix epoch.
    pub started_unix_ns: u64,
    ops: Mutex<Vec<Op>>,
    pub counts: Counts,
}

/// Live counters for the progress line.
#[derive(Default)]
pub struct Counts {
    pub ok: AtomicU64,
    pub fail: AtomicU64,
    pub info: AtomicU64,
    pub transfers_ok: AtomicU64,
}

impl Recorder {
    pub fn new(start: Instant) -> Recorder {
        let since_start = start.elapsed();
        let wall = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Recorder {
            start,
            started_unix_ns: wall.saturating_sub(since_start).as_nanos() as u64,
            ops: Mutex::new(Vec::new()),
            counts: Counts::default(),
        }
    }

    pub fn now_ns(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }

    pub fn record(&self, mut op: Op) {
        op.time_ns = self.now_ns();
        let counter = match op.phase {
            Phase::Invoke => None,
            Phase::Ok => Some(&self.counts.ok),
            Phase::Fail => Some(&self.counts.fail),
            Phase::Info => Some(&self.counts.info),
        };
        if op.kind != Kind::Nemesis {
            if let Some(c) = counter {
                c.fetch_add(1, Ordering::Relaxed);
            }
            if op.phase == Phase::Ok && op.kind == Kind::TransferBatch {
                let ok = op.results.iter().filter(|r| *r == "ok").count();
                self.counts
                    .transfers_ok
                    .fetch_add(ok as u64, Ordering::Relaxed);
            }
        }
        self.ops.lock().expect("history lock").push(op);
    }

    pub fn take_ops(&self) -> Vec<Op> {
        std::mem::take(&mut *self.ops.lock().expect("history lock"))
    }
}

/// Records one write batch: invoke, request, completion.
pub async fn record_write(
    recorder: &Recorder,
    client: &Client,
    process: u64,
    node: SocketAddr,
    batch: &[Transfer],
) -> Answer {
    recorder.record(Op {
        transfers: batch.to_vec(),
        description: Some(format!("to {node}")),
        ..Op::new(process, Kind::TransferBatch, Phase::Invoke, 0)
    });
    let answer = client.transfers(node, batch).await;
    let mut results = Vec::new();
    let mut phase = answer.phase;
    let mut error = answer.error.clone();
    if phase == Phase::Ok {
        match parse_results(&answer.body, batch.len()) {
            Some(r) => results = r,
            None => {
                phase = Phase::Info;
                error = Some(format!(
                    "a 2xx answer that is not a batch answer: {}",
                    answer.body
                ));
            }
        }
    }
    recorder.record(Op {
        transfers: batch.to_vec(),
        results,
        commit_index: answer.commit_index,
        description: error,
        ..Op::new(process, Kind::TransferBatch, phase, 0)
    });
    Answer { phase, ..answer }
}

/// The transfers of a history page as stored, and the balances after each when every one of
/// them carries `account`'s (an account with `history`); `None` if the body is not a page.
fn history_page(body: &Value, account: u64) -> Option<(Vec<Transfer>, Vec<Balance>)> {
    let page = body["transfers"].as_array()?;
    let transfers: Vec<Transfer> = page.iter().map(transfer_from_json).collect::<Option<_>>()?;
    let balances: Option<Vec<Balance>> = page
        .iter()
        .map(|t| {
            let b = &t["balances"];
            Some(Balance {
                id: account,
                debits_pending: crate::client::dec(&b["debits_pending"])?,
                debits_posted: crate::client::dec(&b["debits_posted"])?,
                credits_pending: crate::client::dec(&b["credits_pending"])?,
                credits_posted: crate::client::dec(&b["credits_posted"])?,
            })
        })
        .collect();
    Some((transfers, balances.unwrap_or_default()))
}

fn parse_results(body: &Value, events: usize) -> Option<Vec<String>> {
    let results = body["results"].as_array()?;
    if results.len() != events {
        return None;
    }
    results
        .iter()
        .enumerate()
        .map(|(i, r)| {
            (r["index"].as_u64()? == i as u64).then_some(())?;
            r["result"].as_str().map(str::to_string)
        })
        .collect()
}

/// Creates the accounts and funds the limited ones (recorded as process 0). Retries until done or
/// `deadline`.
pub async fn setup(
    recorder: &Recorder,
    client: &Client,
    nodes: &[SocketAddr],
    deadline: Instant,
) -> anyhow::Result<()> {
    let accounts: Vec<Value> = (1..=ACCOUNTS)
        .map(|id| {
            let mut flags = Vec::new();
            if LIMITED.contains(&id) {
                flags.push("debits_must_not_exceed_credits");
            }
            if WITH_HISTORY.contains(&id) {
                flags.push("history");
            }
            json!({"id": id, "ledger": LEDGER, "code": 1, "flags": flags})
        })
        .collect();
    let body = Value::Array(accounts);
    let mut attempt = 0usize;
    loop {
        let node = nodes[attempt % nodes.len()];
        attempt += 1;
        let answer = client.accounts(node, &body).await;
        let done = answer.phase == Phase::Ok
            && answer.body["results"].as_array().is_some_and(|r| {
                r.iter()
                    .all(|e| matches!(e["result"].as_str(), Some("ok" | "exists")))
            });
        if done {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "could not create the test accounts: {:?}",
            answer.error
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Funding comes from accounts 1 and 2, which have no limit.
    let funding: Vec<Transfer> = LIMITED
        .enumerate()
        .map(|(i, id)| Transfer {
            id: i as u64 + 1,
            debit: 1 + (i as u64 % 2),
            credit: id,
            amount: OPENING_BALANCE,
            ledger: LEDGER,
            ..Transfer::default()
        })
        .collect();
    loop {
        let node = nodes[attempt % nodes.len()];
        attempt += 1;
        let answer = record_write(recorder, client, SETUP_PROCESS, node, &funding).await;
        if answer.phase == Phase::Ok {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "could not fund the test accounts: {:?}",
            answer.error
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}

/// One client of the workload.
pub struct Worker {
    pub process: u64,
    pub rng: Rng,
    pub nodes: Vec<SocketAddr>,
    /// Seconds between two ops of this client.
    pub interval: Duration,
    next_id: u64,
    /// Pending transfers this client created and saw acknowledged `ok`, not yet resolved by it:
    /// id, amount, and whether it closes accounts.
    pending: Vec<(u64, u64, bool)>,
    /// Per account, the timestamp this client's last full page of its history ended at.
    history_cursor: std::collections::HashMap<u64, u64>,
}

impl Worker {
    pub fn new(process: u64, seed: u64, nodes: Vec<SocketAddr>, interval: Duration) -> Worker {
        Worker {
            process,
            rng: Rng::new(seed ^ process.wrapping_mul(0x9E37_79B9_7F4A_7C15)),
            nodes,
            interval,
            next_id: 1,
            pending: Vec::new(),
            history_cursor: std::collections::HashMap::new(),
        }
    }

    fn new_id(&mut self) -> u64 {
        let id = (self.process << 36) | self.next_id;
        self.next_id += 1;
        id
    }

    fn pick_node(&mut self) -> SocketAddr {
        self.nodes[self.rng.below(self.nodes.len() as u64) as usize]
    }

    fn pick_pair(&mut self) -> (u64, u64) {
        let debit = 1 + self.rng.below(REGULAR);
        let mut credit = 1 + self.rng.below(REGULAR - 1);
        if credit >= debit {
            credit += 1;
        }
        (debit, credit)
    }

    fn plain(&mut self, max_amount: u64) -> Transfer {
        let (debit, credit) = self.pick_pair();
        Transfer {
            id: self.new_id(),
            debit,
            credit,
            amount: 1 + self.rng.below(max_amount),
            ledger: LEDGER,
            ..Transfer::default()
        }
    }

    /// A plain transfer, or now and then a balancing one.
    fn plain_or_balancing(&mut self, max_amount: u64) -> Transfer {
        if self.rng.chance(15) {
            self.balancing()
        } else {
            self.plain(max_amount)
        }
    }

    /// A balancing transfer: mostly a balancing debit from a limited account (whose room,
    /// `credits_posted − debits`, is what caps it), sometimes a balancing credit (capped by the
    /// credit account's `debits_posted − credits`, often 0 on the regular accounts) or both. The
    /// amount is the cap, large enough now and then to cap; rarely 0, no cap at all (which takes
    /// everything the account can give).
    fn balancing(&mut self) -> Transfer {
        let mut t = self.plain(900);
        let roll = self.rng.below(10);
        if roll < 7 {
            let limited = LIMITED.start() + self.rng.below(LIMITED.end() - LIMITED.start() + 1);
            if t.credit == limited {
                t.credit = t.debit;
            }
            t.debit = limited;
            t.flags.push("balancing_debit".into());
        }
        if roll >= 6 {
            t.flags.push("balancing_credit".into());
        }
        if self.rng.chance(3) {
            t.amount = 0;
        }
        t
    }

    /// A pending transfer between two closable accounts that closes one or both of them for a
    /// second or two (it always times out, so every account is open again at the end, unless a
    /// void comes first).
    fn closing_batch(&mut self) -> Vec<Transfer> {
        let span = CLOSABLE.end() - CLOSABLE.start() + 1;
        let debit = CLOSABLE.start() + self.rng.below(span);
        let credit =
            CLOSABLE.start() + (debit - CLOSABLE.start() + 1 + self.rng.below(span - 1)) % span;
        let mut flags = vec!["pending".to_string()];
        match self.rng.below(3) {
            0 => flags.push("closing_debit".into()),
            1 => flags.push("closing_credit".into()),
            _ => flags.extend(["closing_debit".into(), "closing_credit".into()]),
        }
        vec![Transfer {
            id: self.new_id(),
            debit,
            credit,
            amount: 1 + self.rng.below(50),
            ledger: LEDGER,
            flags,
            timeout: 1 + self.rng.below(2) as u32,
            ..Transfer::default()
        }]
    }

    /// A transfer between a closable account and an unlimited regular one, either way: applied
    /// while the closable account is open, refused `*_already_closed` while it is closed. Now and
    /// then pending (then posted or voided like any other, voids being allowed on a closed account).
    fn closable_probe(&mut self) -> Vec<Transfer> {
        const UNLIMITED: [u64; 6] = [1, 2, 9, 10, 11, 12];
        let closable = CLOSABLE.start() + self.rng.below(CLOSABLE.end() - CLOSABLE.start() + 1);
        let regular = UNLIMITED[self.rng.below(UNLIMITED.len() as u64) as usize];
        let (debit, credit) = if self.rng.chance(50) {
            (closable, regular)
        } else {
            (regular, closable)
        };
        let mut t = Transfer {
            id: self.new_id(),
            debit,
            credit,
            amount: 1 + self.rng.below(100),
            ledger: LEDGER,
            ..Transfer::default()
        };
        if self.rng.chance(25) {
            t.flags.push("pending".into());
            t.timeout = self.rng.below(u64::from(MAX_PENDING_TIMEOUT_S) + 1) as u32;
        }
        vec![t]
    }

    /// A batch of plain transfers (some balancing), sometimes with a linked chain inside.
    fn transfer_batch(&mut self) -> Vec<Transfer> {
        let mut batch = Vec::new();
        let n = 1 + self.rng.below(5);
        for _ in 0..n {
            batch.push(self.plain_or_balancing(300));
        }
        if self.rng.chance(40) {
            let len = 2 + self.rng.below(2);
            for i in 0..len {
                // Large amounts make some chains fail on a limited account: the whole chain must.
                let mut t = self.plain_or_balancing(900);
                if i + 1 < len {
                    t.flags.push("linked".into());
                }
                batch.push(t);
            }
        }
        batch
    }

    fn pending_batch(&mut self) -> Vec<Transfer> {
        let mut t = self.plain(200);
        t.flags.push("pending".into());
        // Half never time out (posted or voided later), half expire after 1-3 s unless resolved.
        if self.rng.chance(50) {
            t.timeout = 1 + self.rng.below(u64::from(MAX_PENDING_TIMEOUT_S)) as u32;
        }
        vec![t]
    }

    fn resolve_batch(&mut self) -> Option<Vec<Transfer>> {
        if self.pending.is_empty() {
            return None;
        }
        let i = self.rng.below(self.pending.len() as u64) as usize;
        let (pending_id, amount, closing) = self.pending.swap_remove(i);
        // A post of a closing transfer is refused (its account is closed): tried now and then,
        // so that the checker would see one that got through.
        let post = self.rng.chance(if closing { 20 } else { 60 });
        let mut t = Transfer {
            id: self.new_id(),
            pending_id,
            ..Transfer::default()
        };
        if post {
            t.flags.push("post_pending_transfer".into());
            // Partial posts now and then; 0 posts the full amount.
            if self.rng.chance(30) {
                t.amount = 1 + self.rng.below(amount);
            }
        } else {
            t.flags.push("void_pending_transfer".into());
        }
        Some(vec![t])
    }

    /// Sends a batch until it gets a definite answer or the attempts run out, each attempt with the
    /// same ids.
    async fn write(
        &mut self,
        recorder: &Recorder,
        client: &Client,
        stop: &AtomicBool,
        batch: &[Transfer],
    ) -> Option<Vec<String>> {
        for attempt in 0..ATTEMPTS {
            if attempt > 0 {
                if stop.load(Ordering::Relaxed) {
                    return None;
                }
                let backoff = 100 + self.rng.below(200 << attempt.min(3));
                tokio::time::sleep(Duration::from_millis(backoff)).await;
            }
            let node = self.pick_node();
            let answer = record_write(recorder, client, self.process, node, batch).await;
            match answer.phase {
                Phase::Ok => {
                    return parse_results(&answer.body, batch.len());
                }
                // A request the server judged invalid will be judged so again.
                Phase::Fail if answer.status.is_some_and(|s| (400..500).contains(&s)) => {
                    return None
                }
                _ => {}
            }
        }
        None
    }

    /// Writes a one-transfer batch and, if it is a pending transfer acknowledged `ok`, keeps it
    /// to resolve later.
    async fn write_pending(
        &mut self,
        recorder: &Recorder,
        client: &Client,
        stop: &AtomicBool,
        batch: &[Transfer],
    ) {
        let results = self.write(recorder, client, stop, batch).await;
        let t = &batch[0];
        if t.is_pending() && results.is_some_and(|r| r[0] == "ok") {
            let closing = t.has_flag("closing_debit") || t.has_flag("closing_credit");
            self.pending.push((t.id, t.amount, closing));
        }
    }

    async fn read_balances(&mut self, recorder: &Recorder, client: &Client) {
        let account = 1 + self.rng.below(ACCOUNTS);
        let node = self.pick_node();
        recorder.record(Op {
            description: Some(format!("account {account} at {node}")),
            ..Op::new(self.process, Kind::ReadBalances, Phase::Invoke, 0)
        });
        let answer = client.get(node, &format!("/v1/accounts/{account}")).await;
        let balance = balance_from_json(&answer.body);
        let phase = if answer.phase == Phase::Ok && balance.is_none() {
            Phase::Fail
        } else {
            answer.phase
        };
        recorder.record(Op {
            applied_index: answer.applied_index,
            balances: balance.into_iter().collect(),
            description: answer.error,
            ..Op::new(self.process, Kind::ReadBalances, phase, 0)
        });
    }

    /// Reads a page of an account's history, following it: from where this client's last full
    /// page of it ended, so that reads see recent transfers (the checker compares every page with
    /// the replay), and from the start now and then.
    async fn read_history(&mut self, recorder: &Recorder, client: &Client) {
        let account = 1 + self.rng.below(ACCOUNTS);
        let node = self.pick_node();
        if self.rng.chance(10) {
            self.history_cursor.remove(&account);
        }
        let after = self.history_cursor.get(&account).copied().unwrap_or(0);
        recorder.record(Op {
            description: Some(format!("history of account {account} at {node}")),
            account: Some(account),
            after: Some(after),
            limit: Some(HISTORY_PAGE),
            ..Op::new(self.process, Kind::ReadHistory, Phase::Invoke, 0)
        });
        let answer = client
            .get(
                node,
                &format!("/v1/accounts/{account}/transfers?limit={HISTORY_PAGE}&after={after}"),
            )
            .await;
        let page = history_page(&answer.body, account);
        let phase = if answer.phase == Phase::Ok && page.is_none() {
            Phase::Fail
        } else {
            answer.phase
        };
        let (transfers, balances) = page.unwrap_or_default();
        if let Some(last) = transfers
            .last()
            .filter(|_| transfers.len() as u64 == HISTORY_PAGE)
        {
            self.history_cursor.insert(account, last.timestamp);
        }
        recorder.record(Op {
            applied_index: answer.applied_index,
            transfers,
            balances,
            description: answer.error,
            account: Some(account),
            after: Some(after),
            limit: Some(HISTORY_PAGE),
            ..Op::new(self.process, Kind::ReadHistory, phase, 0)
        });
    }

    /// Runs ops at this client's pace until `stop`.
    pub async fn run(mut self, recorder: Arc<Recorder>, client: Client, stop: Arc<AtomicBool>) {
        let mut next = tokio::time::Instant::now();
        while !stop.load(Ordering::Relaxed) {
            tokio::time::sleep_until(next).await;
            next += self.interval;
            let now = tokio::time::Instant::now();
            if next + self.interval < now {
                next = now; // fell behind (a long retry): no burst to catch up
            }
            let roll = self.rng.below(100);
            match roll {
                0..=44 => {
                    let batch = self.transfer_batch();
                    self.write(&recorder, &client, &stop, &batch).await;
                }
                45..=46 => {
                    let batch = self.closing_batch();
                    self.write_pending(&recorder, &client, &stop, &batch).await;
                }
                47..=49 => {
                    let batch = self.closable_probe();
                    self.write_pending(&recorder, &client, &stop, &batch).await;
                }
                50..=59 => {
                    let batch = self.pending_batch();
                    self.write_pending(&recorder, &client, &stop, &batch).await;
                }
                60..=69 => {
                    if let Some(batch) = self.resolve_batch() {
                        self.write(&recorder, &client, &stop, &batch).await;
                    }
                }
                70..=89 => self.read_balances(&recorder, &client).await,
                _ => self.read_history(&recorder, &client).await,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn worker() -> Worker {
        Worker::new(
            1,
            7,
            vec!["127.0.0.1:1".parse().unwrap()],
            Duration::from_millis(1),
        )
    }

    #[test]
    fn balancing_transfers_debit_limited_accounts_and_only_probes_touch_closable_ones() {
        let mut w = worker();
        let batches: Vec<Transfer> = (0..2_000).flat_map(|_| w.transfer_batch()).collect();
        let debits: Vec<&Transfer> = batches
            .iter()
            .filter(|t| t.has_flag("balancing_debit"))
            .collect();
        assert!(debits.len() > 100, "{} balancing debits", debits.len());
        assert!(debits.iter().all(|t| LIMITED.contains(&t.debit)));
        assert!(debits.iter().any(|t| t.amount == 0), "no uncapped one");
        assert!(batches.iter().any(|t| t.has_flag("balancing_credit")));
        assert!(batches
            .iter()
            .all(|t| t.debit != t.credit && t.debit <= REGULAR && t.credit <= REGULAR));
        let probes: Vec<Transfer> = (0..200).flat_map(|_| w.closable_probe()).collect();
        assert!(probes.iter().all(|t| {
            CLOSABLE.contains(&t.debit) != CLOSABLE.contains(&t.credit)
                && !LIMITED.contains(&t.debit)
                && t.timeout <= MAX_PENDING_TIMEOUT_S
        }));
        assert!(probes.iter().any(|t| t.is_pending()));
    }

    #[test]
    fn closing_transfers_are_pending_between_closable_accounts_and_time_out() {
        let mut w = worker();
        let closings: Vec<Transfer> = (0..300).flat_map(|_| w.closing_batch()).collect();
        for t in &closings {
            assert!(t.is_pending() && (1..=2).contains(&t.timeout), "{t:?}");
            assert!(
                CLOSABLE.contains(&t.debit) && CLOSABLE.contains(&t.credit),
                "{t:?}"
            );
            assert_ne!(t.debit, t.credit);
        }
        let has = |f: &str| closings.iter().filter(|t| t.has_flag(f)).count();
        assert!(has("closing_debit") > 50 && has("closing_credit") > 50);
        assert!(closings
            .iter()
            .any(|t| t.has_flag("closing_debit") && t.has_flag("closing_credit")));
    }
}
