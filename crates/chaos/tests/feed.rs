//! The change-feed verdicts and the balancing and closing rules, each seen failing on a
//! hand-made broken feed or final state.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use bulwark_chaos::checker::feed::{
    balancing_capped, closed_accounts_untouched, feed_balances_consistent, feed_identical, Sent,
};
use bulwark_chaos::{
    check, Account, Balance, Change, ChangeKind, History, Kind, Op, Phase, Transfer,
};

const SECOND: u64 = 1_000_000_000;

fn t(id: u64, debit: u64, credit: u64, amount: u64, flags: &[&str]) -> Transfer {
    Transfer {
        id,
        debit,
        credit,
        amount,
        ledger: 1,
        flags: flags.iter().map(|f| f.to_string()).collect(),
        ..Transfer::default()
    }
}

fn resolve(id: u64, pending_id: u64, flag: &str) -> Transfer {
    Transfer {
        pending_id,
        ..t(id, 0, 0, 0, &[flag])
    }
}

/// One event of a scenario: a transfer sent (acknowledged `ok`) and the amount the ledger moved
/// (`None`: what a plain transfer, a full post or a void moves), or the expiry of a pending one.
enum Step {
    Send(Transfer, Option<u64>),
    Expire(u64),
}

fn send(x: Transfer) -> Step {
    Step::Send(x, None)
}

/// The history of a scenario on accounts 1..=4 (1 limited): every transfer acknowledged in its
/// own batch, the feed a faithful replay of the steps (balances and closings computed as the
/// ledger does), the final state what it leaves. Events are 10 ns apart; an expiry comes 5 ns
/// after its deadline.
fn scenario(steps: Vec<Step>) -> History {
    let mut ops = Vec::new();
    let mut feed: Vec<Change> = Vec::new();
    let mut stored: BTreeMap<u64, Transfer> = BTreeMap::new();
    let mut balances: HashMap<u64, Balance> = (1..=4)
        .map(|id| {
            (
                id,
                Balance {
                    id,
                    ..Balance::default()
                },
            )
        })
        .collect();
    let mut closed: BTreeMap<u64, u64> = BTreeMap::new();
    let mut now = 1_000u64;
    for (i, step) in steps.into_iter().enumerate() {
        now += 10;
        let (kind, x, pending) = match step {
            Step::Send(sent, moved) => {
                let pending = stored.get(&sent.pending_id).cloned();
                let mut x = sent.clone();
                if let Some(p) = &pending {
                    (x.debit, x.credit, x.ledger) = (p.debit, p.credit, p.ledger);
                    if x.amount == 0 {
                        x.amount = p.amount;
                    }
                }
                x.amount = moved.unwrap_or(x.amount);
                x.timestamp = now;
                stored.insert(x.id, x.clone());
                ops.push(Op {
                    transfers: vec![sent.clone()],
                    ..Op::new(1, Kind::TransferBatch, Phase::Invoke, 2 * i as u64)
                });
                ops.push(Op {
                    results: vec!["ok".into()],
                    commit_index: Some(i as u64 + 1),
                    ..Op::new(1, Kind::TransferBatch, Phase::Ok, 2 * i as u64 + 1)
                });
                (ChangeKind::of(&x), x, pending)
            }
            Step::Expire(id) => {
                let p = stored[&id].clone();
                now = now.max(p.timestamp + u64::from(p.timeout) * SECOND + 5);
                (ChangeKind::TwoPhaseExpired, p.clone(), Some(p))
            }
        };
        apply(&mut balances, &mut closed, kind, &x, pending.as_ref());
        feed.push(Change {
            kind,
            timestamp: now,
            debit_account: balances[&x.debit],
            credit_account: balances[&x.credit],
            transfer: x,
        });
    }
    let accounts = final_accounts(&balances, &closed);
    History {
        started_unix_ns: None,
        ops,
        state: bulwark_chaos::FinalState {
            accounts,
            transfers: stored.into_values().collect(),
            changes: Some(feed),
        },
    }
}

/// Accounts 1..=4 as the final state shows them after a scenario (1 limited).
fn final_accounts(balances: &HashMap<u64, Balance>, closed: &BTreeMap<u64, u64>) -> Vec<Account> {
    (1..=4)
        .map(|id| {
            let b = balances[&id];
            let mut flags = Vec::new();
            if id == 1 {
                flags.push("debits_must_not_exceed_credits".to_string());
            }
            if closed.contains_key(&id) {
                flags.push("closed".to_string());
            }
            Account {
                id,
                ledger: 1,
                flags,
                debits_pending: b.debits_pending,
                debits_posted: b.debits_posted,
                credits_pending: b.credits_pending,
                credits_posted: b.credits_posted,
            }
        })
        .collect()
}

