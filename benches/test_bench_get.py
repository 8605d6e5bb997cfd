"""Benchmark 2 (``bench_get``) under pytest-benchmark: ``ctx.db.get`` beside PK SELECTs.

One call is 1,000 gets on every side: one ``docs:get_many`` query, or 1,000 primary-key
``SELECT``s (+ ``json.loads``), the same ids in the same order. Not a test: run it with
``.venv/bin/python -m pytest benches/test_bench_get.py --benchmark-only [--quick]``.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest

import bench_get
from common import scratch_dir
from fixtures import ReadFixture

if TYPE_CHECKING:
    from conftest import Registry

BENCH = "get"
SIDES = {"test_get": [["anchor", "reactive", "anchor+json"]]}


@pytest.fixture(scope="module")
def loaded(
    bench_loop: asyncio.AbstractEventLoop, quick: bool, registry: Registry
) -> Iterator[tuple[ReadFixture, list[list[str]]]]:
    count = bench_get.sizes(quick)[0]
    with scratch_dir(BENCH) as d:
        fx, order = bench_loop.run_until_complete(bench_get.setup(d, count))
        registry.builders.append(
            (BENCH, lambda f: bench_get.rows(count, f["reactive"], f["anchor"], f["anchor+json"]))
        )
        try:
            yield fx, bench_get.calls_of(order)
        finally:
            bench_loop.run_until_complete(fx.close())


def test_get(
    loaded: tuple[ReadFixture, list[list[str]]],
    side: str,
    bench_loop: asyncio.AbstractEventLoop,
    measure: Callable[..., None],
) -> None:
    fx, calls = loaded
    n = itertools.count()
    call: Callable[[], Any]
    if side == "reactive":

        def call() -> None:
            bench_loop.run_until_complete(bench_get.reactive_call(fx, calls[next(n) % len(calls)]))

    else:
        decode = side == "anchor+json"

        def call() -> None:
            bench_get.anchor_call(fx, calls[next(n) % len(calls)], decode)

    measure(BENCH, side, bench_get.PER_CALL, call)
