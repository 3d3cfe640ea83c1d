//! `stowage push NAME… --to URL` and `stowage pull NAME… --from URL`:
//! copy artifacts between this host's store and another one, named by URL
//! (`s3://bucket/prefix`, `file://DIR`) or directory, by digest (see
//! `stowage::store::copy_artifacts`), with a progress bar on a terminal.
//!
//! Decision: the other store is reached with this config's `[store.s3]`
//! and `[store] cache` settings (and the AWS environment), so one config
//! serves both ends.

use std::io::{self, IsTerminal as _};
use std::path::Path;

use anyhow::Result;
use indicatif::{ProgressBar, ProgressStyle};
use stowage::store::{copy_artifacts, is_store_url, Store};
use stowage::text::escape_control;
use stowage::Host;

use super::print;

/// Which way the copy goes.
#[derive(Debug, Clone, Copy)]
pub enum Direction {
    /// From this host's store to the other one.
    Push,
    /// From the other store into this host's.
    Pull,
}

/// Opens the other store.
fn open_other(host: &Host, other: &str) -> Result<Store> {
    let snapshot = host.snapshot();
    Ok(if is_store_url(other) {
        Store::open_url(other, &snapshot.config.s3)?
    } else {
        Store::open(Path::new(other))?
    })
}

/// `push`/`pull` of `names` to/from `other`.
pub fn run(host: &Host, direction: Direction, names: &[String], other: &str) -> Result<()> {
    let mine = host.store()?;
    let theirs = open_other(host, other)?;
    let (from, to): (&Store, &Store) = match direction {
        Direction::Push => (&mine, &theirs),
        Direction::Pull => (&theirs, &mine),
    };
    let bar = if io::stderr().is_terminal() && names.len() > 1 {
        let bar = ProgressBar::new(names.len() as u64);
        let style = ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len}")
            .unwrap_or_else(|_| ProgressStyle::default_bar());
        bar.set_style(style);
        bar
    } else {
        ProgressBar::hidden()
    };
    let report = copy_artifacts(from, to, names, |name| {
        bar.set_message(escape_control(name).into_owned());
        bar.inc(1);
    })?;
    bar.finish_and_clear();
    let (verb, preposition) = match direction {
        Direction::Push => ("pushed", "to"),
        Direction::Pull => ("pulled", "from"),
    };
    print(&format!(
        "{verb} {} artifact(s) ({} bytes) {preposition} {}; {} already there\n",
        report.copied,
        report.bytes,
        escape_control(other),
        report.skipped
    ))
}
