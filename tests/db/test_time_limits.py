"""Time limits and where handlers run (embedded): ``reactive.db.executor`` through the runner.

Each handler kind past its limit fails with ``FunctionTimeoutError`` and is stopped (its
thread comes back); a busy ``async def`` handler leaves the event loop after one step and
stays on worker threads; nothing a stopped mutation wrote is committed; the event loop
keeps running meanwhile.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest

import reactive
from reactive.db import executor
from reactive.errors import FunctionTimeoutError

APP = """
import asyncio
import threading
import time

from reactive import action, mutation, query, v

THREADS = {}


@query(args={})
async def quick(ctx):
    THREADS["quick"] = threading.get_ident()
    return len(await ctx.db.query("marks").collect())


@query(args={})
async def busy(ctx):
    THREADS.setdefault("busy", []).append(threading.get_ident())
    end = time.monotonic() + 0.2
    while time.monotonic() < end:
        pass
    return "done"


@query(args={"n": v.float64()})
async def steady(ctx, n):
    THREADS.setdefault("steady", []).append(threading.get_ident())
    end = time.monotonic() + 0.015  # within the inline budget (25 ms) each
    while time.monotonic() < end:
        pass
    return n


@query(args={})
def spin(ctx):
    while True:
        pass


@query(args={})
async def waits(ctx):
    await asyncio.sleep(30)


@mutation(args={})
async def write_then_spin(ctx):
    await ctx.db.insert("marks", {"note": "never committed"})
    while True:
        pass


@mutation(args={})
def plain_sleep(ctx):
    time.sleep(0.6)
    return "slept"


@mutation(args={"note": v.string()})
async def mark(ctx, note):
    return await ctx.db.insert("marks", {"note": note})


@action(args={})
async def slow_action(ctx):
    await asyncio.sleep(30)


@action(args={})
async def nested(ctx):
    THREADS["action"] = threading.get_ident()
    await ctx.run_mutation("m:mark", {"note": "from an action"})
    return await ctx.run_query("m:quick", {})


@action(args={})
def plain_action(ctx):
    return threading.get_ident()
"""

SCHEMA = """
from reactive import define_schema, define_table, v

