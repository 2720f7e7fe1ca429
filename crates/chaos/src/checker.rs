//! The bank test's checker: one verdict per property, computed from the client's record and the
//! final state. The client's record is the reference; the final state is checked against it.
//!
//! Pairing: a completion belongs to the latest open invoke of its process; an invoke never completed
//! counts as indefinite (`info`). An event of an `ok` batch without a result word is indefinite too.
//!
//! `refused_absent` exempts an id that was also acknowledged in some batch, or sent in a batch with an
//! indefinite outcome (that earlier attempt may legitimately have been applied); such an id is checked
//! by `acknowledged_present_once` or `indefinite_at_most_once` instead.
//!
//! `linearizable_reads` (see `checker/reads.rs`) places every present transfer in the order the
//! cluster applied it, by its stored timestamp, and bounds the log index of each by the commit
//! indexes of the acknowledged transfers around it. A read at applied index `i` must return exactly
//! what that replay gives at `i`: balances, and for history reads the page of transfers (and their
//! running balances). An account is left out of one read only when a transfer touching it may or may
//! not have been applied at `i` (its index is not bounded tightly enough) or a pending transfer's
//! expiry may or may not have happened by then; `Report::reads` says how many reads were compared.
//!
//! The change feed the history holds (every event the ledger applied, in order, with balances) is
//! checked against the client's record and replayed (`checker/feed.rs`): `feed_matches_history`,
//! `feed_balances_consistent`, `balancing_capped`, `closed_accounts_untouched`, `closing_reopens`.

use crate::history::{Balance, History, Kind, NemesisAction, Op, Phase, Transfer};
use std::collections::{BTreeMap, BTreeSet, HashMap};

mod clock;
pub mod feed;
mod reads;
pub use reads::ReadCoverage;

const MAX_VIOLATIONS: usize = 20;

/// The verdict on one property.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub property: &'static str,
    pub ok: bool,
    /// The first 20 violations, with exact ids and indexes.
    pub violations: Vec<String>,
    /// Informational figures (e.g. availability).
    pub notes: Vec<String>,
}

/// All verdicts.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Report {
    pub verdicts: Vec<Verdict>,
    pub ok: bool,
    /// How many reads the checker could compare with the replay (a VALID that checked no read
    /// says little).
    pub reads: ReadCoverage,
}

impl Report {
    /// `VALID` or `INVALID: <failed properties>`.
    pub fn summary(&self) -> String {
        if self.ok {
            "VALID".to_string()
        } else {
            let failed: Vec<&str> = self
                .verdicts
                .iter()
                .filter(|v| !v.ok)
                .map(|v| v.property)
                .collect();
            format!("INVALID: {}", failed.join(", "))
        }
    }

    /// The summary line, then each failed property with its first `per_property` violations.
    pub fn details(&self, per_property: usize) -> String {
        let mut out = self.summary();
        for v in self.verdicts.iter().filter(|v| !v.ok) {
            out.push_str(&format!(
                "\n{} ({} violations):",
                v.property,
                v.violations.len()
            ));
            for line in v.violations.iter().take(per_property) {
                out.push_str(&format!("\n  - {line}"));
            }
        }
        out
    }

    /// The verdict of a property, by name.
    pub fn verdict(&self, property: &str) -> Option<&Verdict> {
        self.verdicts.iter().find(|v| v.property == property)
    }

    /// Names of the failed properties.
    pub fn failed(&self) -> Vec<&'static str> {
        self.verdicts
            .iter()
            .filter(|v| !v.ok)
            .map(|v| v.property)
            .collect()
    }
}

struct Collector {
    property: &'static str,
    violations: Vec<String>,
    count: usize,
}

impl Collector {
    fn new(property: &'static str) -> Self {
        Collector {
            property,
            violations: Vec::new(),
            count: 0,
        }
    }
    fn add(&mut self, v: String) {
        self.count += 1;
        if self.violations.len() < MAX_VIOLATIONS {
            self.violations.push(v);
        }
    }
    fn finish(self) -> Verdict {
        Verdict {
            property: self.property,
            ok: self.count == 0,
            violations: self.violations,
            notes: if self.count > MAX_VIOLATIONS {
                vec![format!("{} violations in all", self.count)]
            } else {
                Vec::new()
            },
        }
    }
}

