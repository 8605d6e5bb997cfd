"""One writer per PostgreSQL / MySQL database: the writer lease and its fencing epoch.

* A second ``reactive.open`` of a database that is open (in this process or another) is
  refused with ``IncompatibleDatabaseError`` naming another process; once the first is
  closed, it opens.
* A process that lost its lease stops committing: when ``globals.lease_epoch`` moves on (as
  another writer taking over does), its next commit fails with ``PersistenceError`` naming
  the lease, and nothing of it is stored.
* A takeover for real: the first writer's lease connection dies, a second writer opens and
  commits, the first is fenced off.

Source: python/reactive/persistence/sql.py ("One writer per database"), postgres.py, mysql.py.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

import reactive
from reactive.errors import IncompatibleDatabaseError, PersistenceError

MakeApp = Callable[[dict[str, str]], Path]
RawDb = Any  # the ``raw_db`` fixture of conftest.py

APP = """
from reactive import mutation, query


@mutation
async def put(ctx, n):
    return await ctx.db.insert("items", {"n": n})


@query
async def ns(ctx):
    return sorted(d["n"] for d in await ctx.db.query("items").collect())
"""

OPENER = """
import asyncio
import sys

import reactive


async def main():
    try:
        db = await reactive.open(sys.argv[1])
    except Exception as exc:
        print(f"{type(exc).__name__}: {exc}")
        return 3
    await db.close()
    print("opened")
    return 0


sys.exit(asyncio.run(main()))
"""


@pytest.fixture
def app(make_app: MakeApp) -> Path:
    return make_app({"m.py": APP})


async def _stored(raw_db: RawDb, url: str) -> tuple[int, int, int]:
    async with raw_db(url) as raw:
        return (
            int(await raw.scalar("SELECT count(*) FROM commits")),
            int(await raw.scalar("SELECT count(*) FROM documents")),
            int(await raw.scalar("SELECT count(*) FROM indexes")),
        )


async def _epoch(raw_db: RawDb, url: str) -> int:
    async with raw_db(url) as raw:
        return int((await raw.get_global("lease_epoch") or b"0").decode())


async def test_second_open_in_this_process_is_refused(server_url: str, app: Path) -> None:
    first = await reactive.open(server_url, app=app)
    try:
        await first.mutation("m:put", {"n": 1})
        with pytest.raises(IncompatibleDatabaseError) as info:
            await reactive.open(server_url, app=app)
        assert "another process" in str(info.value)
        assert "reactive:reactive" not in str(info.value)  # no password in messages
        # The holder is unaffected.
        await first.mutation("m:put", {"n": 2})
        assert await first.query("m:ns") == [1, 2]
    finally:
        await first.close()
    async with reactive.open(server_url, app=app) as second:
        assert await second.query("m:ns") == [1, 2]
        await second.mutation("m:put", {"n": 3})
    async with reactive.open(server_url, app=app) as third:
        assert await third.query("m:ns") == [1, 2, 3]


async def test_second_process_is_refused(server_url: str, app: Path, tmp_path: Path) -> None:
    script = tmp_path / "opener.py"
    script.write_text(textwrap.dedent(OPENER))

    def try_open() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, str(script), server_url], capture_output=True, text=True, timeout=60
        )

    async with reactive.open(server_url, app=app) as db:
        await db.mutation("m:put", {"n": 1})
        result = await asyncio.to_thread(try_open)
        assert result.returncode == 3, result.stdout + result.stderr
        assert result.stdout.startswith(IncompatibleDatabaseError.__name__), result.stdout
        assert "another process" in result.stdout
        await db.mutation("m:put", {"n": 2})
        assert await db.query("m:ns") == [1, 2]
    result = await asyncio.to_thread(try_open)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "opened"


async def test_each_open_takes_a_new_epoch(server_url: str, app: Path, raw_db: RawDb) -> None:
    epochs = []
    for _ in range(3):
        async with reactive.open(server_url, app=app) as db:
            epochs.append(await _epoch(raw_db, server_url))
            await db.mutation("m:put", {"n": len(epochs)})
    assert epochs == sorted(set(epochs)) and len(epochs) == 3


async def test_a_process_that_lost_its_lease_stops_committing(
    server_url: str, app: Path, raw_db: RawDb
) -> None:
    db = await reactive.open(server_url, app=app)
    try:
        await db.mutation("m:put", {"n": 1})
        await db.mutation("m:put", {"n": 2})
        before = await _stored(raw_db, server_url)
        before_ts = db.timestamp
        # Another writer took over: it moved the epoch on.
        epoch = await _epoch(raw_db, server_url)
        async with raw_db(server_url) as raw:
            await raw.set_global("lease_epoch", str(epoch + 1).encode())

        with pytest.raises(PersistenceError) as info:
            await db.mutation("m:put", {"n": 3})
        assert "lease" in str(info.value)
        # Nothing of it is stored or visible, and it stays that way.
        assert await _stored(raw_db, server_url) == before
        assert await db.query("m:ns") == [1, 2]
        assert db.timestamp == before_ts
        with pytest.raises(PersistenceError) as info:
            await db.mutation("m:put", {"n": 4})
        assert "lease" in str(info.value)
        assert await _stored(raw_db, server_url) == before
        assert await db.query("m:ns") == [1, 2]
    finally:
        await asyncio.wait_for(db.close(), 30)
    async with reactive.open(server_url, app=app) as db:
        assert await db.query("m:ns") == [1, 2]
        await db.mutation("m:put", {"n": 5})
        assert await db.query("m:ns") == [1, 2, 5]
        assert (await db.check())["problems"] == []


async def _kill_lease_connection(raw_db: RawDb, url: str) -> None:
    """End, on the server, the connection that holds the database's writer lease."""
    name = urlsplit(url).path.lstrip("/")
    async with raw_db(url) as raw:
        if raw.kind == "postgres":
            pids = await raw.fetch(
                "SELECT l.pid FROM pg_locks l JOIN pg_database d ON d.oid = l.database "
                "WHERE l.locktype = 'advisory' AND l.granted AND d.datname = ?",
                name,
            )
            assert len(pids) == 1, pids
            assert await raw.scalar("SELECT pg_terminate_backend(?)", pids[0][0])
        else:
            holder = await raw.scalar("SELECT IS_USED_LOCK(?)", f"reactive:{name}")
            assert holder is not None
            await raw.execute(f"KILL {int(holder)}")


