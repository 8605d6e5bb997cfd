"""Benchmark 7: fan-out, one mutation to 1,000 subscribed WebSocket clients.

Reactive: ``python -m reactive.server`` in a subprocess (fresh SQLite database, the app of
``benches/benchapp``). The benchmark process holds 1,000 sockets speaking the sync protocol
raw (``servers.LightClient``: a minimal RFC 6455 client on an ``asyncio.Protocol``, no
task or queue per socket), each subscribed to ``live:latest`` with the same ``x``, so the
server runs the query once per commit and sends the same ``QueryUpdated`` to every socket.
One more socket (A) sends the ``Mutation`` (``docs:insert`` with that ``x``, its ``body``
carrying a marker unique to the repetition). Figure: from just before A's frame is written
to when the last of the 1,000 sockets has read a frame holding the marker.

Anchor (same run, repetitions interleaved): a bare ``websockets`` server in a subprocess
(``benches/anchor_servers.py --kind ws``) and 1,000 ``LightClient`` sockets in the same
process; one more socket sends ``B<payload>`` and the server sends ``<payload>`` to every
other socket with ``websockets.broadcast``. The payload is as long as reactive's transition
frame and carries the marker. Figure: from just before the trigger is written until the last
socket has read the payload. A context row does the same with a loop of ``await ws.send``.

Both sides have the same client process, the same trigger (one frame from one socket) and
the same receive path, so the ratio compares the servers: ratio = anchor ÷ reactive (the
target is ≥ 0.8: at most 1.25x the time of a bare broadcast). Figures are medians of the
repetitions (10 full, 5 quick).

Placement (since 2026-12-08): with two CPUs or more, both servers run on CPU 0 and the
client process on CPU 1, and the client's event loop is uvloop's when it is installed (it
is a dependency of the server). Before, nothing was pinned and the client ran on asyncio's
default loop, which needs about 15 µs of CPU per received frame: the client was then the
slower side, and the scheduler often woke it on the server's CPU (run-queue waits of 7-8 ms
per fan-out measured on either side), so the same code measured anywhere from 0.45x to
1.35x between runs. Pinned, with a client that receives a frame in about 7 µs, the elapsed
time follows the servers' CPU and repeats within a few percent.

More rows: the server CPU per fan-out (``/proc/<pid>/task/*/schedstat``, steadier than
elapsed time on a shared machine) and the server memory per subscribed socket (``VmRSS``
with the sockets open minus before they connected, ÷ sockets), both beside the
``websockets`` server's. Full runs repeat everything with 10,000 sockets per side (5
repetitions; 20,000 sockets do not fit the client process's open-file limit together, so
the two sides are measured one after the other) and add the server CPU over 5 s with the
10,000 sockets open and silent.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import statistics
import struct
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import Row, log, median, standalone
from fixtures import BODY
from servers import (
    LightClient,
    anchor_server,
    connect_many,
    cpu_seconds,
    pin_process,
    pinned_here,
    raise_nofile,
    reactive_server,
    rss_kib,
)

CLIENTS = 1000
SERVER_CPUS = {0}
CLIENT_CPUS = {1}
BIG = 10_000
X_FAN = 920_001
TIMEOUT_S = 30.0


class Receivers:
    """``count`` sockets that stamp the time they first read a frame holding ``marker``."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.marker: bytes | None = None
        self.times: list[float | None] = [None] * count
        self.got = 0
        self.size = 0
        self.done: asyncio.Future[None] | None = None
        self.sockets: list[LightClient] = []

    def callback(self, i: int) -> Any:
        times = self.times

        def on_text(payload: bytes) -> None:
            marker = self.marker
            if marker is None or times[i] is not None or marker not in payload:
                return
            times[i] = time.perf_counter()
            self.got += 1
            if i == 0:
                self.size = len(payload)
            if self.got == self.count and self.done is not None and not self.done.done():
                self.done.set_result(None)

        return on_text

    def arm(self, marker: bytes) -> asyncio.Future[None]:
        self.marker = marker
        self.times[:] = [None] * self.count
        self.got = 0
        self.done = asyncio.get_running_loop().create_future()
        return self.done

    async def wait(self, fut: asyncio.Future[None], timeout_s: float = TIMEOUT_S) -> bool:
        try:
            await asyncio.wait_for(asyncio.shield(fut), timeout_s)
            return True
        except TimeoutError:
            return False

    def figures(self, start: float) -> dict[str, float]:
        got = sorted(t - start for t in self.times if t is not None)
        return {
            "last_ms": got[-1] * 1000 if got else float("nan"),
            "first_ms": got[0] * 1000 if got else float("nan"),
            "median_ms": statistics.median(got) * 1000 if got else float("nan"),
            "received": len(got),
            "frame_bytes": self.size,
        }

    def close(self) -> None:
        for s in self.sockets:
            s.close()


