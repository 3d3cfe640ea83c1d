//! The built-in `composite` serializer (SPEC §15): a list or map whose
//! leaves include non-plain values (tensors, tables, classes, …) is stored
//! as a skeleton plus one part per such leaf, each part written by the
//! serializer that dispatch picks for that leaf alone.
//!
//! This module owns the format; the dispatch of the leaves is the
//! registry's ([`crate::registry::DispatchTable`] recurses through its one
//! dispatch loop for each leaf and calls [`split`], [`encode_skeleton`],
//! [`Skeleton::decode`] and [`Skeleton::rebuild`]). `Composite` is the
//! serializer the registry lists, orders (priority [`COMPOSITE_PRIORITY`],
//! after every plugin, before the msgpack fallback) and toggles like any
//! other; its entry points are never called for real work, because the
//! registry recognises the route by its reserved name.
//!
//! The skeleton is one MessagePack blob, [`SKELETON_BLOB`]: a map
//! `{"format": 1, "root": TREE, "parts": [PART…]}`. TREE is the value with
//! plain data inline and each part replaced by a typed reference, a
//! MessagePack extension: type [`PART_REF`] (payload: the part's index, u32
//! big-endian) stands for the part's whole value; type [`TENSOR_REF`] (same
//! payload) stands for the tensor named by its map key inside a
//! `tensor_map` part. PART is the part's record form
//! ([`PartRecord::to_json`], carried as MessagePack), so a composite's blobs
//! alone rebuild it (`Host::deserialize`, no store), and the record's
//! `parts` field repeats it for `inspect`.
//!
//! Invariants: a part is never a list or a map, so a composite never holds
//! a composite. Every reference names an existing part, and every part is
//! referenced (checked on read, like everything else in the blob).
//!
//! Decision (grouping rule, the same in every API): a non-empty map whose
//! values are all tensors is one `tensor_map` part (its keys become the
//! tensor names), so a Rust map of tensors and a Python `dict[str,
//! ndarray]` are stored alike; it is rebuilt as a map of tensors in its
//! original key order. At the top level such a map is dispatched as a
//! `tensor_map` value (see [`group_top`]), and loads back as one.
//! Decision: a part's path is its map keys and list indices joined by `/`
//! (`optimizer/state/3`); it is display text, never a file path (a key may
//! itself contain `/`; the skeleton, not the path, says where a part goes).
//! Decision: part `i`'s blobs are stored as `p<i>.<name>` in the artifact,
//! and the skeleton blob is written last.
//! Decision: nesting is limited as the fallback's: a composite takes
//! [`MAX_NESTING`] = the fallback's [`MAX_DEPTH`] levels and refuses a
//! deeper value on save ([`SplitError::TooDeep`]), never on load.
//! Decision: a part recorded as a `tensor` whose reader returns a
//! one-tensor `tensor_map` (a `.safetensors` file stored by `put DIR`) is
//! rebuilt as that tensor.
//! Decision: the call's options (`--opt`) are not passed to the leaves; the
//! configured options of each leaf's serializer apply.

use std::borrow::Cow;
use std::collections::HashMap;
use std::io::Write;

use semver::Version;

use crate::fallback::MAX_DEPTH;
use crate::serializer::{
    host_interface, ArtifactMeta, BlobSink, CallError, CallValue, ErrorKind, PluginInfo,
    Serializer, Written, MAX_PLUGIN_PRIORITY,
};
use crate::store::PartRecord;
use crate::value::{Buffer, Kind, Tensor, TensorMap, Value};

/// The composite serializer's name (reserved: no plugin may take it).
pub const COMPOSITE_NAME: &str = "composite";
/// Its priority: after every plugin, before the fallback.
pub const COMPOSITE_PRIORITY: u32 = MAX_PLUGIN_PRIORITY;
/// The encoding of a composite artifact.
pub const COMPOSITE_ENCODING: &str = "stowage-composite";
/// Format version of the composite encoding.
pub const COMPOSITE_FORMAT_VERSION: u32 = 1;
/// The blob holding the skeleton.
pub const SKELETON_BLOB: &str = "skeleton";
/// Deepest nesting of a composite (see the module docs).
pub const MAX_NESTING: usize = MAX_DEPTH;
/// Extension type of a reference to a whole part.
pub const PART_REF: i8 = 1;
/// Extension type of a reference to one tensor of a `tensor_map` part.
pub const TENSOR_REF: i8 = 2;

/// The built-in composite serializer (see the module docs).
pub(crate) struct Composite {
    info: PluginInfo,
}

impl Default for Composite {
    fn default() -> Self {
        Composite {
            info: PluginInfo {
                name: COMPOSITE_NAME.to_owned(),
                version: Version::parse(env!("CARGO_PKG_VERSION")).unwrap_or(Version::new(0, 0, 0)),
                interface_version: host_interface(),
                default_priority: COMPOSITE_PRIORITY,
                kinds: vec![Kind::List, Kind::Map],
                reads: vec![COMPOSITE_ENCODING.to_owned()],
                writes: vec![COMPOSITE_ENCODING.to_owned()],
                requires: Vec::new(),
                option_keys: Vec::new(),
                has_describe: true,
            },
        }
    }
}

