//! Bulwark's chaos crate is `bulwark chaos`: a Jepsen-style bank test of real `bulwark` processes.
//! It owns the **run** (cluster processes, the fault-injecting peer **proxy**, the **workload** of
//! bank clients, the **nemesis**), the **history** (the client's record of every operation, one
//! JSON object per line, plus the final state read from the healed cluster), the **checker** (one
//! verdict per property) and the HTML **report**.
//!
//! What it must never do:
//! - never pass a history it could not fully read: any malformed line, a completion without its invoke
//!   or a missing final state is an error naming the line, never a silently shorter history;
//! - never trust the cluster's own view over the client's record: what the client sent and was told is
//!   the reference, and the final state is only ever checked against it.

pub mod checker;
pub mod client;
pub mod cluster;
pub mod feed;
pub mod history;
pub mod nemesis;
pub mod payments;
pub mod process;
pub mod proxy;
pub mod report;
pub mod rng;
pub mod run;
pub mod workload;

pub use checker::{check, Report, Verdict};
pub use history::{
    read_history, write_history, Account, Balance, Change, ChangeKind, Error, FinalState, History,
    Kind, NemesisAction, Op, Phase, Record, Transfer,
};
