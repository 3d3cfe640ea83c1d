//! The SDK side a plugin author writes against: the [`Plugin`] trait and the
//! small types its methods take and return.
//!
//! Every type here is a plain Rust type or a thin view over an ABI struct;
//! the ABI plumbing lives in [`crate::abi`] and [`crate::export`].

use std::fmt;
use std::io;

use abi_stable::std_types::{RResult, RSlice, RStr};

use crate::abi::{AbiBlob, AbiError, AbiErrorKind, AbiMetadataRef, AbiSink, AbiStrPair};
use crate::kinds::Kind;
use crate::value::{Value, ValueRef};

/// A serializer plugin. Implement this, then call [`crate::export_plugin!`].
///
/// Only [`declaration`](Plugin::declaration), [`serialize`](Plugin::serialize)
/// and [`deserialize`](Plugin::deserialize) are required; the other methods
/// have documented defaults. Every method runs inside `catch_unwind`: a panic
/// becomes an error of kind [`ErrorKind::Panic`] and the host moves on to the
/// next candidate.
pub trait Plugin: Send + Sync + 'static {
    /// Who the plugin is and what it handles. Called once, at load.
    fn declaration(&self) -> Declaration;

    /// Whether the plugin takes this value. The host only asks about kinds
    /// the declaration claims. Default: yes.
    fn can_serialize(&self, value: &ValueRef<'_>) -> bool {
        let _ = value;
        true
    }

    /// Writes the value as one or more named blobs through `sink` and returns
    /// its metadata. Must write at least one blob.
    fn serialize(
        &self,
        value: &ValueRef<'_>,
        options: &Options<'_>,
        sink: &mut Sink<'_>,
    ) -> Result<Metadata, PluginError>;

    /// Whether the plugin can read an artifact with this metadata. The host
    /// only asks plugins whose declaration reads the encoding. Default: yes.
    fn can_deserialize(&self, meta: &MetadataRef<'_>) -> bool {
        let _ = meta;
        true
    }

    /// Rebuilds the value. Byte and text payloads may borrow from `blobs`
    /// (zero-copy): the host keeps them alive as long as the value.
    fn deserialize<'a>(
        &self,
        meta: &MetadataRef<'a>,
        blobs: &Blobs<'a>,
    ) -> Result<Value<'a>, PluginError>;

    /// Whether a file starting with `prefix` (its first
    /// [`SNIFF_PREFIX_LEN`] bytes or fewer) is in this plugin's standard
    /// format. Default: no.
    fn sniff(&self, prefix: &[u8]) -> bool {
        let _ = prefix;
        false
    }

    /// Validates a whole file in the plugin's standard format and stores it
    /// through `sink`. Default: unsupported.
    fn ingest(
        &self,
        file: &[u8],
        options: &Options<'_>,
        sink: &mut Sink<'_>,
    ) -> Result<Metadata, PluginError> {
        let _ = (file, options, sink);
        Err(PluginError::unsupported(
            "this plugin does not ingest files",
        ))
    }

    /// Writes the artifact as one standard-format file through `out` (one
    /// blob). Default: a single-blob artifact is written as that blob.
    fn export(
        &self,
        meta: &MetadataRef<'_>,
        blobs: &Blobs<'_>,
        out: &mut Sink<'_>,
    ) -> Result<(), PluginError> {
        let _ = meta;
        match blobs.single() {
            Some(data) => {
                out.begin_blob("file")?;
                out.write_bytes(data)
            }
            None => Err(PluginError::unsupported(format!(
                "no standard file form for an artifact of {} blobs",
                blobs.len()
            ))),
        }
    }

    /// A short human-readable rendering (the WIRE form, used by `stowage
    /// show`). Default: type, encoding and blob sizes.
    fn describe(&self, meta: &MetadataRef<'_>, blobs: &Blobs<'_>) -> Result<String, PluginError> {
        let _ = blobs;
        Ok(generic_description(meta))
    }
}

