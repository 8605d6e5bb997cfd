"""Cluster processes for the tests, and a TCP proxy that cuts one off.

Used by tests/persistence/test_cluster.py and tests/isolation/test_isolation_cluster.py.

* :class:`Node`: one ``python -m reactive.server --cluster-key K`` process on a fixed
  loopback port, started (and restarted after a SIGKILL) on that port, its output appended
  to one log file per port; :meth:`Node.ready` is its ``/health/ready`` answer (``role``
  is ``leader`` or ``follower``).
* :class:`TcpProxy`: a TCP relay on 127.0.0.1 in front of the database server, run by an
  asyncio loop in its own thread. A node whose ``--db`` URL names the proxy's port reaches
  the database only through it. :meth:`TcpProxy.isolate` closes every relayed connection
  and refuses new ones until :meth:`TcpProxy.heal`: the node is cut off from the
  database, and only it. New connections are refused (the proxy stops listening:
  ``ECONNREFUSED``), or with ``isolate(reset=True)`` accepted and reset at once (what a
  middlebox whose backend is gone does). With ``hold_answers=True`` it relays what clients
  send and drops what comes back (a server whose answers are lost on the way).

Source: docs/design/scale-out.md (11, "Fixture").
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

__all__ = ["Node", "TcpProxy", "free_port", "via_proxy"]

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def via_proxy(url: str, port: int) -> str:
    """``url`` with its host and port replaced by ``127.0.0.1:port`` (user, password kept)."""
    parts = urlsplit(url)
    auth = parts.netloc.rpartition("@")[0]
    netloc = f"{auth}@127.0.0.1:{port}" if auth else f"127.0.0.1:{port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


# -- the proxy ------------------------------------------------------------------------------


class TcpProxy:
    """Relays 127.0.0.1:``port`` to ``upstream``; :meth:`isolate` cuts, :meth:`heal` restores.

    Everything runs on the proxy's own event loop in a daemon thread (so the test's loop,
    busy with its clients, adds no latency to the relayed traffic); the methods are called
    from any thread. ``accepted``, ``refused`` and ``cut`` count connections; ``closes``
    lists the relays that ended otherwise (when, and which side closed first).
    """

    def __init__(
        self, upstream_host: str, upstream_port: int, *, port: int = 0, hold_answers: bool = False
    ) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.port = port
        # Relay what the client sends but drop what comes back (an answer lost on its way).
        self.hold_answers = hold_answers
        self.accepted = 0
        self.refused = 0
        self.cut = 0
        self._isolated = False
        self._listening = False
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="tcp-proxy")
        self._server: asyncio.Server | None = None
        self._pairs: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()
        # Relays that ended while not isolated: (time.time(), which side ended first, why).
        self.closes: list[tuple[float, str]] = []

    def _call(self, coro: Coroutine[Any, Any, Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(30)

    def start(self) -> TcpProxy:
        self._thread.start()
        self._call(self._start())
        return self

    async def _start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
        self.port = int(self._server.sockets[0].getsockname()[1])
        self._listening = True

    async def _stop_listening(self) -> None:
        if self._server is not None and self._listening:
            self._listening = False
            self._server.close()
            await self._server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._isolated:
            self.refused += 1
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            writer.transport.abort()
            return
        if self._isolated:  # cut while connecting
            self.refused += 1
            up_writer.transport.abort()
            writer.transport.abort()
            return
        self.accepted += 1
        pair = (writer, up_writer)
        self._pairs.add(pair)
        ended: list[str] = []
        opened = time.monotonic()
        try:
            await asyncio.gather(
                self._pipe("client", reader, up_writer, ended),
                self._pipe("database", up_reader, writer, ended, drop=self.hold_answers),
            )
        finally:
            self._pairs.discard(pair)
            writer.transport.abort()
            up_writer.transport.abort()
            if ended and not self._isolated:
                age = time.monotonic() - opened
                self.closes.append((time.time(), f"{ended[0]} (open {age:.1f} s)"))

    @staticmethod
    async def _pipe(
        side: str,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        ended: list[str],
        drop: bool = False,
    ) -> None:
        why = "closed"
        try:
            while data := await reader.read(1 << 16):
                if drop:
                    continue
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError) as exc:
            why = repr(exc)
        finally:
            ended.append(f"{side} side {why}")
            writer.transport.abort()  # one side closed: close both (no half-open relays)

    async def _isolate(self, reset: bool) -> None:
        self._isolated = True
        for client, upstream in list(self._pairs):
            self.cut += 1
            client.transport.abort()
            upstream.transport.abort()
        if not reset:
            await self._stop_listening()

    async def _heal(self) -> None:
        self._isolated = False
        if not self._listening:
            await self._start()

    def isolate(self, reset: bool = False) -> None:
        """Close every relayed connection now and refuse new ones until :meth:`heal`.

        Refused: nothing listens on the port (``ECONNREFUSED``); with ``reset``, a new
        connection is accepted and reset at once.
        """
        self._call(self._isolate(reset))

    def heal(self) -> None:
        """Relay new connections again (on the same port)."""
        self._call(self._heal())

    async def _close(self) -> None:
        await self._isolate(False)
        # The relays end once their transports are aborted; give them a moment to.
        for _ in range(100):
            if not self._pairs:
                break
            await asyncio.sleep(0.01)

    def close(self) -> None:
        """Stop listening, close every connection, stop the thread."""
        if not self._thread.is_alive():
            return
        with contextlib.suppress(Exception):
            self._call(self._close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        pending = asyncio.all_tasks(self._loop)
        for task in pending:
            task.cancel()
        if pending:
            self._loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        self._loop.run_until_complete(self._loop.shutdown_asyncgens())
        self._loop.close()


# -- the processes --------------------------------------------------------------------------


@dataclass
class Node:
    """One cluster process on a fixed port; :meth:`start` again after :meth:`kill`."""

    slot: int
    port: int
    argv: list[str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0
    start_seconds: list[float] = field(default_factory=list)

    @classmethod
    def create(
        cls, slot: int, app: Path, db_url: str, key: str, directory: Path, port: int = 0
    ) -> Node:
        port = port or free_port()
        argv = [
            sys.executable,
            "-m",
            "reactive.server",
            "--app",
            str(app),
            "--db",
            db_url,
            "--port",
            str(port),
            "--log-level",
            "warning",
            "--cluster-key",
            key,
            "--storage-dir",
            str(directory / "storage"),
        ]
        return cls(slot, port, argv, directory / f"node{slot}.log")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def ready(self) -> dict[str, Any]:
        """``/health/ready`` as JSON (``{}`` when it does not answer)."""
        try:
            body: dict[str, Any] = httpx.get(f"{self.url}/health/ready", timeout=2.0).json()
        except (httpx.HTTPError, ValueError):
            return {}
        return body

    def start(self, timeout_s: float = 60.0) -> float:
        """Start the process and wait until ``/health/ready`` says ready; returns seconds."""
        assert not self.alive(), f"node {self.slot} is running"
        started = time.monotonic()
        with open(self.log_path, "ab") as log:
            log.write(f"=== start {self.starts} of node {self.slot} ===\n".encode())
            log.flush()
            self.process = subprocess.Popen(
                self.argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=str(ROOT),
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        self.starts += 1
        process = self.process
        while True:
            if process.poll() is not None:
                raise RuntimeError(
                    f"node {self.slot} exited ({process.returncode}):\n{self.log()[-4000:]}"
                )
            if self.ready().get("status") == "ready":
                seconds = time.monotonic() - started
                self.start_seconds.append(seconds)
                return seconds
            if time.monotonic() - started > timeout_s:
                self.kill()
                raise TimeoutError(f"node {self.slot} did not get ready:\n{self.log()[-4000:]}")
            time.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL (a crash), and reap it."""
        process = self.process
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGKILL)
        process.wait(30)
