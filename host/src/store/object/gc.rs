//! gc and verify of an [`S3Store`]: mark-and-sweep with a grace period.
//!
//! gc, in order:
//! 1. notes the time it starts, then marks: lists every record key,
//!    resolves each name to its live record and collects the blob objects
//!    and packs live records name; refuses
//!    ([`StoreError::UnreadableRecords`]) while any record is unreadable;
//! 2. deletes superseded record objects (every key of a name older than
//!    its live one, and a removed name's keys once its tombstone is past
//!    the grace period), and records of batches that never committed;
//! 3. aborts multipart uploads whose journal (`uploads/`) is past the
//!    grace period, and deletes the journal;
//! 4. sweeps `blobs/` and `packs/`: an object no live record names, last
//!    modified more than the grace period before gc started, is HEADed
//!    again (a save that reuses it refreshes it first) and deleted if still
//!    old;
//! 5. deletes batch markers (`batches/<id>`) older than the grace period
//!    that no remaining record names (after step 2's deletions);
//! 6. trims the local cache to `[store] cache_max_mb` (`cache.rs`).
//!
//! Invariant: nothing younger than the grace period is ever deleted, so a
//! save in flight (its blobs uploaded, its record not yet written) loses
//! nothing as long as it commits within half the grace period of its
//! uploads or refreshes.
//! Invariant: a batch marker is deleted only when no record object that
//! survives this gc names its batch. Mark reads every record up to and
//! including each name's live one and keeps the batch ids of those that
//! survive; the records it does not read are superseded ones, and those
//! that survive are younger than the grace period — a record is written
//! before its batch's marker, so its marker is younger still and not a
//! candidate. Nothing refreshes a marker or reuses a batch id, so a marker
//! past the grace period that no surviving record names is never needed
//! again.
//! Decision: the records of a batch that never committed (no marker) and
//! are newer than their name's live record are kept, as before; they name
//! no marker to keep.
//! Decision: packs are never compacted; a pack with any live range is kept
//! whole.
//! Decision: `GcReport::temp_files_removed` counts aborted uploads;
//! superseded record objects, batch markers and evicted cache files are
//! not counted (the report's fields are the directory store's).
//! Decision: gc reads the store's format marker like any read (refusing a
//! newer or malformed one) and does not write it.

use std::collections::HashSet;
use std::sync::PoisonError;
use std::time::{Duration, SystemTime};

use futures_util::stream::{self, StreamExt, TryStreamExt};
use object_store::multipart::MultipartStore;

use super::{layout, Resolved, S3Store, Stored, CONCURRENCY};
use crate::store::error::StoreError;
use crate::store::gc::{GcReport, VerifyIssue, VerifyReport};
use crate::store::record::BlobLocation;
use crate::store::StoreBackend;

/// What gc's mark phase found.
pub(super) struct GcPlan {
    /// Objects last modified after this are never deleted.
    cutoff: SystemTime,
    live_blobs: HashSet<String>,
    live_packs: HashSet<u64>,
    doomed_records: Vec<String>,
    /// Batch ids named by records that survive the deletions.
    live_batches: HashSet<u128>,
}

impl S3Store {
    /// gc with an explicit grace period (tests use zero).
    pub fn gc_with_grace(&self, grace: Duration) -> Result<GcReport, StoreError> {
        self.check_writable()?;
        self.check_format(false)?;
        let report = self.block_on(self.gc_async(grace))?;
        self.cache.trim()?;
        Ok(report)
    }

    async fn gc_async(&self, grace: Duration) -> Result<GcReport, StoreError> {
        let plan = self.gc_mark(grace).await?;
        self.gc_sweep(plan).await
    }

    /// Step 1: what is live, and which record objects are superseded.
    pub(super) async fn gc_mark(&self, grace: Duration) -> Result<GcPlan, StoreError> {
        let started = SystemTime::now();
        let cutoff = started.checked_sub(grace).unwrap_or(SystemTime::UNIX_EPOCH);
        let old = |meta: &object_store::ObjectMeta| SystemTime::from(meta.last_modified) <= cutoff;

        // 1. mark
        let names = self.all_record_keys().await?;
        let mut live_blobs: HashSet<String> = HashSet::new();
        let mut live_packs: HashSet<u64> = HashSet::new();
        let mut unreadable: Vec<String> = Vec::new();
        let mut doomed_records: Vec<String> = Vec::new();
        let mut live_batches: HashSet<u128> = HashSet::new();
        for (name, keys) in &names {
            // Find the live key: the first that resolves (a record of a
            // committed batch or of none, a tombstone, or an unreadable
            // object); a batch record whose marker is absent is skipped.
            let mut live_at = None;
            let mut state = Resolved::Absent;
            let mut live_batch = None;
            for (i, (key, _)) in keys.iter().enumerate() {
                let Some(bytes) = self.get_bytes(key).await? else {
                    continue; // deleted since the listing
                };
                match Self::parse_stored(name, &bytes) {
                    Err(bad) => state = Resolved::Unreadable(bad),
                    Ok(Stored::Removed) => {}
                    Ok(Stored::Put(record, batch)) => {
                        if let Some(id) = batch {
                            if !self.batch_committed(id).await? {
                                continue;
                            }
                        }
                        live_batch = batch;
                        state = Resolved::Live(record);
                    }
                }
                live_at = Some(i);
                break;
            }
            match &state {
                Resolved::Live(record) => {
                    for blob in &record.blobs {
                        match blob.location {
                            BlobLocation::File => {
                                live_blobs.insert(layout::blob_key(&blob.digest, false));
                            }
                            BlobLocation::FileZstd => {
                                live_blobs.insert(layout::blob_key(&blob.digest, true));
                            }
                            BlobLocation::Pack(loc) => {
                                live_packs.insert(loc.pack);
                            }
                        }
                    }
                }
                Resolved::Unreadable(_) => unreadable.push(name.clone()),
                Resolved::Absent => {}
            }
            let tombstoned = matches!(state, Resolved::Absent);
            // The live record survives (so does an unreadable one: gc
            // stops below), and so does its batch marker.
            if let Some(id) = live_batch {
                live_batches.insert(id);
            }
            for (i, (key, meta)) in keys.iter().enumerate() {
                let superseded = match live_at {
                    Some(at) => i > at || (tombstoned && i == at),
                    None => true, // only uncommitted batch records
                };
                if superseded && old(meta) {
                    doomed_records.push(key.clone());
                }
            }
        }
        if let Some(first) = unreadable.first() {
            return Err(StoreError::UnreadableRecords {
                operation: "gc",
                count: unreadable.len(),
                first: first.clone(),
            });
        }
        Ok(GcPlan {
            cutoff,
            live_blobs,
            live_packs,
            doomed_records,
            live_batches,
        })
    }

