//! Priority dispatch over the active serializers.
//!
//! A [`DispatchTable`] is an immutable snapshot built by the lifecycle after
//! each rescan: active serializers sorted by `(priority, name)` and indexed
//! per claimed kind. The host swaps snapshots atomically, so a rescan never
//! blocks a dispatch in flight for longer than an `Arc` clone.
//!
//! For every entry point, a candidate that errors or panics is skipped and
//! counted (`dispatch_errors`, `last_error = "dispatch: …"`), and the next
//! candidate is tried; a candidate that merely declines is not counted.
//!
//! Decision: ties in priority are broken by plugin name, lexicographically
//! (byte order), so dispatch order never depends on discovery order.
//! Decision: options given for one call (`--opt`) that a candidate does not
//! accept make that candidate ineligible for the call (reported in the error
//! if nothing else takes the value), never a silent drop. For a value the
//! options are checked before the plugin is called at all; for a file they
//! are checked after `sniff` (which only reads the prefix), so a plugin that
//! recognises the file names the unknown option as its refusal.
//!
//! Error messages follow one rule, written once in [`DispatchError`]'s
//! `Display` (SPEC §7): when exactly one candidate recognised the input (its
//! `sniff` or `can_serialize`/`can_deserialize` said yes, or it was the only
//! plugin asked) and then refused it ([`Answer::Refused`]), its own message
//! is the whole error, `PLUGIN: MESSAGE`; other candidates are appended on
//! the same line only when they failed too (a decline says nothing useful).
//! Otherwise the error lists every candidate asked. The "is it installed and
//! enabled?" hint is given only when no active plugin reads the encoding,
//! never when a reader is active but failed. [`crate::Error`] adds the
//! artifact name in front (`cannot store NAME: …`).
//! Decision: the error stays one line (the CLI contract); a plugin's message
//! is quoted up to [`MAX_QUOTED_MESSAGE`] characters.
//!
//! Composites (SPEC §15) recurse through the same loop: when the built-in
//! `composite` route (recognised by its reserved name) wins a list or map,
//! each part the value splits into ([`crate::composite::split`]) is
//! dispatched by `DispatchTable::serialize` exactly as a top-level value,
//! so plugins take their kinds inside a composite too; a composite's load
//! dispatches each part to its own reader the same way. A part that no
//! serializer takes (or no reader reads) stops the whole dispatch with
//! [`DispatchError::Part`], naming the part's path in front of the part's
//! own error (`eval/table: no serializer …`); the composite is not blamed
//! for it and no later candidate is tried (none could take the value).
//! Failed candidates skipped inside parts are reported with the whole
//! dispatch's.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::composite::{self, Skeleton, COMPOSITE_NAME, SKELETON_BLOB};
use crate::serializer::{
    ArtifactMeta, BlobSink, CallError, CallValue, ErrorKind, MemorySink, Serializer, Written,
};
use crate::store::{PartRecord, StoreError};
use crate::text::quote_capped;
use crate::value::{Buffer, Kind, Value};

/// Characters of a plugin's message quoted in errors and `last_error`.
pub const MAX_QUOTED_MESSAGE: usize = 500;
/// Characters of an option key quoted in errors.
const MAX_QUOTED_KEY: usize = 80;

/// Per-serializer counters, kept for the life of one `Host`.
#[derive(Debug, Default)]
pub struct Stats {
    dispatch_errors: AtomicU64,
    last_error: Mutex<Option<String>>,
}

impl Stats {
    /// Failures counted so far.
    pub fn dispatch_errors(&self) -> u64 {
        self.dispatch_errors.load(Ordering::Relaxed)
    }
    /// The last dispatch failure, if any.
    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().map(|e| e.clone()).unwrap_or(None)
    }
    fn record(&self, message: String) {
        self.dispatch_errors.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut last) = self.last_error.lock() {
            *last = Some(message);
        }
    }
}

/// One active serializer in the table.
pub struct Route {
    /// Plugin name.
    pub(crate) name: String,
    /// Effective priority.
    pub(crate) priority: u32,
    /// Options from the config, passed on every call.
    pub(crate) config_options: Vec<(String, String)>,
    /// The serializer.
    pub(crate) serializer: Arc<dyn Serializer>,
    /// Its counters.
    pub(crate) stats: Arc<Stats>,
}

impl Route {
    /// The serializer's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its effective priority.
    pub fn priority(&self) -> u32 {
        self.priority
    }

    /// Its version.
    pub fn version(&self) -> String {
        self.serializer.info().version.to_string()
    }

    /// Counts a failure of `entry` and returns it (its message capped) with
    /// the [`Skipped`] line for warnings.
    fn fail(&self, entry: &str, error: CallError) -> (CallError, Skipped) {
        let error = CallError::new(error.kind, quote_capped(&error.message, MAX_QUOTED_MESSAGE));
        let message = format!("dispatch: {entry}: {error}");
        tracing::warn!(target: "stowage::dispatch", plugin = %self.name, "{message}");
        self.stats.record(message.clone());
        (
            error,
            Skipped {
                plugin: self.name.clone(),
                message,
            },
        )
    }

