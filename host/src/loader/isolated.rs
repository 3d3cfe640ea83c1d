//! [`IsolatedPlugin`]: a plugin running in its own `stowage-runner`
//! process, seen through the same [`Serializer`] trait as an in-process
//! [`super::ForeignPlugin`], so dispatch does not know the difference.
//!
//! Opening ([`open_isolated`]) runs every check `open` runs before
//! `dlopen` (location, permissions, sha256 pin, ELF, the probe read from
//! the file) and then lets the runner load the library: the host never
//! maps an isolated library's code. The declaration comes from the
//! runner's hello and is kept for the file version (the lifecycle caches
//! the plugin per file stamp).
//!
//! Containment: a call whose runner dies or passes `timeout_ms` fails as
//! an `Internal` dispatch error whose message says what happened
//! (`plugin crashed: SIGSEGV (signal 11) in ingest`, `plugin exited with
//! status 3 in ingest`, `timed out after 500 ms in ingest`); the runner is
//! restarted on the next call; [`MAX_CRASHES`] such failures within
//! [`CRASH_WINDOW`] make the plugin broken with the last message.
//!
//! Invariant: everything a runner sends is untrusted: replies are decoded
//! by `isolation::wire` (bounds-checked), shared memory is mapped only when
//! sealed, and every region is checked against what was sent.
//! Invariant: one call at a time per runner (a mutex around the call);
//! status reads the pid, restarts and broken reason without waiting for it.
//!
//! Decision: a broken isolated plugin answers `false` to `can_serialize`,
//! `can_deserialize` and `sniff` (it is out of the running, not failing
//! again), and any other entry point with its broken reason.
//! Decision: starting a runner (its hello) gets at least 10 s
//! (`HELLO_TIMEOUT_MIN_MS`) even when `timeout_ms` is shorter.
//! Decision: the hello of a restarted runner must declare exactly what the
//! first one did; a library file replaced in between is a failure until a
//! rescan loads the new version.

use std::collections::VecDeque;
use std::fs::File;
use std::io::Write;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use stowage_plugin_api::ErrorKind;

use super::foreign::SingleFile;
use super::{
    check_library_file, check_location, check_sha256, read_file, Checks, LoadError, Opened,
};
use crate::isolation::process::{describe_death, Failure, Runner, RunnerSpec};
use crate::isolation::shm::{self, Lender};
use crate::isolation::wire::{self, Entry, Payloads, Region, Reply, Request, WireError};
use crate::serializer::{
    ArtifactMeta, BlobSink, CallError, CallValue, PluginInfo, Serializer, Written,
};
use crate::value::{Buffer, Value};

/// Crashes within [`CRASH_WINDOW`] that make an isolated plugin broken.
pub const MAX_CRASHES: usize = 3;
/// The window [`MAX_CRASHES`] counts in.
pub const CRASH_WINDOW: Duration = Duration::from_secs(60);

/// How an isolated plugin runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct IsolationSettings {
    /// The `stowage-runner` executable.
    pub runner: PathBuf,
    /// Per-call deadline.
    pub timeout_ms: u64,
    /// `RLIMIT_DATA` of the runner, in MiB.
    pub max_memory_mb: Option<u64>,
}

/// A plugin in its own process.
pub(crate) struct IsolatedPlugin {
    info: PluginInfo,
    spec: RunnerSpec,
    timeout_ms: u64,
    calls: Mutex<Calls>,
    pid: AtomicU32,
    restarts: AtomicU64,
    broken: Mutex<Option<String>>,
}

/// What a call needs exclusively.
struct Calls {
    runner: Option<Runner>,
    crashes: VecDeque<Instant>,
}

