"""Helpers of ``test_attacks.py``: a probing client, RSS sampling, raw frames and sockets.

* :class:`Watch`: while an attack runs, a thread of its own times another client's requests
  (``POST /api/query`` of a cheap query and ``GET /health``, alternately, back to back with a
  short pause) and samples the server's resident set size (``VmRSS`` of
  ``/proc/PID/status``). Afterwards it holds the worst latencies, the RSS at the start and
  its peak, and any probe that failed.
* Frame builders for the sync protocol (``Connect``, ``ModifyQuerySet``, ``Mutation``,
  ``Action``).
* :class:`RawSocket`: a blocking RFC 6455 client on a plain socket, which sends and never
  reads unless asked (a client that ignores what the server sends), with a small receive
  buffer so the server's side fills fast.
* :func:`stop_promptly` (SIGTERM, timed) and :func:`check_db` (``python -m reactive check``).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

ATTACK_APP = Path(__file__).resolve().parent / "attack_app"
ROOT = Path(__file__).resolve().parents[2]
MIB = 2**20


def rss_bytes(pid: int) -> int:
    """The process's resident set size (``VmRSS``), in bytes; 0 once it is gone."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return 0
    return 0


def cpu_seconds(pid: int) -> float:
    """CPU time the process has used, summed over its threads (``/proc/PID/task/*/schedstat``,
    ns precision)."""
    total = 0
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return 0.0
    for task in tasks:
        with contextlib.suppress(OSError, ValueError, IndexError):
            total += int((task / "schedstat").read_text().split()[0])
    return total / 1e9


@dataclass
class Probe:
    """One timed request of the probing client."""

    kind: str  # "query" or "health"
    started: float  # time.monotonic()
    seconds: float
    ok: bool
    detail: str = ""


@dataclass
class Watch:
    """Probe another client's latency and sample RSS while an attack runs.

    ``with Watch(url, pid) as w: ...attack...``; then ``w.worst("query")``,
    ``w.worst("health")``, ``w.rss_start``, ``w.rss_peak``, ``w.failures``.
    """

    url: str
    pid: int
    query_path: str = "hot:ping"
    pause_s: float = 0.02
    timeout_s: float = 15.0
    rss_every_s: float = 0.1
    probes: list[Probe] = field(default_factory=list)
    rss_samples: list[tuple[float, int]] = field(default_factory=list)
    rss_start: int = 0

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def __enter__(self) -> Watch:
        self.rss_start = rss_bytes(self.pid)
        self._started = time.monotonic()
        self._threads = [
            threading.Thread(target=self._probe_loop, name="watch-probe", daemon=True),
            threading.Thread(target=self._rss_loop, name="watch-rss", daemon=True),
        ]
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self, min_probes: int = 3, wait_s: float = 10.0) -> None:
        """Stop, once at least ``min_probes`` of each kind finished (or ``wait_s`` passed)."""
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline and (
            self.count("query") < min_probes or self.count("health") < min_probes
        ):
            time.sleep(0.02)
        self._stop.set()
        for t in self._threads:
            t.join(self.timeout_s + 5.0)

    def _probe_loop(self) -> None:
        with httpx.Client(base_url=self.url, timeout=self.timeout_s) as http:
            kinds = ("query", "health")
            n = 0
            while not self._stop.is_set():
                kind = kinds[n % 2]
                n += 1
                started = time.monotonic()
                ok, detail = False, ""
                try:
                    if kind == "query":
                        r = http.post("/api/query", json={"path": self.query_path, "args": {}})
                        body = r.json() if r.status_code == 200 else None
                        ok = isinstance(body, dict) and body.get("status") == "success"
                        if not ok:
                            detail = f"{r.status_code} {r.text[:200]}"
                    else:
                        r = http.get("/health")
                        ok = r.status_code == 200
                        if not ok:
                            detail = f"{r.status_code} {r.text[:200]}"
                except (httpx.HTTPError, ValueError) as exc:
                    detail = repr(exc)
                self.probes.append(
                    Probe(kind, started - self._started, time.monotonic() - started, ok, detail)
                )
                self._stop.wait(self.pause_s)

    def _rss_loop(self) -> None:
        while not self._stop.is_set():
            self.rss_samples.append((time.monotonic() - self._started, rss_bytes(self.pid)))
            self._stop.wait(self.rss_every_s)

    # -- figures ----------------------------------------------------------------------------

    def worst(self, kind: str) -> float:
        """The longest latency of a ``kind`` probe (``inf`` if none finished)."""
        times = [p.seconds for p in self.probes if p.kind == kind]
        return max(times) if times else float("inf")

    def count(self, kind: str) -> int:
        return sum(1 for p in self.probes if p.kind == kind)

    @property
    def failures(self) -> list[str]:
        return [f"{p.kind} at {p.started:.2f}s: {p.detail}" for p in self.probes if not p.ok]

    @property
    def rss_peak(self) -> int:
        return max([self.rss_start, *(r for _, r in self.rss_samples)])

    def summary(self) -> str:
        return (
            f"{self.count('query')} query probes (worst {self.worst('query'):.3f} s), "
            f"{self.count('health')} /health probes (worst {self.worst('health'):.3f} s), "
            f"{len(self.failures)} failed; RSS {self.rss_start / MIB:.0f} MiB at start, "
            f"peak {self.rss_peak / MIB:.0f} MiB"
        )


