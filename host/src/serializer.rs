//! The host's view of a serializer, whether a loaded plugin
//! (`loader::ForeignPlugin`) or the built-in MessagePack fallback
//! ([`crate::fallback`]): one trait, plain Rust types, no ABI.
//!
//! Invariant: nothing here names an ABI type; the loader converts at its
//! edge.
//!
//! It also owns the rules a declaration is checked against, which config,
//! loader and fallback all read: the plugin-name rule
//! ([`is_valid_plugin_name`]), the highest plugin priority
//! ([`MAX_PLUGIN_PRIORITY`]) and the interface version the host speaks
//! ([`host_interface`]). This module imports only value types, plugin-api
//! and the leaf `loader/convert.rs`, so every side imports them without a
//! circle.
//!
//! Decision: `CallValue` keeps its cache of the ABI form
//! (`PreparedValue`) here, opaque, because the `Serializer` trait passes a
//! `CallValue` to every candidate of one dispatch and the form must be built
//! once for all of them, whichever serializer (foreign or the fallback) is
//! asked. The type comes from `loader/convert.rs`, a leaf that names only
//! value types and plugin-api (it reports a malformed plugin value with its
//! own error, never a [`CallError`]), so this module stays below the loader.

use std::cell::RefCell;
use std::fmt;
use std::io::Write;

use semver::{Version, VersionReq};
use stowage_plugin_api::abi::{INTERFACE_MAJOR, INTERFACE_MINOR};
pub use stowage_plugin_api::ErrorKind;

use crate::loader::convert::PreparedValue;
use crate::store::{PartRecord, StoreError};
use crate::value::{Buffer, Kind, Value};

/// What a serializer declared about itself, validated.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct PluginInfo {
    /// Unique name.
    pub name: String,
    /// Plugin version.
    pub version: Version,
    /// Interface version it was built against (`major.minor.patch`).
    pub interface_version: String,
    /// Default priority (lower first).
    pub default_priority: u32,
    /// Kinds it claims.
    pub kinds: Vec<Kind>,
    /// Encodings it reads.
    pub reads: Vec<String>,
    /// Encodings it writes.
    pub writes: Vec<String>,
    /// Plugins it requires.
    pub requires: Vec<(String, VersionReq)>,
    /// Option keys it accepts.
    pub option_keys: Vec<String>,
    /// Whether it has the 1.1 `describe` entry point.
    pub has_describe: bool,
}

/// Highest priority a plugin may have; configured values above it are clamped.
pub const MAX_PLUGIN_PRIORITY: u32 = 9998;

/// Whether `name` can name a plugin: `[A-Za-z0-9_-]+`.
pub fn is_valid_plugin_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The host's interface version, `major.minor`.
pub fn host_interface() -> String {
    format!("{INTERFACE_MAJOR}.{INTERFACE_MINOR}")
}

/// A failed call into a serializer: the serializer's own kind and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallError {
    /// What kind of failure.
    pub kind: ErrorKind,
    /// The serializer's message, verbatim.
    pub message: String,
}

impl CallError {
    /// An error of `kind`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        CallError {
            kind,
            message: message.into(),
        }
    }
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind, self.message)
    }
}

/// Where serialized blobs go (the store's writer, or memory in tests).
///
/// The `String` errors are what the serializer is told (they cross the
/// ABI). A failure that is the host's own — the store could not take the
/// bytes — is kept typed on this side of the sink and handed back through
/// [`BlobSink::take_host_failure`] after the call, so dispatch reports it as
/// itself and never blames the serializer for it.
pub trait BlobSink {
    /// Starts a blob named `name`.
    fn begin_blob(&mut self, name: &str) -> Result<(), String>;
    /// Appends to the current blob.
    fn write(&mut self, bytes: &[u8]) -> Result<(), String>;
    /// The host-side failure behind an error this sink returned, if any
    /// (the default: a sink whose failures are all the serializer's).
    fn take_host_failure(&mut self) -> Option<StoreError> {
        None
    }
}

/// A sink that keeps blobs in memory.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct MemorySink {
    /// `(name, bytes)` in write order.
    pub blobs: Vec<(String, Vec<u8>)>,
}

impl BlobSink for MemorySink {
    fn begin_blob(&mut self, name: &str) -> Result<(), String> {
        if self.blobs.iter().any(|(n, _)| n == name) {
            return Err(format!("blob {name} written twice"));
        }
        self.blobs.push((name.to_owned(), Vec::new()));
        Ok(())
    }
    fn write(&mut self, bytes: &[u8]) -> Result<(), String> {
        match self.blobs.last_mut() {
            Some((_, data)) => {
                data.extend_from_slice(bytes);
                Ok(())
            }
            None => Err("write before begin_blob".to_owned()),
        }
    }
}

