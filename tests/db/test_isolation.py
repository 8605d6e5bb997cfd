"""Snapshot isolation: a transaction reads one snapshot, its own writes, never half a commit.

Checked both through the public API (queries and mutations paused inside their handlers
with gates (``tests/gate.py``) so that their transactions have begun before another one commits)
and at the engine level (``db._engine.begin(...)`` returns a ``_core.Transaction``).

Source: ARCHITECTURE.md ("a transaction reads at its begin timestamp and never sees a later
commit or a half of one"; "reads see its own writes") and §3.
"""

from __future__ import annotations

import asyncio
import importlib
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import reactive
from gate import Gate
from reactive.errors import WriteConflict

APP = '''
import asyncio

from reactive import mutation, query, v

# Test hooks: the test puts events / callables here to pause handlers at chosen points.
HOOKS = {}
# What each run of the paused handlers saw, in order (one entry per attempt).
SEEN = []


async def _pause(name):
    hook = HOOKS.pop(name, None)
    if hook is not None:
        started, proceed = hook
        started.set()
        await proceed.wait()


@mutation(args={"name": v.string(), "value": v.int64()})
async def add(ctx, name, value):
    return await ctx.db.insert("items", {"name": name, "value": value})


@mutation(args={"id": v.id("items"), "value": v.int64()})
async def set_value(ctx, id, value):
    await ctx.db.patch(id, {"value": value})


@query(args={})
async def names(ctx):
    return sorted(d["name"] for d in await ctx.db.query("items").collect())


@query(args={})
async def paused_names(ctx):
    await _pause("query")
    return sorted(d["name"] for d in await ctx.db.query("items").collect())


@query(args={"id": v.id("items")})
async def paused_get(ctx, id):
    first = await ctx.db.get(id)
    await _pause("get")
    second = await ctx.db.get(id)
    return [first["value"], second["value"]]


@mutation(args={})
async def paused_count(ctx):
    """Count items after a pause and record the count in another table."""
    await _pause("mutation")
    names = sorted(d["name"] for d in await ctx.db.query("items").collect())
    SEEN.append(names)
    await ctx.db.insert("counts", {"n": len(names)})
    return names


@mutation(args={})
async def paused_read_only(ctx):
    await _pause("read_only_mutation")
    names = sorted(d["name"] for d in await ctx.db.query("items").collect())
    SEEN.append(names)
    return names


@mutation(args={"name": v.string()})
async def own_writes(ctx, name):
    out = {}
    new_id = await ctx.db.insert("items", {"name": name, "value": 1})
    doc = await ctx.db.get(new_id)
    out["get_after_insert"] = None if doc is None else [doc["name"], doc["value"]]
    out["scan_after_insert"] = sorted(
        d["name"] for d in await ctx.db.query("items").collect()
    )
    by_name = await (
        ctx.db.query("items").with_index("by_name", lambda q: q.eq("name", name)).collect()
    )
    out["index_after_insert"] = [d["_id"] for d in by_name]
    await ctx.db.patch(new_id, {"value": 2, "extra": "x"})
    doc = await ctx.db.get(new_id)
    out["get_after_patch"] = [doc["value"], doc.get("extra")]
    by_value = await (
        ctx.db.query("items").with_index("by_value", lambda q: q.eq("value", 2)).collect()
    )
    out["index_after_patch"] = [d["_id"] for d in by_value]
    stale = await (
        ctx.db.query("items").with_index("by_value", lambda q: q.eq("value", 1)).collect()
    )
    out["old_key_after_patch"] = [d["_id"] for d in stale if d["_id"] == new_id]
    await ctx.db.replace(new_id, {"name": name, "value": 3})
    doc = await ctx.db.get(new_id)
    out["get_after_replace"] = [doc["value"], "extra" in doc]
    out["id"] = new_id
    return out


@mutation(args={"id": v.id("items")})
async def delete_then_read(ctx, id):
    await ctx.db.delete(id)
    doc = await ctx.db.get(id)
    names = [d["_id"] for d in await ctx.db.query("items").collect()]
    return [doc, id in names]


@mutation(args={"writer": v.int64()})
async def bump_pair(ctx, writer):
    """Add one to the writer's left and right counters (two documents, one commit)."""
    mine = lambda q: q.eq("writer", writer)
    left = await ctx.db.query("left").with_index("by_writer", mine).unique()
    right = await ctx.db.query("right").with_index("by_writer", mine).unique()
    if left is None:
        await ctx.db.insert("left", {"writer": writer, "n": 1})
        await ctx.db.insert("right", {"writer": writer, "n": 1})
        return 1
    await ctx.db.patch(left["_id"], {"n": left["n"] + 1})
    await asyncio.sleep(0)
    await ctx.db.patch(right["_id"], {"n": right["n"] + 1})
    return left["n"] + 1


@mutation(args={"k": v.int64()})
async def insert_pair(ctx, k):
    await ctx.db.insert("pairs", {"k": k, "side": "a"})
    await asyncio.sleep(0)
    await ctx.db.insert("pairs", {"k": k, "side": "b"})


@query(args={})
async def read_pairs(ctx):
    """Read the counters and pairs with yields between reads, so commits land meanwhile."""
    lefts = {str(d["writer"]): d["n"] for d in await ctx.db.query("left").collect()}
    await asyncio.sleep(0)
    rights = {str(d["writer"]): d["n"] for d in await ctx.db.query("right").collect()}
    await asyncio.sleep(0)
    sides = {}
    async for d in ctx.db.query("pairs"):
        sides.setdefault(str(d["k"]), []).append(d["side"])
        await asyncio.sleep(0)
    return {"left": lefts, "right": rights, "pairs": sides}


@query(args={"k": v.int64()})
async def pair_sides(ctx, k):
    docs = await ctx.db.query("pairs").with_index("by_k", lambda q: q.eq("k", k)).collect()
    return sorted(d["side"] for d in docs)
'''

