//! `stowage install` and `stowage uninstall`: files are judged without being
//! opened as libraries, refused with the reason `status` would give, copied
//! by temp file and rename with fixed modes, and activated by the rescan.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use stowage::loader::check_library_file;
use stowage_tests::{artifacts, file_mappings, status_of, StowageCmd, TestDir};

fn lib(name: &str) -> String {
    artifacts().lib(name).display().to_string()
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).expect("metadata").permissions().mode() & 0o777
}

fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = match fs::read_dir(dir) {
        Ok(read) => read
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    };
    names.sort();
    names
}

#[test]
fn install_creates_the_directory_and_activates_the_three_plugins() {
    let dir = TestDir::new("install-three");
    fs::remove_dir(dir.plugin_dir()).expect("start without a plugin directory");
    let out = StowageCmd::new(
        &dir,
        &[
            "install",
            &lib("stowage-tensor"),
            &lib("stowage-arrow"),
            &lib("stowage-class-source"),
        ],
    )
    .ok();
    let plugins = dir.plugin_dir();
    let p = plugins.display();
    assert_eq!(
        out,
        format!(
            "installed {p}/libstowage_tensor.so: tensor 0.1.0 active (priority 10; kinds tensor,tensor_map)\n\
             installed {p}/libstowage_arrow.so: arrow 0.1.0 active (priority 100; kinds arrow)\n\
             installed {p}/libstowage_class_source.so: class-source 0.1.0 active (priority 100; kinds class_source)\n"
        )
    );
    assert_eq!(mode(&plugins), 0o755);
    assert_eq!(
        entries(&plugins),
        [
            "libstowage_arrow.so",
            "libstowage_class_source.so",
            "libstowage_tensor.so"
        ],
        "no temp file is left behind"
    );
    for name in entries(&plugins) {
        assert_eq!(mode(&plugins.join(&name)), 0o644, "{name}");
    }
    let host = dir.host();
    for name in ["tensor", "arrow", "class-source"] {
        assert_eq!(
            status_of(&host, name).state,
            stowage::State::Active,
            "{name}"
        );
    }
}

/// Each refused file gets exactly the one-line reason a rescan records for
/// the same file dropped into the directory by hand.
#[test]
fn install_refuses_with_the_reason_status_gives() {
    for (package, stem, name) in [
        ("fixture-iface-major-2", "stowage_future", "future"),
        ("fixture-iface-minor-newer", "stowage_newer", "newer"),
        ("fixture-no-symbol", "stowage_plain", "plain"),
    ] {
        let by_hand = TestDir::new("install-reason-by-hand");
        let placed = by_hand.install(package, stem);
        let reason = status_of(&by_hand.host(), name)
            .last_error
            .unwrap_or_else(|| panic!("{name} has a reason"));
        let reason = reason.replace(&placed.display().to_string(), &lib(package));

        let dir = TestDir::new("install-reason");
        StowageCmd::new(&dir, &["install", &lib(package)]).fails(
            1,
            &format!("error: cannot install {}: {reason}", lib(package)),
        );
        assert_eq!(
            entries(&dir.plugin_dir()),
            Vec::<String>::new(),
            "{package}"
        );
    }
}

#[test]
fn one_refused_file_leaves_the_directory_untouched() {
    let dir = TestDir::new("install-all-or-nothing");
    let not_a_library = dir.root.join("libnotes.so");
    fs::write(&not_a_library, "just text\n").expect("write");
    StowageCmd::new(
        &dir,
        &[
            "install",
            &lib("fixture-echo"),
            &not_a_library.display().to_string(),
        ],
    )
    .fails(
        1,
        &format!(
            "error: cannot install {0}: not a shared library: {0}",
            not_a_library.display()
        ),
    );
    assert_eq!(entries(&dir.plugin_dir()), Vec::<String>::new());
}

