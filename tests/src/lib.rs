//! The shared harness of stowage's integration tests.
//!
//! - [`artifacts`] builds the `stowage` binary and every fixture plugin once
//!   per test process (`cargo build … --message-format=json`) and reads the
//!   artifact paths back: `cargo test --workspace` does not build cdylibs
//!   for another package, and `CARGO_BIN_EXE_stowage` does not exist here.
//! - [`TestDir`] is a fresh directory per test with `plugin-libs/`, `store/`
//!   and a `plugins.toml` writer; plugins are installed the way users should
//!   install them (temp file, then rename).
//! - [`StowageCmd`] runs the binary with a scrubbed environment.
//! - [`wait_until`] polls with a deadline instead of sleeping.
//! - [`mod@bench`] holds what the benchmarks in `tests/benches/` share.

pub mod bench;
/// A real S3 server (`s3s-fs`) for the S3 store's tests; the same file the
/// host's unit tests use.
#[path = "../../host/src/store/object/testserver.rs"]
pub mod s3server;

use std::collections::HashMap;
use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use stowage::{Host, HostOptions, PluginStatus, State};

/// Paths of the built binary and libraries.
pub struct Artifacts {
    /// The `stowage` executable.
    pub stowage: PathBuf,
    libs: HashMap<String, PathBuf>,
    out_dirs: HashMap<String, PathBuf>,
    /// The target directory everything was built into.
    pub target_dir: PathBuf,
}

impl Artifacts {
    /// The cdylib built from crate `name` (`fixture-echo`, `legacy`, …).
    pub fn lib(&self, name: &str) -> &Path {
        let key = name.replace('-', "_");
        match self.libs.get(&key) {
            Some(path) => path,
            None => panic!("no library {name} was built; have: {:?}", self.libs.keys()),
        }
    }

    /// The build-script output directory of package `name`.
    pub fn out_dir(&self, name: &str) -> &Path {
        match self.out_dirs.get(name) {
            Some(path) => path,
            None => panic!("package {name} has no build-script output"),
        }
    }
}

/// Packages of this workspace the tests load or run.
const PACKAGES: &[&str] = &[
    "stowage",
    "stowage-tensor",
    "stowage-arrow",
    "stowage-class-source",
    "fixture-echo",
    "fixture-rival",
    "fixture-panicky",
    "fixture-init-panic",
    "fixture-no-symbol",
    "fixture-iface-major-2",
    "fixture-iface-minor-newer",
    "fixture-cycle-a",
    "fixture-cycle-b",
    "fixture-needs-echo",
    "fixture-needs-init-panic",
    "fixture-fake-msgpack",
    "fixture-decliner",
    "fixture-needs-native",
    "fixture-bad-blob-names",
    "fixture-crashy",
];

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_owned()
}

/// Where the harness builds: a directory of its own inside the workspace's
/// target dir.
///
/// Decision: not the workspace's target dir itself. A `cdylib` + `rlib`
/// crate's files carry no hash in their names, and `cargo test --workspace`
/// resolves features with every member's dev-dependencies (e.g. `bitflags`
/// gains `std`), so its build of a plugin differs from this `cargo build` of
/// it; sharing one directory, the second build overwrote the first's
/// `libstowage_arrow.rlib` and the plugin crates' doctests, which run last,
/// linked a mismatched `stowage_plugin_api`.
fn target_dir() -> PathBuf {
    let workspace_target = match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => workspace_root().join("target"),
    };
    workspace_target.join("harness")
}

/// Builds everything once per process and returns the paths.
pub fn artifacts() -> &'static Artifacts {
    static ARTIFACTS: OnceLock<Artifacts> = OnceLock::new();
    ARTIFACTS.get_or_init(|| {
        let target_dir = target_dir();
        let mut libs = HashMap::new();
        let mut executables = HashMap::new();
        let mut out_dirs = HashMap::new();
        let mut main = cargo_build(&target_dir);
        main.arg("--manifest-path")
            .arg(workspace_root().join("Cargo.toml"));
        for package in PACKAGES {
            main.args(["-p", package]);
        }
        collect(main, &mut libs, &mut executables, &mut out_dirs);
        let mut legacy = cargo_build(&target_dir);
        legacy
            .arg("--manifest-path")
            .arg(workspace_root().join("tests/fixtures/api-1.0/Cargo.toml"))
            .args(["-p", "legacy"]);
        collect(legacy, &mut libs, &mut executables, &mut out_dirs);
        let stowage = executables
            .remove("stowage")
            .expect("cargo reported the stowage executable");
        Artifacts {
            stowage,
            libs,
            out_dirs,
            target_dir,
        }
    })
}

