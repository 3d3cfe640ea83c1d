//! Process isolation (SPEC §14, issue #19): a plugin that segfaults,
//! aborts, overflows its stack, calls `exit(3)`, allocates without bound or
//! loops forever in any entry point takes down only its runner. Every
//! fixture mode × entry point is a test through the CLI and through the
//! library, asserting the exact message, that the next candidate took the
//! value and that the host lives on (the runner restarts on next use).
//! Also: broken after three crashes in a minute, a runner never outliving a
//! SIGKILLed host, the status keys, the isolated library never mapped in
//! the host, zero-copy loads across the boundary, and the in-process
//! behaviour the README documents (an in-process crash kills the host).
//!
//! Fixture `crashy` (tests/fixtures/crashy) crashes in entry point ENTRY
//! on input `crash:MODE:ENTRY`; `echo` claims the same values and format
//! at a later priority, so it is the next candidate. `timeout_ms` is 500.

use std::fs;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use stowage::{Buffer, Skipped, State, Tensor, Value};
use stowage_tests::{artifacts, file_mappings, status_of, wait_until, StowageCmd, TestDir};

const TIMEOUT_MS: u64 = 500;

fn runner() -> PathBuf {
    artifacts()
        .stowage
        .with_file_name(format!("stowage-runner{}", std::env::consts::EXE_SUFFIX))
}

/// Writes `plugins.toml` with the harness's runner, `host_extra` in
/// `[host]` and `rest` after `[store]`.
fn write_config(dir: &TestDir, host_extra: &str, rest: &str) {
    let runner = runner().display().to_string();
    fs::write(
        dir.config_path(),
        format!(
            "[host]\ndir = \"plugin-libs\"\nrunner = {runner:?}\n{host_extra}\n\
             [store]\ndir = \"store\"\n\n{rest}"
        ),
    )
    .expect("write plugins.toml");
}

/// `crashy` isolated (500 ms, 64 MiB) and `echo` in-process behind it.
fn crash_dir(name: &str) -> TestDir {
    let dir = TestDir::new(name);
    dir.install("fixture-crashy", "stowage_crashy");
    dir.install("fixture-echo", "stowage_echo");
    write_config(
        &dir,
        "",
        &format!(
            "[plugins.crashy]\nisolation = \"process\"\ntimeout_ms = {TIMEOUT_MS}\n\
             max_memory_mb = 64\n"
        ),
    );
    dir
}

/// What the user sees when `mode` strikes in `entry`.
fn message(mode: &str, entry: &str) -> String {
    match mode {
        "segfault" => format!("plugin crashed: SIGSEGV (signal 11) in {entry}"),
        // Rust's stack-overflow handler and the allocation-failure handler
        // both abort.
        "abort" | "overflow" | "alloc" => format!("plugin crashed: SIGABRT (signal 6) in {entry}"),
        "exit3" => format!("plugin exited with status 3 in {entry}"),
        "loop" => format!("timed out after {TIMEOUT_MS} ms in {entry}"),
        other => panic!("unknown mode {other}"),
    }
}

fn skipped(mode: &str, entry: &str) -> Vec<Skipped> {
    vec![Skipped {
        plugin: "crashy".to_owned(),
        message: format!(
            "dispatch: {entry}: internal error: {}",
            message(mode, entry)
        ),
    }]
}

fn warning(mode: &str, entry: &str) -> String {
    format!(
        "warning: skipped plugin crashy: dispatch: {entry}: internal error: {}\n",
        message(mode, entry)
    )
}

/// Runs `stowage ARGS` and asserts exit 0, stderr exactly `stderr`;
/// returns stdout.
#[track_caller]
fn run(dir: &TestDir, args: &[&str], stderr: &str) -> String {
    let output = StowageCmd::new(dir, args).output();
    assert_eq!(
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stderr).as_ref()
        ),
        (Some(0), stderr),
        "stowage {args:?}"
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn echo_file(dir: &TestDir, body: &str) -> String {
    fs::write(dir.root.join("in.echo"), format!("ECHO\n{body}")).expect("write");
    "in.echo".to_owned()
}

