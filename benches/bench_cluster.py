"""Benchmark 13: cluster mode on PostgreSQL, 1, 2 and 3 server processes on one database.

    scripts/with-dbservers.sh .venv/bin/python benches/bench_cluster.py [--quick]
    .venv/bin/python benches/bench_cluster.py --db postgresql://user@host:port/admin_db
    .venv/bin/python benches/bench_cluster.py          # starts its own PostgreSQL 15

The database server: ``--db`` (an admin URL on which the benchmark may ``CREATE DATABASE``),
else ``$REACTIVE_TEST_POSTGRES_URL`` (``scripts/with-dbservers.sh`` exports it), else Debian's
PostgreSQL 15 started from a private data directory (``servers.postgres()``, as
``bench_latency`` and ``bench_backends`` do). Every run creates a fresh database
``reactive_bench_<random>`` on it, as ``tests/persistence/conftest.py`` does per test, and
drops it at the end (``DROP DATABASE … WITH (FORCE)``).

The cluster: ``python -m reactive.server --app benches/benchapp --db <that database>
--cluster-key K --storage-dir <shared scratch dir>`` processes on 127.0.0.1 (as
``tests/persistence/test_cluster.py`` spawns them; ready when ``GET /health/ready`` answers
200). The cluster grows during the run: process 1 alone (it leads), then a second and a third
(followers: they tail the log over LISTEN/NOTIFY, serve queries and subscriptions from their
own store, and run mutations, sending each transaction to the leader over HTTP to validate
and commit). Each stage measures:

1. Query throughput: 64 closed-loop HTTP clients (``servers.LightHTTP`` connections through
   ``servers.closed_loop_load``, the light client of ``bench_pocketbase``) POSTing
   ``/api/query`` ``live:latest`` (one ``by_x`` index read returning one document, the query
   of ``bench_http``) over 100 preloaded groups; the n-th request goes to process n mod N
   (round robin per request, so every process gets the same number). Queries/s per round,
   median of the rounds.
2. Mutation throughput: the same 64 clients POSTing ``/api/mutation`` ``docs:insert`` (the
   body of ``bench_http``) to the leader only, and (2-3 processes) to one follower only
   (run there, its transaction committed by the leader; the follower answers once it
   applied the commit), rounds alternating.
3. Subscriptions: ``S`` sync-protocol WebSockets (``servers.LightClient`` sockets speaking the
   protocol raw, as ``bench_fanout``), held by a child process (so that reading them does not
   share an event loop with the writer), socket ``i`` on process ``i mod N`` subscribed to
   ``live:latest`` of group ``(i div N) mod G``: every group has subscribers on every process.
   A writer in this process commits ``docs:insert`` over HTTP through the leader, round robin
   over the groups, each body carrying a marker ``#c<seq>#``; every commit changes the result
   of the ``S/G`` subscriptions of its group. Rounds at a fixed rate (open loop, 100
   commits/s), then rounds with 16 closed-loop writers (as fast as the leader commits). A
   socket's update is a ``Transition`` frame holding a marker; its latency runs from just
   before the writer sent that mutation to when the child read the frame
   (``time.perf_counter``, ``CLOCK_MONOTONIC``: one clock for both processes): the durable
   commit, the follower's tail, the query re-run and the send. Split by where the subscriber
   is (on the leader, on a follower). Delivered updates/s counts frames read while the writer
   runs; a server that falls behind skips intermediate results (a subscription sends the
   newest), so delivered < offered shows saturation.
4. Failover (2 and 3 processes): SIGKILL the leader; from just before the signal, the time
   until a survivor's ``/health/ready`` says ``role: leader`` (each survivor polled every
   20 ms), until a ``docs:insert`` POSTed to a survivor after the kill succeeds, and until
   every survivor has taken one (each survivor retries every 20 ms; a follower's forward
   itself retries the leader with backoff). The killed process is then started again (as a
   follower) for the next repetition.

Follower lag, sampled every 100 ms during 2 and 3, two ways: ``lag_ms`` of each follower's
``/health/ready`` (what operators see), and the staleness of its view: ``GET /health`` of
every process at once gives its visible commit timestamp (wall-clock ns); the follower's age
minus the leader's in the same tick is how far behind the leader's view it is.

All processes run on the same machine (2 vCPUs here), with PostgreSQL and the load generator:
more processes add no cores, so the ratios show what the extra processes cost and what
spreading the work among them gains on this machine, not what separate machines would give.
For each phase the table gives the CPU of the servers (``/proc/<pid>/task/*/schedstat``),
of PostgreSQL (its postmaster and backends, found by port) and the whole machine's busy time
(``/proc/stat``), in % of one core: a machine busy well past what the benchmark's processes
use is running other jobs, and its throughputs and latencies are noise. The server CPU per
query, per mutation and per update delivered (every server process's CPU over the phase ÷
the operations) moves much less with such load than throughput does. Prints the machine, a
table with ratios relative to 1 process, notes, and writes every sample to
``bench-results/cluster-latest.json`` (a full run also to
``benches/results/<date>-cluster.json``, as ``run.py`` keeps full runs). ``run(quick)``
returns the comparison as ``common.Row``\\ s (``N`` processes vs 1), as the other modules do
(not registered in ``run.py``). Nothing here asserts a timing.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_http import _body as _insert_body
from bench_http import _int64, _query_body
from common import (
    APP,
    KEPT,
    REPO,
    RESULTS,
    Row,
    describe_machine,
    fmt,
    log,
    machine,
    median,
    percentile,
    scratch_dir,
    write_json,
)
from fixtures import BODY
from servers import (
    PYTHON,
    LightClient,
    LightPool,
    closed_loop_load,
    connect_many,
    cpu_seconds,
    free_port,
    postgres,
    postgres_available,
    raise_nofile,
    tree_cpu_seconds,
    wait_http,
)

KEY = "bench-cluster-key-0123456789abcdef"
CONCURRENCY = 64
QUERY_GROUPS = 100
"""``x`` of the preloaded documents the queries read (``bench_http._query_body``)."""
SUB_X0 = 930_000
"""``x`` of the subscription groups: ``SUB_X0 + g``."""
MARKER = re.compile(rb"#c(\d+)#")
MAX_INFLIGHT = 256
LAG_POLL_S = 0.1
FAILOVER_POLL_S = 0.02
FAILOVER_TIMEOUT_S = 30.0


@dataclass
class Params:
    """The counts of a run (``QUICK`` or ``FULL``)."""

    query_rounds: int
    query_s: float
    mutation_rounds: int
    mutation_s: float
    subscribers: int
    groups: int
    rate: float
    """Commits/s of the fixed-rate subscription rounds."""
    sub_rounds: int
    sub_s: float
    max_rounds: int
    """Subscription rounds with ``max_writers`` closed-loop writers (as fast as it can)."""
    max_s: float
    max_writers: int
    failovers: int
    """Leader kills per stage (2 and 3 processes)."""


QUICK = Params(
    query_rounds=3,
    query_s=1.0,
    mutation_rounds=2,
    mutation_s=1.0,
    subscribers=300,
    groups=10,
    rate=100.0,
    sub_rounds=2,
    sub_s=2.0,
    max_rounds=2,
    max_s=1.5,
    max_writers=16,
    failovers=2,
)
FULL = Params(
    query_rounds=5,
    query_s=3.0,
    mutation_rounds=3,
    mutation_s=3.0,
    subscribers=1000,
    groups=10,
    rate=100.0,
    sub_rounds=3,
    sub_s=5.0,
    max_rounds=3,
    max_s=4.0,
    max_writers=16,
    failovers=4,
)


# -- the database ------------------------------------------------------------------------------


def _with_database(url: str, database: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + database, parts.query, parts.fragment))


async def _pg_admin(url: str) -> Any:
    import asyncpg  # type: ignore[import-untyped]

    parts = urlsplit(url)
    return await asyncpg.connect(
        host=parts.hostname,
        port=parts.port or 5432,
        user=parts.username,
        password=parts.password,
        database=parts.path.lstrip("/") or "postgres",
        timeout=30,
    )


async def create_database(admin_url: str) -> str:
    """A new database ``reactive_bench_<random>`` on the server of ``admin_url``; its URL."""
    name = f"reactive_bench_{secrets.token_hex(6)}"
    conn = await _pg_admin(admin_url)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return _with_database(admin_url, name)


async def drop_database(admin_url: str, url: str) -> None:
    """Drop the database ``url`` names, closing what is still connected to it."""
    name = urlsplit(url).path.lstrip("/")
    assert name.startswith("reactive_bench_"), name
    conn = await _pg_admin(admin_url)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


# -- the cluster's processes -------------------------------------------------------------------


@dataclass
class Node:
    """One ``python -m reactive.server --cluster-key`` process."""

    name: str
    proc: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


class Cluster:
    """The processes of the cluster on ``db_url``; every one is stopped by :meth:`stop_all`."""

    def __init__(self, db_url: str, directory: Path) -> None:
        self.db_url = db_url
        self.directory = directory
        self.nodes: list[Node] = []
        self.everything: list[Node] = []
        self.started = 0

    def start(self) -> Node:
        """Spawn one more process and wait for its ``/health/ready`` (blocking)."""
        self.started += 1
        name = f"p{self.started}"
        port = free_port()
        log_path = self.directory / f"{name}.log"
        cmd = [
            PYTHON,
            "-m",
            "reactive.server",
            "--app",
            str(APP),
            "--db",
            self.db_url,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "warning",
            "--cluster-key",
            KEY,
            "--storage-dir",
            str(self.directory / "storage"),
        ]
        with open(log_path, "wb") as out:
            proc = subprocess.Popen(
                cmd,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=REPO,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        node = Node(name, proc, port, log_path)
        self.everything.append(node)
        try:
            wait_http(f"{node.url}/health/ready", proc, 90.0)
        except Exception as exc:
            raise RuntimeError(f"{name} did not get ready: {exc}\n{node.log_tail()}") from exc
        self.nodes.append(node)
        return node

    def kill(self, node: Node) -> None:
        """SIGKILL ``node`` (by its pid) and forget it."""
        node.proc.send_signal(signal.SIGKILL)
        node.proc.wait(10)
        self.nodes.remove(node)

    def stop_all(self) -> None:
        """SIGTERM every process this run started, then SIGKILL what is left (by pid)."""
        for node in self.everything:
            if node.alive():
                node.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 20
        for node in self.everything:
            try:
                node.proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                node.proc.kill()
                node.proc.wait(5)


async def ready(client: Any, node: Node, timeout_s: float = 2.0) -> dict[str, Any]:
    """``/health/ready`` of ``node`` as JSON, or ``{}`` when it does not answer."""
    try:
        r = await client.get(f"{node.url}/health/ready", timeout=timeout_s)
        body: dict[str, Any] = r.json()
        return body
    except Exception:
        return {}


async def roles(client: Any, nodes: list[Node]) -> dict[str, str]:
    got = await asyncio.gather(*(ready(client, n) for n in nodes))
    return {n.name: str(r.get("role")) for n, r in zip(nodes, got, strict=True)}


async def settle(client: Any, cluster: Cluster, timeout_s: float = 30.0) -> tuple[Node, list[Node]]:
    """Wait until exactly one process leads and every other follows with no lag."""
    deadline = time.monotonic() + timeout_s
    while True:
        got = await asyncio.gather(*(ready(client, n) for n in cluster.nodes))
        leaders = [n for n, r in zip(cluster.nodes, got, strict=True) if r.get("role") == "leader"]
        followers = [
            n
            for n, r in zip(cluster.nodes, got, strict=True)
            if r.get("role") == "follower" and float(r.get("lag_ms", 1)) == 0
        ]
        if len(leaders) == 1 and len(followers) == len(cluster.nodes) - 1:
            return leaders[0], followers
        if time.monotonic() > deadline:
            raise RuntimeError(f"the cluster did not settle: {got}")
        await asyncio.sleep(0.1)


def cpu_of(nodes: list[Node]) -> dict[str, float]:
    return {n.name: cpu_seconds(n.pid) for n in nodes}


PG_PID: int | None = None
"""The PostgreSQL server's postmaster, when found (:func:`postmaster_of`)."""


