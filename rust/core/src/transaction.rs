//! Transactions: reads at a snapshot with a recorded read set, and buffered writes.
//!
//! A transaction reads the MVCC store at its begin timestamp, merged with its own buffered
//! writes (so it reads what it wrote). Every read records the keyspace interval it covered:
//! a `get` is a point on the table's `by_id` index; a range scan records the range up to the
//! last entry it consumed (all of it if it ran off the end), so `take(n)` does not claim the
//! rest of the range. The committer checks that read set against later writes.
//!
//! Invariants: the overlay holds, for every index key this transaction added or removed (in
//! the indexes of its catalog snapshot), the document now there or `None`; `writes` holds
//! for every written document the revision visible at the begin timestamp (`old`) and the
//! final one (`new`). Limits are checked as reads and writes happen, so a transaction over a
//! limit fails at the operation that crossed it.

use std::collections::BTreeMap;
use std::iter::Peekable;
use std::sync::Arc;

use parking_lot::RwLock;

use crate::catalog::{Catalog, IndexDescriptor, IndexId, TableReservation, table_name_key};
use crate::document::{Document, DocumentRef};
use crate::error::{Error, Limit, Result};
use crate::filter::Expr;
use crate::id::{DocumentId, InternalId, TableNumber};
use crate::interval::{Interval, IntervalSet};
use crate::keys;
use crate::limits::TransactionLimits;
use crate::mvcc::{MvccStore, VersionChain};
use crate::search::SearchIndexes;
use crate::timestamp::Timestamp;
use crate::value::{Object, Value};

/// A buffered write to one document.
#[derive(Clone, Debug)]
pub struct PendingWrite {
    /// The revision visible at the begin timestamp, with its timestamp (`None`: inserted here).
    pub old: Option<(Timestamp, DocumentRef)>,
    /// The final revision (`None`: deleted).
    pub new: Option<DocumentRef>,
}

/// What a range scan asks for.
#[derive(Clone, Debug)]
pub struct ScanRequest {
    /// The index scanned.
    pub index: IndexId,
    /// The keyspace interval (inside the index's keys).
    pub interval: Interval,
    /// Scan from the end of the interval toward its start.
    pub descending: bool,
    /// Stop after this many documents passed the filter.
    pub limit: Option<usize>,
    /// Only documents for which this is `true` are returned (all are scanned and counted).
    pub filter: Option<Expr>,
    /// Whether this scan starts a query (counts toward the index-ranges limit) rather than
    /// continuing one.
    pub new_query: bool,
}

/// What a range scan found.
#[derive(Clone, Debug, Default)]
pub struct ScanResult {
    /// The documents that passed the filter, in scan order.
    pub docs: Vec<DocumentRef>,
    /// The keyspace key of the last entry scanned (a cursor position), if any.
    pub last_key: Option<Vec<u8>>,
    /// Whether the scan reached the end of the interval.
    pub done: bool,
}

/// What the committer takes from a finished transaction.
pub struct CommitParts {
    /// The snapshot it read.
    pub begin_ts: Timestamp,
    /// Its read set (normalized).
    pub reads: IntervalSet,
    /// Its writes.
    pub writes: BTreeMap<DocumentId, PendingWrite>,
    /// Tables it created, with their reserved numbers.
    pub created_tables: Vec<(String, TableReservation)>,
}

/// A point a transaction can return to: its writes as they were when it was taken.
///
/// A nested mutation (`ctx.run_mutation` inside a mutation) runs from a savepoint; when it
/// fails, [`Transaction::rollback_to`] drops its writes and keeps the rest of the
/// transaction (the savepoints of SQL, Convex's subtransactions). Reads are kept: what the
/// transaction read, it read, whatever became of the writes.
#[derive(Clone, Debug)]
pub struct Savepoint {
    begin_ts: Timestamp,
    writes: BTreeMap<DocumentId, PendingWrite>,
    overlay: BTreeMap<Vec<u8>, Option<DocumentRef>>,
    bytes_written: usize,
}

/// A transaction in progress.
pub struct Transaction {
    begin_ts: Timestamp,
    catalog: Arc<Catalog>,
    store: Arc<RwLock<MvccStore>>,
    read_only: bool,
    limits: TransactionLimits,
    reads: IntervalSet,
    read_intervals: usize,
    documents_read: usize,
    bytes_read: usize,
    writes: BTreeMap<DocumentId, PendingWrite>,
    overlay: BTreeMap<Vec<u8>, Option<DocumentRef>>,
    bytes_written: usize,
    next_creation_time: f64,
    created_tables: Vec<(String, TableReservation)>,
    search: Option<Arc<SearchIndexes>>,
    vector_reads: Vec<crate::search::VectorRead>,
}