fn invalid(message: impl Into<String>) -> CallError {
    CallError::new(ErrorKind::InvalidInput, message)
}

fn by_dispatch() -> CallError {
    CallError::new(
        ErrorKind::Internal,
        "composite artifacts are read and written by the host's dispatch",
    )
}

impl Serializer for Composite {
    fn info(&self) -> &PluginInfo {
        &self.info
    }
    fn can_serialize(&self, value: &CallValue<'_>) -> Result<bool, CallError> {
        Ok(is_composite(value.value()))
    }
    fn serialize(
        &self,
        _: &CallValue<'_>,
        _: &[(String, String)],
        _: &mut dyn BlobSink,
    ) -> Result<Written, CallError> {
        Err(by_dispatch())
    }
    fn can_deserialize(&self, meta: &ArtifactMeta) -> Result<bool, CallError> {
        Ok(
            meta.encoding == COMPOSITE_ENCODING
                && meta.encoding_version <= COMPOSITE_FORMAT_VERSION,
        )
    }
    fn deserialize(&self, _: &ArtifactMeta, _: &[(String, Buffer)]) -> Result<Value, CallError> {
        Err(by_dispatch())
    }
    fn sniff(&self, _: &[u8]) -> Result<bool, CallError> {
        Ok(false)
    }
    fn ingest(
        &self,
        _: &[u8],
        _: &[(String, String)],
        _: &mut dyn BlobSink,
    ) -> Result<Written, CallError> {
        Err(CallError::new(
            ErrorKind::Unsupported,
            "a composite is read from a directory (stowage put NAME DIR)",
        ))
    }
    fn export(
        &self,
        _: &ArtifactMeta,
        _: &[(String, Buffer)],
        _: &mut dyn Write,
    ) -> Result<(), CallError> {
        Err(CallError::new(
            ErrorKind::Unsupported,
            "a composite exports to a directory: use -o DIR",
        ))
    }
    fn describe(
        &self,
        _: &ArtifactMeta,
        _: &[(String, Buffer)],
    ) -> Result<Option<String>, CallError> {
        Err(by_dispatch())
    }
}

/// Whether a value is plain data (what the skeleton holds inline).
fn is_plain_leaf(value: &Value) -> bool {
    matches!(
        value,
        Value::Null
            | Value::Bool(_)
            | Value::Int(_)
            | Value::Float(_)
            | Value::String(_)
            | Value::Bytes(_)
    )
}

/// Whether `value` is a list or map with at least one non-plain leaf, at
/// any depth (walked without recursion; [`split`] then enforces the depth
/// limit with its own error): what the composite takes.
pub fn is_composite(value: &Value) -> bool {
    if !matches!(value, Value::List(_) | Value::Map(_)) {
        return false;
    }
    let mut todo = vec![value];
    while let Some(value) = todo.pop() {
        match value {
            Value::List(items) => todo.extend(items),
            Value::Map(entries) => todo.extend(entries.iter().map(|(_, v)| v)),
            other if !is_plain_leaf(other) => return true,
            _ => {}
        }
    }
    false
}

/// A non-empty map whose values are all tensors (the grouping rule).
fn all_tensors(entries: &[(String, Value)]) -> bool {
    !entries.is_empty() && entries.iter().all(|(_, v)| matches!(v, Value::Tensor(_)))
}

/// The tensors of an all-tensor map as one `tensor_map` (buffers shared).
fn group(entries: &[(String, Value)]) -> TensorMap {
    TensorMap {
        tensors: entries
            .iter()
            .filter_map(|(k, v)| match v {
                Value::Tensor(t) => Some((k.clone(), t.clone())),
                _ => None,
            })
            .collect(),
        metadata: Vec::new(),
    }
}

/// The value dispatch sees at the top level: a map of tensors as one
/// `tensor_map` (the grouping rule), anything else as it is.
pub fn group_top(value: &Value) -> Cow<'_, Value> {
    match value {
        Value::Map(entries) if all_tensors(entries) => Cow::Owned(Value::TensorMap(group(entries))),
        other => Cow::Borrowed(other),
    }
}

/// One part of a split value: where it sits and what it is.
pub struct Leaf<'v> {
    /// Map keys and list indices joined by `/`.
    pub path: String,
    /// The part's value (a grouped map is built here, anything else
    /// borrowed).
    pub value: Cow<'v, Value>,
}

/// A value split into its skeleton tree and its parts.
pub struct Split<'v> {
    /// The tree, parts replaced by references.
    pub tree: rmpv::Value,
    /// The parts, in reference order.
    pub leaves: Vec<Leaf<'v>>,
}

/// Why a value cannot be split.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SplitError {
    /// Nesting deeper than the fallback allows.
    #[error("the value nests deeper than {limit} levels")]
    TooDeep {
        /// The limit.
        limit: usize,
    },
}

