//! The Python package (python/, SPEC §12) through its pytest suite: the
//! harness builds the wheel with maturin (debug) into the interop venv,
//! installs it with the harness's plugins bundled, and runs
//! `python/tests` in a fresh directory. Any failure, error or skip fails
//! this test; pytest's summary line is printed so the count shows.
//!
//! Rust → Python crossings are checked here too: an artifact saved through
//! the Rust library is loaded by the pytest suite (`STOWAGE_TEST_RUST_STORE`).
//! [`run_pytest`] is shared with the Metaflow extension's tests
//! (`metaflow.rs`).

use std::io::Write;
use std::path::Path;
use std::process::Command;

use stowage::{Buffer, Tensor, Value};
use stowage_tests::{artifacts, python_package, workspace_root, TestDir};

/// Libraries the suite installs into its own plugin directories, by the
/// environment variable it reads them from.
const LIBS: &[(&str, &str)] = &[
    ("STOWAGE_TEST_LIB_TENSOR", "stowage-tensor"),
    ("STOWAGE_TEST_LIB_ARROW", "stowage-arrow"),
    ("STOWAGE_TEST_LIB_CLASS_SOURCE", "stowage-class-source"),
    ("STOWAGE_TEST_LIB_PANICKY", "fixture-panicky"),
    ("STOWAGE_TEST_LIB_ECHO", "fixture-echo"),
];

#[test]
fn pytest_suite_passes_without_failures_errors_or_skips() {
    let python = python_package();
    let dir = TestDir::new("pytest");
    // An artifact written by Rust for the suite to read (Rust → Python).
    let rust_store = dir.root.join("rust-store");
    let config = dir.root.join("rust.toml");
    let plugin_dir = dir.root.join("rust-plugins");
    std::fs::create_dir_all(&plugin_dir).expect("create plugin dir");
    std::fs::copy(
        artifacts().lib("stowage-tensor"),
        plugin_dir.join(stowage_tests::lib_file("stowage_tensor")),
    )
    .expect("copy the tensor plugin");
    std::fs::write(
        &config,
        format!(
            "[host]\ndir = {:?}\n[store]\ndir = {:?}\n",
            plugin_dir.display().to_string(),
            rust_store.display().to_string()
        ),
    )
    .expect("write the config");
    let host = stowage::Host::open(stowage::HostOptions::with_config(&config)).expect("opens");
    let data: Vec<u8> = [1.5f32, -2.0, 3.25]
        .iter()
        .flat_map(|f| f.to_le_bytes())
        .collect();
    host.save(
        "from-rust",
        &Value::Tensor(Tensor {
            dtype: "F32".into(),
            shape: vec![3],
            data: Buffer::from_vec(data),
        }),
        &[],
    )
    .expect("saves");
    drop(host);

    let mut command = Command::new(python);
    command
        .env("STOWAGE_TEST_BIN", &artifacts().stowage)
        .env("STOWAGE_TEST_RUST_CONFIG", &config)
        // test_s3.py starts its own server with it (installed if missing).
        .env("STOWAGE_TEST_S3S_FS", stowage_tests::s3server::s3s_fs());
    for (key, lib) in LIBS {
        command.env(key, artifacts().lib(lib));
    }
    run_pytest(
        command,
        &dir,
        &workspace_root().join("python/tests"),
        "python/tests",
    );
}

/// Runs pytest with `command` (the venv's Python and the suite's own
/// variables) on `tests`, inside `dir`; prints pytest's summary line as
/// `pytest (LABEL): …` and fails on any failure, error or skip.
pub fn run_pytest(mut command: Command, dir: &TestDir, tests: &Path, label: &str) {
    command
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider", "-rfEsxX"])
        // Inside the test directory, which the harness removes: pytest
        // would otherwise keep its last three runs under /tmp.
        .arg("--basetemp")
        .arg(
            dir.root
                .join(format!("pytest-tmp-{}", label.replace('/', "-"))),
        )
        .arg(tests)
        .current_dir(&dir.root)
        .env_remove("STOWAGE_CONFIG")
        .env_remove("STOWAGE_PLUGINS");
    let output = command.output().expect("pytest runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let summary = stdout
        .lines()
        .rev()
        .find(|line| line.contains(" in ") && line.contains("passed"))
        .unwrap_or("(no summary line)");
    // Straight to stderr, past libtest's capture, so the count shows in a
    // plain `cargo test` run.
    let _ = writeln!(std::io::stderr(), "pytest ({label}): {summary}");
    assert!(
        output.status.success(),
        "pytest failed:\n{stdout}\n{stderr}"
    );
    let bad = ["failed", "error", "skipped", "xfail", "xpass", "deselected"];
    assert!(
        !bad.iter().any(|word| summary.contains(word)),
        "pytest summary is not all passed: {summary}\n{stdout}"
    );
}
