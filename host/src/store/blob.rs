//! Blob bytes handed to readers: [`BlobData`] and the [`Verify`] choice.
//!
//! Invariants: a [`MappedBytes`] range always lies inside its mapping
//! (checked when it is built); clones share the mapping or buffer through an
//! `Arc`, so handing blobs to several threads copies nothing.
//!
//! Decision: decoded (zstd) blobs are `Owned(Arc<Vec<u8>>)` rather than a
//! bare `Vec<u8>`, so every `BlobData` is cheap to clone;
//! [`BlobData::into_vec`] gets the vector back without a copy when the
//! clone is unique.

use std::fmt;
use std::io::{self, BufRead, Read};
use std::ops::Deref;
use std::sync::Arc;

use memmap2::Mmap;

/// Whether a read re-hashes blob bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verify {
    /// Re-hash with blake3 and refuse bytes that do not match the record
    /// ([`StoreError::Corrupt`](super::StoreError::Corrupt)).
    Hash,
    /// Unverified: raw and uncompressed packed blobs are returned as
    /// mappings in O(1); only sizes are checked. zstd blobs are still
    /// decoded (O(size)), but not hashed.
    None,
}

/// A range of a memory-mapped store file.
#[derive(Clone)]
pub struct MappedBytes {
    map: Arc<Mmap>,
    start: usize,
    len: usize,
}

impl MappedBytes {
    /// The range `start..start + len` of `map`, if it lies inside it.
    pub(crate) fn new(map: Arc<Mmap>, start: usize, len: usize) -> Option<MappedBytes> {
        let end = start.checked_add(len)?;
        (end <= map.len()).then_some(MappedBytes { map, start, len })
    }
}

impl Deref for MappedBytes {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        // The range was checked against the mapping in `new`.
        self.map
            .get(self.start..self.start + self.len)
            .unwrap_or_default()
    }
}

/// The bytes of one blob, in the order of the record's blobs.
#[derive(Clone)]
pub enum BlobData {
    /// A view of a memory-mapped store file (a raw blob file or an
    /// uncompressed pack range): no copy was made.
    Mapped(MappedBytes),
    /// Bytes decoded into memory (zstd blobs, empty blobs).
    Owned(Arc<Vec<u8>>),
}

impl BlobData {
    pub(crate) fn empty() -> BlobData {
        BlobData::Owned(Arc::new(Vec::new()))
    }

    /// Whether the bytes are a view of a mapped file.
    pub fn is_mapped(&self) -> bool {
        matches!(self, BlobData::Mapped(_))
    }

    /// The bytes as a vector (no copy for a uniquely held owned blob).
    pub fn into_vec(self) -> Vec<u8> {
        match self {
            BlobData::Mapped(m) => m.to_vec(),
            BlobData::Owned(v) => Arc::try_unwrap(v).unwrap_or_else(|v| v.as_ref().clone()),
        }
    }
}

impl Deref for BlobData {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            BlobData::Mapped(m) => m,
            BlobData::Owned(v) => v,
        }
    }
}

impl AsRef<[u8]> for BlobData {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

impl fmt::Debug for BlobData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = if self.is_mapped() { "Mapped" } else { "Owned" };
        write!(f, "BlobData::{kind}({} bytes)", self.len())
    }
}

/// Decodes a zstd stream, reading at most `size + 1` logical bytes so a
/// bad frame cannot balloon memory; the caller compares the length.
pub(crate) fn decode_zstd<R: BufRead>(reader: R, size: u64) -> io::Result<Vec<u8>> {
    const MAX_PREALLOC: u64 = 64 << 20;
    let decoder = zstd::stream::read::Decoder::with_buffer(reader)?;
    let capacity = usize::try_from(size.min(MAX_PREALLOC)).unwrap_or(0);
    let mut out = Vec::with_capacity(capacity);
    decoder.take(size.saturating_add(1)).read_to_end(&mut out)?;
    Ok(out)
}