fn cargo_build(target_dir: &Path) -> Command {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command.args(["build", "--message-format=json-render-diagnostics"]);
    // Cargo gives a running test or bench its own package's variables; a
    // build script that reruns when one of them changes (ring's does, for
    // CARGO_MANIFEST_DIR, CARGO_PKG_NAME, …) would otherwise be rebuilt,
    // with everything above it, whenever another binary starts the harness.
    for (key, _) in std::env::vars_os() {
        let key_text = key.to_string_lossy();
        if key_text.starts_with("CARGO_PKG_")
            || key_text.starts_with("CARGO_BIN_")
            || matches!(
                &*key_text,
                "CARGO_MANIFEST_DIR"
                    | "CARGO_MANIFEST_PATH"
                    | "CARGO_MANIFEST_LINKS"
                    | "CARGO_CRATE_NAME"
                    | "CARGO_PRIMARY_PACKAGE"
                    | "CARGO_TARGET_TMPDIR"
                    | "OUT_DIR"
            )
        {
            command.env_remove(&key);
        }
    }
    // Benchmarks (built without debug assertions) load release plugins.
    if !cfg!(debug_assertions) {
        command.arg("--release");
    }
    command
        .arg("--target-dir")
        .arg(target_dir)
        .stderr(Stdio::inherit());
    command
}

fn collect(
    mut command: Command,
    libs: &mut HashMap<String, PathBuf>,
    executables: &mut HashMap<String, PathBuf>,
    out_dirs: &mut HashMap<String, PathBuf>,
) {
    let output = command.output().expect("cargo runs");
    assert!(
        output.status.success(),
        "building test artifacts failed: {command:?}"
    );
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let Ok(message) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if message["reason"] == "build-script-executed" {
            // "path+file:///…/needs-native#fixture-needs-native@1.2.0"
            let id = message["package_id"].as_str().unwrap_or_default();
            let name = id.rsplit('#').next().unwrap_or(id);
            let name = name.split('@').next().unwrap_or(name);
            if let Some(dir) = message["out_dir"].as_str() {
                out_dirs.insert(name.to_owned(), PathBuf::from(dir));
            }
            continue;
        }
        if message["reason"] != "compiler-artifact" {
            continue;
        }
        let name = message["target"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        if let Some(executable) = message["executable"].as_str() {
            executables.insert(name.clone(), PathBuf::from(executable));
        }
        let kinds = message["target"]["kind"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if kinds.iter().any(|k| k == "cdylib") {
            let files = message["filenames"].as_array().cloned().unwrap_or_default();
            let suffix = std::env::consts::DLL_SUFFIX;
            if let Some(lib) = files
                .iter()
                .filter_map(|f| f.as_str())
                .find(|f| f.ends_with(suffix))
            {
                libs.insert(name, PathBuf::from(lib));
            }
        }
    }
}

/// The Python interpreter of the interop tests: `.venv/bin/python` at the
/// workspace root, created from `tests/requirements.txt` on first use.
/// Panics (failing the test) if it cannot be made: interop tests never skip.
pub fn python() -> &'static Path {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON.get_or_init(|| {
        let root = workspace_root();
        let venv = root.join(".venv");
        let python = venv.join("bin").join("python");
        let marker = venv.join(".stowage-requirements");
        let requirements = fs::read_to_string(root.join("tests/requirements.txt"))
            .expect("tests/requirements.txt is readable");
        if fs::read_to_string(&marker).ok().as_deref() == Some(requirements.as_str())
            && python.exists()
        {
            return python;
        }
        let run = |command: &mut Command| {
            let status = command
                .status()
                .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
            assert!(
                status.success(),
                "interop tests need a Python venv; {command:?} failed"
            );
        };
        if !python.exists() {
            run(Command::new("python3").args(["-m", "venv"]).arg(&venv));
        }
        run(Command::new(&python)
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "-r",
            ])
            .arg(root.join("tests/requirements.txt")));
        fs::write(&marker, requirements).expect("write the venv marker");
        python
    })
}

