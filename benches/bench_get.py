"""Benchmark 2: ``ctx.db.get`` inside a query.

Reactive: the query ``docs:get_many`` does ``await ctx.db.get(id)`` for each of 1,000
pre-inserted ids (random order) per call, called with ``db.query`` back to back; the figure
is gets/s over whole calls (so it includes each call's transaction, argument validation of
the 1,000 ids and the runner, amortized over 1,000 gets).

Anchor: ``sqlite3`` primary-key lookups ``SELECT value FROM docs WHERE id = ?`` (row fetched,
JSON left as text) on a table of the same documents, same ids, same order, its whole
database in SQLite's page cache. A second anchor also ``json.loads`` each row into a dict,
which is what a ``get`` returns (context).

Figure: gets/s; ratio = reactive / anchor. Target ≥ 1, aim 3.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import Row, log, scratch_dir, standalone
from fixtures import ReadFixture, load_read_fixture, shuffled

PER_CALL = 1000


def sizes(quick: bool) -> tuple[int, int, float]:
    """(documents, repetitions, seconds per side and repetition)."""
    return (10_000, 3, 1.0) if quick else (50_000, 5, 2.0)


def calls_of(order: list[str]) -> list[list[str]]:
    """The ids in calls of ``PER_CALL`` (every call, reactive or anchor, gets one of these)."""
    return [order[i : i + PER_CALL] for i in range(0, len(order) - PER_CALL + 1, PER_CALL)]


async def reactive_call(fx: ReadFixture, ids: list[str]) -> None:
    """One ``docs:get_many`` call: ``ctx.db.get`` of each of ``ids`` (``PER_CALL`` gets)."""
    found = await fx.db.query("docs:get_many", {"ids": ids})
    if found != PER_CALL:
        raise RuntimeError(f"get_many found {found} of {PER_CALL} documents")


def anchor_call(fx: ReadFixture, ids: list[str], decode: bool) -> None:
    """One call of the anchor: a primary-key SELECT (+ ``json.loads``) of each of ``ids``."""
    execute = fx.anchor.execute
    sql = "SELECT value FROM docs WHERE id = ?"
    loads = json.loads
    found = 0
    for doc_id in ids:
        row = execute(sql, (doc_id,)).fetchone()
        if row is not None:
            if decode:
                loads(row[0])
            found += 1
    if found != PER_CALL:
        raise RuntimeError(f"anchor found {found} of {PER_CALL} rows")


async def reactive_gets(fx: ReadFixture, order: list[str], seconds: float) -> float:
    """Gets/s through ``docs:get_many`` for ``seconds``."""
    calls = calls_of(order)
    n = 0
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        await reactive_call(fx, calls[n % len(calls)])
        n += 1
        now = time.perf_counter()
        if now >= deadline:
            return n * PER_CALL / (now - start)


def anchor_gets(fx: ReadFixture, order: list[str], seconds: float, decode: bool) -> float:
    """Gets/s of primary-key SELECTs for ``seconds``, in calls of 1,000 like reactive."""
    calls = calls_of(order)
    n = 0
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        anchor_call(fx, calls[n % len(calls)], decode)
        n += 1
        now = time.perf_counter()
        if now >= deadline:
            return n * PER_CALL / (now - start)


async def setup(directory: Path, count: int) -> tuple[ReadFixture, list[str]]:
    """The fixture of ``count`` documents, the ids in random order, both sides warmed up."""
    t0 = time.perf_counter()
    fx = await load_read_fixture(directory, count)
    log(f"  get: loaded {count:,} documents in {time.perf_counter() - t0:.1f} s")
    try:
        order = shuffled(fx.ids)
        await reactive_gets(fx, order, 0.3)  # warm-up
        anchor_gets(fx, order, 0.3, False)
    except BaseException:
        await fx.close()
        raise
    return fx, order


def rows(count: int, r: list[float], a: list[float], ad: list[float]) -> list[Row]:
    """The table's rows from gets/s samples: reactive, the anchor, the anchor + json.loads."""
    return [
        Row.from_samples(
            "get",
            f"ctx.db.get in a query, 1,000/call, {count // 1000}k docs (gets/s)",
            "gets/s",
            r,
            a,
            anchor_name="sqlite3 PK SELECT",
            target="≥ 1 (aim 3)",
            notes="reactive figure includes per-call overhead (transaction, args of 1,000 ids)",
        ),
        Row.from_samples(
            "get",
            "ctx.db.get vs PK SELECT + json.loads (gets/s)",
            "gets/s",
            r,
            ad,
            anchor_name="sqlite3 PK SELECT + json.loads",
            target="context",
        ),
    ]


async def _run(quick: bool) -> list[Row]:
    count, reps, seconds = sizes(quick)
    with scratch_dir("get") as d:
        fx, order = await setup(d, count)
        try:
            r, a, ad = [], [], []
            for rep in range(reps):
                a.append(anchor_gets(fx, order, seconds, False))
                r.append(await reactive_gets(fx, order, seconds))
                ad.append(anchor_gets(fx, order, seconds, True))
                log(
                    f"  get rep {rep + 1}/{reps}: reactive {r[-1]:,.0f}/s, anchor {a[-1]:,.0f}/s"
                    f", anchor+json {ad[-1]:,.0f}/s"
                )
        finally:
            await fx.close()
    return rows(count, r, a, ad)


def run(quick: bool = False) -> list[Row]:
    """Measure, interleaving reactive and the anchors, ``reps`` times."""
    return asyncio.run(_run(quick))


if __name__ == "__main__":
    standalone(run)
