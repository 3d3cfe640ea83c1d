//! Store format 2's index files: the binary items shared by log frames and
//! snapshot runs, the runs themselves (immutable, name-sorted, memory-mapped
//! files) and the manifest naming the current generation's runs.
//!
//! ```text
//! item      = kind u8 | name_len u32 LE | body_len u32 LE | name | body
//!   PUT       body = nlocs u16 LE | nlocs × LOC | record JSON (log form)
//!   REMOVE    body = empty (a tombstone)
//!   DROP_PACK body = pack number u64 LE (name empty)
//!   SEAL      body = next generation u64 LE (name empty)
//!   HEADER    body = generation u64 LE (name empty; the first frame of a log)
//! LOC       = blake3 digest (32 raw bytes) | pack u64 | offset u64 | len u64 | zstd u8
//!
//! log frame (SLG2) = magic "SLG2" | len u32 | first 8 bytes of blake3(payload)
//!                    | payload: item* | "\n"
//!
//! run file  = header (64 bytes) | PUT/REMOVE items sorted by name
//!             | table: count × u64 LE absolute item offsets
//!             | dedup: dedup_count × 64 bytes (LOC, 7 bytes padding), by digest
//! header    = "STWRUN01" | count | table_off | dedup_off | dedup_count
//!             | file_len | generation | 0            (u64 LE each)
//!
//! manifest  = "stowage-manifest 1\ngeneration G\n" ("run FILE\n")*  (oldest run first)
//! ```
//!
//! Invariants:
//! - A run is written whole to a temp file, fsynced and renamed into place,
//!   then never modified; it is deleted (unlinked) only after a manifest
//!   that no longer names it is in place. A mapping of it therefore never
//!   changes under a reader (the `sys::map_file` contract).
//! - Every offset and length read from a run is bounds-checked: a damaged
//!   run is [`StoreError::IndexCorrupt`] or an unreadable record, never a
//!   panic.
//! - A record's JSON is stored as it is (the log form `record.rs` writes,
//!   or whatever bytes a newer build wrote): runs and SLG2 frames copy it
//!   opaquely, so a record this build cannot parse survives compaction.
//!
//! Decision: PUT items carry their packed blobs' locations (LOC) beside the
//! JSON so a writer's dedup table and a run's digest table are built without
//! parsing records; the JSON stays the only source of truth for reads.
//! Decision: no whole-file checksum on runs: checking one would read the
//! whole run at open (O(n)); a run is only ever produced by an atomic
//! rename, so a torn run cannot exist, and outside damage shows as
//! unreadable records or `IndexCorrupt`.

use std::cmp::Ordering;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use super::error::{IoContext, StoreError};
use super::record::{BlobLocation, PackLoc, Record};
use super::sys;

/// Item kinds.
pub(crate) const PUT: u8 = 1;
pub(crate) const REMOVE: u8 = 2;
pub(crate) const DROP_PACK: u8 = 3;
pub(crate) const SEAL: u8 = 4;
pub(crate) const HEADER: u8 = 5;

/// The magic of a format-2 log frame.
pub(crate) const FRAME2_MAGIC: &[u8; 4] = b"SLG2";
const RUN_MAGIC: &[u8; 8] = b"STWRUN01";
const RUN_HEADER: usize = 64;
const LOC_LEN: usize = 57;
const DEDUP_LEN: usize = 64;
/// The manifest's file name in the store directory.
pub(crate) const MANIFEST_FILE: &str = "manifest";
const MANIFEST_MAGIC: &str = "stowage-manifest 1";

/// Item header length (kind, name length, body length).
pub(crate) const ITEM_HEAD: usize = 9;

/// A packed blob's raw digest and its pack range.
pub(crate) type Loc = ([u8; 32], PackLoc);

/// Appends one item to `out`.
pub(crate) fn push_item(out: &mut Vec<u8>, kind: u8, name: &[u8], body: &[u8]) {
    out.push(kind);
    out.extend_from_slice(&(name.len() as u32).to_le_bytes());
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(name);
    out.extend_from_slice(body);
}

