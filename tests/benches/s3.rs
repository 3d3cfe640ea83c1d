//! S3 store benchmarks (SPEC §9, §13), one run against a local `s3s-fs`
//! server the bench starts on 127.0.0.1: 10,000 small artifacts
//! (`save_many`, then verified loads) and a 256 MiB float32 tensor (save,
//! verified load, mapped loads: the first downloads into the cache, the
//! second maps it), through the host on the S3 store beside the same on the
//! local directory store. Metaflow's S3 datastore is not measured here (see
//! the issue note). Nothing here asserts a time; `--quick` (or `--test`)
//! runs a short smoke version.

use std::time::{Duration, Instant};

use stowage::{Buffer, Host, HostOptions, Tensor, Value};
use stowage_tests::s3server::{S3Server, ACCESS_KEY, SECRET_KEY};
use stowage_tests::{bench, TestDir};

const MIB: usize = 1 << 20;

fn small_values(count: i64) -> Vec<Value> {
    (0..count)
        .map(|i| {
            Value::Map(vec![
                ("step".into(), Value::Int(i)),
                ("loss".into(), Value::Float(1.0 / (i + 1) as f64)),
                ("tag".into(), Value::String(format!("run-{i}"))),
            ])
        })
        .collect()
}

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

/// Figures of one store.
struct Figures {
    small_save: f64,
    small_load: f64,
    tensor_save: Duration,
    tensor_load: Duration,
    mapped_first: Duration,
    mapped_second: Duration,
}

fn measure(host: &Host, count: i64, tensor_bytes: usize) -> Figures {
    let values = small_values(count);
    let names: Vec<String> = (0..count).map(|i| format!("small-{i}")).collect();
    let items: Vec<(&str, &Value)> = names.iter().map(String::as_str).zip(&values).collect();
    let start = Instant::now();
    host.save_many(&items, &[]).expect("save_many");
    let small_save = count as f64 / start.elapsed().as_secs_f64();
    let start = Instant::now();
    for (name, value) in &items {
        assert_eq!(&host.load(name).expect("load").value, *value);
    }
    let small_load = count as f64 / start.elapsed().as_secs_f64();

    let value = tensor(tensor_bytes);
    let start = Instant::now();
    host.save("tensor", &value, &[]).expect("save tensor");
    let tensor_save = start.elapsed();
    let start = Instant::now();
    let loaded = host.load("tensor").expect("load tensor");
    let tensor_load = start.elapsed();
    assert_eq!(loaded.value, value);
    drop(loaded);
    let start = Instant::now();
    drop(host.load_mapped("tensor").expect("mapped"));
    let mapped_first = start.elapsed();
    let start = Instant::now();
    drop(host.load_mapped("tensor").expect("mapped"));
    let mapped_second = start.elapsed();
    Figures {
        small_save,
        small_load,
        tensor_save,
        tensor_load,
        mapped_first,
        mapped_second,
    }
}

fn mb_per_s(bytes: usize, t: Duration) -> f64 {
    bytes as f64 / t.as_secs_f64() / 1e6
}

fn main() {
    let quick = bench::start("S3 store benchmarks (s3s-fs on 127.0.0.1)");
    let (count, tensor_bytes) = if quick {
        (500, 16 * MIB)
    } else {
        (10_000, 256 * MIB)
    };
    let server = S3Server::start();
    // Set before any thread of this process starts.
    std::env::set_var("AWS_ACCESS_KEY_ID", ACCESS_KEY);
    std::env::set_var("AWS_SECRET_ACCESS_KEY", SECRET_KEY);

    let dir = TestDir::new("bench-s3");
    dir.install("stowage-tensor", "stowage_tensor");
    dir.write_config(&format!(
        "[store.s3]\nendpoint = \"{}\"\nregion = \"us-east-1\"\nallow_http = true\n",
        server.endpoint
    ));
    let local = dir.host();
    let mut options = HostOptions::with_config(dir.config_path());
    options.store_url = Some(server.url("bench"));
    let s3 = Host::open(options).expect("a host on the S3 store");

    let l = measure(&local, count, tensor_bytes);
    let s = measure(&s3, count, tensor_bytes);
    let mib = tensor_bytes / MIB;
    println!(
        "{:<44} {:>14} {:>14} {:>8}",
        "", "local", "s3 (s3s-fs)", "s3/local"
    );
    let row = |what: &str, a: f64, b: f64, unit: &str| {
        println!(
            "{:<44} {:>10.0} {unit:<3} {:>10.0} {unit:<3} {:>7.2}x",
            what,
            a,
            b,
            b / a
        );
    };
    row(
        &format!("save_many {count} small artifacts"),
        l.small_save,
        s.small_save,
        "/s",
    );
    row(
        &format!("load {count} small artifacts (verified)"),
        l.small_load,
        s.small_load,
        "/s",
    );
    row(
        &format!("save {mib} MiB tensor"),
        mb_per_s(tensor_bytes, l.tensor_save),
        mb_per_s(tensor_bytes, s.tensor_save),
        "MB/s",
    );
    row(
        &format!("load {mib} MiB tensor (verified)"),
        mb_per_s(tensor_bytes, l.tensor_load),
        mb_per_s(tensor_bytes, s.tensor_load),
        "MB/s",
    );
    println!(
        "load_mapped {mib} MiB tensor: local {:?}; s3 first {:?} (download + verify into the cache), second {:?} (maps the cache)",
        l.mapped_first, s.mapped_first, s.mapped_second
    );
}
