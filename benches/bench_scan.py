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

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import Row, log, scratch_dir, standalone
from fixtures import ReadFixture, load_read_fixture

N = 100


async def reactive_scans(fx: ReadFixture, seconds: float, path: str = "docs:scan") -> float:
    """Scans/s of ``path`` for ``seconds``."""
    db = fx.db
    done = 0
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        result = await db.query(path, {"x": (done * 7919) % fx.groups, "n": N})
        got = result if isinstance(result, int) else len(result)
        if got != N:
            raise RuntimeError(f"{path} returned {got} documents, not {N}")
        done += 1
        now = time.perf_counter()
        if now >= deadline:
            return done / (now - start)


def anchor_scans(fx: ReadFixture, seconds: float, decode: bool) -> float:
    """Scans/s of the indexed ``SELECT`` for ``seconds``."""
    conn = fx.anchor
    sql = "SELECT id, creation, value FROM docs WHERE x = ? ORDER BY creation LIMIT ?"
    loads = json.loads
    done = 0
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        rows = conn.execute(sql, ((done * 7919) % fx.groups, N)).fetchall()
        if decode:
            rows = [loads(r[2]) for r in rows]
        if len(rows) != N:
            raise RuntimeError(f"anchor returned {len(rows)} rows, not {N}")
        done += 1
        now = time.perf_counter()
        if now >= deadline:
            return done / (now - start)


async def _run(quick: bool) -> list[Row]:
    count, reps, seconds = (10_000, 3, 1.0) if quick else (50_000, 5, 2.0)
    with scratch_dir("scan") as d:
        t0 = time.perf_counter()
        fx = await load_read_fixture(d, count, per_group=N)
        log(f"  scan: loaded {count:,} documents in {time.perf_counter() - t0:.1f} s")
        plan = fx.anchor.execute(
            "EXPLAIN QUERY PLAN SELECT id, creation, value FROM docs WHERE x = ? "
            "ORDER BY creation LIMIT ?",
            (1, N),
        ).fetchall()
        try:
            await reactive_scans(fx, 0.3)  # warm-up
            anchor_scans(fx, 0.3, False)
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


def run(quick: bool = False) -> list[Row]:
    """Measure, interleaving reactive and the anchors, ``reps`` times."""
    return asyncio.run(_run(quick))


if __name__ == "__main__":
    standalone(run)
