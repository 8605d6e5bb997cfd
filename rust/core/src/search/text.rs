//! Full-text search indexes: tantivy segments holding one snapshot of a table (the *base*),
//! plus the log of the changes committed since, read together at any snapshot.
//!
//! A search at snapshot `S` reads the base (the table's documents at `base_ts`, BM25 top-k
//! with tantivy's block-max WAND), leaves out every document the log says changed between
//! `base_ts` and `S` (and every document the transaction itself wrote), and scores those
//! documents' versions at `S` itself with the base's statistics, as tantivy would
//! ([`Bm25Weight`]). The two lists merge by score, then `_id`. A flusher moves the log into
//! the base in the background (a tantivy commit per flush), so the log stays short.
//!
//! The index is derived state: it is built from the table's documents when it is
//! registered (at open, or when the schema adds it) and maintained by each published
//! commit, so after a crash it is exactly what a fresh build gives.
//!
//! Reactivity and conflicts: a document version writes, for each of its distinct terms,
//! keys in the index's private keyspace (see [`TextIndexDef::write_keys`]); a search reads
//! the intervals of its terms and filter values ([`TextIndexDef::read_intervals`]). A commit
//! whose documents hold none of the terms, or other filter values, touches none of them.
//!
//! Source: Convex's `search` crate (a tantivy base plus a memory index of recent revisions).

use std::collections::{BTreeSet, BinaryHeap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Condvar, Mutex, RwLock};
use rustc_hash::FxHashMap;
use tantivy::fieldnorm::FieldNormReader;
use tantivy::query::{
    Bm25StatisticsProvider, Bm25Weight, BooleanQuery, BoostQuery, ConstScoreQuery, EnableScoring,
    Occur, Query, TermQuery,
};
use tantivy::schema::{
    BytesOptions, FAST, Field, IndexRecordOption, Schema, TextFieldIndexing, TextOptions,
};
use tantivy::{Index, IndexReader, IndexWriter, ReloadPolicy, Searcher, TantivyDocument, Term};

use crate::document::DocumentRef;
use crate::error::{Error, Result};
use crate::id::{DocumentId, InternalId, TableNumber};
use crate::interval::Interval;
use crate::keys;
use crate::mvcc::MvccStore;
use crate::search::FilterFields;
use crate::search::tokenize::{ReactiveTokenizer, TOKENIZER_NAME, for_each_term, has_term};
use crate::timestamp::Timestamp;
use crate::value::{FieldPath, Value};

/// At most this many terms in a search (Convex's limit).
pub const MAX_TERMS: usize = 16;
/// At most this many filter expressions in a search (Convex's limit).
pub const MAX_FILTERS: usize = 8;
/// At most this many results from one search (Convex's limit).
pub const MAX_RESULTS: usize = 1024;
/// The last term of a search also matches terms it is a prefix of; at most this many such
/// terms (the first in term order) are looked up in the base (Convex's
/// `MAX_PREFIX_MATCHES_PER_QUERY_TERM`).
pub const MAX_PREFIX_EXPANSIONS: usize = 16;
/// A term matched only as an extension of the last term (`hel` finding `hello`) scores
/// this fraction of a full match (Convex's prefix boost).
pub const PREFIX_BOOST: f32 = 0.5;
/// Log entries kept after they reached the base, for searches at older snapshots (ns).
const LOG_RETENTION_NS: u64 = 60_000_000_000;
/// A registered index waits this long for its build before a search says it is not ready.
const READY_WAIT: Duration = Duration::from_secs(5);
/// Memory of the tantivy writer of one index (bytes, shared by its threads).
const WRITER_BUDGET: usize = 96_000_000;

/// Which family a key of a text index's private keyspace belongs to.
const FAMILY_TERM_FIRST: u8 = 1;
const FAMILY_FILTERS_FIRST: u8 = 2;
const FAMILY_ONE_FILTER: u8 = 3;

/// What a text index is: its table, searched field and filter fields.
#[derive(Debug)]
pub struct TextIndexDef {
    /// Names the index's private keyspace (the first 4 bytes of its read and write keys):
    /// derived from the definition ([`super::text_key_id`]), the same in every process.
    pub key_id: u32,
    /// The table's number.
    pub table: TableNumber,
    /// The table's name.
    pub table_name: String,
    /// The index's name.
    pub name: String,
    /// The searched field (a dotted path).
    pub search_field: String,
    search_path: FieldPath,
    /// The filter fields, in declaration order.
    pub filters: FilterFields,
}

/// One document version as the index sees it: its terms and filter values.
#[derive(Debug)]
pub struct TokenizedDoc {
    /// The document.
    pub doc: DocumentRef,
    /// Distinct terms with their frequency, sorted by term.
    terms: Vec<(Box<str>, u32)>,
    /// Number of terms (repeats included): the field's length for BM25.
    length: u32,
    /// The key encoding of each filter field's value (`undefined` when missing).
    filter_keys: Vec<Vec<u8>>,
}

impl TokenizedDoc {
    fn term_frequency(&self, term: &str) -> Option<u32> {
        self.terms
            .binary_search_by(|(t, _)| (**t).cmp(term))
            .ok()
            .map(|i| self.terms[i].1)
    }
}

