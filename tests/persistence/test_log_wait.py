"""Waiting for a PostgreSQL / MySQL log another process writes (``LogSource.wait_log``).

* A commit wakes a reader waiting with a long timeout within a second: on PostgreSQL through
  the writer's ``NOTIFY`` (the reader's poll fallback is set to 30 s, so without the
  notification the wait would last 30 s and the test fail), on MySQL through the default
  50 ms poll. Several waiters all wake.
* A timeout returns, without raising, the current ``max_ts``; a ``max_ts`` already past
  ``after_ts`` returns at once; a ``max_ts`` written behind the writer's back (no
  notification) is found by the poll fallback.
* A catalog change without a commit (a table created through the writer's engine) wakes a
  waiter, once: ``max_ts`` is unchanged and the next wait times out.
* PostgreSQL: the ``LISTEN`` connection killed (``pg_terminate_backend``), a commit made
  while it is down and one made after it is back both wake a waiter within a bound.
* A cancelled waiter leaves no task and no waiter behind; ``wait_log`` after ``close()``, or
  waiting while it closes, raises ``PersistenceError``; ``log_poll_s`` must be positive.

Latencies are printed (``pytest -s``).

Source: docs/design/scale-out.md (section 4.1), python/reactive/persistence/base.py,
postgres.py, mysql.py.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

import reactive
from reactive.errors import PersistenceError
from reactive.persistence import LogSource, open_persistence

MakeApp = Callable[[dict[str, str]], Path]
RawDb = Any  # the ``raw_db`` fixture of conftest.py

APP = """
from reactive import mutation


@mutation
async def put(ctx, table, n):
    return await ctx.db.insert(table, {"n": n})
"""

LONG_S = 30.0
"""A timeout (and, on PostgreSQL, a poll fallback) no passing test waits for."""
WAKE_BOUND_S = 1.0


@pytest.fixture
def app(make_app: MakeApp) -> Path:
    return make_app({"m.py": APP})


def kind_of(url: str) -> str:
    """``postgres`` or ``mysql``."""
    return "postgres" if urlsplit(url).scheme in ("postgresql", "postgres") else "mysql"


async def _reader(url: str, **options: Any) -> LogSource:
    """A reader; on PostgreSQL its poll fallback is ``LONG_S`` unless given."""
    if kind_of(url) == "postgres":
        options.setdefault("log_poll_s", LONG_S)
    reader = await open_persistence(url, lease=False, **options)
    assert isinstance(reader, LogSource)
    return reader


async def _listen_pids(raw_db: RawDb, url: str) -> list[int]:
    """The backends of ``url``'s database whose last statement was a ``LISTEN``."""
    async with raw_db(url) as raw:
        rows = await raw.fetch(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
            "AND query LIKE 'LISTEN%'"
        )
    return [int(r[0]) for r in rows]


async def _until(check: Callable[[], Any], what: str, within_s: float = 10.0) -> Any:
    deadline = time.monotonic() + within_s
    while True:
        got = await check()
        if got:
            return got
        assert time.monotonic() < deadline, f"not within {within_s} s: {what}"
        await asyncio.sleep(0.02)


async def _warm(reader: LogSource, raw_db: RawDb, url: str) -> int:
    """Start the reader's waiting machinery (PostgreSQL: its ``LISTEN`` is in place)."""
    head = (await reader.read_log_since(0)).max_ts
    assert await reader.wait_log(head, 0.0) == head
    if kind_of(url) == "postgres":
        await _until(lambda: _listen_pids(raw_db, url), "the LISTEN connection opens")
    return head


async def _timed_wake(reader: LogSource, after_ts: int, commit: Callable[[], Any]) -> float:
    """Seconds from the start of ``commit()`` to the wake of a waiter for ``after_ts``."""
    loop = asyncio.get_running_loop()
    woke: list[float] = []

    async def wait() -> int:
        got = await reader.wait_log(after_ts, LONG_S)
        woke.append(loop.time())
        return got

    waiter = asyncio.create_task(wait())
    await asyncio.sleep(0.2)  # waiting, past any first poll
    assert not waiter.done()
    start = loop.time()
    await commit()
    got = await asyncio.wait_for(waiter, 10)
    assert got > after_ts or got == after_ts  # a catalog change leaves max_ts
    return woke[0] - start


async def test_a_commit_wakes_a_waiter_at_once(server_url: str, app: Path, raw_db: RawDb) -> None:
    async with reactive.open(server_url, app=app) as db:
        await db.mutation("m:put", {"table": "a", "n": 0})
        reader = await _reader(server_url)
        try:
            head = await _warm(reader, raw_db, server_url)
            latencies = []
            for n in range(1, 6):

                async def commit(n: int = n) -> None:
                    await db.mutation("m:put", {"table": "a", "n": n})

                latencies.append(await _timed_wake(reader, head, commit))
                assert (await reader.read_log_since(head)).max_ts == db.timestamp
                head = db.timestamp
            print(
                f"\n{kind_of(server_url)}: commit to wake "
                + ", ".join(f"{s * 1000:.1f}" for s in latencies)
                + " ms"
            )
            assert max(latencies) < WAKE_BOUND_S
            # Several waiters: one commit wakes them all, with its max_ts.
            waiters = [asyncio.create_task(reader.wait_log(head, LONG_S)) for _ in range(3)]
            await asyncio.sleep(0.2)
            await db.mutation("m:put", {"table": "a", "n": 99})
            assert await asyncio.wait_for(asyncio.gather(*waiters), 10) == [db.timestamp] * 3
        finally:
            await reader.close()


