//! `reactive._core.Engine` and `reactive._core.LoadedState`.

use std::sync::Arc;

use parking_lot::Mutex;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};
use reactive_core::catalog::{IndexId, IndexState};
use reactive_core::engine::{Engine, EngineConfig};
use reactive_core::error::Error;
use reactive_core::id::DocumentId;
use reactive_core::limits::TransactionLimits;
use reactive_core::log::prune::WindowRevision;
use reactive_core::log::record::{CommitRecord, DocumentRevision};
use reactive_core::log::recovery::LoadedState;
use reactive_core::subscriptions::SubscriptionId;
use reactive_core::timestamp::Timestamp;
use reactive_core::write_log::WriteLogConfig;

use crate::batch::PyPersistBatch;
use crate::convert::document_to_py;
use crate::detached;
use crate::errors::CoreError;
use crate::transaction::PyTransaction;

/// A row of `documents`: `(ts, id, table_id, value, deleted, prev_ts, checksum)`.
type DocumentRow = (i64, Vec<u8>, i64, Option<Vec<u8>>, bool, Option<i64>, i64);

/// State rebuilt from persistence, consumed by `Engine(...)`.
#[pyclass(name = "LoadedState", frozen, module = "reactive._core")]
pub struct PyLoadedState {
    inner: Mutex<Option<LoadedState>>,
    max_ts: u64,
    commits: usize,
    revisions: usize,
}

impl PyLoadedState {
    pub fn new(state: LoadedState) -> Self {
        PyLoadedState {
            max_ts: state.max_ts.0,
            commits: state.commits,
            revisions: state.revisions,
            inner: Mutex::new(Some(state)),
        }
    }
}

#[pymethods]
impl PyLoadedState {
    /// Highest timestamp persisted.
    #[getter]
    fn max_ts(&self) -> u64 {
        self.max_ts
    }

    /// Commits loaded.
    #[getter]
    fn commits(&self) -> usize {
        self.commits
    }

    /// Document revisions loaded.
    #[getter]
    fn revisions(&self) -> usize {
        self.revisions
    }
}

/// The engine of one database (see `reactive_core::engine`).
#[pyclass(name = "Engine", frozen, module = "reactive._core")]
pub struct PyEngine {
    inner: Arc<Engine>,
}

impl PyEngine {
    pub fn inner(&self) -> &Arc<Engine> {
        &self.inner
    }
}

fn get_usize(d: Option<&Bound<'_, PyDict>>, key: &str, default: usize) -> PyResult<usize> {
    match d.map(|d| d.get_item(key)).transpose()?.flatten() {
        Some(v) => v.extract(),
        None => Ok(default),
    }
}

#[pymethods]
impl PyEngine {
    /// An engine over a loaded state. `config` may set the transaction limits
    /// (`max_documents_read`, `max_bytes_read`, `max_read_intervals`,
    /// `max_documents_written`, `max_bytes_written`) and the write log window
    /// (`write_log_max_age_ns`, `write_log_max_entries`); `unsafe_skip_validation` (tests
    /// only: 1 commits without conflict checks, breaking serializability on purpose).
    #[new]
    #[pyo3(signature = (state, config=None))]
    fn new(state: &PyLoadedState, config: Option<&Bound<'_, PyDict>>) -> PyResult<Self> {
        let loaded = state.inner.lock().take().ok_or_else(|| {
            CoreError(Error::InvalidArgument(
                "this LoadedState was already used".into(),
            ))
        })?;
        let d = TransactionLimits::default();
        let w = WriteLogConfig::default();
        let limits = TransactionLimits {
            max_documents_read: get_usize(config, "max_documents_read", d.max_documents_read)?,
            max_bytes_read: get_usize(config, "max_bytes_read", d.max_bytes_read)?,
            max_read_intervals: get_usize(config, "max_read_intervals", d.max_read_intervals)?,
            max_documents_written: get_usize(
                config,
                "max_documents_written",
                d.max_documents_written,
            )?,
            max_bytes_written: get_usize(config, "max_bytes_written", d.max_bytes_written)?,
        };
        let write_log = WriteLogConfig {
            max_age_ns: get_usize(config, "write_log_max_age_ns", w.max_age_ns as usize)? as u64,
            max_entries: get_usize(config, "write_log_max_entries", w.max_entries)?,
        };
        Ok(PyEngine {
            inner: Arc::new(Engine::new(
                loaded,
                EngineConfig {
                    limits,
                    write_log,
                    unsafe_skip_validation: get_usize(config, "unsafe_skip_validation", 0)? != 0,
                },
            )),
        })
    }

