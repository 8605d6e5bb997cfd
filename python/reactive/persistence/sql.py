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
another took over) can no longer commit.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from reactive.errors import PersistenceError

__all__ = [
    "KEY_PREFIX_BYTES",
    "LEASE_EPOCH",
    "LOAD_BATCH_ROWS",
    "SqlUrl",
    "WindowRow",
    "choose_window",
    "format_version",
    "parse_sql_url",
    "recount_commits",
    "split_key",
]

KEY_PREFIX_BYTES = 1024
"""Bytes of an index key stored in the indexed ``key_prefix`` column."""
LEASE_EPOCH = "lease_epoch"
"""The ``globals`` row that fences writers."""
LOAD_BATCH_ROWS = 5000
"""Rows handed to the core per call while loading."""


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
