//! Index generations of store format 2: creating a new store, compacting
//! the log tail into snapshot runs (automatically and from `gc`), upgrading
//! a format-1 store, and finishing a compaction a crash interrupted. Every
//! function here runs under the store lock.
//!
//! A compaction of generation G into G+1, in this order (each step durable
//! before the next; the failpoint after it in brackets):
//! 1. write the new run `index.(G+1).0.run` — the tail merged with the
//!    newest runs — to a temp file, fsync, rename [`compact-after-run`];
//! 2. replace `manifest` (generation G+1, its runs) [`compact-after-manifest`];
//! 3. upgrade only: write the format marker `stowage-store 2`
//!    [`upgrade-after-marker`];
//! 4. append a SEAL frame to the old log (a JSON `{"sealed": G+1}` frame
//!    in a format-1 log, which older builds ignore) [`compact-after-seal`];
//! 5. rename a new `index.log` (its first frame: HEADER G+1) over the old
//!    one [`compact-after-log`];
//! 6. delete runs no manifest names any more.
//!
//! Why readers never see a half state: a reader loads the manifest, maps
//! its runs, then opens `index.log` and reads its HEADER. A log older than
//! the manifest (a crash or a reader between steps 2 and 5) is fully
//! contained in the runs and is skipped; a log newer than the manifest it
//! read makes it load again; a run deleted under it (step 6) too. A reader
//! that already has the old log open sees the SEAL (step 4) on its next
//! refresh and loads the new generation. Nobody appends between steps 1
//! and 5 (the lock), so the runs hold exactly the old log's state.
//! Recovery: a writer that finds `index.log` older than the manifest
//! (steps 2–4 done, 5 not) seals it if needed and does step 5 itself;
//! leftover temp files and unreferenced runs are deleted at the next
//! writable open.
//!
//! Decision: merge policy. A compaction folds the tail and every newest run
//! smaller than twice the bytes folded so far into one new run, so run
//! sizes at least double from newest to oldest: at most log2(n / tail)
//! runs, and each record is rewritten O(log n) times over its life. A
//! tombstone is dropped when the merge reaches the oldest run. `gc` merges
//! everything into one run.
//! Decision: automatic compaction runs after an append once the tail holds
//! [`DEFAULT_COMPACT_BYTES`] (8 MiB) of log, in the writer that crossed it,
//! before its lock is released: opening replays at most about that much
//! log (~20,000 small records, a few ms) whatever the history. The
//! variable `STOWAGE_STORE_COMPACT_BYTES` overrides it (tests, tuning).
//! A failed automatic compaction is logged and the write it followed
//! stands (it was committed before).
//! Decision: a format-1 tail with an unreadable record cannot be copied
//! into a run as it was written (only its name and reason survived
//! parsing): such a store is neither upgraded nor compacted until the
//! record is removed (`gc` refuses anyway, SPEC §6); format-2 records are
//! copied as bytes, readable or not.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};

use super::error::{IoContext, StoreError};
use super::format::write_format;
use super::index::{self, Entry, LogItem, Pick, TailItem};
use super::snapshot::{self, Manifest, RunWriter};
use super::{failpoint, DirStore, Tails, LOG_FILE};

/// Tail size (bytes of log) that triggers an automatic compaction.
pub const DEFAULT_COMPACT_BYTES: u64 = 8 << 20;

/// The variable overriding [`DEFAULT_COMPACT_BYTES`].
pub const COMPACT_BYTES_VAR: &str = "STOWAGE_STORE_COMPACT_BYTES";

/// What a compaction is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Mode {
    /// The tail crossed the threshold: fold it and the small newest runs.
    Auto,
    /// `gc`: everything into one run.
    Full,
    /// Format 1 → 2: the whole replayed log into the first run.
    Upgrade,
}

