//! The artifact store, end to end: values and files in through real
//! plugins, back out in their standard format; crashes at every failpoint
//! and at random moments; concurrent processes; corruption; missing plugins.

use std::fs;
use std::process::{Command, Stdio};
use std::time::Duration;

use stowage::store::FAILPOINTS;
use stowage::{Error, Value};
use stowage_tests::{artifacts, StowageCmd, TestDir};

fn json(text: &str) -> serde_json::Value {
    match serde_json::from_str(text) {
        Ok(value) => value,
        Err(error) => panic!("not JSON ({error}):\n{text}"),
    }
}

/// JSON equality by value: numbers compare numerically (`1e300` equals
/// `1e+300`), objects by keys in order.
fn same_value(a: &serde_json::Value, b: &serde_json::Value) -> bool {
    use serde_json::Value as J;
    match (a, b) {
        (J::Number(x), J::Number(y)) => match (x.as_i64(), y.as_i64()) {
            (Some(x), Some(y)) => x == y,
            _ => x.as_f64() == y.as_f64() && x.as_f64().is_some(),
        },
        (J::Array(x), J::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same_value(x, y))
        }
        (J::Object(x), J::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .zip(y)
                    .all(|((kx, vx), (ky, vy))| kx == ky && same_value(vx, vy))
        }
        _ => a == b,
    }
}

fn get_json(dir: &TestDir, name: &str) -> serde_json::Value {
    json(&StowageCmd::new(dir, &["get", name]).ok())
}

/// A JSON document large enough to take the store's large-blob path.
fn big_document(tag: &str) -> String {
    let items: Vec<String> = (0..150_000).map(|i| format!("\"{tag}-{i}\"")).collect();
    format!("{{\"tag\": \"{tag}\", \"items\": [{}]}}", items.join(","))
}

#[test]
fn json_documents_round_trip_through_the_fallback_as_equal_values() {
    let dir = TestDir::new("json-round-trip");
    let documents = [
        r#"{"z": 1, "a": [1, -2, 3.25, "é✓", null, true, false], "nested": {"deep": [[[]]], "empty": {}}}"#,
        "9223372036854775807",
        "-9223372036854775808",
        "[1e300, -0.0, 0.1, 18446744073709551615.0]",
        "\"just a string\"",
        "null",
    ];
    for (i, document) in documents.iter().enumerate() {
        let file = dir.root.join(format!("doc{i}.json"));
        fs::write(&file, document).expect("write");
        let name = format!("doc{i}");
        StowageCmd::new(
            &dir,
            &["put", &name, file.to_str().expect("utf-8"), "--json"],
        )
        .ok();
        assert!(
            same_value(&get_json(&dir, &name), &json(document)),
            "{document}"
        );
    }
    let file = dir.root.join("huge.json");
    fs::write(&file, "18446744073709551616").expect("write");
    StowageCmd::new(&dir, &["put", "huge", "huge.json", "--json"]).fails(
        1,
        "error: cannot store huge: integer 18446744073709551616 at $ is outside the 64-bit range",
    );
}

#[test]
fn plugin_artifacts_round_trip_through_put_and_get() {
    let dir = TestDir::new("plugin-round-trip");
    dir.install("fixture-echo", "stowage_echo");
    fs::write(dir.root.join("in.echo"), "ECHO\nsome payload").expect("write");
    let out = StowageCmd::new(&dir, &["put", "e", "in.echo"]).ok();
    assert_eq!(
        out,
        "stored e (string, echo-v1 v1, 12 bytes) with echo 1.2.0\n"
    );
    StowageCmd::new(&dir, &["get", "e", "-o", "out.echo"]).ok();
    assert_eq!(
        fs::read(dir.root.join("out.echo")).expect("read"),
        b"ECHO\nsome payload"
    );
    assert_eq!(
        StowageCmd::new(&dir, &["show", "e"]).ok(),
        "echo string: some payload\n"
    );
    // From stdin too.
    let mut child = Command::new(&artifacts().stowage)
        .args(["put", "s", "-"])
        .current_dir(&dir.root)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn");
    std::io::Write::write_all(&mut child.stdin.take().expect("stdin"), b"ECHO\nfrom stdin")
        .expect("write");
    assert!(child.wait().expect("wait").success());
    assert_eq!(
        StowageCmd::new(&dir, &["get", "s"]).ok(),
        "ECHO\nfrom stdin"
    );
}

