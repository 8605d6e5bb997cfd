"""Elle list-append histories through ``python -m reactive.server``: WebSocket and HTTP.

The workload of ``test_isolation_embedded.py``, sent by several ``reactive.client.Client``
connections (the Convex sync protocol) or by ``POST /api/mutation`` (half the read-only
transactions as queries: ``client.query``, ``POST /api/query``); the history must have
no anomaly, real-time order included (a client gets a mutation's result only after its
commit, so a transaction invoked afterwards, on any connection, must see it).

Source: docs/guarantees.md ("Isolation"); spec §6.6 (a mutation's result follows its commit) and §13
(the HTTP API); Kingsbury & Alvaro, VLDB 2020.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from elle import Txn, check
from listappend import (
    APP_FILES,
    Generator,
    Op,
    Outcome,
    Server,
    env_int,
    read_only_keys,
    run_workload,
    txn_count,
)

from reactive.client import Client
from reactive.errors import ConvexError, FunctionError

CONCURRENCY = env_int("REACTIVE_ELLE_CONCURRENCY", 32)
# Over HTTP every request is its own transaction at once (no per-connection queue as on a
# WebSocket), so fewer workers keep the conflict retries, and the run, bounded.
HTTP_CONCURRENCY = env_int("REACTIVE_ELLE_CONCURRENCY", 16)
SEED = env_int("REACTIVE_ELLE_SEED", 0)
CLIENTS = 8


def assert_valid(name: str, outcome: Outcome) -> None:
    print(f"\n{name}:", outcome.describe())
    started = time.monotonic()
    report = check(outcome.history, realtime=True)
    print(f"checker ({time.monotonic() - started:.1f} s):", report.summary())
    assert outcome.statuses["ok"] >= 0.9 * len(outcome.history), outcome.describe()
    assert report.valid, report.format(per_kind=5)
    assert min(report.edge_counts.get(k, 0) for k in ("ww", "wr", "rw", "rt")) > 20, report


async def test_websocket_clients(
    serve: Callable[[Path], Server], make_app: Callable[[dict[str, str]], Path]
) -> None:
    server = serve(make_app(APP_FILES))
    async with contextlib.AsyncExitStack() as stack:
        clients = [await stack.enter_async_context(Client(server.url)) for _ in range(CLIENTS)]
        for client in clients:
            await client.wait_connected()
        turn = itertools.cycle(clients)
        coin = random.Random(SEED)

        async def execute(ops: list[Op]) -> list[Any]:
            keys = read_only_keys(ops)
            result: list[Any]
            if keys is not None and coin.random() < 0.5:
                result = await next(turn).query("lists:read", {"keys": keys})
            else:
                result = await next(turn).mutation("lists:txn", {"ops": ops})
            return result

        def classify(exc: Exception) -> str:
            # The server answered that the mutation failed (conflicts to the end): no commit.
            return "fail" if isinstance(exc, (ConvexError, FunctionError)) else "info"

        outcome = await run_workload(
            execute, txn_count(2_000), CONCURRENCY, classify, Generator(seed=SEED)
        )
    assert not outcome.unexpected_errors({"FunctionError"}), (outcome.describe(), server.log())
    assert_valid("websocket", outcome)


class HttpFailed(Exception):
    """The server ran the mutation and answered that it failed (nothing committed)."""


async def test_http_api(
    serve: Callable[[Path], Server], make_app: Callable[[dict[str, str]], Path]
) -> None:
    server = serve(make_app(APP_FILES))
    limits = httpx.Limits(max_connections=HTTP_CONCURRENCY)
    async with httpx.AsyncClient(base_url=server.url, limits=limits, timeout=30.0) as http:

        async def execute(ops: list[Op]) -> list[Any]:
            response = await http.post(
                "/api/mutation", json={"path": "lists:txn", "args": {"ops": ops}}
            )
            response.raise_for_status()  # an HTTP error status: outcome unknown
            body = response.json()
            if body["status"] != "success":
                raise HttpFailed(body.get("errorMessage"))
            result: list[Any] = body["value"]  # format "json": int64 as decimal strings
            return result

        def classify(exc: Exception) -> str:
            return "fail" if isinstance(exc, HttpFailed) else "info"

        outcome = await run_workload(
            execute, txn_count(2_000), HTTP_CONCURRENCY, classify, Generator(seed=SEED)
        )
    assert not outcome.unexpected_errors({"HttpFailed"}), (outcome.describe(), server.log())
    assert_valid("http", outcome)


async def test_websocket_clients_across_server_crashes(
    serve: Callable[[Path], Server], make_app: Callable[[dict[str, str]], Path]
) -> None:
    """SIGKILL the server twice mid-run; it restarts on the same port and database.

    The clients reconnect and resend every mutation not yet acknowledged; the server answers
    a replay from its record of the session's requests. So every transaction still ends
    ``ok``, none is applied twice (a duplicate-elements anomaly) and no acknowledged append
    is lost (durability: lost-append, or a stale read as a real-time cycle).
    """
    server = serve(make_app(APP_FILES))
    crashes = 2
    async with contextlib.AsyncExitStack() as stack:
        clients = [
            await stack.enter_async_context(Client(server.url, max_backoff_s=0.5))
            for _ in range(CLIENTS)
        ]
        for client in clients:
            await client.wait_connected()
        turn = itertools.cycle(clients)
        done = asyncio.Event()

        async def execute(ops: list[Op]) -> list[Any]:
            result: list[Any] = await next(turn).mutation("lists:txn", {"ops": ops})
            return result

        def classify(exc: Exception) -> str:
            return "fail" if isinstance(exc, (ConvexError, FunctionError)) else "info"

        n_txns = txn_count(1_000)
        history: list[Txn] = []

        async def crash() -> int:
            # Crash once each 1/(crashes + 1) of the transactions have completed.
            for count in range(crashes):
                while len(history) < n_txns * (count + 1) // (crashes + 1):
                    if done.is_set():
                        return count
                    await asyncio.sleep(0.05)
                await asyncio.to_thread(server.restart, True)  # blocking: in a thread
            return crashes

        crasher = asyncio.create_task(crash())
        try:
            outcome = await run_workload(
                execute, n_txns, CONCURRENCY, classify, Generator(seed=SEED), history=history
            )
        finally:
            done.set()
            crashed = await crasher
        reconnects = sum(client.reconnects for client in clients)
    print(f"\n{crashed} crashes, {reconnects} reconnections")
    assert crashed == crashes
    assert reconnects >= crashed * len(clients), reconnects
    assert not outcome.unexpected_errors(set()), (outcome.describe(), server.log())
    assert_valid("websocket with crashes", outcome)
