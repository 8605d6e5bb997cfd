"""What the SQL server backends (PostgreSQL, MySQL) share: key splitting, URLs, leases.

Index keys can be longer than PostgreSQL's B-tree row limit (~2.7 KB) or MySQL's index-key
limit (3072 bytes): a key is stored as ``key_prefix`` (its first :data:`KEY_PREFIX_BYTES`
bytes, indexed), ``key_suffix`` (the rest) and ``key_hash`` (BLAKE2b-128 of the whole key,
which makes rows unique), as Convex does. Ordering by ``(key_prefix, key_suffix)`` is the
order of the whole key, because the prefix is always the first ``min(len, N)`` bytes; range
reads bound ``key_prefix`` for the index and compare the whole key for exactness.

One writer per database: the process holds an advisory lock on a dedicated connection (the
*lease*) and bumps ``globals.lease_epoch``; every commit checks, under a row lock, that the
epoch is still its own, so a process that lost its lease (its connection dropped and
another took over) can no longer commit. Other processes may open the database without the
lease, read-only, and follow the log (``read_log_since``, :func:`slice_log`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from reactive.errors import IncompatibleDatabaseError, LogGapError, PersistenceError
from reactive.persistence.base import RETAINED_TS, CommitRow, DocumentRow, LogSlice

__all__ = [
    "KEY_PREFIX_BYTES",
    "LEASE_EPOCH",
    "LOAD_BATCH_ROWS",
    "LOG_GLOBALS",
    "LOG_PAGE_ROWS",
    "SqlUrl",
    "WindowRow",
    "check_reader_format",
    "choose_window",
    "format_version",
    "log_globals",
    "parse_sql_url",
    "read_only_error",
    "recount_commits",
    "slice_log",
    "split_key",
]

KEY_PREFIX_BYTES = 1024
"""Bytes of an index key stored in the indexed ``key_prefix`` column."""
LEASE_EPOCH = "lease_epoch"
"""The ``globals`` row that fences writers."""
LOAD_BATCH_ROWS = 5000
"""Rows handed to the core per call while loading."""
LOG_PAGE_ROWS = 1000
"""Document rows :func:`slice_log` asks for per query (whole commits: one commit may be
more): what it may read past the byte budget and drop."""
LOG_GLOBALS = ("max_ts", "catalog", RETAINED_TS)
"""The ``globals`` rows a log slice carries."""


WindowRow = tuple[int, bytes, bytes | None, int | None]
"""A revision of the retention window as read: ``(ts, id, value or None, prev_ts or None)``."""


def choose_window(
    rows: list[WindowRow], limit: int, cutoff: int
) -> tuple[list[WindowRow], int, int | None]:
    """Cut a window read with ``ORDER BY ts, id LIMIT limit`` at a commit boundary.

    Returns ``(rows to prune, timestamp pruned through, ts to read whole or None)``: when
    the chunk is full, its last commit is left for the next chunk, unless one commit fills
    the chunk, in which case the caller reads that commit whole (the third value).
    """
    if len(rows) < limit:
        return rows, cutoff, None
    last = rows[-1][0]
    if rows[0][0] == last:
        return rows, last, last
    return [r for r in rows if r[0] < last], last - 1, None


def recount_commits(
    stamps: list[int],
    existing: set[int],
    documents: dict[int, int],
    entries: dict[int, int],
) -> tuple[list[tuple[int, int, int, int]], list[int]]:
    """Commit records to rewrite after rows at ``stamps`` were added or deleted.

    ``documents``/``entries`` count the rows now at each timestamp. Returns ``(updates
    [(document_count, index_entry_count, checksum, ts)], deletes [ts])``: a commit left
    with no rows is deleted.

    Raises:
        CorruptionError: rows sit at a timestamp that has no commit record.
    """
    from reactive.errors import CorruptionError

    updates: list[tuple[int, int, int, int]] = []
    deletes: list[int] = []
    for ts in sorted(set(stamps)):
        d, e = documents.get(ts, 0), entries.get(ts, 0)
        if ts not in existing:
            if d or e:
                raise CorruptionError(f"rows at ts {ts} have no commit record")
            continue
        if d == 0 and e == 0:
            deletes.append(ts)
        else:
            updates.append((d, e, _core_checksum(ts, d, e), ts))
    return updates, deletes


def _core_checksum(ts: int, documents: int, entries: int) -> int:
    from reactive import _core

    return _core.commit_checksum(ts, documents, entries)


def format_version(raw: bytes | None, url: SqlUrl) -> int:
    """The stored ``format_version`` global (0 when absent).

    Raises:
        IncompatibleDatabaseError: it is not a decimal number (not a reactive database, or
            damaged).
    """
    if raw is None:
        return 0
    try:
        return int(raw.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        from reactive.errors import IncompatibleDatabaseError

        raise IncompatibleDatabaseError(
            f"database {url.redacted()} has format_version {raw[:40]!r}, not a number: it is "
            "not a reactive database, or its globals table is damaged"
        ) from None


def split_key(key: bytes) -> tuple[bytes, bytes, bytes]:
    """``(key_prefix, key_suffix, key_hash)`` of an index key."""
    return (
        key[:KEY_PREFIX_BYTES],
        key[KEY_PREFIX_BYTES:],
        hashlib.blake2b(key, digest_size=16).digest(),
    )


@dataclass(frozen=True)
class SqlUrl:
    """The parts of a ``postgresql://`` or ``mysql://`` URL."""

    scheme: str
    host: str
    port: int | None
    user: str | None
    password: str | None
    database: str

    def redacted(self) -> str:
        """The URL without its password (for messages)."""
        auth = f"{self.user}@" if self.user else ""
        port = f":{self.port}" if self.port else ""
        return f"{self.scheme}://{auth}{self.host}{port}/{self.database}"


