//! The wire format: checksummed frames and the hello frame that opens every connection.
//!
//! A frame is `len u32 LE | crc32c u32 LE | payload[len]`, where `crc32c` (Castagnoli) covers the payload
//! only. The first frame a dialer sends is a hello whose payload is
//! `magic "BWTP" | version u16 LE | cluster_id u64 LE | from u64 LE | family u8 | ip [u8; 16] |
//! port u16 LE` (41 bytes): the last three are where the dialer's own peer listener is reached
//! (`family` 4 or 6; an IPv4 address fills the first 4 bytes of `ip`, the rest are 0).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::NodeId;

/// Bytes before the payload of every frame: `len u32` and `crc32c u32`.
pub const FRAME_HEADER_LEN: usize = 8;

/// The magic that opens a hello payload.
pub const HELLO_MAGIC: [u8; 4] = *b"BWTP";

/// The wire protocol version this crate speaks (and the only one it accepts). 2: the node's
/// frame payloads carry the sender's time before the Raft message (`node::peer_frame`). 3: the
/// hello carries the dialer's peer address.
pub const PROTOCOL_VERSION: u16 = 3;

/// Length of a hello payload: magic, version, cluster id, node id, peer address.
pub const HELLO_PAYLOAD_LEN: usize = 4 + 2 + 8 + 8 + 1 + 16 + 2;

/// A frame the decoder refuses. Either one means the byte stream can no longer be trusted: the
/// connection it came from must be closed and nothing more read from it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The length field announces more than the receiver accepts. Detected from the header alone,
    /// before any of the payload is buffered.
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge { len: usize, max: usize },
    /// The payload does not match the checksum in its header.
    #[error("frame checksum mismatch: header says {expected:#010x}, payload has {actual:#010x}")]
    BadChecksum { expected: u32, actual: u32 },
}

/// A hello payload that is not one this node will talk to.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HelloError {
    #[error("hello payload is {0} bytes, expected {HELLO_PAYLOAD_LEN}")]
    BadLength(usize),
    #[error("bad magic {0:?}, expected \"BWTP\"")]
    BadMagic([u8; 4]),
    #[error("unsupported protocol version {0}, this node speaks {PROTOCOL_VERSION}")]
    UnsupportedVersion(u16),
    #[error("address family {0}, expected 4 or 6")]
    BadFamily(u8),
}

/// Appends one frame carrying `payload` to `out`.
///
/// # Panics
/// If the payload is longer than `u32::MAX` bytes (a length the format cannot express).
pub fn encode_frame_into(out: &mut Vec<u8>, payload: &[u8]) {
    let len = u32::try_from(payload.len()).expect("frame payload longer than u32::MAX bytes");
    out.reserve(FRAME_HEADER_LEN + payload.len());
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&crc32c::crc32c(payload).to_le_bytes());
    out.extend_from_slice(payload);
}

/// One frame carrying `payload`: `len u32 LE | crc32c u32 LE | payload`.
///
/// # Panics
/// If the payload is longer than `u32::MAX` bytes.
pub fn encode_frame(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(FRAME_HEADER_LEN + payload.len());
    encode_frame_into(&mut out, payload);
    out
}

/// The handshake a dialer sends as its first frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hello {
    /// The cluster the dialer belongs to; an acceptor of another cluster refuses the connection.
    pub cluster_id: u64,
    /// Who is dialing: every frame on this connection is delivered as coming from this node.
    pub from: NodeId,
    /// Where the dialer's peer listener is reached. The acceptor replies there while it knows
    /// no address of its own for the dialer (it lags behind the entry that added it).
    pub addr: SocketAddr,
}

