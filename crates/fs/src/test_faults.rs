//! Test-only faults, in one place: switches that make a node unsafe on purpose, so that the chaos
//! harness can show it catches the loss they cause (`bulwark chaos --unsafe-skip-fsync`), and a
//! wall clock a test can move (the chaos `clock` nemesis). They exist only in a build with the
//! `test-faults` feature, which `cargo test` turns on through the binary's dev-dependencies and
//! `cargo build` never does: in a production binary [`skipping`] is a constant `false` and
//! [`wall_clock_offset_ms`] a constant 0, and neither environment variable is ever read.

/// A durability step a test build may be told to skip.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Skip {
    /// The Raft log's fdatasyncs (`log-fdatasync`): the WAL's after an append, and the hard
    /// state's (term, vote, commit) after its write.
    LogFdatasync,
    /// Every directory fsync: after a segment create, a rename, a new directory (`dir-fsync`).
    DirFsync,
}

impl Skip {
    pub const ALL: [Skip; 2] = [Skip::LogFdatasync, Skip::DirFsync];

    /// The word [`SKIP_FSYNC_ENV`] names it by.
    pub fn name(self) -> &'static str {
        match self {
            Skip::LogFdatasync => "log-fdatasync",
            Skip::DirFsync => "dir-fsync",
        }
    }
}

/// The environment variable a test build reads once: a comma-separated list of [`Skip`] names.
pub const SKIP_FSYNC_ENV: &str = "BULWARK_TEST_UNSAFE_SKIP_FSYNC";

/// Whether this build has the switches at all.
pub const ENABLED: bool = cfg!(feature = "test-faults");

/// Whether the process was told to skip `step` (always false without the `test-faults` feature).
#[cfg(feature = "test-faults")]
pub fn skipping(step: Skip) -> bool {
    use std::sync::OnceLock;
    static CHOSEN: OnceLock<Vec<Skip>> = OnceLock::new();
    CHOSEN
        .get_or_init(|| {
            let text = std::env::var(SKIP_FSYNC_ENV).unwrap_or_default();
            let chosen = parse(&text)
                .unwrap_or_else(|unknown| panic!("{SKIP_FSYNC_ENV}: unknown step {unknown:?}"));
            if !chosen.is_empty() {
                tracing::warn!(?chosen, "UNSAFE test build: skipping durability steps");
            }
            chosen
        })
        .contains(&step)
}

/// Whether the process was told to skip `step` (always false without the `test-faults` feature).
#[cfg(not(feature = "test-faults"))]
#[inline(always)]
pub fn skipping(_step: Skip) -> bool {
    false
}

/// Parses a comma-separated list of [`Skip`] names; an unknown word is returned as the error.
pub fn parse(text: &str) -> Result<Vec<Skip>, String> {
    let mut out = Vec::new();
    for word in text.split(',').map(str::trim).filter(|w| !w.is_empty()) {
        let step = Skip::ALL
            .into_iter()
            .find(|s| s.name() == word)
            .ok_or_else(|| word.to_string())?;
        out.push(step);
    }
    Ok(out)
}

/// The environment variable naming a file whose content, a signed number of milliseconds, a test
/// build adds to its wall clock (the node's only reading of it, the proposer's clock). The chaos
/// harness rewrites the file to make the clock jump or drift while the node runs.
pub const CLOCK_OFFSET_FILE_ENV: &str = "BULWARK_TEST_CLOCK_OFFSET_FILE";

/// How often the offset file is read again at most: a clock read costs no file read in between.
#[cfg(feature = "test-faults")]
const CLOCK_OFFSET_REREAD: std::time::Duration = std::time::Duration::from_millis(50);

/// The offset a test put on the wall clock, in milliseconds (0 without the `test-faults` feature,
/// without [`CLOCK_OFFSET_FILE_ENV`], or while the file is missing or not a number).
#[cfg(feature = "test-faults")]
pub fn wall_clock_offset_ms() -> i64 {
    use std::sync::{Mutex, OnceLock};
    use std::time::Instant;
    static FILE: OnceLock<Option<std::path::PathBuf>> = OnceLock::new();
    static LAST: Mutex<Option<(Instant, i64)>> = Mutex::new(None);
    let Some(path) = FILE.get_or_init(|| std::env::var_os(CLOCK_OFFSET_FILE_ENV).map(Into::into))
    else {
        return 0;
    };
    let mut last = LAST.lock().unwrap_or_else(|e| e.into_inner());
    match *last {
        Some((at, offset)) if at.elapsed() < CLOCK_OFFSET_REREAD => offset,
        _ => {
            let offset = std::fs::read_to_string(path)
                .ok()
                .and_then(|t| t.trim().parse().ok())
                .unwrap_or(0);
            *last = Some((Instant::now(), offset));
            offset
        }
    }
}

/// The offset a test put on the wall clock: always 0 in a build without the `test-faults` feature.
#[cfg(not(feature = "test-faults"))]
#[inline(always)]
pub fn wall_clock_offset_ms() -> i64 {
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_back_and_unknown_words_are_refused() {
        assert_eq!(
            parse("log-fdatasync, dir-fsync"),
            Ok(vec![Skip::LogFdatasync, Skip::DirFsync])
        );
        assert_eq!(parse(""), Ok(vec![]));
        assert_eq!(parse("log-fdatasync,fsync"), Err("fsync".to_string()));
    }
}
