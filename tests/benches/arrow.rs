//! Arrow benchmarks through the real host with the release-built plugin
//! (SPEC §9, issue #6), each printed beside its goal or reference as a ratio:
//!
//! - save and load of a 10M-row × 3-column table (i64, f64, utf8; ~290 MB
//!   as an IPC file, ~370 MB in memory) through the host vs arrow-ipc used
//!   directly with the same durability and hashing (save: IPC file writer →
//!   blake3 → write → fsync file → rename → fsync directory; load: read →
//!   blake3 check → arrow-ipc's `FileDecoder` over the read buffer, zero-copy
//!   and validating as it builds each array, as the plugin does — the
//!   fastest way to use arrow-ipc, not the copying `FileReader`); goal ≥
//!   0.95× for both;
//! - `load_mapped` of a 1/16 table vs the full one; goal: equal (O(1) in
//!   size). Measured twice: for the fixed-width columns alone (i64, f64),
//!   which load in place with nothing to check per value, and for the whole
//!   table, whose utf8 column is validated (offsets, UTF-8) in O(rows)
//!   because a mapped blob is unverified and arrow-rs relies on valid data;
//! - save and verified-load throughput in MB/s beside Metaflow's recorded
//!   ~51 MB/s save and ~174 MB/s load (no goal set; the ratio is printed).
//!   The bytes counted are those of the stored IPC file: the sum of the
//!   saved record's blob sizes (logical, uncompressed), not the in-memory
//!   `get_array_memory_size`.
//!
//! Medians of several runs; nothing asserts a time. `--quick` (or `--test`)
//! is a smoke run on 200k rows. The store lives under the target dir and is
//! deleted at the end.

use std::fs;
use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use arrow_array::{ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray};
use arrow_buffer::Buffer;
use arrow_ipc::convert::fb_to_schema;
use arrow_ipc::reader::{read_footer_length, FileDecoder};
use arrow_ipc::writer::FileWriter;
use arrow_ipc::{root_as_footer, Block};
use arrow_schema::{DataType, Field, Schema};
use stowage::{ArrowTable, Value};
use stowage_tests::bench::{self, at_least, median, time};
use stowage_tests::TestDir;

/// Metaflow's recorded save and load throughput (issue #6), for the ratios.
const METAFLOW_SAVE_BYTES_PER_SEC: f64 = 51e6;
const METAFLOW_LOAD_BYTES_PER_SEC: f64 = 174e6;

/// How many batches every table has, so tables of different sizes differ
/// only in rows (a load costs a little per batch).
const BATCHES: usize = 10;

/// `rows` rows in [`BATCHES`] batches.
fn table(rows: usize) -> Vec<RecordBatch> {
    let batch_rows = rows.div_ceil(BATCHES);
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("x", DataType::Float64, true),
        Field::new("name", DataType::Utf8, true),
    ]));
    (0..rows)
        .step_by(batch_rows)
        .map(|start| {
            let end = (start + batch_rows).min(rows);
            let ids: ArrayRef = Arc::new(Int64Array::from_iter_values(start as i64..end as i64));
            let xs: ArrayRef = Arc::new(Float64Array::from_iter_values(
                (start..end).map(|i| i as f64 * 0.25),
            ));
            let names: ArrayRef = Arc::new(StringArray::from_iter_values(
                (start..end).map(|i| format!("r{i:08}")),
            ));
            RecordBatch::try_new(Arc::clone(&schema), vec![ids, xs, names]).expect("batch")
        })
        .collect()
}

/// The batches as a host value, handed over through the C Data Interface.
fn arrow_value(batches: &[RecordBatch]) -> Value {
    let exported = batches
        .iter()
        .map(|b| stowage_arrow::export_batch(b).expect("export"))
        .collect();
    Value::Arrow(ArrowTable::new(exported))
}

/// arrow-ipc used directly, as durable and hashed as the store.
fn baseline_save(dir: &Path, batches: &[RecordBatch]) -> blake3::Hash {
    let mut bytes = Vec::new();
    let mut writer = FileWriter::try_new(&mut bytes, &batches[0].schema()).expect("writer");
    for batch in batches {
        writer.write(batch).expect("write");
    }
    writer.finish().expect("finish");
    drop(writer);
    bench::durable_write(dir, "baseline.arrow", &bytes)
}

