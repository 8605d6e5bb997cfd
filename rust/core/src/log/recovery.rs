//! Recovery: rebuilding the in-memory state from the persisted log, and checking it.
//!
//! A backend streams its rows into a [`Loader`]: commit records, document revisions, index
//! entries, in any order. [`Loader::finish`] verifies every row's checksum, that each commit
//! has exactly the rows its record counts (a torn commit is refused, naming its timestamp),
//! that every row belongs to a recorded commit, and that each revision's `prev_ts` names the
//! revision before it; then it replays the revisions in timestamp order into an
//! [`MvccStore`], deriving every index from the documents with the same code the committer
//! uses. Nothing is applied unless everything verifies.
//!
//! [`Checker`] compares persisted index entries with the documents (both directions), for
//! `python -m reactive check`.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use crate::catalog::{Catalog, IndexDescriptor, IndexId};
use crate::committer::index_changes;
use crate::document::{Document, DocumentRef};
use crate::error::{Error, Result};
use crate::id::{DocumentId, TableNumber};
use crate::interval::hex;
use crate::log::record::{CommitRecord, DocumentRevision, IndexEntry};
use crate::mvcc::MvccStore;
use crate::timestamp::Timestamp;

/// The state rebuilt from persistence.
pub struct LoadedState {
    /// Tables and indexes.
    pub catalog: Catalog,
    /// Every retained revision.
    pub store: MvccStore,
    /// The highest timestamp persisted (the committer continues above it).
    pub max_ts: Timestamp,
    /// Number of commits loaded.
    pub commits: usize,
    /// Number of document revisions loaded.
    pub revisions: usize,
}

#[derive(Default)]
struct Seen {
    documents: u32,
    index_entries: u32,
}

/// Collects persisted rows and rebuilds the state from them.
pub struct Loader {
    catalog: Catalog,
    max_ts: Timestamp,
    commits: BTreeMap<Timestamp, CommitRecord>,
    seen: HashMap<Timestamp, Seen>,
    revisions: Vec<DocumentRevision>,
}

impl Loader {
    /// A loader for a database with this catalog and `globals.max_ts`.
    pub fn new(catalog: Catalog, max_ts: Timestamp) -> Self {
        Loader {
            catalog,
            max_ts,
            commits: BTreeMap::new(),
            seen: HashMap::new(),
            revisions: Vec::new(),
        }
    }

    /// Add a row of `commits`.
    pub fn add_commit(&mut self, record: CommitRecord) -> Result<()> {
        record.verify()?;
        if self.commits.insert(record.ts, record).is_some() {
            return Err(Error::Corrupt(format!(
                "two commit records at ts {}",
                record.ts
            )));
        }
        Ok(())
    }

    /// Add a row of `documents`.
    pub fn add_revision(&mut self, revision: DocumentRevision) -> Result<()> {
        revision.verify()?;
        self.seen.entry(revision.ts).or_default().documents += 1;
        self.revisions.push(revision);
        Ok(())
    }

    /// Add a row of `indexes`.
    pub fn add_index_entry(&mut self, entry: &IndexEntry) -> Result<()> {
        entry.verify()?;
        if self.catalog.index(entry.index_id).is_none() {
            return Err(Error::Corrupt(format!(
                "index entry (index {}, key {}, ts {}) belongs to no index of the catalog",
                entry.index_id,
                hex(&entry.key),
                entry.ts
            )));
        }
        self.seen.entry(entry.ts).or_default().index_entries += 1;
        Ok(())
    }

    /// Verify everything and rebuild the store.
    pub fn finish(mut self) -> Result<LoadedState> {
        for (ts, seen) in &self.seen {
            let Some(record) = self.commits.get(ts) else {
                return Err(Error::Corrupt(format!(
                    "torn commit: {} document revision(s) and {} index entr(ies) at ts {ts} \
                     have no commit record",
                    seen.documents, seen.index_entries
                )));
            };
            if record.document_count != seen.documents
                || record.index_entry_count != seen.index_entries
            {
                return Err(torn(record, seen));
            }
        }
        for record in self.commits.values() {
            if record.document_count + record.index_entry_count > 0
                && !self.seen.contains_key(&record.ts)
            {
                return Err(torn(record, &Seen::default()));
            }
        }
        self.revisions.sort_unstable_by_key(|r| (r.ts, r.id));
        let mut store = MvccStore::new();
        let mut scratch = Vec::new();
        let revision_count = self.revisions.len();
        for revision in self.revisions.drain(..) {
            let id = revision.id;
            let table = self.catalog.table_by_number(id.table).ok_or_else(|| {
                Error::Corrupt(format!(
                    "document revision (id {id}, ts {}) belongs to table number {} which the \
                     catalog does not have",
                    revision.ts, id.table.0
                ))
            })?;
            let doc: Option<DocumentRef> = match &revision.value {
                Some(bytes) => Some(Arc::new(Document::from_stored(id, bytes).map_err(|e| {
                    Error::Corrupt(format!(
                        "document revision (id {id}, ts {}) does not decode: {e}",
                        revision.ts
                    ))
                })?)),
                None => None,
            };
            let previous = store.latest_ts(&id);
            // No previous revision loaded is fine when one is named: it was garbage-collected.
            let prev_ok = match (revision.prev_ts, previous) {
                (Some(p), Some(l)) => p == l,
                (None, Some(_)) => false,
                (_, None) => true,
            };
            if !prev_ok {
                return Err(Error::Corrupt(format!(
                    "document revision (id {id}, ts {}) says its previous revision is at {:?}, \
                     but the log has {:?}",
                    revision.ts,
                    revision.prev_ts.map(|t| t.0),
                    previous.map(|t| t.0)
                )));
            }
            let old = store.documents_latest(&id);
            let indexes: Vec<&IndexDescriptor> = self.catalog.table_indexes(table).collect();
            scratch.clear();
            let changes = index_changes(
                &indexes,
                old.as_ref(),
                doc.as_ref(),
                revision.ts,
                id,
                &mut scratch,
            );
            store.apply(revision.ts, id, doc, changes);
        }
        let last_commit = self.commits.keys().next_back().copied().unwrap_or_default();
        Ok(LoadedState {
            catalog: self.catalog,
            store,
            max_ts: self.max_ts.max(last_commit),
            commits: self.commits.len(),
            revisions: revision_count,
        })
    }
}

