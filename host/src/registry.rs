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

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::quote_capped;
use crate::serializer::{
    ArtifactMeta, BlobSink, CallError, CallValue, ErrorKind, Serializer, Written,
};
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
    pub name: String,
    /// Effective priority.
    pub priority: u32,
    /// Options from the config, passed on every call.
    pub config_options: Vec<(String, String)>,
    /// The serializer.
    pub serializer: Arc<dyn Serializer>,
    /// Its counters.
    pub stats: Arc<Stats>,
}

impl Route {
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
    /// The sink could not be created.
    #[error("{0}")]
    Sink(String),
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
    pub fn new(mut routes: Vec<Route>) -> Self {
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
    /// winner's is returned with its metadata.
    pub fn serialize<S: BlobSink>(
        &self,
        value: &Value,
        call_options: &[(String, String)],
        new_sink: &mut dyn FnMut(&Route) -> Result<S, String>,
    ) -> Result<Dispatched<(S, Written)>, DispatchError> {
        let call_value = CallValue::new(value);
        let mut attempts = Vec::new();
        let mut skipped = Vec::new();
        for route in self.for_kind(value.kind()) {
            let answer = 'attempt: {
                let options = match route.options(call_options) {
                    Ok(options) => options,
                    Err(why) => break 'attempt Answer::Ineligible(why),
                };
                match route.serializer.can_serialize(&call_value) {
                    Ok(true) => {}
                    Ok(false) => break 'attempt Answer::Declined,
                    Err(error) => {
                        let (error, skip) = route.fail("can_serialize", error);
                        skipped.push(skip);
                        break 'attempt Answer::Failed(error);
                    }
                }
                let sink = new_sink(route).map_err(DispatchError::Sink)?;
                let mut counting = CountingSink {
                    inner: sink,
                    blobs: 0,
                };
                let result = route
                    .serializer
                    .serialize(&call_value, &options, &mut counting)
                    .and_then(|written| match counting.blobs {
                        0 => Err(CallError::new(
                            ErrorKind::Internal,
                            "serialize wrote no blob",
                        )),
                        _ => Ok(written),
                    });
                match result {
                    Ok(written) => {
                        return Ok(Dispatched {
                            route: Arc::clone(route),
                            output: (counting.inner, written),
                            skipped,
                        })
                    }
                    Err(error) => {
                        let (error, skip) = route.fail("serialize", error);
                        skipped.push(skip);
                        Answer::Refused(error)
                    }
                }
            };
            attempts.push(Attempt {
                plugin: route.name.clone(),
                priority: route.priority,
                answer,
            });
        }
        Err(DispatchError::NoSerializer {
            kind: value.kind(),
            attempts,
        })
    }

    /// The candidate `serialize` would hand the value to: the first route
    /// claiming its kind whose `can_serialize` says yes. Failures are
    /// counted and skipped as in `serialize`; nothing is allocated for
    /// declining candidates.
    pub fn first_acceptor(&self, value: &Value) -> Option<&Arc<Route>> {
        let call_value = CallValue::new(value);
        self.for_kind(value.kind()).iter().find(|route| {
            match route.serializer.can_serialize(&call_value) {
                Ok(accepted) => accepted,
                Err(error) => {
                    route.fail("can_serialize", error);
                    false
                }
            }
        })
    }

    /// Asks each candidate `can_serialize`, stopping at the first yes:
    /// what `stowage explain --json VALUE` prints.
    pub fn explain_value(&self, value: &Value) -> Vec<Attempt> {
        let call_value = CallValue::new(value);
        explain(self.for_kind(value.kind()), "can_serialize", |route| {
            route.serializer.can_serialize(&call_value)
        })
    }

    /// Asks each active plugin to `sniff` `prefix`, stopping at the first
    /// yes: the order `put FILE` and `explain FILE` use.
    pub fn explain_file(&self, prefix: &[u8]) -> Vec<Attempt> {
        explain(&self.ordered, "sniff", |route| {
            route.serializer.sniff(prefix)
        })
    }