    /// Config options overridden by the call's; `Err` names a key the
    /// serializer does not accept.
    fn options(&self, call: &[(String, String)]) -> Result<Vec<(String, String)>, String> {
        let accepted = &self.serializer.info().option_keys;
        let mut options = self.config_options.clone();
        for (key, value) in call {
            if !accepted.contains(key) {
                return Err(unknown_option(key, accepted));
            }
            match options.iter_mut().find(|(k, _)| k == key) {
                Some(slot) => slot.1 = value.clone(),
                None => options.push((key.clone(), value.clone())),
            }
        }
        Ok(options)
    }
}

/// The message for an option key a serializer does not accept (the key is
/// quoted capped: it comes from the user).
pub fn unknown_option(key: &str, accepted: &[String]) -> String {
    let key = quote_capped(key, MAX_QUOTED_KEY);
    if accepted.is_empty() {
        format!("unknown option {key}; this serializer accepts no options")
    } else {
        let accepted = quote_capped(&accepted.join(", "), MAX_QUOTED_MESSAGE);
        format!("unknown option {key}; accepted: {accepted}")
    }
}

/// A candidate skipped because it failed (counted in its stats).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// Plugin name.
    pub plugin: String,
    /// `dispatch: ENTRY: KIND: MESSAGE`.
    pub message: String,
}

/// What a candidate answered, for errors and `stowage explain`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// It took the value (or file, or artifact).
    Accepted,
    /// It said no.
    Declined,
    /// Not eligible for this call (an option it does not accept).
    Ineligible(String),
    /// It failed (error or panic) while being asked whether it takes the
    /// input (`sniff`, `can_serialize`, `can_deserialize`), and was skipped.
    Failed(CallError),
    /// It recognised the input (or was the only plugin asked), then refused
    /// it: its `ingest`, `serialize` or reading call failed, or it does not
    /// accept an option of the call.
    Refused(CallError),
    /// Not asked: an earlier candidate won.
    NotAsked,
}

impl fmt::Display for Answer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Answer::Accepted => f.write_str("accepted"),
            Answer::Declined => f.write_str("declined"),
            Answer::Ineligible(why) => f.write_str(why),
            Answer::Failed(error) | Answer::Refused(error) => write!(f, "{error}"),
            Answer::NotAsked => f.write_str("not asked"),
        }
    }
}

/// One candidate's turn.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    /// Plugin name.
    pub plugin: String,
    /// Its priority.
    pub priority: u32,
    /// What happened.
    pub answer: Answer,
}

/// Why a dispatch found no serializer. `Display` applies the one message
/// rule of this module's header.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DispatchError {
    /// No active serializer accepted the value.
    #[error("{}", refusal(.attempts).unwrap_or_else(|| format!("no serializer accepted the {kind} value{}", tried(.attempts))))]
    NoSerializer {
        /// The value's kind.
        kind: Kind,
        /// Each candidate and its answer.
        attempts: Vec<Attempt>,
    },
    /// No active plugin recognised the file, or each that did refused it.
    #[error("{}", refusal(.attempts).unwrap_or_else(|| no_sniffer(.attempts)))]
    NoSniffer {
        /// Each candidate and its answer.
        attempts: Vec<Attempt>,
    },
    /// No active reader of the artifact's encoding could read it.
    #[error("{}", no_deserializer(.encoding, .writer, .writer_version, .attempts))]
    NoDeserializer {
        /// The encoding.
        encoding: String,
        /// Plugin that wrote it.
        writer: String,
        /// Its version.
        writer_version: String,
        /// Each active reader of the encoding and its answer (empty when
        /// none is active).
        attempts: Vec<Attempt>,
    },
    /// A named plugin is not active.
    #[error("plugin {plugin} is not active")]
    NotActive {
        /// The plugin.
        plugin: String,
    },
    /// A part of a composite found no serializer (or reader): the part's
    /// path, then its own error.
    #[error("{path}: {error}")]
    Part {
        /// The part's path in the structure.
        path: String,
        /// Why its dispatch failed.
        error: Box<DispatchError>,
    },
    /// A composite's parts hold more blobs than one artifact may.
    #[error("more than {limit} blobs in one artifact, counting every part's")]
    BlobLimit {
        /// The per-artifact limit.
        limit: usize,
    },
    /// A composite's skeleton blob could not be written.
    #[error("cannot write the skeleton: {message}")]
    Skeleton {
        /// Why.
        message: String,
    },
    /// A composite nests deeper than the fallback's limit.
    #[error("the value nests deeper than {limit} levels")]
    TooDeep {
        /// The limit.
        limit: usize,
    },
    /// A reader failed after part of its export had reached the output,
    /// so no other reader could be tried.
    #[error("{plugin} failed after writing part of the file: {}", cause(.error))]
    PartialExport {
        /// The reader.
        plugin: String,
        /// Its failure.
        error: CallError,
    },
}

