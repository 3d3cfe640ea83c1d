//! Unit tests of the arrow plugin, in-process through the SDK's ABI structs
//! (`PluginTest`): C Data round trips with release counters, compression,
//! ingest of files and streams, malformed input, describe.

use std::collections::HashMap;
use std::sync::Arc;

use arrow_array::builder::{Int32Builder, ListBuilder, MapBuilder, StringBuilder};
use arrow_array::types::Int8Type;
use arrow_array::{
    Array, ArrayRef, BinaryArray, BooleanArray, Decimal128Array, DictionaryArray,
    FixedSizeBinaryArray, Float32Array, Float64Array, Int16Array, Int32Array, Int64Array,
    Int8Array, IntervalMonthDayNanoArray, LargeStringArray, ListArray, NullArray, RecordBatch,
    StringArray, StructArray, TimestampMicrosecondArray, UInt16Array, UInt32Array, UInt64Array,
    UInt8Array, UnionArray,
};
use arrow_buffer::{IntervalMonthDayNano, ScalarBuffer};
use arrow_ipc::writer::{FileWriter, IpcWriteOptions, StreamWriter};
use arrow_ipc::MetadataVersion;
use arrow_schema::{DataType, Field, Fields, Schema, UnionFields};
use stowage_plugin_api::testing::{count_releases, PluginTest, Stored};
use stowage_plugin_api::{ErrorKind, Value};

use crate::ffi::test_data::invalid_batch;
use crate::ffi::{export_batch, import_batch};
use crate::read::{copied_buffers, read_file, Codec};
use crate::write::write_file;
use crate::ArrowPlugin;

