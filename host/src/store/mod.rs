//! The artifact store: named artifacts, each a metadata [`Record`] plus
//! named, content-addressed (blake3) blobs.
//!
//! The store knows nothing about plugins or the ABI; the host's dispatch
//! layer calls it through [`Store`], a handle around one
//! [`StoreBackend`] (the seam, `backend.rs`, with the guarantees every
//! backend keeps; `contract.rs` tests them). A save is
//! [`Store::writer`] → [`ArtifactWriter::begin_blob`] /
//! [`ArtifactWriter::write`] … → [`ArtifactWriter::finish`] →
//! [`Store::commit`] (many artifacts per batch); a load is [`Store::get`]
//! → [`Store::read_blobs`].
//!
//! Rooms: `backend.rs` the seam, `handle.rs` the handle, `writer.rs`
//! streaming blobs in, `commit.rs` making a batch visible, `blob.rs`
//! reading blobs, `gc.rs` gc and verify, `index.rs` the log, `pack.rs`
//! packs, `record.rs` records and name rules, `format.rs` the format
//! marker, `sys.rs` the only `unsafe` primitives, `input.rs` `put`'s input.
//!
//! The rest of this file is the first backend, [`DirStore`]: one local
//! directory.
//!
//! On-disk layout of a store directory:
//!
//! ```text
//! format                    store format marker: "stowage-store 1\n"
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
//! - Concurrency: threads share a `DirStore` (`Send + Sync`); processes share the
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
//!   ([`DEFAULT_GC_GRACE`], 10 min; [`DirStore::gc_with_grace`] for tests).
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
//! more data) makes `open` fail rather than silently dropping the committed
//! records after it. A checksummed frame holding an invalid record is not
//! such damage: the record is listed as unreadable ([`UnreadableRecord`],
//! SPEC §6) and everything else reads normally; gc refuses until it is
//! removed or a build that reads it runs.
//!
//! Read-only mode (SPEC §6 "reading never needs write access"): when the
//! directory is not writable (`access(W_OK)`), or creating the layout, the
//! lock or the log answers EACCES/EPERM/EROFS, [`DirStore::open`] opens the
//! store read-only: nothing is created, locked, truncated or deleted; a
//! torn log tail is ignored in memory (damage in the middle still fails);
//! a missing `index.log` reads as an empty store. `get`, `list`, `verify`
//! work; `writer`, `commit`, `remove` and `gc` fail with
//! [`StoreError::ReadOnly`]. The failpoint `open-erofs` forces this mode.
//!
//! Store format marker: `format` holds `stowage-store N`, the layout version
//! of the store itself (directories, log framing), distinct from each
//! record's `format_version`. Decision: it is written (temp file, fsync,
//! rename, directory fsync) when `open` creates a store, and for an older
//! store without one by its first write operation, under the lock; opening
//! alone never adds it. An absent marker means format 1 (stores made before
//! markers, like `tests/fixtures/stores/format-v1`). A store whose marker
//! names a newer format (or is malformed) is opened read-only and every
//! write fails with [`StoreError::NewerStoreFormat`]
//! ([`StoreError::BadFormatMarker`]); every write re-reads the marker under
//! the lock, so a process that opened before an upgrade cannot write into
//! the upgraded store either. Reads do not consult it: records carry their
//! own versions.

mod backend;
mod blob;
mod commit;
#[cfg(test)]
pub(crate) mod contract;
#[cfg(test)]
mod dir_contract;
mod error;
pub mod failpoint;
mod format;
mod gc;
mod handle;
mod index;
mod input;
mod location;
#[cfg(feature = "s3")]
mod object;
mod pack;
mod record;
mod sys;
mod transfer;
mod writer;

#[cfg(test)]
mod tests;

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{SystemTime, UNIX_EPOCH};