/// An invoke paired with its completion.
pub(crate) struct Call<'a> {
    pub(crate) process: u64,
    pub(crate) kind: Kind,
    pub(crate) invoke_ns: u64,
    pub(crate) complete_ns: Option<u64>,
    pub(crate) phase: Phase,
    pub(crate) transfers: &'a [Transfer],
    pub(crate) results: &'a [String],
    pub(crate) commit_index: Option<u64>,
    pub(crate) applied_index: Option<u64>,
    pub(crate) balances: &'a [Balance],
    /// History reads: the account, the timestamp the page starts after, and the page's limit.
    pub(crate) account: Option<u64>,
    pub(crate) after: Option<u64>,
    pub(crate) limit: Option<u64>,
}

impl<'a> Call<'a> {
    /// A call as its invoke opens it.
    fn invoked(op: &'a Op) -> Call<'a> {
        Call {
            process: op.process,
            kind: op.kind,
            invoke_ns: op.time_ns,
            complete_ns: None,
            phase: Phase::Invoke,
            transfers: &op.transfers,
            results: &[],
            commit_index: None,
            applied_index: None,
            balances: &[],
            account: op.account,
            after: op.after,
            limit: op.limit,
        }
    }

    /// The outcome of event `i`.
    pub(crate) fn outcome(&self, i: usize) -> Outcome {
        match self.phase {
            Phase::Fail => Outcome::Refused,
            Phase::Info | Phase::Invoke => Outcome::Indefinite,
            Phase::Ok => match self.results.get(i).map(String::as_str) {
                Some("ok") | Some("exists") => Outcome::Acknowledged,
                Some(_) => Outcome::Refused,
                None => Outcome::Indefinite,
            },
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Acknowledged,
    Refused,
    Indefinite,
}

fn pair(ops: &[Op]) -> Vec<Call<'_>> {
    let mut calls: Vec<Call> = Vec::new();
    let mut open: HashMap<u64, usize> = HashMap::new();
    for op in ops.iter().filter(|o| o.kind != Kind::Nemesis) {
        if op.phase == Phase::Invoke {
            open.insert(op.process, calls.len());
            calls.push(Call::invoked(op));
        } else {
            let at = match open.remove(&op.process) {
                Some(at) => at,
                None => {
                    // A completion without invoke (only in hand-built histories): stands alone.
                    calls.push(Call::invoked(op));
                    calls.len() - 1
                }
            };
            let call = &mut calls[at];
            call.complete_ns = Some(op.time_ns);
            call.phase = op.phase;
            if call.transfers.is_empty() {
                call.transfers = &op.transfers;
            }
            call.results = &op.results;
            call.commit_index = op.commit_index;
            call.applied_index = op.applied_index;
            call.balances = &op.balances;
            call.account = op.account.or(call.account);
            call.after = op.after.or(call.after);
            call.limit = op.limit.or(call.limit);
        }
    }
    calls
}

/// Checks every property of the bank test on a history.
pub fn check(history: &History) -> Report {
    let calls = pair(&history.ops);
    let state = &history.state;

    let mut present: BTreeMap<u64, Vec<&Transfer>> = BTreeMap::new();
    for t in &state.transfers {
        present.entry(t.id).or_default().push(t);
    }
    let writes: Vec<&Call> = calls
        .iter()
        .filter(|c| c.kind == Kind::TransferBatch)
        .collect();
    // id -> acknowledged sends, refused sends, indefinite sends (call index, transfer)
    let mut acked: BTreeMap<u64, Vec<(&Call, &Transfer)>> = BTreeMap::new();
    let mut refused: BTreeMap<u64, Vec<(&Call, &Transfer, String)>> = BTreeMap::new();
    let mut indefinite: BTreeMap<u64, Vec<(&Call, &Transfer)>> = BTreeMap::new();
    for c in &writes {
        for (i, t) in c.transfers.iter().enumerate() {
            match c.outcome(i) {
                Outcome::Acknowledged => acked.entry(t.id).or_default().push((c, t)),
                Outcome::Indefinite => indefinite.entry(t.id).or_default().push((c, t)),
                Outcome::Refused => {
                    let why = if c.phase == Phase::Fail {
                        "batch failed".to_string()
                    } else {
                        c.results[i].clone()
                    };
                    refused.entry(t.id).or_default().push((c, t, why))
                }
            }
        }
    }

    let mut verdicts = vec![ledgers_balance(history), no_overdraft(history, &calls)];

    // 3. acknowledged_present_once
    let mut v = Collector::new("acknowledged_present_once");
    for (id, sends) in &acked {
        let (c, sent) = sends[0];
        match present.get(id).map(Vec::as_slice) {
            None | Some([]) => v.add(format!(
                "transfer {id} acknowledged (process {}, commit index {}) is missing from the final state",
                c.process,
                fmt_index(c.commit_index)
            )),
            Some([one]) => {
                if let Some((c, _)) = sends.iter().find(|(_, s)| !one.matches_sent(s)) {
                    v.add(format!(
                        "transfer {id} acknowledged (process {}, commit index {}) is present with other fields: sent {:?}, found {:?}",
                        c.process, fmt_index(c.commit_index), sent, one
                    ));
                }
            }
            Some(many) => v.add(format!(
                "transfer {id} acknowledged (process {}, commit index {}) is present {} times",
                c.process,
                fmt_index(c.commit_index),
                many.len()
            )),
        }
    }
    verdicts.push(v.finish());

    // 4. refused_absent
    let mut v = Collector::new("refused_absent");
    for (id, sends) in &refused {
        if acked.contains_key(id) || indefinite.contains_key(id) || !present.contains_key(id) {
            continue;
        }
        let (c, _, why) = &sends[0];
        v.add(format!(
            "transfer {id} definitely refused ({why}, process {}) is present in the final state",
            c.process
        ));
    }
    verdicts.push(v.finish());

    // 5. indefinite_at_most_once
    let mut v = Collector::new("indefinite_at_most_once");
    for (id, sends) in &indefinite {
        if acked.contains_key(id) {
            continue; // checked as acknowledged
        }
        match present.get(id).map(Vec::as_slice) {
            None | Some([]) => {}
            Some([one]) => {
                if !sends.iter().any(|(_, s)| one.matches_sent(s)) {
                    v.add(format!(
                        "transfer {id} sent with an indefinite outcome (process {}) is present with other fields: sent {:?}, found {:?}",
                        sends[0].0.process, sends[0].1, one
                    ));
                }
            }
            Some(many) => v.add(format!(
                "transfer {id} sent with an indefinite outcome (process {}) is present {} times",
                sends[0].0.process,
                many.len()
            )),
        }
    }
    verdicts.push(v.finish());

    verdicts.push(linked_chains_whole(&writes, &present));
    verdicts.push(pending_resolved_once(history));
    let (reads_verdict, reads) = reads::linearizable_reads(&calls, &writes, &present, &acked);
    verdicts.push(reads_verdict);
    verdicts.push(availability(history, &calls));
    verdicts.push(clock::ledger_time_not_ahead(history, &calls));
    verdicts.extend(feed_verdicts(history, &calls, &acked, present));

    let ok = verdicts.iter().all(|v| v.ok);
    Report {
        verdicts,
        ok,
        reads,
    }
}

/// The verdicts on the change feed and on balancing and closing transfers (see `checker/feed.rs`).
fn feed_verdicts(
    history: &History,
    calls: &[Call],
    acked: &BTreeMap<u64, Vec<(&Call, &Transfer)>>,
    present: BTreeMap<u64, Vec<&Transfer>>,
) -> Vec<Verdict> {
    let mut sends: BTreeMap<u64, Vec<&Transfer>> = BTreeMap::new();
    let mut committed: BTreeSet<u64> = acked.keys().copied().collect();
    committed.extend(present.keys());
    for c in calls {
        match (c.kind, c.phase) {
            (Kind::TransferBatch, _) => {
                for t in c.transfers {
                    sends.entry(t.id).or_default().push(t);
                }
            }
            (Kind::ReadHistory, Phase::Ok) => committed.extend(c.transfers.iter().map(|t| t.id)),
            _ => {}
        }
    }
    let sent = feed::Sent {
        sends,
        committed,
        present,
    };
    let changes = history.state.changes.as_deref();
    let balancing = feed::balancing_capped(changes, &sent);
    let Some(changes) = changes else {
        return vec![
            feed::no_feed("feed_matches_history"),
            feed::no_feed("feed_balances_consistent"),
            balancing,
            feed::no_feed("closed_accounts_untouched"),
            feed::no_feed("closing_reopens"),
        ];
    };
    let accounts = &history.state.accounts;
    vec![
        feed::feed_matches_history(changes, &sent),
        feed::feed_balances_consistent(changes, accounts),
        balancing,
        feed::closed_accounts_untouched(changes),
        feed::closing_reopens(changes, accounts),
    ]
}

fn fmt_index(i: Option<u64>) -> String {
    i.map_or_else(|| "unknown".to_string(), |i| i.to_string())
}

fn ledgers_balance(history: &History) -> Verdict {
    let mut v = Collector::new("ledgers_balance");
    let mut sums: BTreeMap<u32, [u128; 4]> = BTreeMap::new();
    for a in &history.state.accounts {
        let s = sums.entry(a.ledger).or_default();
        s[0] += u128::from(a.debits_posted);
        s[1] += u128::from(a.credits_posted);
        s[2] += u128::from(a.debits_pending);
        s[3] += u128::from(a.credits_pending);
    }
    for (ledger, s) in sums {
        if s[0] != s[1] {
            v.add(format!(
                "ledger {ledger}: debits_posted {} != credits_posted {}",
                s[0], s[1]
            ));
        }
        if s[2] != s[3] {
            v.add(format!(
                "ledger {ledger}: debits_pending {} != credits_pending {}",
                s[2], s[3]
            ));
        }
    }
    v.finish()
}

fn no_overdraft(history: &History, calls: &[Call]) -> Verdict {
    let mut v = Collector::new("no_overdraft");
    let guarded: BTreeSet<u64> = history
        .state
        .accounts
        .iter()
        .filter(|a| a.has_flag("debits_must_not_exceed_credits"))
        .map(|a| a.id)
        .collect();
    let over = |dp: u64, dpo: u64, cpo: u64| u128::from(dp) + u128::from(dpo) > u128::from(cpo);
    for a in &history.state.accounts {
        if guarded.contains(&a.id) && over(a.debits_pending, a.debits_posted, a.credits_posted) {
            v.add(format!(
                "account {} in the final state: debits_pending {} + debits_posted {} > credits_posted {}",
                a.id, a.debits_pending, a.debits_posted, a.credits_posted
            ));
        }
    }
    // Every event of the feed states both accounts' balances right after it: none may overdraw.
    for c in history.state.changes.iter().flatten() {
        for b in [&c.debit_account, &c.credit_account] {
            if guarded.contains(&b.id) && over(b.debits_pending, b.debits_posted, b.credits_posted)
            {
                v.add(format!(
                    "account {} after the feed's {:?} event at {} (transfer {}): debits_pending {} + debits_posted {} > credits_posted {}",
                    b.id, c.kind, c.timestamp, c.transfer.id, b.debits_pending, b.debits_posted, b.credits_posted
                ));
            }
        }
    }
    for c in calls.iter().filter(|c| c.phase == Phase::Ok) {
        for b in c.balances {
            if guarded.contains(&b.id) && over(b.debits_pending, b.debits_posted, b.credits_posted)
            {
                v.add(format!(
                    "account {} read by process {} at applied index {}: debits_pending {} + debits_posted {} > credits_posted {}",
                    b.id, c.process, fmt_index(c.applied_index), b.debits_pending, b.debits_posted, b.credits_posted
                ));
            }
        }
    }
    v.finish()
}

/// The chains of a batch: runs of `linked` events closed by one without (an open run at the end counts).
fn chains(transfers: &[Transfer]) -> Vec<Vec<u64>> {
    let mut out = Vec::new();
    let mut run = Vec::new();
    for t in transfers {
        run.push(t.id);
        if !t.has_flag("linked") {
            out.push(std::mem::take(&mut run));
        }
    }
    if !run.is_empty() {
        out.push(run);
    }
    out
}

/// Chains of more than one event must be all present or all absent. A chain is skipped if one of its
/// ids was also sent in another chain of different membership (its presence is explained elsewhere).
fn linked_chains_whole(writes: &[&Call], present: &BTreeMap<u64, Vec<&Transfer>>) -> Verdict {
    let mut v = Collector::new("linked_chains_whole");
    let mut all: Vec<(&Call, Vec<u64>)> = Vec::new();
    let mut shapes: HashMap<u64, BTreeSet<Vec<u64>>> = HashMap::new();
    for c in writes {
        for chain in chains(c.transfers) {
            for id in &chain {
                shapes.entry(*id).or_default().insert(chain.clone());
            }
            all.push((c, chain));
        }
    }
    let mut seen = BTreeSet::new();
    for (c, chain) in all {
        if chain.len() < 2 || !seen.insert(chain.clone()) {
            continue;
        }
        if chain.iter().any(|id| shapes[id].len() > 1) {
            continue;
        }
        let here: Vec<u64> = chain
            .iter()
            .copied()
            .filter(|id| present.contains_key(id))
            .collect();
        if !here.is_empty() && here.len() != chain.len() {
            let missing: Vec<u64> = chain
                .iter()
                .copied()
                .filter(|id| !present.contains_key(id))
                .collect();
            v.add(format!(
                "linked chain {chain:?} (process {}) is broken: present {here:?}, absent {missing:?}",
                c.process
            ));
        }
    }
    v.finish()
}

/// At most one present post/void references each pending transfer, and it references a present
/// pending transfer. (Expiry is not visible in the final state: no resolution is accepted.)
fn pending_resolved_once(history: &History) -> Verdict {
    let mut v = Collector::new("pending_resolved_once");
    let pendings: BTreeSet<u64> = history
        .state
        .transfers
        .iter()
        .filter(|t| t.is_pending())
        .map(|t| t.id)
        .collect();
    let mut resolvers: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
    for t in history
        .state
        .transfers
        .iter()
        .filter(|t| t.is_post() || t.is_void())
    {
        if !pendings.contains(&t.pending_id) {
            v.add(format!(
                "transfer {} resolves pending transfer {}, which is not a present pending transfer",
                t.id, t.pending_id
            ));
        }
        resolvers.entry(t.pending_id).or_default().push(t.id);
    }
    for (pending, ids) in resolvers {
        if ids.len() > 1 {
            v.add(format!(
                "pending transfer {pending} is resolved {} times: by transfers {ids:?}",
                ids.len()
            ));
        }
    }
    v.finish()
}

/// Share of ok ops among completed client ops invoked inside vs outside nemesis windows, and the
/// time to recover after each fault (see [`recovery_times`]), as figures. It fails for a window
/// after which no transfer batch ever completed ok (after its stop; after its start if it never
/// stopped): a cluster that never recovered. A run ends with a probe write after healing, so every
/// window of a healthy run has one.
fn availability(history: &History, calls: &[Call]) -> Verdict {
    let windows = nemesis_windows(history);
    let inside = |t: u64| windows.iter().any(|w| w.start_ns <= t && t <= w.stop_ns);
    let mut counts = [[0u64; 2]; 2]; // [inside?][ok?]
    for c in calls.iter().filter(|c| c.complete_ns.is_some()) {
        counts[usize::from(inside(c.invoke_ns))][usize::from(c.phase == Phase::Ok)] += 1;
    }
    let share = |n: [u64; 2]| {
        let total = n[0] + n[1];
        if total == 0 {
            "no ops".to_string()
        } else {
            format!(
                "{}/{} ok ({:.1}%)",
                n[1],
                total,
                100.0 * n[1] as f64 / total as f64
            )
        }
    };
    let mut notes = vec![
        format!("inside nemesis windows: {}", share(counts[1])),
        format!("outside nemesis windows: {}", share(counts[0])),
        format!("nemesis windows: {}", windows.len()),
    ];
    let recoveries = recovery_times(history);
    for (i, r) in recoveries.iter().enumerate().take(MAX_VIOLATIONS) {
        let w = &r.window;
        let what = format!("window {} {:?}", i + 1, w.description);
        notes.push(match r.recovery_ns {
            Some(ns) => format!(
                "time to recover after {what} (stopped at {}): {}",
                fmt_seconds(w.stop_ns),
                fmt_duration(ns)
            ),
            None if !w.closed => format!(
                "{what} (started at {}) never stopped: no time to recover",
                fmt_seconds(w.start_ns)
            ),
            None => format!(
                "no ok transfer batch completed after {what} (stopped at {}): not recovered",
                fmt_seconds(w.stop_ns)
            ),
        });
    }
    if recoveries.len() > MAX_VIOLATIONS {
        notes.push(format!(
            "{} more windows not listed",
            recoveries.len() - MAX_VIOLATIONS
        ));
    }
    if !recoveries.is_empty() {
        notes.push(recovery_summary(&recoveries));
    }
    let mut verdict = never_recovered(&recoveries).finish();
    verdict.notes.splice(0..0, notes);
    verdict
}

/// The windows after which no transfer batch ever completed ok.
fn never_recovered(recoveries: &[Recovery]) -> Collector {
    let mut v = Collector::new("availability");
    for (i, r) in recoveries.iter().enumerate() {
        let w = &r.window;
        if w.closed && r.first_ok_after_stop_ns.is_none() {
            v.add(format!(
                "no ok transfer batch completed after window {} {:?} stopped at {}: the cluster never recovered",
                i + 1,
                w.description,
                fmt_seconds(w.stop_ns)
            ));
        } else if !w.closed && r.first_ok_after_start_ns.is_none() {
            v.add(format!(
                "window {} {:?} started at {} and never stopped, and no ok transfer batch completed after its start",
                i + 1,
                w.description,
                fmt_seconds(w.start_ns)
            ));
        }
    }
    v
}

/// A nemesis fault window: from a `start` op to the `stop` op that closes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    pub start_ns: u64,
    /// The closing `stop` op's time, or the end of the run (the last op's time) if none came.
    pub stop_ns: u64,
    /// Whether a `stop` op closed the window.
    pub closed: bool,
    /// The `start` op's description (e.g. `kill -9 node 3`); empty if it had none.
    pub description: String,
}

impl Window {
    /// The fault kind: the first word of the description without punctuation around it (`kill`,
    /// `partition`, `one-way`, ...), or `fault`.
    pub fn kind(&self) -> &str {
        fault_kind(&self.description).unwrap_or("fault")
    }
}

fn fault_kind(description: &str) -> Option<&str> {
    let word = description.split_whitespace().next()?;
    Some(word.trim_matches(|c: char| !c.is_alphanumeric())).filter(|w| !w.is_empty())
}

/// The nemesis windows of a history, by start time. A `stop` closes the latest open window with the
/// same description, else the latest of the same kind (`kill -9 node 3` ... `kill: node 3
/// restarted`), else the latest open one; a
/// `stop` with no open window is ignored; a window never stopped closes at the end of the run.
pub fn nemesis_windows(history: &History) -> Vec<Window> {
    let end = history.ops.iter().map(|o| o.time_ns).max().unwrap_or(0);
    let mut windows: Vec<Window> = Vec::new();
    let mut open: Vec<(u64, String)> = Vec::new();
    for op in history.ops.iter().filter(|o| o.kind == Kind::Nemesis) {
        let description = op.description.clone().unwrap_or_default();
        match op.action {
            Some(NemesisAction::Start) => open.push((op.time_ns, description)),
            Some(NemesisAction::Stop) => {
                let kind = fault_kind(&description);
                let at = open
                    .iter()
                    .rposition(|(_, d)| *d == description)
                    .or_else(|| {
                        open.iter()
                            .rposition(|(_, d)| kind.is_some() && fault_kind(d) == kind)
                    })
                    .or_else(|| open.len().checked_sub(1));
                if let Some(at) = at {
                    let (start_ns, description) = open.remove(at);
                    windows.push(Window {
                        start_ns,
                        stop_ns: op.time_ns.max(start_ns),
                        closed: true,
                        description,
                    });
                }
            }
            None => {}
        }
    }
    for (start_ns, description) in open {
        windows.push(Window {
            start_ns,
            stop_ns: end.max(start_ns),
            closed: false,
            description,
        });
    }
    windows.sort_by_key(|w| (w.start_ns, w.stop_ns));
    windows
}

/// How writes fared around one nemesis window. Times are ns since the start of the run; "ok write"
/// means the completion of a transfer batch with phase `ok`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovery {
    pub window: Window,
    /// The first ok write completing at or after the window's start.
    pub first_ok_after_start_ns: Option<u64>,
    /// The first ok write completing at or after the window's stop (`None` if the window never
    /// stopped or no ok write came after its stop).
    pub first_ok_after_stop_ns: Option<u64>,
    /// Time to recover: `first_ok_after_stop_ns - window.stop_ns`.
    pub recovery_ns: Option<u64>,
    /// The longest stretch `(from, to)` without an ok write between the window's start and the first
    /// ok write after its stop (or its stop, if none came): writes kept succeeding until `from`.
    pub longest_gap: Option<(u64, u64)>,
}