/// The ledger's effect of one event on the balances and on the closed accounts (account ->
/// the pending transfer that closed it).
fn apply(
    balances: &mut HashMap<u64, Balance>,
    closed: &mut BTreeMap<u64, u64>,
    kind: ChangeKind,
    x: &Transfer,
    pending: Option<&Transfer>,
) {
    let released = pending.map_or(0, |p| p.amount);
    let (pend, post) = match kind {
        ChangeKind::SinglePhase => (0, x.amount as i64),
        ChangeKind::TwoPhasePending => (x.amount as i64, 0),
        ChangeKind::TwoPhasePosted => (-(released as i64), x.amount as i64),
        _ => (-(released as i64), 0),
    };
    let add = |v: &mut u64, d: i64| *v = v.checked_add_signed(d).expect("fixture balance");
    let d = balances.get_mut(&x.debit).unwrap();
    add(&mut d.debits_pending, pend);
    add(&mut d.debits_posted, post);
    let c = balances.get_mut(&x.credit).unwrap();
    add(&mut c.credits_pending, pend);
    add(&mut c.credits_posted, post);
    if matches!(
        kind,
        ChangeKind::TwoPhaseVoided | ChangeKind::TwoPhaseExpired
    ) {
        let p = pending.unwrap().id;
        closed.retain(|_, by| *by != p);
    }
    if kind == ChangeKind::TwoPhasePending {
        if x.has_flag("closing_debit") {
            closed.insert(x.debit, x.id);
        }
        if x.has_flag("closing_credit") {
            closed.insert(x.credit, x.id);
        }
    }
}

/// Account 1 (limited) gets 100 and gives all of it by a balancing debit capped at 500; account
/// 4 is closed by a closing pending transfer, voided (reopening it), then takes a transfer; a
/// second closing pending transfer closes 2 and 3 and expires; a balancing debit from account 2,
/// which has nothing to give, moves 0; a pending transfer is posted in part.
fn clean_steps() -> Vec<Step> {
    vec![
        send(t(1, 2, 1, 100, &[])),
        Step::Send(t(2, 1, 3, 500, &["balancing_debit"]), Some(100)),
        send(t(3, 3, 4, 10, &["pending", "closing_credit"])),
        send(resolve(4, 3, "void_pending_transfer")),
        send(t(5, 2, 4, 5, &[])),
        send(Transfer {
            timeout: 1,
            ..t(6, 2, 3, 20, &["pending", "closing_debit", "closing_credit"])
        }),
        Step::Expire(6),
        Step::Send(t(7, 2, 3, 40, &["balancing_debit"]), Some(0)),
        send(t(8, 3, 2, 30, &["pending"])),
        send(Transfer {
            amount: 12,
            ..resolve(9, 8, "post_pending_transfer")
        }),
    ]
}

fn feed_of(h: &mut History) -> &mut Vec<Change> {
    h.state.changes.as_mut().unwrap()
}

fn failed(h: &History) -> Vec<&'static str> {
    check(h).failed()
}

/// Asserts that exactly `property` fails, with a violation containing `words`.
fn assert_only(h: &History, property: &str, words: &str) {
    let report = check(h);
    assert_eq!(report.failed(), vec![property], "{}", report.details(5));
    let v = &report.verdict(property).unwrap().violations;
    assert!(v.iter().any(|v| v.contains(words)), "{v:#?}");
}

fn assert_fails(h: &History, property: &str, words: &str) {
    let report = check(h);
    let v = report.verdict(property).unwrap();
    assert!(!v.ok, "{property} passed: {}", report.details(5));
    assert!(
        v.violations.iter().any(|v| v.contains(words)),
        "{:#?}",
        v.violations
    );
}

#[test]
fn a_clean_feed_passes_every_verdict() {
    let h = scenario(clean_steps());
    let report = check(&h);
    assert!(report.ok, "{}", report.details(5));
    let names: Vec<&str> = report.verdicts.iter().map(|v| v.property).collect();
    for name in [
        "feed_matches_history",
        "feed_balances_consistent",
        "balancing_capped",
        "closed_accounts_untouched",
        "closing_reopens",
    ] {
        assert!(names.contains(&name), "{names:?}");
    }
    let notes = |p: &str| report.verdict(p).unwrap().notes.join("; ");
    assert!(notes("balancing_capped").contains("2 balancing transfers"));
    assert!(notes("closed_accounts_untouched").contains("3 account closings"));
    assert!(notes("closing_reopens").contains("3 accounts reopened"));
    assert!(notes("feed_matches_history").contains("10 events, 9 transfers"));
}

