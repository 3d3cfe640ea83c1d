//! Blob reads of an [`S3Store`] (see the module docs of `mod.rs` for the
//! guarantees): a small blob from its pack's range (many at once: one
//! coalesced ranged read per pack), a large raw blob from the local cache
//! (re-hashed when the read is verified) or downloaded into it in ranges,
//! a zstd-stored large blob decoded into memory.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{self, Write as _};
use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::stream::{self, StreamExt, TryStreamExt};
use object_store::{ObjectStore, ObjectStoreExt};

use super::{layout, S3Store, CONCURRENCY};
use crate::store::error::{IoContext, StoreError};
use crate::store::record::{BlobLocation, BlobRecord, PackLoc, Record};
use crate::store::{BlobData, Verify};

/// A large blob is downloaded in ranges of this size…
const DOWNLOAD_CHUNK: u64 = 8 << 20;
/// …this many at a time (s3s-fs serves one stream at ~180 MB/s and eight
/// at ~400 MB/s; S3 serves each range from its own connection).
const DOWNLOADS: usize = 8;

impl S3Store {
    /// A failed fetch of `key` for `blob`: a missing object is
    /// [`StoreError::MissingBlob`], anything else the object store's error.
    fn fetch_error(
        &self,
        artifact: &str,
        blob: &BlobRecord,
        key: &str,
        e: object_store::Error,
    ) -> StoreError {
        match e {
            object_store::Error::NotFound { .. } => StoreError::MissingBlob {
                name: artifact.to_owned(),
                blob: blob.name.clone(),
                path: self.key_url(key),
            },
            e => self.err(key, e),
        }
    }

    /// A pack blob from the stored bytes of its range (`stored`, fetched
    /// from `key`): length, zstd frame and size checked, and the digest
    /// when `verify` says.
    fn pack_blob(
        &self,
        artifact: &str,
        blob: &BlobRecord,
        loc: PackLoc,
        stored: &[u8],
        verify: Verify,
    ) -> Result<BlobData, StoreError> {
        if loc.len == 0 {
            if blob.size != 0 {
                return Err(size_mismatch(artifact, blob, 0));
            }
            return Ok(BlobData::empty());
        }
        if stored.len() as u64 != loc.len {
            return Err(size_mismatch(artifact, blob, stored.len() as u64));
        }
        let data = if loc.zstd {
            crate::store::blob::decode_zstd(stored, blob.size).map_err(|source| {
                StoreError::Undecodable {
                    name: artifact.to_owned(),
                    blob: blob.name.clone(),
                    path: self.key_url(&layout::pack_key(loc.pack)),
                    source,
                }
            })?
        } else {
            stored.to_vec()
        };
        if data.len() as u64 != blob.size {
            return Err(size_mismatch(artifact, blob, data.len() as u64));
        }
        if verify == Verify::Hash {
            check_digest(artifact, blob, &data)?;
        }
        Ok(BlobData::Owned(Arc::new(data)))
    }

