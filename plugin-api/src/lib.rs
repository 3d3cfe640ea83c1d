//! The stable interface between the stowage host and serializer plugins, and
//! the SDK for writing one.
//!
//! A plugin is a `cdylib` that implements [`Plugin`] for one type and calls
//! [`export_plugin!`] once. The SDK hides the ABI: plugin code sees `&str`,
//! `&[u8]`, [`ValueRef`] views and [`Sink`]s, never an `extern "C"` function.
//! Every entry point runs inside `catch_unwind`, so a panic in plugin code is
//! reported to the host as an error instead of crashing it.
//!
//! This crate's version *is* the interface version: a plugin built against
//! 1.x loads in any host speaking 1.y with y ≥ x.
//!
//! ```
//! use stowage_plugin_api::{
//!     encodings, export_plugin, Blobs, Declaration, Kind, Metadata, MetadataRef, Options,
//!     Plugin, PluginError, Sink, Value, ValueRef,
//! };
//!
//! /// Stores `bytes` values as-is.
//! #[derive(Default)]
//! pub struct RawBytes;
//!
//! impl Plugin for RawBytes {
//!     fn declaration(&self) -> Declaration {
//!         Declaration::new("raw-bytes")
//!             .priority(50)
//!             .kinds([Kind::Bytes])
//!             .encoding("raw-bytes")
//!     }
//!
//!     fn serialize(
//!         &self,
//!         value: &ValueRef<'_>,
//!         _options: &Options<'_>,
//!         sink: &mut Sink<'_>,
//!     ) -> Result<Metadata, PluginError> {
//!         let ValueRef::Bytes(bytes) = value else {
//!             return Err(PluginError::unsupported("raw-bytes stores only bytes"));
//!         };
//!         sink.blob("data", bytes)?;
//!         Ok(Metadata::new("bytes", "raw-bytes", 1))
//!     }
//!
//!     fn deserialize<'a>(
//!         &self,
//!         _meta: &MetadataRef<'a>,
//!         blobs: &Blobs<'a>,
//!     ) -> Result<Value<'a>, PluginError> {
//!         let data = blobs
//!             .get("data")
//!             .ok_or_else(|| PluginError::invalid_input("missing blob `data`"))?;
//!         Ok(Value::Bytes(data.into())) // borrows the blob: no copy
//!     }
//! }
//!
//! export_plugin!(RawBytes);
//! # fn main() {}
//! ```
//!
//! Build it with `crate-type = ["cdylib", "rlib"]` and `panic = "unwind"`
//! (the default), then install the library by writing it to a temporary name
//! in the plugins directory and renaming it into place.

pub mod abi;
pub mod arrow;
mod export;
mod kinds;
mod plugin;
mod value;

pub mod testing;

pub use arrow::{ArrowArray, ArrowBatch, ArrowSchema};
pub use kinds::{encodings, Kind};
pub use plugin::{
    generic_description, Blobs, Declaration, ErrorKind, Metadata, MetadataRef, Options, Plugin,
    PluginError, Sink, SNIFF_PREFIX_LEN,
};
pub use value::{
    AbiTree, ArrowRef, ClassSource, ClassSourceRef, ListRef, MapRef, Tensor, TensorMap,
    TensorMapRef, TensorRef, Value, ValueRef,
};

/// Support for [`export_plugin!`]; not part of the public API.
#[doc(hidden)]
pub mod __private {
    pub use crate::abi::{AbiExtV1_1, AbiExtension, AbiProbe, PROBE};
    pub use crate::export::{ext_v1_1, extension, lib_header, Instance, EXT_V1_1_LAYOUT};
    pub use abi_stable::library::LibHeader;
}
