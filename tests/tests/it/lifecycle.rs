//! Lifecycle states and their exact one-line reasons, with real libraries.

use std::fs;
use std::os::unix::fs::PermissionsExt;

use sha2::Digest;
use stowage::State;
use stowage_tests::{artifacts, assert_state, lib_file, status_of, TestDir};

#[test]
fn file_that_is_not_a_shared_library_is_broken() {
    let dir = TestDir::new("not-a-library");
    let path = dir.plugin_dir().join(lib_file("stowage_junk"));
    fs::write(&path, "this is text, not ELF\n").expect("write");
    let host = dir.host();
    let reason = format!("not a shared library: {}", path.display());
    assert_state(&host, "junk", State::Broken, Some(&reason));
}

#[test]
fn shared_library_without_stowage_symbol_is_broken() {
    let dir = TestDir::new("no-symbol");
    let path = dir.install("fixture-no-symbol", "stowage_plain");
    let host = dir.host();
    let reason = format!(
        "no stowage plugin symbol in {} (not built with export_plugin!)",
        path.display()
    );
    assert_state(&host, "plain", State::Broken, Some(&reason));
}

#[test]
fn truncated_library_is_broken_before_dlopen() {
    let dir = TestDir::new("truncated");
    let full = fs::read(artifacts().lib("fixture-echo")).expect("read");
    let path = dir.plugin_dir().join(lib_file("stowage_cut"));
    fs::write(&path, &full[..full.len() / 2]).expect("write");
    let host = dir.host();
    let reason = format!(
        "truncated shared library: {} is {} bytes, its headers need {}",
        path.display(),
        full.len() / 2,
        full.len()
    );
    assert_state(&host, "cut", State::Broken, Some(&reason));
}

#[test]
fn interface_major_mismatch_is_broken_naming_both_versions() {
    let dir = TestDir::new("major");
    dir.install("fixture-iface-major-2", "stowage_future");
    let host = dir.host();
    let reason = "interface major mismatch: plugin built against interface 2.0, host speaks 1.1";
    assert_state(&host, "future", State::Broken, Some(reason));
}

#[test]
fn newer_interface_minor_is_broken_naming_both_versions() {
    let dir = TestDir::new("minor");
    dir.install("fixture-iface-minor-newer", "stowage_newer");
    let host = dir.host();
    let reason = "plugin built against newer interface 1.2; this host speaks 1.1";
    assert_state(&host, "newer", State::Broken, Some(reason));
}

#[test]
fn version_outside_config_requirement_is_broken() {
    let dir = TestDir::new("version-req");
    dir.install("fixture-echo", "stowage_echo");
    dir.write_config("[plugins.echo]\nversion = \"^2\"\n");
    let host = dir.host();
    let reason = "plugin version 1.2.0 does not satisfy the config's requirement ^2";
    assert_state(&host, "echo", State::Broken, Some(reason));
}

#[test]
fn sha256_pin_is_checked_before_loading() {
    let dir = TestDir::new("sha256");
    let path = dir.install("fixture-echo", "stowage_echo");
    let actual: String = sha2::Sha256::digest(fs::read(&path).expect("read"))
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let wrong = "0".repeat(64);
    dir.write_config(&format!("[plugins.echo]\nsha256 = \"{wrong}\"\n"));
    let reason = format!(
        "sha256 mismatch for {}: expected {wrong}, found {actual}",
        path.display()
    );
    assert_state(&dir.host(), "echo", State::Broken, Some(&reason));

    dir.write_config(&format!("[plugins.echo]\nsha256 = \"{actual}\"\n"));
    assert_state(&dir.host(), "echo", State::Active, None);
}

#[test]
fn panic_during_init_is_broken_with_the_plugin_message() {
    let dir = TestDir::new("init-panic");
    dir.install("fixture-init-panic", "stowage_init_panic");
    let host = dir.host();
    let reason =
        "panic during init: fixture refuses to start at tests/fixtures/init-panic/src/lib.rs:6";
    assert_state(&host, "init-panic", State::Broken, Some(reason));
}