/// A PUT item's body for `record`: its packed blob locations, then its log
/// JSON.
pub(crate) fn put_body(record: &Record) -> Vec<u8> {
    let locs: Vec<([u8; 32], PackLoc)> = record_locs(record);
    let mut body = Vec::with_capacity(2 + locs.len() * LOC_LEN + 400);
    body.extend_from_slice(&(locs.len() as u16).to_le_bytes());
    for (digest, loc) in &locs {
        push_loc(&mut body, digest, loc);
    }
    record.write_log_json(&mut body);
    body
}

/// The packed, non-empty blob locations of `record` with raw digests.
pub(crate) fn record_locs(record: &Record) -> Vec<([u8; 32], PackLoc)> {
    record
        .blobs
        .iter()
        .filter_map(|b| match b.location {
            BlobLocation::Pack(loc) if loc.len > 0 => Some((hex32(&b.digest)?, loc)),
            _ => None,
        })
        .take(u16::MAX as usize)
        .collect()
}

fn push_loc(out: &mut Vec<u8>, digest: &[u8; 32], loc: &PackLoc) {
    out.extend_from_slice(digest);
    out.extend_from_slice(&loc.pack.to_le_bytes());
    out.extend_from_slice(&loc.offset.to_le_bytes());
    out.extend_from_slice(&loc.len.to_le_bytes());
    out.push(u8::from(loc.zstd));
}

fn read_loc(b: &[u8]) -> Option<([u8; 32], PackLoc)> {
    let digest: [u8; 32] = b.get(..32)?.try_into().ok()?;
    Some((
        digest,
        PackLoc {
            pack: u64_at(b, 32)?,
            offset: u64_at(b, 40)?,
            len: u64_at(b, 48)?,
            zstd: *b.get(56)? != 0,
        },
    ))
}

/// Decodes 64 hex digits.
pub(crate) fn hex32(hex: &str) -> Option<[u8; 32]> {
    let bytes = hex.as_bytes();
    if bytes.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in bytes.chunks_exact(2).enumerate() {
        let hi = (pair[0] as char).to_digit(16)?;
        let lo = (pair[1] as char).to_digit(16)?;
        out[i] = (hi * 16 + lo) as u8;
    }
    Some(out)
}

/// Encodes 32 bytes as lowercase hex.
#[cfg(test)]
pub(crate) fn to_hex(bytes: &[u8; 32]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(64);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 15)] as char);
    }
    s
}

pub(crate) fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// One decoded item, borrowing its bytes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ItemRef<'a> {
    pub kind: u8,
    pub name: &'a [u8],
    pub body: &'a [u8],
    /// Total encoded length (header + name + body).
    pub len: usize,
}

/// Decodes the item at the start of `b`.
pub(crate) fn item_at(b: &[u8]) -> Option<ItemRef<'_>> {
    let kind = *b.first()?;
    let name_len = u32_at(b, 1)? as usize;
    let body_len = u32_at(b, 5)? as usize;
    let name_end = ITEM_HEAD.checked_add(name_len)?;
    let end = name_end.checked_add(body_len)?;
    Some(ItemRef {
        kind,
        name: b.get(ITEM_HEAD..name_end)?,
        body: b.get(name_end..end)?,
        len: end,
    })
}

/// The packed locations and JSON of a PUT body.
pub(crate) fn split_put_body(body: &[u8]) -> Option<(Vec<Loc>, &[u8])> {
    let n = usize::from(u16::from_le_bytes(body.get(..2)?.try_into().ok()?));
    let json_at = 2 + n * LOC_LEN;
    let locs = (0..n)
        .map(|i| read_loc(body.get(2 + i * LOC_LEN..2 + (i + 1) * LOC_LEN)?))
        .collect::<Option<Vec<_>>>()?;
    Some((locs, body.get(json_at..)?))
}

