"""Fixtures for the persistence backends: a fresh database per test on each backend.

* ``backend_url`` is parametrized over ``sqlite``, ``postgres`` and ``mysql``: a SQLite file
  in the test's temporary directory, or a database ``reactive_t_<random>`` created on the
  PostgreSQL / MariaDB server named by ``REACTIVE_TEST_POSTGRES_URL`` /
  ``REACTIVE_TEST_MYSQL_URL`` (connected through the server's ``reactive_test`` database)
  and dropped at teardown. A server backend is skipped only when its variable is unset.
* ``server_url`` is the same for the two server backends only (leases, fencing).
* :class:`RawDb` runs SQL on any backend's tables directly through its driver (``?``
  placeholders on every backend), for tests that inspect or damage what is stored.

Source: ARCHITECTURE.md ("Persistence"), ``python/reactive/persistence/``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pickle
import secrets
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest

ENV = {"postgres": "REACTIVE_TEST_POSTGRES_URL", "mysql": "REACTIVE_TEST_MYSQL_URL"}
BACKENDS = ["sqlite", "postgres", "mysql"]
SERVER_BACKENDS = ["postgres", "mysql"]


def kind_of(url: str) -> str:
    """``sqlite``, ``postgres`` or ``mysql``."""
    scheme = urlsplit(url).scheme
    if scheme in ("postgresql", "postgres"):
        return "postgres"
    if scheme == "mysql":
        return "mysql"
    return "sqlite"


def with_database(url: str, database: str) -> str:
    """``url`` naming another database on the same server."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + database, parts.query, parts.fragment))


def server_url_from_env(kind: str) -> str:
    """The admin URL of a server backend, or skip the test when its variable is unset."""
    url = os.environ.get(ENV[kind])
    if not url:
        pytest.skip(f"{ENV[kind]} is not set: the {kind} backend is not tested")
    return url


# -- creating and dropping databases ---------------------------------------------------------


async def _pg_connect(url: str) -> Any:
    import asyncpg  # type: ignore[import-untyped]

    parts = urlsplit(url)
    return await asyncpg.connect(
        host=parts.hostname,
        port=parts.port or 5432,
        user=parts.username,
        password=parts.password,
        database=parts.path.lstrip("/"),
        timeout=30,
    )


async def _my_connect(url: str, autocommit: bool = True) -> Any:
    import asyncmy

    parts = urlsplit(url)
    return await asyncmy.connect(
        host=parts.hostname,
        port=parts.port or 3306,
        user=parts.username or "root",
        password=parts.password or "",
        db=parts.path.lstrip("/"),
        autocommit=autocommit,
        connect_timeout=30,
    )


async def create_database(admin_url: str) -> str:
    """Create ``reactive_t_<random>`` on the server of ``admin_url``; returns its URL."""
    name = f"reactive_t_{secrets.token_hex(6)}"
    if kind_of(admin_url) == "postgres":
        conn = await _pg_connect(admin_url)
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()
    else:
        conn = await _my_connect(admin_url)
        try:
            async with conn.cursor() as cur:
                await cur.execute(f"CREATE DATABASE `{name}`")
        finally:
            conn.close()
    return with_database(admin_url, name)


async def drop_database(admin_url: str, url: str) -> None:
    """Drop the database ``url`` names (closing whatever is still connected to it)."""
    name = urlsplit(url).path.lstrip("/")
    assert name.startswith("reactive_t_"), name
    if kind_of(admin_url) == "postgres":
        conn = await _pg_connect(admin_url)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()
    else:
        conn = await _my_connect(admin_url)
        try:
            async with conn.cursor() as cur:
                # Connections left by a killed test would hold metadata locks.
                await cur.execute(
                    "SELECT id FROM information_schema.processlist WHERE db = %s", (name,)
                )
                for (pid,) in await cur.fetchall():
                    with contextlib.suppress(Exception):
                        await cur.execute(f"KILL {int(pid)}")
                await cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
        finally:
            conn.close()


@contextlib.asynccontextmanager
async def fresh_database(kind: str, tmp_path: Path) -> AsyncIterator[str]:
    """A new empty database of ``kind``; a server database is dropped on exit."""
    if kind == "sqlite":
        yield f"sqlite:///{tmp_path / 'db.sqlite3'}"
        return
    admin = server_url_from_env(kind)
    url = await create_database(admin)
    try:
        yield url
    finally:
        await drop_database(admin, url)


@pytest.fixture(params=BACKENDS)
async def backend_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A fresh, empty database URL on each backend (ids ``sqlite``, ``postgres``, ``mysql``)."""
    async with fresh_database(request.param, tmp_path) as url:
        yield url


@pytest.fixture(params=SERVER_BACKENDS)
async def server_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A fresh, empty database URL on each server backend (``postgres``, ``mysql``)."""
    async with fresh_database(request.param, tmp_path) as url:
        yield url


# -- raw access to the stored tables ---------------------------------------------------------


