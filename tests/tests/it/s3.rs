//! The S3 store (SPEC §13) through the real `stowage` binary against a
//! real S3 server (`s3s-fs` on 127.0.0.1, started per test by the
//! harness): `--store URL` and `[store] url` round trips, eight
//! "machines" (processes with their own caches) sharing one store, the
//! server stopped in the middle of a save, the store's format marker and
//! the local cache's bound (`cache_max_mb`).

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use stowage_tests::s3server::S3Server;
use stowage_tests::{artifacts, wait_until, StowageCmd, TestDir};

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).expect("valid JSON")
}

/// `stowage ARGS…` reaching `server` through the AWS environment, with a
/// cache of its own under the test directory.
fn cmd(dir: &TestDir, env: &[(&str, String)], cache: &str, args: &[&str]) -> StowageCmd {
    let mut cmd = StowageCmd::new(dir, args);
    for (key, value) in env {
        cmd = cmd.env(key, value);
    }
    cmd.env(
        "XDG_CACHE_HOME",
        dir.root.join(cache).to_str().expect("utf-8"),
    )
}

/// A JSON document large enough for a blob object of its own.
fn big_document(tag: &str) -> String {
    let items: Vec<String> = (0..150_000).map(|i| format!("\"{tag}-{i}\"")).collect();
    format!("{{\"tag\": \"{tag}\", \"items\": [{}]}}", items.join(","))
}

