//! Where `stowage get` writes: the `get -o PATH` rules of SPEC §7, in one
//! place. Nothing outside this module decides what a path is or replaces it.
//!
//! A single-file export ([`FileOutput::open`]) goes to:
//! - no `-o`, or `-o -`: stdout, written through as the bytes arrive;
//! - an absent path or a regular file: a temp file `.NAME.PID.tmp` beside
//!   it, fsynced, renamed over it (atomic replace), the parent directory
//!   fsynced; a replaced file keeps its permission bits;
//! - a symlink: followed to its final target and the rules applied to that,
//!   so a link to a regular file has its *target* replaced atomically and
//!   the link stays a link; a dangling link is followed link by link (at
//!   most [`MAX_LINKS`]; a relative link resolves against its own
//!   directory) and its target created; `/dev/stdout` and other links to
//!   pipes or devices write through to what they name;
//! - a character device or a FIFO: opened for writing without create or
//!   truncate and written through in place (the node stays what it was; a
//!   FIFO's open waits for a reader, as `cat > fifo` does);
//! - an existing directory: an error naming it;
//! - anything else (block device, socket): refused, naming what it is.
//!
//! A directory export ([`write_dir`], multi-blob `--raw`) is written into a
//! temp directory `.NAME.PID.tmp/` beside the target, every file and the
//! directory fsynced, then renamed into place and the parent fsynced.
//!
//! Invariants: nothing is ever written outside the target of `-o` (each
//! file of a directory export is named by one plain path component,
//! checked here, whatever the store already checked: records are untrusted
//! input); a failed or interrupted export never leaves a partial file under
//! the target's name (only written-through streams can hold part of it).
//!
//! Decision: a directory export replaces only an absent or *empty*
//! directory (rename(2) replaces an empty directory atomically); a
//! non-empty one is refused with one line rather than exchanged, so a
//! mistyped `-o` cannot make a directory's contents disappear.
//! Decision: blob names of a directory export must be one plain path
//! component: not empty, not `.` or `..`, no `/`, no NUL, no control
//! characters; any other name refuses the whole export before anything is
//! written.
//! Decision: Unix only (file types, device nodes), like the rest of the
//! tested platform.
//! Decision: the first write error is remembered ([`FileOutput::take_error`])
//! so that the command reports it (`cannot write PATH: No space left on
//! device (os error 28)`) instead of the plugin's wrapped echo of it.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::FileTypeExt;
use std::path::{Component, Path, PathBuf};

use stowage::fs::{parent_dir, rename_into_place, sync_dir};

/// Symlinks followed at most (Linux's own limit).
pub const MAX_LINKS: usize = 40;

/// Bytes buffered before a write reaches the output.
const BUFFER: usize = 256 * 1024;

