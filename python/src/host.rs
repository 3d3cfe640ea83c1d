//! `stowage.Host`: the host in-process, with the CLI's discovery, store and
//! JSON shapes (`inspect --json`, `ls --json`, `status --json`).
//!
//! Invariant: the GIL is released (`Python::detach`) around every call
//! that hashes, reads, writes or enters a plugin; Python objects are only
//! touched before (conversion) and after (building results).
//!
//! Decision: `status()` and the record dicts are built here from the
//! library's public types with the CLI's keys (the CLI's builders live in
//! the binary crate); `explain(obj)` returns
//! `{"subject", "candidates": [{"plugin", "priority", "answer"}], "winner"}`,
//! the CLI's text as data; `verify()` returns its report (`ok`,
//! `artifacts`, `blobs`, `bytes`, `issues`) instead of raising;
//! `enable`/`disable` edit the config file as the CLI does, then rescan.
//! Decision: a Host with no config finds it as the CLI does
//! (`$STOWAGE_CONFIG`, else `./plugins.toml`, which may be absent), so its
//! store is the CLI's default, `./store` beside that implicit config: the
//! `stowage` command run in the same directory sees the same artifacts.
//! Plugins come from the config's plugin directory, then the wheel's
//! bundled `stowage/plugins/` (origin `bundled`).
//! Decision: `serialize` returns `(blobs, meta)` where `meta` holds what
//! `deserialize` needs: `obj_type`, `encoding`, `encoding_version`,
//! `serializer`, `serializer_version`, `serializer_info`, plus
//! `caller_type`. `deserialize` borrows the `bytes` it is given (immutable
//! objects; the loaded value keeps them alive) instead of copying them.
//! Decision: the Python type of a saved object goes to the record's
//! optional `caller_type` key (`module.qualname[params]`, see
//! `stowage/_convert.py`), not to `obj_type`: readers dispatch on the
//! serializer's `obj_type` (the tensor plugin tells `tensor` from
//! `tensor_map` by it), so that stays the plugin's word.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::path::PathBuf;
use std::sync::Arc;

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyBytes, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple};
use serde_json::json;
use stowage::store::Listed;
use stowage::{Answer, ArtifactMeta, Attempt, Host, HostOptions, Skipped};

use crate::convert::{to_python, to_value};
use crate::errors::{to_py, PluginWarning};
use crate::record::{GcPause, RecordDicts};

/// The plugin host (see the module header).
#[pyclass(name = "Host", module = "stowage", frozen)]
pub struct PyHost {
    host: Arc<Host>,
}

type Options = Option<BTreeMap<String, String>>;

fn options_vec(options: Options) -> Vec<(String, String)> {
    options.unwrap_or_default().into_iter().collect()
}

#[pymethods]
impl PyHost {
    /// Opens a host: `config` (else `$STOWAGE_CONFIG`, else
    /// `./plugins.toml`), toggles from `$STOWAGE_PLUGINS`, `store` (a
    /// directory, or a `file://`/`s3://` URL) overriding `[store]`; the wheel's bundled plugins
    /// (`stowage/plugins/`) are searched after the configured directory.
    #[new]
    #[pyo3(signature = (config=None, store=None))]
    fn new(py: Python<'_>, config: Option<PathBuf>, store: Option<PathBuf>) -> PyResult<Self> {
        let mut options = HostOptions::from_env(config.as_deref());
        match store {
            Some(url) if url.to_str().is_some_and(stowage::store::is_store_url) => {
                options.store_url = url.to_str().map(str::to_owned);
            }
            store => options.store_dir = store,
        }
        options.bundled_plugin_dirs = bundled_dir(py)?.into_iter().collect();
        let host = py.detach(|| Host::open(options)).map_err(to_py)?;
        Ok(PyHost {
            host: Arc::new(host),
        })
    }

    /// The config file this host read.
    #[getter]
    fn config_path(&self) -> PathBuf {
        self.host.config_path().to_owned()
    }