/// A parsed search: terms (the last one also a prefix), filters and a result limit.
#[derive(Clone, Debug)]
pub struct TextQuery {
    /// Distinct terms in query order; the last term of the text also matches as a prefix.
    pub terms: Vec<String>,
    /// The last term of the text (matched as a prefix too), if any.
    pub prefix: Option<String>,
    /// `(filter field position, key encoding of the value)`, sorted by position.
    pub filters: Vec<(usize, Vec<u8>)>,
    /// At most this many results.
    pub limit: usize,
}

impl TextIndexDef {
    /// A definition, its key id derived from table name, name, search field and filter
    /// fields ([`super::text_key_id`]). Errors: `InvalidArgument` for too many filter
    /// fields, `Value` for a bad field path.
    pub fn new(
        table: TableNumber,
        table_name: &str,
        name: &str,
        search_field: &str,
        filter_fields: &[String],
    ) -> Result<Self> {
        if filter_fields.len() > MAX_FILTERS * 2 {
            return Err(Error::InvalidArgument(format!(
                "search index {table_name}.{name}: too many filter fields"
            )));
        }
        Ok(TextIndexDef {
            key_id: super::text_key_id(table_name, name, search_field, filter_fields),
            table,
            table_name: table_name.to_owned(),
            name: name.to_owned(),
            search_field: search_field.to_owned(),
            search_path: FieldPath::parse(search_field)?,
            filters: FilterFields::new(filter_fields)?,
        })
    }

    /// Whether `other` indexes the same thing (then a rebuild is not needed).
    pub fn same_shape(&self, other: &TextIndexDef) -> bool {
        self.table == other.table
            && self.table_name == other.table_name
            && self.name == other.name
            && self.search_field == other.search_field
            && self.filters.names() == other.filters.names()
    }

    /// The terms and filter values of a document version.
    pub fn tokenize(&self, doc: &DocumentRef) -> TokenizedDoc {
        let mut counts: FxHashMap<Box<str>, u32> = FxHashMap::default();
        let mut length = 0u32;
        if let Some(Value::String(text)) = doc.get(&self.search_path) {
            for_each_term(&text, |t| {
                length += 1;
                match counts.get_mut(t) {
                    Some(n) => *n += 1,
                    None => {
                        counts.insert(Box::from(t), 1);
                    }
                }
            });
        }
        let mut terms: Vec<(Box<str>, u32)> = counts.into_iter().collect();
        terms.sort_unstable();
        TokenizedDoc {
            doc: Arc::clone(doc),
            terms,
            length,
            filter_keys: self.filters.keys(doc),
        }
    }

    fn key_prefix(&self, family: u8) -> Vec<u8> {
        let mut k = Vec::with_capacity(48);
        k.extend_from_slice(&self.key_id.to_be_bytes());
        k.push(family);
        k
    }

    /// The keys a version of a document writes: for each distinct term `t`, `[id][1][t][0]
    /// [all filter values]`; with filter fields also, per filter field `i`, `[id][3][i]
    /// [value i][t]`, and with two or more `[id][2][all filter values][t]`. Each search reads the family that
    /// makes its read set exact (see [`TextIndexDef::read_intervals`]).
    pub fn write_keys(&self, doc: &TokenizedDoc, out: &mut Vec<Vec<u8>>) {
        let filters: Vec<u8> = doc.filter_keys.concat();
        for (term, _) in &doc.terms {
            let mut a = self.key_prefix(FAMILY_TERM_FIRST);
            a.extend_from_slice(term.as_bytes());
            a.push(0);
            a.extend_from_slice(&filters);
            out.push(a);
            if self.filters.is_empty() {
                continue;
            }
            if self.filters.len() > 1 {
                let mut b = self.key_prefix(FAMILY_FILTERS_FIRST);
                b.extend_from_slice(&filters);
                b.extend_from_slice(term.as_bytes());
                out.push(b);
            }
            for (i, value) in doc.filter_keys.iter().enumerate() {
                let mut c = self.key_prefix(FAMILY_ONE_FILTER);
                c.push(i as u8);
                c.extend_from_slice(value);
                c.extend_from_slice(term.as_bytes());
                out.push(c);
            }
        }
    }

