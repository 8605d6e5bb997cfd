"""Benchmark 4: subscription matching with 1k, 10k, 100k and 1M live subscriptions.

Figure: time per commit (median ns) to find the subscriptions a commit invalidates, each
subscription watching a distinct key range, and the growth ratio 1M/1k (target < 3: the
cost should grow with the log of the number of subscriptions, not linearly).

Two measurements:

* **Rust** (the figure): ``cargo bench -p reactive-core --bench subscriptions``, the
  criterion bench of ``SubscriptionIndex::matches`` for a commit of 4 written keys (2 hit,
  2 miss), written beside the index in ``rust/core/benches/subscriptions.rs``. Its plain
  table (median ns per commit, ``cold`` = cycling through 65k distinct commits, ``cold-0`` =
  the same with every key missing, ``hot`` = one commit repeated) is parsed here by its
  header. It runs only if that file exists.
* **Engine, through the Python API** (end to end, context): subscriptions are registered as
  the database registers them — a read-only transaction does the index scan of
  ``with_index("by_x", q.eq("x", k))`` for a distinct ``k`` and ``engine.subscribe`` takes
  its read set (~5 µs each from Python, so 1M take a few seconds) — then single-document
  insert commits with a random ``x`` are published with ``engine.publish`` and timed
  (publish makes the commit visible in the MVCC store, then matches its 3 written index
  keys). The engine is a bare ``_core.Engine`` loaded from a database the app created, with
  no group commit running: batches are taken and published without being written, so the
  figure is the engine's, not the disk's. Each commit must invalidate exactly one
  subscription.

No anchor: the usual alternative, PostgreSQL LISTEN/NOTIFY, fans out per channel and
is measured elsewhere.
"""

from __future__ import annotations

import asyncio
import random
import re
import statistics
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import reactive
from common import APP, Row, log, scratch_dir, standalone
from reactive import _core
from rust import bench_exists, cargo_bench

SIZES = [1_000, 10_000, 100_000, 1_000_000]


def parse_table(output: str) -> dict[str, dict[int, dict[str, float]]]:
    """The bench's plain table: ``{mix: {subs: {column: value}}}``.

    Read by its header line (``mix subs ...``), so added or reordered columns keep working;
    ``build s`` becomes ``build_s``.
    """
    table: dict[str, dict[int, dict[str, float]]] = {}
    columns: list[str] | None = None
    for line in output.splitlines():
        words = line.split()
        if len(words) >= 3 and words[0] == "mix" and words[1] == "subs":
            header = re.sub(r"\bbuild s\b", "build_s", line).split()[2:]
            columns = [w for w in header if w != "ns"]  # "cold ns" in older versions
            continue
        if columns is None or len(words) != 2 + len(columns) or not words[1].isdigit():
            continue
        try:
            values = [float(w) for w in words[2:]]
        except ValueError:
            continue
        table.setdefault(words[0], {})[int(words[1])] = dict(zip(columns, values, strict=True))
    return table


def _size(n: int) -> str:
    return f"{n // 1_000_000}M" if n >= 1_000_000 else f"{n // 1000}k"


def rust_rows(quick: bool) -> list[Row]:
    """Run the criterion bench and turn its plain table into rows."""
    if not bench_exists("subscriptions"):
        return [
            Row(
                "subscriptions",
                "subscription matching (Rust)",
                "ns/commit",
                None,
                notes="rust/core/benches/subscriptions.rs does not exist yet; Rust figure skipped",
            )
        ]
    # Only the bench's plain table is read; in a quick run a filter that matches none of
    # its criterion groups skips those (the table is measured either way).
    result = cargo_bench("subscriptions", ["--quick", "__table_only__"] if quick else [])
    if not result.ok:
        log(result.tail(30))
        return [
            Row(
                "subscriptions",
                "subscription matching (Rust)",
                "ns/commit",
                None,
                notes=f"cargo bench failed: {result.tail(3)}",
            )
        ]
    table = parse_table(result.output)
    if not table:
        return [
            Row(
                "subscriptions",
                "subscription matching (Rust)",
                "ns/commit",
                None,
                notes="could not parse the bench's table; its output ends: "
                + result.tail(8).replace("\n", " | "),
            )
        ]
    rows: list[Row] = []
    head = "prefix" if "prefix" in table else sorted(table)[0]
    for n in SIZES:
        cell = table[head].get(n)
        if cell is None:
            continue
        others = ", ".join(
            f"{mix} {table[mix][n]['cold']:.0f}" for mix in sorted(table) if n in table[mix]
        )
        rows.append(
            Row(
                "subscriptions",
                f"match 1 commit (4 keys), {_size(n)} subs, Rust {head} cold (ns/commit)",
                "ns",
                cell["cold"],
                higher_is_better=False,
                target="context",
                notes=f"hot {cell.get('hot', 0):.0f} ns"
                + (f", all-miss {cell['cold-0']:.0f} ns" if "cold-0" in cell else "")
                + f"; cold by mix: {others}; index built in {cell.get('build_s', 0):.2f} s",
                extra={"table": table} if n == SIZES[0] else {},
            )
        )
    for mix in sorted(table):
        lo, hi = table[mix].get(SIZES[0]), table[mix].get(SIZES[-1])
        if lo and hi:
            rows.append(
                Row(
                    "subscriptions",
                    f"growth 1M/1k subs, Rust {mix} cold",
                    "x",
                    hi["cold"] / lo["cold"],
                    ratio=hi["cold"] / lo["cold"],
                    higher_is_better=False,
                    target="< 3" if mix != "range" else "< 3 (general ranges, informational)",
                    notes=(
                        f"{lo['cold']:.0f} -> {hi['cold']:.0f} ns"
                        + (f"; hot {hi['hot'] / lo['hot']:.2f}x" if lo.get("hot") else "")
                        + (
                            f"; all-miss {hi['cold-0'] / lo['cold-0']:.2f}x"
                            if lo.get("cold-0")
                            else ""
                        )
                    ),
                )
            )
    return rows


