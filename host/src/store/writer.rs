//! Writing one artifact: [`ArtifactWriter`] streams named blobs, hashing
//! with blake3 in the same pass, and [`ArtifactWriter::finish`] turns them
//! into a [`PendingArtifact`] for
//! [`StoreBackend::commit`](super::StoreBackend::commit).
//!
//! The writer knows no backend: it spools blobs that outgrow memory into a
//! [`Spool`] (a directory of temp files the backend owns: the directory
//! store's `tmp/`, an object store's local cache) and learns a blob's
//! digest only when the blob is finished. What a backend does with a
//! [`PendingArtifact`] (rename temp files into `blobs/`, or upload them by
//! digest; append small blobs to a pack file, or put them in one pack
//! object) is decided at commit.
//!
//! Where a blob's bytes go while it is being written:
//! - below its spill size it is buffered in memory (small blobs are appended
//!   to a pack at commit, all of a batch in one write);
//! - a [`BlobLayout::Raw`] blob reaching [`RAW_FILE_THRESHOLD`] (64 KiB)
//!   spills to a temp file in the spool (`tmp/<instance>-<n>.tmp` of a
//!   directory store), renamed at commit to `blobs/<2 hex>/<digest>` (one
//!   uncompressed, mappable file);
//! - a [`BlobLayout::Compressible`] blob larger than [`PACK_BLOB_MAX`]
//!   (1 MiB) streams through a zstd encoder into a temp file, renamed at
//!   commit to `blobs/<2 hex>/<digest>.zst`.
//!
//! Invariants: nothing a writer does is visible to readers before commit.
//! Dropping a writer or a [`PendingArtifact`] deletes its temp files; a temp
//! file leaked by a crash is deleted by `open`/`gc` once older than the gc
//! grace period. A large blob is never held whole in memory.
//!
//! Decision: a small compressible blob (4 KiB ≤ size ≤ 1 MiB) is zstd'd
//! (level 3) in memory and kept compressed only if that is smaller. A
//! larger one is always stored compressed: deciding afterwards would need
//! the uncompressed bytes, which were never kept; zstd stores
//! incompressible input as raw blocks, so the loss is a few bytes per
//! 128 KiB.
//! Decision (issue #13, a save at the disk's speed): a slice of at least
//! [`PARALLEL_HASH_MIN`] handed to one `write` is hashed on a second thread
//! while this one writes it (both read the same memory: no copy, no second
//! pass over the bytes), and a raw file's writeback is started every
//! [`WRITEBACK_CHUNK`] with `sync_file_range` (and for its tail when the
//! blob ends), so the disk works while the rest is produced and the fsync
//! at commit has little left. Plugins hand a
//! tensor's data to the sink in one call, so a large save gets both. The
//! thread is scoped to the call; if none can be spawned, the slice is
//! hashed inline as a small one is.
//! Decision: after any I/O error the writer is failed for good
//! ([`StoreError::WriterFailed`]): a blob with a hole must not be committed.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::error::{IoContext, StoreError};
use super::record::{normalize_info, validate_blob_name, RecordMeta};
use super::{failpoint, sys};

/// Raw blobs of at least this many bytes get their own file.
pub const RAW_FILE_THRESHOLD: u64 = 64 * 1024;
/// Compressible blobs larger than this are streamed to their own zstd file;
/// smaller ones are packed.
pub const PACK_BLOB_MAX: u64 = 1024 * 1024;
/// Compressible blobs smaller than this are never compressed.
pub const COMPRESS_MIN: u64 = 4 * 1024;
/// The zstd level used for compressible blobs.
pub const ZSTD_LEVEL: i32 = 3;
/// Slices at least this large handed to one `write` are hashed on a second
/// thread while this one writes them (below it, a thread costs more than it
/// saves).
pub const PARALLEL_HASH_MIN: usize = 4 << 20;
/// A raw blob file's writeback is started every this many bytes.
pub const WRITEBACK_CHUNK: u64 = 16 << 20;

/// How a blob should be stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlobLayout {
    /// An mmap-readable format (safetensors, Arrow IPC): stored
    /// uncompressed, in its own file once it reaches
    /// [`RAW_FILE_THRESHOLD`], so readers can map it.
    Raw,
    /// Anything else: packed when small, zstd-compressed when that helps.
    Compressible,
}

/// Where one store instance's writers put blob bytes that outgrow memory
/// before commit: `<dir>/<prefix>-<n>.tmp`, created exclusively.
#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    prefix: String,
    counter: AtomicU64,
    /// Identifies the store the spool belongs to; pending artifacts carry
    /// it so a store refuses another store's ([`StoreError::ForeignPending`]).
    store_id: Arc<PathBuf>,
}

