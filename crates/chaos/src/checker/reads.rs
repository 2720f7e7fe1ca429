//! `linearizable_reads`: every ok read against a replay of the present transfers in the order the
//! cluster applied them.
//!
//! Order: timestamps increase with the log index, so the present transfers sorted by their stored
//! timestamp are in apply order. The client's record gives the exact index of each acknowledged
//! transfer (the `commit_index` of the first ok batch whose result for it was `ok`); any other
//! transfer's index lies between the largest known index before it and the smallest known index
//! after it. At a read served at applied index `i`, a transfer whose upper bound is <= `i` was
//! applied, one whose lower bound is > `i` was not, and one in between is undecided: an account
//! that such a transfer touches is left out of that read (and only of that read).
//!
//! Expiry: a pending transfer with a timeout that no present transfer posts or voids expires when
//! the first log entry whose first event's timestamp reaches its deadline is applied. At index `i`
//! it has expired if a transfer applied by `i` lies far enough past the deadline to be in an entry
//! that started past it, and has not if a transfer known to come after `i` is stamped before the
//! deadline; otherwise the account is left out of that read.
//!
//! Transfers without a place (acknowledged but missing from the final state, which
//! `acknowledged_present_once` reports, or present without a timestamp) count at their commit
//! index if it is known; an account touched by one whose index is unknown is never compared.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::{fmt_index, Call, Collector, Verdict};
use crate::history::{Balance, Kind, Phase, Transfer};

/// Far more nanoseconds than the events of one log entry span (Bulwark puts at most 8190 events,
/// one nanosecond apart, in an entry): a transfer stamped this far past a deadline is in an entry
/// that started past it.
const ENTRY_SPAN_NS: u64 = 1_000_000;
const NANOS_PER_SECOND: u64 = 1_000_000_000;

/// How many reads the checker compared with the replay.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ReadCoverage {
    /// Balance reads completed ok.
    pub balance_reads: usize,
    /// Of those, how many had at least one account's balances compared with the replay.
    pub balance_reads_checked: usize,
    /// The accounts with at least one balance read compared.
    pub accounts_checked: BTreeSet<u64>,
    /// History reads completed ok.
    pub history_reads: usize,
    /// Of those, how many had their page of transfers compared with the replay (a history
    /// written before reads recorded their page has none).
    pub history_reads_checked: usize,
    /// Transfers returned by the compared history reads.
    pub history_transfers_checked: usize,
    /// Running balances (an account with `history`, right after one of its transfers) compared.
    pub history_balances_checked: usize,
}

impl ReadCoverage {
    /// One line for people.
    pub fn summary(&self) -> String {
        format!(
            "reads compared with the replay: {} of {} balance reads (accounts {:?}), {} of {} history reads ({} transfers, {} running balances)",
            self.balance_reads_checked,
            self.balance_reads,
            self.accounts_checked,
            self.history_reads_checked,
            self.history_reads,
            self.history_transfers_checked,
            self.history_balances_checked
        )
    }
}

/// Balances as signed sums, so that effects add up in any order.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Sums {
    debits_pending: i128,
    debits_posted: i128,
    credits_pending: i128,
    credits_posted: i128,
}

impl Sums {
    fn of(b: &Balance) -> Sums {
        Sums {
            debits_pending: i128::from(b.debits_pending),
            debits_posted: i128::from(b.debits_posted),
            credits_pending: i128::from(b.credits_pending),
            credits_posted: i128::from(b.credits_posted),
        }
    }

    fn add(&mut self, d: &Sums) {
        self.debits_pending += d.debits_pending;
        self.debits_posted += d.debits_posted;
        self.credits_pending += d.credits_pending;
        self.credits_posted += d.credits_posted;
    }

    fn negated(&self) -> Sums {
        Sums {
            debits_pending: -self.debits_pending,
            debits_posted: -self.debits_posted,
            credits_pending: -self.credits_pending,
            credits_posted: -self.credits_posted,
        }
    }

