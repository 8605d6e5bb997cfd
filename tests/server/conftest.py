"""Fixtures for server tests: a real `python -m reactive.server` on 127.0.0.1."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
CHAT = ROOT / "examples" / "chat"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class ServerProcess:
    """A running server: its URL, database URL and process."""

    url: str
    db_url: str
    port: int
    app: Path
    process: subprocess.Popen[bytes]
    log_path: Path
    extra_args: tuple[str, ...] = ()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 20.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        return int(self.process.returncode)

    def restart(self) -> None:
        """Stop (SIGTERM) and start again on the same port and database."""
        self.stop()
        self.process = _spawn(self.app, self.db_url, self.port, self.log_path, self.extra_args)
        wait_ready(self.url, self.process)


def _spawn(
    app: Path, db_url: str, port: int, log_path: Path, extra: tuple[str, ...]
) -> subprocess.Popen[bytes]:
    with open(log_path, "ab") as log:  # the child keeps its own descriptor
        return subprocess.Popen(
            [
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
                *extra,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=str(ROOT),
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )


def wait_ready(url: str, process: subprocess.Popen[bytes], timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with {process.returncode}")
        try:
            if httpx.get(f"{url}/health", timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise TimeoutError("the server did not become ready")


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[Callable[..., ServerProcess]]:
    """Start servers: ``start_server(app=CHAT, *extra_args)``; all are stopped at the end."""
    started: list[ServerProcess] = []

    def start(app: Path = CHAT, *extra: str) -> ServerProcess:
        port = free_port()
        n = len(started)
        db_url = f"sqlite:///{tmp_path / f'server{n}.db'}"
        log_path = tmp_path / f"server{n}.log"
        proc = _spawn(app, db_url, port, log_path, extra)
        server = ServerProcess(
            f"http://127.0.0.1:{port}", db_url, port, app, proc, log_path, tuple(extra)
        )
        started.append(server)
        wait_ready(server.url, proc)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def chat_server(start_server: Callable[..., ServerProcess]) -> ServerProcess:
    """The chat example served on a fresh database."""
    return start_server(CHAT)
