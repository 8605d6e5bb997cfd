//! `reactive._core.Loader` and `reactive._core.Checker`: recovery and checks for backends
//! whose rows are read in Python (PostgreSQL, MySQL).
//!
//! Rows come in lists of tuples, in any order; every row is verified (shape, checksum) as it
//! arrives and nothing is applied before `finish` has verified every commit.

use std::sync::Arc;

use parking_lot::Mutex;
use pyo3::prelude::*;
use pyo3::types::PyDict;
use reactive_core::catalog::Catalog;
use reactive_core::error::Error;
use reactive_core::log::record::{CommitRecord, DocumentRevision, IndexEntry};
use reactive_core::log::recovery::{Checker, Loader};
use reactive_core::timestamp::Timestamp;

use crate::detached;
use crate::engine::{PyEngine, PyLoadedState};
use crate::errors::CoreError;

type CommitRow = (i64, i64, i64, i64);
type DocumentRow = (i64, Vec<u8>, i64, Option<Vec<u8>>, bool, Option<i64>, i64);
type IndexRow = (i64, Vec<u8>, i64, Vec<u8>, bool, i64);

fn used() -> CoreError {
    CoreError(Error::InvalidArgument(
        "this loader was already finished".into(),
    ))
}

/// Rebuilds an engine state from rows streamed out of a backend.
#[pyclass(name = "Loader", frozen, module = "reactive._core")]
pub struct PyLoader {
    inner: Mutex<Option<Loader>>,
}

#[pymethods]
impl PyLoader {
    /// A loader for a database whose `globals` hold `catalog_json` (or none) and `max_ts`.
    #[new]
    #[pyo3(signature = (catalog_json, max_ts))]
    fn new(catalog_json: Option<&str>, max_ts: u64) -> PyResult<Self> {
        let catalog = match catalog_json {
            Some(json) => Catalog::from_json(json).map_err(CoreError)?,
            None => Catalog::new(),
        };
        Ok(PyLoader {
            inner: Mutex::new(Some(Loader::new(catalog, Timestamp(max_ts)))),
        })
    }

    /// Rows of `commits`: `(ts, document_count, index_entry_count, checksum)`.
    fn add_commits(&self, py: Python<'_>, rows: Vec<CommitRow>) -> PyResult<()> {
        detached(py, || {
            let mut guard = self.inner.lock();
            let loader = guard.as_mut().ok_or_else(|| used().0)?;
            for (ts, d, i, c) in rows {
                loader.add_commit(CommitRecord::from_row(ts, d, i, c)?)?;
            }
            Ok(())
        })
    }

    /// Rows of `documents`: `(ts, id, table_id, value, deleted, prev_ts, checksum)`.
    fn add_documents(&self, py: Python<'_>, rows: Vec<DocumentRow>) -> PyResult<()> {
        detached(py, || {
            let mut guard = self.inner.lock();
            let loader = guard.as_mut().ok_or_else(|| used().0)?;
            for (ts, id, table, value, deleted, prev, checksum) in rows {
                let revision =
                    DocumentRevision::from_row(ts, &id, table, value, deleted, prev, checksum)?;
                loader.add_revision(revision)?;
            }
            Ok(())
        })
    }

    /// Rows of `indexes`: `(index_id, key, ts, doc_id, deleted, checksum)` (the whole key).
    fn add_index_entries(&self, py: Python<'_>, rows: Vec<IndexRow>) -> PyResult<()> {
        detached(py, || {
            let mut guard = self.inner.lock();
            let loader = guard.as_mut().ok_or_else(|| used().0)?;
            for (index, key, ts, doc, deleted, checksum) in rows {
                loader.add_index_entry(&IndexEntry::from_row(
                    index, key, ts, &doc, deleted, checksum,
                )?)?;
            }
            Ok(())
        })
    }

    /// Verify every commit and rebuild the state. Raises `CorruptionError` naming the
    /// first bad record.
    fn finish(&self, py: Python<'_>) -> PyResult<PyLoadedState> {
        let loader = self.inner.lock().take().ok_or_else(used)?;
        Ok(PyLoadedState::new(detached(py, move || loader.finish())?))
    }
}

/// Compares persisted index entries with an engine's live documents.
#[pyclass(name = "Checker", frozen, module = "reactive._core")]
pub struct PyChecker {
    inner: Mutex<Option<Checker>>,
    engine: Arc<reactive_core::engine::Engine>,
    problems: Mutex<Vec<String>>,
}

#[pymethods]
impl PyChecker {
    /// A checker against `engine`'s catalog and documents.
    #[new]
    fn new(engine: &PyEngine) -> Self {
        let engine = Arc::clone(engine.inner());
        PyChecker {
            inner: Mutex::new(Some(Checker::new(engine.catalog()))),
            engine,
            problems: Mutex::new(Vec::new()),
        }
    }

    /// Rows of `indexes`: `(index_id, key, ts, doc_id, deleted, checksum)`.
    fn add_index_entries(&self, py: Python<'_>, rows: Vec<IndexRow>) -> PyResult<()> {
        detached(py, || {
            let mut guard = self.inner.lock();
            let checker = guard.as_mut().ok_or_else(|| used().0)?;
            let mut problems = self.problems.lock();
            for (index, key, ts, doc, deleted, checksum) in rows {
                match IndexEntry::from_row(index, key, ts, &doc, deleted, checksum) {
                    Ok(entry) => {
                        if let Err(e) = entry.verify() {
                            problems.push(e.to_string());
                        }
                        checker.add_index_entry(&entry);
                    }
                    Err(e) => problems.push(e.to_string()),
                }
            }
            Ok(())
        })
    }

    /// The report: `{"documents", "index_entries", "problems": [str]}`.
    fn finish<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let checker = self.inner.lock().take().ok_or_else(used)?;
        let engine = Arc::clone(&self.engine);
        let mut report = detached(py, move || {
            let store = engine.store().read();
            Ok(checker.finish(&store, engine.visible_ts()))
        })?;
        report.problems.extend(self.problems.lock().drain(..));
        let d = PyDict::new(py);
        d.set_item("documents", report.documents)?;
        d.set_item("index_entries", report.index_entries)?;
        d.set_item("problems", report.problems)?;
        Ok(d)
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyLoader>()?;
    m.add_class::<PyChecker>()?;
    Ok(())
}
