//! Following the log: turning rows another process committed into commits this engine can
//! publish, as recovery does at open but a slice at a time on a live engine.
//!
//! A follower (a server process that does not hold the writer lease) reads the log past the
//! last timestamp it applied, in slices that end at a commit boundary: the commit records
//! with `ts > after`, every document revision at those timestamps, and the catalog as of
//! the same snapshot. [`prepare_slice`] verifies the slice and derives, for each commit,
//! what the committer derived when it prepared it: the index changes of every revision
//! (with [`crate::committer::index_changes`], against the slice's catalog), the keys it
//! wrote (index keys, search keys, the names of tables new in the catalog) and the new
//! versions tokenized for text indexes. The engine then publishes them as it publishes its
//! own batches ([`crate::engine::Engine::apply_log`]).
//!
//! Verification, per slice: every row's checksum; commit timestamps strictly increasing and
//! above `after`; every revision at the timestamp of a commit of the slice, and each
//! commit's `document_count` equal to the revisions it has (a commit with a missing or extra
//! row is refused, as recovery refuses a torn commit); each revision's `prev_ts` equal to
//! the newest revision this engine holds for the document, when it holds one (a mismatch
//! means a commit was missed: the follower must reload). `index_entry_count` is not
//! checked: an index backfill adds rows to old commits' counts, so the same commit may be
//! read with either count; a full load and `check` verify it.
//!
//! The catalog of the slice's snapshot is used for every commit of the slice, as recovery
//! uses the final catalog for every revision: a table's rows only come after the table
//! exists; an index added during the slice is maintained by all of the slice's commits (a
//! superset of the keys the leader wrote, so conflict checks and subscriptions err towards
//! re-running); an index dropped during the slice is gone from it.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use crate::catalog::{Catalog, IndexDescriptor, table_name_key};
use crate::committer::index_changes;
use crate::document::{Document, DocumentRef};
use crate::error::{Error, Result};
use crate::id::{DocumentId, TableNumber};
use crate::log::batch::{DocumentChange, PreparedCommit};
use crate::log::record::{CommitRecord, DocumentRevision};
use crate::mvcc::MvccStore;
use crate::search::Registry;
use crate::timestamp::Timestamp;
use crate::transaction::PendingWrite;
use crate::write_log::WriteLogEntry;

/// Verify a slice of the log that follows `after` and prepare its commits for publication.
///
/// `catalog` is the catalog of the slice's snapshot, `previous` the one the engine had
/// before it (tables in `catalog` and not in `previous` get their name key written by the
/// first commit of the slice that writes one of their documents, as the commit that created
/// them wrote it). `store` is read for each document's newest revision; `search` gives the
/// search keys and tokenized versions.
///
/// Errors: `Corrupt` naming the first bad row (checksum, torn commit, revision without a
/// commit, an unknown table, a value that does not decode); `LogGap` when a revision's
/// `prev_ts` is not the newest revision held, or a commit is at or below `after`.
pub fn prepare_slice(
    catalog: &Catalog,
    previous: &Catalog,
    store: &MvccStore,
    search: &Registry,
    after: Timestamp,
    commits: &[CommitRecord],
    revisions: &[DocumentRevision],
) -> Result<Vec<PreparedCommit>> {
    let mut last = after;
    for record in commits {
        record.verify()?;
        if record.ts <= last {
            return Err(Error::LogGap(format!(
                "commit at ts {} does not follow ts {last} (the slice is out of order, or \
                 repeats what was applied)",
                record.ts
            )));
        }
        last = record.ts;
    }
    let mut by_ts: BTreeMap<Timestamp, Vec<&DocumentRevision>> = BTreeMap::new();
    for revision in revisions {
        revision.verify()?;
        by_ts.entry(revision.ts).or_default().push(revision);
    }
    for rows in by_ts.values_mut() {
        rows.sort_unstable_by_key(|r| r.id);
    }
    // Newest revision per document within the slice: (ts, value), over the store's.
    let mut overlay: HashMap<DocumentId, (Timestamp, Option<DocumentRef>)> = HashMap::new();
    let mut new_tables: Vec<(TableNumber, &str)> = catalog
        .tables()
        .filter(|t| previous.table(&t.name).is_none())
        .map(|t| (TableNumber(t.number), t.name.as_str()))
        .collect();
    let mut prepared = Vec::with_capacity(commits.len());
    for record in commits.iter().copied() {
        let rows = by_ts.remove(&record.ts).unwrap_or_default();
        if rows.len() != record.document_count as usize {
            return Err(Error::Corrupt(format!(
                "torn commit at ts {}: its record counts {} document revision(s), the log \
                 holds {}",
                record.ts,
                record.document_count,
                rows.len()
            )));
        }
        prepared.push(prepare_commit(
            catalog,
            store,
            search,
            &mut overlay,
            &mut new_tables,
            record,
            rows,
        )?);
    }
    if let Some((ts, rows)) = by_ts.into_iter().next() {
        return Err(Error::Corrupt(format!(
            "torn commit: {} document revision(s) at ts {ts} have no commit record in the slice",
            rows.len()
        )));
    }
    Ok(prepared)
}