impl Transaction {
    /// Begin at snapshot `begin_ts` (which must be visible in `store`).
    pub fn new(
        begin_ts: Timestamp,
        catalog: Arc<Catalog>,
        store: Arc<RwLock<MvccStore>>,
        read_only: bool,
        limits: TransactionLimits,
    ) -> Self {
        // `_creationTime` as Convex: the later of the snapshot and the wall clock, in ms.
        let base = begin_ts.max(Timestamp::wall_clock()).as_millis_f64();
        Transaction {
            begin_ts,
            catalog,
            store,
            read_only,
            limits,
            reads: IntervalSet::new(),
            read_intervals: 0,
            documents_read: 0,
            bytes_read: 0,
            writes: BTreeMap::new(),
            overlay: BTreeMap::new(),
            bytes_written: 0,
            next_creation_time: base,
            created_tables: Vec::new(),
            search: None,
            vector_reads: Vec::new(),
        }
    }

    /// Give this transaction the engine's search indexes (searches and vector checks).
    pub fn set_search(&mut self, search: Arc<SearchIndexes>) {
        self.search = Some(search);
    }

    /// The snapshot this transaction reads.
    pub fn begin_ts(&self) -> Timestamp {
        self.begin_ts
    }

    /// Whether writes are refused.
    pub fn is_read_only(&self) -> bool {
        self.read_only
    }

    /// The catalog this transaction sees.
    pub fn catalog(&self) -> &Arc<Catalog> {
        &self.catalog
    }

    /// Replace the catalog snapshot (after a table was created while this transaction ran;
    /// the new table is empty at every earlier snapshot, so reads stay consistent).
    pub fn set_catalog(&mut self, catalog: Arc<Catalog>) {
        self.catalog = catalog;
    }

    /// The read set so far (normalized).
    pub fn read_set(&mut self) -> &IntervalSet {
        self.reads.normalize();
        &self.reads
    }

    /// Counters: (index ranges read, documents read, bytes read, documents written, bytes
    /// written).
    pub fn usage(&self) -> (usize, usize, usize, usize, usize) {
        (
            self.read_intervals,
            self.documents_read,
            self.bytes_read,
            self.writes.len(),
            self.bytes_written,
        )
    }

    /// A savepoint at the current writes (costs a copy of the writes so far).
    pub fn savepoint(&self) -> Savepoint {
        Savepoint {
            begin_ts: self.begin_ts,
            writes: self.writes.clone(),
            overlay: self.overlay.clone(),
            bytes_written: self.bytes_written,
        }
    }

    /// Drop every write made since `savepoint` was taken (reads and read counters stay;
    /// tables created since stay, empty).
    ///
    /// Errors: `InvalidArgument` when `savepoint` was taken from another transaction.
    pub fn rollback_to(&mut self, savepoint: &Savepoint) -> Result<()> {
        if savepoint.begin_ts != self.begin_ts || savepoint.writes.len() > self.writes.len() {
            return Err(Error::InvalidArgument(
                "this savepoint belongs to another transaction".to_owned(),
            ));
        }
        self.writes = savepoint.writes.clone();
        self.overlay = savepoint.overlay.clone();
        self.bytes_written = savepoint.bytes_written;
        Ok(())
    }

    /// How many tables this transaction created.
    pub fn created_tables_count(&self) -> usize {
        self.created_tables.len()
    }

    /// The buffered writes.
    pub fn writes(&self) -> &BTreeMap<DocumentId, PendingWrite> {
        &self.writes
    }

    /// Split into what the committer needs.
    pub fn into_parts(mut self) -> CommitParts {
        self.reads.normalize();
        CommitParts {
            begin_ts: self.begin_ts,
            reads: self.reads,
            writes: self.writes,
            created_tables: self.created_tables,
        }
    }

    /// Create a table inside this transaction with reserved numbers: it exists for this
    /// transaction now and for everyone once the transaction commits.
    pub fn create_table(&mut self, name: &str, reservation: TableReservation) -> Result<()> {
        self.check_writable("insert")?;
        if self.catalog.table(name).is_some() {
            return Ok(());
        }
        let mut catalog = (*self.catalog).clone();
        catalog.add_reserved_table(name, &reservation, self.begin_ts.0)?;
        self.catalog = Arc::new(catalog);
        self.created_tables.push((name.to_owned(), reservation));
        Ok(())
    }

