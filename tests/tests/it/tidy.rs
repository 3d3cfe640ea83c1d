//! House rules, checked on the source tree (after rust-analyzer's tidy):
//! every source file opens with a `//!` header, every `unsafe` block or impl
//! sits under a `// SAFETY:` comment, abi_stable is named only in plugin-api
//! and the host's loader, test names carry no `test_` prefix, and the
//! host's files import each other without a circle ([`imports`]).

mod imports;

use std::fs;
use std::path::{Path, PathBuf};

use stowage_tests::workspace_root;

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.filter_map(Result::ok) {
        let path = entry.path();
        let name = entry.file_name();
        if name == "target" || name == "corpus" || name.to_string_lossy().starts_with('.') {
            continue;
        }
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn sources() -> Vec<(String, String)> {
    let root = workspace_root();
    let mut files = Vec::new();
    for dir in ["plugin-api", "host", "plugins", "tests", "fuzz", "python"] {
        rust_files(&root.join(dir), &mut files);
    }
    files.sort();
    assert!(files.len() > 20, "found only {} files", files.len());
    files
        .into_iter()
        .map(|path| {
            let text =
                fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let relative = path
                .strip_prefix(&root)
                .unwrap_or(&path)
                .display()
                .to_string();
            (relative, text)
        })
        .collect()
}

#[test]
fn every_source_file_opens_with_a_module_doc() {
    let missing: Vec<String> = sources()
        .into_iter()
        .filter(|(_, text)| !text.trim_start().starts_with("//!"))
        .map(|(path, _)| path)
        .collect();
    assert!(
        missing.is_empty(),
        "files without a //! header: {missing:?}"
    );
}

// Spelled in pieces so this file does not match its own search.
const UNSAFE_BLOCK: &str = concat!("unsafe", " {");
const UNSAFE_IMPL: &str = concat!("unsafe", " impl");

#[test]
fn every_unsafe_block_has_a_safety_comment() {
    let mut bare = Vec::new();
    for (path, text) in sources() {
        let lines: Vec<&str> = text.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            let code = line.split("//").next().unwrap_or_default();
            let opens_unsafe = code.contains(UNSAFE_BLOCK) || code.contains(UNSAFE_IMPL);
            if !opens_unsafe || code.contains("unsafe fn") {
                continue;
            }
            let justified = lines[i.saturating_sub(6)..i]
                .iter()
                .chain(std::iter::once(line))
                .any(|l| l.contains("SAFETY:"));
            if !justified {
                bare.push(format!("{path}:{}", i + 1));
            }
        }
    }
    assert!(bare.is_empty(), "unsafe without a SAFETY comment: {bare:?}");
}

#[test]
fn abi_stable_is_named_only_in_plugin_api_and_the_loader() {
    let allowed = |path: &str| {
        path.starts_with("plugin-api/")
            || path.starts_with("host/src/loader/")
            || path.starts_with("tests/fixtures/api-1.0/plugin-api/")
            || path == "tests/tests/it/tidy.rs"
    };
    let offenders: Vec<String> = sources()
        .into_iter()
        .filter(|(path, text)| !allowed(path) && text.contains("abi_stable"))
        .map(|(path, _)| path)
        .collect();
    assert!(
        offenders.is_empty(),
        "abi_stable named outside its boundary: {offenders:?}"
    );
}

#[test]
fn no_test_function_is_named_with_a_test_prefix() {
    let needle = ["fn ", "test_"].concat();
    let offenders: Vec<String> = sources()
        .into_iter()
        .filter(|(_, text)| text.contains(&needle))
        .map(|(path, _)| path)
        .collect();
    assert!(
        offenders.is_empty(),
        "test functions named test_*: {offenders:?}"
    );
}

#[test]
fn the_host_imports_without_a_circle() {
    let root = workspace_root();
    for crate_root in ["host/src/lib.rs", "host/src/main.rs"] {
        let circles = imports::host_circles(&root.join(crate_root));
        assert!(
            circles.is_empty(),
            "import circles in the crate of {crate_root}: {circles:?}"
        );
    }
}

/// The files that may hold `unsafe` code, each for the reason ARCHITECTURE.md
/// gives ("Cross-Cutting Concerns"). Anything else is safe Rust.
const UNSAFE_FILES: &[&str] = &[
    "plugin-api/src/abi.rs",
    "plugin-api/src/arrow.rs",
    "plugin-api/src/export.rs",
    "plugin-api/src/plugin.rs",
    "plugin-api/src/testing.rs",
    "plugin-api/src/value.rs",
    "host/src/loader/convert.rs",
    "host/src/loader/foreign.rs",
    "host/src/loader/mod.rs",
    "host/src/isolation/arrow.rs",
    "host/src/isolation/shm.rs",
    "host/src/isolation/process.rs",
    "host/src/isolation/runner.rs",
    "host/src/main.rs",
    "host/src/value.rs",
    "host/src/store/sys.rs",
    "host/src/store/blob.rs",
    "host/src/store/pack.rs",
    "host/src/store/input.rs",
    "host/src/store/snapshot.rs",
    "host/src/store/object/cache.rs",
    "plugins/arrow/src/ffi.rs",
    "python/src/convert.rs",
    "python/src/arrow.rs",
    "tests/tests/it/arrow/c_data.rs",
    "tests/benches/store_scale.rs",
];

#[test]
fn unsafe_code_stays_in_the_listed_files() {
    let opens_unsafe = |line: &str| {
        let code = line.split("//").next().unwrap_or_default();
        [UNSAFE_BLOCK, UNSAFE_IMPL, "unsafe fn", "unsafe extern"]
            .iter()
            .any(|needle| code.contains(needle))
    };
    let offenders: Vec<String> = sources()
        .into_iter()
        .filter(|(path, text)| {
            !UNSAFE_FILES.contains(&path.as_str())
                && !path.starts_with("tests/fixtures/")
                && !path.starts_with("fuzz/")
                && path != "tests/tests/it/tidy.rs"
                && text.lines().any(opens_unsafe)
        })
        .map(|(path, _)| path)
        .collect();
    assert!(
        offenders.is_empty(),
        "unsafe code outside the files ARCHITECTURE.md lists: {offenders:?}"
    );
    let architecture =
        fs::read_to_string(workspace_root().join("ARCHITECTURE.md")).expect("read ARCHITECTURE.md");
    let undocumented: Vec<&str> = UNSAFE_FILES
        .iter()
        .copied()
        .filter(|path| !architecture.contains(&format!("`{path}`")))
        .collect();
    assert!(
        undocumented.is_empty(),
        "ARCHITECTURE.md does not name these unsafe files: {undocumented:?}"
    );
}
