//! Integration and interop tests of the arrow plugin, through the real
//! loaded library: pyarrow writes IPC files and streams of every type it
//! shares with arrow-rs, stowage stores and exports them, pyarrow reads back
//! equal tables (metadata included); values loaded through the host and
//! re-saved (fresh C Data exports into `serialize`) read equal too; malformed
//! files are refused with one clear line.
//!
//! C Data Interface round trips with release counters, through the host and
//! the loaded plugin, live in [`c_data`] (no Python; CI also runs them under
//! valgrind). The interop tests here check every share the host hands the
//! plugin is released by the batch `Arc`s returning to one owner.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use stowage::Value;
use stowage_tests::{run_python, StowageCmd, TestDir};

mod c_data;

/// Writes the interop inputs into `argv[1]` and prints their file names.
const MAKE_FILES: &str = r#"
import sys, os, decimal
import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc

out = sys.argv[1]
n = 10
mask = np.array([i % 3 == 1 for i in range(n)])

def ints(t, lo=-3):
    return pa.array(np.arange(lo, lo + n), mask=mask).cast(t)

def view(t, storage):
    return pa.array(np.arange(n) * 1000 + 7, type=storage, mask=mask).view(t)

cols = {
    "i8": ints(pa.int8()), "i16": ints(pa.int16()), "i32": ints(pa.int32()), "i64": ints(pa.int64()),
    "u8": ints(pa.uint8(), 0), "u16": ints(pa.uint16(), 0), "u32": ints(pa.uint32(), 0), "u64": ints(pa.uint64(), 0),
    "f16": pa.array(np.linspace(-2, 2, n).astype(np.float16), mask=mask),
    "f32": pa.array(np.linspace(-2, 2, n).astype(np.float32), mask=mask),
    "f64": pa.array(np.linspace(-2, 2, n), mask=mask),
    "bool": pa.array([i % 2 == 0 for i in range(n)], mask=mask),
    "utf8": pa.array([f"s{i}é" for i in range(n)], mask=mask),
    "large_utf8": pa.array([f"L{i}" for i in range(n)], type=pa.large_string(), mask=mask),
    "binary": pa.array([bytes([i, 0, 255]) for i in range(n)], mask=mask),
    "large_binary": pa.array([bytes([i]) * i for i in range(n)], type=pa.large_binary(), mask=mask),
    "fsb": pa.array([bytes([i, i, i]) for i in range(n)], type=pa.binary(3), mask=mask),
    "date32": view(pa.date32(), pa.int32()), "date64": view(pa.date64(), pa.int64()),
    "time32s": view(pa.time32("s"), pa.int32()), "time32ms": view(pa.time32("ms"), pa.int32()),
    "time64us": view(pa.time64("us"), pa.int64()), "time64ns": view(pa.time64("ns"), pa.int64()),
    "ts_s": view(pa.timestamp("s"), pa.int64()),
    "ts_ms_utc": view(pa.timestamp("ms", tz="UTC"), pa.int64()),
    "ts_us_tokyo": view(pa.timestamp("us", tz="Asia/Tokyo"), pa.int64()),
    "ts_ns_offset": view(pa.timestamp("ns", tz="+05:30"), pa.int64()),
    "dur_s": view(pa.duration("s"), pa.int64()), "dur_ms": view(pa.duration("ms"), pa.int64()),
    "dur_us": view(pa.duration("us"), pa.int64()), "dur_ns": view(pa.duration("ns"), pa.int64()),
    "dec128": pa.array([None if mask[i] else decimal.Decimal(f"{i}.{i:02d}") for i in range(n)], pa.decimal128(10, 2)),
    "dec256": pa.array([None if mask[i] else decimal.Decimal(f"-{i}123456789012345678901234567890.12345") for i in range(n)], pa.decimal256(50, 5)),
    "interval": pa.array([None if mask[i] else (i, -i, i * 1000) for i in range(n)], pa.month_day_nano_interval()),
    "list": pa.array([None if mask[i] else [j for j in range(i % 4)] for i in range(n)], pa.list_(pa.int32())),
    "large_list": pa.array([None if mask[i] else [str(j) for j in range(i % 3)] for i in range(n)], pa.large_list(pa.string())),
    "fsl": pa.array([None if mask[i] else [i * 0.5, None] for i in range(n)], pa.list_(pa.float64(), 2)),
    "struct": pa.array([None if mask[i] else {"x": i, "y": None if i == 4 else f"y{i}"} for i in range(n)],
                       pa.struct([("x", pa.int64()), ("y", pa.string())])),
    "map": pa.array([None if mask[i] else [(f"k{j}", j if j != 1 else None) for j in range(i % 3)] for i in range(n)],
                    pa.map_(pa.string(), pa.int32())),
    "dict": pa.array([None if mask[i] else ["red", "green", "blue"][i % 3] for i in range(n)]).dictionary_encode(),
    "list_of_dict": pa.ListArray.from_arrays(pa.array(list(range(0, 2 * n + 1, 2)), pa.int32()),
                                             pa.array([["a", "b", "c"][i % 3] for i in range(2 * n)]).dictionary_encode()),
    "sparse_union": pa.UnionArray.from_sparse(pa.array([i % 2 for i in range(n)], pa.int8()),
                                              [pa.array(range(n), pa.int64()), pa.array([f"u{i}" for i in range(n)])],
                                              ["int", "str"]),
    "dense_union": pa.UnionArray.from_dense(pa.array([i % 2 for i in range(n)], pa.int8()),
                                            pa.array([i // 2 for i in range(n)], pa.int32()),
                                            [pa.array([1.5 * i for i in range(5)]), pa.array([b"x" * i for i in range(5)])],
                                            ["f", "b"]),
    "null": pa.nulls(n),
    "ext": pa.array([bytes([i]) * 4 for i in range(n)], type=pa.binary(4)),
}
fields = []
for name, arr in cols.items():
    meta = None
    if name == "ext":
        meta = {b"ARROW:extension:name": b"stowage.test", b"ARROW:extension:metadata": b"{\"v\":1}"}
    if name == "i32":
        meta = {b"field-key": b"field value"}
    fields.append(pa.field(name, arr.type, nullable=True, metadata=meta))
schema = pa.schema(fields, metadata={b"origin": b"pyarrow", b"note": b"every shared type"})
batch = pa.RecordBatch.from_arrays(list(cols.values()), schema=schema)
batches = [batch.slice(0, 4), batch.slice(4, 5), batch.slice(9, 1)]

def write(name, batches, schema, stream=False, compression=None):
    options = ipc.IpcWriteOptions(compression=compression)
    opener = ipc.new_stream if stream else ipc.new_file
    with opener(os.path.join(out, name), schema, options=options) as writer:
        for b in batches:
            writer.write_batch(b)
    print(name)

write("all.arrow", batches, schema)
write("all.arrows", batches, schema, stream=True)
write("all_lz4.arrow", batches, schema, compression="lz4")
write("all_zstd.arrow", batches, schema, compression="zstd")
write("all_zstd.arrows", batches, schema, stream=True, compression="zstd")
write("no_batches.arrow", [], schema)
write("no_batches.arrows", [], schema, stream=True)
write("zero_rows.arrow", [batch.slice(0, 0)], schema)
simple = pa.schema([("a", pa.int64()), ("b", pa.string())])
many = [pa.record_batch([pa.array(range(i, i + 3)), pa.array([f"r{i}"] * 3)], schema=simple) for i in range(7)]
write("many.arrow", many, simple)
"#;

/// Compares pairs `argv[1:]` = (original, stowage's), printing one line per
/// pair; fails on the first difference.
const COMPARE: &str = r#"
import sys
import pyarrow as pa
import pyarrow.ipc as ipc

def read(path):
    with open(path, "rb") as f:
        head = f.read(6)
    if head == b"ARROW1":
        return ipc.open_file(path).read_all()
    return ipc.open_stream(path).read_all()

args = sys.argv[1:]
for original, ours in zip(args[::2], args[1::2]):
    with open(ours, "rb") as f:
        assert f.read(6) == b"ARROW1", f"{ours} is not an IPC file"
    a, b = read(original), read(ours)
    assert a.schema.equals(b.schema, check_metadata=True), f"{original}: schema\n{a.schema}\n---\n{b.schema}"
    for field in a.schema:
        assert b.schema.field(field.name).metadata == field.metadata, field.name
    assert a.equals(b, check_metadata=True), f"{original}: data differs"
    print("equal", original.rsplit("/", 1)[-1], a.num_rows)
"#;

fn arrow_dir(name: &str) -> TestDir {
    let dir = TestDir::new(name);
    dir.install("stowage-arrow", "stowage_arrow");
    dir
}

/// pyarrow writes the inputs; returns their paths.
fn make_inputs(dir: &TestDir) -> Vec<PathBuf> {
    let input = dir.root.join("in");
    fs::create_dir_all(&input).expect("mkdir");
    run_python(MAKE_FILES, &[&input])
        .lines()
        .map(|name| input.join(name))
        .collect()
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

fn artifact_name(path: &Path) -> String {
    path.file_name()
        .expect("file name")
        .to_string_lossy()
        .replace('.', "_")
}

/// Asserts pyarrow reads each `(original, ours)` pair as equal tables.
fn assert_pyarrow_equal(pairs: &[(PathBuf, PathBuf)]) {
    let args: Vec<&Path> = pairs
        .iter()
        .flat_map(|(a, b)| [a.as_path(), b.as_path()])
        .collect();
    let out = run_python(COMPARE, &args);
    assert_eq!(out.lines().count(), pairs.len(), "{out}");
}

#[test]
fn pyarrow_files_and_streams_round_trip_through_put_and_get() {
    let dir = arrow_dir("arrow-pyarrow-put-get");
    let inputs = make_inputs(&dir);
    assert_eq!(inputs.len(), 9);
    let mut pairs = Vec::new();
    for input in &inputs {
        let name = artifact_name(input);
        StowageCmd::new(&dir, &["put", &name, path_str(input)]).ok();
        let out = dir.root.join(format!("{name}.out.arrow"));
        StowageCmd::new(&dir, &["get", &name, "-o", path_str(&out)]).ok();
        if input.extension().is_some_and(|e| e == "arrow") {
            assert_eq!(
                fs::read(&out).expect("read"),
                fs::read(input).expect("read")
            );
        }
        pairs.push((input.clone(), out));
    }
    assert_pyarrow_equal(&pairs);
}

#[test]
fn compression_option_rewrites_files_pyarrow_reads_equal() {
    let dir = arrow_dir("arrow-compression-opt");
    let inputs = make_inputs(&dir);
    let mut pairs = Vec::new();
    for (input, codec) in inputs.iter().zip(["zstd", "lz4", "none"].iter().cycle()) {
        let name = artifact_name(input);
        let opt = format!("compression={codec}");
        StowageCmd::new(&dir, &["put", &name, path_str(input), "--opt", &opt]).ok();
        let record = dir
            .host()
            .load_raw(&name, stowage::Verify::Hash)
            .expect("load raw")
            .0;
        let info = &record.meta.serializer_info;
        assert!(
            info.contains(&("compression".to_owned(), (*codec).to_owned())),
            "{info:?}"
        );
        let out = dir.root.join(format!("{name}.{codec}.arrow"));
        StowageCmd::new(&dir, &["get", &name, "-o", path_str(&out)]).ok();
        pairs.push((input.clone(), out));
    }
    assert_pyarrow_equal(&pairs);
}

#[test]
fn loaded_tables_resaved_through_the_host_read_equal_in_pyarrow() {
    let dir = arrow_dir("arrow-host-resave");
    let inputs = make_inputs(&dir);
    let host = dir.host();
    let mut pairs = Vec::new();
    for (i, input) in inputs.iter().enumerate() {
        let name = artifact_name(input);
        let bytes = fs::read(input).expect("read input");
        host.put_file(&name, &bytes, None, &[], "test")
            .expect("put_file");
        let loaded = if i % 2 == 0 {
            host.load(&name)
        } else {
            host.load_mapped(&name)
        }
        .expect("load");
        let Value::Arrow(table) = &loaded.value else {
            panic!("{name} did not load as arrow: {:?}", loaded.value);
        };
        assert!(!table.batches().is_empty(), "{name}: at least one batch");
        for options in [vec![], vec![("compression".to_owned(), "zstd".to_owned())]] {
            let copy = format!("{name}_copy");
            host.save(&copy, &loaded.value, &options).expect("save");
            // Every fresh export the plugin was handed has been released:
            // only the table itself still holds each batch.
            for batch in table.batches() {
                assert_eq!(Arc::strong_count(batch), 1, "{name}: a share leaked");
            }
            let out = dir.root.join(format!("{copy}{}.arrow", options.len()));
            let mut file = Vec::new();
            host.export_artifact(&copy, &mut file).expect("export");
            fs::write(&out, file).expect("write");
            pairs.push((input.clone(), out));
        }
    }
    drop(host);
    assert_pyarrow_equal(&pairs);
}

#[test]
fn show_describes_schema_rows_and_first_values() {
    let dir = arrow_dir("arrow-show");
    let inputs = make_inputs(&dir);
    let many = inputs
        .iter()
        .find(|p| p.ends_with("many.arrow"))
        .expect("many.arrow");
    StowageCmd::new(&dir, &["put", "many", path_str(many)]).ok();
    let text = StowageCmd::new(&dir, &["show", "many"]).ok();
    assert!(
        text.starts_with("arrow table: 21 rows, 2 columns, 7 batches, compression none\nschema:\n  a: Int64\n  b: Utf8\nfirst rows:\n  0 | \"r0\"\n"),
        "{text}"
    );
    assert!(text.contains("… 16 more"), "{text}");
}

#[test]
fn truncated_and_bit_flipped_files_are_refused_with_one_line() {
    let dir = arrow_dir("arrow-malformed");
    let inputs = make_inputs(&dir);
    let all = inputs
        .iter()
        .find(|p| p.ends_with("all.arrow"))
        .expect("all.arrow");
    let bytes = fs::read(all).expect("read");
    let bad = dir.root.join("bad.arrow");
    fs::write(&bad, &bytes[..bytes.len() / 2]).expect("write");
    StowageCmd::new(&dir, &["put", "t", path_str(&bad)]).fails(
        1,
        "error: cannot store t: arrow: malformed arrow ipc data: missing ARROW1 magic at the \
         start or end of the file",
    );
    // The footer length pointing before the start of the file.
    let mut flipped = bytes.clone();
    let at = bytes.len() - 7;
    flipped[at] ^= 0x7f;
    fs::write(&bad, &flipped).expect("write");
    StowageCmd::new(&dir, &["put", "t", path_str(&bad)]).fails(
        1,
        &format!(
            "error: cannot store t: arrow: truncated arrow ipc data: footer of {} bytes",
            i32::from_le_bytes(flipped[at - 3..at + 1].try_into().expect("4 bytes"))
        ),
    );
    // Every single-byte corruption of the body region is an error or a valid
    // file, never a crash; a sample keeps the test fast.
    for i in (8..bytes.len() - 10).step_by(97) {
        let mut flipped = bytes.clone();
        flipped[i] ^= 0xff;
        fs::write(&bad, &flipped).expect("write");
        let output = StowageCmd::new(&dir, &["put", "t", path_str(&bad)]).output();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            matches!(output.status.code(), Some(0) | Some(1)),
            "byte {i}: {:?}\n{stderr}",
            output.status
        );
        assert!(stderr.lines().count() <= 1, "byte {i}: {stderr}");
        assert!(!stderr.contains("panic"), "byte {i}: {stderr}");
    }
    StowageCmd::new(&dir, &["ls"]).ok();
}
