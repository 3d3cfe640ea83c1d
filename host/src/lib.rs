//! stowage: a plugin host for serializers.
//!
//! A [`Host`] reads `plugins.toml`, discovers serializer plugins (shared
//! libraries behind the stable ABI of `stowage-plugin-api`) in the plugin
//! directory, tracks each through its lifecycle
//! ([`lifecycle::State`]) and dispatches every [`Value`] to the active
//! serializer with the best priority, falling back to the built-in
//! MessagePack serializer for plain data.
//!
//! ```no_run
//! use stowage::{Host, HostOptions, Value};
//!
//! # fn main() -> Result<(), stowage::Error> {
//! let host = Host::open(HostOptions::from_env(None))?;
//! for plugin in host.snapshot().statuses() {
//!     println!("{} {} {:?}", plugin.name, plugin.state, plugin.last_error);
//! }
//! let serialized = host.serialize_to_memory(&Value::Int(42), &[])?;
//! println!("stored by {}", serialized.plugin);
//! # Ok(())
//! # }
//! ```
//!
//! Module map: [`config`] reads the configuration, [`loader`] opens one
//! library (the only module that touches the ABI), [`lifecycle`] computes
//! states, [`registry`] dispatches, [`fallback`] is the built-in serializer,
//! [`value`] is the public value type. See ARCHITECTURE.md.

pub mod config;
pub mod data;
pub mod fallback;
pub mod lifecycle;
pub mod loader;
pub mod registry;
pub mod serializer;
pub mod store;
pub mod text;
pub mod value;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

pub use config::{Config, ConfigError};
pub use data::{Loaded, Saved};
pub use lifecycle::{Origin, PluginStatus, Snapshot, State};
pub use registry::{Answer, Attempt, DispatchError, Skipped};
pub use serializer::{ArtifactMeta, BlobSink, MemorySink, Written};
pub use store::{Record, Store, StoreError};
pub use value::{ArrowTable, Buffer, ClassSource, JsonError, Kind, Tensor, TensorMap, Value};

/// Everything a [`Host`] call can fail with.
///
/// Decision: errors about an artifact's content (dispatch, JSON, empty
/// input) are wrapped in [`Error::Artifact`] by [`Error::storing`] and
/// [`Error::loading`], so the message starts with `cannot store NAME:` or
/// `cannot load NAME:`; store and config errors pass through as they are
/// (they name their own subject, e.g. "no artifact named N", which
/// `get` must print unchanged). `save_many` names the failing artifact for
/// every error.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration (file or toggles) is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// No serializer could handle the request.
    #[error(transparent)]
    Dispatch(#[from] DispatchError),
    /// The artifact store failed (including "no artifact named N").
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A JSON document has no value form (an integer beyond i64, …).
    #[error(transparent)]
    Json(#[from] JsonError),
    /// The input of a `put` is empty (`-` is stdin).
    #[error("{} is empty", input_label(.input))]
    EmptyInput {
        /// The file, or `-`.
        input: String,
    },
    /// Storing or loading one artifact failed; a failed store (or any
    /// artifact of a failed batch) committed nothing.
    #[error("cannot {action} {}: {source}", quote_capped(.name, MAX_QUOTED_NAME))]
    Artifact {
        /// Whether it was being stored or loaded.
        action: Action,
        /// The artifact.
        name: String,
        /// Why.
        source: Box<Error>,
    },
}

/// What was being done to an artifact when it failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// `save`, `save_many`, `put`.
    Store,
    /// `load`, `get`, `show`.
    Load,
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Action::Store => "store",
            Action::Load => "load",
        })
    }
}

impl Error {
    /// Whether this is "no artifact named N".
    pub fn is_not_found(&self) -> bool {
        match self {
            Error::Store(error) => error.is_not_found(),
            Error::Artifact { source, .. } => source.is_not_found(),
            _ => false,
        }
    }

    /// `error` while storing `name`, named if it is about the content (see
    /// the type's decision).
    pub fn storing(name: &str, error: impl Into<Error>) -> Error {
        Error::about(Action::Store, name, error.into())
    }

    /// `error` while loading `name`, named if it is about the content.
    pub fn loading(name: &str, error: impl Into<Error>) -> Error {
        Error::about(Action::Load, name, error.into())
    }

    fn about(action: Action, name: &str, error: Error) -> Error {
        match error {
            Error::Dispatch(_) | Error::Json(_) | Error::EmptyInput { .. } => Error::Artifact {
                action,
                name: name.to_owned(),
                source: Box::new(error),
            },
            other => other,
        }
    }
}

/// `stdin` for `-`, else the file name, quoted capped.
fn input_label(input: &str) -> String {
    if input == "-" {
        "stdin".to_owned()
    } else {
        quote_capped(input, MAX_QUOTED_NAME)
    }
}

/// Characters of an artifact or file name quoted in errors.
pub const MAX_QUOTED_NAME: usize = 80;

