//! S3 store benchmarks (SPEC §9, §13), one run against a local `s3s-fs`
//! server the bench starts on 127.0.0.1: 10,000 small artifacts
//! (`save_many`, then `load_many` and one-by-one verified loads) and a 256 MiB float32 tensor (save,
//! verified load on the machine that saved it and on another one with an
//! empty cache, mapped loads: the first downloads into the cache, the
//! second maps it), through the host on the S3 store beside the same on the
//! local directory store. Then Metaflow's S3 datastore on the same server
//! (same bucket, prefix `metaflow`): `benches/metaflow_s3.py`, run with the
//! interop venv's Python ([`stowage_tests::python`], which makes the venv
//! from `tests/requirements.txt` when missing and fails the bench if it
//! cannot — never skips), saves and loads the same small dicts and the same
//! float32 values through Metaflow's `TaskDataStore` on `S3Storage` (pickle,
//! gzip, boto3) and prints JSON; the bench prints stowage-S3 / Metaflow-S3
//! ratios against SPEC §9's goals (≥ 10× small, ≥ 3× tensor), then what the
//! server itself does moving the tensor's bytes with boto3 (its ceiling for
//! any client) and how far Metaflow's gzip shrank them. Nothing here
//! asserts a time; `--quick` (or `--test`) runs a short smoke version (200
//! small artifacts, a 16 MiB tensor), Metaflow included.
//!
//! Decision: Metaflow's small figures are one `save_artifacts` call and one
//! `load_artifacts` call over all of them (its batch API, as
//! `python/bench.py` measures the local datastore), set beside stowage's
//! batch calls, `save_many` and `load_many` (verified); its tensor figures
//! are one save and one load, beside stowage's save and its verified `load`
//! on another machine (Metaflow has no local cache: both download). Stowage's
//! one-by-one `load` is printed too (local vs S3), for the first
//! [`ONE_BY_ONE`] small artifacts: each is a round of requests, and s3s-fs
//! (which does not set TCP_NODELAY) stalls some responses by ~40 ms.

use std::process::Command;
use std::time::{Duration, Instant};

use stowage::{Buffer, Host, HostOptions, Tensor, Value};
use stowage_tests::s3server::{S3Server, ACCESS_KEY, SECRET_KEY};
use stowage_tests::{bench, python, workspace_root, TestDir};

const MIB: usize = 1 << 20;
/// Small artifacts also loaded one `load` each (a round of requests each
/// on S3, so not all 10,000).
const ONE_BY_ONE: usize = 500;

fn names_ref(names: &[String]) -> Vec<&str> {
    names.iter().map(String::as_str).collect()
}

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
    /// `load_many` of every small artifact.
    small_load: f64,
    /// `load` one by one, of the first [`ONE_BY_ONE`].
    small_load_single: f64,
    tensor_save: Duration,
    /// Verified load on the machine that saved it (S3: the cached copy,
    /// re-hashed).
    tensor_load: Duration,
    /// Verified load on another machine (S3: downloaded).
    tensor_load_cold: Duration,
    mapped_first: Duration,
    mapped_second: Duration,
}

/// Metaflow's S3 datastore figures: artifacts per second, tensor times;
/// then the server's own pace moving the tensor's bytes with boto3, and
/// the size of Metaflow's stored (gzipped) tensor.
struct Metaflow {
    small_save: f64,
    small_load: f64,
    tensor_save: Duration,
    tensor_load: Duration,
    raw_put: Duration,
    raw_put_multipart: Duration,
    raw_get: Duration,
    raw_get_parallel: Duration,
    tensor_stored: f64,
}