pub use backend::{Records, StoreBackend};
pub use blob::{BlobData, MappedBytes, Verify};
pub use error::StoreError;
pub use failpoint::FAILPOINTS;
pub use format::STORE_FORMAT;
pub use gc::{GcReport, VerifyIssue, VerifyReport, DEFAULT_GC_GRACE};
pub use handle::Store;
pub use input::{map_input, open_input, spool_input, Input, InputError};
pub use location::{
    default_cache_dir, is_store_url, S3Options, S3Url, DEFAULT_RETRIES, DEFAULT_RETRY_TIMEOUT,
    DEFAULT_S3_GC_GRACE,
};
#[cfg(feature = "s3")]
pub use object::S3Store;
pub use pack::DEFAULT_PACK_LIMIT;
pub use record::{
    BlobLocation, BlobRecord, PackLoc, Record, RecordMeta, UnreadableRecord, MAX_NAME_LEN,
    RECORD_FORMAT_VERSION, STORAGE_FILE_ZSTD, STORAGE_PACKED, STORAGE_PACKED_ZSTD, STORAGE_RAW,
};
pub use transfer::{copy_artifacts, CopyReport};
pub use writer::{
    ArtifactWriter, BlobLayout, PendingArtifact, Spool, COMPRESS_MIN, PACK_BLOB_MAX,
    PARALLEL_HASH_MIN, RAW_FILE_THRESHOLD, WRITEBACK_CHUNK, ZSTD_LEVEL,
};

use error::IoContext;
use format::{read_format, write_format, FORMAT_FILE};
use index::{Entry, Index, Tail};
use pack::{PackCache, PackWriter};

const LOG_FILE: &str = "index.log";
const LOCK_FILE: &str = "lock";
const BLOBS_DIR: &str = "blobs";
const PACKS_DIR: &str = "packs";
const TMP_DIR: &str = "tmp";

/// One live artifact as `ls` sees it: a readable record or an unreadable
/// one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listed {
    /// A record this build reads.
    Record(Record),
    /// A record this build cannot read, with the reason.
    Unreadable(UnreadableRecord),
}

impl Listed {
    /// The artifact's name (or an unreadable record's placeholder).
    pub fn name(&self) -> &str {
        match self {
            Listed::Record(record) => &record.name,
            Listed::Unreadable(bad) => &bad.name,
        }
    }
}

/// Distinguishes store instances within one process (temp file names).
static INSTANCES: AtomicU64 = AtomicU64::new(0);

/// An open store directory; see the module docs. `Send + Sync`: share it
/// between threads by reference or `Arc`.
pub struct DirStore {
    dir: Arc<PathBuf>,
    /// `<pid>-<n>-<nanos>`: prefix of this instance's temp files.
    instance: String,
    /// `tmp/`, where writers spill large blobs.
    spool: Spool,
    log_path: PathBuf,
    /// Read handle of the log, used only under the index write lock;
    /// `None` for a read-only store without a log (an empty store).
    log_read: Option<File>,
    /// Writable, or why not.
    mode: Mode,
    commit: Mutex<CommitState>,
    index: RwLock<Index>,
    packs: PackCache,
}

/// Whether this instance may write, and the handles it writes with.
enum Mode {
    /// The store is writable.
    Writable {
        /// Append handle of the log, used only under the store lock.
        log_append: File,
        /// The `flock` target.
        lock_file: File,
    },
    /// Nothing is ever written; every write operation fails with the
    /// error this names.
    ReadOnly(ReadOnlyWhy),
}

/// Why a store was opened read-only.
#[derive(Debug, Clone)]
enum ReadOnlyWhy {
    /// The directory or its files cannot be written (EACCES, EPERM, EROFS).
    Denied,
    /// The format marker names a newer store format.
    NewerFormat(u64),
    /// The format marker is malformed.
    BadMarker(String),
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

impl std::fmt::Debug for DirStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DirStore")
            .field("dir", &self.dir)
            .field("instance", &self.instance)
            .finish_non_exhaustive()
    }
}

