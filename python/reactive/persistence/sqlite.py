"""The embedded default backend: SQLite through rusqlite in the Rust core.

The core does the work with the GIL released; this adapter only moves it off the event loop
(``asyncio.to_thread``). Journal WAL, ``synchronous=FULL``; one process at a time (a lock
file beside the database). Source: ``rust/core/src/sqlite.rs``.
"""

from __future__ import annotations

import asyncio
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
