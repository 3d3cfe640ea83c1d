//! Reading `plugins.toml` into a [`Config`]: where the file comes from
//! ([`resolve_config_path`]), defaults, and the validating walk over the
//! document (`Reader`) that turns each problem into one [`ConfigError`] at a
//! [`Location`], or a warning line for an unknown key or a clamped priority.
//!
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
//! Decision: an empty `STOWAGE_CONFIG` counts as unset.
//! Decision: `isolation` (`[host]` default, `[plugins.NAME]` override) is
//! `"in-process"` or `"process"`; `timeout_ms` and `max_memory_mb` are
//! positive integers (0 or a negative number is an error: a zero timeout
//! or cap could never let a call through). They are read for every plugin
//! but only act on isolated ones (SPEC §14); `max_memory_mb` unset means no
//! cap. `[host] runner` names the `stowage-runner` executable (relative to
//! this file); without it the host looks beside its own executable.

use std::ffi::OsStr;
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use semver::VersionReq;
use toml_edit::{Item, Key, TableLike, Value};

use super::document::{dotted, parse_document, read_text, type_name};
use super::error::{ConfigError, Location};
use crate::fallback::FALLBACK_NAME;
use crate::serializer::{is_valid_plugin_name, MAX_PLUGIN_PRIORITY};
use crate::store::{S3Options, S3Url};

/// The config file used when neither `--config` nor `STOWAGE_CONFIG` names one.
pub const DEFAULT_CONFIG_FILE: &str = "plugins.toml";

/// `[host] dir` when absent, relative to the config file.
const DEFAULT_PLUGIN_DIR: &str = "plugin-libs";
/// `[store] dir` when absent, relative to the config file.
const DEFAULT_STORE_DIR: &str = "store";

/// Where a plugin's code runs (SPEC §14).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Isolation {
    /// Loaded into the host process (the default).
    #[default]
    InProcess,
    /// Loaded by a `stowage-runner` child process; calls cross a socket.
    Process,
}

impl Isolation {
    /// The name used in `plugins.toml` and `status`.
    pub fn name(self) -> &'static str {
        match self {
            Isolation::InProcess => "in-process",
            Isolation::Process => "process",
        }
    }
}

const MILLISECONDS: &str = "a positive number of milliseconds";
const MEGABYTES: &str = "a positive number of megabytes";

/// `timeout_ms` when absent: 30 s (SPEC §14).
pub const DEFAULT_TIMEOUT_MS: u64 = 30_000;

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
    /// `[host] isolation`: the default for plugins without their own.
    pub isolation: Isolation,
    /// `[host] runner`: the `stowage-runner` executable, resolved like
    /// `plugin_dir`; `None` looks beside the running executable.
    pub runner: Option<PathBuf>,
    /// `[store] url` (`file://DIR` or `s3://bucket/prefix`); when set it
    /// wins over `store_dir`.
    pub store_url: Option<String>,
    /// `[store] cache`, `[store] cache_max_mb`, `[store] gc_grace_seconds` and `[store.s3]`
    /// (`endpoint`, `region`, `allow_http`): how an S3 store is reached.
    pub s3: S3Options,
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
    /// `isolation`; `None` takes `[host] isolation`.
    pub isolation: Option<Isolation>,
    /// `timeout_ms` of one call to an isolated plugin; `None` is
    /// [`DEFAULT_TIMEOUT_MS`].
    pub timeout_ms: Option<u64>,
    /// `max_memory_mb`: `RLIMIT_DATA` of an isolated plugin's runner.
    pub max_memory_mb: Option<u64>,
}

