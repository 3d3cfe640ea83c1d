//! The index log (`index.log`) and the index: snapshot runs (`snapshot.rs`)
//! with the log tail replayed on top.
//!
//! The log is a sequence of frames, one per commit batch, removal, gc or
//! generation change:
//!
//! ```text
//! frame   = magic | len: u32 LE | check: first 8 bytes of blake3(payload)
//!           | payload: `len` bytes | "\n"
//! SLG1    payload = JSON {"put": [record…], "remove": [name…],
//!           "drop_packs": [pack number…], "sealed": G}  (store format 1;
//!           empty arrays omitted; applied in the order remove, put, drop_packs)
//! SLG2    payload = binary items (store format 2, see `snapshot.rs`)
//! ```
//!
//! Records use the log form of [`Record`](super::Record) (see `record.rs`).
//!
//! Decision (issue #17): the index of store format 2 is a compacted,
//! memory-mapped, name-sorted snapshot (a few runs) plus the current log
//! tail, replayed at open. Facts that decided it:
//! - format 1 replayed the whole log at every open: at 100,001 records a
//!   CLI `get` took 1.53 s and 145 MB (~15 µs and ~1.5 KB per record ever
//!   written, removed and overwritten ones included);
//! - LMDB (`heed`) in read-only mode still writes its lock file unless the
//!   file system is read-only, so it fails the unprivileged-reader test;
//!   `redb`'s multi-process access needs redb ≥ 4.5 (Rust 1.90); `rusqlite`
//!   0.43 needs Rust 1.89 and SQLite WAL readers need the `-shm` file
//!   writable; all three are new dependencies;
//! - a mapped, sorted file needs no new dependency, no write access to read
//!   (a reader only opens and maps), gives O(log n) lookups that touch a
//!   handful of pages (memory independent of history), and keeps the log's
//!   proven atomic-append, torn-tail and `flock` machinery for writes.
//!
//! So open = read the manifest, map its runs (O(1) in their size), replay
//! the tail (bounded by the compaction threshold, `compact.rs`); lookup =
//! the tail map, then each run newest first by binary search (O(log n)
//! per run, O(log n) runs); listing = a merge of tail and runs in name
//! order, streamed. Tail PUT items are indexed by name and log offset at
//! replay without parsing their JSON; a record is parsed when it is read.
//!
//! Invariants:
//! - A frame is appended with a single `write` and fsynced before the batch
//!   is reported committed; frames are never rewritten. A compaction starts
//!   a new log file (replacing `index.log` by rename) after sealing the old
//!   one with a SEAL frame.
//! - Readers without the store lock stop quietly at the first frame that is
//!   incomplete or fails its checksum: it may be an append in progress.
//! - Under the store lock nobody appends, so such a frame is a torn tail
//!   from a crash (or a failed write) and is truncated away before the next
//!   append — *if* a crash can explain it: the frame is cut short by the end
//!   of the file, ends exactly at the end of the file, or only zero bytes
//!   follow. Anything else is [`StoreError::LogCorrupt`](super::StoreError::LogCorrupt): committed frames
//!   after it are never dropped silently.
//! - A frame that passes its checksum but holds an invalid record does not
//!   block the store (SPEC §6): a format-1 record that does not parse
//!   becomes an [`UnreadableRecord`] under its name (or a placeholder),
//!   replacing any older record of that name exactly like a readable put
//!   would; a frame whose JSON or shape is invalid becomes one placeholder
//!   entry `.record-at-OFFSET`. A format-2 record is unreadable when its
//!   JSON does not parse as a record this build reads; its bytes are kept.
//!
//! Decision: within one format-1 frame, readable puts are applied before
//! unreadable ones, so a name that appears twice in a frame stays
//! unreadable if either copy is (conservative: gc keeps refusing).
//! Decision: the writer's small-blob dedup map holds the tail's packed
//! ranges; runs carry a digest-sorted table of theirs. A hit may name a
//! range whose record was removed since: it is used only if its pack file
//! still exists (packs are append-only and never renumbered, and the
//! commit holds the lock gc needs), after which the new record makes it
//! live again.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::sync::Arc;

use serde_json::Value;

