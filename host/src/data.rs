//! Saving and loading artifacts: the glue between dispatch
//! ([`crate::registry`]) and the store ([`crate::store`]).
//!
//! A save dispatches the value (or file) to a serializer whose blobs stream
//! straight into a store writer, then commits the record in one durable
//! step; a load reads the blobs (re-hashed, or memory-mapped unverified) and
//! dispatches them to the first active reader of the encoding.
//!
//! Invariants: the store never calls a plugin, and a failed save never
//! leaves a record (each attempt gets a fresh writer; only the winner's is
//! committed). `load` never returns bytes it has not re-hashed.
//!
//! Decision: blobs of mmap-readable encodings (safetensors, Arrow IPC file)
//! are stored raw, one file each; everything else is compressible.
//! Decision: the host records `source` in `serializer_info` (unless the
//! plugin set it): the file a `put` read, `-` for stdin, or `api` for values
//! saved through the library.
//! Decision: an export streams to its output ([`Host::export_artifact`]):
//! memory stays flat whatever the artifact's size. The price: a reader that
//! fails after writing part of the file is not followed by the next reader
//! (the output cannot be taken back); the export fails naming it.

use std::io::Write;
use std::sync::Arc;

use stowage_plugin_api::encodings::{ARROW_IPC_FILE, SAFETENSORS};

use crate::registry::{DispatchError, Route, Skipped};
use crate::serializer::{ArtifactMeta, BlobSink, CallError, Written};
use crate::store::{
    ArtifactWriter, BlobData, BlobLayout, PendingArtifact, Record, RecordMeta, Store, Verify,
};
use crate::value::{Buffer, Value};
use crate::{Action, Error, Host};

/// Blob names a single artifact may have at most (checked before commit).
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

/// A store writer seen as a [`BlobSink`], with the layout the serializer's
/// encoding calls for.
struct StoreSink<'s> {
    writer: ArtifactWriter<'s>,
    layout: BlobLayout,
}

impl BlobSink for StoreSink<'_> {
    fn begin_blob(&mut self, name: &str) -> Result<(), String> {
        if self.writer.blob_count() >= MAX_BLOBS_PER_ARTIFACT {
            return Err(format!(
                "more than {MAX_BLOBS_PER_ARTIFACT} blobs in one artifact"
            ));
        }
        self.writer
            .begin_blob(name, self.layout)
            .map_err(|e| e.to_string())
    }
    fn write(&mut self, bytes: &[u8]) -> Result<(), String> {
        self.writer.write(bytes).map_err(|e| e.to_string())
    }
}

fn layout_for(route: &Route) -> BlobLayout {
    let writes = &route.serializer.info().writes;
    if writes
        .iter()
        .any(|e| e == SAFETENSORS || e == ARROW_IPC_FILE)
    {
        BlobLayout::Raw
    } else {
        BlobLayout::Compressible
    }
}

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

fn finish(
    sink: StoreSink<'_>,
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
    };
    Ok(sink.writer.finish(meta)?)
}

impl Host {
    /// The artifact store (opened on first use at `[store] dir` or the
    /// override in [`crate::HostOptions::store_dir`]).
    pub fn store(&self) -> Result<Arc<Store>, Error> {
        let mut slot = self
            .store
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(store) = slot.as_ref() {
            return Ok(Arc::clone(store));
        }
        let dir = match &self.options.store_dir {
            Some(dir) => dir.clone(),
            None => self.snapshot().config.store_dir.clone(),
        };
        let store = Arc::new(Store::open(&dir)?);
        *slot = Some(Arc::clone(&store));
        Ok(store)
    }

