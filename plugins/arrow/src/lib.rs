//! The arrow serializer plugin: Arrow record batches in through the C Data
//! Interface, stored as one Arrow IPC **file** (encoding `arrow-ipc-file`,
//! version 1), one blob named `data`.
//!
//! - `serialize`: takes the host's fresh C Data exports (releasing each once),
//!   validates every batch in full (`ArrayData::validate_full`, record-batch
//!   checks), and streams an IPC file into the sink.
//! - `ingest` (`stowage put x.arrow`): accepts the IPC file and stream
//!   formats (LZ4_FRAME and ZSTD buffers too), validates everything, and
//!   stores a file unchanged, byte for byte; a stream, or any file when the
//!   `compression` option is given, is re-encoded as a file.
//! - `deserialize`: reads and validates the stored file and exports the
//!   batches as C Data structs the host takes over.
//! - `export` (`stowage get -o`): the stored file itself.
//! - `describe`: schema, rows, batches, compression, first rows.
//!
//! Option `compression` = `none` | `lz4` | `zstd` (default `none`), recorded
//! as `serializer_info.compression`, together with `rows` and `batches`.
//!
//! Malformed input is refused with one-line errors; sizes are bounded as
//! described in [`mod@read`] and [`schema`]. See [`read::MAX_BUFFER_BYTES`].
//!
//! Loads are zero-copy where the format allows: `deserialize` decodes
//! straight from the blob the host lent (memory-mapped with `load_mapped`;
//! the host keeps it alive as long as the value), so every batch buffer of an
//! uncompressed file is a slice of the blob. A copy happens only where it
//! must: compressed messages are decompressed, and a buffer whose offset is
//! not aligned for its type (possible in files from writers that align to 8
//! bytes, for 16-byte types such as decimal128) is re-aligned. The artifact
//! records which, as `serializer_info.load`: `zero-copy`, `copy: zstd
//! decompression`, or `copy: N of M buffers realigned`. That record holds
//! for a blob starting at [`FILE_ALIGNMENT`], as every raw (memory-mapped)
//! blob does; a blob the host hands over at another address (a small one
//! inside a pack file) is first copied whole into aligned memory.
//!
//! Decision: loads still validate every batch in full (UTF-8, offsets,
//! dictionary keys), because `load_mapped` serves unverified bytes and
//! arrow-rs's safe API relies on valid data. That is O(rows) for
//! variable-width and dictionary columns; fixed-width columns cost O(1)
//! beyond their null bitmaps.
//!
//! Decision: a stored file with zero batches loads as one zero-row batch, so
//! the schema survives the C Data Interface (which has no batch-less form).
//!
//! ```
//! use stowage_plugin_api::Plugin;
//! let declaration = stowage_arrow::ArrowPlugin.declaration();
//! assert_eq!(declaration.name(), "arrow");
//! ```

#![deny(unsafe_code)]

pub mod describe;
pub mod error;
mod ffi;
pub mod read;
pub mod schema;
pub mod write;

use arrow_array::RecordBatch;
use arrow_buffer::Buffer;
use arrow_schema::Schema;
use std::collections::HashMap;
use std::sync::Arc;
use stowage_plugin_api::{
    encodings, export_plugin, Blobs, Declaration, Kind, Metadata, MetadataRef, Options, Plugin,
    PluginError, Sink, Value, ValueRef,
};

pub use error::FormatError;
pub use ffi::{export_batch, import_batch};
pub use read::{read, read_file, read_file_buffer, read_stream, Codec, IpcFormat, Table};

/// The name of the one blob an artifact has.
pub const BLOB: &str = "data";
/// The option key selecting compression on write.
pub const COMPRESSION: &str = "compression";
/// The alignment a blob must start at to be read in place: the largest any
/// Arrow type needs (16 bytes, for decimal128/256 values). IPC aligns
/// buffers within the file, so a blob at such an address keeps each buffer
/// as aligned as the file made it. Raw blobs are memory-mapped (page
/// aligned); a small one packed at another offset is copied once into
/// aligned memory.
pub const FILE_ALIGNMENT: usize = 16;
/// Version of the `arrow-ipc-file` encoding this plugin writes.
pub const ENCODING_VERSION: u32 = 1;

/// The arrow plugin.
#[derive(Debug, Default, Clone, Copy)]
pub struct ArrowPlugin;

impl Plugin for ArrowPlugin {
    fn declaration(&self) -> Declaration {
        Declaration::new("arrow")
            .kinds([Kind::Arrow])
            .encoding(encodings::ARROW_IPC_FILE)
            .options([COMPRESSION])
    }

    fn can_serialize(&self, value: &ValueRef<'_>) -> bool {
        matches!(value, ValueRef::Arrow(_))
    }