/// Opens `path` in a new runner (see the module docs).
pub(crate) fn open_isolated(
    path: &Path,
    checks: &Checks<'_>,
    settings: &IsolationSettings,
) -> Result<Opened, LoadError> {
    check_location(path, checks.plugin_dir)?;
    if let Some(expected) = checks.sha256 {
        check_sha256(path, &read_file(path, None)?, expected)?;
    }
    check_library_file(path)?;
    let spec = RunnerSpec {
        exe: settings.runner.clone(),
        library: path.to_owned(),
        max_memory_mb: settings.max_memory_mb,
    };
    let (runner, hello) = start(&spec, settings.timeout_ms).map_err(|message| match message {
        Started::Spawn(message) => LoadError::RunnerStart {
            path: spec.exe.clone(),
            message,
        },
        Started::Failed(message) => LoadError::Runner { message },
    })?;
    let info = match hello {
        Reply::Hello(info) => info,
        Reply::MissingDependency(dependency) => return Ok(Opened::MissingDependency(dependency)),
        Reply::HelloFailed(message) => return Err(LoadError::Runner { message }),
        _ => {
            return Err(LoadError::Runner {
                message: "runner answered its hello with something else".to_owned(),
            })
        }
    };
    let pid = runner.pid();
    Ok(Opened::Isolated(Arc::new(IsolatedPlugin {
        info,
        spec,
        timeout_ms: settings.timeout_ms,
        calls: Mutex::new(Calls {
            runner: Some(runner),
            crashes: VecDeque::new(),
        }),
        pid: AtomicU32::new(pid),
        restarts: AtomicU64::new(0),
        broken: Mutex::new(None),
    })))
}

/// Why a runner did not start.
enum Started {
    Spawn(String),
    Failed(String),
}

/// The least time a runner gets to start and load its library, whatever
/// `timeout_ms` says: a short per-call timeout must not fail a start on a
/// loaded machine.
const HELLO_TIMEOUT_MIN_MS: u64 = 10_000;

/// Starts a runner and reads its hello.
fn start(spec: &RunnerSpec, timeout_ms: u64) -> Result<(Runner, Reply), Started> {
    let mut runner = Runner::spawn(spec).map_err(|e| Started::Spawn(e.to_string()))?;
    let hello_ms = timeout_ms.max(HELLO_TIMEOUT_MIN_MS);
    let (body, _fds) = runner
        .receive(Duration::from_millis(hello_ms))
        .map_err(|failure| Started::Failed(failure_message(failure, Entry::Init, hello_ms)))?;
    let hello = wire::decode_reply(&body).map_err(|e| {
        runner.kill();
        Started::Failed(format!("runner sent a malformed hello: {e}"))
    })?;
    Ok((runner, hello))
}

fn failure_message(failure: Failure, entry: Entry, timeout_ms: u64) -> String {
    match failure {
        Failure::Died(status) => format!("{} in {}", describe_death(status), entry.name()),
        Failure::TimedOut => format!("timed out after {timeout_ms} ms in {}", entry.name()),
        Failure::Broken(error) => format!("runner connection failed in {}: {error}", entry.name()),
    }
}

fn internal(message: impl Into<String>) -> CallError {
    CallError::new(ErrorKind::Internal, message)
}

/// A value copied into shared memory for one dispatch.
struct SharedValue {
    files: Vec<File>,
    tree: Region,
}

/// Payloads of a value being saved: lent when file-backed, else copied.
struct LendPayloads<'l> {
    lender: &'l mut Lender,
    error: Option<std::io::Error>,
}

impl LendPayloads<'_> {
    fn region(&mut self, result: std::io::Result<Region>) -> Region {
        result.unwrap_or_else(|error| {
            self.error.get_or_insert(error);
            Region {
                source: 0,
                offset: 0,
                len: 0,
            }
        })
    }
}

impl Payloads for LendPayloads<'_> {
    fn place(&mut self, bytes: &[u8]) -> Region {
        let result = self.lender.lend(bytes);
        self.region(result)
    }
    fn place_str(&mut self, text: &str) -> Region {
        let result = self.lender.copy(text.as_bytes());
        self.region(result)
    }
}

