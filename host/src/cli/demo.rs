//! `stowage demo`: a guided run through what the host does, in a fresh
//! directory, with real plugin libraries built next to the binary.
//!
//! Steps: discovery (a configured plugin pending on its file, a drop-in
//! library, a broken one with its reason, one pending on a requirement),
//! drop-in by rename and rescan, priority dispatch and its tie-break, the
//! toggles (config edit and `STOWAGE_PLUGINS`), and round trips.
//!
//! Decision: the demo refuses to reuse a directory it did not create (it
//! looks for its marker file) so it never deletes a user's files.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use stowage::config::set_enabled;
use stowage::lifecycle::library_file_name;
use stowage::{Buffer, ClassSource, Host, HostOptions, Tensor, Value};

use super::{print, status_table};

const MARKER: &str = ".stowage-demo";

/// A three-row table written by pyarrow (`pa.ipc.new_file`), for the arrow
/// plugin's part of the demo.
const DEMO_TABLE: &[u8] = include_bytes!("demo-table.arrow");

struct Demo {
    dir: PathBuf,
    libs: PathBuf,
}

impl Demo {
    fn plugin_dir(&self) -> PathBuf {
        self.dir.join("plugin-libs")
    }
    fn config(&self) -> PathBuf {
        self.dir.join("plugins.toml")
    }
    /// Installs a built library the safe way: temp file, then rename.
    fn install(&self, built: &str, stem: &str) -> Result<()> {
        let source = self.libs.join(library_file_name(built));
        let target = self.plugin_dir().join(library_file_name(stem));
        let temp = self.plugin_dir().join(format!(".{stem}.tmp"));
        fs::copy(&source, &temp).with_context(|| {
            format!(
                "cannot copy {} (build the workspace first: cargo build --workspace)",
                source.display()
            )
        })?;
        fs::rename(&temp, &target)
            .with_context(|| format!("cannot install {}", target.display()))?;
        print(&format!(
            "  installed {} (copied to a temp name, renamed into place)\n",
            target.display()
        ))
    }
    fn host(&self, toggles: Option<&str>) -> Result<Host> {
        let mut options = HostOptions::with_config(self.config());
        options.toggles = toggles.map(str::to_owned);
        Ok(Host::open(options)?)
    }
}

fn step(title: &str) -> Result<()> {
    print(&format!("\n== {title}\n"))
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("  {l}\n")).collect()
}

fn store(host: &Host, value: &Value, label: &str) -> Result<()> {
    match host.serialize_to_memory(value, &[]) {
        Ok(serialized) => {
            super::warn_skipped(&serialized.skipped);
            print(&format!("  {label} -> {}\n", serialized.plugin))
        }
        Err(error) => print(&format!("  {label} -> refused: {error}\n")),
    }
}

/// Saves `value` as `name` in the demo's store, loads it back (re-hashed)
/// and checks it is equal.
fn round_trip(host: &Host, name: &str, value: &Value) -> Result<()> {
    let saved = host.save(name, value, &[])?;
    let loaded = host.load(name)?;
    let record = &saved.record;
    let verdict = if loaded.value == *value {
        "equal"
    } else {
        "DIFFERENT"
    };
    print(&format!(
        "  {name}: {:?} -> {} {} ({} v{}, {} blob(s), blake3 {}…) -> {verdict}\n",
        value,
        record.meta.serializer,
        record.meta.serializer_version,
        record.meta.encoding,
        record.meta.encoding_version,
        record.blobs.len(),
        record.blobs.first().map_or("", |b| &b.digest[..12]),
    ))?;
    if loaded.value != *value {
        bail!(
            "round trip of {name} through {} changed the value",
            record.meta.serializer
        );
    }
    Ok(())
}