/// The JSON part of a PUT body (empty if the body is malformed).
pub(crate) fn put_json(body: &[u8]) -> &[u8] {
    let n = body
        .get(..2)
        .map(|b| usize::from(u16::from_le_bytes([b[0], b[1]])))
        .unwrap_or(0);
    body.get(2 + n * LOC_LEN..).unwrap_or(&[])
}

// ---- runs ----

/// An open, mapped run file.
#[derive(Debug)]
pub(crate) struct Run {
    /// File name in the store directory.
    pub file: String,
    /// The open file (kept: a compaction may unlink the name while this
    /// generation is still being read).
    handle: File,
    map: Mmap,
    count: usize,
    table_off: usize,
    dedup_off: usize,
    dedup_count: usize,
}

impl Run {
    /// Maps and checks the run `file` in `dir`. `NotFound` stays an
    /// `Io` error with that kind (a concurrent compaction deleted it).
    pub(crate) fn open(dir: &Path, file: &str) -> Result<Run, StoreError> {
        let path = dir.join(file);
        let handle = File::open(&path).at(&path)?;
        // SAFETY: runs are immutable once renamed into place and only ever
        // unlinked (module invariants), which leaves the mapping valid.
        let map = unsafe { sys::map_file(&handle) }.at(&path)?;
        let bad = |reason: &str| StoreError::IndexCorrupt {
            path: path.clone(),
            reason: reason.to_owned(),
        };
        if map.len() < RUN_HEADER || &map[..8] != RUN_MAGIC {
            return Err(bad("not a snapshot run (bad magic)"));
        }
        let field = |i: usize| u64_at(&map, 8 + i * 8).map(|v| v as usize).unwrap_or(0);
        let (count, table_off, dedup_off, dedup_count, file_len) =
            (field(0), field(1), field(2), field(3), field(4));
        let table_end = count.checked_mul(8).and_then(|n| n.checked_add(table_off));
        let dedup_end = dedup_count
            .checked_mul(DEDUP_LEN)
            .and_then(|n| n.checked_add(dedup_off));
        if file_len != map.len()
            || table_off < RUN_HEADER
            || table_end != Some(dedup_off)
            || dedup_end != Some(file_len)
        {
            return Err(bad("header does not match the file"));
        }
        Ok(Run {
            file: file.to_owned(),
            handle,
            map,
            count,
            table_off,
            dedup_off,
            dedup_count,
        })
    }

    /// Number of items (records and tombstones).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.count
    }

    /// File size in bytes.
    pub(crate) fn bytes(&self) -> u64 {
        self.map.len() as u64
    }

    /// A sequential reader of the items in name order, through `pread`
    /// and a 64 KiB buffer rather than the mapping, so a full scan (`ls`,
    /// `verify`, compaction) does not make the whole run resident.
    pub(crate) fn cursor(&self) -> io::Result<Cursor> {
        Ok(Cursor {
            reader: io::BufReader::with_capacity(
                64 << 10,
                AtReader {
                    file: self.handle.try_clone()?,
                    pos: RUN_HEADER as u64,
                    end: self.table_off as u64,
                },
            ),
            left: self.count,
        })
    }

    /// Item `i` in name order; `None` if it is out of bounds or damaged.
    pub(crate) fn item(&self, i: usize) -> Option<ItemRef<'_>> {
        if i >= self.count {
            return None;
        }
        let at = u64_at(&self.map, self.table_off + i * 8)? as usize;
        if at < RUN_HEADER || at >= self.table_off {
            return None;
        }
        item_at(self.map.get(at..self.table_off)?)
    }

    /// The item named `name` (binary search, O(log n) page touches).
    /// `Err(())` if a probed item is damaged.
    pub(crate) fn find(&self, name: &[u8]) -> Result<Option<ItemRef<'_>>, ()> {
        let (mut lo, mut hi) = (0usize, self.count);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let item = self.item(mid).ok_or(())?;
            match item.name.cmp(name) {
                Ordering::Less => lo = mid + 1,
                Ordering::Greater => hi = mid,
                Ordering::Equal => return Ok(Some(item)),
            }
        }
        Ok(None)
    }

    /// A pack range holding `digest`, from this run's digest table.
    pub(crate) fn dedup(&self, digest: &[u8; 32]) -> Option<PackLoc> {
        let (mut lo, mut hi) = (0usize, self.dedup_count);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let at = self.dedup_off + mid * DEDUP_LEN;
            let entry = self.map.get(at..at + DEDUP_LEN)?;
            match entry[..32].cmp(&digest[..]) {
                Ordering::Less => lo = mid + 1,
                Ordering::Greater => hi = mid,
                Ordering::Equal => return read_loc(entry).map(|(_, loc)| loc),
            }
        }
        None
    }
}