/// Encodes `entry` as format-2 items; returns the payload and the items
/// with body offsets relative to the payload.
pub(super) fn encode_entry(entry: &Entry) -> (Vec<u8>, Vec<LogItem>) {
    let mut out = Vec::with_capacity(64 + entry.put.len() * 560);
    let mut items = Vec::with_capacity(entry.put.len() + entry.remove.len());
    let push = |out: &mut Vec<u8>, kind: u8, name: &str, body: &[u8], value: u64| {
        let body_at = (out.len() + snapshot::ITEM_HEAD + name.len()) as u64;
        snapshot::push_item(out, kind, name.as_bytes(), body);
        LogItem {
            kind,
            name: name.to_owned(),
            body_at,
            body_len: body.len() as u32,
            value,
            locs: Vec::new(),
        }
    };
    for name in &entry.remove {
        items.push(push(&mut out, snapshot::REMOVE, name, &[], 0));
    }
    for record in &entry.put {
        let body = snapshot::put_body(record);
        let mut item = push(&mut out, snapshot::PUT, &record.name, &body, 0);
        item.locs = snapshot::record_locs(record);
        items.push(item);
    }
    for id in &entry.drop_packs {
        items.push(push(
            &mut out,
            snapshot::DROP_PACK,
            "",
            &id.to_le_bytes(),
            *id,
        ));
    }
    if let Some(generation) = entry.sealed {
        let body = generation.to_le_bytes();
        items.push(push(&mut out, snapshot::SEAL, "", &body, generation));
    }
    (out, items)
}

/// The frame that starts the log of `generation`.
pub(super) fn header_frame(generation: u64) -> Vec<u8> {
    let mut payload = Vec::with_capacity(snapshot::ITEM_HEAD + 8);
    snapshot::push_item(
        &mut payload,
        snapshot::HEADER,
        b"",
        &generation.to_le_bytes(),
    );
    index::encode_frame2(&payload).unwrap_or_default()
}

/// Makes a new, empty store a format-2 store: log header, manifest, marker.
pub(super) fn create(store: &DirStore) -> Result<(), StoreError> {
    store.append_frame(&header_frame(1), false)?;
    snapshot::write_manifest(
        &store.dir,
        &Manifest {
            generation: 1,
            runs: Vec::new(),
        },
    )?;
    write_format(&store.dir, &store.instance)
}

/// Compacts if the tail has crossed the threshold (see the module docs).
pub(super) fn maybe_compact(store: &DirStore) {
    let due = {
        let index = store.index_read();
        let threshold = store
            .compact_bytes
            .load(std::sync::atomic::Ordering::Relaxed);
        index.generation > 0
            && index.tail_bytes() >= threshold
            && index.tail_has_unreadable().is_none()
    };
    if due {
        if let Err(e) = compact(store, Mode::Auto) {
            tracing::warn!(target: "stowage::store", error = %e, "automatic index compaction failed");
        }
    }
}

