//! The embedded persistence backend: SQLite through rusqlite (bundled SQLite).
//!
//! Tables (`docs/design/log-records.md`): `documents` (one row per document
//! revision), `indexes` (one row per index entry), `commits` (one row per commit: how many
//! of each it wrote), `globals` (format version, highest timestamp, catalog, other named
//! values). The journal is WAL with `synchronous=FULL`: a batch is durable when its COMMIT
//! returns.
//!
//! One writer per database *file*, whatever path names it. While open, this process holds
//! an exclusive `flock` (`LOCK_EX|LOCK_NB`) on a descriptor of the database file itself:
//! a hard link, a symlink or a path through `..` reaches the same inode, hence the same
//! lock, and another process is refused with [`Error::Incompatible`]. (It also holds the
//! older lock on `<path>.lock`, which names its pid, so that a process of an older version
//! holding that path is still refused.) On Linux `flock` locks are independent of the
//! POSIX `fcntl` locks SQLite takes, but closing *any* descriptor of the file drops all of
//! this process's POSIX locks on it (<https://sqlite.org/howtocorrupt.html>, 2.2), so:
//! the lock's descriptor is closed only after the connection (field order of
//! [`SqlitePersistence`]); a process-wide table of open files by `(st_dev, st_ino)` refuses
//! a second open in this process *before* any descriptor of the file is opened (and in the
//! one race where the path starts naming an open file between the look and the open, the
//! new descriptor is leaked rather than closed); a descriptor closed on refusal belongs to
//! a file no connection of this process uses. Network file systems are not supported (as
//! for SQLite itself).
//!
//! Only reactive databases are opened. Before anything is written (journal mode,
//! migrations), a non-empty file must be a SQLite file that either has no schema at all (a
//! fresh database) or has the log tables and a `format_version` row in `globals`; it is
//! looked at through a read-only connection (`immutable=1` when it is in WAL mode with no
//! write-ahead log, so that no `-wal`/`-shm` files are created). Anything else is refused
//! with [`Error::Incompatible`] naming what was found, and left unchanged.
//!
//! Invariants: a batch is one SQLite transaction (all of its rows or none); the schema is
//! created and upgraded by the numbered migrations below (in one transaction with the
//! `globals` table), and a database whose format version is newer than [`FORMAT_VERSION`]
//! is refused.
//!
//! Every access goes through this connection (SQLite bundled in the extension). Another
//! copy of SQLite in the same process (Python's `sqlite3`) must not open the file while it
//! is open: closing its descriptor would drop this one's POSIX locks, which can lose or
//! corrupt commits (<https://sqlite.org/howtocorrupt.html>, "multiple copies of SQLite").

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::fs::{FileExt as _, MetadataExt as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;
use rusqlite::{Connection, OpenFlags, OptionalExtension, params};

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

/// The log tables every reactive database (format 1 and later) has, with `globals`.
const LOG_TABLES: [&str; 3] = ["commits", "documents", "indexes"];

/// An open SQLite database.
pub struct SqlitePersistence {
    // Fields drop in declaration order: the connection (and its POSIX locks) goes before
    // the writer lock closes its descriptor of the same file.
    conn: Mutex<Connection>,
    path: PathBuf,
    _lock: WriterLock,
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
    /// Errors: [`Error::Incompatible`] if another process (or this one) has the same file
    /// open under any name, if the file is not a reactive database (then it is left
    /// unchanged), or if its format is newer than this code; [`Error::Persistence`] for I/O
    /// and SQLite failures.
    pub fn open(path: &Path) -> Result<SqlitePersistence> {
        if let Some(parent) = path.parent()
            && !parent.as_os_str().is_empty()
        {
            std::fs::create_dir_all(parent).map_err(|e| {
                Error::Persistence(format!("cannot create {}: {e}", parent.display()))
            })?;
        }
        // `lock` is declared before `conn`: on an error below, the connection drops first.
        let mut lock = WriterLock::acquire(path)?;
        check_is_reactive(path, lock.file())?;
        lock.lock_path_file(path)?;
        let conn = Connection::open(path)?;
        // The connection must be on the file this process locked (not on one that replaced
        // it under the same name meanwhile).
        if std::fs::metadata(path).map(|m| file_key(&m)).ok() != Some(lock.key) {
            return Err(Error::Persistence(format!(
                "database {} was replaced while it was being opened",
                path.display()
            )));
        }
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        // 64 MiB of page cache: batches touch the tails of the log tables.
        conn.pragma_update(None, "cache_size", -65536)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
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
        tx.execute_batch(
            "CREATE TABLE IF NOT EXISTS globals (name TEXT PRIMARY KEY, value BLOB NOT NULL)",
        )?;
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

// -- one writer per database file --------------------------------------------------------

/// The database files open in this process, by `(st_dev, st_ino)`, with the path each was
/// opened by. Consulted (and kept locked) before any descriptor of a database file is
/// opened or closed by [`WriterLock`].
static OPEN_FILES: Mutex<BTreeMap<(u64, u64), PathBuf>> = parking_lot::const_mutex(BTreeMap::new());

/// A file's identity: the same for every path (link, symlink, `..`) that reaches it.
fn file_key(meta: &std::fs::Metadata) -> (u64, u64) {
    (meta.dev(), meta.ino())
}

/// This process's hold on one database file: an exclusive `flock` on a descriptor of the
/// file itself, registered in [`OPEN_FILES`]; plus the lock on `<path>.lock`.
struct WriterLock {
    /// The descriptor holding the `flock`; `None` only while being dropped.
    file: Option<File>,
    key: (u64, u64),
    /// `<path>.lock`, locked, holding this process's pid.
    path_lock: Option<File>,
}

impl WriterLock {
    /// Lock the file `path` names (creating it, empty, if missing), or refuse it if this or
    /// another process has it open.
    fn acquire(path: &Path) -> Result<WriterLock> {
        let mut open_files = OPEN_FILES.lock();
        // Refuse a file this process has open before opening a descriptor of it: closing
        // that descriptor would drop the POSIX locks of the connection that has it open.
        if let Ok(meta) = std::fs::metadata(path)
            && let Some(other) = open_files.get(&file_key(&meta))
        {
            return Err(open_in_this_process(path, other));
        }
        let file = open_database_file(path)?;
        let key = file_key(
            &file
                .metadata()
                .map_err(|e| Error::Persistence(format!("cannot stat {}: {e}", path.display())))?,
        );
        if let Some(other) = open_files.get(&key) {
            // The path came to name a file open in this process between the two looks.
            // Never close this descriptor: keep it open for the life of the process.
            let refusal = open_in_this_process(path, other);
            std::mem::forget(file);
            return Err(refusal);
        }
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                // No connection of this process uses this file (it is not in OPEN_FILES):
                // closing this descriptor drops no lock of ours.
                drop(file);
                return Err(open_in_another_process(path, &holder(path)));
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(Error::Persistence(format!(
                    "cannot lock {}: {e}",
                    path.display()
                )));
            }
        }
        open_files.insert(key, path.to_owned());
        Ok(WriterLock {
            file: Some(file),
            key,
            path_lock: None,
        })
    }

    /// The locked descriptor of the database file.
    fn file(&self) -> &File {
        self.file
            .as_ref()
            .expect("the writer lock's file is open until it is dropped")
    }

    /// Also lock `<path>.lock` (as versions before the file lock did, so that one of them
    /// holding this path is refused too) and write this process's pid in it.
    fn lock_path_file(&mut self, path: &Path) -> Result<()> {
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
                return Err(open_in_another_process(path, holder.trim()));
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
        self.path_lock = Some(lock);
        Ok(())
    }
}

impl Drop for WriterLock {
    fn drop(&mut self) {
        // With OPEN_FILES locked, so that no other open of this file in this process sees
        // it unregistered while this descriptor is still open (its `flock` held).
        let mut open_files = OPEN_FILES.lock();
        drop(self.file.take());
        open_files.remove(&self.key);
    }
}

/// Open the database file for locking, creating it (empty) if missing.
fn open_database_file(path: &Path) -> Result<File> {
    let opened = OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(path);
    match opened {
        Ok(file) => Ok(file),
        // A file this process may not write: `flock` needs only a read descriptor (SQLite
        // reports what it cannot do later).
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied && path.exists() => {
            File::open(path)
                .map_err(|e| Error::Persistence(format!("cannot open {}: {e}", path.display())))
        }
        Err(e) => Err(Error::Persistence(format!(
            "cannot open {}: {e}",
            path.display()
        ))),
    }
}

/// ` (pid N)` when `<path>.lock` is held (by the process that has `path` open under this
/// name), else empty.
fn holder(path: &Path) -> String {
    let lock_path = lock_path(path);
    let Ok(lock) = File::open(&lock_path) else {
        return String::new();
    };
    match lock.try_lock() {
        Err(std::fs::TryLockError::WouldBlock) => std::fs::read_to_string(&lock_path)
            .unwrap_or_default()
            .trim()
            .to_owned(),
        // Not held (a lock taken here is released as `lock` drops).
        _ => String::new(),
    }
}

fn open_in_another_process(path: &Path, holder: &str) -> Error {
    let holder = if holder.is_empty() {
        String::new()
    } else {
        format!(" ({holder})")
    };
    Error::Incompatible(format!(
        "database {} is open in another process{holder}; one process at a time may open it \
         (under any name: hard links and symlinks reach the same file)",
        path.display()
    ))
}

fn open_in_this_process(path: &Path, other: &Path) -> Error {
    let name = if other == path {
        String::new()
    } else {
        format!(" as {}", other.display())
    };
    Error::Incompatible(format!(
        "database {} is already open in this process (pid {}){name}; one process at a time \
         may open it, once",
        path.display(),
        std::process::id()
    ))
}

// -- only reactive databases --------------------------------------------------------------

/// What every SQLite database file begins with.
const SQLITE_HEADER: &[u8; 16] = b"SQLite format 3\0";

/// Refuse, before anything is written to it, a file that is not a reactive database: it
/// must be empty, or a SQLite file with no schema at all, or one with the log tables and a
/// `format_version` in `globals` (the format itself is checked by the migrations). Looks
/// through `file` (the locked descriptor) and a read-only connection; changes nothing.
fn check_is_reactive(path: &Path, file: &File) -> Result<()> {
    let len = file
        .metadata()
        .map_err(|e| Error::Persistence(format!("cannot stat {}: {e}", path.display())))?
        .len();
    if len == 0 {
        return Ok(()); // a new database
    }
    let mut header = [0u8; 100];
    if len < header.len() as u64 {
        return Err(not_reactive(
            path,
            &format!("it is not a SQLite database file ({len} bytes)"),
        ));
    }
    file.read_exact_at(&mut header, 0)
        .map_err(|e| Error::Persistence(format!("cannot read {}: {e}", path.display())))?;
    if &header[..16] != SQLITE_HEADER {
        return Err(not_reactive(
            path,
            "it is not a SQLite database file (it does not begin with \"SQLite format 3\")",
        ));
    }
    // Bytes 18 and 19 are 2 in WAL mode. A read-only connection to a WAL-mode file creates
    // `-wal` and `-shm` files and leaves them; with no write-ahead log to read, the file
    // alone is the database: open it as immutable, which creates nothing.
    let wal_mode = header[18] == 2 || header[19] == 2;
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    let has_wal = std::fs::metadata(&wal).is_ok_and(|m| m.len() > 0);
    let query = if wal_mode && !has_wal {
        "mode=ro&immutable=1"
    } else {
        "mode=ro"
    };
    let conn = Connection::open_with_flags(
        file_uri(path, query),
        OpenFlags::SQLITE_OPEN_READ_ONLY
            | OpenFlags::SQLITE_OPEN_URI
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| unreadable(path, &e))?;
    let objects: Vec<(String, String)> = {
        let mut stmt = conn
            .prepare("SELECT type, name FROM sqlite_master ORDER BY rowid")
            .map_err(|e| unreadable(path, &e))?;
        let rows = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .map_err(|e| unreadable(path, &e))?;
        rows.collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| unreadable(path, &e))?
            .into_iter()
            .filter(|(_, name): &(String, String)| !name.starts_with("sqlite_"))
            .collect()
    };
    if objects.is_empty() {
        return Ok(()); // a SQLite database with nothing in it yet
    }
    let tables: Vec<&str> = objects
        .iter()
        .filter(|(kind, _)| kind == "table")
        .map(|(_, name)| name.as_str())
        .collect();
    let has = |t: &str| tables.contains(&t);
    // How many rows `globals` has and whether one is the format version (`None`: it is
    // missing or is not reactive's `(name, value)` table).
    let globals: Option<(i64, bool)> = if has("globals") {
        conn.query_row(
            "SELECT count(*), count(*) FILTER (WHERE name = 'format_version') FROM globals",
            [],
            |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)? > 0)),
        )
        .ok()
    } else {
        None
    };
    drop(conn);
    let found = describe(&objects);
    match globals {
        Some((_, true)) => {
            let missing: Vec<&str> = LOG_TABLES.iter().copied().filter(|t| !has(t)).collect();
            if missing.is_empty() {
                return Ok(());
            }
            Err(not_reactive(
                path,
                &format!(
                    "it has {found} with a format_version in globals but not the log tables \
                     {}",
                    missing.join(", ")
                ),
            ))
        }
        // Only an empty `globals`: reactive before this version created it on its own, and
        // stopped before the first migration.
        Some((0, false)) if objects.len() == 1 => Ok(()),
        _ => Err(not_reactive(
            path,
            &format!("it has {found} without a reactive format version (globals.format_version)"),
        )),
    }
}