fn many_types(offset: i32) -> RecordBatch {
    let n = 4usize;
    let ints = |f: fn(i32) -> Option<i32>| (0..n as i32).map(|i| f(i + offset)).collect::<Vec<_>>();
    let mut list = ListBuilder::new(Int32Builder::new());
    list.append_value([Some(1), None, Some(3)]);
    list.append_null();
    list.append_value([]);
    list.append_value([Some(offset)]);
    let list: ListArray = list.finish();
    let mut map = MapBuilder::new(None, StringBuilder::new(), Int32Builder::new());
    for i in 0..n as i32 {
        map.keys().append_value(format!("k{i}"));
        map.values().append_value(i);
        map.append(i != 2).expect("map row");
    }
    let map = map.finish();
    let dict: DictionaryArray<Int8Type> = vec![Some("red"), None, Some("blue"), Some("red")]
        .into_iter()
        .collect();
    let union_fields = UnionFields::try_new(
        vec![0, 1],
        vec![
            Field::new("i", DataType::Int32, true),
            Field::new("s", DataType::Utf8, true),
        ],
    )
    .expect("union fields");
    let union = UnionArray::try_new(
        union_fields.clone(),
        ScalarBuffer::from(vec![0i8, 1, 0, 1]),
        None,
        vec![
            Arc::new(Int32Array::from(vec![Some(1), None, Some(3), Some(4)])) as ArrayRef,
            Arc::new(StringArray::from(vec!["a", "b", "c", "d"])),
        ],
    )
    .expect("valid union");
    let inner = StructArray::new(
        Fields::from(vec![Field::new("x", DataType::Float64, true)]),
        vec![Arc::new(Float64Array::from(vec![
            Some(0.5),
            None,
            Some(1.5),
            Some(-0.0),
        ])) as ArrayRef],
        None,
    );
    let ext = Field::new("ext", DataType::FixedSizeBinary(2), true).with_metadata(HashMap::from([
        ("ARROW:extension:name".to_owned(), "my.ext".to_owned()),
        ("ARROW:extension:metadata".to_owned(), "{}".to_owned()),
    ]));
    let columns: Vec<(Field, ArrayRef)> = vec![
        (
            Field::new("i8", DataType::Int8, true),
            Arc::new(Int8Array::from(vec![Some(-1), None, Some(127), Some(-128)])),
        ),
        (
            Field::new("i16", DataType::Int16, false),
            Arc::new(Int16Array::from(vec![1, 2, 3, 4])),
        ),
        (
            Field::new("i32", DataType::Int32, true),
            Arc::new(Int32Array::from(ints(|i| (i % 2 == 0).then_some(i)))),
        ),
        (
            Field::new("i64", DataType::Int64, true),
            Arc::new(Int64Array::from(vec![
                Some(i64::MIN),
                None,
                Some(0),
                Some(i64::MAX),
            ])),
        ),
        (
            Field::new("u8", DataType::UInt8, true),
            Arc::new(UInt8Array::from(vec![0, 1, 2, 255])),
        ),
        (
            Field::new("u16", DataType::UInt16, true),
            Arc::new(UInt16Array::from(vec![0, 1, 2, 65535])),
        ),
        (
            Field::new("u32", DataType::UInt32, true),
            Arc::new(UInt32Array::from(vec![0, 1, 2, u32::MAX])),
        ),
        (
            Field::new("u64", DataType::UInt64, true),
            Arc::new(UInt64Array::from(vec![0, 1, 2, u64::MAX])),
        ),
        (
            Field::new("f32", DataType::Float32, true),
            Arc::new(Float32Array::from(vec![
                Some(f32::NAN),
                None,
                Some(1.0),
                Some(f32::INFINITY),
            ])),
        ),
        (
            Field::new("bool", DataType::Boolean, true),
            Arc::new(BooleanArray::from(vec![
                Some(true),
                None,
                Some(false),
                Some(true),
            ])),
        ),
        (
            Field::new("utf8", DataType::Utf8, true),
            Arc::new(StringArray::from(vec![
                Some("é✓"),
                None,
                Some(""),
                Some("x"),
            ])),
        ),
        (
            Field::new("large_utf8", DataType::LargeUtf8, true),
            Arc::new(LargeStringArray::from(vec![
                Some("a"),
                None,
                Some("b"),
                Some("c"),
            ])),
        ),
        (
            Field::new("binary", DataType::Binary, true),
            Arc::new(BinaryArray::from(vec![
                Some(&b"\x00\x01"[..]),
                None,
                Some(b""),
                Some(b"z"),
            ])),
        ),
        (
            ext,
            Arc::new(
                FixedSizeBinaryArray::try_from_sparse_iter_with_size(
                    vec![Some(b"ab"), None, Some(b"cd"), Some(b"ef")].into_iter(),
                    2,
                )
                .expect("fsb"),
            ),
        ),
        (
            Field::new(
                "ts",
                DataType::Timestamp(
                    arrow_schema::TimeUnit::Microsecond,
                    Some("Europe/Paris".into()),
                ),
                true,
            ),
            Arc::new(
                TimestampMicrosecondArray::from(vec![Some(0), None, Some(1), Some(2)])
                    .with_timezone("Europe/Paris"),
            ),
        ),
        (
            Field::new("dec", DataType::Decimal128(20, 3), true),
            Arc::new(
                Decimal128Array::from(vec![Some(12345), None, Some(-1), Some(0)])
                    .with_precision_and_scale(20, 3)
                    .expect("decimal"),
            ),
        ),
        (
            Field::new(
                "interval",
                DataType::Interval(arrow_schema::IntervalUnit::MonthDayNano),
                true,
            ),
            Arc::new(IntervalMonthDayNanoArray::from(vec![
                Some(IntervalMonthDayNano::new(1, 2, 3)),
                None,
                Some(IntervalMonthDayNano::new(-1, 0, 0)),
                Some(IntervalMonthDayNano::ZERO),
            ])),
        ),
        (
            Field::new("list", list.data_type().clone(), true),
            Arc::new(list),
        ),
        (
            Field::new("map", map.data_type().clone(), true),
            Arc::new(map),
        ),
        (
            Field::new(
                "dict",
                DataType::Dictionary(Box::new(DataType::Int8), Box::new(DataType::Utf8)),
                true,
            ),
            Arc::new(dict),
        ),
        (
            Field::new(
                "union",
                DataType::Union(union_fields, arrow_schema::UnionMode::Sparse),
                false,
            ),
            Arc::new(union),
        ),
        (
            Field::new("struct", inner.data_type().clone(), true),
            Arc::new(inner),
        ),
        (
            Field::new("null", DataType::Null, true),
            Arc::new(NullArray::new(n)),
        ),
    ];
    let (fields, arrays): (Vec<Field>, Vec<ArrayRef>) = columns.into_iter().unzip();
    let schema = Schema::new(fields).with_metadata(HashMap::from([(
        "origin".to_owned(),
        "unit test".to_owned(),
    )]));
    RecordBatch::try_new(Arc::new(schema), arrays).expect("valid batch")
}

