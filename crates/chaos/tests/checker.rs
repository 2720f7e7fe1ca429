use bulwark_chaos::{
    check, read_history, write_history, Account, Balance, Error, FinalState, History, Kind,
    NemesisAction, Op, Phase, Transfer,
};
use std::collections::HashMap;

const PROPERTIES: [&str; 15] = [
    "ledgers_balance",
    "no_overdraft",
    "acknowledged_present_once",
    "refused_absent",
    "indefinite_at_most_once",
    "linked_chains_whole",
    "pending_resolved_once",
    "linearizable_reads",
    "availability",
    "ledger_time_not_ahead",
    "feed_matches_history",
    "feed_balances_consistent",
    "balancing_capped",
    "closed_accounts_untouched",
    "closing_reopens",
];

fn t(id: u64, debit: u64, credit: u64, amount: u64, flags: &[&str]) -> Transfer {
    Transfer {
        id,
        debit,
        credit,
        amount,
        ledger: 1,
        flags: flags.iter().map(|f| f.to_string()).collect(),
        pending_id: 0,
        timeout: 0,
        timestamp: 0,
    }
}

fn post(id: u64, pending_id: u64) -> Transfer {
    Transfer {
        pending_id,
        ..t(id, 0, 0, 0, &["post_pending_transfer"])
    }
}

#[derive(Default)]
struct Builder {
    ops: Vec<Op>,
    now: u64,
}

impl Builder {
    fn tick(&mut self) -> u64 {
        self.now += 10;
        self.now
    }

    fn batch(
        &mut self,
        process: u64,
        transfers: Vec<Transfer>,
        phase: Phase,
        results: &[&str],
        commit: Option<u64>,
    ) {
        let at = self.tick();
        self.ops.push(Op {
            transfers,
            ..Op::new(process, Kind::TransferBatch, Phase::Invoke, at)
        });
        let at = self.tick();
        self.ops.push(Op {
            results: results.iter().map(|r| r.to_string()).collect(),
            commit_index: commit,
            ..Op::new(process, Kind::TransferBatch, phase, at)
        });
    }

    fn ok(&mut self, process: u64, transfers: Vec<Transfer>, commit: u64) {
        let results = vec!["ok"; transfers.len()];
        self.batch(process, transfers, Phase::Ok, &results, Some(commit));
    }

    fn read(&mut self, process: u64, applied: u64, balances: Vec<Balance>) {
        let at = self.tick();
        self.ops
            .push(Op::new(process, Kind::ReadBalances, Phase::Invoke, at));
        let at = self.tick();
        self.ops.push(Op {
            applied_index: Some(applied),
            balances,
            ..Op::new(process, Kind::ReadBalances, Phase::Ok, at)
        });
    }

    fn history_read(
        &mut self,
        process: u64,
        account: u64,
        after: u64,
        applied: u64,
        page: Vec<Transfer>,
        balances: Vec<Balance>,
    ) {
        self.history_invoke(process, account, after);
        self.history_done(process, account, after, applied, page, balances);
    }

    fn history_invoke(&mut self, process: u64, account: u64, after: u64) {
        let at = self.tick();
        self.ops.push(Op {
            account: Some(account),
            after: Some(after),
            limit: Some(20),
            ..Op::new(process, Kind::ReadHistory, Phase::Invoke, at)
        });
    }

    fn history_done(
        &mut self,
        process: u64,
        account: u64,
        after: u64,
        applied: u64,
        page: Vec<Transfer>,
        balances: Vec<Balance>,
    ) {
        let at = self.tick();
        self.ops.push(Op {
            applied_index: Some(applied),
            transfers: page,
            balances,
            account: Some(account),
            after: Some(after),
            limit: Some(20),
            ..Op::new(process, Kind::ReadHistory, Phase::Ok, at)
        });
    }

    fn nemesis(&mut self, action: NemesisAction, what: &str) {
        let at = self.tick();
        self.ops.push(Op {
            action: Some(action),
            description: Some(what.to_string()),
            ..Op::new(0, Kind::Nemesis, Phase::Info, at)
        });
    }
}