    /// Parse a search: `text` is split into terms (the last also a prefix); `filters` are
    /// `(field, value)` equalities on declared filter fields.
    ///
    /// Errors (`InvalidArgument`): more than [`MAX_TERMS`] terms or [`MAX_FILTERS`] filters,
    /// a field that is not a filter field of the index or is filtered twice, a limit outside
    /// 1..=[`MAX_RESULTS`].
    pub fn parse_query(
        &self,
        text: &str,
        filters: &[(String, Value)],
        limit: usize,
    ) -> Result<TextQuery> {
        let mut all = Vec::new();
        for_each_term(text, |t| all.push(t.to_owned()));
        if all.len() > MAX_TERMS {
            return Err(Error::InvalidArgument(format!(
                "search index {}.{}: the search text has {} terms; at most {MAX_TERMS} are allowed",
                self.table_name,
                self.name,
                all.len()
            )));
        }
        if filters.len() > MAX_FILTERS {
            return Err(Error::InvalidArgument(format!(
                "search index {}.{}: {} filters; at most {MAX_FILTERS} are allowed",
                self.table_name,
                self.name,
                filters.len()
            )));
        }
        if limit == 0 || limit > MAX_RESULTS {
            return Err(Error::InvalidArgument(format!(
                "search index {}.{}: a search returns 1 to {MAX_RESULTS} results; {limit} asked",
                self.table_name, self.name
            )));
        }
        let mut parsed = Vec::with_capacity(filters.len());
        for (field, value) in filters {
            let pos = self.filters.position(
                field,
                &format!("search index {}.{}", self.table_name, self.name),
            )?;
            if parsed.iter().any(|(p, _)| *p == pos) {
                return Err(Error::InvalidArgument(format!(
                    "search index {}.{}: filter field {field:?} is given twice",
                    self.table_name, self.name
                )));
            }
            parsed.push((pos, keys::value_key(value)));
        }
        parsed.sort_unstable_by_key(|(p, _)| *p);
        let prefix = all.last().cloned();
        let mut seen = HashSet::new();
        let terms = all.into_iter().filter(|t| seen.insert(t.clone())).collect();
        Ok(TextQuery {
            terms,
            prefix,
            filters: parsed,
            limit,
        })
    }

    /// The read set of a search: per term, the keys of documents holding it (the last term:
    /// any term it prefixes) under the query's filter values. Exact without filters and
    /// with every filter field filtered; with some filtered, exact on the first of them.
    pub fn read_intervals(&self, query: &TextQuery) -> Vec<Interval> {
        let n = self.filters.len();
        let all_filtered = n > 0 && query.filters.len() == n;
        let all_values: Vec<u8> = query.filters.iter().flat_map(|(_, k)| k.clone()).collect();
        let key_for = |term: &str, prefix: bool| -> Vec<u8> {
            if query.filters.is_empty() {
                let mut k = self.key_prefix(FAMILY_TERM_FIRST);
                k.extend_from_slice(term.as_bytes());
                if !prefix {
                    k.push(0);
                }
                k
            } else if all_filtered && !prefix {
                let mut k = self.key_prefix(FAMILY_TERM_FIRST);
                k.extend_from_slice(term.as_bytes());
                k.push(0);
                k.extend_from_slice(&all_values);
                k
            } else if all_filtered && n > 1 {
                let mut k = self.key_prefix(FAMILY_FILTERS_FIRST);
                k.extend_from_slice(&all_values);
                k.extend_from_slice(term.as_bytes());
                k
            } else {
                let (pos, value) = &query.filters[0];
                let mut k = self.key_prefix(FAMILY_ONE_FILTER);
                k.push(*pos as u8);
                k.extend_from_slice(value);
                k.extend_from_slice(term.as_bytes());
                k
            }
        };
        let mut out = Vec::with_capacity(query.terms.len() + 1);
        for term in &query.terms {
            if Some(term) == query.prefix.as_ref() {
                continue;
            }
            let k = key_for(term, false);
            let exact_point = !query.filters.is_empty();
            if exact_point {
                out.push(Interval::point(&k));
            } else {
                out.extend(prefix_interval(k));
            }
        }
        if let Some(p) = &query.prefix {
            out.extend(prefix_interval(key_for(p, true)));
        }
        out
    }
}

/// Every key starting with `prefix`.
fn prefix_interval(prefix: Vec<u8>) -> Option<Interval> {
    let end = keys::prefix_successor(&prefix)?;
    Interval::new(prefix, end)
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Status {
    Building,
    Ready,
    Failed(String),
}

struct LogEntry {
    ts: Timestamp,
    id: DocumentId,
    doc: Option<Arc<TokenizedDoc>>,
}

struct TextState {
    status: Status,
    searcher: Searcher,
    base_ts: Timestamp,
    /// Changes in timestamp order: every one after `base_ts`, and earlier ones for a while.
    log: Vec<LogEntry>,
    /// Searches at snapshots below this are refused (the log no longer covers them).
    floor: Timestamp,
    /// When the last change was recorded (a quiet index gets its segments merged).
    last_change: std::time::Instant,
}

struct Fields {
    id: Field,
    id_hi: Field,
    id_lo: Field,
    body: Field,
    filters: Vec<Field>,
}

/// A full-text index: tantivy base, change log, and the means to search both.
pub struct TextIndex {
    /// What it indexes.
    pub def: Arc<TextIndexDef>,
    fields: Fields,
    reader: IndexReader,
    writer: Mutex<IndexWriter>,
    state: RwLock<TextState>,
    ready: Condvar,
    ready_lock: Mutex<()>,
}

fn tantivy_error(def: &TextIndexDef, e: &tantivy::TantivyError) -> Error {
    Error::InvalidArgument(format!("search index {}.{}: {e}", def.table_name, def.name))
}

fn id_parts(id: &InternalId) -> (u64, u64) {
    let hi = u64::from_be_bytes(id.0[..8].try_into().unwrap_or_default());
    let lo = u64::from_be_bytes(id.0[8..].try_into().unwrap_or_default());
    (hi, lo)
}

fn id_from_parts(table: TableNumber, hi: u64, lo: u64) -> DocumentId {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&hi.to_be_bytes());
    b[8..].copy_from_slice(&lo.to_be_bytes());
    DocumentId {
        table,
        internal: InternalId(b),
    }
}

