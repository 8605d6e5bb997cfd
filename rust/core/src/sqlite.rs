//! The embedded persistence backend: SQLite through rusqlite (bundled SQLite).
//!
//! Tables (DESIGN.md §2, `docs/design/log-records.md`): `documents` (one row per document
//! revision), `indexes` (one row per index entry), `commits` (one row per commit: how many
//! of each it wrote), `globals` (format version, highest timestamp, catalog, other named
//! values). The journal is WAL with `synchronous=FULL`: a batch is durable when its COMMIT
//! returns. One process at a time: an exclusive lock on `<path>.lock` is held while open.
//!
//! Invariants: a batch is one SQLite transaction (all of its rows or none); the schema is
//! created and upgraded by the numbered migrations below, and a database whose format
//! version is newer than [`FORMAT_VERSION`] is refused.
//!
//! Every access goes through this connection (SQLite bundled in the extension). Another
//! copy of SQLite in the same process (Python's `sqlite3`) must not open the file while it
//! is open: closing its descriptor would drop this one's POSIX locks, which can lose or
//! corrupt commits (<https://sqlite.org/howtocorrupt.html>, "multiple copies of SQLite").

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;
use rusqlite::{Connection, OptionalExtension, params};

use crate::catalog::Catalog;
use crate::engine::PersistBatch;
use crate::error::{Error, Result};
use crate::log::prune::WindowRevision;
use crate::log::record::{CommitRecord, DocumentRevision, IndexEntry, row_ts};
use crate::log::recovery::{CheckReport, Checker, LoadedState, Loader};
use crate::mvcc::MvccStore;
use crate::timestamp::Timestamp;

/// The newest on-disk format this code reads and writes.
pub const FORMAT_VERSION: i64 = 1;

/// Migrations: the statements that take the format from version `i` to `i + 1`.
///
/// Both log tables are keyed by timestamp first: commits append at the end of their
/// B-trees, so a commit dirties few pages. Persistence is read whole at open, never by key.
const MIGRATIONS: &[&str] = &[
    // 0 -> 1: the log tables.
    "CREATE TABLE IF NOT EXISTS commits (
         ts INTEGER PRIMARY KEY,
         document_count INTEGER NOT NULL,
         index_entry_count INTEGER NOT NULL,
         checksum INTEGER NOT NULL);
     CREATE TABLE IF NOT EXISTS documents (
         ts INTEGER NOT NULL,
         id BLOB NOT NULL,
         table_id INTEGER NOT NULL,
         value BLOB,
         deleted INTEGER NOT NULL,
         prev_ts INTEGER,
         checksum INTEGER NOT NULL,
         PRIMARY KEY (ts, id)) WITHOUT ROWID;
     CREATE TABLE IF NOT EXISTS indexes (
         index_id INTEGER NOT NULL,
         key BLOB NOT NULL,
         ts INTEGER NOT NULL,
         doc_id BLOB NOT NULL,
         deleted INTEGER NOT NULL,
         checksum INTEGER NOT NULL,
         PRIMARY KEY (ts, index_id, key)) WITHOUT ROWID;",
];

/// An open SQLite database.
pub struct SqlitePersistence {
    conn: Mutex<Connection>,
    path: PathBuf,
    _lock: File,
}

fn corrupt_row(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Corrupt(format!("{what}: {e}"))
}

/// Read a column; a value of the wrong type is a corrupt row, named by `what`.
fn col<T: rusqlite::types::FromSql>(row: &rusqlite::Row<'_>, idx: usize, what: &str) -> Result<T> {
    row.get(idx).map_err(|e| match e {
        rusqlite::Error::InvalidColumnType(_, name, ty) => {
            corrupt_row(what, format!("column {name} holds a {ty}"))
        }
        rusqlite::Error::FromSqlConversionFailure(_, _, err) => corrupt_row(what, err),
        rusqlite::Error::IntegralValueOutOfRange(_, v) => {
            corrupt_row(what, format!("integer {v} out of range"))
        }
        other => Error::from(other),
    })
}

