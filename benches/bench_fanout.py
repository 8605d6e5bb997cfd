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
the same receive path, so the ratio compares the servers: ratio = anchor ÷ reactive (≥ 0.5
means reactive takes at most twice as long as a bare broadcast). Figures are medians of the
repetitions (10 full, 5 quick).
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
    raise_nofile,
    reactive_server,
)

CLIENTS = 1000
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
    """1,000 subscribers and one mutator on a reactive server."""

    def __init__(self, port: int, pid: int) -> None:
        self.port = port
        self.pid = pid
        self.rx = Receivers(CLIENTS)
        self.request = 0

    async def open(self) -> None:
        rx = self.rx
        ready = rx.arm(b'"type":"Transition"')
        rx.sockets = await connect_many(CLIENTS, "127.0.0.1", self.port, "/api/sync", rx.callback)
        add = {
            "type": "Add",
            "queryId": 0,
            "udfPath": "live:latest",
            "args": [{"x": _int64(X_FAN)}],
        }
        for n, s in enumerate(rx.sockets):
            s.send_text(_connect_frame(n))
            s.send_text(_modify([add]))
        if not await rx.wait(ready, 60.0):
            raise RuntimeError(
                f"only {rx.got} of {CLIENTS} reactive sockets got their first result"
            )
        self.a = await LightClient.connect("127.0.0.1", self.port, "/api/sync", lambda _: None)
        self.a.send_text(_connect_frame(CLIENTS))
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
            log(f"  reactive fan-out: only {self.rx.got}/{CLIENTS} sockets got {marker}")
        return {**self.rx.figures(start), "server_cpu_ms": 1000 * (cpu_seconds(self.pid) - cpu0)}

    def close(self) -> None:
        self.rx.close()
        self.a.close()


class AnchorSide:
    """1,000 sockets and one trigger on a bare ``websockets`` server."""

    def __init__(self, port: int, pid: int) -> None:
        self.port = port
        self.pid = pid
        self.rx = Receivers(CLIENTS)

    async def open(self) -> None:
        rx = self.rx
        rx.sockets = await connect_many(CLIENTS, "127.0.0.1", self.port, "/", rx.callback)
        self.a = await LightClient.connect("127.0.0.1", self.port, "/", lambda _: None)
        # The server registers a socket just after its handshake: broadcast until all answer.
        for attempt in range(20):
            ready = rx.arm(f"#ready{attempt}#".encode())
            self.a.send_text(f"B#ready{attempt}#")
            if await rx.wait(ready, 2.0):
                return
        raise RuntimeError(f"only {rx.got} of {CLIENTS} anchor sockets are registered")

    async def rep(self, tag: str, size: int, mode: str = "B") -> dict[str, float]:
        marker = f"#{tag}#"
        payload = marker + "x" * max(0, size - len(marker))
        done = self.rx.arm(marker.encode())
        cpu0 = cpu_seconds(self.pid)
        start = time.perf_counter()
        self.a.send_text(mode + payload)
        if not await self.rx.wait(done):
            log(f"  anchor fan-out ({mode}): only {self.rx.got}/{CLIENTS} sockets got {marker}")
        return {**self.rx.figures(start), "server_cpu_ms": 1000 * (cpu_seconds(self.pid) - cpu0)}

    def close(self) -> None:
        self.rx.close()
        self.a.close()


async def _measure(reps: int, warmup: int) -> dict[str, Any]:
    raise_nofile(4 * CLIENTS + 1024)
    runs: dict[str, list[dict[str, float]]] = {"reactive": [], "broadcast": [], "loop": []}
    nonce = os.urandom(3).hex()
    with reactive_server("fanout") as server, anchor_server("ws") as anchor:
        t = time.perf_counter()
        reactive = ReactiveSide(server.port, server.pid)
        await reactive.open()
        bare = AnchorSide(anchor.port, anchor.pid)
        await bare.open()
        log(f"  fan-out: {2 * CLIENTS} sockets open in {time.perf_counter() - t:.1f} s")
        size = 0
        try:
            for i in range(warmup + reps):
                r = await reactive.rep(f"r{nonce}{i:03d}")
                size = size or int(r["frame_bytes"])
                await asyncio.sleep(0.2)
                b = await bare.rep(f"b{nonce}{i:03d}", size, "B")
                await asyncio.sleep(0.2)
                lp = await bare.rep(f"l{nonce}{i:03d}", size, "L")
                await asyncio.sleep(0.2)
                if i >= warmup:
                    runs["reactive"].append(r)
                    runs["broadcast"].append(b)
                    runs["loop"].append(lp)
                    log(
                        f"  fan-out rep {i - warmup + 1}/{reps}: reactive last "
                        f"{r['last_ms']:.1f} ms (first {r['first_ms']:.1f}), broadcast "
                        f"{b['last_ms']:.1f} ms, send loop {lp['last_ms']:.1f} ms; server CPU "
                        f"{r['server_cpu_ms']:.1f} / {b['server_cpu_ms']:.1f} / "
                        f"{lp['server_cpu_ms']:.1f} ms"
                    )
        finally:
            reactive.close()
            bare.close()
            await asyncio.sleep(0.1)
    return {"runs": runs, "frame_bytes": size}


def run(quick: bool = False) -> list[Row]:
    reps, warmup = (5, 1) if quick else (10, 2)
    got = asyncio.run(_measure(reps, warmup))
    runs = got["runs"]

    def col(side: str, key: str) -> list[float]:
        return [r[key] for r in runs[side]]

    def med(side: str, key: str) -> float:
        return median(col(side, key)) or 0.0

    lost = sum(CLIENTS - r["received"] for side in runs.values() for r in side)
    check = (
        "every socket got every update"
        if lost == 0
        else f"{lost} socket-updates missing (timed out after {TIMEOUT_S:.0f} s)"
    )
    return [
        Row.from_samples(
            "fanout",
            f"fan-out, 1 mutation → {CLIENTS:,} subscribed sockets, last has it (ms)",
            "ms",
            col("reactive", "last_ms"),
            col("broadcast", "last_ms"),
            anchor_name=f"websockets.broadcast of {got['frame_bytes']} B",
            higher_is_better=False,
            target="≥ 0.5 (≤ 2x broadcast)",
            notes=(
                f"{check}; reactive first socket {med('reactive', 'first_ms'):.1f} ms, median "
                f"socket {med('reactive', 'median_ms'):.1f} ms; broadcast first "
                f"{med('broadcast', 'first_ms'):.1f} ms, median "
                f"{med('broadcast', 'median_ms'):.1f} ms; frame {got['frame_bytes']} bytes"
            ),
            extra={"runs": runs},
        ),
        Row.from_samples(
            "fanout",
            f"fan-out to {CLIENTS:,} sockets vs a loop of await ws.send (ms)",
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
        Row.from_samples(
            "fanout",
            f"server CPU per fan-out to {CLIENTS:,} sockets (ms)",
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
    ]


if __name__ == "__main__":
    standalone(run)