/// The final state holding `transfers`, with balances computed from them (accounts 1..=3, 1 guarded).
/// Transfers without a timestamp get one by their place in the list (the order the cluster applied
/// them): 1000, 1010, ...
fn state(mut transfers: Vec<Transfer>) -> FinalState {
    for (i, x) in transfers.iter_mut().enumerate() {
        if x.timestamp == 0 {
            x.timestamp = 1000 + 10 * i as u64;
        }
    }
    let mut accounts: Vec<Account> = (1..=3)
        .map(|id| Account {
            id,
            ledger: 1,
            flags: if id == 1 {
                vec!["debits_must_not_exceed_credits".to_string()]
            } else {
                vec![]
            },
            ..Account::default()
        })
        .collect();
    let by_id: HashMap<u64, Transfer> = transfers.iter().map(|t| (t.id, t.clone())).collect();
    for x in &transfers {
        let (d, c) = if x.pending_id != 0 {
            let p = &by_id[&x.pending_id];
            let (d, c) = (p.debit as usize - 1, p.credit as usize - 1);
            accounts[d].debits_pending = accounts[d].debits_pending.saturating_sub(p.amount);
            accounts[c].credits_pending = accounts[c].credits_pending.saturating_sub(p.amount);
            if x.has_flag("void_pending_transfer") {
                continue;
            }
            (p.debit, p.credit)
        } else {
            (x.debit, x.credit)
        };
        let amount = if x.pending_id != 0 && x.amount == 0 {
            by_id[&x.pending_id].amount
        } else {
            x.amount
        };
        if x.has_flag("pending") {
            accounts[d as usize - 1].debits_pending += amount;
            accounts[c as usize - 1].credits_pending += amount;
        } else {
            accounts[d as usize - 1].debits_posted += amount;
            accounts[c as usize - 1].credits_posted += amount;
        }
    }
    FinalState {
        accounts,
        transfers,
        changes: None,
    }
}

/// The final transfers of the clean run, with their stored fields.
fn clean_transfers() -> Vec<Transfer> {
    vec![
        t(1, 2, 1, 100, &[]),
        t(2, 1, 3, 30, &[]),
        t(3, 2, 3, 10, &["linked"]),
        t(4, 3, 2, 5, &[]),
        t(5, 2, 3, 20, &["pending"]),
        Transfer {
            debit: 2,
            credit: 3,
            amount: 20,
            ledger: 1,
            ..post(6, 5)
        },
        t(8, 2, 3, 7, &[]),
    ]
}

/// A clean run: acknowledged writes, a linked chain, a pending transfer posted, a refusal, a failed
/// batch, an indefinite batch that was applied, reads, and a nemesis window.
fn clean_ops() -> Builder {
    let mut b = Builder::default();
    b.ok(1, vec![t(1, 2, 1, 100, &[])], 1);
    b.ok(2, vec![t(2, 1, 3, 30, &[])], 2);
    b.read(
        3,
        2,
        vec![Balance {
            id: 1,
            debits_posted: 30,
            credits_posted: 100,
            ..Balance::default()
        }],
    );
    b.nemesis(NemesisAction::Start, "partition majority/minority");
    b.ok(1, vec![t(3, 2, 3, 10, &["linked"]), t(4, 3, 2, 5, &[])], 3);
    b.ok(2, vec![t(5, 2, 3, 20, &["pending"])], 4);
    b.batch(1, vec![t(8, 2, 3, 7, &[])], Phase::Info, &[], None);
    b.nemesis(NemesisAction::Stop, "heal");
    b.ok(2, vec![post(6, 5)], 5);
    b.batch(
        1,
        vec![t(7, 1, 3, 1000, &[])],
        Phase::Ok,
        &["exceeds_credits"],
        Some(6),
    );
    b.batch(2, vec![t(13, 2, 3, 5, &[])], Phase::Fail, &[], None);
    b.read(
        3,
        6,
        vec![Balance {
            id: 1,
            debits_posted: 30,
            credits_posted: 100,
            ..Balance::default()
        }],
    );
    b
}

fn history(b: Builder, transfers: Vec<Transfer>) -> History {
    History {
        started_unix_ns: None,
        ops: b.ops,
        state: state(transfers),
    }
}

