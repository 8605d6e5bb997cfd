//! Search indexes: full-text ([`text`], tantivy) and vector ([`vector`]), kept beside the
//! MVCC store and read at a transaction's snapshot.
//!
//! Search indexes are derived state: nothing of them is persisted. The engine builds each
//! one from the table's documents when it is registered (at open, or when a schema adds it)
//! and every published commit updates it, in the same step that moves the visible
//! timestamp, so a snapshot never sees a commit in the documents but not in a search.
//!
//! Their read and write keys live in a private keyspace, one 4-byte id per index in
//! `[KEY_ID_BASE, KEY_ID_BASE + 2^KEY_ID_BITS)` = `0xF000_0000..=0xF7FF_FFFF` (catalog index
//! ids count from 1 and never get there), so the write log, conflict detection and
//! subscriptions treat a search like any other read.
//!
//! A key id is derived from the index's definition, never allocated, so it is the same in
//! every process on one database and across restarts, whatever order the indexes are
//! registered in (a read set computed in one process is checked against the write log of
//! another):
//!
//! ```text
//! key_id = KEY_ID_BASE + (FNV-1a-64(encoding) >> (64 - KEY_ID_BITS))   // top 27 bits
//! text:   str("text")   ++ str(table) ++ str(index) ++ str(search_field) ++ list(filter fields)
//! vector: str("vector") ++ str(table) ++ str(index) ++ str(vector_field)
//!                       ++ u64(dimensions) ++ list(filter fields)
//! str(s) = u64 BE byte length ++ UTF-8 bytes; list(l) = u64 BE count ++ str of each, in
//! declaration order; u64(n) = 8 bytes BE
//! ```
//!
//! FNV-1a-64 is the FNV specification's (offset basis `0xcbf29ce484222325`, prime
//! `0x100000001b3`), implemented here over those explicit bytes ([`text_key_id`],
//! [`vector_key_id`]). The shape part is what makes two definitions incompatible (what
//! `same_shape` compares, less the vector index's `exact_limit`, a per-process search
//! setting that changes no key): an index replaced by one of another shape gets another id.
//! Two registered indexes whose ids collide are refused ([`Registry::insert_text`]: a
//! `Schema` error naming both), never made to share a keyspace.
//!
//! A maintenance thread (one per engine) moves text indexes' change logs into their
//! tantivy base and keeps vector indexes' approximate graphs and rows up to date.

pub mod text;
pub mod tokenize;
pub mod vector;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex, RwLock, RwLockReadGuard};

use crate::document::DocumentRef;
use crate::id::DocumentId;
use crate::keys;
use crate::timestamp::Timestamp;
use crate::transaction::PendingWrite;
use crate::value::FieldPath;

pub use text::{TextIndex, TextIndexDef, TextQuery, TokenizedDoc};
pub use vector::{VectorIndex, VectorIndexDef, VectorQuery, VectorRead};

/// The first key id of search indexes' private keyspaces.
pub const KEY_ID_BASE: u32 = 0xF000_0000;
/// Search key ids take this many bits above [`KEY_ID_BASE`] (ids `0xF000_0000..=0xF7FF_FFFF`;
/// `0xF800_0000` up stays free).
pub const KEY_ID_BITS: u32 = 27;
/// FNV-1a-64's offset basis and prime.
const FNV_OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;
/// A text index with no change for this long gets its segments merged into one.
const QUIET_BEFORE_MERGE: Duration = Duration::from_secs(2);
/// How often the maintenance thread looks for work.
const MAINTENANCE_INTERVAL: Duration = Duration::from_millis(100);

/// Whether `id` (the first 4 bytes of a keyspace key, big-endian) is in the range of search
/// key ids, `[KEY_ID_BASE, KEY_ID_BASE + 2^KEY_ID_BITS)`.
pub fn is_search_key_id(id: u32) -> bool {
    id.wrapping_sub(KEY_ID_BASE) < (1 << KEY_ID_BITS)
}

/// The key id of text index `index` of `table` (see the module documentation for the
/// formula); in the range [`is_search_key_id`] accepts.
pub fn text_key_id(table: &str, index: &str, search_field: &str, filter_fields: &[String]) -> u32 {
    let mut h = ShapeHash::default();
    h.str("text");
    h.str(table);
    h.str(index);
    h.str(search_field);
    h.list(filter_fields);
    h.key_id()
}

