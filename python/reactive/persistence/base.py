"""The storage contract every persistence backend implements.

A backend holds the transaction log (ARCHITECTURE.md): ``documents`` (one row per document
revision), ``indexes`` (one row per index entry), ``commits`` (one row per commit, counting
its rows) and ``globals`` (format version, highest timestamp, catalog, named values). It is
the only commit point: a batch is durable when :meth:`Persistence.write_batch` returns.

Errors: backends raise ``PersistenceError`` (driver errors chained as ``__cause__``),
``CorruptionError`` for a record that fails verification, ``IncompatibleDatabaseError``
for a newer format or a database held by another process.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from reactive import _core

__all__ = ["PRUNE_CHUNK_REVISIONS", "RETAINED_TS", "CheckReport", "Persistence", "PruneReport"]

CheckReport = dict[str, Any]
"""``{"documents": int, "index_entries": int, "problems": [str]}``."""

RETAINED_TS = "retained_ts"
"""The global holding the timestamp persistence is pruned to (decimal text): snapshots at or
after it are complete; older ones are not readable after a restart."""

PRUNE_CHUNK_REVISIONS = 2000
"""Revisions of the retention window handled per prune transaction."""


@dataclass
class PruneReport:
    """What :meth:`Persistence.prune` did: rows deleted and the new retained timestamp."""

    retained_ts: int = 0
    revisions: int = 0
    documents_deleted: int = 0
    index_entries_deleted: int = 0

    def add(self, chunk: dict[str, Any]) -> None:
        """Fold in one chunk's ``{"retained_ts", "revisions", ...}``."""
        self.retained_ts = max(self.retained_ts, int(chunk["retained_ts"]))
        self.revisions += int(chunk["revisions"])
        self.documents_deleted += int(chunk["documents_deleted"])
        self.index_entries_deleted += int(chunk["index_entries_deleted"])


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
            CommitOutcomeUnknownError: contact was lost during the commit and reading it
                back failed: it may or may not be written (the database then stops
                committing until reopened).
            PersistenceError: nothing of the batch was written. Any other exception is
                treated as an unknown outcome.
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

    async def prune(self, engine: _core.Engine, cutoff: int) -> PruneReport:
        """Delete the rows no snapshot at or after ``cutoff`` (u64 ns) needs.

        Those are revisions superseded at or before it, deletions at or before it, and
        their index rows (``reactive_core::log::prune``). Incremental (each revision is
        looked at once) and in short transactions that never block commits for long; the
        ``retained_ts`` global records how far it got, and reopening refuses reads below
        it. Returns what it deleted.
        """
        ...

    async def check(self, engine: _core.Engine) -> CheckReport:
        """Verify every index entry against the live documents, both directions."""
        ...

    async def close(self) -> None:
        """Release the backend (files, connections, the process lock)."""
        ...
