//! The data commands: `put`, `get`, `ls`, `inspect`, `show`, `rm`, `gc`,
//! `verify`.
//!
//! Decision: `get -o FILE` writes a temp file beside FILE and renames it
//! into place, so an interrupted `get` never leaves half a file under the
//! final name. `get --raw` of a one-blob artifact writes that blob; of a
//! multi-blob artifact it needs `-o DIR` and writes one file per blob.
//! Decision: `verify` prints every problem on stdout and then fails with one
//! summary line, so scripts see a non-zero exit and people see the list.
//! Decision: human-readable listings (`ls`, `inspect`, `rm`, `verify`) print
//! every value through `stowage::text::escape_control`; `ls` marks a record
//! this build cannot read with `! unreadable: REASON` in place of its
//! columns, and `ls --json` gives it as `{"name": …, "error": …}`.

use std::fmt::Write as _;
use std::fs;
use std::io::{self, IsTerminal, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use stowage::fallback::FALLBACK_NAME;
use stowage::store::Listed;
use stowage::text::escape_control;
use stowage::{Host, Record};

use super::{print, read_input, warn_skipped};

/// Files at least this large get a progress bar (on a terminal).
const PROGRESS_THRESHOLD: u64 = 16 * 1024 * 1024;

fn progress_bar(total: u64, what: &str) -> ProgressBar {
    if total < PROGRESS_THRESHOLD || !io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total);
    let style =
        ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}")
            .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style);
    bar.set_message(what.to_owned());
    bar
}

/// `stowage put NAME FILE`.
pub fn put(
    host: &Host,
    name: &str,
    file: &Path,
    json_input: bool,
    options: Vec<(String, String)>,
) -> Result<()> {
    let bytes = read_input(file)?;
    let source = file.display().to_string();
    let only = json_input.then_some(FALLBACK_NAME);
    let bar = progress_bar(bytes.len() as u64, &format!("put {name}"));
    let saved = host.put_file_with(name, &bytes, only, &options, &source, &|written| {
        bar.set_position(written)
    })?;
    bar.finish_and_clear();
    warn_skipped(&saved.skipped);
    let record = &saved.record;
    print(&format!(
        "stored {} ({}, {} v{}, {} bytes) with {} {}\n",
        record.name,
        record.meta.obj_type,
        record.meta.encoding,
        record.meta.encoding_version,
        record.blobs.iter().map(|b| b.size).sum::<u64>(),
        record.meta.serializer,
        record.meta.serializer_version
    ))
}

/// `stowage get NAME [-o FILE] [--raw]`.
pub fn get(host: &Host, name: &str, output: Option<&Path>, raw: bool) -> Result<()> {
    if raw {
        return get_raw(host, name, output);
    }
    let mut file = Vec::new();
    let (_, skipped) = host.export_artifact(name, &mut file)?;
    warn_skipped(&skipped);
    write_output(output, &file)
}

fn get_raw(host: &Host, name: &str, output: Option<&Path>) -> Result<()> {
    let (record, blobs) = host.load_raw(name, true)?;
    match (blobs.as_slice(), output) {
        ([(_, data)], output) => write_output(output, data),
        (_, Some(dir)) => {
            fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
            for (blob, data) in &blobs {
                write_atomically(&dir.join(blob), data)?;
            }
            print(&format!(
                "wrote {} blobs of {} to {}\n",
                blobs.len(),
                record.name,
                dir.display()
            ))
        }
        (_, None) => bail!(
            "{} has {} blobs; give -o DIR to write one file per blob",
            record.name,
            blobs.len()
        ),
    }
}

fn write_output(output: Option<&Path>, bytes: &[u8]) -> Result<()> {
    match output {
        None => {
            let mut stdout = io::stdout().lock();
            stdout.write_all(bytes)?;
            stdout.flush()?;
            Ok(())
        }
        Some(path) => write_atomically(path, bytes),
    }
}

