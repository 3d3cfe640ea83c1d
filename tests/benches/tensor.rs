//! Tensor benchmarks through the real host with the release-built plugin
//! (SPEC §9), each printed beside its goal as a ratio:
//!
//! - save and load of a 256 MiB f32 tensor through the host vs the
//!   `safetensors` crate used directly with the same durability and hashing
//!   (`serialize` → blake3 → write → fsync file → rename → fsync directory;
//!   load: read → blake3 check → `SafeTensors::deserialize`); goal ≥ 0.95×;
//! - `load_mapped` of 16 MiB vs 1 GiB; goal: equal (O(1) in size);
//! - peak RSS while saving (VmHWM, reset through `/proc/self/clear_refs`
//!   just before the save, the tensor itself included); goal ≤ 1.2× the
//!   tensor's size;
//! - save throughput against Metaflow's recorded ~27 MB/s; goal ≥ 50×;
//! - save, and a whole `stowage put` process of the same file (in the page
//!   cache), against `dd if=/dev/zero bs=16M conv=fdatasync` of the same
//!   size on the same file system, interleaved run by run; goal ≥ 0.80×
//!   (the disk is the limit: issue #13).
//!
//! Medians of several runs; nothing asserts a time. `--quick` (or `--test`)
//! is a smoke run on small sizes. The store lives under the target dir and is
//! deleted at the end.

use std::fs;
use std::hint::black_box;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use stowage::{Buffer, Tensor, Value};
use stowage_tests::bench::{self, at_least, at_most, median, time};
use stowage_tests::{proc_status_bytes, StowageCmd, TestDir};

const MIB: usize = 1 << 20;
/// Metaflow's recorded save throughput for a 256 MiB float32 tensor.
const METAFLOW_BYTES_PER_SEC: f64 = 27e6;

fn f32_tensor(bytes: usize) -> Vec<u8> {
    (0..bytes / 4)
        .flat_map(|i| (i as f32 * 0.5).to_le_bytes())
        .collect()
}

/// The `safetensors` crate used directly, as durable and hashed as the store.
fn baseline_save(dir: &Path, data: &[u8], shape: usize) -> blake3::Hash {
    let view = safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![shape], data)
        .expect("valid view");
    let bytes = safetensors::serialize([("tensor", view)], None).expect("serialize");
    bench::durable_write(dir, "baseline.safetensors", &bytes)
}

fn baseline_load(dir: &Path, expected: &blake3::Hash) -> usize {
    let bytes = bench::verified_read(&dir.join("baseline.safetensors"), expected);
    let file = safetensors::SafeTensors::deserialize(&bytes).expect("deserialize");
    let view = file.tensor("tensor").expect("tensor");
    black_box(view.data()).len()
}

/// How long `dd if=/dev/zero bs=16M conv=fdatasync` takes to write `size`
/// bytes into `dir`: what the file system sustains with a data sync, the
/// ceiling a durable save can reach (SPEC §9).
fn dd_fdatasync(dir: &Path, size: usize) -> std::time::Duration {
    let target = dir.join("dd.bin");
    let start = Instant::now();
    let status = Command::new("dd")
        .arg("if=/dev/zero")
        .arg(format!("of={}", target.display()))
        .args(["bs=16M", &format!("count={}", size.div_ceil(16 * MIB))])
        .args(["conv=fdatasync", "status=none"])
        .status()
        .expect("dd runs");
    let elapsed = start.elapsed();
    assert!(status.success(), "dd failed: {status}");
    fs::remove_file(&target).expect("remove dd.bin");
    elapsed
}

/// Writes every dirty page back, so the next measurement starts clean.
fn sync() {
    let status = Command::new("sync").status().expect("sync runs");
    assert!(status.success(), "sync failed: {status}");
}

/// A whole `stowage put` process of a safetensors file already in the page
/// cache, beside `dd … conv=fdatasync` of the same size, interleaved.
fn cli_put_vs_disk(dir: &TestDir, file: &Path, size: usize, runs: usize) {
    let file = file.display().to_string();
    let _ = fs::read(&file).expect("the baseline file, read once into the page cache");
    let (mut put, mut disk) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        sync();
        disk.push(dd_fdatasync(&dir.root, size));
        sync();
        let start = Instant::now();
        StowageCmd::new(dir, &["put", "cli", &file]).ok();
        put.push(start.elapsed());
    }
    let (put, disk) = (median(put), median(disk));
    let ratio = disk.as_secs_f64() / put.as_secs_f64();
    println!(
        "CLI put (whole process, file cached): {put:.2?} = {:.0} MB/s, dd conv=fdatasync {disk:.2?}: \
         {ratio:.2}x, goal >= 0.80 {}",
        size as f64 / put.as_secs_f64() / 1e6,
        at_least(ratio, 0.80)
    );
}

fn tensor_value(data: Vec<u8>) -> Value {
    Value::Tensor(Tensor {
        dtype: "F32".into(),
        shape: vec![(data.len() / 4) as u64],
        data: Buffer::from_vec(data),
    })
}

