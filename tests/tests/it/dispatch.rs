//! Priority dispatch through real plugins: order, ties, and candidates that
//! fail or panic in each entry point.

use stowage::{
    Answer, ArtifactMeta, Buffer, DispatchError, Error, Host, HostOptions, State, Value,
};
use stowage_tests::{assert_state, status_of, TestDir};

const PANIC_LOCATION: &str = "tests/fixtures/common/src/lib.rs:54";

fn echo_meta(info: &[(&str, &str)]) -> ArtifactMeta {
    ArtifactMeta {
        obj_type: "string".into(),
        encoding: "echo-v1".into(),
        encoding_version: 1,
        info: info
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        blobs: vec![("data".into(), 5)],
    }
}

fn blob(data: &str) -> Vec<(String, Buffer)> {
    vec![(
        "data".to_owned(),
        Buffer::from_vec(data.as_bytes().to_vec()),
    )]
}

fn string(s: &str) -> Value {
    Value::String(s.to_owned())
}

#[track_caller]
fn assert_counted_panic(host: &Host, entry: &str) {
    let status = status_of(host, "panicky");
    let message = format!("dispatch: {entry}: panic: panicked in {entry}: fixture panic in {entry} at {PANIC_LOCATION}");
    assert_eq!(
        (
            status.state,
            status.dispatch_errors,
            status.last_error.as_deref()
        ),
        (State::Active, 1, Some(message.as_str()))
    );
}

fn panicky_and_echo() -> (TestDir, Host) {
    let dir = TestDir::new("panics");
    dir.install("fixture-panicky", "stowage_panicky");
    dir.install("fixture-echo", "stowage_echo");
    let host = dir.host();
    (dir, host)
}

#[test]
fn lowest_priority_number_wins() {
    let dir = TestDir::new("priority");
    dir.install("fixture-echo", "stowage_echo");
    dir.install("fixture-rival", "stowage_rival");
    dir.write_config("[plugins.rival]\npriority = 10\n");
    let host = dir.host();
    assert_eq!(
        host.serialize_to_memory(&string("hi"), &[])
            .expect("serializes")
            .plugin,
        "rival"
    );
    let order: Vec<String> = host
        .snapshot()
        .statuses()
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert_eq!(order, ["rival", "echo", "composite", "msgpack"]);
}

#[test]
fn equal_priorities_break_ties_by_name() {
    let dir = TestDir::new("tie");
    dir.install("fixture-rival", "stowage_rival");
    dir.install("fixture-echo", "stowage_echo");
    let host = dir.host();
    let serialized = host
        .serialize_to_memory(&string("hi"), &[])
        .expect("serializes");
    assert_eq!(
        (serialized.plugin.as_str(), serialized.blobs),
        ("echo", vec![("data".to_owned(), b"hi".to_vec())])
    );
}

#[test]
fn declined_value_goes_to_the_next_candidate_without_counting() {
    let (_dir, host) = panicky_and_echo();
    let serialized = host
        .serialize_to_memory(&string("decline:x"), &[])
        .expect("serializes");
    assert_eq!(serialized.plugin, "msgpack");
    assert_eq!(status_of(&host, "echo").dispatch_errors, 0);
}

#[test]
fn panic_in_can_serialize_skips_to_next_candidate() {
    let (_dir, host) = panicky_and_echo();
    let serialized = host
        .serialize_to_memory(&string("panic:can_serialize"), &[])
        .expect("serializes");
    assert_eq!(serialized.plugin, "echo");
    assert_eq!(serialized.skipped.len(), 1);
    assert_counted_panic(&host, "can_serialize");
}

#[test]
fn panic_in_serialize_skips_to_next_candidate() {
    let (_dir, host) = panicky_and_echo();
    let serialized = host
        .serialize_to_memory(&string("panic:serialize"), &[])
        .expect("serializes");
    assert_eq!(serialized.plugin, "echo");
    assert_eq!(
        serialized.blobs,
        vec![("data".to_owned(), b"panic:serialize".to_vec())]
    );
    assert_counted_panic(&host, "serialize");
}

#[test]
fn panic_in_can_deserialize_skips_to_next_reader() {
    let (_dir, host) = panicky_and_echo();
    let meta = echo_meta(&[("panic", "panic:can_deserialize")]);
    let loaded = host
        .deserialize(
            &meta,
            &stowage::WrittenBy::new("echo", "1.2.0"),
            &blob("hello"),
        )
        .expect("loads");
    assert_eq!(
        (loaded.route.name(), loaded.output),
        ("echo", string("hello"))
    );
    assert_counted_panic(&host, "can_deserialize");
}