/// The key id of vector index `index` of `table` (`dimensions`: floats per vector; see the
/// module documentation for the formula); in the range [`is_search_key_id`] accepts.
pub fn vector_key_id(
    table: &str,
    index: &str,
    vector_field: &str,
    dimensions: usize,
    filter_fields: &[String],
) -> u32 {
    let mut h = ShapeHash::default();
    h.str("vector");
    h.str(table);
    h.str(index);
    h.str(vector_field);
    h.u64(dimensions as u64);
    h.list(filter_fields);
    h.key_id()
}

/// FNV-1a-64 over explicitly encoded fields: the same bytes give the same id on every
/// platform and Rust version (std's `Hash` impls and `DefaultHasher` promise neither).
struct ShapeHash(u64);

impl Default for ShapeHash {
    fn default() -> Self {
        ShapeHash(FNV_OFFSET_BASIS)
    }
}

impl ShapeHash {
    fn bytes(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(FNV_PRIME);
        }
    }

    fn u64(&mut self, n: u64) {
        self.bytes(&n.to_be_bytes());
    }

    fn str(&mut self, s: &str) {
        self.u64(s.len() as u64);
        self.bytes(s.as_bytes());
    }

    fn list(&mut self, items: &[String]) {
        self.u64(items.len() as u64);
        for item in items {
            self.str(item);
        }
    }

    /// `KEY_ID_BASE` plus the hash's top `KEY_ID_BITS` bits (FNV's best-mixed ones).
    fn key_id(&self) -> u32 {
        KEY_ID_BASE + (self.0 >> (64 - KEY_ID_BITS)) as u32
    }
}

/// The filter fields of a search index (text or vector), in declaration order.
#[derive(Debug)]
pub struct FilterFields {
    names: Vec<String>,
    paths: Vec<FieldPath>,
}

impl FilterFields {
    /// Parse `names`. Errors on a bad field path.
    pub fn new(names: &[String]) -> crate::Result<Self> {
        let paths = names
            .iter()
            .map(|f| FieldPath::parse(f))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        Ok(FilterFields {
            names: names.to_vec(),
            paths,
        })
    }

    /// The field names.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// Number of filter fields.
    pub fn len(&self) -> usize {
        self.paths.len()
    }

    /// Whether the index has none.
    pub fn is_empty(&self) -> bool {
        self.paths.is_empty()
    }

    /// The key encoding of each filter field's value of `doc` (`undefined` when missing).
    pub fn keys(&self, doc: &DocumentRef) -> Vec<Vec<u8>> {
        self.paths
            .iter()
            .map(|p| {
                let mut k = Vec::new();
                keys::encode_optional(doc.get(p).as_ref(), &mut k);
                k
            })
            .collect()
    }

    /// The position of filter field `field`; `index` names the index in the error
    /// (`InvalidArgument` when `field` is not one of them).
    pub fn position(&self, field: &str, index: &str) -> crate::Result<usize> {
        self.names.iter().position(|f| f == field).ok_or_else(|| {
            crate::Error::InvalidArgument(format!(
                "{index}: {field:?} is not one of its filter fields {:?}",
                self.names
            ))
        })
    }
}

/// What a commit's writes mean to the search indexes.
#[derive(Default)]
pub struct SearchWrites {
    /// The keys the writes touch (old and new versions).
    pub keys: Vec<Vec<u8>>,
    /// New versions as text indexes tokenized them: `(index key id, document, terms)`,
    /// sorted, so publishing does not tokenize them again.
    pub tokenized: Vec<(u32, DocumentId, Arc<TokenizedDoc>)>,
}

/// The registered indexes at one moment (replaced whole when one is added or removed).
#[derive(Clone, Default)]
pub struct Registry {
    /// Full-text indexes.
    pub text: Vec<Arc<TextIndex>>,
    /// Vector indexes.
    pub vector: Vec<Arc<VectorIndex>>,
}

impl Registry {
    /// Whether no index is registered.
    pub fn is_empty(&self) -> bool {
        self.text.is_empty() && self.vector.is_empty()
    }

