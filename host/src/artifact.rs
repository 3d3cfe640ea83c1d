//! Saving and loading artifacts: the glue between dispatch
//! ([`crate::registry`]) and the store ([`crate::store`]). [`crate::Host`]'s
//! artifact methods delegate here.
//!
//! A save dispatches the value (or file) to a serializer whose blobs stream
//! straight into a store writer, then commits the record in one durable
//! step; a load reads the blobs (re-hashed, or memory-mapped unverified) and
//! dispatches them to the first active reader of the encoding.
//!
//! Invariants: the store never calls a plugin, and a failed save never
//! leaves a record (each attempt gets a fresh writer; only the winner's is
//! committed). `load` never returns bytes it has not re-hashed. A failure
//! of the host's own side — the store cannot take a blob, the output cannot
//! take an export — is reported as itself ([`Error::Store`],
//! [`Error::Output`]), never counted against the serializer that was
//! writing, and no other serializer is tried.
//!
//! Decision: blobs of mmap-readable encodings (safetensors, Arrow IPC file)
//! are stored raw, one file each; everything else is compressible.
//! Decision: the host records `source` in `serializer_info` (unless the
//! plugin set it): the file a `put` read, `-` for stdin, or `api` for values
//! saved through the library.
//! Decision: an export streams to its output: memory stays flat whatever
//! the artifact's size. The price: a reader that fails after writing part
//! of the file is not followed by the next reader (the output cannot be
//! taken back); the export fails naming it
//! ([`DispatchError::PartialExport`]).

use std::io::{self, Write};

use stowage_plugin_api::encodings::{ARROW_IPC_FILE, SAFETENSORS};

use crate::composite::{FileRef, Skeleton, COMPOSITE_NAME};
use crate::registry::{
    DispatchError, DispatchTable, Dispatched, Failure, PartSink, Route, Skipped, Work, WrittenBy,
};
use crate::serializer::{ArtifactMeta, BlobSink, Written};
use crate::store::{
    ArtifactWriter, BlobData, BlobLayout, PendingArtifact, Record, RecordMeta, Store, StoreError,
    Verify,
};
use crate::text::quote_capped;
use crate::value::{Buffer, Value};
use crate::{Action, Error};

/// Blob names a single artifact may have at most (checked while writing).
pub const MAX_BLOBS_PER_ARTIFACT: usize = 4096;

/// A committed save.
#[derive(Debug, Clone)]
pub struct Saved {
    /// The record as stored.
    pub record: Record,
    /// Candidates that failed before the winner.
    pub skipped: Vec<Skipped>,
}

/// A loaded artifact.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The value.
    pub value: Value,
    /// Its record.
    pub record: Record,
    /// Readers that failed before the one that succeeded.
    pub skipped: Vec<Skipped>,
}

/// A file to store: its bytes, the plugin it must go to (if named), and
/// what `serializer_info.source` records.
pub(crate) struct Input<'a> {
    pub file: &'a [u8],
    pub only: Option<&'a str>,
    pub source: &'a str,
}

/// Dispatches `value` and stores it as `name`.
pub(crate) fn save(
    table: &DispatchTable,
    store: &Store,
    name: &str,
    value: &Value,
    options: &[(String, String)],
    source: &str,
    caller_type: Option<&str>,
) -> Result<Saved, Error> {
    store.check_write(name)?;
    let (mut pending, skipped) = prepare_value(table, store, name, value, options, source)?;
    pending.meta.caller_type = caller_type.map(str::to_owned);
    let record = commit_one(store, pending)?;
    Ok(Saved { record, skipped })
}