#[test]
fn panic_in_deserialize_skips_to_next_reader() {
    let (_dir, host) = panicky_and_echo();
    let loaded = host
        .deserialize(
            &echo_meta(&[]),
            &stowage::WrittenBy::new("echo", "1.2.0"),
            &blob("panic:deserialize"),
        )
        .expect("loads");
    assert_eq!(
        (loaded.route.name(), loaded.output),
        ("echo", string("panic:deserialize"))
    );
    assert_counted_panic(&host, "deserialize");
}

#[test]
fn panic_in_sniff_and_ingest_skip_to_next_sniffer() {
    for entry in ["sniff", "ingest"] {
        let (_dir, host) = panicky_and_echo();
        let file = format!("ECHO\npanic:{entry}");
        let saved = host
            .put_file("p", file.as_bytes(), None, &[], "test")
            .expect("ingests");
        assert_eq!(saved.record.meta.serializer, "echo", "{entry}");
        assert_eq!(
            saved
                .skipped
                .iter()
                .map(|s| s.plugin.as_str())
                .collect::<Vec<_>>(),
            ["panicky"],
            "{entry}"
        );
        assert_counted_panic(&host, entry);
    }
}

#[test]
fn panic_in_export_and_describe_skip_to_next_reader() {
    let (_dir, host) = panicky_and_echo();
    let mut file = Vec::new();
    let exported = host
        .export(
            &echo_meta(&[]),
            &stowage::WrittenBy::new("echo", "1.2.0"),
            &blob("panic:export"),
            &mut file,
        )
        .expect("exports");
    assert_eq!(
        (exported.route.name(), file.as_slice()),
        ("echo", &b"ECHO\npanic:export"[..])
    );
    assert_counted_panic(&host, "export");

    let (_dir, host) = panicky_and_echo();
    let described = host
        .describe(
            &echo_meta(&[]),
            &stowage::WrittenBy::new("echo", "1.2.0"),
            &blob("panic:describe"),
        )
        .expect("describes");
    assert_eq!(described.output, "echo string: panic:describe");
    assert_counted_panic(&host, "describe");
}

#[test]
fn serialize_that_writes_no_blob_is_an_internal_dispatch_error() {
    let dir = TestDir::new("no-blob");
    dir.install("fixture-echo", "stowage_echo");
    let host = dir.host();
    let serialized = host
        .serialize_to_memory(&string("no-blob"), &[])
        .expect("fallback takes it");
    assert_eq!(serialized.plugin, "msgpack");
    let status = status_of(&host, "echo");
    assert_eq!(
        (status.dispatch_errors, status.last_error.as_deref()),
        (
            1,
            Some("dispatch: serialize: internal error: serialize wrote no blob")
        )
    );
}

#[test]
fn when_every_candidate_fails_the_error_lists_invalid_input_first() {
    let dir = TestDir::new("all-fail");
    dir.install("fixture-panicky", "stowage_panicky");
    dir.install("fixture-echo", "stowage_echo");
    dir.write_config("[plugins.msgpack]\nenabled = false\n");
    let host = dir.host();
    assert_state(&host, "msgpack", State::Disabled, None);
    let Err(Error::Dispatch(error)) = host.serialize_to_memory(&string("invalid:bad header"), &[])
    else {
        panic!("expected a dispatch error");
    };
    assert_eq!(
        error.to_string(),
        "no serializer accepted the string value; tried: panicky (invalid input: bad header); echo (invalid input: bad header)"
    );
    let Err(Error::Dispatch(DispatchError::NoSerializer { attempts, .. })) =
        host.serialize_to_memory(&Value::Float(1.0), &[])
    else {
        panic!("expected no serializer");
    };
    assert!(attempts.is_empty());
}

#[test]
fn options_from_config_and_call_reach_the_plugin() {
    let dir = TestDir::new("options");
    dir.install("fixture-echo", "stowage_echo");
    dir.write_config("[plugins.echo.options]\nshout = \"yes\"\n");
    let host = dir.host();
    let loud = host
        .serialize_to_memory(&string("hi"), &[])
        .expect("serializes");
    assert_eq!(loud.blobs[0].1, b"HI");
    let quiet = host
        .serialize_to_memory(&string("hi"), &[("shout".into(), "no".into())])
        .expect("serializes");
    assert_eq!(quiet.blobs[0].1, b"hi");
    let Err(Error::Dispatch(DispatchError::NoSerializer { attempts, .. })) =
        host.serialize_to_memory(&string("hi"), &[("colour".into(), "red".into())])
    else {
        panic!("expected refusal");
    };
    assert_eq!(
        attempts[0].answer,
        Answer::Ineligible("unknown option colour; accepted: shout".into())
    );
}