def postmaster_of(port: int) -> int | None:
    """The pid of the PostgreSQL postmaster listening on ``port`` (from its command line:
    ``-p PORT`` or ``port=PORT``), or None."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            args = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if not args or not args[0].endswith(b"postgres"):
            continue
        joined = b" ".join(args)
        if f"-p {port}".encode() in joined or f"port={port}".encode() in joined:
            return int(entry.name)
    return None


def machine_busy_seconds() -> float:
    """CPU time the whole machine spent busy so far (every CPU, ``/proc/stat``), seconds."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def sys_of() -> dict[str, float]:
    """PostgreSQL's CPU (postmaster and backends) and the whole machine's busy time."""
    got = {"machine": machine_busy_seconds()}
    if PG_PID is not None:
        got["postgres"] = tree_cpu_seconds(PG_PID)
    return got


def cpu_pct(before: dict[str, float], after: dict[str, float], seconds: float) -> dict[str, float]:
    """% of one core each process used between two :func:`cpu_of` readings."""
    return {k: round(100 * (after[k] - before[k]) / seconds, 1) for k in before if k in after}


# -- follower lag ------------------------------------------------------------------------------


class LagSampler:
    """Follower lag, sampled every ``LAG_POLL_S`` while a phase runs, two ways.

    * ``reported``: ``lag_ms`` of each follower's ``/health/ready`` (the figure operators
      see: the newest commit timestamp the follower has heard of minus the one it applied).
    * ``staleness``: ``GET /health`` of every process at once gives its visible commit
      timestamp (``ts``: wall-clock ns, the same clock as this process); its age when the
      answer arrives, a follower's minus the leader's in the same tick, is how much older
      the follower's view is than the leader's (the tail delay, in ms of commit time).
      Both requests of a tick leave together, so the few-ms jitter of two loopback
      requests is in it.
    """

    def __init__(self, client: Any, leader: Node, followers: list[Node]) -> None:
        self.client = client
        self.leader = leader
        self.followers = followers
        self.reported: list[float] = []
        self.staleness: list[float] = []
        self.by_node: dict[str, list[float]] = {n.name: [] for n in followers}
        self._task: asyncio.Task[None] | None = None

    async def _age_ms(self, node: Node) -> float | None:
        try:
            r = await self.client.get(f"{node.url}/health", timeout=2.0)
            now = time.time_ns()
            return (now - int(r.json()["ts"])) / 1e6
        except Exception:
            return None

    async def _run(self) -> None:
        nodes = [self.leader, *self.followers]
        while True:
            ages = await asyncio.gather(*(self._age_ms(n) for n in nodes))
            got = await asyncio.gather(*(ready(self.client, n) for n in self.followers))
            for node, age, r in zip(self.followers, ages[1:], got, strict=True):
                if "lag_ms" in r:
                    self.reported.append(float(r["lag_ms"]))
                if age is not None and ages[0] is not None:
                    self.staleness.append(age - ages[0])
                    self.by_node[node.name].append(age - ages[0])
            await asyncio.sleep(LAG_POLL_S)

    async def __aenter__(self) -> LagSampler:
        if self.followers:
            self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def summary(self) -> dict[str, Any]:
        return {
            "reported": lag_summary(self.reported),
            "staleness": lag_summary(self.staleness),
            "reported_samples": self.reported,
            "staleness_samples": self.staleness,
        }


