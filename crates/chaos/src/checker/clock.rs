//! `ledger_time_not_ahead`: no acknowledged transfer is stamped later than the real time of its
//! answer plus a bound. Ledger time is the log's timestamps, and pending transfers expire by it; a
//! leader whose clock ran ahead (the `clock` fault) must not carry it along: the proposer's clock
//! rule caps a stamp at a majority's median time plus `MAX_CLOCK_STEP` (250 ms). The real time is
//! the machine's wall clock (the harness's, never faulted): the run's start (`History::
//! started_unix_ns`) plus the time the client saw the answer. Ledger time may lag real time (a
//! node started with a slow clock stamps `last + 1` until it catches up: pending transfers expire
//! late, never early), which this property reports but does not fail.

use std::collections::BTreeMap;

use super::{Call, Collector, Verdict};
use crate::history::{History, Kind, Phase};

/// How far past the real time of its answer an acknowledged transfer's timestamp may be: the
/// clock rule's 250 ms, a tick of the node's clock reading, the client's scheduling.
pub const LEDGER_TIME_AHEAD_BOUND_NS: u64 = 1_000_000_000;

pub(super) fn ledger_time_not_ahead(history: &History, calls: &[Call]) -> Verdict {
    let mut v = Collector::new("ledger_time_not_ahead");
    let Some(start) = history.started_unix_ns else {
        let mut verdict = v.finish();
        verdict
            .notes
            .push("the history has no start time: ledger time not compared".into());
        return verdict;
    };
    // Each acknowledged transfer's first ok answer, in ns since the run's start.
    let mut answered: BTreeMap<u64, u64> = BTreeMap::new();
    let batches = calls
        .iter()
        .filter(|c| c.kind == Kind::TransferBatch && c.phase == Phase::Ok);
    for call in batches {
        let Some(done) = call.complete_ns else {
            continue;
        };
        for (t, result) in call.transfers.iter().zip(call.results) {
            if result == "ok" {
                let at = answered.entry(t.id).or_insert(done);
                *at = (*at).min(done);
            }
        }
    }
    let (mut checked, mut most_ahead, mut most_behind) = (0u64, i128::MIN, i128::MAX);
    for t in &history.state.transfers {
        let Some(at) = answered.get(&t.id) else {
            continue;
        };
        let real = i128::from(start) + i128::from(*at);
        let ahead = i128::from(t.timestamp) - real;
        checked += 1;
        most_ahead = most_ahead.max(ahead);
        most_behind = most_behind.min(ahead);
        if ahead > i128::from(LEDGER_TIME_AHEAD_BOUND_NS) {
            v.add(format!(
                "transfer {} answered ok {:.3} s into the run is stamped {:.3} s past that \
                 moment (bound {:.1} s): a fast clock moved ledger time",
                t.id,
                *at as f64 / 1e9,
                ahead as f64 / 1e9,
                LEDGER_TIME_AHEAD_BOUND_NS as f64 / 1e9
            ));
        }
    }
    let mut verdict = v.finish();
    if checked > 0 {
        verdict.notes.push(format!(
            "{checked} acknowledged transfers' timestamps set against the real time of their \
             answers: at most {:+.3} s ahead, at most {:.3} s behind",
            most_ahead as f64 / 1e9,
            (-most_behind).max(0) as f64 / 1e9
        ));
    }
    verdict
}
