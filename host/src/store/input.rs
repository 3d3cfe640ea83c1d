//! Input files for `stowage put`, read without holding them in memory.
//!
//! [`open_input`] gives the bytes of what `put` was pointed at as one
//! [`Input`] slice whose pages belong to the page cache, not to the process:
//! - a regular file is memory-mapped ([`map_input`]);
//! - stdin (`-`) and every other stream (a FIFO, a character device,
//!   `/dev/stdin`) is first spooled, 1 MiB at a time, to a temp file in the
//!   store's `tmp/` directory ([`spool_input`]); that file is mapped and
//!   unlinked at once, so it is gone however the process ends after that.
//!
//! Invariant: peak anonymous memory does not grow with the input: no code
//! here allocates more than one copy buffer, whatever the input's size.
//!
//! Decision: a regular file is mapped, not copied. A mapping cannot be made
//! safe against another program truncating the file while it is read: the
//! kernel raises SIGBUS on a page past the new end. The `stowage` binary
//! installs a SIGBUS handler (host/src/main.rs) that prints one line,
//! `error: an input or stored file shrank while it was being read`, and
//! exits 1; nothing is committed (a save commits only after every byte was
//! read), and a spooled or half-written temp file is left for `open`/`gc` to
//! delete once it is older than the gc grace period. A file rewritten in
//! place (same size) while `put` reads it may be stored with mixed bytes;
//! its digest is computed from the bytes as read, so the store stays
//! consistent. Library callers get the same contract and should not map
//! files other programs are changing.
//! Decision: a spooled stream has no size limit beyond the store's disk
//! (`put x /dev/zero` runs until the disk is full, then fails with the
//! write error); `put --json` has its own limit (`cli/data.rs`).

use std::fs::File;
use std::io::{self, Read, Write};
use std::ops::Deref;
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use super::error::StoreError;
use super::{sys, Store};

/// Bytes copied per read while spooling a stream.
const SPOOL_CHUNK: usize = 1024 * 1024;