impl Hello {
    /// The hello payload (without the frame header).
    pub fn encode_payload(&self) -> [u8; HELLO_PAYLOAD_LEN] {
        let mut out = [0u8; HELLO_PAYLOAD_LEN];
        out[0..4].copy_from_slice(&HELLO_MAGIC);
        out[4..6].copy_from_slice(&PROTOCOL_VERSION.to_le_bytes());
        out[6..14].copy_from_slice(&self.cluster_id.to_le_bytes());
        out[14..22].copy_from_slice(&self.from.0.to_le_bytes());
        match self.addr.ip() {
            IpAddr::V4(ip) => {
                out[22] = 4;
                out[23..27].copy_from_slice(&ip.octets());
            }
            IpAddr::V6(ip) => {
                out[22] = 6;
                out[23..39].copy_from_slice(&ip.octets());
            }
        }
        out[39..41].copy_from_slice(&self.addr.port().to_le_bytes());
        out
    }

    /// The complete hello frame, ready to write to a fresh connection.
    pub fn encode_frame(&self) -> Vec<u8> {
        encode_frame(&self.encode_payload())
    }

    /// Parses a hello payload, checking its length, magic and protocol version. The cluster id is
    /// returned for the caller to check against its own.
    pub fn decode(payload: &[u8]) -> Result<Hello, HelloError> {
        if payload.len() != HELLO_PAYLOAD_LEN {
            return Err(HelloError::BadLength(payload.len()));
        }
        let magic: [u8; 4] = payload[0..4].try_into().expect("4 bytes");
        if magic != HELLO_MAGIC {
            return Err(HelloError::BadMagic(magic));
        }
        let version = u16::from_le_bytes(payload[4..6].try_into().expect("2 bytes"));
        if version != PROTOCOL_VERSION {
            return Err(HelloError::UnsupportedVersion(version));
        }
        let ip = match payload[22] {
            4 => IpAddr::V4(Ipv4Addr::from(
                <[u8; 4]>::try_from(&payload[23..27]).expect("4 bytes"),
            )),
            6 => IpAddr::V6(Ipv6Addr::from(
                <[u8; 16]>::try_from(&payload[23..39]).expect("16 bytes"),
            )),
            family => return Err(HelloError::BadFamily(family)),
        };
        let port = u16::from_le_bytes(payload[39..41].try_into().expect("2 bytes"));
        Ok(Hello {
            cluster_id: u64::from_le_bytes(payload[6..14].try_into().expect("8 bytes")),
            from: NodeId(u64::from_le_bytes(
                payload[14..22].try_into().expect("8 bytes"),
            )),
            addr: SocketAddr::new(ip, port),
        })
    }
}

/// Incremental frame decoder over a byte buffer: feed it whatever bytes arrive with [`extend`], take
/// whole, checksum-verified frames out with [`next_frame`].
///
/// It never returns a payload whose checksum fails, and it refuses an oversize length as soon as the
/// header is in, so a hostile length field cannot make it buffer more than `max_frame_bytes`. After an
/// error the decoder is poisoned: every later call returns the same error.
///
/// Memory: the buffer holds at most one partial frame plus whatever was passed to the last `extend`,
/// provided the caller drains `next_frame` until `Ok(None)` before extending again (the transport does).
///
/// [`extend`]: FrameDecoder::extend
/// [`next_frame`]: FrameDecoder::next_frame
#[derive(Debug)]
pub struct FrameDecoder {
    buf: Vec<u8>,
    /// Offset of the first unconsumed byte in `buf`.
    start: usize,
    max_frame_bytes: usize,
    failed: Option<FrameError>,
}

impl FrameDecoder {
    /// A decoder that refuses frames whose payload is longer than `max_frame_bytes`.
    pub fn new(max_frame_bytes: usize) -> FrameDecoder {
        FrameDecoder {
            buf: Vec::new(),
            start: 0,
            max_frame_bytes,
            failed: None,
        }
    }

    /// Changes the payload limit for frames not yet decoded (the transport reads the hello with a tiny
    /// limit, then raises it).
    pub fn set_max_frame_bytes(&mut self, max_frame_bytes: usize) {
        self.max_frame_bytes = max_frame_bytes;
    }

