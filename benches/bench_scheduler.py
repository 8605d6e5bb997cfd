"""Benchmark 11: scheduled mutations run per second, against calling the same mutation.

Reactive: one mutation schedules ``N`` runs of an internal mutation (``run_after(0, ...)``,
in batches of 1,000, Convex's per-run limit) on the embedded SQLite default; the figure is
``N`` divided by the time from the first scheduling until every ``_scheduled_functions``
document says ``success``. Each run is a durable mutation of its own plus the scheduler's
bookkeeping (the job's ``success`` written in the run's transaction, the due-job scan),
with the worker's defaults (10 at once) and the start rate raised out of the way
(``scheduler_starts_per_s=1e6``).

Anchor: the same ``N`` mutations called directly, 10 at a time (``asyncio.gather`` of
``db.mutation``), on a fresh database: what the scheduler's work costs on top.

Figure: mutations/s; ratio = scheduled / direct (1 would be free; the scheduler adds a
document write per run and a scan per batch).
"""

from __future__ import annotations

import asyncio
import sys
import textwrap
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import reactive
from common import Row, log, median, scratch_dir, standalone

APP = {
    "work.py": """
        from reactive import internal_mutation, mutation, v


        @internal_mutation(args={"i": v.float64()})
        async def touch(ctx, i):
            await ctx.db.insert("touched", {"i": i})


        @mutation(args={"start": v.float64(), "n": v.float64()})
        async def schedule(ctx, start, n):
            for i in range(int(n)):
                await ctx.scheduler.run_after(0, touch, {"i": start + i})
    """,
}


def _write_app(root: Path) -> Path:
    app = root / "schedbench"
    app.mkdir()
    (app / "__init__.py").write_text("")
    for name, source in APP.items():
        (app / name).write_text(textwrap.dedent(source))
    return app


async def _scheduled(url: str, app: Path, n: int) -> float:
    async with reactive.open(url, app=app, scheduler_starts_per_s=1e6) as db:
        t0 = time.perf_counter()
        for start in range(0, n, 1000):
            await db.mutation(
                "work:schedule", {"start": float(start), "n": float(min(1000, n - start))}
            )
        while True:
            txn = db._engine.begin(True)
            pending, _, _ = txn.scan(
                "_scheduled_functions",
                "by_state",
                [("eq", "state.kind", "pending")],
                "asc",
                1,
                None,
                None,
                None,
                True,
            )
            if not pending:
                break
            await asyncio.sleep(0.005)
        elapsed = time.perf_counter() - t0
        assert db._engine.count_documents("touched") == n
        return n / elapsed


async def _direct(url: str, app: Path, n: int) -> float:
    async with reactive.open(url, app=app, run_scheduled=False) as db:
        t0 = time.perf_counter()
        for start in range(0, n, 10):
            await asyncio.gather(
                *(
                    db.mutation("work:touch", {"i": float(i)}, internal=True)
                    for i in range(start, min(n, start + 10))
                )
            )
        elapsed = time.perf_counter() - t0
        assert db._engine.count_documents("touched") == n
        return n / elapsed


def run(quick: bool = False) -> list[Row]:
    """Alternate scheduled and direct runs; one row."""
    n = 1000 if quick else 3000
    reps = 2 if quick else 4
    scheduled: list[float] = []
    direct: list[float] = []
    with scratch_dir("schedbench") as root:
        app = _write_app(root)
        for rep in range(reps):
            scheduled.append(asyncio.run(_scheduled(f"sqlite:///{root / f's{rep}.db'}", app, n)))
            direct.append(asyncio.run(_direct(f"sqlite:///{root / f'd{rep}.db'}", app, n)))
            log(f"scheduler rep {rep}: scheduled {scheduled[-1]:.0f}/s, direct {direct[-1]:.0f}/s")
    return [
        Row(
            "scheduler",
            f"scheduled mutations run ({n} due at once, 10 at a time)",
            "mutations/s",
            median(scheduled),
            median(direct),
            anchor_name="the same mutations called directly, 10 at a time",
            reactive_samples=scheduled,
            anchor_samples=direct,
            notes="embedded SQLite; each run durable; scheduler bookkeeping in the same commit",
        )
    ]


if __name__ == "__main__":
    standalone(run)
