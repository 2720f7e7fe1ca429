//! A leader whose wall clock jumps an hour ahead must not move ledger time an hour ahead: a
//! pending transfer with a 3-second timeout stays pending until about 3 seconds have passed.

use bulwark_consensus::sim::Sim;
use bulwark_ledger::PendingStatus;
use bulwark_limits::MAX_CLOCK_STEP;

const SECOND: u64 = 1_000_000_000;

/// Sends a write through `via` and runs until it is acknowledged.
fn commit(sim: &mut Sim, token: u64) {
    let done = sim.run_until(200, |s| s.acknowledged(token)).unwrap();
    assert!(done, "write {token} was not acknowledged");
}

/// Writes through `via` for two seconds after `created`: each batch's timestamp would expire
/// the 3-second pending transfer if ledger time had followed a clock an hour ahead.
fn writes_keep_it_pending(sim: &mut Sim, via: u64, pending: u64, created: u64) {
    while sim.elapsed_nanos() < created + 2 * SECOND {
        let token = sim.write(via);
        commit(sim, token);
        assert_eq!(
            sim.pending_status(via, pending),
            Some(PendingStatus::Pending),
            "expired {} ms after it was created",
            (sim.elapsed_nanos() - created) / 1_000_000
        );
    }
}

#[test]
fn a_leader_clock_jumping_an_hour_ahead_does_not_expire_a_pending_transfer_early() {
    let mut sim = Sim::scripted(3);
    assert!(sim.run_until(500, |s| s.leader().is_some()).unwrap());
    let leader = sim.leader().unwrap();
    let accounts = sim.write(leader);
    commit(&mut sim, accounts);
    let pending = sim.write_pending(leader, 3);
    commit(&mut sim, pending);
    let created = sim.elapsed_nanos();

    sim.jump_clock(leader, 3600 * SECOND as i64);
    writes_keep_it_pending(&mut sim, leader, pending, created);
    assert_eq!(sim.leader(), Some(leader), "the same leader all along");
    // Once its timeout has really passed (plus what a step within the bound may add), it
    // expires: expiry still works by ledger time.
    while sim.elapsed_nanos() < created + 3 * SECOND + 2 * MAX_CLOCK_STEP.as_nanos() as u64 {
        let token = sim.write(leader);
        commit(&mut sim, token);
    }
    assert_eq!(
        sim.pending_status(leader, pending),
        Some(PendingStatus::Expired)
    );
    sim.converge().unwrap();
}

#[test]
fn a_node_that_starts_with_its_clock_an_hour_ahead_and_leads_does_not_move_ledger_time() {
    let mut sim = Sim::scripted(3);
    assert!(sim.run_until(500, |s| s.leader().is_some()).unwrap());
    let first = sim.leader().unwrap();
    let accounts = sim.write(first);
    commit(&mut sim, accounts);
    let pending = sim.write_pending(first, 3);
    commit(&mut sim, pending);
    let created = sim.elapsed_nanos();

    // Another node restarts with its wall clock an hour ahead: its first reading anchors to
    // it, so its own rule cannot tell. It then leads.
    let wrong = (1..=3).find(|id| *id != first).unwrap();
    sim.jump_clock(wrong, 3600 * SECOND as i64);
    sim.crash(wrong);
    sim.run_steps(5).unwrap();
    sim.restart(wrong);
    sim.run_steps(20).unwrap();
    sim.transfer_leader(wrong);
    assert!(sim.run_until(500, |s| s.leader() == Some(wrong)).unwrap());
    writes_keep_it_pending(&mut sim, wrong, pending, created);
    assert_eq!(sim.leader(), Some(wrong), "the same leader all along");
    sim.converge().unwrap();
}
