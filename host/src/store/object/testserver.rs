//! A real S3 server for tests: `s3s-fs` on 127.0.0.1 with a free port and
//! a scratch data directory. Shared word for word by the host's unit tests
//! and the integration harness (`tests/src/lib.rs` includes this file), so
//! it uses only `std`.
//!
//! Invariants: the binary lives in `<tools>/bin/s3s-fs` (`<tools>` is
//! `$STOWAGE_TOOLS_DIR`, else `<target>/tools`); when it is missing it is
//! installed there once (`cargo install s3s-fs --version
//! 0.14.1 --features binary --locked`, building in `<tools>/build`),
//! under an exclusive lock on `<tools>/.install.lock`, so parallel
//! test binaries install it once; an install failure fails the test — S3
//! tests never skip. A server is stopped, and its data directory deleted,
//! when its handle is dropped or when the test process exits (a watchdog
//! shell waits for its stdin to close).
//!
//! Decision: the port is found by binding 127.0.0.1:0 and releasing it;
//! another process taking it in between makes the readiness wait fail
//! with a message naming the port.

// The unit tests and the harness each use part of this file.
#![allow(dead_code)]

use std::fs::{self, File};
use std::io::Write as _;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The s3s-fs version the tests run against.
pub const S3S_FS_VERSION: &str = "0.14.1";
/// The access key the test server accepts.
pub const ACCESS_KEY: &str = "stowage-test";
/// The secret key the test server accepts.
pub const SECRET_KEY: &str = "stowage-test-secret";
/// The bucket every test server has.
pub const BUCKET: &str = "stowage";

/// The cargo target directory this test binary was built into
/// (`<target>/debug/deps/<exe>`).
pub fn target_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.ancestors().nth(3).map(Path::to_path_buf))
        .unwrap_or_else(|| PathBuf::from("target"))
}

/// Where tools are installed: `$STOWAGE_TOOLS_DIR` (`.ci/run` points it
/// outside the clone, so it survives between runs), else `<target>/tools`.
pub fn tools_dir() -> PathBuf {
    match std::env::var_os("STOWAGE_TOOLS_DIR").filter(|d| !d.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => target_dir().join("tools"),
    }
}

/// The s3s-fs binary, installed into [`tools_dir`] if missing.
pub fn s3s_fs() -> PathBuf {
    let tools = tools_dir();
    let bin = tools.join("bin").join("s3s-fs");
    if bin.is_file() {
        return bin;
    }
    fs::create_dir_all(&tools).expect("create the tools directory");
    let lock = File::create(tools.join(".install.lock")).expect("create the install lock");
    lock.lock().expect("lock the install lock");
    if !bin.is_file() {
        let build = tools.join("build");
        let status = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
            .args(["install", "s3s-fs", "--version", S3S_FS_VERSION])
            .args(["--features", "binary", "--locked", "--root"])
            .arg(&tools)
            .env("CARGO_TARGET_DIR", &build)
            .status()
            .expect("run cargo install s3s-fs");
        assert!(
            status.success(),
            "cargo install s3s-fs {S3S_FS_VERSION} failed ({status}); the S3 tests need it"
        );
        let _ = fs::remove_dir_all(&build);
    }
    bin
}

/// A running s3s-fs; stopped on drop.
pub struct S3Server {
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    /// The port it listens on.
    pub port: u16,
    /// Its data directory (one subdirectory per bucket).
    pub root: PathBuf,
    watchdog: Option<Child>,
}

impl S3Server {
    /// Starts a server with a fresh data directory holding [`BUCKET`].
    pub fn start() -> S3Server {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let root = target_dir()
            .join("s3-test")
            .join(format!("{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        fs::create_dir_all(root.join(BUCKET)).expect("create the server's bucket");
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("find a free port");
        let mut server = S3Server {
            endpoint: format!("http://127.0.0.1:{port}"),
            port,
            root,
            watchdog: None,
        };
        server.run();
        server
    }

    /// Starts the server process on its port and data directory, and
    /// waits until it accepts connections (30 s at most).
    pub fn run(&mut self) {
        let bin = s3s_fs();
        // The watchdog: runs the server, and stops it (and removes its data
        // on a final stop) when its stdin closes or says "stop".
        let script = r#"
"$0" --host 127.0.0.1 --port "$1" --access-key "$2" --secret-key "$3" "$4" >/dev/null 2>&1 &
pid=$!
read -r what
kill -9 "$pid" 2>/dev/null
wait "$pid" 2>/dev/null
[ "$what" = pause ] || rm -rf "$4"
echo stopped
"#;
        let child = Command::new("sh")
            .arg("-c")
            .arg(script)
            .arg(&bin)
            .arg(self.port.to_string())
            .arg(ACCESS_KEY)
            .arg(SECRET_KEY)
            .arg(&self.root)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start s3s-fs");
        self.watchdog = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "s3s-fs did not listen on 127.0.0.1:{} within 30 s",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the server process but keeps its data, so [`S3Server::run`]
    /// can start it again on the same port.
    pub fn pause(&mut self) {
        self.stop("pause");
    }

    fn stop(&mut self, how: &str) {
        if let Some(mut child) = self.watchdog.take() {
            if let Some(mut stdin) = child.stdin.take() {
                let _ = writeln!(stdin, "{how}");
            }
            let _ = child.wait_with_output();
        }
    }

    /// `s3://stowage/<prefix>`.
    pub fn url(&self, prefix: &str) -> String {
        format!("s3://{BUCKET}/{prefix}")
    }

    /// The environment a `stowage` process needs to reach this server.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY.to_owned()),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY.to_owned()),
            ("AWS_ENDPOINT_URL", self.endpoint.clone()),
            ("AWS_REGION", "us-east-1".to_owned()),
        ]
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.stop("stop");
    }
}
