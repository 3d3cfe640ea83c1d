//! `stowage::Value`: the values applications hand to the host and get back.
//!
//! The host's own type, independent of the ABI: the loader converts it to
//! plugin-api's fixed-layout nodes by borrowing (no payload is copied), and
//! converts a plugin's returned value back without copying tensor data
//! ([`Buffer`] can keep a memory map or a plugin-owned allocation alive).
//!
//! Also the JSON mapping used by `stowage put --json` and `get` of fallback
//! artifacts.
//!
//! Decision: JSON integers must fit an i64 (the `int` kind); larger ones are
//! an error rather than a silent float, naming the JSON path of the value
//! (`$` the document, `.key`, `["key"]` for a key that is not an
//! identifier, `[i]`) and quoting the literal capped. Non-JSON kinds (bytes, tensors, …)
//! have no JSON form and `to_json` refuses them by name.

use std::fmt;
use std::ops::Deref;
use std::sync::Arc;

pub use stowage_plugin_api::ArrowBatch;
pub use stowage_plugin_api::Kind;

/// A value. Cloning is cheap for byte payloads and Arrow batches (shared).
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `null`.
    Null,
    /// `bool`.
    Bool(bool),
    /// `int`.
    Int(i64),
    /// `float`.
    Float(f64),
    /// `string`.
    String(String),
    /// `bytes`.
    Bytes(Buffer),
    /// `list`.
    List(Vec<Value>),
    /// `map` with string keys, insertion order kept.
    Map(Vec<(String, Value)>),
    /// `tensor`.
    Tensor(Tensor),
    /// `tensor_map`.
    TensorMap(TensorMap),
    /// `arrow`.
    Arrow(ArrowTable),
    /// `class_source`.
    ClassSource(ClassSource),
}

impl Value {
    /// The value's kind.
    pub fn kind(&self) -> Kind {
        match self {
            Value::Null => Kind::Null,
            Value::Bool(_) => Kind::Bool,
            Value::Int(_) => Kind::Int,
            Value::Float(_) => Kind::Float,
            Value::String(_) => Kind::String,
            Value::Bytes(_) => Kind::Bytes,
            Value::List(_) => Kind::List,
            Value::Map(_) => Kind::Map,
            Value::Tensor(_) => Kind::Tensor,
            Value::TensorMap(_) => Kind::TensorMap,
            Value::Arrow(_) => Kind::Arrow,
            Value::ClassSource(_) => Kind::ClassSource,
        }
    }

    /// Converts a JSON document (`put --json`). A number with no value form
    /// is an error naming its JSON path (`$.a[1]`).
    pub fn from_json(json: &serde_json::Value) -> Result<Value, JsonError> {
        let mut path = String::from("$");
        Value::from_json_at(json, &mut path)
    }

