//! Copying artifacts between two stores of any backends (`stowage push` /
//! `pull`, SPEC §13): each named artifact is read from the source with
//! every blob re-hashed, and written to the destination through its own
//! writer, so the destination's own rules apply — content addressing
//! (a blob the destination has is not stored again: the directory store
//! dedups by digest, the S3 store HEADs by digest and skips the upload),
//! blobs before records, and one batch for all the names.
//!
//! Invariants: nothing is written unless every named artifact was read
//! and verified; the copy is one commit, so it lands whole or not at all.
//! Decision: an artifact whose destination record already has the same
//! metadata and blob digests is skipped (counted, not rewritten).
//! Decision: a copied record gets the destination's commit time as its
//! `created`; its metadata (type, encoding, serializer and its info) is
//! kept as it was.

use super::{
    BlobLayout, Record, Store, StoreError, Verify, STORAGE_FILE_ZSTD, STORAGE_PACKED_ZSTD,
};

/// What one copy did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CopyReport {
    /// Artifacts written to the destination.
    pub copied: usize,
    /// Artifacts the destination already had (same metadata and digests).
    pub skipped: usize,
    /// Logical bytes of the copied artifacts' blobs.
    pub bytes: u64,
}

/// Whether `a` and `b` are the same artifact (location and time aside).
fn same_artifact(a: &Record, b: &Record) -> bool {
    a.meta == b.meta
        && a.blobs.len() == b.blobs.len()
        && a.blobs
            .iter()
            .zip(&b.blobs)
            .all(|(x, y)| x.name == y.name && x.digest == y.digest && x.size == y.size)
}

/// Copies the artifacts `names` from `from` to `to`; `progress` is called
/// with the name of each artifact as it is read.
pub fn copy_artifacts(
    from: &Store,
    to: &Store,
    names: &[String],
    mut progress: impl FnMut(&str),
) -> Result<CopyReport, StoreError> {
    to.check_writable()?;
    let mut report = CopyReport::default();
    let mut batch = Vec::new();
    for name in names {
        progress(name);
        let record = from.get(name)?;
        match to.get(name) {
            Ok(there) if same_artifact(&record, &there) => {
                report.skipped += 1;
                continue;
            }
            Ok(_) => {}
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e),
        }
        let blobs = from.read_blobs(&record, Verify::Hash)?;
        let mut writer = to.writer(name)?;
        for (blob, bytes) in record.blobs.iter().zip(&blobs) {
            let layout = if blob.storage == STORAGE_FILE_ZSTD || blob.storage == STORAGE_PACKED_ZSTD
            {
                BlobLayout::Compressible
            } else {
                BlobLayout::Raw
            };
            writer.begin_blob(&blob.name, layout)?;
            writer.write(bytes)?;
            report.bytes += blob.size;
        }
        batch.push(writer.finish(record.meta.clone())?);
        report.copied += 1;
    }
    to.commit(batch)?;
    Ok(report)
}
