//! Vector indexes: every indexed version of a document as one row of float32s, each row
//! visible from the commit that wrote it to the one that replaced it, so a search at any
//! snapshot scores exactly the vectors of that snapshot.
//!
//! Search is by cosine similarity (rows and the query are normalized, the score is their
//! dot product): exact — every candidate row that passes the filter is scored — while the
//! candidates number at most [`VectorIndexDef::exact_limit`]; past that an HNSW graph
//! (`hnsw_rs`) answers, filtered to the rows visible at the snapshot and passing the filter.
//! The transaction's own writes are scored directly and merged.
//!
//! Reactivity and conflicts: a version writes `[id][0xFF]` and, per filter field,
//! `[id][position][value]`; a search reads `[id][0xFF]` (no filter) or the keys of its
//! filter values. Source: Convex's `vector` crate and its `vectorSearch` API.

use std::collections::{BinaryHeap, HashMap, HashSet};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};

use crate::document::DocumentRef;
use crate::error::{Error, Result};
use crate::id::{DocumentId, TableNumber};
use crate::interval::Interval;
use crate::keys;
use crate::search::FilterFields;
use crate::timestamp::Timestamp;
use crate::value::{FieldPath, Value};

/// The fewest results a vector search may ask for.
pub const MIN_LIMIT: usize = 1;
/// The most results a vector search may ask for (Convex's limit).
pub const MAX_LIMIT: usize = 256;
/// At most this many `eq` terms in a filter (Convex's limit on `or`s).
pub const MAX_FILTER_TERMS: usize = 64;
/// Dimensions a vector index may declare.
pub const DIMENSIONS: std::ops::RangeInclusive<usize> = 2..=4096;
/// Default: exact search while the candidates number at most this many.
pub const DEFAULT_EXACT_LIMIT: usize = 10_000;
/// Rows no longer visible to any snapshot this recent are removed (ns).
const ROW_RETENTION_NS: u64 = 60_000_000_000;

/// HNSW parameters (`hnsw_rs`): links per node, construction and search breadth.
const HNSW_M: usize = 16;
const HNSW_EF_CONSTRUCTION: usize = 64;
const HNSW_EF_SEARCH: usize = 64;
const HNSW_LAYERS: usize = 16;
/// Rows added to the graph per step (the build stops between steps when asked to).
const GRAPH_STEP: usize = 2048;

const ANY_KEY: u8 = 0xFF;

/// What a vector index is.
#[derive(Debug)]
pub struct VectorIndexDef {
    /// Names the index's private keyspace: derived from the definition
    /// ([`super::vector_key_id`]), the same in every process.
    pub key_id: u32,
    /// The table's number.
    pub table: TableNumber,
    /// The table's name.
    pub table_name: String,
    /// The index's name.
    pub name: String,
    /// The vector field (a dotted path).
    pub vector_field: String,
    vector_path: FieldPath,
    /// Number of floats per vector.
    pub dimensions: usize,
    /// Filter fields, in declaration order.
    pub filters: FilterFields,
    /// Exact search while the candidates number at most this many.
    pub exact_limit: usize,
}

/// What a vector search read, for subscriptions: a later write can change its result only
/// if it writes one of the results, or a vector within the filter scoring at least the
/// worst result (any such vector when fewer than `limit` were found).
#[derive(Clone, Debug)]
pub struct VectorRead {
    /// The index's key id.
    pub key_id: u32,
    /// The query, normalized.
    pub vector: Vec<f32>,
    /// The filter (any of), as in [`VectorQuery::filters`].
    pub filters: Vec<(usize, Vec<u8>)>,
    /// The worst result's score, or minus infinity when fewer than the limit were found.
    pub threshold: f32,
    /// The results' ids, sorted.
    pub results: Vec<DocumentId>,
}

impl VectorRead {
    /// Whether the change of document `id` to `new` (`None`: deleted) can change the result.
    pub fn could_change(
        &self,
        def: &VectorIndexDef,
        id: &DocumentId,
        new: Option<&DocumentRef>,
    ) -> bool {
        if id.table != def.table {
            return false;
        }
        if self.results.binary_search(id).is_ok() {
            return true;
        }
        let Some(doc) = new else { return false };
        let Ok(Some(vector)) = def.vector_of(doc) else {
            return false;
        };
        if !self.filters.is_empty() {
            let keys = def.filters.keys(doc);
            if !self
                .filters
                .iter()
                .any(|(pos, key)| keys.get(*pos) == Some(key))
            {
                return false;
            }
        }
        dot(&self.vector, &vector) >= self.threshold
    }
}

