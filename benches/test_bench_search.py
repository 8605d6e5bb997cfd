"""Benchmark 11 (``bench_search``) under pytest-benchmark: text and vector queries.

The indexing figures are one-shot (documents/s until searchable, the rebuild at reopen): the
fixtures measure them as ``bench_search`` does, once per data set, and their rows come out
with the rest. The queries are benchmarks, every side in the same order over the same
queries:

* text (group ``search text``): one call is 10 queries ("t1 OR t2", top 10), through
  ``db.text_search`` (``engine``), the queries ``docs:search`` (``fn``) and
  ``docs:search_ids`` (``fn_ids``), tantivy-py with and without the engine's prefix
  expansions (``tantivy_x``, ``tantivy``) and SQLite FTS5.
* vectors (groups ``search vector <mode>``, one per mode: exact and approximate when
  ``reactive.open`` has ``vector_exact_limit``): one call is one top-10 query, through
  ``db.vector_search`` (``engine``) or the query ``vecs:search`` (``fn``), beside numpy's exact
  top 10. Recall@10 comes from one untimed pass over the queries per mode and path.

Not a test: ``.venv/bin/python -m pytest benches/test_bench_search.py --benchmark-only
[--quick]`` (needs ``tantivy`` and ``numpy``, the bench extra).
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

pytest.importorskip("tantivy")
pytest.importorskip("numpy")

import bench_search
from common import Row, scratch_dir

if TYPE_CHECKING:
    from conftest import Figures, Registry

BENCH = "search"
PER_CALL = 10  # text queries per call: one event-loop entry per 10 reactive searches
REACTIVE = bench_search.TEXT_LABELS  # the reactive text sides


def plan_of(quick: bool) -> bench_search.Plan:
    """The sizes of ``bench_search``'s quick or full run."""
    return bench_search.QUICK if quick else bench_search.FULL


def modes_of(plan: bench_search.Plan) -> list[tuple[str, dict[str, Any]]]:
    """The vector modes, as :func:`bench_search.vector_setup` finds them."""
    if bench_search.missing_api():
        return [("default", {})]
    return bench_search.vector_modes(plan.vectors)


def sides(quick: bool) -> dict[str, list[list[str]]]:
    """The sides of each test, in phases (one per vector mode: each reopens the database)."""
    modes = [mode for mode, _ in modes_of(plan_of(quick))]
    return {
        "test_text": [["tantivy", "fts5", "tantivy_x", "engine", "fn", "fn_ids"]],
        "test_vector": [[f"{m}/numpy", f"{m}/fn", f"{m}/engine"] for m in modes],
    }


SIDES = sides


@pytest.fixture(scope="module")
def root() -> Iterator[Path]:
    """The scratch directory of the whole module (text and vector data)."""
    with scratch_dir(BENCH) as d:
        yield d


class TestText:
    @pytest.fixture(scope="class")
    @classmethod
    def text(
        cls,
        bench_loop: asyncio.AbstractEventLoop,
        quick: bool,
        registry: Registry,
        root: Path,
    ) -> Iterator[bench_search.Text]:
        t = bench_loop.run_until_complete(bench_search.text_setup(plan_of(quick), root))

        def rows(f: Figures) -> list[Row]:
            return bench_search.text_table(t, {k: f[k] for k in bench_search.TEXT_KEYS})

        registry.builders.append(("search text", rows))
        try:
            yield t
        finally:
            bench_loop.run_until_complete(t.close())

    def test_text(
        self,
        text: bench_search.Text,
        side: str,
        bench_loop: asyncio.AbstractEventLoop,
        measure: Callable[..., None],
    ) -> None:
        first = itertools.count(0, PER_CALL)
        call: Callable[[], Any]
        if side in REACTIVE:
            search = text.reactive.get(side)
            if search is None:
                pytest.skip(text.failed.get(side) or text.side.skipped or bench_search.NOT_YET)
            qs = text.qs

            async def batch(i0: int) -> int:
                empty = 0
                for i in range(i0, i0 + PER_CALL):
                    if not await search(qs[i % len(qs)]):
                        empty += 1
                return empty

            def call() -> None:
                text.empties[side] += bench_loop.run_until_complete(batch(next(first)))

        else:
            items, op = text.anchors()[side]

            def call() -> None:
                i0 = next(first)
                empty = 0
                for i in range(i0, i0 + PER_CALL):
                    if op(items[i % len(items)]) == 0:
                        empty += 1
                text.empties[side] += empty

        try:
            measure("search text", side, PER_CALL, call)
        except Exception as exc:
            if side in REACTIVE:  # its rows say why, as bench_search's own loop does
                text.failed[side] = (
                    f"{REACTIVE[side]} failed: {type(exc).__name__}: {str(exc)[:160]}"
                )
                text.reactive.pop(side, None)
            raise


