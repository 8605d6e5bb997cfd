"""Format versions and migrations at open, on every backend.

* A fresh database is created at format version 1 with the log tables.
* Opening an existing database again migrates nothing and changes nothing.
* A database of a newer format (``globals.format_version`` set to 99 behind reactive's back)
  is refused with ``IncompatibleDatabaseError`` naming both versions, and left untouched;
  a version that is not a number is refused too (as a ``PersistenceError``).

Source: docs/design/log-records.md ("globals rows: format_version ... a database newer than
the code is refused"), python/reactive/persistence/{postgres,mysql}.py ``MIGRATIONS``,
rust/core/src/sqlite.rs.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import reactive
from reactive.errors import IncompatibleDatabaseError, PersistenceError

MakeApp = Callable[[dict[str, str]], Path]
RawDb = Any  # the ``raw_db`` fixture of conftest.py

LOG_TABLES = {"globals", "commits", "documents", "indexes"}

APP = """
from reactive import mutation, query


@mutation
async def put(ctx, n):
    return await ctx.db.insert("items", {"n": n})


@query
async def all(ctx):
    return await ctx.db.query("items").collect()
"""

SCHEMA = """
from reactive import define_schema, define_table, v

schema = define_schema({"items": define_table({"n": v.int64()}).index("by_n", ["n"])})
"""


@pytest.fixture
def app(make_app: MakeApp) -> Path:
    return make_app({"m.py": APP, "schema.py": SCHEMA})


async def _state(raw_db: RawDb, url: str) -> dict[str, Any]:
    """What is stored: tables, globals (but the lease epoch), row counts."""
    async with raw_db(url) as raw:
        globals_ = {
            _text(name): (value.encode() if isinstance(value, str) else bytes(value))
            for name, value in await raw.fetch("SELECT name, value FROM globals")
            if _text(name) != "lease_epoch"
        }
        return {
            "tables": await raw.tables(),
            "globals": globals_,
            "rows": {
                t: int(await raw.scalar(f"SELECT count(*) FROM {t}"))
                for t in ("commits", "documents", "indexes")
            },
        }


def _text(name: str | bytes) -> str:
    # MySQL keeps global names as VARBINARY (exact bytes): its driver returns bytes.
    return name.decode() if isinstance(name, (bytes, bytearray)) else name


async def test_a_fresh_database_gets_format_version_1(
    backend_url: str, raw_db: RawDb, app: Path
) -> None:
    async with reactive.open(backend_url, app=app) as db:
        await db.mutation("m:put", {"n": 1})
    async with raw_db(backend_url) as raw:
        assert await raw.get_global("format_version") == b"1"
        assert await raw.tables() >= LOG_TABLES


async def test_opening_again_is_idempotent(backend_url: str, raw_db: RawDb, app: Path) -> None:
    async with reactive.open(backend_url, app=app) as db:
        for n in range(5):
            await db.mutation("m:put", {"n": n})
        docs = await db.query("m:all")
    first = await _state(raw_db, backend_url)
    assert first["globals"]["format_version"] == b"1"
    for _ in range(2):
        async with reactive.open(backend_url, app=app) as db:
            assert await db.query("m:all") == docs
        assert await _state(raw_db, backend_url) == first
    # Without the app too (as the command-line tools open it).
    async with reactive.open(backend_url) as db:
        pass
    assert await _state(raw_db, backend_url) == first


async def test_a_newer_format_is_refused(backend_url: str, raw_db: RawDb, app: Path) -> None:
    async with reactive.open(backend_url, app=app) as db:
        await db.mutation("m:put", {"n": 1})
        docs = await db.query("m:all")
    async with raw_db(backend_url) as raw:
        await raw.set_global("format_version", b"99")
    before = await _state(raw_db, backend_url)
    for _ in range(2):  # refused every time: the refused open released the database
        with pytest.raises(IncompatibleDatabaseError) as info:
            await reactive.open(backend_url, app=app)
        message = str(info.value)
        assert "99" in message, message
        assert "1" in message.replace("99", ""), message
        assert "format" in message, message
    with pytest.raises(IncompatibleDatabaseError):
        await reactive.open(backend_url)
    assert await _state(raw_db, backend_url) == before  # untouched, still version 99
    # Back at the version this code knows, it opens with its data.
    async with raw_db(backend_url) as raw:
        await raw.set_global("format_version", b"1")
    async with reactive.open(backend_url, app=app) as db:
        assert await db.query("m:all") == docs
        assert (await db.check())["problems"] == []


async def test_a_format_version_that_is_not_a_number_is_refused(
    backend_url: str, raw_db: RawDb, app: Path
) -> None:
    async with reactive.open(backend_url, app=app) as db:
        await db.mutation("m:put", {"n": 1})
    async with raw_db(backend_url) as raw:
        await raw.set_global("format_version", b"one")
    with pytest.raises(PersistenceError) as info:
        await reactive.open(backend_url, app=app)
    assert "format" in str(info.value)
    async with raw_db(backend_url) as raw:
        assert await raw.get_global("format_version") == b"one"