def _int64(n: int) -> dict[str, str]:
    return {"$integer": base64.b64encode(struct.pack("<q", n)).decode()}


def _connect_frame(n: int) -> str:
    return json.dumps(
        {
            "type": "Connect",
            "sessionId": f"00000000-0000-4000-8000-{n:012d}",
            "connectionCount": 0,
            "lastCloseReason": "InitialConnect",
            "clientTs": 0,
        }
    )


def _modify(mods: list[dict[str, Any]]) -> str:
    return json.dumps(
        {"type": "ModifyQuerySet", "baseVersion": 0, "newVersion": 1, "modifications": mods}
    )


class ReactiveSide:
    """``clients`` subscribers and one mutator on a reactive server."""

    def __init__(self, port: int, pid: int, clients: int = CLIENTS) -> None:
        self.port = port
        self.pid = pid
        self.clients = clients
        self.rx = Receivers(clients)
        self.request = 0

    async def open(self) -> None:
        rx = self.rx
        clients = self.clients
        ready = rx.arm(b'"type":"Transition"')
        rx.sockets = await connect_many(clients, "127.0.0.1", self.port, "/api/sync", rx.callback)
        add = {
            "type": "Add",
            "queryId": 0,
            "udfPath": "live:latest",
            "args": [{"x": _int64(X_FAN)}],
        }
        for n, s in enumerate(rx.sockets):
            s.send_text(_connect_frame(n))
            s.send_text(_modify([add]))
        if not await rx.wait(ready, 120.0):
            raise RuntimeError(
                f"only {rx.got} of {clients} reactive sockets got their first result"
            )
        self.a = await LightClient.connect("127.0.0.1", self.port, "/api/sync", lambda _: None)
        self.a.send_text(_connect_frame(clients))
        self.a.send_text(_modify([]))

    async def rep(self, tag: str) -> dict[str, float]:
        self.request += 1
        marker = f"#{tag}#"
        frame = json.dumps(
            {
                "type": "Mutation",
                "requestId": self.request,
                "udfPath": "docs:insert",
                "args": [
                    {
                        "x": _int64(X_FAN),
                        "author": "fanout",
                        "body": BODY + marker,
                        "score": float(self.request),
                    }
                ],
            }
        )
        done = self.rx.arm(marker.encode())
        cpu0 = cpu_seconds(self.pid)
        start = time.perf_counter()
        self.a.send_text(frame)
        if not await self.rx.wait(done):
            log(f"  reactive fan-out: only {self.rx.got}/{self.clients} sockets got {marker}")
        return {**self.rx.figures(start), "server_cpu_ms": 1000 * (cpu_seconds(self.pid) - cpu0)}

    def close(self) -> None:
        self.rx.close()
        self.a.close()


class AnchorSide:
    """``clients`` sockets and one trigger on a bare ``websockets`` server."""

    def __init__(self, port: int, pid: int, clients: int = CLIENTS) -> None:
        self.port = port
        self.pid = pid
        self.clients = clients
        self.rx = Receivers(clients)

    async def open(self) -> None:
        rx = self.rx
        rx.sockets = await connect_many(self.clients, "127.0.0.1", self.port, "/", rx.callback)
        self.a = await LightClient.connect("127.0.0.1", self.port, "/", lambda _: None)
        # The server registers a socket just after its handshake: broadcast until all answer.
        for attempt in range(20):
            ready = rx.arm(f"#ready{attempt}#".encode())
            self.a.send_text(f"B#ready{attempt}#")
            if await rx.wait(ready, 5.0):
                return
        raise RuntimeError(f"only {rx.got} of {self.clients} anchor sockets are registered")

    async def rep(self, tag: str, size: int, mode: str = "B") -> dict[str, float]:
        marker = f"#{tag}#"
        payload = marker + "x" * max(0, size - len(marker))
        done = self.rx.arm(marker.encode())
        cpu0 = cpu_seconds(self.pid)
        start = time.perf_counter()
        self.a.send_text(mode + payload)
        if not await self.rx.wait(done):
            log(
                f"  anchor fan-out ({mode}): only {self.rx.got}/{self.clients} sockets got {marker}"
            )
        return {**self.rx.figures(start), "server_cpu_ms": 1000 * (cpu_seconds(self.pid) - cpu0)}

    def close(self) -> None:
        self.rx.close()
        self.a.close()


