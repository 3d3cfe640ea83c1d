//! The frozen binary interface between the host and a plugin library.
//!
//! Everything here is read by the host's loader and written by the SDK in
//! `export_plugin!`; plugin authors never touch it. Three exported symbols
//! make up a plugin:
//!
//! - `stowage_plugin_probe` ([`AbiProbe`]): a plain `#[repr(C)]` static holding
//!   the interface version. Its layout never changes, so the host reads it
//!   *before* the abi_stable layout check and can refuse a plugin built against
//!   another major or a newer minor with a one-line reason.
//! - the abi_stable root module ([`PluginModRef`]): the 1.0 entry points.
//! - one extension symbol per later minor (`stowage_plugin_ext_v1_1`,
//!   [`AbiExtension`]): a table of the entry points that minor added, carrying
//!   its own abi_stable [`TypeLayout`] which the host checks separately. An
//!   older plugin simply lacks the symbol.
//!
//! **Frozen:** every type reachable from the root module or an extension table
//! keeps its layout forever. abi_stable lets a *library* be newer than its
//! loader, never the reverse: one more root-module field or enum variant makes
//! a newer host reject every older plugin. So the root module never grows
//! (new entry points go in a new extension symbol) and values use a fixed
//! layout with a kind tag (new kinds are new tag values, see
//! [`crate::Kind`]).
//!
//! Decision: the `reserved` words in [`AbiValue`] and the `extra` pairs in
//! [`AbiDeclaration`] are room for later minors; 1.x writers zero/empty them
//! and readers ignore them.

use std::ffi::c_void;

use abi_stable::{
    declare_root_module_statics,
    library::RootModule,
    package_version_strings,
    sabi_types::VersionStrings,
    std_types::{RResult, RSlice, RStr, RString, RVec},
    type_layout::TypeLayout,
    StableAbi,
};

use crate::arrow::ArrowBatch;

/// The interface major version this crate speaks.
pub const INTERFACE_MAJOR: u32 = 1;
/// The interface minor version this crate speaks.
pub const INTERFACE_MINOR: u32 = 1;
/// The interface patch version (informational only).
pub const INTERFACE_PATCH: u32 = 0;

/// Name of the probe symbol (NUL-terminated for `dlsym`).
pub const PROBE_SYMBOL: &[u8] = b"stowage_plugin_probe\0";
/// Name of the extension symbol added in interface 1.1.
pub const EXT_V1_1_SYMBOL: &[u8] = b"stowage_plugin_ext_v1_1\0";
/// Magic bytes at the start of the probe.
pub const PROBE_MAGIC: [u8; 8] = *b"STOWAGE\x01";

/// The probe: what interface a library was built against. Frozen since 1.0,
/// deliberately not an abi_stable type so it can be read before any check.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AbiProbe {
    /// Always [`PROBE_MAGIC`].
    pub magic: [u8; 8],
    /// Size of this struct in bytes, for sanity checking.
    pub size: u32,
    /// Interface major version.
    pub major: u32,
    /// Interface minor version.
    pub minor: u32,
    /// Interface patch version.
    pub patch: u32,
}

/// The probe this version of the crate exports.
pub const PROBE: AbiProbe = AbiProbe {
    magic: PROBE_MAGIC,
    size: std::mem::size_of::<AbiProbe>() as u32,
    major: INTERFACE_MAJOR,
    minor: INTERFACE_MINOR,
    patch: INTERFACE_PATCH,
};

/// A value's kind, as the tag of [`crate::Kind::tag`]. Unknown tags are legal
/// on the wire: they are kinds added after the reader was built.
#[repr(transparent)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq)]
pub struct AbiKind(pub u32);

/// `flags` bit on a `class_source` value: `text2` holds the module.
pub const FLAG_HAS_MODULE: u32 = 1;

