//! A committed record as the Python dict `save`/`save_many` return: the
//! same keys, order and values as `Record::to_json` (the `inspect --json`
//! form), built directly instead of through a `serde_json::Value` tree.
//!
//! Why: a `save_many` of 10,000 small dicts spent about as long turning
//! records into dicts through JSON (a `Value` tree per record, then a
//! Python object per node, every key a fresh `str`) as the host spent
//! storing them. Keys here are interned once (`intern!`), and a value
//! string equal to the previous record's value of the same field (the
//! obj_type, caller_type, encoding, serializer, version, storage,
//! creation time… of a batch of alike items) is the same `str` object.
//!
//! Invariant: the dict equals `json_to_py(record.to_json())` (the pytest
//! suite compares `save_many`'s records with `inspect`, which still goes
//! through JSON); only the identity of equal immutable `str` values is
//! shared, never a dict or list.
//! Decision: parts (composites) are built without the string slots: they
//! are rare and their values vary within a record.
//! Decision: `save_many` builds its records with Python's cyclic garbage
//! collector paused ([`GcPause`]): the five containers per record would
//! otherwise trigger a collection every ~140 records, each walking the
//! caller's live objects (the batch being saved among them), for dicts
//! that cannot form a cycle. Only record building runs under the pause (no
//! Python code: no finalizer, hook or warning filter), and the collector's
//! previous state is restored even on error, so a collection simply
//! happens at the next allocation after it.

use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyModule, PyString};
use stowage::store::PartRecord;
use stowage::Record;

/// The last value of one field and its Python `str`.
#[derive(Default)]
struct Slot {
    text: String,
    obj: Option<Py<PyString>>,
}

impl Slot {
    fn get<'py>(&mut self, py: Python<'py>, text: &str) -> Bound<'py, PyString> {
        match &self.obj {
            Some(obj) if self.text == text => obj.bind(py).clone(),
            _ => {
                let obj = PyString::new(py, text);
                self.text.clear();
                self.text.push_str(text);
                self.obj = Some(obj.clone().unbind());
                obj
            }
        }
    }
}

/// Builds record dicts, sharing equal field strings across records.
#[derive(Default)]
pub struct RecordDicts {
    obj_type: Slot,
    caller_type: Slot,
    encoding: Slot,
    serializer: Slot,
    version: Slot,
    created: Slot,
    blob_name: Slot,
    storage: Slot,
    info: Vec<(Slot, Slot)>,
}

impl RecordDicts {
    /// `record` as a dict (see the module header).
    pub fn build<'py>(&mut self, py: Python<'py>, record: &Record) -> PyResult<Bound<'py, PyDict>> {
        let meta = &record.meta;
        let m = PyDict::new(py);
        m.set_item(intern!(py, "name"), PyString::new(py, &record.name))?;
        m.set_item(
            intern!(py, "obj_type"),
            self.obj_type.get(py, &meta.obj_type),
        )?;
        if let Some(caller_type) = &meta.caller_type {
            m.set_item(
                intern!(py, "caller_type"),
                self.caller_type.get(py, caller_type),
            )?;
        }
        m.set_item(
            intern!(py, "encoding"),
            self.encoding.get(py, &meta.encoding),
        )?;
        m.set_item(intern!(py, "encoding_version"), meta.encoding_version)?;
        let blobs = PyList::empty(py);
        for blob in &record.blobs {
            let b = PyDict::new(py);
            b.set_item(intern!(py, "name"), self.blob_name.get(py, &blob.name))?;
            b.set_item(intern!(py, "size"), blob.size)?;
            b.set_item(intern!(py, "digest"), PyString::new(py, &blob.digest))?;
            b.set_item(
                intern!(py, "storage"),
                self.storage.get(py, blob.location.storage_name()),
            )?;
            blobs.append(b)?;
        }
        m.set_item(intern!(py, "blobs"), blobs)?;
        let written_by = PyDict::new(py);
        written_by.set_item(
            intern!(py, "serializer"),
            self.serializer.get(py, &meta.serializer),
        )?;
        written_by.set_item(
            intern!(py, "version"),
            self.version.get(py, &meta.serializer_version),
        )?;
        m.set_item(intern!(py, "written_by"), written_by)?;
        let info = PyDict::new(py);
        if self.info.len() < meta.serializer_info.len() {
            self.info
                .resize_with(meta.serializer_info.len(), Default::default);
        }
        for ((key, value), (key_slot, value_slot)) in
            meta.serializer_info.iter().zip(self.info.iter_mut())
        {
            info.set_item(key_slot.get(py, key), value_slot.get(py, value))?;
        }
        m.set_item(intern!(py, "serializer_info"), info)?;
        if !meta.parts.is_empty() {
            let parts = PyList::empty(py);
            for part in &meta.parts {
                parts.append(part_dict(py, part)?)?;
            }
            m.set_item(intern!(py, "parts"), parts)?;
        }
        m.set_item(
            intern!(py, "created"),
            self.created.get(py, &record.created),
        )?;
        m.set_item(intern!(py, "format_version"), record.format_version)?;
        Ok(m)
    }
}

/// A part as `PartRecord::to_json`'s object.
fn part_dict<'py>(py: Python<'py>, part: &PartRecord) -> PyResult<Bound<'py, PyDict>> {
    let p = PyDict::new(py);
    p.set_item(intern!(py, "path"), &part.path)?;
    p.set_item(intern!(py, "kind"), &part.kind)?;
    p.set_item(intern!(py, "obj_type"), &part.obj_type)?;
    p.set_item(intern!(py, "encoding"), &part.encoding)?;
    p.set_item(intern!(py, "encoding_version"), part.encoding_version)?;
    let written_by = PyDict::new(py);
    written_by.set_item(intern!(py, "serializer"), &part.serializer)?;
    written_by.set_item(intern!(py, "version"), &part.serializer_version)?;
    p.set_item(intern!(py, "written_by"), written_by)?;
    let info = PyDict::new(py);
    for (key, value) in &part.serializer_info {
        info.set_item(key, value)?;
    }
    p.set_item(intern!(py, "serializer_info"), info)?;
    let blobs = PyList::empty(py);
    for (name, blob) in &part.blobs {
        let b = PyDict::new(py);
        b.set_item(intern!(py, "name"), name)?;
        b.set_item(intern!(py, "blob"), blob)?;
        blobs.append(b)?;
    }
    p.set_item(intern!(py, "blobs"), blobs)?;
    Ok(p)
}

/// Python's cyclic garbage collector disabled while this lives, when it
/// was enabled (see the module header); re-enabled on drop.
pub struct GcPause<'py> {
    paused: Option<Bound<'py, PyModule>>,
}

impl<'py> GcPause<'py> {
    /// Pauses the collector if it runs.
    pub fn new(py: Python<'py>) -> PyResult<Self> {
        let gc = py.import(intern!(py, "gc"))?;
        if !gc.call_method0(intern!(py, "isenabled"))?.is_truthy()? {
            return Ok(GcPause { paused: None });
        }
        gc.call_method0(intern!(py, "disable"))?;
        Ok(GcPause { paused: Some(gc) })
    }
}

impl Drop for GcPause<'_> {
    fn drop(&mut self) {
        if let Some(gc) = self.paused.take() {
            let py = gc.py();
            if let Err(e) = gc.call_method0(intern!(py, "enable")) {
                // Drop cannot return it: reported as Python reports errors
                // it cannot raise (sys.unraisablehook).
                e.write_unraisable(py, Some(gc.as_any()));
            }
        }
    }
}
