//! The store against hostile and unusual conditions (issue #11 items 1, 3,
//! 4 and 7), through the real binary: blob names that try to leave a
//! directory (from a plugin and from a hand-edited record), read-only
//! stores (another user's, and EROFS injected by a failpoint), unreadable
//! records and the store format marker, artifact names and control
//! characters in human-readable output.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use stowage_tests::{append_log_frame, artifacts, lib_file, log_records, StowageCmd, TestDir};

fn json(text: &str) -> serde_json::Value {
    match serde_json::from_str(text) {
        Ok(value) => value,
        Err(error) => panic!("not JSON ({error}):\n{text}"),
    }
}

/// The canonical store directory of `dir` (what error messages name).
fn store_dir(dir: &TestDir) -> PathBuf {
    dir.root.join("store").canonicalize().expect("store dir")
}

/// Writes a `BADBLOB` input for the badblobs fixture: header lines, an
/// empty line, the body.
fn badblob_file(dir: &TestDir, file: &str, header: &[&str], body: &str) {
    let text = format!("BADBLOB\n{}\n\n{body}", header.join("\n"));
    fs::write(dir.root.join(file), text).expect("write input");
}

/// `created` of artifact `name`, from `inspect --json`.
fn created(dir: &TestDir, name: &str) -> String {
    let record = json(&StowageCmd::new(dir, &["inspect", name, "--json"]).ok());
    record["created"].as_str().expect("created").to_owned()
}

/// Every file below `root`, relative, sorted.
fn files_below(root: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        let Ok(entries) = fs::read_dir(dir) else {
            return;
        };
        for entry in entries.filter_map(Result::ok) {
            let path = entry.path();
            if path.is_dir() {
                walk(root, &path, out);
            } else if let Ok(rel) = path.strip_prefix(root) {
                out.push(rel.display().to_string());
            }
        }
    }
    let mut out = Vec::new();
    walk(root, root, &mut out);
    out.sort();
    out
}

// ---- item 1: blob names never leave a directory ----

#[test]
fn a_plugin_writing_escaping_blob_names_fails_and_leaves_no_record() {
    let dir = TestDir::new("bad-blob-names");
    dir.install("fixture-bad-blob-names", "stowage_badblobs");
    let cases = [
        ("../ESCAPED", "contains a path separator"),
        ("/abs", "is an absolute path"),
        ("a/b", "contains a path separator"),
        ("..", "is '.' or '..'"),
        (".", "is '.' or '..'"),
        ("new\\x0aline", "contains a control character"),
        ("nul\\x00", "contains a NUL byte"),
        ("", "is empty"),
    ];
    for (name, reason) in cases {
        badblob_file(&dir, "in.bad", &[&format!("blob {name}")], "payload");
        let shown = format!("{:?}", name.replace("\\x0a", "\n").replace("\\x00", "\0"));
        StowageCmd::new(&dir, &["put", "x", "in.bad"]).fails(
            1,
            &format!(
                "error: cannot store x: badblobs: internal error: sink: invalid blob name {shown} in artifact x: {reason}"
            ),
        );
    }
    assert_eq!(StowageCmd::new(&dir, &["ls", "--json"]).ok(), "[]\n");
    assert!(!dir.root.join("ESCAPED").exists());
    // A well-named blob goes through the same plugin.
    badblob_file(&dir, "in.bad", &["blob data"], "payload");
    StowageCmd::new(&dir, &["put", "x", "in.bad"]).ok();
    assert_eq!(
        StowageCmd::new(&dir, &["get", "x", "--raw"]).ok(),
        "payload"
    );
}

