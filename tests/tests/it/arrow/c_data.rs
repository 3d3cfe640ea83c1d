//! C Data Interface round trips through the real loaded arrow plugin, with
//! counters proving every `release` runs exactly once (issue #6).
//!
//! - Save: the test exports arrow-rs batches with `stowage_arrow::export_batch`
//!   and wraps each root schema and array in a counter (`stowage_plugin_api::testing::count_releases`); the
//!   host keeps those originals and lends the plugin fresh shares per call.
//!   While the value lives nothing is released (0, 0); once it drops, each
//!   batch is released exactly once (1, 1) — after successful saves (plain,
//!   zstd, lz4, repeated, `save_many`) and refused ones alike.
//! - Load: `load`/`load_mapped` return the host's re-exports of the plugin's
//!   batches. Each is shared, counted and imported with
//!   `stowage_arrow::import_batch`: (1, 0) after the import (schema
//!   released, array held by the data), (1, 1) once the data drops.
//! - Zero-copy: with `load_mapped` of an uncompressed raw blob, every buffer
//!   of every imported batch lies inside the blob file's mapping, read from
//!   `/proc/self/maps`; the mapping outlives the loaded value while imported
//!   data still points into it, and is gone once that drops too (the
//!   plugin's exports, and with them the blob, were released). A zstd
//!   artifact records its copy and has buffers outside the mapping.
//!
//! None of these tests needs Python, so `.ci/run` also runs them (filter
//! `arrow::c_data::`) under valgrind: a leak the counters cannot see, such
//! as private data a `release` never frees, fails there.
//!
//! Decision: only the root schema and array of each batch are counted.
//! Children and dictionaries are released by their root's `release` (the
//! C Data Interface's rule), so a root released exactly once, a mapping that
//! disappears and a clean valgrind run together cover them.
//! Decision: mappings are read from `/proc/self/maps` (Linux, the tested
//! platform), matched by the blob file's canonical path.

use std::fs;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::types::Int16Type;
use arrow_array::{
    Array, ArrayRef, BinaryArray, BooleanArray, Date32Array, Decimal128Array, DictionaryArray,
    FixedSizeBinaryArray, Float64Array, Int16Array, Int32Array, Int64Array, LargeStringArray,
    ListArray, NullArray, RecordBatch, StringArray, StructArray, TimestampMicrosecondArray,
    UInt8Array,
};
use arrow_buffer::{Buffer, NullBuffer, OffsetBuffer, ScalarBuffer};
use arrow_data::ArrayData;
use arrow_schema::{DataType, Field, Fields, Schema, TimeUnit};
use stowage::{ArrowTable, Host, Value};
use stowage_plugin_api::testing::{count_releases, ReleaseCounts};
use stowage_plugin_api::ArrowBatch;

use stowage_tests::file_mappings;

use super::arrow_dir;

// ---- release counting ----

/// `batches` exported through the C Data Interface as a host value, each
/// batch counted.
fn counted_value(batches: &[RecordBatch]) -> (Value, Vec<Arc<ReleaseCounts>>) {
    let (exported, counts): (Vec<_>, Vec<_>) = batches
        .iter()
        .map(|batch| count_releases(stowage_arrow::export_batch(batch).expect("export")))
        .unzip();
    (Value::Arrow(ArrowTable::new(exported)), counts)
}

fn counts(releases: &[Arc<ReleaseCounts>]) -> Vec<(usize, usize)> {
    releases.iter().map(|r| r.get()).collect()
}

/// Imports a fresh share of each loaded batch through a counter, checking
/// (1, 0) right after the import; returns the data and the counters.
#[track_caller]
fn import_counted(table: &ArrowTable) -> (Vec<RecordBatch>, Vec<Arc<ReleaseCounts>>) {
    let mut imported = Vec::new();
    let mut releases = Vec::new();
    for (i, batch) in table.batches().iter().enumerate() {
        let (share, count) = count_releases(ArrowBatch::share(batch));
        imported.push(stowage_arrow::import_batch(share).expect("import"));
        assert_eq!(
            count.get(),
            (1, 0),
            "batch {i}: schema released by the import, array held by its data"
        );
        releases.push(count);
    }
    (imported, releases)
}

// ---- data ----

/// splitmix64: deterministic, poorly compressible test data.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const COLORS: [&str; 5] = ["red", "green", "blue", "cyan", "magenta"];

