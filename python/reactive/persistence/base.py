"""The storage contract every persistence backend implements.

A backend holds the transaction log (DESIGN.md §2): ``documents`` (one row per document
revision), ``indexes`` (one row per index entry), ``commits`` (one row per commit, counting
its rows) and ``globals`` (format version, highest timestamp, catalog, named values). It is
the only commit point: a batch is durable when :meth:`Persistence.write_batch` returns.

Errors: backends raise ``PersistenceError`` (driver errors chained as ``__cause__``),
``CorruptionError`` for a record that fails verification, ``IncompatibleDatabaseError``
for a newer format or a database held by another process.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from reactive import _core

__all__ = ["CheckReport", "Persistence"]

CheckReport = dict[str, Any]
"""``{"documents": int, "index_entries": int, "problems": [str]}``."""


@runtime_checkable
class Persistence(Protocol):
    """One database's storage.

    Attributes:
        url: The database URL it was opened from (credentials removed).
    """

    url: str

    async def load(self) -> _core.LoadedState:
        """Rebuild the in-memory state from the log, verifying every record.

        Raises:
            CorruptionError: a record fails its checksum, or a commit is torn (names it).
        """
        ...

    async def write_batch(self, batch: _core.PersistBatch) -> None:
        """Write one group-commit batch in one backend transaction; durable on return.

        Raises:
            PersistenceError: nothing of the batch was written.
        """
        ...

    async def get_global(self, name: str) -> bytes | None:
        """A named global value (``cursor_secret``, ``schema``...), or ``None``."""
        ...

    async def set_global(self, name: str, value: bytes) -> None:
        """Durably set a named global value."""
        ...

    async def read_documents(self, ids: list[str], ts: int) -> dict[str, bytes | None]:
        """The stored value of each document at snapshot ``ts`` (``None``: absent/deleted)."""
        ...

    async def read_index_range(
        self, index_id: int, start: bytes, end: bytes, ts: int, limit: int = 1000
    ) -> list[tuple[bytes, bytes]]:
        """Live entries of an index with ``start <= key < end`` at ``ts``, in key order.

        Returns ``[(key without the index prefix, document id bytes)]``.
        """
        ...

    async def check(self, engine: _core.Engine) -> CheckReport:
        """Verify every index entry against the live documents, both directions."""
        ...

    async def close(self) -> None:
        """Release the backend (files, connections, the process lock)."""
        ...
