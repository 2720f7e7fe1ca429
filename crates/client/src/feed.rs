//! Following the change feed: page after page, waiting at the end for more.

use std::collections::VecDeque;
use std::time::Duration;

use crate::client::Client;
use crate::error::Error;
use crate::limits::MAX_CHANGES_WAIT;
use crate::pages::Change;

/// The change feed from a position on, one event at a time, for as long as the ledger runs:
/// each page asks from the last event seen, and a caught-up request waits on the node
/// ([`MAX_CHANGES_WAIT`]) instead of polling. An error leaves the position where it was, so
/// calling [`ChangeFeed::next`] again resumes without a gap or a repeat.
pub struct ChangeFeed {
    client: Client,
    after: u64,
    limit: Option<usize>,
    wait: Duration,
    buffered: VecDeque<Change>,
}

impl ChangeFeed {
    /// The next event; waits for one when caught up.
    pub async fn next(&mut self) -> Result<Change, Error> {
        loop {
            if let Some(change) = self.buffered.pop_front() {
                self.after = change.timestamp.0;
                return Ok(change);
            }
            let page = self
                .client
                .changes(self.after, self.limit, self.wait)
                .await?;
            self.buffered.extend(page.changes);
        }
    }

    /// At most `limit` events a page (1 to [`crate::limits::MAX_PAGE`]).
    pub fn with_limit(mut self, limit: usize) -> ChangeFeed {
        self.limit = Some(limit);
        self
    }

    /// The timestamp of the last event [`ChangeFeed::next`] returned (where a restarted
    /// consumer resumes: `Client::follow_changes(position)`).
    pub fn position(&self) -> u64 {
        self.after
    }
}

impl Client {
    /// Follows the change feed from after `after` (0: from the start).
    pub fn follow_changes(&self, after: u64) -> ChangeFeed {
        ChangeFeed {
            client: self.clone(),
            after,
            limit: None,
            // Within one request's timeout, or every caught-up wait would end as a timeout.
            wait: (self.inner.request_timeout() / 2).min(MAX_CHANGES_WAIT),
            buffered: VecDeque::new(),
        }
    }
}