/// `text` as errors quote it: control characters escaped (`\n`, `\u{1b}`)
/// and at most `max_chars` characters, a longer text cut and marked
/// `… (N bytes)` with its full length. Every error quoting user- or
/// plugin-supplied text of unbounded length (option keys and values, names,
/// plugin messages, JSON literals) goes through this.
pub fn quote_capped(text: &str, max_chars: usize) -> String {
    let mut out = String::new();
    let mut chars = 0;
    for c in text.chars() {
        let escaped: String = if c.is_control() {
            c.escape_default().collect()
        } else {
            c.to_string()
        };
        chars += escaped.chars().count();
        if chars > max_chars {
            out.push_str(&format!("… ({} bytes)", text.len()));
            return out;
        }
        out.push_str(&escaped);
    }
    out
}

/// Where a host takes its configuration from.
#[derive(Debug, Clone)]
pub struct HostOptions {
    /// The config file.
    pub config_path: PathBuf,
    /// Whether the path was given explicitly (then it must exist).
    pub config_explicit: bool,
    /// `STOWAGE_PLUGINS`-style toggles for this process.
    pub toggles: Option<String>,
    /// Store directory overriding `[store] dir` (`--store DIR`).
    pub store_dir: Option<PathBuf>,
    /// Directories of bundled plugins, searched after the configured one
    /// (origin `bundled`; the Python wheel ships its plugins this way).
    pub bundled_plugin_dirs: Vec<PathBuf>,
}

impl HostOptions {
    /// `--config PATH` (if given), else `STOWAGE_CONFIG`, else
    /// `./plugins.toml`; toggles from `STOWAGE_PLUGINS`.
    pub fn from_env(config_flag: Option<&Path>) -> Self {
        let env_config: Option<OsString> = std::env::var_os("STOWAGE_CONFIG");
        let (config_path, config_explicit) =
            config::resolve_config_path(config_flag, env_config.as_deref());
        HostOptions {
            config_path,
            config_explicit,
            toggles: std::env::var("STOWAGE_PLUGINS").ok(),
            store_dir: None,
            bundled_plugin_dirs: Vec::new(),
        }
    }

    /// An explicit config file and no toggles (what tests and embedders use).
    pub fn with_config(path: impl Into<PathBuf>) -> Self {
        HostOptions {
            config_path: path.into(),
            config_explicit: true,
            toggles: None,
            store_dir: None,
            bundled_plugin_dirs: Vec::new(),
        }
    }
}

/// A value serialized into memory.
#[derive(Debug, Clone, PartialEq)]
pub struct Serialized {
    /// The serializer that won.
    pub plugin: String,
    /// Its version.
    pub plugin_version: String,
    /// What it reported.
    pub written: Written,
    /// The blobs.
    pub blobs: Vec<(String, Vec<u8>)>,
    /// Candidates that failed before it.
    pub skipped: Vec<Skipped>,
}

/// The plugin host. `Send + Sync`: dispatch from many threads at once; a
/// rescan swaps in a new snapshot without blocking them.
pub struct Host {
    options: HostOptions,
    lifecycle: Mutex<lifecycle::Lifecycle>,
    snapshot: RwLock<Arc<Snapshot>>,
    store: Mutex<Option<Arc<Store>>>,
}

impl Host {
    /// Reads the configuration and loads every plugin it finds.
    pub fn open(mut options: HostOptions) -> Result<Host, Error> {
        // Absolute, so status, warnings and derived directories do not
        // depend on where the reader stands.
        if let Ok(absolute) = std::path::absolute(&options.config_path) {
            options.config_path = absolute;
        }
        let mut lifecycle =
            lifecycle::Lifecycle::with_bundled_dirs(options.bundled_plugin_dirs.clone());
        let (config, toggles) = load_config(&options)?;
        let snapshot = lifecycle.rescan(config, &toggles);
        Ok(Host {
            options,
            lifecycle: Mutex::new(lifecycle),
            snapshot: RwLock::new(Arc::new(snapshot)),
            store: Mutex::new(None),
        })
    }

    /// Re-reads the configuration and the plugin directory: pending plugins
    /// whose file or dependency arrived turn active, toggles take effect.
    /// On a config error the previous state is kept and the error returned.
    pub fn rescan(&self) -> Result<(), Error> {
        let (config, toggles) = load_config(&self.options)?;
        let mut lifecycle = self
            .lifecycle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let snapshot = Arc::new(lifecycle.rescan(config, &toggles));
        *self
            .snapshot
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = snapshot;
        Ok(())
    }

