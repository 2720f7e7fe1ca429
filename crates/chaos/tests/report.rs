use bulwark_chaos::checker::{nemesis_windows, recovery_times, Verdict};
use bulwark_chaos::report::{render_html, RunMeta};
use bulwark_chaos::{
    check, Account, FinalState, History, Kind, NemesisAction, Op, Phase, Report, Transfer,
};
use std::collections::HashMap;

const S: u64 = 1_000_000_000;
const MS: u64 = 1_000_000;

const PROPERTIES: [&str; 9] = [
    "ledgers_balance",
    "no_overdraft",
    "acknowledged_present_once",
    "refused_absent",
    "indefinite_at_most_once",
    "linked_chains_whole",
    "pending_resolved_once",
    "linearizable_reads",
    "availability",
];

fn t(id: u64, debit: u64, credit: u64, amount: u64) -> Transfer {
    Transfer {
        id,
        debit,
        credit,
        amount,
        ledger: 1,
        ..Transfer::default()
    }
}

/// Ops at explicit times (ns since start).
#[derive(Default)]
struct Builder {
    ops: Vec<Op>,
    next_id: u64,
}

impl Builder {
    /// A transfer batch of one transfer (1 → 2, amount 1), invoked at `at` and completed `after` later.
    fn batch(&mut self, process: u64, at: u64, after: Option<u64>, phase: Phase) -> Transfer {
        self.next_id += 1;
        let x = t(self.next_id, 1, 2, 1);
        self.ops.push(Op {
            transfers: vec![x.clone()],
            ..Op::new(process, Kind::TransferBatch, Phase::Invoke, at)
        });
        if let Some(after) = after {
            self.ops.push(Op {
                results: if phase == Phase::Ok {
                    vec!["ok".to_string()]
                } else {
                    Vec::new()
                },
                commit_index: (phase == Phase::Ok).then_some(self.next_id),
                ..Op::new(process, Kind::TransferBatch, phase, at + after)
            });
        }
        x
    }

    fn read(&mut self, process: u64, at: u64, after: u64, applied: u64) {
        self.ops
            .push(Op::new(process, Kind::ReadBalances, Phase::Invoke, at));
        self.ops.push(Op {
            applied_index: Some(applied),
            ..Op::new(process, Kind::ReadBalances, Phase::Ok, at + after)
        });
    }

    fn nemesis(&mut self, at: u64, action: NemesisAction, what: &str) {
        self.ops.push(Op {
            action: Some(action),
            description: Some(what.to_string()),
            ..Op::new(99, Kind::Nemesis, Phase::Info, at)
        });
    }

    /// Sorted by time (stable), as a client writes them.
    fn history(mut self, transfers: Vec<Transfer>) -> History {
        self.ops.sort_by_key(|o| o.time_ns);
        History {
            started_unix_ns: None,
            ops: self.ops,
            state: state(transfers),
        }
    }
}

/// The final state holding `transfers` (plain ones), balances computed.
fn state(transfers: Vec<Transfer>) -> FinalState {
    let mut accounts: HashMap<u64, Account> = HashMap::new();
    for id in 1..=10 {
        accounts.insert(
            id,
            Account {
                id,
                ledger: 1,
                ..Account::default()
            },
        );
    }
    for x in &transfers {
        accounts.get_mut(&x.debit).unwrap().debits_posted += x.amount;
        accounts.get_mut(&x.credit).unwrap().credits_posted += x.amount;
    }
    let mut accounts: Vec<Account> = accounts.into_values().collect();
    accounts.sort_by_key(|a| a.id);
    FinalState {
        accounts,
        transfers,
        changes: None,
    }
}

fn meta() -> RunMeta {
    RunMeta {
        seed: 424242,
        nodes: 5,
        duration_s: 30.0,
        replay_command:
            "bulwark chaos --seed 424242 --nodes 5 --duration 30s --nemesis kill,partition"
                .to_string(),
        version: Some("0.1.0 (abc1234)".to_string()),
        started_at: "2026-11-25T02:30:00Z".to_string(),
        nemeses: vec!["kill".to_string(), "partition".to_string()],
        extra: vec![("final index".to_string(), "51007".to_string())],
    }
}

