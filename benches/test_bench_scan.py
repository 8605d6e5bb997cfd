"""Benchmark 3 (``bench_scan``) under pytest-benchmark: a 100-document index range scan.

One call is 10 scans on every side (``bench_scan.PER_CALL``: one event-loop entry per 10
``db.query`` calls, ~1 µs a scan, instead of ~10 µs per scan): ``docs:scan`` (or
``docs:scan_count``), or the indexed ``SELECT`` (+ ``json.loads``), the same groups in the
same order. Not a test: run it with
``.venv/bin/python -m pytest benches/test_bench_scan.py --benchmark-only [--quick]``.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest

import bench_scan
from common import scratch_dir
from fixtures import ReadFixture

if TYPE_CHECKING:
    from conftest import Registry

BENCH = "scan"
SIDES = {"test_scan": [["anchor", "reactive", "anchor+json", "reactive count"]]}


@pytest.fixture(scope="module")
def loaded(
    bench_loop: asyncio.AbstractEventLoop, quick: bool, registry: Registry
) -> Iterator[ReadFixture]:
    count = bench_scan.sizes(quick)[0]
    with scratch_dir(BENCH) as d:
        fx, plan = bench_loop.run_until_complete(bench_scan.setup(d, count))
        registry.builders.append(
            (
                BENCH,
                lambda f: bench_scan.rows(
                    count, plan, f["reactive"], f["reactive count"], f["anchor"], f["anchor+json"]
                ),
            )
        )
        try:
            yield fx
        finally:
            bench_loop.run_until_complete(fx.close())


def test_scan(
    loaded: ReadFixture,
    side: str,
    bench_loop: asyncio.AbstractEventLoop,
    measure: Callable[..., None],
) -> None:
    fx = loaded
    first = itertools.count(0, bench_scan.PER_CALL)
    call: Callable[[], Any]
    if side.startswith("reactive"):
        path = "docs:scan_count" if side == "reactive count" else "docs:scan"

        def call() -> None:
            bench_loop.run_until_complete(bench_scan.reactive_call(fx, next(first), path))

    else:
        decode = side == "anchor+json"

        def call() -> None:
            bench_scan.anchor_call(fx, next(first), decode)

    measure(BENCH, side, bench_scan.PER_CALL, call)