/// BM25 statistics of a search: the base's, with the changed documents' versions counted
/// in, so base hits and changed documents are scored alike (and exactly, when everything
/// is still in the log).
struct Stats<'a> {
    searcher: &'a Searcher,
    body: Field,
    changed: Vec<&'a TokenizedDoc>,
    total_docs: u64,
    total_tokens: u64,
}

impl<'a> Stats<'a> {
    fn new(
        searcher: &'a Searcher,
        body: Field,
        changed: &'a HashMap<DocumentId, Option<Arc<TokenizedDoc>>>,
    ) -> tantivy::Result<Self> {
        let changed: Vec<&TokenizedDoc> = changed
            .values()
            .flatten()
            .map(|d| &**d)
            .filter(|d| !d.terms.is_empty())
            .collect();
        let total_docs = searcher.total_num_docs()? + changed.len() as u64;
        let total_tokens = searcher.total_num_tokens(body)?
            + changed.iter().map(|d| u64::from(d.length)).sum::<u64>();
        Ok(Stats {
            searcher,
            body,
            changed,
            total_docs,
            total_tokens,
        })
    }

    fn average(&self) -> f32 {
        if self.total_docs == 0 {
            1.0
        } else {
            self.total_tokens as f32 / self.total_docs as f32
        }
    }

    fn weight(&self, term: &str) -> tantivy::Result<Bm25Weight> {
        let df = self.doc_freq(&Term::from_field_text(self.body, term))?;
        Ok(Bm25Weight::for_one_term(
            df,
            self.total_docs,
            self.average(),
        ))
    }
}

impl Bm25StatisticsProvider for Stats<'_> {
    fn total_num_tokens(&self, _field: Field) -> tantivy::Result<u64> {
        Ok(self.total_tokens)
    }

    fn total_num_docs(&self) -> tantivy::Result<u64> {
        Ok(self.total_docs)
    }

    fn doc_freq(&self, term: &Term) -> tantivy::Result<u64> {
        let base = self.searcher.doc_freq(term)?;
        let extra = match term.value().as_str() {
            Some(t) if term.field() == self.body => self
                .changed
                .iter()
                .filter(|d| d.term_frequency(t).is_some())
                .count() as u64,
            _ => 0,
        };
        Ok((base + extra).min(self.total_docs))
    }
}

/// A base hit in the top-k heap; the greatest is the worst kept (lowest score, then the
/// largest id).
#[derive(Clone, Copy, PartialEq)]
struct Hit {
    score: f32,
    id: (u64, u64),
}

impl Eq for Hit {}

impl PartialOrd for Hit {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Hit {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        other
            .score
            .total_cmp(&self.score)
            .then(self.id.cmp(&other.id))
    }
}

/// One scored result before its document is fetched.
struct Candidate {
    score: f32,
    id: DocumentId,
    doc: Option<DocumentRef>,
}

impl TextIndex {
    /// An empty index, not ready until [`TextIndex::build`] ran.
    pub fn new(def: TextIndexDef) -> Result<Self> {
        let mut builder = Schema::builder();
        let id = builder.add_bytes_field("id", BytesOptions::default().set_indexed());
        let id_hi = builder.add_u64_field("id_hi", FAST);
        let id_lo = builder.add_u64_field("id_lo", FAST);
        let indexing = TextFieldIndexing::default()
            .set_tokenizer(TOKENIZER_NAME)
            .set_index_option(IndexRecordOption::WithFreqs)
            .set_fieldnorms(true);
        let body = builder.add_text_field(
            "body",
            TextOptions::default().set_indexing_options(indexing),
        );
        let filters = (0..def.filters.len())
            .map(|i| {
                builder
                    .add_bytes_field(&format!("filter{i}"), BytesOptions::default().set_indexed())
            })
            .collect();
        let index = Index::create_in_ram(builder.build());
        index
            .tokenizers()
            .register(TOKENIZER_NAME, ReactiveTokenizer::default());
        let threads = std::thread::available_parallelism()
            .map_or(1, std::num::NonZero::get)
            .clamp(1, 2);
        let writer: IndexWriter = index
            .writer_with_num_threads(threads, WRITER_BUDGET)
            .map_err(|e| tantivy_error(&def, &e))?;
        // Under write load each flush adds a segment; merge them sooner than tantivy's
        // default (8 of a size) so searches open fewer.
        let mut policy = tantivy::indexer::LogMergePolicy::default();
        policy.set_min_num_segments(4);
        writer.set_merge_policy(Box::new(policy));
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()
            .map_err(|e| tantivy_error(&def, &e))?;
        let searcher = reader.searcher();
        Ok(TextIndex {
            def: Arc::new(def),
            fields: Fields {
                id,
                id_hi,
                id_lo,
                body,
                filters,
            },
            reader,
            writer: Mutex::new(writer),
            state: RwLock::new(TextState {
                status: Status::Building,
                searcher,
                base_ts: Timestamp::ZERO,
                log: Vec::new(),
                floor: Timestamp::ZERO,
                last_change: std::time::Instant::now(),
            }),
            ready: Condvar::new(),
            ready_lock: Mutex::new(()),
        })
    }

