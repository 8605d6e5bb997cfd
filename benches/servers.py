"""Processes and sockets of the server benchmarks (``bench_latency``, ``bench_fanout``,
``bench_http``) and of the persistence benchmark (``bench_backends``).

* :func:`reactive_server`: ``python -m reactive.server`` in a subprocess on 127.0.0.1, on a
  free port, with the bench app and a fresh SQLite database in a scratch directory.
* :func:`anchor_server`: ``benches/anchor_servers.py`` in a subprocess: a bare ``websockets``
  server (echo and broadcast) or a bare uvicorn + Starlette HTTP server.
* :func:`postgres`: Debian's PostgreSQL started from a private data directory (``initdb``
  as the ``postgres`` OS user), on 127.0.0.1 and a free port; stopped and removed after.
* :func:`mariadb`: Debian's MariaDB the same way (``mariadb-install-db``, then ``mariadbd``
  as the ``mysql`` OS user), with a database user the drivers connect as.
* :class:`LightClient`: a minimal RFC 6455 client on an ``asyncio.Protocol``, for holding
  1,000 sockets in one process cheaply (the fan-out benchmark's receivers, both sides).

Every process started here is stopped by the context manager that started it, by its pid.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import pwd
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common import APP, BENCHES, REPO, log, percentile, scratch_dir

PYTHON = sys.executable
PG_BIN = Path("/usr/lib/postgresql/15/bin")
MARIADB_BIN = ("mariadb-install-db", "mariadbd", "mariadb")
"""Debian's MariaDB programs (package ``mariadb-server``), looked up on ``PATH`` and in
/usr/sbin."""


def raise_nofile(want: int = 8192) -> int:
    """Raise the soft limit of open files (children inherit it); returns the new limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = want if hard == resource.RLIM_INFINITY else min(want, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    return soft


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """CPU time used so far by every thread of process ``pid`` (``/proc/*/schedstat``, ns
    precision). Unlike throughput, CPU per operation hardly moves when other processes
    compete for the machine."""
    total = 0
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError, ValueError, IndexError):
                total += int((task / "schedstat").read_text().split()[0])
    except OSError:
        return 0.0
    return total / 1e9


def tree_cpu_seconds(pid: int) -> float:
    """:func:`cpu_seconds` of ``pid`` and its direct children (PostgreSQL's postmaster and
    its backends, WAL writer, checkpointer...)."""
    total = cpu_seconds(pid)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            if ppid == pid:
                total += cpu_seconds(int(entry.name))
    return total


def pin_process(pid: int, cpus: set[int]) -> bool:
    """Restrict every thread of process ``pid`` to ``cpus`` (threads it starts later inherit
    the affinity of the thread that starts them). False where it cannot be done (no
    ``sched_setaffinity``, fewer CPUs, or the kernel refused)."""
    if not hasattr(os, "sched_setaffinity") or not cpus <= set(range(os.cpu_count() or 1)):
        return False
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(ProcessLookupError):
                os.sched_setaffinity(int(task.name), cpus)
    except OSError:
        return False
    return True


@contextlib.contextmanager
def pinned_here(cpus: set[int]) -> Iterator[bool]:
    """Run this process's threads on ``cpus`` inside the block (restored after it); yields
    whether that was possible."""
    before = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    done = before is not None and pin_process(os.getpid(), cpus)
    try:
        yield done
    finally:
        if done and before is not None:
            pin_process(os.getpid(), before)


def rss_kib(pid: int) -> int:
    """Resident memory of process ``pid`` (``VmRSS`` of ``/proc/<pid>/status``), KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def wait_http(url: str, proc: subprocess.Popen[bytes], timeout_s: float = 30.0) -> None:
    """Poll ``url`` until it answers 200 (or the process dies, or time runs out)."""
    deadline = time.monotonic() + timeout_s
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode} before answering")
        try:
            with urllib.request.urlopen(url, timeout=1.0) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url} did not answer within {timeout_s} s")
        time.sleep(0.05)


def stop_process(proc: subprocess.Popen[bytes], timeout_s: float = 10.0) -> int | None:
    """SIGTERM, wait, then SIGKILL if needed; returns the exit code."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    return proc.returncode


