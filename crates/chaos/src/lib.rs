//! Bulwark's chaos crate owns the Jepsen-style bank test's **history** (the client's record of every
//! operation, one JSON object per line, plus the final state read from the healed cluster) and its
//! **checker** (one verdict per property).
//!
//! What it must never do:
//! - never pass a history it could not fully read: any malformed line, a completion without its invoke
//!   or a missing final state is an error naming the line, never a silently shorter history;
//! - never trust the cluster's own view over the client's record: what the client sent and was told is
//!   the reference, and the final state is only ever checked against it.

pub mod checker;
pub mod history;
pub mod proxy;
pub mod report;

pub use checker::{check, Report, Verdict};
pub use history::{
    read_history, write_history, Account, Balance, Error, FinalState, History, Kind, NemesisAction,
    Op, Phase, Record, Transfer,
};
