//! Reading Arrow IPC (file and stream format) from untrusted bytes.
//!
//! Two passes: [`check_file`]/[`check_stream`] walk the framing first —
//! magic, footer, every block and message, every buffer's offset, length and
//! 8-byte alignment, every compressed buffer's declared size — with checked
//! arithmetic and named limits, so that arrow-rs is never handed a size or
//! offset that could make it slice out of bounds or allocate without bound.
//! The schema is checked by [`crate::schema::check_schema`] and every record
//! and dictionary batch's nodes and buffers by
//! [`crate::schema::check_layout`], mirroring what arrow-ipc 59 would assert
//! (and panic on). Only then does arrow-ipc's reader decode, inside
//! `catch_unwind` as a last line of defence, with validation on: it builds
//! every array through `ArrayDataBuilder::build` (which runs
//! `validate_data`: layout, offsets, UTF-8, dictionary keys), nested and
//! union arrays through their `try_new`, and the batch through
//! `RecordBatch::try_new_with_options` — together the same checks as
//! `validate_full`, so no second pass is made.
//!
//! Decision: the fuzz targets call `validate_full` on every batch that reads
//! and abort if it fails, so a gap in arrow-ipc's inline validation would be
//! a fuzzing finding rather than an unvalidated load.
//!
//! Invariants: no allocation is sized by an unchecked untrusted length; no
//! panic escapes [`read`]; every batch returned has passed full validation.
//!
//! Decision: a compressed buffer may declare at most
//! `compressed × 65536 + 1 MiB` and never more than [`MAX_BUFFER_BYTES`]
//! uncompressed bytes (zstd of constant data reaches ratios of ~30000).

use std::collections::HashMap;
use std::io::Cursor;
use std::ops::Range;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_buffer::Buffer;
use arrow_data::ArrayData;
use arrow_ipc::reader::{FileDecoder, StreamReader};
use arrow_ipc::{CompressionType, MessageHeader};
use arrow_schema::SchemaRef;

use crate::error::FormatError;

/// The IPC file magic, at both ends of a file.
pub const FILE_MAGIC: &[u8; 6] = b"ARROW1";
/// The encapsulated-message continuation marker.
const CONTINUATION: [u8; 4] = [0xff; 4];
/// Largest uncompressed size one compressed buffer may declare (4 GiB).
pub const MAX_BUFFER_BYTES: u64 = 4 << 30;
/// Largest flatbuffer message header accepted (64 MiB).
pub const MAX_METADATA_BYTES: u64 = 64 << 20;

/// Which IPC format some bytes are in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IpcFormat {
    /// The random-access file format (`ARROW1` magic, footer).
    File,
    /// The streaming format (messages only).
    Stream,
}

/// Compression codec used by a file's record batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    /// Uncompressed buffers.
    None,
    /// LZ4 frame.
    Lz4,
    /// Zstandard.
    Zstd,
}

impl Codec {
    /// The option / metadata spelling.
    pub fn name(self) -> &'static str {
        match self {
            Codec::None => "none",
            Codec::Lz4 => "lz4",
            Codec::Zstd => "zstd",
        }
    }
}

/// A fully read and validated table.
#[derive(Debug)]
pub struct Table {
    /// The format it was read from.
    pub format: IpcFormat,
    /// The schema (with its metadata).
    pub schema: SchemaRef,
    /// The batches, each fully validated.
    pub batches: Vec<RecordBatch>,
    /// The codec of the compressed messages, if any.
    pub codec: Codec,
    /// The file footer's custom metadata (file format only).
    pub custom_metadata: HashMap<String, String>,
}

impl Table {
    /// Runs `ArrayData::validate_full` on every column again. Reading has
    /// already validated everything inline; the fuzz targets call this to
    /// prove it.
    pub fn validate_full(&self) -> Result<(), FormatError> {
        for batch in &self.batches {
            for column in batch.columns() {
                column.to_data().validate_full()?;
            }
        }
        Ok(())
    }
}

/// Which format `prefix` starts, if any: the file magic, or a continuation
/// marker followed by a flatbuffer `Schema` message.
pub fn detect(prefix: &[u8]) -> Option<IpcFormat> {
    if prefix.len() >= 8 && &prefix[..6] == FILE_MAGIC {
        return Some(IpcFormat::File);
    }
    if prefix.len() >= 8 && prefix[..4] == CONTINUATION {
        let len = i32::from_le_bytes([prefix[4], prefix[5], prefix[6], prefix[7]]);
        let len = usize::try_from(len).ok().filter(|len| *len > 0)?;
        let Some(meta) = prefix.get(8..8 + len) else {
            // A schema header longer than the sniffed prefix (thousands of
            // columns): claim it on the framing alone; `ingest` validates.
            return (len as u64 <= MAX_METADATA_BYTES).then_some(IpcFormat::Stream);
        };
        let message = arrow_ipc::root_as_message(meta).ok()?;
        if message.header_type() == MessageHeader::Schema {
            return Some(IpcFormat::Stream);
        }
    }
    None
}

