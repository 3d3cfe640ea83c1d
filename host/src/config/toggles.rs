//! `STOWAGE_PLUGINS="-arrow,+tensor"`: the per-process toggles, applied
//! over the file's `enabled` by the lifecycle.
//!
//! Decision: in `STOWAGE_PLUGINS`, a name given twice keeps only its last
//! toggle; names must be valid plugin names. Whether a name is known is not
//! checked here.

use super::error::ConfigError;
use crate::serializer::is_valid_plugin_name;

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
