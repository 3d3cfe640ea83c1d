//! Artifact records: the metadata kept per artifact, its JSON forms, the
//! naming rules and the hand-rolled RFC 3339 timestamp.
//!
//! Two JSON forms exist, built by hand on `serde_json::Value`:
//! - [`Record::to_json`], the public form printed by `inspect --json` and
//!   `ls --json`: `name, obj_type, [caller_type,] encoding, encoding_version,
//!   blobs[{name, size, digest, storage}], written_by{serializer, version},
//!   serializer_info{..}, created, format_version`;
//! - the log form stored in `index.log`: the public form plus, for packed
//!   blobs, `pack`, `offset` and `stored_size` inside each blob object.
//!
//! Invariants: a parsed record always satisfies the same rules a written one
//! does (valid names, 64-hex lowercase digests, known storage names, a pack
//! location for packed blobs, `stored_size == size` for uncompressed ones), so
//! nothing read from disk can steer a path outside the store or outside the
//! directory `get --raw -o DIR` writes to. A record that breaks a rule is
//! not an error for the whole log: [`Record::from_log_json`] returns
//! [`Unparsed`] (its name if it has one, and the reason) and the index lists
//! it as unreadable (SPEC §6).
//!
//! Artifact names (SPEC §7): 1–255 bytes of UTF-8, no control character, no
//! `/`, not starting with `.`, no leading or trailing whitespace — checked
//! on write ([`validate_name`]).
//! Decision: on read, a record's name is held to the rules every earlier
//! build enforced on write ([`validate_stored_name`]: 1–255 bytes, no `/`,
//! no NUL, no leading `.`); a record breaking them is unreadable. A name
//! with a control character or edge whitespace, which builds before the
//! SPEC §7 rule accepted, stays readable ("old artifacts stay readable",
//! SPEC §6): an artifact name is never used as a path, and every
//! human-readable output escapes it, so it is a display hazard only, and
//! one `escape_control` removes. Blob names, which do become paths, get the
//! full rule on read too.
//! Blob names are untrusted too (a plugin picks them; a record may come from
//! another machine).
//! Decision: a blob name is a single path component: 1–255 bytes, no `/`,
//! no `\` (a separator on Windows), not `.` or `..`, no control character
//! (NUL included). A leading `.` is allowed (`.meta` names a file inside the
//! output directory, nothing more). The plugins write `data`, `source` and
//! `file`.
//!
//! Decision (format evolution): every record carries `format_version`. This
//! build reads versions 1 and 2 ([`RECORD_FORMAT_VERSION`] = 2) and lists a
//! higher one as unreadable, its reason naming both versions. Version 2
//! adds one key, `parts` (a composite's parts, SPEC §15): a record is
//! written as version 2 exactly when it has parts (`format_version_for`),
//! so every other artifact stays a version 1 record that older builds read,
//! and a composite is listed by them as unreadable ("newer than this build
//! reads"), never misread. The v1 parser is the v2 parser with `parts`
//! ignored (v1 readers ignore unknown keys inside a v1 record): v1 records
//! are read as they are and never rewritten. A later version must bump the
//! number for any change in meaning.
//! Decision: a part's blobs are blobs of the record (`blobs`), each named
//! in the part twice: `name`, what its serializer called it, and `blob`,
//! the artifact blob holding it. On read every `blob` must name a blob of
//! the record, no blob may belong to two parts, and `name` follows the blob
//! name rule; `path` is display text (keys joined by `/`), never a path on
//! disk.
//! Decision: `serializer_info` is a string map with unique keys, kept sorted
//! by key (a repeated key keeps its last value), so a record reads back
//! identically whether or not serde_json preserves key order.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value};

/// The highest record format version this build reads (and writes, for
/// composites; see `format_version_for`).
pub const RECORD_FORMAT_VERSION: u32 = 2;

/// The record format version a record with `meta` is written with: 2 when
/// it has parts (a composite), else 1, so older builds keep reading it.
pub fn format_version_for(meta: &RecordMeta) -> u32 {
    if meta.parts.is_empty() {
        1
    } else {
        2
    }
}

/// `storage` of a blob kept uncompressed in its own file,
/// `blobs/<2 hex>/<digest>` (mappable).
pub const STORAGE_RAW: &str = "raw";
/// `storage` of a blob kept as one zstd frame in its own file,
/// `blobs/<2 hex>/<digest>.zst`.
pub const STORAGE_FILE_ZSTD: &str = "file+zstd";
/// `storage` of a blob kept uncompressed inside a pack file (mappable).
pub const STORAGE_PACKED: &str = "packed";
/// `storage` of a blob kept as one zstd frame inside a pack file.
pub const STORAGE_PACKED_ZSTD: &str = "packed+zstd";

/// Longest artifact or blob name, in bytes.
pub const MAX_NAME_LEN: usize = 255;

