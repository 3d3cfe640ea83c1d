//! Garbage collection and whole-store verification.
//!
//! gc runs entirely under the store lock (see the safety argument in the
//! store's module docs). In order it:
//! 1. deletes other instances' temp files older than the grace period;
//! 2. deletes `blobs/` files that no live record references;
//! 3. deletes packs (except the highest-numbered) with no live range, and
//!    compacts packs whose live bytes are under half their size: live
//!    ranges are copied into the current pack (fsynced), the affected
//!    records are re-committed with their new locations in one log entry
//!    that also lists the dropped packs (fsynced), and only then are the old
//!    pack files deleted. A crash in between leaves extra files, never a
//!    record pointing at nothing.
//!
//! Invariants: gc never deletes a byte a live record references, and never
//! the highest-numbered pack (pack numbers are never reused).
//! Decision: a pack with a live range that cannot be read (damaged) is left
//! alone rather than compacted; `verify` reports it.
//! Decision: gc and pack compaction refuse ([`StoreError::UnreadableRecords`])
//! while any live record is unreadable: its blobs are unknown, so any blob
//! might be its. `rm NAME` of the unreadable record (or a build that reads
//! it) lifts the refusal.
//! Decision: `verify` reads without the store lock; a blob whose pack was
//! compacted away meanwhile is re-read through the current record.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fs;
use std::io;
use std::time::Duration;

use super::error::{IoContext, StoreError};
use super::index::Entry;
use super::pack::{self, PackWriter, PACK_MAGIC};
use super::record::{is_digest, BlobLocation, PackLoc};
use super::{DirStore, Tails, Verify, BLOBS_DIR, PACKS_DIR};

/// How old another instance's temp file must be before gc deletes it.
pub const DEFAULT_GC_GRACE: Duration = Duration::from_secs(600);

/// What one gc run reclaimed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct GcReport {
    /// Unreferenced `blobs/` files deleted.
    pub blob_files_removed: usize,
    /// Packs deleted because nothing live was left in them.
    pub packs_removed: usize,
    /// Packs rewritten into the current pack, then deleted.
    pub packs_compacted: usize,
    /// Stale temp files deleted.
    pub temp_files_removed: usize,
    /// Bytes of disk space given back (file sizes, minus data moved).
    pub bytes_freed: u64,
}

/// One bad or missing blob found by [`DirStore::verify`].
#[derive(Debug)]
pub struct VerifyIssue {
    /// The artifact's name.
    pub artifact: String,
    /// The blob's name; `None` when the record itself is unreadable.
    pub blob: Option<String>,
    /// What is wrong: [`StoreError::Corrupt`], [`StoreError::MissingBlob`],
    /// [`StoreError::SizeMismatch`], [`StoreError::Undecodable`], I/O, or
    /// [`StoreError::Unreadable`] for a record this build cannot read.
    pub error: StoreError,
}

/// The result of [`DirStore::verify`].
#[derive(Debug, Default)]
pub struct VerifyReport {
    /// Artifacts checked.
    pub artifacts: usize,
    /// Blobs checked.
    pub blobs: usize,
    /// Logical bytes hashed.
    pub bytes: u64,
    /// Every problem found, in name order.
    pub issues: Vec<VerifyIssue>,
}

impl VerifyReport {
    /// Whether every blob was present and intact.
    pub fn is_ok(&self) -> bool {
        self.issues.is_empty()
    }
}

impl DirStore {
    /// Collects unreferenced data with the default grace period
    /// ([`DEFAULT_GC_GRACE`]) for other instances' temp files.
    pub fn gc(&self) -> Result<GcReport, StoreError> {
        self.gc_with_grace(DEFAULT_GC_GRACE)
    }

