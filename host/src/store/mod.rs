//! The artifact store: named artifacts, each a metadata [`Record`] plus
//! named, content-addressed (blake3) blobs, in one local directory.
//!
//! The store knows nothing about plugins or the ABI; the host's dispatch
//! layer calls it. A save is [`Store::writer`] → [`ArtifactWriter::begin_blob`]
//! / [`ArtifactWriter::write`] … → [`ArtifactWriter::finish`] →
//! [`Store::commit`] (many artifacts per batch); a load is [`Store::get`] →
//! [`Store::read_blobs`].
//!
//! On-disk layout of a store directory:
//!
//! ```text
//! lock                      flock target: commits, removals, gc, open's recovery
//! index.log                 append-only framed log of record batches (index.rs)
//! packs/00000001.pack       small blobs, appended at commit (pack.rs)
//! blobs/ab/<digest>         a large raw blob, uncompressed, mappable
//! blobs/ab/<digest>.zst     a large compressible blob, one zstd frame
//! tmp/<instance>-<n>.tmp    large blobs being written, renamed at commit
//! ```
//!
//! Invariants:
//! - Crash atomicity: an artifact becomes visible only through its index
//!   frame, which is appended (one write, one fsync) after every byte it
//!   references is durable: temp files fsynced, pack fsynced, renames done
//!   and their directories fsynced. A crash at any step leaves the old record
//!   (or none) or the new one; torn log tails are dropped on the next open
//!   or commit, leftover temp files and pack space by gc.
//! - One batch = one pack write + one pack fsync + one log append + one log
//!   fsync (plus one fsync per large blob and per touched blob directory).
//! - Concurrency: threads share a `Store` (`Send + Sync`); processes share the
//!   directory. Commits, removals, gc and open's recovery hold an in-process
//!   mutex plus an exclusive `flock` on `lock`, and first replay whatever
//!   other processes appended to the log. Reads never lock: `get`/`list`
//!   compare the log's length with the replayed offset (one `fstat`) and
//!   replay the new frames; blob bytes are immutable once referenced.
//! - gc safety: blobs of a save that is not committed yet are either in
//!   memory (small blobs, appended to a pack only under the lock) or in
//!   `tmp/` (large blobs, renamed into `blobs/` only under the lock, right
//!   before the index append). gc holds the same lock and deletes only
//!   (a) `blobs/` files and pack ranges no live record references — nothing
//!   uncommitted can be there while it holds the lock — and (b) temp files of
//!   *other* store instances older than the grace period
//!   ([`DEFAULT_GC_GRACE`], 10 min; [`Store::gc_with_grace`] for tests).
//!   Dedup against an existing file or pack range is decided under the lock
//!   too, so gc cannot delete a blob between the dedup check and the commit.
//!
//! Decision: raw blobs of at least [`RAW_FILE_THRESHOLD`] (64 KiB) get their
//! own file; everything smaller, and compressible blobs up to
//! [`PACK_BLOB_MAX`] (1 MiB), go to packs; compressible blobs of at least
//! [`COMPRESS_MIN`] (4 KiB) are zstd'd when that saves space (see
//! `writer.rs`). `storage` names: `raw`, `file+zstd`, `packed`,
//! `packed+zstd`.
//! Decision: an empty blob is recorded as `packed` at pack 0, offset 0,
//! `stored_size` 0 (pack 0 never exists) and takes no space.
//! Decision: all records of a batch share one `created` time, taken at
//! commit. Within one batch a repeated name keeps the later artifact.
//! Decision: a writer whose pending artifact stays uncommitted for longer
//! than the gc grace period may lose its temp files to a gc in *another*
//! process; its commit then fails with [`StoreError::MissingBlob`] and
//! commits nothing.
//! Decision: gc compacts a pack whose live bytes are under half its size by
//! copying them into the current pack and re-committing the affected
//! records (same name, meta and `created`) with new locations. A reader
//! holding a record from before that finds the old pack gone and
//! transparently re-reads the current record of the same name if its blob
//! digests match. gc never touches the highest-numbered pack.
//! Decision: Unix is the tested platform. Elsewhere directory fsyncs are
//! skipped, the lock is `File::lock` (Rust 1.89+), and gc may fail to
//! delete a file that a reader still has mapped.
//! Decision: damage a crash cannot explain (a bad log frame followed by
//! more data, a checksummed frame with an invalid record) makes `open` fail
//! rather than silently dropping the committed records after it.

