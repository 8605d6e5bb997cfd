"""Benchmark 1: durable single-insert mutations per second, and their CPU cost.

Reactive: the embedded SQLite default (WAL, synchronous=FULL, group commit), the app of
``benches/benchapp`` (table ``docs`` with one user index, so each document has 3 index
entries: ``by_id``, ``by_creation_time``, ``by_x``). ``C`` asyncio tasks each await
``db.mutation("docs:insert", ...)`` one after another for a fixed time; every mutation is
acknowledged only once durable. Run with C = 64 (the figure of merit) and C = 1 (latency
bound, for context). After each run the number of documents is checked, in the engine and
again after closing and reopening the database (i.e. from disk).

CPU per mutation (64 callers), over the timed window only (warm-up, open and close left
out), divided by the mutations acknowledged in it:

* **CPU µs/mutation**: process CPU time (``time.process_time``: every thread, the core's
  group-commit writer thread included) per mutation.
* **loop CPU µs/mutation**: CPU time of the event-loop thread (``time.thread_time`` on it),
  where every caller, the runner, the handler and the commit wait run. The rest of the
  process CPU is mostly the core's writer thread (the SQLite write and the publication,
  without the GIL).
* **core floor µs/insert**: the event-loop thread's CPU per insert when the same documents
  are inserted by the bare engine calls a mutation cannot do without, on the same kind of
  database in the same repetition: ``engine.begin(False)``, ``txn.insert("docs", doc)``,
  ``engine.commit(txn)``, 64 at a time, then one wait for the group commit to make the
  last of them durable (``Flusher.wait``, once per 64). It holds the time inside those
  ``_core`` calls (value conversion, index keys, the OCC check, queueing the batch), the
  making of the documents (as the callers make their arguments) and the completion
  handling, and no runner.
* **Python overhead µs/call** := loop CPU µs/mutation - core floor µs/insert. That is what
  the Python layer adds per ``db.mutation`` call on the event loop: resolving the
  function, argument validation, the ``ctx`` / ``ctx.db`` objects, the handler's call
  under the loop guard, the schema check of the document, the log collector, the commit
  wait (a future per commit, the wake-up of its task), metrics and the function log. It
  excludes the durable write (another thread) and the core calls above; any other
  ``_core`` call the layer makes (``check_value`` of the arguments, ``has_table``...)
  counts as overhead.

``python benches/bench_insert.py --profile [SECONDS]`` runs the 64-caller workload once
under ``cProfile`` and writes the top functions by self and cumulative time to
``bench-results/profiles/`` (with the share of time inside ``reactive._core`` calls).

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
from common import APP, RESULTS, Row, log, median, percentile, scratch_dir, standalone
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
    directory: Path, callers: int, seconds: float, warmup: int = 200, profiler: Any = None
) -> dict[str, Any]:
    """Run ``callers`` tasks inserting for ``seconds``; returns rate, counts and latencies.

    ``profiler`` (a ``cProfile.Profile``) is enabled for the timed window only.
    """
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

    cpu0, loop_cpu0 = time.process_time(), time.thread_time()
    start = time.perf_counter()
    deadline = start + seconds
    if profiler is not None:
        profiler.enable()
    await asyncio.gather(*(caller() for _ in range(callers)))
    if profiler is not None:
        profiler.disable()
    elapsed = time.perf_counter() - start
    cpu, loop_cpu = time.process_time() - cpu0, time.thread_time() - loop_cpu0
    batches1, commits1 = _batch_counters(db)
    batches, commits = batches1 - batches0, commits1 - commits0
    expected = warmup + done
    in_engine = db._engine.count_documents("docs")
    # A handler step that held the loop past the guard's budget (25 ms of wall time: on a
    # loaded machine, a descheduled process) sends the function to worker threads for
    # good, a slower path: runs where that happened are flagged.
    on_workers = sorted(getattr(getattr(db, "_runner", None), "_on_workers", ()) or ())
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
        "cpu_us": cpu / done * 1e6 if done else 0.0,
        "loop_cpu_us": loop_cpu / done * 1e6 if done else 0.0,
        "moved_to_workers": on_workers,
    }


async def core_inserts(
    directory: Path, seconds: float, per_round: int = 64, warmup: int = 200
) -> dict[str, Any]:
    """The core floor: the same inserts by bare engine calls, no runner (see the docstring).

    Rounds of ``per_round`` times (``engine.begin(False)``, ``txn.insert``, ``engine.commit``),
    each round then awaiting the durability of its last commit once. Returns the rate and
    the event-loop thread's CPU µs per insert.
    """
    url = f"sqlite:///{directory / 'reactive.db'}"
    db = await reactive.open(url, app=APP)
    for i in range(warmup):
        await db.mutation("docs:insert", make_doc(i, GROUPS))
    engine, flusher = db._engine, db._flusher
    counter = warmup
    done = 0
    clock = time.perf_counter
    cpu0, loop_cpu0 = time.process_time(), time.thread_time()
    start = clock()
    deadline = start + seconds
    while clock() < deadline:
        last = None
        for _ in range(per_round):
            counter += 1
            txn = engine.begin(False)
            txn.insert("docs", make_doc(counter, GROUPS))
            last = engine.commit(txn)
        if last is not None:
            await flusher.wait(last)
        done += per_round
    elapsed = clock() - start
    cpu, loop_cpu = time.process_time() - cpu0, time.thread_time() - loop_cpu0
    in_engine = db._engine.count_documents("docs")
    await db.close()
    return {
        "rate": done / elapsed,
        "done": done,
        "ok": in_engine == counter,
        "cpu_us": cpu / done * 1e6 if done else 0.0,
        "loop_cpu_us": loop_cpu / done * 1e6 if done else 0.0,
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
    floor: list[dict[str, Any]] = []
    for rep in range(reps):
        with scratch_dir("insert") as d:
            anchor.append(anchor_inserts(d, seconds))
        with scratch_dir("insert") as d:
            many.append(asyncio.run(reactive_inserts(d, 64, seconds)))
        with scratch_dir("insert") as d:
            floor.append(asyncio.run(core_inserts(d, seconds_one)))
        with scratch_dir("insert") as d:
            one.append(asyncio.run(reactive_inserts(d, 1, seconds_one)))
        many[-1]["overhead_us"] = many[-1]["loop_cpu_us"] - floor[-1]["loop_cpu_us"]
        log(
            f"  insert rep {rep + 1}/{reps}: reactive x64 {many[-1]['rate']:,.0f}/s "
            f"({many[-1]['commits_per_batch']:.1f} commits/batch, CPU "
            f"{many[-1]['cpu_us']:.1f} µs/mutation, loop {many[-1]['loop_cpu_us']:.1f}, core "
            f"floor {floor[-1]['loop_cpu_us']:.1f}), x1 {one[-1]['rate']:,.0f}/s, "
            f"anchor {anchor[-1]['rate']:,.0f}/s"
        )
    ok = all(r["ok"] for r in many + one + anchor + floor)
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

    moved = sum(1 for r in many if r["moved_to_workers"])
    moved_note = (
        f"; in {moved} of {len(many)} runs docs:insert moved to worker threads (a step held "
        "the loop past 25 ms: a loaded machine), a slower path"
        if moved
        else ""
    )

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
        Row.from_samples(
            "insert",
            "durable insert, 64 callers: CPU per mutation (µs)",
            "µs",
            [r["cpu_us"] for r in many],
            [],
            higher_is_better=False,
            target="context",
            notes=(
                f"process CPU over the timed window / mutations; of it the event-loop thread "
                f"{med(many, 'loop_cpu_us'):.1f} µs (the rest: mostly the core's writer "
                f"thread); bare-core floor {med(floor, 'loop_cpu_us'):.1f} µs/insert on the "
                f"loop ({med(floor, 'cpu_us'):.1f} µs process, {med(floor, 'rate'):,.0f} "
                f"inserts/s){moved_note}"
            ),
            extra={"floor_runs": floor},
        ),
        Row.from_samples(
            "insert",
            "durable insert, 64 callers: Python overhead per call (µs)",
            "µs",
            [r["overhead_us"] for r in many],
            [],
            higher_is_better=False,
            target="context",
            notes=(
                "event-loop thread CPU per db.mutation minus the bare-core floor's per insert "
                "(same repetition): runner, validation, ctx, handler call, schema check, "
                "commit wait, metrics and function log"
            ),
        ),
    ]


def profile(seconds: float) -> Path:
    """The 64-caller run once under ``cProfile``; writes and returns the report's path.

    The report has the top functions by self and by cumulative time, and the split of the
    profiled time into waiting (``epoll``), ``reactive._core`` calls and the rest (Python,
    inflated by the profiler's own cost per call).
    """
    import cProfile
    import io
    import pstats

    out = RESULTS / "profiles" / f"insert-cprofile-{time.strftime('%Y%m%d-%H%M%S')}.txt"
    out.parent.mkdir(parents=True, exist_ok=True)
    profiler = cProfile.Profile()
    with scratch_dir("insert") as d:
        result = asyncio.run(reactive_inserts(d, 64, seconds, profiler=profiler))
    stats = pstats.Stats(profiler)
    total = idle = core = 0.0
    for (_, _, name), (_, _, tottime, _, _) in stats.stats.items():  # type: ignore[attr-defined]
        total += tottime
        if "select.epoll" in name:
            idle += tottime
        elif "reactive._core" in name:
            core += tottime
    done = result["done"] or 1
    text = io.StringIO()
    text.write(
        f"{result['done']} mutations in {seconds:g} s under cProfile ({result['rate']:,.0f}/s), "
        f"{result['commits_per_batch']:.1f} commits/batch\n"
        f"profiled time per mutation (the timed window): "
        f"{total / done * 1e6:.1f} µs; waiting in epoll {idle / done * 1e6:.1f} µs; inside "
        f"reactive._core calls {core / done * 1e6:.1f} µs; the rest (Python) "
        f"{(total - idle - core) / done * 1e6:.1f} µs\n\n"
    )
    stats.stream = text  # type: ignore[attr-defined]
    stats.sort_stats("tottime").print_stats(40)
    stats.sort_stats("cumulative").print_stats(40)
    out.write_text(text.getvalue())
    return out


if __name__ == "__main__":
    if len(sys.argv) >= 2 and sys.argv[1] == "--profile":
        path = profile(float(sys.argv[2]) if len(sys.argv) > 2 else 5.0)
        print(path.read_text().split("\n\n", 1)[0])
        print(f"written to {path}")
    else:
        standalone(run)
