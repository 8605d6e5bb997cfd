"""A read replica: ``reactive.open(url, follow=True)`` beside the process that writes.

* A follower opens beside the open writer, loads what is there, and applies every commit
  the writer makes afterwards: queries on it see them, in order, and never go back.
* A subscription on the follower sees each commit made through the writer that changes
  its result (the reactive path: ``Engine.apply_log`` names the invalidated subscriptions).
* Schema changes the writer makes later (a new table, a new index) reach the follower; the
  follower's queries use the new index once it is ready.
* Search: the app's text index answers on the follower as on the writer.
* Writes on a follower are refused with ``ReadOnlyError`` and change nothing; the writer
  keeps working; a follower of a database no writer opened is refused.
* ``wait_for_timestamp``: a follower waits until it has applied what the writer committed.

Source: python/reactive/db/follower.py, docs/design/scale-out.md (section 4).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest

import reactive
from reactive.errors import PersistenceError, ReadOnlyError

MakeApp = Callable[[dict[str, str]], Path]

SCHEMA = """
from reactive import define_schema, define_table, v

schema = define_schema({
    "notes": define_table({"n": v.int64(), "body": v.string()})
    .index("by_n", ["n"])
    .search_index("search_body", search_field="body"),
})
"""

APP = """
from reactive import mutation, query


@mutation
async def put(ctx, n, body="x"):
    return await ctx.db.insert("notes", {"n": n, "body": body})


@mutation
async def bump(ctx, id):
    doc = await ctx.db.get(id)
    await ctx.db.patch(id, {"n": doc["n"] + 1})


@mutation
async def drop(ctx, id):
    await ctx.db.delete(id)


@query
async def ns(ctx):
    return [d["n"] for d in await ctx.db.query("notes").with_index("by_n").collect()]


@query
async def above(ctx, n):
    q = ctx.db.query("notes").with_index("by_n", lambda r: r.gt("n", n))
    return [d["n"] for d in await q.collect()]


@query
async def find(ctx, text):
    q = ctx.db.query("notes").with_search_index("search_body", lambda s: s.search("body", text))
    return sorted(d["n"] for d in await q.collect())
"""


@pytest.fixture
def app(make_app: MakeApp) -> Path:
    return make_app({"schema.py": SCHEMA, "notes.py": APP})


async def _until(check: Callable[[], object], timeout_s: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("timed out")
        await asyncio.sleep(0.01)


async def test_follower_applies_the_writers_commits(server_url: str, app: Path) -> None:
    async with reactive.open(server_url, app=app) as writer:
        first = [await writer.mutation("notes:put", n=n) for n in range(5)]
        async with reactive.open(server_url, app=app, follow=True) as follower:
            assert follower.following and not writer.following
            assert await follower.query("notes:ns") == [0, 1, 2, 3, 4]
            # Commits made after the follower opened: each reaches it, in order.
            seen: list[list[int]] = []
            for n in range(5, 25):
                await writer.mutation("notes:put", n=n)
            await writer.mutation("notes:bump", id=first[0])
            await writer.mutation("notes:drop", id=first[1])
            await follower.wait_for_timestamp(writer.timestamp)
            assert follower.timestamp == writer.timestamp
            seen.append(await follower.query("notes:ns"))
            assert seen[-1] == await writer.query("notes:ns")
            assert await follower.query("notes:above", n=20) == [21, 22, 23, 24]
            # Point-in-time reads inside the retention window agree with the writer's.
            ts = writer.timestamp
            await writer.mutation("notes:put", n=100)
            await follower.wait_for_timestamp(writer.timestamp)
            assert await follower.query("notes:ns").at(ts) == await writer.query("notes:ns").at(ts)
            assert 100 in await follower.query("notes:ns")


async def test_subscription_on_a_follower_sees_the_writers_commits(
    server_url: str, app: Path
) -> None:
    async with (
        reactive.open(server_url, app=app) as writer,
        reactive.open(server_url, app=app, follow=True) as follower,
    ):
        sub = follower.subscribe("notes:ns")
        updates = sub.__aiter__()
        assert await asyncio.wait_for(updates.__anext__(), 10) == []
        expected: list[int] = []
        for n in range(10):
            await writer.mutation("notes:put", n=n)
            expected.append(n)
            # Each commit changes the result: the follower's subscription yields it.
            value = await asyncio.wait_for(updates.__anext__(), 10)
            while value != expected:
                value = await asyncio.wait_for(updates.__anext__(), 10)
        sub.close()


async def test_schema_changes_and_search_reach_the_follower(
    server_url: str, app: Path, make_app: MakeApp
) -> None:
    async with reactive.open(server_url, app=app) as writer:
        await writer.mutation("notes:put", n=1, body="red apple")
        await writer.mutation("notes:put", n=2, body="green pear")
        async with reactive.open(server_url, app=app, follow=True) as follower:
            assert await follower.query("notes:find", text="apple") == [1]
            await writer.mutation("notes:put", n=3, body="apple pie")
            await follower.wait_for_timestamp(writer.timestamp)
            assert await follower.query("notes:find", text="apple") == [1, 3]
    # The writer reopens with a new table and index; a follower of the new app follows.
    schema2 = SCHEMA.replace(
        '"notes": define_table',
        '"tags": define_table({"t": v.string()}).index("by_t", ["t"]),\n    "notes": define_table',
    )
    tags = """
