"""Benchmark 3: a 100-document index range scan.

Reactive: the query ``docs:scan`` does
``ctx.db.query("docs").with_index("by_x", lambda q: q.eq("x", k)).take(100)`` and returns
the 100 documents to the caller of ``db.query`` (values checked and converted, as a user
gets them); ``k`` cycles over every group of 100 documents. Figure: scans/s.

Anchor: ``sqlite3`` indexed range scan returning the same 100 rows fully fetched:
``SELECT id, creation, value FROM docs WHERE x = ? ORDER BY creation LIMIT 100`` with an
index on ``(x, creation)``, JSON left as text; its database in SQLite's page cache. A
second anchor also ``json.loads`` each row (context), and a second reactive row runs the
same scan but returns only the count (the cost of returning 100 documents, for context).

Ratio = reactive / anchor. Target ≥ 1.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import Row, log, scratch_dir, standalone
from fixtures import ReadFixture, load_read_fixture

N = 100
# Scans per call on the pytest-benchmark path (benches/test_bench_scan.py): one event-loop
# entry (~10 µs) per 10 scans instead of per scan, and the anchor's calls the same size.
PER_CALL = 10
SQL = "SELECT id, creation, value FROM docs WHERE x = ? ORDER BY creation LIMIT ?"


def sizes(quick: bool) -> tuple[int, int, float]:
    """(documents, repetitions, seconds per side and repetition)."""
    return (10_000, 3, 1.0) if quick else (50_000, 5, 2.0)


async def reactive_scan(fx: ReadFixture, i: int, path: str = "docs:scan") -> None:
    """Scan number ``i`` through the query ``path``: the ``N`` documents of one ``x``."""
    result = await fx.db.query(path, {"x": (i * 7919) % fx.groups, "n": N})
    got = result if isinstance(result, int) else len(result)
    if got != N:
        raise RuntimeError(f"{path} returned {got} documents, not {N}")


def anchor_scan(fx: ReadFixture, i: int, decode: bool) -> None:
    """Scan number ``i`` as the indexed ``SELECT`` (+ ``json.loads`` of each row)."""
    rows = fx.anchor.execute(SQL, ((i * 7919) % fx.groups, N)).fetchall()
    if decode:
        loads = json.loads
        rows = [loads(r[2]) for r in rows]
    if len(rows) != N:
        raise RuntimeError(f"anchor returned {len(rows)} rows, not {N}")


async def reactive_call(fx: ReadFixture, first: int, path: str = "docs:scan") -> None:
    """``PER_CALL`` scans from number ``first`` on (one call of the pytest-benchmark path)."""
    for i in range(first, first + PER_CALL):
        await reactive_scan(fx, i, path)


def anchor_call(fx: ReadFixture, first: int, decode: bool) -> None:
    """``PER_CALL`` anchor scans from number ``first`` on."""
    for i in range(first, first + PER_CALL):
        anchor_scan(fx, i, decode)


async def reactive_scans(fx: ReadFixture, seconds: float, path: str = "docs:scan") -> float:
    """Scans/s of ``path`` for ``seconds``."""
    done = 0
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        await reactive_scan(fx, done, path)
        done += 1
        now = time.perf_counter()
        if now >= deadline:
            return done / (now - start)


def anchor_scans(fx: ReadFixture, seconds: float, decode: bool) -> float:
    """Scans/s of the indexed ``SELECT`` for ``seconds``."""
    done = 0
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        anchor_scan(fx, done, decode)
        done += 1
        now = time.perf_counter()
        if now >= deadline:
            return done / (now - start)


async def setup(directory: Path, count: int) -> tuple[ReadFixture, list[Any]]:
    """The fixture of ``count`` documents, both sides warmed up; and the anchor's query plan."""
    t0 = time.perf_counter()
    fx = await load_read_fixture(directory, count, per_group=N)
    log(f"  scan: loaded {count:,} documents in {time.perf_counter() - t0:.1f} s")
    try:
        plan = fx.anchor.execute("EXPLAIN QUERY PLAN " + SQL, (1, N)).fetchall()
        await reactive_scans(fx, 0.3)  # warm-up
        anchor_scans(fx, 0.3, False)
    except BaseException:
        await fx.close()
        raise
    return fx, plan


def rows(
    count: int,
    plan: list[Any],
    r: list[float],
    rc: list[float],
    a: list[float],
    ad: list[float],
) -> list[Row]:
    """The table's rows from scans/s samples: reactive, reactive returning a count, the
    anchor, the anchor + json.loads."""
    return [
        Row.from_samples(
            "scan",
            f"100-doc index range scan, {count // 1000}k docs (scans/s)",
            "scans/s",
            r,
            a,
            anchor_name="sqlite3 indexed SELECT, 100 rows",
            target="≥ 1",
            notes=f"anchor plan: {'; '.join(str(p[-1]) for p in plan)}",
        ),
        Row.from_samples(
            "scan",
            "100-doc scan vs SELECT + json.loads (scans/s)",
            "scans/s",
            r,
            ad,
            anchor_name="sqlite3 SELECT + json.loads",
            target="context",
        ),
        Row.from_samples(
            "scan",
            "100-doc scan returning a count only (scans/s)",
            "scans/s",
            rc,
            a,
            anchor_name="sqlite3 indexed SELECT, 100 rows",
            target="context",
            notes="same scan, but the query returns len(docs): the cost of returning documents",
        ),
    ]


async def _run(quick: bool) -> list[Row]:
    count, reps, seconds = sizes(quick)
    with scratch_dir("scan") as d:
        fx, plan = await setup(d, count)
        try:
            r, rc, a, ad = [], [], [], []
            for rep in range(reps):
                a.append(anchor_scans(fx, seconds, False))
                r.append(await reactive_scans(fx, seconds))
                ad.append(anchor_scans(fx, seconds, True))
                rc.append(await reactive_scans(fx, seconds / 2, "docs:scan_count"))
                log(
                    f"  scan rep {rep + 1}/{reps}: reactive {r[-1]:,.0f}/s (count only "
                    f"{rc[-1]:,.0f}/s), anchor {a[-1]:,.0f}/s, anchor+json {ad[-1]:,.0f}/s"
                )
        finally:
            await fx.close()
    return rows(count, plan, r, rc, a, ad)


def run(quick: bool = False) -> list[Row]:
    """Measure, interleaving reactive and the anchors, ``reps`` times."""
    return asyncio.run(_run(quick))


if __name__ == "__main__":
    standalone(run)
