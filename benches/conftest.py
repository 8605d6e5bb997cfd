"""pytest-benchmark for the in-process benchmarks whose unit is a repeatable call.

    .venv/bin/python -m pytest benches/ --benchmark-only             # get, scan, search
    .venv/bin/python -m pytest benches/test_bench_get.py --benchmark-only --quick

``benches/test_bench_{get,scan,search}.py`` measure with the ``benchmark`` fixture of
pytest-benchmark, reusing the setup and the one-call functions of ``bench_get``,
``bench_scan`` and ``bench_search``. The repository's own ``pytest`` run never collects
them (``testpaths = ["tests"]``). Each side of a comparison (reactive, its anchors) is one
benchmark, and all sides of one benchmark module share a pytest-benchmark ``group``. Every
side runs once per repetition (``--reps``, 3 with ``--quick``, else 5), the repetitions
interleaved (rep 1: every side, rep 2: every side, ...), so the sides see the same machine
noise, as in ``benches/run.py``'s own loops.

After pytest-benchmark's table this prints the ratio table of each group: the rows of
``benches/common.py``, built by the benchmark modules' own ``rows(...)`` functions (names,
anchors, targets), with each figure the median over every round of every repetition
(ops/s = operations per call ÷ median seconds per call) and its spread the min-max of
the repetitions' medians. ``--rows-json PATH`` writes those rows as ``benches/run.py``
writes rows: ``benches/run.py --only get,scan,search`` runs this and reads them back.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import Row, Series, text_table, write_json

Builder = Callable[["Figures"], list[Row]]

# Seconds of rounds per side and repetition (pytest-benchmark's --benchmark-max-time), unless
# given on the command line. The same as benches/run.py's own loops spent per repetition.
MAX_TIME = {True: 1.0, False: 2.0}
REPS = {True: 3, False: 5}


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("reactive benchmarks")
    group.addoption(
        "--quick",
        action="store_true",
        help="smaller data sets and fewer repetitions (as benches/run.py --quick)",
    )
    group.addoption(
        "--reps",
        type=int,
        default=None,
        help="repetitions of every side, interleaved (default: 3 with --quick, else 5)",
    )
    group.addoption(
        "--rows-json",
        type=Path,
        default=None,
        help="write the ratio table's rows there (the Row JSON of benches/run.py)",
    )


@pytest.hookimpl(tryfirst=True)  # before pytest-benchmark's (trylast) reads the options
def pytest_configure(config: pytest.Config) -> None:
    config.stash[REGISTRY] = Registry()
    given = any(str(a).startswith("--benchmark-max-time") for a in config.invocation_params.args)
    if not given and hasattr(config.option, "benchmark_max_time"):
        from pytest_benchmark.utils import SecondsDecimal

        config.option.benchmark_max_time = SecondsDecimal(MAX_TIME[config.option.quick])


def reps_of(config: pytest.Config) -> int:
    """Repetitions of every side."""
    reps: int | None = config.option.reps
    return max(1, reps) if reps else REPS[config.option.quick]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrize ``side`` from the module's ``SIDES``: phases, then repetitions, then sides.

    ``SIDES`` maps a test function's name to its phases (lists of sides), or is a function of
    ``quick`` that returns that map. Within a phase every side runs once per repetition.
    """
    if "side" not in metafunc.fixturenames:
        return
    sides = getattr(metafunc.module, "SIDES", {})
    if callable(sides):
        sides = sides(metafunc.config.option.quick)
    phases = sides.get(metafunc.function.__name__, [])
    reps = reps_of(metafunc.config)
    values, ids = [], []
    for phase in phases:
        for rep in range(1, reps + 1):
            for side in phase:
                values.append(side)
                ids.append(f"rep{rep}-{side}")
    metafunc.parametrize("side", values, ids=ids)