/// Why a dispatch returned no winner: every candidate declined or failed
/// ([`DispatchError`]), or the host's own side failed while a candidate
/// worked — the store could not take a blob, the output could not take an
/// export. Then the dispatch stops: no candidate is blamed and no other is
/// tried.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// No candidate could do it.
    #[error(transparent)]
    NoWinner(#[from] DispatchError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Writing an exported file to its output failed.
    #[error("cannot write the exported file: {0}")]
    Output(#[source] std::io::Error),
}

/// The rule's headline: when exactly one candidate recognised the input and
/// refused it, `PLUGIN: MESSAGE`, followed by the other candidates that
/// failed (declines are left out); `None` otherwise.
fn refusal(attempts: &[Attempt]) -> Option<String> {
    let mut refused = attempts
        .iter()
        .filter(|a| matches!(a.answer, Answer::Refused(_)));
    let (Some(one), None) = (refused.next(), refused.next()) else {
        return None;
    };
    let Answer::Refused(error) = &one.answer else {
        return None;
    };
    let mut line = format!("{}: {}", one.plugin, cause(error));
    let others: Vec<&Attempt> = attempts
        .iter()
        .filter(|a| a.plugin != one.plugin && matches!(a.answer, Answer::Failed(_)))
        .collect();
    if !others.is_empty() {
        line.push_str("; also failed: ");
        line.push_str(&listed(others));
    }
    Some(line)
}

/// A refusal's cause as its plugin wrote it: invalid-input, unsupported and
/// panic messages verbatim (a panic's already says `panicked …`), an
/// internal error marked as such.
fn cause(error: &CallError) -> String {
    match error.kind {
        ErrorKind::Internal => format!("internal error: {}", error.message),
        ErrorKind::Panic if !error.message.starts_with("panicked") => {
            format!("panicked: {}", error.message)
        }
        _ => error.message.clone(),
    }
}

fn no_sniffer(attempts: &[Attempt]) -> String {
    if attempts
        .iter()
        .any(|a| matches!(a.answer, Answer::Refused(_)))
    {
        format!(
            "every plugin that recognised the file refused it{}",
            tried(attempts)
        )
    } else {
        format!("no plugin recognises this file{}", tried(attempts))
    }
}

fn no_deserializer(
    encoding: &str,
    writer: &str,
    writer_version: &str,
    attempts: &[Attempt],
) -> String {
    if attempts.is_empty() {
        return format!(
            "no deserializer for encoding {encoding}; written by {writer} {writer_version} — is it installed and enabled?"
        );
    }
    refusal(attempts).unwrap_or_else(|| {
        format!(
            "no active reader of encoding {encoding} could read it{}",
            tried(attempts)
        )
    })
}

/// `; tried: a (msg); b (declined)`, invalid-input failures first.
fn tried(attempts: &[Attempt]) -> String {
    let shown: Vec<&Attempt> = attempts
        .iter()
        .filter(|a| a.answer != Answer::NotAsked)
        .collect();
    if shown.is_empty() {
        return "; no active candidate".to_owned();
    }
    format!("; tried: {}", listed(shown))
}

/// `a (msg); b (declined)`, invalid-input failures first.
fn listed(mut attempts: Vec<&Attempt>) -> String {
    let invalid_first = |a: &&Attempt| !matches!(&a.answer, Answer::Failed(e) | Answer::Refused(e) if e.kind == ErrorKind::InvalidInput);
    attempts.sort_by_key(invalid_first);
    let parts: Vec<String> = attempts
        .iter()
        .map(|a| format!("{} ({})", a.plugin, a.answer))
        .collect();
    parts.join("; ")
}

/// The winner of a dispatch and what was skipped on the way.
pub struct Dispatched<T> {
    /// The winning route.
    pub route: Arc<Route>,
    /// The winner's result.
    pub output: T,
    /// Failed candidates skipped before the winner.
    pub skipped: Vec<Skipped>,
}

/// Active serializers in dispatch order, indexed per kind.
#[derive(Default)]
pub struct DispatchTable {
    ordered: Vec<Arc<Route>>,
    by_kind: Vec<Vec<Arc<Route>>>,
}

impl DispatchTable {
    /// Builds the table from active routes.
    pub(crate) fn new(mut routes: Vec<Route>) -> Self {
        routes.sort_by(|a, b| (a.priority, &a.name).cmp(&(b.priority, &b.name)));
        let ordered: Vec<Arc<Route>> = routes.into_iter().map(Arc::new).collect();
        let slots = Kind::ALL
            .iter()
            .map(|k| k.tag() as usize)
            .max()
            .unwrap_or(0)
            + 1;
        let mut by_kind = vec![Vec::new(); slots];
        for route in &ordered {
            for kind in &route.serializer.info().kinds {
                by_kind[kind.tag() as usize].push(Arc::clone(route));
            }
        }
        DispatchTable { ordered, by_kind }
    }

    /// Every active route, in dispatch order.
    pub fn routes(&self) -> &[Arc<Route>] {
        &self.ordered
    }

    /// Routes claiming `kind`, in dispatch order.
    pub fn for_kind(&self, kind: Kind) -> &[Arc<Route>] {
        self.by_kind
            .get(kind.tag() as usize)
            .map_or(&[], Vec::as_slice)
    }

    /// The active route named `name`.
    pub fn route(&self, name: &str) -> Option<&Arc<Route>> {
        self.ordered.iter().find(|r| r.name == name)
    }

    /// Serializes `value` with the first candidate that accepts it and
    /// succeeds. Each attempt gets a fresh sink from `new_sink`; the
    /// winner's is returned with its metadata. A failure on the host side
    /// of the sink (the store) stops the dispatch with that error: no
    /// candidate is blamed and no other is tried.
    pub(crate) fn serialize<S: PartSink>(
        &self,
        value: &Value,
        call_options: &[(String, String)],
        new_sink: &mut dyn FnMut(&Route) -> Result<S, Failure>,
    ) -> Result<Dispatched<(S, Written)>, Failure> {
        let value = composite::group_top(value);
        let value = value.as_ref();
        let call_value = CallValue::new(value);
        let mut log = Log::default();
        let mut part_skipped = Vec::new();
        let winner = walk(
            &mut log,
            self.for_kind(value.kind()),
            Self::value_probe(&call_value, call_options),
            "serialize",
            |route, options| {
                if route.name == COMPOSITE_NAME {
                    return self.serialize_composite(route, value, new_sink, &mut part_skipped);
                }
                write_blobs(route, "serialize", new_sink, |serializer, sink| {
                    serializer.serialize(&call_value, &options, sink)
                })
            },
        )?;
        let mut dispatched = log.finish(winner, |attempts| DispatchError::NoSerializer {
            kind: value.kind(),
            attempts,
        })?;
        dispatched.skipped.extend(part_skipped);
        Ok(dispatched)
    }

    /// The composite's work: each part dispatched on its own (with a sink
    /// of its own, so a failed candidate leaves nothing behind), its blobs
    /// adopted into the composite's sink, then the skeleton written last.
    fn serialize_composite<S: PartSink>(
        &self,
        route: &Route,
        value: &Value,
        new_sink: &mut dyn FnMut(&Route) -> Result<S, Failure>,
        skipped: &mut Vec<Skipped>,
    ) -> Work<(S, Written)> {
        let split = match composite::split(value) {
            Ok(split) => split,
            Err(composite::SplitError::TooDeep { limit }) => {
                return Work::Stopped(DispatchError::TooDeep { limit }.into())
            }
        };
        let mut sink = match new_sink(route) {
            Ok(sink) => sink,
            Err(error) => return Work::Stopped(error),
        };
        let mut parts = Vec::with_capacity(split.leaves.len());
        for (i, leaf) in split.leaves.iter().enumerate() {
            let dispatched = match self.serialize(&leaf.value, &[], new_sink) {
                Ok(dispatched) => dispatched,
                Err(error) => return Work::Stopped(in_part(&leaf.path, error)),
            };
            skipped.extend(dispatched.skipped);
            let (part_sink, written) = dispatched.output;
            let blobs = match sink.adopt(&format!("p{i}."), part_sink) {
                Ok(blobs) => blobs,
                Err(error) => return Work::Stopped(error),
            };
            let part_route = &dispatched.route;
            let mut info = written.info;
            info.sort();
            info.dedup_by(|b, a| a.0 == b.0);
            parts.push(PartRecord {
                path: leaf.path.clone(),
                kind: leaf.value.kind().name().to_owned(),
                obj_type: written.obj_type,
                encoding: written.encoding,
                encoding_version: written.encoding_version,
                serializer: part_route.name.clone(),
                serializer_version: part_route.version(),
                serializer_info: info,
                blobs,
            });
        }
        let skeleton = composite::encode_skeleton(&split.tree, &parts);
        let wrote = sink
            .begin_blob(SKELETON_BLOB)
            .and_then(|()| sink.write(&skeleton));
        if let Some(error) = sink.take_host_failure() {
            return Work::Stopped(Failure::Store(error));
        }
        match wrote {
            Ok(()) => Work::Done((sink, composite::written(value, parts))),
            Err(message) => Work::Failed(CallError::new(ErrorKind::Internal, message)),
        }
    }

    /// Stores a composite whose parts are files (`put NAME DIR`): `tree`
    /// is the skeleton, `files` each part's reference and bytes in
    /// reference order. Each file is ingested by the plugin whose `sniff`
    /// claims it, exactly as `put FILE` would; the composite must be
    /// active.
    pub(crate) fn ingest_composite<S: PartSink>(
        &self,
        kind: Kind,
        tree: &rmpv::Value,
        files: &[(composite::FileRef, &[u8])],
        new_sink: &mut dyn FnMut(&Route) -> Result<S, Failure>,
    ) -> Result<Dispatched<(S, Written)>, Failure> {
        let route = self
            .route(COMPOSITE_NAME)
            .ok_or_else(|| DispatchError::NotActive {
                plugin: COMPOSITE_NAME.to_owned(),
            })?;
        let mut sink = new_sink(route)?;
        let mut skipped = Vec::new();
        let mut parts = Vec::with_capacity(files.len());
        for (i, (file_ref, file)) in files.iter().enumerate() {
            let prefix = &file[..file.len().min(stowage_plugin_api::SNIFF_PREFIX_LEN)];
            let dispatched = self
                .ingest(file, prefix, None, &[], new_sink)
                .map_err(|error| in_part(&file_ref.path, error))?;
            skipped.extend(dispatched.skipped);
            let (part_sink, written) = dispatched.output;
            let blobs = sink.adopt(&format!("p{i}."), part_sink)?;
            let mut info = written.info;
            info.sort();
            info.dedup_by(|b, a| a.0 == b.0);
            parts.push(PartRecord {
                path: file_ref.path.clone(),
                kind: file_ref.kind.clone(),
                obj_type: written.obj_type,
                encoding: written.encoding,
                encoding_version: written.encoding_version,
                serializer: dispatched.route.name.clone(),
                serializer_version: dispatched.route.version(),
                serializer_info: info,
                blobs,
            });
        }
        let skeleton = composite::encode_skeleton(tree, &parts);
        let wrote = sink
            .begin_blob(SKELETON_BLOB)
            .and_then(|()| sink.write(&skeleton));
        if let Some(error) = sink.take_host_failure() {
            return Err(Failure::Store(error));
        }
        if let Err(message) = wrote {
            return Err(DispatchError::Skeleton { message }.into());
        }
        let mut written = composite::written(&Value::Null, parts);
        written.obj_type = kind.name().to_owned();
        Ok(Dispatched {
            route: Arc::clone(route),
            output: (sink, written),
            skipped,
        })
    }

    /// What `serialize` would do with each part of a composite value, part
    /// by part (`explain` per leaf): `(path, candidates)`. Empty unless
    /// the composite would take the value.
    pub fn explain_parts(&self, value: &Value) -> Vec<(String, Vec<Attempt>)> {
        let value = composite::group_top(value);
        match self.first_acceptor(&value) {
            Some(route) if route.name == COMPOSITE_NAME => {}
            _ => return Vec::new(),
        }
        let Ok(split) = composite::split(&value) else {
            return Vec::new();
        };
        split
            .leaves
            .iter()
            .map(|leaf| (leaf.path.clone(), self.explain_value(&leaf.value)))
            .collect()
    }

    /// The candidate `serialize` would hand the value to: the first route
    /// claiming its kind whose `can_serialize` says yes. Failures are
    /// counted and skipped as in `serialize`; nothing is allocated for
    /// declining candidates.
    pub fn first_acceptor(&self, value: &Value) -> Option<&Arc<Route>> {
        let value = composite::group_top(value);
        let call_value = CallValue::new(&value);
        let probe = Self::value_probe(&call_value, &[]);
        match walk(&mut NoLog, self.for_kind(value.kind()), probe, "", accept) {
            Ok(Some((route, ()))) => Some(route),
            _ => None,
        }
    }

    /// What `serialize` would do with `value`, candidate by candidate, up to
    /// the winner (later ones are "not asked"): `stowage explain --json`.
    pub fn explain_value(&self, value: &Value) -> Vec<Attempt> {
        let value = composite::group_top(value);
        let call_value = CallValue::new(&value);
        explain(
            self.for_kind(value.kind()),
            Self::value_probe(&call_value, &[]),
        )
    }

    /// What `ingest` would do with a file starting with `prefix`, up to the
    /// plugin whose `sniff` claims it: `stowage explain FILE`.
    pub fn explain_file(&self, prefix: &[u8]) -> Vec<Attempt> {
        explain(&self.sniffers(), Self::sniff_probe(prefix, None))
    }

    /// The routes asked about a file: every active one but the composite,
    /// which reads directories, never files.
    fn sniffers(&self) -> Vec<Arc<Route>> {
        self.ordered
            .iter()
            .filter(|r| r.name != COMPOSITE_NAME)
            .cloned()
            .collect()
    }

    /// Ingests a file with the first plugin whose `sniff` claims it and
    /// whose `ingest` succeeds (or with `only`, if given). Host-side sink
    /// failures stop the dispatch as in [`DispatchTable::serialize`].
    pub(crate) fn ingest<S: BlobSink>(
        &self,
        file: &[u8],
        prefix: &[u8],
        only: Option<&str>,
        call_options: &[(String, String)],
        new_sink: &mut dyn FnMut(&Route) -> Result<S, Failure>,
    ) -> Result<Dispatched<(S, Written)>, Failure> {
        let sniffers = self.sniffers();
        let candidates: &[Arc<Route>] = match only {
            Some(name) => match sniffers.iter().position(|r| r.name == name) {
                Some(at) => &sniffers[at..=at],
                None => {
                    return Err(DispatchError::NotActive {
                        plugin: name.to_owned(),
                    }
                    .into())
                }
            },
            None => &sniffers,
        };
        let mut log = Log::default();
        let winner = walk(
            &mut log,
            candidates,
            Self::sniff_probe(prefix, only),
            "ingest",
            |route, ()| {
                // Recognised (or named): an option it does not take is its
                // refusal, not counted as a dispatch failure.
                let options = match route.options(call_options) {
                    Ok(options) => options,
                    Err(why) => {
                        let refusal = CallError::new(ErrorKind::InvalidInput, why);
                        return Work::Passed(Answer::Refused(refusal));
                    }
                };
                write_blobs(route, "ingest", new_sink, |serializer, sink| {
                    serializer.ingest(file, &options, sink)
                })
            },
        )?;
        log.finish(winner, |attempts| DispatchError::NoSniffer { attempts })
    }

    /// Runs `call` on the first reader of the artifact's encoding whose
    /// `can_deserialize` accepts it and whose call succeeds; `call` may stop
    /// the dispatch with a host-side failure ([`Work::Stopped`]).
    pub(crate) fn with_reader<T>(
        &self,
        meta: &ArtifactMeta,
        writer: &WrittenBy,
        entry: &'static str,
        call: &mut dyn FnMut(&dyn Serializer) -> Work<T>,
    ) -> Result<Dispatched<T>, Failure> {
        let readers = self
            .ordered
            .iter()
            .filter(|r| r.serializer.info().reads.contains(&meta.encoding));
        let probe = |route: &Route| {
            route.serializer.can_deserialize(meta).map(|yes| {
                if yes {
                    Probe::Takes(())
                } else {
                    Probe::Passes(Answer::Declined)
                }
            })
        };
        let mut log = Log::default();
        let winner = walk(
            &mut log,
            readers,
            ("can_deserialize", probe),
            entry,
            |route, ()| call(route.serializer.as_ref()),
        )?;
        log.finish(winner, |attempts| DispatchError::NoDeserializer {
            encoding: meta.encoding.clone(),
            writer: writer.serializer.clone(),
            writer_version: writer.version.clone(),
            attempts,
        })
    }

    /// Deserializes an artifact.
    pub(crate) fn deserialize(
        &self,
        meta: &ArtifactMeta,
        writer: &WrittenBy,
        blobs: &[(String, Buffer)],
    ) -> Result<Dispatched<Value>, Failure> {
        let mut part_skipped = Vec::new();
        let mut dispatched = self.with_reader(meta, writer, "deserialize", &mut |s| {
            if s.info().name == COMPOSITE_NAME {
                return self.deserialize_composite(blobs, &mut part_skipped);
            }
            Work::from(s.deserialize(meta, blobs))
        })?;
        dispatched.skipped.extend(part_skipped);
        Ok(dispatched)
    }

    /// Reads a composite: each part by the first reader of its own
    /// encoding (blobs shared, so a mapped load maps every part), then the
    /// structure rebuilt around them.
    fn deserialize_composite(
        &self,
        blobs: &[(String, Buffer)],
        skipped: &mut Vec<Skipped>,
    ) -> Work<Value> {
        let skeleton = match Skeleton::decode(blobs) {
            Ok(skeleton) => skeleton,
            Err(error) => return Work::Failed(error),
        };
        let mut values = Vec::with_capacity(skeleton.parts.len());
        for part in &skeleton.parts {
            let (meta, part_blobs) = Skeleton::part_input(part, blobs);
            let writer = WrittenBy::new(&part.serializer, &part.serializer_version);
            match self.deserialize(&meta, &writer, &part_blobs) {
                Ok(dispatched) => {
                    skipped.extend(dispatched.skipped);
                    values.push(dispatched.output);
                }
                Err(error) => return Work::Stopped(in_part(&part.path, error)),
            }
        }
        Work::from(skeleton.rebuild(values))
    }

    /// The question a value's candidates answer before any work: are the
    /// call's options theirs (else ineligible, not counted), then
    /// `can_serialize`. Yields the effective options.
    fn value_probe<'a>(
        value: &'a CallValue<'a>,
        call_options: &'a [(String, String)],
    ) -> (
        &'static str,
        impl FnMut(&Route) -> Result<Probe<Options>, CallError> + 'a,
    ) {
        let probe = move |route: &Route| {
            let options = match route.options(call_options) {
                Ok(options) => options,
                Err(why) => return Ok(Probe::Passes(Answer::Ineligible(why))),
            };
            Ok(match route.serializer.can_serialize(value)? {
                true => Probe::Takes(options),
                false => Probe::Passes(Answer::Declined),
            })
        };
        ("can_serialize", probe)
    }

    /// The question a file's candidates answer: `sniff` on its prefix, or
    /// nothing when the caller named the plugin (`only`).
    fn sniff_probe<'a>(
        prefix: &'a [u8],
        only: Option<&'a str>,
    ) -> (
        &'static str,
        impl FnMut(&Route) -> Result<Probe<()>, CallError> + 'a,
    ) {
        let probe = move |route: &Route| {
            if only.is_some() {
                return Ok(Probe::Takes(()));
            }
            Ok(match route.serializer.sniff(prefix)? {
                true => Probe::Takes(()),
                false => Probe::Passes(Answer::Declined),
            })
        };
        ("sniff", probe)
    }
}

