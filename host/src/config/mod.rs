//! Configuration: reading `plugins.toml`, the per-process toggles, and editing
//! the file in place (SPEC §4, §11).
//!
//! This module owns, one room each:
//! - where the config file comes from ([`resolve_config_path`]: `--config PATH`,
//!   else `STOWAGE_CONFIG`, else `./plugins.toml`), and reading and
//!   validating it into a [`Config`] ([`Config::load`],
//!   [`Config::load_default`], [`Config::parse`]) — `read.rs`: a malformed
//!   file is a [`ConfigError`] formatted `PATH:LINE:COLUMN: message`, an
//!   unknown key or a clamped priority is a warning line in
//!   [`Config::warnings`];
//! - the `STOWAGE_PLUGINS="-arrow,+tensor"` toggles ([`EnvToggles`]) —
//!   `toggles.rs`;
//! - `stowage enable|disable NAME` ([`set_enabled`]): one value changed, or one
//!   line or table added, in place, written atomically — `edit.rs`;
//! - what all of them fail with ([`ConfigError`], [`Location`]) —
//!   `error.rs`; and the file as text and TOML document, shared by reading
//!   and editing (missing file, spans, key spelling in messages) —
//!   `document.rs`.
//!
//! It must not load libraries, look into the plugin directory or touch the
//! store: directories are resolved lexically and handed on, and whether a name
//! in a toggle is known is for the lifecycle to say.
//!
//! Invariant: nothing read from the file, the environment or the command line
//! is unwrapped; every failure is one [`ConfigError`] of one line.
//!
//! The plugin-name rule and the priority limit live with `PluginInfo` in
//! [`crate::serializer`], the fallback's name and priority in
//! [`crate::fallback`]; they are re-exported here, where they always were.

mod document;
mod edit;
mod error;
mod read;
mod toggles;

#[cfg(test)]
mod tests;

pub use edit::{set_enabled, EditOutcome};
pub use error::{ConfigError, Location};
pub use read::{
    resolve_config_path, Config, Isolation, PluginEntry, DEFAULT_CONFIG_FILE, DEFAULT_TIMEOUT_MS,
};
pub use toggles::EnvToggles;

pub use crate::fallback::FALLBACK_PRIORITY;
pub use crate::serializer::{is_valid_plugin_name, MAX_PLUGIN_PRIORITY};