    fn prepare_value(
        &self,
        store: &Store,
        name: &str,
        value: &Value,
        options: &[(String, String)],
        source: &str,
    ) -> Result<(PendingArtifact, Vec<Skipped>), Error> {
        let mut new_sink = |route: &Route| -> Result<StoreSink<'_>, String> {
            let writer = store.writer(name).map_err(|e| e.to_string())?;
            Ok(StoreSink {
                writer,
                layout: layout_for(route),
            })
        };
        let dispatched = self
            .snapshot()
            .table
            .serialize(value, options, &mut new_sink)
            .map_err(|e| Error::storing(name, e))?;
        let (sink, written) = dispatched.output;
        let pending = finish(sink, &dispatched.route, written, source)?;
        Ok((pending, dispatched.skipped))
    }

    /// Serializes `value` with the best serializer and stores it as `name`
    /// (replacing any older artifact of that name once committed).
    pub fn save(
        &self,
        name: &str,
        value: &Value,
        options: &[(String, String)],
    ) -> Result<Saved, Error> {
        self.save_from(name, value, options, "api")
    }

    /// [`Host::save`], recording `source` in `serializer_info` (unless the
    /// serializer set it): what `stowage put --json FILE` uses, with the
    /// file's path (`-` for stdin), so the value goes through the same
    /// priority dispatch as any saved value.
    pub fn save_from(
        &self,
        name: &str,
        value: &Value,
        options: &[(String, String)],
        source: &str,
    ) -> Result<Saved, Error> {
        let store = self.store()?;
        store.check_write(name)?;
        let (pending, skipped) = self.prepare_value(&store, name, value, options, source)?;
        let record = commit_one(&store, pending)?;
        Ok(Saved { record, skipped })
    }

    /// Saves many values with one durable commit. All or nothing: if one
    /// fails, none is committed and the error names it.
    pub fn save_many(
        &self,
        items: &[(&str, &Value)],
        options: &[(String, String)],
    ) -> Result<Vec<Record>, Error> {
        let store = self.store()?;
        store.check_writable()?;
        let mut pending = Vec::with_capacity(items.len());
        for (name, value) in items {
            store.check_write(name)?;
            let (artifact, _) = self
                .prepare_value(&store, name, value, options, "api")
                .map_err(|e| match e {
                    named @ Error::Artifact { .. } => named,
                    other => Error::Artifact {
                        action: Action::Store,
                        name: (*name).to_owned(),
                        source: Box::new(other),
                    },
                })?;
            pending.push(artifact);
        }
        Ok(store.commit(pending)?)
    }

    /// Stores a file in some plugin's standard format: the first active
    /// plugin whose `sniff` claims it ingests it (or `only`, if named).
    /// `source` is recorded in `serializer_info`.
    pub fn put_file(
        &self,
        name: &str,
        file: &[u8],
        only: Option<&str>,
        options: &[(String, String)],
        source: &str,
    ) -> Result<Saved, Error> {
        self.put_file_with(name, file, only, options, source, &|_| {})
    }

    /// [`Host::put_file`], reporting bytes written as they stream (progress).
    pub fn put_file_with(
        &self,
        name: &str,
        file: &[u8],
        only: Option<&str>,
        options: &[(String, String)],
        source: &str,
        progress: &dyn Fn(u64),
    ) -> Result<Saved, Error> {
        let store = self.store()?;
        store.check_write(name)?;
        if file.is_empty() {
            let input = source.to_owned();
            return Err(Error::storing(name, Error::EmptyInput { input }));
        }
        let prefix = &file[..file.len().min(stowage_plugin_api::SNIFF_PREFIX_LEN)];
        let mut new_sink = |route: &Route| -> Result<Progress<'_, '_>, String> {
            let writer = store.writer(name).map_err(|e| e.to_string())?;
            Ok(Progress {
                sink: StoreSink {
                    writer,
                    layout: layout_for(route),
                },
                written: 0,
                report: progress,
            })
        };
        let dispatched = self
            .snapshot()
            .table
            .ingest(file, prefix, only, options, &mut new_sink)
            .map_err(|e| Error::storing(name, e))?;
        let (sink, written) = dispatched.output;
        let pending = finish(sink.sink, &dispatched.route, written, source)?;
        let record = commit_one(&store, pending)?;
        Ok(Saved {
            record,
            skipped: dispatched.skipped,
        })
    }

    /// The record and blobs of `name`, re-hashed (`verify`) or mapped as-is.
    pub fn load_raw(
        &self,
        name: &str,
        verify: bool,
    ) -> Result<(Record, Vec<(String, BlobData)>), Error> {
        let store = self.store()?;
        let record = store.get(name)?;
        let mode = if verify { Verify::Hash } else { Verify::None };
        let data = store.read_blobs(&record, mode)?;
        let blobs = record
            .blobs
            .iter()
            .map(|b| b.name.clone())
            .zip(data)
            .collect();
        Ok((record, blobs))
    }

    fn buffers(&self, name: &str, verify: bool) -> Result<(Record, Vec<(String, Buffer)>), Error> {
        let (record, blobs) = self.load_raw(name, verify)?;
        let buffers = blobs
            .into_iter()
            .map(|(name, data)| (name, Buffer::from_owner(data)))
            .collect();
        Ok((record, buffers))
    }

    fn load_with(&self, name: &str, verify: bool) -> Result<Loaded, Error> {
        let (record, blobs) = self.buffers(name, verify)?;
        let dispatched = self
            .deserialize(&artifact_meta(&record), writer_of(&record), &blobs)
            .map_err(|e| Error::loading(name, e))?;
        Ok(Loaded {
            value: dispatched.output,
            skipped: dispatched.skipped,
            record,
        })
    }

    /// Loads `name`, re-hashing every blob first: corrupt data is an error,
    /// never a value.
    pub fn load(&self, name: &str) -> Result<Loaded, Error> {
        self.load_with(name, true)
    }

    /// Loads `name` without re-hashing: raw blobs are memory-mapped, so this
    /// is O(1) in their size and zero-copy where the reader allows.
    /// **Unverified**: a corrupted blob is handed to the reader as it is.
    pub fn load_mapped(&self, name: &str) -> Result<Loaded, Error> {
        self.load_with(name, false)
    }

    /// Writes `name` in its standard file format to `out` (verified first),
    /// streaming: the exporter's bytes go straight to `out`, never through
    /// a buffer of the whole file.
    ///
    /// A reader that fails before writing anything is skipped and the next
    /// one tried, as in every dispatch; once bytes have reached `out` (or a
    /// write to it failed) no other reader is tried, since `out` already
    /// holds part of a file: the export fails naming the reader. Callers
    /// writing to a file write to a temp file they discard on error.
    pub fn export_artifact(
        &self,
        name: &str,
        out: &mut dyn Write,
    ) -> Result<(Record, Vec<Skipped>), Error> {
        let (record, blobs) = self.buffers(name, true)?;
        let meta = artifact_meta(&record);
        let mut out = Touched {
            inner: out,
            touched: false,
        };
        let mut spoiled: Option<(String, CallError)> = None;
        let dispatched = self
            .snapshot()
            .table
            .with_reader(&meta, writer_of(&record), "export", &mut |serializer| {
                if spoiled.is_some() {
                    // Stop the dispatch without asking (or blaming) anyone
                    // else; the failure is reported below.
                    return Ok(());
                }
                let result = serializer.export(&meta, &blobs, &mut out);
                if let Err(error) = &result {
                    if out.touched {
                        spoiled = Some((serializer.info().name.clone(), error.clone()));
                        return Ok(());
                    }
                }
                result
            })
            .map_err(|e| Error::loading(name, e))?;
        if let Some((plugin, error)) = spoiled {
            return Err(Error::loading(
                name,
                DispatchError::Sink(format!(
                    "{plugin} failed after writing part of the file: {error}"
                )),
            ));
        }
        Ok((record, dispatched.skipped))
    }

    /// The WIRE rendering of `name` (verified first).
    pub fn describe_artifact(&self, name: &str) -> Result<(String, Vec<Skipped>), Error> {
        let (record, blobs) = self.buffers(name, true)?;
        let dispatched = self
            .describe(&artifact_meta(&record), writer_of(&record), &blobs)
            .map_err(|e| Error::loading(name, e))?;
        Ok((dispatched.output, dispatched.skipped))
    }
}

