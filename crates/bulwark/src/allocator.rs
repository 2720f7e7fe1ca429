//! The process's allocator: mimalloc, told to keep freed memory for
//! [`bulwark_limits::ALLOCATOR_PURGE_DELAY`] before giving it back to the kernel.
//!
//! glibc's malloc took 11 % of a node's samples at one transfer per request, much of it in arena
//! locks between the HTTP workers that allocate a request and the loop that frees it. mimalloc's
//! own purge delay (1 s) made a node under load fault the same memory in again and again: see
//! the bound for the figures.

use std::ffi::c_long;

use bulwark_limits::ALLOCATOR_PURGE_DELAY;
use libmimalloc_sys::{mi_option_set, mi_option_t};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` in mimalloc v3's `mimalloc.h`, in milliseconds: the bindings name no
/// constant for it (the option after it, `mi_option_use_numa_nodes`, is their 16).
const MI_OPTION_PURGE_DELAY: mi_option_t = 15;

/// The environment variable an operator sets to choose the purge delay (in ms) instead.
const PURGE_DELAY_ENV: &str = "MIMALLOC_PURGE_DELAY";

/// Sets the purge delay, unless the operator chose one in the environment (mimalloc read it at
/// load). Called first thing in `main`.
pub fn configure() {
    if std::env::var_os(PURGE_DELAY_ENV).is_some() {
        return;
    }
    // SAFETY: mimalloc's options are plain integers it reads atomically; any value is valid
    // for this one (-1 never purges, 0 purges at once).
    unsafe { mi_option_set(MI_OPTION_PURGE_DELAY, purge_delay_wanted()) };
}

/// [`ALLOCATOR_PURGE_DELAY`] in mimalloc's unit, milliseconds.
fn purge_delay_wanted() -> c_long {
    c_long::try_from(ALLOCATOR_PURGE_DELAY.as_millis())
        .expect("the allocator's purge delay fits a C long of milliseconds")
}

#[cfg(test)]
mod tests {
    use super::*;
    use libmimalloc_sys::mi_option_get;

    /// The purge delay mimalloc uses now, in milliseconds.
    fn purge_delay_millis() -> c_long {
        // SAFETY: reading an option is always valid.
        unsafe { mi_option_get(MI_OPTION_PURGE_DELAY) }
    }

    #[test]
    fn configure_sets_mimallocs_purge_delay() {
        if std::env::var_os(PURGE_DELAY_ENV).is_some() {
            let chosen = purge_delay_millis();
            configure();
            assert_eq!(purge_delay_millis(), chosen, "the operator's choice stands");
            return;
        }
        // 1,000 ms is mimalloc's default purge delay and no other option's default: the option
        // number is the purge delay's.
        assert_eq!(purge_delay_millis(), 1000, "option {MI_OPTION_PURGE_DELAY}");
        configure();
        assert_eq!(purge_delay_millis(), purge_delay_wanted());
    }
}
