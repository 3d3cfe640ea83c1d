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
//! Decision (composites, SPEC §15): `get NAME -o DIR` of a composite
//! writes `skeleton.json` (the structure, each part as `{"$part": PATH,
//! "$file": FILE, "$kind": KIND}`, plus `"$keys"` for a map of tensors
//! grouped into one part; user keys starting with `$` get one more `$`)
//! and each part as its standard file named by
//! [`stowage::composite::part_file_names`] (never a path outside DIR),
//! into a directory created whole like `--raw`'s. Each part is exported
//! into memory first (the directory is written at once): a composite's
//! export is not streamed. `put NAME DIR` reads such a directory back: each
//! part file (a regular file directly in DIR, symlinks refused) is ingested
//! by the plugin whose `sniff` claims it, as `put FILE` would, and
//! `explain DIR` shows that decision part by part.
//! Decision: human-readable listings (`ls`, `inspect`, `rm`, `verify`) print
//! every value through `stowage::text::escape_control`; `ls` marks a record
//! this build cannot read with `! unreadable: REASON` in place of its
//! columns, and `ls --json` gives it as `{"name": …, "error": …}`.

use std::fmt::Write as _;
use std::io::{self, IsTerminal, Write};
use std::path::Path;

use anyhow::{bail, Result};
use indicatif::{ProgressBar, ProgressStyle};
use stowage::composite::{
    file_reference, part_file_names, skeleton_from_json, Skeleton, COMPOSITE_ENCODING,
    SKELETON_FILE,
};
use stowage::store::{map_input, open_input};
use stowage::text::escape_control;
use stowage::{Buffer, DispatchError, Host, Kind, Record, Value, WrittenBy};

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
    let saved = if !json_input && file.is_dir() {
        put_dir(host, name, file)?
    } else if json_input {
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
    let record = host.store()?.get(name)?;
    if raw {
        return get_raw(host, name, output);
    }
    if record.meta.encoding == COMPOSITE_ENCODING {
        return get_composite(host, name, output);
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

/// `get NAME -o DIR` of a composite (see the module docs).
fn get_composite(host: &Host, name: &str, output: Option<&Path>) -> Result<()> {
    let Some(dir) = output.filter(|p| *p != Path::new("-")) else {
        bail!("{name} is a composite of several files; give -o DIR to write them");
    };
    let (_, blobs) = host.load_raw(name, stowage::Verify::Hash)?;
    let blobs: Vec<(String, Buffer)> = blobs
        .into_iter()
        .map(|(blob, data)| (blob, Buffer::from_owner(data)))
        .collect();
    let skeleton = Skeleton::decode(&blobs)
        .map_err(|e| anyhow::anyhow!("cannot load {name}: composite: {}", e.message))?;
    let names = part_file_names(&skeleton.parts);
    let json = skeleton
        .to_json(&|i, _| file_reference(&skeleton, i, &names[i]))
        .map_err(|e| anyhow::anyhow!("cannot export {name}: {e}; use --raw"))?;
    let mut files: Vec<(String, Vec<u8>)> = Vec::with_capacity(names.len() + 1);
    let mut text = serde_json::to_vec_pretty(&json)?;
    text.push(b'\n');
    files.push((SKELETON_FILE.to_owned(), text));
    for (part, file) in skeleton.parts.iter().zip(&names) {
        let (meta, part_blobs) = Skeleton::part_input(part, &blobs);
        let writer = WrittenBy::new(&part.serializer, &part.serializer_version);
        let mut bytes = Vec::new();
        let exported = host
            .export(&meta, &writer, &part_blobs, &mut bytes)
            .map_err(|error| match error {
                stowage::Error::Dispatch(error) => stowage::Error::Dispatch(DispatchError::Part {
                    path: part.path.clone(),
                    error: Box::new(error),
                }),
                other => other,
            })
            .map_err(|error| stowage::Error::loading(name, error))?;
        warn_skipped(&exported.skipped);
        files.push((file.clone(), bytes));
    }
    let refs: Vec<(&str, &[u8])> = files
        .iter()
        .map(|(file, bytes)| (file.as_str(), bytes.as_slice()))
        .collect();
    write_dir(dir, name, &refs)?;
    print(&format!(
        "wrote {} parts of {} and {SKELETON_FILE} to {}\n",
        skeleton.parts.len(),
        escape_control(name),
        dir.display()
    ))
}

/// The skeleton and part files of a directory export, each file mapped.
type DirInput = (
    Kind,
    rmpv::Value,
    Vec<(stowage::composite::FileRef, stowage::store::Input)>,
);

/// Reads `DIR/skeleton.json` and maps the part files it names; `what`
/// prefixes errors (`cannot store NAME`).
fn read_dir_input(dir: &Path, what: &str) -> Result<DirInput> {
    let path = dir.join(SKELETON_FILE);
    let Some(bytes) = read_limited(&path, JSON_INPUT_LIMIT)? else {
        bail!("{what}: {} is larger than 64 MiB", path.display());
    };
    let json: serde_json::Value = match serde_json::from_slice(&bytes) {
        Ok(json) => json,
        Err(error) => bail!("{what}: {} is not a JSON document: {error}", path.display()),
    };
    let kind = match &json {
        serde_json::Value::Array(_) => Kind::List,
        serde_json::Value::Object(map) if !map.contains_key("$part") => Kind::Map,
        _ => bail!("{what}: {} holds no list or map", path.display()),
    };
    let (tree, refs) = skeleton_from_json(&json)
        .map_err(|e| anyhow::anyhow!("{what}: {}: {e}", path.display()))?;
    let mut files = Vec::with_capacity(refs.len());
    for file_ref in refs {
        let file = dir.join(&file_ref.file);
        match std::fs::symlink_metadata(&file) {
            Ok(meta) if meta.is_file() => {}
            Ok(_) => bail!("{what}: {} is not a regular file", file.display()),
            Err(error) => bail!("{what}: cannot read {}: {error}", file.display()),
        }
        let input = map_input(&file)?;
        files.push((file_ref, input));
    }
    Ok((kind, tree, files))
}

/// `put NAME DIR`: a composite's directory export read back.
fn put_dir(host: &Host, name: &str, dir: &Path) -> Result<stowage::Saved> {
    let (kind, tree, files) = read_dir_input(dir, &format!("cannot store {name}"))?;
    let files: Vec<(stowage::composite::FileRef, &[u8])> = files
        .iter()
        .map(|(file_ref, input)| (file_ref.clone(), &input[..]))
        .collect();
    Ok(host.put_composite(name, kind, &tree, &files, &dir.display().to_string())?)
}

/// `explain DIR`: for each part file of a directory export, what `put`
/// would ask and who would take it.
pub fn explain_dir(host: &Host, dir: &Path) -> Result<()> {
    let (_, _, files) = read_dir_input(dir, &format!("cannot explain {}", dir.display()))?;
    let table = &host.snapshot().table;
    let mut out = String::new();
    for (file_ref, input) in &files {
        let prefix = &input[..input.len().min(stowage_plugin_api::SNIFF_PREFIX_LEN)];
        let attempts = table.explain_file(prefix);
        out.push_str(&super::explanation(
            &format!("part {} ({})", escape_control(&file_ref.path), file_ref.file),
            &attempts,
            "the first active plugin, in priority order (ties by name), whose sniff recognises the file",
        ));
    }
    print(&out)
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
    if let Some(caller_type) = &m.caller_type {
        let _ = writeln!(out, "caller type: {}", e(caller_type));
    }
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
    for part in &m.parts {
        let blobs: Vec<&str> = part.blobs.iter().map(|(_, blob)| blob.as_str()).collect();
        let _ = writeln!(
            out,
            "part:        {} = {}, {} v{} by {} {} ({})",
            e(&part.path),
            e(&part.kind),
            e(&part.encoding),
            part.encoding_version,
            e(&part.serializer),
            e(&part.serializer_version),
            e(&blobs.join(", "))
        );
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
