//! The archive's sealed chunks: consecutive committed Raft entries of one cluster, checksummed
//! whole. A chunk is valid only if its name, header, every entry and the trailer agree; anything
//! else (a half-written upload, a flipped byte, a chunk of another cluster) is refused with
//! what is wrong.
//!
//! ```text
//! name    = archive/<cluster id>/<first index, 20 digits>-<last index, 20 digits>.chunk
//! chunk   = header | entry* | crc32c u32 LE (over header and entries)
//! header  = "BWARCHV1" | cluster_id u64 | first u64 | last u64 | sealed_at_ms u64  (LE)
//! entry   = len u32 | crc32c u32 (over the bytes) | a raft `Entry` (protobuf), index first + i
//! ```

use protobuf::Message;
use raft::eraftpb::Entry;

const MAGIC: &[u8; 8] = b"BWARCHV1";
const HEADER_LEN: usize = 8 + 8 * 4;

/// The archive's directory for one cluster.
pub fn cluster_prefix(cluster_id: u64) -> String {
    format!("archive/{cluster_id}/")
}

/// The name of the chunk holding `first..=last`.
pub fn chunk_name(cluster_id: u64, first: u64, last: u64) -> String {
    format!("{}{first:020}-{last:020}.chunk", cluster_prefix(cluster_id))
}

/// The range a chunk's name claims (`None`: not a chunk's name).
pub fn parse_name(name: &str) -> Option<(u64, u64, u64)> {
    let rest = name.strip_prefix("archive/")?;
    let (cluster, file) = rest.split_once('/')?;
    let range = file.strip_suffix(".chunk")?;
    let (first, last) = range.split_once('-')?;
    if first.len() != 20 || last.len() != 20 {
        return None;
    }
    Some((
        cluster.parse().ok()?,
        first.parse().ok()?,
        last.parse().ok()?,
    ))
}

/// A chunk's header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkHeader {
    pub cluster_id: u64,
    pub first: u64,
    pub last: u64,
    /// The archiver's wall clock when it sealed the chunk (ms since the Unix epoch).
    pub sealed_at_ms: u64,
}

/// What is wrong with a chunk.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ChunkError {
    #[error("not a chunk's name")]
    BadName,
    #[error("{len} bytes: too short for a chunk")]
    TooShort { len: usize },
    #[error("not an archive chunk (bad magic)")]
    BadMagic,
    #[error("checksum mismatch: the chunk is damaged or was cut short")]
    Checksum,
    #[error("the header says entries {first}..={last} of cluster {cluster}, the name {name_first}..={name_last} of cluster {name_cluster}")]
    NameMismatch {
        cluster: u64,
        first: u64,
        last: u64,
        name_cluster: u64,
        name_first: u64,
        name_last: u64,
    },
    #[error("entry at byte {offset}: {why}")]
    Entry { offset: usize, why: String },
    #[error("holds entries up to {found}, the header says {last}")]
    Count { found: u64, last: u64 },
}