    /// Record a read of a table that does not exist (it holds no documents): the commit that
    /// creates it conflicts with this transaction and wakes subscriptions that read it.
    pub fn read_missing_table(&mut self, name: &str, new_query: bool) -> Result<()> {
        if new_query {
            self.count_interval()?;
        }
        self.reads.push(Interval::point(&table_name_key(name)));
        Ok(())
    }

    fn count_interval(&mut self) -> Result<()> {
        self.read_intervals += 1;
        if self.read_intervals > self.limits.max_read_intervals {
            return Err(Error::LimitExceeded {
                limit: Limit::ReadIntervals,
                limit_value: self.limits.max_read_intervals,
                message: format!("this transaction read {} index ranges", self.read_intervals),
            });
        }
        Ok(())
    }

    fn count_document(&mut self, doc: &Document) -> Result<()> {
        self.documents_read += 1;
        self.bytes_read += doc.size;
        if self.documents_read > self.limits.max_documents_read {
            return Err(Error::LimitExceeded {
                limit: Limit::DocumentsRead,
                limit_value: self.limits.max_documents_read,
                message: format!("this transaction read {} documents", self.documents_read),
            });
        }
        if self.bytes_read > self.limits.max_bytes_read {
            return Err(Error::LimitExceeded {
                limit: Limit::BytesRead,
                limit_value: self.limits.max_bytes_read,
                message: format!("this transaction read {} bytes", self.bytes_read),
            });
        }
        Ok(())
    }

    /// The `by_id` keyspace key of a document id, if its table exists.
    pub fn by_id_key(catalog: &Catalog, id: &DocumentId) -> Option<Vec<u8>> {
        let index = catalog.by_id(id.table)?;
        let mut key = index.prefix().to_vec();
        keys::encode_value(&Value::String(id.encode()), &mut key);
        Some(key)
    }

    /// The document `id` as this transaction sees it; records the read.
    pub fn get(&mut self, id: &DocumentId) -> Result<Option<DocumentRef>> {
        Ok(self.current(id)?.map(|(_, d)| d))
    }

    /// Like [`Transaction::get`], also returning the snapshot revision's timestamp for a
    /// document this transaction has not written.
    fn current(&mut self, id: &DocumentId) -> Result<Option<(Option<Timestamp>, DocumentRef)>> {
        if let Some(w) = self.writes.get(id) {
            return Ok(w.new.clone().map(|d| (None, d)));
        }
        self.count_interval()?;
        let Some(key) = Self::by_id_key(&self.catalog, id) else {
            return Ok(None);
        };
        self.reads.push(Interval::point(&key));
        let found = {
            let store = self.store.read();
            store.check_snapshot(self.begin_ts)?;
            store
                .get_with_ts(id, self.begin_ts)
                .map(|(ts, d)| (ts, d.clone()))
        };
        match found {
            Some((ts, doc)) => {
                self.count_document(&doc)?;
                Ok(Some((Some(ts), doc)))
            }
            None => Ok(None),
        }
    }

    fn check_writable(&self, op: &'static str) -> Result<()> {
        if self.read_only {
            return Err(Error::ReadOnly(op));
        }
        Ok(())
    }

    fn record_write(
        &mut self,
        id: DocumentId,
        old_ts: Option<Timestamp>,
        new: Option<DocumentRef>,
    ) -> Result<()> {
        let is_new_doc = !self.writes.contains_key(&id);
        if is_new_doc && self.writes.len() + 1 > self.limits.max_documents_written {
            return Err(Error::LimitExceeded {
                limit: Limit::DocumentsWritten,
                limit_value: self.limits.max_documents_written,
                message: format!("this transaction wrote {} documents", self.writes.len() + 1),
            });
        }
        let size = new.as_ref().map_or(0, |d| d.size);
        if self.bytes_written + size > self.limits.max_bytes_written {
            return Err(Error::LimitExceeded {
                limit: Limit::BytesWritten,
                limit_value: self.limits.max_bytes_written,
                message: format!("this transaction wrote {} bytes", self.bytes_written + size),
            });
        }
        if let (Some(doc), Some(search)) = (&new, &self.search) {
            search.current().1.check_document(doc)?;
        }
        self.bytes_written += size;
        // The overlay: remove the keys of what this transaction saw, add the new ones.
        let previous = if let Some(w) = self.writes.get(&id) {
            w.new.clone()
        } else {
            let store = self.store.read();
            store.get(&id, self.begin_ts).cloned()
        };
        if let Some(table) = self.catalog.table_by_number(id.table) {
            let indexes: Vec<&IndexDescriptor> = self.catalog.table_indexes(table).collect();
            if let Some(prev) = &previous {
                for index in &indexes {
                    self.overlay.insert(prev.index_key(index), None);
                }
            }
            if let Some(doc) = &new {
                for index in &indexes {
                    self.overlay.insert(doc.index_key(index), Some(doc.clone()));
                }
            }
        }
        if let Some(w) = self.writes.get_mut(&id) {
            w.new = new;
        } else {
            let old = old_ts.zip(previous);
            self.writes.insert(id, PendingWrite { old, new });
        }
        Ok(())
    }

