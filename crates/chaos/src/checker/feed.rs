//! The change feed against the history, and the rules of balancing and closing transfers.
//!
//! The feed (`GET /v1/changes`, read whole from every node after the run) lists every event the
//! ledger applied, in apply order, with both accounts' balances right after it. It is checked
//! against the client's record (`feed_matches_history`), against itself and the final state by
//! replaying it (`feed_balances_consistent`), and it is what makes the closing rules checkable:
//! it is the only record of when an account was closed and reopened (`closed_accounts_untouched`,
//! `closing_reopens`). `balancing_capped` uses it to check that a balancing transfer moved
//! exactly what it could: its balances after the event say how much was left.
//!
//! Each check is a pure function of parsed data, so that hand-made broken feeds show it failing.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::{Collector, Verdict};
use crate::history::{Account, Balance, Change, ChangeKind, Transfer};

const NANOS_PER_SECOND: u64 = 1_000_000_000;

/// What the history says about transfers, for the feed's checks.
pub struct Sent<'a> {
    /// Every transfer the workload sent, by id (each send; retries repeat it).
    pub sends: BTreeMap<u64, Vec<&'a Transfer>>,
    /// Ids the history knows as committed: acknowledged `ok`/`exists`, or read back (a history
    /// read or the final state).
    pub committed: BTreeSet<u64>,
    /// The final state's transfers by id.
    pub present: BTreeMap<u64, Vec<&'a Transfer>>,
}

/// A verdict that cannot be given without a feed: passes, saying so (a history written before
/// the feed existed). A run without a feed fails `feed_identical` instead.
pub fn no_feed(property: &'static str) -> Verdict {
    Verdict {
        property,
        ok: true,
        violations: Vec::new(),
        notes: vec!["the history holds no change feed: not checked".into()],
    }
}

fn describe(c: &Change) -> String {
    format!(
        "{:?} event at {} of transfer {}",
        c.kind, c.timestamp, c.transfer.id
    )
}

/// Every committed transfer appears in the feed exactly once with the kind its flags give, every
/// transfer of the feed was sent by the workload (with those fields) and is the final state's,
/// the events are in strictly increasing timestamp order, an expiry comes at or after its pending
/// transfer's deadline, and each pending transfer is resolved at most once, after it was created.
pub fn feed_matches_history(feed: &[Change], sent: &Sent) -> Verdict {
    let mut v = Collector::new("feed_matches_history");
    let mut created: BTreeSet<u64> = BTreeSet::new();
    let mut pendings: HashMap<u64, &Transfer> = HashMap::new();
    let mut resolutions: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    let mut last = 0u64;
    for c in feed {
        if c.timestamp <= last {
            v.add(format!("{} comes after timestamp {last}", describe(c)));
        }
        last = last.max(c.timestamp);
        let t = &c.transfer;
        if c.kind == ChangeKind::TwoPhaseExpired {
            check_expiry(&mut v, c, pendings.get(&t.id).copied());
            resolutions.entry(t.id).or_default().push(describe(c));
            continue;
        }
        if c.timestamp != t.timestamp {
            v.add(format!(
                "{}: the transfer's own timestamp is {}",
                describe(c),
                t.timestamp
            ));
        }
        if !created.insert(t.id) {
            v.add(format!("{}: the transfer appears again", describe(c)));
        }
        check_against_history(&mut v, c, sent);
        match c.kind {
            ChangeKind::TwoPhasePending => {
                pendings.insert(t.id, t);
            }
            ChangeKind::TwoPhasePosted | ChangeKind::TwoPhaseVoided => {
                if !pendings.contains_key(&t.pending_id) {
                    v.add(format!(
                        "{} resolves pending transfer {}, which the feed has not shown pending before",
                        describe(c),
                        t.pending_id
                    ));
                }
                resolutions
                    .entry(t.pending_id)
                    .or_default()
                    .push(describe(c));
            }
            _ => {}
        }
    }
    for (pending, events) in resolutions.iter().filter(|(_, e)| e.len() > 1) {
        v.add(format!(
            "pending transfer {pending} is resolved {} times: {events:?}",
            events.len()
        ));
    }
    for id in sent.committed.iter().filter(|id| !created.contains(id)) {
        v.add(format!(
            "transfer {id}, committed by the history, is missing from the feed"
        ));
    }
    let mut verdict = v.finish();
    verdict.notes.push(format!(
        "{} events, {} transfers",
        feed.len(),
        created.len()
    ));
    verdict
}