/// Splits a list or map into skeleton and parts (see the module docs).
pub fn split(value: &Value) -> Result<Split<'_>, SplitError> {
    let mut leaves = Vec::new();
    let mut path = Vec::new();
    let tree = split_at(value, 0, &mut path, &mut leaves)?;
    Ok(Split { tree, leaves })
}

fn reference(ext: i8, index: usize) -> rmpv::Value {
    let index = u32::try_from(index).unwrap_or(u32::MAX);
    rmpv::Value::Ext(ext, index.to_be_bytes().to_vec())
}

fn split_at<'v>(
    value: &'v Value,
    depth: usize,
    path: &mut Vec<String>,
    leaves: &mut Vec<Leaf<'v>>,
) -> Result<rmpv::Value, SplitError> {
    if depth > MAX_NESTING {
        return Err(SplitError::TooDeep { limit: MAX_NESTING });
    }
    Ok(match value {
        Value::Null => rmpv::Value::Nil,
        Value::Bool(b) => rmpv::Value::Boolean(*b),
        Value::Int(i) => rmpv::Value::from(*i),
        Value::Float(f) => rmpv::Value::F64(*f),
        Value::String(s) => rmpv::Value::from(s.as_str()),
        Value::Bytes(b) => rmpv::Value::Binary(b.to_vec()),
        Value::List(items) => {
            let mut out = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                path.push(i.to_string());
                out.push(split_at(item, depth + 1, path, leaves)?);
                path.pop();
            }
            rmpv::Value::Array(out)
        }
        Value::Map(entries) if depth > 0 && all_tensors(entries) => {
            let index = leaves.len();
            leaves.push(Leaf {
                path: path.join("/"),
                value: Cow::Owned(Value::TensorMap(group(entries))),
            });
            rmpv::Value::Map(
                entries
                    .iter()
                    .map(|(k, _)| (rmpv::Value::from(k.as_str()), reference(TENSOR_REF, index)))
                    .collect(),
            )
        }
        Value::Map(entries) => {
            let mut out = Vec::with_capacity(entries.len());
            for (key, item) in entries {
                path.push(key.clone());
                out.push((
                    rmpv::Value::from(key.as_str()),
                    split_at(item, depth + 1, path, leaves)?,
                ));
                path.pop();
            }
            rmpv::Value::Map(out)
        }
        other => {
            let index = leaves.len();
            leaves.push(Leaf {
                path: path.join("/"),
                value: Cow::Borrowed(other),
            });
            reference(PART_REF, index)
        }
    })
}

/// The skeleton blob's bytes for `tree` and its `parts`.
pub fn encode_skeleton(tree: &rmpv::Value, parts: &[PartRecord]) -> Vec<u8> {
    let parts = parts
        .iter()
        .map(|p| json_to_msgpack(&p.to_json()))
        .collect();
    let doc = rmpv::Value::Map(vec![
        (
            rmpv::Value::from("format"),
            rmpv::Value::from(COMPOSITE_FORMAT_VERSION),
        ),
        (rmpv::Value::from("root"), tree.clone()),
        (rmpv::Value::from("parts"), rmpv::Value::Array(parts)),
    ]);
    let mut bytes = Vec::new();
    // Writing into a Vec cannot fail.
    let _ = rmpv::encode::write_value(&mut bytes, &doc);
    bytes
}

fn json_to_msgpack(json: &serde_json::Value) -> rmpv::Value {
    match json {
        serde_json::Value::Null => rmpv::Value::Nil,
        serde_json::Value::Bool(b) => rmpv::Value::Boolean(*b),
        serde_json::Value::Number(n) => match n.as_u64() {
            Some(u) => rmpv::Value::from(u),
            None => rmpv::Value::from(n.as_i64().unwrap_or_default()),
        },
        serde_json::Value::String(s) => rmpv::Value::from(s.as_str()),
        serde_json::Value::Array(items) => {
            rmpv::Value::Array(items.iter().map(json_to_msgpack).collect())
        }
        serde_json::Value::Object(m) => rmpv::Value::Map(
            m.iter()
                .map(|(k, v)| (rmpv::Value::from(k.as_str()), json_to_msgpack(v)))
                .collect(),
        ),
    }
}

fn msgpack_to_json(value: rmpv::Value) -> Result<serde_json::Value, CallError> {
    Ok(match value {
        rmpv::Value::Nil => serde_json::Value::Null,
        rmpv::Value::Boolean(b) => serde_json::Value::Bool(b),
        rmpv::Value::Integer(i) => match i.as_u64() {
            Some(u) => u.into(),
            None => i.as_i64().unwrap_or_default().into(),
        },
        rmpv::Value::String(s) => serde_json::Value::String(
            s.into_str()
                .ok_or_else(|| invalid("skeleton string is not UTF-8"))?,
        ),
        rmpv::Value::Array(items) => serde_json::Value::Array(
            items
                .into_iter()
                .map(msgpack_to_json)
                .collect::<Result<_, _>>()?,
        ),
        rmpv::Value::Map(entries) => {
            let mut m = serde_json::Map::new();
            for (k, v) in entries {
                let rmpv::Value::String(k) = k else {
                    return Err(invalid("skeleton map key is not a string"));
                };
                let k = k
                    .into_str()
                    .ok_or_else(|| invalid("skeleton string is not UTF-8"))?;
                m.insert(k, msgpack_to_json(v)?);
            }
            serde_json::Value::Object(m)
        }
        other => return Err(invalid(format!("unexpected {other} in a part description"))),
    })
}