    /// Stores `obj` as `name`; returns its record (as `inspect`).
    #[pyo3(signature = (name, obj, options=None))]
    fn save(
        &self,
        py: Python<'_>,
        name: &str,
        obj: &Bound<'_, PyAny>,
        options: Options,
    ) -> PyResult<Py<PyAny>> {
        let value = to_value(obj)?;
        let caller_type = type_name(obj)?;
        let options = options_vec(options);
        let host = &self.host;
        let saved = py
            .detach(|| host.save_typed(name, &value, &options, &caller_type))
            .map_err(to_py)?;
        drop(value);
        warn_skipped(py, &saved.skipped)?;
        Ok(RecordDicts::default()
            .build(py, &saved.record)?
            .into_any()
            .unbind())
    }

    /// Stores every item with one durable commit, all or nothing; returns
    /// the records in order (a `PluginWarning` per plugin skipped on the way,
    /// as `save`).
    #[pyo3(signature = (items, options=None))]
    fn save_many(
        &self,
        py: Python<'_>,
        items: &Bound<'_, PyDict>,
        options: Options,
    ) -> PyResult<Py<PyAny>> {
        let mut values = Vec::with_capacity(items.len());
        for (name, obj) in items.iter() {
            let name: String = name
                .extract()
                .map_err(|_| PyTypeError::new_err("save_many keys must be str"))?;
            values.push((name, to_value(&obj)?, type_name(&obj)?));
        }
        let options = options_vec(options);
        let host = &self.host;
        let saved = py
            .detach(|| {
                let refs: Vec<(&str, &stowage::Value, Option<&str>)> = values
                    .iter()
                    .map(|(n, v, t)| (n.as_str(), v, Some(t.as_str())))
                    .collect();
                host.save_many_typed(&refs, &options)
            })
            .map_err(to_py)?;
        drop(values);
        let list = PyList::empty(py);
        {
            // No Python code runs in this loop (see `GcPause`); the warnings,
            // which may run filters and hooks, come after it, in order.
            let _pause = GcPause::new(py)?;
            let mut dicts = RecordDicts::default();
            for one in &saved {
                list.append(dicts.build(py, &one.record)?)?;
            }
        }
        for one in &saved {
            warn_skipped(py, &one.skipped)?;
        }
        Ok(list.into_any().unbind())
    }

    /// Loads `name`: verified (re-hashed) by default; `mapped=True` maps
    /// the blobs unverified in O(1).
    #[pyo3(signature = (name, mapped=false))]
    fn load(&self, py: Python<'_>, name: &str, mapped: bool) -> PyResult<Py<PyAny>> {
        let host = &self.host;
        let loaded = py
            .detach(|| {
                if mapped {
                    host.load_mapped(name)
                } else {
                    host.load(name)
                }
            })
            .map_err(to_py)?;
        warn_skipped(py, &loaded.skipped)?;
        to_python(py, loaded.value)
    }

    /// Loads every one of `names`, in order, all or nothing (as `load`,
    /// verified unless `mapped=True`); on an S3 store the lookups and reads
    /// run concurrently, so this is the fast way to read many artifacts.
    #[pyo3(signature = (names, mapped=false))]
    fn load_many(&self, py: Python<'_>, names: Vec<String>, mapped: bool) -> PyResult<Py<PyAny>> {
        let host = &self.host;
        let loaded = py
            .detach(|| {
                let names: Vec<&str> = names.iter().map(String::as_str).collect();
                if mapped {
                    host.load_many_mapped(&names)
                } else {
                    host.load_many(&names)
                }
            })
            .map_err(to_py)?;
        let list = PyList::empty(py);
        for one in loaded {
            warn_skipped(py, &one.skipped)?;
            list.append(to_python(py, one.value)?)?;
        }
        Ok(list.into_any().unbind())
    }

    /// Every record (as `ls --json`).
    fn ls(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let host = &self.host;
        let listing = py
            .detach(|| host.store().map(|s| s.listing()))
            .map_err(to_py)?;
        let items: Vec<serde_json::Value> = listing
            .iter()
            .map(|listed| match listed {
                Listed::Record(record) => record.to_json(),
                Listed::Unreadable(bad) => json!({ "name": bad.name, "error": bad.reason }),
            })
            .collect();
        json_to_py(py, &serde_json::Value::Array(items))
    }