async def test_takeover_after_the_lease_connection_dies(
    server_url: str, app: Path, raw_db: RawDb
) -> None:
    first = await reactive.open(server_url, app=app)
    try:
        await first.mutation("m:put", {"n": 1})
        await _kill_lease_connection(raw_db, server_url)
        second = None
        for _ in range(50):  # the server notices the ended session at once, or nearly
            try:
                second = await reactive.open(server_url, app=app)
                break
            except IncompatibleDatabaseError:
                await asyncio.sleep(0.1)
        assert second is not None, "the lease was not released with its connection"
        try:
            await second.mutation("m:put", {"n": 2})
            before = await _stored(raw_db, server_url)
            with pytest.raises(PersistenceError) as info:
                await first.mutation("m:put", {"n": 3})
            assert "lease" in str(info.value)
            assert await _stored(raw_db, server_url) == before
            await second.mutation("m:put", {"n": 4})
            assert await second.query("m:ns") == [1, 2, 4]
        finally:
            await second.close()
    finally:
        await asyncio.wait_for(first.close(), 30)
    async with reactive.open(server_url, app=app) as db:
        assert await db.query("m:ns") == [1, 2, 4]
        assert (await db.check())["problems"] == []


async def test_lease_timeout_reaches_the_lease_session(server_url: str, app: Path) -> None:
    """``lease_timeout_s`` (the server's ``--cluster-lease-timeout``) is what the database
    server is told about the lease's session: PostgreSQL's keep-alive probes and TCP user
    time-out, MySQL's ``wait_timeout`` once the lease is checked."""
    from reactive.persistence.postgres import lease_session_settings

    assert lease_session_settings() == {
        "tcp_keepalives_idle": "1",
        "tcp_keepalives_interval": "1",
        "tcp_keepalives_count": "2",
        "tcp_user_timeout": "3000",
    }
    assert lease_session_settings(10)["tcp_keepalives_idle"] == "3"
    assert lease_session_settings(10)["tcp_user_timeout"] == "10000"
    for bad in (0.5, 0, -1, 4000, float("nan"), "soon"):
        with pytest.raises(ValueError, match="lease_timeout_s"):
            reactive.open(server_url, app=app, lease_timeout_s=bad)  # type: ignore[arg-type]
    async with reactive.open(server_url, app=app, lease_timeout_s=7) as db:
        persistence: Any = db._persistence
        lease = persistence._lease
        if urlsplit(server_url).scheme.startswith("postgres"):
            assert await lease.fetchval("SHOW tcp_user_timeout") == "7000"  # ms
            assert await lease.fetchval("SHOW tcp_keepalives_idle") in ("2", "2s")
        else:
            await persistence.check_lease()
            async with lease.cursor() as cur:
                await cur.execute("SELECT @@session.wait_timeout")
                (seconds,) = await cur.fetchone()
            assert int(seconds) == 7