fn main() {
    let quick = bench::start("tensor benchmarks through the host");
    let (size, runs, small, large, mapped_runs) = if quick {
        (16 * MIB, 1, 16 * MIB, 64 * MIB, 5)
    } else {
        (256 * MIB, 5, 16 * MIB, 1024 * MIB, 51)
    };
    let dir = TestDir::new("bench-tensor");
    dir.install("stowage-tensor", "stowage_tensor");
    let host = dir.host();
    let baseline_dir = dir.root.join("baseline");
    fs::create_dir_all(&baseline_dir).expect("baseline dir");

    println!("tensor: {} MiB f32, median of {runs} runs", size / MIB);
    let rss_before_tensor = proc_status_bytes("VmRSS");
    let value = tensor_value(f32_tensor(size));
    let Value::Tensor(tensor) = &value else {
        unreachable!("tensor_value makes a tensor")
    };
    let data: &[u8] = &tensor.data;

    // Peak memory of one save, the tensor itself included.
    let _ = fs::write("/proc/self/clear_refs", "5");
    host.save("t", &value, &[]).expect("save");
    let peak = proc_status_bytes("VmHWM");

    let (mut ours_save, mut theirs_save) = (Vec::new(), Vec::new());
    let mut hash = None;
    for _ in 0..runs {
        let start = Instant::now();
        host.save("t", &value, &[]).expect("save");
        ours_save.push(start.elapsed());
        let start = Instant::now();
        hash = Some(baseline_save(&baseline_dir, data, size / 4));
        theirs_save.push(start.elapsed());
    }
    let hash = hash.expect("at least one run");
    let (ours_save, theirs_save) = (median(ours_save), median(theirs_save));

    // The disk's own speed, pair by pair with a save, each from a clean
    // page cache (`sync` first), so neither pays for the other's writeback.
    let (mut paired_save, mut disk) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        sync();
        disk.push(dd_fdatasync(&dir.root, size));
        sync();
        let start = Instant::now();
        host.save("t", &value, &[]).expect("save");
        paired_save.push(start.elapsed());
    }
    let (paired_save, disk) = (median(paired_save), median(disk));

    let ours_load = time(runs, || {
        let loaded = host.load("t").expect("load");
        black_box(loaded.value);
    });
    let theirs_load = time(runs, || {
        black_box(baseline_load(&baseline_dir, &hash));
    });

    let save_ratio = theirs_save.as_secs_f64() / ours_save.as_secs_f64();
    let load_ratio = theirs_load.as_secs_f64() / ours_load.as_secs_f64();
    println!(
        "save: stowage {ours_save:.2?}, safetensors crate {theirs_save:.2?}: {save_ratio:.2}x of the crate's speed, goal >= 0.95 {}",
        at_least(save_ratio, 0.95)
    );
    println!(
        "load (verified): stowage {ours_load:.2?}, safetensors crate {theirs_load:.2?}: {load_ratio:.2}x, goal >= 0.95 {}",
        at_least(load_ratio, 0.95)
    );
    let of_disk = disk.as_secs_f64() / paired_save.as_secs_f64();
    println!(
        "save vs the disk: stowage {:.0} MB/s, dd bs=16M conv=fdatasync {:.0} MB/s on the same \
         file system: {of_disk:.2}x, goal >= 0.80 {}",
        size as f64 / paired_save.as_secs_f64() / 1e6,
        size as f64 / disk.as_secs_f64() / 1e6,
        at_least(of_disk, 0.80)
    );
    cli_put_vs_disk(&dir, &baseline_dir.join("baseline.safetensors"), size, runs);
    let throughput = size as f64 / ours_save.as_secs_f64();
    let vs_metaflow = throughput / METAFLOW_BYTES_PER_SEC;
    println!(
        "save throughput: {:.0} MB/s = {vs_metaflow:.0}x Metaflow's ~27 MB/s, goal >= 50x {}",
        throughput / 1e6,
        at_least(vs_metaflow, 50.0)
    );
    let peak_ratio = peak as f64 / size as f64;
    let added = peak.saturating_sub(rss_before_tensor) as f64 / size as f64;
    println!(
        "peak RSS while saving: {} MiB = {peak_ratio:.2}x the tensor ({added:.2}x above the \
         {} MiB held before the tensor existed), goal <= 1.2x {}",
        peak / MIB as u64,
        rss_before_tensor / MIB as u64,
        at_most(peak_ratio, 1.2)
    );
    drop(value);

    for (name, bytes) in [("small", small), ("large", large)] {
        // calloc'd zeros: cheap to make, real bytes once written.
        host.save(name, &tensor_value(vec![0; bytes]), &[])
            .expect("save mapped");
    }
    let mapped = |name: &str| {
        time(mapped_runs, || {
            let loaded = host.load_mapped(name).expect("load_mapped");
            black_box(loaded.value);
        })
    };
    let (t_small, t_large) = (mapped("small"), mapped("large"));
    bench::print_mapped(
        &format!("{} MiB", small / MIB),
        t_small,
        &format!("{} MiB", large / MIB),
        t_large,
    );
}