def _env(extra: dict[str, str] | None) -> dict[str, str] | None:
    return None if not extra else {**os.environ, **extra}


@dataclass
class Served:
    """A server subprocess: where it listens and its pid."""

    proc: subprocess.Popen[bytes]
    port: int
    directory: Path
    log_path: Path

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


@contextlib.contextmanager
def reactive_server(
    prefix: str = "server",
    extra_args: tuple[str, ...] = (),
    env: dict[str, str] | None = None,
) -> Iterator[Served]:
    """``python -m reactive.server --app benches/benchapp`` on a fresh SQLite database.

    ``env``: extra environment variables of the server process (e.g. ``PYTHONPATH``).
    """
    raise_nofile()
    with scratch_dir(prefix) as d:
        port = free_port()
        log_path = d / "server.log"
        cmd = [
            PYTHON,
            "-m",
            "reactive.server",
            "--app",
            str(APP),
            "--db",
            f"sqlite:///{d / 'reactive.db'}",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "warning",
            *extra_args,
        ]
        with open(log_path, "wb") as out:
            proc = subprocess.Popen(
                cmd, stdout=out, stderr=subprocess.STDOUT, cwd=REPO, env=_env(env)
            )
        served = Served(proc, port, d, log_path)
        try:
            wait_http(f"{served.http}/health", proc)
            yield served
        finally:
            code = stop_process(proc)
            if code not in (0, None, -signal.SIGTERM):
                log(f"  reactive server exited {code}; log tail:\n{served.log_tail()}")


@contextlib.contextmanager
def anchor_server(kind: str, env: dict[str, str] | None = None) -> Iterator[Served]:
    """``benches/anchor_servers.py --kind ws|http`` (a bare websockets or uvicorn server)."""
    raise_nofile()
    with scratch_dir(f"anchor-{kind}") as d:
        port = free_port()
        log_path = d / "anchor.log"
        cmd = [PYTHON, str(BENCHES / "anchor_servers.py"), "--kind", kind, "--port", str(port)]
        with open(log_path, "wb") as out:
            proc = subprocess.Popen(
                cmd, stdout=out, stderr=subprocess.STDOUT, cwd=REPO, env=_env(env)
            )
        served = Served(proc, port, d, log_path)
        try:
            wait_http(f"{served.http}/health", proc)
            yield served
        finally:
            stop_process(proc)


# -- PostgreSQL ----------------------------------------------------------------------------------


@dataclass
class Postgres:
    """A private PostgreSQL cluster: connect with ``dsn``."""

    port: int
    data: Path
    dsn: str
    pid: int


def postgres_available() -> str | None:
    """None if the benchmark can run PostgreSQL here, else why not."""
    if not (PG_BIN / "initdb").exists():
        return f"{PG_BIN}/initdb not found (apt-get install -y postgresql)"
    try:
        import asyncpg  # noqa: F401
    except ImportError:
        return "asyncpg is not installed (.venv/bin/pip install asyncpg)"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root and there is no postgres OS user to run the server as"
    return None


def _as_postgres(cmd: list[str]) -> list[str]:
    """Run as the ``postgres`` OS user when we are root (the server refuses root)."""
    if os.geteuid() != 0:
        return cmd
    return ["runuser", "-u", "postgres", "--", *cmd]