    fn text(&self) -> String {
        format!(
            "debits_pending {}, debits_posted {}, credits_pending {}, credits_posted {}",
            self.debits_pending, self.debits_posted, self.credits_pending, self.credits_posted
        )
    }
}

/// What applying `t` does to each account it touches; `None` for a post or void whose pending
/// transfer is unknown.
fn effects(t: &Transfer, replay: &BTreeMap<u64, Transfer>) -> Option<Vec<(u64, Sums)>> {
    let debit = |pending: u64, posted: u64| Sums {
        debits_pending: i128::from(pending),
        debits_posted: i128::from(posted),
        ..Sums::default()
    };
    let credit = |pending: u64, posted: u64| Sums {
        credits_pending: i128::from(pending),
        credits_posted: i128::from(posted),
        ..Sums::default()
    };
    if t.is_post() || t.is_void() {
        let p = replay.get(&t.pending_id)?;
        let posted = match (t.is_post(), t.amount) {
            (false, _) => 0,
            (true, 0) => p.amount,
            (true, amount) => amount,
        };
        let mut d = debit(0, posted);
        d.debits_pending = -i128::from(p.amount);
        let mut c = credit(0, posted);
        c.credits_pending = -i128::from(p.amount);
        Some(vec![(p.debit, d), (p.credit, c)])
    } else if t.is_pending() {
        Some(vec![
            (t.debit, debit(t.amount, 0)),
            (t.credit, credit(t.amount, 0)),
        ])
    } else {
        Some(vec![
            (t.debit, debit(0, t.amount)),
            (t.credit, credit(0, t.amount)),
        ])
    }
}

/// The present transfers in apply order, each with the bounds of its log index.
struct Timeline<'a> {
    seq: Vec<&'a Transfer>,
    position: HashMap<u64, usize>,
    /// The largest known commit index at or before each position (0 if none).
    lo: Vec<u64>,
    /// The smallest known commit index at or after each position (`u64::MAX` if none).
    hi: Vec<u64>,
}

impl<'a> Timeline<'a> {
    /// The timeline, and a violation for each acknowledged transfer whose commit index is below
    /// that of one the cluster applied before it (timestamps and indexes disagree).
    fn new(
        replay: &'a BTreeMap<u64, Transfer>,
        commit: &HashMap<u64, u64>,
    ) -> (Timeline<'a>, Vec<String>) {
        let mut seq: Vec<&Transfer> = replay.values().filter(|t| t.timestamp > 0).collect();
        seq.sort_by_key(|t| (t.timestamp, t.id));
        let mut disorder = Vec::new();
        let mut lo = Vec::with_capacity(seq.len());
        let mut highest: Option<(u64, &Transfer)> = None;
        for t in &seq {
            if let Some(&ci) = commit.get(&t.id) {
                if let Some((before, earlier)) = highest.filter(|(h, _)| *h > ci) {
                    disorder.push(format!(
                        "transfer {} (timestamp {}) was acknowledged at commit index {ci}, below commit index {before} of transfer {} which the cluster applied before it (timestamp {})",
                        t.id, t.timestamp, earlier.id, earlier.timestamp
                    ));
                } else {
                    highest = Some((ci, t));
                }
            }
            lo.push(highest.map_or(0, |(h, _)| h));
        }
        let mut hi = vec![u64::MAX; seq.len()];
        let mut lowest = u64::MAX;
        for (p, t) in seq.iter().enumerate().rev() {
            if let Some(&ci) = commit.get(&t.id) {
                lowest = lowest.min(ci);
            }
            hi[p] = lowest;
        }
        let position = seq.iter().enumerate().map(|(p, t)| (t.id, p)).collect();
        let timeline = Timeline {
            seq,
            position,
            lo,
            hi,
        };
        (timeline, disorder)
    }

    /// `(a, b)`: at applied index `index`, positions before `a` were applied, positions from `b`
    /// on were not, positions in between are undecided.
    fn at(&self, index: u64) -> (usize, usize) {
        let a = self.hi.partition_point(|&h| h <= index);
        let b = self.lo.partition_point(|&l| l <= index);
        (a, b.max(a))
    }

