//! The store at scale (issue #17), through the real binary: store format 2
//! (snapshot runs + log tail, `host/src/store/compact.rs`), crash-safety of
//! every step of a compaction and of the format-1 upgrade (failpoints), a
//! reader looping `get` while another process writes and compacts, another
//! user reading compacted and format-1 stores, and the checks an older
//! build makes against an upgraded store.
//!
//! `tests/fixtures/stores/format-v1-history` is a format-1 store written
//! with the CLI of commit a37ed22 (the last build before format 2) and
//! never regenerated: `put a` (`{"v": 1, …}`), `put gone` (`[1, 2, 3]`),
//! `put weights` (a 20,000-float safetensors file: a raw blob), `put keep`,
//! `put a` again (`{"v": 2, "note": "a overwritten"}`), `rm gone`. Live:
//! `a`, `keep` (packed) and `weights` (raw); its log also holds the
//! overwritten `a`, the removed `gone` and the tombstone.
//!
//! Decision: the "older build" is faked rather than built from git history
//! (a second full build would cost CI minutes): `format1_build_open`
//! replays what a format-1 build does when it opens a store — it reads the
//! marker (a newer format: read-only, every write refused with one line)
//! and scans `index.log` accepting only JSON frames (`SLG1`), so the
//! upgraded log's first binary frame stops it with its "bad frame magic".

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use stowage_tests::{artifacts, StowageCmd, TestDir};

const COMPACT_VAR: &str = "STOWAGE_STORE_COMPACT_BYTES";

fn json(text: &str) -> serde_json::Value {
    match serde_json::from_str(text) {
        Ok(value) => value,
        Err(error) => panic!("not JSON ({error}):\n{text}"),
    }
}

fn names(dir: &TestDir) -> Vec<String> {
    json(&StowageCmd::new(dir, &["ls", "--json"]).ok())
        .as_array()
        .expect("array")
        .iter()
        .map(|r| r["name"].as_str().expect("name").to_owned())
        .collect()
}

fn put(dir: &TestDir, name: &str, doc: &str) -> StowageCmd {
    let file = dir.root.join(format!("{name}.json"));
    fs::write(&file, doc).expect("write doc");
    let file = file.to_string_lossy().into_owned();
    StowageCmd::new(dir, &["put", name, &file, "--json"])
}

fn run_files(store: &Path) -> Vec<String> {
    let mut files: Vec<String> = fs::read_dir(store)
        .expect("store dir")
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".run"))
        .collect();
    files.sort();
    files
}