def lag_summary(samples: list[float]) -> dict[str, float | int | None]:
    return {
        "n": len(samples),
        "p50_ms": percentile(samples, 50),
        "p99_ms": percentile(samples, 99),
        "max_ms": max(samples) if samples else None,
    }


# -- 1. queries, 2. mutations ------------------------------------------------------------------


def _pools(nodes: list[Node]) -> list[LightPool]:
    return [LightPool("127.0.0.1", n.port) for n in nodes]


async def preload(client: Any, leader: Node, per_group: int = 10) -> None:
    """``QUERY_GROUPS * per_group`` documents, so every query reads one."""
    for g0 in range(0, QUERY_GROUPS, 10):
        docs = [
            {"x": _int64(g), "author": "preload", "body": BODY, "score": float(k)}
            for g in range(g0, g0 + 10)
            for k in range(per_group)
        ]
        r = await client.post(
            f"{leader.url}/api/mutation",
            json={
                "path": "docs:insert_many",
                "args": {"docs": docs},
                "format": "convex_encoded_json",
            },
            timeout=60.0,
        )
        if r.json().get("status") != "success":
            raise RuntimeError(f"preload failed: {r.text[:300]}")


async def query_round(nodes: list[Node], seconds: float) -> dict[str, Any]:
    pools = _pools(nodes)
    bodies = [_query_body(i) for i in range(QUERY_GROUPS * 10)]
    per_node = [0] * len(nodes)
    n = len(nodes)
    first_error: list[str] = []
    # Round robin per request, not per caller: with 64 callers and 2 processes, caller k's
    # i (k, k + 64, ...) would always pick the same process.
    turn = iter(range(1 << 62))

    async def one(i: int) -> bool:
        k = next(turn) % n
        status, text = await pools[k].request("POST", "/api/query", bodies[i % len(bodies)])
        ok = status == 200 and text.startswith(b'{"status":"success","value":{')
        if ok:
            per_node[k] += 1
        elif not first_error:
            first_error.append(f"{nodes[k].name}: {status} {text[:200]!r}")
        return ok

    cpu0, sys0, t0 = cpu_of(nodes), sys_of(), time.perf_counter()
    try:
        got = await closed_loop_load(one, nodes[0].pid, seconds, CONCURRENCY)
    finally:
        for p in pools:
            p.close()
    elapsed = time.perf_counter() - t0
    got["node_cpu_pct"] = cpu_pct(cpu0, cpu_of(nodes), elapsed)
    # Server CPU per request, every process, the 200 warm-up requests included.
    got["cpu_us_per_op"] = (
        1e4 * sum(got["node_cpu_pct"].values()) * elapsed / (got["done"] + got["errors"] + 200)
    )
    got["sys_cpu_pct"] = cpu_pct(sys0, sys_of(), elapsed)
    got["per_node"] = dict(zip((x.name for x in nodes), per_node, strict=True))
    got["first_error"] = first_error[0] if first_error else ""
    return got


async def mutation_round(target: Node, nodes: list[Node], seconds: float, first: int) -> dict:
    pool = LightPool("127.0.0.1", target.port)
    bodies = [_insert_body(first + i) for i in range(2000)]
    first_error: list[str] = []

    async def one(i: int) -> bool:
        status, text = await pool.request("POST", "/api/mutation", bodies[i % len(bodies)])
        ok = status == 200 and b'"status":"success"' in text
        if not ok and not first_error:
            first_error.append(f"{status} {text[:200]!r}")
        return ok

    cpu0, sys0, t0 = cpu_of(nodes), sys_of(), time.perf_counter()
    try:
        got = await closed_loop_load(one, target.pid, seconds, CONCURRENCY, warmup=64)
    finally:
        pool.close()
    elapsed = time.perf_counter() - t0
    got["node_cpu_pct"] = cpu_pct(cpu0, cpu_of(nodes), elapsed)
    got["sys_cpu_pct"] = cpu_pct(sys0, sys_of(), elapsed)
    # Server CPU per mutation, every process, the 64 warm-up mutations included.
    got["cpu_us_per_op"] = (
        1e4 * sum(got["node_cpu_pct"].values()) * elapsed / (got["done"] + got["errors"] + 64)
    )
    got["first_error"] = first_error[0] if first_error else ""
    got["target"] = target.name
    return got


WORK_ROUNDS = 2500
"""SHA-256 rounds of one ``docs:work`` mutation (about 1 ms of Python on this machine)."""


def _work_body(i: int) -> bytes:
    args = {"x": _int64(i % QUERY_GROUPS), "rounds": _int64(WORK_ROUNDS)}
    return json.dumps({"path": "docs:work", "args": args, "format": "convex_encoded_json"}).encode()


async def work_round(targets: list[Node], nodes: list[Node], seconds: float) -> dict[str, Any]:
    """``docs:work`` from 64 closed-loop clients, round robin per request over ``targets``."""
    pools = _pools(targets)
    bodies = [_work_body(i) for i in range(1000)]
    turn = iter(range(1 << 62))
    first_error: list[str] = []

    async def one(i: int) -> bool:
        k = next(turn) % len(targets)
        status, text = await pools[k].request("POST", "/api/mutation", bodies[i % len(bodies)])
        ok = status == 200 and b'"status":"success"' in text
        if not ok and not first_error:
            first_error.append(f"{targets[k].name}: {status} {text[:200]!r}")
        return ok

    cpu0, sys0, t0 = cpu_of(nodes), sys_of(), time.perf_counter()
    try:
        got = await closed_loop_load(one, targets[0].pid, seconds, CONCURRENCY, warmup=64)
    finally:
        for pool in pools:
            pool.close()
    elapsed = time.perf_counter() - t0
    got["node_cpu_pct"] = cpu_pct(cpu0, cpu_of(nodes), elapsed)
    got["sys_cpu_pct"] = cpu_pct(sys0, sys_of(), elapsed)
    got["targets"] = [t.name for t in targets]
    got["first_error"] = first_error[0] if first_error else ""
    return got


# -- 3. subscriptions --------------------------------------------------------------------------


def _connect_frame() -> str:
    return json.dumps(
        {
            "type": "Connect",
            "sessionId": str(uuid.uuid4()),
            "connectionCount": 0,
            "lastCloseReason": "InitialConnect",
            "clientTs": 0,
        }
    )


def _subscribe_frame(x: int) -> str:
    add = {"type": "Add", "queryId": 0, "udfPath": "live:latest", "args": [{"x": _int64(x)}]}
    return json.dumps(
        {"type": "ModifyQuerySet", "baseVersion": 0, "newVersion": 1, "modifications": [add]}
    )


