//! Process isolation benchmarks (SPEC §9, §14): the same release-built
//! tensor plugin in-process and in a `stowage-runner`, side by side.
//!
//! - per-call overhead for a small value: `serialize_to_memory` of a
//!   16-byte tensor (two calls: `can_serialize`, `serialize`) and
//!   `deserialize` of it (`can_deserialize`, `deserialize`); the isolated
//!   minus the in-process median, per call; goal < 50 µs;
//! - a 256 MiB f32 tensor saved and loaded (verified) through the store;
//!   goal: isolated ≥ 0.7× in-process.
//!
//! Medians of several runs; nothing asserts a time. `--quick` (or `--test`)
//! is a smoke run on small sizes. The stores live under the target dir and
//! are deleted at the end.

use std::fs;
use std::hint::black_box;
use std::time::Duration;

use stowage::store::Verify;
use stowage::{ArtifactMeta, Buffer, Host, Tensor, Value, WrittenBy};
use stowage_tests::bench::{self, at_least, at_most, median, time};
use stowage_tests::{artifacts, TestDir};

const MIB: usize = 1 << 20;

fn tensor(bytes: usize) -> Value {
    let data: Vec<u8> = (0..bytes / 4)
        .flat_map(|i| (i as f32 * 0.5).to_le_bytes())
        .collect();
    Value::Tensor(Tensor {
        dtype: "F32".into(),
        shape: vec![(bytes / 4) as u64],
        data: Buffer::from_vec(data),
    })
}

/// A store with the tensor plugin, isolated or not.
fn host(isolated: bool) -> (TestDir, Host) {
    let dir = TestDir::new(if isolated {
        "bench-iso"
    } else {
        "bench-inproc"
    });
    dir.install("stowage-tensor", "stowage_tensor");
    let runner = artifacts().stowage.with_file_name("stowage-runner");
    let isolation = if isolated { "process" } else { "in-process" };
    fs::write(
        dir.config_path(),
        format!(
            "[host]\ndir = \"plugin-libs\"\nisolation = \"{isolation}\"\nrunner = {:?}\n\
             [store]\ndir = \"store\"\n",
            runner.display().to_string()
        ),
    )
    .expect("write plugins.toml");
    let host = dir.host();
    (dir, host)
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn main() {
    let quick = bench::start("process isolation benchmarks (tensor plugin)");
    let (size, runs, small_runs) = if quick {
        (16 * MIB, 3, 200)
    } else {
        (256 * MIB, 5, 5001)
    };
    let (inproc_dir, inproc) = host(false);
    let (iso_dir, iso) = host(true);

    // Per call, small value.
    let small = tensor(16);
    let serialized = inproc.serialize_to_memory(&small, &[]).expect("serialize");
    let blobs: Vec<(String, Buffer)> = serialized
        .blobs
        .iter()
        .map(|(n, b)| (n.clone(), Buffer::from_vec(b.clone())))
        .collect();
    let meta = ArtifactMeta {
        obj_type: serialized.written.obj_type.clone(),
        encoding: serialized.written.encoding.clone(),
        encoding_version: serialized.written.encoding_version,
        info: serialized.written.info.clone(),
        blobs: blobs
            .iter()
            .map(|(n, b)| (n.clone(), b.len() as u64))
            .collect(),
    };
    let writer = WrittenBy {
        serializer: serialized.plugin.clone(),
        version: serialized.plugin_version.clone(),
    };
    let mut per_call = Vec::new();
    for (what, host) in [("in-process", &inproc), ("isolated", &iso)] {
        for _ in 0..small_runs / 10 {
            black_box(host.serialize_to_memory(&small, &[]).expect("serialize"));
        }
        let save = time(small_runs, || {
            black_box(host.serialize_to_memory(&small, &[]).expect("serialize"));
        });
        let load = time(small_runs, || {
            black_box(
                host.deserialize(&meta, &writer, &blobs)
                    .expect("deserialize"),
            );
        });
        println!(
            "small tensor (16 B), {what}: serialize {:.1} µs, deserialize {:.1} µs (2 plugin calls each)",
            micros(save),
            micros(load)
        );
        per_call.push((save, load));
    }
    let overhead = |f: fn(&(Duration, Duration)) -> Duration| {
        (micros(f(&per_call[1])) - micros(f(&per_call[0]))) / 2.0
    };
    let (save_over, load_over) = (overhead(|p| p.0), overhead(|p| p.1));
    println!(
        "per-call overhead isolated - in-process: serialize {save_over:.1} µs/call {}, deserialize {load_over:.1} µs/call {}, goal < 50 µs",
        at_most(save_over, 50.0),
        at_most(load_over, 50.0)
    );

    // Large tensor through the store, in-process and isolated run by run
    // (interleaved, so neither pays for the other's writeback or for other
    // load on the machine).
    let big = tensor(size);
    let hosts = [("in-process", &inproc), ("isolated", &iso)];
    for (_, host) in hosts {
        host.save("t", &big, &[]).expect("warm-up save");
    }
    let mut samples: [[Vec<Duration>; 4]; 2] = Default::default();
    for _ in 0..runs {
        for (i, (_, host)) in hosts.iter().enumerate() {
            samples[i][0].push(time(1, || {
                host.save("t", &big, &[]).expect("save");
            }));
        }
        for (i, (_, host)) in hosts.iter().enumerate() {
            samples[i][1].push(time(1, || {
                black_box(host.load("t").expect("load").value);
            }));
            samples[i][2].push(time(1, || {
                black_box(host.load_mapped("t").expect("load_mapped").value);
            }));
            samples[i][3].push(time(1, || {
                black_box(host.load_raw("t", Verify::Hash).expect("raw"));
            }));
        }
    }
    let mut saves = Vec::new();
    let mut loads = Vec::new();
    for (i, (what, _)) in hosts.iter().enumerate() {
        let [save, load, mapped, raw] = samples[i].clone().map(median);
        println!(
            "{} MiB f32 tensor, {what}: save {save:.2?} ({:.0} MB/s), load {load:.2?} ({:.0} MB/s; \
             of which the store's verified read {raw:.2?}), load_mapped {mapped:.2?}",
            size / MIB,
            size as f64 / save.as_secs_f64() / 1e6,
            size as f64 / load.as_secs_f64() / 1e6
        );
        saves.push(save);
        loads.push(load);
    }
    let save_ratio = saves[0].as_secs_f64() / saves[1].as_secs_f64();
    let load_ratio = loads[0].as_secs_f64() / loads[1].as_secs_f64();
    println!(
        "isolated vs in-process, {} MiB tensor: save {save_ratio:.2}x {}, load {load_ratio:.2}x {}, goal >= 0.7x",
        size / MIB,
        at_least(save_ratio, 0.7),
        at_least(load_ratio, 0.7)
    );
    drop((inproc, iso));
    drop((inproc_dir, iso_dir));
}
