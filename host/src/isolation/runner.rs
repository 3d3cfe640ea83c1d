//! The `stowage-runner` side: load one plugin library with the host's own
//! loader (every check and conversion the in-process host does), say hello
//! with its declaration, then serve one request at a time until the socket
//! closes.
//!
//! Invariants:
//! - the runner never outlives its host: the main loop exits on EOF, a
//!   watchdog thread exits the process as soon as the host's end hangs up
//!   (even while a plugin call is stuck), and `PR_SET_PDEATHSIG` is a
//!   third line (it fires when the spawning *thread* exits, so it is not
//!   relied on alone);
//! - `RLIMIT_DATA` is set before the library is opened, so the plugin's
//!   initialisers run under the cap too (`RLIMIT_AS` would count the
//!   mapped store files and memfds, which are shared mappings);
//! - plugin calls run on the main thread, whose stack guard Rust's
//!   overflow handler knows: a stack overflow aborts (`SIGABRT`).
//!
//! Decision: a zero-copy load stays zero-copy across the process boundary:
//! a deserialized payload that points into a blob the host lent is
//! returned as a range of that blob (source `1 + i`), not copied.

use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::ExitCode;

use stowage_plugin_api::ErrorKind;

use super::process::{self, RUNNER_FD};
use super::shm::{self, ArenaWriter, Received};
use super::wire::{self, Payloads, Region, Reply, Request};
use crate::loader::{self, Checks, Opened};
use crate::serializer::{BlobSink, CallError, CallValue, Serializer};
use crate::value::{Buffer, Value};

/// The runner's `main`: `stowage-runner --library PATH [--max-memory-mb N]`,
/// with its socket on descriptor 3.
pub fn main() -> ExitCode {
    let mut library = None;
    let mut max_memory_mb = None;
    let mut parent = None;
    let mut args = std::env::args_os().skip(1);
    while let Some(arg) = args.next() {
        match arg.to_str() {
            Some("--library") => library = args.next().map(PathBuf::from),
            Some("--parent") => {
                parent = args
                    .next()
                    .and_then(|v| v.to_str().and_then(|v| v.parse::<u32>().ok()))
            }
            Some("--max-memory-mb") => {
                max_memory_mb = args
                    .next()
                    .and_then(|v| v.to_str().and_then(|v| v.parse::<u64>().ok()))
            }
            _ => {
                eprintln!("stowage-runner: unexpected argument {arg:?}");
                return ExitCode::from(2);
            }
        }
    }
    let Some(library) = library else {
        eprintln!("stowage-runner: --library PATH is required (started by stowage, not by hand)");
        return ExitCode::from(2);
    };
    if !process::is_socket(RUNNER_FD) {
        eprintln!(
            "stowage-runner: no socket on descriptor {RUNNER_FD} (started by stowage, not by hand)"
        );
        return ExitCode::from(2);
    }
    // SAFETY: descriptor 3 is the socket the host passed (checked above)
    // and nothing else in this process owns it.
    let sock = unsafe { shm::inherited_socket(RUNNER_FD) };
    process::die_with_parent(parent);
    if let Some(mb) = max_memory_mb {
        if let Err(error) = process::limit_data(mb) {
            eprintln!("stowage-runner: cannot set RLIMIT_DATA: {error}");
            return ExitCode::from(2);
        }
    }
    if let Ok(watch) = sock.try_clone() {
        let spawned = std::thread::Builder::new()
            .name("hangup".into())
            .stack_size(64 * 1024)
            .spawn(move || {
                shm::wait_hangup(watch.as_fd());
                process::exit_now(0);
            });
        if spawned.is_err() {
            return ExitCode::from(2);
        }
    }
    let dir = library.parent().map(PathBuf::from).unwrap_or_default();
    let checks = Checks {
        plugin_dir: &dir,
        sha256: None,
    };
    let plugin = match loader::open(&library, &checks) {
        Ok(Opened::Plugin(plugin)) => plugin,
        Ok(Opened::MissingDependency(dependency)) => {
            let _ = send(&sock, &Reply::MissingDependency(dependency), None);
            return ExitCode::SUCCESS;
        }
        Ok(Opened::Isolated(_)) => return ExitCode::from(2),
        Err(error) => {
            let _ = send(&sock, &Reply::HelloFailed(error.to_string()), None);
            return ExitCode::SUCCESS;
        }
    };
    if send(&sock, &Reply::Hello(plugin.info().clone()), None).is_err() {
        return ExitCode::SUCCESS;
    }
    loop {
        let (body, fds) = match shm::recv(&sock, None) {
            Ok(Received::Frame(body, fds)) => (body, fds),
            Ok(Received::Closed | Received::TimedOut) => return ExitCode::SUCCESS,
            Err(_) => return ExitCode::from(1),
        };
        let (reply, arena) = match wire::decode_request(&body) {
            Ok(request) => serve(&*plugin, request, fds),
            Err(error) => (internal(format!("runner: bad request: {error}")), None),
        };
        if send(&sock, &reply, arena.as_ref()).is_err() {
            return ExitCode::SUCCESS;
        }
    }
}