    fn timestamp(&self, position: usize) -> u64 {
        self.seq[position].timestamp
    }
}

/// One account's side of the replay.
#[derive(Default)]
struct Line {
    /// Timeline positions of the transfers touching it, in order.
    positions: Vec<usize>,
    /// Its sums right after each of them (expiries left out).
    after: Vec<Sums>,
    /// Unresolved pending transfers with a timeout touching it, by deadline (ns): deadline,
    /// position, and what their expiry does to it.
    expiring: Vec<(u64, usize, Sums)>,
    /// The sums of the first 1, 2, ... expiries of `expiring`.
    expired_sums: Vec<Sums>,
    /// Transfers without a place in the timeline but with a known commit index, by that index.
    unplaced: Vec<(u64, Sums)>,
    /// The sums of the first 1, 2, ... of `unplaced`.
    unplaced_sums: Vec<Sums>,
    /// Touched by a transfer whose index (or effect) is unknown: never compared.
    undecidable: bool,
}

impl Line {
    /// Sorts what was gathered and sums it up, so that each read costs a few binary searches.
    fn finish(&mut self) {
        self.expiring
            .sort_by_key(|(deadline, p, _)| (*deadline, *p));
        self.expired_sums = running_sums(self.expiring.iter().map(|(_, _, e)| e));
        self.unplaced.sort_by_key(|(ci, _)| *ci);
        self.unplaced_sums = running_sums(self.unplaced.iter().map(|(_, e)| e));
    }
}

fn running_sums<'a>(effects: impl Iterator<Item = &'a Sums>) -> Vec<Sums> {
    let mut total = Sums::default();
    effects
        .map(|e| {
            total.add(e);
            total
        })
        .collect()
}

struct Lines {
    lines: HashMap<u64, Line>,
    empty: Line,
}

impl Lines {
    fn new(
        timeline: &Timeline,
        replay: &BTreeMap<u64, Transfer>,
        commit: &HashMap<u64, u64>,
    ) -> Lines {
        let mut lines: HashMap<u64, Line> = HashMap::new();
        for (p, t) in timeline.seq.iter().enumerate() {
            match effects(t, replay) {
                Some(effects) => {
                    for (account, e) in effects {
                        let line = lines.entry(account).or_default();
                        let mut sums = line.after.last().copied().unwrap_or_default();
                        sums.add(&e);
                        line.positions.push(p);
                        line.after.push(sums);
                    }
                }
                None => unplaced(&mut lines, t, None, &[]),
            }
        }
        for t in replay.values().filter(|t| t.timestamp == 0) {
            let known = commit.get(&t.id).copied();
            match effects(t, replay) {
                Some(e) => unplaced(&mut lines, t, known, &e),
                None => unplaced(&mut lines, t, None, &[]),
            }
        }
        let resolved: BTreeSet<u64> = replay
            .values()
            .filter(|t| t.is_post() || t.is_void())
            .map(|t| t.pending_id)
            .collect();
        let expiring = replay
            .values()
            .filter(|t| t.is_pending() && t.timeout > 0 && !resolved.contains(&t.id));
        for t in expiring {
            let effects = effects(t, replay).expect("a pending transfer's effects are known");
            for (account, e) in effects {
                let line = lines.entry(account).or_default();
                match timeline.position.get(&t.id) {
                    Some(&p) => {
                        let deadline =
                            t.timestamp + u64::from(t.timeout).saturating_mul(NANOS_PER_SECOND);
                        line.expiring.push((deadline, p, e.negated()));
                    }
                    // Its own effect has no place; its expiry has none either.
                    None => line.undecidable = true,
                }
            }
        }
        for line in lines.values_mut() {
            line.finish();
        }
        Lines {
            lines,
            empty: Line::default(),
        }
    }

    fn line(&self, account: u64) -> &Line {
        self.lines.get(&account).unwrap_or(&self.empty)
    }

