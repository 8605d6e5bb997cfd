"""A server that no client can take down: attacks on a real server, one client each.

Each test starts ``python -m reactive.server --app tests/server/attack_app`` on a fresh
SQLite database (``start_server`` of conftest.py), attacks it from one socket in a loop
bounded by count and time, and checks:

* the attacker gets its error (a ``FatalError``, an error response, a close code) or is cut
  off (or, for a client that never reads, the server stops reading from it);
* meanwhile another client is served: a thread (``attack_harness.Watch``) sends
  ``POST /api/query`` of a cheap query and ``GET /health`` back to back and the worst
  latency of each must stay under a bound;
* the server's resident set size (``VmRSS``) stays bounded;
* afterwards SIGTERM stops the server promptly and ``python -m reactive check`` finds the
  database clean.

Items (issue "a server that no client can take down"):

1. backpressure: a socket that keeps sending and never reads; and ``--send-timeout-s``:
   a socket whose client reads nothing is closed, its connection let go;
2. invalidation cost: 10,000 live queries on one socket, all invalidated by each write;
3. time limits: spinning and sleeping functions answer ``FunctionTimeoutError``;
4. in-flight limits: 2,000 never-returning actions; more than 1,000 queued mutations;
5. query-set size: one ``ModifyQuerySet`` adding 100,000 queries;
6. ``query_batch`` size and cost;
7. malformed frames.

Bounds are generous for a noisy 2-core machine but far below what a stalled event loop
shows (seconds): latency 1 s for most probes, 0.3 s for ``/health`` next to a function over
its time limit (the issue measured 1.7 s there), RSS growth under 200 MiB and RSS under
400 MiB (the server idles near 40 MiB).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import websockets
from attack_harness import (
    ATTACK_APP,
    MIB,
    RawSocket,
    Watch,
    action_frame,
    add,
    check_db,
    connect_frame,
    cpu_seconds,
    modify,
    mutation_frame,
    remove,
    rss_bytes,
    server_holds_connection,
    stop_promptly,
    ws_frame,
)
from websockets.exceptions import ConnectionClosed

if TYPE_CHECKING:
    from conftest import ServerProcess

StartServer = Callable[..., "ServerProcess"]

RSS_GROWTH_MAX = 200 * MIB
RSS_MAX = 400 * MIB
LATENCY_MAX_S = 1.0  # another client's query or /health while an attack runs
STOP_WITHIN_S = 10.0  # SIGTERM to exit
FUNCTION_LIMIT_S = 1.0  # the default --function-time-limit-s
TIMEOUT_ANSWER_S = FUNCTION_LIMIT_S + 1.5  # "within ~limit + 1 s", plus noise
HEALTH_NEXT_TO_TIMEOUT_S = 0.3
QUERY_NEXT_TO_TIMEOUT_S = 0.5
IDLE_CPU_MAX = 0.6  # server CPU-seconds per second after a timed-out function, probed


# -- helpers ---------------------------------------------------------------------------------------


def ws_url(server: ServerProcess) -> str:
    return f"ws://127.0.0.1:{server.port}/api/sync"


async def ws_connect(server: ServerProcess) -> Any:
    ws = await websockets.connect(
        ws_url(server),
        open_timeout=30,
        ping_interval=None,
        compression=None,
        max_size=2**26,
        max_queue=None,
    )
    await ws.send(connect_frame())
    return ws


def http_mutation(server: ServerProcess, path: str, args: dict[str, Any]) -> Any:
    r = httpx.post(f"{server.url}/api/mutation", json={"path": path, "args": args}, timeout=60)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "success", body
    return body["value"]


def http_query(server: ServerProcess, path: str, args: dict[str, Any]) -> Any:
    r = httpx.post(f"{server.url}/api/query", json={"path": path, "args": args}, timeout=60)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "success", body
    return body["value"]


def log_tail(server: ServerProcess, chars: int = 3000) -> str:
    return server.log()[-chars:]


def assert_served(w: Watch, bound_s: float = LATENCY_MAX_S, health_s: float | None = None) -> None:
    """Another client was served meanwhile: every probe answered, within the bounds."""
    assert w.count("query") >= 3 and w.count("health") >= 3, w.summary()
    assert not w.failures, (w.failures[:5], w.summary())
    assert w.worst("query") <= bound_s, f"a query waited too long: {w.summary()}"
    assert w.worst("health") <= (health_s or bound_s), f"/health waited too long: {w.summary()}"


def assert_rss_bounded(w: Watch) -> None:
    assert w.rss_peak - w.rss_start < RSS_GROWTH_MAX, w.summary()
    assert w.rss_peak < RSS_MAX, w.summary()


def finish(server: ServerProcess, *, require_exit_0: bool = True) -> None:
    """SIGTERM: the server exits by itself within STOP_WITHIN_S; then the database checks
    clean."""
    took, by_itself = stop_promptly(server.process, STOP_WITHIN_S)
    assert by_itself, (
        f"SIGTERM did not stop the server within {STOP_WITHIN_S} s (killed); "
        f"log tail:\n{log_tail(server)}"
    )
    if require_exit_0:
        assert server.process.returncode == 0, (
            f"exit code {server.process.returncode} after SIGTERM ({took:.1f} s); "
            f"log tail:\n{log_tail(server)}"
        )
    checked = check_db(server.db_url)
    assert checked.returncode == 0, checked.stdout + checked.stderr


# -- 1. backpressure -------------------------------------------------------------------------------

BACKPRESSURE_S = 10.0
BACKPRESSURE_FRAMES = 40_000
SEND_TIMEOUT_S = 2.0  # the server's --send-timeout-s in this test
ATTACKER_SEND_TIMEOUT_S = 3.0  # a send blocked this long: the server stopped reading
RELEASE_WITHIN_S = SEND_TIMEOUT_S + 20.0


def test_backpressure_client_that_never_reads(start_server: StartServer) -> None:
    """A socket sending ModifyQuerySet add/remove pairs (each answered by a ~64 KiB
    transition) and never reading: the server's memory stays bounded, it cuts the socket off
    or stops reading from it, and another client is served meanwhile."""
    server = start_server(ATTACK_APP, "--send-timeout-s", str(SEND_TIMEOUT_S))
    pad = "y" * 16_384  # each frame is ~16 KiB: a server buffering frames grows fast
    attacker = RawSocket(server.port)
    outcome, sent, sent_bytes = "", 0, 0
    try:
        attacker.send_text(connect_frame(), ATTACKER_SEND_TIMEOUT_S)
        with Watch(server.url, server.process.pid) as w:
            deadline = time.monotonic() + BACKPRESSURE_S
            while time.monotonic() < deadline and sent < BACKPRESSURE_FRAMES:
                mods = [add(sent, "hot:big", {"i": float(sent), "pad": pad})]
                if sent:
                    mods.append(remove(sent - 1))
                frame = modify(sent, mods)
                try:
                    attacker.send_text(frame, ATTACKER_SEND_TIMEOUT_S)
                except TimeoutError:
                    outcome = "blocked"  # the server stopped reading (TCP backpressure)
                    break
                except OSError as exc:
                    outcome = f"cut off ({exc.__class__.__name__})"
                    break
                sent += 1
                sent_bytes += len(frame)
            # Hold the unread socket for the rest of the window; RSS is still sampled.
            while time.monotonic() < deadline:
                time.sleep(0.1)
        print(
            f"\nbackpressure: {outcome or 'never blocked nor cut off'} after {sent} frames "
            f"({sent_bytes / MIB:.0f} MiB); attacker's TCP state at the end "
            f"{attacker.tcp_state()}; {w.summary()}"
        )
        assert outcome, (
            f"the server read all {sent} frames ({sent_bytes / MIB:.0f} MiB) in "
            f"{BACKPRESSURE_S} s from a socket that never reads: it neither stopped reading "
            f"nor closed the socket; {w.summary()}"
        )
        assert_rss_bounded(w)
        assert_served(w)
        # SIGTERM with the unread socket still open must stop the server promptly.
        finish(server)
    finally:
        attacker.close()


def test_send_timeout_releases_a_socket_that_never_reads(start_server: StartServer) -> None:
    """--send-timeout-s: a socket whose client stops reading is closed once a send has
    waited that long ("then the socket is closed"): the server lets go of the connection
    (its file descriptor and its kernel buffers), not only of the session.

    One ~13 MiB transition is more than the kernel buffers hold, so the server's send
    cannot finish. The bound leaves room for a server that notices only at its next send
    (the idle Ping, 15 s): RELEASE_WITHIN_S = send timeout + 20 s."""
    server = start_server(ATTACK_APP, "--send-timeout-s", str(SEND_TIMEOUT_S))
    attacker = RawSocket(server.port)
    client_port = attacker.sock.getsockname()[1]
    try:
        attacker.send_text(connect_frame(), ATTACKER_SEND_TIMEOUT_S)
        # 200 results of ~64 KiB: ~13 MiB to send to a client that reads nothing.
        attacker.send_text(
            modify(0, [add(q, "hot:big", {"i": float(q)}) for q in range(200)]),
            ATTACKER_SEND_TIMEOUT_S,
        )
        t0 = time.monotonic()
        assert server_holds_connection(server.port, client_port)
        with Watch(server.url, server.process.pid) as w:
            deadline = t0 + RELEASE_WITHIN_S
            held = True
            while held and time.monotonic() < deadline:
                time.sleep(0.2)
                held = server_holds_connection(server.port, client_port)
        released_s = time.monotonic() - t0
        print(
            f"\nsend timeout {SEND_TIMEOUT_S} s: server "
            f"{'still holds' if held else 'released'} the connection after {released_s:.1f} s; "
            f"attacker's TCP state {attacker.tcp_state()}; {w.summary()}"
        )
        assert not held, (
            f"the server still holds the connection of a client that has read nothing for "
            f"{released_s:.1f} s (--send-timeout-s {SEND_TIMEOUT_S}); log tail:\n"
            f"{log_tail(server, 800)}"
        )
        assert_served(w)
        finish(server)
    finally:
        attacker.close()


# -- 2. invalidation cost --------------------------------------------------------------------------

LIVE_QUERIES = 10_000
ADD_CHUNK = 1_000
WRITES = 5
WRITE_LATENCY_MAX_S = 1.5  # mutation start -> return (includes the durable commit)
SETUP_TIMEOUT_S = 90.0
UPDATE_TIMEOUT_S = 60.0


class TransitionReader:
    """Reads a socket's frames in a task: the latest value of each query, and every other
    frame kept by type."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.values: dict[int, Any] = {}
        self.failed: dict[int, str] = {}
        self.frames: dict[str, list[dict[str, Any]]] = {}
        self.transitions = 0
        self.closed: ConnectionClosed | None = None
        self.close_code: int | None = None
        self.changed = asyncio.Event()
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        try:
            async for text in self.ws:
                msg = json.loads(text)
                kind = msg.get("type", "?")
                if kind == "Transition":
                    self.transitions += 1
                    for m in msg["modifications"]:
                        if m["type"] == "QueryUpdated":
                            self.values[m["queryId"]] = m["value"]
                        elif m["type"] == "QueryFailed":
                            self.failed[m["queryId"]] = m["errorMessage"]
                        elif m["type"] == "QueryRemoved":
                            self.values.pop(m["queryId"], None)
                else:
                    self.frames.setdefault(kind, []).append(msg)
                self.changed.set()
        except ConnectionClosed as exc:
            self.closed = exc
        finally:
            self.close_code = getattr(self.ws, "close_code", None)
            if self.close_code is None and self.closed is not None and self.closed.rcvd:
                self.close_code = self.closed.rcvd.code
            self.changed.set()

    async def until(self, predicate: Callable[[], bool], timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while not predicate():
            left = deadline - time.monotonic()
            if left <= 0 or (self.task.done() and not predicate()):
                return predicate()
            self.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), min(left, 0.5))
        return True

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.ws.close()
        self.task.cancel()
        with contextlib.suppress(BaseException):
            await self.task


