"""Elle list-append histories against the embedded API: serializable, and provably checked.

Thousands of random transactions from concurrent asyncio workers over a few hot keys go
through ``db.mutation("lists:txn", ...)`` (half the read-only ones through the query
``lists:read``); the history they leave (with a final read of
every key) must have no anomaly, real-time order included (a mutation returns after its
commit, so every later transaction must see it: strict serializability). The same workload
with ``unsafe_skip_validation=1`` (the committer skips its conflict checks) must give
anomalies: the check is not vacuous.

Source: docs/guarantees.md ("Isolation": any concurrent history is equivalent to running
the transactions one at a time in commit-timestamp order); ARCHITECTURE.md (OCC
committer); Kingsbury & Alvaro, VLDB 2020.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from elle import check
from listappend import (
    APP_FILES,
    Generator,
    Op,
    Outcome,
    env_int,
    read_only_keys,
    run_workload,
    txn_count,
)

import reactive
from reactive.errors import ConvexError, WriteConflict

CONCURRENCY = env_int("REACTIVE_ELLE_CONCURRENCY", 32)
SEED = env_int("REACTIVE_ELLE_SEED", 0)
UNSAFE_TXNS = 4_000


def classify(exc: Exception) -> str:
    """A mutation that raised did not commit if it conflicted to the end or failed itself."""
    return "fail" if isinstance(exc, (WriteConflict, ConvexError)) else "info"


async def run(url: str, app: Path, n_txns: int, **config: int) -> tuple[Outcome, Any]:
    """The workload through ``db.mutation``, half the read-only transactions as queries."""
    coin = random.Random(SEED)
    async with reactive.open(url, app=app, **config) as db:

        async def execute(ops: list[Op]) -> list[Any]:
            keys = read_only_keys(ops)
            result: list[Any]
            if keys is not None and coin.random() < 0.5:
                result = await db.query("lists:read", {"keys": keys})
            else:
                result = await db.mutation("lists:txn", {"ops": ops})
            return result

        outcome = await run_workload(
            execute, n_txns, CONCURRENCY, classify, Generator(seed=SEED), timeout_s=60.0
        )
        documents = await db.query("lists:documents_per_key", {})
    return outcome, documents


async def test_concurrent_transactions_are_serializable(
    db_url: str, make_app: Callable[[dict[str, str]], Path]
) -> None:
    outcome, documents = await run(db_url, make_app(APP_FILES), txn_count(4_000))
    print("\nembedded:", outcome.describe())
    assert not outcome.unexpected_errors({"WriteConflict"}), outcome.describe()
    assert outcome.statuses["info"] == 0, outcome.describe()
    assert outcome.statuses["ok"] >= 0.9 * len(outcome.history), outcome.describe()
    started = time.monotonic()
    report = check(outcome.history, realtime=True)
    print(f"checker ({time.monotonic() - started:.1f} s):", report.summary())
    assert report.valid, report.format(per_kind=5)
    # The workload did exercise the graph: many dependencies of every kind.
    assert min(report.edge_counts.get(k, 0) for k in ("ww", "wr", "rw", "rt")) > 100, report
    assert set(documents.values()) == {1}, documents


@pytest.mark.parametrize("backend", ["postgres", "mysql"])
async def test_serializable_on_server_backends(
    backend: str, backend_urls: Any, make_app: Callable[[dict[str, str]], Path]
) -> None:
    """The same check with PostgreSQL and MySQL persistence (skipped when their URL is
    unset; CI sets both): the committer is the same, but group commit, the flusher and the
    backend's transaction are theirs."""
    url = backend_urls(backend)
    outcome, documents = await run(url, make_app(APP_FILES), txn_count(1_500))
    print(f"\nembedded on {backend}:", outcome.describe())
    assert not outcome.unexpected_errors({"WriteConflict"}), outcome.describe()
    assert outcome.statuses["info"] == 0, outcome.describe()
    report = check(outcome.history, realtime=True)
    print("checker:", report.summary())
    assert report.valid, report.format(per_kind=5)
    assert min(report.edge_counts.get(k, 0) for k in ("ww", "wr", "rw", "rt")) > 100, report
    assert set(documents.values()) == {1}, documents


async def test_unsafe_skip_validation_is_caught(
    db_url: str, make_app: Callable[[dict[str, str]], Path]
) -> None:
    """Without the committer's conflict checks, the checker finds anomalies."""
    n = min(txn_count(UNSAFE_TXNS), UNSAFE_TXNS)
    outcome, documents = await run(db_url, make_app(APP_FILES), n, unsafe_skip_validation=1)
    duplicated = sum(1 for count in documents.values() if count > 1)
    print("\nunsafe:", outcome.describe(), f"({duplicated} keys with 2+ documents)")
    report = check(outcome.history, realtime=True)
    print("checker:", report.format(per_kind=1))
    kinds = report.kinds()
    assert not report.valid
    # Concurrent read-modify-writes of one list overwrite each other: lost appends, and
    # anti-dependency cycles (G-single, the lost update; G2).
    assert kinds["lost-append"] > 0, report.summary()
    assert kinds["G2"] > 0, report.summary()