/// `cold`: a second host on the same store with its own empty cache
/// (another machine), for the tensor load that downloads; `None` for the
/// local store, where there is no cache.
fn measure(host: &Host, cold: Option<&Host>, count: i64, tensor_bytes: usize) -> Figures {
    let values = small_values(count);
    let names: Vec<String> = (0..count).map(|i| format!("small-{i}")).collect();
    let items: Vec<(&str, &Value)> = names.iter().map(String::as_str).zip(&values).collect();
    let start = Instant::now();
    host.save_many(&items, &[]).expect("save_many");
    let small_save = count as f64 / start.elapsed().as_secs_f64();
    let start = Instant::now();
    let loaded = host.load_many(&names_ref(&names)).expect("load_many");
    let small_load = count as f64 / start.elapsed().as_secs_f64();
    for (loaded, value) in loaded.iter().zip(&values) {
        assert_eq!(&loaded.value, value);
    }
    let one_by_one = &items[..items.len().min(ONE_BY_ONE)];
    let start = Instant::now();
    for (name, value) in one_by_one {
        assert_eq!(&host.load(name).expect("load").value, *value);
    }
    let small_load_single = one_by_one.len() as f64 / start.elapsed().as_secs_f64();

    let value = tensor(tensor_bytes);
    let start = Instant::now();
    host.save("tensor", &value, &[]).expect("save tensor");
    let tensor_save = start.elapsed();
    let start = Instant::now();
    let loaded = host.load("tensor").expect("load tensor");
    let tensor_load = start.elapsed();
    assert_eq!(loaded.value, value);
    drop(loaded);
    let tensor_load_cold = cold.map_or(tensor_load, |cold| {
        let start = Instant::now();
        let loaded = cold.load("tensor").expect("load tensor on another machine");
        let elapsed = start.elapsed();
        assert_eq!(loaded.value, value);
        elapsed
    });
    let start = Instant::now();
    drop(host.load_mapped("tensor").expect("mapped"));
    let mapped_first = start.elapsed();
    let start = Instant::now();
    drop(host.load_mapped("tensor").expect("mapped"));
    let mapped_second = start.elapsed();
    Figures {
        small_save,
        small_load,
        small_load_single,
        tensor_save,
        tensor_load,
        tensor_load_cold,
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
        (200, 16 * MIB)
    } else {
        (10_000, 256 * MIB)
    };
    let server = S3Server::start();
    // Set before any thread of this process starts.
    std::env::set_var("AWS_ACCESS_KEY_ID", ACCESS_KEY);
    std::env::set_var("AWS_SECRET_ACCESS_KEY", SECRET_KEY);

    let dir = TestDir::new("bench-s3");
    dir.install("stowage-tensor", "stowage_tensor");
    // `cache` continues `[store]`: the S3 store's cache stays in the
    // bench's directory, not in ~/.cache.
    dir.write_config(&format!(
        "cache = {:?}\n[store.s3]\nendpoint = \"{}\"\nregion = \"us-east-1\"\nallow_http = true\n",
        dir.root.join("cache").display().to_string(),
        server.endpoint
    ));
    let local = dir.host();
    let s3_host = |config: &std::path::Path| {
        let mut options = HostOptions::with_config(config.to_path_buf());
        options.store_url = Some(server.url("bench"));
        Host::open(options).expect("a host on the S3 store")
    };
    let s3 = s3_host(&dir.config_path());
    let cold_config = dir.root.join("plugins-cold.toml");
    let config_text = std::fs::read_to_string(dir.config_path()).expect("read plugins.toml");
    std::fs::write(
        &cold_config,
        config_text.replace(
            &dir.root.join("cache").display().to_string(),
            &dir.root.join("cache-cold").display().to_string(),
        ),
    )
    .expect("write the other machine's plugins.toml");
    let cold = s3_host(&cold_config);

    let l = measure(&local, None, count, tensor_bytes);
    let s = measure(&s3, Some(&cold), count, tensor_bytes);
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
        &format!("load_many {count} small artifacts (verified)"),
        l.small_load,
        s.small_load,
        "/s",
    );
    row(
        &format!(
            "load {} small artifacts one by one",
            count.min(ONE_BY_ONE as i64)
        ),
        l.small_load_single,
        s.small_load_single,
        "/s",
    );
    row(
        &format!("save {mib} MiB tensor"),
        mb_per_s(tensor_bytes, l.tensor_save),
        mb_per_s(tensor_bytes, s.tensor_save),
        "MB/s",
    );
    row(
        &format!("load {mib} MiB tensor (verified, same machine)"),
        mb_per_s(tensor_bytes, l.tensor_load),
        mb_per_s(tensor_bytes, s.tensor_load),
        "MB/s",
    );
    row(
        &format!("load {mib} MiB tensor (verified, another machine)"),
        mb_per_s(tensor_bytes, l.tensor_load),
        mb_per_s(tensor_bytes, s.tensor_load_cold),
        "MB/s",
    );
    println!(
        "load_mapped {mib} MiB tensor: local {:?}; s3 first {:?} (download + verify into the cache), second {:?} (maps the cache)",
        l.mapped_first, s.mapped_first, s.mapped_second
    );

    let m = metaflow(&server, &dir, count, tensor_bytes);
    println!();
    println!(
        "{:<44} {:>14} {:>14} {:>8}",
        "", "stowage s3", "metaflow s3", "ratio"
    );
    let goal_row = |what: &str, ours: f64, theirs: f64, unit: &str, goal: f64| {
        let ratio = ours / theirs;
        println!(
            "{:<44} {:>10.0} {unit:<3} {:>10.0} {unit:<3} {:>7.2}x (goal >= {goal}x) {}",
            what,
            ours,
            theirs,
            ratio,
            bench::at_least(ratio, goal)
        );
    };
    goal_row(
        &format!("save {count} small artifacts"),
        s.small_save,
        m.small_save,
        "/s",
        10.0,
    );
    goal_row(
        &format!("load {count} small artifacts"),
        s.small_load,
        m.small_load,
        "/s",
        10.0,
    );
    goal_row(
        &format!("save {mib} MiB tensor"),
        mb_per_s(tensor_bytes, s.tensor_save),
        mb_per_s(tensor_bytes, m.tensor_save),
        "MB/s",
        3.0,
    );
    goal_row(
        &format!("load {mib} MiB tensor (another machine)"),
        mb_per_s(tensor_bytes, s.tensor_load_cold),
        mb_per_s(tensor_bytes, m.tensor_load),
        "MB/s",
        3.0,
    );
    println!(
        "where the tensor's time goes: the server itself (boto3, the same {mib} MiB, no pickle or gzip) \
         takes one PUT at {:.0} MB/s, a multipart upload at {:.0} MB/s, one GET at {:.0} MB/s, \
         parallel ranged GETs at {:.0} MB/s; Metaflow stored its tensor gzipped in {:.0}% of the bytes",
        mb_per_s(tensor_bytes, m.raw_put),
        mb_per_s(tensor_bytes, m.raw_put_multipart),
        mb_per_s(tensor_bytes, m.raw_get),
        mb_per_s(tensor_bytes, m.raw_get_parallel),
        100.0 * m.tensor_stored / tensor_bytes as f64
    );
}