/// The runs the manifest names, sorted.
fn manifest_runs(store: &Path) -> Vec<String> {
    let text = fs::read_to_string(store.join("manifest")).expect("manifest");
    let mut runs: Vec<String> = text
        .lines()
        .filter_map(|l| l.strip_prefix("run "))
        .map(str::to_owned)
        .collect();
    runs.sort();
    runs
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).expect("mkdir");
    for entry in fs::read_dir(from).expect("read dir").filter_map(Result::ok) {
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

/// A test dir whose store is a copy of `tests/fixtures/stores/format-v1-history`.
fn format1_store(tag: &str) -> TestDir {
    let dir = TestDir::new(tag);
    let fixture = stowage_tests::workspace_root().join("tests/fixtures/stores/format-v1-history");
    let store = dir.root.join("store");
    fs::remove_dir_all(&store).expect("clear");
    copy_dir(&fixture, &store);
    dir
}

/// What the fixture holds, as the CLI reports it.
fn assert_fixture_contents(dir: &TestDir) {
    assert_eq!(names(dir), ["a", "keep", "weights"]);
    assert_eq!(
        json(&StowageCmd::new(dir, &["get", "a"]).ok()),
        json(r#"{"v": 2, "note": "a overwritten"}"#)
    );
    assert_eq!(
        json(&StowageCmd::new(dir, &["get", "keep"]).ok()),
        json(r#"{"kept": true, "list": [1, 2.5, "x", null]}"#)
    );
    assert_eq!(
        StowageCmd::new(dir, &["verify"]).ok(),
        "verified 3 artifacts, 3 blobs, 80137 bytes: 0 problems\n"
    );
    StowageCmd::new(dir, &["get", "gone"]).fails(1, "error: no artifact named gone");
}

#[test]
fn the_format_1_fixture_reads_as_it_was_written_and_upgrades_at_the_first_write() {
    let dir = format1_store("v1-upgrade");
    let store = dir.root.join("store");
    assert_fixture_contents(&dir);
    assert_eq!(
        fs::read_to_string(store.join("format")).expect("marker"),
        "stowage-store 1\n",
        "reading never upgrades"
    );
    assert!(!store.join("manifest").exists());
    put(&dir, "new", "[1]").ok();
    assert_eq!(
        fs::read_to_string(store.join("format")).expect("marker"),
        "stowage-store 2\n"
    );
    assert_eq!(run_files(&store), ["index.1.0.run"]);
    assert_eq!(names(&dir), ["a", "keep", "new", "weights"]);
    assert_eq!(
        StowageCmd::new(&dir, &["verify"]).ok(),
        "verified 4 artifacts, 4 blobs, 80139 bytes: 0 problems\n"
    );
}

#[test]
fn every_failpoint_of_the_upgrade_leaves_a_format_1_store_that_reads_and_upgrades() {
    for failpoint in stowage::store::failpoint::INDEX_FAILPOINTS {
        let dir = format1_store(&format!("v1-fp-{failpoint}"));
        put(&dir, "new", "[1]")
            .env("STOWAGE_FAILPOINT", failpoint)
            .fails(86, &format!("failpoint {failpoint} hit"));
        // The upgrade runs before the commit: `new` was never committed.
        assert_fixture_contents(&dir);
        put(&dir, "new", "[1]").ok();
        assert_eq!(
            fs::read_to_string(dir.root.join("store/format")).expect("marker"),
            "stowage-store 2\n",
            "{failpoint}"
        );
        assert_eq!(names(&dir), ["a", "keep", "new", "weights"], "{failpoint}");
        assert_eq!(
            run_files(&dir.root.join("store")).len(),
            1,
            "{failpoint}: stale runs are deleted"
        );
    }
}

#[test]
fn every_failpoint_of_a_compaction_leaves_the_committed_write_and_a_working_store() {
    for failpoint in stowage::store::failpoint::INDEX_FAILPOINTS {
        if *failpoint == "upgrade-after-marker" {
            continue; // only an upgrade reaches it
        }
        let dir = TestDir::new(&format!("compact-fp-{failpoint}"));
        for i in 0..3 {
            put(&dir, &format!("d{i}"), &format!("[{i}]")).ok();
        }
        // A threshold of one byte: this write compacts right after it commits.
        put(&dir, "x", r#"{"x": 1}"#)
            .env(COMPACT_VAR, "1")
            .env("STOWAGE_FAILPOINT", failpoint)
            .fails(86, &format!("failpoint {failpoint} hit"));
        assert_eq!(names(&dir), ["d0", "d1", "d2", "x"], "{failpoint}");
        assert_eq!(
            json(&StowageCmd::new(&dir, &["get", "x"]).ok()),
            json(r#"{"x": 1}"#)
        );
        put(&dir, "y", "[9]").env(COMPACT_VAR, "1").ok();
        StowageCmd::new(&dir, &["rm", "d1"]).ok();
        assert_eq!(names(&dir), ["d0", "d2", "x", "y"], "{failpoint}");
        assert_eq!(
            StowageCmd::new(&dir, &["verify"]).ok(),
            "verified 4 artifacts, 4 blobs, 10 bytes: 0 problems\n",
            "{failpoint}"
        );
        assert_eq!(
            run_files(&dir.root.join("store")),
            manifest_runs(&dir.root.join("store")),
            "{failpoint}: no run left behind that the manifest does not name"
        );
    }
}

#[test]
fn gc_compacts_the_index_into_one_run_dropping_removed_and_overwritten_records() {
    let dir = TestDir::new("gc-compacts");
    let store = dir.root.join("store");
    for i in 0..6 {
        put(&dir, &format!("d{i}"), &format!("[{i}]"))
            .env(COMPACT_VAR, "1")
            .ok();
    }
    put(&dir, "d0", "[100]").ok();
    StowageCmd::new(&dir, &["rm", "d3"]).ok();
    assert!(!run_files(&store).is_empty());
    let log_before = fs::metadata(store.join("index.log")).expect("log").len();
    assert!(log_before > 34, "the tail holds the last writes");
    StowageCmd::new(&dir, &["gc"]).ok();
    let runs = run_files(&store);
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(
        fs::metadata(store.join("index.log")).expect("log").len(),
        34,
        "the new log holds only its header frame"
    );
    assert_eq!(names(&dir), ["d0", "d1", "d2", "d4", "d5"]);
    assert_eq!(
        json(&StowageCmd::new(&dir, &["get", "d0"]).ok()),
        json("[100]")
    );
    let run = fs::read(store.join(&runs[0])).expect("run");
    let text = String::from_utf8_lossy(&run);
    assert!(!text.contains("\"d3\""), "the removed record is gone");
    assert_eq!(text.matches("\"name\":\"d0\"").count(), 1, "one d0 remains");
}

#[test]
fn ls_streams_runs_and_tail_merged_in_name_order() {
    let dir = TestDir::new("ls-merge");
    for name in ["m", "c", "x", "a"] {
        put(&dir, name, "[0]").env(COMPACT_VAR, "1").ok();
    }
    put(&dir, "b", "[1]").ok(); // in the tail, between runs' names
    StowageCmd::new(&dir, &["rm", "x"]).ok(); // a tail tombstone over a run
    assert_eq!(names(&dir), ["a", "b", "c", "m"]);
    let table = StowageCmd::new(&dir, &["ls"]).ok();
    let rows: Vec<&str> = table
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().next().unwrap_or(""))
        .collect();
    assert_eq!(rows, ["a", "b", "c", "m"]);
    let empty = TestDir::new("ls-empty");
    assert_eq!(StowageCmd::new(&empty, &["ls", "--json"]).ok(), "[]\n");
}

#[test]
fn a_reader_looping_get_while_another_process_writes_and_compacts_never_errors() {
    let dir = Arc::new(TestDir::new("reader-writer"));
    put(&dir, "base", r#"{"base": true}"#).ok();
    let done = Arc::new(AtomicBool::new(false));
    let reader = {
        let (dir, done) = (Arc::clone(&dir), Arc::clone(&done));
        std::thread::spawn(move || {
            let mut reads = 0;
            while !done.load(Ordering::SeqCst) || reads < 5 {
                let output = StowageCmd::new(&dir, &["get", "base"]).output();
                assert!(
                    output.status.success(),
                    "get failed during compaction: {}",
                    String::from_utf8_lossy(&output.stderr)
                );
                assert_eq!(
                    json(&String::from_utf8_lossy(&output.stdout)),
                    json(r#"{"base": true}"#)
                );
                reads += 1;
            }
            reads
        })
    };
    // A library reader that stays open across every generation change.
    let library = stowage::Store::open(&dir.root.join("store")).expect("open");
    for i in 0..25 {
        let name = format!("w{i:02}");
        // A few hundred bytes per write: a compaction every other write.
        put(&dir, &name, &format!("[{i}]"))
            .env(COMPACT_VAR, "600")
            .ok();
        // A get started after the commit returned sees it.
        assert_eq!(
            json(&StowageCmd::new(&dir, &["get", &name]).ok()),
            json(&format!("[{i}]"))
        );
        assert_eq!(library.get(&name).expect("library get").name, name);
        assert_eq!(library.get("base").expect("library get").name, "base");
    }
    done.store(true, Ordering::SeqCst);
    let reads = reader.join().expect("reader thread");
    assert!(reads >= 5);
    assert!(
        !run_files(&dir.root.join("store")).is_empty(),
        "compactions ran"
    );
    assert_eq!(library.list().len(), 26);
}

/// What a format-1 build does when it opens `store`: `Ok` if it would read
/// and write it, else the one line it would print.
fn format1_build_open(store: &Path) -> Result<(), String> {
    let display = store.canonicalize().expect("store").display().to_string();
    let marker = fs::read_to_string(store.join("format")).unwrap_or_default();
    let newer = marker
        .trim_end()
        .strip_prefix("stowage-store ")
        .and_then(|n| n.parse::<u64>().ok())
        .filter(|n| *n > 1);
    let log = fs::read(store.join("index.log")).unwrap_or_default();
    if log.len() >= 4 && &log[..4] != b"SLG1" {
        return Err(format!(
            "error: index log {display}/index.log is corrupt at offset 0: bad frame magic"
        ));
    }
    match newer {
        Some(n) => Err(format!(
            "error: store {display} has format {n}; this build writes format 1 — upgrade stowage"
        )),
        None => Ok(()),
    }
}

#[test]
fn an_older_build_refuses_the_upgraded_store_and_accepts_the_fixture() {
    let dir = format1_store("older-build");
    let store = dir.root.join("store");
    assert_eq!(format1_build_open(&store), Ok(()));
    put(&dir, "new", "[1]").ok();
    let display = store.canonicalize().expect("store").display().to_string();
    assert_eq!(
        format1_build_open(&store),
        Err(format!(
            "error: index log {display}/index.log is corrupt at offset 0: bad frame magic"
        ))
    );
    // And were the log still readable to it, the marker alone refuses writes.
    let copy = dir.root.join("copy");
    copy_dir(&store, &copy);
    fs::write(copy.join("index.log"), b"").expect("empty log");
    let display = copy.canonicalize().expect("copy").display().to_string();
    assert_eq!(
        format1_build_open(&copy),
        Err(format!(
            "error: store {display} has format 2; this build writes format 1 — upgrade stowage"
        ))
    );
}

/// Whether this process runs as root (the CI does; `setpriv` needs it).
fn is_root() -> bool {
    fs::read_to_string("/proc/self/status").is_ok_and(|status| {
        status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|ids| ids.split_whitespace().nth(1).map(|euid| euid == "0"))
            .unwrap_or(false)
    })
}

fn chmod_tree(path: &Path) {
    let mode = if path.is_dir() { 0o755 } else { 0o644 };
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).expect("chmod");
    if path.is_dir() {
        for entry in fs::read_dir(path).expect("read dir").filter_map(Result::ok) {
            chmod_tree(&entry.path());
        }
    }
}

fn files_below(path: &Path) -> Vec<(PathBuf, u64)> {
    let mut out = Vec::new();
    for entry in fs::read_dir(path).expect("read dir").filter_map(Result::ok) {
        let p = entry.path();
        if p.is_dir() {
            out.extend(files_below(&p));
        } else {
            out.push((p.clone(), fs::metadata(&p).map(|m| m.len()).unwrap_or(0)));
        }
    }
    out.sort();
    out
}

#[test]
fn another_user_reads_a_compacted_store_and_a_format_1_store_without_writing() {
    if !is_root() {
        eprintln!("skipped: setpriv needs root (CI runs as root)");
        return;
    }
    let shared = std::env::temp_dir().join(format!("stowage-scale-ro-{}", std::process::id()));
    let _ = fs::remove_dir_all(&shared);
    fs::create_dir_all(&shared).expect("shared dir");
    let binary = shared.join("stowage");
    fs::copy(&artifacts().stowage, &binary).expect("copy binary");
    let nobody = |root: &Path, args: &[&str]| {
        let mut command = Command::new("setpriv");
        command
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(&binary)
            .args(args)
            .current_dir(root)
            .env_remove("RUST_LOG");
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("STOWAGE_") {
                command.env_remove(&key);
            }
        }
        command.output().expect("stowage runs")
    };

    // A compacted format-2 store with a tail.
    let dir = TestDir::new("ro-compacted");
    for i in 0..4 {
        put(&dir, &format!("d{i}"), &format!("[{i}]"))
            .env(COMPACT_VAR, "1")
            .ok();
    }
    put(&dir, "tail", "[9]").ok();
    let fixture = format1_store("ro-v1");
    for (tag, from, expect) in [
        ("v2", &dir.root, vec!["d0", "d1", "d2", "d3", "tail"]),
        ("v1", &fixture.root, vec!["a", "keep", "weights"]),
    ] {
        let root = shared.join(tag);
        copy_dir(from, &root);
        chmod_tree(&shared);
        fs::set_permissions(&binary, fs::Permissions::from_mode(0o755)).expect("chmod");
        let store = root.join("store");
        let before = files_below(&store);
        let output = nobody(&root, &["ls", "--json"]);
        assert!(
            output.status.success(),
            "{tag}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let listed: Vec<String> = json(&String::from_utf8_lossy(&output.stdout))
            .as_array()
            .expect("array")
            .iter()
            .map(|r| r["name"].as_str().expect("name").to_owned())
            .collect();
        assert_eq!(listed, expect, "{tag}");
        let output = nobody(&root, &["get", expect[0]]);
        assert!(
            output.status.success(),
            "{tag}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let output = nobody(&root, &["verify"]);
        assert!(
            output.status.success(),
            "{tag}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let output = nobody(&root, &["rm", expect[0]]);
        assert_eq!(output.status.code(), Some(1), "{tag}");
        assert_eq!(
            String::from_utf8_lossy(&output.stderr),
            format!("error: store {} is read-only\n", store.display()),
            "{tag}"
        );
        assert_eq!(files_below(&store), before, "{tag}: nothing written");
    }
    let _ = fs::remove_dir_all(&shared);
}
