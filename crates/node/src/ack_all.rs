//! `?ack=all` waiters: writes already committed and applied whose clients also want every
//! in-sync member to hold them (Kafka's acks=all). Sans-IO: the loop tells it what the leader
//! knows; it says which waiters are settled and how.

use bulwark_consensus::LogIndex;

use crate::RequestError;

/// Waiters by the log index they wait for, each with a reply token `R`.
pub(crate) struct AckAllWaiters<R> {
    waiting: Vec<(LogIndex, R)>,
}

impl<R> Default for AckAllWaiters<R> {
    fn default() -> Self {
        AckAllWaiters {
            waiting: Vec::new(),
        }
    }
}

impl<R> AckAllWaiters<R> {
    pub(crate) fn push(&mut self, index: LogIndex, reply: R) {
        self.waiting.push((index, reply));
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.waiting.len()
    }

    /// Settles what can be: with `leading`, every waiter whose index every in-sync member holds
    /// (`in_sync_floor`, the least match index among them) succeeds; without it, nothing more
    /// can be confirmed, and every waiter learns that its write, which did commit, is
    /// unconfirmed — never a refusal, which would tell a client that a durable write failed.
    pub(crate) fn settle(
        &mut self,
        leading: bool,
        in_sync_floor: LogIndex,
    ) -> Vec<(R, Result<(), RequestError>)> {
        let mut settled = Vec::new();
        let mut still = Vec::new();
        for (index, reply) in self.waiting.drain(..) {
            if !leading {
                settled.push((reply, Err(RequestError::AckAllUnconfirmed { index })));
            } else if in_sync_floor >= index {
                settled.push((reply, Ok(())));
            } else {
                still.push((index, reply));
            }
        }
        self.waiting = still;
        settled
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waiters_settle_when_the_in_sync_floor_reaches_them() {
        let mut w = AckAllWaiters::default();
        w.push(LogIndex(5), "a");
        w.push(LogIndex(9), "b");
        let settled = w.settle(true, LogIndex(7));
        assert_eq!(settled.len(), 1);
        assert_eq!(settled[0].0, "a");
        assert!(settled[0].1.is_ok());
        assert_eq!(w.len(), 1);
        assert!(
            w.settle(true, LogIndex(8)).is_empty(),
            "index 9 is not held by all yet"
        );
        // Held by every in-sync member exactly at its index: settled.
        let settled = w.settle(true, LogIndex(9));
        assert_eq!(settled.len(), 1);
        assert_eq!(settled[0].0, "b");
        assert!(settled[0].1.is_ok());
        assert_eq!(w.len(), 0);
    }

    #[test]
    fn a_step_down_leaves_committed_writes_unconfirmed_not_refused() {
        let mut w = AckAllWaiters::default();
        w.push(LogIndex(5), "a");
        let settled = w.settle(false, LogIndex(0));
        assert_eq!(settled.len(), 1);
        match &settled[0].1 {
            Err(RequestError::AckAllUnconfirmed { index: LogIndex(5) }) => {}
            other => panic!("a committed write must not be refused: {other:?}"),
        }
        assert_eq!(w.len(), 0);
    }
}