/// Dispatches every value (with its caller type, if any), then commits
/// them all at once or none; each save keeps its skipped candidates.
pub(crate) fn save_many(
    table: &DispatchTable,
    store: &Store,
    items: &[(&str, &Value, Option<&str>)],
    options: &[(String, String)],
) -> Result<Vec<Saved>, Error> {
    store.check_writable()?;
    let mut pending = Vec::with_capacity(items.len());
    let mut skipped = Vec::with_capacity(items.len());
    for (name, value, caller_type) in items {
        store.check_write(name)?;
        let (mut artifact, skips) = prepare_value(table, store, name, value, options, "api")
            .map_err(|e| match e {
                named @ Error::Artifact { .. } => named,
                other => Error::Artifact {
                    action: Action::Store,
                    name: (*name).to_owned(),
                    source: Box::new(other),
                },
            })?;
        artifact.meta.caller_type = caller_type.map(str::to_owned);
        pending.push(artifact);
        skipped.push(skips);
    }
    let records = store.commit(pending)?;
    Ok(records
        .into_iter()
        .zip(skipped)
        .map(|(record, skipped)| Saved { record, skipped })
        .collect())
}

/// Ingests `input` with the plugin whose `sniff` claims it (or the named
/// one) and stores it as `name`.
pub(crate) fn put_file(
    table: &DispatchTable,
    store: &Store,
    name: &str,
    input: &Input<'_>,
    options: &[(String, String)],
    progress: &dyn Fn(u64),
) -> Result<Saved, Error> {
    store.check_write(name)?;
    if input.file.is_empty() {
        let input = input.source.to_owned();
        return Err(Error::storing(name, Error::EmptyInput { input }));
    }
    let file = input.file;
    let prefix = &file[..file.len().min(stowage_plugin_api::SNIFF_PREFIX_LEN)];
    let mut new_sink = |route: &Route| StoreSink::new(store, name, route, progress);
    let dispatched = table
        .ingest(file, prefix, input.only, options, &mut new_sink)
        .map_err(|e| Error::storing(name, e))?;
    let (sink, written) = dispatched.output;
    let pending = sink.finish(&dispatched.route, written, input.source)?;
    let record = commit_one(store, pending)?;
    Ok(Saved {
        record,
        skipped: dispatched.skipped,
    })
}

/// Stores a composite read from a directory (`put NAME DIR`): the
/// skeleton tree and each part file, ingested by the plugin that
/// recognises it (see [`DispatchTable::ingest_composite`]).
pub(crate) fn put_composite(
    table: &DispatchTable,
    store: &Store,
    name: &str,
    kind: crate::value::Kind,
    tree: &rmpv::Value,
    files: &[(FileRef, &[u8])],
    source: &str,
) -> Result<Saved, Error> {
    store.check_write(name)?;
    let mut new_sink = |route: &Route| StoreSink::new(store, name, route, &|_| {});
    let dispatched = table
        .ingest_composite(kind, tree, files, &mut new_sink)
        .map_err(|e| Error::storing(name, e))?;
    let (sink, written) = dispatched.output;
    let pending = sink.finish(&dispatched.route, written, source)?;
    let record = commit_one(store, pending)?;
    Ok(Saved {
        record,
        skipped: dispatched.skipped,
    })
}

/// The record and blobs of `name`, re-hashed or mapped as `verify` says.
pub(crate) fn load_raw(
    store: &Store,
    name: &str,
    verify: Verify,
) -> Result<(Record, Vec<(String, BlobData)>), Error> {
    let record = store.get(name)?;
    let data = store.read_blobs(&record, verify)?;
    let blobs = record
        .blobs
        .iter()
        .map(|b| b.name.clone())
        .zip(data)
        .collect();
    Ok((record, blobs))
}

/// Loads `name` through the first reader of its encoding.
pub(crate) fn load(
    table: &DispatchTable,
    store: &Store,
    name: &str,
    verify: Verify,
) -> Result<Loaded, Error> {
    let record = store.get(name)?;
    let data = store.read_blobs(&record, verify)?;
    deserialize(table, record, data)
}

/// Loads each of `names` (all or nothing, in order): the records looked
/// up together, then every blob read together, so a store on the network
/// makes its requests concurrently and fetches a pack's wanted ranges
/// once, instead of a round of requests per artifact.
pub(crate) fn load_many(
    table: &DispatchTable,
    store: &Store,
    names: &[&str],
    verify: Verify,
) -> Result<Vec<Loaded>, Error> {
    let records = store.get_many(names)?;
    let data = store.read_many(&records, verify)?;
    records
        .into_iter()
        .zip(data)
        .map(|(record, data)| deserialize(table, record, data))
        .collect()
}