/// Runs one compaction (see the module docs); the index is current (the
/// caller holds the lock and has refreshed).
pub(super) fn compact(store: &DirStore, mode: Mode) -> Result<(), StoreError> {
    let (runs, tail, log, generation, tail_bytes, tail_start) = {
        let index = store.index_read();
        if let Some(bad) = index.tail_has_unreadable() {
            return Err(StoreError::UnreadableRecords {
                operation: "index compaction",
                count: 1,
                first: bad.name.clone(),
            });
        }
        (
            std::sync::Arc::clone(&index.runs),
            std::sync::Arc::clone(&index.tail),
            index.log.clone(),
            index.generation,
            index.tail_bytes(),
            index.tail_start,
        )
    };
    if generation == 0 && mode != Mode::Upgrade {
        return Ok(()); // a format-1 store is upgraded first, never compacted
    }
    let first = match mode {
        Mode::Full | Mode::Upgrade => 0,
        Mode::Auto => {
            let (mut folded, mut i) = (tail_bytes, runs.len());
            while i > 0 && runs[i - 1].bytes() < folded.saturating_mul(2) {
                folded += runs[i - 1].bytes();
                i -= 1;
            }
            i
        }
    };
    let next = generation + 1;
    let file = snapshot::run_file(next, 0);
    let mut writer = RunWriter::create(&store.dir, &file, next)?;
    // The tail's bodies in one sequential read (at most about the
    // threshold), rather than one read per record.
    let mut tail_buf = vec![0u8; usize::try_from(tail_bytes).unwrap_or(0)];
    if !tail.is_empty() && !tail_buf.is_empty() {
        index::read_exact_at_path(log.as_deref(), &mut tail_buf, tail_start)?;
    }
    let mut items = 0usize;
    let mut merge = index::Merge::new(Some(&tail), std::sync::Arc::clone(&runs), first)?;
    for (name, pick) in merge.by_ref() {
        match pick {
            Pick::Tail(TailItem::At { at, len }) => {
                let from = usize::try_from(at.saturating_sub(tail_start)).unwrap_or(usize::MAX);
                match tail_buf.get(from..from.saturating_add(len as usize)) {
                    Some(body) => writer.push(snapshot::PUT, name.as_bytes(), body)?,
                    None => {
                        let body = index::read_body(log.as_deref(), at, len)?;
                        writer.push(snapshot::PUT, name.as_bytes(), &body)?;
                    }
                }
            }
            Pick::Tail(TailItem::Parsed(record)) => {
                writer.push(snapshot::PUT, name.as_bytes(), &snapshot::put_body(&record))?;
            }
            Pick::Tail(TailItem::Removed) if first > 0 => {
                writer.push(snapshot::REMOVE, name.as_bytes(), &[])?;
            }
            Pick::Tail(TailItem::Removed | TailItem::Unreadable(_)) => continue,
            Pick::Run { kind, body, .. } => {
                if kind == snapshot::REMOVE && first == 0 {
                    continue;
                }
                writer.push(kind, name.as_bytes(), &body)?;
            }
        }
        items += 1;
    }
    if let Some(e) = merge.error.take() {
        // A run could not be read whole: keep the old generation.
        return Err(StoreError::io(store.dir.join(snapshot::MANIFEST_FILE), e));
    }
    writer.finish()?;
    failpoint::hit("compact-after-run");
    let mut files: Vec<String> = runs[..first].iter().map(|r| r.file.clone()).collect();
    files.push(file);
    snapshot::write_manifest(
        &store.dir,
        &Manifest {
            generation: next,
            runs: files,
        },
    )?;
    failpoint::hit("compact-after-manifest");
    if mode == Mode::Upgrade {
        write_format(&store.dir, &store.instance)?;
        failpoint::hit("upgrade-after-marker");
    }
    finish_generation(store, next)?;
    store.reload(Tails::Truncate)?;
    tracing::debug!(
        target: "stowage::store",
        ?mode,
        generation = next,
        items,
        runs = first + 1,
        "index compacted"
    );
    Ok(())
}

/// Steps 4–6: seals the log at `index.log` (unless it is sealed), puts the
/// log of `generation` in its place, deletes what no manifest names.
pub(super) fn finish_generation(store: &DirStore, generation: u64) -> Result<(), StoreError> {
    let (sealed, format1) = {
        let index = store.index_read();
        (index.sealed, index.log_gen == 0)
    };
    if !sealed {
        let entry = Entry {
            sealed: Some(generation),
            ..Entry::default()
        };
        let frame = if format1 {
            index::encode_frame(&entry.to_payload())
        } else {
            index::encode_frame2(&encode_entry(&entry).0)
        }
        .unwrap_or_default();
        // No fsync: a seal lost in a crash is appended again by the
        // recovery (the log is then older than the manifest), and readers
        // of the old log only need to see it while the system is up.
        store.append_frame_unsynced(&frame)?;
    }
    failpoint::hit("compact-after-seal");
    let temp = store.dir.join(format!("{LOG_FILE}.tmp"));
    let mut options = OpenOptions::new();
    options.write(true).create(true).truncate(true);
    crate::fs::write_atomically(&temp, &store.log_path, &options, |file| {
        file.write_all(&header_frame(generation))
    })
    .at(&store.log_path)?;
    failpoint::hit("compact-after-log");
    remove_stale(store)
}

/// Deletes runs the manifest does not name and leftover temp files of
/// index writes (only lock holders create them).
pub(super) fn remove_stale(store: &DirStore) -> Result<(), StoreError> {
    let Some(manifest) = snapshot::read_manifest(&store.dir)? else {
        return Ok(());
    };
    for entry in fs::read_dir(&*store.dir).at(&*store.dir)? {
        let entry = entry.at(&*store.dir)?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let stale = (snapshot::is_run_file(name) && !manifest.runs.iter().any(|r| r == name))
            || name
                .strip_suffix(".tmp")
                .is_some_and(|stem| snapshot::is_run_file(stem) || stem == LOG_FILE)
            || name == format!("{}.tmp", snapshot::MANIFEST_FILE);
        if stale {
            match fs::remove_file(entry.path()) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(StoreError::io(entry.path(), e)),
            }
        }
    }
    Ok(())
}
