"""Elle list-append histories through a three-process cluster, across failovers.

Three ``python -m reactive.server --cluster-key K`` processes share one PostgreSQL (and
one MariaDB) database: the lease holder commits, the followers tail the log, run the
mutations they receive and send their transactions to it to validate and commit. The
workload of ``test_isolation_server.py`` runs against all three at once: four
``reactive.client.Client`` WebSocket connections and one HTTP client per process
(``POST /api/mutation``, ``POST /api/query``), transactions dealt round robin over the
fifteen, half the read-only ones as the query ``lists:read``. Meanwhile:

* the lease holder (``/health/ready`` says ``role: leader``) is SIGKILLed five times; a
  survivor takes over, and the killed process is started again on its port (it returns as
  a follower), so three run again before the next fault;
* once, a follower is cut off from the database for 3 s: its ``--db`` names a TCP proxy
  in this process (:class:`cluster_nodes.TcpProxy`) that closes every connection and
  refuses new ones, then relays again.

The faults are spread over the run (each after another seventh of the transactions; the
clients wait if the faults fall behind). The WebSocket clients reconnect to the same port
and resend their unacknowledged mutations (the session's request ids make a resend run
once, whichever process leads); an HTTP request whose answer was lost is ``info``, one
answered with a conflict ``fail``. A process that exits by itself (status 75, "restart
me") is restarted, as its supervisor would, and fails the test. After the run every
process reads every key. The history must have no anomaly with real-time order (strict
serializability: a query through any process sees every commit acknowledged before it was
asked, through any process), no acknowledged append lost, no transaction timed out, the
three processes the same final state, and each client must read its own acknowledged
appends (checked directly too). On an anomaly the output names, for each transaction
involved, the client and route that sent it and when (wall clock, as in the servers' logs).

``REACTIVE_ELLE_TXNS`` (default 2,000), ``REACTIVE_ELLE_CONCURRENCY`` (32) and
``REACTIVE_ELLE_SEED`` as for the other isolation tests; ``REACTIVE_ELLE_CUT=reset`` makes
the cut follower's new connections be accepted and reset at once instead of refused.

Source: docs/design/scale-out.md (6.2 read barriers, 11 the test plan); docs/guarantees.md
("Isolation"); Kingsbury & Alvaro, VLDB 2020.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import random
import re
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from cluster_nodes import Node, TcpProxy, via_proxy
from elle import Txn, check
from listappend import (
    APP_FILES,
    Generator,
    Op,
    env_int,
    read_only_keys,
    run_workload,
    txn_count,
)

from reactive.client import Client
from reactive.errors import ConvexError, FunctionError

CONCURRENCY = env_int("REACTIVE_ELLE_CONCURRENCY", 32)
SEED = env_int("REACTIVE_ELLE_SEED", 0)
CLIENTS_PER_NODE = 4
KEY = "isolation-cluster-key-0123456789abcdef"
KILLS = 5
ISOLATED_S = 3.0
# How the cut-off follower's new connections fail: "refuse" (nothing listens) or "reset"
# (accepted, then reset at once).
CUT = os.environ.get("REACTIVE_ELLE_CUT", "refuse")
PROXIED = 0  # the slot whose database traffic goes through the proxy
# The faults, in order, each once 1/(len + 1) more of the transactions have completed.
PLAN = ("kill", "kill", "isolate", "kill", "kill", "kill")
MIN_GAP_S = 1.0  # between the end of one fault and the next
ERROR_PAUSE_S = 0.25  # a client's pause after an error
DEFAULT_PORTS = {"postgresql": 5432, "postgres": 5432, "mysql": 3306}
# The errors that prove the transaction did not commit (the leader gave up on conflicts).
NOT_COMMITTED = {"WriteConflict", "ConvexError"}


@pytest.fixture(params=["postgres", "mysql"])
def server_url(request: pytest.FixtureRequest, backend_urls: Callable[[str], str]) -> str:
    """A fresh database on each server backend (as ``tests/persistence``'s ``server_url``)."""
    return backend_urls(request.param)


@dataclass
class Cluster:
    nodes: list[Node]
    proxy: TcpProxy


@pytest.fixture
def cluster(
    server_url: str, tmp_path: Path, make_app: Callable[[dict[str, str]], Path]
) -> Iterator[Cluster]:
    app = make_app(APP_FILES)
    parts = urlsplit(server_url)
    upstream_port = parts.port or DEFAULT_PORTS[parts.scheme]
    proxy = TcpProxy(parts.hostname or "127.0.0.1", upstream_port).start()
    nodes = [
        Node.create(
            slot,
            app,
            via_proxy(server_url, proxy.port) if slot == PROXIED else server_url,
            KEY,
            tmp_path,
        )
        for slot in range(3)
    ]
    try:
        # Another slot first: it takes the lease, and the proxied one starts as a follower.
        for slot in (1, 0, 2):
            nodes[slot].start()
        yield Cluster(nodes, proxy)
    finally:
        for node in nodes:
            node.kill()
        proxy.close()
        # Relays that ended in an error other than the cut (diagnostics).
        odd = [f"{_clock(t)} {why}" for t, why in proxy.closes if "Error" in why]
        print(f"proxy of node {PROXIED}: {proxy.accepted} connections;", odd or "no odd ends")


# -- the clients ----------------------------------------------------------------------------


class Answered(Exception):
    """The server answered with an error; ``kind`` is the error class it names."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


class Refused(Answered):
    """An error that proves no commit (the transaction is ``fail``)."""


class Unknown(Answered):
    """An error after which the transaction may or may not have committed (``info``)."""


def answered(message: str) -> Answered:
    found = re.search(r"Uncaught (\w+)", message)
    kind = found.group(1) if found else "ServerError"
    return (Refused if kind in NOT_COMMITTED else Unknown)(kind, message[:300])


def classify(exc: Exception) -> str:
    return "fail" if isinstance(exc, Refused) else "info"


@dataclass
class Lane:
    """One client of one process; ``acked`` its acknowledged appends, by key."""

    name: str
    slot: int
    acked: dict[str, set[int]] = field(default_factory=dict)

    async def mutation(self, ops: list[Op]) -> list[Any]:
        raise NotImplementedError

    async def query(self, keys: list[str]) -> list[Any]:
        raise NotImplementedError


@dataclass
class WsLane(Lane):
    client: Client | None = None

    def state(self) -> str:
        """The client's connection state (diagnostics of a hung transaction)."""
        c: Any = self.client
        requests = [(rid, r.kind, r.generation, r.ts) for rid, r in list(c._requests.items())[:5]]
        return (
            f"connected={c._connected.is_set()} generation={c._generation}"
            f" reconnects={c.reconnects} version={c._version} max_ts={c._max_ts}"
            f" queries={len(c._queries)} requests={len(c._requests)} {requests}"
            f" last_close={c._last_close!r}"
            f" ws={getattr(c._ws, 'state', None)} session={c.session_id}"
        )

    async def mutation(self, ops: list[Op]) -> list[Any]:
        assert self.client is not None
        try:
            result: list[Any] = await self.client.mutation("lists:txn", {"ops": ops})
        except (ConvexError, FunctionError) as exc:
            raise answered(str(exc)) from exc
        return result

    async def query(self, keys: list[str]) -> list[Any]:
        assert self.client is not None
        try:
            result: list[Any] = await self.client.query("lists:read", {"keys": keys})
        except (ConvexError, FunctionError) as exc:
            raise answered(str(exc)) from exc
        return result


@dataclass
class HttpLane(Lane):
    url: str = ""
    http: httpx.AsyncClient | None = None

    async def _call(self, route: str, path: str, args: dict[str, Any]) -> list[Any]:
        assert self.http is not None
        deadline = time.monotonic() + 30.0
        while True:
            try:
                response = await self.http.post(
                    f"{self.url}{route}", json={"path": path, "args": args}
                )
            except httpx.ConnectError as exc:
                # Nothing was sent: the process is down (being restarted). Try again.
                if time.monotonic() > deadline:
                    raise Refused("ConnectError", str(exc)) from exc
                await asyncio.sleep(0.1)
                continue
            break
        try:
            body = response.json()
        except ValueError:
            body = {}
        if response.status_code != 200:
            raise Unknown(f"HTTP {response.status_code}", response.text[:300])
        if body.get("status") != "success":
            raise answered(str(body.get("errorMessage")))
        value: list[Any] = body["value"]  # format "json": int64 as decimal strings
        return value

    async def mutation(self, ops: list[Op]) -> list[Any]:
        return await self._call("/api/mutation", "lists:txn", {"ops": ops})

    async def query(self, keys: list[str]) -> list[Any]:
        return await self._call("/api/query", "lists:read", {"keys": keys})


# -- the faults -----------------------------------------------------------------------------


@dataclass
class Kill:
    slot: int
    at: float  # time.monotonic() of the SIGKILL
    failover_s: float  # until a survivor's /health/ready says leader
    new_leader: int
    restart_s: float  # until the killed slot is ready again (as a follower)


@dataclass
class Faults:
    cluster: Cluster
    http: httpx.AsyncClient
    kills: list[Kill] = field(default_factory=list)
    isolated: list[dict[str, Any]] = field(default_factory=list)
    started: int = 0  # events of PLAN begun
    finished: bool = False
    # Processes that exited by themselves (status 75: "restart me"), restarted as a
    # supervisor would: (slot, when, status, the log's last error line).
    exits: list[tuple[int, str, int | None, str]] = field(default_factory=list)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)  # a kill and its restart

    async def ready(self, node: Node) -> dict[str, Any]:
        try:
            response = await self.http.get(f"{node.url}/health/ready", timeout=2.0)
            body: dict[str, Any] = response.json()
        except (httpx.HTTPError, ValueError):
            return {}
        return body

    async def leader(self, candidates: list[Node], timeout_s: float = 30.0) -> Node:
        deadline = time.monotonic() + timeout_s
        while True:
            answers = await asyncio.gather(*(self.ready(n) for n in candidates))
            leaders = [
                n for n, a in zip(candidates, answers, strict=True) if a.get("role") == "leader"
            ]
            if len(leaders) == 1:
                return leaders[0]
            if time.monotonic() > deadline:
                raise AssertionError(f"no single leader among {candidates}: {answers}")
            await asyncio.sleep(0.05)

    async def kill_leader(self) -> None:
        nodes = self.cluster.nodes
        leader = await self.leader(nodes)
        survivors = [n for n in nodes if n is not leader]
        async with self.lock:
            at = time.monotonic()
            await asyncio.to_thread(leader.kill)
            successor = await self.leader(survivors)
            failover_s = time.monotonic() - at
            restart_s = await asyncio.to_thread(leader.start)
        kill = Kill(leader.slot, at, failover_s, successor.slot, restart_s)
        self.kills.append(kill)
        print(
            f"  {_clock(time.time() - (time.monotonic() - at))} kill {len(self.kills)}:"
            f" node {leader.slot} SIGKILLed, node {successor.slot}"
            f" leads after {failover_s:.2f} s; node {leader.slot} back in {restart_s:.1f} s"
        )

    async def isolate(self) -> None:
        node = self.cluster.nodes[PROXIED]
        while (await self.ready(node)).get("role") == "leader":
            await self.kill_leader()  # it comes back as a follower
        proxy = self.cluster.proxy
        cut_before = proxy.cut
        at = time.monotonic()
        print(f"  {_clock(time.time())} cutting node {node.slot} off from the database")
        await asyncio.to_thread(proxy.isolate, CUT == "reset")
        seen: Counter[str] = Counter()
        while time.monotonic() - at < ISOLATED_S:
            seen[str((await self.ready(node)).get("status", "no answer"))] += 1
            await asyncio.sleep(0.2)
        await asyncio.to_thread(proxy.heal)
        healed = time.monotonic()
        while (answer := await self.ready(node)).get("status") != "ready":
            assert time.monotonic() - healed < 60, f"node {node.slot} did not recover: {answer}"
            await asyncio.sleep(0.05)
        record = {
            "slot": node.slot,
            "at": at,
            "cut_s": healed - at,
            "connections_cut": proxy.cut - cut_before,
            "status_while_cut": dict(seen),
            "ready_after_s": time.monotonic() - healed,
            "lag_ms": answer.get("lag_ms"),
        }
        self.isolated.append(record)
        print(
            f"  {_clock(time.time() - (time.monotonic() - at))}"
            f" node {node.slot} cut off from the database for {record['cut_s']:.1f} s"
            f" ({record['connections_cut']} connections closed; /health/ready meanwhile:"
            f" {dict(seen)}); ready {record['ready_after_s']:.2f} s after healing"
            f" (lag {record['lag_ms']} ms)"
        )

    def gate(self, done: int, n_txns: int) -> bool:
        """Whether a transaction may start: not far past a fault not begun yet."""
        if self.finished or self.started >= len(PLAN):
            return True
        interval = n_txns // (len(PLAN) + 1)
        return done < interval * (self.started + 1) + interval // 2

    async def supervise(self, done: asyncio.Event) -> None:
        """Restart a process that exited by itself (as its supervisor would), and note it."""
        while not done.is_set():
            await asyncio.sleep(0.2)
            for node in self.cluster.nodes:
                if node.alive() or node.process is None:
                    continue
                async with self.lock:
                    if node.alive():
                        continue  # restarted by a kill meanwhile
                    status = node.process.returncode
                    errors = [ln for ln in node.log().splitlines() if "ERROR" in ln]
                    why = errors[-1][:300] if errors else "(no ERROR line in its log)"
                    self.exits.append((node.slot, _clock(time.time()), status, why))
                    print(f"  {_clock(time.time())} node {node.slot} exited ({status}): {why}")
                    give_up = time.monotonic() + 90
                    while not done.is_set() and time.monotonic() < give_up:
                        try:
                            await asyncio.to_thread(node.start)
                            break
                        except (RuntimeError, TimeoutError):
                            await asyncio.sleep(0.5)  # e.g. still cut off: again
                    else:
                        return  # it will not start: the test fails on the exit

    async def run(self, history: list[Txn], n_txns: int, done: asyncio.Event) -> None:
        interval = n_txns // (len(PLAN) + 1)
        try:
            for i, event in enumerate(PLAN):
                while len(history) < interval * (i + 1):
                    if done.is_set():
                        return
                    await asyncio.sleep(0.02)
                self.started += 1
                if event == "kill":
                    await self.kill_leader()
                else:
                    await self.isolate()
                await asyncio.sleep(MIN_GAP_S)
        finally:
            self.finished = True