/// One value node, borrowed for the duration of a call (or, inside an
/// [`AbiOwnedValue`], for the life of its owner).
///
/// Fixed layout since 1.0. Which slots a kind uses:
///
/// | kind           | slots |
/// |----------------|-------|
/// | `null`         | none |
/// | `bool`         | `scalar` (0 or 1) |
/// | `int`          | `scalar` (the i64's bits) |
/// | `float`        | `scalar` (the f64's bits) |
/// | `string`       | `text` |
/// | `bytes`        | `bytes` |
/// | `list`         | `items` |
/// | `map`          | `keys[i]` → `items[i]` |
/// | `tensor`       | `text` = dtype, `dims` = shape, `bytes` = data |
/// | `tensor_map`   | `keys[i]` → `items[i]` (tensors), `pairs` = metadata |
/// | `arrow`        | `arrow`, `arrow_len` |
/// | `class_source` | `text` = qualname, `text2` = module if `flags & FLAG_HAS_MODULE`, `bytes` = UTF-8 source |
///
/// Arrow batches are handed over, not lent: the receiver of a value may move a
/// batch out (read it and clear the original's `release`); whatever is left
/// with a `release` is released by the value's owner after the call.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, Copy)]
pub struct AbiValue<'a> {
    /// The kind tag.
    pub kind: AbiKind,
    /// Kind-specific flags.
    pub flags: u32,
    /// bool / int / float payload.
    pub scalar: u64,
    /// First text slot.
    pub text: RStr<'a>,
    /// Second text slot.
    pub text2: RStr<'a>,
    /// Byte slot.
    pub bytes: RSlice<'a, u8>,
    /// Dimension slot.
    pub dims: RSlice<'a, u64>,
    /// Key slot (parallel to `items`).
    pub keys: RSlice<'a, RStr<'a>>,
    /// Child values.
    pub items: RSlice<'a, AbiValue<'a>>,
    /// String pairs.
    pub pairs: RSlice<'a, AbiStrPair<'a>>,
    /// Arrow batches (may be null when `arrow_len` is 0).
    pub arrow: *mut ArrowBatch,
    /// Number of batches at `arrow`.
    pub arrow_len: usize,
    /// Zero in 1.x; room for later minors.
    pub reserved: [u64; 4],
}

impl<'a> AbiValue<'a> {
    /// A value of `kind` with every slot empty.
    pub const fn empty(kind: AbiKind) -> Self {
        AbiValue {
            kind,
            flags: 0,
            scalar: 0,
            text: RStr::from_str(""),
            text2: RStr::from_str(""),
            bytes: RSlice::from_slice(&[]),
            dims: RSlice::from_slice(&[]),
            keys: RSlice::from_slice(&[]),
            items: RSlice::from_slice(&[]),
            pairs: RSlice::from_slice(&[]),
            arrow: std::ptr::null_mut(),
            arrow_len: 0,
            reserved: [0; 4],
        }
    }
}

/// A borrowed key/value string pair (options, metadata, `serializer_info`).
#[repr(C)]
#[derive(StableAbi, Debug, Clone, Copy)]
pub struct AbiStrPair<'a> {
    /// The key.
    pub key: RStr<'a>,
    /// The value.
    pub value: RStr<'a>,
}

/// An owned key/value string pair.
#[repr(C)]
#[derive(StableAbi, Debug, Clone)]
pub struct AbiStringPair {
    /// The key.
    pub key: RString,
    /// The value.
    pub value: RString,
}

/// A value the plugin produced (by `deserialize`), owned by the plugin until
/// the host calls `release(owner)` exactly once. `value` borrows from the owner
/// and from the blobs the host passed in; the host keeps both alive until it
/// releases the owner.
#[repr(C)]
#[derive(StableAbi, Debug)]
pub struct AbiOwnedValue {
    /// The value; its lifetime is really "until release".
    pub value: AbiValue<'static>,
    /// Opaque owner; only the plugin's `release` may touch it.
    pub owner: *mut c_void,
    /// Frees the owner. Called once by the host.
    pub release: Option<unsafe extern "C" fn(*mut c_void)>,
}

/// What kind of failure an [`AbiError`] reports. A `u8` newtype rather than an
/// enum so that a later kind is not a layout change; unknown kinds read as
/// `INTERNAL`.
#[repr(transparent)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq)]
pub struct AbiErrorKind(pub u8);

