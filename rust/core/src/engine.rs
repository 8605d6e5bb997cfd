//! The engine: the MVCC store, the catalog, the committer and the subscriptions, together.
//!
//! Life of a commit: a [`Transaction`] begins at the visible timestamp and reads the store;
//! [`Engine::commit`] validates it and queues it (committer lock); the caller's persistence
//! loop takes queued commits as one batch ([`Engine::take_batch`]), makes the batch durable
//! in one backend transaction, then [`Engine::publish`]es it: the store gets the new
//! versions, the visible timestamp moves to the batch's last commit, and the subscriptions
//! whose read sets hold a written key are returned for re-running. A batch that fails to
//! persist is [`Engine::abort`]ed: its commits never become visible.
//!
//! Invariants: batches are published one at a time in timestamp order, and the visible
//! timestamp moves only after a batch is applied, so a reader at the visible timestamp sees
//! whole commits; nothing unpersisted is ever visible; catalog changes reach persistence in
//! the first batch written after them (before or with any commit that relies on them).
//! Lock order: committer, then catalog; store; subscriptions, then committer.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::{Condvar, Mutex, RwLock};

use crate::catalog::{BY_ID, Catalog, IndexId, IndexState, TableReservation, table_name_key};
use crate::committer::{CommitterState, encode_writes};
use crate::document::DocumentRef;
use crate::error::Conflict;
use crate::error::{Error, Result};
use crate::id::TableNumber;
use crate::interval::hex;
use crate::interval::{Interval, IntervalSet};
use crate::keys;
use crate::limits::TransactionLimits;
use crate::log::batch::CommitBatch;
use crate::log::follow;
use crate::log::record::{CommitRecord, DocumentRevision};
use crate::log::recovery::LoadedState;
use crate::mvcc::MvccStore;
use crate::search::{SearchIndexes, TextIndex, TextIndexDef, VectorIndex, VectorIndexDef};
use crate::subscriptions::{SubscriptionId, SubscriptionIndex};
use crate::timestamp::Timestamp;
use crate::transaction::{ScanRequest, Transaction};
use crate::write_log::WriteLogConfig;

/// Knobs of the engine.
#[derive(Clone, Copy, Debug, Default)]
pub struct EngineConfig {
    /// Per-transaction limits.
    pub limits: TransactionLimits,
    /// The write log's window.
    pub write_log: WriteLogConfig,
    /// TESTS ONLY: commit without checking the read set against later writes. This breaks
    /// serializability on purpose, so the isolation checker can show it notices.
    pub unsafe_skip_validation: bool,
}

struct CatalogState {
    current: Arc<Catalog>,
    version: u64,
    persisted_version: u64,
}

struct Subscriptions {
    index: SubscriptionIndex,
    next_id: u64,
    /// Vector searches of subscriptions, matched by score at publication.
    vector: std::collections::HashMap<SubscriptionId, Vec<crate::search::VectorRead>>,
}

/// Everything one batch write carries to persistence.
pub struct PersistBatch {
    /// The commits.
    pub commits: CommitBatch,
    /// Indexes whose rows are to be deleted.
    pub dropped_indexes: Vec<IndexId>,
    /// The catalog to store, if it changed since it was last persisted: (version, JSON).
    pub catalog: Option<(u64, String)>,
    /// Everything queued at or before this queue generation is in this batch or an earlier
    /// one (see [`Engine::queue_generation`]).
    pub generation: u64,
}

impl PersistBatch {
    /// Whether there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.commits.is_empty() && self.dropped_indexes.is_empty() && self.catalog.is_none()
    }
}

/// The engine of one database.
pub struct Engine {
    store: Arc<RwLock<MvccStore>>,
    catalog: RwLock<CatalogState>,
    committer: Mutex<CommitterState>,
    visible: AtomicU64,
    retained_from: AtomicU64,
    subscriptions: Mutex<Subscriptions>,
    config: EngineConfig,
    /// Counts what was queued for persistence; a group-commit worker waits on it.
    queued: Mutex<u64>,
    queued_changed: Condvar,
    search: Arc<SearchIndexes>,
    /// Serializes [`Engine::apply_log`] calls.
    applying: Mutex<()>,
    /// Set while this engine follows another process's log: every write is refused.
    following: std::sync::atomic::AtomicBool,
}

/// What [`Engine::apply_log`] applied.
#[derive(Debug, Clone, Default)]
pub struct AppliedLog {
    /// Subscriptions whose read sets the slice wrote into.
    pub invalidated: Vec<SubscriptionId>,
    /// The first commit applied.
    pub first_ts: Option<Timestamp>,
    /// The last commit applied (now the visible timestamp).
    pub last_ts: Option<Timestamp>,
    /// Commits applied.
    pub commits: usize,
    /// Document revisions applied.
    pub revisions: usize,
}

/// Tables up to this many documents get a new search index built before the registration
/// returns; larger ones are built on a thread, and searches wait a few seconds for it.
pub const FOREGROUND_SEARCH_BUILD: usize = 20_000;

