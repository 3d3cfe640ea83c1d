//! Writing: a `tensor` or `tensor_map` value becomes one safetensors file,
//! streamed through the host's sink; a file being ingested is validated and
//! stored as it is.
//!
//! Invariant: tensor bytes go from the value the host lends straight into the
//! sink; only the JSON header is built in memory.
//!
//! Decision: the layout is the `safetensors` crate's (tensors ordered by
//! descending dtype alignment, then by name; header padded with spaces to a
//! multiple of 8 bytes; `__metadata__` first and left out when empty), so
//! the same tensors give the same bytes as `safetensors::serialize` and every
//! tensor starts 8-byte aligned when its dtype needs it. A loaded map
//! therefore comes back in that order.
//! Decision: a single `tensor` is written as a file holding one tensor named
//! [`SINGLE_TENSOR_NAME`]; the artifact's `obj_type` tells it apart from a map.

use std::cmp::Reverse;
use std::collections::HashSet;
use std::fmt::Write as _;

use stowage_plugin_api::{encodings, Kind, Metadata, PluginError, Sink, ValueRef};

use crate::error::FormatError;
use crate::header::{self, METADATA_KEY};
use crate::{invalid, BLOB, ENCODING_VERSION};

/// The name a single `tensor` value is stored under.
pub const SINGLE_TENSOR_NAME: &str = "tensor";

/// What [`encode_header`] needs to know of one tensor.
#[derive(Debug, Clone, Copy)]
pub struct TensorSpec<'a> {
    /// Its name.
    pub name: &'a str,
    /// Its dtype name (`F32`, …).
    pub dtype: &'a str,
    /// Its shape.
    pub shape: &'a [u64],
    /// Length of its data in bytes.
    pub len: usize,
}

/// The JSON header (padded) and the order in which to write the tensors'
/// data (indices into `tensors`). Validates names, dtypes and sizes.
pub fn encode_header(
    tensors: &[TensorSpec<'_>],
    metadata: &[(&str, &str)],
) -> Result<(Vec<u8>, Vec<usize>), FormatError> {
    let mut names = HashSet::with_capacity(tensors.len());
    let mut dtypes = Vec::with_capacity(tensors.len());
    for tensor in tensors {
        if tensor.name == METADATA_KEY {
            return Err(FormatError::ReservedName);
        }
        if !names.insert(tensor.name) {
            return Err(FormatError::DuplicateName {
                name: tensor.name.to_owned(),
            });
        }
        let dtype = header::parse_dtype(tensor.dtype).ok_or_else(|| FormatError::UnknownDtype {
            name: tensor.name.to_owned(),
            dtype: json_string(tensor.dtype),
        })?;
        let expected = header::byte_len(tensor.name, dtype, tensor.shape)?;
        if expected != tensor.len as u64 {
            return Err(FormatError::SizeMismatch {
                name: tensor.name.to_owned(),
                dtype: tensor.dtype.to_owned(),
                shape: format!("{:?}", tensor.shape),
                expected: u128::from(expected),
                actual: tensor.len as u64,
            });
        }
        dtypes.push(dtype);
    }
    let mut keys = HashSet::with_capacity(metadata.len());
    if let Some((key, _)) = metadata.iter().find(|(key, _)| !keys.insert(*key)) {
        return Err(FormatError::DuplicateMetadataKey {
            key: (*key).to_owned(),
        });
    }

    let mut order: Vec<usize> = (0..tensors.len()).collect();
    order.sort_by_key(|&i| (Reverse(dtypes[i]), tensors[i].name));

    let mut json = String::from("{");
    if !metadata.is_empty() {
        json.push_str(&json_string(METADATA_KEY));
        json.push_str(":{");
        for (i, (key, value)) in metadata.iter().enumerate() {
            let comma = if i == 0 { "" } else { "," };
            let _ = write!(json, "{comma}{}:{}", json_string(key), json_string(value));
        }
        json.push('}');
    }
    let mut offset = 0u64;
    for &i in &order {
        let tensor = &tensors[i];
        let comma = if json.len() == 1 { "" } else { "," };
        let shape: Vec<String> = tensor.shape.iter().map(u64::to_string).collect();
        let end = offset + tensor.len as u64;
        let _ = write!(
            json,
            "{comma}{}:{{\"dtype\":\"{}\",\"shape\":[{}],\"data_offsets\":[{offset},{end}]}}",
            json_string(tensor.name),
            dtypes[i],
            shape.join(","),
        );
        offset = end;
    }
    json.push('}');
    let mut bytes = json.into_bytes();
    bytes.resize(bytes.len().next_multiple_of(8), b' ');
    Ok((bytes, order))
}

/// Writes a `tensor` or `tensor_map` value as one safetensors blob.
pub fn serialize(value: &ValueRef<'_>, sink: &mut Sink<'_>) -> Result<Metadata, PluginError> {
    let (kind, tensors, metadata) = match value {
        ValueRef::Tensor(tensor) => (
            Kind::Tensor,
            vec![(SINGLE_TENSOR_NAME, *tensor)],
            Vec::new(),
        ),
        ValueRef::TensorMap(map) => (
            Kind::TensorMap,
            map.tensors().collect::<Vec<_>>(),
            map.metadata().collect::<Vec<_>>(),
        ),
        other => {
            return Err(PluginError::unsupported(format!(
                "the tensor plugin stores tensors and tensor maps, not {other:?}"
            )))
        }
    };
    let specs: Vec<TensorSpec<'_>> = tensors
        .iter()
        .map(|(name, tensor)| TensorSpec {
            name,
            dtype: tensor.dtype(),
            shape: tensor.shape(),
            len: tensor.data().len(),
        })
        .collect();
    let (json, order) = encode_header(&specs, &metadata).map_err(invalid)?;

    sink.begin_blob(BLOB)?;
    sink.write_bytes(&(json.len() as u64).to_le_bytes())?;
    sink.write_bytes(&json)?;
    for i in order {
        let data = tensors.get(i).map_or(&[][..], |(_, tensor)| tensor.data());
        if !data.is_empty() {
            sink.write_bytes(data)?;
        }
    }
    Ok(Metadata::new(
        kind.name(),
        encodings::SAFETENSORS,
        ENCODING_VERSION,
    ))
}

/// Validates a whole `.safetensors` file and stores it byte for byte.
pub fn ingest(file: &[u8], sink: &mut Sink<'_>) -> Result<Metadata, PluginError> {
    header::parse(file).map_err(invalid)?;
    sink.blob(BLOB, file)?;
    Ok(Metadata::new(
        Kind::TensorMap.name(),
        encodings::SAFETENSORS,
        ENCODING_VERSION,
    ))
}

fn json_string(text: &str) -> String {
    serde_json::Value::from(text).to_string()
}