    /// The text index `name` of `table`.
    pub fn text(&self, table: &str, name: &str) -> Option<&Arc<TextIndex>> {
        self.text
            .iter()
            .find(|i| i.def.table_name == table && i.def.name == name)
    }

    /// The vector index `name` of `table`.
    pub fn vector(&self, table: &str, name: &str) -> Option<&Arc<VectorIndex>> {
        self.vector
            .iter()
            .find(|i| i.def.table_name == table && i.def.name == name)
    }

    /// The vector index with this key id.
    pub fn vector_by_key(&self, key_id: u32) -> Option<&Arc<VectorIndex>> {
        self.vector.iter().find(|i| i.def.key_id == key_id)
    }

    /// Put text index `index` in place of the text index of the same table and name, if
    /// any.
    ///
    /// Errors: `Schema`, naming both, when another registered index (text or vector) has
    /// the same key id; the registry is then unchanged.
    pub fn insert_text(&mut self, index: Arc<TextIndex>) -> crate::Result<()> {
        let def = &index.def;
        self.check_key_id(def.key_id, "text", &def.table_name, &def.name)?;
        self.text
            .retain(|i| !(i.def.table_name == def.table_name && i.def.name == def.name));
        self.text.push(index);
        Ok(())
    }

    /// Put vector index `index` in place of the vector index of the same table and name, if
    /// any. Errors as [`Registry::insert_text`].
    pub fn insert_vector(&mut self, index: Arc<VectorIndex>) -> crate::Result<()> {
        let def = &index.def;
        self.check_key_id(def.key_id, "vector", &def.table_name, &def.name)?;
        self.vector
            .retain(|i| !(i.def.table_name == def.table_name && i.def.name == def.name));
        self.vector.push(index);
        Ok(())
    }

    /// Refuse `key_id` for the `kind` index `table.name` when an index other than the one it
    /// replaces has it.
    fn check_key_id(&self, key_id: u32, kind: &str, table: &str, name: &str) -> crate::Result<()> {
        let registered = self
            .text
            .iter()
            .map(|i| ("text", i.def.key_id, &i.def.table_name, &i.def.name))
            .chain(
                self.vector
                    .iter()
                    .map(|i| ("vector", i.def.key_id, &i.def.table_name, &i.def.name)),
            );
        for (other_kind, other_id, other_table, other_name) in registered {
            if other_id == key_id
                && (other_kind, other_table.as_str(), other_name.as_str()) != (kind, table, name)
            {
                let message = format!(
                    "{kind} search index {table}.{name} cannot be registered: its key id \
                     {key_id:#010x} is that of {other_kind} search index \
                     {other_table}.{other_name} (key ids are a hash of each index's table, \
                     name and shape, and these two collide); rename one of the two indexes"
                );
                return Err(crate::error::SchemaError::new(message).into());
            }
        }
        Ok(())
    }

    /// The table name and index name behind a private key id.
    pub fn describe_key(&self, key_id: u32) -> Option<(String, String)> {
        self.text
            .iter()
            .map(|i| (i.def.key_id, &i.def.table_name, &i.def.name))
            .chain(
                self.vector
                    .iter()
                    .map(|i| (i.def.key_id, &i.def.table_name, &i.def.name)),
            )
            .find(|(k, _, _)| *k == key_id)
            .map(|(_, t, n)| (t.clone(), n.clone()))
    }

    /// The search keys a transaction's writes touch: those of the version each document had
    /// at the snapshot and of its new version; and the new versions tokenized.
    pub fn write_keys(&self, writes: &BTreeMap<DocumentId, PendingWrite>) -> SearchWrites {
        let mut out = SearchWrites::default();
        if self.is_empty() {
            return out;
        }
        for (id, write) in writes {
            if let Some((_, old)) = &write.old {
                self.doc_keys(*id, old, false, &mut out);
            }
            if let Some(new) = &write.new {
                self.doc_keys(*id, new, true, &mut out);
            }
        }
        out.tokenized.sort_unstable_by_key(|t| (t.0, t.1));
        out
    }