# -- the test -------------------------------------------------------------------------------


def _clock(t: float) -> str:
    """Wall-clock time as the servers' logs show it (to the millisecond)."""
    return time.strftime("%H:%M:%S", time.localtime(t)) + f",{int(t % 1 * 1000):03d}"


Shape = tuple[tuple[str, str, Any], ...]


def _shape(ops: Any) -> Shape:
    """A transaction's micro-ops without what its reads returned (to find its call)."""
    return tuple((f, key, value if f == "append" else None) for f, key, value in ops)


@dataclass
class Call:
    """How one transaction was sent: its client, how, when (wall clock) and how it ended."""

    lane: str
    how: str  # "query" or "mutation"
    invoked: float
    completed: float
    result: str


def explain(history: list[Txn], report: Any, calls: dict[Shape, list[Call]], offset: float) -> str:
    """The client, route and times of each transaction an anomaly names.

    Also who appended each value that a read shows twice (duplicate elements).
    ``offset`` turns ``time.monotonic()`` (the history's clock) into wall-clock time.
    """
    by_id = {t.id: t for t in history}
    lines: list[str] = []

    def describe(txn: Txn) -> None:
        lo = (txn.invoke or 0.0) + offset - 0.001
        hi = (txn.complete or float("inf")) + offset + 0.001
        found = [c for c in calls.get(_shape(txn.ops), []) if lo <= c.invoked and c.completed <= hi]
        lines.append(f"  T{txn.id} {txn.status} {txn.ops}")
        for c in found:
            when = f"{_clock(c.invoked)} -> {_clock(c.completed)}"
            lines.append(f"    {c.how} via {c.lane} {when} {c.result}")
        if not found:
            lines.append("    (no call found)")

    named: list[Any] = []
    for anomaly in report.anomalies[:10]:
        lines.append(f"{anomaly.kind}: {anomaly.message}")
        for txn_id in anomaly.txns:
            if txn_id in by_id and txn_id not in named:
                named.append(txn_id)
                describe(by_id[txn_id])
    appends = {(op[1], op[2]): t for t in history for op in t.ops if op[0] == "append"}
    seen: set[tuple[str, int]] = set()
    for txn in history:
        for f, key, read in txn.ops:
            if f != "r" or not read:
                continue
            counts: Counter[int] = Counter(read)
            for value, n in counts.items():
                if n > 1 and (key, value) not in seen:
                    seen.add((key, value))
                    lines.append(f"{key}={value} appears {n} times (read by T{txn.id}):")
                    if (key, value) in appends:
                        describe(appends[key, value])
    return "\n".join(lines)