/// Serializes `batches` through the plugin, counting every release.
fn serialize_counted(
    batches: &[RecordBatch],
    options: &[(&str, &str)],
) -> Result<Stored, stowage_plugin_api::PluginError> {
    let mut counts = Vec::new();
    let mut exported = Vec::new();
    for batch in batches {
        let (wrapped, count) = count_releases(export_batch(batch).expect("export"));
        exported.push(wrapped);
        counts.push(count);
    }
    let mut value = Value::Arrow(exported);
    let result = PluginTest::new(ArrowPlugin).serialize(&mut value, options);
    drop(value);
    for count in &counts {
        assert_eq!(count.get(), (1, 1), "every export released exactly once");
    }
    result
}

/// Deserializes, then imports each exported batch through a release
/// counter: the schema is released on import, the array once its data drops.
fn assert_load_releases_once(stored: &Stored) {
    let value = PluginTest::new(ArrowPlugin)
        .deserialize(&stored.metadata, &stored.blobs)
        .expect("deserialize");
    let Value::Arrow(batches) = value else {
        panic!("not an arrow value");
    };
    for batch in batches {
        let (wrapped, count) = count_releases(batch);
        let imported = import_batch(wrapped).expect("import");
        assert_eq!(
            count.get(),
            (1, 0),
            "schema released on import, array still held"
        );
        drop(imported);
        assert_eq!(
            count.get(),
            (1, 1),
            "array released once its data is dropped"
        );
    }
}

fn load_plain(stored: &Stored) -> Vec<RecordBatch> {
    let value = PluginTest::new(ArrowPlugin)
        .deserialize(&stored.metadata, &stored.blobs)
        .expect("deserialize");
    let Value::Arrow(batches) = value else {
        panic!("not an arrow value");
    };
    batches
        .into_iter()
        .map(|b| import_batch(b).expect("import"))
        .collect()
}

fn info(stored: &Stored, key: &str, value: &str) -> bool {
    format!("{:?}", stored.metadata).contains(&format!("(\"{key}\", \"{value}\")"))
}

#[test]
fn c_data_round_trip_keeps_every_type_and_releases_each_export_once() {
    let batches = vec![many_types(0), many_types(10)];
    let stored = serialize_counted(&batches, &[]).expect("serialize");
    assert_eq!(stored.blobs.len(), 1);
    assert!(info(&stored, "compression", "none"));
    assert!(info(&stored, "rows", "8"));
    assert!(info(&stored, "batches", "2"));
    assert_load_releases_once(&stored);
    let back = load_plain(&stored);
    assert_eq!(back, batches);
    assert_eq!(back[0].schema().metadata()["origin"], "unit test");
}

#[test]
fn compression_option_is_applied_and_recorded() {
    let batches = vec![many_types(0)];
    for (option, codec) in [
        ("zstd", Codec::Zstd),
        ("lz4", Codec::Lz4),
        ("none", Codec::None),
    ] {
        let stored = serialize_counted(&batches, &[("compression", option)]).expect("serialize");
        let table = read_file(&stored.blobs[0].1).expect("readable");
        assert_eq!(table.codec, codec);
        assert!(info(&stored, "compression", option));
        assert_eq!(load_plain(&stored), batches);
    }
}

#[test]
fn uncompressed_loads_point_into_the_blob_and_compressed_ones_are_recorded_as_copies() {
    let batches = vec![many_types(0), many_types(10)];
    for (option, load) in [
        ("none", "zero-copy"),
        ("lz4", "copy: lz4 decompression"),
        ("zstd", "copy: zstd decompression"),
    ] {
        let stored = serialize_counted(&batches, &[("compression", option)]).expect("serialize");
        assert!(
            info(&stored, "load", load),
            "{option}: {:?}",
            stored.metadata
        );
        let back = load_plain(&stored);
        assert_eq!(back, batches);
        let (copied, total) = copied_buffers(&back, &stored.blobs[0].1);
        assert!(
            total > 40,
            "{option}: every type's buffers counted ({total})"
        );
        // Buffers that compression would not shrink are stored raw (length
        // prefix -1) and still read in place; the rest are decompressed.
        match option {
            "none" => assert_eq!(copied, 0, "{option}: copied {copied} of {total}"),
            _ => assert!(copied > 0, "{option}: copied {copied} of {total}"),
        }
    }
}

