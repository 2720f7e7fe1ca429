//! What the nodes of a cluster say on `/v1/status`, and the questions asked of it: who leads,
//! do all agree, have they converged.

use std::future::Future;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::Value;

/// An HTTP client for `/v1/status`.
#[derive(Clone)]
pub struct StatusClient(reqwest::Client);

impl StatusClient {
    /// A client whose requests give up after `timeout`, sending `token` (status needs `read`).
    pub fn new(timeout: Duration, token: &str) -> StatusClient {
        let client = reqwest::Client::builder()
            .default_headers(crate::token::bearer_headers(token))
            .no_proxy()
            .tcp_nodelay(true)
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .timeout(timeout)
            .build()
            .expect("an HTTP client");
        StatusClient(client)
    }

    /// Waits up to `limit` until the node takes this client's token (`/v1/status` answers
    /// anything but 401 or 503): a new cluster's first admin token works once the log has
    /// applied it, a moment after the node first serves HTTP. False if it never did.
    pub async fn wait_authorized(&self, http: SocketAddr, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            let answer = self.0.get(format!("http://{http}/v1/status")).send().await;
            // 401: the token is not registered yet; 503: not loaded, or no leader yet.
            let waiting = [
                reqwest::StatusCode::UNAUTHORIZED,
                reqwest::StatusCode::SERVICE_UNAVAILABLE,
            ];
            if matches!(&answer, Ok(a) if !waiting.contains(&a.status())) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The node's `/v1/status`, or `None` if it does not answer it with 200 and JSON.
    pub async fn status(&self, http: SocketAddr) -> Option<Value> {
        let answer = self
            .0
            .get(format!("http://{http}/v1/status"))
            .send()
            .await
            .ok()?;
        if !answer.status().is_success() {
            return None;
        }
        answer.json().await.ok()
    }

    /// Every node's status, in the given order. A node is `(id, Some(http address))` to be asked,
    /// or `(id, None)` if it is expected but cannot answer (not running, paused).
    pub async fn view(&self, nodes: impl IntoIterator<Item = (u64, Option<SocketAddr>)>) -> View {
        let mut view = View::default();
        for (id, http) in nodes {
            let status = match http {
                Some(http) => self.status(http).await,
                None => None,
            };
            view.nodes.push((id, status));
        }
        view
    }
}

/// The statuses of the nodes expected to answer, by id (`None`: it did not).
#[derive(Clone, Debug, Default)]
pub struct View {
    pub nodes: Vec<(u64, Option<Value>)>,
}

fn number(status: &Value, field: &str) -> Option<u64> {
    status[field].as_u64()
}

/// The leader a status names (0 and null mean none).
fn leader_of(status: &Value) -> Option<u64> {
    number(status, "leader_id").filter(|&l| l != 0)
}

impl View {
    /// The statuses that came, by id.
    pub fn answered(&self) -> impl Iterator<Item = (u64, &Value)> {
        self.nodes
            .iter()
            .filter_map(|(id, s)| s.as_ref().map(|s| (*id, s)))
    }

    /// Every node answered, or the first that did not.
    fn all_answered(&self) -> Result<(), String> {
        match self.nodes.iter().find(|(_, s)| s.is_none()) {
            Some((id, _)) => Err(format!("node {id} did not answer")),
            None if self.nodes.is_empty() => Err("no nodes".into()),
            None => Ok(()),
        }
    }

    /// The node that says it leads in the highest term, with its status.
    pub fn leader_status(&self) -> Option<(u64, &Value)> {
        self.answered()
            .filter(|(_, s)| s["role"] == "leader")
            .max_by_key(|(_, s)| number(s, "term").unwrap_or(0))
    }

    /// The node that says it leads in the highest term, and that term.
    pub fn leader(&self) -> Option<(u64, u64)> {
        self.leader_status()
            .map(|(id, s)| (id, number(s, "term").unwrap_or(0)))
    }

    /// A leader every node agrees on: every node answers and names it, and it says it leads.
    pub fn agreed_leader(&self) -> Result<u64, String> {
        self.all_answered()?;
        let mut leader = None;
        for (id, s) in self.answered() {
            let named = leader_of(s).ok_or_else(|| format!("node {id} knows no leader"))?;
            if *leader.get_or_insert(named) != named {
                return Err("the nodes name different leaders".into());
            }
        }
        let leader = leader.ok_or("no nodes")?;
        match self.leader_status() {
            Some((id, _)) if id == leader => Ok(leader),
            _ => Err(format!("node {leader} is named leader but does not say so")),
        }
    }