    /// Insert a new document into `table` (which must be in this transaction's catalog).
    pub fn insert(&mut self, table: TableNumber, fields: Object) -> Result<DocumentRef> {
        self.check_writable("insert")?;
        if self.catalog.table_by_number(table).is_none() {
            return Err(Error::TableNotFound(table.0.to_string()));
        }
        let creation_time = self.next_creation_time;
        self.next_creation_time = creation_time.next_up();
        let id = DocumentId {
            table,
            internal: InternalId::generate(creation_time),
        };
        let doc = Arc::new(Document::new(id, creation_time, fields)?);
        self.record_write(id, None, Some(doc.clone()))?;
        Ok(doc)
    }

    /// Insert a document with a given id and creation time (importing a snapshot). The id's
    /// table must exist and the id must be new.
    pub fn insert_existing(
        &mut self,
        id: DocumentId,
        creation_time: f64,
        fields: Object,
    ) -> Result<DocumentRef> {
        self.check_writable("insert")?;
        if self.catalog.table_by_number(id.table).is_none() {
            return Err(Error::TableNotFound(id.table.0.to_string()));
        }
        if !(creation_time > 0.0 && creation_time < 9_007_199_254_740_992.0) {
            return Err(Error::InvalidDocument(format!(
                "document {id}: _creationTime {creation_time} is out of range"
            )));
        }
        if self.current(&id)?.is_some() {
            return Err(Error::InvalidDocument(format!(
                "document {id} already exists"
            )));
        }
        let doc = Arc::new(Document::new(id, creation_time, fields)?);
        self.record_write(id, None, Some(doc.clone()))?;
        Ok(doc)
    }

    /// Replace the fields of an existing document (system fields are kept).
    pub fn replace(&mut self, id: &DocumentId, fields: Object) -> Result<DocumentRef> {
        self.check_writable("replace")?;
        let (old_ts, current) = self
            .current(id)?
            .ok_or_else(|| Error::DocumentNotFound(id.encode()))?;
        let doc = Arc::new(Document::new(*id, current.creation_time(), fields)?);
        self.record_write(*id, old_ts, Some(doc.clone()))?;
        Ok(doc)
    }

    /// Delete an existing document; returns the deleted revision.
    pub fn delete(&mut self, id: &DocumentId) -> Result<DocumentRef> {
        self.check_writable("delete")?;
        let (old_ts, current) = self
            .current(id)?
            .ok_or_else(|| Error::DocumentNotFound(id.encode()))?;
        self.record_write(*id, old_ts, None)?;
        Ok(current)
    }