/// The known run: writes every 100 ms by two processes; `kill -9 node 3` from 5.0 to 10.0 s, during
/// which writes fail; the first ok completion after the stop is at 10.7 s; a read or two.
fn known_run() -> History {
    let mut b = Builder::default();
    let mut acked = Vec::new();
    b.nemesis(5 * S, NemesisAction::Start, "kill -9 node 3 (the leader)");
    b.nemesis(10 * S, NemesisAction::Stop, "kill: node 3 restarted");
    // Process 1: ok before 5 s, fail from 5 s until 10.6 s, ok completion at 10.7 s and later.
    let mut at = 0;
    while at < 15 * S {
        let x = if (5 * S..10_600 * MS).contains(&at) {
            b.batch(1, at, Some(20 * MS), Phase::Fail);
            None
        } else {
            Some(b.batch(1, at, Some(100 * MS), Phase::Ok))
        };
        acked.extend(x);
        at += 200 * MS;
    }
    // Process 2: reads.
    b.read(2, S, 3 * MS, 1000);
    b.read(2, 12 * S, 4 * MS, 1000);
    b.history(acked)
}

#[test]
fn recovery_time_is_from_stop_to_first_ok_write() {
    let h = known_run();
    let r = recovery_times(&h);
    assert_eq!(r.len(), 1);
    let r = &r[0];
    assert_eq!(r.window.start_ns, 5 * S);
    assert_eq!(r.window.stop_ns, 10 * S);
    assert!(r.window.closed);
    assert_eq!(r.window.description, "kill -9 node 3 (the leader)");
    assert_eq!(r.window.kind(), "kill");
    // Writes at 10.6 s complete ok at 10.7 s: 700 ms after the stop.
    assert_eq!(r.first_ok_after_stop_ns, Some(10_700 * MS));
    assert_eq!(r.recovery_ns, Some(700 * MS));
    // The write invoked at 4.8 s completed ok at 4.9 s; then none until 10.7 s.
    assert_eq!(r.first_ok_after_start_ns, Some(10_700 * MS));
    assert_eq!(r.longest_gap, Some((5 * S, 10_700 * MS)));

    // The checker's availability verdict carries the same figure, and stays a figure.
    let report = check(&h);
    assert!(report.ok, "{report:#?}");
    let avail = report.verdict("availability").unwrap();
    assert!(avail.ok && avail.violations.is_empty());
    assert!(avail.notes[0].starts_with("inside nemesis windows: "));
    assert!(
        avail.notes.iter().any(|n| n
            == "time to recover after window 1 \"kill -9 node 3 (the leader)\" (stopped at 10.000 s): 700 ms"),
        "{avail:#?}"
    );
    assert_eq!(
        avail.notes.last().unwrap(),
        "time to recover: median 700 ms, max 700 ms (1 of 1 windows recovered)"
    );

    // And the report shows it in the nemesis table.
    let html = render_html(&h, &report, &meta());
    let row = section(&html, "<tr class=\"window\" data-window=\"1\">", "</tr>");
    assert!(row.contains("kill -9 node 3 (the leader)"), "{row}");
    assert!(
        row.contains(">5.000 s<") && row.contains(">10.000 s<"),
        "{row}"
    );
    assert!(
        row.contains("<td class=\"num recovery\">700 ms</td>"),
        "{row}"
    );
    assert!(
        row.contains("5.70 s from 5.000 s to 10.700 s"),
        "longest gap: {row}"
    );
    assert!(html.contains("time to recover: median 700 ms, max 700 ms"));
}