    /// Collects unreferenced data; temp files of other store instances
    /// (other processes) are deleted once older than `grace`. This
    /// instance's own temp files are never touched (their writers delete
    /// them).
    pub fn gc_with_grace(&self, grace: Duration) -> Result<GcReport, StoreError> {
        let mut locked = self.lock_for_write()?;
        self.refresh(Tails::Truncate)?;
        let mut report = GcReport::default();

        // One streaming pass over every live record: what is referenced,
        // and whether any record is unreadable (then nothing is deleted).
        let mut live_files: HashSet<(String, bool)> = HashSet::new();
        let mut live_ranges: BTreeMap<u64, BTreeSet<PackLoc>> = BTreeMap::new();
        let mut unreadable: Option<(usize, String)> = None;
        let live = self.index_read().live()?;
        for item in live {
            let record = match item {
                Ok(record) => record,
                Err(bad) => {
                    let slot = unreadable.get_or_insert((0, bad.name));
                    slot.0 += 1;
                    continue;
                }
            };
            for blob in &record.blobs {
                match blob.location {
                    BlobLocation::File => {
                        live_files.insert((blob.digest.clone(), false));
                    }
                    BlobLocation::FileZstd => {
                        live_files.insert((blob.digest.clone(), true));
                    }
                    BlobLocation::Pack(loc) if loc.len > 0 => {
                        live_ranges.entry(loc.pack).or_default().insert(loc);
                    }
                    BlobLocation::Pack(_) => {}
                }
            }
        }
        if let Some((count, first)) = unreadable {
            return Err(StoreError::UnreadableRecords {
                operation: "gc",
                count,
                first,
            });
        }

        let (temps, temp_bytes) = self.clean_temp(grace)?;
        report.temp_files_removed = temps;
        report.bytes_freed += temp_bytes;
        self.sweep_blob_files(&live_files, &mut report)?;
        let limit = locked.state.pack_limit;
        self.sweep_packs(&mut locked.state.pack, limit, &live_ranges, &mut report)?;
        // Removed and overwritten records leave the index too.
        super::compact::compact(self, super::compact::Mode::Full)?;
        drop(locked);
        tracing::info!(
            target: "stowage::store",
            blob_files = report.blob_files_removed,
            packs_removed = report.packs_removed,
            packs_compacted = report.packs_compacted,
            temp_files = report.temp_files_removed,
            bytes = report.bytes_freed,
            "gc done"
        );
        Ok(report)
    }

    fn sweep_blob_files(
        &self,
        live: &HashSet<(String, bool)>,
        report: &mut GcReport,
    ) -> Result<(), StoreError> {
        let blobs = self.dir.join(BLOBS_DIR);
        for sub in fs::read_dir(&blobs).at(&blobs)? {
            let sub = sub.at(&blobs)?;
            let sub_path = sub.path();
            let Some(prefix) = sub.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            if prefix.len() != 2 || !sub_path.is_dir() {
                continue;
            }
            let mut remaining = 0usize;
            for file in fs::read_dir(&sub_path).at(&sub_path)? {
                let file = file.at(&sub_path)?;
                remaining += 1;
                let name = file.file_name();
                let Some(name) = name.to_str() else { continue };
                let (digest, zstd) = match name.strip_suffix(".zst") {
                    Some(digest) => (digest, true),
                    None => (name, false),
                };
                if !is_digest(digest) || !digest.starts_with(&prefix) {
                    continue; // not ours: leave it
                }
                if live.contains(&(digest.to_owned(), zstd)) {
                    continue;
                }
                let len = file.metadata().map(|m| m.len()).unwrap_or(0);
                match fs::remove_file(file.path()) {
                    Ok(()) => {
                        remaining -= 1;
                        report.blob_files_removed += 1;
                        report.bytes_freed += len;
                    }
                    Err(e) if e.kind() == io::ErrorKind::NotFound => remaining -= 1,
                    Err(e) => return Err(StoreError::io(file.path(), e)),
                }
            }
            if remaining == 0 {
                // Commits recreate the directory under the same lock.
                let _ = fs::remove_dir(&sub_path);
            }
        }
        Ok(())
    }