    /// Appends bytes read from the stream.
    pub fn extend(&mut self, bytes: &[u8]) {
        if self.start > 0 {
            // Compact: only the unconsumed tail (at most one partial frame) moves.
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes received but not yet returned as a frame.
    pub fn buffered_len(&self) -> usize {
        self.buf.len() - self.start
    }

    /// The next complete frame's payload, `Ok(None)` if more bytes are needed, or the reason the stream
    /// is bad.
    pub fn next_frame(&mut self) -> Result<Option<Vec<u8>>, FrameError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let avail = &self.buf[self.start..];
        if avail.len() < FRAME_HEADER_LEN {
            return Ok(None);
        }
        let len = u32::from_le_bytes(avail[0..4].try_into().expect("4 bytes")) as usize;
        if len > self.max_frame_bytes {
            return Err(self.fail(FrameError::TooLarge {
                len,
                max: self.max_frame_bytes,
            }));
        }
        if avail.len() < FRAME_HEADER_LEN + len {
            return Ok(None);
        }
        let expected = u32::from_le_bytes(avail[4..8].try_into().expect("4 bytes"));
        let payload = &avail[FRAME_HEADER_LEN..FRAME_HEADER_LEN + len];
        let actual = crc32c::crc32c(payload);
        if actual != expected {
            return Err(self.fail(FrameError::BadChecksum { expected, actual }));
        }
        let payload = payload.to_vec();
        self.start += FRAME_HEADER_LEN + len;
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
        Ok(Some(payload))
    }

    fn fail(&mut self, e: FrameError) -> FrameError {
        self.failed = Some(e.clone());
        // Nothing after a bad frame can be trusted; release the memory now.
        self.buf = Vec::new();
        self.start = 0;
        e
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(payloads: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for p in payloads {
            encode_frame_into(&mut out, p);
        }
        out
    }

    fn drain(dec: &mut FrameDecoder) -> Result<Vec<Vec<u8>>, FrameError> {
        let mut out = Vec::new();
        while let Some(f) = dec.next_frame()? {
            out.push(f);
        }
        Ok(out)
    }

    #[test]
    fn encode_layout() {
        let f = encode_frame(b"abc");
        assert_eq!(&f[0..4], &3u32.to_le_bytes());
        assert_eq!(&f[4..8], &crc32c::crc32c(b"abc").to_le_bytes());
        assert_eq!(&f[8..], b"abc");
        assert_eq!(encode_frame(b"").len(), FRAME_HEADER_LEN);
    }

    #[test]
    fn round_trip() {
        let payloads: Vec<Vec<u8>> = vec![
            b"hello".to_vec(),
            Vec::new(),
            vec![0xAB; 10_000],
            (0..=255u8).collect(),
        ];
        let refs: Vec<&[u8]> = payloads.iter().map(|p| p.as_slice()).collect();
        let mut dec = FrameDecoder::new(1 << 20);
        dec.extend(&frames(&refs));
        assert_eq!(drain(&mut dec).unwrap(), payloads);
        assert_eq!(dec.buffered_len(), 0);
        assert_eq!(dec.next_frame(), Ok(None));
    }

    #[test]
    fn split_at_every_byte_boundary() {
        let payloads: Vec<Vec<u8>> = vec![b"first".to_vec(), Vec::new(), b"third frame".to_vec()];
        let refs: Vec<&[u8]> = payloads.iter().map(|p| p.as_slice()).collect();
        let wire = frames(&refs);
        for cut in 0..=wire.len() {
            let mut dec = FrameDecoder::new(64);
            dec.extend(&wire[..cut]);
            let mut got = drain(&mut dec).unwrap();
            dec.extend(&wire[cut..]);
            got.extend(drain(&mut dec).unwrap());
            assert_eq!(got, payloads, "split at byte {cut}");
            assert_eq!(dec.buffered_len(), 0);
        }
        // And one byte at a time.
        let mut dec = FrameDecoder::new(64);
        let mut got = Vec::new();
        for b in &wire {
            dec.extend(std::slice::from_ref(b));
            got.extend(drain(&mut dec).unwrap());
        }
        assert_eq!(got, payloads);
    }

    #[test]
    fn bad_checksum_is_refused_and_sticky() {
        let mut wire = frames(&[b"good", b"evil", b"later"]);
        // Flip one payload bit of the second frame.
        let second_payload = FRAME_HEADER_LEN + 4 + FRAME_HEADER_LEN;
        wire[second_payload] ^= 0x01;
        let mut dec = FrameDecoder::new(64);
        dec.extend(&wire);
        assert_eq!(dec.next_frame(), Ok(Some(b"good".to_vec())));
        let err = dec.next_frame().unwrap_err();
        assert!(matches!(err, FrameError::BadChecksum { .. }), "{err}");
        // Nothing after a bad frame is ever returned.
        assert_eq!(dec.next_frame(), Err(err.clone()));
        dec.extend(&encode_frame(b"more"));
        assert_eq!(dec.next_frame(), Err(err));
    }

    #[test]
    fn bad_checksum_in_header() {
        let mut wire = encode_frame(b"payload");
        wire[4] ^= 0xFF;
        let mut dec = FrameDecoder::new(64);
        dec.extend(&wire);
        assert!(matches!(
            dec.next_frame(),
            Err(FrameError::BadChecksum { .. })
        ));
    }

    #[test]
    fn oversize_length_refused_from_header_alone() {
        let mut dec = FrameDecoder::new(100);
        dec.extend(&encode_frame(&[7u8; 100]));
        assert_eq!(dec.next_frame(), Ok(Some(vec![7u8; 100])));
        // Only the header of a huge frame: refused without waiting for (or buffering) its payload.
        let mut header = Vec::new();
        header.extend_from_slice(&101u32.to_le_bytes());
        header.extend_from_slice(&0u32.to_le_bytes());
        dec.extend(&header);
        assert_eq!(
            dec.next_frame(),
            Err(FrameError::TooLarge { len: 101, max: 100 })
        );
        assert_eq!(dec.buffered_len(), 0);

        let mut dec = FrameDecoder::new(1 << 20);
        dec.extend(&u32::MAX.to_le_bytes());
        dec.extend(&[0; 4]);
        assert!(matches!(dec.next_frame(), Err(FrameError::TooLarge { .. })));
    }

    #[test]
    fn raising_the_limit_after_the_hello() {
        let hello = Hello {
            cluster_id: 42,
            from: NodeId(7),
            addr: "127.0.0.1:7170".parse().unwrap(),
        };
        let mut wire = hello.encode_frame();
        encode_frame_into(&mut wire, &[1u8; 1000]);
        let mut dec = FrameDecoder::new(HELLO_PAYLOAD_LEN);
        dec.extend(&wire);
        let payload = dec.next_frame().unwrap().unwrap();
        assert_eq!(Hello::decode(&payload), Ok(hello));
        dec.set_max_frame_bytes(4096);
        assert_eq!(dec.next_frame(), Ok(Some(vec![1u8; 1000])));
    }

    #[test]
    fn hello_round_trip_and_refusals() {
        let hello = Hello {
            cluster_id: u64::MAX - 3,
            from: NodeId(123_456),
            addr: "[2001:db8::7]:65535".parse().unwrap(),
        };
        let payload = hello.encode_payload();
        assert_eq!(&payload[0..4], b"BWTP");
        assert_eq!(Hello::decode(&payload), Ok(hello));
        let v4 = Hello {
            addr: "10.1.2.3:7170".parse().unwrap(),
            ..hello
        };
        assert_eq!(Hello::decode(&v4.encode_payload()), Ok(v4));

        assert_eq!(
            Hello::decode(&payload[..21]),
            Err(HelloError::BadLength(21))
        );
        let mut bad = payload;
        bad[22] = 5;
        assert_eq!(Hello::decode(&bad), Err(HelloError::BadFamily(5)));
        let mut bad = payload;
        bad[0] = b'X';
        assert_eq!(Hello::decode(&bad), Err(HelloError::BadMagic(*b"XWTP")));
        let mut bad = payload;
        // A peer of the previous version (whose hello names no address) is refused.
        bad[4..6].copy_from_slice(&2u16.to_le_bytes());
        assert_eq!(Hello::decode(&bad), Err(HelloError::UnsupportedVersion(2)));
    }
}
