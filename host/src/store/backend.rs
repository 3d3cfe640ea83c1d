//! The store seam: [`StoreBackend`], what every place artifacts are kept
//! must do, and the guarantees each one keeps. The host talks to a backend
//! only through [`Store`](super::Store), a handle around an
//! `Arc<dyn StoreBackend>`. The backends are
//! [`DirStore`](super::DirStore) (a local directory) and `S3Store`
//! (S3-compatible object storage, SPEC §13, `store/object/`, cargo feature
//! `s3`); `contract.rs` is the test suite every one of them passes
//! unchanged.
//!
//! A save goes [`StoreBackend::writer`] → [`ArtifactWriter`] (blobs
//! streamed in, each hashed as it is written; its digest is known only when
//! it is finished; bytes that outgrow memory go to the backend's [`Spool`],
//! a local temp directory) → [`PendingArtifact`] → [`StoreBackend::commit`]
//! of a batch. The writer side assumes no directory layout and no lock:
//! commit gets finished blobs with their digests, sizes and bytes (in
//! memory or in a spool file), so a backend may rename them into a
//! directory, append them to a pack file, or upload them under their digest
//! and put a batch's small blobs into one pack object.
//!
//! Guarantees every backend keeps (SPEC §6; `contract.rs` tests each):
//! - **Atomic batches.** [`StoreBackend::commit`] makes all artifacts of a
//!   batch visible or none; a crash or error at any point leaves each name
//!   with its old record (or none) or its new one. A repeated name within a
//!   batch keeps the later artifact; all records of a batch share one
//!   `created` time.
//! - **No dangling records.** A record becomes visible only after every
//!   blob it references is durable, so a record never points at a missing
//!   blob (short of outside damage, which reads report as
//!   [`StoreError::MissingBlob`]).
//! - **Content addressing.** A blob's digest is the blake3 of its bytes;
//!   identical bytes are stored once (dedup by digest), within a batch and
//!   across batches.
//! - **Reads re-hash.** [`Verify::Hash`] refuses bytes whose digest does not
//!   match the record ([`StoreError::Corrupt`]); corrupt data is never
//!   served by a hashed read. [`Verify::None`] checks sizes only.
//!   [`StoreBackend::verify`] re-hashes everything and reports each bad or
//!   missing blob and each unreadable record as one issue.
//! - **Name order.** [`StoreBackend::records`] yields every live artifact,
//!   readable or not, sorted by name, each exactly once.
//! - **Unreadable records** (malformed, or of a newer record format) are
//!   listed as `Err(UnreadableRecord)` with their reason, `get` of that name
//!   fails with [`StoreError::Unreadable`], everything else reads normally,
//!   `remove` removes them and `gc` refuses while any exists
//!   ([`StoreError::UnreadableRecords`]).
//! - **Read-only mode.** A store that cannot be written opens read-only:
//!   reads work, and every write ([`StoreBackend::writer`],
//!   [`StoreBackend::commit`], [`StoreBackend::remove`],
//!   [`StoreBackend::gc`]) fails with the same error as
//!   [`StoreBackend::check_writable`] and changes nothing.
//! - **Names validated** on write ([`StoreError::InvalidName`]); **blob
//!   names safe** (relative, no `..`, no separator, no control character),
//!   checked on write and again when a record is read, so a hostile record
//!   is unreadable rather than dangerous.
//! - **gc safety.** gc deletes only data no live record references and
//!   never data of a save that is still being written or committed
//!   (temp/spool files younger than the grace period, blobs a concurrent
//!   commit has just decided to reuse).
//! - **Threads and processes** may share one store concurrently without
//!   corrupting it (`Send + Sync`; how a backend serialises commits — a
//!   `flock`, immutable objects — is its own business).
//!
//! Decision: a blob is read through its record's [`BlobRecord`] (which
//! carries the digest and the backend's location), not by a bare digest:
//! a content-addressed backend keys on `blob.digest`, the directory store
//! on `blob.location`, and both can re-hash against the digest.
//! Decision: [`StoreBackend::records`] returns a boxed iterator so an index
//! can stream (SPEC §6 "`ls` and `verify` stream in constant memory");
//! [`DirStore`](super::DirStore) still collects its in-memory index. It
//! fails only when the listing cannot start; the directory store never
//! does (it serves its last good view and logs why it could not refresh).
//! Decision: the seam is `pub` so its guarantees are documented where users
//! read them; backends live in this crate (they share the writer and the
//! record format), so nothing outside is expected to implement it.

use std::fmt;
use std::path::{Path, PathBuf};