SCHEMA = """
from reactive import define_schema, define_table, v

schema = define_schema({
    "items": define_table({"name": v.string(), "value": v.int64(),
                           "extra": v.optional(v.string())})
        .index("by_name", ["name"]).index("by_value", ["value"]),
    "counts": define_table({"n": v.int64()}),
    "left": define_table({"writer": v.int64(), "n": v.int64()}).index("by_writer", ["writer"]),
    "right": define_table({"writer": v.int64(), "n": v.int64()}).index("by_writer", ["writer"]),
    "pairs": define_table({"k": v.int64(), "side": v.string()}).index("by_k", ["k"]),
})
"""


def _module(app_dir: Path) -> Any:
    return importlib.import_module(f"{app_dir.name}.m")


def _hook(mod: Any, name: str) -> tuple[Gate, Gate]:
    started, proceed = Gate(), Gate()
    mod.HOOKS[name] = (started, proceed)
    return started, proceed


async def _open(db_url: str, make_app: Any) -> tuple[reactive.Database, Any]:
    app_dir = make_app({"m.py": APP, "schema.py": SCHEMA})
    # Handlers pause while the test commits around them: a generous time limit.
    db = await reactive.open(db_url, app=app_dir, function_time_limit_s=60)
    return db, _module(app_dir)


async def _commit(db: reactive.Database, txn: Any) -> int:
    """Commit an engine-level transaction and wait until it is durable and visible."""
    ts = db._engine.commit(txn)
    assert ts is not None
    db._flusher.nudge()
    await db._flusher.wait(ts)
    return int(ts)


def _names(txn: Any) -> list[str]:
    docs, _, done = txn.scan("items", "by_creation_time", [], "asc", None, None, None, None, True)
    assert done
    return sorted(d["name"] for d in docs)


# -- engine level --------------------------------------------------------------------------