fn share_value(value: &Value) -> Result<SharedValue, CallError> {
    let io = |e: std::io::Error| internal(format!("cannot copy the value to shared memory: {e}"));
    let mut lender = Lender::new().map_err(io)?;
    let mut payloads = LendPayloads {
        lender: &mut lender,
        error: None,
    };
    let tree = wire::encode_value(value, &mut payloads).map_err(|e| match e {
        WireError::Arrow(_) => CallError::new(ErrorKind::Unsupported, e.to_string()),
        other => internal(other.to_string()),
    })?;
    if let Some(error) = payloads.error {
        return Err(io(error));
    }
    let tree = lender.copy(&tree).map_err(io)?;
    let files = lender.finish().map_err(io)?;
    Ok(SharedValue { files, tree })
}

/// Blob names with their regions, and the descriptors the regions name.
type LentBlobs = (Vec<(String, Region)>, Vec<File>);

fn lend_blobs(blobs: &[(String, Buffer)]) -> Result<LentBlobs, CallError> {
    let io = |e: std::io::Error| internal(format!("cannot lend blobs to the runner: {e}"));
    let mut lender = Lender::new().map_err(io)?;
    let regions = blobs
        .iter()
        .map(|(name, data)| Ok((name.clone(), lender.lend(data).map_err(io)?)))
        .collect::<Result<Vec<_>, CallError>>()?;
    Ok((regions, lender.finish().map_err(io)?))
}

fn lend_bytes(bytes: &[u8]) -> Result<(Region, Vec<File>), CallError> {
    let io = |e: std::io::Error| internal(format!("cannot lend input to the runner: {e}"));
    let mut lender = Lender::new().map_err(io)?;
    let region = lender.lend(bytes).map_err(io)?;
    Ok((region, lender.finish().map_err(io)?))
}

/// Maps the one arena a reply carries (untrusted).
fn reply_arena(fds: Vec<OwnedFd>) -> Result<Buffer, CallError> {
    let Some(fd) = fds.into_iter().next() else {
        return Err(internal("runner reply carried no shared memory"));
    };
    shm::map_sealed(fd).map_err(|e| internal(e.to_string()))
}

fn untrusted(error: WireError) -> CallError {
    internal(format!("runner sent malformed data: {error}"))
}

impl IsolatedPlugin {
    /// The runner's process id, if one is running.
    pub(crate) fn runner_pid(&self) -> Option<u32> {
        Some(self.pid.load(Ordering::Relaxed)).filter(|pid| *pid != 0)
    }

    /// How many times the runner was restarted after a failure.
    pub(crate) fn restarts(&self) -> u64 {
        self.restarts.load(Ordering::Relaxed)
    }