    /// An agreed leader ([`View::agreed_leader`]) and applied indexes at most `slack` apart:
    /// the leader and the lowest applied index.
    pub fn in_sync(&self, slack: u64) -> Result<(u64, u64), String> {
        let leader = self.agreed_leader()?;
        let applied: Vec<u64> = self
            .answered()
            .map(|(_, s)| number(s, "applied_index").unwrap_or(0))
            .collect();
        let (lo, hi) = (applied.iter().min(), applied.iter().max());
        let (lo, hi) = (*lo.unwrap_or(&0), *hi.unwrap_or(&0));
        if hi - lo > slack {
            return Err(format!("applied indexes from {lo} to {hi}"));
        }
        Ok((leader, lo))
    }

    /// Every node answered and has applied exactly the leader's commit index (the cluster is
    /// quiet and converged): that index.
    pub fn converged(&self) -> Result<u64, String> {
        self.all_answered()?;
        let (leader, status) = self.leader_status().ok_or("no node says it leads")?;
        let commit = number(status, "commit_index")
            .ok_or_else(|| format!("leader {leader} reports no commit index"))?;
        match self
            .answered()
            .find(|(_, s)| number(s, "applied_index") != Some(commit))
        {
            Some((id, s)) => Err(format!(
                "node {id} applied {} of the leader's commit index {commit}",
                s["applied_index"]
            )),
            None => Ok(commit),
        }
    }
}

/// Asks `check` every `every` until it answers `Ok` or `limit` passes: its value, or the last
/// reason it gave.
pub async fn wait_for<T, F, Fut>(
    limit: Duration,
    every: Duration,
    mut check: F,
) -> Result<T, String>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + limit;
    loop {
        let last = match check().await {
            Ok(value) => return Ok(value),
            Err(why) => why,
        };
        if Instant::now() >= deadline {
            return Err(last);
        }
        tokio::time::sleep(every).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn st(id: u64, role: &str, leader: u64, applied: u64) -> (u64, Option<Value>) {
        let s = json!({
            "node_id": id, "role": role, "term": 2, "leader_id": leader,
            "commit_index": 105, "applied_index": applied,
        });
        (id, Some(s))
    }

    #[test]
    fn in_sync_wants_one_leader_and_close_indexes() {
        let view = |nodes| View { nodes };
        let good = view(vec![
            st(1, "follower", 2, 100),
            st(2, "leader", 2, 105),
            st(3, "follower", 2, 99),
        ]);
        assert_eq!(good.in_sync(20), Ok((2, 99)));
        assert!(good.in_sync(5).is_err());
        assert!(good.converged().is_err());
        let lagging = view(vec![
            st(1, "follower", 2, 10),
            st(2, "leader", 2, 105),
            st(3, "follower", 2, 99),
        ]);
        assert!(lagging.in_sync(20).is_err());
        let split = view(vec![
            st(1, "follower", 3, 100),
            st(2, "leader", 2, 100),
            st(3, "follower", 2, 100),
        ]);
        assert!(split.agreed_leader().is_err());
        let silent = view(vec![
            st(1, "follower", 2, 1),
            (2, None),
            st(3, "follower", 2, 1),
        ]);
        assert_eq!(silent.in_sync(20), Err("node 2 did not answer".into()));
        let no_leader = view(vec![st(1, "follower", 0, 1), st(2, "follower", 0, 1)]);
        assert_eq!(
            no_leader.agreed_leader(),
            Err("node 1 knows no leader".into())
        );
        let dead_leader = view(vec![st(1, "follower", 3, 1), st(2, "follower", 3, 1)]);
        assert!(dead_leader.agreed_leader().is_err());
    }

    #[test]
    fn converged_wants_every_node_at_the_leaders_commit() {
        let view = View {
            nodes: vec![
                st(1, "follower", 2, 105),
                st(2, "leader", 2, 105),
                st(3, "follower", 2, 105),
            ],
        };
        assert_eq!(view.converged(), Ok(105));
        assert_eq!(view.leader(), Some((2, 2)));
    }
}