impl DirStore {
    /// Opens the store in `dir`, creating the layout if absent, and recovers
    /// from a crash: replays the log, truncates a torn tail and deletes
    /// other instances' temp files older than [`DEFAULT_GC_GRACE`].
    ///
    /// If the store cannot be written (the directory or a store file
    /// answers EACCES, EPERM or EROFS) it is opened **read-only**: nothing
    /// is created, locked, truncated or deleted, a torn log tail is ignored
    /// in memory, reads work and every write fails with
    /// [`StoreError::ReadOnly`]. A store whose format marker names a newer
    /// format is opened read-only the same way, its writes failing with
    /// [`StoreError::NewerStoreFormat`]. See [`DirStore::is_read_only`].
    pub fn open(dir: &Path) -> Result<DirStore, StoreError> {
        if failpoint::is_armed(failpoint::OPEN_EROFS) {
            return DirStore::open_read_only(dir, ReadOnlyWhy::Denied);
        }
        match DirStore::open_writable(dir) {
            Ok(store) => Ok(store),
            Err(e) if is_denied(&e) && dir.is_dir() => {
                tracing::debug!(
                    target: "stowage::store",
                    dir = %dir.display(),
                    error = %e,
                    "store is not writable; opening it read-only"
                );
                DirStore::open_read_only(dir, ReadOnlyWhy::Denied)
            }
            Err(e) => Err(e),
        }
    }