    /// The tantivy document of a version: `None` when its search field holds no term.
    fn tantivy_doc(
        &self,
        doc: &DocumentRef,
        filter_keys: Option<&[Vec<u8>]>,
    ) -> Option<TantivyDocument> {
        let Some(Value::String(text)) = doc.get(&self.def.search_path) else {
            return None;
        };
        if !has_term(&text) {
            return None;
        }
        let mut out = TantivyDocument::new();
        let (hi, lo) = id_parts(&doc.id.internal);
        out.add_bytes(self.fields.id, &doc.id.internal.0);
        out.add_u64(self.fields.id_hi, hi);
        out.add_u64(self.fields.id_lo, lo);
        out.add_text(self.fields.body, &text);
        let computed;
        let keys = match filter_keys {
            Some(k) => k,
            None => {
                computed = self.def.filters.keys(doc);
                &computed
            }
        };
        for (field, key) in self.fields.filters.iter().zip(keys) {
            out.add_bytes(*field, key);
        }
        Some(out)
    }

    /// Build the base from `docs`, the table's documents at `ts`; the index is ready after.
    /// Changes published meanwhile (after `ts`) are already in the log.
    pub fn build(&self, docs: &[DocumentRef], ts: Timestamp) -> Result<()> {
        let result: Result<Searcher> = (|| {
            let mut writer = self.writer.lock();
            for doc in docs {
                if let Some(d) = self.tantivy_doc(doc, None) {
                    writer
                        .add_document(d)
                        .map_err(|e| tantivy_error(&self.def, &e))?;
                }
            }
            writer.commit().map_err(|e| tantivy_error(&self.def, &e))?;
            // The segments (one per indexing thread) are merged into one by the maintenance
            // thread once the index is quiet (`optimize`), off the build's path.
            self.reader
                .reload()
                .map_err(|e| tantivy_error(&self.def, &e))?;
            Ok(self.reader.searcher())
        })();
        let mut state = self.state.write();
        match result {
            Ok(ref searcher) => {
                state.searcher = searcher.clone();
                state.base_ts = ts;
                state.floor = ts;
                state.status = Status::Ready;
            }
            Err(ref e) => state.status = Status::Failed(e.to_string()),
        }
        drop(state);
        let _g = self.ready_lock.lock();
        self.ready.notify_all();
        result.map(|_| ())
    }

    /// Whether the index serves searches.
    pub fn is_ready(&self) -> bool {
        self.state.read().status == Status::Ready
    }

    /// Record a published change (`doc`: the new version, `None` when deleted), with its
    /// tokenized form when the commit computed it already.
    pub fn record(
        &self,
        ts: Timestamp,
        id: DocumentId,
        doc: Option<&DocumentRef>,
        tokenized: Option<Arc<TokenizedDoc>>,
    ) {
        let tokenized = match (doc, tokenized) {
            (None, _) => None,
            (Some(_), Some(t)) => Some(t),
            (Some(d), None) => Some(Arc::new(self.def.tokenize(d))),
        };
        let mut state = self.state.write();
        state.log.push(LogEntry {
            ts,
            id,
            doc: tokenized,
        });
        state.last_change = std::time::Instant::now();
    }

    /// Number of tantivy segments of the base.
    pub fn segments(&self) -> usize {
        self.state.read().searcher.segment_readers().len()
    }

    /// Number of changes waiting to reach the base.
    pub fn pending(&self) -> usize {
        let state = self.state.read();
        let base = state.base_ts;
        state.log.len() - state.log.partition_point(|e| e.ts <= base)
    }

    /// Merge the base into one segment when the index has been quiet for `quiet` and has
    /// several: each flush under write load adds a segment, and a search opens every term
    /// in every segment. Returns whether it merged.
    pub fn optimize(&self, quiet: Duration) -> Result<bool> {
        {
            let state = self.state.read();
            if state.status != Status::Ready
                || state.last_change.elapsed() < quiet
                || state.searcher.segment_readers().len() < 2
            {
                return Ok(false);
            }
        }
        let mut writer = self.writer.lock();
        let segments = writer
            .index()
            .searchable_segment_ids()
            .map_err(|e| tantivy_error(&self.def, &e))?;
        if segments.len() < 2 {
            return Ok(false);
        }
        if writer.merge(&segments).wait().is_err() {
            // One of them is being merged by tantivy's merge policy meanwhile: next round.
            return Ok(false);
        }
        drop(writer);
        self.reader
            .reload()
            .map_err(|e| tantivy_error(&self.def, &e))?;
        let searcher = self.reader.searcher();
        // The merged segments hold exactly what the base held: only the searcher changes.
        self.state.write().searcher = searcher;
        Ok(true)
    }