/// Commits one artifact durably and returns its record.
fn commit_one(store: &Store, pending: PendingArtifact) -> Result<Record, Error> {
    store
        .commit(vec![pending])?
        .into_iter()
        .next()
        .ok_or_else(|| {
            Error::Dispatch(crate::DispatchError::Sink(
                "commit returned no record".into(),
            ))
        })
}

/// `(serializer, version)` that wrote a record, for "written by" messages.
fn writer_of(record: &Record) -> (&str, &str) {
    (&record.meta.serializer, &record.meta.serializer_version)
}

/// A store sink that reports progress.
struct Progress<'s, 'p> {
    sink: StoreSink<'s>,
    written: u64,
    report: &'p dyn Fn(u64),
}

impl BlobSink for Progress<'_, '_> {
    fn begin_blob(&mut self, name: &str) -> Result<(), String> {
        self.sink.begin_blob(name)
    }
    fn write(&mut self, bytes: &[u8]) -> Result<(), String> {
        self.sink.write(bytes)?;
        self.written += bytes.len() as u64;
        (self.report)(self.written);
        Ok(())
    }
}

/// A writer that notes whether anything was written (or tried).
struct Touched<'w> {
    inner: &'w mut dyn Write,
    touched: bool,
}

impl Write for Touched<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if !buf.is_empty() {
            self.touched = true;
        }
        self.inner.write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}