/// Reads a file region by positioned reads (no shared file offset).
#[derive(Debug)]
struct AtReader {
    file: File,
    pos: u64,
    end: u64,
}

impl io::Read for AtReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = usize::try_from(self.end.saturating_sub(self.pos)).unwrap_or(usize::MAX);
        let want = buf.len().min(left);
        if want == 0 {
            return Ok(0);
        }
        let n = read_at(&self.file, &mut buf[..want], self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

#[cfg(unix)]
fn read_at(file: &File, buf: &mut [u8], at: u64) -> io::Result<usize> {
    use std::os::unix::fs::FileExt;
    file.read_at(buf, at)
}

#[cfg(not(unix))]
fn read_at(file: &File, buf: &mut [u8], at: u64) -> io::Result<usize> {
    use std::io::{Read, Seek};
    let mut f = file;
    f.seek(SeekFrom::Start(at))?;
    f.read(buf)
}

/// One item read by a [`Cursor`].
#[derive(Debug, Clone)]
pub(crate) struct OwnedItem {
    pub kind: u8,
    pub name: Vec<u8>,
    pub body: Vec<u8>,
}

/// Sequential items of a run (see [`Run::cursor`]).
#[derive(Debug)]
pub(crate) struct Cursor {
    reader: io::BufReader<AtReader>,
    left: usize,
}

impl Cursor {
    /// The next item; `Ok(None)` at the end.
    pub(crate) fn next_item(&mut self) -> io::Result<Option<OwnedItem>> {
        use std::io::Read;
        if self.left == 0 {
            return Ok(None);
        }
        let mut head = [0u8; ITEM_HEAD];
        self.reader.read_exact(&mut head)?;
        let name_len = u32_at(&head, 1).unwrap_or(0) as usize;
        let body_len = u32_at(&head, 5).unwrap_or(0) as usize;
        let inner = self.reader.get_ref();
        let left = inner.end.saturating_sub(inner.pos) as usize + self.reader.buffer().len();
        if name_len.saturating_add(body_len) > left {
            // A damaged length: never allocate what the file cannot hold.
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "snapshot item runs past the end of its run",
            ));
        }
        let mut name = vec![0u8; name_len];
        self.reader.read_exact(&mut name)?;
        let mut body = vec![0u8; body_len];
        self.reader.read_exact(&mut body)?;
        self.left -= 1;
        Ok(Some(OwnedItem {
            kind: head[0],
            name,
            body,
        }))
    }
}

/// Writes a run from items given in strictly increasing name order.
pub(crate) struct RunWriter {
    temp: PathBuf,
    target: PathBuf,
    out: BufWriter<File>,
    pos: u64,
    offsets: Vec<u64>,
    dedup: Vec<([u8; 32], PackLoc)>,
    generation: u64,
}