/// `tables a, b; views c` for the schema objects found, in the order they were created.
fn describe(objects: &[(String, String)]) -> String {
    let mut kinds: Vec<(&str, Vec<&str>)> = Vec::new();
    for (kind, name) in objects {
        match kinds.iter_mut().find(|(k, _)| k == kind) {
            Some((_, names)) => names.push(name),
            None => kinds.push((kind, vec![name])),
        }
    }
    kinds
        .iter()
        .map(|(kind, names)| format!("{kind}s {}", names.join(", ")))
        .collect::<Vec<_>>()
        .join("; ")
}

fn not_reactive(path: &Path, found: &str) -> Error {
    Error::Incompatible(format!(
        "{} is not a reactive database: {found}; it was left unchanged (open a new file, or \
         an empty one, for a new database)",
        path.display()
    ))
}

/// An error of the read-only look: a file SQLite does not take for a database is not a
/// reactive one; anything else is a failure to read it.
fn unreadable(path: &Path, e: &rusqlite::Error) -> Error {
    if e.sqlite_error_code() == Some(rusqlite::ErrorCode::NotADatabase) {
        not_reactive(path, &format!("SQLite cannot read it ({e})"))
    } else {
        Error::Persistence(format!("cannot read {}: sqlite: {e}", path.display()))
    }
}

