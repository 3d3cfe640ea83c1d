//! [`S3Store`]: the store on S3-compatible object storage (SPEC §13),
//! behind the same seam as the directory store ([`StoreBackend`]), built
//! with the cargo feature `s3`. Many machines share one store with no lock
//! and no conditional request, so it works on every S3-compatible service
//! (AWS S3, MinIO, Garage, Ceph RGW, s3s).
//!
//! Rooms: `layout.rs` the keys, `cache.rs` the local content-addressed
//! cache, `gc.rs` gc and verify, `marker.rs` the store format marker,
//! `read.rs` blob reads (packs, ranged downloads, the cache), this file
//! open, record resolution and commit.
//!
//! A save (see `backend.rs` for the writer side): the writer spools each
//! large blob into the local cache while hashing it; at commit each large
//! blob is looked up by digest (HEAD `blobs/<2 hex>/<digest>`) and uploaded
//! only if absent — a single PUT below [`MULTIPART_MIN`], otherwise a
//! multipart upload from the cache file, journalled first in
//! `uploads/<ULID>.json` so gc can abort it if the writer dies — and the
//! batch's small blobs go up together as one `packs/<id>` object. Only then
//! are the records written, each an immutable object under
//! `records/<fan>/<escaped name>/<inverted ULID>.json`, so the first key of a
//! name's prefix is its newest record and a read of one name lists only
//! that prefix.
//!
//! Invariants:
//! - **No dangling records**: every blob a record names was uploaded (or
//!   found by HEAD, and refreshed if old, see gc safety) before the record
//!   is put.
//! - **Atomic batches**: a batch of one artifact commits with its record
//!   PUT. A batch of several names carries a batch id in each record (and
//!   in its key) and commits with one last PUT of `batches/<id>`, which
//!   also bundles the batch's records; a reader ignores a record whose
//!   batch marker does not exist (a batch still being written, or one
//!   whose writer died), and finds the name's previous record instead.
//!
//! Many reads (`get_many`, `records`) are few requests: the names' keys
//! come from one listing of every record when the store is small enough
//! for that to be cheaper than a listing per name, the records of a batch
//! from its bundle (one GET for all of them), and a pack's wanted ranges
//! in one coalesced ranged GET.
//! - **gc safety**: gc never deletes an object younger than its grace
//!   period ([`DEFAULT_S3_GC_GRACE`], 1 hour). A save reusing a blob or pack
//!   older than half the grace period refreshes it (a server-side copy onto
//!   itself, which resets its modification time) before writing its record;
//!   gc re-reads a candidate's modification time right before deleting it.
//! - **Reads re-hash**: [`Verify::Hash`] hashes the bytes it serves: a
//!   small blob's range as it arrives, a large blob's cached copy if the
//!   cache has one (a copy that fails is dropped), else the object as it
//!   downloads in ranges into the cache (renamed in only if it matched);
//!   [`Verify::None`] (`load_mapped`) maps the cached copy as it is,
//!   downloading (and hashing) it first if absent.
//!
//! Decision: a verified read of a cached large blob re-hashes the local
//! copy rather than downloading it again: the bytes served are checked
//! against the digest either way, and a second load on the same machine
//! runs at local speed. Damage to the store's own object is what
//! `stowage verify` (which always reads the store) reports.
//! Decision: cache files are not fsynced: the store holds the durable
//! copy. After a power loss a cached file may be damaged; a verified read
//! finds that and downloads again, a mapped read is unverified by
//! contract (as on the local store).
//!
//! Decision: small blobs are deduplicated against the packs this instance
//! wrote or read in its lifetime (an in-memory map); across processes a
//! small blob may be stored in two packs. HEAD per small blob would cost a
//! request each, which the pack exists to avoid.
//! Decision: errors of the object store become [`StoreError::Io`] naming
//! the object's URL (`s3://bucket/prefix/key`), on one line; a missing blob
//! object is [`StoreError::MissingBlob`] naming that URL.
//! Decision: network faults are retried by the client with exponential
//! backoff; the product default is [`DEFAULT_RETRIES`] retries within
//! [`DEFAULT_RETRY_TIMEOUT`] per request, set by [`S3Options::retries`].
//! Decision: the store is read-only only when opened so
//! ([`S3Options::read_only`]); a credential without write permission
//! reads normally and its writes fail with the server's refusal.
//! Decision: the object store's async client runs on a private tokio
//! runtime of two worker threads owned by the store; every seam call
//! blocks on it, so a store must not be used from inside another tokio
//! runtime's worker.

mod cache;
mod gc;
pub(crate) mod layout;
mod marker;
mod read;
#[cfg(test)]
mod tests;
#[cfg(test)]
pub(crate) mod testserver;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures_util::stream::{self, StreamExt, TryStreamExt};
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::list::{PaginatedListOptions, PaginatedListStore as _};
use object_store::multipart::MultipartStore;
use object_store::path::Path as ObjectPath;
use object_store::{
    BackoffConfig, ClientOptions, ObjectStore, ObjectStoreExt, PutPayload, RetryConfig,
};
use serde_json::Value;