    /// The account's sums at applied index `index` (`(a, b)` from [`Timeline::at`]), or `None` if
    /// undecided.
    fn at(&self, account: u64, index: u64, (a, b): (usize, usize), tl: &Timeline) -> Option<Sums> {
        let line = self.line(account);
        let k = line.positions.partition_point(|&p| p < a);
        if line.undecidable || line.positions.get(k).is_some_and(|&p| p < b) {
            return None;
        }
        let mut sums = k.checked_sub(1).map_or(Sums::default(), |k| line.after[k]);
        let u = line.unplaced.partition_point(|(ci, _)| *ci <= index);
        if let Some(e) = u.checked_sub(1).map(|u| &line.unplaced_sums[u]) {
            sums.add(e);
        }
        // Expired: the transfer before `a` was applied and lies in an entry past the deadline
        // (so the pending itself, stamped before its deadline, was applied too).
        let expired = match a.checked_sub(1) {
            Some(last) => line.expiring.partition_point(|(deadline, _, _)| {
                deadline.saturating_add(ENTRY_SPAN_NS) <= tl.timestamp(last)
            }),
            None => 0,
        };
        if let Some(e) = expired.checked_sub(1).map(|e| &line.expired_sums[e]) {
            sums.add(e);
        }
        // Not expired yet: a transfer applied after `index` is stamped at or before the deadline.
        let not_before = tl.seq.get(b).map_or(u64::MAX, |t| t.timestamp);
        let undecided = line.expiring[expired..]
            .iter()
            .take_while(|(deadline, _, _)| *deadline < not_before)
            .any(|(_, p, _)| *p < a);
        (!undecided).then_some(sums)
    }

    /// The account's sums right after the transfer at `position`, or `None` if undecided.
    fn after_transfer(&self, account: u64, position: usize, tl: &Timeline) -> Option<Sums> {
        let line = self.line(account);
        if line.undecidable || !line.unplaced.is_empty() {
            return None;
        }
        let k = line.positions.binary_search(&position).ok()?;
        let mut sums = line.after[k];
        let stamped = tl.timestamp(position);
        let expired = line
            .expiring
            .partition_point(|(deadline, _, _)| deadline.saturating_add(ENTRY_SPAN_NS) <= stamped);
        if let Some(e) = expired.checked_sub(1).map(|e| &line.expired_sums[e]) {
            sums.add(e);
        }
        // A deadline at or before the transfer's timestamp but within an entry's span of it: its
        // entry may or may not have started past the deadline.
        let undecided = line.expiring[expired..]
            .iter()
            .take_while(|(deadline, _, _)| *deadline <= stamped)
            .any(|(_, p, _)| *p < position);
        (!undecided).then_some(sums)
    }
}

/// Records a transfer without a place in the timeline on the accounts it touches: at its commit
/// index if known, else the accounts are never compared.
fn unplaced(lines: &mut HashMap<u64, Line>, t: &Transfer, known: Option<u64>, e: &[(u64, Sums)]) {
    if e.is_empty() {
        for account in [t.debit, t.credit].into_iter().filter(|a| *a != 0) {
            lines.entry(account).or_default().undecidable = true;
        }
    }
    for (account, sums) in e {
        let line = lines.entry(*account).or_default();
        match known {
            Some(ci) => line.unplaced.push((ci, *sums)),
            None => line.undecidable = true,
        }
    }
}

/// Commit index of each transfer: that of the first ok batch whose result for it was `ok`.
fn commit_indexes(writes: &[&Call]) -> HashMap<u64, u64> {
    let mut commit: HashMap<u64, u64> = HashMap::new();
    for c in writes.iter().filter(|c| c.phase == Phase::Ok) {
        let Some(ci) = c.commit_index else { continue };
        for (i, t) in c.transfers.iter().enumerate() {
            if c.results.get(i).map(String::as_str) == Some("ok") {
                let e = commit.entry(t.id).or_insert(ci);
                *e = (*e).min(ci);
            }
        }
    }
    commit
}

/// Acknowledged writes by completion time, with the running maximum of their commit index: the
/// latest a read invoked at time t must have seen is the maximum over the acks done before t (a
/// binary search, not a scan per read: a 20-minute run has ~10^5 of each).
struct Acks {
    done: Vec<u64>,
    highest: Vec<(u64, u64, u64)>,
}