use super::error::StoreError;
use super::gc::{GcReport, VerifyReport};
use super::record::{validate_name, BlobRecord, Record, UnreadableRecord};
use super::writer::{ArtifactWriter, PendingArtifact, Spool};
use super::{BlobData, Listed, Verify};

/// Every live artifact, readable or not, in name order.
pub type Records<'a> = Box<dyn Iterator<Item = Result<Record, UnreadableRecord>> + 'a>;

/// A place artifacts are kept; see the module docs for the guarantees
/// every implementation keeps.
pub trait StoreBackend: Send + Sync + fmt::Debug {
    // ---- identity and mode ----

    /// Where the store is, for messages: a canonical directory, or a URL
    /// written as a path.
    fn location(&self) -> &Path;

    /// Whether the store was opened read-only (every write fails).
    fn is_read_only(&self) -> bool;

    /// `Ok` if the store may be written; otherwise the error every write
    /// fails with ([`StoreError::ReadOnly`], [`StoreError::NewerStoreFormat`]
    /// or [`StoreError::BadFormatMarker`]).
    fn check_writable(&self) -> Result<(), StoreError>;

    /// `Ok` if an artifact named `name` may be written: the name is valid
    /// (1–255 bytes, no `/`, no control character, no leading `.`, no
    /// leading or trailing whitespace) and the store is writable.
    fn check_write(&self, name: &str) -> Result<(), StoreError> {
        validate_name(name).map_err(|reason| StoreError::InvalidName {
            name: name.to_owned(),
            reason,
        })?;
        self.check_writable()
    }

    // ---- writing ----

    /// Where writers spool blobs that outgrow memory before commit.
    fn spool(&self) -> &Spool;

    /// Starts writing the artifact `name`; nothing is visible until
    /// [`StoreBackend::commit`]. Fails at once on a bad name or a read-only
    /// store.
    fn writer(&self, name: &str) -> Result<ArtifactWriter<'_>, StoreError> {
        self.check_write(name)?;
        Ok(ArtifactWriter::new(self.spool(), name.to_owned()))
    }

    /// Commits a batch all-or-nothing and returns its records in batch
    /// order. Artifacts written for another store are refused
    /// ([`StoreError::ForeignPending`]).
    fn commit(&self, batch: Vec<PendingArtifact>) -> Result<Vec<Record>, StoreError>;

    /// Removes the artifact `name`, readable or not, and returns what it
    /// was ([`StoreError::NotFound`] if there is none). Its data stays until
    /// [`StoreBackend::gc`].
    fn remove(&self, name: &str) -> Result<Listed, StoreError>;

    // ---- reading ----

    /// The live record named `name`; [`StoreError::NotFound`] or
    /// [`StoreError::Unreadable`].
    fn get(&self, name: &str) -> Result<Record, StoreError>;

    /// The live records of `names`, in order: what [`StoreBackend::get`]
    /// gives for each, the first failure ending it. A backend whose
    /// lookups are requests (S3) makes them concurrently.
    fn get_many(&self, names: &[&str]) -> Result<Vec<Record>, StoreError> {
        names.iter().map(|name| self.get(name)).collect()
    }

    /// Every live artifact in name order; see [`Records`].
    fn records(&self) -> Result<Records<'_>, StoreError>;

    /// The bytes of `blob`, one of `record`'s blobs.
    fn read_blob(
        &self,
        record: &Record,
        blob: &BlobRecord,
        verify: Verify,
    ) -> Result<BlobData, StoreError>;

    /// Every blob of `record`, in record order.
    fn read_blobs(&self, record: &Record, verify: Verify) -> Result<Vec<BlobData>, StoreError> {
        record
            .blobs
            .iter()
            .map(|blob| self.read_blob(record, blob, verify))
            .collect()
    }

    /// Every blob of each of `records`, in order: what
    /// [`StoreBackend::read_blobs`] gives for each, the first failure
    /// ending it. A backend whose reads are requests (S3) makes them
    /// concurrently and fetches the wanted ranges of a pack together.
    fn read_many(
        &self,
        records: &[Record],
        verify: Verify,
    ) -> Result<Vec<Vec<BlobData>>, StoreError> {
        records
            .iter()
            .map(|record| self.read_blobs(record, verify))
            .collect()
    }

    // ---- maintenance ----

    /// Deletes data no live record references (see "gc safety").
    fn gc(&self) -> Result<GcReport, StoreError>;

    /// Re-hashes every blob of every live record.
    fn verify(&self) -> Result<VerifyReport, StoreError>;

    /// The local file holding `blob`'s stored bytes, if this backend keeps
    /// one (diagnostics and tests).
    fn blob_path(&self, blob: &BlobRecord) -> Option<PathBuf>;
}