class _Receiver:
    """The subscribers' side, run in a child process (:func:`_receiver_main`).

    ``specs`` is one ``(port, role, x)`` per socket. Every socket that reads a frame with a
    marker ``#c<seq>#`` while recording notes ``(seq, time.perf_counter(), role)``;
    ``perf_counter`` is ``CLOCK_MONOTONIC``, one clock for every process of the machine, so
    the parent subtracts the times it sent the mutations at.
    """

    def __init__(self, specs: list[tuple[int, str, int]]) -> None:
        self.specs = specs
        self.initial = [False] * len(specs)
        self.n_initial = 0
        self.all_initial: asyncio.Future[None] | None = None
        self.recording = False
        self.seqs: list[int] = []
        self.times: list[float] = []
        self.roles: list[int] = []
        self.sockets: list[LightClient] = []

    def callback(self, i: int) -> Any:
        role = 0 if self.specs[i][1] == "leader" else 1

        def on_text(payload: bytes) -> None:
            if not self.initial[i]:
                if b'"type":"Transition"' in payload:
                    self.initial[i] = True
                    self.n_initial += 1
                    done = self.all_initial
                    if self.n_initial == len(self.specs) and done is not None and not done.done():
                        done.set_result(None)
                return
            if not self.recording:
                return
            m = MARKER.search(payload)
            if m is not None:
                self.times.append(time.perf_counter())
                self.seqs.append(int(m.group(1)))
                self.roles.append(role)

        return on_text

    async def open(self) -> None:
        self.all_initial = asyncio.get_running_loop().create_future()
        by_port: dict[int, list[int]] = {}
        for i, (port, _, _) in enumerate(self.specs):
            by_port.setdefault(port, []).append(i)
        for port, ids in by_port.items():
            socks = await connect_many(
                len(ids),
                "127.0.0.1",
                port,
                "/api/sync",
                lambda j, ids=ids: self.callback(ids[j]),
            )
            for i, s in zip(ids, socks, strict=True):
                s.send_text(_connect_frame())
                s.send_text(_subscribe_frame(self.specs[i][2]))
            self.sockets += socks
        await asyncio.wait_for(asyncio.shield(self.all_initial), 120.0)

    async def serve(self, conn: Any) -> None:
        """Answer the parent's commands on ``conn`` until ``close``."""
        try:
            await self.open()
        except Exception as exc:
            conn.send(("error", f"{self.n_initial} of {len(self.specs)} subscribed: {exc!r}"))
            return
        conn.send(("ready", len(self.sockets)))
        loop = asyncio.get_running_loop()
        cpu0 = time.process_time()
        while True:
            command = await loop.run_in_executor(None, conn.recv)
            if command == "start":
                self.seqs, self.times, self.roles = [], [], []
                self.recording = True
                cpu0 = time.process_time()
                conn.send("started")
            elif command == "count":
                conn.send(len(self.seqs))
            elif command == "stop":
                self.recording = False
                cpu = time.process_time() - cpu0
                conn.send((self.seqs, self.times, self.roles, cpu))
            else:
                for s in self.sockets:
                    s.close()
                await asyncio.sleep(0.2)
                conn.send("closed")
                return


def _receiver_main(conn: Any, specs: list[tuple[int, str, int]]) -> None:
    """The child process of :class:`Subscribers`."""
    raise_nofile(len(specs) + 1024)
    asyncio.run(_Receiver(specs).serve(conn))


class Subscribers:
    """``count`` sockets in a child process, spread over the nodes, one group each.

    In a child so that the sockets' reading does not share an event loop (and a core's
    worth of Python) with the writer: with them in this process, the flat-out writer got
    ~300 commits/s instead of ~1,200, held back by the loop, not by the servers.
    """

    def __init__(self, count: int, groups: int) -> None:
        self.count = count
        self.groups = groups
        self.group_size = [0] * groups
        self.proc: Any = None
        self.conn: Any = None

    async def _ask(self, command: str, timeout_s: float = 60.0) -> Any:
        self.conn.send(command)
        if not await asyncio.to_thread(self.conn.poll, timeout_s):
            raise RuntimeError(f"the subscribers' process did not answer {command!r}")
        return self.conn.recv()

    async def open(self, nodes: list[Node], leader: Node) -> None:
        import multiprocessing

        n = len(nodes)
        specs = []
        for i in range(self.count):
            node, g = nodes[i % n], (i // n) % self.groups
            self.group_size[g] += 1
            specs.append((node.port, "leader" if node is leader else "follower", SUB_X0 + g))
        ctx = multiprocessing.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_receiver_main, args=(child, specs), daemon=True)
        self.proc.start()
        child.close()
        if not await asyncio.to_thread(self.conn.poll, 150.0):
            raise RuntimeError("the subscribers' process did not get ready")
        status, detail = self.conn.recv()
        if status != "ready":
            raise RuntimeError(f"subscribers: {detail}")

    async def start(self) -> None:
        await self._ask("start")

    async def count_now(self) -> int:
        got: int = await self._ask("count")
        return got

    async def stop(self) -> tuple[list[int], list[float], list[int], float]:
        got: tuple[list[int], list[float], list[int], float] = await self._ask("stop")
        return got

    async def close(self) -> None:
        if self.proc is None:
            return
        with contextlib.suppress(Exception):
            await self._ask("close", 20.0)
        self.proc.join(10)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join(5)
        self.proc = None


async def writer(
    leader: Node,
    subs: Subscribers,
    seconds: float,
    seq0: int,
    rate: float | None,
    concurrency: int = 1,
) -> dict[str, Any]:
    """``docs:insert`` through the leader for ``seconds``: open loop at ``rate``/s, or (rate
    None) ``concurrency`` closed-loop writers, as fast as the leader commits."""
    pool = LightPool("127.0.0.1", leader.port)
    sent: dict[int, float] = {}
    acks: list[float] = []
    errors: list[str] = []
    inflight: set[asyncio.Task[None]] = set()
    skipped = 0
    offered = 0
    next_seq = seq0

    async def one(seq: int) -> None:
        nonlocal offered
        g = seq % subs.groups
        body = json.dumps(
            {
                "path": "docs:insert",
                "args": {
                    "x": _int64(SUB_X0 + g),
                    "author": "cluster",
                    "body": f"#c{seq}# {BODY[:120]}",
                    "score": float(seq),
                },
                "format": "convex_encoded_json",
            }
        ).encode()
        offered += subs.group_size[g]
        t0 = time.perf_counter()
        sent[seq] = t0
        try:
            status, text = await pool.request("POST", "/api/mutation", body)
        except Exception as exc:
            errors.append(repr(exc))
            return
        if status == 200 and b'"status":"success"' in text:
            acks.append(time.perf_counter() - t0)
        else:
            errors.append(f"{status} {text[:200]!r}")

    async def closed_loop() -> None:
        nonlocal next_seq
        while time.perf_counter() < end:
            seq, next_seq = next_seq, next_seq + 1
            await one(seq)

    await subs.start()
    cpu0 = time.process_time()
    start = time.perf_counter()
    end = start + seconds
    if rate is None:
        await asyncio.gather(*(closed_loop() for _ in range(concurrency)))
    else:
        k = 0
        while (due := start + k / rate) < end:
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            if len(inflight) < MAX_INFLIGHT:
                task = asyncio.get_running_loop().create_task(one(seq0 + k))
                inflight.add(task)
                task.add_done_callback(inflight.discard)
            else:
                skipped += 1
            k += 1
    writer_end = time.perf_counter()
    writer_cpu = time.process_time() - cpu0
    if inflight:
        await asyncio.wait(list(inflight), timeout=30.0)
    # The updates still on their way: counted for latency and delivered/offered, not the rate.
    last = -1
    drain_deadline = time.perf_counter() + 3.0
    while (now := await subs.count_now()) != last and time.perf_counter() < drain_deadline:
        last = now
        await asyncio.sleep(0.3)
    seqs, times, roles, receiver_cpu = await subs.stop()
    pool.close()
    elapsed = writer_end - start
    latency: dict[str, list[float]] = {"leader": [], "follower": []}
    in_window = 0
    for seq, t, role in zip(seqs, times, roles, strict=True):
        t_sent = sent.get(seq)
        if t_sent is None:
            continue
        latency["leader" if role == 0 else "follower"].append(t - t_sent)
        in_window += t <= writer_end
    return {
        "mode": "max" if rate is None else "rate",
        "mutations": len(sent),
        "skipped": skipped,
        "commit_rate": len(acks) / elapsed,
        "ack_p50_ms": 1000 * (percentile(acks, 50) or 0),
        "ack_p99_ms": 1000 * (percentile(acks, 99) or 0),
        "errors": len(errors),
        "first_error": errors[0] if errors else "",
        "offered_updates": offered,
        "delivered": len(latency["leader"]) + len(latency["follower"]),
        "delivered_per_s": in_window / elapsed,
        "latency": latency,
        "seconds": elapsed,
        "writer_cpu_pct": 100 * writer_cpu / elapsed,
        "receiver_cpu_pct": 100 * receiver_cpu / max(elapsed, time.perf_counter() - start),
    }


