"""Benchmark 1: durable single-insert mutations per second.

Reactive: the embedded SQLite default (WAL, synchronous=FULL, group commit), the app of
``benches/benchapp`` (table ``docs`` with one user index, so each document has 3 index
entries: ``by_id``, ``by_creation_time``, ``by_x``). ``C`` asyncio tasks each await
``db.mutation("docs:insert", ...)`` one after another for a fixed time; every mutation is
acknowledged only once durable. Run with C = 64 (the figure of merit) and C = 1 (latency
bound, for context). After each run the number of documents is checked, in the engine and
again after closing and reopening the database (i.e. from disk).

Anchor: Python ``sqlite3``, WAL + synchronous=FULL, one connection, sequential (a naive
app): each insert is one durable transaction writing 1 document row and its 3 index rows,
into tables shaped like reactive's log (``documents``, ``indexes``).

Figure: commits/s; ratio = reactive (64 callers) / anchor. Target ≥ 5, aim 10.
"""

from __future__ import annotations

import asyncio
import json
import os
import struct
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import reactive
from common import APP, Row, log, median, percentile, scratch_dir, standalone
from fixtures import connect_anchor, make_doc

GROUPS = 100
"""Distinct values of ``x`` in inserted documents."""


def _batch_counters(db: reactive.Database) -> tuple[int, int]:
    """Durable batches and commits written so far by the group commit (0, 0 if unknown)."""
    flusher = getattr(db, "_flusher", None)
    return (
        int(getattr(flusher, "batches_written", 0) or 0),
        int(getattr(flusher, "commits_written", 0) or 0),
    )


async def reactive_inserts(
    directory: Path, callers: int, seconds: float, warmup: int = 200
) -> dict[str, Any]:
    """Run ``callers`` tasks inserting for ``seconds``; returns rate, counts and latencies."""
    url = f"sqlite:///{directory / 'reactive.db'}"
    db = await reactive.open(url, app=APP)
    counter = 0

    def next_args() -> dict[str, Any]:
        nonlocal counter
        counter += 1
        return make_doc(counter, GROUPS)

    for _ in range(warmup):
        await db.mutation("docs:insert", next_args())
    batches0, commits0 = _batch_counters(db)
    latencies: list[float] = []
    done = 0
    errors = 0
    deadline = 0.0

    async def caller() -> None:
        nonlocal done, errors
        clock = time.perf_counter
        while clock() < deadline:
            t0 = clock()
            try:
                await db.mutation("docs:insert", next_args())
            except Exception as exc:
                errors += 1
                log(f"insert failed: {exc!r}")
                continue
            latencies.append(clock() - t0)
            done += 1

    start = time.perf_counter()
    deadline = start + seconds
    await asyncio.gather(*(caller() for _ in range(callers)))
    elapsed = time.perf_counter() - start
    batches1, commits1 = _batch_counters(db)
    batches, commits = batches1 - batches0, commits1 - commits0
    expected = warmup + done
    in_engine = db._engine.count_documents("docs")
    await db.close()
    db = await reactive.open(url, app=APP)
    on_disk = db._engine.count_documents("docs")
    await db.close()
    return {
        "rate": done / elapsed,
        "done": done,
        "errors": errors,
        "expected_docs": expected,
        "docs_in_engine": in_engine,
        "docs_after_reopen": on_disk,
        "ok": in_engine == expected == on_disk and errors == 0,
        "p50_ms": (percentile(latencies, 50) or 0) * 1000,
        "p99_ms": (percentile(latencies, 99) or 0) * 1000,
        "commits_per_batch": commits / batches if batches else 0.0,
    }


ANCHOR_SCHEMA = """
CREATE TABLE documents (id BLOB NOT NULL, ts INTEGER NOT NULL, table_id INTEGER NOT NULL,
                        value BLOB, deleted INTEGER NOT NULL, PRIMARY KEY (id, ts)) WITHOUT ROWID;
CREATE TABLE indexes (index_id INTEGER NOT NULL, key BLOB NOT NULL, ts INTEGER NOT NULL,
                      doc_id BLOB NOT NULL, deleted INTEGER NOT NULL,
                      PRIMARY KEY (index_id, key, ts)) WITHOUT ROWID;
"""