/// An expiry must be of a pending transfer the feed created before, with a timeout, at or after
/// its deadline, and carry that pending transfer as it was stored.
fn check_expiry(v: &mut Collector, c: &Change, pending: Option<&Transfer>) {
    let Some(p) = pending else {
        v.add(format!(
            "{}: the feed has not shown that transfer pending before",
            describe(c)
        ));
        return;
    };
    if *p != c.transfer {
        v.add(format!(
            "{}: carries {:?}, the pending transfer is {p:?}",
            describe(c),
            c.transfer
        ));
    }
    let deadline = u64::from(p.timeout)
        .saturating_mul(NANOS_PER_SECOND)
        .saturating_add(p.timestamp);
    if p.timeout == 0 || c.timestamp < deadline {
        v.add(format!(
            "{}: the pending transfer (timeout {} s) is due at {deadline}",
            describe(c),
            p.timeout
        ));
    }
}

/// A created transfer of the feed was sent (with those fields), has the kind its sent flags
/// give, and is the transfer the final state holds under its id.
fn check_against_history(v: &mut Collector, c: &Change, sent: &Sent) {
    let t = &c.transfer;
    let Some(sends) = sent.sends.get(&t.id) else {
        v.add(format!(
            "{}: the workload never sent that transfer",
            describe(c)
        ));
        return;
    };
    if !sends.iter().any(|s| t.matches_sent(s)) {
        v.add(format!(
            "{}: stored as {t:?}, sent as {:?}",
            describe(c),
            sends[0]
        ));
    }
    let expected = ChangeKind::of(sends[0]);
    if c.kind != expected {
        v.add(format!(
            "{}: the transfer was sent with flags {:?}, an event of kind {expected:?}",
            describe(c),
            sends[0].flags
        ));
    }
    match sent.present.get(&t.id).map(Vec::as_slice) {
        Some([one]) if *one == t => {}
        Some([one]) => v.add(format!(
            "{}: the feed holds {t:?}, the final state {one:?}",
            describe(c)
        )),
        _ => v.add(format!(
            "{}: the final state does not hold that transfer once",
            describe(c)
        )),
    }
}

/// Balances as signed sums, so that a broken feed that drives one below zero is reported, not
/// a panic.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Sums([i128; 4]);

impl Sums {
    fn of(b: &Balance) -> Sums {
        Sums([
            b.debits_pending.into(),
            b.debits_posted.into(),
            b.credits_pending.into(),
            b.credits_posted.into(),
        ])
    }
    fn text(&self) -> String {
        let [dpe, dpo, cpe, cpo] = self.0;
        format!("debits_pending {dpe}, debits_posted {dpo}, credits_pending {cpe}, credits_posted {cpo}")
    }
}

const DEBITS_PENDING: usize = 0;
const DEBITS_POSTED: usize = 1;
const CREDITS_PENDING: usize = 2;
const CREDITS_POSTED: usize = 3;

/// What an event does: the debit and credit accounts, and the amounts added to (pending,
/// posted) on each side; `None` for a post or void whose pending transfer the feed has not shown.
fn event_effect(c: &Change, pendings: &HashMap<u64, Transfer>) -> Option<(u64, u64, i128, i128)> {
    let t = &c.transfer;
    let amount = i128::from(t.amount);
    Some(match c.kind {
        ChangeKind::SinglePhase => (t.debit, t.credit, 0, amount),
        ChangeKind::TwoPhasePending => (t.debit, t.credit, amount, 0),
        ChangeKind::TwoPhaseExpired => (t.debit, t.credit, -amount, 0),
        ChangeKind::TwoPhasePosted | ChangeKind::TwoPhaseVoided => {
            let p = pendings.get(&t.pending_id)?;
            let posted = if c.kind == ChangeKind::TwoPhasePosted {
                amount
            } else {
                0
            };
            (p.debit, p.credit, -i128::from(p.amount), posted)
        }
    })
}