impl Acks {
    fn new(writes: &[&Call]) -> Acks {
        let mut acks: Vec<(u64, u64, u64)> = writes
            .iter()
            .filter(|c| c.phase == Phase::Ok)
            .filter_map(|c| Some((c.complete_ns?, c.commit_index?, c.process)))
            .collect();
        acks.sort();
        let mut highest: Vec<(u64, u64, u64)> = Vec::with_capacity(acks.len());
        for &(done, ci, p) in &acks {
            match highest.last() {
                Some(&(_, best, _)) if best >= ci => highest.push(*highest.last().expect("one")),
                _ => highest.push((done, ci, p)),
            }
        }
        Acks {
            done: acks.iter().map(|a| a.0).collect(),
            highest,
        }
    }

    fn stale(&self, r: &Call, applied: u64) -> Option<String> {
        let before = self.done.partition_point(|done| *done < r.invoke_ns);
        let &(done, ci, p) = before.checked_sub(1).map(|i| &self.highest[i])?;
        (applied < ci).then(|| format!(
            "stale read by process {} invoked at {} ns: applied index {applied} < commit index {ci} of a write by process {p} acknowledged at {done} ns",
            r.process, r.invoke_ns
        ))
    }
}

/// What every read is compared with.
struct Replay<'a> {
    timeline: Timeline<'a>,
    lines: Lines,
    present: &'a BTreeMap<u64, Vec<&'a Transfer>>,
}

pub(crate) fn linearizable_reads(
    calls: &[Call],
    writes: &[&Call],
    present: &BTreeMap<u64, Vec<&Transfer>>,
    acked: &BTreeMap<u64, Vec<(&Call, &Transfer)>>,
) -> (Verdict, ReadCoverage) {
    let mut v = Collector::new("linearizable_reads");
    let commit = commit_indexes(writes);
    // The replay set: present transfers (stored fields) plus acknowledged missing ones (sent).
    let mut set: BTreeMap<u64, Transfer> = BTreeMap::new();
    for (id, ts) in present {
        set.insert(*id, ts[0].clone());
    }
    for (id, sends) in acked {
        set.entry(*id).or_insert_with(|| Transfer {
            timestamp: 0,
            ..sends[0].1.clone()
        });
    }
    let (timeline, disorder) = Timeline::new(&set, &commit);
    for d in disorder {
        v.add(d);
    }
    let replay = Replay {
        lines: Lines::new(&timeline, &set, &commit),
        timeline,
        present,
    };
    let acks = Acks::new(writes);
    let mut coverage = ReadCoverage::default();
    let reads = calls.iter().filter(|c| {
        matches!(c.kind, Kind::ReadBalances | Kind::ReadHistory) && c.phase == Phase::Ok
    });
    for r in reads {
        let Some(applied) = r.applied_index else {
            v.add(format!(
                "read by process {} at {} ns completed ok without an applied index",
                r.process, r.invoke_ns
            ));
            continue;
        };
        if let Some(stale) = acks.stale(r, applied) {
            v.add(stale);
        }
        if r.kind == Kind::ReadBalances {
            check_balances(r, applied, &replay, &mut v, &mut coverage);
        } else {
            check_history_page(r, applied, &replay, &mut v, &mut coverage);
        }
    }
    let mut verdict = v.finish();
    verdict.notes.push(coverage.summary());
    (verdict, coverage)
}

fn check_balances(
    r: &Call,
    applied: u64,
    replay: &Replay,
    v: &mut Collector,
    coverage: &mut ReadCoverage,
) {
    coverage.balance_reads += 1;
    let bounds = replay.timeline.at(applied);
    let mut compared = false;
    for b in r.balances {
        let Some(want) = replay.lines.at(b.id, applied, bounds, &replay.timeline) else {
            continue;
        };
        compared = true;
        coverage.accounts_checked.insert(b.id);
        if Sums::of(b) != want {
            v.add(format!(
                "read by process {} at applied index {applied}: account {} returned {}, replay gives {}",
                r.process,
                b.id,
                Sums::of(b).text(),
                want.text()
            ));
        }
    }
    coverage.balance_reads_checked += usize::from(compared);
}