#[test]
fn median_and_max_over_several_windows() {
    let mut b = Builder::default();
    let mut acked = Vec::new();
    // Windows stopping at 10, 20, 30 s; first ok completions after them at +0.3, +1.5, +0.9 s.
    for (k, (stop, rec)) in [(10, 300), (20, 1500), (30, 900)].into_iter().enumerate() {
        b.nemesis(
            (stop - 5) * S,
            NemesisAction::Start,
            &format!("pause node {k}"),
        );
        b.nemesis(
            stop * S,
            NemesisAction::Stop,
            &format!("pause: node {k} resumed"),
        );
        acked.push(b.batch(1, stop * S + rec * MS - 50 * MS, Some(50 * MS), Phase::Ok));
    }
    // A fourth window, closed, after which no write succeeds.
    b.nemesis(40 * S, NemesisAction::Start, "partition [1, 2] | [3, 4, 5]");
    b.nemesis(45 * S, NemesisAction::Stop, "partition: healed");
    b.batch(1, 46 * S, Some(S), Phase::Info);
    let h = b.history(acked);
    let times: Vec<Option<u64>> = recovery_times(&h).iter().map(|r| r.recovery_ns).collect();
    assert_eq!(
        times,
        vec![Some(300 * MS), Some(1500 * MS), Some(900 * MS), None]
    );
    let report = check(&h);
    let avail = report.verdict("availability").unwrap();
    // The cluster never came back after window 4: a failure, not only a figure.
    assert!(!avail.ok);
    assert_eq!(report.failed(), vec!["availability"]);
    assert_eq!(
        avail.violations,
        vec!["no ok transfer batch completed after window 4 \"partition [1, 2] | [3, 4, 5]\" stopped at 45.000 s: the cluster never recovered"]
    );
    assert_eq!(
        avail.notes.last().unwrap(),
        "time to recover: median 900 ms, max 1.50 s (3 of 4 windows recovered)"
    );
    assert!(avail.notes.iter().any(|n| n
        == "no ok transfer batch completed after window 4 \"partition [1, 2] | [3, 4, 5]\" (stopped at 45.000 s): not recovered"));
    let html = render_html(&h, &report, &meta());
    let row = section(&html, "<tr class=\"window\" data-window=\"4\">", "</tr>");
    assert!(row.contains("not recovered"), "{row}");
    let row = section(&html, "id=\"property-availability\"", "</tr>");
    assert!(
        row.contains("FAIL") && row.contains("never recovered"),
        "{row}"
    );

    // One ok write after window 4 is enough for the property.
    let mut b = Builder {
        ops: h.ops,
        next_id: 100,
    };
    let late = b.batch(1, 50 * S, Some(10 * MS), Phase::Ok);
    let mut acked: Vec<_> = h.state.transfers.clone();
    acked.push(late);
    let report = check(&b.history(acked));
    assert!(report.ok, "{report:#?}");
}

#[test]
fn stops_close_the_window_of_their_fault() {
    // Overlapping faults whose stops come in start order: each stop closes its own kind.
    let mut b = Builder::default();
    b.nemesis(S, NemesisAction::Start, "kill -9 node 2");
    b.nemesis(2 * S, NemesisAction::Start, "partition [1] | [2, 3]");
    b.nemesis(3 * S, NemesisAction::Stop, "kill: node 2 restarted");
    b.nemesis(4 * S, NemesisAction::Stop, "partition: healed");
    let h = b.history(Vec::new());
    let w = nemesis_windows(&h);
    assert_eq!(w.len(), 2);
    assert_eq!(
        (w[0].kind(), w[0].start_ns, w[0].stop_ns),
        ("kill", S, 3 * S)
    );
    assert_eq!(
        (w[1].kind(), w[1].start_ns, w[1].stop_ns),
        ("partition", 2 * S, 4 * S)
    );
}

/// The text between the first `from` and the next `to` after it.
fn section<'a>(html: &'a str, from: &str, to: &str) -> &'a str {
    let start = html
        .find(from)
        .unwrap_or_else(|| panic!("no {from:?} in the page"));
    let body = start + from.len();
    let len = html[body..].find(to).expect("section end");
    &html[start..body + len]
}

