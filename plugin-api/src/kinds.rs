//! Value kinds and encoding names: the fixed vocabulary shared by plugins, the
//! host, status output and artifact metadata.
//!
//! Every kind has a fixed name (used in declarations and records) and a fixed
//! tag (used on the wire in [`crate::abi::AbiValue`]). Tags are never reused or
//! renumbered: a kind added in a later interface minor gets the next tag, and a
//! plugin built before it sees that tag as [`crate::ValueRef::Unknown`] and
//! declines the value.

use std::fmt;

/// A value kind. `#[non_exhaustive]`: later interface minors add kinds.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// `null`: no value (since 1.0).
    Null,
    /// `bool` (since 1.0).
    Bool,
    /// `int`: a signed 64-bit integer (since 1.0).
    Int,
    /// `float`: a 64-bit float (since 1.0).
    Float,
    /// `string`: UTF-8 text (since 1.0).
    String,
    /// `bytes`: opaque bytes (since 1.0).
    Bytes,
    /// `list`: an ordered list of values (since 1.0).
    List,
    /// `map`: string keys to values, insertion order kept (since 1.0).
    Map,
    /// `tensor`: dtype (safetensors name), shape, little-endian data (since 1.0).
    Tensor,
    /// `tensor_map`: named tensors plus string metadata (since 1.0).
    TensorMap,
    /// `arrow`: record batches through the Arrow C Data Interface (since 1.0).
    Arrow,
    /// `class_source`: a Python class as source text plus its qualified name
    /// (since 1.1).
    ClassSource,
}

impl Kind {
    /// Every kind this version of the interface knows, in tag order.
    pub const ALL: [Kind; 12] = [
        Kind::Null,
        Kind::Bool,
        Kind::Int,
        Kind::Float,
        Kind::String,
        Kind::Bytes,
        Kind::List,
        Kind::Map,
        Kind::Tensor,
        Kind::TensorMap,
        Kind::Arrow,
        Kind::ClassSource,
    ];

    /// The fixed name used in declarations, status and metadata.
    pub const fn name(self) -> &'static str {
        match self {
            Kind::Null => "null",
            Kind::Bool => "bool",
            Kind::Int => "int",
            Kind::Float => "float",
            Kind::String => "string",
            Kind::Bytes => "bytes",
            Kind::List => "list",
            Kind::Map => "map",
            Kind::Tensor => "tensor",
            Kind::TensorMap => "tensor_map",
            Kind::Arrow => "arrow",
            Kind::ClassSource => "class_source",
        }
    }

    /// The wire tag. Tag 0 is never used, so a zeroed value is not a kind.
    pub const fn tag(self) -> u32 {
        match self {
            Kind::Null => 1,
            Kind::Bool => 2,
            Kind::Int => 3,
            Kind::Float => 4,
            Kind::String => 5,
            Kind::Bytes => 6,
            Kind::List => 7,
            Kind::Map => 8,
            Kind::Tensor => 9,
            Kind::TensorMap => 10,
            Kind::Arrow => 11,
            Kind::ClassSource => 12,
        }
    }

    /// The kind with this wire tag, if this interface version knows it.
    pub fn from_tag(tag: u32) -> Option<Kind> {
        // Tags are dense from 1: index, don't search (this runs on every
        // call into a plugin).
        let index = usize::try_from(tag).ok()?.checked_sub(1)?;
        Kind::ALL.get(index).copied()
    }

    /// The kind with this name, if this interface version knows it.
    pub fn from_name(name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|kind| kind.name() == name)
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Encoding names written into artifact metadata. Fixed: an artifact written
/// today names its encoding the same way forever.
pub mod encodings {
    /// MessagePack, written by the host's built-in fallback.
    pub const MSGPACK: &str = "msgpack";
    /// The safetensors file format.
    pub const SAFETENSORS: &str = "safetensors";
    /// The Arrow IPC file format.
    pub const ARROW_IPC_FILE: &str = "arrow-ipc-file";
    /// Python class source text, as `inspect.getsource` returns it.
    pub const PYTHON_CLASS_SOURCE: &str = "python-class-source";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_dense_from_one_in_all_order() {
        for (i, kind) in Kind::ALL.iter().enumerate() {
            assert_eq!(kind.tag() as usize, i + 1);
        }
    }

    #[test]
    fn tags_and_names_are_unique_and_round_trip() {
        for kind in Kind::ALL {
            assert_eq!(Kind::from_tag(kind.tag()), Some(kind));
            assert_eq!(Kind::from_name(kind.name()), Some(kind));
        }
        let mut tags: Vec<u32> = Kind::ALL.iter().map(|k| k.tag()).collect();
        tags.dedup();
        assert_eq!(tags.len(), Kind::ALL.len());
        assert_eq!(Kind::from_tag(0), None);
        assert_eq!(Kind::from_name("tensors"), None);
    }
}
