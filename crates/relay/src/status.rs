//! What the relay is doing, for `/v1/status`, `/metrics` and tests.

#[derive(Clone, Debug, Default)]
pub struct RelayStatus {
    /// This node leads and relays (at `term`).
    pub relaying: bool,
    pub term: u64,
    /// Payments held in memory (being delivered, waiting for a retry or a settlement).
    pub held: usize,
    pub in_flight: usize,
    /// Since the node started: deliveries made, and what they came to.
    pub deliveries: u64,
    pub confirmed: u64,
    pub refused: u64,
    pub failures: u64,
    /// Payments given up after the retry limit.
    pub exhausted: u64,
    /// Settlements applied (or found already applied).
    pub settled: u64,
    /// Terms this node's relay stopped in because a processor had seen a higher one.
    pub deposed: u64,
    pub breakers: Vec<BreakerStatus>,
}

#[derive(Clone, Debug)]
pub struct BreakerStatus {
    pub processor: String,
    pub state: &'static str,
    pub opened: u64,
    pub closed: u64,
}