    /// The newest visible timestamp (u64 ns): every commit at or below it is durable.
    #[getter]
    fn visible_ts(&self) -> u64 {
        self.inner.visible_ts().0
    }

    /// Begin a transaction at the visible timestamp.
    fn begin(&self, py: Python<'_>, read_only: bool) -> PyResult<PyTransaction> {
        let engine = Arc::clone(&self.inner);
        detached(py, move || Ok(engine.begin(read_only))).map(PyTransaction::new)
    }

    /// Begin a read-only transaction at an earlier timestamp inside the retention window.
    fn begin_at(&self, ts: u64) -> PyResult<PyTransaction> {
        Ok(PyTransaction::new(
            self.inner.begin_at(Timestamp(ts)).map_err(CoreError)?,
        ))
    }

    /// Validate and queue a transaction; returns its commit timestamp, or `None` if it
    /// wrote nothing. Raises `WriteConflict` / `TransactionTooOldError` on conflicts.
    fn commit(&self, py: Python<'_>, txn: &PyTransaction) -> PyResult<Option<u64>> {
        let t = txn.take().map_err(CoreError)?;
        let engine = Arc::clone(&self.inner);
        detached(py, move || engine.commit(t)).map(|ts| ts.map(|t| t.0))
    }

    /// Validate and queue a transaction a follower ran (`Transaction.forwarded()`'s
    /// bytes); returns its commit timestamp, or `None` if it wrote nothing. Raises
    /// `WriteConflict` / `TransactionTooOldError` on conflicts, `InvalidQueryError` for
    /// malformed bytes or a begin timestamp not visible here yet.
    fn commit_forwarded(&self, py: Python<'_>, data: &[u8]) -> PyResult<Option<u64>> {
        let engine = Arc::clone(&self.inner);
        let data = data.to_vec();
        detached(py, move || {
            let forwarded = reactive_core::forward::ForwardedTransaction::decode(&data)?;
            engine.commit_forwarded(forwarded)
        })
        .map(|ts| ts.map(|t| t.0))
    }

    /// The queue generation: grows with each commit, catalog change or index drop queued.
    #[getter]
    fn queue_generation(&self) -> u64 {
        self.inner.queue_generation()
    }

    /// Whether commits or catalog changes wait to be persisted.
    fn has_pending(&self) -> bool {
        self.inner.has_pending()
    }

    /// Take everything pending as one batch, or `None` if there is nothing.
    fn take_batch(&self, py: Python<'_>) -> PyResult<Option<PyPersistBatch>> {
        let engine = Arc::clone(&self.inner);
        let batch = detached(py, move || Ok(engine.take_batch()))?;
        Ok((!batch.is_empty()).then(|| PyPersistBatch::new(batch)))
    }

    /// Make a durable batch visible; returns the ids of the subscriptions it invalidates.
    fn publish(&self, py: Python<'_>, batch: &PyPersistBatch) -> PyResult<Vec<u64>> {
        let engine = Arc::clone(&self.inner);
        let ids = batch.with(py, move |b| Ok(engine.publish(b)))?;
        Ok(ids.into_iter().map(|s| s.0).collect())
    }

    /// Drop a batch that failed to persist: its commits never become visible.
    fn abort(&self, py: Python<'_>, batch: &PyPersistBatch) -> PyResult<()> {
        let b = batch.take().map_err(CoreError)?;
        let engine = Arc::clone(&self.inner);
        detached(py, move || {
            engine.abort(b);
            Ok(())
        })
    }

    /// Create a table if it does not exist; returns its number.
    fn create_table(&self, py: Python<'_>, name: &str) -> PyResult<u32> {
        let engine = Arc::clone(&self.inner);
        detached(py, move || engine.create_table(name)).map(|t| t.0)
    }

    /// Create table `name` with number `number` (importing a snapshot).
    fn create_table_numbered(&self, py: Python<'_>, name: &str, number: u32) -> PyResult<u32> {
        let engine = Arc::clone(&self.inner);
        detached(py, move || engine.create_table_numbered(name, number)).map(|t| t.0)
    }

    /// Create a system table (name starting with `_`) if it does not exist.
    fn create_system_table(&self, py: Python<'_>, name: &str) -> PyResult<u32> {
        let engine = Arc::clone(&self.inner);
        detached(py, move || engine.create_system_table(name)).map(|t| t.0)
    }

