//! The data commands: `put`, `get`, `ls`, `inspect`, `show`, `rm`, `gc`,
//! `verify`.
//!
//! Decision: `get -o FILE` writes a temp file beside FILE and renames it
//! into place, so an interrupted `get` never leaves half a file under the
//! final name. `get --raw` of a one-blob artifact writes that blob; of a
//! multi-blob artifact it needs `-o DIR` and writes one file per blob.
//! Decision: `verify` prints every problem on stdout and then fails with one
//! summary line, so scripts see a non-zero exit and people see the list.

use std::fmt::Write as _;
use std::fs;
use std::io::{self, IsTerminal, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use stowage::fallback::FALLBACK_NAME;
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
    let records = host.store()?.list();
    if json_output {
        let items: Vec<serde_json::Value> = records.iter().map(Record::to_json).collect();
        return print(&format!("{:#}\n", serde_json::Value::Array(items)));
    }
    let width = records
        .iter()
        .map(|r| r.name.len())
        .max()
        .unwrap_or(4)
        .max(4);
    let mut out = format!(
        "{:width$}  {:12} {:22} {:>12}  {:20} CREATED\n",
        "NAME", "TYPE", "ENCODING", "BYTES", "WRITTEN BY"
    );
    for r in &records {
        let _ = writeln!(
            out,
            "{:width$}  {:12} {:22} {:>12}  {:20} {}",
            r.name,
            r.meta.obj_type,
            format!("{} v{}", r.meta.encoding, r.meta.encoding_version),
            total_size(r),
            format!("{} {}", r.meta.serializer, r.meta.serializer_version),
            r.created
        );
    }
    print(&out)
}

/// `stowage inspect NAME [--json]`.
pub fn inspect(host: &Host, name: &str, json_output: bool) -> Result<()> {
    let record = host.store()?.get(name)?;
    if json_output {
        return print(&format!("{:#}\n", record.to_json()));
    }
    let mut out = String::new();
    let _ = writeln!(out, "name:        {}", record.name);
    let _ = writeln!(out, "type:        {}", record.meta.obj_type);
    let _ = writeln!(
        out,
        "encoding:    {} v{}",
        record.meta.encoding, record.meta.encoding_version
    );
    let _ = writeln!(
        out,
        "written by:  {} {}",
        record.meta.serializer, record.meta.serializer_version
    );
    let _ = writeln!(out, "created:     {}", record.created);
    let _ = writeln!(out, "record:      format v{}", record.format_version);
    for (key, value) in &record.meta.serializer_info {
        let _ = writeln!(out, "info:        {key} = {value}");
    }
    for blob in &record.blobs {
        let _ = writeln!(
            out,
            "blob:        {} {} bytes blake3:{} ({})",
            blob.name, blob.size, blob.digest, blob.storage
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
    let record = host.store()?.remove(name)?;
    print(&format!("removed {}\n", record.name))
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
        let _ = writeln!(out, "{} / {}: {}", issue.artifact, issue.blob, issue.error);
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
