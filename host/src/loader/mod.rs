//! Opening one plugin library file: the checks before `dlopen`, the probe,
//! the abi_stable layout check, `init`, and the `ForeignPlugin` handle that
//! calls into the library afterwards.
//!
//! This module (with its children) is the only place in the host that names
//! abi_stable or touches ABI structs; everything it returns is plain Rust.
//!
//! Order of checks, each failing with its own [`LoadError`] variant:
//! 1. symlinks resolve inside the plugin directory; neither the directory nor
//!    the file is writable by other users;
//! 2. the optional sha256 pin;
//! 3. the file is an ELF shared object and not truncated (on Linux; a
//!    truncated file could otherwise fault inside `dlopen`);
//! 4. `dlopen` (runs the library's initialisers — hence 1–3 first). A missing
//!    shared-library dependency is not an error but `Opened::MissingDependency`;
//! 5. the frozen probe symbol: interface major equal, minor not newer — one
//!    line naming both versions, before abi_stable's layout check;
//! 6. the abi_stable root-module layout check, then each extension symbol's
//!    own layout check;
//! 7. `init`, which builds the plugin instance; a panic there is caught.
//!
//! **Invariant:** a library, once opened, is never closed (`dlclose` with
//! live function pointers and thread-locals is unsound); the handle is leaked.
//!
//! Decision: only world-writable files and directories are refused
//! (group-writable ones are common with a 002 umask and are allowed).

pub(crate) mod convert;
mod file_probe;
mod foreign;
mod isolated;

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use abi_stable::abi_stability::abi_checking::check_layout_compatibility;
use abi_stable::library::{lib_header_from_raw_library, RawLibrary};
use abi_stable::std_types::{RResult, RSlice, RString, RVec};
use abi_stable::StableAbi;
use semver::{Version, VersionReq};
use stowage_plugin_api::abi::{
    AbiBlob, AbiDeclaration, AbiError, AbiErrorKind, AbiExtV1_1, AbiExtension, AbiMetadataRef,
    AbiProbe, PluginModRef, EXT_V1_1_SYMBOL, INTERFACE_MAJOR, INTERFACE_MINOR, PROBE_MAGIC,
    PROBE_SYMBOL,
};

pub use file_probe::{check_library_file, FileProbe};
pub(crate) use foreign::{generic_description, ForeignPlugin};
pub(crate) use isolated::{open_isolated, IsolatedPlugin, IsolationSettings};
pub use isolated::{CRASH_WINDOW, MAX_CRASHES};

pub use crate::serializer::host_interface;
use crate::serializer::{is_valid_plugin_name, PluginInfo};
use crate::value::Kind;