/// Replaying the feed from zero gives every balance it states after each event, and at its end
/// the final state's balances. The replay never takes a stated balance over: a balance stated
/// wrong once is one violation, a ledger that moved a wrong amount shows in every later event
/// of the account.
pub fn feed_balances_consistent(feed: &[Change], accounts: &[Account]) -> Verdict {
    let mut v = Collector::new("feed_balances_consistent");
    let mut replay: BTreeMap<u64, Sums> = BTreeMap::new();
    let mut pendings: HashMap<u64, Transfer> = HashMap::new();
    for c in feed {
        if c.kind == ChangeKind::TwoPhasePending {
            pendings.insert(c.transfer.id, c.transfer.clone());
        }
        let Some((debit, credit, pending, posted)) = event_effect(c, &pendings) else {
            v.add(format!(
                "{}: its pending transfer {} is not in the feed before it",
                describe(c),
                c.transfer.pending_id
            ));
            continue;
        };
        let sides = [
            (
                debit,
                &c.debit_account,
                DEBITS_PENDING,
                DEBITS_POSTED,
                "debit",
            ),
            (
                credit,
                &c.credit_account,
                CREDITS_PENDING,
                CREDITS_POSTED,
                "credit",
            ),
        ];
        for (id, stated, pending_at, posted_at, side) in sides {
            if stated.id != id {
                v.add(format!(
                    "{}: its {side} account is {id}, the event states the balances of {}",
                    describe(c),
                    stated.id
                ));
            }
            let sums = replay.entry(id).or_default();
            sums.0[pending_at] += pending;
            sums.0[posted_at] += posted;
            let stated = Sums::of(stated);
            if *sums != stated {
                v.add(format!(
                    "{}: account {id} replayed to {}, the event states {}",
                    describe(c),
                    sums.text(),
                    stated.text()
                ));
            }
        }
    }
    final_balances_match(&mut v, &replay, accounts);
    v.finish()
}

fn final_balances_match(v: &mut Collector, replay: &BTreeMap<u64, Sums>, accounts: &[Account]) {
    let ids: BTreeSet<u64> = accounts.iter().map(|a| a.id).collect();
    for a in accounts {
        let want = Sums::of(&Balance {
            id: a.id,
            debits_pending: a.debits_pending,
            debits_posted: a.debits_posted,
            credits_pending: a.credits_pending,
            credits_posted: a.credits_posted,
        });
        let got = replay.get(&a.id).copied().unwrap_or_default();
        if got != want {
            v.add(format!(
                "account {}: the feed replays to {}, the final state holds {}",
                a.id,
                got.text(),
                want.text()
            ));
        }
    }
    for id in replay.keys().filter(|id| !ids.contains(id)) {
        v.add(format!(
            "account {id} has events in the feed but is not in the final state"
        ));
    }
}

/// What a balancing side could still give (debit: `credits_posted − debits`) or take (credit:
/// `debits_posted − credits`) right after the event, by the balances the event states.
fn room_after(c: &Change) -> Vec<(&'static str, u64, i128)> {
    let mut sides = Vec::new();
    let (d, cr) = (Sums::of(&c.debit_account).0, Sums::of(&c.credit_account).0);
    if c.transfer.has_flag("balancing_debit") {
        let room = d[CREDITS_POSTED] - d[DEBITS_POSTED] - d[DEBITS_PENDING];
        sides.push(("debit", c.debit_account.id, room));
    }
    if c.transfer.has_flag("balancing_credit") {
        let room = cr[DEBITS_POSTED] - cr[CREDITS_POSTED] - cr[CREDITS_PENDING];
        sides.push(("credit", c.credit_account.id, room));
    }
    sides
}