/// Why `get -o` would not or could not write.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    /// The target of a single-file export is a directory.
    #[error("cannot write {path}: it is a directory")]
    IsDirectory {
        /// The target as given.
        path: PathBuf,
    },
    /// The target is a kind of file `get` never writes to.
    #[error(
        "cannot write {path}: it is a {what}; get writes only regular files, character devices and FIFOs"
    )]
    Refused {
        /// The target as given.
        path: PathBuf,
        /// `block device`, `socket`, …
        what: &'static str,
    },
    /// The target of a directory export is a directory with entries.
    #[error("cannot write {path}: it is a directory that is not empty; get --raw replaces only an empty or absent directory")]
    DirectoryNotEmpty {
        /// The target as given.
        path: PathBuf,
    },
    /// The target of a directory export exists and is not a directory.
    #[error("cannot write {path}: it is a {what}, not a directory")]
    NotADirectory {
        /// The target as given.
        path: PathBuf,
        /// What it is.
        what: &'static str,
    },
    /// More than [`MAX_LINKS`] symlinks.
    #[error("cannot write {path}: too many levels of symbolic links")]
    TooManyLinks {
        /// The target as given.
        path: PathBuf,
    },
    /// The target has no file name (`/`, `..`).
    #[error("cannot write {path}: not a file path")]
    NoFileName {
        /// The target as given.
        path: PathBuf,
    },
    /// A blob name that is not one plain path component.
    #[error("artifact {artifact} has a blob named {blob:?}, which is not a plain file name; nothing was written")]
    UnsafeBlobName {
        /// The artifact.
        artifact: String,
        /// The offending blob name.
        blob: String,
    },
    /// An I/O error on the target.
    #[error("cannot write {path}: {source}")]
    Io {
        /// The target as given.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

/// What a path is, for the rules above.
enum Found {
    Absent,
    Regular(fs::Permissions),
    Directory,
    InPlace,
    Other(&'static str),
}

fn found(meta: &fs::Metadata) -> Found {
    let kind = meta.file_type();
    if kind.is_file() {
        Found::Regular(meta.permissions())
    } else if kind.is_dir() {
        Found::Directory
    } else if kind.is_char_device() || kind.is_fifo() {
        Found::InPlace
    } else if kind.is_block_device() {
        Found::Other("block device")
    } else if kind.is_socket() {
        Found::Other("socket")
    } else {
        Found::Other("special file")
    }
}

/// What `path` names in the end, and the path to write or rename onto.
///
/// The kernel follows the links first (`stat`), which also handles magic
/// links such as `/dev/stdout` → `/proc/self/fd/1` → `pipe:[N]`: devices
/// and FIFOs are then opened through `path` itself. A regular file or a
/// directory is canonicalized, so a rename lands on the link's target and
/// never on the link. A path that does not exist may be a dangling link: it
/// is followed link by link to the path to create.
fn resolve(path: &Path) -> Result<(PathBuf, Found), OutputError> {
    let io_error = |source| OutputError::Io {
        path: path.to_owned(),
        source,
    };
    match fs::metadata(path) {
        Ok(meta) => match found(&meta) {
            kind @ (Found::Regular(_) | Found::Directory) => {
                Ok((fs::canonicalize(path).map_err(io_error)?, kind))
            }
            kind => Ok((path.to_owned(), kind)),
        },
        Err(_) => follow_links(path),
    }
}

/// Follows `path` link by link (a relative link resolves against its own
/// directory) to the first path that is not a link.
fn follow_links(path: &Path) -> Result<(PathBuf, Found), OutputError> {
    let io_error = |source| OutputError::Io {
        path: path.to_owned(),
        source,
    };
    let mut current = path.to_owned();
    for _ in 0..=MAX_LINKS {
        match fs::symlink_metadata(&current) {
            Ok(meta) if meta.file_type().is_symlink() => {
                let target = fs::read_link(&current).map_err(io_error)?;
                current = match current.parent() {
                    Some(parent) if target.is_relative() => parent.join(target),
                    _ => target,
                };
            }
            Ok(meta) => return Ok((current, found(&meta))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((current, Found::Absent)),
            Err(e) => return Err(io_error(e)),
        }
    }
    Err(OutputError::TooManyLinks {
        path: path.to_owned(),
    })
}

/// `.NAME.PID.tmp` beside `target`.
fn temp_beside(shown: &Path, target: &Path) -> Result<PathBuf, OutputError> {
    let name = target.file_name().ok_or_else(|| OutputError::NoFileName {
        path: shown.to_owned(),
    })?;
    Ok(target.with_file_name(format!(
        ".{}.{}.tmp",
        name.to_string_lossy(),
        std::process::id()
    )))
}

enum Sink {
    Stdout(io::Stdout),
    File(File),
}

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Sink::Stdout(out) => out.write(buf),
            Sink::File(file) => file.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Sink::Stdout(out) => out.flush(),
            Sink::File(file) => file.flush(),
        }
    }
}

/// A single-file export on its way to its target (see the module docs).
/// Dropping it without [`FileOutput::finish`] deletes its temp file.
pub struct FileOutput {
    /// The target as the user gave it (named in errors).
    shown: PathBuf,
    writer: BufWriter<Sink>,
    /// `(temp, target, permissions)` of an atomic replace.
    replace: Option<(PathBuf, PathBuf, Option<fs::Permissions>)>,
    error: Option<io::Error>,
}

