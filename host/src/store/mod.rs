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
//! reading blobs, `gc.rs` gc and verify, `index.rs` the log and the index
//! (design and the facts that chose it), `snapshot.rs` snapshot runs and
//! the manifest, `compact.rs` generations (compaction, upgrade, recovery),
//! `pack.rs` packs, `record.rs` records and name rules, `format.rs` the
//! format marker, `sys.rs` the only `unsafe` primitives, `input.rs`
//! `put`'s input.
//!
//! The rest of this file is the first backend, [`DirStore`]: one local
//! directory.
//!
//! On-disk layout of a store directory:
//!
//! ```text
//! format                    store format marker: "stowage-store 2\n"
//! lock                      flock target: commits, removals, gc, compaction, open's recovery
//! manifest                  the index generation G and its runs (snapshot.rs)
//! index.G.K.run             a snapshot run: records sorted by name, mmapped
//! index.log                 the log of generation G: HEADER G, then framed
//!                           batches since the last compaction (index.rs)
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
//!   directory. Commits, removals, gc, compactions and open's recovery hold
//!   an in-process mutex plus an exclusive `flock` on `lock`, re-read the
//!   manifest (finishing a compaction a crash interrupted) and first replay
//!   whatever other processes appended to the log. Reads never lock:
//!   `get`/`list` compare the log's length with the replayed offset (one
//!   `fstat`) and replay the new frames; a sealed log makes them load the
//!   next generation (`compact.rs` says why they never see a half state);
//!   blob bytes and runs are immutable once referenced.
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
//! rename, directory fsync) when `open` creates a store (format 2), and by
//! the upgrade of a format-1 store, which the first write operation runs
//! under the lock (`compact.rs`); opening alone never upgrades. An absent
//! marker means format 1 (stores made before markers, like
//! `tests/fixtures/stores/format-v1`). A read-only reader of a format-1
//! store replays its whole log, as format-1 builds did. A store whose marker
//! names a newer format (or is malformed) is opened read-only and every
//! write fails with [`StoreError::NewerStoreFormat`]
//! ([`StoreError::BadFormatMarker`]); every write re-reads the marker under
//! the lock, so a process that opened before an upgrade cannot write into
//! the upgraded store either. Reads do not consult it: records carry their
//! own versions.

mod backend;
mod blob;
mod commit;
mod compact;
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
mod snapshot;
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
pub use compact::{COMPACT_BYTES_VAR, DEFAULT_COMPACT_BYTES};
pub use error::StoreError;
pub use failpoint::FAILPOINTS;
pub use format::STORE_FORMAT;
pub use gc::{GcReport, VerifyIssue, VerifyReport, DEFAULT_GC_GRACE};
pub use handle::Store;
pub use input::{map_input, open_input, spool_input, Input, InputError};
pub use location::{
    default_cache_dir, is_store_url, S3Options, S3Url, DEFAULT_CACHE_MAX_MB, DEFAULT_RETRIES,
    DEFAULT_RETRY_TIMEOUT, DEFAULT_S3_GC_GRACE,
};
#[cfg(feature = "s3")]
pub use object::S3Store;
pub use pack::DEFAULT_PACK_LIMIT;
pub use record::{
    BlobLocation, BlobRecord, PackLoc, PartRecord, Record, RecordMeta, UnreadableRecord,
    MAX_NAME_LEN, RECORD_FORMAT_VERSION, STORAGE_FILE_ZSTD, STORAGE_PACKED, STORAGE_PACKED_ZSTD,
    STORAGE_RAW,
};
pub use transfer::{copy_artifacts, CopyReport};
pub use writer::{
    ArtifactWriter, BlobLayout, PendingArtifact, Spool, COMPRESS_MIN, PACK_BLOB_MAX,
    PARALLEL_HASH_MIN, RAW_FILE_THRESHOLD, WRITEBACK_CHUNK, ZSTD_LEVEL,
};

