//! The strict safetensors header parser: untrusted bytes in, a validated
//! [`Header`] whose tensors borrow their data from the input out.
//!
//! A file is `u64 LE size` + `size` bytes of UTF-8 JSON + the data section.
//! The JSON is an object mapping each tensor name to
//! `{"dtype", "shape", "data_offsets": [begin, end]}` (offsets relative to
//! the data section), plus an optional `__metadata__` object of strings.
//!
//! Invariants: every check has its own [`FormatError`] variant; lengths are
//! multiplied with `checked_mul` and bytes are taken with `get(..)`, so no
//! input panics or reads out of bounds; the declared header size is capped by
//! [`MAX_HEADER_SIZE`] before anything is allocated from it.
//!
//! Decision: the tensors must tile the data section exactly, in offset order
//! (no gap, no overlap, nothing after the last one), as the reference reader
//! demands. Tensors are returned in header order.
//! Decision: a repeated key is detected at the top level (tensor names and
//! `__metadata__`); inside one entry or inside `__metadata__`, JSON parsing
//! keeps the last of repeated keys.

use std::collections::HashSet;
use std::fmt;

use safetensors::Dtype;
use serde::de::{Deserialize, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::Value as Json;

use crate::error::FormatError;

/// The largest header accepted, in bytes (the reference reader's limit).
pub const MAX_HEADER_SIZE: usize = 100_000_000;

/// Bytes of the little-endian header size field.
pub const SIZE_FIELD_LEN: usize = 8;

/// The key of the string metadata in the header.
pub const METADATA_KEY: &str = "__metadata__";

/// A validated file: tensors in header order, metadata, the data section.
#[derive(Debug)]
pub struct Header<'a> {
    /// The tensors, in the order the header lists them.
    pub tensors: Vec<Entry<'a>>,
    /// `__metadata__`, in header order.
    pub metadata: Vec<(String, String)>,
    /// Length of the JSON header (padding included).
    pub header_len: usize,
}

/// One validated tensor.
#[derive(Debug)]
pub struct Entry<'a> {
    /// Its name.
    pub name: String,
    /// Its dtype.
    pub dtype: Dtype,
    /// Its shape; empty for a 0-d scalar.
    pub shape: Vec<u64>,
    /// `data_offsets`: where its bytes lie in the data section.
    pub offsets: (u64, u64),
    /// Its bytes, borrowed from the file.
    pub data: &'a [u8],
}

/// Whether `prefix` starts like a safetensors file: a plausible header size
/// followed by `{`.
pub fn sniff(prefix: &[u8]) -> bool {
    let Some(size) = size_field(prefix) else {
        return false;
    };
    (2..=MAX_HEADER_SIZE as u64).contains(&size) && prefix.get(SIZE_FIELD_LEN) == Some(&b'{')
}

/// Parses and validates a whole file.
pub fn parse(file: &[u8]) -> Result<Header<'_>, FormatError> {
    let size = size_field(file).ok_or(FormatError::FileTooShort { len: file.len() })?;
    if size < 2 {
        return Err(FormatError::HeaderTooSmall { size });
    }
    if size > MAX_HEADER_SIZE as u64 {
        return Err(FormatError::HeaderTooLarge { size });
    }
    // At most 100 MB: fits usize and cannot overflow when added to 8.
    let header_len = size as usize;
    let data_start = SIZE_FIELD_LEN + header_len;
    let (Some(json), Some(data)) = (file.get(SIZE_FIELD_LEN..data_start), file.get(data_start..))
    else {
        return Err(FormatError::HeaderPastEnd {
            size,
            file_len: file.len(),
        });
    };
    let text = std::str::from_utf8(json).map_err(|e| FormatError::HeaderNotUtf8 {
        valid_up_to: e.valid_up_to(),
    })?;
    let fields = top_level_fields(text)?;

    let mut seen = HashSet::with_capacity(fields.len());
    if let Some((name, _)) = fields.iter().find(|(name, _)| !seen.insert(name.as_str())) {
        return Err(FormatError::DuplicateName { name: name.clone() });
    }

    let mut tensors = Vec::with_capacity(fields.len());
    let mut metadata = Vec::new();
    for (name, value) in fields {
        if name == METADATA_KEY {
            metadata = parse_metadata(value)?;
        } else {
            tensors.push(parse_entry(name, &value, data)?);
        }
    }
    check_tiling(&tensors, data)?;
    Ok(Header {
        tensors,
        metadata,
        header_len,
    })
}

/// The dtype named `name`, if the safetensors format defines it.
pub fn parse_dtype(name: &str) -> Option<Dtype> {
    use serde::de::value::{Error, StrDeserializer};
    Dtype::deserialize(StrDeserializer::<Error>::new(name)).ok()
}

/// Bytes a tensor of `dtype` and `shape` occupies.
pub fn byte_len(name: &str, dtype: Dtype, shape: &[u64]) -> Result<u64, FormatError> {
    let overflow = || FormatError::ShapeOverflow {
        name: name.to_owned(),
        shape: format!("{shape:?}"),
    };
    let elements = shape
        .iter()
        .try_fold(1u64, |n, &dim| n.checked_mul(dim))
        .ok_or_else(overflow)?;
    let bits = elements
        .checked_mul(dtype.bitsize() as u64)
        .ok_or_else(overflow)?;
    if bits % 8 != 0 {
        return Err(FormatError::PartialByte {
            name: name.to_owned(),
            bits: u128::from(bits),
        });
    }
    Ok(bits / 8)
}