use super::error::StoreError;
use super::record::{write_json_str, PackLoc, Record, UnreadableRecord};
use super::snapshot::{self, Run, FRAME2_MAGIC};

/// First bytes of every frame.
pub(crate) const FRAME_MAGIC: &[u8; 4] = b"SLG1";
/// Magic + length + checksum.
pub(crate) const HEADER_LEN: usize = 16;

/// One decoded log entry.
#[derive(Debug, Default, Clone)]
pub(crate) struct Entry {
    /// Records to insert (replacing any record of the same name).
    pub put: Vec<Record>,
    /// Records of the frame that could not be parsed, inserted after `put`
    /// (never written by this build).
    pub unreadable: Vec<UnreadableRecord>,
    /// Names to remove.
    pub remove: Vec<String>,
    /// Pack files deleted by gc (readers drop their mappings).
    pub drop_packs: Vec<u64>,
    /// Written last into a format-1 log when it is upgraded: the log is
    /// closed and generation N (see `manifest`) holds the store.
    pub sealed: Option<u64>,
}

impl Entry {
    /// The JSON payload of this entry.
    pub(crate) fn to_payload(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 + self.put.len() * 480);
        let mut sep = b'{';
        if !self.put.is_empty() {
            out.push(sep);
            out.extend_from_slice(b"\"put\":[");
            for (i, record) in self.put.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                record.write_log_json(&mut out);
            }
            out.push(b']');
            sep = b',';
        }
        if !self.remove.is_empty() {
            out.push(sep);
            out.extend_from_slice(b"\"remove\":[");
            for (i, name) in self.remove.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_json_str(&mut out, name);
            }
            out.push(b']');
            sep = b',';
        }
        if !self.drop_packs.is_empty() {
            out.push(sep);
            out.extend_from_slice(b"\"drop_packs\":[");
            let ids: Vec<String> = self.drop_packs.iter().map(u64::to_string).collect();
            out.extend_from_slice(ids.join(",").as_bytes());
            out.push(b']');
            sep = b',';
        }
        if let Some(generation) = self.sealed {
            out.push(sep);
            out.extend_from_slice(format!("\"sealed\":{generation}").as_bytes());
            sep = b',';
        }
        if sep == b'{' {
            out.push(sep);
        }
        out.push(b'}');
        out
    }

    /// Parses a payload whose checksum matched, found at log offset
    /// `offset`. Never fails: what does not parse becomes unreadable
    /// entries (see the module docs).
    pub(crate) fn parse(payload: &[u8], offset: u64) -> Entry {
        match Entry::parse_frame(payload, offset) {
            Ok(entry) => entry,
            Err(reason) => Entry {
                unreadable: vec![UnreadableRecord {
                    name: format!(".record-at-{offset}"),
                    reason,
                    offset,
                }],
                ..Entry::default()
            },
        }
    }

    fn parse_frame(payload: &[u8], offset: u64) -> Result<Entry, String> {
        let value: Value =
            serde_json::from_slice(payload).map_err(|e| format!("invalid JSON: {e}"))?;
        let Value::Object(mut obj) = value else {
            return Err("entry is not an object".into());
        };
        let mut entry = Entry::default();
        if let Some(remove) = obj.get("remove") {
            let remove = remove.as_array().ok_or("remove is not an array")?;
            for name in remove {
                let name = name.as_str().ok_or("remove holds a non-string")?;
                entry.remove.push(name.to_owned());
            }
        }
        if let Some(drop) = obj.get("drop_packs") {
            let drop = drop.as_array().ok_or("drop_packs is not an array")?;
            for id in drop {
                let id = id.as_u64().ok_or("drop_packs holds a non-integer")?;
                entry.drop_packs.push(id);
            }
        }
        entry.sealed = obj.get("sealed").and_then(Value::as_u64);
        if let Some(put) = obj.remove("put") {
            let Value::Array(put) = put else {
                return Err("put is not an array".into());
            };
            entry.put.reserve(put.len());
            for (i, value) in put.into_iter().enumerate() {
                match Record::from_log_json(value) {
                    Ok(record) => entry.put.push(record),
                    Err(unparsed) => entry.unreadable.push(UnreadableRecord {
                        name: unparsed
                            .name
                            .unwrap_or_else(|| format!(".record-at-{offset}-{i}")),
                        reason: unparsed.reason,
                        offset,
                    }),
                }
            }
        }
        Ok(entry)
    }
}