/// What the caller says about an artifact; stored verbatim in its record.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecordMeta {
    /// The stored value's type, as the serializer names it.
    pub obj_type: String,
    /// The encoding name (`msgpack`, `safetensors`, …).
    pub encoding: String,
    /// The encoding's format version.
    pub encoding_version: u32,
    /// The serializer that wrote the artifact ("written by").
    pub serializer: String,
    /// That serializer's version.
    pub serializer_version: String,
    /// Free-form string pairs set by the serializer (and the host). Stored
    /// sorted by key with unique keys.
    pub serializer_info: Vec<(String, String)>,
    /// The value's type as the saving caller's language names it (Python:
    /// `module.qualname[params]`), beside the serializer's own `obj_type`,
    /// which readers dispatch on. Optional key `caller_type`, written only
    /// when set; v1 readers ignore it.
    pub caller_type: Option<String>,
    /// A composite's parts (record format version 2); empty otherwise.
    pub parts: Vec<PartRecord>,
}

/// One part of a composite artifact: a leaf (or a map of tensors) of the
/// stored structure, written by its own serializer into blobs of the
/// artifact.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PartRecord {
    /// Where the part sits in the structure: map keys and list indices
    /// joined by `/` (display text).
    pub path: String,
    /// The part value's kind name (`tensor`, `tensor_map`, `arrow`, …).
    pub kind: String,
    /// The part value's type, as its serializer named it.
    pub obj_type: String,
    /// Its encoding.
    pub encoding: String,
    /// The encoding's format version.
    pub encoding_version: u32,
    /// The serializer that wrote it.
    pub serializer: String,
    /// That serializer's version.
    pub serializer_version: String,
    /// Its `serializer_info`, sorted by key.
    pub serializer_info: Vec<(String, String)>,
    /// `(name, blob)`: the blob's name as the part's serializer wrote it,
    /// and the artifact blob that holds it.
    pub blobs: Vec<(String, String)>,
}

impl PartRecord {
    /// The JSON form (a `parts` element of a record).
    pub fn to_json(&self) -> Value {
        let mut written_by = Map::new();
        written_by.insert("serializer".into(), self.serializer.clone().into());
        written_by.insert("version".into(), self.serializer_version.clone().into());
        let info = self
            .serializer_info
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect::<Map<_, _>>();
        let blobs = self
            .blobs
            .iter()
            .map(|(name, blob)| {
                let mut b = Map::new();
                b.insert("name".into(), name.clone().into());
                b.insert("blob".into(), blob.clone().into());
                Value::Object(b)
            })
            .collect();
        let mut m = Map::new();
        m.insert("path".into(), self.path.clone().into());
        m.insert("kind".into(), self.kind.clone().into());
        m.insert("obj_type".into(), self.obj_type.clone().into());
        m.insert("encoding".into(), self.encoding.clone().into());
        m.insert("encoding_version".into(), self.encoding_version.into());
        m.insert("written_by".into(), Value::Object(written_by));
        m.insert("serializer_info".into(), Value::Object(info));
        m.insert("blobs".into(), Value::Array(blobs));
        Value::Object(m)
    }

    /// Parses the JSON form; the blob names follow the blob name rule.
    /// Which artifact blobs exist is checked by the caller.
    pub fn from_json(value: Value) -> Result<PartRecord, String> {
        let Value::Object(obj) = value else {
            return Err(bad("part is not an object"));
        };
        let mut part = PartRecord::default();
        let (mut path, mut kind, mut encoding, mut version) = (None, None, None, None);
        let (mut obj_type, mut written_by, mut blobs) = (None, None, None);
        for (key, v) in obj {
            match key.as_str() {
                "path" => path = Some(take_str(v, "part path")?),
                "kind" => kind = Some(take_str(v, "part kind")?),
                "obj_type" => obj_type = Some(take_str(v, "part obj_type")?),
                "encoding" => encoding = Some(take_str(v, "part encoding")?),
                "encoding_version" => version = Some(take_u32(&v, "part encoding_version")?),
                "written_by" => match v {
                    Value::Object(m) => written_by = Some(m),
                    _ => return Err(bad("part written_by is not an object")),
                },
                "serializer_info" => match v {
                    Value::Object(m) => {
                        for (k, v) in m {
                            let v = take_str(v, "part serializer_info value")?;
                            part.serializer_info.push((k, v));
                        }
                        part.serializer_info.sort();
                    }
                    _ => return Err(bad("part serializer_info is not an object")),
                },
                "blobs" => match v {
                    Value::Array(values) => blobs = Some(values),
                    _ => return Err(bad("part blobs is not an array")),
                },
                _ => {}
            }
        }
        part.path = path.ok_or_else(|| missing("part path"))?;
        part.kind = kind.ok_or_else(|| missing("part kind"))?;
        part.obj_type = obj_type.ok_or_else(|| missing("part obj_type"))?;
        part.encoding = encoding.ok_or_else(|| missing("part encoding"))?;
        part.encoding_version = version.ok_or_else(|| missing("part encoding_version"))?;
        for (key, v) in written_by.ok_or_else(|| missing("part written_by"))? {
            match key.as_str() {
                "serializer" => part.serializer = take_str(v, "part written_by.serializer")?,
                "version" => part.serializer_version = take_str(v, "part written_by.version")?,
                _ => {}
            }
        }
        if part.serializer.is_empty() {
            return Err(missing("part written_by.serializer"));
        }
        for value in blobs.ok_or_else(|| missing("part blobs"))? {
            let Value::Object(b) = value else {
                return Err(bad("part blob is not an object"));
            };
            let (mut name, mut blob) = (None, None);
            for (key, v) in b {
                match key.as_str() {
                    "name" => name = Some(take_str(v, "part blob name")?),
                    "blob" => blob = Some(take_str(v, "part blob")?),
                    _ => {}
                }
            }
            let name = name.ok_or_else(|| missing("part blob name"))?;
            validate_blob_name(&name)
                .map_err(|reason| bad(format!("part blob name {name:?} {reason}")))?;
            if part.blobs.iter().any(|(n, _)| *n == name) {
                return Err(bad(format!("part {} names blob {name} twice", part.path)));
            }
            part.blobs
                .push((name, blob.ok_or_else(|| missing("part blob"))?));
        }
        if part.blobs.is_empty() {
            return Err(bad(format!("part {} has no blobs", part.path)));
        }
        Ok(part)
    }
}

