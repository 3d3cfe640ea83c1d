//! Host benchmarks (SPEC §9), measured with real release-built plugins:
//!
//! - dispatch: host overhead to reach the first candidate (with one plugin
//!   claiming the kind, and with 20 declining plugins ahead of it), and the
//!   cost per declining candidate, for an int and for a small tensor;
//! - start-up: a cold `stowage status --json` with three plugins;
//! - load time per plugin, as `status` reports it;
//! - the store: 10,000 small artifacts saved with `save_many` (one durable
//!   commit: data and index fsynced once) and with `save` (one durable
//!   commit each), then loaded (verified) — beside Metaflow's local-datastore
//!   rates recorded on this machine (~5,800 saves/s, ~23,500 loads/s, no
//!   fsync).
//!
//! Each figure is the median of several runs; goals are printed beside them
//! as ratios. Nothing here asserts a time. `--quick` (or `--test`, which
//! `cargo bench -- --test` passes) runs a short smoke version.

use std::hint::black_box;
use std::process::Command;
use std::time::Instant;

use stowage::{Buffer, Tensor, Value};
use stowage_tests::{artifacts, bench, TestDir};

/// Median nanoseconds per call of `f` over `runs` runs of `iters` calls.
fn per_call_ns(runs: usize, iters: u32, mut f: impl FnMut()) -> f64 {
    let run = bench::time(runs, || {
        for _ in 0..iters {
            f();
        }
    });
    run.as_nanos() as f64 / f64::from(iters)
}

/// `value` as a ratio of an at-most `goal`, with the verdict.
fn verdict(value: f64, goal: f64) -> String {
    format!(
        "{:.2}x of goal {}",
        value / goal,
        bench::at_most(value, goal)
    )
}

fn host_with(decliners: usize) -> (TestDir, stowage::Host) {
    let dir = TestDir::new(&format!("bench-dispatch-{decliners}"));
    dir.install("fixture-echo", "stowage_echo");
    for i in 0..decliners {
        dir.install("fixture-decliner", &format!("stowage_decliner_{i:02}"));
    }
    let host = dir.host();
    let active = host
        .snapshot()
        .statuses()
        .iter()
        .filter(|s| s.state == stowage::State::Active)
        .count();
    assert_eq!(
        active,
        decliners + 3,
        "echo, the two built-ins (msgpack, composite) and {decliners} decliners are active"
    );
    (dir, host)
}

fn dispatch(quick: bool) {
    let (runs, iters) = if quick { (3, 1_000) } else { (15, 200_000) };
    let tensor = Value::Tensor(Tensor {
        dtype: "F32".into(),
        shape: vec![2, 2],
        data: Buffer::from_vec(vec![0; 16]),
    });
    for (label, value) in [("int", Value::Int(7)), ("small tensor", tensor)] {
        let mut reach = Vec::new();
        for decliners in [0, 20] {
            let (_dir, host) = host_with(decliners);
            let snapshot = host.snapshot();
            let winner = snapshot
                .table
                .first_acceptor(&value)
                .map(|r| r.name().to_owned());
            assert_eq!(winner.as_deref(), Some("echo"));
            reach.push(per_call_ns(runs, iters, || {
                black_box(snapshot.table.first_acceptor(black_box(&value)));
            }));
        }
        let per_decliner = (reach[1] - reach[0]) / 20.0;
        println!(
            "dispatch {label}: reach first candidate {:.0} ns  [{}]",
            reach[0],
            verdict(reach[0], 200.0)
        );
        println!(
            "dispatch {label}: reach it behind 20 declining plugins {:.0} ns",
            reach[1]
        );
        println!(
            "dispatch {label}: per declining candidate {per_decliner:.1} ns  [{}]",
            verdict(per_decliner, 20.0)
        );
    }
}