/// A parsed vector search.
#[derive(Clone, Debug)]
pub struct VectorQuery {
    /// The normalized query vector.
    pub vector: Vec<f32>,
    /// At most this many results.
    pub limit: usize,
    /// `(filter position, value key)`; a row passes if it matches any (none: all pass).
    pub filters: Vec<(usize, Vec<u8>)>,
}

fn normalize(v: &mut [f32]) {
    let norm = dot(v, v).sqrt();
    if norm > 0.0 {
        for x in v.iter_mut() {
            *x /= norm;
        }
    }
}

/// Dot product, written so the compiler vectorizes it (eight independent accumulators).
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let ca = a.chunks_exact(8);
    let cb = b.chunks_exact(8);
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    let mut sum: f32 = acc.iter().sum();
    for (x, y) in ra.iter().zip(rb) {
        sum += x * y;
    }
    sum
}

impl VectorIndexDef {
    /// A definition, its key id derived from table name, name, vector field, dimensions and
    /// filter fields ([`super::vector_key_id`]; not `exact_limit`, which changes no key).
    /// Errors: `InvalidArgument` for dimensions outside [2, 4096], `Value` for a bad field
    /// path.
    pub fn new(
        table: TableNumber,
        table_name: &str,
        name: &str,
        vector_field: &str,
        dimensions: usize,
        filter_fields: &[String],
        exact_limit: usize,
    ) -> Result<Self> {
        if !DIMENSIONS.contains(&dimensions) {
            return Err(Error::InvalidArgument(format!(
                "vector index {table_name}.{name}: dimensions must be in [2, 4096], not {dimensions}"
            )));
        }
        Ok(VectorIndexDef {
            key_id: super::vector_key_id(table_name, name, vector_field, dimensions, filter_fields),
            table,
            table_name: table_name.to_owned(),
            name: name.to_owned(),
            vector_field: vector_field.to_owned(),
            vector_path: FieldPath::parse(vector_field)?,
            dimensions,
            filters: FilterFields::new(filter_fields)?,
            exact_limit,
        })
    }

    /// Whether `other` indexes the same thing.
    pub fn same_shape(&self, other: &VectorIndexDef) -> bool {
        self.table == other.table
            && self.table_name == other.table_name
            && self.name == other.name
            && self.vector_field == other.vector_field
            && self.dimensions == other.dimensions
            && self.filters.names() == other.filters.names()
            && self.exact_limit == other.exact_limit
    }

    /// The vector of a document version, normalized; `Ok(None)` when the field is missing.
    ///
    /// Errors (`InvalidDocument`, naming the field): not an array of `dimensions` finite
    /// numbers.
    pub fn vector_of(&self, doc: &DocumentRef) -> Result<Option<Vec<f32>>> {
        let Some(value) = doc.get(&self.vector_path) else {
            return Ok(None);
        };
        self.parse_vector(&value, "document").map(Some)
    }