impl FileOutput {
    /// Decides where `output` (`None` or `-` for stdout) is written and
    /// opens it; errors before any export work for a target that must not
    /// be written.
    pub fn open(output: Option<&Path>) -> Result<FileOutput, OutputError> {
        let path = match output {
            None => return Ok(Self::stdout()),
            Some(path) if path == Path::new("-") => return Ok(Self::stdout()),
            Some(path) => path,
        };
        let io_error = |source| OutputError::Io {
            path: path.to_owned(),
            source,
        };
        let (target, kind) = resolve(path)?;
        let (sink, replace) = match kind {
            Found::Directory => {
                return Err(OutputError::IsDirectory {
                    path: path.to_owned(),
                })
            }
            Found::Other(what) => {
                return Err(OutputError::Refused {
                    path: path.to_owned(),
                    what,
                })
            }
            Found::InPlace => {
                let file = OpenOptions::new()
                    .write(true)
                    .open(&target)
                    .map_err(io_error)?;
                // The node could have been swapped between the check and
                // the open: write through only into what was checked.
                match found(&file.metadata().map_err(io_error)?) {
                    Found::InPlace => {}
                    _ => {
                        return Err(OutputError::Refused {
                            path: path.to_owned(),
                            what: "file that changed while it was opened",
                        })
                    }
                }
                (Sink::File(file), None)
            }
            Found::Absent | Found::Regular(_) => {
                let permissions = match kind {
                    Found::Regular(permissions) => Some(permissions),
                    _ => None,
                };
                let temp = temp_beside(path, &target)?;
                let file = create_new_replacing_stale(&temp).map_err(io_error)?;
                (Sink::File(file), Some((temp, target, permissions)))
            }
        };
        Ok(FileOutput {
            shown: path.to_owned(),
            writer: BufWriter::with_capacity(BUFFER, sink),
            replace,
            error: None,
        })
    }

    fn stdout() -> FileOutput {
        FileOutput {
            shown: PathBuf::from("stdout"),
            writer: BufWriter::with_capacity(BUFFER, Sink::Stdout(io::stdout())),
            replace: None,
            error: None,
        }
    }

    fn remember(&mut self, error: &io::Error) {
        if self.error.is_none() {
            self.error = Some(match error.raw_os_error() {
                Some(code) => io::Error::from_raw_os_error(code),
                None => io::Error::new(error.kind(), error.to_string()),
            });
        }
    }

    /// The first write error, naming the target.
    pub fn take_error(&mut self) -> Option<OutputError> {
        self.error.take().map(|source| OutputError::Io {
            path: self.shown.clone(),
            source,
        })
    }

    /// Flushes; for an atomic replace also fsyncs, renames over the target
    /// and fsyncs its directory.
    pub fn finish(mut self) -> Result<(), OutputError> {
        if let Err(e) = self.writer.flush() {
            self.remember(&e);
        }
        if let Some(error) = self.take_error() {
            return Err(error);
        }
        let Some((temp, target, permissions)) = self.replace.take() else {
            return Ok(());
        };
        let result = match self.writer.get_ref() {
            Sink::File(file) => permissions
                .map_or(Ok(()), |permissions| file.set_permissions(permissions))
                .and_then(|()| rename_into_place(file, &temp, &target)),
            // A replace always writes a file; stdout has nothing to rename.
            Sink::Stdout(_) => Ok(()),
        };
        if result.is_err() {
            let _ = fs::remove_file(&temp);
        }
        result.map_err(|source| OutputError::Io {
            path: self.shown.clone(),
            source,
        })
    }
}

impl Write for FileOutput {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let result = self.writer.write(buf);
        if let Err(e) = &result {
            self.remember(e);
        }
        result
    }
    fn flush(&mut self) -> io::Result<()> {
        let result = self.writer.flush();
        if let Err(e) = &result {
            self.remember(e);
        }
        result
    }
}

impl Drop for FileOutput {
    fn drop(&mut self) {
        if let Some((temp, _, _)) = self.replace.take() {
            let _ = fs::remove_file(temp);
        }
    }
}

