//! `bulwark-lazyfs BACKING MOUNTPOINT`: mounts the lazy filesystem by hand, in the foreground,
//! until SIGINT or SIGTERM (or `umount MOUNTPOINT`); it is driven through
//! `MOUNTPOINT/.lazyfs-control` (see `docs/lazyfs.md`). Unmounting makes everything durable.

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    let [backing, mountpoint] = args.as_slice() else {
        eprintln!("usage: bulwark-lazyfs BACKING MOUNTPOINT");
        return ExitCode::from(2);
    };
    // Blocked before any thread starts, so that only the wait below receives them.
    let signals = block_stop_signals();
    let fs = match bulwark_lazyfs::LazyFs::mount(backing, mountpoint) {
        Ok(fs) => fs,
        Err(e) => {
            eprintln!(
                "bulwark-lazyfs: mounting {} on {}: {e}",
                backing.display(),
                mountpoint.display()
            );
            return ExitCode::FAILURE;
        }
    };
    eprintln!(
        "bulwark-lazyfs: {} mounted on {}; control file {}; SIGINT or SIGTERM unmounts",
        backing.display(),
        fs.mountpoint().display(),
        fs.control_file().display()
    );
    let mut signal = 0;
    // SAFETY: sigwait on a signal set built by block_stop_signals.
    unsafe { libc::sigwait(&signals, &mut signal) };
    match fs.unmount() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bulwark-lazyfs: unmounting: {e} (detached; it goes once unused)");
            ExitCode::FAILURE
        }
    }
}

fn block_stop_signals() -> libc::sigset_t {
    // SAFETY: sigset operations on a local set, then masking this (still only) thread's signals.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    }
}
