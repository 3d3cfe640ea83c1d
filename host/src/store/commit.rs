//! [`DirStore::commit`]: a batch of finished artifacts becomes visible
//! all-or-nothing, in phases named after the store's invariants (module
//! docs of `store/mod.rs`):
//!
//! 1. [`DirStore::ensure_ours`] — every pending artifact was written for this store.
//! 2. [`make_large_blobs_durable`] — each large blob's temp file is fsynced
//!    *before* the lock is taken, so the lock is held for metadata work only
//!    (several at once, on a few threads: [`in_parallel`]).
//! 3. lock + refresh — the in-process mutex and the `flock`, the format
//!    marker re-read ([`DirStore::lock_for_write`]), then the log replayed up to
//!    what other processes appended (`Tails::Truncate`).
//! 4. [`DirStore::plan`] — under the lock (so gc cannot take a blob between the
//!    dedup decision and the commit): small blobs into one pack buffer,
//!    deduplicated against live pack ranges and within the batch; large
//!    blobs become renames.
//! 5. [`DirStore::append_pack`] — one pack append + one pack fsync.
//! 6. [`DirStore::rename_large_blobs`] — renames into `blobs/`, then one fsync
//!    per touched directory.
//! 7. index append + fsync ([`DirStore::append_entry`]) — the only step that
//!    makes anything visible; every byte it references is durable by now.
//! 8. apply — the appended entry goes into the in-memory index.
//!
//! A failure in any phase before 7 leaves no record: temp files are
//! deleted when the plan is dropped, pack bytes already appended are
//! unreferenced space for gc.

use std::collections::{BTreeSet, HashMap};
use std::fs::{self, OpenOptions};
use std::io;
use std::sync::Arc;
use std::time::SystemTime;

use super::error::IoContext;
use super::index::Entry;
use super::pack::PackWriter;
use super::record::{self, BlobLocation, BlobRecord, PackLoc, Record};
use super::writer::{Body, PendingArtifact, TempFile};
use super::{
    failpoint, missing_or_io, sync_dir, DirStore, Locked, StoreError, Tails, BLOBS_DIR, PACKS_DIR,
};

/// A large blob's temp file waiting to be renamed into `blobs/`.
struct Rename {
    temp: TempFile,
    digest: String,
    zstd: bool,
    artifact: String,
    blob: String,
}

/// What a batch will write, decided under the lock.
struct Plan {
    /// The batch's new small blobs, to be appended to a pack in one write.
    pack_buf: Vec<u8>,
    /// `(record, blob)` indices whose pack location is relative to
    /// `pack_buf` until [`DirStore::append_pack`] fixes pack id and offset.
    patch: Vec<(usize, usize)>,
    renames: Vec<Rename>,
    records: Vec<Record>,
}

impl DirStore {
    /// Commits a batch all-or-nothing: one pack append and fsync for the
    /// small blobs, renames of the large ones, then one index append and
    /// fsync. Returns the new records, in batch order. A name already in
    /// the store keeps its old record until this returns.
    pub fn commit(&self, artifacts: Vec<PendingArtifact>) -> Result<Vec<Record>, StoreError> {
        if artifacts.is_empty() {
            return Ok(Vec::new());
        }
        self.ensure_ours(&artifacts)?;
        self.check_writable()?;
        make_large_blobs_durable(&artifacts)?;

        let mut locked = self.lock_for_write()?;
        self.refresh(Tails::Truncate)?;
        let count = artifacts.len();
        let mut plan = self.plan(artifacts);
        self.append_pack(&mut locked, &mut plan)?;
        failpoint::hit("after-blob-sync");
        self.rename_large_blobs(plan.renames)?;
        failpoint::hit("before-index");

        let entry = Entry {
            put: plan.records,
            ..Entry::default()
        };
        let (at, len) = self.append_entry(&entry, true)?;
        let records = entry.put.clone();
        self.apply_appended(at, len, entry);
        drop(locked);
        tracing::debug!(target: "stowage::store", artifacts = count, "batch committed");
        Ok(records)
    }

    /// Phase 1: refuses artifacts written for another store.
    fn ensure_ours(&self, artifacts: &[PendingArtifact]) -> Result<(), StoreError> {
        for artifact in artifacts {
            if !Arc::ptr_eq(&artifact.store_dir, &self.dir) && artifact.store_dir != self.dir {
                return Err(StoreError::ForeignPending {
                    name: artifact.name.clone(),
                    written_for: artifact.store_dir.to_path_buf(),
                    store: self.dir.to_path_buf(),
                });
            }
        }
        Ok(())
    }

