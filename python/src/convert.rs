//! Python objects to `stowage::Value` and back (SPEC §12 value mapping).
//!
//! Save: `None`/`bool`/`int`/`float`/`str`/`bytes`/`list`/`tuple`/`dict`
//! become plain kinds; a numpy array a `tensor` whose data is the array's
//! own buffer (borrowed: the value holds a reference to the array);
//! `dict[str, ndarray]` a `tensor_map`; anything with
//! `__arrow_c_stream__` an `arrow` table (buffers shared through the C
//! stream); a class a `class_source`; a numpy scalar (`np.float32(1.5)`,
//! `np.int8(3)`, `np.bool_(True)`) a plain `bool`/`int`/`float`.
//! Everything else is a `TypeError` naming the type — never pickle.
//!
//! Load: tensors come back as read-only numpy arrays over a [`BlobView`],
//! which holds the stored blob's [`Buffer`] (and so the file mapping)
//! alive; Arrow as `pyarrow.Table` (or a pyo3-arrow table when pyarrow is
//! missing); class source as `stowage.ClassSource`.
//!
//! Decision: dtype choices (which numpy dtype a safetensors dtype maps to,
//! `ml_dtypes` or raw uint, big-endian and non-contiguous fix-ups) live in
//! `stowage/_convert.py`, the Python edge; this module moves the bytes.
//! Decision: a borrowed array is not locked: mutating it from another
//! thread during a save races with the hash, as with any buffer consumer
//! (safetensors does the same).
//! Decision: a `tensor_map` loads as `stowage.TensorMap`, a `dict`
//! subclass whose `.metadata` holds the safetensors `__metadata__`
//! strings; saving a `TensorMap` writes them back (a plain dict has none).
//! Decision: a numpy scalar is a number, an array (even 0-d) a tensor: a
//! scalar of a supported dtype becomes the plain value of `.item()` (bool,
//! int within 64 bits, float; float16/float32/bfloat16/float8 widen to
//! float64 exactly), so `{"loss": np.float32(0.25)}` stays plain data and
//! loads as Python numbers. Other scalars (complex, datetime64,
//! longdouble) are the usual `TypeError`.
//! Decision: an Arrow table with no batches (an empty pyarrow table) is
//! saved as one empty batch of its schema, so the schema survives.
//! Decision (composites, SPEC §15): a dict *inside* a list, tuple or dict
//! is always a map, even when all its values are arrays: the host's
//! grouping rule then stores it as one `tensor_map` part, exactly as a
//! Rust map of tensors, so a nested structure is stored alike from both
//! languages (the top-level `dict[str, ndarray]` is a `tensor_map`
//! either way). A nested structure with arrays, tables or classes is a
//! composite and loads back as the same structure, tuples as lists.

use std::ffi::c_int;
use std::sync::Arc;