/// A decoded skeleton blob.
#[derive(Debug, Clone)]
pub struct Skeleton {
    /// The tree with references.
    pub tree: rmpv::Value,
    /// The parts.
    pub parts: Vec<PartRecord>,
}

impl Skeleton {
    /// Reads the skeleton blob out of a composite's blobs and checks it:
    /// every reference names a part, every part is referenced, every part
    /// blob exists.
    pub fn decode(blobs: &[(String, Buffer)]) -> Result<Skeleton, CallError> {
        let data = blobs
            .iter()
            .find(|(n, _)| n == SKELETON_BLOB)
            .map(|(_, d)| d)
            .ok_or_else(|| invalid("a composite artifact has a blob named skeleton"))?;
        let mut reader: &[u8] = data;
        // rmpv counts a container twice (the value, then its items), and
        // the tree sits two levels inside the document.
        let doc = rmpv::decode::read_value_with_max_depth(&mut reader, 2 * MAX_NESTING + 16)
            .map_err(|e| invalid(format!("malformed skeleton: {e}")))?;
        if !reader.is_empty() {
            return Err(invalid(format!(
                "{} trailing bytes after the skeleton",
                reader.len()
            )));
        }
        let rmpv::Value::Map(entries) = doc else {
            return Err(invalid("the skeleton is not a map"));
        };
        let (mut format, mut tree, mut parts) = (None, None, None);
        for (key, value) in entries {
            match key.as_str() {
                Some("format") => format = value.as_u64(),
                Some("root") => tree = Some(value),
                Some("parts") => parts = Some(value),
                _ => {}
            }
        }
        match format {
            Some(v) if v >= 1 && v <= u64::from(COMPOSITE_FORMAT_VERSION) => {}
            Some(v) => {
                return Err(invalid(format!(
                    "skeleton format {v} is not one this build reads ({COMPOSITE_FORMAT_VERSION})"
                )))
            }
            None => return Err(invalid("the skeleton has no format")),
        }
        let tree = tree.ok_or_else(|| invalid("the skeleton has no root"))?;
        let Some(rmpv::Value::Array(part_values)) = parts else {
            return Err(invalid("the skeleton has no parts list"));
        };
        let mut parts = Vec::with_capacity(part_values.len());
        for value in part_values {
            let part = PartRecord::from_json(msgpack_to_json(value)?).map_err(invalid)?;
            for (_, blob) in &part.blobs {
                if !blobs.iter().any(|(n, _)| n == blob) {
                    return Err(invalid(format!(
                        "part {} names a missing blob {blob:?}",
                        part.path
                    )));
                }
            }
            parts.push(part);
        }
        let mut seen = vec![false; parts.len()];
        check_refs(&tree, &parts, &mut seen, 0)?;
        if let Some(unused) = seen.iter().position(|s| !s) {
            return Err(invalid(format!("part {unused} is never referenced")));
        }
        Ok(Skeleton { tree, parts })
    }

    /// The metadata and blobs a part's reader is handed: its own blob
    /// names, its own encoding.
    pub fn part_input(
        part: &PartRecord,
        blobs: &[(String, Buffer)],
    ) -> (ArtifactMeta, Vec<(String, Buffer)>) {
        let part_blobs: Vec<(String, Buffer)> = part
            .blobs
            .iter()
            .filter_map(|(name, blob)| {
                let data = blobs.iter().find(|(n, _)| n == blob)?;
                Some((name.clone(), data.1.clone()))
            })
            .collect();
        let meta = ArtifactMeta {
            obj_type: part.obj_type.clone(),
            encoding: part.encoding.clone(),
            encoding_version: part.encoding_version,
            info: part.serializer_info.clone(),
            blobs: part_blobs
                .iter()
                .map(|(n, d)| (n.clone(), d.len() as u64))
                .collect(),
        };
        (meta, part_blobs)
    }

    /// Rebuilds the value from the loaded parts (one per part, in order).
    pub fn rebuild(&self, values: Vec<Value>) -> Result<Value, CallError> {
        let mut values: Vec<Option<Value>> = values.into_iter().map(Some).collect();
        let mut tensors: HashMap<usize, HashMap<String, Tensor>> = HashMap::new();
        rebuild_at(&self.tree, None, &mut values, &mut tensors, &self.parts)
    }
}

impl Skeleton {
    /// The tree as JSON, each part replaced by what `reference` makes of
    /// it (given its index); a map of tensors grouped into one part is
    /// replaced whole. A user key starting with `$` gets one more `$`
    /// (`$part` → `$$part`), so a reference is never mistaken for data.
    /// Bytes and non-finite floats have no JSON form: an error naming
    /// their path.
    pub fn to_json(
        &self,
        reference: &dyn Fn(usize, &PartRecord) -> serde_json::Value,
    ) -> Result<serde_json::Value, JsonFormError> {
        let mut path = Vec::new();
        tree_json(&self.tree, &self.parts, reference, &mut path)
    }
}

