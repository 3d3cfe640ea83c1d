//! What a rescan shows: each serializer's [`State`] and [`Origin`], its
//! [`PluginStatus`] row (what `stowage status` prints), and the
//! [`Snapshot`] holding the rows with their live counters, the dispatch
//! table, the warnings and the config it was built from.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use crate::config::Config;
use crate::loader::IsolatedPlugin;
use crate::registry::{DispatchTable, Stats};

/// A serializer's lifecycle state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    /// Discovered, not (yet) loaded.
    Known,
    /// Being checked and opened.
    Importing,
    /// Loaded, compatible, requirements met: routed to.
    Active,
    /// Never routed to; `last_error` says why.
    Broken,
    /// Waiting for something that may still arrive; `awaiting` names it.
    Pending,
    /// Turned off by a toggle.
    Disabled,
}

impl State {
    /// The fixed name used in status output.
    pub fn name(self) -> &'static str {
        match self {
            State::Known => "known",
            State::Importing => "importing",
            State::Active => "active",
            State::Broken => "broken",
            State::Pending => "pending",
            State::Disabled => "disabled",
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Where a serializer was found (SPEC §7 also names `bundled`, for the
/// Python package's plugins, which this crate does not produce).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// A `[plugins.NAME]` table.
    Config,
    /// A library file in the plugin directory without a table.
    Directory,
    /// The built-in fallback (even when a `[plugins.msgpack]` table
    /// configures it).
    Builtin,
    /// A library in a bundled directory ([`crate::HostOptions::bundled_plugin_dirs`],
    /// e.g. the Python wheel's), searched after the configured one.
    Bundled,
}

impl Origin {
    /// The fixed name used in status output.
    pub fn name(self) -> &'static str {
        match self {
            Origin::Config => "config",
            Origin::Directory => "directory",
            Origin::Builtin => "builtin",
            Origin::Bundled => "bundled",
        }
    }
}

/// One serializer's status row (what `stowage status` prints).
#[derive(Debug, Clone, PartialEq)]
pub struct PluginStatus {
    /// Name (declared, or provisional before loading).
    pub name: String,
    /// State.
    pub state: State,
    /// Effective priority.
    pub priority: Option<u32>,
    /// Plugin version, once loaded.
    pub version: Option<String>,
    /// Interface version it was built against, once loaded.
    pub interface_version: Option<String>,
    /// Library path (none for the built-in fallback).
    pub library: Option<PathBuf>,
    /// Kinds it claims.
    pub kinds: Vec<String>,
    /// Encodings it reads or writes.
    pub encodings: Vec<String>,
    /// What a pending plugin waits for.
    pub awaiting: Option<String>,
    /// Why it is broken, or its last dispatch failure.
    pub last_error: Option<String>,
    /// Dispatch failures in this host's life.
    pub dispatch_errors: u64,
    /// Time to open and check the library.
    pub load_ms: Option<f64>,
    /// Whether toggles leave it enabled.
    pub enabled: bool,
    /// Whether it is the built-in fallback.
    pub builtin: bool,
    /// Where it was found.
    pub origin: Origin,
    /// Where its code runs: `in-process` or `process` (`None` for the
    /// built-in fallback). Added with process isolation (SPEC §14).
    pub isolation: Option<String>,
    /// The process id of its runner, while one is running.
    pub runner_pid: Option<u32>,
    /// How many times its runner was restarted after a crash or timeout.
    pub restarts: u64,
}

/// A status row plus its live counters.
pub(super) struct Row {
    pub(super) status: PluginStatus,
    pub(super) stats: Arc<Stats>,
    /// Its runner, read live (pid, restarts, broken after crashes).
    pub(super) isolated: Option<Arc<IsolatedPlugin>>,
}

/// The result of one rescan.
pub struct Snapshot {
    pub(super) rows: Vec<Row>,
    /// Active serializers, ready for dispatch.
    pub table: DispatchTable,
    /// Warnings for `status` (config, toggles, autoload, changed files).
    pub warnings: Vec<String>,
    /// The config this snapshot was built from.
    pub config: Config,
}

impl PluginStatus {
    /// This serializer as `status --json` shows it (SPEC §7); absent values
    /// are `null`, lists `[]`, `load_ms` rounded to microseconds. `isolation`,
    /// `runner_pid` and `restarts` are additions (SPEC §14).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "name": self.name,
            "state": self.state.name(),
            "priority": self.priority,
            "version": self.version,
            "interface_version": self.interface_version,
            "library": self.library.as_ref().map(|p| p.display().to_string()),
            "kinds": self.kinds,
            "encodings": self.encodings,
            "awaiting": self.awaiting,
            "last_error": self.last_error,
            "dispatch_errors": self.dispatch_errors,
            "load_ms": self.load_ms.map(|ms| (ms * 1000.0).round() / 1000.0),
            "enabled": self.enabled,
            "builtin": self.builtin,
            "origin": self.origin.name(),
            "isolation": self.isolation,
            "runner_pid": self.runner_pid,
            "restarts": self.restarts,
        })
    }
}

impl Snapshot {
    /// Status rows in `status` order, with live counters.
    pub fn statuses(&self) -> Vec<PluginStatus> {
        self.rows
            .iter()
            .map(|row| {
                let mut status = row.status.clone();
                status.dispatch_errors = row.stats.dispatch_errors();
                if status.last_error.is_none() {
                    status.last_error = row.stats.last_error();
                }
                if let Some(isolated) = &row.isolated {
                    status.runner_pid = isolated.runner_pid();
                    status.restarts = isolated.restarts();
                    if let Some(reason) = isolated.broken() {
                        status.state = State::Broken;
                        status.last_error = Some(reason);
                    }
                }
                status
            })
            .collect()
    }
}
