//! `reactive._core.PersistBatch`: one group-commit batch on its way to persistence.

use parking_lot::Mutex;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyTuple};
use reactive_core::engine::PersistBatch;
use reactive_core::error::Error;

use crate::detached;

/// A batch of commits (and catalog changes) that persistence writes in one transaction.
#[pyclass(name = "PersistBatch", frozen, module = "reactive._core")]
pub struct PyPersistBatch {
    inner: Mutex<Option<PersistBatch>>,
    timestamps: Vec<u64>,
}

impl PyPersistBatch {
    pub fn new(batch: PersistBatch) -> Self {
        let timestamps = batch
            .commits
            .timestamps()
            .into_iter()
            .map(|t| t.0)
            .collect();
        PyPersistBatch {
            inner: Mutex::new(Some(batch)),
            timestamps,
        }
    }

    /// Take the batch out (abort).
    pub fn take(&self) -> Result<PersistBatch, Error> {
        self.inner.lock().take().ok_or(Error::TransactionFinished)
    }

    /// Run `f` on the batch with the GIL released.
    pub fn with<T: Send>(
        &self,
        py: Python<'_>,
        f: impl FnOnce(&PersistBatch) -> Result<T, Error> + Send,
    ) -> PyResult<T> {
        detached(py, || {
            let guard = self.inner.lock();
            let batch = guard.as_ref().ok_or(Error::TransactionFinished)?;
            f(batch)
        })
    }
}

#[pymethods]
impl PyPersistBatch {
    /// Commit timestamps in the batch, ascending.
    #[getter]
    fn timestamps(&self) -> Vec<u64> {
        self.timestamps.clone()
    }

    /// Highest commit timestamp, or `None` for a batch of catalog changes only.
    #[getter]
    fn max_ts(&self) -> Option<u64> {
        self.timestamps.last().copied()
    }

    fn __len__(&self) -> usize {
        self.timestamps.len()
    }

    /// Rows of `commits`: `(ts, document_count, index_entry_count, checksum)`.
    fn commit_rows<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let guard = self.inner.lock();
        let out = PyList::empty(py);
        if let Some(b) = guard.as_ref() {
            for r in b.commits.commit_records() {
                out.append((r.ts.0, r.document_count, r.index_entry_count, r.checksum))?;
            }
        }
        Ok(out)
    }

    /// Rows of `documents`: `(ts, id, table_id, value or None, deleted, prev_ts or None,
    /// checksum)` with `id` and `value` as bytes.
    fn document_rows<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let guard = self.inner.lock();
        let out = PyList::empty(py);
        if let Some(b) = guard.as_ref() {
            for r in b.commits.revisions() {
                let value = r.value.as_ref().map(|v| PyBytes::new(py, v));
                let row = PyTuple::new(
                    py,
                    [
                        r.ts.0.into_pyobject(py)?.into_any(),
                        PyBytes::new(py, &r.id.to_bytes()).into_any(),
                        r.id.table.0.into_pyobject(py)?.into_any(),
                        value.into_pyobject(py)?.into_any(),
                        r.value.is_none().into_pyobject(py)?.to_owned().into_any(),
                        r.prev_ts.map(|t| t.0).into_pyobject(py)?.into_any(),
                        r.checksum.into_pyobject(py)?.into_any(),
                    ],
                )?;
                out.append(row)?;
            }
        }
        Ok(out)
    }

    /// Rows of `indexes`: `(index_id, key, ts, doc_id, deleted, checksum)` with `key` and
    /// `doc_id` as bytes.
    fn index_rows<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let guard = self.inner.lock();
        let out = PyList::empty(py);
        if let Some(b) = guard.as_ref() {
            for e in b.commits.index_entries() {
                out.append((
                    e.index_id.0,
                    PyBytes::new(py, &e.key),
                    e.ts.0,
                    PyBytes::new(py, &e.doc_id.to_bytes()),
                    e.deleted,
                    e.checksum,
                ))?;
            }
        }
        Ok(out)
    }

    /// `(ts, n)`: index entries the batch writes at an earlier commit's timestamp (index
    /// backfills), to add to that commit's `index_entry_count` (recomputing its checksum).
    fn count_adjustments(&self) -> Vec<(u64, u32)> {
        let guard = self.inner.lock();
        guard
            .as_ref()
            .map(|b| {
                b.commits
                    .count_adjustments()
                    .into_iter()
                    .map(|(ts, n)| (ts.0, n))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Index ids whose rows the batch deletes.
    fn dropped_indexes(&self) -> Vec<u32> {
        let guard = self.inner.lock();
        guard
            .as_ref()
            .map(|b| b.dropped_indexes.iter().map(|i| i.0).collect())
            .unwrap_or_default()
    }

    /// The catalog JSON to store, if it changed.
    fn catalog_json(&self) -> Option<String> {
        let guard = self.inner.lock();
        guard
            .as_ref()
            .and_then(|b| b.catalog.as_ref().map(|(_, j)| j.clone()))
    }

    fn __repr__(&self) -> String {
        format!("<PersistBatch commits={}>", self.timestamps.len())
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyPersistBatch>()?;
    Ok(())
}