def anchor_inserts(directory: Path, seconds: float, warmup: int = 200) -> dict[str, Any]:
    """Sequential durable transactions of 1 document row + 3 index rows for ``seconds``."""
    conn = connect_anchor(directory / "anchor.db")
    conn.executescript(ANCHOR_SCHEMA)
    doc_sql = "INSERT INTO documents (id, ts, table_id, value, deleted) VALUES (?, ?, 1, ?, 0)"
    idx_sql = "INSERT INTO indexes (index_id, key, ts, doc_id, deleted) VALUES (?, ?, ?, ?, 0)"
    counter = 0
    latencies: list[float] = []

    def one() -> None:
        nonlocal counter
        counter += 1
        doc = make_doc(counter, GROUPS)
        doc_id = os.urandom(16)
        ts = time.time_ns()
        creation = struct.pack(">d", ts / 1e6)
        value = json.dumps(doc).encode()
        conn.execute("BEGIN")
        conn.execute(doc_sql, (doc_id, ts, value))
        conn.execute(idx_sql, (1, doc_id, ts, doc_id))
        conn.execute(idx_sql, (2, creation + doc_id, ts, doc_id))
        conn.execute(idx_sql, (3, struct.pack(">q", doc["x"]) + creation + doc_id, ts, doc_id))
        conn.execute("COMMIT")

    for _ in range(warmup):
        one()
    done = 0
    clock = time.perf_counter
    start = clock()
    deadline = start + seconds
    while True:
        t0 = clock()
        one()
        t1 = clock()
        latencies.append(t1 - t0)
        done += 1
        if t1 >= deadline:
            break
    elapsed = clock() - start
    (docs,) = conn.execute("SELECT count(*) FROM documents").fetchone()
    (entries,) = conn.execute("SELECT count(*) FROM indexes").fetchone()
    conn.close()
    return {
        "rate": done / elapsed,
        "done": done,
        "ok": docs == warmup + done and entries == 3 * docs,
        "p50_ms": (percentile(latencies, 50) or 0) * 1000,
        "p99_ms": (percentile(latencies, 99) or 0) * 1000,
    }


def run(quick: bool = False) -> list[Row]:
    """Interleave reactive (64 callers), reactive (1 caller) and the anchor, ``reps`` times."""
    reps, seconds, seconds_one = (3, 2.0, 1.0) if quick else (5, 5.0, 2.0)
    many: list[dict[str, Any]] = []
    one: list[dict[str, Any]] = []
    anchor: list[dict[str, Any]] = []
    for rep in range(reps):
        with scratch_dir("insert") as d:
            anchor.append(anchor_inserts(d, seconds))
        with scratch_dir("insert") as d:
            many.append(asyncio.run(reactive_inserts(d, 64, seconds)))
        with scratch_dir("insert") as d:
            one.append(asyncio.run(reactive_inserts(d, 1, seconds_one)))
        log(
            f"  insert rep {rep + 1}/{reps}: reactive x64 {many[-1]['rate']:,.0f}/s "
            f"({many[-1]['commits_per_batch']:.1f} commits/batch), x1 {one[-1]['rate']:,.0f}/s, "
            f"anchor {anchor[-1]['rate']:,.0f}/s"
        )
    ok = all(r["ok"] for r in many + one + anchor)
    check = (
        "every run committed the expected documents (engine and after reopen)"
        if ok
        else "COUNT MISMATCH: "
        + "; ".join(
            f"expected {r.get('expected_docs')}, engine {r.get('docs_in_engine')}, "
            f"reopened {r.get('docs_after_reopen')}, errors {r.get('errors')}"
            for r in many + one
            if not r["ok"]
        )
    )

    def med(runs: list[dict[str, Any]], key: str) -> float:
        return median([r[key] for r in runs]) or 0.0

    return [
        Row.from_samples(
            "insert",
            "durable insert, 64 callers (commits/s)",
            "commits/s",
            [r["rate"] for r in many],
            [r["rate"] for r in anchor],
            anchor_name="sqlite3 1 doc + 3 index rows/txn",
            target="≥ 5 (aim 10)",
            notes=(
                f"{check}; median {med(many, 'commits_per_batch'):.1f} commits per durable "
                f"batch; latency p50 {med(many, 'p50_ms'):.2f} ms, p99 {med(many, 'p99_ms'):.2f}"
                f" ms (anchor p50 {med(anchor, 'p50_ms'):.2f} ms, p99 "
                f"{med(anchor, 'p99_ms'):.2f} ms)"
            ),
            extra={"reactive_runs": many, "anchor_runs": anchor},
        ),
        Row.from_samples(
            "insert",
            "durable insert, 1 caller (commits/s)",
            "commits/s",
            [r["rate"] for r in one],
            [r["rate"] for r in anchor],
            anchor_name="same anchor",
            target="context",
            notes=(
                f"latency-bound; p50 {med(one, 'p50_ms'):.2f} ms, p99 {med(one, 'p99_ms'):.2f} ms"
            ),
            extra={"reactive_runs": one},
        ),
    ]


if __name__ == "__main__":
    standalone(run)