async def test_engine_snapshot_isolation(db_url: str, make_app: Any) -> None:
    db, _ = await _open(db_url, make_app)
    try:
        seed = await db.mutation("m:add", {"name": "seed", "value": 0})
        engine = db._engine

        writer = engine.begin(False)
        other_writer = engine.begin(False)
        reader = engine.begin(True)
        assert writer.begin_ts == reader.begin_ts == other_writer.begin_ts

        new_id = writer.insert("items", {"name": "new", "value": 1})
        writer.replace(seed, {"name": "seed", "value": 99})
        # Uncommitted writes are invisible to everyone else.
        assert reader.get(new_id) is None
        assert reader.get(seed)["value"] == 0
        assert other_writer.get(new_id) is None

        ts = engine.commit(writer)
        assert ts is not None and ts > reader.begin_ts
        # Committed but not yet durable: a transaction begun now does not see it either.
        between = engine.begin(True)
        assert between.begin_ts < ts
        assert between.get(new_id) is None
        assert between.get(seed)["value"] == 0

        db._flusher.nudge()
        await db._flusher.wait(ts)
        assert db.timestamp >= ts

        # The transactions begun before the commit still read their snapshot.
        for txn in (reader, other_writer, between):
            assert txn.get(new_id) is None
            assert txn.get(seed)["value"] == 0
            assert _names(txn) == ["seed"]
            by_value, _, _ = txn.scan(
                "items", "by_value", [("eq", "value", 99)], "asc", None, None, None, None, True
            )
            assert by_value == []
            by_value, _, _ = txn.scan(
                "items", "by_value", [("eq", "value", 0)], "asc", None, None, None, None, True
            )
            assert [d["_id"] for d in by_value] == [seed]

        # A transaction begun after it sees all of it.
        later = engine.begin(True)
        assert later.begin_ts >= ts
        assert later.get(new_id)["name"] == "new"
        assert later.get(seed)["value"] == 99
        assert _names(later) == ["new", "seed"]

        # The public API agrees.
        assert await db.query("m:names") == ["new", "seed"]
        # The old snapshot is still served as a point-in-time read.
        outcome = await db.run_query("m:names", ts=reader.begin_ts)
        assert outcome.error is None and outcome.value == ["seed"]
    finally:
        await db.close()


async def test_engine_two_writers_do_not_see_each_other(db_url: str, make_app: Any) -> None:
    db, _ = await _open(db_url, make_app)
    try:
        await db.mutation("m:add", {"name": "seed", "value": 0})
        engine = db._engine
        a = engine.begin(False)
        b = engine.begin(False)
        a_id = a.insert("items", {"name": "from_a", "value": 1})
        b_id = b.insert("items", {"name": "from_b", "value": 2})
        assert a.get(b_id) is None and b.get(a_id) is None
        # Each sees only its own insert.
        assert _names(a) == ["from_a", "seed"]
        assert _names(b) == ["from_b", "seed"]
        ts_a = await _commit(db, a)
        # b still reads its snapshot: a's committed insert is invisible to it.
        assert b.get(a_id) is None
        assert _names(b) == ["from_b", "seed"]
        c = engine.begin(True)
        assert c.begin_ts >= ts_a
        assert _names(c) == ["from_a", "seed"]
        assert c.get(b_id) is None
        # b scanned the range a inserted into: committing b after a is not serializable.
        with pytest.raises(WriteConflict) as info:
            engine.commit(b)
        assert info.value.table == "items"
        assert info.value.ts == ts_a
        assert _names(engine.begin(True)) == ["from_a", "seed"]
    finally:
        await db.close()


async def test_engine_reads_own_writes(db_url: str, make_app: Any) -> None:
    db, _ = await _open(db_url, make_app)
    try:
        seed = await db.mutation("m:add", {"name": "seed", "value": 0})
        txn = db._engine.begin(False)
        new_id = txn.insert("items", {"name": "mine", "value": 5})
        assert txn.get(new_id)["value"] == 5
        assert _names(txn) == ["mine", "seed"]
        txn.replace(new_id, {"name": "mine", "value": 6})
        assert txn.get(new_id)["value"] == 6
        docs, _, _ = txn.scan(
            "items", "by_value", [("eq", "value", 6)], "asc", None, None, None, None, True
        )
        assert [d["_id"] for d in docs] == [new_id]
        docs, _, _ = txn.scan(
            "items", "by_value", [("eq", "value", 5)], "asc", None, None, None, None, True
        )
        assert docs == []
        txn.delete(seed)
        assert txn.get(seed) is None
        assert _names(txn) == ["mine"]
        # Nothing of it is visible outside before the commit.
        assert await db.query("m:names") == ["seed"]
        await _commit(db, txn)
        assert await db.query("m:names") == ["mine"]
    finally:
        await db.close()


# -- public API ----------------------------------------------------------------------------


async def test_query_reads_its_snapshot_while_a_mutation_commits(
    db_url: str, make_app: Any
) -> None:
    db, mod = await _open(db_url, make_app)
    try:
        await db.mutation("m:add", {"name": "seed", "value": 0})
        started, proceed = _hook(mod, "query")
        task = asyncio.create_task(db.query("m:paused_names"))
        await asyncio.wait_for(started.wait(), 10)
        # The query's transaction has begun; commit a new document now.
        await db.mutation("m:add", {"name": "late", "value": 1})
        assert await db.query("m:names") == ["late", "seed"]
        proceed.set()
        assert await asyncio.wait_for(task, 10) == ["seed"]
        # A query begun afterwards sees it.
        assert await db.query("m:paused_names") == ["late", "seed"]
    finally:
        await db.close()


