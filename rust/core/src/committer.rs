//! The committer: validates transactions (optimistic concurrency control), assigns commit
//! timestamps and queues commits for group commit.
//!
//! One commit at a time holds the committer's lock. Under it a commit: checks its read set
//! against every write log entry after its begin timestamp (pending ones included); takes
//! the next timestamp, `max(wall clock, last + 1)`; computes its index changes against the
//! *current* catalog (an index added while the transaction ran is maintained too); and
//! appends its write log entry and its prepared rows to the pending batch. Persistence then
//! writes whole batches (see [`crate::engine`]).
//!
//! Invariants: timestamps are strictly increasing and above every timestamp persisted
//! before (the initial `last_ts` is the highest one loaded); a commit is accepted only if no
//! commit after its begin timestamp wrote a key in its read set, so every history is
//! equivalent to the commit-timestamp order (serializable); a transaction that wrote a
//! document read it (patch, replace and delete read first; inserts use fresh ids), so the
//! `old` revision a commit removes index keys for is the latest one.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use crate::catalog::{Catalog, IndexDescriptor, IndexId};
use crate::document::DocumentRef;
use crate::error::{Conflict, Error, Result};
use crate::id::DocumentId;
use crate::interval::{IntervalSet, hex};
use crate::log::batch::{CommitBatch, DocumentChange, PreparedCommit};
use crate::log::record::{CommitRecord, DocumentRevision, IndexEntry};
use crate::mvcc::IndexChange;
use crate::timestamp::Timestamp;
use crate::transaction::{PendingWrite, Transaction};
use crate::write_log::{WriteLog, WriteLogConfig, WriteLogEntry};

/// The committer's state, behind the engine's commit lock.
pub struct CommitterState {
    /// The last timestamp handed out.
    pub last_ts: Timestamp,
    /// Recent commits' written keys.
    pub write_log: WriteLog,
    /// Commits accepted but not yet taken for persistence.
    pending: Vec<PreparedCommit>,
    /// Index ids whose rows must be deleted in the next batch.
    pending_drops: Vec<IndexId>,
}

/// One document write, with its stored encoding computed outside the lock.
pub struct EncodedWrite {
    id: DocumentId,
    write: PendingWrite,
    stored: Option<Vec<u8>>,
}

impl EncodedWrite {
    /// The document written.
    pub fn id(&self) -> DocumentId {
        self.id
    }

    /// The write.
    pub fn write(&self) -> &PendingWrite {
        &self.write
    }
}

/// Encode the values of a transaction's writes (done before taking the commit lock).
pub fn encode_writes(writes: BTreeMap<DocumentId, PendingWrite>) -> Vec<EncodedWrite> {
    writes
        .into_iter()
        .filter(|(_, w)| w.old.is_some() || w.new.is_some())
        .map(|(id, write)| {
            let stored = write.new.as_ref().map(|d| d.to_stored());
            EncodedWrite { id, write, stored }
        })
        .collect()
}

impl CommitterState {
    /// A committer that continues after `last_ts`, checking transactions that began at or
    /// after `last_ts`.
    pub fn new(last_ts: Timestamp, config: WriteLogConfig) -> Self {
        CommitterState {
            last_ts,
            write_log: WriteLog::new(last_ts, config),
            pending: Vec::new(),
            pending_drops: Vec::new(),
        }
    }

    /// The next commit timestamp.
    fn next_ts(&mut self) -> Timestamp {
        let ts = Timestamp::wall_clock().max(self.last_ts.succ());
        self.last_ts = ts;
        ts
    }

    fn conflict_error(catalog: &Catalog, ts: Timestamp, key: &[u8]) -> Error {
        let table = IndexId::of_key(key)
            .and_then(|i| catalog.index(i))
            .and_then(|i| catalog.table_by_number(crate::id::TableNumber(i.table)))
            .map_or_else(|| "<dropped>".to_owned(), |t| t.name.clone());
        Error::Conflict(Conflict {
            table,
            key_hex: hex(key),
            ts,
        })
    }

