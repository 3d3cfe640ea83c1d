//! Pack files: `packs/<8-digit number>.pack`, append-only concatenations of
//! small blobs' stored bytes, and the per-store cache of their mappings.
//!
//! A pack starts with the 8-byte magic `STWPACK1`; after it, blobs are
//! stored back to back with no framing: records carry `(pack, offset,
//! stored_size)`, so the pack itself needs none.
//!
//! Invariants:
//! - Packs are appended to only while the store lock is held, so every
//!   process may append to the same pack; each batch's bytes go in with one
//!   write and one fsync. Bytes are never rewritten and packs never
//!   truncated: existing mappings stay valid.
//! - Pack numbers are never reused: a new pack is numbered one above the
//!   highest existing one, and gc never deletes the highest-numbered pack.
//!   A cached mapping keyed by number therefore always shows the right file.
//! - Before appending, the writer checks its pack file still exists (gc in
//!   another process may have deleted it) and otherwise picks the highest.
//!
//! Decision: one shared pack series under the store lock rather than one
//! pack per writer process: small-blob bytes are buffered in memory until
//! commit, so nothing uncommitted ever sits in a pack except after a crash
//! or a failed commit, and gc can reason about packs from the records alone.
//! Decision: a pack rotates once it reaches [`DEFAULT_PACK_LIMIT`] (64 MiB);
//! a batch always goes whole into one pack, even past the limit.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};

use memmap2::Mmap;

use super::error::{IoContext, StoreError};
use super::record::PackLoc;
use super::sys;

/// First bytes of every pack file.
pub(crate) const PACK_MAGIC: &[u8; 8] = b"STWPACK1";

/// Size at which the store starts a new pack.
pub const DEFAULT_PACK_LIMIT: u64 = 64 << 20;

/// The path of pack number `id`.
pub(crate) fn pack_path(packs_dir: &Path, id: u64) -> PathBuf {
    packs_dir.join(format!("{id:08}.pack"))
}

/// The number of a pack file name, if it is one.
pub(crate) fn parse_pack_name(name: &str) -> Option<u64> {
    let stem = name.strip_suffix(".pack")?;
    if stem.len() < 8 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok()
}

/// The numbers of all pack files, ascending.
pub(crate) fn list_packs(packs_dir: &Path) -> Result<Vec<u64>, StoreError> {
    let mut ids = Vec::new();
    for entry in fs::read_dir(packs_dir).at(packs_dir)? {
        let entry = entry.at(packs_dir)?;
        if let Some(id) = entry.file_name().to_str().and_then(parse_pack_name) {
            ids.push(id);
        }
    }
    ids.sort_unstable();
    Ok(ids)
}

/// The pack this store appends to; used only under the store lock.
#[derive(Debug)]
pub(crate) struct PackWriter {
    id: u64,
    path: PathBuf,
    file: File,
    new_file: bool,
}