    /// The last failure's message, once the plugin is broken.
    pub(crate) fn broken(&self) -> Option<String> {
        self.broken
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// One request: the reply and its descriptors, or the failure as a
    /// dispatch error (recorded as a crash).
    fn call(&self, request: &Request, fds: &[File]) -> Result<(Reply, Vec<OwnedFd>), CallError> {
        if let Some(reason) = self.broken() {
            return Err(internal(format!("broken: {reason}")));
        }
        let entry = request.entry();
        let frame = wire::encode_request(request);
        let mut calls = self.calls.lock().unwrap_or_else(PoisonError::into_inner);
        let calls = &mut *calls;
        if calls.runner.is_none() {
            match self.restart() {
                Ok(runner) => calls.runner = Some(runner),
                Err(message) => return Err(self.crashed(calls, message)),
            }
        }
        let Some(runner) = calls.runner.as_mut() else {
            return Err(internal("runner missing"));
        };
        let timeout = Duration::from_millis(self.timeout_ms);
        let result = runner.call(&frame, &shm::borrow_all(fds), timeout);
        match result {
            Ok((body, fds)) => match wire::decode_reply(&body) {
                Ok(Reply::Error { kind, message }) => Err(CallError::new(kind, message)),
                Ok(reply) => Ok((reply, fds)),
                Err(error) => {
                    calls.runner = None;
                    let message =
                        format!("runner sent a malformed reply in {}: {error}", entry.name());
                    Err(self.crashed(calls, message))
                }
            },
            Err(failure) => {
                calls.runner = None;
                let message = failure_message(failure, entry, self.timeout_ms);
                Err(self.crashed(calls, message))
            }
        }
    }

    /// Starts a replacement runner and checks its hello.
    fn restart(&self) -> Result<Runner, String> {
        let (runner, hello) = start(&self.spec, self.timeout_ms).map_err(|s| match s {
            Started::Spawn(message) => {
                format!("cannot start {}: {message}", self.spec.exe.display())
            }
            Started::Failed(message) => message,
        })?;
        match hello {
            Reply::Hello(info) if info == self.info => {
                self.pid.store(runner.pid(), Ordering::Relaxed);
                self.restarts.fetch_add(1, Ordering::Relaxed);
                Ok(runner)
            }
            Reply::Hello(_) => Err(format!(
                "{} changed since it was loaded; rescan to load the new version",
                self.spec.library.display()
            )),
            Reply::HelloFailed(message) => Err(message),
            Reply::MissingDependency(dependency) => {
                Err(format!("missing shared library dependency {dependency}"))
            }
            _ => Err("runner answered its hello with something else".to_owned()),
        }
    }

    /// Records a failure; the third within a minute makes the plugin broken.
    fn crashed(&self, calls: &mut Calls, message: String) -> CallError {
        self.pid.store(0, Ordering::Relaxed);
        let now = Instant::now();
        calls.crashes.push_back(now);
        while calls
            .crashes
            .front()
            .is_some_and(|t| now.duration_since(*t) > CRASH_WINDOW)
        {
            calls.crashes.pop_front();
        }
        if calls.crashes.len() >= MAX_CRASHES {
            *self.broken.lock().unwrap_or_else(PoisonError::into_inner) = Some(message.clone());
            tracing::warn!(target: "stowage::lifecycle", plugin = self.info.name, reason = message, "broken after {MAX_CRASHES} crashes within a minute");
        }
        internal(message)
    }

    fn bool_call(&self, request: &Request, fds: &[File]) -> Result<bool, CallError> {
        match self.call(request, fds)? {
            (Reply::Bool(answer), _) => Ok(answer),
            _ => Err(self.unexpected(request.entry())),
        }
    }

    fn unexpected(&self, entry: Entry) -> CallError {
        let mut calls = self.calls.lock().unwrap_or_else(PoisonError::into_inner);
        calls.runner = None;
        let message = format!("runner answered {} with the wrong reply", entry.name());
        self.crashed(&mut calls, message)
    }

    /// A `Blobs` reply written into `sink`.
    fn blobs_call(
        &self,
        request: &Request,
        fds: &[File],
        sink: &mut dyn BlobSink,
    ) -> Result<Option<Written>, CallError> {
        let (written, blobs, fds) = match self.call(request, fds)? {
            (Reply::Blobs { written, blobs }, fds) => (written, blobs, fds),
            _ => return Err(self.unexpected(request.entry())),
        };
        if blobs.is_empty() {
            return Ok(written);
        }
        let arena = [reply_arena(fds)?];
        for (name, region) in &blobs {
            if region.source != 0 {
                return Err(untrusted(WireError::BadRegion {
                    source_index: region.source,
                    offset: region.offset,
                    len: region.len,
                    available: 0,
                }));
            }
            let bytes = region.resolve(&arena).map_err(untrusted)?;
            sink.begin_blob(name)
                .and_then(|()| sink.write(&bytes))
                .map_err(|message| internal(format!("sink: {message}")))?;
        }
        Ok(written)
    }
}

impl Serializer for IsolatedPlugin {
    fn info(&self) -> &PluginInfo {
        &self.info
    }