#[test]
fn valid_run_shows_verdict_meta_and_every_property() {
    let h = known_run();
    let report = check(&h);
    assert!(report.ok);
    let html = render_html(&h, &report, &meta());
    assert!(html.starts_with("<!DOCTYPE html>"));
    assert!(html.contains("<div class=\"verdict valid\" id=\"verdict\">VALID</div>"));
    assert!(!html.contains("INVALID"));
    assert!(html.contains("<dt>seed</dt><dd>424242</dd>"));
    assert!(html.contains("<dt>nodes</dt><dd>5</dd>"));
    assert!(html.contains("<dt>duration</dt><dd>30 s (30.00 s)</dd>"));
    assert!(html.contains("<dt>bulwark version</dt><dd>0.1.0 (abc1234)</dd>"));
    assert!(html.contains("<dt>nemeses enabled</dt><dd>kill, partition</dd>"));
    assert!(html.contains("<dt>final index</dt><dd>51007</dd>"));
    assert!(html.contains(
        "<pre class=\"replay\" id=\"replay\">bulwark chaos --seed 424242 --nodes 5 --duration 30s --nemesis kill,partition</pre>"
    ));
    for p in PROPERTIES {
        let row = section(&html, &format!("id=\"property-{p}\""), "</tr>");
        assert!(row.contains(&format!("<b>{p}</b>")), "{row}");
        if p == "availability" {
            assert!(row.contains("FIGURE"), "{row}");
            assert!(row.contains("time to recover: median 700 ms"), "{row}");
        } else {
            assert!(row.contains("PASS"), "{row}");
            assert!(row.contains("<td class=\"num\">0</td>"), "{row}");
        }
    }
    // Self-contained: no external resources.
    for bad in ["http://", "https://", "<link", "src=", "@import"] {
        let stripped = html.replace("http://www.w3.org/2000/svg", "");
        assert!(!stripped.contains(bad), "page references {bad}");
    }
    // The charts are there, with their axes.
    for id in [
        "chart-throughput",
        "chart-latency-writes",
        "chart-latency-reads",
    ] {
        let svg = section(&html, &format!("id=\"{id}\""), "</svg>");
        assert!(svg.contains("seconds since start"), "{id}");
    }
    let thr = section(&html, "id=\"chart-throughput\"", "</svg>");
    assert!(thr.contains("class=\"area-ok\"") && thr.contains("class=\"area-fail\""));
    assert!(thr.contains("class=\"line-acked\""));
    let lat = section(&html, "id=\"chart-latency-writes\"", "</svg>");
    for class in ["line-p50", "line-p99", "line-max"] {
        assert!(lat.contains(class));
    }
    // Latencies 20 ms and 100 ms: the axis spans 10 ms to 1000 ms.
    assert!(lat.contains(">10 ms<") && lat.contains(">100 ms<"), "{lat}");
    // 15 s of ops → 1-second buckets, 30 s axis (the run's duration).
    assert!(html.contains("1-second buckets"));
    assert!(thr.contains(">30</text>"));
    // The availability table: writes inside the window all failed; reads were outside.
    let avail = section(&html, "id=\"availability\"", "</section>");
    assert!(avail.contains("<b>0.0%</b> (0/26 ok)"), "{avail}");
    assert!(avail.contains("(2/2 ok)"), "{avail}");
}

#[test]
fn invalid_run_lists_escaped_violations() {
    let mut b = Builder::default();
    b.nemesis(
        S,
        NemesisAction::Start,
        "<script>alert('band')</script> node 1",
    );
    let lost = b.batch(1, 2 * S, Some(10 * MS), Phase::Ok);
    let _ = lost;
    let h = b.history(Vec::new()); // the acknowledged transfer is missing
    let mut report = check(&h);
    assert!(!report.ok);
    // A property of the harness's own making, with hostile text and more than 20 violations.
    report.verdicts.push(Verdict {
        property: "custom_property",
        ok: false,
        violations: (0..20)
            .map(|i| format!("violation {i}: <script>alert(\"x\")</script> & more"))
            .collect(),
        notes: vec!["57 violations in all".to_string()],
    });
    let html = render_html(&h, &report, &meta());
    assert!(html.contains("<div class=\"verdict invalid\" id=\"verdict\">INVALID</div>"));
    assert!(html.contains(
        "<div class=\"failed\">failed: acknowledged_present_once, custom_property</div>"
    ));
    let row = section(&html, "id=\"property-acknowledged_present_once\"", "</tr>");
    assert!(row.contains("FAIL") && row.contains("<td class=\"num\">1</td>"));
    assert!(
        row.contains("<li>transfer 1 acknowledged (process 1, commit index 1) is missing from the final state</li>"),
        "{row}"
    );
    let row = section(&html, "id=\"property-custom_property\"", "</tr>");
    assert!(row.contains("<td class=\"num\">57</td>"), "{row}");
    assert_eq!(row.matches("<li>violation").count(), 20);
    assert!(row.contains(
        "<li>violation 0: &lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; more</li>"
    ));
    assert!(row.contains("… and 37 more not listed"), "{row}");
    // Nothing hostile comes out raw: not in the table, the band labels or the nemesis table.
    assert!(!html.contains("<script>alert"));
    assert!(html.contains("&lt;script&gt;alert(&#39;band&#39;)&lt;/script&gt; node 1"));
    // The only scripts: the embedded JSON and the copy button.
    assert_eq!(html.matches("<script").count(), 2);
}

