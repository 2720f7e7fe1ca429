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
    // Writes through the leader for the next two seconds: each batch's timestamp would expire
    // the transfer if ledger time had followed the jump.
    while sim.elapsed_nanos() < created + 2 * SECOND {
        let token = sim.write(leader);
        commit(&mut sim, token);
        assert_eq!(
            sim.pending_status(leader, pending),
            Some(PendingStatus::Pending),
            "expired {} ms after it was created",
            (sim.elapsed_nanos() - created) / 1_000_000
        );
    }
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
