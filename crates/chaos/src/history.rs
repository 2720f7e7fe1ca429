//! The history file: one JSON object per line, each either an `"op"` record (an invoke or a
//! completion, Jepsen-style) or the single final `"state"` record.
//!
//! A completion (`ok`, `fail`, `info`) belongs to the latest open invoke of the same `process`.
//! Phases: `ok` = definite success of the request (events may still carry refusal results),
//! `fail` = definite refusal of the whole request, `info` = indefinite (timeout, connection lost).

use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::Path;

/// Errors of reading or writing a history.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("line {line}: malformed record: {message}")]
    Malformed { line: usize, message: String },
    #[error("line {line}: {message}")]
    Invalid { line: usize, message: String },
    #[error("history has no final \"state\" record")]
    MissingState,
}

/// What an operation does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    TransferBatch,
    ReadBalances,
    ReadHistory,
    Nemesis,
}

/// Jepsen's phases.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Invoke,
    Ok,
    Fail,
    Info,
}

/// A nemesis op opens (`start`) or closes (`stop`) a fault window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NemesisAction {
    Start,
    Stop,
}

/// A transfer as sent by the client, or as read from the final state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Transfer {
    pub id: u64,
    pub debit: u64,
    pub credit: u64,
    pub amount: u64,
    pub ledger: u32,
    /// Flag names: `linked`, `pending`, `post_pending_transfer`, `void_pending_transfer`,
    /// `balancing_debit`, `balancing_credit`, `closing_debit`, `closing_credit`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub flags: Vec<String>,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub pending_id: u64,
    /// Pending timeout in seconds (0 = none).
    #[serde(default, skip_serializing_if = "is_zero32")]
    pub timeout: u32,
    /// The cluster's timestamp (ns), as stored: known for a transfer read back from the cluster
    /// (the final state, a history read), 0 in what the client sent. Timestamps increase in the
    /// order the log applied the transfers, which places every present transfer in that order.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub timestamp: u64,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}
fn is_zero32(v: &u32) -> bool {
    *v == 0
}

impl Transfer {
    pub fn has_flag(&self, name: &str) -> bool {
        self.flags.iter().any(|f| f == name)
    }
    pub fn is_pending(&self) -> bool {
        self.has_flag("pending")
    }
    pub fn is_post(&self) -> bool {
        self.has_flag("post_pending_transfer")
    }
    pub fn is_void(&self) -> bool {
        self.has_flag("void_pending_transfer")
    }
    pub fn is_balancing(&self) -> bool {
        self.has_flag("balancing_debit") || self.has_flag("balancing_credit")
    }
    /// The most a balancing transfer sent as `self` may move (its amount; 0 is no cap).
    pub fn cap(&self) -> u64 {
        if self.amount == 0 {
            u64::MAX
        } else {
            self.amount
        }
    }
    /// Does a stored transfer match what was sent? For post/void transfers a zero debit, credit,
    /// ledger or amount in the sent record means "as the pending transfer" and matches anything.
    /// A balancing transfer's sent amount is a cap: it stores what it moved, at most that.
    pub fn matches_sent(&self, sent: &Transfer) -> bool {
        let wild = sent.is_post() || sent.is_void();
        let eq64 = |stored: u64, sent: u64| stored == sent || (wild && sent == 0);
        let amount_ok = if sent.is_balancing() {
            self.amount <= sent.cap()
        } else {
            eq64(self.amount, sent.amount)
        };
        let mut a = self.flags.clone();
        let mut b = sent.flags.clone();
        a.sort();
        b.sort();
        self.id == sent.id
            && eq64(self.debit, sent.debit)
            && eq64(self.credit, sent.credit)
            && amount_ok
            && (self.ledger == sent.ledger || (wild && sent.ledger == 0))
            && a == b
            && self.pending_id == sent.pending_id
    }
}

/// The balances of one account, as returned by a read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Balance {
    pub id: u64,
    pub debits_pending: u64,
    pub debits_posted: u64,
    pub credits_pending: u64,
    pub credits_posted: u64,
}

/// An account of the final state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Account {
    pub id: u64,
    pub ledger: u32,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub flags: Vec<String>,
    pub debits_pending: u64,
    pub debits_posted: u64,
    pub credits_pending: u64,
    pub credits_posted: u64,
}

impl Account {
    pub fn has_flag(&self, name: &str) -> bool {
        self.flags.iter().any(|f| f == name)
    }
}

/// One line of the history: an invoke or a completion.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Op {
    pub process: u64,
    pub kind: Kind,
    pub phase: Phase,
    pub time_ns: u64,
    /// Transfer batches: the transfers sent (on the invoke; a completion may repeat them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub transfers: Vec<Transfer>,
    /// Transfer batch completions: one result word per event (`ok`, `exists`, `exceeds_credits`, ...).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub results: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit_index: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied_index: Option<u64>,
    /// Balance reads: the balances returned per account. History reads of an account that keeps
    /// `history`: its balances right after each returned transfer, one per entry of `transfers`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub balances: Vec<Balance>,
    /// History reads: the account read, the timestamp the page starts after, and the page's limit.
    /// The completion's `transfers` are the transfers returned, as stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u64>,
    /// Nemesis ops: whether a fault window opens or closes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<NemesisAction>,
    /// Nemesis ops (or errors): a description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

impl Op {
    /// A bare op; fill the rest with struct update syntax.
    pub fn new(process: u64, kind: Kind, phase: Phase, time_ns: u64) -> Op {
        Op {
            process,
            kind,
            phase,
            time_ns,
            transfers: Vec::new(),
            results: Vec::new(),
            commit_index: None,
            applied_index: None,
            balances: Vec::new(),
            account: None,
            after: None,
            limit: None,
            action: None,
            description: None,
        }
    }
}