use super::backend::{Records, StoreBackend};
use super::error::{IoContext, StoreError};
use super::gc::{GcReport, VerifyReport};
use super::location::{
    default_cache_dir, S3Options, S3Url, DEFAULT_CACHE_MAX_MB, DEFAULT_RETRIES,
    DEFAULT_RETRY_TIMEOUT, DEFAULT_S3_GC_GRACE,
};
use super::record::{
    rfc3339_utc, BlobLocation, BlobRecord, PackLoc, Record, UnreadableRecord, RECORD_FORMAT_VERSION,
};
use super::writer::{Body, PendingArtifact, Spool};
use super::{BlobData, Listed, Verify};
use cache::Cache;

/// Large blobs of at least this size are uploaded in parts.
pub const MULTIPART_MIN: u64 = 16 << 20;
/// The size of every part but the last of a multipart upload.
pub const PART_SIZE: u64 = 8 << 20;
/// Requests one commit or listing keeps in flight.
const CONCURRENCY: usize = 16;
/// Parts of one multipart upload in flight.
const UPLOADS: usize = 8;
/// Keys one listing request returns (S3's page size).
const LISTING_PAGE: usize = 1000;
/// The most keys one listing request asks for (S3 returns at most
/// [`LISTING_PAGE`]).
const MAX_KEYS_ASKED: usize = 100_000;
/// Every name's record keys, newest first, with each key's metadata.
type NameKeys = BTreeMap<String, Vec<(String, object_store::ObjectMeta)>>;
/// Names one `get_many` resolves at once (a listing and a record read
/// each). High because a lookup mostly waits: on s3s-fs, 32 at once gave
/// 666 names/s, 128 gave 1,593/s, 512 gave 1,773/s (5,000 names).
const LOOKUPS: usize = 128;

/// What a record object holds.
enum Stored {
    /// A record, with the batch it belongs to (if one of several).
    Put(Box<Record>, Option<u128>),
    /// A tombstone: the name was removed.
    Removed,
}

/// One name's resolved state.
enum Resolved {
    Live(Box<Record>),
    Unreadable(UnreadableRecord),
    Absent,
}

/// The S3 store; see the module docs.
pub struct S3Store {
    url: S3Url,
    /// The prefix as object_store spells it in listed paths.
    listed_prefix: String,
    location: PathBuf,
    client: Arc<AmazonS3>,
    rt: tokio::runtime::Runtime,
    cache: Cache,
    spool: Spool,
    read_only: bool,
    grace: Duration,
    /// Small blobs this instance packed or read: digest → location.
    packed: Mutex<HashMap<String, BlobLocation>>,
    /// Batch markers known to exist.
    batches: Mutex<HashSet<u128>>,
    /// The store format marker, read once (`marker.rs`).
    format: marker::FormatCheck,
}

impl std::fmt::Debug for S3Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Store")
            .field("url", &self.url.display())
            .field("read_only", &self.read_only)
            .finish_non_exhaustive()
    }
}

/// One line of an object-store error.
fn one_line(e: &dyn std::fmt::Display) -> String {
    e.to_string().replace(['\n', '\r'], " ")
}

impl S3Store {
    /// Opens the store at `url` (`s3://bucket/prefix`). Nothing is read or
    /// written on the server until the first operation.
    pub fn open(url: &str, options: &S3Options) -> Result<S3Store, StoreError> {
        let parsed =
            S3Url::parse(url).map_err(|reason| StoreError::io(url, io::Error::other(reason)))?;
        let location = PathBuf::from(parsed.display());
        let cache_dir = options.cache.clone().unwrap_or_else(default_cache_dir);
        let cache_max_mb = options.cache_max_mb.unwrap_or(DEFAULT_CACHE_MAX_MB);
        let cache = Cache::open(&cache_dir, cache_max_mb.saturating_mul(1 << 20))?;
        // rustls has no default provider without aws-lc; install ring's
        // (an error means one is installed already).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let (retries, timeout) = options
            .retries
            .unwrap_or((DEFAULT_RETRIES, DEFAULT_RETRY_TIMEOUT));
        let retry = RetryConfig {
            backoff: BackoffConfig {
                init_backoff: Duration::from_millis(100),
                max_backoff: Duration::from_secs(5),
                base: 2.0,
            },
            max_retries: retries,
            retry_timeout: timeout,
        };
        let mut builder = AmazonS3Builder::from_env()
            .with_bucket_name(&parsed.bucket)
            .with_retry(retry)
            .with_client_options(
                ClientOptions::new()
                    .with_connect_timeout(Duration::from_secs(5))
                    .with_timeout(Duration::from_secs(300)),
            );
        if let Some(endpoint) = &options.endpoint {
            builder = builder.with_endpoint(endpoint);
        }
        if let Some((key, secret)) = &options.credentials {
            builder = builder
                .with_access_key_id(key)
                .with_secret_access_key(secret);
        }
        if let Some(region) = &options.region {
            builder = builder.with_region(region);
        }
        let endpoint_is_http = options
            .endpoint
            .clone()
            .or_else(|| std::env::var("AWS_ENDPOINT_URL").ok())
            .is_some_and(|e| e.starts_with("http://"));
        if let Some(allow) = options.allow_http {
            builder = builder.with_allow_http(allow);
        } else if endpoint_is_http {
            builder = builder.with_allow_http(true);
        }
        let client = builder
            .build()
            .map_err(|e| StoreError::io(&location, io::Error::other(one_line(&e))))?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("stowage-s3")
            .enable_all()
            .build()
            .at(&location)?;
        let store_id = Arc::new(location.clone());
        let instance = format!("{}-{:x}", std::process::id(), layout::new_ulid() as u64);
        let listed_prefix = ObjectPath::from(parsed.prefix.as_str()).as_ref().to_owned();
        Ok(S3Store {
            listed_prefix,
            spool: Spool::new(cache.tmp_dir(), instance, store_id),
            url: parsed,
            location,
            client: Arc::new(client),
            rt,
            cache,
            read_only: options.read_only,
            grace: options.gc_grace.unwrap_or(DEFAULT_S3_GC_GRACE),
            packed: Mutex::new(HashMap::new()),
            batches: Mutex::new(HashSet::new()),
            format: marker::FormatCheck::new(),
        })
    }

