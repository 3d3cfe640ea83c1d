//! Plugin lifecycle: discovery, toggles, loading and the state of every
//! serializer (`known` → `importing` → `active` | `broken` | `pending`, plus
//! `disabled`), recomputed by each rescan.
//!
//! A rescan reads the config and the plugin directory, opens libraries it has
//! not opened yet (through [`crate::loader`]), resolves `requires` between
//! plugins and produces a [`Snapshot`]: the status rows and the
//! [`DispatchTable`] of active serializers. Every state change is logged on
//! target `stowage::lifecycle`.
//!
//! Rooms: this file discovers candidates, opens libraries and keeps state
//! across rescans; `resolve.rs` decides what a loaded candidate becomes
//! (toggles, declaration checks, `requires`, pending, broken, cycles);
//! `status.rs` holds what a rescan shows ([`State`], [`PluginStatus`],
//! [`Snapshot`]).
//!
//! Invariants:
//! - a library is opened at most once per file version; a loaded library is
//!   never unloaded or reloaded (a changed file only raises a warning);
//! - a failed open is remembered per file version, so a broken library's
//!   initialisers do not rerun on every rescan; a missing shared-library
//!   dependency, or any other `dlopen` failure, is retried on every rescan.
//!
//! Decision: before a directory library is opened its provisional name is its
//! file stem without the platform prefix and a leading `stowage_`, with `_`
//! read as `-` (the inverse of the default library stem of a config table),
//! so `libstowage_needs_native.so` is `needs-native` before and after it
//! loads; toggles match that name or, once loaded, the declared one (`-` and
//! `_` are equivalent when matching toggles).
//! Decision: a process-isolated library (SPEC §14) is never opened in the
//! host: `loader::open_isolated` starts its runner, and the plugin (with
//! the declaration from the runner's hello) is kept per file version like
//! any loaded library. Unlike an in-process library, a changed file is
//! simply reloaded at the next rescan (a new runner), and so is a plugin
//! that broke after repeated crashes once its file changes. A change of
//! isolation settings (mode, timeout, cap, runner) reloads it too. A
//! runner's failure to load its library (its reason, or its death while
//! loading) is remembered per file version like any failed open; a runner
//! that could not be started at all is retried on every rescan.
//! Decision: a configured `priority` is shown whatever the state (pending,
//! broken, disabled); an unloaded plugin without one shows none.

mod resolve;
mod status;

use std::collections::{HashMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

pub use resolve::ResolveError;
pub use status::{Origin, PluginStatus, Snapshot, State};

use crate::composite::{Composite, COMPOSITE_NAME};
use crate::config::{Config, Isolation, PluginEntry, DEFAULT_TIMEOUT_MS};
use crate::fallback::{Fallback, FALLBACK_NAME, FALLBACK_PRIORITY};
use crate::isolation::process::runner_exe;
use crate::loader::{self, Checks, IsolatedPlugin, IsolationSettings, LoadError, Opened};
use crate::registry::{DispatchTable, Route, Stats};
use crate::serializer::{PluginInfo, Serializer, MAX_PLUGIN_PRIORITY};
use resolve::{apply_toggles, check_loaded, resolve_requirements, same_name, Candidate};
use status::Row;

/// Identity of a file version, to notice replacement.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FileStamp {
    len: u64,
    modified: Option<SystemTime>,
    inode: u64,
}

impl FileStamp {
    fn of(path: &Path) -> Option<FileStamp> {
        let meta = fs::metadata(path).ok()?;
        #[cfg(unix)]
        let inode = std::os::unix::fs::MetadataExt::ino(&meta);
        #[cfg(not(unix))]
        let inode = 0;
        Some(FileStamp {
            len: meta.len(),
            modified: meta.modified().ok(),
            inode,
        })
    }
}

enum Outcome {
    Loaded(Arc<dyn Serializer>),
    Failed(LoadError),
    MissingDependency(String),
}