/// The time to recover after each nemesis window (in [`nemesis_windows`] order): from the window's
/// stop to the first ok transfer batch completion at or after it.
pub fn recovery_times(history: &History) -> Vec<Recovery> {
    let mut oks: Vec<u64> = pair(&history.ops)
        .iter()
        .filter(|c| c.kind == Kind::TransferBatch && c.phase == Phase::Ok)
        .filter_map(|c| c.complete_ns)
        .collect();
    oks.sort_unstable();
    let first_at_or_after = |t: u64| oks.get(oks.partition_point(|&x| x < t)).copied();
    nemesis_windows(history)
        .into_iter()
        .map(|window| {
            let first_ok_after_start_ns = first_at_or_after(window.start_ns);
            let first_ok_after_stop_ns = if window.closed {
                first_at_or_after(window.stop_ns)
            } else {
                None
            };
            let until = first_ok_after_stop_ns.unwrap_or(window.stop_ns);
            let mut longest_gap: Option<(u64, u64)> = None;
            let mut from = window.start_ns;
            let lo = oks.partition_point(|&x| x < window.start_ns);
            let hi = oks.partition_point(|&x| x <= until);
            let ends = oks[lo..hi]
                .iter()
                .copied()
                .chain((first_ok_after_stop_ns.is_none()).then_some(until));
            for to in ends {
                if to > from && longest_gap.is_none_or(|(a, b)| to - from > b - a) {
                    longest_gap = Some((from, to));
                }
                from = to;
            }
            Recovery {
                recovery_ns: first_ok_after_stop_ns.map(|t| t - window.stop_ns),
                window,
                first_ok_after_start_ns,
                first_ok_after_stop_ns,
                longest_gap,
            }
        })
        .collect()
}