fn schema() -> Arc<Schema> {
    let point = Fields::from(vec![
        Field::new("x", DataType::Float64, true),
        Field::new("label", DataType::Utf8, true),
    ]);
    let entry = Fields::from(vec![
        Field::new("k", DataType::Int32, true),
        Field::new("v", DataType::Utf8, true),
    ]);
    let fields = vec![
        Field::new("id", DataType::Int64, false),
        Field::new("i32", DataType::Int32, true).with_metadata(
            [("unit".to_owned(), "metres".to_owned())]
                .into_iter()
                .collect(),
        ),
        Field::new("u8", DataType::UInt8, false),
        Field::new("f64", DataType::Float64, true),
        Field::new("flag", DataType::Boolean, true),
        Field::new("name", DataType::Utf8, true),
        Field::new("large", DataType::LargeUtf8, false),
        Field::new("bin", DataType::Binary, true),
        Field::new("fsb", DataType::FixedSizeBinary(4), false),
        Field::new("dec", DataType::Decimal128(20, 2), true),
        Field::new(
            "ts",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            true,
        ),
        Field::new("date", DataType::Date32, false),
        Field::new(
            "color",
            DataType::Dictionary(Box::new(DataType::Int16), Box::new(DataType::Utf8)),
            true,
        ),
        Field::new_list("list", Field::new_list_field(DataType::Int32, true), true),
        Field::new("point", DataType::Struct(point), true),
        Field::new_list(
            "entries",
            Field::new_list_field(DataType::Struct(entry), true),
            true,
        ),
        Field::new("nothing", DataType::Null, true),
    ];
    let metadata = [("origin".to_owned(), "c_data test".to_owned())]
        .into_iter()
        .collect();
    Arc::new(Schema::new(fields).with_metadata(metadata))
}

