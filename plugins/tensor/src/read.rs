//! Reading: a stored safetensors blob becomes a `tensor` or `tensor_map`
//! whose data borrows from the blob (zero-copy: with `load_mapped` the
//! tensors point into the memory-mapped file), and the WIRE rendering.
//!
//! Invariant: the blob is validated in full by [`header::parse`] before any
//! tensor is handed out.
//!
//! Decision: `describe` shows every tensor's name, dtype, shape and size, and
//! the values of tensors of at most [`MAX_SHOWN_VALUES`] elements whose dtype
//! has a plain numeric reading (f8, f4 and f6 bytes are shown in hex).

use std::borrow::Cow;
use std::fmt::Write as _;

use safetensors::Dtype;
use stowage_plugin_api::{Blobs, Kind, MetadataRef, PluginError, Tensor, TensorMap, Value};

use crate::header::{self, Entry, Header};
use crate::{invalid, BLOB};

/// Tensors with at most this many elements have their values shown.
pub const MAX_SHOWN_VALUES: usize = 8;

fn parse<'a>(blobs: &Blobs<'a>) -> Result<Header<'a>, PluginError> {
    let file = blobs
        .get(BLOB)
        .ok_or_else(|| PluginError::invalid_input(format!("missing blob `{BLOB}`")))?;
    header::parse(file).map_err(invalid)
}

fn tensor(entry: Entry<'_>) -> (Cow<'_, str>, Tensor<'_>) {
    let tensor = Tensor {
        dtype: Cow::Owned(entry.dtype.to_string()),
        shape: entry.shape,
        data: Cow::Borrowed(entry.data),
    };
    (Cow::Owned(entry.name), tensor)
}

/// Rebuilds the value, borrowing every tensor's data from the blob.
pub fn deserialize<'a>(
    meta: &MetadataRef<'a>,
    blobs: &Blobs<'a>,
) -> Result<Value<'a>, PluginError> {
    let header = parse(blobs)?;
    if meta.obj_type() == Kind::Tensor.name() {
        let count = header.tensors.len();
        let mut tensors = header.tensors.into_iter();
        return match (tensors.next(), tensors.next()) {
            (Some(only), None) => Ok(Value::Tensor(tensor(only).1)),
            _ => Err(PluginError::invalid_input(format!(
                "a stored tensor holds exactly one tensor, found {count}"
            ))),
        };
    }
    Ok(Value::TensorMap(TensorMap {
        tensors: header.tensors.into_iter().map(tensor).collect(),
        metadata: header
            .metadata
            .into_iter()
            .map(|(k, v)| (Cow::Owned(k), Cow::Owned(v)))
            .collect(),
    }))
}

/// The WIRE rendering: one line per tensor, then the metadata.
pub fn describe(meta: &MetadataRef<'_>, blobs: &Blobs<'_>) -> Result<String, PluginError> {
    let header = parse(blobs)?;
    let data: usize = header.tensors.iter().map(|t| t.data.len()).sum();
    let mut out = format!(
        "{} ({} v{}): {} tensor{}, {data} bytes of data",
        meta.obj_type(),
        meta.encoding(),
        meta.encoding_version(),
        header.tensors.len(),
        if header.tensors.len() == 1 { "" } else { "s" },
    );
    for entry in &header.tensors {
        let _ = write!(
            out,
            "\n  {}: {} {:?}, {} bytes",
            entry.name,
            entry.dtype,
            entry.shape,
            entry.data.len()
        );
        if let Some(values) = values(entry) {
            let _ = write!(out, " = [{}]", values.join(", "));
        }
    }
    for (key, value) in &header.metadata {
        let _ = write!(out, "\n  metadata {key} = {value:?}");
    }
    Ok(out)
}

/// The values of a small tensor, rendered.
fn values(entry: &Entry<'_>) -> Option<Vec<String>> {
    let width = entry.dtype.bitsize() / 8;
    if !entry.dtype.bitsize().is_multiple_of(8) || width == 0 {
        return None;
    }
    let count = entry.data.len() / width;
    if count > MAX_SHOWN_VALUES {
        return None;
    }
    let render = |bytes: &[u8]| -> String {
        let mut le = [0u8; 8];
        le[..bytes.len()].copy_from_slice(bytes);
        let bits = u64::from_le_bytes(le);
        match entry.dtype {
            Dtype::BOOL => (bits != 0).to_string(),
            Dtype::U8 | Dtype::U16 | Dtype::U32 | Dtype::U64 => bits.to_string(),
            Dtype::I8 => (bits as u8 as i8).to_string(),
            Dtype::I16 => (bits as u16 as i16).to_string(),
            Dtype::I32 => (bits as u32 as i32).to_string(),
            Dtype::I64 => (bits as i64).to_string(),
            Dtype::F16 => f16_to_f32(bits as u16).to_string(),
            Dtype::BF16 => f32::from_bits((bits as u32) << 16).to_string(),
            Dtype::F32 => f32::from_bits(bits as u32).to_string(),
            Dtype::F64 => f64::from_bits(bits).to_string(),
            _ => format!("0x{bits:0w$x}", w = bytes.len() * 2),
        }
    };
    Some(entry.data.chunks_exact(width).map(render).collect())
}

/// IEEE 754 half precision to single precision (exact).
fn f16_to_f32(half: u16) -> f32 {
    let sign = if half & 0x8000 != 0 { -1.0 } else { 1.0 };
    let exponent = u32::from((half >> 10) & 0x1f);
    let fraction = u32::from(half & 0x3ff);
    let magnitude = match exponent {
        0 => fraction as f32 * 2f32.powi(-24),
        0x1f if fraction == 0 => f32::INFINITY,
        0x1f => f32::NAN,
        _ => f32::from_bits(((exponent + 112) << 23) | (fraction << 13)),
    };
    sign * magnitude
}
