//! The one local process harness: real `bulwark start` processes on this machine, used by
//! `bulwark cluster local`, `bulwark bench`, `bulwark bench-failover`, `bulwark chaos` and the
//! integration tests of the binary.
//!
//! - [`process`]: one node process on a data directory, across restarts: start (args, extra
//!   environment, a log file), wait for `/health/live` (again on "cannot listen"), kill -9,
//!   SIGTERM with a wait, SIGSTOP/SIGCONT, wait for exit;
//! - [`ports`]: free ports, sets of them held at once, and ranges of consecutive ones;
//! - [`status`]: what the nodes' `/v1/status` say: who leads, do all agree, have they converged;
//! - [`cluster`]: members (`--member` values), and a local cluster of N of them;
//! - [`s3`]: a real S3-protocol server (`s3s-fs`) for the tests of the S3 target.
//!
//! It knows nothing of faults beyond processes and signals: the chaos harness builds its proxy,
//! loopback IPs and per-node tmpfs on top of it.

pub mod cluster;
pub mod ports;
pub mod process;
pub mod s3;
pub mod status;
pub mod token;

pub use cluster::{free_members, member_args, members, ports_from, LocalCluster, Member};
pub use ports::{free_addrs, free_port, free_port_range};
pub use process::{strip_ansi, wait_exit, Logs, NodeProcess, StartError};
pub use status::{wait_for, StatusClient, View};
pub use token::{admin_token, bearer_headers};