/// Reads and fully validates a file or stream.
pub fn read(bytes: &[u8]) -> Result<Table, FormatError> {
    match detect(bytes) {
        Some(IpcFormat::File) => read_file(bytes),
        Some(IpcFormat::Stream) => read_stream(bytes),
        None => Err(FormatError::NotArrow),
    }
}

/// Reads and fully validates an IPC file from borrowed bytes, copying them
/// once into an aligned buffer the batches then share.
pub fn read_file(bytes: &[u8]) -> Result<Table, FormatError> {
    read_file_buffer(&Buffer::from(bytes))
}

/// Reads and fully validates an IPC file held in `file`, without copying:
/// every batch buffer is a slice of `file`, except where the message is
/// compressed (decompressed into new memory) or a buffer's offset is not
/// aligned for its type (arrow-rs re-aligns it by copying). See
/// [`copied_buffers`] to count those.
pub fn read_file_buffer(file: &Buffer) -> Result<Table, FormatError> {
    let bytes = file.as_slice();
    let codec = check_file(bytes)?;
    guarded(|| {
        // `check_file` has verified the framing, the footer flatbuffer, every
        // block's range and the schema, so the slicing below is in bounds.
        let len = bytes.len();
        let footer_len = i32::from_le_bytes([
            bytes[len - 10],
            bytes[len - 9],
            bytes[len - 8],
            bytes[len - 7],
        ]) as usize;
        let footer = arrow_ipc::root_as_footer(&bytes[len - 10 - footer_len..len - 10])
            .map_err(|e| malformed(format!("bad footer flatbuffer: {}", first_line(&e))))?;
        let ipc_schema = footer
            .schema()
            .ok_or_else(|| malformed("the footer has no schema"))?;
        if !ipc_schema.endianness().equals_to_target_endianness() {
            return Err(FormatError::ForeignByteOrder);
        }
        let schema = Arc::new(arrow_ipc::convert::fb_to_schema(ipc_schema));
        let custom_metadata = footer
            .custom_metadata()
            .into_iter()
            .flatten()
            .filter_map(|pair| Some((pair.key()?.to_owned(), pair.value()?.to_owned())))
            .collect();
        let block_buffer = |block: &arrow_ipc::Block| {
            let length = block.metaDataLength() as usize + block.bodyLength() as usize;
            file.slice_with_length(block.offset() as usize, length)
        };
        let mut decoder = FileDecoder::new(Arc::clone(&schema), footer.version());
        for block in footer.dictionaries().into_iter().flatten() {
            decoder.read_dictionary(block, &block_buffer(block))?;
        }
        let mut batches = Vec::new();
        for block in footer.recordBatches().into_iter().flatten() {
            if let Some(batch) = decoder.read_record_batch(block, &block_buffer(block))? {
                batches.push(batch);
            }
        }
        Ok(Table {
            format: IpcFormat::File,
            schema,
            batches,
            codec,
            custom_metadata,
        })
    })
}

/// How many of the batches' non-empty buffers (nulls, offsets, values, of
/// every child and dictionary) lie outside `file`, i.e. were copied when
/// read with [`read_file_buffer`]; and how many there are in all.
pub fn copied_buffers(batches: &[RecordBatch], file: &[u8]) -> (usize, usize) {
    fn visit(data: &ArrayData, file: &Range<*const u8>, counts: &mut (usize, usize)) {
        let nulls = data.nulls().map(|nulls| nulls.buffer());
        for buffer in data.buffers().iter().chain(nulls) {
            if buffer.is_empty() {
                continue;
            }
            counts.1 += 1;
            if !file.contains(&buffer.as_ptr()) {
                counts.0 += 1;
            }
        }
        for child in data.child_data() {
            visit(child, file, counts);
        }
    }
    let file = file.as_ptr_range();
    let mut counts = (0, 0);
    for batch in batches {
        for column in batch.columns() {
            visit(&column.to_data(), &file, &mut counts);
        }
    }
    counts
}