    /// Phase 4, under the lock: assigns every blob its location. Small
    /// blobs go into one pack buffer (dedup against live pack ranges and
    /// within the batch), large blobs to renames. Every record of the batch
    /// gets the same `created` time.
    fn plan(&self, artifacts: Vec<PendingArtifact>) -> Plan {
        let created = record::rfc3339_utc(SystemTime::now());
        let mut plan = Plan {
            pack_buf: Vec::new(),
            patch: Vec::new(),
            renames: Vec::new(),
            records: Vec::with_capacity(artifacts.len()),
        };
        let mut batch_dedup: HashMap<blake3::Hash, PackLoc> = HashMap::new();
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
                            let buf = &mut plan.pack_buf;
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
                            plan.patch.push((plan.records.len(), blob_records.len()));
                            BlobLocation::Pack(loc)
                        }
                    }
                    Body::Temp { temp, zstd } => {
                        plan.renames.push(Rename {
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
            let format_version = record::format_version_for(&meta);
            plan.records.push(Record {
                name,
                meta,
                blobs: blob_records,
                created: created.clone(),
                format_version,
            });
        }
        plan
    }

    /// Phase 5: one pack append and one pack fsync for the batch's new
    /// small blobs, then their locations are made absolute.
    fn append_pack(&self, locked: &mut Locked<'_>, plan: &mut Plan) -> Result<(), StoreError> {
        if plan.pack_buf.is_empty() {
            return Ok(());
        }
        let packs_dir = self.dir.join(PACKS_DIR);
        let limit = locked.state.pack_limit;
        let writer = PackWriter::select(&packs_dir, &mut locked.state.pack, limit, &|_| false)?;
        let (id, base) = (writer.id(), writer.len()?);
        for &(r, b) in &plan.patch {
            if let BlobLocation::Pack(loc) = &mut plan.records[r].blobs[b].location {
                loc.pack = id;
                loc.offset += base;
            }
        }
        writer.append(&plan.pack_buf)?;
        failpoint::hit("after-blob");
        writer.sync(&packs_dir)
    }

    /// Phase 6: renames large blobs into `blobs/` (skipping content that is
    /// already stored), then fsyncs every touched directory once.
    fn rename_large_blobs(&self, renames: Vec<Rename>) -> Result<(), StoreError> {
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
        let touched_dirs: Vec<_> = touched_dirs.into_iter().collect();
        in_parallel(&touched_dirs, |dir| sync_dir(dir))?;
        if new_subdir {
            sync_dir(&blobs_dir)?;
        }
        Ok(())
    }
}

/// Phase 2: fsyncs each large blob's temp file, before the lock is taken.
fn make_large_blobs_durable(artifacts: &[PendingArtifact]) -> Result<(), StoreError> {
    let temps: Vec<(&str, &str, &std::path::Path)> = artifacts
        .iter()
        .flat_map(|artifact| {
            artifact.blobs.iter().filter_map(|blob| match &blob.body {
                Body::Temp { temp, .. } => {
                    Some((artifact.name.as_str(), blob.name.as_str(), temp.path()))
                }
                Body::Inline { .. } => None,
            })
        })
        .collect();
    in_parallel(&temps, |&(artifact, blob, path)| {
        let file = OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(|e| missing_or_io(artifact, blob, path, e))?;
        file.sync_data().at(path)
    })
}

/// Threads at most used by [`in_parallel`].
const SYNC_THREADS: usize = 8;

/// Runs `sync` on every item, on up to [`SYNC_THREADS`] threads when there
/// are several (a file system joins concurrent fsyncs into one journal
/// commit, so a batch of many large blobs — a composite's parts — costs
/// about one sync, not one each); the first error wins. Without threads to
/// be had, it runs them here one by one.
fn in_parallel<T: Sync>(
    items: &[T],
    sync: impl Fn(&T) -> Result<(), StoreError> + Sync,
) -> Result<(), StoreError> {
    if items.len() < 2 {
        return items.iter().try_for_each(&sync);
    }
    let chunk = items.len().div_ceil(SYNC_THREADS);
    std::thread::scope(|scope| {
        let workers: Vec<_> = items
            .chunks(chunk)
            .map(|part| {
                let sync = &sync;
                let worker = std::thread::Builder::new()
                    .name("stowage-sync".into())
                    .spawn_scoped(scope, move || part.iter().try_for_each(sync));
                (part, worker)
            })
            .collect();
        let mut result = Ok(());
        for (part, worker) in workers {
            // A thread that could not start (or stopped) leaves its share
            // to this one: syncing twice is harmless.
            let outcome = match worker.map(|handle| handle.join()) {
                Ok(Ok(outcome)) => outcome,
                _ => part.iter().try_for_each(&sync),
            };
            if result.is_ok() {
                result = outcome;
            }
        }
        result
    })
}