#[test]
fn a_hand_edited_record_with_an_escaping_blob_name_is_unreadable_and_get_writes_nothing() {
    let dir = TestDir::new("escaping-record");
    dir.install("fixture-bad-blob-names", "stowage_badblobs");
    badblob_file(&dir, "in.bad", &["blob one", "blob two"], "payload");
    StowageCmd::new(&dir, &["put", "good", "in.bad"]).ok();
    let store = dir.root.join("store");
    let mut evil = log_records(&store).pop().expect("the record of good");
    evil["name"] = "evil".into();
    evil["blobs"][1]["name"] = "../ESCAPED".into();
    append_log_frame(&store, &serde_json::json!({ "put": [evil] }));
    let mut absolute = log_records(&store).pop().expect("the record of evil");
    absolute["name"] = "abs".into();
    let target = dir.root.join("ABS-ESCAPED");
    absolute["blobs"][0]["name"] = target.display().to_string().into();
    append_log_frame(&store, &serde_json::json!({ "put": [absolute] }));

    let message =
        "error: artifact evil is unreadable: blob name \"../ESCAPED\" contains a path separator";
    StowageCmd::new(&dir, &["get", "evil", "--raw", "-o", "out"]).fails(1, message);
    StowageCmd::new(&dir, &["get", "evil"]).fails(1, message);
    StowageCmd::new(&dir, &["inspect", "evil"]).fails(1, message);
    StowageCmd::new(&dir, &["get", "abs", "--raw", "-o", "out"]).fails(
        1,
        &format!(
            "error: artifact abs is unreadable: blob name {:?} is an absolute path",
            target.display().to_string()
        ),
    );
    assert!(!dir.root.join("out").exists(), "nothing written to -o");
    assert!(
        !dir.root.join("ESCAPED").exists(),
        "nothing written beside it"
    );
    assert!(!target.exists(), "nothing written at the absolute path");
    // The good artifact still reads, one file per blob inside DIR.
    StowageCmd::new(&dir, &["get", "good", "--raw", "-o", "out"]).ok();
    assert_eq!(files_below(&dir.root.join("out")), ["one", "two"]);
}

// ---- item 3: read-only stores ----