/// A file from a writer that aligns buffers to 8 bytes only (like
/// pyarrow's default), with a decimal128 column (16-byte values) placed at
/// an offset that is 8 modulo 16.
fn file_aligned_to_8(rows_before: usize) -> Vec<u8> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("a", DataType::Int64, false),
        Field::new("d", DataType::Decimal128(20, 2), false),
    ]));
    let batch = RecordBatch::try_new(
        Arc::clone(&schema),
        vec![
            Arc::new(Int64Array::from_iter_values(0..rows_before as i64)),
            Arc::new(
                Decimal128Array::from_iter_values((0..rows_before as i128).map(|i| i * 100))
                    .with_precision_and_scale(20, 2)
                    .expect("valid decimal"),
            ),
        ],
    )
    .expect("batch");
    let options = IpcWriteOptions::try_new(8, false, MetadataVersion::V5).expect("options");
    let mut writer =
        FileWriter::try_new_with_options(Vec::new(), &schema, options).expect("writer");
    writer.write(&batch).expect("write");
    writer.into_inner().expect("finish")
}

#[test]
fn ingest_records_buffers_a_load_must_realign() {
    let test = PluginTest::new(ArrowPlugin);
    // One int64 puts the decimals at 8 modulo 16 in the file; two keep them
    // at 0 modulo 16.
    for (rows, load) in [(1, "copy: 1 of 2 buffers realigned"), (2, "zero-copy")] {
        let stored = test.ingest(&file_aligned_to_8(rows), &[]).expect("ingest");
        assert!(info(&stored, "load", load), "{rows}: {:?}", stored.metadata);
    }
}

#[test]
fn unknown_compression_is_refused_and_batches_still_released() {
    let error = serialize_counted(&[many_types(0)], &[("compression", "brotli")]).unwrap_err();
    assert_eq!(error.kind, ErrorKind::Unsupported);
    assert_eq!(
        error.message,
        "unknown compression `brotli`; expected none, lz4 or zstd"
    );
}

#[test]
fn invalid_c_data_is_refused_by_full_validation_and_released_once() {
    let (batch, counts) = count_releases(invalid_batch());
    let mut value = Value::Arrow(vec![batch]);
    let error = PluginTest::new(ArrowPlugin)
        .serialize(&mut value, &[])
        .unwrap_err();
    drop(value);
    assert_eq!(error.kind, ErrorKind::InvalidInput, "{error}");
    assert_eq!(
        error.message,
        "invalid arrow data: Invalid argument error: Struct(\"s\": non-null Utf8) child #0 \
         invalid: Invalid argument error: Invalid UTF8 sequence at string index 0 (0..1): \
         invalid utf-8 sequence of 1 bytes from index 0"
    );
    assert_eq!(counts.get(), (1, 1));
}

#[test]
fn zero_batches_and_zero_rows_round_trip() {
    let stored = serialize_counted(&[], &[]).expect("serialize");
    let back = load_plain(&stored);
    assert_eq!(back.len(), 1);
    assert_eq!(back[0].num_rows(), 0);
    let empty = RecordBatch::new_empty(many_types(0).schema());
    let stored = serialize_counted(std::slice::from_ref(&empty), &[]).expect("serialize");
    assert_eq!(load_plain(&stored), vec![empty]);
}

#[test]
fn mismatched_schemas_are_refused() {
    let other = RecordBatch::try_new(
        Arc::new(Schema::new(vec![Field::new("a", DataType::Int32, false)])),
        vec![Arc::new(Int32Array::from(vec![1]))],
    )
    .expect("batch");
    let error = serialize_counted(&[many_types(0), other], &[]).unwrap_err();
    assert_eq!(error.message, "batch 1 has a different schema from batch 0");
}