/// A SQLite `file:` URI naming `path`, with the query string `query`.
fn file_uri(path: &Path, query: &str) -> String {
    let mut uri = String::from(if path.is_absolute() {
        "file://"
    } else {
        "file:"
    });
    for &b in path.as_os_str().as_bytes() {
        if b.is_ascii_alphanumeric() || b"/-._~".contains(&b) {
            uri.push(char::from(b));
        } else {
            let _ = write!(uri, "%{b:02X}");
        }
    }
    uri.push('?');
    uri.push_str(query);
    uri
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(result: Result<SqlitePersistence>) -> String {
        match result {
            Err(Error::Incompatible(message)) => message,
            Err(other) => panic!("expected Incompatible, got {other:?}"),
            Ok(_) => panic!("expected Incompatible, it opened"),
        }
    }

    /// This process's POSIX (`fcntl`) locks on the file `path` names, from `/proc/locks`.
    /// This process's POSIX locks on `path`'s inode, as `/proc/locks` lists them.
    ///
    /// `/proc/locks` is one list for the whole machine, read in pieces: a file locked or
    /// unlocked elsewhere (another test thread's database) between two reads of it can
    /// shift an entry across the boundary and drop it from what is read. So it is read
    /// in one `read` call into a large buffer (the kernel lists it in one pass then), and
    /// [`posix_locks_until`] reads again until what it sees is what a check expects.
    fn posix_locks(path: &Path) -> Vec<String> {
        use std::io::Read as _;
        let ino = std::fs::metadata(path).unwrap().ino();
        let pid = std::process::id().to_string();
        let mut buf = vec![0u8; 4 << 20];
        let n = File::open("/proc/locks").unwrap().read(&mut buf).unwrap();
        String::from_utf8_lossy(&buf[..n])
            .lines()
            .filter(|l| l.contains("POSIX"))
            .filter(|l| {
                let fields: Vec<&str> = l.split_whitespace().collect();
                fields.get(4) == Some(&pid.as_str())
                    && fields
                        .get(5)
                        .is_some_and(|d| d.ends_with(&format!(":{ino}")))
            })
            .map(|l| {
                l.split_once(':')
                    .map_or(l, |(_, rest)| rest)
                    .trim()
                    .to_owned()
            })
            .collect()
    }

    /// [`posix_locks`] once `expected` holds of them (read again up to 50 times, 2 ms
    /// apart), else the last reading: a lock that is really held, or really gone, shows
    /// in the first consistent reading.
    fn posix_locks_until(path: &Path, expected: impl Fn(&[String]) -> bool) -> Vec<String> {
        let mut locks = posix_locks(path);
        for _ in 0..50 {
            if expected(&locks) {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
            locks = posix_locks(path);
        }
        locks
    }

    fn snapshot(path: &Path) -> (Vec<u8>, std::time::SystemTime) {
        (
            std::fs::read(path).unwrap(),
            std::fs::metadata(path).unwrap().modified().unwrap(),
        )
    }

    fn side_files(path: &Path) -> Vec<String> {
        ["-wal", "-shm", ".lock"]
            .iter()
            .map(|s| {
                let mut p = path.as_os_str().to_owned();
                p.push(s);
                PathBuf::from(p)
            })
            .filter(|p| p.exists())
            .map(|p| p.display().to_string())
            .collect()
    }

    #[test]
    fn a_second_open_in_this_process_is_refused_under_any_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.db");
        let db = SqlitePersistence::open(&path).unwrap();
        db.set_global("probe", b"1").unwrap();
        let held = posix_locks_until(&path, |l| !l.is_empty());
        assert!(
            !held.is_empty(),
            "the connection holds POSIX locks on the file"
        );

        std::fs::hard_link(&path, dir.path().join("hard.db")).unwrap();
        std::os::unix::fs::symlink(&path, dir.path().join("sym.db")).unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        for name in [
            path.clone(),
            dir.path().join("hard.db"),
            dir.path().join("sym.db"),
            dir.path().join("sub/../a.db"),
        ] {
            let message = refused(SqlitePersistence::open(&name));
            assert!(
                message.contains("already open in this process"),
                "{message}"
            );
            assert!(message.contains(&name.display().to_string()), "{message}");
            // The refusal closed no descriptor of the file: the connection's locks stand.
            assert_eq!(
                posix_locks_until(&path, |l| l == held.as_slice()),
                held,
                "after opening {}",
                name.display()
            );
        }
        db.set_global("probe", b"2").unwrap();
        assert_eq!(db.get_global("probe").unwrap().as_deref(), Some(&b"2"[..]));

        // The check above can fail: closing any descriptor of the file drops the locks.
        drop(File::open(dir.path().join("hard.db")).unwrap());
        assert!(posix_locks_until(&path, <[String]>::is_empty).is_empty());
        drop(db);

        // Closed, it opens again, under any name.
        let again = SqlitePersistence::open(&dir.path().join("sym.db")).unwrap();
        assert_eq!(
            again.get_global("probe").unwrap().as_deref(),
            Some(&b"2"[..])
        );
        drop(again);
        drop(SqlitePersistence::open(&dir.path().join("hard.db")).unwrap());
    }

    #[test]
    fn a_file_locked_elsewhere_is_refused_under_any_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.db");
        drop(SqlitePersistence::open(&path).unwrap());
        std::fs::hard_link(&path, dir.path().join("hard.db")).unwrap();
        std::os::unix::fs::symlink("a.db", dir.path().join("sym.db")).unwrap();
        // Another process's lock, as far as `flock` can tell: another open file description.
        let other = File::open(&path).unwrap();
        other.try_lock().unwrap();
        for name in [
            path.clone(),
            dir.path().join("hard.db"),
            dir.path().join("sym.db"),
        ] {
            let message = refused(SqlitePersistence::open(&name));
            assert!(message.contains("open in another process"), "{message}");
            assert!(message.contains(&name.display().to_string()), "{message}");
        }
        other.unlock().unwrap();
        drop(SqlitePersistence::open(&dir.path().join("hard.db")).unwrap());
    }

    #[test]
    fn a_held_path_lock_file_is_refused_with_its_pid() {
        // A process of an older version locks only `<path>.lock`.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.db");
        drop(SqlitePersistence::open(&path).unwrap());
        let old = OpenOptions::new()
            .write(true)
            .open(lock_path(&path))
            .unwrap();
        old.try_lock().unwrap();
        std::fs::write(lock_path(&path), "pid 4242").unwrap();
        let message = refused(SqlitePersistence::open(&path));
        assert!(
            message.contains("open in another process (pid 4242)"),
            "{message}"
        );
        drop(old);
        drop(SqlitePersistence::open(&path).unwrap());
    }

    #[test]
    fn a_foreign_sqlite_database_is_refused_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        for wal in [false, true] {
            let path = dir.path().join(format!("app-{wal}.db"));
            {
                let conn = Connection::open(&path).unwrap();
                if wal {
                    conn.pragma_update(None, "journal_mode", "WAL").unwrap();
                }
                conn.execute_batch(
                    "CREATE TABLE users (name TEXT);
                     INSERT INTO users VALUES ('ada');
                     CREATE TABLE globals (name TEXT PRIMARY KEY, value BLOB NOT NULL);
                     INSERT INTO globals VALUES ('theme', 'dark');",
                )
                .unwrap();
            }
            assert_eq!(side_files(&path), Vec::<String>::new());
            let before = snapshot(&path);
            for _ in 0..2 {
                let message = refused(SqlitePersistence::open(&path));
                assert!(message.contains("is not a reactive database"), "{message}");
                assert!(message.contains("tables users, globals"), "{message}");
                assert!(message.contains("format version"), "{message}");
                assert!(message.contains(&path.display().to_string()), "{message}");
                assert_eq!(snapshot(&path), before);
                assert_eq!(side_files(&path), Vec::<String>::new());
            }
        }
    }

    #[test]
    fn a_database_with_other_tables_or_parts_missing_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let cases = [
            ("CREATE TABLE users (name TEXT)", "tables users without"),
            ("CREATE VIEW v AS SELECT 1", "views v without"),
            (
                "CREATE TABLE globals (name TEXT PRIMARY KEY, value BLOB NOT NULL);
                 INSERT INTO globals VALUES ('format_version', '1');
                 CREATE TABLE commits (ts INTEGER)",
                "but not the log tables documents, indexes",
            ),
            (
                "CREATE TABLE globals (k TEXT); INSERT INTO globals VALUES ('format_version')",
                "tables globals without",
            ),
        ];
        for (i, (sql, expected)) in cases.iter().enumerate() {
            let path = dir.path().join(format!("{i}.db"));
            Connection::open(&path).unwrap().execute_batch(sql).unwrap();
            let before = snapshot(&path);
            let message = refused(SqlitePersistence::open(&path));
            assert!(message.contains(expected), "{message}");
            assert_eq!(snapshot(&path), before);
        }
    }

    #[test]
    fn a_file_that_is_not_sqlite_is_refused_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let mut noise = vec![0u8; 8192];
        rand::Rng::fill(&mut rand::rng(), &mut noise[..]);
        let mut fake_header = SQLITE_HEADER.to_vec();
        fake_header.extend_from_slice(&noise[..4000]);
        let files: [(&str, &[u8]); 4] = [
            ("notes.txt", b"hello, this is not a database\n"),
            ("noise.bin", &noise),
            ("short.db", b"SQLite format 3\0"),
            ("fake.db", &fake_header),
        ];
        for (name, bytes) in files {
            let path = dir.path().join(name);
            std::fs::write(&path, bytes).unwrap();
            let before = snapshot(&path);
            let message = refused(SqlitePersistence::open(&path));
            assert!(
                message.contains("is not a reactive database"),
                "{name}: {message}"
            );
            assert_eq!(snapshot(&path), before, "{name}");
            assert_eq!(side_files(&path), Vec::<String>::new(), "{name}");
        }
    }

    #[test]
    fn new_empty_and_reactive_databases_open() {
        let dir = tempfile::tempdir().unwrap();
        // Missing (in a missing directory), empty, and a SQLite file with no schema.
        let missing = dir.path().join("new/a.db");
        let empty = dir.path().join("empty.db");
        std::fs::write(&empty, b"").unwrap();
        let blank = dir.path().join("blank.db");
        Connection::open(&blank)
            .unwrap()
            .pragma_update(None, "user_version", 7)
            .unwrap();
        assert!(std::fs::metadata(&blank).unwrap().len() > 0);
        // Reactive before this version could stop after creating an empty `globals`.
        let started = dir.path().join("started.db");
        Connection::open(&started)
            .unwrap()
            .execute_batch("CREATE TABLE globals (name TEXT PRIMARY KEY, value BLOB NOT NULL)")
            .unwrap();
        for path in [&missing, &empty, &blank, &started] {
            let db = SqlitePersistence::open(path).unwrap();
            db.set_global("probe", b"x").unwrap();
            drop(db);
            // And again, now a reactive database (in WAL mode).
            let db = SqlitePersistence::open(path).unwrap();
            assert_eq!(
                db.get_global("format_version").unwrap().as_deref(),
                Some(&b"1"[..])
            );
            assert_eq!(db.get_global("probe").unwrap().as_deref(), Some(&b"x"[..]));
        }
    }

    /// Copy the database at `from` with its `-wal` and `-shm` files (while it is open: the
    /// copy is what a process killed before any checkpoint leaves).
    fn copy_with_log(from: &Path, to: &Path) {
        for suffix in ["", "-wal", "-shm"] {
            let mut a = from.as_os_str().to_owned();
            a.push(suffix);
            let mut b = to.as_os_str().to_owned();
            b.push(suffix);
            if Path::new(&a).exists() {
                std::fs::copy(&a, &b).unwrap();
            }
        }
    }

    /// The schema objects of the main file alone (ignoring any write-ahead log).
    fn main_file_schema(path: &Path) -> i64 {
        Connection::open_with_flags(
            file_uri(path, "mode=ro&immutable=1"),
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_URI,
        )
        .unwrap()
        .query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))
        .unwrap()
    }

    #[test]
    fn the_look_before_opening_reads_the_write_ahead_log() {
        // Tables only in the `-wal` (none in the main file yet) are seen.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.db");
        let copy = dir.path().join("copy.db");
        let db = SqlitePersistence::open(&path).unwrap();
        db.set_global("probe", b"y").unwrap();
        copy_with_log(&path, &copy);
        drop(db);
        assert_eq!(main_file_schema(&copy), 0);
        let db = SqlitePersistence::open(&copy).unwrap();
        assert_eq!(db.get_global("probe").unwrap().as_deref(), Some(&b"y"[..]));
        drop(db);

        // A foreign database whose tables are only in its log is refused.
        let app = dir.path().join("app.db");
        let foreign = dir.path().join("foreign.db");
        let conn = Connection::open(&app).unwrap();
        conn.pragma_update(None, "journal_mode", "WAL").unwrap();
        conn.execute_batch("CREATE TABLE users (name TEXT)")
            .unwrap();
        copy_with_log(&app, &foreign);
        drop(conn);
        assert_eq!(main_file_schema(&foreign), 0);
        let message = refused(SqlitePersistence::open(&foreign));
        assert!(message.contains("tables users"), "{message}");
    }

    #[test]
    fn file_uri_escapes_the_path() {
        assert_eq!(
            file_uri(Path::new("/tmp/a b?#%.db"), "mode=ro"),
            "file:///tmp/a%20b%3F%23%25.db?mode=ro"
        );
        assert_eq!(file_uri(Path::new("rel/x.db"), "q"), "file:rel/x.db?q");
    }
}