#[test]
fn duplicate_name_breaks_the_later_library_naming_both_paths() {
    let dir = TestDir::new("duplicate");
    let first = dir.install("fixture-echo", "stowage_echo");
    let second = dir.install("fixture-echo", "stowage_echo_copy");
    let host = dir.host();
    let statuses = host.snapshot().statuses();
    let echoes: Vec<_> = statuses.iter().filter(|s| s.name == "echo").collect();
    assert_eq!(echoes.len(), 2);
    assert_eq!(echoes[0].state, State::Active);
    assert_eq!(echoes[0].library.as_deref(), Some(first.as_path()));
    assert_eq!(echoes[1].state, State::Broken);
    let reason = format!(
        "duplicate plugin name echo: {} and {}",
        first.display(),
        second.display()
    );
    assert_eq!(echoes[1].last_error.as_deref(), Some(reason.as_str()));
}

#[test]
fn plugin_declaring_the_fallback_name_is_a_duplicate() {
    let dir = TestDir::new("fake-msgpack");
    let path = dir.install("fixture-fake-msgpack", "stowage_fake");
    let host = dir.host();
    let statuses = host.snapshot().statuses();
    let fake = statuses
        .iter()
        .find(|s| s.name == "msgpack" && !s.builtin)
        .expect("listed");
    let reason = format!(
        "duplicate plugin name msgpack: built-in fallback and {}",
        path.display()
    );
    assert_eq!(
        (fake.state, fake.last_error.as_deref()),
        (State::Broken, Some(reason.as_str()))
    );
    assert_state(&host, "msgpack", State::Active, None);
}

#[test]
fn dependency_cycle_breaks_every_member() {
    let dir = TestDir::new("cycle");
    dir.install("fixture-cycle-a", "stowage_cycle_a");
    dir.install("fixture-cycle-b", "stowage_cycle_b");
    let host = dir.host();
    let reason = "dependency cycle: cycle-a -> cycle-b -> cycle-a";
    assert_state(&host, "cycle-a", State::Broken, Some(reason));
    assert_state(&host, "cycle-b", State::Broken, Some(reason));
}

#[test]
fn broken_dependency_breaks_the_dependent_instead_of_pending_forever() {
    let dir = TestDir::new("broken-dep");
    dir.install("fixture-init-panic", "stowage_init_panic");
    dir.install("fixture-needs-init-panic", "stowage_needs_init_panic");
    let host = dir.host();
    assert_state(
        &host,
        "needs-init-panic",
        State::Broken,
        Some("dependency init-panic is broken"),
    );
}

#[test]
fn world_writable_library_is_refused() {
    let dir = TestDir::new("world-writable");
    let path = dir.install("fixture-echo", "stowage_echo");
    fs::set_permissions(&path, fs::Permissions::from_mode(0o666)).expect("chmod");
    let host = dir.host();
    let reason = format!(
        "unsafe permissions: {} is writable by other users",
        path.display()
    );
    assert_state(&host, "echo", State::Broken, Some(&reason));
}

#[test]
fn symlink_pointing_outside_the_plugin_dir_is_refused() {
    let dir = TestDir::new("symlink");
    let outside = dir.root.join(lib_file("outside"));
    fs::copy(artifacts().lib("fixture-echo"), &outside).expect("copy");
    let link = dir.plugin_dir().join(lib_file("stowage_echo"));
    std::os::unix::fs::symlink(&outside, &link).expect("symlink");
    let host = dir.host();
    let target = fs::canonicalize(&outside).expect("canonical");
    let reason = format!(
        "symlink {} points outside the plugin directory (to {})",
        link.display(),
        target.display()
    );
    assert_state(&host, "echo", State::Broken, Some(&reason));
}

#[test]
fn table_loading_a_library_with_another_name_is_broken() {
    let dir = TestDir::new("name-mismatch");
    let path = dir.install("fixture-echo", "stowage_echo");
    dir.write_config("[plugins.tensor]\nlibrary = \"stowage_echo\"\n");
    let host = dir.host();
    let reason = format!(
        "[plugins.tensor] loads {}, which declares the name echo",
        path.display()
    );
    assert_state(&host, "tensor", State::Broken, Some(&reason));
}

#[test]
fn pending_turns_active_on_drop_in_and_rescan() {
    let dir = TestDir::new("drop-in");
    dir.write_config("[plugins.echo]\npriority = 5\n");
    let host = dir.host();
    let expected_file = dir.plugin_dir().join(lib_file("stowage_echo"));
    assert_state(
        &host,
        "echo",
        State::Pending,
        Some(&expected_file.display().to_string()),
    );

    dir.install("fixture-echo", "stowage_echo");
    host.rescan().expect("rescan");
    assert_state(&host, "echo", State::Active, None);
    assert_eq!(status_of(&host, "echo").priority, Some(5));
}

