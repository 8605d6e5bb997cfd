"""The embedded default backend: SQLite through rusqlite in the Rust core.

The core does the work with the GIL released; this adapter only moves it off the event loop
(``asyncio.to_thread``). Journal WAL, ``synchronous=FULL``; one process at a time (an
exclusive ``flock`` on the database file itself, so every name of the file — hard link,
symlink, relative path — meets the same lock); a file that is not a reactive database is
refused unchanged. Source: ``rust/core/src/sqlite.rs``.

Every access goes through the core's connection. Do not open the database file with
Python's ``sqlite3`` in the same process while it is open: two copies of SQLite in one
process break each other's POSIX locks (https://sqlite.org/howtocorrupt.html, section
2.2), which can lose commits. Use ``python -m reactive data``/``export`` or another process.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from reactive import _core
from reactive.persistence.base import PRUNE_CHUNK_REVISIONS, CheckReport, PruneReport

__all__ = ["SqlitePersistence"]


class SqlitePersistence:
    """A SQLite database file.

    Args:
        path: The database file (created with its directory if missing).
        url: The URL it was named by, for messages.
    """

    def __init__(self, store: _core.SqliteStore, path: Path, url: str) -> None:
        self._store = store
        self.path = path
        self.url = url

    @classmethod
    async def open(cls, path: Path, url: str) -> SqlitePersistence:
        """Open (creating if needed) the database at ``path``.

        Raises:
            IncompatibleDatabaseError: another process has it open, or its format is newer.
            PersistenceError: I/O or SQLite failure.
        """
        store = await asyncio.to_thread(_core.SqliteStore, path)
        return cls(store, path, url)

    async def load(self) -> _core.LoadedState:
        """Rebuild the state from the log (see ``Persistence.load``)."""
        return await asyncio.to_thread(self._store.load)

    async def write_batch(self, batch: _core.PersistBatch) -> None:
        """Write one batch in one SQLite transaction."""
        await asyncio.to_thread(self._store.write_batch, batch)

    async def get_global(self, name: str) -> bytes | None:
        """A named global value, or ``None``."""
        value = await asyncio.to_thread(self._store.get_global, name)
        return None if value is None else bytes(value)

    async def set_global(self, name: str, value: bytes) -> None:
        """Durably set a named global value."""
        await asyncio.to_thread(self._store.set_global, name, value)

    async def read_documents(self, ids: list[str], ts: int) -> dict[str, bytes | None]:
        """The stored value of each document at snapshot ``ts`` (``None``: absent/deleted)."""
        known = [(text, _core.id_bytes(text)) for text in ids]
        raw = [b for _, b in known if b is not None]
        values = iter(await asyncio.to_thread(self._store.read_documents, raw, ts))
        return {text: None if b is None else next(values) for text, b in known}

    async def read_index_range(
        self, index_id: int, start: bytes, end: bytes, ts: int, limit: int = 1000
    ) -> list[tuple[bytes, bytes]]:
        """Live entries of an index with ``start <= key < end`` at ``ts``, in key order."""
        rows = await asyncio.to_thread(
            self._store.read_index_range, index_id, start, end, ts, limit
        )
        return [(bytes(k), bytes(d)) for k, d in rows]

    async def row_counts(self) -> tuple[int, int, int]:
        """Rows in ``(documents, indexes, commits)``."""
        return await asyncio.to_thread(self._store.row_counts)

    async def prune(self, engine: _core.Engine, cutoff: int) -> PruneReport:
        """Delete rows no snapshot at or after ``cutoff`` needs (see ``Persistence.prune``).

        Each chunk is one short transaction on the writer's connection, between commits.
        """
        report = PruneReport()
        while True:
            chunk = await asyncio.to_thread(
                self._store.prune, engine, cutoff, PRUNE_CHUNK_REVISIONS
            )
            report.add(chunk)
            if chunk["done"]:
                return report

    async def check(self, engine: _core.Engine) -> CheckReport:
        """Verify every index entry against the live documents."""
        return await asyncio.to_thread(self._store.check, engine)

    def start_worker(self, engine: _core.Engine) -> _core.GroupCommitWorker:
        """Start the core's group-commit worker writing to this database.

        See ``reactive.db.flusher.WorkerFlusher``.
        """
        return self._store.start_worker(engine)

    async def close(self) -> None:
        """Close the file and release the lock."""
        await asyncio.to_thread(self._store.close)
