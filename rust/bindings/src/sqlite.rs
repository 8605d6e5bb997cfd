//! `reactive._core.SqliteStore`: the embedded SQLite backend.

use std::path::PathBuf;
use std::sync::Arc;

use parking_lot::Mutex;
use pyo3::prelude::*;
use pyo3::types::PyDict;
use reactive_core::error::Error;
use reactive_core::log::worker::{BatchSink, GroupCommitWorker};
use reactive_core::sqlite::SqlitePersistence;
use std::os::fd::AsRawFd;

use crate::batch::PyPersistBatch;
use crate::detached;
use crate::engine::{PyEngine, PyLoadedState};

/// An open SQLite database file (WAL, `synchronous=FULL`), held exclusively by this process.
#[pyclass(name = "SqliteStore", frozen, module = "reactive._core")]
pub struct PySqliteStore {
    inner: Mutex<Option<Arc<SqlitePersistence>>>,
}

impl PySqliteStore {
    fn get(&self) -> Result<Arc<SqlitePersistence>, Error> {
        self.inner.lock().clone().ok_or(Error::Closed)
    }
}

#[pymethods]
impl PySqliteStore {
    /// Open (creating if needed) the database at `path`. Raises `IncompatibleDatabaseError`
    /// if another process has it open or its format is newer; `PersistenceError` on I/O.
    #[new]
    fn new(py: Python<'_>, path: PathBuf) -> PyResult<Self> {
        let p = detached(py, move || SqlitePersistence::open(&path))?;
        Ok(PySqliteStore {
            inner: Mutex::new(Some(Arc::new(p))),
        })
    }

    /// Rebuild the state from the log, verifying every record. Raises `CorruptionError`
    /// naming the first bad record.
    fn load(&self, py: Python<'_>) -> PyResult<PyLoadedState> {
        let p = self.get().map_err(crate::errors::CoreError)?;
        Ok(PyLoadedState::new(detached(py, move || p.load())?))
    }

    /// Write a batch in one transaction; durable when this returns.
    fn write_batch(&self, py: Python<'_>, batch: &PyPersistBatch) -> PyResult<()> {
        let p = self.get().map_err(crate::errors::CoreError)?;
        batch.with(py, move |b| p.write_batch(b))
    }

    /// A named global value, or `None`.
    fn get_global(&self, py: Python<'_>, name: &str) -> PyResult<Option<Vec<u8>>> {
        let p = self.get().map_err(crate::errors::CoreError)?;
        detached(py, move || p.get_global(name))
    }

    /// Durably set a named global value.
    fn set_global(&self, py: Python<'_>, name: &str, value: Vec<u8>) -> PyResult<()> {
        let p = self.get().map_err(crate::errors::CoreError)?;
        detached(py, move || p.set_global(name, &value))
    }