/// Why a skeleton has no JSON form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} at {path} has no JSON form")]
pub struct JsonFormError {
    /// What the value is (`bytes`, `float NaN`).
    pub what: String,
    /// Its path (`/` for the root).
    pub path: String,
}

/// Escapes a user map key for the JSON skeleton: one more `$` in front of
/// a key starting with `$`.
pub fn escape_key(key: &str) -> Cow<'_, str> {
    if key.starts_with('$') {
        Cow::Owned(format!("${key}"))
    } else {
        Cow::Borrowed(key)
    }
}

/// Undoes [`escape_key`]; `None` for an unescaped `$` key (a reserved
/// one, such as `$part`).
pub fn unescape_key(key: &str) -> Option<&str> {
    match key.strip_prefix('$') {
        Some(rest) if rest.starts_with('$') => Some(rest),
        Some(_) => None,
        None => Some(key),
    }
}

fn tree_json(
    value: &rmpv::Value,
    parts: &[PartRecord],
    reference: &dyn Fn(usize, &PartRecord) -> serde_json::Value,
    path: &mut Vec<String>,
) -> Result<serde_json::Value, JsonFormError> {
    let no_form = |what: String, path: &[String]| JsonFormError {
        what,
        path: if path.is_empty() {
            "/".to_owned()
        } else {
            path.join("/")
        },
    };
    if let Some((_, index)) = ref_index(value) {
        let part = parts
            .get(index)
            .ok_or_else(|| no_form("a reference to a missing part".into(), path))?;
        return Ok(reference(index, part));
    }
    Ok(match value {
        rmpv::Value::Nil => serde_json::Value::Null,
        rmpv::Value::Boolean(b) => serde_json::Value::Bool(*b),
        rmpv::Value::Integer(i) => match i.as_i64() {
            Some(i) => i.into(),
            None => return Err(no_form(format!("integer {i}"), path)),
        },
        rmpv::Value::F32(f) => {
            float_json(f64::from(*f)).ok_or_else(|| no_form(format!("float {f}"), path))?
        }
        rmpv::Value::F64(f) => float_json(*f).ok_or_else(|| no_form(format!("float {f}"), path))?,
        rmpv::Value::String(s) => match s.as_str() {
            Some(s) => serde_json::Value::String(s.to_owned()),
            None => return Err(no_form("a non-UTF-8 string".into(), path)),
        },
        rmpv::Value::Binary(_) => return Err(no_form("bytes".into(), path)),
        rmpv::Value::Array(items) => {
            let mut out = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                path.push(i.to_string());
                out.push(tree_json(item, parts, reference, path)?);
                path.pop();
            }
            serde_json::Value::Array(out)
        }
        rmpv::Value::Map(entries) => {
            // A grouped map of tensors is one part: referenced whole.
            if let Some((TENSOR_REF, index)) = entries.first().and_then(|(_, v)| ref_index(v)) {
                if let Some(part) = parts.get(index) {
                    return Ok(reference(index, part));
                }
            }
            let mut out = serde_json::Map::new();
            for (key, item) in entries {
                let key = key
                    .as_str()
                    .ok_or_else(|| no_form("a non-UTF-8 key".into(), path))?;
                path.push(key.to_owned());
                out.insert(
                    escape_key(key).into_owned(),
                    tree_json(item, parts, reference, path)?,
                );
                path.pop();
            }
            serde_json::Value::Object(out)
        }
        rmpv::Value::Ext(ext, _) => return Err(no_form(format!("extension type {ext}"), path)),
    })
}

fn float_json(f: f64) -> Option<serde_json::Value> {
    serde_json::Number::from_f64(f).map(serde_json::Value::Number)
}

/// The file a composite's directory export (`get -o DIR`) keeps its
/// skeleton in.
pub const SKELETON_FILE: &str = "skeleton.json";
/// Longest file stem of a part file, in bytes (room for a suffix and an
/// extension within a 255-byte file name).
const MAX_FILE_STEM: usize = 200;

/// The standard-file extension of a part's encoding.
pub fn extension(encoding: &str) -> &'static str {
    use stowage_plugin_api::encodings::{ARROW_IPC_FILE, PYTHON_CLASS_SOURCE, SAFETENSORS};
    match encoding {
        SAFETENSORS => "safetensors",
        ARROW_IPC_FILE => "arrow",
        PYTHON_CLASS_SOURCE => "py",
        _ => "bin",
    }
}