/// Frames a format-1 (JSON) `payload` for appending; `None` if it exceeds
/// the u32 length.
pub(crate) fn encode_frame(payload: &[u8]) -> Option<Vec<u8>> {
    encode_frame_as(FRAME_MAGIC, payload)
}

/// Frames `payload` (items, `snapshot.rs`) as a format-2 frame.
pub(crate) fn encode_frame2(payload: &[u8]) -> Option<Vec<u8>> {
    encode_frame_as(FRAME2_MAGIC, payload)
}

fn encode_frame_as(magic: &[u8; 4], payload: &[u8]) -> Option<Vec<u8>> {
    let len = u32::try_from(payload.len()).ok()?;
    let mut frame = Vec::with_capacity(HEADER_LEN + payload.len() + 1);
    frame.extend_from_slice(magic);
    frame.extend_from_slice(&len.to_le_bytes());
    frame.extend_from_slice(&checksum(payload));
    frame.extend_from_slice(payload);
    frame.push(b'\n');
    Some(frame)
}

fn checksum(payload: &[u8]) -> [u8; 8] {
    let hash = blake3::hash(payload);
    let mut out = [0u8; 8];
    out.copy_from_slice(&hash.as_bytes()[..8]);
    out
}

/// How a scan of the log ended.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Tail {
    /// Every byte belongs to a valid frame.
    Clean,
    /// The last frame is cut short by the end of the file.
    Incomplete,
    /// A complete-looking frame is invalid.
    BadFrame {
        /// What is wrong.
        reason: String,
        /// Whether a crash explains it (see the module invariants).
        torn: bool,
    },
}

/// One decoded frame.
#[derive(Debug)]
pub(crate) enum Frame {
    /// A format-1 JSON frame.
    V1(Entry),
    /// A format-2 frame of items.
    V2(Vec<LogItem>),
}

/// One item of a format-2 frame (see `snapshot.rs`).
#[derive(Debug, Clone)]
pub(crate) struct LogItem {
    /// `snapshot::PUT`, `REMOVE`, `DROP_PACK`, `SEAL` or `HEADER`.
    pub kind: u8,
    /// The artifact name (lossy UTF-8; empty for the other kinds).
    pub name: String,
    /// Absolute log offset and length of the body (PUT).
    pub body_at: u64,
    pub body_len: u32,
    /// The number in a DROP_PACK, SEAL or HEADER body.
    pub value: u64,
    /// A PUT's packed blob locations.
    pub locs: Vec<([u8; 32], PackLoc)>,
}

/// Decodes a format-2 payload found at absolute `payload_at`; stops at the
/// first malformed item (a checksummed frame this build wrote has none).
fn parse_items(payload: &[u8], payload_at: u64) -> Vec<LogItem> {
    let mut items = Vec::new();
    let mut pos = 0usize;
    while let Some(item) = payload.get(pos..).and_then(snapshot::item_at) {
        let body_pos = pos + snapshot::ITEM_HEAD + item.name.len();
        let mut out = LogItem {
            kind: item.kind,
            name: String::from_utf8_lossy(item.name).into_owned(),
            body_at: payload_at + body_pos as u64,
            body_len: item.body.len() as u32,
            value: 0,
            locs: Vec::new(),
        };
        match item.kind {
            snapshot::PUT => {
                out.locs = snapshot::split_put_body(item.body)
                    .map(|(locs, _)| locs)
                    .unwrap_or_default();
            }
            snapshot::DROP_PACK | snapshot::SEAL | snapshot::HEADER => {
                out.value = snapshot::u64_at(item.body, 0).unwrap_or(0);
            }
            _ => {}
        }
        items.push(out);
        pos += item.len;
    }
    items
}

/// The valid frames found from some offset on.
#[derive(Debug)]
pub(crate) struct Scan {
    /// Decoded frames, in log order.
    pub entries: Vec<Frame>,
    /// Absolute offset just past the last valid frame.
    pub end: u64,
    /// What follows `end`.
    pub tail: Tail,
}