async def _engine_publish(quick: bool) -> dict[int, dict[str, Any]]:
    commits = 2_000 if quick else 5_000
    out: dict[int, dict[str, Any]] = {}
    with scratch_dir("subs") as d:
        path = d / "reactive.db"
        # The app creates the table and its index; then a bare engine is loaded from the
        # file, without the database's group commit (which would take the batches itself).
        await (await reactive.open(f"sqlite:///{path}", app=APP)).close()
        store = _core.SqliteStore(path)
        try:
            engine = _core.Engine(store.load())
            rng = random.Random(11)
            have = 0
            for n in SIZES:
                added = n - have
                t0 = time.perf_counter()
                for k in range(have, n):
                    txn = engine.begin(True)
                    txn.scan("docs", "by_x", [("eq", "x", k)], "asc", 100, None, None, None, True)
                    engine.subscribe(txn)
                have = n
                build = time.perf_counter() - t0
                publish: list[int] = []
                whole: list[int] = []
                wrong = 0
                clock = time.perf_counter_ns
                for _ in range(commits):
                    x = rng.randrange(n)
                    t0 = clock()
                    txn = engine.begin(False)
                    txn.insert("docs", {"x": x, "author": "a", "body": "b", "score": 1.0})
                    engine.commit(txn)
                    batch = engine.take_batch()
                    t1 = clock()
                    hit = engine.publish(batch)
                    t2 = clock()
                    publish.append(t2 - t1)
                    whole.append(t2 - t0)
                    wrong += len(hit) != 1
                out[n] = {
                    "publish_ns": statistics.median(publish),
                    "commit_and_publish_ns": statistics.median(whole),
                    "subscribe_us": build / added * 1e6,
                    "wrong_hits": wrong,
                    "subscriptions": engine.subscription_count(),
                }
                log(
                    f"  subscriptions (engine): {_size(n)} subs, publish median "
                    f"{out[n]['publish_ns']:,.0f} ns, commit+publish "
                    f"{out[n]['commit_and_publish_ns']:,.0f} ns (subscribed in {build:.1f} s)"
                )
        finally:
            store.close()
    return out


def engine_rows(quick: bool) -> list[Row]:
    """Publish cost per commit through the engine's Python API at each size."""
    res = asyncio.run(_engine_publish(quick))
    rows = []
    for n, r in res.items():
        check = (
            "each commit invalidated exactly 1 subscription"
            if not r["wrong_hits"]
            else (f"{r['wrong_hits']} commits did NOT invalidate exactly 1 subscription")
        )
        rows.append(
            Row(
                "subscriptions",
                f"engine.publish of 1 insert, {_size(n)} subs, via Python (ns/commit)",
                "ns",
                r["publish_ns"],
                higher_is_better=False,
                target="context",
                notes=f"begin+insert+commit+publish {r['commit_and_publish_ns']:,.0f} ns; "
                f"subscribe {r['subscribe_us']:.1f} µs each from Python; {check}",
                extra=r,
            )
        )
    lo, hi = res.get(SIZES[0]), res.get(SIZES[-1])
    if lo and hi:
        g = hi["publish_ns"] / lo["publish_ns"]
        rows.append(
            Row(
                "subscriptions",
                "growth 1M/1k subs, engine.publish via Python",
                "x",
                g,
                ratio=g,
                higher_is_better=False,
                target="< 3",
                notes=f"{lo['publish_ns']:,.0f} -> {hi['publish_ns']:,.0f} ns (publish includes "
                "applying the commit to the MVCC store, so it is the end-to-end growth)",
            )
        )
    return rows


def _guarded(name: str, part: Callable[[bool], list[Row]], quick: bool) -> list[Row]:
    try:
        return part(quick)
    except Exception as exc:  # one part failing must not hide the other's figures
        traceback.print_exc()
        return [Row("subscriptions", f"{name} (failed)", "", None, notes=f"{exc!r}")]


def run(quick: bool = False) -> list[Row]:
    """The Rust figure (if its bench exists), then the engine measured from Python."""
    return _guarded("Rust matching", rust_rows, quick) + _guarded(
        "engine.publish via Python", engine_rows, quick
    )


if __name__ == "__main__":
    standalone(run)