fn startup(quick: bool) {
    let dir = TestDir::new("bench-startup");
    dir.install("fixture-echo", "stowage_echo");
    dir.install("fixture-rival", "stowage_rival");
    dir.install("fixture-needs-echo", "stowage_needs_echo");
    let runs = if quick { 3 } else { 31 };
    let mut last = Vec::new();
    let median = bench::time(runs, || {
        let output = Command::new(&artifacts().stowage)
            .args(["status", "--json"])
            .current_dir(&dir.root)
            .env_remove("STOWAGE_PLUGINS")
            .env_remove("STOWAGE_CONFIG")
            .output()
            .expect("stowage runs");
        assert!(output.status.success(), "status failed");
        last = output.stdout;
    });
    let median_ms = median.as_secs_f64() * 1000.0;
    println!(
        "startup: `stowage status --json` with 3 plugins, cold process: {median_ms:.2} ms median  [{}]",
        verdict(median_ms, 20.0)
    );
    let status: serde_json::Value = serde_json::from_slice(&last).expect("status JSON");
    for serializer in status["serializers"].as_array().into_iter().flatten() {
        if let Some(ms) = serializer["load_ms"].as_f64() {
            println!(
                "load: {} {ms:.2} ms (open, checks, layout check, init)",
                serializer["name"].as_str().unwrap_or("?")
            );
        }
    }
}

/// Metaflow's local datastore on this machine (SPEC §9), for the ratios.
const METAFLOW_SAVES_PER_S: f64 = 5_800.0;
/// `save_many` of 10,000 small artifacts on this machine before the
/// parallel-hash write path (issue #13): median of 5 runs alternated with
/// the new build, 2026-11-29. Small blobs never take the new path; this
/// line shows they did not pay for it either.
const SAVE_MANY_BEFORE_13: f64 = 156_811.0;
const METAFLOW_LOADS_PER_S: f64 = 23_500.0;

fn store(quick: bool) {
    let count = if quick { 500 } else { 10_000 };
    let dir = TestDir::new("bench-store");
    let host = dir.host();
    let values: Vec<Value> = (0..count)
        .map(|i| {
            Value::Map(vec![
                ("step".into(), Value::Int(i)),
                ("loss".into(), Value::Float(1.0 / (i + 1) as f64)),
                ("tag".into(), Value::String(format!("run-{i}"))),
            ])
        })
        .collect();
    let names: Vec<String> = (0..count).map(|i| format!("small-{i}")).collect();
    let items: Vec<(&str, &Value)> = names.iter().map(String::as_str).zip(&values).collect();

    let start = Instant::now();
    host.save_many(&items, &[]).expect("save_many");
    let batch_rate = count as f64 / start.elapsed().as_secs_f64();
    println!(
        "store: save_many {count} small artifacts, one durable commit: {batch_rate:.0}/s = {:.1}x Metaflow (goal 20x)",
        batch_rate / METAFLOW_SAVES_PER_S
    );
    if !quick {
        println!(
            "store: save_many before the parallel-hash write path (issue #13): \
             {SAVE_MANY_BEFORE_13:.0}/s, this run {:.2}x of it (goal: within 5%)",
            batch_rate / SAVE_MANY_BEFORE_13
        );
    }

    let single = count.min(1_000);
    let start = Instant::now();
    for (name, value) in items.iter().take(single as usize) {
        host.save(&format!("one-{name}"), value, &[]).expect("save");
    }
    let single_rate = single as f64 / start.elapsed().as_secs_f64();
    println!(
        "store: save {single} small artifacts, a durable commit each: {single_rate:.0}/s = {:.1}x Metaflow",
        single_rate / METAFLOW_SAVES_PER_S
    );

    let start = Instant::now();
    for (name, value) in &items {
        let loaded = host.load(name).expect("load");
        assert_eq!(&loaded.value, *value);
    }
    let load_rate = count as f64 / start.elapsed().as_secs_f64();
    println!(
        "store: load {count} small artifacts (re-hashed): {load_rate:.0}/s = {:.1}x Metaflow (goal 10x)",
        load_rate / METAFLOW_LOADS_PER_S
    );
}

fn main() {
    let quick = bench::start("stowage host benchmarks");
    dispatch(quick);
    startup(quick);
    store(quick);
}