#[test]
fn a_committed_transfer_missing_from_the_feed_is_caught() {
    let mut h = scenario(clean_steps());
    // Transfer 9 (the post) is the last event; without it the replay ends elsewhere too, so
    // remove a transfer that moves nothing instead: a balancing debit that moved 0.
    feed_of(&mut h).retain(|c| c.transfer.id != 7);
    assert_only(
        &h,
        "feed_matches_history",
        "transfer 7, committed by the history, is missing",
    );
}

#[test]
fn an_invented_transfer_in_the_feed_is_caught() {
    let mut h = scenario(clean_steps());
    let mut fake = feed_of(&mut h)[7].clone(); // transfer 7 moved nothing: balances unchanged
    fake.transfer.id = 99;
    fake.transfer.flags.clear();
    fake.timestamp += 1;
    fake.transfer.timestamp += 1;
    feed_of(&mut h).insert(8, fake);
    assert_only(
        &h,
        "feed_matches_history",
        "the workload never sent that transfer",
    );
}

#[test]
fn a_transfer_twice_in_the_feed_is_caught() {
    let mut h = scenario(clean_steps());
    let mut again = feed_of(&mut h)[7].clone();
    again.timestamp += 1;
    feed_of(&mut h).insert(8, again);
    assert_fails(&h, "feed_matches_history", "the transfer appears again");
}

#[test]
fn an_event_of_the_wrong_kind_is_caught() {
    let mut h = scenario(clean_steps());
    // The void of transfer 3 shown as a post (which the replay and the closing rules fail too).
    let void = &mut feed_of(&mut h)[3];
    void.kind = ChangeKind::TwoPhasePosted;
    assert_fails(
        &h,
        "feed_matches_history",
        "an event of kind TwoPhaseVoided",
    );
}

#[test]
fn a_pending_transfer_resolved_twice_is_caught() {
    let mut h = scenario(clean_steps());
    // Transfer 3, voided, expires too (its release replays below zero, which
    // `feed_balances_consistent` reports as well).
    let mut expiry = feed_of(&mut h)[3].clone();
    expiry.kind = ChangeKind::TwoPhaseExpired;
    expiry.transfer = feed_of(&mut h)[2].transfer.clone();
    expiry.timestamp += 1;
    feed_of(&mut h).insert(4, expiry);
    assert_fails(
        &h,
        "feed_matches_history",
        "pending transfer 3 is resolved 2 times",
    );
}

#[test]
fn an_expiry_before_its_deadline_is_caught() {
    let mut h = scenario(clean_steps());
    let expiry = &mut feed_of(&mut h)[6];
    assert_eq!(expiry.kind, ChangeKind::TwoPhaseExpired);
    expiry.timestamp = expiry.transfer.timestamp + 3;
    // Still after the event before it (10 ns earlier), so only the deadline is wrong.
    assert_only(&h, "feed_matches_history", "is due at");
}

#[test]
fn events_out_of_order_are_caught() {
    let mut h = scenario(clean_steps());
    feed_of(&mut h)[5].timestamp = feed_of(&mut h)[4].timestamp;
    assert_fails(&h, "feed_matches_history", "comes after timestamp");
}

#[test]
fn a_wrong_balance_in_the_feed_is_caught() {
    let mut h = scenario(clean_steps());
    feed_of(&mut h)[4].credit_account.credits_posted += 1;
    assert_only(&h, "feed_balances_consistent", "account 4 replayed to");
    // Once: the replay takes the stated balances after a wrong one.
    let report = check(&h);
    assert_eq!(
        report
            .verdict("feed_balances_consistent")
            .unwrap()
            .violations
            .len(),
        1
    );
}

#[test]
fn a_feed_that_replays_to_another_final_state_is_caught() {
    let h = scenario(clean_steps());
    let mut accounts = h.state.accounts.clone();
    accounts[3].credits_posted += 1;
    let v = feed_balances_consistent(h.state.changes.as_ref().unwrap(), &accounts);
    assert!(!v.ok);
    assert!(
        v.violations[0].contains("account 4: the feed replays to"),
        "{v:?}"
    );
}

#[test]
fn an_event_with_the_other_accounts_balances_is_caught() {
    let mut h = scenario(clean_steps());
    feed_of(&mut h)[0].debit_account.id = 3;
    assert_fails(
        &h,
        "feed_balances_consistent",
        "its debit account is 2, the event states the balances of 3",
    );
}

