//! The config file as text and as a TOML document, shared by reading
//! (`read.rs`) and editing (`edit.rs`): a missing file is `None`, a parse
//! error is one `PATH:LINE:COLUMN: message` line, and keys and TOML types are
//! spelled the same way in every message.

use std::fs;
use std::io;
use std::path::Path;

use toml_edit::{ImDocument, Item, Value};

use super::error::{ConfigError, Location};
use crate::serializer::is_valid_plugin_name;

/// Reads a config file; `None` when it does not exist.
pub(super) fn read_text(path: &Path) -> Result<Option<String>, ConfigError> {
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(error) => {
            return Err(ConfigError::Read {
                path: path.to_path_buf(),
                error,
            })
        }
    };
    match String::from_utf8(bytes) {
        Ok(text) => Ok(Some(text)),
        Err(error) => {
            let valid = error.utf8_error().valid_up_to();
            let prefix = error.as_bytes().get(..valid).unwrap_or_default();
            let prefix = std::str::from_utf8(prefix).unwrap_or_default();
            Err(ConfigError::InvalidUtf8 {
                at: Location::at(path, prefix, valid),
            })
        }
    }
}

/// Parses TOML keeping spans, turning a parse error into `PATH:L:C: message`.
pub(super) fn parse_document<'t>(
    text: &'t str,
    path: &Path,
) -> Result<ImDocument<&'t str>, ConfigError> {
    ImDocument::parse(text).map_err(|error| ConfigError::Syntax {
        at: Location::at(path, text, error.span().map_or(0, |span| span.start)),
        message: one_line(error.message()),
    })
}

/// A multi-line parser message as one line.
pub(super) fn one_line(message: &str) -> String {
    message
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

/// `parent.key`, quoting `key` when it is not a bare key.
pub(super) fn dotted(parent: &str, key: &str) -> String {
    let key = if is_valid_plugin_name(key) {
        key.to_owned()
    } else {
        format!("{key:?}")
    };
    if parent.is_empty() {
        key
    } else {
        format!("{parent}.{key}")
    }
}

/// The TOML type of an item, as named in messages.
pub(super) fn type_name(item: &Item) -> &'static str {
    match item {
        Item::None => "nothing",
        Item::Table(_) | Item::Value(Value::InlineTable(_)) => "table",
        Item::ArrayOfTables(_) => "array of tables",
        Item::Value(Value::String(_)) => "string",
        Item::Value(Value::Integer(_)) => "integer",
        Item::Value(Value::Float(_)) => "float",
        Item::Value(Value::Boolean(_)) => "boolean",
        Item::Value(Value::Datetime(_)) => "datetime",
        Item::Value(Value::Array(_)) => "array",
    }
}