/// How many leading bytes of a file `sniff` is shown at most.
pub const SNIFF_PREFIX_LEN: usize = 64 * 1024;

/// The rendering used when a plugin has no `describe` of its own.
pub fn generic_description(meta: &MetadataRef<'_>) -> String {
    let mut out = format!(
        "{} ({} v{})",
        meta.obj_type(),
        meta.encoding(),
        meta.encoding_version()
    );
    for (name, size) in meta.blobs() {
        out.push_str(&format!("\n  blob {name}: {size} bytes"));
    }
    out
}

/// What a plugin declares about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Declaration {
    pub(crate) name: String,
    pub(crate) version: Option<String>,
    pub(crate) priority: u32,
    pub(crate) kinds: Vec<Kind>,
    pub(crate) reads: Vec<String>,
    pub(crate) writes: Vec<String>,
    pub(crate) requires: Vec<(String, String)>,
    pub(crate) option_keys: Vec<String>,
}

impl Declaration {
    /// A plugin named `name`, priority 100, claiming nothing yet. The version
    /// defaults to the plugin crate's own (`export_plugin!` fills it).
    pub fn new(name: impl Into<String>) -> Self {
        Declaration {
            name: name.into(),
            version: None,
            priority: 100,
            kinds: Vec::new(),
            reads: Vec::new(),
            writes: Vec::new(),
            requires: Vec::new(),
            option_keys: Vec::new(),
        }
    }
    /// The plugin's name.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// Overrides the plugin version (semver).
    pub fn version(mut self, version: impl Into<String>) -> Self {
        self.version = Some(version.into());
        self
    }
    /// Default priority: lower is tried first (0–9998; 9999 is the fallback's).
    pub fn priority(mut self, priority: u32) -> Self {
        self.priority = priority;
        self
    }
    /// Value kinds the plugin serializes.
    pub fn kinds(mut self, kinds: impl IntoIterator<Item = Kind>) -> Self {
        self.kinds.extend(kinds);
        self
    }
    /// An encoding the plugin both reads and writes.
    pub fn encoding(self, encoding: &str) -> Self {
        self.reads([encoding]).writes([encoding])
    }
    /// Encodings the plugin reads.
    pub fn reads<'s>(mut self, encodings: impl IntoIterator<Item = &'s str>) -> Self {
        self.reads.extend(encodings.into_iter().map(str::to_owned));
        self
    }
    /// Encodings the plugin writes.
    pub fn writes<'s>(mut self, encodings: impl IntoIterator<Item = &'s str>) -> Self {
        self.writes.extend(encodings.into_iter().map(str::to_owned));
        self
    }
    /// Another plugin this one needs, with a semver requirement (`"^1.2"`).
    pub fn requires(mut self, plugin: impl Into<String>, version_req: impl Into<String>) -> Self {
        self.requires.push((plugin.into(), version_req.into()));
        self
    }
    /// Option keys accepted by `serialize`/`ingest`.
    pub fn options<'s>(mut self, keys: impl IntoIterator<Item = &'s str>) -> Self {
        self.option_keys.extend(keys.into_iter().map(str::to_owned));
        self
    }
}

/// String options for one call: `[plugins.NAME.options]` overridden by CLI
/// flags. The host has already refused keys the declaration does not accept.
#[derive(Clone, Copy)]
pub struct Options<'a>(pub(crate) RSlice<'a, AbiStrPair<'a>>);

impl<'a> Options<'a> {
    /// Options from raw pairs (for in-process tests; the SDK builds these).
    pub fn from_abi(pairs: RSlice<'a, AbiStrPair<'a>>) -> Self {
        Options(pairs)
    }
    /// The value for `key`, if given.
    pub fn get(&self, key: &str) -> Option<&'a str> {
        self.iter().find(|(k, _)| *k == key).map(|(_, v)| v)
    }
    /// Every `(key, value)`.
    pub fn iter(&self) -> impl Iterator<Item = (&'a str, &'a str)> + 'a {
        self.0
            .as_slice()
            .iter()
            .map(|p| (p.key.as_str(), p.value.as_str()))
    }
}