schema = define_schema({"marks": define_table({"note": v.string()})})
"""


@pytest.fixture
async def db(db_url: str, make_app: Any) -> Any:
    app_dir = make_app({"m.py": APP, "schema.py": SCHEMA})
    database = await reactive.open(
        db_url, app=app_dir, function_time_limit_s=0.5, action_time_limit_s=0.5
    )
    yield database
    await database.close()


def _module(db: Any) -> Any:
    import importlib

    return importlib.import_module(f"{db.app.name}.m")


async def _loop_stall_while(coro: Any, pause_s: float = 0.005) -> tuple[Any, float]:
    """Await ``coro`` while a ticker measures the longest gap of the event loop (s).

    The ticker sleeps ``pause_s`` between ticks: 0 ticks once per turn of the loop.
    """
    worst = 0.0
    done = asyncio.Event()

    async def tick() -> None:
        nonlocal worst
        last = time.monotonic()
        while not done.is_set():
            await asyncio.sleep(pause_s)
            now = time.monotonic()
            worst = max(worst, now - last)
            last = now

    ticker = asyncio.create_task(tick())
    try:
        result: Any = await coro
    except Exception as exc:
        result = exc
    done.set()
    await ticker
    return result, worst


async def test_quick_async_query_runs_inline(db: Any) -> None:
    assert executor.inline_possible()
    assert await db.query("m:quick") == 0
    assert _module(db).THREADS["quick"] == threading.get_ident()


async def test_busy_async_query_moves_to_workers_for_good(db: Any) -> None:
    result, stall = await _loop_stall_while(db.query("m:busy"))
    assert result == "done"
    # One step on the loop (cut at the 25 ms budget), then a worker thread.
    assert stall < 0.15, stall
    assert await db.query("m:busy") == "done"
    threads = _module(db).THREADS["busy"]
    assert threads[0] == threading.get_ident()  # the first, interrupted attempt
    assert all(t != threading.get_ident() for t in threads[1:]), threads


async def test_handlers_within_budget_do_not_add_up_in_one_turn(db: Any) -> None:
    # 16 runs of 15 ms each start in the same turn of the loop: inline one after another
    # they would hold it for 240 ms. Past TURN_BUDGET_S (50 ms) a turn's runs wait for the
    # next turn, so the loop polls and runs its other tasks (the ticker, once per turn)
    # every 4 runs or so.

    async def calls() -> list[Any]:
        # The tasks start once the ticker runs (gather() would start them at once).
        return list(
            await asyncio.gather(*(db.query("m:steady", {"n": float(i)}) for i in range(16)))
        )

    result, stall = await _loop_stall_while(calls(), pause_s=0)
    assert result == [float(i) for i in range(16)]
    threads = _module(db).THREADS["steady"]
    assert threads == [threading.get_ident()] * 16  # all inline, none run twice
    assert stall < 0.15, stall


async def test_a_caller_running_back_to_back_does_not_starve_others(db: Any) -> None:
    # One task runs 20 queries of 15 ms back to back: each returns without suspending,
    # so the task goes straight on to its next run. It waits once a turn is spent, but if
    # it were let go first in every new turn it would take each turn's budget before a
    # query that another task started meanwhile (that one would finish last). Runs that
    # wait for a turn are served in arrival order, and a newcomer queues behind them.
    order: list[str] = []

    async def hog() -> None:
        for i in range(20):
            await db.query("m:steady", {"n": float(i)})
            order.append(f"hog{i}")

    async def other() -> None:
        await asyncio.sleep(0)  # the hog is under way
        assert await db.query("m:steady", {"n": 100.0}) == 100.0
        order.append("other")

    await asyncio.gather(hog(), other())
    assert len(order) == 21
    assert order.index("other") < 12, order
    threads = _module(db).THREADS["steady"]
    assert threads == [threading.get_ident()] * 21  # all inline


async def test_plain_def_spinning_query_is_stopped(db: Any) -> None:
    started = time.monotonic()
    result, stall = await _loop_stall_while(db.query("m:spin"))
    assert isinstance(result, FunctionTimeoutError), result
    assert "time limit of 0.5 s" in str(result)
    assert time.monotonic() - started < 2.0
    assert stall < 0.15, stall
    # Its thread is interrupted and comes back to the pool.
    deadline = time.monotonic() + 5.0
    while db._runner._functions.busy and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert db._runner._functions.busy == 0


async def test_waiting_async_query_times_out(db: Any) -> None:
    with pytest.raises(FunctionTimeoutError):
        await asyncio.wait_for(db.query("m:waits"), 5.0)


async def test_spinning_mutation_commits_nothing(db: Any) -> None:
    result, stall = await _loop_stall_while(db.mutation("m:write_then_spin"))
    assert isinstance(result, FunctionTimeoutError), result
    assert stall < 0.15, stall
    assert await db.query("m:quick") == 0
    # The database goes on committing.
    await db.mutation("m:mark", {"note": "after"})
    assert await db.query("m:quick") == 1


async def test_plain_def_sleep_past_the_limit(db: Any) -> None:
    result, stall = await _loop_stall_while(db.mutation("m:plain_sleep"))
    assert isinstance(result, FunctionTimeoutError), result
    assert stall < 0.15, stall


async def test_action_time_limit(db: Any) -> None:
    with pytest.raises(FunctionTimeoutError, match="action m:slow_action"):
        await asyncio.wait_for(db.action("m:slow_action"), 5.0)


async def test_actions_run_on_workers_and_nest(db: Any) -> None:
    assert await db.action("m:plain_action") != threading.get_ident()
    assert await db.action("m:nested") == 1
    assert _module(db).THREADS["action"] != threading.get_ident()


def test_time_limits_are_checked() -> None:
    for bad in (0, -1, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="function_time_limit_s"):
            reactive.open("sqlite:///unused.db", function_time_limit_s=bad)
        with pytest.raises(ValueError, match="action_time_limit_s"):
            reactive.open("sqlite:///unused.db", action_time_limit_s=bad)