#[test]
fn every_window_gets_one_labelled_band_and_unclosed_ones_close_at_the_end() {
    let mut b = Builder::default();
    let mut acked = Vec::new();
    for k in 0..60 {
        acked.push(b.batch(1, k * 500 * MS, Some(10 * MS), Phase::Ok));
    }
    b.nemesis(3 * S, NemesisAction::Start, "kill -9 node 3");
    b.nemesis(6 * S, NemesisAction::Stop, "kill: node 3 restarted");
    b.nemesis(12 * S, NemesisAction::Start, "partition [1, 2] | [3, 4, 5]");
    b.nemesis(15 * S, NemesisAction::Stop, "partition: healed");
    b.nemesis(20 * S, NemesisAction::Start, "pause (SIGSTOP) node 2");
    // never stopped; the last op is the write completing at 29.51 s
    let h = b.history(acked);
    let end = 29 * S + 510 * MS;
    let w = nemesis_windows(&h);
    assert_eq!(w.len(), 3);
    assert!(!w[2].closed);
    assert_eq!(w[2].stop_ns, end);
    let r = recovery_times(&h);
    assert_eq!(r[0].recovery_ns, Some(10 * MS));
    assert_eq!(r[1].recovery_ns, Some(10 * MS));
    assert_eq!(r[2].recovery_ns, None);
    assert_eq!(r[2].first_ok_after_start_ns, Some(20 * S + 10 * MS));

    let report = check(&h);
    let avail = report.verdict("availability").unwrap();
    assert!(avail.notes.iter().any(|n| n
        == "window 3 \"pause (SIGSTOP) node 2\" (started at 20.000 s) never stopped: no time to recover"));
    let mut m = meta();
    m.duration_s = 0.0;
    let html = render_html(&h, &report, &m);
    for id in [
        "chart-throughput",
        "chart-latency-writes",
        "chart-latency-reads",
    ] {
        let svg = section(&html, &format!("id=\"{id}\""), "</svg>");
        assert_eq!(svg.matches("class=\"nemesis-band\"").count(), 3, "{id}");
        for (n, label) in [
            (1, "#1 kill -9 node 3"),
            (2, "#2 partition [1, 2] | [3, 4, 5]"),
            (3, "#3 pause (SIGSTOP) node 2 (not stopped)"),
        ] {
            assert!(
                svg.contains(&format!("<text class=\"band-label\" data-window=\"{n}\"")),
                "{id} {n}"
            );
            assert!(svg.contains(&format!(">{label}</text>")), "{id}: {label}");
        }
    }
    // Band 3 spans 20 s to the end of the run (29.51 s) on a 30-bucket axis of 1130 px from x=70.
    let thr = section(&html, "id=\"chart-throughput\"", "</svg>");
    let band = section(thr, "data-window=\"3\" x=", "</rect>");
    let x0 = 70.0 + 1060.0 * 20.0 / 30.0;
    let w = 1060.0 * 9.51 / 30.0;
    assert!(
        band.contains(&format!("x=\"{x0:.1}\"")) && band.contains(&format!("width=\"{w:.1}\"")),
        "{band}"
    );
    assert!(
        band.contains("29.510 s (end of run, never stopped)"),
        "{band}"
    );
    // Colours by fault kind: three kinds, three colours, in the legend too.
    for kind in ["kill", "partition", "pause"] {
        assert!(html.contains(&format!("fault: {kind} (1)")), "{kind}");
    }
    let row = section(&html, "<tr class=\"window\" data-window=\"3\">", "</tr>");
    assert!(row.contains("never stopped"), "{row}");
}