    /// One record (as `inspect --json`).
    fn inspect(&self, py: Python<'_>, name: &str) -> PyResult<Py<PyAny>> {
        let host = &self.host;
        let record = py
            .detach(|| host.store().and_then(|s| Ok(s.get(name)?)))
            .map_err(to_py)?;
        json_to_py(py, &record.to_json())
    }

    /// Removes `name` (its blobs go at the next `gc`).
    fn rm(&self, py: Python<'_>, name: &str) -> PyResult<()> {
        let host = &self.host;
        py.detach(|| host.store().and_then(|s| Ok(s.remove(name)?)))
            .map_err(to_py)?;
        Ok(())
    }

    /// Collects unreferenced blobs; returns what it reclaimed.
    fn gc(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let host = &self.host;
        let r = py
            .detach(|| host.store().and_then(|s| Ok(s.gc()?)))
            .map_err(to_py)?;
        json_to_py(
            py,
            &json!({
                "blob_files_removed": r.blob_files_removed,
                "packs_removed": r.packs_removed,
                "packs_compacted": r.packs_compacted,
                "temp_files_removed": r.temp_files_removed,
                "bytes_freed": r.bytes_freed,
            }),
        )
    }

    /// Re-hashes every blob; returns the report (problems are listed in
    /// `issues`, not raised).
    fn verify(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let host = &self.host;
        let r = py
            .detach(|| host.store().and_then(|s| Ok(s.verify()?)))
            .map_err(to_py)?;
        let issues: Vec<serde_json::Value> = r
            .issues
            .iter()
            .map(
                |i| json!({ "artifact": i.artifact, "blob": i.blob, "error": i.error.to_string() }),
            )
            .collect();
        json_to_py(
            py,
            &json!({
                "ok": r.is_ok(),
                "artifacts": r.artifacts,
                "blobs": r.blobs,
                "bytes": r.bytes,
                "issues": issues,
            }),
        )
    }

    /// Every serializer's state (as `status --json`).
    fn status(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        json_to_py(py, &self.host.status_json())
    }

    /// Enables `name` in the config file (as `stowage enable`), then
    /// rescans.
    fn enable(&self, py: Python<'_>, name: &str) -> PyResult<()> {
        self.toggle(py, name, true)
    }

    /// Disables `name` in the config file (as `stowage disable`), then
    /// rescans.
    fn disable(&self, py: Python<'_>, name: &str) -> PyResult<()> {
        self.toggle(py, name, false)
    }

    /// Re-reads the config and the plugin directory.
    fn rescan(&self, py: Python<'_>) -> PyResult<()> {
        let host = &self.host;
        py.detach(|| host.rescan()).map_err(to_py)
    }

    /// Which serializer would take `obj`, and what each candidate says;
    /// for a composite (a dict or list with arrays, tables or classes in
    /// it), also `parts`: the same decision for each part, by its path.
    fn explain(&self, py: Python<'_>, obj: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        let value = to_value(obj)?;
        let snapshot = self.host.snapshot();
        let (attempts, parts) = py.detach(|| {
            (
                snapshot.table.explain_value(&value),
                snapshot.table.explain_parts(&value),
            )
        });
        let mut explained = serde_json::Map::new();
        explained.insert("subject".into(), json!(format!("a {} value", value.kind())));
        explained.extend(decision(&attempts));
        if !parts.is_empty() {
            let parts: Vec<serde_json::Value> = parts
                .iter()
                .map(|(path, attempts)| {
                    let mut part = serde_json::Map::new();
                    part.insert("path".into(), json!(path));
                    part.extend(decision(attempts));
                    serde_json::Value::Object(part)
                })
                .collect();
            explained.insert("parts".into(), json!(parts));
        }
        json_to_py(py, &serde_json::Value::Object(explained))
    }

