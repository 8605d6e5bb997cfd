"""Benchmark 6: reactive latency, from one client's mutation to another client's subscription.

Reactive: ``python -m reactive.server`` in a subprocess on 127.0.0.1 (fresh SQLite database
under ``bench-results/tmp/``, the app of ``benches/benchapp``). Client A runs the mutation
``docs:insert`` (a durable insert); client B subscribes to ``live:latest`` (the newest
document with that ``x``), whose result therefore changes with every insert. Both clients
live in the benchmark process. Each mutation waits until B has its result before the next
one starts, so every sample is one undisturbed update. Two client kinds:

* ``Client``: ``reactive.client.Client`` for A and B. A's ``await client.mutation()``
  returns once a transition at or after the commit reached A (spec §6.6); B's
  ``async for value in client.subscribe(...)`` yields the decoded document.
* ``raw``: the sync protocol spoken with bare ``websockets`` connections. A's mutation
  "returns" when its ``MutationResponse`` frame arrives; B "has it" when a ``Transition``
  frame whose ``QueryUpdated`` value is the new document has been read and ``json.loads``-ed.

Times (``time.perf_counter`` in the one process holding both clients):

* ``start``: just before A's mutation is called (before its arguments are encoded);
* ``t0``: A's mutation returned (Client) or its ``MutationResponse`` was read (raw);
* ``t1``: B holds the new result (Client: the subscription yielded it; raw: the frame has
  been parsed).

Figures: ``start → B`` = t1 - start (end to end: the figure compared with PostgreSQL) and
``A returned → B`` = t1 - t0, which is zero or negative when B got the update before A's
call returned (with ``Client``, A's own transition and B's are sent at about the same time).

Anchors, in the same run, rounds interleaved with reactive's:

* PostgreSQL 15 (Debian's, started by the benchmark from a private data directory, default
  durability: fsync and synchronous_commit on, on the same disk): connection A runs
  ``WITH ins AS (INSERT … RETURNING *) SELECT pg_notify('bench', row_to_json(ins)::text)
  FROM ins`` (autocommit: one durable transaction); connection B has ``LISTEN bench`` and
  "has it" when asyncpg hands it the notification and its JSON payload is parsed. The table
  has a primary key and two more indexes, as reactive's ``docs`` has 3 index entries. start
  = before ``execute``; t0 = ``execute`` returned; t1 = B's callback.
* A bare ``websockets`` echo round trip (server in a subprocess, client the ``websockets``
  library as for ``raw``) of a message as long as the transition frame B receives.

p50 and p99 are over all samples (2,000 per side in a full run: 4 rounds of 500; quick: 2 of
250); the spread column is the range of the per-round figures. Ratio = PostgreSQL ÷ reactive
(≥ 1: reactive's p50 is no worse than INSERT+NOTIFY).
"""

from __future__ import annotations

import asyncio
import base64
import json
import struct
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import websockets

from common import Row, log, median, percentile, standalone
from fixtures import BODY
from servers import (
    anchor_server,
    cpu_seconds,
    postgres,
    postgres_available,
    reactive_server,
    tree_cpu_seconds,
)

X_CLIENT = 910_001
"""``x`` of the documents inserted through ``reactive.client.Client``."""
X_RAW = 910_002
"""``x`` of the documents inserted through raw frames."""
WARMUP = 50
TIMEOUT_S = 10.0

Samples = dict[str, list[float]]
"""``{"start_to_b": [...], "a_to_b": [...], "start_to_a": [...]}`` in seconds."""


def _int64(n: int) -> dict[str, str]:
    return {"$integer": base64.b64encode(struct.pack("<q", n)).decode()}


def _new_samples() -> Samples:
    return {"start_to_b": [], "a_to_b": [], "start_to_a": []}