async def subscription_stage(
    client: Any, nodes: list[Node], leader: Node, p: Params, seq0: int
) -> dict[str, Any]:
    """Open the subscribers, then the fixed-rate rounds and the as-fast-as-it-can rounds."""
    subs = Subscribers(p.subscribers, p.groups)
    followers = [n for n in nodes if n is not leader]
    out: dict[str, Any] = {"rate": [], "max": []}
    t = time.perf_counter()
    try:
        await subs.open(nodes, leader)
        log(f"    {p.subscribers} subscribers open in {time.perf_counter() - t:.1f} s")
        await asyncio.sleep(1.0)
        plan = [("rate", p.rate, p.sub_s)] * p.sub_rounds + [("max", None, p.max_s)] * p.max_rounds
        for r, (mode, rate, seconds) in enumerate(plan):
            async with LagSampler(client, leader, followers) as lag:
                cpu0, sys0, t0 = cpu_of(nodes), sys_of(), time.perf_counter()
                got = await writer(
                    leader, subs, seconds, seq0 + r * 10_000_000, rate, p.max_writers
                )
                elapsed = time.perf_counter() - t0
                got["node_cpu_pct"] = cpu_pct(cpu0, cpu_of(nodes), elapsed)
                got["sys_cpu_pct"] = cpu_pct(sys0, sys_of(), elapsed)
            # Server CPU per update delivered, every process, the commits included.
            got["cpu_us_per_op"] = (
                1e4 * sum(got["node_cpu_pct"].values()) * elapsed / max(1, got["delivered"])
            )
            got["lag"] = lag.summary()
            out[mode].append(got)
            lat = got["latency"]
            log(
                f"    subscriptions ({f'at {rate:.0f}/s' if rate else 'writer flat out'}) "
                f"round {len(out[mode])}: {got['commit_rate']:.0f} commits/s, "
                f"{got['delivered_per_s']:,.0f} updates/s delivered ({got['delivered']:,} of "
                f"{got['offered_updates']:,} offered), latency p50 leader "
                f"{_ms(percentile(lat['leader'], 50))} / follower "
                f"{_ms(percentile(lat['follower'], 50))}, CPU % {got['node_cpu_pct']}, "
                f"writer {got['writer_cpu_pct']:.0f} %, subscribers' process "
                f"{got['receiver_cpu_pct']:.0f} %, staleness p50 "
                f"{fmt(got['lag']['staleness']['p50_ms'])} ms, lag_ms max "
                f"{got['lag']['reported']['max_ms']}, errors {got['errors']}"
            )
            await asyncio.sleep(0.5)
    finally:
        await subs.close()
        await asyncio.sleep(0.5)
    out["group_size"] = subs.group_size
    return out


def _ms(x: float | None) -> str:
    return "—" if x is None else f"{1000 * x:.1f} ms"


# -- 4. failover -------------------------------------------------------------------------------


async def failover_once(client: Any, cluster: Cluster, rep: int) -> dict[str, Any]:
    leader, _ = await settle(client, cluster)
    survivors = [n for n in cluster.nodes if n is not leader]
    elected: dict[str, float] = {}
    accepted: dict[str, float] = {}
    attempts = 0

    async def watch(node: Node, t_kill: float) -> None:
        # Until one survivor leads (the others go on following).
        while not elected and time.perf_counter() - t_kill < FAILOVER_TIMEOUT_S:
            r = await ready(client, node, 1.0)
            if r.get("role") == "leader":
                elected[node.name] = time.perf_counter() - t_kill
                return
            await asyncio.sleep(FAILOVER_POLL_S)

    async def write(node: Node, t_kill: float) -> None:
        nonlocal attempts
        i = 0
        while time.perf_counter() - t_kill < FAILOVER_TIMEOUT_S:
            i += 1
            attempts += 1
            body = {
                "path": "docs:insert",
                "args": {
                    "x": _int64(QUERY_GROUPS + 1),
                    "author": f"failover-{rep}-{node.name}",
                    "body": f"{i}",
                    "score": float(i),
                },
                "format": "convex_encoded_json",
            }
            try:
                r = await client.post(
                    f"{node.url}/api/mutation", json=body, timeout=FAILOVER_TIMEOUT_S
                )
                if r.json().get("status") == "success":
                    accepted[node.name] = time.perf_counter() - t_kill
                    return
            except Exception:
                pass
            await asyncio.sleep(FAILOVER_POLL_S)

    t_kill = time.perf_counter()
    cluster.kill(leader)
    await asyncio.gather(
        *(watch(n, t_kill) for n in survivors), *(write(n, t_kill) for n in survivors)
    )
    after = await roles(client, survivors)
    new_leader = [k for k, v in after.items() if v == "leader"]
    via_follower = [
        accepted.get(n.name, FAILOVER_TIMEOUT_S) for n in survivors if n.name not in new_leader
    ]
    got = {
        "killed": leader.name,
        "survivors": len(survivors),
        "new_leader": new_leader,
        "leader_s": min(elected.values()) if elected else None,
        "mutation_s": min(accepted.values()) if accepted else None,
        "all_accept_s": max(accepted.values()) if len(accepted) == len(survivors) else None,
        "via_follower_s": max(via_follower) if via_follower else None,
        "attempts": attempts,
        "roles_after": after,
    }
    log(
        f"    failover {rep + 1}: killed {leader.name} (leader); {new_leader} leads after "
        f"{_ms(got['leader_s'])}, first mutation through a survivor after "
        f"{_ms(got['mutation_s'])}, every survivor after {_ms(got['all_accept_s'])}"
    )
    # Back to N processes: the killed one comes back (a new process, as a follower).
    await asyncio.to_thread(cluster.start)
    await settle(client, cluster)
    return got


# -- the stages --------------------------------------------------------------------------------