impl AbiErrorKind {
    /// The input is malformed or violates the format.
    pub const INVALID_INPUT: AbiErrorKind = AbiErrorKind(1);
    /// The plugin does not handle this value, option or operation.
    pub const UNSUPPORTED: AbiErrorKind = AbiErrorKind(2);
    /// A bug or resource failure inside the plugin.
    pub const INTERNAL: AbiErrorKind = AbiErrorKind(3);
    /// Plugin code panicked; the SDK caught it.
    pub const PANIC: AbiErrorKind = AbiErrorKind(4);
}

/// An error crossing the boundary: a kind and a one-line message.
#[repr(C)]
#[derive(StableAbi, Debug, Clone)]
pub struct AbiError {
    /// The kind.
    pub kind: AbiErrorKind,
    /// Lowercase, one line.
    pub message: RString,
}

/// What a plugin declares about itself, returned by `init`.
#[repr(C)]
#[derive(StableAbi, Debug, Clone)]
pub struct AbiDeclaration {
    /// Unique plugin name.
    pub name: RString,
    /// Plugin version (semver).
    pub version: RString,
    /// Default priority; lower is tried first.
    pub default_priority: u32,
    /// Kind names the plugin claims.
    pub kinds: RVec<RString>,
    /// Encodings it reads.
    pub reads: RVec<RString>,
    /// Encodings it writes.
    pub writes: RVec<RString>,
    /// Other plugins it requires: name → semver requirement.
    pub requires: RVec<AbiStringPair>,
    /// Option keys it accepts.
    pub option_keys: RVec<RString>,
    /// Empty in 1.x; room for later minors.
    pub extra: RVec<AbiStringPair>,
}

/// Metadata a plugin returns from `serialize`/`ingest`. Blob names and sizes
/// are known to the host from the sink, so they are not repeated here.
#[repr(C)]
#[derive(StableAbi, Debug, Clone)]
pub struct AbiMetadata {
    /// The value's type as the plugin names it (e.g. `tensor`).
    pub obj_type: RString,
    /// The encoding name (see [`crate::encodings`]).
    pub encoding: RString,
    /// The encoding's format version.
    pub encoding_version: u32,
    /// Free-form `serializer_info`.
    pub info: RVec<AbiStringPair>,
}

/// Metadata of a stored artifact, lent to `can_deserialize` and friends.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, Copy)]
pub struct AbiMetadataRef<'a> {
    /// The value's type.
    pub obj_type: RStr<'a>,
    /// The encoding name.
    pub encoding: RStr<'a>,
    /// The encoding's format version.
    pub encoding_version: u32,
    /// `serializer_info`.
    pub info: RSlice<'a, AbiStrPair<'a>>,
    /// Blob names, in the order they were written.
    pub blob_names: RSlice<'a, RStr<'a>>,
    /// Blob sizes, parallel to `blob_names`.
    pub blob_sizes: RSlice<'a, u64>,
}

/// A named blob lent to `deserialize`, `export` and `describe`.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, Copy)]
pub struct AbiBlob<'a> {
    /// The blob's name.
    pub name: RStr<'a>,
    /// Its bytes (possibly memory-mapped).
    pub data: RSlice<'a, u8>,
}