    fn doc_keys(&self, id: DocumentId, doc: &DocumentRef, new: bool, out: &mut SearchWrites) {
        for index in self.text.iter().filter(|i| i.def.table == id.table) {
            let tokenized = index.def.tokenize(doc);
            index.def.write_keys(&tokenized, &mut out.keys);
            if new {
                out.tokenized
                    .push((index.def.key_id, id, Arc::new(tokenized)));
            }
        }
        for index in self.vector.iter().filter(|i| i.def.table == id.table) {
            index.def.write_keys(doc, &mut out.keys);
        }
    }

    /// Check a new document version against the vector indexes of its table.
    ///
    /// Errors: `InvalidDocument` naming the index and field when the vector field holds
    /// something other than `dimensions` finite numbers.
    pub fn check_document(&self, doc: &DocumentRef) -> crate::Result<()> {
        for index in self.vector.iter().filter(|i| i.def.table == doc.id.table) {
            index.def.vector_of(doc)?;
        }
        Ok(())
    }

    /// Apply a published change to every index of its table; `tokenized` is what the commit
    /// computed ([`SearchWrites::tokenized`]).
    pub fn record(
        &self,
        ts: Timestamp,
        id: DocumentId,
        doc: Option<&DocumentRef>,
        tokenized: &[(u32, DocumentId, Arc<TokenizedDoc>)],
    ) {
        for index in self.text.iter().filter(|i| i.def.table == id.table) {
            let cached = tokenized
                .binary_search_by(|(k, d, _)| (*k, *d).cmp(&(index.def.key_id, id)))
                .ok()
                .map(|i| Arc::clone(&tokenized[i].2));
            index.record(ts, id, doc, cached);
        }
        for index in self.vector.iter().filter(|i| i.def.table == id.table) {
            index.record(ts, id, doc);
        }
    }
}

/// The search indexes of one engine.
pub struct SearchIndexes {
    registry: RwLock<Arc<Registry>>,
    version: AtomicU64,
    stop: Mutex<bool>,
    wake: Condvar,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Default for SearchIndexes {
    fn default() -> Self {
        SearchIndexes {
            registry: RwLock::new(Arc::new(Registry::default())),
            version: AtomicU64::new(0),
            stop: Mutex::new(false),
            wake: Condvar::new(),
            thread: Mutex::new(None),
        }
    }
}

impl SearchIndexes {
    /// The registered indexes now, with the registry's version (it grows at each change).
    pub fn current(&self) -> (u64, Arc<Registry>) {
        let guard = self.registry.read();
        (self.version.load(Ordering::Acquire), Arc::clone(&guard))
    }

    /// The registry's version.
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    /// Hold the registry unchanged (publishing holds it while it applies a batch and moves
    /// the visible timestamp, so a registration sees a batch wholly or not at all).
    pub fn hold(&self) -> RwLockReadGuard<'_, Arc<Registry>> {
        self.registry.read()
    }

    /// Change the registry under its write lock; `f` gets a copy to edit and whatever it
    /// returns is returned (the lock is held while `f` runs: keep it short).
    pub fn change<T>(&self, f: impl FnOnce(&mut Registry) -> T) -> T {
        let mut guard = self.registry.write();
        let mut next = (**guard).clone();
        let out = f(&mut next);
        *guard = Arc::new(next);
        self.version.fetch_add(1, Ordering::AcqRel);
        out
    }

    /// Start the maintenance thread (once).
    pub fn start_maintenance(self: &Arc<Self>) {
        let mut thread = self.thread.lock();
        if thread.is_some() {
            return;
        }
        let weak: Weak<SearchIndexes> = Arc::downgrade(self);
        let handle = std::thread::Builder::new()
            .name("reactive-search".to_owned())
            .spawn(move || maintenance_loop(&weak))
            .ok();
        *thread = handle;
    }

    /// Stop the maintenance thread (a vector graph build stops at its next step) and wait
    /// for it.
    pub fn shutdown(&self) {
        for index in &self.current().1.vector {
            index.cancel();
        }
        *self.stop.lock() = true;
        self.wake.notify_all();
        let handle = self.thread.lock().take();
        if let Some(h) = handle
            && h.thread().id() != std::thread::current().id()
        {
            let _ = h.join();
        }
    }