    /// [`Value::from_json`] of the node at `path`, which it extends while
    /// descending and restores before returning.
    fn from_json_at(json: &serde_json::Value, path: &mut String) -> Result<Value, JsonError> {
        Ok(match json {
            serde_json::Value::Null => Value::Null,
            serde_json::Value::Bool(b) => Value::Bool(*b),
            serde_json::Value::Number(n) => {
                // With `arbitrary_precision` the literal is kept, so an
                // integer too large for i64 is caught instead of silently
                // becoming a float.
                let literal = n.to_string();
                let is_integer = !literal.contains(['.', 'e', 'E']);
                let literal = || crate::text::quote_capped(&literal, MAX_QUOTED_LITERAL);
                match (n.as_i64(), n.as_f64()) {
                    (Some(i), _) => Value::Int(i),
                    (None, Some(f)) if !is_integer && f.is_finite() => Value::Float(f),
                    (None, _) if is_integer => {
                        return Err(JsonError::IntegerOutOfRange {
                            literal: literal(),
                            path: path.clone(),
                        })
                    }
                    (None, _) => {
                        return Err(JsonError::FloatOutOfRange {
                            literal: literal(),
                            path: path.clone(),
                        })
                    }
                }
            }
            serde_json::Value::String(s) => Value::String(s.clone()),
            serde_json::Value::Array(items) => {
                let mut list = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    let len = path.len();
                    path.push_str(&format!("[{i}]"));
                    list.push(Value::from_json_at(item, path)?);
                    path.truncate(len);
                }
                Value::List(list)
            }
            serde_json::Value::Object(map) => {
                let mut entries = Vec::with_capacity(map.len());
                for (key, item) in map {
                    let len = path.len();
                    push_key(path, key);
                    entries.push((key.clone(), Value::from_json_at(item, path)?));
                    path.truncate(len);
                }
                Value::Map(entries)
            }
        })
    }

    /// The JSON form of plain data; other kinds have none.
    pub fn to_json(&self) -> Result<serde_json::Value, JsonError> {
        Ok(match self {
            Value::Null => serde_json::Value::Null,
            Value::Bool(b) => serde_json::Value::Bool(*b),
            Value::Int(i) => serde_json::Value::from(*i),
            Value::Float(f) => serde_json::Number::from_f64(*f)
                .map(serde_json::Value::Number)
                .ok_or(JsonError::NonFiniteFloat(*f))?,
            Value::String(s) => serde_json::Value::String(s.clone()),
            Value::List(items) => serde_json::Value::Array(
                items.iter().map(Value::to_json).collect::<Result<_, _>>()?,
            ),
            Value::Map(entries) => serde_json::Value::Object(
                entries
                    .iter()
                    .map(|(k, v)| Ok((k.clone(), v.to_json()?)))
                    .collect::<Result<_, _>>()?,
            ),
            other => return Err(JsonError::NoJsonForm(other.kind())),
        })
    }
}

/// Characters of a JSON number literal or key quoted in errors.
const MAX_QUOTED_LITERAL: usize = 80;

/// Appends `.key` to a JSON path, or `["key"]` when the key is not an
/// identifier (quoted as JSON, capped).
fn push_key(path: &mut String, key: &str) {
    let identifier = key
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if identifier && key.len() <= MAX_QUOTED_LITERAL {
        path.push('.');
        path.push_str(key);
    } else {
        let quoted = serde_json::Value::String(key.to_owned()).to_string();
        path.push('[');
        path.push_str(&crate::text::quote_capped(&quoted, MAX_QUOTED_LITERAL));
        path.push(']');
    }
}

/// Why a value has no JSON form or a JSON document no value.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum JsonError {
    /// A JSON integer outside the i64 range (the `int` kind).
    #[error("integer {literal} at {path} is outside the 64-bit range")]
    IntegerOutOfRange {
        /// The literal, quoted capped.
        literal: String,
        /// Its JSON path, `$` for the document.
        path: String,
    },
    /// A JSON number too large for an f64.
    #[error("number {literal} at {path} is out of range for a 64-bit float")]
    FloatOutOfRange {
        /// The literal, quoted capped.
        literal: String,
        /// Its JSON path.
        path: String,
    },
    /// NaN or an infinity, which JSON cannot spell.
    #[error("float {0} has no JSON form")]
    NonFiniteFloat(f64),
    /// A kind that is not plain data.
    #[error("a {0} value has no JSON form")]
    NoJsonForm(Kind),
}

/// A tensor: safetensors dtype name, shape, little-endian row-major data.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    /// dtype (`F32`, `BF16`, …).
    pub dtype: String,
    /// Shape; empty for a 0-d scalar.
    pub shape: Vec<u64>,
    /// The data (possibly memory-mapped).
    pub data: Buffer,
}

/// Named tensors plus string metadata.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TensorMap {
    /// `(name, tensor)` in order.
    pub tensors: Vec<(String, Tensor)>,
    /// String metadata (`__metadata__`).
    pub metadata: Vec<(String, String)>,
}