struct Library {
    stamp: Option<FileStamp>,
    outcome: Outcome,
    load_ms: f64,
    /// The settings it was opened with (`None`: in-process).
    settings: Option<IsolationSettings>,
    /// The plugin, when it runs in its own process.
    isolated: Option<Arc<IsolatedPlugin>>,
}

/// Lifecycle state kept across rescans.
#[derive(Default)]
pub(crate) struct Lifecycle {
    libraries: HashMap<PathBuf, Library>,
    stats: HashMap<String, Arc<Stats>>,
    states: HashMap<String, State>,
    fallback: Arc<Fallback>,
    composite: Arc<Composite>,
    bundled_dirs: Vec<PathBuf>,
}

/// File name of the library for a stem on this platform.
pub fn library_file_name(stem: &str) -> String {
    format!(
        "{}{stem}{}",
        std::env::consts::DLL_PREFIX,
        std::env::consts::DLL_SUFFIX
    )
}

fn provisional_name(path: &Path) -> String {
    let file = path
        .file_name()
        .and_then(|f| f.to_str())
        .unwrap_or_default();
    let stem = file
        .strip_suffix(std::env::consts::DLL_SUFFIX)
        .unwrap_or(file);
    let stem = stem
        .strip_prefix(std::env::consts::DLL_PREFIX)
        .unwrap_or(stem);
    // Library stems spell `-` as `_` (`PluginEntry::library_stem`); undone
    // here so the name before loading is the one the plugin declares.
    stem.strip_prefix("stowage_")
        .unwrap_or(stem)
        .replace('_', "-")
}

/// Library files directly in `dir`: platform suffix, no dotfiles, no `*.tmp`.
/// A missing directory is only worth a warning when a config file named it.
fn scan_dir(dir: &Path, configured: bool, warnings: &mut Vec<String>) -> Vec<PathBuf> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound && !configured => {
            return Vec::new()
        }
        Err(error) => {
            warnings.push(format!("plugin directory {}: {error}", dir.display()));
            return Vec::new();
        }
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .filter(|entry| {
            let name = entry.file_name();
            let Some(name) = name.to_str() else {
                return false;
            };
            !name.starts_with('.')
                && !name.ends_with(".tmp")
                && name.ends_with(std::env::consts::DLL_SUFFIX)
                && entry.path().is_file()
        })
        .map(|entry| entry.path())
        .collect();
    files.sort();
    files
}

impl Lifecycle {
    /// A lifecycle that also searches `dirs`, after the configured plugin
    /// directory, for bundled libraries (origin `bundled`).
    ///
    /// Decision: a bundled library is skipped when a candidate of its name
    /// already has a library file (a config table's or the plugin
    /// directory's: those override it); a config table whose own file is
    /// missing takes the bundled file (its `enabled`/`priority` apply, so
    /// a config can disable bundled plugins); autoload applies as in the
    /// plugin directory.
    pub(crate) fn with_bundled_dirs(dirs: Vec<PathBuf>) -> Lifecycle {
        Lifecycle {
            bundled_dirs: dirs,
            ..Lifecycle::default()
        }
    }

    /// Recomputes every state from `config`, the plugin directory and
    /// `toggles` (name → enabled, from `STOWAGE_PLUGINS`).
    pub fn rescan(&mut self, config: Config, toggles: &[(String, bool)]) -> Snapshot {
        let mut warnings = config.warnings.clone();
        let mut candidates = self.discover(&config, &mut warnings);
        apply_toggles(&mut candidates, toggles, &mut warnings);
        for candidate in &mut candidates {
            self.load(candidate, &config, &mut warnings);
        }
        check_loaded(&mut candidates);
        resolve_requirements(&mut candidates);
        for candidate in &mut candidates {
            if candidate.state == State::Importing
                || candidate.state == State::Known && candidate.is_candidate_for_active()
            {
                candidate.state = State::Active;
            }
        }
        self.log_transitions(&candidates);
        self.snapshot(candidates, warnings, config)
    }