/// Metadata a plugin returns from `serialize`/`ingest`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Metadata {
    pub(crate) obj_type: String,
    pub(crate) encoding: String,
    pub(crate) encoding_version: u32,
    pub(crate) info: Vec<(String, String)>,
}

impl Metadata {
    /// Metadata for a value of `obj_type` written in `encoding` at format
    /// version `encoding_version`.
    pub fn new(obj_type: impl Into<String>, encoding: &str, encoding_version: u32) -> Self {
        Metadata {
            obj_type: obj_type.into(),
            encoding: encoding.to_owned(),
            encoding_version,
            info: Vec::new(),
        }
    }
    /// Adds a `serializer_info` entry.
    pub fn info(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.info.push((key.into(), value.into()));
        self
    }
}

/// Metadata of a stored artifact, lent by the host.
#[derive(Clone, Copy)]
pub struct MetadataRef<'a>(pub(crate) &'a AbiMetadataRef<'a>);

impl<'a> MetadataRef<'a> {
    /// Wraps raw metadata (the SDK and in-process tests build these).
    pub fn from_abi(meta: &'a AbiMetadataRef<'a>) -> Self {
        MetadataRef(meta)
    }
    /// The value type recorded at save time.
    pub fn obj_type(&self) -> &'a str {
        self.0.obj_type.as_str()
    }
    /// The encoding name.
    pub fn encoding(&self) -> &'a str {
        self.0.encoding.as_str()
    }
    /// The encoding's format version.
    pub fn encoding_version(&self) -> u32 {
        self.0.encoding_version
    }
    /// A `serializer_info` entry.
    pub fn info(&self, key: &str) -> Option<&'a str> {
        self.0
            .info
            .as_slice()
            .iter()
            .find(|p| p.key.as_str() == key)
            .map(|p| p.value.as_str())
    }
    /// `(name, size)` of every blob, in write order.
    pub fn blobs(&self) -> impl Iterator<Item = (&'a str, u64)> + 'a {
        let names = self.0.blob_names.as_slice().iter().map(|n| n.as_str());
        names.zip(self.0.blob_sizes.as_slice().iter().copied())
    }
}

/// The blobs of a stored artifact, lent by the host (possibly memory-mapped).
#[derive(Clone, Copy)]
pub struct Blobs<'a>(pub(crate) RSlice<'a, AbiBlob<'a>>);

impl<'a> Blobs<'a> {
    /// Wraps raw blobs (the SDK and in-process tests build these).
    pub fn from_abi(blobs: RSlice<'a, AbiBlob<'a>>) -> Self {
        Blobs(blobs)
    }
    /// The blob named `name`.
    pub fn get(&self, name: &str) -> Option<&'a [u8]> {
        self.iter().find(|(n, _)| *n == name).map(|(_, d)| d)
    }
    /// The only blob, if there is exactly one.
    pub fn single(&self) -> Option<&'a [u8]> {
        match self.0.as_slice() {
            [only] => Some(only.data.as_slice()),
            _ => None,
        }
    }
    /// Number of blobs.
    pub fn len(&self) -> usize {
        self.0.len()
    }
    /// Whether there is no blob.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    /// `(name, bytes)` in write order.
    pub fn iter(&self) -> impl Iterator<Item = (&'a str, &'a [u8])> + 'a {
        self.0
            .as_slice()
            .iter()
            .map(|b| (b.name.as_str(), b.data.as_slice()))
    }
}

/// Where `serialize`, `ingest` and `export` write: named blobs, streamed.
/// Also an [`io::Write`] into the current blob, so format writers can stream
/// straight into the store without an intermediate buffer.
pub struct Sink<'s>(pub(crate) &'s mut AbiSink);