impl RunWriter {
    /// Starts `dir/file` (through a temp file).
    pub(crate) fn create(dir: &Path, file: &str, generation: u64) -> Result<RunWriter, StoreError> {
        let temp = dir.join(format!("{file}.tmp"));
        let target = dir.join(file);
        let handle = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&temp)
            .at(&temp)?;
        let mut out = BufWriter::with_capacity(1 << 20, handle);
        out.write_all(&[0u8; RUN_HEADER]).at(&temp)?;
        Ok(RunWriter {
            temp,
            target,
            out,
            pos: RUN_HEADER as u64,
            offsets: Vec::new(),
            dedup: Vec::new(),
            generation,
        })
    }

    /// Appends one PUT or REMOVE item.
    pub(crate) fn push(&mut self, kind: u8, name: &[u8], body: &[u8]) -> Result<(), StoreError> {
        if kind == PUT {
            if let Some((locs, _)) = split_put_body(body) {
                self.dedup.extend(locs);
            }
        }
        let mut head = [0u8; ITEM_HEAD];
        head[0] = kind;
        head[1..5].copy_from_slice(&(name.len() as u32).to_le_bytes());
        head[5..9].copy_from_slice(&(body.len() as u32).to_le_bytes());
        let temp = &self.temp;
        self.out.write_all(&head).at(temp)?;
        self.out.write_all(name).at(temp)?;
        self.out.write_all(body).at(temp)?;
        self.offsets.push(self.pos);
        self.pos += (ITEM_HEAD + name.len() + body.len()) as u64;
        Ok(())
    }

    /// Writes the tables and header, fsyncs, renames into place and
    /// fsyncs the directory.
    pub(crate) fn finish(mut self) -> Result<(), StoreError> {
        let temp = self.temp.clone();
        let table_off = self.pos;
        for off in &self.offsets {
            self.out.write_all(&off.to_le_bytes()).at(&temp)?;
        }
        self.dedup.sort_unstable_by_key(|a| a.0);
        self.dedup.dedup_by(|a, b| a.0 == b.0);
        let dedup_off = table_off + self.offsets.len() as u64 * 8;
        let mut entry = Vec::with_capacity(DEDUP_LEN);
        for (digest, loc) in &self.dedup {
            entry.clear();
            push_loc(&mut entry, digest, loc);
            entry.resize(DEDUP_LEN, 0);
            self.out.write_all(&entry).at(&temp)?;
        }
        let file_len = dedup_off + (self.dedup.len() * DEDUP_LEN) as u64;
        let mut header = Vec::with_capacity(RUN_HEADER);
        header.extend_from_slice(RUN_MAGIC);
        for v in [
            self.offsets.len() as u64,
            table_off,
            dedup_off,
            self.dedup.len() as u64,
            file_len,
            self.generation,
            0,
        ] {
            header.extend_from_slice(&v.to_le_bytes());
        }
        let mut file = self
            .out
            .into_inner()
            .map_err(|e| StoreError::io(&temp, e.into_error()))?;
        file.seek(SeekFrom::Start(0)).at(&temp)?;
        file.write_all(&header).at(&temp)?;
        crate::fs::rename_into_place(&file, &temp, &self.target).at(&self.target)
    }
}

// ---- manifest ----

/// The manifest: the current generation and its runs, oldest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Manifest {
    pub generation: u64,
    pub runs: Vec<String>,
}

/// Reads the manifest of `dir`; `Ok(None)` if there is none.
pub(crate) fn read_manifest(dir: &Path) -> Result<Option<Manifest>, StoreError> {
    let path = dir.join(MANIFEST_FILE);
    let text = match fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) if e.kind() == io::ErrorKind::InvalidData => {
            return Err(StoreError::IndexCorrupt {
                path,
                reason: "not UTF-8".into(),
            })
        }
        Err(e) => return Err(StoreError::io(path, e)),
    };
    let bad = |reason: String| StoreError::IndexCorrupt {
        path: path.clone(),
        reason,
    };
    let mut lines = text.lines();
    if lines.next() != Some(MANIFEST_MAGIC) {
        return Err(bad(format!("expected {MANIFEST_MAGIC:?} first")));
    }
    let generation = lines
        .next()
        .and_then(|l| l.strip_prefix("generation "))
        .and_then(|g| g.parse::<u64>().ok())
        .ok_or_else(|| bad("expected \"generation N\" second".into()))?;
    let mut runs = Vec::new();
    for line in lines {
        let file = line
            .strip_prefix("run ")
            .filter(|f| is_run_file(f))
            .ok_or_else(|| bad(format!("unexpected line {line:?}")))?;
        runs.push(file.to_owned());
    }
    Ok(Some(Manifest { generation, runs }))
}