/// Reads and fully validates an IPC stream.
pub fn read_stream(bytes: &[u8]) -> Result<Table, FormatError> {
    let codec = check_stream(bytes)?;
    guarded(|| {
        let reader = StreamReader::try_new(Cursor::new(bytes), None)?;
        let schema = reader.schema();
        let batches = collect(reader)?;
        Ok(Table {
            format: IpcFormat::Stream,
            schema,
            batches,
            codec,
            custom_metadata: HashMap::new(),
        })
    })
}

fn collect(
    reader: impl Iterator<Item = Result<RecordBatch, arrow_schema::ArrowError>>,
) -> Result<Vec<RecordBatch>, FormatError> {
    reader.map(|batch| Ok(batch?)).collect()
}

/// Runs arrow-rs code, turning a panic into an error.
fn guarded<T>(body: impl FnOnce() -> Result<T, FormatError>) -> Result<T, FormatError> {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(result) => result,
        Err(payload) => {
            let text = payload
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".to_owned());
            Err(FormatError::ReaderPanic(text))
        }
    }
}

/// The first line of a (flatbuffers) error: the rest is a verifier trace.
fn first_line(error: &impl std::fmt::Display) -> String {
    error
        .to_string()
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned()
}

fn malformed(message: impl Into<String>) -> FormatError {
    FormatError::Malformed(message.into())
}

/// Walks an IPC file's framing: magic, footer, and every block's message.
/// Returns the codec of its compressed messages.
pub fn check_file(bytes: &[u8]) -> Result<Codec, FormatError> {
    let len = bytes.len();
    if len < 8 + 10 {
        return Err(FormatError::Truncated(format!(
            "{len} bytes is too short for a file"
        )));
    }
    if &bytes[..6] != FILE_MAGIC || &bytes[len - 6..] != FILE_MAGIC {
        return Err(malformed(
            "missing ARROW1 magic at the start or end of the file",
        ));
    }
    let footer_len = i32::from_le_bytes([
        bytes[len - 10],
        bytes[len - 9],
        bytes[len - 8],
        bytes[len - 7],
    ]);
    let footer_len = usize::try_from(footer_len)
        .map_err(|_| malformed(format!("negative footer length {footer_len}")))?;
    let footer_end = len - 10;
    let footer_start = footer_end
        .checked_sub(footer_len)
        .filter(|start| *start >= 8)
        .ok_or_else(|| FormatError::Truncated(format!("footer of {footer_len} bytes")))?;
    let footer = arrow_ipc::root_as_footer(&bytes[footer_start..footer_end])
        .map_err(|e| malformed(format!("bad footer flatbuffer: {}", first_line(&e))))?;
    let schema = footer
        .schema()
        .ok_or_else(|| malformed("the footer has no schema"))?;
    crate::schema::check_schema(&schema)?;
    let arrow_schema = guarded(|| Ok(arrow_ipc::convert::fb_to_schema(schema)))?;
    let mut codec = Codec::None;
    let blocks = footer
        .dictionaries()
        .into_iter()
        .flatten()
        .chain(footer.recordBatches().into_iter().flatten());
    for (index, block) in blocks.enumerate() {
        let offset = usize::try_from(block.offset())
            .map_err(|_| malformed(format!("block {index}: negative offset")))?;
        let meta_len = usize::try_from(block.metaDataLength())
            .map_err(|_| malformed(format!("block {index}: negative metadata length")))?;
        let body_len = u64::try_from(block.bodyLength())
            .map_err(|_| malformed(format!("block {index}: negative body length")))?;
        let end = (offset as u64)
            .checked_add(meta_len as u64)
            .and_then(|end| end.checked_add(body_len))
            .filter(|end| *end <= footer_start as u64 && offset >= 8)
            .ok_or_else(|| {
                malformed(format!(
                    "block {index} at {offset} (+{meta_len}+{body_len}) lies outside the file"
                ))
            })?;
        if meta_len < 8 || meta_len % 8 != 0 || offset % 8 != 0 {
            return Err(malformed(format!(
                "block {index}: offset {offset} and metadata length {meta_len} must be \
                 multiples of 8 (at least 8)"
            )));
        }
        let block_bytes = &bytes[offset..end as usize];
        let (framed, _) = split_message(block_bytes, index)?
            .ok_or_else(|| malformed(format!("block {index}: end-of-stream marker")))?;
        // arrow-ipc's reader takes the body right after the block's declared
        // metadata, so check the buffers against exactly that view.
        let message_body = Framed {
            body: &block_bytes[meta_len..],
            ..framed
        };
        let checked = check_message(&message_body, index, Some(&arrow_schema))?;
        codec = merge(codec, checked, index)?;
    }
    Ok(codec)
}