/// `record` read back from its blobs' `data` by the first reader of its
/// encoding.
fn deserialize(
    table: &DispatchTable,
    record: Record,
    data: Vec<BlobData>,
) -> Result<Loaded, Error> {
    let blobs = named_buffers(&record, data);
    let dispatched = table
        .deserialize(&artifact_meta(&record), &written_by(&record), &blobs)
        .map_err(|e| Error::loading(&record.name, e))?;
    Ok(Loaded {
        value: dispatched.output,
        skipped: dispatched.skipped,
        record,
    })
}

/// Streams `name`'s standard file to `out` (verified first).
pub(crate) fn export_artifact(
    table: &DispatchTable,
    store: &Store,
    name: &str,
    out: &mut dyn Write,
) -> Result<(Record, Vec<Skipped>), Error> {
    let (record, blobs) = buffers(store, name, Verify::Hash)?;
    let dispatched = export(
        table,
        &artifact_meta(&record),
        &written_by(&record),
        &blobs,
        out,
    )
    .map_err(|e| Error::loading(name, e))?;
    Ok((record, dispatched.skipped))
}

/// `name`'s WIRE rendering (verified first).
pub(crate) fn describe_artifact(
    table: &DispatchTable,
    store: &Store,
    name: &str,
) -> Result<(String, Vec<Skipped>), Error> {
    let (record, blobs) = buffers(store, name, Verify::Hash)?;
    let dispatched = describe(table, &artifact_meta(&record), &written_by(&record), &blobs)
        .map_err(|e| Error::loading(name, e))?;
    Ok((dispatched.output, dispatched.skipped))
}

/// Streams an artifact's standard file to `out` with the first reader that
/// succeeds (see the module's decision on partial output).
pub(crate) fn export(
    table: &DispatchTable,
    meta: &ArtifactMeta,
    writer: &WrittenBy,
    blobs: &[(String, Buffer)],
    out: &mut dyn Write,
) -> Result<Dispatched<()>, Error> {
    let mut out = WatchedOutput {
        inner: out,
        touched: false,
        failure: None,
    };
    let dispatched = table.with_reader(meta, writer, "export", &mut |serializer| {
        let result = serializer.export(meta, blobs, &mut out);
        if let Some(error) = out.failure.take() {
            return Work::Stopped(Failure::Output(error));
        }
        match result {
            Err(error) if out.touched => {
                Work::Stopped(Failure::NoWinner(DispatchError::PartialExport {
                    plugin: serializer.info().name.clone(),
                    error,
                }))
            }
            result => Work::from(result),
        }
    })?;
    Ok(dispatched)
}

/// An artifact's WIRE rendering; a reader without `describe` (a 1.0
/// plugin) gets the generic one.
pub(crate) fn describe(
    table: &DispatchTable,
    meta: &ArtifactMeta,
    writer: &WrittenBy,
    blobs: &[(String, Buffer)],
) -> Result<Dispatched<String>, Error> {
    let mut part_skipped = Vec::new();
    let mut dispatched =
        table.with_reader(meta, writer, "describe", &mut |serializer| {
            if serializer.info().name == COMPOSITE_NAME {
                return describe_composite(table, meta, blobs, &mut part_skipped);
            }
            Work::from(serializer.describe(meta, blobs).map(|rendering| {
                rendering.unwrap_or_else(|| crate::loader::generic_description(meta))
            }))
        })?;
    dispatched.skipped.extend(part_skipped);
    Ok(dispatched)
}