#[test]
fn requirement_waits_for_its_dependency_then_activates() {
    let dir = TestDir::new("requires");
    dir.install("fixture-needs-echo", "stowage_needs_echo");
    let host = dir.host();
    assert_state(&host, "needs-echo", State::Pending, Some("echo"));

    dir.write_config("[plugins.echo]\nenabled = false\n");
    dir.install("fixture-echo", "stowage_echo");
    host.rescan().expect("rescan");
    assert_state(&host, "echo", State::Disabled, None);
    assert_state(&host, "needs-echo", State::Pending, Some("echo (disabled)"));

    dir.write_config("[plugins.echo]\nenabled = true\nversion = \"^9\"\n");
    host.rescan().expect("rescan");
    assert_state(
        &host,
        "needs-echo",
        State::Broken,
        Some("dependency echo is broken"),
    );

    dir.write_config("[plugins.echo]\nenabled = true\n");
    host.rescan().expect("rescan");
    assert_state(&host, "echo", State::Active, None);
    assert_state(&host, "needs-echo", State::Active, None);
}

#[test]
fn autoload_off_leaves_unlisted_libraries_known_and_unopened() {
    let dir = TestDir::new("autoload-off");
    let path = dir.install("fixture-init-panic", "stowage_init_panic");
    fs::write(
        dir.config_path(),
        "[host]\ndir = \"plugin-libs\"\nautoload = false\n",
    )
    .expect("write");
    let host = dir.host();
    let status = status_of(&host, "init-panic");
    // Never opened: its init would have panicked and broken it.
    assert_eq!(
        (status.state, status.enabled, status.last_error.as_deref()),
        (State::Known, false, None)
    );
    let warning = format!("{}: not loaded: autoload is off", path.display());
    assert!(
        host.snapshot().warnings.contains(&warning),
        "{:?}",
        host.snapshot().warnings
    );
}

#[test]
fn dotfiles_and_tmp_files_are_not_candidates() {
    let dir = TestDir::new("ignored-files");
    let source = artifacts().lib("fixture-echo");
    fs::copy(
        source,
        dir.plugin_dir().join(format!(".{}", lib_file("hidden"))),
    )
    .expect("copy");
    fs::copy(
        source,
        dir.plugin_dir()
            .join(format!("{}.tmp", lib_file("partial"))),
    )
    .expect("copy");
    let host = dir.host();
    let names: Vec<String> = host
        .snapshot()
        .statuses()
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert_eq!(names, ["composite", "msgpack"]);
}

#[test]
fn changed_library_on_disk_is_reported_not_reloaded() {
    let dir = TestDir::new("changed");
    let path = dir.install("fixture-echo", "stowage_echo");
    let host = dir.host();
    assert_state(&host, "echo", State::Active, None);
    dir.install("fixture-rival", "stowage_echo");
    host.rescan().expect("rescan");
    assert_state(&host, "echo", State::Active, None);
    let warning = format!(
        "{}: changed on disk; restart to load the new version",
        path.display()
    );
    assert!(
        host.snapshot().warnings.contains(&warning),
        "{:?}",
        host.snapshot().warnings
    );
}

#[test]
fn missing_native_dependency_is_pending_until_installed() {
    // Run in a child process: `cargo test` puts build-script link paths on
    // LD_LIBRARY_PATH, which would find the dependency regardless.
    let dir = TestDir::new("native-dep");
    // The directory exists, the library is missing. (glibc remembers a
    // search directory that did not exist and never looks there again in
    // this process; README, "Native dependencies".)
    let deps = dir.plugin_dir().join("deps");
    fs::create_dir_all(&deps).expect("mkdir");
    dir.install("fixture-needs-native", "stowage_needs_native");
    let mut watch = stowage_tests::WatchProcess::start(&dir);
    // One name throughout: the provisional name (from the file stem) reads
    // `_` as `-`, as the plugin declares it.
    watch.expect_line("needs-native: new -> pending (awaiting libstowage_fixture_dep.so)");

    let built = artifacts()
        .out_dir("fixture-needs-native")
        .join("libstowage_fixture_dep.so");
    // Installed the safe way: temp name, then rename.
    let temp = deps.join(".libstowage_fixture_dep.so.tmp");
    fs::copy(built, &temp).expect("copy dependency");
    fs::rename(&temp, deps.join("libstowage_fixture_dep.so")).expect("install dependency");
    watch.expect_line("needs-native: pending -> active");
}
