"""Cron jobs: ``crons.py`` schedules, ``_cron_jobs``, runs through the scheduler, one run of
a job at a time, missed runs skipped, updates on restart, and clear errors.
"""

from __future__ import annotations

import asyncio
import datetime
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import reactive
from reactive.crons import cron_jobs, next_run_ms
from reactive.db.cron_runner import CRON_JOBS
from reactive.db.system import write_system
from reactive.errors import ArgumentValidationError, FunctionNotFoundError

MakeApp = Callable[[dict[str, str]], Path]

WORK = """
    import asyncio

    from reactive import action, internal_mutation, query, v


    @internal_mutation(args={"tag": v.string()})
    async def tick(ctx, tag):
        await ctx.db.insert("ticks", {"tag": tag})


    @action(args={})
    async def slow(ctx):
        await ctx.run_mutation("work:tick", {"tag": "slow"})
        await asyncio.sleep(2.5)


    @query(args={})
    async def ticks(ctx):
        return [t["tag"] for t in await ctx.db.query("ticks").collect()]


    @query(args={})
    async def crons(ctx):
        return await ctx.db.system.query("_cron_jobs").collect()


    @query(args={})
    async def jobs(ctx):
        return await ctx.db.system.query("_scheduled_functions").collect()
"""


def app_with(crons_source: str) -> dict[str, str]:
    return {"work.py": WORK, "crons.py": crons_source}


EVERY_SECOND = """
    from reactive import cron_jobs

    from . import work

    crons = cron_jobs()
    crons.interval("tick", {"seconds": 1}, work.tick, {"tag": "t"})
    crons.daily("nightly", {"hour_utc": 3, "minute_utc": 30}, "work:tick", {"tag": "n"})
"""