/// A part's failure as the composite's: a dispatch error gets the part's
/// path in front; a host-side failure stays what it is.
pub(crate) fn in_part(path: &str, failure: Failure) -> Failure {
    match failure {
        Failure::NoWinner(error @ DispatchError::BlobLimit { .. }) => Failure::NoWinner(error),
        Failure::NoWinner(error) => Failure::NoWinner(DispatchError::Part {
            path: path.to_owned(),
            error: Box::new(error),
        }),
        other => other,
    }
}

/// A sink a composite's parts are written through: each part goes to a
/// fresh sink of its own, and the winner's blobs are then moved into the
/// composite's.
pub(crate) trait PartSink: BlobSink + Sized {
    /// Moves every blob of `part` into this sink, each renamed `prefix` +
    /// its name; returns `(name, new name)` per blob. A limit the store
    /// keeps is a [`DispatchError::BlobLimit`].
    fn adopt(&mut self, prefix: &str, part: Self) -> Result<Vec<(String, String)>, Failure>;
}

impl PartSink for MemorySink {
    fn adopt(&mut self, prefix: &str, part: Self) -> Result<Vec<(String, String)>, Failure> {
        let mut names = Vec::with_capacity(part.blobs.len());
        for (name, data) in part.blobs {
            let renamed = format!("{prefix}{name}");
            names.push((name, renamed.clone()));
            self.blobs.push((renamed, data));
        }
        Ok(names)
    }
}