    /// Ingests a file with the first plugin whose `sniff` claims it and
    /// whose `ingest` succeeds (or with `only`, if given).
    pub fn ingest<S: BlobSink>(
        &self,
        file: &[u8],
        prefix: &[u8],
        only: Option<&str>,
        call_options: &[(String, String)],
        new_sink: &mut dyn FnMut(&Route) -> Result<S, String>,
    ) -> Result<Dispatched<(S, Written)>, DispatchError> {
        let mut attempts = Vec::new();
        let mut skipped = Vec::new();
        let candidates: Vec<&Arc<Route>> = match only {
            Some(name) => {
                let route = self.route(name).ok_or_else(|| DispatchError::NotActive {
                    plugin: name.to_owned(),
                })?;
                vec![route]
            }
            None => self.ordered.iter().collect(),
        };
        for route in candidates {
            let answer = 'attempt: {
                if only.is_none() {
                    match route.serializer.sniff(prefix) {
                        Ok(true) => {}
                        Ok(false) => break 'attempt Answer::Declined,
                        Err(error) => {
                            let (error, skip) = route.fail("sniff", error);
                            skipped.push(skip);
                            break 'attempt Answer::Failed(error);
                        }
                    }
                }
                // Recognised (or named): an option it does not take is its
                // refusal, not counted as a dispatch failure.
                let options = match route.options(call_options) {
                    Ok(options) => options,
                    Err(why) => {
                        break 'attempt Answer::Refused(CallError::new(
                            ErrorKind::InvalidInput,
                            why,
                        ))
                    }
                };
                let sink = new_sink(route).map_err(DispatchError::Sink)?;
                let mut counting = CountingSink {
                    inner: sink,
                    blobs: 0,
                };
                let result = route
                    .serializer
                    .ingest(file, &options, &mut counting)
                    .and_then(|written| match counting.blobs {
                        0 => Err(CallError::new(ErrorKind::Internal, "ingest wrote no blob")),
                        _ => Ok(written),
                    });
                match result {
                    Ok(written) => {
                        return Ok(Dispatched {
                            route: Arc::clone(route),
                            output: (counting.inner, written),
                            skipped,
                        })
                    }
                    Err(error) => {
                        let (error, skip) = route.fail("ingest", error);
                        skipped.push(skip);
                        Answer::Refused(error)
                    }
                }
            };
            attempts.push(Attempt {
                plugin: route.name.clone(),
                priority: route.priority,
                answer,
            });
        }
        Err(DispatchError::NoSniffer { attempts })
    }

    /// Candidates that read `meta.encoding`, in dispatch order.
    fn readers<'t>(&'t self, meta: &'t ArtifactMeta) -> impl Iterator<Item = &'t Arc<Route>> + 't {
        self.ordered
            .iter()
            .filter(move |r| r.serializer.info().reads.contains(&meta.encoding))
    }

    /// Runs `call` on the first reader of the artifact's encoding whose
    /// `can_deserialize` accepts it and whose call succeeds.
    pub fn with_reader<T>(
        &self,
        meta: &ArtifactMeta,
        writer: (&str, &str),
        entry: &str,
        call: &mut dyn FnMut(&dyn Serializer) -> Result<T, CallError>,
    ) -> Result<Dispatched<T>, DispatchError> {
        let mut attempts = Vec::new();
        let mut skipped = Vec::new();
        for route in self.readers(meta) {
            let answer = match route.serializer.can_deserialize(meta) {
                Ok(false) => Answer::Declined,
                Err(error) => {
                    let (error, skip) = route.fail("can_deserialize", error);
                    skipped.push(skip);
                    Answer::Failed(error)
                }
                Ok(true) => match call(route.serializer.as_ref()) {
                    Ok(output) => {
                        return Ok(Dispatched {
                            route: Arc::clone(route),
                            output,
                            skipped,
                        })
                    }
                    Err(error) => {
                        let (error, skip) = route.fail(entry, error);
                        skipped.push(skip);
                        Answer::Refused(error)
                    }
                },
            };
            attempts.push(Attempt {
                plugin: route.name.clone(),
                priority: route.priority,
                answer,
            });
        }
        Err(DispatchError::NoDeserializer {
            encoding: meta.encoding.clone(),
            writer: writer.0.to_owned(),
            writer_version: writer.1.to_owned(),
            attempts,
        })
    }

    /// Deserializes an artifact.
    pub fn deserialize(
        &self,
        meta: &ArtifactMeta,
        writer: (&str, &str),
        blobs: &[(String, Buffer)],
    ) -> Result<Dispatched<Value>, DispatchError> {
        self.with_reader(meta, writer, "deserialize", &mut |s| {
            s.deserialize(meta, blobs)
        })
    }
}

/// Asks `routes` in order until one says yes; later ones are "not asked".
/// Failures are counted like any dispatch failure.
fn explain(
    routes: &[Arc<Route>],
    entry: &str,
    mut ask: impl FnMut(&Route) -> Result<bool, CallError>,
) -> Vec<Attempt> {
    let mut won = false;
    routes
        .iter()
        .map(|route| {
            let answer = if won {
                Answer::NotAsked
            } else {
                match ask(route) {
                    Ok(true) => {
                        won = true;
                        Answer::Accepted
                    }
                    Ok(false) => Answer::Declined,
                    Err(error) => Answer::Failed(route.fail(entry, error).0),
                }
            };
            Attempt {
                plugin: route.name.clone(),
                priority: route.priority,
                answer,
            }
        })
        .collect()
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
