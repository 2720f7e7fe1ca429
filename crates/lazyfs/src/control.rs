//! The control file, `/.lazyfs-control` in the mount: how a process other than the one that
//! mounted the filesystem drives it. Each write is one or more commands, one a line:
//!
//! - `cut`: a power cut (everything not durable is lost);
//! - `torn <seed>`: a power cut that keeps a random page-granular prefix of each file's unsynced
//!   writes, drawn from `seed`;
//! - `fsync-delay-ms <n>`: every later fsync first sleeps `n` ms (0: off);
//! - `sync`: everything becomes durable now.
//!
//! A write with an unknown command fails with EINVAL and runs none of them. Reading the file gives
//! the counters, one `name value` a line.

use std::time::Duration;

use fuser::Errno;

use crate::state::Shared;
use crate::Stats;

/// One command of the control file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Cut,
    Torn(u64),
    FsyncDelay(Duration),
    Sync,
}

/// The commands in `text`, one a line (blank lines ignored), or the first line that is none.
pub fn parse(text: &str) -> Result<Vec<Command>, String> {
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .map(|line| {
            let words: Vec<&str> = line.split_whitespace().collect();
            match words.as_slice() {
                ["cut"] => Ok(Command::Cut),
                ["sync"] => Ok(Command::Sync),
                ["torn", seed] => seed.parse().map(Command::Torn).map_err(|_| line.to_owned()),
                ["fsync-delay-ms", ms] => ms
                    .parse()
                    .map(|ms| Command::FsyncDelay(Duration::from_millis(ms)))
                    .map_err(|_| line.to_owned()),
                _ => Err(line.to_owned()),
            }
        })
        .collect()
}

pub fn run(shared: &Shared, command: Command) -> Result<(), Errno> {
    match command {
        Command::Cut => {
            shared.power_cut(None);
        }
        Command::Torn(seed) => {
            shared.power_cut(Some(seed));
        }
        Command::FsyncDelay(delay) => shared.set_fsync_delay(delay),
        Command::Sync => shared.sync_all()?,
    }
    Ok(())
}

/// What a read of the control file answers.
pub fn status(stats: &Stats) -> String {
    format!(
        "fsyncs {}\ndir_fsyncs {}\ncuts {}\npending_bytes {}\npending_files {}\n\
         pending_dir_changes {}\nwrites_refused_for_memory {}\nfsync_delay_ms {}\n",
        stats.fsyncs,
        stats.dir_fsyncs,
        stats.cuts,
        stats.pending_bytes,
        stats.pending_files,
        stats.pending_dir_changes,
        stats.writes_refused_for_memory,
        stats.fsync_delay.as_millis(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_parse_and_bad_ones_are_named() {
        assert_eq!(
            parse("cut\n\n torn 42 \nfsync-delay-ms 250\nsync\n"),
            Ok(vec![
                Command::Cut,
                Command::Torn(42),
                Command::FsyncDelay(Duration::from_millis(250)),
                Command::Sync
            ])
        );
        assert_eq!(parse("cut\ntorn x"), Err("torn x".to_owned()));
        assert_eq!(parse("fsync-delay-ms"), Err("fsync-delay-ms".to_owned()));
        assert_eq!(parse("reboot"), Err("reboot".to_owned()));
    }
}