    fn parse_vector(&self, value: &Value, what: &str) -> Result<Vec<f32>> {
        let bad = |why: String| {
            Error::InvalidDocument(format!(
                "vector index {}.{}: field {:?} of the {what} {why}",
                self.table_name, self.name, self.vector_field
            ))
        };
        let Value::Array(items) = value else {
            return Err(bad(format!(
                "must be an array of {} numbers, not {}",
                self.dimensions,
                value.value_type().name()
            )));
        };
        if items.len() != self.dimensions {
            return Err(bad(format!(
                "has {} numbers; the index has {} dimensions",
                items.len(),
                self.dimensions
            )));
        }
        let mut out = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let x = match item {
                Value::Float64(f) => *f,
                Value::Int64(n) => *n as f64,
                other => {
                    return Err(bad(format!(
                        "holds {} at position {i}; every element must be a number",
                        other.value_type().name()
                    )));
                }
            };
            if !x.is_finite() {
                return Err(bad(format!(
                    "holds {x} at position {i}; numbers must be finite"
                )));
            }
            out.push(x as f32);
        }
        normalize(&mut out);
        Ok(out)
    }

    fn key(&self, tail: &[u8]) -> Vec<u8> {
        let mut k = Vec::with_capacity(8 + tail.len());
        k.extend_from_slice(&self.key_id.to_be_bytes());
        k.extend_from_slice(tail);
        k
    }

    /// The keys a document version writes (only versions that hold a vector).
    pub fn write_keys(&self, doc: &DocumentRef, out: &mut Vec<Vec<u8>>) {
        if !doc.has(&self.vector_path) {
            return;
        }
        out.push(self.key(&[ANY_KEY]));
        for (pos, key) in self.filters.keys(doc).into_iter().enumerate() {
            let mut tail = vec![pos as u8];
            tail.extend_from_slice(&key);
            out.push(self.key(&tail));
        }
    }

    /// Parse a search. Errors (`InvalidArgument`): a vector of other dimensions or with
    /// non-finite numbers, a limit outside 1..=256, a filter on a field that is not a filter
    /// field, more than [`MAX_FILTER_TERMS`] filter terms.
    pub fn parse_query(
        &self,
        vector: &Value,
        limit: usize,
        filters: &[(String, Value)],
    ) -> Result<VectorQuery> {
        let vector = self.parse_vector(vector, "search").map_err(|e| match e {
            Error::InvalidDocument(m) => Error::InvalidArgument(m),
            other => other,
        })?;
        if !(MIN_LIMIT..=MAX_LIMIT).contains(&limit) {
            return Err(Error::InvalidArgument(format!(
                "vector index {}.{}: limit must be in [{MIN_LIMIT}, {MAX_LIMIT}], not {limit}",
                self.table_name, self.name
            )));
        }
        if filters.len() > MAX_FILTER_TERMS {
            return Err(Error::InvalidArgument(format!(
                "vector index {}.{}: {} filter terms; at most {MAX_FILTER_TERMS} are allowed",
                self.table_name,
                self.name,
                filters.len()
            )));
        }
        let mut parsed = Vec::with_capacity(filters.len());
        for (field, value) in filters {
            let pos = self.filters.position(
                field,
                &format!("vector index {}.{}", self.table_name, self.name),
            )?;
            parsed.push((pos, keys::value_key(value)));
        }
        Ok(VectorQuery {
            vector,
            limit,
            filters: parsed,
        })
    }

    /// The read set of a search: its filter values' keys, or the whole index without one.
    pub fn read_intervals(&self, query: &VectorQuery) -> Vec<Interval> {
        if query.filters.is_empty() {
            return vec![Interval::point(&self.key(&[ANY_KEY]))];
        }
        query
            .filters
            .iter()
            .map(|(pos, key)| {
                let mut tail = vec![*pos as u8];
                tail.extend_from_slice(key);
                Interval::point(&self.key(&tail))
            })
            .collect()
    }
}

/// The rows of one index.
struct Rows {
    data: Vec<f32>,
    ids: Vec<DocumentId>,
    begin: Vec<u64>,
    end: Vec<u64>,
    filters: Vec<Vec<Vec<u8>>>,
    /// Current row of each document that has one.
    current: HashMap<DocumentId, usize>,
    /// Rows per `(filter position, value key)`.
    by_filter: HashMap<(usize, Vec<u8>), Vec<usize>>,
    /// Rows whose `end` is set.
    ended: usize,
    ready: bool,
    /// Changes published before the build finished, replayed after it.
    pending: Vec<(Timestamp, DocumentId, Option<DocumentRef>)>,
}

/// The approximate index over the rows it was built from (and the rows added since).
struct Graph {
    hnsw: hnsw_rs::hnsw::Hnsw<'static, f32, hnsw_rs::anndists::dist::DistDot>,
    /// Rows `0..rows` are in the graph.
    rows: usize,
}

/// A vector index.
pub struct VectorIndex {
    /// What it indexes.
    pub def: Arc<VectorIndexDef>,
    rows: RwLock<Rows>,
    graph: RwLock<Option<Graph>>,
    building: Mutex<()>,
    cancelled: std::sync::atomic::AtomicBool,
}

/// A visible row passing the filter, with its score.
#[derive(PartialEq)]
struct Scored(f32, usize);

impl Eq for Scored {}

impl PartialOrd for Scored {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Scored {
    // Reversed: the heap's top is the worst kept result.
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        other.0.total_cmp(&self.0).then(self.1.cmp(&other.1))
    }
}