/// Decodes the frames of `buf`, which starts at absolute offset `base`.
pub(crate) fn scan(buf: &[u8], base: u64) -> Scan {
    let mut entries = Vec::new();
    let mut pos = 0usize;
    let tail = loop {
        let rest = &buf[pos..];
        if rest.is_empty() {
            break Tail::Clean;
        }
        if rest.len() < HEADER_LEN {
            break Tail::Incomplete;
        }
        let v2 = &rest[..4] == FRAME2_MAGIC;
        if &rest[..4] != FRAME_MAGIC && !v2 {
            break Tail::BadFrame {
                reason: "bad frame magic".into(),
                torn: all_zero(rest),
            };
        }
        let mut len_bytes = [0u8; 4];
        len_bytes.copy_from_slice(&rest[4..8]);
        let len = u32::from_le_bytes(len_bytes) as usize;
        let Some(frame_len) = HEADER_LEN.checked_add(len).and_then(|n| n.checked_add(1)) else {
            break Tail::Incomplete;
        };
        if rest.len() < frame_len {
            break Tail::Incomplete;
        }
        let payload = &rest[HEADER_LEN..HEADER_LEN + len];
        let valid = rest[8..16] == checksum(payload) && rest[frame_len - 1] == b'\n';
        if !valid {
            break Tail::BadFrame {
                reason: "checksum mismatch".into(),
                torn: rest.len() == frame_len || all_zero(rest),
            };
        }
        let at = base + pos as u64;
        entries.push(if v2 {
            Frame::V2(parse_items(payload, at + HEADER_LEN as u64))
        } else {
            Frame::V1(Entry::parse(payload, at))
        });
        pos += frame_len;
    };
    Scan {
        entries,
        end: base + pos as u64,
        tail,
    }
}

fn all_zero(bytes: &[u8]) -> bool {
    bytes.iter().all(|b| *b == 0)
}

/// What the tail (the current log generation) says about one name.
#[derive(Debug, Clone)]
pub(crate) enum TailItem {
    /// A format-2 PUT whose body is at this log offset (read on demand).
    At {
        /// Absolute log offset of the PUT body.
        at: u64,
        /// Body length.
        len: u32,
    },
    /// A record replayed from a format-1 frame.
    Parsed(Box<Record>),
    /// A format-1 record this build cannot read.
    Unreadable(UnreadableRecord),
    /// Removed (shadows the runs).
    Removed,
}

/// The result of a lookup by name.
#[derive(Debug)]
pub(crate) enum Found {
    /// A live, readable record.
    Record(Record),
    /// A live record this build cannot read.
    Unreadable(UnreadableRecord),
    /// No live record of that name.
    Missing,
}

/// The index: the runs of the current generation (mapped), the log tail
/// replayed on top of them, and the writer's dedup map for the tail.
#[derive(Debug, Default)]
pub(crate) struct Index {
    /// Snapshot runs, oldest first (empty for a format-1 store).
    pub runs: Arc<Vec<Run>>,
    /// The manifest generation the runs belong to (0: format 1).
    pub generation: u64,
    /// Live changes since the runs, by name.
    pub tail: Arc<BTreeMap<String, TailItem>>,
    /// Read handle of the log the tail comes from; `None`: no log (a
    /// read-only store without one).
    pub log: Option<Arc<File>>,
    /// The log file's identity (inode), to notice it being replaced.
    pub log_id: u64,
    /// The log's generation (its HEADER item; 0 for a format-1 log).
    pub log_gen: u64,
    /// Bytes of the log applied so far (always a frame boundary).
    pub offset: u64,
    /// Where the tail starts (after the header frame).
    pub tail_start: u64,
    /// The log was sealed: a newer generation exists.
    pub sealed: bool,
    /// The log is older than the runs (a compaction stopped after writing
    /// its manifest): its items are already in the runs and are skipped.
    pub skip: bool,
    /// digest → a pack range holding it, from tail PUTs.
    pub dedup: HashMap<[u8; 32], PackLoc>,
    /// The store's `packs/`: a dedup hit must name a pack that still
    /// exists (gc may have dropped it since the run or frame was written).
    pub packs_dir: std::path::PathBuf,
}

