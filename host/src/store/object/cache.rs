//! The local, content-addressed cache of an S3 store (`[store] cache`):
//! where writers spool blobs while hashing them (`tmp/`), where a large
//! blob waits for its upload, and where `load_mapped` maps blobs from.
//!
//! ```text
//! <cache>/tmp/<instance>-<n>.tmp     blobs being written or downloaded
//! <cache>/blobs/<2 hex>/<digest>     a raw blob, verified
//! <cache>/blobs/<2 hex>/<digest>.zst a compressible blob's stored frame
//! <cache>/grown                      bytes added to blobs/ since the last trim
//! ```
//!
//! Invariants: a file enters `blobs/` only by a rename of a complete temp
//! file whose logical bytes hashed to its name (a writer's own hash, or a
//! download re-hashed before the rename), and is never written again; so
//! a cached raw blob is verified once and mapped without hashing after
//! that (a verified load re-hashes it anyway, and [`Cache::discard`]s a
//! copy damaged on disk: files are not fsynced, see `mod.rs`). The cache is shared by every store on the machine that names the
//! same directory: content addressing makes that safe.
//!
//! Eviction: the cache is bounded by `[store] cache_max_mb` (default
//! [`DEFAULT_CACHE_MAX_MB`](crate::store::DEFAULT_CACHE_MAX_MB),
//! 10 GiB). A trim walks `blobs/` and unlinks the least recently used
//! files (oldest modification time first) until the files left total at
//! most the bound. A file's modification time is its last use: it is set
//! when the file enters the cache, and a load that maps it from the cache,
//! or a save that finds it cached already, sets it to now. Evicting is
//! always safe: a mapping of an unlinked file stays valid (the cache only
//! ever unlinks, never truncates), and the next read of that blob
//! downloads and verifies it again.
//!
//! Invariants: a trim never unlinks a `blobs/` file used in the last
//! [`KEEP_RECENT`] (10 minutes): a save in flight in any process on the
//! machine spooled its large blobs into the cache and uploads them from
//! there, so the bound may be exceeded for that long by files in use. In
//! `tmp/` a trim deletes only files untouched for [`TMP_STALE`] (a day:
//! writers and downloads in flight write theirs continuously); they do not
//! count toward the bound.
//!
//! Decision: "not referenced by this store" is no criterion, since other
//! stores share the directory; only size and recency are.
//! Decision: when to trim: at `stowage gc` of an S3 store (errors fail
//! gc), and whenever the bytes added to `blobs/` since the last trim —
//! counted in `<cache>/grown`, under an exclusive lock, so short-lived
//! processes add up — pass an eighth of the bound; that trim is best
//! effort (its errors are logged, the save or load that triggered it
//! succeeds). A load of a cached blob never walks the cache.
//! Decision: setting a file's modification time is not writing it (its
//! bytes never change), so the verified-once invariant holds.
//! Known window: a hashed read of a blob already cached downloads it,
//! finds the cached copy and then maps that copy (`mod.rs`); should a trim
//! in another process unlink that copy (one unused for 10 minutes) in
//! between, that read fails once with a missing-blob error naming the
//! cache path, and the next one downloads again.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read as _, Seek as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::store::error::{IoContext, StoreError};
use crate::store::writer::TempFile;
use crate::store::{sys, BlobData, MappedBytes};

/// A trim never evicts a blob file used more recently than this.
pub(crate) const KEEP_RECENT: Duration = Duration::from_secs(10 * 60);
/// A trim deletes a `tmp/` file untouched for this long.
pub(crate) const TMP_STALE: Duration = Duration::from_secs(24 * 3600);
/// The counter file of bytes added since the last trim.
const GROWN: &str = "grown";

/// The cache directory; see the module docs.
#[derive(Debug)]
pub(crate) struct Cache {
    dir: PathBuf,
    /// The bound in bytes (`[store] cache_max_mb`).
    max_bytes: u64,
}

/// What one trim did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Trimmed {
    /// Blob files unlinked.
    pub(crate) evicted: u64,
    /// Their bytes.
    pub(crate) bytes: u64,
    /// Stale temp files deleted.
    pub(crate) stale_temps: u64,
    /// Bytes left in `blobs/`.
    pub(crate) left: u64,
}

impl Cache {
    /// Opens (creating) the cache in `dir`, bounded to `max_bytes`.
    pub(crate) fn open(dir: &Path, max_bytes: u64) -> Result<Cache, StoreError> {
        for sub in ["tmp", "blobs"] {
            let path = dir.join(sub);
            fs::create_dir_all(&path).at(&path)?;
        }
        Ok(Cache {
            dir: dir.to_path_buf(),
            max_bytes,
        })
    }

    /// The cache directory.
    #[cfg(test)]
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// The spool directory.
    pub(crate) fn tmp_dir(&self) -> PathBuf {
        self.dir.join("tmp")
    }

    /// Where the blob `digest` is cached.
    pub(crate) fn path(&self, digest: &str, zstd: bool) -> PathBuf {
        let fan = digest.get(..2).unwrap_or("00");
        let name = if zstd {
            format!("{digest}.zst")
        } else {
            digest.to_owned()
        };
        self.dir.join("blobs").join(fan).join(name)
    }

