//! A member's address: an IP and port, or a DNS name and port resolved at every connect.
//!
//! In Kubernetes a StatefulSet pod keeps its DNS name (`bulwark-0.bulwark.<ns>.svc`) but gets a
//! new IP at every restart, and compose services are reached by name: an address book holding
//! the name, resolved afresh each time a connection is dialed, follows the member wherever it
//! comes back. The text form is the one `SocketAddr` prints for an IP (so every address book
//! and membership entry written before names were allowed reads the same), `host:port` for a
//! name.

use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

/// An IP address and port, or a DNS name and port.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum HostPort {
    Ip(SocketAddr),
    Name { host: String, port: u16 },
}

/// Text that is neither `IP:PORT` nor `NAME:PORT`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not an address like 10.0.0.1:7170 or bulwark-0.bulwark:7170")]
pub struct HostPortError(pub String);

impl HostPort {
    pub fn port(&self) -> u16 {
        match self {
            HostPort::Ip(addr) => addr.port(),
            HostPort::Name { port, .. } => *port,
        }
    }

    /// The IP, when the address is one (no lookup).
    pub fn ip(&self) -> Option<IpAddr> {
        match self {
            HostPort::Ip(addr) => Some(addr.ip()),
            HostPort::Name { .. } => None,
        }
    }

    /// The socket address when it is an IP address (no lookup).
    pub fn socket_addr(&self) -> Option<SocketAddr> {
        match self {
            HostPort::Ip(addr) => Some(*addr),
            HostPort::Name { .. } => None,
        }
    }

    /// The addresses to dial now: the IP itself, or what the name resolves to at this moment,
    /// those of `family`'s address family first (a node dials from the IP it listens on).
    pub async fn resolve(&self, family: Option<IpAddr>) -> io::Result<Vec<SocketAddr>> {
        let mut addrs: Vec<SocketAddr> = match self {
            HostPort::Ip(addr) => return Ok(vec![*addr]),
            HostPort::Name { host, port } => tokio::net::lookup_host((host.as_str(), *port))
                .await
                .map_err(|e| io::Error::new(e.kind(), format!("resolve {self}: {e}")))?
                .collect(),
        };
        if addrs.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("resolve {self}: no address"),
            ));
        }
        if let Some(source) = family {
            addrs.sort_by_key(|a| a.is_ipv4() != source.is_ipv4());
        }
        Ok(addrs)
    }
}

impl From<SocketAddr> for HostPort {
    fn from(addr: SocketAddr) -> HostPort {
        HostPort::Ip(addr)
    }
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostPort::Ip(addr) => addr.fmt(f),
            HostPort::Name { host, port } => write!(f, "{host}:{port}"),
        }
    }
}

impl FromStr for HostPort {
    type Err = HostPortError;

    fn from_str(text: &str) -> Result<HostPort, HostPortError> {
        if let Ok(addr) = text.parse::<SocketAddr>() {
            return Ok(HostPort::Ip(addr));
        }
        let err = || HostPortError(text.to_string());
        let (host, port) = text.rsplit_once(':').ok_or_else(err)?;
        let port: u16 = port.parse().map_err(|_| err())?;
        if !is_dns_name(host) {
            return Err(err());
        }
        Ok(HostPort::Name {
            host: host.to_ascii_lowercase(),
            port,
        })
    }
}

/// A DNS host name (RFC 1123): dot-separated labels of letters, digits and inner hyphens, at
/// most 253 characters, a trailing dot allowed; a last label of digits only is refused, so a
/// mistyped IP (`10.0.0:7170`) is not taken for a name.
fn is_dns_name(host: &str) -> bool {
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.is_empty() || host.len() > 253 {
        return false;
    }
    let label_ok = |l: &str| {
        (1..=63).contains(&l.len())
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    let last_numeric = host
        .rsplit('.')
        .next()
        .is_some_and(|l| l.bytes().all(|b| b.is_ascii_digit()));
    host.split('.').all(label_ok) && !last_numeric
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ips_read_and_print_as_socket_addresses() {
        for text in ["127.0.0.1:7170", "[::1]:7070", "0.0.0.0:1"] {
            let addr: HostPort = text.parse().unwrap();
            assert_eq!(addr, HostPort::Ip(text.parse().unwrap()));
            assert_eq!(addr.to_string(), text);
        }
    }

    #[test]
    fn names_read_and_print_as_host_and_port() {
        let addr: HostPort = "Bulwark-0.bulwark.prod.svc.cluster.local:7170"
            .parse()
            .unwrap();
        assert_eq!(
            addr,
            HostPort::Name {
                host: "bulwark-0.bulwark.prod.svc.cluster.local".into(),
                port: 7170
            }
        );
        assert_eq!(
            addr.to_string(),
            "bulwark-0.bulwark.prod.svc.cluster.local:7170"
        );
        assert_eq!(addr.port(), 7170);
        assert_eq!(addr.ip(), None);
        assert!("node1:7070".parse::<HostPort>().is_ok());
    }

    #[test]
    fn refuses_what_is_neither() {
        for text in [
            "node1",
            "node1:",
            "node1:70000",
            ":7070",
            "10.0.0:7170",
            "-bad.host:1",
            "a_b:1",
            "a..b:1",
            "::1:7070",
            "http://a:1",
        ] {
            assert!(text.parse::<HostPort>().is_err(), "{text} was accepted");
        }
    }

    #[tokio::test]
    async fn a_name_resolves_at_each_call() {
        let name: HostPort = "localhost:7170".parse().unwrap();
        let addrs = name.resolve(None).await.unwrap();
        assert!(addrs
            .iter()
            .all(|a| a.ip().is_loopback() && a.port() == 7170));
        let ip: HostPort = "10.1.2.3:9".parse().unwrap();
        assert_eq!(
            ip.resolve(None).await.unwrap(),
            vec!["10.1.2.3:9".parse().unwrap()]
        );
        let unknown: HostPort = "no-such-host.invalid:1".parse().unwrap();
        assert!(unknown.resolve(None).await.is_err());
    }
}
