//! The arrow plugin's error type, [`FormatError`], and its conversion to the
//! SDK's [`PluginError`].
//!
//! Invariant: every message is one lowercase line naming what was wrong and
//! where (message index, block, buffer) so a malformed file is diagnosable
//! from `stowage put` alone.
//!
//! Decision: errors from arrow-rs are wrapped as `Arrow` (invalid input) with
//! arrow-rs's own text; a panic caught inside arrow-rs is `ReaderPanic`, also
//! invalid input, because only hostile bytes reach those paths.

use arrow_schema::ArrowError;
use stowage_plugin_api::PluginError;

/// Everything that can go wrong reading, validating or writing Arrow data.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    /// Neither the IPC file magic nor a stream schema message at the start.
    #[error("not an arrow ipc file or stream")]
    NotArrow,
    /// The file is shorter than its structure requires.
    #[error("truncated arrow ipc data: {0}")]
    Truncated(String),
    /// A structural check on the IPC framing or flatbuffers failed.
    #[error("malformed arrow ipc data: {0}")]
    Malformed(String),
    /// A declared size exceeds what this plugin will allocate.
    #[error("arrow ipc declares {what} of {size} bytes, over the limit of {limit}")]
    TooLarge {
        /// Which size.
        what: &'static str,
        /// The declared size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// arrow-rs rejected the data (decoding or full validation).
    #[error("invalid arrow data: {0}")]
    Arrow(#[from] ArrowError),
    /// arrow-rs panicked on hostile input (caught).
    #[error("malformed arrow ipc data: the reader failed: {0}")]
    ReaderPanic(String),
    /// The file was written on a machine of the other byte order.
    #[error("arrow ipc file has the other byte order from this machine's; it cannot be read here")]
    ForeignByteOrder,
    /// Batches of one value disagree on their schema.
    #[error("batch {index} has a different schema from batch 0")]
    SchemaMismatch {
        /// The offending batch.
        index: usize,
    },
    /// A batch crossed the ABI in a shape this plugin does not store.
    #[error("unsupported arrow batch: {0}")]
    UnsupportedBatch(String),
    /// The `compression` option has an unknown value.
    #[error("unknown compression `{0}`; expected none, lz4 or zstd")]
    BadCompression(String),
    /// The artifact lacks its blob.
    #[error("artifact has no blob `{0}`")]
    MissingBlob(&'static str),
    /// Writing through the sink failed.
    #[error("writing arrow ipc failed: {0}")]
    Write(String),
}

impl From<FormatError> for PluginError {
    fn from(error: FormatError) -> Self {
        // arrow-rs and flatbuffers errors span lines; ours are one line.
        let message = error
            .to_string()
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        match error {
            FormatError::BadCompression(_)
            | FormatError::UnsupportedBatch(_)
            | FormatError::ForeignByteOrder => PluginError::unsupported(message),
            FormatError::Write(_) => PluginError::internal(message),
            _ => PluginError::invalid_input(message),
        }
    }
}