async def wait_for(check: Callable[[], Any], timeout_s: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = await check()
        if value:
            return value
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


def by_name(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {d["name"]: d for d in docs}


async def test_an_interval_job_runs_at_once_then_every_interval(
    db_url: str, make_app: MakeApp
) -> None:
    async with reactive.open(db_url, app=make_app(app_with(EVERY_SECOND))) as db:
        t0 = time.time() * 1000

        async def two_ticks() -> bool:
            return (await db.query("work:ticks", {})).count("t") >= 2

        await wait_for(two_ticks)
        jobs = by_name(await db.query("work:crons", {}))
        assert set(jobs) == {"tick", "nightly"}
        tick = jobs["tick"]
        assert tick["schedule"] == {"type": "interval", "seconds": 1.0}
        assert tick["function"] == "work:tick" and tick["args"] == {"tag": "t"}
        assert tick["nextRun"] > t0
        last = tick["lastRun"]
        scheduled = {j["_id"]: j for j in await db.query("work:jobs", {})}
        assert scheduled[last["scheduledFunctionId"]]["name"] == "work:tick"
        nightly = jobs["nightly"]
        when = datetime.datetime.fromtimestamp(nightly["nextRun"] / 1000, tz=datetime.UTC)
        assert (when.hour, when.minute, when.second) == (3, 30, 0)
        assert "lastRun" not in nightly


async def test_one_run_of_a_job_at_a_time(db_url: str, make_app: MakeApp) -> None:
    source = """
        from reactive import cron_jobs

        crons = cron_jobs()
        crons.interval("slow", {"seconds": 1}, "work:slow")
    """
    async with reactive.open(db_url, app=make_app(app_with(source))) as db:

        async def skipped() -> Any:
            return (await db.query("work:crons", {}))[0].get("lastSkipped")

        await wait_for(skipped)
        # The first run is still sleeping: only it started.
        assert await db.query("work:ticks", {}) == ["slow"]
        runs = [j for j in await db.query("work:jobs", {}) if j["name"] == "work:slow"]
        assert len(runs) == 1


async def test_restart_skips_missed_runs_and_applies_changes(
    tmp_path: Path, make_app: MakeApp
) -> None:
    url = f"sqlite:///{tmp_path / 'crons.db'}"
    hourly = """
        from reactive import cron_jobs

        crons = cron_jobs()
        crons.interval("hourly", {"hours": 1}, "work:tick", {"tag": "h"})
        crons.cron("gone", "0 0 1 1 *", "work:tick", {"tag": "g"})
    """
    app = make_app(app_with(hourly))
    async with reactive.open(url, app=app) as db:
        await wait_for(lambda: _ticks(db, ["h"]))
        first = by_name(await db.query("work:crons", {}))
        assert set(first) == {"hourly", "gone"}
    # While "down", the next run's time passes (as if the process slept for hours).
    async with reactive.open(url, app=app, run_scheduled=False) as db:

        def backdate(txn: Any) -> None:
            doc = by_name(
                txn.scan(CRON_JOBS, "by_name", [], "asc", None, None, None, None, True)[0]
            )
            job = doc["hourly"]
            fields = {k: v for k, v in job.items() if not k.startswith("_")}
            txn.replace(job["_id"], {**fields, "nextRun": time.time() * 1000 - 3.5 * 3600e3})

        await write_system(db, backdate)
    async with reactive.open(url, app=app) as db:
        await asyncio.sleep(0.5)
        assert await db.query("work:ticks", {}) == ["h"]  # the missed runs are not made up
        job = by_name(await db.query("work:crons", {}))["hourly"]
        assert time.time() * 1000 < job["nextRun"] <= time.time() * 1000 + 3600e3
    # crons.py changes: one job removed, one changed (runs afresh), one added.
    changed = """
        from reactive import cron_jobs

        crons = cron_jobs()
        crons.interval("hourly", {"hours": 1}, "work:tick", {"tag": "H"})
        end = {"day": 31, "hour_utc": 0, "minute_utc": 0}
        crons.monthly("bill", end, "work:tick", {"tag": "b"})
    """
    (app / "crons.py").write_text(textwrap.dedent(changed))
    for name in [m for m in sys.modules if m.startswith(app.name)]:
        del sys.modules[name]
    async with reactive.open(url, app=app) as db:
        await wait_for(lambda: _ticks(db, ["H", "h"]))
        jobs = by_name(await db.query("work:crons", {}))
        assert set(jobs) == {"hourly", "bill"}
        assert jobs["hourly"]["args"] == {"tag": "H"}


async def _ticks(db: reactive.Database, expected: list[str]) -> bool:
    return sorted(await db.query("work:ticks", {})) == expected


@pytest.mark.parametrize(
    ("line", "error", "words"),
    [
        ('crons.interval("x", {"seconds": 1}, "work:nope")', FunctionNotFoundError, "nope"),
        ('crons.interval("x", {"seconds": 1}, "work:ticks")', FunctionNotFoundError, "query"),
        ('crons.interval("x", {"seconds": 1}, "work:tick", {})', ArgumentValidationError, "tag"),
        (
            'crons.interval("x", {"seconds": 1}, "work:tick", {"tag": 1})',
            ArgumentValidationError,
            "tag",
        ),
    ],
)
async def test_jobs_are_checked_at_open(
    db_url: str, make_app: MakeApp, line: str, error: type[Exception], words: str
) -> None:
    source = f"from reactive import cron_jobs\n\ncrons = cron_jobs()\n{line}\n"
    with pytest.raises(error, match=words):
        await reactive.open(db_url, app=make_app(app_with(source)))


@pytest.mark.parametrize(
    ("register", "words"),
    [
        (lambda c: c.interval("a", {"seconds": 0.5}, "m:f"), "at least 1 second"),
        (lambda c: c.interval("a", {"seconds": 1, "minutes": 1}, "m:f"), "one of"),
        (lambda c: c.interval("a", {"days": 1}, "m:f"), "unknown field"),
        (lambda c: c.cron("a", "61 * * * *", "m:f"), "not a valid cron"),
        (lambda c: c.cron("a", "* * * *", "m:f"), "five fields"),
        (lambda c: c.hourly("a", {}, "m:f"), "needs minute_utc"),
        (lambda c: c.daily("a", {"hour_utc": 24, "minute_utc": 0}, "m:f"), "hour_utc"),
        (
            lambda c: c.weekly(
                "a", {"day_of_week": "funday", "hour_utc": 1, "minute_utc": 0}, "m:f"
            ),
            "day_of_week",
        ),
        (lambda c: c.monthly("a", {"day": 0, "hour_utc": 1, "minute_utc": 0}, "m:f"), "day must"),
        (lambda c: c.interval("", {"seconds": 1}, "m:f"), "needs a name"),
        (lambda c: c.interval("a", {"seconds": 1}, "m:f", [1]), "args must be a dict"),
    ],
)
def test_bad_schedules_are_clear_errors(register: Callable[[Any], None], words: str) -> None:
    with pytest.raises(ValueError, match=words):
        register(cron_jobs())


def test_a_name_is_registered_once() -> None:
    crons = cron_jobs()
    crons.interval("a", {"minutes": 5}, "m:f")
    with pytest.raises(ValueError, match="registered twice"):
        crons.hourly("a", {"minute_utc": 0}, "m:f")


def _ms(*fields: int) -> float:
    return datetime.datetime(*fields, tzinfo=datetime.UTC).timestamp() * 1000


def test_next_run_times() -> None:
    now = _ms(2026, 4, 15, 10, 20, 30)  # a Wednesday
    interval = {"type": "interval", "seconds": 60.0}
    assert next_run_ms(interval, None, now) == now
    assert next_run_ms(interval, now - 1000, now) == now + 59_000
    assert next_run_ms(interval, now - 150_000, now) == now + 30_000  # missed ones skipped
    hourly = {"type": "hourly", "minute_utc": 5}
    assert next_run_ms(hourly, None, now) == _ms(2026, 4, 15, 11, 5)
    daily = {"type": "daily", "hour_utc": 9, "minute_utc": 0}
    assert next_run_ms(daily, None, now) == _ms(2026, 4, 16, 9, 0)
    weekly = {"type": "weekly", "day_of_week": "monday", "hour_utc": 8, "minute_utc": 0}
    assert next_run_ms(weekly, None, now) == _ms(2026, 4, 20, 8, 0)
    monthly = {"type": "monthly", "day": 31, "hour_utc": 0, "minute_utc": 0}
    assert next_run_ms(monthly, None, now) == _ms(2026, 5, 31, 0, 0)  # April has no 31st
    cron = {"type": "cron", "cron": "*/15 * * * *"}
    assert next_run_ms(cron, None, now) == _ms(2026, 4, 15, 10, 30)


async def test_the_chat_example_expires_messages_and_counts_them_daily(db_url: str) -> None:
    chat = Path(__file__).resolve().parents[2] / "examples" / "chat"
    async with reactive.open(db_url, app=chat) as db:
        await db.mutation("channels:create", {"name": "general"})
        gone = {"channel": "general", "author": "ada", "body": "soon gone", "expires_in_s": 0.2}
        await db.mutation("messages:send", gone)
        await db.mutation("messages:send", {"channel": "general", "author": "ada", "body": "kept"})

        async def expired() -> bool:
            messages = await db.query("messages:list", {"channel": "general"})
            return [m["body"] for m in messages] == ["kept"]

        await wait_for(expired)
        job = by_name(
            db._engine.begin(True).scan(
                CRON_JOBS, "by_name", [], "asc", None, None, None, None, True
            )[0]
        )["daily message counts"]
        when = datetime.datetime.fromtimestamp(job["nextRun"] / 1000, tz=datetime.UTC)
        assert (when.hour, when.minute) == (0, 5)
        assert await db.mutation("stats:count_messages", {}, internal=True) == {"general": 1}
        assert [(r["channel"], r["messages"]) for r in await db.query("stats:latest", {})] == [
            ("general", 1)
        ]


@pytest.mark.parametrize("kind", ["sqlite", "postgres", "mysql"])
async def test_crons_on_every_backend(
    kind: str, backend_urls: Callable[[str], str], make_app: MakeApp
) -> None:
    url = backend_urls(kind)
    app = make_app(app_with(EVERY_SECOND))
    async with reactive.open(url, app=app) as db:

        async def ticked() -> bool:
            return "t" in await db.query("work:ticks", {})

        await wait_for(ticked)
    async with reactive.open(url, app=app) as db:
        assert set(by_name(await db.query("work:crons", {}))) == {"tick", "nightly"}
        await wait_for(lambda: _more_ticks(db, 2))


async def _more_ticks(db: reactive.Database, n: int) -> bool:
    return (await db.query("work:ticks", {})).count("t") >= n