    /// The current state of every serializer.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        Arc::clone(
            &self
                .snapshot
                .read()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        )
    }

    /// Where the configuration was read from.
    pub fn config_path(&self) -> &Path {
        &self.options.config_path
    }

    /// Serializes `value` with the best active serializer, each attempt
    /// writing into a fresh sink from `new_sink`.
    pub fn serialize_with<S: BlobSink>(
        &self,
        value: &Value,
        options: &[(String, String)],
        new_sink: &mut dyn FnMut(&registry::Route) -> Result<S, String>,
    ) -> Result<registry::Dispatched<(S, Written)>, Error> {
        Ok(self.snapshot().table.serialize(value, options, new_sink)?)
    }

    /// Serializes `value` into memory.
    pub fn serialize_to_memory(
        &self,
        value: &Value,
        options: &[(String, String)],
    ) -> Result<Serialized, Error> {
        let dispatched = self.serialize_with(value, options, &mut |_| Ok(MemorySink::default()))?;
        let (sink, written) = dispatched.output;
        Ok(Serialized {
            plugin: dispatched.route.name.clone(),
            plugin_version: dispatched.route.serializer.info().version.to_string(),
            written,
            blobs: sink.blobs,
            skipped: dispatched.skipped,
        })
    }

    /// Rebuilds a value from its metadata and blobs with the first active
    /// reader of its encoding.
    pub fn deserialize(
        &self,
        meta: &ArtifactMeta,
        writer: (&str, &str),
        blobs: &[(String, Buffer)],
    ) -> Result<registry::Dispatched<Value>, Error> {
        Ok(self.snapshot().table.deserialize(meta, writer, blobs)?)
    }
}

impl Host {
    /// Writes the artifact in its standard file format (`stowage get`).
    pub fn export(
        &self,
        meta: &ArtifactMeta,
        writer: (&str, &str),
        blobs: &[(String, Buffer)],
        out: &mut dyn std::io::Write,
    ) -> Result<registry::Dispatched<()>, Error> {
        // Each attempt writes into memory first so a failing candidate never
        // leaves half a file behind.
        let dispatched = self
            .snapshot()
            .table
            .with_reader(meta, writer, "export", &mut |s| {
                let mut file = Vec::new();
                s.export(meta, blobs, &mut file).map(|()| file)
            })?;
        out.write_all(&dispatched.output)
            .map_err(|e| DispatchError::Sink(format!("writing the exported file: {e}")))?;
        Ok(registry::Dispatched {
            route: dispatched.route,
            output: (),
            skipped: dispatched.skipped,
        })
    }

    /// The WIRE rendering of an artifact (`stowage show`); a reader without
    /// `describe` (a 1.0 plugin) gets the generic rendering.
    pub fn describe(
        &self,
        meta: &ArtifactMeta,
        writer: (&str, &str),
        blobs: &[(String, Buffer)],
    ) -> Result<registry::Dispatched<String>, Error> {
        Ok(self
            .snapshot()
            .table
            .with_reader(meta, writer, "describe", &mut |s| {
                Ok(s.describe(meta, blobs)?
                    .unwrap_or_else(|| generic_description(meta)))
            })?)
    }
}

/// Type, encoding and blob sizes: the rendering used when a serializer has
/// no `describe`.
pub fn generic_description(meta: &ArtifactMeta) -> String {
    let mut out = format!(
        "{} ({} v{})",
        meta.obj_type, meta.encoding, meta.encoding_version
    );
    for (name, size) in &meta.blobs {
        out.push_str(&format!("\n  blob {name}: {size} bytes"));
    }
    out
}

fn load_config(options: &HostOptions) -> Result<(Config, Vec<(String, bool)>), Error> {
    let config = if options.config_explicit {
        Config::load(&options.config_path)?
    } else {
        Config::load_default(&options.config_path)?
    };
    let toggles = match &options.toggles {
        Some(spec) => config::EnvToggles::parse(spec)?.toggles,
        None => Vec::new(),
    };
    Ok((config, toggles))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quote_capped_escapes_controls_and_cuts_with_the_full_length() {
        assert_eq!(quote_capped("plain", 80), "plain");
        assert_eq!(quote_capped("a\tb\u{1b}", 80), "a\\tb\\u{1b}");
        assert_eq!(quote_capped("ééééé", 3), "ééé… (10 bytes)");
        assert_eq!(quote_capped("ab\ncd", 3), "ab… (5 bytes)");
        assert_eq!(quote_capped(&"x".repeat(80), 80), "x".repeat(80));
    }

    #[test]
    fn storing_names_content_errors_and_passes_store_errors_through() {
        let empty = Error::storing("x", Error::EmptyInput { input: "-".into() });
        assert_eq!(empty.to_string(), "cannot store x: stdin is empty");
        let named_twice = Error::loading("y", empty);
        assert_eq!(named_twice.to_string(), "cannot store x: stdin is empty");
        let dispatch = Error::loading(
            "a\nb",
            DispatchError::NotActive {
                plugin: "arrow".into(),
            },
        );
        assert_eq!(
            dispatch.to_string(),
            "cannot load a\\nb: plugin arrow is not active"
        );
    }
}
