"""The embedded default backend: SQLite through rusqlite in the Rust core.

The core does the work with the GIL released; this adapter only moves it off the event loop
(``asyncio.to_thread``). Journal WAL, ``synchronous=FULL``; one process at a time (a lock
file beside the database). Source: ``rust/core/src/sqlite.rs``.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from pathlib import Path

from reactive import _core
from reactive.persistence.base import CheckReport

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

    def _read_connection(self) -> sqlite3.Connection:
        return sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, check_same_thread=False)

    async def read_documents(self, ids: list[str], ts: int) -> dict[str, bytes | None]:
        """The stored value of each document at snapshot ``ts`` (``None``: absent/deleted)."""

        def read() -> dict[str, bytes | None]:
            out: dict[str, bytes | None] = {}
            with contextlib.closing(self._read_connection()) as conn:
                for text in ids:
                    raw = _core.id_bytes(text)
                    row = None
                    if raw is not None:
                        row = conn.execute(
                            "SELECT value FROM documents WHERE id = ? AND ts <= ? "
                            "ORDER BY ts DESC LIMIT 1",
                            (raw, ts),
                        ).fetchone()
                    out[text] = None if row is None or row[0] is None else bytes(row[0])
            return out

        return await asyncio.to_thread(read)

    async def read_index_range(
        self, index_id: int, start: bytes, end: bytes, ts: int, limit: int = 1000
    ) -> list[tuple[bytes, bytes]]:
        """Live entries of an index with ``start <= key < end`` at ``ts``, in key order."""

        def read() -> list[tuple[bytes, bytes]]:
            with contextlib.closing(self._read_connection()) as conn:
                rows = conn.execute(
                    "SELECT key, doc_id, deleted FROM indexes i WHERE index_id = ? AND ts = "
                    "(SELECT max(ts) FROM indexes j WHERE j.index_id = i.index_id AND j.key = "
                    "i.key AND j.ts <= ?) AND key >= ? AND key < ? ORDER BY key",
                    (index_id, ts, start, end),
                ).fetchall()
            return [(bytes(k), bytes(d)) for k, d, deleted in rows if not deleted][:limit]

        return await asyncio.to_thread(read)

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