    /// Add a backfilling index; returns `(index_id, snapshot_ts)`.
    fn add_index(
        &self,
        py: Python<'_>,
        table: &str,
        name: &str,
        fields: Vec<String>,
    ) -> PyResult<(u32, u64)> {
        let engine = Arc::clone(&self.inner);
        detached(py, move || engine.add_index(table, name, fields)).map(|(i, ts)| (i.0, ts.0))
    }

    /// Mark an index ready for snapshots at or after `since`.
    fn set_index_ready(&self, py: Python<'_>, index_id: u32, since: u64) -> PyResult<()> {
        let engine = Arc::clone(&self.inner);
        detached(py, move || {
            engine.set_index_ready(IndexId(index_id), Timestamp(since))
        })
    }

    /// Remove an index (its rows are deleted with the next batch).
    fn drop_index(&self, py: Python<'_>, index_id: u32) -> PyResult<()> {
        let engine = Arc::clone(&self.inner);
        detached(py, move || engine.drop_index(IndexId(index_id)))
    }

    /// Queue one backfill chunk; returns `(chunk_ts or None, next position or None)`.
    fn backfill_chunk(
        &self,
        py: Python<'_>,
        index_id: u32,
        snapshot_ts: u64,
        after: Option<Vec<u8>>,
        chunk: usize,
    ) -> PyResult<(Option<u64>, Option<Vec<u8>>)> {
        let engine = Arc::clone(&self.inner);
        detached(py, move || {
            engine.backfill_chunk(
                IndexId(index_id),
                Timestamp(snapshot_ts),
                after.as_deref(),
                chunk,
            )
        })
        .map(|(ts, next)| (ts.map(|t| t.0), next))
    }