    fn open_writable(dir: &Path) -> Result<DirStore, StoreError> {
        fs::create_dir_all(dir).at(dir)?;
        let dir = dir.canonicalize().at(dir)?;
        sys::check_writable(&dir).at(&dir)?;
        match read_format(&dir) {
            Ok(None) => {}
            Ok(Some(found)) if found <= u64::from(STORE_FORMAT) => {}
            Ok(Some(found)) => {
                return DirStore::open_read_only(&dir, ReadOnlyWhy::NewerFormat(found))
            }
            Err(StoreError::BadFormatMarker { reason, .. }) => {
                return DirStore::open_read_only(&dir, ReadOnlyWhy::BadMarker(reason))
            }
            Err(e) => return Err(e),
        }
        let log_path = dir.join(LOG_FILE);
        let mut created = !log_path.exists();
        let fresh = created;
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
        let store = DirStore::new(
            dir,
            log_path,
            Some(log_read),
            Mode::Writable {
                log_append,
                lock_file,
            },
        );
        {
            let _locked = store.lock()?;
            if fresh && read_format(&store.dir)?.is_none() {
                write_format(&store.dir, &store.instance)?;
            }
            store.refresh(Tails::Truncate)?;
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

    /// Opens without writing anything; see [`DirStore::open`].
    fn open_read_only(dir: &Path, why: ReadOnlyWhy) -> Result<DirStore, StoreError> {
        let dir = dir.canonicalize().at(dir)?;
        let log_path = dir.join(LOG_FILE);
        let log_read = match File::open(&log_path) {
            Ok(file) => Some(file),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(StoreError::io(&log_path, e)),
        };
        let store = DirStore::new(dir, log_path, log_read, Mode::ReadOnly(why));
        store.refresh(Tails::Report)?;
        tracing::debug!(
            target: "stowage::store",
            dir = %store.dir.display(),
            records = store.index_read().records.len(),
            "store opened read-only"
        );
        Ok(store)
    }

    fn new(dir: PathBuf, log_path: PathBuf, log_read: Option<File>, mode: Mode) -> DirStore {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let instance = format!(
            "{}-{}-{nanos:x}",
            std::process::id(),
            INSTANCES.fetch_add(1, Ordering::Relaxed)
        );
        let dir = Arc::new(dir);
        DirStore {
            dir: Arc::clone(&dir),
            spool: Spool::new(dir.join(TMP_DIR), instance.clone(), Arc::clone(&dir)),
            instance,
            log_path,
            log_read,
            mode,
            commit: Mutex::new(CommitState {
                pack: None,
                pack_limit: DEFAULT_PACK_LIMIT,
            }),
            index: RwLock::new(Index::default()),
            packs: PackCache::default(),
        }
    }

    /// Whether this store was opened read-only (see [`DirStore::open`]).
    pub fn is_read_only(&self) -> bool {
        matches!(self.mode, Mode::ReadOnly(_))
    }

    /// `Ok` if this store may be written; otherwise the error every write
    /// fails with ([`StoreError::ReadOnly`], [`StoreError::NewerStoreFormat`]
    /// or [`StoreError::BadFormatMarker`]). Callers about to do expensive
    /// work before a commit check this first.
    pub fn check_writable(&self) -> Result<(), StoreError> {
        self.handles().map(|_| ())
    }

    /// `(log_append, lock_file)` of a writable store.
    fn handles(&self) -> Result<(&File, &File), StoreError> {
        match &self.mode {
            Mode::Writable {
                log_append,
                lock_file,
            } => Ok((log_append, lock_file)),
            Mode::ReadOnly(why) => Err(self.refusal(why.clone())),
        }
    }

    fn refusal(&self, why: ReadOnlyWhy) -> StoreError {
        match why {
            ReadOnlyWhy::Denied => StoreError::ReadOnly {
                dir: self.dir.to_path_buf(),
            },
            ReadOnlyWhy::NewerFormat(found) => StoreError::NewerStoreFormat {
                dir: self.dir.to_path_buf(),
                found,
                supported: STORE_FORMAT,
            },
            ReadOnlyWhy::BadMarker(reason) => StoreError::BadFormatMarker {
                path: self.dir.join(FORMAT_FILE),
                reason,
            },
        }
    }

    /// The store directory (canonical).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The live record named `name`; [`StoreError::NotFound`] if there is
    /// none, [`StoreError::Unreadable`] if its record cannot be read by this
    /// build.
    pub fn get(&self, name: &str) -> Result<Record, StoreError> {
        self.refresh(Tails::Ignore)?;
        let index = self.index_read();
        if let Some(record) = index.records.get(name) {
            return Ok(record.clone());
        }
        Err(match index.unreadable.get(name) {
            Some(bad) => StoreError::Unreadable {
                name: bad.name.clone(),
                reason: bad.reason.clone(),
            },
            None => StoreError::NotFound {
                name: name.to_owned(),
            },
        })
    }

    /// All live, readable records, sorted by name ([`DirStore::listing`] adds
    /// the unreadable ones). If the log cannot be replayed (see
    /// [`DirStore::get`] for the error), the last good view is returned and
    /// the error logged.
    pub fn list(&self) -> Vec<Record> {
        self.refresh_or_warn();
        self.index_read().records.values().cloned().collect()
    }

    /// Live records this build cannot read (malformed, or of a newer record
    /// format version), sorted by name.
    pub fn unreadable(&self) -> Vec<UnreadableRecord> {
        self.refresh_or_warn();
        self.index_read().unreadable.values().cloned().collect()
    }

    /// Every live artifact, readable or not, sorted by name (what `ls`
    /// shows).
    pub fn listing(&self) -> Vec<Listed> {
        self.refresh_or_warn();
        let index = self.index_read();
        let mut out: Vec<Listed> = index
            .records
            .values()
            .cloned()
            .map(Listed::Record)
            .chain(index.unreadable.values().cloned().map(Listed::Unreadable))
            .collect();
        out.sort_by(|a, b| a.name().cmp(b.name()));
        out
    }

    fn refresh_or_warn(&self) {
        if let Err(e) = self.refresh(Tails::Ignore) {
            tracing::warn!(target: "stowage::store", error = %e, "listing a stale index");
        }
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

    /// Removes the artifact `name` (appends a tombstone) and returns what
    /// it was. Its data stays until [`DirStore::gc`]. An unreadable record can
    /// be removed too (that is how a user gives up on it).
    pub fn remove(&self, name: &str) -> Result<Listed, StoreError> {
        let _locked = self.lock_for_write()?;
        self.refresh(Tails::Truncate)?;
        let removed = {
            let index = self.index_read();
            match (index.records.get(name), index.unreadable.get(name)) {
                (Some(record), _) => Listed::Record(record.clone()),
                (None, Some(bad)) => Listed::Unreadable(bad.clone()),
                (None, None) => {
                    return Err(StoreError::NotFound {
                        name: name.to_owned(),
                    })
                }
            }
        };
        let entry = Entry {
            remove: vec![name.to_owned()],
            ..Entry::default()
        };
        let (at, len) = self.append_entry(&entry, false)?;
        self.apply_appended(at, len, entry);
        tracing::debug!(target: "stowage::store", name, "artifact removed");
        Ok(removed)
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

    /// Takes the in-process mutex and the `flock`; only a writable store
    /// has a lock.
    fn lock(&self) -> Result<Locked<'_>, StoreError> {
        let (_, lock_file) = self.handles()?;
        let state = self.commit.lock().unwrap_or_else(PoisonError::into_inner);
        sys::lock_exclusive(lock_file).at(self.dir.join(LOCK_FILE))?;
        Ok(Locked {
            state,
            file: lock_file,
        })
    }

    /// [`DirStore::lock`] for a write: refuses a read-only store, and checks
    /// the format marker under the lock (another process may have upgraded
    /// the store since open), writing it if the store has none yet.
    fn lock_for_write(&self) -> Result<Locked<'_>, StoreError> {
        self.check_writable()?;
        let locked = self.lock()?;
        match read_format(&self.dir)? {
            None => write_format(&self.dir, &self.instance)?,
            Some(found) if found <= u64::from(STORE_FORMAT) => {}
            Some(found) => {
                return Err(self.refusal(ReadOnlyWhy::NewerFormat(found)));
            }
        }
        Ok(locked)
    }

    /// The append handle of the log; only under the store lock.
    fn log_append(&self) -> Result<&File, StoreError> {
        self.handles().map(|(log_append, _)| log_append)
    }

    /// Replays log frames appended since the last replay, handling a bad
    /// tail as `tails` says.
    fn refresh(&self, tails: Tails) -> Result<(), StoreError> {
        let Some(log_read) = &self.log_read else {
            return Ok(()); // a read-only store without a log: empty
        };
        let len = log_read.metadata().at(&self.log_path)?.len();
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
        let mut reader = log_read;
        reader.seek(SeekFrom::Start(offset)).at(&self.log_path)?;
        reader.read_to_end(&mut buf).at(&self.log_path)?;
        let scan = index::scan(&buf, offset);
        let mut dropped = Vec::new();
        for entry in scan.entries {
            dropped.extend(index.apply(entry));
        }
        index.offset = scan.end;
        drop(index);
        self.packs.forget(&dropped);
        match (tails, scan.tail) {
            (Tails::Ignore, _) | (_, Tail::Clean) => {}
            (Tails::Truncate, Tail::Incomplete | Tail::BadFrame { torn: true, .. }) => {
                tracing::warn!(
                    target: "stowage::store",
                    path = %self.log_path.display(),
                    offset = scan.end,
                    "dropping torn index tail"
                );
                let log_append = self.log_append()?;
                log_append.set_len(scan.end).at(&self.log_path)?;
                log_append.sync_data().at(&self.log_path)?;
            }
            (Tails::Report, Tail::Incomplete | Tail::BadFrame { torn: true, .. }) => {
                tracing::warn!(
                    target: "stowage::store",
                    path = %self.log_path.display(),
                    offset = scan.end,
                    "ignoring torn index tail (read-only store)"
                );
            }
            (
                Tails::Truncate | Tails::Report,
                Tail::BadFrame {
                    reason,
                    torn: false,
                },
            ) => {
                return Err(StoreError::LogCorrupt {
                    path: self.log_path.clone(),
                    offset: scan.end,
                    reason,
                });
            }
        }
        Ok(())
    }

    /// Appends one frame (one write) and fsyncs it; returns its offset and
    /// length. Must be called under the store lock right after
    /// `refresh(Tails::Truncate)`. Save-path failpoints fire only if `failpoints`.
    fn append_entry(&self, entry: &Entry, failpoints: bool) -> Result<(u64, u64), StoreError> {
        let payload = entry.to_payload();
        let frame = index::encode_frame(&payload).ok_or(StoreError::EntryTooLarge {
            bytes: payload.len(),
        })?;
        let log_append = self.log_append()?;
        let at = log_append.metadata().at(&self.log_path)?.len();
        let mut log = log_append;
        let written = (|| {
            if failpoints && failpoint::is_armed("mid-index") {
                log.write_all(&frame[..frame.len() / 2])?;
                failpoint::hit("mid-index");
            }
            log.write_all(&frame)
        })();
        if let Err(e) = written {
            // Best effort: do not leave a torn tail behind a failed append.
            let _ = log_append.set_len(at);
            return Err(StoreError::io(&self.log_path, e));
        }
        if failpoints {
            failpoint::hit("after-index");
        }
        log_append.sync_data().at(&self.log_path)?;
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

impl StoreBackend for DirStore {
    fn location(&self) -> &Path {
        &self.dir
    }

    fn is_read_only(&self) -> bool {
        DirStore::is_read_only(self)
    }

    fn check_writable(&self) -> Result<(), StoreError> {
        DirStore::check_writable(self)
    }

    fn spool(&self) -> &Spool {
        &self.spool
    }

    fn commit(&self, batch: Vec<PendingArtifact>) -> Result<Vec<Record>, StoreError> {
        DirStore::commit(self, batch)
    }

    fn remove(&self, name: &str) -> Result<Listed, StoreError> {
        DirStore::remove(self, name)
    }

    fn get(&self, name: &str) -> Result<Record, StoreError> {
        DirStore::get(self, name)
    }

    fn records(&self) -> Result<Records<'_>, StoreError> {
        Ok(Box::new(self.listing().into_iter().map(
            |listed| match listed {
                Listed::Record(record) => Ok(record),
                Listed::Unreadable(bad) => Err(bad),
            },
        )))
    }

    fn read_blob(
        &self,
        record: &Record,
        blob: &BlobRecord,
        verify: Verify,
    ) -> Result<BlobData, StoreError> {
        self.read_blob_retrying(&record.name, blob, verify)
    }

    fn gc(&self) -> Result<GcReport, StoreError> {
        DirStore::gc(self)
    }

    fn verify(&self) -> Result<VerifyReport, StoreError> {
        DirStore::verify(self)
    }

    fn blob_path(&self, blob: &BlobRecord) -> Option<PathBuf> {
        Some(DirStore::blob_path(self, blob))
    }
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

/// Makes a directory's entries durable; see [`crate::fs::sync_dir`].
pub(crate) fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    crate::fs::sync_dir(dir).at(dir)
}

/// How [`DirStore::refresh`] treats what follows the last valid frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tails {
    /// A reader without the lock: stop quietly (an append may be under way).
    Ignore,
    /// Under the store lock: truncate a torn tail, report other damage.
    Truncate,
    /// A read-only open: ignore a torn tail in memory, report other damage.
    Report,
}

/// Whether an open failed because the store cannot be written.
fn is_denied(e: &StoreError) -> bool {
    matches!(
        e,
        StoreError::Io { source, .. }
            if matches!(
                source.kind(),
                io::ErrorKind::PermissionDenied | io::ErrorKind::ReadOnlyFilesystem
            )
    )
}

/// Replays index-log bytes the way [`DirStore::open`] does and returns the
/// number of live records, readable or not, for the `store_record` fuzz
/// target. Not a stable API.
#[doc(hidden)]
pub fn fuzz_replay_log(bytes: &[u8]) -> Result<usize, StoreError> {
    let scan = index::scan(bytes, 0);
    let mut index = Index::default();
    for entry in scan.entries {
        index.apply(entry);
    }
    Ok(index.records.len() + index.unreadable.len())
}