/// Seals `entries` (consecutive, non-empty) into a chunk's bytes.
pub fn encode(cluster_id: u64, entries: &[Entry], sealed_at_ms: u64) -> Vec<u8> {
    let first = entries.first().expect("a chunk holds entries").index;
    let last = entries.last().expect("a chunk holds entries").index;
    assert_eq!(
        last - first + 1,
        entries.len() as u64,
        "consecutive entries"
    );
    let mut out = Vec::with_capacity(HEADER_LEN + entries.len() * 64);
    out.extend_from_slice(MAGIC);
    for field in [cluster_id, first, last, sealed_at_ms] {
        out.extend_from_slice(&field.to_le_bytes());
    }
    for (i, entry) in entries.iter().enumerate() {
        assert_eq!(entry.index, first + i as u64, "consecutive entries");
        let bytes = entry.write_to_bytes().expect("an entry encodes");
        out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
        out.extend_from_slice(&crc32c::crc32c(&bytes).to_le_bytes());
        out.extend_from_slice(&bytes);
    }
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// Reads just the header (after checking the whole chunk's checksum).
pub fn header(bytes: &[u8]) -> Result<ChunkHeader, ChunkError> {
    if bytes.len() < HEADER_LEN + 4 {
        return Err(ChunkError::TooShort { len: bytes.len() });
    }
    if &bytes[..8] != MAGIC {
        return Err(ChunkError::BadMagic);
    }
    let (body, trailer) = bytes.split_at(bytes.len() - 4);
    if crc32c::crc32c(body) != u32::from_le_bytes(trailer.try_into().expect("4 bytes")) {
        return Err(ChunkError::Checksum);
    }
    let field = |i: usize| u64::from_le_bytes(bytes[8 + i * 8..16 + i * 8].try_into().expect("8"));
    Ok(ChunkHeader {
        cluster_id: field(0),
        first: field(1),
        last: field(2),
        sealed_at_ms: field(3),
    })
}

/// Checks a chunk stored under `name` and decodes its entries.
pub fn decode(name: &str, bytes: &[u8]) -> Result<(ChunkHeader, Vec<Entry>), ChunkError> {
    let (name_cluster, name_first, name_last) = parse_name(name).ok_or(ChunkError::BadName)?;
    let header = header(bytes)?;
    if (header.cluster_id, header.first, header.last) != (name_cluster, name_first, name_last) {
        return Err(ChunkError::NameMismatch {
            cluster: header.cluster_id,
            first: header.first,
            last: header.last,
            name_cluster,
            name_first,
            name_last,
        });
    }
    let body = &bytes[HEADER_LEN..bytes.len() - 4];
    let mut entries = Vec::with_capacity((header.last - header.first + 1) as usize);
    let mut at = 0usize;
    while at < body.len() {
        let offset = HEADER_LEN + at;
        let bad = |why: String| ChunkError::Entry { offset, why };
        let head = body
            .get(at..at + 8)
            .ok_or_else(|| bad("cut short".into()))?;
        let len = u32::from_le_bytes(head[..4].try_into().expect("4")) as usize;
        let crc = u32::from_le_bytes(head[4..].try_into().expect("4"));
        let data = body
            .get(at + 8..at + 8 + len)
            .ok_or_else(|| bad(format!("{len} bytes claimed, fewer left")))?;
        if crc32c::crc32c(data) != crc {
            return Err(bad("checksum mismatch".into()));
        }
        let entry = Entry::parse_from_bytes(data).map_err(|e| bad(e.to_string()))?;
        let expected = header.first + entries.len() as u64;
        if entry.index != expected {
            return Err(bad(format!("index {}, expected {expected}", entry.index)));
        }
        entries.push(entry);
        at += 8 + len;
    }
    let found = header.first + entries.len() as u64 - 1;
    if entries.is_empty() || found != header.last {
        return Err(ChunkError::Count {
            found,
            last: header.last,
        });
    }
    Ok((header, entries))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(first: u64, n: u64) -> Vec<Entry> {
        (first..first + n)
            .map(|index| Entry {
                index,
                term: 2,
                data: vec![index as u8; 10].into(),
                ..Default::default()
            })
            .collect()
    }

    #[test]
    fn a_chunk_reads_back_and_every_damage_is_named() {
        let name = chunk_name(7, 5, 9);
        let bytes = encode(7, &entries(5, 5), 1234);
        let (header, back) = decode(&name, &bytes).expect("valid");
        assert_eq!(
            (header.first, header.last, header.sealed_at_ms),
            (5, 9, 1234)
        );
        assert_eq!(back, entries(5, 5));
        // A flipped byte anywhere.
        for at in [0, 9, HEADER_LEN + 3, bytes.len() - 1] {
            let mut bad = bytes.clone();
            bad[at] ^= 1;
            assert!(decode(&name, &bad).is_err(), "byte {at} flipped");
        }
        // Cut short (a half-written upload).
        assert_eq!(
            decode(&name, &bytes[..bytes.len() - 7]),
            Err(ChunkError::Checksum)
        );
        // Another cluster's chunk, or one renamed.
        assert!(matches!(
            decode(&chunk_name(8, 5, 9), &bytes),
            Err(ChunkError::NameMismatch { .. })
        ));
        assert!(matches!(
            decode(&chunk_name(7, 5, 10), &bytes),
            Err(ChunkError::NameMismatch { .. })
        ));
        assert_eq!(
            decode("archive/7/x.chunk", &bytes),
            Err(ChunkError::BadName)
        );
    }

    #[test]
    fn names_sort_by_index() {
        assert_eq!(parse_name(&chunk_name(3, 10, 200)), Some((3, 10, 200)));
        assert!(chunk_name(1, 9, 9) < chunk_name(1, 10, 10));
    }
}