impl Index {
    /// Applies one frame; returns the packs it drops.
    pub(crate) fn apply(&mut self, frame: Frame) -> Vec<u64> {
        match frame {
            Frame::V1(entry) => self.apply_v1(entry),
            Frame::V2(items) => self.apply_v2(items),
        }
    }

    fn apply_v1(&mut self, entry: Entry) -> Vec<u64> {
        if entry.sealed.is_some() {
            self.sealed = true;
        }
        if self.skip {
            return entry.drop_packs;
        }
        let tail = Arc::make_mut(&mut self.tail);
        for name in entry.remove {
            tail.insert(name, TailItem::Removed);
        }
        for record in entry.put {
            for (digest, loc) in snapshot::record_locs(&record) {
                self.dedup.insert(digest, loc);
            }
            tail.insert(record.name.clone(), TailItem::Parsed(Box::new(record)));
        }
        for bad in entry.unreadable {
            tail.insert(bad.name.clone(), TailItem::Unreadable(bad));
        }
        entry.drop_packs
    }

    fn apply_v2(&mut self, items: Vec<LogItem>) -> Vec<u64> {
        let mut dropped = Vec::new();
        for item in items {
            match item.kind {
                snapshot::SEAL => self.sealed = true,
                snapshot::DROP_PACK => dropped.push(item.value),
                snapshot::PUT if !self.skip => {
                    for (digest, loc) in item.locs {
                        self.dedup.insert(digest, loc);
                    }
                    let value = TailItem::At {
                        at: item.body_at,
                        len: item.body_len,
                    };
                    Arc::make_mut(&mut self.tail).insert(item.name, value);
                }
                snapshot::REMOVE if !self.skip => {
                    Arc::make_mut(&mut self.tail).insert(item.name, TailItem::Removed);
                }
                _ => {}
            }
        }
        dropped
    }

    /// Bytes of log replayed on top of the runs.
    pub(crate) fn tail_bytes(&self) -> u64 {
        self.offset.saturating_sub(self.tail_start)
    }

    /// A pack range holding `digest` (hex), if the tail or a run knows one.
    /// The caller checks that the pack still exists.
    pub(crate) fn dedup_lookup(&self, digest: &str) -> Option<PackLoc> {
        let raw = snapshot::hex32(digest)?;
        let loc = match self.dedup.get(&raw) {
            Some(loc) => *loc,
            None => self.runs.iter().rev().find_map(|run| run.dedup(&raw))?,
        };
        // Packs are append-only and never renumbered: if the file is
        // there, so are the bytes (the caller holds the store lock, so gc
        // cannot delete it before the commit references it).
        super::pack::pack_path(&self.packs_dir, loc.pack)
            .is_file()
            .then_some(loc)
    }

    /// The live record named `name`.
    pub(crate) fn lookup(&self, name: &str) -> Result<Found, StoreError> {
        if let Some(item) = self.tail.get(name) {
            return self.resolve_tail(name, item);
        }
        for run in self.runs.iter().rev() {
            match run.find(name.as_bytes()) {
                Ok(None) => continue,
                Ok(Some(item)) => return Ok(resolve_run_item(name, &item, run)),
                Err(()) => {
                    return Ok(Found::Unreadable(UnreadableRecord {
                        name: name.to_owned(),
                        reason: format!("snapshot run {} is damaged", run.file),
                        offset: 0,
                    }))
                }
            }
        }
        Ok(Found::Missing)
    }

    /// Resolves a tail item (reading a format-2 body from the log).
    pub(crate) fn resolve_tail(&self, name: &str, item: &TailItem) -> Result<Found, StoreError> {
        resolve_tail(self.log.as_deref(), name, item)
    }

    /// Every live record in name order, streamed (see [`Live`]).
    pub(crate) fn live(&self) -> Result<Live, StoreError> {
        Ok(Live {
            merge: Merge::new(Some(&self.tail), Arc::clone(&self.runs), 0)?,
            log: self.log.clone(),
        })
    }

    /// Whether the tail holds a record this build cannot read (format-1
    /// frames only: they cannot be copied into a run as they were).
    pub(crate) fn tail_has_unreadable(&self) -> Option<&UnreadableRecord> {
        self.tail.values().find_map(|item| match item {
            TailItem::Unreadable(bad) => Some(bad),
            _ => None,
        })
    }
}