/// One fixture mode in one entry point, through the CLI: the warning line
/// is exact, echo takes over, the command succeeds.
fn cli_case(mode: &str, entry: &str) {
    let dir = crash_dir(&format!("iso-cli-{mode}-{entry}"));
    let data = format!("crash:{mode}:{entry}");
    let warn = warning(mode, entry);
    match entry {
        "can_serialize" | "serialize" => {
            fs::write(
                dir.root.join("v.json"),
                serde_json::Value::String(data.clone()).to_string(),
            )
            .expect("write");
            let out = run(&dir, &["put", "v", "v.json", "--json"], &warn);
            assert!(out.ends_with("with echo 1.2.0\n"), "{out}");
        }
        "sniff" | "ingest" => {
            let file = echo_file(&dir, &data);
            let out = run(&dir, &["put", "v", &file], &warn);
            assert!(out.ends_with("with echo 1.2.0\n"), "{out}");
        }
        "can_deserialize" | "export" | "describe" => {
            let file = echo_file(&dir, &data);
            let out = run(&dir, &["put", "v", &file], "");
            assert!(out.ends_with("with crashy 1.2.0\n"), "{out}");
            if entry == "describe" {
                let shown = run(&dir, &["show", "v"], &warn);
                assert_eq!(shown, format!("echo string: {data}\n"));
            } else {
                let got = run(&dir, &["get", "v"], &warn);
                assert_eq!(got, format!("ECHO\n{data}"));
            }
        }
        other => panic!("no CLI case for {other}"),
    }
    // The host lives on and the plugin still works (a new runner).
    let file = echo_file(&dir, "fine");
    let out = run(&dir, &["put", "ok", &file], "");
    assert!(out.ends_with("with crashy 1.2.0\n"), "{out}");
}

/// One fixture mode in one entry point, through the library: the skipped
/// candidate's message is exact, echo takes over, the runner restarts on
/// next use.
fn library_case(mode: &str, entry: &str) {
    let dir = crash_dir(&format!("iso-lib-{mode}-{entry}"));
    let host = dir.host();
    let data = format!("crash:{mode}:{entry}");
    let first_pid = status_of(&host, "crashy").runner_pid;
    assert!(first_pid.is_some(), "a runner is up after the rescan");
    let file = format!("ECHO\n{data}");
    let put = |name: &str| {
        host.put_file(name, file.as_bytes(), None, &[], "test")
            .expect("stored")
    };
    match entry {
        "can_serialize" | "serialize" => {
            let saved = host
                .save("v", &Value::String(data.clone()), &[])
                .expect("echo takes it");
            assert_eq!(saved.record.meta.serializer, "echo");
            assert_eq!(saved.skipped, skipped(mode, entry));
        }
        "sniff" | "ingest" => {
            let saved = put("v");
            assert_eq!(saved.record.meta.serializer, "echo");
            assert_eq!(saved.skipped, skipped(mode, entry));
        }
        "can_deserialize" | "deserialize" => {
            assert_eq!(put("v").record.meta.serializer, "crashy");
            let loaded = host.load("v").expect("echo reads it");
            assert_eq!(loaded.value, Value::String(data.clone()));
            assert_eq!(loaded.skipped, skipped(mode, entry));
        }
        "export" => {
            assert_eq!(put("v").record.meta.serializer, "crashy");
            let mut out = Vec::new();
            let (_, skips) = host.export_artifact("v", &mut out).expect("echo exports");
            assert_eq!(String::from_utf8_lossy(&out), format!("ECHO\n{data}"));
            assert_eq!(skips, skipped(mode, entry));
        }
        "describe" => {
            assert_eq!(put("v").record.meta.serializer, "crashy");
            let (text, skips) = host.describe_artifact("v").expect("echo describes");
            assert_eq!(text, format!("echo string: {data}"));
            assert_eq!(skips, skipped(mode, entry));
        }
        other => panic!("no library case for {other}"),
    }
    let status = status_of(&host, "crashy");
    assert_eq!(
        (
            status.state,
            status.runner_pid,
            status.restarts,
            status.dispatch_errors
        ),
        (State::Active, None, 0, 1),
        "after the crash: no runner until the next use"
    );
    assert_eq!(
        status.last_error,
        Some(format!(
            "dispatch: {entry}: internal error: {}",
            message(mode, entry)
        ))
    );
    // Next use: a new runner, and the plugin works again.
    let saved = host
        .save("ok", &Value::String("fine".into()), &[])
        .expect("saves");
    assert_eq!(saved.record.meta.serializer, "crashy");
    let status = status_of(&host, "crashy");
    assert_eq!(status.restarts, 1);
    assert!(status.runner_pid.is_some() && status.runner_pid != first_pid);
}