/// Why an input could not be opened, spooled or mapped.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    /// The input could not be opened or inspected.
    #[error("cannot read {path}: {source}")]
    Open {
        /// The input path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The input is a directory.
    #[error("cannot read {path}: it is a directory")]
    Directory {
        /// The input path.
        path: PathBuf,
    },
    /// [`map_input`] was given something that is not a regular file.
    #[error("cannot map {path}: not a regular file")]
    NotRegular {
        /// The input path.
        path: PathBuf,
    },
    /// Mapping failed.
    #[error("cannot map {path}: {source}")]
    Map {
        /// The input path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// Reading the stream being spooled failed.
    #[error("cannot read {source_name}: {source}")]
    Read {
        /// What was read (`-` for stdin).
        source_name: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// Writing or mapping the spool file failed.
    #[error("cannot spool {source_name} to {path}: {source}")]
    Spool {
        /// What was read (`-` for stdin).
        source_name: String,
        /// The temp file in the store.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The store could not make a temp file.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The bytes of an input: a mapping (or nothing, for an empty input).
/// Derefs to `[u8]`.
#[derive(Debug)]
pub struct Input {
    map: Option<Mmap>,
}

impl Input {
    fn from_file(file: &File, len: u64) -> io::Result<Input> {
        if len == 0 {
            return Ok(Input { map: None });
        }
        // SAFETY: `file` is the user's input file or our own spooled temp
        // file. The spool is unlinked right after mapping and nothing else
        // writes it. A user's file changed by another program while `put`
        // reads it breaks the contract; that is the documented risk of the
        // module's "a regular file is mapped" decision (SIGBUS is caught by
        // the binary, and the digest is of the bytes as read).
        unsafe { sys::map_file(file) }.map(|map| Input { map: Some(map) })
    }

    /// The input's size in bytes.
    pub fn len(&self) -> usize {
        self.map.as_ref().map_or(0, |m| m.len())
    }

    /// Whether the input is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Deref for Input {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.map.as_deref().unwrap_or_default()
    }
}

impl AsRef<[u8]> for Input {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

/// Maps the regular file at `path` read-only (see the module docs for what
/// happens if it is truncated meanwhile).
pub fn map_input(path: &Path) -> Result<Input, InputError> {
    match open_file(path)? {
        (file, Opened::Regular(len)) => map_opened(path, &file, len),
        (_, Opened::Stream) => Err(InputError::NotRegular {
            path: path.to_owned(),
        }),
    }
}

/// What an opened input turned out to be.
enum Opened {
    Regular(u64),
    Stream,
}

/// Opens `path` once (a FIFO's writer is met only once) and says what it is.
fn open_file(path: &Path) -> Result<(File, Opened), InputError> {
    let open_error = |source| InputError::Open {
        path: path.to_owned(),
        source,
    };
    let file = File::open(path).map_err(open_error)?;
    let meta = file.metadata().map_err(open_error)?;
    if meta.is_dir() {
        return Err(InputError::Directory {
            path: path.to_owned(),
        });
    }
    let opened = match meta.is_file() {
        true => Opened::Regular(meta.len()),
        false => Opened::Stream,
    };
    Ok((file, opened))
}

fn map_opened(path: &Path, file: &File, len: u64) -> Result<Input, InputError> {
    Input::from_file(file, len).map_err(|source| InputError::Map {
        path: path.to_owned(),
        source,
    })
}

/// Copies `reader` to a temp file in `store`'s `tmp/` directory, maps it
/// and unlinks it. `source_name` names the stream in errors (`-` for stdin).
pub fn spool_input(
    store: &Store,
    reader: &mut dyn Read,
    source_name: &str,
) -> Result<Input, InputError> {
    let (mut file, temp) = store.spool().create_temp()?;
    let spool_error = |source| InputError::Spool {
        source_name: source_name.to_owned(),
        path: temp.path().to_owned(),
        source,
    };
    let mut buffer = vec![0u8; SPOOL_CHUNK];
    let mut len = 0u64;
    loop {
        let n = match reader.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(source) => {
                return Err(InputError::Read {
                    source_name: source_name.to_owned(),
                    source,
                })
            }
        };
        file.write_all(&buffer[..n]).map_err(spool_error)?;
        len += n as u64;
    }
    // The temp file was opened write-only; map it through a read handle.
    let read = File::open(temp.path()).map_err(spool_error)?;
    let input = Input::from_file(&read, len).map_err(spool_error)?;
    // `temp` unlinks the file on drop; the mapping keeps its pages.
    drop(temp);
    Ok(input)
}

/// What `put FILE` reads: `-` is stdin, a regular file is mapped, anything
/// else readable (FIFO, character device) is spooled like stdin.
pub fn open_input(store: &Store, path: &Path) -> Result<Input, InputError> {
    if path == Path::new("-") {
        return spool_input(store, &mut io::stdin().lock(), "-");
    }
    match open_file(path)? {
        (file, Opened::Regular(len)) => map_opened(path, &file, len),
        (mut file, Opened::Stream) => spool_input(store, &mut file, &path.display().to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_store(name: &str) -> (PathBuf, Store) {
        let dir = std::env::temp_dir().join(format!("stowage-input-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = Store::open(&dir).expect("open a fresh store");
        (dir, store)
    }

    #[test]
    fn regular_file_is_mapped_with_its_bytes() {
        let (dir, _store) = temp_store("map");
        let path = dir.join("in.bin");
        std::fs::write(&path, b"some bytes").expect("write input");
        let input = map_input(&path).expect("maps");
        assert_eq!(&*input, b"some bytes");
        let empty = dir.join("empty.bin");
        std::fs::write(&empty, b"").expect("write input");
        assert_eq!(&*map_input(&empty).expect("maps"), b"");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn directory_and_missing_inputs_are_named() {
        let (dir, _store) = temp_store("dir");
        let error = map_input(&dir).expect_err("a directory");
        assert_eq!(
            error.to_string(),
            format!("cannot read {}: it is a directory", dir.display())
        );
        let missing = dir.join("missing");
        let error = map_input(&missing).expect_err("missing");
        assert_eq!(
            error.to_string(),
            format!(
                "cannot read {}: No such file or directory (os error 2)",
                missing.display()
            )
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn spooled_stream_is_mapped_and_its_temp_file_is_gone() {
        let (dir, store) = temp_store("spool");
        let data: Vec<u8> = (0..3 * SPOOL_CHUNK + 17).map(|i| (i % 251) as u8).collect();
        let input = spool_input(&store, &mut data.as_slice(), "-").expect("spools");
        assert!(&*input == data.as_slice(), "spooled bytes differ");
        let left: Vec<_> = std::fs::read_dir(dir.join("tmp"))
            .expect("tmp dir")
            .map(|e| e.map(|e| e.file_name()))
            .collect::<Result<_, _>>()
            .expect("list tmp");
        assert_eq!(left, Vec::<std::ffi::OsString>::new());
        let empty = spool_input(&store, &mut io::empty(), "-").expect("spools");
        assert!(empty.is_empty());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
