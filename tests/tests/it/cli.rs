//! The `stowage` binary: exit codes, one-line errors, status JSON, toggles,
//! explain and watch.

use std::fs;

use stowage_tests::{lib_file, StowageCmd, TestDir, WatchProcess};

fn json(text: &str) -> serde_json::Value {
    match serde_json::from_str(text) {
        Ok(value) => value,
        Err(error) => panic!("not JSON ({error}):\n{text}"),
    }
}

#[test]
fn status_json_has_the_documented_shape() {
    let dir = TestDir::new("status-json");
    dir.install("fixture-echo", "stowage_echo");
    dir.write_config("[plugins.tensor]\npriority = 33\n");
    let status = json(&StowageCmd::new(&dir, &["status", "--json"]).ok());
    let keys: Vec<&str> = status
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys, ["config", "dir", "serializers", "warnings"]);
    assert_eq!(status["config"], dir.config_path().display().to_string());
    assert_eq!(status["dir"], dir.plugin_dir().display().to_string());
    let serializers = status["serializers"].as_array().expect("array");
    let names: Vec<&str> = serializers
        .iter()
        .map(|s| s["name"].as_str().unwrap_or("?"))
        .collect();
    assert_eq!(names, ["echo", "composite", "msgpack", "tensor"]);
    let expected_keys = [
        "name",
        "state",
        "priority",
        "version",
        "interface_version",
        "library",
        "kinds",
        "encodings",
        "awaiting",
        "last_error",
        "dispatch_errors",
        "load_ms",
        "enabled",
        "builtin",
        "origin",
        // Added with process isolation (SPEC §14).
        "isolation",
        "runner_pid",
        "restarts",
    ];
    for serializer in serializers {
        let keys: Vec<&str> = serializer
            .as_object()
            .expect("object")
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(keys, expected_keys);
    }
    let echo = &serializers[0];
    assert_eq!(
        (
            &echo["state"],
            &echo["priority"],
            &echo["version"],
            &echo["interface_version"],
            &echo["origin"],
            &echo["builtin"]
        ),
        (
            &json("\"active\""),
            &json("50"),
            &json("\"1.2.0\""),
            &json("\"1.1.0\""),
            &json("\"directory\""),
            &json("false")
        )
    );
    assert_eq!(echo["kinds"], json(r#"["string", "int", "tensor"]"#));
    assert_eq!(echo["encodings"], json(r#"["echo-v1"]"#));
    let msgpack = &serializers[2];
    assert_eq!(
        (
            &msgpack["builtin"],
            &msgpack["library"],
            &msgpack["priority"],
            &msgpack["origin"]
        ),
        (
            &json("true"),
            &json("null"),
            &json("9999"),
            &json("\"builtin\"")
        )
    );
    let tensor = &serializers[3];
    let awaiting = dir
        .plugin_dir()
        .join(lib_file("stowage_tensor"))
        .display()
        .to_string();
    assert_eq!(
        (
            &tensor["state"],
            &tensor["awaiting"],
            &tensor["version"],
            &tensor["kinds"],
            &tensor["origin"],
            &tensor["priority"]
        ),
        (
            &json("\"pending\""),
            &serde_json::Value::String(awaiting),
            &json("null"),
            &json("[]"),
            &json("\"config\""),
            &json("33")
        )
    );
}

#[test]
fn configured_priority_shows_in_every_state_and_builtin_keeps_its_origin() {
    let dir = TestDir::new("status-priority");
    dir.install("fixture-echo", "stowage_echo");
    dir.install("fixture-init-panic", "stowage_init_panic");
    dir.write_config(
        "[plugins.echo]\nenabled = false\npriority = 7\n[plugins.msgpack]\npriority = 5\n\
         [plugins.arrow]\n[plugins.tensor]\npriority = 33\n[plugins.init-panic]\npriority = 4\n",
    );
    let status = json(&StowageCmd::new(&dir, &["status", "--json"]).ok());
    let rows: Vec<(&str, &str, &serde_json::Value, &str)> = status["serializers"]
        .as_array()
        .expect("array")
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap_or("?"),
                s["state"].as_str().unwrap_or("?"),
                &s["priority"],
                s["origin"].as_str().unwrap_or("?"),
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            ("msgpack", "active", &json("5"), "builtin"),
            ("composite", "active", &json("9998"), "builtin"),
            ("arrow", "pending", &json("null"), "config"),
            ("tensor", "pending", &json("33"), "config"),
            ("init-panic", "broken", &json("4"), "config"),
            ("echo", "disabled", &json("7"), "config"),
        ]
    );
}

#[test]
fn status_table_lists_serializers_in_dispatch_order() {
    let dir = TestDir::new("status-table");
    dir.install("fixture-echo", "stowage_echo");
    dir.install("fixture-rival", "stowage_rival");
    dir.install("fixture-init-panic", "stowage_init_panic");
    dir.write_config("[plugins.rival]\npriority = 7\n");
    let table = StowageCmd::new(&dir, &["status"]).ok();
    let names: Vec<&str> = table
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(
        names,
        ["rival", "echo", "composite", "msgpack", "init-panic"]
    );
    assert!(
        table.contains("panic during init: fixture refuses to start"),
        "{table}"
    );
}

#[test]
fn disable_edits_only_the_enabled_value() {
    let dir = TestDir::new("disable");
    dir.install("fixture-echo", "stowage_echo");
    let original = "# my plugins\n[host]\ndir   =   \"plugin-libs\"   # drop-ins\n\n[plugins.echo]  # the echo plugin\nenabled = true   # keep this comment\npriority=3\n\n[plugins.other]\nenabled = true\n";
    fs::write(dir.config_path(), original).expect("write");
    let out = StowageCmd::new(&dir, &["disable", "echo"]).ok();
    assert_eq!(
        out,
        format!("disabled echo in {}\n", dir.config_path().display())
    );
    let edited = fs::read_to_string(dir.config_path()).expect("read");
    assert_eq!(
        edited,
        original.replacen("enabled = true   # keep", "enabled = false   # keep", 1)
    );
    let status = json(&StowageCmd::new(&dir, &["status", "--json"]).ok());
    let echo = &status["serializers"]
        .as_array()
        .expect("array")
        .iter()
        .find(|s| s["name"] == "echo")
        .expect("echo")["state"];
    assert_eq!(echo, "disabled");
    StowageCmd::new(&dir, &["enable", "echo"]).ok();
    assert_eq!(
        fs::read_to_string(dir.config_path()).expect("read"),
        original
    );
}

#[test]
fn toggling_an_unknown_name_warns() {
    let dir = TestDir::new("unknown-toggle");
    let output = StowageCmd::new(&dir, &["disable", "nosuch"]).output();
    assert_eq!(output.status.code(), Some(0));
    assert_eq!(
        String::from_utf8_lossy(&output.stderr),
        "warning: unknown plugin nosuch: not configured and not found in the plugin directory\n"
    );
}

#[test]
fn env_toggles_apply_for_one_process_and_warn_on_unknown_names() {
    let dir = TestDir::new("env-toggles");
    dir.install("fixture-echo", "stowage_echo");
    let output = StowageCmd::new(&dir, &["status", "--json"])
        .env("STOWAGE_PLUGINS", "-echo,+nosuch")
        .output();
    assert_eq!(output.status.code(), Some(0));
    assert_eq!(
        String::from_utf8_lossy(&output.stderr),
        "warning: STOWAGE_PLUGINS names unknown plugin nosuch\n"
    );
    let status = json(&String::from_utf8_lossy(&output.stdout));
    assert_eq!(
        status["warnings"],
        json(r#"["STOWAGE_PLUGINS names unknown plugin nosuch"]"#)
    );
    assert_eq!(status["serializers"][2]["name"], "echo");
    assert_eq!(status["serializers"][2]["state"], "disabled");
    // The file is untouched: the next process sees echo active again.
    let status = json(&StowageCmd::new(&dir, &["status", "--json"]).ok());
    assert_eq!(status["serializers"][0]["state"], "active");
}

#[test]
fn explain_shows_candidates_and_a_panicking_plugin_leaves_no_backtrace() {
    let dir = TestDir::new("explain");
    dir.install("fixture-panicky", "stowage_panicky");
    dir.install("fixture-echo", "stowage_echo");
    let output = StowageCmd::new(&dir, &["explain", "--json", "\"panic:can_serialize\""]).output();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert_eq!(
        stdout,
        "candidates for a string value:\n  \
         1. panicky (priority 10): panic: panicked in can_serialize: fixture panic in can_serialize at tests/fixtures/common/src/lib.rs:54\n  \
         2. echo (priority 50): accepted\n  \
         3. msgpack (priority 9999): not asked\n\
         winner: echo — the first active serializer claiming the kind, in priority order (ties by name), whose can_serialize accepts it\n"
    );
    assert_eq!(
        stderr,
        "warning: skipped plugin panicky: dispatch: panic: panicked in can_serialize: fixture panic in can_serialize at tests/fixtures/common/src/lib.rs:54\n"
    );
}

#[test]
fn explain_file_asks_each_sniffer_in_order() {
    let dir = TestDir::new("explain-file");
    dir.install("fixture-echo", "stowage_echo");
    fs::write(dir.root.join("x.echo"), "ECHO\nhi").expect("write");
    let stdout = StowageCmd::new(&dir, &["explain", "x.echo"]).ok();
    assert_eq!(
        stdout,
        "candidates for x.echo:\n  1. echo (priority 50): accepted\n  2. msgpack (priority 9999): not asked\n\
         winner: echo — the first active plugin, in priority order (ties by name), whose sniff recognises the file\n"
    );
}

#[test]
fn errors_are_one_line_with_exit_1_and_usage_errors_exit_2() {
    let dir = TestDir::new("errors");
    StowageCmd::new(&dir, &["explain", "missing.bin"]).fails(
        1,
        "error: cannot read missing.bin: No such file or directory (os error 2)",
    );
    StowageCmd::new(&dir, &["explain", "--json", "{nope"]).fails(
        1,
        "error: --json is not valid JSON: key must be a string at line 1 column 2",
    );
    StowageCmd::new(&dir, &["status"])
        .env("STOWAGE_CONFIG", "nowhere.toml")
        .fails(
            1,
            &format!(
                "error: config file {} not found",
                dir.root.join("nowhere.toml").display()
            ),
        );
    let output = StowageCmd::new(&dir, &["frobnicate"]).output();
    assert_eq!(output.status.code(), Some(2));
}

#[test]
fn watch_activates_a_pending_plugin_dropped_in() {
    let dir = TestDir::new("watch");
    dir.write_config("[plugins.echo]\n");
    let mut watch = WatchProcess::start(&dir);
    watch.expect_line("echo: new -> pending");
    dir.install("fixture-echo", "stowage_echo");
    watch.expect_line("echo: pending -> active");
}

#[test]
fn bad_config_exits_1_naming_file_line_and_column() {
    let dir = TestDir::new("bad-config");
    let path = dir.config_path();
    fs::write(
        &path,
        "[host]\ndir = \"plugin-libs\"\n[plugins.echo\nenabled = true\n",
    )
    .expect("write");
    StowageCmd::new(&dir, &["status"]).fails(
        1,
        &format!(
            "error: {}:3:14: invalid table header; expected `.`, `]`",
            path.display()
        ),
    );
    fs::write(
        &path,
        "[host]\ndir = \"plugin-libs\"\n[plugins.echo]\nenabled = \"yes\"\n",
    )
    .expect("write");
    StowageCmd::new(&dir, &["status"]).fails(
        1,
        &format!(
            "error: {}:4:11: plugins.echo.enabled must be a boolean, found string",
            path.display()
        ),
    );
    // `disable` refuses to edit a broken file and leaves it untouched.
    let before = fs::read(&path).expect("read");
    StowageCmd::new(&dir, &["disable", "echo"]).fails(
        1,
        &format!(
            "error: {}:4:11: plugins.echo.enabled must be a boolean, found string",
            path.display()
        ),
    );
    assert_eq!(fs::read(&path).expect("read"), before);
}

#[test]
fn unknown_config_keys_and_clamped_priorities_are_warnings() {
    let dir = TestDir::new("config-warnings");
    let path = dir.config_path();
    fs::write(
        &path,
        "[host]\ndir = \"plugin-libs\"\nautolaod = true\n[plugins.echo]\npriority = 12000\n",
    )
    .expect("write");
    dir.install("fixture-echo", "stowage_echo");
    let output = StowageCmd::new(&dir, &["status", "--json"]).output();
    assert_eq!(output.status.code(), Some(0));
    let p = path.display();
    assert_eq!(
        String::from_utf8_lossy(&output.stderr),
        format!(
            "warning: {p}:3:1: unknown key host.autolaod (ignored)\n\
             warning: {p}:5:12: plugins.echo.priority 12000 is outside 0..=9998; clamped to 9998\n"
        )
    );
    let status = json(&String::from_utf8_lossy(&output.stdout));
    // Clamped to 9998, it ties with the built-in composite: by name.
    assert_eq!(status["serializers"][0]["name"], "composite");
    assert_eq!(status["serializers"][1]["name"], "echo");
    assert_eq!(status["serializers"][1]["priority"], 9998);
    assert_eq!(status["serializers"][2]["name"], "msgpack");
}

#[test]
fn demo_runs_end_to_end_with_every_plugin() {
    let dir = TestDir::new("demo");
    let libs = stowage_tests::artifacts()
        .lib("stowage-tensor")
        .parent()
        .expect("a library directory")
        .display()
        .to_string();
    let out = StowageCmd::new(&dir, &["demo", "--libs", &libs, "--dir", "run"]).ok();
    for expected in [
        "awaiting echo",
        "panic during init: fixture refuses to start",
        "string \"hello\" -> echo",
        "float 2.5 (no plugin claims floats) -> msgpack",
        "string \"hello\" -> rival",
        "weights: Tensor",
        "-> tensor 0.1.0 (safetensors v1",
        "-> class-source 0.1.0 (python-class-source v1",
        "loaded through the C Data Interface: 3 rows in 1 batch(es)",
        "demo finished",
    ] {
        assert!(
            out.contains(expected),
            "demo output lacks {expected:?}:\n{out}"
        );
    }
    assert!(!out.contains("DIFFERENT"), "{out}");
    // Running it again reuses its own directory; a foreign one is refused.
    StowageCmd::new(&dir, &["demo", "--libs", &libs, "--dir", "run"]).ok();
    fs::create_dir_all(dir.root.join("mine")).expect("mkdir");
    StowageCmd::new(&dir, &["demo", "--libs", &libs, "--dir", "mine"]).fails(
        1,
        "error: mine exists and was not made by stowage demo; pick another --dir",
    );
}

#[test]
fn panics_in_sniff_ingest_export_and_describe_print_one_warning_and_no_backtrace() {
    let dir = TestDir::new("panics-cli");
    dir.install("fixture-panicky", "stowage_panicky");
    dir.install("fixture-echo", "stowage_echo");
    let at = "at tests/fixtures/common/src/lib.rs:54";
    let warning = |entry: &str| {
        format!("warning: skipped plugin panicky: dispatch: {entry}: panic: panicked in {entry}: fixture panic in {entry} {at}\n")
    };
    for (entry, body) in [("sniff", "panic:sniff"), ("ingest", "panic:ingest")] {
        fs::write(dir.root.join("in.echo"), format!("ECHO\n{body}")).expect("write");
        let output = StowageCmd::new(&dir, &["put", entry, "in.echo"]).output();
        assert_eq!(output.status.code(), Some(0));
        assert_eq!(
            String::from_utf8_lossy(&output.stdout),
            format!(
                "stored {entry} (string, echo-v1 v1, {} bytes) with echo 1.2.0\n",
                body.len()
            )
        );
        assert_eq!(String::from_utf8_lossy(&output.stderr), warning(entry));
    }
    fs::write(dir.root.join("in.echo"), "ECHO\npanic:export").expect("write");
    StowageCmd::new(&dir, &["put", "e", "in.echo"])
        .env("STOWAGE_PLUGINS", "-panicky")
        .ok();
    let output = StowageCmd::new(&dir, &["get", "e"]).output();
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "ECHO\npanic:export"
    );
    assert_eq!(String::from_utf8_lossy(&output.stderr), warning("export"));
    fs::write(dir.root.join("in.echo"), "ECHO\npanic:describe").expect("write");
    StowageCmd::new(&dir, &["put", "d", "in.echo"])
        .env("STOWAGE_PLUGINS", "-panicky")
        .ok();
    let output = StowageCmd::new(&dir, &["show", "d"]).output();
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "echo string: panic:describe\n"
    );
    assert_eq!(String::from_utf8_lossy(&output.stderr), warning("describe"));
}