/// A candidate's effective options for one call: the config's, overridden
/// by the call's.
type Options = Vec<(String, String)>;

/// Who wrote an artifact, for "written by" messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrittenBy {
    /// The serializer's name.
    pub serializer: String,
    /// Its version.
    pub version: String,
}

impl WrittenBy {
    /// `serializer` at `version`.
    pub fn new(serializer: impl Into<String>, version: impl Into<String>) -> Self {
        WrittenBy {
            serializer: serializer.into(),
            version: version.into(),
        }
    }
}

/// A candidate's answer to "is this yours?", before any work is done.
pub(crate) enum Probe<O> {
    /// It takes the input; `O` is what the work step needs.
    Takes(O),
    /// It does not (declined, or not eligible for this call).
    Passes(Answer),
}

/// How a candidate's work ended.
pub(crate) enum Work<T> {
    /// It succeeded: the winner.
    Done(T),
    /// It failed (error or panic): skipped, counted, the next one is tried.
    Failed(CallError),
    /// It was passed over without being blamed (an option it refuses).
    Passed(Answer),
    /// The host's side failed (the store, the output): the dispatch stops
    /// with this error, and no candidate is blamed.
    Stopped(Failure),
}

impl<T> From<Result<T, CallError>> for Work<T> {
    fn from(result: Result<T, CallError>) -> Self {
        match result {
            Ok(output) => Work::Done(output),
            Err(error) => Work::Failed(error),
        }
    }
}

