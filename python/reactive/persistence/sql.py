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
    "parse_sql_url",
    "split_key",
]

KEY_PREFIX_BYTES = 1024
"""Bytes of an index key stored in the indexed ``key_prefix`` column."""
LEASE_EPOCH = "lease_epoch"
"""The ``globals`` row that fences writers."""
LOAD_BATCH_ROWS = 5000
"""Rows handed to the core per call while loading."""


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