/// A Python class stored as source.
#[derive(Debug, Clone, PartialEq)]
pub struct ClassSource {
    /// Dotted qualified name.
    pub qualname: String,
    /// Defining module, if known.
    pub module: Option<String>,
    /// `inspect.getsource(cls)`, byte-exact.
    pub source: String,
}

/// Arrow record batches, owned by the host and shared (each plugin call gets
/// a fresh export of the same buffers).
#[derive(Clone, Default)]
pub struct ArrowTable {
    batches: Vec<Arc<ArrowBatch>>,
}

impl ArrowTable {
    /// A table of these batches.
    pub fn new(batches: Vec<ArrowBatch>) -> Self {
        ArrowTable {
            batches: batches.into_iter().map(Arc::new).collect(),
        }
    }
    /// The batches.
    pub fn batches(&self) -> &[Arc<ArrowBatch>] {
        &self.batches
    }
    /// Fresh, independently releasable exports of every batch.
    pub fn export(&self) -> Vec<ArrowBatch> {
        self.batches.iter().map(ArrowBatch::share).collect()
    }
    /// Total rows over all batches.
    pub fn num_rows(&self) -> i64 {
        self.batches.iter().map(|b| b.array.length).sum()
    }
}

impl fmt::Debug for ArrowTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "ArrowTable({} batches, {} rows)",
            self.batches.len(),
            self.num_rows()
        )
    }
}

impl PartialEq for ArrowTable {
    /// Identity, not content: comparing Arrow data needs arrow-rs.
    fn eq(&self, other: &Self) -> bool {
        self.batches.len() == other.batches.len()
            && self
                .batches
                .iter()
                .zip(&other.batches)
                .all(|(a, b)| Arc::ptr_eq(a, b))
    }
}

/// An immutable, cheaply cloneable byte buffer that may point into memory it
/// does not own outright: a memory-mapped blob or a plugin's allocation, kept
/// alive by `owner`.
#[derive(Clone)]
pub struct Buffer {
    owner: Arc<dyn Send + Sync>,
    ptr: *const u8,
    len: usize,
}

// SAFETY: the bytes are immutable for the buffer's life and the owner is
// `Send + Sync`, so sharing or sending the view is as safe as sharing `&[u8]`.
unsafe impl Send for Buffer {}
// SAFETY: as above.
unsafe impl Sync for Buffer {}

impl Buffer {
    /// A buffer owning `bytes`.
    pub fn from_vec(bytes: Vec<u8>) -> Self {
        let owner = Arc::new(bytes);
        let (ptr, len) = (owner.as_ptr(), owner.len());
        Buffer { owner, ptr, len }
    }

    /// A buffer over memory owned by `owner` (e.g. a memory map).
    pub fn from_owner<T: AsRef<[u8]> + Send + Sync + 'static>(owner: T) -> Self {
        let owner = Arc::new(owner);
        let bytes = (*owner).as_ref();
        let (ptr, len) = (bytes.as_ptr(), bytes.len());
        Buffer { owner, ptr, len }
    }

    /// A buffer over `len` bytes at `ptr`, kept alive by `owner`.
    ///
    /// # Safety
    /// - `ptr..ptr+len` is readable, initialised and never mutated while
    ///   `owner` is alive;
    /// - the memory stays valid at least until `owner` is dropped.
    pub unsafe fn from_raw_parts(owner: Arc<dyn Send + Sync>, ptr: *const u8, len: usize) -> Self {
        Buffer { owner, ptr, len }
    }

    /// A sub-range sharing the same owner.
    pub fn slice(&self, range: std::ops::Range<usize>) -> Option<Buffer> {
        if range.start > range.end || range.end > self.len {
            return None;
        }
        Some(Buffer {
            owner: Arc::clone(&self.owner),
            // SAFETY: `range` is within `0..len`, checked above.
            ptr: unsafe { self.ptr.add(range.start) },
            len: range.end - range.start,
        })
    }

    /// The bytes.
    pub fn as_slice(&self) -> &[u8] {
        if self.len == 0 {
            return &[];
        }
        // SAFETY: construction guarantees `ptr..ptr+len` is valid while
        // `owner` lives, and `self` holds `owner`.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }

    /// Whether `ptr` lies inside this buffer (used to prove zero-copy loads).
    pub fn contains_ptr(&self, ptr: *const u8) -> bool {
        let start = self.ptr as usize;
        (start..start + self.len).contains(&(ptr as usize))
    }
}

