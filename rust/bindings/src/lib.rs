//! `reactive._core`: the Python face of `reactive-core`.
//!
//! This crate only converts values, releases the GIL around engine work ([`detached`]) and
//! maps errors ([`errors`]); the engine logic lives in `reactive-core`. Users never import
//! this module: `reactive` wraps its classes.

use pyo3::prelude::*;

mod batch;
mod convert;
mod engine;
mod errors;
mod json;
mod loader;
mod sqlite;
mod transaction;

/// Run engine work with the GIL released, mapping its error to a Python exception.
///
/// Use for anything that does I/O, takes a contended lock or is O(n).
pub fn detached<T, F>(py: Python<'_>, f: F) -> PyResult<T>
where
    F: FnOnce() -> reactive_core::Result<T> + Send,
    T: Send,
{
    py.detach(f).map_err(|e| errors::CoreError(e).into())
}

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    engine::register(m)?;
    transaction::register(m)?;
    batch::register(m)?;
    sqlite::register(m)?;
    convert::register(m)?;
    json::register(m)?;
    loader::register(m)?;
    Ok(())
}