/// The sends and final state of a history, as the checker hands them to the feed's checks.
fn sent_of(h: &History) -> Sent<'_> {
    let mut sends: BTreeMap<u64, Vec<&Transfer>> = BTreeMap::new();
    for op in h.ops.iter().filter(|o| o.phase == Phase::Invoke) {
        for x in &op.transfers {
            sends.entry(x.id).or_default().push(x);
        }
    }
    let mut present: BTreeMap<u64, Vec<&Transfer>> = BTreeMap::new();
    for x in &h.state.transfers {
        present.entry(x.id).or_default().push(x);
    }
    Sent {
        committed: sends.keys().copied().collect::<BTreeSet<u64>>(),
        sends,
        present,
    }
}

#[test]
fn a_balancing_transfer_over_its_cap_is_caught() {
    // Capped at 50, it moved 80 (account 1 had 100).
    let mut steps = clean_steps();
    steps[1] = Step::Send(t(2, 1, 3, 50, &["balancing_debit"]), Some(80));
    let h = scenario(steps);
    assert_fails(&h, "balancing_capped", "moved 80, over its cap 50");
    assert_fails(
        &h,
        "balancing_capped",
        "moved 80 in the final state, over its cap 50",
    );
    // The final state's transfer does not match what was sent either.
    assert_fails(&h, "acknowledged_present_once", "transfer 2 ");
    let v = balancing_capped(h.state.changes.as_deref(), &sent_of(&h));
    assert!(!v.ok);
}

#[test]
fn a_balancing_transfer_that_moved_less_than_it_could_is_caught() {
    // Capped at 500, account 1 could give 100: it moved 60 and left 40.
    let mut steps = clean_steps();
    steps[1] = Step::Send(t(2, 1, 3, 500, &["balancing_debit"]), Some(60));
    let h = scenario(steps);
    assert_only(&h, "balancing_capped", "moved 60 under its cap 500");
}

#[test]
fn a_balancing_transfer_that_overdrew_is_caught() {
    // Capped at 500, account 1 could give 100: it moved 150.
    let mut steps = clean_steps();
    steps[1] = Step::Send(t(2, 1, 3, 500, &["balancing_debit"]), Some(150));
    let h = scenario(steps);
    assert_fails(&h, "balancing_capped", "left its debit account 1 50 short");
    assert_fails(
        &h,
        "no_overdraft",
        "account 1 after the feed's SinglePhase event",
    );
}

#[test]
fn a_balancing_credit_is_checked_on_the_credit_side() {
    // Account 2 has given 105 and taken 12: a balancing credit capped at 500 can move 93.
    let mut steps = clean_steps();
    steps.push(Step::Send(
        t(10, 3, 2, 500, &["balancing_credit"]),
        Some(93),
    ));
    assert!(check(&scenario(steps)).ok);
    let mut steps = clean_steps();
    steps.push(Step::Send(
        t(10, 3, 2, 500, &["balancing_credit"]),
        Some(92),
    ));
    let h = scenario(steps);
    assert_only(&h, "balancing_capped", "moved 92 under its cap 500");
    let mut steps = clean_steps();
    steps.push(Step::Send(
        t(10, 3, 2, 500, &["balancing_credit"]),
        Some(94),
    ));
    let h = scenario(steps);
    assert_fails(&h, "balancing_capped", "left its credit account 2 1 short");
}

#[test]
fn a_transfer_on_a_closed_account_is_caught() {
    let mut steps = clean_steps();
    // Transfer 5 (2 -> 4) applied while pending transfer 3 holds account 4 closed.
    steps.swap(3, 4);
    let h = scenario(steps);
    assert_only(
        &h,
        "closed_accounts_untouched",
        "transfer 5 touches account 4, closed since 1030 by pending transfer 3",
    );
}

#[test]
fn a_post_of_a_closing_pending_transfer_is_caught() {
    let mut steps = clean_steps();
    steps[3] = send(resolve(4, 3, "post_pending_transfer"));
    let h = scenario(steps);
    assert_fails(
        &h,
        "closed_accounts_untouched",
        "touches account 4, closed since",
    );
    let v = closed_accounts_untouched(h.state.changes.as_ref().unwrap());
    assert!(!v.ok);
}

#[test]
fn a_void_on_a_closed_account_is_allowed() {
    // Pending transfer 10 (2 -> 4) before the closing, voided while 4 is closed.
    let mut steps = clean_steps();
    steps.insert(2, send(t(10, 2, 4, 3, &["pending"])));
    steps.insert(4, send(resolve(11, 10, "void_pending_transfer")));
    let h = scenario(steps);
    assert!(check(&h).ok, "{}", check(&h).details(5));
}

