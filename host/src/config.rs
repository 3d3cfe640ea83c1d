//! Configuration: reading `plugins.toml`, the per-process toggles, and editing
//! the file in place (SPEC §4, §11).
//!
//! This module owns:
//! - where the config file comes from ([`resolve_config_path`]: `--config PATH`,
//!   else `STOWAGE_CONFIG`, else `./plugins.toml`);
//! - reading and validating it into a [`Config`] ([`Config::load`],
//!   [`Config::load_default`], [`Config::parse`]): a malformed file is a
//!   [`ConfigError`] formatted `PATH:LINE:COLUMN: message`, an unknown key or a
//!   clamped priority is a warning line in [`Config::warnings`];
//! - the `STOWAGE_PLUGINS="-arrow,+tensor"` toggles ([`EnvToggles`]);
//! - `stowage enable|disable NAME` ([`set_enabled`]): one value changed, or one
//!   line or table added, in place, written atomically.
//!
//! It must not load libraries, look into the plugin directory or touch the
//! store: directories are resolved lexically and handed on, and whether a name
//! in a toggle is known is for the lifecycle to say.
//!
//! Invariants:
//! - nothing read from the file, the environment or the command line is
//!   unwrapped; every failure is one [`ConfigError`] of one line;
//! - [`set_enabled`] leaves every byte outside the edited value (or the one
//!   inserted line or table) as it was, re-parses its result before writing,
//!   never writes a partial file, and never touches a file that does not parse.
//!
//! Decision: lines and columns are 1-based; columns count characters, not
//! bytes, and a leading byte-order mark is not counted.
//! Decision: a wrong type or a bad value points at the value; an unknown key
//! points at the key.
//! Decision: `dir`, `library` must not be empty strings (an error); a
//! `library` is a file stem, so it must not contain `/`, `\` or NUL.
//! Decision: directories are joined onto the config path's parent as given,
//! without canonicalising; for a bare `plugins.toml` they stay relative (to the
//! working directory, which is where that file is).
//! Decision: option values keep strings as they are and turn integers, floats
//! and booleans into their Rust `Display` text (`7`, `1.5`, `true`).
//! Decision: a plugin name in the file that does not match `[A-Za-z0-9_-]+` is
//! an error (no library could ever declare it).
//! Decision: `[plugins.msgpack]` is kept as an entry; each of `version`,
//! `library`, `sha256`, `options` in it is one warning (and is not validated).
//! The table itself is not warned about, since `stowage disable msgpack`
//! writes it.
//! Decision: in `STOWAGE_PLUGINS`, a name given twice keeps only its last
//! toggle; names must be valid plugin names. An empty `STOWAGE_CONFIG` counts
//! as unset.
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
//! Decision: I/O errors are part of the message (not a `#[source]`), since
//! the CLI prints the whole chain on one line.

use std::ffi::OsStr;
use std::fmt;
use std::fs;
use std::io::{self, Write as _};
use std::ops::Range;
use std::path::{Path, PathBuf};

use semver::VersionReq;
use toml_edit::{ImDocument, Item, Key, Table, TableLike, Value};

use crate::fallback::FALLBACK_NAME;
pub use crate::fallback::FALLBACK_PRIORITY;
pub use crate::serializer::{is_valid_plugin_name, MAX_PLUGIN_PRIORITY};

/// The config file used when neither `--config` nor `STOWAGE_CONFIG` names one.
pub const DEFAULT_CONFIG_FILE: &str = "plugins.toml";

/// `[host] dir` when absent, relative to the config file.
const DEFAULT_PLUGIN_DIR: &str = "plugin-libs";
/// `[store] dir` when absent, relative to the config file.
const DEFAULT_STORE_DIR: &str = "store";

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
    fn at(path: &Path, text: &str, offset: usize) -> Location {
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
    /// A `[plugins.NAME]` table whose name is not `[A-Za-z0-9_-]+`.
    #[error("{at}: plugin name {name:?} must match [A-Za-z0-9_-]+")]
    BadPluginName {
        /// Where the name is.
        at: Location,
        /// The name as written.
        name: String,
    },
    /// A plugin name given to [`set_enabled`] is not `[A-Za-z0-9_-]+`.
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
    /// [`set_enabled`] cannot edit this form of table automatically.
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

/// The parsed `plugins.toml`, with defaults filled in.
#[derive(Debug, Clone)]
pub struct Config {
    /// The config file path as given.
    pub path: PathBuf,
    /// False when the implicit `./plugins.toml` is absent and defaults are used.
    pub exists: bool,
    /// `[host] dir`, resolved relative to the config file's directory
    /// (default `plugin-libs`).
    pub plugin_dir: PathBuf,
    /// `[host] autoload` (default true): load libraries in `plugin_dir` that
    /// have no table.
    pub autoload: bool,
    /// `[store] dir`, resolved like `plugin_dir` (default `store`).
    pub store_dir: PathBuf,
    /// The `[plugins.NAME]` tables, in file order.
    pub plugins: Vec<PluginEntry>,
    /// One line each, `PATH:LINE:COLUMN: message` naming the key: unknown
    /// keys, clamped priorities, ignored keys on the built-in fallback.
    pub warnings: Vec<String>,
}

/// One `[plugins.NAME]` table.
#[derive(Debug, Clone, PartialEq)]
pub struct PluginEntry {
    /// The table name, which is the plugin name (`[A-Za-z0-9_-]+`).
    pub name: String,
    /// `enabled` (default true).
    pub enabled: bool,
    /// `priority`, clamped into `0..=MAX_PLUGIN_PRIORITY` (with a warning);
    /// `None` keeps the plugin's own default.
    pub priority: Option<u32>,
    /// `version`: requirement on the plugin's declared version.
    pub version: Option<VersionReq>,
    /// `library`: the library file stem; `None` means [`PluginEntry::library_stem`]'s default.
    pub library: Option<String>,
    /// `sha256`: pin on the library file, 64 lowercase hex characters.
    pub sha256: Option<String>,
    /// `[plugins.NAME.options]`, in file order, values as strings.
    pub options: Vec<(String, String)>,
}

impl PluginEntry {
    /// A table with nothing set.
    fn new(name: &str) -> PluginEntry {
        PluginEntry {
            name: name.to_owned(),
            enabled: true,
            priority: None,
            version: None,
            library: None,
            sha256: None,
            options: Vec::new(),
        }
    }

    /// The library file stem: `library` if set, else `stowage_` followed by
    /// the name with `-` replaced by `_` (`my-plug` → `stowage_my_plug`).
    pub fn library_stem(&self) -> String {
        match &self.library {
            Some(library) => library.clone(),
            None => format!("stowage_{}", self.name.replace('-', "_")),
        }
    }
}

impl Config {
    /// Reads an explicitly named config file; a missing file is
    /// [`ConfigError::NotFound`].
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        match read_text(path)? {
            Some(text) => Config::parse(&text, path),
            None => Err(ConfigError::NotFound {
                path: path.to_path_buf(),
            }),
        }
    }

    /// Reads the implicit `./plugins.toml`: a missing file gives the defaults
    /// with `exists = false`; any other failure is an error.
    pub fn load_default(path: &Path) -> Result<Config, ConfigError> {
        match read_text(path)? {
            Some(text) => Config::parse(&text, path),
            None => Ok(Config::defaults(path)),
        }
    }

    /// Parses `text` as the contents of `path` (used for messages and to
    /// resolve directories; the file system is not touched).
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let doc = parse_document(text, path)?;
        let base = path.parent().unwrap_or(Path::new(""));
        let mut config = Config::defaults(path);
        config.exists = true;
        let mut reader = Reader {
            path,
            text,
            warnings: Vec::new(),
        };
        let root = doc.as_table();
        for (name, _) in root.iter() {
            let Some((key, item)) = root.get_key_value(name) else {
                continue;
            };
            match name {
                "host" => {
                    let host = reader.table(key, item, "host")?;
                    for (name, _) in host.iter() {
                        let Some((key, item)) = host.get_key_value(name) else {
                            continue;
                        };
                        let dotted = dotted("host", name);
                        match name {
                            "dir" => config.plugin_dir = base.join(reader.dir(key, item, &dotted)?),
                            "autoload" => config.autoload = reader.boolean(key, item, &dotted)?,
                            _ => reader.unknown(key, &dotted),
                        }
                    }
                }
                "store" => {
                    let store = reader.table(key, item, "store")?;
                    for (name, _) in store.iter() {
                        let Some((key, item)) = store.get_key_value(name) else {
                            continue;
                        };
                        let dotted = dotted("store", name);
                        match name {
                            "dir" => config.store_dir = base.join(reader.dir(key, item, &dotted)?),
                            _ => reader.unknown(key, &dotted),
                        }
                    }
                }
                "plugins" => {
                    let plugins = reader.table(key, item, "plugins")?;
                    for (name, _) in plugins.iter() {
                        let Some((key, item)) = plugins.get_key_value(name) else {
                            continue;
                        };
                        config.plugins.push(reader.plugin(key, item)?);
                    }
                }
                _ => reader.unknown(key, &dotted("", name)),
            }
        }
        config.warnings = reader.warnings;
        Ok(config)
    }

    /// The `[plugins.NAME]` entry for `name`, if the file has one.
    pub fn entry(&self, name: &str) -> Option<&PluginEntry> {
        self.plugins.iter().find(|entry| entry.name == name)
    }

    /// The configuration of an absent file.
    fn defaults(path: &Path) -> Config {
        let base = path.parent().unwrap_or(Path::new(""));
        Config {
            path: path.to_path_buf(),
            exists: false,
            plugin_dir: base.join(DEFAULT_PLUGIN_DIR),
            autoload: true,
            store_dir: base.join(DEFAULT_STORE_DIR),
            plugins: Vec::new(),
            warnings: Vec::new(),
        }
    }
}