/// Why a library could not be made into a plugin. Each message is the
/// one-line `last_error` of a `broken` plugin.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoadError {
    /// A file or directory writable by other users.
    #[error("unsafe permissions: {path} is writable by other users")]
    UnsafePermissions {
        /// The offending path.
        path: PathBuf,
    },
    /// A symlink whose target lies outside the plugin directory.
    #[error("symlink {path} points outside the plugin directory (to {target})")]
    SymlinkOutsideDir {
        /// The link.
        path: PathBuf,
        /// Where it resolves.
        target: PathBuf,
    },
    /// The configured sha256 pin does not match.
    #[error("sha256 mismatch for {path}: expected {expected}, found {actual}")]
    ChecksumMismatch {
        /// The library.
        path: PathBuf,
        /// The pin.
        expected: String,
        /// The file's digest.
        actual: String,
    },
    /// Not an ELF shared object at all.
    #[error("not a shared library: {path}")]
    NotSharedLibrary {
        /// The file.
        path: PathBuf,
    },
    /// An ELF file shorter than its own headers say.
    #[error("truncated shared library: {path} is {size} bytes, its headers need {needed}")]
    Truncated {
        /// The file.
        path: PathBuf,
        /// Its size.
        size: u64,
        /// Bytes its headers reference.
        needed: u64,
    },
    /// `dlopen` failed for another reason.
    #[error("cannot load {path}: {message}")]
    Open {
        /// The file.
        path: PathBuf,
        /// The loader's message.
        message: String,
    },
    /// A shared library built for another CPU architecture.
    #[error("{path} is built for {found}; this host is {host}")]
    ForeignArchitecture {
        /// The file.
        path: PathBuf,
        /// The file's architecture.
        found: String,
        /// This host's.
        host: String,
    },
    /// A shared library without the stowage probe.
    #[error("no stowage plugin symbol in {path} (not built with export_plugin!)")]
    NoStowageSymbol {
        /// The file.
        path: PathBuf,
    },
    /// A probe with the wrong magic or size.
    #[error("malformed stowage probe in {path}")]
    BadProbe {
        /// The file.
        path: PathBuf,
    },
    /// Built against another interface major.
    #[error(
        "interface major mismatch: plugin built against interface {plugin}, host speaks {host}"
    )]
    InterfaceMajor {
        /// The plugin's interface version.
        plugin: String,
        /// The host's.
        host: String,
    },
    /// Built against a newer interface minor than the host speaks.
    #[error("plugin built against newer interface {plugin}; this host speaks {host}")]
    InterfaceNewer {
        /// The plugin's interface version.
        plugin: String,
        /// The host's.
        host: String,
    },
    /// abi_stable's layout check failed (first line of its report).
    #[error("abi layout mismatch in {path}: {summary}")]
    Layout {
        /// The file.
        path: PathBuf,
        /// First line of abi_stable's report.
        summary: String,
    },
    /// `init` panicked.
    #[error("panic during init: {message}")]
    InitPanic {
        /// The plugin's panic message.
        message: String,
    },
    /// `init` returned an error.
    #[error("init failed: {message}")]
    InitFailed {
        /// The plugin's message.
        message: String,
    },
    /// The declaration is not valid.
    #[error("invalid declaration: {detail}")]
    BadDeclaration {
        /// What is wrong.
        detail: String,
    },
    /// The runner of an isolated plugin could not be started.
    #[error("cannot start {}: {message}", path.display())]
    RunnerStart {
        /// The runner executable.
        path: PathBuf,
        /// The OS error.
        message: String,
    },
    /// The runner of an isolated plugin failed to load it (its loader's
    /// one-line reason), died or timed out while loading it.
    #[error("{message}")]
    Runner {
        /// The reason.
        message: String,
    },
    /// The file could not be read for the checks.
    #[error("cannot read {path}: {message}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        message: String,
    },
}

/// What opening a library produced.
pub(crate) enum Opened {
    /// A working plugin.
    Plugin(Box<ForeignPlugin>),
    /// A working plugin in its own runner process.
    Isolated(std::sync::Arc<IsolatedPlugin>),
    /// `dlopen` could not find one of the library's own dependencies (named);
    /// installing it and rescanning may fix it.
    MissingDependency(String),
}

/// Checks to run before `dlopen`.
pub(crate) struct Checks<'a> {
    /// The plugin directory (symlinks must resolve inside it).
    pub plugin_dir: &'a Path,
    /// Optional sha256 pin (lowercase hex).
    pub sha256: Option<&'a str>,
}

/// Opens one library through every check above.
pub(crate) fn open(path: &Path, checks: &Checks<'_>) -> Result<Opened, LoadError> {
    check_location(path, checks.plugin_dir)?;
    if let Some(expected) = checks.sha256 {
        check_sha256(path, &read_file(path, None)?, expected)?;
    }
    let size = fs::metadata(path).map_err(|e| read_error(path, &e))?.len();
    check_elf(path, &read_file(path, Some(ELF_HEADERS_READ))?, size)?;

    let raw = match RawLibrary::load_at(path) {
        Ok(raw) => raw,
        Err(error) => return open_failure(path, &error.to_string()),
    };
    let probe = read_probe(path, &raw)?;
    check_interface(&probe)?;

    // SAFETY: the probe proved this is a stowage plugin built against a
    // compatible interface; abi_stable checks its own header and the root
    // module's layout before anything is called.
    let header =
        unsafe { lib_header_from_raw_library(&raw) }.map_err(|e| layout_error(path, &e))?;
    let module = header
        .init_root_module::<PluginModRef>()
        .map_err(|e| layout_error(path, &e))?;
    let describe = read_ext_v1_1(path, &raw)?;
    keep_loaded(raw);

    let declaration = match (module.init())().into_result() {
        Ok(declaration) => declaration,
        Err(error) => return Err(init_error(error)),
    };
    let info = validate_declaration(declaration, &probe, describe.is_some())?;
    Ok(Opened::Plugin(Box::new(ForeignPlugin::new(
        info, module, describe,
    ))))
}