    /// The store's URL.
    pub fn url(&self) -> String {
        self.url.display()
    }

    // ---- keys and errors ----

    fn path(&self, key: &str) -> ObjectPath {
        if self.url.prefix.is_empty() {
            ObjectPath::from(key)
        } else {
            ObjectPath::from(format!("{}/{key}", self.url.prefix))
        }
    }

    /// The key relative to the store prefix of a listed object.
    fn relative<'a>(&self, path: &'a ObjectPath) -> &'a str {
        let full: &str = path.as_ref();
        if self.listed_prefix.is_empty() {
            full
        } else {
            full.strip_prefix(self.listed_prefix.as_str())
                .and_then(|r| r.strip_prefix('/'))
                .unwrap_or(full)
        }
    }

    /// `s3://bucket/prefix/key`, for messages.
    fn key_url(&self, key: &str) -> PathBuf {
        PathBuf::from(format!("{}/{key}", self.url.display()))
    }

    fn err(&self, key: &str, e: object_store::Error) -> StoreError {
        StoreError::io(self.key_url(key), io::Error::other(one_line(&e)))
    }

    fn block_on<F: std::future::Future>(&self, fut: F) -> F::Output {
        self.rt.block_on(fut)
    }

    // ---- small requests ----

    async fn head(&self, key: &str) -> Result<Option<object_store::ObjectMeta>, StoreError> {
        match self.client.head(&self.path(key)).await {
            Ok(meta) => Ok(Some(meta)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.err(key, e)),
        }
    }

    async fn put(&self, key: &str, bytes: impl Into<PutPayload>) -> Result<(), StoreError> {
        self.client
            .put(&self.path(key), bytes.into())
            .await
            .map(|_| ())
            .map_err(|e| self.err(key, e))
    }

    async fn get_bytes(&self, key: &str) -> Result<Option<Bytes>, StoreError> {
        let got = match self.client.get(&self.path(key)).await {
            Ok(got) => got,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(self.err(key, e)),
        };
        got.bytes().await.map(Some).map_err(|e| self.err(key, e))
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        match self.client.delete(&self.path(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.err(key, e)),
        }
    }

    /// Every object under `prefix` (relative keys with their metadata).
    async fn list(
        &self,
        prefix: &str,
    ) -> Result<Vec<(String, object_store::ObjectMeta)>, StoreError> {
        let path = self.path(prefix.trim_end_matches('/'));
        let metas: Vec<object_store::ObjectMeta> = self
            .client
            .list(Some(&path))
            .try_collect()
            .await
            .map_err(|e| self.err(prefix, e))?;
        Ok(metas
            .into_iter()
            .map(|m| (self.relative(&m.location).to_owned(), m))
            .collect())
    }

    /// Resets the modification time of `key` with a server-side copy onto
    /// itself, so a concurrent gc sees it young.
    async fn refresh(&self, key: &str) -> Result<(), StoreError> {
        let path = self.path(key);
        if self.client.copy(&path, &path).await.is_ok() {
            return Ok(());
        }
        // Some services refuse a copy onto itself without new metadata:
        // copy away and back.
        let aside = format!("{key}.refresh-{:032x}", layout::new_ulid());
        let aside_path = self.path(&aside);
        self.client
            .copy(&path, &aside_path)
            .await
            .map_err(|e| self.err(key, e))?;
        let back = self.client.copy(&aside_path, &path).await;
        self.delete(&aside).await?;
        back.map_err(|e| self.err(key, e))
    }

    fn is_old(&self, meta: &object_store::ObjectMeta, age: Duration) -> bool {
        let modified = SystemTime::from(meta.last_modified);
        SystemTime::now()
            .duration_since(modified)
            .is_ok_and(|elapsed| elapsed >= age)
    }

    // ---- records ----

    /// Parses a record object stored under `name`'s prefix.
    fn parse_stored(name: &str, bytes: &[u8]) -> Result<Stored, UnreadableRecord> {
        let bad = |reason: String| UnreadableRecord {
            name: name.to_owned(),
            reason,
            offset: 0,
        };
        let value: Value =
            serde_json::from_slice(bytes).map_err(|e| bad(format!("not JSON: {e}")))?;
        let Value::Object(mut obj) = value else {
            return Err(bad("not a JSON object".into()));
        };
        if obj.contains_key("remove") {
            return Ok(Stored::Removed);
        }
        let batch = match obj.get("batch") {
            None => None,
            Some(v) => Some(
                v.as_str()
                    .and_then(|s| u128::from_str_radix(s, 16).ok())
                    .ok_or_else(|| bad("batch is not a hex id".into()))?,
            ),
        };
        let Some(put) = obj.remove("put") else {
            return Err(bad("neither put nor remove".into()));
        };
        let record = Record::from_log_json(put).map_err(|u| bad(u.reason))?;
        if record.name != name {
            return Err(bad(format!(
                "record names {:?} but is stored under {name:?}",
                record.name
            )));
        }
        Ok(Stored::Put(Box::new(record), batch))
    }

    async fn batch_committed(&self, id: u128) -> Result<bool, StoreError> {
        if self
            .batches
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(&id)
        {
            return Ok(true);
        }
        let found = self.head(&layout::batch_key(id)).await?.is_some();
        if found {
            self.batches
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(id);
        }
        Ok(found)
    }

    /// The current state of `name` from its record keys, newest first.
    async fn resolve_keys(&self, name: &str, keys: &[String]) -> Result<Resolved, StoreError> {
        for key in keys {
            if let Some(batch) = layout::record_key_batch(key) {
                if !self.batch_committed(batch).await? {
                    continue; // a batch still being written, or abandoned
                }
            }
            let Some(bytes) = self.get_bytes(key).await? else {
                continue; // deleted by gc since the listing
            };
            match Self::parse_stored(name, &bytes) {
                Err(bad) => return Ok(Resolved::Unreadable(bad)),
                Ok(Stored::Removed) => return Ok(Resolved::Absent),
                Ok(Stored::Put(record, Some(batch))) => {
                    if self.batch_committed(batch).await? {
                        self.learn(&record);
                        return Ok(Resolved::Live(record));
                    }
                }
                Ok(Stored::Put(record, None)) => {
                    self.learn(&record);
                    return Ok(Resolved::Live(record));
                }
            }
        }
        Ok(Resolved::Absent)
    }

    /// Remembers where `record`'s small blobs are, for dedup.
    fn learn(&self, record: &Record) {
        let mut packed = self.packed.lock().unwrap_or_else(PoisonError::into_inner);
        for blob in &record.blobs {
            if matches!(blob.location, BlobLocation::Pack(loc) if loc.len > 0) {
                packed.entry(blob.digest.clone()).or_insert(blob.location);
            }
        }
    }

    /// Record keys of one name, newest first. A delimited listing: the
    /// name's prefix holds no deeper keys, and some servers (s3s-fs) walk
    /// only the prefix's path for a delimited listing but the whole bucket
    /// for an undelimited one.
    async fn name_keys(&self, name: &str) -> Result<Vec<String>, StoreError> {
        let prefix = layout::record_prefix(name);
        let path = self.path(prefix.trim_end_matches('/'));
        let listed = self
            .client
            .list_with_delimiter(Some(&path))
            .await
            .map_err(|e| self.err(&prefix, e))?;
        let mut keys: Vec<String> = listed
            .objects
            .iter()
            .map(|m| self.relative(&m.location).to_owned())
            .filter(|key| key.ends_with(".json"))
            .collect();
        keys.sort();
        Ok(keys)
    }

    async fn resolve(&self, name: &str) -> Result<Resolved, StoreError> {
        let keys = self.name_keys(name).await?;
        self.resolve_keys(name, &keys).await
    }

    /// The live record of `name`, or why there is none.
    async fn live(&self, name: &str) -> Result<Record, StoreError> {
        live_record(name, self.resolve(name).await?)
    }

    /// The live records of `names`. Their keys come from one listing of
    /// every record when the store turns out small enough (at most
    /// [`LISTING_PAGE`] keys per [`LOOKUPS`] names: listing pages come one
    /// after another, lookups [`LOOKUPS`] at a time), otherwise from one
    /// listing per name; then [`S3Store::resolve_listed`].
    async fn get_many_async(&self, names: &[&str]) -> Result<Vec<Record>, StoreError> {
        let budget = names.len() / LOOKUPS * LISTING_PAGE;
        let all = if budget > 0 {
            self.record_keys_within(budget).await?
        } else {
            None
        };
        let listed: Vec<(String, Vec<String>)> = match all {
            Some(all) => names
                .iter()
                .map(|&name| {
                    let keys = all
                        .get(name)
                        .map(|keys| keys.iter().map(|(key, _)| key.clone()).collect())
                        .unwrap_or_default();
                    (name.to_owned(), keys)
                })
                .collect(),
            None => {
                stream::iter(names.iter().map(|&name| async move {
                    Ok::<_, StoreError>((name.to_owned(), self.name_keys(name).await?))
                }))
                .buffered(LOOKUPS)
                .try_collect()
                .await?
            }
        };
        self.resolve_listed(listed)
            .await?
            .into_iter()
            .map(|(name, state)| live_record(&name, state))
            .collect()
    }

    /// Every name's record keys (newest first), with each key's metadata.
    async fn all_record_keys(&self) -> Result<NameKeys, StoreError> {
        Ok(self
            .record_keys_within(usize::MAX)
            .await?
            .unwrap_or_default())
    }

    /// [`S3Store::all_record_keys`] if the store holds at most `max_keys`
    /// record keys, else `None` (the listing stops there). Each listing
    /// request asks for every key still within `max_keys`: S3 returns at
    /// most 1,000 a page whatever is asked, a server that allows more
    /// (s3s-fs, which walks the whole bucket for every page) answers in
    /// fewer pages.
    async fn record_keys_within(&self, max_keys: usize) -> Result<Option<NameKeys>, StoreError> {
        let mut names = NameKeys::new();
        let prefix = format!("{}/", self.path(layout::RECORDS).as_ref());
        let mut page_token = None;
        let mut metas = Vec::new();
        loop {
            let asked = max_keys.saturating_sub(metas.len()).saturating_add(1);
            let page = self
                .client
                .list_paginated(
                    Some(&prefix),
                    PaginatedListOptions {
                        max_keys: Some(asked.min(MAX_KEYS_ASKED)),
                        page_token,
                        ..PaginatedListOptions::default()
                    },
                )
                .await
                .map_err(|e| self.err(layout::RECORDS, e))?;
            metas.extend(page.result.objects);
            if metas.len() > max_keys {
                return Ok(None);
            }
            page_token = page.page_token;
            if page_token.is_none() {
                break;
            }
        }
        for meta in metas {
            let key = self.relative(&meta.location).to_owned();
            let mut parts = key.split('/');
            let (Some(_), Some(fan), Some(segment), Some(file), None) = (
                parts.next(),
                parts.next(),
                parts.next(),
                parts.next(),
                parts.next(),
            ) else {
                continue;
            };
            if layout::parse_record_key(file).is_none() {
                continue;
            }
            let Some(name) = layout::unescape_name(segment) else {
                continue;
            };
            if layout::record_fan(&name) != fan {
                continue;
            }
            names.entry(name).or_default().push((key, meta));
        }
        for keys in names.values_mut() {
            keys.sort_by(|a, b| a.0.cmp(&b.0));
        }
        Ok(Some(names))
    }

    /// Every name's resolved state, in name order.
    async fn resolve_all(&self) -> Result<Vec<(String, Resolved)>, StoreError> {
        let listed = self
            .all_record_keys()
            .await?
            .into_iter()
            .map(|(name, keys)| (name, keys.into_iter().map(|(key, _)| key).collect()))
            .collect();
        self.resolve_listed(listed).await
    }

    /// The states of names from their record keys (newest first). Where
    /// the newest records of two or more of them belong to one batch, they
    /// are read from that batch's bundle with one request (its existence
    /// also proves the batch committed); every other name is read as
    /// [`S3Store::resolve_keys`] reads it.
    async fn resolve_listed(
        &self,
        listed: Vec<(String, Vec<String>)>,
    ) -> Result<Vec<(String, Resolved)>, StoreError> {
        let mut per_batch: HashMap<u128, usize> = HashMap::new();
        for (_, keys) in &listed {
            if let Some(batch) = keys.first().and_then(|key| layout::record_key_batch(key)) {
                *per_batch.entry(batch).or_default() += 1;
            }
        }
        let bundles: HashMap<u128, Option<Bytes>> =
            stream::iter(per_batch.into_iter().filter(|&(_, names)| names >= 2).map(
                |(batch, _)| async move {
                    let bytes = self.get_bytes(&layout::batch_key(batch)).await?;
                    Ok::<_, StoreError>((batch, bytes))
                },
            ))
            .buffer_unordered(CONCURRENCY)
            .try_collect()
            .await?;
        let bundles: HashMap<u128, HashMap<&str, &[u8]>> = bundles
            .iter()
            .filter_map(|(&batch, bytes)| Some((batch, layout::bundle_records(bytes.as_ref()?)?)))
            .collect();
        let bundles = &bundles;
        stream::iter(listed.into_iter().map(|(name, keys)| async move {
            let newest_in_bundle = keys
                .first()
                .and_then(|key| layout::record_key_batch(key))
                .and_then(|batch| {
                    let object = bundles
                        .get(&batch)?
                        .get(layout::escape_name(&name).as_str())?;
                    Some((batch, *object))
                });
            let state = match newest_in_bundle {
                Some((batch, object)) => match Self::parse_stored(&name, object) {
                    Err(bad) => Resolved::Unreadable(bad),
                    Ok(Stored::Removed) => Resolved::Absent,
                    Ok(Stored::Put(record, _)) => {
                        self.batches
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .insert(batch);
                        self.learn(&record);
                        Resolved::Live(record)
                    }
                },
                None => self.resolve_keys(&name, &keys).await?,
            };
            Ok::<_, StoreError>((name, state))
        }))
        .buffered(LOOKUPS)
        .try_collect()
        .await
    }

    fn stored_put(record: &Record, batch: Option<u128>) -> Vec<u8> {
        let mut out = Vec::with_capacity(512);
        out.extend_from_slice(b"{\"put\":");
        record.write_log_json(&mut out);
        if let Some(batch) = batch {
            out.extend_from_slice(format!(",\"batch\":\"{batch:032x}\"").as_bytes());
        }
        out.push(b'}');
        out
    }

    // ---- commit ----

    async fn commit_async(&self, batch: Vec<PendingArtifact>) -> Result<Vec<Record>, StoreError> {
        self.check_writable()?;
        for artifact in &batch {
            if *artifact.store_dir != self.location {
                return Err(StoreError::ForeignPending {
                    name: artifact.name.clone(),
                    written_for: artifact.store_dir.to_path_buf(),
                    store: self.location.clone(),
                });
            }
        }
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        // The later artifact of a repeated name wins.
        let mut last_of: HashMap<&str, usize> = HashMap::new();
        for (i, artifact) in batch.iter().enumerate() {
            last_of.insert(artifact.name.as_str(), i);
        }
        let kept: Vec<bool> = batch
            .iter()
            .enumerate()
            .map(|(i, a)| last_of.get(a.name.as_str()) == Some(&i))
            .collect();

        let pack_id = loop {
            let id = layout::new_ulid() as u64;
            if id != 0 {
                break id;
            }
        };
        let mut pack: Vec<u8> = Vec::new();
        let mut in_pack: HashMap<String, BlobLocation> = HashMap::new();
        let mut reused_packs: HashSet<u64> = HashSet::new();
        let mut large: Vec<(String, bool, PathBuf, u64)> = Vec::new();
        let mut locations: Vec<Vec<BlobLocation>> = Vec::with_capacity(batch.len());
        let mut batch = batch;
        for (artifact, keep) in batch.iter_mut().zip(&kept) {
            let mut locs = Vec::with_capacity(artifact.blobs.len());
            for blob in artifact.blobs.iter_mut() {
                let digest = blob.digest.to_hex().to_string();
                let body = std::mem::replace(
                    &mut blob.body,
                    Body::Inline {
                        stored: Vec::new(),
                        zstd: false,
                    },
                );
                let loc = match body {
                    Body::Inline { stored, .. } if stored.is_empty() => {
                        BlobLocation::Pack(PackLoc {
                            pack: 0,
                            offset: 0,
                            len: 0,
                            zstd: false,
                        })
                    }
                    Body::Inline { stored, zstd } => {
                        if let Some(loc) = in_pack.get(&digest) {
                            *loc
                        } else {
                            let known = self
                                .packed
                                .lock()
                                .unwrap_or_else(PoisonError::into_inner)
                                .get(&digest)
                                .copied();
                            match known {
                                Some(loc @ BlobLocation::Pack(existing)) if *keep => {
                                    reused_packs.insert(existing.pack);
                                    loc
                                }
                                _ => {
                                    let loc = BlobLocation::Pack(PackLoc {
                                        pack: pack_id,
                                        offset: pack.len() as u64,
                                        len: stored.len() as u64,
                                        zstd,
                                    });
                                    pack.extend_from_slice(&stored);
                                    in_pack.insert(digest.clone(), loc);
                                    loc
                                }
                            }
                        }
                    }
                    Body::Temp { temp, zstd } => {
                        let path = self.cache.adopt(temp, &digest, zstd)?;
                        if *keep && !large.iter().any(|(d, z, _, _)| *d == digest && *z == zstd) {
                            let len = std::fs::metadata(&path).at(&path)?.len();
                            large.push((digest.clone(), zstd, path, len));
                        }
                        if zstd {
                            BlobLocation::FileZstd
                        } else {
                            BlobLocation::File
                        }
                    }
                };
                locs.push(loc);
            }
            locations.push(locs);
        }

        // Large blobs: HEAD by digest, upload only if absent.
        let found: Vec<Option<(String, bool)>> =
            stream::iter(large.iter().map(|(digest, zstd, path, len)| async move {
                self.upload_if_absent(digest, *zstd, path, *len).await
            }))
            .buffer_unordered(4)
            .try_collect()
            .await?;
        // A blob found stored the other way keeps that location.
        let mut other_way: HashMap<String, bool> = HashMap::new();
        for (digest, zstd) in found.into_iter().flatten() {
            other_way.insert(digest, zstd);
        }
        if !pack.is_empty() {
            self.put(&layout::pack_key(pack_id), pack).await?;
        }
        for pack in reused_packs {
            self.refresh_if_old(&layout::pack_key(pack)).await?;
        }
        crate::store::failpoint::hit("before-index");

        let created = rfc3339_utc(SystemTime::now());
        let mut records = Vec::with_capacity(batch.len());
        for (artifact, locs) in batch.iter().zip(locations) {
            let blobs = artifact
                .blobs
                .iter()
                .zip(locs)
                .map(|(blob, loc)| {
                    let digest = blob.digest.to_hex().to_string();
                    let location = match (loc, other_way.get(&digest)) {
                        (BlobLocation::File | BlobLocation::FileZstd, Some(true)) => {
                            BlobLocation::FileZstd
                        }
                        (BlobLocation::File | BlobLocation::FileZstd, Some(false)) => {
                            BlobLocation::File
                        }
                        (loc, _) => loc,
                    };
                    BlobRecord {
                        name: blob.name.clone(),
                        size: blob.size,
                        digest,
                        storage: location.storage_name().to_owned(),
                        location,
                    }
                })
                .collect();
            records.push(Record {
                name: artifact.name.clone(),
                meta: artifact.meta.clone(),
                blobs,
                created: created.clone(),
                format_version: RECORD_FORMAT_VERSION,
            });
        }
        let live: Vec<&Record> = records
            .iter()
            .zip(&kept)
            .filter_map(|(r, k)| k.then_some(r))
            .collect();
        let batch_id = (live.len() > 1).then(layout::new_ulid);
        let objects: Vec<(&Record, Vec<u8>)> = live
            .iter()
            .map(|record| (*record, Self::stored_put(record, batch_id)))
            .collect();
        stream::iter(objects.iter().map(|(record, object)| async move {
            let key = layout::record_key(&record.name, layout::new_ulid(), batch_id);
            self.put(&key, object.clone()).await
        }))
        .buffer_unordered(CONCURRENCY)
        .try_collect::<Vec<()>>()
        .await?;
        crate::store::failpoint::hit("mid-index");
        if let Some(id) = batch_id {
            let bundle = layout::bundle(
                objects
                    .iter()
                    .map(|(record, object)| (record.name.as_str(), object.as_slice())),
                layout::BUNDLE_MAX,
            );
            self.put(&layout::batch_key(id), bundle).await?;
            self.batches
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(id);
        }
        crate::store::failpoint::hit("after-index");
        for record in &live {
            self.learn(record);
        }
        Ok(records)
    }

    async fn refresh_if_old(&self, key: &str) -> Result<(), StoreError> {
        if let Some(meta) = self.head(key).await? {
            if self.is_old(&meta, self.grace / 2) {
                self.refresh(key).await?;
            }
        }
        Ok(())
    }

    /// HEADs the blob by digest (both ways it may be stored) and uploads it
    /// from the cache file if absent. Returns how it is stored if it was
    /// found stored the other way.
    async fn upload_if_absent(
        &self,
        digest: &str,
        zstd: bool,
        path: &Path,
        len: u64,
    ) -> Result<Option<(String, bool)>, StoreError> {
        for (way, other) in [(zstd, false), (!zstd, true)] {
            let key = layout::blob_key(digest, way);
            if let Some(meta) = self.head(&key).await? {
                if self.is_old(&meta, self.grace / 2) {
                    self.refresh(&key).await?;
                }
                return Ok(other.then(|| (digest.to_owned(), way)));
            }
        }
        let key = layout::blob_key(digest, zstd);
        if len < MULTIPART_MIN {
            let bytes = std::fs::read(path).at(path)?;
            self.put(&key, bytes).await?;
        } else {
            self.multipart(&key, path, len).await?;
        }
        Ok(None)
    }

    /// Uploads `path` to `key` in parts, journalled in `uploads/`.
    async fn multipart(&self, key: &str, path: &Path, len: u64) -> Result<(), StoreError> {
        let object = self.path(key);
        let id = self
            .client
            .create_multipart(&object)
            .await
            .map_err(|e| self.err(key, e))?;
        let journal = layout::upload_key(layout::new_ulid());
        let entry = serde_json::json!({ "key": key, "upload_id": id });
        self.put(&journal, entry.to_string()).await?;
        let file = Arc::new(File::open(path).at(path)?);
        let parts = len.div_ceil(PART_SIZE);
        let result: Result<Vec<_>, StoreError> = stream::iter((0..parts).map(|i| {
            let file = Arc::clone(&file);
            let object = &object;
            let id = &id;
            async move {
                let start = i * PART_SIZE;
                let size = PART_SIZE.min(len - start);
                let mut buf = vec![0u8; usize::try_from(size).unwrap_or(0)];
                {
                    use std::os::unix::fs::FileExt as _;
                    file.read_exact_at(&mut buf, start).at(path)?;
                }
                let idx = usize::try_from(i).unwrap_or(usize::MAX);
                self.client
                    .put_part(object, id, idx, PutPayload::from(buf))
                    .await
                    .map_err(|e| self.err(key, e))
            }
        }))
        .buffered(UPLOADS)
        .try_collect()
        .await;
        match result {
            Ok(part_ids) => {
                self.client
                    .complete_multipart(&object, &id, part_ids)
                    .await
                    .map_err(|e| self.err(key, e))?;
                self.delete(&journal).await
            }
            Err(e) => {
                // Best effort; gc aborts it from the journal otherwise.
                if self.client.abort_multipart(&object, &id).await.is_ok() {
                    let _ = self.delete(&journal).await;
                }
                Err(e)
            }
        }
    }
}

