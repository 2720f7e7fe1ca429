//! The scripted five-node split, step by step (nodes A..E are 1..5), on the checked simulation
//! (`bulwark_consensus::sim`): every step still checks one leader per term, log matching, that no
//! acknowledged write is lost and that reads are linearizable.
//!
//! A leads in term 4 and commits writes, then dies; B and C campaign just as the cluster splits
//! {B,C} | {D,E}. Neither half is a majority: no leader may emerge and no write may be
//! acknowledged, however long the split lasts. Healed, the cluster elects exactly one leader
//! that still holds A's writes, and A, restarted, follows it and catches up.

use bulwark_consensus::sim::{Sim, Violation};
use raft::StateRole;

const A: u64 = 1;
const B: u64 = 2;
const C: u64 = 3;
const D: u64 = 4;
const E: u64 = 5;
const ALL: [u64; 5] = [A, B, C, D, E];
const SURVIVORS: [u64; 4] = [B, C, D, E];

fn terms(sim: &Sim) -> Vec<(u64, Option<u64>)> {
    ALL.iter().map(|&id| (id, sim.term(id))).collect()
}

/// Campaigns A and runs until it leads; false if it did not within a few steps.
fn elect_a(sim: &mut Sim) -> Result<bool, Violation> {
    sim.campaign(A);
    sim.run_until(20, |s| s.leader() == Some(A))
}

/// Where a client's write goes during the split: the node that leads now if one does, else the
/// live node that led last, else the survivor in the highest term (the likeliest next leader).
/// A node that leads admits the write and would acknowledge it once committed, so "nothing is
/// acknowledged" fails on its own if a minority ever elects and commits; a write to a plain
/// follower is refused at admission and proves nothing.
fn write_target(sim: &Sim) -> u64 {
    if let Some(leader) = sim.leader() {
        return leader;
    }
    let up = |id: u64| sim.role(id).is_some();
    sim.leader_history()
        .iter()
        .rev()
        .map(|&(_, id)| id)
        .find(|&id| up(id))
        .or_else(|| {
            SURVIVORS
                .iter()
                .copied()
                .filter(|&id| up(id))
                .max_by_key(|&id| sim.term(id))
        })
        .expect("a survivor is up")
}

fn scenario() -> Result<(), Violation> {
    let mut sim = Sim::scripted(5);

    // 1. A leads in term 4. A new cluster starts in term 1 (its bootstrap configuration is a
    //    snapshot of that term, as the node's), so the first election is term 2. A wins term 2 by campaigning before any timer fires; then the whole
    //    cluster crashes and restarts twice (a crash loses nothing synced), and each time A
    //    campaigns before any other node's election timer runs out.
    assert!(
        elect_a(&mut sim)?,
        "A did not win term 2: {:?}",
        terms(&sim)
    );
    assert_eq!(sim.term(A), Some(2));
    for term in [3, 4] {
        for id in ALL {
            sim.crash(id);
        }
        // Down for a moment: what was in flight (A's heartbeats, which would put the others
        // back in A's lease and make them ignore its campaign) is lost.
        sim.run_steps(2)?;
        for id in ALL {
            sim.restart(id);
        }
        assert!(elect_a(&mut sim)?, "A did not win term {term}");
        assert_eq!(sim.term(A), Some(term));
    }
    assert_eq!(sim.leader(), Some(A));
    assert_eq!(sim.leaders(), vec![(A, 4)]);
    let mut committed = vec![sim.write(A)];
    assert!(sim.run_until(20, |s| s.acknowledged(committed[0]))?);
    for _ in 0..3 {
        committed.push(sim.write(A));
    }
    assert!(sim.run_until(20, |s| committed.iter().all(|&t| s.acknowledged(t)))?);
    println!(
        "1. leaders so far (term, node): {:?}; terms {:?}; A applied {:?}",
        sim.leader_history(),
        terms(&sim),
        sim.applied_index(A)
    );

    // 2. and 3. A dies; B and C campaign, and before their messages leave (they go out in the
    //    next step) the cluster splits {B,C} | {D,E}. Neither half holds a majority of five.
    sim.crash(A);
    sim.campaign(B);
    sim.campaign(C);
    sim.partition(&[&[B, C], &[D, E]]);
    let mut refused = Vec::new();
    for step in 0..400 {
        if step % 10 == 0 {
            refused.push(sim.write(write_target(&sim)));
        }
        sim.run_steps(1)?;
        assert_eq!(
            sim.leaders(),
            vec![],
            "a leader emerged during the split at step {step}; terms {:?}",
            terms(&sim)
        );
    }
    assert!(
        sim.leader_history().iter().all(|&(term, _)| term <= 4),
        "a leader was elected above term 4 during the split: {:?}",
        sim.leader_history()
    );
    assert!(
        refused.iter().all(|&t| !sim.acknowledged(t)),
        "a write was acknowledged during the split"
    );
    println!(
        "3. after 400 steps split: leaders {:?}, terms {:?}, roles {:?}",
        sim.leaders(),
        terms(&sim),
        SURVIVORS.map(|id| sim.role(id))
    );

    // 4. Healed: exactly one leader, in the highest term; it holds A's writes and commits again.
    sim.heal_network();
    assert!(
        sim.run_until(200, |s| s.leader().is_some())?,
        "no leader after healing: terms {:?}",
        terms(&sim)
    );
    let leaders = sim.leaders();
    assert_eq!(leaders.len(), 1, "more than one leader: {leaders:?}");
    let (leader, term) = leaders[0];
    assert!(term > 4, "the new leader's term {term} is not above A's");
    let highest = SURVIVORS.iter().filter_map(|&id| sim.term(id)).max();
    assert_eq!(Some(term), highest);
    let after = sim.write(leader);
    assert!(sim.run_until(20, |s| s.acknowledged(after))?);
    assert!(
        sim.run_until(50, |s| SURVIVORS
            .iter()
            .all(|&id| committed.iter().all(|&t| s.has_applied(id, t))))?,
        "a write acknowledged by A is missing from a live node"
    );
    assert!(refused.iter().all(|&t| !sim.acknowledged(t)));
    println!(
        "4. healed: leader {leader} in term {term}; leaders so far {:?}; terms {:?}",
        sim.leader_history(),
        terms(&sim)
    );

    // 5. A returns: it follows the current leader in the current term and catches up, without
    //    disturbing it.
    sim.restart(A);
    assert!(
        sim.run_until(200, |s| s.role(A) == Some(StateRole::Follower)
            && s.leader_known_to(A) == Some(leader)
            && s.term(A) == Some(term)
            && s.applied_index(A) == s.applied_index(leader))?,
        "A did not rejoin: role {:?}, term {:?}, applied {:?} of {:?}",
        sim.role(A),
        sim.term(A),
        sim.applied_index(A),
        sim.applied_index(leader)
    );
    assert!(committed.iter().all(|&t| sim.has_applied(A, t)));
    assert!(sim.has_applied(A, after));
    assert_eq!(sim.leaders(), vec![(leader, term)]);
    assert_eq!(sim.leader_history().last(), Some(&(term, leader)));
    println!(
        "5. A rejoined: follower of {:?} in term {:?}, applied {:?} (leader {:?})",
        sim.leader_known_to(A),
        sim.term(A),
        sim.applied_index(A),
        sim.applied_index(leader)
    );
    sim.converge()?;
    println!("{:?}", sim.report());
    Ok(())
}

#[test]
fn a_split_without_a_majority_elects_nobody_and_the_old_leader_rejoins_as_a_follower() {
    if let Err(violation) = scenario() {
        panic!("{violation}");
    }
}
