//! Named failpoints on the save path, armed by `STOWAGE_FAILPOINT=<name>`.
//!
//! When the variable names a failpoint, the process prints
//! `failpoint <name> hit` to stderr and exits with status 86 the first time
//! the save path reaches that step. Process-level tests use this to stop a
//! save at every step and prove that a reopened store holds the old or the
//! new artifact, never a torn one.
//!
//! The steps, in save-path order:
//! - `after-blob`: a blob's bytes are written (a large blob's temp file is
//!   complete, or a batch's small blobs are appended to the pack), before
//!   any fsync or rename;
//! - `after-blob-sync`: the batch's blob data (temp files and pack) is
//!   fsynced, before any rename;
//! - `before-rename`: just before a large blob's temp file is renamed to its
//!   content-addressed path;
//! - `before-index`: blob data is durable and in place, before the index
//!   entry is appended;
//! - `mid-index`: half of the index entry is written (a torn tail), then exit;
//! - `after-index`: the whole entry is written, before its fsync.
//!
//! The index's generation change (`compact.rs`: automatic compaction,
//! `gc`, and the format-1 upgrade), in order, listed in
//! [`INDEX_FAILPOINTS`]:
//! - `compact-after-run`: the new snapshot run is in place, before the
//!   manifest names it;
//! - `compact-after-manifest`: the manifest names the new generation,
//!   before (upgrade) the marker or the old log's seal;
//! - `upgrade-after-marker`: an upgrade wrote `stowage-store 2`, before the
//!   old log's seal;
//! - `compact-after-seal`: the old log is sealed, before the new log
//!   replaces it;
//! - `compact-after-log`: the new log is in place, before stale runs are
//!   deleted.
//!
//! Two more names are not steps but injected faults, kept apart from
//! [`FAILPOINTS`] (which lists only the save path):
//! - `open-erofs` ([`OPEN_EROFS`]): [`DirStore::open`](super::DirStore::open)
//!   behaves as if the file system had answered EROFS to its first write, so
//!   the store opens read-only. The process goes on; tests use it to prove
//!   a read-only mount is readable and refuses writes.
//! - `spool-enospc` ([`SPOOL_ENOSPC`]): every write into a large blob's
//!   spool file fails with ENOSPC, as on a full disk; tests use it to prove
//!   a store failure is reported as the store's, never blamed on the
//!   plugin that was writing.
//!
//! Invariant: the variable is read once per process ([`OnceLock`]); arming is
//! a pointer comparison afterwards, so an unarmed save pays nothing.
//!
//! Decision: an unknown name is reported once on stderr and through
//! `tracing` (a misspelt failpoint would otherwise make a crash test pass
//! vacuously) and otherwise ignored.

use std::sync::OnceLock;

/// The environment variable that arms a failpoint.
pub const ENV_VAR: &str = "STOWAGE_FAILPOINT";

/// Exit status of a process stopped at a failpoint.
pub const EXIT_CODE: i32 = 86;

/// Every failpoint name, in save-path order.
pub const FAILPOINTS: &[&str] = &[
    "after-blob",
    "after-blob-sync",
    "before-rename",
    "before-index",
    "mid-index",
    "after-index",
];

/// The index-generation failpoints, in order (see the module docs).
pub const INDEX_FAILPOINTS: &[&str] = &[
    "compact-after-run",
    "compact-after-manifest",
    "upgrade-after-marker",
    "compact-after-seal",
    "compact-after-log",
];

/// Injected fault: `DirStore::open` acts as on a read-only file system.
pub const OPEN_EROFS: &str = "open-erofs";

/// Injected fault: every write into a spool (temp) file fails with ENOSPC,
/// as on a full disk.
pub const SPOOL_ENOSPC: &str = "spool-enospc";

/// Injected faults (not save-path steps): they change behaviour instead of
/// exiting.
pub const INJECTIONS: &[&str] = &[OPEN_EROFS, SPOOL_ENOSPC];

/// Whether [`SPOOL_ENOSPC`] is armed.
pub(crate) fn spool_is_full() -> bool {
    is_armed(SPOOL_ENOSPC)
}

/// The error a full disk gives a write.
pub(crate) fn no_space() -> std::io::Error {
    #[cfg(unix)]
    {
        std::io::Error::from_raw_os_error(libc::ENOSPC)
    }
    #[cfg(not(unix))]
    {
        std::io::Error::from(std::io::ErrorKind::StorageFull)
    }
}

/// The armed failpoint of this process, read once from [`ENV_VAR`].
pub fn armed() -> Option<&'static str> {
    static ARMED: OnceLock<Option<&'static str>> = OnceLock::new();
    *ARMED.get_or_init(|| parse(std::env::var(ENV_VAR).ok().as_deref()))
}

/// Maps the variable's value to a known failpoint name.
pub(crate) fn parse(value: Option<&str>) -> Option<&'static str> {
    let value = value?.trim();
    if value.is_empty() {
        return None;
    }
    let found = FAILPOINTS
        .iter()
        .chain(INDEX_FAILPOINTS)
        .chain(INJECTIONS)
        .copied()
        .find(|name| *name == value);
    if found.is_none() {
        eprintln!(
            "warning: {ENV_VAR}={value} names no failpoint; known: {}, {}, {}",
            FAILPOINTS.join(", "),
            INDEX_FAILPOINTS.join(", "),
            INJECTIONS.join(", ")
        );
        tracing::warn!(target: "stowage::store", failpoint = value, "unknown failpoint name ignored");
    }
    found
}

/// Whether `name` is the armed failpoint.
pub(crate) fn is_armed(name: &str) -> bool {
    armed() == Some(name)
}

/// Exits the process if `name` is the armed failpoint.
pub(crate) fn hit(name: &str) {
    if is_armed(name) {
        eprintln!("failpoint {name} hit");
        std::process::exit(EXIT_CODE);
    }
}
