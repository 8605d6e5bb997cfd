"""Benchmark 10: write latency with N live queries on one socket (invalidation cost).

Reactive: ``python -m reactive.server`` in a subprocess (fresh SQLite database under
``bench-results/tmp/``) serving a small app that this module writes next to the database
(``APP_FILES``: a ``hot`` table of one document, a ``keyed`` table of one document per key
with an index on the key). One socket S (``servers.LightClient``) holds N live queries,
added in ``ModifyQuerySet`` frames of 1,000. Another socket W sends the mutations as raw
``Mutation`` frames. N = 1,000 and 10,000, two shapes:

* (a) ``own``: query i is ``inval:read_own({k: i})``, which reads only key i's document;
  the write (``inval:write_own``) patches one of them (a random key), so exactly one query
  is invalidated (k = 1) whatever N is. Its cost must not grow with N.
* (b) ``hot``: query i is ``inval:read_hot({i: i})``; every one reads the hot document, and
  the write (``inval:write_hot``) patches it, so all N are invalidated (k = N) and each
  write costs N reruns and N ``QueryUpdated``. The figure of interest is the cost per
  invalidated query.

Each write carries a value unique to the repetition (``n = <rep>.5``, a marker). Times
(``time.perf_counter`` in the benchmark process):

* ``start``: just before W's ``Mutation`` frame is written;
* ``returned``: W has read its ``MutationResponse`` (commit durable);
* ``received``: S has read the marker in k ``QueryUpdated`` values (counted across
  frames: shape (a) 1, shape (b) N).

Figures: medians over the repetitions (20 full, 8 quick, after 3 warm-ups; each write
waits until both sockets have it, then 50 ms) of ``start → returned`` (the writer's
latency) and ``start → received`` (the subscriber's), per shape and N; the growth
10k/1k of each; for (b) the cost per invalidated query, ``(received@10k - received@1k) /
9,000`` (marginal) and ``received@10k / 10,000``. Also the server's CPU per write
(``/proc/<pid>/task/*/schedstat``). No anchor: this measures how cost scales with N, so the
ratios are growths (lower is better; (a) should stay near 1, (b) near 10).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import REPO, Row, log, median, scratch_dir, standalone
from servers import (
    PYTHON,
    LightClient,
    cpu_seconds,
    free_port,
    raise_nofile,
    stop_process,
    wait_http,
)

SIZES = (1_000, 10_000)
SHAPES = {"own": "(a) own doc, k=1", "hot": "(b) hot doc, k=N"}
FIGURES = {
    "returned": "mutation return",
    "received": "subscriber has it",
    "cpu": "server CPU/write",
}
CHUNK = 1_000
WARMUP = 3
TIMEOUT_S = 120.0

APP_FILES = {
    "__init__.py": '"""The app of benches/bench_invalidation.py (written by it)."""\n',
    "schema.py": """
        from reactive import define_schema, define_table, v

        schema = define_schema({
            "hot": define_table({"name": v.string(), "n": v.float64()})
                .index("by_name", ["name"]),
            "keyed": define_table({"k": v.float64(), "n": v.float64()}).index("by_k", ["k"]),
        })
    """,
    "inval.py": """
        from reactive import mutation, query, v


        async def _hot(ctx):
            q = ctx.db.query("hot").with_index("by_name", lambda q: q.eq("name", "hot"))
            return await q.first()


        async def _own(ctx, k):
            return await ctx.db.query("keyed").with_index("by_k", lambda q: q.eq("k", k)).first()


        @query(args={"i": v.float64()})
        async def read_hot(ctx, i):
            doc = await _hot(ctx)
            return {"i": i, "n": None if doc is None else doc["n"]}


        @query(args={"k": v.float64()})
        async def read_own(ctx, k):
            doc = await _own(ctx, k)
            return {"k": k, "n": None if doc is None else doc["n"]}


        @mutation(args={"n": v.float64()})
        async def write_hot(ctx, n):
            doc = await _hot(ctx)
            if doc is None:
                await ctx.db.insert("hot", {"name": "hot", "n": n})
            else:
                await ctx.db.patch(doc["_id"], {"n": n})
            return n


        @mutation(args={"k": v.float64(), "n": v.float64()})
        async def write_own(ctx, k, n):
            doc = await _own(ctx, k)
            await ctx.db.patch(doc["_id"], {"n": n})
            return n


        @mutation(args={"start": v.float64(), "count": v.float64()})
        async def seed(ctx, start, count):
            for k in range(int(start), int(start + count)):
                await ctx.db.insert("keyed", {"k": float(k), "n": 0.0})
            return count
    """,
}


def _connect_frame(n: int) -> str:
    return json.dumps(
        {
            "type": "Connect",
            "sessionId": f"00000000-0000-4000-9000-{n:012d}",
            "connectionCount": 0,
            "lastCloseReason": "InitialConnect",
            "clientTs": 0,
        }
    )


class Counter:
    """A socket's frames: counts occurrences of a byte string (``"n":<marker>``) and of
    ``MutationResponse``; wakes a waiter when a target is reached."""

    def __init__(self) -> None:
        self.needle = b""
        self.hits = 0
        self.target = 0
        self.updated = 0
        self.responses = 0
        self.response_at = 0.0
        self.done: asyncio.Future[float] | None = None

    def arm(self, needle: bytes, target: int) -> asyncio.Future[float]:
        self.needle, self.hits, self.target = needle, 0, target
        self.done = asyncio.get_running_loop().create_future()
        return self.done

    def on_text(self, payload: bytes) -> None:
        if self.needle:
            self.hits += payload.count(self.needle)
        self.updated += payload.count(b'"QueryUpdated"')
        if b'"MutationResponse"' in payload:
            self.response_at = time.perf_counter()
            self.responses += 1
            if b'"success":false' in payload:
                log(f"  mutation failed: {payload[:300]!r}")
        if self.done is not None and not self.done.done() and self.hits >= self.target:
            self.done.set_result(time.perf_counter())


def _mutation(request_id: int, path: str, args: dict[str, Any]) -> str:
    return json.dumps(
        {"type": "Mutation", "requestId": request_id, "udfPath": path, "args": [args]}
    )


async def _until(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)


async def measure(port: int, pid: int, shape: str, n: int, reps: int) -> dict[str, Any]:
    """One server, one shape, N live queries: per-repetition latencies (s)."""
    sub_c, w_c = Counter(), Counter()
    sub = await LightClient.connect("127.0.0.1", port, "/api/sync", sub_c.on_text)
    writer = await LightClient.connect("127.0.0.1", port, "/api/sync", w_c.on_text)
    try:
        sub.send_text(_connect_frame(1))
        writer.send_text(_connect_frame(2))
        rid = 0

        async def call(path: str, args: dict[str, Any]) -> None:
            nonlocal rid
            before = w_c.responses
            writer.send_text(_mutation(rid, path, args))
            rid += 1
            await _until(lambda: w_c.responses > before, TIMEOUT_S, f"{path} response")

        if shape == "own":
            for start in range(0, n, CHUNK):
                await call("inval:seed", {"start": float(start), "count": float(CHUNK)})
        else:
            await call("inval:write_hot", {"n": 0.0})

        t0 = time.perf_counter()
        for version, start in enumerate(range(0, n, CHUNK)):
            mods = [
                {
                    "type": "Add",
                    "queryId": q,
                    "udfPath": "inval:read_own" if shape == "own" else "inval:read_hot",
                    "args": [{"k": float(q)} if shape == "own" else {"i": float(q)}],
                }
                for q in range(start, min(n, start + CHUNK))
            ]
            sub.send_text(
                json.dumps(
                    {
                        "type": "ModifyQuerySet",
                        "baseVersion": version,
                        "newVersion": version + 1,
                        "modifications": mods,
                    }
                )
            )
        await _until(lambda: sub_c.updated >= n, TIMEOUT_S, f"{n} initial results")
        setup_s = time.perf_counter() - t0

        rng = random.Random(n)
        k = 1 if shape == "own" else n
        returned: list[float] = []
        received: list[float] = []
        cpu: list[float] = []
        for rep in range(WARMUP + reps):
            marker = rep * 1000 + 0.5 + (n % 997)
            needle = f'"n":{marker!r}'.encode()
            got = sub_c.arm(needle, k)
            resp_before = w_c.responses
            cpu0 = cpu_seconds(pid)
            start = time.perf_counter()
            if shape == "own":
                args = {"k": float(rng.randrange(n)), "n": marker}
                writer.send_text(_mutation(rid, "inval:write_own", args))
            else:
                writer.send_text(_mutation(rid, "inval:write_hot", {"n": marker}))
            rid += 1
            await _until(
                lambda before=resp_before: w_c.responses > before, TIMEOUT_S, "MutationResponse"
            )
            t_ret = w_c.response_at
            t_sub = await asyncio.wait_for(got, TIMEOUT_S)
            await asyncio.sleep(0.05)
            if rep >= WARMUP:
                returned.append(t_ret - start)
                received.append(t_sub - start)
                cpu.append(cpu_seconds(pid) - cpu0)
        return {
            "returned": returned,
            "received": received,
            "cpu": cpu,
            "setup_s": setup_s,
        }
    finally:
        sub.close()
        writer.close()


def _run_one(shape: str, n: int, reps: int) -> dict[str, Any]:
    raise_nofile()
    with scratch_dir(f"inval-{shape}-{n}") as d:
        app = d / "invalapp"
        app.mkdir()
        for name, source in APP_FILES.items():
            (app / name).write_text(textwrap.dedent(source))
        port = free_port()
        log_path = d / "server.log"
        cmd = [
            PYTHON,
            "-m",
            "reactive.server",
            "--app",
            str(app),
            "--db",
            f"sqlite:///{d / 'reactive.db'}",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "warning",
        ]
        with open(log_path, "wb") as out:
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=REPO)
        try:
            wait_http(f"http://127.0.0.1:{port}/health", proc)
            return asyncio.run(measure(port, proc.pid, shape, n, reps))
        except BaseException:
            tail = log_path.read_text(errors="replace")[-2000:] if log_path.exists() else ""
            log(f"  server log tail:\n{tail}")
            raise
        finally:
            stop_process(proc)


def run(quick: bool = False) -> list[Row]:
    reps = 8 if quick else 20
    load = [round(x, 2) for x in os.getloadavg()]
    results: dict[tuple[str, int], dict[str, Any]] = {}
    rows: list[Row] = []
    for shape in ("own", "hot"):
        for n in SIZES:
            log(f"  [invalidation] {shape}, {n:,} live queries ...")
            try:
                results[(shape, n)] = r = _run_one(shape, n, reps)
            except Exception as exc:
                rows.append(
                    Row(
                        "invalidation",
                        f"{shape}, {n:,} live queries (failed)",
                        "",
                        None,
                        notes=f"{type(exc).__name__}: {exc}",
                    )
                )
                continue
            k = 1 if shape == "own" else n
            label = (
                "(a) each reads its own doc, k=1"
                if shape == "own"
                else f"(b) all read the hot doc, k={n:,}"
            )
            for figure, what in (
                ("returned", "mutation start → return"),
                ("received", "mutation → subscriber has it"),
            ):
                ms = [x * 1000 for x in r[figure]]
                rows.append(
                    Row(
                        "invalidation",
                        f"{what}, {n:,} live queries {label} (ms)",
                        "ms",
                        median(ms),
                        higher_is_better=False,
                        target="context",
                        reactive_samples=ms,
                        notes=(
                            f"server CPU {median(r['cpu']) * 1000:.1f} ms/write; "
                            f"{n:,} queries set up in {r['setup_s']:.1f} s"
                            if figure == "received"
                            else ""
                        ),
                        extra={"shape": shape, "n": n, "k": k, "setup_s": r["setup_s"]},
                    )
                )
    for shape in ("own", "hot"):
        lo, hi = results.get((shape, SIZES[0])), results.get((shape, SIZES[1]))
        if lo is None or hi is None:
            continue
        for figure in ("returned", "received", "cpu"):
            a, b = median(lo[figure]), median(hi[figure])
            if not a or not b:
                continue
            g = b / a
            notes = f"{a * 1000:.2f} -> {b * 1000:.2f} ms"
            if shape == "hot" and figure in ("received", "cpu"):
                marginal = (b - a) / (SIZES[1] - SIZES[0])
                notes += (
                    f"; per invalidated query: {marginal * 1e6:.1f} µs marginal, "
                    f"{b / SIZES[1] * 1e6:.1f} µs at 10k"
                )
            rows.append(
                Row(
                    "invalidation",
                    f"growth 10k/1k, {SHAPES[shape]}, {FIGURES[figure]}",
                    "x",
                    g,
                    ratio=g,
                    higher_is_better=False,
                    target="≈ 1" if shape == "own" else "≈ 10 (linear in k)",
                    notes=notes,
                )
            )
    if rows:
        rows[0].notes = (rows[0].notes + "; " if rows[0].notes else "") + (
            f"load average at start {load}, at end {[round(x, 2) for x in os.getloadavg()]}"
        )
    return rows


if __name__ == "__main__":
    standalone(run)