use numpy::{PyArrayDescrMethods, PyUntypedArray, PyUntypedArrayMethods};
use pyo3::exceptions::{PyBufferError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{
    PyBool, PyBytes, PyDict, PyFloat, PyInt, PyList, PyModule, PyString, PyTuple, PyType,
};
use stowage::{ArrowTable, Buffer, ClassSource, Tensor, TensorMap, Value};

/// What a `TypeError` for an unsupported value lists.
const SUPPORTED: &str =
    "None, bool, int (64-bit), float, str, bytes, list, tuple, dict with str keys, \
numpy arrays and scalars of bool/int/uint/float dtypes (and ml_dtypes bfloat16/float8), dict[str, ndarray], \
objects with __arrow_c_stream__ (pyarrow, polars, …) and classes";

static HELPERS: PyOnceLock<Py<PyModule>> = PyOnceLock::new();

/// `stowage._convert`, the Python-side type mapping.
pub fn helpers(py: Python<'_>) -> PyResult<&Bound<'_, PyModule>> {
    HELPERS
        .get_or_try_init(py, || {
            Ok::<_, PyErr>(py.import("stowage._convert")?.unbind())
        })
        .map(|m| m.bind(py))
}

fn type_name(obj: &Bound<'_, PyAny>) -> String {
    obj.get_type()
        .fully_qualified_name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "?".to_owned())
}

/// Converts a Python object to a value (see the module header).
pub fn to_value(obj: &Bound<'_, PyAny>) -> PyResult<Value> {
    if obj.is_none() {
        return Ok(Value::Null);
    }
    if let Ok(b) = obj.cast::<PyBool>() {
        return Ok(Value::Bool(b.is_true()));
    }
    if let Ok(i) = obj.cast::<PyInt>() {
        return i.extract::<i64>().map(Value::Int).map_err(|_| {
            PyTypeError::new_err(format!(
                "int {} is outside the 64-bit range; stowage stores ints from -2**63 to 2**63-1",
                capped(&i.to_string())
            ))
        });
    }
    if let Ok(f) = obj.cast::<PyFloat>() {
        return Ok(Value::Float(f.value()));
    }
    if let Ok(s) = obj.cast::<PyString>() {
        return Ok(Value::String(s.to_str()?.to_owned()));
    }
    if let Ok(b) = obj.cast::<PyBytes>() {
        return Ok(Value::Bytes(Buffer::from_vec(b.as_bytes().to_vec())));
    }
    if obj.cast::<PyUntypedArray>().is_ok() {
        return tensor(obj).map(Value::Tensor);
    }
    if let Ok(list) = obj.cast::<PyList>() {
        return list
            .iter()
            .map(|item| nested(&item))
            .collect::<PyResult<_>>()
            .map(Value::List);
    }
    if let Ok(tuple) = obj.cast::<PyTuple>() {
        return tuple
            .iter()
            .map(|item| nested(&item))
            .collect::<PyResult<_>>()
            .map(Value::List);
    }
    if let Ok(dict) = obj.cast::<PyDict>() {
        return map(dict);
    }
    if obj.hasattr("__arrow_c_stream__")? {
        return arrow(obj).map(Value::Arrow);
    }
    if let Ok(class) = obj.cast::<PyType>() {
        return class_source(class).map(Value::ClassSource);
    }
    if let Some(number) = numpy_scalar(obj)? {
        return to_value(&number);
    }
    Err(PyTypeError::new_err(format!(
        "cannot store a value of type {}; supported: {SUPPORTED}",
        type_name(obj)
    )))
}

/// A numpy scalar as the plain Python number it holds (`None` for any
/// other object); raises `TypeError` for a scalar of an unsupported dtype.
fn numpy_scalar<'py>(obj: &Bound<'py, PyAny>) -> PyResult<Option<Bound<'py, PyAny>>> {
    let number = helpers(obj.py())?.call_method1("numpy_scalar", (obj,))?;
    Ok((!number.is_none()).then_some(number))
}

fn capped(text: &str) -> String {
    stowage::quote_capped(text, stowage::MAX_QUOTED_NAME)
}

fn key_of(key: &Bound<'_, PyAny>) -> PyResult<String> {
    match key.cast::<PyString>() {
        Ok(s) => Ok(s.to_str()?.to_owned()),
        Err(_) => Err(PyTypeError::new_err(format!(
            "cannot store a dict with a {} key; keys must be str",
            type_name(key)
        ))),
    }
}

/// A dict: a `tensor_map` when it is non-empty and every value is a numpy
/// array, else a map.
fn map(dict: &Bound<'_, PyDict>) -> PyResult<Value> {
    // Iterated in place: `values()` would build a list first, and the
    // first non-array value (any plain dict's) already settles it.
    let all_arrays =
        !dict.is_empty() && dict.iter().all(|(_, v)| v.cast::<PyUntypedArray>().is_ok());
    if all_arrays {
        let mut tensors = Vec::with_capacity(dict.len());
        for (key, array) in dict.iter() {
            tensors.push((key_of(&key)?, tensor(&array)?));
        }
        let metadata: Vec<(String, String)> = helpers(dict.py())?
            .call_method1("tensor_map_metadata", (dict,))?
            .extract()?;
        return Ok(Value::TensorMap(TensorMap { tensors, metadata }));
    }
    entries(dict)
}

/// A dict's entries as a map, whatever its values.
fn entries(dict: &Bound<'_, PyDict>) -> PyResult<Value> {
    let mut entries = Vec::with_capacity(dict.len());
    for (key, item) in dict.iter() {
        entries.push((key_of(&key)?, nested(&item)?));
    }
    Ok(Value::Map(entries))
}