fn send(sock: &UnixStream, reply: &Reply, arena: Option<&File>) -> std::io::Result<()> {
    let frame = wire::encode_reply(reply);
    let fds: Vec<_> = arena.iter().map(|f| f.as_fd()).collect();
    shm::send(sock, &frame, &fds)
}

fn internal(message: String) -> Reply {
    Reply::Error {
        kind: ErrorKind::Internal,
        message,
    }
}

fn failed(error: CallError) -> Reply {
    Reply::Error {
        kind: error.kind,
        message: error.message,
    }
}

/// Maps every descriptor of a request whole: regions name them by index.
fn map_sources(fds: Vec<OwnedFd>) -> std::io::Result<Vec<Buffer>> {
    fds.into_iter()
        .map(|fd| {
            let file = File::from(fd);
            let len = file.metadata()?.len();
            shm::map_lent(&file, 0, len)
        })
        .collect()
}

/// Blobs written into a reply arena.
struct ArenaSink {
    arena: ArenaWriter,
    blobs: Vec<(String, Region)>,
}

impl ArenaSink {
    fn new() -> std::io::Result<Self> {
        Ok(ArenaSink {
            arena: ArenaWriter::new("stowage-reply")?,
            blobs: Vec::new(),
        })
    }
}

impl BlobSink for ArenaSink {
    fn begin_blob(&mut self, name: &str) -> Result<(), String> {
        if self.blobs.iter().any(|(n, _)| n == name) {
            return Err(format!("blob {name} written twice"));
        }
        let offset = self.arena.start().map_err(|e| e.to_string())?;
        self.blobs.push((
            name.to_owned(),
            Region {
                source: 0,
                offset,
                len: 0,
            },
        ));
        Ok(())
    }
    fn write(&mut self, bytes: &[u8]) -> Result<(), String> {
        let Some((_, region)) = self.blobs.last_mut() else {
            return Err("write before begin_blob".to_owned());
        };
        self.arena.extend(bytes).map_err(|e| e.to_string())?;
        region.len += bytes.len() as u64;
        Ok(())
    }
}

/// Payloads of a deserialized value: ranges of the lent blobs where the
/// plugin pointed into them, else copied into the reply arena.
struct ReplyPayloads<'b> {
    arena: ArenaWriter,
    blobs: &'b [(String, Buffer)],
    error: Option<std::io::Error>,
}

impl ReplyPayloads<'_> {
    fn copy(&mut self, bytes: &[u8]) -> Region {
        match self.arena.append(bytes) {
            Ok(offset) => Region {
                source: 0,
                offset,
                len: bytes.len() as u64,
            },
            Err(error) => {
                self.error.get_or_insert(error);
                Region {
                    source: 0,
                    offset: 0,
                    len: 0,
                }
            }
        }
    }
}

impl Payloads for ReplyPayloads<'_> {
    fn place(&mut self, bytes: &[u8]) -> Region {
        let start = bytes.as_ptr() as usize;
        let end = start + bytes.len();
        for (i, (_, blob)) in self.blobs.iter().enumerate() {
            let base = blob.as_ptr() as usize;
            if !bytes.is_empty() && base <= start && end <= base + blob.len() {
                return Region {
                    source: 1 + i as u32,
                    offset: (start - base) as u64,
                    len: bytes.len() as u64,
                };
            }
        }
        self.copy(bytes)
    }
    fn place_str(&mut self, text: &str) -> Region {
        self.copy(text.as_bytes())
    }
}

fn resolve_blobs(
    blobs: &[(String, Region)],
    sources: &[Buffer],
) -> Result<Vec<(String, Buffer)>, wire::WireError> {
    blobs
        .iter()
        .map(|(name, region)| Ok((name.clone(), region.resolve(sources)?)))
        .collect()
}