/// Resolves a tail item, reading a format-2 body from `log`.
pub(crate) fn resolve_tail(
    log: Option<&File>,
    name: &str,
    item: &TailItem,
) -> Result<Found, StoreError> {
    Ok(match item {
        TailItem::Removed => Found::Missing,
        TailItem::Parsed(record) => Found::Record((**record).clone()),
        TailItem::Unreadable(bad) => Found::Unreadable(bad.clone()),
        TailItem::At { at, len } => {
            let body = read_body(log, *at, *len)?;
            parse_record(name, snapshot::put_json(&body), *at)
        }
    })
}

/// Reads a PUT body from the log.
pub(crate) fn read_body(log: Option<&File>, at: u64, len: u32) -> Result<Vec<u8>, StoreError> {
    let mut body = vec![0u8; len as usize];
    if let Some(log) = log {
        read_exact_at(log, &mut body, at).map_err(|e| StoreError::io(super::LOG_FILE, e))?;
    }
    Ok(body)
}

/// Fills `buf` from `log` at `at` (nothing without a log).
pub(crate) fn read_exact_at_path(
    log: Option<&File>,
    buf: &mut [u8],
    at: u64,
) -> Result<(), StoreError> {
    match log {
        Some(log) => read_exact_at(log, buf, at).map_err(|e| StoreError::io(super::LOG_FILE, e)),
        None => Ok(()),
    }
}

/// Every live artifact in name order: `Ok` readable, `Err` unreadable.
/// Owns its references (runs, log, a copy of the bounded tail), so it
/// holds no lock and its memory does not grow with the store.
#[derive(Debug)]
pub(crate) struct Live {
    merge: Merge,
    log: Option<Arc<File>>,
}

impl Iterator for Live {
    type Item = Result<Record, UnreadableRecord>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let (name, pick) = self.merge.next()?;
            let found = match pick {
                Pick::Tail(item) => match resolve_tail(self.log.as_deref(), &name, &item) {
                    Ok(found) => found,
                    Err(e) => Found::Unreadable(UnreadableRecord {
                        name,
                        reason: e.to_string(),
                        offset: 0,
                    }),
                },
                Pick::Run { run, kind, body } => {
                    resolve_run_kind(&name, kind, &body, &self.merge.runs()[run])
                }
            };
            match found {
                Found::Record(record) => return Some(Ok(record)),
                Found::Unreadable(bad) => return Some(Err(bad)),
                Found::Missing => continue,
            }
        }
    }
}

/// What a run's item for `name` means.
pub(crate) fn resolve_run_item(name: &str, item: &snapshot::ItemRef<'_>, run: &Run) -> Found {
    resolve_run_kind(name, item.kind, item.body, run)
}

/// What a run's item of `kind` with `body` means for `name`.
pub(crate) fn resolve_run_kind(name: &str, kind: u8, body: &[u8], run: &Run) -> Found {
    match kind {
        snapshot::PUT => parse_record(name, snapshot::put_json(body), 0),
        snapshot::REMOVE => Found::Missing,
        kind => Found::Unreadable(UnreadableRecord {
            name: name.to_owned(),
            reason: format!(
                "snapshot run {} holds an item of unknown kind {kind}",
                run.file
            ),
            offset: 0,
        }),
    }
}

/// Parses a record's log JSON stored under `name`.
pub(crate) fn parse_record(name: &str, json: &[u8], offset: u64) -> Found {
    let unreadable = |reason: String| {
        Found::Unreadable(UnreadableRecord {
            name: name.to_owned(),
            reason,
            offset,
        })
    };
    let value: Value = match serde_json::from_slice(json) {
        Ok(value) => value,
        Err(e) => return unreadable(format!("invalid JSON: {e}")),
    };
    match Record::from_log_json(value) {
        Ok(record) if record.name == name => Found::Record(record),
        Ok(record) => unreadable(format!(
            "record is named {:?}, not as its index entry",
            record.name
        )),
        Err(unparsed) => unreadable(unparsed.reason),
    }
}