macro_rules! contained {
    ($($module:ident => $mode:literal),*) => {$(
        /// Each entry point of this fixture mode, contained.
        mod $module {
            use super::{cli_case, library_case};
            #[test]
            fn in_can_serialize_through_the_cli() { cli_case($mode, "can_serialize") }
            #[test]
            fn in_serialize_through_the_cli() { cli_case($mode, "serialize") }
            #[test]
            fn in_can_deserialize_through_the_cli() { cli_case($mode, "can_deserialize") }
            #[test]
            fn in_sniff_through_the_cli() { cli_case($mode, "sniff") }
            #[test]
            fn in_ingest_through_the_cli() { cli_case($mode, "ingest") }
            #[test]
            fn in_export_through_the_cli() { cli_case($mode, "export") }
            #[test]
            fn in_describe_through_the_cli() { cli_case($mode, "describe") }
            #[test]
            fn in_can_serialize_through_the_library() { library_case($mode, "can_serialize") }
            #[test]
            fn in_serialize_through_the_library() { library_case($mode, "serialize") }
            #[test]
            fn in_can_deserialize_through_the_library() { library_case($mode, "can_deserialize") }
            #[test]
            fn in_deserialize_through_the_library() { library_case($mode, "deserialize") }
            #[test]
            fn in_sniff_through_the_library() { library_case($mode, "sniff") }
            #[test]
            fn in_ingest_through_the_library() { library_case($mode, "ingest") }
            #[test]
            fn in_export_through_the_library() { library_case($mode, "export") }
            #[test]
            fn in_describe_through_the_library() { library_case($mode, "describe") }
        }
    )*};
}

// `deserialize` has no CLI command of its own (`get` exports, `show`
// describes); the library cases cover it.
contained!(
    segfault => "segfault",
    abort => "abort",
    stack_overflow => "overflow",
    exit_3 => "exit3",
    unbounded_allocation_under_a_cap => "alloc",
    endless_loop => "loop"
);

#[test]
fn three_crashes_within_a_minute_break_the_plugin_until_its_file_changes() {
    let dir = crash_dir("iso-broken");
    let host = dir.host();
    let crash = Value::String("crash:segfault:serialize".into());
    for i in 0..3 {
        let saved = host.save(&format!("v{i}"), &crash, &[]).expect("echo");
        assert_eq!(saved.record.meta.serializer, "echo");
        assert_eq!(saved.skipped, skipped("segfault", "serialize"));
    }
    let reason = "plugin crashed: SIGSEGV (signal 11) in serialize";
    let status = status_of(&host, "crashy");
    assert_eq!(
        (
            status.state,
            status.last_error.as_deref(),
            status.runner_pid,
            status.restarts
        ),
        (State::Broken, Some(reason), None, 2)
    );
    // Out of the running: no fourth crash, no new warning.
    let saved = host.save("v3", &crash, &[]).expect("echo");
    assert_eq!(
        (saved.record.meta.serializer.as_str(), saved.skipped),
        ("echo", vec![])
    );
    host.rescan().expect("rescan");
    let status = status_of(&host, "crashy");
    assert_eq!(
        (status.state, status.last_error.as_deref()),
        (State::Broken, Some(reason))
    );
    // A new version of the library is retried.
    dir.install("fixture-crashy", "stowage_crashy");
    host.rescan().expect("rescan");
    let status = status_of(&host, "crashy");
    assert_eq!((status.state, status.restarts), (State::Active, 0));
    let saved = host
        .save("ok", &Value::String("fine".into()), &[])
        .expect("saves");
    assert_eq!(saved.record.meta.serializer, "crashy");
}

/// Processes whose parent is `parent` and whose command is `stowage-runner`.
fn runners_of(parent: u32) -> Vec<u32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            // "pid (comm) state ppid …"
            let Some((comm, rest)) = stat.split_once(") ") else {
                return false;
            };
            comm.ends_with("(stowage-runner")
                && rest.split(' ').nth(1) == Some(parent.to_string().as_str())
        })
        .collect()
}

/// Whether `pid` is gone (or a zombie nobody reaped yet: no code runs).
fn is_gone(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .split_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z') || rest.starts_with('X')),
    }
}

/// Whether `pid` is inside a sleep (the endless-loop fixture), from its
/// current system call (x86_64: nanosleep 35, clock_nanosleep 230;
/// aarch64: 101, 115).
fn is_sleeping_in_plugin(pid: u32) -> bool {
    let syscall = fs::read_to_string(format!("/proc/{pid}/syscall")).unwrap_or_default();
    let number = syscall.split(' ').next().unwrap_or_default();
    match std::env::consts::ARCH {
        "x86_64" => matches!(number, "35" | "230"),
        "aarch64" => matches!(number, "101" | "115"),
        _ => true,
    }
}

