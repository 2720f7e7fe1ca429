//! Fixed-width little-endian fields, read in order from a record whose length was checked and
//! written in order to a buffer: the one copy for the log's batches and the store's records.

/// Reads fields one after another. The caller checks the record's length first, so a read
/// past the end is a bug of the format's description and panics.
pub struct LeReader<'a> {
    bytes: &'a [u8],
    at: usize,
}

macro_rules! read_int {
    ($name:ident, $int:ty) => {
        pub fn $name(&mut self) -> $int {
            const N: usize = std::mem::size_of::<$int>();
            let field = self.bytes[self.at..self.at + N]
                .try_into()
                .expect("a field of its width");
            self.at += N;
            <$int>::from_le_bytes(field)
        }
    };
}

impl<'a> LeReader<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        LeReader { bytes, at: 0 }
    }

    read_int!(u128, u128);
    read_int!(u64, u64);
    read_int!(u32, u32);
    read_int!(u16, u16);

    /// Skips `n` reserved bytes.
    pub fn skip(&mut self, n: usize) {
        self.at += n;
    }

    /// How many bytes were read.
    pub fn position(&self) -> usize {
        self.at
    }
}

/// Appends fields one after another: an implementor says how bytes are appended, the widths
/// are written once here.
pub trait LeWriter {
    fn put(&mut self, field: &[u8]);

    fn put_u128(&mut self, v: u128) {
        self.put(&v.to_le_bytes());
    }
    fn put_u64(&mut self, v: u64) {
        self.put(&v.to_le_bytes());
    }
    fn put_u32(&mut self, v: u32) {
        self.put(&v.to_le_bytes());
    }
    fn put_u16(&mut self, v: u16) {
        self.put(&v.to_le_bytes());
    }
}

impl LeWriter for Vec<u8> {
    fn put(&mut self, field: &[u8]) {
        self.extend_from_slice(field);
    }
}

/// A record of exactly `N` bytes, written field by field without allocating: the store encodes
/// every checkpointed record through it.
pub struct LeArray<const N: usize> {
    bytes: [u8; N],
    at: usize,
}

impl<const N: usize> Default for LeArray<N> {
    fn default() -> Self {
        LeArray {
            bytes: [0; N],
            at: 0,
        }
    }
}

impl<const N: usize> LeArray<N> {
    /// Skips `n` reserved bytes, left zero.
    pub fn skip(&mut self, n: usize) {
        self.at += n;
    }

    /// The record; every byte must have been written or skipped.
    pub fn finish(self) -> [u8; N] {
        assert_eq!(self.at, N, "a record is written to its full width");
        self.bytes
    }
}

impl<const N: usize> LeWriter for LeArray<N> {
    fn put(&mut self, field: &[u8]) {
        self.bytes[self.at..self.at + field.len()].copy_from_slice(field);
        self.at += field.len();
    }
}
