//! One `stowage-runner` child process seen from the host: starting it on a
//! socketpair, one call (frame out, frame back, within a deadline), and
//! what its death means in words.
//!
//! Invariants:
//! - the runner's end of the socketpair is the only descriptor it inherits
//!   (as descriptor 3, via `dup2` in the child; every other descriptor of
//!   the host is close-on-exec), so when the host's end closes the runner
//!   sees EOF, and when the runner dies the host sees EOF;
//! - a runner is always reaped: dropping a [`Runner`] kills it (it holds
//!   no state worth keeping) and waits for it.
//!
//! Decision: the runner's stdin, stdout and stderr are `/dev/null`: what a
//! dying plugin prints (Rust's "has overflowed its stack", glibc's abort
//! text) must not add lines to the host's one-line errors; the death itself
//! is reported from the exit status.
//! Decision: a call past its deadline kills the runner with `SIGKILL`:
//! there is no safe way to interrupt native code in the middle of a call.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::shm::{self, Received};

/// How to start a runner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RunnerSpec {
    /// The `stowage-runner` executable.
    pub exe: PathBuf,
    /// The plugin library it loads.
    pub library: PathBuf,
    /// `RLIMIT_DATA`, in MiB.
    pub max_memory_mb: Option<u64>,
}

/// The descriptor number the runner finds its socket on.
pub(crate) const RUNNER_FD: i32 = 3;

/// A running runner.
pub(crate) struct Runner {
    child: Child,
    sock: UnixStream,
}

/// How a call ended without a reply.
#[derive(Debug)]
pub(crate) enum Failure {
    /// The runner died (its status).
    Died(ExitStatus),
    /// The deadline passed; the runner was killed.
    TimedOut,
    /// The socket failed or carried garbage; the runner was killed.
    Broken(String),
}