    /// Steps 2–4: delete what the plan found dead and is still old.
    pub(super) async fn gc_sweep(&self, plan: GcPlan) -> Result<GcReport, StoreError> {
        let GcPlan {
            cutoff,
            live_blobs,
            live_packs,
            doomed_records,
            live_batches,
        } = plan;
        let old = |meta: &object_store::ObjectMeta| SystemTime::from(meta.last_modified) <= cutoff;
        let mut report = GcReport::default();

        // 2. superseded records
        stream::iter(doomed_records.iter().map(|key| self.delete(key)))
            .buffer_unordered(CONCURRENCY)
            .try_collect::<Vec<()>>()
            .await?;

        // 3. abandoned uploads
        for (key, meta) in self.list(layout::UPLOADS).await? {
            if !old(&meta) {
                continue;
            }
            if let Some(bytes) = self.get_bytes(&key).await? {
                let journal: serde_json::Value =
                    serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
                if let (Some(target), Some(id)) = (
                    journal.get("key").and_then(|v| v.as_str()),
                    journal.get("upload_id").and_then(|v| v.as_str()),
                ) {
                    // An upload completed or aborted already answers an
                    // error; either way nothing of it is left to abort.
                    let _ = self
                        .client
                        .abort_multipart(&self.path(target), &id.to_owned())
                        .await;
                }
            }
            self.delete(&key).await?;
            report.temp_files_removed += 1;
        }

        // 4. sweep blobs and packs
        let mut candidates = Vec::new();
        for (key, meta) in self.list(layout::BLOBS).await? {
            if !live_blobs.contains(&key) && old(&meta) {
                candidates.push((key, meta.size, false));
            }
        }
        for (key, meta) in self.list(layout::PACKS).await? {
            let id = key.rsplit('/').next().and_then(layout::parse_pack);
            if id.is_some_and(|id| !live_packs.contains(&id)) && old(&meta) {
                candidates.push((key, meta.size, true));
            }
        }
        for (key, size, is_pack) in candidates {
            // A save reusing it refreshes it first: look again.
            match self.head(&key).await? {
                Some(meta) if old(&meta) => {}
                _ => continue,
            }
            self.delete(&key).await?;
            report.bytes_freed += size;
            if is_pack {
                report.packs_removed += 1;
            } else {
                report.blob_files_removed += 1;
            }
        }
        // 5. batch markers no surviving record names (step 2 ran first)
        let mut doomed_batches = Vec::new();
        for (key, meta) in self.list(layout::BATCHES).await? {
            let id = key.rsplit('/').next().and_then(layout::parse_batch);
            if let Some(id) = id.filter(|id| !live_batches.contains(id) && old(&meta)) {
                doomed_batches.push((key, id));
            }
        }
        let markers = doomed_batches.len();
        stream::iter(doomed_batches.iter().map(|(key, _)| self.delete(key)))
            .buffer_unordered(CONCURRENCY)
            .try_collect::<Vec<()>>()
            .await?;
        {
            let mut known = self.batches.lock().unwrap_or_else(PoisonError::into_inner);
            for (_, id) in &doomed_batches {
                known.remove(id);
            }
        }
        tracing::debug!(target: "stowage::store", store = %self.url(), ?report, markers, "gc done");
        Ok(report)
    }

    /// Re-hashes every blob of every live record.
    pub(super) fn verify_all(&self) -> Result<VerifyReport, StoreError> {
        let mut report = VerifyReport::default();
        for item in self.records()? {
            let record = match item {
                Ok(record) => record,
                Err(bad) => {
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
            report.artifacts += 1;
            for blob in &record.blobs {
                report.blobs += 1;
                match self.verify_blob(&record, blob) {
                    Ok(_) => report.bytes += blob.size,
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
