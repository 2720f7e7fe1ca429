//! Checkpoints asked for from outside the loop (`bulwark backup create`): each waits for a
//! checkpoint that covers what was applied when it asked. Bounded: past
//! `MAX_CHECKPOINT_WAITERS` a request is refused as overloaded.

use bulwark_consensus::LogIndex;
use tokio::sync::oneshot;

use super::ClusterLoop;
use crate::RequestError;

use bulwark_limits::MAX_CHECKPOINT_WAITERS;

impl ClusterLoop {
    pub(super) fn checkpoint_asked(
        &mut self,
        reply: oneshot::Sender<Result<LogIndex, RequestError>>,
    ) {
        if self.checkpoint_waiters.len() >= MAX_CHECKPOINT_WAITERS {
            let _ = reply.send(Err(RequestError::Overloaded {
                what: "checkpoint requests",
            }));
            return;
        }
        let store = self.replica.state();
        let applied = LogIndex(store.applied_index());
        if store.checkpointed_index() >= applied.0 && !store.is_checkpointing() {
            let _ = reply.send(Ok(LogIndex(store.checkpointed_index())));
            return;
        }
        self.checkpoint_waiters.push((applied, reply));
        if !self.replica.is_stalled() {
            self.replica.state_mut().start_checkpoint();
        }
    }

    /// A checkpoint at `index` is durable: answers the waiters it covers, and starts the next
    /// checkpoint for the others.
    pub(super) fn checkpoint_done(&mut self, index: LogIndex) {
        let waiting = std::mem::take(&mut self.checkpoint_waiters);
        for (wanted, reply) in waiting {
            if wanted <= index {
                let _ = reply.send(Ok(index));
            } else if !reply.is_closed() {
                self.checkpoint_waiters.push((wanted, reply));
            }
        }
        if !self.checkpoint_waiters.is_empty() && !self.replica.is_stalled() {
            self.replica.state_mut().start_checkpoint();
        }
    }
}