#[test]
fn unknown_config_option_breaks_the_plugin_naming_accepted_keys() {
    let dir = TestDir::new("bad-option");
    dir.install("fixture-echo", "stowage_echo");
    dir.write_config("[plugins.echo.options]\ncolour = \"red\"\n");
    let host = dir.host();
    assert_state(
        &host,
        "echo",
        State::Broken,
        Some("config option unknown option colour; accepted: shout"),
    );
}

#[test]
fn loaded_value_round_trips_through_a_plugin() {
    let dir = TestDir::new("round-trip");
    dir.install("fixture-echo", "stowage_echo");
    let host = dir.host();
    for value in [string("héllo"), Value::Int(-42)] {
        let serialized = host.serialize_to_memory(&value, &[]).expect("serializes");
        let meta = ArtifactMeta {
            obj_type: serialized.written.obj_type.clone(),
            encoding: serialized.written.encoding.clone(),
            encoding_version: serialized.written.encoding_version,
            info: serialized.written.info.clone(),
            blobs: vec![],
        };
        let blobs: Vec<(String, Buffer)> = serialized
            .blobs
            .into_iter()
            .map(|(n, d)| (n, Buffer::from_vec(d)))
            .collect();
        let loaded = host
            .deserialize(&meta, &stowage::WrittenBy::new("echo", "1.2.0"), &blobs)
            .expect("loads");
        assert_eq!(loaded.output, value);
    }
}

#[test]
fn host_dispatches_from_many_threads_while_rescanning() {
    let dir = TestDir::new("threads");
    dir.install("fixture-echo", "stowage_echo");
    let host = Host::open(HostOptions::with_config(dir.config_path())).expect("opens");
    std::thread::scope(|scope| {
        for t in 0..8 {
            let host = &host;
            scope.spawn(move || {
                for i in 0..200 {
                    let value = string(&format!("{t}-{i}"));
                    let serialized = host.serialize_to_memory(&value, &[]).expect("serializes");
                    assert_eq!(serialized.blobs[0].1, format!("{t}-{i}").into_bytes());
                }
            });
        }
        scope.spawn(|| {
            for _ in 0..20 {
                host.rescan().expect("rescan");
            }
        });
    });
    assert_eq!(status_of(&host, "echo").dispatch_errors, 0);
}

/// A failure of the store while a plugin writes (here EFBIG: the process
/// may not grow a file past 1 MiB) is the host's, not the plugin's: the put
/// fails with the store's own error, the plugin is not skipped or blamed,
/// and the next plugin that would take the file (rival) is not tried.
#[test]
fn a_store_failure_while_writing_blames_no_plugin_and_tries_no_other() {
    let dir = TestDir::new("store-efbig");
    dir.install("fixture-echo", "stowage_echo");
    dir.install("fixture-rival", "stowage_rival");
    // 4 MiB that zstd cannot shrink: stored as its own temp file.
    let mut file = b"ECHO\n".to_vec();
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    file.extend((0..4 << 20).map(|_| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state as u8
    }));
    std::fs::write(dir.root.join("big.echo"), &file).expect("write");
    let stowage = stowage_tests::artifacts().stowage.clone();
    // SIGXFSZ ignored (a trap of "" is inherited through exec), so a write
    // past the limit fails with EFBIG instead of killing the process.
    let output = std::process::Command::new("sh")
        .args(["-c", "trap '' XFSZ; ulimit -f 2048; exec \"$0\" \"$@\""])
        .arg(&stowage)
        .args(["put", "big", "big.echo"])
        .current_dir(&dir.root)
        .env_remove("STOWAGE_CONFIG")
        .env_remove("STOWAGE_PLUGINS")
        .output()
        .expect("sh runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "stderr: {stderr}");
    let tmp = dir.root.join("store").join("tmp");
    let tmp = tmp.canonicalize().unwrap_or(tmp);
    assert!(
        stderr.starts_with(&format!("error: i/o error on {}/", tmp.display()))
            && stderr.ends_with(": File too large (os error 27)\n")
            && stderr.lines().count() == 1,
        "one line naming the store's failure, no plugin skipped; got:\n{stderr}"
    );
    let host = dir.host();
    let ls = host.store().expect("store").list();
    assert!(ls.is_empty(), "nothing committed: {ls:?}");

    // The same with a full disk (injected ENOSPC on the spool file).
    let full = stowage_tests::StowageCmd::new(&dir, &["put", "big", "big.echo"])
        .env("STOWAGE_FAILPOINT", "spool-enospc")
        .output();
    let stderr = String::from_utf8_lossy(&full.stderr);
    assert_eq!(full.status.code(), Some(1), "stderr: {stderr}");
    assert!(
        stderr.starts_with(&format!("error: i/o error on {}/", tmp.display()))
            && stderr.ends_with(": No space left on device (os error 28)\n")
            && stderr.lines().count() == 1,
        "one line naming the store's failure, no plugin skipped; got:\n{stderr}"
    );
}