/// The file names of a directory export, one per part: the part's path
/// with `/` as `.` and every byte outside `[A-Za-z0-9_-]` as `%XX` (so no
/// name holds a separator, a NUL, or starts with `.`; an empty path is
/// `%`), capped at 200 bytes, then `~INDEX` when two parts would share a
/// name, then the encoding's extension.
pub fn part_file_names(parts: &[PartRecord]) -> Vec<String> {
    let mut names: Vec<String> = Vec::with_capacity(parts.len());
    for (index, part) in parts.iter().enumerate() {
        let mut stem = String::new();
        for segment_byte in part.path.bytes() {
            match segment_byte {
                b'/' => stem.push('.'),
                b if b.is_ascii_alphanumeric() || b == b'_' || b == b'-' => {
                    stem.push(char::from(b))
                }
                b => stem.push_str(&format!("%{b:02X}")),
            }
        }
        if stem.is_empty() || stem.starts_with('.') {
            stem.insert(0, '%');
        }
        stem.truncate(MAX_FILE_STEM);
        let ext = extension(&part.encoding);
        let mut name = format!("{stem}.{ext}");
        if name == SKELETON_FILE || names.contains(&name) {
            name = format!("{stem}~{index}.{ext}");
        }
        names.push(name);
    }
    names
}

/// A part file a directory's `skeleton.json` refers to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileRef {
    /// The part's path.
    pub path: String,
    /// Its file name inside the directory.
    pub file: String,
    /// Its kind name.
    pub kind: String,
}

/// The JSON reference to part `part` stored in `file`: `{"$part": PATH,
/// "$file": FILE, "$kind": KIND}`, plus `"$keys"` (the map's keys, in
/// order) for a map of tensors grouped into the part.
pub fn file_reference(skeleton: &Skeleton, index: usize, file: &str) -> serde_json::Value {
    let part = &skeleton.parts[index.min(skeleton.parts.len().saturating_sub(1))];
    let mut reference = serde_json::json!({
        "$part": part.path,
        "$file": file,
        "$kind": part.kind,
    });
    if let Some(keys) = grouped_keys(&skeleton.tree, index) {
        reference["$keys"] = serde_json::Value::from(keys);
    }
    reference
}

/// The keys of the grouped map that refers to part `index`, if one does.
fn grouped_keys(tree: &rmpv::Value, index: usize) -> Option<Vec<String>> {
    match tree {
        rmpv::Value::Array(items) => items.iter().find_map(|v| grouped_keys(v, index)),
        rmpv::Value::Map(entries) => {
            if let Some((TENSOR_REF, i)) = entries.first().and_then(|(_, v)| ref_index(v)) {
                if i == index {
                    return Some(
                        entries
                            .iter()
                            .filter_map(|(k, _)| k.as_str().map(str::to_owned))
                            .collect(),
                    );
                }
                return None;
            }
            entries.iter().find_map(|(_, v)| grouped_keys(v, index))
        }
        _ => None,
    }
}

/// Reads a directory's `skeleton.json` back into a skeleton tree and the
/// part files it names (in reference order): `$$`-escaped keys are
/// unescaped, a reference's `$file` must be one plain file name, and
/// anything else starting with a single `$` is refused. `Err` names the
/// JSON path.
pub fn skeleton_from_json(doc: &serde_json::Value) -> Result<(rmpv::Value, Vec<FileRef>), String> {
    let mut files = Vec::new();
    let mut path = Vec::new();
    let tree = json_tree(doc, &mut path, &mut files, 0)?;
    if files.is_empty() {
        return Err("skeleton.json refers to no part; store plain data with put --json".into());
    }
    Ok((tree, files))
}

fn json_tree(
    doc: &serde_json::Value,
    path: &mut Vec<String>,
    files: &mut Vec<FileRef>,
    depth: usize,
) -> Result<rmpv::Value, String> {
    let at = |path: &[String]| {
        if path.is_empty() {
            "/".to_owned()
        } else {
            path.join("/")
        }
    };
    if depth > MAX_NESTING {
        return Err(format!("the value nests deeper than {MAX_NESTING} levels"));
    }
    Ok(match doc {
        serde_json::Value::Null => rmpv::Value::Nil,
        serde_json::Value::Bool(b) => rmpv::Value::Boolean(*b),
        serde_json::Value::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => rmpv::Value::from(i),
            (None, Some(f)) if !n.is_u64() => rmpv::Value::F64(f),
            _ => return Err(format!("number {n} at {} is out of range", at(path))),
        },
        serde_json::Value::String(s) => rmpv::Value::from(s.as_str()),
        serde_json::Value::Array(items) => {
            let mut out = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                path.push(i.to_string());
                out.push(json_tree(item, path, files, depth + 1)?);
                path.pop();
            }
            rmpv::Value::Array(out)
        }
        serde_json::Value::Object(map) if map.contains_key("$part") => {
            let text = |key: &str| {
                map.get(key)
                    .and_then(serde_json::Value::as_str)
                    .ok_or_else(|| format!("the reference at {} has no string {key}", at(path)))
            };
            let file = text("$file")?;
            if !is_plain_file_name(file) || file == SKELETON_FILE {
                return Err(format!(
                    "the reference at {} names {}, which is not a part file name",
                    at(path),
                    crate::text::quote_capped(file, 80)
                ));
            }
            let index = files.len();
            files.push(FileRef {
                path: text("$part")?.to_owned(),
                file: file.to_owned(),
                kind: text("$kind")?.to_owned(),
            });
            match map.get("$keys") {
                None => reference(PART_REF, index),
                Some(serde_json::Value::Array(keys)) if !keys.is_empty() => rmpv::Value::Map(
                    keys.iter()
                        .map(|k| {
                            k.as_str()
                                .map(|k| (rmpv::Value::from(k), reference(TENSOR_REF, index)))
                                .ok_or_else(|| {
                                    format!("a $keys entry at {} is not a string", at(path))
                                })
                        })
                        .collect::<Result<_, _>>()?,
                ),
                Some(_) => {
                    return Err(format!(
                        "the reference at {} has $keys that are not a non-empty list of strings",
                        at(path)
                    ))
                }
            }
        }
        serde_json::Value::Object(map) => {
            let mut out = Vec::with_capacity(map.len());
            for (key, item) in map {
                let Some(key) = unescape_key(key) else {
                    return Err(format!(
                        "key {} at {} is reserved (a user key starting with $ is written $$)",
                        crate::text::quote_capped(key, 80),
                        at(path)
                    ));
                };
                path.push(key.to_owned());
                out.push((
                    rmpv::Value::from(key),
                    json_tree(item, path, files, depth + 1)?,
                ));
                path.pop();
            }
            rmpv::Value::Map(out)
        }
    })
}