/// The `stowage` Python package (python/), built in debug by maturin
/// through its own PEP 517 backend and installed into the interop venv once
/// per process, with the harness's plugin builds as its bundled plugins.
/// Returns the venv's Python. Panics (failing the test) if it cannot build.
///
/// Decision: cargo runs in the harness's target dir (the test process
/// holds the workspace's), so the host crate and its dependencies are
/// shared with [`artifacts`]' build.
pub fn python_package() -> &'static Path {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    let python = python();
    INSTALLED.get_or_init(|| {
        let plugins = artifacts()
            .lib("stowage-tensor")
            .parent()
            .expect("a library has a directory")
            .to_owned();
        let bin = python.parent().expect("the venv has a bin/");
        let path = std::env::join_paths(std::iter::once(bin.to_owned()).chain(
            std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()),
        ))
        .expect("PATH joins");
        let output = Command::new(python)
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "--no-build-isolation",
                "--no-deps",
                "--force-reinstall",
            ])
            .arg(workspace_root().join("python"))
            .env("PATH", path)
            .env("STOWAGE_BUNDLED_PLUGINS", &plugins)
            .env("MATURIN_PEP517_ARGS", "--profile=dev")
            .env("CARGO_TARGET_DIR", target_dir())
            .output()
            .expect("pip runs");
        assert!(
            output.status.success(),
            "pip install ./python failed:\n{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    });
    python
}

