//! Multi-version documents and indexes, in memory.
//!
//! Two maps hold every revision still retained:
//! - `documents`: id -> versions of the document (for `get`);
//! - `index`: keyspace key -> versions of the document the key points to (for range scans,
//!   in key order over all indexes at once, since a keyspace key starts with its index id).
//!
//! A version is `(ts, Some(doc))` when the key/document exists from `ts` on and `(ts, None)`
//! when it was removed at `ts`. Invariants: versions in a chain are strictly increasing in
//! `ts`; a reader at snapshot `s` sees, for each key, the last version with `ts <= s` and
//! nothing else, so commits are applied (in ts order, by the engine's single publisher)
//! before the visible timestamp moves past them and no reader sees part of a commit.
//! Retention ([`MvccStore::retain`]) drops versions no snapshot at or after the retention
//! timestamp can see. It visits only the chains that have something to drop — those with
//! more than one version or ending in a removal, tracked in two *history* sets as versions
//! are applied — so its cost (under the store's write lock) follows the writes of the
//! retention window, not the size of the database.

use std::collections::BTreeMap;
use std::ops::Bound;

use rustc_hash::{FxHashMap, FxHashSet};
use smallvec::SmallVec;

use crate::document::DocumentRef;
use crate::id::DocumentId;
use crate::timestamp::Timestamp;

/// The versions of one document or one index key, oldest first.
#[derive(Clone, Debug, Default)]
pub struct VersionChain {
    versions: SmallVec<[(Timestamp, Option<DocumentRef>); 1]>,
}

impl VersionChain {
    /// The version visible at snapshot `ts`: `Some(doc)` if present then.
    pub fn at(&self, ts: Timestamp) -> Option<&DocumentRef> {
        self.versions
            .iter()
            .rev()
            .find(|(v, _)| *v <= ts)
            .and_then(|(_, d)| d.as_ref())
    }

    /// The version visible at `ts` with its own timestamp.
    pub fn at_with_ts(&self, ts: Timestamp) -> Option<(Timestamp, &DocumentRef)> {
        let (v, d) = self.versions.iter().rev().find(|(v, _)| *v <= ts)?;
        d.as_ref().map(|d| (*v, d))
    }

    /// Every retained version, oldest first: `(ts, Some(doc))` or `(ts, None)` (removed).
    pub fn versions(&self) -> &[(Timestamp, Option<DocumentRef>)] {
        &self.versions
    }

    /// The newest version's timestamp.
    pub fn latest_ts(&self) -> Option<Timestamp> {
        self.versions.last().map(|(ts, _)| *ts)
    }

    /// The newest version.
    pub fn latest(&self) -> Option<&DocumentRef> {
        self.versions.last().and_then(|(_, d)| d.as_ref())
    }

    /// Append a version; `ts` must be above every version's timestamp (else it is inserted in
    /// order, which only index backfills and recovery do).
    pub fn push(&mut self, ts: Timestamp, doc: Option<DocumentRef>) {
        match self.versions.last() {
            Some((last, _)) if *last >= ts => {
                let i = self.versions.partition_point(|(v, _)| *v < ts);
                if self.versions.get(i).is_some_and(|(v, _)| *v == ts) {
                    self.versions[i] = (ts, doc);
                } else {
                    self.versions.insert(i, (ts, doc));
                }
            }
            _ => self.versions.push((ts, doc)),
        }
    }

    /// Drop versions no snapshot `>= min_ts` can see. Returns whether the chain is now empty
    /// (only a removal at or before `min_ts` was left).
    fn retain(&mut self, min_ts: Timestamp) -> bool {
        let keep_from = self
            .versions
            .iter()
            .rposition(|(v, _)| *v <= min_ts)
            .unwrap_or(0);
        if keep_from > 0 {
            self.versions.drain(..keep_from);
        }
        matches!(self.versions.as_slice(), [(v, None)] if *v <= min_ts)
    }