/// Writes `bytes` to a temp file beside `path`, syncs it, renames it over.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let file_name = path
        .file_name()
        .with_context(|| format!("{} is not a file path", path.display()))?;
    let temp: PathBuf = path.with_file_name(format!(
        ".{}.{}.tmp",
        file_name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| -> io::Result<()> {
        let mut file = fs::File::create(&temp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&temp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&temp);
    }
    result.with_context(|| format!("cannot write {}", path.display()))
}

fn total_size(record: &Record) -> u64 {
    record.blobs.iter().map(|b| b.size).sum()
}

/// `stowage ls [--json]`.
pub fn ls(host: &Host, json_output: bool) -> Result<()> {
    let listing = host.store()?.listing();
    if json_output {
        let items: Vec<serde_json::Value> = listing
            .iter()
            .map(|listed| match listed {
                Listed::Record(record) => record.to_json(),
                Listed::Unreadable(bad) => {
                    serde_json::json!({ "name": bad.name, "error": bad.reason })
                }
            })
            .collect();
        return print(&format!("{:#}\n", serde_json::Value::Array(items)));
    }
    let names: Vec<_> = listing.iter().map(|l| escape_control(l.name())).collect();
    let width = names
        .iter()
        .map(|n| n.chars().count())
        .max()
        .unwrap_or(4)
        .max(4);
    let mut out = format!(
        "{:width$}  {:12} {:22} {:>12}  {:20} CREATED\n",
        "NAME", "TYPE", "ENCODING", "BYTES", "WRITTEN BY"
    );
    for (listed, name) in listing.iter().zip(&names) {
        let r = match listed {
            Listed::Record(record) => record,
            Listed::Unreadable(bad) => {
                let _ = writeln!(
                    out,
                    "{name:width$}  ! unreadable: {}",
                    escape_control(&bad.reason)
                );
                continue;
            }
        };
        let m = &r.meta;
        let _ = writeln!(
            out,
            "{name:width$}  {:12} {:22} {:>12}  {:20} {}",
            escape_control(&m.obj_type),
            escape_control(&format!("{} v{}", m.encoding, m.encoding_version)),
            total_size(r),
            escape_control(&format!("{} {}", m.serializer, m.serializer_version)),
            escape_control(&r.created)
        );
    }
    print(&out)
}

/// `stowage inspect NAME [--json]`. Every value is printed through
/// `escape_control`, so a value holding a newline stays on its line.
pub fn inspect(host: &Host, name: &str, json_output: bool) -> Result<()> {
    let record = host.store()?.get(name)?;
    if json_output {
        return print(&format!("{:#}\n", record.to_json()));
    }
    let e = |s: &str| escape_control(s).into_owned();
    let m = &record.meta;
    let mut out = String::new();
    let _ = writeln!(out, "name:        {}", e(&record.name));
    let _ = writeln!(out, "type:        {}", e(&m.obj_type));
    let _ = writeln!(
        out,
        "encoding:    {} v{}",
        e(&m.encoding),
        m.encoding_version
    );
    let _ = writeln!(
        out,
        "written by:  {} {}",
        e(&m.serializer),
        e(&m.serializer_version)
    );
    let _ = writeln!(out, "created:     {}", e(&record.created));
    let _ = writeln!(out, "record:      format v{}", record.format_version);
    for (key, value) in &m.serializer_info {
        let _ = writeln!(out, "info:        {} = {}", e(key), e(value));
    }
    for blob in &record.blobs {
        let _ = writeln!(
            out,
            "blob:        {} {} bytes blake3:{} ({})",
            e(&blob.name),
            blob.size,
            blob.digest,
            blob.storage
        );
    }
    print(&out)
}

/// `stowage show NAME`.
pub fn show(host: &Host, name: &str) -> Result<()> {
    let (rendering, skipped) = host.describe_artifact(name)?;
    warn_skipped(&skipped);
    print(&format!("{rendering}\n"))
}

/// `stowage rm NAME`.
pub fn rm(host: &Host, name: &str) -> Result<()> {
    let removed = host.store()?.remove(name)?;
    print(&format!("removed {}\n", escape_control(removed.name())))
}

/// `stowage gc`.
pub fn gc(host: &Host) -> Result<()> {
    let report = host.store()?.gc()?;
    print(&format!(
        "gc: removed {} blob files and {} packs, compacted {} packs, removed {} stale temp files; freed {} bytes\n",
        report.blob_files_removed,
        report.packs_removed,
        report.packs_compacted,
        report.temp_files_removed,
        report.bytes_freed
    ))
}

/// `stowage verify`.
pub fn verify(host: &Host) -> Result<()> {
    let report = host.store()?.verify()?;
    let mut out = String::new();
    for issue in &report.issues {
        let artifact = escape_control(&issue.artifact);
        let error = issue.error.to_string();
        let error = escape_control(&error);
        match &issue.blob {
            Some(blob) => {
                let _ = writeln!(out, "{artifact} / {}: {error}", escape_control(blob));
            }
            None => {
                let _ = writeln!(out, "{artifact}: {error}");
            }
        }
    }
    let _ = writeln!(
        out,
        "verified {} artifacts, {} blobs, {} bytes: {} problems",
        report.artifacts,
        report.blobs,
        report.bytes,
        report.issues.len()
    );
    print(&out)?;
    if !report.issues.is_empty() {
        bail!("verify found {} problems", report.issues.len());
    }
    Ok(())
}
