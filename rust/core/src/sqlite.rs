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

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;
use rusqlite::{Connection, OptionalExtension, params};

use crate::catalog::Catalog;
use crate::engine::PersistBatch;
use crate::error::{Error, Result};
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
                    index_stmt.execute(params![
                        e.index_id.0,
                        e.key,
                        e.ts.0 as i64,
                        e.doc_id.to_bytes(),
                        e.deleted,
                        e.checksum
                    ])?;
                }
            }
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
        let Some((docs, entries)) = tx
            .query_row(
                "SELECT document_count, index_entry_count FROM commits WHERE ts = ?1",
                params![ts],
                |r| Ok((r.get::<_, u32>(0)?, r.get::<_, u32>(1)?)),
            )
            .optional()?
        else {
            continue;
        };
        let remaining = entries.saturating_sub(n);
        if docs == 0 && remaining == 0 {
            tx.execute("DELETE FROM commits WHERE ts = ?1", params![ts])?;
        } else {
            let r = CommitRecord::new(row_ts(ts, "commit record")?, docs, remaining);
            tx.execute(
                "UPDATE commits SET index_entry_count = ?2, checksum = ?3 WHERE ts = ?1",
                params![ts, r.index_entry_count, r.checksum],
            )?;
        }
    }
    tx.execute("DELETE FROM indexes WHERE index_id = ?1", params![index])?;
    Ok(())
}

fn lock_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".lock");
    PathBuf::from(s)
}