    fn discover(&mut self, config: &Config, warnings: &mut Vec<String>) -> Vec<Candidate> {
        let new = |name: String, origin, path, entry: Option<&PluginEntry>| Candidate {
            name,
            origin,
            builtin: false,
            path,
            entry: entry.cloned(),
            enabled: entry.is_none_or(|e| e.enabled),
            autoload_off: false,
            state: State::Known,
            awaiting: None,
            error: None,
            serializer: None,
            load_ms: None,
            isolation: Some(entry.and_then(|e| e.isolation).unwrap_or(config.isolation)),
            isolated: None,
        };
        let fallback_entry = config.entry(FALLBACK_NAME);
        let mut fallback = new(
            FALLBACK_NAME.to_owned(),
            Origin::Builtin,
            None,
            fallback_entry,
        );
        fallback.builtin = true;
        fallback.isolation = None;
        fallback.serializer = Some(Arc::clone(&self.fallback) as Arc<dyn Serializer>);
        let mut composite = new(
            COMPOSITE_NAME.to_owned(),
            Origin::Builtin,
            None,
            config.entry(COMPOSITE_NAME),
        );
        composite.builtin = true;
        composite.isolation = None;
        composite.serializer = Some(Arc::clone(&self.composite) as Arc<dyn Serializer>);
        let mut candidates = vec![fallback, composite];

        for entry in config
            .plugins
            .iter()
            .filter(|e| e.name != FALLBACK_NAME && e.name != COMPOSITE_NAME)
        {
            let path = config
                .plugin_dir
                .join(library_file_name(&entry.library_stem()));
            candidates.push(new(
                entry.name.clone(),
                Origin::Config,
                Some(path),
                Some(entry),
            ));
        }
        let claimed: HashSet<PathBuf> = candidates.iter().filter_map(|c| c.path.clone()).collect();
        for path in scan_dir(&config.plugin_dir, config.exists, warnings) {
            if claimed.contains(&path) {
                continue;
            }
            let mut candidate = new(
                provisional_name(&path),
                Origin::Directory,
                Some(path.clone()),
                None,
            );
            if !config.autoload {
                candidate.enabled = false;
                candidate.autoload_off = true;
                warnings.push(format!("{}: not loaded: autoload is off", path.display()));
            }
            candidates.push(candidate);
        }
        for dir in &self.bundled_dirs {
            for path in scan_dir(dir, false, warnings) {
                let name = provisional_name(&path);
                if let Some(existing) = candidates.iter_mut().find(|c| same_name(&c.name, &name)) {
                    let file_missing = existing.path.as_ref().is_some_and(|p| !p.exists());
                    if existing.origin == Origin::Config && file_missing {
                        existing.path = Some(path);
                        existing.origin = Origin::Bundled;
                    }
                    continue;
                }
                let mut candidate = new(name, Origin::Bundled, Some(path.clone()), None);
                if !config.autoload {
                    candidate.enabled = false;
                    candidate.autoload_off = true;
                    warnings.push(format!("{}: not loaded: autoload is off", path.display()));
                }
                candidates.push(candidate);
            }
        }
        candidates
    }