impl VectorIndex {
    /// An empty index (not ready until [`VectorIndex::build`]).
    pub fn new(def: VectorIndexDef) -> Self {
        VectorIndex {
            def: Arc::new(def),
            rows: RwLock::new(Rows {
                data: Vec::new(),
                ids: Vec::new(),
                begin: Vec::new(),
                end: Vec::new(),
                filters: Vec::new(),
                current: HashMap::new(),
                by_filter: HashMap::new(),
                ended: 0,
                ready: false,
                pending: Vec::new(),
            }),
            graph: RwLock::new(None),
            building: Mutex::new(()),
            cancelled: std::sync::atomic::AtomicBool::new(false),
        }
    }

    fn push_row(&self, rows: &mut Rows, ts: Timestamp, doc: &DocumentRef) {
        let Ok(Some(vector)) = self.def.vector_of(doc) else {
            return;
        };
        let row = rows.ids.len();
        rows.data.extend_from_slice(&vector);
        rows.ids.push(doc.id);
        rows.begin.push(ts.0);
        rows.end.push(u64::MAX);
        let filters = self.def.filters.keys(doc);
        for (pos, key) in filters.iter().enumerate() {
            rows.by_filter
                .entry((pos, key.clone()))
                .or_default()
                .push(row);
        }
        rows.filters.push(filters);
        rows.current.insert(doc.id, row);
    }

    /// Build from the table's documents at the registration's snapshot; changes published
    /// after it (recorded while the build ran) are applied after them.
    pub fn build(&self, docs: &[DocumentRef]) {
        {
            let mut rows = self.rows.write();
            for doc in docs {
                // Visible from the start: no search runs before the index is ready.
                self.push_row(&mut rows, Timestamp::ZERO, doc);
            }
            rows.ready = true;
            for (ts, id, doc) in std::mem::take(&mut rows.pending) {
                self.apply(&mut rows, ts, id, doc.as_ref());
            }
        }
        self.maybe_build_graph();
    }

    fn apply(&self, rows: &mut Rows, ts: Timestamp, id: DocumentId, doc: Option<&DocumentRef>) {
        if let Some(row) = rows.current.remove(&id) {
            rows.end[row] = ts.0;
            rows.ended += 1;
        }
        if let Some(doc) = doc {
            self.push_row(rows, ts, doc);
        }
    }

    /// Record a published change.
    pub fn record(&self, ts: Timestamp, id: DocumentId, doc: Option<&DocumentRef>) {
        let mut rows = self.rows.write();
        if rows.ready {
            self.apply(&mut rows, ts, id, doc);
        } else {
            rows.pending.push((ts, id, doc.cloned()));
        }
    }

    /// Whether the index serves searches.
    pub fn is_ready(&self) -> bool {
        self.rows.read().ready
    }

    /// Number of rows visible now (live vectors).
    pub fn len(&self) -> usize {
        self.rows.read().current.len()
    }

    /// Whether no vector is indexed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Build (or rebuild) the approximate index when the index holds more vectors than the
    /// exact limit; drop rows nobody can see any more. Called by the maintenance thread.
    pub fn maintain(&self, now: Timestamp) {
        self.compact(now);
        self.maybe_build_graph();
    }

    fn compact(&self, now: Timestamp) {
        let horizon = now.0.saturating_sub(ROW_RETENTION_NS);
        {
            let rows = self.rows.read();
            if rows.ended < 1024 || rows.ended * 4 < rows.ids.len() {
                return;
            }
        }
        let _b = self.building.lock();
        let mut rows = self.rows.write();
        let dims = self.def.dimensions;
        let mut next = Rows {
            data: Vec::with_capacity(rows.data.len()),
            ids: Vec::new(),
            begin: Vec::new(),
            end: Vec::new(),
            filters: Vec::new(),
            current: HashMap::new(),
            by_filter: HashMap::new(),
            ended: 0,
            ready: rows.ready,
            pending: Vec::new(),
        };
        for row in 0..rows.ids.len() {
            let end = rows.end[row];
            if end != u64::MAX && end <= horizon {
                continue;
            }
            let new_row = next.ids.len();
            next.data
                .extend_from_slice(&rows.data[row * dims..(row + 1) * dims]);
            next.ids.push(rows.ids[row]);
            next.begin.push(rows.begin[row]);
            next.end.push(end);
            for (pos, key) in rows.filters[row].iter().enumerate() {
                next.by_filter
                    .entry((pos, key.clone()))
                    .or_default()
                    .push(new_row);
            }
            next.filters.push(std::mem::take(&mut rows.filters[row]));
            if end == u64::MAX {
                next.current.insert(rows.ids[row], new_row);
            } else {
                next.ended += 1;
            }
        }
        *rows = next;
        // Row numbers changed: the graph must be rebuilt.
        *self.graph.write() = None;
    }

