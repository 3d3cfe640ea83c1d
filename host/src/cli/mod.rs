//! Command-line parsing and the commands that only read or toggle plugins.
//! Each command opens a [`Host`] (which rescans), does one thing, and prints
//! to stdout; warnings go to stderr as `warning: …` lines.
//!
//! Decision: `stowage enable|disable NAME` for a name that is neither
//! configured nor found in the plugin directory still writes the table (so
//! a plugin can be configured before its library is installed) and warns
//! that the name is unknown.

mod data;
mod demo;
mod install;
mod output;
mod transfer;
mod watch;

use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use stowage::config::{self, EditOutcome};
use stowage::text::escape_control;
use stowage::{Answer, Attempt, Host, HostOptions, Skipped, Value};

/// stowage: a plugin host for serializers.
#[derive(Debug, Parser)]
#[command(name = "stowage", version, about)]
pub struct Args {
    /// Config file (default: $STOWAGE_CONFIG, else ./plugins.toml).
    #[arg(long, global = true, value_name = "PATH")]
    config: Option<PathBuf>,
    /// Store directory or URL (`file://DIR`, `s3://bucket/prefix`;
    /// default: `[store] url` or `[store] dir` of the config).
    #[arg(long, global = true, value_name = "DIR|URL")]
    store: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Every serializer in dispatch order, with state and reason.
    Status {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Enable a plugin in the config file (edited in place).
    Enable {
        /// Plugin name.
        name: String,
    },
    /// Disable a plugin in the config file (edited in place).
    Disable {
        /// Plugin name.
        name: String,
    },
    /// Install plugin libraries into the plugin directory (checked without
    /// running them, then copied and renamed into place).
    Install {
        /// Library files, named one by one (`target/debug/libstowage_tensor.so`).
        #[arg(required = true, value_name = "PATH")]
        paths: Vec<PathBuf>,
    },
    /// Remove an installed plugin's library from the plugin directory.
    Uninstall {
        /// Plugin name, as `stowage status` shows it.
        name: String,
    },
    /// Show the dispatch decision for a file or a JSON value.
    Explain {
        /// A file, as `stowage put` would see it (`-` for stdin).
        #[arg(required_unless_present = "json", conflicts_with = "json")]
        file: Option<PathBuf>,
        /// A JSON value, as `stowage put --json` would store it.
        #[arg(long, value_name = "VALUE")]
        json: Option<String>,
    },
    /// Store a file: the plugin whose sniff recognises it ingests it.
    Put {
        /// Artifact name.
        name: String,
        /// The file (`-` for stdin).
        file: PathBuf,
        /// Read FILE as one JSON document (at most 64 MiB) and store the
        /// value like `Host::save`: the best serializer claiming its kind,
        /// else the built-in msgpack fallback.
        #[arg(long)]
        json: bool,
        /// A plugin option, `KEY=VALUE` (repeatable).
        #[arg(long = "opt", value_name = "KEY=VALUE", value_parser = OptionParser)]
        options: Vec<(String, String)>,
        /// Qualified name of a Python class (class-source; same as --opt qualname=Q).
        #[arg(long, value_name = "Q")]
        qualname: Option<String>,
    },
    /// Write an artifact in its standard format (or its raw blobs).
    Get {
        /// Artifact name.
        name: String,
        /// Output (default or `-`: stdout). A file is replaced atomically
        /// (a symlink's target, the link kept); a character device or FIFO
        /// is written through; with --raw and several blobs, a directory
        /// (absent or empty) created whole.
        #[arg(short = 'o', long, value_name = "PATH")]
        output: Option<PathBuf>,
        /// The stored blobs as they are, without any plugin.
        #[arg(long)]
        raw: bool,
    },
    /// List artifacts.
    Ls {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// An artifact's metadata and provenance.
    Inspect {
        /// Artifact name.
        name: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// A short human-readable rendering of an artifact.
    Show {
        /// Artifact name.
        name: String,
    },
    /// Remove an artifact.
    Rm {
        /// Artifact name.
        name: String,
    },
    /// Drop stored data no artifact references.
    Gc,
    /// Re-hash every blob of every artifact.
    Verify,
    /// Copy artifacts from this store to another (by digest: blobs the
    /// other store has are not stored again).
    Push {
        /// Artifact names.
        #[arg(required = true)]
        names: Vec<String>,
        /// The other store: `s3://bucket/prefix`, `file://DIR` or a
        /// directory.
        #[arg(long, value_name = "URL")]
        to: String,
    },
    /// Copy artifacts from another store into this one.
    Pull {
        /// Artifact names.
        #[arg(required = true)]
        names: Vec<String>,
        /// The other store: `s3://bucket/prefix`, `file://DIR` or a
        /// directory.
        #[arg(long, value_name = "URL")]
        from: String,
    },
    /// Stay up, rescan on changes to the plugin directory or config, and
    /// print every state transition.
    Watch {
        /// Milliseconds between checks for changes.
        #[arg(long, default_value_t = 250)]
        interval_ms: u64,
    },
    /// Walk through discovery, lifecycle, toggles and dispatch in a fresh
    /// directory, using the plugin libraries built next to this binary.
    Demo {
        /// Where the built plugin libraries are (default: this binary's
        /// directory).
        #[arg(long, value_name = "DIR")]
        libs: Option<PathBuf>,
        /// Directory to run the demo in (created; default: ./demo-run).
        #[arg(long, value_name = "DIR", default_value = "demo-run")]
        dir: PathBuf,
    },
}

/// Runs one command.
pub fn run(args: Args) -> Result<()> {
    let mut options = HostOptions::from_env(args.config.as_deref());
    match args.store {
        Some(store) if store.to_str().is_some_and(stowage::store::is_store_url) => {
            options.store_url = store.to_str().map(str::to_owned);
        }
        store => options.store_dir = store,
    }
    match args.command {
        Command::Put {
            name,
            file,
            json,
            options: mut plugin_options,
            qualname,
        } => {
            if let Some(qualname) = qualname {
                plugin_options.push(("qualname".to_owned(), qualname));
            }
            data::put(&open(options)?, &name, &file, json, plugin_options)
        }
        Command::Get { name, output, raw } => {
            data::get(&open(options)?, &name, output.as_deref(), raw)
        }
        Command::Ls { json } => data::ls(&open(options)?, json),
        Command::Inspect { name, json } => data::inspect(&open(options)?, &name, json),
        Command::Show { name } => data::show(&open(options)?, &name),
        Command::Rm { name } => data::rm(&open(options)?, &name),
        Command::Gc => data::gc(&open(options)?),
        Command::Verify => data::verify(&open(options)?),
        Command::Push { names, to } => {
            transfer::run(&open(options)?, transfer::Direction::Push, &names, &to)
        }
        Command::Pull { names, from } => {
            transfer::run(&open(options)?, transfer::Direction::Pull, &names, &from)
        }
        Command::Status { json } => status(&open(options)?, json),
        Command::Install { paths } => install::install(options, &paths),
        Command::Uninstall { name } => install::uninstall(options, &name),
        Command::Enable { name } => toggle(options, &name, true),
        Command::Disable { name } => toggle(options, &name, false),
        Command::Explain { file, json } => {
            explain(&open(options)?, file.as_deref(), json.as_deref())
        }
        Command::Watch { interval_ms } => watch::run(open(options)?, interval_ms),
        Command::Demo { libs, dir } => demo::run(libs, &dir),
    }
}

/// Parses `--opt KEY=VALUE`. Its own parser rather than a function, whose
/// errors clap prefixes with the whole value: a refusal quotes the value
/// capped (`quote_capped`), however long it is.
#[derive(Debug, Clone, Copy)]
struct OptionParser;

impl clap::builder::TypedValueParser for OptionParser {
    type Value = (String, String);

    fn parse_ref(
        &self,
        _cmd: &clap::Command,
        _arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<Self::Value, clap::Error> {
        let text = value.to_string_lossy();
        parse_option(&text)
            .map_err(|why| clap::Error::raw(clap::error::ErrorKind::ValueValidation, why + "\n"))
    }
}

fn parse_option(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_owned(), value.to_owned())),
        _ => Err(format!(
            "--opt expects KEY=VALUE, got \"{}\"",
            stowage::quote_capped(text, stowage::MAX_QUOTED_NAME)
        )),
    }
}

fn open(options: HostOptions) -> Result<Host> {
    let host = Host::open(options)?;
    warn_config(&host);
    Ok(host)
}

/// Config and toggle warnings, one line each on stderr.
fn warn_config(host: &Host) {
    let mut stderr = io::stderr().lock();
    for warning in &host.snapshot().warnings {
        let _ = writeln!(stderr, "warning: {warning}");
    }
}

/// One stderr line per plugin that failed and was skipped.
pub fn warn_skipped(skipped: &[Skipped]) {
    let mut stderr = io::stderr().lock();
    for skip in skipped {
        let _ = writeln!(
            stderr,
            "warning: skipped plugin {}: {}",
            skip.plugin, skip.message
        );
    }
}

/// Writes `text` to stdout (a closed pipe surfaces as `BrokenPipe`).
pub fn print(text: &str) -> Result<()> {
    let mut stdout = io::stdout().lock();
    stdout.write_all(text.as_bytes())?;
    stdout.flush()?;
    Ok(())
}

/// The status table (what `status` prints without `--json`).
pub fn status_table(host: &Host) -> String {
    let snapshot = host.snapshot();
    let statuses = snapshot.statuses();
    let mut out = String::new();
    let width = statuses
        .iter()
        .map(|s| escape_control(&s.name).chars().count())
        .max()
        .unwrap_or(4)
        .max(4);
    let _ = writeln!(
        out,
        "{:width$}  {:9} {:>5}  {:10} {:28} DETAIL",
        "NAME", "STATE", "PRIO", "VERSION", "KINDS"
    );
    for s in &statuses {
        let detail = match (&s.awaiting, &s.last_error) {
            (Some(awaiting), _) => format!("awaiting {awaiting}"),
            (None, Some(error)) => error.clone(),
            (None, None) if s.builtin && s.name == stowage::composite::COMPOSITE_NAME => {
                "built-in composite (lists and maps with non-plain leaves)".to_owned()
            }
            (None, None) if s.builtin => "built-in fallback".to_owned(),
            (None, None) => s
                .library
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
        };
        let errors = if s.dispatch_errors > 0 {
            format!(" [{} dispatch errors]", s.dispatch_errors)
        } else {
            String::new()
        };
        let _ = writeln!(
            out,
            "{:width$}  {:9} {:>5}  {:10} {:28} {}{errors}",
            escape_control(&s.name),
            s.state.name(),
            s.priority
                .map(|p| p.to_string())
                .unwrap_or_else(|| "-".into()),
            escape_control(s.version.as_deref().unwrap_or("-")),
            if s.kinds.is_empty() {
                "-".to_owned()
            } else {
                escape_control(&s.kinds.join(",")).into_owned()
            },
            escape_control(&detail),
        );
    }
    if !snapshot.warnings.is_empty() {
        let _ = writeln!(out, "\nwarnings:");
        for warning in &snapshot.warnings {
            let _ = writeln!(out, "  {}", escape_control(warning));
        }
    }
    out
}

fn status(host: &Host, json: bool) -> Result<()> {
    if json {
        print(&format!("{:#}\n", host.status_json()))
    } else {
        print(&status_table(host))
    }
}

fn toggle(options: HostOptions, name: &str, enabled: bool) -> Result<()> {
    let path =
        std::path::absolute(&options.config_path).unwrap_or_else(|_| options.config_path.clone());
    // A broken config is reported (with line:column) and left untouched.
    let known = match Host::open(options) {
        Ok(host) => host.snapshot().statuses().iter().any(|s| s.name == name),
        Err(stowage::Error::Config(error))
            if !matches!(error, config::ConfigError::NotFound { .. }) =>
        {
            return Err(error.into())
        }
        Err(_) => false,
    };
    let verb = if enabled { "enabled" } else { "disabled" };
    let outcome = config::set_enabled(&path, name, enabled)?;
    if !known {
        let _ = writeln!(
            io::stderr(),
            "warning: unknown plugin {name}: not configured and not found in the plugin directory"
        );
    }
    match outcome {
        EditOutcome::AlreadySet => {
            print(&format!("{name} is already {verb} in {}\n", path.display()))
        }
        EditOutcome::Changed | EditOutcome::AddedTable => {
            print(&format!("{verb} {name} in {}\n", path.display()))
        }
    }
}

fn explain(host: &Host, file: Option<&Path>, json: Option<&str>) -> Result<()> {
    let (subject, attempts, rule) = match (file, json) {
        (_, Some(text)) => {
            let json: serde_json::Value =
                serde_json::from_str(text).context("--json is not valid JSON")?;
            let value = Value::from_json(&json)?;
            let attempts = host.snapshot().table.explain_value(&value);
            (
                format!("a {} value", value.kind()),
                attempts,
                "the first active serializer claiming the kind, in priority order (ties by name), whose can_serialize accepts it",
            )
        }
        (Some(path), None) if path.is_dir() => return data::explain_dir(host, path),
        (Some(path), None) => {
            // Only the prefix `put` would hand to `sniff` is read.
            let prefix = read_at_most(path, stowage_plugin_api::SNIFF_PREFIX_LEN as u64)?;
            let attempts = host.snapshot().table.explain_file(&prefix);
            (
                path.display().to_string(),
                attempts,
                "the first active plugin, in priority order (ties by name), whose sniff recognises the file",
            )
        }
        (None, None) => bail!("explain needs a FILE or --json VALUE"),
    };
    let skipped: Vec<Skipped> = attempts
        .iter()
        .filter_map(|a| match &a.answer {
            Answer::Failed(error) => Some(Skipped {
                plugin: a.plugin.clone(),
                message: format!("dispatch: {error}"),
            }),
            _ => None,
        })
        .collect();
    warn_skipped(&skipped);
    print(&explanation(&subject, &attempts, rule))
}

fn explanation(subject: &str, attempts: &[Attempt], rule: &str) -> String {
    let mut out = format!("candidates for {subject}:\n");
    if attempts.is_empty() {
        out.push_str("  (no active candidate)\n");
    }
    for (i, attempt) in attempts.iter().enumerate() {
        let _ = writeln!(
            out,
            "  {}. {} (priority {}): {}",
            i + 1,
            attempt.plugin,
            attempt.priority,
            attempt.answer
        );
    }
    match attempts.iter().find(|a| a.answer == Answer::Accepted) {
        Some(winner) => {
            let _ = writeln!(out, "winner: {} — {rule}", winner.plugin);
        }
        None => out.push_str("winner: none — no candidate accepts it\n"),
    }
    out
}

/// Bytes `put --json` reads at most (64 MiB): a larger document is refused
/// before it is parsed (SPEC §7; `put x /dev/zero --json` stops at once).
pub const JSON_INPUT_LIMIT: u64 = 64 * 1024 * 1024;

/// At most `limit` bytes of a file, or of stdin for `-`: `None` if there is
/// more. A regular file larger than `limit` is refused without reading it.
pub fn read_limited(path: &Path, limit: u64) -> Result<Option<Vec<u8>>> {
    if path != Path::new("-") {
        let meta =
            std::fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?;
        if meta.is_file() && meta.len() > limit {
            return Ok(None);
        }
    }
    let bytes = read_at_most(path, limit + 1)?;
    Ok((bytes.len() as u64 <= limit).then_some(bytes))
}

/// The first `count` bytes (or fewer) of a file, or of stdin for `-`.
pub fn read_at_most(path: &Path, count: u64) -> Result<Vec<u8>> {
    let mut bytes = Vec::new();
    if path == Path::new("-") {
        io::stdin()
            .lock()
            .take(count)
            .read_to_end(&mut bytes)
            .context("cannot read stdin")?;
        return Ok(bytes);
    }
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    if file.metadata().is_ok_and(|m| m.is_dir()) {
        bail!("cannot read {}: it is a directory", path.display());
    }
    file.take(count)
        .read_to_end(&mut bytes)
        .with_context(|| format!("cannot read {}", path.display()))?;
    Ok(bytes)
}