    /// OCC validation: no commit after `begin_ts` (pending ones included) wrote a key in
    /// `reads`.
    pub fn validate(
        &self,
        catalog: &Catalog,
        begin_ts: Timestamp,
        reads: &IntervalSet,
    ) -> Result<()> {
        match self
            .write_log
            .first_overlap(begin_ts, Timestamp::MAX, reads)
        {
            Err(oldest) => Err(Error::TransactionTooOld { begin_ts, oldest }),
            Ok(Some(overlap)) => Err(Self::conflict_error(catalog, overlap.ts, &overlap.key)),
            Ok(None) => Ok(()),
        }
    }

    /// Queue a validated transaction's writes against `catalog`; `extra_keys` are written
    /// keys beyond the documents' index keys (names of tables it created, search keys);
    /// `search_docs` are new versions tokenized for text indexes. Returns the commit
    /// timestamp.
    pub fn prepare(
        &mut self,
        catalog: &Catalog,
        writes: Vec<EncodedWrite>,
        extra_keys: Vec<Vec<u8>>,
        search_docs: Vec<(u32, DocumentId, Arc<crate::search::TokenizedDoc>)>,
        visible: Timestamp,
    ) -> Result<Timestamp> {
        let ts = self.next_ts();
        let mut revisions = Vec::with_capacity(writes.len());
        let mut entries = Vec::new();
        let mut changes = Vec::with_capacity(writes.len());
        let mut written: Vec<Box<[u8]>> =
            extra_keys.into_iter().map(Vec::into_boxed_slice).collect();
        for EncodedWrite { id, write, stored } in writes {
            let table = catalog
                .table_by_number(id.table)
                .ok_or_else(|| Error::TableNotFound(id.table.0.to_string()))?;
            let indexes: Vec<&IndexDescriptor> = catalog.table_indexes(table).collect();
            let old = write.old.as_ref().map(|(_, d)| d);
            let index_changes =
                index_changes(&indexes, old, write.new.as_ref(), ts, id, &mut entries);
            written.extend(
                index_changes
                    .iter()
                    .map(|c| c.key.clone().into_boxed_slice()),
            );
            revisions.push(DocumentRevision::new(
                id,
                ts,
                stored,
                write.old.map(|(t, _)| t),
            ));
            changes.push(DocumentChange {
                id,
                doc: write.new,
                index_changes,
            });
        }
        written.sort_unstable();
        written.dedup();
        let record = CommitRecord::new(ts, revisions.len() as u32, entries.len() as u32);
        let written = Arc::new(WriteLogEntry { ts, keys: written });
        self.write_log.append(Arc::clone(&written));
        self.write_log.trim(ts, visible);
        self.pending.push(PreparedCommit {
            ts,
            record,
            revisions,
            index_entries: entries,
            changes,
            index_only: Vec::new(),
            written,
            search_docs,
        });
        Ok(ts)
    }