impl PackWriter {
    /// Returns the pack to append to: the cached one if it still exists, is
    /// below `limit` and not `avoid`ed, else the highest existing one under
    /// the same conditions, else a new one.
    pub(crate) fn select<'a>(
        packs_dir: &Path,
        slot: &'a mut Option<PackWriter>,
        limit: u64,
        avoid: &dyn Fn(u64) -> bool,
    ) -> Result<&'a mut PackWriter, StoreError> {
        let keep = match slot.as_ref() {
            Some(w) => !avoid(w.id) && w.path.exists() && w.len()? < limit,
            None => false,
        };
        if !keep {
            *slot = None;
            let ids = list_packs(packs_dir)?;
            let highest = ids.last().copied();
            if let Some(id) = highest.filter(|id| !avoid(*id)) {
                let path = pack_path(packs_dir, id);
                let file = OpenOptions::new().append(true).open(&path).at(&path)?;
                let writer = PackWriter {
                    id,
                    path,
                    file,
                    new_file: false,
                };
                if writer.len()? < limit {
                    *slot = Some(writer);
                }
            }
            if slot.is_none() {
                *slot = Some(PackWriter::create(packs_dir, highest.unwrap_or(0) + 1)?);
            }
        }
        slot.as_mut()
            .ok_or_else(|| StoreError::io(packs_dir, io::Error::other("no pack selected")))
    }

    fn create(packs_dir: &Path, mut id: u64) -> Result<PackWriter, StoreError> {
        loop {
            let path = pack_path(packs_dir, id);
            match OpenOptions::new().append(true).create_new(true).open(&path) {
                Ok(mut file) => {
                    file.write_all(PACK_MAGIC).at(&path)?;
                    tracing::debug!(target: "stowage::store", pack = id, "new pack");
                    return Ok(PackWriter {
                        id,
                        path,
                        file,
                        new_file: true,
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => id += 1,
                Err(e) => return Err(StoreError::io(path, e)),
            }
        }
    }

    /// This pack's number.
    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    /// Current length of the pack file (where the next append lands).
    pub(crate) fn len(&self) -> Result<u64, StoreError> {
        Ok(self.file.metadata().at(&self.path)?.len())
    }

    /// Appends `data` with one write.
    pub(crate) fn append(&mut self, data: &[u8]) -> Result<(), StoreError> {
        self.file.write_all(data).at(&self.path)
    }

    /// Makes appended data (and a new pack's directory entry) durable.
    pub(crate) fn sync(&mut self, packs_dir: &Path) -> Result<(), StoreError> {
        self.file.sync_data().at(&self.path)?;
        if self.new_file {
            super::sync_dir(packs_dir)?;
            self.new_file = false;
        }
        Ok(())
    }
}

/// Why a pack range could not be read.
#[derive(Debug)]
pub(crate) enum PackReadError {
    /// The pack file does not exist.
    Missing(PathBuf),
    /// The pack file ends before the range does.
    Short {
        /// The pack's length.
        have: u64,
    },
    /// Opening or mapping failed.
    Io(StoreError),
}

/// A mapped pack range: the mapping, start and length.
pub(crate) type MappedRange = (Arc<Mmap>, usize, usize);

/// Mappings of pack files, shared by all readers of one store.
#[derive(Debug, Default)]
pub(crate) struct PackCache {
    maps: RwLock<HashMap<u64, Arc<Mmap>>>,
}

impl PackCache {
    /// Maps the range `loc` (remapping a pack that grew since it was mapped).
    pub(crate) fn range(
        &self,
        packs_dir: &Path,
        loc: &PackLoc,
    ) -> Result<MappedRange, PackReadError> {
        let end = loc
            .offset
            .checked_add(loc.len)
            .ok_or(PackReadError::Short { have: 0 })?;
        let slice = |map: &Arc<Mmap>| -> Result<MappedRange, PackReadError> {
            let start = usize::try_from(loc.offset);
            let len = usize::try_from(loc.len);
            match (start, len) {
                (Ok(start), Ok(len)) => Ok((Arc::clone(map), start, len)),
                _ => Err(PackReadError::Short {
                    have: map.len() as u64,
                }),
            }
        };
        {
            let maps = self.maps.read().unwrap_or_else(PoisonError::into_inner);
            if let Some(map) = maps.get(&loc.pack).filter(|m| m.len() as u64 >= end) {
                return slice(map);
            }
        }
        let mut maps = self.maps.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(map) = maps.get(&loc.pack).filter(|m| m.len() as u64 >= end) {
            return slice(map);
        }
        let path = pack_path(packs_dir, loc.pack);
        let file = match File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(PackReadError::Missing(path));
            }
            Err(e) => return Err(PackReadError::Io(StoreError::io(path, e))),
        };
        // SAFETY: packs are append-only and never truncated or rewritten
        // while this store format is in use (gc removes a pack by unlink),
        // so the mapped bytes never change (sys.rs invariants).
        let map = unsafe { sys::map_file(&file) }
            .map_err(|e| PackReadError::Io(StoreError::io(&path, e)))?;
        if (map.len() as u64) < end {
            return Err(PackReadError::Short {
                have: map.len() as u64,
            });
        }
        let map = Arc::new(map);
        maps.insert(loc.pack, Arc::clone(&map));
        slice(&map)
    }

    /// Drops the mappings of deleted packs.
    pub(crate) fn forget(&self, ids: &[u64]) {
        if ids.is_empty() {
            return;
        }
        let mut maps = self.maps.write().unwrap_or_else(PoisonError::into_inner);
        for id in ids {
            maps.remove(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pack_names_round_trip() {
        let path = pack_path(Path::new("p"), 42);
        assert_eq!(path, Path::new("p/00000042.pack"));
        assert_eq!(parse_pack_name("00000042.pack"), Some(42));
        assert_eq!(parse_pack_name("123456789.pack"), Some(123_456_789));
        assert_eq!(parse_pack_name("42.pack"), None);
        assert_eq!(parse_pack_name("0000004x.pack"), None);
        assert_eq!(parse_pack_name("00000042.tmp"), None);
    }
}