/// A record in the index log that this build cannot read (malformed, or of
/// a newer record format version). The index keeps it under its name so
/// `ls` lists it, `get` fails naming the reason and gc knows to stop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnreadableRecord {
    /// The record's name; for a record without a usable name, the
    /// placeholder `.record-at-OFFSET` (`.record-at-OFFSET-I` for the I-th
    /// record of a frame), which no valid artifact name can equal.
    pub name: String,
    /// Why it cannot be read, one line.
    pub reason: String,
    /// Byte offset in `index.log` of the frame holding it.
    pub offset: u64,
}

/// A pack range holding one blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PackLoc {
    /// The pack number (`packs/<number>.pack`, 8 digits).
    pub pack: u64,
    /// Byte offset of the blob's stored bytes in the pack.
    pub offset: u64,
    /// Length of the stored bytes (compressed length for zstd).
    pub len: u64,
    /// Whether the stored bytes are one zstd frame.
    pub zstd: bool,
}

/// Where a blob's bytes live inside the store directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BlobLocation {
    /// `blobs/<2 hex>/<digest>`, uncompressed ([`STORAGE_RAW`]).
    File,
    /// `blobs/<2 hex>/<digest>.zst`, one zstd frame ([`STORAGE_FILE_ZSTD`]).
    FileZstd,
    /// A pack range ([`STORAGE_PACKED`] or [`STORAGE_PACKED_ZSTD`]).
    Pack(PackLoc),
}

impl BlobLocation {
    /// The stable `storage` name of this location.
    pub fn storage_name(&self) -> &'static str {
        match self {
            BlobLocation::File => STORAGE_RAW,
            BlobLocation::FileZstd => STORAGE_FILE_ZSTD,
            BlobLocation::Pack(PackLoc { zstd: false, .. }) => STORAGE_PACKED,
            BlobLocation::Pack(PackLoc { zstd: true, .. }) => STORAGE_PACKED_ZSTD,
        }
    }
}

/// One named blob of an artifact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobRecord {
    /// The blob's name, unique within its artifact.
    pub name: String,
    /// Logical (uncompressed) size in bytes.
    pub size: u64,
    /// blake3 of the logical bytes, 64 lowercase hex digits.
    pub digest: String,
    /// Stable storage name: `raw`, `file+zstd`, `packed` or `packed+zstd`
    /// (mirrors [`BlobRecord::location`], which is what reads use).
    pub storage: String,
    /// Where the bytes live.
    pub location: BlobLocation,
}

/// The committed metadata of one artifact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The artifact's name.
    pub name: String,
    /// What the caller said about it.
    pub meta: RecordMeta,
    /// Its blobs, in the order they were written.
    pub blobs: Vec<BlobRecord>,
    /// Commit time, RFC 3339 UTC with seconds (`2026-11-23T09:15:02Z`).
    pub created: String,
    /// The record format version it was written with.
    pub format_version: u32,
}

impl Record {
    /// The public JSON form (stable keys; see the module docs).
    pub fn to_json(&self) -> Value {
        self.json(false)
    }

    /// The log form as a `Value` (tests compare it with the streamed form).
    #[cfg(test)]
    pub(crate) fn to_log_json(&self) -> Value {
        self.json(true)
    }