/// A name's live record, or why there is none.
fn live_record(name: &str, state: Resolved) -> Result<Record, StoreError> {
    match state {
        Resolved::Live(record) => Ok(*record),
        Resolved::Unreadable(bad) => Err(StoreError::Unreadable {
            name: bad.name,
            reason: bad.reason,
        }),
        Resolved::Absent => Err(StoreError::NotFound {
            name: name.to_owned(),
        }),
    }
}

impl StoreBackend for S3Store {
    fn location(&self) -> &Path {
        &self.location
    }

    fn is_read_only(&self) -> bool {
        self.read_only
    }

    fn check_writable(&self) -> Result<(), StoreError> {
        if self.read_only {
            return Err(StoreError::ReadOnly {
                dir: self.location.clone(),
            });
        }
        Ok(())
    }

    fn spool(&self) -> &Spool {
        &self.spool
    }

    fn commit(&self, batch: Vec<PendingArtifact>) -> Result<Vec<Record>, StoreError> {
        self.check_format(!batch.is_empty())?;
        self.block_on(self.commit_async(batch))
    }

    fn remove(&self, name: &str) -> Result<Listed, StoreError> {
        self.check_writable()?;
        self.check_format(true)?;
        self.block_on(async {
            let removed = match self.resolve(name).await? {
                Resolved::Live(record) => Listed::Record(*record),
                Resolved::Unreadable(bad) => Listed::Unreadable(bad),
                Resolved::Absent => {
                    return Err(StoreError::NotFound {
                        name: name.to_owned(),
                    })
                }
            };
            let mut tombstone = b"{\"remove\":".to_vec();
            super::record::write_json_str(&mut tombstone, name);
            tombstone.push(b'}');
            self.put(
                &layout::record_key(name, layout::new_ulid(), None),
                tombstone,
            )
            .await?;
            Ok(removed)
        })
    }

