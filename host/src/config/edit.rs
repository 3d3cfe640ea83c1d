//! `stowage enable|disable NAME`: [`set_enabled`] changes one value, or
//! adds one line or table, in `plugins.toml` in place and writes it
//! atomically.
//!
//! Invariant: [`set_enabled`] leaves every byte outside the edited value (or
//! the one inserted line or table) as it was, re-parses its result before
//! writing, never writes a partial file, and never touches a file that does
//! not parse.
//!
//! Decision: [`set_enabled`] checks only TOML syntax and the shape of
//! `plugins.NAME`, so a file with an unrelated semantic error can still be
//! toggled; a non-boolean `enabled` is overwritten. A table that exists only
//! implicitly (say, only `[plugins.NAME.options]`) gets a `[plugins.NAME]`
//! table appended and the outcome is [`EditOutcome::Changed`];
//! [`EditOutcome::AddedTable`] means `plugins.NAME` did not exist at all.
//! Decision: [`set_enabled`] writes through a symlinked config (the link's
//! target is replaced), keeps the file's permissions, refuses a read-only
//! file, and uses the file's line ending (`\r\n` if it has any). Two
//! concurrent edits: the last writer wins.

use std::fs;
use std::io::{self, Write as _};
use std::ops::Range;
use std::path::Path;

use toml_edit::{ImDocument, Item, Key, Table, Value};

use super::document::{one_line, parse_document, read_text, type_name};
use super::error::{ConfigError, Location};
use crate::serializer::is_valid_plugin_name;

/// What [`set_enabled`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EditOutcome {
    /// The value of `enabled` was changed, or an `enabled` key was added to
    /// the existing table.
    Changed,
    /// `enabled` already had that value; the file was not written.
    AlreadySet,
    /// `plugins.NAME` did not exist; a `[plugins.NAME]` table was appended
    /// (the caller should warn if the name is unknown).
    AddedTable,
}

/// `stowage enable|disable NAME`: sets `enabled` in `[plugins.NAME]` of the
/// file at `path`, changing nothing else.
///
/// An existing `enabled` gets its value replaced (its comment and spacing
/// stay); a table without it gets `enabled = …` as its first key; a missing
/// table is appended at the end, and a missing file is created holding just
/// that table. Dotted keys (`arrow.priority = 1`) and inline tables
/// (`arrow = { priority = 1 }`) are edited in their own form. The result is
/// re-parsed, then written to `PATH.tmp-<pid>`, synced and renamed over the
/// file. A file that does not parse is an error and is left untouched.
pub fn set_enabled(path: &Path, name: &str, enabled: bool) -> Result<EditOutcome, ConfigError> {
    if !is_valid_plugin_name(name) {
        return Err(ConfigError::InvalidName {
            name: name.to_owned(),
        });
    }
    let original = read_text(path)?;
    let text = original.as_deref().unwrap_or("");
    match edit_enabled(text, path, name, enabled)? {
        None => Ok(EditOutcome::AlreadySet),
        Some((edited, outcome)) => {
            write_atomic(path, &edited)?;
            Ok(outcome)
        }
    }
}

/// The text of `text` with `plugins.NAME.enabled` set; `None` when it already is.
fn edit_enabled(
    text: &str,
    path: &Path,
    name: &str,
    enabled: bool,
) -> Result<Option<(String, EditOutcome)>, ConfigError> {
    let doc = parse_document(text, path)?;
    let value = if enabled { "true" } else { "false" };
    let nl = if text.contains("\r\n") { "\r\n" } else { "\n" };
    let table_key = format!("plugins.{name}");
    let enabled_key = format!("{table_key}.enabled");
    let at =
        |span: Option<Range<usize>>| Location::at(path, text, span.map_or(0, |span| span.start));
    let wrong_type = |key: &Key, item: &Item, dotted: &str, expected| ConfigError::WrongType {
        at: at(item.span().or_else(|| key.span())),
        key: dotted.to_owned(),
        expected,
        found: type_name(item),
    };
    let unsupported = |span, reason| ConfigError::EditUnsupported {
        at: at(span),
        key: enabled_key.clone(),
        reason,
    };
    let append_table = || {
        let mut out = text.to_owned();
        if !out.is_empty() {
            if !out.ends_with('\n') {
                out.push_str(nl);
            }
            out.push_str(nl);
        }
        out.push_str(&format!("[plugins.{name}]{nl}enabled = {value}{nl}"));
        out
    };

    let root = doc.as_table();
    let (edited, outcome) = match root.get_key_value("plugins") {
        None => (append_table(), EditOutcome::AddedTable),
        Some((plugins_key, plugins_item)) => {
            let plugins = plugins_item
                .as_table_like()
                .ok_or_else(|| wrong_type(plugins_key, plugins_item, "plugins", "a table"))?;
            match plugins.get_key_value(name) {
                None if plugins_item.is_inline_table() => {
                    return Err(unsupported(
                        plugins_item.span(),
                        "plugins is an inline table; add the plugin to it by hand",
                    ))
                }
                None => (append_table(), EditOutcome::AddedTable),
                Some((key, item)) => {
                    let table = item
                        .as_table_like()
                        .ok_or_else(|| wrong_type(key, item, &table_key, "a table"))?;
                    let edited = match table.get_key_value("enabled") {
                        Some((_, current)) if current.as_bool() == Some(enabled) => {
                            return Ok(None)
                        }
                        Some((enabled_key_item, current)) => {
                            let span = match current {
                                Item::Value(v) => v.span(),
                                _ => {
                                    return Err(wrong_type(
                                        enabled_key_item,
                                        current,
                                        &enabled_key,
                                        "a boolean",
                                    ))
                                }
                            };
                            let span = span.ok_or_else(|| {
                                unsupported(key.span(), "its value has no position")
                            })?;
                            splice(text, span, value)
                        }
                        None => match item {
                            Item::Table(t) if t.is_dotted() => {
                                let (key_start, value_end) =
                                    last_dotted_line(t).ok_or_else(|| {
                                        unsupported(key.span(), "no dotted key has a position")
                                    })?;
                                let line_start = text
                                    .get(..key_start)
                                    .and_then(|before| before.rfind('\n'))
                                    .map_or(0, |i| i + 1);
                                let prefix = text.get(line_start..key_start).unwrap_or_default();
                                insert_line_after(
                                    text,
                                    value_end,
                                    &format!("{prefix}enabled = {value}"),
                                    nl,
                                )
                            }
                            Item::Table(t) => match t.span() {
                                Some(span) if !t.is_implicit() => insert_line_after(
                                    text,
                                    span.start,
                                    &format!("enabled = {value}"),
                                    nl,
                                ),
                                _ => append_table(),
                            },
                            Item::Value(Value::InlineTable(t)) if !t.is_dotted() => {
                                let span = t
                                    .span()
                                    .filter(|span| {
                                        text.get(span.clone()).is_some_and(|s| s.starts_with('{'))
                                    })
                                    .ok_or_else(|| {
                                        unsupported(key.span(), "the inline table has no position")
                                    })?;
                                if t.is_empty() {
                                    splice(text, span, &format!("{{ enabled = {value} }}"))
                                } else {
                                    let after_brace = span.start + 1;
                                    splice(
                                        text,
                                        after_brace..after_brace,
                                        &format!(" enabled = {value},"),
                                    )
                                }
                            }
                            _ => {
                                return Err(unsupported(
                                    key.span(),
                                    "dotted keys inside an inline table; edit it by hand",
                                ))
                            }
                        },
                    };
                    (edited, EditOutcome::Changed)
                }
            }
        }
    };

    // Read the result back before anything is written.
    let check = ImDocument::parse(edited.as_str()).map_err(|error| ConfigError::EditCheck {
        path: path.to_path_buf(),
        detail: one_line(error.message()),
    })?;
    let read_back = check
        .get("plugins")
        .and_then(|plugins| plugins.get(name))
        .and_then(|table| table.get("enabled"))
        .and_then(Item::as_bool);
    if read_back != Some(enabled) {
        return Err(ConfigError::EditCheck {
            path: path.to_path_buf(),
            detail: format!("{enabled_key} did not read back as {value}"),
        });
    }
    Ok(Some((edited, outcome)))
}