/// Runs `script` with the interop Python, `args` as `sys.argv[1:]`; returns
/// stdout, panicking with stderr if it fails.
#[track_caller]
pub fn run_python(script: &str, args: &[&Path]) -> String {
    let output = Command::new(python())
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .expect("python runs");
    assert!(
        output.status.success(),
        "python failed:\n{}\n--- script\n{script}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// File name of a plugin library with stem `stem` on this platform.
pub fn lib_file(stem: &str) -> String {
    format!(
        "{}{stem}{}",
        std::env::consts::DLL_PREFIX,
        std::env::consts::DLL_SUFFIX
    )
}

/// A fresh directory for one test.
pub struct TestDir {
    /// Its root.
    pub root: PathBuf,
}

impl TestDir {
    /// A new empty directory with `plugin-libs/` and `store/` and a minimal
    /// `plugins.toml`.
    pub fn new(name: &str) -> TestDir {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let root = target_dir()
            .join("test-dirs")
            .join(format!("{name}-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        fs::create_dir_all(root.join("plugin-libs")).expect("create test dir");
        fs::create_dir_all(root.join("store")).expect("create test dir");
        let dir = TestDir { root };
        dir.write_config("");
        dir
    }

    /// The plugin directory.
    pub fn plugin_dir(&self) -> PathBuf {
        self.root.join("plugin-libs")
    }

    /// The config file.
    pub fn config_path(&self) -> PathBuf {
        self.root.join("plugins.toml")
    }

    /// Writes `plugins.toml`: the `[host]` table, then `rest`.
    ///
    /// With `STOWAGE_TEST_ISOLATION=process` every plugin runs isolated
    /// (`[host] isolation`, the harness's runner): the plugins' suites
    /// run this way to prove they pass isolated (SPEC §14).
    pub fn write_config(&self, rest: &str) {
        let isolation = match std::env::var("STOWAGE_TEST_ISOLATION").as_deref() {
            Ok("process") => format!(
                "isolation = \"process\"\nrunner = {:?}\n",
                artifacts()
                    .stowage
                    .with_file_name("stowage-runner")
                    .display()
                    .to_string()
            ),
            _ => String::new(),
        };
        let text = format!(
            "[host]\ndir = \"plugin-libs\"\n{isolation}\n[store]\ndir = \"store\"\n\n{rest}"
        );
        fs::write(self.config_path(), text).expect("write plugins.toml");
    }

    /// Installs the library built from crate `name` as `lib{stem}.so`: copied
    /// to a temp name in the directory, then renamed into place.
    pub fn install(&self, name: &str, stem: &str) -> PathBuf {
        let source = artifacts().lib(name);
        let target = self.plugin_dir().join(lib_file(stem));
        let temp = self.plugin_dir().join(format!(".{stem}.tmp"));
        fs::copy(source, &temp).expect("copy plugin");
        fs::rename(&temp, &target).expect("rename plugin into place");
        target
    }

    /// Opens a host on this directory's config.
    pub fn host(&self) -> Host {
        match Host::open(HostOptions::with_config(self.config_path())) {
            Ok(host) => host,
            Err(error) => panic!("host failed to open: {error}"),
        }
    }
}

impl Drop for TestDir {
    /// Removes the directory (tests make large files); set
    /// `STOWAGE_KEEP_TEST_DIRS=1` to keep them for a post-mortem.
    fn drop(&mut self) {
        if std::env::var_os("STOWAGE_KEEP_TEST_DIRS").is_none() {
            let _ = fs::remove_dir_all(&self.root);
        }
    }
}

/// The status row of `name`.
#[track_caller]
pub fn status_of(host: &Host, name: &str) -> PluginStatus {
    let statuses = host.snapshot().statuses();
    match statuses.iter().find(|s| s.name == name) {
        Some(status) => status.clone(),
        None => panic!(
            "no serializer {name}; have: {:?}",
            statuses.iter().map(|s| &s.name).collect::<Vec<_>>()
        ),
    }
}

/// Asserts `name`'s state and its one-line reason (`last_error` for broken
/// plugins, `awaiting` for pending ones, nothing otherwise).
#[track_caller]
pub fn assert_state(host: &Host, name: &str, state: State, reason: Option<&str>) {
    let status = status_of(host, name);
    let actual_reason = match state {
        State::Pending => status.awaiting.as_deref(),
        _ => status.last_error.as_deref(),
    };
    assert_eq!(
        (status.state, actual_reason),
        (state, reason),
        "state of {name} (full status: {status:?})"
    );
}

/// Polls `probe` until it returns `Some` or `deadline` passes.
pub fn wait_until<T>(deadline: Duration, mut probe: impl FnMut() -> Option<T>) -> Option<T> {
    let end = Instant::now() + deadline;
    loop {
        if let Some(found) = probe() {
            return Some(found);
        }
        if Instant::now() > end {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The `stowage` binary in a test directory, with a scrubbed environment.
pub struct StowageCmd {
    command: Command,
}

impl StowageCmd {
    /// `stowage ARGS…` run in `dir`.
    pub fn new(dir: &TestDir, args: &[&str]) -> StowageCmd {
        let mut command = Command::new(&artifacts().stowage);
        command
            .current_dir(&dir.root)
            .args(args)
            .stdin(Stdio::null());
        for (key, _) in std::env::vars_os() {
            let key_text = key.to_string_lossy();
            if key_text.starts_with("STOWAGE_")
                || key_text == "RUST_LOG"
                || key_text == "RUST_BACKTRACE"
            {
                command.env_remove(&key);
            }
        }
        StowageCmd { command }
    }

    /// Sets an environment variable.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.command.env(key, value);
        self
    }

    /// Runs it.
    pub fn output(mut self) -> Output {
        self.command.output().expect("stowage runs")
    }

    /// Runs it, asserts exit 0, returns stdout.
    #[track_caller]
    pub fn ok(self) -> String {
        let output = self.output();
        assert!(
            output.status.success(),
            "stowage failed ({:?})\n--- stderr\n{}\n--- stdout\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr),
            String::from_utf8_lossy(&output.stdout)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Runs it, asserts exit `code` and that stderr is exactly one line equal
    /// to `message`; returns stderr.
    #[track_caller]
    pub fn fails(self, code: i32, message: &str) -> String {
        let output = self.output();
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        assert_eq!(
            output.status.code(),
            Some(code),
            "exit status; stderr:\n{stderr}"
        );
        assert_eq!(stderr.trim_end(), message, "stderr");
        stderr
    }
}

/// Appends one index-log frame holding `payload` to `store_dir/index.log`,
/// framed and checksummed the way the store writes it (`SLG1`, length as
/// u32 LE, the first 8 bytes of blake3(payload), payload, `\n`): a
/// hand-edited record, for tests of untrusted records.
pub fn append_log_frame(store_dir: &Path, payload: &serde_json::Value) {
    let payload = serde_json::to_vec(payload).expect("serialize payload");
    let len = u32::try_from(payload.len()).expect("small payload");
    let mut frame = b"SLG1".to_vec();
    frame.extend_from_slice(&len.to_le_bytes());
    frame.extend_from_slice(&blake3::hash(&payload).as_bytes()[..8]);
    frame.extend_from_slice(&payload);
    frame.push(b'\n');
    let mut log = fs::OpenOptions::new()
        .append(true)
        .open(store_dir.join("index.log"))
        .expect("open index.log");
    std::io::Write::write_all(&mut log, &frame).expect("append frame");
}

/// Every record put by the frames of `store_dir/index.log`, in log order
/// (the log form, with pack locations), for building hand-edited records.
/// Reads JSON frames (`SLG1`) and the binary frames of store format 2
/// (`SLG2`: items `kind u8 | name_len u32 | body_len u32 | name | body`,
/// a PUT body being `nlocs u16 | nlocs × 57 bytes | JSON`).
pub fn log_records(store_dir: &Path) -> Vec<serde_json::Value> {
    let log = fs::read(store_dir.join("index.log")).expect("read index.log");
    let u32_at = |b: &[u8], at: usize| {
        u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes")) as usize
    };
    let mut records = Vec::new();
    let mut rest = log.as_slice();
    while rest.len() >= 16 {
        let len = u32_at(rest, 4);
        let payload = &rest[16..16 + len];
        if &rest[..4] == b"SLG2" {
            let mut items = payload;
            while !items.is_empty() {
                let (name_len, body_len) = (u32_at(items, 1), u32_at(items, 5));
                let body = &items[9 + name_len..9 + name_len + body_len];
                if items[0] == 1 {
                    let locs = u16::from_le_bytes([body[0], body[1]]) as usize;
                    records
                        .push(serde_json::from_slice(&body[2 + locs * 57..]).expect("record JSON"));
                }
                items = &items[9 + name_len + body_len..];
            }
        } else {
            let payload: serde_json::Value =
                serde_json::from_slice(payload).expect("frame payload is JSON");
            if let Some(put) = payload["put"].as_array() {
                records.extend(put.iter().cloned());
            }
        }
        rest = &rest[16 + len + 1..];
    }
    records
}

/// `stowage watch` running in a test directory (clean environment, no
/// `LD_LIBRARY_PATH`), read line by line. Killed on drop.
pub struct WatchProcess {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl WatchProcess {
    /// Starts `stowage watch --interval-ms 50` in `dir`.
    pub fn start(dir: &TestDir) -> WatchProcess {
        let mut child = Command::new(&artifacts().stowage)
            .args(["watch", "--interval-ms", "50"])
            .current_dir(&dir.root)
            .env_remove("STOWAGE_PLUGINS")
            .env_remove("STOWAGE_CONFIG")
            .env_remove("LD_LIBRARY_PATH")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn stowage watch");
        let stdout = child.stdout.take().expect("piped stdout");
        let (sender, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        WatchProcess { child, lines }
    }

    /// Waits up to 30 s for a line starting with `wanted`.
    #[track_caller]
    pub fn expect_line(&mut self, wanted: &str) {
        let mut seen = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(line) if line.starts_with(wanted) => return,
                Ok(line) => seen.push(line),
                Err(_) => break,
            }
        }
        panic!("no line starting {wanted:?} within 30 s; saw {seen:?}");
    }
}

impl Drop for WatchProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Field `key` of `/proc/self/status` (`VmRSS`, `VmHWM`, given there in kB),
/// in bytes.
///
/// # Panics
///
/// If the file or the field is missing (the tests run on Linux).
pub fn proc_status_bytes(key: &str) -> u64 {
    let status = fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    let kib = status
        .lines()
        .find_map(|line| line.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|rest| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
        });
    match kib {
        Some(kib) => kib * 1024,
        None => panic!("{key} in /proc/self/status"),
    }
}

/// This process's file-backed memory mappings, from `/proc/self/maps`: each
/// address range with the path of the file mapped there.
///
/// # Panics
///
/// If `/proc/self/maps` cannot be read (the tests run on Linux).
pub fn file_mappings() -> Vec<(std::ops::Range<usize>, PathBuf)> {
    let maps = fs::read_to_string("/proc/self/maps").expect("read /proc/self/maps");
    maps.lines()
        .filter_map(|line| {
            // `start-end perms offset dev inode      path`
            let mut fields = line.splitn(6, ' ');
            let (start, end) = fields.next()?.split_once('-')?;
            let path = fields.nth(4)?.trim_start();
            if !path.starts_with('/') {
                return None;
            }
            let start = usize::from_str_radix(start, 16).ok()?;
            let end = usize::from_str_radix(end, 16).ok()?;
            Some((start..end, PathBuf::from(path)))
        })
        .collect()
}