class VectorState:
    """The vector side and the mode the database is open in (a mode reopens it)."""

    def __init__(self, v: bench_search.Vectors, loop: asyncio.AbstractEventLoop) -> None:
        self.v = v
        self.loop = loop
        self.mode: str | None = None
        self.paths: dict[str, bench_search.VectorCall] = {}

    def use(self, mode: str) -> dict[str, bench_search.VectorCall]:
        """The reactive searches of ``mode`` (reopening the database for it), warmed up, and
        their recall@10 from one untimed pass."""
        v = self.v
        if mode == self.mode:
            return self.paths
        self.mode, self.paths = mode, {}
        names = [name for name, _ in v.modes]
        if v.side.skipped or mode not in names:
            return self.paths
        m = names.index(mode)
        got = self.loop.run_until_complete(
            bench_search.vector_mode(v, mode, v.modes[m][1], reopen=m > 0)
        )
        for name, call in list((got or {}).items()):
            try:
                _, tops, _ = self.loop.run_until_complete(bench_search.vector_pass(v, call))
            except Exception as exc:
                v.failed[f"{mode}/{name}"] = f"{type(exc).__name__}: {str(exc)[:160]}"
                continue
            v.figures[(mode, name)]["recall"] = [bench_search.overlap(tops, v.truth) or 0.0]
            self.paths[name] = call
        return self.paths


class TestVector:
    @pytest.fixture(scope="class")
    @classmethod
    def vectors(
        cls,
        bench_loop: asyncio.AbstractEventLoop,
        quick: bool,
        registry: Registry,
        root: Path,
    ) -> Iterator[VectorState]:
        v = bench_loop.run_until_complete(bench_search.vector_setup(plan_of(quick), root))

        def rows(f: Figures) -> list[Row]:
            for (mode, name), fig in v.figures.items():
                fig["ms"], fig["qps"] = f.ms(f"{mode}/{name}"), f.rate(f"{mode}/{name}")
            v.np_ms, v.np_qps = f.ms("numpy"), f.rate("numpy")
            return v.table()

        registry.builders.append(("search vector", rows))
        try:
            yield VectorState(v, bench_loop)
        finally:
            bench_loop.run_until_complete(v.close())

    def test_vector(
        self,
        vectors: VectorState,
        side: str,
        bench_loop: asyncio.AbstractEventLoop,
        measure: Callable[..., None],
    ) -> None:
        mode, name = side.split("/")
        v = vectors.v
        paths = vectors.use(mode)
        n = itertools.count()
        group = f"search vector {mode}"
        if name == "numpy":
            matrix, qs = v.matrix, v.qs

            def anchor() -> None:
                bench_search.numpy_top(matrix, qs[next(n) % len(qs)])

            # numpy's figure pools every mode's repetitions, as bench_search's own loop does.
            measure("search vector", "numpy", 1, anchor, group=group)
            return
        search = paths.get(name)
        if search is None:
            pytest.skip(
                v.side.skipped
                or v.failed.get(f"{mode}/{name}")
                or v.failed.get(mode)
                or f"{bench_search.NOT_YET}: Database has no vector_search"
            )
        qlists = v.qlists

        def call() -> None:
            bench_loop.run_until_complete(search(qlists[next(n) % len(qlists)]))

        try:
            measure("search vector", side, 1, call, group=group)
        except Exception as exc:
            v.failed[side] = f"{type(exc).__name__}: {str(exc)[:160]}"
            raise