fn ipc_file(batches: &[RecordBatch]) -> Vec<u8> {
    let mut out = Vec::new();
    write_file(
        &mut out,
        &batches[0].schema(),
        batches,
        Codec::None,
        &HashMap::new(),
    )
    .expect("write");
    out
}

fn ipc_stream(batches: &[RecordBatch]) -> Vec<u8> {
    let mut writer = StreamWriter::try_new(Vec::new(), &batches[0].schema()).expect("writer");
    for batch in batches {
        writer.write(batch).expect("write");
    }
    writer.into_inner().expect("finish")
}

#[test]
fn ingest_stores_files_unchanged_and_streams_as_files() {
    let test = PluginTest::new(ArrowPlugin);
    let batches = vec![many_types(0), many_types(1)];
    let file = ipc_file(&batches);
    assert!(crate::read::detect(&file).is_some());
    let stored = test.ingest(&file, &[]).expect("ingest file");
    assert_eq!(stored.blobs[0].1, file);
    assert_eq!(
        test.export(&stored.metadata, &stored.blobs)
            .expect("export"),
        file
    );
    let stream = ipc_stream(&batches);
    assert_eq!(crate::read::detect(&stream), Some(crate::IpcFormat::Stream));
    let stored = test
        .ingest(&stream, &[("compression", "zstd")])
        .expect("ingest stream");
    let table = read_file(&stored.blobs[0].1).expect("a file");
    assert_eq!(table.codec, Codec::Zstd);
    assert_eq!(table.batches, batches);
}

#[test]
fn truncated_and_bit_flipped_files_are_errors_never_panics() {
    let test = PluginTest::new(ArrowPlugin);
    let batch = RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            Field::new("a", DataType::Int32, true),
            Field::new("s", DataType::Utf8, true),
        ])),
        vec![
            Arc::new(Int32Array::from(vec![Some(1), None, Some(3)])),
            Arc::new(StringArray::from(vec![Some("x"), Some("yy"), None])),
        ],
    )
    .expect("batch");
    for bytes in [
        ipc_file(std::slice::from_ref(&batch)),
        ipc_stream(std::slice::from_ref(&batch)),
    ] {
        for cut in 0..bytes.len() {
            // A stream cut at a message boundary is a valid shorter stream.
            if let Err(error) = test.ingest(&bytes[..cut], &[]) {
                assert_ne!(error.kind, ErrorKind::Panic, "cut {cut}: {error}");
            }
        }
        for i in 0..bytes.len() {
            for bit in [0x01u8, 0x80, 0xff] {
                let mut flipped = bytes.clone();
                flipped[i] ^= bit;
                if let Err(error) = test.ingest(&flipped, &[]) {
                    assert_ne!(error.kind, ErrorKind::Panic, "byte {i}: {error}");
                    assert!(!error.message.contains('\n'), "{error}");
                }
            }
        }
    }
    let file = ipc_file(std::slice::from_ref(&batch));
    let error = test.ingest(&file[..file.len() - 1], &[]).unwrap_err();
    assert_eq!(error.kind, ErrorKind::InvalidInput);
}

#[test]
fn huge_declared_sizes_are_refused_without_allocating() {
    let batch = many_types(0);
    let mut file = ipc_file(std::slice::from_ref(&batch));
    // The footer's first block: set its body length to 2^62.
    let table = read_file(&file).expect("valid");
    drop(table);
    let len = file.len();
    let footer_len =
        i32::from_le_bytes(file[len - 10..len - 6].try_into().expect("4 bytes")) as usize;
    let footer_start = len - 10 - footer_len;
    let footer = arrow_ipc::root_as_footer(&file[footer_start..len - 10]).expect("footer");
    let block = footer.recordBatches().expect("blocks").get(0);
    let needle = block.bodyLength().to_le_bytes();
    let at = file[footer_start..len - 10]
        .windows(8)
        .position(|w| w == needle)
        .expect("body length in footer")
        + footer_start;
    file[at..at + 8].copy_from_slice(&(1i64 << 62).to_le_bytes());
    let error = PluginTest::new(ArrowPlugin).ingest(&file, &[]).unwrap_err();
    assert_eq!(error.kind, ErrorKind::InvalidInput);
    assert!(error.message.contains("lies outside the file"), "{error}");
}

