//! The Metaflow extension (`python/metaflow-ext`, distribution
//! `stowage-metaflow`, SPEC §12.4) inside real Metaflow: the harness
//! installs the `stowage` wheel (as for the pytest suite) and this
//! setuptools distribution into the interop venv, then runs
//! - `python/metaflow-ext/tests`: a real `python flow.py run` on the local
//!   datastore, read back through Metaflow's client, the stored blobs read
//!   as safetensors / Arrow IPC, `list_serializer_status`, a disabled
//!   plugin's load error, and the serializer's rules in-process;
//! - `python/metaflow-ext/metaflow-tests`: Metaflow's own serializer unit
//!   tests, vendored at the pinned tag, with the extension installed.
//!
//! Each pytest run fails this test on any failure, error or skip. The flow
//! test's artifact table (name, encoding, size) is printed.
//!
//! Decision: two pytest processes, since Metaflow's lifecycle tests reset
//! the serializer registry of the process they run in.

use std::io::Write;
use std::process::Command;

use stowage_tests::{python_package, workspace_root, TestDir};

use crate::python::run_pytest;

#[test]
fn metaflow_flow_and_its_own_serializer_tests_pass_with_the_stowage_extension() {
    let python = python_package();
    let extension = workspace_root().join("python/metaflow-ext");
    let output = Command::new(python)
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--no-build-isolation",
            "--no-deps",
            "--force-reinstall",
        ])
        .arg(&extension)
        .output()
        .expect("pip runs");
    assert!(
        output.status.success(),
        "pip install ./python/metaflow-ext failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let dir = TestDir::new("metaflow");
    let report = dir.root.join("artifact-table.md");
    let mut command = Command::new(python);
    command.env("STOWAGE_TEST_REPORT", &report);
    run_pytest(
        command,
        &dir,
        &extension.join("tests"),
        "metaflow-ext/tests",
    );
    let table = std::fs::read_to_string(&report).expect("the flow test wrote its artifact table");
    let _ = writeln!(std::io::stderr(), "metaflow flow artifacts:\n{table}");
    run_pytest(
        Command::new(python),
        &dir,
        &extension.join("metaflow-tests"),
        "metaflow-ext/metaflow-tests",
    );
}
