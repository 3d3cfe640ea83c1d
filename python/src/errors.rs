//! The exception hierarchy, declared once: everything stowage raises is a
//! `stowage.Error` subclass carrying the CLI's one-line message, plus the
//! `stowage.PluginWarning` warning category.
//!
//! Decision: `NotFound` is also a `KeyError` (a store is a mapping of
//! names); PyO3's `create_exception!` takes one base, so `NotFound` is made
//! with `type()` at import, and keeps `Exception.__str__` so its message is
//! not quoted the way `KeyError` quotes keys.
//! Decision: integrity failures (a blob corrupt, missing, truncated or
//! undecodable) are `IntegrityError`; a dispatch with no candidate left on
//! save is `NoSerializer`; no reader for an artifact, or a named plugin
//! not active, is `PluginError`; config problems are `ConfigError`;
//! everything else (IO, read-only store, names) is plain `Error`.

use pyo3::exceptions::{PyException, PyKeyError, PyUserWarning};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyTuple, PyType};
use stowage::{DispatchError, StoreError};

pyo3::create_exception!(stowage, Error, PyException, "Base of every stowage error.");
pyo3::create_exception!(
    stowage,
    NoSerializer,
    Error,
    "No serializer took the value; the message lists each candidate's answer."
);
pyo3::create_exception!(
    stowage,
    IntegrityError,
    Error,
    "A stored blob is corrupt, truncated or missing."
);
pyo3::create_exception!(
    stowage,
    PluginError,
    Error,
    "A plugin needed for the call is missing, inactive or failed."
);
pyo3::create_exception!(
    stowage,
    ConfigError,
    Error,
    "The configuration (plugins.toml or toggles) is invalid."
);
pyo3::create_exception!(
    stowage,
    PluginWarning,
    PyUserWarning,
    "A plugin failed while another candidate took the value."
);

static NOT_FOUND: PyOnceLock<Py<PyType>> = PyOnceLock::new();

/// `stowage.NotFound`, a subclass of both `Error` and `KeyError`.
fn not_found(py: Python<'_>) -> PyResult<&Bound<'_, PyType>> {
    NOT_FOUND
        .get_or_try_init(py, || -> PyResult<Py<PyType>> {
            let bases = PyTuple::new(
                py,
                [
                    py.get_type::<Error>().into_any(),
                    py.get_type::<PyKeyError>().into_any(),
                ],
            )?;
            let namespace = PyDict::new(py);
            namespace.set_item("__module__", "stowage")?;
            namespace.set_item("__doc__", "No artifact of that name (also a KeyError).")?;
            namespace.set_item("__str__", py.get_type::<PyException>().getattr("__str__")?)?;
            let made = py
                .get_type::<PyType>()
                .call1(("NotFound", bases, namespace))?;
            Ok(made.cast_into::<PyType>()?.unbind())
        })
        .map(|t| t.bind(py))
}

/// Adds the exceptions to the module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("Error", py.get_type::<Error>())?;
    m.add("NotFound", not_found(py)?)?;
    m.add("NoSerializer", py.get_type::<NoSerializer>())?;
    m.add("IntegrityError", py.get_type::<IntegrityError>())?;
    m.add("PluginError", py.get_type::<PluginError>())?;
    m.add("ConfigError", py.get_type::<ConfigError>())?;
    m.add("PluginWarning", py.get_type::<PluginWarning>())?;
    Ok(())
}

/// The exception class for `error` (see the header's decisions).
pub fn to_py(error: stowage::Error) -> PyErr {
    let message = error.to_string();
    Python::attach(|py| {
        if error.is_not_found() {
            return match not_found(py) {
                Ok(class) => PyErr::from_type(class.clone(), message),
                Err(e) => e,
            };
        }
        match innermost(&error) {
            stowage::Error::Config(_) => ConfigError::new_err(message),
            stowage::Error::Dispatch(dispatch) => match innermost_part(dispatch) {
                DispatchError::NoSerializer { .. } | DispatchError::NoSniffer { .. } => {
                    NoSerializer::new_err(message)
                }
                DispatchError::NoDeserializer { .. } | DispatchError::NotActive { .. } => {
                    PluginError::new_err(message)
                }
                _ => Error::new_err(message),
            },
            stowage::Error::Store(store) if is_integrity(store) => IntegrityError::new_err(message),
            _ => Error::new_err(message),
        }
    })
}

/// A composite part's failure is classed by its own error (the message
/// keeps the part's path).
fn innermost_part(error: &DispatchError) -> &DispatchError {
    match error {
        DispatchError::Part { error, .. } => innermost_part(error),
        other => other,
    }
}

fn innermost(error: &stowage::Error) -> &stowage::Error {
    match error {
        stowage::Error::Artifact { source, .. } => innermost(source),
        other => other,
    }
}

fn is_integrity(error: &StoreError) -> bool {
    matches!(
        error,
        StoreError::Corrupt { .. }
            | StoreError::SizeMismatch { .. }
            | StoreError::MissingBlob { .. }
            | StoreError::Undecodable { .. }
    )
}
