//! Error messages through the real binary (SPEC §7, "More rules for the
//! command"): the artifact first, then the real cause; a plugin that
//! recognised the input and refused it is the headline; the "is it installed
//! and enabled?" hint only when no active plugin reads the encoding; what
//! errors quote from users and plugins is capped.

use std::fs;

use stowage::{Error, Value};
use stowage_tests::{workspace_root, StowageCmd, TestDir};

const PANIC_AT: &str = "at tests/fixtures/common/src/lib.rs:54";

fn demo_table(dir: &TestDir) -> String {
    let path = dir.root.join("table.arrow");
    fs::copy(
        workspace_root().join("host/src/cli/demo-table.arrow"),
        &path,
    )
    .expect("copy the demo table");
    path.display().to_string()
}

#[test]
fn class_source_refusal_is_the_headline_not_a_list_of_candidates() {
    let dir = TestDir::new("errors-class-source");
    dir.install("stowage-class-source", "stowage_class_source");
    fs::write(dir.root.join("a.py"), "class A: pass\n").expect("write");
    StowageCmd::new(&dir, &["put", "a", "a.py", "--qualname", "m.B"]).fails(
        1,
        "error: cannot store a: class-source: class is named `A` but the qualname `m.B` ends \
         in `B`",
    );
}

#[test]
fn non_utf8_python_file_is_refused_by_class_source_naming_the_byte() {
    let dir = TestDir::new("errors-latin1");
    dir.install("stowage-class-source", "stowage_class_source");
    fs::write(
        dir.root.join("c.py"),
        b"class Point:\n    name = 'caf\xe9'\n",
    )
    .expect("write");
    for extra in [&[][..], &["--qualname", "Point"][..]] {
        let mut args = vec!["put", "c", "c.py"];
        args.extend_from_slice(extra);
        StowageCmd::new(&dir, &args).fails(
            1,
            "error: cannot store c: class-source: class source is not UTF-8 (invalid byte at \
             offset 28)",
        );
    }
}

#[test]
fn empty_input_says_which_input_is_empty() {
    let dir = TestDir::new("errors-empty");
    fs::write(dir.root.join("empty.bin"), b"").expect("write");
    StowageCmd::new(&dir, &["put", "x", "empty.bin"])
        .fails(1, "error: cannot store x: empty.bin is empty");
    // The harness gives the binary an empty stdin.
    StowageCmd::new(&dir, &["put", "x", "-"]).fails(1, "error: cannot store x: stdin is empty");
    StowageCmd::new(&dir, &["put", "x", "-", "--json"])
        .fails(1, "error: cannot store x: stdin is empty");
    StowageCmd::new(&dir, &["put", "x", "empty.bin", "--json"])
        .fails(1, "error: cannot store x: empty.bin is empty");
}

#[test]
fn arrow_refusing_its_compression_option_is_the_headline() {
    let dir = TestDir::new("errors-arrow-option");
    dir.install("stowage-arrow", "stowage_arrow");
    let table = demo_table(&dir);
    StowageCmd::new(&dir, &["put", "t", &table, "--opt", "compression=brotli"]).fails(
        1,
        "error: cannot store t: arrow: unknown compression `brotli`; expected none, lz4 or zstd",
    );
    // A key arrow does not take: arrow recognised the file, so it is named.
    StowageCmd::new(&dir, &["put", "t", &table, "--opt", "level=3"]).fails(
        1,
        "error: cannot store t: arrow: unknown option level; accepted: compression",
    );
    StowageCmd::new(&dir, &["get", "t"]).fails(1, "error: no artifact named t");
}

#[test]
fn nothing_recognising_a_file_still_lists_the_candidates() {
    let dir = TestDir::new("errors-unrecognised");
    dir.install("stowage-arrow", "stowage_arrow");
    fs::write(dir.root.join("notes.txt"), "just text\n").expect("write");
    StowageCmd::new(&dir, &["put", "n", "notes.txt"]).fails(
        1,
        "error: cannot store n: no plugin recognises this file; tried: arrow (declined); \
         msgpack (declined)",
    );
}

#[test]
fn a_panicking_plugin_is_named_without_the_installed_hint() {
    let dir = TestDir::new("errors-panicking-reader");
    dir.install("fixture-panicky", "stowage_panicky");
    for (name, body) in [("e", "panic:export"), ("d", "panic:describe")] {
        fs::write(dir.root.join("in.echo"), format!("ECHO\n{body}")).expect("write");
        StowageCmd::new(&dir, &["put", name, "in.echo"]).ok();
    }
    // One line: the failure is the error itself, not also a warning.
    StowageCmd::new(&dir, &["get", "e"]).fails(
        1,
        &format!(
            "error: cannot load e: panicky: panicked in export: fixture panic in export \
             {PANIC_AT}"
        ),
    );
    StowageCmd::new(&dir, &["show", "d"]).fails(
        1,
        &format!(
            "error: cannot load d: panicky: panicked in describe: fixture panic in describe \
             {PANIC_AT}"
        ),
    );
    fs::write(dir.root.join("in.echo"), "ECHO\npanic:ingest").expect("write");
    StowageCmd::new(&dir, &["put", "i", "in.echo"]).fails(
        1,
        &format!(
            "error: cannot store i: panicky: panicked in ingest: fixture panic in ingest \
             {PANIC_AT}"
        ),
    );
}