/// The final state read from the healed cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct FinalState {
    pub accounts: Vec<Account>,
    pub transfers: Vec<Transfer>,
    /// The change feed (`GET /v1/changes`) of the first node that gave it whole, every event
    /// from the start; `None` when no node gave one (the run reports that as `feed_identical`)
    /// or the history predates the feed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub changes: Option<Vec<Change>>,
}

/// What one event of the change feed did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    SinglePhase,
    TwoPhasePending,
    TwoPhasePosted,
    TwoPhaseVoided,
    TwoPhaseExpired,
}

impl ChangeKind {
    /// The kind of the event that creating `t` makes, by its flags (an expiry has no transfer
    /// of its own).
    pub fn of(t: &Transfer) -> ChangeKind {
        if t.is_pending() {
            ChangeKind::TwoPhasePending
        } else if t.is_post() {
            ChangeKind::TwoPhasePosted
        } else if t.is_void() {
            ChangeKind::TwoPhaseVoided
        } else {
            ChangeKind::SinglePhase
        }
    }

    /// Does the event end a pending transfer (post, void or expiry)?
    pub fn resolves(self) -> bool {
        matches!(
            self,
            ChangeKind::TwoPhasePosted | ChangeKind::TwoPhaseVoided | ChangeKind::TwoPhaseExpired
        )
    }
}

/// One event of the change feed: the transfer (for an expiry, the pending transfer that
/// expired), the event's own timestamp, and both accounts' balances right after it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    #[serde(rename = "type")]
    pub kind: ChangeKind,
    pub timestamp: u64,
    pub transfer: Transfer,
    pub debit_account: Balance,
    pub credit_account: Balance,
}

/// One line of the file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Record {
    /// The first line of a run's history: the machine's wall clock when the run's time 0 was,
    /// so that a transfer's timestamp can be set against the real time of its answer.
    Start {
        unix_ns: u64,
    },
    Op(Op),
    State(FinalState),
}

/// A whole history: the ops in file order and the final state.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct History {
    /// The machine's wall clock at the run's time 0, in ns since the Unix epoch (None in a
    /// history written before it was recorded).
    pub started_unix_ns: Option<u64>,
    pub ops: Vec<Op>,
    pub state: FinalState,
}

impl History {
    /// The JSON-lines text of this history (ops, then the state record).
    pub fn to_jsonl(&self) -> String {
        let mut out = String::new();
        if let Some(unix_ns) = self.started_unix_ns {
            out.push_str(&serde_json::to_string(&Record::Start { unix_ns }).expect("serializes"));
            out.push('\n');
        }
        for op in &self.ops {
            out.push_str(&serde_json::to_string(&Record::Op(op.clone())).expect("op serializes"));
            out.push('\n');
        }
        out.push_str(
            &serde_json::to_string(&Record::State(self.state.clone())).expect("state serializes"),
        );
        out.push('\n');
        out
    }

    /// Parses JSON-lines text; every error names its 1-based line.
    pub fn parse(text: &str) -> Result<History, Error> {
        let mut ops = Vec::new();
        let mut state = None;
        let mut started_unix_ns = None;
        let mut open: HashMap<u64, Kind> = HashMap::new();
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            if raw.trim().is_empty() {
                continue;
            }
            let record: Record = serde_json::from_str(raw).map_err(|e| Error::Malformed {
                line,
                message: e.to_string(),
            })?;
            if state.is_some() {
                return Err(Error::Invalid {
                    line,
                    message: "record after the final \"state\" record".into(),
                });
            }
            match record {
                Record::Start { unix_ns } if line == 1 => started_unix_ns = Some(unix_ns),
                Record::Start { .. } => {
                    return Err(Error::Invalid {
                        line,
                        message: "a \"start\" record is only ever the first line".into(),
                    })
                }
                Record::State(s) => state = Some(s),
                Record::Op(op) => {
                    if op.kind != Kind::Nemesis {
                        if op.phase == Phase::Invoke {
                            if open.insert(op.process, op.kind).is_some() {
                                return Err(Error::Invalid {
                                    line,
                                    message: format!(
                                        "process {} invokes while its previous op is still open",
                                        op.process
                                    ),
                                });
                            }
                        } else {
                            match open.remove(&op.process) {
                                Some(kind) if kind == op.kind => {}
                                Some(kind) => {
                                    return Err(Error::Invalid {
                                        line,
                                        message: format!(
                                            "process {} completes {:?} but invoked {:?}",
                                            op.process, op.kind, kind
                                        ),
                                    })
                                }
                                None => {
                                    return Err(Error::Invalid {
                                        line,
                                        message: format!(
                                            "process {} completes an op it never invoked",
                                            op.process
                                        ),
                                    })
                                }
                            }
                        }
                    }
                    ops.push(op);
                }
            }
        }
        Ok(History {
            started_unix_ns,
            ops,
            state: state.ok_or(Error::MissingState)?,
        })
    }
}

/// Reads a history file.
pub fn read_history(path: impl AsRef<Path>) -> Result<History, Error> {
    let path = path.as_ref();
    let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
        path: path.display().to_string(),
        source,
    })?;
    History::parse(&text)
}

/// Writes a history file.
pub fn write_history(path: impl AsRef<Path>, history: &History) -> Result<(), Error> {
    let path = path.as_ref();
    std::fs::write(path, history.to_jsonl()).map_err(|source| Error::Io {
        path: path.display().to_string(),
        source,
    })
}