/// Asserts that exactly `property` fails and the summary names it.
fn assert_only(h: &History, property: &str) {
    let report = check(h);
    assert_eq!(report.failed(), vec![property], "{report:#?}");
    assert!(!report.ok);
    assert_eq!(report.summary(), format!("INVALID: {property}"));
    assert!(!report.verdict(property).unwrap().violations.is_empty());
}

#[test]
fn clean_history_is_valid() {
    let h = history(clean_ops(), clean_transfers());
    let report = check(&h);
    assert!(report.ok, "{report:#?}");
    assert_eq!(report.summary(), "VALID");
    let names: Vec<&str> = report.verdicts.iter().map(|v| v.property).collect();
    assert_eq!(names, PROPERTIES);
    let avail = report.verdict("availability").unwrap();
    assert!(
        avail.notes[0].contains("inside nemesis windows: 2/3 ok"),
        "{avail:?}"
    );
}

#[test]
fn lost_acknowledged_write_is_caught() {
    let transfers = clean_transfers()
        .into_iter()
        .filter(|t| t.id != 2)
        .collect();
    let h = history(clean_ops(), transfers);
    assert_only(&h, "acknowledged_present_once");
    let v = check(&h);
    let v = &v.verdict("acknowledged_present_once").unwrap().violations[0];
    assert!(
        v.contains("transfer 2 ") && v.contains("commit index 2"),
        "{v}"
    );
}

#[test]
fn double_applied_transfer_is_caught() {
    let mut transfers = clean_transfers();
    transfers.push(t(2, 1, 3, 31, &[]));
    let h = history(clean_ops(), transfers);
    assert_only(&h, "acknowledged_present_once");
}

#[test]
fn acknowledged_transfer_with_other_fields_is_caught() {
    let mut transfers = clean_transfers();
    // Transfer 4 moves between accounts 2 and 3, whose reads are not replayed (an indefinite write).
    transfers[3].amount = 6;
    let h = history(clean_ops(), transfers);
    assert_only(&h, "acknowledged_present_once");
}

#[test]
fn second_post_of_one_pending_is_caught() {
    let mut transfers = clean_transfers();
    transfers.push(Transfer {
        debit: 2,
        credit: 3,
        amount: 20,
        ledger: 1,
        ..post(9, 5)
    });
    // The second post moved 20 more, on non-checked accounts 2 and 3 (ledger still balances).
    let h = history(clean_ops(), transfers);
    assert_only(&h, "pending_resolved_once");
    let report = check(&h);
    let v = &report.verdict("pending_resolved_once").unwrap().violations;
    assert!(
        v.iter()
            .any(|v| v.contains("pending transfer 5 is resolved 2 times")),
        "{v:?}"
    );
}

#[test]
fn stale_read_is_caught() {
    let mut b = clean_ops();
    // Invoked after transfer 2 was acknowledged at commit index 2, but served at applied index 1.
    b.read(
        4,
        1,
        vec![Balance {
            id: 1,
            credits_posted: 100,
            ..Balance::default()
        }],
    );
    let h = history(b, clean_transfers());
    assert_only(&h, "linearizable_reads");
    let r = check(&h);
    let v = &r.verdict("linearizable_reads").unwrap().violations[0];
    assert!(v.contains("applied index 1 < commit index 6"), "{v}");
}

#[test]
fn read_returning_wrong_balances_is_caught() {
    let mut b = clean_ops();
    b.read(
        4,
        6,
        vec![Balance {
            id: 1,
            credits_posted: 100,
            ..Balance::default()
        }],
    );
    let h = history(b, clean_transfers());
    assert_only(&h, "linearizable_reads");
}

#[test]
fn broken_linked_chain_is_caught() {
    let mut b = clean_ops();
    b.batch(
        5,
        vec![t(10, 2, 3, 1, &["linked"]), t(11, 3, 2, 1, &[])],
        Phase::Info,
        &[],
        None,
    );
    let mut transfers = clean_transfers();
    transfers.push(t(10, 2, 3, 1, &["linked"]));
    let h = history(b, transfers);
    assert_only(&h, "linked_chains_whole");
    let r = check(&h);
    let v = &r.verdict("linked_chains_whole").unwrap().violations[0];
    assert!(v.contains("[10, 11]") && v.contains("absent [11]"), "{v}");
}

