//! Arrow benchmark through the real host with the built plugin (SPEC §9):
//! save and load of a 10M-row × 3-column table (~290 MB: i64, f64, utf8)
//! through the host vs arrow-ipc used directly with the same durability and
//! hashing (save: IPC file writer → blake3 → write → fsync file → rename →
//! fsync directory; load: read → blake3 check → `FileReader` → the same
//! `validate_full` the plugin runs). Goal ≥ 0.95× for both.
//!
//! Medians of several runs; nothing asserts a time. `--quick` (or `--test`)
//! is a smoke run on 200k rows. The store lives under the target dir.

use std::fs::{self, File};
use std::hint::black_box;
use std::io::{Cursor, Write};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow_array::{ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray};
use arrow_ipc::reader::FileReader;
use arrow_ipc::writer::FileWriter;
use arrow_schema::{DataType, Field, Schema};
use stowage::{ArrowTable, Value};
use stowage_tests::TestDir;

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn time(runs: usize, mut f: impl FnMut()) -> Duration {
    median(
        (0..runs)
            .map(|_| {
                let start = Instant::now();
                f();
                start.elapsed()
            })
            .collect(),
    )
}

fn verdict(ratio: f64) -> &'static str {
    if ratio >= 0.95 {
        "(met)"
    } else {
        "(MISSED)"
    }
}

/// `rows` rows in batches of at most a million.
fn table(rows: usize) -> Vec<RecordBatch> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("x", DataType::Float64, true),
        Field::new("name", DataType::Utf8, true),
    ]));
    (0..rows)
        .step_by(1_000_000)
        .map(|start| {
            let end = (start + 1_000_000).min(rows);
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

fn fsync_dir(dir: &Path) {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .expect("fsync directory");
}

fn baseline_save(dir: &Path, batches: &[RecordBatch]) -> blake3::Hash {
    let mut bytes = Vec::new();
    let mut writer = FileWriter::try_new(&mut bytes, &batches[0].schema()).expect("writer");
    for batch in batches {
        writer.write(batch).expect("write");
    }
    writer.finish().expect("finish");
    drop(writer);
    let hash = blake3::hash(&bytes);
    let temp = dir.join("baseline.tmp");
    let mut file = File::create(&temp).expect("create");
    file.write_all(&bytes).expect("write");
    file.sync_all().expect("fsync");
    fs::rename(&temp, dir.join("baseline.arrow")).expect("rename");
    fsync_dir(dir);
    hash
}

fn baseline_load(dir: &Path, expected: &blake3::Hash) -> usize {
    let bytes = fs::read(dir.join("baseline.arrow")).expect("read");
    assert_eq!(&blake3::hash(&bytes), expected, "baseline blob intact");
    let reader = FileReader::try_new(Cursor::new(&bytes[..]), None).expect("reader");
    let mut rows = 0;
    for batch in reader {
        let batch = batch.expect("batch");
        for column in batch.columns() {
            column.to_data().validate_full().expect("valid");
        }
        rows += black_box(batch).num_rows();
    }
    rows
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick" || a == "--test");
    let (rows, runs) = if quick { (200_000, 1) } else { (10_000_000, 3) };
    let dir = TestDir::new("bench-arrow");
    dir.install("stowage-arrow", "stowage_arrow");
    let host = dir.host();
    let baseline_dir = dir.root.join("baseline");
    fs::create_dir_all(&baseline_dir).expect("baseline dir");

    let batches = table(rows);
    let bytes: usize = batches.iter().map(|b| b.get_array_memory_size()).sum();
    println!(
        "arrow: {rows} rows x 3 columns (~{} MB), median of {runs} runs",
        bytes / 1_000_000
    );
    let exported = batches
        .iter()
        .map(|b| stowage_arrow::export_batch(b).expect("export"))
        .collect();
    let value = Value::Arrow(ArrowTable::new(exported));

    let (mut ours_save, mut theirs_save) = (Vec::new(), Vec::new());
    let mut hash = None;
    for _ in 0..runs {
        let start = Instant::now();
        host.save("t", &value, &[]).expect("save");
        ours_save.push(start.elapsed());
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
        verdict(save_ratio)
    );
    println!(
        "load (verified): stowage {ours_load:.2?}, arrow-ipc {theirs_load:.2?}: {load_ratio:.2}x, goal >= 0.95 {}",
        verdict(load_ratio)
    );
    drop(value);
    drop(host);
    let _ = fs::remove_dir_all(&dir.root);
}
