//! A graceful stop's handover, the IO around `consensus::handover`'s decisions: once asked, the
//! node answers not ready, is not preferred in elections, and, if it leads, hands leadership to
//! a voter; the asker learns how it ended (one log line with the numbers).

use bulwark_consensus::handover::{HandedOver, Handover, Step};
use bulwark_consensus::replication::FollowerReplication;
use bulwark_consensus::NodeId;
use tokio::sync::oneshot;

use super::event_loop::monotonic_clock;
use super::ClusterLoop;

/// A handover under way and who waits for its end.
pub(super) struct Stopping {
    handover: Option<Handover>,
    replies: Vec<oneshot::Sender<HandedOver>>,
    started: std::time::Instant,
}

impl ClusterLoop {
    pub(super) fn hand_over_asked(&mut self, reply: oneshot::Sender<HandedOver>) {
        let stopping = self.stopping.get_or_insert_with(|| Stopping {
            handover: Some(Handover::new(monotonic_clock())),
            replies: Vec::new(),
            started: std::time::Instant::now(),
        });
        if stopping.handover.is_none() {
            // Asked again after the first one ended: nothing leads here to hand over any more,
            // unless this node was elected since, which a new handover settles.
            stopping.handover = Some(Handover::new(monotonic_clock()));
        }
        stopping.replies.push(reply);
        self.view.write().expect("cluster view lock").ready = false;
    }

    /// Whether this node is stopping (asked to hand over): not ready, not preferred in
    /// elections.
    pub(super) fn is_stopping(&self) -> bool {
        self.stopping.is_some()
    }

    /// This round's step of the handover, if one is under way.
    pub(super) fn hand_over(&mut self, followers: &[FollowerReplication]) {
        let Some(stopping) = &mut self.stopping else {
            return;
        };
        let Some(handover) = &mut stopping.handover else {
            return;
        };
        let conf = self.replica.raw().raft.prs().conf().to_conf_state();
        let voters: Vec<NodeId> = conf.voters.iter().map(|&id| NodeId(id)).collect();
        let leading = self.replica.is_leader();
        let leader = self.replica.leader();
        match handover.step(monotonic_clock(), leading, leader, followers, &voters) {
            Step::Wait => {}
            Step::Transfer(to) => {
                tracing::info!(
                    to = to.0,
                    term = self.replica.term().0,
                    "stopping: handing leadership to node {}",
                    to.0
                );
                self.replica.transfer_leader(to);
            }
            Step::Done(outcome) => {
                let took_ms = stopping.started.elapsed().as_millis() as u64;
                match outcome {
                    HandedOver::To(to) => tracing::info!(
                        to = to.0,
                        term = self.replica.term().0,
                        took_ms,
                        "stopping: node {} leads now",
                        to.0
                    ),
                    HandedOver::GaveUp => tracing::warn!(
                        took_ms,
                        "stopping: could not hand leadership over; the other members will elect a leader"
                    ),
                    HandedOver::NoSuccessor | HandedOver::NotLeading { .. } => {
                        tracing::info!(?outcome, "stopping: no leadership to hand over")
                    }
                }
                stopping.handover = None;
                for reply in stopping.replies.drain(..) {
                    let _ = reply.send(outcome);
                }
            }
        }
    }
}