/// Where a plugin writes blobs. `begin_blob` starts a named blob; `write`
/// appends to the current one. The host owns `ctx`; the plugin passes it back
/// unchanged and only during the call that lent the sink.
#[repr(C)]
#[derive(StableAbi, Debug)]
pub struct AbiSink {
    /// Host state.
    pub ctx: *mut c_void,
    /// Starts a new blob named `name`.
    pub begin_blob: unsafe extern "C" fn(*mut c_void, RStr<'_>) -> RResult<(), AbiError>,
    /// Appends bytes to the current blob.
    pub write: unsafe extern "C" fn(*mut c_void, RSlice<'_, u8>) -> RResult<(), AbiError>,
}

/// The root module: the entry points of interface 1.0. Frozen.
#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = PluginModRef)))]
#[sabi(missing_field(panic))]
pub struct PluginMod {
    /// Builds the plugin instance and returns its declaration. Called once,
    /// first, by the loader.
    pub init: extern "C" fn() -> RResult<AbiDeclaration, AbiError>,
    /// Whether the plugin takes this value.
    pub can_serialize: for<'a> extern "C" fn(&AbiValue<'a>) -> RResult<bool, AbiError>,
    /// Writes the value's blobs through the sink and returns its metadata.
    pub serialize: for<'a> extern "C" fn(
        &AbiValue<'a>,
        RSlice<'a, AbiStrPair<'a>>,
        &mut AbiSink,
    ) -> RResult<AbiMetadata, AbiError>,
    /// Whether the plugin reads an artifact with this metadata.
    pub can_deserialize: for<'a> extern "C" fn(&AbiMetadataRef<'a>) -> RResult<bool, AbiError>,
    /// Rebuilds a value from its blobs.
    pub deserialize: for<'a> extern "C" fn(
        &AbiMetadataRef<'a>,
        RSlice<'a, AbiBlob<'a>>,
    ) -> RResult<AbiOwnedValue, AbiError>,
    /// Whether a file starting with these bytes is in the plugin's format.
    pub sniff: for<'a> extern "C" fn(RSlice<'a, u8>) -> RResult<bool, AbiError>,
    /// Validates a whole file in the plugin's format and stores it as blobs.
    pub ingest: for<'a> extern "C" fn(
        RSlice<'a, u8>,
        RSlice<'a, AbiStrPair<'a>>,
        &mut AbiSink,
    ) -> RResult<AbiMetadata, AbiError>,
    /// Writes the artifact as one standard-format file through the sink.
    #[sabi(last_prefix_field)]
    pub export: for<'a> extern "C" fn(
        &AbiMetadataRef<'a>,
        RSlice<'a, AbiBlob<'a>>,
        &mut AbiSink,
    ) -> RResult<(), AbiError>,
}

impl RootModule for PluginModRef {
    declare_root_module_statics! {PluginModRef}
    const BASE_NAME: &'static str = "stowage_plugin";
    const NAME: &'static str = "stowage_plugin";
    const VERSION_STRINGS: VersionStrings = package_version_strings!();
}

/// The entry points added in interface 1.1, exported under
/// [`EXT_V1_1_SYMBOL`]. Frozen.
#[repr(C)]
#[derive(StableAbi)]
pub struct AbiExtV1_1 {
    /// A short human-readable rendering of an artifact (the WIRE form).
    pub describe: for<'a> extern "C" fn(
        &AbiMetadataRef<'a>,
        RSlice<'a, AbiBlob<'a>>,
    ) -> RResult<RString, AbiError>,
}

/// An exported extension table: its abi_stable layout, checked by the host
/// before `table` is used, and a pointer to the table itself. Frozen.
#[repr(C)]
pub struct AbiExtension {
    /// Size of this struct in bytes.
    pub size: usize,
    /// The layout of the table `table` points to.
    pub layout: &'static TypeLayout,
    /// The table (e.g. an [`AbiExtV1_1`]).
    pub table: *const c_void,
}

// SAFETY: an `AbiExtension` only ever points at an immutable `static` table of
// function pointers, which may be read from any thread.
unsafe impl Sync for AbiExtension {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_module_loader_symbol_matches_abi_stable() {
        // export_plugin! spells this name as a literal (`#[export_name]`
        // needs one); this keeps it equal to abi_stable's.
        assert_eq!(
            "_1as_0lib_1header_0root_bmodule_bloader",
            abi_stable::library::ROOT_MODULE_LOADER_NAME
        );
    }

    #[test]
    fn probe_carries_crate_version() {
        let version = env!("CARGO_PKG_VERSION");
        assert_eq!(
            version,
            format!("{}.{}.{}", PROBE.major, PROBE.minor, PROBE.patch)
        );
    }
}