use error::IoContext;
use format::{read_format, FORMAT_FILE};
use index::{Entry, Found, Index, Tail};
use pack::{PackCache, PackWriter};
use snapshot::{read_manifest, Run};

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
    /// Writable, or why not.
    mode: Mode,
    commit: Mutex<CommitState>,
    index: RwLock<Index>,
    packs: PackCache,
    /// Tail bytes that trigger an automatic compaction (`compact.rs`).
    compact_bytes: AtomicU64,
    /// The items of the frame this instance just appended (absolute body
    /// offsets), taken by `apply_appended` so a batch is encoded once.
    appended: Mutex<Option<(u64, Vec<index::LogItem>)>>,
}

/// Whether this instance may write, and the handles it writes with.
enum Mode {
    /// The store is writable.
    Writable {
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
        OpenOptions::new()
            .append(true)
            .create(true)
            .open(&log_path)
            .at(&log_path)?;
        if created {
            sync_dir(&dir)?;
        }
        let store = DirStore::new(dir, log_path, Mode::Writable { lock_file });
        {
            let _locked = store.lock()?;
            store.create_or_recover()?;
            store.clean_temp(DEFAULT_GC_GRACE)?;
        }
        tracing::debug!(
            target: "stowage::store",
            dir = %store.dir.display(),
            generation = store.index_read().generation,
            tail = store.index_read().tail.len(),
            "store opened"
        );
        Ok(store)
    }

    /// Opens without writing anything; see [`DirStore::open`].
    fn open_read_only(dir: &Path, why: ReadOnlyWhy) -> Result<DirStore, StoreError> {
        let dir = dir.canonicalize().at(dir)?;
        let log_path = dir.join(LOG_FILE);
        let store = DirStore::new(dir, log_path, Mode::ReadOnly(why));
        store.reload(Tails::Report)?;
        tracing::debug!(
            target: "stowage::store",
            dir = %store.dir.display(),
            generation = store.index_read().generation,
            tail = store.index_read().tail.len(),
            "store opened read-only"
        );
        Ok(store)
    }

