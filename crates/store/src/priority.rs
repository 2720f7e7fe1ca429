//! Background threads (checkpoints, snapshot exports) yield the CPU to the node loop and to
//! client requests: on a busy machine they are what may wait.

/// Lowers the calling thread's CPU priority to `nice` (Linux: `nice` is per thread, and raising
/// it needs no privilege); failing that, the thread runs as it is. A thread already at `nice` or
/// lower priority keeps its own: for root, setpriority would raise it.
pub fn lower_this_threads_priority(nice: i32) {
    if this_threads_nice().is_some_and(|own| own >= nice) {
        return;
    }
    // SAFETY: setpriority only reads its arguments; `who` 0 is the calling thread on Linux.
    let r = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, nice) };
    if r != 0 {
        tracing::debug!(error = %std::io::Error::last_os_error(), nice, "cannot lower this thread's priority");
    }
}

/// This thread's nice value, if getpriority answers.
pub fn this_threads_nice() -> Option<i32> {
    // SAFETY: clearing errno and calling getpriority, which only reads its arguments.
    unsafe {
        *libc::__errno_location() = 0;
        let nice = libc::getpriority(libc::PRIO_PROCESS, 0);
        (*libc::__errno_location() == 0).then_some(nice)
    }
}
