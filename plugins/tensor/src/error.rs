//! [`FormatError`]: one variant per check the header parser and the writer
//! make, each carrying the offending name or number.
//!
//! Invariant: messages are one lowercase line; the plugin hands them to the
//! host as `PluginError::invalid_input(error.to_string())`.

use crate::header::MAX_HEADER_SIZE;

/// A malformed safetensors file, or a value that cannot be written as one.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    /// The file is shorter than the 8-byte header size field.
    #[error("file is {len} bytes, shorter than the 8-byte header size field")]
    FileTooShort {
        /// The file's length.
        len: usize,
    },
    /// The header size field is too small to hold a JSON object (`{}`).
    #[error("header size {size} is too small to hold a json object")]
    HeaderTooSmall {
        /// The declared header size.
        size: u64,
    },
    /// The header size field exceeds [`MAX_HEADER_SIZE`].
    #[error("header size {size} exceeds the limit of {MAX_HEADER_SIZE} bytes")]
    HeaderTooLarge {
        /// The declared header size.
        size: u64,
    },
    /// The header runs past the end of the file.
    #[error("header of {size} bytes runs past the end of the {file_len}-byte file")]
    HeaderPastEnd {
        /// The declared header size.
        size: u64,
        /// The file's length.
        file_len: usize,
    },
    /// The header is not UTF-8.
    #[error("header is not utf-8 (invalid byte at {valid_up_to})")]
    HeaderNotUtf8 {
        /// Length of the valid UTF-8 prefix.
        valid_up_to: usize,
    },
    /// The header is not JSON.
    #[error("header is not json: {0}")]
    HeaderNotJson(String),
    /// The header is JSON but not an object.
    #[error("header is not a json object")]
    HeaderNotObject,
    /// A tensor name appears twice.
    #[error("tensor `{name}` appears more than once")]
    DuplicateName {
        /// The repeated name.
        name: String,
    },
    /// A tensor is named `__metadata__`, the key reserved for metadata.
    #[error("a tensor may not be named `__metadata__`")]
    ReservedName,
    /// A tensor's entry is not a JSON object.
    #[error("tensor `{name}`: entry is not a json object")]
    EntryNotObject {
        /// The tensor.
        name: String,
    },
    /// A tensor's entry lacks a field.
    #[error("tensor `{name}`: missing `{field}`")]
    MissingField {
        /// The tensor.
        name: String,
        /// The missing field (`dtype`, `shape`, `data_offsets`).
        field: &'static str,
    },
    /// A dtype the safetensors format does not define.
    #[error("tensor `{name}`: unknown dtype {dtype}")]
    UnknownDtype {
        /// The tensor.
        name: String,
        /// The dtype as written (JSON text if it is not a string).
        dtype: String,
    },
    /// The shape is not an array of integers.
    #[error("tensor `{name}`: shape is not an array of integers")]
    InvalidShape {
        /// The tensor.
        name: String,
    },
    /// A negative dimension.
    #[error("tensor `{name}`: negative dimension {dim}")]
    NegativeDimension {
        /// The tensor.
        name: String,
        /// The dimension as written.
        dim: String,
    },
    /// The element count or byte size overflows.
    #[error("tensor `{name}`: shape {shape} overflows")]
    ShapeOverflow {
        /// The tensor.
        name: String,
        /// The shape as written.
        shape: String,
    },
    /// A sub-byte dtype whose data does not end on a byte boundary.
    #[error("tensor `{name}`: {bits} bits of data is not a whole number of bytes")]
    PartialByte {
        /// The tensor.
        name: String,
        /// Total bits.
        bits: u128,
    },
    /// `data_offsets` is not a pair of non-negative integers.
    #[error("tensor `{name}`: data_offsets is not a pair of non-negative integers")]
    InvalidOffsets {
        /// The tensor.
        name: String,
    },
    /// `data_offsets` ends before it begins.
    #[error("tensor `{name}`: data_offsets [{begin}, {end}] are reversed")]
    ReversedOffsets {
        /// The tensor.
        name: String,
        /// Start offset.
        begin: u64,
        /// End offset.
        end: u64,
    },
    /// A tensor ends past the data section.
    #[error("tensor `{name}`: data ends at {end}, past the {data_len}-byte data section")]
    OffsetsOutOfBounds {
        /// The tensor.
        name: String,
        /// End offset.
        end: u64,
        /// Length of the data section.
        data_len: usize,
    },
    /// A tensor starts before the previous one (in offset order) ends.
    #[error("tensor `{name}`: data at {begin} overlaps the tensor before it, which ends at {previous_end}")]
    OverlappingOffsets {
        /// The tensor.
        name: String,
        /// Its start offset.
        begin: u64,
        /// Where the previous tensor ends.
        previous_end: u64,
    },
    /// Unused bytes before a tensor: the tensors do not cover the data
    /// section contiguously.
    #[error("tensor `{name}`: data at {begin} leaves a gap after the tensor before it, which ends at {previous_end}")]
    GapBeforeTensor {
        /// The tensor.
        name: String,
        /// Its start offset.
        begin: u64,
        /// Where the previous tensor ends (0 for the first).
        previous_end: u64,
    },
    /// Unused bytes after the last tensor.
    #[error("tensors cover {covered} of the {data_len} data bytes")]
    TrailingData {
        /// Bytes covered by tensors.
        covered: u64,
        /// Length of the data section.
        data_len: usize,
    },
    /// Shape × dtype size differs from the tensor's byte length.
    #[error("tensor `{name}`: {dtype} {shape} needs {expected} bytes, has {actual}")]
    SizeMismatch {
        /// The tensor.
        name: String,
        /// Its dtype.
        dtype: String,
        /// Its shape, rendered.
        shape: String,
        /// Bytes the shape and dtype call for.
        expected: u128,
        /// Bytes present.
        actual: u64,
    },
    /// `__metadata__` is not a JSON object.
    #[error("`__metadata__` is not a json object")]
    MetadataNotObject,
    /// A `__metadata__` value is not a string.
    #[error("`__metadata__` value of `{key}` is not a string")]
    NonStringMetadata {
        /// The key.
        key: String,
    },
    /// A metadata key appears twice (in a value being written).
    #[error("metadata key `{key}` appears more than once")]
    DuplicateMetadataKey {
        /// The key.
        key: String,
    },
}
