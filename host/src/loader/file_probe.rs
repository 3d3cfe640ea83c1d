//! Checking a library file without running any of its code: the ELF sanity
//! check, then the frozen probe (`stowage_plugin_probe`) read straight out of
//! the file's dynamic symbol table and the section holding it.
//!
//! `dlopen` runs a library's initialisers, so anything that must judge a file
//! before trusting it (`stowage install`, later a process-isolated plugin
//! whose library the host never opens) comes here instead. The verdicts are
//! the very [`LoadError`]s a rescan would record, so `install` refuses with
//! the same one-line reason `status` would show.
//!
//! Invariant: no byte of the file is executed or relocated; it is only read,
//! and every offset taken from it is bounds-checked by the `object` crate.
//!
//! Decision: only ELF is read (the tested platform is Linux); on other
//! platforms a file is refused as not a shared library.
//! Decision: a library built for another CPU architecture than this host's
//! is refused as [`LoadError::ForeignArchitecture`] before its probe is read:
//! `dlopen` would refuse it anyway, with a longer message.

use std::fs;
use std::path::Path;

use object::{Object, ObjectKind, ObjectSection, ObjectSymbol};
use stowage_plugin_api::abi::{AbiProbe, PROBE_MAGIC, PROBE_SYMBOL};

use super::{check_elf, check_interface, read_error, LoadError};

/// The interface a library file was built against, from its probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileProbe {
    /// Interface major version.
    pub major: u32,
    /// Interface minor version.
    pub minor: u32,
    /// Interface patch version.
    pub patch: u32,
}

impl std::fmt::Display for FileProbe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// Checks that `path` is a shared library of this platform carrying a
/// stowage probe of an interface this host speaks, without opening it as a
/// library. Errors are the one-line reasons a rescan would give.
pub fn check_library_file(path: &Path) -> Result<FileProbe, LoadError> {
    let bytes = fs::read(path).map_err(|e| read_error(path, &e))?;
    check_elf(path, &bytes, bytes.len() as u64)?;
    let probe = read_probe(path, &bytes)?;
    check_interface(&probe)?;
    Ok(FileProbe {
        major: probe.major,
        minor: probe.minor,
        patch: probe.patch,
    })
}

/// The probe of the library image `bytes` (the whole file at `path`).
fn read_probe(path: &Path, bytes: &[u8]) -> Result<AbiProbe, LoadError> {
    let not_a_library = || LoadError::NotSharedLibrary {
        path: path.to_owned(),
    };
    let bad_probe = || LoadError::BadProbe {
        path: path.to_owned(),
    };
    let file = object::File::parse(bytes).map_err(|_| not_a_library())?;
    if file.kind() != ObjectKind::Dynamic {
        return Err(not_a_library());
    }
    check_architecture(path, file.architecture())?;
    let name = PROBE_SYMBOL.strip_suffix(b"\0").unwrap_or(PROBE_SYMBOL);
    let symbol = file
        .dynamic_symbols()
        .find(|s| s.is_definition() && s.name_bytes().is_ok_and(|n| n == name))
        .ok_or_else(|| LoadError::NoStowageSymbol {
            path: path.to_owned(),
        })?;
    let size = std::mem::size_of::<AbiProbe>();
    let section = symbol
        .section_index()
        .and_then(|index| file.section_by_index(index).ok())
        .ok_or_else(bad_probe)?;
    let data = section
        .data_range(symbol.address(), size as u64)
        .ok()
        .flatten()
        .ok_or_else(bad_probe)?;
    let probe = decode(data, file.is_little_endian()).ok_or_else(bad_probe)?;
    if probe.magic != PROBE_MAGIC || (probe.size as usize) < size {
        return Err(bad_probe());
    }
    Ok(probe)
}

/// Decodes the frozen `#[repr(C)]` probe layout: 8 magic bytes, then four
/// `u32`s (size, major, minor, patch) in the file's byte order.
fn decode(data: &[u8], little_endian: bool) -> Option<AbiProbe> {
    let magic: [u8; 8] = data.get(..8)?.try_into().ok()?;
    let word = |index: usize| -> Option<u32> {
        let at = 8 + 4 * index;
        let raw: [u8; 4] = data.get(at..at + 4)?.try_into().ok()?;
        Some(if little_endian {
            u32::from_le_bytes(raw)
        } else {
            u32::from_be_bytes(raw)
        })
    };
    Some(AbiProbe {
        magic,
        size: word(0)?,
        major: word(1)?,
        minor: word(2)?,
        patch: word(3)?,
    })
}

fn check_architecture(path: &Path, found: object::Architecture) -> Result<(), LoadError> {
    let expected = match std::env::consts::ARCH {
        "x86_64" => object::Architecture::X86_64,
        "aarch64" => object::Architecture::Aarch64,
        // Other hosts: leave the verdict to the platform's loader.
        _ => return Ok(()),
    };
    if found != expected {
        return Err(LoadError::ForeignArchitecture {
            path: path.to_owned(),
            found: format!("{found:?}").to_ascii_lowercase(),
            host: std::env::consts::ARCH.to_owned(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe_bytes(probe: &AbiProbe) -> Vec<u8> {
        let mut bytes = probe.magic.to_vec();
        for word in [probe.size, probe.major, probe.minor, probe.patch] {
            bytes.extend_from_slice(&word.to_le_bytes());
        }
        bytes
    }

    #[test]
    fn decodes_the_frozen_probe_layout() {
        let probe = stowage_plugin_api::abi::PROBE;
        assert_eq!(probe_bytes(&probe).len(), std::mem::size_of::<AbiProbe>());
        assert_eq!(decode(&probe_bytes(&probe), true), Some(probe));
    }

    #[test]
    fn a_short_probe_does_not_decode() {
        let bytes = probe_bytes(&stowage_plugin_api::abi::PROBE);
        assert_eq!(decode(&bytes[..bytes.len() - 1], true), None);
    }

    #[test]
    fn a_file_that_is_not_elf_is_not_a_shared_library() {
        let dir = std::env::temp_dir().join(format!("stowage-probe-{}", std::process::id()));
        fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("libnot.so");
        fs::write(&path, b"#!/bin/sh\necho hi\n").expect("write");
        assert_eq!(
            check_library_file(&path),
            Err(LoadError::NotSharedLibrary { path: path.clone() })
        );
        let _ = fs::remove_dir_all(&dir);
    }
}