/// Serves one request; the reply and the arena to send with it.
fn serve(plugin: &dyn Serializer, request: Request, fds: Vec<OwnedFd>) -> (Reply, Option<File>) {
    let sources = match map_sources(fds) {
        Ok(sources) => sources,
        Err(error) => {
            return (
                internal(format!("runner: cannot map request: {error}")),
                None,
            )
        }
    };
    match serve_mapped(plugin, request, &sources) {
        Ok(done) => done,
        Err(message) => (internal(message), None),
    }
}

fn serve_mapped(
    plugin: &dyn Serializer,
    request: Request,
    sources: &[Buffer],
) -> Result<(Reply, Option<File>), String> {
    let bad = |e: wire::WireError| format!("runner: bad request: {e}");
    let io = |e: std::io::Error| format!("runner: shared memory: {e}");
    let value = |region: Region| -> Result<Value, String> {
        let tree = region.resolve(sources).map_err(bad)?;
        wire::decode_value(&tree, sources).map_err(bad)
    };
    let written = |sink: ArenaSink,
                   result: Result<crate::serializer::Written, CallError>|
     -> Result<(Reply, Option<File>), String> {
        match result {
            Ok(written) => Ok((
                Reply::Blobs {
                    written: Some(written),
                    blobs: sink.blobs,
                },
                Some(sink.arena.finish().map_err(io)?),
            )),
            Err(error) => Ok((failed(error), None)),
        }
    };
    Ok(match request {
        Request::CanSerialize { value: region } => {
            let value = value(region)?;
            let answer = plugin.can_serialize(&CallValue::new(&value));
            (answer.map_or_else(failed, Reply::Bool), None)
        }
        Request::Serialize {
            value: region,
            options,
        } => {
            let value = value(region)?;
            let mut sink = ArenaSink::new().map_err(io)?;
            let result = plugin.serialize(&CallValue::new(&value), &options, &mut sink);
            written(sink, result)?
        }
        Request::CanDeserialize { meta } => {
            let answer = plugin.can_deserialize(&meta);
            (answer.map_or_else(failed, Reply::Bool), None)
        }
        Request::Deserialize { meta, blobs } => {
            let blobs = resolve_blobs(&blobs, sources).map_err(bad)?;
            match plugin.deserialize(&meta, &blobs) {
                Ok(value) => {
                    let mut payloads = ReplyPayloads {
                        arena: ArenaWriter::new("stowage-reply").map_err(io)?,
                        blobs: &blobs,
                        error: None,
                    };
                    let tree = match wire::encode_value(&value, &mut payloads) {
                        Ok(tree) => tree,
                        Err(error) => return Ok((internal(error.to_string()), None)),
                    };
                    if let Some(error) = payloads.error {
                        return Err(io(error));
                    }
                    let mut arena = payloads.arena;
                    let offset = arena.append(&tree).map_err(io)?;
                    let region = Region {
                        source: 0,
                        offset,
                        len: tree.len() as u64,
                    };
                    (Reply::Value(region), Some(arena.finish().map_err(io)?))
                }
                Err(error) => (failed(error), None),
            }
        }
        Request::Sniff { prefix } => {
            let prefix = prefix.resolve(sources).map_err(bad)?;
            (plugin.sniff(&prefix).map_or_else(failed, Reply::Bool), None)
        }
        Request::Ingest { file, options } => {
            let file = file.resolve(sources).map_err(bad)?;
            let mut sink = ArenaSink::new().map_err(io)?;
            let result = plugin.ingest(&file, &options, &mut sink);
            written(sink, result)?
        }
        Request::Export { meta, blobs } => {
            let blobs = resolve_blobs(&blobs, sources).map_err(bad)?;
            let mut sink = ArenaSink::new().map_err(io)?;
            let mut out = SinkWriter(&mut sink);
            match plugin.export(&meta, &blobs, &mut out) {
                Ok(()) => (
                    Reply::Blobs {
                        written: None,
                        blobs: sink.blobs,
                    },
                    Some(sink.arena.finish().map_err(io)?),
                ),
                Err(error) => (failed(error), None),
            }
        }
        Request::Describe { meta, blobs } => {
            let blobs = resolve_blobs(&blobs, sources).map_err(bad)?;
            (
                plugin
                    .describe(&meta, &blobs)
                    .map_or_else(failed, Reply::Text),
                None,
            )
        }
    })
}

/// The export output as one blob named `file` in the reply arena.
struct SinkWriter<'s>(&'s mut ArenaSink);

impl std::io::Write for SinkWriter<'_> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        if self.0.blobs.is_empty() {
            self.0.begin_blob("file").map_err(std::io::Error::other)?;
        }
        self.0.write(bytes).map_err(std::io::Error::other)?;
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
