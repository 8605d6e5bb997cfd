"""The shared query cache: a commit published between a run's snapshot and its
subscription (the engine reports it as *missed*) still reaches the watchers, who get the
re-run result (else a client waits for a change that never comes)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import reactive
from reactive.server.queries import Delivery, QueryCache, SharedQuery

APP = {
    "t.py": """
        from reactive import mutation, query


        @mutation(args={})
        async def add(ctx):
            await ctx.db.insert("things", {})


        @query(args={})
        async def count(ctx):
            return float(len(await ctx.db.query("things").collect()))
    """,
}


class Watcher:
    def __init__(self) -> None:
        self.stale = 0
        self.ready = asyncio.Event()

    def query_stale(self, entry: SharedQuery) -> None:
        self.stale += 1

    def query_ready(self, entry: SharedQuery, delivery: Delivery | None) -> None:
        self.ready.set()


async def test_a_commit_missed_at_subscription_reruns_the_query(
    db_url: str, make_app: Callable[[dict[str, str]], Path]
) -> None:
    async with reactive.open(db_url, app=make_app(APP)) as db:
        await db.mutation("t:add", {})
        old_ts = db.timestamp
        await db.mutation("t:add", {})  # after old_ts: the subscription below misses it
        cache = QueryCache(db)
        watcher = Watcher()
        fn = db.app.lookup("t:count")
        entry = cache.acquire(fn, {}, None, None, watcher)  # type: ignore[arg-type]
        first = await entry.result_at(old_ts)
        assert first.value_json == "1.0"
        await asyncio.wait_for(watcher.ready.wait(), 10)  # told, without another commit
        assert watcher.stale == 1
        latest: Any = entry.cached_at(db.published_timestamp)
        assert latest is not None and latest.value_json == "2.0"
        cache.release(entry, watcher)  # type: ignore[arg-type]
        cache.close()