from reactive import mutation, query


@mutation
async def tag(ctx, t):
    return await ctx.db.insert("tags", {"t": t})


@query
async def tags(ctx):
    return [d["t"] for d in await ctx.db.query("tags").with_index("by_t").collect()]
"""
    app2 = make_app({"schema.py": schema2, "notes.py": APP, "tags.py": tags})
    async with (
        reactive.open(server_url, app=app2) as writer,
        reactive.open(server_url, app=app2, follow=True) as follower,
    ):
        await writer.mutation("tags:tag", t="b")
        await writer.mutation("tags:tag", t="a")
        await follower.wait_for_timestamp(writer.timestamp)
        assert await follower.query("tags:tags") == ["a", "b"]
        assert await follower.query("notes:ns") == [1, 2, 3]


async def test_follower_refuses_writes(server_url: str, app: Path) -> None:
    async with reactive.open(server_url, app=app) as writer:
        await writer.mutation("notes:put", n=1)
        async with reactive.open(server_url, app=app, follow=True) as follower:
            with pytest.raises(ReadOnlyError, match="follow=True"):
                await follower.mutation("notes:put", n=2)
            with pytest.raises(ReadOnlyError):
                await follower.gc()
            # Nothing was written; both still work.
            await writer.mutation("notes:put", n=3)
            await follower.wait_for_timestamp(writer.timestamp)
            assert await follower.query("notes:ns") == [1, 3]
            assert await writer.query("notes:ns") == [1, 3]


async def test_follower_needs_a_writer_first(server_url: str, app: Path) -> None:
    with pytest.raises(PersistenceError):
        async with reactive.open(server_url, app=app, follow=True):
            pass


async def test_follower_refuses_another_apps_schema(
    server_url: str, app: Path, make_app: MakeApp
) -> None:
    other = make_app(
        {"schema.py": SCHEMA.replace('"body": v.string()', '"body": v.any()'), "notes.py": APP}
    )
    async with reactive.open(server_url, app=app):
        with pytest.raises(reactive.errors.SchemaError, match="schema"):
            async with reactive.open(server_url, app=other, follow=True, follow_schema_wait_s=0.5):
                pass


async def test_sqlite_has_no_follower(tmp_path: Path, app: Path) -> None:
    url = f"sqlite:///{tmp_path / 'db.sqlite3'}"
    async with reactive.open(url, app=app):
        pass
    with pytest.raises(PersistenceError, match="SQLite"):
        async with reactive.open(url, app=app, follow=True):
            pass


async def test_follower_keeps_up_with_concurrent_writes(server_url: str, app: Path) -> None:
    async with (
        reactive.open(server_url, app=app) as writer,
        reactive.open(server_url, app=app, follow=True) as follower,
    ):
        stop = asyncio.Event()
        observed: list[int] = []

        async def watch() -> None:
            # Snapshots only move forward: each read sees at least what the last one did.
            while not stop.is_set():
                ns = await follower.query("notes:ns")
                assert len(ns) >= (len(observed) and observed[-1])
                observed.append(len(ns))
                await asyncio.sleep(0)

        watcher = asyncio.create_task(watch())
        await asyncio.gather(*(writer.mutation("notes:put", n=n) for n in range(200)))
        await follower.wait_for_timestamp(writer.timestamp)
        stop.set()
        await watcher
        assert sorted(await follower.query("notes:ns")) == list(range(200))
        assert observed == sorted(observed)


async def test_queries_on_a_follower_see_every_acknowledged_commit(
    server_url: str, app: Path
) -> None:
    """The read barrier: a query on a follower started after the writer acknowledged a
    commit sees it, without waiting for the follower's own wake-up (linearizable reads);
    callers arriving together share one read of the database's head."""
    async with (
        reactive.open(server_url, app=app) as writer,
        reactive.open(server_url, app=app, follow=True, follow_poll_s=30.0) as follower,
    ):
        barrier = follower._follower
        assert barrier is not None
        for n in range(30):
            await writer.mutation("notes:put", n=n)
            # Asked the moment the commit is acknowledged: must hold it.
            assert (await follower.query("notes:ns"))[-1] == n
        assert await follower.read_barrier() >= writer.timestamp
        assert await writer.read_barrier() == writer.timestamp
        reads = barrier.barrier_reads
        results = await asyncio.gather(*(follower.query("notes:ns") for _ in range(50)))
        assert all(r == list(range(30)) for r in results)
        # One read in flight serves every caller before it; the rest share the next one.
        assert 1 <= barrier.barrier_reads - reads <= 2
        # Point-in-time reads (ts given) need no barrier.
        reads = barrier.barrier_reads
        outcome = await follower.run_query("notes:ns", ts=follower.timestamp)
        assert outcome.value == list(range(30)) and barrier.barrier_reads == reads


