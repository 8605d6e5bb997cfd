//! Prepared commits and the group-commit batch that persistence writes in one transaction.
//!
//! Invariants: a [`CommitBatch`] holds commits in strictly increasing timestamp order, each
//! with its commit record, document revisions and index entries (the rows persistence
//! writes) and the in-memory changes to publish once the batch is durable. Batches are
//! written and published one at a time, in order.

use std::sync::Arc;

use crate::document::DocumentRef;
use crate::id::DocumentId;
use crate::log::record::{CommitRecord, DocumentRevision, IndexEntry};
use crate::mvcc::IndexChange;
use crate::timestamp::Timestamp;
use crate::write_log::WriteLogEntry;

/// One document's change, as it is applied to the MVCC store.
#[derive(Clone, Debug)]
pub struct DocumentChange {
    /// The document.
    pub id: DocumentId,
    /// Its new revision, or `None` if deleted.
    pub doc: Option<DocumentRef>,
    /// The index keys it removed (`doc: None`) and added.
    pub index_changes: Vec<IndexChange>,
}

/// A validated commit with its timestamp, waiting to become durable.
#[derive(Clone, Debug)]
pub struct PreparedCommit {
    /// The commit timestamp.
    pub ts: Timestamp,
    /// The commit's header row.
    pub record: CommitRecord,
    /// Rows of `documents`.
    pub revisions: Vec<DocumentRevision>,
    /// Rows of `indexes`.
    pub index_entries: Vec<IndexEntry>,
    /// Changes to apply to the MVCC store at publication.
    pub changes: Vec<DocumentChange>,
    /// Index changes without a document revision (index backfills).
    pub index_only: Vec<IndexChange>,
    /// The keys written, as the write log and subscriptions see them.
    pub written: Arc<WriteLogEntry>,
    /// New versions tokenized for text indexes at commit (see
    /// [`crate::search::SearchWrites::tokenized`]).
    pub search_docs: Vec<(u32, crate::id::DocumentId, Arc<crate::search::TokenizedDoc>)>,
}

/// Commits persisted together in one backend transaction.
#[derive(Clone, Debug, Default)]
pub struct CommitBatch {
    /// The commits, in timestamp order.
    pub commits: Vec<PreparedCommit>,
}

impl CommitBatch {
    /// Highest commit timestamp in the batch.
    pub fn max_ts(&self) -> Option<Timestamp> {
        self.commits.last().map(|c| c.ts)
    }

    /// The commit timestamps, in order.
    pub fn timestamps(&self) -> Vec<Timestamp> {
        self.commits.iter().map(|c| c.ts).collect()
    }

    /// Whether the batch holds no commit.
    pub fn is_empty(&self) -> bool {
        self.commits.is_empty()
    }

    /// Number of commits.
    pub fn len(&self) -> usize {
        self.commits.len()
    }

    /// Every commit record.
    pub fn commit_records(&self) -> impl Iterator<Item = &CommitRecord> {
        self.commits.iter().map(|c| &c.record)
    }

    /// Every document revision.
    pub fn revisions(&self) -> impl Iterator<Item = &DocumentRevision> {
        self.commits.iter().flat_map(|c| c.revisions.iter())
    }

    /// Every index entry.
    pub fn index_entries(&self) -> impl Iterator<Item = &IndexEntry> {
        self.commits.iter().flat_map(|c| c.index_entries.iter())
    }

    /// Index entries written at an earlier commit's timestamp (index backfills), counted per
    /// timestamp, in timestamp order: persistence adds them to those commits'
    /// `index_entry_count` (and checksum) in the batch's transaction.
    pub fn count_adjustments(&self) -> Vec<(Timestamp, u32)> {
        let mut counts = std::collections::BTreeMap::new();
        for c in &self.commits {
            for e in &c.index_entries {
                if e.ts != c.ts {
                    *counts.entry(e.ts).or_insert(0u32) += 1;
                }
            }
        }
        counts.into_iter().collect()
    }
}