/// A value inside a list, tuple or dict: a dict is always a map there (see
/// the composites decision in the module header).
fn nested(obj: &Bound<'_, PyAny>) -> PyResult<Value> {
    match obj.cast::<PyDict>() {
        Ok(dict) => entries(dict),
        Err(_) => to_value(obj),
    }
}

/// A tensor borrowing the array's buffer (after `prepare_array` made it
/// little-endian and C-contiguous, copying once only if it was not).
fn tensor(array: &Bound<'_, PyAny>) -> PyResult<Tensor> {
    let prepared = helpers(array.py())?.call_method1("prepare_array", (array,))?;
    let (array, dtype): (Bound<'_, PyAny>, String) = prepared.extract()?;
    let untyped = array.cast::<PyUntypedArray>()?;
    let shape = untyped.shape().iter().map(|&d| d as u64).collect();
    let len = untyped.len() * untyped.dtype().itemsize();
    // SAFETY: `untyped` is a live numpy array object; reading its `data`
    // field is how numpy's own C API reads it.
    let ptr = unsafe { (*untyped.as_array_ptr()).data } as *const u8;
    let owner: Arc<dyn Send + Sync> = Arc::new(array.clone().unbind());
    // SAFETY: the array is C-contiguous (`prepare_array`), so its `len`
    // bytes start at `ptr`; `owner` holds a reference to the array, which
    // keeps its buffer allocated. Immutability while borrowed is the
    // caller's part (module header).
    let data = unsafe { Buffer::from_raw_parts(owner, ptr, len) };
    Ok(Tensor { dtype, shape, data })
}

/// The bytes of a Python `bytes` object, borrowed: the buffer holds a
/// reference to the object.
pub fn borrow_bytes(bytes: Bound<'_, PyBytes>) -> Buffer {
    let data = bytes.as_bytes();
    let (ptr, len) = (data.as_ptr(), data.len());
    let owner: Arc<dyn Send + Sync> = Arc::new(bytes.unbind());
    // SAFETY: a `bytes` object is immutable and its data never moves while
    // a reference to it is held; `owner` holds one for the buffer's life.
    unsafe { Buffer::from_raw_parts(owner, ptr, len) }
}

fn arrow(obj: &Bound<'_, PyAny>) -> PyResult<ArrowTable> {
    let table: pyo3_arrow::PyTable = obj.extract()?;
    let (mut batches, schema) = table.into_inner();
    if batches.is_empty() {
        batches.push(arrow_array::RecordBatch::new_empty(schema));
    }
    let batches = crate::arrow::to_host(&batches)
        .map_err(|e| PyValueError::new_err(format!("cannot export the arrow table: {e}")))?;
    Ok(ArrowTable::new(batches))
}

fn class_source(class: &Bound<'_, PyType>) -> PyResult<ClassSource> {
    let (qualname, module, source): (String, Option<String>, String) = helpers(class.py())?
        .call_method1("class_to_source", (class,))?
        .extract()?;
    Ok(ClassSource {
        qualname,
        module,
        source,
    })
}

/// Converts a loaded value to Python (see the module header).
pub fn to_python(py: Python<'_>, value: Value) -> PyResult<Py<PyAny>> {
    Ok(match value {
        Value::Null => py.None(),
        Value::Bool(b) => PyBool::new(py, b).to_owned().into_any().unbind(),
        Value::Int(i) => i.into_pyobject(py)?.into_any().unbind(),
        Value::Float(f) => f.into_pyobject(py)?.into_any().unbind(),
        Value::String(s) => PyString::new(py, &s).into_any().unbind(),
        Value::Bytes(b) => PyBytes::new(py, &b).into_any().unbind(),
        Value::List(items) => {
            let list = PyList::empty(py);
            for item in items {
                list.append(to_python(py, item)?)?;
            }
            list.into_any().unbind()
        }
        Value::Map(entries) => {
            let dict = PyDict::new(py);
            for (key, item) in entries {
                dict.set_item(key, to_python(py, item)?)?;
            }
            dict.into_any().unbind()
        }
        Value::Tensor(t) => tensor_to_python(py, t)?,
        Value::TensorMap(map) => {
            let dict = PyDict::new(py);
            for (key, t) in map.tensors {
                dict.set_item(key, tensor_to_python(py, t)?)?;
            }
            let metadata = PyDict::new(py);
            for (key, text) in map.metadata {
                metadata.set_item(key, text)?;
            }
            helpers(py)?
                .call_method1("tensor_map", (dict, metadata))?
                .unbind()
        }
        Value::Arrow(table) => {
            let (batches, schema) = crate::arrow::from_host(table.export()).map_err(|e| {
                PyValueError::new_err(format!("cannot import the arrow table: {e}"))
            })?;
            let table = pyo3_arrow::PyTable::try_new(batches, schema)?;
            let table = Bound::new(py, table)?;
            helpers(py)?.call_method1("arrow", (table,))?.unbind()
        }
        Value::ClassSource(c) => helpers(py)?
            .call_method1("class_source", (c.qualname, c.module, c.source))?
            .unbind(),
    })
}

fn tensor_to_python(py: Python<'_>, t: Tensor) -> PyResult<Py<PyAny>> {
    let view = Bound::new(py, BlobView { data: t.data })?;
    let shape = PyTuple::new(py, t.shape)?;
    Ok(helpers(py)?
        .call_method1("tensor", (view, t.dtype, shape))?
        .unbind())
}

/// Read-only bytes of a stored blob, exposed through the buffer protocol;
/// holds the blob's [`Buffer`] (a file mapping or plugin allocation) so
/// every numpy view made from it keeps the memory alive, even after the
/// `Host` is gone.
#[pyclass(module = "stowage._stowage", frozen)]
pub struct BlobView {
    data: Buffer,
}

#[pymethods]
impl BlobView {
    fn __len__(&self) -> usize {
        self.data.len()
    }

    /// The address of the first byte (tests compare it with the mapping).
    #[getter]
    fn address(&self) -> usize {
        self.data.as_ptr() as usize
    }

    /// # Safety
    /// `view` is the valid `Py_buffer` Python passes to `bf_getbuffer`.
    unsafe fn __getbuffer__(
        slf: Bound<'_, Self>,
        view: *mut pyo3::ffi::Py_buffer,
        flags: c_int,
    ) -> PyResult<()> {
        if view.is_null() {
            return Err(PyBufferError::new_err("no Py_buffer to fill"));
        }
        if flags & pyo3::ffi::PyBUF_WRITABLE == pyo3::ffi::PyBUF_WRITABLE {
            return Err(PyBufferError::new_err("stored blobs are read-only"));
        }
        let bytes: &[u8] = &slf.get().data;
        // SAFETY: `view` is non-null and points to the struct Python asks
        // us to fill; the exported pointer stays valid while `obj` (a new
        // reference to this view, which owns the Buffer) is held by it.
        unsafe {
            (*view).obj = slf.clone().into_any().into_ptr();
            (*view).buf = bytes.as_ptr() as *mut std::ffi::c_void;
            (*view).len = bytes.len() as isize;
            (*view).readonly = 1;
            (*view).itemsize = 1;
            (*view).format = if flags & pyo3::ffi::PyBUF_FORMAT == pyo3::ffi::PyBUF_FORMAT {
                c"B".as_ptr() as *mut std::ffi::c_char
            } else {
                std::ptr::null_mut()
            };
            (*view).ndim = 1;
            (*view).shape = if flags & pyo3::ffi::PyBUF_ND == pyo3::ffi::PyBUF_ND {
                &raw mut (*view).len
            } else {
                std::ptr::null_mut()
            };
            (*view).strides = if flags & pyo3::ffi::PyBUF_STRIDES == pyo3::ffi::PyBUF_STRIDES {
                &raw mut (*view).itemsize
            } else {
                std::ptr::null_mut()
            };
            (*view).suboffsets = std::ptr::null_mut();
            (*view).internal = std::ptr::null_mut();
        }
        Ok(())
    }

    /// Nothing to free: the Buffer lives as long as this object.
    ///
    /// # Safety
    /// Called by Python with the view filled by `__getbuffer__`.
    unsafe fn __releasebuffer__(&self, _view: *mut pyo3::ffi::Py_buffer) {}
}