impl PluginEntry {
    /// A table with nothing set.
    pub(super) fn new(name: &str) -> PluginEntry {
        PluginEntry {
            name: name.to_owned(),
            enabled: true,
            priority: None,
            version: None,
            library: None,
            sha256: None,
            options: Vec::new(),
            isolation: None,
            timeout_ms: None,
            max_memory_mb: None,
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
                            "isolation" => {
                                config.isolation = reader.isolation(key, item, &dotted)?
                            }
                            "runner" => {
                                config.runner = Some(base.join(reader.dir(key, item, &dotted)?))
                            }
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
                            "url" => config.store_url = Some(reader.store_url(key, item, &dotted)?),
                            "cache" => {
                                config.s3.cache = Some(base.join(reader.dir(key, item, &dotted)?))
                            }
                            "cache_max_mb" => {
                                let mb = reader.integer(key, item, &dotted)?;
                                let mb = u64::try_from(mb).map_err(|_| {
                                    reader.wrong_type(key, item, &dotted, "a non-negative integer")
                                })?;
                                config.s3.cache_max_mb = Some(mb);
                            }
                            "gc_grace_seconds" => {
                                let secs = reader.integer(key, item, &dotted)?;
                                let secs = u64::try_from(secs).map_err(|_| {
                                    reader.wrong_type(key, item, &dotted, "a non-negative integer")
                                })?;
                                config.s3.gc_grace = Some(std::time::Duration::from_secs(secs));
                            }
                            "s3" => reader.s3(key, item, &mut config.s3)?,
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
            isolation: Isolation::InProcess,
            runner: None,
            store_url: None,
            s3: S3Options::default(),
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

    /// `[store] url`: `file://DIR` or a valid `s3://bucket/prefix`.
    fn store_url(&self, key: &Key, item: &Item, dotted: &str) -> Result<String, ConfigError> {
        let url = self.dir(key, item, dotted)?;
        let checked = if url.starts_with("file://") {
            Ok(())
        } else {
            S3Url::parse(url).map(|_| ())
        };
        checked.map_err(|reason| ConfigError::BadStoreUrl {
            at: self.value_at(key, item),
            key: dotted.to_owned(),
            value: url.to_owned(),
            reason,
        })?;
        Ok(url.to_owned())
    }

    /// `[store.s3]`: `endpoint`, `region`, `allow_http`, `max_retries`,
    /// `retry_timeout_seconds`.
    fn s3(&mut self, key: &Key, item: &Item, s3: &mut S3Options) -> Result<(), ConfigError> {
        let table = self.table(key, item, "store.s3")?;
        for (name, _) in table.iter() {
            let Some((key, item)) = table.get_key_value(name) else {
                continue;
            };
            let dotted = dotted("store.s3", name);
            match name {
                "endpoint" => s3.endpoint = Some(self.dir(key, item, &dotted)?.to_owned()),
                "region" => s3.region = Some(self.dir(key, item, &dotted)?.to_owned()),
                "allow_http" => s3.allow_http = Some(self.boolean(key, item, &dotted)?),
                "max_retries" | "retry_timeout_seconds" => {
                    let n = self.integer(key, item, &dotted)?;
                    let n = u64::try_from(n).map_err(|_| {
                        self.wrong_type(key, item, &dotted, "a non-negative integer")
                    })?;
                    let (mut retries, mut timeout) = s3.retries.unwrap_or((
                        crate::store::DEFAULT_RETRIES,
                        crate::store::DEFAULT_RETRY_TIMEOUT,
                    ));
                    if name == "max_retries" {
                        retries = usize::try_from(n).unwrap_or(usize::MAX);
                    } else {
                        timeout = std::time::Duration::from_secs(n);
                    }
                    s3.retries = Some((retries, timeout));
                }
                _ => self.unknown(key, &dotted),
            }
        }
        Ok(())
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
                "isolation" => entry.isolation = Some(self.isolation(key, item, &dotted)?),
                "timeout_ms" => {
                    entry.timeout_ms = Some(self.positive(key, item, &dotted, MILLISECONDS)?)
                }
                "max_memory_mb" => {
                    entry.max_memory_mb = Some(self.positive(key, item, &dotted, MEGABYTES)?)
                }
                _ => self.unknown(key, &dotted),
            }
        }
        Ok(entry)
    }

    /// `isolation`: `"in-process"` or `"process"`.
    fn isolation(&self, key: &Key, item: &Item, dotted: &str) -> Result<Isolation, ConfigError> {
        match self.string(key, item, dotted)? {
            "in-process" => Ok(Isolation::InProcess),
            "process" => Ok(Isolation::Process),
            other => Err(ConfigError::BadValue {
                at: self.value_at(key, item),
                key: dotted.to_owned(),
                value: format!("{other:?}"),
                expected: "\"in-process\" or \"process\"",
            }),
        }
    }

    /// A positive integer (`timeout_ms`, `max_memory_mb`).
    fn positive(
        &self,
        key: &Key,
        item: &Item,
        dotted: &str,
        expected: &'static str,
    ) -> Result<u64, ConfigError> {
        let value = self.integer(key, item, dotted)?;
        match u64::try_from(value) {
            Ok(value) if value > 0 => Ok(value),
            _ => Err(ConfigError::BadValue {
                at: self.value_at(key, item),
                key: dotted.to_owned(),
                value: value.to_string(),
                expected,
            }),
        }
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
