//! [`Store`]: the handle the host holds, around one
//! [`StoreBackend`]. Its methods delegate to the
//! backend and add the conveniences callers use (`list`, `listing`,
//! `unreadable` over [`StoreBackend::records`]), so choosing a backend is
//! a matter of how the handle is opened, never of its callers.
//!
//! Invariant: the handle adds no state and no guarantee of its own; every
//! guarantee is the backend's (see `backend.rs`).
//!
//! Decision: [`Store::open`] opens a [`DirStore`]; [`Store::open_url`]
//! opens what `[store] url` names (`file://` or `s3://`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::backend::{Records, StoreBackend};
use super::error::StoreError;
use super::gc::{GcReport, VerifyReport};
use super::record::{BlobRecord, Record, UnreadableRecord};
use super::writer::{ArtifactWriter, PendingArtifact, Spool};
use super::{BlobData, DirStore, Listed, Verify};

/// An open store; `Send + Sync`: share it between threads by reference or
/// `Arc`. See the `store` module docs and [`StoreBackend`].
#[derive(Debug)]
pub struct Store {
    backend: Arc<dyn StoreBackend>,
}

impl Store {
    /// Opens (creating if absent) the directory store in `dir`; see
    /// [`DirStore::open`] for recovery and read-only mode.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        Ok(Store::from_backend(Arc::new(DirStore::open(dir)?)))
    }

    /// Opens the store a URL names: `file://DIR` (the directory store) or
    /// `s3://bucket/prefix` (the S3 store, cargo feature `s3`).
    pub fn open_url(url: &str, s3: &super::S3Options) -> Result<Store, StoreError> {
        if let Some(dir) = url.strip_prefix("file://") {
            return Store::open(Path::new(dir));
        }
        #[cfg(feature = "s3")]
        if url.starts_with("s3://") {
            return Ok(Store::from_backend(Arc::new(super::S3Store::open(
                url, s3,
            )?)));
        }
        let _ = s3;
        Err(StoreError::io(
            url,
            std::io::Error::other(if url.starts_with("s3://") {
                "this build of stowage has no S3 support (cargo feature s3)"
            } else {
                "not a store URL: use file://DIR or s3://BUCKET/PREFIX"
            }),
        ))
    }

    /// A handle on `backend`.
    pub fn from_backend(backend: Arc<dyn StoreBackend>) -> Store {
        Store { backend }
    }

    /// The backend behind this handle.
    pub fn backend(&self) -> &Arc<dyn StoreBackend> {
        &self.backend
    }

    /// Where the store is (for the directory store: its canonical
    /// directory).
    pub fn dir(&self) -> &Path {
        self.backend.location()
    }

    /// Whether this store was opened read-only.
    pub fn is_read_only(&self) -> bool {
        self.backend.is_read_only()
    }

    /// See [`StoreBackend::check_writable`]. Callers about to do expensive
    /// work before a commit check this first.
    pub fn check_writable(&self) -> Result<(), StoreError> {
        self.backend.check_writable()
    }

    /// See [`StoreBackend::check_write`]. Callers check this before
    /// dispatching, so a bad name or a read-only store is reported as what
    /// it is, never as a serializer's failure.
    pub fn check_write(&self, name: &str) -> Result<(), StoreError> {
        self.backend.check_write(name)
    }

    /// Where writers (and `put`'s stdin spool) put bytes before commit.
    pub(crate) fn spool(&self) -> &Spool {
        self.backend.spool()
    }

    /// See [`StoreBackend::writer`].
    pub fn writer(&self, name: &str) -> Result<ArtifactWriter<'_>, StoreError> {
        self.backend.writer(name)
    }

    /// See [`StoreBackend::commit`].
    pub fn commit(&self, artifacts: Vec<PendingArtifact>) -> Result<Vec<Record>, StoreError> {
        self.backend.commit(artifacts)
    }

    /// See [`StoreBackend::get`].
    pub fn get(&self, name: &str) -> Result<Record, StoreError> {
        self.backend.get(name)
    }

    /// See [`StoreBackend::get_many`].
    pub fn get_many(&self, names: &[&str]) -> Result<Vec<Record>, StoreError> {
        self.backend.get_many(names)
    }

    /// See [`StoreBackend::records`].
    pub fn records(&self) -> Result<Records<'_>, StoreError> {
        self.backend.records()
    }

    /// Every live artifact, readable or not, sorted by name (what `ls`
    /// shows). If the listing cannot start, it is empty and the error is
    /// logged.
    pub fn listing(&self) -> Vec<Listed> {
        self.records_or_warn()
            .map(|item| match item {
                Ok(record) => Listed::Record(record),
                Err(bad) => Listed::Unreadable(bad),
            })
            .collect()
    }

    /// All live, readable records, sorted by name.
    pub fn list(&self) -> Vec<Record> {
        self.records_or_warn().filter_map(Result::ok).collect()
    }

    /// Live records this build cannot read, sorted by name.
    pub fn unreadable(&self) -> Vec<UnreadableRecord> {
        self.records_or_warn().filter_map(Result::err).collect()
    }

    fn records_or_warn(&self) -> Records<'_> {
        self.backend.records().unwrap_or_else(|e| {
            tracing::warn!(target: "stowage::store", error = %e, "cannot list the store");
            Box::new(std::iter::empty())
        })
    }

    /// See [`StoreBackend::read_blobs`].
    pub fn read_blobs(&self, record: &Record, verify: Verify) -> Result<Vec<BlobData>, StoreError> {
        self.backend.read_blobs(record, verify)
    }

    /// See [`StoreBackend::read_many`].
    pub fn read_many(
        &self,
        records: &[Record],
        verify: Verify,
    ) -> Result<Vec<Vec<BlobData>>, StoreError> {
        self.backend.read_many(records, verify)
    }

    /// See [`StoreBackend::remove`].
    pub fn remove(&self, name: &str) -> Result<Listed, StoreError> {
        self.backend.remove(name)
    }

    /// See [`StoreBackend::gc`].
    pub fn gc(&self) -> Result<GcReport, StoreError> {
        self.backend.gc()
    }

    /// See [`StoreBackend::verify`].
    pub fn verify(&self) -> Result<VerifyReport, StoreError> {
        self.backend.verify()
    }

    /// The local file holding `blob` (test and diagnostics hook); an empty
    /// path if the backend keeps none.
    #[doc(hidden)]
    pub fn blob_path(&self, blob: &BlobRecord) -> PathBuf {
        self.backend.blob_path(blob).unwrap_or_default()
    }
}