impl SqlitePersistence {
    /// Open (creating if needed) the database at `path`.
    ///
    /// Errors: [`Error::Incompatible`] if another process holds it or its format is newer
    /// than this code; [`Error::Persistence`] for I/O and SQLite failures.
    pub fn open(path: &Path) -> Result<SqlitePersistence> {
        if let Some(parent) = path.parent()
            && !parent.as_os_str().is_empty()
        {
            std::fs::create_dir_all(parent).map_err(|e| {
                Error::Persistence(format!("cannot create {}: {e}", parent.display()))
            })?;
        }
        let lock_path = lock_path(path);
        let mut lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&lock_path)
            .map_err(|e| Error::Persistence(format!("cannot open {}: {e}", lock_path.display())))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let holder = std::fs::read_to_string(&lock_path).unwrap_or_default();
                return Err(Error::Incompatible(format!(
                    "database {} is open in another process ({}); one process at a time may \
                     open it",
                    path.display(),
                    holder.trim()
                )));
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(Error::Persistence(format!(
                    "cannot lock {}: {e}",
                    lock_path.display()
                )));
            }
        }
        let _ = lock.set_len(0);
        let _ = write!(lock, "pid {}", std::process::id());
        let conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        // 64 MiB of page cache: batches touch the tails of the log tables.
        conn.pragma_update(None, "cache_size", -65536)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS globals (name TEXT PRIMARY KEY, value BLOB NOT NULL)",
        )?;
        let persistence = SqlitePersistence {
            conn: Mutex::new(conn),
            path: path.to_owned(),
            _lock: lock,
        };
        persistence.migrate()?;
        Ok(persistence)
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn migrate(&self) -> Result<()> {
        let mut conn = self.conn.lock();
        let tx = conn.transaction()?;
        let version: i64 = tx
            .query_row(
                "SELECT value FROM globals WHERE name = 'format_version'",
                [],
                |r| r.get::<_, Vec<u8>>(0),
            )
            .optional()?
            .map_or(0, |b| {
                String::from_utf8_lossy(&b).parse::<i64>().unwrap_or(-1)
            });
        if !(0..=FORMAT_VERSION).contains(&version) {
            return Err(Error::Incompatible(format!(
                "database {} has format version {version}; this version of reactive reads \
                 formats up to {FORMAT_VERSION}: upgrade reactive to open it",
                self.path.display()
            )));
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            tx.execute_batch(sql)?;
            tx.execute(
                "INSERT OR REPLACE INTO globals (name, value) VALUES ('format_version', ?1)",
                params![(i as i64 + 1).to_string().into_bytes()],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// A named global value.
    pub fn get_global(&self, name: &str) -> Result<Option<Vec<u8>>> {
        let conn = self.conn.lock();
        Ok(conn
            .query_row(
                "SELECT value FROM globals WHERE name = ?1",
                params![name],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// Set a named global value (durably, in its own transaction).
    pub fn set_global(&self, name: &str, value: &[u8]) -> Result<()> {
        let conn = self.conn.lock();
        conn.execute(
            "INSERT OR REPLACE INTO globals (name, value) VALUES (?1, ?2)",
            params![name, value],
        )?;
        Ok(())
    }

    fn load_globals(&self) -> Result<(Catalog, Timestamp)> {
        let catalog = match self.get_global("catalog")? {
            Some(bytes) => Catalog::from_json(&String::from_utf8_lossy(&bytes))?,
            None => Catalog::new(),
        };
        let max_ts = self
            .get_global("max_ts")?
            .map(|b| String::from_utf8_lossy(&b).parse::<u64>())
            .transpose()
            .map_err(|e| corrupt_row("globals.max_ts", e))?
            .unwrap_or(0);
        Ok((catalog, Timestamp(max_ts)))
    }

    /// Rebuild the state from the log, verifying every record.
    pub fn load(&self) -> Result<LoadedState> {
        let (catalog, max_ts) = self.load_globals()?;
        let mut loader = Loader::new(catalog, max_ts);
        self.read_rows(&mut loader)?;
        loader.finish()
    }

    fn read_rows(&self, loader: &mut Loader) -> Result<()> {
        let conn = self.conn.lock();
        let mut stmt =
            conn.prepare("SELECT ts, document_count, index_entry_count, checksum FROM commits")?;
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            let what = "commit record";
            loader.add_commit(CommitRecord::from_row(
                col(row, 0, what)?,
                col(row, 1, what)?,
                col(row, 2, what)?,
                col(row, 3, what)?,
            )?)?;
        }
        drop(rows);
        let mut stmt = conn.prepare(
            "SELECT ts, id, table_id, value, deleted, prev_ts, checksum FROM documents \
             ORDER BY ts",
        )?;
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            let what = "document revision";
            loader.add_revision(DocumentRevision::from_row(
                col(row, 0, what)?,
                &col::<Vec<u8>>(row, 1, what)?,
                col(row, 2, what)?,
                col(row, 3, what)?,
                col(row, 4, what)?,
                col(row, 5, what)?,
                col(row, 6, what)?,
            )?)?;
        }
        drop(rows);
        let mut stmt =
            conn.prepare("SELECT index_id, key, ts, doc_id, deleted, checksum FROM indexes")?;
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            let entry = read_index_row(row)?;
            loader.add_index_entry(&entry)?;
        }
        Ok(())
    }

    /// Write one batch in one transaction; durable when this returns `Ok`.
    pub fn write_batch(&self, batch: &PersistBatch) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let mut conn = self.conn.lock();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let mut added: std::collections::BTreeMap<i64, i64> = std::collections::BTreeMap::new();
        {
            let mut commit_stmt = tx.prepare_cached(
                "INSERT INTO commits (ts, document_count, index_entry_count, checksum) \
                 VALUES (?1, ?2, ?3, ?4)",
            )?;
            let mut doc_stmt = tx.prepare_cached(
                "INSERT INTO documents (ts, id, table_id, value, deleted, prev_ts, checksum) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?;
            let mut index_stmt = tx.prepare_cached(
                "INSERT INTO indexes (index_id, key, ts, doc_id, deleted, checksum) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?;
            // Backfill rows go at their revision's timestamp; a backfill resumed after a
            // restart may write a row again (the same row): it is kept once and counted once.
            let mut backfill_stmt = tx.prepare_cached(
                "INSERT OR IGNORE INTO indexes (index_id, key, ts, doc_id, deleted, checksum) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?;
            for commit in &batch.commits.commits {
                let r = &commit.record;
                commit_stmt.execute(params![
                    r.ts.0 as i64,
                    r.document_count,
                    r.index_entry_count,
                    r.checksum
                ])?;
                for rev in &commit.revisions {
                    doc_stmt.execute(params![
                        rev.ts.0 as i64,
                        rev.id.to_bytes(),
                        rev.id.table.0,
                        rev.value,
                        rev.value.is_none(),
                        rev.prev_ts.map(|t| t.0 as i64),
                        rev.checksum
                    ])?;
                }
                for e in &commit.index_entries {
                    let row = params![
                        e.index_id.0,
                        e.key,
                        e.ts.0 as i64,
                        e.doc_id.to_bytes(),
                        e.deleted,
                        e.checksum
                    ];
                    if e.ts == commit.ts {
                        index_stmt.execute(row)?;
                    } else if backfill_stmt.execute(row)? > 0 {
                        *added.entry(e.ts.0 as i64).or_insert(0) += 1;
                    }
                }
            }
        }
        for (ts, n) in added {
            adjust_commit(&tx, ts, 0, n)?;
        }
        for index in &batch.dropped_indexes {
            drop_index_rows(&tx, index.0)?;
        }
        if let Some((_, json)) = &batch.catalog {
            tx.execute(
                "INSERT OR REPLACE INTO globals (name, value) VALUES ('catalog', ?1)",
                params![json.as_bytes()],
            )?;
        }
        if let Some(max) = batch.commits.max_ts() {
            tx.execute(
                "INSERT OR REPLACE INTO globals (name, value) VALUES ('max_ts', ?1)",
                params![max.0.to_string().into_bytes()],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Delete the rows no snapshot at or after `cutoff` needs ([`crate::log::prune`]),
    /// going on from where the last call stopped (the `retained_ts` global), at most about
    /// `max_revisions` revisions of the window in this call's one transaction. The
    /// revisions of a commit are never split between calls.
    pub fn prune(
        &self,
        catalog: &Catalog,
        cutoff: Timestamp,
        max_revisions: usize,
    ) -> Result<PruneProgress> {
        let mut conn = self.conn.lock();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let from = global_ts(&tx, RETAINED_TS)?;
        let mut progress = PruneProgress {
            retained_ts: from.max(Timestamp(0)),
            ..PruneProgress::default()
        };
        if cutoff <= from {
            progress.done = true;
            return Ok(progress);
        }
        let limit = max_revisions.max(1);
        let mut window = read_window(&tx, from, cutoff, limit)?;
        let through = if window.len() < limit {
            cutoff
        } else {
            let last = window.last().map_or(cutoff, |r| r.ts);
            if window.first().map(|r| r.ts) == Some(last) {
                // One commit fills the chunk: take all of it.
                window = read_window_at(&tx, last)?;
                last
            } else {
                window.retain(|r| r.ts < last);
                Timestamp(last.0 - 1)
            }
        };
        for revision in &mut window {
            if let Some(p) = revision.prev_ts {
                revision.prev_value = tx
                    .query_row(
                        "SELECT value FROM documents WHERE ts = ?1 AND id = ?2",
                        params![p.0 as i64, revision.id.to_bytes()],
                        |r| r.get::<_, Option<Vec<u8>>>(0),
                    )
                    .optional()?
                    .flatten();
            }
        }
        let plan = crate::log::prune::plan(catalog, &window)?;
        let mut adjustments: std::collections::BTreeMap<i64, (i64, i64)> =
            std::collections::BTreeMap::new();
        {
            let mut del_doc =
                tx.prepare_cached("DELETE FROM documents WHERE ts = ?1 AND id = ?2")?;
            for (ts, id) in &plan.documents {
                let n = del_doc.execute(params![ts.0 as i64, id.to_bytes()])?;
                progress.documents_deleted += n;
                adjustments.entry(ts.0 as i64).or_default().0 -= n as i64;
            }
            let mut del_entry = tx.prepare_cached(
                "DELETE FROM indexes WHERE ts = ?1 AND index_id = ?2 AND key = ?3 AND doc_id = ?4",
            )?;
            for (ts, index, key, id) in &plan.index_entries {
                let n = del_entry.execute(params![ts.0 as i64, index.0, key, id.to_bytes()])?;
                progress.index_entries_deleted += n;
                adjustments.entry(ts.0 as i64).or_default().1 -= n as i64;
            }
        }
        for (ts, (docs, entries)) in adjustments {
            if docs != 0 || entries != 0 {
                adjust_commit(&tx, ts, docs, entries)?;
            }
        }
        tx.execute(
            "INSERT OR REPLACE INTO globals (name, value) VALUES (?1, ?2)",
            params![RETAINED_TS, through.0.to_string().into_bytes()],
        )?;
        tx.commit()?;
        progress.revisions = window.len();
        progress.retained_ts = through;
        progress.done = through >= cutoff;
        Ok(progress)
    }

    /// The stored value of each document (id bytes) at snapshot `ts`: `None` when it did
    /// not exist then or was deleted. For tools and checks (it scans by id, which the log
    /// tables are not keyed by); the engine serves reads from memory.
    pub fn read_documents(&self, ids: &[Vec<u8>], ts: Timestamp) -> Result<Vec<Option<Vec<u8>>>> {
        let conn = self.conn.lock();
        let mut stmt = conn.prepare_cached(
            "SELECT value FROM documents WHERE id = ?1 AND ts <= ?2 ORDER BY ts DESC LIMIT 1",
        )?;
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            let value: Option<Option<Vec<u8>>> = stmt
                .query_row(params![id, ts.0 as i64], |r| r.get(0))
                .optional()?;
            out.push(value.flatten());
        }
        Ok(out)
    }

    /// Live entries `(key, document id)` of index `index` with `start <= key < end` at
    /// snapshot `ts`, in key order, at most `limit`. For tools and checks.
    pub fn read_index_range(
        &self,
        index: u32,
        start: &[u8],
        end: &[u8],
        ts: Timestamp,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let conn = self.conn.lock();
        let mut stmt = conn.prepare_cached(
            "SELECT key, doc_id, deleted, ts FROM indexes WHERE index_id = ?1 AND ts <= ?2 \
             AND key >= ?3 AND key < ?4",
        )?;
        let mut rows = stmt.query(params![index, ts.0 as i64, start, end])?;
        // The newest row of each key at `ts` decides.
        let mut newest: std::collections::BTreeMap<Vec<u8>, (i64, Vec<u8>, bool)> =
            std::collections::BTreeMap::new();
        while let Some(row) = rows.next()? {
            let key: Vec<u8> = row.get(0)?;
            let doc: Vec<u8> = row.get(1)?;
            let deleted: bool = row.get(2)?;
            let at: i64 = row.get(3)?;
            match newest.get(&key) {
                Some((t, _, _)) if *t >= at => {}
                _ => {
                    newest.insert(key, (at, doc, deleted));
                }
            }
        }
        Ok(newest
            .into_iter()
            .filter(|(_, (_, _, deleted))| !deleted)
            .map(|(k, (_, d, _))| (k, d))
            .take(limit)
            .collect())
    }

    /// Rows in `(documents, indexes, commits)`.
    pub fn row_counts(&self) -> Result<(u64, u64, u64)> {
        let conn = self.conn.lock();
        let count = |table: &str| -> Result<u64> {
            let n: i64 =
                conn.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))?;
            Ok(u64::try_from(n).unwrap_or(0))
        };
        Ok((count("documents")?, count("indexes")?, count("commits")?))
    }

    /// Compare every persisted index entry with the live documents of `store` at `ts`.
    pub fn check(
        &self,
        catalog: Arc<Catalog>,
        store: &MvccStore,
        ts: Timestamp,
    ) -> Result<CheckReport> {
        let mut checker = Checker::new(catalog);
        let conn = self.conn.lock();
        let mut stmt =
            conn.prepare("SELECT index_id, key, ts, doc_id, deleted, checksum FROM indexes")?;
        let mut rows = stmt.query([])?;
        let mut problems = Vec::new();
        while let Some(row) = rows.next()? {
            let entry = read_index_row(row)?;
            if let Err(e) = entry.verify() {
                problems.push(e.to_string());
            }
            checker.add_index_entry(&entry);
        }
        let mut report = checker.finish(store, ts);
        report.problems.extend(problems);
        Ok(report)
    }
}

impl crate::log::worker::BatchSink for SqlitePersistence {
    fn write_batch(&self, batch: &PersistBatch) -> Result<()> {
        SqlitePersistence::write_batch(self, batch)
    }
}

fn read_index_row(row: &rusqlite::Row<'_>) -> Result<IndexEntry> {
    let what = "index entry";
    IndexEntry::from_row(
        col(row, 0, what)?,
        col(row, 1, what)?,
        col(row, 2, what)?,
        &col::<Vec<u8>>(row, 3, what)?,
        col(row, 4, what)?,
        col(row, 5, what)?,
    )
}

/// Delete an index's rows and take them out of their commits' counts.
fn drop_index_rows(tx: &rusqlite::Transaction<'_>, index: u32) -> Result<()> {
    let counts: Vec<(i64, u32)> = {
        let mut stmt =
            tx.prepare("SELECT ts, count(*) FROM indexes WHERE index_id = ?1 GROUP BY ts")?;
        let rows = stmt.query_map(params![index], |r| Ok((r.get(0)?, r.get(1)?)))?;
        rows.collect::<std::result::Result<_, _>>()?
    };
    for (ts, n) in counts {
        adjust_commit(tx, ts, 0, -i64::from(n))?;
    }
    tx.execute("DELETE FROM indexes WHERE index_id = ?1", params![index])?;
    Ok(())
}

/// Add `documents` and `index_entries` (either may be negative) to the counts of the commit
/// at `ts`, rewriting its checksum; a commit left with no rows is deleted.
fn adjust_commit(
    tx: &rusqlite::Transaction<'_>,
    ts: i64,
    documents: i64,
    index_entries: i64,
) -> Result<()> {
    let Some((docs, entries)) = tx
        .query_row(
            "SELECT document_count, index_entry_count FROM commits WHERE ts = ?1",
            params![ts],
            |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)),
        )
        .optional()?
    else {
        if documents > 0 || index_entries > 0 {
            return Err(Error::Corrupt(format!(
                "rows were added to the commit at ts {ts}, which has no commit record"
            )));
        }
        return Ok(());
    };
    let docs = u32::try_from((docs + documents).max(0)).unwrap_or(u32::MAX);
    let entries = u32::try_from((entries + index_entries).max(0)).unwrap_or(u32::MAX);
    if docs == 0 && entries == 0 {
        tx.execute("DELETE FROM commits WHERE ts = ?1", params![ts])?;
    } else {
        let r = CommitRecord::new(row_ts(ts, "commit record")?, docs, entries);
        tx.execute(
            "UPDATE commits SET document_count = ?2, index_entry_count = ?3, checksum = ?4 \
             WHERE ts = ?1",
            params![ts, r.document_count, r.index_entry_count, r.checksum],
        )?;
    }
    Ok(())
}

/// The global naming the retention cutoff persistence has been pruned to (decimal text).
pub const RETAINED_TS: &str = "retained_ts";

/// What one [`SqlitePersistence::prune`] call did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PruneProgress {
    /// Snapshots at or after this timestamp are complete in persistence.
    pub retained_ts: Timestamp,
    /// Window revisions looked at.
    pub revisions: usize,
    /// `documents` rows deleted.
    pub documents_deleted: usize,
    /// `indexes` rows deleted.
    pub index_entries_deleted: usize,
    /// Whether the cutoff was reached (else call again).
    pub done: bool,
}

fn global_ts(tx: &rusqlite::Transaction<'_>, name: &str) -> Result<Timestamp> {
    let value: Option<Vec<u8>> = tx
        .query_row(
            "SELECT value FROM globals WHERE name = ?1",
            params![name],
            |r| r.get(0),
        )
        .optional()?;
    let Some(value) = value else {
        return Ok(Timestamp(0));
    };
    std::str::from_utf8(&value)
        .ok()
        .and_then(|t| t.parse::<u64>().ok())
        .map(Timestamp)
        .ok_or_else(|| Error::Corrupt(format!("global {name} is not a decimal timestamp")))
}

fn window_row(row: &rusqlite::Row<'_>) -> Result<WindowRevision> {
    let what = "document revision";
    let ts = row_ts(col(row, 0, what)?, what)?;
    let id_bytes: Vec<u8> = col(row, 1, what)?;
    let id = crate::id::DocumentId::from_bytes(&id_bytes)
        .map_err(|e| Error::Corrupt(format!("document revision at ts {ts}: bad id: {e}")))?;
    let prev: Option<i64> = col(row, 3, what)?;
    Ok(WindowRevision {
        ts,
        id,
        value: col(row, 2, what)?,
        prev_ts: prev.map(|p| row_ts(p, what)).transpose()?,
        prev_value: None,
    })
}

fn read_window(
    tx: &rusqlite::Transaction<'_>,
    after: Timestamp,
    through: Timestamp,
    limit: usize,
) -> Result<Vec<WindowRevision>> {
    let mut stmt = tx.prepare_cached(
        "SELECT ts, id, value, prev_ts FROM documents WHERE ts > ?1 AND ts <= ?2 \
         ORDER BY ts, id LIMIT ?3",
    )?;
    let mut rows = stmt.query(params![
        after.0 as i64,
        through.0 as i64,
        i64::try_from(limit).unwrap_or(i64::MAX)
    ])?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        out.push(window_row(row)?);
    }
    Ok(out)
}

fn read_window_at(tx: &rusqlite::Transaction<'_>, ts: Timestamp) -> Result<Vec<WindowRevision>> {
    let mut stmt =
        tx.prepare_cached("SELECT ts, id, value, prev_ts FROM documents WHERE ts = ?1")?;
    let mut rows = stmt.query(params![ts.0 as i64])?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        out.push(window_row(row)?);
    }
    Ok(out)
}

fn lock_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".lock");
    PathBuf::from(s)
}
