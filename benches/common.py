"""Shared helpers of the benchmarks: scratch directories, the machine, rows and tables.

Every benchmark module exposes ``run(quick: bool) -> list[Row]`` (and a ``main()`` that runs
it alone and prints its rows). A :class:`Row` holds the medians of the reactive side and of
its anchor, measured side by side in the same run, and the samples they came from.
Benchmarks print figures and ratios; they never assert timings.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
BENCHES = REPO / "benches"
APP = BENCHES / "benchapp"
RESULTS = REPO / "bench-results"
SCRATCH = RESULTS / "tmp"
# Full runs kept in the repository (benches/results/<date>-<what ran>.json).
KEPT = REPO / "benches" / "results"


# -- scratch space ---------------------------------------------------------------------------


def mount_of(path: Path) -> dict[str, str]:
    """The mount holding ``path``: ``{"mount", "device", "fstype"}`` from /proc/mounts."""
    path = path.resolve()
    best = {"mount": "/", "device": "?", "fstype": "?"}
    try:
        lines = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return best
    best_len = -1
    for line in lines:
        parts = line.split()
        if len(parts) < 3:
            continue
        device, mount, fstype = parts[0], parts[1].replace("\\040", " "), parts[2]
        if (str(path) == mount or str(path).startswith(mount.rstrip("/") + "/")) and len(
            mount
        ) > best_len:
            best, best_len = {"mount": mount, "device": device, "fstype": fstype}, len(mount)
    return best


@contextlib.contextmanager
def scratch_dir(prefix: str) -> Iterator[Path]:
    """A fresh directory for databases, on the repository's filesystem (never tmpfs).

    ``bench-results/tmp/`` is inside the (git-ignored) results directory, so fsync costs
    what it costs for a real app next to the code. The directory is removed afterwards.
    """
    SCRATCH.mkdir(parents=True, exist_ok=True)
    fs = mount_of(SCRATCH)["fstype"]
    if fs in ("tmpfs", "ramfs"):
        raise RuntimeError(f"{SCRATCH} is on {fs}: fsync would cost nothing; move the repo")
    path = Path(tempfile.mkdtemp(prefix=prefix + "-", dir=SCRATCH))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


# -- the machine -----------------------------------------------------------------------------


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith(("model name", "hardware", "cpu model")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    try:
        nproc = len(os.sched_getaffinity(0))
    except AttributeError:
        nproc = os.cpu_count() or 0
    try:
        import reactive

        version = reactive.__version__
    except Exception:
        version = "?"
    mount = mount_of(SCRATCH if SCRATCH.exists() else REPO)
    try:
        mem_kb = int(Path("/proc/meminfo").read_text().split()[1])
    except (OSError, ValueError, IndexError):
        mem_kb = 0
    return {
        "nproc": nproc,
        "cpu_model": cpu_model(),
        "memory_gib": round(mem_kb / 1024 / 1024, 1),
        "python": sys.version.split()[0],
        "python_impl": platform.python_implementation(),
        "platform": platform.platform(),
        "sqlite": sqlite3.sqlite_version,
        "reactive": version,
        "db_filesystem": f"{mount['fstype']} on {mount['mount']} ({mount['device']})",
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


def describe_machine(m: dict[str, Any]) -> str:
    """One paragraph for humans."""
    return (
        f"{m['nproc']} CPU(s), {m['cpu_model']}, {m['memory_gib']} GiB; Python {m['python']} "
        f"({m['python_impl']}), SQLite {m['sqlite']}, reactive {m['reactive']}; databases on "
        f"{m['db_filesystem']}; load average at start {m['load_average']}"
    )


# -- figures ---------------------------------------------------------------------------------


def median(xs: list[float]) -> float | None:
    """The median, or None for no samples."""
    return statistics.median(xs) if xs else None


def percentile(xs: list[float], p: float) -> float | None:
    """The ``p``-th percentile (nearest rank) of ``xs``."""
    if not xs:
        return None
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, round(p / 100 * (len(s) - 1))))]


class Series(list[float]):
    """Samples whose figure is given rather than their median.

    The pytest-benchmark path (``benches/conftest.py``) passes one sample per repetition (the
    median of its rounds) and, as the figure, the median over every round of every repetition.
    """

    def __init__(self, samples: list[float], figure: float | None) -> None:
        super().__init__(samples)
        self.figure = figure


def figure_of(samples: list[float]) -> float | None:
    """A :class:`Series`' figure, else the median of the samples."""
    return samples.figure if isinstance(samples, Series) else median(samples)