    /// Move the log into the base (one tantivy commit). Returns how many changes moved.
    pub fn flush(&self) -> Result<usize> {
        let mut writer = self.writer.lock();
        let (target, changes) = {
            let state = self.state.read();
            if state.status != Status::Ready {
                return Ok(0);
            }
            let start = state.log.partition_point(|e| e.ts <= state.base_ts);
            let Some(last) = state.log.last() else {
                return Ok(0);
            };
            if start == state.log.len() {
                return Ok(0);
            }
            let mut latest: HashMap<DocumentId, Option<Arc<TokenizedDoc>>> = HashMap::new();
            for e in &state.log[start..] {
                latest.insert(e.id, e.doc.clone());
            }
            (last.ts, latest)
        };
        for (id, doc) in &changes {
            writer.delete_term(Term::from_field_bytes(self.fields.id, &id.internal.0));
            if let Some(d) = doc
                .as_deref()
                .filter(|d| !d.terms.is_empty())
                .and_then(|d| self.tantivy_doc(&d.doc, Some(&d.filter_keys)))
            {
                writer
                    .add_document(d)
                    .map_err(|e| tantivy_error(&self.def, &e))?;
            }
        }
        writer.commit().map_err(|e| tantivy_error(&self.def, &e))?;
        self.reader
            .reload()
            .map_err(|e| tantivy_error(&self.def, &e))?;
        let searcher = self.reader.searcher();
        let mut state = self.state.write();
        state.searcher = searcher;
        state.base_ts = target;
        let keep_after = Timestamp(target.0.saturating_sub(LOG_RETENTION_NS));
        let cut = state.log.partition_point(|e| e.ts <= keep_after);
        if cut > 0 {
            state.floor = state.floor.max(state.log[cut - 1].ts);
            state.log.drain(..cut);
        }
        Ok(changes.len())
    }

    fn wait_ready(&self) -> Result<()> {
        let deadline = std::time::Instant::now() + READY_WAIT;
        loop {
            match &self.state.read().status {
                Status::Ready => return Ok(()),
                Status::Failed(e) => {
                    return Err(Error::InvalidArgument(format!(
                        "search index {}.{} failed to build: {e}",
                        self.def.table_name, self.def.name
                    )));
                }
                Status::Building => {}
            }
            let mut g = self.ready_lock.lock();
            if std::time::Instant::now() >= deadline {
                return Err(Error::IndexNotReady {
                    table: self.def.table_name.clone(),
                    index: self.def.name.clone(),
                });
            }
            if self.state.read().status == Status::Building {
                let _ = self.ready.wait_for(&mut g, Duration::from_millis(50));
            }
        }
    }

    /// Search at `snapshot`, with the searching transaction's own writes to this table
    /// (`(id, new version)`, `None` when deleted). Returns documents with their BM25 score,
    /// best first, then by `_id`.
    ///
    /// Errors: `IndexNotReady` while the index builds (after waiting a few seconds),
    /// `TransactionTooOld` for a snapshot older than the log covers.
    pub fn search(
        &self,
        query: &TextQuery,
        snapshot: Timestamp,
        own: &[(DocumentId, Option<DocumentRef>)],
        store: &RwLock<MvccStore>,
    ) -> Result<Vec<(DocumentRef, f32)>> {
        self.wait_ready()?;
        if query.terms.is_empty() {
            return Ok(Vec::new());
        }
        let mut changed: HashMap<DocumentId, Option<Arc<TokenizedDoc>>> = HashMap::new();
        let mut fetch: Vec<DocumentId> = Vec::new();
        let searcher = {
            let state = self.state.read();
            if snapshot < state.floor {
                return Err(Error::TransactionTooOld {
                    begin_ts: snapshot,
                    oldest: state.floor,
                });
            }
            let base = state.base_ts;
            if snapshot >= base {
                let start = state.log.partition_point(|e| e.ts <= base);
                for e in &state.log[start..] {
                    if e.ts > snapshot {
                        break;
                    }
                    changed.insert(e.id, e.doc.clone());
                }
            } else {
                // The base is newer than the snapshot: documents changed in (snapshot, base]
                // are read as they were at the snapshot.
                let start = state.log.partition_point(|e| e.ts <= snapshot);
                let end = state.log.partition_point(|e| e.ts <= base);
                let ids: HashSet<DocumentId> = state.log[start..end].iter().map(|e| e.id).collect();
                let mut found: HashMap<DocumentId, Option<Arc<TokenizedDoc>>> = HashMap::new();
                for e in &state.log[..start] {
                    if ids.contains(&e.id) {
                        found.insert(e.id, e.doc.clone());
                    }
                }
                for id in ids {
                    match found.remove(&id) {
                        Some(doc) => {
                            changed.insert(id, doc);
                        }
                        None => fetch.push(id),
                    }
                }
            }
            state.searcher.clone()
        };
        if !fetch.is_empty() {
            let docs: Vec<(DocumentId, Option<DocumentRef>)> = {
                let store = store.read();
                fetch
                    .iter()
                    .map(|id| (*id, store.get(id, snapshot).cloned()))
                    .collect()
            };
            for (id, doc) in docs {
                changed.insert(id, doc.map(|d| Arc::new(self.def.tokenize(&d))));
            }
        }
        for (id, doc) in own {
            changed.insert(*id, doc.as_ref().map(|d| Arc::new(self.def.tokenize(d))));
        }
        let stats = Stats::new(&searcher, self.fields.body, &changed)
            .map_err(|e| tantivy_error(&self.def, &e))?;
        let base_terms = self.base_terms(&searcher, query)?;
        let mut candidates = self.search_base(&searcher, &stats, query, &base_terms, &changed)?;
        self.score_changed(&stats, query, &base_terms, &changed, &mut candidates)?;
        // Best first; equal scores (rare) by `_id` as Convex orders ids.
        candidates.sort_by(|a, b| {
            b.score
                .total_cmp(&a.score)
                .then_with(|| a.id.internal.cmp(&b.id.internal))
        });
        candidates.truncate(query.limit);
        let store = store.read();
        Ok(candidates
            .into_iter()
            .filter_map(|c| {
                let doc = c.doc.or_else(|| store.get(&c.id, snapshot).cloned())?;
                Some((doc, c.score))
            })
            .collect())
    }