#[test]
fn put_get_ls_rm_verify_and_gc_work_through_store_url() {
    let server = S3Server::start();
    let dir = TestDir::new("s3-cli");
    let url = server.url("cli");
    let env = server.env();
    fs::write(dir.root.join("small.json"), r#"{"answer": 42}"#).expect("write");
    fs::write(dir.root.join("big.json"), big_document("big")).expect("write");
    let run = |args: &[&str]| {
        let mut all = vec!["--store", url.as_str()];
        all.extend_from_slice(args);
        cmd(&dir, &env, "cache", &all)
    };
    run(&["put", "small", "small.json", "--json"]).ok();
    run(&["put", "big", "big.json", "--json"]).ok();
    assert_eq!(
        json(&run(&["get", "small"]).ok()),
        json(r#"{"answer": 42}"#)
    );
    assert_eq!(json(&run(&["get", "big"]).ok())["tag"], "big");
    let listing = json(&run(&["ls", "--json"]).ok());
    let names: Vec<&str> = listing
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|r| r["name"].as_str())
        .collect();
    assert_eq!(names, ["big", "small"]);
    run(&["rm", "small"]).ok();
    run(&["get", "small"]).fails(1, "error: no artifact named small");
    let verify = run(&["verify"]).ok();
    assert!(verify.ends_with(": 0 problems\n"), "{verify}");
    run(&["gc"]).ok();
    assert_eq!(json(&run(&["get", "big"]).ok())["tag"], "big");
    // Nothing was written to the local store directory.
    assert_eq!(
        fs::read_dir(dir.root.join("store")).expect("read").count(),
        0
    );
}

#[test]
fn store_url_and_store_s3_in_plugins_toml_choose_the_s3_store() {
    let server = S3Server::start();
    let dir = TestDir::new("s3-config");
    dir.write_config(&format!(
        "[store]\nurl = \"{}\"\ncache = \"s3-cache\"\n\n[store.s3]\nendpoint = \"{}\"\nregion = \"us-east-1\"\nallow_http = true\n",
        server.url("configured"),
        server.endpoint
    ));
    // `write_config` already wrote a `[store]` table; rewrite the file
    // with only ours.
    let text = fs::read_to_string(dir.config_path()).expect("read");
    let text = text.replacen("[store]\ndir = \"store\"\n\n", "", 1);
    fs::write(dir.config_path(), text).expect("write");
    fs::write(dir.root.join("v.json"), r#"[1, 2, 3]"#).expect("write");
    let run = |args: &[&str]| {
        StowageCmd::new(&dir, args)
            .env("AWS_ACCESS_KEY_ID", stowage_tests::s3server::ACCESS_KEY)
            .env("AWS_SECRET_ACCESS_KEY", stowage_tests::s3server::SECRET_KEY)
    };
    run(&["put", "v", "v.json", "--json"]).ok();
    assert_eq!(json(&run(&["get", "v"]).ok()), json("[1, 2, 3]"));
    let record_dir = server
        .root
        .join(stowage_tests::s3server::BUCKET)
        .join("configured")
        .join("records")
        .join(format!("{:02x}", blake3::hash(b"v").as_bytes()[0]))
        .join("v");
    assert_eq!(
        fs::read_dir(&record_dir).expect("records/<fan>/v/").count(),
        1
    );
    assert!(dir.root.join("s3-cache").join("tmp").is_dir());
}

#[test]
fn a_bad_store_url_in_plugins_toml_is_one_line_naming_it() {
    let dir = TestDir::new("s3-bad-url");
    fs::write(
        dir.config_path(),
        "[host]\ndir = \"plugin-libs\"\n\n[store]\nurl = \"s3:///prefix\"\n",
    )
    .expect("write");
    let config = dir.config_path();
    StowageCmd::new(&dir, &["ls"]).fails(
        1,
        &format!(
            "error: {}:5:7: store.url \"s3:///prefix\" is not a store URL: it names no bucket",
            config.display()
        ),
    );
}

#[test]
fn eight_machines_with_their_own_caches_share_one_store_then_verify_clean() {
    let server = S3Server::start();
    let dir = TestDir::new("s3-eight");
    let url = server.url("shared");
    let env = server.env();
    fs::write(dir.root.join("big.json"), big_document("shared")).expect("write");
    let stowage = artifacts().stowage.display().to_string();
    let started = Instant::now();
    let workers: Vec<_> = (0..8)
        .map(|w| {
            // Each machine: save 6 artifacts, 2 of them shared names, one
            // large blob every machine saves (same digest), read back,
            // remove every third of its own.
            let script = format!(
                "set -e; S='{stowage} --store {url}'; \
                 for k in 1 2 3 4 5 6; do \
                   echo '{{\"w\": {w}, \"k\": '$k'}}' > w{w}-$k.json; \
                   $S put w{w}-$k w{w}-$k.json --json >/dev/null; \
                   $S put shared-$((k % 2)) w{w}-$k.json --json >/dev/null; \
                   $S get w{w}-$k > /dev/null; \
                   if [ $((k % 3)) -eq 0 ]; then $S rm w{w}-$k >/dev/null; fi; \
                   if [ $k -eq 2 ]; then $S put big{w} big.json --json >/dev/null; fi; \
                 done"
            );
            let mut command = Command::new("sh");
            command
                .args(["-c", &script])
                .current_dir(&dir.root)
                .env_remove("STOWAGE_CONFIG")
                .env_remove("STOWAGE_PLUGINS")
                .env("XDG_CACHE_HOME", dir.root.join(format!("cache-{w}")));
            for (key, value) in server.env() {
                command.env(key, value);
            }
            command.spawn().expect("spawn a machine")
        })
        .collect();
    for mut worker in workers {
        assert!(worker.wait().expect("wait").success(), "a machine failed");
    }
    eprintln!("8 machines x 6 rounds: {:?}", started.elapsed());
    let run = |args: &[&str]| {
        let mut all = vec!["--store", url.as_str()];
        all.extend_from_slice(args);
        cmd(&dir, &env, "cache-check", &all)
    };
    let verify = run(&["verify"]).ok();
    assert!(verify.ends_with(": 0 problems\n"), "{verify}");
    let listing = json(&run(&["ls", "--json"]).ok());
    let names: Vec<String> = listing
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|r| r["name"].as_str().map(str::to_owned))
        .collect();
    let mut expected: Vec<String> = (0..8)
        .flat_map(|w| {
            [1, 2, 4, 5]
                .into_iter()
                .map(move |k| format!("w{w}-{k}"))
                .chain(std::iter::once(format!("big{w}")))
        })
        .chain(["shared-0".to_owned(), "shared-1".to_owned()])
        .collect();
    expected.sort();
    assert_eq!(names, expected, "no lost record, no resurrected one");
    for w in 0..8 {
        assert_eq!(
            json(&run(&["get", &format!("w{w}-5")]).ok()),
            json(&format!("{{\"w\": {w}, \"k\": 5}}"))
        );
    }
    assert_eq!(json(&run(&["get", "big3"]).ok())["tag"], "shared");
    // One large blob object for eight saves of the same bytes.
    let blobs = server
        .root
        .join(stowage_tests::s3server::BUCKET)
        .join("shared")
        .join("blobs");
    let count: usize = fs::read_dir(&blobs)
        .expect("blobs/")
        .map(|fan| {
            fs::read_dir(fan.expect("entry").path())
                .expect("fan")
                .count()
        })
        .sum();
    assert_eq!(count, 1);
}

#[test]
fn the_server_stopped_mid_save_gives_one_line_after_bounded_retries_and_no_record() {
    let mut server = S3Server::start();
    let dir = TestDir::new("s3-down");
    let url = server.url("down");
    let env = server.env();
    dir.write_config("[store.s3]\nmax_retries = 2\nretry_timeout_seconds = 3\n");
    fs::write(dir.root.join("a.json"), r#"{"a": 1}"#).expect("write");
    let run = |args: &[&str]| {
        let mut all = vec!["--store", url.as_str()];
        all.extend_from_slice(args);
        cmd(&dir, &env, "cache", &all)
    };
    run(&["put", "before", "a.json", "--json"]).ok();
    server.pause();
    let started = Instant::now();
    let output = run(&["put", "during", "a.json", "--json"]).output();
    let elapsed = started.elapsed();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    // The first request of the save (this process's one read of the
    // store's format marker) fails after the configured retries, naming
    // the object and the retry bounds.
    assert!(
        stderr.starts_with(&format!("error: i/o error on {url}/format: ")),
        "{stderr}"
    );
    assert!(
        stderr.contains("after 2 retries, max_retries: 2, retry_timeout: 3s"),
        "{stderr}"
    );
    assert!(elapsed.as_secs() < 30, "bounded retries took {elapsed:?}");
    eprintln!("server down: failed after {elapsed:?}: {stderr}");
    server.run();
    run(&["get", "during"]).fails(1, "error: no artifact named during");
    run(&["put", "after", "a.json", "--json"]).ok();
    assert_eq!(json(&run(&["get", "after"]).ok()), json(r#"{"a": 1}"#));
    assert_eq!(json(&run(&["get", "before"]).ok()), json(r#"{"a": 1}"#));
}

/// A safetensors file of one float32 tensor of `mib` MiB.
fn write_tensor(path: &Path, mib: usize, seed: u32) {
    let len = mib << 20;
    let mut header = format!(
        "{{\"t\":{{\"dtype\":\"F32\",\"shape\":[{}],\"data_offsets\":[0,{len}]}}}}",
        len / 4
    );
    while header.len() % 8 != 0 {
        header.push(' ');
    }
    let mut bytes = Vec::with_capacity(8 + header.len() + len);
    bytes.extend_from_slice(&(header.len() as u64).to_le_bytes());
    bytes.extend_from_slice(header.as_bytes());
    let mut state = 0x9e37_79b9_u32 ^ seed;
    for _ in 0..len / 4 {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        bytes.extend_from_slice(&((state % 1000) as f32).to_le_bytes());
    }
    fs::write(path, bytes).expect("write the tensor file");
}

/// The files under `dir` (recursively), relative names sorted.
fn files_under(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(at) = stack.pop() {
        let Ok(entries) = fs::read_dir(&at) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if let Ok(rel) = path.strip_prefix(dir) {
                out.push(rel.display().to_string());
            }
        }
    }
    out.sort();
    out
}

#[test]
fn a_writer_killed_mid_multipart_leaves_no_record_and_gc_aborts_its_upload() {
    let server = S3Server::start();
    let dir = TestDir::new("s3-sigkill");
    dir.install("stowage-tensor", "stowage_tensor");
    dir.write_config("[store]\ngc_grace_seconds = 0\n");
    // `write_config` put `dir = "store"` before our table; keep one table.
    let text = fs::read_to_string(dir.config_path()).expect("read");
    let text = text.replacen(
        "[store]\ndir = \"store\"\n\n[store]\n",
        "[store]\ndir = \"store\"\n",
        1,
    );
    fs::write(dir.config_path(), text).expect("write");
    let url = server.url("killed");
    let env = server.env();
    write_tensor(&dir.root.join("big.safetensors"), 96, 1);
    let prefix = server
        .root
        .join(stowage_tests::s3server::BUCKET)
        .join("killed");
    let uploads = prefix.join("uploads");

    let mut command = Command::new(&artifacts().stowage);
    command
        .args(["--store", &url, "put", "big", "big.safetensors"])
        .current_dir(&dir.root)
        .env_remove("STOWAGE_CONFIG")
        .env("XDG_CACHE_HOME", dir.root.join("cache"))
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    for (key, value) in &env {
        command.env(key, value);
    }
    // s3s-fs keeps an upload's parts as `<root>/.upload_id-<id>.part-<n>`.
    let parts = || {
        fs::read_dir(&server.root)
            .expect("server root")
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with(".upload_id-"))
            .count()
    };
    let mut child = command.spawn().expect("spawn the writer");
    // Kill it once its upload is journalled and its first part is stored.
    let journal = wait_until(Duration::from_secs(120), || {
        let journal = files_under(&uploads)
            .into_iter()
            .find(|f| f.ends_with(".json"));
        journal.filter(|_| parts() > 0)
    });
    let _ = child.kill(); // SIGKILL
    let status = child.wait().expect("wait");
    let journal = journal.expect("the writer journalled a multipart upload");
    assert!(!status.success(), "the writer was killed: {status:?}");
    let parts_at_kill = parts();
    assert!(parts_at_kill > 0);
    eprintln!(
        "killed mid-multipart ({status:?}) with journal uploads/{journal} and {parts_at_kill} part file(s) stored"
    );

    let run = |args: &[&str]| {
        let mut all = vec!["--store", url.as_str()];
        all.extend_from_slice(args);
        cmd(&dir, &env, "cache-check", &all)
    };
    assert_eq!(json(&run(&["ls", "--json"]).ok()), json("[]"), "no record");
    run(&["get", "big"]).fails(1, "error: no artifact named big");
    assert!(
        files_under(&prefix.join("blobs")).is_empty(),
        "no blob object"
    );
    let gc = run(&["gc"]).ok();
    assert_eq!(
        gc,
        "gc: removed 0 blob files and 0 packs, compacted 0 packs, removed 1 stale temp files; freed 0 bytes\n"
    );
    assert!(files_under(&uploads).is_empty(), "the journal is gone");
    assert_eq!(parts(), 0, "the upload was aborted: no part is left");
    // The next save of the same tensor works and reads back whole.
    run(&["put", "big", "big.safetensors"]).ok();
    let verify = run(&["verify"]).ok();
    assert!(verify.ends_with(": 0 problems\n"), "{verify}");
    assert_eq!(files_under(&prefix.join("blobs")).len(), 1);
}

#[test]
fn push_and_pull_copy_artifacts_by_digest_and_skip_what_is_there() {
    let server = S3Server::start();
    let dir = TestDir::new("s3-push");
    let url = server.url("team");
    let env = server.env();
    fs::write(dir.root.join("small.json"), r#"{"n": 1}"#).expect("write");
    fs::write(dir.root.join("big.json"), big_document("pushed")).expect("write");
    // The local directory store (the default) holds two artifacts.
    let local = |args: &[&str]| cmd(&dir, &env, "cache", args);
    local(&["put", "small", "small.json", "--json"]).ok();
    local(&["put", "big", "big.json", "--json"]).ok();
    let pushed = local(&["push", "small", "big", "--to", &url]).ok();
    assert!(
        pushed.starts_with("pushed 2 artifact(s) (")
            && pushed.ends_with(&format!(" to {url}; 0 already there\n")),
        "{pushed}"
    );
    let again = local(&["push", "small", "big", "--to", &url]).ok();
    assert_eq!(
        again,
        format!("pushed 0 artifact(s) (0 bytes) to {url}; 2 already there\n")
    );
    // Another machine pulls into its own, empty directory store.
    let other = dir.root.join("other-store");
    let other_arg = other.to_str().expect("utf-8");
    let pulled = local(&["--store", other_arg, "pull", "big", "--from", &url]).ok();
    assert!(pulled.starts_with("pulled 1 artifact(s) ("), "{pulled}");
    assert_eq!(
        json(&local(&["--store", other_arg, "get", "big"]).ok())["tag"],
        "pushed"
    );
    assert_eq!(
        json(&local(&["--store", &url, "get", "small"]).ok()),
        json(r#"{"n": 1}"#)
    );
    // A new name with the same bytes: its blob is not uploaded again.
    local(&["put", "big-copy", "big.json", "--json"]).ok();
    local(&["push", "big-copy", "--to", &url]).ok();
    let blobs = server
        .root
        .join(stowage_tests::s3server::BUCKET)
        .join("team")
        .join("blobs");
    assert_eq!(files_under(&blobs).len(), 1, "one blob object for both");
    local(&["push", "missing", "--to", &url]).fails(1, "error: no artifact named missing");
}

/// `moto_server` from the test venv on a free port; killed on drop.
struct Moto {
    child: std::process::Child,
    endpoint: String,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_moto() -> Moto {
    let python = stowage_tests::python();
    let bin = python.with_file_name("moto_server");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port");
    let child = Command::new(&bin)
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
    let moto = Moto {
        child,
        endpoint: format!("http://127.0.0.1:{port}"),
    };
    let up = wait_until(Duration::from_secs(60), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).ok()
    });
    assert!(up.is_some(), "moto_server did not listen on port {port}");
    // Create the bucket (moto accepts an unsigned CreateBucket).
    use std::io::{Read as _, Write as _};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    write!(
        stream,
        "PUT /stowage HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .expect("send CreateBucket");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).expect("read the answer");
    assert!(answer.starts_with("HTTP/1.1 200"), "CreateBucket: {answer}");
    moto
}

#[test]
fn the_round_trip_subset_runs_against_moto_server_too() {
    let moto = start_moto();
    let dir = TestDir::new("s3-moto");
    let url = "s3://stowage/moto".to_owned();
    let env = vec![
        ("AWS_ACCESS_KEY_ID", "testing".to_owned()),
        ("AWS_SECRET_ACCESS_KEY", "testing".to_owned()),
        ("AWS_ENDPOINT_URL", moto.endpoint.clone()),
        ("AWS_REGION", "us-east-1".to_owned()),
    ];
    fs::write(dir.root.join("small.json"), r#"{"answer": 42}"#).expect("write");
    fs::write(dir.root.join("big.json"), big_document("moto")).expect("write");
    let run = |args: &[&str]| {
        let mut all = vec!["--store", url.as_str()];
        all.extend_from_slice(args);
        cmd(&dir, &env, "cache", &all)
    };
    run(&["put", "small", "small.json", "--json"]).ok();
    run(&["put", "big", "big.json", "--json"]).ok();
    run(&["put", "small", "small.json", "--json"]).ok();
    assert_eq!(
        json(&run(&["get", "small"]).ok()),
        json(r#"{"answer": 42}"#)
    );
    assert_eq!(json(&run(&["get", "big"]).ok())["tag"], "moto");
    let listing = json(&run(&["ls", "--json"]).ok());
    assert_eq!(listing.as_array().map(Vec::len), Some(2));
    run(&["rm", "small"]).ok();
    run(&["get", "small"]).fails(1, "error: no artifact named small");
    let verify = run(&["verify"]).ok();
    assert!(verify.ends_with(": 0 problems\n"), "{verify}");
    run(&["gc"]).ok();
    assert_eq!(json(&run(&["get", "big"]).ok())["tag"], "moto");
}

#[test]
fn the_server_stopped_mid_multipart_fails_in_one_line_and_a_restart_recovers() {
    let mut server = S3Server::start();
    let dir = TestDir::new("s3-down-mid");
    dir.install("stowage-tensor", "stowage_tensor");
    fs::write(
        dir.config_path(),
        "[host]\ndir = \"plugin-libs\"\n\n[store]\ndir = \"store\"\ngc_grace_seconds = 0\n\n\
         [store.s3]\nmax_retries = 2\nretry_timeout_seconds = 3\n",
    )
    .expect("write");
    let url = server.url("midway");
    let env = server.env();
    write_tensor(&dir.root.join("big.safetensors"), 96, 2);
    let uploads = server
        .root
        .join(stowage_tests::s3server::BUCKET)
        .join("midway")
        .join("uploads");
    let mut command = Command::new(&artifacts().stowage);
    command
        .args(["--store", &url, "put", "big", "big.safetensors"])
        .current_dir(&dir.root)
        .env_remove("STOWAGE_CONFIG")
        .env("XDG_CACHE_HOME", dir.root.join("cache"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (key, value) in &env {
        command.env(key, value);
    }
    let child = command.spawn().expect("spawn the writer");
    // Poll tightly: the parts take a few hundred milliseconds to upload.
    let deadline = Instant::now() + Duration::from_secs(120);
    let journal = loop {
        let found = files_under(&uploads)
            .into_iter()
            .find(|f| f.ends_with(".json"));
        if found.is_some() || Instant::now() > deadline {
            break found;
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    server.pause();
    let started = Instant::now();
    let output = child.wait_with_output().expect("wait");
    let elapsed = started.elapsed();
    assert!(journal.is_some(), "the writer journalled its upload");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    // The request in flight when the server stopped: the journal's PUT
    // (its file landed, the answer did not) or a part's.
    assert!(
        stderr.starts_with(&format!("error: i/o error on {url}/blobs/"))
            || stderr.starts_with(&format!("error: i/o error on {url}/uploads/")),
        "{stderr}"
    );
    assert!(
        stderr.contains("after 2 retries, max_retries: 2, retry_timeout: 3s"),
        "{stderr}"
    );
    assert!(elapsed.as_secs() < 30, "bounded retries took {elapsed:?}");
    eprintln!("server stopped mid-multipart: failed {elapsed:?} later: {stderr}");
    server.run();
    let run = |args: &[&str]| {
        let mut all = vec!["--store", url.as_str()];
        all.extend_from_slice(args);
        cmd(&dir, &env, "cache", &all)
    };
    run(&["get", "big"]).fails(1, "error: no artifact named big");
    run(&["gc"]).ok();
    assert!(files_under(&uploads).is_empty(), "gc cleared the journal");
    run(&["put", "big", "big.safetensors"]).ok();
    let verify = run(&["verify"]).ok();
    assert!(verify.ends_with(": 0 problems\n"), "{verify}");
}

#[test]
fn the_store_format_marker_is_written_at_the_first_put_and_a_newer_one_refuses_ls_get_put_gc() {
    let server = S3Server::start();
    let dir = TestDir::new("s3-format");
    let url = server.url("marked");
    let env = server.env();
    fs::write(dir.root.join("v.json"), r#"{"v": 1}"#).expect("write");
    let run = |args: &[&str]| {
        let mut all = vec!["--store", url.as_str()];
        all.extend_from_slice(args);
        cmd(&dir, &env, "cache", &all)
    };
    let prefix = server
        .root
        .join(stowage_tests::s3server::BUCKET)
        .join("marked");
    let marker = prefix.join("format");
    assert_eq!(json(&run(&["ls", "--json"]).ok()), json("[]"));
    assert!(!marker.exists(), "reads never write the marker");
    run(&["put", "v", "v.json", "--json"]).ok();
    assert_eq!(
        fs::read_to_string(&marker).expect("marker"),
        "stowage-s3-store 1\n"
    );
    // A store made before markers (same layout, no marker) reads, and
    // gains the marker at its next write.
    fs::remove_file(&marker).expect("remove the marker");
    assert_eq!(json(&run(&["get", "v"]).ok()), json(r#"{"v": 1}"#));
    assert!(!marker.exists());
    run(&["put", "w", "v.json", "--json"]).ok();
    assert_eq!(
        fs::read_to_string(&marker).expect("marker"),
        "stowage-s3-store 1\n"
    );
    // A newer build's store: every command refuses it in one line.
    fs::write(&marker, "stowage-s3-store 99\n").expect("plant a newer marker");
    let newer =
        format!("error: store {url} has format 99; this build writes format 1 — upgrade stowage");
    run(&["ls"]).fails(1, &newer);
    run(&["get", "v"]).fails(1, &newer);
    run(&["put", "x", "v.json", "--json"]).fails(1, &newer);
    run(&["rm", "v"]).fails(1, &newer);
    run(&["gc"]).fails(1, &newer);
    assert!(
        !prefix.join("records").join("x").exists(),
        "nothing written"
    );
    assert_eq!(
        fs::read_to_string(&marker).expect("marker"),
        "stowage-s3-store 99\n"
    );
    // A marker that is not `stowage-s3-store N`.
    fs::write(&marker, "stowage-store 2\n").expect("plant a malformed marker");
    let malformed = format!(
        "error: store format marker {url}/format is malformed: expected \"stowage-s3-store N\""
    );
    run(&["ls"]).fails(1, &malformed);
    run(&["put", "x", "v.json", "--json"]).fails(1, &malformed);
}

#[test]
fn cache_max_mb_that_is_not_a_number_is_a_config_error_at_its_value() {
    let dir = TestDir::new("s3-cache-max-bad");
    fs::write(
        dir.config_path(),
        "[host]\ndir = \"plugin-libs\"\n\n[store]\nurl = \"s3://b/p\"\ncache_max_mb = \"10G\"\n",
    )
    .expect("write");
    let config = dir.config_path();
    StowageCmd::new(&dir, &["ls"]).fails(
        1,
        &format!(
            "error: {}:6:16: store.cache_max_mb must be an integer, found string",
            config.display()
        ),
    );
}

/// Sets `path`'s modification time to `hours` before now, as if its last
/// use were that long ago.
fn last_used_hours_ago(path: &Path, hours: u64) {
    let when = std::time::SystemTime::now() - Duration::from_secs(hours * 3600);
    fs::File::open(path)
        .and_then(|f| f.set_modified(when))
        .expect("set the modification time");
}

#[test]
fn gc_and_later_puts_trim_the_cache_to_cache_max_mb_least_recently_used_first() {
    let server = S3Server::start();
    let dir = TestDir::new("s3-cache-trim");
    dir.install("stowage-tensor", "stowage_tensor");
    // 3 MiB: two 1 MiB tensors (and their headers) fit, three do not.
    fs::write(
        dir.config_path(),
        "[host]\ndir = \"plugin-libs\"\n\n[store]\ndir = \"store\"\ncache_max_mb = 3\n",
    )
    .expect("write");
    let url = server.url("trimmed");
    let env = server.env();
    let run = |args: &[&str]| {
        let mut all = vec!["--store", url.as_str()];
        all.extend_from_slice(args);
        cmd(&dir, &env, "cache", &all)
    };
    let blobs = dir.root.join("cache").join("stowage").join("blobs");
    for (i, name) in ["t1", "t2", "t3", "t4"].iter().enumerate() {
        let seed = u32::try_from(i).expect("small");
        write_tensor(&dir.root.join(format!("{name}.safetensors")), 1, seed);
    }
    // Three puts: 3 MiB and more in the cache, but all of it used within
    // the last 10 minutes, so nothing goes yet.
    let mut cached = Vec::new();
    for name in ["t1", "t2", "t3"] {
        run(&["put", name, &format!("{name}.safetensors")]).ok();
        let new: Vec<String> = files_under(&blobs)
            .into_iter()
            .filter(|f| !cached.contains(f))
            .collect();
        assert_eq!(new.len(), 1, "{name} put one blob file into the cache");
        cached.extend(new);
    }
    // As if t1, t2, t3 were last used 3, 2 and 1 hours ago: gc trims the
    // least recently used (t1) and keeps the bound.
    for (file, hours) in cached.iter().zip([3, 2, 1]) {
        last_used_hours_ago(&blobs.join(file), hours);
    }
    run(&["gc"]).ok();
    assert_eq!(files_under(&blobs), sorted(&cached[1..]), "t1 was evicted");
    // A later put grows the cache past its bound: t2 goes.
    run(&["put", "t4", "t4.safetensors"]).ok();
    let left = files_under(&blobs);
    assert_eq!(left.len(), 2, "{left:?}");
    assert!(
        left.contains(&cached[2]) && !left.contains(&cached[1]),
        "t2 was evicted: {left:?}"
    );
    // Evicted blobs still load (from the store).
    for name in ["t1", "t2", "t3", "t4"] {
        let out = format!("{name}.out");
        run(&["get", name, "-o", &out]).ok();
        assert_eq!(
            fs::read(dir.root.join(&out)).expect("read"),
            fs::read(dir.root.join(format!("{name}.safetensors"))).expect("read")
        );
    }
    let verify = run(&["verify"]).ok();
    assert!(verify.ends_with(": 0 problems\n"), "{verify}");
}

fn sorted(names: &[String]) -> Vec<String> {
    let mut names = names.to_vec();
    names.sort();
    names
}