    /// Serializes `obj` without a store: `(blobs, meta)`.
    #[pyo3(signature = (obj, options=None))]
    fn serialize<'py>(
        &self,
        py: Python<'py>,
        obj: &Bound<'py, PyAny>,
        options: Options,
    ) -> PyResult<Bound<'py, PyTuple>> {
        let value = to_value(obj)?;
        let caller_type = type_name(obj)?;
        let options = options_vec(options);
        let host = &self.host;
        let s = py
            .detach(|| host.serialize_to_memory(&value, &options))
            .map_err(to_py)?;
        drop(value);
        warn_skipped(py, &s.skipped)?;
        let blobs = PyDict::new(py);
        for (name, bytes) in &s.blobs {
            blobs.set_item(name, PyBytes::new(py, bytes))?;
        }
        let info: serde_json::Map<String, serde_json::Value> = s
            .written
            .info
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
            .collect();
        let meta = json_to_py(
            py,
            &json!({
                "obj_type": s.written.obj_type,
                "encoding": s.written.encoding,
                "encoding_version": s.written.encoding_version,
                "serializer": s.plugin,
                "serializer_version": s.plugin_version,
                "serializer_info": info,
                "caller_type": caller_type,
            }),
        )?;
        PyTuple::new(py, [blobs.into_any(), meta.into_bound(py)])
    }

    /// Rebuilds a value from `serialize`'s `(blobs, meta)`.
    fn deserialize(
        &self,
        py: Python<'_>,
        blobs: &Bound<'_, PyDict>,
        meta: &Bound<'_, PyDict>,
    ) -> PyResult<Py<PyAny>> {
        let mut buffers = Vec::with_capacity(blobs.len());
        for (name, bytes) in blobs.iter() {
            let name: String = name.extract()?;
            buffers.push((
                name,
                crate::convert::borrow_bytes(bytes.cast_into::<PyBytes>()?),
            ));
        }
        let field = |key: &str| -> PyResult<Bound<'_, PyAny>> {
            meta.get_item(key)?
                .ok_or_else(|| PyValueError::new_err(format!("meta has no {key:?}")))
        };
        let info: BTreeMap<String, String> = match meta.get_item("serializer_info")? {
            Some(info) => info.extract()?,
            None => BTreeMap::new(),
        };
        let artifact = ArtifactMeta {
            obj_type: field("obj_type")?.extract()?,
            encoding: field("encoding")?.extract()?,
            encoding_version: field("encoding_version")?.extract()?,
            info: info.into_iter().collect(),
            blobs: buffers
                .iter()
                .map(|(n, b)| (n.clone(), b.len() as u64))
                .collect(),
        };
        let writer = stowage::WrittenBy::new(
            field("serializer")?.extract::<String>()?,
            field("serializer_version")?.extract::<String>()?,
        );
        let host = &self.host;
        let dispatched = py
            .detach(|| host.deserialize(&artifact, &writer, &buffers))
            .map_err(to_py)?;
        warn_skipped(py, &dispatched.skipped)?;
        to_python(py, dispatched.output)
    }
}

impl PyHost {
    fn toggle(&self, py: Python<'_>, name: &str, enabled: bool) -> PyResult<()> {
        let path = self.host.config_path().to_owned();
        let host = &self.host;
        py.detach(|| -> Result<(), stowage::Error> {
            stowage::config::set_enabled(&path, name, enabled)?;
            host.rescan()
        })
        .map_err(to_py)
    }
}

/// A saved object's Python type (`stowage._convert.type_name`).
///
/// An object whose type is exactly one of the builtins `to_value` maps
/// (`None`, `bool`, `int`, `float`, `str`, `bytes`, `list`, `tuple`,
/// `dict`) is named here without calling Python: such an instance has no
/// `__dict__` and its type no `__orig_class__`, so the helper's answer is
/// always the plain `builtins.<name>`. Subclasses and everything else go
/// to the helper.
fn type_name(obj: &Bound<'_, PyAny>) -> PyResult<String> {
    if let Some(name) = builtin_type_name(obj) {
        return Ok(name.to_owned());
    }
    crate::convert::helpers(obj.py())?
        .call_method1("type_name", (obj,))?
        .extract()
}