# -- frames --------------------------------------------------------------------------------


def connect_frame() -> str:
    return json.dumps(
        {
            "type": "Connect",
            "sessionId": str(uuid.uuid4()),
            "connectionCount": 0,
            "lastCloseReason": None,
            "clientTs": time.time() * 1000.0,
        }
    )


def add(query_id: int, udf_path: str, args: dict[str, Any]) -> dict[str, Any]:
    return {"type": "Add", "queryId": query_id, "udfPath": udf_path, "args": [args]}


def remove(query_id: int) -> dict[str, Any]:
    return {"type": "Remove", "queryId": query_id}


def modify(base: int, mods: list[dict[str, Any]]) -> str:
    return json.dumps(
        {
            "type": "ModifyQuerySet",
            "baseVersion": base,
            "newVersion": base + 1,
            "modifications": mods,
        }
    )


def mutation_frame(request_id: int, udf_path: str, args: dict[str, Any]) -> str:
    return json.dumps(
        {"type": "Mutation", "requestId": request_id, "udfPath": udf_path, "args": [args]}
    )


def action_frame(request_id: int, udf_path: str, args: dict[str, Any]) -> str:
    return json.dumps(
        {"type": "Action", "requestId": request_id, "udfPath": udf_path, "args": [args]}
    )


# -- a raw socket that never reads ------------------------------------------------------------


def _mask(data: bytes, key: bytes) -> bytes:
    n = len(data)
    m = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "big") ^ int.from_bytes(m, "big")).to_bytes(n, "big")


def ws_frame(opcode: int, data: bytes) -> bytes:
    """A masked client frame (FIN set)."""
    n = len(data)
    if n < 126:
        header = bytes((0x80 | opcode, 0x80 | n))
    elif n < 1 << 16:
        header = bytes((0x80 | opcode, 0x80 | 126)) + n.to_bytes(2, "big")
    else:
        header = bytes((0x80 | opcode, 0x80 | 127)) + n.to_bytes(8, "big")
    key = os.urandom(4)
    return header + key + _mask(data, key)


class RawSocket:
    """A WebSocket client on a blocking socket: it sends; it reads only the handshake.

    ``rcvbuf`` is set before connecting so the kernel advertises a small window and the
    server's sends back up quickly.
    """

    def __init__(self, port: int, rcvbuf: int = 4096, path: str = "/api/sync") -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(10.0)
        self.sock.connect(("127.0.0.1", port))
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            (
                f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(1)  # byte by byte: leave whatever follows unread
            if not chunk:
                raise ConnectionError("closed during the handshake")
            head += chunk
        if not head.startswith(b"HTTP/1.1 101"):
            raise ConnectionError(f"handshake refused: {head[:200]!r}")

    def send_text(self, text: str, timeout_s: float) -> None:
        """Send one text frame; raises ``TimeoutError`` (socket.timeout) or ``OSError``."""
        self.sock.settimeout(timeout_s)
        self.sock.sendall(ws_frame(1, text.encode()))

    def tcp_state(self) -> str:
        """This end's TCP state (``TCP_INFO``): ``ESTABLISHED``, ``CLOSE_WAIT`` (the server
        sent FIN and it arrived), ``CLOSE`` (reset: the server aborted the connection)..."""
        names = {1: "ESTABLISHED", 4: "FIN_WAIT1", 5: "FIN_WAIT2", 7: "CLOSE", 8: "CLOSE_WAIT"}
        try:
            state = self.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)[0]
        except OSError as exc:
            return f"unknown ({exc})"
        return names.get(state, str(state))

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


def server_holds_connection(server_port: int, client_port: int) -> bool:
    """Whether a process still holds the server's end of the TCP connection from
    ``client_port`` to ``server_port`` on 127.0.0.1 (``/proc/net/tcp``: the entry exists
    and has an inode; a socket the server closed is gone, or orphaned with inode 0 while
    the kernel tries to deliver what is left)."""
    try:
        lines = Path("/proc/net/tcp").read_text().splitlines()[1:]
    except OSError:
        return False
    for line in lines:
        parts = line.split()
        local, remote, inode = parts[1], parts[2], parts[9]
        if (
            int(local.rsplit(":", 1)[1], 16) == server_port
            and int(remote.rsplit(":", 1)[1], 16) == client_port
        ):
            return inode != "0"
    return False


# -- stopping and checking -----------------------------------------------------------------


def stop_promptly(process: subprocess.Popen[bytes], timeout_s: float = 10.0) -> tuple[float, bool]:
    """SIGTERM and wait up to ``timeout_s``: ``(seconds taken, exited by itself)``.

    A process still running then is killed (SIGKILL), and ``exited by itself`` is False.
    """
    started = time.monotonic()
    if process.poll() is not None:
        return 0.0, True
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(10)
        return time.monotonic() - started, False
    return time.monotonic() - started, True


def check_db(db_url: str) -> subprocess.CompletedProcess[str]:
    """``python -m reactive check --db URL`` (exit 0 when every index entry is right)."""
    return subprocess.run(
        [sys.executable, "-m", "reactive", "check", "--db", db_url],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=str(ROOT),
    )
