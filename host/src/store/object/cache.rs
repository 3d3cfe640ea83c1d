//! The local, content-addressed cache of an S3 store (`[store] cache`):
//! where writers spool blobs while hashing them (`tmp/`), where a large
//! blob waits for its upload, and where `load_mapped` maps blobs from.
//!
//! ```text
//! <cache>/tmp/<instance>-<n>.tmp     blobs being written or downloaded
//! <cache>/blobs/<2 hex>/<digest>     a raw blob, verified
//! <cache>/blobs/<2 hex>/<digest>.zst a compressible blob's stored frame
//! ```
//!
//! Invariants: a file enters `blobs/` only by a rename of a complete temp
//! file whose logical bytes hashed to its name (a writer's own hash, or a
//! download re-hashed before the rename), and is never written again; so
//! a cached raw blob is verified once and mapped without hashing after
//! that. The cache is shared by every store on the machine that names the
//! same directory: content addressing makes that safe.
//!
//! Decision: nothing evicts cache files yet; deleting the directory (or
//! any file in it) is always safe, the next read downloads again.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::store::error::{IoContext, StoreError};
use crate::store::writer::TempFile;
use crate::store::{sys, BlobData, MappedBytes};

/// The cache directory; see the module docs.
#[derive(Debug)]
pub(crate) struct Cache {
    dir: PathBuf,
}

impl Cache {
    /// Opens (creating) the cache in `dir`.
    pub(crate) fn open(dir: &Path) -> Result<Cache, StoreError> {
        for sub in ["tmp", "blobs"] {
            let path = dir.join(sub);
            fs::create_dir_all(&path).at(&path)?;
        }
        Ok(Cache {
            dir: dir.to_path_buf(),
        })
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
            return Ok(path); // dropping `temp` deletes it
        }
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).at(parent)?;
        }
        fs::rename(temp.path(), &path).at(&path)?;
        temp.disarm();
        Ok(path)
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