/// Replaces the manifest crash-safely (temp file, fsync, rename, directory
/// fsync).
pub(crate) fn write_manifest(dir: &Path, manifest: &Manifest) -> Result<(), StoreError> {
    let path = dir.join(MANIFEST_FILE);
    let temp = dir.join(format!("{MANIFEST_FILE}.tmp"));
    let mut text = format!("{MANIFEST_MAGIC}\ngeneration {}\n", manifest.generation);
    for run in &manifest.runs {
        text.push_str(&format!("run {run}\n"));
    }
    let mut options = OpenOptions::new();
    options.write(true).create(true).truncate(true);
    crate::fs::write_atomically(&temp, &path, &options, |file| {
        file.write_all(text.as_bytes())
    })
    .at(&path)
}

/// The name of the `k`-th run written in generation `generation`.
pub(crate) fn run_file(generation: u64, k: u32) -> String {
    format!("index.{generation}.{k}.run")
}

/// Whether `name` is a run file name (`index.G.K.run`).
pub(crate) fn is_run_file(name: &str) -> bool {
    let Some(mid) = name
        .strip_prefix("index.")
        .and_then(|n| n.strip_suffix(".run"))
    else {
        return false;
    };
    let mut parts = mid.split('.');
    let ok =
        |p: Option<&str>| p.is_some_and(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    ok(parts.next()) && ok(parts.next()) && parts.next().is_none()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_file_names_round_trip() {
        assert!(is_run_file(&run_file(12, 3)));
        for bad in [
            "index.1.run",
            "index.a.1.run",
            "index.1.1.run.tmp",
            "x.1.1.run",
        ] {
            assert!(!is_run_file(bad), "{bad}");
        }
    }

    #[test]
    fn hex_round_trips() {
        let hex = "00ff10ab".repeat(8);
        let raw = hex32(&hex).expect("hex");
        assert_eq!(to_hex(&raw), hex);
        assert_eq!(hex32("zz"), None);
    }

    #[test]
    fn a_run_finds_every_item_and_digest() {
        let dir = std::env::temp_dir().join(format!("stowage-run-{}", std::process::id()));
        fs::create_dir_all(&dir).expect("dir");
        let mut w = RunWriter::create(&dir, "index.1.0.run", 1).expect("create");
        let names: Vec<String> = (0..100).map(|i| format!("n{i:03}")).collect();
        for (i, name) in names.iter().enumerate() {
            let mut body = Vec::new();
            body.extend_from_slice(&1u16.to_le_bytes());
            let loc = PackLoc {
                pack: 1,
                offset: i as u64,
                len: 1,
                zstd: false,
            };
            push_loc(&mut body, &[i as u8; 32], &loc);
            body.extend_from_slice(b"{}");
            w.push(PUT, name.as_bytes(), &body).expect("push");
        }
        w.finish().expect("finish");
        let run = Run::open(&dir, "index.1.0.run").expect("open");
        assert_eq!(run.len(), 100);
        for (i, name) in names.iter().enumerate() {
            let item = run.find(name.as_bytes()).expect("sound").expect("found");
            assert_eq!(put_json(item.body), b"{}");
            assert_eq!(run.dedup(&[i as u8; 32]).map(|l| l.offset), Some(i as u64));
        }
        assert!(run.find(b"n100").expect("sound").is_none());
        assert!(run.find(b"a").expect("sound").is_none());
        let _ = fs::remove_dir_all(&dir);
    }
}