#[test]
fn unbalanced_ledger_is_caught() {
    let mut h = history(clean_ops(), clean_transfers());
    h.state.accounts[2].credits_posted += 1;
    assert_only(&h, "ledgers_balance");
}

#[test]
fn overdraft_is_caught() {
    let mut b = clean_ops();
    b.batch(5, vec![t(12, 1, 2, 500, &[])], Phase::Info, &[], None);
    let mut transfers = clean_transfers();
    transfers.push(t(12, 1, 2, 500, &[]));
    let h = history(b, transfers);
    assert_only(&h, "no_overdraft");
}

#[test]
fn overdraft_in_a_read_is_caught() {
    let mut b = clean_ops();
    b.batch(5, vec![t(12, 1, 2, 500, &[])], Phase::Info, &[], None);
    b.read(
        4,
        6,
        vec![Balance {
            id: 1,
            debits_posted: 530,
            credits_posted: 100,
            ..Balance::default()
        }],
    );
    let h = history(b, clean_transfers());
    let report = check(&h);
    assert!(report.failed().contains(&"no_overdraft"), "{report:#?}");
    let v = &report.verdict("no_overdraft").unwrap().violations;
    assert!(
        v.iter()
            .any(|v| v.contains("account 1 read by process 4 at applied index 6")),
        "{v:?}"
    );
}

#[test]
fn refused_transfer_present_is_caught() {
    let mut transfers = clean_transfers();
    transfers.push(t(13, 2, 3, 5, &[]));
    let h = history(clean_ops(), transfers);
    assert_only(&h, "refused_absent");
    let r = check(&h);
    let v = &r.verdict("refused_absent").unwrap().violations[0];
    assert!(
        v.contains("transfer 13 ") && v.contains("batch failed"),
        "{v}"
    );
}

#[test]
fn refused_then_acknowledged_retry_is_valid() {
    let mut b = clean_ops();
    b.ok(2, vec![t(13, 2, 3, 5, &[])], 7);
    let mut transfers = clean_transfers();
    transfers.push(t(13, 2, 3, 5, &[]));
    let h = history(b, transfers);
    assert!(check(&h).ok, "{:#?}", check(&h));
}

#[test]
fn indefinite_with_other_fields_is_caught() {
    let mut transfers = clean_transfers();
    transfers[6].amount = 8;
    let h = history(clean_ops(), transfers);
    assert_only(&h, "indefinite_at_most_once");
}

