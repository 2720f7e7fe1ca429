//! The on-disk format (version 1, see the crate documentation): segment file names, the segment
//! header, record headers and their checksums. Pure functions of bytes; no I/O.

/// Magic bytes at the start of every segment file.
pub const SEGMENT_MAGIC: [u8; 4] = *b"BWAL";
/// On-disk format version written into every segment header.
pub const FORMAT_VERSION: u32 = 1;
/// Size of the segment header in bytes.
pub const SEGMENT_HEADER_LEN: u64 = 20;
/// Size of a record header (`len`, `crc`, `index`) in bytes.
pub const RECORD_HEADER_LEN: u64 = 16;

pub(crate) const SEGMENT_SUFFIX: &str = ".wal";
pub(crate) const TEMP_SUFFIX: &str = ".wal.tmp";

/// File name of the segment whose first index is `first_index`.
pub fn segment_file_name(first_index: u64) -> String {
    format!("{first_index:020}{SEGMENT_SUFFIX}")
}

pub(crate) fn parse_segment_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(SEGMENT_SUFFIX)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

pub(crate) fn encode_header(first_index: u64) -> [u8; SEGMENT_HEADER_LEN as usize] {
    let mut h = [0u8; SEGMENT_HEADER_LEN as usize];
    h[0..4].copy_from_slice(&SEGMENT_MAGIC);
    h[4..8].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    h[8..16].copy_from_slice(&first_index.to_le_bytes());
    let crc = crc32c::crc32c(&h[0..16]);
    h[16..20].copy_from_slice(&crc.to_le_bytes());
    h
}

/// Why a segment header is not valid.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    #[error("bad segment magic {found:02x?}")]
    BadMagic { found: [u8; 4] },
    #[error("segment header checksum mismatch")]
    ChecksumMismatch,
    #[error("unsupported segment format version {version}")]
    UnsupportedVersion { version: u32 },
    #[error("segment header first index is 0")]
    ZeroFirstIndex,
}

pub(crate) fn decode_header(h: &[u8; SEGMENT_HEADER_LEN as usize]) -> Result<u64, HeaderError> {
    let magic: [u8; 4] = h[0..4].try_into().unwrap();
    if magic != SEGMENT_MAGIC {
        return Err(HeaderError::BadMagic { found: magic });
    }
    let crc = u32::from_le_bytes(h[16..20].try_into().unwrap());
    if crc32c::crc32c(&h[0..16]) != crc {
        return Err(HeaderError::ChecksumMismatch);
    }
    let version = u32::from_le_bytes(h[4..8].try_into().unwrap());
    if version != FORMAT_VERSION {
        return Err(HeaderError::UnsupportedVersion { version });
    }
    let first = u64::from_le_bytes(h[8..16].try_into().unwrap());
    if first == 0 {
        return Err(HeaderError::ZeroFirstIndex);
    }
    Ok(first)
}

pub(crate) fn record_crc(len: u32, index: u64, payload: &[u8]) -> u32 {
    let c = crc32c::crc32c(&len.to_le_bytes());
    let c = crc32c::crc32c_append(c, &index.to_le_bytes());
    crc32c::crc32c_append(c, payload)
}

/// Appends one encoded record (`len | crc | index | payload`) to `buf`.
pub(crate) fn encode_record(buf: &mut Vec<u8>, index: u64, payload: &[u8]) {
    let len = payload.len() as u32;
    buf.reserve(RECORD_HEADER_LEN as usize + payload.len());
    buf.extend_from_slice(&len.to_le_bytes());
    buf.extend_from_slice(&record_crc(len, index, payload).to_le_bytes());
    buf.extend_from_slice(&index.to_le_bytes());
    buf.extend_from_slice(payload);
}

pub(crate) struct RecordHeader {
    pub(crate) len: u32,
    pub(crate) crc: u32,
    pub(crate) index: u64,
}

pub(crate) fn parse_record_header(h: &[u8]) -> RecordHeader {
    RecordHeader {
        len: u32::from_le_bytes(h[0..4].try_into().unwrap()),
        crc: u32::from_le_bytes(h[4..8].try_into().unwrap()),
        index: u64::from_le_bytes(h[8..16].try_into().unwrap()),
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    #[test]
    fn header_round_trip() {
        let h = encode_header(42);
        assert_eq!(decode_header(&h), Ok(42));
        let mut bad = h;
        bad[9] ^= 1;
        assert_eq!(decode_header(&bad), Err(HeaderError::ChecksumMismatch));
        let mut bad = h;
        bad[0] = b'X';
        let err = decode_header(&bad).unwrap_err();
        assert_eq!(
            err.to_string(),
            "bad segment magic [58, 57, 41, 4c]",
            "{err:?}"
        );
    }

    #[test]
    fn segment_names() {
        assert_eq!(segment_file_name(1), "00000000000000000001.wal");
        assert_eq!(parse_segment_name("00000000000000000001.wal"), Some(1));
        assert_eq!(parse_segment_name("00000000000000000001.wal.tmp"), None);
        assert_eq!(parse_segment_name("1.wal"), None);
        let temp = bulwark_fs::temp_path(Path::new(&segment_file_name(1)));
        assert!(temp.to_str().unwrap().ends_with(TEMP_SUFFIX), "{temp:?}");
    }

    /// The format, pinned: bytes written out by hand from the tables in the crate documentation
    /// (their CRC32C computed apart from this crate), so that a change of the on-disk format fails
    /// here and has to be made on purpose, with a new version.
    #[test]
    fn a_segment_header_and_a_record_are_encoded_exactly_as_documented() {
        // magic `BWAL`, version 1, first index 42, CRC32C of the 16 bytes before it.
        let header = [
            0x42, 0x57, 0x41, 0x4c, 1, 0, 0, 0, 42, 0, 0, 0, 0, 0, 0, 0, 0x6d, 0x70, 0x3a, 0x82,
        ];
        assert_eq!(encode_header(42), header);
        assert_eq!(decode_header(&header), Ok(42));
        // len 3, CRC32C over (len ++ index ++ payload), index 9, payload `xyz`.
        let record = [
            3, 0, 0, 0, 0xe1, 0x8a, 0x95, 0x85, 9, 0, 0, 0, 0, 0, 0, 0, b'x', b'y', b'z',
        ];
        let mut buf = Vec::new();
        encode_record(&mut buf, 9, b"xyz");
        assert_eq!(buf, record);
    }

    #[test]
    fn crc_covers_len_and_index() {
        let base = record_crc(3, 7, b"abc");
        assert_ne!(base, record_crc(4, 7, b"abc"));
        assert_ne!(base, record_crc(3, 8, b"abc"));
        assert_ne!(base, record_crc(3, 7, b"abd"));
    }

    #[test]
    fn an_encoded_record_parses_back() {
        let mut buf = Vec::new();
        encode_record(&mut buf, 9, b"xyz");
        assert_eq!(buf.len() as u64, RECORD_HEADER_LEN + 3);
        let h = parse_record_header(&buf);
        assert_eq!((h.len, h.index), (3, 9));
        assert_eq!(h.crc, record_crc(3, 9, b"xyz"));
        assert_eq!(&buf[RECORD_HEADER_LEN as usize..], b"xyz");
    }
}
