//! stowage's tensor serializer: `tensor` and `tensor_map` values stored as
//! [safetensors](https://github.com/huggingface/safetensors) files.
//!
//! - **Format**: encoding [`encodings::SAFETENSORS`], version
//!   [`ENCODING_VERSION`]. One blob, [`BLOB`], holding a standard
//!   `.safetensors` file: what `stowage get NAME -o x.safetensors` writes is
//!   that blob, and Python's `safetensors.numpy.load_file` reads it.
//! - **Values**: every dtype the `safetensors` crate defines (`BOOL`, `U8` …
//!   `I64`, `F16`, `BF16`, `F32`, `F64`, `C64`, the `F8_*`, `F6_*` and `F4`
//!   variants), 0-d scalars, zero-size tensors, `__metadata__` strings. A
//!   single `tensor` is stored as a file holding one tensor named
//!   [`SINGLE_TENSOR_NAME`].
//! - **Zero-copy**: `serialize` streams the header and then each tensor's
//!   bytes straight into the host's sink; `deserialize` returns tensors
//!   borrowing from the blob, which the host memory-maps on `load_mapped`.
//! - **Validation** (`deserialize`, `ingest`, `describe`): the header size
//!   (at least 2, at most [`MAX_HEADER_SIZE`] = 100 MB, within the file);
//!   UTF-8 JSON object; known dtypes; shapes of non-negative integers whose
//!   byte size does not overflow and equals the tensor's byte length; offsets
//!   in bounds, not reversed, tiling the data section without overlap or gap;
//!   unique names; string metadata. Each failure is one [`FormatError`]
//!   variant, reported as `InvalidInput`; no input panics.
//!
//! The plugin does no file or network I/O: bytes arrive as arguments and
//! leave through the sink.
//!
//! ```
//! use stowage_plugin_api::testing::PluginTest;
//! use stowage_plugin_api::{Tensor, TensorMap, Value};
//! use stowage_tensor::TensorPlugin;
//!
//! let test = PluginTest::new(TensorPlugin);
//! let mut value = Value::Tensor(Tensor {
//!     dtype: "F32".into(),
//!     shape: vec![2],
//!     data: [1.0f32, 2.0].iter().flat_map(|x| x.to_le_bytes()).collect(),
//! });
//! let stored = test.serialize(&mut value, &[]).unwrap();
//! let file = &stored.blobs[0].1; // a complete .safetensors file
//! assert!(file[8..].starts_with(br#"{"tensor":{"dtype":"F32","shape":[2]"#));
//! let back = test.deserialize(&stored.metadata, &stored.blobs).unwrap();
//! assert!(matches!(back, Value::Tensor(t) if t.shape == [2]));
//! ```

#![deny(unsafe_code)]

mod error;
mod header;
mod read;
mod write;

pub use error::FormatError;
pub use header::{parse, sniff, Entry, Header, MAX_HEADER_SIZE};
pub use read::MAX_SHOWN_VALUES;
pub use write::{encode_header, TensorSpec, SINGLE_TENSOR_NAME};

use stowage_plugin_api::{
    encodings, export_plugin, Blobs, Declaration, Kind, Metadata, MetadataRef, Options, Plugin,
    PluginError, Sink, Value, ValueRef,
};

/// The version of the stored form this plugin writes and reads.
pub const ENCODING_VERSION: u32 = 1;

/// The name of the one blob of an artifact.
pub const BLOB: &str = "data";

/// The tensor plugin.
#[derive(Debug, Default)]
pub struct TensorPlugin;

impl Plugin for TensorPlugin {
    fn declaration(&self) -> Declaration {
        Declaration::new("tensor")
            .priority(10)
            .kinds([Kind::Tensor, Kind::TensorMap])
            .encoding(encodings::SAFETENSORS)
    }

    fn serialize(
        &self,
        value: &ValueRef<'_>,
        _options: &Options<'_>,
        sink: &mut Sink<'_>,
    ) -> Result<Metadata, PluginError> {
        write::serialize(value, sink)
    }

    fn can_deserialize(&self, meta: &MetadataRef<'_>) -> bool {
        meta.encoding_version() == ENCODING_VERSION
            && [Kind::Tensor.name(), Kind::TensorMap.name()].contains(&meta.obj_type())
    }

    fn deserialize<'a>(
        &self,
        meta: &MetadataRef<'a>,
        blobs: &Blobs<'a>,
    ) -> Result<Value<'a>, PluginError> {
        read::deserialize(meta, blobs)
    }

    fn sniff(&self, prefix: &[u8]) -> bool {
        header::sniff(prefix)
    }

    fn ingest(
        &self,
        file: &[u8],
        _options: &Options<'_>,
        sink: &mut Sink<'_>,
    ) -> Result<Metadata, PluginError> {
        write::ingest(file, sink)
    }

    // `export` keeps the SDK default: the one blob *is* the standard file.

    fn describe(&self, meta: &MetadataRef<'_>, blobs: &Blobs<'_>) -> Result<String, PluginError> {
        read::describe(meta, blobs)
    }
}

/// A [`FormatError`] as the host sees it.
fn invalid(error: FormatError) -> PluginError {
    PluginError::invalid_input(error.to_string())
}

#[cfg(test)]
mod tests;

export_plugin!(TensorPlugin);
