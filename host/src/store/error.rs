//! [`StoreError`]: every way a store operation can fail.
//!
//! Invariants: one variant per distinct check, each carrying the data its
//! one-line, lowercase message needs (artifact name, blob name, path,
//! versions). Callers match on variants, never on message text.
//!
//! Decision: names read from records are escaped (`text::escape_control`)
//! where a message prints them bare, so an error stays one line.
//! Decision: blob data that cannot be decoded (a broken zstd frame) is its
//! own variant, [`StoreError::Undecodable`], distinct from a digest mismatch,
//! so `verify` can tell "damaged container" from "wrong bytes".

use std::io;
use std::path::PathBuf;

use crate::text::escape_control;

/// Everything a [`DirStore`](super::DirStore) operation can fail with.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No live artifact has this name.
    #[error("no artifact named {}", escape_control(.name))]
    NotFound {
        /// The name that was looked up.
        name: String,
    },
    /// An artifact name breaks the naming rules (SPEC §7: 1–255 bytes, no
    /// control character, no `/`, no leading `.`, no leading or trailing
    /// whitespace).
    #[error("invalid artifact name {name:?}: {reason}")]
    InvalidName {
        /// The rejected name.
        name: String,
        /// Which rule it breaks.
        reason: &'static str,
    },
    /// A blob name breaks the naming rules (one path component of 1–255
    /// bytes: no `/` or `\\`, not `.` or `..`, no control character).
    #[error("invalid blob name {blob:?} in artifact {}: {reason}", escape_control(.name))]
    InvalidBlobName {
        /// The artifact being written.
        name: String,
        /// The rejected blob name.
        blob: String,
        /// Which rule it breaks.
        reason: &'static str,
    },
    /// Two blobs of one artifact have the same name.
    #[error("duplicate blob {blob} in artifact {}", escape_control(.name))]
    DuplicateBlob {
        /// The artifact being written.
        name: String,
        /// The repeated blob name.
        blob: String,
    },
    /// `write` was called before any `begin_blob`.
    #[error("no blob in progress in artifact {}; call begin_blob first", escape_control(.name))]
    NoBlobInProgress {
        /// The artifact being written.
        name: String,
    },
    /// `finish` was called on a writer that wrote no blob.
    #[error("artifact {} has no blobs", escape_control(.name))]
    NoBlobs {
        /// The artifact being written.
        name: String,
    },
    /// The thread hashing a large blob stopped (a bug, not an input): the
    /// blob is not committed.
    #[error("the thread hashing a blob stopped unexpectedly; nothing was committed")]
    HashingFailed,

    /// An earlier write of this writer failed; the artifact cannot be
    /// completed and must be written again.
    #[error("writer for artifact {} failed earlier and cannot continue", escape_control(.name))]
    WriterFailed {
        /// The artifact being written.
        name: String,
    },
    /// A pending artifact was handed to a store other than the one that
    /// wrote its blobs.
    #[error("pending artifact {} was written for store {}, not {}", escape_control(.name), .written_for.display(), .store.display())]
    ForeignPending {
        /// The pending artifact's name.
        name: String,
        /// The store directory its blobs live in.
        written_for: PathBuf,
        /// The store it was committed to.
        store: PathBuf,
    },
    /// A blob's bytes do not hash to the digest its record carries.
    #[error("blob {blob} of artifact {} is corrupt: expected blake3 {expected}, got {actual}", escape_control(.name))]
    Corrupt {
        /// The artifact.
        name: String,
        /// The blob.
        blob: String,
        /// The digest in the record.
        expected: String,
        /// The digest of the bytes on disk.
        actual: String,
    },
    /// A blob's stored data has a different length than its record says
    /// (a truncated or extended file, a pack range past the end).
    #[error(
        "blob {blob} of artifact {} has {actual} bytes on disk, its record says {expected}", escape_control(.name)
    )]
    SizeMismatch {
        /// The artifact.
        name: String,
        /// The blob.
        blob: String,
        /// The size the record carries (stored size for packed ranges).
        expected: u64,
        /// The size found.
        actual: u64,
    },
    /// A blob's stored container (a zstd frame) cannot be decoded.
    #[error("blob {blob} of artifact {} cannot be decoded from {}: {source}", escape_control(.name), .path.display())]
    Undecodable {
        /// The artifact.
        name: String,
        /// The blob.
        blob: String,
        /// The file holding it.
        path: PathBuf,
        /// The decoder's error.
        #[source]
        source: io::Error,
    },
    /// The file holding a blob does not exist.
    #[error("blob {blob} of artifact {} is missing: {} does not exist", escape_control(.name), .path.display())]
    MissingBlob {
        /// The artifact.
        name: String,
        /// The blob.
        blob: String,
        /// The file that should hold it.
        path: PathBuf,
    },
    /// An operating-system call on a store file failed.
    #[error("i/o error on {}: {source}", .path.display())]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The index log holds damage that a crash cannot produce (a bad entry
    /// followed by more data); committed records after it cannot be trusted.
    #[error("index log {} is corrupt at offset {offset}: {reason}", .path.display())]
    LogCorrupt {
        /// The log file.
        path: PathBuf,
        /// Byte offset of the first bad entry.
        offset: u64,
        /// What is wrong with it.
        reason: String,
    },
    /// A snapshot run or the manifest of the index (store format 2) is
    /// damaged: it is written whole and renamed into place, so a crash
    /// cannot produce this.
    #[error("store index file {} is damaged: {reason}", .path.display())]
    IndexCorrupt {
        /// The run or manifest file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// One commit batch would need an index entry above the 4 GiB frame
    /// limit.
    #[error("index entry of {bytes} bytes exceeds the 4 GiB frame limit; commit fewer artifacts per batch")]
    EntryTooLarge {
        /// The entry's payload size.
        bytes: usize,
    },
    /// The artifact's record cannot be read by this build (malformed, or of
    /// a newer record format version); other artifacts read normally.
    #[error("artifact {} is unreadable: {reason}", escape_control(.name))]
    Unreadable {
        /// The artifact's name (or the placeholder `ls` shows for a record
        /// without one).
        name: String,
        /// Why, one line.
        reason: String,
    },
    /// gc (and pack compaction) cannot know which blobs an unreadable
    /// record uses, so it refuses while any exists.
    #[error("{operation} refused: {count} unreadable record(s), first: {}; they may use any blob — rm them or upgrade stowage", escape_control(.first))]
    UnreadableRecords {
        /// What was refused (`gc`).
        operation: &'static str,
        /// How many records are unreadable.
        count: usize,
        /// The first of them by name.
        first: String,
    },
    /// The store is open read-only (the directory or its files cannot be
    /// written: permissions or a read-only mount), and a write was asked.
    #[error("store {} is read-only", .dir.display())]
    ReadOnly {
        /// The store directory.
        dir: PathBuf,
    },
    /// The store's format marker names a newer store format than this build
    /// writes; writing could corrupt it.
    #[error("store {} has format {found}; this build writes format {supported} — upgrade stowage", .dir.display())]
    NewerStoreFormat {
        /// The store directory.
        dir: PathBuf,
        /// The format in the marker.
        found: u64,
        /// The format this build writes.
        supported: u32,
    },
    /// The store's format marker exists but is not `stowage-store N`.
    #[error("store format marker {} is malformed: {reason}", .path.display())]
    BadFormatMarker {
        /// The marker file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
}

impl StoreError {
    /// Whether this is [`StoreError::NotFound`].
    pub fn is_not_found(&self) -> bool {
        matches!(self, StoreError::NotFound { .. })
    }

    /// Wraps an I/O error with the path it happened on.
    pub(crate) fn io(path: impl Into<PathBuf>, source: io::Error) -> StoreError {
        StoreError::Io {
            path: path.into(),
            source,
        }
    }
}

/// Adds `.at(path)` to `io::Result` so every I/O error names its path.
pub(crate) trait IoContext<T> {
    /// Converts the error into [`StoreError::Io`] naming `path`.
    fn at(self, path: impl Into<PathBuf>) -> Result<T, StoreError>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn at(self, path: impl Into<PathBuf>) -> Result<T, StoreError> {
        self.map_err(|source| StoreError::io(path, source))
    }
}