/// The median and max of the recovery times, as one line.
pub(crate) fn recovery_summary(recoveries: &[Recovery]) -> String {
    let mut times: Vec<u64> = recoveries.iter().filter_map(|r| r.recovery_ns).collect();
    times.sort_unstable();
    let Some(&max) = times.last() else {
        return format!(
            "time to recover: none of {} windows recovered",
            recoveries.len()
        );
    };
    format!(
        "time to recover: median {}, max {} ({} of {} windows recovered)",
        fmt_duration(median(&times)),
        fmt_duration(max),
        times.len(),
        recoveries.len()
    )
}

/// The median of sorted values (the mean of the two middle ones for an even count); 0 if empty.
pub(crate) fn median(sorted: &[u64]) -> u64 {
    let n = sorted.len();
    match n {
        0 => 0,
        _ if n % 2 == 1 => sorted[n / 2],
        _ => ((u128::from(sorted[n / 2 - 1]) + u128::from(sorted[n / 2])) / 2) as u64,
    }
}

/// A duration for people: `0.42 ms`, `700 ms`, `1.25 s`, `3 min 05 s`.
pub(crate) fn fmt_duration(ns: u64) -> String {
    let ms = ns as f64 / 1e6;
    if ns < 10_000_000 {
        format!("{ms:.2} ms")
    } else if ns < 1_000_000_000 {
        format!("{ms:.0} ms")
    } else if ns < 60_000_000_000 {
        format!("{:.2} s", ms / 1e3)
    } else {
        let s = ns / 1_000_000_000;
        format!("{} min {:02} s", s / 60, s % 60)
    }
}

/// A time since the start of the run: `10.700 s`.
pub(crate) fn fmt_seconds(ns: u64) -> String {
    format!("{:.3} s", ns as f64 / 1e9)
}

/// A client call reduced to what the report draws.
pub(crate) struct Timed {
    pub(crate) kind: Kind,
    pub(crate) invoke_ns: u64,
    /// `None`: never completed.
    pub(crate) complete_ns: Option<u64>,
    /// `Invoke` if never completed.
    pub(crate) phase: Phase,
    /// Events acknowledged (`ok` or `exists` in an `ok` batch).
    pub(crate) acknowledged: usize,
}

/// The client calls of a history, paired as the checker pairs them.
pub(crate) fn timed_calls(history: &History) -> Vec<Timed> {
    pair(&history.ops)
        .iter()
        .map(|c| Timed {
            kind: c.kind,
            invoke_ns: c.invoke_ns,
            complete_ns: c.complete_ns,
            phase: c.phase,
            acknowledged: (0..c.transfers.len())
                .filter(|&i| c.outcome(i) == Outcome::Acknowledged)
                .count(),
        })
        .collect()
}