    fn get(&self, name: &str) -> Result<Record, StoreError> {
        self.check_format(false)?;
        self.block_on(self.live(name))
    }

    fn get_many(&self, names: &[&str]) -> Result<Vec<Record>, StoreError> {
        self.check_format(false)?;
        self.block_on(self.get_many_async(names))
    }

    fn records(&self) -> Result<Records<'_>, StoreError> {
        self.check_format(false)?;
        let all = self.block_on(self.resolve_all())?;
        Ok(Box::new(all.into_iter().filter_map(
            |(_, state)| match state {
                Resolved::Live(record) => Some(Ok(*record)),
                Resolved::Unreadable(bad) => Some(Err(bad)),
                Resolved::Absent => None,
            },
        )))
    }

    fn read_blob(
        &self,
        record: &Record,
        blob: &BlobRecord,
        verify: Verify,
    ) -> Result<BlobData, StoreError> {
        self.check_format(false)?;
        self.block_on(self.read_blob_async(&record.name, blob, verify))
    }

    fn read_many(
        &self,
        records: &[Record],
        verify: Verify,
    ) -> Result<Vec<Vec<BlobData>>, StoreError> {
        self.check_format(false)?;
        self.block_on(self.read_many_async(records, verify))
    }

    fn gc(&self) -> Result<GcReport, StoreError> {
        self.gc_with_grace(self.grace)
    }

    fn verify(&self) -> Result<VerifyReport, StoreError> {
        self.verify_all()
    }

    fn blob_path(&self, blob: &BlobRecord) -> Option<PathBuf> {
        match blob.location {
            BlobLocation::File => Some(self.cache.path(&blob.digest, false)),
            BlobLocation::FileZstd | BlobLocation::Pack(_) => None,
        }
    }
}