/// A balancing transfer moves `min(cap, room of each balancing side)`, the room being taken as 0
/// when negative. After the event, each balancing side's room is its room before less the
/// amount, so: it moved no more than its cap (final state and feed); if it moved anything, no
/// balancing side is left below zero (it moved more than there was); if it moved less than its
/// cap, some balancing side is left with nothing (it moved less than it could).
pub fn balancing_capped(feed: Option<&[Change]>, sent: &Sent) -> Verdict {
    let mut v = Collector::new("balancing_capped");
    let cap = |id: u64| {
        sent.sends
            .get(&id)
            .and_then(|s| s.iter().map(|t| t.cap()).min())
    };
    let mut checked = 0usize;
    for t in sent.present.values().flatten().filter(|t| t.is_balancing()) {
        if let Some(cap) = cap(t.id).filter(|&cap| t.amount > cap) {
            v.add(format!(
                "balancing transfer {} moved {} in the final state, over its cap {cap}",
                t.id, t.amount
            ));
        }
    }
    let created = feed
        .unwrap_or_default()
        .iter()
        .filter(|c| c.kind != ChangeKind::TwoPhaseExpired && c.transfer.is_balancing());
    for c in created {
        // An invented transfer has no cap: `feed_matches_history` reports it.
        let Some(cap) = cap(c.transfer.id) else {
            continue;
        };
        checked += 1;
        let amount = c.transfer.amount;
        let rooms = room_after(c);
        if amount > cap {
            v.add(format!(
                "{}: moved {amount}, over its cap {cap}",
                describe(c)
            ));
        }
        for (side, id, room) in rooms.iter().filter(|(_, _, room)| *room < 0) {
            if amount > 0 {
                v.add(format!(
                    "{}: moved {amount} and left its {side} account {id} {} short",
                    describe(c),
                    -room
                ));
            }
        }
        if amount < cap && rooms.iter().all(|(_, _, room)| *room > 0) {
            v.add(format!(
                "{}: moved {amount} under its cap {cap}, though it could have moved more ({rooms:?} left after it)",
                describe(c)
            ));
        }
    }
    let mut verdict = v.finish();
    verdict
        .notes
        .push(format!("{checked} balancing transfers of the feed checked"));
    verdict
}

/// Who closed an account, and when.
#[derive(Debug, Clone, Copy)]
struct Closer {
    pending: u64,
    at: u64,
}

/// The accounts a transfer closes when it is created (a pending transfer with a closing flag).
fn closes(c: &Change) -> Vec<u64> {
    let t = &c.transfer;
    let mut out = Vec::new();
    if c.kind == ChangeKind::TwoPhasePending {
        if t.has_flag("closing_debit") {
            out.push(t.debit);
        }
        if t.has_flag("closing_credit") {
            out.push(t.credit);
        }
    }
    out
}

/// The pending transfer an event releases (void or expiry), which reopens what it closed.
fn releases(c: &Change) -> Option<u64> {
    match c.kind {
        ChangeKind::TwoPhaseVoided => Some(c.transfer.pending_id),
        ChangeKind::TwoPhaseExpired => Some(c.transfer.id),
        _ => None,
    }
}