/// Walks an IPC stream's messages to its end (marker or end of bytes).
pub fn check_stream(bytes: &[u8]) -> Result<Codec, FormatError> {
    let mut rest = bytes;
    let mut codec = Codec::None;
    let mut index = 0usize;
    let mut schema = None;
    while !rest.is_empty() {
        let Some((message, after)) = split_message(rest, index)? else {
            break;
        };
        if index == 0 && message.header_type != MessageHeader::Schema {
            return Err(malformed("the stream does not start with a schema message"));
        }
        codec = merge(
            codec,
            check_message(&message, index, schema.as_ref())?,
            index,
        )?;
        if index == 0 {
            // check_message has checked the schema: converting cannot panic.
            let header = arrow_ipc::root_as_message(message.meta)
                .ok()
                .and_then(|m| m.header_as_schema())
                .ok_or_else(|| malformed("message 0: missing schema header"))?;
            schema = Some(guarded(|| Ok(arrow_ipc::convert::fb_to_schema(header)))?);
        }
        rest = after;
        index += 1;
    }
    if index == 0 {
        return Err(FormatError::Truncated("empty stream".into()));
    }
    Ok(codec)
}

fn merge(have: Codec, new: Codec, index: usize) -> Result<Codec, FormatError> {
    match (have, new) {
        (have, Codec::None) => Ok(have),
        (Codec::None, new) => Ok(new),
        (have, new) if have == new => Ok(have),
        _ => Err(malformed(format!(
            "message {index}: mixes compression codecs"
        ))),
    }
}

/// One framed message: its flatbuffer header and its body.
struct Framed<'b> {
    meta: &'b [u8],
    header_type: MessageHeader,
    body: &'b [u8],
}

/// Splits one encapsulated message off the front of `bytes`; `None` at an
/// end-of-stream marker.
fn split_message(bytes: &[u8], index: usize) -> Result<Option<(Framed<'_>, &[u8])>, FormatError> {
    let truncated = || FormatError::Truncated(format!("message {index}: header cut short"));
    let word = bytes.get(..4).ok_or_else(truncated)?;
    let (len_word, skip) = if word == CONTINUATION {
        (bytes.get(4..8).ok_or_else(truncated)?, 8)
    } else {
        (word, 4)
    };
    let meta_len = i32::from_le_bytes([len_word[0], len_word[1], len_word[2], len_word[3]]);
    if meta_len == 0 {
        return Ok(None);
    }
    let meta_len = usize::try_from(meta_len)
        .map_err(|_| malformed(format!("message {index}: negative header length")))?;
    if meta_len as u64 > MAX_METADATA_BYTES {
        return Err(FormatError::TooLarge {
            what: "a message header",
            size: meta_len as u64,
            limit: MAX_METADATA_BYTES,
        });
    }
    let meta = bytes.get(skip..skip + meta_len).ok_or_else(|| {
        FormatError::Truncated(format!("message {index}: header of {meta_len} bytes"))
    })?;
    let message = arrow_ipc::root_as_message(meta).map_err(|e| {
        malformed(format!(
            "message {index}: bad flatbuffer: {}",
            first_line(&e)
        ))
    })?;
    let body_len = usize::try_from(message.bodyLength())
        .map_err(|_| malformed(format!("message {index}: negative body length")))?;
    let body_start = skip + meta_len;
    let body = body_start
        .checked_add(body_len)
        .and_then(|end| bytes.get(body_start..end))
        .ok_or_else(|| {
            FormatError::Truncated(format!("message {index}: body of {body_len} bytes"))
        })?;
    let rest = &bytes[body_start + body_len..];
    let header_type = message.header_type();
    Ok(Some((
        Framed {
            meta,
            header_type,
            body,
        },
        rest,
    )))
}