    /// Appends the log form as JSON text to `out`, without building a
    /// `Value` tree (a 10,000-record batch would spend most of its commit
    /// time allocating one). Same keys and values as `json(true)`.
    pub(crate) fn write_log_json(&self, out: &mut Vec<u8>) {
        let m = &self.meta;
        out.extend_from_slice(b"{\"name\":");
        write_json_str(out, &self.name);
        out.extend_from_slice(b",\"obj_type\":");
        write_json_str(out, &m.obj_type);
        if let Some(caller_type) = &m.caller_type {
            out.extend_from_slice(b",\"caller_type\":");
            write_json_str(out, caller_type);
        }
        out.extend_from_slice(b",\"encoding\":");
        write_json_str(out, &m.encoding);
        write_json_uint(
            out,
            b",\"encoding_version\":",
            u64::from(m.encoding_version),
        );
        out.extend_from_slice(b",\"blobs\":[");
        for (i, blob) in self.blobs.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(b"{\"name\":");
            write_json_str(out, &blob.name);
            write_json_uint(out, b",\"size\":", blob.size);
            out.extend_from_slice(b",\"digest\":");
            write_json_str(out, &blob.digest);
            out.extend_from_slice(b",\"storage\":");
            write_json_str(out, blob.location.storage_name());
            if let BlobLocation::Pack(loc) = &blob.location {
                write_json_uint(out, b",\"pack\":", loc.pack);
                write_json_uint(out, b",\"offset\":", loc.offset);
                write_json_uint(out, b",\"stored_size\":", loc.len);
            }
            out.push(b'}');
        }
        out.extend_from_slice(b"],\"written_by\":{\"serializer\":");
        write_json_str(out, &m.serializer);
        out.extend_from_slice(b",\"version\":");
        write_json_str(out, &m.serializer_version);
        out.extend_from_slice(b"},\"serializer_info\":{");
        for (i, (k, v)) in m.serializer_info.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            write_json_str(out, k);
            out.push(b':');
            write_json_str(out, v);
        }
        out.push(b'}');
        if !m.parts.is_empty() {
            out.extend_from_slice(b",\"parts\":");
            let parts = Value::Array(m.parts.iter().map(PartRecord::to_json).collect());
            out.extend_from_slice(parts.to_string().as_bytes());
        }
        out.extend_from_slice(b",\"created\":");
        write_json_str(out, &self.created);
        write_json_uint(out, b",\"format_version\":", u64::from(self.format_version));
        out.push(b'}');
    }

    fn json(&self, with_location: bool) -> Value {
        let blobs = self
            .blobs
            .iter()
            .map(|blob| {
                let mut b = Map::new();
                b.insert("name".into(), blob.name.clone().into());
                b.insert("size".into(), blob.size.into());
                b.insert("digest".into(), blob.digest.clone().into());
                b.insert("storage".into(), blob.location.storage_name().into());
                if let (true, BlobLocation::Pack(loc)) = (with_location, &blob.location) {
                    b.insert("pack".into(), loc.pack.into());
                    b.insert("offset".into(), loc.offset.into());
                    b.insert("stored_size".into(), loc.len.into());
                }
                Value::Object(b)
            })
            .collect::<Vec<_>>();
        let mut written_by = Map::new();
        written_by.insert("serializer".into(), self.meta.serializer.clone().into());
        written_by.insert(
            "version".into(),
            self.meta.serializer_version.clone().into(),
        );
        let info = self
            .meta
            .serializer_info
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect::<Map<_, _>>();
        let mut m = Map::new();
        m.insert("name".into(), self.name.clone().into());
        m.insert("obj_type".into(), self.meta.obj_type.clone().into());
        if let Some(caller_type) = &self.meta.caller_type {
            m.insert("caller_type".into(), caller_type.clone().into());
        }
        m.insert("encoding".into(), self.meta.encoding.clone().into());
        m.insert("encoding_version".into(), self.meta.encoding_version.into());
        m.insert("blobs".into(), Value::Array(blobs));
        m.insert("written_by".into(), Value::Object(written_by));
        m.insert("serializer_info".into(), Value::Object(info));
        if !self.meta.parts.is_empty() {
            let parts = self.meta.parts.iter().map(PartRecord::to_json).collect();
            m.insert("parts".into(), Value::Array(parts));
        }
        m.insert("created".into(), self.created.clone().into());
        m.insert("format_version".into(), self.format_version.into());
        Value::Object(m)
    }

    /// Parses the log form, consuming `value` so strings move instead of
    /// being copied. Unknown keys are ignored. On failure the error carries
    /// the record's name when it has one (a non-empty string), so the index
    /// can list the record as unreadable under it.
    pub(crate) fn from_log_json(value: Value) -> Result<Record, Unparsed> {
        let name = match &value {
            Value::Object(obj) => obj
                .get("name")
                .and_then(Value::as_str)
                .filter(|n| !n.is_empty())
                .map(str::to_owned),
            _ => None,
        };
        Record::parse_log(value).map_err(|reason| Unparsed { name, reason })
    }

    fn parse_log(value: Value) -> Result<Record, String> {
        let Value::Object(obj) = value else {
            return Err(bad("record is not an object"));
        };
        // The version decides how everything else is read: check it first.
        let found = obj
            .get("format_version")
            .and_then(Value::as_u64)
            .ok_or_else(|| bad("missing unsigned integer format_version"))?;
        if found > u64::from(RECORD_FORMAT_VERSION) {
            return Err(format!(
                "record format version {found} is newer than this build reads ({RECORD_FORMAT_VERSION}); upgrade stowage"
            ));
        }
        let format_version = u32::try_from(found).map_err(|_| bad("format_version overflows"))?;
        if format_version == 0 {
            return Err(bad("format_version 0 does not exist"));
        }
        let mut name = None;
        let mut obj_type = None;
        let mut caller_type = None;
        let mut encoding = None;
        let mut encoding_version = None;
        let mut blob_values = None;
        let mut written_by = None;
        let mut info = None;
        let mut created = None;
        let mut part_values = None;
        for (key, v) in obj {
            match key.as_str() {
                "name" => name = Some(take_str(v, "name")?),
                "obj_type" => obj_type = Some(take_str(v, "obj_type")?),
                "caller_type" => caller_type = Some(take_str(v, "caller_type")?),
                "encoding" => encoding = Some(take_str(v, "encoding")?),
                "encoding_version" => encoding_version = Some(take_u32(&v, "encoding_version")?),
                "blobs" => match v {
                    Value::Array(values) => blob_values = Some(values),
                    _ => return Err(bad("blobs is not an array")),
                },
                "written_by" => match v {
                    Value::Object(m) => written_by = Some(m),
                    _ => return Err(bad("written_by is not an object")),
                },
                "serializer_info" => match v {
                    Value::Object(m) => info = Some(m),
                    _ => return Err(bad("serializer_info is not an object")),
                },
                "created" => created = Some(take_str(v, "created")?),
                // Version 1 had no parts: the key is ignored there.
                "parts" if format_version >= 2 => match v {
                    Value::Array(values) => part_values = Some(values),
                    _ => return Err(bad("parts is not an array")),
                },
                _ => {}
            }
        }
        let name = name.ok_or_else(|| missing("name"))?;
        validate_stored_name(&name).map_err(|reason| bad(format!("name {name:?} {reason}")))?;
        let mut serializer = None;
        let mut serializer_version = None;
        for (key, v) in written_by.ok_or_else(|| missing("written_by"))? {
            match key.as_str() {
                "serializer" => serializer = Some(take_str(v, "written_by.serializer")?),
                "version" => serializer_version = Some(take_str(v, "written_by.version")?),
                _ => {}
            }
        }
        let info = info.ok_or_else(|| missing("serializer_info"))?;
        let mut serializer_info = Vec::with_capacity(info.len());
        for (k, v) in info {
            let v = take_str(v, "serializer_info value")?;
            serializer_info.push((k, v));
        }
        serializer_info.sort();
        let meta = RecordMeta {
            obj_type: obj_type.ok_or_else(|| missing("obj_type"))?,
            encoding: encoding.ok_or_else(|| missing("encoding"))?,
            encoding_version: encoding_version.ok_or_else(|| missing("encoding_version"))?,
            serializer: serializer.ok_or_else(|| missing("written_by.serializer"))?,
            serializer_version: serializer_version.ok_or_else(|| missing("written_by.version"))?,
            serializer_info,
            caller_type,
            parts: Vec::new(),
        };
        let mut meta = meta;
        let blob_values = blob_values.ok_or_else(|| missing("blobs"))?;
        if blob_values.is_empty() {
            return Err(bad("record has no blobs"));
        }
        let mut blobs: Vec<BlobRecord> = Vec::with_capacity(blob_values.len());
        for value in blob_values {
            let blob = parse_blob(value)?;
            if blobs.iter().any(|b| b.name == blob.name) {
                return Err(bad(format!("duplicate blob {}", blob.name)));
            }
            blobs.push(blob);
        }
        let mut claimed: std::collections::HashSet<String> = Default::default();
        for value in part_values.unwrap_or_default() {
            let part = PartRecord::from_json(value)?;
            for (_, blob) in &part.blobs {
                if !blobs.iter().any(|b| b.name == *blob) {
                    return Err(bad(format!(
                        "part {} names a missing blob {blob:?}",
                        part.path
                    )));
                }
                if !claimed.insert(blob.clone()) {
                    return Err(bad(format!("blob {blob} belongs to two parts")));
                }
            }
            meta.parts.push(part);
        }
        Ok(Record {
            name,
            meta,
            blobs,
            created: created.ok_or_else(|| missing("created"))?,
            format_version,
        })
    }
}