/// For a table made of dotted keys: (start of one of its direct keys, end of
/// its last value), both byte offsets, looking only at values on its own
/// lines (not at `[sub.tables]` defined elsewhere).
fn last_dotted_line(table: &Table) -> Option<(usize, usize)> {
    fn subtree_end(table: &Table) -> Option<usize> {
        table
            .iter()
            .filter_map(|(_, item)| match item {
                Item::Value(v) => v.span().map(|span| span.end),
                Item::Table(t) if t.is_dotted() => subtree_end(t),
                _ => None,
            })
            .max()
    }
    let mut best: Option<(usize, usize)> = None;
    for (name, _) in table.iter() {
        let Some((key, item)) = table.get_key_value(name) else {
            continue;
        };
        let end = match item {
            Item::Value(v) => v.span().map(|span| span.end),
            Item::Table(t) if t.is_dotted() => subtree_end(t),
            _ => None,
        };
        if let (Some(key_span), Some(end)) = (key.span(), end) {
            if best.is_none_or(|(_, best_end)| end > best_end) {
                best = Some((key_span.start, end));
            }
        }
    }
    best
}

/// `text` with `range` replaced by `with`.
fn splice(text: &str, range: Range<usize>, with: &str) -> String {
    let before = text.get(..range.start).unwrap_or(text);
    let after = text.get(range.end..).unwrap_or_default();
    format!("{before}{with}{after}")
}

/// `text` with `line` inserted as a new line after the line holding byte `offset`.
fn insert_line_after(text: &str, offset: usize, line: &str, nl: &str) -> String {
    match text.get(offset..).and_then(|rest| rest.find('\n')) {
        Some(i) => {
            let at = offset + i + 1;
            splice(text, at..at, &format!("{line}{nl}"))
        }
        None => format!("{text}{nl}{line}{nl}"),
    }
}

/// Writes `contents` to `PATH.tmp-<pid>` next to the file and renames it
/// over the file (through [`crate::fs::write_atomically`]), keeping the
/// file's permissions; a symlinked config keeps its link and gets a new
/// target.
fn write_atomic(path: &Path, contents: &str) -> Result<(), ConfigError> {
    let failed = |error| ConfigError::Write {
        path: path.to_path_buf(),
        error,
    };
    let target = match fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_symlink() => {
            fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf())
        }
        _ => path.to_path_buf(),
    };
    let Some(file_name) = target.file_name() else {
        return Err(failed(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a file name",
        )));
    };
    let permissions = fs::metadata(&target).ok().map(|meta| meta.permissions());
    if permissions.as_ref().is_some_and(|p| p.readonly()) {
        return Err(failed(io::Error::new(
            io::ErrorKind::PermissionDenied,
            "the file is read-only",
        )));
    }
    let mut tmp_name = file_name.to_os_string();
    tmp_name.push(format!(".tmp-{}", std::process::id()));
    let tmp = crate::fs::parent_dir(&target).join(tmp_name);
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    crate::fs::write_atomically(&tmp, &target, &options, |file| {
        file.write_all(contents.as_bytes())?;
        match permissions {
            Some(permissions) => file.set_permissions(permissions),
            None => Ok(()),
        }
    })
    .map_err(failed)
}