class Figures:
    """The round times of one benchmark module's sides, as figures for its ``rows(...)``."""

    def __init__(self, times: dict[str, list[list[float]]], per_call: dict[str, int]) -> None:
        self.times = times
        self.per_call = per_call

    def rate(self, side: str) -> Series:
        """Operations/s: per repetition and, as the figure, over all rounds pooled."""
        reps = [t for t in self.times.get(side, []) if t]
        n = self.per_call.get(side, 1)
        if not reps:
            return Series([], None)
        pooled = statistics.median([x for t in reps for x in t])
        return Series([n / statistics.median(t) for t in reps], n / pooled)

    def ms(self, side: str) -> Series:
        """Milliseconds per call, likewise."""
        reps = [t for t in self.times.get(side, []) if t]
        if not reps:
            return Series([], None)
        pooled = statistics.median([x for t in reps for x in t])
        return Series([statistics.median(t) * 1e3 for t in reps], pooled * 1e3)

    def __getitem__(self, side: str) -> Series:
        return self.rate(side)


class Registry:
    """What the session measured: round times per (module, side), and the row builders."""

    def __init__(self) -> None:
        self.times: dict[str, dict[str, list[list[float]]]] = {}
        self.per_call: dict[str, dict[str, int]] = {}
        self.builders: list[tuple[str, Builder]] = []
        self.tables: list[tuple[str, list[Row]]] = []  # (bench, its rows), once built

    def add(self, bench: str, side: str, per_call: int, times: list[float]) -> None:
        self.times.setdefault(bench, {}).setdefault(side, []).append(list(times))
        self.per_call.setdefault(bench, {})[side] = per_call

    def build(self) -> list[tuple[str, list[Row]]]:
        """Each builder's rows, from the round times of its bench."""
        tables = []
        for bench, builder in self.builders:
            figures = Figures(self.times.get(bench, {}), self.per_call.get(bench, {}))
            try:
                rows = builder(figures)
            except Exception as exc:
                rows = [Row(bench, f"{bench} (failed)", "", None, notes=repr(exc))]
            tables.append((bench, rows))
        return tables


REGISTRY = pytest.StashKey[Registry]()


@pytest.fixture(scope="session")
def registry(pytestconfig: pytest.Config) -> Registry:
    """Where the benchmarks put their round times and their modules' row builders."""
    return pytestconfig.stash[REGISTRY]


@pytest.fixture(scope="session")
def quick(pytestconfig: pytest.Config) -> bool:
    """``--quick``: the data sets of ``benches/run.py --quick``."""
    return bool(pytestconfig.option.quick)


@pytest.fixture(scope="session")
def bench_loop() -> Iterator[asyncio.AbstractEventLoop]:
    """One event loop for the session: the databases are opened and queried on it."""
    loop = asyncio.new_event_loop()
    try:
        yield loop
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


@pytest.fixture
def measure(benchmark: Any, registry: Registry) -> Callable[..., None]:
    """``measure(bench, side, per_call, fn)``: benchmark ``fn`` (one call = ``per_call``
    operations) in the group ``bench`` (or ``group``) and keep its round times for the rows
    of ``bench``."""

    def run(bench: str, side: str, per_call: int, fn: Callable[[], Any], group: str = "") -> None:
        benchmark.group = group or bench
        benchmark.extra_info.update(side=side, operations_per_call=per_call)
        benchmark(fn)
        stats = getattr(benchmark, "stats", None)  # None under --benchmark-disable
        if stats is not None:
            registry.add(bench, side, per_call, stats.stats.data)

    return run


def pytest_sessionfinish(session: pytest.Session) -> None:
    registry = session.config.stash.get(REGISTRY, None)
    if registry is None or not registry.builders:
        return
    registry.tables = registry.build()
    path: Path | None = session.config.option.rows_json
    if path is not None:
        rows = [r.to_json() for _, table in registry.tables for r in table]
        write_json(path, {"rows": rows})


@pytest.hookimpl(trylast=True)  # after pytest-benchmark's own table
def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    registry = config.stash.get(REGISTRY, None)
    if registry is None:
        return
    tr = terminalreporter
    for bench, rows in registry.tables:
        tr.write_line("")
        tr.write_sep("-", f"ratios: {bench} (medians over all rounds; higher is better)")
        for line in text_table(rows).splitlines():
            tr.write_line(line)
        for r in rows:
            if r.notes:
                tr.write_line(f"  - {r.name}: {r.notes}")