    /// Verify every index entry against the live documents of `engine`; returns
    /// `{"documents", "index_entries", "problems": [str]}`.
    fn check<'py>(&self, py: Python<'py>, engine: &PyEngine) -> PyResult<Bound<'py, PyDict>> {
        let p = self.get().map_err(crate::errors::CoreError)?;
        let engine = Arc::clone(engine.inner());
        let report = detached(py, move || {
            let catalog = engine.catalog();
            let ts = engine.visible_ts();
            let store = engine.store().read();
            p.check(catalog, &store, ts)
        })?;
        let d = PyDict::new(py);
        d.set_item("documents", report.documents)?;
        d.set_item("index_entries", report.index_entries)?;
        d.set_item("problems", report.problems)?;
        Ok(d)
    }

    /// The stored value of each document (id bytes) at snapshot `ts` (`None`: absent).
    fn read_documents(
        &self,
        py: Python<'_>,
        ids: Vec<Vec<u8>>,
        ts: u64,
    ) -> PyResult<Vec<Option<Vec<u8>>>> {
        let p = self.get().map_err(crate::errors::CoreError)?;
        detached(py, move || {
            p.read_documents(&ids, reactive_core::timestamp::Timestamp(ts))
        })
    }

    /// Live `(key, document id)` entries of an index with `start <= key < end` at `ts`.
    fn read_index_range(
        &self,
        py: Python<'_>,
        index_id: u32,
        start: Vec<u8>,
        end: Vec<u8>,
        ts: u64,
        limit: usize,
    ) -> PyResult<Vec<(Vec<u8>, Vec<u8>)>> {
        let p = self.get().map_err(crate::errors::CoreError)?;
        detached(py, move || {
            p.read_index_range(
                index_id,
                &start,
                &end,
                reactive_core::timestamp::Timestamp(ts),
                limit,
            )
        })
    }

    /// Rows in `(documents, indexes, commits)`.
    fn row_counts(&self, py: Python<'_>) -> PyResult<(u64, u64, u64)> {
        let p = self.get().map_err(crate::errors::CoreError)?;
        detached(py, move || p.row_counts())
    }

    /// Delete rows no snapshot at or after `cutoff` needs, continuing from the last call;
    /// at most about `max_revisions` window revisions in this call's one transaction.
    /// Returns `{"retained_ts", "revisions", "documents_deleted", "index_entries_deleted",
    /// "done"}`.
    fn prune<'py>(
        &self,
        py: Python<'py>,
        engine: &PyEngine,
        cutoff: u64,
        max_revisions: usize,
    ) -> PyResult<Bound<'py, PyDict>> {
        let p = self.get().map_err(crate::errors::CoreError)?;
        let catalog = engine.inner().catalog();
        let progress = detached(py, move || {
            p.prune(
                &catalog,
                reactive_core::timestamp::Timestamp(cutoff),
                max_revisions,
            )
        })?;
        let d = PyDict::new(py);
        d.set_item("retained_ts", progress.retained_ts.0)?;
        d.set_item("revisions", progress.revisions)?;
        d.set_item("documents_deleted", progress.documents_deleted)?;
        d.set_item("index_entries_deleted", progress.index_entries_deleted)?;
        d.set_item("done", progress.done)?;
        Ok(d)
    }

    /// Start the group-commit worker thread for `engine`: it writes queued commits to this
    /// database in batches and publishes them, announcing each batch on a pipe.
    fn start_worker(&self, py: Python<'_>, engine: &PyEngine) -> PyResult<PyGroupCommitWorker> {
        let p = self.get().map_err(crate::errors::CoreError)?;
        let engine = Arc::clone(engine.inner());
        let worker = detached(py, move || {
            let sink: Arc<dyn BatchSink> = p;
            GroupCommitWorker::start(engine, sink)
        })?;
        Ok(PyGroupCommitWorker { inner: worker })
    }

    /// Close the file and release the process lock. Later calls raise
    /// `DatabaseClosedError`.
    fn close(&self, py: Python<'_>) {
        let store = self.inner.lock().take();
        // Closing may checkpoint the WAL: file I/O, so without the GIL.
        py.detach(move || drop(store));
    }
}

/// The group-commit worker thread (see `reactive_core::log::worker`).
#[pyclass(name = "GroupCommitWorker", frozen, module = "reactive._core")]
pub struct PyGroupCommitWorker {
    inner: GroupCommitWorker,
}

#[pymethods]
impl PyGroupCommitWorker {
    /// The read end of the pipe that gets one byte per completed batch.
    fn fileno(&self) -> i32 {
        self.inner.reader().as_raw_fd()
    }

    /// Completed batches since the last call:
    /// `[(generation, [commit ts...], [invalidated subscription id...], error or None)]`.
    #[allow(clippy::type_complexity)]
    fn take_completions(&self) -> Vec<(u64, Vec<u64>, Vec<u64>, Option<String>)> {
        self.inner
            .take_completions()
            .into_iter()
            .map(|c| {
                (
                    c.generation,
                    c.timestamps.into_iter().map(|t| t.0).collect(),
                    c.invalidated.into_iter().map(|s| s.0).collect(),
                    c.error.map(|e| e.to_string()),
                )
            })
            .collect()
    }

    /// Batches written so far.
    #[getter]
    fn batches_written(&self) -> u64 {
        self.inner.batches_written()
    }

    /// Persist everything queued, then stop the thread (blocks; call it off the event loop).
    fn stop(&self, py: Python<'_>) {
        py.detach(|| self.inner.stop());
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PySqliteStore>()?;
    m.add_class::<PyGroupCommitWorker>()?;
    Ok(())
}