@dataclass
class Row:
    """One line of the results table.

    ``reactive`` and ``anchor`` are medians of ``reactive_samples`` / ``anchor_samples``
    (each sample one repetition). ``ratio`` is reactive/anchor when higher is better,
    anchor/reactive when lower is better, unless given explicitly (growth ratios).
    """

    bench: str
    name: str
    unit: str
    reactive: float | None
    anchor: float | None = None
    anchor_name: str = ""
    higher_is_better: bool = True
    target: str = ""
    ratio: float | None = None
    reactive_samples: list[float] = field(default_factory=list)
    anchor_samples: list[float] = field(default_factory=list)
    notes: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.ratio is None and self.reactive and self.anchor:
            if self.higher_is_better:
                self.ratio = self.reactive / self.anchor
            else:
                self.ratio = self.anchor / self.reactive

    @classmethod
    def from_samples(
        cls, bench: str, name: str, unit: str, reactive: list[float], anchor: list[float], **kw: Any
    ) -> Row:
        """A row whose figures are the medians of the samples (or a :class:`Series`' figure)."""
        return cls(
            bench,
            name,
            unit,
            figure_of(reactive),
            figure_of(anchor),
            reactive_samples=list(reactive),
            anchor_samples=list(anchor),
            **kw,
        )

    def to_json(self) -> dict[str, Any]:
        """The row as plain JSON."""
        return asdict(self)


def fmt(x: float | None, unit: str = "") -> str:
    """A figure with a sensible number of digits and its unit."""
    if x is None:
        return "—"
    if abs(x) >= 100:
        text = f"{x:,.0f}"
    elif abs(x) >= 10:
        text = f"{x:,.1f}"
    else:
        text = f"{x:,.2f}"
    return f"{text} {unit}".strip()


def spread(samples: list[float]) -> str:
    """``min-max`` of the samples, for judging noise."""
    if len(samples) < 2:
        return ""
    return f"{fmt(min(samples))}-{fmt(max(samples))}"


def markdown_table(rows: list[Row]) -> str:
    """The rows as a Markdown table (paste into README)."""
    out = [
        "| benchmark | reactive | anchor | ratio | target |",
        "|---|---:|---:|---:|---|",
    ]
    for r in rows:
        anchor = fmt(r.anchor, r.unit) if r.anchor is not None else ""
        if r.anchor_name:
            anchor = f"{anchor} ({r.anchor_name})" if anchor else r.anchor_name
        ratio = f"**{r.ratio:.2f}x**" if r.ratio is not None else ""
        out.append(f"| {r.name} | {fmt(r.reactive, r.unit)} | {anchor} | {ratio} | {r.target} |")
    return "\n".join(out)


def text_table(rows: list[Row]) -> str:
    """The rows as an aligned text table, with the spread of the samples."""
    header = ("benchmark", "reactive", "(min-max)", "anchor", "(min-max)", "ratio", "target")
    lines = [header]
    for r in rows:
        lines.append(
            (
                r.name,
                fmt(r.reactive, r.unit),
                spread(r.reactive_samples),
                fmt(r.anchor, r.unit) if r.anchor is not None else "",
                spread(r.anchor_samples),
                f"{r.ratio:.2f}x" if r.ratio is not None else "",
                r.target,
            )
        )
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(header))]
    rendered = []
    for n, line in enumerate(lines):
        cells = [
            str(c).ljust(widths[i]) if i == 0 or i == len(header) - 1 else str(c).rjust(widths[i])
            for i, c in enumerate(line)
        ]
        rendered.append("  ".join(cells).rstrip())
        if n == 0:
            rendered.append("-" * len(rendered[0]))
    return "\n".join(rendered)


def print_rows(rows: list[Row], *, notes: bool = True) -> None:
    """Print the text table and each row's notes."""
    print(text_table(rows))
    if notes:
        for r in rows:
            if r.notes:
                print(f"  - {r.name}: {r.notes}")


def write_json(path: Path, payload: dict[str, Any]) -> None:
    """Write ``payload`` as indented JSON, creating the directory."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n")


def rate_for(seconds: float, op: Callable[[], int]) -> tuple[float, int]:
    """Call ``op`` (returning how many operations it did) until ``seconds`` pass.

    Returns ``(operations per second, operations)``.
    """
    done = 0
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        done += op()
        now = time.perf_counter()
        if now >= deadline:
            return done / (now - start), done


def log(message: str) -> None:
    """Progress on stderr (stdout carries the results)."""
    print(message, file=sys.stderr, flush=True)


def standalone(run: Callable[[bool], list[Row]]) -> None:
    """``main()`` of a benchmark module: ``python benches/bench_x.py [--quick]``."""
    import argparse

    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="fewer, shorter repetitions")
    args = parser.parse_args()
    print(describe_machine(machine()))
    rows = run(args.quick)
    print_rows(rows)
    print()
    print(markdown_table(rows))