/// One batch of `rows` rows of every column in [`schema`], with nulls.
/// `colors` is shared by every batch: an IPC file holds one dictionary.
fn batch(rng: &mut Rng, rows: usize, colors: &ArrayRef) -> RecordBatch {
    let schema = schema();
    let field = |name: &str| -> Field { schema.field_with_name(name).expect("field").clone() };
    let valid = |rng: &mut Rng| rng.below(7) != 0;
    let text = |rng: &mut Rng| format!("{:x}", rng.next() >> rng.below(60));
    let id = Int64Array::from_iter_values((0..rows).map(|_| rng.next() as i64));
    let i32s: Int32Array = (0..rows)
        .map(|_| valid(rng).then(|| rng.next() as i32))
        .collect();
    let u8s = UInt8Array::from_iter_values((0..rows).map(|_| rng.next() as u8));
    let f64s: Float64Array = (0..rows)
        .map(|_| valid(rng).then(|| rng.next() as f64 / 3.0))
        .collect();
    let flags: BooleanArray = (0..rows)
        .map(|_| valid(rng).then(|| rng.next() & 1 == 0))
        .collect();
    let names: StringArray = (0..rows)
        .map(|_| valid(rng).then(|| format!("é{}", text(rng))))
        .collect();
    let large = LargeStringArray::from_iter_values((0..rows).map(|_| text(rng)));
    let bins: BinaryArray = (0..rows)
        .map(|_| {
            valid(rng).then(|| {
                let len = rng.below(9) as usize;
                rng.next().to_le_bytes()[..len].to_vec()
            })
        })
        .collect();
    let fsb =
        FixedSizeBinaryArray::try_from_iter((0..rows).map(|_| (rng.next() as u32).to_le_bytes()))
            .expect("fixed-size binary");
    let decs = (0..rows)
        .map(|_| valid(rng).then(|| i128::from(rng.next() as i64) * 1000))
        .collect::<Decimal128Array>()
        .with_precision_and_scale(20, 2)
        .expect("decimal");
    let ts = (0..rows)
        .map(|_| valid(rng).then(|| (rng.next() >> 12) as i64))
        .collect::<TimestampMicrosecondArray>()
        .with_timezone("UTC");
    let dates = Date32Array::from_iter_values((0..rows).map(|_| rng.below(40_000) as i32));
    let keys: Int16Array = (0..rows)
        .map(|_| valid(rng).then(|| rng.below(COLORS.len() as u64) as i16))
        .collect();
    let color =
        DictionaryArray::<Int16Type>::try_new(keys, Arc::clone(colors)).expect("dictionary");
    let list = {
        let lengths: Vec<usize> = (0..rows).map(|_| rng.below(5) as usize).collect();
        let items: Int32Array = (0..lengths.iter().sum())
            .map(|_| valid(rng).then(|| rng.next() as i32))
            .collect();
        let nulls = NullBuffer::from((0..rows).map(|_| valid(rng)).collect::<Vec<_>>());
        let DataType::List(item) = field("list").data_type().clone() else {
            unreachable!("list is a list")
        };
        ListArray::new(
            item,
            OffsetBuffer::from_lengths(lengths),
            Arc::new(items),
            Some(nulls),
        )
    };
    let point = {
        let DataType::Struct(fields) = field("point").data_type().clone() else {
            unreachable!("point is a struct")
        };
        let xs: Float64Array = (0..rows)
            .map(|_| valid(rng).then(|| rng.next() as f64))
            .collect();
        let labels: StringArray = (0..rows).map(|_| valid(rng).then(|| text(rng))).collect();
        let nulls = NullBuffer::from((0..rows).map(|_| valid(rng)).collect::<Vec<_>>());
        StructArray::new(fields, vec![Arc::new(xs), Arc::new(labels)], Some(nulls))
    };
    let entries = {
        let DataType::List(item) = field("entries").data_type().clone() else {
            unreachable!("entries is a list")
        };
        let DataType::Struct(fields) = item.data_type().clone() else {
            unreachable!("entries holds structs")
        };
        let lengths: Vec<usize> = (0..rows).map(|_| rng.below(3) as usize).collect();
        let total: usize = lengths.iter().sum();
        let ks: Int32Array = (0..total)
            .map(|_| valid(rng).then(|| rng.next() as i32))
            .collect();
        let vs: StringArray = (0..total).map(|_| valid(rng).then(|| text(rng))).collect();
        let struct_nulls = NullBuffer::from((0..total).map(|_| valid(rng)).collect::<Vec<_>>());
        let structs =
            StructArray::new(fields, vec![Arc::new(ks), Arc::new(vs)], Some(struct_nulls));
        let nulls = NullBuffer::from((0..rows).map(|_| valid(rng)).collect::<Vec<_>>());
        ListArray::new(
            item,
            OffsetBuffer::from_lengths(lengths),
            Arc::new(structs),
            Some(nulls),
        )
    };
    let columns: Vec<ArrayRef> = vec![
        Arc::new(id),
        Arc::new(i32s),
        Arc::new(u8s),
        Arc::new(f64s),
        Arc::new(flags),
        Arc::new(names),
        Arc::new(large),
        Arc::new(bins),
        Arc::new(fsb),
        Arc::new(decs),
        Arc::new(ts),
        Arc::new(dates),
        Arc::new(color),
        Arc::new(list),
        Arc::new(point),
        Arc::new(entries),
        Arc::new(NullArray::new(rows)),
    ];
    RecordBatch::try_new(schema, columns).expect("valid batch")
}

/// Three batches (the last a slice with a non-zero offset), ~3000 rows:
/// well over the store's raw-file threshold even zstd-compressed.
fn batches() -> Vec<RecordBatch> {
    let mut rng = Rng(6);
    let colors: ArrayRef = Arc::new(StringArray::from_iter_values(COLORS));
    let first = batch(&mut rng, 1200, &colors);
    let second = batch(&mut rng, 900, &colors);
    let third = batch(&mut rng, 1000, &colors).slice(7, 990);
    vec![first, second, third]
}

/// Rows in [`batches`].
const ROWS: usize = 1200 + 900 + 990;

fn opt(key: &str, value: &str) -> (String, String) {
    (key.to_owned(), value.to_owned())
}

fn info(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs.iter().map(|(k, v)| opt(k, v)).collect()
}

// ---- mappings ----

/// The address ranges at which `path` is mapped into this process.
fn mappings(path: &Path) -> Vec<Range<usize>> {
    file_mappings()
        .into_iter()
        .filter(|(_, mapped)| mapped == path)
        .map(|(range, _)| range)
        .collect()
}

/// Every non-empty buffer (validity, offsets, values; children and
/// dictionaries included) of `batches`, as address ranges.
fn buffer_ranges(batches: &[RecordBatch]) -> Vec<Range<usize>> {
    fn visit(data: &ArrayData, out: &mut Vec<Range<usize>>) {
        let nulls = data.nulls().map(|nulls| nulls.buffer());
        for buffer in data.buffers().iter().chain(nulls) {
            if !buffer.is_empty() {
                let start = buffer.as_ptr() as usize;
                out.push(start..start + buffer.len());
            }
        }
        for child in data.child_data() {
            visit(child, out);
        }
    }
    let mut out = Vec::new();
    for batch in batches {
        for column in batch.columns() {
            visit(&column.to_data(), &mut out);
        }
    }
    out
}