/// Where a walk records what each candidate answered.
trait Record {
    fn attempt(&mut self, route: &Route, answer: Answer);
    fn skipped(&mut self, skipped: Skipped);
}

/// The record dispatches return: every answer, and the failures skipped.
#[derive(Default)]
struct Log {
    attempts: Vec<Attempt>,
    skipped: Vec<Skipped>,
}

impl Record for Log {
    fn attempt(&mut self, route: &Route, answer: Answer) {
        self.attempts.push(Attempt {
            plugin: route.name.clone(),
            priority: route.priority,
            answer,
        });
    }
    fn skipped(&mut self, skipped: Skipped) {
        self.skipped.push(skipped);
    }
}

impl Log {
    /// The winner with what was skipped before it, or `no_winner`'s error
    /// listing every candidate.
    fn finish<T>(
        self,
        winner: Option<(&Arc<Route>, T)>,
        no_winner: impl FnOnce(Vec<Attempt>) -> DispatchError,
    ) -> Result<Dispatched<T>, Failure> {
        match winner {
            Some((route, output)) => Ok(Dispatched {
                route: Arc::clone(route),
                output,
                skipped: self.skipped,
            }),
            None => Err(no_winner(self.attempts).into()),
        }
    }
}

/// No record: the hot path of [`DispatchTable::first_acceptor`] allocates
/// nothing for declining candidates.
struct NoLog;

