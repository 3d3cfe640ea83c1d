//! [`Host`], the library's front door: every method a user calls, each a
//! thin delegate to the module that does the work — [`crate::lifecycle`]
//! (open, rescan, status), [`crate::registry`] (dispatch over values and
//! blobs in memory) and [`crate::artifact`] (saving and loading through the
//! store).
//!
//! Invariant: a `Host` is `Send + Sync`. The snapshot of active serializers
//! is an `Arc` swapped by `rescan`, so dispatch never waits on a rescan; the
//! store is opened once, on first use.
//!
//! Decision: the store is opened lazily, so `status`, `enable` and `explain`
//! work without a store directory (and on a read-only file system).

use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use crate::artifact::{self, Loaded, Saved};
use crate::config::{self, Config};
use crate::lifecycle::{Lifecycle, PluginStatus, Snapshot};
use crate::registry::{Dispatched, Skipped, WrittenBy};
use crate::serializer::{ArtifactMeta, MemorySink, Written};
use crate::store::{BlobData, Record, Store, Verify};
use crate::value::{Buffer, Value};
use crate::Error;

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
    /// Store URL (`file://DIR`, `s3://bucket/prefix`) overriding `[store]`
    /// (`--store URL`); wins over `store_dir`.
    pub store_url: Option<String>,
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
            store_url: None,
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
            store_url: None,
            bundled_plugin_dirs: Vec::new(),
        }
    }

    /// The configuration and the toggles these options name.
    fn load(&self) -> Result<(Config, Vec<(String, bool)>), Error> {
        let config = if self.config_explicit {
            Config::load(&self.config_path)?
        } else {
            Config::load_default(&self.config_path)?
        };
        let toggles = match &self.toggles {
            Some(spec) => config::EnvToggles::parse(spec)?.toggles,
            None => Vec::new(),
        };
        Ok((config, toggles))
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
    lifecycle: Mutex<Lifecycle>,
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
        let mut lifecycle = Lifecycle::with_bundled_dirs(options.bundled_plugin_dirs.clone());
        let (config, toggles) = options.load()?;
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
        let (config, toggles) = self.options.load()?;
        let mut lifecycle = self
            .lifecycle
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let snapshot = Arc::new(lifecycle.rescan(config, &toggles));
        *self
            .snapshot
            .write()
            .unwrap_or_else(PoisonError::into_inner) = snapshot;
        Ok(())
    }

    /// The current state of every serializer.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        Arc::clone(&self.snapshot.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Where the configuration was read from.
    pub fn config_path(&self) -> &Path {
        &self.options.config_path
    }

    /// The status document of SPEC §7 (`stowage status --json`, Python's
    /// `Host.status()`): `{"config", "dir", "serializers", "warnings"}`,
    /// serializers in status order. Its keys are a stable API.
    pub fn status_json(&self) -> serde_json::Value {
        let snapshot = self.snapshot();
        let serializers: Vec<serde_json::Value> = snapshot
            .statuses()
            .iter()
            .map(PluginStatus::to_json)
            .collect();
        serde_json::json!({
            "config": self.config_path().display().to_string(),
            "dir": snapshot.config.plugin_dir.display().to_string(),
            "serializers": serializers,
            "warnings": snapshot.warnings,
        })
    }

    /// The artifact store, opened on first use: [`HostOptions::store_url`],
    /// else [`HostOptions::store_dir`], else `[store] url`, else
    /// `[store] dir`.
    pub fn store(&self) -> Result<Arc<Store>, Error> {
        let mut slot = self.store.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(store) = slot.as_ref() {
            return Ok(Arc::clone(store));
        }
        let snapshot = self.snapshot();
        let config = &snapshot.config;
        let store = match (&self.options.store_url, &self.options.store_dir) {
            (Some(url), _) => Store::open_url(url, &config.s3)?,
            (None, Some(dir)) => Store::open(dir)?,
            (None, None) => match &config.store_url {
                Some(url) => Store::open_url(url, &config.s3)?,
                None => Store::open(&config.store_dir)?,
            },
        };
        let store = Arc::new(store);
        *slot = Some(Arc::clone(&store));
        Ok(store)
    }

    // ---- values in memory, no store ----

    /// Serializes `value` into memory with the best active serializer.
    pub fn serialize_to_memory(
        &self,
        value: &Value,
        options: &[(String, String)],
    ) -> Result<Serialized, Error> {
        let dispatched = self
            .snapshot()
            .table
            .serialize(value, options, &mut |_| Ok(MemorySink::default()))?;
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
        writer: &WrittenBy,
        blobs: &[(String, Buffer)],
    ) -> Result<Dispatched<Value>, Error> {
        Ok(self.snapshot().table.deserialize(meta, writer, blobs)?)
    }

    /// Writes an artifact in its standard file format to `out`, streaming
    /// (see [`Host::export_artifact`] for what happens when a reader fails).
    pub fn export(
        &self,
        meta: &ArtifactMeta,
        writer: &WrittenBy,
        blobs: &[(String, Buffer)],
        out: &mut dyn Write,
    ) -> Result<Dispatched<()>, Error> {
        artifact::export(&self.snapshot().table, meta, writer, blobs, out)
    }

    /// The WIRE rendering of an artifact (`stowage show`); a reader without
    /// `describe` (a 1.0 plugin) gets the generic rendering.
    pub fn describe(
        &self,
        meta: &ArtifactMeta,
        writer: &WrittenBy,
        blobs: &[(String, Buffer)],
    ) -> Result<Dispatched<String>, Error> {
        artifact::describe(&self.snapshot().table, meta, writer, blobs)
    }

    // ---- artifacts in the store ----

    /// Serializes `value` with the best serializer and stores it as `name`
    /// (replacing any older artifact of that name once committed).
    pub fn save(
        &self,
        name: &str,
        value: &Value,
        options: &[(String, String)],
    ) -> Result<Saved, Error> {
        self.save_from(name, value, options, "api")
    }

    /// [`Host::save`], recording `source` in `serializer_info` (unless the
    /// serializer set it): what `stowage put --json FILE` uses, with the
    /// file's path (`-` for stdin), so the value goes through the same
    /// priority dispatch as any saved value.
    pub fn save_from(
        &self,
        name: &str,
        value: &Value,
        options: &[(String, String)],
        source: &str,
    ) -> Result<Saved, Error> {
        let store = self.store()?;
        let table = &self.snapshot().table;
        artifact::save(table, &store, name, value, options, source, None)
    }

    /// [`Host::save`], recording `caller_type` — the value's type as the
    /// caller's language names it (Python: `module.qualname[params]`) — in
    /// the record's optional `caller_type` key, beside the serializer's
    /// `obj_type` (which readers dispatch on, so it stays the plugin's).
    pub fn save_typed(
        &self,
        name: &str,
        value: &Value,
        options: &[(String, String)],
        caller_type: &str,
    ) -> Result<Saved, Error> {
        let store = self.store()?;
        let table = &self.snapshot().table;
        artifact::save(
            table,
            &store,
            name,
            value,
            options,
            "api",
            Some(caller_type),
        )
    }

    /// Saves many values with one durable commit. All or nothing: if one
    /// fails, none is committed and the error names it.
    pub fn save_many(
        &self,
        items: &[(&str, &Value)],
        options: &[(String, String)],
    ) -> Result<Vec<Record>, Error> {
        let items: Vec<_> = items.iter().map(|&(n, v)| (n, v, None)).collect();
        let saved = self.save_many_typed(&items, options)?;
        Ok(saved.into_iter().map(|s| s.record).collect())
    }

    /// [`Host::save_many`] with each value's caller type (see
    /// [`Host::save_typed`]); returns each save with the candidates that
    /// failed before its winner.
    pub fn save_many_typed(
        &self,
        items: &[(&str, &Value, Option<&str>)],
        options: &[(String, String)],
    ) -> Result<Vec<Saved>, Error> {
        let store = self.store()?;
        artifact::save_many(&self.snapshot().table, &store, items, options)
    }

    /// Stores a file in some plugin's standard format: the first active
    /// plugin whose `sniff` claims it ingests it (or `only`, if named).
    /// `source` is recorded in `serializer_info`.
    pub fn put_file(
        &self,
        name: &str,
        file: &[u8],
        only: Option<&str>,
        options: &[(String, String)],
        source: &str,
    ) -> Result<Saved, Error> {
        self.put_file_with(name, file, only, options, source, &|_| {})
    }

    /// [`Host::put_file`], reporting bytes written as they stream (progress).
    pub fn put_file_with(
        &self,
        name: &str,
        file: &[u8],
        only: Option<&str>,
        options: &[(String, String)],
        source: &str,
        progress: &dyn Fn(u64),
    ) -> Result<Saved, Error> {
        let store = self.store()?;
        let input = artifact::Input { file, only, source };
        artifact::put_file(
            &self.snapshot().table,
            &store,
            name,
            &input,
            options,
            progress,
        )
    }

    /// Stores a composite from a directory export read back (`stowage put
    /// NAME DIR`): `tree` and `files` as [`crate::composite::skeleton_from_json`]
    /// gives them, each file's bytes beside its reference.
    #[doc(hidden)]
    pub fn put_composite(
        &self,
        name: &str,
        kind: crate::value::Kind,
        tree: &rmpv::Value,
        files: &[(crate::composite::FileRef, &[u8])],
        source: &str,
    ) -> Result<Saved, Error> {
        let store = self.store()?;
        let table = &self.snapshot().table;
        artifact::put_composite(table, &store, name, kind, tree, files, source)
    }

    /// The record and blobs of `name`: re-hashed ([`Verify::Hash`]) or
    /// mapped as they are ([`Verify::None`]).
    pub fn load_raw(
        &self,
        name: &str,
        verify: Verify,
    ) -> Result<(Record, Vec<(String, BlobData)>), Error> {
        artifact::load_raw(&*self.store()?, name, verify)
    }

    /// Loads `name`, re-hashing every blob first: corrupt data is an error,
    /// never a value.
    pub fn load(&self, name: &str) -> Result<Loaded, Error> {
        artifact::load(&self.snapshot().table, &*self.store()?, name, Verify::Hash)
    }

    /// Loads `name` without re-hashing: raw blobs are memory-mapped, so this
    /// is O(1) in their size and zero-copy where the reader allows.
    /// **Unverified**: a corrupted blob is handed to the reader as it is.
    pub fn load_mapped(&self, name: &str) -> Result<Loaded, Error> {
        artifact::load(&self.snapshot().table, &*self.store()?, name, Verify::None)
    }

    /// Loads every one of `names`, re-hashing every blob (as
    /// [`Host::load`]), all or nothing, in order; the error names the
    /// artifact that failed. On an object store this is the fast way to
    /// read many artifacts: the lookups run concurrently and the small
    /// blobs of one pack come in one request, where [`Host::load`] makes
    /// a round of requests per artifact.
    pub fn load_many(&self, names: &[&str]) -> Result<Vec<Loaded>, Error> {
        artifact::load_many(&self.snapshot().table, &*self.store()?, names, Verify::Hash)
    }

    /// [`Host::load_many`] without re-hashing, as [`Host::load_mapped`].
    pub fn load_many_mapped(&self, names: &[&str]) -> Result<Vec<Loaded>, Error> {
        artifact::load_many(&self.snapshot().table, &*self.store()?, names, Verify::None)
    }

    /// Writes `name` in its standard file format to `out` (verified first),
    /// streaming: the exporter's bytes go straight to `out`, never through
    /// a buffer of the whole file.
    ///
    /// A reader that fails before writing anything is skipped and the next
    /// one tried, as in every dispatch; once bytes have reached `out` no
    /// other reader is tried, since `out` already holds part of a file: the
    /// export fails naming the reader. A failure of `out` itself is
    /// [`Error::Output`], blamed on no reader. Callers writing to a file
    /// write to a temp file they discard on error.
    pub fn export_artifact(
        &self,
        name: &str,
        out: &mut dyn Write,
    ) -> Result<(Record, Vec<Skipped>), Error> {
        artifact::export_artifact(&self.snapshot().table, &*self.store()?, name, out)
    }

    /// The WIRE rendering of `name` (verified first).
    pub fn describe_artifact(&self, name: &str) -> Result<(String, Vec<Skipped>), Error> {
        artifact::describe_artifact(&self.snapshot().table, &*self.store()?, name)
    }
}
