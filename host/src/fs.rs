//! Crash-safe file replacement, once for the whole crate and the `stowage`
//! binary: write a temp file, fsync it, rename it over the target, fsync
//! the target's directory.
//!
//! Users: the store's format marker (`store/mod.rs`), `stowage get -o`
//! (`cli/output.rs`: files and directory exports), `stowage install`
//! (`cli/install.rs`) and `enable`/`disable` (`config/edit.rs`). The store's blob commit renames many temp files and
//! fsyncs each touched directory once, so it uses [`sync_dir`] alone.
//!
//! Invariants: after [`write_atomically`] or [`rename_into_place`] returns
//! `Ok`, the target holds the new bytes durably (file and directory entry
//! fsynced) and a reader saw either the old target or the new one, never a
//! partial file. On any error the temp file is removed (best effort) and
//! the target is untouched.
//!
//! Decision: public but `#[doc(hidden)]`: the binary crate needs it, it is
//! no part of the library's API and may change with any release.
//! Decision: errors are plain `io::Error`s; each caller knows which path to
//! name in its own error type.
//! Decision: on non-Unix targets directory fsyncs are skipped (there is no
//! portable way to open a directory); Unix is the tested platform.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::Path;

/// Makes a directory's entries (creations, renames, removals) durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        File::open(dir)?.sync_all()
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(())
    }
}

/// The directory holding `path` (`.` for a bare file name).
pub fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    }
}

/// Replaces `target` crash-safely: opens `temp` with `options` (the caller
/// picks `create_new`, a mode, …), lets `fill` write it, then
/// [`rename_into_place`]. On any error `temp` is removed and `target` is
/// untouched.
pub fn write_atomically(
    temp: &Path,
    target: &Path,
    options: &OpenOptions,
    fill: impl FnOnce(&mut File) -> io::Result<()>,
) -> io::Result<()> {
    let mut file = options.open(temp)?;
    if let Err(e) = fill(&mut file) {
        let _ = fs::remove_file(temp);
        return Err(e);
    }
    rename_into_place(&file, temp, target)
}

/// Finishes a replacement whose temp file `file` (at `temp`) is fully
/// written: fsyncs it, renames `temp` over `target` and fsyncs `target`'s
/// directory. On an error before the rename `temp` is removed.
pub fn rename_into_place(file: &File, temp: &Path, target: &Path) -> io::Result<()> {
    if let Err(e) = file.sync_all().and_then(|()| fs::rename(temp, target)) {
        let _ = fs::remove_file(temp);
        return Err(e);
    }
    sync_dir(parent_dir(target))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn scratch(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("stowage-fs-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("create a scratch dir");
        dir
    }

    #[test]
    fn write_atomically_replaces_the_target_and_leaves_no_temp() {
        let dir = scratch("replace");
        let (temp, target) = (dir.join(".t.tmp"), dir.join("t"));
        fs::write(&target, b"old").expect("write the old target");
        let mut options = OpenOptions::new();
        options.write(true).create_new(true);
        write_atomically(&temp, &target, &options, |f| f.write_all(b"new")).expect("replace");
        assert_eq!(fs::read(&target).expect("read the target"), b"new");
        assert!(!temp.exists());
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_failing_fill_removes_the_temp_and_keeps_the_old_target() {
        let dir = scratch("fail");
        let (temp, target) = (dir.join(".t.tmp"), dir.join("t"));
        fs::write(&target, b"old").expect("write the old target");
        let mut options = OpenOptions::new();
        options.write(true).create_new(true);
        let err = write_atomically(&temp, &target, &options, |f| {
            f.write_all(b"half")?;
            Err(io::Error::other("disk on fire"))
        })
        .expect_err("the fill fails");
        assert_eq!(err.to_string(), "disk on fire");
        assert_eq!(fs::read(&target).expect("read the target"), b"old");
        assert!(!temp.exists());
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn parent_dir_of_a_bare_name_is_the_current_directory() {
        assert_eq!(parent_dir(Path::new("file")), Path::new("."));
        assert_eq!(parent_dir(Path::new("a/file")), Path::new("a"));
    }
}
