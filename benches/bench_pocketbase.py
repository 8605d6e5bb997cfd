"""Benchmark 12: reactive's server beside PocketBase v0.36.0, a peer (group ``peers``).

Servers, all on 127.0.0.1, started by the benchmark and stopped at its end (also on error):

* ``reactive``: ``python -m reactive.server --app benches/benchapp`` on a fresh embedded SQLite
  database (WAL, synchronous=FULL, group commit), as the other server benchmarks start it
  (``servers.reactive_server``).
* ``pb-default``: PocketBase v0.36.0 as its releases ship it: ``go install
  github.com/pocketbase/pocketbase/examples/base@v0.36.0`` with the release build's settings
  (``CGO_ENABLED=0``, ``-ldflags "-s -w -X github.com/pocketbase/pocketbase.Version=0.36.0"``).
  Its defaults: WAL + synchronous=NORMAL (a commit is acknowledged before its WAL frames are
  fsynced), and a request-log row per request in ``auxiliary.db`` (written in batches of up to
  200 per transaction; left on, as it is by default).
* ``pb-full``: ``benches/pocketbase/main.go``, the same ``examples/base`` main built with
  ``go build`` against the same module versions, except that ``pocketbase.NewWithConfig`` is
  given a ``DBConnect`` that opens ``data.db`` with synchronous=FULL (every other pragma and
  ``auxiliary.db`` as ``core.DefaultDBConnect`` has them). It prints the level both of its
  ``data.db`` pools run with; the benchmark checks that it says FULL.

Both binaries are built by the benchmark with the Go toolchain on ``PATH`` (or
``/usr/local/go/bin/go``; ``GOTOOLCHAIN`` is passed through) into
``bench-results/pocketbase/<key>/``, where ``<key>`` hashes the version, the ``go version``,
the build flags and ``benches/pocketbase/{main.go,go.mod,go.sum}``; a second run reuses them
(the first build takes ~2-3 minutes on 2 cores). Without Go the benchmark returns one row
saying why.

PocketBase is set up as a user sets it up: ``<binary> superuser upsert`` before ``serve``, then
with the superuser's token (``POST /api/collections/_superusers/auth-with-password``) a base
collection ``docs`` is created over the REST API with benchapp's fields (``x`` number with
``onlyInt``, ``author`` text, ``body`` text, ``score`` number), the ``created``/``updated``
autodate fields the dashboard adds to every new collection, an index on ``x`` (benchapp's
``by_x``), and list/view/create rules ``""`` (open), so every client below is anonymous, as
reactive's are.

Rounds alternate reactive, pb-default, pb-full within every phase, and repeat (3 full, 2
quick); figures are medians with the spread of the samples; ratio > 1 means reactive is better.

1. Durable creates/s, 64 HTTP clients: 64 asyncio tasks, each on its own keep-alive
   connection (``servers.LightHTTP``, a minimal HTTP/1.1 client on an ``asyncio.Protocol``),
   each POSTing one after another for 5 s (2 s quick): reactive ``POST /api/mutation``
   ``docs:insert``
   (``convex_encoded_json``), PocketBase ``POST /api/collections/docs/records`` with the same
   document as JSON. A request counts when it answered 200 (reactive: ``"status":"success"``);
   the ids answered are kept for the reads. PocketBase's record count is checked after the
   run (``totalItems``). The client is light so that it takes little of the 2 vCPUs the
   servers compete for: through aiohttp a request cost the client 150-250 µs of CPU, about
   as much as the servers' own, and both sides' rates were capped by the client (an earlier
   run: 2,303 vs 1,674 creates/s, 3,020 vs 2,182 reads/s, the client at ~100 % of a core).
2. Point reads/s, 64 HTTP clients, same client: reactive ``POST /api/query`` of ``docs:get``
   (``ctx.db.get(id)``, the whole document returned), PocketBase ``GET
   /api/collections/docs/records/{id}``; ids drawn at random from that server's creates.
3. Fan-out to 1,000 subscribers, one server at a time (the others have none): reactive's
   subscribers are 1,000 ``servers.LightClient`` WebSockets subscribed to ``live:latest`` as in
   ``bench_fanout.py``; PocketBase's are 1,000 SSE connections (``GET /api/realtime``, the
   ``clientId`` of its ``PB_CONNECT`` event, then ``POST /api/realtime`` with ``{clientId,
   subscriptions: ["docs/*"]}``, the topic the JS SDK's ``collection("docs").subscribe("*")``
   sends). The SSE receivers are :class:`LightSSE`, an ``asyncio.Protocol`` that de-chunks and
   splits events without a task per connection, so both sides have the same cheap receive
   path. aiohttp would put a task and a stream reader per connection on PocketBase's side
   only: tried once, 1,000 aiohttp SSE readers in this process made PocketBase's fan-out
   look ~2x slower (median last 107 ms against 52 ms with ``LightSSE``, same server, rounds
   alternated), which is the client's cost, not PocketBase's. aiohttp does the rest (the
   subscription POSTs, every create). The trigger is the same on both sides: one create over
   HTTP on the aiohttp session (reactive's own clients would send a ``Mutation`` frame on
   their WebSocket instead), its ``body`` carrying a marker unique to the repetition. Figure:
   from just before the request is made to when the last of the 1,000 has read an
   event/frame holding the marker. 5 repetitions per round (3 quick), after one warm-up.
4. Create → subscriber latency with one subscriber (same clients): sequential creates, each
   waiting until the subscriber has the event; p50 and p99 over all samples (300 per round
   full, 150 quick), the spread is the range of the per-round figures.
5. Server RSS (``VmRSS`` of ``/proc/<pid>/status``): idle, once per server after its setup and
   before any load; and with the 1,000 subscribers connected (per round, after 1 s), with the
   RSS just before they connected (after the rounds' creates) in the notes.

Notes give each server's CPU per operation (all its threads, ``/proc/<pid>/task/*/schedstat``)
and the client process's CPU: with 2 vCPUs, a client near 100 % of a core caps the figure.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import os
import random
import shutil
import struct
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_fanout import Receivers, _connect_frame, _modify
from common import BENCHES, RESULTS, Row, log, median, percentile, scratch_dir, standalone
from fixtures import BODY
from servers import (
    LightPool,
    closed_loop_load,
    connect_many,
    cpu_seconds,
    free_port,
    raise_nofile,
    reactive_server,
    rss_kib,
    stop_process,
    wait_http,
)

PB_VERSION = "v0.36.0"
PB_MODULE = "github.com/pocketbase/pocketbase"
PB_LDFLAGS = f"-s -w -X {PB_MODULE}.Version={PB_VERSION.lstrip('v')}"
PB_SRC = BENCHES / "pocketbase"
PB_CACHE = RESULTS / "pocketbase"
SUPERUSER = ("bench@example.com", "bench-superuser-password")

CONCURRENCY = 64
SUBSCRIBERS = 1000
GROUPS = 100
X_FAN = 930_001
X_LAT = 930_002
TIMEOUT_S = 30.0
SIDES = ("reactive", "pb-default", "pb-full")
LABEL = {
    "reactive": "reactive",
    "pb-default": "PocketBase default (synchronous=NORMAL)",
    "pb-full": "PocketBase synchronous=FULL",
}
JSON_HEADERS = {"content-type": "application/json"}


# -- building PocketBase ---------------------------------------------------------------------


def go_binary() -> str | None:
    """The ``go`` command: on PATH, else the usual install location."""
    found = shutil.which("go")
    if found:
        return found
    usual = Path("/usr/local/go/bin/go")
    return str(usual) if usual.exists() else None


def build_pocketbase() -> tuple[dict[str, Path], str]:
    """Build (or reuse) both binaries; returns ``({side: binary}, how)``.

    Raises RuntimeError with the build's output when a build fails.
    """
    go = go_binary()
    if go is None:
        raise FileNotFoundError("no Go toolchain (go on PATH or /usr/local/go/bin/go)")
    env = {**os.environ, "CGO_ENABLED": "0"}
    version = subprocess.run(
        [go, "version"], capture_output=True, text=True, env=env, timeout=120, check=True
    ).stdout.strip()
    h = hashlib.sha256()
    for part in (PB_VERSION, version, PB_LDFLAGS, env.get("GOTOOLCHAIN", "")):
        h.update(part.encode() + b"\0")
    for name in ("main.go", "go.mod", "go.sum"):
        h.update((PB_SRC / name).read_bytes() + b"\0")
    out = PB_CACHE / h.hexdigest()[:16]
    binaries = {"pb-default": out / "base", "pb-full": out / "pocketbase-full"}
    if all(b.exists() for b in binaries.values()):
        return binaries, f"cached in {out.relative_to(RESULTS.parent)} ({version})"
    out.mkdir(parents=True, exist_ok=True)
    log(f"  building PocketBase {PB_VERSION} with {version} into {out} (once) ...")
    t = time.perf_counter()
    steps = [
        (
            [go, "install", f"-ldflags={PB_LDFLAGS}", f"{PB_MODULE}/examples/base@{PB_VERSION}"],
            {**env, "GOBIN": str(out)},
            None,
        ),
        (
            [
                go,
                "build",
                "-buildvcs=false",
                f"-ldflags={PB_LDFLAGS}",
                "-o",
                str(binaries["pb-full"]) + ".tmp",
                ".",
            ],
            env,
            PB_SRC,
        ),
    ]
    for cmd, cmd_env, cwd in steps:
        r = subprocess.run(cmd, capture_output=True, text=True, env=cmd_env, cwd=cwd, timeout=1800)
        if r.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed: {(r.stdout + r.stderr)[-2000:]}")
    Path(str(binaries["pb-full"]) + ".tmp").rename(binaries["pb-full"])
    log(f"  built in {time.perf_counter() - t:.0f} s")
    return binaries, f"built into {out.relative_to(RESULTS.parent)} ({version})"


# -- running PocketBase ----------------------------------------------------------------------


@dataclass
class Server:
    """A server under test: where it listens and its pid."""

    side: str
    http: str
    pid: int
    log_path: Path
    info: dict[str, Any] = field(default_factory=dict)


def _json_request(
    url: str, body: Any = None, token: str | None = None, method: str | None = None
) -> Any:
    data = None if body is None else json.dumps(body).encode()
    headers = dict(JSON_HEADERS)
    if token:
        headers["Authorization"] = token
    req = urllib.request.Request(url, data=data, headers=headers, method=method)
    with urllib.request.urlopen(req, timeout=30) as r:
        text = r.read()
    return json.loads(text) if text else None


DOCS_COLLECTION = {
    "name": "docs",
    "type": "base",
    "listRule": "",
    "viewRule": "",
    "createRule": "",
    "fields": [
        {"name": "x", "type": "number", "onlyInt": True},
        {"name": "author", "type": "text"},
        {"name": "body", "type": "text"},
        {"name": "score", "type": "number"},
        {"name": "created", "type": "autodate", "onCreate": True},
        {"name": "updated", "type": "autodate", "onCreate": True, "onUpdate": True},
    ],
    "indexes": ["CREATE INDEX idx_docs_x ON docs (x)"],
}


@contextlib.contextmanager
def pocketbase_server(side: str, binary: Path) -> Iterator[Server]:
    """``<binary> superuser upsert`` then ``serve`` on a fresh data directory; the ``docs``
    collection created over the REST API. Stopped (SIGTERM, then SIGKILL) and removed after."""
    with scratch_dir(side) as d:
        data = d / "pb_data"
        r = subprocess.run(
            [str(binary), "superuser", "upsert", *SUPERUSER, f"--dir={data}"],
            capture_output=True,
            text=True,
            cwd=d,
            timeout=120,
        )
        if r.returncode != 0:
            raise RuntimeError(f"{side}: superuser upsert failed: {(r.stdout + r.stderr)[-1000:]}")
        port = free_port()
        log_path = d / "pocketbase.log"
        with open(log_path, "wb") as out:
            proc = subprocess.Popen(
                [str(binary), "serve", f"--http=127.0.0.1:{port}", f"--dir={data}"],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=d,
            )
        server = Server(side, f"http://127.0.0.1:{port}", proc.pid, log_path)
        try:
            wait_http(f"{server.http}/api/health", proc)
            auth = _json_request(
                f"{server.http}/api/collections/_superusers/auth-with-password",
                {"identity": SUPERUSER[0], "password": SUPERUSER[1]},
            )
            _json_request(f"{server.http}/api/collections", DOCS_COLLECTION, token=auth["token"])
            text = log_path.read_text(errors="replace")
            if side == "pb-full" and "synchronous=2/2" not in text:
                raise RuntimeError(f"pb-full does not report synchronous=FULL: {text[-500:]}")
            server.info["log_head"] = text.splitlines()[:1]
            yield server
        finally:
            code = stop_process(proc)
            if code not in (0, None, -15):
                tail = log_path.read_text(errors="replace")[-1000:]
                log(f"  {side} exited {code}; log tail:\n{tail}")


# -- an SSE client without a task per connection --------------------------------------------


class LightSSE(asyncio.Protocol):
    """``GET /api/realtime`` on one connection; every event's data goes to ``on_event``.

    It reads the HTTP/1.1 response head, de-chunks the body (Go's server sends chunked) and
    splits it into events at blank lines. ``PB_CONNECT`` sets :attr:`client_id`; other
    events call ``on_event(data)``. Like ``servers.LightClient``, it costs a few µs per event.
    """

    def __init__(self, on_event: Callable[[bytes], None]) -> None:
        self.on_event = on_event
        self.transport: asyncio.Transport | None = None
        self._raw = bytearray()
        self._events = bytearray()
        self._head_done = False
        self._chunked = False
        self._chunk_left = -1  # data bytes left in the chunk; 0: its CRLF next; -1: a size
        self.client_id: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    @classmethod
    async def connect(
        cls, host: str, port: int, path: str, on_event: Callable[[bytes], None]
    ) -> LightSSE:
        loop = asyncio.get_running_loop()
        _, proto = await loop.create_connection(lambda: cls(on_event), host, port)
        assert proto.transport is not None
        proto.transport.write(
            (
                f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
                "Accept: text/event-stream\r\nCache-Control: no-store\r\n\r\n"
            ).encode()
        )
        try:
            await asyncio.wait_for(asyncio.shield(proto.client_id), TIMEOUT_S)
        except BaseException:
            proto.close()
            raise
        return proto

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.client_id.done():
            self.client_id.set_exception(exc or ConnectionError("closed before PB_CONNECT"))

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        raw = self._raw
        raw += data
        if not self._head_done:
            end = raw.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(raw[:end]).lower()
            del raw[: end + 4]
            if not head.startswith(b"http/1.1 200"):
                self.client_id.set_exception(ConnectionError(f"refused: {head[:200]!r}"))
                self.close()
                return
            self._head_done = True
            self._chunked = b"transfer-encoding: chunked" in head
        if not self._chunked:
            self._events += raw
            raw.clear()
        while self._chunked and raw:
            if self._chunk_left == -1:  # a chunk-size line next
                eol = raw.find(b"\r\n")
                if eol < 0:
                    break
                size = int(bytes(raw[:eol]).split(b";")[0], 16)
                del raw[: eol + 2]
                if size == 0:
                    self.close()
                    break
                self._chunk_left = size
            elif self._chunk_left == 0:  # the CRLF that ends a chunk
                if len(raw) < 2:
                    break
                del raw[:2]
                self._chunk_left = -1
            else:
                take = min(self._chunk_left, len(raw))
                self._events += raw[:take]
                del raw[:take]
                self._chunk_left -= take
        self._split()

    def _split(self) -> None:
        ev = self._events
        while True:
            end = ev.find(b"\n\n")
            if end < 0:
                return
            block = bytes(ev[:end])
            del ev[: end + 2]
            name, data = b"", []
            for line in block.split(b"\n"):
                if line.startswith(b"event:"):
                    name = line[6:].strip()
                elif line.startswith(b"data:"):
                    data.append(line[5:].lstrip(b" "))
            payload = b"\n".join(data)
            if name == b"PB_CONNECT":
                if not self.client_id.done():
                    self.client_id.set_result(json.loads(payload)["clientId"])
            else:
                self.on_event(payload)


# -- the sides' requests ---------------------------------------------------------------------


def _int64(n: int) -> dict[str, str]:
    return {"$integer": base64.b64encode(struct.pack("<q", n)).decode()}


def _doc(i: int, x: int | None = None, marker: str = "") -> dict[str, Any]:
    return {
        "x": i % GROUPS if x is None else x,
        "author": f"user-{i % 1000:04d}",
        "body": f"{i:08d} {BODY}{marker}",
        "score": i * 0.5,
    }


class Side:
    """How one server is spoken to over HTTP for creates and reads."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.side = server.side
        self.ids: list[str] = []
        self.created = 0  # creates answered with success (the loads' and the triggers')
        self.reactive = server.side == "reactive"
        base = server.http
        self.create_path = "/api/mutation" if self.reactive else "/api/collections/docs/records"
        self.create_url = f"{base}{self.create_path}"
        host, _, port = base.removeprefix("http://").partition(":")
        # The 64-client loads' connections (see LightHTTP); the triggers use aiohttp.
        self.pool = LightPool(host, int(port))

    def create_body(self, doc: dict[str, Any]) -> bytes:
        if self.reactive:
            args = {**doc, "x": _int64(doc["x"])}
            return json.dumps(
                {"path": "docs:insert", "args": args, "format": "convex_encoded_json"}
            ).encode()
        return json.dumps(doc).encode()

    def created_id(self, status: int, text: bytes) -> str | None:
        """The new document's id, or None when the create did not succeed."""
        if status != 200:
            return None
        got = json.loads(text)
        new = got.get("value") if self.reactive and got.get("status") == "success" else None
        new = got.get("id") if not self.reactive else new
        if new is not None:
            self.created += 1
        return new

    async def create(self, session: Any, body: bytes) -> tuple[int, bytes]:
        async with session.post(self.create_url, data=body, headers=JSON_HEADERS) as r:
            return r.status, await r.read()

    def read_requests(self, ids: list[str]) -> list[tuple[str, str, bytes | None]]:
        """``(method, path, body)`` of a point read of each id."""
        if self.reactive:
            return [
                (
                    "POST",
                    "/api/query",
                    json.dumps(
                        {"path": "docs:get", "args": {"id": i}, "format": "convex_encoded_json"}
                    ).encode(),
                )
                for i in ids
            ]
        return [("GET", f"/api/collections/docs/records/{i}", None) for i in ids]

    def read_ok(self, status: int, text: bytes) -> bool:
        if status != 200:
            return False
        if self.reactive:
            return text.startswith(b'{"status":"success","value":{')
        return b'"id":' in text


# -- 64 HTTP clients -------------------------------------------------------------------------


async def creates(session: Any, side: Side, seconds: float, first: int) -> dict[str, Any]:
    bodies = [side.create_body(_doc(first + i)) for i in range(2000)]
    first_error: list[str] = []

    async def one(i: int) -> bool:
        status, text = await side.pool.request("POST", side.create_path, bodies[i % len(bodies)])
        new = side.created_id(status, text)
        if new is None:
            if not first_error:
                first_error.append(f"{status} {text[:200]!r}")
            return False
        side.ids.append(new)
        return True

    got = await closed_loop_load(one, side.server.pid, seconds, CONCURRENCY)
    got["first_error"] = first_error[0] if first_error else ""
    return got


async def reads(session: Any, side: Side, seconds: float, seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    requests = side.read_requests(rng.choices(side.ids, k=5000))

    async def one(i: int) -> bool:
        method, path, body = requests[i % len(requests)]
        status, text = await side.pool.request(method, path, body)
        return side.read_ok(status, text)

    return await closed_loop_load(one, side.server.pid, seconds, CONCURRENCY)


# -- subscribers -----------------------------------------------------------------------------


def rss_mib(pid: int) -> float:
    """``VmRSS`` of ``pid`` in MiB."""
    return rss_kib(pid) / 1024


class Subscribers:
    """``count`` subscribers of one server, each stamping when it reads the armed marker."""

    opened = 0

    def __init__(self, side: Side, count: int) -> None:
        self.side = side
        self.rx = Receivers(count)
        self.count = count
        self.port = int(side.server.http.rsplit(":", 1)[1])
        Subscribers.opened += 1
        self.session_base = Subscribers.opened * 10_000  # unique reactive session ids

    async def open(self, session: Any, x: int) -> None:
        rx = self.rx
        if self.side.reactive:
            ready = rx.arm(b'"type":"Transition"')
            rx.sockets = await connect_many(
                self.count, "127.0.0.1", self.port, "/api/sync", rx.callback
            )
            add = {
                "type": "Add",
                "queryId": 0,
                "udfPath": "live:latest",
                "args": [{"x": _int64(x)}],
            }
            for n, s in enumerate(rx.sockets):
                s.send_text(_connect_frame(self.session_base + n))
                s.send_text(_modify([add]))
            if not await rx.wait(ready, 60.0):
                raise RuntimeError(f"only {rx.got}/{self.count} reactive subscribers started")
            return
        sem = asyncio.Semaphore(50)
        out: list[LightSSE | None] = [None] * self.count
        url = f"{self.side.server.http}/api/realtime"

        async def one(i: int) -> None:
            async with sem:
                sse = await LightSSE.connect(
                    "127.0.0.1", self.port, "/api/realtime", rx.callback(i)
                )
                out[i] = sse
                body = {"clientId": sse.client_id.result(), "subscriptions": ["docs/*"]}
                async with session.post(url, json=body) as r:
                    if r.status != 204:
                        raise RuntimeError(f"POST /api/realtime: {r.status} {await r.text()}")

        try:
            await asyncio.gather(*(one(i) for i in range(self.count)))
        finally:
            rx.sockets = [s for s in out if s is not None]  # type: ignore[misc]

    async def trigger(self, session: Any, i: int, x: int, tag: str) -> dict[str, float]:
        """One create carrying ``#tag#``; times until every subscriber has it."""
        marker = f"#{tag}#"
        body = self.side.create_body(_doc(i, x, marker))
        done = self.rx.arm(marker.encode())
        pid = self.side.server.pid
        cpu0 = cpu_seconds(pid)
        start = time.perf_counter()
        status, text = await self.side.create(session, body)
        answered = time.perf_counter()
        if self.side.created_id(status, text) is None:
            raise RuntimeError(f"{self.side.side}: create failed: {status} {text[:200]!r}")
        if not await self.rx.wait(done, TIMEOUT_S):
            log(f"  {self.side.side}: only {self.rx.got}/{self.count} subscribers got {marker}")
        return {
            **self.rx.figures(start),
            "answered_ms": (answered - start) * 1000,
            "server_cpu_ms": 1000 * (cpu_seconds(pid) - cpu0),
        }

    def close(self) -> None:
        for s in self.rx.sockets:
            s.close()


# -- the run ---------------------------------------------------------------------------------


async def _measure(servers: dict[str, Server], quick: bool) -> dict[str, Any]:
    import aiohttp

    rounds, seconds, fan_reps, lat_n = (2, 2.0, 3, 150) if quick else (3, 5.0, 5, 300)
    sides = {name: Side(servers[name]) for name in SIDES}
    runs: dict[str, dict[str, list[Any]]] = {
        phase: {name: [] for name in SIDES}
        for phase in ("creates", "reads", "fanout", "rss_subs", "rss_before", "latency")
    }
    rss_idle = {name: rss_mib(servers[name].pid) for name in SIDES}
    nonce = os.urandom(3).hex()
    connector = aiohttp.TCPConnector(limit=CONCURRENCY)
    async with aiohttp.ClientSession(connector=connector) as session:
        for rnd in range(rounds):
            for name in SIDES:
                got = await creates(session, sides[name], seconds, first=rnd * 1_000_000)
                runs["creates"][name].append(got)
            log(
                f"  round {rnd + 1}/{rounds} creates/s: "
                + ", ".join(f"{n} {runs['creates'][n][-1]['rate']:,.0f}" for n in SIDES)
            )
            for name in SIDES:
                runs["reads"][name].append(await reads(session, sides[name], seconds, rnd))
            log(
                f"  round {rnd + 1}/{rounds} reads/s: "
                + ", ".join(f"{n} {runs['reads'][n][-1]['rate']:,.0f}" for n in SIDES)
            )
            for name in SIDES:
                runs["rss_before"][name].append(rss_mib(servers[name].pid))
                subs = Subscribers(sides[name], SUBSCRIBERS)
                try:
                    await subs.open(session, X_FAN)
                    await asyncio.sleep(1.0)
                    runs["rss_subs"][name].append(rss_mib(servers[name].pid))
                    for k in range(fan_reps + 1):
                        got = await subs.trigger(
                            session, 5_000_000 + k, X_FAN, f"F{nonce}{name}{rnd}.{k}"
                        )
                        if k > 0:
                            runs["fanout"][name].append(got)
                        await asyncio.sleep(0.2)
                finally:
                    subs.close()
                await asyncio.sleep(0.5)
            log(
                f"  round {rnd + 1}/{rounds} fan-out to {SUBSCRIBERS:,}, last (ms): "
                + ", ".join(
                    f"{n} {median([r['last_ms'] for r in runs['fanout'][n][-fan_reps:]]):.1f}"
                    for n in SIDES
                )
            )
            for name in SIDES:
                one = Subscribers(sides[name], 1)
                samples: list[float] = []
                answered: list[float] = []
                try:
                    await one.open(session, X_LAT)
                    for k in range(lat_n + 20):
                        got = await one.trigger(session, 6_000_000 + k, X_LAT, f"L{nonce}{rnd}.{k}")
                        if k >= 20:
                            samples.append(got["last_ms"])
                            answered.append(got["answered_ms"])
                finally:
                    one.close()
                runs["latency"][name].append({"samples": samples, "answered": answered})
            log(
                f"  round {rnd + 1}/{rounds} create → subscriber p50 (ms): "
                + ", ".join(
                    f"{n} {percentile(runs['latency'][n][-1]['samples'], 50):.2f}" for n in SIDES
                )
            )
        counts = {}
        for name in ("pb-default", "pb-full"):
            url = f"{servers[name].http}/api/collections/docs/records?perPage=1"
            async with session.get(url) as r:
                counts[name] = (await r.json())["totalItems"]
        created = {name: sides[name].created for name in SIDES}
    for side in sides.values():
        side.pool.close()
    return {"runs": runs, "rss_idle": rss_idle, "counts": counts, "created": created}


def _rows(got: dict[str, Any], how: str) -> list[Row]:
    runs = got["runs"]

    def col(phase: str, name: str, key: str) -> list[float]:
        return [r[key] for r in runs[phase][name]]

    def med(phase: str, name: str, key: str) -> float:
        return median(col(phase, name, key)) or 0.0

    def pooled(name: str, key: str = "samples") -> list[float]:
        return [x for r in runs["latency"][name] for x in r[key]]

    rows: list[Row] = []
    durability = (
        "durability: reactive acknowledges a commit after its fsync (WAL, synchronous=FULL, "
        "group commit); PocketBase's default (WAL, synchronous=NORMAL) acknowledges before the "
        "WAL is fsynced, so an OS crash or power loss can drop its last acknowledged creates"
    )
    logs = (
        "PocketBase also writes a request-log row per request to auxiliary.db (its default, "
        "kept on; batched, up to 200 per transaction; logs.maxDays = 0 would turn it off)"
    )
    full = (
        "pb-full fsyncs every commit as reactive does, but one commit per fsync: PocketBase "
        "writes through one connection (its non-concurrent pool) and has no group commit"
    )
    checks = []
    for name in ("pb-default", "pb-full"):
        if got["counts"][name] != got["created"][name]:
            checks.append(
                f"{name} holds {got['counts'][name]} records, {got['created'][name]} answered"
            )
    errors = {n: sum(r["errors"] for r in runs["creates"][n] + runs["reads"][n]) for n in SIDES}
    errs = ", ".join(f"{n}: {e}" for n, e in errors.items() if e)
    check = (
        "every request answered 200; PocketBase record counts match the creates answered"
        if not errs and not checks
        else "; ".join([f"failed requests {errs}" if errs else "", *checks]).strip("; ")
    )

    for phase, unit, what, target in (
        ("creates", "creates/s", "durable creates/s, 64 HTTP clients", "≥ 2x"),
        ("reads", "reads/s", "point reads/s, 64 HTTP clients", "≥ 2x"),
    ):
        for anchor in ("pb-default", "pb-full"):
            notes = (
                f"target (issue) {target}; server CPU per request: reactive "
                f"{med(phase, 'reactive', 'server_cpu_us'):.0f} µs, {anchor} "
                f"{med(phase, anchor, 'server_cpu_us'):.0f} µs (server busy "
                f"{med(phase, 'reactive', 'server_cpu_pct'):.0f} / "
                f"{med(phase, anchor, 'server_cpu_pct'):.0f} % of a core); client "
                f"(LightHTTP) CPU {med(phase, 'reactive', 'client_cpu_pct'):.0f} % / "
                f"{med(phase, anchor, 'client_cpu_pct'):.0f} % of a core; latency p50 "
                f"{med(phase, 'reactive', 'p50_ms'):.1f} / {med(phase, anchor, 'p50_ms'):.1f} ms"
            )
            if anchor == "pb-default" and phase == "creates":
                notes += f"; {check}; {durability}; {logs}"
            if anchor == "pb-full" and phase == "creates":
                notes += f"; {full}"
            rows.append(
                Row.from_samples(
                    "pocketbase",
                    f"PocketBase: {what} vs {anchor}",
                    unit,
                    col(phase, "reactive", "rate"),
                    col(phase, anchor, "rate"),
                    anchor_name=LABEL[anchor],
                    target=target,
                    notes=notes,
                    extra={"reactive": runs[phase]["reactive"], "anchor": runs[phase][anchor]},
                )
            )

    for anchor in ("pb-default", "pb-full"):
        notes = (
            f"target (issue) ≥ 1x; first subscriber reactive "
            f"{med('fanout', 'reactive', 'first_ms'):.1f} ms, {anchor} "
            f"{med('fanout', anchor, 'first_ms'):.1f} ms; median subscriber "
            f"{med('fanout', 'reactive', 'median_ms'):.1f} / "
            f"{med('fanout', anchor, 'median_ms'):.1f} ms; create answered "
            f"{med('fanout', 'reactive', 'answered_ms'):.1f} / "
            f"{med('fanout', anchor, 'answered_ms'):.1f} ms; server CPU per fan-out "
            f"{med('fanout', 'reactive', 'server_cpu_ms'):.1f} / "
            f"{med('fanout', anchor, 'server_cpu_ms'):.1f} ms; event/frame "
            f"{med('fanout', 'reactive', 'frame_bytes'):.0f} / "
            f"{med('fanout', anchor, 'frame_bytes'):.0f} bytes"
        )
        lost = sum(
            SUBSCRIBERS - r["received"] for n in ("reactive", anchor) for r in runs["fanout"][n]
        )
        notes += "; every subscriber got every event" if lost == 0 else f"; {lost} events missing"
        rows.append(
            Row.from_samples(
                "pocketbase",
                f"PocketBase: fan-out, 1 create → {SUBSCRIBERS:,} subscribers, last has it "
                f"(ms) vs {anchor}",
                "ms",
                col("fanout", "reactive", "last_ms"),
                col("fanout", anchor, "last_ms"),
                anchor_name=f"{LABEL[anchor]}, SSE",
                higher_is_better=False,
                target="≥ 1x",
                notes=notes,
                extra={"reactive": runs["fanout"]["reactive"], "anchor": runs["fanout"][anchor]},
            )
        )

    n = len(pooled("reactive"))
    for q in (50, 99):
        for anchor in ("pb-default", "pb-full"):
            r_all, a_all = pooled("reactive"), pooled(anchor)
            row = Row(
                "pocketbase",
                f"PocketBase: create → 1 subscriber latency p{q} ({n:,}) vs {anchor} (ms)",
                "ms",
                percentile(r_all, q),
                percentile(a_all, q),
                anchor_name=LABEL[anchor],
                higher_is_better=False,
                target="≥ 1x",
                reactive_samples=[
                    percentile(r["samples"], q) or 0.0 for r in runs["latency"]["reactive"]
                ],
                anchor_samples=[
                    percentile(r["samples"], q) or 0.0 for r in runs["latency"][anchor]
                ],
            )
            if q == 50:
                row.notes = (
                    f"target (issue) ≥ 1x; create answered (send → HTTP response) p50 reactive "
                    f"{percentile(pooled('reactive', 'answered'), 50):.2f} ms, {anchor} "
                    f"{percentile(pooled(anchor, 'answered'), 50):.2f} ms"
                )
            rows.append(row)

    idle = got["rss_idle"]
    rows.append(
        Row(
            "pocketbase",
            "PocketBase: server RSS idle, fresh after setup (MiB)",
            "MiB",
            idle["reactive"],
            idle["pb-default"],
            anchor_name=LABEL["pb-default"],
            higher_is_better=False,
            target="context",
            notes=f"pb-full {idle['pb-full']:.1f} MiB; VmRSS of /proc/<pid>/status",
        )
    )
    rows.append(
        Row.from_samples(
            "pocketbase",
            f"PocketBase: server RSS with {SUBSCRIBERS:,} subscribers connected (MiB)",
            "MiB",
            runs["rss_subs"]["reactive"],
            runs["rss_subs"]["pb-default"],
            anchor_name=LABEL["pb-default"],
            higher_is_better=False,
            target="context",
            notes=(
                f"pb-full {median(runs['rss_subs']['pb-full']):.1f} MiB; just before the "
                "subscribers connected (after that round's creates): reactive "
                f"{median(runs['rss_before']['reactive']):.1f}, pb-default "
                f"{median(runs['rss_before']['pb-default']):.1f}, pb-full "
                f"{median(runs['rss_before']['pb-full']):.1f} MiB; reactive keeps its documents "
                f"and indexes in memory ({got['created']['reactive']:,} documents by the last "
                f"round), PocketBase reads SQLite's page cache (cache_size 32 MB); {how}"
            ),
        )
    )
    return rows


def run(quick: bool = False) -> list[Row]:
    try:
        binaries, how = build_pocketbase()
    except (FileNotFoundError, RuntimeError, subprocess.SubprocessError) as exc:
        return [Row("pocketbase", "PocketBase peer (skipped)", "", None, notes=f"{exc}"[:2000])]
    raise_nofile(4 * SUBSCRIBERS + 1024)
    with contextlib.ExitStack() as stack:
        served = stack.enter_context(reactive_server("pocketbase-peer"))
        servers = {"reactive": Server("reactive", served.http, served.pid, served.log_path)}
        for name in ("pb-default", "pb-full"):
            servers[name] = stack.enter_context(pocketbase_server(name, binaries[name]))
        time.sleep(2.0)  # let every server settle before the idle RSS
        got = asyncio.run(_measure(servers, quick))
    return _rows(got, f"PocketBase {PB_VERSION} {how}")


if __name__ == "__main__":
    standalone(run)