class ClientPair:
    """A and B as ``reactive.client.Client``s."""

    def __init__(self, url: str) -> None:
        from reactive.client import Client

        self.a = Client(url)
        self.b = Client(url)
        self.pending: dict[float, asyncio.Future[float]] = {}
        self.seq = 0
        self._consumer: asyncio.Task[None] | None = None

    async def open(self) -> None:
        await self.a.wait_connected()
        await self.b.wait_connected()
        self.sub = self.b.subscribe("live:latest", {"x": X_CLIENT})
        first: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self.pending[-1.0] = first
        self._consumer = asyncio.get_running_loop().create_task(self._consume())
        await asyncio.wait_for(first, TIMEOUT_S)

    async def _consume(self) -> None:
        async for doc in self.sub:
            t = time.perf_counter()
            key = -1.0 if doc is None else float(doc["score"])
            if -1.0 in self.pending and key not in self.pending:
                key = -1.0  # the initial result (whatever it holds)
            fut = self.pending.pop(key, None)
            if fut is not None and not fut.done():
                fut.set_result(t)

    async def one(self, out: Samples | None) -> None:
        self.seq += 1
        score = float(self.seq)
        fut: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self.pending[score] = fut
        args = {"x": X_CLIENT, "author": "latency", "body": BODY, "score": score}
        start = time.perf_counter()
        await self.a.mutation("docs:insert", args)
        t0 = time.perf_counter()
        t1 = await asyncio.wait_for(fut, TIMEOUT_S)
        if out is not None:
            out["start_to_b"].append(t1 - start)
            out["a_to_b"].append(t1 - t0)
            out["start_to_a"].append(t0 - start)

    async def close(self) -> None:
        self.sub.close()
        if self._consumer is not None:
            self._consumer.cancel()
        await self.a.close()
        await self.b.close()


class RawPair:
    """A and B speaking the sync protocol over bare ``websockets`` connections."""

    def __init__(self, url: str) -> None:
        self.url = url.replace("http://", "ws://") + "/api/sync"
        self.responses: dict[int, asyncio.Future[float]] = {}
        self.pending: dict[int, asyncio.Future[float]] = {}
        self.seq = 0
        self.frame_bytes = 0
        self._tasks: list[asyncio.Task[None]] = []

    async def _hello(self, ws: Any, modifications: list[dict[str, Any]]) -> None:
        await ws.send(
            json.dumps(
                {
                    "type": "Connect",
                    "sessionId": f"00000000-0000-4000-8000-{id(ws) % 10**12:012d}",
                    "connectionCount": 0,
                    "lastCloseReason": "InitialConnect",
                    "clientTs": 0,
                }
            )
        )
        await ws.send(
            json.dumps(
                {
                    "type": "ModifyQuerySet",
                    "baseVersion": 0,
                    "newVersion": 1,
                    "modifications": modifications,
                }
            )
        )

    async def open(self) -> None:
        self.ws_a = await websockets.connect(self.url, max_size=None)
        self.ws_b = await websockets.connect(self.url, max_size=None)
        loop = asyncio.get_running_loop()
        first: asyncio.Future[float] = loop.create_future()
        self.pending[-1] = first
        self._tasks = [
            loop.create_task(self._read_a()),
            loop.create_task(self._read_b()),
        ]
        await self._hello(self.ws_a, [])
        add = {
            "type": "Add",
            "queryId": 0,
            "udfPath": "live:latest",
            "args": [{"x": _int64(X_RAW)}],
        }
        await self._hello(self.ws_b, [add])
        await asyncio.wait_for(first, TIMEOUT_S)

    async def _read_a(self) -> None:
        async for frame in self.ws_a:
            t = time.perf_counter()
            msg = json.loads(frame)
            if msg.get("type") == "MutationResponse":
                fut = self.responses.pop(msg["requestId"], None)
                if fut is not None and not fut.done():
                    fut.set_result(t)

    async def _read_b(self) -> None:
        async for frame in self.ws_b:
            msg = json.loads(frame)
            if msg.get("type") != "Transition":
                continue
            for mod in msg["modifications"]:
                if mod.get("type") != "QueryUpdated":
                    continue
                t = time.perf_counter()
                value = mod.get("value")
                key = -1 if value is None else int(value["score"])
                if -1 in self.pending and key not in self.pending:
                    key = -1
                fut = self.pending.pop(key, None)
                if fut is not None and not fut.done():
                    self.frame_bytes = len(frame)
                    fut.set_result(t)

    async def one(self, out: Samples | None) -> None:
        self.seq += 1
        loop = asyncio.get_running_loop()
        resp: asyncio.Future[float] = loop.create_future()
        seen: asyncio.Future[float] = loop.create_future()
        self.responses[self.seq] = resp
        self.pending[self.seq] = seen
        start = time.perf_counter()
        await self.ws_a.send(
            json.dumps(
                {
                    "type": "Mutation",
                    "requestId": self.seq,
                    "udfPath": "docs:insert",
                    "args": [
                        {
                            "x": _int64(X_RAW),
                            "author": "latency",
                            "body": BODY,
                            "score": float(self.seq),
                        }
                    ],
                }
            )
        )
        t0 = await asyncio.wait_for(resp, TIMEOUT_S)
        t1 = await asyncio.wait_for(seen, TIMEOUT_S)
        if out is not None:
            out["start_to_b"].append(t1 - start)
            out["a_to_b"].append(t1 - t0)
            out["start_to_a"].append(t0 - start)

    async def close(self) -> None:
        for t in self._tasks:
            t.cancel()
        await self.ws_a.close()
        await self.ws_b.close()