    fn new(dir: PathBuf, log_path: PathBuf, mode: Mode) -> DirStore {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let instance = format!(
            "{}-{}-{nanos:x}",
            std::process::id(),
            INSTANCES.fetch_add(1, Ordering::Relaxed)
        );
        let compact_bytes = std::env::var(COMPACT_BYTES_VAR)
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(DEFAULT_COMPACT_BYTES);
        let dir = Arc::new(dir);
        DirStore {
            dir: Arc::clone(&dir),
            spool: Spool::new(dir.join(TMP_DIR), instance.clone(), Arc::clone(&dir)),
            instance,
            log_path,
            mode,
            commit: Mutex::new(CommitState {
                pack: None,
                pack_limit: DEFAULT_PACK_LIMIT,
            }),
            index: RwLock::new(Index::default()),
            packs: PackCache::default(),
            compact_bytes: AtomicU64::new(compact_bytes),
            appended: Mutex::new(None),
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

    /// The lock file of a writable store.
    fn handles(&self) -> Result<&File, StoreError> {
        match &self.mode {
            Mode::Writable { lock_file } => Ok(lock_file),
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

    /// Sets the tail size (bytes of log) that triggers an automatic
    /// compaction for this instance (default [`DEFAULT_COMPACT_BYTES`], or
    /// `STOWAGE_STORE_COMPACT_BYTES`). Tests and tuning.
    #[doc(hidden)]
    pub fn set_compact_bytes(&self, bytes: u64) {
        self.compact_bytes.store(bytes, Ordering::Relaxed);
    }

    /// Compacts the whole index into one snapshot run now (what `gc` does
    /// after collecting blobs). Under the writer lock.
    pub fn compact_index(&self) -> Result<(), StoreError> {
        let _locked = self.lock_for_write()?;
        compact::compact(self, compact::Mode::Full)
    }

    /// The index's generation and its runs' file names, oldest first
    /// (diagnostics and tests).
    #[doc(hidden)]
    pub fn index_files(&self) -> (u64, Vec<String>) {
        let index = self.index_read();
        (
            index.generation,
            index.runs.iter().map(|r| r.file.clone()).collect(),
        )
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
        match self.index_read().lookup(name)? {
            Found::Record(record) => Ok(record),
            Found::Unreadable(bad) => Err(StoreError::Unreadable {
                name: bad.name,
                reason: bad.reason,
            }),
            Found::Missing => Err(StoreError::NotFound {
                name: name.to_owned(),
            }),
        }
    }

    /// The current readable record named `name`, if any (no refresh).
    pub(super) fn lookup_record(&self, name: &str) -> Option<Record> {
        match self.index_read().lookup(name) {
            Ok(Found::Record(record)) => Some(record),
            _ => None,
        }
    }

    /// Every live artifact, readable or not, in name order, streamed: the
    /// runs are read through their mappings and tail records one at a time,
    /// so memory does not grow with the store. If the log cannot be
    /// replayed (see [`DirStore::get`]), the last good view is listed and
    /// the error logged.
    pub fn iter(&self) -> impl Iterator<Item = Listed> + '_ {
        self.live().map(|item| match item {
            Ok(record) => Listed::Record(record),
            Err(bad) => Listed::Unreadable(bad),
        })
    }

    /// See [`DirStore::iter`].
    fn live(&self) -> Box<dyn Iterator<Item = Result<Record, UnreadableRecord>> + Send> {
        self.refresh_or_warn();
        match self.index_read().live() {
            Ok(live) => Box::new(live),
            Err(e) => {
                tracing::warn!(target: "stowage::store", error = %e, "cannot list the store");
                Box::new(std::iter::empty())
            }
        }
    }

    /// All live, readable records, sorted by name ([`DirStore::listing`] adds
    /// the unreadable ones). Collects: prefer [`DirStore::iter`].
    pub fn list(&self) -> Vec<Record> {
        self.live().filter_map(Result::ok).collect()
    }

    /// Live records this build cannot read (malformed, or of a newer record
    /// format version), sorted by name.
    pub fn unreadable(&self) -> Vec<UnreadableRecord> {
        self.live().filter_map(Result::err).collect()
    }

    /// Every live artifact, readable or not, sorted by name (what `ls`
    /// shows). Collects: prefer [`DirStore::iter`].
    pub fn listing(&self) -> Vec<Listed> {
        self.iter().collect()
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
        let removed = match self.index_read().lookup(name)? {
            Found::Record(record) => Listed::Record(record),
            Found::Unreadable(bad) => Listed::Unreadable(bad),
            Found::Missing => {
                return Err(StoreError::NotFound {
                    name: name.to_owned(),
                })
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
        let lock_file = self.handles()?;
        let state = self.commit.lock().unwrap_or_else(PoisonError::into_inner);
        sys::lock_exclusive(lock_file).at(self.dir.join(LOCK_FILE))?;
        Ok(Locked {
            state,
            file: lock_file,
        })
    }

    /// [`DirStore::lock`] for a write: refuses a read-only store, checks the
    /// format marker under the lock (another process may have upgraded the
    /// store since open), brings the index to the current generation
    /// (finishing a compaction a crash interrupted), replays the log
    /// (truncating a torn tail) and upgrades a format-1 store.
    fn lock_for_write(&self) -> Result<Locked<'_>, StoreError> {
        self.check_writable()?;
        let locked = self.lock()?;
        let format = match read_format(&self.dir)? {
            None => 1,
            Some(found) if found <= u64::from(STORE_FORMAT) => found,
            Some(found) => {
                return Err(self.refusal(ReadOnlyWhy::NewerFormat(found)));
            }
        };
        self.sync_generation(format)?;
        self.refresh(Tails::Truncate)?;
        if format < u64::from(STORE_FORMAT) {
            let blocked = self.index_read().tail_has_unreadable().cloned();
            match blocked {
                None => {
                    compact::compact(self, compact::Mode::Upgrade)?;
                }
                Some(bad) => tracing::info!(
                    target: "stowage::store",
                    record = %bad.name,
                    "not upgrading a format-1 store while it holds an unreadable record"
                ),
            }
        }
        Ok(locked)
    }

    /// Under the lock at open: makes a new (empty) store a format-2 store,
    /// or finishes an interrupted compaction, then replays the log.
    fn create_or_recover(&self) -> Result<(), StoreError> {
        let format = read_format(&self.dir)?;
        let log_len = fs::metadata(&self.log_path).at(&self.log_path)?.len();
        if format.is_none() && log_len == 0 {
            compact::create(self)?;
        }
        let format = read_format(&self.dir)?.unwrap_or(1);
        self.reload(Tails::Truncate)?;
        self.sync_generation(format)?;
        self.refresh(Tails::Truncate)?;
        if format >= 2 {
            compact::remove_stale(self)?;
        }
        Ok(())
    }

    /// Under the lock: makes the in-memory index show the generation the
    /// manifest names and the log file now at `index.log`, and finishes a
    /// compaction that stopped after writing its manifest.
    fn sync_generation(&self, format: u64) -> Result<(), StoreError> {
        let generation = if format >= 2 {
            match read_manifest(&self.dir)? {
                Some(manifest) => manifest.generation,
                None => {
                    return Err(StoreError::IndexCorrupt {
                        path: self.dir.join(snapshot::MANIFEST_FILE),
                        reason: "missing in a format-2 store".into(),
                    })
                }
            }
        } else {
            0
        };
        let path_id = fs::metadata(&self.log_path)
            .map(|m| file_id(&m))
            .at(&self.log_path)?;
        let stale = {
            let index = self.index_read();
            index.generation != generation || index.log_id != path_id || index.log.is_none()
        };
        if stale {
            self.reload(Tails::Truncate)?;
        }
        if self.index_read().log_gen < generation {
            compact::finish_generation(self, generation)?;
            self.reload(Tails::Truncate)?;
        }
        Ok(())
    }

    /// Replays log frames appended since the last replay, handling a bad
    /// tail as `tails` says; reloads everything when the log was sealed
    /// (a compaction started a new generation).
    fn refresh(&self, tails: Tails) -> Result<(), StoreError> {
        let (log, offset, sealed) = {
            let index = self.index_read();
            (index.log.clone(), index.offset, index.sealed)
        };
        if sealed {
            return self.reload(tails);
        }
        let Some(log) = log else {
            return Ok(()); // a read-only store without a log: empty
        };
        let len = log.metadata().at(&self.log_path)?.len();
        if offset == len {
            return Ok(());
        }
        let mut index = self.index_write();
        if !index.log.as_ref().is_some_and(|l| Arc::ptr_eq(l, &log)) {
            return Ok(()); // another thread reloaded meanwhile
        }
        let offset = index.offset;
        if offset > len {
            return Err(StoreError::LogCorrupt {
                path: self.log_path.clone(),
                offset: len,
                reason: format!("log shrank below its replayed length {offset}"),
            });
        }
        let mut buf = Vec::new();
        let mut reader: &File = &log;
        reader.seek(SeekFrom::Start(offset)).at(&self.log_path)?;
        reader.read_to_end(&mut buf).at(&self.log_path)?;
        let scan = index::scan(&buf, offset);
        drop(buf);
        let mut dropped = Vec::new();
        for frame in scan.entries {
            dropped.extend(index.apply(frame));
        }
        index.offset = scan.end;
        let sealed = index.sealed;
        drop(index);
        self.packs.forget(&dropped);
        self.handle_tail(tails, scan.end, scan.tail)?;
        if sealed {
            return self.reload(tails);
        }
        Ok(())
    }

    /// Acts on what follows the last valid frame (see [`Tails`]).
    fn handle_tail(&self, tails: Tails, end: u64, tail: Tail) -> Result<(), StoreError> {
        match (tails, tail) {
            (Tails::Ignore, _) | (_, Tail::Clean) => {}
            (Tails::Truncate, Tail::Incomplete | Tail::BadFrame { torn: true, .. }) => {
                tracing::warn!(
                    target: "stowage::store",
                    path = %self.log_path.display(),
                    offset = end,
                    "dropping torn index tail"
                );
                let log = OpenOptions::new()
                    .write(true)
                    .open(&self.log_path)
                    .at(&self.log_path)?;
                log.set_len(end).at(&self.log_path)?;
                log.sync_data().at(&self.log_path)?;
            }
            (Tails::Report, Tail::Incomplete | Tail::BadFrame { torn: true, .. }) => {
                tracing::warn!(
                    target: "stowage::store",
                    path = %self.log_path.display(),
                    offset = end,
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
                    offset: end,
                    reason,
                });
            }
        }
        Ok(())
    }

    /// Loads the index afresh: the format marker says whether there is a
    /// manifest; the manifest names the runs (mapped); `index.log` is
    /// replayed on top. A run deleted by a concurrent compaction between
    /// reading the manifest and mapping it, or a log newer than the
    /// manifest read, makes it start over (a compaction replaces the
    /// manifest before the log, so this settles at once).
    fn reload(&self, tails: Tails) -> Result<(), StoreError> {
        let mut attempts = 0;
        // A format-2 log without a format-2 marker (the marker was lost):
        // the manifest is the only way to read it.
        let mut force_manifest = false;
        let (index, end, tail, dropped) = loop {
            attempts += 1;
            if attempts > 100 {
                return Err(StoreError::IndexCorrupt {
                    path: self.dir.join(snapshot::MANIFEST_FILE),
                    reason: "the index kept changing while being opened".into(),
                });
            }
            let format = match read_format(&self.dir) {
                Ok(found) => found.unwrap_or(1),
                Err(StoreError::BadFormatMarker { .. }) => 1,
                Err(e) => return Err(e),
            };
            let manifest = if format >= 2 || force_manifest {
                read_manifest(&self.dir)?
            } else {
                None
            };
            let (generation, files) = manifest.map(|m| (m.generation, m.runs)).unwrap_or_default();
            let mut runs = Vec::with_capacity(files.len());
            let mut gone = false;
            for file in &files {
                match Run::open(&self.dir, file) {
                    Ok(run) => runs.push(run),
                    Err(StoreError::Io { source, .. })
                        if source.kind() == io::ErrorKind::NotFound =>
                    {
                        gone = true;
                        break;
                    }
                    Err(e) => return Err(e),
                }
            }
            if gone {
                continue;
            }
            let log = match File::open(&self.log_path) {
                Ok(file) => Some(file),
                Err(e) if e.kind() == io::ErrorKind::NotFound => None,
                Err(e) => return Err(StoreError::io(&self.log_path, e)),
            };
            let mut index = Index {
                runs: Arc::new(runs),
                generation,
                packs_dir: self.dir.join(PACKS_DIR),
                ..Index::default()
            };
            let Some(log) = log else {
                break (index, 0, Tail::Clean, Vec::new());
            };
            index.log_id = file_id(&log.metadata().at(&self.log_path)?);
            let mut buf = Vec::new();
            (&log).read_to_end(&mut buf).at(&self.log_path)?;
            let scan = index::scan(&buf, 0);
            drop(buf);
            let mut frames = scan.entries.into_iter().peekable();
            if let Some(index::Frame::V2(items)) = frames.peek() {
                if let Some(first) = items.first().filter(|i| i.kind == snapshot::HEADER) {
                    index.log_gen = first.value;
                }
            }
            if index.log_gen > generation {
                force_manifest = true;
                continue; // the manifest was replaced after we read it
            }
            index.skip = index.log_gen < generation;
            index.log = Some(Arc::new(log));
            let mut dropped = Vec::new();
            let mut first = true;
            let mut at = 0;
            for frame in frames {
                if first && index.log_gen > 0 {
                    first = false;
                    at = header_frame_len();
                    index.apply(frame);
                    continue;
                }
                first = false;
                dropped.extend(index.apply(frame));
            }
            index.tail_start = at;
            index.offset = scan.end;
            break (index, scan.end, scan.tail, dropped);
        };
        *self.index_write() = index;
        self.packs.forget(&dropped);
        self.handle_tail(tails, end, tail)
    }

    /// Appends one frame (one write) and fsyncs it; returns its offset and
    /// length. Must be called under the store lock (after
    /// [`DirStore::lock_for_write`]). A format-2 store gets a binary frame,
    /// a format-1 store (not upgraded: it holds an unreadable record) a
    /// JSON one. Save-path failpoints fire only if `failpoints`.
    fn append_entry(&self, entry: &Entry, failpoints: bool) -> Result<(u64, u64), StoreError> {
        let v2 = self.index_read().generation > 0;
        let (payload, items) = if v2 {
            let (payload, items) = compact::encode_entry(entry);
            (payload, Some(items))
        } else {
            (entry.to_payload(), None)
        };
        let frame = if v2 {
            index::encode_frame2(&payload)
        } else {
            index::encode_frame(&payload)
        }
        .ok_or(StoreError::EntryTooLarge {
            bytes: payload.len(),
        })?;
        drop(payload);
        let (at, len) = self.append_frame(&frame, failpoints)?;
        if let Some(mut items) = items {
            for item in &mut items {
                item.body_at += at + index::HEADER_LEN as u64;
            }
            *self.appended.lock().unwrap_or_else(PoisonError::into_inner) = Some((at, items));
        }
        Ok((at, len))
    }

    /// Appends framed bytes to the log without an fsync (the seal).
    fn append_frame_unsynced(&self, frame: &[u8]) -> Result<(), StoreError> {
        let mut log = OpenOptions::new()
            .append(true)
            .open(&self.log_path)
            .at(&self.log_path)?;
        log.write_all(frame).at(&self.log_path)
    }

    /// Appends framed bytes to the log at `index.log` and fsyncs them.
    fn append_frame(&self, frame: &[u8], failpoints: bool) -> Result<(u64, u64), StoreError> {
        let log_append = OpenOptions::new()
            .append(true)
            .open(&self.log_path)
            .at(&self.log_path)?;
        let at = log_append.metadata().at(&self.log_path)?.len();
        let mut log = &log_append;
        let written = (|| {
            if failpoints && failpoint::is_armed("mid-index") {
                log.write_all(&frame[..frame.len() / 2])?;
                failpoint::hit("mid-index");
            }
            log.write_all(frame)
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
    /// `refresh` already replayed it from the file; then compacts if the
    /// tail has grown past the threshold. Under the store lock.
    fn apply_appended(&self, at: u64, len: u64, entry: Entry) {
        let mut index = self.index_write();
        if index.offset == at {
            let appended = self
                .appended
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take();
            let frame = match appended {
                Some((pos, items)) if pos == at => index::Frame::V2(items),
                _ => index::Frame::V1(entry),
            };
            let dropped = index.apply(frame);
            index.offset = at + len;
            drop(index);
            self.packs.forget(&dropped);
        } else {
            drop(index);
        }
        compact::maybe_compact(self);
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
        self.refresh_or_warn();
        let live = self.index_read().live()?;
        Ok(Box::new(live))
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

/// The identity of a file (its inode on Unix), to notice `index.log` being
/// replaced by a compaction.
#[cfg(unix)]
fn file_id(meta: &fs::Metadata) -> u64 {
    use std::os::unix::fs::MetadataExt;
    meta.ino()
}

/// Elsewhere: creation time in nanoseconds, or 0.
#[cfg(not(unix))]
fn file_id(meta: &fs::Metadata) -> u64 {
    meta.created()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos() as u64)
}

/// Length of the HEADER frame that starts a format-2 log.
fn header_frame_len() -> u64 {
    compact::header_frame(0).len() as u64
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
    for frame in scan.entries {
        index.apply(frame);
    }
    Ok(index
        .tail
        .values()
        .filter(|item| !matches!(item, index::TailItem::Removed))
        .count())
}