async def _measure(reps: int, warmup: int, clients: int, idle_s: float) -> dict[str, Any]:
    """Fan-outs to ``clients`` sockets on each side, repetitions interleaved.

    When both sides' sockets do not fit under the client process's open-file limit (10,000
    each against a hard limit of 20,000), the sides are measured one after the other.
    """
    limit = raise_nofile(4 * clients + 1024)
    together = 2 * clients + 256 <= limit
    runs: dict[str, list[dict[str, float]]] = {"reactive": [], "broadcast": [], "loop": []}
    nonce = os.urandom(3).hex()
    args = ("--max-connections", str(clients + 1024))
    reactive: ReactiveSide | None = None
    bare: AnchorSide | None = None
    with (
        reactive_server("fanout", extra_args=args) as server,
        anchor_server("ws") as anchor,
        pinned_here(CLIENT_CPUS) as pinned,
    ):
        pinned = pinned and all(pin_process(pid, SERVER_CPUS) for pid in (server.pid, anchor.pid))
        await asyncio.sleep(0.5)
        rss0 = (rss_kib(server.pid), rss_kib(anchor.pid))
        rss1 = list(rss0)
        idle: list[float] = [0.0, 0.0]
        size = 0

        async def open_side(which: str) -> None:
            nonlocal reactive, bare
            t = time.perf_counter()
            if which == "reactive":
                reactive = ReactiveSide(server.port, server.pid, clients)
                await reactive.open()
            else:
                bare = AnchorSide(anchor.port, anchor.pid, clients)
                await bare.open()
            log(f"  fan-out: {clients:,} {which} sockets open in {time.perf_counter() - t:.1f} s")

        async def close_side(which: str) -> None:
            nonlocal reactive, bare
            pid, i = (server.pid, 0) if which == "reactive" else (anchor.pid, 1)
            rss1[i] = rss_kib(pid)
            if idle_s:
                before = cpu_seconds(pid)
                await asyncio.sleep(idle_s)
                idle[i] = (cpu_seconds(pid) - before) / idle_s
            side = reactive if which == "reactive" else bare
            if side is not None:
                side.close()
            reactive, bare = (None, bare) if which == "reactive" else (reactive, None)
            await asyncio.sleep(0.5)

        async def reps_of(sides: tuple[str, ...]) -> None:
            nonlocal size
            for i in range(warmup + reps):
                got: dict[str, dict[str, float]] = {}
                if "reactive" in sides and reactive is not None:
                    got["reactive"] = await reactive.rep(f"r{nonce}{clients}{i:03d}")
                    size = size or int(got["reactive"]["frame_bytes"])
                    await asyncio.sleep(0.2)
                if "anchor" in sides and bare is not None:
                    got["broadcast"] = await bare.rep(f"b{nonce}{clients}{i:03d}", size, "B")
                    await asyncio.sleep(0.2)
                    got["loop"] = await bare.rep(f"l{nonce}{clients}{i:03d}", size, "L")
                    await asyncio.sleep(0.2)
                if i < warmup:
                    continue
                for side, r in got.items():
                    runs[side].append(r)
                log(
                    f"  fan-out to {clients:,} rep {i - warmup + 1}/{reps}: "
                    + ", ".join(
                        f"{side} last {r['last_ms']:.1f} ms (first {r['first_ms']:.1f}, "
                        f"server CPU {r['server_cpu_ms']:.1f} ms)"
                        for side, r in got.items()
                    )
                )

        try:
            if together:
                await open_side("reactive")
                await open_side("anchor")
                await reps_of(("reactive", "anchor"))
                await close_side("reactive")
                await close_side("anchor")
            else:
                log(
                    f"  fan-out: {2 * clients:,} sockets exceed the open-file limit: "
                    "one side at a time"
                )
                await open_side("reactive")
                await reps_of(("reactive",))
                await close_side("reactive")
                await open_side("anchor")
                await reps_of(("anchor",))
                await close_side("anchor")
        finally:
            for side in (reactive, bare):
                if side is not None:
                    side.close()
            await asyncio.sleep(0.1)
    per_socket = tuple((after - before) / clients for before, after in zip(rss0, rss1, strict=True))
    return {
        "runs": runs,
        "frame_bytes": size,
        "rss_kib": {"before": rss0, "after": tuple(rss1)},
        "kib_per_socket": per_socket,
        "idle_cpu": tuple(idle) if idle_s else None,
        "interleaved": together,
        "placement": _placement(pinned),
    }


def _placement(pinned: bool) -> str:
    loop = type(asyncio.get_running_loop()).__module__.split(".")[0]
    where = (
        f"servers on CPU {min(SERVER_CPUS)}, client on CPU {min(CLIENT_CPUS)}"
        if pinned
        else "not pinned"
    )
    return f"{where}; client loop {loop}"