async def test_a_timeout_returns_the_current_max_ts(
    server_url: str, app: Path, raw_db: RawDb
) -> None:
    async with reactive.open(server_url, app=app) as db:
        for n in range(3):
            await db.mutation("m:put", {"table": "a", "n": n})
        reader = await _reader(server_url)
        try:
            head = db.timestamp
            # Something past after_ts already: at once, with the newest max_ts.
            start = time.monotonic()
            assert await reader.wait_log(0, LONG_S) == head
            assert await reader.wait_log(head - 1, LONG_S) == head
            assert time.monotonic() - start < WAKE_BOUND_S
            # Nothing new: the timeout, no error, the current max_ts.
            for timeout_s in (0.0, -1.0, 0.3):
                start = time.monotonic()
                assert await reader.wait_log(head, timeout_s) == head
                took = time.monotonic() - start
                assert max(0.0, timeout_s) - 0.01 <= took < max(0.0, timeout_s) + 1.0
            # after_ts ahead of the log: the timeout, with max_ts (<= after_ts).
            assert await reader.wait_log(head + 10**9, 0.2) == head
        finally:
            await reader.close()


async def test_the_poll_finds_what_no_notification_announced(
    server_url: str, app: Path, raw_db: RawDb
) -> None:
    """The globals' poll: a max_ts written straight to the table (nothing notified) is found
    at the timeout, and by a long wait within ``log_poll_s``."""
    async with reactive.open(server_url, app=app) as db:
        await db.mutation("m:put", {"table": "a", "n": 1})
        reader = await _reader(server_url, log_poll_s=0.3)
        try:
            head = await _warm(reader, raw_db, server_url)
            async with raw_db(server_url) as raw:
                await raw.set_global("max_ts", str(head + 1000).encode())
            assert await reader.wait_log(head, 0.05) == head + 1000  # at the timeout
            waiter = asyncio.create_task(reader.wait_log(head + 1000, LONG_S))
            await asyncio.sleep(0.1)  # waiting, past its first poll
            assert not waiter.done()
            start = time.monotonic()
            async with raw_db(server_url) as raw:
                await raw.set_global("max_ts", str(head + 2000).encode())
            assert await asyncio.wait_for(waiter, 10) == head + 2000
            took = time.monotonic() - start
            print(f"\n{kind_of(server_url)}: found by polling every 0.3 s in {took:.2f} s")
            assert took < 0.3 + WAKE_BOUND_S
            async with raw_db(server_url) as raw:
                await raw.set_global("max_ts", str(head).encode())
        finally:
            await reader.close()


async def test_a_catalog_change_wakes_a_waiter(server_url: str, app: Path) -> None:
    async with reactive.open(server_url, app=app) as db:
        await db.mutation("m:put", {"table": "a", "n": 1})
        reader = await _reader(server_url)
        try:
            piece = await reader.read_log_since(0)
            head = piece.max_ts
            assert head == db.timestamp
            assert await reader.wait_log(head, 0.0) == head
            if kind_of(server_url) == "postgres":
                await asyncio.sleep(0.5)  # the LISTEN is in place

            async def create_table() -> None:
                db._engine.create_table("photos")
                await db._flusher.flush()

            took = await _timed_wake(reader, head, create_table)
            print(f"\n{kind_of(server_url)}: catalog change to wake {took * 1000:.1f} ms")
            assert took < WAKE_BOUND_S
            # No commit: max_ts has not moved, the catalog has.
            assert db.timestamp == head
            after = await reader.read_log_since(head)
            assert after.commits == [] and after.max_ts == head
            assert after.catalog_json is not None and piece.catalog_json is not None
            names = {t["name"] for t in json.loads(after.catalog_json)["tables"].values()}
            assert "photos" in names
            assert after.catalog_json != piece.catalog_json
            # Woken once: nothing new since, so the next wait times out.
            start = time.monotonic()
            assert await reader.wait_log(head, 0.3) == head
            assert time.monotonic() - start >= 0.29
            # A change the reader has not read yet wakes a wait begun after it, at once.
            db._engine.create_table("videos")
            await db._flusher.flush()
            assert await reader.wait_log(head, 5.0) == head
            assert time.monotonic() - start < 0.3 + WAKE_BOUND_S
        finally:
            await reader.close()


