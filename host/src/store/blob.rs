//! Reading blobs: the bytes handed to readers ([`BlobData`]), the
//! [`Verify`] choice, and `DirStore::read_blob`, which finds a blob's bytes
//! by its record (own file, zstd file or pack range), checks the size and
//! re-hashes on [`Verify::Hash`].
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
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::ops::Deref;
use std::sync::Arc;

use memmap2::Mmap;

use super::error::IoContext;
use super::pack::{self, PackReadError};
use super::record::{BlobLocation, BlobRecord};
use super::{missing_or_io, sys, DirStore, StoreError, Tails, PACKS_DIR};

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

impl DirStore {
    /// Reads one blob; retries once with the current record of the same
    /// name if a packed blob's pack is gone (gc compaction in another
    /// process moved it).
    pub(super) fn read_blob_retrying(
        &self,
        artifact: &str,
        blob: &BlobRecord,
        verify: Verify,
    ) -> Result<BlobData, StoreError> {
        match self.read_blob(artifact, blob, verify) {
            Err(e @ StoreError::MissingBlob { .. })
                if matches!(blob.location, BlobLocation::Pack(_)) =>
            {
                self.refresh(Tails::Ignore)?;
                let moved = self.lookup_record(artifact).and_then(|r| {
                    r.blobs
                        .iter()
                        .find(|b| {
                            b.name == blob.name
                                && b.digest == blob.digest
                                && b.location != blob.location
                        })
                        .cloned()
                });
                match moved {
                    Some(moved) => self.read_blob(artifact, &moved, verify),
                    None => Err(e),
                }
            }
            other => other,
        }
    }

    fn read_blob(
        &self,
        artifact: &str,
        blob: &BlobRecord,
        verify: Verify,
    ) -> Result<BlobData, StoreError> {
        let size_mismatch = |actual: u64, expected: u64| StoreError::SizeMismatch {
            name: artifact.to_owned(),
            blob: blob.name.clone(),
            expected,
            actual,
        };
        let data = match blob.location {
            BlobLocation::File | BlobLocation::FileZstd => {
                let path = self.blob_path(blob);
                let file =
                    File::open(&path).map_err(|e| missing_or_io(artifact, &blob.name, &path, e))?;
                if blob.location == BlobLocation::FileZstd {
                    let bytes = decode_zstd(BufReader::new(file), blob.size).map_err(|source| {
                        StoreError::Undecodable {
                            name: artifact.to_owned(),
                            blob: blob.name.clone(),
                            path: path.clone(),
                            source,
                        }
                    })?;
                    BlobData::Owned(Arc::new(bytes))
                } else {
                    let len = file.metadata().at(&path)?.len();
                    if len != blob.size {
                        return Err(size_mismatch(len, blob.size));
                    }
                    if len == 0 {
                        BlobData::empty()
                    } else {
                        // SAFETY: a raw blob file is renamed into `blobs/`
                        // complete and never written again; gc unlinks it
                        // (sys.rs invariants).
                        let map = Arc::new(unsafe { sys::map_file(&file) }.at(&path)?);
                        let len = map.len();
                        MappedBytes::new(map, 0, len)
                            .map(BlobData::Mapped)
                            .ok_or_else(|| size_mismatch(len as u64, blob.size))?
                    }
                }
            }
            BlobLocation::Pack(loc) => {
                if loc.len == 0 {
                    BlobData::empty()
                } else {
                    let packs_dir = self.dir.join(PACKS_DIR);
                    let (map, start, len) =
                        self.packs.range(&packs_dir, &loc).map_err(|e| match e {
                            PackReadError::Missing(path) => StoreError::MissingBlob {
                                name: artifact.to_owned(),
                                blob: blob.name.clone(),
                                path,
                            },
                            PackReadError::Short { have } => {
                                size_mismatch(have.saturating_sub(loc.offset), loc.len)
                            }
                            PackReadError::Io(e) => e,
                        })?;
                    let mapped = MappedBytes::new(map, start, len)
                        .ok_or_else(|| size_mismatch(0, loc.len))?;
                    if loc.zstd {
                        let bytes = decode_zstd(&mapped[..], blob.size).map_err(|source| {
                            StoreError::Undecodable {
                                name: artifact.to_owned(),
                                blob: blob.name.clone(),
                                path: pack::pack_path(&packs_dir, loc.pack),
                                source,
                            }
                        })?;
                        BlobData::Owned(Arc::new(bytes))
                    } else {
                        BlobData::Mapped(mapped)
                    }
                }
            }
        };
        if data.len() as u64 != blob.size {
            return Err(size_mismatch(data.len() as u64, blob.size));
        }
        if verify == Verify::Hash {
            let actual = blake3::hash(&data).to_hex();
            if actual.as_str() != blob.digest {
                return Err(StoreError::Corrupt {
                    name: artifact.to_owned(),
                    blob: blob.name.clone(),
                    expected: blob.digest.clone(),
                    actual: actual.to_string(),
                });
            }
        }
        Ok(data)
    }
}