    /// Scan an index range at the snapshot, merged with this transaction's writes.
    pub fn scan(&mut self, request: &ScanRequest) -> Result<ScanResult> {
        if request.new_query {
            self.count_interval()?;
        }
        if let Some(filter) = &request.filter {
            filter.validate()?;
        }
        let Interval { start, end } = &request.interval;
        let limit = request.limit.unwrap_or(usize::MAX);
        let mut result = ScanResult::default();
        let mut scanned_docs = 0usize;
        let mut scanned_bytes = 0usize;
        let mut error = None;
        {
            let guard = self.store.read();
            guard.check_snapshot(self.begin_ts)?;
            let base = guard.range(start, end, request.descending);
            let range = self.overlay.range::<[u8], _>((
                std::ops::Bound::Included(start.as_slice()),
                std::ops::Bound::Excluded(end.as_slice()),
            ));
            let overlay: Box<dyn Iterator<Item = (&Vec<u8>, &Option<DocumentRef>)>> =
                if request.descending {
                    Box::new(range.rev())
                } else {
                    Box::new(range)
                };
            let mut merged = Merge {
                base: base.peekable(),
                overlay: overlay.peekable(),
                descending: request.descending,
                ts: self.begin_ts,
            };
            let mut last: Option<&[u8]> = None;
            let mut passed = 0usize;
            // Stop one past the read limit: the limit check below reports it.
            while passed < limit && scanned_docs <= self.limits.max_documents_read {
                let Some((key, doc)) = merged.next() else {
                    result.done = true;
                    break;
                };
                scanned_docs += 1;
                scanned_bytes += doc.size;
                let pass = match &request.filter {
                    Some(f) => match f.matches(doc.as_ref()) {
                        Ok(p) => p,
                        Err(e) => {
                            error = Some(e);
                            break;
                        }
                    },
                    None => true,
                };
                last = Some(key);
                if pass {
                    passed += 1;
                    result.docs.push(Arc::clone(doc));
                }
            }
            result.last_key = last.map(<[u8]>::to_vec);
        }
        self.documents_read += scanned_docs;
        self.bytes_read += scanned_bytes;
        self.check_read_limits()?;
        if let Some(e) = error {
            return Err(e);
        }
        let covered = if result.done {
            Interval::new(start.clone(), end.clone())
        } else if let Some(last) = &result.last_key {
            if request.descending {
                Interval::new(last.clone(), end.clone())
            } else {
                Interval::new(start.clone(), keys::successor(last))
            }
        } else {
            None
        };
        if let Some(iv) = covered {
            self.reads.push(iv);
        }
        Ok(result)
    }

    /// What a subscription registers: the read set without the vector searches' keys, and
    /// the vector searches (matched by score at publication rather than by key). The full
    /// read set ([`Transaction::read_set`]) stays what conflicts are checked against.
    pub fn subscription_reads(&mut self) -> (IntervalSet, Vec<crate::search::VectorRead>) {
        self.reads.normalize();
        if self.vector_reads.is_empty() {
            return (self.reads.clone(), Vec::new());
        }
        let ids: Vec<[u8; 4]> = self
            .vector_reads
            .iter()
            .map(|r| r.key_id.to_be_bytes())
            .collect();
        let mut out = IntervalSet::new();
        for iv in self.reads.intervals() {
            if !ids.iter().any(|k| iv.start.starts_with(k)) {
                out.push(iv.clone());
            }
        }
        out.normalize();
        (out, self.vector_reads.clone())
    }

    /// This transaction's writes to `table`: `(id, new version)`, `None` when deleted.
    fn own_writes(&self, table: TableNumber) -> Vec<(DocumentId, Option<DocumentRef>)> {
        self.writes
            .iter()
            .filter(|(id, _)| id.table == table)
            .map(|(id, w)| (*id, w.new.clone()))
            .collect()
    }

    fn search_indexes(&self) -> Result<Arc<crate::search::Registry>> {
        self.search
            .as_ref()
            .map(|s| s.current().1)
            .ok_or_else(|| Error::InvalidArgument("search is not available here".to_owned()))
    }

    /// Full-text search of index `index` of `table` at this transaction's snapshot, with
    /// its own writes: `text`'s terms (the last also as a prefix) under `filters`
    /// (equalities on filter fields). Returns at most `limit` documents with their BM25
    /// score, best first, then by `_id`; records the terms and filter values in the read
    /// set. With `post_filter`, the best 1,024 results are filtered by it, then cut at
    /// `limit` (a filter after a search, as Convex's `.filter` on a search query).
    ///
    /// Errors: `IndexNotFound`, `IndexNotReady`, `InvalidArgument` (limits: 16 terms, 8
    /// filters, 1..=1024 results), the read limits.
    pub fn text_search(
        &mut self,
        table: &str,
        index: &str,
        text: &str,
        filters: &[(String, Value)],
        limit: usize,
        post_filter: Option<&Expr>,
    ) -> Result<Vec<(DocumentRef, f32)>> {
        self.count_interval()?;
        if let Some(f) = post_filter {
            f.validate()?;
        }
        let registry = self.search_indexes()?;
        let idx = registry
            .text(table, index)
            .ok_or_else(|| Error::IndexNotFound {
                table: table.to_owned(),
                index: index.to_owned(),
            })?;
        let mut query = idx.def.parse_query(text, filters, limit)?;
        if post_filter.is_some() {
            query.limit = crate::search::text::MAX_RESULTS;
        }
        let own = self.own_writes(idx.def.table);
        let mut found = idx.search(&query, self.begin_ts, &own, &self.store)?;
        if let Some(f) = post_filter {
            let mut kept = Vec::with_capacity(limit.min(found.len()));
            for (doc, score) in found {
                if kept.len() == limit {
                    break;
                }
                if f.matches(doc.as_ref())? {
                    kept.push((doc, score));
                }
            }
            found = kept;
        }
        for iv in idx.def.read_intervals(&query) {
            self.reads.push(iv);
        }
        self.documents_read += found.len();
        self.bytes_read += found.iter().map(|(d, _)| d.size).sum::<usize>();
        self.check_read_limits()?;
        Ok(found)
    }

