"""The storage contract every persistence backend implements.

A backend holds the transaction log (ARCHITECTURE.md): ``documents`` (one row per document
revision), ``indexes`` (one row per index entry), ``commits`` (one row per commit, counting
its rows) and ``globals`` (format version, highest timestamp, catalog, named values). It is
the only commit point: a batch is durable when :meth:`Persistence.write_batch` returns.

Errors: backends raise ``PersistenceError`` (driver errors chained as ``__cause__``),
``CorruptionError`` for a record that fails verification, ``IncompatibleDatabaseError``
for a newer format or a database held by another process.

Tailing (docs/design/scale-out.md): the SQL server backends (PostgreSQL, MySQL) are also a
:class:`LogSource`: several processes share one database, one writer holding the lease and
readers opened without it (``open_persistence(url, lease=False)``) following the log with
:meth:`LogSource.read_log_since`. SQLite stays single-process and is no ``LogSource``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from reactive import _core

__all__ = [
    "LOG_SLICE_BYTES",
    "LOG_SLICE_COMMITS",
    "PRUNE_CHUNK_REVISIONS",
    "RETAINED_TS",
    "CheckReport",
    "CommitRow",
    "DocumentRow",
    "LogSlice",
    "LogSource",
    "Persistence",
    "PruneReport",
]

CheckReport = dict[str, Any]
"""``{"documents": int, "index_entries": int, "problems": [str]}``."""

RETAINED_TS = "retained_ts"
"""The global holding the timestamp persistence is pruned to (decimal text): snapshots at or
after it are complete; older ones are not readable after a restart."""

PRUNE_CHUNK_REVISIONS = 2000
"""Revisions of the retention window handled per prune transaction."""

LOG_SLICE_COMMITS = 1000
"""Default most commits :meth:`LogSource.read_log_since` returns at once."""
LOG_SLICE_BYTES = 16 * 1024 * 1024
"""Default byte budget (of stored document values) of one :meth:`LogSource.read_log_since`."""

CommitRow = tuple[int, int, int, int]
"""A ``commits`` row as ``_core.Loader.add_commits`` takes it: ``(ts, document_count,
index_entry_count, checksum)``."""
DocumentRow = tuple[int, bytes, int, bytes | None, bool, int | None, int]
"""A ``documents`` row as ``_core.Loader.add_documents`` takes it: ``(ts, id, table_id,
value or None, deleted, prev_ts or None, checksum)``."""


@dataclass(frozen=True)
class LogSlice:
    """Consecutive whole commits of the log after a timestamp, read in one snapshot.

    Attributes:
        catalog_json: The ``catalog`` global in that snapshot (``None``: no table yet).
        max_ts: The ``max_ts`` global (u64 ns; 0 when nothing was ever committed).
        retained_ts: The ``retained_ts`` global (u64 ns; 0 when never pruned).
        commits: Commit rows with ``after_ts < ts <= last_ts``, in ``ts`` order.
        documents: Every document row of those commits (``after_ts < ts <= last_ts``), in
            ``(ts, id)`` order; nothing of a later commit.
        last_ts: The last commit's ``ts`` in the slice, or ``after_ts`` when it is empty.
        more: Commits after ``last_ts`` exist in the snapshot (read again from ``last_ts``).
    """

    catalog_json: str | None
    max_ts: int
    retained_ts: int
    commits: list[CommitRow]
    documents: list[DocumentRow]
    last_ts: int
    more: bool


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

    A PostgreSQL or MySQL database opened without the writer lease (``lease=False``) is
    read-only: ``write_batch``, ``set_global`` and ``prune`` raise ``PersistenceError``.

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


@runtime_checkable
class LogSource(Persistence, Protocol):
    """A :class:`Persistence` whose log other processes can follow (PostgreSQL, MySQL).

    Only the SQL server backends are log sources; test with ``isinstance(p, LogSource)``.
    A follower opens the database without the writer lease (``open_persistence(url,
    lease=False)``: every write then raises ``PersistenceError``), loads it whole, then
    calls :meth:`read_log_since` from the loaded ``max_ts`` on.
    """

    async def read_log_since(
        self,
        after_ts: int,
        max_commits: int = LOG_SLICE_COMMITS,
        max_bytes: int = LOG_SLICE_BYTES,
    ) -> LogSlice:
        """The commits after ``after_ts`` and their document rows, in one snapshot.

        One read-only repeatable-read transaction reads the ``max_ts``, ``catalog`` and
        ``retained_ts`` globals, at most ``max_commits`` commit rows with ``ts > after_ts``
        in ``ts`` order, and their document rows, in the row shapes ``load`` hands to
        ``_core.Loader`` (no index rows: a follower derives its indexes). The slice ends at a
        commit boundary: commits are added while the values of their documents (stored
        bytes) total at most ``max_bytes``, and at least one is added. Rows are returned as
        stored, not verified.

        Args:
            after_ts: The last commit the reader has (u64 ns; 0 for the whole log).
            max_commits: Most commits in the slice (at least 1).
            max_bytes: Byte budget of the slice's document values.

        Raises:
            LogGapError: ``retained_ts > after_ts``: history after ``after_ts`` was pruned;
                the reader must load anew.
            ValueError: ``max_commits < 1``.
            PersistenceError: the server failed.
        """
        ...