def parse_sql_url(url: str) -> SqlUrl:
    """Parse a database URL.

    Raises:
        PersistenceError: no host or no database name.
    """
    parts = urlsplit(url)
    database = unquote(parts.path.lstrip("/"))
    if not parts.hostname or not database:
        raise PersistenceError(f"{url!r}: a database URL names a host and a database")
    return SqlUrl(
        scheme=parts.scheme,
        host=parts.hostname,
        port=parts.port,
        user=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
        database=database,
    )


def read_only_error(url: SqlUrl, what: str) -> PersistenceError:
    """The error of a write on a database opened without the writer lease."""
    return PersistenceError(
        f"{what}: database {url.redacted()} was opened read-only, without the writer lease "
        "(lease=False); only the process holding the lease writes"
    )


def log_globals(
    rows: list[tuple[str, bytes]], after_ts: int, url: SqlUrl
) -> tuple[str | None, int, int]:
    """``(catalog_json, max_ts, retained_ts)`` from the :data:`LOG_GLOBALS` rows read.

    Raises:
        LogGapError: ``retained_ts > after_ts``.
    """
    values = {name: bytes(value) for name, value in rows}
    catalog = values.get("catalog")
    max_ts = int(values["max_ts"].decode()) if "max_ts" in values else 0
    retained_ts = int(values[RETAINED_TS].decode()) if RETAINED_TS in values else 0
    if retained_ts > after_ts:
        raise LogGapError(
            f"database {url.redacted()} is pruned through ts {retained_ts}, after the "
            f"reader's position {after_ts}: the history in between is gone; the reader must "
            "load the state anew (load()) and follow from its max_ts",
            after_ts=after_ts,
            retained_ts=retained_ts,
        )
    return (None if catalog is None else catalog.decode()), max_ts, retained_ts


async def slice_log(
    globals_: tuple[str | None, int, int],
    commits: list[CommitRow],
    after_ts: int,
    max_commits: int,
    max_bytes: int,
    fetch_documents: Callable[[int, int], Awaitable[list[DocumentRow]]],
) -> LogSlice:
    """Cut a log slice at a commit boundary within ``max_bytes``.

    ``commits`` are the commit rows with ``ts > after_ts`` in ``ts`` order, up to
    ``max_commits + 1`` (one more tells whether more exist); ``fetch_documents(lo, hi)``
    reads, in the same snapshot, the document rows with ``lo < ts <= hi`` in ``(ts, id)``
    order. Documents are read a few commits at a time (about :data:`LOG_PAGE_ROWS` rows by
    the commits' ``document_count``); commits are added while their values total at most
    ``max_bytes``, at least one.
    """
    catalog_json, max_ts, retained_ts = globals_
    more = len(commits) > max_commits
    commits = commits[:max_commits]
    taken: list[CommitRow] = []
    documents: list[DocumentRow] = []
    used = 0
    i = 0
    while i < len(commits):
        j, rows = i, 0
        while j < len(commits) and (j == i or rows + commits[j][1] <= LOG_PAGE_ROWS):
            rows += commits[j][1]
            j += 1
        low = commits[i - 1][0] if i else after_ts
        page = await fetch_documents(low, commits[j - 1][0])
        k = 0
        for commit in commits[i:j]:
            start, size = k, 0
            # Rows before this commit's ts belong to it or to no commit (which the reader's
            # verification reports); either way they go with it.
            while k < len(page) and page[k][0] <= commit[0]:
                value = page[k][3]
                size += 0 if value is None else len(value)
                k += 1
            if taken and used + size > max_bytes:
                return LogSlice(
                    catalog_json, max_ts, retained_ts, taken, documents, taken[-1][0], True
                )
            used += size
            taken.append(commit)
            documents.extend(page[start:k])
        i = j
    last_ts = taken[-1][0] if taken else after_ts
    return LogSlice(catalog_json, max_ts, retained_ts, taken, documents, last_ts, more)


def check_reader_format(version: int, supported: int, url: SqlUrl) -> None:
    """Refuse a database of a format other than ``supported`` to a reader (``lease=False``).

    A reader never migrates, so an older format is refused as well as a newer one.

    Raises:
        PersistenceError: ``version`` is 0: no writer has initialized the database yet.
        IncompatibleDatabaseError: the format is newer, or older (a writer upgrades it).
    """
    if version == 0:
        raise PersistenceError(
            f"database {url.redacted()} has no reactive tables: no writer has initialized it "
            "yet (a reader, opened with lease=False, never creates them)"
        )
    if version > supported:
        raise IncompatibleDatabaseError(
            f"database {url.redacted()} has format version {version}; this version of "
            f"reactive reads formats up to {supported}: upgrade reactive to open it"
        )
    if version < supported:
        raise IncompatibleDatabaseError(
            f"database {url.redacted()} has format version {version}, older than this "
            f"version of reactive's {supported}: a writer (opened with the lease) upgrades "
            "it; a reader never changes the schema"
        )