    /// Queue a backfill chunk of `index`: entries for `docs` (each with the timestamp of its
    /// revision) as of snapshot `snapshot_ts`, skipping documents written after it (those
    /// commits maintained the index already). Returns the chunk's commit timestamp, or
    /// `None` if nothing was left to add.
    ///
    /// The persisted rows are written at each document's revision timestamp, as if the
    /// index had existed when the revision was committed (the batch adds them to those
    /// commits' counts, [`crate::log::batch::CommitBatch::count_adjustments`]): every index
    /// row then belongs to a revision, and retention removes it with that revision. In
    /// memory the entries appear at the chunk's own timestamp.
    pub fn commit_backfill(
        &mut self,
        catalog: &Catalog,
        index: IndexId,
        snapshot_ts: Timestamp,
        docs: &[(Timestamp, DocumentRef)],
        visible: Timestamp,
    ) -> Result<Option<Timestamp>> {
        if snapshot_ts < self.write_log.floor() {
            return Err(Error::TransactionTooOld {
                begin_ts: snapshot_ts,
                oldest: self.write_log.floor(),
            });
        }
        let Some(descriptor) = catalog.index(index) else {
            return Ok(None);
        };
        let Some(by_id) = catalog.by_id(crate::id::TableNumber(descriptor.table)) else {
            return Ok(None);
        };
        let prefix = by_id.prefix();
        let written_since: HashSet<&[u8]> = self
            .write_log
            .between(snapshot_ts, Timestamp::MAX)
            .flat_map(|e| {
                e.keys
                    .iter()
                    .map(|k| &**k)
                    .filter(|k| k.starts_with(&prefix))
            })
            .collect();
        let mut selected = Vec::new();
        for (revision_ts, doc) in docs {
            let Some(key) = Transaction::by_id_key(catalog, &doc.id) else {
                continue;
            };
            if !written_since.contains(key.as_slice()) {
                selected.push((*revision_ts, doc));
            }
        }
        if selected.is_empty() {
            return Ok(None);
        }
        let ts = self.next_ts();
        let mut entries = Vec::with_capacity(selected.len());
        let mut index_only = Vec::with_capacity(selected.len());
        for (revision_ts, doc) in selected {
            let key = doc.index_key(descriptor);
            entries.push(IndexEntry::new(
                index,
                key[4..].to_vec(),
                revision_ts,
                doc.id,
                false,
            ));
            index_only.push(IndexChange {
                key,
                doc: Some(Arc::clone(doc)),
            });
        }
        let mut keys: Vec<Box<[u8]>> = index_only
            .iter()
            .map(|c| c.key.clone().into_boxed_slice())
            .collect();
        keys.sort_unstable();
        let record = CommitRecord::new(ts, 0, 0);
        let written = Arc::new(WriteLogEntry { ts, keys });
        self.write_log.append(Arc::clone(&written));
        self.write_log.trim(ts, visible);
        self.pending.push(PreparedCommit {
            ts,
            record,
            revisions: Vec::new(),
            index_entries: entries,
            changes: Vec::new(),
            index_only,
            written,
            search_docs: Vec::new(),
        });
        Ok(Some(ts))
    }

    /// Queue the deletion of a dropped index's rows with the next batch.
    pub fn drop_index(&mut self, index: IndexId) {
        self.pending_drops.push(index);
    }

    /// Whether anything waits to be persisted.
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty() || !self.pending_drops.is_empty()
    }

    /// Take every pending commit (and index drop) as one batch.
    pub fn take_batch(&mut self) -> (CommitBatch, Vec<IndexId>) {
        (
            CommitBatch {
                commits: std::mem::take(&mut self.pending),
            },
            std::mem::take(&mut self.pending_drops),
        )
    }

    /// Forget the write log entries of a batch that failed to persist.
    pub fn abort(&mut self, batch: &CommitBatch) {
        for c in &batch.commits {
            self.write_log.remove(c.ts);
        }
    }

    /// Put back index drops of a batch that failed to persist.
    pub fn restore_drops(&mut self, drops: Vec<IndexId>) {
        let mut drops = drops;
        drops.append(&mut self.pending_drops);
        self.pending_drops = drops;
    }
}

/// The index changes of one document write, in every index of its table, and the rows
/// persistence records for them: for each index, the new key (also when it stays, so every
/// revision has its own index rows and retention can delete a superseded revision's rows
/// by their exact keys) and, when the key changed or the document is deleted, the removal
/// of the old key.
pub fn index_changes(
    indexes: &[&IndexDescriptor],
    old: Option<&DocumentRef>,
    new: Option<&DocumentRef>,
    ts: Timestamp,
    id: DocumentId,
    entries: &mut Vec<IndexEntry>,
) -> Vec<IndexChange> {
    let mut changes = Vec::with_capacity(indexes.len() * 2);
    for index in indexes {
        let old_key = old.map(|d| d.index_key(index));
        let new_key = new.map(|d| d.index_key(index));
        if let Some(ok) = &old_key
            && new_key.as_ref() != Some(ok)
        {
            entries.push(IndexEntry::new(index.id, ok[4..].to_vec(), ts, id, true));
            changes.push(IndexChange {
                key: ok.clone(),
                doc: None,
            });
        }
        if let Some(nk) = new_key {
            entries.push(IndexEntry::new(index.id, nk[4..].to_vec(), ts, id, false));
            changes.push(IndexChange {
                key: nk,
                doc: new.cloned(),
            });
        }
    }
    changes
}