impl Spool {
    /// A spool writing into `dir`, naming files `<prefix>-<n>.tmp`.
    pub(crate) fn new(dir: PathBuf, prefix: String, store_id: Arc<PathBuf>) -> Spool {
        Spool {
            dir,
            prefix,
            counter: AtomicU64::new(0),
            store_id,
        }
    }

    /// Creates a new temp file, deleted on drop unless disarmed.
    pub(crate) fn create_temp(&self) -> Result<(File, TempFile), StoreError> {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let path = self.dir.join(format!("{}-{n}.tmp", self.prefix));
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .at(&path)?;
        Ok((file, TempFile::new(path)))
    }
}

/// A temp file that is deleted on drop unless disarmed.
#[derive(Debug)]
pub(crate) struct TempFile {
    path: PathBuf,
    armed: bool,
}

impl TempFile {
    pub(crate) fn new(path: PathBuf) -> TempFile {
        TempFile { path, armed: true }
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Keeps the file (it was renamed away).
    pub(crate) fn disarm(&mut self) {
        self.armed = false;
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if self.armed {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// A finished blob waiting for commit.
#[derive(Debug)]
pub(crate) struct PendingBlob {
    pub name: String,
    pub size: u64,
    pub digest: blake3::Hash,
    pub body: Body,
}

/// Where a finished blob's stored bytes are.
#[derive(Debug)]
pub(crate) enum Body {
    /// In memory, to be appended to a pack.
    Inline { stored: Vec<u8>, zstd: bool },
    /// In a temp file, to be renamed into `blobs/`.
    Temp { temp: TempFile, zstd: bool },
}

/// A finished, not yet committed artifact. Dropping it leaves no record
/// and deletes its temp files.
#[derive(Debug)]
pub struct PendingArtifact {
    pub(crate) store_dir: Arc<PathBuf>,
    pub(crate) name: String,
    pub(crate) meta: RecordMeta,
    pub(crate) blobs: Vec<PendingBlob>,
}

impl PendingArtifact {
    /// The artifact's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The number of blobs.
    pub fn blob_count(&self) -> usize {
        self.blobs.len()
    }
}

enum Sink {
    Memory(Vec<u8>),
    Raw(BufWriter<File>, TempFile),
    Zstd(
        zstd::stream::write::Encoder<'static, BufWriter<File>>,
        TempFile,
    ),
}

struct Current {
    name: String,
    layout: BlobLayout,
    hasher: blake3::Hasher,
    size: u64,
    sink: Sink,
}

/// Streams the blobs of one artifact into the store; see the module docs.
pub struct ArtifactWriter<'s> {
    spool: &'s Spool,
    name: String,
    blobs: Vec<PendingBlob>,
    current: Option<Current>,
    failed: bool,
}

impl std::fmt::Debug for ArtifactWriter<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArtifactWriter")
            .field("name", &self.name)
            .field("blobs", &self.blobs.len())
            .field("failed", &self.failed)
            .finish()
    }
}

impl<'s> ArtifactWriter<'s> {
    /// A writer for the artifact `name` (already validated by the
    /// backend) spooling into `spool`.
    pub(crate) fn new(spool: &'s Spool, name: String) -> ArtifactWriter<'s> {
        ArtifactWriter {
            spool,
            name,
            blobs: Vec::new(),
            current: None,
            failed: false,
        }
    }

    /// Ends the blob in progress (if any) and starts the blob `name`.
    ///
    /// Errors on an invalid or repeated blob name (the writer stays usable)
    /// and on I/O errors ending the previous blob (the writer is failed).
    pub fn begin_blob(&mut self, name: &str, layout: BlobLayout) -> Result<(), StoreError> {
        self.check_failed()?;
        validate_blob_name(name).map_err(|reason| StoreError::InvalidBlobName {
            name: self.name.clone(),
            blob: name.to_owned(),
            reason,
        })?;
        let in_progress = self.current.as_ref().is_some_and(|c| c.name == name);
        if in_progress || self.blobs.iter().any(|b| b.name == name) {
            return Err(StoreError::DuplicateBlob {
                name: self.name.clone(),
                blob: name.to_owned(),
            });
        }
        self.end_blob()?;
        self.current = Some(Current {
            name: name.to_owned(),
            layout,
            hasher: blake3::Hasher::new(),
            size: 0,
            sink: Sink::Memory(Vec::new()),
        });
        Ok(())
    }

    /// Appends bytes to the blob in progress.
    pub fn write(&mut self, bytes: &[u8]) -> Result<(), StoreError> {
        self.check_failed()?;
        let Some(current) = self.current.as_mut() else {
            return Err(StoreError::NoBlobInProgress {
                name: self.name.clone(),
            });
        };
        let result = Self::write_current(self.spool, current, bytes);
        if result.is_err() {
            self.failed = true;
        }
        result
    }

    fn write_current(spool: &Spool, cur: &mut Current, bytes: &[u8]) -> Result<(), StoreError> {
        let start = cur.size;
        cur.size += bytes.len() as u64;
        if let Sink::Memory(buf) = &mut cur.sink {
            let spill = match cur.layout {
                BlobLayout::Raw => cur.size >= RAW_FILE_THRESHOLD,
                BlobLayout::Compressible => cur.size > PACK_BLOB_MAX,
            };
            if !spill {
                cur.hasher.update(bytes);
                buf.extend_from_slice(bytes);
                return Ok(());
            }
            // The buffered prefix was hashed as it came; it goes first.
            let buffered = std::mem::take(buf);
            let (file, temp) = spool.create_temp()?;
            let file = BufWriter::with_capacity(256 * 1024, file);
            cur.sink = match cur.layout {
                BlobLayout::Raw => Sink::Raw(file, temp),
                BlobLayout::Compressible => {
                    let encoder =
                        zstd::stream::write::Encoder::new(file, ZSTD_LEVEL).at(temp.path())?;
                    Sink::Zstd(encoder, temp)
                }
            };
            Self::write_sink(&mut cur.sink, 0, &buffered)?;
        }
        Self::hash_and_write(&mut cur.hasher, &mut cur.sink, start, bytes)
    }

    /// Hashes `bytes` and writes them to `sink`: for a large slice on two
    /// cores at once (a second thread hashes while this one writes, both
    /// reading the same memory: no copy, no second pass), so a save runs at
    /// the speed of the slower of blake3 and the disk rather than their sum.
    /// Kept out of line: the small-blob path above stays as small as it was
    /// (measured: inlined, `save_many` of 10,000 small artifacts lost ~7%).
    #[inline(never)]
    fn hash_and_write(
        hasher: &mut blake3::Hasher,
        sink: &mut Sink,
        start: u64,
        bytes: &[u8],
    ) -> Result<(), StoreError> {
        if bytes.len() >= PARALLEL_HASH_MIN {
            let parallel = std::thread::scope(|scope| {
                let hashing = std::thread::Builder::new()
                    .name("stowage-hash".into())
                    .spawn_scoped(scope, || {
                        hasher.update(bytes);
                    })
                    .ok()?;
                let written = Self::write_sink(sink, start, bytes);
                Some(match hashing.join() {
                    Ok(()) => written,
                    Err(_) => Err(StoreError::HashingFailed),
                })
            });
            // No thread to be had: hash here, as for a small slice.
            if let Some(result) = parallel {
                return result;
            }
        }
        hasher.update(bytes);
        Self::write_sink(sink, start, bytes)
    }

    /// Writes `bytes`, which start at offset `start` of the blob, to `sink`.
    /// A raw file's writeback is started at every [`WRITEBACK_CHUNK`]
    /// boundary, so the disk works while the rest is produced.
    fn write_sink(sink: &mut Sink, start: u64, bytes: &[u8]) -> Result<(), StoreError> {
        match sink {
            Sink::Memory(buf) => {
                buf.extend_from_slice(bytes);
                Ok(())
            }
            Sink::Raw(_, temp) | Sink::Zstd(_, temp) if failpoint::spool_is_full() => {
                Err(failpoint::no_space()).at(temp.path())
            }
            Sink::Raw(file, temp) => {
                let mut offset = start;
                let mut rest = bytes;
                while !rest.is_empty() {
                    let to_boundary = WRITEBACK_CHUNK - offset % WRITEBACK_CHUNK;
                    let take =
                        usize::try_from(to_boundary).map_or(rest.len(), |n| n.min(rest.len()));
                    let (piece, tail) = rest.split_at(take);
                    file.write_all(piece).at(temp.path())?;
                    offset += piece.len() as u64;
                    if offset.is_multiple_of(WRITEBACK_CHUNK) {
                        file.flush().at(temp.path())?;
                        sys::start_writeback(
                            file.get_ref(),
                            offset - WRITEBACK_CHUNK,
                            WRITEBACK_CHUNK,
                        );
                    }
                    rest = tail;
                }
                Ok(())
            }
            Sink::Zstd(encoder, temp) => encoder.write_all(bytes).at(temp.path()),
        }
    }

    /// The number of blobs begun so far (including the one in progress).
    pub fn blob_count(&self) -> usize {
        self.blobs.len() + usize::from(self.current.is_some())
    }

    /// Moves every blob of `part` (another writer of the same store) into
    /// this artifact, each renamed `prefix` + its name, and returns `(name,
    /// new name)` per blob. A composite writes each part with a writer of
    /// its own, so a part whose serializer fails leaves nothing here.
    pub fn adopt(
        &mut self,
        prefix: &str,
        mut part: ArtifactWriter<'s>,
    ) -> Result<Vec<(String, String)>, StoreError> {
        self.check_failed()?;
        part.check_failed()?;
        part.end_blob()?;
        self.end_blob()?;
        let mut names = Vec::with_capacity(part.blobs.len());
        for mut blob in std::mem::take(&mut part.blobs) {
            let renamed = format!("{prefix}{}", blob.name);
            validate_blob_name(&renamed).map_err(|reason| StoreError::InvalidBlobName {
                name: self.name.clone(),
                blob: renamed.clone(),
                reason,
            })?;
            if self.blobs.iter().any(|b| b.name == renamed) {
                return Err(StoreError::DuplicateBlob {
                    name: self.name.clone(),
                    blob: renamed,
                });
            }
            names.push((std::mem::replace(&mut blob.name, renamed.clone()), renamed));
            self.blobs.push(blob);
        }
        Ok(names)
    }

    /// Ends the last blob and returns the artifact, ready for commit.
    ///
    /// Errors with [`StoreError::NoBlobs`] if no blob was begun.
    pub fn finish(mut self, mut meta: RecordMeta) -> Result<PendingArtifact, StoreError> {
        self.check_failed()?;
        self.end_blob()?;
        if self.blobs.is_empty() {
            return Err(StoreError::NoBlobs { name: self.name });
        }
        meta.serializer_info = normalize_info(std::mem::take(&mut meta.serializer_info));
        Ok(PendingArtifact {
            store_dir: Arc::clone(&self.spool.store_id),
            name: self.name,
            meta,
            blobs: self.blobs,
        })
    }

    fn check_failed(&self) -> Result<(), StoreError> {
        if self.failed {
            return Err(StoreError::WriterFailed {
                name: self.name.clone(),
            });
        }
        Ok(())
    }

    fn end_blob(&mut self) -> Result<(), StoreError> {
        let Some(cur) = self.current.take() else {
            return Ok(());
        };
        match Self::seal(cur) {
            Ok(blob) => {
                self.blobs.push(blob);
                Ok(())
            }
            Err(e) => {
                self.failed = true;
                Err(e)
            }
        }
    }

    fn seal(cur: Current) -> Result<PendingBlob, StoreError> {
        let digest = cur.hasher.finalize();
        let body = match cur.sink {
            Sink::Memory(buf) => {
                // In-memory compression of a slice does not fail; if it
                // did, the blob would simply be stored plain.
                let compressed = (cur.layout == BlobLayout::Compressible
                    && cur.size >= COMPRESS_MIN)
                    .then(|| zstd::bulk::compress(&buf, ZSTD_LEVEL).ok())
                    .flatten()
                    .filter(|packed| packed.len() < buf.len());
                match compressed {
                    Some(stored) => Body::Inline { stored, zstd: true },
                    None => Body::Inline {
                        stored: buf,
                        zstd: false,
                    },
                }
            }
            Sink::Raw(file, temp) => {
                let file = file
                    .into_inner()
                    .map_err(|e| StoreError::io(temp.path(), e.into_error()))?;
                // The tail after the last chunk boundary: its writeback
                // starts now too, while the next blob (a composite's next
                // part) is produced, not at the commit's fsync.
                let tail = cur.size % WRITEBACK_CHUNK;
                sys::start_writeback(&file, cur.size - tail, tail);
                failpoint::hit("after-blob");
                Body::Temp { temp, zstd: false }
            }
            Sink::Zstd(encoder, temp) => {
                let file = encoder.finish().at(temp.path())?;
                file.into_inner()
                    .map_err(|e| StoreError::io(temp.path(), e.into_error()))?;
                failpoint::hit("after-blob");
                Body::Temp { temp, zstd: true }
            }
        };
        Ok(PendingBlob {
            name: cur.name,
            size: cur.size,
            digest,
            body,
        })
    }
}
