"""Run every benchmark beside its anchor, in one process, and print the table.

    .venv/bin/python benches/run.py            # full run (~11-15 minutes)
    .venv/bin/python benches/run.py --quick    # shorter, fewer repetitions (~4 minutes)
    .venv/bin/python benches/run.py --only insert,scan --skip-rust
    .venv/bin/python benches/run.py --only server     # a group: embedded, server, persistence,
                                                      # search or peers

Prints the machine, progress (stderr), an aligned table with each figure's spread, the
notes, and the same table in Markdown (for README). Writes everything, samples included,
to ``bench-results/latest.json``, and a full (not ``--quick``) run also to
``benches/results/<date>-<what ran>.json``, committed so that a regression shows in review.
Figures are medians of repetitions in which reactive and
its anchor alternate, so both see the same machine noise; ratios are the figures of merit.
Nothing here asserts a timing.

get, scan and search are measured with pytest-benchmark (``benches/test_bench_*.py``, run
here as ``python -m pytest``; its tables go to stderr with the progress) and folded into the
same table; without pytest-benchmark installed they run their own loops (``bench_*.run``).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_backends
import bench_conflict
import bench_fanout
import bench_get
import bench_http
import bench_insert
import bench_invalidation
import bench_latency
import bench_pocketbase
import bench_scan
import bench_scheduler
import bench_search
import bench_subscriptions
import rust
from common import (
    KEPT,
    REPO,
    RESULTS,
    Row,
    describe_machine,
    log,
    machine,
    markdown_table,
    print_rows,
    write_json,
)

BENCHES: dict[str, ModuleType] = {
    "insert": bench_insert,
    "get": bench_get,
    "scan": bench_scan,
    "subscriptions": bench_subscriptions,
    "conflict": bench_conflict,
    "latency": bench_latency,
    "fanout": bench_fanout,
    "http": bench_http,
    "backends": bench_backends,
    "invalidation": bench_invalidation,
    "scheduler": bench_scheduler,
    "search": bench_search,
    "pocketbase": bench_pocketbase,
}

GROUPS: dict[str, list[str]] = {
    # The database in-process, against sqlite3 anchors and the Rust criterion benches.
    "embedded": ["insert", "get", "scan", "subscriptions", "conflict", "scheduler"],
    # `python -m reactive.server` in a subprocess, against PostgreSQL, bare websockets and
    # bare uvicorn (~2-3 minutes).
    "server": ["latency", "fanout", "http", "invalidation"],
    # Durable inserts on SQLite, PostgreSQL and MariaDB (servers started from Debian's
    # binaries), each beside its raw driver (~4-5 minutes).
    "persistence": ["backends"],
    # Full-text and vector search against tantivy-py, SQLite FTS5 and numpy (needs `tantivy`
    # and `numpy` in the venv; ~1 minute for the anchors, more once the engine's side runs).
    "search": ["search"],
    # Peers built and run by the benchmark: PocketBase v0.36.0 (Go; needs the go command,
    # the first run builds it into bench-results/pocketbase/, ~2-3 minutes), ~2 minutes quick.
    "peers": ["pocketbase"],
}


# Measured through pytest-benchmark (benches/conftest.py), one `python -m pytest` per name.
PYTEST: dict[str, str] = {
    "get": "test_bench_get.py",
    "scan": "test_bench_scan.py",
    "search": "test_bench_search.py",
}


def run_pytest(name: str, quick: bool) -> list[Row]:
    """Run ``benches/<PYTEST[name]>`` under pytest-benchmark; the rows its conftest wrote.

    pytest's output (pytest-benchmark's table, then the ratio table) goes to stderr, with the
    progress; pytest-benchmark's own JSON is kept in ``bench-results/pytest-benchmark-<name>``.
    """
    rows_json = RESULTS / f"pytest-rows-{name}.json"
    rows_json.unlink(missing_ok=True)
    command = [
        sys.executable,
        "-m",
        "pytest",
        str(REPO / "benches" / PYTEST[name]),
        "--benchmark-only",
        f"--benchmark-json={RESULTS / f'pytest-benchmark-{name}.json'}",
        f"--rows-json={rows_json}",
        "-p",
        "no:cacheprovider",
        "-q",
        *(["--quick"] if quick else []),
    ]
    log(f"  {name}: {' '.join(command[1:])}")
    sys.stdout.flush()
    done = subprocess.run(command, cwd=REPO, stdout=sys.stderr, check=False)
    if not rows_json.exists():
        raise RuntimeError(f"pytest exited {done.returncode} and wrote no rows")
    rows = [Row(**r) for r in json.loads(rows_json.read_text())["rows"]]
    if done.returncode != 0:
        rows.append(
            Row(name, f"{name}: pytest exited {done.returncode}", "", None, notes="see stderr")
        )
    return rows


def expand(selection: str) -> list[str]:
    """Benchmark names from ``--only``: names and group names, in the order given."""
    names: list[str] = []
    for item in (n.strip() for n in selection.split(",")):
        for name in GROUPS.get(item, [item] if item else []):
            if name not in names:
                names.append(name)
    return names


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer, shorter repetitions")
    parser.add_argument(
        "--only",
        default="",
        help=(
            f"comma-separated benchmarks ({', '.join(BENCHES)}) or groups "
            f"({', '.join(g + ' = ' + '+'.join(m) for g, m in GROUPS.items())})"
        ),
    )
    parser.add_argument("--skip-rust", action="store_true", help="skip cargo (criterion) benches")
    parser.add_argument(
        "--json", type=Path, default=RESULTS / "latest.json", help="where to write the JSON"
    )
    args = parser.parse_args()
    names = expand(args.only) or list(BENCHES)
    unknown = [n for n in names if n not in BENCHES]
    if unknown:
        parser.error(
            f"unknown benchmark(s) {unknown}; known: {list(BENCHES)}, groups: {list(GROUPS)}"
        )

    info = machine()
    started = datetime.now(UTC)
    print(f"reactive benchmarks ({'quick' if args.quick else 'full'} run)")
    print(f"machine: {describe_machine(info)}")
    sys.stdout.flush()

    pytest_benchmark = importlib.util.find_spec("pytest_benchmark") is not None
    if not pytest_benchmark and set(PYTEST) & set(names):
        log("pytest-benchmark is not installed (the bench extra): get, scan and search run alone")
    rows: list[Row] = []
    seconds: dict[str, float] = {}
    t_all = time.perf_counter()
    cargo = [n for n in ("subscriptions", "conflict") if n in names and rust.bench_exists(n)]
    if cargo and not args.skip_rust:
        # Compile the criterion benches first, in one go, so build time is not bench time.
        log(f"[build] cargo bench --no-run {' '.join('--bench ' + n for n in cargo)} ...")
        built = rust.build(cargo)
        seconds["build"] = built.seconds
        log(f"[build] {'done' if built.ok else 'FAILED'} in {built.seconds:.0f} s")
        if not built.ok:
            log(built.tail(30))
    for name in names:
        module = BENCHES[name]
        if args.skip_rust and name == "conflict":
            continue
        log(f"[{name}] ...")
        t0 = time.perf_counter()
        try:
            if args.skip_rust and name == "subscriptions":
                got = bench_subscriptions.engine_rows(args.quick)
            elif (
                name in PYTEST
                and pytest_benchmark
                and not getattr(module, "missing_modules", list)()
            ):
                got = run_pytest(name, args.quick)
            else:
                got = module.run(args.quick)
        except Exception as exc:
            traceback.print_exc()
            got = [Row(name, f"{name} (failed)", "", None, notes=f"{type(exc).__name__}: {exc}")]
        seconds[name] = time.perf_counter() - t0
        log(f"[{name}] done in {seconds[name]:.0f} s")
        rows.extend(got)
    total = time.perf_counter() - t_all

    info_end = machine()
    print()
    print_rows(rows)
    print()
    print(
        f"Measured {started:%Y-%m-%d} on {info['nproc']} CPU(s) {info['cpu_model']}, "
        f"Python {info['python']}, SQLite {info['sqlite']}, {info['db_filesystem']}; "
        f"{'quick' if args.quick else 'full'} run, {total:.0f} s; load average "
        f"{info['load_average']} → {info_end['load_average']}. Medians of repetitions; "
        "ratio = reactive/anchor for throughput (higher is better)."
    )
    print()
    print(markdown_table(rows))
    result = {
        "started": started.isoformat(),
        "quick": args.quick,
        "only": args.only or "all",
        "seconds": {"total": total, **seconds},
        "machine": info,
        "load_average_end": info_end["load_average"],
        "rows": [r.to_json() for r in rows],
    }
    write_json(args.json, result)
    log(f"wrote {args.json}")
    if not args.quick:
        # A full run's figures, to commit: a regression shows in review as a diff of these.
        kept = KEPT / f"{started:%Y-%m-%d}-{(args.only or 'all').replace(',', '+')}.json"
        write_json(kept, result)
        log(f"wrote {kept} (commit it: benches/results/ keeps every full run)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
