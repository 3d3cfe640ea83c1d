//! The store format marker `format` (`stowage-store N`): the layout
//! version of a directory store (directories, log framing), distinct from
//! each record's `format_version`. When it is written and how a newer or
//! malformed marker is treated: see "Store format marker" in `mod.rs`.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::Path;

use super::error::{IoContext, StoreError};

/// The marker's file name in the store directory.
pub(super) const FORMAT_FILE: &str = "format";
const FORMAT_PREFIX: &str = "stowage-store ";

/// The store format (directory layout and log framing) this build writes,
/// recorded in the `format` marker as `stowage-store 2`. Format 1: one
/// `index.log` of JSON frames, replayed whole at open. Format 2 (issue
/// #17): `manifest`, snapshot runs and a binary-framed log tail (see
/// `snapshot.rs`, `compact.rs`). This build reads both and upgrades 1 to 2
/// at the first write.
pub const STORE_FORMAT: u32 = 2;

/// The store format in `dir`'s marker; `None` if there is no marker (a
/// store created before markers existed: format 1).
pub(super) fn read_format(dir: &Path) -> Result<Option<u64>, StoreError> {
    let path = dir.join(FORMAT_FILE);
    let text = match fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(StoreError::io(path, e)),
    };
    let malformed = |reason: &str| StoreError::BadFormatMarker {
        path: path.clone(),
        reason: reason.to_owned(),
    };
    let text = std::str::from_utf8(&text).map_err(|_| malformed("not UTF-8"))?;
    let number = text
        .strip_suffix('\n')
        .unwrap_or(text)
        .strip_prefix(FORMAT_PREFIX)
        .ok_or_else(|| malformed("expected \"stowage-store N\""))?;
    match number.parse::<u64>() {
        Ok(n) if n >= 1 => Ok(Some(n)),
        _ => Err(malformed("expected \"stowage-store N\" with N ≥ 1")),
    }
}

/// Writes the marker of [`STORE_FORMAT`] crash-safely (temp file, fsync,
/// rename, directory fsync). Called under the store lock.
pub(super) fn write_format(dir: &Path, instance: &str) -> Result<(), StoreError> {
    let path = dir.join(FORMAT_FILE);
    let temp = dir.join(format!("{FORMAT_FILE}.{instance}.tmp"));
    let mut options = OpenOptions::new();
    options.write(true).create(true).truncate(true);
    crate::fs::write_atomically(&temp, &path, &options, |file| {
        file.write_all(format!("{FORMAT_PREFIX}{STORE_FORMAT}\n").as_bytes())
    })
    .at(&path)?;
    tracing::debug!(target: "stowage::store", dir = %dir.display(), "store format marker written");
    Ok(())
}