#[test]
fn a_runner_never_outlives_a_killed_host() {
    let dir = TestDir::new("iso-sigkill");
    dir.install("fixture-crashy", "stowage_crashy");
    write_config(
        &dir,
        "",
        "[plugins.crashy]\nisolation = \"process\"\ntimeout_ms = 600000\n",
    );
    let file = echo_file(&dir, "crash:loop:ingest");
    let mut host = Command::new(&artifacts().stowage)
        .current_dir(&dir.root)
        .args(["put", "v", &file])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("stowage starts");
    let runner = wait_until(Duration::from_secs(30), || {
        runners_of(host.id())
            .into_iter()
            .find(|pid| is_sleeping_in_plugin(*pid))
    });
    let Some(runner) = runner else {
        let _ = host.kill();
        let _ = host.wait();
        panic!("no runner of the host got stuck in the plugin");
    };
    host.kill().expect("SIGKILL the host");
    let status = host.wait().expect("reaped");
    assert_eq!(status.signal(), Some(SIGKILL));
    assert!(
        wait_until(Duration::from_secs(30), || is_gone(runner).then_some(())).is_some(),
        "runner {runner} outlived its host"
    );
}

const SIGKILL: i32 = 9;

#[test]
fn status_shows_isolation_runner_pid_and_restarts() {
    let dir = crash_dir("iso-status");
    let json: serde_json::Value =
        serde_json::from_str(&StowageCmd::new(&dir, &["status", "--json"]).ok()).expect("json");
    let row = |name: &str| -> serde_json::Value {
        json["serializers"]
            .as_array()
            .and_then(|rows| rows.iter().find(|r| r["name"] == name))
            .cloned()
            .unwrap_or_else(|| panic!("no row {name}"))
    };
    let crashy = row("crashy");
    assert_eq!(
        (&crashy["state"], &crashy["isolation"], &crashy["restarts"]),
        (&"active".into(), &"process".into(), &0.into())
    );
    let pid = crashy["runner_pid"].as_u64().expect("a runner pid");
    let echo = row("echo");
    assert_eq!(
        (&echo["isolation"], &echo["runner_pid"], &echo["restarts"]),
        (&"in-process".into(), &serde_json::Value::Null, &0.into())
    );
    let fallback = row("msgpack");
    assert_eq!(
        (&fallback["isolation"], &fallback["runner_pid"]),
        (&serde_json::Value::Null, &serde_json::Value::Null)
    );
    // The command has exited, so its runner has too.
    let pid = u32::try_from(pid).expect("pid");
    assert!(wait_until(Duration::from_secs(30), || is_gone(pid).then_some(())).is_some());
}

#[test]
fn the_host_never_maps_an_isolated_library() {
    let dir = crash_dir("iso-no-dlopen");
    let host = dir.host();
    let saved = host
        .save("v", &Value::String("kept".into()), &[])
        .expect("saves");
    assert_eq!(saved.record.meta.serializer, "crashy");
    let mapped: Vec<PathBuf> = file_mappings().into_iter().map(|(_, p)| p).collect();
    let crashy = fs::canonicalize(dir.plugin_dir().join("libstowage_crashy.so")).expect("path");
    let echo = fs::canonicalize(dir.plugin_dir().join("libstowage_echo.so")).expect("path");
    assert!(!mapped.contains(&crashy), "the isolated library is mapped");
    assert!(mapped.contains(&echo), "the in-process library is mapped");
}

#[test]
fn an_isolated_load_points_into_the_stored_file() {
    let dir = TestDir::new("iso-zero-copy");
    dir.install("stowage-tensor", "stowage_tensor");
    write_config(&dir, "isolation = \"process\"\n", "");
    let host = dir.host();
    assert_eq!(
        status_of(&host, "tensor").isolation.as_deref(),
        Some("process")
    );
    let data: Vec<u8> = (0..(4u32 << 20)).map(|i| (i % 251) as u8).collect();
    let tensor = |shape: u64, data: Vec<u8>| Tensor {
        dtype: "U8".into(),
        shape: vec![shape],
        data: Buffer::from_vec(data),
    };
    let map = stowage::TensorMap {
        // In the order safetensors reads them back.
        tensors: vec![
            ("big".into(), tensor(4 << 20, data.clone())),
            ("small".into(), tensor(3, vec![1, 2, 3])),
        ],
        metadata: vec![],
    };
    let saved = host
        .save("m", &Value::TensorMap(map.clone()), &[])
        .expect("save");
    assert_eq!(saved.record.meta.serializer, "tensor");
    let loaded = host.load_mapped("m").expect("load_mapped");
    assert_eq!(loaded.value, Value::TensorMap(map));
    let Value::TensorMap(back) = &loaded.value else {
        panic!("not a tensor map")
    };
    let store = fs::canonicalize(dir.root.join("store")).expect("store dir");
    let mappings = file_mappings();
    for (name, t) in &back.tensors {
        let at = t.data.as_ptr() as usize;
        let path = mappings
            .iter()
            .find(|(range, _)| range.contains(&at))
            .map(|(_, p)| p.clone())
            .unwrap_or_else(|| panic!("tensor {name} is not in any file mapping"));
        assert!(
            path.starts_with(&store),
            "tensor {name} points into {}, not a blob under {}",
            path.display(),
            store.display()
        );
    }
}

