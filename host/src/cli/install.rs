//! `stowage install PATH…` and `stowage uninstall NAME`: putting plugin
//! libraries into `[host] dir`, and taking them out, the safe way.
//!
//! Install checks every file before it copies any, without running a byte of
//! it (`stowage::loader::check_library_file` reads the ELF headers and the
//! probe from the file; `dlopen` would run the library's initialisers), and
//! refuses with the one-line reason `status` would give. Each file is copied
//! to a dotted temp name in the directory (discovery ignores dotfiles and
//! `*.tmp`), fsynced, made 0644 and renamed into place, so a running host
//! never sees half a library and a library it has mapped is never written
//! over in place. Then the host rescans and one status line per installed
//! plugin is printed.
//!
//! Decision: the installed file keeps its file name (`libstowage_tensor.so`),
//! so config tables that name a `library` stem keep matching; a file without
//! the platform's library suffix is refused, since discovery would skip it.
//! Decision: all paths are checked before any is copied: a refused file
//! leaves the directory untouched.
//! Decision: a library that installs but does not turn active (a panic in
//! its `init`, a missing dependency) stays installed, its status line is
//! printed, and the command exits 1 naming the state: the directory then
//! holds what `status` explains, and `stowage uninstall` removes it.
//! Decision: `uninstall` unlinks the file. A running host keeps its mapping
//! of the library (the inode lives on until the last mapping goes), and
//! libraries are never unloaded, so nothing in flight breaks.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use stowage::config::Config;
use stowage::loader::check_library_file;
use stowage::{Host, HostOptions, PluginStatus, State};

use super::print;

/// Mode of an installed library: readable by all, writable by the owner.
const LIBRARY_MODE: u32 = 0o644;
/// Mode of a plugin directory `install` creates.
const DIR_MODE: u32 = 0o755;

/// `stowage install PATH…`.
pub fn install(options: HostOptions, paths: &[PathBuf]) -> Result<()> {
    let dir = plugin_dir(&options)?;
    let mut checked = Vec::with_capacity(paths.len());
    for path in paths {
        let file_name = library_file_name(path)?;
        let probe = check_library_file(path)
            .with_context(|| format!("cannot install {}", path.display()))?;
        checked.push((path, file_name, probe));
    }
    create_plugin_dir(&dir)?;
    let mut installed = Vec::with_capacity(checked.len());
    for (path, file_name, _) in &checked {
        let target = dir.join(file_name);
        copy_into_place(path, &target).with_context(|| {
            format!("cannot install {} as {}", path.display(), target.display())
        })?;
        installed.push(target);
    }
    let host = Host::open(options)?;
    super::warn_config(&host);
    let snapshot = host.snapshot();
    let statuses = snapshot.statuses();
    let mut out = String::new();
    let mut inactive = Vec::new();
    for target in &installed {
        match statuses.iter().find(|s| is_library(s, target)) {
            Some(status) => {
                out.push_str(&status_line(target, status));
                if !matches!(status.state, State::Active | State::Disabled) {
                    inactive.push(format!("{} is {}", status.name, status.state.name()));
                }
            }
            None => {
                out.push_str(&format!(
                    "installed {} (not loaded: autoload is off and no table names it)\n",
                    target.display()
                ));
            }
        }
    }
    print(&out)?;
    if !inactive.is_empty() {
        bail!("installed, but {}", inactive.join(", "));
    }
    Ok(())
}

/// `stowage uninstall NAME`.
pub fn uninstall(options: HostOptions, name: &str) -> Result<()> {
    let host = Host::open(options)?;
    super::warn_config(&host);
    let snapshot = host.snapshot();
    let dir = &snapshot.config.plugin_dir;
    let statuses = snapshot.statuses();
    let Some(status) = statuses.iter().find(|s| s.name == name) else {
        bail!("no plugin named {name} (see stowage status)");
    };
    if status.builtin {
        bail!(
            "{name} is built in and cannot be uninstalled; `stowage disable {name}` turns it off"
        );
    }
    let library = match &status.library {
        Some(library) if library.parent() == Some(dir.as_path()) => library,
        _ => bail!("{name} has no library in {}", dir.display()),
    };
    match fs::remove_file(library) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            bail!(
                "{name} has no library in {}: {} is absent",
                dir.display(),
                library.display()
            )
        }
        Err(e) => return Err(e).with_context(|| format!("cannot remove {}", library.display())),
    }
    sync_dir(dir)?;
    if snapshot.config.entry(name).is_some() {
        let _ = writeln!(
            io::stderr(),
            "warning: {} still has a [plugins.{name}] table; {name} shows as pending until it is removed",
            snapshot.config.path.display()
        );
    }
    print(&format!(
        "uninstalled {name}: removed {} (a running stowage keeps its loaded copy until it exits)\n",
        library.display()
    ))
}