#[cfg(unix)]
fn read_exact_at(file: &File, buf: &mut [u8], at: u64) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    file.read_exact_at(buf, at)
}

#[cfg(not(unix))]
fn read_exact_at(file: &File, buf: &mut [u8], at: u64) -> std::io::Result<()> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = file;
    f.seek(SeekFrom::Start(at))?;
    f.read_exact(buf)
}

/// Where a merged item comes from.
#[derive(Debug, Clone)]
pub(crate) enum Pick {
    /// The tail's item.
    Tail(TailItem),
    /// An item of run `run` (a PUT or a tombstone).
    Run {
        /// Index of the run in the merge's runs.
        run: usize,
        /// `snapshot::PUT` or `snapshot::REMOVE`.
        kind: u8,
        /// The item's body.
        body: Vec<u8>,
    },
}

/// Merges the tail and the runs in name order; for each name, the newest
/// source wins (tail, then the newest run). Tombstones are yielded too.
/// Runs are read sequentially through small buffers (`snapshot::Cursor`),
/// and the merge holds its own references: memory stays constant beyond
/// the (bounded) tail, whatever the store's size.
#[derive(Debug)]
pub(crate) struct Merge {
    tail: std::iter::Peekable<std::vec::IntoIter<(String, TailItem)>>,
    runs: Arc<Vec<Run>>,
    /// Runs merged: `first..runs.len()`; their cursors and current heads.
    first: usize,
    cursors: Vec<snapshot::Cursor>,
    heads: Vec<Option<snapshot::OwnedItem>>,
    /// The first read error; the merge stops there.
    pub error: Option<std::io::Error>,
}

impl Merge {
    /// Merges `tail` (if given) with `runs[first..]`.
    pub(crate) fn new(
        tail: Option<&BTreeMap<String, TailItem>>,
        runs: Arc<Vec<Run>>,
        first: usize,
    ) -> Result<Merge, StoreError> {
        let tail: Vec<(String, TailItem)> = tail
            .map(|t| t.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default();
        let mut cursors = Vec::new();
        for run in runs.iter().skip(first) {
            cursors.push(run.cursor().map_err(|e| StoreError::io(&run.file, e))?);
        }
        let mut merge = Merge {
            tail: tail.into_iter().peekable(),
            runs,
            first,
            heads: Vec::with_capacity(cursors.len()),
            cursors,
            error: None,
        };
        for c in 0..merge.cursors.len() {
            let head = merge.advance(c);
            merge.heads.push(head);
        }
        Ok(merge)
    }

    /// The runs this merge reads.
    pub(crate) fn runs(&self) -> &Arc<Vec<Run>> {
        &self.runs
    }

    fn advance(&mut self, c: usize) -> Option<snapshot::OwnedItem> {
        match self.cursors[c].next_item() {
            Ok(item) => item,
            Err(e) => {
                tracing::warn!(target: "stowage::store", run = %self.runs[self.first + c].file, error = %e, "cannot read a snapshot run");
                self.error.get_or_insert(e);
                None
            }
        }
    }
}

impl Iterator for Merge {
    type Item = (String, Pick);

