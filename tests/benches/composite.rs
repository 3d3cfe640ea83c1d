//! Composite benchmark through the real host with the release-built tensor
//! plugin (SPEC §15, issue #15 item 8): a checkpoint of 64 arrays × 4 MiB,
//! each in a nested map beside plain metadata (so each array is a part of
//! its own: the composite's heaviest case), saved and loaded (verified and
//! mapped), beside the same arrays as one `tensor_map`. Printed: each
//! median and the composite's ratio (tensor_map time / composite time;
//! goal ≥ 0.9×).
//!
//! Every run saves fresh data (one byte per array changed), so neither side
//! is helped by blob sharing. Medians of several runs; nothing asserts a
//! time. `--quick` (or `--test`) is a smoke run on 16 × 1 MiB.

use std::time::{Duration, Instant};

use stowage::{Buffer, Host, Tensor, TensorMap, Value};
use stowage_tests::bench::{self, at_least, median};
use stowage_tests::TestDir;

const MIB: usize = 1 << 20;

fn tensor(data: Vec<u8>) -> Tensor {
    Tensor {
        dtype: "F32".into(),
        shape: vec![(data.len() / 4) as u64],
        data: Buffer::from_vec(data),
    }
}

/// The arrays of run `run`: `count` × `size` bytes, each a little different.
fn arrays(count: usize, size: usize, run: usize) -> Vec<Tensor> {
    (0..count)
        .map(|i| {
            let mut data: Vec<u8> = (0..size).map(|j| ((i * 31 + j) % 251) as u8).collect();
            data[0] = run as u8;
            tensor(data)
        })
        .collect()
}

/// The checkpoint: plain metadata and a list of layers, each a map of its
/// array and a name.
fn checkpoint(tensors: &[Tensor]) -> Value {
    let layers = tensors
        .iter()
        .enumerate()
        .map(|(i, t)| {
            Value::Map(vec![
                ("name".into(), Value::String(format!("layer{i}"))),
                ("weight".into(), Value::Tensor(t.clone())),
            ])
        })
        .collect();
    Value::Map(vec![
        (
            "meta".into(),
            Value::Map(vec![
                ("step".into(), Value::Int(1200)),
                ("lr".into(), Value::Float(1e-3)),
                ("tag".into(), Value::String("bench".into())),
            ]),
        ),
        ("layers".into(), Value::List(layers)),
    ])
}

fn tensor_map(tensors: &[Tensor]) -> Value {
    Value::TensorMap(TensorMap {
        tensors: tensors
            .iter()
            .enumerate()
            .map(|(i, t)| (format!("layer{i}.weight"), t.clone()))
            .collect(),
        metadata: Vec::new(),
    })
}

fn timed(f: impl FnOnce()) -> Duration {
    let start = Instant::now();
    f();
    start.elapsed()
}

/// Save, verified load and mapped load of `value` as `name`.
fn round(host: &Host, name: &str, value: &Value) -> [Duration; 3] {
    let save = timed(|| {
        host.save(name, value, &[]).expect("save");
    });
    let load = timed(|| {
        std::hint::black_box(host.load(name).expect("load"));
    });
    let mapped = timed(|| {
        std::hint::black_box(host.load_mapped(name).expect("load_mapped"));
    });
    [save, load, mapped]
}

fn main() {
    let quick = bench::start("composite benchmark through the host");
    let (count, size, runs) = if quick {
        (16, MIB, 1)
    } else {
        (64, 4 * MIB, 5)
    };
    let dir = TestDir::new("bench-composite");
    dir.install("stowage-tensor", "stowage_tensor");
    let host = dir.host();
    println!(
        "checkpoint: {count} arrays x {} MiB in a nested map with plain metadata, median of \
         {runs} runs",
        size / MIB
    );
    let mut ours: [Vec<Duration>; 3] = Default::default();
    let mut theirs: [Vec<Duration>; 3] = Default::default();
    for run in 0..runs {
        let tensors = arrays(count, size, run);
        // Alternate which goes first, so neither always meets a warm cache.
        let (composite, map) = (checkpoint(&tensors), tensor_map(&tensors));
        let (c, t) = if run % 2 == 0 {
            let c = round(&host, "composite", &composite);
            (c, round(&host, "tensor_map", &map))
        } else {
            let t = round(&host, "tensor_map", &map);
            (round(&host, "composite", &composite), t)
        };
        for i in 0..3 {
            ours[i].push(c[i]);
            theirs[i].push(t[i]);
        }
        let store = host.store().expect("store");
        store.remove("composite").expect("rm composite");
        store.remove("tensor_map").expect("rm tensor_map");
    }
    for (i, what) in ["save", "load (verified)", "load_mapped"]
        .iter()
        .enumerate()
    {
        let (c, t) = (median(ours[i].clone()), median(theirs[i].clone()));
        let ratio = t.as_secs_f64() / c.as_secs_f64();
        println!(
            "composite {what}: {c:.2?} vs one tensor_map {t:.2?}: {ratio:.2}x, goal >= 0.9 {}",
            at_least(ratio, 0.9)
        );
    }
}