    /// Vector search of index `index` of `table` at this transaction's snapshot, with its
    /// own writes: the `limit` (1..=256) rows nearest `vector` by cosine similarity among
    /// those whose filter fields equal any of `filters` (all rows without filters). Returns
    /// `(id, score)` best first; records the filter values in the read set.
    ///
    /// Errors: `IndexNotFound`, `IndexNotReady`, `InvalidArgument` (dimensions, limit, a
    /// field that is not a filter field).
    pub fn vector_search(
        &mut self,
        table: &str,
        index: &str,
        vector: &Value,
        limit: usize,
        filters: &[(String, Value)],
    ) -> Result<Vec<(DocumentId, f32)>> {
        self.count_interval()?;
        let registry = self.search_indexes()?;
        let idx = registry
            .vector(table, index)
            .ok_or_else(|| Error::IndexNotFound {
                table: table.to_owned(),
                index: index.to_owned(),
            })?;
        let query = idx.def.parse_query(vector, limit, filters)?;
        let own = self.own_writes(idx.def.table);
        let found = idx.search(&query, self.begin_ts, &own)?;
        for iv in idx.def.read_intervals(&query) {
            self.reads.push(iv);
        }
        let threshold = if found.len() < query.limit {
            f32::NEG_INFINITY
        } else {
            found.last().map_or(f32::NEG_INFINITY, |(_, s)| *s)
        };
        let mut results: Vec<DocumentId> = found.iter().map(|(id, _)| *id).collect();
        results.sort_unstable();
        self.vector_reads.push(crate::search::VectorRead {
            key_id: idx.def.key_id,
            vector: query.vector,
            filters: query.filters,
            threshold,
            results,
        });
        self.documents_read += found.len();
        self.check_read_limits()?;
        Ok(found)
    }

    fn check_read_limits(&self) -> Result<()> {
        if self.documents_read > self.limits.max_documents_read {
            return Err(Error::LimitExceeded {
                limit: Limit::DocumentsRead,
                limit_value: self.limits.max_documents_read,
                message: format!("this transaction read {} documents", self.documents_read),
            });
        }
        if self.bytes_read > self.limits.max_bytes_read {
            return Err(Error::LimitExceeded {
                limit: Limit::BytesRead,
                limit_value: self.limits.max_bytes_read,
                message: format!("this transaction read {} bytes", self.bytes_read),
            });
        }
        Ok(())
    }
}

/// Merges the snapshot's index entries with the transaction's overlay, in scan order; an
/// overlay entry hides the snapshot entry with the same key.
struct Merge<'a, B, O>
where
    B: Iterator<Item = (&'a [u8], &'a VersionChain)>,
    O: Iterator<Item = (&'a Vec<u8>, &'a Option<DocumentRef>)>,
{
    base: Peekable<B>,
    overlay: Peekable<O>,
    descending: bool,
    ts: Timestamp,
}

impl<'a, B, O> Iterator for Merge<'a, B, O>
where
    B: Iterator<Item = (&'a [u8], &'a VersionChain)>,
    O: Iterator<Item = (&'a Vec<u8>, &'a Option<DocumentRef>)>,
{
    type Item = (&'a [u8], &'a DocumentRef);

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let take_overlay = match (self.base.peek(), self.overlay.peek()) {
                (None, None) => return None,
                (Some(_), None) => false,
                (None, Some(_)) => true,
                (Some((bk, _)), Some((ok, _))) => {
                    let ord = (*bk).cmp(ok.as_slice());
                    if ord == std::cmp::Ordering::Equal {
                        self.base.next();
                        true
                    } else {
                        (ord == std::cmp::Ordering::Greater) != self.descending
                    }
                }
            };
            if take_overlay {
                let (k, d) = self.overlay.next()?;
                if let Some(d) = d {
                    return Some((k.as_slice(), d));
                }
            } else {
                let (k, chain) = self.base.next()?;
                if let Some(d) = chain.at(self.ts) {
                    return Some((k, d));
                }
            }
        }
    }
}