fn torn(record: &CommitRecord, seen: &Seen) -> Error {
    Error::Corrupt(format!(
        "torn commit at ts {}: its record counts {} document revision(s) and {} index \
         entr(ies), the log holds {} and {}",
        record.ts,
        record.document_count,
        record.index_entry_count,
        seen.documents,
        seen.index_entries
    ))
}

/// What [`Checker`] found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CheckReport {
    /// Live documents checked.
    pub documents: usize,
    /// Live index entries checked.
    pub index_entries: usize,
    /// Every disagreement, one line each.
    pub problems: Vec<String>,
}

/// Compares persisted index entries with the index keys the live documents imply.
pub struct Checker {
    catalog: Arc<Catalog>,
    /// Latest persisted row per keyspace key: (ts, doc id, deleted).
    rows: HashMap<Vec<u8>, (Timestamp, DocumentId, bool)>,
}

impl Checker {
    /// A checker against this catalog.
    pub fn new(catalog: Arc<Catalog>) -> Self {
        Checker {
            catalog,
            rows: HashMap::new(),
        }
    }

    /// Feed one persisted index entry (any order).
    pub fn add_index_entry(&mut self, entry: &IndexEntry) {
        let key = entry.keyspace_key();
        let newer = self.rows.get(&key).is_none_or(|(ts, _, _)| *ts < entry.ts);
        if newer {
            self.rows
                .insert(key, (entry.ts, entry.doc_id, entry.deleted));
        }
    }

    /// Compare with the live documents of `store` at `ts`.
    pub fn finish(self, store: &MvccStore, ts: Timestamp) -> CheckReport {
        let mut report = CheckReport::default();
        let mut expected: HashMap<Vec<u8>, DocumentId> = HashMap::new();
        for (id, chain) in store.documents() {
            let Some(doc) = chain.at(ts) else { continue };
            report.documents += 1;
            let Some(table) = self.catalog.table_by_number(TableNumber(id.table.0)) else {
                report
                    .problems
                    .push(format!("document {id} belongs to no table"));
                continue;
            };
            for index in self.catalog.table_indexes(table) {
                if matches!(index.state, crate::catalog::IndexState::Backfilling) {
                    continue;
                }
                expected.insert(doc.index_key(index), *id);
            }
        }
        let ready = |key: &[u8]| {
            IndexId::of_key(key)
                .and_then(|i| self.catalog.index(i))
                .is_some_and(|i| !matches!(i.state, crate::catalog::IndexState::Backfilling))
        };
        for (key, (row_ts, doc, deleted)) in &self.rows {
            if *deleted || *row_ts > ts || !ready(key) {
                continue;
            }
            report.index_entries += 1;
            match expected.get(key) {
                Some(d) if d == doc => {}
                Some(d) => report.problems.push(format!(
                    "index entry {} points to document {doc}, but document {d} has that key",
                    describe(&self.catalog, key)
                )),
                None => report.problems.push(format!(
                    "index entry {} (document {doc}) matches no live document",
                    describe(&self.catalog, key)
                )),
            }
        }
        for (key, id) in &expected {
            let present = self
                .rows
                .get(key)
                .is_some_and(|(row_ts, doc, deleted)| !*deleted && *row_ts <= ts && doc == id);
            if !present {
                report.problems.push(format!(
                    "document {id} has no index entry {}",
                    describe(&self.catalog, key)
                ));
            }
        }
        report.problems.sort();
        report
    }
}

fn describe(catalog: &Catalog, key: &[u8]) -> String {
    let name = IndexId::of_key(key)
        .and_then(|i| catalog.index(i))
        .map_or_else(
            || "?".to_owned(),
            |i| {
                let table = catalog
                    .table_by_number(TableNumber(i.table))
                    .map_or("?", |t| t.name.as_str());
                format!("{table}.{}", i.name)
            },
        );
    format!("{name} key {}", hex(key.get(4..).unwrap_or_default()))
}