fn parse_blob(value: Value) -> Result<BlobRecord, String> {
    let Value::Object(b) = value else {
        return Err(bad("blob is not an object"));
    };
    let mut name = None;
    let mut size = None;
    let mut digest = None;
    let mut storage = None;
    let (mut pack, mut offset, mut stored_size) = (None, None, None);
    for (key, v) in b {
        match key.as_str() {
            "name" => name = Some(take_str(v, "blob name")?),
            "size" => size = Some(take_u64(&v, "size")?),
            "digest" => digest = Some(take_str(v, "digest")?),
            "storage" => storage = Some(take_str(v, "storage")?),
            "pack" => pack = Some(take_u64(&v, "pack")?),
            "offset" => offset = Some(take_u64(&v, "offset")?),
            "stored_size" => stored_size = Some(take_u64(&v, "stored_size")?),
            _ => {}
        }
    }
    let name = name.ok_or_else(|| missing("blob name"))?;
    validate_blob_name(&name).map_err(|reason| bad(format!("blob name {name:?} {reason}")))?;
    let size = size.ok_or_else(|| missing("size"))?;
    let digest = digest.ok_or_else(|| missing("digest"))?;
    if !is_digest(&digest) {
        return Err(bad(format!(
            "blob {name} digest is not 64 lowercase hex digits"
        )));
    }
    let storage = storage.ok_or_else(|| missing("storage"))?;
    let location = match storage.as_str() {
        STORAGE_RAW => BlobLocation::File,
        STORAGE_FILE_ZSTD => BlobLocation::FileZstd,
        STORAGE_PACKED | STORAGE_PACKED_ZSTD => {
            let loc = PackLoc {
                pack: pack.ok_or_else(|| missing("pack"))?,
                offset: offset.ok_or_else(|| missing("offset"))?,
                len: stored_size.ok_or_else(|| missing("stored_size"))?,
                zstd: storage == STORAGE_PACKED_ZSTD,
            };
            if !loc.zstd && loc.len != size {
                return Err(bad(format!(
                    "blob {name} is packed uncompressed but stored_size differs from size"
                )));
            }
            if loc.offset.checked_add(loc.len).is_none() {
                return Err(bad(format!("blob {name} pack range overflows")));
            }
            BlobLocation::Pack(loc)
        }
        other => return Err(bad(format!("blob {name} has unknown storage {other:?}"))),
    };
    Ok(BlobRecord {
        name,
        size,
        digest,
        storage,
        location,
    })
}