/// What `serialize`/`ingest` report besides the blobs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    /// The value's type.
    pub obj_type: String,
    /// Encoding name.
    pub encoding: String,
    /// Encoding format version.
    pub encoding_version: u32,
    /// `serializer_info`.
    pub info: Vec<(String, String)>,
    /// A composite's parts (empty for every other serializer).
    pub parts: Vec<PartRecord>,
}

/// Metadata of a stored artifact, as handed to `deserialize` and friends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArtifactMeta {
    /// The value's type.
    pub obj_type: String,
    /// Encoding name.
    pub encoding: String,
    /// Encoding format version.
    pub encoding_version: u32,
    /// `serializer_info`.
    pub info: Vec<(String, String)>,
    /// `(name, size)` of each blob.
    pub blobs: Vec<(String, u64)>,
}

/// A value on its way into a dispatch: the host value plus its ABI form,
/// built at most once however many plugins are asked.
pub(crate) struct CallValue<'v> {
    value: &'v Value,
    prepared: RefCell<Option<PreparedValue<'v>>>,
    /// The shared-memory form isolated plugins read (`loader/isolated.rs`),
    /// likewise built once per dispatch.
    shared: RefCell<Option<Box<dyn std::any::Any>>>,
}

impl<'v> CallValue<'v> {
    /// Wraps a value for one dispatch.
    pub fn new(value: &'v Value) -> Self {
        CallValue {
            value,
            prepared: RefCell::new(None),
            shared: RefCell::new(None),
        }
    }
    /// The host value.
    pub fn value(&self) -> &'v Value {
        self.value
    }
    /// Runs `f` on the ABI form, building it on first use (the loader's
    /// business).
    pub(crate) fn with_prepared<R>(&self, f: impl FnOnce(&mut PreparedValue<'v>) -> R) -> R {
        let mut slot = self.prepared.borrow_mut();
        let prepared = slot.get_or_insert_with(|| PreparedValue::new(self.value));
        f(prepared)
    }
    /// Runs `f` on a form of type `T` built by `build` on first use (the
    /// isolated loader's shared-memory copy of the value).
    pub(crate) fn with_shared<T: 'static, R>(
        &self,
        build: impl FnOnce(&'v Value) -> T,
        f: impl FnOnce(&T) -> R,
    ) -> R {
        let mut slot = self.shared.borrow_mut();
        if let Some(form) = slot.as_ref().and_then(|b| b.downcast_ref::<T>()) {
            return f(form);
        }
        let form = build(self.value);
        let result = f(&form);
        *slot = Some(Box::new(form));
        result
    }
}

/// A serializer the registry can dispatch to.
pub(crate) trait Serializer: Send + Sync {
    /// Its declaration.
    fn info(&self) -> &PluginInfo;
    /// Whether it takes the value.
    fn can_serialize(&self, value: &CallValue<'_>) -> Result<bool, CallError>;
    /// Writes the value's blobs.
    fn serialize(
        &self,
        value: &CallValue<'_>,
        options: &[(String, String)],
        sink: &mut dyn BlobSink,
    ) -> Result<Written, CallError>;
    /// Whether it reads an artifact with this metadata.
    fn can_deserialize(&self, meta: &ArtifactMeta) -> Result<bool, CallError>;
    /// Rebuilds the value (may point into `blobs`, which it keeps alive).
    fn deserialize(
        &self,
        meta: &ArtifactMeta,
        blobs: &[(String, Buffer)],
    ) -> Result<Value, CallError>;
    /// Whether a file starting with `prefix` is in its format.
    fn sniff(&self, prefix: &[u8]) -> Result<bool, CallError>;
    /// Validates and stores a file in its format.
    fn ingest(
        &self,
        file: &[u8],
        options: &[(String, String)],
        sink: &mut dyn BlobSink,
    ) -> Result<Written, CallError>;
    /// Writes the artifact as one standard-format file.
    fn export(
        &self,
        meta: &ArtifactMeta,
        blobs: &[(String, Buffer)],
        out: &mut dyn Write,
    ) -> Result<(), CallError>;
    /// The WIRE rendering; `Ok(None)` when the serializer has no `describe`.
    fn describe(
        &self,
        meta: &ArtifactMeta,
        blobs: &[(String, Buffer)],
    ) -> Result<Option<String>, CallError>;
}