    /// Stop background work on this index (the engine is closing): a graph build in
    /// progress stops at its next step.
    pub fn cancel(&self) {
        self.cancelled
            .store(true, std::sync::atomic::Ordering::Release);
    }

    fn is_cancelled(&self) -> bool {
        self.cancelled.load(std::sync::atomic::Ordering::Acquire)
    }

    fn maybe_build_graph(&self) {
        if self.rows.read().current.len() <= self.def.exact_limit || self.is_cancelled() {
            return;
        }
        let _b = self.building.lock();
        let dims = self.def.dimensions;
        let graphed = self.graph.read().as_ref().map(|g| g.rows);
        let mut done = match graphed {
            Some(done) => done,
            None => {
                let expected = self.rows.read().ids.len();
                let hnsw = hnsw_rs::hnsw::Hnsw::<f32, hnsw_rs::anndists::dist::DistDot>::new(
                    HNSW_M,
                    expected.max(1),
                    HNSW_LAYERS,
                    HNSW_EF_CONSTRUCTION,
                    hnsw_rs::anndists::dist::DistDot {},
                );
                // Built aside, installed when complete: searches stay exact meanwhile.
                let mut built = 0;
                while built < expected {
                    if self.is_cancelled() {
                        return;
                    }
                    let end = (built + GRAPH_STEP).min(expected);
                    let data = self.rows.read().data[built * dims..end * dims].to_vec();
                    let refs: Vec<(&[f32], usize)> = (built..end)
                        .map(|r| (&data[(r - built) * dims..(r - built + 1) * dims], r))
                        .collect();
                    hnsw.parallel_insert_slice(&refs);
                    built = end;
                }
                *self.graph.write() = Some(Graph { hnsw, rows: built });
                built
            }
        };
        // Rows appended since: added step by step (searches score them exactly meanwhile).
        loop {
            let total = self.rows.read().ids.len();
            if done >= total || self.is_cancelled() {
                return;
            }
            let end = (done + GRAPH_STEP).min(total);
            let data = self.rows.read().data[done * dims..end * dims].to_vec();
            {
                let graph = self.graph.read();
                let Some(g) = graph.as_ref() else { return };
                let refs: Vec<(&[f32], usize)> = (done..end)
                    .map(|r| (&data[(r - done) * dims..(r - done + 1) * dims], r))
                    .collect();
                g.hnsw.parallel_insert_slice(&refs);
            }
            if let Some(g) = self.graph.write().as_mut() {
                g.rows = g.rows.max(end);
            }
            done = end;
        }
    }