/// How much of a library the ELF check reads: the file header and program
/// headers sit at the start of any real shared object.
const ELF_HEADERS_READ: u64 = 64 * 1024;

fn read_error(path: &Path, error: &std::io::Error) -> LoadError {
    LoadError::Read {
        path: path.to_owned(),
        message: error.to_string(),
    }
}

/// Reads the whole file, or its first `limit` bytes.
fn read_file(path: &Path, limit: Option<u64>) -> Result<Vec<u8>, LoadError> {
    let mut bytes = Vec::new();
    let file = fs::File::open(path).map_err(|e| read_error(path, &e))?;
    let result = match limit {
        Some(limit) => file.take(limit).read_to_end(&mut bytes),
        None => (&file).read_to_end(&mut bytes),
    };
    result.map_err(|e| read_error(path, &e))?;
    Ok(bytes)
}

fn check_location(path: &Path, plugin_dir: &Path) -> Result<(), LoadError> {
    let link = fs::symlink_metadata(path).map_err(|e| read_error(path, &e))?;
    if link.file_type().is_symlink() {
        let target = fs::canonicalize(path).map_err(|e| read_error(path, &e))?;
        let dir = fs::canonicalize(plugin_dir).map_err(|e| read_error(plugin_dir, &e))?;
        if !target.starts_with(&dir) {
            return Err(LoadError::SymlinkOutsideDir {
                path: path.to_owned(),
                target,
            });
        }
    }
    check_not_world_writable(plugin_dir)?;
    check_not_world_writable(path)
}

