"""Benchmark 5: conflict checking in Rust (criterion, ``rust/core/benches/conflict.rs``).

One committer check (``WriteLog::first_overlap``) of a normalized 100-interval read set
(``reactive_core::interval::IntervalSet``: 50 ``get`` points in ``by_id``, 50 ranges in a
user index) against a 10,000-entry write log window (``WriteLogEntry`` of 4 keys each: one
document's ``by_id``, ``by_creation_time`` and two user-index keys), the transaction begun
before all of them and no key overlapping, so every entry is checked. Figure: checks/s
(criterion's median throughput). Variants give context: 1 and 1,000 intervals against the
same window, 100 intervals against a 1,000-entry window.

No in-run anchor: README (Benchmarks) quotes FoundationDB's resolver (0.65-0.95 M txn/s per
resolver) for a different workload (small read sets against a version-indexed key-range
map), so it is named in the notes, not divided by.

Run alone: ``python benches/bench_conflict.py [--quick]`` or
``cargo bench -p reactive-core --bench conflict``.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import Row, log, standalone
from rust import cargo_bench, parse_criterion

CASES = [
    ("conflict/read100_log10k", "conflict check, 100 reads vs 10k-entry log (checks/s)", ""),
    ("conflict/read1_log10k", "conflict check, 1 read vs 10k-entry log (checks/s)", "context"),
    ("conflict/read1000_log10k", "conflict check, 1k reads vs 10k-entry log (checks/s)", "context"),
    ("conflict/read100_log1k", "conflict check, 100 reads vs 1k-entry log (checks/s)", "context"),
]


def run(quick: bool = False) -> list[Row]:
    """Build and run the criterion bench; one row per case."""
    result = cargo_bench("conflict", ["--quick"] if quick else [])
    if not result.ok:
        log(result.tail(30))
        return [
            Row(
                "conflict",
                CASES[0][1],
                "checks/s",
                None,
                notes=f"cargo bench failed: {result.tail(3)}",
            )
        ]
    parsed = parse_criterion(result.output)
    rows = []
    for key, name, target in CASES:
        r = parsed.get(key)
        if r is None:
            rows.append(Row("conflict", name, "checks/s", None, notes="not in criterion's output"))
            continue
        per_s = r.per_s[1] if r.per_s else 1 / r.time_s[1]
        entries = 1_000 if key.endswith("log1k") else 10_000
        notes = (
            f"criterion median {r.time_s[1] * 1e3:.3f} ms per check "
            f"(95% CI {r.time_s[0] * 1e3:.3f}-{r.time_s[2] * 1e3:.3f} ms), "
            f"{r.time_s[1] * 1e9 / entries:.0f} ns per write-log entry"
        )
        if not target:
            notes += "; FoundationDB's resolver: 0.65-0.95 M txn/s, other workload"
        rows.append(
            Row(
                "conflict",
                name,
                "checks/s",
                per_s,
                target=target,
                reactive_samples=[1 / t for t in r.time_s],
                notes=notes,
                extra={"time_s": r.time_s, "per_s": r.per_s},
            )
        )
    return rows


if __name__ == "__main__":
    standalone(run)