    /// The blobs of many records: first every pack's wanted ranges, one
    /// coalescing ranged read per pack, then each blob in record order
    /// (large blobs streamed a few at a time).
    pub(super) async fn read_many_async(
        &self,
        records: &[Record],
        verify: Verify,
    ) -> Result<Vec<Vec<BlobData>>, StoreError> {
        // Per pack: the first blob wanting it (to name in an error) and
        // every wanted range.
        type Wanted<'r> = ((&'r Record, &'r BlobRecord), Vec<Range<u64>>);
        let mut wanted: BTreeMap<u64, Wanted<'_>> = BTreeMap::new();
        for record in records {
            for blob in &record.blobs {
                if let BlobLocation::Pack(loc) = blob.location {
                    if loc.len > 0 {
                        let (_, ranges) = wanted
                            .entry(loc.pack)
                            .or_insert_with(|| ((record, blob), Vec::new()));
                        ranges.push(pack_range(loc));
                    }
                }
            }
        }
        let fetched: HashMap<u64, PackRanges> = stream::iter(wanted.into_iter().map(
            |(pack, (first, mut ranges))| async move {
                ranges.sort_unstable_by_key(|r| (r.start, r.end));
                ranges.dedup();
                let key = layout::pack_key(pack);
                match self.client.get_ranges(&self.path(&key), &ranges).await {
                    Ok(bytes) => Ok((pack, PackRanges { ranges, bytes })),
                    Err(e) => Err(self.fetch_error(&first.0.name, first.1, &key, e)),
                }
            },
        ))
        .buffer_unordered(CONCURRENCY)
        .try_collect()
        .await?;
        let blobs = records
            .iter()
            .flat_map(|record| record.blobs.iter().map(move |blob| (record, blob)));
        let fetched = &fetched;
        let flat: Vec<BlobData> = stream::iter(blobs.map(|(record, blob)| async move {
            match blob.location {
                BlobLocation::Pack(loc) => {
                    let stored = fetched
                        .get(&loc.pack)
                        .and_then(|pack| pack.get(&pack_range(loc)))
                        .map_or(&[][..], |bytes| &bytes[..]);
                    self.pack_blob(&record.name, blob, loc, stored, verify)
                }
                BlobLocation::File | BlobLocation::FileZstd => {
                    self.read_blob_async(&record.name, blob, verify).await
                }
            }
        }))
        .buffered(4)
        .try_collect()
        .await?;
        let mut flat = flat.into_iter();
        Ok(records
            .iter()
            .map(|record| flat.by_ref().take(record.blobs.len()).collect())
            .collect())
    }

    pub(super) async fn read_blob_async(
        &self,
        artifact: &str,
        blob: &BlobRecord,
        verify: Verify,
    ) -> Result<BlobData, StoreError> {
        match blob.location {
            BlobLocation::Pack(loc) if loc.len == 0 => {
                self.pack_blob(artifact, blob, loc, &[], verify)
            }
            BlobLocation::Pack(loc) => {
                let key = layout::pack_key(loc.pack);
                let stored = self
                    .client
                    .get_range(&self.path(&key), pack_range(loc))
                    .await
                    .map_err(|e| self.fetch_error(artifact, blob, &key, e))?;
                self.pack_blob(artifact, blob, loc, &stored, verify)
            }
            BlobLocation::File => {
                if let Some(data) = self.cache.map(&blob.digest, blob.size)? {
                    if verify == Verify::None || check_digest(artifact, blob, &data).is_ok() {
                        return Ok(data);
                    }
                    // Damaged on this disk since it was cached: dropped,
                    // and downloaded again.
                    self.cache.discard(&blob.digest)?;
                }
                self.download_raw(artifact, blob).await
            }
            BlobLocation::FileZstd => self.download_zstd(artifact, blob, verify).await,
        }
    }

    /// Re-hashes `blob` as the store holds it: a large raw blob is
    /// downloaded even if the cache has it (a verified read would hash the
    /// cached copy instead).
    pub(super) fn verify_blob(
        &self,
        record: &Record,
        blob: &BlobRecord,
    ) -> Result<BlobData, StoreError> {
        self.check_format(false)?;
        self.block_on(async {
            match blob.location {
                BlobLocation::File => self.download_raw(&record.name, blob).await,
                _ => self.read_blob_async(&record.name, blob, Verify::Hash).await,
            }
        })
    }