def _rows(got: dict[str, Any], clients: int, target: str) -> list[Row]:
    runs = got["runs"]

    def col(side: str, key: str) -> list[float]:
        return [r[key] for r in runs[side]]

    def med(side: str, key: str) -> float:
        return median(col(side, key)) or 0.0

    lost = sum(clients - r["received"] for side in runs.values() for r in side)
    check = (
        "every socket got every update"
        if lost == 0
        else f"{lost} socket-updates missing (timed out after {TIMEOUT_S:.0f} s)"
    )
    ours, theirs = got["kib_per_socket"]
    before, after = got["rss_kib"]["before"], got["rss_kib"]["after"]
    rows = [
        Row.from_samples(
            "fanout",
            f"fan-out, 1 mutation → {clients:,} subscribed sockets, last has it (ms)",
            "ms",
            col("reactive", "last_ms"),
            col("broadcast", "last_ms"),
            anchor_name=f"websockets.broadcast of {got['frame_bytes']} B",
            higher_is_better=False,
            target=target,
            notes=(
                f"{check}; reactive first socket {med('reactive', 'first_ms'):.1f} ms, median "
                f"socket {med('reactive', 'median_ms'):.1f} ms; broadcast first "
                f"{med('broadcast', 'first_ms'):.1f} ms, median "
                f"{med('broadcast', 'median_ms'):.1f} ms; frame {got['frame_bytes']} bytes"
                + ("" if got["interleaved"] else "; sides measured one after the other")
                + f"; {got['placement']}"
            ),
            extra={"runs": runs},
        ),
        Row.from_samples(
            "fanout",
            f"server CPU per fan-out to {clients:,} sockets (ms)",
            "ms",
            col("reactive", "server_cpu_ms"),
            col("broadcast", "server_cpu_ms"),
            anchor_name="websockets.broadcast",
            higher_is_better=False,
            target="context",
            notes=(
                "CPU of every thread of the server process from the trigger until the last "
                "socket had the frame (/proc/<pid>/task/*/schedstat); steadier than elapsed "
                f"time on a shared machine; send loop {med('loop', 'server_cpu_ms'):.1f} ms"
            ),
        ),
        Row(
            "fanout",
            f"server memory per subscribed socket, {clients:,} sockets (KiB)",
            "KiB",
            ours,
            theirs,
            anchor_name="websockets server, one socket each",
            higher_is_better=False,
            target="context",
            notes=(
                f"(VmRSS with the sockets open and after the fan-outs - VmRSS before they "
                f"connected) / sockets; reactive {before[0] / 1024:.0f} -> "
                f"{after[0] / 1024:.0f} MiB, websockets {before[1] / 1024:.0f} -> "
                f"{after[1] / 1024:.0f} MiB; a reactive socket also holds its sync session "
                "and query set"
            ),
        ),
    ]
    if clients == CLIENTS:
        rows.insert(
            1,
            Row.from_samples(
                "fanout",
                f"fan-out to {clients:,} sockets vs a loop of await ws.send (ms)",
                "ms",
                col("reactive", "last_ms"),
                col("loop", "last_ms"),
                anchor_name="websockets, for ws in clients: await ws.send",
                higher_is_better=False,
                target="context",
                notes=(
                    f"send loop first socket {med('loop', 'first_ms'):.1f} ms, median "
                    f"{med('loop', 'median_ms'):.1f} ms"
                ),
            ),
        )
    if got["idle_cpu"] is not None:
        ours_cpu, theirs_cpu = got["idle_cpu"]
        rows.append(
            Row(
                "fanout",
                f"server CPU with {clients:,} idle subscribed sockets (% of a core)",
                "%",
                100 * ours_cpu,
                100 * theirs_cpu,
                anchor_name="websockets server, same sockets",
                higher_is_better=False,
                target="context",
                notes=(
                    "CPU of the server process over 5 s with every socket open and silent "
                    "(reactive checks each socket for stalled sends and due pings once a "
                    "second; websockets pings every 20 s)"
                ),
            )
        )
    return rows


def _client_run(coro: Any) -> Any:
    """Run the client side on uvloop where it is installed (see the module's docstring)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


def run(quick: bool = False) -> list[Row]:
    reps, warmup = (5, 1) if quick else (10, 2)
    rows = _rows(_client_run(_measure(reps, warmup, CLIENTS, 0.0)), CLIENTS, "≥ 0.8 (aim 1)")
    if not quick:
        # 10,000 sockets: 20,000 in the client process and 10,000 per server; full runs only.
        got = _client_run(_measure(5, 1, BIG, 5.0))
        rows += _rows(got, BIG, "reported (memory per socket too)")
    return rows


if __name__ == "__main__":
    standalone(run)