    fn sweep_packs(
        &self,
        slot: &mut Option<PackWriter>,
        limit: u64,
        live: &BTreeMap<u64, BTreeSet<PackLoc>>,
        report: &mut GcReport,
    ) -> Result<(), StoreError> {
        let packs_dir = self.dir.join(PACKS_DIR);
        let ids = pack::list_packs(&packs_dir)?;
        // The highest-numbered pack is never collected (numbers are never
        // reused, and it is where commits append).
        let Some((_highest, older)) = ids.split_last() else {
            return Ok(());
        };
        let header = PACK_MAGIC.len() as u64;
        let mut dropped: Vec<(u64, u64)> = Vec::new(); // (id, file length)
        let mut compact: Vec<(u64, u64)> = Vec::new();
        for &id in older {
            let path = pack::pack_path(&packs_dir, id);
            let len = fs::metadata(&path).at(&path)?.len();
            match live.get(&id) {
                None => dropped.push((id, len)),
                Some(ranges) => {
                    let live_bytes: u64 = ranges.iter().map(|l| l.len).sum();
                    if live_bytes.saturating_mul(2) < len.saturating_sub(header) {
                        compact.push((id, len));
                    }
                }
            }
        }
        if dropped.is_empty() && compact.is_empty() {
            return Ok(());
        }
        // Compaction re-commits records; it must know every record's blobs:
        // the caller's pass found no unreadable record, under the same lock.

        // Copy the live ranges of packs to compact; skip any pack with an
        // unreadable range.
        let mut moved_from: HashMap<PackLoc, usize> = HashMap::new(); // loc -> offset in buf
        let mut buf: Vec<u8> = Vec::new();
        let mut compacted: Vec<(u64, u64)> = Vec::new();
        for (id, len) in compact {
            let Some(ranges) = live.get(&id) else {
                continue;
            };
            let mut copies = Vec::with_capacity(ranges.len());
            let mut readable = true;
            for loc in ranges {
                match self.packs.range(&packs_dir, loc) {
                    Ok((map, start, n)) => match map.get(start..start + n) {
                        Some(bytes) => copies.push((*loc, bytes.to_vec())),
                        None => readable = false,
                    },
                    Err(_) => readable = false,
                }
                if !readable {
                    tracing::warn!(target: "stowage::store", pack = id, "pack has an unreadable live range; not compacting it");
                    break;
                }
            }
            if readable {
                for (loc, bytes) in copies {
                    moved_from.insert(loc, buf.len());
                    buf.extend_from_slice(&bytes);
                }
                compacted.push((id, len));
            }
        }

        let mut relocated: HashMap<PackLoc, PackLoc> = HashMap::new();
        if !buf.is_empty() {
            let avoid = |id: u64| compacted.iter().chain(&dropped).any(|(c, _)| *c == id);
            let writer = PackWriter::select(&packs_dir, slot, limit, &avoid)?;
            let (new_id, base) = (writer.id(), writer.len()?);
            writer.append(&buf)?;
            writer.sync(&packs_dir)?;
            for (old, offset) in moved_from {
                let new = PackLoc {
                    pack: new_id,
                    offset: base + offset as u64,
                    ..old
                };
                relocated.insert(old, new);
            }
        }

        let live = self.index_read().live()?;
        let put = live
            .filter_map(Result::ok)
            .filter(|r| {
                r.blobs.iter().any(|b| match b.location {
                    BlobLocation::Pack(loc) => relocated.contains_key(&loc),
                    _ => false,
                })
            })
            .map(|mut r| {
                for b in &mut r.blobs {
                    if let BlobLocation::Pack(loc) = b.location {
                        if let Some(new) = relocated.get(&loc) {
                            b.location = BlobLocation::Pack(*new);
                        }
                    }
                }
                r
            })
            .collect::<Vec<_>>();
        let gone: Vec<(u64, u64)> = dropped.iter().chain(&compacted).copied().collect();
        if gone.is_empty() {
            return Ok(());
        }
        let entry = Entry {
            put,
            drop_packs: gone.iter().map(|(id, _)| *id).collect(),
            ..Entry::default()
        };
        let (at, len) = self.append_entry(&entry, false)?;
        self.apply_appended(at, len, entry);

        for (id, len) in &gone {
            let path = pack::pack_path(&packs_dir, *id);
            match fs::remove_file(&path) {
                Ok(()) => report.bytes_freed += len,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(StoreError::io(path, e)),
            }
        }
        report.bytes_freed = report.bytes_freed.saturating_sub(buf.len() as u64);
        report.packs_removed += dropped.len();
        report.packs_compacted += compacted.len();
        Ok(())
    }

    /// Re-hashes every blob of every live record and reports each bad or
    /// missing one; an unreadable record is one issue (with no blob).
    /// Errors only if the index itself cannot be read.
    pub fn verify(&self) -> Result<VerifyReport, StoreError> {
        self.refresh(Tails::Ignore)?;
        let mut report = VerifyReport::default();
        for listed in self.iter() {
            report.artifacts += 1;
            let record = match listed {
                super::Listed::Record(record) => record,
                super::Listed::Unreadable(bad) => {
                    report.issues.push(VerifyIssue {
                        artifact: bad.name.clone(),
                        blob: None,
                        error: StoreError::Unreadable {
                            name: bad.name,
                            reason: bad.reason,
                        },
                    });
                    continue;
                }
            };
            for blob in &record.blobs {
                report.blobs += 1;
                match self.read_blob_retrying(&record.name, blob, Verify::Hash) {
                    Ok(data) => report.bytes += data.len() as u64,
                    Err(error) => report.issues.push(VerifyIssue {
                        artifact: record.name.clone(),
                        blob: Some(blob.name.clone()),
                        error,
                    }),
                }
            }
        }
        Ok(report)
    }
}
