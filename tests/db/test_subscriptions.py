"""Subscriptions: first result then each changed one; re-runs only when a commit overlaps
the query's read set (cut at take); equal results are not yielded; closing unsubscribes."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

import reactive
from reactive import ConvexError
from reactive.errors import DatabaseClosedError

SCHEMA = """
from reactive import define_schema, define_table, v

schema = define_schema({
    "messages": define_table({"channel": v.string(), "body": v.string()})
        .index("by_channel", ["channel"]),
    "other": define_table().index("by_k", ["k"]),
})
"""

FUNCS = """
from reactive import ConvexError, mutation, query, v


def _channel(ctx, channel):
    return ctx.db.query("messages").with_index("by_channel", lambda q: q.eq("channel", channel))


@query(args={"channel": v.string()})
async def list(ctx, channel):
    return [m["body"] for m in await _channel(ctx, channel).take(10)]


@query(args={})
async def first3(ctx):
    return [m["body"] for m in await ctx.db.query("messages").order("asc").take(3)]


@query(args={})
async def latest2(ctx):
    return [m["body"] for m in await ctx.db.query("messages").order("desc").take(2)]


@query(args={"id": v.string()})
async def get(ctx, id):
    return await ctx.db.get(id)


@query(args={"channel": v.string()})
async def count(ctx, channel):
    return len(await _channel(ctx, channel).collect())


@query(args={"channel": v.string()})
async def has_long(ctx, channel):
    return any(len(m["body"]) > 5 for m in await _channel(ctx, channel).collect())


@query(args={})
async def fails(ctx):
    raise ConvexError({"code": "NOPE", "n": 1})


@query(args={"channel": v.string()})
async def fails_on_boom(ctx, channel):
    bodies = [m["body"] for m in await _channel(ctx, channel).collect()]
    if "boom" in bodies:
        raise ConvexError({"code": "BOOM", "count": len(bodies)})
    return len(bodies)


@mutation(args={"channel": v.string(), "body": v.string()})
async def send(ctx, channel, body):
    return await ctx.db.insert("messages", {"channel": channel, "body": body})


@mutation(args={"channel": v.string(), "bodies": v.array(v.string())})
async def send_many(ctx, channel, bodies):
    return [await ctx.db.insert("messages", {"channel": channel, "body": b}) for b in bodies]


@mutation(args={"n": v.int64()})
async def insert_other(ctx, n):
    return [await ctx.db.insert("other", {"k": i}) for i in range(n)]


@mutation(args={"id": v.string(), "fields": v.any()})
async def patch(ctx, id, fields):
    await ctx.db.patch(id, fields)


@mutation(args={"id": v.string()})
async def delete(ctx, id):
    await ctx.db.delete(id)