async def test_invalidation_of_10k_live_queries_on_one_socket(start_server: StartServer) -> None:
    """One socket holds 10,000 live queries reading the hot document; another client writes
    it: the writer's mutations and a third client's queries stay fast, and the socket gets
    every query's new value."""
    server = start_server(ATTACK_APP)
    http_mutation(server, "hot:write", {"n": 0.0})
    reader = TransitionReader(await ws_connect(server))
    try:
        started = time.monotonic()
        for chunk in range(LIVE_QUERIES // ADD_CHUNK):
            mods = [
                add(q, "hot:read", {"i": float(q)})
                for q in range(chunk * ADD_CHUNK, (chunk + 1) * ADD_CHUNK)
            ]
            await reader.ws.send(modify(chunk, mods))
        ok = await reader.until(
            lambda: len(reader.values) + len(reader.failed) >= LIVE_QUERIES, SETUP_TIMEOUT_S
        )
        setup_s = time.monotonic() - started
        assert ok, (
            f"{len(reader.values)} of {LIVE_QUERIES} queries answered in {setup_s:.0f} s; "
            f"closed: {reader.closed}, frames: "
            f"{ {k: v[:2] for k, v in reader.frames.items()} }; log:\n{log_tail(server)}"
        )
        assert not reader.failed, list(reader.failed.items())[:3]
        assert all(v["n"] == 0.0 for v in reader.values.values())

        write_latencies: list[float] = []
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as http:
            with Watch(server.url, server.process.pid) as w:
                for k in range(1, WRITES + 1):
                    t0 = time.monotonic()
                    r = await http.post(
                        "/api/mutation", json={"path": "hot:write", "args": {"n": float(k)}}
                    )
                    write_latencies.append(time.monotonic() - t0)
                    assert r.status_code == 200 and r.json()["status"] == "success", r.text
                    await asyncio.sleep(0.3)
                last = float(WRITES)
                t_last = time.monotonic()
                updated = await reader.until(
                    lambda: (
                        sum(1 for v in reader.values.values() if v["n"] == last) == LIVE_QUERIES
                    ),
                    UPDATE_TIMEOUT_S,
                )
                update_s = time.monotonic() - t_last
        fresh = sum(1 for v in reader.values.values() if v["n"] == last)
        print(
            f"\ninvalidation: {LIVE_QUERIES} queries set up in {setup_s:.1f} s; writes "
            f"{', '.join(f'{x * 1000:.0f}' for x in write_latencies)} ms; all {fresh} updated "
            f"{update_s:.1f} s after the last write; {w.summary()}"
        )
        assert updated, (
            f"only {fresh} of {LIVE_QUERIES} queries got the last write's value within "
            f"{UPDATE_TIMEOUT_S} s (closed: {reader.closed})"
        )
        assert max(write_latencies) <= WRITE_LATENCY_MAX_S, write_latencies
        assert_served(w)
        assert_rss_bounded(w)
    finally:
        await reader.close()
    finish(server)


# -- 3. time limits --------------------------------------------------------------------------------


async def _call_ws_mutation(server: ServerProcess, path: str) -> tuple[bool, str]:
    reader = TransitionReader(await ws_connect(server))
    try:
        await reader.ws.send(mutation_frame(0, path, {}))
        await reader.until(lambda: "MutationResponse" in reader.frames, 30.0)
        responses = reader.frames.get("MutationResponse")
        assert responses, f"no MutationResponse (closed: {reader.closed}, {reader.frames})"
        return bool(responses[0]["success"]), str(responses[0]["result"])
    finally:
        await reader.close()


async def _call_ws_query(server: ServerProcess, path: str) -> tuple[bool, str]:
    reader = TransitionReader(await ws_connect(server))
    try:
        await reader.ws.send(modify(0, [add(0, path, {})]))
        await reader.until(lambda: 0 in reader.values or 0 in reader.failed, 30.0)
        if 0 in reader.failed:
            return False, reader.failed[0]
        assert 0 in reader.values, f"no result (closed: {reader.closed}, {reader.frames})"
        return True, str(reader.values[0])
    finally:
        await reader.close()


async def _call_http(server: ServerProcess, kind: str, path: str) -> tuple[bool, str]:
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        r = await http.post(f"/api/{kind}", json={"path": path, "args": {}})
    assert r.status_code == 200, r.text
    body = r.json()
    if body["status"] == "success":
        return True, str(body["value"])
    return False, str(body["errorMessage"])


@pytest.mark.parametrize(
    "path, kind, via",
    [
        ("slow:spin", "mutation", "ws"),  # plain def, while True: pass
        ("slow:spin_async", "mutation", "http"),  # async def: writes, then spins
        ("slow:sleepy", "query", "ws"),  # plain def, time.sleep(2)
        ("slow:burn", "query", "http"),  # async def, 5 s of CPU without awaiting
    ],
)
async def test_time_limit(start_server: StartServer, path: str, kind: str, via: str) -> None:
    """A function past the time limit answers FunctionTimeoutError within ~limit + 1 s;
    /health and other queries stay fast meanwhile; the server still runs mutations after,
    nothing the timed-out mutation wrote is visible, and SIGTERM stops the server."""
    server = start_server(ATTACK_APP)
    http_mutation(server, "hot:write", {"n": 1.0})
    with Watch(server.url, server.process.pid, pause_s=0.01) as w:
        await asyncio.sleep(0.3)  # a few probes before
        t0 = time.monotonic()
        if via == "ws":
            call = _call_ws_mutation if kind == "mutation" else _call_ws_query
            ok, message = await asyncio.wait_for(call(server, path), 60)
        else:
            ok, message = await asyncio.wait_for(_call_http(server, kind, path), 60)
        answered_s = time.monotonic() - t0
        # Probes after the answer, and the server's CPU use: a function left running (a
        # thread still spinning) would show as ~1 CPU-second per second.
        await asyncio.sleep(0.5)
        cpu0, t1 = cpu_seconds(server.process.pid), time.monotonic()
        await asyncio.sleep(2.0)
        cpu_after = (cpu_seconds(server.process.pid) - cpu0) / (time.monotonic() - t1)
    print(
        f"\n{path} via {via}: answered in {answered_s:.2f} s: success={ok} "
        f"{message[:160]!r}; server CPU afterwards {cpu_after:.2f} s/s; {w.summary()}"
    )
    assert not ok and "FunctionTimeoutError" in message, (ok, message[:500], answered_s)
    assert answered_s <= TIMEOUT_ANSWER_S, answered_s
    assert_served(w, QUERY_NEXT_TO_TIMEOUT_S, HEALTH_NEXT_TO_TIMEOUT_S)
    # "ran past its time limit and was stopped" (FunctionTimeoutError): nothing keeps
    # burning CPU afterwards (the probing client alone costs the server ~0.1-0.2 s/s).
    assert cpu_after < IDLE_CPU_MAX, f"the server still burns {cpu_after:.2f} CPU-s/s"

    # The server still commits mutations, promptly.
    t0 = time.monotonic()
    assert http_mutation(server, "hot:write", {"n": 2.0}) == 2.0
    assert time.monotonic() - t0 <= LATENCY_MAX_S, time.monotonic() - t0
    assert http_query(server, "hot:ping", {}) == 2.0
    # What the timed-out mutation wrote never became visible.
    assert http_query(server, "slow:marks", {}) == 0.0
    # After a spinning mutation, exit code 0 is not required, only a prompt exit.
    finish(server, require_exit_0=kind != "mutation")


# -- 4. in-flight limits ---------------------------------------------------------------------------

ACTIONS = 2_000
MAX_INFLIGHT_ACTIONS = 64  # the default --max-inflight-actions
MUTATIONS_QUEUED = 1_500  # over the default --max-queued-mutations (1,000)


async def test_too_many_inflight_actions(start_server: StartServer) -> None:
    """2,000 never-returning actions on one socket: all past the in-flight limit answer
    TooManyRequestsError, none succeeds, memory stays bounded, others are served."""
    server = start_server(ATTACK_APP)
    frames = [action_frame(i, "slow:forever", {}) for i in range(ACTIONS)]
    reader = TransitionReader(await ws_connect(server))

    def refused() -> list[dict[str, Any]]:
        return [r for r in reader.frames.get("ActionResponse", []) if not r["success"]]

    try:
        with Watch(server.url, server.process.pid) as w:
            t0 = time.monotonic()
            for frame in frames:
                await reader.ws.send(frame)
            await reader.until(lambda: len(refused()) >= ACTIONS - MAX_INFLIGHT_ACTIONS, 30.0)
            took = time.monotonic() - t0
            await asyncio.sleep(1.0)
        responses = reader.frames.get("ActionResponse", [])
        no = refused()
        print(
            f"\nactions: {len(responses)} ActionResponses in {took:.1f} s, {len(no)} refused "
            f"(e.g. {no[0]['result'][:120] if no else None!r}); closed: {reader.closed}; "
            f"{w.summary()}"
        )
        assert not reader.task.done(), f"the socket was closed: {reader.close_code}"
        assert len(no) >= ACTIONS - MAX_INFLIGHT_ACTIONS, (
            f"{len(no)} refusals of {ACTIONS} never-returning actions; frames "
            f"{ {k: len(v) for k, v in reader.frames.items()} }"
        )
        assert all("TooManyRequestsError" in str(r["result"]) for r in no), no[0]
        assert not [r for r in responses if r["success"]]
        assert_rss_bounded(w)
        assert_served(w)
    finally:
        await reader.close()
    finish(server)


async def test_too_many_queued_mutations_closes_1013(start_server: StartServer) -> None:
    """A slow mutation followed by 1,500 more on one socket: more than 1,000 queued closes
    the socket with 1013 (try again later); others are served."""
    server = start_server(ATTACK_APP)
    frames = [mutation_frame(0, "slow:nap", {})] + [
        mutation_frame(i, "hot:write", {"n": float(i)}) for i in range(1, MUTATIONS_QUEUED + 1)
    ]
    reader = TransitionReader(await ws_connect(server))
    try:
        with Watch(server.url, server.process.pid) as w:
            sent = 0
            with contextlib.suppress(ConnectionClosed):
                for frame in frames:
                    await reader.ws.send(frame)
                    sent += 1
            await reader.until(lambda: reader.task.done(), 20.0)
        closed = reader.closed
        code = reader.close_code
        print(
            f"\nqueued mutations: sent {sent}, "
            f"{len(reader.frames.get('MutationResponse', []))} answered, close {code} "
            f"({closed}); {w.summary()}"
        )
        assert reader.task.done(), "the socket was not closed"
        assert code == 1013, (code, closed)
        assert_served(w)
        assert_rss_bounded(w)
    finally:
        await reader.close()
    finish(server)


# -- 5. query-set size -----------------------------------------------------------------------------

HUGE_QUERY_SET = 100_000
FATAL_WITHIN_S = 3.0
STALL_MAX_S = 0.5


async def test_query_set_of_100k_is_refused_quickly(start_server: StartServer) -> None:
    """One ModifyQuerySet adding 100,000 queries: a FatalError naming TooManyRequestsError,
    quickly, without stalling the event loop for other clients."""
    server = start_server(ATTACK_APP)
    frame = modify(0, [add(q, "hot:read", {"i": float(q)}) for q in range(HUGE_QUERY_SET)])
    reader = TransitionReader(await ws_connect(server))
    try:
        with Watch(server.url, server.process.pid, pause_s=0.01) as w:
            await asyncio.sleep(0.3)
            t0 = time.monotonic()
            await reader.ws.send(frame)
            await reader.until(lambda: "FatalError" in reader.frames, 30.0)
            took = time.monotonic() - t0
            await reader.until(lambda: reader.task.done(), 5.0)
            await asyncio.sleep(0.5)
        fatal = reader.frames.get("FatalError", [])
        print(
            f"\nquery set of {HUGE_QUERY_SET} ({len(frame) / MIB:.1f} MiB frame): "
            f"{fatal[0]['error'][:160] if fatal else 'no FatalError'!r} after {took:.2f} s; "
            f"{len(reader.values)} results; closed {reader.task.done()}; {w.summary()}"
        )
        assert fatal and "TooManyRequestsError" in fatal[0]["error"], (
            fatal,
            len(reader.values),
            reader.closed,
        )
        assert took <= FATAL_WITHIN_S, took
        assert reader.task.done(), "the socket was not closed after its FatalError"
        assert_served(w, STALL_MAX_S)
        assert_rss_bounded(w)
    finally:
        await reader.close()
    finish(server)


# -- 6. query_batch --------------------------------------------------------------------------------

ITEMS = 5_000  # items:scan reads them all and works ~50 ms
BATCH_MAX = 100  # the default --max-query-batch


def test_query_batch_limits(start_server: StartServer) -> None:
    """200 entries answer 400 TooManyRequests at once; 100 heavy entries run while other
    clients are still answered within the bound."""
    server = start_server(ATTACK_APP)
    for _ in range(ITEMS // 1000):
        http_mutation(server, "items:seed", {"count": 1000.0})
    http_mutation(server, "hot:write", {"n": 1.0})
    entry = {"path": "items:scan", "args": {}}
    with httpx.Client(base_url=server.url, timeout=120) as http:
        t0 = time.monotonic()
        single = http.post("/api/query", json=entry)
        one_s = time.monotonic() - t0
        assert single.status_code == 200 and single.json()["status"] == "success", single.text

        t0 = time.monotonic()
        r = http.post("/api/query_batch", json={"queries": [entry] * (2 * BATCH_MAX)})
        refused_s = time.monotonic() - t0
        print(
            f"\nquery_batch of {2 * BATCH_MAX}: {r.status_code} {r.text[:200]} in {refused_s:.2f} s"
        )
        assert r.status_code == 400, r.text[:500]
        assert r.json()["code"] == "TooManyRequests", r.text[:500]
        assert refused_s <= LATENCY_MAX_S, refused_s

        with Watch(server.url, server.process.pid) as w:
            time.sleep(0.3)
            t0 = time.monotonic()
            r = http.post("/api/query_batch", json={"queries": [entry] * BATCH_MAX})
            batch_s = time.monotonic() - t0
            time.sleep(0.3)
    print(
        f"query_batch of {BATCH_MAX} scans (one alone {one_s * 1000:.0f} ms): {r.status_code} "
        f"in {batch_s:.2f} s; {w.summary()}"
    )
    assert r.status_code == 200, r.text[:500]
    results = r.json()["results"]
    assert len(results) == BATCH_MAX
    assert all(x["status"] == "success" for x in results), [
        x for x in results if x["status"] != "success"
    ][:2]
    assert_served(w)
    assert_rss_bounded(w)
    finish(server)


# -- 7. malformed frames ---------------------------------------------------------------------------

DEEP = 10_000

MALFORMED: list[tuple[str, str | bytes]] = [
    ("invalid JSON", '{"type": "Mutation", "requestId": 0,'),
    ("binary frame", b'{"type":"Mutation","requestId":0,"udfPath":"hot:write","args":[{}]}'),
    (
        "huge float",
        '{"type":"Mutation","requestId":1e400,"udfPath":"hot:write","args":[{"n":1}]}',
    ),
    (
        "huge integer",
        '{"type":"ModifyQuerySet","baseVersion":0,"newVersion":1,"modifications":'
        '[{"type":"Add","queryId":' + "9" * 100_000 + ',"udfPath":"hot:read",'
        '"args":[{"i":0}]}]}',
    ),
    ("deep nesting", "[" * DEEP + "]" * DEEP),
    (
        "deep nesting in args",
        '{"type":"Mutation","requestId":0,"udfPath":"hot:write","args":[{"n":'
        + "[" * DEEP
        + "]" * DEEP
        + "}]}",
    ),
]


async def test_malformed_frames_end_only_their_socket(start_server: StartServer) -> None:
    """Each malformed frame ends its own socket (FatalError and/or close); a bystander socket
    and HTTP clients are served throughout."""
    server = start_server(ATTACK_APP)
    http_mutation(server, "hot:write", {"n": 1.0})
    bystander = TransitionReader(await ws_connect(server))
    outcomes: dict[str, str] = {}
    try:
        await bystander.ws.send(modify(0, [add(0, "hot:read", {"i": 0.0})]))
        assert await bystander.until(lambda: 0 in bystander.values, 30.0)
        with Watch(server.url, server.process.pid) as w:
            for name, payload in MALFORMED:
                attacker = TransitionReader(await ws_connect(server))
                try:
                    await attacker.ws.send(payload)
                    closed = await attacker.until(lambda a=attacker: a.task.done(), 10.0)
                    fatal = attacker.frames.get("FatalError", [])
                    code = attacker.close_code
                    outcomes[name] = (
                        f"{'closed' if closed else 'OPEN'} (code {code}), "
                        f"FatalError: {fatal[0]['error'][:80] if fatal else None!r}, "
                        f"other frames: {sorted(attacker.frames)}"
                    )
                finally:
                    await attacker.close()
            # A valid frame nested deep but within the JSON parser's limit: any answer is
            # fine, but the server must survive it.
            attacker = TransitionReader(await ws_connect(server))
            try:
                await attacker.ws.send(
                    '{"type":"Mutation","requestId":0,"udfPath":"hot:write","args":[{"n":'
                    + "[" * 500
                    + "]" * 500
                    + "}]}"
                )
                await attacker.until(
                    lambda: "MutationResponse" in attacker.frames or attacker.task.done(), 10.0
                )
                outcomes["deep args within parser limit"] = (
                    f"{sorted(attacker.frames)}, closed: {attacker.task.done()}"
                )
            finally:
                await attacker.close()
            # The bystander still works: its mutation commits and its query updates.
            await bystander.ws.send(mutation_frame(0, "hot:write", {"n": 7.0}))
            got = await bystander.until(
                lambda: (
                    bystander.values.get(0, {}).get("n") == 7.0
                    and "MutationResponse" in bystander.frames
                ),
                15.0,
            )
        print("\nmalformed frames:\n" + "\n".join(f"  {k}: {v}" for k, v in outcomes.items()))
        print(f"  bystander: {got}, {bystander.frames.get('MutationResponse')}; {w.summary()}")
        assert server.process.poll() is None, f"the server died; log:\n{log_tail(server)}"
        not_closed = [k for k, v in outcomes.items() if v.startswith("OPEN")]
        assert not not_closed, outcomes
        assert got and bystander.frames["MutationResponse"][0]["success"], (
            f"the bystander's query holds {bystander.values.get(0)} after "
            f"{bystander.transitions} transitions; frames {bystander.frames}"
        )
        assert not bystander.task.done(), bystander.closed
        assert_served(w)
        assert_rss_bounded(w)
    finally:
        await bystander.close()
    finish(server)


def test_harness_measures_rss() -> None:
    """The RSS helper reads this very process (a sanity check of the measurement)."""
    import os

    assert rss_bytes(os.getpid()) > 10 * MIB
    assert ws_frame(1, b"x")[:2] == b"\x81\x81"


# -- 4c. bytes held by queued requests -------------------------------------------------------

BIG_ARG = 1 << 20
BIG_FRAMES = 150
INFLIGHT_BUDGET = 64 * MIB


async def test_queued_big_frames_are_not_read_past_the_budget(start_server: StartServer) -> None:
    """150 mutations of 1 MiB each, each taking 0.8 s, sent as fast as TCP takes them: the
    server holds at most its per-socket budget (64 MiB) of queued frames, then stops
    reading the socket (the attacker's send blocks) instead of holding 150 MiB; other
    clients are served meanwhile."""
    server = start_server(ATTACK_APP)
    raw = await asyncio.to_thread(RawSocket, server.port)
    blob = "b" * BIG_ARG
    try:
        with Watch(server.url, server.process.pid) as w:
            await asyncio.to_thread(raw.send_text, connect_frame(), 5.0)
            sent = 0

            def flood() -> None:
                nonlocal sent
                with contextlib.suppress(TimeoutError, OSError):
                    for i in range(BIG_FRAMES):
                        raw.send_text(mutation_frame(i, "slow:nap_with", {"blob": blob}), 0.5)
                        sent += 1

            await asyncio.to_thread(flood)
            await asyncio.sleep(1.0)
        print(f"\nbig frames: sent {sent} of {BIG_FRAMES} (1 MiB each); {w.summary()}")
        # The budget, the frames read ahead and the kernel's socket buffers.
        assert sent < 64 + 4 + 32, f"the server read {sent} frames: nothing held it back"
        assert w.rss_peak - w.rss_start < INFLIGHT_BUDGET + 64 * MIB, w.summary()
        assert_served(w)
    finally:
        raw.close()
    finish(server)