#[test]
fn read_history_round_trips_the_writer() {
    let h = history(clean_ops(), clean_transfers());
    let dir = std::env::temp_dir().join(format!("bulwark-chaos-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("history.jsonl");
    write_history(&path, &h).unwrap();
    let back = read_history(&path).unwrap();
    assert_eq!(back, h);
    assert_eq!(check(&back).summary(), "VALID");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn malformed_line_is_named() {
    let h = history(clean_ops(), clean_transfers());
    let mut lines: Vec<String> = h.to_jsonl().lines().map(String::from).collect();
    lines[2] =
        r#"{"type":"op","process":3,"kind":"read_balances","phase":"maybe","time_ns":1}"#.into();
    let err = History::parse(&lines.join("\n")).unwrap_err();
    assert!(matches!(err, Error::Malformed { line: 3, .. }), "{err:?}");
    assert!(err.to_string().starts_with("line 3:"), "{err}");

    lines[2] = "{not json".into();
    let err = History::parse(&lines.join("\n")).unwrap_err();
    assert!(err.to_string().starts_with("line 3:"), "{err}");
}

#[test]
fn incomplete_histories_are_refused() {
    let h = history(clean_ops(), clean_transfers());
    let text = h.to_jsonl();
    let lines: Vec<&str> = text.lines().collect();
    // No final state.
    let err = History::parse(&lines[..lines.len() - 1].join("\n")).unwrap_err();
    assert!(matches!(err, Error::MissingState), "{err:?}");
    // A completion whose invoke was lost.
    let err = History::parse(&lines[1..].join("\n")).unwrap_err();
    assert!(matches!(err, Error::Invalid { line: 1, .. }), "{err:?}");
    // A missing file names its path.
    let err = read_history("/nonexistent/history.jsonl").unwrap_err();
    assert!(err.to_string().contains("/nonexistent/history.jsonl"));
}

/// The clean run's transfers touching account 2, as the final state stores them (with timestamps).
fn stored(ids: &[u64]) -> Vec<Transfer> {
    let all = state(clean_transfers()).transfers;
    ids.iter()
        .map(|id| all.iter().find(|x| x.id == *id).unwrap().clone())
        .collect()
}

#[test]
fn the_clean_run_compares_its_reads_and_says_how_many() {
    let mut b = clean_ops();
    // Account 2 at index 6: transfers 1, 3, 4, 5 and 6 applied; 8 (indefinite) undecided, so a
    // page with or without it is right.
    b.history_read(4, 2, 0, 6, stored(&[1, 3, 4, 5, 6]), Vec::new());
    b.history_read(4, 2, 0, 6, stored(&[1, 3, 4, 5, 6, 8]), Vec::new());
    // A page after transfer 4's timestamp starts at transfer 5.
    b.history_read(4, 2, 1030, 6, stored(&[5, 6]), Vec::new());
    // Account 3 at index 6: undecided (transfer 8 touches it), so it is not compared.
    b.read(
        4,
        6,
        vec![Balance {
            id: 3,
            credits_posted: 999,
            ..Balance::default()
        }],
    );
    let report = check(&history(b, clean_transfers()));
    assert!(report.ok, "{report:#?}");
    let reads = &report.reads;
    assert_eq!((reads.balance_reads, reads.balance_reads_checked), (3, 2));
    assert_eq!(
        reads.accounts_checked.iter().copied().collect::<Vec<_>>(),
        [1]
    );
    assert_eq!((reads.history_reads, reads.history_reads_checked), (3, 3));
    assert_eq!(reads.history_transfers_checked, 13);
    let notes = &report.verdict("linearizable_reads").unwrap().notes;
    assert!(
        notes[0].starts_with("reads compared with the replay: 2 of 3 balance reads (accounts {1}), 3 of 3 history reads"),
        "{notes:?}"
    );
}

/// The clean run plus one history read of account 2; the violations of `linearizable_reads`.
fn page_violations(
    after: u64,
    applied: u64,
    page: Vec<Transfer>,
    balances: Vec<Balance>,
) -> Vec<String> {
    let mut b = clean_ops();
    b.history_read(4, 2, after, applied, page, balances);
    let h = history(b, clean_transfers());
    let report = check(&h);
    if report.ok {
        return Vec::new();
    }
    assert_eq!(report.failed(), ["linearizable_reads"], "{report:#?}");
    report
        .verdict("linearizable_reads")
        .unwrap()
        .violations
        .clone()
}

#[test]
fn a_history_page_that_skips_or_invents_a_transfer_is_caught() {
    let v = page_violations(0, 6, stored(&[1, 4, 5, 6]), Vec::new());
    assert!(
        v[0].contains("returned transfers [1, 4, 5, 6] where the account's next transfers in apply order are [1, 3, 4, 5]"),
        "{v:?}"
    );
    let mut page = stored(&[1, 3]);
    page.push(t(99, 2, 3, 1, &[]));
    let v = page_violations(0, 6, page, Vec::new());
    assert!(
        v[0].contains("returned transfer 99, which is not in the final state"),
        "{v:?}"
    );
    let mut page = stored(&[1, 3]);
    page[1].amount += 1;
    let v = page_violations(0, 6, page, Vec::new());
    assert!(v[0].contains("returned transfer 3 as"), "{v:?}");
}

#[test]
fn a_history_page_from_the_future_or_cut_short_is_caught() {
    // A read served at index 2 while transfer 3 (index 3) was being written returned it.
    let mut b = Builder::default();
    b.ok(1, vec![t(1, 2, 1, 100, &[])], 1);
    b.ok(2, vec![t(2, 1, 3, 30, &[])], 2);
    b.history_invoke(4, 2, 0);
    b.ok(1, vec![t(3, 2, 3, 10, &["linked"]), t(4, 3, 2, 5, &[])], 3);
    let page = state(clean_transfers()).transfers[..3].to_vec();
    let page: Vec<Transfer> = page.into_iter().filter(|x| x.id != 2).collect();
    b.history_done(4, 2, 0, 2, page, Vec::new());
    let transfers = clean_transfers()[..4].to_vec();
    let h = history(b, transfers);
    assert_only(&h, "linearizable_reads");
    let r = check(&h);
    let v = &r.verdict("linearizable_reads").unwrap().violations;
    assert!(
        v[0].contains("returned transfer 3, applied at index 3 or later"),
        "{v:?}"
    );
    // At index 6 a page with room left must hold transfer 5 (index 4).
    let v = page_violations(0, 6, stored(&[1, 3, 4]), Vec::new());
    assert!(
        v[0].contains(
            "the page of 3 transfers (limit 20) ends before transfer 5, applied by index 4"
        ),
        "{v:?}"
    );
}

#[test]
fn a_wrong_running_balance_in_a_history_page_is_caught() {
    let after = |debits_pending, debits_posted, credits_posted| Balance {
        id: 2,
        debits_pending,
        debits_posted,
        credits_posted,
        ..Balance::default()
    };
    // Account 2 after 1 (2 -> 1, 100), 3 (2 -> 3, 10), 4 (3 -> 2, 5), 5 (2 -> 3, 20 pending) and
    // 6 (its post).
    let right = vec![
        after(0, 100, 0),
        after(0, 110, 0),
        after(0, 110, 5),
        after(20, 110, 5),
        after(0, 130, 5),
    ];
    let page = stored(&[1, 3, 4, 5, 6]);
    assert!(page_violations(0, 6, page.clone(), right.clone()).is_empty());
    let mut wrong = right;
    wrong[4].debits_pending = 20; // the post did not release the pending amount
    let v = page_violations(0, 6, page, wrong);
    assert!(
        v[0].contains(
            "balances right after transfer 6 returned debits_pending 20, debits_posted 130"
        ),
        "{v:?}"
    );
}

#[test]
fn acknowledged_indexes_against_the_apply_order_are_caught() {
    let mut transfers = clean_transfers();
    transfers[0].timestamp = 1015; // transfer 1 (index 1) after transfer 2 (index 2)
    let h = history(clean_ops(), transfers);
    assert_only(&h, "linearizable_reads");
    let r = check(&h);
    let v = &r.verdict("linearizable_reads").unwrap().violations[0];
    assert!(
        v.contains("transfer 1 (timestamp 1015) was acknowledged at commit index 1, below commit index 2 of transfer 2"),
        "{v}"
    );
}

/// Pending 20 (2 -> 3, 50, 1 s timeout) at index 7, never resolved; transfer 21 (2 -> 3, 1) at
/// index 8, stamped 2 s later: by index 8, and before transfer 21, the pending had expired. A
/// balance read of account 3 at index 8 and a history read of it after the pending give
/// `credits_pending` as given.
fn expiry_run(read_pending: u64, history_pending: u64) -> History {
    let second = 1_000_000_000;
    let pending = Transfer {
        timeout: 1,
        ..t(20, 2, 3, 50, &["pending"])
    };
    let later = t(21, 2, 3, 1, &[]);
    let mut b = clean_ops();
    b.ok(1, vec![pending.clone()], 7);
    b.ok(1, vec![later.clone()], 8);
    // Account 3 at index 8: 30 + 10 + 20 (posted) + 7 + 1 in, 5 out.
    let account_3 = |credits_pending| Balance {
        id: 3,
        debits_posted: 5,
        credits_posted: 68,
        credits_pending,
        ..Balance::default()
    };
    b.read(4, 8, vec![account_3(read_pending)]);
    let stored_later = Transfer {
        timestamp: 2000 + 2 * second,
        ..later
    };
    b.history_read(
        4,
        3,
        2000,
        8,
        vec![stored_later.clone()],
        vec![account_3(history_pending)],
    );
    let mut transfers = clean_transfers();
    transfers.push(Transfer {
        timestamp: 2000,
        ..pending
    });
    transfers.push(stored_later);
    history(b, transfers)
}

#[test]
fn an_expired_pending_counts_once_its_expiry_is_certain() {
    let report = check(&expiry_run(0, 0));
    assert!(report.ok, "{report:#?}");
    assert!(
        report.reads.accounts_checked.contains(&3),
        "{:?}",
        report.reads
    );
    assert_eq!(report.reads.history_balances_checked, 1);
    for (read, page) in [(50, 0), (0, 50)] {
        let h = expiry_run(read, page);
        assert_only(&h, "linearizable_reads");
        let report = check(&h);
        let v = &report.verdict("linearizable_reads").unwrap().violations;
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(
            v[0].contains("returned debits_pending 0, debits_posted 5, credits_pending 50"),
            "{v:?}"
        );
    }
}

#[test]
fn a_window_with_no_later_ok_write_fails_availability() {
    let mut b = clean_ops();
    b.nemesis(NemesisAction::Start, "kill -9 node 2 (the leader)");
    b.batch(1, vec![t(30, 2, 3, 1, &[])], Phase::Fail, &[], None);
    b.nemesis(NemesisAction::Stop, "kill: node 2 restarted");
    b.batch(1, vec![t(31, 2, 3, 1, &[])], Phase::Fail, &[], None);
    let h = history(b, clean_transfers());
    assert_only(&h, "availability");
    let r = check(&h);
    let v = &r.verdict("availability").unwrap().violations;
    assert_eq!(v.len(), 1, "{v:?}");
    assert!(
        v[0].contains("window 2 \"kill -9 node 2 (the leader)\"")
            && v[0].contains("never recovered"),
        "{v:?}"
    );

    // The same window followed by one ok write passes.
    let mut b = clean_ops();
    b.nemesis(NemesisAction::Start, "kill -9 node 2 (the leader)");
    b.nemesis(NemesisAction::Stop, "kill: node 2 restarted");
    b.ok(1, vec![t(32, 2, 3, 1, &[])], 9);
    let mut transfers = clean_transfers();
    transfers.push(t(32, 2, 3, 1, &[]));
    assert!(check(&history(b, transfers)).ok);
}

#[test]
fn a_transfer_stamped_past_the_real_time_of_its_answer_fails_ledger_time() {
    // The run's time 0 at the Unix epoch: the clean run's stamps (about 1 µs) are at or before
    // every answer, so ledger time was never ahead, and the history says how far it was compared.
    let mut h = history(clean_ops(), clean_transfers());
    h.started_unix_ns = Some(0);
    let report = check(&h);
    assert!(report.ok, "{report:#?}");
    let notes = &report.verdict("ledger_time_not_ahead").unwrap().notes;
    assert!(
        notes
            .iter()
            .any(|n| n.starts_with("6 acknowledged transfers")),
        "{notes:?}"
    );
    // Every stamp 2 s later (the order, and so every other property, unchanged): a leader whose
    // fast clock set ledger time.
    for t in &mut h.state.transfers {
        t.timestamp += 2_000_000_000;
    }
    assert_only(&h, "ledger_time_not_ahead");
    let report = check(&h);
    let violations = &report.verdict("ledger_time_not_ahead").unwrap().violations;
    assert!(violations[0].contains("past that moment"), "{violations:?}");
    // A history without a start time is not compared (an older run's).
    h.started_unix_ns = None;
    assert!(check(&h).ok);
}

#[test]
fn the_start_record_is_the_first_line_or_nothing() {
    let mut h = history(clean_ops(), clean_transfers());
    h.started_unix_ns = Some(1_764_000_000_000_000_000);
    let text = h.to_jsonl();
    assert!(text.starts_with("{\"type\":\"start\""), "{text}");
    assert_eq!(History::parse(&text).expect("parses"), h);
    let mut lines: Vec<&str> = text.lines().collect();
    lines.swap(0, 1);
    let err = History::parse(&lines.join("\n")).expect_err("a start record on line 2");
    assert!(err.to_string().contains("line 2"), "{err}");
}
