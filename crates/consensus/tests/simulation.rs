//! The deterministic cluster simulation over many seeds (see `bulwark_consensus::sim`).
//!
//! `BULWARK_SIM_SEEDS` sets how many seeds each cluster size runs (default 1,000 each, 2,000 in
//! all); a failure prints its seed and the command that replays it.

use bulwark_consensus::sim::{run_seed, SimReport};

fn seeds() -> u64 {
    std::env::var("BULWARK_SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1000)
}

fn run_many(nodes: u64, first_seed: u64) -> SimReport {
    let mut total = SimReport::default();
    for seed in first_seed..first_seed + seeds() {
        match run_seed(seed, nodes) {
            Ok(r) => {
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
            }
            Err(violation) => panic!("{violation}"),
        }
    }
    total
}

fn assert_faults_happened(total: &SimReport) {
    let n = seeds();
    println!("{total:?}");
    // The runs must really have been under faults and load, or passing proves nothing.
    assert!(total.crashes >= n, "too few crashes: {total:?}");
    assert!(total.partitions >= n, "too few partitions: {total:?}");
    assert!(
        total.messages_dropped > 0,
        "no message was dropped: {total:?}"
    );
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
    assert!(
        total.snapshots_installed > 0,
        "no follower caught up by snapshot: {total:?}"
    );
    assert!(total.clock_jumps >= n, "too few clock jumps: {total:?}");
    assert!(
        total.grouped_writes >= n,
        "too few writes proposed in groups: {total:?}"
    );
}

#[test]
fn three_node_clusters_keep_every_promise_under_faults() {
    let total = run_many(3, 0);
    assert_faults_happened(&total);
}

#[test]
fn five_node_clusters_keep_every_promise_under_faults() {
    let total = run_many(5, 1_000_000);
    assert_faults_happened(&total);
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