    /// Whether retention may find something to drop here one day: more than one version,
    /// or a removal.
    fn has_history(&self) -> bool {
        !matches!(self.versions.as_slice(), [] | [(_, Some(_))])
    }

    /// Number of versions.
    pub fn len(&self) -> usize {
        self.versions.len()
    }

    /// Whether there are no versions.
    pub fn is_empty(&self) -> bool {
        self.versions.is_empty()
    }
}

/// One change to apply: the document or index key `key` gets version `(ts, doc)`.
#[derive(Clone, Debug)]
pub struct IndexChange {
    /// Keyspace key.
    pub key: Vec<u8>,
    /// The document from now on, or `None` if the key is removed.
    pub doc: Option<DocumentRef>,
}

/// All retained revisions of all documents and index keys.
#[derive(Default)]
pub struct MvccStore {
    documents: FxHashMap<DocumentId, VersionChain>,
    index: BTreeMap<Box<[u8]>, VersionChain>,
    retained_from: Timestamp,
    /// Documents whose chain has history (see `VersionChain::has_history`); a superset
    /// (entries whose chain lost its history or was removed are dropped at retention).
    documents_with_history: FxHashSet<DocumentId>,
    /// Index keys whose chain has history, likewise.
    index_with_history: FxHashSet<Box<[u8]>>,
}

impl MvccStore {
    /// An empty store.
    pub fn new() -> Self {
        MvccStore::default()
    }

    /// The oldest snapshot the store can still serve: versions below it may be gone.
    pub fn retained_from(&self) -> Timestamp {
        self.retained_from
    }

    /// Fail if snapshot `ts` is older than what retention keeps.
    pub fn check_snapshot(&self, ts: Timestamp) -> crate::error::Result<()> {
        if ts < self.retained_from {
            return Err(crate::error::Error::TransactionTooOld {
                begin_ts: ts,
                oldest: self.retained_from,
            });
        }
        Ok(())
    }

    /// The document `id` at snapshot `ts`.
    pub fn get(&self, id: &DocumentId, ts: Timestamp) -> Option<&DocumentRef> {
        self.documents.get(id)?.at(ts)
    }

    /// The document `id` at snapshot `ts`, with the timestamp of that revision.
    pub fn get_with_ts(&self, id: &DocumentId, ts: Timestamp) -> Option<(Timestamp, &DocumentRef)> {
        self.documents.get(id)?.at_with_ts(ts)
    }

    /// The newest revision of `id`, if it is not a deletion.
    pub fn documents_latest(&self, id: &DocumentId) -> Option<DocumentRef> {
        self.documents.get(id)?.latest().cloned()
    }

    /// The newest revision timestamp of `id`, whether or not it is a deletion.
    pub fn latest_ts(&self, id: &DocumentId) -> Option<Timestamp> {
        self.documents.get(id)?.latest_ts()
    }

    /// Apply one document revision and its index changes at `ts`.
    pub fn apply(
        &mut self,
        ts: Timestamp,
        id: DocumentId,
        doc: Option<DocumentRef>,
        changes: impl IntoIterator<Item = IndexChange>,
    ) {
        let chain = self.documents.entry(id).or_default();
        chain.push(ts, doc);
        if chain.has_history() {
            self.documents_with_history.insert(id);
        }
        for change in changes {
            self.apply_index(ts, change);
        }
    }

    /// Apply one index change at `ts` (without a document revision: index backfills).
    pub fn apply_index(&mut self, ts: Timestamp, change: IndexChange) {
        if let Some(chain) = self.index.get_mut(change.key.as_slice()) {
            chain.push(ts, change.doc);
            if chain.has_history() && !self.index_with_history.contains(change.key.as_slice()) {
                self.index_with_history
                    .insert(change.key.into_boxed_slice());
            }
        } else {
            let mut chain = VersionChain::default();
            chain.push(ts, change.doc);
            let key = change.key.into_boxed_slice();
            if chain.has_history() {
                self.index_with_history.insert(key.clone());
            }
            self.index.insert(key, chain);
        }
    }