    /// The catalog as a list of tables:
    /// `[{"name", "number", "indexes": [{"id", "name", "fields", "ready_since"}]}]`
    /// where `fields` are the user's fields and `ready_since` is `None` while backfilling.
    fn tables<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let catalog = self.inner.catalog();
        let out = PyList::empty(py);
        for t in catalog.tables() {
            let d = PyDict::new(py);
            d.set_item("name", &t.name)?;
            d.set_item("number", t.number)?;
            let indexes = PyList::empty(py);
            for i in catalog.table_indexes(t) {
                let id = PyDict::new(py);
                id.set_item("id", i.id.0)?;
                id.set_item("name", &i.name)?;
                id.set_item("fields", i.user_fields.clone())?;
                let since = match i.state {
                    IndexState::Ready { since } => Some(since),
                    IndexState::Backfilling => None,
                };
                id.set_item("ready_since", since)?;
                indexes.append(id)?;
            }
            d.set_item("indexes", indexes)?;
            out.append(d)?;
        }
        Ok(out)
    }

    /// Register a subscription on a finished query's read set; returns
    /// `(subscription_id, already_invalidated)`.
    fn subscribe(&self, py: Python<'_>, txn: &PyTransaction) -> PyResult<(u64, bool)> {
        let engine = Arc::clone(&self.inner);
        let (reads, vector, full, ts) = txn.with(py, |t| {
            let (reads, vector) = t.subscription_reads();
            Ok((reads, vector, t.read_set().clone(), t.begin_ts()))
        })?;
        let (id, missed) = detached(py, move || {
            Ok(engine.subscribe_searches(&reads, vector, &full, ts))
        })?;
        Ok((id.0, missed))
    }

    /// Replace a subscription's read set with a re-run's; returns whether it is already
    /// invalidated.
    fn resubscribe(
        &self,
        py: Python<'_>,
        subscription_id: u64,
        txn: &PyTransaction,
    ) -> PyResult<bool> {
        let engine = Arc::clone(&self.inner);
        let (reads, vector, full, ts) = txn.with(py, |t| {
            let (reads, vector) = t.subscription_reads();
            Ok((reads, vector, t.read_set().clone(), t.begin_ts()))
        })?;
        detached(py, move || {
            Ok(engine.resubscribe_searches(
                SubscriptionId(subscription_id),
                &reads,
                vector,
                &full,
                ts,
            ))
        })
    }

    /// Remove a subscription; returns whether it existed.
    fn unsubscribe(&self, py: Python<'_>, subscription_id: u64) -> PyResult<bool> {
        let engine = Arc::clone(&self.inner);
        detached(py, move || {
            Ok(engine.unsubscribe(SubscriptionId(subscription_id)))
        })
    }

    /// Number of subscriptions registered.
    fn subscription_count(&self) -> usize {
        self.inner.subscription_count()
    }

    /// Follow another process's log (`True`: writes, catalog changes and backfills raise
    /// `ReadOnlyError`) or become the writer (`False`).
    fn set_following(&self, following: bool) {
        self.inner.set_following(following);
    }

    /// Whether this engine follows another process's log.
    #[getter]
    fn following(&self) -> bool {
        self.inner.is_following()
    }

    /// Apply a slice of the log another process committed (a follower): `catalog_json` is
    /// `globals.catalog` as of the slice's snapshot (or `None`), `commits` rows of
    /// `commits` `(ts, document_count, index_entry_count, checksum)` with `ts` above the
    /// visible timestamp, `documents` every row of `documents`
    /// `(ts, id, table_id, value, deleted, prev_ts, checksum)` at those timestamps.
    /// Returns `{"invalidated": [subscription id], "first_ts", "last_ts" (None when there
    /// was no commit), "commits", "revisions"}`.
    ///
    /// Raises `CorruptionError` (a bad row; nothing applied), `LogGapError` (the slice does
    /// not continue what was applied: reload), `InvalidQueryError` (this engine has commits
    /// of its own waiting).
    fn apply_log<'py>(
        &self,
        py: Python<'py>,
        catalog_json: Option<String>,
        commits: Vec<(i64, i64, i64, i64)>,
        documents: Vec<DocumentRow>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let engine = Arc::clone(&self.inner);
        let applied = detached(py, move || {
            let catalog = catalog_json
                .as_deref()
                .map(reactive_core::catalog::Catalog::from_json)
                .transpose()?;
            let commits = commits
                .into_iter()
                .map(|(ts, d, i, c)| CommitRecord::from_row(ts, d, i, c))
                .collect::<Result<Vec<_>, Error>>()?;
            let revisions = documents
                .into_iter()
                .map(|(ts, id, table, value, deleted, prev, checksum)| {
                    DocumentRevision::from_row(ts, &id, table, value, deleted, prev, checksum)
                })
                .collect::<Result<Vec<_>, Error>>()?;
            engine.apply_log(catalog, &commits, &revisions)
        })?;
        let d = PyDict::new(py);
        let ids: Vec<u64> = applied.invalidated.iter().map(|s| s.0).collect();
        d.set_item("invalidated", ids)?;
        d.set_item("first_ts", applied.first_ts.map(|t| t.0))?;
        d.set_item("last_ts", applied.last_ts.map(|t| t.0))?;
        d.set_item("commits", applied.commits)?;
        d.set_item("revisions", applied.revisions)?;
        Ok(d)
    }

    /// Drop versions no snapshot at or after `min_ts` can see; returns how many.
    fn retain(&self, py: Python<'_>, min_ts: u64) -> PyResult<usize> {
        let engine = Arc::clone(&self.inner);
        detached(py, move || Ok(engine.retain(Timestamp(min_ts))))
    }

    /// The rows that retention deletes for a window of revisions (`reactive_core::log::prune`):
    /// `window` is `[(ts, id bytes, value or None, prev_ts or None, prev value or None)]`;
    /// returns `(documents [(ts, id bytes)], index entries [(ts, index_id, key, doc id)])`.
    #[allow(clippy::type_complexity)]
    fn prune_plan(
        &self,
        py: Python<'_>,
        window: Vec<(u64, Vec<u8>, Option<Vec<u8>>, Option<u64>, Option<Vec<u8>>)>,
    ) -> PyResult<(Vec<(u64, Vec<u8>)>, Vec<(u64, u32, Vec<u8>, Vec<u8>)>)> {
        let catalog = self.inner.catalog();
        let plan = detached(py, move || {
            let mut revisions = Vec::with_capacity(window.len());
            for (ts, id, value, prev_ts, prev_value) in window {
                let id = DocumentId::from_bytes(&id).map_err(|e| {
                    Error::Corrupt(format!("document revision at ts {ts}: bad id: {e}"))
                })?;
                revisions.push(WindowRevision {
                    ts: Timestamp(ts),
                    id,
                    value,
                    prev_ts: prev_ts.map(Timestamp),
                    prev_value,
                });
            }
            reactive_core::log::prune::plan(&catalog, &revisions)
        })?;
        Ok((
            plan.documents
                .into_iter()
                .map(|(ts, id)| (ts.0, id.to_bytes()))
                .collect(),
            plan.index_entries
                .into_iter()
                .map(|(ts, index, key, id)| (ts.0, index.0, key, id.to_bytes()))
                .collect(),
        ))
    }

    /// Number of live documents of `table` at the visible timestamp.
    fn count_documents(&self, py: Python<'_>, table: &str) -> PyResult<usize> {
        let engine = Arc::clone(&self.inner);
        detached(py, move || engine.count_documents(table))
    }

    /// Up to `limit` documents of `table` at `ts` after position `after`; returns
    /// `(documents, next position or None)`.
    fn table_page<'py>(
        &self,
        py: Python<'py>,
        table: &str,
        ts: u64,
        after: Option<Vec<u8>>,
        limit: usize,
    ) -> PyResult<(Bound<'py, PyList>, Option<Vec<u8>>)> {
        let engine = Arc::clone(&self.inner);
        let (docs, next) = detached(py, move || {
            engine.table_page(table, Timestamp(ts), after.as_deref(), limit)
        })?;
        let out = PyList::empty(py);
        for d in &docs {
            out.append(document_to_py(py, d)?)?;
        }
        Ok((out, next))
    }

    /// Register a full-text index and build it from `table`'s documents (tables past
    /// 20,000 documents are built on a thread; searches wait for it a few seconds).
    #[pyo3(signature = (table, name, search_field, filter_fields))]
    fn register_text_index(
        &self,
        py: Python<'_>,
        table: &str,
        name: &str,
        search_field: &str,
        filter_fields: Vec<String>,
    ) -> PyResult<()> {
        let engine = Arc::clone(&self.inner);
        detached(py, move || {
            engine.register_text_index(table, name, search_field, &filter_fields)
        })
    }

    /// Register a vector index and build it; exact search while at most `exact_limit`
    /// candidates, an approximate graph past that.
    #[pyo3(signature = (table, name, vector_field, dimensions, filter_fields, exact_limit=10_000))]
    #[allow(clippy::too_many_arguments)]
    fn register_vector_index(
        &self,
        py: Python<'_>,
        table: &str,
        name: &str,
        vector_field: &str,
        dimensions: usize,
        filter_fields: Vec<String>,
        exact_limit: usize,
    ) -> PyResult<()> {
        let engine = Arc::clone(&self.inner);
        detached(py, move || {
            engine.register_vector_index(
                table,
                name,
                vector_field,
                dimensions,
                &filter_fields,
                exact_limit,
            )
        })
    }

    /// Drop every search index not in `keep` (a list of `(table, index)`).
    fn retain_search_indexes(&self, py: Python<'_>, keep: Vec<(String, String)>) {
        let engine = Arc::clone(&self.inner);
        py.detach(move || engine.retain_search_indexes(&keep));
    }

    /// The registered search indexes: dicts `{table, name, kind ("text" | "vector"),
    /// ready, pending (text: changes not yet in the base), segments (text: tantivy segments of
    /// the base), vectors (vector: live rows)}`.
    fn search_indexes<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let (_, registry) = self.inner.search().current();
        let out = PyList::empty(py);
        for i in &registry.text {
            let d = PyDict::new(py);
            d.set_item("table", &i.def.table_name)?;
            d.set_item("name", &i.def.name)?;
            d.set_item("kind", "text")?;
            d.set_item("ready", i.is_ready())?;
            d.set_item("pending", i.pending())?;
            d.set_item("segments", i.segments())?;
            out.append(d)?;
        }
        for i in &registry.vector {
            let d = PyDict::new(py);
            d.set_item("table", &i.def.table_name)?;
            d.set_item("name", &i.def.name)?;
            d.set_item("kind", "vector")?;
            d.set_item("ready", i.is_ready())?;
            d.set_item("vectors", i.len())?;
            out.append(d)?;
        }
        Ok(out)
    }

    /// Stop the search indexes' background thread (the database is closing).
    fn stop_search_maintenance(&self, py: Python<'_>) {
        let engine = Arc::clone(&self.inner);
        py.detach(move || engine.stop_search_maintenance());
    }

    /// Move every text index's recent changes into its base now, and bring vector indexes'
    /// approximate graphs up to date (benchmarks and tests; a thread does this anyway).
    fn flush_search_indexes(&self, py: Python<'_>) -> PyResult<()> {
        let engine = Arc::clone(&self.inner);
        detached(py, move || engine.search().flush_all())
    }

    /// Check search index `name` of `table` against the table's documents at the visible
    /// timestamp; returns the ids (encoded) indexed wrongly (empty: consistent).
    fn verify_search_index(
        &self,
        py: Python<'_>,
        table: &str,
        name: &str,
    ) -> PyResult<Vec<String>> {
        let engine = Arc::clone(&self.inner);
        detached(py, move || engine.verify_text_index(table, name))
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyEngine>()?;
    m.add_class::<PyLoadedState>()?;
    Ok(())
}