fn size_field(bytes: &[u8]) -> Option<u64> {
    let field: [u8; SIZE_FIELD_LEN] = bytes.get(..SIZE_FIELD_LEN)?.try_into().ok()?;
    Some(u64::from_le_bytes(field))
}

/// The top-level object's entries in order, repeated keys kept (a JSON map
/// would silently keep only the last).
fn top_level_fields(text: &str) -> Result<Vec<(String, Json)>, FormatError> {
    match serde_json::from_str::<Fields>(text) {
        Ok(Fields(fields)) => Ok(fields),
        // Only on failure: tell "valid JSON, wrong shape" from "not JSON".
        Err(error) => match serde_json::from_str::<IgnoredAny>(text) {
            Ok(_) => Err(FormatError::HeaderNotObject),
            Err(_) => Err(FormatError::HeaderNotJson(error.to_string())),
        },
    }
}

struct Fields(Vec<(String, Json)>);

impl<'de> Deserialize<'de> for Fields {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(FieldsVisitor)
    }
}

struct FieldsVisitor;

impl<'de> Visitor<'de> for FieldsVisitor {
    type Value = Fields;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a json object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Fields, A::Error> {
        let mut fields = Vec::new();
        while let Some(entry) = map.next_entry::<String, Json>()? {
            fields.push(entry);
        }
        Ok(Fields(fields))
    }
}

fn parse_metadata(value: Json) -> Result<Vec<(String, String)>, FormatError> {
    let Json::Object(map) = value else {
        return Err(FormatError::MetadataNotObject);
    };
    map.into_iter()
        .map(|(key, value)| match value {
            Json::String(text) => Ok((key, text)),
            _ => Err(FormatError::NonStringMetadata { key }),
        })
        .collect()
}

fn parse_entry<'a>(name: String, value: &Json, data: &'a [u8]) -> Result<Entry<'a>, FormatError> {
    let Some(entry) = value.as_object() else {
        return Err(FormatError::EntryNotObject { name });
    };
    let field = |field: &'static str| {
        entry.get(field).ok_or_else(|| FormatError::MissingField {
            name: name.clone(),
            field,
        })
    };
    let dtype_json = field("dtype")?;
    let Some(dtype) = dtype_json.as_str().and_then(parse_dtype) else {
        return Err(FormatError::UnknownDtype {
            name,
            dtype: dtype_json.to_string(),
        });
    };
    let shape = parse_shape(&name, field("shape")?)?;
    let (begin, end) = parse_offsets(&name, field("data_offsets")?)?;
    if begin > end {
        return Err(FormatError::ReversedOffsets { name, begin, end });
    }
    let range = usize::try_from(begin).ok()..usize::try_from(end).ok();
    let Some(bytes) = range
        .start
        .zip(range.end)
        .and_then(|(begin, end)| data.get(begin..end))
    else {
        return Err(FormatError::OffsetsOutOfBounds {
            name,
            end,
            data_len: data.len(),
        });
    };
    let expected = byte_len(&name, dtype, &shape)?;
    let actual = end - begin;
    if expected != actual {
        return Err(FormatError::SizeMismatch {
            dtype: dtype.to_string(),
            shape: format!("{shape:?}"),
            name,
            expected: u128::from(expected),
            actual,
        });
    }
    Ok(Entry {
        name,
        dtype,
        shape,
        offsets: (begin, end),
        data: bytes,
    })
}

fn parse_shape(name: &str, value: &Json) -> Result<Vec<u64>, FormatError> {
    let invalid = || FormatError::InvalidShape {
        name: name.to_owned(),
    };
    let dims = value.as_array().ok_or_else(invalid)?;
    dims.iter()
        .map(|dim| {
            if let Some(dim) = dim.as_u64() {
                return Ok(dim);
            }
            let Some(float) = dim.as_f64() else {
                return Err(invalid());
            };
            if dim.is_i64() || float < 0.0 {
                Err(FormatError::NegativeDimension {
                    name: name.to_owned(),
                    dim: dim.to_string(),
                })
            } else if float.fract() == 0.0 && float >= u64::MAX as f64 {
                Err(FormatError::ShapeOverflow {
                    name: name.to_owned(),
                    shape: value.to_string(),
                })
            } else {
                Err(invalid())
            }
        })
        .collect()
}

fn parse_offsets(name: &str, value: &Json) -> Result<(u64, u64), FormatError> {
    match value.as_array().map(Vec::as_slice) {
        Some([begin, end]) => begin.as_u64().zip(end.as_u64()),
        _ => None,
    }
    .ok_or_else(|| FormatError::InvalidOffsets {
        name: name.to_owned(),
    })
}

/// In offset order, each tensor starts where the previous one ends, the first
/// at 0, and the last ends at the end of the data section.
fn check_tiling(tensors: &[Entry<'_>], data: &[u8]) -> Result<(), FormatError> {
    let mut spans: Vec<(u64, u64, &str)> = tensors
        .iter()
        .map(|t| (t.offsets.0, t.offsets.1, t.name.as_str()))
        .collect();
    spans.sort_unstable();
    let mut previous_end = 0;
    for (begin, end, name) in spans {
        if begin < previous_end {
            return Err(FormatError::OverlappingOffsets {
                name: name.to_owned(),
                begin,
                previous_end,
            });
        }
        if begin > previous_end {
            return Err(FormatError::GapBeforeTensor {
                name: name.to_owned(),
                begin,
                previous_end,
            });
        }
        previous_end = end;
    }
    if previous_end != data.len() as u64 {
        return Err(FormatError::TrailingData {
            covered: previous_end,
            data_len: data.len(),
        });
    }
    Ok(())
}