#[test]
fn describe_shows_schema_rows_and_first_values() {
    let stored = serialize_counted(&[many_types(0)], &[("compression", "lz4")]).expect("serialize");
    let text = PluginTest::new(ArrowPlugin)
        .describe(&stored.metadata, &stored.blobs)
        .expect("describe");
    assert!(
        text.starts_with("arrow table: 4 rows, 23 columns, 1 batches, compression lz4"),
        "{text}"
    );
    assert!(text.contains("\n  i16: Int16 not null"), "{text}");
    assert!(text.contains("metadata origin = unit test"), "{text}");
    assert!(text.contains("ARROW:extension:name = my.ext"), "{text}");
    assert!(text.contains("\"é✓\""), "{text}");
}

#[test]
fn not_arrow_is_not_sniffed_and_not_ingested() {
    let test = PluginTest::new(ArrowPlugin);
    assert!(!stowage_plugin_api::Plugin::sniff(
        test.plugin(),
        b"{\"json\": 1}"
    ));
    let error = test.ingest(b"hello world, not arrow", &[]).unwrap_err();
    assert_eq!(error.message, "not an arrow ipc file or stream");
}

#[test]
fn fuzz_seed_corpus_reads_and_survives_mutation() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus");
    let mut seen = 0;
    for (target, stream) in [("arrow_ipc_file", false), ("arrow_ipc_stream", true)] {
        let dir = std::fs::read_dir(root.join(target)).expect("seed corpus exists");
        for entry in dir {
            let path = entry.expect("entry").path();
            // Only the checked-in seeds: a local fuzz run adds its findings
            // (named by hash, no extension) to the same directory.
            if !matches!(
                path.extension().and_then(|e| e.to_str()),
                Some("arrow" | "arrows")
            ) {
                continue;
            }
            let bytes = std::fs::read(&path).expect("seed");
            let table = if stream {
                crate::read::read_stream(&bytes)
            } else {
                read_file(&bytes)
            };
            let table = table.expect("every seed is valid");
            let _ = crate::describe::describe(&table);
            // Zeroing any 8-byte window never panics.
            for at in (0..bytes.len().saturating_sub(8)).step_by(61) {
                let mut broken = bytes.clone();
                broken[at..at + 8].fill(0);
                let _ = crate::read::read(&broken);
            }
            seen += 1;
        }
    }
    assert!(seen >= 10, "{seen} seeds");
}

#[test]
fn layout_walk_refuses_what_arrow_ipc_would_panic_on() {
    use crate::schema::{check_layout, Layout};
    let schema = Schema::new(vec![
        Field::new("a", DataType::Int32, true),
        Field::new("s", DataType::Utf8, true),
    ]);
    let layout = |nodes: Vec<(u64, u64)>, buffers: Vec<u64>| Layout {
        nodes,
        buffers,
        variadic: vec![],
        v4: false,
    };
    let ok = layout(vec![(100, 5), (100, 0)], vec![13, 400, 0, 404, 7]);
    assert!(check_layout(&schema, &ok).is_ok());
    let short_bitmap = layout(vec![(100, 5), (100, 0)], vec![1, 400, 0, 404, 7]);
    assert_eq!(
        check_layout(&schema, &short_bitmap).unwrap_err().to_string(),
        "malformed arrow ipc data: record batch layout: `a` has 100 rows but a 1-byte validity bitmap"
    );
    let ragged_offsets = layout(vec![(100, 0), (100, 0)], vec![0, 400, 0, 403, 7]);
    assert_eq!(
        check_layout(&schema, &ragged_offsets)
            .unwrap_err()
            .to_string(),
        "malformed arrow ipc data: record batch layout: `s` has a 403-byte buffer of 4-byte values"
    );
    let missing = layout(vec![(100, 0)], vec![0, 400]);
    assert_eq!(
        check_layout(&schema, &missing).unwrap_err().to_string(),
        "malformed arrow ipc data: record batch layout: no field node left for `s`"
    );
}