impl Record for NoLog {
    fn attempt(&mut self, _: &Route, _: Answer) {}
    fn skipped(&mut self, _: Skipped) {}
}

/// The one dispatch loop. Asks each candidate in order `probe` (named
/// `probe.0` in failure records); the first that takes the input does
/// `work` (named `entry`). A failure in either is counted against that
/// candidate and the next is tried; a stop ends the walk with the host's
/// error. `Ok(None)` when no candidate won.
fn walk<'t, O, T>(
    record: &mut impl Record,
    candidates: impl IntoIterator<Item = &'t Arc<Route>>,
    (probe_entry, mut probe): (
        &'static str,
        impl FnMut(&Route) -> Result<Probe<O>, CallError>,
    ),
    entry: &'static str,
    mut work: impl FnMut(&Route, O) -> Work<T>,
) -> Result<Option<(&'t Arc<Route>, T)>, Failure> {
    for route in candidates {
        let answer = match probe(route) {
            Err(error) => {
                let (error, skipped) = route.fail(probe_entry, error);
                record.skipped(skipped);
                Answer::Failed(error)
            }
            Ok(Probe::Passes(answer)) => answer,
            Ok(Probe::Takes(input)) => match work(route, input) {
                Work::Done(output) => return Ok(Some((route, output))),
                Work::Failed(error) => {
                    let (error, skipped) = route.fail(entry, error);
                    record.skipped(skipped);
                    Answer::Refused(error)
                }
                Work::Passed(answer) => answer,
                Work::Stopped(error) => return Err(error),
            },
        };
        record.attempt(route, answer);
    }
    Ok(None)
}

/// The work of a dry run: the first candidate that takes the input wins.
fn accept<O>(_: &Route, _: O) -> Work<()> {
    Work::Done(())
}

/// The same walk as the dispatch it explains, with no work done: every
/// candidate up to the winner with its answer, the winner `accepted`, the
/// rest `not asked`.
fn explain<O>(
    routes: &[Arc<Route>],
    probe: (
        &'static str,
        impl FnMut(&Route) -> Result<Probe<O>, CallError>,
    ),
) -> Vec<Attempt> {
    let mut log = Log::default();
    let mut rest = routes.iter();
    if let Ok(Some((winner, ()))) = walk(&mut log, rest.by_ref(), probe, "", accept) {
        log.attempt(winner, Answer::Accepted);
        for route in rest {
            log.attempt(route, Answer::NotAsked);
        }
    }
    log.attempts
}