/// Checks one message's buffers against its body; returns its codec.
fn check_message(
    framed: &Framed<'_>,
    index: usize,
    schema: Option<&arrow_schema::Schema>,
) -> Result<Codec, FormatError> {
    // Re-parsing is cheap: the verifier already accepted these bytes.
    let message = arrow_ipc::root_as_message(framed.meta).map_err(|e| {
        malformed(format!(
            "message {index}: bad flatbuffer: {}",
            first_line(&e)
        ))
    })?;
    let is_record_batch = framed.header_type == MessageHeader::RecordBatch;
    let batch = match framed.header_type {
        MessageHeader::Schema => {
            let schema = message
                .header_as_schema()
                .ok_or_else(|| malformed(format!("message {index}: missing schema header")))?;
            crate::schema::check_schema(&schema)?;
            return Ok(Codec::None);
        }
        MessageHeader::RecordBatch => message.header_as_record_batch(),
        MessageHeader::DictionaryBatch => message
            .header_as_dictionary_batch()
            .and_then(|dictionary| dictionary.data()),
        other => {
            return Err(malformed(format!(
                "message {index}: unsupported message type {other:?}"
            )))
        }
    };
    let batch = batch.ok_or_else(|| malformed(format!("message {index}: missing batch header")))?;
    if batch.length() < 0 {
        return Err(malformed(format!("message {index}: negative row count")));
    }
    let mut nodes = Vec::new();
    for (n, node) in batch.nodes().into_iter().flatten().enumerate() {
        if node.length() < 0 || node.null_count() < 0 || node.null_count() > node.length() {
            return Err(malformed(format!(
                "message {index}: node {n} has length {} and null count {}",
                node.length(),
                node.null_count()
            )));
        }
        nodes.push((node.length() as u64, node.null_count() as u64));
    }
    let mut lengths = Vec::new();
    let codec = match batch.compression().map(|c| c.codec()) {
        None => Codec::None,
        Some(CompressionType::LZ4_FRAME) => Codec::Lz4,
        Some(CompressionType::ZSTD) => Codec::Zstd,
        Some(other) => {
            return Err(malformed(format!(
                "message {index}: unknown codec {other:?}"
            )))
        }
    };
    let body = framed.body;
    for (n, buffer) in batch.buffers().into_iter().flatten().enumerate() {
        let range = usize::try_from(buffer.offset())
            .ok()
            .zip(usize::try_from(buffer.length()).ok())
            .and_then(|(offset, length)| Some(offset..offset.checked_add(length)?))
            .filter(|range| range.end <= body.len())
            .ok_or_else(|| {
                malformed(format!(
                    "message {index}: buffer {n} at {} (+{}) lies outside the {}-byte body",
                    buffer.offset(),
                    buffer.length(),
                    body.len()
                ))
            })?;
        if range.start % 8 != 0 {
            return Err(malformed(format!(
                "message {index}: buffer {n} at {} is not 8-byte aligned",
                range.start
            )));
        }
        if codec == Codec::None || range.is_empty() {
            lengths.push(range.len() as u64);
            continue;
        }
        let data = &body[range];
        let prefix = data.get(..8).ok_or_else(|| {
            malformed(format!(
                "message {index}: compressed buffer {n} shorter than its size prefix"
            ))
        })?;
        let declared = i64::from_le_bytes([
            prefix[0], prefix[1], prefix[2], prefix[3], prefix[4], prefix[5], prefix[6], prefix[7],
        ]);
        if declared == -1 {
            lengths.push(data.len() as u64 - 8);
            continue;
        }
        let declared = u64::try_from(declared).map_err(|_| {
            malformed(format!(
                "message {index}: buffer {n} declares a negative size"
            ))
        })?;
        let limit = (data.len() as u64 * 65536 + (1 << 20)).min(MAX_BUFFER_BYTES);
        if declared > limit {
            return Err(FormatError::TooLarge {
                what: "an uncompressed buffer",
                size: declared,
                limit,
            });
        }
        lengths.push(declared);
    }
    // A dictionary batch is a one-column batch of the dictionary's values.
    let dictionary_schema = match (is_record_batch, schema) {
        (false, Some(schema)) => message
            .header_as_dictionary_batch()
            .and_then(|d| crate::schema::dictionary_value_type(schema, d.id()))
            .map(|value| {
                arrow_schema::Schema::new(vec![arrow_schema::Field::new("dictionary", value, true)])
            }),
        _ => None,
    };
    let schema = if is_record_batch {
        schema
    } else {
        dictionary_schema.as_ref()
    };
    if let Some(schema) = schema {
        let layout = crate::schema::Layout {
            nodes,
            buffers: lengths,
            variadic: batch.variadicBufferCounts().into_iter().flatten().collect(),
            v4: message.version().0 < arrow_ipc::MetadataVersion::V5.0,
        };
        crate::schema::check_layout(schema, &layout).map_err(|e| match e {
            FormatError::Malformed(m) => malformed(format!("message {index}: {m}")),
            other => other,
        })?;
    }
    Ok(codec)
}