    /// Downloads a raw large blob into the cache in [`DOWNLOAD_CHUNK`]
    /// ranges, [`DOWNLOADS`] at a time, hashing them in order as they are
    /// written; renamed into the cache only if it hashed to its digest,
    /// then mapped from there.
    async fn download_raw(
        &self,
        artifact: &str,
        blob: &BlobRecord,
    ) -> Result<BlobData, StoreError> {
        let key = layout::blob_key(&blob.digest, false);
        let object = self.path(&key);
        let (mut file, temp) = self.spool.create_temp()?;
        let mut hasher = blake3::Hasher::new();
        let mut chunks = stream::iter((0..blob.size.div_ceil(DOWNLOAD_CHUNK)).map(|i| {
            let start = i * DOWNLOAD_CHUNK;
            let range = start..blob.size.min(start.saturating_add(DOWNLOAD_CHUNK));
            let object = &object;
            let key = &key;
            async move {
                let wanted = range.end - range.start;
                let bytes = self
                    .client
                    .get_range(object, range)
                    .await
                    .map_err(|e| self.fetch_error(artifact, blob, key, e))?;
                if bytes.len() as u64 != wanted {
                    return Err(size_mismatch(artifact, blob, start + bytes.len() as u64));
                }
                Ok(bytes)
            }
        }))
        .buffered(DOWNLOADS);
        while let Some(bytes) = chunks.next().await {
            let bytes = bytes?;
            hasher.update(&bytes);
            file.write_all(&bytes).at(temp.path())?;
        }
        let actual = hasher.finalize().to_hex();
        if actual.as_str() != blob.digest {
            return Err(corrupt(artifact, blob, actual.to_string()));
        }
        drop(file);
        let path = self.cache.adopt(temp, &blob.digest, false)?;
        self.cache
            .map(&blob.digest, blob.size)?
            .ok_or_else(|| StoreError::MissingBlob {
                name: artifact.to_owned(),
                blob: blob.name.clone(),
                path,
            })
    }

    /// Downloads a zstd-stored large blob (one frame) into a temp file and
    /// decodes it into memory.
    async fn download_zstd(
        &self,
        artifact: &str,
        blob: &BlobRecord,
        verify: Verify,
    ) -> Result<BlobData, StoreError> {
        let key = layout::blob_key(&blob.digest, true);
        let (file, temp) = self.spool.create_temp()?;
        let got = self
            .client
            .get(&self.path(&key))
            .await
            .map_err(|e| self.fetch_error(artifact, blob, &key, e))?;
        let mut out = io::BufWriter::with_capacity(1 << 20, file);
        let mut body = got.into_stream();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| self.err(&key, e))?;
            out.write_all(&chunk).at(temp.path())?;
        }
        out.flush().at(temp.path())?;
        drop(out);
        let reader = io::BufReader::new(File::open(temp.path()).at(temp.path())?);
        let data = crate::store::blob::decode_zstd(reader, blob.size).map_err(|source| {
            StoreError::Undecodable {
                name: artifact.to_owned(),
                blob: blob.name.clone(),
                path: self.key_url(&key),
                source,
            }
        })?;
        if data.len() as u64 != blob.size {
            return Err(size_mismatch(artifact, blob, data.len() as u64));
        }
        if verify == Verify::Hash {
            check_digest(artifact, blob, &data)?;
        }
        Ok(BlobData::Owned(Arc::new(data)))
    }
}

/// The byte range of a pack blob in its pack object.
fn pack_range(loc: PackLoc) -> Range<u64> {
    loc.offset..loc.offset.saturating_add(loc.len)
}

/// The wanted ranges of one pack (sorted, distinct) and their bytes.
struct PackRanges {
    ranges: Vec<Range<u64>>,
    bytes: Vec<Bytes>,
}

impl PackRanges {
    fn get(&self, range: &Range<u64>) -> Option<&Bytes> {
        let i = self
            .ranges
            .binary_search_by_key(&(range.start, range.end), |r| (r.start, r.end))
            .ok()?;
        self.bytes.get(i)
    }
}

fn size_mismatch(artifact: &str, blob: &BlobRecord, actual: u64) -> StoreError {
    StoreError::SizeMismatch {
        name: artifact.to_owned(),
        blob: blob.name.clone(),
        expected: blob.size,
        actual,
    }
}

fn corrupt(artifact: &str, blob: &BlobRecord, actual: String) -> StoreError {
    StoreError::Corrupt {
        name: artifact.to_owned(),
        blob: blob.name.clone(),
        expected: blob.digest.clone(),
        actual,
    }
}

fn check_digest(artifact: &str, blob: &BlobRecord, data: &[u8]) -> Result<(), StoreError> {
    let actual = blake3::hash(data).to_hex();
    if actual.as_str() != blob.digest {
        return Err(corrupt(artifact, blob, actual.to_string()));
    }
    Ok(())
}