#[test]
fn never_completed_ops_count_as_info_at_the_end() {
    let mut b = Builder::default();
    let x = b.batch(1, S, Some(5 * MS), Phase::Ok);
    b.batch(2, 2 * S, None, Phase::Info); // never completes
    b.batch(3, 3 * S, Some(4 * S), Phase::Info); // times out at 7 s
    let h = b.history(vec![x]);
    let report = check(&h);
    let mut m = meta();
    m.duration_s = 0.0;
    let html = render_html(&h, &report, &m);
    assert!(html.contains(
        "<div class=\"k\">transfer batches</div><div class=\"v\">3</div><div class=\"s\">ok 1 · fail 0 · info 2</div>"
    ), "{html}");
    assert!(html.contains("<div class=\"k\">never completed</div><div class=\"v\">1</div>"));
    // Both info ops are in the last bucket (6..7 s, the end of the run): one info area, one step.
    let thr = section(&html, "id=\"chart-throughput\"", "</svg>");
    let info = section(thr, "class=\"area-info\" d=\"", "\"");
    // 7 one-second buckets over 1060 px: the last bucket starts at x = 70 + 1060 * 6/7.
    assert!(
        info.contains(&format!("{:.1}", 70.0 + 1060.0 * 6.0 / 7.0)),
        "{info}"
    );
    // Only completed ops have a latency: 5 ms and 4 s.
    assert!(html.contains("write latency p50 / p99</div><div class=\"v\">5.00 ms / 4.00 s</div>"));
    let avail = section(&html, "id=\"availability\"", "</section>");
    assert!(avail.contains("(1/3 ok)"), "{avail}");
}

#[test]
fn empty_history_renders() {
    let h = History::default();
    let report = check(&h);
    let html = render_html(&h, &report, &RunMeta::default());
    assert!(html.contains("id=\"verdict\">VALID</div>"));
    assert!(html.contains(">no client operations</text>"));
    assert!(html.contains(">no completed transfer batches</text>"));
    assert!(html.contains("No nemesis windows in this run."));
    assert!(html.contains("<dt>bulwark version</dt><dd>unknown</dd>"));
    assert!(html.ends_with("</html>\n"));
    // And a report without verdicts at all.
    let bare = Report::default();
    let html = render_html(&h, &bare, &RunMeta::default());
    assert!(html.contains("id=\"verdict\">INVALID</div>"));
}

// ---- a realistic synthetic run ----

struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
    /// Uniform in [0, 1).
    fn f(&mut self) -> f64 {
        self.next() as f64 / (1u64 << 31) as f64
    }
    /// Exponential with mean 1.
    fn exp(&mut self) -> f64 {
        -(1.0 - self.f()).ln()
    }
}

/// A fault schedule: (start s, stop s or none, description, stop description).
type Fault = (f64, Option<f64>, String, String);

fn schedule(duration_s: f64, rng: &mut Lcg, leave_last_open: bool) -> Vec<Fault> {
    let mut out = Vec::new();
    let mut at = 8.0;
    let mut k = 0;
    while at + 15.0 < duration_s {
        let hold = 4.0 + rng.f() * 8.0;
        let node = 1 + rng.next() % 5;
        let (start, stop) = match k % 4 {
            0 => (
                format!("kill -9 node {node} (the leader)"),
                format!("kill: node {node} restarted"),
            ),
            1 => (
                "partition [1, 4] | [2, 3, 5]".to_string(),
                "partition: healed".to_string(),
            ),
            2 => (
                format!("pause (SIGSTOP) node {node}"),
                format!("pause: node {node} resumed (SIGCONT)"),
            ),
            _ => (
                format!("disk full on node {node} (64 MiB of filler)"),
                format!("disk: space returned on node {node}"),
            ),
        };
        out.push((at, Some(at + hold), start, stop));
        at += hold + 8.0 + rng.f() * 12.0;
        k += 1;
    }
    if leave_last_open {
        out.push((
            duration_s - 6.0,
            None,
            "partition [2] | [1, 3, 4, 5]".to_string(),
            String::new(),
        ));
    }
    out
}

