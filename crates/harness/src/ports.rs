//! Free TCP ports on this machine.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use std::sync::atomic::{AtomicU64, Ordering};

/// A port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// `count` distinct free addresses on `ip` (all bound at once, then released, so that no port is
/// picked twice).
pub fn free_addrs(ip: IpAddr, count: usize) -> std::io::Result<Vec<SocketAddr>> {
    let listeners = (0..count)
        .map(|_| TcpListener::bind((ip, 0)))
        .collect::<Result<Vec<_>, _>>()?;
    listeners.iter().map(TcpListener::local_addr).collect()
}

/// `count` consecutive ports on 127.0.0.1, below the kernel's ephemeral range (so that no
/// outgoing connection borrows one between a node's kill and its restart), each free a moment
/// ago. The start is drawn at random, so that callers running in parallel (threads or
/// processes) do not collide.
pub fn free_port_range(count: u16) -> std::io::Result<u16> {
    static CALLS: AtomicU64 = AtomicU64::new(0);
    for _attempt in 0..1000 {
        // A randomly keyed hash of a counter: a fresh random number each call.
        let mut hasher = RandomState::new().build_hasher();
        hasher.write_u64(CALLS.fetch_add(1, Ordering::Relaxed));
        let span = 32_000 - 12_000 - u64::from(count);
        let base = (12_000 + hasher.finish() % span) as u16;
        let localhost = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let all_free = (base..base + count).all(|p| TcpListener::bind((localhost, p)).is_ok());
        if all_free {
            return Ok(base);
        }
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::AddrInUse,
        format!("no {count} consecutive free ports found"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_addrs_are_distinct_and_ranges_are_free() {
        let addrs = free_addrs(IpAddr::V4(Ipv4Addr::LOCALHOST), 8).expect("free addrs");
        let mut ports: Vec<u16> = addrs.iter().map(SocketAddr::port).collect();
        ports.sort_unstable();
        ports.dedup();
        assert_eq!(ports.len(), 8);
        let base = free_port_range(6).expect("a range");
        assert!((12_000..32_000 - 6).contains(&base));
        assert!(free_port().expect("a port") > 0);
    }
}