/// Lends `route` a fresh sink from `new_sink` for `call`, and judges the
/// result: a host-side sink failure stops the dispatch; a serializer that
/// failed, or wrote no blob, failed.
fn write_blobs<S: BlobSink>(
    route: &Route,
    entry: &str,
    new_sink: &mut dyn FnMut(&Route) -> Result<S, Failure>,
    call: impl FnOnce(&dyn Serializer, &mut dyn BlobSink) -> Result<Written, CallError>,
) -> Work<(S, Written)> {
    let mut sink = match new_sink(route) {
        Ok(sink) => CountingSink {
            inner: sink,
            blobs: 0,
        },
        Err(error) => return Work::Stopped(error),
    };
    let result = call(route.serializer.as_ref(), &mut sink);
    if let Some(error) = sink.inner.take_host_failure() {
        return Work::Stopped(Failure::Store(error));
    }
    match result {
        Ok(_) if sink.blobs == 0 => Work::Failed(CallError::new(
            ErrorKind::Internal,
            format!("{entry} wrote no blob"),
        )),
        Ok(written) => Work::Done((sink.inner, written)),
        Err(error) => Work::Failed(error),
    }
}

/// Counts the blobs a serializer starts, to catch "wrote no blob".
struct CountingSink<S> {
    inner: S,
    blobs: usize,
}

impl<S: BlobSink> BlobSink for CountingSink<S> {
    fn begin_blob(&mut self, name: &str) -> Result<(), String> {
        self.blobs += 1;
        self.inner.begin_blob(name)
    }
    fn write(&mut self, bytes: &[u8]) -> Result<(), String> {
        self.inner.write(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attempt(plugin: &str, answer: Answer) -> Attempt {
        Attempt {
            plugin: plugin.to_owned(),
            priority: 10,
            answer,
        }
    }

    fn error(kind: ErrorKind, message: &str) -> CallError {
        CallError::new(kind, message)
    }

    #[test]
    fn one_refusal_is_the_headline_and_declines_are_left_out() {
        let attempts = vec![
            attempt("arrow", Answer::Declined),
            attempt(
                "class-source",
                Answer::Refused(error(ErrorKind::InvalidInput, "line 1: not a class")),
            ),
            attempt("msgpack", Answer::Declined),
        ];
        assert_eq!(
            DispatchError::NoSniffer { attempts }.to_string(),
            "class-source: line 1: not a class"
        );
    }

    #[test]
    fn other_failures_follow_a_headline_on_the_same_line() {
        let attempts = vec![
            attempt(
                "panicky",
                Answer::Failed(error(ErrorKind::Panic, "panicked in sniff: boom")),
            ),
            attempt(
                "echo",
                Answer::Refused(error(ErrorKind::Internal, "disk on fire")),
            ),
        ];
        assert_eq!(
            DispatchError::NoSniffer { attempts }.to_string(),
            "echo: internal error: disk on fire; also failed: panicky (panic: panicked in \
             sniff: boom)"
        );
    }

    #[test]
    fn several_refusals_list_every_candidate_invalid_input_first() {
        let attempts = vec![
            attempt(
                "a",
                Answer::Refused(error(ErrorKind::Unsupported, "no tensors")),
            ),
            attempt("b", Answer::Refused(error(ErrorKind::InvalidInput, "bad"))),
            attempt("c", Answer::Declined),
        ];
        assert_eq!(
            DispatchError::NoSniffer {
                attempts: attempts.clone()
            }
            .to_string(),
            "every plugin that recognised the file refused it; tried: b (invalid input: bad); \
             a (unsupported: no tensors); c (declined)"
        );
        assert_eq!(
            DispatchError::NoSerializer {
                kind: Kind::String,
                attempts
            }
            .to_string(),
            "no serializer accepted the string value; tried: b (invalid input: bad); \
             a (unsupported: no tensors); c (declined)"
        );
    }

    #[test]
    fn install_hint_only_without_an_active_reader() {
        let no_reader = |attempts| DispatchError::NoDeserializer {
            encoding: "echo-v1".into(),
            writer: "echo".into(),
            writer_version: "1.2.0".into(),
            attempts,
        };
        assert_eq!(
            no_reader(vec![]).to_string(),
            "no deserializer for encoding echo-v1; written by echo 1.2.0 — is it installed and \
             enabled?"
        );
        assert_eq!(
            no_reader(vec![attempt(
                "echo",
                Answer::Refused(error(ErrorKind::Panic, "panicked in export: boom"))
            )])
            .to_string(),
            "echo: panicked in export: boom"
        );
        assert_eq!(
            no_reader(vec![attempt(
                "echo",
                Answer::Refused(error(ErrorKind::Panic, "boom"))
            )])
            .to_string(),
            "echo: panicked: boom"
        );
        assert_eq!(
            no_reader(vec![attempt("echo", Answer::Declined)]).to_string(),
            "no active reader of encoding echo-v1 could read it; tried: echo (declined)"
        );
    }

    #[test]
    fn unknown_option_quotes_the_key_capped() {
        let key = "k".repeat(1000);
        assert_eq!(
            unknown_option(&key, &[]),
            format!(
                "unknown option {}… (1000 bytes); this serializer accepts no options",
                "k".repeat(80)
            )
        );
        assert_eq!(
            unknown_option("a\nb", &["x".into(), "y".into()]),
            "unknown option a\\nb; accepted: x, y"
        );
    }
}