impl Deref for Buffer {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.as_slice()
    }
}

impl AsRef<[u8]> for Buffer {
    fn as_ref(&self) -> &[u8] {
        self.as_slice()
    }
}

impl PartialEq for Buffer {
    fn eq(&self, other: &Self) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl From<Vec<u8>> for Buffer {
    fn from(bytes: Vec<u8>) -> Self {
        Buffer::from_vec(bytes)
    }
}

impl fmt::Debug for Buffer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Buffer({} bytes)", self.len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check_json_round_trip(text: &str) {
        let json: serde_json::Value = serde_json::from_str(text).expect("test JSON parses");
        let value = Value::from_json(&json).expect("converts");
        assert_eq!(value.to_json().expect("has a JSON form"), json);
    }

    #[test]
    fn json_documents_round_trip() {
        check_json_round_trip(r#"{"b": [1, -2, 3.5, "x", null, true], "a": {"z": {}}}"#);
        check_json_round_trip("9223372036854775807");
        check_json_round_trip("-9223372036854775808");
        check_json_round_trip("[]");
    }

    #[track_caller]
    fn json_error(text: &str) -> String {
        let json: serde_json::Value = serde_json::from_str(text).expect("test JSON parses");
        match Value::from_json(&json) {
            Ok(value) => panic!("{text} converted to {value:?}"),
            Err(error) => error.to_string(),
        }
    }

    #[test]
    fn json_integer_beyond_i64_is_an_error_naming_its_path() {
        assert_eq!(
            json_error("18446744073709551615"),
            "integer 18446744073709551615 at $ is outside the 64-bit range"
        );
        assert_eq!(
            json_error(r#"{"a": [1, 18446744073709551616]}"#),
            "integer 18446744073709551616 at $.a[1] is outside the 64-bit range"
        );
        assert_eq!(
            json_error(r#"{"ok": 1, "a b": {"_x9": [[0, -9223372036854775809]]}}"#),
            r#"integer -9223372036854775809 at $["a b"]._x9[0][1] is outside the 64-bit range"#
        );
        assert_eq!(
            json_error(r#"{"k\n": 1e+999}"#),
            r#"number 1e+999 at $["k\n"] is out of range for a 64-bit float"#
        );
    }

    #[test]
    fn json_error_caps_a_huge_literal() {
        let digits = "9".repeat(100_000);
        assert_eq!(
            json_error(&format!("[{digits}]")),
            format!(
                "integer {}… (100000 bytes) at $[0] is outside the 64-bit range",
                "9".repeat(80)
            )
        );
    }

    #[test]
    fn map_keeps_insertion_order() {
        let json: serde_json::Value = serde_json::from_str(r#"{"z": 1, "a": 2}"#).expect("parses");
        let Value::Map(entries) = Value::from_json(&json).expect("converts") else {
            panic!("expected a map");
        };
        assert_eq!(entries[0].0, "z");
    }

    #[test]
    fn buffer_slices_share_the_owner() {
        let buffer = Buffer::from_vec(vec![1, 2, 3, 4]);
        let middle = buffer.slice(1..3).expect("in range");
        assert_eq!(&*middle, &[2, 3]);
        assert!(buffer.contains_ptr(middle.as_ptr()));
        assert!(buffer.slice(3..5).is_none());
    }
}