/// `[host] dir` of the config, read without loading any plugin: a library
/// about to be replaced must not be opened first.
fn plugin_dir(options: &HostOptions) -> Result<PathBuf> {
    let path =
        std::path::absolute(&options.config_path).unwrap_or_else(|_| options.config_path.clone());
    let config = if options.config_explicit {
        Config::load(&path)?
    } else {
        Config::load_default(&path)?
    };
    Ok(config.plugin_dir)
}

/// The file name `path` is installed under; refuses names discovery skips.
fn library_file_name(path: &Path) -> Result<String> {
    let suffix = std::env::consts::DLL_SUFFIX;
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .with_context(|| format!("cannot install {}: not a file name", path.display()))?;
    if !name.ends_with(suffix) || name.starts_with('.') {
        bail!(
            "cannot install {}: the plugin directory loads only files named *{suffix} that do not start with '.'",
            path.display()
        );
    }
    Ok(name.to_owned())
}

fn create_plugin_dir(dir: &Path) -> Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)
        .with_context(|| format!("cannot create the plugin directory {}", dir.display()))?;
    // The umask may have narrowed the mode; 0755 is what the docs promise.
    fs::set_permissions(dir, fs::Permissions::from_mode(DIR_MODE))
        .with_context(|| format!("cannot set the mode of {}", dir.display()))?;
    if let Some(parent) = dir.parent() {
        sync_dir(parent)?;
    }
    Ok(())
}

/// Copies `source` to a temp file beside `target`, fsyncs it, and renames it
/// over `target` (atomic: readers see the old file or the new one).
fn copy_into_place(source: &Path, target: &Path) -> Result<()> {
    if let (Ok(a), Ok(b)) = (source.canonicalize(), target.canonicalize()) {
        if a == b {
            return Ok(());
        }
    }
    let dir = target.parent().context("the target has no directory")?;
    let file_name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temp = dir.join(format!(".{file_name}.{}.tmp", std::process::id()));
    let mut options = OpenOptions::new();
    options.write(true).create_new(true).mode(LIBRARY_MODE);
    stowage::fs::write_atomically(&temp, target, &options, |to| {
        io::copy(&mut File::open(source)?, to)?;
        to.set_permissions(fs::Permissions::from_mode(LIBRARY_MODE))
    })?;
    Ok(())
}

fn sync_dir(dir: &Path) -> Result<()> {
    stowage::fs::sync_dir(dir).with_context(|| format!("cannot sync {}", dir.display()))
}

fn is_library(status: &PluginStatus, target: &Path) -> bool {
    status.library.as_deref().is_some_and(|library| {
        library == target
            || matches!((library.canonicalize(), target.canonicalize()), (Ok(a), Ok(b)) if a == b)
    })
}

/// `installed FILE: NAME VERSION STATE (priority P; kinds)` plus the reason
/// of a plugin that is not active.
fn status_line(target: &Path, status: &PluginStatus) -> String {
    let mut line = format!("installed {}: {}", target.display(), status.name);
    if let Some(version) = &status.version {
        line.push_str(&format!(" {version}"));
    }
    line.push_str(&format!(" {}", status.state.name()));
    let mut details = Vec::new();
    if let Some(priority) = status.priority {
        details.push(format!("priority {priority}"));
    }
    if !status.kinds.is_empty() {
        details.push(format!("kinds {}", status.kinds.join(",")));
    }
    if let Some(awaiting) = &status.awaiting {
        details.push(format!("awaiting {awaiting}"));
    }
    if let Some(error) = &status.last_error {
        details.push(error.clone());
    }
    if !details.is_empty() {
        line.push_str(&format!(" ({})", details.join("; ")));
    }
    line.push('\n');
    line
}