#[test]
fn a_disabled_reader_gets_the_installed_hint() {
    let dir = TestDir::new("errors-disabled-reader");
    dir.install("fixture-echo", "stowage_echo");
    fs::write(dir.root.join("in.echo"), "ECHO\nkept").expect("write");
    StowageCmd::new(&dir, &["put", "e", "in.echo"]).ok();
    for command in ["get", "show"] {
        StowageCmd::new(&dir, &[command, "e"])
            .env("STOWAGE_PLUGINS", "-echo")
            .fails(
                1,
                "error: cannot load e: no deserializer for encoding echo-v1; written by echo \
                 1.2.0 — is it installed and enabled?",
            );
    }
}

#[test]
fn library_load_and_save_errors_name_the_artifact() {
    let dir = TestDir::new("errors-library");
    dir.install("fixture-echo", "stowage_echo");
    dir.write_config("[plugins.msgpack]\nenabled = false\n");
    let host = dir.host();
    let error = host
        .save("s", &Value::String("invalid:bad header".into()), &[])
        .expect_err("refused");
    assert_eq!(error.to_string(), "cannot store s: echo: bad header");
    assert!(matches!(error, Error::Artifact { ref name, .. } if name == "s"));
    host.save("ok", &Value::String("fine".into()), &[])
        .expect("saves");
    drop(host);
    let host = stowage::Host::open(stowage::HostOptions {
        toggles: Some("-echo".into()),
        ..stowage::HostOptions::with_config(dir.config_path())
    })
    .expect("opens");
    assert_eq!(
        host.load("ok").expect_err("no reader").to_string(),
        "cannot load ok: no deserializer for encoding echo-v1; written by echo 1.2.0 — is it \
         installed and enabled?"
    );
    assert_eq!(
        host.load("nope").expect_err("absent").to_string(),
        "no artifact named nope"
    );
}

#[test]
fn json_integer_beyond_i64_names_the_artifact_and_the_path() {
    let dir = TestDir::new("errors-json-int");
    fs::write(
        dir.root.join("f.json"),
        r#"{"a": [1, 18446744073709551616]}"#,
    )
    .expect("write");
    StowageCmd::new(&dir, &["put", "x", "f.json", "--json"]).fails(
        1,
        "error: cannot store x: integer 18446744073709551616 at $.a[1] is outside \
         the 64-bit range",
    );
    // explain has no artifact: the path alone.
    StowageCmd::new(
        &dir,
        &["explain", "--json", r#"{"a": [1, 18446744073709551616]}"#],
    )
    .fails(
        1,
        "error: integer 18446744073709551616 at $.a[1] is outside the 64-bit range",
    );
}

#[test]
fn errors_cap_what_they_quote_from_options() {
    let dir = TestDir::new("errors-capped");
    dir.install("stowage-arrow", "stowage_arrow");
    let table = demo_table(&dir);
    let huge = "a".repeat(100_000);
    // The plugin's own message quotes the value: capped at 500 characters.
    let message = format!("unknown compression `{huge}`; expected none, lz4 or zstd");
    StowageCmd::new(
        &dir,
        &["put", "t", &table, "--opt", &format!("compression={huge}")],
    )
    .fails(
        1,
        &format!(
            "error: cannot store t: arrow: unknown compression `{}… ({} bytes)",
            "a".repeat(500 - "unknown compression `".len()),
            message.len()
        ),
    );
    // An unknown key, quoted by the host: 80 characters.
    StowageCmd::new(&dir, &["put", "t", &table, "--opt", &format!("{huge}=1")]).fails(
        1,
        &format!(
            "error: cannot store t: arrow: unknown option {}… (100000 bytes); accepted: \
             compression",
            "a".repeat(80)
        ),
    );
    // Not KEY=VALUE: a usage error, quoting 80 characters.
    let output = StowageCmd::new(&dir, &["put", "t", &table, "--opt", &huge]).output();
    assert_eq!(output.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&output.stderr),
        format!(
            "error: --opt expects KEY=VALUE, got \"{}… (100000 bytes)\"\n",
            "a".repeat(80)
        )
    );
}
