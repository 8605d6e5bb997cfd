"""The embedded call path kept its behaviour through the per-call overhead work.

A mutation or query whose caller is cancelled ends with ``CancelledError`` (it used to end
with ``UnboundLocalError``) and is recorded as a failed run; run ids keep the ``uuid4``
hex form; an ``async def`` handler that suspends still runs inline, within its time
limit; inserts leave the caller's dict alone and drop top-level ``UNSET`` fields; an
argument dict passes through ``call_arguments`` as it is; the loop guard's alarm is not
raised inside its own garbage-collector callback.
"""

from __future__ import annotations

import asyncio
import collections
import gc
import signal
import sys
import threading
import uuid
from typing import Any

import pytest

import reactive
from reactive.db import executor
from reactive.errors import FunctionTimeoutError
from reactive.functions import call_arguments

APP = """
import asyncio
import threading

from reactive import UNSET, mutation, query, v

THREADS = {}


@mutation(args={"x": v.int64(), "note": v.optional(v.string())})
async def add(ctx, x, note=None):
    doc = {"x": x}
    if note is not None:
        doc["note"] = note
    return await ctx.db.insert("items", doc)


@mutation(args={"x": v.int64()})
async def add_after_sleep(ctx, x):
    THREADS["add_after_sleep"] = threading.get_ident()
    await asyncio.sleep(0.01)
    return await ctx.db.insert("items", {"x": x})


@mutation(args={"x": v.int64()})
async def add_unset(ctx, x):
    doc = {"x": x, "note": UNSET}
    id = await ctx.db.insert("items", doc)
    stored = await ctx.db.get(id)
    return {"kept": doc["note"] is UNSET, "stored": sorted(stored)}


@mutation(args={"x": v.int64()})
async def add_plain(ctx, x):
    doc = {"x": x}
    id = await ctx.db.insert("items", doc)
    return {"same": doc == {"x": x}, "stored": sorted(await ctx.db.get(id))}


@query(args={})
async def count(ctx):
    return len(await ctx.db.query("items").collect())


@query(args={})
async def slow(ctx):
    await asyncio.sleep(30)


@mutation(args={})
async def fails(ctx):
    await ctx.db.insert("items", {"x": 1})
    raise ValueError("boom")
"""

SCHEMA = """
from reactive import define_schema, define_table, v

schema = define_schema(
    {"items": define_table({"x": v.int64(), "note": v.optional(v.string())})}
)
"""


@pytest.fixture
async def db(db_url: str, make_app: Any) -> Any:
    app_dir = make_app({"m.py": APP, "schema.py": SCHEMA})
    database = await reactive.open(db_url, app=app_dir, function_time_limit_s=0.5)
    yield database
    await database.close()


def _module(db: Any) -> Any:
    import importlib

    return importlib.import_module(f"{db.app.name}.m")


async def test_cancelled_mutation_raises_cancelled_error_and_is_recorded(db: Any) -> None:
    task = asyncio.create_task(db.mutation("m:add", {"x": 1}))
    await asyncio.sleep(0)  # it runs up to its commit wait
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    runs = [r for r in db.function_log if r.path == "m:add"]
    assert [r.error for r in runs] == ["CancelledError"]
    # The database goes on.
    assert isinstance(await db.mutation("m:add", {"x": 2}), str)


async def test_cancelled_query_raises_cancelled_error(db: Any) -> None:
    task = asyncio.create_task(db.query("m:slow"))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert [r.error for r in db.function_log if r.path == "m:slow"] == ["CancelledError"]


async def test_run_ids_are_uuid4_hex_and_distinct(db: Any) -> None:
    for i in range(50):
        await db.mutation("m:add", {"x": i})
    ids = [r.execution_id for r in db.function_log]
    assert len(ids) == len(set(ids)) >= 50
    for text in ids:
        parsed = uuid.UUID(text)
        assert parsed.hex == text and parsed.version == 4 and parsed.variant == uuid.RFC_4122


async def test_failed_runs_are_recorded_with_their_error(db: Any) -> None:
    with pytest.raises(ValueError, match="boom"):
        await db.mutation("m:fails")
    (run,) = [r for r in db.function_log if r.path == "m:fails"]
    assert run.error == "ValueError" and run.error_message == "Uncaught ValueError: boom"
    assert await db.query("m:count") == 0  # nothing of it was written


async def test_suspending_handler_runs_inline_and_commits(db: Any) -> None:
    id_ = await db.mutation("m:add_after_sleep", {"x": 7})
    assert isinstance(id_, str)
    assert _module(db).THREADS["add_after_sleep"] == threading.get_ident()
    assert await db.query("m:count") == 1


async def test_suspending_handler_keeps_its_time_limit(db: Any) -> None:
    with pytest.raises(FunctionTimeoutError, match="query m:slow ran past its time limit"):
        await asyncio.wait_for(db.query("m:slow"), 5.0)


async def test_insert_leaves_the_callers_dict_and_drops_unset(db: Any) -> None:
    assert await db.mutation("m:add_unset", {"x": 3}) == {
        "kept": True,
        "stored": ["_creationTime", "_id", "x"],
    }
    assert await db.mutation("m:add_plain", {"x": 4}) == {
        "same": True,
        "stored": ["_creationTime", "_id", "x"],
    }


async def test_arguments_pass_through_as_given() -> None:
    args = {"a": 1}
    assert call_arguments("m:f", (args,), {}) is args
    ordered = collections.OrderedDict(a=1)
    copied = call_arguments("m:f", (ordered,), {})
    assert copied == {"a": 1} and type(copied) is dict
    with pytest.raises(TypeError, match="either as one dict or as keyword arguments"):
        call_arguments("m:f", (args,), {"b": 2})


def test_an_alarm_in_the_guards_gc_callback_is_deferred() -> None:
    """The loop guard's alarm never raises inside its own garbage-collector callback.

    (Raised there, Python would drop it with an "Exception ignored" warning: a collection
    starting just as a step passed its budget.)
    """
    if not executor.inline_possible():
        pytest.skip("the loop guard is not installed here")
    guard = executor._GUARD
    frames: list[Any] = []

    def profile(frame: Any, event: str, arg: Any) -> None:
        if event == "call" and frame.f_code is executor._ON_GC_CODE:
            frames.append(frame)

    sys.setprofile(profile)
    try:
        guard._on_gc("stop", {})
    finally:
        sys.setprofile(None)
    assert frames
    guard.active = True
    try:
        guard._on_alarm(signal.SIGALRM, frames[0])  # deferred: no RunInterrupted
    finally:
        guard.active = False
        signal.setitimer(signal.ITIMER_REAL, 0)


def test_an_alarm_in_another_gc_callback_is_deferred() -> None:
    """Nor inside another library's garbage-collector callback (Hypothesis installs one to
    time collections): the alarm is deferred, not raised and dropped there."""
    if not executor.inline_possible():
        pytest.skip("the loop guard is not installed here")
    guard = executor._GUARD
    frames: list[Any] = []

    def gc_callback(phase: str, info: dict[str, int]) -> None:
        frames.append(sys._getframe())

    gc.callbacks.append(gc_callback)
    try:
        gc.collect()
        assert frames
        guard.active = True
        try:
            guard._on_alarm(signal.SIGALRM, frames[0])  # deferred: no RunInterrupted
            with pytest.raises(executor.RunInterrupted):
                guard._on_alarm(signal.SIGALRM, sys._getframe())  # a step's own frame
        finally:
            guard.active = False
            signal.setitimer(signal.ITIMER_REAL, 0)
    finally:
        gc.callbacks.remove(gc_callback)