    fn load(&mut self, candidate: &mut Candidate, config: &Config, warnings: &mut Vec<String>) {
        if candidate.builtin {
            return;
        }
        let Some(path) = candidate.path.clone() else {
            return;
        };
        let stamp = FileStamp::of(&path);
        let settings = match candidate.isolation {
            Some(Isolation::Process) => Some(IsolationSettings {
                runner: runner_exe(config.runner.as_deref()),
                timeout_ms: candidate
                    .entry
                    .as_ref()
                    .and_then(|e| e.timeout_ms)
                    .unwrap_or(DEFAULT_TIMEOUT_MS),
                max_memory_mb: candidate.entry.as_ref().and_then(|e| e.max_memory_mb),
            }),
            _ => None,
        };
        let loaded_before = matches!(
            self.libraries.get(&path),
            Some(Library {
                outcome: Outcome::Loaded(_),
                ..
            })
        );
        if !candidate.enabled {
            // Not opened for a disabled plugin; one loaded earlier still shows
            // what it is.
            if let Some(Library {
                outcome: Outcome::Loaded(serializer),
                load_ms,
                ..
            }) = self.libraries.get(&path)
            {
                candidate.serializer = Some(Arc::clone(serializer));
                candidate.load_ms = Some(*load_ms);
            }
            return;
        }
        if stamp.is_none() && !loaded_before {
            candidate.wait_for(path.display().to_string());
            return;
        }
        let reuse = match self.libraries.get(&path) {
            // An isolated library was never mapped here: a new version, or
            // new settings, simply get a new runner.
            Some(Library {
                outcome: Outcome::Loaded(_),
                stamp: old,
                settings: old_settings,
                ..
            }) if old_settings.is_some() || settings.is_some() => {
                *old == stamp && *old_settings == settings
            }
            Some(Library {
                outcome: Outcome::Loaded(_),
                stamp: old,
                ..
            }) => {
                if *old != stamp {
                    warnings.push(format!(
                        "{}: changed on disk; restart to load the new version",
                        path.display()
                    ));
                }
                true
            }
            // dlopen's own verdict depends on other files (dependencies
            // being installed), so it is retried; the checks before it are
            // not.
            Some(Library {
                outcome: Outcome::Failed(error),
                stamp: old,
                settings: old_settings,
                ..
            }) => {
                *old == stamp
                    && *old_settings == settings
                    && !matches!(
                        error,
                        LoadError::Open { .. } | LoadError::RunnerStart { .. }
                    )
            }
            _ => false,
        };
        if !reuse {
            self.transition(&candidate.name, State::Importing, None);
            let started = Instant::now();
            // A bundled library is checked against its own directory.
            let plugin_dir = match (candidate.origin, path.parent()) {
                (Origin::Bundled, Some(dir)) => dir,
                _ => &config.plugin_dir,
            };
            let checks = Checks {
                plugin_dir,
                sha256: candidate.entry.as_ref().and_then(|e| e.sha256.as_deref()),
            };
            let opened = match &settings {
                Some(settings) => loader::open_isolated(&path, &checks, settings),
                None => loader::open(&path, &checks),
            };
            let mut isolated = None;
            let outcome = match opened {
                Ok(Opened::Plugin(plugin)) => {
                    Outcome::Loaded(Arc::from(plugin as Box<dyn Serializer>))
                }
                Ok(Opened::Isolated(plugin)) => {
                    isolated = Some(Arc::clone(&plugin));
                    Outcome::Loaded(plugin as Arc<dyn Serializer>)
                }
                Ok(Opened::MissingDependency(dependency)) => Outcome::MissingDependency(dependency),
                Err(error) => Outcome::Failed(error),
            };
            let load_ms = started.elapsed().as_secs_f64() * 1000.0;
            tracing::debug!(target: "stowage::loader", path = %path.display(), load_ms, "opened");
            self.libraries.insert(
                path.clone(),
                Library {
                    stamp,
                    outcome,
                    load_ms,
                    settings,
                    isolated,
                },
            );
        }
        let Some(library) = self.libraries.get(&path) else {
            return;
        };
        candidate.load_ms = Some(library.load_ms);
        candidate.state = State::Importing;
        match &library.outcome {
            Outcome::Loaded(serializer) => {
                candidate.serializer = Some(Arc::clone(serializer));
                if candidate.origin == Origin::Directory {
                    candidate.name = serializer.info().name.clone();
                }
                candidate.isolated = library.isolated.clone();
                if let Some(reason) = library.isolated.as_ref().and_then(|p| p.broken()) {
                    candidate.break_with(reason);
                }
            }
            Outcome::Failed(error) => candidate.break_with(error),
            Outcome::MissingDependency(dependency) => candidate.wait_for(dependency.clone()),
        }
    }

    fn transition(&mut self, name: &str, to: State, reason: Option<&str>) {
        let from = self.states.insert(name.to_owned(), to);
        if from != Some(to) {
            let from = from.map_or("new", State::name);
            match reason {
                Some(reason) => {
                    tracing::info!(target: "stowage::lifecycle", plugin = name, from, to = to.name(), reason)
                }
                None => {
                    tracing::info!(target: "stowage::lifecycle", plugin = name, from, to = to.name())
                }
            }
        }
    }