/// Runs the demo in `dir` with libraries from `libs`.
pub fn run(libs: Option<PathBuf>, dir: &Path) -> Result<()> {
    let libs = match libs {
        Some(libs) => libs,
        None => std::env::current_exe()
            .context("cannot locate the stowage binary")?
            .parent()
            .map(Path::to_owned)
            .context("the stowage binary has no parent directory")?,
    };
    if dir.exists() {
        if !dir.join(MARKER).exists() {
            bail!(
                "{} exists and was not made by stowage demo; pick another --dir",
                dir.display()
            );
        }
        fs::remove_dir_all(dir).with_context(|| format!("cannot clear {}", dir.display()))?;
    }
    let demo = Demo {
        dir: dir.to_owned(),
        libs,
    };
    fs::create_dir_all(demo.plugin_dir())
        .with_context(|| format!("cannot create {}", dir.display()))?;
    fs::write(dir.join(MARKER), "").context("cannot write the demo marker")?;
    fs::write(
        demo.config(),
        "# stowage demo configuration\n[host]\ndir = \"plugin-libs\"   # the drop-in directory\n\n\
         [store]\ndir = \"store\"\n\n\
         # Configured, but its library is not installed yet: pending.\n[plugins.echo]\nenabled = true\n",
    )
    .context("cannot write plugins.toml")?;

    step("1. discovery: the config names `echo`; the directory holds three libraries")?;
    demo.install("fixture_rival", "stowage_rival")?;
    demo.install("fixture_init_panic", "stowage_init_panic")?;
    demo.install("fixture_needs_echo", "stowage_needs_echo")?;
    let host = demo.host(None)?;
    print(&indent(&status_table(&host)))?;

    step("2. drop-in: install echo by rename, then rescan (no restart)")?;
    demo.install("fixture_echo", "stowage_echo")?;
    host.rescan()?;
    print(&indent(&status_table(&host)))?;

    step("3. priority dispatch: echo and rival both have priority 50; ties go by name")?;
    store(&host, &Value::String("hello".into()), "string \"hello\"")?;
    store(
        &host,
        &Value::Float(2.5),
        "float 2.5 (no plugin claims floats)",
    )?;
    print("  setting [plugins.rival] priority = 10 ...\n")?;
    let config = fs::read_to_string(demo.config()).context("cannot read plugins.toml")?;
    fs::write(
        demo.config(),
        format!("{config}\n[plugins.rival]\npriority = 10\n"),
    )
    .context("cannot write plugins.toml")?;
    host.rescan()?;
    store(&host, &Value::String("hello".into()), "string \"hello\"")?;

    step("4. toggles: `stowage disable rival` edits plugins.toml in place")?;
    set_enabled(&demo.config(), "rival", false)?;
    host.rescan()?;
    store(&host, &Value::String("hello".into()), "string \"hello\"")?;
    print("  and STOWAGE_PLUGINS=\"-echo\" for one process:\n")?;
    let toggled = demo.host(Some("-echo"))?;
    print(&indent(&status_table(&toggled)))?;

    step("5. round trips through the store (content-addressed, verified on load)")?;
    round_trip(&host, "greeting", &Value::String("hello".into()))?;
    round_trip(&host, "answer", &Value::Int(42))?;
    round_trip(
        &host,
        "metrics",
        &Value::Map(vec![
            ("ratio".into(), Value::Float(2.5)),
            ("ok".into(), Value::Bool(true)),
        ]),
    )?;
    print(&format!(
        "  the store at {} holds {} artifacts; try: stowage --config {} ls\n",
        demo.dir.join("store").display(),
        host.store()?.list().len(),
        demo.config().display()
    ))?;
    step("6. the real plugins: tensor (safetensors), arrow (Arrow IPC), class-source")?;
    demo.install("stowage_tensor", "stowage_tensor")?;
    demo.install("stowage_arrow", "stowage_arrow")?;
    demo.install("stowage_class_source", "stowage_class_source")?;
    host.rescan()?;
    print(&indent(&status_table(&host)))?;
    let weights: Vec<u8> = [1.0f32, -2.0, 0.5, 4.0]
        .iter()
        .flat_map(|x| x.to_le_bytes())
        .collect();
    round_trip(
        &host,
        "weights",
        &Value::Tensor(Tensor {
            dtype: "F32".into(),
            shape: vec![2, 2],
            data: Buffer::from_vec(weights),
        }),
    )?;
    round_trip(
        &host,
        "model-class",
        &Value::ClassSource(ClassSource {
            qualname: "Model".into(),
            module: Some("__main__".into()),
            source: "@dataclass\nclass Model:\n    scale: float = 2.0\n\n    def forward(self, x):\n        return x * self.scale\n".into(),
        }),
    )?;
    let put = host.put_file("table", DEMO_TABLE, None, &[], "demo-table.arrow")?;
    let loaded = host.load("table")?;
    let Value::Arrow(table) = &loaded.value else {
        bail!(
            "the arrow plugin loaded table as a {} value",
            loaded.value.kind()
        );
    };
    print(&format!(
        "  table: a pyarrow-written IPC file -> {} {}; loaded through the C Data Interface: {} rows in {} batch(es)\n",
        put.record.meta.serializer,
        put.record.meta.serializer_version,
        table.num_rows(),
        table.batches().len()
    ))?;
    let copy = host.save("table-copy", &loaded.value, &[])?;
    print(&format!(
        "  saved again as table-copy by {}; `stowage show table`:\n",
        copy.record.meta.serializer
    ))?;
    print(&indent(&host.describe_artifact("table")?.0))?;
    print(&format!(
        "\ndemo finished; its files are in {}\n",
        dir.display()
    ))
}