/// Where the config comes from: `--config PATH`, else `STOWAGE_CONFIG`, else
/// `./plugins.toml`. The flag says whether the path was named explicitly (then
/// it must exist: use [`Config::load`], else [`Config::load_default`]). An
/// empty `STOWAGE_CONFIG` counts as unset.
pub fn resolve_config_path(flag: Option<&Path>, env: Option<&OsStr>) -> (PathBuf, bool) {
    match (flag, env) {
        (Some(flag), _) => (flag.to_path_buf(), true),
        (None, Some(env)) if !env.is_empty() => (PathBuf::from(env), true),
        _ => (PathBuf::from(DEFAULT_CONFIG_FILE), false),
    }
}

/// `STOWAGE_PLUGINS="-arrow,+tensor"`: toggles for one process, applied over
/// the file's `enabled`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EnvToggles {
    /// `(name, enabled)` in the order given; each name appears once (its last toggle).
    pub toggles: Vec<(String, bool)>,
}

impl EnvToggles {
    /// Parses a comma-separated list of `+NAME` / `-NAME` items. Whitespace
    /// around items is trimmed and empty items are ignored; anything else is
    /// an error naming the item. Whether a name is known is not checked here.
    pub fn parse(spec: &str) -> Result<EnvToggles, ConfigError> {
        let mut toggles: Vec<(String, bool)> = Vec::new();
        for item in spec
            .split(',')
            .map(str::trim)
            .filter(|item| !item.is_empty())
        {
            let (enabled, name) = if let Some(name) = item.strip_prefix('+') {
                (true, name)
            } else if let Some(name) = item.strip_prefix('-') {
                (false, name)
            } else {
                return Err(ConfigError::ToggleMissingSign {
                    item: item.to_owned(),
                });
            };
            if name.is_empty() {
                return Err(ConfigError::ToggleEmptyName {
                    item: item.to_owned(),
                });
            }
            if !is_valid_plugin_name(name) {
                return Err(ConfigError::ToggleBadName {
                    item: item.to_owned(),
                });
            }
            toggles.retain(|(seen, _)| seen != name);
            toggles.push((name.to_owned(), enabled));
        }
        Ok(EnvToggles { toggles })
    }
}

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

/// Reads a config file; `None` when it does not exist.
fn read_text(path: &Path) -> Result<Option<String>, ConfigError> {
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
fn parse_document<'t>(text: &'t str, path: &Path) -> Result<ImDocument<&'t str>, ConfigError> {
    ImDocument::parse(text).map_err(|error| ConfigError::Syntax {
        at: Location::at(path, text, error.span().map_or(0, |span| span.start)),
        message: one_line(error.message()),
    })
}