    fn log_transitions(&mut self, candidates: &[Candidate]) {
        for candidate in candidates {
            let reason = candidate.error.as_deref().or(candidate.awaiting.as_deref());
            self.transition(&candidate.name, candidate.state, reason);
        }
    }

    fn snapshot(
        &mut self,
        candidates: Vec<Candidate>,
        warnings: Vec<String>,
        config: Config,
    ) -> Snapshot {
        let mut routes = Vec::new();
        let mut rows = Vec::new();
        for candidate in candidates {
            let stats = Arc::clone(self.stats.entry(candidate.name.clone()).or_default());
            let info = candidate.info();
            // Configured priorities show before (or without) loading too.
            let priority = match info {
                Some(info) => Some(effective_priority(&candidate, info)),
                None => candidate.entry.as_ref().and_then(|e| e.priority),
            };
            if candidate.state == State::Active {
                if let (Some(serializer), Some(priority)) = (&candidate.serializer, priority) {
                    routes.push(Route {
                        name: candidate.name.clone(),
                        priority,
                        config_options: candidate
                            .entry
                            .as_ref()
                            .map(|e| e.options.clone())
                            .unwrap_or_default(),
                        serializer: Arc::clone(serializer),
                        stats: Arc::clone(&stats),
                    });
                }
            }
            let mut encodings: Vec<String> = Vec::new();
            for encoding in info.iter().flat_map(|i| i.reads.iter().chain(&i.writes)) {
                if !encodings.contains(encoding) {
                    encodings.push(encoding.clone());
                }
            }
            rows.push(Row {
                status: PluginStatus {
                    name: candidate.name.clone(),
                    state: candidate.state,
                    priority,
                    version: info.map(|i| i.version.to_string()),
                    interface_version: info.map(|i| i.interface_version.clone()),
                    library: candidate.path.clone(),
                    kinds: info
                        .map(|i| i.kinds.iter().map(|k| k.name().to_owned()).collect())
                        .unwrap_or_default(),
                    encodings,
                    awaiting: candidate.awaiting.clone(),
                    last_error: candidate.error.clone(),
                    dispatch_errors: 0,
                    load_ms: candidate.load_ms,
                    enabled: candidate.enabled,
                    builtin: candidate.builtin,
                    origin: candidate.origin,
                    isolation: candidate.isolation.map(|i| i.name().to_owned()),
                    runner_pid: None,
                    restarts: 0,
                },
                stats,
                isolated: candidate.isolated.clone(),
            });
        }
        let table = DispatchTable::new(routes);
        let position: HashMap<&str, usize> = table
            .routes()
            .iter()
            .enumerate()
            .map(|(i, r)| (r.name.as_str(), i))
            .collect();
        let group = |state: State| match state {
            State::Active => 0,
            State::Importing => 1,
            State::Pending => 2,
            State::Broken => 3,
            State::Known => 4,
            State::Disabled => 5,
        };
        let order: Vec<(usize, usize, String)> = rows
            .iter()
            .map(|row| {
                let s = &row.status;
                (
                    group(s.state),
                    position.get(s.name.as_str()).copied().unwrap_or(0),
                    s.name.clone(),
                )
            })
            .collect();
        let mut indexed: Vec<(usize, Row)> = rows.into_iter().enumerate().collect();
        indexed.sort_by(|(a, _), (b, _)| order[*a].cmp(&order[*b]));
        Snapshot {
            rows: indexed.into_iter().map(|(_, row)| row).collect(),
            table,
            warnings,
            config,
        }
    }
}

fn effective_priority(candidate: &Candidate, info: &PluginInfo) -> u32 {
    let configured = candidate.entry.as_ref().and_then(|e| e.priority);
    if candidate.builtin {
        return configured
            .unwrap_or(info.default_priority)
            .min(FALLBACK_PRIORITY);
    }
    configured
        .unwrap_or(info.default_priority)
        .min(MAX_PLUGIN_PRIORITY)
}
