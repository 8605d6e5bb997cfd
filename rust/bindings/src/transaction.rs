//! `reactive._core.Transaction`: reads at a snapshot and buffered writes.

use std::sync::Arc;

use parking_lot::Mutex;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyTuple};
use reactive_core::catalog::Catalog;
use reactive_core::error::Error;
use reactive_core::filter::{Arithmetic, Comparison, Expr};
use reactive_core::id::{DocumentId, TableNumber};
use reactive_core::query::{self, RangeOp};
use reactive_core::transaction::{Savepoint, ScanRequest, ScanResult, Transaction};
use reactive_core::value::{FieldPath, Value};

use crate::convert::{document_to_py, to_object, to_value};
use crate::detached;
use crate::errors::{CoreError, InvalidQueryError};

/// A savepoint of a transaction (`Transaction.savepoint()`), for `rollback_to`.
#[pyclass(name = "Savepoint", frozen, module = "reactive._core")]
pub struct PySavepoint {
    inner: Savepoint,
}

/// A transaction of the engine. Not shared between threads at once (one function run).
#[pyclass(name = "Transaction", frozen, module = "reactive._core")]
pub struct PyTransaction {
    inner: Mutex<Option<Transaction>>,
    begin_ts: u64,
    read_only: bool,
}

impl PyTransaction {
    pub fn new(txn: Transaction) -> Self {
        PyTransaction {
            begin_ts: txn.begin_ts().0,
            read_only: txn.is_read_only(),
            inner: Mutex::new(Some(txn)),
        }
    }

    /// Take the transaction out (to commit it).
    pub fn take(&self) -> Result<Transaction, Error> {
        self.inner.lock().take().ok_or(Error::TransactionFinished)
    }

    /// Run `f` on the transaction with the GIL released.
    pub fn with<T: Send>(
        &self,
        py: Python<'_>,
        f: impl FnOnce(&mut Transaction) -> Result<T, Error> + Send,
    ) -> PyResult<T> {
        detached(py, || {
            let mut guard = self.inner.lock();
            let txn = guard.as_mut().ok_or(Error::TransactionFinished)?;
            f(txn)
        })
    }
}

fn parse_id(id: &str) -> PyResult<DocumentId> {
    DocumentId::parse(id).map_err(|e| CoreError(e.into()).into())
}

fn table_number(catalog: &Catalog, table: &str) -> Result<TableNumber, Error> {
    catalog
        .table(table)
        .map(|t| TableNumber(t.number))
        .ok_or_else(|| Error::TableNotFound(table.to_owned()))
}

