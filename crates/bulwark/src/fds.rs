//! File descriptors: the soft limit raised to the hard one at start, and the share of it client
//! connections may take, so that the log, the store, snapshots and peers always have theirs.

use bulwark_limits::{
    FD_RESERVE, MAX_CLIENT_CONNECTIONS, MAX_CLIENT_REJECTIONS, MIN_CLIENT_CONNECTIONS,
};

/// Why a node does not start with the descriptors it has.
#[derive(Debug, thiserror::Error)]
pub enum FdError {
    #[error("cannot read the file-descriptor limit (RLIMIT_NOFILE): {0}")]
    Read(std::io::Error),
    #[error(
        "the file-descriptor limit is {limit}: a node needs at least {needed} ({FD_RESERVE} for \
         its log, store, snapshots and peers, {MAX_CLIENT_REJECTIONS} to refuse connections \
         past the limit, {MIN_CLIENT_CONNECTIONS} for clients); raise it (`ulimit -n`, systemd's \
         LimitNOFILE)"
    )]
    TooLow { limit: u64, needed: usize },
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit (the default soft limit, often 1024, is a
/// relic of `select`; the node uses epoll) and returns the soft limit now in effect. A raise the
/// system refuses keeps the old limit: the caps below then follow it.
pub fn raise_limit() -> Result<u64, FdError> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(FdError::Read(std::io::Error::last_os_error()));
    }
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: setrlimit reads the struct we own.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            limit.rlim_cur = limit.rlim_max;
        } else {
            let e = std::io::Error::last_os_error();
            tracing::warn!(soft = limit.rlim_cur, hard = limit.rlim_max, error = %e, "cannot raise the file-descriptor limit");
        }
    }
    Ok(limit.rlim_cur)
}

/// Client connections that fit under `fd_limit` with the reserve and the refusals beside them.
pub fn client_connections(fd_limit: u64) -> Result<usize, FdError> {
    let limit = usize::try_from(fd_limit).unwrap_or(usize::MAX);
    let needed = FD_RESERVE + MAX_CLIENT_REJECTIONS + MIN_CLIENT_CONNECTIONS;
    if limit < needed {
        return Err(FdError::TooLow {
            limit: fd_limit,
            needed,
        });
    }
    Ok((limit - FD_RESERVE - MAX_CLIENT_REJECTIONS).min(MAX_CLIENT_CONNECTIONS))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_and_the_reserve_fit_under_the_limit() {
        let needed = FD_RESERVE + MAX_CLIENT_REJECTIONS + MIN_CLIENT_CONNECTIONS;
        assert!(client_connections(needed as u64 - 1).is_err());
        assert_eq!(
            client_connections(needed as u64).unwrap(),
            MIN_CLIENT_CONNECTIONS
        );
        for limit in [needed as u64, 1024, 2000, 1 << 20, u64::MAX] {
            let n = client_connections(limit).unwrap();
            assert!(n <= MAX_CLIENT_CONNECTIONS);
            assert!((n + FD_RESERVE + MAX_CLIENT_REJECTIONS) as u64 <= limit);
        }
        assert_eq!(client_connections(1 << 20).unwrap(), MAX_CLIENT_CONNECTIONS);
    }
}