fn take_str(v: Value, what: &str) -> Result<String, String> {
    match v {
        Value::String(s) => Ok(s),
        _ => Err(bad(format!("{what} is not a string"))),
    }
}

fn take_u64(v: &Value, what: &str) -> Result<u64, String> {
    v.as_u64()
        .ok_or_else(|| bad(format!("{what} is not an unsigned integer")))
}

fn take_u32(v: &Value, what: &str) -> Result<u32, String> {
    u32::try_from(take_u64(v, what)?).map_err(|_| bad(format!("{what} overflows")))
}

fn missing(what: &str) -> String {
    bad(format!("missing {what}"))
}

/// A log record that could not be parsed: its name, if it has one, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Unparsed {
    /// The record's `name`, when it is a non-empty string (valid or not).
    pub name: Option<String>,
    /// What is wrong, one line.
    pub reason: String,
}

fn bad(reason: impl Into<String>) -> String {
    reason.into()
}

/// Appends `s` as a JSON string literal.
pub(crate) fn write_json_str(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0..=0x1f => &[],
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        if escape.is_empty() {
            out.extend_from_slice(b"\\u00");
            out.push(HEX[usize::from(b >> 4)]);
            out.push(HEX[usize::from(b & 0xf)]);
        } else {
            out.extend_from_slice(escape);
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// Appends `prefix` and then `n` in decimal.
fn write_json_uint(out: &mut Vec<u8>, prefix: &[u8], n: u64) {
    out.extend_from_slice(prefix);
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    let mut n = n;
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// Whether `s` is a blake3 hex digest as the store writes them.
pub(crate) fn is_digest(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'))
}

/// Checks an artifact name (SPEC §7); `Err` says which rule it breaks.
pub(crate) fn validate_name(name: &str) -> Result<(), &'static str> {
    validate_stored_name(name)?;
    if name.chars().any(char::is_control) {
        Err("contains a control character")
    } else if name.starts_with(char::is_whitespace) || name.ends_with(char::is_whitespace) {
        Err("starts or ends with whitespace")
    } else {
        Ok(())
    }
}

/// Checks the name of a record read from the log: the rules every stowage
/// build has enforced on write (1–255 bytes, no `/`, no NUL, no leading
/// `.`). See the module docs for why this is looser than [`validate_name`].
pub(crate) fn validate_stored_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        Err("is empty")
    } else if name.len() > MAX_NAME_LEN {
        Err("is longer than 255 bytes")
    } else if name.contains('/') {
        Err("contains '/'")
    } else if name.contains('\0') {
        Err("contains a NUL byte")
    } else if name.starts_with('.') {
        Err("starts with '.'")
    } else {
        Ok(())
    }
}

/// Checks a blob name: one relative path component, so that `get --raw -o
/// DIR` can use it as a file name inside DIR; `Err` says which rule it
/// breaks.
pub(crate) fn validate_blob_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        Err("is empty")
    } else if name.len() > MAX_NAME_LEN {
        Err("is longer than 255 bytes")
    } else if name.contains('\0') {
        Err("contains a NUL byte")
    } else if name.chars().any(char::is_control) {
        Err("contains a control character")
    } else if name.starts_with('/') {
        Err("is an absolute path")
    } else if name.contains('/') || name.contains('\\') {
        Err("contains a path separator")
    } else if name == "." || name == ".." {
        Err("is '.' or '..'")
    } else {
        Ok(())
    }
}