async def test_a_follower_the_retention_passed_stops_and_says_so(
    server_url: str, app: Path
) -> None:
    """A follower cut off while retention pruned past its position meets a gap in the
    log: it stops following, tells ``on_stopped`` once (a cluster's process exits to be
    restarted), and its reads fail rather than serve a state it can no longer advance."""
    async with (
        reactive.open(server_url, app=app) as writer,
        reactive.open(server_url, app=app, follow=True) as follower,
    ):
        ids = [await writer.mutation("notes:put", n=n) for n in range(3)]
        await follower.wait_for_timestamp(writer.timestamp)
        lf = follower._follower
        assert lf is not None
        told: list[BaseException] = []
        lf.on_stopped = told.append
        await lf.stop_following()  # cut off
        for i in ids:
            await writer.mutation("notes:bump", id=i)
        assert (await writer.gc(keep_s=0)).documents_deleted == 3
        lf.start()
        await _until(lambda: told, 10.0)
        assert len(told) == 1 and isinstance(told[0], PersistenceError)
        assert "LogGap" in repr(told[0].__cause__) or "pruned" in str(told[0])
        with pytest.raises(PersistenceError, match="stopped following"):
            await follower.query("notes:ns")


async def test_lag_is_the_time_spent_behind(server_url: str, app: Path) -> None:
    """``lag_ts`` (``lag_ms`` of ``/health/ready``) counts from when the follower heard of a
    commit it has not applied, not the gap between that commit's timestamp and the last
    one it applied (which after a quiet second would read a second)."""
    import time

    async with reactive.open(server_url, app=app) as writer:
        await writer.mutation("notes:put", n=1)
        async with reactive.open(server_url, app=app, follow=True) as follower:
            await follower.wait_for_timestamp(writer.timestamp)
            tail = follower._follower
            assert tail is not None and tail.lag_ts == 0
            await asyncio.sleep(1.0)
            # It hears of a commit made now (the writer has not made it yet: it stays
            # unapplied until a later commit passes it).
            tail._heard(time.time_ns())
            assert tail.lag_ts < 0.5e9
            await asyncio.sleep(0.3)
            assert tail.lag_ts >= 0.3e9
            await writer.mutation("notes:put", n=2)
            await follower.wait_for_timestamp(writer.timestamp)
            assert tail.lag_ts == 0