async def test_query_repeatable_read_of_a_patched_document(db_url: str, make_app: Any) -> None:
    db, mod = await _open(db_url, make_app)
    try:
        doc_id = await db.mutation("m:add", {"name": "x", "value": 1})
        started, proceed = _hook(mod, "get")
        task = asyncio.create_task(db.query("m:paused_get", {"id": doc_id}))
        await asyncio.wait_for(started.wait(), 10)
        await db.mutation("m:set_value", {"id": doc_id, "value": 2})
        proceed.set()
        assert await asyncio.wait_for(task, 10) == [1, 1]
        assert await db.query("m:paused_get", {"id": doc_id}) == [2, 2]
    finally:
        await db.close()


async def test_mutation_reads_its_snapshot_and_is_rerun_after_a_conflict(
    db_url: str, make_app: Any
) -> None:
    db, mod = await _open(db_url, make_app)
    try:
        await db.mutation("m:add", {"name": "seed", "value": 0})
        started, proceed = _hook(mod, "mutation")
        task = asyncio.create_task(db.run_mutation("m:paused_count"))
        await asyncio.wait_for(started.wait(), 10)
        # Both mutations have begun; this one commits first.
        await db.mutation("m:add", {"name": "late", "value": 1})
        proceed.set()
        outcome = await asyncio.wait_for(task, 10)
        # The first attempt read the snapshot from before "late"; it read the range "late"
        # was inserted into, so its commit conflicted and it ran again on the new snapshot.
        assert mod.SEEN[0] == ["seed"]
        assert outcome.attempts == 2
        assert mod.SEEN == [["seed"], ["late", "seed"]]
        assert outcome.value == ["late", "seed"]
        # What it committed agrees with the commit order.
        counts = await _all_counts(db)
        assert counts == [2]
    finally:
        await db.close()


async def _all_counts(db: reactive.Database) -> list[int]:
    txn = db._engine.begin(True)
    docs, _, _ = txn.scan("counts", "by_creation_time", [], "asc", None, None, None, None, True)
    return [d["n"] for d in docs]


async def test_read_only_mutation_reads_its_snapshot(db_url: str, make_app: Any) -> None:
    db, mod = await _open(db_url, make_app)
    try:
        await db.mutation("m:add", {"name": "seed", "value": 0})
        started, proceed = _hook(mod, "read_only_mutation")
        task = asyncio.create_task(db.run_mutation("m:paused_read_only"))
        await asyncio.wait_for(started.wait(), 10)
        await db.mutation("m:add", {"name": "late", "value": 1})
        proceed.set()
        outcome = await asyncio.wait_for(task, 10)
        assert mod.SEEN[0] == ["seed"]
        # Whatever the engine decides for a read-only mutation, each attempt saw exactly
        # one snapshot and the returned value is that of the last attempt.
        assert len(mod.SEEN) == outcome.attempts
        assert outcome.value == mod.SEEN[-1]
    finally:
        await db.close()


async def test_mutation_reads_own_writes(db_url: str, make_app: Any) -> None:
    db, _ = await _open(db_url, make_app)
    try:
        await db.mutation("m:add", {"name": "seed", "value": 0})
        out = await db.mutation("m:own_writes", {"name": "mine"})
        new_id = out["id"]
        assert out["get_after_insert"] == ["mine", 1]
        assert out["scan_after_insert"] == ["mine", "seed"]
        assert out["index_after_insert"] == [new_id]
        assert out["get_after_patch"] == [2, "x"]
        assert out["index_after_patch"] == [new_id]
        assert out["old_key_after_patch"] == []
        assert out["get_after_replace"] == [3, False]
        assert await db.query("m:names") == ["mine", "seed"]

        doc, listed = await db.mutation("m:delete_then_read", {"id": new_id})
        assert doc is None
        assert listed is False
        assert await db.query("m:names") == ["seed"]
    finally:
        await db.close()


