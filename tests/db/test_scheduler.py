"""The scheduler: ``ctx.scheduler`` in mutations and actions, the ``_scheduled_functions``
table, the worker (due order, exactly-once mutations, at-most-once actions), cancel,
restarts, ``ctx.db.system`` and clear errors.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import reactive
from reactive.db.scheduler import SCHEDULED_FUNCTIONS
from reactive.db.system import write_system
from reactive.errors import (
    ArgumentValidationError,
    FunctionNotFoundError,
    InvalidIdError,
    LimitExceededError,
)

MakeApp = Callable[[dict[str, str]], Path]

APP = {
    "jobs.py": """
        import datetime

        from reactive import action, internal_mutation, mutation, query, v


        @internal_mutation(args={"tag": v.string()})
        async def record(ctx, tag):
            await ctx.db.insert("runs", {"tag": tag, "at": ctx.now})


        @mutation(args={"tag": v.string(), "delay_s": v.float64()})
        async def later(ctx, tag, delay_s):
            return await ctx.scheduler.run_after(delay_s, "jobs:record", {"tag": tag})


        @mutation(args={"tag": v.string(), "at_ms": v.float64()})
        async def at(ctx, tag, at_ms):
            when = datetime.datetime.fromtimestamp(at_ms / 1000, tz=datetime.timezone.utc)
            return await ctx.scheduler.run_at(when, record, {"tag": tag})


        @mutation(args={"tag": v.string()})
        async def later_then_fail(ctx, tag):
            await ctx.scheduler.run_after(0, "jobs:record", {"tag": tag})
            raise ValueError("rolled back, and the scheduling with it")


        @mutation(args={"id": v.id("_scheduled_functions")})
        async def cancel(ctx, id):
            await ctx.scheduler.cancel(id)


        @query(args={"id": v.string()})
        async def job(ctx, id):
            return await ctx.db.system.get(id)


        @query(args={})
        async def jobs(ctx):
            return await ctx.db.system.query("_scheduled_functions").collect()


        @query(args={})
        async def runs(ctx):
            return sorted(r["tag"] for r in await ctx.db.query("runs").collect())


        @action(args={"tag": v.string(), "fail": v.boolean()})
        async def act(ctx, tag, fail):
            await ctx.run_mutation("jobs:record", {"tag": tag})
            if fail:
                raise RuntimeError("the action failed")
            return tag


        @action(args={"tag": v.string()})
        async def schedule_from_action(ctx, tag):
            return await ctx.scheduler.run_after(0, "jobs:act", {"tag": tag, "fail": False})


        @mutation(args={"tag": v.string(), "fail": v.boolean()})
        async def run_action_soon(ctx, tag, fail):
            return await ctx.scheduler.run_after(0, "jobs:act", {"tag": tag, "fail": fail})


        @mutation(args={"what": v.string()})
        async def bad(ctx, what):
            if what == "query":
                await ctx.scheduler.run_after(0, "jobs:runs", {})
            elif what == "args":
                await ctx.scheduler.run_after(0, "jobs:record", {"tag": 3})
            elif what == "missing":
                await ctx.scheduler.run_after(0, "jobs:nope", {})
            elif what == "naive":
                await ctx.scheduler.run_at(datetime.datetime(2030, 1, 1), "jobs:record", {})
            elif what == "nan":
                await ctx.scheduler.run_after(float("nan"), "jobs:record", {"tag": "x"})
            elif what == "many":
                for i in range(1001):
                    await ctx.scheduler.run_after(3600, "jobs:record", {"tag": str(i)})
            elif what == "cancel":
                await ctx.scheduler.cancel("not-an-id")


        @mutation(args={})
        async def new_table_then_schedule(ctx):
            # The table is created by this insert: the id is valid in this transaction.
            thing = await ctx.db.insert("things", {"done": False})
            await ctx.scheduler.run_after(0, finish_thing, {"id": thing})
            return thing


        @internal_mutation(args={"id": v.id("things")})
        async def finish_thing(ctx, id):
            await ctx.db.patch(id, {"done": True})


        @query(args={"id": v.id("things")})
        async def thing(ctx, id):
            return (await ctx.db.get(id))["done"]


        @mutation(args={"n": v.float64()})
        async def fan_out(ctx, n):
            for i in range(int(n)):
                await ctx.scheduler.run_after(0, "jobs:record", {"tag": f"f{i:03d}"})
    """,
}


async def wait_for(check: Callable[[], Any], timeout_s: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = await check()
        if value:
            return value
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def job(db: reactive.Database, job_id: str) -> dict[str, Any]:
    doc: dict[str, Any] = await db.query("jobs:job", {"id": job_id})
    return doc


async def state(db: reactive.Database, job_id: str) -> str:
    return str((await job(db, job_id))["state"]["kind"])


async def test_a_scheduled_mutation_runs_once_when_due(db_url: str, make_app: MakeApp) -> None:
    async with reactive.open(db_url, app=make_app(APP)) as db:
        job_id = await db.mutation("jobs:later", {"tag": "a", "delay_s": 0.0})
        doc = await job(db, job_id)
        assert doc["name"] == "jobs:record" and doc["args"] == {"tag": "a"}
        await wait_for(lambda: _is(db, job_id, "success"))
        assert await db.query("jobs:runs", {}) == ["a"]
        done = await job(db, job_id)
        assert done["completedTime"] >= done["scheduledTime"]
        # Later runs: a delayed one waits for its time.
        t0 = time.time() * 1000
        late = await db.mutation("jobs:at", {"tag": "b", "at_ms": t0 + 400})
        await asyncio.sleep(0.15)
        assert await state(db, late) == "pending"
        await wait_for(lambda: _is(db, late, "success"))
        runs = await db.query("jobs:jobs", {})
        record = next(r for r in runs if r["_id"] == late)
        assert record["completedTime"] >= t0 + 400


async def _is(db: reactive.Database, job_id: str, kind: str) -> bool:
    return await state(db, job_id) == kind


async def test_scheduling_rolls_back_with_its_mutation(db_url: str, make_app: MakeApp) -> None:
    async with reactive.open(db_url, app=make_app(APP)) as db:
        with pytest.raises(ValueError, match="rolled back"):
            await db.mutation("jobs:later_then_fail", {"tag": "x"})
        await asyncio.sleep(0.2)
        assert await db.query("jobs:jobs", {}) == []
        assert await db.query("jobs:runs", {}) == []


async def test_cancel_a_pending_function(db_url: str, make_app: MakeApp) -> None:
    async with reactive.open(db_url, app=make_app(APP)) as db:
        job_id = await db.mutation("jobs:later", {"tag": "c", "delay_s": 0.5})
        await db.mutation("jobs:cancel", {"id": job_id})
        assert await state(db, job_id) == "canceled"
        await asyncio.sleep(0.8)
        assert await db.query("jobs:runs", {}) == []
        assert await state(db, job_id) == "canceled"


async def test_actions_run_at_most_once_and_record_failures(db_url: str, make_app: MakeApp) -> None:
    async with reactive.open(db_url, app=make_app(APP)) as db:
        ok = await db.mutation("jobs:run_action_soon", {"tag": "ok", "fail": False})
        bad = await db.mutation("jobs:run_action_soon", {"tag": "bad", "fail": True})
        await wait_for(lambda: _is(db, ok, "success"))
        await wait_for(lambda: _is(db, bad, "failed"))
        assert "the action failed" in (await job(db, bad))["state"]["error"]
        assert await db.query("jobs:runs", {}) == ["bad", "ok"]
        # An action schedules too (its own transaction).
        from_action = await db.action("jobs:schedule_from_action", {"tag": "nested"})
        await wait_for(lambda: _is(db, from_action, "success"))
        assert "nested" in await db.query("jobs:runs", {})


async def test_pending_work_survives_a_restart_and_interrupted_actions_fail(
    tmp_path: Path, make_app: MakeApp
) -> None:
    url = f"sqlite:///{tmp_path / 'sched.db'}"
    app = make_app(APP)
    async with reactive.open(url, app=app, run_scheduled=False) as db:
        pending = await db.mutation("jobs:later", {"tag": "p", "delay_s": 0.0})
        action_job = await db.mutation("jobs:run_action_soon", {"tag": "cut", "fail": False})

        # As if the process died while the action ran: it is left inProgress.
        def mark_running(txn: Any) -> None:
            doc = txn.get(action_job)
            fields = {k: v for k, v in doc.items() if not k.startswith("_")}
            txn.replace(action_job, {**fields, "state": {"kind": "inProgress"}})

        await write_system(db, mark_running)
        await asyncio.sleep(0.2)
        assert await state(db, pending) == "pending"  # not run: run_scheduled=False
    async with reactive.open(url, app=app) as db:
        await wait_for(lambda: _is(db, pending, "success"))
        failed = await job(db, action_job)
        assert failed["state"]["kind"] == "failed"
        assert "not run again" in failed["state"]["error"]
        assert await db.query("jobs:runs", {}) == ["p"]


async def test_many_jobs_each_run_exactly_once(db_url: str, make_app: MakeApp) -> None:
    async with reactive.open(db_url, app=make_app(APP)) as db:
        await db.mutation("jobs:fan_out", {"n": 60.0})

        async def all_done() -> bool:
            jobs = await db.query("jobs:jobs", {})
            return all(j["state"]["kind"] == "success" for j in jobs)

        await wait_for(all_done, 30.0)
        assert await db.query("jobs:runs", {}) == [f"f{i:03d}" for i in range(60)]


async def test_the_state_is_reactive(db_url: str, make_app: MakeApp) -> None:
    async with reactive.open(db_url, app=make_app(APP)) as db:
        job_id = await db.mutation("jobs:later", {"tag": "r", "delay_s": 0.3})
        sub = db.subscribe("jobs:job", {"id": job_id})
        assert (await sub.get(timeout_s=5))["state"]["kind"] == "pending"
        assert (await sub.get(timeout_s=5))["state"]["kind"] == "success"
        sub.close()


@pytest.mark.parametrize(
    ("what", "error", "words"),
    [
        ("query", FunctionNotFoundError, "only mutations and actions"),
        ("args", ArgumentValidationError, "jobs:record"),
        ("missing", FunctionNotFoundError, "nope"),
        ("naive", ValueError, "aware datetime"),
        ("nan", ValueError, "finite"),
        ("many", LimitExceededError, "1000"),
        ("cancel", InvalidIdError, "not-an-id"),
    ],
)
async def test_bad_schedulings_are_clear_errors(
    db_url: str, make_app: MakeApp, what: str, error: type[Exception], words: str
) -> None:
    async with reactive.open(db_url, app=make_app(APP)) as db:
        with pytest.raises(error, match=words):
            await db.mutation("jobs:bad", {"what": what})
        assert await db.query("jobs:jobs", {}) == []


async def test_system_tables_other_than_scheduled_functions_are_not_readable(
    db_url: str, make_app: MakeApp
) -> None:
    app = {
        **APP,
        "peek.py": """
            from reactive import query


            @query(args={})
            async def env(ctx):
                return await ctx.db.system.query("_environment_variables").collect()
        """,
    }
    async with reactive.open(db_url, app=make_app(app)) as db:
        with pytest.raises(Exception, match="cannot be read"):
            await db.query("peek:env", {})
        assert SCHEDULED_FUNCTIONS in [t["name"] for t in db._engine.tables()]


async def test_starts_per_second_paces_due_functions(db_url: str, make_app: MakeApp) -> None:
    # Burst of one second's worth (4), then 4 a second: 12 due functions need >= 2 s.
    async with reactive.open(db_url, app=make_app(APP), scheduler_starts_per_s=4) as db:
        t0 = time.monotonic()
        await db.mutation("jobs:fan_out", {"n": 12.0})

        async def done() -> bool:
            return len(await db.query("jobs:runs", {})) == 12

        await wait_for(done, 30.0)
        assert time.monotonic() - t0 >= 1.9


async def test_concurrency_bounds_running_actions(db_url: str, make_app: MakeApp) -> None:
    app = {
        **APP,
        "slow.py": """
            import asyncio

            from reactive import action, mutation, v

            RUNNING = [0, 0]  # now, most at once


            @action(args={})
            async def nap(ctx):
                RUNNING[0] += 1
                RUNNING[1] = max(RUNNING[1], RUNNING[0])
                await asyncio.sleep(0.05)
                RUNNING[0] -= 1


            @mutation(args={"n": v.float64()})
            async def many(ctx, n):
                for _ in range(int(n)):
                    await ctx.scheduler.run_after(0, "slow:nap", {})
        """,
    }
    root = make_app(app)
    async with reactive.open(db_url, app=root, scheduler_concurrency=2) as db:
        await db.mutation("slow:many", {"n": 8.0})

        async def all_done() -> bool:
            jobs = await db.query("jobs:jobs", {})
            return len(jobs) == 8 and all(j["state"]["kind"] == "success" for j in jobs)

        await wait_for(all_done, 30.0)
        import sys

        assert sys.modules[f"{root.name}.slow"].RUNNING[1] == 2


@pytest.mark.parametrize(
    ("knobs", "words"),
    [
        ({"scheduler_concurrency": 0}, "scheduler_concurrency"),
        ({"scheduler_concurrency": 2.5}, "scheduler_concurrency"),
        ({"scheduler_starts_per_s": 0}, "scheduler_starts_per_s"),
        ({"scheduler_starts_per_s": float("inf")}, "scheduler_starts_per_s"),
    ],
)
async def test_bad_scheduler_knobs_are_refused(
    db_url: str, knobs: dict[str, Any], words: str
) -> None:
    with pytest.raises(ValueError, match=words):
        reactive.open(db_url, **knobs)


@pytest.mark.parametrize("kind", ["sqlite", "postgres", "mysql"])
async def test_scheduling_on_every_backend(
    kind: str, backend_urls: Callable[[str], str], make_app: MakeApp
) -> None:
    url = backend_urls(kind)
    app = make_app(APP)
    async with reactive.open(url, app=app, run_scheduled=False) as db:
        kept = await db.mutation("jobs:later", {"tag": "kept", "delay_s": 0.0})
        dropped = await db.mutation("jobs:later", {"tag": "dropped", "delay_s": 0.0})
        await db.mutation("jobs:cancel", {"id": dropped})
    async with reactive.open(url, app=app) as db:
        await wait_for(lambda: _is(db, kept, "success"))
        ran = await db.mutation("jobs:run_action_soon", {"tag": "act", "fail": False})
        await wait_for(lambda: _is(db, ran, "success"))
        assert await state(db, dropped) == "canceled"
        assert await db.query("jobs:runs", {}) == ["act", "kept"]


async def test_exports_record_scheduled_functions_and_imports_skip_them(
    tmp_path: Path, make_app: MakeApp
) -> None:
    import json
    import zipfile

    from reactive.snapshot import export_snapshot, import_snapshot

    app = make_app(APP)
    path = tmp_path / "snap.zip"
    async with reactive.open(f"sqlite:///{tmp_path / 'a.db'}", app=app) as db:
        job_id = await db.mutation("jobs:later", {"tag": "e", "delay_s": 3600.0})
        report = await export_snapshot(db, path)
    assert report.system_tables == {SCHEDULED_FUNCTIONS: 1}
    with zipfile.ZipFile(path) as zf:
        lines = zf.read(f"{SCHEDULED_FUNCTIONS}/documents.jsonl").decode().splitlines()
        listed = [json.loads(x)["name"] for x in zf.read("_tables/documents.jsonl").splitlines()]
    assert [json.loads(x)["_id"] for x in lines] == [job_id]
    assert SCHEDULED_FUNCTIONS not in listed
    async with reactive.open(f"sqlite:///{tmp_path / 'b.db'}", app=app) as db:
        imported = await import_snapshot(db, path)
        assert f"system table {SCHEDULED_FUNCTIONS}" in imported.skipped
        assert await db.query("jobs:jobs", {}) == []


async def test_ids_of_a_table_made_in_the_same_mutation(db_url: str, make_app: MakeApp) -> None:
    async with reactive.open(db_url, app=make_app(APP)) as db:
        thing = await db.mutation("jobs:new_table_then_schedule", {})

        async def done() -> bool:
            return bool(await db.query("jobs:thing", {"id": thing}))

        await wait_for(done)
        assert await db.query("jobs:thing", {"id": thing}) is True
        assert [j["state"]["kind"] for j in await db.query("jobs:jobs", {})] == ["success"]