/// Sorts `serializer_info` by key, keeping the last value of a repeated key.
pub(crate) fn normalize_info(info: Vec<(String, String)>) -> Vec<(String, String)> {
    info.into_iter()
        .collect::<BTreeMap<String, String>>()
        .into_iter()
        .collect()
}

/// Formats `t` as RFC 3339 UTC with whole seconds; times before 1970 clamp
/// to the epoch.
pub(crate) fn rfc3339_utc(t: SystemTime) -> String {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian
/// (Howard Hinnant's `civil_from_days`, for non-negative day counts).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[track_caller]
    fn check_time(secs: u64, expected: &str) {
        let t = UNIX_EPOCH + Duration::from_secs(secs);
        assert_eq!(rfc3339_utc(t), expected);
    }

    #[test]
    fn timestamps_are_rfc3339_utc() {
        check_time(0, "1970-01-01T00:00:00Z");
        check_time(951_868_799, "2000-02-29T23:59:59Z");
        check_time(1_795_425_302, "2026-11-23T09:15:02Z");
        check_time(4_107_542_400, "2100-03-01T00:00:00Z");
    }

    #[track_caller]
    fn check_name(name: &str, ok: bool) {
        assert_eq!(validate_name(name).is_ok(), ok, "{name:?}");
    }

    #[test]
    fn artifact_names_follow_the_rules() {
        check_name("model", true);
        check_name("a b-c_d.e", true);
        check_name(&"x".repeat(255), true);
        check_name("", false);
        check_name(&"x".repeat(256), false);
        check_name("a/b", false);
        check_name("a\0b", false);
        check_name(".hidden", false);
        check_name("a\nb", false);
        check_name("tab\there", false);
        check_name("esc\u{1b}", false);
        check_name("del\u{7f}", false);
        check_name(" ", false);
        check_name(" lead", false);
        check_name("trail ", false);
        check_name("trail\u{a0}", false);
        check_name("inner space", true);
        check_name("é✓", true);
    }

    #[test]
    fn stored_names_keep_the_rules_of_earlier_writers() {
        for ok in ["tab\there", " lead", "trail ", "a\nb", "model"] {
            assert_eq!(validate_stored_name(ok), Ok(()), "{ok:?}");
        }
        for (bad, reason) in [
            ("", "is empty"),
            ("a/b", "contains '/'"),
            ("nul\0", "contains a NUL byte"),
            (".hidden", "starts with '.'"),
        ] {
            assert_eq!(validate_stored_name(bad), Err(reason), "{bad:?}");
        }
    }

    #[track_caller]
    fn check_blob(name: &str, expected: Result<(), &str>) {
        assert_eq!(validate_blob_name(name), expected, "{name:?}");
    }

    #[test]
    fn blob_names_are_single_path_components() {
        check_blob("data", Ok(()));
        check_blob(".meta", Ok(()));
        check_blob("a b..c", Ok(()));
        check_blob(&"x".repeat(255), Ok(()));
        check_blob("", Err("is empty"));
        check_blob(&"x".repeat(256), Err("is longer than 255 bytes"));
        check_blob("nul\0", Err("contains a NUL byte"));
        check_blob("new\nline", Err("contains a control character"));
        check_blob("/etc/passwd", Err("is an absolute path"));
        check_blob("../ESCAPED", Err("contains a path separator"));
        check_blob("a/b", Err("contains a path separator"));
        check_blob("..\\x", Err("contains a path separator"));
        check_blob(".", Err("is '.' or '..'"));
        check_blob("..", Err("is '.' or '..'"));
    }

    #[test]
    fn unparsable_records_keep_their_name_and_reason() {
        let parse = |v: Value| Record::from_log_json(v).expect_err("invalid");
        let newer = parse(serde_json::json!({"name": "future", "format_version": 3}));
        assert_eq!(
            newer,
            Unparsed {
                name: Some("future".into()),
                reason:
                    "record format version 3 is newer than this build reads (2); upgrade stowage"
                        .into(),
            }
        );
        let missing = parse(serde_json::json!({"name": "x", "format_version": 1}));
        assert_eq!(missing.reason, "missing written_by");
        let nameless = parse(serde_json::json!({"name": "", "format_version": 1}));
        assert_eq!(nameless.name, None);
        assert_eq!(parse(Value::Null).reason, "record is not an object");
    }

    #[test]
    fn serializer_info_is_sorted_with_last_value_winning() {
        let info = vec![
            ("b".to_owned(), "1".to_owned()),
            ("a".to_owned(), "2".to_owned()),
            ("b".to_owned(), "3".to_owned()),
        ];
        assert_eq!(
            normalize_info(info),
            vec![
                ("a".to_owned(), "2".to_owned()),
                ("b".to_owned(), "3".to_owned())
            ]
        );
    }

    #[test]
    fn streamed_log_json_matches_the_value_form() {
        let record = Record {
            name: "we\"ird\\name \u{e9}\u{2028}x".into(),
            meta: RecordMeta {
                obj_type: "t\n\r\t".into(),
                encoding: "msgpack".into(),
                encoding_version: u32::MAX,
                serializer: "s".into(),
                serializer_version: "1.0.0".into(),
                serializer_info: vec![
                    ("a\u{1f}".into(), "\u{7f}".into()),
                    ("b".into(), String::new()),
                ],
                caller_type: Some("m.G[\"x\"]\n".into()),
                parts: Vec::new(),
            },
            blobs: vec![
                BlobRecord {
                    name: "raw".into(),
                    size: u64::MAX,
                    digest: "ab".repeat(32),
                    storage: STORAGE_RAW.into(),
                    location: BlobLocation::File,
                },
                BlobRecord {
                    name: "p".into(),
                    size: 0,
                    digest: "cd".repeat(32),
                    storage: STORAGE_PACKED_ZSTD.into(),
                    location: BlobLocation::Pack(PackLoc {
                        pack: 7,
                        offset: 1234,
                        len: 99,
                        zstd: true,
                    }),
                },
            ],
            created: "2026-11-23T09:15:02Z".into(),
            format_version: 1,
        };
        let mut out = Vec::new();
        record.write_log_json(&mut out);
        let parsed: Value = serde_json::from_slice(&out).expect("valid JSON");
        assert_eq!(parsed, record.to_log_json());
        let back = Record::from_log_json(parsed).expect("parses back");
        assert_eq!(back, record);
    }

    fn composite_log_json(parts: Value) -> Value {
        serde_json::json!({
            "name": "ckpt", "obj_type": "map", "encoding": "stowage-composite",
            "encoding_version": 1,
            "blobs": [
                {"name": "p0.data", "size": 1, "digest": "ab".repeat(32), "storage": "raw"},
                {"name": "skeleton", "size": 1, "digest": "cd".repeat(32), "storage": "raw"}
            ],
            "written_by": {"serializer": "composite", "version": "0.1.0"},
            "serializer_info": {}, "created": "2026-11-23T09:15:02Z",
            "format_version": 2, "parts": parts
        })
    }

    fn part(blob: &str) -> Value {
        serde_json::json!({
            "path": "weights", "kind": "tensor_map", "obj_type": "tensor_map",
            "encoding": "safetensors", "encoding_version": 1,
            "written_by": {"serializer": "tensor", "version": "0.1.0"},
            "serializer_info": {"b": "2", "a": "1"},
            "blobs": [{"name": "data", "blob": blob}]
        })
    }

    #[test]
    fn version_2_records_carry_parts_and_round_trip() {
        let record =
            Record::from_log_json(composite_log_json(serde_json::json!([part("p0.data")])))
                .expect("parses");
        assert_eq!(record.format_version, 2);
        assert_eq!(format_version_for(&record.meta), 2);
        let parsed = &record.meta.parts[0];
        assert_eq!(
            (parsed.path.as_str(), parsed.serializer.as_str()),
            ("weights", "tensor")
        );
        assert_eq!(parsed.serializer_info[0], ("a".into(), "1".into()));
        assert_eq!(parsed.blobs, [("data".into(), "p0.data".into())]);
        let mut out = Vec::new();
        record.write_log_json(&mut out);
        let streamed: Value = serde_json::from_slice(&out).expect("valid JSON");
        assert_eq!(streamed, record.to_log_json());
        assert_eq!(Record::from_log_json(streamed).expect("again"), record);
    }

    #[test]
    fn a_version_1_record_ignores_a_parts_key() {
        let mut json = composite_log_json(serde_json::json!("not even an array"));
        json["format_version"] = 1.into();
        let record = Record::from_log_json(json).expect("v1 ignores parts");
        assert!(record.meta.parts.is_empty());
        assert_eq!(format_version_for(&record.meta), 1);
    }

    #[test]
    fn parts_must_name_blobs_of_the_record_once() {
        let reason = |parts: Value| {
            Record::from_log_json(composite_log_json(parts))
                .expect_err("invalid")
                .reason
        };
        assert_eq!(
            reason(serde_json::json!([part("../etc")])),
            "part weights names a missing blob \"../etc\""
        );
        assert_eq!(
            reason(serde_json::json!([part("p0.data"), part("p0.data")])),
            "blob p0.data belongs to two parts"
        );
        let mut bad_name = part("p0.data");
        bad_name["blobs"][0]["name"] = "a/b".into();
        assert_eq!(
            reason(serde_json::json!([bad_name])),
            "part blob name \"a/b\" contains a path separator"
        );
        assert_eq!(reason(serde_json::json!({})), "parts is not an array");
    }

    #[test]
    fn digests_must_be_lowercase_hex() {
        assert!(is_digest(&"ab".repeat(32)));
        assert!(!is_digest(&"AB".repeat(32)));
        assert!(!is_digest("../../etc/passwd"));
        assert!(!is_digest(&"a".repeat(63)));
    }
}
