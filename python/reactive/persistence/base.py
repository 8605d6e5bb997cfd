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
:meth:`LogSource.read_log_since`, learning that there is more to read from
:meth:`LogSource.wait_log`. SQLite stays single-process and is no ``LogSource``.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from reactive import _core
from reactive.errors import PersistenceError

__all__ = [
    "LOG_CHANNEL",
    "LOG_SLICE_BYTES",
    "LOG_SLICE_COMMITS",
    "PRUNE_CHUNK_REVISIONS",
    "RETAINED_TS",
    "CheckReport",
    "CommitRow",
    "DocumentRow",
    "LogSlice",
    "LogSource",
    "LogWatch",
    "Persistence",
    "PruneReport",
    "catalog_token",
    "check_log_poll_s",
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
LOG_CHANNEL = "reactive_log"
"""The PostgreSQL ``NOTIFY`` channel a writer's batch transaction signals (payload: the
``max_ts`` global after the batch, decimal text)."""

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

    async def wait_log(self, after_ts: int, timeout_s: float) -> int:
        """Wait until the log has something past ``after_ts``, or ``timeout_s`` passes.

        Returns, as soon as it is known, the newest ``max_ts`` (u64 ns) once it is past
        ``after_ts``; or after ``timeout_s`` the newest ``max_ts`` known then, which may be
        ``<= after_ts``. A catalog change without a commit (a new table or index, a
        dropped index) wakes it too, returning the current ``max_ts``: whatever it returns,
        the caller then reads with :meth:`read_log_since`, whose slice carries the catalog.

        What wakes a waiter: on PostgreSQL a ``NOTIFY`` on :data:`LOG_CHANNEL`, which the
        writer sends from each batch's transaction (so only once it commits), received on
        one ``LISTEN`` connection per persistence object, opened on the first call; the
        ``max_ts`` and ``catalog`` globals are also read after it (re)connects and every
        ``log_poll_s`` (default 1 s) while waiting, since notifications sent while it is
        down are lost. On MySQL the waiter reads ``max_ts`` and the catalog's MD5 every
        ``log_poll_s`` (default 0.05 s). A catalog change wakes a waiter when it is newer
        than what this object's last :meth:`read_log_since` or ``load`` returned (or than
        the previous ``wait_log`` reported): ``after_ts`` should come from this object's
        reads. Other globals (``set_global``: the schema, readiness rows) wake no one.

        Server errors are not raised: a failed read of the globals is tried again at the
        next interval (PostgreSQL reopens its ``LISTEN`` connection in the background, with
        backoff up to 1 s) and ``wait_log`` returns at the timeout with what it knows; the
        next :meth:`read_log_since` reports them. Cancelling it leaves nothing behind.

        Args:
            after_ts: The last commit the caller has (u64 ns).
            timeout_s: Longest wait in seconds (``<= 0``: look once, without waiting).
                Past it, one last read of the globals may take one query's time.

        Raises:
            PersistenceError: the persistence is closed (also when closed while waiting).
        """
        ...

    def heard_of(self, ts: int) -> None:
        """Commit ``ts`` is durable (its writer answered a forwarded transaction with it).

        A :meth:`wait_log` for an earlier timestamp returns now instead of at its next
        notification or poll. ``ts`` must be durable: a waiter woken for one that is not
        finds nothing new to read.
        """
        ...


def catalog_token(value: bytes | None) -> str | None:
    """The MD5 of a stored ``catalog`` value, in lowercase hex (``None``: no catalog).

    The same as the servers' ``md5(value)`` / ``MD5(value)``, which waiters poll to see a
    catalog change.
    """
    return None if value is None else hashlib.md5(value, usedforsecurity=False).hexdigest()


LEASE_TIMEOUT_S = 3.0
"""Default ``lease_timeout_s``: how long the database server keeps the writer lease of a
process it no longer hears from (seconds)."""


def check_lease_timeout_s(value: float) -> float:
    """``value`` as a lease time-out in seconds (1 to 3600).

    Raises:
        ValueError: not a number from 1 to 3600.
    """
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"lease_timeout_s must be seconds from 1 to 3600, not {value!r}") from None
    if not 1.0 <= seconds <= 3600.0:
        raise ValueError(f"lease_timeout_s must be seconds from 1 to 3600, not {value!r}")
    return seconds