PG_SCHEMA = """
CREATE TABLE docs (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    creation timestamptz NOT NULL DEFAULT clock_timestamp(),
    x bigint NOT NULL, author text NOT NULL, body text NOT NULL, score double precision NOT NULL
);
CREATE INDEX docs_by_x ON docs (x, creation);
CREATE INDEX docs_by_creation ON docs (creation);
"""
PG_INSERT_NOTIFY = (
    "WITH ins AS (INSERT INTO docs (x, author, body, score) VALUES ($1, $2, $3, $4) "
    "RETURNING *) SELECT pg_notify('bench', row_to_json(ins)::text) FROM ins"
)


class PgPair:
    """INSERT+NOTIFY on connection A, LISTEN on connection B (asyncpg)."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.pending: dict[float, asyncio.Future[float]] = {}
        self.seq = 0

    async def open(self) -> None:
        import asyncpg

        self.a = await asyncpg.connect(self.dsn)
        self.b = await asyncpg.connect(self.dsn)
        await self.a.execute(PG_SCHEMA)
        await self.b.add_listener("bench", self._notified)
        self.settings = {
            name: await self.a.fetchval(f"SHOW {name}")
            for name in ("server_version", "fsync", "synchronous_commit", "wal_sync_method")
        }

    def _notified(self, conn: Any, pid: int, channel: str, payload: str) -> None:
        t = time.perf_counter()
        row = json.loads(payload)
        fut = self.pending.pop(float(row["score"]), None)
        if fut is not None and not fut.done():
            fut.set_result(t)

    async def one(self, out: Samples | None) -> None:
        self.seq += 1
        score = float(self.seq)
        fut: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self.pending[score] = fut
        start = time.perf_counter()
        await self.a.execute(PG_INSERT_NOTIFY, X_CLIENT, "latency", BODY, score)
        t0 = time.perf_counter()
        t1 = await asyncio.wait_for(fut, TIMEOUT_S)
        if out is not None:
            out["start_to_b"].append(t1 - start)
            out["a_to_b"].append(t1 - t0)
            out["start_to_a"].append(t0 - start)

    async def close(self) -> None:
        await self.a.close()
        await self.b.close()


class Echo:
    """A bare ``websockets`` echo round trip of ``size`` bytes."""

    def __init__(self, url: str, size: int) -> None:
        self.url = url.replace("http://", "ws://") + "/echo"
        self.payload = "E" + "x" * max(0, size - 1)

    async def open(self) -> None:
        self.ws = await websockets.connect(self.url, max_size=None)

    async def one(self, out: Samples | None) -> None:
        start = time.perf_counter()
        await self.ws.send(self.payload)
        await self.ws.recv()
        t1 = time.perf_counter()
        if out is not None:
            out["start_to_b"].append(t1 - start)

    async def close(self) -> None:
        await self.ws.close()


def _stats(xs: list[float]) -> dict[str, float]:
    ms = [x * 1000 for x in xs]
    return {
        "n": len(ms),
        "p50_ms": percentile(ms, 50) or 0.0,
        "p99_ms": percentile(ms, 99) or 0.0,
        "min_ms": min(ms) if ms else 0.0,
        "max_ms": max(ms) if ms else 0.0,
    }


async def _measure(rounds: int, per_round: int) -> dict[str, Any]:
    sides: dict[str, Any] = {}
    cpu_of: dict[str, Callable[[], float]] = {}
    cpu_us: dict[str, list[float]] = {}
    per_round_samples: dict[str, list[Samples]] = {}
    notes: list[str] = []
    pg_reason = postgres_available()
    with reactive_server("latency") as server, anchor_server("ws") as ws_anchor:
        client = ClientPair(server.http)
        raw = RawPair(server.http)
        await client.open()
        await raw.open()
        for _ in range(WARMUP):
            await client.one(None)
            await raw.one(None)
        echo = Echo(ws_anchor.http, raw.frame_bytes or 500)
        await echo.open()
        for _ in range(WARMUP):
            await echo.one(None)
        sides = {"client": client, "raw": raw, "echo": echo}
        cpu_of = {
            "client": lambda: cpu_seconds(server.pid),
            "raw": lambda: cpu_seconds(server.pid),
            "echo": lambda: cpu_seconds(ws_anchor.pid),
        }

        async def run_rounds(pg: PgPair | None, pg_pid: int = 0) -> None:
            if pg is not None:
                sides["postgres"] = pg
                cpu_of["postgres"] = lambda: tree_cpu_seconds(pg_pid)
                for _ in range(WARMUP):
                    await pg.one(None)
            for name in sides:
                per_round_samples[name] = []
                cpu_us[name] = []
            for r in range(rounds):
                for name, side in sides.items():
                    s = _new_samples()
                    one: Callable[[Samples | None], Awaitable[None]] = side.one
                    cpu0 = cpu_of[name]()
                    for _ in range(per_round):
                        await one(s)
                    cpu_us[name].append(1e6 * (cpu_of[name]() - cpu0) / per_round)
                    per_round_samples[name].append(s)
                log(
                    f"  latency round {r + 1}/{rounds}: "
                    + ", ".join(
                        f"{n} p50 {_stats(per_round_samples[n][-1]['start_to_b'])['p50_ms']:.2f} ms"
                        for n in sides
                    )
                )

        try:
            if pg_reason is None:
                with postgres() as pgc:
                    pg = PgPair(pgc.dsn)
                    await pg.open()
                    notes.append(
                        "PostgreSQL " + ", ".join(f"{k}={v}" for k, v in pg.settings.items())
                    )
                    try:
                        await run_rounds(pg, pgc.pid)
                    finally:
                        await pg.close()
            else:
                notes.append(f"PostgreSQL skipped: {pg_reason}")
                await run_rounds(None)
        finally:
            await client.close()
            await raw.close()
            await echo.close()
    pooled: dict[str, dict[str, dict[str, float]]] = {}
    for name, rounds_ in per_round_samples.items():
        pooled[name] = {}
        for key in ("start_to_b", "a_to_b", "start_to_a"):
            xs = [x for s in rounds_ for x in s[key]]
            if xs:
                pooled[name][key] = _stats(xs)
                pooled[name][key]["rounds_p50_ms"] = [  # type: ignore[assignment]
                    _stats(s[key])["p50_ms"] for s in rounds_
                ]
                pooled[name][key]["rounds_p99_ms"] = [  # type: ignore[assignment]
                    _stats(s[key])["p99_ms"] for s in rounds_
                ]
    return {
        "pooled": pooled,
        "cpu_us": cpu_us,
        "frame_bytes": raw.frame_bytes,
        "notes": notes,
    }


def run(quick: bool = False) -> list[Row]:
    rounds, per_round = (2, 250) if quick else (4, 500)
    got = asyncio.run(_measure(rounds, per_round))
    p = got["pooled"]
    pg = p.get("postgres", {})
    n = rounds * per_round
    rows: list[Row] = []

    def row(
        name: str,
        side: str,
        key: str,
        q: str,
        anchor_side: str | None,
        anchor_key: str,
        anchor_name: str,
        target: str,
        notes: str = "",
        ratio: bool = True,
    ) -> Row:
        r = p[side][key]
        a = p.get(anchor_side or "", {}).get(anchor_key) if anchor_side else None
        out = Row(
            "latency",
            name,
            "ms",
            r[f"{q}_ms"],
            a[f"{q}_ms"] if a else None,
            anchor_name=anchor_name if a else "",
            higher_is_better=False,
            target=target,
            reactive_samples=list(r[f"rounds_{q}_ms"]),
            anchor_samples=list(a[f"rounds_{q}_ms"]) if a else [],
            notes=notes,
            extra={"reactive": r, "anchor": a},
        )
        if not ratio:
            out.ratio = None
        return out

    pg_name = "PG INSERT+NOTIFY → LISTEN"
    c, rw = p["client"], p["raw"]
    rows.append(
        row(
            f"update latency p50, Client A mutation start → B has it ({n:,})",
            "client",
            "start_to_b",
            "p50",
            "postgres",
            "start_to_b",
            pg_name,
            "≥ 1 (p50 no worse than NOTIFY)",
            notes=(
                f"A's mutation call alone (start → returned) p50 "
                f"{c['start_to_a']['p50_ms']:.2f} ms, p99 {c['start_to_a']['p99_ms']:.2f} ms"
                + (f"; PG execute p50 {pg['start_to_a']['p50_ms']:.2f} ms" if pg else "")
                + "; "
                + "; ".join(got["notes"])
            ),
        )
    )
    rows.append(
        row(
            f"update latency p99, Client A mutation start → B has it ({n:,})",
            "client",
            "start_to_b",
            "p99",
            "postgres",
            "start_to_b",
            pg_name,
            "context",
        )
    )
    rows.append(
        row(
            "update latency p50, Client A returned → B has it",
            "client",
            "a_to_b",
            "p50",
            "postgres",
            "a_to_b",
            "PG execute returned → LISTEN",
            "context (≤ 0: B before A)",
            notes=(
                f"p99 {c['a_to_b']['p99_ms']:.2f} ms, min {c['a_to_b']['min_ms']:.2f} ms"
                + (
                    f"; PG p99 {pg['a_to_b']['p99_ms']:.2f} ms, min {pg['a_to_b']['min_ms']:.2f} ms"
                    if pg
                    else ""
                )
            ),
            ratio=False,
        )
    )
    rows.append(
        row(
            "update latency p50, raw frames A mutation start → B has it",
            "raw",
            "start_to_b",
            "p50",
            "postgres",
            "start_to_b",
            pg_name,
            "context",
            notes=(
                f"p99 {rw['start_to_b']['p99_ms']:.2f} ms; MutationResponse read → B has it "
                f"p50 {rw['a_to_b']['p50_ms']:.2f} ms, p99 {rw['a_to_b']['p99_ms']:.2f} ms; "
                f"start → MutationResponse p50 {rw['start_to_a']['p50_ms']:.2f} ms; "
                f"B's transition frame {got['frame_bytes']} bytes"
            ),
        )
    )
    rows.append(
        row(
            "update latency p50, raw frames vs websockets echo RTT",
            "raw",
            "start_to_b",
            "p50",
            "echo",
            "start_to_b",
            f"websockets echo round trip, {got['frame_bytes']} B",
            "context",
            notes=(
                f"echo p99 {p['echo']['start_to_b']['p99_ms']:.3f} ms; ratio = echo ÷ reactive "
                "(the share of an update that is the bare socket round trip)"
            ),
        )
    )
    cpu = got["cpu_us"]
    if cpu.get("raw"):
        rows.append(
            Row.from_samples(
                "latency",
                "server CPU per update: mutation + 2 transitions vs INSERT+NOTIFY (µs)",
                "µs",
                cpu["raw"],
                cpu.get("postgres", []),
                anchor_name="PostgreSQL, all its processes" if cpu.get("postgres") else "",
                higher_is_better=False,
                target="context",
                notes=(
                    "CPU of every thread of the server process per mutation (raw side: "
                    "MutationResponse and a transition to A, a transition to B), medians of "
                    f"rounds; Client side {median(cpu['client']) or 0:.0f} µs; websockets "
                    f"echo server {median(cpu['echo']) or 0:.0f} µs per echo"
                ),
            )
        )
    return rows


if __name__ == "__main__":
    standalone(run)