/// A multi-line parser message as one line.
fn one_line(message: &str) -> String {
    message
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

/// `parent.key`, quoting `key` when it is not a bare key.
fn dotted(parent: &str, key: &str) -> String {
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
fn type_name(item: &Item) -> &'static str {
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

/// Validation state while walking one document.
struct Reader<'a> {
    path: &'a Path,
    text: &'a str,
    warnings: Vec<String>,
}

impl Reader<'_> {
    fn at(&self, span: Option<Range<usize>>) -> Location {
        Location::at(self.path, self.text, span.map_or(0, |span| span.start))
    }

    /// Where a value is (its key when it has no span of its own, e.g. a dotted table).
    fn value_at(&self, key: &Key, item: &Item) -> Location {
        self.at(item.span().or_else(|| key.span()))
    }

    fn warn(&mut self, at: Location, message: fmt::Arguments<'_>) {
        self.warnings.push(format!("{at}: {message}"));
    }

    fn unknown(&mut self, key: &Key, dotted: &str) {
        let at = self.at(key.span());
        self.warn(at, format_args!("unknown key {dotted} (ignored)"));
    }

    fn wrong_type(
        &self,
        key: &Key,
        item: &Item,
        dotted: &str,
        expected: &'static str,
    ) -> ConfigError {
        ConfigError::WrongType {
            at: self.value_at(key, item),
            key: dotted.to_owned(),
            expected,
            found: type_name(item),
        }
    }

    fn table<'i>(
        &self,
        key: &Key,
        item: &'i Item,
        dotted: &str,
    ) -> Result<&'i dyn TableLike, ConfigError> {
        item.as_table_like()
            .ok_or_else(|| self.wrong_type(key, item, dotted, "a table"))
    }

    fn boolean(&self, key: &Key, item: &Item, dotted: &str) -> Result<bool, ConfigError> {
        item.as_bool()
            .ok_or_else(|| self.wrong_type(key, item, dotted, "a boolean"))
    }

    fn integer(&self, key: &Key, item: &Item, dotted: &str) -> Result<i64, ConfigError> {
        item.as_integer()
            .ok_or_else(|| self.wrong_type(key, item, dotted, "an integer"))
    }

    fn string<'i>(&self, key: &Key, item: &'i Item, dotted: &str) -> Result<&'i str, ConfigError> {
        item.as_str()
            .ok_or_else(|| self.wrong_type(key, item, dotted, "a string"))
    }

    /// A non-empty string (a directory).
    fn dir<'i>(&self, key: &Key, item: &'i Item, dotted: &str) -> Result<&'i str, ConfigError> {
        let dir = self.string(key, item, dotted)?;
        if dir.is_empty() {
            return Err(ConfigError::EmptyValue {
                at: self.value_at(key, item),
                key: dotted.to_owned(),
            });
        }
        Ok(dir)
    }

    /// One `[plugins.NAME]` table.
    fn plugin(&mut self, key: &Key, item: &Item) -> Result<PluginEntry, ConfigError> {
        let name = key.get();
        if !is_valid_plugin_name(name) {
            return Err(ConfigError::BadPluginName {
                at: self.at(key.span()),
                name: name.to_owned(),
            });
        }
        let prefix = format!("plugins.{name}");
        let table = self.table(key, item, &prefix)?;
        let builtin = name == FALLBACK_NAME;
        let mut entry = PluginEntry::new(name);
        for (field, _) in table.iter() {
            let Some((key, item)) = table.get_key_value(field) else {
                continue;
            };
            let dotted = dotted(&prefix, field);
            match field {
                "enabled" => entry.enabled = self.boolean(key, item, &dotted)?,
                "priority" => {
                    let priority = self.integer(key, item, &dotted)?;
                    entry.priority = Some(self.clamp(key, item, &dotted, priority));
                }
                "version" | "library" | "sha256" | "options" if builtin => {
                    let at = self.at(key.span());
                    self.warn(
                        at,
                        format_args!(
                            "plugins.{FALLBACK_NAME} configures the built-in fallback: \
                             only enabled and priority apply; {dotted} ignored"
                        ),
                    );
                }
                "version" => {
                    let value = self.string(key, item, &dotted)?;
                    let req =
                        VersionReq::parse(value).map_err(|error| ConfigError::BadVersionReq {
                            at: self.value_at(key, item),
                            key: dotted.clone(),
                            value: value.to_owned(),
                            reason: error.to_string(),
                        })?;
                    entry.version = Some(req);
                }
                "library" => {
                    let value = self.string(key, item, &dotted)?;
                    if value.is_empty() {
                        return Err(ConfigError::EmptyValue {
                            at: self.value_at(key, item),
                            key: dotted,
                        });
                    }
                    if value.contains(['/', '\\', '\0']) {
                        return Err(ConfigError::BadLibrary {
                            at: self.value_at(key, item),
                            key: dotted,
                            value: value.to_owned(),
                        });
                    }
                    entry.library = Some(value.to_owned());
                }
                "sha256" => {
                    let value = self.string(key, item, &dotted)?;
                    let length = value.chars().count();
                    let found = if length != 64 {
                        Some(format!("{length} characters"))
                    } else {
                        value
                            .chars()
                            .find(|c| !c.is_ascii_hexdigit())
                            .map(|c| format!("non-hex character {c:?}"))
                    };
                    if let Some(found) = found {
                        return Err(ConfigError::BadSha256 {
                            at: self.value_at(key, item),
                            key: dotted,
                            found,
                        });
                    }
                    entry.sha256 = Some(value.to_ascii_lowercase());
                }
                "options" => entry.options = self.options(key, item, &dotted)?,
                _ => self.unknown(key, &dotted),
            }
        }
        Ok(entry)
    }

    /// Clamps a priority into `0..=MAX_PLUGIN_PRIORITY`, warning when it moved.
    fn clamp(&mut self, key: &Key, item: &Item, dotted: &str, priority: i64) -> u32 {
        let clamped = priority.clamp(0, i64::from(MAX_PLUGIN_PRIORITY));
        if clamped != priority {
            let at = self.value_at(key, item);
            self.warn(
                at,
                format_args!(
                    "{dotted} {priority} is outside 0..={MAX_PLUGIN_PRIORITY}; clamped to {clamped}"
                ),
            );
        }
        u32::try_from(clamped).unwrap_or(MAX_PLUGIN_PRIORITY)
    }

    /// `[plugins.NAME.options]`: scalar values, as strings.
    fn options(
        &self,
        key: &Key,
        item: &Item,
        dotted_key: &str,
    ) -> Result<Vec<(String, String)>, ConfigError> {
        let table = self.table(key, item, dotted_key)?;
        let mut options = Vec::new();
        for (name, _) in table.iter() {
            let Some((key, item)) = table.get_key_value(name) else {
                continue;
            };
            let value = match item {
                Item::Value(Value::String(s)) => s.value().clone(),
                Item::Value(Value::Integer(i)) => i.value().to_string(),
                Item::Value(Value::Float(f)) => f.value().to_string(),
                Item::Value(Value::Boolean(b)) => b.value().to_string(),
                _ => {
                    return Err(self.wrong_type(
                        key,
                        item,
                        &dotted(dotted_key, name),
                        "a string, integer, float or boolean",
                    ))
                }
            };
            options.push((name.to_owned(), value));
        }
        Ok(options)
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

/// Writes `contents` to `PATH.tmp-<pid>` next to the file, syncs it, and
/// renames it over the file.
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
    let dir = target.parent().unwrap_or(Path::new(""));
    let mut tmp_name = file_name.to_os_string();
    tmp_name.push(format!(".tmp-{}", std::process::id()));
    let tmp = dir.join(tmp_name);
    let written = (|| {
        let mut file = fs::File::create(&tmp)?;
        file.write_all(contents.as_bytes())?;
        file.sync_all()?;
        if let Some(permissions) = permissions {
            file.set_permissions(permissions)?;
        }
        drop(file);
        fs::rename(&tmp, &target)
    })();
    if let Err(error) = written {
        let _ = fs::remove_file(&tmp);
        return Err(failed(error));
    }
    sync_dir(dir);
    Ok(())
}