#[test]
fn install_refuses_a_file_discovery_would_skip() {
    let dir = TestDir::new("install-suffix");
    let renamed = dir.root.join("echo.plugin");
    fs::copy(artifacts().lib("fixture-echo"), &renamed).expect("copy");
    StowageCmd::new(&dir, &["install", &renamed.display().to_string()]).fails(
        1,
        &format!(
            "error: cannot install {}: the plugin directory loads only files named *.so that do not start with '.'",
            renamed.display()
        ),
    );
}

/// Reinstalling replaces the file by rename: a new inode, never a write
/// into the file a running host has mapped.
#[test]
fn reinstall_replaces_the_file_by_rename() {
    let dir = TestDir::new("install-again");
    StowageCmd::new(&dir, &["install", &lib("fixture-echo")]).ok();
    let installed: PathBuf = dir.plugin_dir().join("libfixture_echo.so");
    let before = fs::metadata(&installed).expect("installed").ino();
    let again = StowageCmd::new(&dir, &["install", &lib("fixture-echo")]).ok();
    assert_eq!(
        again,
        format!(
            "installed {}: echo 1.2.0 active (priority 50; kinds string,int,tensor)\n",
            installed.display()
        )
    );
    assert_ne!(fs::metadata(&installed).expect("installed").ino(), before);
}

/// The check reads the probe out of the file: the library is never mapped
/// into the checking process (dlopen would map it and run its initialisers).
#[test]
fn checking_a_file_never_maps_it() {
    let path = artifacts().lib("fixture-iface-minor-newer");
    let verdict = check_library_file(path).map_err(|e| e.to_string());
    assert_eq!(
        verdict,
        Err("plugin built against newer interface 1.2; this host speaks 1.1".to_owned())
    );
    let probe = check_library_file(artifacts().lib("stowage-tensor")).expect("tensor passes");
    assert_eq!(probe.to_string(), "1.1.0");
    let canonical = path.canonicalize().expect("canonical");
    assert!(
        !file_mappings()
            .iter()
            .any(|(_, mapped)| *mapped == canonical),
        "{} is mapped into the test process",
        path.display()
    );
}

#[test]
fn uninstall_removes_the_library_and_says_so() {
    let dir = TestDir::new("uninstall");
    StowageCmd::new(&dir, &["install", &lib("fixture-echo")]).ok();
    let installed = dir.plugin_dir().join("libfixture_echo.so");
    let out = StowageCmd::new(&dir, &["uninstall", "echo"]).ok();
    assert_eq!(
        out,
        format!(
            "uninstalled echo: removed {} (a running stowage keeps its loaded copy until it exits)\n",
            installed.display()
        )
    );
    assert!(!installed.exists());
    assert!(!dir
        .host()
        .snapshot()
        .statuses()
        .iter()
        .any(|s| s.name == "echo"));
    StowageCmd::new(&dir, &["uninstall", "echo"])
        .fails(1, "error: no plugin named echo (see stowage status)");
    StowageCmd::new(&dir, &["uninstall", "msgpack"]).fails(
        1,
        "error: msgpack is built in and cannot be uninstalled; `stowage disable msgpack` turns it off",
    );
}

/// A library that passes the file checks but panics in `init` stays
/// installed (status explains it) and the command fails naming its state.
#[test]
fn a_plugin_broken_at_init_is_installed_and_the_command_fails() {
    let dir = TestDir::new("install-broken");
    let output = StowageCmd::new(&dir, &["install", &lib("fixture-init-panic")]).output();
    let installed = dir.plugin_dir().join("libfixture_init_panic.so");
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        format!(
            "installed {}: fixture-init-panic broken (panic during init: fixture refuses to start at tests/fixtures/init-panic/src/lib.rs:6)\n",
            installed.display()
        )
    );
    assert_eq!(
        String::from_utf8_lossy(&output.stderr),
        "error: installed, but fixture-init-panic is broken\n"
    );
    assert!(installed.is_file());
}