impl<'s> Sink<'s> {
    /// Wraps a raw sink (the SDK and in-process tests build these).
    pub fn from_abi(sink: &'s mut AbiSink) -> Self {
        Sink(sink)
    }
    /// Starts a new blob named `name`; later writes go to it.
    pub fn begin_blob(&mut self, name: &str) -> Result<(), PluginError> {
        // SAFETY: `ctx` and the callbacks come from the host, which promises
        // they are valid for the call that lent this sink.
        let result = unsafe { (self.0.begin_blob)(self.0.ctx, RStr::from_str(name)) };
        from_abi_result(result)
    }
    /// Appends bytes to the current blob.
    pub fn write_bytes(&mut self, bytes: &[u8]) -> Result<(), PluginError> {
        // SAFETY: as in `begin_blob`.
        let result = unsafe { (self.0.write)(self.0.ctx, RSlice::from_slice(bytes)) };
        from_abi_result(result)
    }
    /// Writes a whole blob in one go.
    pub fn blob(&mut self, name: &str, bytes: &[u8]) -> Result<(), PluginError> {
        self.begin_blob(name)?;
        self.write_bytes(bytes)
    }
}

impl io::Write for Sink<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_bytes(buf).map_err(io::Error::other)?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn from_abi_result(result: RResult<(), AbiError>) -> Result<(), PluginError> {
    result.into_result().map_err(PluginError::from_abi)
}

/// What kind of failure a [`PluginError`] reports.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The input is malformed or violates the format.
    InvalidInput,
    /// The plugin does not handle this value, option or operation.
    Unsupported,
    /// A bug or resource failure inside the plugin.
    Internal,
    /// Plugin code panicked (set by the SDK, not by plugins).
    Panic,
}

impl ErrorKind {
    pub(crate) fn to_abi(self) -> AbiErrorKind {
        match self {
            ErrorKind::InvalidInput => AbiErrorKind::INVALID_INPUT,
            ErrorKind::Unsupported => AbiErrorKind::UNSUPPORTED,
            ErrorKind::Internal => AbiErrorKind::INTERNAL,
            ErrorKind::Panic => AbiErrorKind::PANIC,
        }
    }
    /// Reads a wire kind; unknown kinds read as `Internal`.
    pub fn from_abi(kind: AbiErrorKind) -> Self {
        match kind {
            AbiErrorKind::INVALID_INPUT => ErrorKind::InvalidInput,
            AbiErrorKind::UNSUPPORTED => ErrorKind::Unsupported,
            AbiErrorKind::PANIC => ErrorKind::Panic,
            _ => ErrorKind::Internal,
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ErrorKind::InvalidInput => "invalid input",
            ErrorKind::Unsupported => "unsupported",
            ErrorKind::Internal => "internal error",
            ErrorKind::Panic => "panic",
        })
    }
}

/// An error a plugin returns: a kind and a one-line, lowercase message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginError {
    /// The kind.
    pub kind: ErrorKind,
    /// The message.
    pub message: String,
}

impl PluginError {
    /// An error of `kind`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        PluginError {
            kind,
            message: message.into(),
        }
    }
    /// [`ErrorKind::InvalidInput`].
    pub fn invalid_input(message: impl Into<String>) -> Self {
        PluginError::new(ErrorKind::InvalidInput, message)
    }
    /// [`ErrorKind::Unsupported`].
    pub fn unsupported(message: impl Into<String>) -> Self {
        PluginError::new(ErrorKind::Unsupported, message)
    }
    /// [`ErrorKind::Internal`].
    pub fn internal(message: impl Into<String>) -> Self {
        PluginError::new(ErrorKind::Internal, message)
    }
    /// Reads a wire error.
    pub fn from_abi(error: AbiError) -> Self {
        PluginError::new(ErrorKind::from_abi(error.kind), error.message.into_string())
    }
    pub(crate) fn into_abi(self) -> AbiError {
        AbiError {
            kind: self.kind.to_abi(),
            message: self.message.into(),
        }
    }
}

impl fmt::Display for PluginError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind, self.message)
    }
}

impl std::error::Error for PluginError {}
