//! What the through-the-host benchmarks in `tests/benches/` share: the run
//! mode, medians, goal verdicts, the `load_mapped` size-independence line,
//! and the durable, hashed file writes that give a crate-used-directly
//! baseline the same durability and hashing as the store (SPEC §9).
//!
//! Benches may panic on their own setup; nothing here asserts a time.

use std::fs::{self, File};
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

/// Prints the bench's title line with the build profile, and returns whether
/// this is a quick smoke run: `--quick`, or `--test`, which `cargo bench --
/// --test` passes.
pub fn start(title: &str) -> bool {
    let quick = std::env::args().any(|a| a == "--quick" || a == "--test");
    // Debug builds load debug plugins (see `artifacts`): say so, since their
    // figures mean nothing.
    let profile = if cfg!(debug_assertions) {
        "debug (figures not meaningful)"
    } else {
        "release"
    };
    println!(
        "{title} ({profile}{})",
        if quick { ", quick smoke run" } else { "" }
    );
    quick
}

/// The median of `samples` (the upper one of an even count).
///
/// # Panics
///
/// If `samples` is empty.
pub fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

/// The median wall time of `runs` calls of `f`.
pub fn time(runs: usize, mut f: impl FnMut()) -> Duration {
    median(
        (0..runs)
            .map(|_| {
                let start = Instant::now();
                f();
                start.elapsed()
            })
            .collect(),
    )
}

/// `"(met)"` if `value >= goal`, else `"(MISSED)"`.
pub fn at_least(value: f64, goal: f64) -> &'static str {
    if value >= goal {
        "(met)"
    } else {
        "(MISSED)"
    }
}

/// `"(met)"` if `value <= goal`, else `"(MISSED)"`.
pub fn at_most(value: f64, goal: f64) -> &'static str {
    if value <= goal {
        "(met)"
    } else {
        "(MISSED)"
    }
}

/// The large/small time ratio still judged "equal" for `load_mapped`: a
/// zero-copy load takes microseconds, where page-cache and allocator noise
/// alone moves a median by tens of percent, while a load that touches the
/// data is many times slower on the large artifact.
const EQUAL_WITHIN: f64 = 1.5;

/// Prints the `load_mapped` line of a format bench: the median time for a
/// small and a large artifact, their ratio, and the verdict against the goal
/// of equal times (O(1) in size, SPEC §9).
pub fn print_mapped(small: &str, t_small: Duration, large: &str, t_large: Duration) {
    let ratio = t_large.as_secs_f64() / t_small.as_secs_f64();
    println!(
        "load_mapped: {small} {t_small:.2?}, {large} {t_large:.2?}: {ratio:.2}x, goal equal (1.0x) {}",
        at_most(ratio, EQUAL_WITHIN)
    );
}

/// Writes `bytes` to `dir/name` as durably as the store commits a raw blob
/// (temp file → fsync → rename → fsync directory), hashing them with blake3
/// first as the store does while writing. Returns the hash for
/// [`verified_read`].
pub fn durable_write(dir: &Path, name: &str, bytes: &[u8]) -> blake3::Hash {
    let hash = blake3::hash(bytes);
    let temp = dir.join(format!("{name}.tmp"));
    let mut file = File::create(&temp).expect("create baseline file");
    file.write_all(bytes).expect("write baseline file");
    file.sync_all().expect("fsync baseline file");
    fs::rename(&temp, dir.join(name)).expect("rename baseline file");
    File::open(dir)
        .and_then(|d| d.sync_all())
        .expect("fsync baseline directory");
    hash
}

/// Reads `path` and checks its blake3 against `expected`, as a verified
/// store load re-hashes every blob.
pub fn verified_read(path: &Path, expected: &blake3::Hash) -> Vec<u8> {
    let bytes = fs::read(path).expect("read baseline file");
    assert_eq!(&blake3::hash(&bytes), expected, "baseline file intact");
    bytes
}