mod blob;
mod error;
pub mod failpoint;
mod gc;
mod index;
mod input;
mod pack;
mod record;
mod sys;
mod writer;

#[cfg(test)]
mod tests;

use std::collections::{BTreeSet, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{SystemTime, UNIX_EPOCH};

pub use blob::{BlobData, MappedBytes, Verify};
pub use error::StoreError;
pub use failpoint::FAILPOINTS;
pub use gc::{GcReport, VerifyIssue, VerifyReport, DEFAULT_GC_GRACE};
pub use input::{map_input, open_input, spool_input, Input, InputError};
pub use pack::DEFAULT_PACK_LIMIT;
pub use record::{
    BlobLocation, BlobRecord, PackLoc, Record, RecordMeta, MAX_NAME_LEN, RECORD_FORMAT_VERSION,
    STORAGE_FILE_ZSTD, STORAGE_PACKED, STORAGE_PACKED_ZSTD, STORAGE_RAW,
};
pub use writer::{
    ArtifactWriter, BlobLayout, PendingArtifact, COMPRESS_MIN, PACK_BLOB_MAX, RAW_FILE_THRESHOLD,
    ZSTD_LEVEL,
};

use error::IoContext;
use index::{Entry, Index, Tail};
use pack::{PackCache, PackReadError, PackWriter};
use writer::{Body, TempFile};

const LOG_FILE: &str = "index.log";
const LOCK_FILE: &str = "lock";
const BLOBS_DIR: &str = "blobs";
const PACKS_DIR: &str = "packs";
const TMP_DIR: &str = "tmp";

/// Distinguishes store instances within one process (temp file names).
static INSTANCES: AtomicU64 = AtomicU64::new(0);

/// An open store directory; see the module docs. `Send + Sync`: share it
/// between threads by reference or `Arc`.
pub struct Store {
    dir: Arc<PathBuf>,
    /// `<pid>-<n>-<nanos>`: prefix of this instance's temp files.
    instance: String,
    temp_counter: AtomicU64,
    log_path: PathBuf,
    /// Read handle of the log, used only under the index write lock.
    log_read: File,
    /// Append handle of the log, used only under the store lock.
    log_append: File,
    lock_file: File,
    commit: Mutex<CommitState>,
    index: RwLock<Index>,
    packs: PackCache,
}

/// State used only under the store lock.
#[derive(Debug)]
struct CommitState {
    pack: Option<PackWriter>,
    pack_limit: u64,
}

/// Holds the in-process mutex and the `flock`; releases both on drop.
struct Locked<'a> {
    state: MutexGuard<'a, CommitState>,
    file: &'a File,
}

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        // Closing the descriptor would release it too; an unlock error
        // leaves nothing to repair.
        let _ = sys::unlock(self.file);
    }
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("dir", &self.dir)
            .field("instance", &self.instance)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Opens the store in `dir`, creating the layout if absent, and recovers
    /// from a crash: replays the log, truncates a torn tail and deletes
    /// other instances' temp files older than [`DEFAULT_GC_GRACE`].
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        fs::create_dir_all(dir).at(dir)?;
        let dir = dir.canonicalize().at(dir)?;
        let log_path = dir.join(LOG_FILE);
        let mut created = !log_path.exists();
        for sub in [BLOBS_DIR, PACKS_DIR, TMP_DIR] {
            let path = dir.join(sub);
            if !path.is_dir() {
                created = true;
                fs::create_dir_all(&path).at(&path)?;
            }
        }
        let lock_path = dir.join(LOCK_FILE);
        let lock_file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .at(&lock_path)?;
        let log_append = OpenOptions::new()
            .append(true)
            .create(true)
            .open(&log_path)
            .at(&log_path)?;
        let log_read = File::open(&log_path).at(&log_path)?;
        if created {
            sync_dir(&dir)?;
        }
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let instance = format!(
            "{}-{}-{nanos:x}",
            std::process::id(),
            INSTANCES.fetch_add(1, Ordering::Relaxed)
        );
        let store = Store {
            dir: Arc::new(dir),
            instance,
            temp_counter: AtomicU64::new(0),
            log_path,
            log_read,
            log_append,
            lock_file,
            commit: Mutex::new(CommitState {
                pack: None,
                pack_limit: DEFAULT_PACK_LIMIT,
            }),
            index: RwLock::new(Index::default()),
            packs: PackCache::default(),
        };
        {
            let _locked = store.lock()?;
            store.refresh(true)?;
            store.clean_temp(DEFAULT_GC_GRACE)?;
        }
        tracing::debug!(
            target: "stowage::store",
            dir = %store.dir.display(),
            records = store.index_read().records.len(),
            "store opened"
        );
        Ok(store)
    }

    /// The store directory (canonical).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Starts writing the artifact `name` (non-empty, at most 255 bytes, no
    /// `/`, no NUL, no leading `.`). Nothing is visible until
    /// [`Store::commit`].
    pub fn writer(&self, name: &str) -> Result<ArtifactWriter<'_>, StoreError> {
        record::validate_name(name).map_err(|reason| StoreError::InvalidName {
            name: name.to_owned(),
            reason,
        })?;
        Ok(ArtifactWriter::new(self, name.to_owned()))
    }

    /// Commits a batch all-or-nothing: one pack append and fsync for the
    /// small blobs, renames of the large ones, then one index append and
    /// fsync. Returns the new records, in batch order. A name already in
    /// the store keeps its old record until this returns.
    pub fn commit(&self, artifacts: Vec<PendingArtifact>) -> Result<Vec<Record>, StoreError> {
        if artifacts.is_empty() {
            return Ok(Vec::new());
        }
        for artifact in &artifacts {
            if !Arc::ptr_eq(&artifact.store_dir, &self.dir) && artifact.store_dir != self.dir {
                return Err(StoreError::ForeignPending {
                    name: artifact.name.clone(),
                    written_for: artifact.store_dir.to_path_buf(),
                    store: self.dir.to_path_buf(),
                });
            }
        }
        // Large blobs' data is made durable before taking the lock.
        for artifact in &artifacts {
            for blob in &artifact.blobs {
                if let Body::Temp { temp, .. } = &blob.body {
                    let file = OpenOptions::new()
                        .write(true)
                        .open(temp.path())
                        .map_err(|e| missing_or_io(&artifact.name, &blob.name, temp.path(), e))?;
                    file.sync_data().at(temp.path())?;
                }
            }
        }

        let mut locked = self.lock()?;
        self.refresh(true)?;
        let created = record::rfc3339_utc(SystemTime::now());
        let count = artifacts.len();

        // Plan: small blobs into one pack buffer (dedup against live pack
        // ranges and within the batch), large blobs to renames.
        let mut buf: Vec<u8> = Vec::new();
        let mut batch_dedup: HashMap<blake3::Hash, PackLoc> = HashMap::new();
        let mut patch: Vec<(usize, usize)> = Vec::new();
        let mut renames: Vec<Rename> = Vec::new();
        let mut records: Vec<Record> = Vec::with_capacity(count);
        {
            let index = self.index_read();
            for artifact in artifacts {
                let PendingArtifact {
                    name, meta, blobs, ..
                } = artifact;
                let mut blob_records = Vec::with_capacity(blobs.len());
                for blob in blobs {
                    let digest = blob.digest.to_hex().to_string();
                    let location = match blob.body {
                        Body::Inline { .. } if blob.size == 0 => BlobLocation::Pack(PackLoc {
                            pack: 0,
                            offset: 0,
                            len: 0,
                            zstd: false,
                        }),
                        Body::Inline { stored, zstd } => {
                            if let Some(loc) = index.dedup_lookup(&digest) {
                                BlobLocation::Pack(loc)
                            } else {
                                let loc = *batch_dedup.entry(blob.digest).or_insert_with(|| {
                                    let loc = PackLoc {
                                        pack: 0,
                                        offset: buf.len() as u64,
                                        len: stored.len() as u64,
                                        zstd,
                                    };
                                    buf.extend_from_slice(&stored);
                                    loc
                                });
                                patch.push((records.len(), blob_records.len()));
                                BlobLocation::Pack(loc)
                            }
                        }
                        Body::Temp { temp, zstd } => {
                            renames.push(Rename {
                                temp,
                                digest: digest.clone(),
                                zstd,
                                artifact: name.clone(),
                                blob: blob.name.clone(),
                            });
                            if zstd {
                                BlobLocation::FileZstd
                            } else {
                                BlobLocation::File
                            }
                        }
                    };
                    blob_records.push(BlobRecord {
                        name: blob.name,
                        size: blob.size,
                        digest,
                        storage: location.storage_name().to_owned(),
                        location,
                    });
                }
                records.push(Record {
                    name,
                    meta,
                    blobs: blob_records,
                    created: created.clone(),
                    format_version: RECORD_FORMAT_VERSION,
                });
            }
        }

        let packs_dir = self.dir.join(PACKS_DIR);
        if !buf.is_empty() {
            let limit = locked.state.pack_limit;
            let writer = PackWriter::select(&packs_dir, &mut locked.state.pack, limit, &|_| false)?;
            let (id, base) = (writer.id(), writer.len()?);
            for (r, b) in patch {
                if let BlobLocation::Pack(loc) = &mut records[r].blobs[b].location {
                    loc.pack = id;
                    loc.offset += base;
                }
            }
            writer.append(&buf)?;
            failpoint::hit("after-blob");
            writer.sync(&packs_dir)?;
        }
        failpoint::hit("after-blob-sync");

        let blobs_dir = self.dir.join(BLOBS_DIR);
        let mut touched_dirs = BTreeSet::new();
        let mut new_subdir = false;
        for mut rename in renames {
            let target = self.blob_file(&rename.digest, rename.zstd);
            let temp_len = fs::metadata(rename.temp.path())
                .map_err(|e| missing_or_io(&rename.artifact, &rename.blob, rename.temp.path(), e))?
                .len();
            if fs::metadata(&target).is_ok_and(|m| m.is_file() && m.len() == temp_len) {
                continue; // identical content is already stored; the temp is dropped
            }
            let parent = target.parent().unwrap_or(&blobs_dir).to_path_buf();
            if !parent.is_dir() {
                match fs::create_dir(&parent) {
                    Ok(()) => new_subdir = true,
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                    Err(e) => return Err(StoreError::io(parent, e)),
                }
            }
            failpoint::hit("before-rename");
            fs::rename(rename.temp.path(), &target).at(&target)?;
            rename.temp.disarm();
            touched_dirs.insert(parent);
        }
        for dir in &touched_dirs {
            sync_dir(dir)?;
        }
        if new_subdir {
            sync_dir(&blobs_dir)?;
        }
        failpoint::hit("before-index");

        let entry = Entry {
            put: records,
            ..Entry::default()
        };
        let (at, len) = self.append_entry(&entry, true)?;
        let records = entry.put.clone();
        self.apply_appended(at, len, entry);
        drop(locked);
        tracing::debug!(target: "stowage::store", artifacts = count, "batch committed");
        Ok(records)
    }

    /// The live record named `name`, or [`StoreError::NotFound`].
    pub fn get(&self, name: &str) -> Result<Record, StoreError> {
        self.refresh(false)?;
        self.index_read()
            .records
            .get(name)
            .cloned()
            .ok_or_else(|| StoreError::NotFound {
                name: name.to_owned(),
            })
    }

    /// All live records, sorted by name. If the log cannot be replayed
    /// (see [`Store::get`] for the error), the last good view is returned
    /// and the error logged.
    pub fn list(&self) -> Vec<Record> {
        if let Err(e) = self.refresh(false) {
            tracing::warn!(target: "stowage::store", error = %e, "listing a stale index");
        }
        self.index_read().records.values().cloned().collect()
    }

    /// Reads every blob of `record`, in record order.
    ///
    /// [`Verify::Hash`] re-hashes and refuses corrupt bytes
    /// ([`StoreError::Corrupt`]); [`Verify::None`] is unverified and O(1)
    /// for raw and uncompressed packed blobs (mappings). A missing file is
    /// [`StoreError::MissingBlob`].
    pub fn read_blobs(&self, record: &Record, verify: Verify) -> Result<Vec<BlobData>, StoreError> {
        record
            .blobs
            .iter()
            .map(|blob| self.read_blob_retrying(&record.name, blob, verify))
            .collect()
    }

    /// Removes the artifact `name` (appends a tombstone) and returns its
    /// last record. Its data stays until [`Store::gc`].
    pub fn remove(&self, name: &str) -> Result<Record, StoreError> {
        let _locked = self.lock()?;
        self.refresh(true)?;
        let record = self
            .index_read()
            .records
            .get(name)
            .cloned()
            .ok_or_else(|| StoreError::NotFound {
                name: name.to_owned(),
            })?;
        let entry = Entry {
            remove: vec![name.to_owned()],
            ..Entry::default()
        };
        let (at, len) = self.append_entry(&entry, false)?;
        self.apply_appended(at, len, entry);
        tracing::debug!(target: "stowage::store", name, "artifact removed");
        Ok(record)
    }

    /// The file holding `blob`: its own file for `raw`/`file+zstd`, the
    /// pack for packed blobs.
    pub fn blob_path(&self, blob: &BlobRecord) -> PathBuf {
        match blob.location {
            BlobLocation::File => self.blob_file(&blob.digest, false),
            BlobLocation::FileZstd => self.blob_file(&blob.digest, true),
            BlobLocation::Pack(loc) => pack::pack_path(&self.dir.join(PACKS_DIR), loc.pack),
        }
    }

    // ---- internals ----

    fn blob_file(&self, digest: &str, zstd: bool) -> PathBuf {
        let prefix = digest.get(..2).unwrap_or("00");
        let name = if zstd {
            format!("{digest}.zst")
        } else {
            digest.to_owned()
        };
        self.dir.join(BLOBS_DIR).join(prefix).join(name)
    }

    fn index_read(&self) -> RwLockReadGuard<'_, Index> {
        self.index.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn index_write(&self) -> RwLockWriteGuard<'_, Index> {
        self.index.write().unwrap_or_else(PoisonError::into_inner)
    }

    fn lock(&self) -> Result<Locked<'_>, StoreError> {
        let state = self.commit.lock().unwrap_or_else(PoisonError::into_inner);
        sys::lock_exclusive(&self.lock_file).at(self.dir.join(LOCK_FILE))?;
        Ok(Locked {
            state,
            file: &self.lock_file,
        })
    }

    /// Creates a new temp file for a large blob.
    pub(crate) fn create_temp(&self) -> Result<(File, TempFile), StoreError> {
        let n = self.temp_counter.fetch_add(1, Ordering::Relaxed);
        let path = self
            .dir
            .join(TMP_DIR)
            .join(format!("{}-{n}.tmp", self.instance));
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .at(&path)?;
        Ok((file, TempFile::new(path)))
    }

    /// Replays log frames appended since the last replay. With the store
    /// lock held (`locked`), also truncates a torn tail or reports damage.
    fn refresh(&self, locked: bool) -> Result<(), StoreError> {
        let len = self.log_read.metadata().at(&self.log_path)?.len();
        if self.index_read().offset == len {
            return Ok(());
        }
        let mut index = self.index_write();
        let offset = index.offset;
        if offset > len {
            return Err(StoreError::LogCorrupt {
                path: self.log_path.clone(),
                offset: len,
                reason: format!("log shrank below its replayed length {offset}"),
            });
        }
        let mut buf = Vec::new();
        let mut reader = &self.log_read;
        reader.seek(SeekFrom::Start(offset)).at(&self.log_path)?;
        reader.read_to_end(&mut buf).at(&self.log_path)?;
        let scan = index::scan(&buf, offset, &self.log_path)?;
        let mut dropped = Vec::new();
        for entry in scan.entries {
            dropped.extend(index.apply(entry));
        }
        index.offset = scan.end;
        drop(index);
        self.packs.forget(&dropped);
        if locked {
            match scan.tail {
                Tail::Clean => {}
                Tail::Incomplete | Tail::BadFrame { torn: true, .. } => {
                    tracing::warn!(
                        target: "stowage::store",
                        path = %self.log_path.display(),
                        offset = scan.end,
                        "dropping torn index tail"
                    );
                    self.log_append.set_len(scan.end).at(&self.log_path)?;
                    self.log_append.sync_data().at(&self.log_path)?;
                }
                Tail::BadFrame {
                    reason,
                    torn: false,
                } => {
                    return Err(StoreError::LogCorrupt {
                        path: self.log_path.clone(),
                        offset: scan.end,
                        reason,
                    });
                }
            }
        }
        Ok(())
    }

    /// Appends one frame (one write) and fsyncs it; returns its offset and
    /// length. Must be called under the store lock right after
    /// `refresh(true)`. Save-path failpoints fire only if `failpoints`.
    fn append_entry(&self, entry: &Entry, failpoints: bool) -> Result<(u64, u64), StoreError> {
        let payload = entry.to_payload();
        let frame = index::encode_frame(&payload).ok_or(StoreError::EntryTooLarge {
            bytes: payload.len(),
        })?;
        let at = self.log_append.metadata().at(&self.log_path)?.len();
        let mut log = &self.log_append;
        let written = (|| {
            if failpoints && failpoint::is_armed("mid-index") {
                log.write_all(&frame[..frame.len() / 2])?;
                failpoint::hit("mid-index");
            }
            log.write_all(&frame)
        })();
        if let Err(e) = written {
            // Best effort: do not leave a torn tail behind a failed append.
            let _ = self.log_append.set_len(at);
            return Err(StoreError::io(&self.log_path, e));
        }
        if failpoints {
            failpoint::hit("after-index");
        }
        self.log_append.sync_data().at(&self.log_path)?;
        Ok((at, frame.len() as u64))
    }

    /// Applies an entry this instance appended at `at`, unless a concurrent
    /// `refresh` already replayed it from the file.
    fn apply_appended(&self, at: u64, len: u64, entry: Entry) {
        let mut index = self.index_write();
        if index.offset == at {
            let dropped = index.apply(entry);
            index.offset = at + len;
            drop(index);
            self.packs.forget(&dropped);
        }
    }

    /// Reads one blob; retries once with the current record of the same
    /// name if a packed blob's pack is gone (gc compaction in another
    /// process moved it).
    fn read_blob_retrying(
        &self,
        artifact: &str,
        blob: &BlobRecord,
        verify: Verify,
    ) -> Result<BlobData, StoreError> {
        match self.read_blob(artifact, blob, verify) {
            Err(e @ StoreError::MissingBlob { .. })
                if matches!(blob.location, BlobLocation::Pack(_)) =>
            {
                self.refresh(false)?;
                let moved = self.index_read().records.get(artifact).and_then(|r| {
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
                    let bytes =
                        blob::decode_zstd(BufReader::new(file), blob.size).map_err(|source| {
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
                        let map = Arc::new(sys::map_file(&file).at(&path)?);
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
                        let bytes =
                            blob::decode_zstd(&mapped[..], blob.size).map_err(|source| {
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

    /// Deletes other instances' temp files older than `grace`; returns how
    /// many and their bytes.
    fn clean_temp(&self, grace: std::time::Duration) -> Result<(usize, u64), StoreError> {
        let tmp = self.dir.join(TMP_DIR);
        let own = format!("{}-", self.instance);
        let now = SystemTime::now();
        let (mut count, mut bytes) = (0, 0);
        for entry in fs::read_dir(&tmp).at(&tmp)? {
            let entry = entry.at(&tmp)?;
            let name = entry.file_name();
            if name.to_str().is_some_and(|n| n.starts_with(&own)) {
                continue;
            }
            let Ok(meta) = entry.metadata() else { continue };
            let age = meta
                .modified()
                .ok()
                .and_then(|m| now.duration_since(m).ok())
                .unwrap_or_default();
            if meta.is_file() && age >= grace {
                match fs::remove_file(entry.path()) {
                    Ok(()) => {
                        count += 1;
                        bytes += meta.len();
                    }
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(StoreError::io(entry.path(), e)),
                }
            }
        }
        Ok((count, bytes))
    }
}

/// A large blob's temp file waiting to be renamed into `blobs/`.
struct Rename {
    temp: TempFile,
    digest: String,
    zstd: bool,
    artifact: String,
    blob: String,
}

/// `MissingBlob` for a file that is gone, `Io` otherwise.
fn missing_or_io(artifact: &str, blob: &str, path: &Path, e: io::Error) -> StoreError {
    if e.kind() == io::ErrorKind::NotFound {
        StoreError::MissingBlob {
            name: artifact.to_owned(),
            blob: blob.to_owned(),
            path: path.to_path_buf(),
        }
    } else {
        StoreError::io(path, e)
    }
}

/// Makes a directory's entries (creations, renames) durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    #[cfg(unix)]
    {
        File::open(dir).and_then(|d| d.sync_all()).at(dir)
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(())
    }
}

/// Replays index-log bytes the way [`Store::open`] does and returns the
/// number of live records, for the `store_record` fuzz target. Not a
/// stable API.
#[doc(hidden)]
pub fn fuzz_replay_log(bytes: &[u8]) -> Result<usize, StoreError> {
    let scan = index::scan(bytes, 0, Path::new(LOG_FILE))?;
    let mut index = Index::default();
    for entry in scan.entries {
        index.apply(entry);
    }
    Ok(index.records.len())
}