/// `stowage put` of a crashing file with crashy loaded in-process.
fn in_process_put(mode: &str) -> std::process::ExitStatus {
    let dir = TestDir::new(&format!("iso-in-process-{mode}"));
    dir.install("fixture-crashy", "stowage_crashy");
    dir.install("fixture-echo", "stowage_echo");
    write_config(&dir, "", "[plugins.crashy]\ntimeout_ms = 500\n");
    let file = echo_file(&dir, &format!("crash:{mode}:ingest"));
    StowageCmd::new(&dir, &["put", "v", &file]).output().status
}

#[test]
fn an_in_process_crash_kills_the_host_as_the_readme_says() {
    assert_eq!(in_process_put("segfault").signal(), Some(11));
    assert_eq!(in_process_put("abort").signal(), Some(6));
    assert_eq!(in_process_put("exit3").code(), Some(3));
}

#[test]
fn an_unknown_isolation_value_is_a_config_error() {
    let dir = TestDir::new("iso-bad-config");
    dir.write_config("[plugins.crashy]\nisolation = \"sandbox\"\n");
    StowageCmd::new(&dir, &["status"]).fails(
        1,
        &format!(
            "error: {}:8:13: plugins.crashy.isolation \"sandbox\" is not valid: expected \
             \"in-process\" or \"process\"",
            dir.config_path().display()
        ),
    );
}

#[test]
fn a_missing_runner_breaks_the_isolated_plugin_with_the_reason() {
    let dir = TestDir::new("iso-no-runner");
    dir.install("fixture-crashy", "stowage_crashy");
    let missing = dir.root.join("bin/stowage-runner");
    fs::write(
        dir.config_path(),
        "[host]\ndir = \"plugin-libs\"\nrunner = \"bin/stowage-runner\"\nisolation = \"process\"\n",
    )
    .expect("write");
    let host = dir.host();
    stowage_tests::assert_state(
        &host,
        "crashy",
        State::Broken,
        Some(&format!(
            "cannot start {}: No such file or directory (os error 2)",
            missing.display()
        )),
    );
}

#[test]
fn a_rescan_keeps_the_runner_and_a_new_library_version_gets_a_new_one() {
    let dir = crash_dir("iso-rescan");
    let host = dir.host();
    let first = status_of(&host, "crashy").runner_pid;
    assert!(first.is_some());
    host.rescan().expect("rescan");
    assert_eq!(status_of(&host, "crashy").runner_pid, first, "hello cached");
    dir.install("fixture-crashy", "stowage_crashy");
    host.rescan().expect("rescan");
    let status = status_of(&host, "crashy");
    assert_eq!(status.state, State::Active);
    assert!(status.runner_pid.is_some() && status.runner_pid != first);
    // The old runner went with its library version.
    let old = first.expect("pid");
    assert!(wait_until(Duration::from_secs(30), || is_gone(old).then_some(())).is_some());
}

#[test]
fn the_runner_refuses_to_be_started_by_hand() {
    let output = Command::new(runner())
        .stdin(Stdio::null())
        .output()
        .expect("runs");
    assert_eq!(
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stderr).as_ref()
        ),
        (
            Some(2),
            "stowage-runner: --library PATH is required (started by stowage, not by hand)\n"
        )
    );
}

#[test]
fn an_isolated_plugin_that_fails_to_load_is_broken_with_the_in_process_reason() {
    let dir = TestDir::new("iso-init-panic");
    dir.install("fixture-init-panic", "stowage_init_panic");
    dir.install("fixture-iface-major-2", "stowage_iface_major_2");
    write_config(&dir, "isolation = \"process\"\n", "");
    let host = dir.host();
    stowage_tests::assert_state(
        &host,
        "init-panic",
        State::Broken,
        Some(
            "panic during init: fixture refuses to start at tests/fixtures/init-panic/src/lib.rs:6",
        ),
    );
    // Judged from the file, before any runner starts.
    let status = status_of(&host, "iface-major-2");
    assert_eq!(
        (
            status.state,
            status.runner_pid,
            status.last_error.as_deref()
        ),
        (
            State::Broken,
            None,
            Some("interface major mismatch: plugin built against interface 2.0, host speaks 1.1")
        )
    );
}