fn baseline_load(dir: &Path, expected: &blake3::Hash) -> usize {
    let file = Buffer::from_vec(bench::verified_read(&dir.join("baseline.arrow"), expected));
    let bytes = file.as_slice();
    let footer_len = read_footer_length(bytes[bytes.len() - 10..].try_into().expect("10 bytes"))
        .expect("footer length");
    let footer_start = bytes.len() - 10 - footer_len;
    let footer = root_as_footer(&bytes[footer_start..bytes.len() - 10]).expect("footer");
    let schema = fb_to_schema(footer.schema().expect("schema"));
    let mut decoder = FileDecoder::new(Arc::new(schema), footer.version());
    let block_data = |block: &Block| {
        let len = block.metaDataLength() as usize + block.bodyLength() as usize;
        file.slice_with_length(block.offset() as usize, len)
    };
    for block in footer.dictionaries().into_iter().flatten() {
        decoder
            .read_dictionary(block, &block_data(block))
            .expect("dictionary");
    }
    let mut rows = 0;
    for block in footer.recordBatches().into_iter().flatten() {
        let batch = decoder
            .read_record_batch(block, &block_data(block))
            .expect("batch")
            .expect("a record batch");
        rows += black_box(batch).num_rows();
    }
    rows
}

fn main() {
    let quick = bench::start("arrow benchmarks through the host");
    let (rows, runs, mapped_runs) = if quick {
        (200_000, 1, 5)
    } else {
        (10_000_000, 3, 21)
    };
    let dir = TestDir::new("bench-arrow");
    dir.install("stowage-arrow", "stowage_arrow");
    let host = dir.host();
    let baseline_dir = dir.root.join("baseline");
    fs::create_dir_all(&baseline_dir).expect("baseline dir");

    let batches = table(rows);
    let in_memory: usize = batches.iter().map(|b| b.get_array_memory_size()).sum();
    println!(
        "arrow: {rows} rows x 3 columns in {BATCHES} batches (~{} MB in memory), median of {runs} runs",
        in_memory / 1_000_000
    );
    let value = arrow_value(&batches);

    let (mut ours_save, mut theirs_save) = (Vec::new(), Vec::new());
    let (mut hash, mut file_bytes) = (None, 0);
    for _ in 0..runs {
        let start = Instant::now();
        let saved = host.save("t", &value, &[]).expect("save");
        ours_save.push(start.elapsed());
        file_bytes = saved.record.blobs.iter().map(|b| b.size).sum::<u64>();
        let start = Instant::now();
        hash = Some(baseline_save(&baseline_dir, &batches));
        theirs_save.push(start.elapsed());
    }
    let hash = hash.expect("at least one run");
    let (ours_save, theirs_save) = (median(ours_save), median(theirs_save));
    let ours_load = time(runs, || {
        black_box(host.load("t").expect("load").value);
    });
    let theirs_load = time(runs, || {
        black_box(baseline_load(&baseline_dir, &hash));
    });
    let save_ratio = theirs_save.as_secs_f64() / ours_save.as_secs_f64();
    let load_ratio = theirs_load.as_secs_f64() / ours_load.as_secs_f64();
    println!(
        "save: stowage {ours_save:.2?}, arrow-ipc {theirs_save:.2?}: {save_ratio:.2}x of arrow-ipc's speed, goal >= 0.95 {}",
        at_least(save_ratio, 0.95)
    );
    println!(
        "load (verified): stowage {ours_load:.2?}, arrow-ipc {theirs_load:.2?}: {load_ratio:.2}x, goal >= 0.95 {}",
        at_least(load_ratio, 0.95)
    );
    let save_rate = file_bytes as f64 / ours_save.as_secs_f64();
    let load_rate = file_bytes as f64 / ours_load.as_secs_f64();
    println!(
        "throughput over the {:.0} MB stored IPC file: save {:.0} MB/s = {:.1}x Metaflow's ~51 MB/s; \
         load (verified) {:.0} MB/s = {:.1}x Metaflow's ~174 MB/s",
        file_bytes as f64 / 1e6,
        save_rate / 1e6,
        save_rate / METAFLOW_SAVE_BYTES_PER_SEC,
        load_rate / 1e6,
        load_rate / METAFLOW_LOAD_BYTES_PER_SEC
    );
    drop(value);

    // The full table is already stored as "t"; a 1/16 one beside it shows
    // whether `load_mapped` time grows with size, for the whole table and
    // for its fixed-width columns alone.
    let small_rows = rows / 16;
    let fixed_width = |batches: Vec<RecordBatch>| {
        let batches: Vec<RecordBatch> = batches
            .iter()
            .map(|b| b.project(&[0, 1]).expect("two columns"))
            .collect();
        arrow_value(&batches)
    };
    let stores = [
        ("small", arrow_value(&table(small_rows))),
        ("fixed", fixed_width(table(rows))),
        ("fixed_small", fixed_width(table(small_rows))),
    ];
    for (name, value) in &stores {
        host.save(name, value, &[]).expect("save");
    }
    drop(stores);
    let mapped = |name: &str| {
        time(mapped_runs, || {
            black_box(host.load_mapped(name).expect("load_mapped").value);
        })
    };
    let (small, large) = (format!("{small_rows} rows"), format!("{rows} rows"));
    print!("fixed-width columns ");
    bench::print_mapped(&small, mapped("fixed_small"), &large, mapped("fixed"));
    print!("all three columns   ");
    bench::print_mapped(&small, mapped("small"), &large, mapped("t"));
}