#[test]
fn an_account_left_closed_after_its_void_is_caught() {
    let mut h = scenario(clean_steps());
    h.state.accounts[3].flags.push("closed".into());
    assert_only(
        &h,
        "closing_reopens",
        "account 4 is closed in the final state, though",
    );
}

#[test]
fn an_account_open_while_its_closer_stands_is_caught() {
    let mut steps = clean_steps();
    steps.truncate(3); // transfer 3 closes account 4 and is never released
    let mut h = scenario(steps);
    assert!(check(&h).ok, "{}", check(&h).details(5));
    h.state.accounts[3].flags.clear();
    assert_only(
        &h,
        "closing_reopens",
        "account 4 is open in the final state, though pending transfer 3 closed it",
    );
}

#[test]
fn feeds_of_every_node_must_be_identical() {
    let h = scenario(clean_steps());
    let feed = h.state.changes.clone().unwrap();
    let same = vec![
        (1, Ok(feed.clone())),
        (2, Ok(feed.clone())),
        (3, Ok(feed.clone())),
    ];
    let v = feed_identical(&same);
    assert!(v.ok, "{v:?}");
    assert!(v.notes[0].contains("3 nodes' feeds compared, 10 events"));

    let mut other = feed.clone();
    other[4].debit_account.debits_posted += 1;
    let v = feed_identical(&[(1, Ok(feed.clone())), (2, Ok(other))]);
    assert!(!v.ok);
    assert!(v.violations[0].contains("differ at event 4"), "{v:?}");

    let short = feed[..9].to_vec();
    let v = feed_identical(&[(1, Ok(feed.clone())), (3, Ok(short))]);
    assert!(
        v.violations[0].contains("node 3's feed (9 events)"),
        "{v:?}"
    );

    let v = feed_identical(&[(1, Ok(feed)), (2, Err("timed out".into()))]);
    assert!(v.violations[0].contains("node 2 did not give its change feed"));
    assert!(!feed_identical(&[]).ok);
}

#[test]
fn a_history_without_a_feed_checks_the_rest() {
    let mut h = scenario(clean_steps());
    h.state.changes = None;
    let report = check(&h);
    assert!(report.ok, "{}", report.details(5));
    assert!(report.verdict("feed_matches_history").unwrap().notes[0].contains("no change feed"));
    // The cap is still checked on the final state.
    let mut steps = clean_steps();
    steps[1] = Step::Send(t(2, 1, 3, 50, &["balancing_debit"]), Some(80));
    let mut h = scenario(steps);
    h.state.changes = None;
    assert!(failed(&h).contains(&"balancing_capped"));
}

#[test]
fn a_feed_page_parses_as_the_api_writes_it() {
    let body = serde_json::json!({
        "changes": [{
            "type": "two_phase_expired",
            "timestamp": "2000000123",
            "transfer": {
                "id": "7", "debit_account_id": "1", "credit_account_id": "2", "amount": "5",
                "pending_id": "0", "timeout": 1, "ledger": 1, "code": 1,
                "flags": ["pending", "closing_debit"], "user_data_128": "0",
                "user_data_64": "0", "user_data_32": 0, "timestamp": "1000000100"
            },
            "debit_account": {"id": "1", "debits_pending": "0", "debits_posted": "5",
                              "credits_pending": "0", "credits_posted": "9"},
            "credit_account": {"id": "2", "debits_pending": "0", "debits_posted": "0",
                               "credits_pending": "0", "credits_posted": "5"}
        }],
        "next_after": "2000000123"
    });
    let (page, next) = bulwark_chaos::feed::page_from_json(&body).expect("a page");
    assert_eq!(next, 2_000_000_123);
    let c = &page[0];
    assert_eq!(c.kind, ChangeKind::TwoPhaseExpired);
    assert_eq!(c.timestamp, 2_000_000_123);
    assert_eq!(c.transfer.timestamp, 1_000_000_100);
    assert_eq!(c.transfer.timeout, 1);
    assert!(c.transfer.has_flag("closing_debit"));
    assert_eq!((c.debit_account.id, c.debit_account.credits_posted), (1, 9));
    assert_eq!(c.credit_account.credits_posted, 5);

    let mut unknown = body.clone();
    unknown["changes"][0]["type"] = "two_phase_maybe".into();
    assert!(bulwark_chaos::feed::page_from_json(&unknown).is_none());
    let mut unbalanced = body.clone();
    unbalanced["changes"][0]["credit_account"] = serde_json::Value::Null;
    assert!(bulwark_chaos::feed::page_from_json(&unbalanced).is_none());
    let empty = serde_json::json!({"changes": [], "next_after": "42"});
    assert_eq!(
        bulwark_chaos::feed::page_from_json(&empty),
        Some((vec![], 42))
    );
}
