//! The deterministic cluster simulation over many seeds (see `bulwark_consensus::sim`).
//!
//! `BULWARK_SIM_SEEDS` sets how many seeds each cluster size runs (default 1,000 each of 1, 3
//! and 5 nodes); a failure prints its seed and the command that replays it. Each size prints
//! what its seeds did and how many seeds ran per second.

use std::time::Instant;

use bulwark_consensus::sim::{run_config, run_seed, Defect, SimConfig, SimReport, Violation};

fn seeds() -> u64 {
    std::env::var("BULWARK_SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1000)
}

fn run_many(nodes: u64, first_seed: u64) -> SimReport {
    let mut total = SimReport::default();
    let started = Instant::now();
    for seed in first_seed..first_seed + seeds() {
        match run_seed(seed, nodes) {
            Ok(r) => add(&mut total, &r),
            Err(violation) => panic!("{violation}"),
        }
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{nodes} nodes: {} seeds in {secs:.1} s, {:.0} seeds/s",
        seeds(),
        seeds() as f64 / secs
    );
    total
}

fn add(total: &mut SimReport, r: &SimReport) {
    total.acknowledged_writes += r.acknowledged_writes;
    total.dropped_writes += r.dropped_writes;
    total.refused_writes += r.refused_writes;
    total.reads_served += r.reads_served;
    total.crashes += r.crashes;
    total.partitions += r.partitions;
    total.leaders_elected += r.leaders_elected;
    total.messages_dropped += r.messages_dropped;
    total.messages_delivered += r.messages_delivered;
    total.checkpoints += r.checkpoints;
    total.snapshots_installed += r.snapshots_installed;
    total.membership_changes += r.membership_changes;
    total.clock_jumps += r.clock_jumps;
    total.grouped_writes += r.grouped_writes;
    total.ready_crashes += r.ready_crashes;
    total.torn_writes += r.torn_writes;
    total.install_crashes += r.install_crashes;
    total.installs_finished_at_start += r.installs_finished_at_start;
    total.logs_moved_to_state += r.logs_moved_to_state;
    total.majority_crashes += r.majority_crashes;
    total.whole_cluster_crashes += r.whole_cluster_crashes;
    total.messages_across_restart += r.messages_across_restart;
    total.newer_checkpoints_installed += r.newer_checkpoints_installed;
    total.disk_full_episodes += r.disk_full_episodes;
    total.stalled_readies += r.stalled_readies;
    total.backlogs += r.backlogs;
    total.leader_backlogs += r.leader_backlogs;
    total.leader_demotions += r.leader_demotions;
    total.leaders_demoted += r.leaders_demoted;
    total.learners_added += r.learners_added;
    total.promotions += r.promotions;
    total.removals += r.removals;
    total.leader_removals += r.leader_removals;
    total.membership_refused += r.membership_refused;
    total.new_nodes_caught_up += r.new_nodes_caught_up;
    total.compaction_crashes += r.compaction_crashes;
    total.unsynced_entries_lost += r.unsynced_entries_lost;
    total.in_sync_checked += r.in_sync_checked;
    total.ack_all_confirmed += r.ack_all_confirmed;
    total.ack_all_unconfirmed += r.ack_all_unconfirmed;
}

fn assert_faults_happened(nodes: u64, total: &SimReport) {
    let n = seeds();
    println!("{total:?}");
    // The runs must really have been under faults and load, or passing proves nothing.
    assert!(total.crashes >= n, "too few crashes: {total:?}");
    assert!(
        total.leaders_elected >= 2 * n,
        "too few elections: {total:?}"
    );
    assert!(
        total.acknowledged_writes >= 10 * n,
        "too few writes: {total:?}"
    );
    assert!(total.reads_served >= n, "too few reads: {total:?}");
    assert!(total.checkpoints >= n, "too few checkpoints: {total:?}");
    assert!(total.clock_jumps >= n, "too few clock jumps: {total:?}");
    assert!(
        total.grouped_writes >= n,
        "too few writes proposed in groups: {total:?}"
    );
    // Power losses inside a Ready's handling (a torn sync among them), of the whole cluster at
    // once, and a full disk.
    assert!(
        total.ready_crashes >= n / 2,
        "too few crashes mid-Ready: {total:?}"
    );
    assert!(total.torn_writes > 0, "no torn write: {total:?}");
    assert!(
        total.whole_cluster_crashes >= n / 10,
        "too few whole-cluster crashes: {total:?}"
    );
    assert!(
        total.disk_full_episodes >= n,
        "too few full disks: {total:?}"
    );
    assert!(
        total.stalled_readies >= n,
        "too few Readies held by a full disk: {total:?}"
    );
    assert!(
        total.leader_backlogs >= n / 10,
        "too few leaders holding writes for a backlogged state: {total:?}"
    );
    // Operator membership changes through the node's checks: new nodes added as learners that
    // caught up from nothing, promotions, refusals; power lost inside log compactions; the
    // in-sync rule checked.
    assert!(
        total.learners_added >= n / 10 && total.new_nodes_caught_up >= n / 10,
        "too few new nodes added and caught up: {total:?}"
    );
    assert!(total.promotions >= n / 20, "too few promotions: {total:?}");
    assert!(
        total.membership_refused >= n / 10,
        "too few refused membership requests: {total:?}"
    );
    assert!(
        total.compaction_crashes >= n / 10,
        "too few crashes inside a compaction: {total:?}"
    );
    assert!(
        total.in_sync_checked >= n,
        "too few in-sync reports checked: {total:?}"
    );
    assert!(
        total.ack_all_confirmed >= n,
        "too few ack=all writes confirmed: {total:?}"
    );
    // Operator membership changes answered as done, and crashes that really lost entries
    // appended and not yet synced (each checked to keep none of them).
    assert!(
        total.membership_changes >= n / 2,
        "too few membership changes answered: {total:?}"
    );
    assert!(
        total.unsynced_entries_lost > 0,
        "no crash lost an unsynced entry: {total:?}"
    );
    if nodes == 1 {
        return;
    }
    // Proposals replaced by another leader's entries, answered `Dropped` (a sole voter's are
    // never replaced, so only clusters).
    assert!(
        total.dropped_writes >= n / 50,
        "too few writes dropped: {total:?}"
    );
    assert!(
        total.removals >= n / 20 && total.leader_removals >= n / 50,
        "too few removals (of the leader): {total:?}"
    );
    assert!(total.partitions >= n, "too few partitions: {total:?}");
    assert!(
        total.messages_dropped > 0,
        "no message was dropped: {total:?}"
    );
    assert!(
        total.snapshots_installed > 0,
        "no follower caught up by snapshot: {total:?}"
    );
    assert!(
        total.majority_crashes >= n / 2,
        "too few crashes of a majority: {total:?}"
    );
    // Snapshot installs interrupted at every step, finished by the next start; checkpoints
    // newer than the snapshot; messages queued across a restart.
    assert!(
        total.install_crashes >= n / 10,
        "too few crashes inside a snapshot install: {total:?}"
    );
    assert!(
        total.installs_finished_at_start > 0,
        "no start finished an interrupted install: {total:?}"
    );
    assert!(
        total.logs_moved_to_state > 0,
        "no start found its state ahead of its log: {total:?}"
    );
    assert!(
        total.newer_checkpoints_installed >= n / 20,
        "too few newer checkpoints installed: {total:?}"
    );
    assert!(
        total.messages_across_restart >= n,
        "too few messages delivered across a restart: {total:?}"
    );
    assert!(
        total.ack_all_unconfirmed >= n / 100,
        "too few ack=all writes left unconfirmed by a leader that stopped leading: {total:?}"
    );
    // Leaders that demoted themselves and stopped leading.
    assert!(
        total.leaders_demoted >= n / 20,
        "too few leaders demoted: {total:?}"
    );
}

#[test]
fn one_node_clusters_keep_every_promise_under_faults() {
    let total = run_many(1, 2_000_000);
    assert_faults_happened(1, &total);
}

#[test]
fn three_node_clusters_keep_every_promise_under_faults() {
    let total = run_many(3, 0);
    assert_faults_happened(3, &total);
}

#[test]
fn five_node_clusters_keep_every_promise_under_faults() {
    let total = run_many(5, 1_000_000);
    assert_faults_happened(5, &total);
}

/// The seeds on which the simulation first found a follower that could never start again: it
/// installed a checkpoint newer than the snapshot's index (state at 33, log reset to 30) and lost
/// power before its log reached 33. The start now moves the log to the state.
#[test]
fn a_crash_after_installing_a_newer_checkpoint_restarts() {
    for (seed, nodes) in [(80, 3), (1_000_002, 5)] {
        let mut config = SimConfig::new(seed, nodes);
        config.crash_ahead_of_log = true;
        if let Err(violation) = run_config(config) {
            panic!("{violation}");
        }
    }
}

/// Replays one seed: `BULWARK_SIM_SEED=<seed> BULWARK_SIM_NODES=<3|5>`; without them, seed 0.
#[test]
fn replay() {
    let seed = std::env::var("BULWARK_SIM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let nodes = std::env::var("BULWARK_SIM_NODES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    match run_seed(seed, nodes) {
        Ok(report) => println!("seed {seed}, {nodes} nodes: {report:?}"),
        Err(violation) => panic!("{violation}"),
    }
}

/// The same seed gives the same run, step for step.
#[test]
fn a_seed_replays_exactly() {
    let a = format!("{:?}", run_seed(42, 5));
    let b = format!("{:?}", run_seed(42, 5));
    assert_eq!(a, b);
}

/// The first violation among `seeds` of `nodes`-node clusters run with `defect` planted.
fn first_violation(nodes: u64, seeds: std::ops::Range<u64>, defect: Defect) -> Option<Violation> {
    seeds.into_iter().find_map(|seed| {
        let mut config = SimConfig::new(seed, nodes);
        config.defect = Some(defect);
        run_config(config).err()
    })
}

/// Mutation test: a storage whose power loss keeps entries that were never synced (so the
/// crashes would test nothing) is caught at the crash.
#[test]
fn the_checks_catch_a_crash_that_keeps_unsynced_entries() {
    let violation = first_violation(5, 0..200, Defect::CrashKeepsUnsynced)
        .expect("no seed caught a crash that keeps unsynced entries");
    assert!(
        violation.what.contains("but kept entries up to"),
        "{violation}"
    );
}

/// Mutation test: nodes that acknowledge entries before their fsync finished (a power loss
/// takes back their last sync) lose writes, and the checks of what was applied and
/// acknowledged see it as a client would.
#[test]
fn the_checks_catch_acknowledging_before_the_fsync() {
    let violation = first_violation(1, 0..20, Defect::AckBeforeSync)
        .expect("no seed caught a write acknowledged before its fsync");
    assert!(
        violation.what.contains("applied something else")
            || violation.what.contains("was acknowledged at index"),
        "{violation}"
    );
    // In a cluster a follower's lost entries may instead trip raft-rs's own assertion (a commit
    // index past its log), which is a violation too.
    assert!(first_violation(3, 0..20, Defect::AckBeforeSync).is_some());
}

/// Mutation test: linearizable reads served from the local state without a read index (below
/// the commit index on a lagging node) break the read check.
#[test]
fn the_checks_catch_a_read_served_below_the_commit_index() {
    for nodes in [1, 3, 5] {
        let violation = first_violation(nodes, 0..20, Defect::ReadWithoutReadIndex)
            .expect("no seed caught a read served below the commit index");
        assert!(
            violation.what.contains("served at applied index"),
            "{violation}"
        );
    }
}
