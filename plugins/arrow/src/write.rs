//! Writing record batches as an Arrow IPC file, streamed into the host's sink.
//!
//! Invariants: every batch written has the schema of the first (checked
//! before writing); the compression codec comes only from the `compression`
//! option (`none`, `lz4`, `zstd`) and is returned for the metadata.
//!
//! Decision: a value of zero batches is written as a file with an empty
//! schema (the C Data Interface carries no schema without a batch).

use std::collections::HashMap;
use std::io::{BufWriter, Write};

use arrow_array::RecordBatch;
use arrow_ipc::writer::{FileWriter, IpcWriteOptions};
use arrow_ipc::CompressionType;
use arrow_schema::Schema;

use crate::error::FormatError;
use crate::read::Codec;

/// Parses the `compression` option (absent means `none`).
pub fn parse_codec(option: Option<&str>) -> Result<Codec, FormatError> {
    match option.map(str::trim) {
        None | Some("") | Some("none") | Some("uncompressed") => Ok(Codec::None),
        Some("lz4") | Some("lz4_frame") => Ok(Codec::Lz4),
        Some("zstd") => Ok(Codec::Zstd),
        Some(other) => Err(FormatError::BadCompression(other.to_owned())),
    }
}

/// Writes `batches` (all of schema `schema`) as one IPC file into `out`.
pub fn write_file(
    out: impl Write,
    schema: &Schema,
    batches: &[RecordBatch],
    codec: Codec,
    custom_metadata: &HashMap<String, String>,
) -> Result<(), FormatError> {
    for (index, batch) in batches.iter().enumerate() {
        if batch.schema().as_ref() != schema {
            return Err(FormatError::SchemaMismatch { index });
        }
    }
    let compression = match codec {
        Codec::None => None,
        Codec::Lz4 => Some(CompressionType::LZ4_FRAME),
        Codec::Zstd => Some(CompressionType::ZSTD),
    };
    let options = IpcWriteOptions::default().try_with_compression(compression)?;
    let buffered = BufWriter::with_capacity(1 << 20, out);
    let mut writer = FileWriter::try_new_with_options(buffered, schema, options)?;
    let mut keys: Vec<_> = custom_metadata.iter().collect();
    keys.sort();
    for (key, value) in keys {
        writer.write_metadata(key.clone(), value.clone());
    }
    for batch in batches {
        writer.write(batch)?;
    }
    writer.finish()?;
    writer
        .into_inner()?
        .into_inner()
        .map_err(|e| FormatError::Write(e.error().to_string()))?;
    Ok(())
}