@contextlib.contextmanager
def postgres(timeout_s: float = 60.0) -> Iterator[Postgres]:
    """initdb + pg_ctl start in a scratch directory; pg_ctl stop and removal afterwards.

    Defaults are kept (fsync on, synchronous_commit on, WAL on the same disk as reactive's
    database), so a commit is durable as reactive's is.
    """
    with scratch_dir("postgres") as d:
        data = d / "data"
        if os.geteuid() == 0:
            pg = pwd.getpwnam("postgres")
            os.chown(d, pg.pw_uid, pg.pw_gid)
        port = free_port()

        def run(cmd: list[str]) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                _as_postgres(cmd), capture_output=True, text=True, timeout=timeout_s, cwd=d
            )

        r = run(
            [
                str(PG_BIN / "initdb"),
                "-D",
                str(data),
                "--username=postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--no-instructions",
            ]
        )
        if r.returncode != 0:
            raise RuntimeError(f"initdb failed: {r.stderr[-2000:]}")
        opts = f"-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories={d}"
        r = run(
            [
                str(PG_BIN / "pg_ctl"),
                "-D",
                str(data),
                "-l",
                str(d / "postgres.log"),
                "-o",
                opts,
                "-w",
                "-t",
                str(int(timeout_s)),
                "start",
            ]
        )
        if r.returncode != 0:
            tail = (
                (d / "postgres.log").read_text(errors="replace")[-2000:]
                if (d / "postgres.log").exists()
                else ""
            )
            raise RuntimeError(f"pg_ctl start failed: {r.stderr[-1000:]} {tail}")
        try:
            pid = int((data / "postmaster.pid").read_text().split()[0])
            yield Postgres(port, data, f"postgresql://postgres@127.0.0.1:{port}/postgres", pid)
        finally:
            r = run([str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"])
            if r.returncode != 0:
                # Last resort: the postmaster's pid from its pid file, by pid only.
                with contextlib.suppress(OSError, ValueError):
                    pid = int((data / "postmaster.pid").read_text().split()[0])
                    os.kill(pid, signal.SIGQUIT)
                    time.sleep(1.0)
            shutil.rmtree(d, ignore_errors=True)


# -- MariaDB ------------------------------------------------------------------------------------


@dataclass
class Mariadb:
    """A private MariaDB server: connect as ``user``/``password`` on 127.0.0.1:``port``
    (every privilege, so it can create databases); ``url(db)`` is reactive's URL."""

    port: int
    data: Path
    socket: Path
    user: str
    password: str
    pid: int

    def url(self, database: str) -> str:
        return f"mysql://{self.user}:{self.password}@127.0.0.1:{self.port}/{database}"

    def connect_args(self, database: str | None = None) -> dict[str, Any]:
        """Keyword arguments of ``asyncmy.connect``."""
        args: dict[str, Any] = {
            "host": "127.0.0.1",
            "port": self.port,
            "user": self.user,
            "password": self.password,
        }
        if database is not None:
            args["db"] = database
        return args


def _mariadb_program(name: str) -> str | None:
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin")


def mariadb_available() -> str | None:
    """None if the benchmark can run MariaDB here, else why not."""
    missing = [n for n in MARIADB_BIN if _mariadb_program(n) is None]
    if missing:
        return f"{', '.join(missing)} not found (apt-get install -y mariadb-server)"
    try:
        import asyncmy  # noqa: F401
    except ImportError:
        return "asyncmy is not installed (.venv/bin/pip install asyncmy)"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("mysql")
        except KeyError:
            return "running as root and there is no mysql OS user to run the server as"
    return None


@contextlib.contextmanager
def mariadb(timeout_s: float = 60.0) -> Iterator[Mariadb]:
    """``mariadb-install-db`` + ``mariadbd`` in a scratch directory; stopped (SIGTERM to its
    pid, a clean shutdown) and removed afterwards.

    ``--no-defaults``: the machine's ``/etc/mysql`` settings are not read, so the server
    runs with MariaDB's compiled-in defaults, which are durable: InnoDB writes and syncs its
    redo log at every commit (``innodb_flush_log_at_trx_commit=1``, also given explicitly);
    the binary log is off (there is no replica), so ``sync_binlog`` does not apply. The
    data directory is on the same disk as reactive's databases. As root, the server runs
    as the ``mysql`` OS user (``--user``; it refuses to run as root otherwise).
    """
    user, password = "bench", "bench"
    with scratch_dir("mariadb") as d:
        data, sock, log_path = d / "data", d / "mysql.sock", d / "mariadb.log"
        as_root = os.geteuid() == 0
        user_args: list[str] = []
        if as_root:
            my = pwd.getpwnam("mysql")
            os.chown(d, my.pw_uid, my.pw_gid)
            user_args = ["--user=mysql"]
        port = free_port()
        r = subprocess.run(
            [
                str(_mariadb_program("mariadb-install-db")),
                "--no-defaults",
                f"--datadir={data}",
                *user_args,
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
            ],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            cwd=d,
        )
        if r.returncode != 0:
            raise RuntimeError(f"mariadb-install-db failed: {(r.stdout + r.stderr)[-2000:]}")
        cmd = [
            str(_mariadb_program("mariadbd")),
            "--no-defaults",
            f"--datadir={data}",
            *user_args,
            "--bind-address=127.0.0.1",
            f"--port={port}",
            f"--socket={sock}",
            f"--pid-file={d / 'mariadb.pid'}",
            f"--log-error={log_path}",
            "--innodb-flush-log-at-trx-commit=1",
            "--skip-name-resolve",
            "--max-connections=200",
        ]
        proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT
        )

        def client(sql: str) -> subprocess.CompletedProcess[str]:
            program = str(_mariadb_program("mariadb"))
            return subprocess.run(
                [program, "--no-defaults", "-S", str(sock), "-u", "root", "-e", sql],
                capture_output=True,
                text=True,
                timeout=timeout_s,
            )

        try:
            deadline = time.monotonic() + timeout_s
            while client("SELECT 1").returncode != 0:
                if proc.poll() is not None or time.monotonic() > deadline:
                    tail = log_path.read_text(errors="replace")[-2000:] if log_path.exists() else ""
                    raise RuntimeError(f"mariadbd did not start (exit {proc.poll()}): {tail}")
                time.sleep(0.2)
            r = client(
                f"CREATE USER '{user}'@'127.0.0.1' IDENTIFIED BY '{password}'; "
                f"GRANT ALL PRIVILEGES ON *.* TO '{user}'@'127.0.0.1';"
            )
            if r.returncode != 0:
                raise RuntimeError(f"creating the database user failed: {r.stderr[-1000:]}")
            yield Mariadb(port, data, sock, user, password, proc.pid)
        finally:
            code = stop_process(proc, timeout_s)
            if code not in (0, None, -signal.SIGTERM):
                tail = log_path.read_text(errors="replace")[-1000:] if log_path.exists() else ""
                log(f"  mariadbd exited {code}; log tail:\n{tail}")
            shutil.rmtree(d, ignore_errors=True)


# -- a minimal WebSocket client -----------------------------------------------------------------

try:
    from websockets.speedups import apply_mask as _apply_mask
except ImportError:  # pragma: no cover - websockets ships the C speedups on Linux

    def _apply_mask(data: bytes | bytearray | memoryview, mask: bytes | bytearray) -> bytes:
        n = len(data)
        m = (mask * (n // 4 + 1))[:n]
        return (int.from_bytes(data, "big") ^ int.from_bytes(m, "big")).to_bytes(n, "big")


def _frame(opcode: int, data: bytes) -> bytes:
    """A masked client frame (FIN set)."""
    n = len(data)
    if n < 126:
        header = bytes((0x80 | opcode, 0x80 | n))
    elif n < 1 << 16:
        header = bytes((0x80 | opcode, 0x80 | 126)) + n.to_bytes(2, "big")
    else:
        header = bytes((0x80 | opcode, 0x80 | 127)) + n.to_bytes(8, "big")
    mask = os.urandom(4)
    return header + mask + _apply_mask(data, mask)


class LightClient(asyncio.Protocol):
    """One WebSocket without extensions; every text message goes to ``on_text(bytes)``.

    It answers pings and close frames and does nothing else: no UTF-8 validation, no
    compression, no queue or task per socket. Receiving a small frame costs a few
    microseconds, so 1,000 of them in one process measure the server, not the client.
    """

    def __init__(self, on_text: Callable[[bytes], None]) -> None:
        self.on_text = on_text
        self.transport: asyncio.Transport | None = None
        self._buf = bytearray()
        self._upgraded = False
        self._frag: list[bytes] | None = None
        loop = asyncio.get_running_loop()
        self.opened: asyncio.Future[None] = loop.create_future()
        self.closed: asyncio.Future[None] = loop.create_future()

    @classmethod
    async def connect(
        cls, host: str, port: int, path: str, on_text: Callable[[bytes], None]
    ) -> LightClient:
        loop = asyncio.get_running_loop()
        _, proto = await loop.create_connection(lambda: cls(on_text), host, port)
        key = base64.b64encode(os.urandom(16)).decode()
        assert proto.transport is not None
        proto.transport.write(
            (
                f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        await asyncio.wait_for(proto.opened, 30.0)
        return proto

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.opened.done():
            self.opened.set_exception(exc or ConnectionError("closed during the handshake"))
        if not self.closed.done():
            self.closed.set_result(None)

    def send_text(self, text: str | bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(_frame(1, text.encode() if isinstance(text, str) else text))

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(_frame(8, (1000).to_bytes(2, "big")))
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        buf = self._buf
        buf += data
        if not self._upgraded:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(buf[:end])
            del buf[: end + 4]
            if not head.startswith(b"HTTP/1.1 101"):
                self.opened.set_exception(ConnectionError(f"handshake refused: {head[:200]!r}"))
                assert self.transport is not None
                self.transport.close()
                return
            self._upgraded = True
            self.opened.set_result(None)
        pos, n = 0, len(buf)
        while n - pos >= 2:
            b0, b1 = buf[pos], buf[pos + 1]
            length, header = b1 & 0x7F, 2
            if length == 126:
                if n - pos < 4:
                    break
                length, header = int.from_bytes(buf[pos + 2 : pos + 4], "big"), 4
            elif length == 127:
                if n - pos < 10:
                    break
                length, header = int.from_bytes(buf[pos + 2 : pos + 10], "big"), 10
            if n - pos < header + length:
                break
            payload = bytes(buf[pos + header : pos + header + length])
            pos += header + length
            opcode = b0 & 0x0F
            fin = b0 & 0x80
            if opcode in (1, 2):
                if fin:
                    self.on_text(payload)
                else:
                    self._frag = [payload]
            elif opcode == 0 and self._frag is not None:
                self._frag.append(payload)
                if fin:
                    whole, self._frag = b"".join(self._frag), None
                    self.on_text(whole)
            elif opcode == 9:
                assert self.transport is not None
                self.transport.write(_frame(10, payload))
            elif opcode == 8:
                self.close()
        del buf[:pos]


async def connect_many(
    count: int,
    host: str,
    port: int,
    path: str,
    on_text: Callable[[int], Callable[[bytes], None]],
    concurrency: int = 50,
) -> list[LightClient]:
    """Open ``count`` :class:`LightClient` sockets, ``concurrency`` handshakes at a time.

    ``on_text(i)`` gives socket ``i``'s message callback.
    """
    out: list[LightClient | None] = [None] * count
    sem = asyncio.Semaphore(concurrency)

    async def one(i: int) -> None:
        async with sem:
            out[i] = await LightClient.connect(host, port, path, on_text(i))

    await asyncio.gather(*(one(i) for i in range(count)))
    return [c for c in out if c is not None]


class LightHTTP(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection, one request at a time (no pipelining).

    The throughput benchmarks' client when the server, not the client, is measured: a
    request costs the client ~20 µs here against ~150-250 µs through aiohttp, which on a
    2-vCPU machine would otherwise take CPU the servers compete for. It parses only what
    it needs: the status line, ``Content-Length`` or ``Transfer-Encoding: chunked``, and
    the body.
    """

    def __init__(self, host: str) -> None:
        self.host = host
        self.transport: asyncio.Transport | None = None
        self._buf = bytearray()
        self._waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self.closed = False

    @classmethod
    async def connect(cls, host: str, port: int) -> LightHTTP:
        loop = asyncio.get_running_loop()
        _, proto = await loop.create_connection(lambda: cls(f"{host}:{port}"), host, port)
        return proto

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(ConnectionError("the server closed the connection"))

    async def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        content_type: str = "application/json",
    ) -> tuple[int, bytes]:
        """Send one request and return ``(status, body)``."""
        assert self.transport is not None and self._waiter is None
        head = f"{method} {path} HTTP/1.1\r\nHost: {self.host}\r\n"
        if body is not None:
            head += f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
        self._waiter = asyncio.get_running_loop().create_future()
        self.transport.write(head.encode() + b"\r\n" + (body or b""))
        try:
            return await self._waiter
        finally:
            self._waiter = None

    def data_received(self, data: bytes) -> None:
        self._buf += data
        got = self._parse()
        if got is not None and self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(got)

    def _parse(self) -> tuple[int, bytes] | None:
        buf = self._buf
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            return None
        head = bytes(buf[:end]).decode("latin-1").split("\r\n")
        status = int(head[0].split(" ", 2)[1])
        length: int | None = None
        chunked = False
        for line in head[1:]:
            name, _, value = line.partition(":")
            name = name.strip().lower()
            if name == "content-length":
                length = int(value)
            elif name == "transfer-encoding" and "chunked" in value.lower():
                chunked = True
        start = end + 4
        if not chunked:
            length = length or 0
            if len(buf) < start + length:
                return None
            body = bytes(buf[start : start + length])
            del buf[: start + length]
            return status, body
        pos, parts = start, []
        while True:
            line_end = buf.find(b"\r\n", pos)
            if line_end < 0:
                return None
            size = int(bytes(buf[pos:line_end]).split(b";")[0], 16)
            if len(buf) < line_end + 2 + size + 2:
                return None
            parts.append(bytes(buf[line_end + 2 : line_end + 2 + size]))
            pos = line_end + 2 + size + 2
            if size == 0:
                del buf[:pos]
                return status, b"".join(parts)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class LightPool:
    """Keep-alive :class:`LightHTTP` connections to one server, one per request in flight."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self._free: list[LightHTTP] = []
        self._all: list[LightHTTP] = []

    async def request(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        """``(status, body)`` of one request on a free connection (opened when none is)."""
        conn = self._free.pop() if self._free else None
        if conn is None or conn.closed:
            conn = await LightHTTP.connect(self.host, self.port)
            self._all.append(conn)
        try:
            got = await conn.request(method, path, body)
        except BaseException:
            conn.close()
            raise
        self._free.append(conn)
        return got

    def close(self) -> None:
        for conn in self._all:
            conn.close()
        self._all.clear()
        self._free.clear()


async def closed_loop_load(
    request: Callable[[int], Awaitable[bool]],
    pid: int,
    seconds: float,
    concurrency: int,
    warmup: int = 200,
) -> dict[str, Any]:
    """``concurrency`` tasks calling ``request(i)`` one after another for ``seconds``.

    ``warmup`` calls first (untimed). Returns the rate of calls that answered true, the
    errors, latency p50/p99 (ms), the CPU of process ``pid`` per call (µs) and as % of a
    core, and this process's CPU as % of a core.
    """
    sem = asyncio.Semaphore(concurrency)

    async def warm(i: int) -> None:
        async with sem:
            await request(i)

    await asyncio.gather(*(warm(i) for i in range(warmup)))
    latencies: list[float] = []
    done = errors = 0
    deadline = 0.0

    async def caller(k: int) -> None:
        nonlocal done, errors
        i = warmup + k
        clock = time.perf_counter
        while clock() < deadline:
            t0 = clock()
            try:
                ok = await request(i)
            except Exception as exc:  # a closed connection, a bad answer
                ok = False
                if errors < 3:
                    log(f"  request failed: {exc!r}")
            i += concurrency
            if ok:
                latencies.append(clock() - t0)
                done += 1
            else:
                errors += 1

    cpu_server0, cpu_client0 = cpu_seconds(pid), time.process_time()
    start = time.perf_counter()
    deadline = start + seconds
    await asyncio.gather(*(caller(k) for k in range(concurrency)))
    elapsed = time.perf_counter() - start
    cpu_server = cpu_seconds(pid) - cpu_server0
    cpu_client = time.process_time() - cpu_client0
    return {
        "rate": done / elapsed,
        "done": done,
        "errors": errors,
        "p50_ms": (percentile(latencies, 50) or 0) * 1000,
        "p99_ms": (percentile(latencies, 99) or 0) * 1000,
        "server_cpu_us": 1e6 * cpu_server / max(1, done + errors),
        "server_cpu_pct": 100 * cpu_server / elapsed,
        "client_cpu_pct": 100 * cpu_client / elapsed,
    }