"""

QUIET_S = 0.3
"""How long to wait to show that no new result arrives (a re-run takes milliseconds)."""


@pytest.fixture
def app(make_app: Any) -> Path:
    return make_app({"schema.py": SCHEMA, "f.py": FUNCS})


@pytest.fixture
async def db(db_url: str, app: Path) -> Any:
    database = await reactive.open(db_url, app=app)
    try:
        yield database
    finally:
        await database.close()


async def send(db: Any, channel: str, body: str) -> str:
    return await db.mutation("f:send", {"channel": channel, "body": body})


async def assert_quiet(sub: Any) -> None:
    """No new result arrives (the subscription may re-run, but yields nothing)."""
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(sub.get(timeout_s=QUIET_S), QUIET_S * 4)


async def test_first_result_then_each_change(db: Any) -> None:
    sub = db.subscribe("f:list", {"channel": "a"})
    assert sub.runs == 0
    assert await sub.get(timeout_s=5) == []
    assert sub.runs == 1
    await send(db, "a", "hi")
    assert await sub.get(timeout_s=5) == ["hi"]
    assert sub.runs == 2
    await send(db, "a", "there")
    assert await sub.get(timeout_s=5) == ["hi", "there"]
    assert sub.runs == 3
    # Several commits before the next read: one re-run, at the newest snapshot.
    for body in ("x", "y", "z"):
        await send(db, "a", body)
    assert await sub.get(timeout_s=5) == ["hi", "there", "x", "y", "z"]
    assert sub.runs == 4
    sub.close()


async def test_async_for(db: Any) -> None:
    seen: list[list[str]] = []
    ready = asyncio.Event()

    async def consume() -> None:
        async for value in db.subscribe("f:list", {"channel": "a"}):
            seen.append(value)
            ready.set()
            if len(seen) == 3:
                break

    task = asyncio.create_task(consume())
    await asyncio.wait_for(ready.wait(), 5)
    for body in ("one", "two"):
        ready.clear()
        await send(db, "a", body)
        await asyncio.wait_for(ready.wait(), 5)
    await asyncio.wait_for(task, 5)
    assert seen == [[], ["one"], ["one", "two"]]


async def test_unrelated_commits_do_not_rerun(db: Any) -> None:
    await send(db, "a", "first")
    b_bodies = [f"b{i}" for i in range(30)]
    b_ids = await db.mutation("f:send_many", {"channel": "b", "bodies": b_bodies})
    other_ids = await db.mutation("f:insert_other", {"n": 3})
    sub = db.subscribe("f:list", {"channel": "a"})
    assert await sub.get(timeout_s=5) == ["first"]
    assert sub.runs == 1
    # Writes to other channels (before and after "a" in the index), other tables, patches
    # and deletes of unrelated documents.
    for channel in ("b", "", "Z", "a-", "aa", "b"):
        await db.mutation("f:send_many", {"channel": channel, "bodies": ["m1", "m2", "m3"]})
    await db.mutation("f:insert_other", {"n": 20})
    for id_ in b_ids[:5]:
        await db.mutation("f:patch", {"id": id_, "fields": {"body": "edited"}})
    await db.mutation("f:patch", {"id": other_ids[0], "fields": {"k": 99}})
    for id_ in b_ids[5:10]:
        await db.mutation("f:delete", {"id": id_})
    await db.mutation("f:delete", {"id": other_ids[1]})
    await assert_quiet(sub)
    assert sub.runs == 1
    # One insert into "a": exactly one re-run, and the new result.
    await send(db, "a", "second")
    assert await sub.get(timeout_s=5) == ["first", "second"]
    assert sub.runs == 2
    await assert_quiet(sub)
    assert sub.runs == 2
    sub.close()


async def test_take_depends_only_on_what_it_consumed(db: Any) -> None:
    ids = await db.mutation("f:send_many", {"channel": "a", "bodies": ["m0", "m1", "m2", "m3"]})
    ids.append(await send(db, "b", "m4"))
    sub = db.subscribe("f:first3", {})
    assert await sub.get(timeout_s=5) == ["m0", "m1", "m2"]
    # Writes that sort after the first three: no re-run.
    await send(db, "a", "m5")
    await db.mutation("f:patch", {"id": ids[3], "fields": {"body": "m3!"}})
    await db.mutation("f:delete", {"id": ids[4]})
    await assert_quiet(sub)
    assert sub.runs == 1
    # A patch of one of the three: a re-run with the new result.
    await db.mutation("f:patch", {"id": ids[1], "fields": {"body": "m1!"}})
    assert await sub.get(timeout_s=5) == ["m0", "m1!", "m2"]
    assert sub.runs == 2
    # A delete of one of them: the range now reaches the next document.
    await db.mutation("f:delete", {"id": ids[0]})
    assert await sub.get(timeout_s=5) == ["m1!", "m2", "m3!"]
    assert sub.runs == 3
    # ... which is now part of what it read.
    await db.mutation("f:patch", {"id": ids[3], "fields": {"body": "m3?"}})
    assert await sub.get(timeout_s=5) == ["m1!", "m2", "m3?"]
    assert sub.runs == 4
    sub.close()


async def test_take_descending(db: Any) -> None:
    ids = await db.mutation("f:send_many", {"channel": "a", "bodies": ["m0", "m1", "m2", "m3"]})
    sub = db.subscribe("f:latest2", {})
    assert await sub.get(timeout_s=5) == ["m3", "m2"]
    # The older documents were not read.
    await db.mutation("f:patch", {"id": ids[0], "fields": {"body": "m0!"}})
    await db.mutation("f:delete", {"id": ids[1]})
    await assert_quiet(sub)
    assert sub.runs == 1
    # A new document sorts first in descending order: a re-run.
    await send(db, "b", "m4")
    assert await sub.get(timeout_s=5) == ["m4", "m3"]
    assert sub.runs == 2
    await db.mutation("f:patch", {"id": ids[2], "fields": {"body": "m2!"}})
    await assert_quiet(sub)
    assert sub.runs == 2
    sub.close()


async def test_get_subscription_reruns_only_for_its_document(db: Any) -> None:
    mine, theirs = await db.mutation("f:send_many", {"channel": "a", "bodies": ["mine", "theirs"]})
    sub = db.subscribe("f:get", {"id": mine})
    first = await sub.get(timeout_s=5)
    assert first["body"] == "mine"
    assert first["_id"] == mine
    await db.mutation("f:patch", {"id": theirs, "fields": {"body": "theirs!"}})
    await send(db, "a", "new")
    await db.mutation("f:delete", {"id": theirs})
    await assert_quiet(sub)
    assert sub.runs == 1
    await db.mutation("f:patch", {"id": mine, "fields": {"body": "mine!"}})
    changed = await sub.get(timeout_s=5)
    assert changed["body"] == "mine!"
    assert changed["_creationTime"] == first["_creationTime"]
    assert sub.runs == 2
    await db.mutation("f:delete", {"id": mine})
    assert await sub.get(timeout_s=5) is None
    assert sub.runs == 3
    sub.close()


async def test_equal_result_is_not_yielded(db: Any) -> None:
    ids = await db.mutation("f:send_many", {"channel": "a", "bodies": ["x", "y"]})
    count = db.subscribe("f:count", {"channel": "a"})
    long = db.subscribe("f:has_long", {"channel": "a"})
    assert await count.get(timeout_s=5) == 2
    assert await long.get(timeout_s=5) is False
    # A patch inside the read set re-runs both queries; neither result changes.
    await db.mutation("f:patch", {"id": ids[0], "fields": {"body": "z"}})
    await assert_quiet(count)
    await assert_quiet(long)
    assert count.runs == 2
    assert long.runs == 2
    # A change that does change them is yielded.
    await send(db, "a", "a long message")
    assert await count.get(timeout_s=5) == 3
    assert await long.get(timeout_s=5) is True
    assert count.runs == 3
    assert long.runs == 3
    # Another long message: the count changes, the boolean does not.
    await send(db, "a", "another long one")
    assert await count.get(timeout_s=5) == 4
    await assert_quiet(long)
    assert long.runs == 4
    count.close()
    long.close()


async def test_many_subscriptions_one_rerun(db: Any) -> None:
    n = 200
    base = db._engine.subscription_count()
    subs = [db.subscribe("f:list", {"channel": f"c{i}"}) for i in range(n)]
    for sub in subs:
        assert await sub.get(timeout_s=5) == []
    assert db._engine.subscription_count() == base + n
    assert sum(s.runs for s in subs) == n
    waiting = [asyncio.create_task(s.get()) for s in subs]
    await asyncio.sleep(0)
    await send(db, "c57", "hello")
    assert await asyncio.wait_for(waiting[57], 5) == ["hello"]
    # Give any wrongly invalidated subscription the chance to re-run.
    await asyncio.sleep(QUIET_S)
    assert [i for i, t in enumerate(waiting) if t.done()] == [57]
    assert subs[57].runs == 2
    assert sum(s.runs for s in subs) == n + 1
    for task in waiting:
        task.cancel()
    await asyncio.gather(*waiting, return_exceptions=True)
    for sub in subs:
        sub.close()
    assert db._engine.subscription_count() == base


async def test_close_unsubscribes(db: Any) -> None:
    base = db._engine.subscription_count()
    sub = db.subscribe("f:list", {"channel": "a"})
    assert await sub.get(timeout_s=5) == []
    assert db._engine.subscription_count() == base + 1
    sub.close()
    assert db._engine.subscription_count() == base
    sub.close()  # idempotent
    assert db._engine.subscription_count() == base
    with pytest.raises(DatabaseClosedError):
        await sub.get(timeout_s=5)
    # Iteration of a closed subscription ends.
    assert [x async for x in sub] == []

    async with db.subscribe("f:list", {"channel": "a"}) as sub2:
        assert await sub2.get(timeout_s=5) == []
        assert db._engine.subscription_count() == base + 1
    assert db._engine.subscription_count() == base

    await sub2.aclose()
    # Closing ends an iteration that is waiting for the next result.
    sub3 = db.subscribe("f:list", {"channel": "a"})
    results: list[Any] = []

    async def consume() -> None:
        async for value in sub3:
            results.append(value)

    task = asyncio.create_task(consume())
    for _ in range(500):
        if results:
            break
        await asyncio.sleep(0.01)
    assert db._engine.subscription_count() == base + 1
    sub3.close()
    await asyncio.wait_for(task, 5)
    assert results == [[]]
    assert db._engine.subscription_count() == base
    # Writes after closing wake nothing up.
    await send(db, "a", "late")
    assert sub3.runs == 1


async def test_closing_the_database_ends_subscriptions(db_url: str, app: Path) -> None:
    db = await reactive.open(db_url, app=app)
    sub = db.subscribe("f:list", {"channel": "a"})
    assert await sub.get(timeout_s=5) == []
    task = asyncio.create_task(sub.get())
    await asyncio.sleep(0)
    await db.close()
    with pytest.raises(DatabaseClosedError):
        await asyncio.wait_for(task, 5)


async def test_convex_error_in_first_run(db: Any) -> None:
    sub = db.subscribe("f:fails", {})
    with pytest.raises(ConvexError) as info:
        await sub.__anext__()
    assert info.value.data == {"code": "NOPE", "n": 1}
    sub.close()

    with pytest.raises(ConvexError) as info2:
        async for _ in db.subscribe("f:fails", {}):
            pytest.fail("a failing query yields nothing")
    assert info2.value.data == {"code": "NOPE", "n": 1}


async def test_error_after_a_change_then_recovery(db: Any) -> None:
    sub = db.subscribe("f:fails_on_boom", {"channel": "a"})
    assert await sub.get(timeout_s=5) == 0
    boom = await send(db, "a", "boom")
    with pytest.raises(ConvexError) as info:
        await sub.get(timeout_s=5)
    assert info.value.data == {"code": "BOOM", "count": 1}
    # The failed run's read set is still watched: fixing the data yields again.
    await db.mutation("f:patch", {"id": boom, "fields": {"body": "fine"}})
    assert await sub.get(timeout_s=5) == 1
    assert sub.runs == 3
    sub.close()