/// The canonical path of `record`'s one blob, which must be stored raw.
#[track_caller]
fn raw_blob_path(host: &Host, record: &stowage::Record) -> PathBuf {
    let blobs: Vec<(&str, &str)> = record
        .blobs
        .iter()
        .map(|b| (b.name.as_str(), b.storage.as_str()))
        .collect();
    assert_eq!(blobs, [("data", "raw")], "{}: one raw blob", record.name);
    let path = host.store().expect("store").blob_path(&record.blobs[0]);
    fs::canonicalize(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

// ---- tests ----

#[test]
fn c_data_saves_release_each_batch_once_when_the_value_drops() {
    let dir = arrow_dir("arrow-c-data-save");
    let host = dir.host();
    let batches = batches();
    for codec in ["none", "zstd", "lz4"] {
        let options = if codec == "none" {
            vec![]
        } else {
            vec![opt("compression", codec)]
        };
        let (value, releases) = counted_value(&batches);
        let load = match codec {
            "none" => "zero-copy".to_owned(),
            _ => format!("copy: {codec} decompression"),
        };
        let saved = host.save("t", &value, &options).expect("save");
        assert_eq!(
            saved.record.meta.serializer_info,
            info(&[
                ("batches", "3"),
                ("compression", codec),
                ("load", &load),
                ("rows", &ROWS.to_string()),
                ("source", "api"),
            ]),
            "{codec}"
        );
        assert_eq!(
            counts(&releases),
            [(0, 0); 3],
            "{codec}: the host keeps the originals"
        );
        // Another dispatch, and one value saved twice in a batch: fresh
        // shares each time. (Every dispatch already lends the value twice,
        // to `can_serialize` and then `serialize`; no fixture besides this
        // plugin claims arrow values, so there is no second candidate.)
        host.save("t", &value, &options).expect("save again");
        let records = host
            .save_many(&[("a", &value), ("b", &value)], &options)
            .expect("save_many");
        assert_eq!(records.len(), 2);
        assert_eq!(counts(&releases), [(0, 0); 3], "{codec}: still kept");
        drop(value);
        assert_eq!(
            counts(&releases),
            [(1, 1); 3],
            "{codec}: each batch released exactly once"
        );
    }
}

/// A batch of one string column `s`: valid, or holding invalid UTF-8 (with
/// offsets in bounds).
fn strings_batch(valid: bool) -> RecordBatch {
    let offsets = OffsetBuffer::new(ScalarBuffer::from(vec![0i32, 1, 3]));
    let first = if valid { b'a' } else { 0xff };
    let values = Buffer::from(vec![first, b'o', b'k']);
    // SAFETY: offsets are monotonic and within the 3 value bytes; the bytes
    // are deliberately invalid UTF-8 when `!valid`, to prove the plugin
    // validates what it imports; this test never reads them as strings.
    let strings = unsafe { StringArray::new_unchecked(offsets, values, None) };
    let schema = Schema::new(vec![Field::new("s", DataType::Utf8, false)]);
    RecordBatch::try_new(Arc::new(schema), vec![Arc::new(strings)]).expect("batch")
}

/// Every way the plugin (or the host, before calling it) refuses a value
/// still releases each batch exactly once, when the value drops, and
/// commits nothing.
#[test]
fn c_data_refused_saves_still_release_each_batch_once() {
    let dir = arrow_dir("arrow-c-data-refused");
    let host = dir.host();
    let good = batches();
    // The only candidate refused it: its message is the error.
    let refused = "cannot store t: arrow:";
    let cases = [
        (
            "unknown codec",
            good.clone(),
            vec![opt("compression", "brotli")],
            format!("{refused} unknown compression `brotli`; expected none, lz4 or zstd"),
        ),
        (
            // Refused by the host: the plugin is never called.
            "unknown option",
            good.clone(),
            vec![opt("level", "3")],
            "cannot store t: no serializer accepted the arrow value; tried: arrow \
             (unknown option level; accepted: compression)"
                .to_owned(),
        ),
        (
            // The first batch is imported, the third never is.
            "invalid utf-8",
            vec![
                strings_batch(true),
                strings_batch(false),
                strings_batch(true),
            ],
            vec![],
            format!(
                "{refused} invalid arrow data: Invalid argument error: \
                 Struct(\"s\": non-null Utf8) child #0 invalid: Invalid argument error: \
                 Invalid UTF8 sequence at string index 0 (0..1): invalid utf-8 sequence of 1 \
                 bytes from index 0"
            ),
        ),
        (
            "mismatched schemas",
            vec![good[0].clone(), strings_batch(true)],
            vec![],
            format!("{refused} batch 1 has a different schema from batch 0"),
        ),
    ];
    for (case, batches, options, expected) in cases {
        let n = batches.len();
        let (value, releases) = counted_value(&batches);
        let error = host.save("t", &value, &options).expect_err(case);
        assert_eq!(error.to_string(), expected, "{case}");
        assert_eq!(counts(&releases), vec![(0, 0); n], "{case}: still kept");
        drop(value);
        assert_eq!(
            counts(&releases),
            vec![(1, 1); n],
            "{case}: each batch released exactly once"
        );
        let missing = host.load("t").expect_err("nothing was committed");
        assert_eq!(missing.to_string(), "no artifact named t", "{case}");
    }
}

#[test]
fn c_data_loaded_batches_import_once_and_read_back_equal() {
    let dir = arrow_dir("arrow-c-data-load");
    let host = dir.host();
    let batches = batches();
    for codec in ["none", "zstd"] {
        let (value, _) = counted_value(&batches);
        host.save(codec, &value, &[opt("compression", codec)])
            .expect("save");
        for mapped in [false, true] {
            let loaded = if mapped {
                host.load_mapped(codec)
            } else {
                host.load(codec)
            }
            .expect("load");
            let Value::Arrow(table) = &loaded.value else {
                panic!("{codec}: not arrow: {:?}", loaded.value);
            };
            assert_eq!(table.batches().len(), 3, "{codec}");
            let (imported, releases) = import_counted(table);
            assert_eq!(imported, batches, "{codec} (mapped: {mapped})");
            drop(loaded);
            assert_eq!(
                counts(&releases),
                [(1, 0); 3],
                "{codec}: the imports hold their arrays"
            );
            drop(imported);
            assert_eq!(
                counts(&releases),
                [(1, 1); 3],
                "{codec}: each array released exactly once"
            );
        }
    }
}

#[test]
fn c_data_mapped_loads_point_into_the_blob_until_everything_drops() {
    let dir = arrow_dir("arrow-c-data-mapped");
    let host = dir.host();
    let batches = batches();
    for (codec, load) in [("none", "zero-copy"), ("zstd", "copy: zstd decompression")] {
        let (value, _) = counted_value(&batches);
        let saved = host
            .save(codec, &value, &[opt("compression", codec)])
            .expect("save");
        drop(value);
        let path = raw_blob_path(&host, &saved.record);
        assert_eq!(mappings(&path), [], "{codec}: not mapped before the load");

        let loaded = host.load_mapped(codec).expect("load_mapped");
        let recorded = &loaded.record.meta.serializer_info;
        assert!(
            recorded.contains(&opt("load", load)),
            "{codec}: {recorded:?}"
        );
        let maps = mappings(&path);
        assert_eq!(maps.len(), 1, "{codec}: mapped once: {maps:?}");
        let map = maps[0].clone();
        assert!(
            map.len() >= saved.record.blobs[0].size as usize,
            "{codec}: {map:?}"
        );
        let Value::Arrow(table) = &loaded.value else {
            panic!("{codec}: not arrow: {:?}", loaded.value);
        };
        let (imported, releases) = import_counted(table);
        assert_eq!(imported, batches, "{codec}");
        let ranges = buffer_ranges(&imported);
        let outside = ranges
            .iter()
            .filter(|r| !(map.start <= r.start && r.end <= map.end))
            .count();
        assert!(ranges.len() > 100, "{codec}: {} buffers", ranges.len());
        match codec {
            "none" => assert_eq!(outside, 0, "{codec}: of {} buffers", ranges.len()),
            _ => assert!(
                outside > 0,
                "{codec}: {outside} of {} buffers outside",
                ranges.len()
            ),
        }

        drop(loaded);
        assert_eq!(
            mappings(&path),
            std::slice::from_ref(&map),
            "{codec}: imported data still holds the blob"
        );
        drop(imported);
        assert_eq!(counts(&releases), [(1, 1); 3], "{codec}");
        assert_eq!(
            mappings(&path),
            [],
            "{codec}: every export released, and with them the blob"
        );
    }
}