async def test_elle_across_a_cluster_with_failovers(cluster: Cluster) -> None:
    nodes = cluster.nodes
    n_txns = txn_count(2_000)
    history: list[Txn] = []
    errors: Counter[tuple[str, str]] = Counter()  # (client, error) -> count
    hung: dict[str, str] = {}  # client -> when its first transaction that timed out began
    not_read: list[str] = []  # read-your-writes violations
    calls: dict[Shape, list[Call]] = {}  # how each transaction was sent (diagnostics)
    offset = time.time() - time.monotonic()
    coin = random.Random(SEED)
    async with contextlib.AsyncExitStack() as stack:
        http = await stack.enter_async_context(
            httpx.AsyncClient(timeout=30.0, limits=httpx.Limits(max_connections=64))
        )
        lanes: list[Lane] = []
        clients: list[Client] = []
        for node in nodes:
            for i in range(CLIENTS_PER_NODE):
                client = await stack.enter_async_context(Client(node.url, max_backoff_s=0.5))
                await client.wait_connected()
                clients.append(client)
                lanes.append(WsLane(f"ws{node.slot}.{i}", node.slot, client=client))
            lanes.append(HttpLane(f"http{node.slot}", node.slot, url=node.url, http=http))
        turn = itertools.cycle(lanes)
        faults = Faults(cluster, http)

        def note(ops: list[Op], lane: Lane, how: str, invoked: float, result: str) -> None:
            call = Call(lane.name, how, invoked, time.time(), result)
            calls.setdefault(_shape(ops), []).append(call)

        async def execute(ops: list[Op]) -> list[Any]:
            while not faults.gate(len(history), n_txns):
                await asyncio.sleep(0.02)
            lane = next(turn)
            invoked = time.time()
            keys = read_only_keys(ops)
            how = "query" if keys is not None and coin.random() < 0.5 else "mutation"
            try:
                if keys is not None and how == "query":
                    # Read your writes: every append this client saw acknowledged before
                    # the query was asked must be in what it reads.
                    must = {k: set(lane.acked.get(k, ())) for k in keys}
                    result = await lane.query(keys)
                    for key, read in zip(keys, result, strict=True):
                        missing = must[key] - {int(x) for x in read}
                        if missing:
                            not_read.append(
                                f"{lane.name} (node {lane.slot}) read {key} = {read},"
                                f" missing its acknowledged {sorted(missing)}"
                            )
                    note(ops, lane, how, invoked, f"ok {result}")
                    return result
                result = await lane.mutation(ops)
            except asyncio.CancelledError:  # timed out (run_workload's time limit)
                errors[lane.name, "TimeoutError"] += 1
                if lane.name not in hung:
                    state = lane.state() if isinstance(lane, WsLane) else ""
                    hung[lane.name] = f"{_clock(invoked)} {state}"
                note(ops, lane, how, invoked, "timed out")
                raise
            except Exception as exc:
                name = getattr(exc, "kind", type(exc).__name__)
                errors[lane.name, name] += 1
                note(ops, lane, how, invoked, f"{name}: {str(exc)[:160]}")
                # Back off as a client would: a process that fails at once (cut off from
                # its database) must not burn through the run's transactions.
                await asyncio.sleep(ERROR_PAUSE_S)
                raise
            note(ops, lane, how, invoked, f"ok {result}")
            for f, key, value in ops:
                if f == "append":
                    lane.acked.setdefault(key, set()).add(int(value))
            return result

        done = asyncio.Event()
        faulter = asyncio.create_task(faults.run(history, n_txns, done))
        supervisor = asyncio.create_task(faults.supervise(done))
        print()
        try:
            outcome = await run_workload(
                execute,
                n_txns,
                CONCURRENCY,
                classify,
                Generator(seed=SEED),
                timeout_s=30.0,
                history=history,
            )
        finally:
            done.set()
            await supervisor
            await faulter
        workload_s = outcome.seconds

        # Every process reads every key at the end (through HTTP, after everything else).
        ids = itertools.count(len(history))
        finals: dict[int, dict[str, list[int]]] = {}
        for lane in lanes:
            if not isinstance(lane, HttpLane):
                continue
            state = finals[lane.slot] = {}
            for start in range(0, len(outcome.keys), 64):
                keys = outcome.keys[start : start + 64]
                invoke = time.monotonic()
                values = await lane.query(keys)
                reads = [[int(x) for x in v] for v in values]
                state.update(zip(keys, reads, strict=True))
                ops = [("r", k, r) for k, r in zip(keys, reads, strict=True)]
                history.append(Txn(next(ids), "ok", ops, invoke, time.monotonic()))
        counts = await http.post(
            f"{nodes[0].url}/api/query", json={"path": "lists:documents_per_key", "args": {}}
        )
        documents = counts.json()["value"]
        reconnects = sum(c.reconnects for c in clients)

    print(f"cluster: {outcome.describe()} (workload {workload_s:.1f} s)")
    print("errors by client:", dict(sorted(errors.items())) or "none")
    if hung:
        print("clients with transactions that timed out (first one sent at):", hung)
    print(f"{reconnects} WebSocket reconnections")
    print(
        f"{len(faults.kills)} leader kills; failover (to a new leader's /health/ready) "
        + ", ".join(f"{k.failover_s:.2f}" for k in faults.kills)
        + " s; restarts "
        + ", ".join(f"{k.restart_s:.1f}" for k in faults.kills)
        + " s"
    )
    first_writes = []
    for kill in faults.kills:
        after = [
            t.complete
            for t in history
            if t.status == "ok"
            and t.complete is not None
            and t.invoke is not None
            and t.invoke >= kill.at
            and any(op[0] == "append" for op in t.ops)
        ]
        first_writes.append(min(after) - kill.at if after else float("nan"))
    print(
        "first write acknowledged after each kill (invoked after it): "
        + ", ".join(f"{s:.2f}" for s in first_writes)
        + " s"
    )
    print(f"read your writes: {len(not_read)} queries missed their client's own appends")
    started = time.monotonic()
    report = check(history, realtime=True)
    print(f"checker ({time.monotonic() - started:.1f} s):", report.summary())

    diverged = {
        slot: [k for k in outcome.keys if state.get(k) != finals[nodes[1].slot].get(k)]
        for slot, state in finals.items()
    }
    logs = "\n".join(
        f"--- node {n.slot} log (errors) ---\n"
        + "\n".join(
            line
            for line in n.log().splitlines()
            if "ERROR" in line or "Error" in line or "===" in line
        )[-3000:]
        for n in nodes
    )
    if not report.valid:
        print(report.format(per_kind=5))
        print(explain(history, report, calls, offset))
        print(logs)
    assert len(faults.kills) >= KILLS, (faults.kills, logs)
    assert len(faults.isolated) == 1, (faults.isolated, logs)
    assert all(k.failover_s < 15 for k in faults.kills), faults.kills
    assert all(n.alive() for n in nodes), logs
    assert not faults.exits, f"processes exited by themselves: {faults.exits}"
    assert not hung, f"transactions timed out (30 s) on {hung}\n{logs}"
    assert report.valid, report.format(per_kind=5) + "\n" + logs
    assert not report.of_kind("lost-append")
    assert outcome.statuses["ok"] >= 0.85 * len(outcome.history), outcome.describe()
    assert min(report.edge_counts.get(k, 0) for k in ("ww", "wr", "rw", "rt")) > 20, report
    assert not not_read, "read-your-writes:\n" + "\n".join(not_read[:20])
    assert not any(diverged.values()), diverged
    assert {int(n) for n in documents.values()} == {1}, documents
