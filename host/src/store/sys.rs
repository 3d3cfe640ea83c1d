//! The store's `unsafe` primitives: memory-mapping files, `flock`,
//! `access(2)` to ask whether the store directory is writable, and
//! `sync_file_range(2)` to start a file's writeback early. `flock` and
//! `access` are safe wrappers; [`map_file`] is an `unsafe fn` because only
//! its caller knows whether the file can change while mapped, so its three
//! callers (`blob.rs`, `pack.rs`, `input.rs`) each hold one `unsafe` block
//! saying why.
//!
//! Invariants:
//! - A file is mapped only after the store has made it immutable: a raw blob
//!   file is mapped after its rename into `blobs/` (nothing writes it
//!   again), and a pack is only ever appended to, never rewritten or
//!   truncated, so every byte inside an existing mapping stays as it was.
//!   gc removes files by unlinking them, which leaves existing mappings
//!   valid on Unix.
//! - The lock is an advisory `flock` on `<store>/lock`. It is released by
//!   the kernel when the holder exits or crashes, so a failpoint or a kill
//!   never leaves a stale lock behind. `flock` belongs to the open file
//!   description, so two [`DirStore`](super::DirStore)s in one process exclude
//!   each other exactly like two processes do.
//!
//! Decision: mapping cannot be made safe against *other programs* that
//! truncate or rewrite store files in place (a truncated mapped file raises
//! SIGBUS on access); the store documents its files as owned by stowage.
//! Decision: on non-Unix targets the lock uses `std::fs::File::lock`
//! (Rust 1.89+); only the Unix path is tested.

use std::fs::File;
use std::io;

use memmap2::Mmap;

/// Starts writing `len` bytes at `offset` of `file` back to the disk and
/// returns at once (Linux `sync_file_range(SYNC_FILE_RANGE_WRITE)`): the
/// disk works while the caller goes on producing bytes, so the fsync at
/// commit finds little left to do. Only a hint: durability still comes from
/// that fsync, so an error here is ignored, and elsewhere it does nothing.
pub(crate) fn start_writeback(file: &File, offset: u64, len: u64) {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let (Ok(offset), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else {
            return;
        };
        // SAFETY: the descriptor is open for the duration of the call, and
        // sync_file_range reads no memory of this process.
        unsafe {
            libc::sync_file_range(file.as_raw_fd(), offset, len, libc::SYNC_FILE_RANGE_WRITE);
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (file, offset, len);
    }
}

/// Maps the whole of `file` read-only.
///
/// # Safety
///
/// The caller guarantees that nothing modifies or truncates the file while
/// the returned mapping (or any slice of it) is alive: memmap2 hands out
/// `&[u8]` over the pages, and Rust assumes a shared slice never changes.
/// Store files satisfy this by the module invariants (a raw blob file is
/// mapped only after its rename into `blobs/`, a pack is append-only and
/// never truncated, removal is an unlink). Files of other programs do not:
/// a caller mapping one must document what happens if that program changes
/// it (see `input.rs`).
pub(crate) unsafe fn map_file(file: &File) -> io::Result<Mmap> {
    // SAFETY: forwarded to our caller by this function's `# Safety` section.
    unsafe { Mmap::map(file) }
}

/// `Ok` if this process may create files in `dir` (`access(W_OK)`: honours
/// permissions, ACLs, root's override and read-only mounts, which answer
/// EROFS).
#[cfg(unix)]
pub(crate) fn check_writable(dir: &std::path::Path) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))?;
    // SAFETY: `access` reads the NUL-terminated string it is given and
    // nothing else; `path` is a valid `CString` that outlives the call.
    let rc = unsafe { libc::access(path.as_ptr(), libc::W_OK) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// `Ok` unless `dir` is marked read-only (a weaker check than on Unix;
/// later writes still detect denial).
#[cfg(not(unix))]
pub(crate) fn check_writable(dir: &std::path::Path) -> io::Result<()> {
    if std::fs::metadata(dir)?.permissions().readonly() {
        Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            "directory is read-only",
        ))
    } else {
        Ok(())
    }
}

/// Blocks until this open file description holds an exclusive `flock`.
#[cfg(unix)]
pub(crate) fn lock_exclusive(file: &File) -> io::Result<()> {
    flock(file, libc::LOCK_EX)
}

/// Releases the `flock` held by this open file description.
#[cfg(unix)]
pub(crate) fn unlock(file: &File) -> io::Result<()> {
    flock(file, libc::LOCK_UN)
}

#[cfg(unix)]
fn flock(file: &File, op: libc::c_int) -> io::Result<()> {
    use std::os::unix::io::AsRawFd;
    loop {
        // SAFETY: `flock` has no memory-safety preconditions; the descriptor
        // is valid because `file` owns it and outlives this call.
        let rc = unsafe { libc::flock(file.as_raw_fd(), op) };
        if rc == 0 {
            return Ok(());
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// Blocks until this handle holds an exclusive lock on the file.
#[cfg(not(unix))]
pub(crate) fn lock_exclusive(file: &File) -> io::Result<()> {
    file.lock()
}

/// Releases the lock held by this handle.
#[cfg(not(unix))]
pub(crate) fn unlock(file: &File) -> io::Result<()> {
    file.unlock()
}
