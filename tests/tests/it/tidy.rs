//! House rules, checked on the source tree (after rust-analyzer's tidy):
//! every source file opens with a `//!` header, every `unsafe` block or impl
//! sits under a `// SAFETY:` comment, abi_stable is named only in plugin-api
//! and the host's loader, and test names carry no `test_` prefix.

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