/// Replays the feed's closings: for each event, in order, `visit(event, closed accounts before
/// it)`; returns the accounts still closed at the end and, per account, the last event that
/// reopened it.
fn replay_closings(
    feed: &[Change],
    mut visit: impl FnMut(&Change, &BTreeMap<u64, Closer>),
) -> (BTreeMap<u64, Closer>, BTreeMap<u64, &Change>) {
    let mut closed: BTreeMap<u64, Closer> = BTreeMap::new();
    let mut reopened: BTreeMap<u64, &Change> = BTreeMap::new();
    for c in feed {
        visit(c, &closed);
        if let Some(pending) = releases(c) {
            let by_it: Vec<u64> = closed
                .iter()
                .filter(|(_, k)| k.pending == pending)
                .map(|(a, _)| *a)
                .collect();
            for account in by_it {
                closed.remove(&account);
                reopened.insert(account, c);
            }
        }
        for account in closes(c) {
            let closer = Closer {
                pending: c.transfer.id,
                at: c.timestamp,
            };
            closed.entry(account).or_insert(closer);
        }
    }
    (closed, reopened)
}

/// While a closing pending transfer holds an account closed (from its creation to its void or
/// expiry), no event touches the account but voids and expiries (the only movement a closed
/// account allows): no transfer, pending transfer, post, nor a second closing.
pub fn closed_accounts_untouched(feed: &[Change]) -> Verdict {
    let mut v = Collector::new("closed_accounts_untouched");
    let mut closings = 0usize;
    replay_closings(feed, |c, closed| {
        closings += closes(c).len();
        if releases(c).is_some() {
            return;
        }
        for account in [c.transfer.debit, c.transfer.credit] {
            if let Some(k) = closed.get(&account) {
                v.add(format!(
                    "{} touches account {account}, closed since {} by pending transfer {}",
                    describe(c),
                    k.at,
                    k.pending
                ));
            }
        }
    });
    let mut verdict = v.finish();
    verdict
        .notes
        .push(format!("{closings} account closings in the feed"));
    verdict
}

/// The void or expiry of a closing pending transfer reopens the accounts it closed: the final
/// state's `closed` flags are what the feed's closings and reopenings leave.
pub fn closing_reopens(feed: &[Change], accounts: &[Account]) -> Verdict {
    let mut v = Collector::new("closing_reopens");
    let (closed, reopened) = replay_closings(feed, |_, _| {});
    for a in accounts {
        match (a.has_flag("closed"), closed.get(&a.id), reopened.get(&a.id)) {
            (true, None, Some(c)) => v.add(format!(
                "account {} is closed in the final state, though {} reopened it",
                a.id,
                describe(c)
            )),
            (true, None, None) => v.add(format!(
                "account {} is closed in the final state, though no pending transfer of the feed closed it",
                a.id
            )),
            (false, Some(k), _) => v.add(format!(
                "account {} is open in the final state, though pending transfer {} closed it at {} and nothing released it",
                a.id, k.pending, k.at
            )),
            _ => {}
        }
    }
    let mut verdict = v.finish();
    verdict.notes.push(format!(
        "{} accounts reopened at least once, {} closed at the end",
        reopened.len(),
        closed.len()
    ));
    verdict
}

/// Every node's feed is the same, event for event (with balances); a node that gave none fails.
pub fn feed_identical(feeds: &[(u64, Result<Vec<Change>, String>)]) -> Verdict {
    let mut v = Collector::new("feed_identical");
    let read: Vec<(u64, &Vec<Change>)> = feeds
        .iter()
        .filter_map(|(id, f)| f.as_ref().ok().map(|f| (*id, f)))
        .collect();
    for (id, f) in feeds {
        if let Err(e) = f {
            v.add(format!("node {id} did not give its change feed: {e}"));
        }
    }
    let Some(((first_id, first), rest)) = read.split_first() else {
        v.add("no node gave its change feed".into());
        return v.finish();
    };
    for (id, f) in rest {
        if let Some(i) = (0..f.len().max(first.len())).find(|&i| f.get(i) != first.get(i)) {
            v.add(format!(
                "node {id}'s feed ({} events) and node {first_id}'s ({} events) differ at event {i}: {:?} vs {:?}",
                f.len(),
                first.len(),
                f.get(i),
                first.get(i)
            ));
        }
    }
    let mut verdict = v.finish();
    verdict.notes.push(format!(
        "{} nodes' feeds compared, {} events",
        read.len(),
        first.len()
    ));
    verdict
}
