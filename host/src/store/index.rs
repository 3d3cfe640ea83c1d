//! The index log (`index.log`) and the in-memory index replayed from it.
//!
//! The log is a sequence of frames, one per commit batch, removal or gc:
//!
//! ```text
//! frame   = magic "SLG1" | len: u32 LE | check: first 8 bytes of blake3(payload)
//!           | payload: `len` bytes of JSON | "\n"
//! payload = {"put": [record…], "remove": [name…], "drop_packs": [pack number…]}
//!           (empty arrays omitted; applied in the order remove, put, drop_packs)
//! ```
//!
//! Records use the log form of [`Record`](super::Record) (see `record.rs`).
//!
//! Invariants:
//! - A frame is appended with a single `write` and fsynced before the batch
//!   is reported committed; frames are never rewritten.
//! - Readers without the store lock stop quietly at the first frame that is
//!   incomplete or fails its checksum: it may be an append in progress.
//! - Under the store lock nobody appends, so such a frame is a torn tail
//!   from a crash (or a failed write) and is truncated away before the next
//!   append — *if* a crash can explain it: the frame is cut short by the end
//!   of the file, ends exactly at the end of the file, or only zero bytes
//!   follow. Anything else is [`StoreError::LogCorrupt`](super::StoreError::LogCorrupt): committed frames
//!   after it are never dropped silently.
//! - A frame that passes its checksum but holds an invalid record does not
//!   block the store (SPEC §6): each record that does not parse becomes an
//!   [`UnreadableRecord`] under its name (or a placeholder), replacing any
//!   older record of that name exactly like a readable put would; a frame
//!   whose JSON or shape is invalid becomes one placeholder entry
//!   `.record-at-OFFSET` (its removals and pack drops cannot be known).
//!
//! Decision: within one frame, readable puts are applied before unreadable
//! ones, so a name that appears twice in a frame stays unreadable if either
//! copy is (conservative: gc keeps refusing).
//! Decision: the in-memory index is a `BTreeMap` by name (sorted `list`,
//! O(log n) `get`) plus a refcounted digest → pack-range map used to
//! deduplicate small blobs; it only holds ranges referenced by live records,
//! so a dedup hit always points at data that gc keeps.
//! Decision: the log is not compacted; removed and replaced records stay in
//! it. Compaction would need a log generation number so other processes
//! notice the file being replaced under their read offsets.

use std::collections::{BTreeMap, HashMap};

use serde_json::Value;

use super::record::{write_json_str, BlobLocation, PackLoc, Record, UnreadableRecord};

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

/// Frames `payload` for appending; `None` if it exceeds the u32 length.
pub(crate) fn encode_frame(payload: &[u8]) -> Option<Vec<u8>> {
    let len = u32::try_from(payload.len()).ok()?;
    let mut frame = Vec::with_capacity(HEADER_LEN + payload.len() + 1);
    frame.extend_from_slice(FRAME_MAGIC);
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

/// The valid frames found from some offset on.
#[derive(Debug)]
pub(crate) struct Scan {
    /// Decoded entries, in log order.
    pub entries: Vec<Entry>,
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
        if &rest[..4] != FRAME_MAGIC {
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
        entries.push(Entry::parse(payload, base + pos as u64));
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

/// The in-memory index: live records plus the small-blob dedup map.
#[derive(Debug, Default)]
pub(crate) struct Index {
    /// Live records by name.
    pub records: BTreeMap<String, Record>,
    /// Live records this build cannot read, by name (never also in
    /// `records`).
    pub unreadable: BTreeMap<String, UnreadableRecord>,
    /// Bytes of the log applied so far (always a frame boundary).
    pub offset: u64,
    /// digest → pack ranges holding it, each with the number of live blob
    /// records referencing it.
    dedup: HashMap<String, Vec<(PackLoc, u32)>>,
}

impl Index {
    /// Applies one entry; returns the packs it drops.
    pub(crate) fn apply(&mut self, entry: Entry) -> Vec<u64> {
        for name in &entry.remove {
            if let Some(old) = self.records.remove(name) {
                self.unref(&old);
            }
            self.unreadable.remove(name);
        }
        for record in entry.put {
            self.add_ref(&record);
            self.unreadable.remove(&record.name);
            if let Some(old) = self.records.insert(record.name.clone(), record) {
                self.unref(&old);
            }
        }
        for bad in entry.unreadable {
            if let Some(old) = self.records.remove(&bad.name) {
                self.unref(&old);
            }
            self.unreadable.insert(bad.name.clone(), bad);
        }
        entry.drop_packs
    }

    /// A live pack range holding `digest`, if any.
    pub(crate) fn dedup_lookup(&self, digest: &str) -> Option<PackLoc> {
        self.dedup
            .get(digest)
            .and_then(|locs| locs.first())
            .map(|(loc, _)| *loc)
    }

    fn add_ref(&mut self, record: &Record) {
        for blob in &record.blobs {
            if let BlobLocation::Pack(loc) = blob.location {
                if loc.len == 0 {
                    continue;
                }
                let locs = self.dedup.entry(blob.digest.clone()).or_default();
                match locs.iter_mut().find(|(l, _)| *l == loc) {
                    Some((_, refs)) => *refs += 1,
                    None => locs.push((loc, 1)),
                }
            }
        }
    }

    fn unref(&mut self, record: &Record) {
        for blob in &record.blobs {
            if let BlobLocation::Pack(loc) = blob.location {
                let Some(locs) = self.dedup.get_mut(&blob.digest) else {
                    continue;
                };
                if let Some(i) = locs.iter().position(|(l, _)| *l == loc) {
                    locs[i].1 -= 1;
                    if locs[i].1 == 0 {
                        locs.swap_remove(i);
                    }
                }
                if locs.is_empty() {
                    self.dedup.remove(&blob.digest);
                }
            }
        }
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
        let bad = &scan.entries[1].unreadable;
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