fn prepare_commit(
    catalog: &Catalog,
    store: &MvccStore,
    search: &Registry,
    overlay: &mut HashMap<DocumentId, (Timestamp, Option<DocumentRef>)>,
    new_tables: &mut Vec<(TableNumber, &str)>,
    record: CommitRecord,
    rows: Vec<&DocumentRevision>,
) -> Result<PreparedCommit> {
    let ts = record.ts;
    let mut writes: BTreeMap<DocumentId, PendingWrite> = BTreeMap::new();
    let mut changes = Vec::with_capacity(rows.len());
    let mut written: Vec<Box<[u8]>> = Vec::new();
    let mut entries = Vec::new();
    for revision in rows {
        let id = revision.id;
        let table = catalog.table_by_number(id.table).ok_or_else(|| {
            Error::Corrupt(format!(
                "document revision (id {id}, ts {ts}) belongs to table number {} which the \
                 catalog does not have",
                id.table.0
            ))
        })?;
        let new: Option<DocumentRef> = match &revision.value {
            Some(bytes) => Some(Arc::new(Document::from_stored(id, bytes).map_err(|e| {
                Error::Corrupt(format!(
                    "document revision (id {id}, ts {ts}) does not decode: {e}"
                ))
            })?)),
            None => None,
        };
        let (held_ts, old) = match overlay.get(&id) {
            Some((t, d)) => (Some(*t), d.clone()),
            None => (store.latest_ts(&id), store.documents_latest(&id)),
        };
        // Unlike recovery, a named previous revision must be held: retention (here and in
        // the database) never drops a document's newest revision, and a deleted document
        // gets no later one.
        let prev_ok = match (revision.prev_ts, held_ts) {
            (Some(p), Some(h)) => p == h,
            (None, None) => true,
            _ => false,
        };
        if !prev_ok {
            return Err(Error::LogGap(format!(
                "document revision (id {id}, ts {ts}) follows the revision at {:?}, but this \
                 process holds {:?} as the newest: a commit was missed",
                revision.prev_ts.map(|t| t.0),
                held_ts.map(|t| t.0)
            )));
        }
        if let Some(i) = new_tables.iter().position(|(n, _)| *n == id.table) {
            written.push(table_name_key(new_tables.swap_remove(i).1).into_boxed_slice());
        }
        let indexes: Vec<&IndexDescriptor> = catalog.table_indexes(table).collect();
        let index_changes =
            index_changes(&indexes, old.as_ref(), new.as_ref(), ts, id, &mut entries);
        written.extend(
            index_changes
                .iter()
                .map(|c| c.key.clone().into_boxed_slice()),
        );
        if !search.is_empty() {
            writes.insert(
                id,
                PendingWrite {
                    old: held_ts.zip(old.clone()),
                    new: new.clone(),
                },
            );
        }
        overlay.insert(id, (ts, new.clone()));
        changes.push(DocumentChange {
            id,
            doc: new,
            index_changes,
        });
    }
    let search_writes = search.write_keys(&writes);
    written.extend(search_writes.keys.into_iter().map(Vec::into_boxed_slice));
    written.sort_unstable();
    written.dedup();
    Ok(PreparedCommit {
        ts,
        record,
        // The rows are in the database already: nothing is written from a follower.
        revisions: Vec::new(),
        index_entries: Vec::new(),
        changes,
        index_only: Vec::new(),
        written: Arc::new(WriteLogEntry { ts, keys: written }),
        search_docs: search_writes.tokenized,
    })
}

/// The index changes that build `index` over every retained revision of `store`, per
/// document in revision order: `(ts, change)` pairs to apply with
/// [`MvccStore::apply_index`]. Used when a follower installs a catalog with an index it did
/// not have.
pub fn derive_index(
    store: &MvccStore,
    table: TableNumber,
    index: &IndexDescriptor,
) -> Vec<(Timestamp, crate::mvcc::IndexChange)> {
    let mut out = Vec::new();
    let mut scratch = Vec::new();
    for (id, chain) in store.documents() {
        if id.table != table {
            continue;
        }
        let mut previous: Option<DocumentRef> = None;
        for (ts, doc) in chain.versions() {
            scratch.clear();
            for change in index_changes(
                &[index],
                previous.as_ref(),
                doc.as_ref(),
                *ts,
                *id,
                &mut scratch,
            ) {
                out.push((*ts, change));
            }
            previous.clone_from(doc);
        }
    }
    out
}
