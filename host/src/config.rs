//! TEMPORARY stub of the config API (replaced by the real module).
#![allow(missing_docs)]
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
pub const DEFAULT_CONFIG_FILE: &str = "plugins.toml";
pub const FALLBACK_PRIORITY: u32 = 9999;
pub const MAX_PLUGIN_PRIORITY: u32 = 9998;
#[derive(Debug, Clone)]
pub struct Config { pub path: PathBuf, pub exists: bool, pub plugin_dir: PathBuf, pub autoload: bool, pub store_dir: PathBuf, pub plugins: Vec<PluginEntry>, pub warnings: Vec<String> }
#[derive(Debug, Clone)]
pub struct PluginEntry { pub name: String, pub enabled: bool, pub priority: Option<u32>, pub version: Option<semver::VersionReq>, pub library: Option<String>, pub sha256: Option<String>, pub options: Vec<(String, String)> }
impl PluginEntry { pub fn library_stem(&self) -> String { self.library.clone().unwrap_or_else(|| format!("stowage_{}", self.name.replace('-', "_"))) } }
#[derive(Debug, thiserror::Error)]
pub enum ConfigError { #[error("x")] X, #[error("nf")] NotFound { path: PathBuf } }
impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> { Self::load_default(path) }
    pub fn load_default(path: &Path) -> Result<Config, ConfigError> { let dir = path.parent().unwrap_or(Path::new(".")); Ok(Config { path: path.into(), exists: false, plugin_dir: dir.join("plugin-libs"), autoload: true, store_dir: dir.join("store"), plugins: vec![], warnings: vec![] }) }
    pub fn entry(&self, name: &str) -> Option<&PluginEntry> { self.plugins.iter().find(|e| e.name == name) }
}
pub fn resolve_config_path(flag: Option<&Path>, env: Option<&OsStr>) -> (PathBuf, bool) { match (flag, env) { (Some(f), _) => (f.into(), true), (None, Some(e)) => (e.into(), true), _ => (DEFAULT_CONFIG_FILE.into(), false) } }
pub struct EnvToggles { pub toggles: Vec<(String, bool)> }
impl EnvToggles { pub fn parse(_spec: &str) -> Result<EnvToggles, ConfigError> { Ok(EnvToggles { toggles: vec![] }) } }
pub fn is_valid_plugin_name(name: &str) -> bool { !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') }
pub enum EditOutcome { Changed, AlreadySet, AddedTable }
pub fn set_enabled(_path: &Path, _name: &str, _enabled: bool) -> Result<EditOutcome, ConfigError> { Ok(EditOutcome::Changed) }