/// One plain path component: not empty, not `.`/`..`, no `/`, `\\`, NUL
/// or control character.
pub fn is_plain_file_name(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && name.len() <= 255
        && !name.contains(['/', '\\'])
        && !name.chars().any(char::is_control)
}

/// The part index of a reference, if `value` is one.
pub fn ref_index(value: &rmpv::Value) -> Option<(i8, usize)> {
    match value {
        rmpv::Value::Ext(ext @ (PART_REF | TENSOR_REF), payload) => {
            let bytes: [u8; 4] = payload.as_slice().try_into().ok()?;
            Some((*ext, usize::try_from(u32::from_be_bytes(bytes)).ok()?))
        }
        _ => None,
    }
}

fn check_refs(
    value: &rmpv::Value,
    parts: &[PartRecord],
    seen: &mut [bool],
    depth: usize,
) -> Result<(), CallError> {
    if depth > MAX_NESTING + 1 {
        return Err(invalid(format!(
            "the skeleton nests deeper than {MAX_NESTING} levels"
        )));
    }
    match value {
        rmpv::Value::Array(items) => items
            .iter()
            .try_for_each(|v| check_refs(v, parts, seen, depth + 1)),
        rmpv::Value::Map(entries) => entries
            .iter()
            .try_for_each(|(_, v)| check_refs(v, parts, seen, depth + 1)),
        rmpv::Value::Ext(..) => {
            let (ext, index) =
                ref_index(value).ok_or_else(|| invalid("malformed part reference"))?;
            let part = parts.get(index).ok_or_else(|| {
                invalid(format!("reference to part {index}, which does not exist"))
            })?;
            if ext == TENSOR_REF && part.kind != Kind::TensorMap.name() {
                return Err(invalid(format!(
                    "tensor reference into part {}, which is not a tensor_map",
                    part.path
                )));
            }
            if let Some(s) = seen.get_mut(index) {
                *s = true;
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

fn rebuild_at(
    value: &rmpv::Value,
    key: Option<&str>,
    values: &mut [Option<Value>],
    tensors: &mut HashMap<usize, HashMap<String, Tensor>>,
    parts: &[PartRecord],
) -> Result<Value, CallError> {
    if let Some((ext, index)) = ref_index(value) {
        let path = parts.get(index).map_or("", |p| p.path.as_str());
        if ext == PART_REF {
            let value = values
                .get_mut(index)
                .and_then(Option::take)
                .ok_or_else(|| invalid(format!("part {path} is referenced twice")))?;
            let kind = parts.get(index).map_or("", |p| p.kind.as_str());
            return Ok(as_kind(kind, value));
        }
        if let std::collections::hash_map::Entry::Vacant(slot) = tensors.entry(index) {
            match values.get_mut(index).and_then(Option::take) {
                Some(Value::TensorMap(map)) => {
                    slot.insert(map.tensors.into_iter().collect());
                }
                Some(other) => {
                    return Err(invalid(format!(
                        "part {path} was read as a {} value, not a tensor_map",
                        other.kind()
                    )))
                }
                None => return Err(invalid(format!("part {path} is missing"))),
            }
        }
        let name = key.unwrap_or_default();
        return tensors
            .get_mut(&index)
            .and_then(|m| m.remove(name))
            .map(Value::Tensor)
            .ok_or_else(|| invalid(format!("part {path} has no tensor named {name:?}")));
    }
    Ok(match value {
        rmpv::Value::Nil => Value::Null,
        rmpv::Value::Boolean(b) => Value::Bool(*b),
        rmpv::Value::Integer(i) => Value::Int(
            i.as_i64()
                .ok_or_else(|| invalid(format!("integer {i} does not fit a 64-bit signed int")))?,
        ),
        rmpv::Value::F32(f) => Value::Float(f64::from(*f)),
        rmpv::Value::F64(f) => Value::Float(*f),
        rmpv::Value::String(s) => Value::String(
            s.as_str()
                .ok_or_else(|| invalid("skeleton string is not UTF-8"))?
                .to_owned(),
        ),
        rmpv::Value::Binary(b) => Value::Bytes(Buffer::from_vec(b.clone())),
        rmpv::Value::Array(items) => Value::List(
            items
                .iter()
                .map(|v| rebuild_at(v, None, values, tensors, parts))
                .collect::<Result<_, _>>()?,
        ),
        rmpv::Value::Map(entries) => {
            let mut out = Vec::with_capacity(entries.len());
            for (k, v) in entries {
                let k = k
                    .as_str()
                    .ok_or_else(|| invalid("skeleton map key is not a UTF-8 string"))?;
                out.push((
                    k.to_owned(),
                    rebuild_at(v, Some(k), values, tensors, parts)?,
                ));
            }
            Value::Map(out)
        }
        rmpv::Value::Ext(ext, _) => {
            return Err(invalid(format!("unknown skeleton extension type {ext}")))
        }
    })
}

/// A part's value as the kind its reference records: a file a plugin
/// ingested (`put DIR`) may read back as a one-tensor `tensor_map` where
/// the part was a `tensor`.
fn as_kind(kind: &str, value: Value) -> Value {
    match value {
        Value::TensorMap(mut map) if kind == Kind::Tensor.name() && map.tensors.len() == 1 => {
            match map.tensors.pop() {
                Some((_, tensor)) => Value::Tensor(tensor),
                None => Value::TensorMap(map),
            }
        }
        other => other,
    }
}

/// The written-by of a composite's result: the skeleton's serializer info.
pub fn written(value: &Value, parts: Vec<PartRecord>) -> Written {
    Written {
        obj_type: value.kind().name().to_owned(),
        encoding: COMPOSITE_ENCODING.to_owned(),
        encoding_version: COMPOSITE_FORMAT_VERSION,
        info: vec![("parts".to_owned(), parts.len().to_string())],
        parts,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tensor(v: u8) -> Value {
        Value::Tensor(Tensor {
            dtype: "U8".into(),
            shape: vec![1],
            data: Buffer::from_vec(vec![v]),
        })
    }

    #[test]
    fn maps_of_tensors_are_one_part_and_other_tensors_their_own() {
        let value = Value::Map(vec![
            (
                "w".into(),
                Value::Map(vec![("a".into(), tensor(1)), ("b".into(), tensor(2))]),
            ),
            ("l".into(), Value::List(vec![tensor(3), Value::Int(4)])),
            ("step".into(), Value::Int(1200)),
        ]);
        assert!(is_composite(&value));
        let split = split(&value).expect("splits");
        let paths: Vec<(&str, Kind)> = split
            .leaves
            .iter()
            .map(|l| (l.path.as_str(), l.value.kind()))
            .collect();
        assert_eq!(paths, [("w", Kind::TensorMap), ("l/0", Kind::Tensor)]);
    }

    fn part(path: &str, encoding: &str) -> PartRecord {
        PartRecord {
            path: path.into(),
            encoding: encoding.into(),
            ..PartRecord::default()
        }
    }

    #[test]
    fn part_file_names_are_plain_unique_and_escaped() {
        let parts = [
            part("weights", "safetensors"),
            part("../x/0", "safetensors"),
            part("", "arrow-ipc-file"),
            part("a.b", "python-class-source"),
            part("a/b", "python-class-source"),
            part("skeleton", "other"),
            part("a/b", "python-class-source"),
        ];
        assert_eq!(
            part_file_names(&parts),
            [
                "weights.safetensors",
                "%2E%2E.x.0.safetensors",
                "%.arrow",
                "a%2Eb.py",
                "a.b.py",
                "skeleton.bin",
                "a.b~6.py",
            ]
        );
        let long = part(&"é".repeat(200), "safetensors");
        let name = &part_file_names(&[long])[0];
        assert!(name.len() <= 255 && is_plain_file_name(name), "{name}");
    }

    #[test]
    fn dollar_keys_are_escaped_once_more_and_unescaped_back() {
        assert_eq!(escape_key("$part"), "$$part");
        assert_eq!(escape_key("$$x"), "$$$x");
        assert_eq!(escape_key("plain"), "plain");
        assert_eq!(unescape_key("$$part"), Some("$part"));
        assert_eq!(unescape_key("$$$x"), Some("$$x"));
        assert_eq!(unescape_key("$part"), None);
        assert_eq!(unescape_key("plain"), Some("plain"));
    }

    #[test]
    fn plain_data_and_empty_containers_are_not_composites() {
        assert!(!is_composite(&Value::Map(vec![(
            "a".into(),
            Value::Int(1)
        )])));
        assert!(!is_composite(&Value::List(vec![])));
        assert!(!is_composite(&tensor(1)));
    }
}