#[cfg(unix)]
fn check_not_world_writable(path: &Path) -> Result<(), LoadError> {
    use std::os::unix::fs::PermissionsExt;
    let meta = fs::metadata(path).map_err(|e| read_error(path, &e))?;
    if meta.permissions().mode() & 0o002 != 0 {
        return Err(LoadError::UnsafePermissions {
            path: path.to_owned(),
        });
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_not_world_writable(_path: &Path) -> Result<(), LoadError> {
    Ok(())
}

fn check_sha256(path: &Path, bytes: &[u8], expected: &str) -> Result<(), LoadError> {
    use sha2::Digest;
    let actual: String = sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    if actual != expected {
        return Err(LoadError::ChecksumMismatch {
            path: path.to_owned(),
            expected: expected.to_owned(),
            actual,
        });
    }
    Ok(())
}

/// Rejects non-ELF and truncated ELF files before `dlopen` sees them.
#[cfg(target_os = "linux")]
fn check_elf(path: &Path, bytes: &[u8], size: u64) -> Result<(), LoadError> {
    let not_a_library = || LoadError::NotSharedLibrary {
        path: path.to_owned(),
    };
    if bytes.get(..4) != Some(b"\x7fELF") {
        return Err(not_a_library());
    }
    let needed = elf_extent(bytes).ok_or_else(not_a_library)?;
    if needed > size {
        return Err(LoadError::Truncated {
            path: path.to_owned(),
            size,
            needed,
        });
    }
    Ok(())
}

#[cfg(not(target_os = "linux"))]
fn check_elf(_path: &Path, _bytes: &[u8], _size: u64) -> Result<(), LoadError> {
    Ok(())
}

/// How many bytes an ELF file's headers say it has: the end of the program
/// header table, the section header table and every segment's file data.
/// `bytes` is the start of the file; program headers beyond it are not
/// consulted. `None` for an ELF variant we do not read (only little-endian
/// ELF64 here).
#[cfg(target_os = "linux")]
fn elf_extent(bytes: &[u8]) -> Option<u64> {
    const ELFCLASS64: u8 = 2;
    const ELFDATA2LSB: u8 = 1;
    if bytes.get(4) != Some(&ELFCLASS64) || bytes.get(5) != Some(&ELFDATA2LSB) {
        return None;
    }
    let u16_at = |at: usize| -> Option<u64> {
        Some(u16::from_le_bytes(bytes.get(at..at + 2)?.try_into().ok()?) as u64)
    };
    let u64_at = |at: usize| -> Option<u64> {
        Some(u64::from_le_bytes(bytes.get(at..at + 8)?.try_into().ok()?))
    };
    let (phoff, shoff) = (u64_at(0x20)?, u64_at(0x28)?);
    let (phentsize, phnum) = (u16_at(0x36)?, u16_at(0x38)?);
    let (shentsize, shnum) = (u16_at(0x3a)?, u16_at(0x3c)?);
    let ph_end = phoff.checked_add(phentsize.checked_mul(phnum)?)?;
    let sh_end = shoff.checked_add(shentsize.checked_mul(shnum)?)?;
    let mut needed = ph_end.max(sh_end);
    if ph_end <= bytes.len() as u64 {
        for i in 0..phnum {
            let at = usize::try_from(phoff + i * phentsize).ok()?;
            let (offset, filesz) = (u64_at(at + 8)?, u64_at(at + 0x20)?);
            needed = needed.max(offset.checked_add(filesz)?);
        }
    }
    Some(needed)
}

fn open_failure(path: &Path, message: &str) -> Result<Opened, LoadError> {
    const MISSING: &str = ": cannot open shared object file";
    // glibc: "libdep.so: cannot open shared object file: No such file or
    // directory". The library itself exists (we read it), so the name before
    // the marker is one of its dependencies.
    // abi_stable wraps the dlerror text ("…\nbecause:\n\t<dlerror>").
    let line = message
        .lines()
        .find(|l| l.contains(MISSING))
        .unwrap_or(message);
    if let Some(at) = line.find(MISSING) {
        let before = line[..at].trim();
        let dependency = before
            .rsplit(&[' ', '"', '\''][..])
            .next()
            .unwrap_or(before);
        let dependency = dependency.rsplit('/').next().unwrap_or(dependency);
        if !path.ends_with(dependency) {
            return Ok(Opened::MissingDependency(dependency.to_owned()));
        }
    }
    Err(LoadError::Open {
        path: path.to_owned(),
        message: one_line(message),
    })
}

/// Keeps `library` open for the life of the process: function pointers into
/// it outlive every caller (see the module invariant). Held in a static
/// rather than forgotten, so the handle stays reachable and a leak checker
/// does not report it.
fn keep_loaded(library: RawLibrary) {
    static OPENED: Mutex<Vec<RawLibrary>> = Mutex::new(Vec::new());
    OPENED
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(library);
}

fn read_probe(path: &Path, raw: &RawLibrary) -> Result<AbiProbe, LoadError> {
    // SAFETY: a symbol named `stowage_plugin_probe` is, by the interface's
    // contract, a static `AbiProbe` (frozen layout); the pointer is only read.
    let probe = unsafe {
        let symbol =
            raw.get::<*const AbiProbe>(PROBE_SYMBOL)
                .map_err(|_| LoadError::NoStowageSymbol {
                    path: path.to_owned(),
                })?;
        std::ptr::read_unaligned(*symbol)
    };
    if probe.magic != PROBE_MAGIC || (probe.size as usize) < std::mem::size_of::<AbiProbe>() {
        return Err(LoadError::BadProbe {
            path: path.to_owned(),
        });
    }
    Ok(probe)
}

fn check_interface(probe: &AbiProbe) -> Result<(), LoadError> {
    let plugin = format!("{}.{}", probe.major, probe.minor);
    if probe.major != INTERFACE_MAJOR {
        return Err(LoadError::InterfaceMajor {
            plugin,
            host: host_interface(),
        });
    }
    if probe.minor > INTERFACE_MINOR {
        return Err(LoadError::InterfaceNewer {
            plugin,
            host: host_interface(),
        });
    }
    Ok(())
}

/// The 1.1 `describe` entry point (see [`AbiExtV1_1`]).
type DescribeFn = for<'a> extern "C" fn(
    &AbiMetadataRef<'a>,
    RSlice<'a, AbiBlob<'a>>,
) -> RResult<RString, AbiError>;

fn read_ext_v1_1(path: &Path, raw: &RawLibrary) -> Result<Option<DescribeFn>, LoadError> {
    // SAFETY: a symbol named `stowage_plugin_ext_v1_1` is, by contract, a
    // static `AbiExtension` (frozen layout); absent in 1.0 plugins.
    let ext = unsafe {
        match raw.get::<*const AbiExtension>(EXT_V1_1_SYMBOL) {
            Ok(symbol) => &**symbol,
            Err(_) => return Ok(None),
        }
    };
    if ext.size < std::mem::size_of::<AbiExtension>() || ext.table.is_null() {
        return Err(LoadError::Layout {
            path: path.to_owned(),
            summary: "malformed extension table v1.1".to_owned(),
        });
    }
    check_layout_compatibility(<AbiExtV1_1 as StableAbi>::LAYOUT, ext.layout).map_err(|e| {
        LoadError::Layout {
            path: path.to_owned(),
            summary: format!("extension v1.1: {}", first_line(&e.to_string())),
        }
    })?;
    // SAFETY: the layout check above proved `table` points at an
    // `AbiExtV1_1` with our layout; it is a static in a never-unloaded library.
    let table = unsafe { &*(ext.table as *const AbiExtV1_1) };
    Ok(Some(table.describe))
}

fn layout_error(path: &Path, error: &abi_stable::library::LibraryError) -> LoadError {
    LoadError::Layout {
        path: path.to_owned(),
        summary: first_line(&error.to_string()),
    }
}

fn init_error(error: AbiError) -> LoadError {
    let message = error.message.into_string();
    if error.kind == AbiErrorKind::PANIC {
        // "panicked in init: MSG" → "MSG": the variant already says where.
        let message = message
            .strip_prefix("panicked in init: ")
            .map(str::to_owned)
            .unwrap_or(message);
        LoadError::InitPanic {
            message: one_line(&message),
        }
    } else {
        LoadError::InitFailed {
            message: one_line(&message),
        }
    }
}

fn validate_declaration(
    decl: AbiDeclaration,
    probe: &AbiProbe,
    has_describe: bool,
) -> Result<PluginInfo, LoadError> {
    let bad = |detail: String| LoadError::BadDeclaration { detail };
    let name = decl.name.into_string();
    if !is_valid_plugin_name(&name) {
        return Err(bad(format!("plugin name {name:?} is not [A-Za-z0-9_-]+")));
    }
    let version = Version::parse(decl.version.as_str()).map_err(|e| {
        bad(format!(
            "version {:?} is not semver: {e}",
            decl.version.as_str()
        ))
    })?;
    let kinds = decl
        .kinds
        .iter()
        .map(|k| {
            Kind::from_name(k.as_str())
                .ok_or_else(|| bad(format!("unknown value kind {:?}", k.as_str())))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let requires = decl
        .requires
        .iter()
        .map(|pair| {
            let req = VersionReq::parse(pair.value.as_str()).map_err(|e| {
                bad(format!(
                    "requirement {} {:?} is not a semver requirement: {e}",
                    pair.key.as_str(),
                    pair.value.as_str()
                ))
            })?;
            Ok((pair.key.to_string(), req))
        })
        .collect::<Result<Vec<_>, LoadError>>()?;
    let strings =
        |items: &RVec<RString>| -> Vec<String> { items.iter().map(|s| s.to_string()).collect() };
    Ok(PluginInfo {
        name,
        version,
        interface_version: format!("{}.{}.{}", probe.major, probe.minor, probe.patch),
        default_priority: decl.default_priority,
        kinds,
        reads: strings(&decl.reads),
        writes: strings(&decl.writes),
        requires,
        option_keys: strings(&decl.option_keys),
        has_describe,
    })
}

fn first_line(text: &str) -> String {
    text.lines()
        .map(str::trim)
        .find(|line| !line.is_empty())
        .unwrap_or("unknown error")
        .to_owned()
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}