#[test]
fn inspect_shows_serializer_version_encoding_sizes_and_digests() {
    let dir = TestDir::new("inspect");
    dir.install("fixture-echo", "stowage_echo");
    fs::write(dir.root.join("in.echo"), "ECHO\nhello").expect("write");
    StowageCmd::new(&dir, &["put", "e", "in.echo"]).ok();
    let record = json(&StowageCmd::new(&dir, &["inspect", "e", "--json"]).ok());
    assert_eq!(record["name"], "e");
    assert_eq!(record["obj_type"], "string");
    assert_eq!(record["encoding"], "echo-v1");
    assert_eq!(record["encoding_version"], 1);
    assert_eq!(
        record["written_by"],
        json(r#"{"serializer": "echo", "version": "1.2.0"}"#)
    );
    assert_eq!(record["serializer_info"], json(r#"{"source": "in.echo"}"#));
    assert_eq!(record["format_version"], 1);
    let blob = &record["blobs"][0];
    assert_eq!(
        (&blob["name"], &blob["size"]),
        (&json("\"data\""), &json("5"))
    );
    assert_eq!(blob["digest"], blake3::hash(b"hello").to_hex().to_string());
    let human = StowageCmd::new(&dir, &["inspect", "e"]).ok();
    assert!(human.contains("written by:  echo 1.2.0\n"), "{human}");
    assert!(
        human.contains(&format!(
            "blob:        data 5 bytes blake3:{}",
            blake3::hash(b"hello").to_hex()
        )),
        "{human}"
    );
    let listing = json(&StowageCmd::new(&dir, &["ls", "--json"]).ok());
    assert_eq!(listing.as_array().map(Vec::len), Some(1));
}

#[test]
fn unknown_names_exit_1_with_no_artifact_named() {
    let dir = TestDir::new("unknown-name");
    for command in ["get", "inspect", "show", "rm"] {
        StowageCmd::new(&dir, &[command, "ghost"]).fails(1, "error: no artifact named ghost");
    }
    let host = dir.host();
    let error = host.load("ghost").expect_err("absent");
    assert!(error.is_not_found(), "{error}");
}

#[test]
fn every_failpoint_leaves_the_old_or_the_new_artifact() {
    let old = r#"{"version": "old"}"#;
    let new = big_document("new");
    for failpoint in FAILPOINTS {
        let dir = TestDir::new(&format!("failpoint-{failpoint}"));
        fs::write(dir.root.join("old.json"), old).expect("write");
        fs::write(dir.root.join("new.json"), &new).expect("write");
        StowageCmd::new(&dir, &["put", "x", "old.json", "--json"]).ok();
        let output = StowageCmd::new(&dir, &["put", "x", "new.json", "--json"])
            .env("STOWAGE_FAILPOINT", failpoint)
            .output();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(
            output.status.code(),
            Some(86),
            "{failpoint} was not hit: {stderr}"
        );
        assert!(
            stderr.contains(&format!("failpoint {failpoint} hit")),
            "{stderr}"
        );

        let verify = StowageCmd::new(&dir, &["verify"]).ok();
        assert!(verify.ends_with(": 0 problems\n"), "{failpoint}: {verify}");
        let value = get_json(&dir, "x");
        assert!(
            value == json(old) || value == json(&new),
            "{failpoint}: torn value"
        );
    }
}

#[test]
fn sigkill_at_random_moments_during_large_saves_never_tears_an_artifact() {
    let dir = TestDir::new("sigkill");
    let old = r#"{"version": "old"}"#;
    fs::write(dir.root.join("old.json"), old).expect("write");
    StowageCmd::new(&dir, &["put", "x", "old.json", "--json"]).ok();
    let mut outcomes = (0, 0);
    for round in 0..12u64 {
        let new = big_document(&format!("round{round}"));
        fs::write(dir.root.join("new.json"), &new).expect("write");
        let mut child = Command::new(&artifacts().stowage)
            .args(["put", "x", "new.json", "--json"])
            .current_dir(&dir.root)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn");
        // Spread the kills over the whole save (pseudo-random, reproducible).
        let delay = (round * 7919 + 13) % 90;
        std::thread::sleep(Duration::from_millis(delay));
        let _ = child.kill(); // SIGKILL on Unix
        let status = child.wait().expect("wait");
        let verify = StowageCmd::new(&dir, &["verify"]).ok();
        assert!(
            verify.ends_with(": 0 problems\n"),
            "round {round}: {verify}"
        );
        let value = get_json(&dir, "x");
        if value == json(&new) {
            outcomes.1 += 1;
        } else {
            assert!(
                value["version"] == "old"
                    || value["tag"]
                        .as_str()
                        .is_some_and(|t| t.starts_with("round")),
                "round {round} ({status:?}): torn value"
            );
            outcomes.0 += 1;
        }
    }
    eprintln!(
        "sigkill rounds: {} left an earlier value, {} the new one",
        outcomes.0, outcomes.1
    );
}

#[test]
fn eight_processes_save_load_and_remove_concurrently_then_gc() {
    let dir = TestDir::new("concurrent");
    fs::write(dir.root.join("big.json"), big_document("shared")).expect("write");
    let stowage = artifacts().stowage.display().to_string();
    let workers: Vec<_> = (0..8)
        .map(|w| {
            // Each worker: save 6 artifacts (small and large), read each back,
            // remove every third, and read a neighbour's artifacts.
            let script = format!(
                "set -e; S={stowage}; \
                 for k in 1 2 3 4 5 6; do \
                   echo '{{\"w\": {w}, \"k\": '$k'}}' > w{w}-$k.json; \
                   $S put w{w}-$k w{w}-$k.json --json >/dev/null; \
                   $S get w{w}-$k > /dev/null; \
                   if [ $((k % 3)) -eq 0 ]; then $S rm w{w}-$k >/dev/null; fi; \
                   if [ $k -eq 2 ]; then $S put big{w} big.json --json >/dev/null; fi; \
                   $S ls > /dev/null; \
                 done"
            );
            Command::new("sh")
                .args(["-c", &script])
                .current_dir(&dir.root)
                .env_remove("STOWAGE_CONFIG")
                .env_remove("STOWAGE_PLUGINS")
                .spawn()
                .expect("spawn worker")
        })
        .collect();
    for mut worker in workers {
        assert!(worker.wait().expect("wait").success(), "a worker failed");
    }
    StowageCmd::new(&dir, &["gc"]).ok();
    let verify = StowageCmd::new(&dir, &["verify"]).ok();
    assert!(verify.ends_with(": 0 problems\n"), "{verify}");
    let listing = json(&StowageCmd::new(&dir, &["ls", "--json"]).ok());
    let mut names: Vec<String> = listing
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|r| r["name"].as_str().map(str::to_owned))
        .collect();
    names.sort();
    let mut expected: Vec<String> = (0..8)
        .flat_map(|w| {
            [1, 2, 4, 5]
                .into_iter()
                .map(move |k| format!("w{w}-{k}"))
                .chain(std::iter::once(format!("big{w}")))
        })
        .collect();
    expected.sort();
    assert_eq!(names, expected, "no lost record, no resurrected one");
    for w in 0..8 {
        assert_eq!(
            get_json(&dir, &format!("w{w}-5")),
            json(&format!("{{\"w\": {w}, \"k\": 5}}"))
        );
    }
    assert_eq!(get_json(&dir, "big3")["tag"], "shared");
}

#[test]
fn a_flipped_byte_is_reported_by_verify_and_never_served_by_get() {
    let dir = TestDir::new("flipped");
    fs::write(dir.root.join("small.json"), r#"{"small": "needle-4242"}"#).expect("write");
    StowageCmd::new(&dir, &["put", "small", "small.json", "--json"]).ok();
    let blob = StowageCmd::new(&dir, &["get", "small", "--raw"])
        .output()
        .stdout;
    let packs = dir.root.join("store").join("packs");
    let pack = fs::read_dir(&packs)
        .expect("packs")
        .filter_map(Result::ok)
        .next()
        .expect("a pack")
        .path();
    let mut bytes = fs::read(&pack).expect("read pack");
    let at = bytes
        .windows(blob.len())
        .position(|w| w == blob.as_slice())
        .expect("blob in pack");
    let mut flipped = blob.clone();
    flipped[blob.len() - 2] ^= 0x01;
    bytes[at + blob.len() - 2] ^= 0x01;
    fs::write(&pack, bytes).expect("write pack");

    let message = format!(
        "blob data of artifact small is corrupt: expected blake3 {}, got {}",
        blake3::hash(&blob).to_hex(),
        blake3::hash(&flipped).to_hex()
    );
    let output = StowageCmd::new(&dir, &["verify"]).output();
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        format!("small / data: {message}\nverified 1 artifacts, 1 blobs, 0 bytes: 1 problems\n")
    );
    assert_eq!(
        String::from_utf8_lossy(&output.stderr),
        "error: verify found 1 problems\n"
    );
    StowageCmd::new(&dir, &["get", "small"]).fails(1, &format!("error: {message}"));
    StowageCmd::new(&dir, &["get", "small", "--raw"]).fails(1, &format!("error: {message}"));
}

#[test]
fn a_deleted_blob_file_is_an_integrity_error() {
    let dir = TestDir::new("missing-blob");
    fs::write(dir.root.join("big.json"), big_document("gone")).expect("write");
    StowageCmd::new(&dir, &["put", "big", "big.json", "--json"]).ok();
    let host = dir.host();
    let record = host.store().expect("store").get("big").expect("record");
    let path = host.store().expect("store").blob_path(&record.blobs[0]);
    drop(host);
    fs::remove_file(&path).expect("delete blob file");
    let message = format!(
        "blob data of artifact big is missing: {} does not exist",
        path.display()
    );
    let output = StowageCmd::new(&dir, &["verify"]).output();
    assert_eq!(output.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&output.stdout).starts_with(&format!("big / data: {message}\n"))
    );
    StowageCmd::new(&dir, &["get", "big"]).fails(1, &format!("error: {message}"));
}

#[test]
fn disabled_writer_names_itself_raw_still_works_and_enable_restores() {
    let dir = TestDir::new("disabled-writer");
    dir.install("fixture-echo", "stowage_echo");
    fs::write(dir.root.join("in.echo"), "ECHO\nkept").expect("write");
    StowageCmd::new(&dir, &["put", "e", "in.echo"]).ok();
    StowageCmd::new(&dir, &["disable", "echo"]).ok();
    StowageCmd::new(&dir, &["get", "e"]).fails(
        1,
        "error: cannot load e: no deserializer for encoding echo-v1; written by echo 1.2.0 — \
         is it installed and enabled?",
    );
    assert_eq!(StowageCmd::new(&dir, &["get", "e", "--raw"]).ok(), "kept");
    StowageCmd::new(&dir, &["enable", "echo"]).ok();
    assert_eq!(StowageCmd::new(&dir, &["get", "e"]).ok(), "ECHO\nkept");
}

#[test]
fn save_many_is_all_or_nothing_and_names_the_failing_artifact() {
    let dir = TestDir::new("save-many");
    dir.write_config("[plugins.msgpack]\nenabled = false\n");
    dir.install("fixture-echo", "stowage_echo");
    let host = dir.host();
    let good = Value::String("fine".into());
    let bad = Value::Float(1.5);
    let Err(Error::Artifact { name, .. }) =
        host.save_many(&[("a", &good), ("b", &bad), ("c", &good)], &[])
    else {
        panic!("expected the batch to fail");
    };
    assert_eq!(name, "b");
    assert!(
        host.store().expect("store").list().is_empty(),
        "nothing of the batch committed"
    );
    let records = host
        .save_many(&[("a", &good), ("c", &good)], &[])
        .expect("saves");
    assert_eq!(records.len(), 2);
    assert_eq!(host.load("c").expect("loads").value, good);
}

#[test]
fn overwriting_keeps_the_old_version_until_the_new_one_commits() {
    let dir = TestDir::new("overwrite");
    dir.install("fixture-echo", "stowage_echo");
    let host = dir.host();
    host.save("x", &Value::String("one".into()), &[])
        .expect("saves");
    // A save that fails (echo refuses, the fallback is not asked for an
    // invalid string... it is: so use a value nothing takes).
    let error = host.save(
        "x",
        &Value::ClassSource(stowage::ClassSource {
            qualname: "A".into(),
            module: None,
            source: "class A: pass".into(),
        }),
        &[],
    );
    assert!(error.is_err());
    assert_eq!(
        host.load("x").expect("loads").value,
        Value::String("one".into())
    );
    host.save("x", &Value::String("two".into()), &[])
        .expect("saves");
    assert_eq!(
        host.load("x").expect("loads").value,
        Value::String("two".into())
    );
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    fs::create_dir_all(to).expect("mkdir");
    for entry in fs::read_dir(from)
        .expect("read fixture dir")
        .filter_map(Result::ok)
    {
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

#[test]
fn artifacts_written_with_record_format_1_still_load() {
    // tests/fixtures/stores/format-v1 was written by the first release of the
    // record format and is never regenerated: later formats must read it.
    let dir = TestDir::new("format-v1");
    let fixture = stowage_tests::workspace_root().join("tests/fixtures/stores/format-v1");
    let store = dir.root.join("store");
    fs::remove_dir_all(&store).expect("clear");
    copy_dir(&fixture, &store);
    dir.install("fixture-echo", "stowage_echo");

    let verify = StowageCmd::new(&dir, &["verify"]).ok();
    assert_eq!(
        verify,
        "verified 2 artifacts, 2 blobs, 103 bytes: 0 problems\n"
    );
    assert_eq!(
        get_json(&dir, "doc"),
        json(
            r#"{"created_by": "record format 1", "values": [1, 2.5, "three", null, {"four": true}]}"#
        )
    );
    assert_eq!(
        StowageCmd::new(&dir, &["get", "old-echo"]).ok(),
        "ECHO\nwritten by echo 1.2.0 under record format 1"
    );
    let record = json(&StowageCmd::new(&dir, &["inspect", "old-echo", "--json"]).ok());
    assert_eq!(record["format_version"], 1);
    assert_eq!(
        record["written_by"],
        json(r#"{"serializer": "echo", "version": "1.2.0"}"#)
    );
}