    /// Moves a finished temp file holding `digest`'s bytes into the cache
    /// (or drops it if the cache has them already) and returns the cache
    /// path.
    pub(crate) fn adopt(
        &self,
        mut temp: TempFile,
        digest: &str,
        zstd: bool,
    ) -> Result<PathBuf, StoreError> {
        let path = self.path(digest, zstd);
        if path.is_file() {
            // Used again: keep it from a trim (module docs).
            touch(&path);
            return Ok(path); // dropping `temp` deletes it
        }
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).at(parent)?;
        }
        let len = fs::metadata(temp.path()).at(temp.path())?.len();
        fs::rename(temp.path(), &path).at(&path)?;
        temp.disarm();
        self.grew(len);
        Ok(path)
    }

    /// Adds `len` to the bytes added since the last trim, and trims when
    /// they pass an eighth of the bound. Best effort: a failure is logged.
    fn grew(&self, len: u64) {
        let due = match self.count_growth(len) {
            Ok(due) => due,
            Err(e) => {
                tracing::warn!(target: "stowage::store", cache = %self.dir.display(), "cache growth not counted: {e}");
                return;
            }
        };
        if due {
            match self.trim() {
                Ok(trimmed) => {
                    tracing::debug!(target: "stowage::store", cache = %self.dir.display(), ?trimmed, "cache trimmed");
                }
                Err(e) => {
                    tracing::warn!(target: "stowage::store", cache = %self.dir.display(), "cache not trimmed: {e}");
                }
            }
        }
    }

    /// Updates `<cache>/grown` under an exclusive lock; whether a trim is
    /// due (the counter is then reset).
    fn count_growth(&self, len: u64) -> Result<bool, StoreError> {
        let path = self.dir.join(GROWN);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .at(&path)?;
        file.lock().at(&path)?;
        let mut text = String::new();
        // An unreadable counter counts from zero.
        let before = match file.read_to_string(&mut text) {
            Ok(_) => text.trim().parse::<u64>().unwrap_or(0),
            Err(_) => 0,
        };
        let total = before.saturating_add(len);
        let due = total >= (self.max_bytes / 8).max(1);
        let after = if due { 0 } else { total };
        file.set_len(0).at(&path)?;
        file.rewind().at(&path)?;
        file.write_all(after.to_string().as_bytes()).at(&path)?;
        Ok(due)
    }

    /// Deletes stale temp files and evicts the least recently used blob
    /// files until `blobs/` holds at most the bound (module docs).
    pub(crate) fn trim(&self) -> Result<Trimmed, StoreError> {
        let now = SystemTime::now();
        let age = |modified: SystemTime| now.duration_since(modified).unwrap_or_default();
        let mut trimmed = Trimmed::default();
        let tmp = self.tmp_dir();
        for (path, modified, _) in files_in(&tmp)? {
            if age(modified) >= TMP_STALE && remove(&path)? {
                trimmed.stale_temps += 1;
            }
        }
        let blobs = self.dir.join("blobs");
        let mut files = Vec::new();
        for entry in fs::read_dir(&blobs).at(&blobs)? {
            let entry = entry.at(&blobs)?;
            if entry.file_type().at(entry.path())?.is_dir() {
                files.extend(files_in(&entry.path())?);
            }
        }
        let mut total: u64 = files.iter().map(|(_, _, len)| len).sum();
        if total > self.max_bytes {
            files.sort_by_key(|(_, modified, _)| *modified);
            for (path, modified, len) in files {
                if total <= self.max_bytes || age(modified) < KEEP_RECENT {
                    break; // the rest are newer still
                }
                if remove(&path)? {
                    trimmed.evicted += 1;
                    trimmed.bytes += len;
                }
                total = total.saturating_sub(len);
            }
        }
        trimmed.left = total;
        Ok(trimmed)
    }

    /// Removes the cached raw blob `digest` (one found damaged).
    pub(crate) fn discard(&self, digest: &str) -> Result<(), StoreError> {
        remove(&self.path(digest, false)).map(|_| ())
    }

    /// Maps the cached raw blob `digest` if the cache has it with `size`
    /// bytes.
    pub(crate) fn map(&self, digest: &str, size: u64) -> Result<Option<BlobData>, StoreError> {
        let path = self.path(digest, false);
        let file = match File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(StoreError::io(&path, e)),
        };
        let len = file.metadata().at(&path)?.len();
        if len != size {
            return Ok(None);
        }
        // Used now: keep it from a trim (module docs).
        let _ = file.set_modified(SystemTime::now());
        if len == 0 {
            return Ok(Some(BlobData::empty()));
        }
        // SAFETY: a cache file is renamed into `blobs/` complete and never
        // written again (module invariants); the cache only ever unlinks.
        let map = Arc::new(unsafe { sys::map_file(&file) }.at(&path)?);
        let len = map.len();
        Ok(MappedBytes::new(map, 0, len).map(BlobData::Mapped))
    }
}

/// Sets `path`'s modification time to now; best effort (a cache shared
/// with another user may refuse it, and then only its recency is lost).
fn touch(path: &Path) {
    if let Ok(file) = File::open(path) {
        let _ = file.set_modified(SystemTime::now());
    }
}

/// The regular files directly in `dir`, with their modification time and
/// length; a file gone meanwhile is left out.
fn files_in(dir: &Path) -> Result<Vec<(PathBuf, SystemTime, u64)>, StoreError> {
    let mut out = Vec::new();
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(StoreError::io(dir, e)),
    };
    for entry in entries {
        let entry = entry.at(dir)?;
        let path = entry.path();
        let meta = match entry.metadata() {
            Ok(meta) => meta,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(StoreError::io(path, e)),
        };
        if meta.is_file() {
            out.push((path, meta.modified().at(entry.path())?, meta.len()));
        }
    }
    Ok(out)
}

/// Unlinks `path`; false if it was gone already.
fn remove(path: &Path) -> Result<bool, StoreError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(StoreError::io(path, e)),
    }
}
