//! The outbox relay: on the leader only, delivers each outbound payment (`bulwark_ledger::outbox`)
//! to its processor's HTTP endpoint and settles it with the answer.
//!
//! - **Fenced by the term.** Every delivery carries the leader's Raft term; the processor
//!   protocol (docs/processor-protocol.md) refuses a term below one it has seen, and a relay
//!   that meets such a refusal stops until its node's leadership changes. A deposed leader can
//!   neither deliver (once its successor has) nor settle (its proposals never commit).
//! - **Idempotent.** The payment's id is the idempotency key of every delivery, by every leader,
//!   for every reservation; settlements name the pending transfer they settle, so a late or
//!   repeated one changes nothing.
//! - **Retries** with exponential backoff and full jitter, a per-request timeout and a limit,
//!   after which the payment is voided and dead-lettered (`Settlement::Exhausted`).
//! - **A circuit breaker per processor**: while open, payments wait without using up retries.
//! - **A bulkhead**: its own thread and runtime, at most `max_in_flight` deliveries, at most
//!   `RELAY_QUEUE` payments in memory and `RELAY_SETTLES_IN_FLIGHT` settle batches in the
//!   node's write path, so a stuck processor costs client requests a bounded share.
//!
//! Layout: `config` (routes and settings), `breaker`, `backoff` (pure, unit-tested),
//! `deliver` (one HTTP delivery), `term` (one term's work), `status`.

pub mod backoff;
pub mod breaker;
pub mod config;
mod deliver;
pub mod status;
mod term;

use std::sync::{Arc, Mutex};

use bulwark_node::{Answer, NodeHandle, Query};

pub use config::RelayConfig;
pub use status::RelayStatus;

/// The running relay; dropping it does not stop it (stop the node, or call [`Relay::stop`]).
pub struct Relay {
    status: Arc<Mutex<RelayStatus>>,
    stop: tokio::sync::watch::Sender<bool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Relay {
    /// Starts the relay of the node behind `handle` on a thread and runtime of its own.
    pub fn start(handle: NodeHandle, config: RelayConfig) -> std::io::Result<Relay> {
        let status = Arc::new(Mutex::new(RelayStatus::default()));
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let shared = status.clone();
        let config = Arc::new(config);
        let thread = std::thread::Builder::new()
            .name("outbox-relay".into())
            .spawn(move || runtime.block_on(run(handle, config, shared, stopped)))?;
        Ok(Relay {
            status,
            stop,
            thread: Some(thread),
        })
    }

    pub fn status(&self) -> RelayStatus {
        self.status.lock().expect("relay status lock").clone()
    }

    /// A handle to read the status from elsewhere (the API).
    pub fn shared_status(&self) -> Arc<Mutex<RelayStatus>> {
        self.status.clone()
    }

    pub fn stop(mut self) {
        let _ = self.stop.send(true);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Follows this node's leadership: one term's work while it leads, nothing otherwise.
async fn run(
    handle: NodeHandle,
    config: Arc<RelayConfig>,
    status: Arc<Mutex<RelayStatus>>,
    mut stopped: tokio::sync::watch::Receiver<bool>,
) {
    let mut leadership = handle.watch_leadership();
    loop {
        let now = *leadership.borrow_and_update();
        status.lock().expect("relay status lock").relaying = now.leading;
        if now.leading {
            let Some(cluster) = cluster_id(&handle).await else {
                return;
            };
            let work = term::Term::new(
                handle.clone(),
                config.clone(),
                status.clone(),
                (now.term, cluster),
            );
            tokio::select! {
                end = work.run() => {
                    if !ended(&status, now.term, end) {
                        return;
                    }
                }
                changed = leadership.changed() => if changed.is_err() { return },
                _ = stopped.changed() => return,
            }
            continue_when_changed(&mut leadership, &mut stopped, now).await;
        } else {
            tokio::select! {
                changed = leadership.changed() => if changed.is_err() { return },
                _ = stopped.changed() => return,
            }
        }
    }
}

/// Logs why a term's work ended; `false` if the node is gone.
fn ended(status: &Mutex<RelayStatus>, term: u64, end: term::TermEnd) -> bool {
    match end {
        term::TermEnd::Deposed { highest_term } => {
            status.lock().expect("relay status lock").deposed += 1;
            tracing::warn!(
                term,
                highest_term,
                "a processor has seen a later leader's term: this node's relay stops until its \
                 leadership changes"
            );
            true
        }
        term::TermEnd::NodeGone => false,
    }
}

/// Waits until the leadership is no longer `was` (a term's work that ended early must not
/// start again in the same term).
async fn continue_when_changed(
    leadership: &mut tokio::sync::watch::Receiver<bulwark_node::Leadership>,
    stopped: &mut tokio::sync::watch::Receiver<bool>,
    was: bulwark_node::Leadership,
) {
    while *leadership.borrow_and_update() == was {
        tokio::select! {
            changed = leadership.changed() => if changed.is_err() { return },
            _ = stopped.changed() => return,
        }
    }
}

async fn cluster_id(handle: &NodeHandle) -> Option<u64> {
    loop {
        match handle.read_stale(Query::Status).await {
            Ok(outcome) => {
                if let Answer::Status(s) = outcome.answer {
                    return Some(s.cluster.map_or(0, |c| c.cluster_id));
                }
            }
            Err(bulwark_node::RequestError::Stopped) => return None,
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(50)).await,
        }
    }
}