    fn serialize(
        &self,
        value: &ValueRef<'_>,
        options: &Options<'_>,
        sink: &mut Sink<'_>,
    ) -> Result<Metadata, PluginError> {
        let ValueRef::Arrow(arrow) = value else {
            return Err(PluginError::unsupported(
                "the arrow plugin stores only arrow values",
            ));
        };
        // Take ownership first so every batch is released exactly once, even
        // when the option or a batch is refused.
        let taken = arrow.take();
        let codec = write::parse_codec(options.get(COMPRESSION))?;
        let batches = taken
            .into_iter()
            .map(ffi::import_batch)
            .collect::<Result<Vec<RecordBatch>, FormatError>>()?;
        let schema = match batches.first() {
            Some(batch) => batch.schema(),
            None => Arc::new(Schema::empty()),
        };
        sink.begin_blob(BLOB)?;
        write::write_file(&mut *sink, &schema, &batches, codec, &HashMap::new())?;
        Ok(metadata(codec, &batches, &written_load_info(codec)))
    }

    fn can_deserialize(&self, meta: &MetadataRef<'_>) -> bool {
        meta.encoding() == encodings::ARROW_IPC_FILE && meta.encoding_version() == ENCODING_VERSION
    }

    fn deserialize<'a>(
        &self,
        _meta: &MetadataRef<'a>,
        blobs: &Blobs<'a>,
    ) -> Result<Value<'a>, PluginError> {
        let file = ffi::file_buffer_for_value(blob(blobs)?);
        let table = read::read_file_buffer(&file)?;
        let mut batches = table.batches;
        if batches.is_empty() {
            batches.push(RecordBatch::new_empty(table.schema));
        }
        let exported = batches
            .iter()
            .map(ffi::export_batch)
            .collect::<Result<Vec<_>, FormatError>>()?;
        Ok(Value::Arrow(exported))
    }

    fn sniff(&self, prefix: &[u8]) -> bool {
        read::detect(prefix).is_some()
    }

    fn ingest(
        &self,
        file: &[u8],
        options: &Options<'_>,
        sink: &mut Sink<'_>,
    ) -> Result<Metadata, PluginError> {
        let wanted = options.get(COMPRESSION);
        let codec = write::parse_codec(wanted)?;
        if read::detect(file) == Some(IpcFormat::File) && wanted.is_none() {
            // Stored byte for byte, so decode it as a load will (from an
            // aligned copy, like the mapped blob) to record what a load copies.
            let aligned = Buffer::from(file);
            let table = read::read_file_buffer(&aligned)?;
            let (copied, total) = read::copied_buffers(&table.batches, &aligned);
            sink.blob(BLOB, file)?;
            let load = load_info(table.codec, copied, total);
            return Ok(metadata(table.codec, &table.batches, &load));
        }
        let table = read::read(file)?;
        sink.begin_blob(BLOB)?;
        write::write_file(
            &mut *sink,
            &table.schema,
            &table.batches,
            codec,
            &table.custom_metadata,
        )?;
        Ok(metadata(codec, &table.batches, &written_load_info(codec)))
    }

    fn describe(&self, _meta: &MetadataRef<'_>, blobs: &Blobs<'_>) -> Result<String, PluginError> {
        let table = read::read_file(blob(blobs)?)?;
        Ok(describe::describe(&table))
    }
}

fn blob<'a>(blobs: &Blobs<'a>) -> Result<&'a [u8], FormatError> {
    blobs
        .get(BLOB)
        .or_else(|| blobs.single())
        .ok_or(FormatError::MissingBlob(BLOB))
}

fn metadata(codec: Codec, batches: &[RecordBatch], load: &str) -> Metadata {
    let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
    Metadata::new(
        Kind::Arrow.name(),
        encodings::ARROW_IPC_FILE,
        ENCODING_VERSION,
    )
    .info("compression", codec.name())
    .info("rows", rows.to_string())
    .info("batches", batches.len().to_string())
    .info("load", load)
}

/// What loading a file costs, from what reading it copied (`copied` of
/// `total` non-empty buffers): `zero-copy`, or why and how much is copied.
fn load_info(codec: Codec, copied: usize, total: usize) -> String {
    match (codec, copied) {
        (_, 0) => "zero-copy".to_owned(),
        (Codec::None, _) => format!("copy: {copied} of {total} buffers realigned"),
        (codec, _) => format!("copy: {} decompression", codec.name()),
    }
}

/// [`load_info`] for a file this plugin wrote: arrow-rs's writer aligns
/// every buffer to 64 bytes, so only compression makes a load copy.
fn written_load_info(codec: Codec) -> String {
    load_info(codec, usize::from(codec != Codec::None), 1)
}

export_plugin!(ArrowPlugin);

#[cfg(test)]
mod tests;