    /// The terms the last term expands to in the base (itself included when present).
    fn expansions(&self, searcher: &Searcher, prefix: &str) -> Result<BTreeSet<String>> {
        let mut out = BTreeSet::new();
        let end = keys::prefix_successor(prefix.as_bytes());
        for segment in searcher.segment_readers() {
            let inverted = segment
                .inverted_index(self.fields.body)
                .map_err(|e| tantivy_error(&self.def, &e))?;
            let range = inverted.terms().range().ge(prefix.as_bytes());
            let range = match &end {
                Some(e) => range.lt(e),
                None => range,
            };
            let mut stream = range
                .into_stream()
                .map_err(|e| Error::InvalidArgument(format!("search: {e}")))?;
            let mut taken = 0;
            while taken < MAX_PREFIX_EXPANSIONS && stream.advance() {
                if let Ok(t) = std::str::from_utf8(stream.key()) {
                    out.insert(t.to_owned());
                }
                taken += 1;
            }
        }
        while out.len() > MAX_PREFIX_EXPANSIONS {
            out.pop_last();
        }
        Ok(out)
    }

    /// The terms searched in the base: the query's terms and the prefix's expansions.
    fn base_terms(&self, searcher: &Searcher, query: &TextQuery) -> Result<BTreeSet<String>> {
        let mut terms: BTreeSet<String> = query.terms.iter().cloned().collect();
        if let Some(p) = &query.prefix {
            terms.extend(self.expansions(searcher, p)?);
        }
        Ok(terms)
    }

    fn search_base(
        &self,
        searcher: &Searcher,
        stats: &Stats<'_>,
        query: &TextQuery,
        terms: &BTreeSet<String>,
        changed: &HashMap<DocumentId, Option<Arc<TokenizedDoc>>>,
    ) -> Result<Vec<Candidate>> {
        if searcher.num_docs() == 0 || terms.is_empty() {
            return Ok(Vec::new());
        }
        let mut should: Vec<(Occur, Box<dyn Query>)> = terms
            .iter()
            .map(|t| {
                let q: Box<dyn Query> = Box::new(TermQuery::new(
                    Term::from_field_text(self.fields.body, t),
                    IndexRecordOption::WithFreqs,
                ));
                if query.terms.contains(t) {
                    (Occur::Should, q)
                } else {
                    // The boost reaches the term scorer, so block-max WAND still applies.
                    let boosted: Box<dyn Query> = Box::new(BoostQuery::new(q, PREFIX_BOOST));
                    (Occur::Should, boosted)
                }
            })
            .collect();
        let text_query: Box<dyn Query> = if should.len() == 1 {
            should.pop().map_or_else(|| unreachable!(), |(_, q)| q)
        } else {
            Box::new(BooleanQuery::new(should))
        };
        let full: Box<dyn Query> = if query.filters.is_empty() {
            text_query
        } else {
            let mut clauses: Vec<(Occur, Box<dyn Query>)> = vec![(Occur::Must, text_query)];
            for (pos, key) in &query.filters {
                let tq = TermQuery::new(
                    Term::from_field_bytes(self.fields.filters[*pos], key),
                    IndexRecordOption::Basic,
                );
                clauses.push((
                    Occur::Must,
                    Box::new(ConstScoreQuery::new(Box::new(tq), 0.0)),
                ));
            }
            Box::new(BooleanQuery::new(clauses))
        };
        // Top `limit` by (score, then `_id`), with block-max WAND: the threshold handed back
        // is just below the worst kept score, so a hit tied with it still arrives and the
        // smaller `_id` wins (ids of one table order as their internal bytes).
        let weight = full
            .weight(EnableScoring::enabled_from_statistics_provider(
                stats, searcher,
            ))
            .map_err(|e| tantivy_error(&self.def, &e))?;
        let want = query.limit;
        let mut heap: BinaryHeap<Hit> = BinaryHeap::with_capacity(want + 1);
        for segment in searcher.segment_readers() {
            let ff = segment.fast_fields();
            let hi = ff.u64("id_hi").map_err(|e| tantivy_error(&self.def, &e))?;
            let lo = ff.u64("id_lo").map_err(|e| tantivy_error(&self.def, &e))?;
            let floor = |heap: &BinaryHeap<Hit>| {
                if heap.len() < want {
                    f32::NEG_INFINITY
                } else {
                    heap.peek()
                        .map_or(f32::NEG_INFINITY, |w| w.score.next_down())
                }
            };
            let start = floor(&heap);
            weight
                .for_each_pruning(start, segment, &mut |doc, score| {
                    if let (Some(h), Some(l)) = (hi.first(doc), lo.first(doc)) {
                        let hit = Hit { score, id: (h, l) };
                        let better = heap.len() < want || heap.peek().is_some_and(|w| hit < *w);
                        if better && !changed.contains_key(&id_from_parts(self.def.table, h, l)) {
                            heap.push(hit);
                            if heap.len() > want {
                                heap.pop();
                            }
                        }
                    }
                    floor(&heap)
                })
                .map_err(|e| tantivy_error(&self.def, &e))?;
        }
        Ok(heap
            .into_iter()
            .map(|h| Candidate {
                score: h.score,
                id: id_from_parts(self.def.table, h.id.0, h.id.1),
                doc: None,
            })
            .collect())
    }