/// A composite's WIRE rendering: a header line, one line per part (its own
/// reader's rendering, or why it has none: a part whose plugin is missing
/// is named, the others still shown), then the skeleton as JSON.
fn describe_composite(
    table: &DispatchTable,
    meta: &ArtifactMeta,
    blobs: &[(String, Buffer)],
    skipped: &mut Vec<Skipped>,
) -> Work<String> {
    let skeleton = match Skeleton::decode(blobs) {
        Ok(skeleton) => skeleton,
        Err(error) => return Work::Failed(error),
    };
    let mut out = format!(
        "{} ({} v{}), {} parts:",
        meta.obj_type,
        meta.encoding,
        meta.encoding_version,
        skeleton.parts.len()
    );
    for part in &skeleton.parts {
        let (part_meta, part_blobs) = Skeleton::part_input(part, blobs);
        let writer = WrittenBy::new(&part.serializer, &part.serializer_version);
        let rendering = match describe(table, &part_meta, &writer, &part_blobs) {
            Ok(dispatched) => {
                skipped.extend(dispatched.skipped);
                dispatched.output
            }
            Err(error) => format!("cannot describe: {error}"),
        };
        out.push_str(&format!(
            "\n  {}: {}",
            part.path,
            rendering.replace('\n', "\n    ")
        ));
    }
    let json = skeleton.to_json(&|_, part| serde_json::json!({ "$part": part.path }));
    let json = match json {
        Ok(json) => json.to_string(),
        Err(error) => format!("({error})"),
    };
    out.push_str(&format!(
        "\nskeleton: {}",
        quote_capped(&json, SHOWN_SKELETON)
    ));
    Work::Done(out)
}

/// Characters of a composite's skeleton `show` prints.
const SHOWN_SKELETON: usize = 400;

/// The metadata a reader sees for a record.
pub fn artifact_meta(record: &Record) -> ArtifactMeta {
    ArtifactMeta {
        obj_type: record.meta.obj_type.clone(),
        encoding: record.meta.encoding.clone(),
        encoding_version: record.meta.encoding_version,
        info: record.meta.serializer_info.clone(),
        blobs: record
            .blobs
            .iter()
            .map(|b| (b.name.clone(), b.size))
            .collect(),
    }
}

/// Who wrote `record`, for "written by" messages.
pub fn written_by(record: &Record) -> WrittenBy {
    WrittenBy {
        serializer: record.meta.serializer.clone(),
        version: record.meta.serializer_version.clone(),
    }
}

fn prepare_value(
    table: &DispatchTable,
    store: &Store,
    name: &str,
    value: &Value,
    options: &[(String, String)],
    source: &str,
) -> Result<(PendingArtifact, Vec<Skipped>), Error> {
    let mut new_sink = |route: &Route| StoreSink::new(store, name, route, &|_| {});
    let dispatched = table
        .serialize(value, options, &mut new_sink)
        .map_err(|e| Error::storing(name, e))?;
    let (sink, written) = dispatched.output;
    let pending = sink.finish(&dispatched.route, written, source)?;
    Ok((pending, dispatched.skipped))
}

fn buffers(
    store: &Store,
    name: &str,
    verify: Verify,
) -> Result<(Record, Vec<(String, Buffer)>), Error> {
    let record = store.get(name)?;
    let data = store.read_blobs(&record, verify)?;
    let buffers = named_buffers(&record, data);
    Ok((record, buffers))
}

/// Each blob's bytes beside its name, as readers take them.
fn named_buffers(record: &Record, data: Vec<BlobData>) -> Vec<(String, Buffer)> {
    record
        .blobs
        .iter()
        .map(|blob| blob.name.clone())
        .zip(data.into_iter().map(Buffer::from_owner))
        .collect()
}

/// Commits one artifact durably and returns its record.
fn commit_one(store: &Store, pending: PendingArtifact) -> Result<Record, Error> {
    let mut records = store.commit(vec![pending])?;
    Ok(records
        .pop()
        .expect("Store::commit returns one record per artifact it commits"))
}

/// A store writer seen as a [`BlobSink`]: the layout the serializer's
/// encoding calls for, the per-artifact blob limit, progress reports, and
/// the store's own failures kept typed for the dispatch
/// ([`BlobSink::take_host_failure`]).
struct StoreSink<'s, 'p> {
    writer: ArtifactWriter<'s>,
    layout: BlobLayout,
    failure: Option<StoreError>,
    written: u64,
    progress: &'p dyn Fn(u64),
}