impl Engine {
    /// An engine over state rebuilt from persistence.
    pub fn new(loaded: LoadedState, config: EngineConfig) -> Engine {
        Engine {
            store: Arc::new(RwLock::new(loaded.store)),
            catalog: RwLock::new(CatalogState {
                current: Arc::new(loaded.catalog),
                version: 0,
                persisted_version: 0,
            }),
            committer: Mutex::new(CommitterState::new(loaded.max_ts, config.write_log)),
            visible: AtomicU64::new(loaded.max_ts.0),
            retained_from: AtomicU64::new(0),
            queued: Mutex::new(0),
            queued_changed: Condvar::new(),
            subscriptions: Mutex::new(Subscriptions {
                index: SubscriptionIndex::new(),
                next_id: 1,
                vector: std::collections::HashMap::new(),
            }),
            config,
            search: Arc::new(SearchIndexes::default()),
            applying: Mutex::new(()),
            following: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// The newest timestamp whose commits are all durable and visible.
    pub fn visible_ts(&self) -> Timestamp {
        Timestamp(self.visible.load(Ordering::Acquire))
    }

    /// Follow another process's log (`true`: a read replica, which [`Engine::apply_log`]
    /// feeds; commits that write, catalog changes and backfills are refused with
    /// `NotWriter`) or become the writer (`false`: a promotion).
    pub fn set_following(&self, following: bool) {
        self.following.store(following, Ordering::Release);
    }

    /// Whether this engine follows another process's log.
    pub fn is_following(&self) -> bool {
        self.following.load(Ordering::Acquire)
    }

    fn check_writer(&self, what: &'static str) -> Result<()> {
        if self.is_following() {
            return Err(Error::NotWriter(what));
        }
        Ok(())
    }

    /// The current catalog.
    pub fn catalog(&self) -> Arc<Catalog> {
        Arc::clone(&self.catalog.read().current)
    }

    /// The engine's knobs.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// Begin a transaction at the visible timestamp.
    pub fn begin(&self, read_only: bool) -> Transaction {
        let catalog = self.catalog();
        let mut txn = Transaction::new(
            self.visible_ts(),
            catalog,
            Arc::clone(&self.store),
            read_only,
            self.config.limits,
        );
        txn.set_search(Arc::clone(&self.search));
        txn
    }

    /// Begin a read-only transaction at an earlier timestamp (point-in-time read).
    pub fn begin_at(&self, ts: Timestamp) -> Result<Transaction> {
        let visible = self.visible_ts();
        let oldest = Timestamp(self.retained_from.load(Ordering::Acquire));
        if ts > visible {
            return Err(Error::InvalidArgument(format!(
                "timestamp {ts} is after the latest visible timestamp {visible}"
            )));
        }
        if ts < oldest {
            return Err(Error::InvalidArgument(format!(
                "timestamp {ts} is older than the retention window (oldest readable: {oldest})"
            )));
        }
        let mut txn = Transaction::new(
            ts,
            self.catalog(),
            Arc::clone(&self.store),
            true,
            self.config.limits,
        );
        txn.set_search(Arc::clone(&self.search));
        Ok(txn)
    }

    /// Validate and queue a transaction. Returns its commit timestamp, or `None` if it wrote
    /// nothing (a read-only transaction is serializable at its snapshot as it is).
    pub fn commit(&self, txn: Transaction) -> Result<Option<Timestamp>> {
        self.commit_parts(txn.into_parts())
    }

    /// Validate and queue a transaction a follower ran ([`crate::forward`]): its writes are
    /// rebuilt against this store's revisions at its begin timestamp, and the `by_id` key of
    /// every written document joins its read set. Returns its commit timestamp, or `None` if
    /// it wrote nothing.
    ///
    /// Errors: `InvalidArgument` when its begin timestamp is not visible here yet (wait for
    /// it first); `Conflict` when a commit after the begin timestamp wrote what it read or
    /// wrote, or when the follower saw another revision than this store has;
    /// `TransactionTooOld` when the begin timestamp is out of the write log's window or
    /// the retention window; `TableNotFound` for a write to a table that does not exist;
    /// `NotWriter` on a follower.
    pub fn commit_forwarded(
        &self,
        forwarded: crate::forward::ForwardedTransaction,
    ) -> Result<Option<Timestamp>> {
        self.check_writer("a forwarded transaction")?;
        let begin_ts = forwarded.begin_ts;
        let visible = self.visible_ts();
        if begin_ts > visible {
            return Err(Error::InvalidArgument(format!(
                "a forwarded transaction began at timestamp {begin_ts}, after this process's \
                 visible timestamp {visible}"
            )));
        }
        let catalog = self.catalog();
        let mut reads = forwarded.reads;
        let mut writes = std::collections::BTreeMap::new();
        {
            let store = self.store.read();
            store.check_snapshot(begin_ts)?;
            for w in forwarded.writes {
                let key = Transaction::by_id_key(&catalog, &w.id)
                    .ok_or_else(|| Error::TableNotFound(w.id.table.0.to_string()))?;
                let old = store
                    .get_with_ts(&w.id, begin_ts)
                    .map(|(ts, d)| (ts, Arc::clone(d)));
                if old.as_ref().map(|(ts, _)| *ts) != w.old_ts {
                    // Not the revision the follower read: never expected (both applied the
                    // same log); refused as a conflict, so the follower runs it again.
                    return Err(Error::Conflict(Conflict {
                        table: catalog
                            .table_by_number(w.id.table)
                            .map_or_else(String::new, |t| t.name.clone()),
                        key_hex: hex(&key),
                        ts: begin_ts,
                    }));
                }
                reads.push(Interval::point(&key));
                writes.insert(w.id, crate::transaction::PendingWrite { old, new: w.new });
            }
        }
        reads.normalize();
        self.commit_parts(crate::transaction::CommitParts {
            begin_ts,
            reads,
            writes,
            created_tables: Vec::new(),
        })
    }

    fn commit_parts(&self, parts: crate::transaction::CommitParts) -> Result<Option<Timestamp>> {
        // Search keys are computed outside the commit lock, and again under it if an index
        // was registered meanwhile.
        let (search_version, registry) = self.search.current();
        let mut search = registry.write_keys(&parts.writes);
        let encoded = encode_writes(parts.writes);
        if encoded.is_empty() {
            // Nothing written (tables it created stay uncreated: they would be empty).
            return Ok(None);
        }
        self.check_writer("a transaction that writes")?;
        let mut committer = self.committer.lock();
        if !self.config.unsafe_skip_validation {
            committer
                .validate(&self.catalog(), parts.begin_ts, &parts.reads)
                .map_err(|e| self.describe_conflict(e))?;
        }
        if self.search.version() != search_version {
            // An index was registered meanwhile (rare): its keys too.
            search = self
                .search
                .current()
                .1
                .write_keys(&encoded_writes_map(&encoded));
        }
        let mut extra_keys = std::mem::take(&mut search.keys);
        let catalog = if parts.created_tables.is_empty() {
            self.catalog()
        } else {
            let mut state = self.catalog.write();
            let mut next = (*state.current).clone();
            for (name, reservation) in &parts.created_tables {
                match next.table(name) {
                    Some(t) if t.number == reservation.number => {}
                    Some(_) => {
                        // Another transaction created the table first, with other numbers:
                        // this one's ids name a table that will never exist. Retry.
                        return Err(Error::Conflict(Conflict {
                            table: name.clone(),
                            key_hex: hex(&table_name_key(name)),
                            ts: committer.last_ts,
                        }));
                    }
                    None => next.add_reserved_table(name, reservation, committer.last_ts.0)?,
                }
                extra_keys.push(table_name_key(name));
            }
            state.current = Arc::new(next);
            state.version += 1;
            Arc::clone(&state.current)
        };
        let ts = committer.prepare(
            &catalog,
            encoded,
            extra_keys,
            search.tokenized,
            self.visible_ts(),
        )?;
        self.signal_queued();
        Ok(Some(ts))
    }

    /// Name the search index of a conflict on a search key (the committer knows only the
    /// catalog's indexes).
    fn describe_conflict(&self, error: Error) -> Error {
        match error {
            Error::Conflict(mut c) => {
                let key_id = u32::from_str_radix(c.key_hex.get(..8).unwrap_or(""), 16).ok();
                if let Some((table, index)) =
                    key_id.and_then(|k| self.search.current().1.describe_key(k))
                {
                    c.table = format!("{table} (search index {index})");
                }
                Error::Conflict(c)
            }
            other => other,
        }
    }

    /// Note that something was queued for persistence (called with the committer lock
    /// held, so a batch taken afterwards holds it).
    fn signal_queued(&self) {
        let mut n = self.queued.lock();
        *n += 1;
        self.queued_changed.notify_all();
    }

    /// The queue generation: it grows each time a commit, catalog change or index drop is
    /// queued. A batch's `generation` says which of them it covers.
    pub fn queue_generation(&self) -> u64 {
        *self.queued.lock()
    }

    /// Block until the queue generation differs from `seen`, or `timeout` passes; returns
    /// the generation. Wake waiters with [`Engine::wake`].
    pub fn wait_queued(&self, seen: u64, timeout: std::time::Duration) -> u64 {
        let mut n = self.queued.lock();
        if *n == seen {
            let _ = self.queued_changed.wait_for(&mut n, timeout);
        }
        *n
    }

    /// Wake whoever waits in [`Engine::wait_queued`] (to stop a worker).
    pub fn wake(&self) {
        let _n = self.queued.lock();
        self.queued_changed.notify_all();
    }

    /// Reserve the numbers of a table a transaction is about to create (see
    /// [`crate::catalog::TableReservation`]); `None` if the table exists.
    pub fn reserve_table(&self, name: &str) -> Result<Option<TableReservation>> {
        if self.catalog().table(name).is_some() {
            return Ok(None);
        }
        self.change_catalog(|catalog, _| {
            if catalog.table(name).is_some() {
                return Ok(None);
            }
            catalog.reserve_table(name).map(Some)
        })
    }

    /// Whether commits or catalog changes wait to be persisted.
    pub fn has_pending(&self) -> bool {
        let committer = self.committer.lock();
        let catalog = self.catalog.read();
        committer.has_pending() || catalog.version != catalog.persisted_version
    }

    /// Take everything pending as one batch for persistence.
    pub fn take_batch(&self) -> PersistBatch {
        let mut committer = self.committer.lock();
        let generation = self.queue_generation();
        let (commits, dropped_indexes) = committer.take_batch();
        let catalog = self.catalog.read();
        let catalog_json = (catalog.version != catalog.persisted_version)
            .then(|| (catalog.version, catalog.current.to_json()));
        PersistBatch {
            commits,
            dropped_indexes,
            catalog: catalog_json,
            generation,
        }
    }

    /// Make a durable batch visible. Returns the subscriptions it invalidates.
    pub fn publish(&self, batch: &PersistBatch) -> Vec<SubscriptionId> {
        {
            let mut store = self.store.write();
            for commit in &batch.commits.commits {
                for change in &commit.changes {
                    store.apply(
                        commit.ts,
                        change.id,
                        change.doc.clone(),
                        change.index_changes.iter().cloned(),
                    );
                }
                for change in &commit.index_only {
                    store.apply_index(commit.ts, change.clone());
                }
            }
        }
        {
            // Search indexes see the batch before the visible timestamp moves past it, with
            // the registry held so a registration sees all of the batch or none of it.
            let registry = self.search.hold();
            if !registry.is_empty() {
                for commit in &batch.commits.commits {
                    for change in &commit.changes {
                        registry.record(
                            commit.ts,
                            change.id,
                            change.doc.as_ref(),
                            &commit.search_docs,
                        );
                    }
                }
            }
            if let Some(ts) = batch.commits.max_ts() {
                self.visible.fetch_max(ts.0, Ordering::AcqRel);
            }
        }
        if let Some((version, _)) = &batch.catalog {
            let mut catalog = self.catalog.write();
            catalog.persisted_version = catalog.persisted_version.max(*version);
        }
        let subscriptions = self.subscriptions.lock();
        if subscriptions.index.is_empty() && subscriptions.vector.is_empty() {
            return Vec::new();
        }
        let mut hit = BTreeSet::new();
        for commit in &batch.commits.commits {
            hit.extend(subscriptions.index.matches(&commit.written.keys));
        }
        if !subscriptions.vector.is_empty() {
            let (_, registry) = self.search.current();
            for (id, reads) in &subscriptions.vector {
                if hit.contains(id) {
                    continue;
                }
                let changed = reads.iter().any(|read| {
                    registry.vector_by_key(read.key_id).is_some_and(|index| {
                        batch.commits.commits.iter().any(|c| {
                            c.changes
                                .iter()
                                .any(|ch| read.could_change(&index.def, &ch.id, ch.doc.as_ref()))
                        })
                    })
                });
                if changed {
                    hit.insert(*id);
                }
            }
        }
        hit.into_iter().collect()
    }

    /// Apply a slice of the log that another process committed (a follower tailing the
    /// shared log; see [`crate::log::follow`]): install `catalog` (the catalog as of the
    /// slice's snapshot, if given), verify the slice against what this engine holds, append
    /// each commit's written keys to the write log, and publish the commits as
    /// [`Engine::publish`] publishes a batch. Slices are applied one at a time, each
    /// continuing the last: its first commit must follow the visible timestamp.
    ///
    /// Errors: `Corrupt` for a bad row (nothing applied); `LogGap` when the slice does not
    /// continue what was applied (a missed commit: reload); `InvalidArgument` when this engine
    /// has commits of its own waiting (a follower does not commit).
    pub fn apply_log(
        &self,
        catalog: Option<Catalog>,
        commits: &[CommitRecord],
        revisions: &[DocumentRevision],
    ) -> Result<AppliedLog> {
        let _one_at_a_time = self.applying.lock();
        let revision_count = revisions.len();
        let batch = {
            let mut committer = self.committer.lock();
            if committer.has_pending() {
                return Err(Error::InvalidArgument(
                    "this engine has commits of its own waiting to be persisted; an engine that \
                     follows another process's log does not commit"
                        .into(),
                ));
            }
            let after = self.visible_ts();
            if committer.last_ts > after
                && let Some(first) = commits.first()
                && first.ts <= committer.last_ts
            {
                return Err(Error::LogGap(format!(
                    "commit at ts {} is not above this engine's last timestamp {}",
                    first.ts, committer.last_ts
                )));
            }
            let previous = self.catalog();
            if let Some(next) = catalog {
                self.install_catalog_locked(next);
            }
            let current = self.catalog();
            let prepare = || {
                let (_, registry) = self.search.current();
                let store = self.store.read();
                follow::prepare_slice(
                    &current, &previous, &store, &registry, after, commits, revisions,
                )
            };
            let search_version = self.search.version();
            let mut prepared = prepare()?;
            if self.search.version() != search_version {
                // A search index was registered meanwhile (rare): its keys too.
                prepared = prepare()?;
            }
            for commit in &prepared {
                committer.write_log.append(Arc::clone(&commit.written));
            }
            if let Some(last) = prepared.last() {
                committer.last_ts = committer.last_ts.max(last.ts);
                committer.write_log.trim(last.ts, after);
            }
            PersistBatch {
                commits: CommitBatch { commits: prepared },
                dropped_indexes: Vec::new(),
                catalog: None,
                generation: 0,
            }
        };
        let invalidated = self.publish(&batch);
        Ok(AppliedLog {
            invalidated,
            first_ts: batch.commits.commits.first().map(|c| c.ts),
            last_ts: batch.commits.max_ts(),
            commits: batch.commits.len(),
            revisions: revision_count,
        })
    }

    /// Replace the catalog with `next`, read from the database a leader writes (a follower):
    /// indexes gone from it are removed from the store, indexes new in it are derived from
    /// every retained revision ([`follow::derive_index`]), and it counts as persisted.
    /// Called with the committer lock held.
    fn install_catalog_locked(&self, next: Catalog) {
        let mut state = self.catalog.write();
        let current = Arc::clone(&state.current);
        if current.to_json() == next.to_json() {
            return;
        }
        {
            let mut store = self.store.write();
            for gone in current.all_indexes().filter(|i| next.index(i.id).is_none()) {
                let start = gone.id.prefix().to_vec();
                let end = (gone.id.0 + 1).to_be_bytes().to_vec();
                store.remove_range(&start, &end);
            }
            for added in next.all_indexes().filter(|i| current.index(i.id).is_none()) {
                let changes = follow::derive_index(&store, TableNumber(added.table), added);
                for (ts, change) in changes {
                    store.apply_index(ts, change);
                }
            }
        }
        state.current = Arc::new(next);
        state.version += 1;
        state.persisted_version = state.version;
    }

    /// Drop a batch that failed to persist: its commits never become visible, and its index
    /// drops and catalog change are retried with the next batch.
    pub fn abort(&self, batch: PersistBatch) {
        let mut committer = self.committer.lock();
        committer.abort(&batch.commits);
        committer.restore_drops(batch.dropped_indexes);
        self.signal_queued();
    }

    fn change_catalog<T>(
        &self,
        change: impl FnOnce(&mut Catalog, Timestamp) -> Result<T>,
    ) -> Result<T> {
        self.check_writer("a schema change")?;
        let committer = self.committer.lock();
        let mut state = self.catalog.write();
        let mut next = (*state.current).clone();
        let out = change(&mut next, committer.last_ts)?;
        state.current = Arc::new(next);
        state.version += 1;
        drop(state);
        self.signal_queued();
        drop(committer);
        Ok(out)
    }

    /// Create a table (if it does not exist); returns its number.
    pub fn create_table(&self, name: &str) -> Result<TableNumber> {
        if let Some(t) = self.catalog().table(name) {
            return Ok(TableNumber(t.number));
        }
        self.change_catalog(|catalog, last_ts| {
            if let Some(t) = catalog.table(name) {
                return Ok(TableNumber(t.number));
            }
            catalog.add_table(name, last_ts.0)
        })
    }

    /// Create table `name` with number `number` (importing a snapshot whose ids carry it).
    pub fn create_table_numbered(&self, name: &str, number: u32) -> Result<TableNumber> {
        self.change_catalog(|catalog, last_ts| catalog.add_table_numbered(name, number, last_ts.0))
    }

    /// Create a system table (name starting with `_`) if it does not exist.
    pub fn create_system_table(&self, name: &str) -> Result<TableNumber> {
        if let Some(t) = self.catalog().table(name) {
            return Ok(TableNumber(t.number));
        }
        self.change_catalog(|catalog, last_ts| {
            if let Some(t) = catalog.table(name) {
                return Ok(TableNumber(t.number));
            }
            catalog.add_system_table(name, last_ts.0)
        })
    }

    /// Add an index in the backfilling state. Returns its id and the snapshot timestamp the
    /// backfill reads at: every commit after it maintains the index.
    pub fn add_index(
        &self,
        table: &str,
        name: &str,
        fields: Vec<String>,
    ) -> Result<(IndexId, Timestamp)> {
        self.change_catalog(|catalog, last_ts| {
            let id = catalog.add_index(table, name, fields, IndexState::Backfilling)?;
            Ok((id, last_ts))
        })
    }

    /// Mark an index ready for snapshots at or after `since`.
    pub fn set_index_ready(&self, index: IndexId, since: Timestamp) -> Result<()> {
        self.change_catalog(|catalog, _| {
            catalog.set_ready(index, since.0);
            Ok(())
        })
    }

    /// Remove an index: gone from the catalog and memory now, its rows deleted with the
    /// next batch.
    pub fn drop_index(&self, index: IndexId) -> Result<()> {
        self.check_writer("dropping an index")?;
        let mut committer = self.committer.lock();
        let mut state = self.catalog.write();
        let mut next = (*state.current).clone();
        if next.remove_index(index).is_none() {
            return Ok(());
        }
        state.current = Arc::new(next);
        state.version += 1;
        let start = index.prefix().to_vec();
        let end = (index.0 + 1).to_be_bytes().to_vec();
        self.store.write().remove_range(&start, &end);
        committer.drop_index(index);
        self.signal_queued();
        Ok(())
    }

    /// Queue one chunk of an index backfill: up to `chunk` documents of the index's table
    /// after `after` (a `by_id` keyspace key), as of `snapshot_ts`. Returns the chunk's
    /// commit timestamp (if it wrote anything) and where the next chunk starts (`None` when
    /// the table is exhausted).
    pub fn backfill_chunk(
        &self,
        index: IndexId,
        snapshot_ts: Timestamp,
        after: Option<&[u8]>,
        chunk: usize,
    ) -> Result<(Option<Timestamp>, Option<Vec<u8>>)> {
        self.check_writer("an index backfill")?;
        if self.visible_ts() < snapshot_ts {
            return Err(Error::InvalidArgument(format!(
                "backfill snapshot {snapshot_ts} is not visible yet; persist pending commits first"
            )));
        }
        let catalog = self.catalog();
        let descriptor = catalog
            .index(index)
            .ok_or_else(|| Error::InvalidArgument(format!("index {index} does not exist")))?;
        let table_number = TableNumber(descriptor.table);
        let by_id = catalog
            .by_id(table_number)
            .ok_or_else(|| Error::TableNotFound(descriptor.table.to_string()))?;
        let table_end = keys::prefix_successor(&by_id.prefix()).unwrap_or_default();
        let start = match after {
            Some(k) => keys::successor(k),
            None => by_id.prefix().to_vec(),
        };
        let mut docs: Vec<(Timestamp, DocumentRef)> = Vec::with_capacity(chunk);
        let mut last_key = None;
        {
            let store = self.store.read();
            for (key, chain) in store.range(&start, &table_end, false) {
                if docs.len() >= chunk {
                    break;
                }
                last_key = Some(key.to_vec());
                if let Some((ts, doc)) = chain.at_with_ts(snapshot_ts) {
                    docs.push((ts, Arc::clone(doc)));
                }
            }
        }
        let next = if docs.len() >= chunk { last_key } else { None };
        let mut committer = self.committer.lock();
        let ts =
            committer.commit_backfill(&catalog, index, snapshot_ts, &docs, self.visible_ts())?;
        if ts.is_some() {
            self.signal_queued();
        }
        Ok((ts, next))
    }

    /// The `by_id` index id of a table (for callers that scan whole tables).
    pub fn by_id_index(&self, table: &str) -> Result<IndexId> {
        let catalog = self.catalog();
        let t = catalog
            .table(table)
            .ok_or_else(|| Error::TableNotFound(table.to_owned()))?;
        t.indexes
            .get(BY_ID)
            .copied()
            .ok_or_else(|| Error::TableNotFound(table.to_owned()))
    }

    /// Register a subscription whose read set was read at `ts`. Returns its id and whether a
    /// commit after `ts` already overlaps it (then the caller re-runs it at once).
    pub fn subscribe(&self, reads: &IntervalSet, ts: Timestamp) -> (SubscriptionId, bool) {
        self.subscribe_searches(reads, Vec::new(), reads, ts)
    }

    /// [`Engine::subscribe`] with vector searches: `reads` are matched by key,
    /// `vector_reads` by score ([`crate::search::VectorRead::could_change`]); commits
    /// between `ts` and now are checked against `full_reads` (the whole read set).
    pub fn subscribe_searches(
        &self,
        reads: &IntervalSet,
        vector_reads: Vec<crate::search::VectorRead>,
        full_reads: &IntervalSet,
        ts: Timestamp,
    ) -> (SubscriptionId, bool) {
        let mut subs = self.subscriptions.lock();
        let id = SubscriptionId(subs.next_id);
        subs.next_id += 1;
        subs.index.insert(id, reads.intervals());
        if !vector_reads.is_empty() {
            subs.vector.insert(id, vector_reads);
        }
        drop(subs);
        (id, self.missed_since(full_reads, ts))
    }

    /// Replace a subscription's read set after a re-run at `ts`; returns whether a commit
    /// after `ts` already overlaps it.
    pub fn resubscribe(&self, id: SubscriptionId, reads: &IntervalSet, ts: Timestamp) -> bool {
        self.resubscribe_searches(id, reads, Vec::new(), reads, ts)
    }

    /// [`Engine::resubscribe`] with vector searches (see [`Engine::subscribe_searches`]).
    pub fn resubscribe_searches(
        &self,
        id: SubscriptionId,
        reads: &IntervalSet,
        vector_reads: Vec<crate::search::VectorRead>,
        full_reads: &IntervalSet,
        ts: Timestamp,
    ) -> bool {
        let mut subs = self.subscriptions.lock();
        subs.index.insert(id, reads.intervals());
        if vector_reads.is_empty() {
            subs.vector.remove(&id);
        } else {
            subs.vector.insert(id, vector_reads);
        }
        drop(subs);
        self.missed_since(full_reads, ts)
    }

    /// Whether a published commit after `ts` wrote into `reads`. Called after the
    /// subscription is in the index: a commit published later is matched by
    /// [`Engine::publish`]; one published earlier is found here.
    fn missed_since(&self, reads: &IntervalSet, ts: Timestamp) -> bool {
        let visible = self.visible_ts();
        if ts >= visible {
            return false;
        }
        let committer = self.committer.lock();
        !matches!(
            committer.write_log.first_overlap(ts, visible, reads),
            Ok(None)
        )
    }

    /// The keys the commit at `ts` wrote, while the write log still holds it (diagnostics,
    /// tests comparing engines).
    pub fn written_at(&self, ts: Timestamp) -> Option<Arc<crate::write_log::WriteLogEntry>> {
        self.committer
            .lock()
            .write_log
            .between(Timestamp(ts.0.saturating_sub(1)), ts)
            .next()
            .cloned()
    }

    /// Remove a subscription.
    pub fn unsubscribe(&self, id: SubscriptionId) -> bool {
        let mut subs = self.subscriptions.lock();
        subs.vector.remove(&id);
        subs.index.remove(id)
    }

    /// Number of subscriptions registered.
    pub fn subscription_count(&self) -> usize {
        self.subscriptions.lock().index.len()
    }

    /// Drop versions no snapshot at or after `min_ts` can see (retention).
    pub fn retain(&self, min_ts: Timestamp) -> usize {
        let min_ts = min_ts.min(self.visible_ts());
        self.retained_from.fetch_max(min_ts.0, Ordering::AcqRel);
        self.store.write().retain(min_ts)
    }

    /// The shared store (for checks and scans outside transactions).
    pub fn store(&self) -> &Arc<RwLock<MvccStore>> {
        &self.store
    }

    /// Number of live documents of `table` at the visible timestamp.
    pub fn count_documents(&self, table: &str) -> Result<usize> {
        let index = self.by_id_index(table)?;
        let end = keys::prefix_successor(&index.prefix()).unwrap_or_default();
        let ts = self.visible_ts();
        let store = self.store.read();
        Ok(store
            .range(&index.prefix(), &end, false)
            .filter(|(_, c)| c.at(ts).is_some())
            .count())
    }

    /// Scan helper for callers that need documents of a whole table at a snapshot (schema
    /// validation at open): up to `limit` documents after `after` (a `by_id` key).
    pub fn table_page(
        &self,
        table: &str,
        ts: Timestamp,
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<(Vec<DocumentRef>, Option<Vec<u8>>)> {
        let index = self.by_id_index(table)?;
        let end = keys::prefix_successor(&index.prefix()).unwrap_or_default();
        let start = after.map_or_else(|| index.prefix().to_vec(), keys::successor);
        let Some(interval) = Interval::new(start, end) else {
            return Ok((Vec::new(), None));
        };
        let mut txn = Transaction::new(
            ts,
            self.catalog(),
            Arc::clone(&self.store),
            true,
            TransactionLimits {
                max_documents_read: usize::MAX,
                max_bytes_read: usize::MAX,
                max_read_intervals: usize::MAX,
                ..self.config.limits
            },
        );
        let result = txn.scan(&ScanRequest {
            index,
            interval,
            descending: false,
            limit: Some(limit),
            filter: None,
            new_query: true,
        })?;
        let next = if result.done { None } else { result.last_key };
        Ok((result.docs, next))
    }

    /// Stop the search indexes' background work (closing the database).
    pub fn stop_search_maintenance(&self) {
        self.search.shutdown();
    }

    /// The search indexes (for transactions and checks).
    pub fn search(&self) -> &Arc<SearchIndexes> {
        &self.search
    }

    /// The documents of `table` at the visible timestamp, with that timestamp. Called with
    /// the search registry held, so no batch is half-applied.
    fn documents_at_visible(&self, table: TableNumber) -> Result<(Timestamp, Vec<DocumentRef>)> {
        let ts = self.visible_ts();
        let catalog = self.catalog();
        let by_id = catalog
            .by_id(table)
            .ok_or_else(|| Error::TableNotFound(table.0.to_string()))?;
        let end = keys::prefix_successor(&by_id.prefix()).unwrap_or_default();
        let store = self.store.read();
        let docs = store
            .range(&by_id.prefix(), &end, false)
            .filter_map(|(_, chain)| chain.at(ts).cloned())
            .collect();
        Ok((ts, docs))
    }

    fn table_number(&self, table: &str) -> Result<TableNumber> {
        self.catalog()
            .table(table)
            .map(|t| TableNumber(t.number))
            .ok_or_else(|| Error::TableNotFound(table.to_owned()))
    }

    /// Register a full-text index on `table` (which must exist) and build it from the
    /// table's documents: before returning for tables up to [`FOREGROUND_SEARCH_BUILD`]
    /// documents, on a thread past that. An index of the same shape stays as it is; one
    /// with the same name and another shape is replaced. Errors: `Schema` when its key id
    /// is another registered index's ([`crate::search::Registry::insert_text`]).
    pub fn register_text_index(
        &self,
        table: &str,
        name: &str,
        search_field: &str,
        filter_fields: &[String],
    ) -> Result<()> {
        let number = self.table_number(table)?;
        let def = TextIndexDef::new(number, table, name, search_field, filter_fields)?;
        let (_, registry) = self.search.current();
        if registry
            .text(table, name)
            .is_some_and(|i| i.def.same_shape(&def))
        {
            return Ok(());
        }
        let index = Arc::new(TextIndex::new(def)?);
        let (ts, docs) = self.search.change(|r| {
            r.insert_text(Arc::clone(&index))?;
            self.documents_at_visible(number)
        })?;
        self.search.start_maintenance();
        if docs.len() <= FOREGROUND_SEARCH_BUILD {
            index.build(&docs, ts)
        } else {
            std::thread::Builder::new()
                .name("reactive-search-build".to_owned())
                .spawn(move || {
                    let _ = index.build(&docs, ts);
                })
                .map(|_| ())
                .map_err(|e| Error::InvalidArgument(format!("search index build: {e}")))
        }
    }

    /// Register a vector index on `table` (which must exist) and build it (see
    /// [`Engine::register_text_index`]). `exact_limit`: exact search up to this many
    /// candidates, an approximate graph past it.
    #[allow(clippy::too_many_arguments)]
    pub fn register_vector_index(
        &self,
        table: &str,
        name: &str,
        vector_field: &str,
        dimensions: usize,
        filter_fields: &[String],
        exact_limit: usize,
    ) -> Result<()> {
        let number = self.table_number(table)?;
        let def = VectorIndexDef::new(
            number,
            table,
            name,
            vector_field,
            dimensions,
            filter_fields,
            exact_limit,
        )?;
        let (_, registry) = self.search.current();
        if registry
            .vector(table, name)
            .is_some_and(|i| i.def.same_shape(&def))
        {
            return Ok(());
        }
        let index = Arc::new(VectorIndex::new(def));
        let (_, docs) = self.search.change(|r| {
            r.insert_vector(Arc::clone(&index))?;
            self.documents_at_visible(number)
        })?;
        self.search.start_maintenance();
        if docs.len() <= FOREGROUND_SEARCH_BUILD {
            index.build(&docs);
            Ok(())
        } else {
            std::thread::Builder::new()
                .name("reactive-vector-build".to_owned())
                .spawn(move || index.build(&docs))
                .map(|_| ())
                .map_err(|e| Error::InvalidArgument(format!("vector index build: {e}")))
        }
    }

    /// Check text index `name` of `table` against the table's documents at the visible
    /// timestamp; returns the ids indexed wrongly. Errors: `IndexNotFound`.
    pub fn verify_text_index(&self, table: &str, name: &str) -> Result<Vec<String>> {
        let number = self.table_number(table)?;
        let not_found = || Error::IndexNotFound {
            table: table.to_owned(),
            index: name.to_owned(),
        };
        let (_, registry) = self.search.current();
        let index = registry.text(table, name).ok_or_else(not_found)?;
        let (ts, docs) = {
            let _held = self.search.hold();
            self.documents_at_visible(number)?
        };
        index.verify(&docs, ts)
    }

    /// Remove every search index not named in `keep` (`(table, index)` pairs).
    pub fn retain_search_indexes(&self, keep: &[(String, String)]) {
        let kept = |t: &str, n: &str| keep.iter().any(|(kt, kn)| kt == t && kn == n);
        self.search.change(|r| {
            r.text.retain(|i| kept(&i.def.table_name, &i.def.name));
            r.vector.retain(|i| kept(&i.def.table_name, &i.def.name));
        });
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.search.shutdown();
    }
}

/// The writes of encoded commits as a map again (to compute search keys under the lock).
fn encoded_writes_map(
    encoded: &[crate::committer::EncodedWrite],
) -> std::collections::BTreeMap<crate::id::DocumentId, crate::transaction::PendingWrite> {
    encoded
        .iter()
        .map(|w| (w.id(), w.write().clone()))
        .collect()
}