/// Creates `path` exclusively; a leftover of an earlier run with the same
/// process id is removed first.
fn create_new_replacing_stale(path: &Path) -> io::Result<File> {
    let create = || OpenOptions::new().write(true).create_new(true).open(path);
    match create() {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            fs::remove_file(path)?;
            create()
        }
        other => other,
    }
}

/// Whether `name` is one plain path component that names a file inside a
/// directory, whatever directory that is.
pub fn is_plain_file_name(name: &str) -> bool {
    let mut components = Path::new(name).components();
    matches!(
        (components.next(), components.next()),
        (Some(Component::Normal(part)), None) if part == name
    ) && !name.chars().any(char::is_control)
}

/// Writes `files` as a directory at `path` (see the module docs): every
/// name checked first, then a temp directory beside the target, fsynced,
/// renamed into place.
pub fn write_dir(path: &Path, artifact: &str, files: &[(&str, &[u8])]) -> Result<(), OutputError> {
    if let Some((blob, _)) = files.iter().find(|(name, _)| !is_plain_file_name(name)) {
        return Err(OutputError::UnsafeBlobName {
            artifact: artifact.to_owned(),
            blob: (*blob).to_owned(),
        });
    }
    let io_error = |source| OutputError::Io {
        path: path.to_owned(),
        source,
    };
    let (target, kind) = resolve(path)?;
    match kind {
        Found::Absent => {}
        Found::Directory => {
            if fs::read_dir(&target).map_err(io_error)?.next().is_some() {
                return Err(OutputError::DirectoryNotEmpty {
                    path: path.to_owned(),
                });
            }
        }
        Found::Regular(_) => {
            return Err(OutputError::NotADirectory {
                path: path.to_owned(),
                what: "regular file",
            })
        }
        Found::InPlace => {
            return Err(OutputError::NotADirectory {
                path: path.to_owned(),
                what: "device or FIFO",
            })
        }
        Found::Other(what) => {
            return Err(OutputError::NotADirectory {
                path: path.to_owned(),
                what,
            })
        }
    }
    let temp = temp_beside(path, &target)?;
    if fs::symlink_metadata(&temp).is_ok() {
        // A leftover of an earlier run with this process id.
        fs::remove_dir_all(&temp).map_err(io_error)?;
    }
    fs::create_dir(&temp).map_err(io_error)?;
    let result = (|| {
        for (name, bytes) in files {
            let mut file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(temp.join(name))?;
            file.write_all(bytes)?;
            file.sync_all()?;
        }
        sync_dir(&temp)?;
        fs::rename(&temp, &target)?;
        sync_dir(parent_dir(&target))
    })();
    if result.is_err() {
        let _ = fs::remove_dir_all(&temp);
    }
    result.map_err(io_error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_components_are_file_names() {
        for good in ["data", "a.b", "x y", ".hidden", "é"] {
            assert!(is_plain_file_name(good), "{good:?}");
        }
        for bad in [
            "",
            ".",
            "..",
            "../ESCAPED",
            "/etc/passwd",
            "a/b",
            "a/",
            "./a",
            "a\nb",
            "a\0b",
        ] {
            assert!(!is_plain_file_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn hostile_blob_names_refuse_the_whole_directory_export() {
        let base = std::env::temp_dir().join(format!("stowage-write-dir-{}", std::process::id()));
        let _ = fs::remove_dir_all(&base);
        fs::create_dir_all(base.join("inner")).expect("create a temp dir");
        let target = base.join("inner/out");
        for hostile in ["../ESCAPED", "/tmp/ESCAPED-abs", "..", "a/../../ESCAPED"] {
            let files: [(&str, &[u8]); 2] = [("fine", b"x"), (hostile, b"y")];
            let error = write_dir(&target, "parts", &files).expect_err("refused");
            assert_eq!(
                error.to_string(),
                format!("artifact parts has a blob named {hostile:?}, which is not a plain file name; nothing was written")
            );
        }
        let left = |dir: &Path| fs::read_dir(dir).expect("list").count();
        assert_eq!((left(&base), left(&base.join("inner"))), (1, 0));
        assert!(!Path::new("/tmp/ESCAPED-abs").exists());
        let _ = fs::remove_dir_all(&base);
    }
}