/// A run of `clients` processes for `duration_s`, writes and reads, with faults that hurt.
fn synthetic(duration_s: f64, clients: u64, seed: u64, leave_last_open: bool) -> History {
    let mut rng = Lcg(seed);
    let faults = schedule(duration_s, &mut rng, leave_last_open);
    let ns = |s: f64| (s * 1e9) as u64;
    let mut ops: Vec<Op> = Vec::new();
    for f in &faults {
        ops.push(Op {
            action: Some(NemesisAction::Start),
            description: Some(f.2.clone()),
            ..Op::new(1000, Kind::Nemesis, Phase::Info, ns(f.0))
        });
        if let Some(stop) = f.1 {
            ops.push(Op {
                action: Some(NemesisAction::Stop),
                description: Some(f.3.clone()),
                ..Op::new(1000, Kind::Nemesis, Phase::Info, ns(stop))
            });
        }
    }
    // Per fault: the outage after start and the settling time after stop.
    let effects: Vec<(f64, f64, f64, f64, usize)> = faults
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let stop = f.1.unwrap_or(duration_s + 10.0);
            (f.0, stop, 1.0 + rng.f() * 2.5, 0.1 + rng.f() * 1.4, i % 4)
        })
        .collect();
    // (p_fail, p_info, latency factor) at time s.
    let health = |s: f64| -> (f64, f64, f64) {
        for &(a, b, outage, settle, kind) in &effects {
            if s >= a && s < b {
                return match kind {
                    0 if s < a + outage => (0.9, 0.1, 1.0),
                    0 => (0.02, 0.0, 1.6),
                    1 if s < a + outage => (0.5, 0.4, 3.0),
                    1 => (0.05, 0.05, 2.0),
                    2 => (0.02, 0.2, 6.0),
                    _ => (0.3, 0.02, 1.2),
                };
            }
            if s >= b && s < b + settle {
                return (0.85, 0.1, 2.0);
            }
        }
        (0.002, 0.001, 1.0)
    };
    let mut id = 0;
    let mut present = Vec::new();
    for p in 0..clients {
        let mut s = rng.f() * 0.05;
        while s < duration_s {
            let (p_fail, p_info, slow) = health(s);
            let u = rng.f();
            let write = rng.f() < 0.8;
            let (phase, latency_ms) = if u < p_fail {
                (Phase::Fail, 0.5 + rng.f() * 3.0)
            } else if u < p_fail + p_info {
                (Phase::Info, 1000.0 + rng.f() * 5.0)
            } else {
                let base = if write { 4.0 } else { 1.5 };
                (Phase::Ok, base * slow * (0.5 + rng.exp()))
            };
            let done = s + latency_ms / 1000.0;
            if write {
                let n = 1 + rng.next() % 8;
                let transfers: Vec<Transfer> = (0..n)
                    .map(|_| {
                        id += 1;
                        let d = 1 + rng.next() % 10;
                        let c = 1 + (d + rng.next() % 9) % 10;
                        t(id, d, c, 1 + rng.next() % 100)
                    })
                    .collect();
                if phase == Phase::Ok || (phase == Phase::Info && rng.f() < 0.5) {
                    present.extend(transfers.iter().cloned());
                }
                ops.push(Op {
                    transfers: transfers.clone(),
                    ..Op::new(p, Kind::TransferBatch, Phase::Invoke, ns(s))
                });
                ops.push(Op {
                    results: if phase == Phase::Ok {
                        vec!["ok".to_string(); transfers.len()]
                    } else {
                        Vec::new()
                    },
                    ..Op::new(p, Kind::TransferBatch, phase, ns(done))
                });
            } else {
                ops.push(Op::new(p, Kind::ReadBalances, Phase::Invoke, ns(s)));
                ops.push(Op::new(p, Kind::ReadBalances, phase, ns(done)));
            }
            s = done + 0.01 + rng.f() * 0.03;
        }
    }
    ops.sort_by_key(|o| o.time_ns);
    // Commit indexes in completion order; reads see everything completed before them.
    let mut index = 0;
    for op in &mut ops {
        match (op.kind, op.phase) {
            (Kind::TransferBatch, Phase::Ok) => {
                index += 1;
                op.commit_index = Some(index);
            }
            (Kind::ReadBalances, Phase::Ok) => op.applied_index = Some(index),
            _ => {}
        }
    }
    History {
        started_unix_ns: None,
        ops,
        state: state(present),
    }
}

