//! One peer's outbound side: its bounded queue, its counters, and the task that owns its connection.

use std::collections::VecDeque;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bulwark_limits::KEEP_WRITE_BUFFER;
use bulwark_tls::PeerTls;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::Notify;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;
use tracing::{debug, info, warn};

use crate::frame::{encode_frame_into, Hello};
use crate::{HostPort, NodeId, PeerStats, TransportOptions};

/// Locks a mutex whose data stays consistent even if a holder panicked (plain counters and a queue).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Shared between the transport (which pushes frames and reads stats) and the peer's task.
pub(crate) struct Peer {
    pub(crate) id: NodeId,
    pub(crate) addr: HostPort,
    state: Mutex<PeerState>,
    wake: Notify,
}

#[derive(Default)]
struct PeerState {
    queue: VecDeque<Vec<u8>>,
    /// Payload bytes in `queue`.
    queued_bytes: usize,
    /// Frames (and their payload bytes) taken by the task and not yet written or lost.
    inflight_frames: usize,
    inflight_bytes: usize,
    connected: bool,
    frames_sent: u64,
    bytes_sent: u64,
    dropped: u64,
    lost: u64,
    connections: u64,
    connect_failures: u64,
    last_error: Option<String>,
}

impl Peer {
    pub(crate) fn new(id: NodeId, addr: HostPort) -> Peer {
        Peer {
            id,
            addr,
            state: Mutex::new(PeerState::default()),
            wake: Notify::new(),
        }
    }

    /// Queues a frame unless that would exceed a bound; never waits beyond a short lock.
    pub(crate) fn enqueue(&self, payload: Vec<u8>, opts: &TransportOptions) {
        let mut st = lock(&self.state);
        let frames = st.queue.len() + st.inflight_frames;
        let bytes = st.queued_bytes + st.inflight_bytes;
        if payload.len() > opts.max_frame_bytes {
            st.dropped += 1;
            drop(st);
            warn!(
                peer = self.id.0,
                len = payload.len(),
                max = opts.max_frame_bytes,
                "dropping oversize frame"
            );
            return;
        }
        if frames >= opts.queue_frames || bytes + payload.len() > opts.queue_bytes {
            st.dropped += 1;
            return;
        }
        st.queued_bytes += payload.len();
        st.queue.push_back(payload);
        drop(st);
        self.wake.notify_one();
    }

    pub(crate) fn stats(&self) -> PeerStats {
        let st = lock(&self.state);
        PeerStats {
            peer: self.id,
            addr: self.addr.clone(),
            connected: st.connected,
            frames_sent: st.frames_sent,
            bytes_sent: st.bytes_sent,
            dropped: st.dropped,
            lost: st.lost,
            reconnects: st.connections.saturating_sub(1),
            connect_failures: st.connect_failures,
            queue_len: st.queue.len() + st.inflight_frames,
            queue_bytes: st.queued_bytes + st.inflight_bytes,
            last_error: st.last_error.clone(),
        }
    }

    fn has_queued(&self) -> bool {
        !lock(&self.state).queue.is_empty()
    }

    async fn wait_for_frames(&self) {
        // `notify_one` stores a permit when nobody waits, so a frame pushed between the check and the
        // wait still wakes us.
        while !self.has_queued() {
            self.wake.notified().await;
        }
    }

    /// Moves every queued frame out (they stay counted as in flight) so it can be encoded outside the lock.
    fn take_batch(&self) -> VecDeque<Vec<u8>> {
        let mut st = lock(&self.state);
        let batch = std::mem::take(&mut st.queue);
        st.inflight_frames += batch.len();
        st.inflight_bytes += st.queued_bytes;
        st.queued_bytes = 0;
        batch
    }

    fn finish_batch(&self, frames: usize, bytes: usize, written: bool) {
        let mut st = lock(&self.state);
        assert!(
            st.inflight_frames >= frames && st.inflight_bytes >= bytes,
            "in-flight accounting underflow"
        );
        st.inflight_frames -= frames;
        st.inflight_bytes -= bytes;
        if written {
            st.frames_sent += frames as u64;
            st.bytes_sent += bytes as u64;
        } else {
            st.lost += frames as u64;
        }
    }

    fn set_connected(&self) {
        let mut st = lock(&self.state);
        st.connected = true;
        st.connections += 1;
    }

