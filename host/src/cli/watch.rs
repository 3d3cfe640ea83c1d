//! `stowage watch`: stays up, rescans when the plugin directory or the
//! config changes, and prints one line per state transition.
//!
//! Decision: changes are detected by polling a cheap fingerprint (names,
//! sizes and modification times of the config file and the directory's
//! entries) rather than with an OS file-watch API: no extra dependency, the
//! same behaviour on every platform, and a rescan only when something moved.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::Result;
use stowage::Host;

use super::print;

type Fingerprint = Vec<(PathBuf, u64, Option<SystemTime>)>;

fn fingerprint(config: &Path, dir: &Path) -> Fingerprint {
    let stamp = |path: PathBuf| {
        let meta = fs::metadata(&path).ok();
        let len = meta.as_ref().map_or(0, |m| m.len());
        let modified = meta.and_then(|m| m.modified().ok());
        (path, len, modified)
    };
    let mut entries: Fingerprint = vec![stamp(config.to_owned()), stamp(dir.to_owned())];
    if let Ok(read) = fs::read_dir(dir) {
        let mut files: Vec<PathBuf> = read.filter_map(|e| e.ok().map(|e| e.path())).collect();
        files.sort();
        entries.extend(files.into_iter().map(stamp));
    }
    entries
}

fn states(host: &Host) -> BTreeMap<(String, String), (String, String)> {
    host.snapshot()
        .statuses()
        .into_iter()
        .map(|s| {
            let library = s
                .library
                .map(|p| p.display().to_string())
                .unwrap_or_default();
            let reason = s
                .awaiting
                .map(|a| format!("awaiting {a}"))
                .or(s.last_error)
                .unwrap_or_default();
            ((s.name, library), (s.state.name().to_owned(), reason))
        })
        .collect()
}

/// Runs until killed.
pub fn run(host: Host, interval_ms: u64) -> Result<()> {
    let interval = Duration::from_millis(interval_ms.max(10));
    // Fingerprint first, then rescan: a change made while we start up is
    // either seen by that rescan or differs from this fingerprint, never lost.
    let config_path = host.config_path().to_owned();
    let mut last = fingerprint(&config_path, &host.snapshot().config.plugin_dir);
    host.rescan()?;
    let mut before = states(&host);
    for ((name, _), (state, reason)) in &before {
        print(&line(name, "new", state, reason))?;
    }
    loop {
        std::thread::sleep(interval);
        let now = fingerprint(&config_path, &host.snapshot().config.plugin_dir);
        if now == last {
            continue;
        }
        last = now;
        if let Err(error) = host.rescan() {
            print(&format!("rescan failed: {error}\n"))?;
            continue;
        }
        let after = states(&host);
        for (key, (state, reason)) in &after {
            let old = before.get(key).map_or("new", |(s, _)| s.as_str());
            if before.get(key) != Some(&(state.clone(), reason.clone())) {
                print(&line(&key.0, old, state, reason))?;
            }
        }
        before = after;
    }
}

fn line(name: &str, from: &str, to: &str, reason: &str) -> String {
    if reason.is_empty() {
        format!("{name}: {from} -> {to}\n")
    } else {
        format!("{name}: {from} -> {to} ({reason})\n")
    }
}
