//! Retention in persistence: which rows of the log no snapshot at or after a cutoff needs.
//!
//! A revision `X` of a document is superseded by the next revision `S` of that document
//! (`S.prev_ts == X.ts`). Once `S.ts <= cutoff`, no snapshot `>= cutoff` can see `X`, so
//! `X`'s row and its index rows go; when `S` is a deletion, `S`'s own row (the tombstone)
//! and its key removals go too, and the document disappears from the log. Each index row
//! belongs to one revision (it is written at that revision's timestamp, see
//! [`crate::committer::index_changes`] and index backfills), so the rows to delete are
//! known exactly by primary key from the two revisions' values:
//!
//! - `X`'s key additions: `(X.ts, index, key_X)` for every index of the table;
//! - `S`'s key removals: `(S.ts, index, key_X)` where `S` changed the key or is a deletion.
//!
//! The window of revisions `(previous cutoff, cutoff]` is processed once, in timestamp
//! order, so pruning is incremental: each revision is looked at once in the database's
//! life. This mirrors what the in-memory store does in [`crate::mvcc::MvccStore::retain`].
//! (Convex's retention deletes superseded documents and index entries by the same rule:
//! `crates/database/src/retention.rs`.)

use crate::catalog::{Catalog, IndexId};
use crate::document::Document;
use crate::error::{Error, Result};
use crate::id::DocumentId;
use crate::timestamp::Timestamp;

/// A revision in the retention window, as persistence reads it.
#[derive(Clone, Debug)]
pub struct WindowRevision {
    /// The revision's commit timestamp (`<=` the cutoff).
    pub ts: Timestamp,
    /// The document.
    pub id: DocumentId,
    /// Its stored value, or `None` for a deletion.
    pub value: Option<Vec<u8>>,
    /// The previous revision's timestamp, if any.
    pub prev_ts: Option<Timestamp>,
    /// The previous revision's stored value: `None` if its row is gone or was a deletion.
    pub prev_value: Option<Vec<u8>>,
}

/// Rows to delete, by primary key.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PrunePlan {
    /// `documents` rows: `(ts, id)`.
    pub documents: Vec<(Timestamp, DocumentId)>,
    /// `indexes` rows: `(ts, index, key without the index id prefix, document)`.
    pub index_entries: Vec<(Timestamp, IndexId, Vec<u8>, DocumentId)>,
}

/// The rows that revisions `window` make obsolete (see the module docs).
///
/// # Errors
/// `Corrupt` when a stored value does not decode.
pub fn plan(catalog: &Catalog, window: &[WindowRevision]) -> Result<PrunePlan> {
    let mut plan = PrunePlan::default();
    for s in window {
        let indexes: Vec<_> = catalog
            .table_by_number(s.id.table)
            .map(|t| catalog.table_indexes(t).collect())
            .unwrap_or_default();
        let decode = |ts: Timestamp, bytes: &[u8]| {
            Document::from_stored(s.id, bytes).map_err(|e| {
                Error::Corrupt(format!(
                    "document revision (id {}, ts {ts}) does not decode: {e}",
                    s.id
                ))
            })
        };
        if let Some(p) = s.prev_ts {
            plan.documents.push((p, s.id));
            if let Some(bytes) = &s.prev_value {
                let old = decode(p, bytes)?;
                let new = s.value.as_deref().map(|b| decode(s.ts, b)).transpose()?;
                for index in &indexes {
                    let old_key = old.index_key(index);
                    plan.index_entries
                        .push((p, index.id, old_key[4..].to_vec(), s.id));
                    let stays = new.as_ref().is_some_and(|n| n.index_key(index) == old_key);
                    if !stays {
                        plan.index_entries
                            .push((s.ts, index.id, old_key[4..].to_vec(), s.id));
                    }
                }
            }
        }
        if s.value.is_none() {
            plan.documents.push((s.ts, s.id));
        }
    }
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec;
    use crate::id::{InternalId, TableNumber};
    use crate::value::{Object, Value};

    fn stored(n: f64) -> Vec<u8> {
        let mut o = Object::new();
        o.insert("n".into(), Value::Float64(n));
        o.insert("_creationTime".into(), Value::Float64(1.0));
        codec::encode_stored(&Value::Object(o))
    }

    #[test]
    fn a_superseded_revision_goes_with_its_index_rows() {
        let mut catalog = Catalog::new();
        let table = catalog.add_table("t", 0).unwrap();
        let id = DocumentId {
            table,
            internal: InternalId([7; 16]),
        };
        let indexes = catalog
            .table_indexes(catalog.table_by_number(table).unwrap())
            .count();
        let update = WindowRevision {
            ts: Timestamp(20),
            id,
            value: Some(stored(2.0)),
            prev_ts: Some(Timestamp(10)),
            prev_value: Some(stored(1.0)),
        };
        let p = plan(&catalog, &[update]).unwrap();
        assert_eq!(p.documents, vec![(Timestamp(10), id)]);
        // by_id and by_creation_time keys stay: only the old revision's additions go.
        assert_eq!(p.index_entries.len(), indexes);
        assert!(p.index_entries.iter().all(|e| e.0 == Timestamp(10)));

        let deletion = WindowRevision {
            ts: Timestamp(30),
            id,
            value: None,
            prev_ts: Some(Timestamp(20)),
            prev_value: Some(stored(2.0)),
        };
        let p = plan(&catalog, &[deletion]).unwrap();
        assert_eq!(p.documents, vec![(Timestamp(20), id), (Timestamp(30), id)]);
        assert_eq!(p.index_entries.len(), 2 * indexes);
        assert_ne!(table, TableNumber(0));
    }
}