/// Makes the rename durable where the platform allows (best effort).
fn sync_dir(dir: &Path) {
    #[cfg(unix)]
    {
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        if let Ok(handle) = fs::File::open(dir) {
            let _ = handle.sync_all();
        }
    }
    #[cfg(not(unix))]
    let _ = dir;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    const FILE: &str = "plugins.toml";

    #[track_caller]
    fn check_ok(toml: &str) -> Config {
        match Config::parse(toml, Path::new(FILE)) {
            Ok(config) => config,
            Err(error) => panic!("expected a config, got: {error}"),
        }
    }

    #[track_caller]
    fn check_err(toml: &str, expected: &str) {
        match Config::parse(toml, Path::new(FILE)) {
            Ok(config) => panic!("expected {expected:?}, got {config:?}"),
            Err(error) => assert_eq!(error.to_string(), expected),
        }
    }

    #[track_caller]
    fn check_warnings(toml: &str, expected: &[&str]) {
        assert_eq!(check_ok(toml).warnings, expected);
    }

    /// The one plugin entry of `toml`, which must parse without warnings.
    #[track_caller]
    fn check_entry(toml: &str) -> PluginEntry {
        let config = check_ok(toml);
        assert_eq!(config.warnings, Vec::<String>::new());
        assert_eq!(config.plugins.len(), 1, "{:?}", config.plugins);
        config.plugins[0].clone()
    }

    #[track_caller]
    fn check_toggles(spec: &str, expected: &[(&str, bool)]) {
        let toggles = EnvToggles::parse(spec).map_err(|e| e.to_string());
        let expected = expected.iter().map(|&(n, e)| (n.to_owned(), e)).collect();
        assert_eq!(toggles, Ok(EnvToggles { toggles: expected }));
    }

    #[track_caller]
    fn check_toggles_err(spec: &str, expected: &str) {
        match EnvToggles::parse(spec) {
            Ok(toggles) => panic!("expected {expected:?}, got {toggles:?}"),
            Err(error) => assert_eq!(error.to_string(), expected),
        }
    }

    /// A fresh directory under the system temp dir, removed on drop.
    struct TestDir(PathBuf);

    impl TestDir {
        fn new() -> TestDir {
            static NEXT: AtomicUsize = AtomicUsize::new(0);
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let dir =
                std::env::temp_dir().join(format!("stowage-config-{}-{n}", std::process::id()));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).expect("create test dir");
            TestDir(dir)
        }

        fn path(&self, name: &str) -> PathBuf {
            self.0.join(name)
        }

        fn write(&self, name: &str, text: &str) -> PathBuf {
            let path = self.path(name);
            fs::write(&path, text).expect("write test file");
            path
        }

        fn read(&self, name: &str) -> String {
            fs::read_to_string(self.path(name)).expect("read test file")
        }

        /// File names in the directory, sorted.
        fn names(&self) -> Vec<String> {
            let mut names: Vec<String> = fs::read_dir(&self.0)
                .expect("list test dir")
                .map(|e| {
                    e.expect("dir entry")
                        .file_name()
                        .to_string_lossy()
                        .into_owned()
                })
                .collect();
            names.sort();
            names
        }
    }

    impl Drop for TestDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    /// `set_enabled` on a file holding `before` gives exactly `after`.
    #[track_caller]
    fn check_edit(before: &str, name: &str, enabled: bool, after: &str, outcome: EditOutcome) {
        let dir = TestDir::new();
        let path = dir.write(FILE, before);
        let got = set_enabled(&path, name, enabled).map_err(|e| e.to_string());
        assert_eq!(got, Ok(outcome));
        assert_eq!(dir.read(FILE), after);
        assert_eq!(dir.names(), [FILE], "no temp file left behind");
        // The result is a valid config saying what was asked.
        let config = Config::load(&path).map_err(|e| e.to_string());
        let entry = config.as_ref().ok().and_then(|c| c.entry(name));
        assert_eq!(entry.map(|e| e.enabled), Some(enabled), "{config:?}");
    }

    /// `set_enabled` on a file holding `before` fails with `expected` and leaves it alone.
    #[track_caller]
    fn check_edit_err(before: &str, name: &str, enabled: bool, expected: &str) {
        let dir = TestDir::new();
        let path = dir.write(FILE, before);
        match set_enabled(&path, name, enabled) {
            Ok(outcome) => panic!("expected {expected:?}, got {outcome:?}"),
            Err(error) => assert_eq!(
                error.to_string(),
                expected.replace("PATH", &path.display().to_string())
            ),
        }
        assert_eq!(dir.read(FILE), before);
        assert_eq!(dir.names(), [FILE]);
    }

    // --- defaults and paths ---

    #[test]
    fn empty_file_uses_defaults() {
        let config = Config::parse("", Path::new("/srv/app/plugins.toml")).expect("parses");
        assert!(config.exists);
        assert_eq!(config.path, Path::new("/srv/app/plugins.toml"));
        assert_eq!(config.plugin_dir, Path::new("/srv/app/plugin-libs"));
        assert_eq!(config.store_dir, Path::new("/srv/app/store"));
        assert!(config.autoload);
        assert!(config.plugins.is_empty());
        assert!(config.warnings.is_empty());
    }

    #[test]
    fn dirs_resolve_relative_to_the_config_dir() {
        let toml = "[host]\ndir = \"libs\"\n[store]\ndir = \"data/store\"\n";
        let config = Config::parse(toml, Path::new("/srv/app/plugins.toml")).expect("parses");
        assert_eq!(config.plugin_dir, Path::new("/srv/app/libs"));
        assert_eq!(config.store_dir, Path::new("/srv/app/data/store"));
    }

    #[test]
    fn relative_config_path_gives_relative_dirs() {
        let config = Config::parse(
            "[host]\ndir = \"../libs\"\n",
            Path::new("conf/plugins.toml"),
        )
        .expect("parses");
        assert_eq!(config.plugin_dir, Path::new("conf/../libs"));
        assert_eq!(config.store_dir, Path::new("conf/store"));
    }

    #[test]
    fn bare_config_name_keeps_dirs_relative_to_cwd() {
        let config = check_ok("");
        assert_eq!(config.plugin_dir, Path::new("plugin-libs"));
        assert_eq!(config.store_dir, Path::new("store"));
    }

    #[cfg(unix)]
    #[test]
    fn absolute_dirs_are_kept() {
        let config = check_ok("[host]\ndir = \"/opt/libs\"\n[store]\ndir = \"/var/store\"\n");
        assert_eq!(config.plugin_dir, Path::new("/opt/libs"));
        assert_eq!(config.store_dir, Path::new("/var/store"));
    }

    #[test]
    fn autoload_can_be_turned_off() {
        assert!(!check_ok("[host]\nautoload = false\n").autoload);
        assert!(check_ok("[host]\nautoload = true\n").autoload);
    }

    // --- plugin tables ---

    #[test]
    fn plugin_table_defaults() {
        assert_eq!(check_entry("[plugins.arrow]\n"), PluginEntry::new("arrow"));
    }

    #[test]
    fn enabled_is_read() {
        assert!(!check_entry("[plugins.arrow]\nenabled = false\n").enabled);
        assert!(check_entry("[plugins.arrow]\nenabled = true\n").enabled);
    }

    #[test]
    fn priority_is_read() {
        assert_eq!(
            check_entry("[plugins.arrow]\npriority = 40\n").priority,
            Some(40)
        );
    }

    #[test]
    fn priority_bounds_are_not_clamped() {
        assert_eq!(check_entry("[plugins.a]\npriority = 0\n").priority, Some(0));
        assert_eq!(
            check_entry("[plugins.a]\npriority = 9998\n").priority,
            Some(9998)
        );
    }

    #[test]
    fn version_requirement_is_read() {
        let entry = check_entry("[plugins.arrow]\nversion = \"^1.2\"\n");
        let req = entry.version.expect("a requirement");
        assert!(req.matches(&semver::Version::new(1, 4, 0)));
        assert!(!req.matches(&semver::Version::new(2, 0, 0)));
    }

    #[test]
    fn library_is_read() {
        let entry = check_entry("[plugins.arrow]\nlibrary = \"arrow_v2\"\n");
        assert_eq!(entry.library.as_deref(), Some("arrow_v2"));
        assert_eq!(entry.library_stem(), "arrow_v2");
    }

    #[test]
    fn library_stem_defaults_from_the_name() {
        assert_eq!(PluginEntry::new("arrow").library_stem(), "stowage_arrow");
        assert_eq!(
            PluginEntry::new("class-src").library_stem(),
            "stowage_class_src"
        );
    }

    #[test]
    fn sha256_is_lowercased() {
        let upper = "AB".repeat(32);
        let entry = check_entry(&format!("[plugins.arrow]\nsha256 = \"{upper}\"\n"));
        assert_eq!(entry.sha256, Some("ab".repeat(32)));
    }

    #[test]
    fn options_scalars_become_strings_in_file_order() {
        let entry = check_entry(
            "[plugins.arrow.options]\ncompression = \"zstd\"\nlevel = 3\nratio = 0.5\nverify = true\n",
        );
        let expected = [
            ("compression", "zstd"),
            ("level", "3"),
            ("ratio", "0.5"),
            ("verify", "true"),
        ];
        let expected: Vec<_> = expected
            .iter()
            .map(|&(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        assert_eq!(entry.options, expected);
    }

    #[test]
    fn every_key_at_once() {
        let sha = "0123456789abcdef".repeat(4);
        let toml = format!(
            "[plugins.arrow]\nenabled = false\npriority = 40\nversion = \"^1.0\"\n\
             library = \"stowage_arrow\"\nsha256 = \"{sha}\"\n[plugins.arrow.options]\ncompression = \"zstd\"\n"
        );
        let entry = check_entry(&toml);
        assert_eq!(
            entry,
            PluginEntry {
                name: "arrow".to_owned(),
                enabled: false,
                priority: Some(40),
                version: Some(VersionReq::parse("^1.0").expect("valid")),
                library: Some("stowage_arrow".to_owned()),
                sha256: Some(sha),
                options: vec![("compression".to_owned(), "zstd".to_owned())],
            }
        );
    }

    #[test]
    fn plugins_keep_file_order() {
        let config = check_ok("[plugins.tensor]\n[plugins.arrow]\n[plugins.class-src]\n");
        let names: Vec<_> = config.plugins.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["tensor", "arrow", "class-src"]);
    }

    #[test]
    fn entry_finds_by_name() {
        let config = check_ok("[plugins.tensor]\n[plugins.arrow]\npriority = 3\n");
        assert_eq!(config.entry("arrow").and_then(|e| e.priority), Some(3));
        assert!(config.entry("missing").is_none());
    }

    #[test]
    fn dotted_keys_and_inline_tables_are_read() {
        let config = check_ok(
            "plugins.arrow.enabled = false\n[plugins.tensor]\noptions = { dtype = \"f32\" }\n",
        );
        assert!(!config.plugins[0].enabled);
        assert_eq!(
            config.plugins[1].options,
            [("dtype".to_owned(), "f32".to_owned())]
        );
        let config = check_ok("[plugins]\narrow = { priority = 7 }\ntensor.priority = 8\n");
        assert_eq!(config.entry("arrow").and_then(|e| e.priority), Some(7));
        assert_eq!(config.entry("tensor").and_then(|e| e.priority), Some(8));
    }

    #[test]
    fn msgpack_entry_is_kept_with_enabled_and_priority() {
        let entry = check_entry("[plugins.msgpack]\nenabled = false\npriority = 5\n");
        assert_eq!(
            (entry.name.as_str(), entry.enabled, entry.priority),
            ("msgpack", false, Some(5))
        );
    }

    #[test]
    fn msgpack_ignores_other_keys_with_a_warning() {
        let toml = "[plugins.msgpack]\nlibrary = \"x/y\"\nversion = 3\nsha256 = \"no\"\npriority = 1\n[plugins.msgpack.options]\na = []\n";
        let config = check_ok(toml);
        let entry = config.entry("msgpack").expect("kept");
        assert_eq!(entry.library, None);
        assert_eq!(entry.version, None);
        assert_eq!(entry.sha256, None);
        assert!(entry.options.is_empty());
        assert_eq!(entry.priority, Some(1));
        let ignored =
            "plugins.msgpack configures the built-in fallback: only enabled and priority apply;";
        assert_eq!(
            config.warnings,
            [
                format!("plugins.toml:2:1: {ignored} plugins.msgpack.library ignored"),
                format!("plugins.toml:3:1: {ignored} plugins.msgpack.version ignored"),
                format!("plugins.toml:4:1: {ignored} plugins.msgpack.sha256 ignored"),
                format!("plugins.toml:6:18: {ignored} plugins.msgpack.options ignored"),
            ]
        );
    }

    // --- errors ---

    #[test]
    fn syntax_error_has_line_and_column() {
        check_err(
            "[host]\ndir = \n",
            "plugins.toml:2:7: invalid string; expected `\"`, `'`",
        );
    }

    #[test]
    fn unterminated_string_is_a_syntax_error() {
        check_err(
            "[host]\ndir = \"libs\n",
            "plugins.toml:2:12: invalid basic string",
        );
    }

    #[test]
    fn duplicate_key_is_an_error() {
        check_err(
            "[plugins.arrow]\nenabled = true\nenabled = false\n",
            "plugins.toml:3:1: duplicate key `enabled` in table `plugins.arrow`",
        );
    }

    #[test]
    fn duplicate_table_is_an_error() {
        check_err(
            "[plugins.arrow]\n[plugins.tensor]\n[plugins.arrow]\n",
            "plugins.toml:3:1: invalid table header; duplicate key `arrow` in table `plugins`",
        );
    }

    #[test]
    fn enabled_must_be_a_boolean() {
        check_err(
            "[plugins.arrow]\nenabled = \"yes\"\n",
            "plugins.toml:2:11: plugins.arrow.enabled must be a boolean, found string",
        );
    }

    #[test]
    fn priority_must_be_an_integer() {
        check_err(
            "[plugins.arrow]\npriority = 1.5\n",
            "plugins.toml:2:12: plugins.arrow.priority must be an integer, found float",
        );
    }

    #[test]
    fn version_must_be_a_string() {
        check_err(
            "[plugins.arrow]\nversion = 1\n",
            "plugins.toml:2:11: plugins.arrow.version must be a string, found integer",
        );
    }

    #[test]
    fn library_must_be_a_string() {
        check_err(
            "[plugins.arrow]\nlibrary = [\"a\"]\n",
            "plugins.toml:2:11: plugins.arrow.library must be a string, found array",
        );
    }

    #[test]
    fn sha256_must_be_a_string() {
        check_err(
            "[plugins.arrow]\nsha256 = 1979-05-27\n",
            "plugins.toml:2:10: plugins.arrow.sha256 must be a string, found datetime",
        );
    }

    #[test]
    fn options_must_be_a_table() {
        check_err(
            "[plugins.arrow]\noptions = \"zstd\"\n",
            "plugins.toml:2:11: plugins.arrow.options must be a table, found string",
        );
    }

    #[test]
    fn option_values_must_be_scalars() {
        check_err(
            "[plugins.arrow.options]\nlevels = [1, 2]\n",
            "plugins.toml:2:10: plugins.arrow.options.levels must be a string, integer, float or boolean, found array",
        );
        check_err(
            "[plugins.arrow.options.nested]\na = 1\n",
            "plugins.toml:1:1: plugins.arrow.options.nested must be a string, integer, float or boolean, found table",
        );
    }

    #[test]
    fn host_keys_have_types() {
        check_err(
            "[host]\ndir = 3\n",
            "plugins.toml:2:7: host.dir must be a string, found integer",
        );
        check_err(
            "[host]\nautoload = \"no\"\n",
            "plugins.toml:2:12: host.autoload must be a boolean, found string",
        );
        check_err(
            "[store]\ndir = false\n",
            "plugins.toml:2:7: store.dir must be a string, found boolean",
        );
    }

    #[test]
    fn sections_must_be_tables() {
        check_err(
            "host = 1\n",
            "plugins.toml:1:8: host must be a table, found integer",
        );
        check_err(
            "store = \"s\"\n",
            "plugins.toml:1:9: store must be a table, found string",
        );
        check_err(
            "plugins = []\n",
            "plugins.toml:1:11: plugins must be a table, found array",
        );
        check_err(
            "[[plugins]]\nname = \"x\"\n",
            "plugins.toml:1:1: plugins must be a table, found array of tables",
        );
        check_err(
            "[plugins]\narrow = true\n",
            "plugins.toml:2:9: plugins.arrow must be a table, found boolean",
        );
    }

    #[test]
    fn empty_dirs_are_errors() {
        check_err(
            "[host]\ndir = \"\"\n",
            "plugins.toml:2:7: host.dir must not be empty",
        );
        check_err(
            "[store]\ndir = ''\n",
            "plugins.toml:2:7: store.dir must not be empty",
        );
    }

    #[test]
    fn bad_version_requirement_names_the_key() {
        check_err(
            "[plugins.arrow]\nversion = \"^one\"\n",
            "plugins.toml:2:11: plugins.arrow.version \"^one\" is not a valid semver requirement: \
             unexpected character 'o' while parsing major version number",
        );
    }

    #[test]
    fn library_must_be_a_file_stem() {
        check_err(
            "[plugins.arrow]\nlibrary = \"lib/stowage_arrow\"\n",
            "plugins.toml:2:11: plugins.arrow.library \"lib/stowage_arrow\" must be a file stem, without '/' or '\\'",
        );
        check_err(
            "[plugins.arrow]\nlibrary = 'a\\b'\n",
            "plugins.toml:2:11: plugins.arrow.library \"a\\\\b\" must be a file stem, without '/' or '\\'",
        );
        check_err(
            "[plugins.arrow]\nlibrary = \"\"\n",
            "plugins.toml:2:11: plugins.arrow.library must not be empty",
        );
    }

    #[test]
    fn sha256_must_be_64_hex_characters() {
        check_err(
            "[plugins.arrow]\nsha256 = \"abc\"\n",
            "plugins.toml:2:10: plugins.arrow.sha256 must be 64 hex characters, found 3 characters",
        );
        let bad = format!("{}g", "a".repeat(63));
        check_err(
            &format!("[plugins.arrow]\nsha256 = \"{bad}\"\n"),
            "plugins.toml:2:10: plugins.arrow.sha256 must be 64 hex characters, found non-hex character 'g'",
        );
        let long = "a".repeat(65);
        check_err(
            &format!("[plugins.arrow]\nsha256 = \"{long}\"\n"),
            "plugins.toml:2:10: plugins.arrow.sha256 must be 64 hex characters, found 65 characters",
        );
    }

    #[test]
    fn plugin_names_must_be_plain() {
        check_err(
            "[plugins.\"my plugin\"]\n",
            "plugins.toml:1:10: plugin name \"my plugin\" must match [A-Za-z0-9_-]+",
        );
        check_err(
            "[plugins]\n\"a.b\" = {}\n",
            "plugins.toml:2:1: plugin name \"a.b\" must match [A-Za-z0-9_-]+",
        );
    }

    #[test]
    fn columns_count_characters_not_bytes() {
        check_err(
            "host = { dir = \"é\", autoload = 1 }\n",
            "plugins.toml:1:32: host.autoload must be a boolean, found integer",
        );
    }

    #[test]
    fn byte_order_mark_is_not_a_column() {
        check_err(
            "\u{feff}host = 1\n",
            "plugins.toml:1:8: host must be a table, found integer",
        );
    }

    // --- warnings ---

    #[test]
    fn unknown_top_level_key_warns() {
        check_warnings(
            "colour = \"blue\"\n",
            &["plugins.toml:1:1: unknown key colour (ignored)"],
        );
    }

    #[test]
    fn unknown_table_warns_once() {
        check_warnings(
            "[hots]\ndir = \"x\"\nmore = 1\n",
            &["plugins.toml:1:2: unknown key hots (ignored)"],
        );
    }

    #[test]
    fn unknown_host_and_store_keys_warn() {
        check_warnings(
            "[host]\ndirectory = \"x\"\n[store]\n  compress = true\n",
            &[
                "plugins.toml:2:1: unknown key host.directory (ignored)",
                "plugins.toml:4:3: unknown key store.compress (ignored)",
            ],
        );
    }

    #[test]
    fn unknown_plugin_key_warns() {
        let toml = "[host]\ndir = \"plugin-libs\"\n\n[store]\ndir = \"store\"\n[plugins.arrow]\nenabeld = false\n";
        let config = check_ok(toml);
        assert_eq!(
            config.warnings,
            ["plugins.toml:7:1: unknown key plugins.arrow.enabeld (ignored)"]
        );
        assert!(config.plugins[0].enabled);
    }

    #[test]
    fn unknown_quoted_key_is_quoted() {
        check_warnings(
            "[plugins.arrow]\n\"odd key\" = 1\n",
            &["plugins.toml:2:1: unknown key plugins.arrow.\"odd key\" (ignored)"],
        );
    }

    #[test]
    fn priority_above_max_is_clamped() {
        let config = check_ok("[plugins.arrow]\npriority = 12000\n");
        assert_eq!(config.plugins[0].priority, Some(9998));
        assert_eq!(
            config.warnings,
            ["plugins.toml:2:12: plugins.arrow.priority 12000 is outside 0..=9998; clamped to 9998"]
        );
    }

    #[test]
    fn negative_priority_is_clamped_to_zero() {
        let config = check_ok("[plugins.arrow]\npriority = -3\n");
        assert_eq!(config.plugins[0].priority, Some(0));
        assert_eq!(
            config.warnings,
            ["plugins.toml:2:12: plugins.arrow.priority -3 is outside 0..=9998; clamped to 0"]
        );
    }

    #[test]
    fn fallback_priority_is_clamped_for_plugins() {
        let config = check_ok("[plugins.arrow]\npriority = 9999\n");
        assert_eq!(config.plugins[0].priority, Some(MAX_PLUGIN_PRIORITY));
        assert_eq!(config.warnings.len(), 1);
    }

    #[test]
    fn huge_priority_is_clamped() {
        let config = check_ok("[plugins.arrow]\npriority = 9223372036854775807\n");
        assert_eq!(config.plugins[0].priority, Some(9998));
    }

    // --- loading files ---

    #[test]
    fn load_of_a_missing_explicit_file_is_not_found() {
        let dir = TestDir::new();
        let path = dir.path("nope.toml");
        match Config::load(&path) {
            Err(error @ ConfigError::NotFound { .. }) => {
                assert_eq!(
                    error.to_string(),
                    format!("config file {} not found", path.display())
                )
            }
            other => panic!("expected NotFound, got {other:?}"),
        }
    }

    #[test]
    fn load_default_of_a_missing_file_uses_defaults() {
        let dir = TestDir::new();
        let path = dir.path(DEFAULT_CONFIG_FILE);
        let config = Config::load_default(&path).expect("defaults");
        assert!(!config.exists);
        assert_eq!(config.plugin_dir, dir.path("plugin-libs"));
        assert_eq!(config.store_dir, dir.path("store"));
        assert!(config.autoload && config.plugins.is_empty() && config.warnings.is_empty());
    }

    #[test]
    fn load_and_load_default_read_the_file() {
        let dir = TestDir::new();
        let path = dir.write(FILE, "[host]\ndir = \"libs\"\n[plugins.arrow]\n");
        for config in [Config::load(&path), Config::load_default(&path)] {
            let config = config.expect("loads");
            assert!(config.exists);
            assert_eq!(config.plugin_dir, dir.path("libs"));
            assert_eq!(config.plugins.len(), 1);
        }
    }

    #[test]
    fn load_default_still_reports_a_broken_file() {
        let dir = TestDir::new();
        let path = dir.write(FILE, "[host\n");
        let error = Config::load_default(&path).expect_err("broken");
        assert!(matches!(error, ConfigError::Syntax { .. }), "{error}");
        assert!(
            error
                .to_string()
                .starts_with(&format!("{}:1:6: ", path.display())),
            "{error}"
        );
    }

    #[test]
    fn invalid_utf8_reports_its_position() {
        let dir = TestDir::new();
        let path = dir.path(FILE);
        fs::write(&path, b"[host]\ndir = \"ab\xff\"\n").expect("write");
        let error = Config::load(&path).expect_err("not utf-8");
        assert_eq!(
            error.to_string(),
            format!("{}:2:10: invalid utf-8", path.display())
        );
    }

    #[test]
    fn unreadable_path_is_a_read_error() {
        let dir = TestDir::new();
        let error = Config::load(&dir.0).expect_err("a directory");
        assert!(matches!(error, ConfigError::Read { .. }), "{error}");
        assert!(error
            .to_string()
            .starts_with(&format!("cannot read config file {}: ", dir.0.display())));
    }

    // --- where the config comes from ---

    #[test]
    fn config_flag_beats_env() {
        let got = resolve_config_path(Some(Path::new("a.toml")), Some(OsStr::new("b.toml")));
        assert_eq!(got, (PathBuf::from("a.toml"), true));
    }

    #[test]
    fn env_beats_default() {
        let got = resolve_config_path(None, Some(OsStr::new("b.toml")));
        assert_eq!(got, (PathBuf::from("b.toml"), true));
    }

    #[test]
    fn default_is_implicit() {
        assert_eq!(
            resolve_config_path(None, None),
            (PathBuf::from("plugins.toml"), false)
        );
    }

    #[test]
    fn empty_env_counts_as_unset() {
        assert_eq!(
            resolve_config_path(None, Some(OsStr::new(""))),
            (PathBuf::from("plugins.toml"), false)
        );
    }

    // --- STOWAGE_PLUGINS ---

    #[test]
    fn toggles_parse_signs_in_order() {
        check_toggles("-arrow,+tensor", &[("arrow", false), ("tensor", true)]);
    }

    #[test]
    fn toggles_trim_whitespace_and_skip_empty_items() {
        check_toggles(
            " -arrow , ,+tensor,,\t+class-src ,",
            &[("arrow", false), ("tensor", true), ("class-src", true)],
        );
    }

    #[test]
    fn empty_toggles_are_none() {
        check_toggles("", &[]);
        check_toggles(" , ", &[]);
    }

    #[test]
    fn repeated_toggle_keeps_the_last() {
        check_toggles(
            "-arrow,+tensor,+arrow",
            &[("tensor", true), ("arrow", true)],
        );
    }

    #[test]
    fn toggle_without_sign_is_an_error() {
        check_toggles_err(
            "-arrow, tensor",
            "STOWAGE_PLUGINS item \"tensor\" must start with + or -",
        );
    }

    #[test]
    fn toggle_without_name_is_an_error() {
        check_toggles_err("+arrow,-", "STOWAGE_PLUGINS item \"-\" has no plugin name");
    }

    #[test]
    fn toggle_with_bad_name_is_an_error() {
        check_toggles_err(
            "+my plugin",
            "STOWAGE_PLUGINS item \"+my plugin\": plugin name must match [A-Za-z0-9_-]+",
        );
        check_toggles_err(
            "+ arrow",
            "STOWAGE_PLUGINS item \"+ arrow\": plugin name must match [A-Za-z0-9_-]+",
        );
    }

    // --- set_enabled ---

    const ODD: &str =
        "# stowage config\r\n\n[host]   # the host\n  dir   =   \"libs\"   # drop-in\n\n";

    #[test]
    fn flips_an_existing_value_only() {
        let before = "# top\n[host]\ndir='x'  # d\n\n[plugins.arrow]   # the arrow one\n  priority=4\n  enabled   =   true   # keep me\n\tversion = \"^1\"\n[plugins.tensor]\nenabled = true\n";
        let after = before.replacen("enabled   =   true", "enabled   =   false", 1);
        check_edit(before, "arrow", false, &after, EditOutcome::Changed);
    }

    #[test]
    fn flips_back_to_true() {
        check_edit(
            "[plugins.arrow]\nenabled = false\n",
            "arrow",
            true,
            "[plugins.arrow]\nenabled = true\n",
            EditOutcome::Changed,
        );
    }

    #[test]
    fn already_set_leaves_the_file_alone() {
        let dir = TestDir::new();
        let before = "[plugins.arrow]\nenabled = false # off\n";
        let path = dir.write(FILE, before);
        let modified = fs::metadata(&path)
            .and_then(|m| m.modified())
            .expect("mtime");
        assert_eq!(
            set_enabled(&path, "arrow", false).map_err(|e| e.to_string()),
            Ok(EditOutcome::AlreadySet)
        );
        assert_eq!(dir.read(FILE), before);
        assert_eq!(
            fs::metadata(&path)
                .and_then(|m| m.modified())
                .expect("mtime"),
            modified
        );
        assert_eq!(dir.names(), [FILE]);
    }

    #[test]
    fn inserts_enabled_as_the_first_key() {
        let before = "[plugins.arrow]  # arrow\n# its priority\npriority = 4\n\n[plugins.tensor]\n";
        let after = "[plugins.arrow]  # arrow\nenabled = false\n# its priority\npriority = 4\n\n[plugins.tensor]\n";
        check_edit(before, "arrow", false, after, EditOutcome::Changed);
    }

    #[test]
    fn inserts_into_a_header_at_end_of_file() {
        check_edit(
            "[plugins.arrow]",
            "arrow",
            false,
            "[plugins.arrow]\nenabled = false\n",
            EditOutcome::Changed,
        );
    }

    #[test]
    fn inserts_into_a_table_defined_after_its_subtable() {
        let before = "[plugins.arrow.options]\na = 1\n[plugins.arrow]\npriority = 2\n";
        let after =
            "[plugins.arrow.options]\na = 1\n[plugins.arrow]\nenabled = false\npriority = 2\n";
        check_edit(before, "arrow", false, after, EditOutcome::Changed);
    }

    #[test]
    fn appends_a_missing_table() {
        let before = "[host]\ndir = \"libs\"\n\n[plugins.tensor]\nenabled = true\n";
        let after = format!("{before}\n[plugins.arrow]\nenabled = false\n");
        check_edit(before, "arrow", false, &after, EditOutcome::AddedTable);
    }

    #[test]
    fn appends_after_a_last_line_without_newline() {
        check_edit(
            "[host]\ndir = \"libs\"",
            "arrow",
            true,
            "[host]\ndir = \"libs\"\n\n[plugins.arrow]\nenabled = true\n",
            EditOutcome::AddedTable,
        );
    }

    #[test]
    fn appends_to_an_empty_file() {
        check_edit(
            "",
            "arrow",
            false,
            "[plugins.arrow]\nenabled = false\n",
            EditOutcome::AddedTable,
        );
    }

    #[test]
    fn creates_a_missing_file() {
        let dir = TestDir::new();
        let path = dir.path(FILE);
        assert_eq!(
            set_enabled(&path, "arrow", false).map_err(|e| e.to_string()),
            Ok(EditOutcome::AddedTable)
        );
        assert_eq!(dir.read(FILE), "[plugins.arrow]\nenabled = false\n");
        assert_eq!(dir.names(), [FILE]);
    }

    #[test]
    fn odd_formatting_and_comments_are_kept_byte_for_byte() {
        let before = format!("{ODD}[plugins . arrow]\r\n\"enabled\"=true#x\r\n");
        let after = format!("{ODD}[plugins . arrow]\r\n\"enabled\"=false#x\r\n");
        check_edit(&before, "arrow", false, &after, EditOutcome::Changed);
    }

    #[test]
    fn crlf_files_get_crlf_lines() {
        let before = "[host]\r\ndir = \"libs\"\r\n[plugins.arrow]\r\npriority = 1\r\n";
        let after =
            "[host]\r\ndir = \"libs\"\r\n[plugins.arrow]\r\nenabled = false\r\npriority = 1\r\n";
        check_edit(before, "arrow", false, after, EditOutcome::Changed);
        let appended = format!("{before}\r\n[plugins.tensor]\r\nenabled = false\r\n");
        check_edit(before, "tensor", false, &appended, EditOutcome::AddedTable);
    }

    #[test]
    fn edits_dotted_keys_in_their_own_form() {
        let before = "[plugins]\narrow.priority = 1 # p\n  arrow.library = \"a\"\ntensor.priority = 2\n[host]\n";
        let after = "[plugins]\narrow.priority = 1 # p\n  arrow.library = \"a\"\n  arrow.enabled = false\ntensor.priority = 2\n[host]\n";
        check_edit(before, "arrow", false, after, EditOutcome::Changed);
        let before = "plugins.arrow.priority = 1\n\n[host]\n";
        let after = "plugins.arrow.priority = 1\nplugins.arrow.enabled = false\n\n[host]\n";
        check_edit(before, "arrow", false, after, EditOutcome::Changed);
        let before = "[plugins]\narrow.enabled = true\n";
        check_edit(
            before,
            "arrow",
            false,
            "[plugins]\narrow.enabled = false\n",
            EditOutcome::Changed,
        );
    }

    #[test]
    fn dotted_table_with_a_subtable_elsewhere() {
        let before = "[plugins]\narrow.priority = 1\n[plugins.arrow.options]\na = 1\n";
        let after = "[plugins]\narrow.priority = 1\narrow.enabled = false\n[plugins.arrow.options]\na = 1\n";
        check_edit(before, "arrow", false, after, EditOutcome::Changed);
    }

    #[test]
    fn edits_inline_tables_in_their_own_form() {
        check_edit(
            "[plugins]\narrow = { priority = 1 } # a\n",
            "arrow",
            false,
            "[plugins]\narrow = { enabled = false, priority = 1 } # a\n",
            EditOutcome::Changed,
        );
        check_edit(
            "[plugins]\narrow = {}\n",
            "arrow",
            false,
            "[plugins]\narrow = { enabled = false }\n",
            EditOutcome::Changed,
        );
        check_edit(
            "plugins = { arrow = { enabled = true } }\n",
            "arrow",
            false,
            "plugins = { arrow = { enabled = false } }\n",
            EditOutcome::Changed,
        );
    }

    #[test]
    fn implicit_table_gets_a_header() {
        let before = "[plugins.arrow.options]\na = 1\n";
        let after = "[plugins.arrow.options]\na = 1\n\n[plugins.arrow]\nenabled = false\n";
        check_edit(before, "arrow", false, after, EditOutcome::Changed);
    }

    #[test]
    fn non_boolean_enabled_is_replaced() {
        check_edit(
            "[plugins.arrow]\nenabled = \"yes\"\n",
            "arrow",
            false,
            "[plugins.arrow]\nenabled = false\n",
            EditOutcome::Changed,
        );
    }

    #[test]
    fn msgpack_can_be_toggled() {
        check_edit(
            "",
            "msgpack",
            false,
            "[plugins.msgpack]\nenabled = false\n",
            EditOutcome::AddedTable,
        );
    }

    #[test]
    fn unparsable_file_is_left_untouched() {
        check_edit_err(
            "[plugins.arrow]\nenabled = tru\n",
            "arrow",
            false,
            "PATH:2:11: invalid string; expected `\"`, `'`",
        );
    }

    #[test]
    fn wrong_shapes_are_errors() {
        check_edit_err(
            "plugins = 3\n",
            "arrow",
            false,
            "PATH:1:11: plugins must be a table, found integer",
        );
        check_edit_err(
            "[plugins]\narrow = 3\n",
            "arrow",
            false,
            "PATH:2:9: plugins.arrow must be a table, found integer",
        );
        check_edit_err(
            "[plugins.arrow.enabled]\nx = 1\n",
            "arrow",
            false,
            "PATH:1:1: plugins.arrow.enabled must be a boolean, found table",
        );
    }

    #[test]
    fn inline_plugins_without_the_name_is_unsupported() {
        check_edit_err(
            "plugins = { tensor = {} }\n",
            "arrow",
            false,
            "PATH:1:11: cannot set plugins.arrow.enabled automatically: plugins is an inline table; add the plugin to it by hand",
        );
    }

    #[test]
    fn dotted_keys_inside_inline_tables_are_unsupported() {
        check_edit_err(
            "plugins = { arrow.priority = 1 }\n",
            "arrow",
            false,
            "PATH:1:13: cannot set plugins.arrow.enabled automatically: dotted keys inside an inline table; edit it by hand",
        );
    }

    #[test]
    fn invalid_name_is_rejected() {
        let dir = TestDir::new();
        let error = set_enabled(&dir.path(FILE), "a]b", false).expect_err("invalid");
        assert_eq!(
            error.to_string(),
            "invalid plugin name \"a]b\": must match [A-Za-z0-9_-]+"
        );
        assert!(dir.names().is_empty());
    }

    #[cfg(unix)]
    #[test]
    fn edit_keeps_permissions() {
        use std::os::unix::fs::PermissionsExt;
        let dir = TestDir::new();
        let path = dir.write(FILE, "[plugins.arrow]\n");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).expect("chmod");
        set_enabled(&path, "arrow", false).expect("edits");
        let mode = fs::metadata(&path).expect("stat").permissions().mode();
        assert_eq!(mode & 0o777, 0o640);
    }

    #[test]
    fn read_only_file_is_refused() {
        let dir = TestDir::new();
        let path = dir.write(FILE, "[plugins.arrow]\n");
        let mut permissions = fs::metadata(&path).expect("stat").permissions();
        permissions.set_readonly(true);
        fs::set_permissions(&path, permissions).expect("chmod");
        let error = set_enabled(&path, "arrow", false).expect_err("read-only");
        assert_eq!(
            error.to_string(),
            format!(
                "cannot write config file {}: the file is read-only",
                path.display()
            )
        );
        assert_eq!(dir.read(FILE), "[plugins.arrow]\n");
        assert_eq!(dir.names(), [FILE]);
    }

    #[cfg(unix)]
    #[test]
    fn edits_through_a_symlink() {
        let dir = TestDir::new();
        let target = dir.write("real.toml", "[plugins.arrow]\n");
        let link = dir.path(FILE);
        std::os::unix::fs::symlink(&target, &link).expect("symlink");
        set_enabled(&link, "arrow", false).expect("edits");
        assert_eq!(dir.read("real.toml"), "[plugins.arrow]\nenabled = false\n");
        assert!(fs::symlink_metadata(&link)
            .expect("lstat")
            .file_type()
            .is_symlink());
    }

    #[test]
    fn missing_directory_is_a_write_error() {
        let dir = TestDir::new();
        let path = dir.path("no/such/dir/plugins.toml");
        let error = set_enabled(&path, "arrow", false).expect_err("no dir");
        assert!(matches!(error, ConfigError::Write { .. }), "{error}");
    }
}