_SQLITE_SERVER = r"""
import pickle, sqlite3, sys
path = sys.argv[1]
inp, out = sys.stdin.buffer, sys.stdout.buffer
while True:
    try:
        sql, args, write = pickle.load(inp)
    except EOFError:
        break
    try:
        if write:
            con = sqlite3.connect(path, isolation_level=None, timeout=30)
            result = con.execute(sql, args).rowcount
        else:
            con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
            result = con.execute(sql, args).fetchall()
        con.close()
        reply = (True, result)
    except Exception as exc:
        reply = (False, repr(exc))
    pickle.dump(reply, out)
    out.flush()
"""


class _SqliteServer:
    """SQLite statements run in a helper process.

    Never in this process: ``reactive``'s core links its own copy of SQLite, and a second
    copy in the same process (Python's ``sqlite3``) breaks SQLite's POSIX locking (closing
    one of its connections releases the core's locks, and a read-write one deletes the
    write-ahead log under the core's feet). Reads use read-only connections, which never
    checkpoint or delete the log.
    """

    def __init__(self, path: str) -> None:
        self._proc = subprocess.Popen(
            [sys.executable, "-c", _SQLITE_SERVER, path],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )

    def call(self, sql: str, args: tuple[Any, ...], write: bool) -> Any:
        assert self._proc.stdin is not None and self._proc.stdout is not None
        pickle.dump((sql, args, write), self._proc.stdin)
        self._proc.stdin.flush()
        ok, result = pickle.load(self._proc.stdout)
        if not ok:
            raise sqlite3.Error(result)
        return result

    def close(self) -> None:
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._proc.stdin.close()
        self._proc.wait(timeout=30)
        self._proc.stdout.close()


class RawDb:
    """SQL straight to a backend's tables, bypassing ``reactive`` (autocommit).

    Statements use ``?`` placeholders on every backend; ``fetch`` reads, ``execute`` writes.
    Binary columns come back as ``bytes``.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self.kind = kind_of(url)
        self._conn: Any = None

    async def __aenter__(self) -> RawDb:
        if self.kind == "postgres":
            self._conn = await _pg_connect(self.url)
        elif self.kind == "mysql":
            self._conn = await _my_connect(self.url)
        else:
            self._conn = _SqliteServer(self.url[len("sqlite:///") :])
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.kind == "postgres":
            await self._conn.close()
        else:
            self._conn.close()

    def _sql(self, sql: str) -> str:
        if self.kind == "postgres":
            pieces = sql.split("?")
            out = pieces[0]
            for i, piece in enumerate(pieces[1:], start=1):
                out += f"${i}{piece}"
            return out
        if self.kind == "mysql":
            return sql.replace("?", "%s")
        return sql

    @staticmethod
    def _row(row: Sequence[Any]) -> tuple[Any, ...]:
        return tuple(bytes(v) if isinstance(v, (bytearray, memoryview)) else v for v in row)

    async def fetch(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        """All rows of a query."""
        sql = self._sql(sql)
        if self.kind == "postgres":
            rows = await self._conn.fetch(sql, *args)
        elif self.kind == "mysql":
            async with self._conn.cursor() as cur:
                await cur.execute(sql, args)
                rows = await cur.fetchall()
        else:
            rows = await asyncio.to_thread(self._conn.call, sql, args, False)
        return [self._row(r) for r in rows]

    async def execute(self, sql: str, *args: Any) -> int:
        """Run a statement; returns the number of rows it changed."""
        sql = self._sql(sql)
        if self.kind == "postgres":
            status = await self._conn.execute(sql, *args)
            last = status.split()[-1]
            return int(last) if last.isdigit() else 0
        if self.kind == "mysql":
            async with self._conn.cursor() as cur:
                return int(await cur.execute(sql, args))
        return int(await asyncio.to_thread(self._conn.call, sql, args, True))

    async def scalar(self, sql: str, *args: Any) -> Any:
        """The first column of the first row, or ``None``."""
        rows = await self.fetch(sql, *args)
        return rows[0][0] if rows else None

    async def get_global(self, name: str) -> bytes | None:
        """A ``globals`` value as bytes."""
        value = await self.scalar("SELECT value FROM globals WHERE name = ?", name)
        if value is None:
            return None
        return value.encode() if isinstance(value, str) else bytes(value)

    async def set_global(self, name: str, value: bytes) -> None:
        """Overwrite an existing ``globals`` row."""
        changed = await self.execute("UPDATE globals SET value = ? WHERE name = ?", value, name)
        assert changed == 1, f"no globals row {name!r}"

    async def tables(self) -> set[str]:
        """The names of the tables of the database."""
        if self.kind == "postgres":
            rows = await self.fetch(
                "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
            )
        elif self.kind == "mysql":
            rows = await self.fetch("SHOW TABLES")
        else:
            rows = await self.fetch("SELECT name FROM sqlite_master WHERE type = 'table'")
        return {r[0] for r in rows}

    @property
    def key_sql(self) -> str:
        """The SQL expression of an ``indexes`` row's whole key (without the index prefix)."""
        if self.kind == "postgres":
            return "key_prefix || key_suffix"
        if self.kind == "mysql":
            return "CONCAT(key_prefix, key_suffix)"
        return "key"


@pytest.fixture
def raw_db() -> type[RawDb]:
    """:class:`RawDb`, for test modules (``async with raw_db(url) as raw: ...``)."""
    return RawDb