    fn can_serialize(&self, value: &CallValue<'_>) -> Result<bool, CallError> {
        if self.broken().is_some() {
            return Ok(false);
        }
        value.with_shared(share_value, |shared| {
            let shared = shared.as_ref().map_err(Clone::clone)?;
            self.bool_call(&Request::CanSerialize { value: shared.tree }, &shared.files)
        })
    }

    fn serialize(
        &self,
        value: &CallValue<'_>,
        options: &[(String, String)],
        sink: &mut dyn BlobSink,
    ) -> Result<Written, CallError> {
        value.with_shared(share_value, |shared| {
            let shared = shared.as_ref().map_err(Clone::clone)?;
            let request = Request::Serialize {
                value: shared.tree,
                options: options.to_vec(),
            };
            self.blobs_call(&request, &shared.files, sink)?
                .ok_or_else(|| self.unexpected(Entry::Serialize))
        })
    }

    fn can_deserialize(&self, meta: &ArtifactMeta) -> Result<bool, CallError> {
        if self.broken().is_some() {
            return Ok(false);
        }
        self.bool_call(&Request::CanDeserialize { meta: meta.clone() }, &[])
    }

    fn deserialize(
        &self,
        meta: &ArtifactMeta,
        blobs: &[(String, Buffer)],
    ) -> Result<Value, CallError> {
        let (regions, files) = lend_blobs(blobs)?;
        let request = Request::Deserialize {
            meta: meta.clone(),
            blobs: regions,
        };
        let (tree, fds) = match self.call(&request, &files)? {
            (Reply::Value(tree), fds) => (tree, fds),
            _ => return Err(self.unexpected(Entry::Deserialize)),
        };
        let mut sources = vec![reply_arena(fds)?];
        sources.extend(blobs.iter().map(|(_, data)| data.clone()));
        if tree.source != 0 {
            return Err(untrusted(WireError::BadRegion {
                source_index: tree.source,
                offset: tree.offset,
                len: tree.len,
                available: 0,
            }));
        }
        let tree = tree.resolve(&sources).map_err(untrusted)?;
        wire::decode_value(&tree, &sources).map_err(untrusted)
    }

    fn sniff(&self, prefix: &[u8]) -> Result<bool, CallError> {
        if self.broken().is_some() {
            return Ok(false);
        }
        let (region, files) = lend_bytes(prefix)?;
        self.bool_call(&Request::Sniff { prefix: region }, &files)
    }

    fn ingest(
        &self,
        file: &[u8],
        options: &[(String, String)],
        sink: &mut dyn BlobSink,
    ) -> Result<Written, CallError> {
        let (region, files) = lend_bytes(file)?;
        let request = Request::Ingest {
            file: region,
            options: options.to_vec(),
        };
        self.blobs_call(&request, &files, sink)?
            .ok_or_else(|| self.unexpected(Entry::Ingest))
    }

    fn export(
        &self,
        meta: &ArtifactMeta,
        blobs: &[(String, Buffer)],
        out: &mut dyn Write,
    ) -> Result<(), CallError> {
        let (regions, files) = lend_blobs(blobs)?;
        let request = Request::Export {
            meta: meta.clone(),
            blobs: regions,
        };
        let mut file = SingleFile {
            out,
            started: false,
        };
        self.blobs_call(&request, &files, &mut file).map(|_| ())
    }

    fn describe(
        &self,
        meta: &ArtifactMeta,
        blobs: &[(String, Buffer)],
    ) -> Result<Option<String>, CallError> {
        if !self.info.has_describe {
            return Ok(None);
        }
        let (regions, files) = lend_blobs(blobs)?;
        let request = Request::Describe {
            meta: meta.clone(),
            blobs: regions,
        };
        match self.call(&request, &files)? {
            (Reply::Text(text), _) => Ok(text),
            _ => Err(self.unexpected(Entry::Describe)),
        }
    }
}