    fn next(&mut self) -> Option<(String, Pick)> {
        if self.error.is_some() {
            return None;
        }
        let mut min: Option<Vec<u8>> = self.tail.peek().map(|(k, _)| k.as_bytes().to_vec());
        for item in self.heads.iter().flatten() {
            if min.as_deref().is_none_or(|m| item.name.as_slice() < m) {
                min = Some(item.name.clone());
            }
        }
        let min = min?;
        let mut pick = None;
        if self.tail.peek().is_some_and(|(k, _)| k.as_bytes() == min) {
            pick = self.tail.next().map(|(_, item)| Pick::Tail(item));
        }
        for c in (0..self.heads.len()).rev() {
            if self.heads[c].as_ref().is_some_and(|h| h.name == min) {
                let next = self.advance(c);
                let head = std::mem::replace(&mut self.heads[c], next);
                if pick.is_none() {
                    if let Some(head) = head {
                        pick = Some(Pick::Run {
                            run: self.first + c,
                            kind: head.kind,
                            body: head.body,
                        });
                    }
                }
            }
        }
        let name = String::from_utf8_lossy(&min).into_owned();
        pick.map(|p| (name, p))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(n: usize) -> Vec<u8> {
        let mut out = Vec::new();
        for i in 0..n {
            let entry = Entry {
                remove: vec![format!("a{i}")],
                ..Entry::default()
            };
            out.extend(encode_frame(&entry.to_payload()).expect("small frame"));
        }
        out
    }

    #[track_caller]
    fn check(buf: &[u8], entries: usize, end: usize, tail: Tail) {
        let scan = scan(buf, 0);
        assert_eq!(scan.entries.len(), entries);
        assert_eq!(scan.end, end as u64);
        assert_eq!(scan.tail, tail);
    }

    #[test]
    fn payloads_round_trip() {
        for entry in [
            Entry::default(),
            Entry {
                remove: vec!["a".into(), "b\"c".into()],
                ..Entry::default()
            },
            Entry {
                drop_packs: vec![1, 20],
                remove: vec!["x".into()],
                ..Entry::default()
            },
        ] {
            let payload = entry.to_payload();
            let back = Entry::parse(&payload, 0);
            assert_eq!(
                (back.remove, back.drop_packs),
                (entry.remove, entry.drop_packs)
            );
        }
    }

    #[test]
    fn whole_frames_scan_clean() {
        let buf = frames(3);
        check(&buf, 3, buf.len(), Tail::Clean);
    }

    #[test]
    fn a_cut_frame_is_incomplete() {
        let buf = frames(2);
        let one = frames(1).len();
        for cut in [one + 1, one + 10, buf.len() - 1] {
            check(&buf[..cut], 1, one, Tail::Incomplete);
        }
    }

    #[test]
    fn a_damaged_last_frame_is_torn() {
        let mut buf = frames(2);
        let one = frames(1).len();
        let last = buf.len() - 3;
        buf[last] ^= 1;
        let reason = "checksum mismatch".to_owned();
        check(&buf, 1, one, Tail::BadFrame { reason, torn: true });
    }

    #[test]
    fn a_damaged_middle_frame_is_not_torn() {
        let mut buf = frames(3);
        let one = frames(1).len();
        buf[one + HEADER_LEN + 2] ^= 1;
        let reason = "checksum mismatch".to_owned();
        check(
            &buf,
            1,
            one,
            Tail::BadFrame {
                reason,
                torn: false,
            },
        );
    }

    #[test]
    fn trailing_zeros_are_torn() {
        let mut buf = frames(1);
        let one = buf.len();
        buf.extend([0u8; 40]);
        let reason = "bad frame magic".to_owned();
        check(&buf, 1, one, Tail::BadFrame { reason, torn: true });
    }

    #[test]
    fn a_checksummed_frame_with_bad_json_is_one_unreadable_entry() {
        let mut buf = frames(1);
        let at = buf.len();
        buf.extend(encode_frame(b"{not json").expect("small frame"));
        let scan = scan(&buf, 100);
        assert_eq!(scan.tail, Tail::Clean);
        let Frame::V1(second) = &scan.entries[1] else {
            panic!("a JSON frame")
        };
        let bad = &second.unreadable;
        assert_eq!(bad.len(), 1);
        assert_eq!(bad[0].name, format!(".record-at-{}", at + 100));
        assert_eq!(bad[0].offset, (at + 100) as u64);
        assert!(
            bad[0]
                .reason
                .starts_with("invalid JSON: key must be a string"),
            "{}",
            bad[0].reason
        );
    }

    #[test]
    fn each_bad_record_of_a_frame_is_unreadable_on_its_own() {
        let payload =
            br#"{"put":[{"name":"v2","format_version":3},{"format_version":1}],"remove":["gone"]}"#;
        let entry = Entry::parse(payload, 7);
        assert_eq!(entry.remove, ["gone"]);
        let names: Vec<(&str, &str)> = entry
            .unreadable
            .iter()
            .map(|u| (u.name.as_str(), u.reason.as_str()))
            .collect();
        assert_eq!(
            names,
            [
                (
                    "v2",
                    "record format version 3 is newer than this build reads (2); upgrade stowage"
                ),
                (".record-at-7-1", "missing name")
            ]
        );
    }
}
