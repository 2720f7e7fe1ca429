//! Named crash points for tests of real processes: with `BULWARK_CRASH_AT=<name>` in its
//! environment, a node dies at that point as a `kill -9` or a power cut would leave it (no
//! unwinding, no flush), so that a test can stop it between two durable steps deterministically
//! instead of hoping a signal lands there. Unset (always, in production) a point costs one load.

use std::sync::OnceLock;

/// The environment variable that names the point to crash at.
pub const CRASH_AT_ENV: &str = "BULWARK_CRASH_AT";

/// Dies here if the environment names this point.
pub fn crash_point(name: &str) {
    static CHOSEN: OnceLock<Option<String>> = OnceLock::new();
    let chosen = CHOSEN.get_or_init(|| std::env::var(CRASH_AT_ENV).ok());
    if chosen.as_deref() == Some(name) {
        eprintln!("crash point {name} reached ({CRASH_AT_ENV}): dying at once");
        std::process::abort();
    }
}
