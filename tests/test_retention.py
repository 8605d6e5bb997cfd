"""Retention: old versions leave memory and persistence; nothing newer is lost.

Runs on every backend (PostgreSQL and MySQL when their test URLs are set).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

import reactive
from reactive import _core
from reactive.errors import InvalidQueryError

BACKENDS = ["sqlite", "postgres", "mysql"]

APP = {
    "schema.py": """
        from reactive import define_schema, define_table, v
        schema = define_schema({
            "items": define_table({"n": v.float64(), "tag": v.string()})
                .index("by_tag", ["tag", "n"]),
        })
    """,
    "items.py": """
        from reactive import mutation, query, v

        @mutation(args={"count": v.float64()})
        async def seed(ctx, count):
            return [
                await ctx.db.insert("items", {"n": float(i), "tag": "a"})
                for i in range(int(count))
            ]

        @mutation(args={"ids": v.array(v.id("items")), "tag": v.string()})
        async def bump(ctx, ids, tag):
            for i in ids:
                doc = await ctx.db.get(i)
                await ctx.db.patch(i, {"n": doc["n"] + 1, "tag": tag})

        @mutation(args={"ids": v.array(v.id("items"))})
        async def remove(ctx, ids):
            for i in ids:
                await ctx.db.delete(i)

        @query(args={"tag": v.string()})
        async def tagged(ctx, tag):
            q = ctx.db.query("items").with_index("by_tag", lambda q: q.eq("tag", tag))
            return [d["n"] for d in await q.collect()]
    """,
}


async def _row_counts(db: reactive.Database) -> tuple[int, int, int]:
    """(documents rows, indexes rows, commits rows) of the backend."""
    p: Any = db._persistence
    if hasattr(p, "row_counts"):
        counts: tuple[int, int, int] = await p.row_counts()
        return counts
    out = []
    async with p._pool.acquire() as conn:
        for table in ("documents", "indexes", "commits"):
            if hasattr(conn, "fetchval"):
                out.append(await conn.fetchval(f"SELECT count(*) FROM {table}"))
            else:
                async with conn.cursor() as cur:
                    await cur.execute(f"SELECT count(*) FROM {table}")
                    out.append((await cur.fetchone())[0])
    return out[0], out[1], out[2]


async def _state(db: reactive.Database) -> dict[str, str]:
    engine = db._engine
    docs: dict[str, str] = {}
    after = None
    while True:
        page, after = engine.table_page("items", engine.visible_ts, after, 1000)
        docs.update({d["_id"]: _core.export_json(d) for d in page})
        if after is None:
            return docs


@pytest.mark.parametrize("backend", BACKENDS)
async def test_gc_deletes_superseded_rows_and_keeps_every_live_document(
    backend: str, backend_urls: Any, make_app: Any
) -> None:
    url = backend_urls(backend)
    app = make_app(APP)
    async with reactive.open(url, app=app) as db:
        ids = await db.mutation("items:seed", {"count": 300.0})
        for round_ in range(3):
            await db.mutation("items:bump", {"ids": ids[:200], "tag": f"t{round_ % 2}"})
        await db.mutation("items:remove", {"ids": ids[250:]})
        before_rows = await _row_counts(db)
        expected = await _state(db)
        tagged = sorted(await db.query("items:tagged", {"tag": "t0"}))
        report = await db.gc(keep_s=0)
        after_rows = await _row_counts(db)
        # 3 superseded revisions of 200 documents and 50 deleted documents (2 rows each).
        assert report.documents_deleted == 3 * 200 + 50 * 2
        assert after_rows[0] == 250 == before_rows[0] - report.documents_deleted
        assert after_rows[1] == before_rows[1] - report.index_entries_deleted
        # Every index (by_id, by_creation_time, by_tag) keeps one row per live document.
        assert after_rows[1] == 250 * 3
        assert (await db.check())["problems"] == []
        assert await _state(db) == expected
        # A second run has nothing left to do.
        again = await db.gc(keep_s=0)
        assert again.documents_deleted == again.index_entries_deleted == 0
        cutoff = report.retained_ts
    async with reactive.open(url, app=app) as db:
        assert await _state(db) == expected
        assert sorted(await db.query("items:tagged", {"tag": "t0"})) == tagged
        assert (await db.check())["problems"] == []
        with pytest.raises(InvalidQueryError, match="retention"):
            await db.query("items:tagged", {"tag": "t0"}).at(cutoff - 1)
        # Writing on after a prune and a restart keeps working, and prunes again.
        await db.mutation("items:bump", {"ids": ids[:10], "tag": "t9"})
        await db.gc(keep_s=0)
        assert (await db.check())["problems"] == []
        assert sorted(await db.query("items:tagged", {"tag": "t9"})) == [
            float(i + 4) for i in range(10)
        ]


@pytest.mark.parametrize("backend", BACKENDS)
async def test_gc_keeps_the_retention_window(
    backend: str, backend_urls: Any, make_app: Any
) -> None:
    url = backend_urls(backend)
    async with reactive.open(url, app=make_app(APP)) as db:
        ids = await db.mutation("items:seed", {"count": 5.0})
        old_ts = db.timestamp
        await db.mutation("items:bump", {"ids": ids, "tag": "b"})
        report = await db.gc(keep_s=3600)  # nothing is older than an hour
        assert report.documents_deleted == 0
        assert sorted(await db.query("items:tagged", {"tag": "a"}).at(old_ts)) == [
            0.0,
            1.0,
            2.0,
            3.0,
            4.0,
        ]
        # A pinned snapshot survives a collection that would otherwise pass it.
        with db.pin_snapshot(old_ts):
            await db.gc(keep_s=0)
            assert len(await db.query("items:tagged", {"tag": "a"}).at(old_ts)) == 5
        await db.gc(keep_s=0)
        with pytest.raises(InvalidQueryError):
            await db.query("items:tagged", {"tag": "a"}).at(old_ts)


@pytest.mark.parametrize("backend", BACKENDS)
async def test_gc_after_index_backfill(backend: str, backend_urls: Any, make_app: Any) -> None:
    """Backfilled index rows belong to the revisions they index and leave with them."""
    url = backend_urls(backend)
    plain = {
        "schema.py": """
            from reactive import define_schema, define_table, v
            schema = define_schema({
                "items": define_table({"n": v.float64(), "tag": v.string()}),
            })
        """,
        "items.py": APP["items.py"].replace(
            'q = ctx.db.query("items").with_index("by_tag", lambda q: q.eq("tag", tag))',
            'q = ctx.db.query("items").filter(lambda q: q.eq(q.field("tag"), tag))',
        ),
    }
    async with reactive.open(url, app=make_app(plain)) as db:
        ids = await db.mutation("items:seed", {"count": 120.0})
    async with reactive.open(url, app=make_app(APP)) as db:  # adds by_tag: a backfill
        await db.wait_for_indexes()
        assert (await db.check())["problems"] == []
        await db.mutation("items:bump", {"ids": ids[:60], "tag": "z"})
        await db.mutation("items:remove", {"ids": ids[100:]})
        await db.gc(keep_s=0)
        assert (await db.check())["problems"] == []
        rows = await _row_counts(db)
        assert rows[0] == 100 and rows[1] == 100 * 3
        expected = await _state(db)
    async with reactive.open(url, app=make_app(APP)) as db:
        assert await _state(db) == expected
        assert len(await db.query("items:tagged", {"tag": "z"})) == 60
        assert (await db.check())["problems"] == []


async def test_background_retention_prunes_persistence(tmp_path: Path, make_app: Any) -> None:
    url = f"sqlite:///{tmp_path / 'bg.sqlite3'}"
    async with reactive.open(url, app=make_app(APP), retention_s=0.5) as db:
        ids = await db.mutation("items:seed", {"count": 50.0})
        for _ in range(4):
            await db.mutation("items:bump", {"ids": ids, "tag": "x"})
        deadline = asyncio.get_running_loop().time() + 10
        while (await _row_counts(db))[0] > 50:
            assert asyncio.get_running_loop().time() < deadline, await _row_counts(db)
            await asyncio.sleep(0.2)
        assert (await db.check())["problems"] == []


@pytest.mark.parametrize("bad", [-1.0, float("inf"), float("nan")])
def test_invalid_retention_is_refused(db_url: str, bad: float) -> None:
    with pytest.raises(ValueError, match="retention_s"):
        reactive.open(db_url, retention_s=bad)


def test_server_refuses_invalid_retention_seconds() -> None:
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "reactive.server", "--retention-seconds", "-5"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result
    assert "--retention-seconds" in result.stderr