/// A history read returns the account's transfers after a timestamp, oldest first, at most
/// `limit`: exactly the next ones of the account in apply order, each as stored, none applied after
/// the read's index, and (a page shorter than its limit) none missing that was applied by then.
fn check_history_page(
    r: &Call,
    applied: u64,
    replay: &Replay,
    v: &mut Collector,
    coverage: &mut ReadCoverage,
) {
    coverage.history_reads += 1;
    let (Some(account), Some(limit)) = (r.account, r.limit) else {
        return; // written before history reads recorded their page
    };
    coverage.history_reads_checked += 1;
    coverage.history_transfers_checked += r.transfers.len();
    let after = r.after.unwrap_or(0);
    let what = format!(
        "history read by process {} of account {account} after {after} at applied index {applied}",
        r.process
    );
    for t in r.transfers {
        match replay.present.get(&t.id).and_then(|s| s.first()) {
            None => v.add(format!(
                "{what}: returned transfer {}, which is not in the final state",
                t.id
            )),
            Some(stored) if *stored != t => v.add(format!(
                "{what}: returned transfer {} as {t:?}, the final state holds {stored:?}",
                t.id
            )),
            Some(_) => {}
        }
    }
    if r.transfers.len() as u64 > limit {
        v.add(format!(
            "{what}: returned {} transfers, above its limit {limit}",
            r.transfers.len()
        ));
    }
    let tl = &replay.timeline;
    let line = replay.lines.line(account);
    let first = line
        .positions
        .partition_point(|&p| tl.timestamp(p) <= after);
    let expected = &line.positions[first..(first + r.transfers.len()).min(line.positions.len())];
    let returned: Vec<u64> = r.transfers.iter().map(|t| t.id).collect();
    let want: Vec<u64> = expected.iter().map(|&p| tl.seq[p].id).collect();
    if returned != want {
        v.add(format!(
            "{what}: returned transfers {} where the account's next transfers in apply order are {}",
            ids(&returned),
            ids(&want)
        ));
        return;
    }
    let (a, b) = tl.at(applied);
    if let Some(&last) = expected.last().filter(|&&p| p >= b) {
        v.add(format!(
            "{what}: returned transfer {}, applied at index {} or later",
            tl.seq[last].id, tl.lo[last]
        ));
    }
    let next = line.positions.get(first + r.transfers.len());
    if (r.transfers.len() as u64) < limit {
        if let Some(&missing) = next.filter(|&&q| q < a) {
            v.add(format!(
                "{what}: the page of {} transfers (limit {limit}) ends before transfer {}, applied by index {}",
                r.transfers.len(),
                tl.seq[missing].id,
                fmt_index(Some(tl.hi[missing]))
            ));
        }
    }
    check_running_balances(r, account, expected, replay, v, coverage, &what);
}

/// The balances a history read gave after each transfer (accounts with `history`).
fn check_running_balances(
    r: &Call,
    account: u64,
    positions: &[usize],
    replay: &Replay,
    v: &mut Collector,
    coverage: &mut ReadCoverage,
    what: &str,
) {
    if r.balances.len() != positions.len() {
        return;
    }
    for (&p, b) in positions.iter().zip(r.balances) {
        let Some(want) = replay.lines.after_transfer(account, p, &replay.timeline) else {
            continue;
        };
        coverage.history_balances_checked += 1;
        if Sums::of(b) != want {
            v.add(format!(
                "{what}: balances right after transfer {} returned {}, replay gives {}",
                replay.timeline.seq[p].id,
                Sums::of(b).text(),
                want.text()
            ));
        }
    }
}

/// Ids for a message: all of a short list, the ends of a long one.
fn ids(list: &[u64]) -> String {
    if list.len() <= 8 {
        format!("{list:?}")
    } else {
        format!(
            "[{}, {}, {}, ... {} more ..., {}]",
            list[0],
            list[1],
            list[2],
            list.len() - 4,
            list[list.len() - 1]
        )
    }
}
