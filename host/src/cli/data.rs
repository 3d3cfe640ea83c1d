//! The data commands: `put`, `get`, `ls`, `inspect`, `show`, `rm`, `gc`,
//! `verify`.
//!
//! Decision: `get` streams its export to where `-o` points, following the
//! rules of [`super::output`] (atomic replace of files, write-through for
//! devices and FIFOs, never a directory). `get --raw` of a one-blob
//! artifact writes that blob; of a multi-blob artifact it needs `-o DIR`
//! and writes one file per blob, the directory renamed into place whole.
//! Decision: `put FILE` maps a regular file and spools stdin and other
//! streams to the store's `tmp/` first ([`stowage::store::open_input`]);
//! `put --json` reads at most [`JSON_INPUT_LIMIT`] (64 MiB), parses the
//! document into a value and hands it to priority dispatch exactly as
//! `Host::save` would, recording the file as `source`.
//! Decision: `verify` prints every problem on stdout and then fails with one
//! summary line, so scripts see a non-zero exit and people see the list.
//! Decision: human-readable listings (`ls`, `inspect`, `rm`, `verify`) print
//! every value through `stowage::text::escape_control`; `ls` marks a record
//! this build cannot read with `! unreadable: REASON` in place of its
//! columns, and `ls --json` gives it as `{"name": …, "error": …}`.

use std::fmt::Write as _;
use std::io::{self, IsTerminal, Write};
use std::path::Path;

use anyhow::{bail, Result};
use indicatif::{ProgressBar, ProgressStyle};
use stowage::store::open_input;
use stowage::text::escape_control;
use stowage::{Host, Record, Value};

use super::output::{write_dir, FileOutput};
use super::{print, read_limited, warn_skipped, JSON_INPUT_LIMIT};

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

/// `stowage put NAME FILE [--json]`.
pub fn put(
    host: &Host,
    name: &str,
    file: &Path,
    json_input: bool,
    options: Vec<(String, String)>,
) -> Result<()> {
    let source = file.display().to_string();
    let saved = if json_input {
        let value = read_json(name, file)?;
        host.save_from(name, &value, &options, &source)?
    } else {
        let store = host.store()?;
        let input = open_input(&store, file)?;
        let bar = progress_bar(input.len() as u64, &format!("put {name}"));
        let saved = host.put_file_with(name, &input, None, &options, &source, &|written| {
            bar.set_position(written)
        })?;
        bar.finish_and_clear();
        saved
    };
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

/// The value of a `put --json` input: at most [`JSON_INPUT_LIMIT`] bytes of
/// one JSON document.
fn read_json(name: &str, file: &Path) -> Result<Value> {
    let Some(bytes) = read_limited(file, JSON_INPUT_LIMIT)? else {
        bail!(
            "cannot store {name}: {} is larger than {} MiB, the limit of put --json",
            file.display(),
            JSON_INPUT_LIMIT / (1024 * 1024)
        );
    };
    if bytes.is_empty() {
        let input = file.display().to_string();
        return Err(stowage::Error::storing(name, stowage::Error::EmptyInput { input }).into());
    }
    let json: serde_json::Value = match serde_json::from_slice(&bytes) {
        Ok(json) => json,
        Err(error) => bail!(
            "cannot store {name}: {} is not a JSON document: {error}",
            file.display()
        ),
    };
    Value::from_json(&json).map_err(|error| stowage::Error::storing(name, error).into())
}

/// `stowage get NAME [-o PATH] [--raw]`: streams the export to its target
/// (rules in [`super::output`]).
pub fn get(host: &Host, name: &str, output: Option<&Path>, raw: bool) -> Result<()> {
    // Look the name up before opening the output: an unknown name must not
    // create files or wait on a FIFO for a reader.
    host.store()?.get(name)?;
    if raw {
        return get_raw(host, name, output);
    }
    let mut out = FileOutput::open(output)?;
    let exported = host.export_artifact(name, &mut out);
    if let Some(error) = out.take_error() {
        return Err(error.into());
    }
    let (_, skipped) = exported?;
    out.finish()?;
    warn_skipped(&skipped);
    Ok(())
}

fn get_raw(host: &Host, name: &str, output: Option<&Path>) -> Result<()> {
    let (record, blobs) = host.load_raw(name, stowage::Verify::Hash)?;
    match (blobs.as_slice(), output) {
        ([(_, data)], output) => {
            let mut out = FileOutput::open(output)?;
            if let Err(error) = out.write_all(data) {
                return Err(match out.take_error() {
                    Some(error) => error.into(),
                    None => error.into(),
                });
            }
            Ok(out.finish()?)
        }
        (_, Some(dir)) if dir != Path::new("-") => {
            let files: Vec<(&str, &[u8])> = blobs
                .iter()
                .map(|(blob, data)| (blob.as_str(), &data[..]))
                .collect();
            write_dir(dir, &record.name, &files)?;
            print(&format!(
                "wrote {} blobs of {} to {}\n",
                blobs.len(),
                record.name,
                dir.display()
            ))
        }
        _ => bail!(
            "{} has {} blobs; give -o DIR to write one file per blob",
            record.name,
            blobs.len()
        ),
    }
}

fn total_size(record: &Record) -> u64 {
    record.blobs.iter().map(|b| b.size).sum()
}

/// `stowage ls [--json]`: streams the store's records in name order to
/// stdout, so memory does not grow with the store. The table makes two
/// passes (the first only measures the name column).
pub fn ls(host: &Host, json_output: bool) -> Result<()> {
    let store = host.store()?;
    let mut out = io::BufWriter::with_capacity(1 << 16, io::stdout().lock());
    if json_output {
        // The same text as `{:#}` of the whole array: each element pretty
        // printed and indented by two spaces.
        let mut first = true;
        for item in store.records()? {
            let value = match item {
                Ok(record) => record.to_json(),
                Err(bad) => serde_json::json!({ "name": bad.name, "error": bad.reason }),
            };
            out.write_all(if first { b"[\n" } else { b",\n" })?;
            first = false;
            let text = format!("{value:#}");
            for (i, line) in text.lines().enumerate() {
                if i > 0 {
                    out.write_all(b"\n")?;
                }
                out.write_all(b"  ")?;
                out.write_all(line.as_bytes())?;
            }
        }
        out.write_all(if first { b"[]\n" } else { b"\n]\n" })?;
        out.flush()?;
        return Ok(());
    }
    let width = store
        .records()?
        .map(|item| {
            let name = match &item {
                Ok(record) => &record.name,
                Err(bad) => &bad.name,
            };
            escape_control(name).chars().count()
        })
        .max()
        .unwrap_or(4)
        .max(4);
    writeln!(
        out,
        "{:width$}  {:12} {:22} {:>12}  {:20} CREATED",
        "NAME", "TYPE", "ENCODING", "BYTES", "WRITTEN BY"
    )?;
    for item in store.records()? {
        let r = match item {
            Ok(record) => record,
            Err(bad) => {
                let name = escape_control(&bad.name);
                writeln!(
                    out,
                    "{name:width$}  ! unreadable: {}",
                    escape_control(&bad.reason)
                )?;
                continue;
            }
        };
        let name = escape_control(&r.name);
        let m = &r.meta;
        writeln!(
            out,
            "{name:width$}  {:12} {:22} {:>12}  {:20} {}",
            escape_control(&m.obj_type),
            escape_control(&format!("{} v{}", m.encoding, m.encoding_version)),
            total_size(&r),
            escape_control(&format!("{} {}", m.serializer, m.serializer_version)),
            escape_control(&r.created)
        )?;
    }
    out.flush()?;
    Ok(())
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
