//! What reading, toggling or editing the configuration fails with: one
//! [`ConfigError`] variant per failure, each one line, most of them at a
//! [`Location`] (`PATH:LINE:COLUMN`).
//!
//! Decision: lines and columns are 1-based; columns count characters, not
//! bytes, and a leading byte-order mark is not counted.
//! Decision: I/O errors are part of the message (not a `#[source]`), since
//! the CLI prints the whole chain on one line.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

/// A position in a config file: `PATH:LINE:COLUMN`, both 1-based.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// The config file, as given.
    pub path: PathBuf,
    /// Line, from 1.
    pub line: usize,
    /// Column in characters, from 1.
    pub column: usize,
}

impl Location {
    /// The location of byte `offset` in `text` (clamped to its end).
    pub(super) fn at(path: &Path, text: &str, offset: usize) -> Location {
        let bytes = text.as_bytes();
        let before = bytes.get(..offset).unwrap_or(bytes);
        let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
        let line_start = before
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |i| i + 1);
        let this_line = before.get(line_start..).unwrap_or_default();
        // Count characters: every byte that is not a UTF-8 continuation byte.
        let mut column = this_line.iter().filter(|&&b| b & 0xC0 != 0x80).count() + 1;
        if line_start == 0 && text.starts_with('\u{feff}') && before.len() >= 3 {
            column -= 1;
        }
        Location {
            path: path.to_path_buf(),
            line,
            column,
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.path.display(), self.line, self.column)
    }
}

/// Everything reading, toggling or editing the configuration can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A config file named explicitly (`--config`, `STOWAGE_CONFIG`) does not exist.
    #[error("config file {} not found", path.display())]
    NotFound {
        /// The path as given.
        path: PathBuf,
    },
    /// The config file exists but could not be read.
    #[error("cannot read config file {}: {error}", path.display())]
    Read {
        /// The path as given.
        path: PathBuf,
        /// What the OS said.
        error: io::Error,
    },
    /// The file is not UTF-8; the location is the first bad byte.
    #[error("{at}: invalid utf-8")]
    InvalidUtf8 {
        /// Where the first invalid byte is.
        at: Location,
    },
    /// The file is not valid TOML (including duplicate keys and tables).
    #[error("{at}: {message}")]
    Syntax {
        /// Where the parser stopped.
        at: Location,
        /// The parser's message, on one line.
        message: String,
    },
    /// A known key has a value of the wrong type.
    #[error("{at}: {key} must be {expected}, found {found}")]
    WrongType {
        /// Where the value is.
        at: Location,
        /// The dotted key, e.g. `plugins.arrow.enabled`.
        key: String,
        /// What it must be, with its article (`a boolean`).
        expected: &'static str,
        /// The TOML type found (`string`).
        found: &'static str,
    },
    /// A string that must not be empty is.
    #[error("{at}: {key} must not be empty")]
    EmptyValue {
        /// Where the value is.
        at: Location,
        /// The dotted key.
        key: String,
    },
    /// `version` is not a semver requirement.
    #[error("{at}: {key} {value:?} is not a valid semver requirement: {reason}")]
    BadVersionReq {
        /// Where the value is.
        at: Location,
        /// The dotted key.
        key: String,
        /// The requirement as written.
        value: String,
        /// What the semver parser said.
        reason: String,
    },
    /// `library` is not a file stem.
    #[error("{at}: {key} {value:?} must be a file stem, without '/' or '\\'")]
    BadLibrary {
        /// Where the value is.
        at: Location,
        /// The dotted key.
        key: String,
        /// The value as written.
        value: String,
    },
    /// `[store] url` is not a `file://` or `s3://bucket/prefix` URL.
    #[error("{at}: {key} {value:?} is not a store URL: {reason}")]
    BadStoreUrl {
        /// Where the value is.
        at: Location,
        /// The dotted key.
        key: String,
        /// The value as written.
        value: String,
        /// What is wrong.
        reason: String,
    },
    /// `sha256` is not 64 hex characters.
    #[error("{at}: {key} must be 64 hex characters, found {found}")]
    BadSha256 {
        /// Where the value is.
        at: Location,
        /// The dotted key.
        key: String,
        /// What is wrong (`63 characters`, `non-hex character 'g'`).
        found: String,
    },
    /// A value outside the set or range a key accepts (`isolation`,
    /// `timeout_ms`, `max_memory_mb`).
    #[error("{at}: {key} {value} is not valid: expected {expected}")]
    BadValue {
        /// Where the value is.
        at: Location,
        /// The dotted key.
        key: String,
        /// The value as written (strings quoted).
        value: String,
        /// What the key accepts.
        expected: &'static str,
    },
    /// A `[plugins.NAME]` table whose name is not `[A-Za-z0-9_-]+`.
    #[error("{at}: plugin name {name:?} must match [A-Za-z0-9_-]+")]
    BadPluginName {
        /// Where the name is.
        at: Location,
        /// The name as written.
        name: String,
    },
    /// A plugin name given to [`set_enabled`](super::set_enabled) is not `[A-Za-z0-9_-]+`.
    #[error("invalid plugin name {name:?}: must match [A-Za-z0-9_-]+")]
    InvalidName {
        /// The name as given.
        name: String,
    },
    /// A `STOWAGE_PLUGINS` item starts with neither `+` nor `-`.
    #[error("STOWAGE_PLUGINS item {item:?} must start with + or -")]
    ToggleMissingSign {
        /// The item, trimmed.
        item: String,
    },
    /// A `STOWAGE_PLUGINS` item is a bare `+` or `-`.
    #[error("STOWAGE_PLUGINS item {item:?} has no plugin name")]
    ToggleEmptyName {
        /// The item, trimmed.
        item: String,
    },
    /// A `STOWAGE_PLUGINS` item names something that cannot be a plugin.
    #[error("STOWAGE_PLUGINS item {item:?}: plugin name must match [A-Za-z0-9_-]+")]
    ToggleBadName {
        /// The item, trimmed.
        item: String,
    },
    /// [`set_enabled`](super::set_enabled) cannot edit this form of table automatically.
    #[error("{at}: cannot set {key} automatically: {reason}")]
    EditUnsupported {
        /// Where the table is.
        at: Location,
        /// The dotted key that would be set.
        key: String,
        /// Why not, and what to do instead.
        reason: &'static str,
    },
    /// The edited text did not read back as intended (nothing was written).
    #[error("editing {} went wrong ({detail}); file left unchanged", path.display())]
    EditCheck {
        /// The config file.
        path: PathBuf,
        /// What did not read back.
        detail: String,
    },
    /// Writing the edited file failed (the original is left in place).
    #[error("cannot write config file {}: {error}", path.display())]
    Write {
        /// The path as given.
        path: PathBuf,
        /// What the OS said.
        error: io::Error,
    },
}