def check_log_poll_s(value: float) -> float:
    """``value`` as a poll interval in seconds.

    Raises:
        ValueError: it is not a finite positive number.
    """
    poll_s = float(value)
    if not math.isfinite(poll_s) or poll_s <= 0:
        raise ValueError(f"log_poll_s must be a positive number of seconds, not {value!r}")
    return poll_s


_UNSET: Any = object()


class LogWatch:
    """What a :class:`LogSource` knows of the log's head, shared by its ``wait_log`` calls.

    The server backends feed it what they learn — notifications (:meth:`notified`), polls of
    the globals (:meth:`polled`) and their own reads (:meth:`reading`, :meth:`read`) — and
    their waiters check :meth:`ready` and sleep on :attr:`changed`.

    A catalog change is an *event*, numbered: a waiter wakes for one that is newer than
    what the last read began after (a read's snapshot is taken after it begins, so it may
    hold the change or not: the waiter wakes at most once for nothing) and than what the
    previous ``wait_log`` reported. A ``max_ts`` past the waiter's ``after_ts`` wakes it
    whatever the events.

    Attributes:
        max_ts: The newest ``max_ts`` known (u64 ns; 0 before anything is known).
        closed: The persistence was closed: waiters raise ``PersistenceError``.
    """

    def __init__(self, what: str) -> None:
        self._what = what
        self.max_ts = 0
        self.closed = False
        self._events = 0
        self._catalog_event = 0
        self._seen = 0
        self._catalog: Any = _UNSET
        self._changed: asyncio.Event | None = None

    @property
    def changed(self) -> asyncio.Event:
        """Set at the next change (a new one for each change): ``await changed.wait()``."""
        if self._changed is None:
            self._changed = asyncio.Event()
        return self._changed

    def _wake(self) -> None:
        if self._changed is not None:
            event, self._changed = self._changed, None
            event.set()

    def check_open(self) -> None:
        """Raise ``PersistenceError`` when the persistence is closed."""
        if self.closed:
            raise PersistenceError(f"{self._what}: the database is closed")

    def close(self) -> None:
        """Mark it closed and wake every waiter (they raise)."""
        self.closed = True
        self._wake()

    def seen(self) -> int:
        """The event a waiter starting now has seen (pass it to :meth:`ready`)."""
        return self._seen

    def ready(self, after_ts: int, seen: int) -> bool:
        """Whether a waiter for ``after_ts`` that has seen event ``seen`` should return."""
        return self.max_ts > after_ts or self._catalog_event > seen

    def returned(self) -> None:
        """A waiter returns: the events so far are reported."""
        self._seen = max(self._seen, self._events)

    def notified(self, max_ts: int | None) -> None:
        """A notification of a batch with ``max_ts`` (``None``: unreadable payload).

        One that does not raise ``max_ts`` is a catalog change (a batch without commits).
        """
        self._events += 1
        if max_ts is not None and max_ts > self.max_ts:
            self.max_ts = max_ts
        else:
            self._catalog_event = self._events
        self._wake()

    def heard_of(self, max_ts: int) -> None:
        """A commit at ``max_ts`` is durable (its writer said so): waiters past it wake."""
        if max_ts > self.max_ts:
            self.max_ts = max_ts
            self._wake()

    def polled(self, max_ts: int, catalog: str | None) -> None:
        """A read of the ``max_ts`` global and the catalog's :func:`catalog_token`."""
        changed = max_ts > self.max_ts
        self.max_ts = max(self.max_ts, max_ts)
        if self._catalog is not _UNSET and catalog != self._catalog:
            self._events += 1
            self._catalog_event = self._events
            changed = True
        self._catalog = catalog
        if changed:
            self._wake()

    def reading(self) -> int:
        """A read begins: returns its mark, for :meth:`read`."""
        return self._events

    def read(self, mark: int, max_ts: int, catalog: bytes | None) -> None:
        """A read begun at ``mark`` returned ``max_ts`` and this catalog (stored bytes)."""
        self._seen = max(self._seen, mark)
        self._catalog = catalog_token(catalog)
        if max_ts > self.max_ts:
            self.max_ts = max_ts
            self._wake()