async def test_a_killed_listen_connection_is_reopened(
    server_url: str, app: Path, raw_db: RawDb
) -> None:
    if kind_of(server_url) != "postgres":
        pytest.skip("PostgreSQL only: MySQL has no LISTEN connection")
    async with reactive.open(server_url, app=app) as db:
        await db.mutation("m:put", {"table": "a", "n": 0})
        reader = await _reader(server_url)
        try:
            head = await _warm(reader, raw_db, server_url)
            (first,) = await _listen_pids(raw_db, server_url)

            # Killed while a waiter waits, and a commit lands before it is back: the
            # reopened connection's first read of the globals finds it.
            waiter = asyncio.create_task(reader.wait_log(head, LONG_S))
            await asyncio.sleep(0.1)
            start = time.monotonic()
            async with raw_db(server_url) as raw:
                assert await raw.scalar("SELECT pg_terminate_backend(?)", first)
            await db.mutation("m:put", {"table": "a", "n": 1})
            assert await asyncio.wait_for(waiter, 10) == db.timestamp
            took = time.monotonic() - start
            print(f"\ncommit while the LISTEN is down to wake: {took * 1000:.1f} ms")
            assert took < 2 * WAKE_BOUND_S
            head = db.timestamp
            (second,) = await _until(
                lambda: _listen_pids(raw_db, server_url), "the LISTEN connection reopens"
            )
            assert second != first

            # Killed again; once it is back, a commit is notified as before.
            async with raw_db(server_url) as raw:
                assert await raw.scalar("SELECT pg_terminate_backend(?)", second)

            async def reopened() -> bool:
                return bool(set(await _listen_pids(raw_db, server_url)) - {first, second})

            await _until(reopened, "the LISTEN connection reopens")

            async def commit() -> None:
                await db.mutation("m:put", {"table": "a", "n": 2})

            took = await _timed_wake(reader, head, commit)
            print(f"commit after the LISTEN is back to wake: {took * 1000:.1f} ms")
            assert took < WAKE_BOUND_S
        finally:
            await reader.close()


async def test_a_cancelled_waiter_leaves_nothing_behind(
    server_url: str, app: Path, raw_db: RawDb
) -> None:
    async with reactive.open(server_url, app=app) as db:
        await db.mutation("m:put", {"table": "a", "n": 0})
        reader = await _reader(server_url)
        try:
            head = await _warm(reader, raw_db, server_url)
            before = asyncio.all_tasks()
            # Cancelled at once, while waiting, and (MySQL) in the midst of a poll.
            for delay in (0.0, 0.001, 0.01, 0.02, 0.03, 0.05, 0.07, 0.2):
                waiter = asyncio.create_task(reader.wait_log(head, LONG_S))
                await asyncio.sleep(delay)
                waiter.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await waiter
            await asyncio.sleep(0.05)
            assert asyncio.all_tasks() == before
            watch = reader._watch  # type: ignore[attr-defined]
            assert watch._changed is None or not watch._changed._waiters
            # Waiting and reading go on.
            waiter = asyncio.create_task(reader.wait_log(head, LONG_S))
            await asyncio.sleep(0.1)
            await db.mutation("m:put", {"table": "a", "n": 1})
            assert await asyncio.wait_for(waiter, 10) == db.timestamp
            assert (await reader.read_log_since(head)).max_ts == db.timestamp
        finally:
            await reader.close()


async def test_wait_log_after_close_raises(server_url: str, app: Path, raw_db: RawDb) -> None:
    async with reactive.open(server_url, app=app) as db:
        await db.mutation("m:put", {"table": "a", "n": 0})
        reader = await _reader(server_url)
        head = await _warm(reader, raw_db, server_url)
        waiter = asyncio.create_task(reader.wait_log(head, LONG_S))
        await asyncio.sleep(0.1)
        await reader.close()
        with pytest.raises(PersistenceError, match="closed"):
            await asyncio.wait_for(waiter, 10)
        with pytest.raises(PersistenceError, match="closed"):
            await reader.wait_log(head, 0.0)
        with pytest.raises(PersistenceError, match="closed"):
            await reader.wait_log(0, LONG_S)
        await reader.close()  # idempotent
        if kind_of(server_url) == "postgres":
            # The LISTEN connection is gone.
            async def gone() -> bool:
                return not await _listen_pids(raw_db, server_url)

            await _until(gone, "the LISTEN connection closes")
        # The writer's own persistence waits too, and raises once closed.
        writer = db._persistence
        assert isinstance(writer, LogSource)
        assert await writer.wait_log(0, 1.0) == db.timestamp
    with pytest.raises(PersistenceError, match="closed"):
        await writer.wait_log(0, 0.0)


@pytest.mark.parametrize("bad", [0, -0.5, math.nan, math.inf])
async def test_log_poll_s_must_be_positive(server_url: str, bad: float) -> None:
    for lease in (True, False):
        with pytest.raises(ValueError, match="log_poll_s"):
            await open_persistence(server_url, lease=lease, log_poll_s=bad)