async def stage(client: Any, cluster: Cluster, p: Params, n: int) -> dict[str, Any]:
    leader, followers = await settle(client, cluster)
    nodes = list(cluster.nodes)
    out: dict[str, Any] = {
        "processes": n,
        "leader": leader.name,
        "load_average_start": [round(x, 2) for x in os.getloadavg()],
        "seconds": {},
    }
    log(f"  [{n} process(es)] leader {leader.name}, followers {[f.name for f in followers]}")
    # 1. queries
    t = time.perf_counter()
    out["query"] = []
    for r in range(p.query_rounds):
        got = await query_round(nodes, p.query_s)
        out["query"].append(got)
        log(
            f"    queries round {r + 1}/{p.query_rounds}: {got['rate']:,.0f}/s, p50 "
            f"{got['p50_ms']:.1f} ms, p99 {got['p99_ms']:.1f} ms, errors {got['errors']}, "
            f"CPU % {got['node_cpu_pct']}, client {got['client_cpu_pct']:.0f} %, per process "
            f"{got['per_node']}"
        )
    out["seconds"]["query"] = time.perf_counter() - t
    # 2. mutations, through the leader and through a follower, rounds alternating
    t = time.perf_counter()
    out["mutation_leader"], out["mutation_follower"] = [], []
    first = 10_000_000 * n
    for r in range(p.mutation_rounds):
        targets = [("mutation_leader", leader)] + (
            [("mutation_follower", followers[0])] if followers else []
        )
        for key, target in targets:
            async with LagSampler(client, leader, followers) as lag:
                got = await mutation_round(target, nodes, p.mutation_s, first)
            first += 100_000
            got["lag"] = lag.summary()
            out[key].append(got)
            log(
                f"    mutations via {target.name} ({key.split('_')[1]}) round {r + 1}/"
                f"{p.mutation_rounds}: {got['rate']:,.0f}/s, p50 {got['p50_ms']:.1f} ms, "
                f"errors {got['errors']}, CPU % {got['node_cpu_pct']}, staleness p50 "
                f"{fmt(got['lag']['staleness']['p50_ms'])} ms p99 "
                f"{fmt(got['lag']['staleness']['p99_ms'])} ms, lag_ms max "
                f"{got['lag']['reported']['max_ms']}"
            )
    # 2b. mutations that compute (about 1 ms each): all through the leader, then round robin
    # over every process (each runs what it receives: the function's CPU spreads)
    out["work_leader"], out["work_all"] = [], []
    for r in range(p.mutation_rounds):
        for key, targets in [("work_leader", [leader])] + (
            [("work_all", nodes)] if followers else []
        ):
            got = await work_round(targets, nodes, p.mutation_s)
            out[key].append(got)
            log(
                f"    computing mutations via {got['targets']} round {r + 1}/"
                f"{p.mutation_rounds}: {got['rate']:,.0f}/s, p50 {got['p50_ms']:.1f} ms, "
                f"errors {got['errors']}, CPU % {got['node_cpu_pct']}"
            )
    out["seconds"]["mutation"] = time.perf_counter() - t
    # 3. subscriptions
    t = time.perf_counter()
    out["subscriptions"] = await subscription_stage(client, nodes, leader, p, 1_000_000_000 * n)
    out["seconds"]["subscriptions"] = time.perf_counter() - t
    # 4. failover
    t = time.perf_counter()
    out["failover"] = []
    if n >= 2:
        for rep in range(p.failovers):
            out["failover"].append(await failover_once(client, cluster, rep))
    out["seconds"]["failover"] = time.perf_counter() - t
    out["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    log(f"    seconds per phase: { {k: round(v, 1) for k, v in out['seconds'].items()} }")
    return out


async def _measure(p: Params, admin_url: str, where: str) -> dict[str, Any]:
    import httpx

    global PG_PID
    raise_nofile(4 * p.subscribers + 2048)
    PG_PID = postmaster_of(urlsplit(admin_url).port or 5432)
    db_url = await create_database(admin_url)
    log(f"database {urlsplit(db_url).path.lstrip('/')} on {where}")
    stages: dict[int, Any] = {}
    logs: dict[str, str] = {}
    try:
        with scratch_dir("cluster") as d:
            cluster = Cluster(db_url, d)
            try:
                async with httpx.AsyncClient() as client:
                    for n in (1, 2, 3):
                        while len(cluster.nodes) < n:
                            t = time.perf_counter()
                            node = await asyncio.to_thread(cluster.start)
                            log(f"  started {node.name} in {time.perf_counter() - t:.1f} s")
                        if n == 1:
                            leader, _ = await settle(client, cluster)
                            await preload(client, leader)
                        stages[n] = await stage(client, cluster, p, n)
            finally:
                logs = {n.name: n.log_tail(40) for n in cluster.everything}
                cluster.stop_all()
    finally:
        await drop_database(admin_url, db_url)
    for name, text in logs.items():
        if "Traceback" in text or "ERROR" in text:
            log(f"  {name}'s log has errors (tail):\n{text}")
    return {"stages": stages, "logs": logs}


# -- figures -----------------------------------------------------------------------------------


def _med(runs: list[dict[str, Any]], key: str) -> float | None:
    return median([r[key] for r in runs if r.get(key) is not None])


def _latencies(rounds: list[dict[str, Any]], role: str) -> list[float]:
    return [1000 * x for r in rounds for x in r["latency"][role]]


def _samples(rounds: list[dict[str, Any]], kind: str) -> list[float]:
    return [x for r in rounds for x in r["lag"][f"{kind}_samples"]]


def _cpu_sum(rounds: list[dict[str, Any]]) -> float | None:
    return median([sum(r["node_cpu_pct"].values()) for r in rounds])


def _cpu_cell(rounds: list[dict[str, Any]]) -> str:
    """Medians over the rounds: the servers' CPU, PostgreSQL's, the whole machine's busy time,
    in % of one core (200 = both vCPUs busy)."""
    pg = median([r["sys_cpu_pct"]["postgres"] for r in rounds if "postgres" in r["sys_cpu_pct"]])
    busy = median([r["sys_cpu_pct"]["machine"] for r in rounds])
    return f"{fmt(_cpu_sum(rounds))} / {fmt(pg)} / {fmt(busy)}"


def _delivered_share(rounds: list[dict[str, Any]]) -> str:
    offered = sum(r["offered_updates"] for r in rounds)
    return f"{sum(r['delivered'] for r in rounds) / offered:.3f}" if offered else "—"


def _pair(a: float | None, b: float | None) -> str:
    if a is None and b is None:
        return "—"
    return f"{fmt(a)} / {fmt(b)}"


def _pcts(xs: list[float], *ps: float) -> str:
    return " / ".join(fmt(percentile(xs, q)) for q in ps) if xs else "—"


@dataclass
class Line:
    """One line of the table: the text of each process count's cell and, for a ratio, the
    figure it is computed from (None: no ratio)."""

    name: str
    cells: dict[int, str]
    values: dict[int, float | None] = field(default_factory=dict)
    samples: dict[int, list[float]] = field(default_factory=dict)
    unit: str = ""
    higher_is_better: bool = True


def lines_of(stages: dict[int, Any], p: Params) -> list[Line]:
    ns = sorted(stages)
    out: list[Line] = []

    def add(
        name: str,
        cell: Any,
        value: Any = None,
        samples: Any = None,
        unit: str = "",
        higher: bool = True,
    ) -> None:
        out.append(
            Line(
                name,
                {n: cell(stages[n]) for n in ns},
                {n: value(stages[n]) for n in ns} if value else {},
                {n: samples(stages[n]) for n in ns} if samples else {},
                unit,
                higher,
            )
        )

    def subs(mode: str) -> Any:
        return lambda s: s["subscriptions"][mode]

    # 1. queries
    def q_rates(s: Any) -> list[float]:
        return [r["rate"] for r in s["query"]]

    add(
        f"queries/s, {CONCURRENCY} HTTP clients round robin (live:latest)",
        lambda s: fmt(median(q_rates(s))),
        lambda s: median(q_rates(s)),
        q_rates,
        "queries/s",
    )
    add(
        "  query latency p50 / p99 (ms)",
        lambda s: _pair(_med(s["query"], "p50_ms"), _med(s["query"], "p99_ms")),
        lambda s: _med(s["query"], "p50_ms"),
        unit="ms",
        higher=False,
    )
    add("  CPU % of a core: servers / PostgreSQL / machine busy", lambda s: _cpu_cell(s["query"]))
    add(
        "  server CPU per query, every process (µs)",
        lambda s: fmt(_med(s["query"], "cpu_us_per_op")),
        lambda s: _med(s["query"], "cpu_us_per_op"),
        unit="µs",
        higher=False,
    )
    # 3. subscriptions at a fixed rate
    rate = subs("rate")

    def d_rates(s: Any) -> list[float]:
        return [r["delivered_per_s"] for r in rate(s)]

    add(
        f"subscription updates/s delivered: {p.subscribers:,} sockets, {p.groups} groups, "
        f"writer at {p.rate:.0f} commits/s",
        lambda s: fmt(median(d_rates(s))),
        lambda s: median(d_rates(s)),
        d_rates,
        "updates/s",
    )
    add(
        "  delivered / offered updates",
        lambda s: _delivered_share(rate(s)),
    )
    for role in ("leader", "follower"):
        add(
            f"  send→subscriber p50 / p99, subscriber on the {role} (ms)",
            lambda s, role=role: _pcts(_latencies(rate(s), role), 50, 99),
            lambda s, role=role: percentile(_latencies(rate(s), role), 50),
            unit="ms",
            higher=False,
        )
    add(
        "  writer's mutation ack p50 (ms, through the leader)",
        lambda s: fmt(_med(rate(s), "ack_p50_ms")),
    )
    add("  CPU % of a core: servers / PostgreSQL / machine busy", lambda s: _cpu_cell(rate(s)))
    add(
        "  server CPU per update delivered, commits included (µs)",
        lambda s: fmt(_med(rate(s), "cpu_us_per_op")),
        lambda s: _med(rate(s), "cpu_us_per_op"),
        unit="µs",
        higher=False,
    )
    add(
        "  follower lag_ms of /health/ready, p50 / max",
        lambda s: _pcts(_samples(rate(s), "reported"), 50, 100),
    )
    add(
        "  follower staleness vs leader, p50 / p99 (ms)",
        lambda s: _pcts(_samples(rate(s), "staleness"), 50, 99),
    )
    # 3b. subscriptions, the writer as fast as it can
    flat = subs("max")

    def m_rates(s: Any) -> list[float]:
        return [r["delivered_per_s"] for r in flat(s)]

    add(
        f"subscription updates/s delivered, {p.max_writers} writers flat out",
        lambda s: fmt(median(m_rates(s))),
        lambda s: median(m_rates(s)),
        m_rates,
        "updates/s",
    )
    add(
        "  commits/s the writers got (through the leader)",
        lambda s: fmt(_med(flat(s), "commit_rate")),
    )
    add(
        "  delivered / offered updates",
        lambda s: _delivered_share(flat(s)),
    )
    add("  CPU % of a core: servers / PostgreSQL / machine busy", lambda s: _cpu_cell(flat(s)))
    add(
        "  follower staleness vs leader, p50 / p99 (ms)",
        lambda s: _pcts(_samples(flat(s), "staleness"), 50, 99),
    )

    # 2. mutations
    def ml(s: Any) -> list[float]:
        return [r["rate"] for r in s["mutation_leader"]]

    def mf(s: Any) -> list[float]:
        return [r["rate"] for r in s["mutation_follower"]]

    add(
        f"mutations/s through the leader, {CONCURRENCY} HTTP clients",
        lambda s: fmt(median(ml(s))),
        lambda s: median(ml(s)),
        ml,
        "mutations/s",
    )
    add(
        f"mutations/s through a follower (forwarded), {CONCURRENCY} HTTP clients",
        lambda s: fmt(median(mf(s))),
    )
    add(
        "  p50 through the leader / through a follower (ms)",
        lambda s: _pair(
            _med(s["mutation_leader"], "p50_ms"), _med(s["mutation_follower"], "p50_ms")
        ),
    )
    add(
        "  CPU % of a core: servers / PostgreSQL / machine busy, via the leader",
        lambda s: _cpu_cell(s["mutation_leader"]),
    )
    add(
        "  server CPU per mutation via the leader / via a follower, every process (µs)",
        lambda s: _pair(
            _med(s["mutation_leader"], "cpu_us_per_op"),
            _med(s["mutation_follower"], "cpu_us_per_op"),
        ),
        lambda s: _med(s["mutation_leader"], "cpu_us_per_op"),
        unit="µs",
        higher=False,
    )
    add(
        "  CPU through a follower: that follower / the leader (%)",
        lambda s: _pair(
            median([r["node_cpu_pct"][r["target"]] for r in s["mutation_follower"]]),
            median([r["node_cpu_pct"][s["leader"]] for r in s["mutation_follower"]]),
        ),
    )
    add(
        "  follower lag_ms of /health/ready, p50 / max",
        lambda s: _pcts(
            _samples(s["mutation_leader"] + s["mutation_follower"], "reported"), 50, 100
        ),
    )
    add(
        "  follower staleness vs leader, p50 / p99 (ms)",
        lambda s: _pcts(
            _samples(s["mutation_leader"] + s["mutation_follower"], "staleness"), 50, 99
        ),
    )

    # 2b. mutations that compute
    def wl(s: Any) -> list[float]:
        return [r["rate"] for r in s["work_leader"]]

    def wa(s: Any) -> list[float]:
        return [r["rate"] for r in s["work_all"]] or wl(s)

    add(
        f"computing mutations/s (~1 ms of Python each), {CONCURRENCY} clients, all to the leader",
        lambda s: fmt(median(wl(s))),
        lambda s: median(wl(s)),
        wl,
        "mutations/s",
    )
    add(
        "computing mutations/s, round robin over every process (each runs what it receives)",
        lambda s: fmt(median(wa(s))),
        lambda s: median(wa(s)),
        wa,
        "mutations/s",
    )
    add(
        "  CPU % of a core per process, round robin",
        lambda s: (
            " / ".join(
                fmt(median([r["node_cpu_pct"][name] for r in s["work_all"]]))
                for name in (s["work_all"][0]["node_cpu_pct"] if s["work_all"] else {})
            )
            or "—"
        ),
    )

    # 4. failover
    def fo(key: str) -> Any:
        return lambda s: [1000 * r[key] for r in s["failover"] if r[key] is not None]

    for key, what in (
        ("leader_s", "a survivor reports role leader"),
        ("mutation_s", "a mutation through a survivor succeeds"),
        ("all_accept_s", "every survivor takes mutations"),
    ):
        add(
            f"failover: SIGKILL → {what}, median / max (ms)",
            lambda s, key=key: _pair(median(fo(key)(s)), max(fo(key)(s))) if fo(key)(s) else "—",
        )
    return out


def render(lines: list[Line], stages: dict[int, Any]) -> tuple[str, str]:
    """The aligned text table and the same in Markdown."""
    ns = sorted(stages)
    header = ["", *(f"{n} process{'es' if n > 1 else ''}" for n in ns)]
    header += [f"{n}/1" for n in ns if n != 1]
    rows = [header]
    for line in lines:
        ratios = []
        for n in ns[1:]:
            base, v = line.values.get(1), line.values.get(n)
            ratios.append(
                f"{(v / base) if line.higher_is_better else (base / v):.2f}x" if base and v else ""
            )
        rows.append([line.name, *(line.cells[n] for n in ns), *ratios])
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    text = []
    for k, r in enumerate(rows):
        text.append(
            "  ".join(c.ljust(widths[i]) if i == 0 else c.rjust(widths[i]) for i, c in enumerate(r))
        )
        if k == 0:
            text.append("-" * len(text[0]))
    md = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
    md += ["| " + " | ".join(c.strip() for c in r) + " |" for r in rows[1:]]
    return "\n".join(text), "\n".join(md)


def notes_of(stages: dict[int, Any], p: Params) -> list[str]:
    out = []
    for n, s in sorted(stages.items()):
        sub_rounds = s["subscriptions"]["rate"] + s["subscriptions"]["max"]
        errs = sum(r["errors"] for r in s["query"])
        merr = sum(r["errors"] for k in ("mutation_leader", "mutation_follower") for r in s[k])
        serr = sum(r["errors"] + r["skipped"] for r in sub_rounds)
        qcpu = [r["node_cpu_pct"] for r in s["query"]]
        per_node = {k: median([c[k] for c in qcpu]) for k in qcpu[0]}
        scpu = [r["node_cpu_pct"] for r in s["subscriptions"]["rate"]]
        sub_node = {k: median([c[k] for c in scpu]) for k in scpu[0]}
        line = (
            f"{n} process{'es' if n > 1 else ''}: leader {s['leader']}; errors: {errs} queries, "
            f"{merr} mutations, {serr} subscription writes (failed or skipped); query CPU per "
            f"process (% of a core) {per_node}, load generator "
            f"{_med(s['query'], 'client_cpu_pct'):.0f} %; fixed-rate subscription CPU per "
            f"process {sub_node}, commits/s reached "
            f"{_med(s['subscriptions']['rate'], 'commit_rate'):.0f} of {p.rate:.0f}; the "
            f"subscribers' process used {_med(s['subscriptions']['rate'], 'receiver_cpu_pct'):.0f}"
            f" % of a core at the fixed rate, "
            f"{_med(s['subscriptions']['max'], 'receiver_cpu_pct'):.0f} % flat out (the writers "
            f"{_med(s['subscriptions']['max'], 'writer_cpu_pct'):.0f} %); load "
            f"average {s['load_average_start']} → {s['load_average_end']}"
        )
        first = next(
            (
                f"{k}: {r['first_error']}"
                for k in ("query", "mutation_leader", "mutation_follower")
                for r in s[k]
                if r.get("first_error")
            ),
            "",
        ) or next(
            (f"subscriptions: {r['first_error']}" for r in sub_rounds if r["first_error"]), ""
        )
        if first:
            line += f"; first error: {first}"
        if s["failover"]:
            fo = s["failover"]
            via = [1000 * r["via_follower_s"] for r in fo if r["via_follower_s"] is not None]
            line += (
                f"; failover ({len(fo)} kills): leaders after each kill "
                f"{[r['killed'] + '→' + '/'.join(r['new_leader']) for r in fo]}"
                + (
                    f", a mutation through the surviving follower (forwarded to the new leader) "
                    f"after median {fmt(median(via))} ms, max {fmt(max(via))} ms"
                    if via
                    else ""
                )
            )
        out.append(line)
    return out


def rows_of(lines: list[Line]) -> list[Row]:
    """``common.Row``\\ s for ``run.py``: the lines with a ratio, at 2 and 3 processes
    against 1 process."""
    rows = []
    for line in lines:
        base = line.values.get(1)
        if base is None:
            continue
        for n in (2, 3):
            v = line.values.get(n)
            if v is None:
                continue
            rows.append(
                Row(
                    "cluster",
                    f"{line.name.strip()}, {n} processes vs 1",
                    line.unit,
                    v,
                    base,
                    anchor_name="1 process",
                    higher_is_better=line.higher_is_better,
                    target="context",
                    reactive_samples=line.samples.get(n, []),
                    anchor_samples=line.samples.get(1, []),
                )
            )
    return rows


def _strip(stages: dict[int, Any]) -> dict[int, Any]:
    """The stages for the JSON: each round's update latencies summarized (they are many)."""
    out: dict[int, Any] = {}
    for n, s in stages.items():
        s = json.loads(json.dumps(s, default=str))
        for r in s["subscriptions"]["rate"] + s["subscriptions"]["max"]:
            lat = r.pop("latency")
            r["latency_ms"] = {
                role: {
                    "n": len(xs),
                    "p50": 1000 * (percentile(xs, 50) or 0),
                    "p99": 1000 * (percentile(xs, 99) or 0),
                    "max": 1000 * max(xs) if xs else None,
                }
                for role, xs in lat.items()
            }
        out[n] = s
    return out


def measure(quick: bool, db: str | None = None) -> dict[str, Any]:
    """Run every stage; the raw figures."""
    p = QUICK if quick else FULL
    admin = db or os.environ.get("REACTIVE_TEST_POSTGRES_URL")
    if admin:
        return asyncio.run(_measure(p, admin, urlsplit(admin).netloc.split("@")[-1]))
    reason = postgres_available()
    if reason is not None:
        raise RuntimeError(
            f"no PostgreSQL: {reason}; give --db or run under scripts/with-dbservers.sh"
        )
    with postgres() as pg:
        return asyncio.run(_measure(p, pg.dsn, f"a private PostgreSQL 15 on port {pg.port}"))


def run(quick: bool = False) -> list[Row]:
    """The table as ``common.Row``\\ s (for ``run.py``)."""
    p = QUICK if quick else FULL
    got = measure(quick)
    return rows_of(lines_of(got["stages"], p))


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM raises KeyboardInterrupt, so the ``finally`` blocks stop every process."""

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small counts (< 2 minutes)")
    parser.add_argument(
        "--db",
        default=None,
        help="admin URL of a PostgreSQL server the benchmark may CREATE DATABASE on "
        "(default $REACTIVE_TEST_POSTGRES_URL, else a private PostgreSQL 15 it starts)",
    )
    args = parser.parse_args()
    p = QUICK if args.quick else FULL
    info = machine()
    started = datetime.now(UTC)
    print(f"reactive cluster benchmark ({'quick' if args.quick else 'full'} run)")
    print(f"machine: {describe_machine(info)}")
    print(
        f"Every process (1-3 reactive servers, PostgreSQL, this load generator) shares these "
        f"{info['nproc']} CPU(s): more processes add no cores."
    )
    sys.stdout.flush()
    t0 = time.perf_counter()
    with _sigterm_as_interrupt():
        got = measure(args.quick, args.db)
    total = time.perf_counter() - t0
    stages = got["stages"]
    lines = lines_of(stages, p)
    text, md = render(lines, stages)
    info_end = machine()
    print()
    print(text)
    print()
    for note in notes_of(stages, p):
        print(f"  - {note}")
    print(
        f"  - {'quick' if args.quick else 'full'} run, {total:.0f} s; {p.query_rounds} query "
        f"rounds of {p.query_s:g} s, {p.mutation_rounds} mutation rounds of {p.mutation_s:g} s "
        f"per target, {p.sub_rounds} subscription rounds of {p.sub_s:g} s at {p.rate:g} "
        f"commits/s and {p.max_rounds} of {p.max_s:g} s flat out, {p.failovers} "
        f"failovers per stage; figures are medians of rounds (latency percentiles over every "
        f"update of every round); load average {info['load_average']} → "
        f"{info_end['load_average']}"
    )
    print()
    print(md)
    result = {
        "started": started.isoformat(),
        "quick": args.quick,
        "seconds": total,
        "params": p.__dict__,
        "machine": info,
        "load_average_end": info_end["load_average"],
        "table": text,
        "rows": [r.to_json() for r in rows_of(lines)],
        "stages": _strip(stages),
        "logs": got["logs"],
    }
    path = RESULTS / "cluster-latest.json"
    write_json(path, result)
    log(f"wrote {path}")
    if not args.quick:
        kept = KEPT / f"{started:%Y-%m-%d}-cluster.json"
        write_json(kept, result)
        log(f"wrote {kept} (commit it: benches/results/ keeps every full run)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