impl Runner {
    /// Starts a runner for `spec`.
    pub(crate) fn spawn(spec: &RunnerSpec) -> io::Result<Runner> {
        let (host_end, runner_end) = UnixStream::pair()?;
        let mut command = Command::new(&spec.exe);
        command
            .arg("--library")
            .arg(&spec.library)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        command.arg("--parent").arg(std::process::id().to_string());
        if let Some(mb) = spec.max_memory_mb {
            command.arg("--max-memory-mb").arg(mb.to_string());
        }
        let fd = runner_end.as_raw_fd();
        // SAFETY: the closure runs in the forked child before exec and only
        // calls dup2, which is async-signal-safe; `fd` stays open in the
        // parent until after spawn returns.
        unsafe {
            command.pre_exec(move || {
                if libc::dup2(fd, RUNNER_FD) < 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command.spawn()?;
        drop(runner_end);
        Ok(Runner {
            child,
            sock: host_end,
        })
    }

    /// The runner's process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Receives one frame (e.g. the hello) within `timeout`.
    pub(crate) fn receive(
        &mut self,
        timeout: Duration,
    ) -> Result<(Vec<u8>, Vec<OwnedFd>), Failure> {
        let deadline = Instant::now() + timeout;
        match shm::recv(&self.sock, Some(deadline)) {
            Ok(Received::Frame(body, fds)) => Ok((body, fds)),
            Ok(Received::Closed) => Err(Failure::Died(self.reap())),
            Ok(Received::TimedOut) => {
                self.kill();
                Err(Failure::TimedOut)
            }
            Err(error) => {
                self.kill();
                Err(Failure::Broken(error.to_string()))
            }
        }
    }

    /// Sends `frame` with `fds` and waits for the reply within `timeout`.
    pub(crate) fn call(
        &mut self,
        frame: &[u8],
        fds: &[BorrowedFd<'_>],
        timeout: Duration,
    ) -> Result<(Vec<u8>, Vec<OwnedFd>), Failure> {
        if let Err(error) = shm::send(&self.sock, frame, fds) {
            // A runner that died since the last call shows as a failed send.
            if matches!(
                error.kind(),
                io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset
            ) {
                return Err(Failure::Died(self.reap()));
            }
            self.kill();
            return Err(Failure::Broken(error.to_string()));
        }
        self.receive(timeout)
    }

    /// Waits for the runner to exit (its socket closed: it is dying).
    fn reap(&mut self) -> ExitStatus {
        match self.child.wait() {
            Ok(status) => status,
            Err(_) => {
                self.kill();
                ExitStatus::from_raw(libc::SIGKILL)
            }
        }
    }

    /// Kills and reaps the runner.
    pub(crate) fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Runner {
    fn drop(&mut self) {
        let _ = self.sock.shutdown(std::net::Shutdown::Both);
        self.kill();
    }
}

/// What a runner's death says: `plugin crashed: SIGSEGV (signal 11)` or
/// `plugin exited with status 3`.
pub(crate) fn describe_death(status: ExitStatus) -> String {
    match (status.signal(), status.code()) {
        (Some(signal), _) => format!("plugin crashed: {}", signal_name(signal)),
        (None, Some(code)) => format!("plugin exited with status {code}"),
        (None, None) => "plugin exited".to_owned(),
    }
}

/// `SIGSEGV (signal 11)`, or `signal N` for an unnamed one.
pub(crate) fn signal_name(signal: i32) -> String {
    let name = match signal {
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGILL => "SIGILL",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGTERM => "SIGTERM",
        libc::SIGTRAP => "SIGTRAP",
        libc::SIGSYS => "SIGSYS",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGXCPU => "SIGXCPU",
        _ => return format!("signal {signal}"),
    };
    format!("{name} (signal {signal})")
}

/// The runner executable: `configured`, else `stowage-runner` beside the
/// running executable, else beside its parent directory (a test binary in
/// `target/debug/deps/`).
pub(crate) fn runner_exe(configured: Option<&Path>) -> PathBuf {
    if let Some(path) = configured {
        return path.to_owned();
    }
    let name = format!("stowage-runner{}", std::env::consts::EXE_SUFFIX);
    let exe = std::env::current_exe().ok();
    let dir = exe.as_deref().and_then(Path::parent);
    if let Some(dir) = dir {
        let beside = dir.join(&name);
        if beside.exists() {
            return beside;
        }
        if let Some(up) = dir.parent() {
            let above = up.join(&name);
            if above.exists() {
                return above;
            }
        }
        return beside;
    }
    PathBuf::from(name)
}

/// Whether descriptor `fd` is an open socket.
pub(crate) fn is_socket(fd: i32) -> bool {
    // SAFETY: an all-zero `stat` is a valid buffer for fstat to fill.
    let mut stat: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstat writes into `stat`, which lives for the call.
    let ok = unsafe { libc::fstat(fd, &mut stat) } == 0;
    ok && stat.st_mode & libc::S_IFMT == libc::S_IFSOCK
}

/// Runner side: ask for `SIGKILL` when the parent goes away, and exit now
/// if it already has.
pub(crate) fn die_with_parent(parent: Option<u32>) {
    // SAFETY: prctl with integer arguments; getppid has no preconditions.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
        if parent.is_some_and(|p| i64::from(libc::getppid()) != i64::from(p)) {
            libc::_exit(0);
        }
    }
}

/// Runner side: caps the data segment (`RLIMIT_DATA`) at `mb` MiB.
pub(crate) fn limit_data(mb: u64) -> io::Result<()> {
    let bytes = mb.saturating_mul(1 << 20);
    let limit = libc::rlimit {
        rlim_cur: bytes,
        rlim_max: bytes,
    };
    // SAFETY: setrlimit reads `limit`, which lives for the call.
    if unsafe { libc::setrlimit(libc::RLIMIT_DATA, &limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Runner side: exits the process at once, from any thread, without
/// running destructors or `atexit` handlers (a plugin may be mid-call).
pub(crate) fn exit_now(code: i32) -> ! {
    // SAFETY: _exit has no preconditions and does not return.
    unsafe { libc::_exit(code) }
}
