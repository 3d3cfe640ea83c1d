//! The `stowage` command.
//!
//! Exit codes: 0 success, 1 error (one line on stderr), 2 usage error (clap).
//! A closed stdout (`stowage status | head`) is success, not an error.
//! No input makes this binary panic; should a bug panic anyway, the hook
//! below prints one line and the process exits 1 instead of aborting with a
//! backtrace.
//!
//! `put` maps its input file and `get` maps stored blobs; a file truncated
//! by another program while it is mapped makes the kernel raise SIGBUS on
//! the first page past its new end. [`sigbus::install`] turns that into the
//! same one-line error and exit 1 (see `store/input.rs`).
//!
//! Decision: the SIGBUS handler is the only `unsafe` of the binary. It
//! cannot unwind or clean up; it writes one fixed line with write(2) and
//! calls `_exit(1)`, both async-signal-safe. Nothing half-saved is visible:
//! a save commits only after every byte was read; its temp files are left
//! for the store's stale-temp cleanup.

mod cli;

use std::io::{self, Write};
use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    sigbus::install();
    std::panic::set_hook(Box::new(|info| {
        let message = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".to_owned());
        let _ = writeln!(io::stderr(), "error: internal error: {message}");
    }));
    let args = cli::Args::parse();
    init_logging();
    match std::panic::catch_unwind(|| cli::run(args)) {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(error)) if is_broken_pipe(&error) => ExitCode::SUCCESS,
        Ok(Err(error)) => {
            let _ = writeln!(io::stderr(), "error: {}", one_line(&error));
            ExitCode::FAILURE
        }
        Err(_) => ExitCode::FAILURE,
    }
}

/// The error and its causes on one line, skipping a cause whose text the
/// line already holds (many errors quote their source in their message).
fn one_line(error: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error
        .chain()
        .filter_map(|cause| cause.downcast_ref::<io::Error>())
        .any(|e| e.kind() == io::ErrorKind::BrokenPipe)
}

fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("off"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(io::stderr)
        .try_init();
}

/// SIGBUS → one error line and exit 1 (module docs).
#[cfg(unix)]
mod sigbus {
    /// What the handler prints.
    pub const LINE: &[u8] = b"error: an input or stored file shrank while it was being read\n";

    extern "C" fn on_sigbus(_signal: libc::c_int) {
        // SAFETY: write(2) and _exit(2) are async-signal-safe; LINE is a
        // static byte string valid for its whole length. A short or failed
        // write has no remedy inside a signal handler and is ignored.
        unsafe {
            let _ = libc::write(libc::STDERR_FILENO, LINE.as_ptr().cast(), LINE.len());
            libc::_exit(1);
        }
    }

    /// Installs the handler for the rest of the process.
    pub fn install() {
        // SAFETY: a zeroed `sigaction` is a valid value of the C struct
        // (no flags, empty handler); sa_mask is then set with sigemptyset,
        // the handler is an `extern "C" fn(c_int)` (no SA_SIGINFO), and
        // both pointers passed to sigaction are valid for the call.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_sigbus as extern "C" fn(libc::c_int) as libc::sighandler_t;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(libc::SIGBUS, &action, std::ptr::null_mut());
        }
    }

    #[cfg(test)]
    mod tests {
        use std::process::Command;

        /// Set in the child run of `sigbus_prints_one_line_and_exits_1`.
        const CHILD: &str = "STOWAGE_TEST_SIGBUS_CHILD";

        #[test]
        fn sigbus_prints_one_line_and_exits_1() {
            if std::env::var_os(CHILD).is_some() {
                super::install();
                // SAFETY: raise has no memory-safety preconditions; the
                // installed handler exits the process.
                unsafe {
                    libc::raise(libc::SIGBUS);
                }
                unreachable!("the SIGBUS handler returned");
            }
            let exe = std::env::current_exe().expect("the test binary knows its path");
            let output = Command::new(exe)
                .args([
                    "--exact",
                    "sigbus::tests::sigbus_prints_one_line_and_exits_1",
                    "--test-threads=1",
                ])
                .env(CHILD, "1")
                .output()
                .expect("the test binary runs");
            assert_eq!(
                (
                    output.status.code(),
                    String::from_utf8_lossy(&output.stderr)
                ),
                (
                    Some(1),
                    "error: an input or stored file shrank while it was being read\n".into()
                )
            );
        }
    }
}

#[cfg(not(unix))]
mod sigbus {
    /// No SIGBUS outside Unix.
    pub fn install() {}
}