    /// Flush every text index's log into its base and merge its segments now (tests and
    /// benchmarks; the maintenance thread does both in the background).
    pub fn flush_all(&self) -> crate::Result<()> {
        let (_, registry) = self.current();
        for index in &registry.text {
            index.flush()?;
            // tantivy's own merges may hold some segments for a moment: retry, up to ~2 s.
            for _ in 0..100 {
                if index.segments() < 2 || index.optimize(Duration::ZERO)? {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        for index in &registry.vector {
            index.maintain(Timestamp::wall_clock());
        }
        Ok(())
    }

    fn maintain_once(&self, last_vector: &mut Instant) {
        let (_, registry) = self.current();
        for index in &registry.text {
            // Errors leave the changes in the log (searches stay correct, only slower) or
            // the segments unmerged; both are retried next round.
            if index.pending() > 0 {
                let _ = index.flush();
            } else {
                let _ = index.optimize(QUIET_BEFORE_MERGE);
            }
        }
        if last_vector.elapsed() >= Duration::from_secs(1) {
            *last_vector = Instant::now();
            for index in &registry.vector {
                index.maintain(Timestamp::wall_clock());
            }
        }
    }
}

fn maintenance_loop(weak: &Weak<SearchIndexes>) {
    let mut last_vector = Instant::now();
    loop {
        let Some(this) = weak.upgrade() else { return };
        {
            let mut stop = this.stop.lock();
            if *stop {
                return;
            }
            let _ = this.wake.wait_for(&mut stop, MAINTENANCE_INTERVAL);
            if *stop {
                return;
            }
        }
        this.maintain_once(&mut last_vector);
    }
}

impl Drop for SearchIndexes {
    fn drop(&mut self) {
        *self.stop.lock() = true;
        self.wake.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fnv(bytes: &[u8]) -> u64 {
        let mut h = ShapeHash::default();
        h.bytes(bytes);
        h.0
    }

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn fnv_matches_the_specification() {
        assert_eq!(fnv(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv(b"foobar"), 0x8594_4171_f739_67e8);
    }

    /// The ids are part of the protocol between processes: a change of the formula must be
    /// deliberate (these values were computed by an independent implementation).
    #[test]
    fn key_ids_are_pinned() {
        assert_eq!(
            text_key_id("messages", "search_body", "body", &names(&["channel"])),
            0xf2dd_239d
        );
        assert_eq!(
            vector_key_id(
                "messages",
                "by_embedding",
                "embedding",
                1536,
                &names(&["channel"])
            ),
            0xf6fb_e4fb
        );
    }

    #[test]
    fn key_ids_stay_in_their_range() {
        assert!(is_search_key_id(KEY_ID_BASE));
        assert!(is_search_key_id(0xF7FF_FFFF));
        assert!(!is_search_key_id(0xF800_0000));
        assert!(!is_search_key_id(KEY_ID_BASE - 1));
        assert!(!is_search_key_id(1));
        for i in 0..10_000 {
            let name = format!("index{i}");
            assert!(is_search_key_id(text_key_id("t", &name, "f", &[])));
            assert!(is_search_key_id(vector_key_id("t", &name, "v", 8, &[])));
        }
    }

    #[test]
    fn key_ids_follow_the_shape() {
        let base = text_key_id("t", "i", "body", &names(&["a", "b"]));
        assert_eq!(base, text_key_id("t", "i", "body", &names(&["a", "b"])));
        for other in [
            text_key_id("u", "i", "body", &names(&["a", "b"])),
            text_key_id("t", "j", "body", &names(&["a", "b"])),
            text_key_id("t", "i", "title", &names(&["a", "b"])),
            text_key_id("t", "i", "body", &names(&["a"])),
            text_key_id("t", "i", "body", &names(&["b", "a"])),
            // Fields are length-prefixed: moving a byte from one to the next changes the id.
            text_key_id("t", "ib", "ody", &names(&["a", "b"])),
            text_key_id("t", "i", "body", &names(&["ab"])),
            vector_key_id("t", "i", "body", 2, &names(&["a", "b"])),
        ] {
            assert_ne!(base, other);
        }
        let vector = vector_key_id("t", "i", "v", 8, &[]);
        assert_ne!(vector, vector_key_id("t", "i", "v", 16, &[]));
        assert_ne!(vector, vector_key_id("t", "i", "w", 8, &[]));
    }
}