async def test_failed_mutation_writes_are_invisible(db_url: str, make_app: Any) -> None:
    app_dir = make_app(
        {
            "m.py": APP
            + """

@mutation(args={})
async def insert_then_fail(ctx):
    await ctx.db.insert("items", {"name": "doomed", "value": 1})
    assert (await ctx.db.query("items").collect())[-1]["name"] == "doomed"
    raise RuntimeError("boom")
""",
            "schema.py": SCHEMA,
        }
    )
    async with reactive.open(db_url, app=app_dir) as db:
        await db.mutation("m:add", {"name": "seed", "value": 0})
        try:
            await db.mutation("m:insert_then_fail")
        except RuntimeError as exc:
            assert "boom" in str(exc)
        else:
            raise AssertionError("the mutation should have failed")
        assert await db.query("m:names") == ["seed"]


# -- never half of a commit -------------------------------------------------------------------


async def test_point_in_time_reads_show_all_or_nothing_of_each_commit(
    db_url: str, make_app: Any
) -> None:
    db, _ = await _open(db_url, make_app)
    try:
        outcomes = await asyncio.gather(
            *(db.run_mutation("m:insert_pair", {"k": k}) for k in range(40))
        )
        for k, outcome in enumerate(outcomes):
            at = await db.run_query("m:pair_sides", {"k": k}, ts=outcome.ts)
            assert at.error is None and at.value == ["a", "b"], (k, at.value)
            before = await db.run_query("m:pair_sides", {"k": k}, ts=outcome.ts - 1)
            assert before.error is None and before.value == [], (k, before.value)
    finally:
        await db.close()


async def test_concurrent_reads_never_see_half_a_commit(db_url: str, make_app: Any) -> None:
    db, _ = await _open(db_url, make_app)
    writers = 4
    rounds = 60
    problems: list[str] = []
    observations = 0
    thread_observations = 0
    stop = threading.Event()

    def check(snapshot: dict[str, Any], where: str) -> None:
        if snapshot["left"] != snapshot["right"]:
            problems.append(f"{where}: left {snapshot['left']} != right {snapshot['right']}")
        for k, sides in snapshot["pairs"].items():
            if sorted(sides) != ["a", "b"]:
                problems.append(f"{where}: pair {k} has sides {sides}")

    def thread_reader() -> None:
        # A reader on another thread, racing the event loop's publishes for real.
        nonlocal thread_observations
        engine = db._engine
        while not stop.is_set():
            txn = engine.begin(True)
            snap: dict[str, Any] = {"left": {}, "right": {}, "pairs": {}}
            for table in ("left", "right"):
                docs, _, _ = txn.scan(
                    table, "by_creation_time", [], "asc", None, None, None, None, True
                )
                snap[table] = {d["writer"]: d["n"] for d in docs}
            docs, _, _ = txn.scan(
                "pairs", "by_creation_time", [], "asc", None, None, None, None, True
            )
            for d in docs:
                snap["pairs"].setdefault(d["k"], []).append(d["side"])
            check(snap, f"thread@{txn.begin_ts}")
            thread_observations += 1
            time.sleep(0.001)

    async def writer(w: int) -> None:
        for i in range(rounds):
            await db.mutation("m:bump_pair", {"writer": w})
            await db.mutation("m:insert_pair", {"k": w * 1000 + i})

    async def reader() -> None:
        nonlocal observations
        while not done.is_set():
            outcome = await db.run_query("m:read_pairs")
            assert outcome.error is None, outcome.error
            check(outcome.value, f"query@{outcome.txn.begin_ts}")
            observations += 1
            await asyncio.sleep(0)

    try:
        # Tables must exist before the thread scans them.
        await db.mutation("m:bump_pair", {"writer": -1})
        await db.mutation("m:insert_pair", {"k": -1})
        done = asyncio.Event()
        thread = threading.Thread(target=thread_reader, daemon=True)
        thread.start()
        readers = [asyncio.create_task(reader()) for _ in range(3)]
        try:
            await asyncio.gather(*(writer(w) for w in range(writers)))
        finally:
            done.set()
            await asyncio.gather(*readers)
            stop.set()
            await asyncio.to_thread(thread.join, 30)
        assert not thread.is_alive()
        assert problems == [], problems[:5]
        assert observations > 10
        assert thread_observations > 0
        final = await db.query("m:read_pairs")
        expected = {"-1": 1, **{str(w): rounds for w in range(writers)}}
        assert final["left"] == expected
        assert final["right"] == expected
        assert len(final["pairs"]) == 1 + writers * rounds
    finally:
        await db.close()