/// Metaflow's figures on the same server, from `benches/metaflow_s3.py`.
fn metaflow(server: &S3Server, dir: &TestDir, count: i64, tensor_bytes: usize) -> Metaflow {
    let work = dir.root.join("metaflow-work");
    std::fs::create_dir_all(&work).expect("create Metaflow's work directory");
    let script = workspace_root().join("tests/benches/metaflow_s3.py");
    let output = Command::new(python())
        .arg(&script)
        .args(["--count", &count.to_string()])
        .args(["--tensor-bytes", &tensor_bytes.to_string()])
        .current_dir(&work)
        .envs(server.env())
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .env("METAFLOW_DATASTORE_SYSROOT_S3", server.url("metaflow"))
        .env("METAFLOW_S3_ENDPOINT_URL", &server.endpoint)
        // Metaflow's user config (~/.metaflowconfig) stays out of it.
        .env("METAFLOW_HOME", &work)
        .output()
        .expect("run the interop Python");
    assert!(
        output.status.success(),
        "{} failed ({}):\n{}",
        script.display(),
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let json: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("metaflow_s3.py prints one JSON object");
    let number = |key: &str| {
        json[key]
            .as_f64()
            .unwrap_or_else(|| panic!("metaflow_s3.py printed no number {key:?}"))
    };
    Metaflow {
        small_save: number("small_save"),
        small_load: number("small_load"),
        tensor_save: Duration::from_secs_f64(number("tensor_save")),
        tensor_load: Duration::from_secs_f64(number("tensor_load")),
        raw_put: Duration::from_secs_f64(number("raw_put")),
        raw_put_multipart: Duration::from_secs_f64(number("raw_put_multipart")),
        raw_get: Duration::from_secs_f64(number("raw_get")),
        raw_get_parallel: Duration::from_secs_f64(number("raw_get_parallel")),
        tensor_stored: number("tensor_stored"),
    }
}