    /// Records a failure; returns whether this is the first failure since the last success (worth a warning).
    fn record_failure(&self, error: String, dial: bool) -> bool {
        let mut st = lock(&self.state);
        let was_connected = std::mem::replace(&mut st.connected, false);
        if dial {
            st.connect_failures += 1;
        }
        let first = was_connected || st.last_error.is_none();
        st.last_error = Some(error);
        first
    }
}

/// Owns the connection to one peer for as long as the peer is configured; ends only by being aborted.
pub(crate) async fn run_peer(
    peer: Arc<Peer>,
    me: NodeId,
    cluster_id: u64,
    advertised: SocketAddr,
    tls: PeerTls,
    opts: Arc<TransportOptions>,
) {
    let hello = Hello {
        cluster_id,
        from: me,
        addr: advertised,
    }
    .encode_frame();
    let mut rng = Jitter::new(peer.id.0);
    // Consecutive failures; 0 means dial right away.
    let mut failures: u32 = 0;
    let mut buf: Vec<u8> = Vec::new();
    loop {
        peer.wait_for_frames().await;
        if failures > 0 {
            tokio::time::sleep(rng.backoff(failures, opts.backoff_min, opts.backoff_max)).await;
        }
        let stream = match connect(&peer, &tls, &opts).await {
            Ok(s) => s,
            Err(e) => {
                failures = failures.saturating_add(1);
                let msg = format!("connect to {}: {e}", peer.addr);
                if peer.record_failure(msg.clone(), true) {
                    warn!(peer = peer.id.0, addr = %peer.addr, "{msg}; retrying with backoff");
                } else {
                    debug!(peer = peer.id.0, addr = %peer.addr, failures, "{msg}");
                }
                continue;
            }
        };
        let (mut reader, mut writer) = tokio::io::split(stream);
        peer.set_connected();
        info!(peer = peer.id.0, addr = %peer.addr, "connected to peer");
        let connected_at = Instant::now();
        buf.clear();
        buf.extend_from_slice(&hello);
        let mut probe = [0u8; 64];
        let error: io::Error = loop {
            let batch = peer.take_batch();
            if !batch.is_empty() || !buf.is_empty() {
                let frames = batch.len();
                let mut bytes = 0;
                for payload in &batch {
                    bytes += payload.len();
                    encode_frame_into(&mut buf, payload);
                }
                drop(batch);
                let result = writer.write_all(&buf).await;
                peer.finish_batch(frames, bytes, result.is_ok());
                if buf.capacity() > KEEP_WRITE_BUFFER {
                    buf = Vec::new();
                } else {
                    buf.clear();
                }
                match result {
                    Ok(()) => continue,
                    Err(e) => break e,
                }
            }
            // Idle: wait for frames, and notice at once when the peer closes (the acceptor writes
            // nothing after the handshake, so any read result means the connection is over).
            tokio::select! {
                () = peer.wake.notified() => {}
                r = reader.read(&mut probe) => break match r {
                    Ok(0) => io::Error::new(io::ErrorKind::UnexpectedEof, "peer closed the connection"),
                    Ok(_) => io::Error::new(io::ErrorKind::InvalidData, "peer wrote on an outbound connection"),
                    Err(e) => e,
                },
            }
        };
        // A connection that lasted is followed by a short backoff; one that died at once keeps growing it,
        // so a peer that refuses us (say, another cluster) is not redialed in a hot loop.
        failures = if connected_at.elapsed() >= opts.backoff_max {
            1
        } else {
            failures.saturating_add(1)
        };
        let msg = format!("connection to {}: {error}", peer.addr);
        peer.record_failure(msg.clone(), false);
        warn!(peer = peer.id.0, addr = %peer.addr, "{msg}; reconnecting");
    }
}

/// Dials `peer` and completes a TLS handshake in which it proves to be that node of our cluster
/// (and we prove who we are), all within the connect timeout.
async fn connect(
    peer: &Peer,
    tls: &PeerTls,
    opts: &TransportOptions,
) -> io::Result<TlsStream<TcpStream>> {
    let tcp = dial(&peer.addr, opts.source_ip, opts.connect_timeout).await?;
    let handshake = TlsConnector::from(tls.client.clone()).connect(tls.server_name(peer.id), tcp);
    match tokio::time::timeout(opts.connect_timeout, handshake).await {
        Ok(Ok(stream)) => Ok(stream),
        Ok(Err(e)) => Err(io::Error::new(e.kind(), format!("TLS handshake: {e}"))),
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("TLS handshake timed out after {:?}", opts.connect_timeout),
        )),
    }
}