/// `builtins.<name>` when `obj`'s type is exactly a builtin `to_value` maps.
fn builtin_type_name(obj: &Bound<'_, PyAny>) -> Option<&'static str> {
    if obj.is_none() {
        return Some("builtins.NoneType");
    }
    Some(if obj.is_exact_instance_of::<PyDict>() {
        "builtins.dict"
    } else if obj.is_exact_instance_of::<PyString>() {
        "builtins.str"
    } else if obj.is_exact_instance_of::<PyInt>() {
        "builtins.int"
    } else if obj.is_exact_instance_of::<PyFloat>() {
        "builtins.float"
    } else if obj.is_exact_instance_of::<PyBool>() {
        "builtins.bool"
    } else if obj.is_exact_instance_of::<PyList>() {
        "builtins.list"
    } else if obj.is_exact_instance_of::<PyTuple>() {
        "builtins.tuple"
    } else if obj.is_exact_instance_of::<PyBytes>() {
        "builtins.bytes"
    } else {
        return None;
    })
}

/// `stowage/plugins/` beside the package, if the wheel carries it.
fn bundled_dir(py: Python<'_>) -> PyResult<Option<PathBuf>> {
    let file: PathBuf = py.import("stowage")?.getattr("__file__")?.extract()?;
    Ok(file
        .parent()
        .map(|package| package.join("plugins"))
        .filter(|dir| dir.is_dir()))
}

/// One `stowage.PluginWarning` per skipped plugin, worded as the CLI's
/// stderr line.
fn warn_skipped(py: Python<'_>, skipped: &[Skipped]) -> PyResult<()> {
    let category = py.get_type::<PluginWarning>();
    for skip in skipped {
        let text = format!("skipped plugin {}: {}", skip.plugin, skip.message);
        let text = CString::new(text.replace('\0', "\\0"))
            .map_err(|e| PyValueError::new_err(e.to_string()))?;
        PyErr::warn(py, &category, &text, 1)?;
    }
    Ok(())
}

/// A JSON document as Python objects (numbers stay ints or floats).
fn json_to_py(py: Python<'_>, json: &serde_json::Value) -> PyResult<Py<PyAny>> {
    Ok(match json {
        serde_json::Value::Null => py.None(),
        serde_json::Value::Bool(b) => pyo3::types::PyBool::new(py, *b)
            .to_owned()
            .into_any()
            .unbind(),
        serde_json::Value::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => i.into_pyobject(py)?.into_any().unbind(),
            (None, Some(u), _) => u.into_pyobject(py)?.into_any().unbind(),
            (None, None, Some(f)) => f.into_pyobject(py)?.into_any().unbind(),
            _ => n.to_string().into_pyobject(py)?.into_any().unbind(),
        },
        serde_json::Value::String(s) => s.into_pyobject(py)?.into_any().unbind(),
        serde_json::Value::Array(items) => {
            let list = PyList::empty(py);
            for item in items {
                list.append(json_to_py(py, item)?)?;
            }
            list.into_any().unbind()
        }
        serde_json::Value::Object(map) => {
            let dict = PyDict::new(py);
            for (k, v) in map {
                dict.set_item(k, json_to_py(py, v)?)?;
            }
            dict.into_any().unbind()
        }
    })
}

/// What `explain` says of one dispatch: each candidate's answer, in the
/// order dispatch asked, and the one that took the value (if any).
fn decision(attempts: &[Attempt]) -> serde_json::Map<String, serde_json::Value> {
    let candidates: Vec<serde_json::Value> = attempts
        .iter()
        .map(|a| json!({ "plugin": a.plugin, "priority": a.priority, "answer": a.answer.to_string() }))
        .collect();
    let winner = attempts
        .iter()
        .find(|a| a.answer == Answer::Accepted)
        .map(|a| a.plugin.clone());
    let mut out = serde_json::Map::new();
    out.insert("candidates".into(), json!(candidates));
    out.insert("winner".into(), json!(winner));
    out
}
