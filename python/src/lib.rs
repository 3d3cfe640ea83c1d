//! `stowage._stowage`: the native module under the pure-Python package
//! `stowage` (SPEC §12). It owns the work — dispatch, hashing, IO,
//! zero-copy views — while `stowage/_convert.py` only maps Python types
//! (numpy dtypes, `ml_dtypes`, pyarrow, `ClassSource`).
//!
//! Module map: `host` is the `Host` class, `convert` maps values both
//! ways, `arrow` moves Arrow C Data structs between arrow-rs (pyo3-arrow)
//! and plugin-api, `errors` declares the exception hierarchy once,
//! `record` builds the record dicts `save`/`save_many` return.
//!
//! Invariants: no pickle anywhere; the GIL is released around every call
//! that hashes, reads, writes or enters a plugin (`Python::detach`).
//!
//! Decision: `unsafe` here is confined to `convert` (borrowing a numpy
//! buffer or a `bytes` object, exposing a stored blob through the buffer
//! protocol) and
//! `arrow` (the C Data struct moves), each block under `// SAFETY:`.

mod arrow;
mod convert;
mod errors;
mod host;
mod record;

use pyo3::prelude::*;

/// The module `stowage._stowage`.
#[pymodule]
fn _stowage(m: &Bound<'_, PyModule>) -> PyResult<()> {
    errors::register(m)?;
    m.add_class::<host::PyHost>()?;
    m.add_class::<convert::BlobView>()?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