    /// Iterate index entries with keys in `[start, end)`, ascending or descending, yielding
    /// the key and the version chain (visibility is the caller's filter).
    pub fn range<'a>(
        &'a self,
        start: &[u8],
        end: &[u8],
        descending: bool,
    ) -> Box<dyn Iterator<Item = (&'a [u8], &'a VersionChain)> + 'a> {
        let range = self
            .index
            .range::<[u8], _>((Bound::Included(start), Bound::Excluded(end)))
            .map(|(k, v)| (&**k, v));
        if descending {
            Box::new(range.rev())
        } else {
            Box::new(range)
        }
    }

    /// Remove every key in `[start, end)` (dropping an index). Returns how many were removed.
    pub fn remove_range(&mut self, start: &[u8], end: &[u8]) -> usize {
        let keys: Vec<Box<[u8]>> = self
            .index
            .range::<[u8], _>((Bound::Included(start), Bound::Excluded(end)))
            .map(|(k, _)| k.clone())
            .collect();
        for k in &keys {
            self.index.remove(k);
        }
        keys.len()
    }

    /// Iterate every document's version chain (for checks and schema validation).
    pub fn documents(&self) -> impl Iterator<Item = (&DocumentId, &VersionChain)> {
        self.documents.iter()
    }

    /// Number of index entries (keys) retained.
    pub fn index_len(&self) -> usize {
        self.index.len()
    }

    /// Drop versions that no snapshot at or after `min_ts` can see. Returns the number of
    /// versions dropped.
    pub fn retain(&mut self, min_ts: Timestamp) -> usize {
        self.retained_from = self.retained_from.max(min_ts);
        let mut dropped = 0;
        let documents = &mut self.documents;
        self.documents_with_history.retain(|id| {
            let Some(chain) = documents.get_mut(id) else {
                return false;
            };
            let before = chain.len();
            if chain.retain(min_ts) {
                dropped += before;
                documents.remove(id);
                return false;
            }
            dropped += before - chain.len();
            chain.has_history()
        });
        let index = &mut self.index;
        self.index_with_history.retain(|key| {
            let Some(chain) = index.get_mut(key) else {
                return false;
            };
            let before = chain.len();
            if chain.retain(min_ts) {
                dropped += before;
                index.remove(key);
                return false;
            }
            dropped += before - chain.len();
            chain.has_history()
        });
        dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::document::Document;
    use crate::id::{InternalId, TableNumber};
    use crate::value::Object;
    use std::sync::Arc;

    fn doc(n: u8) -> DocumentRef {
        let id = DocumentId {
            table: TableNumber(10001),
            internal: InternalId([n; 16]),
        };
        Arc::new(Document::new(id, 1.0, Object::new()).unwrap())
    }

    #[test]
    fn snapshots_see_only_their_past() {
        let mut chain = VersionChain::default();
        chain.push(Timestamp(10), Some(doc(1)));
        chain.push(Timestamp(20), None);
        chain.push(Timestamp(30), Some(doc(2)));
        assert!(chain.at(Timestamp(5)).is_none());
        assert_eq!(chain.at(Timestamp(10)).unwrap().id.internal.0[0], 1);
        assert!(chain.at(Timestamp(25)).is_none());
        assert_eq!(chain.at(Timestamp(99)).unwrap().id.internal.0[0], 2);
        // Out-of-order insertion keeps the chain sorted.
        chain.push(Timestamp(15), Some(doc(3)));
        assert_eq!(chain.at(Timestamp(17)).unwrap().id.internal.0[0], 3);
    }

    #[test]
    fn retention_keeps_what_snapshots_can_see() {
        let mut chain = VersionChain::default();
        chain.push(Timestamp(10), Some(doc(1)));
        chain.push(Timestamp(20), Some(doc(2)));
        chain.push(Timestamp(30), Some(doc(3)));
        assert!(!chain.retain(Timestamp(25)));
        assert_eq!(chain.len(), 2);
        assert_eq!(chain.at(Timestamp(25)).unwrap().id.internal.0[0], 2);
        let mut gone = VersionChain::default();
        gone.push(Timestamp(10), Some(doc(1)));
        gone.push(Timestamp(20), None);
        assert!(gone.retain(Timestamp(20)));
    }

    #[test]
    fn range_scans_both_directions() {
        let mut store = MvccStore::new();
        for (i, k) in [b"a", b"b", b"c"].iter().enumerate() {
            store.apply_index(
                Timestamp(i as u64 + 1),
                IndexChange {
                    key: k.to_vec(),
                    doc: Some(doc(i as u8)),
                },
            );
        }
        let asc: Vec<&[u8]> = store.range(b"a", b"c", false).map(|(k, _)| k).collect();
        assert_eq!(asc, [b"a".as_slice(), b"b"]);
        let desc: Vec<&[u8]> = store.range(b"a", b"d", true).map(|(k, _)| k).collect();
        assert_eq!(desc, [b"c".as_slice(), b"b", b"a"]);
        assert_eq!(store.remove_range(b"b", b"z"), 2);
        assert_eq!(store.index_len(), 1);
    }

    /// What a snapshot sees: documents and index keys, each with its version's tag byte.
    type View = (Vec<(DocumentId, u8)>, Vec<(Vec<u8>, u8)>);

    /// What a snapshot at `ts` sees of every document and index key.
    fn view(store: &MvccStore, ts: Timestamp) -> View {
        let mut docs: Vec<_> = store
            .documents()
            .filter_map(|(id, c)| c.at(ts).map(|d| (*id, d.id.internal.0[0])))
            .collect();
        docs.sort();
        let keys = store
            .range(b"", b"\xff", false)
            .filter_map(|(k, c)| c.at(ts).map(|d| (k.to_vec(), d.id.internal.0[0])))
            .collect();
        (docs, keys)
    }

    proptest::proptest! {
        /// Retention through the history sets drops exactly what a scan of every chain
        /// would: snapshots at or after the retention timestamp see the same, and no chain
        /// keeps a version (or a lone removal) that none of them can see.
        #[test]
        fn retention_drops_exactly_the_invisible_versions(
            ops in proptest::collection::vec((0u8..12, proptest::option::of(0u8..4)), 1..80),
            cuts in proptest::collection::vec(0u64..100, 1..4),
        ) {
            let mut store = MvccStore::new();
            let mut ts = 0u64;
            let mut next_cut = 0;
            let mut cuts = cuts;
            cuts.sort_unstable();
            for (n, value) in ops {
                ts += 1;
                let id = doc(n).id;
                let version = value.map(|v| doc(n.wrapping_mul(16).wrapping_add(v)));
                let key = vec![n % 5, n];
                store.apply(Timestamp(ts), id, version.clone(), [IndexChange { key, doc: version }]);
                while next_cut < cuts.len() && cuts[next_cut] <= ts {
                    let min_ts = Timestamp(cuts[next_cut]);
                    let before: Vec<_> = (min_ts.0..=ts + 1).map(|t| view(&store, Timestamp(t))).collect();
                    store.retain(min_ts);
                    let after: Vec<_> = (min_ts.0..=ts + 1).map(|t| view(&store, Timestamp(t))).collect();
                    proptest::prop_assert_eq!(before, after);
                    for (_, chain) in store.documents().chain(store.range(b"", b"\xff", false).map(|(_, c)| (&id, c))) {
                        let old = chain.versions.iter().filter(|(v, _)| *v <= min_ts).count();
                        proptest::prop_assert!(old <= 1, "{} versions at or before the cut", old);
                        proptest::prop_assert!(!matches!(chain.versions.as_slice(), [(v, None)] if *v <= min_ts));
                    }
                    next_cut += 1;
                }
            }
        }
    }
}