#[test]
fn an_erofs_store_opens_read_only_reads_and_refuses_every_write() {
    let dir = TestDir::new("erofs");
    fs::write(dir.root.join("doc.json"), r#"{"a": [1, 2]}"#).expect("write");
    StowageCmd::new(&dir, &["put", "doc", "doc.json", "--json"]).ok();
    let created = created(&dir, "doc");
    let store = dir.root.join("store");
    // A torn tail and a stale temp file: a writable open would repair both.
    let mut log = fs::OpenOptions::new()
        .append(true)
        .open(store.join("index.log"))
        .expect("log");
    std::io::Write::write_all(&mut log, b"SLG1\xff\x00\x00\x00torn").expect("torn tail");
    drop(log);
    fs::write(store.join("tmp").join("gone-0.tmp"), b"stale").expect("temp");
    let old = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
    fs::File::options()
        .write(true)
        .open(store.join("tmp").join("gone-0.tmp"))
        .and_then(|f| f.set_modified(old))
        .expect("age the temp file");
    let before = files_below(&store);
    let log_len = fs::metadata(store.join("index.log")).expect("log").len();

    let erofs = |args: &[&str]| StowageCmd::new(&dir, args).env("STOWAGE_FAILPOINT", "open-erofs");
    assert_eq!(
        erofs(&["ls"]).ok(),
        format!(
            "NAME  TYPE         ENCODING                      BYTES  WRITTEN BY           CREATED\n\
             doc   map          msgpack v1                        6  msgpack 0.1.0        {created}\n"
        )
    );
    assert_eq!(json(&erofs(&["get", "doc"]).ok()), json(r#"{"a": [1, 2]}"#));
    assert_eq!(
        erofs(&["verify"]).ok(),
        "verified 1 artifacts, 1 blobs, 6 bytes: 0 problems\n"
    );
    assert_eq!(
        json(&erofs(&["inspect", "doc", "--json"]).ok())["name"],
        "doc"
    );
    let message = format!("error: store {} is read-only", store_dir(&dir).display());
    erofs(&["put", "other", "doc.json", "--json"]).fails(1, &message);
    erofs(&["rm", "doc"]).fails(1, &message);
    erofs(&["gc"]).fails(1, &message);
    assert_eq!(files_below(&store), before, "nothing created or deleted");
    assert_eq!(
        fs::metadata(store.join("index.log")).expect("log").len(),
        log_len,
        "the torn tail is ignored in memory, not truncated"
    );
    // A writable open repairs what the read-only one left alone.
    StowageCmd::new(&dir, &["ls"]).ok();
    assert!(fs::metadata(store.join("index.log")).expect("log").len() < log_len);
    assert!(!store.join("tmp").join("gone-0.tmp").exists());
}

/// Whether every ancestor directory of `path` lets others search it.
fn reachable_by_others(path: &Path) -> bool {
    path.ancestors()
        .skip(1)
        .all(|dir| fs::metadata(dir).is_ok_and(|m| m.permissions().mode() & 0o001 != 0))
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

/// A directory under the system temp dir (world-searchable), removed on
/// drop, for what another user must reach.
struct SharedDir(PathBuf);

impl SharedDir {
    fn new(tag: &str) -> SharedDir {
        let path = std::env::temp_dir().join(format!("stowage-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).expect("create shared dir");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).expect("chmod");
        SharedDir(path)
    }
}

impl Drop for SharedDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Sets 0755 on directories and 0644 on files below (and at) `path`.
fn chmod_tree(path: &Path) {
    let mode = if path.is_dir() { 0o755 } else { 0o644 };
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).expect("chmod");
    if path.is_dir() {
        for entry in fs::read_dir(path).expect("read dir").filter_map(Result::ok) {
            chmod_tree(&entry.path());
        }
    }
}

#[test]
fn another_users_store_is_readable_and_refuses_writes() {
    if !is_root() {
        eprintln!("skipped: setpriv needs root (CI runs as root)");
        return;
    }
    let shared = SharedDir::new("read-only");
    let root = &shared.0;
    assert!(
        reachable_by_others(&root.join("store")),
        "{} must be searchable by other users",
        root.display()
    );
    let store = root.join("store");
    fs::write(root.join("doc.json"), r#"{"b": true}"#).expect("write");
    fs::write(
        root.join("plugins.toml"),
        "[host]\ndir = \"plugin-libs\"\n\n[store]\ndir = \"store\"\n",
    )
    .expect("config");
    fs::create_dir_all(root.join("plugin-libs")).expect("plugin dir");
    // The binary, where uid 65534 can run it.
    let binary = if reachable_by_others(&artifacts().stowage) {
        artifacts().stowage.clone()
    } else {
        let copy = root.join("stowage");
        fs::copy(&artifacts().stowage, &copy).expect("copy binary");
        copy
    };
    let run = |user: Option<u32>, args: &[&str]| {
        let mut command = match user {
            Some(uid) => {
                let mut c = Command::new("setpriv");
                c.arg(format!("--reuid={uid}"))
                    .arg(format!("--regid={uid}"))
                    .arg("--clear-groups")
                    .arg(&binary);
                c
            }
            None => Command::new(&binary),
        };
        command.args(args).current_dir(root).env_remove("RUST_LOG");
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("STOWAGE_") {
                command.env_remove(&key);
            }
        }
        command.output().expect("stowage runs")
    };
    let ok = |user: Option<u32>, args: &[&str]| {
        let output = run(user, args);
        assert!(
            output.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    ok(None, &["put", "doc", "doc.json", "--json"]);
    chmod_tree(root);
    let before = files_below(&store);
    let log_len = fs::metadata(store.join("index.log")).expect("log").len();
    let nobody = Some(65534);

    let listing = json(&ok(nobody, &["ls", "--json"]));
    assert_eq!(listing[0]["name"], "doc");
    assert_eq!(json(&ok(nobody, &["get", "doc"])), json(r#"{"b": true}"#));
    assert_eq!(
        ok(nobody, &["verify"]),
        "verified 1 artifacts, 1 blobs, 4 bytes: 0 problems\n"
    );
    assert_eq!(
        ok(nobody, &["show", "doc"]),
        "map (msgpack v1): {\"b\":true}\n"
    );
    assert!(ok(nobody, &["inspect", "doc"]).starts_with("name:        doc\n"));
    let message = format!("error: store {} is read-only\n", store.display());
    for args in [
        &["put", "x", "doc.json", "--json"][..],
        &["rm", "doc"][..],
        &["gc"][..],
    ] {
        let output = run(nobody, args);
        assert_eq!(output.status.code(), Some(1), "{args:?}");
        assert_eq!(String::from_utf8_lossy(&output.stderr), message, "{args:?}");
    }
    assert_eq!(files_below(&store), before, "nothing created");
    assert_eq!(
        fs::metadata(store.join("index.log")).expect("log").len(),
        log_len
    );
}

// ---- item 4: one bad record never blocks the store ----

#[test]
fn unreadable_records_are_listed_and_named_while_the_rest_reads() {
    let dir = TestDir::new("unreadable");
    fs::write(dir.root.join("doc.json"), r#"[1, "two"]"#).expect("write");
    StowageCmd::new(&dir, &["put", "doc", "doc.json", "--json"]).ok();
    let created = created(&dir, "doc");
    let store = dir.root.join("store");
    let mut broken = log_records(&store).pop().expect("record");
    broken["name"] = "broken".into();
    broken.as_object_mut().expect("object").remove("obj_type");
    let mut future = broken.clone();
    future["name"] = "future".into();
    future["format_version"] = 3.into();
    append_log_frame(&store, &serde_json::json!({ "put": [broken, future] }));

    let broken_reason = "missing obj_type";
    let future_reason =
        "record format version 3 is newer than this build reads (2); upgrade stowage";
    assert_eq!(
        StowageCmd::new(&dir, &["ls"]).ok(),
        format!(
            "NAME    TYPE         ENCODING                      BYTES  WRITTEN BY           CREATED\n\
             broken  ! unreadable: {broken_reason}\n\
             doc     list         msgpack v1                        6  msgpack 0.1.0        {created}\n\
             future  ! unreadable: {future_reason}\n"
        )
    );
    let listing = json(&StowageCmd::new(&dir, &["ls", "--json"]).ok());
    assert_eq!(
        listing[0],
        serde_json::json!({"name": "broken", "error": broken_reason})
    );
    assert_eq!(listing[1]["name"], "doc");
    assert_eq!(listing[1]["blobs"][0]["name"], "data");
    assert_eq!(
        listing[2],
        serde_json::json!({"name": "future", "error": future_reason})
    );
    for command in ["get", "inspect", "show"] {
        StowageCmd::new(&dir, &[command, "future"]).fails(
            1,
            &format!("error: artifact future is unreadable: {future_reason}"),
        );
    }
    StowageCmd::new(&dir, &["get", "broken", "--raw"]).fails(
        1,
        &format!("error: artifact broken is unreadable: {broken_reason}"),
    );
    assert_eq!(
        json(&StowageCmd::new(&dir, &["get", "doc"]).ok()),
        json(r#"[1, "two"]"#)
    );
    let output = StowageCmd::new(&dir, &["verify"]).output();
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        format!(
            "broken: artifact broken is unreadable: {broken_reason}\n\
             future: artifact future is unreadable: {future_reason}\n\
             verified 3 artifacts, 1 blobs, 6 bytes: 2 problems\n"
        )
    );
    assert_eq!(
        String::from_utf8_lossy(&output.stderr),
        "error: verify found 2 problems\n"
    );
    StowageCmd::new(&dir, &["gc"]).fails(
        1,
        "error: gc refused: 2 unreadable record(s), first: broken; they may use any blob — rm them or upgrade stowage",
    );
    // Writing still works; removing the unreadable records lifts the refusal.
    StowageCmd::new(&dir, &["put", "more", "doc.json", "--json"]).ok();
    assert_eq!(
        StowageCmd::new(&dir, &["rm", "broken"]).ok(),
        "removed broken\n"
    );
    StowageCmd::new(&dir, &["rm", "future"]).ok();
    StowageCmd::new(&dir, &["gc"]).ok();
    assert_eq!(
        StowageCmd::new(&dir, &["verify"]).ok(),
        "verified 2 artifacts, 2 blobs, 12 bytes: 0 problems\n"
    );
}

#[test]
fn a_frame_that_is_not_valid_json_is_one_unreadable_placeholder() {
    let dir = TestDir::new("bad-frame");
    fs::write(dir.root.join("doc.json"), "7").expect("write");
    StowageCmd::new(&dir, &["put", "doc", "doc.json", "--json"]).ok();
    let store = dir.root.join("store");
    let at = fs::metadata(store.join("index.log")).expect("log").len();
    append_log_frame(&store, &serde_json::json!({"put": {"not": "an array"}}));
    let listing = json(&StowageCmd::new(&dir, &["ls", "--json"]).ok());
    assert_eq!(
        listing[0],
        serde_json::json!({"name": format!(".record-at-{at}"), "error": "put is not an array"})
    );
    assert_eq!(listing[1]["name"], "doc");
    assert_eq!(StowageCmd::new(&dir, &["get", "doc"]).ok(), "7\n");
    let placeholder = format!(".record-at-{at}");
    assert_eq!(
        StowageCmd::new(&dir, &["rm", &placeholder]).ok(),
        format!("removed {placeholder}\n")
    );
    assert_eq!(
        json(&StowageCmd::new(&dir, &["ls", "--json"]).ok())[0]["name"],
        "doc"
    );
}

#[test]
fn a_store_of_a_newer_format_refuses_writes_and_still_reads() {
    let dir = TestDir::new("newer-store");
    fs::write(dir.root.join("doc.json"), "[true]").expect("write");
    StowageCmd::new(&dir, &["put", "doc", "doc.json", "--json"]).ok();
    let marker = dir.root.join("store").join("format");
    assert_eq!(
        fs::read_to_string(&marker).expect("marker"),
        "stowage-store 2\n"
    );
    fs::write(&marker, "stowage-store 3\n").expect("newer marker");
    let message = format!(
        "error: store {} has format 3; this build writes format 2 — upgrade stowage",
        store_dir(&dir).display()
    );
    StowageCmd::new(&dir, &["put", "x", "doc.json", "--json"]).fails(1, &message);
    StowageCmd::new(&dir, &["rm", "doc"]).fails(1, &message);
    StowageCmd::new(&dir, &["gc"]).fails(1, &message);
    assert_eq!(
        json(&StowageCmd::new(&dir, &["get", "doc"]).ok()),
        json("[true]")
    );
    assert_eq!(
        StowageCmd::new(&dir, &["verify"]).ok(),
        "verified 1 artifacts, 1 blobs, 2 bytes: 0 problems\n"
    );
}

#[test]
fn a_store_from_before_markers_gains_one_on_its_first_write() {
    let dir = TestDir::new("marker-upgrade");
    let fixture = stowage_tests::workspace_root().join("tests/fixtures/stores/format-v1");
    let store = dir.root.join("store");
    fs::remove_dir_all(&store).expect("clear");
    fs::create_dir_all(store.join("packs")).expect("mkdir");
    fs::copy(fixture.join("index.log"), store.join("index.log")).expect("copy log");
    fs::copy(
        fixture.join("packs/00000001.pack"),
        store.join("packs/00000001.pack"),
    )
    .expect("copy pack");
    StowageCmd::new(&dir, &["verify"]).ok();
    assert!(!store.join("format").exists(), "reading never adds it");
    fs::write(dir.root.join("doc.json"), "1").expect("write");
    StowageCmd::new(&dir, &["put", "new", "doc.json", "--json"]).ok();
    assert_eq!(
        fs::read_to_string(store.join("format")).expect("marker"),
        "stowage-store 2\n"
    );
}

// ---- item 7: names and output ----

#[test]
fn artifact_names_with_control_characters_or_edge_whitespace_are_refused() {
    let dir = TestDir::new("names");
    fs::write(dir.root.join("doc.json"), "1").expect("write");
    for (name, reason) in [
        ("a\nb", "contains a control character"),
        ("tab\there", "contains a control character"),
        ("esc\u{1b}[2J", "contains a control character"),
        (" ", "starts or ends with whitespace"),
        (" lead", "starts or ends with whitespace"),
        ("trail ", "starts or ends with whitespace"),
        ("a/b", "contains '/'"),
        (".hidden", "starts with '.'"),
    ] {
        StowageCmd::new(&dir, &["put", name, "doc.json", "--json"]).fails(
            1,
            &format!("error: invalid artifact name {name:?}: {reason}"),
        );
    }
    StowageCmd::new(&dir, &["put", "inner space", "doc.json", "--json"]).ok();
    assert_eq!(
        json(&StowageCmd::new(&dir, &["ls", "--json"]).ok())[0]["name"],
        "inner space"
    );
}

#[test]
fn inspect_and_ls_escape_control_characters_in_every_value() {
    let dir = TestDir::new("escapes");
    dir.install("fixture-bad-blob-names", "stowage_badblobs");
    badblob_file(
        &dir,
        "in.bad",
        &[
            "blob data",
            "info sep=\\x0a",
            "info color=\\x1b[31mred",
            "info tab\\x09key=x",
        ],
        "body",
    );
    StowageCmd::new(&dir, &["put", "odd", "in.bad"]).ok();
    let created = created(&dir, "odd");
    let digest = blake3::hash(b"body").to_hex();
    assert_eq!(
        StowageCmd::new(&dir, &["inspect", "odd"]).ok(),
        format!(
            "name:        odd\n\
             type:        bytes\n\
             encoding:    badblob-v1 v1\n\
             written by:  badblobs 1.0.0\n\
             created:     {created}\n\
             record:      format v1\n\
             info:        color = \\u{{1b}}[31mred\n\
             info:        sep = \\n\n\
             info:        source = in.bad\n\
             info:        tab\\tkey = x\n\
             blob:        data 4 bytes blake3:{digest} (packed)\n"
        )
    );
    // The JSON form keeps the exact values.
    let record = json(&StowageCmd::new(&dir, &["inspect", "odd", "--json"]).ok());
    assert_eq!(record["serializer_info"]["sep"], "\n");
    // Records written elsewhere: a name with a newline (which builds before
    // the SPEC §7 rule accepted: still readable, printed escaped) and a
    // name with a `/` (which no build writes: unreadable).
    let store = dir.root.join("store");
    let mut newline = log_records(&store).pop().expect("record");
    newline["name"] = "two\nlines".into();
    let mut slash = newline.clone();
    slash["name"] = "a/b".into();
    append_log_frame(&store, &serde_json::json!({ "put": [newline, slash] }));
    assert_eq!(
        StowageCmd::new(&dir, &["ls"]).ok(),
        format!(
            "NAME        TYPE         ENCODING                      BYTES  WRITTEN BY           CREATED\n\
             a/b         ! unreadable: name \"a/b\" contains '/'\n\
             odd         bytes        badblob-v1 v1                     4  badblobs 1.0.0       {created}\n\
             two\\nlines  bytes        badblob-v1 v1                     4  badblobs 1.0.0       {created}\n"
        )
    );
    assert_eq!(
        StowageCmd::new(&dir, &["get", "two\nlines", "--raw"]).ok(),
        "body"
    );
    assert!(StowageCmd::new(&dir, &["inspect", "two\nlines"])
        .ok()
        .starts_with("name:        two\\nlines\n"));
    assert_eq!(
        StowageCmd::new(&dir, &["rm", "two\nlines"]).ok(),
        "removed two\\nlines\n"
    );
    StowageCmd::new(&dir, &["get", "two\nlines"]).fails(1, "error: no artifact named two\\nlines");
}

#[test]
fn status_escapes_control_characters_in_library_paths() {
    let dir = TestDir::new("status-escape");
    let first = dir.install("fixture-bad-blob-names", "stowage_badblobs");
    let second = dir.plugin_dir().join(lib_file("stowage_x\ny"));
    fs::copy(&first, &second).expect("copy");
    let status = StowageCmd::new(&dir, &["status"]).ok();
    let row = format!(
        "badblobs   broken       50  1.0.0      -                            duplicate plugin name badblobs: {} and {}",
        first.display(),
        second.display().to_string().replace('\n', "\\n")
    );
    assert!(
        status.lines().any(|line| line == row),
        "no row {row:?} in\n{status}"
    );
    // Header, badblobs, the built-in composite and msgpack, the duplicate.
    assert_eq!(status.lines().count(), 5, "{status}");
}