#[test]
fn realistic_run_renders_a_readable_sample() {
    let h = synthetic(240.0, 8, 7, true);
    let report = check(&h);
    assert!(report.ok, "{}", report.summary());
    let meta = RunMeta {
        seed: 7,
        nodes: 5,
        duration_s: 240.0,
        replay_command: "bulwark chaos --seed 7 --nodes 5 --duration 240s --clients 8 --nemesis kill,partition,pause,disk --out /tmp/chaos-7".to_string(),
        version: Some("0.1.0 (git fbda1e5)".to_string()),
        started_at: "2026-11-25T02:30:00Z".to_string(),
        nemeses: ["kill", "partition", "pause", "disk"].map(String::from).to_vec(),
        extra: vec![
            ("transfers acknowledged".to_string(), "123456".to_string()),
            ("final index".to_string(), "51007".to_string()),
        ],
    };
    let html = render_html(&h, &report, &meta);
    let windows = nemesis_windows(&h);
    assert!(windows.len() >= 8, "{}", windows.len());
    let thr = section(&html, "id=\"chart-throughput\"", "</svg>");
    assert_eq!(thr.matches("class=\"nemesis-band\"").count(), windows.len());
    // Every closed window recovered within the settling time the generator put after it.
    for r in recovery_times(&h).iter().filter(|r| r.window.closed) {
        let ns = r.recovery_ns.expect("recovered");
        assert!(ns < 3 * S, "{r:?}");
    }
    let path = std::env::temp_dir().join("report-sample.html");
    std::fs::write(&path, &html).unwrap();
    assert!(html.len() < 2_000_000, "{} bytes", html.len());

    // The same run having lost 30 acknowledged transfers: INVALID, 20 listed of 30.
    let mut lost = h.clone();
    let gone: Vec<u64> = lost.state.transfers.iter().take(30).map(|t| t.id).collect();
    lost.state.transfers.retain(|t| !gone.contains(&t.id));
    let report = check(&lost);
    assert!(!report.ok);
    let html = render_html(&lost, &report, &meta);
    assert!(html.contains("id=\"verdict\">INVALID</div>"));
    let row = section(&html, "id=\"property-acknowledged_present_once\"", "</tr>");
    assert!(row.contains("<td class=\"num\">30</td>"), "{row}");
    assert_eq!(
        row.matches("is missing from the final state</li>").count(),
        20
    );
    assert!(row.contains("… and 10 more not listed"), "{row}");
    let path = std::env::temp_dir().join("report-sample-invalid.html");
    std::fs::write(&path, &html).unwrap();
}

#[test]
fn huge_history_stays_small() {
    // A 20-minute run: ~600k ops.
    let h = synthetic(1200.0, 8, 11, false);
    assert!(h.ops.len() > 400_000, "{} ops", h.ops.len());
    let report = Report {
        ok: true,
        ..Report::default()
    };
    let started = std::time::Instant::now();
    let html = render_html(&h, &report, &meta());
    assert!(
        started.elapsed() < std::time::Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    assert!(html.len() < 4_000_000, "{} bytes", html.len());
    assert!(html.contains("1-second buckets"));

    // Thousands of tiny windows: bands and table rows are capped.
    let mut b = Builder::default();
    for k in 0..3000u64 {
        b.nemesis(k * S, NemesisAction::Start, "kill -9 node 1");
        b.nemesis(
            k * S + 100 * MS,
            NemesisAction::Stop,
            "kill: node 1 restarted",
        );
    }
    let h = b.history(Vec::new());
    let html = render_html(&h, &report, &meta());
    assert!(html.len() < 4_000_000, "{} bytes", html.len());
    let thr = section(&html, "id=\"chart-throughput\"", "</svg>");
    assert_eq!(thr.matches("class=\"nemesis-band\"").count(), 400);
    assert!(html.contains("Only the first 400 of 3000 nemesis windows are drawn."));
    assert!(html.contains("… and 2500 more windows not listed"));
    // 3000 s: buckets of 2 s.
    assert!(html.contains("2-second buckets"));
}