/// Dials `addr`, from `source` (any port) when it is of the same address family: a node's
/// connections come from the IP it listens on, so a peer or a proxy can tell which node dialed.
/// A name is resolved here, at every dial, so a member that comes back at a new IP (a restarted
/// pod) is found there; its addresses are tried in turn, all within `timeout`.
pub(crate) async fn dial(
    addr: &HostPort,
    source: Option<IpAddr>,
    timeout: Duration,
) -> io::Result<TcpStream> {
    let connect = async {
        let mut last = None;
        for target in addr.resolve(source).await? {
            match dial_one(target, source).await {
                Ok(stream) => return Ok(stream),
                Err(e) => last = Some(e),
            }
        }
        Err(last.expect("resolve returns at least one address"))
    };
    let stream = tokio::time::timeout(timeout, connect).await.map_err(|_| {
        io::Error::new(
            io::ErrorKind::TimedOut,
            format!("timed out after {timeout:?}"),
        )
    })??;
    stream.set_nodelay(true)?;
    Ok(stream)
}

async fn dial_one(addr: SocketAddr, source: Option<IpAddr>) -> io::Result<TcpStream> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    if let Some(ip) = source.filter(|ip| ip.is_ipv4() == addr.is_ipv4()) {
        socket.bind(SocketAddr::new(ip, 0))?;
    }
    socket.connect(addr).await
}

/// xorshift64* for backoff jitter, seeded from the clock, the pid and a per-process counter. Not for
/// anything that needs real randomness.
struct Jitter(u64);

static SEED_COUNTER: AtomicU64 = AtomicU64::new(0);

impl Jitter {
    fn new(salt: u64) -> Jitter {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        let count = SEED_COUNTER.fetch_add(1, Ordering::Relaxed);
        let seed =
            splitmix64(nanos ^ (u64::from(std::process::id()) << 32) ^ splitmix64(salt) ^ count);
        Jitter(seed | 1)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Full jitter: uniform in `[0, min(max, min * 2^(failures-1))]`.
    fn backoff(&mut self, failures: u32, min: Duration, max: Duration) -> Duration {
        let cap = min
            .saturating_mul(1u32 << failures.saturating_sub(1).min(20))
            .min(max);
        let cap_nanos = u64::try_from(cap.as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(self.next() % cap_nanos.saturating_add(1))
    }
}

fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_capped_and_jittered() {
        let min = Duration::from_millis(50);
        let max = Duration::from_secs(2);
        let mut j = Jitter::new(1);
        for failures in 1..100 {
            let cap = min.saturating_mul(1u32 << (failures - 1).min(20)).min(max);
            for _ in 0..20 {
                assert!(j.backoff(failures, min, max) <= cap);
            }
        }
        let samples: Vec<Duration> = (0..50).map(|_| j.backoff(10, min, max)).collect();
        assert!(samples.iter().any(|d| *d != samples[0]), "jitter must vary");
        assert_eq!(j.backoff(5, Duration::ZERO, Duration::ZERO), Duration::ZERO);
    }

    #[test]
    fn queue_is_bounded_in_frames_and_bytes() {
        let opts = TransportOptions {
            queue_frames: 3,
            queue_bytes: 10,
            max_frame_bytes: 8,
            ..Default::default()
        };
        let peer = Peer::new(NodeId(2), "127.0.0.1:1".parse().unwrap());
        peer.enqueue(vec![0; 4], &opts);
        peer.enqueue(vec![0; 4], &opts);
        peer.enqueue(vec![0; 4], &opts); // 12 bytes > 10: dropped
        peer.enqueue(vec![0; 9], &opts); // over max_frame_bytes: dropped
        peer.enqueue(vec![0; 2], &opts);
        peer.enqueue(vec![], &opts); // 4th frame: dropped
        let s = peer.stats();
        assert_eq!((s.queue_len, s.queue_bytes, s.dropped), (3, 10, 3));

        // Frames being written still count against the bound until the write finishes.
        let batch = peer.take_batch();
        assert_eq!(batch.len(), 3);
        peer.enqueue(vec![1], &opts);
        assert_eq!(peer.stats().dropped, 4);
        peer.finish_batch(3, 10, true);
        peer.enqueue(vec![1], &opts);
        let s = peer.stats();
        assert_eq!(
            (s.queue_len, s.queue_bytes, s.frames_sent, s.bytes_sent),
            (1, 1, 3, 10)
        );
    }
}
