"""Running the criterion benches of ``rust/core/benches`` and reading their output."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from common import REPO, log

_UNITS = {"ps": 1e-12, "ns": 1e-9, "µs": 1e-6, "us": 1e-6, "ms": 1e-3, "s": 1.0}
_THRPT = {"elem/s": 1.0, "Kelem/s": 1e3, "Melem/s": 1e6, "Gelem/s": 1e9}


@dataclass
class CargoRun:
    """What one ``cargo bench`` printed."""

    ok: bool
    output: str
    seconds: float

    def tail(self, lines: int = 12) -> str:
        """The last lines (for error reports)."""
        return "\n".join(self.output.strip().splitlines()[-lines:])


def bench_exists(name: str) -> bool:
    """Whether ``rust/core/benches/<name>.rs`` exists."""
    return (REPO / "rust" / "core" / "benches" / f"{name}.rs").exists()


_EXECUTABLES: dict[str, Path] = {}
"""Bench executables built by :func:`build`, by bench name."""


def build(names: list[str], timeout: float = 900) -> CargoRun:
    """Build criterion benches in one cargo invocation (one compile of the crate).

    The executables are remembered, and :func:`cargo_bench` runs them as ``cargo bench``
    would (``<exe> --bench``). Other engineers' edits to ``rust/core/src`` during a run then
    cannot trigger a rebuild half way: every Rust figure of a run measures the same code.
    """
    args = ["cargo", "bench", "-p", "reactive-core", "--no-run", "--message-format=json"]
    for name in names:
        args += ["--bench", name]
    env = dict(os.environ, CARGO_TERM_COLOR="never")
    t0 = time.perf_counter()
    proc = subprocess.run(args, cwd=REPO, capture_output=True, text=True, env=env, timeout=timeout)
    for line in proc.stdout.splitlines():
        try:
            msg = json.loads(line)
        except ValueError:
            continue
        target = msg.get("target") or {}
        if (
            msg.get("reason") == "compiler-artifact"
            and msg.get("executable")
            and "bench" in target.get("kind", [])
            and target.get("name") in names
        ):
            _EXECUTABLES[target["name"]] = Path(msg["executable"])
    ok = proc.returncode == 0 and all(n in _EXECUTABLES for n in names)
    return CargoRun(ok, proc.stderr, time.perf_counter() - t0)


def cargo_bench(name: str, args: list[str] | None = None, timeout: float = 900) -> CargoRun:
    """``cargo bench -p reactive-core --bench <name> [-- args]``.

    Builds first (a separate step, so its time is not mistaken for the bench's) unless
    :func:`build` already did in this process; then runs the executable with ``--bench``
    from the crate's directory, exactly what ``cargo bench`` runs.
    """
    exe = _EXECUTABLES.get(name)
    if exe is None:
        built = build([name], timeout)
        if not built.ok:
            return built
        if built.seconds > 5:
            log(f"  built bench {name} in {built.seconds:.0f} s")
        exe = _EXECUTABLES[name]
    env = dict(os.environ, CARGO_TERM_COLOR="never")
    t0 = time.perf_counter()
    proc = subprocess.run(
        [str(exe), "--bench", *(args or [])],
        cwd=REPO / "rust" / "core",
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )
    return CargoRun(proc.returncode == 0, proc.stdout + proc.stderr, time.perf_counter() - t0)


@dataclass
class CriterionResult:
    """One criterion benchmark: median time per iteration and throughput."""

    name: str
    time_s: tuple[float, float, float]
    per_s: tuple[float, float, float] | None


def parse_criterion(output: str) -> dict[str, CriterionResult]:
    """Every ``name time: [lo mid hi] (thrpt: [lo mid hi])`` block in criterion's output."""
    results: dict[str, CriterionResult] = {}
    pattern = re.compile(
        r"^(?P<name>\S+)\s+time:\s+\[(?P<time>[^\]]+)\]"
        r"(?:\s+thrpt:\s+\[(?P<thrpt>[^\]]+)\])?",
        re.MULTILINE,
    )
    for m in pattern.finditer(output):
        parts = m["time"].split()
        times = tuple(float(parts[i]) * _UNITS[parts[i + 1]] for i in (0, 2, 4))
        per_s = None
        if m["thrpt"]:
            p = m["thrpt"].split()
            per_s = tuple(float(p[i]) * _THRPT[p[i + 1]] for i in (0, 2, 4))
        results[m["name"]] = CriterionResult(m["name"], times, per_s)  # type: ignore[arg-type]
    return results