    fn score_changed(
        &self,
        stats: &Stats<'_>,
        query: &TextQuery,
        base_terms: &BTreeSet<String>,
        changed: &HashMap<DocumentId, Option<Arc<TokenizedDoc>>>,
        out: &mut Vec<Candidate>,
    ) -> Result<()> {
        let mut weights: HashMap<String, Bm25Weight> = HashMap::new();
        for doc in changed.values().flatten() {
            if query
                .filters
                .iter()
                .any(|(pos, key)| doc.filter_keys.get(*pos) != Some(key))
            {
                continue;
            }
            let mut matched: Vec<(&str, u32)> = Vec::new();
            for t in base_terms {
                if let Some(tf) = doc.term_frequency(t) {
                    matched.push((t.as_str(), tf));
                }
            }
            if let Some(p) = &query.prefix {
                let from = doc.terms.partition_point(|(t, _)| **t < **p);
                for (t, tf) in &doc.terms[from..] {
                    if !t.starts_with(p.as_str()) {
                        break;
                    }
                    if !base_terms.contains(&**t) {
                        matched.push((t, *tf));
                    }
                }
            }
            if matched.is_empty() {
                continue;
            }
            let fieldnorm = FieldNormReader::fieldnorm_to_id(doc.length);
            let mut score = 0.0f32;
            for (t, tf) in matched {
                let w = match weights.get(t) {
                    Some(w) => w,
                    None => {
                        let mut w = stats.weight(t).map_err(|e| tantivy_error(&self.def, &e))?;
                        if !query.terms.iter().any(|q| q == t) {
                            w = w.boost_by(PREFIX_BOOST);
                        }
                        weights.entry(t.to_owned()).or_insert(w)
                    }
                };
                score += w.score(fieldnorm, tf);
            }
            out.push(Candidate {
                score,
                id: doc.doc.id,
                doc: Some(Arc::clone(&doc.doc)),
            });
        }
        Ok(())
    }

    /// Compare the index at `snapshot` (at or after its base) with `docs`, the table's
    /// documents then: each document with terms must be indexed exactly once, no other
    /// document may be, and versions changed since the base must carry the document's
    /// terms. Returns the ids (encoded) that break this, sorted.
    pub fn verify(&self, docs: &[DocumentRef], snapshot: Timestamp) -> Result<Vec<String>> {
        self.wait_ready()?;
        let (searcher, changed) = {
            let state = self.state.read();
            if snapshot < state.base_ts {
                return Err(Error::InvalidArgument(
                    "verify a search index at or after its base snapshot".to_owned(),
                ));
            }
            let start = state.log.partition_point(|e| e.ts <= state.base_ts);
            let mut changed: HashMap<DocumentId, Option<Arc<TokenizedDoc>>> = HashMap::new();
            for e in &state.log[start..] {
                if e.ts <= snapshot {
                    changed.insert(e.id, e.doc.clone());
                }
            }
            (state.searcher.clone(), changed)
        };
        // Expected: each document with terms, keyed by id.
        let mut expected: HashMap<DocumentId, Vec<(Box<str>, u32)>> = HashMap::new();
        for d in docs {
            let t = self.def.tokenize(d);
            if !t.terms.is_empty() {
                expected.insert(d.id, t.terms);
            }
        }
        // Actual: base documents not overridden by the log, plus the log's versions.
        let mut actual: HashMap<DocumentId, usize> = HashMap::new();
        for segment in searcher.segment_readers() {
            let ff = segment.fast_fields();
            let stat = |e: tantivy::TantivyError| tantivy_error(&self.def, &e);
            let hi = ff.u64("id_hi").map_err(stat)?;
            let lo = ff.u64("id_lo").map_err(stat)?;
            for doc in segment.doc_ids_alive() {
                let (Some(h), Some(l)) = (hi.first(doc), lo.first(doc)) else {
                    continue;
                };
                let id = id_from_parts(self.def.table, h, l);
                if !changed.contains_key(&id) {
                    *actual.entry(id).or_insert(0) += 1;
                }
            }
        }
        for (id, doc) in &changed {
            if doc.as_ref().is_some_and(|d| !d.terms.is_empty()) {
                *actual.entry(*id).or_insert(0) += 1;
            }
        }
        let mut bad: Vec<String> = Vec::new();
        for (id, count) in &actual {
            if *count != 1 || !expected.contains_key(id) {
                bad.push(id.encode());
            }
        }
        for id in expected.keys() {
            if !actual.contains_key(id) {
                bad.push(id.encode());
            }
        }
        // Terms of documents that changed since the base are compared directly.
        for (id, doc) in &changed {
            if let (Some(d), Some(terms)) = (doc, expected.get(id))
                && d.terms != *terms
            {
                bad.push(id.encode());
            }
        }
        bad.sort();
        bad.dedup();
        Ok(bad)
    }
}