fn to_filters(list: &Bound<'_, PyList>, what: &str) -> PyResult<Vec<(String, Value)>> {
    list.iter()
        .map(|item| {
            let (field, value): (String, Bound<'_, PyAny>) = item
                .extract()
                .map_err(|_| bad_query(format!("{what}: expected (field, value) pairs")))?;
            let value = to_value(&value, &format!("{what} on {field:?}"))?;
            Ok((field, value))
        })
        .collect()
}

fn bad_query(message: String) -> PyErr {
    InvalidQueryError::new_err(message)
}

fn expr_operand(obj: &Bound<'_, PyAny>, i: usize, depth: usize) -> PyResult<Box<Expr>> {
    let tuple = obj.cast::<PyTuple>()?;
    let item = tuple
        .get_item(i)
        .map_err(|_| bad_query(format!("filter: operator needs operand {i}")))?;
    Ok(Box::new(to_expr(&item, depth + 1)?))
}

/// Convert a filter expression tree of tuples (`("eq", ("field", "a"), ("literal", 1))`).
fn to_expr(obj: &Bound<'_, PyAny>, depth: usize) -> PyResult<Expr> {
    if depth > reactive_core::filter::MAX_EXPRESSION_DEPTH {
        return Err(bad_query("filter expression is nested too deeply".into()));
    }
    let tuple = obj
        .cast::<PyTuple>()
        .map_err(|_| bad_query("filter: expected an expression built with q".into()))?;
    let tag: String = tuple
        .get_item(0)
        .and_then(|t| t.extract())
        .map_err(|_| bad_query("filter: malformed expression".into()))?;
    let cmp = |c| -> PyResult<Expr> {
        Ok(Expr::Compare(
            c,
            expr_operand(obj, 1, depth)?,
            expr_operand(obj, 2, depth)?,
        ))
    };
    let arith = |a| -> PyResult<Expr> {
        Ok(Expr::Arith(
            a,
            expr_operand(obj, 1, depth)?,
            expr_operand(obj, 2, depth)?,
        ))
    };
    let list = |name: &str| -> PyResult<Vec<Expr>> {
        let items = tuple.get_item(1)?;
        let items = items
            .cast::<PyList>()
            .map_err(|_| bad_query(format!("filter: {name} needs a list")))?;
        items.iter().map(|x| to_expr(&x, depth + 1)).collect()
    };
    Ok(match tag.as_str() {
        "field" => {
            let path: String = tuple.get_item(1)?.extract()?;
            Expr::Field(FieldPath::parse(&path).map_err(|e| bad_query(e.to_string()))?)
        }
        "literal" => Expr::Literal(to_value(&tuple.get_item(1)?, "filter literal")?),
        "eq" => cmp(Comparison::Eq)?,
        "neq" => cmp(Comparison::Neq)?,
        "lt" => cmp(Comparison::Lt)?,
        "lte" => cmp(Comparison::Lte)?,
        "gt" => cmp(Comparison::Gt)?,
        "gte" => cmp(Comparison::Gte)?,
        "add" => arith(Arithmetic::Add)?,
        "sub" => arith(Arithmetic::Sub)?,
        "mul" => arith(Arithmetic::Mul)?,
        "div" => arith(Arithmetic::Div)?,
        "mod" => arith(Arithmetic::Mod)?,
        "and" => Expr::And(list("and")?),
        "or" => Expr::Or(list("or")?),
        "not" => Expr::Not(expr_operand(obj, 1, depth)?),
        "neg" => Expr::Neg(expr_operand(obj, 1, depth)?),
        other => return Err(bad_query(format!("filter: unknown operator {other:?}"))),
    })
}

fn to_range_ops(ops: &Bound<'_, PyList>) -> PyResult<Vec<RangeOp>> {
    let mut out = Vec::with_capacity(ops.len());
    for op in ops.iter() {
        let (name, field, value): (String, String, Bound<'_, PyAny>) = op.extract()?;
        let v = to_value(&value, &format!("index range value of {field:?}"))?;
        out.push(match name.as_str() {
            "eq" => RangeOp::Eq(field, v),
            "gt" => RangeOp::Gt(field, v),
            "gte" => RangeOp::Gte(field, v),
            "lt" => RangeOp::Lt(field, v),
            "lte" => RangeOp::Lte(field, v),
            other => {
                return Err(bad_query(format!(
                    "index range: unknown operator {other:?}"
                )));
            }
        });
    }
    Ok(out)
}

#[pymethods]
impl PyTransaction {
    /// The snapshot timestamp (u64 ns) this transaction reads.
    #[getter]
    fn begin_ts(&self) -> u64 {
        self.begin_ts
    }

    /// Whether writes are refused.
    #[getter]
    fn read_only(&self) -> bool {
        self.read_only
    }

    /// Whether the transaction was committed (or otherwise consumed).
    #[getter]
    fn finished(&self) -> bool {
        self.inner.lock().is_none()
    }

    /// The document with this id as the transaction sees it, or `None`.
    fn get<'py>(&self, py: Python<'py>, id: &str) -> PyResult<Option<Bound<'py, PyAny>>> {
        let id = parse_id(id)?;
        let doc = self.with(py, |t| t.get(&id))?;
        doc.map(|d| document_to_py(py, &d)).transpose()
    }

    /// Insert a document (`fields` without system fields) into `table`; returns the new id.
    fn insert(&self, py: Python<'_>, table: &str, fields: &Bound<'_, PyAny>) -> PyResult<String> {
        let fields = to_object(fields, &format!("document for table {table:?}"))?;
        self.with(py, |t| {
            let number = table_number(t.catalog(), table)?;
            Ok(t.insert(number, fields)?.id.encode())
        })
    }

    /// Insert a document with a given `_id` and `_creationTime` (importing a snapshot).
    fn insert_existing(
        &self,
        py: Python<'_>,
        id: &str,
        creation_time: f64,
        fields: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let parsed = parse_id(id)?;
        let fields = to_object(fields, &format!("document {id}"))?;
        self.with(py, |t| {
            t.insert_existing(parsed, creation_time, fields).map(|_| ())
        })
    }

    /// Replace a document's fields (system fields are kept).
    fn replace(&self, py: Python<'_>, id: &str, fields: &Bound<'_, PyAny>) -> PyResult<()> {
        let parsed = parse_id(id)?;
        let fields = to_object(fields, &format!("document {id}"))?;
        self.with(py, |t| t.replace(&parsed, fields).map(|_| ()))
    }

    /// Delete a document.
    fn delete(&self, py: Python<'_>, id: &str) -> PyResult<()> {
        let parsed = parse_id(id)?;
        self.with(py, |t| t.delete(&parsed).map(|_| ()))
    }

    /// Scan `table`'s index `index` over the range `ops` (a list of `(op, field, value)`).
    ///
    /// Returns `(documents, last_key, done)`: up to `limit` documents passing `filter`, the
    /// keyspace key of the last entry scanned (a cursor position) and whether the range was
    /// exhausted. `after` and `until` are cursor positions (exclusive start, inclusive end
    /// in scan order).
    #[pyo3(signature = (table, index, ops, order, limit, filter, after, until, new_query))]
    #[allow(clippy::too_many_arguments)]
    fn scan<'py>(
        &self,
        py: Python<'py>,
        table: &str,
        index: &str,
        ops: &Bound<'py, PyList>,
        order: &str,
        limit: Option<usize>,
        filter: Option<&Bound<'py, PyAny>>,
        after: Option<&[u8]>,
        until: Option<&[u8]>,
        new_query: bool,
    ) -> PyResult<(Bound<'py, PyList>, Option<Bound<'py, PyBytes>>, bool)> {
        let descending = match order {
            "asc" => false,
            "desc" => true,
            other => {
                return Err(bad_query(format!(
                    "order must be \"asc\" or \"desc\", not {other:?}"
                )));
            }
        };
        let ops = to_range_ops(ops)?;
        let filter = filter.map(|f| to_expr(f, 0)).transpose()?;
        let ScanResult {
            docs,
            last_key,
            done,
        } = self.with(py, |t| {
            let catalog = Arc::clone(t.catalog());
            let Some(tdesc) = catalog.table(table) else {
                // A table that does not exist holds no documents; its creation is what
                // would change the answer, so that is what the read set records.
                if index != "by_id" && index != "by_creation_time" {
                    return Err(Error::IndexNotFound {
                        table: table.into(),
                        index: index.into(),
                    });
                }
                t.read_missing_table(table, new_query)?;
                return Ok(ScanResult {
                    done: true,
                    ..ScanResult::default()
                });
            };
            let idesc =
                catalog
                    .index_by_name(tdesc, index)
                    .ok_or_else(|| Error::IndexNotFound {
                        table: table.into(),
                        index: index.into(),
                    })?;
            if !idesc.ready_at(t.begin_ts().0) {
                return Err(Error::IndexNotReady {
                    table: table.into(),
                    index: index.into(),
                });
            }
            let interval = query::index_range(idesc, table, &ops)?;
            let interval = query::narrow(&interval, after, until, descending);
            if query::is_empty(&interval) {
                return Ok(ScanResult {
                    done: true,
                    ..ScanResult::default()
                });
            }
            t.scan(&ScanRequest {
                index: idesc.id,
                interval,
                descending,
                limit,
                filter,
                new_query,
            })
        })?;
        let out_docs = PyList::empty(py);
        for d in &docs {
            out_docs.append(document_to_py(py, d)?)?;
        }
        Ok((out_docs, last_key.map(|k| PyBytes::new(py, &k)), done))
    }

    /// Full-text search: `text`'s terms (the last also as a prefix) in search index
    /// `index` of `table`, under `filters` (a list of `(field, value)` equalities on filter
    /// fields). Returns up to `limit` `(document, score)` pairs, best first, then by `_id`;
    /// with `filter` (an expression tree as `scan` takes), only results passing it.
    #[pyo3(signature = (table, index, text, filters, limit, filter=None))]
    #[allow(clippy::too_many_arguments)]
    fn text_search<'py>(
        &self,
        py: Python<'py>,
        table: &str,
        index: &str,
        text: &str,
        filters: &Bound<'py, PyList>,
        limit: usize,
        filter: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyList>> {
        let filters = to_filters(filters, "search filter")?;
        let filter = filter.map(|f| to_expr(f, 0)).transpose()?;
        let found = self.with(py, |t| {
            t.text_search(table, index, text, &filters, limit, filter.as_ref())
        })?;
        let out = PyList::empty(py);
        for (doc, score) in &found {
            out.append((document_to_py(py, doc)?, *score))?;
        }
        Ok(out)
    }

    /// Vector search: the `limit` nearest documents to `vector` by cosine similarity in
    /// vector index `index` of `table`, among those whose filter fields equal any of
    /// `filters` (`(field, value)` pairs; empty: all). Returns `(id, score)` pairs.
    fn vector_search<'py>(
        &self,
        py: Python<'py>,
        table: &str,
        index: &str,
        vector: &Bound<'py, PyAny>,
        limit: usize,
        filters: &Bound<'py, PyList>,
    ) -> PyResult<Vec<(String, f32)>> {
        let filters = to_filters(filters, "vector search filter")?;
        let vector = to_value(vector, "vector")?;
        let found = self.with(py, |t| {
            t.vector_search(table, index, &vector, limit, &filters)
        })?;
        Ok(found.into_iter().map(|(id, s)| (id.encode(), s)).collect())
    }

    /// `s` if it is a valid id of `table`, else `None`.
    fn normalize_id(&self, table: &str, s: &str) -> PyResult<Option<String>> {
        let Ok(id) = DocumentId::parse(s) else {
            return Ok(None);
        };
        let guard = self.inner.lock();
        let txn = guard
            .as_ref()
            .ok_or(CoreError(Error::TransactionFinished))?;
        Ok(txn
            .catalog()
            .table(table)
            .filter(|t| t.number == id.table.0)
            .map(|_| s.to_owned()))
    }

    /// The name of the table an id belongs to, if it is a valid id of a known table.
    fn table_of(&self, s: &str) -> PyResult<Option<String>> {
        let Ok(id) = DocumentId::parse(s) else {
            return Ok(None);
        };
        let guard = self.inner.lock();
        let txn = guard
            .as_ref()
            .ok_or(CoreError(Error::TransactionFinished))?;
        Ok(txn
            .catalog()
            .table_by_number(id.table)
            .map(|t| t.name.clone()))
    }

    /// Create `table` inside this transaction (it exists for everyone once the transaction
    /// commits; a transaction that fails leaves no table behind).
    fn create_table(
        &self,
        py: Python<'_>,
        engine: &crate::engine::PyEngine,
        table: &str,
    ) -> PyResult<()> {
        let engine = Arc::clone(engine.inner());
        self.with(py, move |t| {
            if t.catalog().table(table).is_some() {
                return Ok(());
            }
            match engine.reserve_table(table)? {
                Some(reservation) => t.create_table(table, reservation),
                // Created by a commit since this transaction began: it is empty at this
                // snapshot, so seeing it is consistent.
                None => {
                    t.set_catalog(engine.catalog());
                    Ok(())
                }
            }
        })
    }

    /// Whether the transaction's catalog has this table.
    fn has_table(&self, table: &str) -> PyResult<bool> {
        let guard = self.inner.lock();
        let txn = guard
            .as_ref()
            .ok_or(CoreError(Error::TransactionFinished))?;
        Ok(txn.catalog().table(table).is_some())
    }

    /// Refresh the catalog snapshot from the engine (after a table was created).
    fn refresh_catalog(&self, engine: &crate::engine::PyEngine) -> PyResult<()> {
        let catalog = engine.inner().catalog();
        let mut guard = self.inner.lock();
        let txn = guard
            .as_mut()
            .ok_or(CoreError(Error::TransactionFinished))?;
        txn.set_catalog(catalog);
        Ok(())
    }

    /// Counters: index ranges read, documents read, bytes read, documents written, bytes
    /// written.
    fn usage<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let guard = self.inner.lock();
        let txn = guard
            .as_ref()
            .ok_or(CoreError(Error::TransactionFinished))?;
        let (intervals, docs_read, bytes_read, docs_written, bytes_written) = txn.usage();
        let d = PyDict::new(py);
        d.set_item("index_ranges_read", intervals)?;
        d.set_item("documents_read", docs_read)?;
        d.set_item("bytes_read", bytes_read)?;
        d.set_item("documents_written", docs_written)?;
        d.set_item("bytes_written", bytes_written)?;
        Ok(d)
    }

    /// A savepoint at the writes so far (a nested mutation's start).
    fn savepoint(&self, py: Python<'_>) -> PyResult<PySavepoint> {
        let inner = self.with(py, |t| Ok(t.savepoint()))?;
        Ok(PySavepoint { inner })
    }

    /// Drop every write made since `savepoint`; reads stay in the read set.
    fn rollback_to(&self, py: Python<'_>, savepoint: &PySavepoint) -> PyResult<()> {
        let point = &savepoint.inner;
        self.with(py, |t| t.rollback_to(point))
    }

    /// What this transaction would commit, encoded for the writer to validate and commit
    /// (`Engine.commit_forwarded`): begin timestamp, read set and written documents. The
    /// transaction stays usable (it can still be committed here).
    ///
    /// Raises `InvalidQueryError` when it created a table (run such a mutation on the writer).
    fn forwarded<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        let bytes = self.with(py, |t| {
            reactive_core::forward::ForwardedTransaction::of(t).map(|f| f.encode())
        })?;
        Ok(PyBytes::new(py, &bytes))
    }

    /// The read set as `(start, end)` byte pairs (sorted, merged).
    fn read_set<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let intervals = self.with(py, |t| Ok(t.read_set().intervals().to_vec()))?;
        let out = PyList::empty(py);
        for iv in intervals {
            out.append((PyBytes::new(py, &iv.start), PyBytes::new(py, &iv.end)))?;
        }
        Ok(out)
    }

    fn __repr__(&self) -> String {
        format!(
            "<Transaction begin_ts={} read_only={}>",
            self.begin_ts, self.read_only
        )
    }
}

/// The begin timestamp of a forwarded transaction's bytes (`Transaction.forwarded()`),
/// read without decoding the rest. Raises `InvalidQueryError` for other bytes.
#[pyfunction]
fn forwarded_begin_ts(data: &[u8]) -> PyResult<u64> {
    reactive_core::forward::ForwardedTransaction::peek_begin_ts(data)
        .map(|ts| ts.0)
        .map_err(|e| CoreError(e).into())
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(forwarded_begin_ts, m)?)?;
    m.add_class::<PyTransaction>()?;
    m.add_class::<PySavepoint>()?;
    Ok(())
}