impl<'s, 'p> StoreSink<'s, 'p> {
    fn new(
        store: &'s Store,
        name: &str,
        route: &Route,
        progress: &'p dyn Fn(u64),
    ) -> Result<Self, Failure> {
        let writes = &route.serializer.info().writes;
        let layout = if writes
            .iter()
            .any(|e| e == SAFETENSORS || e == ARROW_IPC_FILE)
        {
            BlobLayout::Raw
        } else {
            BlobLayout::Compressible
        };
        Ok(StoreSink {
            writer: store.writer(name)?,
            layout,
            failure: None,
            written: 0,
            progress,
        })
    }

    /// The serializer is told `error`'s message; unless the fault is its
    /// own (a bad or repeated blob name, bytes before a blob), the error is
    /// also kept for the dispatch to report.
    fn judge(&mut self, error: StoreError) -> String {
        let message = error.to_string();
        let serializers_fault = matches!(
            error,
            StoreError::InvalidBlobName { .. }
                | StoreError::DuplicateBlob { .. }
                | StoreError::NoBlobInProgress { .. }
        );
        if !serializers_fault && self.failure.is_none() {
            self.failure = Some(error);
        }
        message
    }

    fn finish(
        self,
        route: &Route,
        written: Written,
        source: &str,
    ) -> Result<PendingArtifact, Error> {
        let mut info = written.info;
        if !info.iter().any(|(k, _)| k == "source") {
            info.push(("source".to_owned(), source.to_owned()));
        }
        let meta = RecordMeta {
            obj_type: written.obj_type,
            encoding: written.encoding,
            encoding_version: written.encoding_version,
            serializer: route.name.clone(),
            serializer_version: route.serializer.info().version.to_string(),
            serializer_info: info,
            caller_type: None,
            parts: written.parts,
        };
        Ok(self.writer.finish(meta)?)
    }
}

impl BlobSink for StoreSink<'_, '_> {
    fn begin_blob(&mut self, name: &str) -> Result<(), String> {
        if self.writer.blob_count() >= MAX_BLOBS_PER_ARTIFACT {
            return Err(format!(
                "more than {MAX_BLOBS_PER_ARTIFACT} blobs in one artifact"
            ));
        }
        let result = self.writer.begin_blob(name, self.layout);
        result.map_err(|e| self.judge(e))
    }

    fn write(&mut self, bytes: &[u8]) -> Result<(), String> {
        let result = self.writer.write(bytes);
        result.map_err(|e| self.judge(e))?;
        self.written += bytes.len() as u64;
        (self.progress)(self.written);
        Ok(())
    }

    fn take_host_failure(&mut self) -> Option<StoreError> {
        self.failure.take()
    }
}

impl PartSink for StoreSink<'_, '_> {
    /// The composite's skeleton is written after its parts, so one blob is
    /// kept for it: the limit counts every part's blobs plus the skeleton.
    fn adopt(&mut self, prefix: &str, part: Self) -> Result<Vec<(String, String)>, Failure> {
        let total = self.writer.blob_count() + part.writer.blob_count() + 1;
        if total > MAX_BLOBS_PER_ARTIFACT {
            return Err(DispatchError::BlobLimit {
                limit: MAX_BLOBS_PER_ARTIFACT,
            }
            .into());
        }
        Ok(self.writer.adopt(prefix, part.writer)?)
    }
}

/// The output of an export: notes whether anything reached it (after which
/// no other reader may be tried) and keeps its own failure typed, so a full
/// disk is reported as the output's fault, not the reader's.
struct WatchedOutput<'w> {
    inner: &'w mut dyn Write,
    touched: bool,
    failure: Option<io::Error>,
}

impl Write for WatchedOutput<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if !buf.is_empty() {
            self.touched = true;
        }
        self.inner.write(buf).inspect_err(|e| self.keep(e))
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush().inspect_err(|e| self.keep(e))
    }
}

impl WatchedOutput<'_> {
    fn keep(&mut self, error: &io::Error) {
        if self.failure.is_none() && error.kind() != io::ErrorKind::Interrupted {
            self.failure = Some(io::Error::new(error.kind(), error.to_string()));
        }
    }
}