    /// Search at `snapshot`, with the transaction's own writes to this table. Returns
    /// `(id, score)` best first (ties by id).
    ///
    /// Errors: `IndexNotReady` before the build finished.
    pub fn search(
        &self,
        query: &VectorQuery,
        snapshot: Timestamp,
        own: &[(DocumentId, Option<DocumentRef>)],
    ) -> Result<Vec<(DocumentId, f32)>> {
        let own_ids: HashSet<DocumentId> = own.iter().map(|(id, _)| *id).collect();
        let mut results: Vec<(DocumentId, f32)> = {
            let rows = self.rows.read();
            if !rows.ready {
                return Err(Error::IndexNotReady {
                    table: self.def.table_name.clone(),
                    index: self.def.name.clone(),
                });
            }
            let s = snapshot.0;
            let passes = |row: usize| {
                rows.begin[row] <= s
                    && s < rows.end[row]
                    && !own_ids.contains(&rows.ids[row])
                    && (query.filters.is_empty()
                        || query
                            .filters
                            .iter()
                            .any(|(pos, key)| rows.filters[row].get(*pos) == Some(key)))
            };
            let want = query.limit + own_ids.len();
            let candidates: Option<Vec<usize>> = if query.filters.is_empty() {
                None
            } else {
                let mut set: Vec<usize> = query
                    .filters
                    .iter()
                    .filter_map(|f| rows.by_filter.get(f))
                    .flatten()
                    .copied()
                    .collect();
                set.sort_unstable();
                set.dedup();
                Some(set)
            };
            let count = candidates.as_ref().map_or(rows.current.len(), Vec::len);
            let graph = self.graph.read();
            let approximate = count > self.def.exact_limit && graph.is_some();
            let found: Vec<Scored> = if approximate {
                let g = graph.as_ref().map(|g| &g.hnsw);
                let mut out = Vec::new();
                if let Some(hnsw) = g {
                    let limit_rows = graph.as_ref().map_or(0, |g| g.rows);
                    let filter = |row: &usize| *row < limit_rows && passes(*row);
                    let ef = HNSW_EF_SEARCH.max(want * 2);
                    // Ask for `ef` neighbours: the filter may drop some of the nearest.
                    for n in hnsw.search_filter(&query.vector, ef, ef, Some(&filter)) {
                        out.push(Scored(1.0 - n.distance, n.d_id));
                    }
                    // Rows added since the graph was built are scored exactly.
                    let dims = self.def.dimensions;
                    for row in limit_rows..rows.ids.len() {
                        if passes(row) {
                            out.push(Scored(
                                dot(&query.vector, &rows.data[row * dims..(row + 1) * dims]),
                                row,
                            ));
                        }
                    }
                }
                out
            } else {
                exact(
                    &rows,
                    self.def.dimensions,
                    &query.vector,
                    want,
                    candidates.as_deref(),
                    &passes,
                )
            };
            found
                .into_iter()
                .map(|Scored(score, row)| (rows.ids[row], score))
                .collect()
        };
        for (id, doc) in own {
            let Some(doc) = doc else { continue };
            let Ok(Some(v)) = self.def.vector_of(doc) else {
                continue;
            };
            if !query.filters.is_empty() {
                let keys = self.def.filters.keys(doc);
                if !query
                    .filters
                    .iter()
                    .any(|(pos, key)| keys.get(*pos) == Some(key))
                {
                    continue;
                }
            }
            results.push((*id, dot(&query.vector, &v)));
        }
        results.sort_by(|a, b| {
            b.1.total_cmp(&a.1)
                .then_with(|| a.0.encode().cmp(&b.0.encode()))
        });
        results.truncate(query.limit);
        Ok(results)
    }
}

/// Exact top-`k` over `candidates` (all rows when `None`) passing `passes`.
fn exact(
    rows: &Rows,
    dims: usize,
    query: &[f32],
    k: usize,
    candidates: Option<&[usize]>,
    passes: &(dyn Fn(usize) -> bool + Sync),
) -> Vec<Scored> {
    let scan = |range: &mut dyn Iterator<Item = usize>| {
        let mut heap: BinaryHeap<Scored> = BinaryHeap::with_capacity(k + 1);
        for row in range {
            if !passes(row) {
                continue;
            }
            let score = dot(query, &rows.data[row * dims..(row + 1) * dims]);
            if heap.len() < k {
                heap.push(Scored(score, row));
            } else if let Some(worst) = heap.peek()
                && score > worst.0
            {
                heap.pop();
                heap.push(Scored(score, row));
            }
        }
        heap.into_vec()
    };
    let n = candidates.map_or(rows.ids.len(), <[usize]>::len);
    let threads = std::thread::available_parallelism()
        .map_or(1, std::num::NonZero::get)
        .min(4);
    let mut found: Vec<Scored> = if threads > 1 && n * dims >= 4_000_000 {
        let chunk = n.div_ceil(threads);
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..threads)
                .map(|t| {
                    let scan = &scan;
                    s.spawn(move || {
                        let lo = (t * chunk).min(n);
                        let hi = ((t + 1) * chunk).min(n);
                        match candidates {
                            Some(c) => scan(&mut c[lo..hi].iter().copied()),
                            None => scan(&mut (lo..hi)),
                        }
                    })
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().unwrap_or_default())
                .collect()
        })
    } else {
        match candidates {
            Some(c) => scan(&mut c.iter().copied()),
            None => scan(&mut (0..n)),
        }
    };
    found.sort();
    found.truncate(k);
    found
}
